//! Admission: at most `max_requests` operations in flight; the rest wait their turn in a
//! queue that the operations leaving flight drain. Progress never depends on a waiting
//! future being polled (a future polled once and then left alone cannot hold up the
//! others), and nothing blocks a thread.

use std::{
    collections::VecDeque,
    fmt,
    sync::{Mutex, MutexGuard},
};

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
