//! Criterion micro-benchmarks: one 4 KiB page-cache read, end to end, on every backend,
//! beside what users write today (tokio `spawn_blocking` + `pread`) and a plain `pread`.
//!
//! `cargo bench --bench ops`

use std::{fs, path::PathBuf, sync::Arc, time::Duration};

/// A plain positional read: `pread` on Unix, `seek_read` on Windows.
fn pread(f: &fs::File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::read_at(f, buf, off);
    #[cfg(windows)]
    return std::os::windows::fs::FileExt::seek_read(f, buf, off);
}

use caio::{Context, Implementation, OpenOptions};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const FILE_SIZE: u64 = 64 << 20;

fn bench_file() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("caio-ops-bench.dat");
    if fs::metadata(&p)
        .map(|m| m.len() != FILE_SIZE)
        .unwrap_or(true)
    {
        fs::write(&p, vec![0x5Au8; FILE_SIZE as usize]).unwrap();
    }
    let _ = fs::read(&p); // into the page cache
    p
}

fn offsets() -> impl FnMut() -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % (FILE_SIZE / 4096)) * 4096
    }
}

fn cached_read(c: &mut Criterion) {
    let path = bench_file();
    let mut g = c.benchmark_group("4k_page_cache_read");
    for i in Implementation::ALL.into_iter().filter(|i| i.is_available()) {
        let ctx = Context::builder().implementation(i).build().unwrap();
        let f = futures::executor::block_on(OpenOptions::new().read(true).context(ctx).open(&path))
            .unwrap();
        let mut next = offsets();
        g.bench_function(BenchmarkId::new("caio File::read_at", i), |b| {
            b.iter(|| futures::executor::block_on(f.read_at(4096, next())).unwrap())
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let std_file = Arc::new(fs::File::open(&path).unwrap());
    let mut next = offsets();
    g.bench_function("tokio spawn_blocking + pread", |b| {
        b.iter(|| {
            let (f, off) = (Arc::clone(&std_file), next());
            rt.block_on(rt.spawn_blocking(move || {
                let mut buf = vec![0u8; 4096];
                pread(&f, &mut buf, off)
                    .map(|n| buf.truncate(n))
                    .map(|()| buf)
            }))
            .unwrap()
            .unwrap()
        })
    });
    let mut next = offsets();
    let mut buf = vec![0u8; 4096];
    g.bench_function("std pread", |b| {
        b.iter(|| pread(&std_file, &mut buf, next()).unwrap())
    });
    g.finish();
}

fn buffers(c: &mut Criterion) {
    let mut g = c.benchmark_group("buffer_4k");
    g.bench_function("caio Buffer::zeroed (aligned, recycled)", |b| {
        b.iter(|| caio::Buffer::zeroed(4096))
    });
    g.bench_function("vec![0; 4096]", |b| b.iter(|| vec![0u8; 4096]));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    targets = cached_read, buffers
}
criterion_main!(benches);
