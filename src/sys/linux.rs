//! Linux kernel AIO (`linux/aio_abi.h`), eventfd and statx.

use std::{io, os::unix::io::RawFd, ptr, time::Duration};

use super::{
    aio_abi::*,
    unix::{cvt, retry},
};

fn cvt_long(r: libc::c_long) -> io::Result<usize> {
    cvt(r as libc::ssize_t)
}

/// `io_setup(2)`: a kernel AIO context for `nr_events` operations in flight.
pub(crate) fn io_setup(nr_events: u32) -> io::Result<AioContext> {
    let mut ctx: AioContext = 0;
    // SAFETY: `ctx` is a valid, zeroed aio_context_t for the kernel to fill.
    cvt_long(unsafe { libc::syscall(libc::SYS_io_setup, nr_events, &mut ctx as *mut AioContext) })?;
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
/// The kernel compares `iocb` with the iocbs `ctx` holds and reads its key through it
/// (EFAULT where nothing is mapped): any address is sound, and only one of an iocb
/// submitted to `ctx` and in flight can match.
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
    let iov = [libc::iovec {
        iov_base: buf.cast(),
        iov_len: len,
    }];
    // SAFETY: one iovec over memory the caller vouches for.
    unsafe { rw_v2(fd, &iov, off, libc::RWF_NOWAIT, false) }
}

/// `RWF_DONTCACHE` (Linux 6.14): buffered I/O whose pages leave the cache once done.
pub(crate) const RWF_DONTCACHE: libc::c_int = 0x80;

/// The `RWF_*` bits of `flags`.
pub(crate) fn rw_flags(flags: super::RwFlags) -> libc::c_int {
    let bit = |on: bool, b: libc::c_int| if on { b } else { 0 };
    bit(flags.dsync, libc::RWF_DSYNC)
        | bit(flags.nowait, libc::RWF_NOWAIT)
        | bit(flags.uncached, RWF_DONTCACHE)
        | bit(flags.append, libc::RWF_APPEND)
}

/// `pwritev2(2)` if `write`, else `preadv2(2)`, with `RWF_*` `flags`; at most `IOV_MAX`
/// buffers. A kernel without one of the flags fails with EOPNOTSUPP.
///
/// # Safety
/// Every iovec must describe memory valid for the call (writable for a read).
pub(crate) unsafe fn rw_v2(
    fd: RawFd,
    iov: &[libc::iovec],
    off: u64,
    flags: libc::c_int,
    write: bool,
) -> io::Result<usize> {
    let off = super::unix::offset(off)? as u64;
    let cnt = iov.len().min(super::IOV_MAX) as libc::c_long;
    // The syscall takes the offset as two longs, low then high (on 64-bit targets the
    // low one holds it all): split it as glibc does, by halves of the word size.
    let half = libc::c_ulong::BITS / 2;
    let (lo, hi) = (
        off as libc::c_ulong,
        ((off >> half) >> half) as libc::c_ulong,
    );
    let nr = if write {
        libc::SYS_pwritev2
    } else {
        libc::SYS_preadv2
    };
    // SAFETY: `iov` is a live slice of at least `cnt` iovecs over memory the caller
    // vouches for.
    retry(|| cvt_long(unsafe { libc::syscall(nr, fd, iov.as_ptr(), cnt, lo, hi, flags) }))
}

/// This thread's I/O priority while it lives (`ioprio_set(2)` of the calling thread),
/// then the one it had before.
pub(crate) struct IoPriority(libc::c_long);

/// `IOPRIO_WHO_PROCESS`, with 0: the calling thread.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;

/// Sets the calling thread's I/O priority to `prio` (`ioprio(7)`'s value) until the guard
/// drops.
pub(crate) fn io_priority(prio: u16) -> io::Result<IoPriority> {
    // SAFETY: ioprio_get takes two integers.
    let before = cvt_long(unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) })?;
    // SAFETY: ioprio_set takes three integers.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            libc::c_long::from(prio),
        )
    })?;
    Ok(IoPriority(before as libc::c_long))
}

impl Drop for IoPriority {
    fn drop(&mut self) {
        // SAFETY: as in `io_priority`; the priority this thread had, which it may set.
        unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, self.0) };
    }
}

/// A non-blocking, close-on-exec `eventfd(2)`.
pub(crate) fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    eventfd_with(libc::EFD_NONBLOCK)
}

#[cfg(target_pointer_width = "64")]
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

/// `_IO(0x12, 104)` from `linux/fs.h`, as the architecture encodes it (the `_IO`
/// direction bits differ on powerpc, mips and sparc): libc's.
use libc::BLKSSZGET;

/// The logical block size of a block device (`BLKSSZGET`).
pub(crate) fn block_size(fd: RawFd) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int into `size`.
    let r = unsafe { libc::ioctl(fd, BLKSSZGET, &mut size as *mut libc::c_int) };
    cvt(r as libc::ssize_t)?;
    Ok(size as u32)
}
