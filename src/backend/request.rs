//! The nouns of the backend contract: the [`Request`] a backend runs, the [`Completion`]
//! it produces, and the [`Slot`] where the waiting future finds it.
//!
//! A request owns every byte the kernel or a worker may touch; the future owns only an
//! `Arc<Slot>`. Completing a request gives its in-flight [`Permit`] back first, then stores
//! the result and wakes the future.
//!
//! A backend's completion thread holds the wakes of a batch of completions back until the
//! whole batch is complete ([`hold_wakes`]): the operations their permits admit are queued
//! by then, so the first woken future's flush sends them all in one submission.

use std::{
    any::Any,
    cell::{Cell, RefCell, UnsafeCell},
    ffi::CString,
    fmt, io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
};

use futures::task::AtomicWaker;

use crate::{
    align::DirectAlignment,
    buffer::{Buffer, ALIGNMENT},
    sys,
};

/// What a finished operation produced: its error or byte count, the buffers of a read or
/// write (given back on an error too), and what a metadata operation made.
#[derive(Debug)]
pub(crate) struct Completion {
    /// `None` on success.
    pub error: Option<io::Error>,
    pub n: usize,
    pub bufs: Bufs,
    pub out: Out,
}

impl Completion {
    pub(crate) fn failed(e: io::Error, bufs: Bufs) -> Completion {
        Completion {
            error: Some(e),
            n: 0,
            bufs,
            out: Out::Nothing,
        }
    }
}

/// The caller's buffers, carried through an operation and handed back.
#[derive(Debug, Default)]
pub(crate) enum Bufs {
    #[default]
    None,
    One(Buffer),
    Many(Vec<Buffer>),
}

impl Bufs {
    /// The one buffer (empty if there is none).
    pub(crate) fn one(self) -> Buffer {
        match self {
            Bufs::One(b) => b,
            Bufs::Many(mut v) if v.len() == 1 => v.pop().unwrap_or_default(),
            _ => Buffer::new(),
        }
    }

    /// The buffers of a vectored operation.
    pub(crate) fn many(self) -> Vec<Buffer> {
        match self {
            Bufs::None => Vec::new(),
            Bufs::One(b) => vec![b],
            Bufs::Many(v) => v,
        }
    }
}

/// The buffers of a vectored read or write and the iovec array the kernel reads, which
/// points into them.
pub(crate) struct Vectored {
    pub bufs: Vec<Buffer>,
    iov: Vec<libc::iovec>,
}

// SAFETY: the iovecs only point into `bufs`, which the same value owns; moving it between
// threads moves that memory's ownership whole, as for a `Vec<Vec<u8>>`.
unsafe impl Send for Vectored {}
// SAFETY: shared references give no access to the pointed-to memory.
unsafe impl Sync for Vectored {}

impl Vectored {
    pub(crate) fn new(bufs: Vec<Buffer>) -> Vectored {
        Vectored {
            iov: Vec::with_capacity(bufs.len().min(sys::IOV_MAX)),
            bufs,
        }
    }

    /// Bytes the buffers hold.
    pub(crate) fn filled(&self) -> usize {
        self.bufs.iter().map(|b| b.len()).sum()
    }

    /// Bytes the buffers have room for.
    pub(crate) fn room(&self) -> usize {
        self.bufs.iter().map(|b| b.capacity() - b.len()).sum()
    }

    /// Rebuilds the iovecs over the buffers' spare capacity (what a read has yet to fill),
    /// at most `IOV_MAX` of them; returns them with the bytes they cover.
    pub(crate) fn read_iov(&mut self) -> (&[libc::iovec], usize) {
        self.iov.clear();
        let mut total = 0;
        for b in &mut self.bufs {
            let (ptr, room) = b.spare_ptr();
            if room == 0 {
                continue;
            }
            if self.iov.len() == sys::IOV_MAX {
                break;
            }
            self.iov.push(libc::iovec {
                iov_base: ptr.cast(),
                iov_len: room,
            });
            total += room;
        }
        (&self.iov, total)
    }

    /// Rebuilds the iovecs over the bytes after the first `skip` (what a write has yet to
    /// write), at most `IOV_MAX` of them; returns them with the bytes they cover.
    pub(crate) fn write_iov(&mut self, mut skip: usize) -> (&[libc::iovec], usize) {
        self.iov.clear();
        let mut total = 0;
        for b in &self.bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            if self.iov.len() == sys::IOV_MAX {
                break;
            }
            let rest = &b[skip..];
            skip = 0;
            self.iov.push(libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            });
            total += rest.len();
        }
        (&self.iov, total)
    }

    /// Marks the first `n` bytes of spare capacity, buffer after buffer, as read.
    ///
    /// # Safety
    /// The kernel or a `preadv` must have written those `n` bytes through the iovecs
    /// [`Vectored::read_iov`] built, with nothing touching the buffers since.
    pub(crate) unsafe fn advance(&mut self, mut n: usize) {
        for b in &mut self.bufs {
            let room = b.capacity() - b.len();
            let k = room.min(n);
            // SAFETY: the caller vouches that these bytes were written, in order.
            unsafe { b.advance(k) };
            n -= k;
            if n == 0 {
                break;
            }
        }
    }
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
    /// A regular file in memory (tmpfs, ramfs), opened without O_DIRECT.
    pub memory: bool,
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
    /// `posix_fadvise(2)` of the request's descriptor.
    Advise {
        offset: u64,
        len: u64,
        advice: libc::c_int,
    },
    /// `sync_file_range(2)` of the request's descriptor.
    SyncRange { offset: u64, len: u64, flags: u32 },
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
            Meta::Advise { .. } => "fadvise",
            Meta::SyncRange { .. } => "sync_file_range",
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
                let memory = file_type == libc::S_IFREG
                    && align.is_none()
                    && sys::is_memory_fs(fd.as_raw_fd());
                Ok(Out::Opened(Opened {
                    fd,
                    file_type,
                    align,
                    memory,
                }))
            }
            Meta::Close(owned) => sys::close(owned).map(nothing),
            Meta::Truncate(len) => sys::ftruncate(fd, len).map(nothing),
            Meta::Allocate { offset, len } => sys::fallocate(fd, offset, len).map(nothing),
            Meta::Advise {
                offset,
                len,
                advice,
            } => sys::fadvise(fd, offset, len, advice).map(nothing),
            Meta::SyncRange { offset, len, flags } => {
                sys::sync_file_range(fd, offset, len, flags).map(nothing)
            }
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
    /// Fill the buffers' spare capacity, in order (`preadv`).
    ReadV(Vectored),
    /// Write all of the buffers, in order (`pwritev`).
    WriteV(Vectored),
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
    /// The caller's buffers when the operation runs on aligned copies of them (O_DIRECT
    /// with unaligned memory): a read copies into them at the end; they are what comes back.
    pub keep: Bufs,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Read(b) => format!("read {}", b.capacity() - b.len()),
            Kind::Write(b) => format!("write {}", b.len()),
            Kind::ReadV(v) => format!("readv {}", v.bufs.len()),
            Kind::WriteV(v) => format!("writev {}", v.bufs.len()),
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
    /// A read of a file the file layer knows is in memory (tmpfs, ramfs), not O_DIRECT:
    /// copying its pages never waits for a device, so it is done on the submitting thread.
    pub(crate) fn reads_memory(&self) -> bool {
        matches!(self.kind, Kind::Read(_) | Kind::ReadV(_))
            && self.file.as_ref().is_some_and(|f| f.memory && !f.direct)
    }

    /// Whether a vectored operation has more to move than its last attempt covered (one
    /// system call takes at most `IOV_MAX` iovecs).
    pub(crate) fn has_more(&self) -> bool {
        match &self.kind {
            Kind::ReadV(v) => v.room() > 0,
            Kind::WriteV(v) => self.written < v.filled(),
            _ => false,
        }
    }

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
            Kind::ReadV(v) => loop {
                let done = v.filled();
                let (iov, room) = v.read_iov();
                if room == 0 {
                    return Ok(done);
                }
                // SAFETY: every iovec covers spare capacity of a buffer this request owns.
                match unsafe { sys::preadv(fd, iov, offset + done as u64) } {
                    Ok(0) => return Ok(done),
                    // SAFETY: preadv wrote `n` bytes through those iovecs, in order.
                    Ok(n) => unsafe { v.advance(n) },
                    Err(_) if done > 0 => return Ok(done),
                    Err(e) => return Err(e),
                }
            },
            Kind::WriteV(v) => loop {
                let at = self.written;
                let (iov, rest) = v.write_iov(at);
                if rest == 0 {
                    return Ok(at);
                }
                // SAFETY: every iovec covers initialised bytes of a buffer this request owns.
                match unsafe { sys::pwritev(fd, iov, offset + at as u64) } {
                    Ok(0) => return Ok(at),
                    Ok(n) => self.written += n,
                    Err(_) if at > 0 => return Ok(at),
                    Err(e) => return Err(e),
                }
            },
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

    /// Runs it on the calling thread and delivers the result.
    pub(crate) fn run_here(mut self) {
        let r = self.run_blocking();
        self.finish(r);
    }

    /// Whether its future is gone. A backend does not start such a request: its descriptor
    /// may have been closed, and its number reused by another file, since.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.done.slot().is_abandoned()
    }

    /// Delivers the result (with the buffers) to the waiting future, if any.
    pub(crate) fn finish(mut self, result: io::Result<usize>) {
        self.finish_in_place(result);
    }

    /// [`Request::finish`] on a request that stays where it is (a backend's box, reused
    /// for the next operation): its buffers and output go to the future, and what is left
    /// (the descriptor it keeps open, among others) is dropped with it.
    pub(crate) fn finish_in_place(&mut self, result: io::Result<usize>) {
        let kind = std::mem::replace(&mut self.kind, Kind::Fsync);
        let bufs = match (kind, std::mem::take(&mut self.keep)) {
            // A read on an aligned copy: the bytes go to the caller's buffers.
            (Kind::Read(tmp), Bufs::One(mut b)) => {
                b.clear();
                b.extend_from_slice(&tmp);
                Bufs::One(b)
            }
            (Kind::Read(tmp), Bufs::Many(mut v)) => {
                let mut rest = &tmp[..];
                for b in &mut v {
                    b.clear();
                    let k = b.extend_from_slice(rest);
                    rest = &rest[k..];
                }
                Bufs::Many(v)
            }
            (_, keep @ (Bufs::One(_) | Bufs::Many(_))) => keep,
            (Kind::Read(b) | Kind::Write(b), Bufs::None) => Bufs::One(b),
            (Kind::ReadV(v) | Kind::WriteV(v), Bufs::None) => Bufs::Many(v.bufs),
            _ => Bufs::None,
        };
        let c = match result {
            Ok(n) => Completion {
                error: None,
                n,
                bufs,
                out: std::mem::take(&mut self.out),
            },
            Err(e) => Completion::failed(e, bufs),
        };
        self.done.complete_now(c);
    }
}

/// How many wakes a thread holds back at most (two per completion: its own future's and
/// the one its slot admits); past that, those held are woken first. The room is taken
/// once, when the thread starts (`completes_for_others`), and never grows.
const HELD_WAKES: usize = 256;

thread_local! {
    /// How many [`HeldWakes`] live on this thread.
    static HOLDING: Cell<usize> = const { Cell::new(0) };
    /// The wakes they hold back; no room on a thread that does not hold.
    static HELD: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Makes the calling thread one that completes operations for other threads (a backend's
/// completion thread): under [`hold_wakes`] it holds their wakes back. Takes the room for
/// them now, so that holding never allocates. (On other threads a guard holds nothing:
/// a thread that completes what it polls itself gains nothing from it.)
pub(crate) fn completes_for_others() {
    HELD.with(|h| h.borrow_mut().reserve_exact(HELD_WAKES));
}

/// While it lives, the futures of the operations completed on this thread are woken only
/// when it drops; see [`hold_wakes`].
#[must_use = "the wakes are held back only while it lives"]
pub(crate) struct HeldWakes(());

/// Holds back the wakes of the operations this thread completes until the guard drops.
///
/// A reaper completes a batch of completions in a row. Each one first admits the next
/// queued operation (which a batching backend queues) and then wakes its future. Woken
/// at once, an executor on another thread starts polling while the batch is still being
/// completed, and its first flush sends only what was queued by then: the batch goes to
/// the kernel in small pieces. Held back, every admitted operation is queued before any
/// future runs (past [`HELD_WAKES`] wakes, before each [`HELD_WAKES`] of them run).
/// Guards nest; the outermost one wakes.
pub(crate) fn hold_wakes() -> HeldWakes {
    HOLDING.with(|h| h.set(h.get() + 1));
    HeldWakes(())
}

impl Drop for HeldWakes {
    fn drop(&mut self) {
        if HOLDING.with(|h| h.replace(h.get() - 1)) != 1 {
            return;
        }
        // Nothing is held from here on: a waker that completes operations itself (an
        // executor that polls inside `wake`) finds the list borrowed, or no guard, and
        // wakes them at once. At thread exit the list may be gone; `wake` then woke at once.
        let _ = HELD.try_with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                h.drain(..).for_each(Waker::wake);
            }
        });
    }
}

/// Wakes `w` now, or when this thread's [`HeldWakes`] drops.
fn wake(w: Waker) {
    if HOLDING.with(Cell::get) == 0 {
        return w.wake();
    }
    let mut w = Some(w);
    let _ = HELD.try_with(|h| {
        // Borrowed: a held wake is running and completed this one; wake it at once. No
        // room: not a thread that holds.
        let Ok(mut h) = h.try_borrow_mut() else {
            return;
        };
        if h.capacity() < HELD_WAKES {
            return;
        }
        if h.len() == HELD_WAKES {
            // Full (an enormous batch): those held so far go now.
            h.drain(..).for_each(Waker::wake);
        }
        h.push(w.take().expect("taken once"));
    });
    if let Some(w) = w {
        w.wake();
    }
}

/// Where a result lands and the future's waker waits.
///
/// No lock: the result is written once, by the backend's [`Completer`], before `done` is
/// set, and read once, by the one future that owns the slot, after it sees `done`. The
/// waker is an [`AtomicWaker`]: the future registers it and then looks at `done`; the
/// backend sets `done` and then takes it, so one of the two always sees the other.
#[derive(Default)]
pub(crate) struct Slot {
    /// Set (release) once `result` is written; the future reads `result` only after it
    /// has seen this (acquire).
    done: AtomicBool,
    result: UnsafeCell<Option<Completion>>,
    waker: AtomicWaker,
    /// Admitted from the queue into a batching backend: the future flushes on its next poll.
    needs_flush: AtomicBool,
    /// The future is gone.
    abandoned: AtomicBool,
    /// Nobody ever waits for it (a close after a drop): it flushes for itself, and an
    /// error is logged rather than lost.
    detached: Option<&'static str>,
}

// SAFETY: `result` is the only part that is not Sync. It is written by one thread, once
// (`set`, called only by the slot's one `Completer`, which completes once), before `done`
// is stored with release ordering; it is read only by the future that owns the slot,
// through `&mut`-exclusive polls (`Raw::poll`), after `done` was loaded with acquire
// ordering. Write and read never overlap.
unsafe impl Sync for Slot {}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("done", &self.done.load(Ordering::Relaxed))
            .field("abandoned", &self.abandoned.load(Ordering::Relaxed))
            .field("detached", &self.detached)
            .finish()
    }
}

impl Slot {
    /// A slot nobody will poll, for an operation that must run anyway; `what` names it in
    /// the log if it fails.
    pub(crate) fn detached(what: &'static str) -> Slot {
        Slot {
            detached: Some(what),
            ..Slot::default()
        }
    }

    /// Makes a finished slot, held by nobody else, ready for a new operation.
    pub(crate) fn reset(&mut self) {
        *self.done.get_mut() = false;
        *self.result.get_mut() = None;
        drop(self.waker.take());
        *self.needs_flush.get_mut() = false;
        *self.abandoned.get_mut() = false;
        self.detached = None;
    }

    /// Stores the result; wakes the future once this handle on the slot is gone, so a
    /// woken future finds itself the slot's only owner (and can reuse it).
    pub(crate) fn set(self: Arc<Self>, c: Completion) {
        if let Some(what) = self.detached {
            if let Some(e) = &c.error {
                log::warn!("caio: {what} failed with nobody waiting for it: {e}");
            }
            return;
        }
        // SAFETY: see `impl Sync`: this is the one write, and no read starts before the
        // store of `done` below.
        unsafe { *self.result.get() = Some(c) };
        self.done.store(true, Ordering::Release);
        let waker = self.waker.take();
        drop(self);
        if let Some(w) = waker {
            wake(w);
        }
    }

    /// The result if it is there, else registers the waker; and whether the future owes
    /// the backend a flush. Called only by the future that owns the slot.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> (Poll<Completion>, bool) {
        let flush = self.needs_flush.load(Ordering::Relaxed)
            && self.needs_flush.swap(false, Ordering::SeqCst);
        if !self.done.load(Ordering::Acquire) {
            self.waker.register(cx.waker());
            if !self.done.load(Ordering::Acquire) {
                return (Poll::Pending, flush);
            }
        }
        // SAFETY: see `impl Sync`: `done` was seen, so the write is over, and only this
        // future reads; it reads once, since a taken result leaves `None`.
        match unsafe { (*self.result.get()).take() } {
            Some(r) => (Poll::Ready(r), flush),
            None => (Poll::Pending, flush), // taken by an earlier poll: never again
        }
    }

    /// The future owes the backend a flush on its next poll (it just queued a request).
    pub(crate) fn defer_flush(&self) {
        self.needs_flush.store(true, Ordering::SeqCst);
    }

    /// After admission into a batching backend: asks the future to flush and wakes it.
    /// `true` when the future is gone, so the caller must flush instead.
    pub(crate) fn request_flush(&self) -> bool {
        // With `abandon`'s store then swap, all SeqCst: either this sees the future gone,
        // or the future, going, sees the flush it owes (or both, and two flush).
        self.needs_flush.store(true, Ordering::SeqCst);
        let gone = self.abandoned.load(Ordering::SeqCst) || self.detached.is_some();
        // Through `wake`: a completion thread holds it back until its whole reap is done.
        // (The future registers its waker again when it polls.)
        if let Some(w) = self.waker.take() {
            wake(w);
        }
        gone
    }

    /// The future goes away; `true` when it owed a flush (which the caller then does).
    pub(crate) fn abandon(&self) -> bool {
        self.abandoned.store(true, Ordering::SeqCst);
        self.needs_flush.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }
}

/// The backend's half of an operation: completes it exactly once. Dropped without
/// completing (a worker that died, a backend torn down), it completes the future with an
/// error, so no future ever hangs.
#[derive(Debug)]
pub(crate) struct Completer {
    /// `None` once completed.
    slot: Option<Arc<Slot>>,
    permit: Option<Permit>,
}

impl Completer {
    pub(crate) fn new(slot: Arc<Slot>, permit: Option<Permit>) -> Completer {
        Completer {
            slot: Some(slot),
            permit,
        }
    }

    /// The slot the result goes to.
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        self.slot
            .as_ref()
            .expect("a completer has its slot until it completes")
    }

    pub(crate) fn complete(mut self, c: Completion) {
        self.complete_now(c);
    }

    /// Completes in place; the completer is spent (its drop does nothing).
    pub(crate) fn complete_now(&mut self, c: Completion) {
        // Give the in-flight slot back first, so the woken task can start its next
        // operation at once.
        self.permit.take();
        if let Some(slot) = self.slot.take() {
            slot.set(c);
        }
    }

    /// Completes with an error, handing `bufs` back.
    pub(crate) fn fail(self, e: io::Error, bufs: Bufs) {
        self.complete(Completion::failed(e, bufs));
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.permit.take();
            slot.set(Completion::failed(
                io::Error::other(
                    "caio: the operation was abandoned by its backend (worker panicked or context torn down)",
                ),
                Bufs::None,
            ));
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
    /// Read into a new buffer of this many bytes.
    Read(usize),
    /// Read into the caller's buffer, up to its capacity.
    ReadInto(Buffer),
    Write(Buffer),
    /// Read into the caller's buffers, up to their capacity, in order.
    ReadV(Vec<Buffer>),
    WriteV(Vec<Buffer>),
    Fsync,
    Fdsync,
    Meta(Meta),
}

impl What {
    /// The caller's buffers in it, to give back when it cannot start.
    pub(crate) fn into_bufs(self) -> Bufs {
        match self {
            What::ReadInto(b) | What::Write(b) => Bufs::One(b),
            What::ReadV(v) | What::WriteV(v) => Bufs::Many(v),
            _ => Bufs::None,
        }
    }

    /// Bytes it moves at most.
    pub(crate) fn len(&self) -> usize {
        let sum = |v: &[Buffer], f: fn(&Buffer) -> usize| {
            v.iter().fold(0usize, |a, b| a.saturating_add(f(b)))
        };
        match self {
            What::Read(n) => *n,
            What::ReadInto(b) => b.capacity(),
            What::Write(b) => b.len(),
            What::ReadV(v) => sum(v, Buffer::capacity),
            What::WriteV(v) => sum(v, |b| b.len()),
            _ => 0,
        }
    }
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
    /// A regular file in memory (tmpfs, ramfs) without O_DIRECT: a read of it never
    /// waits for a device, so backends read it on the submitting thread.
    pub memory: bool,
}

impl Plan {
    /// Builds the request once a permit is held: allocates the read buffer (only now, so
    /// waiting operations cost no memory), and for O_DIRECT puts unaligned memory on an
    /// aligned copy (`Request::keep` holds the caller's buffers meanwhile).
    pub(crate) fn build(self, done: Completer) -> Result<Request, (io::Error, Completer, Bufs)> {
        let Plan {
            fd,
            offset,
            what,
            file,
        } = self;
        let direct = || match &file {
            Some(f) => f.direct,
            None => sys::is_direct(fd).unwrap_or(false),
        };
        let unaligned = |v: &[Buffer]| v.iter().any(|b| !b.is_aligned_to(ALIGNMENT));
        let mut keep = Bufs::None;
        let kind = match what {
            What::Read(nbytes) => match Buffer::with_capacity_aligned(nbytes) {
                Ok(b) => Kind::Read(b),
                Err(e) => return Err((e, done, Bufs::None)),
            },
            What::ReadInto(mut buf) => {
                buf.clear();
                if !buf.is_aligned_to(ALIGNMENT) && direct() {
                    match Buffer::with_capacity_aligned(buf.capacity()) {
                        Ok(tmp) => {
                            keep = Bufs::One(buf);
                            Kind::Read(tmp)
                        }
                        Err(e) => return Err((e, done, Bufs::One(buf))),
                    }
                } else {
                    Kind::Read(buf)
                }
            }
            What::Write(buf) => {
                if !buf.is_aligned_to(ALIGNMENT) && direct() {
                    let copy = Buffer::from(&buf[..]);
                    keep = Bufs::One(buf);
                    Kind::Write(copy)
                } else {
                    Kind::Write(buf)
                }
            }
            What::ReadV(mut bufs) => {
                bufs.iter_mut().for_each(Buffer::clear);
                if unaligned(&bufs) && direct() {
                    let total = bufs.iter().map(Buffer::capacity).sum();
                    match Buffer::with_capacity_aligned(total) {
                        Ok(tmp) => {
                            keep = Bufs::Many(bufs);
                            Kind::Read(tmp)
                        }
                        Err(e) => return Err((e, done, Bufs::Many(bufs))),
                    }
                } else {
                    Kind::ReadV(Vectored::new(bufs))
                }
            }
            What::WriteV(bufs) => {
                if unaligned(&bufs) && direct() {
                    let total = bufs.iter().map(|b| b.len()).sum();
                    match Buffer::with_capacity_aligned(total) {
                        Ok(mut all) => {
                            bufs.iter().for_each(|b| {
                                all.extend_from_slice(b);
                            });
                            keep = Bufs::Many(bufs);
                            Kind::Write(all)
                        }
                        Err(e) => return Err((e, done, Bufs::Many(bufs))),
                    }
                } else {
                    Kind::WriteV(Vectored::new(bufs))
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
            keep,
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
            keep: Bufs::None,
        },
        slot,
    )
}

#[cfg(test)]
pub(crate) fn take_result(slot: &Slot) -> Option<io::Result<Completion>> {
    if !slot.done.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: `done` was seen: the completer's one write is over, and the caller is the
    // slot's only reader (no future polls it).
    unsafe { (*slot.result.get()).take() }.map(|mut c| match c.error.take() {
        Some(e) => Err(e),
        None => Ok(c),
    })
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

    use std::sync::Mutex;

    /// Counts its wakes; the first one may finish another request, as a waker that
    /// polls inside `wake` would.
    #[derive(Default)]
    struct Counting {
        wakes: std::sync::atomic::AtomicUsize,
        then: Mutex<Option<Request>>,
    }

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = self.then.lock().unwrap().take();
            if let Some(req) = next {
                req.finish(Ok(0));
            }
        }
    }

    impl Counting {
        fn wakes(&self) -> usize {
            self.wakes.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A request whose future waits with `waker`.
    fn waited(waker: &Waker) -> Request {
        let (req, slot) = test_request(Kind::Fsync);
        let poll = slot.poll(&mut Context::from_waker(waker)).0;
        assert!(poll.is_pending());
        req
    }

    #[test]
    fn held_wakes_run_once_each_when_the_outermost_guard_drops() {
        completes_for_others();
        let count = Arc::new(Counting::default());
        let waker = Waker::from(Arc::clone(&count));
        let (a, b) = (waited(&waker), waited(&waker));
        let outer = hold_wakes();
        a.finish(Ok(0));
        {
            let _inner = hold_wakes();
            b.finish(Ok(0));
        }
        assert_eq!(count.wakes(), 0, "woken before the batch was complete");
        drop(outer);
        assert_eq!(count.wakes(), 2);
        waited(&waker).finish(Ok(0));
        assert_eq!(
            count.wakes(),
            3,
            "with no guard, a completion wakes at once"
        );
    }

    #[test]
    fn past_its_room_the_held_wakes_go_first_and_none_is_lost() {
        completes_for_others();
        let count = Arc::new(Counting::default());
        let waker = Waker::from(Arc::clone(&count));
        let reqs: Vec<Request> = (0..HELD_WAKES + 5).map(|_| waited(&waker)).collect();
        let held = hold_wakes();
        for r in reqs {
            r.finish(Ok(0));
        }
        assert_eq!(
            count.wakes(),
            HELD_WAKES,
            "the first {HELD_WAKES} go when the list is full"
        );
        drop(held);
        assert_eq!(count.wakes(), HELD_WAKES + 5);
    }

    #[test]
    fn a_thread_that_completes_only_for_itself_holds_nothing() {
        let count = Arc::new(Counting::default());
        let waker = Waker::from(Arc::clone(&count));
        let req = waited(&waker);
        // A thread of its own: the test harness's may have made room already.
        std::thread::spawn(move || {
            let _held = hold_wakes();
            req.finish(Ok(0));
            assert_eq!(count.wakes(), 1, "held on a thread with no room");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_wake_that_completes_another_operation_wakes_it_too() {
        completes_for_others();
        let count = Arc::new(Counting::default());
        let waker = Waker::from(Arc::clone(&count));
        let first = waited(&waker);
        *count.then.lock().unwrap() = Some(waited(&waker));
        drop({
            let held = hold_wakes();
            first.finish(Ok(0));
            held
        });
        assert_eq!(
            count.wakes(),
            2,
            "the one completed inside a held wake was lost"
        );
    }

    #[test]
    fn finish_returns_the_read_buffer() {
        let (req, slot) = test_request(Kind::Read(Buffer::from(&b"abc"[..])));
        req.finish(Ok(3));
        let c = take_result(&slot).unwrap().unwrap();
        assert_eq!((c.n, &c.bufs.one()[..]), (3, &b"abc"[..]));
    }

    /// Unparks a thread.
    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    #[test]
    fn a_result_set_on_another_thread_while_the_future_polls_is_seen_once_and_wakes_it() {
        // The slot has no lock: the future registers its waker, then looks for the result;
        // the completer stores the result, then takes the waker. Race them many times, with
        // the completer at every point of the future's poll; a lost wake is a pending
        // poll that nothing wakes (caught by the timeout), a torn result a wrong count.
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        for i in 0..20_000usize {
            let (req, slot) = test_request(Kind::Fsync);
            let spin = i % 64;
            let t = std::thread::spawn(move || {
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                req.finish(Ok(i));
            });
            let c = loop {
                match slot.poll(&mut cx).0 {
                    Poll::Ready(c) => break c,
                    Poll::Pending => {
                        let t0 = std::time::Instant::now();
                        std::thread::park_timeout(std::time::Duration::from_secs(5));
                        assert!(
                            t0.elapsed() < std::time::Duration::from_secs(5),
                            "poll {i}: the result came and nothing woke the future"
                        );
                    }
                }
            };
            assert_eq!(c.n, i);
            assert!(slot.poll(&mut cx).0.is_pending(), "a result is taken once");
            t.join().unwrap();
        }
    }
}
