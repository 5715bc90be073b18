//! The bench itself (Unix: `pread`, `mmap` and `getrusage` are its baselines).

use std::{
    ops::Range,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use caio::{Buffer, ReadManyOptions};
use futures::StreamExt;

const FILE: u64 = 512 << 20;
const RANGES: usize = 20_000;
const TASKS: usize = 32;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Column chunks cut into pages, shuffled (see the module docs).
fn ranges() -> Vec<Range<u64>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(RANGES);
    while out.len() < RANGES {
        let chunk = (1 << 20) + rng.below(3 << 20);
        let start = rng.below(FILE - chunk) & !4095;
        let mut at = start;
        while at < start + chunk && out.len() < RANGES {
            let page = 4096 + rng.below(124 << 10);
            out.push(at..at + page);
            at += page;
        }
    }
    for i in (1..out.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        out.swap(i, j);
    }
    out
}

fn file(dir: &Path) -> PathBuf {
    let p = dir.join("caio-read-many-bench.dat");
    if std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0) != FILE {
        let mut rng = Rng(7);
        let data: Vec<u8> = (0..FILE / 8)
            .flat_map(|_| rng.next().to_le_bytes())
            .collect();
        std::fs::write(&p, data).unwrap();
    }
    p
}

/// User and system CPU time of the whole process (getrusage).
fn process_cpu_split() -> (Duration, Duration) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Bytes read, wall time, CPU time.
type Outcome = (u64, Duration, Duration);

fn measure(f: impl FnOnce() -> u64) -> Outcome {
    let (u0, s0) = process_cpu_split();
    let t = Instant::now();
    let bytes = f();
    let wall = t.elapsed();
    let (u1, s1) = process_cpu_split();
    (bytes, wall, (u1 - u0) + (s1 - s0))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn open(path: &Path, direct: bool) -> caio::File {
    caio::OpenOptions::new()
        .read(true)
        .direct(direct)
        .open(path)
        .await
        .unwrap()
}

fn read_many(path: &Path, ranges: &[Range<u64>], direct: bool) -> Outcome {
    let rt = runtime();
    let f = rt.block_on(open(path, direct));
    measure(|| {
        rt.block_on(async {
            let opts = ReadManyOptions::new()
                .merge_gap(16 << 10)
                .max_merged(1 << 20)
                .max_in_flight(TASKS);
            let mut s = f.read_many(ranges.to_vec(), opts);
            let mut bytes = 0;
            while let Some((_, data)) = s.next().await {
                bytes += data.unwrap().len() as u64;
            }
            bytes
        })
    })
}

/// `TASKS` tasks taking ranges from one queue, each range read by `read` (its bytes).
fn in_tasks<F, R, Fut>(
    rt: &tokio::runtime::Runtime,
    ranges: &[Range<u64>],
    file: F,
    read: R,
) -> Outcome
where
    F: Send + Sync + 'static,
    R: Fn(Arc<F>, Range<u64>) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = u64> + Send + 'static,
{
    let (f, queue) = (Arc::new(file), Arc::new(Mutex::new(ranges.to_vec())));
    measure(|| {
        rt.block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (f, q) = (Arc::clone(&f), Arc::clone(&queue));
                    tokio::spawn(async move {
                        let mut bytes = 0;
                        loop {
                            let Some(r) = q.lock().unwrap().pop() else {
                                return bytes;
                            };
                            bytes += read(Arc::clone(&f), r).await;
                        }
                    })
                })
                .collect();
            let mut bytes = 0;
            for t in tasks {
                bytes += t.await.unwrap();
            }
            bytes
        })
    })
}

/// Each range its own operation, from `TASKS` tasks.
fn read_at(path: &Path, ranges: &[Range<u64>], direct: bool) -> Outcome {
    let rt = runtime();
    let file = rt.block_on(open(path, direct));
    in_tasks(&rt, ranges, file, |f, r| async move {
        let buf = Buffer::with_capacity((r.end - r.start) as usize);
        let (n, _) = f.read_at_into(buf, r.start).await;
        n.unwrap() as u64
    })
}

/// Each range a `pread` on tokio's blocking pool, from `TASKS` tasks.
fn spawn_blocking(path: &Path, ranges: &[Range<u64>]) -> Outcome {
    let rt = runtime();
    let file = std::fs::File::open(path).unwrap();
    in_tasks(&rt, ranges, file, |f, r| async move {
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            f.read_at(&mut buf, r.start).unwrap() as u64
        })
        .await
        .unwrap()
    })
}

/// Each range copied out of a mapping of the file, in one loop.
fn mmap(path: &Path, ranges: &[Range<u64>]) -> Outcome {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a read-only private mapping of the whole file, unmapped below; the file is
    // not changed while it is mapped.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            FILE as usize,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    // SAFETY: the mapping is FILE bytes long and readable.
    let all = unsafe { std::slice::from_raw_parts(addr as *const u8, FILE as usize) };
    let o = measure(|| {
        let mut bytes = 0;
        for r in ranges {
            let end = r.end.min(FILE) as usize;
            let v = std::hint::black_box(all[r.start as usize..end].to_vec());
            bytes += v.len() as u64;
        }
        bytes
    });
    // SAFETY: unmapping exactly what was mapped.
    unsafe { libc::munmap(addr, FILE as usize) };
    o
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let rounds: usize = get("--rounds").and_then(|v| v.parse().ok()).unwrap_or(5);
    let dir =
        get("--dir").map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    let direct = args.iter().any(|a| a == "--direct");
    let cold = args.iter().any(|a| a == "--cold");
    let path = file(&dir);
    let ranges = ranges();
    let asked: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    println!(
        "{} ranges, {} MiB asked, of a {} MiB file in {}{}",
        ranges.len(),
        asked >> 20,
        FILE >> 20,
        dir.display(),
        if direct {
            ", O_DIRECT"
        } else {
            ", page cache (warmed)"
        }
    );
    let systems: Vec<&str> = if direct {
        vec!["caio read_many", "caio read_at, 32 tasks"]
    } else {
        vec![
            "caio read_many",
            "caio read_at, 32 tasks",
            "tokio spawn_blocking + pread, 32 tasks",
            "mmap + copy",
        ]
    };
    let mut mib_s: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    for round in 0..rounds {
        if !direct && !cold {
            let _ = std::fs::read(&path); // warm
        }
        for (k, s) in systems.iter().enumerate() {
            if cold {
                // A cache, not a setting: nothing to restore.
                if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
                    eprintln!("--cold needs root (/proc/sys/vm/drop_caches: {e})");
                    std::process::exit(2);
                }
            }
            let (bytes, wall, c) = match k {
                0 => read_many(&path, &ranges, direct),
                1 => read_at(&path, &ranges, direct),
                2 => spawn_blocking(&path, &ranges),
                _ => mmap(&path, &ranges),
            };
            assert_eq!(bytes, asked, "{s}: every byte");
            let mib = bytes as f64 / (1 << 20) as f64;
            mib_s[k].push(mib / wall.as_secs_f64());
            cpu[k].push(c.as_secs_f64() * 1e3 / mib);
            println!(
                "round {round}: {s:<40} {:>8.0} MiB/s {:>7.2} ms CPU/MiB",
                mib / wall.as_secs_f64(),
                c.as_secs_f64() * 1e3 / mib
            );
        }
    }
    println!("\n| system | MiB/s | CPU ms per MiB | ÷ caio read_at |\n|---|---:|---:|---:|");
    let base = median(mib_s[1].clone());
    for (k, s) in systems.iter().enumerate() {
        let m = median(mib_s[k].clone());
        println!(
            "| {s} | {m:.0} | {:.2} | {:.2} |",
            median(cpu[k].clone()),
            m / base
        );
    }
}
