//! Proof that no function of the crate makes a metadata system call on the thread that
//! polls it (the blocking implementation aside, whose point that is).
//!
//! A child process runs every file and path function on a tokio current-thread runtime,
//! beside a 1 ms ticker, under `strace` with a 300 ms delay injected into every metadata
//! system call (open, close, stat, truncate, fallocate, rename, unlink, mkdir, readdir,
//! chmod, readlink, link, symlink, fcntl, fsync...) on every thread. A call made on the
//! polling thread stalls the ticker for 300 ms; one made on a backend thread does not. The
//! same child on `blocking` must show the stalls, which proves the detector works.
#![cfg(target_os = "linux")]

mod util;

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use caio::{fs, Context, File, Implementation, OpenOptions};
use futures::{AsyncSeekExt, AsyncWriteExt, StreamExt};

const CHILD: &str = "CAIO_OFF_THREAD_CHILD";
const DELAY_MS: u64 = 300;
/// A gap over this means the polling thread was held.
const MAX_GAP_MS: u64 = 50;

/// Every system call that touches metadata or may wait on a filesystem outside a read or
/// write ('?' lets strace skip the names this architecture lacks).
const SLOW_CALLS: &str = "?open,?openat,?openat2,?close,?close_range,?stat,?fstat,?lstat,\
?newfstatat,?statx,?ftruncate,?truncate,?fallocate,?rename,?renameat,?renameat2,?unlink,\
?unlinkat,?rmdir,?mkdir,?mkdirat,?getdents64,?chmod,?fchmod,?fchmodat,?fchmodat2,\
?readlink,?readlinkat,?link,?linkat,?symlink,?symlinkat,?access,?faccessat,?faccessat2,\
?fsync,?fdatasync,?fcntl,?dup,?dup2,?dup3,?mknodat,?fchown,?fchownat,?fadvise64,\
?sync_file_range";

/// The largest gap between ticks, in microseconds, since the last reset.
async fn ticker(max: Arc<AtomicU64>) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = Instant::now();
        max.fetch_max((now - last).as_micros() as u64, Ordering::SeqCst);
        last = now;
    }
}

struct Steps {
    max: Arc<AtomicU64>,
}

impl Steps {
    /// Runs one step beside the ticker and prints the largest gap it caused.
    async fn run<T>(
        &self,
        name: &str,
        f: impl std::future::Future<Output = std::io::Result<T>>,
    ) -> T {
        tokio::time::sleep(Duration::from_millis(3)).await;
        self.max.store(0, Ordering::SeqCst);
        let r = f.await;
        // Let the ticker see a stall in the step's last poll.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let gap = self.max.load(Ordering::SeqCst);
        println!("STEP {name} {gap}");
        r.unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

#[test]
fn child_every_function_beside_a_ticker() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let d = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let max = Arc::new(AtomicU64::new(0));
        tokio::spawn(ticker(Arc::clone(&max)));
        let s = Steps { max };
        let p = |n: &str| d.join(n);

        // The process's first caio call, beside the ticker: it builds the process-wide
        // context (selection, kernel context, threads), which must not hold the ticker.
        let f = s.run("File::open(first call)", File::open(p("data"))).await;
        println!(
            "CHILD implementation {}",
            Context::global().unwrap().implementation()
        );
        drop(f);
        let f = s.run("File::open", File::open(p("data"))).await;
        s.run("File::len", f.len()).await;
        s.run("File::metadata", f.metadata()).await;
        s.run("File::read_at", f.read_at(4096, 0)).await;
        let g = s.run("File::try_clone", f.try_clone()).await;
        s.run("File::close", g.close()).await;
        drop(f);
        s.run("drop(File)", async { Ok(()) }).await;

        let w = s.run("File::create", File::create(p("new"))).await;
        s.run("File::write_all_at", w.write_all_at(vec![7u8; 10_000], 0))
            .await;
        s.run("File::set_len", w.set_len(5000)).await;
        s.run("File::allocate", w.allocate(0, 65536)).await;
        s.run("File::advise", w.advise(0, 0, fs::Advice::WillNeed))
            .await;
        let all = fs::SyncRange::WAIT_BEFORE | fs::SyncRange::WRITE | fs::SyncRange::WAIT_AFTER;
        s.run("File::sync_range", w.sync_range(0, 0, all)).await;
        s.run(
            "File::set_permissions",
            w.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640)),
        )
        .await;
        s.run("File::sync_all", w.sync_all()).await;
        s.run("File::sync_data", w.sync_data()).await;
        s.run("File::close(created)", w.close()).await;

        let rw = s
            .run(
                "OpenOptions::open(direct)",
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .direct(true)
                    .open(p("data")),
            )
            .await;
        s.run(
            "File::write_at(direct, unaligned)",
            rw.write_at(vec![1u8; 100], 10),
        )
        .await;
        s.run("File::close(direct)", rw.close()).await;

        let f = s.run("File::open(reader)", File::open(p("data"))).await;
        let mut r = f.reader();
        s.run("Reader::seek(End)", r.seek(SeekFrom::End(-100)))
            .await;
        s.run("File::lines", async { Ok(f.lines().count().await) })
            .await;
        s.run("File::chunks", async { Ok(f.chunks(8192).count().await) })
            .await;
        drop((r, f));

        let a = s
            .run(
                "OpenOptions::open(append)",
                OpenOptions::new().append(true).create(true).open(p("log")),
            )
            .await;
        let mut wr = a.writer();
        s.run("Writer::write_all(append)", wr.write_all(b"line\n"))
            .await;
        s.run("Writer::seek(End)", wr.seek(SeekFrom::End(0))).await;
        s.run("Writer::close", wr.close()).await;
        drop(a);

        s.run("fs::read", fs::read(p("data"))).await;
        s.run("fs::read_to_string", fs::read_to_string(p("text")))
            .await;
        s.run("fs::write", fs::write(p("w"), "hello")).await;
        s.run("fs::write_atomic", fs::write_atomic(p("w"), "again"))
            .await;
        s.run("fs::copy", fs::copy(p("data"), p("copy"))).await;
        s.run(
            "fs::copy_with(atomic)",
            fs::copy_with(p("data"), p("copy"), fs::CopyOptions::new().atomic(true)),
        )
        .await;
        s.run("fs::metadata", fs::metadata(p("data"))).await;
        s.run("fs::symlink_metadata", fs::symlink_metadata(p("link")))
            .await;
        s.run("fs::try_exists", fs::try_exists(p("nothing"))).await;
        s.run("fs::rename", fs::rename(p("copy"), p("moved"))).await;
        s.run("fs::hard_link", fs::hard_link(p("moved"), p("hard")))
            .await;
        s.run("fs::symlink", fs::symlink(p("moved"), p("soft")))
            .await;
        s.run("fs::read_link", fs::read_link(p("soft"))).await;
        s.run("fs::canonicalize", fs::canonicalize(p("soft"))).await;
        s.run(
            "fs::set_permissions",
            fs::set_permissions(
                p("moved"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            ),
        )
        .await;
        s.run("fs::remove_file", fs::remove_file(p("hard"))).await;
        s.run("fs::create_dir", fs::create_dir(p("d1"))).await;
        s.run("fs::create_dir_all", fs::create_dir_all(p("d2/a/b")))
            .await;
        s.run("fs::remove_dir", fs::remove_dir(p("d1"))).await;
        s.run("fs::remove_dir_all", fs::remove_dir_all(p("d2")))
            .await;
        let mut rd = s.run("fs::read_dir", fs::read_dir(p("sub"))).await;
        let mut n = 0;
        while let Some(e) = s.run("ReadDir::next", rd.next_entry()).await {
            s.run("DirEntry::file_type", e.file_type()).await;
            s.run("DirEntry::metadata", e.metadata()).await;
            s.run("drop(DirEntry)", async move {
                drop(e);
                Ok(())
            })
            .await;
            n += 1;
        }
        assert_eq!(n, 3);
        s.run("drop(ReadDir) at its end", async move {
            drop(rd);
            Ok(())
        })
        .await;
        // Several directories walked whole, entries kept and dropped at the end: every
        // directory's descriptor is closed off the polling thread.
        s.run("fs::read_dir (a walk)", async {
            let mut kept = Vec::new();
            for dir in ["sub", "sub", "sub"] {
                let mut rd = fs::read_dir(p(dir)).await?;
                while let Some(e) = rd.next_entry().await? {
                    kept.push(e);
                }
            }
            assert_eq!(kept.len(), 9);
            drop(kept);
            Ok(())
        })
        .await;
        let mut rd = s
            .run("fs::read_dir(dropped early)", fs::read_dir(p("sub")))
            .await;
        s.run("ReadDir::next(first)", rd.next_entry()).await;
        s.run("drop(ReadDir) early", async move {
            drop(rd);
            Ok(())
        })
        .await;
        println!("CHILD done");
    });
}

/// The files the child works on, made before it starts (and before any delay).
fn lay_out(d: &Path) {
    std::fs::write(d.join("data"), util::pattern(1 << 20, 3)).unwrap();
    std::fs::write(d.join("text"), "one\ntwo\nthree\n").unwrap();
    std::os::unix::fs::symlink(d.join("data"), d.join("link")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    for k in 0..3 {
        std::fs::write(d.join("sub").join(format!("f{k}")), b"x").unwrap();
    }
}

/// Runs the child on `i` under strace with the delays; the gap of every step.
fn gaps_under_strace(i: Implementation) -> Vec<(String, u64)> {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    lay_out(d.path());
    let delay = format!("{}", DELAY_MS * 1000);
    let (trace, inject) = (
        format!("--trace={SLOW_CALLS}"),
        format!("--inject={SLOW_CALLS}:delay_enter={delay}"),
    );
    let mut cmd = util::test_command(
        "child_every_function_beside_a_ticker",
        &["strace", "-f", "-qq", "-o", "/dev/null", &trace, &inject],
    );
    cmd.env(CHILD, d.path()).env("CAIO_IMPL", i.as_str());
    let out = util::output_within(cmd, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("CHILD done"),
        "{i}: the child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("CHILD implementation {i}")),
        "{i}: the child ran another implementation:\n{stdout}"
    );
    stdout
        .lines()
        // The first step's line follows libtest's "test … ... " on the same line.
        .filter_map(|l| l.split_once("STEP ").map(|(_, step)| step))
        .map(|l| {
            let (name, us) = l.rsplit_once(' ').unwrap();
            (name.to_string(), us.parse::<u64>().unwrap() / 1000)
        })
        .collect()
}

fn strace_can_inject() -> bool {
    let ok = Command::new("strace")
        .args([
            "-qq",
            "-o",
            "/dev/null",
            "--inject=?getpid:delay_enter=1",
            "true",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: strace with delay injection is not available here (.ci/run installs it)");
    }
    ok
}

#[test]
fn no_metadata_call_holds_the_polling_thread() {
    if !strace_can_inject() {
        return;
    }
    let impls: Vec<_> = util::backends();
    // The children take tens of seconds each, nearly all of it asleep in the delays.
    let runs: Vec<_> = impls
        .iter()
        .map(|&i| std::thread::spawn(move || (i, gaps_under_strace(i))))
        .collect();
    let mut failures = Vec::new();
    for run in runs {
        let (i, gaps) = run.join().unwrap();
        let worst = gaps.iter().max_by_key(|(_, g)| *g).cloned().unwrap();
        eprintln!(
            "{i}: {} steps, largest tick gap {} ms ({})",
            gaps.len(),
            worst.1,
            worst.0
        );
        assert!(gaps.len() >= 50, "{i}: only {} steps ran", gaps.len());
        if i == Implementation::Blocking {
            // Inline by definition: the detector must see it, or it proves nothing.
            let open = gaps.iter().find(|(n, _)| n == "File::open").unwrap().1;
            assert!(
                open >= DELAY_MS - 20,
                "blocking: opening held the polling thread only {open} ms: the delays did not apply"
            );
            continue;
        }
        for (name, gap) in &gaps {
            if *gap > MAX_GAP_MS {
                failures.push(format!("{i}: {name} held the polling thread {gap} ms"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
