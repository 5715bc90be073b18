//! The backends, the contract every one of them meets, and the table of implementations.
//!
//! # The `FileIo` contract
//!
//! A backend receives [`Request`]s (the nouns of the contract are in `request.rs`: the
//! request and its [`Completion`]; the [`Slot`] the future waits on is in `slot.rs`) from
//! [`Operation`](crate::Operation) futures and must:
//!
//! - **Complete every request exactly once**, from any thread, by calling
//!   [`Request::finish`] with the number of bytes moved or the `io::Error`. Completion
//!   stores the result in the operation's slot and wakes its waker; nothing spins, and no
//!   particular runtime is needed. A request dropped without `finish` (a dead worker, a
//!   torn-down context) completes its future with an error, so a future never hangs.
//! - **Own the buffer until the kernel or worker is done with it.** The request owns every
//!   byte the operation touches. The future holds only the slot, so a future dropped
//!   mid-flight frees nothing the kernel may still write into; the backend drops the request
//!   (and with it the buffer) only after the operation has finished.
//! - **Start nothing whose future is gone** ([`Request::is_abandoned`]): a request dropped
//!   before the kernel or a worker took it up is completed unrun, because its descriptor
//!   may have been closed, and its number reused by another file, since. What the kernel
//!   already has runs to completion (or to kernel cancellation) and its result is
//!   discarded. The in-flight permit is given back when the request completes, not when
//!   the future is dropped, so `max_requests` bounds what the kernel really has in flight.
//! - **Cancel on request**: a request whose cancellation was asked for before it started
//!   completes with `ECANCELED` instead of starting ([`Request::is_called_off`], asked
//!   after naming it to the kernel with `Slot::set_kernel` where the kernel can cancel);
//!   one the kernel holds is asked of the kernel ([`FileIo::cancel`]). Either way its
//!   buffers stay the request's until the kernel or worker is done.
//! - **Never block in `Drop`.** When the last handle of a context goes, work in flight
//!   finishes on the backend's own threads, which then release kernel resources.
//! - **Report errors as `io::Error` carrying the OS errno**, the same errno for the same
//!   case on every backend (EBADF for a bad or wrongly opened descriptor, EISDIR for a
//!   directory, ESPIPE for a pipe, ENOSPC...). A read returns at most the bytes asked for,
//!   fewer only at end of file; a write reports how many bytes it wrote.
//! - **Stay `Send + Sync`**: one context is shared by any number of threads.
//!
//! `submit` returns [`Submit::Queued`] when the backend batches: the operation sits in a
//! queue that the next [`FileIo::flush`] (from any operation's next poll) sends to the
//! kernel together with every other queued operation. A completion thread (one that
//! called `completes_for_others`) holds the wakes of a batch of completions back until
//! the batch is complete (`hold_wakes`), so that the operations the batch admits are
//! queued before any of its futures flushes.
//!
//! A backend that reaps completions on a thread of its own may also let another thread
//! (the one in [`Context::block_on`](crate::Context::block_on)) wait for them itself: it
//! implements the [`Drive`] contract (`drive/`) and returns it from [`FileIo::drive`].
//! Under the others, that thread spins briefly, then parks.
//!
//! # The floor plan
//!
//! - `request.rs`: the request and its kinds ([`Kind`], projected to the [`Class`] every
//!   route table is written in), running one on the calling thread, and counting what a
//!   kernel attempt moved ([`Request::advance`]); `slot.rs`: where its result waits for
//!   the future; `plan.rs`: what an operation asked for ([`What`]) becomes a request once
//!   it holds a permit, and what is known of its descriptor ([`Facts`]).
//! - `drive/`: the [`Drive`] contract and what its drivers share (`pace.rs`: how the
//!   driving thread paces its waits); `reactor.rs` (with the `tokio` feature): a task of
//!   the executor that reaps where the kernel signals an eventfd, while the reaper stands
//!   down.
//! - `thread.rs`, `blocking.rs`: the two backends without a kernel queue; the thread pool
//!   is also the kernel backends' [`FallbackPool`](thread::FallbackPool).
//! - `linux/` and `uring/`, with the same rooms: `mod.rs` (the backend, its `FileIo` and
//!   `Drive`), `route.rs` (where each request runs: a pure function with a table test),
//!   `op.rs` (a request as a kernel entry), `ring.rs` (submit, reap, the reaper),
//!   `setup.rs` (making the kernel object, and why it failed); uring's per-thread rings
//!   are `own.rs` (the thread in `block_on`) and `lane.rs` (the threads of an executor);
//!   uring's cancellation is `cancel.rs`.
//!
//! # Adding a backend
//!
//! A backend is one file or folder here and one row of [`TABLE`]: its [`Implementation`]
//! variant, its names (the column in `parse.rs`, shared with `build.rs`), a summary, an
//! availability probe that gives the reason when it fails, and a constructor. Parsing,
//! selection, `Display`, `caio info` and the CLI help all read the table.
//!
//! # Adding an operation
//!
//! - A metadata call: a [`Meta`] variant with its name and its blocking call (three arms
//!   in `request.rs`), and the public method that makes it (`Context` or `caio::fs`).
//!   Every backend then runs it: the route tables send [`Class::Meta`] to a pool, or
//!   inline for `blocking`. To run it natively on io_uring, add its opcode to uring's
//!   `Opcodes`, its probe in `Uring::new`, and its entry in `meta_entry`.
//! - A read or write of a new shape: a [`What`] variant (`plan.rs`: the variant, its
//!   length and buffers, its `Plan::build` arm), a [`Kind`] variant (`request.rs`: the
//!   variant, its class, its name, its blocking run, what a kernel attempt moved), its
//!   kernel entry in `linux/op.rs` and `uring/op.rs`, and the public method. The compiler
//!   names every match that misses it.
use std::fmt;

use crate::parse;

pub(crate) mod blocking;
mod controls;
pub(crate) mod drive;
#[cfg(target_os = "linux")]
pub(crate) mod linux;
mod plan;
#[cfg(all(feature = "tokio", target_os = "linux"))]
pub(crate) mod reactor;
#[cfg(target_os = "linux")]
mod recycle;
mod request;
mod slot;
pub(crate) mod thread;
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub(crate) mod uring;

pub(crate) use controls::Controls;
#[cfg(target_os = "linux")]
pub(crate) use controls::{controlled, Controlled};
pub(crate) use drive::Drive;
#[cfg_attr(not(target_os = "linux"), allow(unused_imports))]
pub(crate) use plan::{is_direct, Facts, FdInfo, Plan, What};
#[cfg(target_os = "linux")]
pub(crate) use recycle::{BoxPool, OpQueue};
#[cfg_attr(not(target_os = "linux"), allow(unused_imports))]
pub(crate) use request::{
    Bufs, Call, Class, Completion, Kind, Meta, Opened, Out, Progress, Request,
};
#[cfg(target_os = "linux")]
pub(crate) use slot::{completes_for_others, hold_wakes};
pub(crate) use slot::{Admission, Completer, Permit, Slot};
#[cfg(test)]
pub(crate) use {request::test_request, slot::take_result};

/// Default number of operations in flight per context.
pub const DEFAULT_MAX_REQUESTS: usize = 256;

/// What `submit` did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Submit {
    /// Running (or already finished): just wait for completion.
    Started,
    /// Queued for a batched submission: call `flush` on the next poll.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Queued,
    /// Queued, and sent by a reap of one of the operations in flight (see [`held`]): the
    /// future just waits, and nothing wakes it before its completion.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Held,
}

/// Below this many operations in flight nothing is held: each scheduler pass sends what
/// it queued.
const HOLD_DEPTH: usize = 16;
/// The smallest batch a held queue grows to before it goes.
const HOLD_BATCH: usize = 8;

/// Whether `queued` operations, not sent yet, wait for more while `inflight` are with the
/// kernel: deep enough that the device keeps two thirds of the depth, and the batch still
/// short of a third of it (and of 64). A held operation is sent by whoever reaps the next
/// completion (it checks this again with one operation fewer in flight), so it cannot wait
/// for ever: once too few are in flight, it goes.
///
/// Why hold: under an executor, the operations of one scheduler pass are as many as the
/// completions that one wake of its reactor found, which at depth is one or a few. Sent
/// as they come, each `io_submit` would carry that many, and each of their futures would
/// need a wake-up of its own to send them; held for a few more completions, a submission
/// carries a batch, and no future is woken for it.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn held(queued: usize, inflight: usize) -> bool {
    let batch = ((queued + inflight) / 3).clamp(HOLD_BATCH, 64);
    inflight >= HOLD_DEPTH && queued < batch
}

/// Whether an operation queued (and not held), with `outstanding` operations queued or in
/// flight counting itself, goes to the kernel now rather than at its future's next poll:
/// when it follows a reap on the same thread (see [`slot::after_reap`]) and, with the
/// operations still expected from that reap, no more than [`HOLD_BATCH`] are outstanding.
/// A device kept this shallow is better served at once than by a second poll of each
/// future. Deeper, or when a reap woke many futures (an executor behind the device, which
/// drains while they run), the operations of the scheduler pass gather into one
/// submission.
#[cfg(target_os = "linux")]
fn sends_at_once(outstanding: usize) -> bool {
    slot::after_reap().is_some_and(|more| outstanding + more <= HOLD_BATCH)
}

/// Queues `op` for a batching backend (linux, uring) with `inflight` in flight, and says
/// what its future does: waits while it is held (see [`held`]); waits once `flush` sent it
/// at once (see [`sends_at_once`]); else flushes at its next poll. The counts are read
/// under the queue's lock (see `OpQueue`).
#[cfg(target_os = "linux")]
pub(crate) fn place<T>(
    queue: &OpQueue<T>,
    op: Box<T>,
    inflight: &std::sync::atomic::AtomicUsize,
    flush: impl FnOnce(),
) -> Submit {
    let mut outstanding = 0;
    let hold = |queued| {
        let inflight = inflight.load(std::sync::atomic::Ordering::Acquire);
        outstanding = queued + inflight;
        held(queued, inflight)
    };
    if queue.push_or_hold(op, hold) {
        Submit::Held
    } else if sends_at_once(outstanding) {
        flush();
        Submit::Started
    } else {
        Submit::Queued
    }
}

#[cfg(test)]
mod held_tests {
    use super::held;

    #[test]
    fn nothing_is_held_below_the_depth_and_a_batch_goes_at_a_third_of_it() {
        // (queued, in flight, held)
        let table = [
            (1, 0, false),
            (1, 15, false),
            (7, 15, false),
            (1, 16, true),
            (7, 17, true),
            (8, 17, false),
            (9, 22, true),
            (10, 22, false),
            (1, 31, true),
            (41, 87, true),
            (42, 86, false),
            (63, 500, true),
            (64, 500, false),
        ];
        for (queued, inflight, want) in table {
            assert_eq!(
                held(queued, inflight),
                want,
                "{queued} queued, {inflight} in flight"
            );
        }
    }
}

/// A way of running file operations; see the module docs for the contract.
pub(crate) trait FileIo: Send + Sync + fmt::Debug {
    /// Which implementation this is.
    fn implementation(&self) -> Implementation;
    /// Takes ownership of `req` and arranges for it to complete exactly once.
    fn submit(&self, req: Request) -> Submit;
    /// Sends the requests the calling thread queued on their way; cheap when nothing is
    /// queued.
    fn flush(&self) {}
    /// Sends every request queued by any thread and owed a flush (a future flushes from
    /// another thread than the one that queued it).
    fn flush_any(&self) {
        self.flush();
    }
    /// Asks the kernel to cancel the operation whose future waits on `slot`, which was
    /// just marked aborted, if the kernel holds it (see `Slot::kernel`). What has not
    /// started yet needs nothing here: the backend completes it with `ECANCELED` where it
    /// would have started it ([`Request::is_called_off`]). Never blocks.
    fn cancel(&self, _slot: &std::sync::Arc<Slot>) {}
    /// Its [`Drive`] contract, when a thread other than its own may reap its completions.
    fn drive(&self) -> Option<&(dyn Drive + 'static)> {
        None
    }
}

/// A way of running file operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Implementation {
    /// Linux io_uring, with one completion thread per ring.
    Uring,
    /// Linux kernel AIO (`io_submit`), with one completion thread per context.
    Linux,
    /// A pool of worker threads doing `pread`/`pwrite`.
    Thread,
    /// The operation runs inline, blocking the polling thread.
    Blocking,
}

/// What a backend is built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub max_requests: usize,
    pub threads: usize,
}

/// One implementation: everything the crate needs to know of it.
pub(crate) struct Row {
    pub implementation: Implementation,
    /// The canonical name and the other spellings that select it.
    pub names: (&'static str, &'static [&'static str]),
    /// One line for `caio info` and the command-line help.
    pub summary: &'static str,
    /// `Ok` when this process can use it now, else why not.
    pub probe: fn() -> Result<(), String>,
    /// Starts an instance, or says why it cannot.
    pub start: fn(Config) -> Result<Box<dyn FileIo>, String>,
}

/// Every implementation, in the built-in order of preference; row `i` takes its names
/// from `parse::NAMES[i]`. linux comes before uring: `caio bench` has uring level with it
/// on O_DIRECT and ahead on sequential transfers, but behind on page-cache reads (the
/// README has the numbers and the reason).
pub(crate) const TABLE: [Row; 4] = [
    Row {
        implementation: Implementation::Linux,
        names: parse::NAMES[0],
        summary: "Linux kernel AIO (io_submit): truly asynchronous for O_DIRECT files",
        probe: linux_probe,
        start: linux_start,
    },
    Row {
        implementation: Implementation::Uring,
        names: parse::NAMES[1],
        summary: "Linux io_uring: asynchronous for buffered and O_DIRECT files and metadata",
        probe: uring_probe,
        start: uring_start,
    },
    Row {
        implementation: Implementation::Thread,
        names: parse::NAMES[2],
        summary: "a pool of worker threads doing pread/pwrite",
        probe: always,
        start: |c| {
            thread::ThreadPool::new(c.threads, c.max_requests)
                .map(|p| Box::new(p) as Box<dyn FileIo>)
                .map_err(|e| format!("cannot spawn worker threads: {e}"))
        },
    },
    Row {
        implementation: Implementation::Blocking,
        names: parse::NAMES[3],
        summary: "inline on the polling thread, blocking it (Python caio's `python`)",
        probe: always,
        start: |_| Ok(Box::new(blocking::Blocking)),
    },
];

/// Why a kernel interface's set-up `call` failed with `e`, in the words every kernel
/// backend shares: a kernel built without the `interface`, and a policy that denies it.
/// A backend explains its own other errors first (limits, sysctls) and ends with this.
#[cfg(target_os = "linux")]
fn setup_error(call: &str, e: &std::io::Error, interface: &str) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => format!("{call}: {e}: the kernel is built without {interface}"),
        Some(libc::EPERM) => format!("{call}: {e}: denied by seccomp or container policy"),
        _ => format!("{call}: {e}"),
    }
}

fn always() -> Result<(), String> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn linux_probe() -> Result<(), String> {
    linux::probe()
}

#[cfg(target_os = "linux")]
fn linux_start(c: Config) -> Result<Box<dyn FileIo>, String> {
    linux::Linux::new(c.max_requests, c.threads)
        .map(|b| Box::new(b) as Box<dyn FileIo>)
        .map_err(|e| e.to_string())
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn uring_probe() -> Result<(), String> {
    uring::probe()
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn uring_start(c: Config) -> Result<Box<dyn FileIo>, String> {
    uring::Uring::new(c.max_requests, c.threads)
        .map(|b| Box::new(b) as Box<dyn FileIo>)
        .map_err(|e| e.to_string())
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn uring_probe() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    return Err("io_uring: caio's uring backend needs a 64-bit target (the io-uring crate)".into());
    #[cfg(not(target_os = "linux"))]
    Err("io_uring exists only on Linux".into())
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn uring_start(_: Config) -> Result<Box<dyn FileIo>, String> {
    uring_probe().map(|()| unreachable!("the probe always fails here"))
}

#[cfg(not(target_os = "linux"))]
fn linux_probe() -> Result<(), String> {
    Err("kernel AIO exists only on Linux".into())
}

#[cfg(not(target_os = "linux"))]
fn linux_start(_: Config) -> Result<Box<dyn FileIo>, String> {
    linux_probe().map(|()| unreachable!("the probe always fails off Linux"))
}

impl Implementation {
    /// Every implementation, in the built-in order of preference.
    pub const ALL: [Implementation; TABLE.len()] = {
        let mut all = [Implementation::Blocking; TABLE.len()];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].implementation;
            i += 1;
        }
        all
    };

    pub(crate) fn row(self) -> &'static Row {
        TABLE
            .iter()
            .find(|r| r.implementation == self)
            .expect("every implementation has a row")
    }

    /// The canonical name: `linux`, `uring`, `thread` or `blocking`.
    pub fn as_str(self) -> &'static str {
        self.row().names.0
    }

    /// Other names that select it (`python` for `blocking`, as in Python caio).
    pub fn aliases(self) -> &'static [&'static str] {
        self.row().names.1
    }

    /// One line saying how it runs operations.
    pub fn summary(self) -> &'static str {
        self.row().summary
    }

    /// Whether this process can use the implementation now. For Linux this really probes
    /// the kernel (`io_setup` may fail with ENOSYS, EPERM under seccomp, or EAGAIN when
    /// `fs.aio-max-nr` is spent).
    pub fn is_available(self) -> bool {
        self.probe().is_ok()
    }

    /// `Ok` when available, else the reason it is not.
    pub(crate) fn probe(self) -> Result<(), String> {
        (self.row().probe)()
    }

    /// Starts an instance of this implementation.
    pub(crate) fn start(self, config: Config) -> Result<Box<dyn FileIo>, String> {
        (self.row().start)(config)
    }
}

impl fmt::Display for Implementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_has_one_row_whose_names_come_from_parse() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.names, parse::NAMES[i]);
            assert_eq!(Implementation::ALL[i], row.implementation);
            let rows = TABLE
                .iter()
                .filter(|r| r.implementation == row.implementation)
                .count();
            assert_eq!(rows, 1, "{}", row.names.0);
            assert_eq!(row.implementation.row().names.0, row.names.0);
        }
        assert_eq!(TABLE.len(), parse::NAMES.len());
    }

    #[test]
    fn every_spelling_parses_to_its_row() {
        for row in &TABLE {
            for name in std::iter::once(&row.names.0).chain(row.names.1) {
                assert_eq!(name.parse::<Implementation>().unwrap(), row.implementation);
            }
        }
    }
}
