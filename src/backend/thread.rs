//! The thread backend: a pool of named worker threads fed through a crossbeam channel,
//! each doing positional `pread`/`pwrite`/`fsync`/`fdatasync`.
//!
//! Workers contain panics and hand them to the waiting future as an error. When the last
//! handle of the context goes, the channel closes; workers finish what is queued and exit
//! on their own, so dropping a context never waits for them.

use std::{
    any::Any,
    io,
    panic::{self, AssertUnwindSafe},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
#[cfg(target_os = "linux")]
use once_cell::sync::OnceCell;

use crate::{
    backend::{FileIo, Request, Submit},
    Implementation,
};

#[cfg(target_os = "linux")]
/// The pool a kernel backend sends what its kernel interface cannot do without blocking:
/// started on first use, so a backend that never needs it runs no extra thread.
#[derive(Debug)]
pub(crate) struct FallbackPool {
    pool: OnceCell<ThreadPool>,
    threads: usize,
    capacity: usize,
}

#[cfg(target_os = "linux")]
impl FallbackPool {
    /// A pool of `threads` workers with a queue of `capacity`, once it is first used.
    pub(crate) fn new(threads: usize, capacity: usize) -> FallbackPool {
        FallbackPool {
            pool: OnceCell::new(),
            threads,
            capacity,
        }
    }

    /// Runs `req` (or what is left of it) on the pool; fails it when the pool's threads
    /// cannot be started.
    pub(crate) fn run(&self, req: Request) {
        match self
            .pool
            .get_or_try_init(|| ThreadPool::new(self.threads, self.capacity))
        {
            Ok(p) => p.send(req),
            Err(e) => req.finish(Err(io::Error::other(format!(
                "caio: cannot start fallback threads: {e}"
            )))),
        }
    }
}

#[derive(Debug)]
pub(crate) struct ThreadPool {
    tx: Sender<Request>,
}

static POOL_ID: AtomicUsize = AtomicUsize::new(0);

impl ThreadPool {
    /// Starts `threads` workers named `caio-thread-N` (N counts across the process), fed
    /// by a queue of `capacity` requests: the context's `max_requests`, since every request
    /// holds one of its in-flight slots. A fixed queue allocates nothing per request.
    pub(crate) fn new(threads: usize, capacity: usize) -> io::Result<ThreadPool> {
        let (tx, rx) = crossbeam_channel::bounded::<Request>(capacity.max(1));
        for _ in 0..threads {
            let rx = rx.clone();
            let n = POOL_ID.fetch_add(1, Ordering::Relaxed);
            thread::Builder::new()
                .name(format!("caio-thread-{n}"))
                .spawn(move || worker(rx))?;
        }
        Ok(ThreadPool { tx })
    }

    /// Queues a request for the workers.
    pub(crate) fn send(&self, req: Request) {
        let req = match self.tx.try_send(req) {
            Ok(()) => return,
            Err(TrySendError::Full(req)) => req, // cannot happen: see `new`; wait then
            Err(TrySendError::Disconnected(req)) => req,
        };
        if let Err(e) = self.tx.send(req) {
            // Every worker is gone (they only exit when the channel closes, so this means
            // they could not be kept alive): fail the request rather than lose it.
            e.into_inner().finish(Err(io::Error::other(
                "caio: no worker thread is left to run the operation",
            )));
        }
    }
}

fn worker(rx: Receiver<Request>) {
    for mut req in rx.iter() {
        if req.is_called_off() {
            // Cancelled (completed there), or nobody waits and the descriptor may be
            // another file's by now: its drop completes it unrun.
            continue;
        }
        let r = panic::catch_unwind(AssertUnwindSafe(|| req.run_blocking()));
        req.finish(r.unwrap_or_else(|p| Err(panic_error(p))));
    }
}

fn panic_error(payload: Box<dyn Any + Send>) -> io::Error {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".into());
    io::Error::other(format!("caio worker thread panicked: {msg}"))
}

impl FileIo for ThreadPool {
    fn implementation(&self) -> Implementation {
        Implementation::Thread
    }

    fn submit(&self, req: Request) -> Submit {
        self.send(req);
        Submit::Started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{take_result, test_request, Kind, Meta};
    use crate::sys::c;

    #[test]
    fn a_panicking_operation_fails_its_future_and_the_worker_survives() {
        let pool = ThreadPool::new(1, 4).unwrap();
        let prev = panic::take_hook();
        panic::set_hook(Box::new(|_| {}));
        let (req, slot) = test_request(Kind::Meta(Meta::Call(Box::new(|| {
            panic!("injected worker panic")
        }))));
        pool.send(req);
        let r = loop {
            if let Some(r) = take_result(&slot) {
                break r;
            }
            thread::yield_now();
        };
        panic::set_hook(prev);
        let e = r.unwrap_err();
        assert!(e.to_string().contains("injected worker panic"), "{e}");
        // The single worker is still alive and serves the next request.
        let (req, slot) = test_request(Kind::Fsync);
        pool.send(req);
        let r = loop {
            if let Some(r) = take_result(&slot) {
                break r;
            }
            thread::yield_now();
        };
        assert_eq!(r.unwrap_err().raw_os_error(), Some(c::EBADF));
    }
}
