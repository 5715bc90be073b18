//! The Windows calls, under the names `unix.rs` gives them, so the layers above are
//! written once: positional I/O with `ReadFile`/`WriteFile` at an offset (as std's
//! `seek_read`/`seek_write`), `FlushFileBuffers`, `LockFileEx`, and std where it has the
//! call. Errors carry the Windows error code (`GetLastError`), which std maps to the same
//! `ErrorKind` as its own calls.
//!
//! A handle opened without `FILE_FLAG_OVERLAPPED` runs a call at an offset synchronously
//! and moves its file pointer to the end of the transfer: caio's `File` keeps its own
//! cursor, so only a caller's handle given to [`crate::Context`] sees that.

use std::{
    ffi::c_void,
    fs::File,
    io::{self, Seek, SeekFrom},
    mem::ManuallyDrop,
    os::windows::{
        fs::OpenOptionsExt,
        io::{BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle},
    },
    path::{Path, PathBuf},
};

use self::fd::{AsRawFd, RawFd};

/// The handle types and traits, under the names std gives descriptors on Unix.
pub(crate) mod fd {
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};

    /// A handle's value. A number, unlike `RawHandle` (a pointer), so that the requests
    /// and plans holding one are `Send`, as they are with a Unix descriptor.
    pub(crate) type RawFd = isize;
    pub(crate) type OwnedFd = OwnedHandle;

    /// The handle of a caller's [`crate::RawFd`].
    pub(crate) fn inner(fd: crate::RawFd) -> RawFd {
        fd as RawFd
    }

    /// `AsRawFd` for whatever has a handle.
    pub(crate) trait AsRawFd {
        fn as_raw_fd(&self) -> RawFd;
    }
    impl<T: AsRawHandle + ?Sized> AsRawFd for T {
        fn as_raw_fd(&self) -> RawFd {
            self.as_raw_handle() as RawFd
        }
    }

    /// `FromRawFd` for whatever can own a handle.
    pub(crate) trait FromRawFd {
        /// # Safety
        /// As `FromRawHandle::from_raw_handle`: `fd` is an open handle nothing else owns.
        unsafe fn from_raw_fd(fd: RawFd) -> Self;
    }
    impl<T: FromRawHandle> FromRawFd for T {
        unsafe fn from_raw_fd(fd: RawFd) -> Self {
            // SAFETY: the caller's promise, passed on.
            unsafe { T::from_raw_handle(fd as RawHandle) }
        }
    }
}

/// The C names the layers above use, with their Windows meaning: each errno is the
/// Windows error code std maps to the same `ErrorKind` as the errno on Unix; the `O_*`
/// flags are caio's own bits, which [`open`] turns into std's options; the `S_IF*` file
/// types are what [`file_type`] reports.
#[allow(non_camel_case_types, dead_code)]
pub(crate) mod c {
    pub(crate) use std::ffi::{c_int, c_void};

    pub(crate) type mode_t = u32;

    /// `ERROR_ACCESS_DENIED`.
    pub(crate) const EPERM: i32 = 5;
    /// `ERROR_INVALID_HANDLE`.
    pub(crate) const EBADF: i32 = 6;
    /// `ERROR_NOT_ENOUGH_MEMORY`.
    pub(crate) const ENOMEM: i32 = 8;
    /// `ERROR_NOT_SUPPORTED`.
    pub(crate) const EOPNOTSUPP: i32 = 50;
    /// `ERROR_INVALID_PARAMETER`.
    pub(crate) const EINVAL: i32 = 87;
    /// `ERROR_CALL_NOT_IMPLEMENTED`.
    pub(crate) const ENOSYS: i32 = 120;
    /// `ERROR_SEEK_ON_DEVICE`.
    pub(crate) const ESPIPE: i32 = 132;
    /// `ERROR_ALREADY_EXISTS`.
    pub(crate) const EEXIST: i32 = 183;
    /// `ERROR_DIRECTORY_NOT_SUPPORTED`.
    pub(crate) const EISDIR: i32 = 336;
    /// `ERROR_OPERATION_ABORTED`.
    pub(crate) const ECANCELED: i32 = 995;
    /// `ERROR_IO_DEVICE`.
    pub(crate) const EIO: i32 = 1117;
    /// `WSAEWOULDBLOCK`.
    pub(crate) const EAGAIN: i32 = 10035;

    pub(crate) const O_RDONLY: c_int = 0;
    pub(crate) const O_WRONLY: c_int = 1;
    pub(crate) const O_RDWR: c_int = 2;
    pub(crate) const O_ACCMODE: c_int = 3;
    pub(crate) const O_APPEND: c_int = 0o2000;
    pub(crate) const O_CREAT: c_int = 0o100;
    pub(crate) const O_EXCL: c_int = 0o200;
    pub(crate) const O_TRUNC: c_int = 0o1000;
    /// `FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH`.
    pub(crate) const O_DIRECT: c_int = 0o40000;

    pub(crate) const S_IFMT: mode_t = 0o170000;
    pub(crate) const S_IFSOCK: mode_t = 0o140000;
    pub(crate) const S_IFREG: mode_t = 0o100000;
    pub(crate) const S_IFBLK: mode_t = 0o060000;
    pub(crate) const S_IFDIR: mode_t = 0o040000;
    pub(crate) const S_IFCHR: mode_t = 0o020000;
    pub(crate) const S_IFIFO: mode_t = 0o010000;

    pub(crate) const SEEK_SET: c_int = 0;
    pub(crate) const SEEK_CUR: c_int = 1;
    pub(crate) const SEEK_END: c_int = 2;

    pub(crate) const POSIX_FADV_NORMAL: c_int = 0;
    pub(crate) const POSIX_FADV_RANDOM: c_int = 1;
    pub(crate) const POSIX_FADV_SEQUENTIAL: c_int = 2;
    pub(crate) const POSIX_FADV_WILLNEED: c_int = 3;
    pub(crate) const POSIX_FADV_DONTNEED: c_int = 4;
    pub(crate) const POSIX_FADV_NOREUSE: c_int = 5;

    pub(crate) const SYNC_FILE_RANGE_WAIT_BEFORE: u32 = 1;
    pub(crate) const SYNC_FILE_RANGE_WRITE: u32 = 2;
    pub(crate) const SYNC_FILE_RANGE_WAIT_AFTER: u32 = 4;

    /// One buffer of a vectored call, as Unix's.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct iovec {
        pub iov_base: *mut c_void,
        pub iov_len: usize,
    }
}

/// `OVERLAPPED`: the offset of a `ReadFile`/`WriteFile`/`LockFileEx` call.
#[repr(C)]
struct Overlapped {
    internal: usize,
    internal_high: usize,
    offset: u32,
    offset_high: u32,
    event: *mut c_void,
}

impl Overlapped {
    /// At `off`, with this thread's event: on a handle opened for overlapped I/O the call
    /// may return before it is done, and its end is waited for on that event, never on
    /// the handle, which every call on it would signal alike. (`ReadFile`, `WriteFile`
    /// and `LockFileEx` reset the event as they start; a synchronous handle ignores it.)
    fn at(off: u64) -> Overlapped {
        Overlapped {
            internal: 0,
            internal_high: 0,
            offset: off as u32,
            offset_high: (off >> 32) as u32,
            event: thread_event(),
        }
    }
}

/// This thread's manual-reset event (made on first use, closed when the thread ends), or
/// null where none can be made: then the wait falls back to the handle.
fn thread_event() -> *mut c_void {
    thread_local! {
        static EVENT: Option<OwnedHandle> = {
            // SAFETY: no security attributes and no name; a manual-reset event, not set.
            let h = unsafe { CreateEventW(std::ptr::null_mut(), 1, 0, std::ptr::null()) };
            // SAFETY: a new handle that nothing else owns.
            (!h.is_null()).then(|| unsafe { OwnedHandle::from_raw_handle(h) })
        };
    }
    EVENT
        .try_with(|e| {
            e.as_ref()
                .map_or(std::ptr::null_mut(), |h| h.as_raw_fd() as *mut c_void)
        })
        .unwrap_or(std::ptr::null_mut())
}

const ERROR_HANDLE_EOF: i32 = 38;
const ERROR_BROKEN_PIPE: i32 = 109;
const ERROR_IO_PENDING: i32 = 997;
const ERROR_LOCK_VIOLATION: i32 = 33;
const LOCKFILE_FAIL_IMMEDIATELY: u32 = 1;
const LOCKFILE_EXCLUSIVE_LOCK: u32 = 2;
const FILE_TYPE_DISK: u32 = 1;
const FILE_TYPE_CHAR: u32 = 2;
const FILE_TYPE_PIPE: u32 = 3;
const FILE_FLAG_WRITE_THROUGH: u32 = 0x8000_0000;
const FILE_FLAG_NO_BUFFERING: u32 = 0x2000_0000;
const FILE_READ_DATA: u32 = 1;
const FILE_WRITE_DATA: u32 = 2;
const FILE_APPEND_DATA: u32 = 4;
const FILE_NO_INTERMEDIATE_BUFFERING: u32 = 8;
/// `FILE_INFORMATION_CLASS` values for `NtQueryInformationFile`.
const FILE_ACCESS_INFORMATION: u32 = 8;
const FILE_MODE_INFORMATION: u32 = 16;

#[link(name = "kernel32")]
extern "system" {
    fn ReadFile(h: RawHandle, buf: *mut u8, len: u32, done: *mut u32, ov: *mut Overlapped) -> i32;
    fn WriteFile(
        h: RawHandle,
        buf: *const u8,
        len: u32,
        done: *mut u32,
        ov: *mut Overlapped,
    ) -> i32;
    fn GetOverlappedResult(h: RawHandle, ov: *mut Overlapped, done: *mut u32, wait: i32) -> i32;
    fn LockFileEx(
        h: RawHandle,
        flags: u32,
        reserved: u32,
        low: u32,
        high: u32,
        ov: *mut Overlapped,
    ) -> i32;
    fn GetFileType(h: RawHandle) -> u32;
    fn GetFileInformationByHandle(h: RawHandle, info: *mut FileInformation) -> i32;
    fn FlushFileBuffers(h: RawHandle) -> i32;
    fn CreateEventW(
        attributes: *mut c_void,
        manual: i32,
        initial: i32,
        name: *const u16,
    ) -> RawHandle;
    fn GetFinalPathNameByHandleW(h: RawHandle, path: *mut u16, len: u32, flags: u32) -> u32;
    fn ReOpenFile(h: RawHandle, access: u32, share: u32, flags: u32) -> RawHandle;
    fn GetCurrentProcess() -> RawHandle;
    fn GetProcessTimes(
        process: RawHandle,
        created: *mut u64,
        exited: *mut u64,
        kernel: *mut u64,
        user: *mut u64,
    ) -> i32;
}

/// `BY_HANDLE_FILE_INFORMATION`.
#[repr(C)]
#[derive(Default)]
struct FileInformation {
    attributes: u32,
    created: [u32; 2],
    accessed: [u32; 2],
    written: [u32; 2],
    volume_serial: u32,
    size_high: u32,
    size_low: u32,
    links: u32,
    index_high: u32,
    index_low: u32,
}

/// `IO_STATUS_BLOCK`.
#[repr(C)]
struct IoStatus {
    status: usize,
    information: usize,
}

#[link(name = "ntdll")]
extern "system" {
    fn NtQueryInformationFile(
        h: RawHandle,
        status: *mut IoStatus,
        info: *mut c_void,
        len: u32,
        class: u32,
    ) -> i32;
}

/// The error of a read or write on a handle not opened for it, as `ReadFile` and
/// `WriteFile` give it: `ERROR_ACCESS_DENIED`.
pub(crate) const WRONG_ACCESS: i32 = 5;

/// The error of a seek to before the start of a file, as `SetFilePointerEx` gives it:
/// `ERROR_NEGATIVE_SEEK`.
pub(crate) const NEGATIVE_SEEK: i32 = 131;

fn handle(fd: RawFd) -> RawHandle {
    fd as RawHandle
}

/// The caller's handle as a std `File` that never closes it.
fn borrowed(fd: RawFd) -> ManuallyDrop<File> {
    // SAFETY: the `File` only borrows the handle for the call: ManuallyDrop keeps it from
    // being closed, and the caller keeps the handle open meanwhile.
    ManuallyDrop::new(unsafe { File::from_raw_handle(handle(fd)) })
}

/// `ReadFile` or `WriteFile` of `len` bytes at `off`: the bytes moved, 0 at the end of
/// the file (or of a pipe). A handle opened for overlapped I/O is waited for.
///
/// # Safety
/// `buf` is valid for `len` bytes, writable when `!write`, for the duration of the call.
unsafe fn transfer(
    fd: RawFd,
    buf: *mut u8,
    len: usize,
    off: u64,
    write: bool,
) -> io::Result<usize> {
    let len = len.min(u32::MAX as usize) as u32;
    let mut ov = Overlapped::at(off);
    let mut done = 0u32;
    // SAFETY: the caller vouches for `buf`; `done` and `ov` are live locals that outlive
    // the call (and the wait below, for an overlapped handle).
    let ok = unsafe {
        if write {
            WriteFile(handle(fd), buf, len, &mut done, &mut ov)
        } else {
            ReadFile(handle(fd), buf, len, &mut done, &mut ov)
        }
    };
    if ok != 0 {
        return Ok(done as usize);
    }
    let mut e = io::Error::last_os_error();
    if e.raw_os_error() == Some(ERROR_IO_PENDING) {
        // SAFETY: `ov` is the structure the pending call was given; waiting here keeps it
        // (and `buf`) alive until the call is done.
        if unsafe { GetOverlappedResult(handle(fd), &mut ov, &mut done, 1) } != 0 {
            return Ok(done as usize);
        }
        e = io::Error::last_os_error();
    }
    match e.raw_os_error() {
        Some(ERROR_HANDLE_EOF | ERROR_BROKEN_PIPE) if !write => Ok(0),
        _ => Err(e),
    }
}

/// A read at an offset into raw memory.
///
/// # Safety
/// `buf` must be valid for writes of `len` bytes for the duration of the call.
pub(crate) unsafe fn pread(fd: RawFd, buf: *mut u8, len: usize, off: u64) -> io::Result<usize> {
    // SAFETY: the caller's promise, passed on.
    unsafe { transfer(fd, buf, len, off, false) }
}

/// A write at an offset from a slice.
pub(crate) fn pwrite(fd: RawFd, buf: &[u8], off: u64) -> io::Result<usize> {
    // SAFETY: `buf` is a live slice; WriteFile only reads it.
    unsafe { transfer(fd, buf.as_ptr().cast_mut(), buf.len(), off, true) }
}

/// The most buffers one vectored call takes, as on Unix.
pub(crate) const IOV_MAX: usize = 1024;

/// A vectored read: one read per buffer, in order, until one comes back short.
///
/// # Safety
/// Every iovec must describe memory valid for writes for the duration of the call.
pub(crate) unsafe fn preadv(fd: RawFd, iov: &[c::iovec], off: u64) -> io::Result<usize> {
    // SAFETY: the caller's promise, passed on.
    unsafe { each(fd, iov, off, false) }
}

/// A vectored write: one write per buffer, in order, until one comes back short.
///
/// # Safety
/// Every iovec must describe memory valid for reads for the duration of the call.
pub(crate) unsafe fn pwritev(fd: RawFd, iov: &[c::iovec], off: u64) -> io::Result<usize> {
    // SAFETY: the caller's promise, passed on.
    unsafe { each(fd, iov, off, true) }
}

/// # Safety
/// As [`preadv`] and [`pwritev`].
unsafe fn each(fd: RawFd, iov: &[c::iovec], mut off: u64, write: bool) -> io::Result<usize> {
    let mut done = 0;
    for v in &iov[..iov.len().min(IOV_MAX)] {
        // SAFETY: the caller vouches for each buffer.
        let n = match unsafe { transfer(fd, v.iov_base.cast(), v.iov_len, off, write) } {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        done += n;
        // The end-of-file offset appends each buffer after the one before.
        if off != APPEND {
            off += n as u64;
        }
        if n < v.iov_len {
            break;
        }
    }
    Ok(done)
}

/// The offset `WriteFile` takes as "at the end of the file" (both halves all ones).
const APPEND: u64 = u64::MAX;

/// A transfer with per-operation flags: Windows has only `append`, a write at the
/// end-of-file offset; any other flag is EOPNOTSUPP (`ERROR_NOT_SUPPORTED`), and the
/// caller falls back.
///
/// # Safety
/// As [`preadv`] and [`pwritev`].
pub(crate) unsafe fn rw_flags_v(
    fd: RawFd,
    iov: &[c::iovec],
    off: u64,
    flags: super::RwFlags,
    write: bool,
) -> io::Result<usize> {
    if flags.dsync || flags.nowait || flags.uncached || (flags.append && !write) {
        return Err(io::Error::from_raw_os_error(c::EOPNOTSUPP));
    }
    let off = if flags.append { APPEND } else { off };
    // SAFETY: the caller's promise, passed on.
    unsafe { each(fd, iov, off, write) }
}

/// No per-operation I/O priority on Windows: `Unsupported`, and the caller runs without.
pub(crate) fn io_priority(_: u16) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "per-operation I/O priorities exist only on Linux",
    ))
}

/// `FlushFileBuffers`: data and metadata reach the device, as std's `sync_all`.
pub(crate) fn fsync(fd: RawFd) -> io::Result<()> {
    // SAFETY: FlushFileBuffers takes the handle only; a bad one is ERROR_INVALID_HANDLE.
    match unsafe { FlushFileBuffers(handle(fd)) } {
        0 => Err(io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Windows has no data-only flush: `FlushFileBuffers`, as std's `sync_data`.
pub(crate) fn fdatasync(fd: RawFd) -> io::Result<()> {
    fsync(fd)
}

/// Nothing: `FILE_FLAG_NO_BUFFERING`, given at the open, is what `direct(true)` does.
pub(crate) fn no_cache(_: RawFd) -> io::Result<()> {
    Ok(())
}

/// `NtQueryInformationFile` of one `u32` (the access mask, or the mode flags).
fn query_u32(fd: RawFd, class: u32) -> io::Result<u32> {
    let mut status = IoStatus {
        status: 0,
        information: 0,
    };
    let mut v = 0u32;
    // SAFETY: `v` is a writable u32, the size both information classes fill.
    let r = unsafe {
        NtQueryInformationFile(
            handle(fd),
            &mut status,
            (&mut v as *mut u32).cast(),
            4,
            class,
        )
    };
    if r < 0 {
        return Err(io::Error::from_raw_os_error(c::EBADF));
    }
    Ok(v)
}

/// The handle's access and flags in Unix's terms: `O_RDONLY`, `O_WRONLY` or `O_RDWR`,
/// with `O_APPEND` for a handle that may only append, and `O_DIRECT` for one opened with
/// `FILE_FLAG_NO_BUFFERING`.
pub(crate) fn status_flags(fd: RawFd) -> io::Result<c::c_int> {
    let access = query_u32(fd, FILE_ACCESS_INFORMATION)?;
    let read = access & FILE_READ_DATA != 0;
    let write = access & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
    let mut flags = match (read, write) {
        (true, true) => c::O_RDWR,
        (false, true) => c::O_WRONLY,
        _ => c::O_RDONLY,
    };
    if access & FILE_APPEND_DATA != 0 && access & FILE_WRITE_DATA == 0 {
        flags |= c::O_APPEND;
    }
    if query_u32(fd, FILE_MODE_INFORMATION).unwrap_or(0) & FILE_NO_INTERMEDIATE_BUFFERING != 0 {
        flags |= c::O_DIRECT;
    }
    Ok(flags)
}

/// Whether the handle was opened with `FILE_FLAG_NO_BUFFERING`.
pub(crate) fn is_direct(fd: RawFd) -> io::Result<bool> {
    Ok(status_flags(fd)? & c::O_DIRECT != 0)
}

/// The file type, in `S_IF*` terms: a disk file is `S_IFREG` or `S_IFDIR`, a console
/// or other character device `S_IFCHR`, a pipe `S_IFIFO`.
pub(crate) fn file_type(fd: RawFd) -> io::Result<c::mode_t> {
    // SAFETY: GetFileType takes the handle only.
    match unsafe { GetFileType(handle(fd)) } {
        FILE_TYPE_DISK => {
            let meta = borrowed(fd).metadata()?;
            Ok(if meta.is_dir() {
                c::S_IFDIR
            } else {
                c::S_IFREG
            })
        }
        FILE_TYPE_CHAR => Ok(c::S_IFCHR),
        FILE_TYPE_PIPE => Ok(c::S_IFIFO),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(0) => Ok(c::S_IFCHR),
            e => Err(e),
        },
    }
}

/// `SetFileInformationByHandle(FileEndOfFileInfo)`, as std's `set_len`.
pub(crate) fn ftruncate(fd: RawFd, len: u64) -> io::Result<()> {
    borrowed(fd).set_len(len)
}

/// The size of a file.
pub(crate) fn file_len(fd: RawFd) -> io::Result<u64> {
    Ok(borrowed(fd).metadata()?.len())
}

/// A path as the open, rename, unlink and mkdir calls take it. A NUL inside is refused
/// here as on Unix.
pub(crate) type OsPath = PathBuf;

pub(crate) fn os_path(path: &Path) -> io::Result<OsPath> {
    use std::os::windows::ffi::OsStrExt;
    if path.as_os_str().encode_wide().any(|u| u == 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {:?} contains a NUL byte", path),
        ));
    }
    Ok(path.to_path_buf())
}

/// `CreateFileW`, through std's options: `flags` are caio's `O_*` bits (see [`c`]),
/// `custom` the caller's `dwFlagsAndAttributes` bits.
pub(crate) fn open(path: &Path, flags: c::c_int, custom: u32) -> io::Result<OwnedHandle> {
    let mut o = std::fs::OpenOptions::new();
    let access = flags & c::O_ACCMODE;
    o.read(access == c::O_RDONLY || access == c::O_RDWR);
    if flags & c::O_APPEND != 0 {
        o.append(true);
    } else {
        o.write(access == c::O_WRONLY || access == c::O_RDWR);
    }
    match (
        flags & c::O_CREAT != 0,
        flags & c::O_EXCL != 0,
        flags & c::O_TRUNC != 0,
    ) {
        (_, true, _) => o.create_new(true),
        (true, false, trunc) => o.create(true).truncate(trunc),
        (false, false, trunc) => o.truncate(trunc),
    };
    let mut custom = custom;
    if flags & c::O_DIRECT != 0 {
        custom |= FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH;
    }
    o.custom_flags(custom);
    Ok(o.open(path)?.into())
}

/// `CloseHandle`. std reports no error from it, and Windows gives none worth reporting
/// for a file handle.
pub(crate) fn close(fd: OwnedHandle) -> io::Result<()> {
    drop(fd);
    Ok(())
}

/// `DuplicateHandle`: a second handle for the same open file.
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedHandle> {
    // SAFETY: the handle is open for the duration of the call (the caller's promise).
    unsafe { BorrowedHandle::borrow_raw(handle(fd)) }.try_clone_to_owned()
}

/// `MoveFileExW` with `MOVEFILE_REPLACE_EXISTING` (std's rename): replaces `to` whole.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)
}

/// `DeleteFileW`, or `RemoveDirectoryW` when `dir`.
pub(crate) fn unlink(path: &Path, dir: bool) -> io::Result<()> {
    if dir {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// `CreateDirectoryW`; Windows has no permission bits to give it.
pub(crate) fn mkdir(path: &Path, _mode: c::mode_t) -> io::Result<()> {
    std::fs::create_dir(path)
}

/// `LockFileEx` of the whole file, exclusive, failing at once: `Ok(true)` when this
/// handle now holds it, `Ok(false)` when another does. (Windows locks are mandatory: the
/// holder's I/O goes on, other handles' is refused while it is held.)
pub(crate) fn try_lock_exclusive(fd: RawFd) -> io::Result<bool> {
    let mut ov = Overlapped::at(0);
    // SAFETY: `ov` is a live local; a synchronous handle returns at once.
    let r = unsafe {
        LockFileEx(
            handle(fd),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            u32::MAX,
            u32::MAX,
            &mut ov,
        )
    };
    if r != 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(ERROR_LOCK_VIOLATION) => Ok(false),
        e => Err(e),
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} does not exist on Windows"),
    )
}

/// Windows has no `fallocate`.
pub(crate) fn fallocate(_: RawFd, _: u64, _: u64) -> io::Result<()> {
    Err(unsupported("fallocate"))
}

/// Whether the file lives in memory: Windows has no tmpfs.
pub(crate) fn is_memory_fs(_: RawFd) -> bool {
    false
}

/// Windows has no `posix_fadvise`: the cache keeps the range.
pub(crate) fn uncache(_: RawFd, _: u64, _: u64) -> io::Result<()> {
    Err(unsupported("posix_fadvise"))
}

/// Windows has no `posix_fadvise`.
pub(crate) fn fadvise(_: RawFd, _: u64, _: u64, _: c::c_int) -> io::Result<()> {
    Err(unsupported("posix_fadvise"))
}

/// Windows has no `sync_file_range`.
pub(crate) fn sync_file_range(_: RawFd, _: u64, _: u64, _: u32) -> io::Result<()> {
    Err(unsupported("sync_file_range"))
}

/// A process on Windows is never a fork of another.
pub(crate) fn fork_generation() -> u64 {
    0
}

/// `SetFilePointerEx`: the new position.
pub(crate) fn lseek(fd: RawFd, offset: i64, whence: c::c_int) -> io::Result<u64> {
    let to = match whence {
        c::SEEK_SET => SeekFrom::Start(offset as u64),
        c::SEEK_CUR => SeekFrom::Current(offset),
        _ => SeekFrom::End(offset),
    };
    borrowed(fd).seek(to)
}

/// The C runtime's `atexit`: `f` runs when the process exits normally, before Windows
/// stops the other threads.
pub(crate) fn at_exit(f: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `f` is a plain function with no arguments, as atexit takes; it lives for
    // the whole program.
    match unsafe { libc::atexit(f) } {
        0 => Ok(()),
        _ => Err(io::Error::other("atexit has no room for another handler")),
    }
}

/// Makes a rename in `path`'s directory durable. NTFS journals its metadata, and a
/// directory handle takes no flush: nothing to do.
pub(crate) fn sync_parent(_: &Path) -> io::Result<()> {
    Ok(())
}

/// The file type bits, in `S_IF*` terms, of a `Metadata`.
pub(crate) fn type_bits(meta: &std::fs::Metadata) -> c::mode_t {
    let t = meta.file_type();
    if t.is_dir() {
        c::S_IFDIR
    } else if t.is_file() {
        c::S_IFREG
    } else {
        c::S_IFCHR
    }
}

/// What tells one file from another: its volume's serial number and its file index
/// (`GetFileInformationByHandle` on a handle opened for no access to `path`).
pub(crate) fn file_id(path: &Path, _: &std::fs::Metadata) -> Option<(u64, u64)> {
    const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
    let f = std::fs::OpenOptions::new()
        .access_mode(0)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
        .ok()?;
    let mut info = FileInformation::default();
    // SAFETY: `info` is a writable BY_HANDLE_FILE_INFORMATION for the call to fill.
    if unsafe { GetFileInformationByHandle(handle(f.as_raw_fd()), &mut info) } == 0 {
        return None;
    }
    let index = (u64::from(info.index_high) << 32) | u64::from(info.index_low);
    Some((u64::from(info.volume_serial), index))
}

/// User and system CPU time this process has used, every thread included
/// (`GetProcessTimes`, in 100 ns units).
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) fn process_cpu() -> (std::time::Duration, std::time::Duration) {
    let (mut created, mut exited, mut kernel, mut user) = (0u64, 0u64, 0u64, 0u64);
    // SAFETY: the pseudo-handle of this process needs no closing; each out-pointer is a
    // live FILETIME-sized local.
    unsafe {
        GetProcessTimes(
            GetCurrentProcess(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    let t = |n: u64| std::time::Duration::from_nanos(n.saturating_mul(100));
    (t(user), t(kernel))
}

/// A second handle to the open file `fd`, for writing through the cache
/// (`ReOpenFile` without `FILE_FLAG_NO_BUFFERING`): the buffered twin of a direct file.
pub(crate) fn reopen_buffered(fd: RawFd) -> io::Result<OwnedHandle> {
    const GENERIC_WRITE: u32 = 0x4000_0000;
    const SHARE_ALL: u32 = 1 | 2 | 4;
    const INVALID_HANDLE_VALUE: isize = -1;
    // SAFETY: ReOpenFile takes the handle by value and returns a new one or
    // INVALID_HANDLE_VALUE.
    let h = unsafe { ReOpenFile(handle(fd), GENERIC_WRITE, SHARE_ALL, 0) };
    if h as isize == INVALID_HANDLE_VALUE || h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a new handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h) })
}

/// Where an open handle leads (`GetFinalPathNameByHandleW`).
pub(crate) fn fd_path(fd: RawFd) -> Option<PathBuf> {
    use std::os::windows::ffi::OsStringExt;
    let mut buf = vec![0u16; 512];
    loop {
        // SAFETY: `buf` is writable for its length in u16s.
        let n =
            unsafe { GetFinalPathNameByHandleW(handle(fd), buf.as_mut_ptr(), buf.len() as u32, 0) }
                as usize;
        match n {
            0 => return None,
            n if n < buf.len() => {
                buf.truncate(n);
                return Some(PathBuf::from(std::ffi::OsString::from_wide(&buf)));
            }
            // Too small: `n` is the length it needs.
            n => buf.resize(n + 1, 0),
        }
    }
}
