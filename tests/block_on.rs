//! `Context::block_on`, the executor whose thread waits for its own completions: it runs
//! any future on every backend, a wake from another thread ends its sleep, other threads'
//! operations on the same context keep completing whatever it does, and nesting, a
//! second driver, a panic and dropped futures leave the context working.
//!
//! Each wait that would hang is bounded (`within`), so that a lost wake fails the test
//! instead of hanging it. The bounds are liveness limits with a wide margin, not timings.
// Unix: these tests use descriptors, fork, signals or Unix permissions; the Windows
// suites are conformance, files, paths and copy (run under wine in CI).
#![cfg(unix)]

mod util;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

use caio::{Buffer, Context, File};
use futures::{channel::oneshot, future, stream::FuturesUnordered, FutureExt, StreamExt};
use util::{backends, ctx, open_rw, pattern, Scratch};

const LEN: usize = 1 << 20;

/// Runs `f` on a thread of its own; fails if it has not returned after `secs` seconds.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|e| panic!("{what}: not done after {secs} s ({e})"))
}

/// A 1 MiB O_DIRECT file of `pattern(LEN, seed)` on `ctx`.
fn data(ctx: &Context, seed: u64) -> (Scratch, File) {
    let s = Scratch::new();
    std::fs::write(&s.path, pattern(LEN, seed)).unwrap();
    let f = open_rw(ctx, &s.path, true);
    (s, f)
}

/// `n` 4 KiB reads at scattered offsets, all at once, each checked against the pattern.
async fn check_reads(f: &File, seed: u64, n: usize) {
    let want = pattern(LEN, seed);
    let mut reads: FuturesUnordered<_> = (0..n)
        .map(|k| {
            let off = (k * 7919) % (LEN / 4096) * 4096;
            f.read_at_into(Buffer::with_capacity(4096), off as u64)
                .map(move |(r, b)| (off, r, b))
        })
        .collect();
    while let Some((off, r, b)) = reads.next().await {
        assert_eq!(r.unwrap(), 4096, "read at {off}");
        assert!(b[..] == want[off..off + 4096], "data at {off}");
    }
}

#[test]
fn block_on_reads_and_writes_on_every_backend() {
    for i in backends() {
        let ctx = ctx(i);
        let (_s, f) = data(&ctx, 1);
        within(30, &format!("{i}"), move || {
            ctx.block_on(async {
                check_reads(&f, 1, 512).await;
                // Writes, then the same reads of what was written.
                let new = pattern(LEN, 2);
                let mut writes: FuturesUnordered<_> = new
                    .chunks(64 << 10)
                    .enumerate()
                    .map(|(k, c)| f.write_at_from(Buffer::from(c), (k << 16) as u64))
                    .collect();
                while let Some((r, _)) = writes.next().await {
                    assert_eq!(r.unwrap(), 64 << 10, "{i}");
                }
                check_reads(&f, 2, 512).await;
                f.close().await.unwrap();
            });
        });
    }
}

/// 200 round trips with another thread. Each wake comes while the thread in `block_on`
/// sleeps; without the wake-up each would wait out the 100 ms after which it looks again
/// by itself (20 s in all).
#[test]
fn a_wake_from_another_thread_ends_the_sleep() {
    for i in backends() {
        let ctx = ctx(i);
        let (_s, f) = data(&ctx, 3);
        within(10, &format!("{i}: 200 wakes"), move || {
            let (to_helper, requests) = mpsc::channel::<oneshot::Sender<usize>>();
            let helper = thread::spawn(move || {
                for (k, reply) in requests.into_iter().enumerate() {
                    thread::sleep(Duration::from_micros(200));
                    let _ = reply.send(k);
                }
            });
            ctx.block_on(async {
                for k in 0..200 {
                    let (tx, rx) = oneshot::channel();
                    to_helper.send(tx).unwrap();
                    // A read in flight too, on the odd trips: the sleep is then the kernel's.
                    if k % 2 == 1 {
                        check_reads(&f, 3, 1).await;
                    }
                    assert_eq!(rx.await.unwrap(), k);
                }
            });
            drop(to_helper);
            helper.join().unwrap();
        });
    }
}

/// While the thread in `block_on` runs user code (here: it blocks in a plain sleep, the
/// worst a future can do), another thread's operations on the same context complete.
/// While it sleeps waiting, it reaps them itself.
#[test]
fn other_threads_operations_complete_whatever_the_driving_thread_does() {
    for i in backends() {
        let ctx = ctx(i);
        let (_s, f) = data(&ctx, 4);
        let busy_done = Arc::new(AtomicBool::new(false));
        let driver = {
            let (ctx, f, busy_done) = (ctx.clone(), f.clone(), Arc::clone(&busy_done));
            thread::spawn(move || {
                ctx.block_on(async {
                    check_reads(&f, 4, 8).await;
                    // User code that never yields, until the other thread is done.
                    let start = std::time::Instant::now();
                    while !busy_done.load(Ordering::Acquire) {
                        assert!(
                            start.elapsed() < Duration::from_secs(20),
                            "{i}: the other thread's reads never completed"
                        );
                        thread::sleep(Duration::from_millis(5));
                    }
                })
            })
        };
        let other = f.clone();
        within(20, &format!("{i}: reads beside a busy driver"), move || {
            futures::executor::block_on(check_reads(&other, 4, 256));
        });
        busy_done.store(true, Ordering::Release);
        driver.join().unwrap();

        // Now the driving thread sleeps waiting for a message; the other's reads complete.
        let (tx, rx) = oneshot::channel::<()>();
        let driver = {
            let ctx = ctx.clone();
            thread::spawn(move || ctx.block_on(rx).unwrap())
        };
        within(
            20,
            &format!("{i}: reads beside a sleeping driver"),
            move || {
                futures::executor::block_on(check_reads(&f, 4, 256));
            },
        );
        tx.send(()).unwrap();
        within(10, &format!("{i}: the sleeping driver wakes"), move || {
            driver.join().unwrap()
        });
    }
}

/// Four threads in `block_on` on one context (one drives, the others park), a nested
/// `block_on`, and a panic inside one: every read completes, and the context works after.
#[test]
fn several_drivers_nesting_and_a_panic_leave_the_context_working() {
    for i in backends() {
        let ctx = ctx(i);
        let (_s, f) = data(&ctx, 5);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (ctx, f) = (ctx.clone(), f.clone());
                thread::spawn(move || ctx.block_on(check_reads(&f, 5, 512)))
            })
            .collect();
        within(30, &format!("{i}: four threads"), move || {
            for t in threads {
                t.join().unwrap();
            }
        });
        let (c, g) = (ctx.clone(), f.clone());
        within(20, &format!("{i}: nested"), move || {
            c.block_on(async {
                check_reads(&g, 5, 16).await;
                c.block_on(check_reads(&g, 5, 16));
                check_reads(&g, 5, 16).await;
            })
        });
        let (c, g) = (ctx.clone(), f.clone());
        let panicked = thread::spawn(move || {
            c.block_on(async {
                check_reads(&g, 5, 16).await;
                panic!("a task panics");
            })
        })
        .join();
        assert!(panicked.is_err(), "{i}");
        let (c, g) = (ctx.clone(), f.clone());
        within(20, &format!("{i}: after the panic"), move || {
            futures::executor::block_on(check_reads(&g, 5, 64));
            c.block_on(check_reads(&g, 5, 64));
        });
    }
}

/// Futures dropped mid-flight under `block_on` are reaped like any others: the context
/// goes idle, and what came after read the right data.
#[test]
fn dropped_operations_under_block_on_are_reaped() {
    for i in backends() {
        let ctx = ctx(i);
        let (_s, f) = data(&ctx, 6);
        let c = ctx.clone();
        within(20, &format!("{i}"), move || {
            c.block_on(async {
                let mut started: Vec<_> = (0..64)
                    .map(|k| Box::pin(f.read_at_into(Buffer::with_capacity(4096), k * 4096)))
                    .collect();
                for r in &mut started {
                    let _ = futures::poll!(r.as_mut());
                }
                drop(started);
                check_reads(&f, 6, 64).await;
            });
        });
        assert!(
            ctx.wait_idle_timeout(Duration::from_secs(10)),
            "{i}: {} operations never completed",
            ctx.in_flight()
        );
    }
}

/// In a child after `fork()`, `block_on` on the parent's context neither touches its
/// kernel context nor hangs: the operation fails at once, saying why.
#[test]
fn block_on_in_a_forked_child_fails_cleanly() {
    use std::os::unix::io::AsRawFd;
    for i in backends() {
        let ctx = ctx(i);
        let s = Scratch::new();
        std::fs::write(&s.path, pattern(4096, 7)).unwrap();
        ctx.block_on(ctx.read(10, s.file.as_raw_fd(), 0)).unwrap();
        // SAFETY: the child only runs caio and std code, then leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let r = ctx.block_on(ctx.read(10, s.file.as_raw_fd(), 0));
            let mut code = match r {
                Err(e) if e.to_string().contains("fork") => 0,
                _ => 2,
            };
            // A future that waits: the thread would sleep on the parent's context.
            let (tx, rx) = oneshot::channel();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                let _ = tx.send(7);
            });
            if ctx.block_on(rx) != Ok(7) {
                code = 3;
            }
            // SAFETY: leaves the child without running the parent's atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let status = within(10, &format!("{i}: the child"), move || {
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            status
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{i}: child status {status}"
        );
    }
}

/// A wake that reaches the eventfd together with a completion (here: the close of a
/// dropped file) while the completion thread still waits on it, as a drive starts, must
/// still end the driving thread's sleep. 100 rounds of: a thread starts driving and
/// sleeps, a file is dropped, and the wake is sent at once.
#[test]
fn a_wake_beside_a_completion_at_the_start_of_a_drive_is_not_lost() {
    for i in backends() {
        let ctx = ctx(i);
        let s = Scratch::new();
        std::fs::write(&s.path, pattern(4096, 8)).unwrap();
        within(60, &format!("{i}: 100 drives"), move || {
            for round in 0..100 {
                let f = open_rw(&ctx, &s.path, false);
                let (tx, rx) = oneshot::channel::<()>();
                let driver = {
                    let ctx = ctx.clone();
                    thread::spawn(move || ctx.block_on(rx))
                };
                thread::sleep(Duration::from_micros(200 + round * 10));
                drop(f);
                tx.send(()).unwrap();
                driver.join().unwrap().unwrap();
            }
        });
    }
}

/// Futures that leave `block_on` with their reads in flight (started, or only queued)
/// complete afterwards on another thread and executor, with the right data: `block_on`
/// finishes what its thread started before it returns (on uring those reads are in a ring
/// only that thread may enter).
#[test]
fn reads_started_under_block_on_complete_after_it_returns() {
    for i in backends() {
        let ctx = ctx(i);
        let (_s, f) = data(&ctx, 9);
        let want = pattern(LEN, 9);
        let started = ctx.block_on(async {
            let mut reads: Vec<_> = (0..64u64)
                .map(|k| {
                    Box::pin(future::maybe_done(
                        f.read_at_into(Buffer::with_capacity(4096), k * 8192),
                    ))
                })
                .collect();
            for r in &mut reads {
                // One poll: the read starts (or is queued, or is done), and is handed out.
                let _ = futures::poll!(r.as_mut());
            }
            reads
        });
        within(
            20,
            &format!("{i}: reads handed out of block_on"),
            move || {
                for (k, mut r) in started.into_iter().enumerate() {
                    futures::executor::block_on(r.as_mut());
                    let (n, b) = r.as_mut().take_output().expect("done once");
                    assert_eq!(n.unwrap(), 4096, "{i}: read {k}");
                    let off = k * 8192;
                    assert!(b[..] == want[off..off + 4096], "{i}: data of read {k}");
                }
            },
        );
    }
}

/// A read started under `block_on` and then awaited inside a nested `block_on`, of the same
/// context and of another, completes with the right data: the enclosing drive pauses (on
/// uring the read is in a ring only the enclosing drive would otherwise complete).
#[test]
fn a_read_started_outside_completes_inside_a_nested_block_on() {
    for i in backends() {
        let (a, b) = (ctx(i), ctx(i));
        let (_s, f) = data(&a, 10);
        let want = pattern(LEN, 10);
        within(20, &format!("{i}: nested block_on"), move || {
            for (k, inner) in [&a, &b].into_iter().enumerate() {
                a.block_on(async {
                    let off = 8192 * (k + 1);
                    let mut r = Box::pin(future::maybe_done(
                        f.read_at_into(Buffer::with_capacity(4096), off as u64),
                    ));
                    let _ = futures::poll!(r.as_mut());
                    inner.block_on(r.as_mut());
                    let (n, b) = r.as_mut().take_output().expect("done once");
                    assert_eq!(n.unwrap(), 4096, "{i}, nested context {k}");
                    assert!(b[..] == want[off..off + 4096], "{i}: data");
                    // The enclosing drive goes on after the nested one.
                    check_reads(&f, 10, 64).await;
                });
            }
        });
    }
}
