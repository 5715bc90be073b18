//! How the driving thread paces itself against the device: how many completions a wait
//! is for ([`batch`]), when a large reap's next operations go to the kernel in parts
//! ([`Early`]), and whether it spins through its waits at depth ([`LateWakes`]).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

#[cfg(doc)]
use super::Drive;

/// How many completions are worth waiting for together with `inflight` operations in
/// flight: a quarter, at least one. Reaping them together lets their tasks' next
/// operations go to the kernel together, while the rest keep the device busy.
pub(crate) fn batch(inflight: usize) -> usize {
    (inflight / 4).max(1)
}
/// The least first part of a batch that [`Early`] sends to the kernel on its own.
const PART: usize = 8;

/// When the thread in `block_on` sends a large batch to the kernel in parts.
///
/// After a reap of `n` completions, their tasks queue about `n` operations in the poll
/// that follows. One system call for all of them holds every request until the last is
/// built (an `io_submit` plugs them), and meanwhile the device may run out of work.
/// Instead, the first part goes to the kernel as soon as it is queued, so the device
/// starts on it while the rest are built; each next part is twice the one before, and a
/// part is sent only while at least as many more are expected. The first part is a
/// quarter of what was in flight, and at least [`PART`]: so every call carries at least
/// that many, the last one too when the tasks queue what was expected. Growing parts keep
/// the calls few (parts of a fixed small size would make many more of them).
///
/// Used only by the driving thread (atomics because the backend is shared).
#[derive(Default)]
pub(crate) struct Early {
    /// Operations still expected from the last reap's tasks.
    expected: AtomicUsize,
    /// The size of the next part.
    part: AtomicUsize,
}

impl Early {
    /// The driving thread reaped `n` completions, with `inflight` operations in flight
    /// before.
    pub(crate) fn reaped(&self, n: usize, inflight: usize) {
        self.part
            .store(batch(inflight).max(PART), Ordering::Relaxed);
        self.expected.store(n, Ordering::Relaxed);
    }

    /// The driving thread queued an operation, and `queued` wait for the next flush:
    /// whether to flush now.
    pub(crate) fn queued(&self, queued: usize) -> bool {
        let left = self.expected.load(Ordering::Relaxed).saturating_sub(1);
        self.expected.store(left, Ordering::Relaxed);
        let part = self.part.load(Ordering::Relaxed);
        let send = part > 0 && queued >= part && left >= part;
        if send {
            self.part.store(part * 2, Ordering::Relaxed);
        }
        send
    }
}

/// How many sampled sleeps [`LateWakes`] remembers.
const SAMPLES: u32 = 16;
/// How many of the last [`SAMPLES`] sampled sleeps must have come back late for the thread
/// to spin through its waits at depth.
const LATE_MIN: u32 = 4;
/// While it spins, one wait at depth in this many sleeps instead, as a sample.
const SAMPLE_EVERY: u32 = 16;

/// Whether a sleep in the kernel's wait comes back late on the machine it runs on, so
/// that the driving thread should spin through its waits at depth instead.
///
/// A thread that sleeps until a batch of completions is there, with more in flight, is
/// woken when the batch is done. Where its CPU halts meanwhile and waking it is slow (a
/// VM whose guest halt polling is off), the device goes on completing: the sleep comes
/// back with far more than the batch, often with nearly everything in flight. A sleep is
/// late when it comes back with at least twice its batch. The thread spins while at
/// least [`LATE_MIN`] of the last [`SAMPLES`] sampled sleeps were late; while it spins,
/// one wait in [`SAMPLE_EVERY`] sleeps (after a look) to keep sampling. A spin that runs out and then sleeps is no sample: it sleeps when
/// the device is slow, not when the wake is.
///
/// Used only by the driving thread (atomics because the backend is shared).
#[derive(Default)]
pub(crate) struct LateWakes {
    /// The last [`SAMPLES`] sampled sleeps, newest in the lowest bit; a set bit came back
    /// late.
    history: AtomicU32,
    /// Waits since the last sample, while spinning.
    since: AtomicU32,
    /// The current wait is a sample: it looks, then sleeps.
    sampling: AtomicBool,
}

impl LateWakes {
    /// A wait at depth begins: whether it spins (else it looks, sleeps, and is a sample).
    pub(crate) fn spin_next(&self) -> bool {
        let late = self.history.load(Ordering::Relaxed).count_ones() >= LATE_MIN;
        let spin = late && self.since.fetch_add(1, Ordering::Relaxed) + 1 < SAMPLE_EVERY;
        if !spin {
            self.since.store(0, Ordering::Relaxed);
        }
        self.sampling.store(!spin, Ordering::Relaxed);
        spin
    }

    /// A sleep at depth for `batch` completions came back with `n`.
    pub(crate) fn slept(&self, batch: usize, n: usize) {
        if self.sampling.swap(false, Ordering::Relaxed) {
            let late = u32::from(n >= batch.saturating_mul(2));
            let h = self.history.load(Ordering::Relaxed);
            let kept = (1 << SAMPLES) - 1;
            self.history
                .store(((h << 1) | late) & kept, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `waits` waits at depth (batch 8) on `late`, each sleep coming back with `n`
    /// completions; returns how many of them spun.
    fn waits(late: &LateWakes, waits: usize, n: usize) -> usize {
        (0..waits)
            .filter(|_| {
                let spun = late.spin_next();
                if !spun {
                    late.slept(8, n);
                }
                spun
            })
            .count()
    }

    #[test]
    fn the_thread_sleeps_until_sleeps_come_back_late_then_spins_and_keeps_sampling() {
        let late = LateWakes::default();
        // Prompt wakes (the batch and a little more): it never spins.
        assert_eq!(waits(&late, 100, 9), 0);
        // Three late ones in the last 16 are not enough; the fourth is.
        assert_eq!(waits(&late, 3, 30), 0);
        assert!(!late.spin_next());
        // Twice the batch is late.
        late.slept(8, 16);
        // Now it spins, sleeping one wait in 16 as a sample.
        assert_eq!(waits(&late, 160, 30), 150);
        // The samples come back prompt again: after 13 of them only 3 late ones are left
        // in the window, and it sleeps at every wait.
        let spun = waits(&late, 13 * 16, 8);
        assert_eq!(spun, 13 * 15);
        assert_eq!(waits(&late, 32, 8), 0);
    }

    #[test]
    fn only_a_sampled_sleep_counts() {
        let late = LateWakes::default();
        // Sleeps that were no sample (a spin ran out first, or a wait below depth) change
        // nothing, however late.
        for _ in 0..16 {
            late.slept(8, 32);
        }
        assert!(!late.spin_next());
        // A sample that found its batch without sleeping counts as nothing either: the
        // next wait starts a new one.
        assert!(!late.spin_next());
        for _ in 0..4 {
            assert!(!late.spin_next());
            late.slept(8, 31);
        }
        assert!(late.spin_next());
        // The spun wait's own sleep (its spin ran out) is no sample.
        late.slept(8, 8);
        assert_eq!(late.history.load(Ordering::Relaxed).count_ones(), 4);
    }

    /// The sizes of the parts `Early` sends when the tasks of a reap of `n` completions,
    /// with `inflight` in flight, queue `queued` operations (the last one by the flush at
    /// the poll's end).
    fn parts(n: usize, inflight: usize, queued: usize) -> Vec<usize> {
        let early = Early::default();
        early.reaped(n, inflight);
        let (mut sent, mut waiting) = (Vec::new(), 0);
        for _ in 0..queued {
            waiting += 1;
            if early.queued(waiting) {
                sent.push(std::mem::take(&mut waiting));
            }
        }
        if waiting > 0 {
            sent.push(waiting);
        }
        sent
    }

    #[test]
    fn a_large_reap_goes_back_to_the_kernel_first_in_a_part_of_a_quarter_of_the_depth() {
        assert_eq!(parts(24, 32, 24), [8, 16]);
        assert_eq!(parts(19, 32, 19), [8, 11]);
        assert_eq!(parts(32, 32, 32), [8, 24]);
        assert_eq!(parts(64, 64, 64), [16, 48]);
        assert_eq!(parts(60, 64, 60), [16, 44]);
        assert_eq!(parts(100, 128, 100), [32, 68]);
        assert_eq!(parts(250, 256, 250), [64, 186]);
        assert_eq!(
            parts(200, 64, 200),
            [16, 32, 64, 88],
            "each part twice the last"
        );
    }

    #[test]
    fn no_part_is_smaller_than_eight_while_the_tasks_queue_what_was_expected() {
        assert_eq!(parts(15, 32, 15), [15]);
        assert_eq!(parts(12, 16, 12), [12]);
        for inflight in 1..=256 {
            for n in 1..=inflight {
                let p = parts(n, inflight, n);
                assert_eq!(p.iter().sum::<usize>(), n);
                assert!(
                    p.len() == 1 || p.iter().all(|&k| k >= PART),
                    "{n} of {inflight}: {p:?}"
                );
            }
        }
    }

    #[test]
    fn fewer_operations_than_expected_leave_the_rest_to_the_poll_s_flush() {
        // Tasks that finish instead of queueing more: the last flush sends what is there.
        assert_eq!(parts(24, 32, 10), [8, 2]);
        assert_eq!(parts(40, 32, 30), [8, 16, 6]);
        // A later reap starts a new count.
        let early = Early::default();
        early.reaped(24, 32);
        assert!(!early.queued(7));
        early.reaped(4, 32);
        assert!(!early.queued(8), "only 3 more are expected: no part yet");
    }
}
