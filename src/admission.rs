//! Admission: at most `max_requests` operations in flight; the rest wait their turn in a
//! queue that the operations leaving flight drain. Progress never depends on a waiting
//! future being polled (a future polled once and then left alone cannot hold up the
//! others), and nothing blocks a thread.
//!
//! [`Shared`] is what every handle of a context shares: the backend and its admission.
//! A request holds a [`Permit`] until the backend is done with it; dropping the permit
//! hands the slot to the oldest queued operation, which is then started on that thread.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    fmt,
    mem::ManuallyDrop,
    sync::{
        atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    task::Waker,
};

use crate::backend::{Admission, Completer, FileIo, Permit, Plan, Slot, Submit};
use crate::fork::Born;
use crate::sync::lock;

/// What every handle of a context shares.
///
/// In a child after `fork()`, an inherited one is never torn down (see `Drop`): its
/// backend, its queued operations and their wakers are the parent's.
pub(crate) struct Shared {
    pub(crate) backend: ManuallyDrop<Box<dyn FileIo>>,
    pub(crate) limiter: ManuallyDrop<Limiter<Waiter>>,
    pub(crate) max_requests: usize,
    /// Work promised but not started yet (a dropped writer's last writes): the context is
    /// not idle while it is above 0.
    pub(crate) held: AtomicUsize,
    /// Who waits for the context to go idle.
    pub(crate) idle: ManuallyDrop<Mutex<Vec<Waker>>>,
    pub(crate) idle_cv: Condvar,
    /// Threads blocked in `wait_idle_timeout`: without any, going idle (which a loop of
    /// operations finished inline does once per operation) costs no futex call.
    idle_blocked: AtomicUsize,
    /// The process it was made in.
    born: Born,
    /// It is `Context::global()`.
    pub(crate) global: AtomicBool,
}

impl Admission for Shared {
    fn release(self: Arc<Self>) {
        release(&self);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.is_forked() {
            // The parent's: its threads, kernel context, locks and queued wakers may be
            // mid-use in a copy the child cannot trust. Leaked, once per inherited context.
            return;
        }
        // SAFETY: dropped once, here, and never used again.
        unsafe {
            ManuallyDrop::drop(&mut self.backend);
            ManuallyDrop::drop(&mut self.limiter);
            ManuallyDrop::drop(&mut self.idle);
        }
    }
}

impl Shared {
    pub(crate) fn new(backend: Box<dyn FileIo>, max_requests: usize) -> Shared {
        Shared {
            backend: ManuallyDrop::new(backend),
            limiter: ManuallyDrop::new(Limiter::new(max_requests)),
            max_requests,
            held: AtomicUsize::new(0),
            idle: ManuallyDrop::new(Mutex::new(Vec::new())),
            idle_cv: Condvar::new(),
            idle_blocked: AtomicUsize::new(0),
            born: Born::here(),
            global: AtomicBool::new(false),
        }
    }

    /// Made before a `fork()` of this process: its threads and kernel context stayed in
    /// the parent, so nothing may be submitted to it here.
    pub(crate) fn is_forked(&self) -> bool {
        self.born.is_inherited()
    }

    /// A permit for an operation starting now.
    pub(crate) fn permit(self: &Arc<Self>) -> Permit {
        Permit::new(Arc::clone(self) as Arc<dyn Admission>)
    }

    /// Nothing in flight, nothing waiting for a slot (a waiter only waits while every slot
    /// is taken), nothing promised.
    pub(crate) fn is_idle(&self) -> bool {
        self.is_forked()
            || self.limiter.available() == self.max_requests
                && self.held.load(Ordering::Acquire) == 0
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Waker>> {
        lock(&self.idle)
    }

    /// Wakes whoever waits for idleness, if the context is idle now.
    pub(crate) fn notify_if_idle(&self) {
        if self.is_idle() {
            let wakers = std::mem::take(&mut *self.lock_idle());
            if self.idle_blocked.load(Ordering::SeqCst) > 0 {
                self.idle_cv.notify_all();
            }
            for w in wakers {
                w.wake();
            }
        }
    }

    /// `Ready` once idle; otherwise registers the waker (checked again after, so a slot
    /// freed meanwhile is not missed).
    pub(crate) fn poll_idle(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.is_idle() {
            return std::task::Poll::Ready(());
        }
        let mut wakers = self.lock_idle();
        if self.is_idle() {
            return std::task::Poll::Ready(());
        }
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        std::task::Poll::Pending
    }

    /// Blocks until idle or `timeout`; whether it went idle.
    pub(crate) fn wait_idle_timeout(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut guard = self.lock_idle();
        self.idle_blocked.fetch_add(1, Ordering::SeqCst);
        let _blocked = Unblock(&self.idle_blocked);
        loop {
            if self.is_idle() {
                return true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            // Short waits: a notification between the check and the wait is caught by
            // the next check.
            let wait = (deadline - now).min(std::time::Duration::from_millis(10));
            guard = self
                .idle_cv
                .wait_timeout(guard, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Counts a blocked waiter out when it leaves.
struct Unblock<'a>(&'a AtomicUsize);

impl Drop for Unblock<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Slots in flight, and what waits for one.
///
/// A slot is taken and given back with one atomic operation on `count`; the lock is
/// taken only while operations wait for one.
pub(crate) struct Limiter<P> {
    /// Free slots, less the operations that found none and wait for one (queued, or about
    /// to queue).
    count: AtomicIsize,
    /// The waiting operations.
    state: Mutex<State<P>>,
}

struct State<P> {
    waiting: VecDeque<P>,
    /// Slots given back for waiters that had counted themselves in but not queued yet:
    /// the next of them to queue takes one instead.
    handed: usize,
}

impl<P> fmt::Debug for Limiter<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Limiter")
            .field("free", &self.available())
            .field("waiting", &st.waiting.len())
            .finish()
    }
}

impl<P> Limiter<P> {
    pub(crate) fn new(slots: usize) -> Limiter<P> {
        Limiter {
            count: AtomicIsize::new(isize::try_from(slots).unwrap_or(isize::MAX)),
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                handed: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<P>> {
        // Every critical section is a few moves and counter updates: poison carries no
        // broken state.
        lock(&self.state)
    }

    /// Takes a slot (`true`), or queues what `make` returns to wait for one (`false`).
    pub(crate) fn acquire_or_wait(&self, make: impl FnOnce() -> P) -> bool {
        self.count.fetch_sub(1, Ordering::AcqRel) > 0 || self.take_handed_or_wait(make)
    }

    /// With none free: this one is counted as waiting, so the release that frees a slot
    /// next hands it over, through the queue or, if this one has not queued yet, as
    /// `handed`.
    fn take_handed_or_wait(&self, make: impl FnOnce() -> P) -> bool {
        let mut st = self.lock();
        if st.handed > 0 {
            st.handed -= 1;
            return true;
        }
        st.waiting.push_back(make());
        false
    }

    /// A slot leaves flight: it goes straight to the oldest waiter (returned, now holding
    /// it), or back to the free count.
    pub(crate) fn release(&self) -> Option<P> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= 0 {
            return None;
        }
        // Somebody counted as waiting: the slot is theirs.
        let mut st = self.lock();
        let next = st.waiting.pop_front();
        if next.is_none() {
            st.handed += 1;
        }
        next
    }

    /// Slots not in flight.
    pub(crate) fn available(&self) -> usize {
        usize::try_from(self.count.load(Ordering::Acquire)).unwrap_or(0)
    }
}

/// An operation queued for a slot: what to do and where its result goes.
pub(crate) struct Waiter {
    pub(crate) plan: Plan,
    pub(crate) slot: Arc<Slot>,
}

thread_local! {
    /// Set while this thread admits queued operations: a slot freed meanwhile (an admitted
    /// operation that finished inline, or failed) is handed over through `HANDED`, not by
    /// recursion, so the stack stays flat however long the queue.
    static ADMITTING: Cell<bool> = const { Cell::new(false) };
    static HANDED: RefCell<Vec<(Arc<Shared>, Waiter)>> = const { RefCell::new(Vec::new()) };
}

/// A slot leaves flight: admit the oldest queued operation with it, if any.
fn release(shared: &Arc<Shared>) {
    let Some(w) = shared.limiter.release() else {
        shared.notify_if_idle();
        return;
    };
    if ADMITTING.with(|a| a.replace(true)) {
        HANDED.with(|h| h.borrow_mut().push((Arc::clone(shared), w)));
        return;
    }
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ADMITTING.with(|a| a.set(false));
        }
    }
    let _reset = Reset;
    admit(Arc::clone(shared), w);
    while let Some((s, w)) = HANDED.with(|h| h.borrow_mut().pop()) {
        admit(s, w);
    }
}

/// Starts `plan` with nobody waiting for its result (a close after the last handle of a
/// file went): it takes a slot like any operation, waits its turn for one, and runs
/// whatever happens; an error is logged. `what` names it in that log.
pub(crate) fn detach(shared: &Arc<Shared>, plan: Plan, what: &'static str) {
    if shared.is_forked() {
        // Its backend is in the parent: run nothing there; the plan's descriptor, if any,
        // is closed here as it drops.
        return;
    }
    let slot = Arc::new(Slot::detached(what));
    let mut plan = Some(plan);
    let admitted = shared.limiter.acquire_or_wait(|| Waiter {
        plan: plan.take().expect("taken once"),
        slot: Arc::clone(&slot),
    });
    // Queued: whoever frees a slot starts it (a detached slot is never abandoned).
    if let Some(plan) = plan.filter(|_| admitted) {
        start(shared, plan, Completer::new(slot, Some(shared.permit())));
    }
}

/// Hands a request with its permit to the backend; a detached or abandoned one that the
/// backend queues is flushed at once, since no future will poll for it.
fn start(shared: &Arc<Shared>, plan: Plan, done: Completer) {
    let slot = Arc::clone(done.slot());
    match plan.build(done) {
        Ok(req) => {
            if shared.backend.submit(req) == Submit::Queued {
                // Its future flushes on its next poll, together with every other operation
                // admitted and woken now: one batch, not one io_submit each.
                if slot.request_flush() {
                    // Nobody will poll for it.
                    shared.backend.flush();
                }
            }
        }
        Err((e, done, bufs)) => done.fail(e, bufs),
    }
}

/// Starts a queued operation with the slot just handed to it, on this thread.
fn admit(shared: Arc<Shared>, w: Waiter) {
    let permit = shared.permit();
    if w.slot.is_abandoned() {
        // Its future is gone and it never started: nothing waits for it. The slot moves on
        // (dropping the permit).
        return;
    }
    start(&shared, w.plan, Completer::new(w.slot, Some(permit)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_handed_to_waiters_in_order() {
        let l = Limiter::new(2);
        assert!(l.acquire_or_wait(|| 'x'));
        assert!(l.acquire_or_wait(|| 'x'));
        assert_eq!(l.available(), 0);
        assert!(!l.acquire_or_wait(|| 'a'));
        assert!(!l.acquire_or_wait(|| 'b'));
        assert_eq!(l.release(), Some('a'), "the slot goes to the oldest waiter");
        assert_eq!(l.release(), Some('b'));
        assert_eq!(l.available(), 0);
        assert_eq!(l.release(), None);
        assert_eq!(l.release(), None);
        assert_eq!(l.available(), 2);
    }

    #[test]
    fn a_slot_given_back_before_its_waiter_queued_goes_to_that_waiter() {
        let l = Limiter::new(1);
        assert!(l.acquire_or_wait(|| 'x'));
        // A waiter has counted itself in (the first half of acquire_or_wait) when the
        // slot comes back: the release finds nobody queued and hands the slot over.
        assert!(l.count.fetch_sub(1, Ordering::AcqRel) <= 0);
        assert_eq!(l.release(), None);
        assert_eq!(l.available(), 0, "the slot is promised, not free");
        // The waiter's second half takes it rather than queueing.
        assert!(l.take_handed_or_wait(|| 'w'));
        assert!(l.lock().waiting.is_empty());
        assert_eq!(l.release(), None);
        assert_eq!(l.available(), 1);
    }

    #[test]
    fn slots_are_never_over_or_under_counted_under_contention() {
        use std::sync::atomic::AtomicUsize;
        const SLOTS: usize = 3;
        let l = Arc::new(Limiter::<usize>::new(SLOTS));
        let held = Arc::new(AtomicUsize::new(0));
        let handed = Arc::new(Mutex::new(Vec::<usize>::new()));
        std::thread::scope(|s| {
            for t in 0..8 {
                let (l, held, handed) = (&l, &held, &handed);
                s.spawn(move || {
                    for i in 0..5_000 {
                        let me = t * 1_000_000 + i;
                        let mut mine = l.acquire_or_wait(|| me);
                        if !mine {
                            // Queued: wait until a release hands this one its slot.
                            let since = std::time::Instant::now();
                            while !mine {
                                assert!(
                                    since.elapsed() < std::time::Duration::from_secs(10),
                                    "a queued waiter was never handed a slot"
                                );
                                let mut h = handed.lock().unwrap();
                                if let Some(k) = h.iter().position(|&w| w == me) {
                                    h.swap_remove(k);
                                    mine = true;
                                }
                                drop(h);
                                std::thread::yield_now();
                            }
                        }
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(now <= SLOTS, "{now} slots held of {SLOTS}");
                        // Hold it a moment, so that others find none free.
                        std::thread::yield_now();
                        held.fetch_sub(1, Ordering::SeqCst);
                        if let Some(w) = l.release() {
                            handed.lock().unwrap().push(w);
                        }
                    }
                });
            }
        });
        assert_eq!(l.available(), SLOTS, "every slot came back");
        assert!(l.lock().waiting.is_empty());
    }
}
