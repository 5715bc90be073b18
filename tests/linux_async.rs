//! Proof that the Linux backend is really asynchronous, read off `strace -f`:
//! `io_submit` carries the reads (batched), no `pread`-family call touches the file, the
//! number of threads does not grow with the number of operations, and on a cold page
//! cache the submitting thread never performs a blocking read itself.
#![cfg(target_os = "linux")]

mod util;

use std::{
    fs,
    future::Future,
    os::unix::io::AsRawFd,
    path::Path,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    task::{Poll, Wake, Waker},
};

use caio::{Context, Implementation};
use futures::{stream::FuturesUnordered, StreamExt};
use util::{block_on, pattern, resident_fraction, Scratch};

const CHILD: &str = "CAIO_ASYNC_TEST_CHILD";
const FILE_SIZE: usize = 8 << 20;

/// In the child: `mode` `direct:N` does N 4 KiB O_DIRECT reads at once; `cold:N` does N
/// 64 KiB buffered reads at once. Prints the data descriptor and the thread id.
#[test]
fn child_reads() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (mode, n) = spec.split_once(':').unwrap();
    let (path, n): (String, usize) = (
        std::env::var("CAIO_ASYNC_TEST_FILE").unwrap(),
        n.parse().unwrap(),
    );
    let direct = matches!(
        mode,
        "direct" | "direct32" | "drive32" | "drive1" | "vectored" | "tokio_mt" | "tokio_ct"
    );
    let mut o = fs::OpenOptions::new();
    o.read(true);
    if direct {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_DIRECT);
    }
    let file = o.open(&path).unwrap();
    // A number no other descriptor of the process (loader, harness) ever has, so the trace
    // can tell this file's syscalls apart.
    // SAFETY: dup2 onto an unused descriptor number.
    let fd = unsafe { libc::dup2(file.as_raw_fd(), 777) };
    assert_eq!(fd, 777);
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    println!("CHILD fd={fd} tid={tid}");
    let ctx = Context::builder()
        .implementation(Implementation::Linux)
        .max_requests(if mode.ends_with("32") { 32 } else { 64 })
        .build()
        .unwrap();
    let expected = pattern(FILE_SIZE, 11);
    let size = if direct { 4096 } else { 65536 };
    let slots = FILE_SIZE / size;
    // "coldfile" reads through the file layer, which knows the descriptor is buffered.
    let file = (mode == "coldfile").then(|| {
        let f = block_on(
            caio::OpenOptions::new()
                .read(true)
                .context(ctx.clone())
                .open(&path),
        )
        .unwrap();
        println!("CHILD filefd={}", f.as_raw_fd());
        f
    });
    if mode == "drive1" {
        // One read at a time under `block_on`.
        ctx.block_on(async {
            for k in 0..n {
                let off = ((k * 7919) % slots * size) as u64;
                let got = ctx.read(size, fd, off).await.unwrap();
                assert!(
                    got[..] == expected[off as usize..off as usize + size],
                    "data at {off}"
                );
            }
        });
        println!("CHILD done {n}");
        exit_with_context_open(ctx);
    }
    #[cfg(feature = "tokio")]
    if let Some(flavor) = mode.strip_prefix("tokio_") {
        // Eight tasks, each reading in turn, as a tokio user writes it.
        let rt = util::runtime(flavor == "mt");
        let expected = Arc::new(expected);
        rt.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let (ctx, expected) = (ctx.clone(), Arc::clone(&expected));
                    tokio::spawn(async move {
                        for k in (t..n).step_by(8) {
                            let off = (k * 7919) % slots * size;
                            let got = ctx.read(size, fd, off as u64).await.unwrap();
                            assert!(got[..] == expected[off..off + size], "data at {off}");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        drop(rt);
        println!("CHILD done {n}");
        exit_with_context_open(ctx);
    }
    if mode == "vectored" {
        // Two caller-owned aligned buffers per operation, one PREADV each.
        block_on(async {
            let mut reads: FuturesUnordered<_> = (0..n)
                .map(|k| {
                    let off = ((k * 7919) % (FILE_SIZE / 8192) * 8192) as u64;
                    let bufs = vec![
                        caio::Buffer::with_capacity(4096),
                        caio::Buffer::with_capacity(4096),
                    ];
                    let f = ctx.read_vectored_at(bufs, fd, off);
                    async move { (off as usize, f.await) }
                })
                .collect();
            while let Some((off, (r, bufs))) = reads.next().await {
                assert_eq!(r.unwrap(), 8192);
                assert!(bufs[0][..] == expected[off..off + 4096], "data at {off}");
                assert!(
                    bufs[1][..] == expected[off + 4096..off + 8192],
                    "data at {off}"
                );
            }
        });
        println!("CHILD done {n}");
        exit_with_context_open(ctx);
    }
    let wakes = Arc::new(Wakes {
        tid,
        mine: AtomicUsize::new(0),
        theirs: AtomicUsize::new(0),
    });
    let reads = async {
        let mut reads: FuturesUnordered<_> = (0..n)
            .map(|k| {
                let off = ((k * 7919) % slots * size) as u64;
                let f: Pin<Box<dyn Future<Output = std::io::Result<caio::Buffer>>>> = match &file {
                    Some(file) => Box::pin(file.read_at(size, off)),
                    None => Box::pin(ctx.read(size, fd, off)),
                };
                let f = Counted {
                    inner: f,
                    wakes: Arc::clone(&wakes),
                    here: Arc::new(AtomicBool::new(false)),
                };
                async move { (off, f.await) }
            })
            .collect();
        while let Some((off, r)) = reads.next().await {
            let got = r.unwrap();
            assert!(
                got[..] == expected[off as usize..off as usize + size],
                "data at {off}"
            );
        }
    };
    // "drive32": the calling thread waits for its completions itself.
    if mode == "drive32" {
        ctx.block_on(reads);
    } else {
        block_on(reads);
    }
    println!(
        "CHILD finished_here={} finished_elsewhere={}",
        wakes.mine.load(Ordering::Relaxed),
        wakes.theirs.load(Ordering::Relaxed)
    );
    println!("CHILD done {n}");
    exit_with_context_open(ctx);
}

/// Ends the child while `ctx` is open. Dropping it would hand its kernel context to a
/// thread that keeps it for reuse (`caio-aio-idle`), which the process's exit races: a
/// thread started, or not, by timing alone, after everything the traces measure.
fn exit_with_context_open(ctx: Context) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _open = ctx;
    std::process::exit(0);
}

/// How many reads were last woken, before they finished, on the calling thread (`tid`)
/// and on others: a completion wakes its read on the thread that reaped it, by a system
/// call or straight from the ring in user space, which strace does not show.
struct Wakes {
    tid: i32,
    mine: AtomicUsize,
    theirs: AtomicUsize,
}

/// A read counted in `wakes` when it finishes.
struct Counted {
    inner: Pin<Box<dyn Future<Output = std::io::Result<caio::Buffer>>>>,
    wakes: Arc<Wakes>,
    /// Whether its last wake was on the calling thread.
    here: Arc<AtomicBool>,
}

struct CountingWaker {
    inner: Waker,
    tid: i32,
    here: Arc<AtomicBool>,
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SAFETY: gettid has no arguments and cannot fail.
        let here = unsafe { libc::gettid() } == self.tid;
        self.here.store(here, Ordering::Relaxed);
        self.inner.wake_by_ref();
    }
}

impl Future for Counted {
    type Output = std::io::Result<caio::Buffer>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let waker = Waker::from(Arc::new(CountingWaker {
            inner: cx.waker().clone(),
            tid: self.wakes.tid,
            here: Arc::clone(&self.here),
        }));
        let r = self
            .inner
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker));
        if r.is_ready() {
            let w = &self.wakes;
            let n = if self.here.load(Ordering::Relaxed) {
                &w.mine
            } else {
                &w.theirs
            };
            n.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

struct Trace {
    /// (tid, syscall, args-and-result) per completed call.
    calls: Vec<(u32, String, String)>,
    fd: i32,
    tid: u32,
    /// What the child printed.
    stdout: String,
}

impl Trace {
    fn count(&self, name: &str) -> usize {
        self.calls.iter().filter(|(_, n, _)| n == name).count()
    }

    /// The number of iocbs of each io_submit call that carries `command` (strace shows a
    /// few iocbs of a call; its count is the second argument).
    fn submits(&self, command: &str) -> Vec<usize> {
        self.submits_by(|_| true, command)
    }

    /// The same, for the calls of the threads `by` picks.
    fn submits_by(&self, by: impl Fn(u32) -> bool, command: &str) -> Vec<usize> {
        self.calls
            .iter()
            .filter(|(tid, name, a)| by(*tid) && name == "io_submit" && a.contains(command))
            .map(|(_, _, a)| a.split(", ").nth(1).unwrap().trim().parse().unwrap())
            .collect()
    }

    fn on_fd<'a>(
        &'a self,
        names: &'a [&str],
    ) -> impl Iterator<Item = &'a (u32, String, String)> + 'a {
        let prefix = format!("{},", self.fd);
        self.calls
            .iter()
            .filter(move |(_, n, a)| names.contains(&n.as_str()) && a.starts_with(&prefix))
    }
}

/// Kernel AIO and strace are both here; otherwise prints why the test is skipped.
fn can_trace() -> bool {
    if !Implementation::Linux.is_available() {
        eprintln!("SKIP: kernel AIO is not available here");
        return false;
    }
    util::has_strace()
}

/// Runs the child under `strace -f` and parses what it did.
fn trace(mode: &str, n: usize, file: &Path) -> Trace {
    // One traced child at a time: batching and timing are what the traces measure, and
    // children traced side by side on two cores measured less of it.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let out_path = file.with_extension(format!("strace-{mode}-{n}"));
    let spec = format!("{mode}:{n}");
    let stdout = util::under_strace(
        "child_reads",
        &out_path,
        "io_setup,io_submit,io_getevents,pread64,preadv,preadv2,read,clone,clone3,vfork,fork,futex",
        &[
            (CHILD, spec.as_ref()),
            ("CAIO_ASYNC_TEST_FILE", file.as_os_str()),
        ],
        std::time::Duration::from_secs(300),
    );
    assert!(stdout.contains(&format!("CHILD done {n}")), "{stdout}");
    let field = |k: &str| -> i64 { util::child_field(&stdout, k) };
    let text = fs::read_to_string(&out_path).unwrap();
    let mut calls = Vec::new();
    for (tid, full) in util::strace_calls(&text) {
        if let Some((name, args)) = full.split_once('(') {
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                calls.push((tid, name.to_string(), args.to_string()));
            }
        }
    }
    // Only what happened once caio started (the loader and the harness read files too).
    let start = calls
        .iter()
        .position(|(_, n, _)| n == "io_setup")
        .unwrap_or(0);
    calls.drain(..start);
    let fd = if stdout.contains(" filefd=") {
        field("filefd")
    } else {
        field("fd")
    };
    Trace {
        calls,
        fd: fd as i32,
        tid: field("tid") as u32,
        stdout,
    }
}

fn data_file() -> Scratch {
    let s = Scratch::new();
    fs::write(&s.path, pattern(FILE_SIZE, 11)).unwrap();
    s.file.sync_all().unwrap();
    s
}

#[test]
fn o_direct_reads_go_through_io_submit_in_batches_on_a_fixed_set_of_threads() {
    if !can_trace() {
        return;
    }
    let s = data_file();
    let small = trace("direct", 64, &s.path);
    let large = trace("direct", 2048, &s.path);
    for (t, n) in [(&small, 64usize), (&large, 2048)] {
        let submits = t.submits("IOCB_CMD_PREAD");
        let reads_submitted: usize = submits.iter().sum();
        assert_eq!(
            reads_submitted, n,
            "every read went to the kernel through io_submit"
        );
        let read_submits = submits.len();
        assert!(
            read_submits * 4 <= n,
            "{n} reads took {read_submits} io_submit calls: submissions are not batched"
        );
        let preads: Vec<_> = t.on_fd(&["pread64", "preadv", "preadv2", "read"]).collect();
        assert!(
            preads.is_empty(),
            "the data file was read by a syscall: {preads:?}"
        );
        println!(
            "{n} O_DIRECT reads: {read_submits} io_submit calls, {} threads started",
            t.count("clone3") + t.count("clone")
        );
    }
    let threads = |t: &Trace| t.count("clone") + t.count("clone3");
    assert_eq!(
        threads(&small),
        threads(&large),
        "the thread count grew with the number of operations"
    );
    assert!(
        threads(&large) <= 2,
        "more than the reaper was started: {}",
        threads(&large)
    );
}

#[test]
fn at_queue_depth_32_one_io_submit_carries_several_reads() {
    if !can_trace() {
        return;
    }
    let (_, per_call) = at_qd_32("direct32");
    println!("qd 32 under strace: {per_call:.1} reads per io_submit");
}

/// Traces 4096 O_DIRECT reads at max_requests 32 in `mode`, checks that every one went
/// to the kernel through `io_submit` with at least 8 to a call (the target through
/// the public API; `cargo bench --bench vs_fio -- --fast` counts it without strace too, on
/// a fast device), and gives the trace and the reads per call.
fn at_qd_32(mode: &str) -> (Trace, f64) {
    let s = data_file();
    let t = trace(mode, 4096, &s.path);
    let submits = t.submits("IOCB_CMD_PREAD");
    let reads: usize = submits.iter().sum();
    assert_eq!(
        reads, 4096,
        "every read went to the kernel through io_submit"
    );
    let per_call = reads as f64 / submits.len() as f64;
    assert!(
        per_call >= 8.0,
        "{mode}: {reads} reads took {} io_submit calls ({per_call:.1} each): not batched",
        submits.len()
    );
    (t, per_call)
}

/// The "drive32" trace at qd 32 (`at_qd_32`), made once for the tests that read it.
fn drive32() -> &'static (Trace, f64) {
    static TRACE: OnceLock<(Trace, f64)> = OnceLock::new();
    TRACE.get_or_init(|| at_qd_32("drive32"))
}

#[test]
fn vectored_o_direct_reads_are_one_preadv_command_each_in_batches() {
    if !can_trace() {
        return;
    }
    let s = data_file();
    let t = trace("vectored", 512, &s.path);
    let submits = t.submits("IOCB_CMD_PREADV");
    let commands: usize = submits.iter().sum();
    assert_eq!(commands, 512, "every vectored read is one PREADV command");
    assert!(
        submits.len() * 4 <= 512,
        "512 vectored reads took {} io_submit calls: not batched",
        submits.len()
    );
    let preads: Vec<_> = t.on_fd(&["pread64", "preadv", "preadv2", "read"]).collect();
    assert!(
        preads.is_empty(),
        "the data file was read by a syscall: {preads:?}"
    );
    println!(
        "512 vectored O_DIRECT reads: {} io_submit calls",
        submits.len()
    );
}

#[test]
fn cold_cache_buffered_reads_never_block_the_submitting_thread() {
    if !can_trace() {
        return;
    }
    let s = data_file();
    // SAFETY: fadvise on an open descriptor; drops the clean (synced) pages from the cache.
    assert_eq!(
        unsafe { libc::posix_fadvise(s.fd(), 0, 0, libc::POSIX_FADV_DONTNEED) },
        0
    );
    let resident = resident_fraction(&s.path);
    if resident > 0.05 {
        eprintln!(
            "SKIP: cannot evict the file from the page cache ({:.0}% still resident)",
            resident * 100.0
        );
        return;
    }
    let t = trace("cold", 128, &s.path);
    // A raw descriptor: one fcntl tells it is buffered, then the read is tried with
    // preadv2(RWF_NOWAIT) on the submitter and a miss goes to the pool.
    let on_submitter: Vec<_> = t
        .on_fd(&["pread64", "preadv", "preadv2", "read"])
        .filter(|(tid, _, _)| *tid == t.tid)
        .collect();
    for (_, name, args) in &on_submitter {
        assert!(
            name == "preadv2" && args.contains("RWF_NOWAIT"),
            "a read that may block on the submitter: {name}({args}"
        );
    }
    let misses = on_submitter
        .iter()
        .filter(|(_, _, a)| a.contains("EAGAIN"))
        .count();
    let handed_off = t
        .on_fd(&["pread64"])
        .filter(|(tid, _, _)| *tid != t.tid)
        .count();
    assert!(
        misses > 0 && handed_off > 0,
        "cache misses ({misses}) must be read by the fallback pool ({handed_off} preads there)"
    );
    println!(
        "cold cache: {} RWF_NOWAIT tries on the submitter ({misses} EAGAIN), {handed_off} preads on pool threads",
        on_submitter.len()
    );
}

#[test]
fn cold_cache_file_reads_never_block_the_submitting_thread() {
    // Through the file layer, a buffered read is first tried with preadv2(RWF_NOWAIT) on
    // the submitting thread: a miss returns EAGAIN at once and the pool reads it.
    if !can_trace() {
        return;
    }
    let s = data_file();
    // SAFETY: fadvise on an open descriptor; drops the clean (synced) pages from the cache.
    assert_eq!(
        unsafe { libc::posix_fadvise(s.fd(), 0, 0, libc::POSIX_FADV_DONTNEED) },
        0
    );
    if resident_fraction(&s.path) > 0.05 {
        eprintln!("SKIP: cannot evict the file from the page cache");
        return;
    }
    let t = trace("coldfile", 128, &s.path);
    let on_submitter: Vec<_> = t
        .on_fd(&["pread64", "preadv", "preadv2", "read"])
        .filter(|(tid, _, _)| *tid == t.tid)
        .collect();
    assert!(
        !on_submitter.is_empty(),
        "the submitter never tried the page cache"
    );
    for (_, name, args) in &on_submitter {
        assert!(
            name == "preadv2" && args.contains("RWF_NOWAIT"),
            "a read that may block on the submitter: {name}({args}"
        );
    }
    let misses = on_submitter
        .iter()
        .filter(|(_, _, a)| a.contains("EAGAIN"))
        .count();
    let by_pool = t
        .on_fd(&["pread64"])
        .filter(|(tid, _, _)| *tid != t.tid)
        .count();
    assert!(
        misses > 0 && by_pool > 0,
        "misses ({misses}) must go to the pool ({by_pool} preads there)"
    );
    println!(
        "cold cache through File: {} RWF_NOWAIT tries on the submitter ({misses} EAGAIN), {by_pool} preads on pool threads",
        on_submitter.len()
    );
}

/// The number of events an `io_getevents` call returned, and whether it waited (its
/// `min_nr` was above 0).
fn getevents(args: &str) -> (usize, bool) {
    let waited = args.split(", ").nth(1).is_some_and(|m| m.trim() != "0");
    let n = args
        .rsplit_once("= ")
        .and_then(|(_, r)| r.trim().parse().ok())
        .unwrap_or(0);
    (n, waited)
}

/// Completions taken with `io_getevents` by the calling thread `tid`, and by others,
/// and how many of the others' calls waited.
fn reaped_by_call(t: &Trace) -> (usize, usize, usize) {
    let (mut mine, mut theirs, mut their_waits) = (0, 0, 0);
    for (tid, _, args) in t.calls.iter().filter(|(_, n, _)| n == "io_getevents") {
        let (n, waited) = getevents(args);
        if *tid == t.tid {
            mine += n;
        } else {
            theirs += n;
            their_waits += usize::from(waited);
        }
    }
    (mine, theirs, their_waits)
}

/// With the `tokio` feature, completions of operations sent from a runtime's threads are
/// reaped by those threads, woken by the runtime's reactor: the reaper thread does not
/// wait for them in `io_getevents`.
#[cfg(feature = "tokio")]
#[test]
fn under_tokio_the_runtime_s_threads_reap_and_no_caio_thread_waits_for_completions() {
    if !can_trace() {
        return;
    }
    let s = data_file();
    let reads = 512;
    for mode in ["tokio_mt", "tokio_ct"] {
        let t = trace(mode, reads, &s.path);
        let submits = t.submits("IOCB_CMD_PREAD");
        assert_eq!(
            submits.iter().sum::<usize>(),
            reads,
            "every read went to the kernel through io_submit"
        );
        // Completions taken by an io_getevents that waited: the reaper's way. The reaper
        // is in that wait already when the first reads are sent, and takes what is there
        // when it wakes (at most the eight in flight); then it stands down.
        let waited: usize = t
            .calls
            .iter()
            .filter(|(_, n, _)| n == "io_getevents")
            .map(|(_, _, a)| getevents(a))
            .filter(|(_, waited)| *waited)
            .map(|(n, _)| n)
            .sum();
        println!(
            "{mode}: of {reads} completions, {waited} taken by an io_getevents that waited; \
             {} io_submit calls",
            submits.len()
        );
        assert!(
            waited <= 8,
            "{mode}: {waited} of {reads} completions went through a waiting io_getevents"
        );
    }
}

/// Whether a file in `dir` can be opened with O_DIRECT.
fn accepts_o_direct(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let mut o = fs::OpenOptions::new();
    o.write(true).create(true);
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_DIRECT);
    let ok = o.open(&probe).is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

#[test]
fn under_block_on_completions_already_in_the_ring_are_taken_without_a_syscall() {
    if !can_trace() {
        return;
    }
    // On tmpfs an O_DIRECT read completes inside io_submit, so its completion is in the ring
    // the first time the thread looks, however loaded the machine is. (On a disk it depends
    // on how long the device takes against how long the thread spins: a benchmark's
    // question, not a test's.)
    let Some(dir) = tempfile::tempdir_in("/dev/shm")
        .ok()
        .filter(|d| accepts_o_direct(d.path()))
    else {
        eprintln!("SKIP: no tmpfs at /dev/shm that accepts O_DIRECT");
        return;
    };
    let path = dir.path().join("data");
    fs::write(&path, pattern(FILE_SIZE, 11)).unwrap();
    let reads = 1024;
    let t = trace("drive1", reads, &path);
    let submitted: usize = t.submits("IOCB_CMD_PREAD").iter().sum();
    assert_eq!(
        submitted, reads,
        "every read went to the kernel through io_submit"
    );
    let (mine, theirs, _) = reaped_by_call(&t);
    let user = reads.saturating_sub(mine + theirs);
    println!(
        "block_on, qd 1 under strace: of {reads} completions, {mine} taken with io_getevents \
         by the calling thread, {theirs} by the reaper, {user} straight from the ring"
    );
    // Every read finished, and those no io_getevents returned were taken from the ring in
    // user space. Each read is done by the time io_submit returns, so nearly all of them.
    assert!(
        user * 10 >= reads * 9,
        "only {user} of {reads} completions were taken from the ring without a system call"
    );
}

#[test]
fn under_block_on_a_large_reap_goes_back_to_the_kernel_in_parts() {
    if !can_trace() {
        return;
    }
    // Under strace every completion of a batch is there by the time the thread looks:
    // reaps of 16 to 32 at qd 32, whose tasks queue as many reads in one poll.
    let (t, per_call) = drive32();
    let mine = t.submits_by(|tid| tid == t.tid, "IOCB_CMD_PREAD");
    // After the first 32, a poll sends a first part of 8 (a quarter of the depth) as soon
    // as it is queued, and the rest after: a whole batch in one call is rare.
    let whole: usize = mine.iter().skip(1).filter(|&&k| k >= 32).sum();
    let parts = mine.iter().filter(|&&k| k == 8).count();
    println!(
        "block_on, qd 32 under strace: {per_call:.1} reads per io_submit; the calling thread \
         made {} calls, {parts} of them a first part (8); {whole} reads went in calls of 32",
        mine.len()
    );
    assert!(parts * 3 >= mine.len(), "few parts: {mine:?}");
    assert!(
        whole * 10 <= 4096,
        "{whole} reads went in calls of 32: {mine:?}"
    );
}

#[test]
fn under_block_on_the_calling_thread_reaps_its_own_reads() {
    if !can_trace() {
        return;
    }
    let (t, per_call) = drive32();
    let reads = 4096;
    let (by_call, theirs, their_waits) = reaped_by_call(t);
    // Completions the calling thread took with io_getevents, and all it took: also those
    // straight from the ring, which strace does not show.
    let mine: usize = util::child_field(&t.stdout, "finished_here");
    let parks = t
        .calls
        .iter()
        .filter(|(tid, n, a)| *tid == t.tid && n == "futex" && a.contains("FUTEX_WAIT"))
        .count();
    println!(
        "block_on, qd 32 under strace: {per_call:.1} reads per io_submit; {mine} reads \
         woken to finish on the calling thread, which took {by_call} completions with \
         io_getevents; the reaper took {theirs} ({their_waits} waits); {parks} parks"
    );
    // The reaper waits twice at most: once begun before the drive started (it ends with
    // the first completion) and once after the drive ended. Meanwhile it only looks,
    // while the calling thread runs user code.
    assert!(their_waits <= 2, "the reaper kept waiting for completions");
    assert!(
        mine >= reads * 9 / 10,
        "the calling thread reaped {mine} of {reads} completions"
    );
    // No hop: the thread never parks to be woken by another thread per read.
    assert!(
        parks * 100 <= reads,
        "the calling thread parked {parks} times"
    );
}
