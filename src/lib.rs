//! # caio: asynchronous file I/O that is really asynchronous
//!
//! All that has `await` in it isn't always really async. Most async file APIs
//! (`tokio::fs`, `async-std`'s) hand every call to a thread pool: the `await` is a thread
//! in disguise. caio says what runs where, and on Linux it offers the real thing: kernel
//! AIO through `io_submit`, with one completion thread per context and none per operation.
//!
//! ## Implementations
//!
//! | implementation | platform | how an operation runs |
//! |---|---|---|
//! | [`Implementation::Linux`] | Linux | kernel AIO (`io_submit`); truly asynchronous with O_DIRECT |
//! | [`Implementation::Uring`] | Linux | io_uring: reads, writes, syncs and metadata on one ring |
//! | [`Implementation::Thread`] | Unix, Windows | a pool of worker threads doing `pread`/`pwrite` |
//! | [`Implementation::Blocking`] | Unix, Windows | inline, blocking the polling thread |
//!
//! On Windows a [`RawFd`] is a `HANDLE`, and positional calls are `ReadFile`/`WriteFile`
//! at an offset; the README's "Using it" lists where the API takes Windows' types.
//!
//! ## Which one runs
//!
//! Chosen once per process, the first time it is needed ([`selection`]):
//! 1. `CAIO_IMPL=linux|uring|thread|python|blocking`, when set and not empty (`python`
//!    means `blocking`, with a warning: upstream caio's `python` is a thread pool, which is
//!    `thread` here); an unknown or unavailable value is a warning, then step 3.
//! 2. Else the `default_implementation` file at the crate root, compiled in: the first
//!    line naming an available implementation wins (for distribution packagers).
//! 3. Else the first available of linux, uring, thread, blocking.
//!
//! ## Two layers
//!
//! - [`Context`]: reads, writes and syncs on raw descriptors, each a `Send + 'static`
//!   future resolving to a [`Buffer`] (aligned for O_DIRECT), a byte count or `()`.
//! - [`File`] and [`fs`]: what `aiofile` gives Python users, and the `tokio::fs` surface.
//!   Positional reads and writes at any alignment (O_DIRECT too), a [`fs::Reader`] and
//!   [`fs::Writer`] implementing `futures::io`'s traits with read-ahead and write-behind,
//!   [`File::lines`], [`File::chunks`], whole-file helpers ([`fs::read`], [`fs::write`],
//!   [`fs::copy`], [`fs::write_atomic`]) and the path functions ([`fs::metadata`],
//!   [`fs::rename`], [`fs::read_dir`]...).
//!
//! No function makes a blocking system call on the thread that polls it: metadata calls
//! (open, close, stat, rename, readdir...) block as surely as reads do, so they run on the
//! backend's threads too. Only [`Implementation::Blocking`] runs anything inline.
//!
//! ## Example
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use std::os::unix::io::AsRawFd;
//! use caio::{Context, Implementation};
//!
//! let dir = std::env::temp_dir().join(format!("caio-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("example");
//! let file = std::fs::OpenOptions::new().read(true).write(true).create(true).open(&path)?;
//! let fd = file.as_raw_fd();
//!
//! let ctx = Context::builder().implementation(Implementation::Thread).build()?;
//! futures::executor::block_on(async {
//!     ctx.write("hello, world", fd, 0).await?;
//!     ctx.fdsync(fd).await?;
//!     let data = ctx.read(5, fd, 7).await?;
//!     assert_eq!(&data[..], b"world");
//!     std::io::Result::Ok(())
//! })?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
#![cfg(any(unix, windows))]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod align;
mod backend;
mod block_on;
mod buffer;
mod context;
mod error;
mod fork;
pub mod fs;
mod notice;
mod parse;
mod select;
mod sync;
mod sys;
// Internal, for the command and the benchmarks (see its docs); its items are not
// documented API.
#[cfg(feature = "cli")]
#[doc(hidden)]
#[allow(missing_docs, missing_debug_implementations)]
pub mod tools;

pub use align::{direct_alignment, AlignmentSource, DirectAlignment, DEFAULT_DIRECT_ALIGNMENT};
pub use buffer::{Buffer, ALIGNMENT};
pub use context::abort::AbortHandle;
pub use context::op::{
    BufFuture, BufOperation, Operation, Priority, ReadFuture, SyncFuture, VectoredFuture,
    WriteFuture,
};
pub use context::stats::{Fallbacks, Stats};
pub use context::{
    default_threads, Builder, Context, WaitIdle, DEFAULT_MAX_REQUESTS, MAX_MAX_REQUESTS,
    MAX_THREADS,
};
pub use error::Error;

/// The raw OS file a [`Context`] reads and writes: a descriptor (`std::os::fd::RawFd`) on
/// Unix, a `HANDLE` (`std::os::windows::io::RawHandle`) on Windows, as `AsRawFd` and
/// `AsRawHandle` give them. On Windows a call at an offset also moves the handle's file
/// pointer, as std's `seek_read` and `seek_write` do.
#[cfg(unix)]
pub type RawFd = std::os::fd::RawFd;
/// The raw OS file a [`Context`] reads and writes: a descriptor (`std::os::fd::RawFd`) on
/// Unix, a `HANDLE` (`std::os::windows::io::RawHandle`) on Windows, as `AsRawFd` and
/// `AsRawHandle` give them. On Windows a call at an offset also moves the handle's file
/// pointer, as std's `seek_read` and `seek_write` do.
#[cfg(windows)]
pub type RawFd = std::os::windows::io::RawHandle;
pub use fs::{File, OpenOptions, ReadMany, ReadManyOptions};
pub use select::{
    default_implementation_file, selection, Implementation, Selection, Source, ENV_VAR,
};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
