//! The backends, and the contract every one of them meets.
//!
//! # The `FileIo` contract
//!
//! A backend receives [`Request`]s from [`Operation`](crate::Operation) futures and must:
//!
//! - **Complete every request exactly once**, from any thread, by calling
//!   [`Request::finish`] with the number of bytes moved or the `io::Error`. Completion
//!   stores the result in the operation's slot and wakes its waker; nothing spins, and no
//!   particular runtime is needed. A request dropped without `finish` (a dead worker, a
//!   torn-down context) completes its future with an error, so a future never hangs.
//! - **Own the buffer until the kernel or worker is done with it.** The request owns every
//!   byte the operation touches. The future holds only the slot, so a future dropped
//!   mid-flight frees nothing the kernel may still write into; the backend drops the request
//!   (and with it the buffer) only after the operation has finished.
//! - **Treat a dropped future as nothing special.** The operation still runs to completion
//!   (or to kernel cancellation) and its result is discarded. The in-flight permit is given
//!   back when the request completes, not when the future is dropped, so `max_requests`
//!   bounds what the kernel really has in flight.
//! - **Never block in `Drop`.** When the last handle of a context goes, work in flight
//!   finishes on the backend's own threads, which then release kernel resources.
//! - **Report errors as `io::Error` carrying the OS errno**, the same errno for the same
//!   case on every backend (EBADF for a bad or wrongly opened descriptor, EISDIR for a
//!   directory, ESPIPE for a pipe, ENOSPC...). A read returns at most the bytes asked for,
//!   fewer only at end of file; a write reports how many bytes it wrote.
//! - **Stay `Send + Sync`**: one context is shared by any number of threads.
//!
//! `submit` returns [`Submit::Queued`] when the backend batches: the operation sits in a
//! queue that the next [`FileIo::flush`] (from any operation's next poll) sends to the
//! kernel together with every other queued operation.

use std::fmt;

use crate::{op::Request, Implementation};

pub(crate) mod blocking;
#[cfg(target_os = "linux")]
pub(crate) mod linux;
pub(crate) mod thread;

/// What `submit` did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submit {
    /// Running (or already finished): just wait for completion.
    Started,
    /// Queued for a batched submission: call `flush` on the next poll.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Queued,
}

/// A way of running file operations; see the module docs for the contract.
pub(crate) trait FileIo: Send + Sync + fmt::Debug {
    /// Which implementation this is.
    fn implementation(&self) -> Implementation;
    /// Takes ownership of `req` and arranges for it to complete exactly once.
    fn submit(&self, req: Request) -> Submit;
    /// Sends queued requests on their way; cheap when nothing is queued.
    fn flush(&self) {}
}

/// Whether kernel AIO can be used by this process now, or why not.
pub(crate) fn linux_probe() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        linux::probe()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err("kernel AIO exists only on Linux".into())
    }
}
