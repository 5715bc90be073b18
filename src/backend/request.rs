//! The nouns of the backend contract: the [`Request`] a backend runs, the [`Completion`]
//! it produces, and the [`Slot`] where the waiting future finds it.
//!
//! A request owns every byte the kernel or a worker may touch; the future owns only an
//! `Arc<Slot>`. Completing a request gives its in-flight [`Permit`] back first, then stores
//! the result and wakes the future.

use std::{
    any::Any,
    ffi::CString,
    fmt, io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use crate::{
    align::DirectAlignment,
    buffer::{Buffer, ALIGNMENT},
    sys,
};

/// What a finished operation produced: a byte count, the buffer of a read or write, and
/// what a metadata operation made.
#[derive(Debug)]
pub(crate) struct Completion {
    pub n: usize,
    pub buf: Option<Buffer>,
    pub out: Out,
}

/// What a metadata operation made.
#[derive(Default)]
pub(crate) enum Out {
    #[default]
    Nothing,
    /// What `Meta::Open` opened.
    Opened(Opened),
    /// What a `Meta::Call` returned.
    Any(Box<dyn Any + Send>),
}

impl fmt::Debug for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Out::Nothing => f.write_str("Nothing"),
            Out::Opened(o) => write!(f, "Opened({:?})", o.fd),
            Out::Any(_) => f.write_str("Any"),
        }
    }
}

/// A descriptor `Meta::Open` opened, with what the file layer needs to know of it.
#[derive(Debug)]
pub(crate) struct Opened {
    pub fd: OwnedFd,
    /// `st_mode & S_IFMT`.
    pub file_type: libc::mode_t,
    /// For an O_DIRECT open, the alignment it needs.
    pub align: Option<DirectAlignment>,
}

/// A closure run off the polling thread by [`Meta::Call`].
pub(crate) type Call = Box<dyn FnOnce() -> io::Result<Box<dyn Any + Send>> + Send>;

/// A metadata operation. The typed ones are those a backend may run natively (io_uring has
/// an opcode for each); `Call` is everything else (stat, readdir, chmod, links...), which
/// a backend runs on a thread, or inline for `blocking`.
pub(crate) enum Meta {
    /// `open(2)` of a path (`O_CLOEXEC` is added), then the file's type and, for
    /// `O_DIRECT`, its alignment (`fstat`/`statx`), in one operation; the result is
    /// `Out::Opened`. A directory is EISDIR: the file layer opens none.
    Open {
        path: CString,
        flags: libc::c_int,
        mode: libc::mode_t,
    },
    /// `close(2)`, reporting its error.
    Close(OwnedFd),
    /// `ftruncate(2)` of the request's descriptor.
    Truncate(u64),
    /// `fallocate(2)` (mode 0) of the request's descriptor.
    Allocate { offset: u64, len: u64 },
    /// `rename(2)`.
    Rename { from: CString, to: CString },
    /// `unlink(2)`, or `rmdir(2)` when `dir`.
    Unlink { path: CString, dir: bool },
    /// `mkdir(2)`.
    Mkdir { path: CString, mode: libc::mode_t },
    /// Any other blocking work; its result is `Out::Any`.
    Call(Call),
    /// Already run (what `run_blocking` leaves behind).
    Taken,
}

/// Whether open flags ask for O_DIRECT.
fn direct_flag(flags: libc::c_int) -> bool {
    #[cfg(target_os = "linux")]
    {
        flags & libc::O_DIRECT != 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = flags;
        false
    }
}

impl Meta {
    fn name(&self) -> &'static str {
        match self {
            Meta::Open { .. } => "open",
            Meta::Close(_) => "close",
            Meta::Truncate(_) => "ftruncate",
            Meta::Allocate { .. } => "fallocate",
            Meta::Rename { .. } => "rename",
            Meta::Unlink { dir: false, .. } => "unlink",
            Meta::Unlink { dir: true, .. } => "rmdir",
            Meta::Mkdir { .. } => "mkdir",
            Meta::Call(_) => "call",
            Meta::Taken => "done",
        }
    }

    /// Runs it on the calling thread.
    fn run(self, fd: RawFd) -> io::Result<Out> {
        let nothing = |()| Out::Nothing;
        match self {
            Meta::Open { path, flags, mode } => {
                let fd = sys::open(&path, flags, mode)?;
                let file_type = sys::file_type(fd.as_raw_fd())?;
                if file_type == libc::S_IFDIR {
                    return Err(io::Error::from_raw_os_error(libc::EISDIR));
                }
                let align = if direct_flag(flags) {
                    Some(crate::direct_alignment(fd.as_raw_fd())?)
                } else {
                    None
                };
                Ok(Out::Opened(Opened {
                    fd,
                    file_type,
                    align,
                }))
            }
            Meta::Close(owned) => sys::close(owned).map(nothing),
            Meta::Truncate(len) => sys::ftruncate(fd, len).map(nothing),
            Meta::Allocate { offset, len } => sys::fallocate(fd, offset, len).map(nothing),
            Meta::Rename { from, to } => sys::rename(&from, &to).map(nothing),
            Meta::Unlink { path, dir } => sys::unlink(&path, dir).map(nothing),
            Meta::Mkdir { path, mode } => sys::mkdir(&path, mode).map(nothing),
            Meta::Call(f) => f().map(Out::Any),
            Meta::Taken => Err(io::Error::other("caio: a metadata operation ran twice")),
        }
    }
}

/// What to do.
pub(crate) enum Kind {
    /// Fill the buffer's spare capacity.
    Read(Buffer),
    /// Write all of the buffer.
    Write(Buffer),
    Fsync,
    Fdsync,
    /// A metadata operation.
    Meta(Meta),
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
    /// What a metadata operation made, once it has run.
    pub out: Out,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Read(b) => format!("read {}", b.capacity() - b.len()),
            Kind::Write(b) => format!("write {}", b.len()),
            Kind::Fsync => "fsync".into(),
            Kind::Fdsync => "fdsync".into(),
            Kind::Meta(m) => m.name().into(),
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
            Kind::Meta(m) => {
                self.out = std::mem::replace(m, Meta::Taken).run(fd)?;
                Ok(0)
            }
            #[cfg(test)]
            Kind::Panic => panic!("injected worker panic"),
        }
    }

    /// Whether its future is gone. A backend does not start such a request: its descriptor
    /// may have been closed, and its number reused by another file, since.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.done.slot.is_abandoned()
    }

    /// Delivers the result (with the buffer) to the waiting future, if any.
    pub(crate) fn finish(self, result: io::Result<usize>) {
        let buf = match self.kind {
            Kind::Read(b) | Kind::Write(b) => Some(b),
            _ => None,
        };
        let out = self.out;
        self.done
            .complete(result.map(|n| Completion { n, buf, out }));
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
    /// Nobody ever waits for it (a close after a drop): it flushes for itself, and an
    /// error is logged rather than lost.
    detached: Option<&'static str>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        // The critical sections only move values in and out: poison carries no broken state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot nobody will poll, for an operation that must run anyway; `what` names it in
    /// the log if it fails.
    pub(crate) fn detached(what: &'static str) -> Slot {
        Slot {
            inner: Mutex::new(SlotInner {
                detached: Some(what),
                ..SlotInner::default()
            }),
        }
    }

    pub(crate) fn set(&self, r: io::Result<Completion>) {
        if let Some(what) = self.lock().detached {
            if let Err(e) = &r {
                log::warn!("caio: {what} failed with nobody waiting for it: {e}");
            }
            return;
        }
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
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> (Poll<io::Result<Completion>>, bool) {
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
    pub(crate) fn defer_flush(&self) {
        self.lock().needs_flush = true;
    }

    /// After admission into a batching backend: asks the future to flush and wakes it.
    /// `true` when the future is gone, so the caller must flush instead.
    pub(crate) fn request_flush(&self) -> bool {
        let (waker, gone) = {
            let mut s = self.lock();
            s.needs_flush = true;
            (s.waker.clone(), s.abandoned || s.detached.is_some())
        };
        if let Some(w) = waker {
            w.wake();
        }
        gone
    }

    /// The future goes away; `true` when it owed a flush (which the caller then does).
    pub(crate) fn abandon(&self) -> bool {
        let mut s = self.lock();
        s.abandoned = true;
        std::mem::take(&mut s.needs_flush)
    }

    pub(crate) fn is_abandoned(&self) -> bool {
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
    pub(crate) fn new(slot: Arc<Slot>, permit: Option<Permit>) -> Completer {
        Completer {
            slot,
            permit,
            done: false,
        }
    }

    /// The slot the result goes to.
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

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

/// Whoever counts operations in flight: told when one leaves.
pub(crate) trait Admission: Send + Sync {
    /// One operation left flight (its request completed or was dropped).
    fn release(self: Arc<Self>);
}

/// One of the in-flight slots, held by a request until the backend is done with it.
/// Dropping it gives the slot back to its [`Admission`].
pub(crate) struct Permit(Option<Arc<dyn Admission>>);

impl Permit {
    pub(crate) fn new(owner: Arc<dyn Admission>) -> Permit {
        Permit(Some(owner))
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(owner) = self.0.take() {
            owner.release();
        }
    }
}

/// What an operation will do, before it has a permit.
pub(crate) struct Plan {
    pub fd: RawFd,
    pub offset: u64,
    pub what: What,
    pub file: Option<FdInfo>,
}

pub(crate) enum What {
    Read(usize),
    Write(Buffer),
    Fsync,
    Fdsync,
    Meta(Meta),
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

impl Plan {
    /// Builds the request once a permit is held: allocates the read buffer (only now, so
    /// waiting operations cost no memory) and bounces unaligned memory for O_DIRECT writes.
    pub(crate) fn build(self, done: Completer) -> Result<Request, (io::Error, Completer)> {
        let Plan {
            fd,
            offset,
            what,
            file,
        } = self;
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
            What::Meta(m) => Kind::Meta(m),
        };
        Ok(Request {
            fd,
            offset,
            kind,
            done,
            written: 0,
            file,
            out: Out::Nothing,
        })
    }
}

#[cfg(test)]
pub(crate) fn test_request(kind: Kind) -> (Request, Arc<Slot>) {
    let slot = Arc::new(Slot::default());
    let done = Completer::new(Arc::clone(&slot), None);
    (
        Request {
            fd: -1,
            offset: 0,
            kind,
            done,
            written: 0,
            file: None,
            out: Out::Nothing,
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
