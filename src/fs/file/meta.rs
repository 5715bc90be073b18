//! A file's metadata, syncs, length, allocation and hints, and its close.

use super::*;

impl File {
    /// Reads the whole file from the start, several chunks in flight; the cursor is
    /// neither used nor moved. (Not `read_to_end`: that is the name of the cursor's
    /// `AsyncReadExt::read_to_end`, as on `tokio::fs::File`.)
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::open("Cargo.toml").await?;
    /// let bytes = file.read_to_vec().await?;
    /// println!("{} bytes", bytes.len());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The first failed read.
    pub fn read_to_vec(&self) -> impl Future<Output = io::Result<Vec<u8>>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let f = self.clone();
            async move {
                use futures::StreamExt;
                let len = f.len().await.unwrap_or(0);
                let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(1 << 30));
                let mut chunks = f.chunks(crate::fs::COPY_CHUNK);
                while let Some(c) = chunks.next().await {
                    out.extend_from_slice(&c?);
                }
                Ok(out)
            }
        })
    }

    /// Flushes data and metadata to the device (`fsync`), after the cursor's write under
    /// way, if any, as `tokio::fs::File::sync_all`.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::create("journal").await?;
    /// file.write_all_at("entry\n", 0).await?;
    /// file.sync_all().await?; // on the device now
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The error of that write, else the OS error.
    pub fn sync_all(&self) -> FileFuture<()> {
        self.sync(false)
    }

    /// Flushes data to the device (`fdatasync`), after the cursor's write under way, if
    /// any, as `tokio::fs::File::sync_data`.
    ///
    /// # Errors
    /// The error of that write, else the OS error.
    pub fn sync_data(&self) -> FileFuture<()> {
        self.sync(true)
    }

    /// `fdatasync` (`data`) or `fsync`, after the cursor's write under way.
    fn sync(&self, data: bool) -> FileFuture<()> {
        FileFuture::new(self, move |f| {
            Box::pin(async move {
                cursor::settle(f.cursor.clone()).await?;
                let i = &f.inner;
                i.ctx
                    .sync_file(i.fd, data, &i.info)
                    .with_controls(f.controls, None)
                    .joined(f.abort.as_ref())
                    .await
            })
        })
    }

    /// Truncates or extends the file to `len` bytes (`ftruncate`, through the backend),
    /// after the cursor's write under way, if any; the cursor stays where it is.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::OpenOptions::new().write(true).open("journal").await?;
    /// file.set_len(0).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The error of that write; the OS error; EBADF saying so for a file not opened for
    /// writing.
    pub fn set_len(
        &self,
        len: u64,
    ) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let f = self.clone();
            async move {
                f.check_access(true)?;
                cursor::settle(f.cursor.clone()).await?;
                let i = &f.inner;
                i.ctx
                    .meta_unit(i.fd, Meta::Truncate(len), Some(&i.info))
                    .await
            }
        })
    }

    /// The file's size in bytes (`fstat`, through the backend; a block device's size).
    ///
    /// # Errors
    /// The OS error.
    pub fn len(&self) -> impl Future<Output = io::Result<u64>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let i = Arc::clone(&self.inner);
            async move {
                let fd = i.fd;
                i.ctx.run(Some(&i.info), move || sys::file_len(fd)).await
            }
        })
    }

    /// The file's metadata, as [`std::fs::File::metadata`] (`statx`/`fstat`, through the
    /// backend).
    ///
    /// # Errors
    /// The OS error.
    pub fn metadata(&self) -> impl Future<Output = io::Result<Metadata>> + Send + Sync + 'static {
        self.with_std(|f| f.metadata())
    }

    /// Changes the file's permissions, as [`std::fs::File::set_permissions`] (`fchmod`,
    /// through the backend).
    ///
    /// # Errors
    /// The OS error (EPERM when not the owner).
    pub fn set_permissions(
        &self,
        perm: Permissions,
    ) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
        self.with_std(move |f| f.set_permissions(perm))
    }

    /// Allocates `len` bytes of storage from `offset` (`fallocate(2)` with mode 0, through
    /// the backend), extending the file if the range ends past it, so later writes there
    /// cannot fail for lack of space.
    ///
    /// # Errors
    /// The OS error (ENOSPC; EOPNOTSUPP where the filesystem cannot); `Unsupported` off
    /// Linux, which has no `fallocate`.
    pub fn allocate(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let i = Arc::clone(&self.inner);
            async move {
                i.ctx
                    .meta_unit(i.fd, Meta::Allocate { offset, len }, Some(&i.info))
                    .await
            }
        })
    }

    /// Tells the kernel how `len` bytes from `offset` (0: to the end of the file) will be
    /// read (`posix_fadvise(2)`, through the backend, off the polling thread; natively on
    /// io_uring). [`Advice::WillNeed`](crate::fs::Advice::WillNeed) starts reading the range into the page cache;
    /// [`Advice::DontNeed`](crate::fs::Advice::DontNeed) drops its clean pages, [`Advice::Sequential`](crate::fs::Advice::Sequential) and
    /// [`Advice::Random`](crate::fs::Advice::Random) tune read-ahead.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// use caio::fs::Advice;
    /// let index = caio::File::open("index").await?;
    /// index.advise(0, 0, Advice::Random).await?; // point lookups: no read-ahead
    /// index.advise(0, 1 << 20, Advice::WillNeed).await?; // warm the first MiB
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error (ESPIPE on a pipe); `Unsupported` where the system has no
    /// `posix_fadvise` (macOS).
    pub fn advise(
        &self,
        offset: u64,
        len: u64,
        advice: crate::fs::Advice,
    ) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let i = Arc::clone(&self.inner);
            let advice = advice.raw();
            async move {
                let m = Meta::Advise {
                    offset,
                    len,
                    advice,
                };
                i.ctx.meta_unit(i.fd, m, Some(&i.info)).await
            }
        })
    }

    /// Starts and/or waits for the write-out of `len` bytes from `offset` (0: to the end
    /// of the file), as `flags` say (`sync_file_range(2)`, through the backend, off the
    /// polling thread; natively on io_uring). It paces write-back; it is not a durability
    /// guarantee (see [`SyncRange`](crate::fs::SyncRange)): use
    /// [`sync_data`](File::sync_data) for that.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// use caio::fs::SyncRange;
    /// let log = caio::File::create("log").await?;
    /// log.write_all_at(vec![0u8; 1 << 20], 0).await?;
    /// // Start writing the megabyte out now, without waiting for it.
    /// log.sync_range(0, 1 << 20, SyncRange::WRITE).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error (ESPIPE on a pipe, EINVAL for unknown flags); `Unsupported` off Linux.
    pub fn sync_range(
        &self,
        offset: u64,
        len: u64,
        flags: crate::fs::SyncRange,
    ) -> impl Future<Output = io::Result<()>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let i = Arc::clone(&self.inner);
            let flags = flags.bits();
            async move {
                let m = Meta::SyncRange { offset, len, flags };
                i.ctx.meta_unit(i.fd, m, Some(&i.info)).await
            }
        })
    }

    /// A second `File` on the same open file description (`fcntl(F_DUPFD_CLOEXEC)`,
    /// through the backend): it shares the file's status flags but has its own
    /// descriptor, closed on its own.
    ///
    /// # Errors
    /// The OS error (EMFILE).
    pub fn try_clone(&self) -> impl Future<Output = io::Result<File>> + Send + Sync + 'static {
        crate::fs::Exclusive::new({
            let i = Arc::clone(&self.inner);
            async move {
                let fd = i.fd;
                let new = i.ctx.run(Some(&i.info), move || sys::dup(fd)).await?;
                Ok(File::from_parts(
                    i.ctx.clone(),
                    new,
                    i.path.clone(),
                    i.known,
                ))
            }
        })
    }

    /// Closes the file and reports the error of `close(2)`: some filesystems (NFS, FUSE)
    /// report write-back errors only there. The close runs through the backend.
    ///
    /// The descriptor is shared by every clone of this `File` and kept open by operations
    /// still in flight on it (futures dropped before they finished). When this is the last
    /// clone, `close` waits for those operations and then closes it. When other clones
    /// remain, it only drops this one and returns `Ok(())`: the descriptor is closed, by
    /// the backend, when the last clone goes. Dropping a `File` without `close` also
    /// closes it through the backend, but an error is then only logged.
    ///
    /// `close` does not flush anything to the device: call [`sync_all`](File::sync_all)
    /// or [`sync_data`](File::sync_data) first for durability.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let file = caio::File::create("report").await?;
    /// file.write_all_at("done\n", 0).await?;
    /// file.close().await?; // NFS and FUSE report write-back errors here
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The OS error of `close(2)` (EIO, ENOSPC, EDQUOT on network filesystems).
    pub async fn close(self) -> io::Result<()> {
        let File { inner, cursor, .. } = self;
        // The cursor's write under way, and its error, first.
        let written = cursor::settle(cursor).await;
        let Ok(inner) = Arc::try_unwrap(inner) else {
            return written;
        };
        let Inner {
            owner, info, twin, ..
        } = inner;
        drop(info);
        let twin = twin.into_inner().map(|t| {
            drop(t.info);
            t.owner
        });
        let r = written.and(owner.close().await);
        match twin {
            Some(t) => r.and(t.close().await),
            None => r,
        }
    }

    /// Runs `f` on a `std::fs::File` view of the descriptor, through the backend; `Sync`,
    /// as every `caio::fs` future.
    pub(super) fn with_std<T: Send + 'static>(
        &self,
        f: impl FnOnce(&std::fs::File) -> io::Result<T> + Send + 'static,
    ) -> impl Future<Output = io::Result<T>> + Send + Sync + 'static {
        let i = Arc::clone(&self.inner);
        crate::fs::Exclusive::new(async move {
            let fd = i.fd;
            i.ctx
                .run(Some(&i.info), move || {
                    // SAFETY: the request holds the descriptor's owner, so `fd` stays open
                    // while this runs; ManuallyDrop keeps the view from closing it.
                    let view = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
                    f(&view)
                })
                .await
        })
    }
}
