//! Whole-file copy with reads and writes in flight together.

use crate::sys::{self, c};
use std::{
    fmt,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::Poll,
};

use futures::{stream::FuturesUnordered, StreamExt};

use crate::{
    fs::{
        ahead::{self, ReadAhead},
        atomic::Replacement,
        File, OpenOptions, COPY_CHUNK,
    },
    Buffer, Context,
};

type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// How [`copy_with`] copies.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use caio::fs::{copy_with, CopyOptions};
/// let opts = CopyOptions::new().atomic(true).direct(true);
/// copy_with("image.raw", "backup/image.raw", opts).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct CopyOptions {
    /// Open both files with O_DIRECT (default off).
    pub direct: bool,
    /// The context to run on (default: the process-wide one).
    pub context: Option<Context>,
    /// Bytes per read and write (default 1 MiB; at most 1 GiB).
    pub chunk: usize,
    /// Reads, and writes, in flight at once (default 8 each; at most 4096).
    pub depth: usize,
    /// Called with the bytes copied so far after every write.
    pub progress: Option<Progress>,
    /// Replace the destination atomically (default off): see [`CopyOptions::atomic`].
    pub atomic: bool,
}

impl CopyOptions {
    /// The defaults: in place, page cache, the process-wide context, 1 MiB chunks, 8 of
    /// each in flight.
    pub fn new() -> CopyOptions {
        CopyOptions::default()
    }

    /// Atomic replacement instead of writing in place. The copy goes to a new file beside
    /// the destination (unnamed until the end, with `O_TMPFILE`, where the filesystem can),
    /// which is flushed (`fsync`), renamed over the destination, and the directory is
    /// flushed: after a crash the destination is either the old file or the whole copy,
    /// and a failed or dropped copy leaves the old file and no temporary one.
    ///
    /// The destination must be a regular file or not exist: a device, FIFO or directory is
    /// refused (an error of kind `InvalidInput`). A symlink is followed and its target
    /// replaced. The replacement is a new file: hard links to the old one keep the old
    /// contents, and its owner is the caller.
    pub fn atomic(mut self, on: bool) -> CopyOptions {
        self.atomic = on;
        self
    }

    /// Open both files with O_DIRECT.
    pub fn direct(mut self, on: bool) -> CopyOptions {
        self.direct = on;
        self
    }

    /// Run on `ctx` rather than the process-wide context.
    pub fn context(mut self, ctx: Context) -> CopyOptions {
        self.context = Some(ctx);
        self
    }
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            direct: false,
            context: None,
            chunk: COPY_CHUNK,
            depth: 8,
            progress: None,
            atomic: false,
        }
    }
}

impl fmt::Debug for CopyOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyOptions")
            .field("direct", &self.direct)
            .field("context", &self.context)
            .field("chunk", &self.chunk)
            .field("depth", &self.depth)
            .field("progress", &self.progress.is_some())
            .field("atomic", &self.atomic)
            .finish()
    }
}

/// [`copy`](crate::fs::copy) with options: O_DIRECT, atomic replacement, the context,
/// chunk size, depth and a progress callback.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use caio::fs::{copy_with, CopyOptions};
/// // All or nothing: the target is the old file or the whole copy, even after a crash.
/// copy_with("build/app", "bin/app", CopyOptions::new().atomic(true)).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`copy`](crate::fs::copy); `InvalidInput` for a chunk of 0 or over 1 GiB, or a depth
/// of 0 or over 4096; with [`atomic`](CopyOptions::atomic), `InvalidInput` for a
/// destination that is not a regular file.
pub fn copy_with(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    opts: CopyOptions,
) -> impl Future<Output = io::Result<u64>> + Send + Sync + 'static {
    crate::fs::Exclusive::new({
        let (src, dst) = (src.as_ref().to_path_buf(), dst.as_ref().to_path_buf());
        async move { copy_now(src, dst, opts).await }
    })
}

fn open_opts(opts: &CopyOptions, ctx: &Context) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.direct(opts.direct).context(ctx.clone());
    o
}

async fn copy_now(src: PathBuf, dst: PathBuf, opts: CopyOptions) -> io::Result<u64> {
    ahead::check(opts.chunk, opts.depth)?;
    // std on Windows converts both paths before it calls CopyFileExW: a NUL in either is
    // its first error.
    #[cfg(windows)]
    {
        sys::os_path(&src)?;
        sys::os_path(&dst)?;
    }
    let ctx = match &opts.context {
        Some(c) => c.clone(),
        None => Context::global_async().await?,
    };
    // As std: only a regular file (or a symlink to one) is copied, and errors come in
    // std's order (the open's first). A FIFO is refused before the open, which would
    // wait for a writer. Both paths are looked at in one operation.
    let (s, d) = (src.clone(), dst.clone());
    let (src_meta, dst_meta, same) = ctx
        .run(None, move || {
            let src_meta = std::fs::metadata(&s);
            // What the data goes into: the destination itself, through a symlink, as std.
            let dst_meta = match std::fs::metadata(&d) {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            };
            let same = match (&src_meta, &dst_meta) {
                (Ok(a), Ok(Some(b))) => {
                    let src_id = sys::file_id(&s, a);
                    src_id.is_some() && src_id == sys::file_id(&d, b)
                }
                _ => false,
            };
            Ok((src_meta, dst_meta, same))
        })
        .await?;
    if src_meta.is_ok_and(|m| matches!(sys::type_bits(&m), c::S_IFIFO | c::S_IFSOCK)) {
        return Err(not_regular());
    }
    let input = open_opts(&opts, &ctx)
        .read(true)
        .open(&src)
        .await
        .map_err(|e| match e.raw_os_error() {
            Some(c::EISDIR) => not_regular(),
            _ => e,
        })?;
    let src_meta = input.metadata().await.and_then(regular)?;
    let perm = src_meta.permissions();
    let dst_meta = dst_meta?;
    if let Some(m) = &dst_meta {
        if m.is_dir() {
            return Err(onto_directory());
        }
        if same {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} and {} are the same file", src.display(), dst.display()),
            ));
        }
    }
    if opts.atomic {
        let rep = Replacement::begin(&ctx, &dst, opts.direct).await?;
        return match pump(&input, &rep.file, &opts).await {
            Ok(n) => rep.commit(Some(perm)).await.map(|()| n),
            Err(e) => {
                rep.abort().await;
                Err(e)
            }
        };
    }
    let mut output = open_opts(&opts, &ctx);
    output.write(true).create(true).truncate(true);
    #[cfg(unix)]
    output.mode(std::os::unix::fs::PermissionsExt::mode(&perm));
    let output = output.open(&dst).await?;
    let copied = pump(&input, &output, &opts).await?;
    // As std: the permission bits follow the source, on a regular file only (a device or
    // FIFO written into keeps its own).
    if dst_meta.as_ref().is_none_or(|m| m.is_file()) {
        output.set_permissions(perm).await?;
    }
    output.close().await?;
    Ok(copied)
}

/// std's error for a copy source that is not a regular file.
#[cfg(unix)]
fn not_regular() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the source path is neither a regular file nor a symlink to a regular file",
    )
}

/// std's error for a copy source that is not a regular file: on Windows, that of
/// `CopyFileExW` on a directory, `ERROR_ACCESS_DENIED`.
#[cfg(windows)]
fn not_regular() -> io::Error {
    io::Error::from_raw_os_error(sys::WRONG_ACCESS)
}

/// std's error for a copy onto a directory: EISDIR, as the open for writing gives it; on
/// Windows, CopyFileExW's `ERROR_ACCESS_DENIED`.
fn onto_directory() -> io::Error {
    #[cfg(unix)]
    return io::Error::from_raw_os_error(c::EISDIR);
    #[cfg(windows)]
    return io::Error::from_raw_os_error(sys::WRONG_ACCESS);
}

/// The metadata of a regular file, else std's error for a copy source.
fn regular(m: std::fs::Metadata) -> io::Result<std::fs::Metadata> {
    if m.is_file() {
        Ok(m)
    } else {
        Err(not_regular())
    }
}

type WriteFut = Pin<Box<dyn Future<Output = io::Result<usize>> + Send>>;

/// Reads ahead and writes behind, `depth` of each in flight.
async fn pump(input: &File, output: &File, opts: &CopyOptions) -> io::Result<u64> {
    let mut reads = ReadAhead::new(input.clone(), opts.chunk, opts.depth, 0);
    // Into a device or FIFO, in order: one write at a time.
    let write_depth = if output.is_seekable() { opts.depth } else { 1 };
    let mut writes: FuturesUnordered<WriteFut> = FuturesUnordered::new();
    let (mut reading, mut copied) = (true, 0u64);
    loop {
        enum Event {
            Read(Option<io::Result<(u64, Buffer)>>),
            Wrote(io::Result<usize>),
        }
        let event = futures::future::poll_fn(|cx| {
            if let Poll::Ready(Some(r)) = writes.poll_next_unpin(cx) {
                return Poll::Ready(Event::Wrote(r));
            }
            if reading && writes.len() < write_depth {
                if let Poll::Ready(r) = reads.poll_next(cx) {
                    return Poll::Ready(Event::Read(r));
                }
            }
            if !reading && writes.is_empty() {
                return Poll::Ready(Event::Read(None));
            }
            Poll::Pending
        })
        .await;
        let failed = match event {
            Event::Wrote(Err(e)) | Event::Read(Some(Err(e))) => e,
            Event::Wrote(Ok(n)) => {
                copied += n as u64;
                if let Some(p) = &opts.progress {
                    p(copied);
                }
                continue;
            }
            Event::Read(None) if writes.is_empty() => return Ok(copied),
            Event::Read(None) => {
                reading = false;
                continue;
            }
            Event::Read(Some(Ok((off, b)))) => {
                if !b.is_empty() {
                    let (out, n) = (output.clone(), b.len());
                    writes.push(Box::pin(
                        async move { out.write_chunk(b, off).await.map(|_| n) },
                    ));
                }
                continue;
            }
        };
        // Stop, but let the writes already under way finish first (their errors are the
        // same story): once the copy returns, the destination changes no more, and a copy
        // in place holds every chunk before the one that failed, as `std::fs::copy` would.
        reads.stop();
        while writes.next().await.is_some() {}
        return Err(failed);
    }
}
