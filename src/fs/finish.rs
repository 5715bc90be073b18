//! Writes that a program handed over and then dropped: a `File`'s write accepted by its
//! cursor, a [`Writer`](crate::fs::Writer)'s buffered and in-flight chunks. They finish
//! in the background, on one thread of the process (`caio-finish`), as tokio's `File`
//! finishes its write on a blocking thread.
//!
//! When the program exits normally (returns from `main`, or calls
//! `std::process::exit`), the exit waits for them, at most [`EXIT_WAIT`]: what a program
//! wrote and dropped is in the file when it ends, as with tokio, whose runtime waits for
//! its blocking threads when it shuts down. An abort, a signal or `_exit` does not wait.
//! Their errors go to the log (a dropped writer has no one else to tell).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Condvar, Mutex,
    },
    task::Poll,
    time::{Duration, Instant},
};

use futures::{channel::mpsc, stream::FuturesUnordered, StreamExt};

use crate::{fork::PerProcess, sync::lock};

/// The longest a normal exit waits for the writes of dropped files and writers.
pub const EXIT_WAIT: Duration = Duration::from_secs(30);

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Default)]
struct Finisher {
    /// To the thread, once it runs.
    jobs: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// Jobs handed over and not finished.
    pending: Mutex<usize>,
    finished: Condvar,
}

/// Per process: a child forked while its parent had writes pending has neither the
/// parent's thread nor anything of its own to wait for.
static FINISHER: PerProcess<Finisher> = PerProcess::new();

/// Finishes `work` in the background, logging its error as the error of `what`.
pub(crate) fn finish(
    what: &'static str,
    work: impl Future<Output = io::Result<()>> + Send + 'static,
) {
    let f = FINISHER.get(Finisher::default);
    *lock(&f.pending) += 1;
    wait_at_exit();
    let job: Job = Box::pin(async move {
        if let Err(e) = work.await {
            log::error!("caio: {what} failed: {e}");
        }
        let f = FINISHER.get(Finisher::default);
        *lock(&f.pending) -= 1;
        f.finished.notify_all();
    });
    let mut jobs = lock(&f.jobs);
    if jobs.is_none() {
        let (tx, rx) = mpsc::unbounded();
        let started = std::thread::Builder::new()
            .name("caio-finish".into())
            .spawn(move || run(rx));
        match started {
            Ok(_) => *jobs = Some(tx),
            Err(e) => {
                drop(jobs);
                log::error!("caio: cannot start a thread to finish {what} ({e}); it is lost");
                *lock(&f.pending) -= 1;
                return;
            }
        }
    }
    if let Some(tx) = jobs.as_ref() {
        // The thread never drops its receiver: it runs until the process ends.
        let _ = tx.unbounded_send(job);
    }
}

/// The thread: every job at once, as they come.
fn run(mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut running = FuturesUnordered::new();
    futures::executor::block_on(futures::future::poll_fn(|cx| {
        while let Poll::Ready(Some(job)) = rx.poll_next_unpin(cx) {
            running.push(job);
        }
        while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
        Poll::<()>::Pending
    }));
}

/// Waits (at most [`EXIT_WAIT`]) for the jobs of this process; for tests and `atexit`.
pub(crate) fn wait(limit: Duration) -> bool {
    let f = FINISHER.get(Finisher::default);
    let deadline = Instant::now() + limit;
    let mut pending = lock(&f.pending);
    while *pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        pending = f
            .finished
            .wait_timeout(pending, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    true
}

/// Makes a normal exit wait for the jobs; registered once (a forked child inherits it,
/// and waits for its own jobs only).
fn wait_at_exit() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if REGISTERED.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Err(e) = crate::sys::at_exit(at_exit) {
        log::warn!("caio: writes of dropped files may be lost at exit: {e}");
    }
}

extern "C" fn at_exit() {
    if !wait(EXIT_WAIT) {
        log::error!(
            "caio: the process exits with writes of dropped files still pending after {EXIT_WAIT:?}"
        );
    }
}
