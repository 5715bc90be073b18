//! [`Context`] and its [`Builder`].

use std::{any::Any, fmt, io, os::unix::io::RawFd, sync::Arc};

use once_cell::sync::OnceCell;

use crate::{
    admission::{self, Limiter, Shared},
    backend::{Call, Completion, Config, FdInfo, Meta, Out, Plan, What},
    op::{self, ReadFuture, SyncFuture, WriteFuture},
    select::selection,
    Buffer, Error, Implementation,
};

/// Default number of operations in flight per context.
pub const DEFAULT_MAX_REQUESTS: usize = 256;
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
    /// when no context is given).
    ///
    /// # Errors
    /// When the first attempt to build it fails; later calls try again.
    pub fn global() -> Result<Context, Error> {
        static GLOBAL: OnceCell<Context> = OnceCell::new();
        GLOBAL.get_or_try_init(Context::new).cloned()
    }

    /// Which implementation this context runs on.
    pub fn implementation(&self) -> Implementation {
        self.shared.backend.implementation()
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

    /// Reads up to `nbytes` at `offset`. Fewer bytes come back only at end of file; at or
    /// past it, an empty buffer. The buffer is allocated by the crate, aligned for
    /// O_DIRECT, and only once the operation's turn comes.
    ///
    /// # Errors
    /// The OS error (EBADF, EISDIR, EINVAL for misaligned O_DIRECT...); `InvalidInput`
    /// for an `nbytes` no allocation can hold.
    pub fn read(&self, nbytes: usize, fd: RawFd, offset: u64) -> ReadFuture {
        op::read(Arc::clone(&self.shared), nbytes, fd, offset, None)
    }

    /// Writes all of `data` at `offset`; resolves to the number of bytes written (fewer
    /// only when the OS stopped after writing some, e.g. on a full disk).
    ///
    /// # Errors
    /// The OS error (EBADF, ENOSPC, EINVAL for misaligned O_DIRECT offsets...).
    pub fn write(&self, data: impl Into<Buffer>, fd: RawFd, offset: u64) -> WriteFuture {
        op::write(Arc::clone(&self.shared), data.into(), fd, offset, None)
    }

    /// Flushes the file's data and metadata to the device (`fsync`).
    ///
    /// # Errors
    /// The OS error.
    pub fn fsync(&self, fd: RawFd) -> SyncFuture {
        op::fsync(Arc::clone(&self.shared), fd, false, None)
    }

    /// Flushes the file's data (`fdatasync`, or `fsync` where there is none).
    ///
    /// # Errors
    /// The OS error.
    pub fn fdsync(&self, fd: RawFd) -> SyncFuture {
        op::fsync(Arc::clone(&self.shared), fd, true, None)
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
        op::read(
            Arc::clone(&self.shared),
            nbytes,
            fd,
            offset,
            Some(file.clone()),
        )
    }

    pub(crate) fn write_file(
        &self,
        data: Buffer,
        fd: RawFd,
        offset: u64,
        file: &FdInfo,
    ) -> op::Operation<(usize, Buffer)> {
        op::write_returning(
            Arc::clone(&self.shared),
            data,
            fd,
            offset,
            Some(file.clone()),
        )
    }

    pub(crate) fn sync_file(&self, fd: RawFd, data_only: bool, file: &FdInfo) -> SyncFuture {
        op::fsync(Arc::clone(&self.shared), fd, data_only, Some(file.clone()))
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
        op::meta(Arc::clone(&self.shared), fd, meta, file.cloned(), output)
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
        };
        admission::detach(&self.shared, plan, what);
    }
}

/// Settings for a [`Context`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    implementation: Option<Implementation>,
    max_requests: Option<usize>,
    threads: Option<usize>,
}

impl Builder {
    /// Use this implementation; `build` fails with [`Error::Unavailable`] if it cannot.
    pub fn implementation(mut self, i: Implementation) -> Self {
        self.implementation = Some(i);
        self
    }

    /// Operations in flight at once (the kernel queue depth for Linux AIO). Default 256;
    /// 0 or more than 65536 is [`Error::InvalidConfig`] at `build`.
    pub fn max_requests(mut self, n: usize) -> Self {
        self.max_requests = Some(n);
        self
    }

    /// Worker threads, where a pool is used. Default [`default_threads`]; 0 or more than
    /// 1024 is [`Error::InvalidConfig`] at `build`.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Builds the context.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for settings out of range; [`Error::Unavailable`] for an
    /// explicitly chosen implementation this process cannot use; [`Error::Io`] when the
    /// backend cannot start.
    pub fn build(self) -> Result<Context, Error> {
        let max_requests = self.max_requests.unwrap_or(DEFAULT_MAX_REQUESTS);
        if max_requests == 0 || max_requests > MAX_MAX_REQUESTS {
            return Err(Error::InvalidConfig(format!(
                "max_requests must be between 1 and {MAX_MAX_REQUESTS}, not {max_requests}"
            )));
        }
        let threads = self.threads.unwrap_or_else(default_threads);
        if threads == 0 || threads > MAX_THREADS {
            return Err(Error::InvalidConfig(format!(
                "threads must be between 1 and {MAX_THREADS}, not {threads}"
            )));
        }
        let (implementation, explicit) = match self.implementation {
            Some(i) => (i, true),
            None => (selection().implementation, false),
        };
        let config = Config {
            max_requests,
            threads,
        };
        let backend = match implementation.start(config) {
            Ok(b) => b,
            Err(reason) if explicit => {
                return Err(Error::Unavailable {
                    implementation,
                    reason,
                })
            }
            Err(reason) => {
                // Selected earlier but gone now (e.g. fs.aio-max-nr spent since): fall back.
                log::warn!(
                    "caio: {implementation} is unavailable ({reason}); using the thread pool"
                );
                Implementation::Thread
                    .start(config)
                    .map_err(|r| Error::Unavailable {
                        implementation: Implementation::Thread,
                        reason: r,
                    })?
            }
        };
        Ok(Context {
            shared: Arc::new(Shared {
                backend,
                limiter: Limiter::new(max_requests),
                max_requests,
            }),
        })
    }
}
