//! The rings of the threads that submit under an executor: a [`Lane`] per thread and
//! context, entered by that thread alone, so that no lock on the way to the kernel is
//! shared between the executor's workers.
//!
//! A thread gets a lane when it submits from inside a tokio runtime whose task reaps this
//! context (see `backend/reactor.rs`): every lane signals the context's eventfd, so that
//! task (on whichever worker the runtime runs it) and the reaper find its completions, and
//! take them from the lane's completion ring in user space. An operation completes through
//! the ring it went to, wherever its task has moved since.
//!
//! Only the owner writes to a lane and enters it. What a reap sends on (a held batch, the
//! rest of a short transfer) goes to the reaping thread's own lane, or to the shared ring.
//! A future that queued on one worker and flushes on another (its task was stolen) leaves
//! its operation in the first worker's queue: that worker's next flush sends it, and if
//! none comes, the reaper does once a tick passed without one.
//!
//! When the owner exits, its lane is orphaned: what it queued goes to the shared ring, and
//! the lane is reaped until nothing of it is in flight, then forgotten.

use std::{cell::RefCell, sync::Weak};

use super::*;

/// A ring of one thread of an executor: `SINGLE_ISSUER` (the kernel skips the locking a
/// ring entered from several threads needs) and `COOP_TASKRUN` (a completion does not
/// interrupt the owner wherever it runs: its last step waits for the owner's next system
/// call, which a worker of an executor makes at each park, each poll of its reactor and
/// each flush).
pub(super) struct Lane {
    ring: IoUring,
    owner: ThreadId,
    /// Names this lane to a cancellation (see `kernel_name`): one of the tags past
    /// `TAG_OWN`, shared by one lane in 61. Two lanes with one tag only cost each other a
    /// cancellation that finds nothing.
    tag: usize,
    /// The process the lane was made in: in a child after `fork()` it is the parent's.
    born: Born,
    /// What the owner queued for its next flush (a reap takes what is held).
    pub(super) queue: OpQueue<UringOp>,
    /// The operations written to the submission ring that the kernel has not taken yet.
    /// Locked by the owner alone: a mutex only so that the lane can be shared.
    unsent: Mutex<Vec<usize>>,
    /// Held while reading the completion ring, which any thread may.
    cq: Mutex<()>,
    /// Operations in this ring, not reaped yet.
    pub(super) inflight: AtomicUsize,
    /// The owner has exited: nothing is written here again.
    orphaned: AtomicBool,
    /// Flushes by the owner, and their count at the reaper's last look (see `rescue`).
    flushes: AtomicUsize,
    seen: AtomicUsize,
}

impl Lane {
    // Lanes are made only where an executor's task reaps (the `tokio` feature).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    fn new(shared: &Ring) -> io::Result<Lane> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(shared.entries)?;
        ring.submitter().register_eventfd(shared.efd.as_raw_fd())?;
        let t = shared.threads.min(u32::MAX as usize) as u32;
        let _ = ring.submitter().register_iowq_max_workers(&mut [t, t]);
        static LANES: AtomicUsize = AtomicUsize::new(0);
        let id = LANES.fetch_add(1, Ordering::Relaxed);
        Ok(Lane {
            ring,
            owner: thread::current().id(),
            tag: TAG_OWN + 1 + id % (TAG_MASK - TAG_OWN),
            born: Born::here(),
            queue: OpQueue::new(),
            unsent: Mutex::new(Vec::new()),
            cq: Mutex::new(()),
            inflight: AtomicUsize::new(0),
            orphaned: AtomicBool::new(false),
            flushes: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
        })
    }

    /// Writes `batch` into this lane and enters it. Only the owner calls this.
    #[allow(clippy::vec_box)]
    pub(super) fn submit(&self, shared: &Ring, mut batch: Vec<Box<UringOp>>) {
        debug_assert_eq!(self.owner, thread::current().id());
        self.flushes.fetch_add(1, Ordering::Relaxed);
        // A request whose future is gone before it reached the kernel does not start.
        batch.retain(|op| !op.req.is_abandoned());
        let cancels = shared.take_cancels(self.tag);
        if !cancels.is_empty() {
            self.cancel(shared, &cancels);
        }
        if !batch.is_empty() {
            let mut unsent = lock(&self.unsent);
            shared.submit_to(
                &self.ring,
                &mut unsent,
                Some(&self.inflight),
                self.tag,
                batch.drain(..),
            );
        }
        self.queue.give_back(batch);
    }

    /// Asks the kernel to cancel the operations named `names` in this lane. Only the owner
    /// calls this (it read the names itself, so no box of theirs was reused here since).
    pub(super) fn cancel(&self, shared: &Ring, names: &[usize]) {
        debug_assert_eq!(self.owner, thread::current().id());
        let mut unsent = lock(&self.unsent);
        shared.push_cancels(&self.ring, &mut unsent, Some(&self.inflight), names);
    }

    /// This lane's tag, for a cancellation (see `kernel_name`).
    pub(super) fn tag(&self) -> usize {
        self.tag
    }

    /// Completes what this lane's completion ring holds; unless another thread is at it,
    /// or, with `wait`, once it is done (for a reaper that took the eventfd's count, whose
    /// completions the other may have come too early for).
    pub(super) fn reap(&self, shared: &Ring, wait: bool) -> bool {
        let _cq = if wait {
            lock(&self.cq)
        } else {
            match self.cq.try_lock() {
                Ok(g) => g,
                Err(_) => return false,
            }
        };
        // SAFETY: `cq` is held: this is the only completion queue view.
        unsafe { shared.reap_from(&self.ring, Some(&self.inflight)) }
    }

    /// On the owner's exit: anything written and not taken yet goes to the kernel, what is
    /// queued goes to the shared ring, and nothing is written here again.
    fn orphan(&self, shared: Option<Arc<Ring>>) {
        if self.born.is_inherited() {
            return; // the parent's lane, in a child: not this process's to touch
        }
        let Some(shared) = shared else {
            self.orphaned.store(true, Ordering::Release);
            return;
        };
        {
            let mut unsent = lock(&self.unsent);
            if !unsent.is_empty() {
                let _ = shared.enter_to(&self.ring, &mut unsent, Some(&self.inflight));
            }
            // What the kernel still did not take (an enter that kept failing) never will
            // be: each op is still ours, and goes to the pool.
            for p in unsent.drain(..).filter(|&p| p != CANCEL as usize) {
                // SAFETY: not taken by the kernel, and the ring is entered no more.
                let op = shared
                    .ops
                    .unbox(unsafe { Box::from_raw(p as *mut UringOp) });
                shared.count(Some(&self.inflight), 1, false);
                shared.to_pool(op.req);
            }
        }
        self.orphaned.store(true, Ordering::Release);
        shared.send(self.queue.take());
        // The reaper looks again, and lets the lane go once it is finished.
        let _ = sys::eventfd_signal(shared.efd.as_raw_fd());
    }

    /// Whether the lane can be forgotten: its owner is gone and nothing of it is in flight.
    fn finished(&self) -> bool {
        self.orphaned.load(Ordering::Acquire) && self.inflight.load(Ordering::Acquire) == 0
    }
}

/// The lanes of this thread, by context; orphaned when the thread exits.
struct Mine(RefCell<Vec<(Weak<Ring>, Arc<Lane>)>>);

impl Drop for Mine {
    fn drop(&mut self) {
        for (ring, lane) in self.0.get_mut().drain(..) {
            lane.orphan(ring.upgrade());
        }
    }
}

thread_local! {
    static MINE: Mine = const { Mine(RefCell::new(Vec::new())) };
}

impl Ring {
    /// What futures owe a flush for in the lanes of other threads than `mine`'s and in
    /// the shared queue (their tasks moved to this thread before they flushed, or a
    /// completion on another thread admitted them), appended to `batch`.
    #[allow(clippy::vec_box)]
    pub(super) fn take_strays(&self, mine: Option<&Lane>, batch: &mut Vec<Box<UringOp>>) {
        let hold = |queued| held(queued, self.inflight.load(Ordering::Acquire));
        self.gather(mine, batch, |q| {
            if q.owes() {
                q.take_owed(hold)
            } else {
                Vec::new()
            }
        });
    }

    /// Appends to `batch` what `take` takes of the shared queue and of every lane's but
    /// `except`'s (with no lane ever made, the registry is not looked at).
    #[allow(clippy::vec_box)]
    pub(super) fn gather(
        &self,
        except: Option<&Lane>,
        batch: &mut Vec<Box<UringOp>>,
        take: impl Fn(&OpQueue<UringOp>) -> Vec<Box<UringOp>>,
    ) {
        let mut one = |queue: &OpQueue<UringOp>| {
            let mut more = take(queue);
            if batch.is_empty() {
                std::mem::swap(batch, &mut more);
            } else {
                batch.append(&mut more);
            }
            queue.give_back(more);
        };
        one(&self.queue);
        if self.lanes_gen.load(Ordering::Acquire) == 0 {
            return;
        }
        let lanes = self.lanes();
        let others = lanes
            .iter()
            .filter(|l| except.is_none_or(|m| !std::ptr::eq(Arc::as_ptr(l), m)));
        for lane in others {
            one(&lane.queue);
        }
    }

    /// The lanes of every thread, orphaned ones too until they are finished.
    pub(super) fn lanes(&self) -> Arc<[Arc<Lane>]> {
        Arc::clone(&lock(&self.lanes))
    }

    /// The calling thread's lane of this ring, if it has one; `None` also in a child after
    /// `fork()` (the lane is the parent's), once a policy denies `io_uring_enter`, and
    /// while the thread exits.
    pub(super) fn my_lane(&self) -> Option<Arc<Lane>> {
        if self.denied.load(Ordering::Acquire) {
            return None;
        }
        MINE.try_with(|m| {
            m.0.borrow()
                .iter()
                .find(|(r, _)| std::ptr::addr_eq(r.as_ptr(), self as *const Ring))
                .map(|(_, l)| Arc::clone(l))
        })
        .ok()
        .flatten()
        .filter(|l| !l.born.is_inherited())
    }

    /// [`Ring::my_lane`], made if the thread has none yet; `None` where lanes cannot be
    /// made (a kernel before `SINGLE_ISSUER`), said once.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(super) fn lane_here(self: &Arc<Self>) -> Option<Arc<Lane>> {
        if let Some(lane) = self.my_lane() {
            return Some(lane);
        }
        if self.lanes_failed.load(Ordering::Relaxed) || self.denied.load(Ordering::Acquire) {
            return None;
        }
        let lane = match Lane::new(self) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                log::info!(
                    "caio: the threads of an executor share one io_uring: this kernel cannot \
                     make a SINGLE_ISSUER | COOP_TASKRUN ring ({e})"
                );
                self.lanes_failed.store(true, Ordering::Relaxed);
                return None;
            }
        };
        let kept = MINE.try_with(|m| {
            let mut mine = m.0.borrow_mut();
            // Forget the lanes of contexts that are gone.
            mine.retain(|(r, _)| r.strong_count() > 0);
            mine.push((Arc::downgrade(self), Arc::clone(&lane)));
        });
        if kept.is_err() {
            return None; // the thread is exiting: the shared ring serves it
        }
        let mut lanes = lock(&self.lanes);
        let more: Vec<Arc<Lane>> = lanes.iter().cloned().chain([Arc::clone(&lane)]).collect();
        *lanes = more.into();
        self.lanes_gen.fetch_add(1, Ordering::AcqRel);
        Some(lane)
    }

    /// Sends `batch` from the calling thread: into its lane if it has one, else to the
    /// shared ring.
    #[allow(clippy::vec_box)]
    pub(super) fn send_here(&self, batch: Vec<Box<UringOp>>) {
        match self.my_lane() {
            Some(lane) => lane.submit(self, batch),
            None => {
                self.send(batch);
            }
        }
    }

    /// Completes what every ring of this context holds: the shared one and each lane's.
    /// `true` when it took any. Lanes whose owner is gone are forgotten once empty. A ring
    /// another thread reaps now is skipped, or with `wait` (a reaper that took the
    /// eventfd's count) reaped once that thread is done.
    pub(super) fn reap_all(&self, wait: bool) -> bool {
        let cq = if wait {
            Some(lock(&self.cq))
        } else {
            self.cq.try_lock().ok()
        };
        // SAFETY: `cq` is held: this is the only completion queue view.
        let mut any = cq.is_some() && unsafe { self.reap_from(&self.ring, None) };
        drop(cq);
        let lanes = self.lanes();
        for lane in lanes.iter() {
            any |= lane.reap(self, wait);
        }
        if any {
            self.send_held();
        }
        self.forget_finished(&lanes);
        any
    }

    /// Lets go of the lanes whose owner is gone and with nothing in flight (if `seen`, a
    /// look at the lanes, holds any): closed once no one holds them.
    fn forget_finished(&self, seen: &[Arc<Lane>]) {
        if !seen.iter().any(|l| l.finished()) {
            return;
        }
        let mut all = lock(&self.lanes);
        let left: Vec<Arc<Lane>> = all.iter().filter(|l| !l.finished()).cloned().collect();
        if left.len() < all.len() {
            *all = left.into();
            self.lanes_gen.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The reaper's look for operations no flush may send: what a future left in a queue
    /// and then was never polled again, while the queue's thread flushed nothing since the
    /// last look; with `all` (no executor's task reaps any more), whatever the lanes hold.
    /// They go to the shared ring.
    pub(super) fn rescue(&self, all: bool) {
        let stale = |flushes: &AtomicUsize, seen: &AtomicUsize| {
            let f = flushes.load(Ordering::Relaxed);
            seen.swap(f, Ordering::Relaxed) == f
        };
        let lanes = self.lanes();
        for lane in lanes.iter().filter(|l| !l.queue.is_empty()) {
            if all || stale(&lane.flushes, &lane.seen) || lane.orphaned.load(Ordering::Acquire) {
                self.send(lane.queue.take());
            }
        }
        self.forget_finished(&lanes);
        // The shared queue, likewise, but only when stale: its futures flush it from any
        // thread.
        if !all && !self.queue.is_empty() && stale(&self.shared_flushes, &self.shared_seen) {
            self.send(self.queue.take());
        }
    }
}
