//! Cancellation on io_uring: the name the kernel knows an operation by, and the
//! `IORING_OP_ASYNC_CANCEL` entries that ask for it.
//!
//! While the kernel holds a transfer or a sync, its slot knows it by its entry's
//! `user_data` (the box's address) and its ring's tag in the low bits (`kernel_name`;
//! boxes are 64-byte aligned). An abort sends `IORING_OP_ASYNC_CANCEL` for that name into
//! the same ring, from a thread allowed to write there: anyone for the shared ring (under
//! its submission lock), the owner for a lane or the driving thread's ring (another
//! thread's abort waits in `Ring::cancels` for the owner's next submission, and wakes
//! the driving thread). The name is read again by the one writing the cancellation, in
//! that ring's order of submission: a box reaped and reused meanwhile is named in its new
//! entry only after the cancellation went, which then matches nothing. A name is written
//! before the entry is and the abort looked at after (`called_off`), so an abort either
//! stops an entry before it goes or finds its name. An abort won (ECANCELED, or EINTR from
//! an interrupted kernel worker) resolves the future with ECANCELED.

use super::*;

/// The low bits of an operation's name in the kernel ([`kernel_name`]): which ring holds it.
pub(super) const TAG_MASK: usize = 63;
/// The tag of the shared ring.
pub(super) const TAG_SHARED: usize = 1;
/// The tag of the driving thread's own ring.
pub(super) const TAG_OWN: usize = 2;

/// The `user_data` of a cancellation's own entry, whose completion is not an operation's
/// (an operation's is the address of its box, a multiple of 64).
pub(super) const CANCEL: u64 = 2;

/// What an operation's slot is told while the kernel holds it, for a cancellation to find
/// it: its address (its entry's `user_data`) and its ring's `tag`. Only transfers and
/// syncs are named: a metadata call runs to the end (a cancelled close would leave its
/// descriptor open, with its owner forgotten).
pub(super) fn kernel_name(op: &UringOp, tag: usize) -> usize {
    match op.req.kind {
        Kind::Read(_)
        | Kind::ReadV(_)
        | Kind::Write(_)
        | Kind::WriteV(_)
        | Kind::Fsync
        | Kind::Fdsync => op as *const UringOp as usize | tag,
        Kind::Meta(_) => 0,
    }
}

/// Names `op` to its slot as held by the ring of `tag`, then says whether it must not go
/// there after all (see `Request::is_called_off`; its slot is then told it is nowhere).
/// Naming first: either this sees an abort, or the abort sees the name.
pub(super) fn called_off(op: &mut UringOp, tag: usize) -> bool {
    let name = kernel_name(op, tag);
    let slot = op.req.done.slot();
    slot.set_kernel(name);
    if slot.is_aborted() || slot.is_abandoned() {
        slot.clear_kernel();
        return op.req.is_called_off();
    }
    false
}

/// The entry that asks the kernel to cancel the operation named `name` in the ring it is
/// submitted to.
pub(super) fn cancel_entry(name: usize) -> squeue::Entry {
    opcode::AsyncCancel::new((name & !TAG_MASK) as u64)
        .build()
        .user_data(CANCEL)
}

impl Ring {
    /// Asks for the cancellation of the operation of `slot`, wherever it is (see the
    /// module docs).
    pub(super) fn cancel(&self, slot: &Arc<Slot>) {
        let ring = self;
        // Where the kernel holds it, as far as a look from here tells: a ring only its
        // owner may enter has the owner read the name again and send the cancellation.
        let name = slot.kernel();
        match name & TAG_MASK {
            _ if name == 0 => {} // not in a ring: called off where it would start
            TAG_SHARED => ring.cancel_shared(slot),
            TAG_OWN => {
                if let Ok(mut own) = ring.own.try_lock() {
                    if let Some(o) = own.as_mut() {
                        if o.thread == thread::current().id() {
                            // The driving thread itself: into its ring, sent by its next
                            // enter, which comes before it waits.
                            let name = slot.kernel();
                            if name != 0 && name & TAG_MASK == TAG_OWN {
                                o.cancel(name);
                            }
                            return;
                        }
                        ring.defer_cancel(slot);
                        // Ends its sleep in the ring, so that it sends the cancellation.
                        let _ = sys::eventfd_signal(o.kick.as_raw_fd());
                        return;
                    }
                }
                // Being entered now: its next round sends it.
                ring.defer_cancel(slot);
            }
            tag => match ring.my_lane().filter(|l| l.tag() == tag) {
                Some(lane) => {
                    let name = slot.kernel();
                    if name != 0 && name & TAG_MASK == tag {
                        lane.cancel(ring, &[name]);
                    }
                }
                None => ring.defer_cancel(slot),
            },
        }
    }

    /// Asks the kernel to cancel the operation of `slot` in the shared ring, if it is
    /// there: its name is read under the submission lock, so that its box, if reaped and
    /// reused meanwhile, goes to the ring after the cancellation (which then finds
    /// nothing).
    pub(super) fn cancel_shared(&self, slot: &Slot) {
        let mut unsent = lock(&self.sq);
        let name = slot.kernel();
        if name != 0 && name & TAG_MASK == TAG_SHARED && !self.denied.load(Ordering::Acquire) {
            self.push_cancels(&self.ring, &mut unsent, None, &[name]);
        }
    }

    /// Writes a cancellation of each of `names` into `uring` (whose unsent entries are
    /// `unsent`, held by the caller as for a submission) and enters it.
    pub(super) fn push_cancels(
        &self,
        uring: &IoUring,
        unsent: &mut Vec<usize>,
        lane: Option<&AtomicUsize>,
        names: &[usize],
    ) {
        for &name in names {
            let entry = cancel_entry(name);
            loop {
                // SAFETY: as in `submit_to`, this is the only submission queue view; the
                // entry names no memory, only the key of the entry to cancel.
                if unsafe { uring.submission_shared().push(&entry) }.is_ok() {
                    unsent.push(CANCEL as usize);
                    break;
                }
                if self.enter_to(uring, unsent, lane).is_err() {
                    return; // denied or failing: the operation runs to the end
                }
            }
        }
        if let Err(e) = self.enter_to(uring, unsent, lane) {
            log::debug!("caio: io_uring_enter for a cancellation failed ({e})");
        }
    }

    /// Takes the cancellations asked from other threads that the ring tagged `tag` must
    /// send (its owner calls this), and sends those now in the shared ring. What no
    /// ring holds any more is forgotten: it completed, or it is called off where it
    /// would start.
    pub(super) fn take_cancels(&self, tag: usize) -> Vec<usize> {
        let mut mine = Vec::new();
        if !self.cancels_pending.load(Ordering::Acquire) {
            return mine;
        }
        let mut shared = Vec::new();
        {
            let mut cancels = lock(&self.cancels);
            cancels.retain(|slot| {
                let name = slot.kernel();
                if name == 0 || slot.is_done() {
                    return false;
                }
                match name & TAG_MASK {
                    t if t == tag => mine.push(name),
                    TAG_SHARED => shared.push(Arc::clone(slot)),
                    _ => return true, // another owner's
                }
                false
            });
            self.cancels_pending
                .store(!cancels.is_empty(), Ordering::Release);
        }
        for slot in shared {
            self.cancel_shared(&slot);
        }
        mine
    }

    /// Leaves the cancellation of `slot` to the owner of the ring that holds it.
    pub(super) fn defer_cancel(&self, slot: &Arc<Slot>) {
        lock(&self.cancels).push(Arc::clone(slot));
        self.cancels_pending.store(true, Ordering::Release);
    }
}
