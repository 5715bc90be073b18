//! `File::advise` and `File::sync_range` on every implementation: the kernel does what
//! was asked (pages read in or dropped, dirty pages written), read off `mincore` and
//! `cachestat`.
#![cfg(target_os = "linux")]

mod util;

use std::{
    io,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use caio::fs::{Advice, SyncRange};
use util::{backends, block_on, ctx, open_rw, pattern, resident_fraction};

/// `cachestat(2)` (Linux 6.5): pages of the whole file cached, dirty, under write-back.
fn cachestat(fd: i32) -> io::Result<(u64, u64, u64)> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        cache: u64,
        dirty: u64,
        writeback: u64,
        evicted: u64,
        recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451; // the same number on every architecture
    let range = Range { off: 0, len: 0 };
    let mut st = Stat::default();
    // SAFETY: both structs are the kernel's layouts, alive for the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const Range,
            &mut st as *mut Stat,
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.cache, st.dirty, st.writeback))
}

/// Waits up to 5 s for `f` to hold.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn advise_drops_and_reads_in_pages() {
    for i in backends() {
        let c = ctx(i);
        let d = util::dir();
        let path = d.path().join("f");
        std::fs::write(&path, pattern(4 << 20, 1)).unwrap();
        let f = open_rw(&c, &path, false);
        block_on(async {
            f.sync_data().await.unwrap();
            f.advise(0, 0, Advice::DontNeed).await.unwrap();
            assert!(
                eventually(|| resident_fraction(&path) < 0.05),
                "{i}: DontNeed left {:.2} of the file cached",
                resident_fraction(&path)
            );
            f.advise(0, 2 << 20, Advice::WillNeed).await.unwrap();
            assert!(
                eventually(|| resident_fraction(&path) >= 0.49),
                "{i}: WillNeed brought in {:.2} of the file",
                resident_fraction(&path)
            );
            for a in [
                Advice::Normal,
                Advice::Sequential,
                Advice::Random,
                Advice::NoReuse,
            ] {
                f.advise(0, 0, a).await.unwrap();
            }
        });
    }
}

#[test]
fn sync_range_writes_the_dirty_pages_out() {
    let probe = tempfile::tempfile().unwrap();
    if let Err(e) = cachestat(probe.as_raw_fd()) {
        eprintln!("SKIP: cachestat(2) is not available here ({e}); it needs Linux 6.5");
        return;
    }
    for i in backends() {
        let c = ctx(i);
        let d = util::dir();
        let f = open_rw(&c, &d.path().join("f"), false);
        block_on(async {
            f.write_all_at(pattern(1 << 20, 2), 0).await.unwrap();
            let (_, dirty, _) = cachestat(f.as_raw_fd()).unwrap();
            assert!(dirty > 0, "{i}: nothing dirty after a write");
            // WRITE alone starts the write-out; waiting for it leaves nothing dirty.
            f.sync_range(0, 1 << 19, SyncRange::WRITE).await.unwrap();
            let all = SyncRange::WAIT_BEFORE | SyncRange::WRITE | SyncRange::WAIT_AFTER;
            f.sync_range(0, 0, all).await.unwrap();
            let (cached, dirty, writeback) = cachestat(f.as_raw_fd()).unwrap();
            assert_eq!((dirty, writeback), (0, 0), "{i}: {cached} cached");
        });
    }
}

#[test]
fn hints_on_a_pipe_are_espipe() {
    for i in backends() {
        let c = ctx(i);
        let d = util::dir();
        let fifo = d.path().join("fifo");
        util::mkfifo(&fifo);
        // Opened read-write, a FIFO needs no peer.
        let f = open_rw(&c, &fifo, false);
        block_on(async {
            let e = f.advise(0, 0, Advice::Sequential).await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ESPIPE), "{i}: {e}");
            let e = f.sync_range(0, 0, SyncRange::WRITE).await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ESPIPE), "{i}: {e}");
        });
    }
}
