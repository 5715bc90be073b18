//! Completions through tokio's reactor (the `tokio` feature, `linux`): every operation
//! completes, with its data, however the runtimes and threads that use one `Context` come
//! and go. Each case runs in a child process with a timeout: a lost completion is a hang.
//! (That the runtime's threads do the reaping is shown under strace in
//! `linux_async.rs`.)
#![cfg(all(feature = "tokio", target_os = "linux"))]

mod util;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use caio::{Buffer, Context, File, Implementation};

const CHILD: &str = "CAIO_REACTOR_TEST_CHILD";
const BLOCKS: u64 = 2048;

fn pattern_at(off: u64) -> u8 {
    (off / 4096 % 251) as u8
}

/// A file of `BLOCKS` 4 KiB blocks, each filled with its own byte.
fn data_file(dir: &Path) -> PathBuf {
    let path = dir.join("data");
    let mut v = Vec::with_capacity((BLOCKS * 4096) as usize);
    for b in 0..BLOCKS {
        v.extend(std::iter::repeat_n(pattern_at(b * 4096), 4096));
    }
    std::fs::write(&path, v).unwrap();
    path
}

fn linux() -> Context {
    Context::builder()
        .implementation(Implementation::Linux)
        .max_requests(64)
        .build()
        .unwrap()
}

fn uring() -> Context {
    Context::builder()
        .implementation(Implementation::Uring)
        .max_requests(64)
        .build()
        .unwrap()
}

async fn open(ctx: &Context, path: &Path) -> File {
    caio::OpenOptions::new()
        .read(true)
        .direct(true)
        .context(ctx.clone())
        .open(path)
        .await
        .unwrap()
}

/// Reads blocks `range` (each as `read_block` maps it) in `tasks` spawned tasks, each
/// taking every `tasks`-th, and waits for them all.
async fn read_in_tasks(file: &Arc<File>, tasks: u64, range: std::ops::Range<u64>) {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (f, range) = (Arc::clone(file), range.clone());
            tokio::spawn(async move {
                for k in range.skip(t as usize).step_by(tasks as usize) {
                    read_block(&f, k).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
}

/// Runs `work(file, t)` for `t` 0 and 1 in two tasks of a multi-thread runtime, each held
/// until both run, so that each is on a worker of its own; waits for both.
async fn on_two_workers<W, F>(file: &Arc<File>, work: W)
where
    W: Fn(Arc<File>, u64) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let both = Arc::new(std::sync::Barrier::new(2));
    let tasks: Vec<_> = (0..2u64)
        .map(|t| {
            let (both, run) = (Arc::clone(&both), work(Arc::clone(file), t));
            tokio::spawn(async move {
                both.wait();
                run.await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Reads block `k` and checks it.
async fn read_block(file: &File, k: u64) {
    let off = k * 7919 % BLOCKS * 4096;
    let (n, buf) = file.read_at_into(Buffer::with_capacity(4096), off).await;
    assert_eq!(n.unwrap(), 4096);
    assert!(buf.iter().all(|&b| b == pattern_at(off)), "data at {off}");
}

fn multi() -> tokio::runtime::Runtime {
    util::runtime(true)
}

fn current() -> tokio::runtime::Runtime {
    util::runtime(false)
}

/// Waits for the context to finish everything, at most 20 s, from a plain thread.
fn idle(ctx: &Context) {
    assert!(
        ctx.wait_idle_timeout(Duration::from_secs(20)),
        "operations left in flight"
    );
}

#[test]
fn child() {
    let Ok(case) = std::env::var(CHILD) else {
        return;
    };
    let path = PathBuf::from(std::env::var("CAIO_REACTOR_TEST_FILE").unwrap());
    // "uring_…" runs the case on io_uring, where each worker submits to a ring of its own.
    let (make, what): (fn() -> Context, &str) = match case.strip_prefix("uring_") {
        Some(what) => (uring, what),
        None => (linux, case.as_str()),
    };
    let ctx = make();
    match what {
        "migrate" => {
            // Futures polled once on one task (so their reads are in the kernel), then
            // awaited by other tasks, which the two workers run as they please.
            let rt = multi();
            rt.block_on(async {
                let file = Arc::new(open(&ctx, &path).await);
                let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                let f = Arc::clone(&file);
                let producer = tokio::spawn(async move {
                    for k in 0..512u64 {
                        let f = Arc::clone(&f);
                        let mut read = Box::pin(async move { read_block(&f, k).await });
                        // Started here, in flight when handed over.
                        let _ = futures::poll!(read.as_mut());
                        tx.send(read).await.unwrap();
                    }
                });
                let mut awaiting = Vec::new();
                while let Some(read) = rx.recv().await {
                    awaiting.push(tokio::spawn(read));
                }
                producer.await.unwrap();
                for t in awaiting {
                    t.await.unwrap();
                }
            });
        }
        "shutdown" => {
            // A runtime shut down with reads in flight: the context's own thread completes
            // them, and the context goes on working.
            let rt = multi();
            let file = Arc::new(rt.block_on(open(&ctx, &path)));
            for k in 0..64u64 {
                let f = Arc::clone(&file);
                rt.spawn(async move { read_block(&f, k).await });
            }
            std::thread::sleep(Duration::from_millis(1));
            rt.shutdown_timeout(Duration::ZERO);
            idle(&ctx);
            futures::executor::block_on(async {
                for k in 0..64 {
                    read_block(&file, k).await;
                }
            });
        }
        "two_runtimes" => {
            // A multi-thread and a current-thread runtime on one context at once.
            let ctx2 = ctx.clone();
            let path2 = path.clone();
            let other = std::thread::spawn(move || {
                current().block_on(async {
                    let file = Arc::new(open(&ctx2, &path2).await);
                    read_in_tasks(&file, 8, 0..800).await;
                })
            });
            multi().block_on(async {
                let file = Arc::new(open(&ctx, &path).await);
                read_in_tasks(&file, 8, 1000..1800).await;
            });
            other.join().unwrap();
        }
        "plain_thread" => {
            // A runtime and a plain thread (futures' executor) on one context at once.
            let ctx2 = ctx.clone();
            let path2 = path.clone();
            let plain = std::thread::spawn(move || {
                futures::executor::block_on(async {
                    let file = open(&ctx2, &path2).await;
                    for k in 0..600 {
                        read_block(&file, k).await;
                    }
                })
            });
            current().block_on(async {
                let file = Arc::new(open(&ctx, &path).await);
                read_in_tasks(&file, 4, 500..1100).await;
            });
            plain.join().unwrap();
        }
        "cancel" => {
            // Futures dropped with their reads in the kernel: the buffers stay with the
            // requests until the kernel is done, the context goes idle, and later reads
            // see their own data.
            let rt = current();
            rt.block_on(async {
                let file = Arc::new(open(&ctx, &path).await);
                for round in 0..20u64 {
                    let mut reads: Vec<_> = (0..32u64)
                        .map(|k| {
                            let f = Arc::clone(&file);
                            Box::pin(async move { read_block(&f, round * 32 + k).await })
                        })
                        .collect();
                    for r in &mut reads {
                        let _ = futures::poll!(r.as_mut());
                    }
                    drop(reads);
                    read_block(&file, round).await;
                }
            });
            idle(&ctx);
        }
        "contexts_come_and_go" => {
            // Contexts made and dropped inside one runtime, whose tasks outlive them: a
            // new context may reuse a dropped one's kernel context, which the old task
            // must never reap from.
            let rt = multi();
            rt.block_on(async {
                for round in 0..30u64 {
                    let ctx = make();
                    let file = Arc::new(open(&ctx, &path).await);
                    read_in_tasks(&file, 4, round * 64..(round + 1) * 64).await;
                    drop(file);
                    ctx.wait_idle().await;
                }
            });
        }
        "lanes" => {
            // Two tasks, each held on a worker of its own until both are there, then each
            // reading: both workers submit.
            let rt = multi();
            rt.block_on(async {
                let file = Arc::new(open(&ctx, &path).await);
                on_two_workers(&file, |file, t| async move {
                    for k in 0..256 {
                        read_block(&file, t * 256 + k).await;
                    }
                })
                .await;
            });
        }
        "exit" => {
            // The rings of a runtime's threads are closed once the threads exit (the
            // runtime runs on a thread of its own, which exits with its workers).
            let before = uring_fds();
            let (ctx2, path2) = (ctx.clone(), path.clone());
            let during = std::thread::spawn(move || {
                let rt = multi();
                rt.block_on(async {
                    let file = Arc::new(open(&ctx2, &path2).await);
                    on_two_workers(&file, |file, t| async move {
                        read_in_tasks(&file, 4, t * 100..t * 100 + 100).await;
                    })
                    .await;
                });
                uring_fds()
            })
            .join()
            .unwrap();
            assert!(
                during >= before + 2,
                "each worker that submitted has a ring: {before} rings before, {during} after"
            );
            idle(&ctx);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while uring_fds() > before && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(
                uring_fds(),
                before,
                "the rings of the exited workers are closed"
            );
            // And the context goes on, on the shared ring.
            futures::executor::block_on(async {
                let file = open(&ctx, &path).await;
                for k in 0..64 {
                    read_block(&file, k).await;
                }
            });
        }
        "tokio" => {
            // Eight tasks reading in turn on the current-thread runtime.
            current().block_on(async {
                let file = Arc::new(open(&ctx, &path).await);
                read_in_tasks(&file, 8, 0..512).await;
            });
        }
        "low_depth_wakes" => {
            // Four tasks, each reading one block at a time: the reads a reap makes ready
            // go to the kernel from the last of them to queue, with no wake of a future
            // to send them, so a task is woken about once per read (its completion).
            let wakes = Arc::new(AtomicUsize::new(0));
            let reads = 4 * 256;
            for rt in [current(), multi()] {
                wakes.store(0, Ordering::Relaxed);
                rt.block_on(async {
                    let file = Arc::new(open(&ctx, &path).await);
                    let tasks: Vec<_> = (0..4u64)
                        .map(|t| {
                            let f = Arc::clone(&file);
                            tokio::spawn(CountWakes::new(Arc::clone(&wakes), async move {
                                for k in (t * 256)..(t + 1) * 256 {
                                    read_block(&f, k).await;
                                }
                            }))
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                let per_read = wakes.load(Ordering::Relaxed) as f64 / reads as f64;
                println!("{per_read:.2} wakes per read");
                assert!(
                    per_read < 1.5,
                    "{per_read:.2} wakes per read: a future is woken to send its read"
                );
            }
        }
        other => panic!("no case {other}"),
    }
    idle(&ctx);
    println!("CHILD OK {case}");
}

/// A future that counts the wakes of `fut`'s task.
struct CountWakes<F> {
    fut: std::pin::Pin<Box<F>>,
    waker: Arc<Counting>,
}

struct Counting {
    task: std::sync::Mutex<Option<std::task::Waker>>,
    wakes: Arc<AtomicUsize>,
}

impl std::task::Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = &*self.task.lock().unwrap() {
            w.wake_by_ref();
        }
    }
}

impl<F: std::future::Future> CountWakes<F> {
    fn new(wakes: Arc<AtomicUsize>, fut: F) -> Self {
        CountWakes {
            fut: Box::pin(fut),
            waker: Arc::new(Counting {
                task: std::sync::Mutex::new(None),
                wakes,
            }),
        }
    }
}

impl<F: std::future::Future> std::future::Future for CountWakes<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        *self.waker.task.lock().unwrap() = Some(cx.waker().clone());
        let waker = std::task::Waker::from(Arc::clone(&self.waker));
        self.fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
    }
}

/// The io_uring instances the process has open.
fn uring_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy() == "anon_inode:[io_uring]")
        .count()
}

fn run(case: &str) {
    if !Implementation::Linux.is_available() {
        eprintln!("SKIP: kernel AIO is not available here");
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = data_file(dir.path());
    let out = util::run_test_child(
        "child",
        &[
            (CHILD, case),
            ("CAIO_REACTOR_TEST_FILE", path.to_str().unwrap()),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("CHILD OK {case}")),
        "{case}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each case on kernel AIO, and on io_uring where it is available.
fn run_both(case: &str) {
    run(case);
    if Implementation::Uring.is_available() {
        run(&format!("uring_{case}"));
    } else {
        eprintln!("SKIP (uring): io_uring is not available here");
    }
}

#[test]
fn under_tokio_at_low_depth_a_read_needs_no_wake_to_be_sent() {
    run_both("low_depth_wakes");
}

#[test]
fn tasks_that_migrate_between_workers_with_reads_in_flight_complete() {
    run_both("migrate");
}

#[test]
fn a_runtime_shut_down_with_reads_in_flight_leaves_nothing_lost_or_stuck() {
    run_both("shutdown");
}

#[test]
fn two_runtimes_sharing_one_context_both_complete() {
    run_both("two_runtimes");
}

#[test]
fn a_runtime_and_a_plain_thread_on_one_context_both_complete() {
    run_both("plain_thread");
}

#[test]
fn contexts_dropped_while_their_runtime_lives_never_touch_their_successors() {
    run_both("contexts_come_and_go");
}

#[test]
fn dropped_futures_under_the_reactor_leave_the_context_idle_and_later_reads_right() {
    run_both("cancel");
}

/// On `uring`, completions of operations sent from a runtime's threads are reaped by
/// those threads, woken by the runtime's reactor: the reaper thread no longer takes the
/// ring's eventfd count for them (its blocking `read` of it, under strace).
#[test]
fn under_tokio_uring_completions_are_reaped_by_the_runtime_not_the_reaper() {
    let Some(trace) = trace_uring_child("uring_tokio", "io_uring_register,read", false) else {
        return;
    };
    // The eventfd the context registers with its ring.
    let efd: String = trace
        .lines()
        .filter(|l| l.contains("IORING_REGISTER_EVENTFD"))
        .filter_map(|l| {
            l.split_once("IORING_REGISTER_EVENTFD, [")?
                .1
                .split_once(']')
        })
        .map(|(fd, _)| fd.to_string())
        .next_back()
        .expect("the ring's eventfd is registered");
    let taken = trace
        .lines()
        .filter(|l| l.contains(&format!("read({efd}, ")) && l.trim_end().ends_with("= 8"))
        .count();
    println!("uring under tokio: the eventfd {efd} was read {taken} times for 512 reads");
    // The reaper is waiting on it already when the first reads are sent, and takes that
    // signal; once the runtime is gone it waits on it again, and takes the count the
    // runtime's reaps left, then the context's own signal at its end: three at most.
    assert!(
        taken <= 3,
        "the reaper thread took the ring's eventfd {taken} times"
    );
}

/// Runs the `case` child on a file of its own under `strace -f`, tracing `calls` (and
/// stopping the child at those alone with `seccomp`); the trace, or `None` (said) where
/// io_uring or strace is missing.
fn trace_uring_child(case: &str, calls: &str, seccomp: bool) -> Option<String> {
    if !Implementation::Uring.is_available() {
        eprintln!("SKIP: io_uring is not available here");
        return None;
    }
    if !util::has_strace() {
        return None;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = data_file(dir.path());
    let trace = dir.path().join("strace");
    let calls = format!("trace={calls}");
    let mut strace = vec![
        "strace",
        "-f",
        "-qq",
        "-o",
        trace.to_str().unwrap(),
        "-e",
        &calls,
    ];
    if seccomp {
        strace.push("--seccomp-bpf");
    }
    let mut cmd = util::test_command("child", &strace);
    cmd.env(CHILD, case).env("CAIO_REACTOR_TEST_FILE", &path);
    let out = util::output_within(cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read_to_string(&trace).unwrap())
}

/// On `uring`, each worker of a runtime submits to a ring of its own (`SINGLE_ISSUER`),
/// which no other thread enters.
#[test]
fn under_tokio_each_uring_worker_submits_to_a_ring_of_its_own() {
    // Only these calls stop the child: the rest of it runs as it would.
    let Some(trace) = trace_uring_child("uring_lanes", "io_uring_setup,io_uring_enter", true)
    else {
        return;
    };
    // IORING_SETUP_SINGLE_ISSUER, which older strace shows as a number.
    let one_issuer = |call: &str| {
        let flags = call
            .split_once("flags=")
            .map_or("", |(_, f)| f.split(',').next().unwrap_or(""));
        flags.split('|').any(|f| {
            f == "IORING_SETUP_SINGLE_ISSUER"
                || f.strip_prefix("0x")
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .is_some_and(|v| v & 0x1000 != 0)
        })
    };
    // Rings made with one issuer, by descriptor.
    let mut single = std::collections::HashSet::new();
    // Who entered each ring with entries to submit, and how many entries.
    let mut entered: std::collections::HashMap<String, (std::collections::HashSet<u32>, usize)> =
        Default::default();
    for (tid, call) in util::strace_calls(&trace) {
        let call = call.as_str();
        let ret = call.rsplit_once("= ").map(|(_, r)| r.trim().to_string());
        if call.starts_with("io_uring_setup(") && one_issuer(call) {
            single.extend(ret);
        } else if let Some(args) = call.strip_prefix("io_uring_enter(") {
            let mut a = args.split(", ");
            let (Some(fd), Some(n)) = (a.next(), a.next().and_then(|n| n.parse::<usize>().ok()))
            else {
                continue;
            };
            if n > 0 {
                let e = entered.entry(fd.to_string()).or_default();
                e.0.insert(tid);
                e.1 += n;
            }
        }
    }
    let lanes: Vec<_> = entered
        .iter()
        .filter(|(fd, _)| single.contains(*fd))
        .collect();
    let in_lanes: usize = lanes.iter().map(|(_, (_, n))| n).sum();
    let total: usize = entered.values().map(|(_, n)| n).sum();
    println!(
        "rings entered with submissions: {:?}; one-issuer rings: {single:?}; {in_lanes} of \
         {total} entries went to them",
        entered
    );
    assert!(
        lanes.len() >= 2,
        "each of the two workers submits to a one-issuer ring of its own: {entered:?}"
    );
    for (fd, (tids, _)) in &lanes {
        assert_eq!(tids.len(), 1, "ring {fd} entered by threads {tids:?}");
    }
    let owners: std::collections::HashSet<_> = lanes.iter().flat_map(|(_, (t, _))| t).collect();
    assert_eq!(owners.len(), lanes.len(), "one ring per thread: {lanes:?}");
}

/// On `uring`, the rings of a runtime's workers are closed once they exit, and the context
/// goes on.
#[test]
fn the_rings_of_workers_that_exit_are_closed() {
    if !Implementation::Uring.is_available() {
        eprintln!("SKIP: io_uring is not available here");
        return;
    }
    run("uring_exit");
}
