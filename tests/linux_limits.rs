//! Kernel AIO when the kernel says no: `fs.aio-max-nr` spent (lowered, then restored) and
//! `io_setup` denied by seccomp. Selection falls back with the reason; an explicit Linux
//! context is `Error::Unavailable`; contexts created and dropped by the hundred leak no
//! kernel context and no thread.
#![cfg(target_os = "linux")]

mod util;

use std::{
    fs,
    time::{Duration, Instant},
};

use caio::{Context, Error, Implementation};
use util::{block_on, pattern, threads, wait_for_threads, Scratch};

const MAX_NR: &str = "/proc/sys/fs/aio-max-nr";
const NR: &str = "/proc/sys/fs/aio-nr";
const CHILD: &str = "CAIO_LIMITS_TEST_CHILD";

fn read_num(path: &str) -> u64 {
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// Restores `fs.aio-max-nr` when dropped, even if the test panics.
struct RestoreMaxNr(u64);

impl Drop for RestoreMaxNr {
    fn drop(&mut self) {
        fs::write(MAX_NR, self.0.to_string()).expect("restore fs.aio-max-nr");
        eprintln!("restored fs.aio-max-nr to {}", self.0);
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs in a child: prints what selection and an explicit Linux build say.
#[test]
fn child_report() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    if mode == "seccomp" {
        util::deny_syscalls(&[libc::SYS_io_setup]);
    }
    let s = caio::selection();
    let explicit = match Context::builder()
        .implementation(Implementation::Linux)
        .build()
    {
        Ok(_) => "built".to_string(),
        Err(Error::Unavailable { reason, .. }) => format!("unavailable: {reason}"),
        Err(e) => format!("other error: {e}"),
    };
    let ctx = Context::new().unwrap();
    println!(
        "REPORT impl={} source={:?} ctx={} explicit=[{explicit}] warnings=[{}]",
        s.implementation(),
        s.source(),
        ctx.implementation(),
        s.warnings().join(" | ")
    );
}

fn child(mode: &str, caio_impl: Option<&str>) -> String {
    let mut cmd = util::test_command("child_report", &[]);
    cmd.env(CHILD, mode);
    match caio_impl {
        Some(v) => cmd.env("CAIO_IMPL", v),
        None => cmd.env_remove("CAIO_IMPL"),
    };
    let out = util::output_within(cmd, std::time::Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.find("REPORT ").map(|i| l[i..].to_string()))
        .unwrap_or_else(|| panic!("no report: {stdout}"))
}

#[test]
fn seccomp_denying_io_setup_falls_back_to_thread_with_the_reason() {
    for caio_impl in [None, Some("linux")] {
        let r = child("seccomp", caio_impl);
        assert!(
            r.contains(&format!(
                "impl={next} source=Default ctx={next}",
                next = util::first_without_linux()
            )),
            "{caio_impl:?}: {r}"
        );
        assert!(r.contains("explicit=[unavailable: io_setup"), "{r}");
        assert!(
            r.contains("EPERM") || r.contains("Operation not permitted"),
            "{r}"
        );
        assert!(
            r.contains("seccomp"),
            "the reason names the likely cause: {r}"
        );
        assert!(
            r.contains("linux is unavailable") || r.contains("CAIO_IMPL=linux is unavailable"),
            "{r}"
        );
    }
}

#[test]
fn spent_aio_max_nr_falls_back_and_hundreds_of_contexts_leak_nothing() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: lowering fs.aio-max-nr needs root");
        return;
    }
    if !Implementation::Linux.is_available() {
        eprintln!("SKIP: kernel AIO is not available here");
        return;
    }
    let _restore = RestoreMaxNr(read_num(MAX_NR));
    // The probe's context is kept idle for reuse (3 s, reclaimed within a second after),
    // then destroyed: let it go first, so the baseline is what other processes hold.
    std::thread::sleep(Duration::from_millis(4500));
    let baseline = read_num(NR);
    let threads_before = threads();

    // Room for three contexts of 32 (+1 for the reaper's wake-up) and nothing more.
    let per_ctx = 33;
    fs::write(MAX_NR, (baseline + 3 * per_ctx).to_string()).unwrap();
    let s = Scratch::direct();
    let data = pattern(1 << 20, 9);
    block_on(
        Context::builder()
            .implementation(Implementation::Thread)
            .build()
            .unwrap()
            .write(data.clone(), s.fd(), 0),
    )
    .unwrap();
    for k in 0..200u64 {
        let c = Context::builder()
            .implementation(Implementation::Linux)
            .max_requests(32)
            .build()
            .unwrap_or_else(|e| panic!("context {k} of 200 with fs.aio-max-nr lowered: {e}"));
        let off = (k % 256) * 4096;
        let got = block_on(c.read(4096, s.fd(), off)).unwrap();
        assert_eq!(&got[..], &data[off as usize..off as usize + 4096]);
    }
    // Idle ones are kept for reuse a few seconds, then destroyed.
    wait_until("every kernel context is destroyed", || {
        read_num(NR) == baseline
    });
    wait_for_threads(
        threads_before,
        Duration::from_secs(10),
        "reapers of 200 contexts",
    );

    // Spend it: one context takes all that is left.
    fs::write(MAX_NR, (baseline + per_ctx).to_string()).unwrap();
    let hog = Context::builder()
        .implementation(Implementation::Linux)
        .max_requests(32)
        .build()
        .unwrap();
    assert!(
        !Implementation::Linux.is_available(),
        "no room is left, the probe must say so"
    );
    match Context::builder()
        .implementation(Implementation::Linux)
        .build()
    {
        Err(Error::Unavailable {
            implementation: Implementation::Linux,
            reason,
        }) => {
            assert!(reason.contains("aio-max-nr"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    for caio_impl in [None, Some("linux")] {
        let r = child("plain", caio_impl);
        assert!(
            r.contains(&format!(
                "impl={next} source=Default ctx={next}",
                next = util::first_without_linux()
            )),
            "{caio_impl:?}: {r}"
        );
        assert!(
            r.contains("aio-max-nr"),
            "the warning gives the reason: {r}"
        );
    }
    drop(hog);
    wait_until("the last context is destroyed", || read_num(NR) == baseline);
}
