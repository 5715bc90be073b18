//! caio beside fio (the machine's limit) on the same file, in the same run.
//!
//! `cargo bench --bench vs_fio` (add `-- --secs 10 --file /path` to change the defaults:
//! 5 s per point, a 1 GiB file under target/). Needs `fio` on PATH for its column.

#[path = "../src/bin/caio/workload.rs"]
mod workload;

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use caio::{Context, Implementation};
use workload::{Pattern, Workload};

const GIB: u64 = 1 << 30;

struct Args {
    file: PathBuf,
    secs: u64,
    /// Only this queue depth (profiling).
    qd: Option<usize>,
    /// Only caio's linux backend, no fio or thread column (profiling).
    linux_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        file: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("caio-bench-1g.dat"),
        secs: 5,
        qd: None,
        linux_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--file" => a.file = it.next().expect("--file PATH").into(),
            "--secs" => a.secs = it.next().expect("--secs N").parse().expect("--secs N"),
            "--linux-only" => a.linux_only = true,
            "--qd" => a.qd = Some(it.next().expect("--qd N").parse().expect("--qd N")),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// A 1 GiB file of non-zero bytes, written once and kept.
fn ensure_file(path: &Path) {
    if fs::metadata(path).map(|m| m.len() == GIB).unwrap_or(false) {
        return;
    }
    eprintln!("laying out {} (1 GiB)...", path.display());
    let mut f = File::create(path).unwrap();
    let mut rng = workload::Rng::new(42);
    let chunk: Vec<u8> = (0..1 << 20).map(|_| rng.next() as u8).collect();
    for _ in 0..1024 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

struct Fio {
    iops: f64,
    mib_s: f64,
}

/// Runs fio with libaio; `None` when fio is missing or fails.
fn fio(path: &Path, rw: &str, bs: usize, depth: usize, direct: bool, secs: u64) -> Option<Fio> {
    let out = Command::new("fio")
        .args([
            "--name=caio-bench",
            "--ioengine=libaio",
            "--time_based",
            "--group_reporting",
            "--output-format=json",
        ])
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={bs}"))
        .arg(format!("--iodepth={depth}"))
        .arg(format!("--direct={}", u8::from(direct)))
        .arg("--invalidate=0")
        .arg(format!("--runtime={secs}"))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("fio failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let section = if rw.contains("write") {
        "\"write\" : {"
    } else {
        "\"read\" : {"
    };
    let body = &json[json.find(section)?..];
    let num = |key: &str| -> Option<f64> {
        let at = body.find(&format!("\"{key}\" : "))? + key.len() + 5;
        body[at..]
            .split(|c: char| c == ',' || c.is_whitespace())
            .next()?
            .parse()
            .ok()
    };
    Some(Fio {
        iops: num("iops")?,
        mib_s: num("bw_bytes")? / (1 << 20) as f64,
    })
}

fn caio(i: Implementation, path: &Path, w: Workload, direct: bool) -> Option<workload::Outcome> {
    let ctx = Context::builder()
        .implementation(i)
        .max_requests(w.depth.max(1))
        .build()
        .ok()?;
    let f = futures::executor::block_on(
        caio::OpenOptions::new()
            .read(true)
            .write(true)
            .direct(direct)
            .context(ctx)
            .open(path),
    )
    .expect("open the bench file");
    Some(workload::run(&f, GIB, &w).expect("workload"))
}

fn main() {
    let a = args();
    ensure_file(&a.file);
    let secs = a.secs;
    println!(
        "# caio vs fio (libaio), {} s per point, file {}",
        secs,
        a.file.display()
    );
    println!("# 4 KiB random reads, O_DIRECT");
    println!("| qd | fio libaio IOPS | caio linux IOPS | linux/fio | caio thread IOPS | thread/fio | linux CPU/op |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for depth in [1usize, 32, 128]
        .into_iter()
        .filter(|d| a.qd.is_none_or(|q| q == *d))
    {
        let w = Workload {
            pattern: Pattern::RandRead,
            block: 4096,
            depth,
            duration: Duration::from_secs(secs),
        };
        let f = (!a.linux_only)
            .then(|| fio(&a.file, "randread", 4096, depth, true, secs))
            .flatten();
        let l = caio(Implementation::Linux, &a.file, w, true);
        let t = (!a.linux_only)
            .then(|| caio(Implementation::Thread, &a.file, w, true))
            .flatten();
        let fi = f.as_ref().map_or(f64::NAN, |f| f.iops);
        let li = l.map_or(f64::NAN, |o| o.iops());
        let ti = t.map_or(f64::NAN, |o| o.iops());
        println!(
            "| {depth} | {fi:.0} | {li:.0} | {:.2} | {ti:.0} | {:.2} | {:.1} µs |",
            li / fi,
            ti / fi,
            l.map_or(f64::NAN, |o| o.cpu_per_op().as_secs_f64() * 1e6)
        );
        let _ = f.map(|f| f.mib_s);
    }
}
