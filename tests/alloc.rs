//! A storage engine's read loop allocates nothing once warm: reads into the caller's
//! buffers through `read_at_into`, counted by a global allocator that counts every
//! allocation of the process (the backends' threads included).
// Unix: these tests use descriptors, fork, signals or Unix permissions; the Windows
// suites are conformance, files, paths and copy (run under wine in CI).
#![cfg(unix)]

mod util;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicU64, Ordering},
};

use caio::{Buffer, Context, Implementation};
use futures::future::join_all;
use util::{backends, block_on, open_rw};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BLOCKS: u64 = 256;
const WARM: u64 = 2_000;
const COUNTED: u64 = 20_000;

/// Allocations over `COUNTED` reads after `WARM`, one at a time.
fn serial(file: &caio::File) -> u64 {
    let mut buf = Buffer::with_capacity(4096);
    let mut run = |n: u64| {
        for k in 0..n {
            let off = (k * 7919 % BLOCKS) * 4096;
            let (r, back) = block_on(file.read_at_into(buf_take(&mut buf), off));
            assert_eq!(r.unwrap(), 4096);
            assert_eq!(back[0], (off / 4096) as u8);
            buf = back;
        }
    };
    run(WARM);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run(COUNTED);
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Allocations over `COUNTED` reads after `WARM`, 16 in flight: 16 lanes, each reading
/// into its own buffer again and again (what a storage engine's I/O tasks do), under
/// `futures::executor::block_on` or (`driven`) under `Context::block_on`.
fn concurrent(ctx: &Context, fd: i32, driven: bool) -> u64 {
    let mut bufs: Vec<Buffer> = (0..16).map(|_| Buffer::with_capacity(4096)).collect();
    let mut run = |n: u64| {
        let lanes = bufs
            .drain(..)
            .enumerate()
            .map(|(lane, mut buf)| async move {
                for k in 0..n / 16 {
                    let off = ((k * 16 + lane as u64) * 7919 % BLOCKS) * 4096;
                    let (r, back) = ctx.read_at_into(buf, fd, off).await;
                    assert_eq!(r.unwrap(), 4096);
                    assert_eq!(back[0], (off / 4096) as u8);
                    buf = back;
                }
                buf
            });
        // join_all allocates its list of lanes once per run, not per read; Context::block_on
        // its waker once per call.
        bufs = if driven {
            ctx.block_on(join_all(lanes))
        } else {
            block_on(join_all(lanes))
        };
    };
    run(WARM);
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run(COUNTED);
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn buf_take(b: &mut Buffer) -> Buffer {
    std::mem::take(b)
}

const CHILD: &str = "CAIO_ALLOC_TEST_CHILD";

/// In a child process per implementation, so that nothing another context left behind
/// (a kernel context being put idle, a thread exiting) is counted: prints one line per
/// kind of file.
#[test]
fn child_counts() {
    let Ok(name) = std::env::var(CHILD) else {
        return;
    };
    let i: Implementation = name.parse().unwrap();
    let path = std::path::PathBuf::from(std::env::var("CAIO_ALLOC_TEST_FILE").unwrap());
    let ctx = Context::builder()
        .implementation(i)
        .max_requests(32)
        .build()
        .unwrap();
    for direct in [true, false] {
        let f = open_rw(&ctx, &path, direct);
        let one = serial(&f);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let many = concurrent(&ctx, fd, false);
        let driven = concurrent(&ctx, fd, true);
        println!(
            "COUNT {i} {} {one} {many} {driven}",
            if direct { "O_DIRECT" } else { "page-cache" }
        );
    }
}

#[test]
fn a_read_loop_into_reused_buffers_allocates_nothing_once_warm() {
    let d = util::dir();
    let path = d.path().join("blocks");
    let data: Vec<u8> = (0..BLOCKS).flat_map(|k| vec![k as u8; 4096]).collect();
    std::fs::write(&path, &data).unwrap();
    let mut report = Vec::new();
    let mut failed = false;
    for i in backends() {
        let mut cmd = util::test_command("child_counts", &[]);
        cmd.env(CHILD, i.as_str())
            .env("CAIO_ALLOC_TEST_FILE", &path);
        let out = util::output_within(cmd, std::time::Duration::from_secs(300));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{i}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines().filter_map(|l| l.split("COUNT ").nth(1)) {
            let f: Vec<&str> = line.split(' ').collect();
            let (one, many, driven): (u64, u64, u64) = (
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            );
            report.push(format!(
                "{} {}: {one} allocations in {COUNTED} reads one at a time, {many} at depth \
                 16, {driven} at depth 16 under Context::block_on",
                f[0], f[1]
            ));
            // At depth: join_all's own list of lanes (2 per run), and now and then a slot
            // for the operation cache while a backend thread still lets go of the last
            // one; a per-read allocation would be 20,000.
            failed |= one > 0 || many > 8 || driven > 8;
        }
    }
    println!("{}", report.join("\n"));
    assert_eq!(report.len(), 2 * backends().len(), "{report:?}");
    assert!(
        !failed,
        "a warm read loop allocated:\n{}",
        report.join("\n")
    );
}
