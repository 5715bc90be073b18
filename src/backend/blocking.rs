//! The blocking fallback: every operation runs inline on the thread that polls it.
//!
//! For systems where neither kernel AIO nor extra threads can be used. It is honest about
//! what it is: the `await` blocks the executor thread for the length of the syscall, and
//! that includes every metadata call (open, close, stat, truncate, rename, readdir...),
//! which every other implementation runs off the polling thread.

use crate::{
    backend::{FileIo, Request, Submit},
    Implementation,
};

#[derive(Debug, Default)]
pub(crate) struct Blocking;

impl FileIo for Blocking {
    fn implementation(&self) -> Implementation {
        Implementation::Blocking
    }

    fn submit(&self, req: Request) -> Submit {
        req.run_here();
        Submit::Started
    }
}
