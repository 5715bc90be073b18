//! The io_uring backend, on the `io-uring` crate: one ring per context, one completion
//! thread, no thread per operation.
//!
//! # How an operation runs
//!
//! - **Submission is batched.** `submit` only queues the operation; its next poll calls
//!   `flush`, which writes every queued entry into the submission ring and enters the
//!   kernel once for all of them.
//! - **Completions are reaped without a system call when they are there.** After each
//!   flush, the submitting thread takes whatever the completion ring already holds (a
//!   page-cache hit completes inside the submission). The reaper thread
//!   (`caio-uring-reaper`) sleeps on an eventfd the ring signals as completions arrive, and
//!   takes them from the completion ring in user space: it never enters the ring.
//! - **Reads and writes, buffered or O_DIRECT, and fsync/fdatasync** of regular files and
//!   block devices go to the ring: the kernel runs what would block on its own workers, so
//!   no thread pool of ours is involved. Those workers are bounded by the context's
//!   `threads` setting (`IORING_REGISTER_IOWQ_MAX_WORKERS`).
//! - **Metadata operations** run natively where the kernel has the opcode (close, rename,
//!   unlink, rmdir, mkdir, fallocate, ftruncate, checked with the ring's probe); opening
//!   (which reads the file's type and alignment right after) and the rest run on a pool
//!   started on first use.
//! - Pipes, sockets and directories go to the pool, whose positional calls report the same
//!   errno as every other backend (the ring would read a pipe ignoring the offset).
//!
//! # Under `Context::block_on`
//!
//! The driving thread gets a ring of its own ([`Own`]), made with `SINGLE_ISSUER |
//! DEFER_TASKRUN` and kept for its next `block_on` on the context. Its O_DIRECT I/O and
//! `RWF_NOWAIT` attempts go there; it waits in `io_uring_enter` for a quarter of what is in
//! flight, and the kernel runs those completions in that one call. At depth the reads
//! their tasks queue then go back as on linux: a first part as soon as it is built (see
//! [`Early`]), and what the poll leaves is written to the ring and sent by the wait's own
//! `io_uring_enter`, one system call to send and wait (`Drive::flush_for_wait`; if a task
//! wakes the thread again before it waits, a flush sends them first), which saves one
//! system call per batch. Everything else stays on the shared ring and its reaper. `block_on` completes
//! what is in its own ring before it returns.
//!
//! # Ownership and shutdown
//!
//! A request is leaked into the ring (`Box::into_raw`; its address is the entry's
//! `user_data`) and reclaimed when its completion is reaped, so the buffer outlives any
//! dropped future. When the last handle goes, `Drop` raises a flag and signals the
//! eventfd; the reaper keeps reaping until nothing is in flight, then drops the ring and
//! exits.
//!
//! The kernel cancels the queued work of a thread that exits, and a flush submits what
//! any thread queued: an entry that comes back ECANCELED never ran, and goes to the ring
//! again from the thread that reaps it (this backend cancels nothing itself).

use std::{
    cell::Cell,
    fmt, io,
    os::fd::{AsRawFd, IntoRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, ThreadId},
};

use io_uring::{opcode, squeue, types, IoUring, Probe};

use crate::sync::lock;
use crate::{
    backend::{
        completes_for_others,
        drive::{self, Drive, Driver, Early, Signal, DEEP_BATCH},
        hold_wakes,
        thread::FallbackPool,
        BoxPool, Bufs, Class, Completion, Facts, FileIo, Kind, Meta, OpQueue, Request, Submit,
    },
    fork::Born,
    sys, Implementation,
};

/// The most one read or write asks of the kernel at once; the rest is a continuation.
const MAX_IO: usize = 1 << 30;
/// How many times an entry the kernel cancelled before it ran is submitted again, before
/// its ECANCELED is reported: each time, the thread that submitted it exited.
const CANCELLED_MAX: u8 = 16;

/// Why `io_uring_setup` fails, in words a user can act on.
fn describe_setup_error(e: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    match e.raw_os_error() {
        Some(libc::ENOSYS) => format!("io_uring_setup: {e}: the kernel is built without io_uring"),
        Some(libc::EPERM) if disabled == "2" => format!(
            "io_uring_setup: {e}: kernel.io_uring_disabled is 2 (io_uring is off for every process)"
        ),
        Some(libc::EPERM) if disabled == "1" => format!(
            "io_uring_setup: {e}: kernel.io_uring_disabled is 1 and this process is not in \
             kernel.io_uring_group"
        ),
        Some(libc::EPERM) => {
            format!("io_uring_setup: {e}: denied by seccomp or container policy")
        }
        Some(libc::ENOMEM) => format!(
            "io_uring_setup: {e}: no memory for the rings (RLIMIT_MEMLOCK or the cgroup's limit)"
        ),
        _ => format!("io_uring_setup: {e}"),
    }
}

/// Whether this process can make a ring now, or why not.
pub(crate) fn probe() -> Result<(), String> {
    IoUring::new(4)
        .map(drop)
        .map_err(|e| describe_setup_error(&e))
}

/// A request on its way through the ring.
struct UringOp {
    req: Request,
    /// Bytes asked of the kernel in this attempt.
    len: usize,
    mode: Mode,
    /// Times the kernel cancelled it before it ran (see [`Ring::complete`]).
    cancelled: u8,
    /// Where it stands in its `Own` ring's `taken` list, while the kernel has it there.
    taken_at: usize,
}

impl UringOp {
    /// What is left of `req`, at most `MAX_IO` bytes of it.
    fn new(req: Request, mode: Mode) -> UringOp {
        let len = match &req.kind {
            Kind::Read(buf) => (buf.capacity() - buf.len()).min(MAX_IO),
            Kind::Write(buf) => (buf.len() - req.written).min(MAX_IO),
            // The kernel caps a vectored transfer itself; a short one is resubmitted.
            Kind::ReadV(v) => v.bufs.iter().map(|b| b.capacity() - b.len()).sum(),
            Kind::WriteV(v) => v.bufs.iter().map(|b| b.len()).sum::<usize>() - req.written,
            _ => 0,
        };
        UringOp {
            req,
            len,
            mode,
            taken_at: 0,
            cancelled: 0,
        }
    }
}

/// How the kernel is asked to run an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As it sees fit: O_DIRECT I/O (queued to the device) and syncs (its workers).
    Plain,
    /// `RWF_NOWAIT`: a buffered read the page cache can serve completes inside
    /// `io_uring_enter`; one that would block comes back EAGAIN and goes to `Worker`.
    NoWait,
    /// On the kernel's workers, never inline (`IOSQE_ASYNC`): buffered writes, page-cache
    /// misses and metadata, which some filesystems (FUSE, NFS) perform inline and slowly.
    Worker,
}

/// Where a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// The ring, which is asked to run it this way.
    Ring(Mode),
    /// The fallback pool: I/O on what has no offset (pipes, sockets, directories), and
    /// metadata operations this kernel has no opcode for.
    Pool,
}

/// How a request runs, from what it is, what its descriptor is, and (for a metadata
/// operation) whether this kernel has an opcode for it.
fn route(class: Class, facts: Facts, native_meta: bool) -> Route {
    match (class, facts.seekable, facts.direct) {
        // The kernel runs syncs on its workers.
        (Class::Sync, _, _) => Route::Ring(Mode::Plain),
        // Metadata calls may wait on a filesystem: the kernel's workers run them.
        (Class::Meta, _, _) if native_meta => Route::Ring(Mode::Worker),
        (Class::Meta, _, _) => Route::Pool,
        (_, false, _) => Route::Pool,
        // O_DIRECT: queued to the device without blocking the submitter.
        (_, true, true) => Route::Ring(Mode::Plain),
        // A page-cache hit completes inside the enter; a miss goes to the workers.
        (Class::Read, true, false) => Route::Ring(Mode::NoWait),
        (Class::Write, true, false) => Route::Ring(Mode::Worker),
    }
}

/// Which metadata opcodes this kernel has.
#[derive(Debug, Clone, Copy)]
struct Opcodes {
    close: bool,
    rename: bool,
    unlink: bool,
    mkdir: bool,
    fallocate: bool,
    ftruncate: bool,
    fadvise: bool,
    sync_range: bool,
}

/// What the backend and its reaper share.
struct Ring {
    ring: IoUring,
    /// Signalled by the kernel as completions arrive, by `Drop` at shutdown, and by a wake
    /// of a thread asleep on it in `Context::block_on` (which holds a handle too).
    efd: Arc<OwnedFd>,
    /// Held while writing the submission ring: the addresses of the operations written
    /// there that the kernel has not taken yet.
    sq: Mutex<Vec<usize>>,
    /// A policy denies `io_uring_enter` now (see `Ring::enter`): nothing more goes to a
    /// ring of this backend.
    denied: AtomicBool,
    /// Held while reading the completion ring.
    cq: Mutex<()>,
    /// Requests in the ring and not reaped yet.
    inflight: AtomicUsize,
    shutdown: AtomicBool,
    opcodes: Opcodes,
    /// For what the ring does not run.
    pool: FallbackPool,
    /// For the kernel's workers of each thread's own ring.
    threads: usize,
    /// Boxes of finished operations, for the next ones.
    ops: BoxPool<UringOp>,
    /// A thread in `Context::block_on` that waits for completions itself.
    driver: Driver,
    /// The ring of the thread that drives (or last drove) this context, kept for its next
    /// `block_on`.
    own: Mutex<Option<Own>>,
    /// What the driving thread queued for `own`, and continuations of what `own` completed.
    own_queue: OpQueue<UringOp>,
    /// Set while the driving thread uses `own`: the reaper then goes on reaping this ring.
    owned: AtomicBool,
    /// Set when this kernel cannot make such a ring: drivers then sleep on this one.
    own_failed: AtomicBool,
    entries: u32,
}

impl Ring {
    /// Runs `req` (or what is left of it) on the fallback pool.
    fn to_pool(&self, req: Request) {
        self.pool.run(req);
    }

    /// Boxes an operation (the kernel is given its address, which must not move).
    fn op(&self, req: Request, mode: Mode) -> Box<UringOp> {
        self.ops.boxed(UringOp::new(req, mode))
    }

    /// Writes `batch` into the submission ring and enters the kernel once (more only when
    /// the ring fills); what the kernel refuses is completed here with its error.
    fn submit(&self, batch: impl IntoIterator<Item = Box<UringOp>>) {
        let mut sq = lock(&self.sq);
        for mut op in batch {
            if self.denied.load(Ordering::Acquire) {
                self.to_pool(self.ops.unbox(op).req);
                continue;
            }
            let entry = flagged(&mut op, &self.opcodes);
            let p = Box::into_raw(op);
            let entry = entry.user_data(p as u64);
            self.inflight.fetch_add(1, Ordering::AcqRel);
            loop {
                // SAFETY: `sq` makes this the only submission queue view; the entry
                // points into the leaked op, whose request owns every buffer and path it
                // names, alive and unmoved until the op is reclaimed from its completion.
                let pushed = unsafe { self.ring.submission_shared().push(&entry) };
                if pushed.is_ok() {
                    sq.push(p as usize);
                    break;
                }
                // Full: hand what is there to the kernel and try again.
                if let Err(e) = self.enter(&mut sq) {
                    // SAFETY: `p` was not pushed, so it is still ours, once.
                    let op = self.ops.unbox(unsafe { Box::from_raw(p) });
                    self.inflight.fetch_sub(1, Ordering::AcqRel);
                    if self.denied.load(Ordering::Acquire) {
                        self.to_pool(op.req);
                    } else {
                        op.req.finish(Err(e));
                    }
                    break;
                }
            }
        }
        if let Err(e) = self.enter(&mut sq) {
            if !self.denied.load(Ordering::Acquire) {
                // The entries stay in the ring; the next submission enters again.
                log::warn!("caio: io_uring_enter failed ({e}); the next submission retries");
            }
        }
    }

    /// Hands what is in the submission ring to the kernel; `unsent` lists the operations
    /// there, in order. Where a policy denies `io_uring_enter` (a seccomp filter or
    /// container installed after start-up), the operations the kernel never took go to
    /// the pool, and so does every later one: the ring is never entered again, so their
    /// entries, left in it, are never read.
    fn enter(&self, unsent: &mut Vec<usize>) -> io::Result<()> {
        match self.ring.submit() {
            Ok(n) => {
                unsent.drain(..n.min(unsent.len()));
                Ok(())
            }
            Err(e) if is_denial(&e) => {
                self.deny(&e);
                for p in unsent.drain(..) {
                    // SAFETY: the call was refused before it ran, so the kernel took none
                    // of these entries: each op is still ours, once.
                    let op = self.ops.unbox(unsafe { Box::from_raw(p as *mut UringOp) });
                    self.inflight.fetch_sub(1, Ordering::AcqRel);
                    self.to_pool(op.req);
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// From now on every operation of this backend goes to the pool; said once.
    fn deny(&self, e: &io::Error) {
        if !self.denied.swap(true, Ordering::AcqRel) {
            log::warn!(
                "caio: io_uring_enter failed ({e}): denied by seccomp or container policy; \
                 operations go to threads from now on"
            );
        }
    }

    /// Completes what the completion ring holds now. `true` when it took any.
    fn reap(&self) -> bool {
        let mut any = false;
        // Every operation the batch admits is queued before its futures run.
        let _held = hold_wakes();
        // SAFETY: `cq` is held by the callers, so this is the only completion queue view.
        let cq = unsafe { self.ring.completion_shared() };
        for cqe in cq {
            any = true;
            // SAFETY: `user_data` is the address leaked at submission; the kernel
            // reports each entry once, and the completion ring is read by one thread.
            let op = unsafe { Box::from_raw(cqe.user_data() as *mut UringOp) };
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            if let Some(next) = self.complete(op, cqe.result()) {
                self.submit([next]);
            }
        }
        any
    }

    /// Whether the calling thread drives this ring through a ring of its own, and what it
    /// submits now is its own (not an operation of another thread that a completion
    /// admits: that one must not wait for this thread's next enter).
    fn owns(&self, backend: &dyn Drive) -> bool {
        self.owned.load(Ordering::Acquire)
            && !self.denied.load(Ordering::Acquire)
            && drive::drives(backend)
            && !COMPLETING.with(Cell::get)
    }

    /// Handles one completion (`res` is bytes or a negative errno). What it returns goes to
    /// a ring again: the rest of a short transfer, or a read the page cache did not have.
    /// A finished operation completes where it is, and its box is kept for the next one.
    #[must_use]
    fn complete(&self, mut op: Box<UringOp>, res: i32) -> Option<Box<UringOp>> {
        let (len, mode, cancelled) = (op.len, op.mode, op.cancelled);
        if res == -libc::ECANCELED && cancelled < CANCELLED_MAX {
            // Nothing here cancels an entry: the kernel did, because the thread that
            // submitted it exited before its worker took it up (io_uring ties that queue
            // to the submitting thread, and a flush submits what any thread queued). It
            // never ran: it goes to the ring again, from this thread.
            let mut again = self.op(self.ops.unbox(op).req, mode);
            again.cancelled = cancelled + 1;
            return Some(again);
        }
        let req = &mut op.req;
        if let Kind::Meta(m @ Meta::Close(_)) = &mut req.kind {
            // The kernel closed the number, whatever the result: the OwnedFd must not
            // close it again (it may be another file's by now).
            if let Meta::Close(fd) = std::mem::replace(m, Meta::Taken) {
                let _ = fd.into_raw_fd();
            }
        }
        if res == -libc::EBADF {
            if let Kind::Read(_) | Kind::ReadV(_) | Kind::Write(_) | Kind::WriteV(_) = &req.kind {
                // Reported as the other backends' positional calls report it.
                let write = matches!(req.kind, Kind::Write(_) | Kind::WriteV(_));
                let errno = sys::positional_errno(req.fd, write);
                req.finish_in_place(Err(io::Error::from_raw_os_error(errno)));
                self.ops.recycle(op);
                return None;
            }
        }
        if res < 0 {
            if mode == Mode::NoWait && (res == -libc::EAGAIN || res == -libc::EOPNOTSUPP) {
                // Not in the page cache (or no NOWAIT here): the kernel's workers read it.
                return Some(self.op(self.ops.unbox(op).req, Mode::Worker));
            }
            req.finish_in_place(Err(io::Error::from_raw_os_error(-res)));
            self.ops.recycle(op);
            return None;
        }
        let n = (res as usize).min(len);
        let total = match &mut req.kind {
            Kind::Read(buf) => {
                // SAFETY: the kernel wrote `n <= len` bytes at the spare pointer the entry
                // was built with, and nothing has touched the buffer since.
                unsafe { buf.advance(n) };
                buf.len()
            }
            Kind::ReadV(v) => {
                // SAFETY: the kernel wrote `n <= len` bytes through the iovecs the entry
                // was built with, in order, and nothing has touched the buffers since.
                unsafe { v.advance(n) };
                v.filled()
            }
            Kind::Write(_) | Kind::WriteV(_) => {
                req.written += n;
                req.written
            }
            _ => {
                req.finish_in_place(Ok(0));
                self.ops.recycle(op);
                return None;
            }
        };
        if n > 0 && (n < len || req.has_more()) {
            // Short but not at an error: part in the page cache, past the per-call limit,
            // or the end of the file. The rest goes to the ring again (at the end of the
            // file that read returns 0 and finishes it).
            let mode = if mode == Mode::NoWait {
                Mode::Worker
            } else {
                mode
            };
            return Some(self.op(self.ops.unbox(op).req, mode));
        }
        req.finish_in_place(Ok(total));
        self.ops.recycle(op);
        None
    }
}

/// Whether `io_uring_enter` failed because a policy forbids it, which will not change:
/// a seccomp filter answers with the errno it was given, most often EPERM or ENOSYS.
fn is_denial(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::ENOSYS | libc::EACCES)
    )
}

/// The `user_data` of the wake-up poll in an [`Own`] ring (an operation's is the address of
/// its box, never 1).
const WAKE: u64 = 1;

/// How long a driving thread sleeps in its ring before it looks again, even with no
/// completion and no wake.
const OWN_WAIT: types::Timespec = types::Timespec::new().nsec(100_000_000);

thread_local! {
    /// Set while the driving thread completes what its own ring handed back.
    static COMPLETING: Cell<bool> = const { Cell::new(false) };
}

/// Clears `COMPLETING` when the completions are done, or one of them panics.
struct Completing;

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
struct Own {
    ring: IoUring,
    thread: ThreadId,
    /// Written by a wake of this thread while it sleeps in the ring; a poll on it in the
    /// ring ends that sleep.
    kick: Arc<OwnedFd>,
    /// Whether that poll is in the ring.
    armed: bool,
    /// Operations in this ring, not reaped yet (the poll not counted).
    inflight: usize,
    /// Operations back from the kernel (or refused by it), with their results
    /// (`TO_POOL`: the kernel never took it; it goes to the pool).
    done: Vec<(Box<UringOp>, i32)>,
    /// What is written in the submission ring and not taken by the kernel yet, in order:
    /// the ops' addresses, and `WAKE` for the wake-up poll.
    unsent: Vec<u64>,
    /// The addresses of the ops the kernel has taken and not handed back (each op knows
    /// its place here).
    taken: Vec<usize>,
    /// `io_uring_enter` was refused by a policy (see `is_denial`): never entered again.
    denied: bool,
}

/// The result `Own` gives an operation whose entry the kernel never took.
const TO_POOL: i32 = i32::MIN;

impl Own {
    fn new(entries: u32, threads: usize) -> io::Result<Own> {
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
    unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
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
    fn sent(&mut self, r: io::Result<usize>) -> io::Result<usize> {
        match r {
            Ok(n) => {
                for data in self.unsent.drain(..n.min(self.unsent.len())) {
                    if data != WAKE {
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
    fn refuse(&mut self) {
        self.denied = true;
        for data in std::mem::take(&mut self.unsent) {
            if data == WAKE {
                self.armed = false;
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
    fn flush(&mut self, ring: &Ring, batch: &mut Vec<Box<UringOp>>) {
        for mut op in batch.drain(..) {
            if op.req.is_abandoned() {
                continue; // its future is gone before it reached the kernel
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

    /// Arms the wake-up poll, if it is not in the ring.
    fn arm(&mut self) {
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
    fn enter(&mut self, want: usize) -> io::Result<()> {
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

/// The submission entry for `op`.
fn entry(op: &mut UringOp, ops: &Opcodes) -> squeue::Entry {
    let (len, nowait, req) = (op.len, op.mode == Mode::NoWait, &mut op.req);
    let fd = types::Fd(req.fd);
    match &mut req.kind {
        Kind::Read(buf) => {
            let (ptr, _) = buf.spare_ptr();
            opcode::Read::new(fd, ptr, len as u32)
                .offset(req.offset + buf.len() as u64)
                .rw_flags(if nowait { libc::RWF_NOWAIT } else { 0 })
                .build()
        }
        Kind::Write(buf) => {
            let rest = &buf[req.written..];
            opcode::Write::new(fd, rest.as_ptr(), len as u32)
                .offset(req.offset + req.written as u64)
                .build()
        }
        Kind::ReadV(v) => {
            let done = v.filled();
            let (iov, _) = v.read_iov();
            opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(req.offset + done as u64)
                .rw_flags(if nowait { libc::RWF_NOWAIT } else { 0 })
                .build()
        }
        Kind::WriteV(v) => {
            let (iov, _) = v.write_iov(req.written);
            opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(req.offset + req.written as u64)
                .build()
        }
        Kind::Fsync => opcode::Fsync::new(fd).build(),
        Kind::Fdsync => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        Kind::Meta(m) => meta_entry(m, req.fd, ops).expect("routed to the ring"),
    }
}

/// `entry` with the op's flags.
fn flagged(op: &mut UringOp, ops: &Opcodes) -> squeue::Entry {
    let mode = op.mode;
    let e = entry(op, ops);
    match mode {
        Mode::Worker => e.flags(squeue::Flags::ASYNC),
        Mode::Plain | Mode::NoWait => e,
    }
}

/// The entry of a metadata operation the ring runs natively, if it does.
fn meta_entry(m: &Meta, fd: i32, ops: &Opcodes) -> Option<squeue::Entry> {
    let cwd = types::Fd(libc::AT_FDCWD);
    Some(match m {
        // The ring closes the number; `complete` then forgets the OwnedFd.
        Meta::Close(owned) if ops.close => opcode::Close::new(types::Fd(owned.as_raw_fd())).build(),
        Meta::Rename { from, to } if ops.rename => {
            opcode::RenameAt::new(cwd, from.as_ptr(), cwd, to.as_ptr()).build()
        }
        Meta::Unlink { path, dir } if ops.unlink => opcode::UnlinkAt::new(cwd, path.as_ptr())
            .flags(if *dir { libc::AT_REMOVEDIR } else { 0 })
            .build(),
        Meta::Mkdir { path, mode } if ops.mkdir => {
            opcode::MkDirAt::new(cwd, path.as_ptr()).mode(*mode).build()
        }
        Meta::Allocate { offset, len } if ops.fallocate => {
            opcode::Fallocate::new(types::Fd(fd), *len)
                .offset(*offset)
                .build()
        }
        Meta::Truncate(len) if ops.ftruncate => opcode::Ftruncate::new(types::Fd(fd), *len).build(),
        Meta::Advise {
            offset,
            len,
            advice,
        } if ops.fadvise && *len <= i64::MAX as u64 => {
            opcode::Fadvise::new(types::Fd(fd), *len as libc::off_t, *advice)
                .offset(*offset)
                .build()
        }
        // The ring's length is 32 bits; a longer range goes to the pool.
        Meta::SyncRange { offset, len, flags } if ops.sync_range && *len <= u64::from(u32::MAX) => {
            opcode::SyncFileRange::new(types::Fd(fd), *len as u32)
                .offset(*offset)
                .flags(*flags)
                .build()
        }
        _ => return None,
    })
}

/// Takes a reaped op off its ring's `taken` list.
fn reaped(taken: &mut Vec<usize>, op: &UringOp) {
    let at = op.taken_at;
    taken.swap_remove(at);
    if let Some(&moved) = taken.get(at) {
        // SAFETY: a leaked op of the same ring, touched only by the thread that owns it.
        unsafe { (*(moved as *mut UringOp)).taken_at = at };
    }
}

fn reaper(ring: Arc<Ring>) {
    ring.driver.register_reaper();
    completes_for_others();
    loop {
        if ring.driver.is_active() && !ring.owned.load(Ordering::Acquire) {
            // A thread in `block_on` waits for completions on this ring itself: only look.
            ring.driver.tick(|| {
                let _cq = lock(&ring.cq);
                ring.reap();
            });
            continue;
        }
        if let Err(e) = sys::eventfd_wait(ring.efd.as_raw_fd()) {
            // Only a broken eventfd gets here: leaking what is in flight is safe,
            // spinning is not.
            log::error!("caio: the io_uring reaper cannot wait ({e}); it stops");
            return;
        }
        {
            let _cq = lock(&ring.cq);
            ring.reap();
        }
        if ring.driver.is_active() && !ring.owned.load(Ordering::Acquire) {
            // A thread started driving while this one waited. The count it took may hold
            // a wake for that thread, asleep on the same eventfd, beside completions (one
            // count can stand for both): pass it on. From now on this thread only looks.
            let _ = sys::eventfd_signal(ring.efd.as_raw_fd());
        }
        if ring.shutdown.load(Ordering::Acquire) && ring.inflight.load(Ordering::Acquire) == 0 {
            return;
        }
    }
}

/// The io_uring backend.
pub(crate) struct Uring {
    ring: Arc<Ring>,
    born: Born,
    /// What the next flush writes to the ring.
    queue: OpQueue<UringOp>,
    /// When the driving thread sends a large batch to its ring in parts.
    early: Early,
}

// SAFETY: queued `UringOp`s hold pointers (inside their requests' buffers) that their own
// requests own; moving them between threads moves that ownership whole.
unsafe impl Send for Uring {}
// SAFETY: the queue is behind a mutex; the ring's queues are behind theirs.
unsafe impl Sync for Uring {}

impl fmt::Debug for Uring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Uring")
            .field("inflight", &self.ring.inflight.load(Ordering::Relaxed))
            .field("opcodes", &self.ring.opcodes)
            .finish()
    }
}

impl Uring {
    /// A ring with room for `max_requests` operations, and its reaper.
    pub(crate) fn new(max_requests: usize, threads: usize) -> io::Result<Uring> {
        let entries = (max_requests + 1).next_power_of_two().min(32_768) as u32;
        let ring = IoUring::new(entries)
            .map_err(|e| io::Error::new(e.kind(), describe_setup_error(&e)))?;
        let mut probe = Probe::new();
        let has = if ring.submitter().register_probe(&mut probe).is_ok() {
            |p: &Probe, code| p.is_supported(code)
        } else {
            |_: &Probe, _| false
        };
        let opcodes = Opcodes {
            close: has(&probe, opcode::Close::CODE),
            rename: has(&probe, opcode::RenameAt::CODE),
            unlink: has(&probe, opcode::UnlinkAt::CODE),
            mkdir: has(&probe, opcode::MkDirAt::CODE),
            fallocate: has(&probe, opcode::Fallocate::CODE),
            ftruncate: has(&probe, opcode::Ftruncate::CODE),
            fadvise: has(&probe, opcode::Fadvise::CODE),
            sync_range: has(&probe, opcode::SyncFileRange::CODE),
        };
        let efd = sys::eventfd_blocking()?;
        ring.submitter().register_eventfd(efd.as_raw_fd())?;
        let t = threads.min(u32::MAX as usize) as u32;
        // Bounds the kernel's own workers; an old kernel without it runs them unbounded.
        let _ = ring.submitter().register_iowq_max_workers(&mut [t, t]);
        let ring = Arc::new(Ring {
            ring,
            efd: Arc::new(efd),
            sq: Mutex::new(Vec::new()),
            denied: AtomicBool::new(false),
            cq: Mutex::new(()),
            inflight: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            opcodes,
            pool: FallbackPool::new(threads, max_requests),
            threads,
            ops: BoxPool::new(max_requests),
            driver: Driver::new(),
            own: Mutex::new(None),
            own_queue: OpQueue::new(),
            owned: AtomicBool::new(false),
            own_failed: AtomicBool::new(false),
            entries,
        });
        let r = Arc::clone(&ring);
        thread::Builder::new()
            .name("caio-uring-reaper".into())
            .spawn(move || reaper(r))?;
        Ok(Uring {
            ring,
            born: Born::here(),
            queue: OpQueue::new(),
            early: Early::default(),
        })
    }

    fn queue(&self, req: Request, mode: Mode) -> Submit {
        let op = self.ring.op(req, mode);
        if mode != Mode::Worker && self.ring.owns(self) {
            let queued = self.ring.own_queue.push(op);
            if self.early.queued(queued) {
                // A large batch goes to the kernel in parts, as on linux (see `Early`).
                self.flush();
            }
        } else {
            self.queue.push(op);
        }
        Submit::Queued
    }

    /// One round on the driving thread's own ring, if the calling thread is that thread:
    /// what it queued goes into the ring, `f` runs, and then (with the ring let go) what
    /// came back completes. `None` when there is no such ring.
    fn own_round<R>(&self, f: impl FnOnce(&mut Own) -> R) -> Option<R> {
        let ring = &self.ring;
        // In a child forked while this thread drove, the ring is the parent's.
        if !ring.owns(self) || self.born.is_inherited() {
            return None;
        }
        self.round(f)
    }

    /// After a refusal of `io_uring_enter`, wherever it was seen: what the calling thread
    /// wrote to its own ring, or queued for it, goes to the pool.
    fn refuse_own(&self) {
        if self.born.is_inherited() || !drive::drives(self) {
            return;
        }
        let me = thread::current().id();
        if lock(&self.ring.own)
            .as_ref()
            .is_some_and(|o| o.thread == me)
        {
            self.round(Own::refuse);
        }
    }

    /// `own_round`'s round, for a caller that knows the ring is the calling thread's.
    fn round<R>(&self, f: impl FnOnce(&mut Own) -> R) -> Option<R> {
        let ring = &self.ring;
        let (r, mut done) = {
            let mut own = lock(&ring.own);
            let own = own.as_mut()?;
            let mut batch = ring.own_queue.take();
            own.flush(ring, &mut batch);
            let r = f(own);
            if own.denied {
                ring.deny(&io::Error::from_raw_os_error(libc::EPERM));
            }
            ring.own_queue.give_back(batch);
            if own.done.is_empty() {
                return Some(r);
            }
            (r, std::mem::take(&mut own.done))
        };
        COMPLETING.with(|c| c.set(true));
        let _completing = Completing;
        for (op, res) in done.drain(..) {
            if res == TO_POOL {
                ring.to_pool(ring.ops.unbox(op).req);
                continue;
            }
            if let Some(next) = ring.complete(op, res) {
                if next.mode == Mode::Worker {
                    ring.submit([next]);
                } else {
                    ring.own_queue.push(next); // sent at the next round
                }
            }
        }
        if let Some(own) = lock(&ring.own).as_mut() {
            if own.done.is_empty() {
                own.done = done; // its room, for the next round
            }
        }
        Some(r)
    }

    /// Sends what is queued: the driving thread's own requests to its own ring, the rest
    /// to the shared one. With `now` false (the end of a poll in `block_on`, whose wait
    /// comes next), at depth, the thread's own requests are only written to its ring: the
    /// wait's `io_uring_enter` sends them with the wait, one system call for both, as the
    /// bench's minimal io_uring loop does. `true` when it left some for that wait.
    fn send(&self, now: bool) -> bool {
        if self.born.is_inherited() {
            // In a child: the rings are the parent's, and whatever is queued is its too.
            return false;
        }
        let left = self.own_round(|own| {
            let deep = drive::batch(own.inflight) >= DEEP_BATCH;
            if !now && deep && !own.ring.submission().is_empty() {
                return Ok(true);
            }
            own.enter(0).map(|()| false)
        });
        let left = match left {
            Some(Ok(left)) => left,
            Some(Err(e)) => {
                // They stay in the ring: the thread's next wait sends them.
                log::warn!("caio: io_uring_enter failed ({e}); block_on's next wait retries");
                false
            }
            None => false,
        };
        if self.ring.denied.load(Ordering::Acquire) {
            self.refuse_own();
        }
        let mut batch = self.queue.take();
        // A request whose future is gone before it reached the kernel does not start.
        batch.retain(|op| !op.req.is_abandoned());
        if !batch.is_empty() {
            self.ring.submit(batch.drain(..));
            // What already completed (page-cache hits, mostly) is taken here, without a
            // system call and without a hop through the reaper.
            if let Ok(_cq) = self.ring.cq.try_lock() {
                self.ring.reap();
            }
        }
        self.queue.give_back(batch);
        left
    }

    /// Completes everything in the driving thread's own ring, if the calling thread is
    /// that thread.
    fn own_drain(&self) {
        while let Some(r) = self.own_round(|own| (own.inflight > 0).then(|| own.enter(1))) {
            match r {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    // Their buffers stay with the ring, leaked: safe, if not tidy.
                    log::error!("caio: cannot wait for the io_uring operations of block_on ({e})");
                    break;
                }
            }
        }
    }
}

impl FileIo for Uring {
    fn implementation(&self) -> Implementation {
        Implementation::Uring
    }

    fn submit(&self, req: Request) -> Submit {
        if req.reads_memory() {
            // tmpfs or ramfs: a memory copy, done here (RWF_NOWAIT answers EOPNOTSUPP there,
            // which would send every read to the kernel's workers).
            req.run_here();
            return Submit::Started;
        }
        let facts = match Facts::of(&req) {
            Ok(f) => f,
            Err(e) => {
                req.finish(Err(e));
                return Submit::Started;
            }
        };
        let native = matches!(&req.kind, Kind::Meta(m) if meta_entry(m, req.fd, &self.ring.opcodes).is_some());
        match route(req.kind.class(), facts, native) {
            Route::Ring(mode) => self.queue(req, mode),
            Route::Pool => {
                self.ring.to_pool(req);
                Submit::Started
            }
        }
    }

    fn flush(&self) {
        self.send(true);
    }

    fn drive(&self) -> Option<&(dyn Drive + 'static)> {
        Some(self)
    }
}

impl Drive for Uring {
    fn flush_for_wait(&self) -> bool {
        self.send(false)
    }

    fn begin(&self, signal: &Arc<Signal>) -> bool {
        let ring = &self.ring;
        // In a child after fork() the kernel context is the parent's: park instead.
        if self.born.is_inherited() || ring.denied.load(Ordering::Acquire) || !ring.driver.begin() {
            return false;
        }
        if !ring.own_failed.load(Ordering::Acquire) {
            let me = thread::current().id();
            let mut own = lock(&ring.own);
            if own.as_ref().is_none_or(|o| o.thread != me) {
                // Another thread's ring is empty (its drive drained it): replace it.
                match Own::new(ring.entries, ring.threads) {
                    Ok(o) => *own = Some(o),
                    Err(e) => {
                        log::info!(
                            "caio: block_on waits on the shared io_uring: this kernel cannot \
                             make a SINGLE_ISSUER | DEFER_TASKRUN ring ({e})"
                        );
                        ring.own_failed.store(true, Ordering::Release);
                    }
                }
            }
            if let Some(o) = own.as_ref().filter(|o| o.thread == me) {
                signal.set_kick(Arc::clone(&o.kick));
                ring.owned.store(true, Ordering::Release);
                return true;
            }
        }
        signal.set_kick(Arc::clone(&ring.efd));
        true
    }

    fn busy(&self) -> Option<MutexGuard<'_, ()>> {
        // With a ring of its own, the driving thread's completions are not on this one.
        (!self.ring.owns(self)).then(|| self.ring.driver.reaping())
    }

    fn ready(&self) -> usize {
        if self.ring.owns(self) {
            if let Some(own) = lock(&self.ring.own).as_mut() {
                // Completions inside the submission, and (a flag the kernel sets) whether
                // it holds any back. How many it holds back is not told: below depth,
                // count them as a batch, so that the spin ends at the first; at depth, as
                // one, so that the kernel's wait gathers the batch.
                let held_back = own.ring.submission().taskrun();
                let batch = drive::batch(own.inflight);
                let held_back = match (held_back, batch >= DEEP_BATCH) {
                    (false, _) => 0,
                    (true, false) => batch,
                    (true, true) => 1,
                };
                return own.ring.completion().len() + held_back;
            }
        }
        match self.ring.cq.try_lock() {
            // SAFETY: `cq` is held, so this is the only completion queue view.
            Ok(_cq) => unsafe { self.ring.ring.completion_shared() }.len(),
            Err(_) => 0,
        }
    }

    fn batch(&self) -> usize {
        // A look: with a ring of its own, what is in flight there.
        let own = self.ring.owns(self).then(|| lock(&self.ring.own));
        let inflight = match own.as_deref() {
            Some(Some(own)) => own.inflight,
            _ => self.ring.inflight.load(Ordering::Acquire),
        };
        drive::batch(inflight)
    }

    fn sleep(&self, signal: &Signal, ready: bool) -> bool {
        let ring = &self.ring;
        if ring.denied.load(Ordering::Acquire) {
            // No kernel wait is allowed: the thread parks, woken as the pool completes.
            self.refuse_own();
            return false;
        }
        let slept = self.own_round(|own| {
            let want = if !ready && signal.sleep_begin() {
                drive::batch(own.inflight)
            } else {
                0
            };
            let (inflight, before) = (own.inflight, own.done.len());
            let r = own.enter(want);
            if want > 0 {
                signal.sleep_end();
            }
            // The reads of this reap's tasks go back in parts (see `Early`).
            self.early.reaped(own.done.len() - before, inflight);
            r
        });
        match slept {
            Some(Ok(())) => return true,
            Some(Err(e)) => {
                log::error!("caio: block_on cannot wait in its io_uring ({e}); it parks instead");
                return false;
            }
            None => {}
        }
        if !ready {
            if !signal.sleep_begin() {
                return true;
            }
            // The kernel signals the eventfd for every completion it posts, and a wake
            // from another thread writes to it: either ends the sleep. (A count left by
            // completions reaped without a sleep ends it at once: one look more.)
            let r = sys::eventfd_wait(ring.efd.as_raw_fd());
            signal.sleep_end();
            if r.is_err() {
                return false; // the reaper finds the same error, and says so
            }
        }
        let _cq = lock(&ring.cq);
        ring.reap();
        true
    }

    fn pause(&self) {
        // The own ring is entered by this thread alone, and a nested block_on may await
        // what is in it: complete it, and send what comes meanwhile to the shared ring.
        self.flush();
        self.own_drain();
        self.ring.owned.store(false, Ordering::Release);
    }

    fn resume(&self) {
        let ring = &self.ring;
        let me = thread::current().id();
        if lock(&ring.own).as_ref().is_some_and(|o| o.thread == me) {
            ring.owned.store(true, Ordering::Release);
        }
    }

    fn end(&self) {
        let ring = &self.ring;
        // What this thread started in its ring completes before `block_on` returns: nobody
        // else may enter that ring.
        self.own_drain();
        ring.owned.store(false, Ordering::Release);
        ring.driver.end();
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        if self.born.is_inherited() {
            return; // the parent's ring: nothing here to shut down
        }
        self.flush();
        self.ring.shutdown.store(true, Ordering::Release);
        if let Err(e) = sys::eventfd_signal(self.ring.efd.as_raw_fd()) {
            log::warn!(
                "caio: cannot wake the io_uring reaper ({e}); it exits at its next completion"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_has_one_route() {
        use {Class::*, Mode::*, Route::*};
        // Whether the file is in memory changes no route: such reads never get here.
        let f = |seekable, direct| Facts {
            seekable,
            direct,
            memory: false,
        };
        let table = [
            // Syncs: the kernel's workers, whatever the descriptor.
            (Sync, f(true, true), false, Ring(Plain)),
            (Sync, f(true, false), false, Ring(Plain)),
            (Sync, f(false, false), false, Ring(Plain)),
            // Metadata: the kernel's workers where it has the opcode, else the pool.
            (Meta, f(true, false), true, Ring(Worker)),
            (Meta, f(false, false), true, Ring(Worker)),
            (Meta, f(true, false), false, Pool),
            (Meta, f(false, false), false, Pool),
            // Pipes, sockets, directories: never to the ring.
            (Read, f(false, false), false, Pool),
            (Write, f(false, false), false, Pool),
            // O_DIRECT: queued to the device as it is.
            (Read, f(true, true), false, Ring(Plain)),
            (Write, f(true, true), false, Ring(Plain)),
            // Buffered: reads try the page cache first, writes go to the workers.
            (Read, f(true, false), false, Ring(NoWait)),
            (Write, f(true, false), false, Ring(Worker)),
        ];
        for (class, facts, native, want) in table {
            assert_eq!(
                route(class, facts, native),
                want,
                "{class:?} {facts:?} {native}"
            );
        }
    }
}
