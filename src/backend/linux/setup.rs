//! Kernel AIO contexts: made so that our own pending destroys do not make `io_setup` fail,
//! checked against policies that deny the calls, destroyed off the caller's thread, and
//! kept idle for reuse a while (destroying one waits for an RCU grace period).

use super::*;
use crate::backend::setup_error;

/// Kernel contexts this process is destroying right now, and a condvar signalled as each
/// finishes. Per process: a child neither waits for its parent's destroys nor on a lock a
/// parent's thread held at the fork.
pub(super) fn destroys() -> &'static (Mutex<usize>, Condvar) {
    static DESTROYS: PerProcess<(Mutex<usize>, Condvar)> = PerProcess::new();
    DESTROYS.get(|| (Mutex::new(0), Condvar::new()))
}

pub(super) fn destroy_started() {
    *lock(&destroys().0) += 1;
}

pub(super) fn destroy_now(ctx: AioContext) {
    if let Err(e) = sys::io_destroy(ctx) {
        log::error!("caio: io_destroy failed: {e}");
    }
    let mut n = lock(&destroys().0);
    *n -= 1;
    destroys().1.notify_all();
}

/// Destroys `ctx` on a short-lived thread (never on the caller's).
pub(super) fn destroy_in_background(ctx: AioContext) {
    destroy_started();
    let spawned = thread::Builder::new()
        .name("caio-aio-destroy".into())
        .spawn(move || destroy_now(ctx));
    if let Err(e) = spawned {
        log::warn!(
            "caio: cannot spawn a thread to destroy an AIO context ({e}); destroying inline"
        );
        destroy_now(ctx);
    }
}

/// `io_setup`, retried once our own pending destroys have given their share of
/// `fs.aio-max-nr` back (EAGAIN while they are under way is not exhaustion).
pub(super) fn setup(nr_events: u32) -> io::Result<AioContext> {
    match sys::io_setup(nr_events) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            let (m, cv) = destroys();
            let pending = lock(m);
            if *pending == 0 {
                return Err(e);
            }
            drop(cv.wait_timeout_while(pending, Duration::from_secs(5), |n| *n > 0));
            sys::io_setup(nr_events)
        }
        r => r,
    }
}

pub(super) fn read_sysctl(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/fs/{name}"))
        .map_or_else(|_| "?".into(), |s| s.trim().to_string())
}

/// Why `io_setup` of `nr_events` failed, in words a user can act on.
pub(super) fn describe_setup_error(e: &io::Error, nr_events: u32) -> String {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => {
            let (nr, max) = (read_sysctl("aio-nr"), read_sysctl("aio-max-nr"));
            let room = match (nr.parse::<u64>(), max.parse::<u64>()) {
                (Ok(n), Ok(m)) => m.saturating_sub(n),
                _ => u64::MAX,
            };
            if u64::from(nr_events) > room {
                format!(
                    "io_setup: {e}: a context for {} requests needs {nr_events} AIO events, \
                     and fs.aio-max-nr {max} less aio-nr {nr} leaves {room}: lower \
                     max_requests or raise fs.aio-max-nr",
                    nr_events - 1
                )
            } else {
                format!("io_setup: {e}: fs.aio-max-nr is spent (aio-nr {nr} of aio-max-nr {max})")
            }
        }
        _ => setup_error("io_setup", e, "AIO"),
    }
}

/// Whether this process may submit and reap on `ctx`: a seccomp policy can deny
/// `io_submit` or `io_getevents` while allowing `io_setup`. Both calls are empty ones.
pub(super) fn check_allowed(ctx: AioContext) -> Result<(), String> {
    // SAFETY: no iocb is submitted.
    if let Err(e) = unsafe { sys::io_submit(ctx, &mut []) } {
        return Err(format!(
            "io_submit: {e}: denied by seccomp or container policy"
        ));
    }
    if let Err(e) = sys::io_getevents(ctx, 0, &mut [], Some(Duration::ZERO)) {
        return Err(format!(
            "io_getevents: {e}: denied by seccomp or container policy"
        ));
    }
    Ok(())
}

/// A kernel context of `nr_events`, from the idle ones or new, that this process may use.
pub(super) fn context(nr_events: u32) -> Result<AioContext, String> {
    let ctx = match take_idle(nr_events) {
        Some(ctx) => ctx,
        None => setup(nr_events).map_err(|e| describe_setup_error(&e, nr_events))?,
    };
    if let Err(reason) = check_allowed(ctx) {
        destroy_in_background(ctx);
        return Err(reason);
    }
    Ok(ctx)
}

/// Whether this process can create a kernel AIO context of the size the default context
/// needs now (`DEFAULT_MAX_REQUESTS + 1` events), and use it. The one made is kept idle,
/// for the default context to take.
pub(crate) fn probe() -> Result<(), String> {
    let nr_events = DEFAULT_MAX_REQUESTS as u32 + 1;
    let ctx = context(nr_events)?;
    put_idle(nr_events, ctx);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Idle kernel contexts, kept for reuse: creating one is cheap, but destroying one waits
// for an RCU grace period (~30 ms), so contexts made and dropped in quick succession would
// otherwise pile up in fs.aio-max-nr and in threads waiting to destroy them.

/// Idle contexts kept at most; each holds its events of fs.aio-max-nr.
pub(super) const IDLE_MAX: usize = 4;
/// How long an idle context is kept: long enough for churn to reuse it, short enough
/// that a process that stopped using kernel AIO gives its share of fs.aio-max-nr back.
pub(super) const IDLE_FOR: Duration = Duration::from_secs(3);

pub(super) struct Idle {
    pub(super) born: Born,
    pub(super) nr_events: u32,
    pub(super) ctx: AioContext,
    pub(super) since: Instant,
}

/// Idle contexts, and whether a reclaimer thread is watching them.
pub(super) static IDLE: Mutex<(Vec<Idle>, bool)> = Mutex::new((Vec::new(), false));
/// Signalled when a context becomes idle or is destroyed.
pub(super) static IDLE_CV: Condvar = Condvar::new();
/// Contexts whose backend is dropped and whose reaper has not handed them back yet.
pub(super) static CLOSING: AtomicUsize = AtomicUsize::new(0);

/// A context's reaper is done with it (it is idle or being destroyed).
pub(super) fn closed() {
    let _idle = lock(&IDLE);
    CLOSING.fetch_sub(1, Ordering::AcqRel);
    IDLE_CV.notify_all();
}

/// An idle context of exactly `nr_events` made in this process (not a parent's). When a
/// context is being closed, waits a little for it: a program that drops a context and
/// makes another reuses the kernel context instead of piling them up.
pub(super) fn take_idle(nr_events: u32) -> Option<AioContext> {
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut idle = lock(&IDLE);
    loop {
        // A parent's contexts are not ours to use or destroy.
        idle.0.retain(|i| !i.born.is_inherited());
        if let Some(k) = idle.0.iter().position(|i| i.nr_events == nr_events) {
            return Some(idle.0.swap_remove(k).ctx);
        }
        let now = Instant::now();
        if CLOSING.load(Ordering::Acquire) == 0 || now >= deadline {
            return None;
        }
        idle = IDLE_CV
            .wait_timeout(idle, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Keeps `ctx` for reuse for a while, or destroys it when enough are kept. Called with
/// nothing in flight on it.
pub(super) fn put_idle(nr_events: u32, ctx: AioContext) {
    let mut idle = lock(&IDLE);
    if idle.0.len() >= IDLE_MAX {
        drop(idle);
        return destroy_in_background(ctx);
    }
    idle.0.push(Idle {
        born: Born::here(),
        nr_events,
        ctx,
        since: Instant::now(),
    });
    if !idle.1 {
        let spawned = thread::Builder::new()
            .name("caio-aio-idle".into())
            .spawn(reclaim_idle);
        idle.1 = spawned.is_ok();
    }
}

/// Destroys idle contexts once they have waited `IDLE_FOR`; exits when none is left.
pub(super) fn reclaim_idle() {
    loop {
        thread::sleep(IDLE_FOR / 3);
        let expired: Vec<AioContext> = {
            let mut idle = lock(&IDLE);
            let now = Instant::now();
            // Allocates only when one expires: this runs beside programs that count theirs.
            let mut old = Vec::new();
            idle.0.retain(|i| {
                let expired = now - i.since >= IDLE_FOR;
                if expired {
                    old.push(i.ctx);
                }
                !expired
            });
            if idle.0.is_empty() {
                idle.1 = false;
            }
            old
        };
        for ctx in expired {
            destroy_started();
            destroy_now(ctx);
        }
        if !lock(&IDLE).1 {
            return;
        }
    }
}
