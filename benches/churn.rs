//! Context churn: N linux contexts created, used once and dropped, one after another.
//! Prints the time per context and the peaks of the system-wide `aio-nr` and of this
//! process's threads above where they started (sampled every 200 µs by a monitor thread).
//!
//! `cargo bench --bench churn [-- N]` (default 10,000).

use std::{
    fs,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use caio::{Context, Implementation};

fn aio_nr() -> u64 {
    fs::read_to_string("/proc/sys/fs/aio-nr")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn threads() -> u64 {
    fs::read_dir("/proc/self/task").map_or(0, |d| d.count() as u64)
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    if !Implementation::Linux.is_available() {
        println!("churn: kernel AIO is not available here");
        return;
    }
    let file = tempfile::tempfile_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    file.set_len(4096).unwrap();
    std::thread::sleep(Duration::from_secs(5)); // idle contexts of the probe go first
    let (nr0, th0) = (aio_nr(), threads());
    let (peak_nr, peak_th) = (Arc::new(AtomicU64::new(nr0)), Arc::new(AtomicU64::new(th0)));
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = std::thread::spawn({
        let (peak_nr, peak_th, stop) = (peak_nr.clone(), peak_th.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                peak_nr.fetch_max(aio_nr(), Ordering::Relaxed);
                peak_th.fetch_max(threads(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        let c = Context::builder()
            .implementation(Implementation::Linux)
            .build()
            .unwrap();
        futures::executor::block_on(c.read(16, raw(&file), 0)).unwrap();
    }
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    monitor.join().unwrap();
    println!(
        "churn: {n} linux contexts in {:.2} s ({:.0} us each): peak aio-nr {} (+{}), peak threads +{}",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / n as f64,
        peak_nr.load(Ordering::Relaxed),
        peak_nr.load(Ordering::Relaxed) - nr0,
        peak_th.load(Ordering::Relaxed) - th0 - 1,
    );
}

/// The raw file a `Context` takes: the descriptor on Unix, the handle on Windows.
fn raw(f: &std::fs::File) -> caio::RawFd {
    #[cfg(unix)]
    return std::os::unix::io::AsRawFd::as_raw_fd(f);
    #[cfg(windows)]
    return std::os::windows::io::AsRawHandle::as_raw_handle(f);
}
