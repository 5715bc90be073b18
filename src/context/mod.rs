//! [`Context`] and its [`Builder`].

pub(crate) mod abort;
mod admission;
mod builder;
pub(crate) mod op;
mod shared;
pub(crate) mod stats;

use crate::sys::fd::RawFd;
use op::{BufFuture, ReadFuture, SyncFuture, VectoredFuture, WriteFuture};

pub use builder::Builder;
pub(crate) use shared::Shared;

use std::{
    any::Any,
    fmt,
    future::Future,
    io,
    pin::Pin,
    sync::{atomic::Ordering, Arc, Mutex},
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use crate::sync::lock;
use crate::{
    backend::{Call, Completion, Config, FdInfo, Meta, Out, Plan, What},
    fork::PerProcess,
    select::selection,
    Buffer, Error, Implementation,
};

pub use crate::backend::DEFAULT_MAX_REQUESTS;
/// The largest `max_requests` a context accepts.
pub const MAX_MAX_REQUESTS: usize = 65_536;
/// The largest thread pool a context accepts.
pub const MAX_THREADS: usize = 1024;

/// The default size of a thread pool: twice the cores, between 4 and 16.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).clamp(4, 16)
}

/// A handle to one backend instance: submits reads, writes and syncs on raw descriptors.
///
/// Cheap to clone (an `Arc`), `Send + Sync`; every clone shares the same backend and the
/// same `max_requests` window. The returned futures are `Send + 'static` and run on any
/// executor.
///
/// # Descriptors
///
/// The raw operations take a descriptor number, and the kernel or a worker uses that
/// number when the operation starts. Keep the descriptor open until the future has
/// completed or been dropped: an operation whose future is dropped before it started is
/// never started (so a number closed and reused by another file after the drop is safe),
/// but one started before the descriptor is closed may act on whatever file the number
/// names by then. [`File`](crate::File) owns its descriptor and keeps it open until its
/// last operation is done, so it has no such rule.
///
/// # Before the program ends
///
/// Operations whose futures were dropped, descriptors that dropped `File`s handed to the
/// backend to close, and the writes of a `Writer` dropped without `close` finish in the
/// background. Call [`wait_idle`](Context::wait_idle) (or
/// [`wait_idle_timeout`](Context::wait_idle_timeout)) before returning from `main`, or
/// that work dies with the process.
///
/// # fork
///
/// A context belongs to the process that made it: in a child after `fork()`, every
/// operation on it, new or in flight at the fork, fails at once with an error that says
/// so. The process-wide context is the exception: [`Context::global`], its handles, and
/// files opened without `.context(..)` carry on in the child on a fresh context of the
/// child's own.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use std::{fs::File, os::unix::io::AsRawFd};
/// let ctx = caio::Context::new()?;
/// let file = File::open("/etc/hostname")?;
/// let data = futures::executor::block_on(ctx.read(4096, file.as_raw_fd(), 0))?;
/// println!("{} bytes via {}", data.len(), ctx.implementation());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    shared: Arc<Shared>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("implementation", &format_args!("{}", self.implementation()))
            .field("max_requests", &self.shared.max_requests)
            .field("backend", &self.shared.backend)
            .finish()
    }
}

impl Context {
    /// A context of the selected implementation (see [`selection`]) with default
    /// settings.
    ///
    /// # Errors
    /// When the backend cannot start (threads cannot be spawned, for example).
    pub fn new() -> Result<Context, Error> {
        Builder::default().build()
    }

    /// A builder for a context with explicit settings.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The process-wide default context, built on first use (used by the file layer
    /// when no context is given). In a child after `fork()`, a fresh one is built: the
    /// parent's threads and kernel context are not in the child.
    ///
    /// # Errors
    /// When the first attempt to build it fails; later calls try again.
    pub fn global() -> Result<Context, Error> {
        let mut g = lock(global_slot());
        if let Some(c) = &*g {
            return Ok(c.clone());
        }
        let c = Context::new()?;
        c.shared.global.store(true, Ordering::Relaxed);
        *g = Some(c.clone());
        Ok(c)
    }

    /// [`Context::global`] for the file layer's futures: the first build (the selection's
    /// probes, the backend's kernel context and threads) runs on a short-lived thread of
    /// its own, never on the thread that polls.
    pub(crate) async fn global_async() -> Result<Context, Error> {
        if let Ok(g) = global_slot().try_lock() {
            if let Some(c) = &*g {
                return Ok(c.clone());
            }
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("caio-start".into())
            .spawn(move || {
                let _ = tx.send(Context::global());
            });
        match spawned {
            Ok(_) => rx.await.unwrap_or_else(|_| Context::global()),
            // No thread to be had: build it here after all.
            Err(_) => Context::global(),
        }
    }

    /// Where new work on this handle goes: its own context, or, for a handle of the
    /// process-wide context inherited across `fork()`, the child's own process-wide
    /// context, so that files opened on it, their writers and their closes carry on.
    fn target(&self) -> Arc<Shared> {
        if self.is_global() && self.shared.is_forked() {
            if let Ok(c) = Context::global() {
                return c.shared;
            }
        }
        Arc::clone(&self.shared)
    }

    /// The context new work on this handle runs on (see `target`).
    pub(crate) fn current(&self) -> Context {
        Context {
            shared: self.target(),
        }
    }

    pub(crate) fn into_shared(self) -> Arc<Shared> {
        self.shared
    }

    /// Whether this is the process-wide default context.
    pub(crate) fn is_global(&self) -> bool {
        self.shared.global.load(Ordering::Relaxed)
    }

    /// Whether this context was made before a `fork()` of this process (then every
    /// operation on it fails at once with an error that says so, unless it is a handle of
    /// the process-wide context, whose work goes to the child's own).
    pub fn is_forked(&self) -> bool {
        self.shared.is_forked()
    }

    /// Which implementation this context runs on.
    pub fn implementation(&self) -> Implementation {
        self.shared.backend.implementation()
    }

    /// What this context has done since it was made: operations submitted, completed and
    /// in flight, what went to a kernel backend's pool, and the per-operation controls
    /// that fell back (see [`Stats`](crate::Stats)). Counted as the context runs; reading
    /// it costs a few atomic loads.
    ///
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let ctx = caio::Context::builder().build()?;
    /// let f = std::fs::File::open("Cargo.toml")?;
    /// # #[cfg(unix)] let fd = std::os::unix::io::AsRawFd::as_raw_fd(&f);
    /// # #[cfg(windows)] let fd = std::os::windows::io::AsRawHandle::as_raw_handle(&f);
    /// ctx.block_on(ctx.read(100, fd, 0))?;
    /// let s = ctx.stats();
    /// assert_eq!((s.submitted, s.completed, s.in_flight), (1, 1, 0));
    /// println!("{s}");
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> crate::Stats {
        self.shared.counters.snapshot()
    }

    /// How many operations may be in flight at once; more wait their turn.
    pub fn max_requests(&self) -> usize {
        self.shared.max_requests
    }

    /// How many operations hold one of the `max_requests` slots now: started and not yet
    /// finished by the backend, including those whose futures were dropped (they keep their
    /// slot and buffer until the kernel or worker is done).
    pub fn in_flight(&self) -> usize {
        self.shared.max_requests - self.shared.limiter.available()
    }

    /// Resolves once nothing is in flight on this context: every operation finished,
    /// those whose futures were dropped included, every descriptor a dropped `File` handed
    /// over closed, and the writes of a [`Writer`](crate::fs::Writer) dropped without
    /// `close` done. Operations started meanwhile are waited for too.
    ///
    /// Call it before a program exits, or before unmounting a filesystem it used: work
    /// still in flight when `main` returns is lost.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let ctx = caio::Context::global()?;
    /// // ... files opened without .context(..) run on it ...
    /// ctx.wait_idle().await;
    /// # Ok(()) }
    /// ```
    pub fn wait_idle(&self) -> WaitIdle {
        WaitIdle {
            shared: self.target(),
        }
    }

    /// Runs `fut` to completion on the calling thread, which waits for this context's
    /// completions itself: the executor for a thread dedicated to I/O, as fio's jobs and a
    /// storage engine's I/O threads are.
    ///
    /// Under another executor a completion takes two wake-ups to reach its task: the kernel
    /// wakes the context's completion thread, which wakes the executor's. Here, when `fut`
    /// is pending, the thread looks at the completion ring for a short, adaptive while,
    /// then sleeps in the kernel's own wait (`io_getevents` on `linux`; on `uring`,
    /// `io_uring_enter` on a ring of this thread's own) and completes what it reaps: one
    /// wake-up per completion, as fio's own loop has. How it batches and when it spins is
    /// told in the `drive` module; what it costs and makes is measured in
    /// `benches/results/`.
    ///
    /// - Any future runs here, not only this context's: a wake from another thread
    ///   interrupts the sleep. With 16 or more operations in flight on `linux`, a wake
    ///   may wait for a quarter of them, at most 10 ms.
    /// - Other threads' operations on this context keep completing. On `linux`, once this
    ///   thread has run user code for 1 to 2 ms (it neither waited nor submitted), the
    ///   completion thread reaps them; on `uring` they are on the shared ring, which keeps
    ///   its completion thread.
    /// - On `uring`, what this thread started in its own ring completes before `block_on`
    ///   returns (a future dropped or handed out with an operation in flight waits for it
    ///   there), and an operation this thread starts completes only while it waits: a
    ///   future started here and then sent to another thread completes when this thread
    ///   next waits, or returns.
    /// - A `block_on` nested in this one (from inside `fut`, on this context or another)
    ///   first sends what this one's tasks queued and, on `uring`, completes what is in
    ///   this thread's ring, so that it may await anything started here. Meanwhile the
    ///   completion thread reaps this context's other operations, looking every
    ///   millisecond.
    /// - One thread drives a context at a time. A second `block_on` on the same context,
    ///   and `block_on` on `thread` and `blocking` contexts, spin and then park, as
    ///   `futures::executor::block_on` would.
    /// - The spin costs CPU time, a few tens of microseconds per wait at most. Waits longer
    ///   than the spin halve it (on a slow disk it all but stops); shorter ones double it,
    ///   so at queue depth 1 on a fast device the thread spins through each read.
    ///
    /// ```no_run
    /// # fn main() -> std::io::Result<()> {
    /// use std::{fs::File, os::unix::io::AsRawFd};
    /// let ctx = caio::Context::new()?;
    /// let file = File::open("/etc/hostname")?;
    /// let data = ctx.block_on(ctx.read(4096, file.as_raw_fd(), 0))?;
    /// println!("{} bytes", data.len());
    /// # Ok(()) }
    /// ```
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        crate::block_on::block_on(&**self.target().backend, fut)
    }

    /// [`wait_idle`](Context::wait_idle) for code that is not async: blocks the calling
    /// thread until nothing is in flight, or `timeout` passes. Whether it went idle.
    pub fn wait_idle_timeout(&self, timeout: Duration) -> bool {
        self.target().wait_idle_timeout(timeout)
    }

    /// Keeps the context from being idle until the guard is dropped: for work that is
    /// promised but not started yet.
    pub(crate) fn hold(&self) -> Hold {
        let shared = self.target();
        shared.held.fetch_add(1, Ordering::AcqRel);
        Hold { shared }
    }

    /// Reads up to `nbytes` at `offset`. Fewer bytes come back only at end of file; at or
    /// past it, an empty buffer. The buffer is allocated by the crate, aligned for
    /// O_DIRECT, and only once the operation's turn comes.
    ///
    /// # Errors
    /// The OS error (EBADF, EISDIR, EINVAL for misaligned O_DIRECT...); `InvalidInput`
    /// for an `nbytes` no allocation can hold.
    pub fn read(&self, nbytes: usize, fd: crate::RawFd, offset: u64) -> ReadFuture {
        op::read(
            self.target(),
            nbytes,
            crate::sys::fd::inner(fd),
            offset,
            None,
        )
    }

    /// Writes all of `data` at `offset`; resolves to the number of bytes written (fewer
    /// only when the OS stopped after writing some, e.g. on a full disk).
    ///
    /// # Errors
    /// The OS error (EBADF, ENOSPC, EINVAL for misaligned O_DIRECT offsets...).
    pub fn write(&self, data: impl Into<Buffer>, fd: crate::RawFd, offset: u64) -> WriteFuture {
        op::write(
            self.target(),
            data.into(),
            crate::sys::fd::inner(fd),
            offset,
            None,
        )
    }

    /// Reads into `buf`, which the caller owns and reuses: up to `buf.capacity()` bytes
    /// at `offset`, from the start of the buffer (what it held is discarded). Resolves to
    /// the byte count and the buffer, whose length is then that count; fewer bytes only at
    /// end of file. The buffer comes back on an error too (its contents then unspecified).
    ///
    /// Nothing is allocated when `buf` is aligned for O_DIRECT or the descriptor is not
    /// O_DIRECT; unaligned memory on an O_DIRECT descriptor is read through an aligned copy.
    /// Dropping the future loses the buffer, but it is freed only once the kernel is done.
    ///
    /// ```no_run
    /// # async fn f(ctx: caio::Context, fd: caio::RawFd) -> std::io::Result<()> {
    /// let mut buf = caio::Buffer::with_capacity(4096);
    /// for block in 0..1000u64 {
    ///     let (n, back) = ctx.read_at_into(buf, fd, block * 4096).await;
    ///     let n = n?;
    ///     assert_eq!(back.len(), n);
    ///     buf = back; // the same memory, for the next read
    /// }
    /// # Ok(()) }
    /// ```
    pub fn read_at_into(&self, buf: Buffer, fd: crate::RawFd, offset: u64) -> BufFuture {
        op::owned(
            self.target(),
            What::ReadInto(buf),
            crate::sys::fd::inner(fd),
            offset,
            None,
        )
    }

    /// Writes all of `buf` at `offset` and hands it back with the count (fewer only when
    /// the OS stopped after writing some), on an error too, for the caller to reuse.
    ///
    /// ```no_run
    /// # async fn f(ctx: caio::Context, fd: caio::RawFd) -> std::io::Result<()> {
    /// let mut buf = caio::Buffer::zeroed(4096);
    /// for block in 0..4u64 {
    ///     buf.fill(block as u8);
    ///     let (n, back) = ctx.write_at_from(buf, fd, block * 4096).await;
    ///     assert_eq!(n?, 4096);
    ///     buf = back;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn write_at_from(&self, buf: Buffer, fd: crate::RawFd, offset: u64) -> BufFuture {
        op::owned(
            self.target(),
            What::Write(buf),
            crate::sys::fd::inner(fd),
            offset,
            None,
        )
    }

    /// Reads at `offset` into several buffers in one operation (`preadv`; `IOCB_CMD_PREADV`
    /// on linux, `READV` on uring): each is filled up to its capacity before the next, as
    /// `std::io::Read::read_vectored` describes, and each buffer's length is what it got.
    /// The total is short only at end of file. The buffers come back on an error too.
    ///
    /// ```no_run
    /// # async fn f(ctx: caio::Context, fd: caio::RawFd) -> std::io::Result<()> {
    /// let bufs = vec![caio::Buffer::with_capacity(512), caio::Buffer::with_capacity(4096)];
    /// let (n, bufs) = ctx.read_vectored_at(bufs, fd, 0).await;
    /// println!("{} bytes: header {}, body {}", n?, bufs[0].len(), bufs[1].len());
    /// # Ok(()) }
    /// ```
    pub fn read_vectored_at(
        &self,
        bufs: Vec<Buffer>,
        fd: crate::RawFd,
        offset: u64,
    ) -> VectoredFuture {
        op::vectored(
            self.target(),
            What::ReadV(bufs),
            crate::sys::fd::inner(fd),
            offset,
            None,
        )
    }

    /// Writes all of several buffers, one after the other, at `offset` in one operation
    /// (`pwritev`; `IOCB_CMD_PWRITEV` on linux, `WRITEV` on uring), and hands them back
    /// with the count (fewer only when the OS stopped after writing some).
    ///
    /// ```no_run
    /// # async fn f(ctx: caio::Context, fd: caio::RawFd) -> std::io::Result<()> {
    /// let (n, _bufs) = ctx
    ///     .write_vectored_at(vec!["header\n".into(), "body\n".into()], fd, 0)
    ///     .await;
    /// assert_eq!(n?, 12);
    /// # Ok(()) }
    /// ```
    pub fn write_vectored_at(
        &self,
        bufs: Vec<Buffer>,
        fd: crate::RawFd,
        offset: u64,
    ) -> VectoredFuture {
        op::vectored(
            self.target(),
            What::WriteV(bufs),
            crate::sys::fd::inner(fd),
            offset,
            None,
        )
    }

    /// Flushes the file's data and metadata to the device (`fsync`).
    ///
    /// # Errors
    /// The OS error.
    pub fn fsync(&self, fd: crate::RawFd) -> SyncFuture {
        op::fsync(self.target(), crate::sys::fd::inner(fd), false, None)
    }

    /// Flushes the file's data (`fdatasync`, or `fsync` where there is none).
    ///
    /// # Errors
    /// The OS error.
    pub fn fdsync(&self, fd: crate::RawFd) -> SyncFuture {
        op::fsync(self.target(), crate::sys::fd::inner(fd), true, None)
    }
}

/// Operations for the file layer: they carry what it knows of the descriptor and keep it
/// open until the backend is done.
impl Context {
    pub(crate) fn read_file(
        &self,
        nbytes: usize,
        fd: RawFd,
        offset: u64,
        file: &FdInfo,
    ) -> ReadFuture {
        op::read(self.target(), nbytes, fd, offset, Some(file.clone()))
    }

    /// [`Context::read_at_into`] and the rest, for the file layer.
    pub(crate) fn owned_file(
        &self,
        what: What,
        fd: RawFd,
        offset: u64,
        file: &FdInfo,
    ) -> BufFuture {
        op::owned(self.target(), what, fd, offset, Some(file.clone()))
    }

    pub(crate) fn vectored_file(
        &self,
        what: What,
        fd: RawFd,
        offset: u64,
        file: &FdInfo,
    ) -> VectoredFuture {
        op::vectored(self.target(), what, fd, offset, Some(file.clone()))
    }

    pub(crate) fn sync_file(&self, fd: RawFd, data_only: bool, file: &FdInfo) -> SyncFuture {
        op::fsync(self.target(), fd, data_only, Some(file.clone()))
    }
}

/// Metadata operations for the file layer: each runs through the backend, never on the
/// thread that polls it (but for the blocking implementation, whose point that is).
impl Context {
    /// A metadata operation; `file` keeps the descriptor open while it runs.
    pub(crate) fn meta<T>(
        &self,
        fd: RawFd,
        meta: Meta,
        file: Option<&FdInfo>,
        output: fn(Completion) -> T,
    ) -> op::Operation<T> {
        op::meta(self.target(), fd, meta, file.cloned(), output)
    }

    /// A metadata operation whose result is nothing but success.
    pub(crate) fn meta_unit(&self, fd: RawFd, meta: Meta, file: Option<&FdInfo>) -> SyncFuture {
        self.meta(fd, meta, file, |_| ())
    }

    /// Runs `f` through the backend: on its threads, or inline for `blocking`. `file`, if
    /// any, keeps its descriptor open while `f` runs.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        file: Option<&FdInfo>,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> op::Operation<T> {
        let call: Call = Box::new(move || f().map(|t| Box::new(t) as Box<dyn Any + Send>));
        self.meta(-1, Meta::Call(call), file, |c| match c.out {
            Out::Any(b) => *b
                .downcast::<T>()
                .expect("a call's output has the type it was made with"),
            _ => unreachable!("a call completes with its output"),
        })
    }

    /// Starts a metadata operation that nobody waits for (a close once the last handle
    /// of a file is gone); an error is logged.
    pub(crate) fn detach(&self, fd: RawFd, meta: Meta, what: &'static str) {
        let plan = Plan {
            fd,
            offset: 0,
            what: What::Meta(meta),
            file: None,
            controls: Default::default(),
        };
        admission::detach(&self.target(), plan, what);
    }
}

/// Where the process-wide context lives. Per process: a child never waits on the lock a
/// parent's thread held at fork(), and never drops the parent's context (its threads and
/// kernel context are not the child's to tear down).
fn global_slot() -> &'static Mutex<Option<Context>> {
    static GLOBAL: PerProcess<Mutex<Option<Context>>> = PerProcess::new();
    GLOBAL.get(|| Mutex::new(None))
}

/// The future of [`Context::wait_idle`].
#[must_use = "it waits only when awaited"]
pub struct WaitIdle {
    shared: Arc<Shared>,
}

impl fmt::Debug for WaitIdle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitIdle")
            .field("idle", &self.shared.is_idle())
            .finish()
    }
}

impl Future for WaitIdle {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        self.shared.poll_idle(cx)
    }
}

/// See [`Context::hold`].
pub(crate) struct Hold {
    shared: Arc<Shared>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.shared.held.fetch_sub(1, Ordering::AcqRel);
        self.shared.notify_if_idle();
    }
}
