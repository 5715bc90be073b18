//! Ctrl-C and SIGTERM: the command never leaves a temporary file behind.
//!
//! Both signals are blocked in every thread (they are blocked before any thread starts,
//! and threads inherit the mask) and taken by one thread in `sigwait`. On a signal, the
//! files registered with [`remove_on_signal`] are removed; work run through
//! [`interruptible`] is abandoned (its futures dropped, so their own clean-up runs, such as
//! an atomic copy's temporary file) and the command waits for the context to go idle
//! before it exits; otherwise it exits at once. The exit status is 128 + the signal, as a
//! shell reports it.
//!
//! On Windows, Ctrl-C and Ctrl-Break come through a console control handler, which
//! Windows runs on a thread of its own: the same clean-up, with the status of SIGINT.

use std::{
    future::Future,
    path::PathBuf,
    sync::{
        atomic::{AtomicI32, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use futures::future::{AbortHandle, Abortable};

#[derive(Default)]
struct State {
    cleanup: Vec<PathBuf>,
    /// Backing files whose loop devices to detach (before the files in `cleanup` go).
    detach: Vec<PathBuf>,
    abort: Option<AbortHandle>,
}

static STATE: Mutex<State> = Mutex::new(State {
    cleanup: Vec::new(),
    detach: Vec::new(),
    abort: None,
});
static RECEIVED: AtomicI32 = AtomicI32::new(0);

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(unix)]
fn signal_set() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset only sets bits in it.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        set.assume_init()
    }
}

/// Takes SIGINT and SIGTERM over; call first in `main`, before any thread starts.
#[cfg(unix)]
pub fn install() {
    let set = signal_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return; // the default handling stays: no clean-up, but no harm
    }
    let spawned = std::thread::Builder::new()
        .name("caio-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and `sig` is writable.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            on_signal(sig);
        });
    if spawned.is_err() {
        // SAFETY: as above; unblocking restores the default handling.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

/// Takes Ctrl-C and Ctrl-Break over; call first in `main`.
#[cfg(windows)]
pub fn install() {
    /// SIGINT's number, for the exit status a shell reports.
    const SIGINT: i32 = 2;
    extern "system" fn handler(_event: u32) -> i32 {
        on_signal(SIGINT);
        // Handled: the main thread finishes the clean-up and exits.
        1
    }
    #[link(name = "kernel32")]
    extern "system" {
        fn SetConsoleCtrlHandler(handler: Option<extern "system" fn(u32) -> i32>, add: i32) -> i32;
    }
    // SAFETY: registers a plain function that lives for the whole program.
    unsafe { SetConsoleCtrlHandler(Some(handler), 1) };
}

fn on_signal(sig: i32) {
    let mut st = state();
    clean_up(&mut st);
    RECEIVED.store(sig, Ordering::SeqCst);
    match st.abort.take() {
        // The main thread drops the work, lets its clean-up finish, and exits.
        Some(h) => h.abort(),
        None => std::process::exit(128 + sig),
    }
}

/// Detaches the registered loop devices, then removes the registered files.
fn clean_up(st: &mut State) {
    // A device being attached is waited for, so that it is found and detached.
    #[cfg(target_os = "linux")]
    let _attached = (!st.detach.is_empty()).then(|| {
        caio::tools::fastdev::ATTACHING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    });
    for image in st.detach.drain(..) {
        // `losetup -j FILE` lists the devices over it, "/dev/loopN: ..." a line.
        let Ok(out) = std::process::Command::new("losetup")
            .arg("-j")
            .arg(image)
            .output()
        else {
            continue;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((dev, _)) = line.split_once(':') {
                let _ = std::process::Command::new("losetup")
                    .arg("-d")
                    .arg(dev)
                    .status();
            }
        }
    }
    for p in st.cleanup.drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

/// stdout cannot be written: on a closed pipe, the temporary files go and the command
/// ends by SIGPIPE, as a Unix tool does; on any other error, with status 1.
pub fn stdout_failed(e: std::io::Error) -> ! {
    clean_up(&mut state());
    #[cfg(unix)]
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: restores the default action of SIGPIPE and raises it on this thread,
        // which ends the process the way a shell expects of `cmd | head`.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    eprintln!("caio: error: cannot write to stdout: {e}");
    std::process::exit(1)
}

/// Removes `path` if a signal arrives before the guard is dropped; dropping it removes the
/// file too.
pub struct RemoveOnSignal(PathBuf);

/// Detaches every loop device over the file `image` on a signal, until the guard goes
/// (which does not detach them: their owner does). Registered before the device exists,
/// so a signal while it is set up leaves nothing attached. (Loop devices: Linux.)
#[cfg(target_os = "linux")]
pub fn detach_on_signal(image: PathBuf) -> DetachOnSignal {
    state().detach.push(image.clone());
    DetachOnSignal(image)
}

/// See [`detach_on_signal`].
#[cfg(target_os = "linux")]
pub struct DetachOnSignal(PathBuf);

#[cfg(target_os = "linux")]
impl Drop for DetachOnSignal {
    fn drop(&mut self) {
        state().detach.retain(|p| p != &self.0);
    }
}

pub fn remove_on_signal(path: PathBuf) -> RemoveOnSignal {
    state().cleanup.push(path.clone());
    RemoveOnSignal(path)
}

impl Drop for RemoveOnSignal {
    fn drop(&mut self) {
        state().cleanup.retain(|p| p != &self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `fut` to completion, or until a signal: then `fut` is dropped, `idle` is polled
/// (for up to 10 s) until the work it started has finished, and the process exits.
pub fn interruptible<F: Future>(fut: F, idle: impl Fn() -> bool) -> F::Output {
    let (handle, reg) = AbortHandle::new_pair();
    state().abort = Some(handle);
    let r = futures::executor::block_on(Abortable::new(fut, reg));
    state().abort = None;
    match r {
        Ok(v) => v,
        Err(_) => {
            let started = Instant::now();
            while !idle() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::process::exit(128 + RECEIVED.load(Ordering::SeqCst));
        }
    }
}
