//! A third driver of completions, beside the reaper thread and `Context::block_on`: the
//! executor's own reactor (tokio's, with the `tokio` feature).
//!
//! A kernel backend that has an eventfd its completions signal (kernel AIO's
//! `IOCB_FLAG_RESFD`) is a [`Source`]. When an operation goes to the kernel from a thread
//! inside a tokio runtime, [`ensure`] makes sure a task of that runtime waits on that
//! eventfd through the runtime's reactor (`AsyncFd`). When the kernel signals it, the
//! worker thread the reactor wakes reaps the completions from the ring in user space and
//! wakes their tasks: no caio thread stands between the kernel and the task.
//!
//! Meanwhile the backend's reaper thread stands down, as it does for `block_on`: it looks
//! every tick, and reaps only when no reaping task showed a sign of life since its last
//! look (a runtime whose workers are all busy in user code, or shut down), so every
//! operation still completes, from any thread and any runtime.
//!
//! One task per runtime: the eventfd itself is registered, and a runtime's reactor takes
//! one descriptor once, so a second worker of the same runtime is refused (EEXIST) and
//! knows a task is there. (tokio gives a runtime no identity a library could compare.)
//! Nothing here makes a system call on the polling thread but the registration, once per
//! thread and context.

use crate::sys::fd::{AsRawFd, RawFd};
use std::{
    cell::{Cell, RefCell},
    io,
    panic::{self, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Once, Weak,
    },
    thread,
};

use tokio::io::unix::AsyncFd;

/// What a task of the executor reaps.
pub(crate) trait Source: Send + Sync + 'static {
    /// The eventfd the kernel signals at each completion.
    fn eventfd(&self) -> RawFd;
    /// The tasks that reap it.
    fn tasks(&self) -> &Tasks;
    /// Reaps what is ready, without waiting, and wakes its tasks. Called only while the
    /// source is open (see [`Tasks::reap`]).
    fn reap_ready(&self);
}

/// A source's account of the tasks that reap it: how many wait on it (while any does, the
/// reaper stands down), and the reaps running now, which the source's close waits out.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    waiting: AtomicUsize,
    reaping: AtomicUsize,
    closed: AtomicBool,
}

impl Tasks {
    /// Tasks waiting on the source now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn started(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
    }

    fn stopped(&self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Runs `reap` unless the source is closed; `false` when it is.
    fn reap(&self, reap: impl FnOnce()) -> bool {
        self.reaping.fetch_add(1, Ordering::SeqCst);
        let open = !self.closed.load(Ordering::SeqCst);
        if open {
            reap();
        }
        self.reaping.fetch_sub(1, Ordering::SeqCst);
        open
    }

    /// No task reaps from here on; returns once none is reaping. (Both sides use SeqCst:
    /// either a reap sees `closed`, or this sees its count.)
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        while self.reaping.load(Ordering::SeqCst) > 0 {
            thread::yield_now();
        }
    }
}

/// One source a task on this thread reaps, or that cannot be reaped here.
struct Entry {
    /// The source: compared by address, which no other source can take while this weak
    /// handle keeps its allocation.
    source: Weak<dyn std::any::Any + Send + Sync>,
    /// Alive as long as the task; `None` when this thread needs none (its runtime has a
    /// task on another worker, or no reactor).
    task: Option<Weak<()>>,
    /// Whether a task of this thread's runtime reaps the source (here or on another
    /// worker).
    reaped: bool,
}

thread_local! {
    static TASKS: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

/// Makes sure that, if the calling thread is inside a tokio runtime, a task of that
/// runtime reaps `source`; whether one does. Cheap when one already does: a look at a
/// short thread-local list.
pub(crate) fn ensure<S: Source>(source: &Arc<S>) -> bool {
    let known = TASKS.with(|t| {
        let live = |e: &Entry| e.task.as_ref().is_none_or(|w| w.strong_count() > 0);
        let mut t = t.borrow_mut();
        let mine = |e: &Entry| std::ptr::addr_eq(e.source.as_ptr(), Arc::as_ptr(source));
        if let Some(e) = t.iter().find(|e| mine(e) && live(e)) {
            return Some(e.reaped);
        }
        // A miss (once per thread, source and runtime): forget the sources that are gone,
        // and the tasks of runtimes that are.
        t.retain(|e| e.source.strong_count() > 0 && live(e));
        None
    });
    if let Some(reaped) = known {
        return reaped;
    }
    // An unwinding thread (a `File` dropped in a panic) may not touch the panic hook,
    // which a first registration does: the reaper serves it.
    if thread::panicking() {
        return false;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let (task, reaped) = match start(&handle, Arc::clone(source)) {
        Ok(task) => (Some(task), true),
        // Another worker of this runtime registered it first, and its task reaps.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => (None, true),
        Err(_) => (None, false),
    };
    let weak = Arc::downgrade(source);
    TASKS.with(|t| {
        t.borrow_mut().push(Entry {
            source: weak,
            task,
            reaped,
        })
    });
    reaped
}

/// Registers the source's eventfd with the runtime's reactor and spawns the task that
/// reaps on each signal. Fails when the runtime has no reactor (built without I/O), or
/// when its reactor has the eventfd already (another worker of the same runtime made the
/// task): either way this thread needs no task of its own.
fn start<S: Source>(handle: &tokio::runtime::Handle, source: Arc<S>) -> io::Result<Weak<()>> {
    let _enter = handle.enter();
    // tokio panics, rather than failing, when the runtime was built without I/O, and
    // offers no way to ask first: the panic is caught, unprinted, and the reaper stays.
    let afd = quietly(|| {
        // Deprecated in newer tokio only because a `T` could change its descriptor
        // underneath; `Fd` never does, and keeps the source (and so the descriptor) alive
        // until the registration is gone. The replacement does not exist in older tokio.
        #[allow(deprecated)]
        AsyncFd::with_interest(Fd(Arc::clone(&source)), tokio::io::Interest::READABLE)
    })
    .map_err(|_| io::Error::other("the tokio runtime has no I/O driver (enable_io)"))??;
    let alive = Arc::new(());
    let weak = Arc::downgrade(&alive);
    source.tasks().started();
    let guard = Stopped(Arc::clone(&source));
    handle.spawn(async move {
        let _alive = alive;
        let _guard = guard;
        loop {
            let Ok(mut ready) = afd.readable().await else {
                break;
            };
            // Cleared before the reap, so a completion during it is a new signal. The
            // counter is never read: each signal wakes an edge-triggered epoll anyway,
            // and a read would be one more system call per wake.
            ready.clear_ready();
            let source = &afd.get_ref().0;
            if !source.tasks().reap(|| source.reap_ready()) {
                break;
            }
        }
    });
    Ok(weak)
}

thread_local! {
    /// Set while [`quietly`] runs on this thread.
    static MUTED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, catching a panic without the panic hook printing it. The first call puts a
/// hook in front of the process's, which passes every other panic on to it unchanged.
fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !MUTED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    MUTED.with(|m| m.set(true));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    MUTED.with(|m| m.set(false));
    r
}

/// Counts the task out however it ends: the loop returns, or the runtime drops it.
struct Stopped<S: Source>(Arc<S>);

impl<S: Source> Drop for Stopped<S> {
    fn drop(&mut self) {
        self.0.tasks().stopped();
    }
}

/// What the reactor registers: the source's own eventfd, kept open by the source it holds.
struct Fd<S: Source>(Arc<S>);

impl<S: Source> AsRawFd for Fd<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.eventfd()
    }
}
