//! The file layer: [`File`], [`OpenOptions`], buffered readers and writers, lines,
//! chunks, whole-file helpers, and the rest of the `tokio::fs` surface with the same names
//! and semantics, so that a program can replace `tokio::fs` with `caio::fs`.
//!
//! Sequential readers, writers and copies keep several operations in flight (read-ahead,
//! write-behind), so streaming runs near the device's bandwidth.
//!
//! # Where each call runs
//!
//! Every future here does its work when polled, not when created, and no function makes
//! a blocking system call on the thread that polls it: reads, writes and syncs go to the
//! context's backend (kernel AIO for `linux`), and every metadata call (open, close,
//! stat, truncate, rename, readdir, chmod...) runs on the backend's threads. The one
//! exception is the `blocking` implementation, whose point is to run everything inline.
//! The path functions use the process-wide default context ([`Context::global`]).
//!
//! # A drop-in for `tokio::fs`
//!
//! Every function and type of `tokio::fs` is here with the same name, arguments and
//! errors, and [`File`] has tokio's cursor I/O (`AsyncRead`, `AsyncWrite`, `AsyncSeek`
//! with the `tokio` feature; futures' always) with tokio's buffering: a write is accepted
//! into a buffer and finished in the background, and `flush`, `sync_all` and `sync_data`
//! report its error. Positional calls (`read_at`, `write_at`...) live beside the cursor
//! and neither use nor move it. The README's "Migrating from tokio::fs" lists what caio
//! adds and where it differs on purpose.
//!
//! # Knowing that data is in the file
//!
//! A write's future resolving means the OS has the data (in the page cache, unless
//! O_DIRECT). [`File::sync_data`]/[`File::sync_all`] make it durable; [`File::close`]
//! reports the errors some filesystems only report at close.
//!
//! A `File` or [`Writer`] dropped with writes accepted and not finished finishes them in
//! the background, as tokio's `File` does, and a normal exit of the process (returning
//! from `main`, `std::process::exit`) waits for them, at most [`EXIT_WAIT`]. Their errors
//! can only be logged: `flush` (or `close` for a writer) before the drop is how to see
//! them.
//!
//! Other work finishes in the background too (operations whose futures were dropped,
//! the close of a dropped `File`). To wait for all of it:
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! // ... caio::fs and files opened without .context(..) use the default context ...
//! caio::Context::global()?.wait_idle().await;
//! # Ok(()) }
//! ```
//!
//! # Pipes, FIFOs, terminals and devices
//!
//! [`Reader`], [`Writer`], [`File::lines`] and [`File::chunks`] read and write them in
//! sequence, one operation at a time, off the polling thread (`File::open("/dev/stdin")`
//! for standard input). [`File::read_at`] and [`File::write_at`] on a pipe, FIFO or socket
//! fail with ESPIPE and a message that names the type.

mod ahead;
mod atomic;
mod chunks;
mod copy;
mod dir;
mod file;
pub(crate) mod finish;
mod hints;
mod path;
mod read_many;
mod reader;
#[cfg(feature = "tokio")]
mod tokio_io;
mod writer;

use std::{future::Future, io, path::Path};

use crate::Context;

pub use self::{
    chunks::{Chunks, CHUNKS_AHEAD},
    copy::{copy_with, CopyOptions},
    dir::{read_dir, DirEntry, ReadDir, READ_DIR_BATCH},
    file::{File, FileBufFuture, FileFuture, OpenOptions, DEFAULT_MAX_BUF_SIZE},
    finish::EXIT_WAIT,
    hints::{Advice, SyncRange},
    path::{
        canonicalize, create_dir, create_dir_all, hard_link, metadata, read_link, remove_dir,
        remove_dir_all, remove_file, rename, set_permissions, symlink_metadata, try_exists,
        DirBuilder,
    },
    read_many::{ReadMany, ReadManyOptions},
    reader::{Reader, READ_AHEAD, READ_CHUNK},
    writer::{Writer, WRITE_BEHIND, WRITE_CHUNK},
};
#[cfg(unix)]
pub use path::symlink;
#[cfg(windows)]
pub use path::{symlink_dir, symlink_file};

/// The lines of a file: see [`File::lines`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use futures::StreamExt;
/// let mut lines: caio::fs::Lines = caio::File::open("app.log").await?.lines();
/// while let Some(line) = lines.next().await {
///     println!("{}", line?);
/// }
/// # Ok(()) }
/// ```
pub type Lines = futures::io::Lines<Reader>;

/// Chunk size of whole-file reads and copies.
pub(crate) const COPY_CHUNK: usize = 1 << 20;

/// Reads a whole file, like [`std::fs::read`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let bytes = caio::fs::read("Cargo.toml").await?;
/// println!("{} bytes", bytes.len());
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`File::open`] and [`File::read_to_vec`].
pub fn read(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<Vec<u8>>> + Send + Sync + 'static {
    crate::fs::Exclusive::new({
        let open = File::open(path);
        async move { open.await?.read_to_vec().await }
    })
}

/// Reads a whole file as UTF-8, like [`std::fs::read_to_string`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let text = caio::fs::read_to_string("Cargo.toml").await?;
/// println!("{} lines", text.lines().count());
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`read`]; `InvalidData` when the contents are not UTF-8.
pub fn read_to_string(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<String>> + Send + Sync + 'static {
    crate::fs::Exclusive::new({
        let read = read(path);
        async move {
            String::from_utf8(read.await?).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                )
            })
        }
    })
}

/// Writes a whole file, creating or truncating it, like [`std::fs::write`]: in place, so
/// a failure part-way leaves a partly written file, and nothing is flushed to the device.
/// See [`write_atomic`] for all-or-nothing.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::write("hello.txt", "hello\n").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`File::create`] and [`File::write_all_at`].
pub fn write(
    path: impl AsRef<Path>,
    data: impl Into<crate::Buffer>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    crate::fs::Exclusive::new({
        let (create, data) = (File::create(path), data.into());
        async move {
            let file = create.await?;
            file.write_all_at(data, 0).await?;
            file.close().await
        }
    })
}

/// Replaces a file's contents atomically: the data is written to a new file beside
/// `path`, flushed to the device (`fsync`), renamed over `path`, and the directory is
/// flushed. After a crash `path` is either the old file or the whole new one; after a
/// failure, or if the future is dropped, it is the old file and no temporary file
/// remains. The new file keeps the old one's permissions (a new one gets `0o666` less the
/// umask).
///
/// A symlink at `path` is followed and its target replaced. Hard links to the old file
/// keep the old contents: the replacement is a new file.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// // Readers see the old settings or the new ones, never half of each.
/// caio::fs::write_atomic("settings.toml", "threads = 4\n").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// `InvalidInput` when `path` is a directory, device, FIFO or socket (a replace would put
/// a regular file in its place); otherwise the OS error of the step that failed.
pub fn write_atomic(
    path: impl AsRef<Path>,
    data: impl Into<crate::Buffer>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    crate::fs::Exclusive::new({
        let (path, data) = (path.as_ref().to_path_buf(), data.into());
        async move {
            let ctx = Context::global_async().await?;
            let rep = atomic::Replacement::begin(&ctx, &path, false).await?;
            match rep.file.write_all_at(data, 0).await {
                Ok(()) => rep.commit(None).await,
                Err(e) => {
                    rep.abort().await;
                    Err(e)
                }
            }
        }
    })
}

/// Copies a file, like [`std::fs::copy`] and `cp`: the data is written into the
/// destination itself (created if missing, truncated if not), following a symlink there,
/// so a hard-linked destination changes under every name and a device or FIFO stays what
/// it is. A regular destination gets the source's permission bits; the result is the
/// number of bytes copied. Nothing is flushed to the device, and a failure part-way
/// leaves a partly written destination: for all-or-nothing, use [`copy_with`] with
/// [`CopyOptions::atomic`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let n = caio::fs::copy("data.db", "data.db.bak").await?;
/// println!("copied {n} bytes");
/// # Ok(()) }
/// ```
///
/// # Errors
/// As opening, reading and writing; `InvalidInput`, as std, when the source is not a
/// regular file (or a symlink to one), and when source and destination are the same file;
/// `EISDIR` when the destination is a directory.
pub fn copy(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
) -> impl Future<Output = io::Result<u64>> + Send + Sync + 'static {
    copy_with(src, dst, CopyOptions::default())
}

/// A future that is `Sync` because a shared reference to it allows nothing: the futures
/// of `caio::fs` are `Send + Sync`, as tokio's are, though what they hold while they run
/// (an operation's state) is only `Send`.
#[derive(Debug)]
pub(crate) struct Exclusive<F>(F);

impl<F> Exclusive<F> {
    pub(crate) fn new(f: F) -> Exclusive<F> {
        Exclusive(f)
    }
}

// SAFETY: nothing is reachable through `&Exclusive<F>`: it has no method taking `&self`
// and no field that is public, so sharing one between threads shares no access to `F`.
// `F` is only touched through `Pin<&mut Self>` (one thread at a time), and sent with the
// whole, which `F: Send` allows.
unsafe impl<F: Send> Sync for Exclusive<F> {}

impl<F: Future> Future for Exclusive<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // SAFETY: structural pinning: `F` is never moved out of `self`, and `Exclusive`
        // has no `Drop` or `Unpin` impl of its own that could move it.
        unsafe { self.map_unchecked_mut(|s| &mut s.0) }.poll(cx)
    }
}
