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
    sync::{
        atomic::{AtomicBool, AtomicU8, Ordering},
        Arc, MutexGuard,
    },
    task::Wake,
    thread::{self, Thread},
};
#[cfg(target_os = "linux")]
use std::{
    os::fd::OwnedFd,
    sync::{atomic::AtomicUsize, Mutex, OnceLock},
    thread::ThreadId,
    time::Duration,
};

// The pacing of a kernel backend's submissions and sleeps in `block_on`: Linux only.
#[cfg(target_os = "linux")]
mod pace;

#[cfg(target_os = "linux")]
pub(crate) use pace::{batch, Early, LateWakes};

use super::FileIo;
#[cfg(target_os = "linux")]
use crate::sync::lock;

/// From how many awaited completions (16 or more in flight) the thread does not spin at
/// all unless the backend asks for it ([`Drive::spins_deep`]): the kernel's wait gathers
/// the batch, for less CPU. A thread that spins until each batch is there keeps a core
/// busy, and a short spin buys no reads over none. linux spins at depth where a sleep
/// comes back late (see `LateWakes`); uring never does: its completions wait in the
/// kernel until the thread enters it, so a look at the ring finds nothing.
pub(crate) const DEEP_BATCH: usize = 4;

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

#[cfg(target_os = "linux")]
/// How often a backend's reaper looks while an executor's reactor reaps for it and
/// nothing is in flight: rarely, so that an idle runtime costs no wake-up a millisecond.
const IDLE_LOOK: Duration = Duration::from_millis(50);

#[cfg(target_os = "linux")]
/// How often a backend's completion thread looks while another thread drives.
const TICK: Duration = Duration::from_millis(1);

#[cfg(target_os = "linux")]
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

#[cfg(target_os = "linux")]
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

    /// The reaper's look while a thread in `block_on` or an executor's reactor waits for
    /// the completions: with no thread in `block_on` and, as `idle` says, nothing in
    /// flight to look for, a long sleep (no wake-up a millisecond while a runtime idles);
    /// else [`Driver::tick`].
    pub(crate) fn look<R>(&self, idle: bool, reap: impl FnOnce() -> R) -> Option<R> {
        if idle && !self.is_active() {
            thread::park_timeout(IDLE_LOOK);
            return None;
        }
        self.tick(reap)
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
    #[cfg(target_os = "linux")]
    kick: OnceLock<Arc<OwnedFd>>,
}

impl Signal {
    pub(crate) fn new() -> Signal {
        Signal {
            notified: AtomicBool::new(true),
            state: AtomicU8::new(RUNNING),
            thread: thread::current(),
            #[cfg(target_os = "linux")]
            kick: OnceLock::new(),
        }
    }

    #[cfg(target_os = "linux")]
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

    #[cfg(target_os = "linux")]
    /// Announces a sleep in the kernel; `false` (and no sleep) when a wake came first.
    /// Every wake after this writes to the kick descriptor, until [`Signal::sleep_end`].
    pub(crate) fn sleep_begin(&self) -> bool {
        self.enter(SLEEPING)
    }

    #[cfg(target_os = "linux")]
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
        use crate::sys::fd::AsRawFd;
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
