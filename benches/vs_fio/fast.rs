//! The fast-device mode (`--fast`): software cost, where the device costs next to nothing.
//!
//! A loop device with direct I/O over a tmpfs file (see `caio::tools::fastdev`) takes 4 KiB random
//! O_DIRECT reads at queue depth 1, 8, 32 and 128 from fio (libaio, io_uring, and psync
//! with one thread per read in flight: a pool of threads without a hand-off), minimal
//! kernel AIO and io_uring loops that batch as caio does (what that rule allows on this
//! device with no software around it), every caio implementation (under
//! `futures::executor`, and under `Context::block_on`, whose thread waits for its own
//! completions, and under tokio's multi-thread and current-thread runtimes, one task per
//! read in flight), compio and glommio (io_uring, each on its own runtime) and tokio
//! (`spawn_blocking` + `pread`), interleaved: each depth runs every system, in an order
//! drawn for the round, before the next depth. Then 4 KiB random O_DIRECT writes at qd 1
//! and 32 (fio, caio under tokio and `block_on`, tokio `spawn_blocking` + `pwrite`). Where the guest's halt polling is off (cpuidle-haltpoll with
//! `guest_halt_poll_ns` at 0, as on the VM the README's results come from), each round then
//! runs the qd 32 points of fio, the minimal loops and caio's `block_on` again, each with
//! it at the driver's default and set back after (the "O_DIRECT, halt poll" suite): what
//! the machine's halted vCPUs cost each of them. Then two page-cache suites: reads on the
//! (cached) 1 GiB file at qd 32 (caio's through a raw descriptor, and the thread backend's
//! and tokio's through a file), and reads of a file in tmpfs at qd 1 (where `RWF_NOWAIT`
//! reads answer EOPNOTSUPP).
//!
//! Every point runs in a process of its own, twice: a timed pass (IOPS; user and system
//! CPU time of the whole process, threads included, from getrusage or fio's own report)
//! and a counted pass under `perf stat` with the kernel's syscall tracepoints, which count
//! every system call of the process without stopping it (strace stops the process at
//! every call: it brings 150k IOPS down to 4k and changes the batching it would measure).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use caio::{Context, Implementation};
use futures::{stream::FuturesUnordered, StreamExt};

use caio::tools::{
    aio_abi::{IoEvent, Iocb, IOCB_CMD_PREAD},
    fastdev::FastDevice,
};

use super::{workload, Args};
use workload::{Pattern, Rng, Workload};

/// The syscalls counted, as perf's tracepoint names, and how the table names them.
const CALLS: [(&str, &str); 9] = [
    ("io_submit", "io_submit"),
    ("io_getevents", "io_getevents"),
    ("io_uring_enter", "io_uring_enter"),
    ("futex", "futex"),
    ("read", "read"),
    ("pread64", "pread"),
    ("newfstat", "fstat"),
    ("statx", "statx"),
    ("sched_yield", "sched_yield"),
];

/// One system measured at one point.
#[derive(Clone, Debug)]
struct Row {
    suite: &'static str,
    system: String,
    qd: usize,
    iops: f64,
    user_us: f64,
    sys_us: f64,
    /// Calls per operation, by the table's name.
    calls: BTreeMap<&'static str, f64>,
    /// Which round of the sweep measured it (in a row of medians, 0).
    round: usize,
}

impl Row {
    /// Whether this row measures the point (suite, system, depth) that `other` does.
    fn same_point(&self, other: &Row) -> bool {
        self.is(other.suite, &other.system, other.qd)
    }

    fn is(&self, suite: &str, system: &str, qd: usize) -> bool {
        self.suite == suite && self.system == system && self.qd == qd
    }
}

/// What a child process measured.
struct Measured {
    ops: u64,
    secs: f64,
    user: f64,
    sys: f64,
}

/// How to run one system on one target.
#[derive(Clone)]
struct Job {
    system: String,
    target: PathBuf,
    len: u64,
    qd: usize,
    direct: bool,
    secs: f64,
    /// Random 4 KiB writes instead of reads.
    write: bool,
}

/// The guest's halt polling (cpuidle-haltpoll): how long an idle vCPU polls for work before
/// it halts to the hypervisor. A halted vCPU is woken by an interrupt through the host,
/// which a polling one does not need.
const HALT_POLL: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";
/// The haltpoll driver's own default, in ns.
const HALT_POLL_DEFAULT: &str = "200000";
/// The suite of the qd 32 points run again with the guest's halt polling at its default.
const HALT_POLL_SUITE: &str = "O_DIRECT, halt poll";

/// The guest's halt polling set to the driver's default for as long as it lives, then set
/// back to what it was (also when the bench unwinds from a panic; a bench killed during
/// such a point leaves it on: `echo 0 > /sys/module/haltpoll/parameters/guest_halt_poll_ns`).
struct HaltPoll {
    old: String,
}

impl HaltPoll {
    /// Why the suite cannot run here, if it cannot: no haltpoll driver, or halt polling
    /// not turned off (then the rows would measure nothing new).
    fn unavailable() -> Option<String> {
        match fs::read_to_string(HALT_POLL) {
            Err(e) => Some(format!("{HALT_POLL}: {e}")),
            Ok(v) if v.trim() != "0" => Some(format!("halt polling is on here ({} ns)", v.trim())),
            Ok(_) => None,
        }
    }

    fn set() -> Result<HaltPoll, String> {
        let old = fs::read_to_string(HALT_POLL).map_err(|e| format!("{HALT_POLL}: {e}"))?;
        fs::write(HALT_POLL, HALT_POLL_DEFAULT).map_err(|e| format!("{HALT_POLL}: {e}"))?;
        Ok(HaltPoll {
            old: old.trim().to_string(),
        })
    }
}

impl Drop for HaltPoll {
    fn drop(&mut self) {
        if let Err(e) = fs::write(HALT_POLL, &self.old) {
            eprintln!("could not set {HALT_POLL} back to {}: {e}", self.old);
        }
    }
}

pub fn run(a: &Args) {
    let dev = match FastDevice::setup(1 << 30) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIP: no fast device: {why}");
            return;
        }
    };
    eprintln!(
        "fast device: {} (direct I/O over {})",
        dev.dev.display(),
        dev.image.display()
    );
    let perf = perf_works();
    if !perf {
        eprintln!("note: perf stat with syscall tracepoints is unavailable: no syscall counts");
    }
    let have_fio = Command::new("fio").arg("--version").output().is_ok();
    let halt_poll = HaltPoll::unavailable();
    if let Some(why) = &halt_poll {
        eprintln!("note: no \"{HALT_POLL_SUITE}\" suite: {why}");
    }
    let mut rows = Vec::new();
    let secs = a.secs;
    let len = dev.size();
    // The counted pass runs in the first round only.
    let mut add = |suite: &'static str, job: Job, round: usize| {
        let timed = measure(&job, false);
        let counted = if perf && round == 0 {
            measure(&job, true)
        } else {
            None
        };
        let Some((m, _)) = timed else {
            eprintln!("{suite}: {} qd {}: failed", job.system, job.qd);
            return;
        };
        let calls = counted
            .map(|(m, c)| {
                c.into_iter()
                    .map(|(k, v)| (k, v as f64 / m.ops.max(1) as f64))
                    .collect()
            })
            .unwrap_or_default();
        let row = Row {
            suite,
            system: job.system.clone(),
            qd: job.qd,
            iops: m.ops as f64 / m.secs,
            user_us: m.user / m.ops.max(1) as f64 * 1e6,
            sys_us: m.sys / m.ops.max(1) as f64 * 1e6,
            calls,
            round,
        };
        eprintln!(
            "{suite:<16} {:<28} qd {:>3}: {:>8.0} IOPS {:>6.2} + {:>6.2} µs CPU/op {:?}",
            row.system, row.qd, row.iops, row.user_us, row.sys_us, row.calls
        );
        rows.push(row);
    };
    let mut systems: Vec<String> = Vec::new();
    if have_fio {
        // psync: as many threads as reads in flight, each in `pread`: what a pool of
        // threads can make of this machine without a hand-off (the thread backend's bound).
        systems.extend([
            "fio libaio".into(),
            "fio io_uring".into(),
            "fio psync".into(),
        ]);
    }
    systems.push(MINIMAL.into());
    systems.push(MINIMAL_FUTURES.into());
    if Implementation::Uring.is_available() {
        systems.push(MINIMAL_URING.into());
    }
    for i in Implementation::ALL {
        if i.is_available() {
            systems.push(format!("caio {i}"));
            if i != Implementation::Blocking {
                // The same, with the thread waiting for its completions itself.
                systems.push(format!("caio {i} block_on"));
                // As users run it: one task per read in flight, on tokio's multi-thread
                // runtime (two workers) and on its current-thread runtime.
                systems.push(format!("caio {i} {TOKIO_MT}"));
                systems.push(format!("caio {i} {TOKIO_CT}"));
            }
        }
    }
    systems.extend([
        "compio".into(),
        GLOMMIO.into(),
        "tokio spawn_blocking+pread".into(),
    ]);
    let job = |system: &str, target: &Path, len, qd, direct| Job {
        system: system.to_string(),
        target: target.to_path_buf(),
        len,
        qd,
        direct,
        secs,
        write: false,
    };

    // 4 KiB random O_DIRECT reads on the fast device.
    // `--qd N` (profiling): that depth only, no page-cache suites. `--rounds N`: the whole
    // interleaved sweep N times; the table takes each point's median. Each round runs the
    // systems of a depth in an order of its own (the same for every run of the bench), so
    // that no system always runs first or always right after the same other one.
    for round in 0..a.rounds.max(1) {
        for qd in [1usize, 8, 32, 128]
            .into_iter()
            .filter(|d| a.qd.is_none_or(|q| q == *d))
        {
            let mut order = systems.clone();
            shuffle(&mut order, (round * 1000 + qd) as u64);
            for s in order.iter().filter(|s| {
                a.backend
                    .is_none_or(|b| s.starts_with(&format!("caio {b}")) || s.starts_with("fio"))
            }) {
                if s == "caio blocking" && qd > 1 {
                    continue; // one at a time whatever the depth
                }
                add("O_DIRECT", job(s, &dev.dev, len, qd, true), round);
            }
        }
        // qd 32 again, each point with the guest's halt polling at the driver's default,
        // set back after it: what the machine's halted vCPUs cost each system.
        if halt_poll.is_none() && a.qd.is_none_or(|q| q == 32) {
            let mut order: Vec<&String> = systems
                .iter()
                .filter(|s| {
                    LOOPS.iter().any(|&(reference, fio, caio)| {
                        s.as_str() == reference
                            || s.as_str() == fio
                            || s.strip_prefix("caio ") == Some(caio)
                    })
                })
                .collect();
            shuffle(&mut order, (round * 1000 + 999) as u64);
            for s in order {
                match HaltPoll::set() {
                    Ok(_on) => add(HALT_POLL_SUITE, job(s, &dev.dev, len, 32, true), round),
                    Err(why) => eprintln!("{HALT_POLL_SUITE}: {s}: {why}"),
                }
            }
        }
    }
    // 4 KiB random O_DIRECT writes at qd 1 and 32: caio under tokio and under `block_on`
    // against fio with the same kernel interface and tokio's `spawn_blocking` + `pwrite`.
    if a.only.as_deref().is_none_or(|o| o == WRITES_SUITE) {
        let writers: Vec<&str> = WRITERS
            .into_iter()
            .filter(|s| s.starts_with("tokio") || systems.iter().any(|k| k == s))
            .filter(|s| {
                a.backend
                    .is_none_or(|b| s.starts_with(&format!("caio {b}")) || s.starts_with("fio"))
            })
            .collect();
        for round in 0..a.rounds.max(1) {
            for qd in [1usize, 32]
                .into_iter()
                .filter(|d| a.qd.is_none_or(|q| q == *d))
            {
                let mut order = writers.clone();
                shuffle(&mut order, (round * 1000 + qd + 7) as u64);
                for s in order {
                    let mut j = job(s, &dev.dev, len, qd, true);
                    j.write = true;
                    add(WRITES_SUITE, j, round);
                }
            }
        }
    }
    if a.qd.is_some() {
        drop(dev);
        return report(a, &rows);
    }
    // The page cache through a raw descriptor at qd 32: the 1 GiB file, cached.
    let _ = fs::read(&a.file);
    for s in [
        "fio libaio",
        "caio-raw linux",
        "caio-raw uring",
        "compio",
        "caio thread",
        "tokio spawn_blocking+pread",
    ] {
        if s.starts_with("fio") && !have_fio {
            continue;
        }
        for round in 0..a.rounds.max(1) {
            add("page cache", job(s, &a.file, super::GIB, 32, false), round);
        }
    }
    // The page cache of a tmpfs file at qd 1 (RWF_NOWAIT answers EOPNOTSUPP there).
    for s in [
        "caio blocking",
        "caio linux",
        "caio uring",
        "caio-raw linux",
        "caio-raw uring",
    ] {
        for round in 0..a.rounds.max(1) {
            add("tmpfs", job(s, &dev.image, len, 1, false), round);
        }
    }
    drop(dev);
    report(a, &rows);
}

/// Puts `v` in an order drawn from `seed` (Fisher–Yates).
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = Rng::new(seed);
    for i in (1..v.len()).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
}

/// One row per point: the median of its rounds' IOPS and CPU times, the counted pass's
/// calls.
fn medians(rows: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in rows {
        if find(&out, r.suite, &r.system, r.qd).is_some() {
            continue;
        }
        let same: Vec<&Row> = rows.iter().filter(|o| o.same_point(r)).collect();
        let mid = |f: fn(&Row) -> f64| median(same.iter().map(|o| f(o)).collect()).unwrap();
        let calls = same
            .iter()
            .find(|o| !o.calls.is_empty())
            .map_or_else(BTreeMap::new, |o| o.calls.clone());
        out.push(Row {
            iops: mid(|o| o.iops),
            user_us: mid(|o| o.user_us),
            sys_us: mid(|o| o.sys_us),
            calls,
            round: 0,
            ..r.clone()
        });
    }
    out
}

/// Whether `perf stat` can count syscall tracepoints (tracefs mounted, as root).
fn perf_works() -> bool {
    if !Path::new("/sys/kernel/tracing/events/syscalls").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
    Command::new("perf")
        .args([
            "stat",
            "-x",
            ",",
            "-e",
            "syscalls:sys_enter_io_submit",
            "--",
            "true",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `job` in a process of its own (under `perf stat` when `counted`): what it
/// measured, and the syscall counts.
fn measure(job: &Job, counted: bool) -> Option<(Measured, BTreeMap<&'static str, u64>)> {
    let secs = if counted { job.secs.min(1.0) } else { job.secs };
    let mut cmd = if counted {
        let events: Vec<String> = CALLS
            .iter()
            .map(|(k, _)| format!("syscalls:sys_enter_{k}"))
            .collect();
        let mut c = Command::new("perf");
        c.args(["stat", "-x", ",", "-e", &events.join(","), "--"]);
        c
    } else {
        Command::new(std::env::current_exe().unwrap())
    };
    let fio = job.system.strip_prefix("fio ");
    if let Some(engine) = fio {
        if counted {
            cmd.arg("fio");
        } else {
            cmd = Command::new("fio");
        }
        cmd.args([
            "--name=fast",
            if job.write {
                "--rw=randwrite"
            } else {
                "--rw=randread"
            },
            "--bs=4k",
            "--time_based",
            "--invalidate=0",
            "--output-format=json",
        ])
        .arg(format!("--ioengine={engine}"))
        .arg(format!("--filename={}", job.target.display()));
        if engine == "psync" {
            // One read at a time per thread, `qd` threads, reported as one job.
            cmd.args(["--thread", "--group_reporting"])
                .arg(format!("--numjobs={}", job.qd));
        } else {
            cmd.arg(format!("--iodepth={}", job.qd));
        }
        cmd.arg(format!("--direct={}", u8::from(job.direct)))
            .arg(format!("--runtime={}ms", (secs * 1000.0) as u64));
    } else {
        if counted {
            cmd.arg(std::env::current_exe().unwrap());
        }
        cmd.args(["--point", &job.system])
            .arg("--target")
            .arg(&job.target)
            .args(["--len", &job.len.to_string()])
            .args(["--qd", &job.qd.to_string()])
            .args(["--secs", &secs.to_string()])
            .args(["--direct", if job.direct { "1" } else { "0" }])
            .args(["--write", if job.write { "1" } else { "0" }]);
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        eprintln!(
            "{}: {}",
            job.system,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let m = if let Some(engine) = fio {
        // With --group_reporting, fio gives the jobs' average CPU share.
        let jobs = if engine == "psync" { job.qd } else { 1 };
        fio_measured(&stdout, secs, jobs as f64, job.write)?
    } else {
        let line = stdout.lines().find_map(|l| l.strip_prefix("POINT "))?;
        let v: Vec<f64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
        Measured {
            ops: v[0] as u64,
            secs: v[1],
            user: v[2],
            sys: v[3],
        }
    };
    let mut calls = BTreeMap::new();
    if counted {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            let f: Vec<&str> = line.split(',').collect();
            let Some(ev) = f.get(2).and_then(|e| e.strip_prefix("syscalls:sys_enter_")) else {
                continue;
            };
            if let (Some(&(_, name)), Ok(n)) =
                (CALLS.iter().find(|(k, _)| *k == ev), f[0].parse::<u64>())
            {
                calls.insert(name, n);
            }
        }
    }
    Some((m, calls))
}

/// Operations, time and CPU from fio's JSON.
fn fio_measured(json: &str, secs: f64, jobs: f64, write: bool) -> Option<Measured> {
    let section = if write {
        "\"write\" : {"
    } else {
        "\"read\" : {"
    };
    let read = &json[json.find(section)?..];
    let ops = super::fio_num(read, "total_ios")?;
    let runtime = super::fio_num(read, "runtime")? / 1000.0;
    let at = json.find("\"usr_cpu\"")?;
    let (u, s) = (
        super::fio_num(&json[at..], "usr_cpu")?,
        super::fio_num(&json[at..], "sys_cpu")?,
    );
    let elapsed = if runtime > 0.0 { runtime } else { secs };
    Some(Measured {
        ops: ops as u64,
        secs: elapsed,
        user: u / 100.0 * elapsed * jobs,
        sys: s / 100.0 * elapsed * jobs,
    })
}

/// In a child: `--point SYSTEM --target PATH --len N --qd N --secs S --direct 0|1
/// --write 0|1`. Prints `POINT ops secs user_secs sys_secs`.
pub fn child(args: &[String]) {
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{k} missing"))
            .clone()
    };
    let system = get("--point");
    let target = PathBuf::from(get("--target"));
    let len: u64 = get("--len").parse().unwrap();
    let qd: usize = get("--qd").parse().unwrap();
    let secs: f64 = get("--secs").parse().unwrap();
    let direct = get("--direct") == "1";
    let write = get("--write") == "1";
    let w = Workload {
        pattern: if write {
            Pattern::RandWrite
        } else {
            Pattern::RandRead
        },
        block: 4096,
        depth: qd,
        duration: Duration::from_secs_f64(secs),
        block_on: system.ends_with(" block_on"),
    };
    let (ops, elapsed, user, sys) = if let Some(name) = system.strip_prefix("caio-raw ") {
        let i: Implementation = name.trim_end_matches(" block_on").parse().unwrap();
        let ctx = Context::builder()
            .implementation(i)
            .max_requests(qd)
            .build()
            .unwrap();
        let f = open_std(&target, direct);
        let o = workload::run_raw(&ctx, f.as_raw_fd(), len, &w).unwrap();
        (o.ops, o.elapsed, o.user, o.sys)
    } else if let Some((name, multi)) = system.strip_prefix("caio ").and_then(|n| {
        [(TOKIO_MT, true), (TOKIO_CT, false)]
            .into_iter()
            .find_map(|(suffix, multi)| Some((n.strip_suffix(&format!(" {suffix}"))?, multi)))
    }) {
        let i = name.parse().unwrap();
        caio_tokio_point(&target, len, qd, secs, (direct, write), i, multi)
    } else if let Some(name) = system.strip_prefix("caio ") {
        let i: Implementation = name.trim_end_matches(" block_on").parse().unwrap();
        let mut ctx = Context::builder().implementation(i).max_requests(qd);
        if i == Implementation::Thread {
            // As many threads as reads in flight, as tokio's blocking pool grows to: with
            // the default (twice the cores, at least 4) only that many reads are in flight.
            ctx = ctx.threads(qd.max(caio::default_threads()));
        }
        let ctx = ctx.build().unwrap();
        let f = futures::executor::block_on(
            caio::OpenOptions::new()
                .read(true)
                .write(write)
                .direct(direct)
                .context(ctx)
                .open(&target),
        )
        .unwrap();
        let o = workload::run(&f, len, &w).unwrap();
        (o.ops, o.elapsed, o.user, o.sys)
    } else if system == "compio" {
        compio_point(&target, len, qd, secs, direct)
    } else if system == GLOMMIO {
        glommio_point(&target, len, qd, secs)
    } else if system == MINIMAL {
        minimal_point(&target, len, qd, secs)
    } else if system == MINIMAL_FUTURES {
        minimal_futures_point(&target, len, qd, secs)
    } else if system == MINIMAL_URING {
        minimal_uring_point(&target, len, qd, secs)
    } else {
        tokio_point(&target, len, qd, secs, direct, write)
    };
    println!(
        "\nPOINT {ops} {} {} {}",
        elapsed.as_secs_f64(),
        user.as_secs_f64(),
        sys.as_secs_f64()
    );
}

fn open_std(path: &Path, direct: bool) -> fs::File {
    open_std_with(path, direct, false)
}

/// [`open_std`], for writing too.
fn open_std_rw(path: &Path, direct: bool) -> fs::File {
    open_std_with(path, direct, true)
}

fn open_std_with(path: &Path, direct: bool, write: bool) -> fs::File {
    let mut o = fs::OpenOptions::new();
    o.read(true).write(write);
    if direct {
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut o, libc::O_DIRECT);
    }
    o.open(path).unwrap()
}

/// A page of memory, for O_DIRECT.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The reference loop: what kernel AIO makes of this device with no software around it,
/// under caio's batching rule (see [`minimal_point`]).
const MINIMAL: &str = "minimal loop, 8+ per call";
/// The same with a future per read (see [`minimal_futures_point`]).
const MINIMAL_FUTURES: &str = "minimal futures loop, 8+ per call";
/// The same on io_uring (see [`minimal_uring_point`]).
const MINIMAL_URING: &str = "minimal io_uring loop, 8+ per call";
/// Each minimal loop, with the fio engine and the caio backend (under `block_on`) it is
/// measured beside.
const LOOPS: [(&str, &str, &str); 3] = [
    (MINIMAL, "fio libaio", "linux block_on"),
    (MINIMAL_FUTURES, "fio libaio", "linux block_on"),
    (MINIMAL_URING, "fio io_uring", "uring block_on"),
];

/// `n` pages for reads in flight, leaked: the kernel is handed raw pointers into them, so
/// they outlive any read, even past a panic (the process is a child that exits after one
/// point), and only raw pointers are made into them.
fn leaked_pages(n: usize) -> *mut Page {
    (0..n)
        .map(|_| Page([0; 4096]))
        .collect::<Vec<_>>()
        .leak()
        .as_mut_ptr()
}

/// A kernel AIO context of the minimal loops, by raw system calls; destroyed when dropped
/// (by then both loops have drained what they sent).
struct RawAio(libc::c_ulong);

impl RawAio {
    fn new(qd: usize) -> RawAio {
        let mut ctx: libc::c_ulong = 0;
        // SAFETY: io_setup writes the new context's id into `ctx`, which outlives the call.
        let r = unsafe { libc::syscall(libc::SYS_io_setup, qd as libc::c_long, &mut ctx) };
        assert_eq!(r, 0, "io_setup: {}", std::io::Error::last_os_error());
        RawAio(ctx)
    }

    /// Sends every iocb of `cbs`.
    ///
    /// # Safety
    /// Each pointer is to an iocb whose buffer outlives its read (both leaked, as
    /// [`AioReads`] makes them).
    unsafe fn submit(&self, cbs: &[*mut Iocb]) {
        // SAFETY: the caller's.
        let n = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.0,
                cbs.len() as libc::c_long,
                cbs.as_ptr(),
            )
        };
        assert_eq!(
            n,
            cbs.len() as libc::c_long,
            "io_submit: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Sleeps (no timeout) until `min` reads are done; how many `events` took.
    fn getevents(&self, min: usize, events: &mut [IoEvent]) -> usize {
        // SAFETY: the kernel writes at most `events.len()` events into `events`.
        let got = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.0,
                min as libc::c_long,
                events.len() as libc::c_long,
                events.as_mut_ptr(),
                std::ptr::null::<libc::timespec>(),
            )
        };
        assert!(got > 0, "io_getevents: {}", std::io::Error::last_os_error());
        got as usize
    }
}

impl Drop for RawAio {
    fn drop(&mut self) {
        // SAFETY: the context is this one's; nothing is in flight any more.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.0) };
    }
}

/// The minimal kernel AIO loops' `qd` reads: an iocb and a page each, both leaked (see
/// [`leaked_pages`]), of 4 KiB at random blocks of a file of `blocks` blocks.
struct AioReads {
    cbs: *mut Iocb,
    pages: *mut Page,
    qd: usize,
    fd: u32,
    blocks: u64,
}

impl AioReads {
    fn new(qd: usize, fd: u32, len: u64) -> AioReads {
        AioReads {
            cbs: vec![Iocb::default(); qd].leak().as_mut_ptr(),
            pages: leaked_pages(qd),
            qd,
            fd,
            blocks: len / 4096,
        }
    }

    /// Read `i`'s iocb, set up for its next read (the last one is complete).
    fn prep(&self, i: usize, rng: &mut Rng) -> *mut Iocb {
        assert!(i < self.qd, "read {i} of {}", self.qd);
        let cb = Iocb {
            aio_data: i as u64,
            aio_lio_opcode: IOCB_CMD_PREAD,
            aio_fildes: self.fd,
            aio_buf: self.pages.wrapping_add(i) as u64,
            aio_nbytes: 4096,
            aio_offset: (rng.next_u64() % self.blocks * 4096) as i64,
            ..Iocb::default()
        };
        // SAFETY: `i < qd`, the length of `cbs`. The kernel reads an iocb only inside
        // `io_submit`, and read `i`'s is either new or its read is complete.
        unsafe { self.cbs.add(i).write(cb) };
        self.cbs.wrapping_add(i)
    }
}

/// The minimal loops' batching rule at depth `qd`, as `block_on`'s: how many completions
/// to sleep for (a quarter of the depth, at least 1), and the least part sent on its own
/// (a quarter of the depth, at least 8).
fn batching(qd: usize) -> (usize, usize) {
    ((qd / 4).max(1), (qd / 4).max(8))
}

/// A minimal kernel AIO loop on one thread, as a C program would write it: `qd` reads in
/// flight; sleep in `io_getevents` until a quarter of them are done; send the next reads
/// back in parts of a quarter of the depth, at least 8, each part once it is built, what
/// is left over with the last part. With 16 or more in flight that is the rule caio's
/// `block_on` follows, so every call carries at least 8 (fio's engine sends one read per
/// call), and what separates caio from this loop is caio's own cost. Below 16, caio
/// spins instead of sleeping, and this loop shows what the spin is worth.
fn minimal_point(
    path: &Path,
    len: u64,
    qd: usize,
    secs: f64,
) -> (u64, Duration, Duration, Duration) {
    let file = open_std(path, true);
    let aio = RawAio::new(qd);
    let reads = AioReads::new(qd, file.as_raw_fd() as u32, len);
    let mut events = vec![IoEvent::default(); qd];
    let mut rng = Rng::new(0x5eed ^ qd as u64);
    let (batch, part) = batching(qd);
    let mut ptrs: Vec<*mut Iocb> = Vec::with_capacity(qd);
    let mut prep = |i: usize| reads.prep(i, &mut rng);
    let submit = |ptrs: &mut Vec<*mut Iocb>| {
        // SAFETY: every pointer is to an iocb of `reads`, whose pages are leaked.
        unsafe { aio.submit(ptrs) };
        ptrs.clear();
    };
    let (cpu0, start) = (workload::process_cpu_split(), Instant::now());
    let deadline = start + Duration::from_secs_f64(secs);
    ptrs.extend((0..qd).map(&mut prep));
    submit(&mut ptrs);
    let (mut ops, mut inflight) = (0u64, qd);
    while inflight > 0 {
        let got = aio.getevents(batch.min(inflight), &mut events);
        inflight -= got;
        ops += got as u64;
        if Instant::now() >= deadline {
            continue; // drain what is in flight
        }
        for (k, ev) in events[..got].iter().enumerate() {
            assert_eq!(ev.res, 4096, "a read failed");
            ptrs.push(prep(ev.data as usize));
            // A part goes once built, while at least as many more are to come.
            if ptrs.len() >= part && got - k > part {
                inflight += ptrs.len();
                submit(&mut ptrs);
            }
        }
        if !ptrs.is_empty() {
            inflight += ptrs.len();
            submit(&mut ptrs);
        }
    }
    let elapsed = start.elapsed();
    let (u, s) = workload::process_cpu_split();
    (ops, elapsed, u - cpu0.0, s - cpu0.1)
}

/// The minimal loop again, but each read is awaited by a future: `qd` lanes, each an
/// `async` block that builds its next read, queues it and awaits its completion slot,
/// polled by a `FuturesUnordered` on one thread. The thread sleeps in `io_getevents`
/// (no timeout) until a quarter of the reads are done, stores each result in its slot and
/// wakes its lane, then polls the woken lanes; the reads they queue go to the kernel in
/// caio's parts under `block_on` (see `caio`'s `Early`: a first part of a quarter of the
/// depth, at least 8, sent as soon as it is queued; each next part twice the one before;
/// what is left with the poll's end). What separates caio linux `block_on` from this loop
/// is what caio does per read beyond a future, a waker and a batched `io_submit`. (Below
/// 16 in flight caio spins instead of sleeping; so does neither loop.)
fn minimal_futures_point(
    path: &Path,
    len: u64,
    qd: usize,
    secs: f64,
) -> (u64, Duration, Duration, Duration) {
    use std::{
        cell::{Cell, RefCell},
        future::poll_fn,
        task::{Context as TaskContext, Poll, Waker},
    };
    /// Where a read's result lands and its lane's waker waits.
    #[derive(Default)]
    struct Slot {
        res: Cell<Option<i64>>,
        waker: RefCell<Option<Waker>>,
    }
    /// Reads queued for `io_submit`, and caio's rule for sending them in parts.
    struct Sender {
        aio: RawAio,
        queued: RefCell<Vec<*mut Iocb>>,
        inflight: Cell<usize>,
        expected: Cell<usize>,
        part: Cell<usize>,
    }
    impl Sender {
        fn flush(&self) {
            let mut q = self.queued.borrow_mut();
            if q.is_empty() {
                return;
            }
            // SAFETY: every pointer is to an iocb of the loop's `AioReads`, whose pages
            // are leaked.
            unsafe { self.aio.submit(&q) };
            self.inflight.set(self.inflight.get() + q.len());
            q.clear();
        }

        fn queue(&self, cb: *mut Iocb) {
            let queued = {
                let mut q = self.queued.borrow_mut();
                q.push(cb);
                q.len()
            };
            let left = self.expected.get().saturating_sub(1);
            self.expected.set(left);
            let part = self.part.get();
            if part > 0 && queued >= part && left >= part {
                self.part.set(part * 2);
                self.flush();
            }
        }
    }
    let file = open_std(path, true);
    let reads = AioReads::new(qd, file.as_raw_fd() as u32, len);
    let slots: Vec<Slot> = (0..qd).map(|_| Slot::default()).collect();
    let (batch, _) = batching(qd);
    let sender = Sender {
        aio: RawAio::new(qd),
        queued: RefCell::new(Vec::with_capacity(qd)),
        inflight: Cell::new(0),
        expected: Cell::new(0),
        part: Cell::new(0),
    };
    let rng = RefCell::new(Rng::new(0x5eed ^ qd as u64));
    let ops = Cell::new(0u64);
    let (cpu0, start) = (workload::process_cpu_split(), Instant::now());
    let deadline = start + Duration::from_secs_f64(secs);
    let lane = |i: usize| {
        let (sender, reads, slot, rng, ops) = (&sender, &reads, &slots[i], &rng, &ops);
        async move {
            while Instant::now() < deadline {
                sender.queue(reads.prep(i, &mut rng.borrow_mut()));
                let res = poll_fn(|cx| match slot.res.take() {
                    Some(r) => Poll::Ready(r),
                    None => {
                        *slot.waker.borrow_mut() = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
                assert_eq!(res, 4096, "a read failed");
                ops.set(ops.get() + 1);
            }
        }
    };
    let mut lanes: FuturesUnordered<_> = (0..qd).map(lane).collect();
    let waker = futures::task::noop_waker();
    let mut cx = TaskContext::from_waker(&waker);
    let mut events = vec![IoEvent::default(); qd];
    loop {
        // Every woken lane runs (the lanes' own wakers tell `FuturesUnordered` which).
        let done = loop {
            match lanes.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(())) => continue,
                Poll::Ready(None) => break true,
                Poll::Pending => break false,
            }
        };
        if done {
            break;
        }
        sender.flush();
        let inflight = sender.inflight.get();
        let got = sender.aio.getevents(batch.min(inflight), &mut events);
        sender.inflight.set(inflight - got);
        sender.expected.set(got);
        // As `Early`: a quarter of what was in flight, at least 8.
        sender.part.set(batching(inflight).1);
        for ev in &events[..got] {
            let slot = &slots[ev.data as usize];
            slot.res.set(Some(ev.res));
            if let Some(w) = slot.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }
    let elapsed = start.elapsed();
    let (u, s) = workload::process_cpu_split();
    (ops.get(), elapsed, u - cpu0.0, s - cpu0.1)
}

/// The same loop on io_uring, as a C program on liburing would write it: sleep in
/// `io_uring_enter` until a quarter of the reads are done; queue the next reads back, and
/// send each part of a quarter of the depth (at least 8) once it is built, while as many
/// more are to come; the last part goes with the next wait, in the same `io_uring_enter`.
/// Its ring is set up as the one caio's `block_on` drives (and fio's engine): one issuer,
/// the completions' task work deferred to the wait. What separates caio's uring `block_on`
/// from it is caio's own cost.
fn minimal_uring_point(
    path: &Path,
    len: u64,
    qd: usize,
    secs: f64,
) -> (u64, Duration, Duration, Duration) {
    use io_uring::{opcode, types, IoUring};
    let file = open_std(path, true);
    let entries = u32::try_from(qd.next_power_of_two()).expect("a depth io_uring takes");
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(entries)
        .expect("io_uring_setup");
    let pages = leaked_pages(qd);
    let blocks = len / 4096;
    let mut rng = Rng::new(0x5eed ^ qd as u64);
    let (batch, part) = batching(qd);
    let fd = types::Fd(file.as_raw_fd());
    let mut prep = |i: usize| {
        let page = pages.wrapping_add(i).cast::<u8>();
        opcode::Read::new(fd, page, 4096)
            .offset(rng.next_u64() % blocks * 4096)
            .build()
            .user_data(i as u64)
    };
    let mut push = |ring: &mut IoUring, i: usize| {
        // SAFETY: the entry reads into page `i` of `pages`, which is leaked; that page's
        // last read is complete (or it has had none).
        unsafe { ring.submission().push(&prep(i)) }.expect("room for every read in flight");
    };
    let (cpu0, start) = (workload::process_cpu_split(), Instant::now());
    let deadline = start + Duration::from_secs_f64(secs);
    for i in 0..qd {
        push(&mut ring, i);
    }
    let (mut ops, mut inflight, mut queued) = (0u64, 0usize, qd);
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(qd);
    while inflight + queued > 0 {
        let want = batch.min(inflight + queued);
        ring.submit_and_wait(want).expect("io_uring_enter");
        inflight += std::mem::take(&mut queued);
        done.clear();
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        inflight -= done.len();
        ops += done.len() as u64;
        if Instant::now() >= deadline {
            continue; // drain what is in flight
        }
        let got = done.len();
        for (k, &(i, res)) in done.iter().enumerate() {
            assert_eq!(res, 4096, "a read failed");
            push(&mut ring, i as usize);
            queued += 1;
            // A part goes once built, while at least as many more are to come.
            if queued >= part && got - k > part {
                ring.submit().expect("io_uring_enter");
                inflight += std::mem::take(&mut queued);
            }
        }
    }
    let elapsed = start.elapsed();
    let (u, s) = workload::process_cpu_split();
    (ops, elapsed, u - cpu0.0, s - cpu0.1)
}

/// compio on its own runtime, one lane per operation in flight, each reading into its own
/// aligned page (leaked: compio's owned buffers must be `'static`).
fn compio_point(
    path: &Path,
    len: u64,
    qd: usize,
    secs: f64,
    direct: bool,
) -> (u64, Duration, Duration, Duration) {
    use compio::io::AsyncReadAt;
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut o = compio::fs::OpenOptions::new();
        o.read(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        let file = o.open(path).await.unwrap();
        let blocks = len / 4096;
        let rng = std::cell::Cell::new(Rng::new(0x5eed ^ qd as u64).0);
        let ops = std::cell::Cell::new(0u64);
        let (cpu0, start) = (workload::process_cpu_split(), Instant::now());
        let deadline = start + Duration::from_secs_f64(secs);
        let lane = |_| async {
            let mut buf: &'static mut [u8] = &mut Box::leak(Box::new(Page([0; 4096]))).0[..];
            while Instant::now() < deadline {
                let mut r = Rng(rng.get());
                let off = r.next_u64() % blocks * 4096;
                rng.set(r.0);
                let compio::BufResult(n, back) = file.read_at(buf, off).await;
                assert_eq!(n.unwrap(), 4096);
                buf = back;
                ops.set(ops.get() + 1);
            }
        };
        let mut lanes: FuturesUnordered<_> = (0..qd).map(lane).collect();
        while lanes.next().await.is_some() {}
        let (u, s) = workload::process_cpu_split();
        (ops.get(), start.elapsed(), u - cpu0.0, s - cpu0.1)
    })
}

/// The glommio row: its own thread-per-core executor on io_uring.
const GLOMMIO: &str = "glommio";

/// glommio as its users write it: `qd` lanes on one executor, each reading with
/// `DmaFile::read_at_aligned` (glommio's O_DIRECT file, a buffer of its own per read).
fn glommio_point(
    path: &Path,
    len: u64,
    qd: usize,
    secs: f64,
) -> (u64, Duration, Duration, Duration) {
    // glommio turns O_DIRECT off for a file whose filesystem is tmpfs, which a device node
    // in /dev (devtmpfs) is: it is opened through a node of the same device on the disk.
    let alias = DeviceAlias::new(path);
    let ex = glommio::LocalExecutorBuilder::default()
        .make()
        .expect("a glommio executor");
    ex.run(async {
        let file = glommio::io::DmaFile::open(alias.path()).await.unwrap();
        let blocks = len / 4096;
        let rng = std::cell::Cell::new(Rng::new(0x5eed ^ qd as u64).0);
        let ops = std::cell::Cell::new(0u64);
        let (cpu0, start) = (workload::process_cpu_split(), Instant::now());
        let deadline = start + Duration::from_secs_f64(secs);
        let lane = |_| async {
            while Instant::now() < deadline {
                let mut r = Rng(rng.get());
                let off = r.next_u64() % blocks * 4096;
                rng.set(r.0);
                let got = file.read_at_aligned(off, 4096).await.unwrap();
                assert_eq!(got.len(), 4096);
                ops.set(ops.get() + 1);
            }
        };
        let mut lanes: FuturesUnordered<_> = (0..qd).map(lane).collect();
        while lanes.next().await.is_some() {}
        let (u, s) = workload::process_cpu_split();
        (ops.get(), start.elapsed(), u - cpu0.0, s - cpu0.1)
    })
}

/// A block device's node outside /dev (in the temporary directory), removed on drop; for
/// anything else, the path itself.
struct DeviceAlias {
    node: Option<PathBuf>,
    path: PathBuf,
}

impl DeviceAlias {
    fn new(path: &Path) -> DeviceAlias {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = fs::metadata(path).unwrap();
        if !meta.file_type().is_block_device() {
            return DeviceAlias {
                node: None,
                path: path.to_path_buf(),
            };
        }
        let node = std::env::temp_dir().join(format!("caio-bench-dev-{}", std::process::id()));
        let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
        // SAFETY: a valid path; a node of the device the bench already opens.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, meta.rdev()) };
        assert_eq!(
            r,
            0,
            "mknod {}: {}",
            node.display(),
            std::io::Error::last_os_error()
        );
        DeviceAlias {
            path: node.clone(),
            node: Some(node),
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DeviceAlias {
    fn drop(&mut self) {
        if let Some(n) = &self.node {
            let _ = fs::remove_file(n);
        }
    }
}

/// The writes suite, and who takes part in it.
const WRITES_SUITE: &str = "O_DIRECT writes";
const WRITERS: [&str; 9] = [
    "fio libaio",
    "fio io_uring",
    "caio linux block_on",
    "caio uring block_on",
    "caio linux tokio-mt",
    "caio linux tokio-ct",
    "caio uring tokio-mt",
    "caio uring tokio-ct",
    "tokio spawn_blocking+pwrite",
];

/// The suffix of caio's rows on tokio's multi-thread runtime (two workers).
const TOKIO_MT: &str = "tokio-mt";
/// The suffix of caio's rows on tokio's current-thread runtime.
const TOKIO_CT: &str = "tokio-ct";

/// caio as a tokio user runs it: `qd` spawned tasks, each reading into one reused buffer
/// with `File::read_at_into` (or writing it with `File::write_at_from`), on the
/// multi-thread runtime with two workers (`multi`) or on the current-thread runtime.
fn caio_tokio_point(
    path: &Path,
    len: u64,
    qd: usize,
    secs: f64,
    (direct, write): (bool, bool),
    i: Implementation,
    multi: bool,
) -> (u64, Duration, Duration, Duration) {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    };
    let rt = if multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .unwrap();
    let mut ctx = Context::builder().implementation(i).max_requests(qd);
    if i == Implementation::Thread {
        ctx = ctx.threads(qd.max(caio::default_threads()));
    }
    let ctx = ctx.build().unwrap();
    let file = Arc::new(
        rt.block_on(
            caio::OpenOptions::new()
                .read(true)
                .write(write)
                .direct(direct)
                .context(ctx)
                .open(path),
        )
        .unwrap(),
    );
    let blocks = len / 4096;
    let rng = Arc::new(Mutex::new(Rng::new(7 ^ qd as u64)));
    let ops = Arc::new(AtomicU64::new(0));
    let (cpu0, start) = (workload::process_cpu_split(), Instant::now());
    let deadline = start + Duration::from_secs_f64(secs);
    rt.block_on(async {
        let tasks: Vec<_> = (0..qd)
            .map(|_| {
                let (file, rng, ops) = (Arc::clone(&file), Arc::clone(&rng), Arc::clone(&ops));
                tokio::spawn(async move {
                    let mut buf = if write {
                        caio::Buffer::from(&[0x5a; 4096][..])
                    } else {
                        caio::Buffer::with_capacity(4096)
                    };
                    while Instant::now() < deadline {
                        let off = rng.lock().unwrap().next_u64() % blocks * 4096;
                        let (n, back) = if write {
                            file.write_at_from(buf, off).await
                        } else {
                            file.read_at_into(buf, off).await
                        };
                        assert_eq!(n.unwrap(), 4096, "a read or write failed");
                        buf = back;
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let (u, s) = workload::process_cpu_split();
    let elapsed = start.elapsed();
    drop(rt);
    (ops.load(Ordering::Relaxed), elapsed, u - cpu0.0, s - cpu0.1)
}

/// What tokio users write: every read through `spawn_blocking` and `pread` (every write
/// through `pwrite`).
fn tokio_point(
    path: &Path,
    len: u64,
    qd: usize,
    secs: f64,
    direct: bool,
    write: bool,
) -> (u64, Duration, Duration, Duration) {
    use std::os::unix::fs::FileExt;
    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    let file = std::sync::Arc::new(if write {
        open_std_rw(path, direct)
    } else {
        open_std(path, direct)
    });
    let blocks = len / 4096;
    let rng = std::sync::Mutex::new(Rng::new(7 ^ qd as u64));
    let ops = std::sync::atomic::AtomicU64::new(0);
    let (cpu0, start) = (workload::process_cpu_split(), Instant::now());
    let deadline = start + Duration::from_secs_f64(secs);
    rt.block_on(async {
        let lane = |_| async {
            let mut buf = caio::Buffer::zeroed(4096);
            while Instant::now() < deadline {
                let off = rng.lock().unwrap().next_u64() % blocks * 4096;
                let f = std::sync::Arc::clone(&file);
                buf = tokio::task::spawn_blocking(move || {
                    if write {
                        f.write_at(&buf, off).unwrap();
                    } else {
                        f.read_at(&mut buf, off).unwrap();
                    }
                    buf
                })
                .await
                .unwrap();
                ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let mut lanes: FuturesUnordered<_> = (0..qd).map(lane).collect();
        while lanes.next().await.is_some() {}
    });
    let (u, s) = workload::process_cpu_split();
    (ops.into_inner(), start.elapsed(), u - cpu0.0, s - cpu0.1)
}

fn find<'a>(rows: &'a [Row], suite: &str, system: &str, qd: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.is(suite, system, qd))
}

/// The median over the sweep's rounds of `f(a) / f(b)`, from the two points' rows of the
/// same round: the machine drifts more from one round to the next (fio libaio at qd 1 made
/// 25k reads a second in one round and 40k in another of the same sweep) than within one.
/// (The page-cache suites run each system's rounds in a row: there a round is the n-th
/// repetition.)
fn paired(all: &[Row], a: &Row, b: &Row, f: fn(&Row) -> f64) -> Option<f64> {
    let v: Vec<f64> = all
        .iter()
        .filter(|ra| ra.same_point(a))
        .filter_map(|ra| {
            all.iter()
                .find(|rb| rb.same_point(b) && rb.round == ra.round)
                .map(|rb| f(ra) / f(rb))
        })
        .collect();
    median(v)
}

/// The middle value (of an even number, the mean of the two in the middle).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// One row of the targets table: a target when `bound` is set (at least, or at most),
/// else a figure shown for reference beside one.
struct Target {
    name: String,
    value: Option<f64>,
    bound: Option<f64>,
    at_most: bool,
}

impl Target {
    fn status(&self) -> &'static str {
        match (self.value, self.bound) {
            (_, None) => "reference",
            (Some(v), Some(b)) if (self.at_most && v <= b) || (!self.at_most && v >= b) => "met",
            _ => "**missed**",
        }
    }
}

/// The targets, each checked against this run. The O_DIRECT targets are checked
/// on the `block_on` rows (the thread waits for its own completions, as fio's does); the
/// same ratios under a generic executor are shown for reference.
fn targets(rows: &[Row], all: &[Row]) -> Vec<Target> {
    let mut t = Vec::new();
    let mut ratio = |name: String, a: Option<&Row>, b: Option<&Row>, bound: Option<f64>| {
        t.push(Target {
            name,
            value: a.zip(b).and_then(|(a, b)| paired(all, a, b, |r| r.iops)),
            bound,
            at_most: false,
        });
    };
    // Each backend against what users would pick instead, at every depth.
    let per_depth = [
        ("linux block_on", "fio libaio", Some(1.0)),
        ("linux", "fio libaio", None),
        ("uring block_on", "fio io_uring", Some(1.0)),
        ("uring", "fio io_uring", None),
        ("thread", "tokio spawn_blocking+pread", None),
        ("thread block_on", "tokio spawn_blocking+pread", None),
        ("thread", "fio psync", None),
        // Under tokio, as users run it.
        ("linux tokio-mt", "fio libaio", Some(1.0)),
        ("linux tokio-ct", "fio libaio", Some(1.0)),
        ("uring tokio-mt", "fio io_uring", Some(1.0)),
        ("uring tokio-ct", "fio io_uring", Some(1.0)),
        ("thread tokio-mt", "tokio spawn_blocking+pread", Some(2.0)),
        ("thread tokio-ct", "tokio spawn_blocking+pread", Some(2.0)),
    ];
    for (caio, other, bound) in per_depth {
        for qd in [1, 8, 32, 128] {
            ratio(
                format!("{caio} ÷ {other}, qd {qd}"),
                find(rows, "O_DIRECT", &format!("caio {caio}"), qd),
                find(rows, "O_DIRECT", other, qd),
                bound,
            );
        }
    }
    // Under tokio, ahead of the Rust peers on their own runtimes.
    for caio in [
        "linux tokio-mt",
        "linux tokio-ct",
        "uring tokio-mt",
        "uring tokio-ct",
    ] {
        for peer in [GLOMMIO, "compio"] {
            for qd in [1, 8, 32, 128] {
                ratio(
                    format!("{caio} ÷ {peer}, qd {qd}"),
                    find(rows, "O_DIRECT", &format!("caio {caio}"), qd),
                    find(rows, "O_DIRECT", peer, qd),
                    Some(1.0),
                );
            }
        }
    }
    // Writes, against fio with the same interface and against tokio.
    for (caio, other) in [
        ("linux tokio-mt", "fio libaio"),
        ("linux tokio-ct", "fio libaio"),
        ("linux block_on", "fio libaio"),
        ("uring tokio-mt", "fio io_uring"),
        ("uring tokio-ct", "fio io_uring"),
        ("uring block_on", "fio io_uring"),
        ("linux tokio-mt", "tokio spawn_blocking+pwrite"),
        ("uring tokio-mt", "tokio spawn_blocking+pwrite"),
    ] {
        for qd in [1, 32] {
            ratio(
                format!("writes: {caio} ÷ {other}, qd {qd}"),
                find(rows, WRITES_SUITE, &format!("caio {caio}"), qd),
                find(rows, WRITES_SUITE, other, qd),
                None,
            );
        }
    }
    // What kernel AIO and io_uring make of this device under caio's batching rule with no
    // software around it, against fio; and caio against that.
    for qd in [1, 8, 32, 128] {
        for (reference, fio, caio) in LOOPS {
            let min = find(rows, "O_DIRECT", reference, qd);
            ratio(
                format!("{reference} ÷ {fio}, qd {qd}"),
                min,
                find(rows, "O_DIRECT", fio, qd),
                None,
            );
            ratio(
                format!("{caio} ÷ {reference}, qd {qd}"),
                find(rows, "O_DIRECT", &format!("caio {caio}"), qd),
                min,
                None,
            );
        }
    }
    // The same at qd 32 with the guest's halt polling on, each point against fio in that
    // setting, and each system against itself without it (from the same round).
    if find(rows, HALT_POLL_SUITE, "fio libaio", 32).is_some() {
        let (on, off) = (
            |s: &str| find(rows, HALT_POLL_SUITE, s, 32),
            |s: &str| find(rows, "O_DIRECT", s, 32),
        );
        // Two loops share fio libaio and caio linux: each line once.
        let mut done: Vec<String> = Vec::new();
        for (reference, fio, caio) in LOOPS {
            let caio = format!("caio {caio}");
            if !done.contains(&caio) {
                ratio(
                    format!("halt poll, qd 32: {caio} ÷ {fio}"),
                    on(&caio),
                    on(fio),
                    None,
                );
            }
            ratio(
                format!("halt poll, qd 32: {reference} ÷ {fio}"),
                on(reference),
                on(fio),
                None,
            );
            for s in [fio, reference, caio.as_str()] {
                if done.iter().any(|d| d == s) {
                    continue;
                }
                ratio(
                    format!("qd 32, {s}: with halt polling ÷ without"),
                    on(s),
                    off(s),
                    None,
                );
                done.push(s.to_string());
            }
        }
    }
    // What a pool of threads can reach here at most, against tokio's.
    for qd in [1, 8, 32, 128] {
        ratio(
            format!("fio psync (qd threads) ÷ tokio spawn_blocking+pread, qd {qd}"),
            find(rows, "O_DIRECT", "fio psync", qd),
            find(rows, "O_DIRECT", "tokio spawn_blocking+pread", qd),
            None,
        );
    }
    ratio(
        "page cache, raw descriptor, qd 32: linux ÷ fio libaio".into(),
        find(rows, "page cache", "caio-raw linux", 32),
        find(rows, "page cache", "fio libaio", 32),
        Some(0.9),
    );
    // The thread backend's lead over tokio where the issue measured it (3.6× in
    // benches/results/results.md): cached reads at qd 32, a hop per read either way.
    ratio(
        "page cache, qd 32: thread ÷ tokio spawn_blocking+pread".into(),
        find(rows, "page cache", "caio thread", 32),
        find(rows, "page cache", "tokio spawn_blocking+pread", 32),
        Some(3.0),
    );
    for s in ["linux", "uring"] {
        ratio(
            format!("tmpfs page cache, qd 1: {s} ÷ blocking"),
            find(rows, "tmpfs", &format!("caio {s}"), 1),
            find(rows, "tmpfs", "caio blocking", 1),
            Some(0.8),
        );
    }
    // CPU per operation and batching, at qd 32 (and 128).
    let cpu = |r: &Row| r.user_us + r.sys_us;
    for (system, bound) in [("caio linux block_on", Some(1.0)), ("caio linux", None)] {
        let (l, f) = (
            find(rows, "O_DIRECT", system, 32),
            find(rows, "O_DIRECT", "fio libaio", 32),
        );
        t.push(Target {
            name: format!("CPU per op at qd 32: {system} ÷ fio libaio (at most)"),
            value: l.zip(f).and_then(|(l, f)| paired(all, l, f, cpu)),
            bound,
            at_most: true,
        });
    }
    for (system, bound) in [("caio linux block_on", Some(8.0)), ("caio linux", None)] {
        for qd in [32, 128] {
            t.push(Target {
                name: format!("operations per io_submit, {system}, qd {qd}"),
                value: find(rows, "O_DIRECT", system, qd)
                    .and_then(|r| r.calls.get("io_submit").map(|s| 1.0 / s)),
                bound,
                at_most: false,
            });
        }
    }
    // Under tokio: CPU per read against fio's at every depth, and reads per submission.
    for (caio, fio, call) in [
        ("linux tokio-mt", "fio libaio", "io_submit"),
        ("linux tokio-ct", "fio libaio", "io_submit"),
        ("uring tokio-mt", "fio io_uring", "io_uring_enter"),
        ("uring tokio-ct", "fio io_uring", "io_uring_enter"),
    ] {
        let system = format!("caio {caio}");
        for qd in [1, 8, 32, 128] {
            let (c, f) = (
                find(rows, "O_DIRECT", &system, qd),
                find(rows, "O_DIRECT", fio, qd),
            );
            t.push(Target {
                name: format!("CPU per op: {caio} ÷ {fio}, qd {qd} (at most)"),
                value: c.zip(f).and_then(|(c, f)| paired(all, c, f, cpu)),
                bound: Some(1.1),
                at_most: true,
            });
        }
        for qd in [32, 128] {
            t.push(Target {
                name: format!("operations per {call}, {system}, qd {qd}"),
                value: find(rows, "O_DIRECT", &system, qd)
                    .and_then(|r| r.calls.get(call).map(|s| 1.0 / s)),
                bound: Some(8.0),
                at_most: false,
            });
        }
    }
    t
}

fn report(a: &Args, all: &[Row]) {
    let rows = &medians(all);
    let out = a.out.join("fast");
    fs::create_dir_all(&out).unwrap();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {}. Fast device: a loop device with direct I/O over a 1 GiB tmpfs file; \
         4 KiB random reads, {} s per point, every point in its own process, the whole \
         sweep interleaved {} time(s), the median shown. A ratio (`vs fio`, the targets) \
         is the median of the rounds' ratios, each of two points of the same round. CPU: \
         user + system µs per operation, every thread of the process. Calls: system calls \
         per operation, counted by `perf stat` (syscall tracepoints) in a separate pass.\n",
        super::machine(),
        a.secs,
        a.rounds.max(1)
    );
    if let Ok(ns) = fs::read_to_string(HALT_POLL) {
        let _ = writeln!(
            md,
            "Guest halt polling (`{HALT_POLL}`): {} ns. The \"{HALT_POLL_SUITE}\" suite, if \
             any, runs the qd 32 points again with it at the driver's default, \
             {HALT_POLL_DEFAULT} ns, set back after each point.\n",
            ns.trim()
        );
    }
    let names: Vec<&str> = CALLS.iter().map(|(_, n)| *n).collect();
    let _ = writeln!(
        md,
        "| suite | system | qd | IOPS | vs fio | CPU µs/op (user + sys) | {} |",
        names.join(" | ")
    );
    let _ = writeln!(
        md,
        "|---|---|---:|---:|---:|---:|{}",
        "---:|".repeat(names.len())
    );
    let mut csv = format!("suite,system,qd,iops,user_us,sys_us,{}\n", names.join(","));
    for r in rows {
        let limit = if r.system.contains("uring") || r.system == "compio" || r.system == GLOMMIO {
            "fio io_uring"
        } else {
            "fio libaio"
        };
        let vs = find(rows, r.suite, limit, r.qd)
            .filter(|f| f.system != r.system)
            .and_then(|f| paired(all, r, f, |x| x.iops))
            .map_or(String::new(), |v| format!("{v:.2}"));
        let calls: Vec<String> = names
            .iter()
            .map(|n| r.calls.get(n).map_or(String::new(), |v| format!("{v:.2}")))
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.0} | {vs} | {:.2} + {:.2} | {} |",
            r.suite,
            r.system,
            r.qd,
            r.iops,
            r.user_us,
            r.sys_us,
            calls.join(" | ")
        );
        let _ = writeln!(
            csv,
            "{},{},{},{:.0},{:.3},{:.3},{}",
            r.suite,
            r.system,
            r.qd,
            r.iops,
            r.user_us,
            r.sys_us,
            calls.join(",")
        );
    }
    let _ = writeln!(md, "\nTargets (ratios from this run):\n");
    let _ = writeln!(md, "| target | measured | wanted | |");
    let _ = writeln!(md, "|---|---:|---:|---|");
    for t in targets(rows, all) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.name,
            t.value.map_or("n/a".into(), |v| format!("{v:.2}")),
            t.bound.map_or("".into(), |b| format!("{b}")),
            t.status()
        );
    }
    print!("{md}");
    fs::write(out.join("results.md"), &md).unwrap();
    fs::write(out.join("results.csv"), &csv).unwrap();
    let points: Vec<super::Point> = rows
        .iter()
        .filter(|r| r.suite == "O_DIRECT")
        .map(|r| (r.system.clone(), r.qd, r.iops))
        .map(plot_point)
        .collect();
    plot(&out, &points);
}

/// Draws the plot again from the `results.csv` of the last sweep in `a.out` (`--replot`),
/// with no new measurement.
pub fn replot(a: &Args) {
    let out = a.out.join("fast");
    let path = out.join("results.csv");
    let csv = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // suite,system,qd,iops,...: the O_DIRECT rows.
    let points: Vec<super::Point> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() < 4 || f[0] != "O_DIRECT" {
                return None;
            }
            Some((f[1].to_string(), f[2].parse().ok()?, f[3].parse().ok()?))
        })
        .map(plot_point)
        .collect();
    plot(&out, &points);
}

fn plot_point((system, qd, iops): (String, usize, f64)) -> super::Point {
    super::Point {
        suite: "randread-direct",
        system,
        depth: qd,
        iops,
        mib_s: iops * 4096.0 / (1 << 20) as f64,
        cpu_us_per_op: f64::NAN,
        peak_rss_mib: f64::NAN,
    }
}

fn plot(out: &Path, points: &[super::Point]) {
    match super::plot_titled(
        &out.join("iops_vs_qd.png"),
        points,
        "4 KiB random reads, O_DIRECT, fast device (loop over tmpfs)",
    ) {
        Ok(_) => eprintln!("wrote {}", out.join("iops_vs_qd.png").display()),
        Err(e) => eprintln!("no plot: {e}"),
    }
}
