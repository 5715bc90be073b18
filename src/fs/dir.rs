//! [`read_dir`]: a directory as a stream of [`DirEntry`], fetched in batches through the
//! backend.

use std::{
    collections::VecDeque,
    ffi::OsString,
    fmt,
    fs::{FileType, Metadata},
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use futures::Stream;

use crate::{context::op::Operation, Context};

/// Entries fetched by one operation.
pub const READ_DIR_BATCH: usize = 128;

/// Opens a directory for reading, as [`std::fs::read_dir`] (and `tokio::fs::read_dir`).
/// The entries come as a [`Stream`] of [`DirEntry`], without `.` and `..`, fetched
/// [`READ_DIR_BATCH`] at a time through the default context's backend, so a directory of
/// any size is read in bounded memory and never on the polling thread.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let mut entries = caio::fs::read_dir(".").await?;
/// while let Some(entry) = entries.next_entry().await? {
///     println!("{}", entry.path().display());
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::read_dir`]: `NotFound`, `PermissionDenied`, ENOTDIR for a file.
pub fn read_dir(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<ReadDir>> + Send + Sync + 'static {
    crate::fs::Exclusive::new({
        let p = path.as_ref().to_path_buf();
        async move {
            let ctx = Context::global_async().await?;
            let inner = ctx.run(None, move || std::fs::read_dir(p)).await?;
            Ok(ReadDir {
                ctx,
                inner: Some(inner),
                ready: VecDeque::new(),
                fetch: None,
            })
        }
    })
}

/// The directory to go on with (`None` once it is read to the end, and closed) and the
/// entries fetched.
type Batch = (Option<std::fs::ReadDir>, Vec<io::Result<DirEntry>>);

/// The entries of a directory: see [`read_dir`]. An entry that cannot be read is an `Err`
/// item, and the stream goes on, as `std`'s iterator does.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use futures::StreamExt;
/// // A futures::Stream, or next_entry() as tokio has it.
/// let names: Vec<_> = caio::fs::read_dir("/etc")
///     .await?
///     .filter_map(|e| async move { e.ok().map(|e| e.file_name()) })
///     .collect()
///     .await;
/// println!("{} entries", names.len());
/// # Ok(()) }
/// ```
pub struct ReadDir {
    ctx: Context,
    /// Between batches; `None` while one is fetched or after the last.
    inner: Option<std::fs::ReadDir>,
    ready: VecDeque<io::Result<DirEntry>>,
    fetch: Option<crate::fs::Exclusive<Operation<Batch>>>,
}

impl fmt::Debug for ReadDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadDir")
            .field("ready", &self.ready.len())
            .field("fetching", &self.fetch.is_some())
            .finish()
    }
}

impl ReadDir {
    /// The next entry, or `None` at the end: `tokio::fs::ReadDir::next_entry`.
    ///
    /// # Errors
    /// The error of reading the directory or the entry.
    pub async fn next_entry(&mut self) -> io::Result<Option<DirEntry>> {
        futures::future::poll_fn(|cx| self.poll_next_entry(cx)).await
    }

    /// Polls for the next entry: `tokio::fs::ReadDir::poll_next_entry`.
    ///
    /// # Errors
    /// The error of reading the directory or the entry.
    pub fn poll_next_entry(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<io::Result<Option<DirEntry>>> {
        Stream::poll_next(Pin::new(self), cx).map(Option::transpose)
    }
}

/// Reads up to a batch of entries, with the type of each where it comes for free
/// (`d_type`) or by `lstat` where it does not. At the end the directory is closed here,
/// on the backend's thread: no entry keeps it open (std's would).
fn fetch(mut inner: std::fs::ReadDir) -> io::Result<Batch> {
    let mut batch = Vec::with_capacity(READ_DIR_BATCH);
    while batch.len() < READ_DIR_BATCH {
        match inner.next() {
            None => return Ok((None, batch)),
            Some(r) => batch.push(r.map(|e| DirEntry {
                path: e.path(),
                #[cfg(unix)]
                ino: std::os::unix::fs::DirEntryExt::ino(&e),
                file_type: e.file_type().ok(),
            })),
        }
    }
    Ok((Some(inner), batch))
}

impl Drop for ReadDir {
    fn drop(&mut self) {
        // Dropped before its end: the directory is closed on the backend, not here.
        if let Some(inner) = self.inner.take() {
            let close: crate::backend::Call = Box::new(move || {
                drop(inner);
                Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
            });
            self.ctx
                .detach(-1, crate::backend::Meta::Call(close), "closing a directory");
        }
    }
}

impl Stream for ReadDir {
    type Item = io::Result<DirEntry>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<io::Result<DirEntry>>> {
        let this = self.get_mut();
        loop {
            if let Some(e) = this.ready.pop_front() {
                return Poll::Ready(Some(e));
            }
            if this.fetch.is_none() {
                let Some(inner) = this.inner.take() else {
                    return Poll::Ready(None);
                };
                this.fetch = Some(crate::fs::Exclusive::new(
                    this.ctx.run(None, move || fetch(inner)),
                ));
            }
            let fut = this.fetch.as_mut().expect("set above");
            let r = match Pin::new(fut).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            this.fetch = None;
            match r {
                Ok((inner, batch)) => {
                    this.inner = inner;
                    this.ready.extend(batch);
                }
                // The backend could not run the fetch: the directory is lost with it.
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// One entry of a directory, as `tokio::fs::DirEntry`.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let mut entries = caio::fs::read_dir(".").await?;
/// while let Some(entry) = entries.next_entry().await? {
///     if entry.file_type().await?.is_file() {
///         let len = entry.metadata().await?.len();
///         println!("{:?}: {len} bytes (inode {})", entry.file_name(), entry.ino());
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DirEntry {
    /// The directory's path joined with the entry's name.
    path: PathBuf,
    #[cfg(unix)]
    ino: u64,
    /// Known when the directory said it (`d_type`) or the fetch could `lstat` it.
    file_type: Option<FileType>,
}

impl fmt::Debug for DirEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DirEntry").field(&self.path).finish()
    }
}

impl DirEntry {
    /// The directory's path joined with the entry's name.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The entry's name (any bytes but `/` and NUL; not always UTF-8).
    pub fn file_name(&self) -> OsString {
        self.path.file_name().unwrap_or_default().to_os_string()
    }

    /// The entry's inode number, as the directory reports it.
    #[cfg(unix)]
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The entry's type, not following symlinks. Known from the directory in almost every
    /// case (it came with the batch); otherwise an `lstat` through the backend.
    ///
    /// # Errors
    /// The error of that `lstat` (the entry was removed meanwhile, say).
    pub fn file_type(&self) -> impl Future<Output = io::Result<FileType>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let (known, path) = (self.file_type, self.path.clone());
            async move {
                match known {
                    Some(t) => Ok(t),
                    None => {
                        let lstat = move || std::fs::symlink_metadata(path).map(|m| m.file_type());
                        Context::global_async().await?.run(None, lstat).await
                    }
                }
            }
        })
    }

    /// The entry's metadata, not following symlinks (`lstat` through the backend), as
    /// [`std::fs::DirEntry::metadata`].
    ///
    /// # Errors
    /// As [`std::fs::DirEntry::metadata`].
    pub fn metadata(&self) -> impl Future<Output = io::Result<Metadata>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let path = self.path.clone();
            async move {
                Context::global_async()
                    .await?
                    .run(None, move || std::fs::symlink_metadata(path))
                    .await
            }
        })
    }
}
