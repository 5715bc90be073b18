//! Every raw system call the crate makes, each one a small typed function.
//!
//! Nothing else in the crate calls the OS on descriptors or on memory the kernel writes
//! into. Unix goes through `libc` (`unix.rs`, and Linux's kernel AIO, eventfd and statx in
//! `linux.rs`); Windows through std and a few `kernel32` functions (`windows.rs`), under
//! the same names, so the layers above are written once.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use self::unix::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use self::windows::*;

#[cfg(target_os = "linux")]
pub(crate) use self::{aio_abi::*, linux::*};

/// The error of an operation ended by its cancellation: `ECANCELED`
/// (`ERROR_OPERATION_ABORTED` on Windows).
pub(crate) fn cancelled() -> std::io::Error {
    std::io::Error::from_raw_os_error(c::ECANCELED)
}

/// The per-operation flags of a transfer, as Linux's `RWF_*` name them: what the
/// `*_flags` calls take. A system or kernel without one fails with EOPNOTSUPP, and the
/// caller falls back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RwFlags {
    pub dsync: bool,
    pub nowait: bool,
    pub uncached: bool,
    pub append: bool,
}

impl RwFlags {
    pub(crate) fn is_empty(&self) -> bool {
        *self == RwFlags::default()
    }
}

/// [`pread`], or with `flags` one buffer through [`rw_flags_v`].
///
/// # Safety
/// As [`pread`].
pub(crate) unsafe fn pread_with(
    fd: fd::RawFd,
    buf: *mut u8,
    len: usize,
    off: u64,
    flags: RwFlags,
) -> std::io::Result<usize> {
    if flags.is_empty() {
        // SAFETY: the caller's promise, passed on.
        return unsafe { pread(fd, buf, len, off) };
    }
    let iov = [c::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    }];
    // SAFETY: as above, for the one iovec.
    unsafe { rw_flags_v(fd, &iov, off, flags, false) }
}

/// [`pwrite`], or with `flags` one buffer through [`rw_flags_v`].
pub(crate) fn pwrite_with(
    fd: fd::RawFd,
    buf: &[u8],
    off: u64,
    flags: RwFlags,
) -> std::io::Result<usize> {
    if flags.is_empty() {
        return pwrite(fd, buf, off);
    }
    let iov = [c::iovec {
        iov_base: buf.as_ptr().cast_mut().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the iovec covers `buf`, live for the call, which a write only reads.
    unsafe { rw_flags_v(fd, &iov, off, flags, true) }
}

/// [`preadv`] or [`pwritev`], or with `flags` [`rw_flags_v`].
///
/// # Safety
/// As [`preadv`] and [`pwritev`].
pub(crate) unsafe fn rwv_with(
    fd: fd::RawFd,
    iov: &[c::iovec],
    off: u64,
    flags: RwFlags,
    write: bool,
) -> std::io::Result<usize> {
    // SAFETY: the caller's promise, passed on.
    unsafe {
        match (flags.is_empty(), write) {
            (true, false) => preadv(fd, iov, off),
            (true, true) => pwritev(fd, iov, off),
            (false, _) => rw_flags_v(fd, iov, off, flags, write),
        }
    }
}

/// The kernel AIO ABI of `<linux/aio_abi.h>`, declared once: the linux backend uses it, and
/// the benchmarks' minimal loop (through `caio::tools`).
#[cfg(target_os = "linux")]
#[allow(missing_docs)] // the kernel's names, which its header documents
pub mod aio_abi;
/// Linux kernel AIO (`linux/aio_abi.h`), eventfd and statx.
#[cfg(target_os = "linux")]
mod linux;
