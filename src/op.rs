//! The one completion future every backend resolves, and the request a backend executes.
//!
//! An [`Operation`] is lazy: nothing happens until it is polled. Its first poll takes one
//! of the context's `max_requests` slots, builds a [`Request`] that owns every byte the
//! kernel or a worker may touch, and hands it to the backend; with no slot free, it queues
//! in the context instead, and the operation that frees a slot admits it. From then
//! on the backend owns the request; the future only holds an `Arc<Slot>` where the result
//! lands. Dropping the future drops that `Arc` and nothing else, so the buffer stays alive
//! until the backend is done with it, however late that is.

use std::{
    cell::{Cell, RefCell},
    fmt,
    future::Future,
    io,
    marker::PhantomData,
    os::unix::io::RawFd,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use crate::{
    backend::Submit,
    buffer::{Buffer, ALIGNMENT},
    context::Shared,
    sys,
};

/// What a finished operation produced: a byte count and, for reads, the buffer.
#[derive(Debug)]
pub(crate) struct Completion {
    pub n: usize,
    pub buf: Option<Buffer>,
}

/// What to do.
pub(crate) enum Kind {
    /// Fill the buffer's spare capacity.
    Read(Buffer),
    /// Write all of the buffer.
    Write(Buffer),
    Fsync,
    Fdsync,
    /// Panics in the worker (tests of panic containment).
    #[cfg(test)]
    Panic,
}

/// One operation owned by a backend from submission to completion.
pub(crate) struct Request {
    pub fd: RawFd,
    pub offset: u64,
    pub kind: Kind,
    pub done: Completer,
    /// Bytes an earlier attempt already wrote (a write continued elsewhere after a
    /// short kernel AIO completion). Reads keep their progress in the buffer's length.
    pub written: usize,
    /// Set by the file layer: keeps the descriptor open until the request is dropped.
    pub file: Option<FdInfo>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Read(b) => format!("read {}", b.capacity() - b.len()),
            Kind::Write(b) => format!("write {}", b.len()),
            Kind::Fsync => "fsync".into(),
            Kind::Fdsync => "fdsync".into(),
            #[cfg(test)]
            Kind::Panic => "panic".into(),
        };
        write!(f, "Request({kind} fd={} offset={})", self.fd, self.offset)
    }
}

impl Request {
    /// Performs (or continues) the operation on the calling thread with positional
    /// syscalls: reads until the buffer is full or EOF, writes until everything is
    /// written. An error after some bytes moved reports those bytes, as `read(2)` and
    /// `write(2)` do. Returns the total bytes moved, earlier attempts included.
    pub(crate) fn run_blocking(&mut self) -> io::Result<usize> {
        let (fd, offset) = (self.fd, self.offset);
        match &mut self.kind {
            Kind::Read(buf) => loop {
                let (ptr, room) = buf.spare_ptr();
                if room == 0 {
                    return Ok(buf.len());
                }
                // SAFETY: `ptr` points at `room` writable bytes owned by `buf`, which this
                // request owns for the whole call.
                match unsafe { sys::pread(fd, ptr, room, offset + buf.len() as u64) } {
                    Ok(0) => return Ok(buf.len()),
                    // SAFETY: pread wrote `n <= room` bytes at `ptr`.
                    Ok(n) => unsafe { buf.advance(n) },
                    Err(_) if !buf.is_empty() => return Ok(buf.len()),
                    Err(e) => return Err(e),
                }
            },
            Kind::Write(buf) => {
                while self.written < buf.len() {
                    let at = self.written;
                    match sys::pwrite(fd, &buf[at..], offset + at as u64) {
                        Ok(0) => break,
                        Ok(n) => self.written += n,
                        Err(_) if at > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(self.written)
            }
            Kind::Fsync => sys::fsync(fd).map(|()| 0),
            Kind::Fdsync => sys::fdatasync(fd).map(|()| 0),
            #[cfg(test)]
            Kind::Panic => panic!("injected worker panic"),
        }
    }

    /// Delivers the result (with the buffer) to the waiting future, if any.
    pub(crate) fn finish(self, result: io::Result<usize>) {
        let buf = match self.kind {
            Kind::Read(b) | Kind::Write(b) => Some(b),
            _ => None,
        };
        self.done.complete(result.map(|n| Completion { n, buf }));
    }
}

/// Where a result lands and the future's waker waits.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    inner: Mutex<SlotInner>,
}

#[derive(Debug, Default)]
struct SlotInner {
    result: Option<io::Result<Completion>>,
    waker: Option<Waker>,
    /// Admitted from the queue into a batching backend: the future flushes on its next poll.
    needs_flush: bool,
    /// The future is gone.
    abandoned: bool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        // The critical sections only move values in and out: poison carries no broken state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, r: io::Result<Completion>) {
        let waker = {
            let mut s = self.lock();
            s.result = Some(r);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The result if it is there, else registers the waker; and whether the future owes
    /// the backend a flush.
    fn poll(&self, cx: &mut Context<'_>) -> (Poll<io::Result<Completion>>, bool) {
        let mut s = self.lock();
        let flush = std::mem::take(&mut s.needs_flush);
        let poll = match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                match &mut s.waker {
                    Some(w) => w.clone_from(cx.waker()),
                    w @ None => *w = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        };
        (poll, flush)
    }

    /// The future owes the backend a flush on its next poll (it just queued a request).
    fn defer_flush(&self) {
        self.lock().needs_flush = true;
    }

    /// After admission into a batching backend: asks the future to flush and wakes it.
    /// `true` when the future is gone, so the caller must flush instead.
    fn request_flush(&self) -> bool {
        let (waker, gone) = {
            let mut s = self.lock();
            s.needs_flush = true;
            (s.waker.clone(), s.abandoned)
        };
        if let Some(w) = waker {
            w.wake();
        }
        gone
    }

    /// The future goes away; `true` when it owed a flush (which the caller then does).
    fn abandon(&self) -> bool {
        let mut s = self.lock();
        s.abandoned = true;
        std::mem::take(&mut s.needs_flush)
    }

    fn is_abandoned(&self) -> bool {
        self.lock().abandoned
    }
}

/// The backend's half of an operation: completes it exactly once. Dropped without
/// completing (a worker that died, a backend torn down), it completes the future with an
/// error, so no future ever hangs.
#[derive(Debug)]
pub(crate) struct Completer {
    slot: Arc<Slot>,
    permit: Option<Permit>,
    done: bool,
}

impl Completer {
    pub(crate) fn complete(mut self, r: io::Result<Completion>) {
        // Give the in-flight slot back first, so the woken task can start its next
        // operation at once.
        self.permit.take();
        self.slot.set(r);
        self.done = true;
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if !self.done {
            self.permit.take();
            self.slot.set(Err(io::Error::other(
                "caio: the operation was abandoned by its backend (worker panicked or context torn down)",
            )));
        }
    }
}

/// One of the `max_requests` slots, held by a request until the backend is done with it.
/// Dropping it hands the slot to the oldest queued operation, or frees it.
pub(crate) struct Permit {
    shared: Arc<Shared>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        release(&self.shared);
    }
}

/// An operation queued for a slot: what to do and where its result goes.
pub(crate) struct Waiter {
    plan: Plan,
    slot: Arc<Slot>,
}

thread_local! {
    /// Set while this thread admits queued operations: a slot freed meanwhile (an admitted
    /// operation that finished inline, or failed) is handed over through `HANDED`, not by
    /// recursion, so the stack stays flat however long the queue.
    static ADMITTING: Cell<bool> = const { Cell::new(false) };
    static HANDED: RefCell<Vec<(Arc<Shared>, Waiter)>> = const { RefCell::new(Vec::new()) };
}

/// A slot leaves flight: admit the oldest queued operation with it, if any.
fn release(shared: &Arc<Shared>) {
    let Some(w) = shared.limiter.release() else {
        return;
    };
    if ADMITTING.with(|a| a.replace(true)) {
        HANDED.with(|h| h.borrow_mut().push((Arc::clone(shared), w)));
        return;
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ADMITTING.with(|a| a.set(false));
        }
    }
    let _reset = Reset;
    admit(Arc::clone(shared), w);
    while let Some((s, w)) = HANDED.with(|h| h.borrow_mut().pop()) {
        admit(s, w);
    }
}

/// Starts a queued operation with the slot just handed to it, on this thread.
fn admit(shared: Arc<Shared>, w: Waiter) {
    let permit = Permit {
        shared: Arc::clone(&shared),
    };
    if w.slot.is_abandoned() {
        // Its future is gone and it never started: nothing waits for it. The slot moves on
        // (dropping the permit).
        return;
    }
    let done = Completer {
        slot: w.slot,
        permit: Some(permit),
        done: false,
    };
    let slot = Arc::clone(&done.slot);
    match build(w.plan, done) {
        Ok(req) => {
            if shared.backend.submit(req) == Submit::Queued {
                // Its future flushes on its next poll, together with every other operation
                // admitted and woken now: one batch, not one io_submit each.
                if slot.request_flush() {
                    // Its future went away meanwhile: nobody will flush for it.
                    shared.backend.flush();
                }
            }
        }
        Err((e, done)) => done.complete(Err(e)),
    }
}

/// What an operation will do, before it has a permit.
struct Plan {
    fd: RawFd,
    offset: u64,
    what: What,
    file: Option<FdInfo>,
}

enum What {
    Read(usize),
    Write(Buffer),
    Fsync,
    Fdsync,
}

/// What the file layer knows about its descriptor, and the owner that keeps it open until
/// every request on it is finished.
#[derive(Clone)]
pub(crate) struct FdInfo {
    pub _owner: Arc<dyn std::any::Any + Send + Sync>,
    /// A regular file or block device (positional I/O makes sense).
    pub seekable: bool,
    /// Opened with O_DIRECT.
    pub direct: bool,
}

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

/// Builds the request once a permit is held: allocates the read buffer (only now, so
/// waiting operations cost no memory) and bounces unaligned memory for O_DIRECT writes.
fn build(plan: Plan, done: Completer) -> Result<Request, (io::Error, Completer)> {
    let Plan {
        fd,
        offset,
        what,
        file,
    } = plan;
    let kind = match what {
        What::Read(nbytes) => match Buffer::with_capacity_aligned(nbytes) {
            Ok(b) => Kind::Read(b),
            Err(e) => return Err((e, done)),
        },
        What::Write(buf) => {
            let direct = || match &file {
                Some(f) => f.direct,
                None => sys::is_direct(fd).unwrap_or(false),
            };
            if !buf.is_aligned_to(ALIGNMENT) && direct() {
                Kind::Write(Buffer::from(&buf[..]))
            } else {
                Kind::Write(buf)
            }
        }
        What::Fsync => Kind::Fsync,
        What::Fdsync => Kind::Fdsync,
    };
    Ok(Request {
        fd,
        offset,
        kind,
        done,
        written: 0,
        file,
    })
}

impl<T> Future for Operation<T> {
    type Output = io::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Failed(e) => return Poll::Ready(Err(e)),
                State::Waiting(plan) => {
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
                    let done = Completer {
                        slot: Arc::clone(&slot),
                        permit: Some(Permit {
                            shared: Arc::clone(&this.shared),
                        }),
                        done: false,
                    };
                    let req = match build(plan, done) {
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

#[cfg(test)]
pub(crate) fn test_request(kind: Kind) -> (Request, Arc<Slot>) {
    let slot = Arc::new(Slot::default());
    let done = Completer {
        slot: Arc::clone(&slot),
        permit: None,
        done: false,
    };
    (
        Request {
            fd: -1,
            offset: 0,
            kind,
            done,
            written: 0,
            file: None,
        },
        slot,
    )
}

#[cfg(test)]
pub(crate) fn take_result(slot: &Slot) -> Option<io::Result<Completion>> {
    slot.lock().result.take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_completer_reports_an_error() {
        let (req, slot) = test_request(Kind::Fsync);
        drop(req);
        let e = take_result(&slot).expect("completed").unwrap_err();
        assert!(e.to_string().contains("abandoned"), "{e}");
    }

    #[test]
    fn finish_returns_the_read_buffer() {
        let (req, slot) = test_request(Kind::Read(Buffer::from(&b"abc"[..])));
        req.finish(Ok(3));
        let c = take_result(&slot).unwrap().unwrap();
        assert_eq!((c.n, &c.buf.unwrap()[..]), (3, &b"abc"[..]));
    }
}
