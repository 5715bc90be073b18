//! A ring of the driving thread's own (`SINGLE_ISSUER | DEFER_TASKRUN`): the thread in
//! `block_on` submits its operations there and waits for them in one `io_uring_enter`.

use super::*;

/// The `user_data` of the wake-up poll in an [`Own`] ring (an operation's is the address of
/// its box, never 1).
pub(super) const WAKE: u64 = 1;

/// How long a driving thread sleeps in its ring before it looks again, even with no
/// completion and no wake.
pub(super) const OWN_WAIT: types::Timespec = types::Timespec::new().nsec(100_000_000);

thread_local! {
    /// Set while the driving thread completes what its own ring handed back.
    pub(super) static COMPLETING: Cell<bool> = const { Cell::new(false) };
}

/// Clears `COMPLETING` when the completions are done, or one of them panics.
pub(super) struct Completing;

impl Drop for Completing {
    fn drop(&mut self) {
        COMPLETING.with(|c| c.set(false));
    }
}

/// The ring of a thread in `Context::block_on`: `SINGLE_ISSUER | DEFER_TASKRUN`, entered by
/// that thread alone.
///
/// On the shared ring the kernel runs each completion's last step as task work that
/// interrupts the submitting thread, wherever it is. Here it keeps that work until the
/// thread waits, wakes it once `want` completions are there, and runs them all in that
/// one `io_uring_enter`. fio's io_uring engine sets up its ring the same way. Only what
/// never waits for a kernel worker comes here: O_DIRECT I/O and `RWF_NOWAIT` attempts.
/// The rest stays on the shared ring, whose reaper goes on reaping while a thread drives.
///
/// Nothing completes while this is locked: a completion runs wakers and admits waiting
/// operations, which may queue or flush on this very thread. What the ring hands back
/// goes to `done`, completed after the lock is let go ([`Uring::own_round`]).
pub(super) struct Own {
    pub(super) ring: IoUring,
    pub(super) thread: ThreadId,
    /// Written by a wake of this thread while it sleeps in the ring; a poll on it in the
    /// ring ends that sleep.
    pub(super) kick: Arc<OwnedFd>,
    /// Whether that poll is in the ring.
    pub(super) armed: bool,
    /// Operations in this ring, not reaped yet (the poll not counted).
    pub(super) inflight: usize,
    /// Operations back from the kernel (or refused by it), with their results
    /// (`TO_POOL`: the kernel never took it; it goes to the pool).
    pub(super) done: Vec<(Box<UringOp>, i32)>,
    /// What is written in the submission ring and not taken by the kernel yet, in order:
    /// the ops' addresses, and `WAKE` for the wake-up poll.
    pub(super) unsent: Vec<u64>,
    /// The addresses of the ops the kernel has taken and not handed back (each op knows
    /// its place here).
    pub(super) taken: Vec<usize>,
    /// `io_uring_enter` was refused by a policy (see `is_denial`): never entered again.
    pub(super) denied: bool,
}

/// The result `Own` gives an operation whose entry the kernel never took.
pub(super) const TO_POOL: i32 = i32::MIN;

impl Own {
    pub(super) fn new(entries: u32, threads: usize) -> io::Result<Own> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(entries)?;
        let t = threads.min(u32::MAX as usize) as u32;
        let _ = ring.submitter().register_iowq_max_workers(&mut [t, t]);
        Ok(Own {
            ring,
            thread: thread::current().id(),
            kick: Arc::new(sys::eventfd()?),
            armed: false,
            inflight: 0,
            done: Vec::new(),
            unsent: Vec::new(),
            taken: Vec::new(),
            denied: false,
        })
    }

    /// Writes `entry` into the submission ring, handing the ring to the kernel when full.
    ///
    /// # Safety
    /// Every buffer and path `entry` names stays alive and unmoved until its completion is
    /// reaped.
    pub(super) unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: the caller's promise; `&mut self` makes this the only queue view.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.unsent.push(entry.get_user_data());
                return Ok(());
            }
            self.sent(self.ring.submit())?;
        }
    }

    /// Takes what the kernel took off `unsent`. Where a policy refused the call, every
    /// entry still in the ring goes back: each op to `done`, for the pool (the ring is
    /// never entered again, so the kernel never reads them).
    pub(super) fn sent(&mut self, r: io::Result<usize>) -> io::Result<usize> {
        match r {
            Ok(n) => {
                for data in self.unsent.drain(..n.min(self.unsent.len())) {
                    if data != WAKE && data != CANCEL {
                        // SAFETY: the op is leaked to the kernel and only this thread,
                        // which owns the ring, touches it until its completion is reaped.
                        unsafe { (*(data as *mut UringOp)).taken_at = self.taken.len() };
                        self.taken.push(data as usize);
                    }
                }
            }
            Err(ref e) if is_denial(e) => self.refuse(),
            Err(_) => {}
        }
        r
    }

    /// The ring is never entered again: every entry in it that the kernel never took
    /// goes back, each op to `done`, for the pool.
    pub(super) fn refuse(&mut self) {
        self.denied = true;
        for data in std::mem::take(&mut self.unsent) {
            if data == WAKE {
                self.armed = false;
                continue;
            }
            if data == CANCEL {
                continue;
            }
            // SAFETY: no `io_uring_enter` ran since these were written (the last one was
            // refused before it ran, or another ring's was and this one is entered no
            // more), so the kernel took none of them: each op is still ours, once.
            let op = unsafe { Box::from_raw(data as *mut UringOp) };
            self.inflight -= 1;
            self.done.push((op, TO_POOL));
        }
        // What the kernel took can no longer be reaped: with DEFER_TASKRUN its completions
        // are posted only inside an io_uring_enter. Its futures fail now; its memory is
        // leaked, since the kernel may still write into the buffers.
        for op in std::mem::take(&mut self.taken) {
            // SAFETY: the kernel's, never handed back, and never freed from here on: only
            // its completer is used, which the kernel does not touch.
            let req = unsafe { &mut (*(op as *mut UringOp)).req };
            let e = io::Error::other(
                "caio: io_uring_enter is denied now (seccomp or container policy), so this \
                 operation, already with the kernel, cannot be reaped",
            );
            req.done.complete_now(Completion::failed(e, Bufs::None));
            self.inflight -= 1;
        }
    }

    /// Writes `batch` into the submission ring (the next enter sends it). The boxes are
    /// what the kernel is given the addresses of.
    #[allow(clippy::vec_box)]
    pub(super) fn flush(&mut self, ring: &Ring, batch: &mut Vec<Box<UringOp>>) {
        for mut op in batch.drain(..) {
            if called_off(&mut op, TAG_OWN) {
                continue; // cancelled (completed there), or its future is gone
            }
            let entry = flagged(&mut op, &ring.opcodes);
            let p = Box::into_raw(op);
            // SAFETY: the entry points into the leaked op, whose request owns every buffer
            // and path it names until the op is reclaimed from its completion.
            match unsafe { self.push(&entry.user_data(p as u64)) } {
                Ok(()) => self.inflight += 1,
                Err(e) => {
                    // SAFETY: `p` was not pushed, so it is still ours, once.
                    let op = unsafe { Box::from_raw(p) };
                    let res = if self.denied {
                        TO_POOL
                    } else {
                        -e.raw_os_error().unwrap_or(libc::EIO)
                    };
                    self.done.push((op, res));
                }
            }
        }
    }

    /// Writes a cancellation of the operation named `name` (read by this thread, which
    /// alone submits here) into the ring; the next enter sends it.
    pub(super) fn cancel(&mut self, name: usize) {
        // SAFETY: the entry names no memory, only the key of the entry to cancel.
        if let Err(e) = unsafe { self.push(&cancel_entry(name)) } {
            log::debug!("caio: cannot write a cancellation into block_on's ring ({e})");
        }
    }

    /// Arms the wake-up poll, if it is not in the ring.
    pub(super) fn arm(&mut self) {
        if self.armed {
            return;
        }
        let poll = opcode::PollAdd::new(types::Fd(self.kick.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(WAKE);
        // SAFETY: the poll names only the eventfd, which `self.kick` keeps open for as long
        // as the ring.
        self.armed = unsafe { self.push(&poll) }.is_ok();
    }

    /// Sends what is in the submission ring, and with `want` above 0 sleeps until that
    /// many completions are there, a wake, or `OWN_WAIT`. With `want` 0 it runs the
    /// completions the kernel holds back, if any, and enters only when there is something
    /// to send or run. Then takes what completed into `done`.
    pub(super) fn enter(&mut self, want: usize) -> io::Result<()> {
        if self.denied {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let r = if want > 0 {
            self.arm();
            let args = types::SubmitArgs::new().timespec(&OWN_WAIT);
            self.ring.submitter().submit_with_args(want, &args)
        } else {
            let sq = self.ring.submission();
            if sq.is_empty() && !sq.taskrun() {
                Ok(0)
            } else {
                drop(sq);
                self.ring.submit()
            }
        };
        match self.sent(r) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        for cqe in self.ring.completion() {
            if cqe.user_data() == WAKE {
                self.armed = false;
                let _ = sys::eventfd_wait(self.kick.as_raw_fd()); // non-blocking: empties it
                continue;
            }
            if cqe.user_data() == CANCEL {
                continue; // a cancellation's own answer: its operation reports
            }
            // SAFETY: `user_data` is the address leaked at submission; the kernel reports
            // each entry once.
            let op = unsafe { Box::from_raw(cqe.user_data() as *mut UringOp) };
            reaped(&mut self.taken, &op);
            self.inflight -= 1;
            self.done.push((op, cqe.result()));
        }
        Ok(())
    }
}
