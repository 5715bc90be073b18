//! Admission: at most `max_requests` operations in flight; the rest wait their turn in a
//! queue that the operations leaving flight drain. Progress never depends on a waiting
//! future being polled (a future polled once and then left alone cannot hold up the
//! others), and nothing blocks a thread.
//!
//! A request holds a [`Permit`] until the backend is done with it; dropping the permit
//! hands the slot to the oldest queued operation, which is then started on that thread.
//! The [`Limiter`] lives in the context's [`Shared`] state.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    fmt,
    sync::{
        atomic::{AtomicIsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use crate::backend::{Completer, Plan, Slot, Submit};
use crate::context::Shared;
use crate::sync::lock;

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
pub(crate) fn release(shared: &Arc<Shared>) {
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
                    shared.backend.flush_any();
                }
            }
        }
        Err((e, done, bufs)) => done.fail(e, bufs),
    }
}

/// Starts a queued operation with the slot just handed to it, on this thread.
fn admit(shared: Arc<Shared>, w: Waiter) {
    let mut permit = shared.permit();
    if w.slot.is_abandoned() {
        // Its future is gone and it never started: nothing waits for it. The slot moves on
        // (dropping the permit).
        permit.not_started();
        return;
    }
    if w.slot.is_aborted() {
        // Cancelled while it waited: it never starts, and its buffers go back.
        permit.not_started();
        Completer::new(w.slot, Some(permit)).fail(crate::sys::cancelled(), w.plan.what.into_bufs());
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
