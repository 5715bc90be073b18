//! A `File` to and from std's and raw descriptors, and tokio's constructors and buffer
//! size: what `tokio::fs::File` has beside its I/O.

use crate::sys::c;

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
        let flags = sys::status_flags(raw).unwrap_or(c::O_RDWR);
        let access = flags & c::O_ACCMODE;
        let file_type = sys::file_type(raw).unwrap_or(c::S_IFREG);
        #[cfg(any(target_os = "linux", target_os = "freebsd", windows))]
        let direct = flags & c::O_DIRECT != 0;
        #[cfg(not(any(target_os = "linux", target_os = "freebsd", windows)))]
        let direct = false;
        // Only Linux's O_DIRECT and Windows' FILE_FLAG_NO_BUFFERING ask for aligned
        // transfers.
        let align = if direct && cfg!(any(target_os = "linux", windows)) {
            // Where it cannot be learnt, the alignment nearly every device has.
            Some(crate::align::alignment_of(raw).unwrap_or(DirectAlignment {
                memory: crate::DEFAULT_DIRECT_ALIGNMENT,
                offset: crate::DEFAULT_DIRECT_ALIGNMENT,
                source: crate::AlignmentSource::Default,
            }))
        } else {
            None
        };
        let seekable = file_type == c::S_IFREG || file_type == c::S_IFBLK;
        let append = flags & c::O_APPEND != 0;
        let known = Known {
            fd: Facts {
                seekable,
                direct,
                memory: file_type == c::S_IFREG && !direct && sys::is_memory_fs(raw),
            },
            file_type,
            append,
            readable: access == c::O_RDONLY || access == c::O_RDWR,
            writable: access == c::O_WRONLY || access == c::O_RDWR,
            align,
        };
        let pos = if seekable {
            sys::lseek(raw, 0, c::SEEK_CUR).unwrap_or(0)
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
        let File { inner, cursor, .. } = self;
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
            let _ = sys::lseek(std.as_raw_fd(), pos as i64, c::SEEK_SET);
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
        let File { inner, cursor, .. } = self;
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
            let _ = sys::lseek(std.as_raw_fd(), pos as i64, c::SEEK_SET);
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

/// What to call a descriptor that came without a path: where the OS says it leads.
fn fd_path(fd: RawFd) -> PathBuf {
    sys::fd_path(fd).unwrap_or_else(|| PathBuf::from(format!("<descriptor {fd}>")))
}

impl From<std::fs::File> for File {
    fn from(std: std::fs::File) -> File {
        File::from_std(std)
    }
}

impl File {
    /// The descriptor, owned: as [`File::try_into_std`] when that can; else (a clone
    /// alive, an operation in flight) a duplicate, and this one closes when they let go.
    ///
    /// # Panics
    /// When that duplicate cannot be made (the process is out of descriptors).
    fn into_owned_fd(self) -> OwnedFd {
        match self.try_into_std() {
            Ok(std) => std.into(),
            Err(file) => match sys::dup(file.inner.fd) {
                Ok(fd) => fd,
                Err(e) => panic!("caio: File::into_raw_fd cannot duplicate the descriptor: {e}"),
            },
        }
    }
}

/// `std::os::fd`'s traits: a `File` is a descriptor, as std's is.
#[cfg(unix)]
mod unix_traits {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

    use super::File;

    impl AsRawFd for File {
        fn as_raw_fd(&self) -> RawFd {
            self.inner.fd
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
            // SAFETY: the descriptor stays open while `inner` lives, which `self` holds
            // for the borrow's lifetime.
            unsafe { BorrowedFd::borrow_raw(self.inner.fd) }
        }
    }

    impl IntoRawFd for File {
        /// The descriptor, now: as [`File::try_into_std`] when that can; else (a clone
        /// alive, an operation in flight) a duplicate (`dup`), and this one closes when
        /// they let go.
        ///
        /// # Panics
        /// When that duplicate cannot be made (the process is out of descriptors).
        fn into_raw_fd(self) -> RawFd {
            self.into_owned_fd().into_raw_fd()
        }
    }
}

/// `std::os::windows::io`'s traits: a `File` is a handle, as std's is.
#[cfg(windows)]
mod windows_traits {
    use std::os::windows::io::{
        AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, IntoRawHandle, OwnedHandle, RawHandle,
    };

    use super::File;

    impl AsRawHandle for File {
        fn as_raw_handle(&self) -> RawHandle {
            self.inner.fd as RawHandle
        }
    }

    impl From<OwnedHandle> for File {
        fn from(h: OwnedHandle) -> File {
            File::from_std(std::fs::File::from(h))
        }
    }

    impl FromRawHandle for File {
        /// As [`File::from_std`].
        ///
        /// # Safety
        /// `handle` is an open file handle that nothing else owns, as for
        /// `OwnedHandle::from_raw_handle`.
        unsafe fn from_raw_handle(handle: RawHandle) -> File {
            // SAFETY: the caller's promise, passed on.
            File::from(unsafe { OwnedHandle::from_raw_handle(handle) })
        }
    }

    impl AsHandle for File {
        fn as_handle(&self) -> BorrowedHandle<'_> {
            // SAFETY: the handle stays open while `inner` lives, which `self` holds for
            // the borrow's lifetime.
            unsafe { BorrowedHandle::borrow_raw(self.inner.fd as RawHandle) }
        }
    }

    impl IntoRawHandle for File {
        /// The handle, now: as [`File::try_into_std`] when that can; else (a clone
        /// alive, an operation in flight) a duplicate (`DuplicateHandle`), and this one
        /// closes when they let go.
        ///
        /// # Panics
        /// When that duplicate cannot be made.
        fn into_raw_handle(self) -> RawHandle {
            self.into_owned_fd().into_raw_handle()
        }
    }
}
