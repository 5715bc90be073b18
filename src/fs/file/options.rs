//! [`OpenOptions`], the open through the backend, and what it makes.

use super::*;
use crate::sys::c;

/// Options for opening a [`File`], like [`std::fs::OpenOptions`], plus O_DIRECT and the
/// [`Context`] to run on.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let file = caio::OpenOptions::new().read(true).write(true).create(true).direct(true).open("data").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    read: bool,
    write: bool,
    append: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    direct: bool,
    #[cfg(unix)]
    mode: Option<u32>,
    custom_flags: CustomFlags,
    context: Option<Context>,
    /// Options that came from std's (`From<std::fs::OpenOptions>`), which cannot be read
    /// back: kept, every setter applied to them too, and opened by std.
    std: Option<std::fs::OpenOptions>,
}

impl From<std::fs::OpenOptions> for OpenOptions {
    /// As tokio's: `open` then opens with std's options (on the backend's thread), and the
    /// setters called afterwards change them.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let mut std_opts = std::fs::OpenOptions::new();
    /// std_opts.read(true);
    /// let file = caio::fs::OpenOptions::from(std_opts).open("Cargo.toml").await?;
    /// # let _ = file; Ok(()) }
    /// ```
    fn from(std: std::fs::OpenOptions) -> OpenOptions {
        OpenOptions {
            std: Some(std),
            ..OpenOptions::default()
        }
    }
}

impl OpenOptions {
    /// All options off, the process-wide default context.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Open for reading.
    pub fn read(&mut self, on: bool) -> &mut Self {
        self.read = on;
        if let Some(s) = &mut self.std {
            s.read(on);
        }
        self
    }

    /// Open for writing.
    pub fn write(&mut self, on: bool) -> &mut Self {
        self.write = on;
        if let Some(s) = &mut self.std {
            s.write(on);
        }
        self
    }

    /// Every write goes to the end of the file (`O_APPEND`; on Linux the kernel ignores the
    /// offset of positional writes on such a file).
    pub fn append(&mut self, on: bool) -> &mut Self {
        self.append = on;
        if let Some(s) = &mut self.std {
            s.append(on);
        }
        self
    }

    /// Create the file if it does not exist.
    pub fn create(&mut self, on: bool) -> &mut Self {
        self.create = on;
        if let Some(s) = &mut self.std {
            s.create(on);
        }
        self
    }

    /// Create the file, failing if it exists.
    pub fn create_new(&mut self, on: bool) -> &mut Self {
        self.create_new = on;
        if let Some(s) = &mut self.std {
            s.create_new(on);
        }
        self
    }

    /// Truncate the file to 0 bytes on open.
    pub fn truncate(&mut self, on: bool) -> &mut Self {
        self.truncate = on;
        if let Some(s) = &mut self.std {
            s.truncate(on);
        }
        self
    }

    /// Bypass the page cache. Where the filesystem refuses it, `open` fails with a clear
    /// error rather than silently caching; open without it to fall back.
    ///
    /// - **Linux**: `O_DIRECT`. Transfers go between the device and the buffer, and the
    ///   device's alignment applies ([`File::direct_alignment`]); caio meets it at any
    ///   offset and length (an unaligned part goes through an aligned copy, or a second,
    ///   buffered descriptor for a write).
    /// - **FreeBSD**: `O_DIRECT`, which asks the filesystem to keep the data out of the
    ///   cache as far as it can; no alignment is asked ([`File::direct_alignment`] is
    ///   `None`).
    /// - **macOS**: `F_NOCACHE` on the new descriptor: reads and writes do not fill the
    ///   cache, but data already cached may still be used; no alignment is asked.
    /// - **Windows**: `FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH`. Transfers must
    ///   be whole sectors at sector-aligned offsets and memory; caio meets that as on Linux,
    ///   with the common 4096-byte alignment (Windows has no per-file query for it). Wine
    ///   ignores the flag, so there the cache is used.
    /// - Elsewhere, `open` fails with `Unsupported`.
    pub fn direct(&mut self, on: bool) -> &mut Self {
        self.direct = on;
        self
    }

    /// Permission bits for a created file (default `0o666`, less the umask). Unix only,
    /// as std's `OpenOptionsExt::mode`.
    #[cfg(unix)]
    pub fn mode(&mut self, mode: u32) -> &mut Self {
        self.mode = Some(mode);
        self
    }

    /// More `open(2)` flags (`O_NOFOLLOW`, `O_NOATIME`, `O_DIRECT`...), as
    /// `std::os::unix::fs::OpenOptionsExt::custom_flags` and tokio's: the access mode bits
    /// (`O_ACCMODE`) are ignored, the rest are added to those the options make.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::OpenOptions::new()
    ///     .read(true)
    ///     .custom_flags(libc::O_NOFOLLOW)
    ///     .open("not-a-symlink")
    ///     .await?;
    /// # let _ = file; Ok(()) }
    /// ```
    #[cfg(unix)]
    pub fn custom_flags(&mut self, flags: i32) -> &mut Self {
        self.custom_flags = flags as c::c_int;
        self
    }

    /// More `CreateFileW` flags and attributes (`dwFlagsAndAttributes`: the
    /// `FILE_FLAG_*` and `FILE_ATTRIBUTE_*` bits), as
    /// `std::os::windows::fs::OpenOptionsExt::custom_flags` and tokio's on Windows.
    /// `FILE_FLAG_OVERLAPPED` is accepted: caio waits for each call on such a handle.
    /// `FILE_FLAG_NO_BUFFERING` is as [`direct`](Self::direct).
    #[cfg(windows)]
    pub fn custom_flags(&mut self, flags: u32) -> &mut Self {
        self.custom_flags = flags;
        self
    }

    /// Run this file's operations on `ctx` rather than the process-wide default context.
    pub fn context(&mut self, ctx: Context) -> &mut Self {
        self.context = Some(ctx);
        self
    }

    /// Opens `path`. The `open(2)`, and the `fstat` that follows it, run through the
    /// context's backend, never on the thread that polls (but for `blocking`).
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::OpenOptions::new().append(true).create(true).open("app.log").await?;
    /// file.write_all_at("started\n", 0).await?; // append mode: at the end
    /// # let _ = file;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error of `open(2)`; `EISDIR` for a directory; `InvalidInput` for options
    /// that contradict each other (as `std`) or a path with a NUL byte; an error of kind
    /// `InvalidInput`/`Unsupported` naming O_DIRECT when the filesystem refuses it.
    pub fn open(
        &self,
        path: impl AsRef<Path>,
    ) -> impl Future<Output = io::Result<File>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let (opts, path) = (self.clone(), path.as_ref().to_path_buf());
            async move { opts.open_async(path).await }
        })
    }

    /// The `open(2)` flags, with the same rules as `std::fs::OpenOptions`.
    fn flags(&self) -> io::Result<c::c_int> {
        let einval = || Err(io::Error::from_raw_os_error(c::EINVAL));
        let access = match (self.read, self.write, self.append) {
            (true, false, false) => c::O_RDONLY,
            (false, true, false) => c::O_WRONLY,
            (true, true, false) => c::O_RDWR,
            (false, _, true) => c::O_WRONLY | c::O_APPEND,
            (true, _, true) => c::O_RDWR | c::O_APPEND,
            (false, false, false) => return einval(),
        };
        match (self.write, self.append) {
            (true, false) => {}
            (false, false) if self.truncate || self.create || self.create_new => return einval(),
            (_, true) if self.truncate && !self.create_new => return einval(),
            _ => {}
        }
        let creation = match (self.create, self.truncate, self.create_new) {
            (_, _, true) => c::O_CREAT | c::O_EXCL,
            (true, true, false) => c::O_CREAT | c::O_TRUNC,
            (true, false, false) => c::O_CREAT,
            (false, true, false) => c::O_TRUNC,
            (false, false, false) => 0,
        };
        let direct = if self.wants_direct() {
            direct_flag()?
        } else {
            0
        };
        // Windows' custom flags are CreateFileW's, not open(2)'s: they go to the open
        // on their own (`Meta::Open`'s `mode`).
        #[cfg(unix)]
        let custom = self.custom_flags & !c::O_ACCMODE;
        #[cfg(windows)]
        let custom = 0;
        Ok(access | creation | direct | custom)
    }

    /// O_DIRECT, asked for by `direct` or among the custom flags.
    fn wants_direct(&self) -> bool {
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        let custom = self.custom_flags & c::O_DIRECT != 0;
        #[cfg(windows)]
        let custom = self.custom_flags & FILE_FLAG_NO_BUFFERING != 0;
        #[cfg(not(any(target_os = "linux", target_os = "freebsd", windows)))]
        let custom = false;
        self.direct || custom
    }

    /// O_APPEND, asked for by `append` or among the custom flags.
    fn wants_append(&self) -> bool {
        #[cfg(unix)]
        let custom = self.custom_flags & c::O_APPEND != 0;
        #[cfg(windows)]
        let custom = false;
        self.append || custom
    }

    async fn open_async(self, path: PathBuf) -> io::Result<File> {
        let ctx = match &self.context {
            Some(c) => c.clone(),
            None => Context::global_async().await?,
        };
        if let Some(mut std) = self.std.clone() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                let direct = if self.direct { direct_flag()? } else { 0 };
                if self.custom_flags != 0 || direct != 0 {
                    std.custom_flags(self.custom_flags | direct);
                }
                if let Some(mode) = self.mode {
                    std.mode(mode);
                }
            }
            #[cfg(windows)]
            {
                use std::os::windows::fs::OpenOptionsExt;
                let direct = if self.direct {
                    FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH
                } else {
                    0
                };
                if self.custom_flags != 0 || direct != 0 {
                    std.custom_flags(self.custom_flags | direct);
                }
            }
            let on = ctx.clone();
            // What the file layer needs to know of it is asked of the descriptor there too.
            return ctx
                .run(None, move || {
                    let f = std.open(&path)?;
                    Ok(File::from_std_at(on, f, path))
                })
                .await;
        }
        let open = Meta::Open {
            path: crate::sys::os_path(&path)?,
            flags: self.flags()?,
            #[cfg(unix)]
            mode: self.mode.unwrap_or(0o666) as c::mode_t,
            #[cfg(windows)]
            mode: self.custom_flags,
            direct: self.wants_direct(),
        };
        let direct = self.wants_direct();
        let append = self.wants_append();
        let opened = ctx.meta(-1, open, None, opened).await.map_err(|e| {
            let refused =
                e.raw_os_error() == Some(c::EINVAL) || e.kind() == io::ErrorKind::Unsupported;
            if direct && refused {
                direct_refused(&path, e)
            } else {
                e
            }
        })?;
        Ok(File::from_opened(
            ctx,
            opened,
            path,
            direct,
            append,
            (self.read, self.write || append),
        ))
    }
}

impl File {
    /// A `File` for what `Meta::Open` opened.
    pub(crate) fn from_opened(
        ctx: Context,
        o: Opened,
        path: PathBuf,
        direct: bool,
        append: bool,
        (readable, writable): (bool, bool),
    ) -> File {
        File::from_parts(
            ctx,
            o.fd,
            path,
            Known {
                fd: Facts {
                    seekable: o.file_type == c::S_IFREG || o.file_type == c::S_IFBLK,
                    direct,
                    memory: o.memory,
                },
                file_type: o.file_type,
                append,
                readable,
                writable,
                align: o.align,
            },
        )
    }
}

/// The `open(2)` flag of `direct(true)`: `O_DIRECT` on Linux and FreeBSD; none on macOS,
/// where the open sets `F_NOCACHE` instead.
fn direct_flag() -> io::Result<c::c_int> {
    #[cfg(any(target_os = "linux", target_os = "freebsd", windows))]
    return Ok(c::O_DIRECT);
    #[cfg(target_vendor = "apple")]
    return Ok(0);
    #[cfg(not(any(
        target_os = "linux",
        target_os = "freebsd",
        target_vendor = "apple",
        windows
    )))]
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "this system has no way to bypass the page cache",
    ))
}

/// The flags and attributes of `CreateFileW` a custom flag or `direct` may give.
#[cfg(windows)]
const FILE_FLAG_NO_BUFFERING: u32 = 0x2000_0000;
#[cfg(windows)]
const FILE_FLAG_WRITE_THROUGH: u32 = 0x8000_0000;

/// The type of [`OpenOptions::custom_flags`]: `open(2)` flags on Unix, `CreateFileW`'s
/// `dwFlagsAndAttributes` on Windows.
#[cfg(unix)]
type CustomFlags = c::c_int;
#[cfg(windows)]
type CustomFlags = u32;

/// What an `open` made.
pub(crate) fn opened(c: Completion) -> Opened {
    match c.out {
        Out::Opened(o) => o,
        _ => unreachable!("an open completes with its descriptor"),
    }
}
