//! The Linux kernel AIO backend: raw `io_submit`, one reaper thread per context.
//!
//! # How an operation runs
//!
//! - **Submission is batched.** `submit` only queues the operation; the operation's next
//!   poll calls `flush`, which takes everything queued by then and hands it to the kernel
//!   in one `io_submit`. A burst of N ready operations (a `join_all`, a `FuturesUnordered`,
//!   N tasks woken together) therefore costs a handful of `io_submit` calls, not N.
//! - **Completion is one thread per context** (`caio-aio-reaper`), blocked in
//!   `io_getevents`, which stores each result and wakes the waiting future. No thread is
//!   ever started per operation. It wakes a reap's futures only once the whole reap is
//!   complete (`hold_wakes`): by then every operation their slots admit is queued, so the
//!   first woken future's flush sends them all in one `io_submit`.
//! - **Buffered reads** are tried on the submitting thread with `preadv2(RWF_NOWAIT)`: a
//!   page-cache hit is a memcpy done at once (no ring, no reaper, no thread hop); a miss
//!   fails with `EAGAIN` without touching the disk and is handed to the fallback pool.
//!   (Kernel AIO on a buffered file would perform the whole read inside `io_submit`,
//!   blocking the submitting thread on a cold cache.) The file layer knows which
//!   descriptors are buffered; for a raw descriptor one `fcntl(F_GETFL)` tells.
//! - **O_DIRECT reads** go to the kernel as they are: queued to the device.
//! - **O_DIRECT writes** carry `RWF_NOWAIT` too, so a write that would block inside
//!   `io_submit` (block allocation on ext4, for one) is handed to the pool instead.
//! - **Buffered writes** go to the fallback pool: the kernel writes to the page cache
//!   synchronously inside `io_submit` (and ext4 refuses `RWF_NOWAIT` for them).
//! - **fsync/fdatasync** use `IOCB_CMD_FSYNC`/`IOCB_CMD_FDSYNC`, which the kernel runs on
//!   its own workqueue.
//! - Descriptors that are not regular files or block devices (pipes, directories,
//!   sockets) go to the fallback pool, whose positional syscalls report the same errno the
//!   thread backend does (ESPIPE, EISDIR). For a raw descriptor this costs one
//!   `statx(STATX_TYPE)` per read or write (and the `fcntl` above), and it is not
//!   optional: kernel AIO would consume a pipe's or a socket's data, ignoring the offset.
//!   A `File` costs neither: the file layer knows.
//!
//! The fallback pool is started on first use, so a context that only does O_DIRECT runs
//! on exactly one extra thread.
//!
//! # Ownership and shutdown
//!
//! At submission the request is leaked into the kernel (`Box::into_raw`; its address is
//! the iocb's `aio_data`) and reclaimed by the reaper when its completion arrives, so the
//! buffer outlives any dropped future. When the last handle goes, `Drop` only raises a
//! flag and cancels the wake-up poll (`io_cancel`); the reaper keeps reaping until
//! nothing is in flight, then hands the kernel context to a small idle list and exits. A
//! new context of the same size takes it from there: destroying one waits for an RCU grace
//! period (~30 ms), and contexts made and dropped in quick succession would otherwise pile
//! up in `fs.aio-max-nr` and in threads. Idle contexts are destroyed after a few seconds,
//! by one thread, so a process that stops using kernel AIO gives its share back.
//!
//! # When the kernel says no
//!
//! A context is made only if `io_setup`, `io_submit` and `io_getevents` are all allowed
//! (seccomp can deny any of them); otherwise the thread implementation is used, with the
//! reason. If a policy starts denying `io_submit` later, every operation goes to the pool;
//! if it starts denying `io_getevents`, the reaper takes what is in flight straight from the
//! completion ring the kernel maps into the process, so no operation is left waiting.

use std::{
    cell::UnsafeCell,
    fmt, io,
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

use crate::sync::lock;
use crate::{
    backend::{
        completes_for_others,
        drive::{self, Drive, Driver, Early, LateWakes, Signal, DEEP_BATCH},
        hold_wakes,
        thread::FallbackPool,
        BoxPool, Class, Facts, FileIo, Kind, OpQueue, Request, Submit, DEFAULT_MAX_REQUESTS,
    },
    fork::{Born, PerProcess},
    sys::{self, AioContext, IoEvent, Iocb},
    Implementation,
};

/// `aio_data` of the reaper's wake-up poll (a request's is its non-null address).
const WAKE_TOKEN: u64 = 0;
/// How often a thread in `block_on` looks when it cannot be woken.
const TICK: Duration = Duration::from_millis(1);
/// The longest a thread in `block_on` sleeps before it looks again by itself (only a
/// missed wake would need it; none is known).
const DRIVE_SLEEP: Duration = Duration::from_millis(100);
/// How long a thread in `block_on` waits for a batch of completions at depth before it
/// looks again; also the most a wake from another thread waits then.
///
/// Not shorter: a timeout of 1 ms is the earliest timer on its CPU, so every wait arms
/// and cancels the timer hardware (in a VM, exits to the host), which costs CPU per read;
/// a longer one changes nothing more.
const DEEP_WAIT: Duration = Duration::from_millis(10);
/// Events reaped per `io_getevents`.
const EVENTS: usize = 256;
/// The largest batch the driving thread spins for at depth (see `Drive::spins_deep`).
const SPIN_BATCH: usize = 8;
/// How often a reaper without a wake-up poll checks for shutdown.
const POLL_FALLBACK: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------
// Kernel contexts: creation that survives our own pending destroys, destruction off the
// caller's thread.

/// Kernel contexts this process is destroying right now, and a condvar signalled as each
/// finishes. Per process: a child neither waits for its parent's destroys nor on a lock a
/// parent's thread held at the fork.
fn destroys() -> &'static (Mutex<usize>, Condvar) {
    static DESTROYS: PerProcess<(Mutex<usize>, Condvar)> = PerProcess::new();
    DESTROYS.get(|| (Mutex::new(0), Condvar::new()))
}

fn destroy_started() {
    *lock(&destroys().0) += 1;
}

fn destroy_now(ctx: AioContext) {
    if let Err(e) = sys::io_destroy(ctx) {
        log::error!("caio: io_destroy failed: {e}");
    }
    let mut n = lock(&destroys().0);
    *n -= 1;
    destroys().1.notify_all();
}

/// Destroys `ctx` on a short-lived thread (never on the caller's).
fn destroy_in_background(ctx: AioContext) {
    destroy_started();
    let spawned = thread::Builder::new()
        .name("caio-aio-destroy".into())
        .spawn(move || destroy_now(ctx));
    if let Err(e) = spawned {
        log::warn!(
            "caio: cannot spawn a thread to destroy an AIO context ({e}); destroying inline"
        );
        destroy_now(ctx);
    }
}

/// `io_setup`, retried once our own pending destroys have given their share of
/// `fs.aio-max-nr` back (EAGAIN while they are under way is not exhaustion).
fn setup(nr_events: u32) -> io::Result<AioContext> {
    match sys::io_setup(nr_events) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            let (m, cv) = destroys();
            let pending = lock(m);
            if *pending == 0 {
                return Err(e);
            }
            drop(cv.wait_timeout_while(pending, Duration::from_secs(5), |n| *n > 0));
            sys::io_setup(nr_events)
        }
        r => r,
    }
}

fn read_sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/{name}"))
        .map_or_else(|_| "?".into(), |s| s.trim().to_string())
}

/// Why `io_setup` of `nr_events` failed, in words a user can act on.
fn describe_setup_error(e: &io::Error, nr_events: u32) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSYS) => format!("io_setup: {e}: the kernel is built without AIO"),
        Some(libc::EPERM) => format!("io_setup: {e}: denied by seccomp or container policy"),
        Some(libc::EAGAIN) => {
            let (nr, max) = (read_sysctl("aio-nr"), read_sysctl("aio-max-nr"));
            let room = match (nr.parse::<u64>(), max.parse::<u64>()) {
                (Ok(n), Ok(m)) => m.saturating_sub(n),
                _ => u64::MAX,
            };
            if u64::from(nr_events) > room {
                format!(
                    "io_setup: {e}: a context for {} requests needs {nr_events} AIO events, \
                     and fs.aio-max-nr {max} less aio-nr {nr} leaves {room}: lower \
                     max_requests or raise fs.aio-max-nr",
                    nr_events - 1
                )
            } else {
                format!("io_setup: {e}: fs.aio-max-nr is spent (aio-nr {nr} of aio-max-nr {max})")
            }
        }
        _ => format!("io_setup: {e}"),
    }
}

/// Whether this process may submit and reap on `ctx`: a seccomp policy can deny
/// `io_submit` or `io_getevents` while allowing `io_setup`. Both calls are empty ones.
fn check_allowed(ctx: AioContext) -> Result<(), String> {
    // SAFETY: no iocb is submitted.
    if let Err(e) = unsafe { sys::io_submit(ctx, &mut []) } {
        return Err(format!(
            "io_submit: {e}: denied by seccomp or container policy"
        ));
    }
    if let Err(e) = sys::io_getevents(ctx, 0, &mut [], Some(Duration::ZERO)) {
        return Err(format!(
            "io_getevents: {e}: denied by seccomp or container policy"
        ));
    }
    Ok(())
}

/// A kernel context of `nr_events`, from the idle ones or new, that this process may use.
fn context(nr_events: u32) -> Result<AioContext, String> {
    let ctx = match take_idle(nr_events) {
        Some(ctx) => ctx,
        None => setup(nr_events).map_err(|e| describe_setup_error(&e, nr_events))?,
    };
    if let Err(reason) = check_allowed(ctx) {
        destroy_in_background(ctx);
        return Err(reason);
    }
    Ok(ctx)
}

/// Whether this process can create a kernel AIO context of the size the default context
/// needs now (`DEFAULT_MAX_REQUESTS + 1` events), and use it. The one made is kept idle,
/// for the default context to take.
pub(crate) fn probe() -> Result<(), String> {
    let nr_events = DEFAULT_MAX_REQUESTS as u32 + 1;
    let ctx = context(nr_events)?;
    put_idle(nr_events, ctx);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Idle kernel contexts, kept for reuse: creating one is cheap, but destroying one waits
// for an RCU grace period (~30 ms), so contexts made and dropped in quick succession would
// otherwise pile up in fs.aio-max-nr and in threads waiting to destroy them.

/// Idle contexts kept at most; each holds its events of fs.aio-max-nr.
const IDLE_MAX: usize = 4;
/// How long an idle context is kept: long enough for churn to reuse it, short enough
/// that a process that stopped using kernel AIO gives its share of fs.aio-max-nr back.
const IDLE_FOR: Duration = Duration::from_secs(3);

struct Idle {
    born: Born,
    nr_events: u32,
    ctx: AioContext,
    since: Instant,
}

/// Idle contexts, and whether a reclaimer thread is watching them.
static IDLE: Mutex<(Vec<Idle>, bool)> = Mutex::new((Vec::new(), false));
/// Signalled when a context becomes idle or is destroyed.
static IDLE_CV: Condvar = Condvar::new();
/// Contexts whose backend is dropped and whose reaper has not handed them back yet.
static CLOSING: AtomicUsize = AtomicUsize::new(0);

/// A context's reaper is done with it (it is idle or being destroyed).
fn closed() {
    let _idle = lock(&IDLE);
    CLOSING.fetch_sub(1, Ordering::AcqRel);
    IDLE_CV.notify_all();
}

/// An idle context of exactly `nr_events` made in this process (not a parent's). When a
/// context is being closed, waits a little for it: a program that drops a context and
/// makes another reuses the kernel context instead of piling them up.
fn take_idle(nr_events: u32) -> Option<AioContext> {
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut idle = lock(&IDLE);
    loop {
        // A parent's contexts are not ours to use or destroy.
        idle.0.retain(|i| !i.born.is_inherited());
        if let Some(k) = idle.0.iter().position(|i| i.nr_events == nr_events) {
            return Some(idle.0.swap_remove(k).ctx);
        }
        let now = Instant::now();
        if CLOSING.load(Ordering::Acquire) == 0 || now >= deadline {
            return None;
        }
        idle = IDLE_CV
            .wait_timeout(idle, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Keeps `ctx` for reuse for a while, or destroys it when enough are kept. Called with
/// nothing in flight on it.
fn put_idle(nr_events: u32, ctx: AioContext) {
    let mut idle = lock(&IDLE);
    if idle.0.len() >= IDLE_MAX {
        drop(idle);
        return destroy_in_background(ctx);
    }
    idle.0.push(Idle {
        born: Born::here(),
        nr_events,
        ctx,
        since: Instant::now(),
    });
    if !idle.1 {
        let spawned = thread::Builder::new()
            .name("caio-aio-idle".into())
            .spawn(reclaim_idle);
        idle.1 = spawned.is_ok();
    }
}

/// Destroys idle contexts once they have waited `IDLE_FOR`; exits when none is left.
fn reclaim_idle() {
    loop {
        thread::sleep(IDLE_FOR / 3);
        let expired: Vec<AioContext> = {
            let mut idle = lock(&IDLE);
            let now = Instant::now();
            // Allocates only when one expires: this runs beside programs that count theirs.
            let mut old = Vec::new();
            idle.0.retain(|i| {
                let expired = now - i.since >= IDLE_FOR;
                if expired {
                    old.push(i.ctx);
                }
                !expired
            });
            if idle.0.is_empty() {
                idle.1 = false;
            }
            old
        };
        for ctx in expired {
            destroy_started();
            destroy_now(ctx);
        }
        if !lock(&IDLE).1 {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Routing: how each request runs, decided in one place.

/// Where a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Kernel AIO as it is: O_DIRECT reads the file layer knows, and syncs
    /// (`IOCB_CMD_FSYNC`/`FDSYNC` run on the kernel's workqueue).
    Kernel,
    /// Kernel AIO with `RWF_NOWAIT`: O_DIRECT writes (block allocation would block inside
    /// `io_submit`; what would block comes back EAGAIN and is routed by
    /// [`route_would_block`]).
    KernelNowait,
    /// `preadv2(RWF_NOWAIT)` on the submitting thread, a miss to the pool: buffered reads.
    InlineCached,
    /// The fallback pool: buffered writes (the kernel would copy them inside `io_submit`),
    /// and anything that is not a regular file or block device.
    Pool,
}

/// How a request runs, from what it is and what its descriptor is.
fn route(class: Class, facts: Facts) -> Route {
    match (class, facts.seekable, facts.direct) {
        (Class::Meta, _, _) => Route::Pool,
        (Class::Sync, _, _) => Route::Kernel,
        (_, false, _) => Route::Pool,
        (Class::Read, true, true) => Route::Kernel,
        (Class::Read, true, false) => Route::InlineCached,
        (Class::Write, true, true) => Route::KernelNowait,
        (Class::Write, true, false) => Route::Pool,
    }
}

/// Where a request submitted with `RWF_NOWAIT` goes when the kernel says it would block
/// (EAGAIN, or EOPNOTSUPP where the filesystem has no NOWAIT path): an O_DIRECT read is
/// what the kernel queues without blocking, so it is resubmitted plainly; anything else (a
/// page-cache miss, a write needing block allocation) is run by the pool.
fn route_would_block(class: Class, direct: bool) -> Route {
    match (class, direct) {
        (Class::Read, true) => Route::Kernel,
        _ => Route::Pool,
    }
}

// ---------------------------------------------------------------------------------------
// Requests in the kernel.

/// A request on its way through the kernel: the iocb the kernel reads and the request
/// that owns the memory it points into.
struct AioOp {
    iocb: Iocb,
    req: Request,
    /// Submitted with RWF_NOWAIT: EAGAIN/EOPNOTSUPP mean "run it elsewhere".
    nowait: bool,
    /// Bytes asked of the kernel in this attempt.
    len: usize,
}

impl AioOp {
    fn new(mut req: Request, nowait: bool) -> AioOp {
        let mut iocb = Iocb {
            aio_fildes: req.fd as u32,
            aio_rw_flags: if nowait { libc::RWF_NOWAIT } else { 0 },
            ..Iocb::default()
        };
        let mut len = 0;
        match &mut req.kind {
            Kind::Read(buf) => {
                let (ptr, room) = buf.spare_ptr();
                iocb.aio_lio_opcode = sys::IOCB_CMD_PREAD;
                iocb.aio_buf = ptr as u64;
                iocb.aio_offset = (req.offset + buf.len() as u64) as i64;
                len = room;
            }
            Kind::Write(buf) => {
                let rest = &buf[req.written..];
                iocb.aio_lio_opcode = sys::IOCB_CMD_PWRITE;
                iocb.aio_buf = rest.as_ptr() as u64;
                iocb.aio_offset = (req.offset + req.written as u64) as i64;
                len = rest.len();
            }
            Kind::ReadV(v) => {
                let done = v.filled();
                let (iov, room) = v.read_iov();
                iocb.aio_lio_opcode = sys::IOCB_CMD_PREADV;
                iocb.aio_buf = iov.as_ptr() as u64;
                iocb.aio_offset = (req.offset + done as u64) as i64;
                iocb.aio_nbytes = iov.len() as u64;
                len = room;
            }
            Kind::WriteV(v) => {
                let (iov, rest) = v.write_iov(req.written);
                iocb.aio_lio_opcode = sys::IOCB_CMD_PWRITEV;
                iocb.aio_buf = iov.as_ptr() as u64;
                iocb.aio_offset = (req.offset + req.written as u64) as i64;
                iocb.aio_nbytes = iov.len() as u64;
                len = rest;
            }
            Kind::Fsync => iocb.aio_lio_opcode = sys::IOCB_CMD_FSYNC,
            Kind::Fdsync => iocb.aio_lio_opcode = sys::IOCB_CMD_FDSYNC,
            Kind::Meta(_) => unreachable!("metadata operations are routed to the pool"),
        }
        if !matches!(req.kind, Kind::ReadV(_) | Kind::WriteV(_)) {
            // A vectored command's count is of iovecs, set above.
            iocb.aio_nbytes = len as u64;
        }
        AioOp {
            iocb,
            req,
            nowait,
            len,
        }
    }
}

/// The wake-up poll: a poll on an eventfd whose completion ends a wait in `io_getevents`.
/// `Drop` fires it (or cancels it) to wake the reaper at shutdown; a wake of a thread in
/// `Context::block_on` fires it to end that thread's sleep. It is armed again after each
/// firing, until shutdown.
struct Wake {
    /// Shared with the wakers of a thread in `block_on`, so that a waker that outlives
    /// the context never writes to a reused descriptor number.
    efd: Arc<OwnedFd>,
    iocb: Box<UnsafeCell<Iocb>>,
    /// Submitted and not reaped yet.
    armed: AtomicBool,
}

/// Who reaped a completion.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reaper {
    /// The thread in `block_on`.
    Driver,
    /// The reaper, or a submitter's `reap_ready`.
    Other,
}

/// What the backend and its reaper share.
struct Ring {
    ctx: AioContext,
    /// Requests handed to the kernel and not reaped yet.
    inflight: AtomicUsize,
    shutdown: AtomicBool,
    /// A seccomp policy started denying io_submit or io_getevents: nothing more goes to
    /// the kernel; what is there is reaped from the ring in user space.
    degraded: AtomicBool,
    nr_events: u32,
    wake: Option<Wake>,
    /// For what the kernel cannot do without blocking.
    pool: FallbackPool,
    /// Boxes of finished operations, for the next ones.
    ops: BoxPool<AioOp>,
    /// A thread in `Context::block_on` that waits for completions itself.
    driver: Driver,
    /// Held while the ring is reaped in user space, which must overlap no other reap of it
    /// (the kernel serializes only its own): every `io_getevents` that may return events
    /// first counts itself in `kernel_reaps` under this lock, and a reap in user space
    /// happens only while that count is 0.
    user_reap: Mutex<()>,
    /// `io_getevents` calls that may return events, running now.
    kernel_reaps: AtomicUsize,
}

/// Why the ring could not be reaped in user space.
enum NoUserReap {
    /// Another thread reaps it in the kernel now.
    Busy,
    /// The ring is not in the layout this code knows.
    Layout,
}

// SAFETY: the only non-Sync part is the wake-up iocb in an UnsafeCell, which Rust code
// never reads or writes after building it: only the kernel touches it (in io_submit and
// io_cancel), and it is submitted by one thread at a time (`armed`).
// Everything else is atomics or Sync types.
unsafe impl Sync for Ring {}

impl Ring {
    /// Runs `req` (or what is left of it) on the fallback pool.
    fn to_pool(&self, req: Request) {
        self.pool.run(req);
    }

    /// Boxes an operation (the kernel is given its address, which must not move).
    fn op(&self, req: Request, nowait: bool) -> Box<AioOp> {
        self.ops.boxed(AioOp::new(req, nowait))
    }

    /// Hands a batch to the kernel; what it refuses is completed or rerouted here.
    fn submit(&self, batch: impl IntoIterator<Item = Box<AioOp>>) {
        const CHUNK: usize = 128;
        let mut iocbs = [std::ptr::null_mut::<Iocb>(); CHUNK];
        let mut ops = batch.into_iter().peekable();
        while ops.peek().is_some() {
            let mut n = 0;
            for op in ops.by_ref().take(CHUNK) {
                let p = Box::into_raw(op);
                // SAFETY: `p` comes from Box::into_raw just above: valid and unaliased.
                // Its address is how the completion finds its way back.
                unsafe {
                    (*p).iocb.aio_data = p as u64;
                    iocbs[n] = &raw mut (*p).iocb;
                }
                n += 1;
            }
            self.inflight.fetch_add(n, Ordering::AcqRel);
            let mut i = 0;
            while i < n {
                // SAFETY: every iocb points into its own leaked AioOp, whose request owns
                // the buffer; both stay alive and unmoved until the reaper reclaims the op.
                match unsafe { sys::io_submit(self.ctx, &mut iocbs[i..n]) } {
                    Ok(k) if k > 0 => i += k,
                    r => {
                        // iocbs[i] was not submitted: reclaim it.
                        // SAFETY: the kernel did not take it; its aio_data is the leaked
                        // AioOp's address, which we still own, once.
                        let op = unsafe { Box::from_raw((*iocbs[i]).aio_data as *mut AioOp) };
                        self.inflight.fetch_sub(1, Ordering::AcqRel);
                        i += 1;
                        match r {
                            // The kernel is out of resources for now: run it on threads.
                            Ok(_) => self.to_pool(self.ops.unbox(op).req),
                            // A seccomp policy now denies io_submit: threads from now on.
                            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                                if !self.degraded.swap(true, Ordering::AcqRel) {
                                    log::warn!(
                                        "caio: io_submit failed ({e}); operations go to threads"
                                    );
                                }
                                self.to_pool(self.ops.unbox(op).req)
                            }
                            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && !op.nowait => {
                                self.to_pool(self.ops.unbox(op).req)
                            }
                            Err(e) => {
                                self.complete(op, -i64::from(e.raw_os_error().unwrap_or(libc::EIO)))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Completes reaped events.
    fn complete_events(&self, events: &[IoEvent], by: Reaper) {
        // Every operation the batch admits is queued before its futures run on another
        // thread. (The thread in `block_on` polls its tasks after this returns anyway.)
        let _held = (by == Reaper::Other).then(hold_wakes);
        for ev in events {
            if ev.data == WAKE_TOKEN {
                self.woken(by);
                continue;
            }
            // SAFETY: `data` is the address leaked by Box::into_raw at submission; the
            // kernel reports each submitted iocb exactly once, to exactly one reaper.
            let op = unsafe { Box::from_raw(ev.data as *mut AioOp) };
            self.complete(op, ev.res);
            self.inflight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Completes, on the calling thread, what the kernel already finished (page-cache hits
    /// complete inside `io_submit`), with no hop through the reaper. Never waits. A fired
    /// wake-up poll among them is passed on (see `woken`).
    fn reap_ready(&self) {
        // SAFETY: the context lives as long as the ring.
        if unsafe { sys::ring_pending(self.ctx) } == 0 {
            return;
        }
        let mut events = [IoEvent::default(); 64];
        if let Ok(n) = self.reap_now(&mut events) {
            self.complete_events(&events[..n], Reaper::Other);
        }
    }

    /// Runs `getevents`, an `io_getevents` call, as a kernel reap: no reap in user space
    /// overlaps it.
    fn kernel_reap<R>(&self, getevents: impl FnOnce() -> R) -> R {
        {
            let _g = lock(&self.user_reap);
            self.kernel_reaps.fetch_add(1, Ordering::AcqRel);
        }
        let r = getevents();
        self.kernel_reaps.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Takes what the ring holds in user space, with no system call, unless another
    /// thread reaps it in the kernel right now.
    fn reap_user(&self, events: &mut [IoEvent]) -> Result<usize, NoUserReap> {
        let _g = lock(&self.user_reap);
        if self.kernel_reaps.load(Ordering::Acquire) > 0 {
            return Err(NoUserReap::Busy);
        }
        // SAFETY: the context lives as long as the ring, and no other reap overlaps this
        // one: reaps in user space hold `user_reap`, and every kernel reap counts itself
        // in `kernel_reaps` under it before it starts (`kernel_reap`), and is over when it
        // stops counting.
        unsafe { sys::ring_reap(self.ctx, events) }.ok_or(NoUserReap::Layout)
    }

    /// Takes what the ring holds without waiting: in user space when it can, else with
    /// `io_getevents`.
    fn reap_now(&self, events: &mut [IoEvent]) -> io::Result<usize> {
        match self.reap_user(events) {
            Ok(n) => Ok(n),
            Err(_) => {
                self.kernel_reap(|| sys::io_getevents(self.ctx, 0, events, Some(Duration::ZERO)))
            }
        }
    }

    /// Submits the wake-up poll unless it is in the kernel already; `false` if it cannot
    /// be (there is none before Linux 4.18, or the kernel refused it for now).
    fn arm_wake(&self) -> bool {
        let Some(w) = &self.wake else {
            return false;
        };
        if w.armed.swap(true, Ordering::SeqCst) {
            return true;
        }
        // SAFETY: the iocb is boxed (stable address) and lives as long as the ring, which
        // outlives the context; `armed` makes this the only submission until its
        // completion is reaped. It carries no buffer.
        match unsafe { sys::io_submit(self.ctx, &mut [w.iocb.get()]) } {
            Ok(1) => true,
            _ => {
                w.armed.store(false, Ordering::SeqCst);
                false
            }
        }
    }

    /// Cancels the wake-up poll if it is armed (its completion still arrives), or makes it
    /// fire.
    fn cancel_wake(&self) {
        let Some(w) = &self.wake else {
            return;
        };
        if !w.armed.load(Ordering::SeqCst) {
            return;
        }
        // SAFETY: the iocb lives as long as the ring; the kernel only looks it up.
        if unsafe { sys::io_cancel(self.ctx, w.iocb.get()) }.is_err() {
            let _ = sys::eventfd_signal(w.efd.as_raw_fd());
        }
    }

    /// The wake-up poll fired: shutdown, or a wake for the thread in `block_on`.
    fn woken(&self, by: Reaper) {
        let Some(w) = &self.wake else {
            return;
        };
        // Reset the counter (a non-blocking read), so that the next poll waits.
        let _ = sys::eventfd_wait(w.efd.as_raw_fd());
        w.armed.store(false, Ordering::SeqCst);
        if self.shutdown.load(Ordering::SeqCst) {
            return; // the reaper's wake-up: it exits once nothing is in flight
        }
        if !self.arm_wake() {
            return;
        }
        if self.shutdown.load(Ordering::SeqCst) {
            // `Drop` may have looked at `armed` before it was set again.
            return self.cancel_wake();
        }
        if by == Reaper::Other && self.driver.is_other() {
            // The driving thread may be asleep waiting for this very wake: pass it on.
            let _ = sys::eventfd_signal(w.efd.as_raw_fd());
        }
    }

    /// Handles one completion (`res` is bytes or a negative errno). A finished operation
    /// completes where it is, and its box is kept for the next one; one that runs on (in
    /// the pool, or in the kernel again) moves out.
    fn complete(&self, mut op: Box<AioOp>, res: i64) {
        let (nowait, len) = (op.nowait, op.len);
        let req = &mut op.req;
        if res < 0 {
            let errno = (-res) as i32;
            if nowait && (errno == libc::EAGAIN || errno == libc::EOPNOTSUPP) {
                // It would have blocked: run it where it will not.
                let direct = match &req.file {
                    Some(f) => f.facts.direct,
                    None => sys::is_direct(req.fd).unwrap_or(false),
                };
                let route = route_would_block(req.kind.class(), direct);
                let req = self.ops.unbox(op).req;
                return match route {
                    Route::Kernel => self.submit([self.op(req, false)]),
                    _ => self.to_pool(req),
                };
            }
            req.finish_in_place(Err(io::Error::from_raw_os_error(errno)));
            return self.ops.recycle(op);
        }
        let n = (res as usize).min(len);
        let total = match &mut req.kind {
            Kind::Read(buf) => {
                // SAFETY: the kernel wrote `n <= len` bytes at the spare pointer the iocb
                // was built with, and nothing has touched the buffer since.
                unsafe { buf.advance(n) };
                buf.len()
            }
            Kind::ReadV(v) => {
                // SAFETY: the kernel wrote `n <= len` bytes through the iovecs the iocb
                // was built with, in order, and nothing has touched the buffers since.
                unsafe { v.advance(n) };
                v.filled()
            }
            Kind::Write(_) | Kind::WriteV(_) => {
                req.written += n;
                req.written
            }
            _ => 0,
        };
        if n > 0 && n < len {
            // Short but not at an error: a partly cached NOWAIT read, a transfer over the
            // kernel's per-call limit, or end of file. The pool finishes (or confirms) it.
            return self.to_pool(self.ops.unbox(op).req);
        }
        if n > 0 && req.has_more() {
            // A vectored transfer of more iovecs than one command takes: the next ones.
            let req = self.ops.unbox(op).req;
            return self.submit([self.op(req, nowait)]);
        }
        req.finish_in_place(Ok(total));
        self.ops.recycle(op);
    }
}

fn reaper(ring: Arc<Ring>) {
    ring.driver.register_reaper();
    completes_for_others();
    let mut events = vec![IoEvent::default(); EVENTS];
    let timeout = if ring.wake.is_some() {
        None
    } else {
        Some(POLL_FALLBACK)
    };
    loop {
        if ring.driver.is_active() {
            // A thread in `block_on` waits for completions itself: only look.
            let looked = ring.driver.tick(|| {
                ring.reap_now(&mut events)
                    .map(|n| ring.complete_events(&events[..n], Reaper::Other))
            });
            if let Some(Err(e)) = looked {
                return reap_in_user_space(&ring, &e);
            }
            continue;
        }
        match ring.kernel_reap(|| sys::io_getevents(ring.ctx, 1, &mut events, timeout)) {
            Ok(n) => ring.complete_events(&events[..n], Reaper::Other),
            Err(e) => return reap_in_user_space(&ring, &e),
        }
        let wake_armed = ring
            .wake
            .as_ref()
            .is_some_and(|w| w.armed.load(Ordering::SeqCst));
        if ring.shutdown.load(Ordering::Acquire)
            && ring.inflight.load(Ordering::Acquire) == 0
            && !wake_armed
        {
            break;
        }
    }
    put_idle(ring.nr_events, ring.ctx);
    closed();
}

/// `io_getevents` failed (a seccomp policy installed after the context was made denies
/// it): nothing more goes to the kernel, and what is in flight is reaped straight from the
/// ring the kernel maps into the process, so every operation still completes.
fn reap_in_user_space(ring: &Ring, e: &io::Error) {
    ring.degraded.store(true, Ordering::Release);
    log::warn!(
        "caio: io_getevents failed ({e}); reaping in user space, new operations go to threads"
    );
    let mut events = [IoEvent::default(); 64];
    while ring.inflight.load(Ordering::Acquire) > 0 {
        // The context lives until this thread destroys it below. Reaps in the kernel fail
        // now, but one started before the policy may still wait: `Busy` until it returns.
        match ring.reap_user(&mut events) {
            Ok(0) | Err(NoUserReap::Busy) => thread::sleep(Duration::from_millis(1)),
            Ok(n) => ring.complete_events(&events[..n], Reaper::Other),
            Err(NoUserReap::Layout) => {
                // An unknown ring layout: leaking what is in flight is safe, spinning not.
                log::error!("caio: the AIO ring cannot be read; in-flight operations are lost");
                break;
            }
        }
    }
    while !ring.shutdown.load(Ordering::Acquire) {
        thread::sleep(POLL_FALLBACK);
    }
    destroy_started();
    destroy_now(ring.ctx);
    closed();
}

/// The Linux kernel AIO backend.
pub(crate) struct Linux {
    ring: Arc<Ring>,
    /// The process it was made in: in a child the kernel context and the reaper
    /// are the parent's, and dropping must not touch them.
    born: Born,
    /// What the next flush sends to the kernel.
    queue: OpQueue<AioOp>,
    /// When the driving thread sends what it queued before its poll ends.
    early: Early,
    /// Whether the driving thread spins through its waits at depth.
    late: LateWakes,
}

// SAFETY: `AioOp`s in the queue hold raw pointers (inside the iocb, as integers) into
// buffers their own `Request` owns; moving them between threads moves that ownership whole.
unsafe impl Send for Linux {}
// SAFETY: the queue is behind a mutex; the ring is Sync.
unsafe impl Sync for Linux {}

impl fmt::Debug for Linux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Linux")
            .field("inflight", &self.ring.inflight.load(Ordering::Relaxed))
            .field("wake_poll", &self.ring.wake.is_some())
            .finish()
    }
}

impl Linux {
    /// A kernel context with room for `max_requests` operations, and its reaper.
    pub(crate) fn new(max_requests: usize, threads: usize) -> io::Result<Linux> {
        // One event more for the wake-up poll.
        let nr_events = max_requests as u32 + 1;
        let ctx = context(nr_events).map_err(io::Error::other)?;
        let wake = sys::eventfd().ok().and_then(|efd| {
            let iocb = Box::new(UnsafeCell::new(Iocb {
                aio_data: WAKE_TOKEN,
                aio_lio_opcode: sys::IOCB_CMD_POLL,
                aio_fildes: efd.as_raw_fd() as u32,
                aio_buf: libc::POLLIN as u64,
                ..Iocb::default()
            }));
            // SAFETY: the iocb is boxed (stable address) and lives as long as the ring; the
            // kernel copies it at submission and reads it again only in io_cancel, which
            // `Drop` calls while the ring lives. It carries no buffer.
            match unsafe { sys::io_submit(ctx, &mut [iocb.get()]) } {
                Ok(1) => Some(Wake {
                    efd: Arc::new(efd),
                    iocb,
                    armed: AtomicBool::new(true),
                }),
                _ => None, // no IOCB_CMD_POLL (before Linux 4.18): poll for shutdown instead
            }
        });
        let ring = Arc::new(Ring {
            ctx,
            inflight: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
            nr_events,
            wake,
            pool: FallbackPool::new(threads, max_requests),
            ops: BoxPool::new(max_requests),
            driver: Driver::new(),
            user_reap: Mutex::new(()),
            kernel_reaps: AtomicUsize::new(0),
        });
        let r = Arc::clone(&ring);
        if let Err(e) = thread::Builder::new()
            .name("caio-aio-reaper".into())
            .spawn(move || reaper(r))
        {
            destroy_in_background(ctx);
            return Err(e);
        }
        Ok(Linux {
            ring,
            born: Born::here(),
            queue: OpQueue::new(),
            early: Early::default(),
            late: LateWakes::default(),
        })
    }
}

impl Linux {
    /// Queues an operation for the next flush's batched `io_submit`; in `block_on`, a
    /// large batch goes in parts (see [`Early`]).
    fn queue(&self, req: Request, nowait: bool) -> Submit {
        let op = self.ring.op(req, nowait);
        let queued = self.queue.push(op);
        if drive::drives(self) && self.early.queued(queued) {
            self.flush();
        }
        Submit::Queued
    }

    /// A read on a descriptor known to be buffered: `preadv2(RWF_NOWAIT)` until the buffer
    /// is full, the file ends, or the page cache runs out (then the pool finishes it).
    fn read_cached(&self, mut req: Request) -> Submit {
        let (fd, offset) = (req.fd, req.offset);
        let Kind::Read(buf) = &mut req.kind else {
            unreachable!("reads only")
        };
        loop {
            let (ptr, room) = buf.spare_ptr();
            if room == 0 {
                break;
            }
            // SAFETY: `ptr` points at `room` writable bytes owned by the request's buffer.
            match unsafe { sys::pread_nowait(fd, ptr, room, offset + buf.len() as u64) } {
                Ok(0) => break,
                // SAFETY: the kernel wrote `n <= room` bytes at `ptr`.
                Ok(n) => unsafe { buf.advance(n) },
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EOPNOTSUPP)) => {
                    self.ring.to_pool(req);
                    return Submit::Started;
                }
                Err(_) if !buf.is_empty() => break,
                Err(e) => {
                    req.finish(Err(e));
                    return Submit::Started;
                }
            }
        }
        let n = buf.len();
        req.finish(Ok(n));
        Submit::Started
    }
}

impl FileIo for Linux {
    fn implementation(&self) -> Implementation {
        Implementation::Linux
    }

    fn submit(&self, req: Request) -> Submit {
        if self.ring.degraded.load(Ordering::Acquire) {
            self.ring.to_pool(req);
            return Submit::Started;
        }
        if req.reads_memory() {
            // tmpfs or ramfs: a memory copy that cannot wait for a device, where
            // RWF_NOWAIT would answer EOPNOTSUPP and send every read to the pool.
            req.run_here();
            return Submit::Started;
        }
        let facts = match Facts::of(&req) {
            Ok(f) => f,
            Err(e) => {
                req.finish(Err(e));
                return Submit::Started;
            }
        };
        match route(req.kind.class(), facts) {
            Route::Kernel => self.queue(req, false),
            Route::KernelNowait => self.queue(req, true),
            // preadv2 takes several iovecs too, but a vectored read is rare enough to take
            // the kernel's NOWAIT path (a hit completes inside io_submit all the same).
            Route::InlineCached if matches!(req.kind, Kind::ReadV(_)) => self.queue(req, true),
            Route::InlineCached => self.read_cached(req),
            Route::Pool => {
                self.ring.to_pool(req);
                Submit::Started
            }
        }
    }

    fn flush(&self) {
        let driving = drive::drives(self);
        if driving {
            self.ring.driver.beat();
        }
        let mut batch = self.queue.take();
        // A request whose future is gone before it reached the kernel does not start: its
        // descriptor may have been closed, and its number reused, since.
        batch.retain(|op| !op.req.is_abandoned());
        if !batch.is_empty() {
            let nowait = batch
                .iter()
                .any(|op| op.nowait && matches!(op.req.kind, Kind::Read(_) | Kind::ReadV(_)));
            let sent = batch.len();
            self.ring.submit(batch.drain(..));
            // Collect what is already done here, with no hop through the reaper: what
            // RWF_NOWAIT tried inside io_submit, and, when earlier operations are in flight,
            // what finished while this batch was built. The futures it wakes queue their
            // next operations together, so the next io_submit carries them all. With
            // nothing else in flight (queue depth 1) the look would only cost a syscall.
            // A thread in `block_on` looks at the ring next anyway.
            let earlier = self.ring.inflight.load(Ordering::Acquire) > sent;
            if (nowait || earlier) && !self.ring.degraded.load(Ordering::Acquire) && !driving {
                self.ring.reap_ready();
            }
        }
        self.queue.give_back(batch);
    }

    fn drive(&self) -> Option<&(dyn Drive + 'static)> {
        Some(self)
    }
}

impl Drive for Linux {
    fn begin(&self, signal: &Arc<Signal>) -> bool {
        let ring = &self.ring;
        // In a child after fork() the kernel context is the parent's, and without a
        // wake-up poll (before Linux 4.18) nothing could end the sleep: park instead.
        let Some(w) = &ring.wake else {
            return false;
        };
        if self.born.is_inherited() || ring.degraded.load(Ordering::Acquire) || !ring.driver.begin()
        {
            return false;
        }
        signal.set_kick(Arc::clone(&w.efd));
        true
    }

    fn busy(&self) -> Option<MutexGuard<'_, ()>> {
        Some(self.ring.driver.reaping())
    }

    fn ready(&self) -> usize {
        // SAFETY: the context lives as long as the ring.
        unsafe { sys::ring_pending(self.ring.ctx) }
    }

    fn batch(&self) -> usize {
        drive::batch(self.ring.inflight.load(Ordering::Acquire))
    }

    /// Up to a batch of [`SPIN_BATCH`] (qd 32), where a sleep comes back late on the
    /// machine (see [`LateWakes`]), the driving thread spins at depth too (for the
    /// adaptive budget, yielding between looks) until the whole batch is in the ring, and
    /// takes it in user space: a thread asleep in `io_getevents` wakes late, its CPU
    /// halted, while the device runs dry. The batches stay as large. Past that depth the
    /// device never runs short, and a spin would only take CPU from the kernel's worker.
    /// A slow disk's long waits shrink the budget to a microsecond.
    fn spins_deep(&self, batch: usize) -> bool {
        (DEEP_BATCH..=SPIN_BATCH).contains(&batch) && self.late.spin_next()
    }

    fn sleep(&self, signal: &Signal, ready: bool) -> bool {
        let ring = &self.ring;
        let mut events = [IoEvent::default(); 64];
        let r = if ready {
            // What the spin saw, taken in user space: no system call.
            ring.reap_now(&mut events)
        } else {
            // Without its wake-up poll (the kernel refused it for now) a wake from another
            // thread could not end the sleep: look again every tick instead.
            let wait = if ring.arm_wake() { DRIVE_SLEEP } else { TICK };
            if !signal.sleep_begin() {
                return true;
            }
            // At depth the kernel wakes this thread once a batch is there, not at each
            // completion. The wake-up poll is one event, so a wake from another thread may
            // then wait for the batch: at most `DEEP_WAIT`.
            let batch = Drive::batch(self);
            let (min, wait) = if batch >= DEEP_BATCH {
                (batch.min(events.len()), wait.min(DEEP_WAIT))
            } else {
                (1, wait)
            };
            let r = ring.kernel_reap(|| sys::io_getevents(ring.ctx, min, &mut events, Some(wait)));
            signal.sleep_end();
            if let (Ok(n), true) = (&r, batch >= DEEP_BATCH) {
                self.late.slept(batch, *n);
            }
            r
        };
        match r {
            Ok(n) => {
                self.early.reaped(n, ring.inflight.load(Ordering::Acquire));
                ring.complete_events(&events[..n], Reaper::Driver);
                true
            }
            Err(_) => false, // the reaper finds the same error, and says so
        }
    }

    fn end(&self) {
        self.ring.driver.end();
    }
}

impl Drop for Linux {
    fn drop(&mut self) {
        if self.born.is_inherited() {
            return; // the parent's: nothing here to shut down
        }
        // Until its reaper hands the kernel context back (see `take_idle`).
        CLOSING.fetch_add(1, Ordering::AcqRel);
        // Operations hold the context alive, so nothing can still be queued; be sure.
        self.flush();
        self.ring.shutdown.store(true, Ordering::SeqCst);
        // The reaper reaps the poll's completion before it lets the context go.
        self.ring.cancel_wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_has_one_route() {
        use {Class::*, Route::*};
        // Whether the file is in memory changes no route: such reads never get here.
        let f = |seekable, direct| Facts {
            seekable,
            direct,
            memory: false,
        };
        let table = [
            // Metadata operations: the pool, whatever the descriptor.
            (Meta, f(true, true), Pool),
            (Meta, f(true, false), Pool),
            (Meta, f(false, false), Pool),
            // Syncs always go to the kernel's workqueue.
            (Sync, f(true, false), Kernel),
            (Sync, f(true, true), Kernel),
            (Sync, f(false, false), Kernel),
            // Pipes, sockets, directories: never to kernel AIO.
            (Read, f(false, false), Pool),
            (Write, f(false, false), Pool),
            // Reads.
            (Read, f(true, true), Kernel),
            (Read, f(true, false), InlineCached),
            // Writes.
            (Write, f(true, true), KernelNowait),
            (Write, f(true, false), Pool),
        ];
        for (class, facts, want) in table {
            assert_eq!(route(class, facts), want, "{class:?} {facts:?}");
        }
    }

    #[test]
    fn what_would_block_goes_where_it_will_not() {
        use {Class::*, Route::*};
        for (class, direct, want) in [
            (Read, true, Kernel),
            (Read, false, Pool),
            (Write, true, Pool),
            (Write, false, Pool),
            (Sync, false, Pool),
            (Meta, true, Pool),
        ] {
            assert_eq!(route_would_block(class, direct), want, "{class:?} {direct}");
        }
    }
}
