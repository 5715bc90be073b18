//! The path functions of `std::fs` and `tokio::fs`, each run through the process-wide
//! default [`Context`]'s backend: on its threads (the pool that `thread` is, the fallback
//! pool of `linux`), inline for `blocking`. Never on the thread that polls, so a hung NFS
//! server or a slow FUSE filesystem stalls that one operation, not the executor.
//!
//! Each has the name, arguments, result and errors of its `std::fs` namesake (the same
//! `io::ErrorKind` and errno for the same case), because each runs that very function or
//! the one system call it makes.

use std::{
    fs::{Metadata, Permissions},
    future::Future,
    io,
    path::{Path, PathBuf},
};

use crate::{backend::Meta, Context};

/// Runs `f` on the default context's backend. `Sync`, as every `caio::fs` future (see
/// [`Exclusive`](crate::fs::Exclusive)).
pub(crate) fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> impl Future<Output = io::Result<T>> + Send + Sync + 'static {
    crate::fs::Exclusive::new(async move { Context::global_async().await?.run(None, f).await })
}

/// Runs a typed metadata operation (built when polled) on the default context's backend;
/// `Sync` as [`off_thread`].
fn meta(
    build: impl FnOnce() -> io::Result<Meta> + Send + 'static,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    crate::fs::Exclusive::new(async move {
        let m = build()?;
        Context::global_async().await?.meta_unit(-1, m, None).await
    })
}

/// The path as an owned `PathBuf`, for a `'static` future.
fn owned(p: impl AsRef<Path>) -> PathBuf {
    p.as_ref().to_path_buf()
}

/// Metadata of a path, following symlinks, as [`std::fs::metadata`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let m = caio::fs::metadata("Cargo.toml").await?;
/// println!("{} bytes, read-only: {}", m.len(), m.permissions().readonly());
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::metadata`]: `NotFound`, `PermissionDenied`, `NotADirectory` for a path
/// through a file, ELOOP for a symlink loop.
pub fn metadata(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<Metadata>> + Send + Sync + 'static {
    let p = owned(path);
    off_thread(move || std::fs::metadata(p))
}

/// Metadata of a path, not following a final symlink, as [`std::fs::symlink_metadata`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let m = caio::fs::symlink_metadata("/proc/self/exe").await?;
/// assert!(m.file_type().is_symlink());
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::symlink_metadata`].
pub fn symlink_metadata(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<Metadata>> + Send + Sync + 'static {
    let p = owned(path);
    off_thread(move || std::fs::symlink_metadata(p))
}

/// Whether a path exists (following symlinks), as [`Path::try_exists`]: `Ok(false)` for a
/// missing path or a broken symlink, an error when it cannot be told (permission denied).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// if !caio::fs::try_exists("config.toml").await? {
///     caio::fs::write("config.toml", "").await?;
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`Path::try_exists`].
pub fn try_exists(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<bool>> + Send + Sync + 'static {
    let p = owned(path);
    off_thread(move || p.try_exists())
}

/// Renames a file or directory, replacing `to` if it exists, as [`std::fs::rename`]
/// (`rename(2)`: atomic within one filesystem).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::rename("report.tmp", "report.txt").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::rename`]: `NotFound`, EXDEV across filesystems, EISDIR/ENOTDIR when one is
/// a directory and the other is not, ENOTEMPTY.
pub fn rename(
    from: impl AsRef<Path>,
    to: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let (from, to) = (owned(from), owned(to));
    meta(move || {
        Ok(Meta::Rename {
            from: crate::sys::os_path(&from)?,
            to: crate::sys::os_path(&to)?,
        })
    })
}

/// Removes a file or symlink (not a directory), as [`std::fs::remove_file`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::remove_file("stale.lock").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::remove_file`]: `NotFound`; EISDIR for a directory.
pub fn remove_file(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let p = owned(path);
    meta(move || {
        Ok(Meta::Unlink {
            path: crate::sys::os_path(&p)?,
            dir: false,
        })
    })
}

/// Removes an empty directory, as [`std::fs::remove_dir`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::remove_dir("empty-dir").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::remove_dir`]: `NotFound`, ENOTEMPTY, ENOTDIR for a file.
pub fn remove_dir(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let p = owned(path);
    meta(move || {
        Ok(Meta::Unlink {
            path: crate::sys::os_path(&p)?,
            dir: true,
        })
    })
}

/// Removes a directory and everything in it, as [`std::fs::remove_dir_all`] (which does
/// not follow symlinks inside it). The whole walk is one operation on the backend.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::remove_dir_all("target/tmp-cache").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::remove_dir_all`].
pub fn remove_dir_all(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let p = owned(path);
    off_thread(move || std::fs::remove_dir_all(p))
}

/// Creates a directory (mode 0o777 less the umask), as [`std::fs::create_dir`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::create_dir("out").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::create_dir`]: `AlreadyExists`, `NotFound` for a missing parent.
pub fn create_dir(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let p = owned(path);
    meta(move || {
        Ok(Meta::Mkdir {
            path: crate::sys::os_path(&p)?,
            mode: 0o777,
        })
    })
}

/// Creates a directory and every missing parent, as [`std::fs::create_dir_all`]: one
/// operation on the backend.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::create_dir_all("out/logs/2026").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::create_dir_all`].
pub fn create_dir_all(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let p = owned(path);
    off_thread(move || std::fs::create_dir_all(p))
}

/// Makes `link` a new name of the file `original`, as [`std::fs::hard_link`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::hard_link("data.db", "data.db.snapshot").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::hard_link`]: `AlreadyExists`, EXDEV across filesystems.
pub fn hard_link(
    original: impl AsRef<Path>,
    link: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let (original, link) = (owned(original), owned(link));
    off_thread(move || std::fs::hard_link(original, link))
}

/// Makes `link` a symbolic link to `original`, as [`std::os::unix::fs::symlink`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::symlink("releases/v2", "current").await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::os::unix::fs::symlink`]: `AlreadyExists`.
#[cfg(unix)]
pub fn symlink(
    original: impl AsRef<Path>,
    link: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let (original, link) = (owned(original), owned(link));
    off_thread(move || std::os::unix::fs::symlink(original, link))
}

/// Makes `link` a symbolic link to the file `original`, as
/// `std::os::windows::fs::symlink_file` and tokio's (Windows only: a link there is made
/// for a file or for a directory).
///
/// # Errors
/// As `std::os::windows::fs::symlink_file`: `AlreadyExists`, `PermissionDenied` without
/// the right to make links.
#[cfg(windows)]
pub fn symlink_file(
    original: impl AsRef<Path>,
    link: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let (original, link) = (owned(original), owned(link));
    off_thread(move || std::os::windows::fs::symlink_file(original, link))
}

/// Makes `link` a symbolic link to the directory `original`, as
/// `std::os::windows::fs::symlink_dir` and tokio's (Windows only).
///
/// # Errors
/// As `std::os::windows::fs::symlink_dir`: `AlreadyExists`, `PermissionDenied` without
/// the right to make links.
#[cfg(windows)]
pub fn symlink_dir(
    original: impl AsRef<Path>,
    link: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let (original, link) = (owned(original), owned(link));
    off_thread(move || std::os::windows::fs::symlink_dir(original, link))
}

/// What a symbolic link points to, as [`std::fs::read_link`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let target = caio::fs::read_link("current").await?;
/// println!("current -> {}", target.display());
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::read_link`]: EINVAL when the path is not a symlink.
pub fn read_link(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<PathBuf>> + Send + Sync + 'static {
    let p = owned(path);
    off_thread(move || std::fs::read_link(p))
}

/// The absolute path with every symlink, `.` and `..` resolved, as
/// [`std::fs::canonicalize`] (`realpath(3)`).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let abs = caio::fs::canonicalize("./src/../Cargo.toml").await?;
/// assert!(abs.is_absolute());
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::canonicalize`]: `NotFound`, ELOOP.
pub fn canonicalize(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<PathBuf>> + Send + Sync + 'static {
    let p = owned(path);
    off_thread(move || std::fs::canonicalize(p))
}

/// Changes a path's permissions (following symlinks), as [`std::fs::set_permissions`].
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use std::os::unix::fs::PermissionsExt;
/// caio::fs::set_permissions("run.sh", std::fs::Permissions::from_mode(0o755)).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`std::fs::set_permissions`]: `NotFound`, EPERM when not the owner.
pub fn set_permissions(
    path: impl AsRef<Path>,
    perm: Permissions,
) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
    let p = owned(path);
    off_thread(move || std::fs::set_permissions(p, perm))
}

/// Options for creating directories, as `tokio::fs::DirBuilder` (and
/// [`std::fs::DirBuilder`]): whether missing parents are created too, and the permission
/// bits. The `mkdir` calls run on the backend.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// caio::fs::DirBuilder::new()
///     .recursive(true)
///     .mode(0o750)
///     .create("var/cache/app")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DirBuilder {
    recursive: bool,
    mode: u32,
}

impl Default for DirBuilder {
    fn default() -> DirBuilder {
        DirBuilder::new()
    }
}

impl DirBuilder {
    /// Not recursive, mode `0o777` (less the umask).
    pub fn new() -> DirBuilder {
        DirBuilder {
            recursive: false,
            mode: 0o777,
        }
    }

    /// Create the missing parents too; then an existing directory is no error.
    pub fn recursive(&mut self, recursive: bool) -> &mut Self {
        self.recursive = recursive;
        self
    }

    /// The permission bits of the directories created (less the umask). Unix only, as
    /// std's `DirBuilderExt::mode`.
    #[cfg(unix)]
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = mode;
        self
    }

    /// Creates the directory at `path`.
    ///
    /// # Errors
    /// As [`std::fs::DirBuilder::create`]: `AlreadyExists` (not recursive), `NotFound` for a
    /// missing parent (not recursive), `PermissionDenied`.
    pub fn create(
        &self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
        let (p, recursive, mode) = (owned(path), self.recursive, self.mode);
        off_thread(move || {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(recursive);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, mode);
            #[cfg(windows)]
            let _ = mode;
            b.create(p)
        })
    }
}
