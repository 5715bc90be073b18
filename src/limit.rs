//! An asynchronous counting semaphore: at most `max_requests` operations in flight, the
//! rest wait their turn through their wakers (never an error, never a blocked thread).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    permits: usize,
    /// Waiting operations, oldest first (ids only grow).
    waiters: BTreeMap<u64, Waker>,
    next_id: u64,
}

/// One slot in flight; gives it back on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
}

impl Limiter {
    pub(crate) fn new(permits: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            state: Mutex::new(State {
                permits,
                waiters: BTreeMap::new(),
                next_id: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters half-updated: every
        // critical section is a few plain assignments, so a poisoned lock is still valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a permit, or registers the task to be woken. `wait_id` remembers this
    /// operation's place in the queue between polls.
    pub(crate) fn poll_acquire(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        wait_id: &mut Option<u64>,
    ) -> Poll<Permit> {
        let mut st = self.lock();
        if st.permits > 0 {
            st.permits -= 1;
            if let Some(id) = wait_id.take() {
                st.waiters.remove(&id);
            }
            return Poll::Ready(Permit {
                limiter: Arc::clone(self),
            });
        }
        match wait_id.and_then(|id| st.waiters.get_mut(&id)) {
            Some(w) => w.clone_from(cx.waker()),
            None => {
                // New, or woken but beaten to the permit: queue (again).
                let id = st.next_id;
                st.next_id += 1;
                st.waiters.insert(id, cx.waker().clone());
                *wait_id = Some(id);
            }
        }
        Poll::Pending
    }

    /// A waiting operation gave up. If it had already been woken for a permit it will not
    /// take, the wake-up passes to the next waiter, so none is lost.
    pub(crate) fn cancel(&self, wait_id: u64) {
        let mut st = self.lock();
        if st.waiters.remove(&wait_id).is_none() && st.permits > 0 {
            if let Some((_, w)) = st.waiters.pop_first() {
                drop(st);
                w.wake();
            }
        }
    }

    fn release(&self) {
        let mut st = self.lock();
        st.permits += 1;
        let next = st.waiters.pop_first();
        drop(st);
        if let Some((_, w)) = next {
            w.wake();
        }
    }

    /// Permits not currently held.
    pub(crate) fn available(&self) -> usize {
        self.lock().permits
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    #[test]
    fn permits_are_counted_and_returned() {
        let l = Limiter::new(2);
        let w = noop_waker();
        let mut cx = Context::from_waker(&w);
        let (mut a, mut b, mut c) = (None, None, None);
        let p1 = l.poll_acquire(&mut cx, &mut a);
        let p2 = l.poll_acquire(&mut cx, &mut b);
        assert!(p1.is_ready() && p2.is_ready());
        assert!(l.poll_acquire(&mut cx, &mut c).is_pending());
        assert!(c.is_some());
        drop(p1);
        let p3 = l.poll_acquire(&mut cx, &mut c);
        assert!(p3.is_ready());
        assert_eq!(l.available(), 0);
        drop(p2);
        assert_eq!(l.available(), 1);
        drop(p3);
        assert_eq!(l.available(), 2);
    }

    #[test]
    fn a_cancelled_woken_waiter_passes_the_wakeup_on() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl futures::task::ArcWake for Count {
            fn wake_by_ref(a: &Arc<Self>) {
                a.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let l = Limiter::new(1);
        let first = Arc::new(Count(AtomicUsize::new(0)));
        let second = Arc::new(Count(AtomicUsize::new(0)));
        let (wf, ws) = (
            futures::task::waker(first.clone()),
            futures::task::waker(second.clone()),
        );
        let held = l.poll_acquire(&mut Context::from_waker(&wf), &mut None);
        let (mut a, mut b) = (None, None);
        assert!(l
            .poll_acquire(&mut Context::from_waker(&wf), &mut a)
            .is_pending());
        assert!(l
            .poll_acquire(&mut Context::from_waker(&ws), &mut b)
            .is_pending());
        drop(held); // wakes `a`
        assert_eq!(first.0.load(Ordering::SeqCst), 1);
        l.cancel(a.unwrap()); // `a` gives up without taking it: `b` must be woken
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert!(l
            .poll_acquire(&mut Context::from_waker(&ws), &mut b)
            .is_ready());
    }
}
