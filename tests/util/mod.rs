//! Helpers shared by the integration tests.
#![allow(dead_code)]

#[cfg(target_os = "linux")]
use std::os::unix::fs::OpenOptionsExt;
use std::{
    fs::{File, OpenOptions},
    path::PathBuf,
};

use caio::{Context, Implementation};

/// Every implementation this machine can run; prints why any other is skipped.
pub fn backends() -> Vec<Implementation> {
    Implementation::ALL
        .into_iter()
        .filter(|i| {
            let ok = i.is_available();
            if !ok {
                eprintln!("SKIP {i}: not available on this machine");
            }
            ok
        })
        .collect()
}

pub fn ctx(i: Implementation) -> Context {
    Context::builder()
        .implementation(i)
        .build()
        .unwrap_or_else(|e| panic!("{i}: {e}"))
}

pub fn ctx_with(i: Implementation, max_requests: usize) -> Context {
    Context::builder()
        .implementation(i)
        .max_requests(max_requests)
        .build()
        .unwrap_or_else(|e| panic!("{i}: {e}"))
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

/// Deterministic bytes: different for every offset and seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A file in a fresh temporary directory on the target's disk (not tmpfs, so O_DIRECT
/// works), removed on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub file: File,
}

impl Scratch {
    pub fn new() -> Scratch {
        Self::with(|o| o)
    }

    #[cfg(target_os = "linux")]
    pub fn direct() -> Scratch {
        Self::with(|o| o.custom_flags(libc::O_DIRECT))
    }

    pub fn with(f: impl FnOnce(&mut OpenOptions) -> &mut OpenOptions) -> Scratch {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let path = dir.path().join("data");
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true);
        let file = f(&mut o).open(&path).unwrap();
        Scratch { dir, path, file }
    }

    pub fn fd(&self) -> caio::RawFd {
        raw(&self.file)
    }

    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

/// Opens `path` for reading and writing (created if missing) on `ctx`.
pub fn open_rw(ctx: &Context, path: &std::path::Path, direct: bool) -> caio::File {
    block_on(
        caio::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .direct(direct)
            .context(ctx.clone())
            .open(path),
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Threads of this process now.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// The names of the process's threads (`/proc/self/task/*/comm`).
pub fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task").map_or(Vec::new(), |d| {
        d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim_end().to_string())
            .collect()
    })
}

/// Waits until the process has no more than `before` threads: every worker and reaper of
/// dropped contexts exits on its own.
pub fn wait_for_threads(before: usize, limit: std::time::Duration, what: &str) {
    let start = std::time::Instant::now();
    while threads() > before {
        assert!(
            start.elapsed() < limit,
            "{what}: {} threads left of {before}",
            threads()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The OS error codes the tests expect, by their Unix names. On Windows, the code std's
/// own calls give in the same case (a write on a read-only handle is `ERROR_ACCESS_DENIED`
/// there, EBADF on Unix).
#[cfg(unix)]
#[allow(unused_imports)]
pub mod code {
    pub use libc::EBADF;
    /// A read or write the file was not opened for.
    pub const WRONG_ACCESS: i32 = libc::EBADF;
}
#[cfg(windows)]
pub mod code {
    /// `ERROR_INVALID_HANDLE`.
    pub const EBADF: i32 = 6;
    /// `ERROR_ACCESS_DENIED`.
    pub const WRONG_ACCESS: i32 = 5;
}

/// The raw file a `Context` takes: the descriptor on Unix, the handle on Windows.
pub fn raw(f: &File) -> caio::RawFd {
    #[cfg(unix)]
    return std::os::unix::io::AsRawFd::as_raw_fd(f);
    #[cfg(windows)]
    return std::os::windows::io::AsRawHandle::as_raw_handle(f);
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    #[cfg(unix)]
    return unsafe { libc::geteuid() == 0 };
    #[cfg(windows)]
    return false;
}

pub fn dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A small ext4 filesystem on a loop device, unmounted on drop.
pub struct LoopFs {
    _dir: tempfile::TempDir,
    pub mnt: PathBuf,
}

impl LoopFs {
    pub fn new(mib: u64) -> Option<LoopFs> {
        if !is_root() {
            eprintln!("SKIP: a loop-mounted filesystem needs root");
            return None;
        }
        let d = dir();
        let img = d.path().join("fs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let mnt = d.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let ok =
            |c: &mut std::process::Command| c.output().map(|o| o.status.success()).unwrap_or(false);
        if !ok(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img))
        {
            eprintln!("SKIP: mkfs.ext4 is not available");
            return None;
        }
        if !ok(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt))
        {
            eprintln!("SKIP: cannot loop-mount here");
            return None;
        }
        Some(LoopFs { _dir: d, mnt })
    }
}

impl Drop for LoopFs {
    /// Always unmounts, on failure too: descriptors that dropped `File`s hand to the
    /// backend to close may still be open for a moment, so it retries for up to 5 s, and
    /// detaches the mount (`umount -l`) as the last resort.
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = std::process::Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(&self.mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let start = std::time::Instant::now();
        while !umount(false) {
            if start.elapsed() > std::time::Duration::from_secs(5) {
                eprintln!("{} still busy after 5 s: detaching it", self.mnt.display());
                umount(true);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Installs a seccomp filter for every thread of this process from now on (TSYNC). For
/// child processes of tests only.
#[cfg(target_os = "linux")]
pub fn install_seccomp(filter: &mut [libc::sock_filter]) {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl/seccomp calls; `prog` points at a live filter for the call.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let r = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        );
        assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

/// BPF instructions for seccomp filters.
#[cfg(target_os = "linux")]
pub mod bpf {
    pub const LD_W_ABS: u16 = 0x20;
    pub const JMP_JEQ_K: u16 = 0x15;
    pub const JMP_JSET_K: u16 = 0x45;
    pub const RET_K: u16 = 0x06;

    pub fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }
}

/// Makes the given system calls fail with EPERM, for every thread of this process from
/// now on. For child processes of tests only.
#[cfg(target_os = "linux")]
pub fn deny_syscalls(nrs: &[libc::c_long]) {
    deny_syscalls_with(nrs, libc::EPERM)
}

/// Makes the given system calls fail with `errno`, for every thread of this process from
/// now on. For child processes of tests only.
#[cfg(target_os = "linux")]
pub fn deny_syscalls_with(nrs: &[libc::c_long], errno: i32) {
    use bpf::*;
    // Load the syscall number; for each denied one, "equal: jump to the EPERM return".
    let mut filter = vec![op(LD_W_ABS, 0, 0, 0)];
    for (i, &nr) in nrs.iter().enumerate() {
        let to_deny = (nrs.len() - i) as u8; // skips the remaining checks and the ALLOW
        filter.push(op(JMP_JEQ_K, to_deny, 0, nr as u32));
    }
    filter.push(op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
    filter.push(op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | errno as u32));
    install_seccomp(&mut filter);
}

/// Names in a directory, sorted.
pub fn names(d: &std::path::Path) -> Vec<String> {
    let mut n: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

/// Makes a FIFO at `p`.
pub fn mkfifo(p: &std::path::Path) {
    let made = std::process::Command::new("mkfifo").arg(p).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", p.display());
}

/// Makes a character device node at `p` with /dev/null's numbers (root only).
pub fn mknod_null(p: &std::path::Path) {
    let made = std::process::Command::new("mknod")
        .arg(p)
        .args(["c", "1", "3"])
        .status();
    assert!(made.is_ok_and(|s| s.success()), "mknod {}", p.display());
}

/// What the built-in order picks when kernel AIO (linux) is unavailable: the first other
/// available implementation.
pub fn first_without_linux() -> Implementation {
    Implementation::ALL
        .into_iter()
        .find(|&i| i != Implementation::Linux && i.is_available())
        .expect("blocking is always available")
}

/// A filesystem a test mounts (root only), unmounted on drop, on failure too.
pub struct Mount {
    pub path: PathBuf,
    mounted: bool,
}

impl Mount {
    /// Mounts `fstype` (with `-o options`, if any) on a new directory `at`; `None`, with the
    /// reason printed, where that cannot be done here.
    pub fn new(fstype: &str, options: Option<&str>, at: PathBuf) -> Option<Mount> {
        if !is_root() {
            eprintln!("SKIP: mounting {fstype} needs root");
            return None;
        }
        std::fs::create_dir(&at).unwrap();
        let mut c = std::process::Command::new("mount");
        c.args(["-t", fstype]);
        if let Some(o) = options {
            c.args(["-o", o]);
        }
        if !c
            .arg("caio-test")
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success())
        {
            eprintln!("SKIP: cannot mount {fstype} here");
            return None;
        }
        Some(Mount {
            path: at,
            mounted: true,
        })
    }

    /// Unmounts now; whether it went.
    pub fn unmount(&mut self) -> bool {
        self.mounted = !std::process::Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        !self.mounted
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            self.unmount();
        }
    }
}

/// Fraction of the file's pages in the page cache (mincore).
#[cfg(unix)]
pub fn resident_fraction(path: &std::path::Path) -> f64 {
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: maps the whole file read-only; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `addr` maps `len` bytes; `vec` has one byte per page.
    let r = unsafe { libc::mincore(addr, len, vec.as_mut_ptr().cast()) };
    // SAFETY: unmapping exactly what was mapped.
    unsafe { libc::munmap(addr, len) };
    assert_eq!(r, 0);
    vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / pages as f64
}

/// Polls a future once with a waker that does nothing: its output if it finished.
pub fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let w = futures::task::noop_waker();
    match std::pin::Pin::new(f).poll(&mut std::task::Context::from_waker(&w)) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

/// The value printed as ` key=value` in a child test's output.
pub fn child_field<T: std::str::FromStr>(stdout: &str, key: &str) -> T {
    stdout
        .split(&format!(" {key}="))
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in the child's output:\n{stdout}"))
}

/// The command that runs `test` of this test binary alone, in a child process (the child
/// test returns at once unless its environment variable is set), under `prefix` if any
/// (`["strace", "-f", ...]`, `["valgrind", ...]`). Add the environment, then run it with
/// [`output_within`].
pub fn test_command(test: &str, prefix: &[&str]) -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = std::process::Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => std::process::Command::new(exe),
    };
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    cmd
}

/// Runs `cmd` with its output captured, killing it after `limit`: a hang fails the test
/// instead of stalling the suite.
pub fn output_within(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut c = cmd.spawn().unwrap();
    let start = std::time::Instant::now();
    while c.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            panic!(
                "{cmd:?} hung for {limit:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    c.wait_with_output().unwrap()
}

/// Runs `test` of this test binary alone in a child process with `env` set, killing it
/// after `limit`.
pub fn run_test_child(
    test: &str,
    env: &[(&str, &str)],
    limit: std::time::Duration,
) -> std::process::Output {
    let mut cmd = test_command(test, &[]);
    cmd.envs(env.iter().copied());
    output_within(cmd, limit)
}

/// Forks; the child runs `f` and leaves with its exit code (`_exit`, so none of the
/// parent's exit handlers run there). `Some(code)`, or `None` when the child did not exit
/// within `limit` (it is then killed) or died of a signal.
#[cfg(unix)]
pub fn in_forked_child(limit: std::time::Duration, f: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: the child runs only `f` (caio and std code) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leaves the child at once.
        unsafe { libc::_exit(code) };
    }
    let start = std::time::Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if start.elapsed() > limit {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Runs `test` of this test binary alone in a child process under `strace -f`, tracing
/// the system calls `calls` (strace's `-e trace=` list) into `out`, with `env` set; kills
/// it after `limit`, asserts that it succeeded, and returns its standard output.
pub fn under_strace(
    test: &str,
    out: &std::path::Path,
    calls: &str,
    env: &[(&str, &std::ffi::OsStr)],
    limit: std::time::Duration,
) -> String {
    let trace = format!("trace={calls}");
    let mut cmd = test_command(
        test,
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            out.to_str().unwrap(),
            "-e",
            &trace,
        ],
    );
    cmd.envs(env.iter().copied());
    let done = output_within(cmd, limit);
    let stdout = String::from_utf8_lossy(&done.stdout).to_string();
    assert!(
        done.status.success(),
        "{test}: the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&done.stderr)
    );
    stdout
}

/// A tracing instance of this process's own (`/sys/kernel/tracing/instances/...`) with
/// one event enabled: its own buffer, so no setting of the system's tracing changes; it
/// is removed when dropped, on a failed test too.
#[cfg(target_os = "linux")]
pub struct TraceInstance {
    dir: PathBuf,
    event: String,
}

#[cfg(target_os = "linux")]
impl TraceInstance {
    /// With `event` ("group/name") enabled; `None`, having said why, where tracing is not
    /// available (not root, no tracefs, no such event).
    pub fn new(event: &str) -> Option<TraceInstance> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let base = std::path::Path::new("/sys/kernel/tracing/instances");
        if !is_root() || !base.is_dir() {
            eprintln!("SKIP: the kernel's tracing needs root and tracefs at /sys/kernel/tracing");
            return None;
        }
        let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("caio-test-{}-{k}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("SKIP: cannot make a tracing instance: {e}");
            return None;
        }
        let t = TraceInstance {
            dir,
            event: event.to_string(),
        };
        if let Err(e) = std::fs::write(t.enable_path(), "1") {
            eprintln!("SKIP: cannot enable the {event} tracepoint: {e}");
            return None;
        }
        Some(t)
    }

    fn enable_path(&self) -> PathBuf {
        self.dir.join("events").join(&self.event).join("enable")
    }

    /// Empties its buffer.
    pub fn clear(&self) {
        std::fs::write(self.dir.join("trace"), "").unwrap();
    }

    /// What its buffer holds.
    pub fn read(&self) -> String {
        std::fs::read_to_string(self.dir.join("trace")).unwrap()
    }
}

#[cfg(target_os = "linux")]
impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = std::fs::write(self.enable_path(), "0");
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!(
                "cannot remove the tracing instance {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// Whether `strace` runs here; if not, says the test is skipped.
pub fn has_strace() -> bool {
    let ok = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: strace is not installed (.ci/run installs it)");
    }
    ok
}

/// The calls in the output of `strace -f -o`, as (thread id, call with its arguments and
/// result), in order; a call strace split in two ("<unfinished ...>", then "<... name
/// resumed>" on the same thread) is joined back, and placed where it ended.
pub fn strace_calls(text: &str) -> Vec<(u32, String)> {
    let mut open: std::collections::HashMap<u32, String> = Default::default();
    let mut calls = Vec::new();
    for line in text.lines() {
        let Some((tid, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(tid) = tid.parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            open.insert(tid, head.to_string());
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            calls.push((
                tid,
                format!("{}{tail}", open.remove(&tid).unwrap_or_default()),
            ));
        } else {
            calls.push((tid, rest.to_string()));
        }
    }
    calls
}

/// A tokio runtime as the tests use them: multi-thread with two workers, or
/// current-thread; I/O and timers enabled.
pub fn runtime(multi: bool) -> tokio::runtime::Runtime {
    if multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .unwrap()
}

/// Every path under `root`, with a file's contents.
pub fn tree(root: &std::path::Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                stack.push(p);
                out.push((rel, None));
            } else {
                out.push((rel, Some(std::fs::read(&p).unwrap())));
            }
        }
    }
    out.sort();
    out
}
