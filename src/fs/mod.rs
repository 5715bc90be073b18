//! The file layer: [`File`], [`OpenOptions`], buffered readers and writers, lines,
//! chunks, and whole-file helpers like `std::fs`'s.
//!
//! Sequential readers, writers and copies keep several operations in flight (read-ahead,
//! write-behind), so streaming runs near the device's bandwidth.

mod ahead;
mod chunks;
mod copy;
mod file;
mod reader;
mod writer;

use std::{future::Future, io, path::Path};

pub use self::{
    chunks::{Chunks, CHUNKS_AHEAD},
    copy::{copy_with, CopyOptions},
    file::{File, OpenOptions},
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

/// Writes a whole file, creating or truncating it, like [`std::fs::write`].
///
/// # Errors
/// As [`File::create`] and [`File::write_all_at`].
pub fn write(
    path: impl AsRef<Path>,
    data: impl Into<crate::Buffer>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let (create, data) = (File::create(path), data.into());
    async move { create.await?.write_all_at(data, 0).await }
}

/// Copies a file, like [`std::fs::copy`]: the destination gets the source's permission
/// bits, and the result is the number of bytes copied. The copy is written to a temporary
/// file beside the destination and renamed over it at the end, so a failed copy leaves no
/// half-written destination behind.
///
/// # Errors
/// As opening, reading and writing; `InvalidInput` when source and destination are the
/// same file; `EISDIR` when either is a directory.
pub fn copy(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
) -> impl Future<Output = io::Result<u64>> + Send + 'static {
    copy_with(src, dst, CopyOptions::default())
}
