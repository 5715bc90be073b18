//! A `File` to and from std's and raw descriptors, and tokio's constructors and buffer
//! size: what `tokio::fs::File` has beside its I/O.

use std::os::fd::{AsFd, BorrowedFd, IntoRawFd};

use super::*;

impl File {
    /// Wraps an open `std::fs::File`, as `tokio::fs::File::from_std`, on the process-wide
    /// default context. The cursor starts at the descriptor's position.
    ///
    /// What the file layer needs to know of the descriptor is asked of the OS here, on the
    /// calling thread: its flags (`fcntl`), its type (`fstat`), whether it is in memory
    /// (`fstatfs`), its position (`lseek`) and, for an O_DIRECT descriptor, its alignment.
    /// Each acts on the open descriptor, not on a path. The first use of the default
    /// context starts it, here too.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let std_file = std::fs::File::open("Cargo.toml")?;
    /// let file = caio::fs::File::from_std(std_file);
    /// let head = file.read_at(16, 0).await?;
    /// # let _ = head; Ok(()) }
    /// ```
    pub fn from_std(std: std::fs::File) -> File {
        let ctx = Context::global().unwrap_or_else(|e| {
            // Nothing else to run on: the blocking implementation always starts.
            crate::notice::warn(&format!(
                "the default context cannot start ({e}); File::from_std runs on `blocking`"
            ));
            Context::builder()
                .implementation(crate::Implementation::Blocking)
                .build()
                .expect("the blocking implementation needs nothing to start")
        });
        File::from_std_on(ctx, std)
    }

    /// [`File::from_std`] on `ctx`.
    pub fn from_std_on(ctx: Context, std: std::fs::File) -> File {
        let raw = std.as_raw_fd();
        File::from_std_at(ctx, std, fd_path(raw))
    }

    /// [`File::from_std_on`] for a file opened at `path`.
    pub(crate) fn from_std_at(ctx: Context, std: std::fs::File, path: PathBuf) -> File {
        let fd = OwnedFd::from(std);
        let raw = fd.as_raw_fd();
        let flags = sys::status_flags(raw).unwrap_or(libc::O_RDWR);
        let access = flags & libc::O_ACCMODE;
        let file_type = sys::file_type(raw).unwrap_or(libc::S_IFREG);
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        let direct = flags & libc::O_DIRECT != 0;
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        let direct = false;
        // Only Linux's O_DIRECT asks for aligned transfers.
        let align = if direct && cfg!(target_os = "linux") {
            // Where it cannot be learnt, the alignment nearly every device has.
            Some(crate::direct_alignment(raw).unwrap_or(DirectAlignment {
                memory: crate::DEFAULT_DIRECT_ALIGNMENT,
                offset: crate::DEFAULT_DIRECT_ALIGNMENT,
                source: crate::AlignmentSource::Default,
            }))
        } else {
            None
        };
        let seekable = file_type == libc::S_IFREG || file_type == libc::S_IFBLK;
        let append = flags & libc::O_APPEND != 0;
        let known = Known {
            fd: Facts {
                seekable,
                direct,
                memory: file_type == libc::S_IFREG && !direct && sys::is_memory_fs(raw),
            },
            file_type,
            append,
            readable: access == libc::O_RDONLY || access == libc::O_RDWR,
            writable: access == libc::O_WRONLY || access == libc::O_RDWR,
            align,
        };
        let pos = if seekable {
            sys::lseek(raw, 0, libc::SEEK_CUR).unwrap_or(0)
        } else {
            0
        };
        File::with_cursor(ctx, fd, path, known, Some(pos))
    }

    /// Turns the file into a `std::fs::File`, as `tokio::fs::File::into_std`: after the
    /// cursor's operation under way (a write accepted in the background) and the
    /// operations in flight on the descriptor finish. Its position is the cursor's.
    ///
    /// When other clones of this `File` are alive, it is a duplicate of the descriptor
    /// (`dup`, through the backend), which shares the open file with them.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::open("Cargo.toml").await?;
    /// let std_file: std::fs::File = file.into_std().await;
    /// # let _ = std_file;
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    /// When that duplicate cannot be made (the process is out of descriptors).
    pub async fn into_std(self) -> std::fs::File {
        let pos = match &self.cursor {
            Some(_) => {
                futures::future::poll_fn(|cx| {
                    cursor::poll_with(&self, cx, |c, cx| c.poll_position(cx, &self))
                })
                .await
            }
            None => Ok(0),
        };
        let File { inner, cursor } = self;
        drop(cursor);
        let std = match Arc::try_unwrap(inner) {
            Ok(inner) => {
                let Inner { owner, info, .. } = inner;
                drop(info);
                owner.release().await.map(std::fs::File::from)
            }
            Err(inner) => {
                let fd = inner.fd;
                inner
                    .ctx
                    .run(Some(&inner.info), move || sys::dup(fd))
                    .await
                    .map(std::fs::File::from)
            }
        };
        let std =
            std.unwrap_or_else(|e| panic!("caio: File::into_std cannot keep the descriptor: {e}"));
        if let Ok(pos) = pos {
            let _ = sys::lseek(std.as_raw_fd(), pos as i64, libc::SEEK_SET);
        }
        std
    }

    /// Turns the file into a `std::fs::File` now, as `tokio::fs::File::try_into_std`:
    /// only when nothing is under way on it (no background write, no operation in
    /// flight) and no other clone of it is alive; otherwise it comes back as it was.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::open("Cargo.toml").await?;
    /// match file.try_into_std() {
    ///     Ok(std_file) => drop(std_file),
    ///     Err(file) => drop(file), // something was still under way
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The file itself, when the above does not hold.
    pub fn try_into_std(self) -> Result<std::fs::File, File> {
        let pos = match &self.cursor {
            Some(c) => {
                let c = crate::sync::lock(c);
                if c.busy() {
                    drop(c);
                    return Err(self);
                }
                c.position()
            }
            None => Some(0),
        };
        // A descriptor held by this file alone: its own handle and the backend's view.
        if Arc::strong_count(&self.inner) != 1 || Arc::strong_count(&self.inner.owner) != 2 {
            return Err(self);
        }
        let File { inner, cursor } = self;
        let Ok(inner) = Arc::try_unwrap(inner) else {
            unreachable!("counted above, and no other handle can appear")
        };
        let Inner { owner, info, .. } = inner;
        drop(info);
        let Ok(fd) = owner.try_release() else {
            unreachable!("counted above, and no operation can start without the file")
        };
        drop(cursor);
        let std = std::fs::File::from(fd);
        if let Some(pos) = pos {
            let _ = sys::lseek(std.as_raw_fd(), pos as i64, libc::SEEK_SET);
        }
        Ok(std)
    }

    /// Sets the most a cursor read or write asks of the OS at once (the size of the
    /// cursor's buffer), as `tokio::fs::File::set_max_buf_size`; 2 MiB by default. It is
    /// the cursor's, so every clone sees it.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let mut file = caio::File::open("big.bin").await?;
    /// file.set_max_buf_size(8 << 20); // cursor reads of up to 8 MiB at once
    /// assert_eq!(file.max_buf_size(), 8 << 20);
    /// # Ok(()) }
    /// ```
    pub fn set_max_buf_size(&mut self, max_buf_size: usize) {
        if let Some(c) = &self.cursor {
            crate::sync::lock(c).set_max_buf(max_buf_size);
        }
    }

    /// The most a cursor read or write asks of the OS at once: see
    /// [`set_max_buf_size`](File::set_max_buf_size).
    pub fn max_buf_size(&self) -> usize {
        self.cursor
            .as_ref()
            .map_or(cursor::DEFAULT_MAX_BUF_SIZE, |c| {
                crate::sync::lock(c).max_buf()
            })
    }
}

/// What to call a descriptor that came without a path: where `/proc` says it leads.
fn fd_path(fd: RawFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .unwrap_or_else(|_| PathBuf::from(format!("<descriptor {fd}>")))
}

impl From<std::fs::File> for File {
    fn from(std: std::fs::File) -> File {
        File::from_std(std)
    }
}

impl From<OwnedFd> for File {
    fn from(fd: OwnedFd) -> File {
        File::from_std(std::fs::File::from(fd))
    }
}

impl FromRawFd for File {
    /// As [`File::from_std`].
    ///
    /// # Safety
    /// `fd` is an open descriptor that nothing else owns, as for `OwnedFd::from_raw_fd`.
    unsafe fn from_raw_fd(fd: RawFd) -> File {
        // SAFETY: the caller's promise, passed on.
        File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl AsFd for File {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor stays open while `inner` lives, which `self` holds for
        // the borrow's lifetime.
        unsafe { BorrowedFd::borrow_raw(self.inner.fd) }
    }
}

impl IntoRawFd for File {
    /// The descriptor, now: as [`File::try_into_std`] when that can; else (a clone alive,
    /// an operation in flight) a duplicate (`dup`), and this one closes when they let go.
    ///
    /// # Panics
    /// When that duplicate cannot be made (the process is out of descriptors).
    fn into_raw_fd(self) -> RawFd {
        match self.try_into_std() {
            Ok(std) => std.into_raw_fd(),
            Err(file) => match sys::dup(file.inner.fd) {
                Ok(fd) => fd.into_raw_fd(),
                Err(e) => panic!("caio: File::into_raw_fd cannot duplicate the descriptor: {e}"),
            },
        }
    }
}
