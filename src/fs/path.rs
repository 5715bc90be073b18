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

use crate::{backend::Meta, fs::file::cstring, Context};

/// Runs `f` on the default context's backend.
pub(crate) async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    Context::global_async().await?.run(None, f).await
}

/// Runs a typed metadata operation (built when polled) on the default context's backend.
async fn meta(build: impl FnOnce() -> io::Result<Meta> + Send + 'static) -> io::Result<()> {
    let m = build()?;
    Context::global_async().await?.meta_unit(-1, m, None).await
}

/// The path as an owned `PathBuf`, for a `'static` future.
fn owned(p: impl AsRef<Path>) -> PathBuf {
    p.as_ref().to_path_buf()
}

/// Metadata of a path, following symlinks, as [`std::fs::metadata`].
///
/// # Errors
/// As [`std::fs::metadata`]: `NotFound`, `PermissionDenied`, `NotADirectory` for a path
/// through a file, ELOOP for a symlink loop.
pub fn metadata(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<Metadata>> + Send + 'static {
    let p = owned(path);
    off_thread(move || std::fs::metadata(p))
}

/// Metadata of a path, not following a final symlink, as [`std::fs::symlink_metadata`].
///
/// # Errors
/// As [`std::fs::symlink_metadata`].
pub fn symlink_metadata(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<Metadata>> + Send + 'static {
    let p = owned(path);
    off_thread(move || std::fs::symlink_metadata(p))
}

/// Whether a path exists (following symlinks), as [`Path::try_exists`]: `Ok(false)` for a
/// missing path or a broken symlink, an error when it cannot be told (permission denied).
///
/// # Errors
/// As [`Path::try_exists`].
pub fn try_exists(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<bool>> + Send + 'static {
    let p = owned(path);
    off_thread(move || p.try_exists())
}

/// Renames a file or directory, replacing `to` if it exists, as [`std::fs::rename`]
/// (`rename(2)`: atomic within one filesystem).
///
/// # Errors
/// As [`std::fs::rename`]: `NotFound`, EXDEV across filesystems, EISDIR/ENOTDIR when one is
/// a directory and the other is not, ENOTEMPTY.
pub fn rename(
    from: impl AsRef<Path>,
    to: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let (from, to) = (owned(from), owned(to));
    meta(move || {
        Ok(Meta::Rename {
            from: cstring(&from)?,
            to: cstring(&to)?,
        })
    })
}

/// Removes a file or symlink (not a directory), as [`std::fs::remove_file`].
///
/// # Errors
/// As [`std::fs::remove_file`]: `NotFound`; EISDIR for a directory.
pub fn remove_file(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let p = owned(path);
    meta(move || {
        Ok(Meta::Unlink {
            path: cstring(&p)?,
            dir: false,
        })
    })
}

/// Removes an empty directory, as [`std::fs::remove_dir`].
///
/// # Errors
/// As [`std::fs::remove_dir`]: `NotFound`, ENOTEMPTY, ENOTDIR for a file.
pub fn remove_dir(path: impl AsRef<Path>) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let p = owned(path);
    meta(move || {
        Ok(Meta::Unlink {
            path: cstring(&p)?,
            dir: true,
        })
    })
}

/// Removes a directory and everything in it, as [`std::fs::remove_dir_all`] (which does
/// not follow symlinks inside it). The whole walk is one operation on the backend.
///
/// # Errors
/// As [`std::fs::remove_dir_all`].
pub fn remove_dir_all(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let p = owned(path);
    off_thread(move || std::fs::remove_dir_all(p))
}

/// Creates a directory (mode 0o777 less the umask), as [`std::fs::create_dir`].
///
/// # Errors
/// As [`std::fs::create_dir`]: `AlreadyExists`, `NotFound` for a missing parent.
pub fn create_dir(path: impl AsRef<Path>) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let p = owned(path);
    meta(move || {
        Ok(Meta::Mkdir {
            path: cstring(&p)?,
            mode: 0o777,
        })
    })
}

/// Creates a directory and every missing parent, as [`std::fs::create_dir_all`]: one
/// operation on the backend.
///
/// # Errors
/// As [`std::fs::create_dir_all`].
pub fn create_dir_all(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let p = owned(path);
    off_thread(move || std::fs::create_dir_all(p))
}

/// Makes `link` a new name of the file `original`, as [`std::fs::hard_link`].
///
/// # Errors
/// As [`std::fs::hard_link`]: `AlreadyExists`, EXDEV across filesystems.
pub fn hard_link(
    original: impl AsRef<Path>,
    link: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let (original, link) = (owned(original), owned(link));
    off_thread(move || std::fs::hard_link(original, link))
}

/// Makes `link` a symbolic link to `original`, as [`std::os::unix::fs::symlink`].
///
/// # Errors
/// As [`std::os::unix::fs::symlink`]: `AlreadyExists`.
pub fn symlink(
    original: impl AsRef<Path>,
    link: impl AsRef<Path>,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let (original, link) = (owned(original), owned(link));
    off_thread(move || std::os::unix::fs::symlink(original, link))
}

/// What a symbolic link points to, as [`std::fs::read_link`].
///
/// # Errors
/// As [`std::fs::read_link`]: EINVAL when the path is not a symlink.
pub fn read_link(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<PathBuf>> + Send + 'static {
    let p = owned(path);
    off_thread(move || std::fs::read_link(p))
}

/// The absolute path with every symlink, `.` and `..` resolved, as
/// [`std::fs::canonicalize`] (`realpath(3)`).
///
/// # Errors
/// As [`std::fs::canonicalize`]: `NotFound`, ELOOP.
pub fn canonicalize(
    path: impl AsRef<Path>,
) -> impl Future<Output = io::Result<PathBuf>> + Send + 'static {
    let p = owned(path);
    off_thread(move || std::fs::canonicalize(p))
}

/// Changes a path's permissions (following symlinks), as [`std::fs::set_permissions`].
///
/// # Errors
/// As [`std::fs::set_permissions`]: `NotFound`, EPERM when not the owner.
pub fn set_permissions(
    path: impl AsRef<Path>,
    perm: Permissions,
) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let p = owned(path);
    off_thread(move || std::fs::set_permissions(p, perm))
}
