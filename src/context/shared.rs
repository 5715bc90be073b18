//! [`Shared`]: what every handle of a context shares (the backend, its admission, who
//! waits for idleness), and how it is torn down, or not in a child after `fork()`.

use std::{
    mem::ManuallyDrop,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    task::Waker,
};

use super::{
    admission::{release, Limiter, Waiter},
    stats::Counters,
};
use crate::{
    backend::{Admission, FileIo, Permit},
    fork::Born,
    sync::lock,
};

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
    /// What [`Context::stats`](crate::Context::stats) reports.
    pub(crate) counters: Counters,
}

impl Admission for Shared {
    fn release(self: Arc<Self>) {
        release(&self);
    }

    fn counters(&self) -> &Counters {
        &self.counters
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
            counters: Counters::default(),
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
