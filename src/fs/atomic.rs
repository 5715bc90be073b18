//! Atomic replacement of a file: the new contents are written to a file beside the
//! target, flushed, renamed over the target, and the directory is flushed, so that after a
//! crash the target is either the old file or the whole new one.
//!
//! On Linux the new file is first made without a name (`O_TMPFILE`): if anything fails,
//! or the future is dropped, or the process dies, there is nothing to clean up. It gets a
//! name just before the rename, in the same operation. Where the filesystem cannot make
//! unnamed files (FUSE, NFS, off Linux), a hidden named file is used instead, and removed
//! on failure and on drop.
//!
//! A process killed between naming its new file and the rename leaves that file behind.
//! Its writer holds an exclusive `flock` on it for as long as it runs, so the next atomic
//! write into the same directory recognises a stale one (caio's name, this user's, not
//! touched for a minute, and no lock on it) and removes it: they never pile up, and a live
//! writer's file is never touched.

use crate::sys::c;
use crate::sys::fd::{AsRawFd, OwnedFd};
use std::{
    fs::{Metadata, Permissions},
    io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use crate::sync::lock;
#[cfg(target_os = "linux")]
use crate::sys;
use crate::{
    backend::{Meta, Opened},
    Context, File,
};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A hidden name beside `target` for the new contents.
fn temp_name(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(
        ".{name}.caio-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Whether `name` is one `temp_name` makes: `.{target}.caio-{pid}-{seq}`.
fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    let name = name.as_encoded_bytes();
    let Some(at) = name.windows(6).rposition(|w| w == b".caio-") else {
        return false;
    };
    let tail = &name[at + 6..];
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    name.first() == Some(&b'.')
        && at > 0
        && matches!(tail.iter().position(|&b| b == b'-'), Some(d) if digits(&tail[..d]) && digits(&tail[d + 1..]))
}

/// How long a temporary file must have gone untouched before a sweep looks at it: its
/// writer takes the lock just after creating it, and this covers that moment.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes the temporary files of writers that no longer run from `dir`: caio's names,
/// owned by this user, untouched for `STALE_AFTER`, and not locked (a running writer holds
/// the lock on its file). Each directory at most once per `STALE_AFTER` per process, since
/// nothing younger can go. Best effort: whatever cannot be checked is left alone.
fn sweep(dir: &Path) {
    static SWEPT: crate::fork::PerProcess<
        Mutex<std::collections::HashMap<PathBuf, std::time::Instant>>,
    > = crate::fork::PerProcess::new();
    {
        let mut swept = lock(SWEPT.get(Default::default));
        let now = std::time::Instant::now();
        if swept.len() > 1024 {
            swept.retain(|_, at| now.duration_since(*at) < STALE_AFTER);
        }
        match swept.get(dir) {
            Some(at) if now.duration_since(*at) < STALE_AFTER => return,
            _ => {
                swept.insert(dir.to_path_buf(), now);
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for e in entries.flatten() {
        if !is_temp_name(&e.file_name()) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= STALE_AFTER);
        if !meta.is_file() || !old {
            continue;
        }
        let Some(f) = open_to_sweep(&path, &meta) else {
            continue;
        };
        if crate::sys::try_lock_exclusive(f.as_raw_fd()).unwrap_or(false) {
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!(
                    "caio: removed {}, left by a writer that died",
                    path.display()
                ),
                Err(e) => log::debug!("caio: cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// The file a sweep found, opened to try its lock: only when it is this user's and still
/// the file that was listed (not a link put in its place since).
#[cfg(unix)]
fn open_to_sweep(path: &Path, listed: &std::fs::Metadata) -> Option<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // SAFETY: geteuid cannot fail.
    if listed.uid() != unsafe { c::geteuid() } {
        return None;
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(c::O_NOFOLLOW | c::O_NONBLOCK)
        .open(path)
        .ok()?;
    let id = |m| crate::sys::file_id(path, m);
    (id(&f.metadata().ok()?) == id(listed)).then_some(f)
}

/// The file a sweep found, opened to try its lock: never through a link put in its place
/// (`FILE_FLAG_OPEN_REPARSE_POINT`). Windows checks the user's right to it at the open.
#[cfg(windows)]
fn open_to_sweep(path: &Path, _: &std::fs::Metadata) -> Option<std::fs::File> {
    use std::os::windows::fs::OpenOptionsExt;
    const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
        .ok()?;
    f.metadata().ok()?.is_file().then_some(f)
}

/// What a named temporary file's creator and its guard agree on, so that a drop racing
/// the creation still leaves nothing behind.
#[derive(Default)]
struct Named {
    /// The file's name, once it is created.
    created: Option<PathBuf>,
    /// The guard went away (dropped or finished): a creation that completes now removes
    /// its own file.
    abandoned: bool,
}

/// Removes a named temporary file unless the replacement went through.
struct NamedGuard {
    ctx: Context,
    state: Arc<Mutex<Named>>,
}

impl NamedGuard {
    /// The file's name, once created.
    fn path(&self) -> Option<PathBuf> {
        lock(&self.state).created.clone()
    }

    /// Stops guarding; the file's name when it exists and is now the caller's to remove.
    fn disarm(&self) -> Option<PathBuf> {
        let mut st = lock(&self.state);
        st.abandoned = true;
        st.created.take()
    }
}

impl Drop for NamedGuard {
    fn drop(&mut self) {
        if let Some(p) = self.disarm() {
            match crate::sys::os_path(&p) {
                Ok(path) => self.ctx.detach(
                    -1,
                    Meta::Unlink { path, dir: false },
                    "removing a temporary file",
                ),
                Err(e) => log::warn!("caio: cannot remove {}: {e}", p.display()),
            }
        }
    }
}

/// A replacement under way: write into [`file`](Replacement::file), then
/// [`commit`](Replacement::commit) or [`abort`](Replacement::abort).
pub(crate) struct Replacement {
    ctx: Context,
    /// What gets replaced (a symlink resolved to its target).
    target: PathBuf,
    /// The target's permissions, when it exists.
    existing: Option<Permissions>,
    pub(crate) file: File,
    /// `None` for an unnamed (`O_TMPFILE`) file.
    named: Option<NamedGuard>,
}

/// Where a replacement of `path` goes, and the permissions of what is there: a symlink is
/// followed (its target is replaced, the link stays), anything but a regular file is
/// refused.
fn resolve(path: &Path) -> io::Result<(PathBuf, Option<Metadata>)> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)?,
        Ok(_) => path.to_path_buf(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((path.to_path_buf(), None)),
        Err(e) => return Err(e),
    };
    let meta = std::fs::metadata(&target)?;
    if !meta.is_file() {
        let kind = crate::fs::file::type_name(crate::sys::type_bits(&meta));
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {kind}, not a regular file: an atomic replace would put a file in its place",
                path.display()
            ),
        ));
    }
    Ok((target, Some(meta)))
}

impl Replacement {
    /// Resolves the target and makes the new, empty file beside it.
    pub(crate) async fn begin(ctx: &Context, path: &Path, direct: bool) -> io::Result<Self> {
        let p = path.to_path_buf();
        let (target, meta) = ctx
            .run(None, move || {
                let (target, meta) = resolve(&p)?;
                if let Some(dir) = target.parent() {
                    sweep(if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    });
                }
                Ok((target, meta))
            })
            .await?;
        if target.file_name().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            ));
        }
        let existing = meta.map(|m| m.permissions());
        #[cfg(target_os = "linux")]
        {
            let dir = match target.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let flags = c::O_TMPFILE | c::O_WRONLY | if direct { c::O_DIRECT } else { 0 };
            let open = Meta::Open {
                path: crate::sys::os_path(&dir)?,
                flags,
                mode: 0o666,
                direct,
            };
            match ctx.meta(-1, open, None, crate::fs::file::opened).await {
                Ok(o) => {
                    let file = File::from_opened(
                        ctx.clone(),
                        o,
                        target.clone(),
                        direct,
                        false,
                        (false, true),
                    );
                    return Ok(Replacement {
                        ctx: ctx.clone(),
                        target,
                        existing,
                        file,
                        named: None,
                    });
                }
                // No unnamed files here: fall back to a named one.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(c::EOPNOTSUPP | c::EISDIR | c::EINVAL)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Self::begin_named(ctx, target, existing, direct).await
    }

    async fn begin_named(
        ctx: &Context,
        target: PathBuf,
        existing: Option<Permissions>,
        direct: bool,
    ) -> io::Result<Self> {
        let state = Arc::new(Mutex::new(Named::default()));
        let guard = NamedGuard {
            ctx: ctx.clone(),
            state: Arc::clone(&state),
        };
        let t = target.clone();
        let (opened, path): (Opened, PathBuf) = ctx
            .run(None, move || {
                let mut o = std::fs::OpenOptions::new();
                o.write(true).create_new(true);
                #[cfg(target_os = "linux")]
                if direct {
                    use std::os::unix::fs::OpenOptionsExt;
                    o.custom_flags(c::O_DIRECT);
                }
                // A name a dead writer of the same pid left is passed over.
                let (f, p) = loop {
                    let p = temp_name(&t);
                    match o.open(&p) {
                        Ok(f) => break (f, p),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(e),
                    }
                };
                // Held while this writer runs: a sweep leaves the file alone. Where the
                // filesystem has no locks, a sweep cannot take one either.
                let _ = crate::sys::try_lock_exclusive(f.as_raw_fd());
                let mut st = lock(&state);
                if st.abandoned {
                    drop(f);
                    let _ = std::fs::remove_file(&p);
                    return Err(io::Error::other("caio: the replacement was abandoned"));
                }
                st.created = Some(p.clone());
                drop(st);
                let align = if direct {
                    Some(crate::align::alignment_of(f.as_raw_fd())?)
                } else {
                    None
                };
                let opened = Opened {
                    fd: OwnedFd::from(f),
                    file_type: c::S_IFREG,
                    align,
                    // Written only: whether it is in memory changes no read.
                    memory: false,
                };
                Ok((opened, p))
            })
            .await?;
        let file = File::from_opened(ctx.clone(), opened, path, direct, false, (false, true));
        Ok(Replacement {
            ctx: ctx.clone(),
            target,
            existing,
            file,
            named: Some(guard),
        })
    }

    /// Gives up: the new file is removed (a named one, through the backend).
    pub(crate) async fn abort(self) {
        let Replacement { ctx, named, .. } = self;
        if let Some(p) = named.as_ref().and_then(NamedGuard::disarm) {
            if let Ok(path) = crate::sys::os_path(&p) {
                let r = ctx
                    .meta_unit(-1, Meta::Unlink { path, dir: false }, None)
                    .await;
                if let Err(e) = r {
                    log::warn!("caio: cannot remove {}: {e}", p.display());
                }
            }
        }
    }

    /// Sets the permissions (`perm`, else those of the replaced file, else the creation
    /// mode less the umask), flushes the new file, renames it over the target, flushes the
    /// directory, and closes the file. Any failure before the rename removes the new file.
    pub(crate) async fn commit(self, perm: Option<Permissions>) -> io::Result<()> {
        let r = self.finish(perm.or_else(|| self.existing.clone())).await;
        if r.is_err() {
            self.abort().await;
            return r;
        }
        if let Some(g) = &self.named {
            g.disarm();
        }
        let Replacement { file, .. } = self;
        file.close().await
    }

    async fn finish(&self, perm: Option<Permissions>) -> io::Result<()> {
        if let Some(p) = perm {
            self.file.set_permissions(p).await?;
        }
        self.file.sync_all().await?;
        let (fd, info) = self.file.fd_info();
        let target = self.target.clone();
        let named = self.named.as_ref().and_then(NamedGuard::path);
        self.ctx
            .run(Some(info), move || {
                let from = match named {
                    Some(n) => n,
                    None => {
                        // Held while this writer runs: a sweep leaves the named file alone.
                        let _ = crate::sys::try_lock_exclusive(fd);
                        link_unnamed(fd, &target)?
                    }
                };
                if let Err(e) = std::fs::rename(&from, &target) {
                    let _ = std::fs::remove_file(&from);
                    return Err(e);
                }
                crate::sys::sync_parent(&target)
            })
            .await
    }
}

/// Names the unnamed file `fd` beside `target`, under a fresh hidden name.
#[cfg(target_os = "linux")]
fn link_unnamed(fd: crate::sys::fd::RawFd, target: &Path) -> io::Result<PathBuf> {
    loop {
        let name = temp_name(target);
        match sys::link_fd(fd, &crate::sys::os_path(&name)?) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn link_unnamed(_: crate::sys::fd::RawFd, _: &Path) -> io::Result<PathBuf> {
    unreachable!("unnamed files exist only on Linux")
}
