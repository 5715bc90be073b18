//! Where a finished operation's result waits for its future: the [`Slot`], the
//! [`Completer`] a backend completes it through, and the in-flight [`Permit`].
//!
//! A backend's completion thread holds the wakes of a batch of completions back until the
//! whole batch is complete ([`hold_wakes`]): the operations their permits admit are queued
//! by then, so the first woken future's flush sends them all in one submission.

use std::{
    cell::{Cell, RefCell, UnsafeCell},
    fmt, io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
};

use futures::task::AtomicWaker;

use super::{Bufs, Completion};
use crate::context::stats::{Count, Counters};

/// How many wakes a thread holds back at most (two per completion: its own future's and
/// the one its slot admits); past that, those held are woken first. The room is taken
/// once, when the thread starts (`completes_for_others`), and never grows.
const HELD_WAKES: usize = 256;

thread_local! {
    /// How many [`HeldWakes`] live on this thread.
    static HOLDING: Cell<usize> = const { Cell::new(0) };
    /// The wakes they hold back; no room on a thread that does not hold.
    static HELD: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
    /// The futures woken under the guards living on this thread (held back or not).
    static WOKEN: Cell<usize> = const { Cell::new(0) };
    /// How many operations the futures the latest reap on this thread woke are still
    /// expected to queue here (see [`after_reap`]).
    static EXPECTED: Cell<usize> = const { Cell::new(0) };
}

/// When the future queuing an operation on the calling thread now was woken by this
/// thread's latest reap, as far as can be told, how many more operations the futures that
/// reap woke are expected to queue here; `None` when it was not (the reap woke nothing, or
/// as many operations were queued here since as it woke).
///
/// An executor whose own thread reaps (tokio's, through the reactor) polls the futures a
/// reap woke right after it, on that thread, and each queues its next operation. A burst
/// with no reap before it (a loop that starts many operations) is not one of them. A guess
/// that is off only changes when an operation is sent: one queued without being sent is
/// sent by its future's next poll.
///
/// Inside a reap (for an operation its completions admit) it is always `None`: the
/// admitted operation's future flushes it, and a send from inside the reap would nest a
/// reap in it.
#[cfg(target_os = "linux")]
pub(crate) fn after_reap() -> Option<usize> {
    if HOLDING.with(Cell::get) > 0 {
        return None;
    }
    EXPECTED.with(|e| match e.get() {
        0 => None,
        n => {
            e.set(n - 1);
            Some(n - 1)
        }
    })
}

#[cfg(target_os = "linux")]
/// Makes the calling thread one that completes operations for other threads (a backend's
/// completion thread): under [`hold_wakes`] it holds their wakes back. Takes the room for
/// them now, so that holding never allocates. (On other threads a guard holds nothing:
/// a thread that completes what it polls itself gains nothing from it.)
pub(crate) fn completes_for_others() {
    HELD.with(|h| h.borrow_mut().reserve_exact(HELD_WAKES));
}

#[cfg(target_os = "linux")]
/// While it lives, the futures of the operations completed on this thread are woken only
/// when it drops; see [`hold_wakes`].
#[must_use = "the wakes are held back only while it lives"]
pub(crate) struct HeldWakes(());

#[cfg(target_os = "linux")]
/// Holds back the wakes of the operations this thread completes until the guard drops.
///
/// A reaper completes a batch of completions in a row. Each one first admits the next
/// queued operation (which a batching backend queues) and then wakes its future. Woken
/// at once, an executor on another thread starts polling while the batch is still being
/// completed, and its first flush sends only what was queued by then: the batch goes to
/// the kernel in small pieces. Held back, every admitted operation is queued before any
/// future runs (past [`HELD_WAKES`] wakes, before each [`HELD_WAKES`] of them run).
/// Guards nest; the outermost one wakes.
pub(crate) fn hold_wakes() -> HeldWakes {
    HOLDING.with(|h| h.set(h.get() + 1));
    HeldWakes(())
}

#[cfg(target_os = "linux")]
impl Drop for HeldWakes {
    fn drop(&mut self) {
        if HOLDING.with(|h| h.replace(h.get() - 1)) != 1 {
            return;
        }
        // A reap that woke nothing (one ring of several, empty) says nothing new.
        let woken = WOKEN.with(|w| w.replace(0));
        if woken > 0 {
            EXPECTED.with(|e| e.set(woken));
        }
        // Nothing is held from here on: a waker that completes operations itself (an
        // executor that polls inside `wake`) finds the list borrowed, or no guard, and
        // wakes them at once. At thread exit the list may be gone; `wake` then woke at once.
        let _ = HELD.try_with(|h| {
            if let Ok(mut h) = h.try_borrow_mut() {
                h.drain(..).for_each(Waker::wake);
            }
        });
    }
}

/// Wakes `w` now, or when this thread's [`HeldWakes`] drops.
fn wake(w: Waker) {
    if HOLDING.with(Cell::get) == 0 {
        return w.wake();
    }
    WOKEN.with(|n| n.set(n.get() + 1));
    let mut w = Some(w);
    let _ = HELD.try_with(|h| {
        // Borrowed: a held wake is running and completed this one; wake it at once. No
        // room: not a thread that holds.
        let Ok(mut h) = h.try_borrow_mut() else {
            return;
        };
        if h.capacity() < HELD_WAKES {
            return;
        }
        if h.len() == HELD_WAKES {
            // Full (an enormous batch): those held so far go now.
            h.drain(..).for_each(Waker::wake);
        }
        h.push(w.take().expect("taken once"));
    });
    if let Some(w) = w {
        w.wake();
    }
}

/// Where a result lands and the future's waker waits.
///
/// No lock: the result is written once, by the backend's [`Completer`], before `done` is
/// set, and read once, by the one future that owns the slot, after it sees `done`. The
/// waker is an [`AtomicWaker`]: the future registers it and then looks at `done`; the
/// backend sets `done` and then takes it, so one of the two always sees the other.
#[derive(Default)]
pub(crate) struct Slot {
    /// Set (release) once `result` is written; the future reads `result` only after it
    /// has seen this (acquire).
    done: AtomicBool,
    result: UnsafeCell<Option<Completion>>,
    waker: AtomicWaker,
    /// Admitted from the queue into a batching backend: the future flushes on its next poll.
    needs_flush: AtomicBool,
    /// The future is gone.
    abandoned: AtomicBool,
    /// Its cancellation was asked for (an abort handle, or its future dropped in flight).
    aborted: AtomicBool,
    /// While the kernel holds the operation, the backend's name for it there (an io_uring
    /// entry's `user_data` with its ring's tag, an iocb's address); 0 otherwise. Written
    /// by the backend where it hands the operation to the kernel and takes it back, read
    /// by a cancellation. (Only Linux's kernel backends hand operations to the kernel.)
    #[cfg(target_os = "linux")]
    kernel: std::sync::atomic::AtomicUsize,
    /// Nobody ever waits for it (a close after a drop): it flushes for itself, and an
    /// error is logged rather than lost.
    detached: Option<&'static str>,
}

// SAFETY: `result` is the only part that is not Sync. It is written by one thread, once
// (`set`, called only by the slot's one `Completer`, which completes once), before `done`
// is stored with release ordering; it is read only by the future that owns the slot,
// through `&mut`-exclusive polls (`Raw::poll`), after `done` was loaded with acquire
// ordering. Write and read never overlap.
unsafe impl Sync for Slot {}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("done", &self.done.load(Ordering::Relaxed))
            .field("abandoned", &self.abandoned.load(Ordering::Relaxed))
            .field("detached", &self.detached)
            .finish()
    }
}

impl Slot {
    /// A slot nobody will poll, for an operation that must run anyway; `what` names it in
    /// the log if it fails.
    pub(crate) fn detached(what: &'static str) -> Slot {
        Slot {
            detached: Some(what),
            ..Slot::default()
        }
    }

    /// Makes a finished slot, held by nobody else, ready for a new operation.
    pub(crate) fn reset(&mut self) {
        *self.done.get_mut() = false;
        *self.result.get_mut() = None;
        drop(self.waker.take());
        *self.needs_flush.get_mut() = false;
        *self.abandoned.get_mut() = false;
        *self.aborted.get_mut() = false;
        #[cfg(target_os = "linux")]
        {
            *self.kernel.get_mut() = 0;
        }
        self.detached = None;
    }

    /// Stores the result; wakes the future once this handle on the slot is gone, so a
    /// woken future finds itself the slot's only owner (and can reuse it).
    pub(crate) fn set(self: Arc<Self>, c: Completion) {
        if let Some(what) = self.detached {
            if let Some(e) = &c.error {
                log::warn!("caio: {what} failed with nobody waiting for it: {e}");
            }
            return;
        }
        // SAFETY: see `impl Sync`: this is the one write, and no read starts before the
        // store of `done` below.
        unsafe { *self.result.get() = Some(c) };
        self.done.store(true, Ordering::Release);
        let waker = self.waker.take();
        drop(self);
        if let Some(w) = waker {
            wake(w);
        }
    }

    /// The result if it is there, else registers the waker; and whether the future owes
    /// the backend a flush. Called only by the future that owns the slot.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> (Poll<Completion>, bool) {
        let flush = self.needs_flush.load(Ordering::Relaxed)
            && self.needs_flush.swap(false, Ordering::SeqCst);
        if !self.done.load(Ordering::Acquire) {
            self.waker.register(cx.waker());
            if !self.done.load(Ordering::Acquire) {
                return (Poll::Pending, flush);
            }
        }
        // SAFETY: see `impl Sync`: `done` was seen, so the write is over, and only this
        // future reads; it reads once, since a taken result leaves `None`.
        match unsafe { (*self.result.get()).take() } {
            Some(r) => (Poll::Ready(r), flush),
            None => (Poll::Pending, flush), // taken by an earlier poll: never again
        }
    }

    /// The future owes the backend a flush on its next poll (it just queued a request).
    pub(crate) fn defer_flush(&self) {
        self.needs_flush.store(true, Ordering::SeqCst);
    }

    /// After admission into a batching backend: asks the future to flush and wakes it.
    /// `true` when the future is gone, so the caller must flush instead.
    pub(crate) fn request_flush(&self) -> bool {
        // With `abandon`'s store then swap, all SeqCst: either this sees the future gone,
        // or the future, going, sees the flush it owes (or both, and two flush).
        self.needs_flush.store(true, Ordering::SeqCst);
        let gone = self.abandoned.load(Ordering::SeqCst) || self.detached.is_some();
        // Through `wake`: a completion thread holds it back until its whole reap is done.
        // (The future registers its waker again when it polls.)
        if let Some(w) = self.waker.take() {
            wake(w);
        }
        gone
    }

    /// The future goes away; `true` when it owed a flush (which the caller then does).
    pub(crate) fn abandon(&self) -> bool {
        self.abandoned.store(true, Ordering::SeqCst);
        self.needs_flush.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Asks for its cancellation: `true` the first time, while it has not finished (the
    /// caller then asks the backend). A detached operation (a close nobody waits for) is
    /// never cancelled.
    pub(crate) fn abort(&self) -> bool {
        self.detached.is_none()
            && !self.done.load(Ordering::Acquire)
            && !self.aborted.swap(true, Ordering::SeqCst)
    }

    /// Whether its cancellation was asked for. Read (SeqCst) where a backend is about to
    /// hand it to the kernel, after it wrote [`Slot::set_kernel`]: either that sees the
    /// abort, or the abort sees the kernel's name.
    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Names it in the kernel; see the field. SeqCst, as the abort's flag: either the
    /// backend, looking at the flag after this, sees the abort, or the abort sees the name.
    /// (io_uring's; the io-uring crate is 64-bit only.)
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    pub(crate) fn set_kernel(&self, name: usize) {
        self.kernel.store(name, Ordering::SeqCst);
    }

    /// Names it in the kernel where a cancellation that misses it could not have won
    /// anyway (kernel AIO cancels no file I/O): no ordering with the abort.
    #[cfg(target_os = "linux")]
    pub(crate) fn note_kernel(&self, name: usize) {
        self.kernel.store(name, Ordering::Relaxed);
    }

    /// The kernel no longer holds it: before its box can be reused (which is ordered
    /// after this by whatever hands the box on).
    #[cfg(target_os = "linux")]
    pub(crate) fn clear_kernel(&self) {
        self.kernel.store(0, Ordering::Release);
    }

    /// Its name in the kernel, 0 when the kernel does not hold it.
    #[cfg(target_os = "linux")]
    pub(crate) fn kernel(&self) -> usize {
        self.kernel.load(Ordering::SeqCst)
    }
}

/// The backend's half of an operation: completes it exactly once. Dropped without
/// completing (a worker that died, a backend torn down), it completes the future with an
/// error, so no future ever hangs.
#[derive(Debug)]
pub(crate) struct Completer {
    /// `None` once completed.
    slot: Option<Arc<Slot>>,
    permit: Option<Permit>,
}

impl Completer {
    pub(crate) fn new(slot: Arc<Slot>, permit: Option<Permit>) -> Completer {
        Completer {
            slot: Some(slot),
            permit,
        }
    }

    /// The slot the result goes to.
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        self.slot
            .as_ref()
            .expect("a completer has its slot until it completes")
    }

    pub(crate) fn complete(mut self, c: Completion) {
        self.complete_now(c);
    }

    /// Completes in place; the completer is spent (its drop does nothing).
    pub(crate) fn complete_now(&mut self, mut c: Completion) {
        if self.slot.as_ref().is_some_and(|s| s.is_aborted()) {
            // Ended by its cancellation: the kernel says ECANCELED (it never ran), or EINTR
            // (a blocking call its cancellation interrupted); either is ECANCELED here.
            let cancelled = c
                .error
                .as_ref()
                .and_then(io::Error::raw_os_error)
                .is_some_and(is_cancellation);
            if cancelled {
                c.error = Some(crate::sys::cancelled());
                self.count(Count::CancelWon);
            }
        }
        // Give the in-flight slot back first, so the woken task can start its next
        // operation at once.
        self.permit.take();
        if let Some(slot) = self.slot.take() {
            slot.set(c);
        }
    }

    /// Counts `what` in the counters of the operation's context.
    pub(crate) fn count(&self, what: Count) {
        if let Some(c) = self.permit.as_ref().and_then(Permit::counters) {
            c.add(what);
        }
    }

    /// Completes with an error, handing `bufs` back.
    pub(crate) fn fail(self, e: io::Error, bufs: Bufs) {
        self.complete(Completion::failed(e, bufs));
    }
}

/// Whether `errno` is how an operation ended by its cancellation reports it.
fn is_cancellation(errno: i32) -> bool {
    #[cfg(unix)]
    if errno == libc::EINTR {
        return true;
    }
    errno == crate::sys::c::ECANCELED
}

impl Drop for Completer {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.permit.take();
            slot.set(Completion::failed(
                io::Error::other(
                    "caio: the operation was abandoned by its backend (worker panicked or context torn down)",
                ),
                Bufs::None,
            ));
        }
    }
}

/// Whoever counts operations in flight: told when one leaves.
pub(crate) trait Admission: Send + Sync {
    /// One operation left flight (its request completed or was dropped).
    fn release(self: Arc<Self>);
    /// The context's counters.
    fn counters(&self) -> &Counters;
}

/// One of the in-flight slots, held by a request until the backend is done with it.
/// Dropping it gives the slot back to its [`Admission`].
pub(crate) struct Permit(Option<Arc<dyn Admission>>, bool);

impl Permit {
    /// A permit for an operation starting now: counted as submitted.
    pub(crate) fn new(owner: Arc<dyn Admission>) -> Permit {
        owner.counters().submitted();
        Permit(Some(owner), true)
    }

    /// The operation will not start after all (its future is gone): neither submitted
    /// nor completed, for the counters.
    pub(crate) fn not_started(&mut self) {
        if let (Some(owner), true) = (&self.0, self.1) {
            owner.counters().not_submitted();
            self.1 = false;
        }
    }

    /// The counters of the context it is from.
    pub(crate) fn counters(&self) -> Option<&Counters> {
        self.0.as_deref().map(|a| a.counters())
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    /// The operation left flight: counted as completed.
    fn drop(&mut self) {
        if let Some(owner) = self.0.take() {
            if self.1 {
                owner.counters().completed();
            }
            owner.release();
        }
    }
}

#[cfg(test)]
pub(crate) fn take_result(slot: &Slot) -> Option<io::Result<Completion>> {
    if !slot.done.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: `done` was seen: the completer's one write is over, and the caller is the
    // slot's only reader (no future polls it).
    unsafe { (*slot.result.get()).take() }.map(|mut c| match c.error.take() {
        Some(e) => Err(e),
        None => Ok(c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_os = "linux")]
    use crate::backend::Request;
    use crate::{
        backend::{test_request, Kind},
        Buffer,
    };

    #[test]
    fn a_dropped_completer_reports_an_error() {
        let (req, slot) = test_request(Kind::Fsync);
        drop(req);
        let e = take_result(&slot).expect("completed").unwrap_err();
        assert!(e.to_string().contains("abandoned"), "{e}");
    }

    #[cfg(target_os = "linux")]
    use std::sync::Mutex;

    /// Counts its wakes; the first one may finish another request, as a waker that
    /// polls inside `wake` would.
    #[cfg(target_os = "linux")]
    #[derive(Default)]
    struct Counting {
        wakes: std::sync::atomic::AtomicUsize,
        then: Mutex<Option<Request>>,
    }

    #[cfg(target_os = "linux")]
    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = self.then.lock().unwrap().take();
            if let Some(req) = next {
                req.finish(Ok(0));
            }
        }
    }

    #[cfg(target_os = "linux")]
    impl Counting {
        fn wakes(&self) -> usize {
            self.wakes.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// A request whose future waits with `waker`.
    #[cfg(target_os = "linux")]
    fn waited(waker: &Waker) -> Request {
        let (req, slot) = test_request(Kind::Fsync);
        let poll = slot.poll(&mut Context::from_waker(waker)).0;
        assert!(poll.is_pending());
        req
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn held_wakes_run_once_each_when_the_outermost_guard_drops() {
        completes_for_others();
        let count = Arc::new(Counting::default());
        let waker = Waker::from(Arc::clone(&count));
        let (a, b) = (waited(&waker), waited(&waker));
        let outer = hold_wakes();
        a.finish(Ok(0));
        {
            let _inner = hold_wakes();
            b.finish(Ok(0));
        }
        assert_eq!(count.wakes(), 0, "woken before the batch was complete");
        drop(outer);
        assert_eq!(count.wakes(), 2);
        waited(&waker).finish(Ok(0));
        assert_eq!(
            count.wakes(),
            3,
            "with no guard, a completion wakes at once"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn past_its_room_the_held_wakes_go_first_and_none_is_lost() {
        completes_for_others();
        let count = Arc::new(Counting::default());
        let waker = Waker::from(Arc::clone(&count));
        let reqs: Vec<Request> = (0..HELD_WAKES + 5).map(|_| waited(&waker)).collect();
        let held = hold_wakes();
        for r in reqs {
            r.finish(Ok(0));
        }
        assert_eq!(
            count.wakes(),
            HELD_WAKES,
            "the first {HELD_WAKES} go when the list is full"
        );
        drop(held);
        assert_eq!(count.wakes(), HELD_WAKES + 5);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_that_completes_only_for_itself_holds_nothing() {
        let count = Arc::new(Counting::default());
        let waker = Waker::from(Arc::clone(&count));
        let req = waited(&waker);
        // A thread of its own: the test harness's may have made room already.
        std::thread::spawn(move || {
            let _held = hold_wakes();
            req.finish(Ok(0));
            assert_eq!(count.wakes(), 1, "held on a thread with no room");
        })
        .join()
        .unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_wake_that_completes_another_operation_wakes_it_too() {
        completes_for_others();
        let count = Arc::new(Counting::default());
        let waker = Waker::from(Arc::clone(&count));
        let first = waited(&waker);
        *count.then.lock().unwrap() = Some(waited(&waker));
        drop({
            let held = hold_wakes();
            first.finish(Ok(0));
            held
        });
        assert_eq!(
            count.wakes(),
            2,
            "the one completed inside a held wake was lost"
        );
    }

    #[test]
    fn finish_returns_the_read_buffer() {
        let (req, slot) = test_request(Kind::Read(Buffer::from(&b"abc"[..])));
        req.finish(Ok(3));
        let c = take_result(&slot).unwrap().unwrap();
        assert_eq!((c.n, &c.bufs.one()[..]), (3, &b"abc"[..]));
    }

    /// Unparks a thread.
    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    #[test]
    fn a_result_set_on_another_thread_while_the_future_polls_is_seen_once_and_wakes_it() {
        // The slot has no lock: the future registers its waker, then looks for the result;
        // the completer stores the result, then takes the waker. Race them many times, with
        // the completer at every point of the future's poll; a lost wake is a pending
        // poll that nothing wakes (caught by the timeout), a torn result a wrong count.
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        for i in 0..20_000usize {
            let (req, slot) = test_request(Kind::Fsync);
            let spin = i % 64;
            let t = std::thread::spawn(move || {
                for _ in 0..spin {
                    std::hint::spin_loop();
                }
                req.finish(Ok(i));
            });
            let c = loop {
                match slot.poll(&mut cx).0 {
                    Poll::Ready(c) => break c,
                    Poll::Pending => {
                        let t0 = std::time::Instant::now();
                        std::thread::park_timeout(std::time::Duration::from_secs(5));
                        assert!(
                            t0.elapsed() < std::time::Duration::from_secs(5),
                            "poll {i}: the result came and nothing woke the future"
                        );
                    }
                }
            };
            assert_eq!(c.n, i);
            assert!(slot.poll(&mut cx).0.is_pending(), "a result is taken once");
            t.join().unwrap();
        }
    }
}
