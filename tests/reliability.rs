//! Reliability: a full disk, a long mixed load with cancellations checked against a model,
//! flat memory, and no leaked threads.
#![cfg(target_os = "linux")]

mod util;

use std::{
    future::Future,
    io,
    path::Path,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use caio::{Context, File, Implementation};
use futures::{stream::FuturesUnordered, StreamExt};
use util::{
    backends, block_on, ctx, dir, open_rw, pattern, poll_once, threads, wait_for_threads, LoopFs,
};

fn open(c: &Context, path: &Path, direct: bool) -> File {
    open_rw(c, path, direct)
}

#[test]
fn a_full_disk_gives_enospc_keeps_working_and_loses_no_acknowledged_write() {
    for i in backends() {
        for direct in [false, true] {
            let Some(fs) = LoopFs::new(24) else { return };
            let c = ctx(i);
            let ballast = fs.mnt.join("ballast");
            std::fs::write(&ballast, vec![1u8; 4 << 20]).unwrap();
            let f = open(&c, &fs.mnt.join("data"), direct);
            let chunk = 256 << 10;
            let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
            let (mut off, mut enospc) = (0u64, 0);
            while enospc < 3 {
                let data = pattern(chunk, off);
                match block_on(f.write_at(data.clone(), off)) {
                    Ok(0) => panic!("{i} direct={direct}: a write of 0 bytes without an error"),
                    Ok(n) => {
                        acked.push((off, data[..n].to_vec()));
                        off += n as u64;
                    }
                    Err(e) => {
                        assert_eq!(
                            e.raw_os_error(),
                            Some(libc::ENOSPC),
                            "{i} direct={direct}: {e}"
                        );
                        enospc += 1;
                    }
                }
                assert!(
                    off < 64 << 20,
                    "{i} direct={direct}: a 24 MiB filesystem never filled up"
                );
            }
            // Space comes back: the same context and file keep working.
            std::fs::remove_file(&ballast).unwrap();
            let tail = pattern(chunk, 999);
            let at = off.next_multiple_of(4096);
            block_on(f.write_all_at(tail.clone(), at))
                .unwrap_or_else(|e| panic!("{i} direct={direct}: after freeing space: {e}"));
            acked.push((at, tail));
            block_on(f.sync_all()).unwrap();
            // Everything acknowledged is on disk: read it back past the page cache.
            // SAFETY: fadvise on an open descriptor; drops clean cached pages.
            unsafe {
                libc::posix_fadvise(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    0,
                    0,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
            let mut verified = 0usize;
            for (off, data) in &acked {
                let got = block_on(f.read_at(data.len(), *off)).unwrap();
                assert!(
                    got[..] == data[..],
                    "{i} direct={direct}: acknowledged write at {off} did not survive"
                );
                verified += data.len();
            }
            println!("{i} direct={direct}: {enospc} ENOSPC, {} writes acknowledged, {verified} bytes verified", acked.len());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Soak

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SLOT: usize = 64 << 10;
const SLOTS_PER_WORKER: usize = 48;

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    ops: u64,
    reads: u64,
    writes: u64,
    syncs: u64,
    cancelled: u64,
    bytes_verified: u64,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.ops += o.ops;
        self.reads += o.reads;
        self.writes += o.writes;
        self.syncs += o.syncs;
        self.cancelled += o.cancelled;
        self.bytes_verified += o.bytes_verified;
    }
}

enum Slot {
    Known(Vec<u8>),
    /// A write to it was abandoned: once the backend has finished it, each byte is the old
    /// or the new one.
    Quarantined {
        old: Vec<u8>,
        new: Vec<u8>,
    },
}

type OpFut = Pin<Box<dyn Future<Output = (usize, io::Result<Option<caio::Buffer>>)> + Send>>;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

/// One worker: `ops` operations on its own slots, 8 in flight on the shared context;
/// abandoned ones run on `cancel` (a context of its own), so it knows when they are done.
async fn worker(
    file: File,
    cancel: File,
    k: usize,
    ops: u64,
    rss: Arc<std::sync::Mutex<Vec<u64>>>,
) -> Stats {
    let base = (k * SLOTS_PER_WORKER * SLOT) as u64;
    let mut rng = Rng(0x1234_5678 + k as u64 * 7919);
    let mut slots: Vec<Slot> = (0..SLOTS_PER_WORKER)
        .map(|_| Slot::Known(vec![0u8; SLOT]))
        .collect();
    let mut busy = [false; SLOTS_PER_WORKER];
    let mut reads: Vec<Option<Vec<u8>>> = vec![None; SLOTS_PER_WORKER];
    let mut stats = Stats::default();
    let mut inflight: FuturesUnordered<OpFut> = FuturesUnordered::new();
    let verify = |stats: &mut Stats, s: usize, got: caio::Buffer, want: Vec<u8>| {
        assert_eq!(got.len(), want.len(), "worker {k}: slot {s}: short read");
        assert!(
            got[..] == want[..],
            "worker {k}: slot {s} read back wrong data"
        );
        stats.bytes_verified += want.len() as u64;
    };
    while stats.ops < ops || !inflight.is_empty() {
        // Issue on a free, settled slot while there is room.
        let mut issued = false;
        if inflight.len() < 8 && stats.ops < ops {
            let start = rng.below(SLOTS_PER_WORKER as u64) as usize;
            let free = (0..SLOTS_PER_WORKER)
                .map(|d| (start + d) % SLOTS_PER_WORKER)
                .find(|&s| !busy[s] && matches!(slots[s], Slot::Known(_)));
            if let Some(s) = free {
                issued = true;
                stats.ops += 1;
                let off = base + (s * SLOT) as u64;
                let Slot::Known(content) = &mut slots[s] else {
                    unreachable!()
                };
                let roll = rng.below(100);
                let at = rng.below(SLOT as u64) as usize;
                let len = 1 + rng.below((SLOT - at) as u64) as usize;
                let abandon = rng.below(100) < 3;
                if roll < 4 {
                    stats.syncs += 1;
                    let f: Pin<Box<dyn Future<Output = io::Result<()>> + Send>> = if roll < 2 {
                        Box::pin(file.sync_data())
                    } else {
                        Box::pin(file.sync_all())
                    };
                    busy[s] = true;
                    inflight.push(Box::pin(async move { (s, f.await.map(|()| None)) }));
                } else if roll < 50 && abandon {
                    stats.writes += 1;
                    stats.cancelled += 1;
                    let data = pattern(len, rng.next());
                    let mut fut = Box::pin(cancel.write_at(data.clone(), off + at as u64));
                    match poll_once(&mut fut) {
                        Some(r) => {
                            let n = r.unwrap_or_else(|e| panic!("worker {k}: {e}"));
                            content[at..at + n].copy_from_slice(&data[..n]);
                        }
                        None => {
                            drop(fut); // started or waiting for a slot, then abandoned
                            let old = content.clone();
                            let mut new = old.clone();
                            new[at..at + len].copy_from_slice(&data);
                            slots[s] = Slot::Quarantined { old, new };
                        }
                    }
                } else if roll < 50 {
                    stats.writes += 1;
                    let data = pattern(len, rng.next());
                    content[at..at + len].copy_from_slice(&data); // the model, if it succeeds
                    let fut = file.write_at(data, off + at as u64);
                    busy[s] = true;
                    inflight.push(Box::pin(async move {
                        let r = fut.await.and_then(|n| match n == len {
                            true => Ok(None),
                            false => Err(io::Error::other(format!("short write: {n} of {len}"))),
                        });
                        (s, r)
                    }));
                } else if abandon {
                    stats.reads += 1;
                    stats.cancelled += 1;
                    let mut fut = Box::pin(cancel.read_at(len, off + at as u64));
                    if let Some(r) = poll_once(&mut fut) {
                        verify(&mut stats, s, r.unwrap(), content[at..at + len].to_vec());
                    }
                } else {
                    stats.reads += 1;
                    reads[s] = Some(content[at..at + len].to_vec());
                    let fut = file.read_at(len, off + at as u64);
                    busy[s] = true;
                    inflight.push(Box::pin(async move { (s, fut.await.map(Some)) }));
                }
            }
        }
        if issued {
            if k == 0 && stats.ops % 5000 == 0 {
                rss.lock().unwrap().push(rss_bytes());
            }
            continue;
        }
        if let Some((s, r)) = inflight.next().await {
            busy[s] = false;
            if let Some(got) = r.unwrap_or_else(|e| panic!("worker {k}: {e}")) {
                let want = reads[s].take().unwrap();
                verify(&mut stats, s, got, want);
            }
            continue;
        }
        // Nothing in flight and no free slot: every abandoned operation must finish (its
        // context goes idle), then what it left is read back and checked.
        let start = Instant::now();
        while cancel.context().in_flight() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "abandoned operations never finished"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        for (s, slot) in slots.iter_mut().enumerate() {
            if let Slot::Quarantined { old, new } = slot {
                let got = file.read_at(SLOT, base + (s * SLOT) as u64).await.unwrap();
                assert_eq!(got.len(), SLOT);
                for (b, ((g, o), n)) in got.iter().zip(old.iter()).zip(new.iter()).enumerate() {
                    assert!(
                        g == o || g == n,
                        "worker {k}: slot {s} byte {b} is neither the old nor the new"
                    );
                }
                stats.bytes_verified += SLOT as u64;
                *slot = Slot::Known(got.to_vec());
            }
        }
    }
    stats
}

fn soak(i: Implementation, ops_per_worker: u64, workers: usize) -> (Stats, Vec<u64>) {
    let d = dir();
    let path = d.path().join("soak");
    let shared = Context::builder()
        .implementation(i)
        .max_requests(32)
        .build()
        .unwrap();
    let f = open(&shared, &path, false);
    block_on(f.set_len((workers * SLOTS_PER_WORKER * SLOT) as u64)).unwrap();
    let rss = Arc::new(std::sync::Mutex::new(vec![rss_bytes()]));
    let handles: Vec<_> = (0..workers)
        .map(|k| {
            let (f, r) = (f.clone(), Arc::clone(&rss));
            let cancel = open(
                &Context::builder()
                    .implementation(i)
                    .max_requests(4)
                    .build()
                    .unwrap(),
                &path,
                false,
            );
            std::thread::spawn(move || {
                let w = worker(f, cancel, k, ops_per_worker, r);
                if k % 2 == 0 {
                    block_on(w)
                } else {
                    tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap()
                        .block_on(w)
                }
            })
        })
        .collect();
    let mut total = Stats::default();
    for h in handles {
        total.add(h.join().expect("a soak worker panicked"));
    }
    let rss = rss.lock().unwrap().clone();
    (total, rss)
}

fn soak_all(ops_per_worker: u64) {
    for i in backends() {
        let started = Instant::now();
        let (s, rss) = soak(i, ops_per_worker, 4);
        // The first samples include warming up (allocator arenas, buffer caches, threads).
        let warm = rss[rss.len().min(3) - 1];
        let peak = rss.iter().copied().max().unwrap();
        println!(
            "{i}: {} ops ({} reads, {} writes, {} syncs, {} abandoned), {} MiB verified, RSS {} MiB warm, {} MiB peak, {} samples, {:.1} s",
            s.ops,
            s.reads,
            s.writes,
            s.syncs,
            s.cancelled,
            s.bytes_verified >> 20,
            warm >> 20,
            peak >> 20,
            rss.len(),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(s.ops, 4 * ops_per_worker);
        // Flat memory: nothing may grow with the number of operations.
        assert!(
            peak <= warm + (48 << 20),
            "{i}: RSS grew from {warm} to {peak} bytes"
        );
    }
}

#[test]
fn soak_short() {
    soak_all(25_000);
}

/// At least a million operations per backend: `cargo test --test reliability -- --ignored`.
#[test]
#[ignore]
fn soak_long() {
    let ops = std::env::var("CAIO_SOAK_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000u64);
    soak_all(ops.div_ceil(4));
}

#[test]
fn hundreds_of_contexts_leave_no_threads() {
    for i in backends() {
        let d = dir();
        std::fs::write(d.path().join("f"), b"some bytes").unwrap();
        let before = threads();
        for _ in 0..200 {
            let c = ctx(i);
            let f = open(&c, &d.path().join("f"), false);
            assert_eq!(&block_on(f.read_at(4, 5)).unwrap()[..], b"byte");
        }
        wait_for_threads(before, Duration::from_secs(10), i.as_str());
    }
}
