//! The Unix system calls: each one small typed function over `libc`. `EINTR` is retried
//! here, in one place; errors carry the OS errno.

use std::{
    ffi::CStr,
    io,
    os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd},
};

/// Converts a `-1`-on-error return into `io::Result`.
pub(super) fn cvt(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Runs `f` until it fails with something other than `EINTR`.
pub(super) fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// The large-file calls, as std makes them: on glibc Linux the `*64` functions, whose
/// offsets and sizes are 64-bit on 32-bit targets too; elsewhere (musl, the BSDs, macOS)
/// `off_t` is 64-bit and the plain ones are those.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod lfs {
    pub(super) use libc::{
        fallocate64 as fallocate, fstat64 as fstat, ftruncate64 as ftruncate, lseek64 as lseek,
        off64_t as off_t, posix_fadvise64 as posix_fadvise, pread64 as pread, preadv64 as preadv,
        pwrite64 as pwrite, pwritev64 as pwritev, stat64 as stat,
    };
}
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod lfs {
    #[cfg(target_os = "linux")]
    pub(super) use libc::fallocate;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    pub(super) use libc::posix_fadvise;
    // (macOS looks the vectored ones up at run time: see `apple`.)
    pub(super) use libc::{fstat, ftruncate, lseek, off_t, pread, pwrite, stat};
    #[cfg(not(target_vendor = "apple"))]
    pub(super) use libc::{preadv, pwritev};
}

pub(super) fn offset(off: u64) -> io::Result<lfs::off_t> {
    lfs::off_t::try_from(off).map_err(|_| {
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
    retry(|| cvt(unsafe { lfs::pread(fd, buf.cast(), len, off) }))
}

/// `pwrite(2)` from a slice.
pub(crate) fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    let off = offset(off)?;
    // SAFETY: `buf` is a live slice readable for its whole length.
    retry(|| cvt(unsafe { lfs::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) }))
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[cfg(target_os = "linux")]
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
    // SAFETY: the caller's promise, passed on.
    unsafe { vectored(fd, iov, off, false) }
}

/// `pwritev(2)`.
///
/// # Safety
/// Every iovec must describe memory valid for reads for the duration of the call.
pub(crate) unsafe fn pwritev(fd: RawFd, iov: &[libc::iovec], off: u64) -> io::Result<usize> {
    // SAFETY: the caller's promise, passed on.
    unsafe { vectored(fd, iov, off, true) }
}

/// `pwritev(2)` if `write`, else `preadv(2)`, of at most [`IOV_MAX`] buffers.
///
/// # Safety
/// As [`preadv`] and [`pwritev`].
unsafe fn vectored(fd: RawFd, iov: &[libc::iovec], off: u64, write: bool) -> io::Result<usize> {
    let off = offset(off)?;
    let cnt = iov.len().min(IOV_MAX) as libc::c_int;
    #[cfg(target_vendor = "apple")]
    let call = match apple::vectored(write) {
        Some(f) => f,
        // SAFETY: the caller's promise, passed on.
        None => return unsafe { apple::each(fd, &iov[..cnt as usize], off, write) },
    };
    #[cfg(not(target_vendor = "apple"))]
    let call: apple_free::Vectored = if write { lfs::pwritev } else { lfs::preadv };
    // SAFETY: the caller vouches for the memory; `iov` itself is a live slice of at least
    // `cnt` iovecs.
    retry(|| cvt(unsafe { call(fd, iov.as_ptr(), cnt, off) }))
}

#[cfg(not(target_vendor = "apple"))]
mod apple_free {
    /// `preadv` and `pwritev`.
    pub(super) type Vectored = unsafe extern "C" fn(
        libc::c_int,
        *const libc::iovec,
        libc::c_int,
        super::lfs::off_t,
    ) -> libc::ssize_t;
}

/// macOS: `preadv`/`pwritev` exist only from macOS 11, and the x86_64 target supports
/// older systems, so they are looked up when first used (std does the same), with a
/// `pread`/`pwrite` per buffer where they are missing.
#[cfg(target_vendor = "apple")]
mod apple {
    use std::{io, os::fd::RawFd, sync::OnceLock};

    pub(super) type Vectored =
        unsafe extern "C" fn(libc::c_int, *const libc::iovec, libc::c_int, libc::off_t) -> isize;

    fn lookup(name: &'static std::ffi::CStr, cell: &'static OnceLock<usize>) -> Option<Vectored> {
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads.
        let p = *cell
            .get_or_init(|| unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize);
        // SAFETY: a non-null address of this symbol is the function of this signature.
        (p != 0).then(|| unsafe { std::mem::transmute::<usize, Vectored>(p) })
    }

    /// `pwritev` if `write`, else `preadv`, where the system has it.
    pub(super) fn vectored(write: bool) -> Option<Vectored> {
        static PREADV: OnceLock<usize> = OnceLock::new();
        static PWRITEV: OnceLock<usize> = OnceLock::new();
        if write {
            lookup(c"pwritev", &PWRITEV)
        } else {
            lookup(c"preadv", &PREADV)
        }
    }

    /// One `pread`/`pwrite` per buffer, in order, until one comes back short.
    ///
    /// # Safety
    /// As `preadv`/`pwritev`.
    pub(super) unsafe fn each(
        fd: RawFd,
        iov: &[libc::iovec],
        mut off: libc::off_t,
        write: bool,
    ) -> io::Result<usize> {
        let mut done = 0;
        for v in iov {
            // SAFETY: the caller vouches for each buffer.
            let n = super::retry(|| {
                super::cvt(unsafe {
                    if write {
                        libc::pwrite(fd, v.iov_base, v.iov_len, off)
                    } else {
                        libc::pread(fd, v.iov_base, v.iov_len, off)
                    }
                })
            });
            let n = match n {
                Ok(n) => n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            done += n;
            off += n as libc::off_t;
            if n < v.iov_len {
                break;
            }
        }
        Ok(done)
    }
}

/// `fsync(2)`; on macOS `fcntl(F_FULLFSYNC)`, as std's `sync_all`: macOS's `fsync` leaves
/// the data in the drive's cache.
pub(crate) fn fsync(fd: RawFd) -> io::Result<()> {
    #[cfg(target_vendor = "apple")]
    {
        // SAFETY: F_FULLFSYNC takes no argument.
        retry(|| cvt(unsafe { libc::fcntl(fd, libc::F_FULLFSYNC) } as libc::ssize_t)).map(drop)
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        // SAFETY: fsync takes no pointers; a bad descriptor is reported as EBADF.
        retry(|| cvt(unsafe { libc::fsync(fd) } as libc::ssize_t)).map(drop)
    }
}

/// What `direct(true)` does to a descriptor once it is open: `F_NOCACHE` on macOS;
/// nothing where the open's `O_DIRECT` did it.
pub(crate) fn no_cache(fd: RawFd) -> io::Result<()> {
    #[cfg(target_vendor = "apple")]
    {
        // SAFETY: F_NOCACHE takes an integer argument.
        cvt(unsafe { libc::fcntl(fd, libc::F_NOCACHE, 1) } as libc::ssize_t).map(drop)
    }
    #[cfg(not(target_vendor = "apple"))]
    {
        let _ = fd;
        Ok(())
    }
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
    let mut st = std::mem::MaybeUninit::<lfs::stat>::uninit();
    // SAFETY: `st` is writable memory of the right size for fstat to fill.
    let r = unsafe { lfs::fstat(fd, st.as_mut_ptr()) };
    cvt(r as libc::ssize_t)?;
    // SAFETY: fstat succeeded, so it initialised `st`.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

/// `ftruncate(2)`.
pub(crate) fn ftruncate(fd: RawFd, len: u64) -> io::Result<()> {
    let len = offset(len)?;
    // SAFETY: ftruncate takes no pointers.
    retry(|| cvt(unsafe { lfs::ftruncate(fd, len) } as libc::ssize_t)).map(drop)
}

/// The size of a file, or of a block device (where `st_size` is 0).
pub(crate) fn file_len(fd: RawFd) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<lfs::stat>::uninit();
    // SAFETY: `st` is writable memory of the right size for fstat to fill.
    cvt(unsafe { lfs::fstat(fd, st.as_mut_ptr()) } as libc::ssize_t)?;
    // SAFETY: fstat succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT == libc::S_IFBLK {
        // SAFETY: lseek takes no pointers; only positional I/O is done on our descriptors,
        // so moving the file position disturbs nothing.
        let end = unsafe { lfs::lseek(fd, 0, libc::SEEK_END) };
        return cvt(end as libc::ssize_t).map(|n| n as u64);
    }
    Ok(st.st_size as u64)
}

/// `O_LARGEFILE` where it is a flag (32-bit Linux: files past 2 GiB), as std adds it.
#[cfg(target_os = "linux")]
const LARGEFILE: libc::c_int = libc::O_LARGEFILE;
#[cfg(not(target_os = "linux"))]
const LARGEFILE: libc::c_int = 0;

/// `open(2)` relative to the working directory, always with `O_CLOEXEC`.
pub(crate) fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; `mode` is passed as the variadic unsigned int.
    let fd = retry(|| {
        cvt(unsafe {
            libc::open(
                path.as_ptr(),
                flags | libc::O_CLOEXEC | LARGEFILE,
                mode as libc::c_uint,
            )
        } as libc::ssize_t)
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
        retry(|| cvt(unsafe { lfs::fallocate(fd, 0, off, len) } as libc::ssize_t)).map(drop)
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
        const TMPFS_MAGIC: u32 = 0x0102_1994;
        const RAMFS_MAGIC: u32 = 0x8584_58f6;
        let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: fstatfs fills the zeroed struct it is given.
        if unsafe { libc::fstatfs(fd, st.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: fstatfs succeeded.
        // f_type is a signed word, 32 bits on 32-bit targets: the magic's low 32 bits
        // are compared (RAMFS_MAGIC would sign-extend).
        #[allow(clippy::unnecessary_cast)]
        let t = unsafe { st.assume_init() }.f_type as u32;
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
        match unsafe { lfs::posix_fadvise(fd, off, len, advice) } {
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

/// `lseek(2)`: the new position.
pub(crate) fn lseek(fd: RawFd, offset: i64, whence: libc::c_int) -> io::Result<u64> {
    // SAFETY: lseek takes no pointers.
    let r = unsafe { lfs::lseek(fd, offset as lfs::off_t, whence) };
    cvt(r as libc::ssize_t).map(|n| n as u64)
}

/// `atexit(3)`: `f` runs when the process exits normally (returning from `main`,
/// `std::process::exit`). An error when the C library has no room left for it.
pub(crate) fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `f` is a plain function with no arguments, as atexit takes; it lives for
    // the whole program.
    match unsafe { libc::atexit(f) } {
        0 => Ok(()),
        _ => Err(io::Error::other("atexit has no room for another handler")),
    }
}

/// The C names the layers above use (errno values, `O_*` flags, `S_IF*` types, `iovec`):
/// `libc`'s own on Unix; `windows.rs` gives the same names their Windows meaning.
pub(crate) use ::libc as c;

/// The descriptor types and traits, as std names them on Unix (`windows.rs` gives the same
/// names to handles).
pub(crate) mod fd {
    pub(crate) use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// The descriptor of a caller's [`crate::RawFd`]: the same number.
    pub(crate) fn inner(fd: crate::RawFd) -> RawFd {
        fd
    }
}

/// A path as `open`, `rename`, `unlink` and `mkdir` take it.
pub(crate) type OsPath = std::ffi::CString;

/// `path` as those calls take it; a NUL inside is refused.
pub(crate) fn os_path(path: &std::path::Path) -> io::Result<OsPath> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {:?} contains a NUL byte", path),
        )
    })
}

/// Flushes the directory holding `path`, so that a rename in it survives a crash.
pub(crate) fn sync_parent(path: &std::path::Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// The file type bits (`st_mode & S_IFMT`) of a `Metadata`.
pub(crate) fn type_bits(meta: &std::fs::Metadata) -> libc::mode_t {
    std::os::unix::fs::MetadataExt::mode(meta) as libc::mode_t & libc::S_IFMT
}

/// What tells one file from another: device and inode (`path` is not looked at again).
pub(crate) fn file_id(_path: &std::path::Path, meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

/// User and system CPU time this process has used, every thread included (`getrusage`).
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) fn process_cpu() -> (std::time::Duration, std::time::Duration) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// The error of a read or write on a descriptor not opened for it.
pub(crate) const WRONG_ACCESS: i32 = libc::EBADF;

/// Where an open descriptor leads, where the OS says (`/proc/self/fd`).
pub(crate) fn fd_path(fd: RawFd) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

/// The error of a seek to before the start of a file, as `lseek` gives it.
pub(crate) const NEGATIVE_SEEK: i32 = libc::EINVAL;

/// A transfer with per-operation flags: `preadv2`/`pwritev2` on Linux. Elsewhere there are
/// no such flags: EOPNOTSUPP, and the caller falls back.
///
/// # Safety
/// As [`preadv`] and [`pwritev`].
pub(crate) unsafe fn rw_flags_v(
    fd: RawFd,
    iov: &[libc::iovec],
    off: u64,
    flags: super::RwFlags,
    write: bool,
) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the caller's promise, passed on.
        unsafe { super::linux::rw_v2(fd, iov, off, super::linux::rw_flags(flags), write) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, iov, off, flags, write);
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
}

/// No per-operation I/O priority here: `Unsupported`, and the caller runs without one.
#[cfg(not(target_os = "linux"))]
pub(crate) fn io_priority(_: u16) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "I/O priorities exist only on Linux",
    ))
}

/// Drops the range's pages from the page cache (`posix_fadvise(DONTNEED)`), where the
/// system has it.
pub(crate) fn uncache(fd: RawFd, off: u64, len: u64) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    {
        fadvise(fd, off, len, libc::POSIX_FADV_DONTNEED)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    {
        fadvise(fd, off, len, 0)
    }
}
