//! The caller's per-operation controls ([`Controls`]: priority, `dsync`, `nowait`,
//! `uncached`, `append`) as the backends carry them out: the flags each transfer takes, a
//! kernel backend's answer when the kernel refuses one ([`controlled`]), and the pool's
//! fallbacks where the system lacks one (`Request::run_controlled`).

use std::io;

use super::Request;
use crate::{
    context::stats::Count,
    sys::{self, c, RwFlags},
};

/// What a kernel backend does with an attempt that failed with `errno`, for an operation
/// carrying the caller's controls; `None` when the controls change nothing.
#[cfg(target_os = "linux")]
pub(crate) enum Controlled {
    /// The operation's answer: `nowait()` and it would have blocked: EAGAIN, or the
    /// bytes earlier attempts moved (a short read or write, as `read(2)` gives).
    Answer(io::Result<usize>),
    /// A flag this kernel or filesystem lacks (EOPNOTSUPP): the pool runs it, and falls
    /// back as documented (see `Request::run_controlled`).
    Pool,
}

#[cfg(target_os = "linux")]
pub(crate) fn controlled(req: &Request, errno: i32) -> Option<Controlled> {
    let c = req.controls;
    if c.nowait && errno == libc::EAGAIN {
        if req.reads_from_memory() {
            // tmpfs answers EAGAIN to RWF_NOWAIT reads, though a copy from memory never
            // waits for a device: the pool reads it.
            return Some(Controlled::Pool);
        }
        return Some(Controlled::Answer(match req.moved() {
            0 => Err(io::Error::from_raw_os_error(errno)),
            n => Ok(n),
        }));
    }
    if c.has_flags() && errno == libc::EOPNOTSUPP {
        return Some(Controlled::Pool);
    }
    None
}

/// What the caller asked of one operation beyond the operation itself
/// (`Operation::priority`, `dsync`, `nowait`, `uncached`, `append`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Controls {
    /// The I/O priority, as `ioprio_set(2)` and the kernel's request fields take it.
    pub prio: Option<u16>,
    /// Durable when it completes (`RWF_DSYNC`).
    pub dsync: bool,
    /// Never wait: `EAGAIN` where the operation would block (`RWF_NOWAIT`).
    pub nowait: bool,
    /// Leave no pages in the cache (`RWF_DONTCACHE`).
    pub uncached: bool,
    /// At the end of the file, whatever the offset (`RWF_APPEND`).
    pub append: bool,
}

impl Controls {
    /// Nothing asked: the operation runs as it always has.
    pub(crate) fn is_plain(&self) -> bool {
        *self == Controls::default()
    }

    /// The flags a transfer takes.
    pub(crate) fn rw_flags(&self) -> RwFlags {
        RwFlags {
            dsync: self.dsync,
            nowait: self.nowait,
            uncached: self.uncached,
            append: self.append,
        }
    }

    /// Whether it carries `RWF_*` flags a kernel or filesystem may refuse with EOPNOTSUPP
    /// (then the pool runs it, falling back as documented).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn has_flags(&self) -> bool {
        self.dsync || self.nowait || self.uncached || self.append
    }
}

impl Request {
    /// [`run_blocking`](Request::run_blocking) with the caller's controls: the priority
    /// set on this thread for the call, the flags on each transfer, and where the system
    /// or filesystem lacks one (EOPNOTSUPP), the documented fallback, counted.
    pub(super) fn run_controlled(&mut self) -> io::Result<usize> {
        let c = self.controls;
        let _priority = match c.prio.map(sys::io_priority) {
            Some(Err(e)) if e.kind() == io::ErrorKind::Unsupported => {
                self.done.count(Count::FallbackPriority);
                None
            }
            Some(r) => Some(r?),
            None => None,
        };
        let mut flags = c.rw_flags();
        let before = self.moved();
        let n = loop {
            match self.transfer(flags) {
                Err(e) if e.raw_os_error() == Some(c::EOPNOTSUPP) && !flags.is_empty() => {
                    if flags.uncached {
                        flags.uncached = false;
                        self.done.count(Count::FallbackUncached);
                    } else if flags.dsync {
                        flags.dsync = false;
                        self.done.count(Count::FallbackDsync);
                    } else if flags.nowait && self.reads_from_memory() {
                        flags.nowait = false;
                    } else if flags.nowait {
                        // The system cannot tell whether it would block: it might.
                        self.done.count(Count::FallbackNowait);
                        return Err(io::Error::from_raw_os_error(c::EAGAIN));
                    } else {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            "append() needs RWF_APPEND, which this system lacks: open the \
                             file in append mode instead",
                        ));
                    }
                }
                Err(e) if e.raw_os_error() == Some(c::EAGAIN) && flags.nowait => {
                    if !self.reads_from_memory() {
                        return Err(e);
                    }
                    // A copy from memory never waits for a device (tmpfs answers EAGAIN
                    // to RWF_NOWAIT all the same).
                    flags.nowait = false;
                }
                r => break r?,
            }
        };
        let moved = (n - before) as u64;
        let at = self.offset + before as u64;
        if c.dsync && !flags.dsync && moved > 0 {
            sys::fdatasync(self.fd)?;
        }
        if c.uncached && !flags.uncached && moved > 0 {
            // Best effort, as the flag itself: the data moved either way.
            let _ = sys::uncache(self.fd, at, moved);
        }
        Ok(n)
    }
}
