//! Cancelling an operation: the [`AbortHandle`] a caller keeps, and the group of
//! operations it cancels (one, or each step of a `File` operation made of several).
//!
//! An abort marks the operation's slot and asks its backend to cancel it where it is:
//! one not started yet (waiting for a slot, queued for a submission or for a worker)
//! completes with `ECANCELED` where it would have started; one the kernel holds is asked
//! of the kernel (`IORING_OP_ASYNC_CANCEL`, `io_cancel`), and completes with its result if
//! it finished first, else `ECANCELED`. The request keeps its buffers until the kernel or
//! worker is done, as for a dropped future.

use std::{
    fmt,
    sync::{Arc, Mutex, Weak},
};

use crate::{
    backend::Slot,
    context::{stats::Count, Shared},
    sync::lock,
};

/// Cancels the operation it was taken from; see [`Operation::abort_handle`](crate::Operation::abort_handle).
///
/// Cheap to clone, and usable from any thread, before, during or after the operation: an
/// abort before its first poll makes that poll resolve to `ECANCELED` without starting
/// it, and an abort after it finished changes nothing.
#[derive(Clone)]
pub struct AbortHandle(Arc<Abort>);

impl AbortHandle {
    pub(crate) fn new(abort: Arc<Abort>) -> AbortHandle {
        AbortHandle(abort)
    }

    /// Cancels the operation: it resolves to its own result if it finished first, else
    /// to an error of raw OS error `ECANCELED` (`ERROR_OPERATION_ABORTED` on Windows).
    ///
    /// Where it stands decides what happens:
    /// - not started (not polled yet, waiting for one of the context's `max_requests`
    ///   slots, or queued for the kernel or a worker): it never starts. It resolves where
    ///   it would have started: at once when not polled yet or queued for the kernel; when
    ///   a slot frees, or when a worker reaches it in the pool's queue, otherwise (with
    ///   every slot or worker held by slow storage, that is when one of them finishes);
    /// - with io_uring: the kernel is asked to cancel it (`IORING_OP_ASYNC_CANCEL`). A
    ///   read or write the kernel has not started is cancelled; one blocked in a kernel
    ///   worker (a FUSE or NFS read) is interrupted where the filesystem allows it.
    ///   From a thread other than the one that submitted it under an executor, the
    ///   cancellation goes with that thread's next submission;
    /// - with kernel AIO: `io_cancel`, which Linux honours for no file or block-device
    ///   I/O: the operation runs to the end;
    /// - on a worker thread (`thread`, `blocking`, and what the kernel backends give their
    ///   pool): a call that has begun runs to the end.
    ///
    /// A file operation made of several requests (an unaligned O_DIRECT range, a write
    /// continued after a short one) stops at the request in flight.
    /// [`Stats`](crate::Stats) counts the cancellations asked for and those that won.
    pub fn abort(&self) {
        self.0.abort();
    }

    /// Whether [`abort`](AbortHandle::abort) was called.
    pub fn is_aborted(&self) -> bool {
        lock(&self.0.state).aborted
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("aborted", &self.is_aborted())
            .finish()
    }
}

/// What an abort handle and the operations it cancels share.
pub(crate) struct Abort {
    state: Mutex<State>,
}

struct State {
    aborted: bool,
    /// The slots of the operations started under it and maybe not finished.
    slots: Vec<Arc<Slot>>,
    /// The context, to ask its backend; not kept alive by a handle.
    shared: Weak<Shared>,
}

impl Abort {
    pub(crate) fn new(shared: &Arc<Shared>) -> Arc<Abort> {
        Abort::on(Arc::downgrade(shared))
    }

    /// One attached to no operation: its abort changes nothing (a handle of an operation
    /// that already finished, or failed before it could start).
    pub(crate) fn unattached() -> Arc<Abort> {
        Abort::on(Weak::new())
    }

    fn on(shared: Weak<Shared>) -> Arc<Abort> {
        Arc::new(Abort {
            state: Mutex::new(State {
                aborted: false,
                slots: Vec::new(),
                shared,
            }),
        })
    }

    /// Joins the operation of `slot`, starting now, to the group: `false` when the abort
    /// came first, and the operation must not start (counted as a cancellation asked for
    /// and won).
    pub(crate) fn enlist(&self, slot: &Arc<Slot>) -> bool {
        let mut s = lock(&self.state);
        if s.aborted {
            if let Some(shared) = s.shared.upgrade() {
                shared.counters.add(Count::CancelAsked);
                shared.counters.add(Count::CancelWon);
            }
            return false;
        }
        s.slots.retain(|s| !s.is_done());
        s.slots.push(Arc::clone(slot));
        true
    }

    fn abort(&self) {
        let (slots, shared) = {
            let mut s = lock(&self.state);
            if std::mem::replace(&mut s.aborted, true) {
                return;
            }
            (std::mem::take(&mut s.slots), s.shared.upgrade())
        };
        let Some(shared) = shared else {
            return; // the context is gone, and everything it ran with it
        };
        for slot in slots {
            cancel(&shared, &slot);
        }
    }
}

/// Asks for the cancellation of the operation of `slot` on `shared`'s backend, unless it
/// finished or was asked already; counted.
pub(crate) fn cancel(shared: &Shared, slot: &Arc<Slot>) {
    if shared.is_forked() || !slot.abort() {
        // In a child after fork(): the operation is the parent's, and so is its kernel.
        return;
    }
    shared.counters.add(Count::CancelAsked);
    shared.backend.cancel(slot);
}
