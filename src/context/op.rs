//! The one completion future every backend resolves.
//!
//! An [`Operation`] is lazy: nothing happens until it is polled. Its first poll takes one
//! of the context's `max_requests` slots, builds a [`Request`](crate::backend::Request) that owns every byte the
//! kernel or a worker may touch, and hands it to the backend; with no slot free, it queues
//! in the context instead, and the operation that frees a slot admits it. From then
//! on the backend owns the request; the future only holds an `Arc<Slot>` where the result
//! lands. Dropping the future drops that `Arc` and nothing else, so the buffer stays alive
//! until the backend is done with it, however late that is.

use crate::sys::c;
use crate::sys::fd::RawFd;
use std::{
    cell::RefCell,
    fmt,
    future::Future,
    io,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use super::abort::{self, Abort, AbortHandle};
use super::admission::Waiter;
use crate::{
    backend::{
        drive::drives, Bufs, Completer, Completion, Controls, FdInfo, Meta, Plan, Slot, Submit,
        What,
    },
    buffer::Buffer,
    context::Shared,
};

enum State {
    /// Cannot start; the caller's buffers, if any, go back with the error.
    Failed(io::Error, Bufs),
    /// Not polled yet.
    Waiting(Plan),
    /// Handed to the backend, or queued for a slot: waits on the slot for its result.
    InFlight(Arc<Slot>),
    Done,
}

thread_local! {
    /// Slots of finished operations, for this thread's next ones: an operation loop makes
    /// no allocation for its slot once warm.
    static SLOTS: RefCell<Vec<Arc<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// Slots kept per thread.
const SLOTS_KEPT: usize = 64;

fn new_slot() -> Arc<Slot> {
    let reused = SLOTS.try_with(|s| {
        let mut s = s.borrow_mut();
        // The backend lets go of a slot just after storing its result, so the last one
        // kept may still be shared for a moment: take one that is not.
        let i = s.iter().rposition(|a| Arc::strong_count(a) == 1)?;
        let mut slot = s.swap_remove(i);
        Arc::get_mut(&mut slot)?.reset();
        Some(slot)
    });
    reused.ok().flatten().unwrap_or_default()
}

/// Keeps a finished operation's slot for this thread's next operations.
fn recycle(slot: Arc<Slot>) {
    let _ = SLOTS.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.len() < SLOTS_KEPT {
            c.push(slot);
        }
    });
}

/// The state machine every operation future runs; resolves to the [`Completion`].
struct Raw {
    shared: Arc<Shared>,
    state: State,
    /// The thread that queued this operation for a flush, if this future did: a flush
    /// from that thread sends what it queued; from any other (the task moved, or the
    /// operation was admitted from another thread's completion), whatever any thread left
    /// owed (see `FileIo::flush_any`).
    queued_on: Option<std::thread::ThreadId>,
    /// The cancellation it is part of, once an abort handle was asked for (of it, or of
    /// the `File` operation it is a step of).
    abort: std::sync::OnceLock<Arc<Abort>>,
}

impl Raw {
    fn new(shared: Arc<Shared>, plan: Plan) -> Raw {
        // A metadata operation's descriptor, if any, is checked by the system call.
        let checked = match &plan.what {
            What::Meta(_) => Ok(()),
            what => check(plan.fd, plan.offset, what.len()),
        };
        let state = match checked {
            Ok(()) => State::Waiting(plan),
            Err(e) => State::Failed(e, plan.what.into_bufs()),
        };
        Raw {
            shared,
            state,
            queued_on: None,
            abort: std::sync::OnceLock::new(),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Completion> {
        loop {
            if self.shared.is_forked() {
                if let Some(done) = self.forked() {
                    return Poll::Ready(done);
                }
            }
            // In flight: looked at in place (the state moves only once it is done).
            if let State::InFlight(slot) = &self.state {
                let (poll, flush) = slot.poll(cx);
                if flush {
                    self.flush_owed();
                }
                if poll.is_ready() {
                    if let State::InFlight(slot) = std::mem::replace(&mut self.state, State::Done) {
                        recycle(slot);
                    }
                }
                return poll;
            }
            match std::mem::replace(&mut self.state, State::Done) {
                State::Failed(e, bufs) => return Poll::Ready(Completion::failed(e, bufs)),
                State::Waiting(plan) => {
                    let slot = new_slot();
                    if self.abort.get().is_some_and(|a| !a.enlist(&slot)) {
                        // Aborted before it started: it never does.
                        return Poll::Ready(Completion::failed(
                            crate::sys::cancelled(),
                            plan.what.into_bufs(),
                        ));
                    }
                    let mut plan = Some(plan);
                    let admitted = self.shared.limiter.acquire_or_wait(|| Waiter {
                        plan: plan.take().expect("taken once"),
                        slot: Arc::clone(&slot),
                    });
                    let Some(plan) = plan.filter(|_| admitted) else {
                        // Queued: an operation leaving flight admits it; just wait.
                        self.state = State::InFlight(slot);
                        continue;
                    };
                    let done = Completer::new(Arc::clone(&slot), Some(self.shared.permit()));
                    let req = match plan.build(done) {
                        Ok(r) => r,
                        Err((e, done, bufs)) => {
                            done.fail(e, bufs);
                            self.state = State::InFlight(slot);
                            continue;
                        }
                    };
                    match self.shared.backend.submit(req) {
                        Submit::Started => self.state = State::InFlight(slot),
                        Submit::Held => {
                            // A reap sends it (see `backend::held`); the slot takes the
                            // waker now.
                            self.state = State::InFlight(slot);
                            continue;
                        }
                        Submit::Queued if self.shared.backend.drive().is_some_and(drives) => {
                            // The thread in `block_on` flushes once its tasks are polled;
                            // the slot takes the waker now.
                            self.state = State::InFlight(slot);
                            continue;
                        }
                        Submit::Queued => {
                            // Let every other ready operation queue up too; the next poll
                            // sends them to the kernel together.
                            self.queued_on = Some(std::thread::current().id());
                            slot.defer_flush();
                            self.state = State::InFlight(slot);
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                }
                State::InFlight(_) => unreachable!("handled above"),
                State::Done => {
                    return Poll::Ready(Completion::failed(
                        io::Error::other("caio: operation polled after it completed"),
                        Bufs::None,
                    ))
                }
            }
        }
    }

    /// The flush this future owes: of what its thread queued, if it is still on that
    /// thread; else of whatever is owed anywhere.
    fn flush_owed(&self) {
        let here = self
            .queued_on
            .is_some_and(|t| t == std::thread::current().id());
        if here {
            self.shared.backend.flush();
        } else {
            self.shared.backend.flush_any();
        }
    }

    /// In a child after `fork()`, on a context of an ancestor's. An operation not started
    /// yet on the process-wide context moves to the child's; anything else resolves with
    /// the fork error, touching nothing of the parent's: not its ring or kernel context
    /// (the child would submit or reap the parent's operations), not its queues (no
    /// thread of the parent's runs here, so nothing would ever complete), and not the
    /// slot of an operation in flight, which the parent's copy of the backend still owns.
    fn forked(&mut self) -> Option<Completion> {
        if let State::Waiting(_) = self.state {
            if self
                .shared
                .global
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                if let Ok(c) = crate::Context::global() {
                    self.shared = c.into_shared();
                    return None;
                }
            }
        }
        let bufs = match std::mem::replace(&mut self.state, State::Done) {
            State::Waiting(plan) => plan.what.into_bufs(),
            // The slot and the buffers are the backend's: the child's copies are left
            // alone (leaked), never freed or handed back.
            State::InFlight(slot) => {
                std::mem::forget(slot);
                Bufs::None
            }
            other => {
                self.state = other;
                return None;
            }
        };
        Some(Completion::failed(forked(), bufs))
    }

    /// Changes the controls of an operation not started yet; an error (a priority out of
    /// range) makes it fail with that error when polled. A started one is left alone.
    fn control(&mut self, f: impl FnOnce(&mut Controls) -> io::Result<()>) {
        if let State::Waiting(plan) = &mut self.state {
            if let Err(e) = f(&mut plan.controls) {
                if let State::Waiting(plan) = std::mem::replace(&mut self.state, State::Done) {
                    self.state = State::Failed(e, plan.what.into_bufs());
                }
            }
        }
    }

    /// A handle that cancels this operation (see [`AbortHandle::abort`]).
    fn abort_handle(&self) -> AbortHandle {
        let mut made = false;
        let abort = self.abort.get_or_init(|| {
            made = true;
            Abort::new(&self.shared)
        });
        if let (true, State::InFlight(slot)) = (made, &self.state) {
            abort.enlist(slot);
        }
        AbortHandle::new(Arc::clone(abort))
    }

    /// Makes it a step of `abort`'s operation, before its first poll.
    fn join(&mut self, abort: Option<&Arc<Abort>>) {
        if let Some(a) = abort {
            let _ = self.abort.set(Arc::clone(a));
        }
    }

    fn state_name(&self) -> &'static str {
        match &self.state {
            State::Failed(..) => "failed",
            State::Waiting(_) => "not started",
            State::InFlight(_) => "started (in flight or waiting for a slot)",
            State::Done => "done",
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // Started is started: send on what this future still owed a flush, as the thread
        // backend would run it; one still waiting for a slot will not start.
        if let State::InFlight(slot) = &self.state {
            if self.shared.is_forked() {
                // Not this process's to abandon or flush (see `forked`).
                if let State::InFlight(slot) = std::mem::replace(&mut self.state, State::Done) {
                    std::mem::forget(slot);
                }
                return;
            }
            // Its result is of no use now: the kernel is asked to cancel it, if it holds
            // it, and it is not started if it waits.
            abort::cancel(&self.shared, slot);
            if slot.abandon() {
                self.flush_owed();
            }
        }
    }
}

/// A file operation in progress; resolves to `io::Result<T>`.
///
/// Works on any executor. Dropping it before it completes is always safe: the backend keeps
/// the buffer alive until the kernel or worker is done with it, then frees it.
#[must_use = "an operation does nothing until it is awaited or polled"]
pub struct Operation<T> {
    raw: Raw,
    output: fn(Completion) -> T,
    _t: PhantomData<fn() -> T>,
}

/// An operation on the caller's buffers, which it hands back whatever happens; resolves to
/// `(io::Result<usize>, B)`, as tokio-uring's `BufResult`.
///
/// Dropping it before it completes is safe: the buffers are lost to the caller, and the
/// backend frees them only once the kernel or worker is done with them.
#[must_use = "an operation does nothing until it is awaited or polled"]
pub struct BufOperation<B> {
    raw: Raw,
    output: fn(Bufs) -> B,
}

/// The future of [`Context::read`](crate::Context::read).
pub type ReadFuture = Operation<Buffer>;
/// The future of [`Context::write`](crate::Context::write).
pub type WriteFuture = Operation<usize>;
/// The future of [`Context::fsync`](crate::Context::fsync) and
/// [`Context::fdsync`](crate::Context::fdsync).
pub type SyncFuture = Operation<()>;
/// The future of [`Context::read_at_into`](crate::Context::read_at_into) and
/// [`Context::write_at_from`](crate::Context::write_at_from).
pub type BufFuture = BufOperation<Buffer>;
/// The future of [`Context::read_vectored_at`](crate::Context::read_vectored_at) and
/// [`Context::write_vectored_at`](crate::Context::write_vectored_at).
pub type VectoredFuture = BufOperation<Vec<Buffer>>;

impl<T> fmt::Debug for Operation<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation")
            .field("state", &self.raw.state_name())
            .finish()
    }
}

impl<B> fmt::Debug for BufOperation<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufOperation")
            .field("state", &self.raw.state_name())
            .finish()
    }
}

/// An I/O priority: Linux's classes (`ioprio(7)`), each with levels 0 (first) to 7.
///
/// Given to one operation with [`Operation::priority`]: `aio_reqprio` on `linux`,
/// the submission entry's `ioprio` on `uring`, and `ioprio_set(2)` on the worker thread for
/// that call on `thread` and `blocking` (then put back). The device's I/O scheduler
/// decides what it means (BFQ and mq-deadline honour the classes; `none` ignores them).
/// Elsewhere than Linux there is no per-operation priority: the operation runs without
/// one, and [`Stats`](crate::Stats) counts it among the fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Served before any other class; asking for it needs `CAP_SYS_ADMIN` (else the
    /// operation fails with EPERM).
    RealTime(u8),
    /// The default class.
    BestEffort(u8),
    /// Served only when no other class waits.
    Idle,
}

impl Priority {
    /// The `ioprio` value: the class in the top 3 of 16 bits, the level below.
    pub(crate) fn ioprio(self) -> io::Result<u16> {
        const CLASS_SHIFT: u16 = 13;
        let (class, level) = match self {
            Priority::RealTime(l) => (1, l),
            Priority::BestEffort(l) => (2, l),
            Priority::Idle => (3, 0),
        };
        if level > 7 {
            return Err(invalid(format!(
                "priority level {level} is out of range: levels go from 0 to 7"
            )));
        }
        Ok((class << CLASS_SHIFT) | u16::from(level))
    }
}

/// The per-operation controls, the same on [`Operation`] and [`BufOperation`]. Each is
/// applied before the first poll (on a started operation, it changes nothing), on every
/// backend, with the fallback documented where the system lacks the flag.
macro_rules! controls {
    ($($ty:ident<$p:ident>),*) => {$(
        impl<$p> $ty<$p> {
            /// Runs it at this I/O [`Priority`].
            ///
            /// # Errors
            /// A level above 7 is `InvalidInput`, when polled; `RealTime` without
            /// `CAP_SYS_ADMIN` is EPERM.
            pub fn priority(mut self, priority: Priority) -> Self {
                self.raw.control(|c| {
                    c.prio = Some(priority.ioprio()?);
                    Ok(())
                });
                self
            }

            /// A write that is durable when it completes, as if followed by `fdatasync`
            /// (`RWF_DSYNC`: a FUA write where the device has it). Where the kernel has no
            /// `RWF_DSYNC`, and off Linux, it is the write then `fdatasync`. Ignored by
            /// reads and syncs (as `nowait` and `uncached` are by syncs, which always wait
            /// for the device).
            pub fn dsync(mut self) -> Self {
                self.raw.control(|c| {
                    c.dsync = true;
                    Ok(())
                });
                self
            }

            /// Never waits: where the operation would block (a page-cache miss, a write
            /// that must allocate or wait for writeback), it fails with
            /// `ErrorKind::WouldBlock` instead (`RWF_NOWAIT`), and nothing was moved.
            /// Where the system or filesystem cannot tell, the answer is `WouldBlock`
            /// too: never a call that blocks. A read may come back short with what the
            /// cache held; a read of tmpfs, which never waits for a device, just reads.
            pub fn nowait(mut self) -> Self {
                self.raw.control(|c| {
                    c.nowait = true;
                    Ok(())
                });
                self
            }

            /// Buffered I/O that leaves no pages in the cache (`RWF_DONTCACHE`, Linux 6.14
            /// on filesystems that have it). Elsewhere the same I/O, then
            /// `posix_fadvise(DONTNEED)` on its range where the system has it.
            pub fn uncached(mut self) -> Self {
                self.raw.control(|c| {
                    c.uncached = true;
                    Ok(())
                });
                self
            }

            /// A handle that cancels this operation, from any thread, before, during or
            /// after it runs: see [`AbortHandle::abort`]. Dropping the future of an
            /// operation in flight asks for its cancellation too.
            pub fn abort_handle(&self) -> AbortHandle {
                self.raw.abort_handle()
            }

            /// Makes it a step of the operation `abort` cancels (the file layer's, before
            /// the first poll).
            pub(crate) fn joined(mut self, abort: Option<&Arc<Abort>>) -> Self {
                self.raw.join(abort);
                self
            }

            /// Takes `controls` (the file layer's, set before the first poll), or fails
            /// with `error` (an out-of-range priority).
            pub(crate) fn with_controls(
                mut self,
                controls: Controls,
                error: Option<io::Error>,
            ) -> Self {
                self.raw.control(|c| match error {
                    Some(e) => Err(e),
                    None => {
                        *c = controls;
                        Ok(())
                    }
                });
                self
            }

            /// A write at the end of the file, whatever its offset, in one step with
            /// finding the end (`RWF_APPEND`; on Windows, `WriteFile` at the end-of-file
            /// offset). Unsupported (an error) where the system has neither. Ignored by
            /// reads and syncs.
            pub fn append(mut self) -> Self {
                self.raw.control(|c| {
                    c.append = true;
                    Ok(())
                });
                self
            }
        }
    )*};
}

controls!(Operation<T>, BufOperation<B>);

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
        return Err(io::Error::from_raw_os_error(c::EBADF));
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
    fn new(shared: Arc<Shared>, plan: Plan, output: fn(Completion) -> T) -> Self {
        Operation {
            raw: Raw::new(shared, plan),
            output,
            _t: PhantomData,
        }
    }
}

impl<B> BufOperation<B> {
    fn new(shared: Arc<Shared>, plan: Plan, output: fn(Bufs) -> B) -> Self {
        BufOperation {
            raw: Raw::new(shared, plan),
            output,
        }
    }
}

fn plan(fd: RawFd, offset: u64, what: What, file: Option<FdInfo>) -> Plan {
    Plan {
        fd,
        offset,
        what,
        file,
        controls: Controls::default(),
    }
}

pub(crate) fn read(
    shared: Arc<Shared>,
    nbytes: usize,
    fd: RawFd,
    offset: u64,
    file: Option<FdInfo>,
) -> ReadFuture {
    let p = plan(fd, offset, What::Read(nbytes), file);
    Operation::new(shared, p, |c| c.bufs.one())
}

pub(crate) fn write(
    shared: Arc<Shared>,
    buf: Buffer,
    fd: RawFd,
    offset: u64,
    file: Option<FdInfo>,
) -> WriteFuture {
    Operation::new(shared, plan(fd, offset, What::Write(buf), file), |c| c.n)
}

/// A read into the caller's buffer, or a write from it, handing it back.
pub(crate) fn owned(
    shared: Arc<Shared>,
    what: What,
    fd: RawFd,
    offset: u64,
    file: Option<FdInfo>,
) -> BufFuture {
    BufOperation::new(shared, plan(fd, offset, what, file), Bufs::one)
}

/// A vectored read or write, handing the buffers back.
pub(crate) fn vectored(
    shared: Arc<Shared>,
    what: What,
    fd: RawFd,
    offset: u64,
    file: Option<FdInfo>,
) -> VectoredFuture {
    BufOperation::new(shared, plan(fd, offset, what, file), Bufs::many)
}

pub(crate) fn fsync(
    shared: Arc<Shared>,
    fd: RawFd,
    data_only: bool,
    file: Option<FdInfo>,
) -> SyncFuture {
    let what = if data_only { What::Fdsync } else { What::Fsync };
    Operation::new(shared, plan(fd, 0, what, file), |_| ())
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
    Operation::new(shared, plan(fd, 0, What::Meta(meta), file), output)
}

impl<T> Future for Operation<T> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let this = self.get_mut();
        this.raw.poll(cx).map(|mut c| match c.error.take() {
            Some(e) => Err(e),
            None => Ok((this.output)(c)),
        })
    }
}

impl<B> Future for BufOperation<B> {
    type Output = (io::Result<usize>, B);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.raw.poll(cx).map(|c| {
            let r = match c.error {
                Some(e) => Err(e),
                None => Ok(c.n),
            };
            (r, (this.output)(c.bufs))
        })
    }
}
