//! The bench itself: Linux only (fio's kernel interfaces, loop devices, glommio).

// The bench is one crate root; its fast-device half lives beside it.
#[path = "fast.rs"]
mod fast;

use std::{
    fmt::Write as _,
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use caio::{tools::workload, Context, Implementation};
use futures::{stream::FuturesUnordered, StreamExt};
use workload::{Outcome, Pattern, Rng, Workload};

const GIB: u64 = 1 << 30;

struct Args {
    file: PathBuf,
    out: PathBuf,
    secs: f64,
    only: Option<String>,
    /// Only this queue depth in the O_DIRECT random-read suite (profiling).
    qd: Option<usize>,
    /// Only this backend, and no fio (profiling).
    backend: Option<Implementation>,
    /// The fast-device mode.
    fast: bool,
    /// Sweeps of the fast-device mode (medians are reported).
    rounds: usize,
    /// Only draw the fast-device plot again, from the last sweep's `results.csv`.
    replot: bool,
}

fn args() -> Args {
    let mut a = Args {
        file: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("caio-bench-1g.dat"),
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/results"),
        secs: 3.0,
        only: None,
        qd: None,
        backend: None,
        fast: false,
        rounds: 1,
        replot: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--file" => a.file = it.next().expect("--file PATH").into(),
            "--out" => a.out = it.next().expect("--out DIR").into(),
            "--secs" => a.secs = it.next().expect("--secs N").parse().expect("--secs N"),
            "--only" => a.only = it.next(),
            "--fast" => a.fast = true,
            "--replot" => a.replot = true,
            "--rounds" => a.rounds = it.next().expect("--rounds N").parse().expect("--rounds N"),
            "--qd" => a.qd = Some(it.next().expect("--qd N").parse().expect("--qd N")),
            "--backend" => {
                a.backend = Some(
                    it.next()
                        .expect("--backend NAME")
                        .parse()
                        .expect("a backend name"),
                )
            }
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
    let mut rng = Rng::new(42);
    let chunk: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
    for _ in 0..1024 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
}

/// One measured point.
#[derive(Clone)]
struct Point {
    suite: &'static str,
    system: String,
    depth: usize,
    iops: f64,
    mib_s: f64,
    cpu_us_per_op: f64,
    peak_rss_mib: f64,
}

/// Peak RSS since the last reset (`/proc/self/status` VmHWM; reset through clear_refs).
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn drop_caches() -> bool {
    Command::new("sync").status().is_ok() && fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// fio with libaio and with io_uring (the machine's limit for the linux and the uring
/// backends); the points fio gave.
fn fio(path: &Path, rw: &str, bs: usize, depth: usize, direct: bool, secs: f64) -> Vec<Point> {
    ["libaio", "io_uring"]
        .into_iter()
        .filter_map(|engine| fio_engine(engine, path, rw, bs, depth, direct, secs))
        .collect()
}

/// The number after `"key" : ` in fio's JSON `body`.
fn fio_num(body: &str, key: &str) -> Option<f64> {
    let at = body.find(&format!("\"{key}\" : "))? + key.len() + 5;
    body[at..]
        .split(|c: char| c == ',' || c.is_whitespace())
        .next()?
        .parse()
        .ok()
}

/// fio with `engine`; `None` when fio is missing or fails.
fn fio_engine(
    engine: &str,
    path: &Path,
    rw: &str,
    bs: usize,
    depth: usize,
    direct: bool,
    secs: f64,
) -> Option<Point> {
    let out = Command::new("fio")
        .args([
            "--name=caio-bench",
            "--time_based",
            "--time_based",
            "--group_reporting",
            "--output-format=json",
        ])
        .arg(format!("--ioengine={engine}"))
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={bs}"))
        .arg(format!("--iodepth={depth}"))
        .arg(format!("--direct={}", u8::from(direct)))
        .arg("--invalidate=0")
        .arg(format!("--runtime={}ms", (secs * 1000.0) as u64))
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
    let iops = fio_num(body, "iops")?;
    let cpu = json.find("\"usr_cpu\"").and_then(|at| {
        let (u, s) = (
            fio_num(&json[at..], "usr_cpu")?,
            fio_num(&json[at..], "sys_cpu")?,
        );
        Some((u + s) / 100.0 * secs / (iops * secs) * 1e6)
    });
    Some(Point {
        suite: "",
        system: format!("fio {engine}"),
        depth,
        iops,
        mib_s: fio_num(body, "bw_bytes")? / (1 << 20) as f64,
        cpu_us_per_op: cpu.unwrap_or(f64::NAN),
        peak_rss_mib: f64::NAN,
    })
}

fn from_outcome(system: String, depth: usize, o: Outcome) -> Point {
    Point {
        suite: "",
        system,
        depth,
        iops: o.iops(),
        mib_s: o.mib_per_sec(),
        cpu_us_per_op: o.cpu_per_op().as_secs_f64() * 1e6,
        peak_rss_mib: peak_rss_mib(),
    }
}

fn caio_point(i: Implementation, path: &Path, w: Workload, direct: bool) -> Option<Point> {
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
    reset_peak_rss();
    let o = workload::run(&f, GIB, &w).expect("workload");
    Some(from_outcome(format!("caio {i}"), w.depth, o))
}

/// What users write today: every read through tokio's blocking pool.
fn tokio_point(path: &Path, depth: usize, secs: f64) -> Point {
    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let file = Arc::new(File::open(path).unwrap());
    let blocks = GIB / 4096;
    reset_peak_rss();
    let cpu0 = workload::process_cpu_split();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let ops = rt.block_on(async {
        let mut rng = Rng::new(7);
        let mut inflight = FuturesUnordered::new();
        let spawn = |off: u64| {
            let f = Arc::clone(&file);
            tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; 4096];
                f.read_at(&mut buf, off)
                    .map(|n| buf.truncate(n))
                    .map(|()| buf)
            })
        };
        for _ in 0..depth {
            inflight.push(spawn(rng.next_u64() % blocks * 4096));
        }
        let mut ops = 0u64;
        while let Some(r) = inflight.next().await {
            r.unwrap().unwrap();
            ops += 1;
            if Instant::now() < deadline {
                inflight.push(spawn(rng.next_u64() % blocks * 4096));
            }
        }
        ops
    });
    let o = Outcome::since(ops, ops * 4096, start, cpu0);
    from_outcome("tokio spawn_blocking+pread".into(), depth, o)
}

/// A plain synchronous loop of pread calls (one at a time).
fn pread_point(path: &Path, secs: f64) -> Point {
    let file = File::open(path).unwrap();
    let blocks = GIB / 4096;
    let mut rng = Rng::new(9);
    let mut buf = vec![0u8; 4096];
    reset_peak_rss();
    let cpu0 = workload::process_cpu_split();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut ops = 0u64;
    while ops % 256 != 0 || Instant::now() < deadline {
        file.read_at(&mut buf, rng.next_u64() % blocks * 4096)
            .unwrap();
        ops += 1;
    }
    let o = Outcome::since(ops, ops * 4096, start, cpu0);
    from_outcome("std pread loop".into(), 1, o)
}

fn copy_points(src: &Path, runs: usize) -> Vec<Point> {
    let dst = src.with_extension("copy");
    let cold = drop_caches();
    let mut points = Vec::new();
    type Copier = Box<dyn Fn(&Path, &Path) -> io::Result<()>>;
    let copiers: Vec<(&str, Copier)> = vec![
        (
            "caio fs::copy",
            Box::new(|a: &Path, b: &Path| {
                futures::executor::block_on(caio::fs::copy(a, b)).map(drop)
            }),
        ),
        (
            "std::fs::copy",
            Box::new(|a: &Path, b: &Path| fs::copy(a, b).map(drop)),
        ),
        (
            "cp",
            Box::new(|a: &Path, b: &Path| {
                let s = Command::new("cp").arg(a).arg(b).status()?;
                if s.success() {
                    Ok(())
                } else {
                    Err(io::Error::other("cp failed"))
                }
            }),
        ),
    ];
    let mut times = vec![Vec::new(); copiers.len()];
    for _ in 0..runs {
        // Interleaved, so drift hits all alike.
        for (k, (_, copy)) in copiers.iter().enumerate() {
            let _ = fs::remove_file(&dst);
            if cold {
                drop_caches();
            }
            let start = Instant::now();
            copy(src, &dst).unwrap();
            let _ = Command::new("sync").status(); // writeback counts, for everyone
            times[k].push(start.elapsed().as_secs_f64());
        }
    }
    let _ = fs::remove_file(&dst);
    for (k, (name, _)) in copiers.iter().enumerate() {
        let mut t = times[k].clone();
        t.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        points.push(Point {
            suite: "",
            system: format!(
                "{name}{}",
                if cold {
                    " (cold cache, with sync)"
                } else {
                    " (with sync)"
                }
            ),
            depth: 0,
            iops: f64::NAN,
            mib_s: GIB as f64 / median / (1 << 20) as f64,
            cpu_us_per_op: f64::NAN,
            peak_rss_mib: f64::NAN,
        });
    }
    points
}

pub fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.iter().any(|a| a == "--point") {
        return fast::child(&argv);
    }
    let a = args();
    if a.replot {
        return fast::replot(&a);
    }
    ensure_file(&a.file);
    if a.fast {
        return fast::run(&a);
    }
    fs::create_dir_all(&a.out).unwrap();
    let secs = a.secs;
    let want = |suite: &str| a.only.as_deref().is_none_or(|o| o == suite);
    let backends: Vec<_> = Implementation::ALL
        .into_iter()
        .filter(|i| i.is_available() && a.backend.is_none_or(|b| b == *i))
        .collect();
    let have_fio = a.backend.is_none() && Command::new("fio").arg("--version").output().is_ok();
    if !have_fio {
        eprintln!("fio is not installed: its column is left out (apt-get install fio)");
    }
    let mut points: Vec<Point> = Vec::new();
    let mut add = |suite: &'static str, p: Option<Point>| {
        if let Some(mut p) = p {
            p.suite = suite;
            eprintln!(
                "{suite:<22} {:<34} qd {:>3}: {:>10.0} IOPS {:>8.1} MiB/s {:>6.2} µs CPU/op",
                p.system, p.depth, p.iops, p.mib_s, p.cpu_us_per_op
            );
            points.push(p);
        }
    };
    let w = |pattern, block, depth| Workload {
        pattern,
        block,
        depth,
        duration: Duration::from_secs_f64(secs),
        block_on: false,
    };

    if want("randread-direct") {
        for depth in [1usize, 4, 16, 32, 64, 128]
            .into_iter()
            .filter(|d| a.qd.is_none_or(|q| q == *d))
        {
            if have_fio {
                for p in fio(&a.file, "randread", 4096, depth, true, secs) {
                    add("randread-direct", Some(p));
                }
            }
            for &i in &backends {
                if i == Implementation::Blocking && depth > 1 {
                    continue; // one at a time, whatever the depth
                }
                add(
                    "randread-direct",
                    caio_point(i, &a.file, w(Pattern::RandRead, 4096, depth), true),
                );
            }
        }
    }
    if want("randread-cached") {
        let _ = fs::read(&a.file); // warm: the whole file in the page cache
        for depth in [1usize, 32] {
            if have_fio {
                for p in fio(&a.file, "randread", 4096, depth, false, secs) {
                    add("randread-cached", Some(p));
                }
            }
            for &i in &backends {
                add(
                    "randread-cached",
                    caio_point(i, &a.file, w(Pattern::RandRead, 4096, depth), false),
                );
            }
            add("randread-cached", Some(tokio_point(&a.file, depth, secs)));
        }
        add("randread-cached", Some(pread_point(&a.file, secs)));
    }
    if want("randwrite-direct") {
        if have_fio {
            for p in fio(&a.file, "randwrite", 4096, 32, true, secs) {
                add("randwrite-direct", Some(p));
            }
        }
        for &i in &backends {
            add(
                "randwrite-direct",
                caio_point(i, &a.file, w(Pattern::RandWrite, 4096, 32), true),
            );
        }
    }
    if want("seq-direct") {
        for (suite, rw, pattern) in [
            ("read-1m-direct", "read", Pattern::SeqRead),
            ("write-1m-direct", "write", Pattern::SeqWrite),
        ] {
            if have_fio {
                for p in fio(&a.file, rw, 1 << 20, 8, true, secs) {
                    add(suite, Some(p));
                }
            }
            for &i in &backends {
                add(suite, caio_point(i, &a.file, w(pattern, 1 << 20, 8), true));
            }
        }
    }
    if want("copy") {
        for p in copy_points(&a.file, 3) {
            add("copy-1g", Some(p));
        }
    }
    report(&a, &points);
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    >> 20
            })
        })
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores ({cpu}), {mem} GiB, Linux {}", kernel.trim())
}

fn report(a: &Args, points: &[Point]) {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {}. File: 1 GiB on {}. {} s per point.\n",
        machine(),
        a.file.parent().unwrap().display(),
        a.secs
    );
    let _ = writeln!(
        md,
        "| suite | system | qd | IOPS | MiB/s | CPU µs/op | peak RSS MiB | vs fio |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
    let mut csv = String::from("suite,system,qd,iops,mib_s,cpu_us_per_op,peak_rss_mib\n");
    for p in points {
        // uring against fio's io_uring engine, everything else against libaio.
        let limit = if p.system.contains("uring") {
            "fio io_uring"
        } else {
            "fio libaio"
        };
        let fio = points
            .iter()
            .find(|f| f.suite == p.suite && f.depth == p.depth && f.system == limit);
        let ratio = fio
            .filter(|f| f.system != p.system)
            .map_or(String::new(), |f| {
                if p.iops.is_finite() {
                    format!("{:.2}", p.iops / f.iops)
                } else {
                    format!("{:.2}", p.mib_s / f.mib_s)
                }
            });
        let num = |v: f64, d: usize| {
            if v.is_finite() {
                format!("{v:.d$}")
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {ratio} |",
            p.suite,
            p.system,
            if p.depth == 0 {
                String::new()
            } else {
                p.depth.to_string()
            },
            num(p.iops, 0),
            num(p.mib_s, 1),
            num(p.cpu_us_per_op, 2),
            num(p.peak_rss_mib, 1)
        );
        let _ = writeln!(
            csv,
            "{},{},{},{:.0},{:.1},{:.3},{:.1}",
            p.suite, p.system, p.depth, p.iops, p.mib_s, p.cpu_us_per_op, p.peak_rss_mib
        );
    }
    print!("{md}");
    fs::write(a.out.join("results.md"), &md).unwrap();
    fs::write(a.out.join("results.csv"), &csv).unwrap();
    let title = "4 KiB random reads, O_DIRECT, 1 GiB file";
    match plot_titled(&a.out.join("iops_vs_qd.png"), points, title) {
        Ok(true) => eprintln!("wrote {}", a.out.join("iops_vs_qd.png").display()),
        Ok(false) => eprintln!("no O_DIRECT random-read points: no plot"),
        Err(e) => eprintln!("no plot: {e}"),
    }
}

/// IOPS against queue depth, 4 KiB O_DIRECT random reads, one line per system.
fn plot_titled(
    path: &Path,
    points: &[Point],
    title: &str,
) -> Result<bool, Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let pts: Vec<&Point> = points
        .iter()
        .filter(|p| p.suite == "randread-direct")
        .collect();
    if pts.is_empty() {
        return Ok(false);
    }
    let font = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ]
    .iter()
    .find_map(|p| fs::read(p).ok())
    .ok_or("no DejaVuSans.ttf (apt-get install fonts-dejavu-core)")?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| "cannot load the font")?;
    let mut systems: Vec<String> = pts.iter().map(|p| p.system.clone()).collect();
    systems.dedup();
    systems.sort();
    systems.dedup();
    let max = pts.iter().map(|p| p.iops).fold(0.0, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d((1f64..128f64).log_scale(), 0f64..max)?;
    chart
        .configure_mesh()
        .x_desc("queue depth")
        .y_desc("IOPS")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .label_style(("sans-serif", 15))
        .draw()?;
    // Kelly's colours of maximum contrast: a line for each of up to 14 systems.
    let colors = [
        RGBColor(0, 0, 0),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(0, 158, 115),
        RGBColor(213, 94, 0),
        RGBColor(0, 114, 178),
        RGBColor(204, 121, 167),
        RGBColor(128, 62, 117),
        RGBColor(193, 0, 32),
        RGBColor(129, 112, 102),
        RGBColor(0, 125, 52),
        RGBColor(246, 118, 142),
        RGBColor(83, 55, 122),
        RGBColor(127, 24, 13),
    ];
    for (k, system) in systems.iter().enumerate() {
        let color = colors[k % colors.len()];
        // caio's lines are thick with round marks; what it is compared with, thin with
        // triangles.
        let ours = system.starts_with("caio");
        let width = if ours { 3 } else { 1 };
        let mut line: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| &p.system == system)
            .map(|p| (p.depth as f64, p.iops))
            .collect();
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(width)))?
            .label(system.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
        if ours {
            chart.draw_series(
                line.iter()
                    .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
            )?;
        } else {
            chart.draw_series(
                line.iter()
                    .map(|&(x, y)| TriangleMarker::new((x, y), 5, color.filled())),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(true)
}
