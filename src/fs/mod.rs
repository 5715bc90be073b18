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
//! # Knowing that data is in the file
//!
//! A write's future resolving means the OS has the data (in the page cache, unless
//! O_DIRECT). [`File::sync_data`]/[`File::sync_all`] make it durable; [`File::close`]
//! reports the errors some filesystems only report at close. A [`Writer`] must be
//! `close`d: dropped without it, it finishes its writes in the background and only logs
//! an error, and a process that exits first loses them.
//!
//! Work that finishes in the background (a dropped writer's writes, operations whose
//! futures were dropped, the close of a dropped `File`) runs on the context. Wait for it
//! before the program ends:
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
mod hints;
mod path;
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
    file::{File, OpenOptions},
    hints::{Advice, SyncRange},
    path::{
        canonicalize, create_dir, create_dir_all, hard_link, metadata, read_link, remove_dir,
        remove_dir_all, remove_file, rename, set_permissions, symlink, symlink_metadata,
        try_exists,
    },
    reader::{Reader, READ_AHEAD, READ_CHUNK},
    writer::{Writer, WRITE_BEHIND, WRITE_CHUNK},
};

/// The lines of a file: see [`File::lines`].
pub type Lines = futures::io::Lines<Reader>;

/// Chunk size of whole-file reads and copies.
pub(crate) const COPY_CHUNK: usize = 1 << 20;

/// Reads a whole file, like [`std::fs::read`].
///
/// # Errors
/// As [`File::open`] and [`File::read_to_end`].
pub fn read(path: impl AsRef<Path>) -> impl Future<Output = io::Result<Vec<u8>>> + Send + 'static {
    let open = File::open(path);
    async move { open.await?.read_to_end().await }
}

/// Reads a whole file as UTF-8, like [`std::fs::read_to_string`].
///
/// # Errors
/// As [`read`]; `InvalidData` when the contents are not UTF-8.
pub fn read_to_string(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<String>> + Send + 'static {
    let read = read(path);
    async move {
        String::from_utf8(read.await?).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            )
        })
    }
}

/// Writes a whole file, creating or truncating it, like [`std::fs::write`]: in place, so
/// a failure part-way leaves a partly written file, and nothing is flushed to the device.
/// See [`write_atomic`] for all-or-nothing.
///
/// # Errors
/// As [`File::create`] and [`File::write_all_at`].
pub fn write(
    path: impl AsRef<Path>,
    data: impl Into<crate::Buffer>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let (create, data) = (File::create(path), data.into());
    async move {
        let file = create.await?;
        file.write_all_at(data, 0).await?;
        file.close().await
    }
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
/// # Errors
/// `InvalidInput` when `path` is a directory, device, FIFO or socket (a replace would put
/// a regular file in its place); otherwise the OS error of the step that failed.
pub fn write_atomic(
    path: impl AsRef<Path>,
    data: impl Into<crate::Buffer>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
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
}

/// Copies a file, like [`std::fs::copy`] and `cp`: the data is written into the
/// destination itself (created if missing, truncated if not), following a symlink there,
/// so a hard-linked destination changes under every name and a device or FIFO stays what
/// it is. A regular destination gets the source's permission bits; the result is the
/// number of bytes copied. Nothing is flushed to the device, and a failure part-way
/// leaves a partly written destination: for all-or-nothing, use [`copy_with`] with
/// [`CopyOptions::atomic`].
///
/// # Errors
/// As opening, reading and writing; `InvalidInput`, as std, when the source is not a
/// regular file (or a symlink to one), and when source and destination are the same file;
/// `EISDIR` when the destination is a directory.
pub fn copy(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
) -> impl Future<Output = io::Result<u64>> + Send + 'static {
    copy_with(src, dst, CopyOptions::default())
}
