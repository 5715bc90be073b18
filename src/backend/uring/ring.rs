//! The shared ring: submitting (tracking what the kernel has not taken yet), reaping by
//! the reaper thread, completions and their continuations, and what happens when a policy
//! starts denying `io_uring_enter`.

use super::*;

/// What the backend and its reaper share.
pub(super) struct Ring {
    pub(super) ring: IoUring,
    /// Signalled by the kernel as completions arrive, by `Drop` at shutdown, and by a wake
    /// of a thread asleep on it in `Context::block_on` (which holds a handle too).
    pub(super) efd: Arc<OwnedFd>,
    /// Held while writing the submission ring: the addresses of the operations written
    /// there that the kernel has not taken yet.
    pub(super) sq: Mutex<Vec<usize>>,
    /// A policy denies `io_uring_enter` now (see `Ring::enter`): nothing more goes to a
    /// ring of this backend.
    pub(super) denied: AtomicBool,
    /// Held while reading the completion ring.
    pub(super) cq: Mutex<()>,
    /// Requests in the ring and not reaped yet.
    pub(super) inflight: AtomicUsize,
    pub(super) shutdown: AtomicBool,
    pub(super) opcodes: Opcodes,
    /// For what the ring does not run.
    pub(super) pool: FallbackPool,
    /// For the kernel's workers of each thread's own ring.
    pub(super) threads: usize,
    /// Boxes of finished operations, for the next ones.
    pub(super) ops: BoxPool<UringOp>,
    /// A thread in `Context::block_on` that waits for completions itself.
    pub(super) driver: Driver,
    /// The ring of the thread that drives (or last drove) this context, kept for its next
    /// `block_on`.
    pub(super) own: Mutex<Option<Own>>,
    /// What the driving thread queued for `own`, and continuations of what `own` completed.
    pub(super) own_queue: OpQueue<UringOp>,
    /// What the next flush sends to this ring.
    pub(super) queue: OpQueue<UringOp>,
    /// Set while the driving thread uses `own`: the reaper then goes on reaping this ring.
    pub(super) owned: AtomicBool,
    /// Set when this kernel cannot make such a ring: drivers then sleep on this one.
    pub(super) own_failed: AtomicBool,
    pub(super) entries: u32,
    /// The rings of the threads that submit under an executor (see `lane.rs`).
    pub(super) lanes: Mutex<Arc<[Arc<Lane>]>>,
    /// Set when this kernel cannot make a lane: every thread shares this ring.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(super) lanes_failed: AtomicBool,
    /// Counts the changes of `lanes`.
    pub(super) lanes_gen: AtomicUsize,
    /// Flushes of `queue`, and their count at the reaper's last look (see `rescue`).
    pub(super) shared_flushes: AtomicUsize,
    pub(super) shared_seen: AtomicUsize,
    /// Cancellations of operations in a ring only its owner may enter (a lane, the own
    /// ring), asked for from another thread: the owner sends them at its next submission.
    pub(super) cancels: Mutex<Vec<Arc<Slot>>>,
    /// Whether `cancels` may hold any: a look that costs no lock.
    pub(super) cancels_pending: AtomicBool,
    /// The tasks of an executor that reap this ring, woken through `efd` (see
    /// `backend/reactor.rs`).
    #[cfg(feature = "tokio")]
    pub(super) reactor: crate::backend::reactor::Tasks,
}

#[cfg(feature = "tokio")]
impl crate::backend::reactor::Source for Ring {
    fn eventfd(&self) -> std::os::fd::RawFd {
        self.efd.as_raw_fd()
    }

    fn tasks(&self) -> &crate::backend::reactor::Tasks {
        &self.reactor
    }

    fn reap_ready(&self) {
        // The eventfd's count is left alone: the reaper, when it waits on it again, finds
        // it set and looks once more, which is harmless.
        self.driver.beat();
        // What another thread reaps meanwhile (it holds a ring's `cq`) that thread
        // completes; what comes too late for it signals again.
        self.reap_all(false);
    }
}

impl Ring {
    /// Tasks of an executor that reap this ring now.
    pub(super) fn reactor_tasks(&self) -> usize {
        #[cfg(feature = "tokio")]
        return self.reactor.waiting();
        #[cfg(not(feature = "tokio"))]
        0
    }

    /// No executor's task reaps from here on; they are woken to end.
    pub(super) fn close_reactor(&self) {
        #[cfg(feature = "tokio")]
        {
            self.reactor.close();
            let _ = sys::eventfd_signal(self.efd.as_raw_fd());
        }
    }

    /// Runs `req` (or what is left of it) on the fallback pool.
    pub(super) fn to_pool(&self, req: Request) {
        // Out of the ring: no cancellation may name its box, which is reused.
        req.done.slot().clear_kernel();
        req.done.count(Count::ToPool);
        self.pool.run(req);
    }

    /// Boxes an operation (the kernel is given its address, which must not move).
    pub(super) fn op(&self, req: Request, mode: Mode) -> Box<UringOp> {
        self.ops.boxed(UringOp::new(req, mode))
    }

    /// Writes `batch` into the shared submission ring and enters the kernel once (more
    /// only when the ring fills); what the kernel refuses is completed here with its error.
    pub(super) fn submit(&self, batch: impl IntoIterator<Item = Box<UringOp>>) {
        self.submit_to(&self.ring, &mut lock(&self.sq), None, TAG_SHARED, batch);
    }

    /// [`Ring::submit`], to `uring`, whose entries not taken by the kernel yet are
    /// `unsent`: the shared ring, or a thread's lane (whose own count is `lane`), entered
    /// only by that thread; `tag` names the ring to a cancellation.
    pub(super) fn submit_to(
        &self,
        uring: &IoUring,
        unsent: &mut Vec<usize>,
        lane: Option<&AtomicUsize>,
        tag: usize,
        batch: impl IntoIterator<Item = Box<UringOp>>,
    ) {
        for mut op in batch {
            if self.denied.load(Ordering::Acquire) {
                self.to_pool(self.ops.unbox(op).req);
                continue;
            }
            if called_off(&mut op, tag) {
                continue; // cancelled (completed there), or its future is gone
            }
            let entry = flagged(&mut op, &self.opcodes);
            let p = Box::into_raw(op);
            let entry = entry.user_data(p as u64);
            self.count(lane, 1, true);
            loop {
                // SAFETY: `unsent` is borrowed mutably, from under the ring's submission
                // lock or by the lane's only submitter, so this is the only submission
                // queue view; the entry points into the leaked op, whose request owns
                // every buffer and path it names, alive and unmoved until the op is
                // reclaimed from its completion.
                let pushed = unsafe { uring.submission_shared().push(&entry) };
                if pushed.is_ok() {
                    unsent.push(p as usize);
                    break;
                }
                // Full: hand what is there to the kernel and try again.
                if let Err(e) = self.enter_to(uring, unsent, lane) {
                    // SAFETY: `p` was not pushed, so it is still ours, once.
                    let op = self.ops.unbox(unsafe { Box::from_raw(p) });
                    op.req.done.slot().clear_kernel();
                    self.count(lane, 1, false);
                    if self.denied.load(Ordering::Acquire) {
                        self.to_pool(op.req);
                    } else {
                        op.req.finish(Err(e));
                    }
                    break;
                }
            }
        }
        if let Err(e) = self.enter_to(uring, unsent, lane) {
            if !self.denied.load(Ordering::Acquire) {
                // The entries stay in the ring; the next submission enters again.
                log::warn!("caio: io_uring_enter failed ({e}); the next submission retries");
            }
        }
    }

    /// Counts `n` operations into (`add`) or out of flight: in the ring's total, and in
    /// the lane's own count if they are a lane's.
    pub(super) fn count(&self, lane: Option<&AtomicUsize>, n: usize, add: bool) {
        for c in [Some(&self.inflight), lane].into_iter().flatten() {
            if add {
                c.fetch_add(n, Ordering::AcqRel);
            } else {
                c.fetch_sub(n, Ordering::AcqRel);
            }
        }
    }

    /// Hands what is in the submission ring `uring` to the kernel; `unsent` lists the
    /// operations there, in order. Where a policy denies `io_uring_enter` (a seccomp filter
    /// or container installed after start-up), the operations the kernel never took go to
    /// the pool, and so does every later one: the ring is never entered again, so their
    /// entries, left in it, are never read.
    pub(super) fn enter_to(
        &self,
        uring: &IoUring,
        unsent: &mut Vec<usize>,
        lane: Option<&AtomicUsize>,
    ) -> io::Result<()> {
        match uring.submit() {
            Ok(n) => {
                unsent.drain(..n.min(unsent.len()));
                Ok(())
            }
            Err(e) if is_denial(&e) => {
                self.deny(&e);
                for p in unsent.drain(..).filter(|&p| p != CANCEL as usize) {
                    // SAFETY: the call was refused before it ran, so the kernel took none
                    // of these entries: each op is still ours, once.
                    let op = self.ops.unbox(unsafe { Box::from_raw(p as *mut UringOp) });
                    self.count(lane, 1, false);
                    self.to_pool(op.req);
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// From now on every operation of this backend goes to the pool; said once.
    pub(super) fn deny(&self, e: &io::Error) {
        if !self.denied.swap(true, Ordering::AcqRel) {
            log::warn!(
                "caio: io_uring_enter failed ({e}): denied by seccomp or container policy; \
                 operations go to threads from now on"
            );
        }
    }

    /// Completes what the shared completion ring holds now. `true` when it took any.
    /// Called with `cq` held.
    pub(super) fn reap(&self) -> bool {
        // SAFETY: `cq` is held by the callers, so this is the only completion queue view.
        let any = unsafe { self.reap_from(&self.ring, None) };
        if any {
            self.send_held();
        }
        any
    }

    /// Completes what `uring`'s completion ring holds now (a lane's, whose own count is
    /// `lane`, or the shared one). `true` when it took any.
    ///
    /// # Safety
    /// The caller holds that ring's completion lock: this is its only completion view.
    pub(super) unsafe fn reap_from(&self, uring: &IoUring, lane: Option<&AtomicUsize>) -> bool {
        let mut any = false;
        // Every operation the batch admits is queued before its futures run.
        let _held = hold_wakes();
        // SAFETY: the caller's promise.
        let cq = unsafe { uring.completion_shared() };
        for cqe in cq {
            if cqe.user_data() == CANCEL {
                continue; // a cancellation's own answer: its operation reports
            }
            any = true;
            // SAFETY: `user_data` is the address leaked at submission; the kernel
            // reports each entry once, and the completion ring is read by one thread.
            let op = unsafe { Box::from_raw(cqe.user_data() as *mut UringOp) };
            self.count(lane, 1, false);
            if let Some(next) = self.complete(op, cqe.result()) {
                // The rest of it, or a retry: to the shared ring (this thread may not be
                // the one allowed to enter the lane).
                self.submit([next]);
            }
        }
        any
    }

    /// Sends what is held and no longer should be (see `backend::held`), of the shared
    /// queue and every lane's, after a reap; the count is read under each queue's lock,
    /// after the reap's decrements. To the calling thread's lane if it has one, else the
    /// shared ring.
    pub(super) fn send_held(&self) {
        let hold = |queued| held(queued, self.inflight.load(Ordering::Acquire));
        let mut batch = Vec::new();
        self.gather(None, &mut batch, |q| q.take_held(hold));
        self.send_here(batch);
    }

    /// Submits `batch` (drained, and its room kept for the next): whether any went.
    #[allow(clippy::vec_box)]
    pub(super) fn send(&self, mut batch: Vec<Box<UringOp>>) -> bool {
        // A request whose future is gone before it reached the kernel does not start.
        batch.retain(|op| !op.req.is_abandoned());
        let any = !batch.is_empty();
        if any {
            self.submit(batch.drain(..));
        }
        self.queue.give_back(batch);
        any
    }

    /// Whether the calling thread drives this ring through a ring of its own, and what it
    /// submits now is its own (not an operation of another thread that a completion
    /// admits: that one must not wait for this thread's next enter).
    pub(super) fn owns(&self, backend: &dyn Drive) -> bool {
        self.owned.load(Ordering::Acquire)
            && !self.denied.load(Ordering::Acquire)
            && drive::drives(backend)
            && !COMPLETING.with(Cell::get)
    }

    /// Handles one completion (`res` is bytes or a negative errno). What it returns goes to
    /// a ring again: the rest of a short transfer, or a read the page cache did not have.
    /// A finished operation completes where it is, and its box is kept for the next one.
    #[must_use]
    pub(super) fn complete(&self, mut op: Box<UringOp>, res: i32) -> Option<Box<UringOp>> {
        let (len, mode, cancelled) = (op.len, op.mode, op.cancelled);
        // Back from the kernel: no cancellation may name its box, which is reused.
        op.req.done.slot().clear_kernel();
        if res == -libc::ECANCELED && cancelled < CANCELLED_MAX && !op.req.done.slot().is_aborted()
        {
            // Not cancelled by its abort: the kernel cancelled it because the thread that
            // submitted it exited before its worker took it up (io_uring ties that queue
            // to the submitting thread, and a flush submits what any thread queued). It
            // never ran: it goes to the ring again, from this thread.
            let mut again = self.op(self.ops.unbox(op).req, mode);
            again.cancelled = cancelled + 1;
            return Some(again);
        }
        let req = &mut op.req;
        if let Kind::Meta(m @ Meta::Close(_)) = &mut req.kind {
            // The kernel closed the number, whatever the result: the OwnedFd must not
            // close it again (it may be another file's by now).
            if let Meta::Close(fd) = std::mem::replace(m, Meta::Taken) {
                let _ = fd.into_raw_fd();
            }
        }
        if res == -libc::EBADF {
            if let Kind::Read(_) | Kind::ReadV(_) | Kind::Write(_) | Kind::WriteV(_) = &req.kind {
                // Reported as the other backends' positional calls report it.
                let write = matches!(req.kind, Kind::Write(_) | Kind::WriteV(_));
                let errno = sys::positional_errno(req.fd, write);
                req.finish_in_place(Err(io::Error::from_raw_os_error(errno)));
                self.ops.recycle(op);
                return None;
            }
        }
        if res < 0 {
            match controlled(req, -res) {
                Some(Controlled::Answer(r)) => {
                    req.finish_in_place(r);
                    self.ops.recycle(op);
                    return None;
                }
                Some(Controlled::Pool) => {
                    self.to_pool(self.ops.unbox(op).req);
                    return None;
                }
                None => {}
            }
            if mode == Mode::NoWait && (res == -libc::EAGAIN || res == -libc::EOPNOTSUPP) {
                req.done.count(Count::NowaitRetry);
                // Not in the page cache (or no NOWAIT here): the kernel's workers read it.
                return Some(self.op(self.ops.unbox(op).req, Mode::Worker));
            }
            req.finish_in_place(Err(io::Error::from_raw_os_error(-res)));
            self.ops.recycle(op);
            return None;
        }
        // SAFETY: the kernel moved `res` bytes through the buffer or iovecs the entry was
        // built with (at most `len`), and nothing has touched them since.
        match unsafe { req.advance(res as usize, len) } {
            Progress::Short | Progress::More => {
                // Short but not at an error (part in the page cache, past the per-call
                // limit, the end of the file), or more iovecs: the rest goes to the ring
                // again (at the end of the file that read returns 0 and finishes it).
                let mode = if mode == Mode::NoWait {
                    Mode::Worker
                } else {
                    mode
                };
                Some(self.op(self.ops.unbox(op).req, mode))
            }
            Progress::Done(total) => {
                req.finish_in_place(Ok(total));
                self.ops.recycle(op);
                None
            }
        }
    }
}

/// Whether `io_uring_enter` failed because a policy forbids it, which will not change:
/// a seccomp filter answers with the errno it was given, most often EPERM or ENOSYS.
pub(super) fn is_denial(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES)
    )
}

/// Takes a reaped op off its ring's `taken` list.
pub(super) fn reaped(taken: &mut Vec<usize>, op: &UringOp) {
    let at = op.taken_at;
    taken.swap_remove(at);
    if let Some(&moved) = taken.get(at) {
        // SAFETY: a leaked op of the same ring, touched only by the thread that owns it.
        unsafe { (*(moved as *mut UringOp)).taken_at = at };
    }
}

pub(super) fn reaper(ring: Arc<Ring>) {
    ring.driver.register_reaper();
    completes_for_others();
    loop {
        let reactor = ring.reactor_tasks() > 0;
        if (ring.driver.is_active() && !ring.owned.load(Ordering::Acquire)) || reactor {
            // A thread in `block_on`, or an executor's reactor, waits for completions on
            // this ring itself: only look.
            let idle = ring.inflight.load(Ordering::Acquire) == 0
                && !ring.shutdown.load(Ordering::Acquire);
            ring.driver.look(idle, || {
                ring.reap_all(false);
            });
            ring.rescue(false);
            if ring.shutdown.load(Ordering::Acquire) && ring.inflight.load(Ordering::Acquire) == 0 {
                ring.close_reactor();
                return;
            }
            continue;
        }
        // No executor's task reaps: whatever its threads left queued goes now.
        ring.rescue(true);
        if let Err(e) = sys::eventfd_wait(ring.efd.as_raw_fd()) {
            // Only a broken eventfd gets here: leaking what is in flight is safe,
            // spinning is not.
            log::error!("caio: the io_uring reaper cannot wait ({e}); it stops");
            return;
        }
        ring.reap_all(true);
        if ring.driver.is_active() && !ring.owned.load(Ordering::Acquire) {
            // A thread started driving while this one waited. The count it took may hold
            // a wake for that thread, asleep on the same eventfd, beside completions (one
            // count can stand for both): pass it on. From now on this thread only looks.
            let _ = sys::eventfd_signal(ring.efd.as_raw_fd());
        }
        if ring.shutdown.load(Ordering::Acquire) && ring.inflight.load(Ordering::Acquire) == 0 {
            ring.close_reactor();
            return;
        }
    }
}
