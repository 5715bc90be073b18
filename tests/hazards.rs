//! Hazards found by an independent probe and a first-time user, each with the behaviour
//! that must hold now: a dropped writer's data reaches the file when the program waits
//! for the context; a dropped operation never writes to a reused descriptor; a forked
//! child never hangs on its parent's context; selection tells the truth about
//! `fs.aio-max-nr`; context churn keeps `aio-nr` and threads low; a half-denied kernel
//! interface never hangs an operation.
#![cfg(target_os = "linux")]

mod util;

use std::{
    fs,
    io::Write,
    os::unix::io::{AsRawFd, FromRawFd},
    path::Path,
    process::Output,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use caio::{Context, File, Implementation, OpenOptions};
use futures::{AsyncWriteExt, FutureExt};
use util::{backends, block_on, dir, is_root, pattern, run_test_child as child, threads};

const CHILD: &str = "CAIO_HAZARDS_CHILD";

/// The tests here use kernel AIO, watch the system-wide `aio-nr` and this process's
/// threads, or lower `fs.aio-max-nr`: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// --- 1. A dropped Writer's data reaches the file once the program waits for idleness.

#[test]
fn child_drop_writer_and_exit() {
    let Ok(path) = std::env::var(CHILD) else {
        return;
    };
    block_on(async {
        let f = File::create(&path).await.unwrap();
        let mut w = f.writer();
        w.write_all(&[b'z'; 1000]).await.unwrap();
        drop(w);
        drop(f);
    });
    // The pattern caio::fs documents: wait for the context before the program ends.
    assert!(Context::global()
        .unwrap()
        .wait_idle_timeout(Duration::from_secs(10)));
}

#[test]
fn a_dropped_writer_loses_nothing_when_the_program_waits_for_the_context() {
    let _serial = serial();
    for i in backends() {
        for run in 0..10 {
            let d = dir();
            let p = d.path().join("out");
            let o = child(
                "child_drop_writer_and_exit",
                &[(CHILD, p.to_str().unwrap()), ("CAIO_IMPL", i.as_str())],
                Duration::from_secs(20),
            );
            assert!(o.status.success(), "{i}: {}", stdout(&o));
            assert_eq!(
                fs::read(&p).unwrap(),
                vec![b'z'; 1000],
                "{i}: run {run} lost the dropped writer's data"
            );
        }
    }
}

#[test]
fn wait_idle_waits_for_abandoned_operations_and_closes() {
    let _serial = serial();
    for i in backends() {
        if i == Implementation::Blocking {
            continue; // nothing is ever in flight after a poll returns
        }
        let d = dir();
        let fifo = d.path().join("fifo");
        util::mkfifo(&fifo);
        let ctx = util::ctx(i);
        // An open that waits for a writer, polled once and dropped: still in flight.
        let mut open = Box::pin(
            OpenOptions::new()
                .read(true)
                .context(ctx.clone())
                .open(&fifo),
        );
        assert!(open.as_mut().now_or_never().is_none());
        // Taken up by a worker (the linux backend starts its pool on first use): started
        // is started, dropped or not.
        std::thread::sleep(Duration::from_millis(100));
        drop(open);
        assert_eq!(ctx.in_flight(), 1, "{i}");
        assert!(!ctx.wait_idle_timeout(Duration::from_millis(50)), "{i}");
        let waiter = std::thread::spawn({
            let ctx = ctx.clone();
            move || block_on(ctx.wait_idle())
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "{i}: idle while an open is in flight"
        );
        // A writer comes: the open completes, its descriptor is closed, and then idle.
        let w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        waiter.join().unwrap();
        assert_eq!(ctx.in_flight(), 0, "{i}");
        drop(w);
    }
}

// --- 2. A dropped operation that has not started never starts.

/// One worker, busy on a FIFO open until a writer comes; behind it, a write of "EVIL" to
/// descriptor A is polled once and dropped; A is closed and another file reopens its
/// number. Once the worker is free, the other file must not have received "EVIL".
#[test]
fn a_dropped_operation_never_writes_to_a_reused_descriptor() {
    let _serial = serial();
    for i in [Implementation::Thread, Implementation::Linux] {
        if !i.is_available() {
            eprintln!("SKIP {i}: not available");
            continue;
        }
        let d = dir();
        let fifo = d.path().join("fifo");
        util::mkfifo(&fifo);
        let ctx = Context::builder()
            .implementation(i)
            .threads(1)
            .build()
            .unwrap();
        // The linux backend runs buffered writes and opens on its pool of one thread.
        let mut blocker = Box::pin(
            OpenOptions::new()
                .read(true)
                .context(ctx.clone())
                .open(&fifo),
        );
        assert!(blocker.as_mut().now_or_never().is_none());
        let a = fs::File::create(d.path().join("a")).unwrap();
        let fd_a = a.as_raw_fd();
        let mut evil = Box::pin(ctx.write("EVIL", fd_a, 0));
        assert!(evil.as_mut().now_or_never().is_none(), "{i}: queued");
        drop(evil);
        let other = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(d.path().join("b"))
            .unwrap();
        // Close A and give its number to the other file in one step: with the lowest free
        // number, a thread of another test could take the number first.
        // SAFETY: both descriptors are open and owned here; dup2 closes A's file and makes
        // fd_a refer to b. A's `File` is forgotten so that it does not close the number again.
        let r = unsafe { libc::dup2(other.as_raw_fd(), fd_a) };
        assert_eq!(r, fd_a, "{i}: dup2: {}", std::io::Error::last_os_error());
        std::mem::forget(a);
        drop(other);
        // SAFETY: fd_a is open (it was just made a copy of b's descriptor) and nothing else
        // owns it.
        let _b = unsafe { fs::File::from_raw_fd(fd_a) };
        let w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let f = block_on(blocker).unwrap();
        block_on(f.close()).unwrap();
        assert!(ctx.wait_idle_timeout(Duration::from_secs(10)), "{i}");
        drop(w);
        assert_eq!(
            fs::read(d.path().join("b")).unwrap(),
            b"",
            "{i}: b got EVIL"
        );
        assert_eq!(fs::read(d.path().join("a")).unwrap(), b"", "{i}");
    }
}

// --- 3. fork: an inherited context fails at once; the global one is rebuilt.

#[test]
fn child_fork() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let p = Path::new(&dir).join("f");
    fs::write(&p, pattern(100_000, 3)).unwrap();
    // Used before the fork: the global context (through File) and an explicit one.
    let f = block_on(File::open(&p)).unwrap();
    assert_eq!(block_on(f.read_at(10, 0)).unwrap().len(), 10);
    let own = Context::new().unwrap();
    let probe = fs::File::open(&p).unwrap();
    block_on(own.read(10, probe.as_raw_fd(), 0)).unwrap();
    // SAFETY: the child only runs caio and std code, then leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let code = (|| {
            let start = Instant::now();
            let e = block_on(own.read(10, probe.as_raw_fd(), 0)).unwrap_err();
            if !e.to_string().contains("fork") || start.elapsed() > Duration::from_secs(1) {
                return 2;
            }
            // The file on the global context carries on, on the child's new one.
            let data = block_on(f.read_at(100, 1000));
            if data
                .map(|b| b[..] != pattern(100_000, 3)[1000..1100])
                .unwrap_or(true)
            {
                return 3;
            }
            let g = Context::global().unwrap();
            if g.is_forked() || block_on(caio::fs::read(&p)).map(|v| v.len()).ok() != Some(100_000)
            {
                return 4;
            }
            0
        })();
        // SAFETY: leaves the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    let start = Instant::now();
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "\nFORKED exit={}",
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    );
    // The parent's contexts still work.
    assert_eq!(block_on(f.read_at(10, 0)).unwrap().len(), 10);
    block_on(own.read(10, probe.as_raw_fd(), 0)).unwrap();
}

#[test]
fn a_forked_child_gets_a_clear_error_or_a_fresh_context_never_a_hang() {
    let _serial = serial();
    for i in backends() {
        let d = dir();
        let o = child(
            "child_fork",
            &[
                (CHILD, d.path().to_str().unwrap()),
                ("CAIO_IMPL", i.as_str()),
            ],
            Duration::from_secs(30),
        );
        let out = stdout(&o);
        assert!(o.status.success(), "{i}: {out}");
        assert!(out.contains("FORKED exit=0"), "{i}: {out}");
    }
}

// --- 4. Selection tells the truth.

#[test]
fn child_selection() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let s = caio::selection();
    let ctx = Context::new().unwrap();
    println!(
        "\nSELECTION {} CONTEXT {} WARNINGS {}",
        s.implementation(),
        ctx.implementation(),
        s.warnings().join(" | ")
    );
}

/// Restores `fs.aio-max-nr` when dropped, even if the test panics.
struct RestoreMaxNr(String);

impl Drop for RestoreMaxNr {
    fn drop(&mut self) {
        fs::write("/proc/sys/fs/aio-max-nr", &self.0).expect("restore fs.aio-max-nr");
    }
}

#[test]
fn selection_names_what_the_default_context_really_uses() {
    let _serial = serial();
    if !is_root() || !Implementation::Linux.is_available() {
        eprintln!("SKIP: lowering fs.aio-max-nr needs root and kernel AIO");
        return;
    }
    let old = fs::read_to_string("/proc/sys/fs/aio-max-nr").unwrap();
    let _restore = RestoreMaxNr(old.trim().to_string());
    // Wait for idle contexts (ours, kept for reuse) to go, then leave room for 100 events:
    // io_setup(1) works, a default context (257 events) does not.
    std::thread::sleep(Duration::from_millis(4500));
    let nr: u64 = fs::read_to_string("/proc/sys/fs/aio-nr")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    fs::write("/proc/sys/fs/aio-max-nr", (nr + 100).to_string()).unwrap();
    let o = child("child_selection", &[(CHILD, "1")], Duration::from_secs(20));
    let out = stdout(&o);
    assert!(o.status.success(), "{out}");
    let next = util::first_without_linux();
    assert!(
        out.contains(&format!("SELECTION {next} CONTEXT {next}")),
        "selection and the context agree: {out}"
    );
    assert!(
        out.contains("needs 257 AIO events") && out.contains("leaves 100"),
        "the warning says why: {out}"
    );
    // An explicit context that cannot fit says so truthfully.
    let e = Context::builder()
        .implementation(Implementation::Linux)
        .max_requests(65536)
        .build()
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("65537 AIO events") && msg.contains("raise fs.aio-max-nr"),
        "{msg}"
    );
}

#[test]
fn a_long_bad_caio_impl_is_quoted_short() {
    let _serial = serial();
    let long = "x".repeat(10_000);
    let o = child(
        "child_selection",
        &[(CHILD, "1"), ("CAIO_IMPL", &long)],
        Duration::from_secs(20),
    );
    let out = stdout(&o);
    let line = out.lines().find(|l| l.contains("WARNINGS")).unwrap();
    assert!(line.contains("CAIO_IMPL"), "{line}");
    assert!(
        line.len() < 400,
        "the warning quotes all of it: {} chars",
        line.len()
    );
}

// --- 5. Context churn keeps aio-nr and threads low.

#[test]
fn creating_and_dropping_thousands_of_contexts_keeps_aio_nr_and_threads_low() {
    let _serial = serial();
    if !Implementation::Linux.is_available() {
        eprintln!("SKIP: kernel AIO is not available here");
        return;
    }
    let read_nr = || -> u64 {
        fs::read_to_string("/proc/sys/fs/aio-nr")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (nr0, threads0) = (read_nr(), threads());
    let (peak_nr, peak_threads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = std::thread::spawn({
        let (peak_nr, peak_threads, stop) = (peak_nr.clone(), peak_threads.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                peak_nr.fetch_max(read_nr(), Ordering::Relaxed);
                peak_threads.fetch_max(threads() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    });
    let s = util::Scratch::new();
    s.file.set_len(4096).unwrap();
    let start = Instant::now();
    let n = 3000;
    for _ in 0..n {
        let c = Context::builder()
            .implementation(Implementation::Linux)
            .build()
            .unwrap();
        block_on(c.read(16, s.fd(), 0)).unwrap();
    }
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    monitor.join().unwrap();
    let (dn, dt) = (
        peak_nr.load(Ordering::Relaxed).saturating_sub(nr0),
        peak_threads
            .load(Ordering::Relaxed)
            .saturating_sub(threads0 as u64 + 1),
    );
    eprintln!(
        "{n} contexts in {took:?}: peak aio-nr +{dn} (each context takes 257), peak threads +{dt}"
    );
    assert!(dn <= 6 * 257, "aio-nr peaked {dn} above its start");
    assert!(dt <= 8, "threads peaked {dt} above their start");
}

// --- 6. A half-denied kernel interface never hangs.

#[test]
fn child_half_denied() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let path = std::env::var("CAIO_HAZARDS_FILE").unwrap();
    let data = pattern(4 << 20, 8);
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags_direct()
        .open(&path)
        .unwrap();
    let fd = file.as_raw_fd();
    let (getevents, submit) = (libc::SYS_io_getevents, libc::SYS_io_submit);
    let read_all = |ctx: &Context| {
        block_on(futures::future::join_all((0..256u64).map(|k| {
            let off = (k * 7919 % 1024) * 4096;
            ctx.read(4096, fd, off).map(move |r| (off, r))
        })))
        .into_iter()
        .all(|(off, r)| r.is_ok_and(|b| b[..] == data[off as usize..off as usize + 4096]))
    };
    match mode.as_str() {
        "getevents-first" | "submit-first" => {
            util::deny_syscalls(&[if mode == "getevents-first" {
                getevents
            } else {
                submit
            }]);
            let explicit = Context::builder()
                .implementation(Implementation::Linux)
                .build();
            let reason = match explicit {
                Err(caio::Error::Unavailable { reason, .. }) => reason,
                other => format!("built: {other:?}"),
            };
            let ctx = Context::new().unwrap();
            println!(
                "\nRESULT ctx={} ok={} reason={reason}",
                ctx.implementation(),
                read_all(&ctx)
            );
        }
        "getevents-later" | "submit-later" => {
            let ctx = Context::builder()
                .implementation(Implementation::Linux)
                .build()
                .unwrap();
            // Reads in flight while the policy changes.
            let inflight: Vec<_> = (0..64u64)
                .map(|k| Box::pin(ctx.read(4096, fd, k * 4096)))
                .collect();
            let mut inflight: Vec<_> = inflight
                .into_iter()
                .map(|mut f| {
                    let _ = f.as_mut().now_or_never();
                    f
                })
                .collect();
            util::deny_syscalls(&[if mode == "getevents-later" {
                getevents
            } else {
                submit
            }]);
            let early = inflight.iter_mut().all(|f| block_on(f.as_mut()).is_ok());
            println!(
                "\nRESULT ctx={} early={early} ok={}",
                ctx.implementation(),
                read_all(&ctx)
            );
        }
        _ => unreachable!(),
    }
    std::io::stdout().flush().unwrap();
}

trait DirectExt {
    fn custom_flags_direct(&mut self) -> &mut Self;
}

impl DirectExt for fs::OpenOptions {
    fn custom_flags_direct(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::custom_flags(self, libc::O_DIRECT)
    }
}

#[test]
fn a_half_denied_kernel_interface_never_hangs() {
    let _serial = serial();
    if !Implementation::Linux.is_available() {
        eprintln!("SKIP: kernel AIO is not available here");
        return;
    }
    let d = dir();
    let p = d.path().join("data");
    fs::write(&p, pattern(4 << 20, 8)).unwrap();
    // Denied before the context is made: the next implementation, with the reason. Denied
    // after: every operation still completes.
    let next = util::first_without_linux();
    for (mode, want) in [
        (
            "getevents-first",
            format!("RESULT ctx={next} ok=true reason=io_getevents"),
        ),
        (
            "submit-first",
            format!("RESULT ctx={next} ok=true reason=io_submit"),
        ),
        (
            "getevents-later",
            "RESULT ctx=linux early=true ok=true".into(),
        ),
        ("submit-later", "RESULT ctx=linux early=true ok=true".into()),
    ] {
        let o = child(
            "child_half_denied",
            &[(CHILD, mode), ("CAIO_HAZARDS_FILE", p.to_str().unwrap())],
            Duration::from_secs(30),
        );
        let out = stdout(&o);
        assert!(
            o.status.success(),
            "{mode}: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(&*want), "{mode}: {out}");
    }
}

// --- 8. Pipes, FIFOs and stdin; 9. papercuts.

#[test]
fn readers_writers_lines_and_chunks_work_on_fifos() {
    let _serial = serial();
    for i in backends() {
        let d = dir();
        let fifo = d.path().join("fifo");
        util::mkfifo(&fifo);
        let ctx = util::ctx(i);
        let text: String = (0..20_000).map(|k| format!("line {k}\n")).collect();
        // A writer on one side, through caio's Writer; lines on the other.
        let feeder = std::thread::spawn({
            let (fifo, text, ctx) = (fifo.clone(), text.clone(), ctx.clone());
            move || {
                block_on(async {
                    let f = OpenOptions::new()
                        .write(true)
                        .context(ctx)
                        .open(&fifo)
                        .await?;
                    let mut w = f.writer();
                    w.write_all(text.as_bytes()).await?;
                    w.close().await?;
                    drop(w);
                    f.close().await
                })
                .unwrap()
            }
        });
        let lines: Vec<String> = block_on(async {
            use futures::StreamExt;
            let f = OpenOptions::new()
                .read(true)
                .context(ctx.clone())
                .open(&fifo)
                .await
                .unwrap();
            // Positional calls name the type.
            let e = f.read_at(10, 0).await.unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::Error::from_raw_os_error(libc::ESPIPE).kind()
            );
            assert!(e.to_string().contains("FIFO"), "{i}: {e}");
            f.lines().map(Result::unwrap).collect().await
        });
        feeder.join().unwrap();
        assert_eq!(lines.len(), 20_000, "{i}");
        assert_eq!(lines[12_345], "line 12345", "{i}");
        // Chunks of a pipe are whole but for the last.
        let feeder = std::thread::spawn({
            let fifo = fifo.clone();
            move || fs::write(fifo, pattern(100_000, 4)).unwrap()
        });
        let sizes: Vec<usize> = block_on(async {
            use futures::StreamExt;
            let f = OpenOptions::new()
                .read(true)
                .context(ctx.clone())
                .open(&fifo)
                .await
                .unwrap();
            f.chunks(30_000).map(|c| c.unwrap().len()).collect().await
        });
        feeder.join().unwrap();
        assert_eq!(sizes, [30_000, 30_000, 30_000, 10_000], "{i}");
    }
}

#[test]
fn wrong_mode_says_so_and_a_string_reference_is_a_buffer() {
    let _serial = serial();
    let d = dir();
    let p = d.path().join("f");
    let s = String::from("from a &String");
    block_on(caio::fs::write(&p, &s)).unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), s);
    for i in backends() {
        let ctx = util::ctx(i);
        block_on(async {
            let ro = OpenOptions::new()
                .read(true)
                .context(ctx.clone())
                .open(&p)
                .await
                .unwrap();
            let e = ro.write_at("x", 0).await.unwrap_err();
            assert!(e.to_string().contains("not opened for writing"), "{i}: {e}");
            let os = std::error::Error::source(e.get_ref().unwrap())
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::raw_os_error);
            assert_eq!(os, Some(libc::EBADF), "{i}: the errno is kept");
            let e = ro.set_len(0).await.unwrap_err();
            assert!(e.to_string().contains("not opened for writing"), "{i}: {e}");
            let wo = OpenOptions::new()
                .write(true)
                .context(ctx.clone())
                .open(&p)
                .await
                .unwrap();
            let e = wo.read_at(1, 0).await.unwrap_err();
            assert!(e.to_string().contains("not opened for reading"), "{i}: {e}");
        });
    }
}
