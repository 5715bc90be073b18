//! Every raw system call the crate makes, each one small typed function over `libc`.
//!
//! Nothing else in the crate calls `libc` functions that touch descriptors or memory the
//! kernel writes into. `EINTR` is retried here, in one place; errors carry the OS errno.

use std::{
    ffi::CStr,
    io,
    os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd},
};

/// Converts a `-1`-on-error return into `io::Result`.
fn cvt(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Runs `f` until it fails with something other than `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn offset(off: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(off).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("offset {off} is beyond the largest file offset"),
        )
    })
}

/// `pread(2)` into raw memory.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes for the duration of the call.
pub(crate) unsafe fn pread(fd: RawFd, buf: *mut u8, len: usize, off: u64) -> io::Result<usize> {
    let off = offset(off)?;
    // SAFETY: the caller guarantees `buf` is writable for `len` bytes.
    retry(|| cvt(unsafe { libc::pread(fd, buf.cast(), len, off) }))
}

/// `pwrite(2)` from a slice.
pub(crate) fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    let off = offset(off)?;
    // SAFETY: `buf` is a live slice readable for its whole length.
    retry(|| cvt(unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) }))
}

/// What `pread(2)` (`write` false) or `pwrite(2)` (`write` true) says of a descriptor on
/// which io_uring answered EBADF: the same EBADF, or ESPIPE where the file takes no
/// positional I/O (a `/proc` file, say), which those calls check first. A zero-length
/// call, made only after that refusal, so it moves no data: a descriptor io_uring refused
/// lacks the access mode, and the call fails before it reads or writes.
pub(crate) fn positional_errno(fd: RawFd, write: bool) -> i32 {
    let mut byte = 0u8;
    let r = if write {
        pwrite(fd, &[], 0)
    } else {
        // SAFETY: zero bytes are written at `byte`, a live local.
        unsafe { pread(fd, &mut byte, 0, 0) }
    };
    match r {
        Err(e) => e.raw_os_error().unwrap_or(libc::EBADF),
        Ok(_) => libc::EBADF,
    }
}

/// The most iovecs one `preadv`/`pwritev` (or one vectored AIO or io_uring entry) takes.
pub(crate) const IOV_MAX: usize = 1024;

/// `preadv(2)`.
///
/// # Safety
/// Every iovec must describe memory valid for writes for the duration of the call.
pub(crate) unsafe fn preadv(fd: RawFd, iov: &[libc::iovec], off: u64) -> io::Result<usize> {
    let off = offset(off)?;
    let cnt = iov.len().min(IOV_MAX) as libc::c_int;
    // SAFETY: the caller vouches for the memory; `iov` itself is a live slice.
    retry(|| cvt(unsafe { libc::preadv(fd, iov.as_ptr(), cnt, off) }))
}

/// `pwritev(2)`.
///
/// # Safety
/// Every iovec must describe memory valid for reads for the duration of the call.
pub(crate) unsafe fn pwritev(fd: RawFd, iov: &[libc::iovec], off: u64) -> io::Result<usize> {
    let off = offset(off)?;
    let cnt = iov.len().min(IOV_MAX) as libc::c_int;
    // SAFETY: the caller vouches for the memory; `iov` itself is a live slice.
    retry(|| cvt(unsafe { libc::pwritev(fd, iov.as_ptr(), cnt, off) }))
}

/// `fsync(2)`.
pub(crate) fn fsync(fd: RawFd) -> io::Result<()> {
    // SAFETY: fsync takes no pointers; a bad descriptor is reported as EBADF.
    retry(|| cvt(unsafe { libc::fsync(fd) } as libc::ssize_t)).map(drop)
}

/// `fdatasync(2)`, or `fsync(2)` where the system has no fdatasync.
pub(crate) fn fdatasync(fd: RawFd) -> io::Result<()> {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd"
    ))]
    {
        // SAFETY: fdatasync takes no pointers; a bad descriptor is reported as EBADF.
        retry(|| cvt(unsafe { libc::fdatasync(fd) } as libc::ssize_t)).map(drop)
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd"
    )))]
    {
        fsync(fd)
    }
}

/// The file status flags (`fcntl(F_GETFL)`): access mode, `O_DIRECT`, `O_APPEND`...
pub(crate) fn status_flags(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL takes no pointer argument.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    cvt(r as libc::ssize_t).map(|_| r)
}

/// Whether the descriptor was opened with `O_DIRECT` (always false where there is none).
pub(crate) fn is_direct(fd: RawFd) -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        Ok(status_flags(fd)? & libc::O_DIRECT != 0)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        status_flags(fd).map(|_| false)
    }
}

/// The file type bits (`st_mode & S_IFMT`) of a descriptor.
pub(crate) fn file_type(fd: RawFd) -> io::Result<libc::mode_t> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the right size for fstat to fill.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    cvt(r as libc::ssize_t)?;
    // SAFETY: fstat succeeded, so it initialised `st`.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

/// `ftruncate(2)`.
pub(crate) fn ftruncate(fd: RawFd, len: u64) -> io::Result<()> {
    let len = offset(len)?;
    // SAFETY: ftruncate takes no pointers.
    retry(|| cvt(unsafe { libc::ftruncate(fd, len) } as libc::ssize_t)).map(drop)
}

/// The size of a file, or of a block device (where `st_size` is 0).
pub(crate) fn file_len(fd: RawFd) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the right size for fstat to fill.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) } as libc::ssize_t)?;
    // SAFETY: fstat succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT == libc::S_IFBLK {
        // SAFETY: lseek takes no pointers; only positional I/O is done on our descriptors,
        // so moving the file position disturbs nothing.
        let end = unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
        return cvt(end as libc::ssize_t).map(|n| n as u64);
    }
    Ok(st.st_size as u64)
}

/// `open(2)` relative to the working directory, always with `O_CLOEXEC`.
pub(crate) fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; `mode` is passed as the variadic unsigned int.
    let fd = retry(|| {
        cvt(
            unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) }
                as libc::ssize_t,
        )
    })?;
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `close(2)`, reporting its error (NFS reports write-back errors here). The descriptor
/// is gone afterwards whatever the result, as POSIX leaves it on Linux: no retry on EINTR.
pub(crate) fn close(fd: OwnedFd) -> io::Result<()> {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` was owned by `fd`, which gave it up; it is closed exactly once.
    cvt(unsafe { libc::close(raw) } as libc::ssize_t).map(drop)
}

/// `fcntl(F_DUPFD_CLOEXEC)`: a second descriptor for the same open file.
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument, no pointer.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    cvt(new as libc::ssize_t)?;
    // SAFETY: `new` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `rename(2)`.
pub(crate) fn rename(from: &CStr, to: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated.
    cvt(unsafe { libc::rename(from.as_ptr(), to.as_ptr()) } as libc::ssize_t).map(drop)
}

/// `unlink(2)`, or `rmdir(2)` when `dir`.
pub(crate) fn unlink(path: &CStr, dir: bool) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    let r = unsafe {
        if dir {
            libc::rmdir(path.as_ptr())
        } else {
            libc::unlink(path.as_ptr())
        }
    };
    cvt(r as libc::ssize_t).map(drop)
}

/// `mkdir(2)`.
pub(crate) fn mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    cvt(unsafe { libc::mkdir(path.as_ptr(), mode) } as libc::ssize_t).map(drop)
}

/// Gives the unnamed file `fd` (opened with `O_TMPFILE`) the name `to`:
/// `linkat(/proc/self/fd/N, to, AT_SYMLINK_FOLLOW)`, which needs no capability.
#[cfg(target_os = "linux")]
pub(crate) fn link_fd(fd: RawFd, to: &CStr) -> io::Result<()> {
    let from = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL inside");
    // SAFETY: both paths are NUL-terminated.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    cvt(r as libc::ssize_t).map(drop)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: `Ok(true)` when this descriptor now holds the lock,
/// `Ok(false)` when another open file holds it.
pub(crate) fn try_lock_exclusive(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock takes no pointers; a bad descriptor is reported as EBADF.
    match retry(|| cvt(unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } as libc::ssize_t))
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// `fallocate(2)` with mode 0 (allocate, extending the size), where it exists.
pub(crate) fn fallocate(fd: RawFd, off: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (off, len) = (offset(off)?, offset(len)?);
        // SAFETY: fallocate takes no pointers.
        retry(|| cvt(unsafe { libc::fallocate(fd, 0, off, len) } as libc::ssize_t)).map(drop)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, off, len);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "fallocate exists only on Linux",
        ))
    }
}

/// Whether the descriptor's file lives in memory (tmpfs, ramfs): reading its page cache
/// never waits for a device, and `RWF_NOWAIT` reads there fail with EOPNOTSUPP.
pub(crate) fn is_memory_fs(fd: RawFd) -> bool {
    #[cfg(target_os = "linux")]
    {
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: fstatfs fills the zeroed struct it is given.
        if unsafe { libc::fstatfs(fd, st.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: fstatfs succeeded.
        #[allow(clippy::unnecessary_cast)] // f_type's type differs between targets
        let t = unsafe { st.assume_init() }.f_type as i64;
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        false
    }
}

/// `posix_fadvise(2)`; `advice` is a `POSIX_FADV_*` value.
pub(crate) fn fadvise(fd: RawFd, off: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        let (off, len) = (offset(off)?, offset(len)?);
        // SAFETY: posix_fadvise takes no pointers; it returns the error number itself.
        match unsafe { libc::posix_fadvise(fd, off, len, advice) } {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        let _ = (fd, off, len, advice);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "posix_fadvise does not exist on this system",
        ))
    }
}

/// `sync_file_range(2)`; `flags` are `SYNC_FILE_RANGE_*` bits.
pub(crate) fn sync_file_range(fd: RawFd, off: u64, len: u64, flags: u32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let (off, len) = (offset(off)?, offset(len)?);
        // SAFETY: sync_file_range takes no pointers.
        retry(|| {
            cvt(
                unsafe { libc::sync_file_range(fd, off, len, flags as libc::c_uint) }
                    as libc::ssize_t,
            )
        })
        .map(drop)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, off, len, flags);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "sync_file_range exists only on Linux",
        ))
    }
}

static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn forked_child() {
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How many times this process is a `fork()` away from where it started counting: a
/// context made under another generation belongs to an ancestor (its threads and kernel
/// AIO context are not in this process).
pub(crate) fn fork_generation() -> u64 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic, which is async-signal-safe
        // as the child side of fork requires.
        let r = unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        if r != 0 {
            log::warn!("caio: pthread_atfork failed ({r}): a fork will not be detected");
        }
    });
    FORK_GENERATION.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(target_os = "linux")]
pub(crate) use self::{aio_abi::*, linux::*};

/// The kernel AIO ABI of `<linux/aio_abi.h>`, declared once: the linux backend uses it, and
/// the benchmarks' minimal loop (through `caio::tools`).
#[cfg(target_os = "linux")]
#[allow(missing_docs)] // the kernel's names, which its header documents
pub mod aio_abi {
    /// The kernel's `aio_context_t`.
    pub type AioContext = libc::c_ulong;

    pub const IOCB_CMD_PREAD: u16 = 0;
    pub const IOCB_CMD_PWRITE: u16 = 1;
    pub const IOCB_CMD_FSYNC: u16 = 2;
    pub const IOCB_CMD_FDSYNC: u16 = 3;
    pub const IOCB_CMD_PREADV: u16 = 7;
    pub const IOCB_CMD_PWRITEV: u16 = 8;
    pub const IOCB_CMD_POLL: u16 = 5;

    /// `struct iocb` from `linux/aio_abi.h`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Iocb {
        pub aio_data: u64,
        #[cfg(target_endian = "little")]
        pub aio_key: u32,
        pub aio_rw_flags: i32,
        #[cfg(target_endian = "big")]
        pub aio_key: u32,
        pub aio_lio_opcode: u16,
        pub aio_reqprio: i16,
        pub aio_fildes: u32,
        pub aio_buf: u64,
        pub aio_nbytes: u64,
        pub aio_offset: i64,
        pub aio_reserved2: u64,
        pub aio_flags: u32,
        pub aio_resfd: u32,
    }

    /// `struct io_event` from `linux/aio_abi.h`.
    #[repr(C)]
    #[derive(Debug, Default, Clone, Copy)]
    pub struct IoEvent {
        pub data: u64,
        pub obj: u64,
        pub res: i64,
        pub res2: i64,
    }
}

/// Linux kernel AIO (`linux/aio_abi.h`), eventfd and statx.
#[cfg(target_os = "linux")]
mod linux {
    use std::{io, os::unix::io::RawFd, ptr, time::Duration};

    use super::{aio_abi::*, cvt, retry};

    fn cvt_long(r: libc::c_long) -> io::Result<usize> {
        cvt(r as libc::ssize_t)
    }

    /// `io_setup(2)`: a kernel AIO context for `nr_events` operations in flight.
    pub(crate) fn io_setup(nr_events: u32) -> io::Result<AioContext> {
        let mut ctx: AioContext = 0;
        // SAFETY: `ctx` is a valid, zeroed aio_context_t for the kernel to fill.
        cvt_long(unsafe {
            libc::syscall(libc::SYS_io_setup, nr_events, &mut ctx as *mut AioContext)
        })?;
        Ok(ctx)
    }

    /// `io_destroy(2)`. Waits for operations in flight and an RCU grace period (tens of
    /// milliseconds): never call it on a caller's thread.
    pub(crate) fn io_destroy(ctx: AioContext) -> io::Result<()> {
        // SAFETY: io_destroy takes the context by value; an invalid one is EINVAL.
        cvt_long(unsafe { libc::syscall(libc::SYS_io_destroy, ctx) }).map(drop)
    }

    /// `io_submit(2)`: how many of `iocbs` the kernel accepted (from the front). An error
    /// is the error of `iocbs[0]`, which was not submitted.
    ///
    /// # Safety
    /// Every pointer must point at a valid `Iocb` whose buffer (`aio_buf`, `aio_nbytes`)
    /// stays valid, and unmoved, until its completion is reaped with `io_getevents`.
    pub(crate) unsafe fn io_submit(ctx: AioContext, iocbs: &mut [*mut Iocb]) -> io::Result<usize> {
        // SAFETY: the slice is valid for `len` pointers; the caller vouches for each iocb.
        retry(|| {
            cvt_long(unsafe {
                libc::syscall(
                    libc::SYS_io_submit,
                    ctx,
                    iocbs.len() as libc::c_long,
                    iocbs.as_mut_ptr(),
                )
            })
        })
    }

    /// `io_getevents(2)`: waits for at least `min_nr` completions (up to `timeout`),
    /// returns how many were written into `events`. `EINTR` is reported as 0 events.
    pub(crate) fn io_getevents(
        ctx: AioContext,
        min_nr: usize,
        events: &mut [IoEvent],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        let mut ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_mut()
            .map_or(ptr::null_mut(), |t| t as *mut libc::timespec);
        // SAFETY: `events` is writable for `len` io_events; `ts_ptr` is null or a valid timespec.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                ctx,
                min_nr as libc::c_long,
                events.len() as libc::c_long,
                events.as_mut_ptr(),
                ts_ptr,
            )
        };
        match cvt_long(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            r => r,
        }
    }

    /// `io_cancel(2)`: asks the kernel to cancel `iocb`; its completion is still delivered
    /// through `io_getevents` (`EINPROGRESS` is success).
    ///
    /// # Safety
    /// `iocb` must be the address of an iocb submitted to `ctx` that is still alive.
    pub(crate) unsafe fn io_cancel(ctx: AioContext, iocb: *mut Iocb) -> io::Result<()> {
        let mut ev = IoEvent::default();
        // SAFETY: the caller vouches for `iocb`; `ev` is writable.
        match cvt_long(unsafe {
            libc::syscall(libc::SYS_io_cancel, ctx, iocb, &mut ev as *mut IoEvent)
        }) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
            r => r.map(drop),
        }
    }

    /// `preadv2(2)` with `RWF_NOWAIT`: copies what the page cache holds, and fails with
    /// `EAGAIN` rather than wait for the device (or `EOPNOTSUPP` where the filesystem cannot
    /// say). Never use it on an O_DIRECT descriptor: there it waits for the device.
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes for the duration of the call.
    pub(crate) unsafe fn pread_nowait(
        fd: RawFd,
        buf: *mut u8,
        len: usize,
        off: u64,
    ) -> io::Result<usize> {
        let off = super::offset(off)? as u64;
        let iov = libc::iovec {
            iov_base: buf.cast(),
            iov_len: len,
        };
        // The syscall takes the offset as two longs, low then high (on 64-bit targets the
        // low one holds it all): split it as glibc does, by halves of the word size.
        let half = libc::c_ulong::BITS / 2;
        let (lo, hi) = (
            off as libc::c_ulong,
            ((off >> half) >> half) as libc::c_ulong,
        );
        // SAFETY: one iovec over memory the caller vouches for.
        retry(|| {
            cvt_long(unsafe {
                libc::syscall(
                    libc::SYS_preadv2,
                    fd,
                    &iov as *const libc::iovec,
                    1,
                    lo,
                    hi,
                    libc::RWF_NOWAIT,
                )
            })
        })
    }

    /// A non-blocking, close-on-exec `eventfd(2)`.
    pub(crate) fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
        eventfd_with(libc::EFD_NONBLOCK)
    }

    /// A close-on-exec `eventfd(2)` whose reads wait for a signal.
    pub(crate) fn eventfd_blocking() -> io::Result<std::os::fd::OwnedFd> {
        eventfd_with(0)
    }

    fn eventfd_with(flags: libc::c_int) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | flags) };
        cvt(fd as libc::ssize_t)?;
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    /// `struct aio_ring` from `fs/aio.c`: the header of the completion ring the kernel maps
    /// into the process at the context's address.
    #[repr(C)]
    struct AioRing {
        id: u32,
        nr: u32,
        head: u32,
        tail: u32,
        magic: u32,
        compat_features: u32,
        incompat_features: u32,
        header_length: u32,
    }

    const AIO_RING_MAGIC: u32 = 0xa10a_10a1;

    /// The ring's head and tail (as atomics the kernel updates), its size and its events.
    ///
    /// # Safety
    /// `ctx` must be a live kernel AIO context of this process.
    unsafe fn ring_view<'a>(
        ctx: AioContext,
    ) -> Option<(
        &'a std::sync::atomic::AtomicU32,
        &'a std::sync::atomic::AtomicU32,
        u32,
        *const IoEvent,
    )> {
        use std::sync::atomic::AtomicU32;
        let ring = ctx as *mut AioRing;
        // SAFETY: the kernel maps the ring header at the context's address for the
        // context's life (the caller's promise); these fields are plain u32s.
        let (magic, incompat, nr, header) = unsafe {
            (
                ptr::read_volatile(&raw const (*ring).magic),
                ptr::read_volatile(&raw const (*ring).incompat_features),
                ptr::read_volatile(&raw const (*ring).nr),
                ptr::read_volatile(&raw const (*ring).header_length),
            )
        };
        if magic != AIO_RING_MAGIC || incompat != 0 || nr == 0 {
            return None;
        }
        let header = (header as usize).max(std::mem::size_of::<AioRing>());
        // SAFETY: head and tail are u32s the kernel updates atomically; viewing them as
        // atomics gives the ordering the kernel's smp_wmb pairs with. The events follow
        // the header, `nr` of them, in the same mapping.
        unsafe {
            Some((
                AtomicU32::from_ptr(&raw mut (*ring).head),
                AtomicU32::from_ptr(&raw mut (*ring).tail),
                nr,
                (ring as *const u8).add(header) as *const IoEvent,
            ))
        }
    }

    /// How many completions the context's ring holds: two loads, no system call. 0 when
    /// the ring is not in the layout this code knows.
    ///
    /// # Safety
    /// `ctx` must be a live kernel AIO context of this process.
    pub(crate) unsafe fn ring_pending(ctx: AioContext) -> usize {
        use std::sync::atomic::Ordering;
        // SAFETY: the caller's promise.
        match unsafe { ring_view(ctx) } {
            Some((head, tail, nr, _)) => {
                let (head, tail) = (
                    head.load(Ordering::Relaxed) % nr,
                    tail.load(Ordering::Acquire) % nr,
                );
                ((tail + nr - head) % nr) as usize
            }
            None => 0,
        }
    }

    /// Takes completions straight from the context's ring in user space, as `io_getevents`
    /// would, without a system call. `None` when the ring is not in the layout this code
    /// knows.
    ///
    /// # Safety
    /// `ctx` must be a live kernel AIO context of this process, and no other thread may
    /// reap it (with this or `io_getevents`) at the same time.
    pub(crate) unsafe fn ring_reap(ctx: AioContext, out: &mut [IoEvent]) -> Option<usize> {
        use std::sync::atomic::Ordering;
        // SAFETY: the caller's promise.
        let (head_a, tail_a, nr, events) = unsafe { ring_view(ctx) }?;
        let tail = tail_a.load(Ordering::Acquire) % nr;
        let mut head = head_a.load(Ordering::Relaxed) % nr;
        let mut n = 0;
        while head != tail && n < out.len() {
            // SAFETY: `head < nr`, inside the mapped array; the kernel wrote the event
            // before publishing the tail past it.
            out[n] = unsafe { ptr::read_volatile(events.add(head as usize)) };
            head = (head + 1) % nr;
            n += 1;
        }
        head_a.store(head, Ordering::Release);
        Some(n)
    }

    /// Adds 1 to an eventfd's counter.
    pub(crate) fn eventfd_signal(fd: RawFd) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live array.
        cvt(unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) }).map(drop)
    }

    /// Waits until an eventfd's counter is above 0 and takes it (a blocking `read`).
    pub(crate) fn eventfd_wait(fd: RawFd) -> io::Result<u64> {
        let mut v = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live array.
        retry(|| cvt(unsafe { libc::read(fd, v.as_mut_ptr().cast(), v.len()) }))?;
        Ok(u64::from_ne_bytes(v))
    }

    /// `statx` of an open descriptor (`AT_EMPTY_PATH`), asking for `mask`.
    fn statx_fd(fd: RawFd, flags: libc::c_int, mask: u32) -> io::Result<libc::statx> {
        let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
        let empty = b"\0";
        // SAFETY: `empty` is a NUL-terminated path and `stx` writable memory for statx.
        let r = unsafe {
            libc::statx(
                fd,
                empty.as_ptr().cast(),
                libc::AT_EMPTY_PATH | flags,
                mask,
                stx.as_mut_ptr(),
            )
        };
        cvt(r as libc::ssize_t)?;
        // SAFETY: zero-initialised, then filled by a successful statx.
        Ok(unsafe { stx.assume_init() })
    }

    /// O_DIRECT alignment from `statx(STATX_DIOALIGN)`: (memory, offset), `(0, 0)` when
    /// the file does not support O_DIRECT, `None` when the kernel or filesystem does not say.
    pub(crate) fn dio_alignment(fd: RawFd) -> io::Result<Option<(u32, u32)>> {
        let stx = statx_fd(fd, 0, libc::STATX_DIOALIGN)?;
        if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
            return Ok(None);
        }
        // Reported as (0, 0) when the file does not support O_DIRECT.
        Ok(Some((stx.stx_dio_mem_align, stx.stx_dio_offset_align)))
    }

    /// The file type bits of a descriptor from `statx(STATX_TYPE, AT_STATX_DONT_SYNC)`: the
    /// type of an open file never changes, so the cached inode answers and no network or
    /// FUSE filesystem is asked (an `fstat` there may wait for the server).
    pub(crate) fn cached_file_type(fd: RawFd) -> io::Result<libc::mode_t> {
        let stx = statx_fd(fd, libc::AT_STATX_DONT_SYNC, libc::STATX_TYPE)?;
        Ok(libc::mode_t::from(stx.stx_mode) & libc::S_IFMT)
    }

    /// `_IO(0x12, 104)` from `linux/fs.h`.
    const BLKSSZGET: libc::Ioctl = 0x1268;

    /// The logical block size of a block device (`BLKSSZGET`).
    pub(crate) fn block_size(fd: RawFd) -> io::Result<u32> {
        let mut size: libc::c_int = 0;
        // SAFETY: BLKSSZGET writes one int into `size`.
        let r = unsafe { libc::ioctl(fd, BLKSSZGET, &mut size as *mut libc::c_int) };
        cvt(r as libc::ssize_t)?;
        Ok(size as u32)
    }
}
