//! Every raw system call the crate makes, each one small typed function over `libc`.
//!
//! Nothing else in the crate calls `libc` functions that touch descriptors or memory the
//! kernel writes into. `EINTR` is retried here, in one place; errors carry the OS errno.

use std::{io, os::unix::io::RawFd};

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
