//! The io_uring backend: proof read off `strace -f` that reads and writes, O_DIRECT and
//! buffered, go through `io_uring_enter` with no pread/pwrite-family call on the data file
//! and no thread per operation; and selection falling back to linux, with the reason, when
//! `kernel.io_uring_disabled` forbids io_uring or seccomp denies `io_uring_setup`; writes
//! that outlive the thread that submitted them; and, under `Context::block_on`, reads sent
//! with the wait, and sent all the same when a task keeps the thread from waiting.
#![cfg(target_os = "linux")]

mod util;

use std::{
    fs,
    os::unix::{fs::OpenOptionsExt, io::AsRawFd},
    process::Output,
};

use caio::{Buffer, Context, Implementation};
use futures::{stream::FuturesUnordered, StreamExt};
use util::{block_on, is_root, pattern, Scratch};

const CHILD: &str = "CAIO_URING_TEST_CHILD";
const FILE_SIZE: usize = 8 << 20;
/// A descriptor number nothing else in the child has, so the trace can tell its calls.
const FD: i32 = 777;

/// The tests here run one at a time: one sets `kernel.io_uring_disabled`, which would fail
/// the other's child.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_child(test: &str, env: &[(&str, &str)]) -> Output {
    util::run_test_child(test, env, std::time::Duration::from_secs(120))
}

/// In the child: `n` reads, `n` vectored reads and writes, then `n` writes, at once on
/// descriptor 777 through a uring context, O_DIRECT (`direct`, and `drive` under
/// `Context::block_on`) or buffered; prints the number of threads after, and its thread.
#[test]
fn child_io() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let (mode, n) = spec.split_once(':').unwrap();
    let n: usize = n.parse().unwrap();
    let path = std::env::var("CAIO_URING_TEST_FILE").unwrap();
    let mut o = fs::OpenOptions::new();
    o.read(true).write(true);
    // "drive": O_DIRECT, under `Context::block_on`; "lanes" too, as 32 lanes that each
    // read one block after another (what a storage engine's workers do), reads only.
    let lanes = mode == "lanes";
    let drive = mode == "drive" || lanes;
    if mode == "direct" || drive {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_DIRECT);
    }
    let file = o.open(&path).unwrap();
    // SAFETY: dup2 onto an unused descriptor number.
    assert_eq!(unsafe { libc::dup2(file.as_raw_fd(), FD) }, FD);
    let ctx = Context::builder()
        .implementation(Implementation::Uring)
        .max_requests(64)
        .build()
        .unwrap();
    let want = pattern(FILE_SIZE, 21);
    let slots = FILE_SIZE / 4096;
    let work = async {
        let mut reads: FuturesUnordered<_> = (0..n)
            .map(|k| {
                let off = ((k * 7919) % slots * 4096) as u64;
                let r = ctx.read(4096, FD, off);
                async move { (off, r.await) }
            })
            .collect();
        while let Some((off, r)) = reads.next().await {
            assert_eq!(&r.unwrap()[..], &want[off as usize..off as usize + 4096]);
        }
        // Vectored reads into caller-owned buffers: one READV entry each.
        let mut vectored: FuturesUnordered<_> = (0..n)
            .map(|k| {
                let off = (k * 7919) % (FILE_SIZE / 8192) * 8192;
                let bufs = vec![Buffer::with_capacity(4096), Buffer::with_capacity(4096)];
                let r = ctx.read_vectored_at(bufs, FD, off as u64);
                async move { (off, r.await) }
            })
            .collect();
        while let Some((off, (r, bufs))) = vectored.next().await {
            assert_eq!(r.unwrap(), 8192);
            assert_eq!(&bufs[1][..], &want[off + 4096..off + 8192]);
        }
        let writes: FuturesUnordered<_> = (0..n)
            .map(|k| {
                let bufs = vec![Buffer::zeroed(4096), Buffer::zeroed(4096)];
                ctx.write_vectored_at(bufs, FD, (k % (FILE_SIZE / 8192) * 8192) as u64)
            })
            .collect();
        for (r, _) in writes.collect::<Vec<_>>().await {
            assert_eq!(r.unwrap(), 8192);
        }
        let writes: FuturesUnordered<_> = (0..n)
            .map(|k| ctx.write(vec![k as u8; 4096], FD, (k % slots * 4096) as u64))
            .collect();
        for r in writes.collect::<Vec<_>>().await {
            assert_eq!(r.unwrap(), 4096);
        }
    };
    if lanes {
        ctx.block_on(read_lanes(
            &ctx,
            FD,
            &want,
            n / 32,
            &std::cell::Cell::new(0),
        ));
    } else if drive {
        ctx.block_on(work);
    } else {
        block_on(work);
    }
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::gettid() };
    // The kernel's io-wq workers (`iou-wrk-…`) are threads of the process too.
    let names = util::thread_names();
    let workers = names.iter().filter(|n| n.starts_with("iou-")).count();
    println!(
        "\nCHILD threads={} workers={workers} tid={tid}",
        names.len() - workers
    );
}

/// 32 lanes on `ctx`, each reading `per_lane` 4 KiB blocks of `fd` one after another (what
/// a storage engine's workers do) and checking each against `want`, the file's contents;
/// `done` counts the reads.
async fn read_lanes(
    ctx: &Context,
    fd: i32,
    want: &[u8],
    per_lane: usize,
    done: &std::cell::Cell<usize>,
) {
    let slots = want.len() / 4096;
    let lanes: FuturesUnordered<_> = (0..32)
        .map(|lane| async move {
            for k in 0..per_lane {
                let off = ((lane * per_lane + k) * 7919 % slots * 4096) as u64;
                let b = ctx.read(4096, fd, off).await.unwrap();
                assert_eq!(&b[..], &want[off as usize..off as usize + 4096]);
                done.set(done.get() + 1);
            }
        })
        .collect();
    lanes.collect::<Vec<()>>().await;
}

struct Trace {
    /// (thread, syscall, arguments) of every traced call, every thread.
    calls: Vec<(u32, String, String)>,
    /// The child's own threads at the end, and the kernel's io-wq workers among its
    /// threads.
    threads: usize,
    workers: usize,
    /// The thread that ran the operations.
    tid: u32,
}

impl Trace {
    /// Asserts that the child made no positional read or write (`pread64`, `pwritev`...)
    /// on its file: the ring carried them all.
    fn assert_no_positional_on_file(&self, what: &str) {
        let on_file: Vec<_> = self
            .calls
            .iter()
            .filter(|(_, n, a)| n.starts_with("p") && a.starts_with(&format!("{FD},")))
            .collect();
        assert!(
            on_file.is_empty(),
            "{what}: positional calls on the file: {on_file:?}"
        );
    }
}

fn trace(mode: &str, n: usize) -> Trace {
    let s = Scratch::new();
    fs::write(&s.path, pattern(FILE_SIZE, 21)).unwrap();
    s.file.sync_all().unwrap();
    let out_path = s.path.with_extension(format!("strace-{mode}-{n}"));
    let spec = format!("{mode}:{n}");
    let stdout = util::under_strace(
        "child_io",
        &out_path,
        "io_uring_enter,pread64,preadv,preadv2,pwrite64,pwritev,pwritev2,read,write,clone,clone3",
        &[
            (CHILD, spec.as_ref()),
            ("CAIO_URING_TEST_FILE", s.path.as_os_str()),
        ],
        std::time::Duration::from_secs(300),
    );
    let (threads, workers, tid) = (
        util::child_field(&stdout, "threads"),
        util::child_field(&stdout, "workers"),
        util::child_field(&stdout, "tid"),
    );
    let text = fs::read_to_string(&out_path).unwrap();
    let calls = text
        .lines()
        .filter_map(|l| {
            let (tid, rest) = l.split_once(char::is_whitespace)?;
            let (name, args) = rest.trim_start().split_once('(')?;
            Some((tid.parse().ok()?, name.to_string(), args.to_string()))
        })
        .collect();
    Trace {
        calls,
        threads,
        workers,
        tid,
    }
}

/// Whether io_uring works here; says why the test skips when not.
fn uring_here() -> bool {
    let here = Implementation::Uring.is_available();
    if !here {
        eprintln!("SKIP: io_uring is not available here");
    }
    here
}

fn can_trace() -> bool {
    if !uring_here() {
        return false;
    }
    util::has_strace()
}

#[test]
fn reads_and_writes_go_through_io_uring_enter_with_no_thread_per_operation() {
    let _serial = serial();
    if !can_trace() {
        return;
    }
    for mode in ["direct", "buffered"] {
        let (small, big) = (trace(mode, 64), trace(mode, 1024));
        // The child runs n reads, n vectored reads, n vectored writes and n writes.
        let (few, many) = (4 * 64, 4 * 1024);
        for t in [&small, &big] {
            t.assert_no_positional_on_file(mode);
        }
        let enters = big
            .calls
            .iter()
            .filter(|(_, n, _)| n == "io_uring_enter")
            .count();
        assert!(enters > 0, "{mode}: no io_uring_enter");
        // Batched: fewer enters than operations. (How many an enter carries depends on
        // how completions arrive: printed below, and in the closing note.)
        assert!(
            enters < many,
            "{mode}: {enters} io_uring_enter for {many} operations"
        );
        assert_no_thread_per_operation(mode, (&small, few), (&big, many));
        eprintln!(
            "{mode}: {many} operations, {enters} io_uring_enter ({:.1} per enter), {} threads \
             and {} io-wq workers ({} and {} for {few})",
            many as f64 / enters as f64,
            big.threads,
            big.workers,
            small.threads,
            small.workers
        );
    }
}

/// Under `Context::block_on`, the calling thread waits for its own O_DIRECT completions in
/// `io_uring_enter` (on a ring of its own, `SINGLE_ISSUER | DEFER_TASKRUN`), and the
/// completion thread carries none of them: no eventfd read per operation, no positional
/// call on the file, and threads flat.
#[test]
fn under_block_on_the_calling_thread_waits_in_its_own_ring() {
    let _serial = serial();
    if !can_trace() {
        return;
    }
    let (small, big) = (trace("drive", 64), trace("drive", 1024));
    let many = 4 * 1024;
    for t in [&small, &big] {
        t.assert_no_positional_on_file("block_on");
    }
    let waits = big
        .calls
        .iter()
        .filter(|(tid, n, a)| {
            *tid == big.tid && n == "io_uring_enter" && a.contains("IORING_ENTER_GETEVENTS")
        })
        .count();
    let enters = big
        .calls
        .iter()
        .filter(|(_, n, _)| n == "io_uring_enter")
        .count();
    let reaper_reads = big
        .calls
        .iter()
        .filter(|(tid, n, _)| *tid != big.tid && n == "read")
        .count();
    eprintln!(
        "block_on: {many} operations, {enters} io_uring_enter ({waits} waits by the calling \
         thread), {reaper_reads} reads by other threads, {} threads",
        big.threads
    );
    assert!(
        waits > 0,
        "the calling thread never waited in io_uring_enter"
    );
    assert!(
        enters < many,
        "{enters} io_uring_enter for {many} operations"
    );
    assert!(
        reaper_reads * 10 <= many,
        "the completion thread read its eventfd {reaper_reads} times for {many} operations"
    );
    assert_no_thread_per_operation("block_on", (&small, 4 * 64), (&big, many));
}

/// Under `Context::block_on` at depth, the reads the tasks of a reap queue go back to the
/// kernel in the `io_uring_enter` that waits for the next batch: one system call sends and
/// waits, as the bench's minimal io_uring loop does.
#[test]
fn under_block_on_the_reads_of_a_reap_go_back_with_the_next_wait() {
    let _serial = serial();
    if !can_trace() {
        return;
    }
    let n = 8192;
    let t = trace("lanes", n);
    t.assert_no_positional_on_file("lanes");
    // io_uring_enter(fd, to_submit, min_complete, flags, ...): a wait asks for at least
    // one completion; what it sends is `to_submit`.
    let waits: Vec<usize> = t
        .calls
        .iter()
        .filter(|(tid, name, _)| *tid == t.tid && name == "io_uring_enter")
        .filter_map(|(_, _, a)| {
            let mut args = a
                .split(", ")
                .skip(1)
                .map(|v| v.trim().parse::<usize>().ok());
            let (sent, min) = (args.next()??, args.next()??);
            (min > 0).then_some(sent)
        })
        .collect();
    let sending = waits.iter().filter(|&&k| k > 0).count();
    let with_a_wait: usize = waits.iter().sum();
    let enters = t
        .calls
        .iter()
        .filter(|(_, name, _)| name == "io_uring_enter")
        .count();
    eprintln!(
        "lanes: {n} reads, {enters} io_uring_enter, {} waits, {sending} of them sending \
         reads too, {with_a_wait} reads sent with a wait",
        waits.len()
    );
    // How many reaps find their batch complete, and send the next reads without a wait,
    // depends on the device's speed; what holds on any device is that the thread's waits
    // carry the reads queued before them. (Were a poll's reads sent at once, the thread
    // would reap in those sends and next to never wait with reads.)
    assert!(
        sending >= 8 && sending * 2 >= waits.len(),
        "{sending} of {} waits sent reads ({with_a_wait} of {n} reads went to the kernel \
         with a wait)",
        waits.len()
    );
    assert!(
        enters * 4 <= n,
        "{enters} io_uring_enter for {n} reads: not batched"
    );
}

/// Under `Context::block_on` at depth, a poll's reads are written to the ring and left for
/// the wait's `io_uring_enter`. A task that wakes itself at every poll keeps the thread
/// from ever waiting: those reads must go to the kernel all the same.
#[test]
fn reads_left_for_the_wait_are_sent_when_a_task_keeps_the_thread_from_waiting() {
    if !uring_here() {
        return;
    }
    let s = Scratch::new();
    let want = pattern(FILE_SIZE, 5);
    fs::write(&s.path, &want).unwrap();
    let mut o = fs::OpenOptions::new();
    o.read(true);
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_DIRECT);
    let file = o.open(&s.path).unwrap();
    let fd = file.as_raw_fd();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ctx = Context::builder()
            .implementation(Implementation::Uring)
            .max_requests(64)
            .build()
            .unwrap();
        let done = std::cell::Cell::new(0);
        let restless = futures::future::poll_fn(|cx| {
            if done.get() == 32 * 8 {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        });
        ctx.block_on(futures::future::join(
            read_lanes(&ctx, fd, &want, 8, &done),
            restless,
        ));
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("256 reads under block_on, beside a task that wakes itself, did not finish");
    drop(file);
}

/// The child's own threads are as many for `many` operations as for `few`, and the
/// kernel's io-wq workers stay within their bound. The kernel starts those as the load
/// needs them (buffered reads that miss the page cache, writes), so how many start is
/// timing; the bound is not: the one the context registers for each of the bounded and
/// unbounded kinds, per submitting thread (the caller and the reaper).
fn assert_no_thread_per_operation(
    what: &str,
    (small, few): (&Trace, usize),
    (big, many): (&Trace, usize),
) {
    assert!(
        big.threads <= small.threads,
        "{what}: threads grow with operations: {} for {few}, {} for {many}",
        small.threads,
        big.threads
    );
    let bound = 2 * 2 * caio::default_threads();
    assert!(
        big.workers <= bound,
        "{what}: {} io-wq workers for {many} operations, over the bound of {bound}",
        big.workers
    );
}

/// In the child: selection and an explicit uring build, after an optional seccomp denial.
#[test]
fn child_selection() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    if mode == "seccomp" {
        util::deny_syscalls(&[libc::SYS_io_uring_setup]);
    }
    let s = caio::selection();
    let explicit = match Context::builder()
        .implementation(Implementation::Uring)
        .build()
    {
        Ok(_) => "built".to_string(),
        Err(caio::Error::Unavailable { reason, .. }) => format!("unavailable: {reason}"),
        Err(e) => format!("other: {e}"),
    };
    println!(
        "\nREPORT impl={} explicit=[{explicit}] warnings=[{}]",
        s.implementation(),
        s.warnings().join(" | ")
    );
}

/// Restores `kernel.io_uring_disabled` when dropped, even if the test panics.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        fs::write("/proc/sys/kernel/io_uring_disabled", &self.0)
            .expect("restore kernel.io_uring_disabled");
    }
}

#[test]
fn io_uring_disabled_or_denied_falls_back_to_linux_with_the_reason() {
    let _serial = serial();
    if !Implementation::Uring.is_available() || !Implementation::Linux.is_available() {
        eprintln!("SKIP: io_uring or kernel AIO is not available here");
        return;
    }
    let o = run_child(
        "child_selection",
        &[(CHILD, "seccomp"), ("CAIO_IMPL", "uring")],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("REPORT impl=linux"), "{out}");
    assert!(out.contains("denied by seccomp"), "the reason: {out}");
    let knob = "/proc/sys/kernel/io_uring_disabled";
    let Ok(old) = fs::read_to_string(knob) else {
        eprintln!("SKIP: this kernel has no kernel.io_uring_disabled");
        return;
    };
    if !is_root() {
        eprintln!("SKIP: setting kernel.io_uring_disabled needs root");
        return;
    }
    let _restore = Restore(old.trim().to_string());
    fs::write(knob, "2").unwrap();
    let o = run_child("child_selection", &[(CHILD, "disabled")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("REPORT impl=linux"), "{out}");
    assert!(
        out.contains("io_uring_disabled is 2"),
        "the reason names the setting: {out}"
    );
}

/// io_uring cancels the work a thread submitted when that thread exits, and a flush
/// submits whatever any thread queued. Writes started on a thread that exits at once
/// (and queued behind one another on a single kernel worker) must still all be written.
#[test]
fn writes_outlive_the_thread_that_submitted_them() {
    if !uring_here() {
        return;
    }
    let _serial = serial();
    const LEN: usize = 16 << 20;
    let c = Context::builder()
        .implementation(Implementation::Uring)
        .threads(1)
        .build()
        .unwrap();
    let s = Scratch::new();
    let fd = s.fd();
    let blocks: Vec<Vec<u8>> = (0..4).map(|k| pattern(LEN, k)).collect();
    let writes = {
        let blocks = blocks.clone();
        std::thread::spawn(move || {
            let mut writes: Vec<_> = blocks
                .into_iter()
                .enumerate()
                .map(|(k, b)| c.write(b, fd, (k * LEN) as u64))
                .collect();
            // The first poll queues each write, the second sends them to the kernel.
            for _ in 0..2 {
                for w in &mut writes {
                    assert!(
                        util::poll_once(w).is_none(),
                        "a 16 MiB write is not instant"
                    );
                }
            }
            writes
        })
        .join()
        .unwrap()
    };
    for (k, w) in writes.into_iter().enumerate() {
        assert_eq!(block_on(w).unwrap(), LEN, "write {k}");
    }
    let all = s.contents();
    for (k, b) in blocks.iter().enumerate() {
        assert!(all[k * LEN..(k + 1) * LEN] == b[..], "block {k} is on disk");
    }
}

// --- io_uring_enter denied after the rings exist (a sandbox installed after start-up).

/// `path` opened for reading and writing with O_DIRECT, and a uring context.
fn direct_on_uring(path: &std::path::Path) -> (fs::File, Context) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let ctx = Context::builder()
        .implementation(Implementation::Uring)
        .build()
        .unwrap();
    (file, ctx)
}

/// In the child: a uring context with its shared ring and a `block_on` ring of its own in
/// use, then operations queued and not yet sent, then a seccomp policy that makes
/// io_uring_enter, io_uring_register and io_uring_setup fail with the errno named by the
/// mode. Prints `DENIED ok` once every operation, queued before or made after, completed
/// with the right result.
#[test]
fn child_enter_denied() {
    let Ok(errno) = std::env::var(CHILD) else {
        return;
    };
    let errno: i32 = errno.parse().unwrap();
    let path = std::env::var("CAIO_URING_TEST_FILE").unwrap();
    let data = pattern(FILE_SIZE, 33);
    let (file, ctx) = direct_on_uring(path.as_ref());
    let fd = file.as_raw_fd();
    let check = |off: u64, b: &Buffer| b[..] == data[off as usize..off as usize + 4096];
    // Both rings in use before the policy.
    assert!(check(0, &block_on(ctx.read(4096, fd, 0)).unwrap()));
    assert!(check(
        4096,
        &ctx.block_on(ctx.read(4096, fd, 4096)).unwrap()
    ));
    // Queued for the shared ring (a first poll writes nothing to the kernel yet).
    let mut queued: Vec<_> = (0..16u64)
        .map(|k| Box::pin(ctx.read(4096, fd, k * 8192)))
        .collect();
    for q in &mut queued {
        assert!(util::poll_once(q).is_none());
    }
    util::deny_syscalls_with(
        &[
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
            libc::SYS_io_uring_setup,
        ],
        errno,
    );
    // New operations on both paths. Which meets the refusal first: with EPERM, the
    // thread's own ring (block_on); with ENOSYS, the shared one.
    let reads = |k0: u64| {
        futures::future::join_all((k0..k0 + 64).map(|k| {
            let off = (k * 7919 % 2048) * 4096;
            let ctx = &ctx;
            async move { (off, ctx.read(4096, fd, off).await) }
        }))
    };
    let driven = |k0| {
        for (off, r) in ctx.block_on(reads(k0)) {
            assert!(check(off, &r.unwrap()), "block_on read at {off}");
        }
    };
    if errno == libc::EPERM {
        driven(64);
    }
    for (k, q) in queued.into_iter().enumerate() {
        let off = k as u64 * 8192;
        assert!(check(off, &block_on(q).unwrap()), "queued read {k}");
    }
    for (off, r) in block_on(reads(0)) {
        assert!(check(off, &r.unwrap()), "read at {off}");
    }
    driven(128);
    let mut b = Buffer::with_capacity(4096);
    b.extend_from_slice(&data[..4096]);
    let (w, _) = ctx.block_on(ctx.write_at_from(b, fd, 0));
    assert_eq!(w.unwrap(), 4096);
    block_on(ctx.fdsync(fd)).unwrap();
    block_on(ctx.wait_idle());
    println!("\nDENIED ok");
}

#[test]
fn io_uring_enter_denied_after_start_up_sends_everything_to_threads_never_hangs() {
    let _serial = serial();
    if !uring_here() {
        return;
    }
    let s = Scratch::new();
    fs::write(&s.path, pattern(FILE_SIZE, 33)).unwrap();
    s.file.sync_all().unwrap();
    for errno in [libc::EPERM, libc::ENOSYS] {
        let o = util::run_test_child(
            "child_enter_denied",
            &[
                (CHILD, &errno.to_string()),
                ("CAIO_URING_TEST_FILE", s.path.to_str().unwrap()),
            ],
            std::time::Duration::from_secs(60),
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("DENIED ok"),
            "errno {errno}:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

// --- The kernel's io_uring workers: bounded per submitting thread.

/// In the child: `SUBMITTERS` threads each keep 32 buffered writes (which io_uring runs
/// on its kernel workers) in flight on one uring context of `threads(2)` for a second;
/// prints the most `iou-wrk` threads seen at once.
#[test]
fn child_kernel_workers() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let ctx = Context::builder()
        .implementation(Implementation::Uring)
        .threads(WORKER_LIMIT)
        .build()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|t| {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            let path = std::path::Path::new(&dir).join(format!("w{t}"));
            std::thread::spawn(move || {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)
                    .unwrap();
                let fd = f.as_raw_fd();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let writes = (0..32u64).map(|k| ctx.write(vec![t as u8; 65536], fd, k * 65536));
                    for r in block_on(futures::future::join_all(writes)) {
                        assert_eq!(r.unwrap(), 65536);
                    }
                    block_on(ctx.fsync(fd)).unwrap();
                }
            })
        })
        .collect();
    let start = std::time::Instant::now();
    let mut most = 0;
    while start.elapsed() < std::time::Duration::from_secs(1) {
        let n = util::thread_names()
            .iter()
            .filter(|n| n.starts_with("iou-wrk"))
            .count();
        most = most.max(n);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in submitters {
        s.join().unwrap();
    }
    println!("\nWORKERS most={most}");
}

const SUBMITTERS: usize = 4;
const WORKER_LIMIT: usize = 2;

#[test]
fn kernel_workers_stay_within_the_documented_bound() {
    if !uring_here() {
        return;
    }
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let o = util::run_test_child(
        "child_kernel_workers",
        &[(CHILD, d.path().to_str().unwrap())],
        std::time::Duration::from_secs(60),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let most: usize = util::child_field(&out, "most");
    // `threads` bounded and as many unbounded workers for each thread that submits: the
    // submitters, the reaper (which sends the rest of short transfers) and the main thread.
    let bound = (SUBMITTERS + 2) * 2 * WORKER_LIMIT;
    println!("kernel workers: at most {most} at once, bound {bound}");
    assert!(most <= bound, "{most} kernel workers, more than {bound}");
}

/// In the child: a `block_on` thread's read already taken by the kernel into its own ring
/// when io_uring_enter starts being refused (the policy installed from another thread
/// meanwhile). Prints `DENIED ok` once that read resolved (it cannot be reaped: an
/// error) and later reads completed through the pool.
#[test]
fn child_enter_denied_in_flight() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let (file, ctx) = direct_on_uring(&std::path::Path::new(&dir).join("big"));
    let fd = file.as_raw_fd();
    let (deny_tx, deny_rx) = std::sync::mpsc::channel::<()>();
    let (denied_tx, denied_rx) = std::sync::mpsc::channel::<()>();
    let policy = std::thread::spawn(move || {
        deny_rx.recv().unwrap();
        util::deny_syscalls(&[libc::SYS_io_uring_enter, libc::SYS_io_uring_setup]);
        denied_tx.send(()).unwrap();
    });
    let (big, after) = ctx.block_on(async {
        let mut big = Box::pin(ctx.read(64 << 20, fd, 0));
        assert!(futures::poll!(big.as_mut()).is_pending());
        // One turn of block_on: the read goes to the kernel through this thread's ring.
        let mut turned = false;
        futures::future::poll_fn(|cx| {
            if std::mem::replace(&mut turned, true) {
                std::task::Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        })
        .await;
        deny_tx.send(()).unwrap();
        denied_rx.recv().unwrap();
        let big = big.await;
        let after = ctx.read(4096, fd, 4096).await;
        (big, after)
    });
    policy.join().unwrap();
    println!("\nBIG {:?}", big.as_ref().map(|b| b.len()));
    assert!(after.unwrap().len() == 4096);
    println!("DENIED ok");
}

#[test]
fn a_block_on_read_with_the_kernel_when_io_uring_enter_is_denied_resolves() {
    let _serial = serial();
    if !uring_here() {
        return;
    }
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    fs::write(d.path().join("big"), pattern(64 << 20, 2)).unwrap();
    let o = util::run_test_child(
        "child_enter_denied_in_flight",
        &[(CHILD, d.path().to_str().unwrap())],
        std::time::Duration::from_secs(60),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("DENIED ok"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
