//! Reaping and waiting for completions: the [`Drive`] contract, and what its drivers and
//! the backends that implement it share.
//!
//! A backend with a kernel completion queue (linux, uring) reaps completions on a thread
//! of its own, the reaper. It also lets another thread take over the waiting, for as long
//! as that thread wants to: that thread is the *driver*. [`Context::block_on`] is one
//! driver (the loop is in `block_on.rs`, above this module); the executor's reactor is
//! another (`reactor.rs`: a task woken through an eventfd, which reaps without waiting).
//! The reaper stands down while a driver drives (looking every tick, reaping only when
//! the driver showed no sign of life since: [`Driver::tick`]), and takes over again when
//! the drive ends.
//!
//! A driver, in a loop:
//! 1. calls [`Drive::begin`] once (`false`: someone else drives, do not wait here);
//! 2. polls its tasks, then [`Drive::flush_for_wait`] (the wait that follows may send
//!    what they queued);
//! 3. holds [`Drive::busy`] while it waits: it looks at [`Drive::ready`] against
//!    [`Drive::batch`] (spinning, where [`Drive::spins_deep`] says so at depth), then
//!    [`Drive::sleep`]s in the kernel's wait, which reaps and wakes the tasks;
//! 4. calls [`Drive::end`] when it stops (the reaper takes over again).
//!
//! A driver nested in another on one thread (a `block_on` inside a `block_on`) pauses the
//! outer drive ([`Paused`]), so that what only the outer driver would send or complete is
//! sent or completed now.
//!
//! The backends share [`Driver`] (which thread drives, and the reaper's tick while it
//! does), [`Signal`] (the driving thread's waker, which also ends its kernel sleep),
//! [`Early`] (a large reap's next operations sent in parts) and [`LateWakes`].
//!
//! [`Context::block_on`]: crate::Context::block_on

use std::{
    cell::Cell,
    os::fd::OwnedFd,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    task::Wake,
    thread::{self, Thread, ThreadId},
    time::Duration,
};

use super::FileIo;
use crate::sync::lock;

/// Reaping and waiting for completions, by a thread other than the backend's reaper; see
/// the module docs for the order of the calls.
pub(crate) trait Drive: FileIo {
    /// Makes the calling thread the one that waits for completions, until [`Drive::end`];
    /// `false` when another thread already does, or when this backend cannot now (a child
    /// after fork, a kernel that refuses the wait).
    fn begin(&self, signal: &Arc<Signal>) -> bool;
    /// Held while the driving thread spins and sleeps waiting for completions, so that
    /// the backend's own completion thread takes none of them then (only while the
    /// driving thread runs user code).
    fn busy(&self) -> Option<MutexGuard<'_, ()>>;
    /// How many completions are ready to be reaped: a look, with no system call.
    fn ready(&self) -> usize;
    /// How many completions are worth a spin before reaping ([`batch`] of what is in
    /// flight).
    fn batch(&self) -> usize;
    /// Whether the driving thread spins for a whole `batch` at depth too (see
    /// [`DEEP_BATCH`]), rather than leaving the kernel's wait to gather it. Asked once per
    /// wait, before its spin: a backend may count the waits by it.
    fn spins_deep(&self, _batch: usize) -> bool {
        false
    }
    /// Reaps ready completions, or (with `ready` false) sleeps until a completion (at
    /// depth: a batch, see [`Drive::batch`]), a wake of `signal`, or a timeout. `false`
    /// when the kernel's wait failed and driving should stop.
    fn sleep(&self, signal: &Signal, ready: bool) -> bool;
    /// Hands waiting back to the backend's own thread.
    fn end(&self);
    /// `flush` at the end of a poll, with a wait for completions next: a backend whose
    /// wait also submits may leave the driving thread's requests for it. `true` when it
    /// did; then `flush` must run if no wait comes first.
    fn flush_for_wait(&self) -> bool {
        self.flush();
        false
    }
    /// A nested driver starts on the driving thread, which stops waiting for this backend
    /// until [`Drive::resume`]: what only that thread would send or complete must be sent
    /// or completed now. (What the enclosing poll queued so far skipped the flush it would
    /// owe under another executor.)
    fn pause(&self) {
        self.flush();
    }
    /// The nested driver returned; the thread drives this backend again.
    fn resume(&self) {}
}

/// From how many awaited completions (16 or more in flight) the thread does not spin at
/// all unless the backend asks for it ([`Drive::spins_deep`]): the kernel's wait gathers
/// the batch, for less CPU. A thread that spins until each batch is there keeps a core
/// busy, and a short spin buys no reads over none. linux spins at depth where a sleep
/// comes back late (see [`LateWakes`]); uring never does: its completions wait in the
/// kernel until the thread enters it, so a look at the ring finds nothing.
pub(crate) const DEEP_BATCH: usize = 4;

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
/// late when it comes back with at least twice its batch. The thread spins while at least [`LATE_MIN`] of the last [`SAMPLES`]
/// sampled sleeps were late; while it spins, one wait in [`SAMPLE_EVERY`] sleeps (after a look)
/// to keep sampling. A spin that runs out and then sleeps is no sample: it sleeps when
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

/// How often a backend's reaper looks while an executor's reactor reaps for it and
/// nothing is in flight: rarely, so that an idle runtime costs no wake-up a millisecond.
pub(crate) const IDLE_LOOK: Duration = Duration::from_millis(50);

/// How often a backend's completion thread looks while another thread drives.
const TICK: Duration = Duration::from_millis(1);

/// What a backend with a completion thread of its own (the reaper) keeps for `block_on`:
/// which thread drives, the lock it holds while it waits for completions (spins, sleeps
/// or reaps), and the reaper to hand waiting back to.
pub(crate) struct Driver {
    active: AtomicBool,
    thread: Mutex<Option<ThreadId>>,
    reaping: Mutex<()>,
    /// Signs of life from the driving thread (it began to wait for completions, or sent
    /// operations to the kernel), and how many the reaper had seen at its last look.
    beats: AtomicUsize,
    seen: AtomicUsize,
    reaper: OnceLock<Thread>,
}

impl Driver {
    pub(crate) fn new() -> Driver {
        Driver {
            active: AtomicBool::new(false),
            thread: Mutex::new(None),
            reaping: Mutex::new(()),
            beats: AtomicUsize::new(0),
            seen: AtomicUsize::new(0),
            reaper: OnceLock::new(),
        }
    }

    fn thread(&self) -> MutexGuard<'_, Option<ThreadId>> {
        lock(&self.thread)
    }

    /// Makes the calling thread the driving one; `false` when another thread is.
    pub(crate) fn begin(&self) -> bool {
        if self
            .active
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        *self.thread() = Some(thread::current().id());
        true
    }

    /// Hands waiting back to the reaper.
    pub(crate) fn end(&self) {
        *self.thread() = None;
        self.active.store(false, Ordering::Release);
        if let Some(t) = self.reaper.get() {
            t.unpark();
        }
    }

    /// Whether a thread drives.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Whether a thread other than the calling one drives.
    pub(crate) fn is_other(&self) -> bool {
        self.thread().is_some_and(|t| t != thread::current().id())
    }

    /// Held by the driving thread while it waits for completions: it spins, sleeps or
    /// reaps (see [`Drive::busy`]).
    pub(crate) fn waiting(&self) -> MutexGuard<'_, ()> {
        let g = lock(&self.reaping);
        self.beat();
        g
    }

    /// A sign of life from the driving thread (it waits for completions, or sends
    /// operations to the kernel and will come back to wait for them).
    pub(crate) fn beat(&self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }

    /// Called once by the reaper, so that `end` can wake it.
    pub(crate) fn register_reaper(&self) {
        let _ = self.reaper.set(thread::current());
    }

    /// The reaper's look while a thread drives: after a tick, `reap` runs only if the
    /// driving thread showed no sign of life since the last look (neither waited for
    /// completions nor sent operations: it has been running user code all along, or
    /// nothing at all). So the reaper never takes a completion that thread waits for, nor
    /// one of a thread that keeps coming back for them. (Taking those split one poll's
    /// operations between two threads: under `strace`, where a poll that sends its
    /// operations in parts lasts over a tick, the reaper took one completion in four, and
    /// the operations its tasks queued went to the kernel one by one.)
    pub(crate) fn tick<R>(&self, reap: impl FnOnce() -> R) -> Option<R> {
        thread::park_timeout(TICK);
        let beats = self.beats.load(Ordering::Relaxed);
        if self.seen.swap(beats, Ordering::Relaxed) != beats {
            return None;
        }
        let _busy = self.reaping.try_lock().ok()?;
        Some(reap())
    }
}

const RUNNING: u8 = 0;
const SLEEPING: u8 = 1;
const PARKED: u8 = 2;

/// The driving thread's waker, and how to reach it wherever it waits.
pub(crate) struct Signal {
    notified: AtomicBool,
    state: AtomicU8,
    thread: Thread,
    /// Written to wake a sleep in the kernel (set by the backend's [`Drive::begin`]). Held
    /// here, so that a waker that outlives the backend never writes to a reused number.
    kick: OnceLock<Arc<OwnedFd>>,
}

impl Signal {
    pub(crate) fn new() -> Signal {
        Signal {
            notified: AtomicBool::new(true),
            state: AtomicU8::new(RUNNING),
            thread: thread::current(),
            kick: OnceLock::new(),
        }
    }

    /// Makes a wake during a kernel sleep write to `fd`.
    pub(crate) fn set_kick(&self, fd: Arc<OwnedFd>) {
        let _ = self.kick.set(fd);
    }

    /// Whether a wake came since the last poll.
    pub(crate) fn is_notified(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }

    /// Takes the wake that came since the last poll, if any.
    pub(crate) fn take(&self) -> bool {
        self.notified.swap(false, Ordering::AcqRel)
    }

    /// Announces a sleep in the kernel; `false` (and no sleep) when a wake came first.
    /// Every wake after this writes to the kick descriptor, until [`Signal::sleep_end`].
    pub(crate) fn sleep_begin(&self) -> bool {
        self.enter(SLEEPING)
    }

    pub(crate) fn sleep_end(&self) {
        self.state.store(RUNNING, Ordering::SeqCst);
    }

    fn enter(&self, state: u8) -> bool {
        // With `wake_by_ref`'s swap then load, both SeqCst: either the waker sees the new
        // state, or this sees its notification.
        self.state.store(state, Ordering::SeqCst);
        if self.notified.load(Ordering::SeqCst) {
            self.state.store(RUNNING, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Parks until a wake (at once when one came already).
    pub(crate) fn park(&self) {
        if self.enter(PARKED) {
            // A spurious return only means one more look.
            thread::park();
            self.state.store(RUNNING, Ordering::SeqCst);
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        #[cfg(target_os = "linux")]
        use std::os::fd::AsRawFd;
        if self.notified.swap(true, Ordering::SeqCst) {
            return;
        }
        match self.state.load(Ordering::SeqCst) {
            SLEEPING =>
            {
                #[cfg(target_os = "linux")]
                if let Some(fd) = self.kick.get() {
                    if let Err(e) = crate::sys::eventfd_signal(fd.as_raw_fd()) {
                        log::error!("caio: cannot wake a thread in block_on ({e})");
                    }
                }
            }
            PARKED => self.thread.unpark(),
            _ => {} // running or spinning: it looks at `notified` before it sleeps
        }
    }
}

thread_local! {
    /// The backend this thread drives in `block_on`: to tell its operations apart, and to
    /// pause its drive while a nested `block_on` runs.
    static DRIVING: Cell<Option<*const (dyn Drive + 'static)>> = const { Cell::new(None) };
}

/// Pauses the drive of an enclosing `block_on` on this thread, if any, for as long as a
/// nested one runs: the nested one may await what the enclosing one started, which only
/// the enclosing one would otherwise complete.
pub(crate) struct Paused {
    outer: Option<*const (dyn Drive + 'static)>,
}

impl Paused {
    pub(crate) fn new() -> Paused {
        let outer = DRIVING.with(Cell::get);
        if let Some(p) = outer {
            // SAFETY: `p` is the backend the enclosing `block_on` on this thread drives: its
            // frame, below this one on the stack, borrows it until it returns, after this.
            unsafe { &*p }.pause();
        }
        Paused { outer }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(p) = self.outer {
            // SAFETY: as in `Paused::new`; the enclosing `block_on` has not returned.
            unsafe { &*p }.resume();
        }
    }
}

/// Whether the calling thread drives `backend`: then it flushes queued operations itself
/// before it waits, once for everything its tasks queued.
pub(crate) fn drives(backend: &dyn Drive) -> bool {
    DRIVING.with(|d| d.get().is_some_and(|p| std::ptr::addr_eq(p, backend)))
}

/// Marks the calling thread as driving a backend (or, when it cannot, as driving
/// nothing, so that its operations take the generic path), and ends the drive when
/// `block_on` returns or unwinds.
pub(crate) struct Driving<'a> {
    /// The backend driven, while the drive lasts.
    backend: Option<&'a (dyn Drive + 'static)>,
    /// What an enclosing `block_on` on this thread drove.
    outer: Option<*const (dyn Drive + 'static)>,
}

impl<'a> Driving<'a> {
    /// `backend` is the one whose [`Drive::begin`] succeeded, if any.
    pub(crate) fn new(backend: Option<&'a (dyn Drive + 'static)>) -> Driving<'a> {
        let outer = DRIVING.with(|d| d.replace(backend.map(|b| b as *const _)));
        Driving { backend, outer }
    }

    /// The backend driven, while the drive lasts.
    pub(crate) fn backend(&self) -> Option<&'a (dyn Drive + 'static)> {
        self.backend
    }

    /// Ends the drive early: the thread parks from now on.
    pub(crate) fn stop(&mut self) {
        if let Some(backend) = self.backend.take() {
            // Operations queued in the last poll skipped the flush they would owe under
            // another executor (this thread flushes after each poll): send them now, or a
            // future handed out of `block_on` would wait for them forever. And while the
            // thread still counts as driving: the backend may finish its work.
            backend.flush();
            backend.end();
            DRIVING.with(|d| d.set(None));
        }
    }
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.stop();
        DRIVING.with(|d| d.set(self.outer));
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
