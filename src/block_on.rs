//! [`Context::block_on`](crate::Context::block_on): a thread that waits for its own
//! completions.
//!
//! Under any executor, a completion reaches the task that awaits it in two wake-ups: the
//! kernel wakes the backend's completion thread, which wakes the executor's thread. On a
//! fast device the second wake-up's latency is what separates a runtime-agnostic crate
//! from fio. `block_on` removes it for the thread that calls it:
//!
//! - When the future is pending, the thread first **spins** for a short, adaptive while
//!   on a cheap look at the completion ring (no system call), yielding the CPU between
//!   looks.
//! - Then it **sleeps in the kernel's own wait** for completions and reaps them itself:
//!   `io_getevents` on linux; on uring, `io_uring_enter` on a ring of the thread's own
//!   (`SINGLE_ISSUER | DEFER_TASKRUN`, where the kernel runs the completions when the
//!   thread waits instead of interrupting it for each). With 16 or more operations in
//!   flight the thread waits for a quarter of them at a time: on uring it only looks,
//!   without spinning, and the kernel wakes it once they are done; on linux, up to qd 32,
//!   it spins for them too where a sleep comes back late on the machine it runs on (see
//!   [`LateWakes`]), and sleeps only when the spin runs out. A wake from another thread
//!   (a channel, the pool) interrupts that sleep through an eventfd (at depth on linux,
//!   the eventfd's poll is one event of that quarter: the wake waits for the rest, at
//!   most 10 ms).
//! - On linux, the tasks woken by a large reap send their next operations in **parts**:
//!   the first as soon as it is queued, so the device starts on it while the rest are
//!   built (see [`Early`]).
//! - Meanwhile, on linux, the backend's completion thread **stands down**: it looks every
//!   millisecond, and reaps only if the driving thread has neither waited for completions
//!   nor sent operations since its last look (it has been in user code all along), so that
//!   operations of other threads still complete. On uring the shared ring keeps its
//!   completion thread: the driving thread's own operations are in its own ring.
//!
//! One thread drives a context at a time. Another thread's `block_on` on the same context,
//! and `thread` and `blocking` contexts, spin and then park.

use std::{
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    thread,
    time::{Duration, Instant},
};

use crate::backend::{
    drive::{Driving, Paused, Signal, DEEP_BATCH},
    FileIo,
};

/// The most one spin lasts: about the time a 4 KiB read takes on a fast device, so that
/// a spin covers one read but not a slow disk's.
const MAX_SPIN: Duration = Duration::from_micros(50);
/// The least a spin lasts once spinning keeps failing (a slow disk).
const MIN_SPIN: Duration = Duration::from_micros(1);

/// An adaptive spin: doubled (up to [`MAX_SPIN`]) after each wait that a full spin would
/// have covered, halved (down to [`MIN_SPIN`]) after each longer one: on a slow disk a
/// wait costs ~1 µs of spinning.
struct Spin {
    budget: Duration,
}

impl Spin {
    /// Spins until `done` or the budget runs out; at depth (a batch of [`DEEP_BATCH`] or
    /// more awaited) on a backend that does not spin there (`deep_spin` false) it only
    /// looks, 32 times. After the first 64 looks (about a microsecond) it yields the CPU
    /// between looks: the kernel worker that completes the I/O may be waiting for this very
    /// CPU.
    fn run(&self, batch: usize, deep_spin: bool, done: impl Fn() -> bool) {
        let look_only = batch >= DEEP_BATCH && !deep_spin;
        // Looking only, the clock is never needed: no time goes on a clock read per wait.
        let start = (!look_only).then(Instant::now);
        let mut rounds = 0u32;
        loop {
            // The clock is read every 32 looks: a look is a few loads, a clock ~25 ns.
            for _ in 0..32 {
                if done() {
                    break;
                }
                std::hint::spin_loop();
            }
            let spent = start.is_none_or(|s| s.elapsed() >= self.budget);
            if done() || spent {
                return;
            }
            rounds += 1;
            if rounds > 1 {
                thread::yield_now();
            }
        }
    }

    /// Adapts the budget to how long the last wait lasted, spin and sleep: a wait that a
    /// spin of [`MAX_SPIN`] would have covered grows it. (Growing only after a spin that
    /// found work would never recover: once the budget is below the device's latency, no
    /// spin finds work, and at queue depth 1 on a fast device such a collapsed spin sleeps
    /// for every read, to be woken by an interrupt from another CPU.)
    fn learn(&mut self, waited: Duration) {
        self.budget = if waited <= MAX_SPIN {
            (self.budget * 2).min(MAX_SPIN)
        } else {
            (self.budget / 2).max(MIN_SPIN)
        };
    }
}

/// `Context::block_on`'s loop; see the module docs.
pub(crate) fn block_on<F: Future>(backend: &(dyn FileIo + 'static), fut: F) -> F::Output {
    let _paused = Paused::new();
    let signal = Arc::new(Signal::new());
    let waker = Waker::from(Arc::clone(&signal));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    let mut driving = Driving::new(backend.drive().filter(|d| d.begin(&signal)));
    let mut spin = Spin { budget: MAX_SPIN };
    // Requests the last poll left for the wait to send (`Drive::flush_for_wait`).
    let mut unsent = false;
    loop {
        if signal.take() {
            if std::mem::take(&mut unsent) {
                // Woken again before any wait: they go now, or a task that keeps waking
                // itself would hold them back for good.
                backend.flush();
            }
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            // Everything the tasks queued in this poll goes to the kernel in one batch,
            // or with the wait that follows.
            match driving.backend() {
                Some(d) => unsent = d.flush_for_wait(),
                None => backend.flush(),
            }
            continue;
        }
        let start = Instant::now();
        match driving.backend() {
            None => {
                spin.run(1, false, || signal.is_notified());
                if !signal.is_notified() {
                    signal.park();
                }
            }
            Some(d) => {
                // From here to the end of the sleep the thread waits for completions: the
                // backend's completion thread leaves them to it.
                let _busy = d.busy();
                let batch = d.batch();
                spin.run(batch, d.spins_deep(batch), || {
                    signal.is_notified() || d.ready() >= batch
                });
                // When the spin ran out, what is there is reaped; at depth only a whole
                // batch, or the kernel's wait gathers the rest first (one submission per
                // batch).
                let n = d.ready();
                let ready = if batch >= DEEP_BATCH {
                    n >= batch
                } else {
                    n > 0
                };
                if !signal.is_notified() {
                    if d.sleep(&signal, ready) {
                        unsent = false; // the wait sent them
                    } else {
                        // The kernel's wait failed (a seccomp policy, say): park from now
                        // on.
                        driving.stop();
                    }
                }
            }
        }
        spin.learn(start.elapsed());
    }
}
