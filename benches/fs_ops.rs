//! Criterion: what the metadata calls and copies cost through caio, beside std (inline on
//! the caller's thread) and tokio::fs (a `spawn_blocking` each), and what an atomic copy
//! (new file, fsync, rename, fsync of the directory) costs against a plain one.
//!
//! `cargo bench --bench fs_ops`. caio runs on its default selection (`CAIO_IMPL` to pick).

use std::{fs, path::PathBuf, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::executor::block_on;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn metadata_calls(c: &mut Criterion) {
    let d = scratch();
    let p = d.path().join("file");
    fs::write(&p, b"x").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let mut g = c.benchmark_group("metadata");
    let which = caio::Context::global().unwrap().implementation();
    g.bench_function(BenchmarkId::new("caio::fs::metadata", which), |b| {
        b.iter(|| block_on(caio::fs::metadata(&p)).unwrap())
    });
    g.bench_function("tokio::fs::metadata", |b| {
        b.iter(|| rt.block_on(tokio::fs::metadata(&p)).unwrap())
    });
    g.bench_function("std::fs::metadata (inline)", |b| {
        b.iter(|| fs::metadata(&p).unwrap())
    });
    g.bench_function(BenchmarkId::new("caio File::open + close", which), |b| {
        b.iter(|| block_on(async { caio::File::open(&p).await?.close().await }).unwrap())
    });
    g.bench_function("tokio File::open + drop", |b| {
        b.iter(|| rt.block_on(tokio::fs::File::open(&p)).unwrap())
    });
    g.bench_function("std File::open + drop (inline)", |b| {
        b.iter(|| fs::File::open(&p).unwrap())
    });
    g.finish();
}

fn copies(c: &mut Criterion) {
    let d = scratch();
    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let mut g = c.benchmark_group("copy");
    g.measurement_time(Duration::from_secs(4));
    for (label, size) in [
        ("4 KiB", 4usize << 10),
        ("1 MiB", 1 << 20),
        ("64 MiB", 64 << 20),
    ] {
        let src: PathBuf = d.path().join(format!("src-{size}"));
        fs::write(&src, vec![0xA5u8; size]).unwrap();
        let dst = d.path().join(format!("dst-{size}"));
        if size >= 64 << 20 {
            g.sample_size(10);
        }
        g.bench_function(BenchmarkId::new("caio fs::copy", label), |b| {
            b.iter(|| block_on(caio::fs::copy(&src, &dst)).unwrap())
        });
        let atomic = caio::fs::CopyOptions::new().atomic(true);
        g.bench_function(BenchmarkId::new("caio copy atomic (fsync)", label), |b| {
            b.iter(|| block_on(caio::fs::copy_with(&src, &dst, atomic.clone())).unwrap())
        });
        g.bench_function(BenchmarkId::new("std::fs::copy", label), |b| {
            b.iter(|| fs::copy(&src, &dst).unwrap())
        });
        g.bench_function(BenchmarkId::new("tokio::fs::copy", label), |b| {
            b.iter(|| rt.block_on(tokio::fs::copy(&src, &dst)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, metadata_calls, copies);
criterion_main!(benches);
