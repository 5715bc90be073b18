//! The io_uring backend, on the `io-uring` crate: a shared ring per context, a ring of
//! its own for each thread that submits under an executor or drives `block_on`, one
//! completion thread, no thread per operation.
//!
//! # How an operation runs
//!
//! - **Submission is batched.** `submit` only queues the operation; its next poll calls
//!   `flush`, which writes every queued entry into the submission ring and enters the
//!   kernel once for all of them.
//! - **Completions are reaped without a system call when they are there.** After each
//!   flush, the submitting thread takes whatever the completion ring already holds (a
//!   page-cache hit completes inside the submission). The reaper thread
//!   (`caio-uring-reaper`) sleeps on an eventfd the ring signals as completions arrive, and
//!   takes them from the completion ring in user space: it never enters the ring.
//! - **Reads and writes, buffered or O_DIRECT, and fsync/fdatasync** of regular files and
//!   block devices go to the ring: the kernel runs what would block on its own workers, so
//!   no thread pool of ours is involved. Those workers are bounded by the context's
//!   `threads` setting (`IORING_REGISTER_IOWQ_MAX_WORKERS`).
//! - **Metadata operations** run natively where the kernel has the opcode (close, rename,
//!   unlink, rmdir, mkdir, fallocate, ftruncate, checked with the ring's probe); opening
//!   (which reads the file's type and alignment right after) and the rest run on a pool
//!   started on first use.
//! - Pipes, sockets and directories go to the pool, whose positional calls report the same
//!   errno as every other backend (the ring would read a pipe ignoring the offset).
//!
//! # Under an executor's reactor (the `tokio` feature)
//!
//! A worker of a runtime whose task reaps the context (see `backend/reactor.rs`) submits
//! to a lane of its own (`lane.rs`): a `SINGLE_ISSUER | COOP_TASKRUN` ring that it alone
//! enters, which signals the context's eventfd like the shared ring, so that the runtime's
//! task and the reaper take its completions from user space, on any thread.
//!
//! # Under `Context::block_on`
//!
//! The driving thread gets a ring of its own ([`Own`]), made with `SINGLE_ISSUER |
//! DEFER_TASKRUN` and kept for its next `block_on` on the context. Its O_DIRECT I/O and
//! `RWF_NOWAIT` attempts go there; it waits in `io_uring_enter` for a quarter of what is in
//! flight, and the kernel runs those completions in that one call. At depth the reads
//! their tasks queue then go back as on linux: a first part as soon as it is built (see
//! [`Early`]), and what the poll leaves is written to the ring and sent by the wait's own
//! `io_uring_enter`, one system call to send and wait (`Drive::flush_for_wait`; if a task
//! wakes the thread again before it waits, a flush sends them first), which saves one
//! system call per batch. Everything else stays on the shared ring and its reaper. `block_on` completes
//! what is in its own ring before it returns.
//!
//! # Ownership and shutdown
//!
//! A request is leaked into the ring (`Box::into_raw`; its address is the entry's
//! `user_data`) and reclaimed when its completion is reaped, so the buffer outlives any
//! dropped future. When the last handle goes, `Drop` raises a flag and signals the
//! eventfd; the reaper keeps reaping until nothing is in flight, then drops the ring and
//! exits.
//!
//! The kernel cancels the queued work of a thread that exits, and a flush submits what
//! any thread queued: an entry that comes back ECANCELED without its abort never ran, and
//! goes to the ring again from the thread that reaps it. An abort's own cancellation is
//! `cancel.rs`.

mod cancel;
mod lane;
mod op;
mod own;
mod ring;
mod route;
mod setup;

use std::{
    cell::Cell,
    fmt, io,
    os::fd::{AsRawFd, IntoRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, ThreadId},
};

use io_uring::{opcode, squeue, types, IoUring, Probe};

use crate::sync::lock;
use crate::{
    backend::{
        completes_for_others, controlled,
        drive::{self, Drive, Driver, Early, Signal, DEEP_BATCH},
        held, hold_wakes, place,
        thread::FallbackPool,
        BoxPool, Bufs, Class, Completion, Controlled, Facts, FileIo, Kind, Meta, OpQueue, Progress,
        Request, Slot, Submit,
    },
    context::stats::Count,
    fork::Born,
    sys, Implementation,
};

pub(crate) use setup::probe;
use {cancel::*, lane::*, op::*, own::*, ring::*, route::*, setup::*};

/// The most one read or write asks of the kernel at once; the rest is a continuation.
pub(super) const MAX_IO: usize = 1 << 30;
/// How many times an entry the kernel cancelled before it ran is submitted again, before
/// its ECANCELED is reported: each time, the thread that submitted it exited.
pub(super) const CANCELLED_MAX: u8 = 16;

/// The io_uring backend.
pub(crate) struct Uring {
    ring: Arc<Ring>,
    born: Born,
    /// When the driving thread sends a large batch to its ring in parts.
    early: Early,
}

// SAFETY: queued `UringOp`s hold pointers (inside their requests' buffers) that their own
// requests own; moving them between threads moves that ownership whole.
unsafe impl Send for Uring {}
// SAFETY: the queue is behind a mutex; the ring's queues are behind theirs.
unsafe impl Sync for Uring {}

impl fmt::Debug for Uring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uring")
            .field("inflight", &self.ring.inflight.load(Ordering::Relaxed))
            .field("opcodes", &self.ring.opcodes)
            .finish()
    }
}

impl Uring {
    /// A ring with room for `max_requests` operations, and its reaper.
    pub(crate) fn new(max_requests: usize, threads: usize) -> io::Result<Uring> {
        let entries = (max_requests + 1).next_power_of_two().min(32_768) as u32;
        let ring = IoUring::new(entries)
            .map_err(|e| io::Error::new(e.kind(), describe_setup_error(&e)))?;
        let mut probe = Probe::new();
        let has = if ring.submitter().register_probe(&mut probe).is_ok() {
            |p: &Probe, code| p.is_supported(code)
        } else {
            |_: &Probe, _| false
        };
        let opcodes = Opcodes {
            close: has(&probe, opcode::Close::CODE),
            rename: has(&probe, opcode::RenameAt::CODE),
            unlink: has(&probe, opcode::UnlinkAt::CODE),
            mkdir: has(&probe, opcode::MkDirAt::CODE),
            fallocate: has(&probe, opcode::Fallocate::CODE),
            ftruncate: has(&probe, opcode::Ftruncate::CODE),
            fadvise: has(&probe, opcode::Fadvise::CODE),
            sync_range: has(&probe, opcode::SyncFileRange::CODE),
        };
        let efd = sys::eventfd_blocking()?;
        ring.submitter().register_eventfd(efd.as_raw_fd())?;
        let t = threads.min(u32::MAX as usize) as u32;
        // Bounds the kernel's own workers; an old kernel without it runs them unbounded.
        let _ = ring.submitter().register_iowq_max_workers(&mut [t, t]);
        let ring = Arc::new(Ring {
            ring,
            efd: Arc::new(efd),
            sq: Mutex::new(Vec::new()),
            denied: AtomicBool::new(false),
            cq: Mutex::new(()),
            inflight: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            opcodes,
            pool: FallbackPool::new(threads, max_requests),
            threads,
            ops: BoxPool::new(max_requests),
            driver: Driver::new(),
            own: Mutex::new(None),
            own_queue: OpQueue::new(),
            queue: OpQueue::new(),
            owned: AtomicBool::new(false),
            own_failed: AtomicBool::new(false),
            entries,
            lanes: Mutex::new(Arc::new([])),
            lanes_failed: AtomicBool::new(false),
            lanes_gen: AtomicUsize::new(0),
            shared_flushes: AtomicUsize::new(0),
            shared_seen: AtomicUsize::new(0),
            #[cfg(feature = "tokio")]
            reactor: Default::default(),
            cancels: Mutex::new(Vec::new()),
            cancels_pending: AtomicBool::new(false),
        });
        let r = Arc::clone(&ring);
        thread::Builder::new()
            .name("caio-uring-reaper".into())
            .spawn(move || reaper(r))?;
        Ok(Uring {
            ring,
            born: Born::here(),
            early: Early::default(),
        })
    }

    fn enqueue(&self, req: Request, mode: Mode) -> Submit {
        let op = self.ring.op(req, mode);
        if mode != Mode::Worker && self.ring.owns(self) {
            let queued = self.ring.own_queue.push(op);
            if self.early.queued(queued) {
                // A large batch goes to the kernel in parts, as on linux (see `Early`).
                self.flush();
            }
            return Submit::Queued;
        }
        let ring = &self.ring;
        // A thread of an executor whose task reaps this context submits to a lane of its
        // own; any other to the shared ring.
        #[cfg(feature = "tokio")]
        let lane = (crate::backend::reactor::ensure(ring) && !self.born.is_inherited())
            .then(|| ring.lane_here())
            .flatten();
        #[cfg(not(feature = "tokio"))]
        let lane: Option<Arc<Lane>> = None;
        let queue = lane.as_ref().map_or(&ring.queue, |l| &l.queue);
        place(queue, op, &ring.inflight, || self.flush())
    }

    /// One round on the driving thread's own ring, if the calling thread is that thread:
    /// what it queued goes into the ring, `f` runs, and then (with the ring let go) what
    /// came back completes. `None` when there is no such ring.
    fn own_round<R>(&self, f: impl FnOnce(&mut Own) -> R) -> Option<R> {
        let ring = &self.ring;
        // In a child forked while this thread drove, the ring is the parent's.
        if !ring.owns(self) || self.born.is_inherited() {
            return None;
        }
        self.round(f)
    }

    /// After a refusal of `io_uring_enter`, wherever it was seen: what the calling thread
    /// wrote to its own ring, or queued for it, goes to the pool.
    fn refuse_own(&self) {
        if self.born.is_inherited() || !drive::drives(self) {
            return;
        }
        let me = thread::current().id();
        if lock(&self.ring.own)
            .as_ref()
            .is_some_and(|o| o.thread == me)
        {
            self.round(Own::refuse);
        }
    }

    /// `own_round`'s round, for a caller that knows the ring is the calling thread's.
    fn round<R>(&self, f: impl FnOnce(&mut Own) -> R) -> Option<R> {
        let ring = &self.ring;
        let (r, mut done) = {
            let mut own = lock(&ring.own);
            let own = own.as_mut()?;
            let mut batch = ring.own_queue.take();
            own.flush(ring, &mut batch);
            for name in ring.take_cancels(TAG_OWN) {
                own.cancel(name);
            }
            let r = f(own);
            if own.denied {
                ring.deny(&io::Error::from_raw_os_error(libc::EPERM));
            }
            ring.own_queue.give_back(batch);
            if own.done.is_empty() {
                return Some(r);
            }
            (r, std::mem::take(&mut own.done))
        };
        COMPLETING.with(|c| c.set(true));
        let _completing = Completing;
        for (op, res) in done.drain(..) {
            if res == TO_POOL {
                ring.to_pool(ring.ops.unbox(op).req);
                continue;
            }
            if let Some(next) = ring.complete(op, res) {
                if next.mode == Mode::Worker {
                    ring.submit([next]);
                } else {
                    ring.own_queue.push(next); // sent at the next round
                }
            }
        }
        if let Some(own) = lock(&ring.own).as_mut() {
            if own.done.is_empty() {
                own.done = done; // its room, for the next round
            }
        }
        Some(r)
    }

    /// Sends what is queued: the driving thread's own requests to its own ring, the rest
    /// to the shared one. With `now` false (the end of a poll in `block_on`, whose wait
    /// comes next), at depth, the thread's own requests are only written to its ring: the
    /// wait's `io_uring_enter` sends them with the wait, one system call for both, as the
    /// bench's minimal io_uring loop does. `true` when it left some for that wait. With
    /// `any`, what other threads queued and futures flushing here owe goes too.
    fn send(&self, now: bool, any: bool) -> bool {
        if self.born.is_inherited() {
            // In a child: the rings are the parent's, and whatever is queued is its too.
            return false;
        }
        let left = self.own_round(|own| {
            let deep = drive::batch(own.inflight) >= DEEP_BATCH;
            if !now && deep && !own.ring.submission().is_empty() {
                return Ok(true);
            }
            own.enter(0).map(|()| false)
        });
        let left = match left {
            Some(Ok(left)) => left,
            Some(Err(e)) => {
                // They stay in the ring: the thread's next wait sends them.
                log::warn!("caio: io_uring_enter failed ({e}); block_on's next wait retries");
                false
            }
            None => false,
        };
        if self.ring.denied.load(Ordering::Acquire) {
            self.refuse_own();
        }
        let ring = &self.ring;
        let hold = |queued| held(queued, ring.inflight.load(Ordering::Acquire));
        if let Some(lane) = ring.my_lane() {
            // The thread's own lane, and what futures flushing here owe of other lanes.
            // (What this thread queued on the shared ring before it had a lane, the reaper
            // sends on.)
            let mut batch = lane.queue.take_owed(hold);
            if any {
                ring.take_strays(Some(&lane), &mut batch);
            }
            lane.submit(ring, batch);
            // What already completed (page-cache hits, mostly) is taken here, without a
            // system call and without a hop through a reaper.
            if lane.reap(ring, false) {
                ring.send_held();
            }
            return left;
        }
        ring.shared_flushes.fetch_add(1, Ordering::Relaxed);
        let mut batch = ring.queue.take_owed(hold);
        if any {
            ring.take_strays(None, &mut batch);
        }
        if ring.send(batch) {
            // As above, on the shared ring.
            if let Ok(_cq) = self.ring.cq.try_lock() {
                self.ring.reap();
            }
        }
        left
    }

    /// Completes everything in the driving thread's own ring, if the calling thread is
    /// that thread.
    fn own_drain(&self) {
        while let Some(r) = self.own_round(|own| (own.inflight > 0).then(|| own.enter(1))) {
            match r {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    // Their buffers stay with the ring, leaked: safe, if not tidy.
                    log::error!("caio: cannot wait for the io_uring operations of block_on ({e})");
                    break;
                }
            }
        }
    }
}

impl FileIo for Uring {
    fn implementation(&self) -> Implementation {
        Implementation::Uring
    }

    fn submit(&self, req: Request) -> Submit {
        if req.reads_memory() {
            // tmpfs or ramfs: a memory copy, done here (RWF_NOWAIT answers EOPNOTSUPP there,
            // which would send every read to the kernel's workers).
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
        let native = matches!(&req.kind, Kind::Meta(m) if meta_entry(m, req.fd, &self.ring.opcodes).is_some());
        let route = route(req.kind.class(), facts, native);
        if req.controls.nowait && !facts.direct && route != Route::Pool {
            // Buffered, and the caller asked never to wait: RWF_NOWAIT inline, with no
            // second try on the kernel's workers (an EAGAIN is the answer).
            return self.enqueue(req, Mode::Plain);
        }
        match route {
            Route::Ring(mode) => self.enqueue(req, mode),
            Route::Pool => {
                self.ring.to_pool(req);
                Submit::Started
            }
        }
    }

    fn flush(&self) {
        self.send(true, false);
    }

    fn cancel(&self, slot: &Arc<Slot>) {
        if !self.born.is_inherited() {
            // (In a child, the rings are the parent's.)
            self.ring.cancel(slot);
        }
    }

    fn flush_any(&self) {
        self.send(true, true);
    }

    fn drive(&self) -> Option<&(dyn Drive + 'static)> {
        Some(self)
    }
}

impl Drive for Uring {
    fn flush_for_wait(&self) -> bool {
        self.send(false, false)
    }

    fn begin(&self, signal: &Arc<Signal>) -> bool {
        let ring = &self.ring;
        // In a child after fork() the kernel context is the parent's: park instead.
        if self.born.is_inherited() || ring.denied.load(Ordering::Acquire) || !ring.driver.begin() {
            return false;
        }
        if !ring.own_failed.load(Ordering::Acquire) {
            let me = thread::current().id();
            let mut own = lock(&ring.own);
            if own.as_ref().is_none_or(|o| o.thread != me) {
                // Another thread's ring is empty (its drive drained it): replace it.
                match Own::new(ring.entries, ring.threads) {
                    Ok(o) => *own = Some(o),
                    Err(e) => {
                        log::info!(
                            "caio: block_on waits on the shared io_uring: this kernel cannot \
                             make a SINGLE_ISSUER | DEFER_TASKRUN ring ({e})"
                        );
                        ring.own_failed.store(true, Ordering::Release);
                    }
                }
            }
            if let Some(o) = own.as_ref().filter(|o| o.thread == me) {
                signal.set_kick(Arc::clone(&o.kick));
                ring.owned.store(true, Ordering::Release);
                return true;
            }
        }
        signal.set_kick(Arc::clone(&ring.efd));
        true
    }

    fn busy(&self) -> Option<MutexGuard<'_, ()>> {
        // With a ring of its own, the driving thread's completions are not on this one.
        (!self.ring.owns(self)).then(|| self.ring.driver.waiting())
    }

    fn ready(&self) -> usize {
        if self.ring.owns(self) {
            if let Some(own) = lock(&self.ring.own).as_mut() {
                // Completions inside the submission, and (a flag the kernel sets) whether
                // it holds any back. How many it holds back is not told: below depth,
                // count them as a batch, so that the spin ends at the first; at depth, as
                // one, so that the kernel's wait gathers the batch.
                let held_back = own.ring.submission().taskrun();
                let batch = drive::batch(own.inflight);
                let held_back = match (held_back, batch >= DEEP_BATCH) {
                    (false, _) => 0,
                    (true, false) => batch,
                    (true, true) => 1,
                };
                return own.ring.completion().len() + held_back;
            }
        }
        match self.ring.cq.try_lock() {
            // SAFETY: `cq` is held, so this is the only completion queue view.
            Ok(_cq) => unsafe { self.ring.ring.completion_shared() }.len(),
            Err(_) => 0,
        }
    }

    fn batch(&self) -> usize {
        // A look: with a ring of its own, what is in flight there.
        let own = self.ring.owns(self).then(|| lock(&self.ring.own));
        let inflight = match own.as_deref() {
            Some(Some(own)) => own.inflight,
            _ => self.ring.inflight.load(Ordering::Acquire),
        };
        drive::batch(inflight)
    }

    fn sleep(&self, signal: &Signal, ready: bool) -> bool {
        let ring = &self.ring;
        if ring.denied.load(Ordering::Acquire) {
            // No kernel wait is allowed: the thread parks, woken as the pool completes.
            self.refuse_own();
            return false;
        }
        let slept = self.own_round(|own| {
            let want = if !ready && signal.sleep_begin() {
                drive::batch(own.inflight)
            } else {
                0
            };
            let (inflight, before) = (own.inflight, own.done.len());
            let r = own.enter(want);
            if want > 0 {
                signal.sleep_end();
            }
            // The reads of this reap's tasks go back in parts (see `Early`).
            self.early.reaped(own.done.len() - before, inflight);
            r
        });
        match slept {
            Some(Ok(())) => return true,
            Some(Err(e)) => {
                log::error!("caio: block_on cannot wait in its io_uring ({e}); it parks instead");
                return false;
            }
            None => {}
        }
        if !ready {
            if !signal.sleep_begin() {
                return true;
            }
            // The kernel signals the eventfd for every completion it posts, and a wake
            // from another thread writes to it: either ends the sleep. (A count left by
            // completions reaped without a sleep ends it at once: one look more.)
            let r = sys::eventfd_wait(ring.efd.as_raw_fd());
            signal.sleep_end();
            if r.is_err() {
                return false; // the reaper finds the same error, and says so
            }
        }
        ring.reap_all(true);
        true
    }

    fn pause(&self) {
        // The own ring is entered by this thread alone, and a nested block_on may await
        // what is in it: complete it, and send what comes meanwhile to the shared ring.
        self.flush();
        self.own_drain();
        self.ring.owned.store(false, Ordering::Release);
    }

    fn resume(&self) {
        let ring = &self.ring;
        let me = thread::current().id();
        if lock(&ring.own).as_ref().is_some_and(|o| o.thread == me) {
            ring.owned.store(true, Ordering::Release);
        }
    }

    fn end(&self) {
        let ring = &self.ring;
        // What this thread started in its ring completes before `block_on` returns: nobody
        // else may enter that ring.
        self.own_drain();
        ring.owned.store(false, Ordering::Release);
        ring.driver.end();
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        if self.born.is_inherited() {
            return; // the parent's ring: nothing here to shut down
        }
        self.flush();
        self.ring.shutdown.store(true, Ordering::Release);
        if let Err(e) = sys::eventfd_signal(self.ring.efd.as_raw_fd()) {
            log::warn!(
                "caio: cannot wake the io_uring reaper ({e}); it exits at its next completion"
            );
        }
    }
}
