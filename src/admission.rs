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
    sync::{Arc, Mutex, MutexGuard},
};

use crate::backend::{Admission, Completer, FileIo, Permit, Plan, Slot, Submit};

/// What every handle of a context shares.
pub(crate) struct Shared {
    pub(crate) backend: Box<dyn FileIo>,
    pub(crate) limiter: Limiter<Waiter>,
    pub(crate) max_requests: usize,
}

impl Admission for Shared {
    fn release(self: Arc<Self>) {
        release(&self);
    }
}

impl Shared {
    /// A permit for an operation starting now.
    pub(crate) fn permit(self: &Arc<Self>) -> Permit {
        Permit::new(Arc::clone(self) as Arc<dyn Admission>)
    }
}

/// Slots in flight, and what waits for one.
pub(crate) struct Limiter<P> {
    state: Mutex<State<P>>,
}

struct State<P> {
    free: usize,
    waiting: VecDeque<P>,
}

impl<P> fmt::Debug for Limiter<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("Limiter")
            .field("free", &st.free)
            .field("waiting", &st.waiting.len())
            .finish()
    }
}

impl<P> Limiter<P> {
    pub(crate) fn new(slots: usize) -> Limiter<P> {
        Limiter {
            state: Mutex::new(State {
                free: slots,
                waiting: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<P>> {
        // Every critical section is a few moves and counter updates: poison carries no
        // broken state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot (`true`), or queues what `make` returns to wait for one (`false`).
    pub(crate) fn acquire_or_wait(&self, make: impl FnOnce() -> P) -> bool {
        let mut st = self.lock();
        if st.free > 0 {
            st.free -= 1;
            true
        } else {
            st.waiting.push_back(make());
            false
        }
    }

    /// A slot leaves flight: it goes straight to the oldest waiter (returned, now holding
    /// it), or back to the free count.
    pub(crate) fn release(&self) -> Option<P> {
        let mut st = self.lock();
        match st.waiting.pop_front() {
            Some(p) => Some(p),
            None => {
                st.free += 1;
                None
            }
        }
    }

    /// Slots not in flight.
    pub(crate) fn available(&self) -> usize {
        self.lock().free
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
        Err((e, done)) => done.complete(Err(e)),
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
}
