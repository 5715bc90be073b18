//! `caio info`: what runs here, and what a path supports.

use super::*;

pub(crate) fn info(path: &Path) -> Result<()> {
    fs::metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    // The report lists the selection's warnings: the log need not print them too.
    QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
    let s = caio::selection();
    QUIET.store(false, std::sync::atomic::Ordering::Relaxed);
    out!("caio {}", env!("CARGO_PKG_VERSION"));
    out!("selected implementation: {}", s.implementation());
    let from = match s.source() {
        Source::Env => format!(
            "CAIO_IMPL={}",
            std::env::var("CAIO_IMPL").unwrap_or_default().trim()
        ),
        Source::File => "the default_implementation file compiled into this build".to_string(),
        _ => format!(
            "the built-in order ({}: first available)",
            Implementation::ALL.map(Implementation::as_str).join(", ")
        ),
    };
    out!("  chosen by: {from}");
    if s.warnings().is_empty() {
        out!("  warnings: none");
    } else {
        for w in s.warnings() {
            out!("  warning: {w}");
        }
    }
    out!("implementations:");
    for i in Implementation::ALL {
        match i.check() {
            Ok(()) => out!("  {:<9} available: {}", i.as_str(), i.summary()),
            Err(caio::Error::Unavailable { reason, .. }) => {
                out!("  {:<9} unavailable: {reason}", i.as_str())
            }
            Err(e) => out!("  {:<9} unavailable: {e}", i.as_str()),
        }
    }
    #[cfg(target_os = "linux")]
    if let (Ok(nr), Ok(max)) = (
        fs::read_to_string("/proc/sys/fs/aio-nr"),
        fs::read_to_string("/proc/sys/fs/aio-max-nr"),
    ) {
        out!(
            "kernel AIO: fs.aio-nr {} of fs.aio-max-nr {}",
            nr.trim(),
            max.trim()
        );
    }
    out!(
        "defaults: max_requests {}, thread pool {} threads",
        caio::DEFAULT_MAX_REQUESTS,
        caio::default_threads()
    );
    out!(
        "path: {}{}",
        path.display(),
        fs_type(path).map(|t| format!(" ({t})")).unwrap_or_default()
    );
    match direct_support(path) {
        Ok((a, note)) => {
            out!(
                "  O_DIRECT: supported; memory alignment {} B, offset/length alignment {} B ({:?})",
                a.memory,
                a.offset,
                a.source
            );
            if let Some(n) = note {
                out!("  ({n})");
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            out!("  O_DIRECT: not supported by this filesystem ({e})")
        }
        Err(e) => out!("  O_DIRECT: {e}"),
    }
    controls_workload(path);
    Ok(())
}

/// Runs a short workload with the per-operation controls on a scratch file beside `path`
/// (removed after), on the selected implementation, and prints the context's counters:
/// what ran where, and which controls this system and filesystem fell back from.
fn controls_workload(path: &Path) {
    let dir = if path.is_dir() {
        path
    } else {
        path.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    };
    let file = dir.join(format!(".caio-info-{}", std::process::id()));
    let _remove = signals::remove_on_signal(file.clone());
    const BLOCK: usize = 64 << 10;
    let run = || -> io::Result<caio::Stats> {
        let ctx = Context::builder().build()?;
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&file)?;
        let fd = raw(&f);
        ctx.block_on(async {
            for k in 0..16u64 {
                ctx.write(caio::Buffer::zeroed(BLOCK), fd, k * BLOCK as u64)
                    .dsync()
                    .priority(caio::Priority::BestEffort(7))
                    .await?;
            }
            for k in 0..16u64 {
                ctx.read(BLOCK, fd, k * BLOCK as u64).uncached().await?;
            }
            match ctx.read(BLOCK, fd, 0).nowait().await {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
            // A read aborted before it starts: a cancellation asked for, and won.
            let aborted = ctx.read(BLOCK, fd, 0);
            aborted.abort_handle().abort();
            if let Ok(b) = aborted.await {
                return Err(io::Error::other(format!(
                    "an aborted read ran ({} bytes)",
                    b.len()
                )));
            }
            ctx.fsync(fd).await
        })?;
        Ok(ctx.stats())
    };
    match run() {
        Ok(s) => {
            out!(
                "per-operation controls, on a short workload in {} (16 writes with dsync and a",
                dir.display()
            );
            out!("  priority, 16 reads uncached, one with nowait, one aborted, a sync):");
            out!("  {s}");
        }
        Err(e) => out!(
            "per-operation controls: cannot run the short workload in {}: {e}",
            dir.display()
        ),
    }
}

/// The raw file a `Context` takes: the descriptor, or on Windows the handle.
fn raw(f: &fs::File) -> caio::RawFd {
    #[cfg(unix)]
    return std::os::unix::io::AsRawFd::as_raw_fd(f);
    #[cfg(windows)]
    return std::os::windows::io::AsRawHandle::as_raw_handle(f);
}

/// The filesystem type of `path`, by `statfs` magic number.
#[cfg(unix)]
pub(crate) fn fs_type(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` writable memory for statfs.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statfs succeeded and filled `st`.
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between platforms
    let magic = unsafe { st.assume_init() }.f_type as i64;
    Some(match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        _ => "other filesystem",
    })
}

/// The filesystem of `path`: Windows names it (`GetVolumeInformationW`), but the
/// command has no use for more than that it is there.
#[cfg(windows)]
pub(crate) fn fs_type(_: &Path) -> Option<&'static str> {
    None
}

/// What a non-regular file is, for a message: "a FIFO", "a character device"...
pub(crate) fn kind_of(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a pipe or FIFO";
        } else if t.is_char_device() {
            return "a character device";
        } else if t.is_block_device() {
            return "a block device";
        } else if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "a regular file"
    }
}

/// `O_DIRECT`, where the system has it.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn direct_flag() -> libc::c_int {
    libc::O_DIRECT
}

/// O_DIRECT support on `path`: none, on a system without `O_DIRECT`.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
pub(crate) fn direct_support(path: &Path) -> io::Result<(caio::DirectAlignment, Option<String>)> {
    fs::metadata(path)?;
    let why = if cfg!(windows) {
        "Windows has no O_DIRECT (caio's direct mode opens with FILE_FLAG_NO_BUFFERING and \
         moves whole 4096-byte blocks)"
    } else {
        "this system has no O_DIRECT"
    };
    Err(io::Error::new(io::ErrorKind::Unsupported, why))
}

/// O_DIRECT support on `path`: for a directory, on a file made there without a name
/// (`O_TMPFILE`), so nothing appears in it; where the filesystem cannot, on a named file
/// that is removed at once, and the note says so.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub(crate) fn direct_support(path: &Path) -> io::Result<(caio::DirectAlignment, Option<String>)> {
    use std::os::unix::{
        fs::{FileTypeExt, OpenOptionsExt},
        io::AsRawFd,
    };
    let meta = fs::metadata(path)?;
    let t = meta.file_type();
    if !(t.is_file() || t.is_dir() || t.is_block_device()) {
        // Opening a FIFO would wait for a writer; O_DIRECT means nothing there anyway.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}: O_DIRECT applies to regular files, directories (a file made in \
                 them) and block devices",
                path.display(),
                kind_of(&meta)
            ),
        ));
    }
    if !meta.is_dir() {
        let f = fs::OpenOptions::new()
            .read(true)
            // Never waits, whatever the path names by the time it is opened.
            .custom_flags(direct_flag() | libc::O_NONBLOCK)
            .open(path)?;
        return caio::direct_alignment(f.as_raw_fd()).map(|a| (a, None));
    }
    #[cfg(target_os = "linux")]
    {
        let unnamed = |flags| {
            fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_TMPFILE | flags)
                .open(path)
        };
        match unnamed(libc::O_DIRECT) {
            Ok(f) => return caio::direct_alignment(f.as_raw_fd()).map(|a| (a, None)),
            // Unnamed files work, O_DIRECT does not.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && unnamed(0).is_ok() => {
                return Err(e)
            }
            Err(_) => {}
        }
    }
    let probe = path.join(format!(".caio-info-probe-{}", std::process::id()));
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(direct_flag())
        .open(&probe);
    let _ = fs::remove_file(&probe);
    let note = format!(
        "checked with a temporary file {} (removed): the filesystem cannot make unnamed files",
        probe.display()
    );
    r.and_then(|f| caio::direct_alignment(f.as_raw_fd()))
        .map(|a| (a, Some(note)))
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                e
            } else {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot tell: no file can be made in {} ({e})",
                        path.display()
                    ),
                )
            }
        })
}

// ---------------------------------------------------------------------------------------
// copy
