//! The nouns of the backend contract: the [`Request`] a backend runs (what it does,
//! [`Kind`] and [`Meta`], with the buffers it owns) and the [`Completion`] it produces.
//! The slot the waiting future finds it in is `slot.rs`; how an operation becomes a
//! request is `plan.rs`.
//!
//! A request owns every byte the kernel or a worker may touch; the future owns only an
//! `Arc<Slot>`. Completing a request gives its in-flight permit back first, then stores
//! the result and wakes the future.

use crate::sys::c;
use crate::sys::fd::{AsRawFd, OwnedFd, RawFd};
use std::{any::Any, fmt, io};

use super::{Completer, Controls, FdInfo};
use crate::{
    align::DirectAlignment,
    buffer::Buffer,
    sys::{self, RwFlags},
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
    iov: Vec<c::iovec>,
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

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    /// Bytes the buffers have room for.
    pub(crate) fn room(&self) -> usize {
        self.bufs.iter().map(|b| b.capacity() - b.len()).sum()
    }

    /// Rebuilds the iovecs over the buffers' spare capacity (what a read has yet to fill),
    /// at most `IOV_MAX` of them; returns them with the bytes they cover.
    pub(crate) fn read_iov(&mut self) -> (&[c::iovec], usize) {
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
            self.iov.push(c::iovec {
                iov_base: ptr.cast(),
                iov_len: room,
            });
            total += room;
        }
        (&self.iov, total)
    }

    /// Rebuilds the iovecs over the bytes after the first `skip` (what a write has yet to
    /// write), at most `IOV_MAX` of them; returns them with the bytes they cover.
    pub(crate) fn write_iov(&mut self, mut skip: usize) -> (&[c::iovec], usize) {
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
            self.iov.push(c::iovec {
                iov_base: rest.as_ptr() as *mut c::c_void,
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
    pub file_type: c::mode_t,
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
    /// `Out::Opened`. A directory is EISDIR (on Windows, whose open refuses one, the
    /// open's own error): the file layer opens none.
    Open {
        path: sys::OsPath,
        /// `O_*` flags (on Windows, caio's bits of the same names, see `sys::c`).
        flags: c::c_int,
        /// The permission bits of a new file; on Windows, which has none, the caller's
        /// `CreateFileW` flags and attributes (`OpenOptions::custom_flags`).
        mode: c::mode_t,
        /// Bypass the page cache: `O_DIRECT` is among `flags` where the system has it;
        /// on macOS the open sets `F_NOCACHE`.
        direct: bool,
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
        advice: c::c_int,
    },
    /// `sync_file_range(2)` of the request's descriptor.
    SyncRange { offset: u64, len: u64, flags: u32 },
    /// `rename(2)`.
    Rename { from: sys::OsPath, to: sys::OsPath },
    /// `unlink(2)`, or `rmdir(2)` when `dir`.
    Unlink { path: sys::OsPath, dir: bool },
    /// `mkdir(2)`.
    Mkdir { path: sys::OsPath, mode: c::mode_t },
    /// Any other blocking work; its result is `Out::Any`.
    Call(Call),
    /// Already run (what `run_blocking` leaves behind).
    Taken,
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
            Meta::Open {
                path,
                flags,
                mode,
                direct,
            } => {
                let fd = sys::open(&path, flags, mode)?;
                let file_type = sys::file_type(fd.as_raw_fd())?;
                if file_type == c::S_IFDIR {
                    return Err(io::Error::from_raw_os_error(c::EISDIR));
                }
                if direct {
                    sys::no_cache(fd.as_raw_fd())?;
                }
                // Only Linux's O_DIRECT and Windows' FILE_FLAG_NO_BUFFERING ask for
                // aligned transfers; FreeBSD's O_DIRECT and macOS's F_NOCACHE take any.
                let align = if direct && cfg!(any(target_os = "linux", windows)) {
                    Some(crate::align::alignment_of(fd.as_raw_fd())?)
                } else {
                    None
                };
                let memory =
                    file_type == c::S_IFREG && align.is_none() && sys::is_memory_fs(fd.as_raw_fd());
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
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// What kind of operation a [`Kind`] is, as far as routing cares: every backend's route
/// table is written in these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Read,
    Write,
    Sync,
    /// Open, close, stat, rename...
    Meta,
}

impl Kind {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn class(&self) -> Class {
        match self {
            Kind::Read(_) | Kind::ReadV(_) => Class::Read,
            Kind::Write(_) | Kind::WriteV(_) => Class::Write,
            Kind::Fsync | Kind::Fdsync => Class::Sync,
            Kind::Meta(_) => Class::Meta,
        }
    }
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// What a kernel attempt left to do ([`Request::advance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Finished: the bytes moved in all, earlier attempts included (0 for a sync or a
    /// metadata call).
    Done(usize),
    /// Fewer bytes than asked, though not at an error: a partly cached read, a transfer
    /// over the kernel's per-call limit, or the end of the file.
    Short,
    /// Everything asked, but a vectored transfer has more iovecs than one call takes.
    More,
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
    /// The caller's per-operation controls.
    pub controls: Controls,
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
        };
        write!(f, "Request({kind} fd={} offset={})", self.fd, self.offset)
    }
}

impl Request {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    /// A read of a file the file layer knows is in memory (tmpfs, ramfs), not O_DIRECT:
    /// copying its pages never waits for a device, so it is done on the submitting thread.
    pub(crate) fn reads_memory(&self) -> bool {
        self.kind.class() == Class::Read
            && self
                .file
                .as_ref()
                .is_some_and(|f| f.facts.memory && !f.facts.direct)
    }

    /// A read of a file in memory (tmpfs, ramfs), known to the file layer or asked of the
    /// kernel: it never waits for a device, so `nowait()` does not apply to it.
    pub(crate) fn reads_from_memory(&self) -> bool {
        self.kind.class() == Class::Read && (self.reads_memory() || sys::is_memory_fs(self.fd))
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    /// Counts what a kernel attempt that asked for `asked` bytes moved (`moved`, its
    /// non-negative result), and says what is left to do.
    ///
    /// # Safety
    /// For a read, the kernel wrote the bytes it reports at the spare memory (or through
    /// the iovecs) the attempt was built with, and nothing touched the buffers since.
    pub(crate) unsafe fn advance(&mut self, moved: usize, asked: usize) -> Progress {
        let n = moved.min(asked);
        let total = match &mut self.kind {
            // SAFETY: the caller's promise: `n <= asked` bytes were written there.
            Kind::Read(buf) => unsafe {
                buf.advance(n);
                buf.len()
            },
            // SAFETY: as above, through the iovecs, in order.
            Kind::ReadV(v) => unsafe {
                v.advance(n);
                v.filled()
            },
            Kind::Write(_) | Kind::WriteV(_) => {
                self.written += n;
                self.written
            }
            Kind::Fsync | Kind::Fdsync | Kind::Meta(_) => return Progress::Done(0),
        };
        if n > 0 && n < asked {
            Progress::Short
        } else if n > 0 && self.has_more() {
            Progress::More
        } else {
            Progress::Done(total)
        }
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
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
        if self.controls.is_plain() || matches!(self.kind, Kind::Meta(_)) {
            return self.transfer(RwFlags::default());
        }
        self.run_controlled()
    }

    /// The bytes earlier attempts moved.
    pub(crate) fn moved(&self) -> usize {
        match &self.kind {
            Kind::Read(buf) => buf.len(),
            Kind::ReadV(v) => v.filled(),
            _ => self.written,
        }
    }

    /// The transfer itself, each system call with `flags`.
    pub(super) fn transfer(&mut self, flags: RwFlags) -> io::Result<usize> {
        let (fd, offset) = (self.fd, self.offset);
        match &mut self.kind {
            Kind::Read(buf) => loop {
                let (ptr, room) = buf.spare_ptr();
                if room == 0 {
                    return Ok(buf.len());
                }
                // SAFETY: `ptr` points at `room` writable bytes owned by `buf`, which this
                // request owns for the whole call.
                match unsafe { sys::pread_with(fd, ptr, room, offset + buf.len() as u64, flags) } {
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
                    match sys::pwrite_with(fd, &buf[at..], offset + at as u64, flags) {
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
                match unsafe { sys::rwv_with(fd, iov, offset + done as u64, flags, false) } {
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
                match unsafe { sys::rwv_with(fd, iov, offset + at as u64, flags, true) } {
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

    /// Whether it must not start: its future is gone (see [`Request::is_abandoned`]), or
    /// its cancellation was asked for, in which case it completes here, with `ECANCELED`
    /// and its buffers. A backend asks this where it is about to hand the request to the
    /// kernel or a worker, after naming it there ([`Slot::set_kernel`](super::Slot)), if
    /// it does.
    pub(crate) fn is_called_off(&mut self) -> bool {
        if self.done.slot().is_aborted() {
            self.finish_in_place(Err(crate::sys::cancelled()));
            return true;
        }
        self.is_abandoned()
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

#[cfg(test)]
pub(crate) fn test_request(kind: Kind) -> (Request, std::sync::Arc<super::Slot>) {
    let slot = std::sync::Arc::new(super::Slot::default());
    let done = Completer::new(std::sync::Arc::clone(&slot), None);
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
            controls: Controls::default(),
        },
        slot,
    )
}
