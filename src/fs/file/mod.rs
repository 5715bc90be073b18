//! [`File`] and [`OpenOptions`]: the file itself and its positional I/O here;
//! its rooms are the options and the open (`options`), the descriptor's owner and its
//! close (`owner`), O_DIRECT at any offset (`direct`), metadata, syncs and close
//! (`meta`), the reads and writes in sequence that streams and the cursor make
//! (`stream`), the cursor (`cursor`), and conversions (`convert`).

mod convert;
pub(crate) mod cursor;
mod direct;
mod future;
mod meta;
mod options;
mod owner;
mod stream;

use crate::sys::c;
pub use cursor::DEFAULT_MAX_BUF_SIZE;
pub use future::{FileBufFuture, FileFuture};
#[cfg(unix)]
pub(crate) use options::opened;
pub use options::OpenOptions;
use owner::FdOwner;

use crate::sys::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::{
    fmt,
    fs::{Metadata, Permissions},
    future::Future,
    io,
    mem::ManuallyDrop,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use futures::{channel::oneshot, future::Either};
use once_cell::sync::OnceCell;

use crate::{
    align::DirectAlignment,
    backend::{Completion, Controls, Facts, FdInfo, Meta, Opened, Out, What},
    context::abort::Abort,
    fs::{Chunks, Lines, Reader, Writer},
    sys, Buffer, Context,
};

/// What a `File` knows of its descriptor, gathered once at open: what the backends route
/// by, and what only the file layer needs.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// Seekable (anything else is read and written in sequence), O_DIRECT, in memory.
    fd: Facts,
    /// `st_mode & S_IFMT`, to name the type in errors.
    file_type: c::mode_t,
    append: bool,
    readable: bool,
    writable: bool,
    align: Option<DirectAlignment>,
}

/// "a FIFO or pipe", "a socket"...: a file type (`st_mode & S_IFMT`) in words.
pub(crate) fn type_name(t: c::mode_t) -> &'static str {
    match t {
        c::S_IFIFO => "a FIFO or pipe",
        c::S_IFSOCK => "a socket",
        c::S_IFCHR => "a character device",
        c::S_IFDIR => "a directory",
        c::S_IFBLK => "a block device",
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
/// It has two ways in, side by side, as std's `File` has `Read` and `FileExt`:
/// - **positional** calls ([`read_at`](File::read_at), [`write_at`](File::write_at), the
///   owned-buffer and vectored forms), which name their offset and neither use nor move
///   the cursor;
/// - **the cursor**, `tokio::fs::File`'s: `AsyncRead`, `AsyncWrite` and `AsyncSeek` (tokio's
///   with the `tokio` feature, futures' always). A write is accepted into a buffer (at
///   most [`max_buf_size`](File::max_buf_size) bytes of it) and finished in the
///   background; the next write, `flush`, [`sync_all`](File::sync_all),
///   [`sync_data`](File::sync_data), [`set_len`](File::set_len) or [`close`](File::close)
///   waits for it and reports its error. Dropped with a write pending, the `File`
///   finishes it in the background (see [`EXIT_WAIT`](crate::fs::EXIT_WAIT)).
///
/// Cloning is cheap and shares the descriptor and the cursor, as duplicates of a
/// descriptor share its offset. The descriptor stays open until the last clone and the
/// last operation on it are done (an operation in flight keeps it open even if every
/// `File` is dropped). Every future it returns is `Send + Sync + 'static`.
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
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let file = caio::File::open("Cargo.toml").await?;
/// let head = file.read_at(64, 0).await?; // positional: the cursor stays
/// println!("{}", String::from_utf8_lossy(&head));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct File {
    inner: Arc<Inner>,
    /// The cursor of `AsyncRead`/`AsyncWrite`/`AsyncSeek`, shared by the clones; `None`
    /// on the handles a cursor's own operations use (the cursor holds them: they must not
    /// hold it).
    cursor: Option<Arc<Mutex<cursor::Cursor>>>,
    /// The per-operation controls every request of this handle takes: plain, but on the
    /// handle a `FileFuture` with controls builds its steps on.
    controls: Controls,
    /// The cancellation every request of this handle joins: on the handle a `FileFuture`
    /// with an abort handle builds its steps on.
    abort: Option<Arc<Abort>>,
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
    known: Known,
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
    fn new(ctx: Context, fd: OwnedFd, path: PathBuf, known: Known) -> Inner {
        let raw = fd.as_raw_fd();
        let owner = FdOwner::new(fd, ctx.clone());
        Inner {
            fd: raw,
            info: FdInfo {
                _owner: Arc::clone(&owner) as Arc<dyn std::any::Any + Send + Sync>,
                facts: known.fd,
            },
            owner,
            ctx,
            path,
            known,
            twin: OnceCell::new(),
        }
    }
}

impl fmt::Debug for File {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("File")
            .field("path", &self.inner.path)
            .field("fd", &self.inner.fd)
            .field("direct", &self.inner.known.fd.direct)
            .field("append", &self.inner.known.append)
            .field("implementation", &self.inner.ctx.implementation())
            .finish()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl File {
    /// Opens a file for reading.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::open("Cargo.toml").await?;
    /// let all = file.read_to_vec().await?;
    /// # let _ = all;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`OpenOptions::open`].
    pub fn open(
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + Sync + 'static {
        OpenOptions::new().read(true).open(path)
    }

    /// Creates (or truncates) a file for writing.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::create("out.bin").await?;
    /// file.write_all_at(vec![0u8; 4096], 0).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`OpenOptions::open`].
    pub fn create(
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + Sync + 'static {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Creates a file for reading and writing, failing if it exists (`O_CREAT | O_EXCL`),
    /// as `tokio::fs::File::create_new`.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let lock = caio::File::create_new("run.lock").await?;
    /// # let _ = lock; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `AlreadyExists` when it exists; otherwise as [`OpenOptions::open`].
    pub fn create_new(
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + Sync + 'static {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
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
        self.inner.known.fd.direct
    }

    /// Whether it was opened in append mode.
    pub fn is_append(&self) -> bool {
        self.inner.known.append
    }

    /// The alignment a direct file's transfers need: on Linux, for a file opened with
    /// `direct(true)`; `None` for a buffered file, and on FreeBSD and macOS, whose ways of
    /// bypassing the cache ask for none.
    pub fn direct_alignment(&self) -> Option<DirectAlignment> {
        self.inner.known.align
    }

    /// The descriptor, and what keeps it open while an operation uses it.
    pub(crate) fn fd_info(&self) -> (RawFd, &FdInfo) {
        (self.inner.fd, &self.inner.info)
    }

    fn from_parts(ctx: Context, fd: OwnedFd, path: PathBuf, known: Known) -> File {
        // At the start, as a new descriptor's offset is (in append mode too: reads start
        // there, and the first write moves the cursor to the end).
        File::with_cursor(ctx, fd, path, known, Some(0))
    }

    fn with_cursor(
        ctx: Context,
        fd: OwnedFd,
        path: PathBuf,
        known: Known,
        pos: Option<u64>,
    ) -> File {
        File {
            inner: Arc::new(Inner::new(ctx, fd, path, known)),
            cursor: Some(Arc::new(Mutex::new(cursor::Cursor::new(pos)))),
            controls: Controls::default(),
            abort: None,
        }
    }

    /// This file without its cursor, for an operation the cursor holds.
    fn detached(&self) -> File {
        File {
            inner: Arc::clone(&self.inner),
            cursor: None,
            controls: Controls::default(),
            abort: None,
        }
    }

    /// This handle with the per-operation `controls` on every request it makes, each a
    /// step of what `abort` cancels.
    fn with_controls(self, controls: Controls, abort: Option<Arc<Abort>>) -> File {
        File {
            controls,
            abort,
            ..self
        }
    }

    /// Reads up to `nbytes` at `offset`: fewer only at end of file, none past it.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::open("Cargo.toml").await?;
    /// let page = file.read_at(4096, 0).await?;
    /// println!("{} bytes", page.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error; `InvalidInput` for an `nbytes` no allocation can hold.
    pub fn read_at(&self, nbytes: usize, offset: u64) -> FileFuture<Buffer> {
        FileFuture::new(self, move |f| {
            Box::pin(async move {
                f.check_positional(false)?;
                f.read_at_now(nbytes, offset).await
            })
        })
    }

    /// Writes `data` at `offset` (on an append-mode file, at the end); resolves to the
    /// number of bytes written, fewer only when the OS stopped early (a full disk).
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::OpenOptions::new().write(true).create(true).open("table").await?;
    /// let n = file.write_at("header", 0).await?;
    /// # let _ = n;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error (EBADF on a file not opened for writing, ENOSPC...).
    pub fn write_at(&self, data: impl Into<Buffer>, offset: u64) -> FileFuture<usize> {
        let data = data.into();
        FileFuture::new(self, move |f| {
            Box::pin(async move {
                f.check_positional(true)?;
                f.write_once(data, offset).await.0
            })
        })
    }

    /// Writes all of `data` at `offset`, continuing after short writes.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::OpenOptions::new().write(true).create(true).open("table").await?;
    /// file.write_all_at(vec![7u8; 1 << 20], 4096).await?;
    /// file.sync_data().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error; `WriteZero` if the OS accepts nothing and reports no error.
    pub fn write_all_at(&self, data: impl Into<Buffer>, offset: u64) -> FileFuture<()> {
        let data = data.into();
        FileFuture::new(self, move |f| {
            Box::pin(async move {
                f.check_positional(true)?;
                f.write_all_now(data, offset).await.map(drop)
            })
        })
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
    pub fn read_at_into(&self, buf: Buffer, offset: u64) -> FileBufFuture<Buffer> {
        // Checked now, so the common case is the operation's future itself: no clone of
        // the file, no future around it.
        if let Err(e) = self.check_positional(false) {
            return FileBufFuture::ready(Err(e), buf);
        }
        let i = &self.inner;
        match i.known.align {
            Some(a) if !a.allows(offset, buf.capacity()) => {
                FileBufFuture::lazy(self, buf, move |f, mut buf| {
                    Box::pin(async move {
                        match f.read_at_now(buf.capacity(), offset).await {
                            Ok(data) => {
                                buf.clear();
                                let n = buf.extend_from_slice(&data);
                                (Ok(n), buf)
                            }
                            Err(e) => (Err(e), buf),
                        }
                    })
                })
            }
            _ => FileBufFuture::op(i.ctx.owned_file(What::ReadInto(buf), i.fd, offset, &i.info)),
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
    pub fn write_at_from(&self, buf: Buffer, offset: u64) -> FileBufFuture<Buffer> {
        if let Err(e) = self.check_positional(true) {
            return FileBufFuture::ready(Err(e), buf);
        }
        let i = &self.inner;
        match i.known.align {
            Some(a) if !a.allows(offset, buf.len()) && !i.known.append => {
                FileBufFuture::lazy(self, buf, move |f, buf| {
                    Box::pin(async move {
                        let r = f.write_split(&buf, offset, a).await;
                        (r, buf)
                    })
                })
            }
            _ => FileBufFuture::op(i.ctx.owned_file(What::Write(buf), i.fd, offset, &i.info)),
        }
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
    pub fn read_vectored_at(&self, bufs: Vec<Buffer>, offset: u64) -> FileBufFuture<Vec<Buffer>> {
        FileBufFuture::lazy(self, bufs, move |f, mut bufs| {
            Box::pin(async move {
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
                match i.known.align {
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
                            .with_controls(f.controls, None)
                            .joined(f.abort.as_ref())
                            .await
                    }
                }
            })
        })
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
    pub fn write_vectored_at(&self, bufs: Vec<Buffer>, offset: u64) -> FileBufFuture<Vec<Buffer>> {
        FileBufFuture::lazy(self, bufs, move |f, bufs| {
            Box::pin(async move {
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
                match i.known.align {
                    Some(a) if !i.known.append && !aligned(a) => {
                        let mut all = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
                        bufs.iter().for_each(|b| all.extend_from_slice(b));
                        let r = f.write_split(&Buffer::from(all), offset, a).await;
                        (r, bufs)
                    }
                    _ => {
                        i.ctx
                            .vectored_file(What::WriteV(bufs), i.fd, offset, &i.info)
                            .with_controls(f.controls, None)
                            .joined(f.abort.as_ref())
                            .await
                    }
                }
            })
        })
    }

    /// The OS error of a call the file was not opened for (EBADF; on Windows
    /// `ERROR_ACCESS_DENIED`), naming the access.
    fn check_access(&self, write: bool) -> io::Result<()> {
        let f = &self.inner.known;
        if (write && !f.writable) || (!write && !f.readable) {
            let what = if write { "writing" } else { "reading" };
            return Err(explained(
                sys::WRONG_ACCESS,
                format!("{} is not opened for {what}", self.inner.path.display()),
            ));
        }
        Ok(())
    }

    /// Checks that the file can be read or written at an offset: opened for it, and not a
    /// FIFO, pipe or socket (ESPIPE, naming the type).
    fn check_positional(&self, write: bool) -> io::Result<()> {
        self.check_access(write)?;
        let t = self.inner.known.file_type;
        if t == c::S_IFIFO || t == c::S_IFSOCK {
            return Err(explained(
                c::ESPIPE,
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
            c::ESPIPE,
            format!(
                "{} is {}: it is read and written in sequence and cannot seek",
                self.inner.path.display(),
                type_name(self.inner.known.file_type)
            ),
        )
    }

    /// Whether reads and writes go at offsets (a regular file or block device), rather
    /// than in sequence (pipes, FIFOs, sockets, terminals and other devices).
    pub(crate) fn is_seekable(&self) -> bool {
        self.inner.known.fd.seekable
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
