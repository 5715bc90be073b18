//! Cancelling operations (`abort_handle`, and dropping a future in flight) on every
//! available backend: what was not started never starts and resolves `ECANCELED` with
//! its buffers; what finished first keeps its result; aborts racing completions from
//! other threads lose nothing and corrupt nothing; kernel AIO's cancel is asked of the
//! kernel (`io_cancel`, seen under strace). The slow-storage case, where io_uring's
//! cancellation wins in the kernel, is in `fuse.rs`.

mod util;

use std::{
    io,
    time::{Duration, Instant},
};

use caio::{AbortHandle, Buffer, Context};
use util::{backends, block_on, ctx, pattern, poll_once, Scratch};

fn is_cancelled(e: &io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::ECANCELED);
    #[cfg(windows)]
    return e.raw_os_error() == Some(995); // ERROR_OPERATION_ABORTED
}

#[test]
fn an_abort_handle_is_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    check::<AbortHandle>();
}

/// Aborted before its first poll, an operation never starts: `ECANCELED`, the buffers
/// back, nothing written; counted as asked for and won.
#[test]
fn aborted_before_it_starts_it_never_does() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        let before = pattern(8192, 1);
        std::fs::write(&s.path, &before).unwrap();
        let f = util::open_rw(&c, &s.path, false);
        block_on(async {
            let op = c.write_at_from(Buffer::from(&pattern(4096, 2)[..]), s.fd(), 0);
            let abort = op.abort_handle();
            abort.abort();
            assert!(abort.is_aborted());
            let (r, buf) = op.await;
            assert!(is_cancelled(&r.unwrap_err()), "{i}");
            assert_eq!(&buf[..], &pattern(4096, 2)[..], "{i}: the buffer came back");

            let op = c.read_at_into(Buffer::with_capacity(4096), s.fd(), 0);
            op.abort_handle().abort();
            let (r, buf) = op.await;
            assert!(is_cancelled(&r.unwrap_err()), "{i}");
            assert_eq!(buf.capacity(), 4096, "{i}");

            let op = c.read(4096, s.fd(), 0);
            op.abort_handle().abort();
            assert!(is_cancelled(&op.await.unwrap_err()), "{i}");

            // A File operation of several steps (a write at an unaligned offset of an
            // O_DIRECT file, say) stops too; the plain one is one step.
            let op = f.write_all_at(pattern(100, 3), 10);
            op.abort_handle().abort();
            assert!(is_cancelled(&op.await.unwrap_err()), "{i}");
        });
        assert_eq!(
            std::fs::read(&s.path).unwrap(),
            before,
            "{i}: nothing written"
        );
        let st = c.stats();
        assert!(st.cancels_asked >= 4 && st.cancels_won >= 4, "{i}: {st}");
        assert_eq!(st.in_flight, 0, "{i}: {st}");
    }
}

/// A write that finished before its abort keeps its result: it is not reported
/// cancelled, and its bytes are in the file.
#[test]
fn a_write_already_completed_is_not_reported_cancelled() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        let data = pattern(64 << 10, 4);
        let mut op = c.write(data.clone(), s.fd(), 0);
        let abort = op.abort_handle();
        let done = c.stats().completed;
        // The first poll starts it, a second sends it where the backend batches.
        let first = poll_once(&mut op).or_else(|| poll_once(&mut op));
        if first.is_none() {
            // Wait until the backend finished it, then abort: too late to cancel.
            let t = Instant::now();
            while c.stats().completed == done {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "{i}: the write never finished"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        abort.abort();
        let n = match first {
            Some(r) => r.unwrap(),
            None => block_on(op).unwrap(),
        };
        assert_eq!(n, data.len(), "{i}: the write's own result");
        assert_eq!(std::fs::read(&s.path).unwrap(), data, "{i}");
        assert_eq!(c.stats().cancels_won, 0, "{i}: {}", c.stats());
    }
}

/// Aborts from other threads, racing the completions of many O_DIRECT reads in flight
/// (under `block_on`, whose own ring only its thread may enter, and under a multi-thread
/// tokio runtime, whose workers have rings of their own): each read resolves with its
/// bytes or `ECANCELED`, nothing hangs, and the slots all come back.
#[test]
fn aborts_from_other_threads_race_completions_safely() {
    for i in backends() {
        let c = Context::builder()
            .implementation(i)
            .max_requests(64)
            .build()
            .unwrap();
        #[cfg(target_os = "linux")]
        let s = Scratch::direct();
        #[cfg(not(target_os = "linux"))]
        let s = Scratch::new();
        let want = pattern(4 << 20, 5);
        std::fs::write(&s.path, &want).unwrap();
        let run = |mode: &str| {
            let (reads, handles): (Vec<_>, Vec<_>) = (0..512u64)
                .map(|k| {
                    let op = c.read_at_into(Buffer::with_capacity(4096), s.fd(), k % 1024 * 4096);
                    let h = op.abort_handle();
                    ((k, op), h)
                })
                .unzip();
            let aborter = std::thread::spawn(move || {
                for (k, h) in handles.iter().enumerate() {
                    if k % 3 == 0 {
                        h.abort();
                    }
                    if k % 16 == 0 {
                        std::thread::yield_now();
                    }
                }
            });
            let check = |results: Vec<(u64, (io::Result<usize>, Buffer))>| {
                let mut cancelled = 0;
                for (k, (r, buf)) in results {
                    match r {
                        Ok(n) => {
                            let at = (k % 1024 * 4096) as usize;
                            assert_eq!(n, 4096, "{i} {mode}");
                            assert!(buf[..] == want[at..at + 4096], "{i} {mode}: read {k}");
                        }
                        Err(e) => {
                            assert!(is_cancelled(&e), "{i} {mode}: {e}");
                            assert!(k % 3 == 0, "{i} {mode}: read {k} was never aborted");
                            cancelled += 1;
                        }
                    }
                }
                cancelled
            };
            let all = reads
                .into_iter()
                .map(|(k, op)| async move { (k, op.await) });
            let results = match mode {
                "block_on" => c.block_on(futures::future::join_all(all)),
                _ => util::runtime(true).block_on(async {
                    let tasks: Vec<_> = all.map(tokio::spawn).collect();
                    let mut out = Vec::new();
                    for t in tasks {
                        out.push(t.await.unwrap());
                    }
                    out
                }),
            };
            aborter.join().unwrap();
            let cancelled = check(results);
            println!(
                "{i} {mode}: {cancelled} of 512 reads cancelled; {}",
                c.stats()
            );
        };
        run("block_on");
        run("tokio");
        assert!(
            c.wait_idle_timeout(Duration::from_secs(20)),
            "{i}: operations left in flight"
        );
        let st = c.stats();
        assert_eq!(st.in_flight, 0, "{i}: {st}");
        assert!(st.cancels_won <= st.cancels_asked, "{i}: {st}");
    }
}

/// Kernel AIO is asked to cancel what it holds (`io_cancel`, seen under strace), and
/// answers as Linux does for file I/O: the reads run to the end, with their bytes.
#[cfg(target_os = "linux")]
#[test]
fn kernel_aio_is_asked_to_cancel_what_it_holds() {
    use caio::Implementation;
    const CHILD: &str = "CAIO_CANCEL_CHILD";
    if !Implementation::Linux.is_available() {
        eprintln!("SKIP: kernel AIO is not available here");
        return;
    }
    if !util::has_strace() {
        return;
    }
    let s = Scratch::direct();
    std::fs::write(&s.path, pattern(64 << 20, 6)).unwrap();
    s.file.sync_all().unwrap();
    let out_path = s.path.with_extension("strace");
    let stdout = util::under_strace(
        "child_aborts_reads_in_flight",
        &out_path,
        "io_submit,io_cancel",
        &[(CHILD, s.path.as_os_str())],
        Duration::from_secs(120),
    );
    let text = std::fs::read_to_string(&out_path).unwrap();
    // (The backend's own wake-up poll is cancelled too, at shutdown.)
    let cancels: Vec<_> = util::strace_calls(&text)
        .into_iter()
        .filter(|(_, c)| c.starts_with("io_cancel(") && c.contains("IOCB_CMD_PREAD"))
        .collect();
    let asked: u64 = util::child_field(&stdout, "asked");
    println!(
        "linux: {} io_cancel calls for {asked} cancellations asked; the first: {:?}",
        cancels.len(),
        cancels.first()
    );
    assert!(!cancels.is_empty(), "no io_cancel under strace");
    assert!(
        cancels.iter().all(|(_, c)| c.contains("EINVAL")),
        "{cancels:?}"
    );
}

/// The child of `kernel_aio_is_asked_to_cancel_what_it_holds`: 64 O_DIRECT reads of 1 MiB
/// under kernel AIO, each aborted right after they were submitted.
#[cfg(target_os = "linux")]
#[test]
fn child_aborts_reads_in_flight() {
    let Ok(path) = std::env::var("CAIO_CANCEL_CHILD") else {
        return;
    };
    let c = Context::builder()
        .implementation(caio::Implementation::Linux)
        .max_requests(64)
        .build()
        .unwrap();
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let want = std::fs::read(&path).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut reads: Vec<_> = (0..64u64)
        .map(|k| Box::pin(c.read_at_into(Buffer::with_capacity(1 << 20), fd, k << 20)))
        .collect();
    let handles: Vec<_> = reads.iter().map(|r| r.abort_handle()).collect();
    // Two polls: the first queues them, the second sends them in one io_submit.
    let mut early: Vec<_> = reads.iter_mut().map(poll_once).collect();
    for (r, e) in reads.iter_mut().zip(&mut early) {
        if e.is_none() {
            *e = poll_once(r);
        }
    }
    for h in &handles {
        h.abort();
    }
    for (k, (r, e)) in reads.into_iter().zip(early).enumerate() {
        let (r, buf) = e.unwrap_or_else(|| block_on(r));
        match r {
            Ok(n) => {
                assert_eq!(n, 1 << 20);
                assert!(buf[..] == want[k << 20..(k + 1) << 20], "read {k}");
            }
            Err(e) => assert!(is_cancelled(&e), "{e}"),
        }
    }
    println!("\nCHILD asked={}", c.stats().cancels_asked);
}
