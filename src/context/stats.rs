//! What a context has done, counted as it runs: [`Stats`], from [`Context::stats`].
//!
//! Each count is one relaxed atomic add where the event happens; the two that every
//! operation makes (submitted, completed) sit on cache lines of their own, since different
//! threads make them.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};

/// What a [`Context`](crate::Context) has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Operations started (given a slot and handed to the backend).
    pub submitted: u64,
    /// Operations finished, with a result or an error.
    pub completed: u64,
    /// Started and not finished yet.
    pub in_flight: u64,
    /// Operations a kernel backend (`linux`, `uring`) gave to its thread pool: buffered
    /// writes, page-cache misses, what the kernel could not take without blocking.
    pub to_pool: u64,
    /// Attempts with `RWF_NOWAIT` (a kernel backend's own, to keep its submitting thread
    /// from blocking) that would have blocked, and were run again elsewhere.
    pub nowait_retries: u64,
    /// Per-operation controls the system or filesystem lacked, run as documented instead.
    pub fallbacks: Fallbacks,
    /// Cancellations asked for, by an [`AbortHandle`](crate::AbortHandle) or by dropping
    /// the future of an operation that had started and not finished.
    pub cancels_asked: u64,
    /// Cancellations that won: the operation ended without running to completion, and its
    /// future (if still there) got `ECANCELED`.
    pub cancels_won: u64,
}

/// Per-operation controls run by their fallback, by control.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fallbacks {
    /// `dsync()` as the write then `fdatasync` (no `RWF_DSYNC`).
    pub dsync: u64,
    /// `uncached()` as plain I/O then `posix_fadvise(DONTNEED)` (no `RWF_DONTCACHE`).
    pub uncached: u64,
    /// `nowait()` answered `WouldBlock` because the system could not tell (no
    /// `RWF_NOWAIT` there).
    pub nowait: u64,
    /// `priority()` not applied: the system has no per-operation I/O priority.
    pub priority: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fb = &self.fallbacks;
        write!(
            f,
            "submitted {}, completed {}, in flight {}, to the pool {}, RWF_NOWAIT retries {}, \
             fallbacks: dsync {}, uncached {}, nowait {}, priority {}, cancels asked {}, won {}",
            self.submitted,
            self.completed,
            self.in_flight,
            self.to_pool,
            self.nowait_retries,
            fb.dsync,
            fb.uncached,
            fb.nowait,
            fb.priority,
            self.cancels_asked,
            self.cancels_won
        )
    }
}

/// What is counted besides submissions and completions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    ToPool,
    NowaitRetry,
    FallbackDsync,
    FallbackUncached,
    FallbackNowait,
    FallbackPriority,
    CancelAsked,
    CancelWon,
}

#[repr(align(64))]
#[derive(Default)]
struct Line(AtomicU64);

/// A context's counters.
#[derive(Default)]
pub(crate) struct Counters {
    submitted: Line,
    completed: Line,
    rest: [AtomicU64; 8],
}

impl Counters {
    pub(crate) fn submitted(&self) {
        self.submitted.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back a submission counted for an operation that did not start.
    pub(crate) fn not_submitted(&self) {
        self.submitted.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn completed(&self) {
        self.completed.0.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(&self, what: Count) {
        self.rest[what as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |what: Count| self.rest[what as usize].load(Ordering::Relaxed);
        // Completed first: a completion counted after this read cannot make it exceed
        // the submissions read next.
        let completed = self.completed.0.load(Ordering::Relaxed);
        let submitted = self.submitted.0.load(Ordering::Relaxed);
        Stats {
            submitted,
            completed,
            in_flight: submitted.saturating_sub(completed),
            to_pool: get(Count::ToPool),
            nowait_retries: get(Count::NowaitRetry),
            fallbacks: Fallbacks {
                dsync: get(Count::FallbackDsync),
                uncached: get(Count::FallbackUncached),
                nowait: get(Count::FallbackNowait),
                priority: get(Count::FallbackPriority),
            },
            cancels_asked: get(Count::CancelAsked),
            cancels_won: get(Count::CancelWon),
        }
    }
}
