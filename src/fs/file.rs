//! [`File`] and [`OpenOptions`].

use std::{
    fmt,
    future::Future,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use once_cell::sync::OnceCell;

use crate::{
    align::DirectAlignment,
    backend::FdInfo,
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

    /// Opens `path`.
    ///
    /// # Errors
    /// The OS error of `open(2)`; `EISDIR` for a directory; an error of kind
    /// `InvalidInput`/`Unsupported` naming O_DIRECT when the filesystem refuses it.
    pub fn open(
        &self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + 'static {
        let (opts, path) = (self.clone(), path.as_ref().to_path_buf());
        async move { opts.open_now(path) }
    }

    fn open_now(&self, path: PathBuf) -> io::Result<File> {
        let ctx = match &self.context {
            Some(c) => c.clone(),
            None => Context::global()?,
        };
        let mut o = std::fs::OpenOptions::new();
        o.read(self.read)
            .write(self.write)
            .append(self.append)
            .create(self.create)
            .create_new(self.create_new)
            .truncate(self.truncate);
        if let Some(m) = self.mode {
            o.mode(m);
        }
        if self.direct {
            #[cfg(target_os = "linux")]
            o.custom_flags(libc::O_DIRECT);
            #[cfg(not(target_os = "linux"))]
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "O_DIRECT exists only on Linux",
            ));
        }
        let file = o.open(&path).map_err(|e| {
            if self.direct && e.raw_os_error() == Some(libc::EINVAL) {
                direct_refused(&path, e)
            } else {
                e
            }
        })?;
        let fd = OwnedFd::from(file);
        let ty = sys::file_type(fd.as_raw_fd())?;
        if ty == libc::S_IFDIR {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        let align = if self.direct {
            Some(crate::direct_alignment(fd.as_raw_fd()).map_err(|e| direct_refused(&path, e))?)
        } else {
            None
        };
        let raw = fd.as_raw_fd();
        Ok(File {
            inner: Arc::new(Inner {
                fd: raw,
                info: FdInfo {
                    _owner: Arc::new(fd),
                    seekable: ty == libc::S_IFREG || ty == libc::S_IFBLK,
                    direct: self.direct,
                },
                ctx,
                path,
                append: self.append,
                writable: self.write || self.append,
                align,
                twin: OnceCell::new(),
            }),
        })
    }
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
/// Opening, [`len`](File::len) and [`set_len`](File::set_len) are metadata system calls
/// with no asynchronous kernel interface: they run inline on the calling thread.
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
    info: FdInfo,
    ctx: Context,
    path: PathBuf,
    append: bool,
    writable: bool,
    align: Option<DirectAlignment>,
    /// A buffered descriptor on the same file, for the unaligned parts of direct writes.
    twin: OnceCell<(RawFd, FdInfo)>,
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.inner.path)
            .field("fd", &self.inner.fd)
            .field("direct", &self.inner.info.direct)
            .field("append", &self.inner.append)
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

    /// The context its operations run on.
    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }

    /// Whether it was opened with O_DIRECT.
    pub fn is_direct(&self) -> bool {
        self.inner.info.direct
    }

    /// Whether it was opened in append mode.
    pub fn is_append(&self) -> bool {
        self.inner.append
    }

    /// The O_DIRECT alignment, for a direct file.
    pub fn direct_alignment(&self) -> Option<DirectAlignment> {
        self.inner.align
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
        async move { f.read_at_now(nbytes, offset).await }
    }

    async fn read_at_now(&self, nbytes: usize, offset: u64) -> io::Result<Buffer> {
        let i = &self.inner;
        match i.align {
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
        async move { f.write_once(data, offset).await.map(|(n, _)| n) }
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
        async move { f.write_all_now(data, offset).await.map(drop) }
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
            let (n, back) = self.write_once(rest, offset).await?;
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
    async fn write_once(&self, data: Buffer, offset: u64) -> io::Result<(usize, Buffer)> {
        let i = &self.inner;
        let Some(a) = i
            .align
            .filter(|a| !a.allows(offset, data.len()) && !i.append)
        else {
            return i.ctx.write_file(data, i.fd, offset, &i.info).await;
        };
        // Split on page boundaries (at least), so the buffered and the direct parts never
        // share a page of the page cache.
        let unit = (a.offset as u64).max(4096);
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            invalid(format!(
                "a write of {} bytes at {offset} ends past the largest offset",
                data.len()
            ))
        })?;
        let mid_start = offset.next_multiple_of(unit).min(end);
        let mid_end = (end - end % unit).max(mid_start);
        let (twin_fd, twin) = self.twin()?;
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
            let (n, _) = if direct {
                i.ctx.write_file(part, i.fd, start, &i.info).await?
            } else {
                i.ctx.write_file(part, *twin_fd, start, twin).await?
            };
            written += n;
            if n < want {
                break;
            }
        }
        Ok((written, data))
    }

    fn twin(&self) -> io::Result<&(RawFd, FdInfo)> {
        let i = &self.inner;
        i.twin.get_or_try_init(|| {
            if !i.writable {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{}", i.fd))?;
            let raw = f.into_raw_fd();
            // SAFETY: `raw` was just released by a File that owned it.
            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
            Ok((
                raw,
                FdInfo {
                    _owner: Arc::new(owned),
                    seekable: true,
                    direct: false,
                },
            ))
        })
    }

    /// Reads the whole file from the start, several chunks in flight.
    ///
    /// # Errors
    /// The first failed read.
    pub fn read_to_end(&self) -> impl Future<Output = io::Result<Vec<u8>>> + Send + 'static {
        let f = self.clone();
        async move {
            use futures::StreamExt;
            let mut out = Vec::with_capacity(sys::file_len(f.inner.fd).unwrap_or(0) as usize);
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

    /// Truncates or extends the file to `len` bytes (`ftruncate`, inline).
    ///
    /// # Errors
    /// The OS error (EINVAL for a file not open for writing).
    pub fn set_len(&self, len: u64) -> impl Future<Output = io::Result<()>> + Send + 'static {
        let r = sys::ftruncate(self.inner.fd, len);
        async move { r }
    }

    /// The file's size in bytes (`fstat`, inline; a block device's size).
    ///
    /// # Errors
    /// The OS error.
    pub fn len(&self) -> impl Future<Output = io::Result<u64>> + Send + 'static {
        let r = sys::file_len(self.inner.fd);
        async move { r }
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
