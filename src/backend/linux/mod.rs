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

mod op;
mod ring;
mod route;
mod setup;

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
        completes_for_others, controlled,
        drive::{self, Drive, Driver, Early, LateWakes, Signal, DEEP_BATCH},
        held, hold_wakes, place,
        thread::FallbackPool,
        BoxPool, Class, Controlled, Facts, FileIo, Kind, OpQueue, Progress, Request, Slot, Submit,
        DEFAULT_MAX_REQUESTS,
    },
    context::stats::Count,
    fork::{Born, PerProcess},
    sys::{self, AioContext, IoEvent, Iocb},
    Implementation,
};

pub(crate) use setup::probe;
use {op::*, ring::*, route::*, setup::*};

/// `aio_data` of the reaper's wake-up poll (a request's is its non-null address).
pub(super) const WAKE_TOKEN: u64 = 0;
/// How often a thread in `block_on` looks when it cannot be woken.
pub(super) const TICK: Duration = Duration::from_millis(1);
/// The longest a thread in `block_on` sleeps before it looks again by itself (only a
/// missed wake would need it; none is known).
pub(super) const DRIVE_SLEEP: Duration = Duration::from_millis(100);
/// How long a thread in `block_on` waits for a batch of completions at depth before it
/// looks again; also the most a wake from another thread waits then.
///
/// Not shorter: a timeout of 1 ms is the earliest timer on its CPU, so every wait arms
/// and cancels the timer hardware (in a VM, exits to the host), which costs CPU per read;
/// a longer one changes nothing more.
pub(super) const DEEP_WAIT: Duration = Duration::from_millis(10);
/// Events reaped per `io_getevents`.
pub(super) const EVENTS: usize = 256;
/// The largest batch the driving thread spins for at depth (see `Drive::spins_deep`).
pub(super) const SPIN_BATCH: usize = 8;
/// How often a reaper without a wake-up poll checks for shutdown.
pub(super) const POLL_FALLBACK: Duration = Duration::from_millis(100);

/// The Linux kernel AIO backend.
pub(crate) struct Linux {
    ring: Arc<Ring>,
    /// The process it was made in: in a child the kernel context and the reaper
    /// are the parent's, and dropping must not touch them.
    born: Born,
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
            queue: OpQueue::new(),
            #[cfg(feature = "tokio")]
            reactor: Reactor {
                efd: sys::eventfd().ok(),
                tasks: Default::default(),
            },
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
            early: Early::default(),
            late: LateWakes::default(),
        })
    }
}

impl Linux {
    /// Queues an operation for the next flush's batched `io_submit`; in `block_on`, a
    /// large batch goes in parts (see [`Early`]).
    fn enqueue(&self, req: Request, nowait: bool) -> Submit {
        #[cfg(feature = "tokio")]
        if self.ring.reactor.efd.is_some() {
            crate::backend::reactor::ensure(&self.ring);
        }
        let op = self.ring.op(req, nowait);
        if drive::drives(self) {
            let queued = self.ring.queue.push(op);
            if self.early.queued(queued) {
                self.flush();
            }
            return Submit::Queued;
        }
        place(&self.ring.queue, op, &self.ring.inflight, || self.flush())
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
                    req.done.count(Count::NowaitRetry);
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

    fn cancel(&self, slot: &Arc<Slot>) {
        if !self.born.is_inherited() {
            self.ring.cancel(slot);
        }
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
        let route = route(req.kind.class(), facts);
        if !req.controls.is_plain() && matches!(route, Route::InlineCached | Route::Pool) {
            // Buffered I/O with the caller's flags or priority: `nowait()` runs here, where
            // RWF_NOWAIT keeps it from blocking; the rest runs in the pool, which applies
            // the controls or their fallbacks.
            if req.controls.nowait {
                req.run_here();
            } else {
                self.ring.to_pool(req);
            }
            return Submit::Started;
        }
        match route {
            Route::Kernel => self.enqueue(req, false),
            Route::KernelNowait => self.enqueue(req, true),
            // preadv2 takes several iovecs too, but a vectored read is rare enough to take
            // the kernel's NOWAIT path (a hit completes inside io_submit all the same).
            Route::InlineCached if matches!(req.kind, Kind::ReadV(_)) => self.enqueue(req, true),
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
        let (sent, nowait) = self.ring.send_owed();
        if sent > 0 {
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
        Some(self.ring.driver.waiting())
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
