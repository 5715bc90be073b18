//! The kernel context in use: submitting, reaping (by the reaper thread, a thread in
//! `block_on`, or in user space from the completion ring the kernel maps), the wake-up
//! poll, and what happens when a policy starts denying the calls.

use super::*;

/// The wake-up poll: a poll on an eventfd whose completion ends a wait in `io_getevents`.
/// `Drop` fires it (or cancels it) to wake the reaper at shutdown; a wake of a thread in
/// `Context::block_on` fires it to end that thread's sleep. It is armed again after each
/// firing, until shutdown.
pub(super) struct Wake {
    /// Shared with the wakers of a thread in `block_on`, so that a waker that outlives
    /// the context never writes to a reused descriptor number.
    pub(super) efd: Arc<OwnedFd>,
    pub(super) iocb: Box<UnsafeCell<Iocb>>,
    /// Submitted and not reaped yet.
    pub(super) armed: AtomicBool,
}

/// Who reaped a completion.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reaper {
    /// The thread in `block_on`.
    Driver,
    /// The reaper, or a submitter's `reap_ready`.
    Other,
}

/// What the backend and its reaper share.
pub(super) struct Ring {
    pub(super) ctx: AioContext,
    /// Requests handed to the kernel and not reaped yet.
    pub(super) inflight: AtomicUsize,
    pub(super) shutdown: AtomicBool,
    /// A seccomp policy started denying io_submit or io_getevents: nothing more goes to
    /// the kernel; what is there is reaped from the ring in user space.
    pub(super) degraded: AtomicBool,
    pub(super) nr_events: u32,
    pub(super) wake: Option<Wake>,
    /// For what the kernel cannot do without blocking.
    pub(super) pool: FallbackPool,
    /// Boxes of finished operations, for the next ones.
    pub(super) ops: BoxPool<AioOp>,
    /// A thread in `Context::block_on` that waits for completions itself.
    pub(super) driver: Driver,
    /// Held while the ring is reaped in user space, which must overlap no other reap of it
    /// (the kernel serializes only its own): every `io_getevents` that may return events
    /// first counts itself in `kernel_reaps` under this lock, and a reap in user space
    /// happens only while that count is 0.
    pub(super) user_reap: Mutex<()>,
    /// `io_getevents` calls that may return events, running now.
    pub(super) kernel_reaps: AtomicUsize,
    /// What the next flush sends to the kernel.
    pub(super) queue: OpQueue<AioOp>,
    /// What the executor's reactor reaps through (see `backend/reactor.rs`).
    #[cfg(feature = "tokio")]
    pub(super) reactor: Reactor,
}

/// The ring's side of the executor's reactor.
#[cfg(feature = "tokio")]
pub(super) struct Reactor {
    /// Signalled by the kernel at each completion of an iocb submitted with
    /// `IOCB_FLAG_RESFD`, which every iocb of `Ring::submit` is.
    pub(super) efd: Option<OwnedFd>,
    /// The tasks that reap through it. The reaper closes it before it hands the kernel
    /// context on (another context may reuse it).
    pub(super) tasks: crate::backend::reactor::Tasks,
}

#[cfg(feature = "tokio")]
impl crate::backend::reactor::Source for Ring {
    fn eventfd(&self) -> std::os::fd::RawFd {
        self.reactor.efd.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    fn tasks(&self) -> &crate::backend::reactor::Tasks {
        &self.reactor.tasks
    }

    fn reap_ready(&self) {
        if self.degraded.load(Ordering::Acquire) {
            return;
        }
        self.driver.beat();
        let mut events = [IoEvent::default(); 64];
        // What another thread reaps meanwhile (`Busy`) that thread completes.
        while let Ok(n @ 1..) = self.reap_user(&mut events) {
            self.complete_events(&events[..n], Reaper::Other);
        }
    }
}

/// Why the ring could not be reaped in user space.
pub(super) enum NoUserReap {
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
    /// Tasks of an executor that reap this ring now.
    pub(super) fn reactor_tasks(&self) -> usize {
        #[cfg(feature = "tokio")]
        return self.reactor.tasks.waiting();
        #[cfg(not(feature = "tokio"))]
        0
    }

    /// No executor's task reaps from here on, and none is reaping: the kernel context can
    /// be handed on. The tasks are woken to end.
    pub(super) fn close_reactor(&self) {
        #[cfg(feature = "tokio")]
        {
            self.reactor.tasks.close();
            if let Some(efd) = &self.reactor.efd {
                let _ = sys::eventfd_signal(efd.as_raw_fd());
            }
        }
    }

    /// Runs `req` (or what is left of it) on the fallback pool.
    pub(super) fn to_pool(&self, req: Request) {
        req.done.count(Count::ToPool);
        self.pool.run(req);
    }

    /// Boxes an operation (the kernel is given its address, which must not move).
    pub(super) fn op(&self, req: Request, nowait: bool) -> Box<AioOp> {
        self.ops.boxed(AioOp::new(req, nowait))
    }

    /// Hands a batch to the kernel; what it refuses is completed or rerouted here.
    pub(super) fn submit(&self, batch: impl IntoIterator<Item = Box<AioOp>>) {
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
                    // Named for a cancellation: `io_cancel` takes the iocb's address.
                    (*p).req
                        .done
                        .slot()
                        .note_kernel(&raw mut (*p).iocb as usize);
                    #[cfg(feature = "tokio")]
                    if let Some(efd) = &self.reactor.efd {
                        // The completion also signals the executor's reactor.
                        (*p).iocb.aio_flags |= sys::IOCB_FLAG_RESFD;
                        (*p).iocb.aio_resfd = efd.as_raw_fd() as u32;
                    }
                    iocbs[n] = &raw mut (*p).iocb;
                }
                n += 1;
            }
            self.inflight.fetch_add(n, Ordering::SeqCst);
            // Either the reaper, falling back to user space, still sees these in flight
            // and reaps them, or this sees that it gave up the kernel, and they go to the
            // pool (both sides SeqCst): queued before a policy denied io_getevents, they
            // may be flushed after the reaper left.
            if self.degraded.load(Ordering::SeqCst) {
                for &iocb in &iocbs[..n] {
                    // SAFETY: never submitted; its aio_data is the address of the AioOp
                    // leaked just above, still ours, once.
                    let op = unsafe { Box::from_raw((*iocb).aio_data as *mut AioOp) };
                    self.inflight.fetch_sub(1, Ordering::AcqRel);
                    self.to_pool(self.ops.unbox(op).req);
                }
                continue;
            }
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

    /// Asks the kernel to cancel the operation of `slot`, if it holds it. Kernel AIO
    /// cancels only what a driver gave a cancel method (USB gadgets, polls), never a read
    /// or write of a file or block device: those answer EINVAL and run to the end.
    pub(super) fn cancel(&self, slot: &Slot) {
        let iocb = slot.kernel();
        if iocb == 0 || self.degraded.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: `io_cancel` only compares the address with what the context holds (and
        // reads the key through it, failing with EFAULT where nothing is mapped): a stale
        // one, of an operation that completed since, matches nothing.
        match unsafe { sys::io_cancel(self.ctx, iocb as *mut sys::Iocb) } {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EAGAIN)) => {}
            Err(e) => log::debug!("caio: io_cancel failed ({e})"),
        }
    }

    /// Completes reaped events.
    pub(super) fn complete_events(&self, events: &[IoEvent], by: Reaper) {
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
        self.send_held();
    }

    /// Sends what is queued if some of it is held and no longer should be (see
    /// `backend::held`): every reap looks, so a held operation goes at the latest when too
    /// few are left in flight.
    pub(super) fn send_held(&self) {
        // The count is read under the queue's lock, after this reap's decrements.
        let batch = self
            .queue
            .take_held(|queued| held(queued, self.inflight.load(Ordering::Acquire)));
        self.send(batch);
    }

    /// What a future's flush sends: what is queued, unless all of it is held (see
    /// `backend::held`).
    pub(super) fn send_owed(&self) -> (usize, bool) {
        let batch = self
            .queue
            .take_owed(|queued| held(queued, self.inflight.load(Ordering::Acquire)));
        self.send(batch)
    }

    #[allow(clippy::vec_box)]
    fn send(&self, mut batch: Vec<Box<AioOp>>) -> (usize, bool) {
        // A request whose future is gone before it reached the kernel does not start: its
        // descriptor may have been closed, and its number reused, since.
        batch.retain_mut(|op| !op.req.is_called_off());
        let sent = batch.len();
        let nowait = batch
            .iter()
            .any(|op| op.nowait && matches!(op.req.kind, Kind::Read(_) | Kind::ReadV(_)));
        if sent > 0 {
            self.submit(batch.drain(..));
        }
        self.queue.give_back(batch);
        (sent, nowait)
    }

    /// Completes, on the calling thread, what the kernel already finished (page-cache hits
    /// complete inside `io_submit`), with no hop through the reaper. Never waits. A fired
    /// wake-up poll among them is passed on (see `woken`).
    pub(super) fn reap_ready(&self) {
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
    pub(super) fn kernel_reap<R>(&self, getevents: impl FnOnce() -> R) -> R {
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
    pub(super) fn reap_user(&self, events: &mut [IoEvent]) -> Result<usize, NoUserReap> {
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
    pub(super) fn reap_now(&self, events: &mut [IoEvent]) -> io::Result<usize> {
        match self.reap_user(events) {
            Ok(n) => Ok(n),
            Err(_) => {
                self.kernel_reap(|| sys::io_getevents(self.ctx, 0, events, Some(Duration::ZERO)))
            }
        }
    }

    /// Submits the wake-up poll unless it is in the kernel already; `false` if it cannot
    /// be (there is none before Linux 4.18, or the kernel refused it for now).
    pub(super) fn arm_wake(&self) -> bool {
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
    pub(super) fn cancel_wake(&self) {
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
    pub(super) fn woken(&self, by: Reaper) {
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
    pub(super) fn complete(&self, mut op: Box<AioOp>, res: i64) {
        let (nowait, len) = (op.nowait, op.len);
        let req = &mut op.req;
        req.done.slot().clear_kernel();
        if res < 0 {
            let errno = (-res) as i32;
            if let Some(c) = controlled(req, errno) {
                return match c {
                    Controlled::Answer(r) => {
                        req.finish_in_place(r);
                        self.ops.recycle(op)
                    }
                    Controlled::Pool => self.to_pool(self.ops.unbox(op).req),
                };
            }
            if nowait && (errno == libc::EAGAIN || errno == libc::EOPNOTSUPP) {
                req.done.count(Count::NowaitRetry);
                // It would have blocked: run it where it will not.
                let direct = crate::backend::is_direct(req.file.as_ref(), req.fd);
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
        // SAFETY: the kernel moved `res` bytes through the buffer or iovecs the iocb was
        // built with (at most `len`), and nothing has touched them since.
        match unsafe { req.advance(res as usize, len) } {
            // A partly cached NOWAIT read, a transfer over the kernel's per-call limit, or
            // end of file: the pool finishes (or confirms) it.
            Progress::Short => self.to_pool(self.ops.unbox(op).req),
            // A vectored transfer of more iovecs than one command takes: the next ones.
            Progress::More => {
                let req = self.ops.unbox(op).req;
                self.submit([self.op(req, nowait)]);
            }
            Progress::Done(total) => {
                req.finish_in_place(Ok(total));
                self.ops.recycle(op);
            }
        }
    }
}

pub(super) fn reaper(ring: Arc<Ring>) {
    ring.driver.register_reaper();
    completes_for_others();
    let mut events = vec![IoEvent::default(); EVENTS];
    let timeout = if ring.wake.is_some() {
        None
    } else {
        Some(POLL_FALLBACK)
    };
    loop {
        if ring.driver.is_active() || ring.reactor_tasks() > 0 {
            // A thread in `block_on`, or an executor's reactor, waits for completions
            // itself: only look.
            // Not idle at shutdown: the wake-up poll's completion is still to be reaped.
            let idle = ring.inflight.load(Ordering::Acquire) == 0
                && !ring.shutdown.load(Ordering::Acquire);
            let looked = ring.driver.look(idle, || {
                ring.reap_now(&mut events)
                    .map(|n| ring.complete_events(&events[..n], Reaper::Other))
            });
            if let Some(Err(e)) = looked {
                return reap_in_user_space(&ring, &e);
            }
        } else {
            match ring.kernel_reap(|| sys::io_getevents(ring.ctx, 1, &mut events, timeout)) {
                Ok(n) => ring.complete_events(&events[..n], Reaper::Other),
                Err(e) => return reap_in_user_space(&ring, &e),
            }
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
    ring.close_reactor();
    put_idle(ring.nr_events, ring.ctx);
    closed();
}

/// `io_getevents` failed (a seccomp policy installed after the context was made denies
/// it): nothing more goes to the kernel, and what is in flight is reaped straight from the
/// ring the kernel maps into the process, so every operation still completes.
pub(super) fn reap_in_user_space(ring: &Ring, e: &io::Error) {
    // SeqCst, as `Ring::submit`'s look: a submission after this one goes to the pool, or
    // is counted in flight below.
    ring.degraded.store(true, Ordering::SeqCst);
    log::warn!(
        "caio: io_getevents failed ({e}); reaping in user space, new operations go to threads"
    );
    let mut events = [IoEvent::default(); 64];
    while ring.inflight.load(Ordering::SeqCst) > 0 {
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
    ring.close_reactor();
    destroy_started();
    destroy_now(ring.ctx);
    closed();
}
