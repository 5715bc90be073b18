//! Whole-file copy with reads and writes in flight together.

use std::{
    fmt,
    future::Future,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::Poll,
};

use futures::{stream::FuturesUnordered, StreamExt};

use crate::{
    fs::{ahead::ReadAhead, File, OpenOptions, COPY_CHUNK},
    sys, Buffer, Context,
};

type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// How [`copy_with`] copies.
#[derive(Clone)]
pub struct CopyOptions {
    /// Open both files with O_DIRECT (default off).
    pub direct: bool,
    /// The context to run on (default: the process-wide one).
    pub context: Option<Context>,
    /// Bytes per read and write (default 1 MiB).
    pub chunk: usize,
    /// Reads, and writes, in flight at once (default 8 each).
    pub depth: usize,
    /// Called with the bytes copied so far after every write.
    pub progress: Option<Progress>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            direct: false,
            context: None,
            chunk: COPY_CHUNK,
            depth: 8,
            progress: None,
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
            .finish()
    }
}

/// Removes the temporary file unless the copy succeeded.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// [`copy`](crate::fs::copy) with options: O_DIRECT, the context, chunk size, depth and a
/// progress callback.
///
/// # Errors
/// As [`copy`](crate::fs::copy); `InvalidInput` for a chunk or depth of 0.
pub fn copy_with(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    opts: CopyOptions,
) -> impl Future<Output = io::Result<u64>> + Send + 'static {
    let (src, dst) = (src.as_ref().to_path_buf(), dst.as_ref().to_path_buf());
    async move { copy_now(&src, &dst, opts).await }
}

fn open_opts(opts: &CopyOptions) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.direct(opts.direct);
    if let Some(c) = &opts.context {
        o.context(c.clone());
    }
    o
}

async fn copy_now(src: &Path, dst: &Path, opts: CopyOptions) -> io::Result<u64> {
    if opts.chunk == 0 || opts.depth == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "copy chunk and depth must be at least 1",
        ));
    }
    let input = open_opts(&opts).read(true).open(src).await?;
    let perms = std::fs::metadata(src)?.permissions();
    if let Ok(meta) = std::fs::metadata(dst) {
        if meta.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        }
        use std::os::unix::fs::MetadataExt;
        let same = (meta.dev(), meta.ino()) == sys::file_id(input.as_raw_fd())?;
        if same {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} and {} are the same file", src.display(), dst.display()),
            ));
        }
    }
    let name = dst.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", dst.display()),
        )
    })?;
    let dir = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = dir.join(format!(
        ".{}.caio-copy-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let output = open_opts(&opts)
        .write(true)
        .create_new(true)
        .open(&temp)
        .await?;
    let mut guard = TempGuard(Some(temp.clone()));
    let copied = pump(&input, &output, &opts).await?;
    std::fs::set_permissions(&temp, perms)?;
    std::fs::rename(&temp, dst)?;
    guard.0 = None;
    Ok(copied)
}

type WriteFut = Pin<Box<dyn Future<Output = io::Result<usize>> + Send>>;

/// Reads ahead and writes behind, `depth` of each in flight.
async fn pump(input: &File, output: &File, opts: &CopyOptions) -> io::Result<u64> {
    let mut reads = ReadAhead::new(input.clone(), opts.chunk, opts.depth, 0);
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
            if reading && writes.len() < opts.depth {
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
        match event {
            Event::Wrote(r) => {
                copied += r? as u64;
                if let Some(p) = &opts.progress {
                    p(copied);
                }
            }
            Event::Read(None) if writes.is_empty() => return Ok(copied),
            Event::Read(None) => reading = false,
            Event::Read(Some(r)) => {
                let (off, b) = r?;
                if !b.is_empty() {
                    let (out, n) = (output.clone(), b.len());
                    writes.push(Box::pin(async move {
                        out.write_all_now(b, off).await.map(|_| n)
                    }));
                }
            }
        }
    }
}
