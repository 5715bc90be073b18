//! fork() with caio in use: a child never submits to, reaps from or frees anything of its
//! parent's contexts, never waits on a lock a parent's thread held, and never loses what
//! it wrote on the process-wide context. Each case runs per backend in a child test
//! process, and forks from there, so a hang fails the test instead of stalling the suite.
#![cfg(target_os = "linux")]

mod util;

use std::{
    fs,
    os::unix::{fs::OpenOptionsExt, io::AsRawFd},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use caio::{Buffer, Context, File, OpenOptions};
use futures::AsyncWriteExt;
use util::{backends, block_on, in_forked_child, pattern, poll_once, run_test_child};

const CHILD: &str = "CAIO_FORK_CHILD";

/// The child's operations on an inherited context must fail at once, not after a wait.
const PROMPT: Duration = Duration::from_secs(2);

/// Runs the child test `case` on every backend; each prints `FORK ok` once its checks held.
fn on_every_backend(case: &str) {
    for i in backends() {
        let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let o = run_test_child(
            case,
            &[
                (CHILD, d.path().to_str().unwrap()),
                ("CAIO_IMPL", i.as_str()),
            ],
            Duration::from_secs(120),
        );
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && out.contains("FORK ok"),
            "{i}: {case} failed:\n{out}\n{err}"
        );
    }
}

/// Whether `e` is the error of an operation on a context made before fork().
fn is_fork_error(e: &std::io::Error) -> bool {
    e.to_string().contains("made before fork()")
}

// --- Operations in flight at the fork (uring: the child must not submit the parent's
// queued entry; thread: the child must not wait for workers it does not have).

#[test]
fn child_in_flight() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let path = Path::new(&dir).join("f");
    let len = 16 << 20;
    let data = pattern(len, 7);
    let ctx = Context::new().unwrap();
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let fd = f.as_raw_fd();
    let mut buf = Buffer::with_capacity(len);
    buf.extend_from_slice(&data);
    // Polled once: queued for the backend (on uring, waiting for its flush), or running.
    let mut write = ctx.write_at_from(buf, fd, 0);
    let mut read = ctx.read(4096, fd, len as u64);
    let early_write = poll_once(&mut write);
    let early_read = poll_once(&mut read);
    let code = in_forked_child(Duration::from_secs(20), || {
        let start = Instant::now();
        let (w, _) = block_on(&mut write);
        let r = block_on(&mut read);
        let prompt = start.elapsed() < PROMPT;
        match (early_write.is_some(), &w, early_read.is_some(), &r) {
            // Whatever was in flight at the fork fails with the fork error, at once.
            (false, Err(e), _, _) if !is_fork_error(e) => 2,
            (false, Ok(_), _, _) => 3,
            (_, _, false, Err(e)) if !is_fork_error(e) => 4,
            (_, _, false, Ok(_)) => 5,
            _ if !prompt => 6,
            _ => {
                // New operations on that context fail at once too.
                match block_on(ctx.read(10, fd, 0)) {
                    Err(e) if is_fork_error(&e) => 0,
                    _ => 7,
                }
            }
        }
    });
    println!("child exit: {code:?}");
    assert_eq!(code, Some(0), "the child");
    // The parent is unaffected: its operations complete once, with their results.
    let (w, _) = match early_write {
        Some(done) => done,
        None => block_on(write),
    };
    assert_eq!(w.unwrap(), len);
    let r = match early_read {
        Some(done) => done,
        None => block_on(read),
    };
    assert!(r.unwrap().len() <= 4096);
    assert_eq!(fs::read(&path).unwrap(), data);
    for k in 0..64u64 {
        let got = block_on(ctx.read(4096, fd, k * 4096)).unwrap();
        assert_eq!(got[..], data[k as usize * 4096..][..4096]);
    }
    block_on(ctx.wait_idle());
    println!("FORK ok");
}

#[test]
fn an_operation_in_flight_at_fork_fails_in_the_child_at_once_and_completes_in_the_parent() {
    on_every_backend("child_in_flight");
}

// --- Unaligned O_DIRECT reads on a file of the process-wide context, in a child.

#[test]
fn child_unaligned_direct() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let path = Path::new(&dir).join("f");
    let data = pattern(1 << 20, 9);
    fs::write(&path, &data).unwrap();
    let f = block_on(OpenOptions::new().read(true).direct(true).open(&path)).unwrap();
    assert_eq!(block_on(f.read_at(100, 1)).unwrap()[..], data[1..101]);
    let code = in_forked_child(Duration::from_secs(20), || {
        if f.context().is_forked() {
            return 2;
        }
        match block_on(f.read_at(100, 4097)) {
            Ok(b) if b[..] == data[4097..4197] => {}
            Ok(_) => return 3,
            Err(e) => {
                eprintln!("read_at: {e}");
                return 4;
            }
        }
        let (r, b) = block_on(f.read_at_into(Buffer::with_capacity(300), 12_345));
        if r.ok() != Some(300) || b[..] != data[12_345..12_645] {
            return 5;
        }
        let bufs = vec![Buffer::with_capacity(10), Buffer::with_capacity(20)];
        let (r, bufs) = block_on(f.read_vectored_at(bufs, 777));
        if r.ok() != Some(30) || bufs[0][..] != data[777..787] || bufs[1][..] != data[787..807] {
            return 6;
        }
        0
    });
    println!("child exit: {code:?}");
    assert_eq!(code, Some(0), "the child");
    assert_eq!(block_on(f.read_at(10, 3)).unwrap()[..], data[3..13]);
    println!("FORK ok");
}

#[test]
fn unaligned_direct_reads_in_a_child_work_as_aligned_ones() {
    on_every_backend("child_unaligned_direct");
}

// --- A Writer dropped in a child, on a file of the process-wide context.

#[test]
fn child_dropped_writer() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let len = 3 << 20;
    let data = pattern(len, 11);
    for round in 0..5 {
        let path = Path::new(&dir).join(format!("w{round}"));
        let f = block_on(File::create(&path)).unwrap();
        block_on(f.write_at(&b"x"[..], 0)).unwrap();
        let code = in_forked_child(Duration::from_secs(30), || {
            block_on(async {
                let mut w = f.writer();
                w.write_all(&data).await.unwrap();
                drop(w);
                Context::global().unwrap().wait_idle().await;
            });
            0
        });
        assert_eq!(code, Some(0), "round {round}: the child");
        let got = fs::read(&path).unwrap();
        assert_eq!(
            got.len(),
            len,
            "round {round}: the child's writes were lost"
        );
        assert!(
            got == data,
            "round {round}: the file differs from what was written"
        );
    }
    println!("FORK ok");
}

#[test]
fn a_writer_dropped_in_a_child_loses_nothing_once_the_child_waits_for_idleness() {
    on_every_backend("child_dropped_writer");
}

// --- fork() while another thread is inside Context::global() and the buffer cache.

#[test]
fn child_fork_beside_a_busy_thread() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let path = Path::new(&dir).join("f");
    fs::write(&path, pattern(5000, 1)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let c = Context::global().unwrap();
                drop(c);
                drop(Buffer::zeroed(8192));
                let _ = caio::selection();
            }
        })
    };
    let mut hung = 0;
    for _ in 0..30 {
        let code = in_forked_child(Duration::from_secs(5), || {
            let c = Context::global().unwrap();
            let b = Buffer::zeroed(8192);
            match block_on(caio::fs::read(&path)) {
                Ok(v) if v.len() == 5000 && !c.is_forked() && b.len() == 8192 => 0,
                _ => 2,
            }
        });
        match code {
            Some(0) => {}
            None => hung += 1,
            Some(c) => panic!("the child failed with {c}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    println!("hung children: {hung} of 30");
    assert_eq!(
        hung, 0,
        "children deadlocked on a lock held by the parent at fork()"
    );
    println!("FORK ok");
}

#[test]
fn fork_beside_a_thread_inside_context_global_never_deadlocks_the_child() {
    on_every_backend("child_fork_beside_a_busy_thread");
}
