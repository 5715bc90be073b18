//! [`File`] and [`OpenOptions`].

use std::{
    ffi::CString,
    fmt,
    fs::{Metadata, Permissions},
    future::Future,
    io,
    mem::ManuallyDrop,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use futures::{
    channel::oneshot,
    future::{ready, Either},
};
use once_cell::sync::OnceCell;

use crate::{
    align::DirectAlignment,
    backend::{Completion, FdInfo, Meta, Opened, Out, What},
    fs::{Chunks, Lines, Reader, Writer},
    sys, Buffer, Context,
};

/// Options for opening a [`File`], like [`std::fs::OpenOptions`], plus O_DIRECT and the
/// [`Context`] to run on.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let file = caio::OpenOptions::new().read(true).write(true).create(true).direct(true).open("data").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    direct: bool,
    mode: Option<u32>,
    context: Option<Context>,
}

impl OpenOptions {
    /// All options off, the process-wide default context.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        self
    }

    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        self
    }

    /// Every write goes to the end of the file (`O_APPEND`; on Linux the kernel ignores the
    /// offset of positional writes on such a file).
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        self
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        self
    }

    /// Create the file, failing if it exists.
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        self
    }

    /// Truncate the file to 0 bytes on open.
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        self
    }

    /// Bypass the page cache (`O_DIRECT`, Linux). Where the filesystem refuses it, `open`
    /// fails with a clear error rather than silently caching; open without it to fall back.
    pub fn direct(&mut self, on: bool) -> &mut Self {
        self.direct = on;
        self
    }

    /// Permission bits for a created file (default `0o666`, less the umask).
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = Some(mode);
        self
    }

    /// Run this file's operations on `ctx` rather than the process-wide default context.
    pub fn context(&mut self, ctx: Context) -> &mut Self {
        self.context = Some(ctx);
        self
    }

    /// Opens `path`. The `open(2)`, and the `fstat` that follows it, run through the
    /// context's backend, never on the thread that polls (but for `blocking`).
    ///
    /// # Errors
    /// The OS error of `open(2)`; `EISDIR` for a directory; `InvalidInput` for options
    /// that contradict each other (as `std`) or a path with a NUL byte; an error of kind
    /// `InvalidInput`/`Unsupported` naming O_DIRECT when the filesystem refuses it.
    pub fn open(
        &self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + 'static {
        let (opts, path) = (self.clone(), path.as_ref().to_path_buf());
        async move { opts.open_async(path).await }
    }

    /// The `open(2)` flags, with the same rules as `std::fs::OpenOptions`.
    fn flags(&self) -> io::Result<libc::c_int> {
        let einval = || Err(io::Error::from_raw_os_error(libc::EINVAL));
        let access = match (self.read, self.write, self.append) {
            (true, false, false) => libc::O_RDONLY,
            (false, true, false) => libc::O_WRONLY,
            (true, true, false) => libc::O_RDWR,
            (false, _, true) => libc::O_WRONLY | libc::O_APPEND,
            (true, _, true) => libc::O_RDWR | libc::O_APPEND,
            (false, false, false) => return einval(),
        };
        match (self.write, self.append) {
            (true, false) => {}
            (false, false) if self.truncate || self.create || self.create_new => return einval(),
            (_, true) if self.truncate && !self.create_new => return einval(),
            _ => {}
        }
        let creation = match (self.create, self.truncate, self.create_new) {
            (_, _, true) => libc::O_CREAT | libc::O_EXCL,
            (true, true, false) => libc::O_CREAT | libc::O_TRUNC,
            (true, false, false) => libc::O_CREAT,
            (false, true, false) => libc::O_TRUNC,
            (false, false, false) => 0,
        };
        #[cfg(target_os = "linux")]
        let direct = if self.direct { libc::O_DIRECT } else { 0 };
        #[cfg(not(target_os = "linux"))]
        let direct = if self.direct {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "O_DIRECT exists only on Linux",
            ));
        } else {
            0
        };
        Ok(access | creation | direct)
    }

    async fn open_async(self, path: PathBuf) -> io::Result<File> {
        let ctx = match &self.context {
            Some(c) => c.clone(),
            None => Context::global_async().await?,
        };
        let open = Meta::Open {
            path: cstring(&path)?,
            flags: self.flags()?,
            mode: self.mode.unwrap_or(0o666) as libc::mode_t,
        };
        let direct = self.direct;
        let opened = ctx.meta(-1, open, None, opened).await.map_err(|e| {
            let refused =
                e.raw_os_error() == Some(libc::EINVAL) || e.kind() == io::ErrorKind::Unsupported;
            if direct && refused {
                direct_refused(&path, e)
            } else {
                e
            }
        })?;
        Ok(File::from_opened(
            ctx,
            opened,
            path,
            self.direct,
            self.append,
            (self.read, self.write || self.append),
        ))
    }
}

impl File {
    /// A `File` for what `Meta::Open` opened.
    pub(crate) fn from_opened(
        ctx: Context,
        o: Opened,
        path: PathBuf,
        direct: bool,
        append: bool,
        (readable, writable): (bool, bool),
    ) -> File {
        File::from_parts(
            ctx,
            o.fd,
            path,
            Facts {
                seekable: o.file_type == libc::S_IFREG || o.file_type == libc::S_IFBLK,
                file_type: o.file_type,
                direct,
                append,
                readable,
                writable,
                align: o.align,
                memory: o.memory,
            },
        )
    }
}

/// What an `open` made.
pub(crate) fn opened(c: Completion) -> Opened {
    match c.out {
        Out::Opened(o) => o,
        _ => unreachable!("an open completes with its descriptor"),
    }
}

/// A path as the C string `open(2)` and friends take; a NUL byte inside is an error of
/// kind `InvalidInput`, as in `std`.
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {:?} contains a NUL byte", path),
        )
    })
}

/// Owns a file's descriptor. Every `File` clone and every operation in flight on it hold
/// it; the last to let go hands the descriptor to the backend to close (or to a waiting
/// [`File::close`]), so `close(2)` never runs on a polling thread.
struct FdOwner {
    fd: Option<OwnedFd>,
    ctx: Context,
    /// A `File::close` waiting for the descriptor, to close it and report the error.
    closer: Mutex<Option<oneshot::Sender<OwnedFd>>>,
}

impl FdOwner {
    fn new(fd: OwnedFd, ctx: Context) -> Arc<FdOwner> {
        Arc::new(FdOwner {
            fd: Some(fd),
            ctx,
            closer: Mutex::new(None),
        })
    }

    /// Closes the descriptor once every other holder has let go, through the backend,
    /// and reports the error of `close(2)`.
    async fn close(self: Arc<Self>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        *self.closer.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let ctx = self.ctx.clone();
        drop(self);
        let fd = rx
            .await
            .map_err(|_| io::Error::other("caio: the descriptor was closed elsewhere"))?;
        ctx.meta_unit(-1, Meta::Close(fd), None).await
    }
}

impl Drop for FdOwner {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        let closer = self
            .closer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let fd = match closer {
            Some(tx) => match tx.send(fd) {
                Ok(()) => return,
                // The closer went away: close it here after all.
                Err(fd) => fd,
            },
            None => fd,
        };
        self.ctx.detach(-1, Meta::Close(fd), "close");
    }
}

/// What a `File` knows of its descriptor, gathered once at open.
#[derive(Debug, Clone, Copy)]
struct Facts {
    /// A regular file or block device; anything else is read and written in sequence.
    seekable: bool,
    /// `st_mode & S_IFMT`, to name the type in errors.
    file_type: libc::mode_t,
    direct: bool,
    append: bool,
    readable: bool,
    writable: bool,
    align: Option<DirectAlignment>,
    /// In tmpfs or ramfs (see `FdInfo::memory`).
    memory: bool,
}

/// "a FIFO or pipe", "a socket"...: a file type (`st_mode & S_IFMT`) in words.
pub(crate) fn type_name(t: libc::mode_t) -> &'static str {
    match t {
        libc::S_IFIFO => "a FIFO or pipe",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFDIR => "a directory",
        libc::S_IFBLK => "a block device",
        _ => "a regular file",
    }
}

/// The OS error that a `ModeError` or a `NotSeekable` explains.
#[derive(Debug)]
struct Explained {
    msg: String,
    os: io::Error,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.msg, self.os)
    }
}

impl std::error::Error for Explained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.os)
    }
}

/// `errno` with a message that says what it means here; the OS error (and so the errno)
/// is the error's `source()`.
fn explained(errno: i32, msg: String) -> io::Error {
    let os = io::Error::from_raw_os_error(errno);
    io::Error::new(os.kind(), Explained { msg, os })
}

fn direct_refused(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "O_DIRECT is not supported for {} on its filesystem ({e}); open it without direct(true) to use the page cache",
            path.display()
        ),
    )
}

/// An open file whose reads, writes and syncs run on a [`Context`].
///
/// Cloning is cheap and shares the descriptor, which stays open until the last clone and
/// the last operation on it are done (an operation in flight keeps it open even if every
/// `File` is dropped). Every future it returns is `Send + 'static`.
///
/// Nothing it does blocks the thread that polls: reads, writes and syncs go to the
/// context's backend, and so do the metadata calls (opening, [`len`](File::len),
/// [`set_len`](File::set_len), [`metadata`](File::metadata), [`close`](File::close)...),
/// which run on the backend's threads. Dropping a `File` hands its descriptor to the
/// backend to close. Only the `blocking` implementation runs them inline, by definition.
///
/// A write resolving means the OS has the data. To know it is on the device, call
/// [`sync_data`](File::sync_data) or [`sync_all`](File::sync_all); to see the errors some
/// filesystems (NFS, FUSE) only report when a file is closed, call [`close`](File::close).
///
/// On an O_DIRECT file, reads and writes at any offset and length work: an unaligned read
/// reads the aligned blocks around it, and the unaligned head and tail of a write (never
/// sharing a page with the direct part) go through a second, buffered descriptor.
#[derive(Clone)]
pub struct File {
    inner: Arc<Inner>,
}

struct Inner {
    fd: RawFd,
    owner: Arc<FdOwner>,
    /// What the backend is told of the descriptor (it holds the owner too).
    info: FdInfo,
    /// The context its operations run on (a handle of the process-wide one carries on
    /// in a child after `fork()`, on the child's own: see `Context::target`).
    ctx: Context,
    path: PathBuf,
    facts: Facts,
    /// A buffered descriptor on the same file, for the unaligned parts of direct writes.
    twin: OnceCell<Twin>,
}

/// The second, buffered descriptor of an O_DIRECT file.
struct Twin {
    fd: RawFd,
    owner: Arc<FdOwner>,
    info: FdInfo,
}

impl Inner {
    fn new(ctx: Context, fd: OwnedFd, path: PathBuf, facts: Facts) -> Inner {
        let raw = fd.as_raw_fd();
        let owner = FdOwner::new(fd, ctx.clone());
        Inner {
            fd: raw,
            info: FdInfo {
                _owner: Arc::clone(&owner) as Arc<dyn std::any::Any + Send + Sync>,
                seekable: facts.seekable,
                direct: facts.direct,
                memory: facts.memory,
            },
            owner,
            ctx,
            path,
            facts,
            twin: OnceCell::new(),
        }
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.inner.path)
            .field("fd", &self.inner.fd)
            .field("direct", &self.inner.facts.direct)
            .field("append", &self.inner.facts.append)
            .field("implementation", &self.inner.ctx.implementation())
            .finish()
    }
}

impl AsRawFd for File {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.fd
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl File {
    /// Opens a file for reading.
    ///
    /// # Errors
    /// As [`OpenOptions::open`].
    pub fn open(path: impl AsRef<Path>) -> impl Future<Output = io::Result<File>> + Send + 'static {
        OpenOptions::new().read(true).open(path)
    }

    /// Creates (or truncates) a file for writing.
    ///
    /// # Errors
    /// As [`OpenOptions::open`].
    pub fn create(
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + 'static {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Options for opening a file.
    pub fn options() -> OpenOptions {
        OpenOptions::new()
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The context its operations run on: in a child after `fork()`, for a file on the
    /// process-wide context, the child's own process-wide context.
    pub fn context(&self) -> Context {
        self.inner.ctx.current()
    }

    /// Whether it was opened with O_DIRECT.
    pub fn is_direct(&self) -> bool {
        self.inner.facts.direct
    }

    /// Whether it was opened in append mode.
    pub fn is_append(&self) -> bool {
        self.inner.facts.append
    }

    /// The O_DIRECT alignment, for a direct file.
    pub fn direct_alignment(&self) -> Option<DirectAlignment> {
        self.inner.facts.align
    }

    /// The descriptor, and what keeps it open while an operation uses it.
    pub(crate) fn fd_info(&self) -> (RawFd, &FdInfo) {
        (self.inner.fd, &self.inner.info)
    }

    fn from_parts(ctx: Context, fd: OwnedFd, path: PathBuf, facts: Facts) -> File {
        File {
            inner: Arc::new(Inner::new(ctx, fd, path, facts)),
        }
    }

    /// Reads up to `nbytes` at `offset`: fewer only at end of file, none past it.
    ///
    /// # Errors
    /// The OS error; `InvalidInput` for an `nbytes` no allocation can hold.
    pub fn read_at(
        &self,
        nbytes: usize,
        offset: u64,
    ) -> impl Future<Output = io::Result<Buffer>> + Send + 'static {
        let f = self.clone();
        async move {
            f.check_positional(false)?;
            f.read_at_now(nbytes, offset).await
        }
    }

    async fn read_at_now(&self, nbytes: usize, offset: u64) -> io::Result<Buffer> {
        let i = &self.inner;
        match i.facts.align {
            Some(a) if !a.allows(offset, nbytes) => {
                let unit = a.offset as u64;
                let start = offset - offset % unit;
                let end = offset
                    .checked_add(nbytes as u64)
                    .and_then(|e| e.checked_next_multiple_of(unit))
                    .filter(|e| e - start <= isize::MAX as u64)
                    .ok_or_else(|| {
                        invalid(format!("a read of {nbytes} bytes at {offset} is too large"))
                    })?;
                let block = i
                    .ctx
                    .read_file((end - start) as usize, i.fd, start, &i.info)
                    .await?;
                let skip = ((offset - start) as usize).min(block.len());
                let take = (block.len() - skip).min(nbytes);
                Ok(Buffer::from(&block[skip..skip + take]))
            }
            _ => i.ctx.read_file(nbytes, i.fd, offset, &i.info).await,
        }
    }

    /// Writes `data` at `offset` (on an append-mode file, at the end); resolves to the
    /// number of bytes written, fewer only when the OS stopped early (a full disk).
    ///
    /// # Errors
    /// The OS error (EBADF on a file not opened for writing, ENOSPC...).
    pub fn write_at(
        &self,
        data: impl Into<Buffer>,
        offset: u64,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'static {
        let (f, data) = (self.clone(), data.into());
        async move {
            f.check_positional(true)?;
            f.write_once(data, offset).await.0
        }
    }

    /// Writes all of `data` at `offset`, continuing after short writes.
    ///
    /// # Errors
    /// The OS error; `WriteZero` if the OS accepts nothing and reports no error.
    pub fn write_all_at(
        &self,
        data: impl Into<Buffer>,
        offset: u64,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let (f, data) = (self.clone(), data.into());
        async move {
            f.check_positional(true)?;
            f.write_all_now(data, offset).await.map(drop)
        }
    }

    /// Reads into `buf`, which the caller owns and reuses: up to `buf.capacity()` bytes at
    /// `offset`, from the start of the buffer (what it held is discarded). Resolves to the
    /// byte count and the buffer, whose length is then that count; fewer bytes only at end
    /// of file. The buffer comes back on an error too (its contents then unspecified).
    ///
    /// With an aligned buffer ([`Buffer::with_capacity`], [`Buffer::zeroed`]) nothing is
    /// allocated: a loop of reads into the same buffers allocates nothing once warm. On an
    /// O_DIRECT file any offset and capacity work; unaligned ones read through an aligned
    /// copy. Dropping the future loses the buffer, which is freed only once the kernel is
    /// done with it.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::OpenOptions::new().read(true).direct(true).open("data").await?;
    /// let mut buf = caio::Buffer::with_capacity(4096);
    /// let mut offset = 0;
    /// loop {
    ///     let (n, back) = file.read_at_into(buf, offset).await;
    ///     let n = n?;
    ///     if n == 0 {
    ///         break;
    ///     }
    ///     // ... use back[..n] ...
    ///     offset += n as u64;
    ///     buf = back; // the same memory for the next read
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read_at_into(
        &self,
        mut buf: Buffer,
        offset: u64,
    ) -> impl Future<Output = (io::Result<usize>, Buffer)> + Send + 'static {
        // Checked now, so the common case is the operation's future itself: no clone of
        // the file, no wrapper future around it.
        if let Err(e) = self.check_positional(false) {
            return Either::Left(ready((Err(e), buf)));
        }
        let i = &self.inner;
        match i.facts.align {
            Some(a) if !a.allows(offset, buf.capacity()) => {
                let f = self.clone();
                Either::Right(Either::Right(Box::pin(async move {
                    match f.read_at_now(buf.capacity(), offset).await {
                        Ok(data) => {
                            buf.clear();
                            let n = buf.extend_from_slice(&data);
                            (Ok(n), buf)
                        }
                        Err(e) => (Err(e), buf),
                    }
                })))
            }
            _ => Either::Right(Either::Left(i.ctx.owned_file(
                What::ReadInto(buf),
                i.fd,
                offset,
                &i.info,
            ))),
        }
    }

    /// Writes `buf` at `offset` (on an append-mode file, at the end) and hands it back
    /// with the number of bytes written (fewer only when the OS stopped early), on an
    /// error too, for the caller to reuse.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let log = caio::OpenOptions::new().write(true).create(true).direct(true).open("log").await?;
    /// let mut block = caio::Buffer::zeroed(4096);
    /// for i in 0..16u64 {
    ///     block.fill(b'a' + i as u8);
    ///     let (n, back) = log.write_at_from(block, i * 4096).await;
    ///     assert_eq!(n?, 4096);
    ///     block = back;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn write_at_from(
        &self,
        buf: Buffer,
        offset: u64,
    ) -> impl Future<Output = (io::Result<usize>, Buffer)> + Send + 'static {
        if let Err(e) = self.check_positional(true) {
            return Either::Left(ready((Err(e), buf)));
        }
        Either::Right(self.write_once(buf, offset))
    }

    /// Reads at `offset` into several buffers in one operation (`preadv`; `PREADV` on
    /// linux, `READV` on uring): each is filled up to its capacity before the next, as
    /// `std::io::Read::read_vectored` describes, and each one's length is what it got. The
    /// total is short only at end of file. The buffers come back on an error too.
    ///
    /// On an O_DIRECT file whose offset or capacities are not aligned, the blocks around
    /// the range are read in one operation and copied into the buffers.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::open("table").await?;
    /// let bufs = vec![caio::Buffer::with_capacity(64), caio::Buffer::with_capacity(4032)];
    /// let (n, bufs) = file.read_vectored_at(bufs, 0).await;
    /// println!("{} bytes: header {:?}", n?, &bufs[0][..]);
    /// # Ok(()) }
    /// ```
    pub fn read_vectored_at(
        &self,
        mut bufs: Vec<Buffer>,
        offset: u64,
    ) -> impl Future<Output = (io::Result<usize>, Vec<Buffer>)> + Send + 'static {
        let f = self.clone();
        async move {
            if let Err(e) = f.check_positional(false) {
                return (Err(e), bufs);
            }
            let i = &f.inner;
            let total = bufs
                .iter()
                .try_fold(0usize, |a, b| a.checked_add(b.capacity()));
            let Some(total) = total else {
                return (
                    Err(invalid("the buffers hold more than one read can".into())),
                    bufs,
                );
            };
            let aligned = |a: DirectAlignment| {
                let mut at = offset;
                bufs.iter().all(|b| {
                    let ok = a.allows(at, b.capacity());
                    at += b.capacity() as u64;
                    ok
                })
            };
            match i.facts.align {
                Some(a) if !aligned(a) => match f.read_at_now(total, offset).await {
                    Ok(data) => {
                        let mut rest = &data[..];
                        for b in &mut bufs {
                            b.clear();
                            let k = b.extend_from_slice(rest);
                            rest = &rest[k..];
                        }
                        (Ok(data.len()), bufs)
                    }
                    Err(e) => (Err(e), bufs),
                },
                _ => {
                    i.ctx
                        .vectored_file(What::ReadV(bufs), i.fd, offset, &i.info)
                        .await
                }
            }
        }
    }

    /// Writes several buffers, one after the other, at `offset` in one operation
    /// (`pwritev`; `PWRITEV` on linux, `WRITEV` on uring) and hands them back with the
    /// count (fewer only when the OS stopped early), on an error too.
    ///
    /// On an O_DIRECT file whose offset or lengths are not aligned, the bytes are gathered
    /// and written as [`write_at`](File::write_at) writes unaligned data.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::create("record").await?;
    /// let (n, _bufs) = file
    ///     .write_vectored_at(vec!["key=".into(), "value\n".into()], 0)
    ///     .await;
    /// assert_eq!(n?, 10);
    /// # Ok(()) }
    /// ```
    pub fn write_vectored_at(
        &self,
        bufs: Vec<Buffer>,
        offset: u64,
    ) -> impl Future<Output = (io::Result<usize>, Vec<Buffer>)> + Send + 'static {
        let f = self.clone();
        async move {
            if let Err(e) = f.check_positional(true) {
                return (Err(e), bufs);
            }
            let i = &f.inner;
            let aligned = |a: DirectAlignment| {
                let mut at = offset;
                bufs.iter().all(|b| {
                    let ok = a.allows(at, b.len());
                    at += b.len() as u64;
                    ok
                })
            };
            match i.facts.align {
                Some(a) if !i.facts.append && !aligned(a) => {
                    let mut all = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
                    bufs.iter().for_each(|b| all.extend_from_slice(b));
                    let r = f.write_split(&Buffer::from(all), offset, a).await;
                    (r, bufs)
                }
                _ => {
                    i.ctx
                        .vectored_file(What::WriteV(bufs), i.fd, offset, &i.info)
                        .await
                }
            }
        }
    }

    /// EBADF that names the access the file was not opened for.
    fn check_access(&self, write: bool) -> io::Result<()> {
        let f = &self.inner.facts;
        if (write && !f.writable) || (!write && !f.readable) {
            let what = if write { "writing" } else { "reading" };
            return Err(explained(
                libc::EBADF,
                format!("{} is not opened for {what}", self.inner.path.display()),
            ));
        }
        Ok(())
    }

    /// Checks that the file can be read or written at an offset: opened for it, and not a
    /// FIFO, pipe or socket (ESPIPE, naming the type).
    fn check_positional(&self, write: bool) -> io::Result<()> {
        self.check_access(write)?;
        let t = self.inner.facts.file_type;
        if t == libc::S_IFIFO || t == libc::S_IFSOCK {
            return Err(explained(
                libc::ESPIPE,
                format!(
                    "{} is {}: reading or writing at an offset needs a regular file or \
                     device; use reader(), writer(), lines() or chunks()",
                    self.inner.path.display(),
                    type_name(t)
                ),
            ));
        }
        Ok(())
    }

    /// ESPIPE for a seek on a file read or written in sequence, naming its type.
    pub(crate) fn cannot_seek(&self) -> io::Error {
        explained(
            libc::ESPIPE,
            format!(
                "{} is {}: it is read and written in sequence and cannot seek",
                self.inner.path.display(),
                type_name(self.inner.facts.file_type)
            ),
        )
    }

    /// Whether reads and writes go at offsets (a regular file or block device), rather
    /// than in sequence (pipes, FIFOs, sockets, terminals and other devices).
    pub(crate) fn is_seekable(&self) -> bool {
        self.inner.facts.seekable
    }

    /// The next chunk of a stream: `nbytes` at `offset` for a seekable file, else the next
    /// `nbytes` in sequence (`read(2)` until that many or the end, through the backend).
    /// Short only at the end.
    pub(crate) async fn read_chunk(&self, nbytes: usize, offset: u64) -> io::Result<Buffer> {
        self.check_access(false)?;
        if self.is_seekable() {
            return self.read_at_now(nbytes, offset).await;
        }
        self.with_std(move |f| {
            use std::io::Read;
            let mut out = Vec::with_capacity(nbytes.min(16 << 20));
            f.take(nbytes as u64).read_to_end(&mut out)?;
            Ok(Buffer::from(out))
        })
        .await
    }

    /// Writes all of `data` as the next part of a stream: at `offset` for a seekable file,
    /// else in sequence (`write(2)` through the backend). Gives the buffer back.
    pub(crate) async fn write_chunk(&self, data: Buffer, offset: u64) -> io::Result<Buffer> {
        self.check_access(true)?;
        if self.is_seekable() {
            return self.write_all_now(data, offset).await;
        }
        self.with_std(move |mut f| {
            use std::io::Write;
            f.write_all(&data)?;
            Ok(data)
        })
        .await
    }

    /// Writes all of `data`, giving the buffer back (the writer reuses it).
    pub(crate) async fn write_all_now(
        &self,
        mut data: Buffer,
        mut offset: u64,
    ) -> io::Result<Buffer> {
        let mut done = 0;
        loop {
            if done == data.len() {
                return Ok(data);
            }
            let rest = if done == 0 {
                data
            } else {
                Buffer::from(&data[done..])
            };
            let (n, back) = self.write_once(rest, offset).await;
            let n = n?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("wrote 0 of {} bytes", back.len()),
                ));
            }
            offset += n as u64;
            data = back;
            done = n;
        }
    }

    /// One pass: a single write, or for an unaligned direct write up to three (buffered
    /// head, direct middle, buffered tail), stopping at the first short one.
    /// Gives the buffer back, on an error too.
    fn write_once(
        &self,
        data: Buffer,
        offset: u64,
    ) -> impl Future<Output = (io::Result<usize>, Buffer)> + Send + 'static {
        let i = &self.inner;
        match i.facts.align {
            Some(a) if !a.allows(offset, data.len()) && !i.facts.append => {
                let f = self.clone();
                Either::Right(Box::pin(async move {
                    let r = f.write_split(&data, offset, a).await;
                    (r, data)
                }))
            }
            _ => Either::Left(i.ctx.owned_file(What::Write(data), i.fd, offset, &i.info)),
        }
    }

    /// An unaligned write on an O_DIRECT file: split on page boundaries (at least), so
    /// the buffered and the direct parts never share a page of the page cache.
    async fn write_split(
        &self,
        data: &Buffer,
        offset: u64,
        a: DirectAlignment,
    ) -> io::Result<usize> {
        let i = &self.inner;
        let unit = (a.offset as u64).max(4096);
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            invalid(format!(
                "a write of {} bytes at {offset} ends past the largest offset",
                data.len()
            ))
        })?;
        let mid_start = offset.next_multiple_of(unit).min(end);
        let mid_end = (end - end % unit).max(mid_start);
        let twin = self.twin().await?;
        let mut written = 0usize;
        for (start, stop, direct) in [
            (offset, mid_start, false),
            (mid_start, mid_end, true),
            (mid_end, end, false),
        ] {
            if start == stop {
                continue;
            }
            let part = Buffer::from(&data[(start - offset) as usize..(stop - offset) as usize]);
            let want = part.len();
            let (fd, info) = if direct {
                (i.fd, &i.info)
            } else {
                (twin.fd, &twin.info)
            };
            let n = match i.ctx.owned_file(What::Write(part), fd, start, info).await.0 {
                Ok(n) => n,
                // As std's write: once bytes are in the file, the count is the answer,
                // and the error comes with the next write, where it writes nothing.
                Err(_) if written > 0 => break,
                Err(e) => return Err(e),
            };
            written += n;
            if n < want {
                break;
            }
        }
        Ok(written)
    }

    /// The buffered twin, opened (through the backend) on first use.
    async fn twin(&self) -> io::Result<&Twin> {
        let i = &self.inner;
        if let Some(t) = i.twin.get() {
            return Ok(t);
        }
        if !i.facts.writable {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let open = Meta::Open {
            path: cstring(Path::new(&format!("/proc/self/fd/{}", i.fd)))?,
            flags: libc::O_WRONLY,
            mode: 0,
        };
        let fd = i.ctx.meta(-1, open, Some(&i.info), opened).await?.fd;
        let raw = fd.as_raw_fd();
        let owner = FdOwner::new(fd, i.ctx.clone());
        let twin = Twin {
            fd: raw,
            info: FdInfo {
                _owner: Arc::clone(&owner) as Arc<dyn std::any::Any + Send + Sync>,
                seekable: true,
                direct: false,
                memory: false,
            },
            owner,
        };
        // Another write may have opened one meanwhile: keep the first (ours is closed).
        let _ = i.twin.set(twin);
        Ok(i.twin.get().expect("set just above"))
    }

    /// Reads the whole file from the start, several chunks in flight.
    ///
    /// # Errors
    /// The first failed read.
    pub fn read_to_end(&self) -> impl Future<Output = io::Result<Vec<u8>>> + Send + 'static {
        let f = self.clone();
        async move {
            use futures::StreamExt;
            let len = f.len().await.unwrap_or(0);
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
            let mut chunks = f.chunks(crate::fs::COPY_CHUNK);
            while let Some(c) = chunks.next().await {
                out.extend_from_slice(&c?);
            }
            Ok(out)
        }
    }

    /// Flushes data and metadata to the device (`fsync`).
    ///
    /// # Errors
    /// The OS error.
    pub fn sync_all(&self) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let i = Arc::clone(&self.inner);
        async move { i.ctx.sync_file(i.fd, false, &i.info).await }
    }

    /// Flushes data to the device (`fdatasync`).
    ///
    /// # Errors
    /// The OS error.
    pub fn sync_data(&self) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let i = Arc::clone(&self.inner);
        async move { i.ctx.sync_file(i.fd, true, &i.info).await }
    }

    /// Truncates or extends the file to `len` bytes (`ftruncate`, through the backend).
    ///
    /// # Errors
    /// The OS error; EBADF saying so for a file not opened for writing.
    pub fn set_len(&self, len: u64) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let f = self.clone();
        async move {
            f.check_access(true)?;
            let i = &f.inner;
            i.ctx
                .meta_unit(i.fd, Meta::Truncate(len), Some(&i.info))
                .await
        }
    }

    /// The file's size in bytes (`fstat`, through the backend; a block device's size).
    ///
    /// # Errors
    /// The OS error.
    pub fn len(&self) -> impl Future<Output = io::Result<u64>> + Send + 'static {
        let i = Arc::clone(&self.inner);
        async move {
            let fd = i.fd;
            i.ctx.run(Some(&i.info), move || sys::file_len(fd)).await
        }
    }

    /// The file's metadata, as [`std::fs::File::metadata`] (`statx`/`fstat`, through the
    /// backend).
    ///
    /// # Errors
    /// The OS error.
    pub fn metadata(&self) -> impl Future<Output = io::Result<Metadata>> + Send + 'static {
        self.with_std(|f| f.metadata())
    }

    /// Changes the file's permissions, as [`std::fs::File::set_permissions`] (`fchmod`,
    /// through the backend).
    ///
    /// # Errors
    /// The OS error (EPERM when not the owner).
    pub fn set_permissions(
        &self,
        perm: Permissions,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        self.with_std(move |f| f.set_permissions(perm))
    }

    /// Allocates `len` bytes of storage from `offset` (`fallocate(2)` with mode 0, through
    /// the backend), extending the file if the range ends past it, so later writes there
    /// cannot fail for lack of space.
    ///
    /// # Errors
    /// The OS error (ENOSPC; EOPNOTSUPP where the filesystem cannot); `Unsupported` off
    /// Linux, which has no `fallocate`.
    pub fn allocate(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let i = Arc::clone(&self.inner);
        async move {
            i.ctx
                .meta_unit(i.fd, Meta::Allocate { offset, len }, Some(&i.info))
                .await
        }
    }

    /// Tells the kernel how `len` bytes from `offset` (0: to the end of the file) will be
    /// read (`posix_fadvise(2)`, through the backend, off the polling thread; natively on
    /// io_uring). [`Advice::WillNeed`](crate::fs::Advice::WillNeed) starts reading the range into the page cache;
    /// [`Advice::DontNeed`](crate::fs::Advice::DontNeed) drops its clean pages, [`Advice::Sequential`](crate::fs::Advice::Sequential) and
    /// [`Advice::Random`](crate::fs::Advice::Random) tune read-ahead.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// use caio::fs::Advice;
    /// let index = caio::File::open("index").await?;
    /// index.advise(0, 0, Advice::Random).await?; // point lookups: no read-ahead
    /// index.advise(0, 1 << 20, Advice::WillNeed).await?; // warm the first MiB
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error (ESPIPE on a pipe); `Unsupported` where the system has no
    /// `posix_fadvise` (macOS).
    pub fn advise(
        &self,
        offset: u64,
        len: u64,
        advice: crate::fs::Advice,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let i = Arc::clone(&self.inner);
        let advice = advice.raw();
        async move {
            let m = Meta::Advise {
                offset,
                len,
                advice,
            };
            i.ctx.meta_unit(i.fd, m, Some(&i.info)).await
        }
    }

    /// Starts and/or waits for the write-out of `len` bytes from `offset` (0: to the end
    /// of the file), as `flags` say (`sync_file_range(2)`, through the backend, off the
    /// polling thread; natively on io_uring). It paces write-back; it is not a durability
    /// guarantee (see [`SyncRange`](crate::fs::SyncRange)): use
    /// [`sync_data`](File::sync_data) for that.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// use caio::fs::SyncRange;
    /// let log = caio::File::create("log").await?;
    /// log.write_all_at(vec![0u8; 1 << 20], 0).await?;
    /// // Start writing the megabyte out now, without waiting for it.
    /// log.sync_range(0, 1 << 20, SyncRange::WRITE).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error (ESPIPE on a pipe, EINVAL for unknown flags); `Unsupported` off Linux.
    pub fn sync_range(
        &self,
        offset: u64,
        len: u64,
        flags: crate::fs::SyncRange,
    ) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let i = Arc::clone(&self.inner);
        let flags = flags.bits();
        async move {
            let m = Meta::SyncRange { offset, len, flags };
            i.ctx.meta_unit(i.fd, m, Some(&i.info)).await
        }
    }

    /// A second `File` on the same open file description (`fcntl(F_DUPFD_CLOEXEC)`,
    /// through the backend): it shares the file's status flags but has its own
    /// descriptor, closed on its own.
    ///
    /// # Errors
    /// The OS error (EMFILE).
    pub fn try_clone(&self) -> impl Future<Output = io::Result<File>> + Send + 'static {
        let i = Arc::clone(&self.inner);
        async move {
            let fd = i.fd;
            let new = i.ctx.run(Some(&i.info), move || sys::dup(fd)).await?;
            Ok(File::from_parts(
                i.ctx.clone(),
                new,
                i.path.clone(),
                i.facts,
            ))
        }
    }

    /// Closes the file and reports the error of `close(2)`: some filesystems (NFS, FUSE)
    /// report write-back errors only there. The close runs through the backend.
    ///
    /// The descriptor is shared by every clone of this `File` and kept open by operations
    /// still in flight on it (futures dropped before they finished). When this is the last
    /// clone, `close` waits for those operations and then closes it. When other clones
    /// remain, it only drops this one and returns `Ok(())`: the descriptor is closed, by
    /// the backend, when the last clone goes. Dropping a `File` without `close` also
    /// closes it through the backend, but an error is then only logged.
    ///
    /// `close` does not flush anything to the device: call [`sync_all`](File::sync_all)
    /// or [`sync_data`](File::sync_data) first for durability.
    ///
    /// # Errors
    /// The OS error of `close(2)` (EIO, ENOSPC, EDQUOT on network filesystems).
    pub async fn close(self) -> io::Result<()> {
        let Ok(inner) = Arc::try_unwrap(self.inner) else {
            return Ok(());
        };
        let Inner {
            owner, info, twin, ..
        } = inner;
        drop(info);
        let twin = twin.into_inner().map(|t| {
            drop(t.info);
            t.owner
        });
        let r = owner.close().await;
        match twin {
            Some(t) => r.and(t.close().await),
            None => r,
        }
    }

    /// Runs `f` on a `std::fs::File` view of the descriptor, through the backend.
    fn with_std<T: Send + 'static>(
        &self,
        f: impl FnOnce(&std::fs::File) -> io::Result<T> + Send + 'static,
    ) -> impl Future<Output = io::Result<T>> + Send + 'static {
        let i = Arc::clone(&self.inner);
        async move {
            let fd = i.fd;
            i.ctx
                .run(Some(&i.info), move || {
                    // SAFETY: the request holds the descriptor's owner, so `fd` stays open
                    // while this runs; ManuallyDrop keeps the view from closing it.
                    let view = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
                    f(&view)
                })
                .await
        }
    }

    /// A buffered reader from the start of the file, reading ahead several chunks at once.
    pub fn reader(&self) -> Reader {
        Reader::new(self.clone())
    }

    /// A buffered writer from the start of the file (at its end in append mode), writing
    /// behind several chunks at once. Call `close` to write everything and see any error.
    pub fn writer(&self) -> Writer {
        Writer::new(self.clone())
    }

    /// The lines of the file (`\n` or `\r\n` stripped); invalid UTF-8 is an error of kind
    /// `InvalidData`.
    pub fn lines(&self) -> Lines {
        futures::AsyncBufReadExt::lines(self.reader())
    }

    /// The file in chunks of `n` bytes (the last one shorter), several read ahead.
    pub fn chunks(&self, n: usize) -> Chunks {
        Chunks::new(self.clone(), n)
    }
}
