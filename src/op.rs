//! The one completion future every backend resolves.
//!
//! An [`Operation`] is lazy: nothing happens until it is polled. Its first poll takes one
//! of the context's `max_requests` slots, builds a [`Request`](crate::backend::Request) that owns every byte the
//! kernel or a worker may touch, and hands it to the backend; with no slot free, it queues
//! in the context instead, and the operation that frees a slot admits it. From then
//! on the backend owns the request; the future only holds an `Arc<Slot>` where the result
//! lands. Dropping the future drops that `Arc` and nothing else, so the buffer stays alive
//! until the backend is done with it, however late that is.

use std::{
    fmt,
    future::Future,
    io,
    marker::PhantomData,
    os::unix::io::RawFd,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use crate::{
    admission::{Shared, Waiter},
    backend::{Completer, Completion, FdInfo, Meta, Plan, Slot, Submit, What},
    buffer::Buffer,
};

enum State {
    Failed(io::Error),
    /// Not polled yet.
    Waiting(Plan),
    /// Handed to the backend, or queued for a slot: waits on the slot for its result.
    InFlight(Arc<Slot>),
    Done,
}

/// A file operation in progress; resolves to `io::Result<T>`.
///
/// Works on any executor. Dropping it before it completes is always safe: the backend keeps
/// the buffer alive until the kernel or worker is done with it, then frees it.
#[must_use = "an operation does nothing until it is awaited or polled"]
pub struct Operation<T> {
    shared: Arc<Shared>,
    state: State,
    output: fn(Completion) -> T,
    _t: PhantomData<fn() -> T>,
}

/// The future of [`Context::read`](crate::Context::read).
pub type ReadFuture = Operation<Buffer>;
/// The future of [`Context::write`](crate::Context::write).
pub type WriteFuture = Operation<usize>;
/// The future of [`Context::fsync`](crate::Context::fsync) and
/// [`Context::fdsync`](crate::Context::fdsync).
pub type SyncFuture = Operation<()>;

impl<T> fmt::Debug for Operation<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Failed(_) => "failed",
            State::Waiting(_) => "not started",
            State::InFlight(_) => "started (in flight or waiting for a slot)",
            State::Done => "done",
        };
        f.debug_struct("Operation").field("state", &state).finish()
    }
}

/// The error of an operation on a context made before `fork()`.
pub(crate) fn forked() -> io::Error {
    io::Error::other(
        "caio: this context was made before fork(): its threads and kernel context stayed in \
         the parent; make a new Context in the child (Context::global() and files opened \
         without .context(..) do so by themselves)",
    )
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Checks what every backend would reject the same way, so all report it alike.
fn check(fd: RawFd, offset: u64, len: usize) -> io::Result<()> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    if offset > i64::MAX as u64 {
        return Err(invalid(format!(
            "offset {offset} is beyond the largest file offset"
        )));
    }
    if len > isize::MAX as usize {
        return Err(invalid(format!(
            "{len} bytes is more than one operation can transfer"
        )));
    }
    Ok(())
}

impl<T> Operation<T> {
    fn new(shared: Arc<Shared>, plan: io::Result<Plan>, output: fn(Completion) -> T) -> Self {
        Operation {
            shared,
            state: match plan {
                Ok(p) => State::Waiting(p),
                Err(e) => State::Failed(e),
            },
            output,
            _t: PhantomData,
        }
    }
}

pub(crate) fn read(
    shared: Arc<Shared>,
    nbytes: usize,
    fd: RawFd,
    offset: u64,
    file: Option<FdInfo>,
) -> ReadFuture {
    let plan = check(fd, offset, nbytes).map(|()| Plan {
        fd,
        offset,
        what: What::Read(nbytes),
        file,
    });
    Operation::new(shared, plan, |c| c.buf.unwrap_or_default())
}

pub(crate) fn write(
    shared: Arc<Shared>,
    buf: Buffer,
    fd: RawFd,
    offset: u64,
    file: Option<FdInfo>,
) -> WriteFuture {
    Operation::new(shared, write_plan(buf, fd, offset, file), |c| c.n)
}

fn write_plan(buf: Buffer, fd: RawFd, offset: u64, file: Option<FdInfo>) -> io::Result<Plan> {
    check(fd, offset, buf.len()).map(|()| Plan {
        fd,
        offset,
        what: What::Write(buf),
        file,
    })
}

/// A write that gives its buffer back with the count (for reuse, and to finish a short
/// write).
pub(crate) fn write_returning(
    shared: Arc<Shared>,
    buf: Buffer,
    fd: RawFd,
    offset: u64,
    file: Option<FdInfo>,
) -> Operation<(usize, Buffer)> {
    Operation::new(shared, write_plan(buf, fd, offset, file), |c| {
        (c.n, c.buf.unwrap_or_default())
    })
}

pub(crate) fn fsync(
    shared: Arc<Shared>,
    fd: RawFd,
    data_only: bool,
    file: Option<FdInfo>,
) -> SyncFuture {
    let what = if data_only { What::Fdsync } else { What::Fsync };
    let plan = check(fd, 0, 0).map(|()| Plan {
        fd,
        offset: 0,
        what,
        file,
    });
    Operation::new(shared, plan, |_| ())
}

/// A metadata operation on `fd` (or on a path, with `fd` -1), whose result `output` makes
/// from the completion.
pub(crate) fn meta<T>(
    shared: Arc<Shared>,
    fd: RawFd,
    meta: Meta,
    file: Option<FdInfo>,
    output: fn(Completion) -> T,
) -> Operation<T> {
    let plan = Plan {
        fd,
        offset: 0,
        what: What::Meta(meta),
        file,
    };
    Operation::new(shared, Ok(plan), output)
}

impl<T> Future for Operation<T> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Failed(e) => return Poll::Ready(Err(e)),
                State::Waiting(plan) => {
                    if this.shared.is_forked() {
                        return Poll::Ready(Err(forked()));
                    }
                    let slot = Arc::new(Slot::default());
                    let mut plan = Some(plan);
                    let admitted = this.shared.limiter.acquire_or_wait(|| Waiter {
                        plan: plan.take().expect("taken once"),
                        slot: Arc::clone(&slot),
                    });
                    let Some(plan) = plan.filter(|_| admitted) else {
                        // Queued: an operation leaving flight admits it; just wait.
                        this.state = State::InFlight(slot);
                        continue;
                    };
                    let done = Completer::new(Arc::clone(&slot), Some(this.shared.permit()));
                    let req = match plan.build(done) {
                        Ok(r) => r,
                        Err((e, _done)) => return Poll::Ready(Err(e)),
                    };
                    match this.shared.backend.submit(req) {
                        Submit::Started => this.state = State::InFlight(slot),
                        Submit::Queued => {
                            // Let every other ready operation queue up too; the next poll
                            // sends them to the kernel together.
                            slot.defer_flush();
                            this.state = State::InFlight(slot);
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
                State::InFlight(slot) => {
                    let (poll, flush) = slot.poll(cx);
                    if flush {
                        this.shared.backend.flush();
                    }
                    return match poll {
                        Poll::Ready(r) => Poll::Ready(r.map(this.output)),
                        Poll::Pending => {
                            this.state = State::InFlight(slot);
                            Poll::Pending
                        }
                    };
                }
                State::Done => {
                    return Poll::Ready(Err(io::Error::other(
                        "caio: operation polled after it completed",
                    )))
                }
            }
        }
    }
}

impl<T> Drop for Operation<T> {
    fn drop(&mut self) {
        // Started is started: send on what this future still owed a flush, as the thread
        // backend would run it; one still waiting for a slot will not start.
        if let State::InFlight(slot) = &self.state {
            if slot.abandon() {
                self.shared.backend.flush();
            }
        }
    }
}
