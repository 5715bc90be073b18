//! `caio::fs` against `tokio::fs`: the same operations on both, on every backend, with
//! the same results, errors and files afterwards; and what a tokio program relies on
//! beyond the calls: a dropped file's write kept at exit, warnings it can see,
//! conversions to and from std's files and descriptors, `Send + Sync` futures.
//!
//! On Windows (under wine in CI) the same, but the descriptor conversions and `/dev/full`.
#![cfg(feature = "tokio")]

mod util;

#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::{
    io::{self, SeekFrom},
    path::{Path, PathBuf},
    time::Duration,
};

use caio::{Context, Implementation};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use util::pattern;

/// One step of a sequence on an open file.
#[derive(Debug, Clone)]
enum Op {
    Write(usize, u64),
    Read(usize),
    Seek(SeekFrom),
    SetLen(u64),
    Flush,
    SyncAll,
    SyncData,
    /// Positional, beside the cursor (std's `FileExt` on tokio's side).
    WriteAt(usize, u64, u64),
    ReadAt(usize, u64),
    /// Both files dropped with their writes pending, and opened again.
    Reopen,
    Len,
}

fn op() -> impl Strategy<Value = Op> {
    let seek = prop_oneof![
        (0u64..120_000).prop_map(SeekFrom::Start),
        (-50_000i64..50_000).prop_map(SeekFrom::Current),
        (-60_000i64..10_000).prop_map(SeekFrom::End),
    ];
    prop_oneof![
        4 => (0usize..40_000, any::<u64>()).prop_map(|(l, s)| Op::Write(l, s)),
        4 => (0usize..40_000).prop_map(Op::Read),
        2 => seek.prop_map(Op::Seek),
        1 => (0u64..120_000).prop_map(Op::SetLen),
        1 => Just(Op::Flush),
        1 => Just(Op::SyncAll),
        1 => Just(Op::SyncData),
        1 => (0usize..20_000, 0u64..100_000, any::<u64>()).prop_map(|(l, o, s)| Op::WriteAt(l, o, s)),
        1 => (0usize..20_000, 0u64..120_000).prop_map(|(l, o)| Op::ReadAt(l, o)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Len),
    ]
}

/// What a step came to: its value, or the error's kind and number.
#[derive(PartialEq, Eq)]
enum Out {
    Unit,
    N(u64),
    Data(Vec<u8>),
    Err(io::ErrorKind, Option<i32>),
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Out::Unit => write!(f, "()"),
            Out::N(n) => write!(f, "{n}"),
            // Its length and where its first non-zero byte is: enough to tell two apart.
            Out::Data(d) => write!(
                f,
                "{} bytes (first non-zero at {:?}, sum {})",
                d.len(),
                d.iter().position(|&b| b != 0),
                d.iter().map(|&b| u64::from(b)).sum::<u64>()
            ),
            Out::Err(k, e) => write!(f, "Err({k:?}, {e:?})"),
        }
    }
}

fn out<T>(r: io::Result<T>, f: impl FnOnce(T) -> Out) -> Out {
    match r {
        Ok(v) => f(v),
        Err(e) => Out::Err(e.kind(), e.raw_os_error()),
    }
}

/// A runtime whose blocking pool has one thread: tokio's `File` runs its operations
/// there in order, so a blocking task spawned after a drop runs after the dropped file's
/// write.
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(1)
        .build()
        .unwrap()
}

async fn open_tokio(path: &Path, append: bool) -> tokio::fs::File {
    tokio::fs::OpenOptions::new()
        .read(true)
        .write(!append)
        .append(append)
        .create(true)
        .open(path)
        .await
        .unwrap()
}

async fn open_caio(ctx: &Context, path: &Path, append: bool, direct: bool) -> caio::File {
    caio::fs::OpenOptions::new()
        .read(true)
        .write(!append)
        .append(append)
        .create(true)
        .direct(direct)
        .context(ctx.clone())
        .open(path)
        .await
        .unwrap()
}

/// Runs `ops` on a tokio file and a caio file (on `i`, O_DIRECT if `direct`), step by
/// step; every step's outcome and the files at the end must be the same.
fn differential(
    i: Implementation,
    direct: bool,
    append: bool,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (tp, cp) = (d.path().join("tokio"), d.path().join("caio"));
    let ctx = util::ctx(i);
    let rt = tokio_runtime();
    rt.block_on(async {
        let mut t = open_tokio(&tp, append).await;
        let mut c = open_caio(&ctx, &cp, append, direct).await;
        // Positional writes on tokio's side go through a handle in the same mode: on an
        // append-mode file the OS writes at the end, whatever the offset.
        let t_std = std::fs::OpenOptions::new()
            .read(true)
            .write(!append)
            .append(append)
            .open(&tp)
            .unwrap();
        for (k, op) in ops.iter().enumerate() {
            let (a, b) = match *op {
                Op::Write(len, seed) => {
                    let data = pattern(len, seed);
                    (
                        out(t.write(&data).await, |n| Out::N(n as u64)),
                        out(c.write(&data).await, |n| Out::N(n as u64)),
                    )
                }
                Op::Read(len) => {
                    let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
                    let a = out(t.read(&mut x).await, |n| Out::Data(x[..n].to_vec()));
                    let b = out(c.read(&mut y).await, |n| Out::Data(y[..n].to_vec()));
                    (a, b)
                }
                Op::Seek(to) => (out(t.seek(to).await, Out::N), out(c.seek(to).await, Out::N)),
                Op::SetLen(n) => (
                    out(t.set_len(n).await, |()| Out::Unit),
                    out(c.set_len(n).await, |()| Out::Unit),
                ),
                Op::Flush => (
                    out(t.flush().await, |()| Out::Unit),
                    out(c.flush().await, |()| Out::Unit),
                ),
                Op::SyncAll => (
                    out(t.sync_all().await, |()| Out::Unit),
                    out(c.sync_all().await, |()| Out::Unit),
                ),
                Op::SyncData => (
                    out(t.sync_data().await, |()| Out::Unit),
                    out(c.sync_data().await, |()| Out::Unit),
                ),
                Op::WriteAt(len, off, seed) => {
                    // Positional I/O does not wait for the cursor's write: settle both
                    // first, so that the order of the two is known.
                    t.flush().await.unwrap();
                    c.flush().await.unwrap();
                    let data = pattern(len, seed);
                    (
                        out(write_all_at(&t_std, &data, off), |()| Out::Unit),
                        out(c.write_all_at(data, off).await, |()| Out::Unit),
                    )
                }
                Op::ReadAt(len, off) => {
                    t.flush().await.unwrap();
                    c.flush().await.unwrap();
                    let mut x = vec![0u8; len];
                    let a = out(read_at(&t_std, &mut x, off), |n| Out::Data(x[..n].to_vec()));
                    let b = out(c.read_at(len, off).await, |buf| Out::Data(buf.to_vec()));
                    (a, b)
                }
                Op::Reopen => {
                    drop(t);
                    drop(c);
                    tokio::task::spawn_blocking(|| ()).await.unwrap();
                    assert!(
                        ctx.wait_idle_timeout(Duration::from_secs(20)),
                        "the dropped file's write is still pending"
                    );
                    t = open_tokio(&tp, append).await;
                    c = open_caio(&ctx, &cp, append, direct).await;
                    (Out::Unit, Out::Unit)
                }
                Op::Len => {
                    t.flush().await.unwrap();
                    c.flush().await.unwrap();
                    (
                        out(t.metadata().await, |m| Out::N(m.len())),
                        out(c.metadata().await, |m| Out::N(m.len())),
                    )
                }
            };
            prop_assert_eq!(&a, &b, "step {} ({:?}) of {:?}", k, op, ops);
        }
        t.flush().await.unwrap();
        c.flush().await.unwrap();
        Ok(())
    })?;
    let (x, y) = (std::fs::read(&tp).unwrap(), std::fs::read(&cp).unwrap());
    prop_assert!(
        x == y,
        "the files differ: {} and {} bytes",
        x.len(),
        y.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn cursor_io_matches_tokio_on_every_backend(
        ops in proptest::collection::vec(op(), 1..40),
        append in proptest::bool::weighted(0.2),
    ) {
        for i in util::backends() {
            differential(i, false, append, &ops)?;
        }
    }

    #[test]
    fn cursor_io_on_o_direct_matches_tokio_buffered(ops in proptest::collection::vec(op(), 1..30)) {
        for i in util::backends() {
            differential(i, true, false, &ops)?;
        }
    }
}

/// One step of a sequence of path calls. Paths are picked from a few names, some of
/// which are bad (missing parents, a file as a directory, a NUL byte, empty).
#[derive(Debug, Clone)]
enum PathOp {
    Write(usize, usize),
    Read(usize),
    Copy(usize, usize),
    Rename(usize, usize),
    RemoveFile(usize),
    CreateDir(usize),
    CreateDirAll(usize),
    RemoveDir(usize),
    RemoveDirAll(usize),
    ReadDir(usize),
    Metadata(usize),
    TryExists(usize),
    DirBuilder(usize, bool),
}

const NAMES: &[&str] = &[
    "a",
    "b",
    "d",
    "d/a",
    "d/e/f",
    "a/x",
    "missing/x",
    "nul\0byte",
    "d/../b",
];

fn path_op() -> impl Strategy<Value = PathOp> {
    let n = 0..NAMES.len();
    prop_oneof![
        3 => (n.clone(), 0usize..5000).prop_map(|(p, l)| PathOp::Write(p, l)),
        2 => n.clone().prop_map(PathOp::Read),
        2 => (n.clone(), n.clone()).prop_map(|(a, b)| PathOp::Copy(a, b)),
        2 => (n.clone(), n.clone()).prop_map(|(a, b)| PathOp::Rename(a, b)),
        1 => n.clone().prop_map(PathOp::RemoveFile),
        1 => n.clone().prop_map(PathOp::CreateDir),
        1 => n.clone().prop_map(PathOp::CreateDirAll),
        1 => n.clone().prop_map(PathOp::RemoveDir),
        1 => n.clone().prop_map(PathOp::RemoveDirAll),
        2 => n.clone().prop_map(PathOp::ReadDir),
        1 => n.clone().prop_map(PathOp::Metadata),
        1 => n.clone().prop_map(PathOp::TryExists),
        1 => (n, any::<bool>()).prop_map(|(p, r)| PathOp::DirBuilder(p, r)),
    ]
}

/// Whether two paths name one file.
#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Whether two paths name one file: their canonical paths (Windows has no stable file
/// identity in std).
#[cfg(windows)]
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// std's positional read, as tokio's users reach it: `pread`, or `seek_read`.
fn read_at(f: &std::fs::File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::read_at(f, buf, off);
    #[cfg(windows)]
    return std::os::windows::fs::FileExt::seek_read(f, buf, off);
}

/// std's positional write of all of `data`.
#[cfg_attr(unix, allow(unused_mut))]
fn write_all_at(f: &std::fs::File, mut data: &[u8], mut off: u64) -> io::Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::FileExt::write_all_at(f, data, off);
    #[cfg(windows)]
    {
        while !data.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(f, data, off)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => {
                    data = &data[n..];
                    off += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// Runs one path step with the module `fs` (tokio's or caio's) under `root`.
macro_rules! path_step {
    ($fs:path, $root:expr, $op:expr) => {{
        use $fs as fs;
        let at = |i: usize| $root.join(NAMES[i]);
        match $op {
            PathOp::Write(p, len) => out(fs::write(at(p), pattern(len, p as u64)).await, |()| {
                Out::Unit
            }),
            PathOp::Read(p) => out(fs::read(at(p)).await, Out::Data),
            // Wine's CopyFileExW reports no progress, so std's (and tokio's) count is 0
            // there: on Windows the count is left out, and the trees compare the copy.
            PathOp::Copy(a, b) => out(fs::copy(at(a), at(b)).await, |n| {
                Out::N(if cfg!(windows) { 0 } else { n })
            }),
            PathOp::Rename(a, b) => out(fs::rename(at(a), at(b)).await, |()| Out::Unit),
            PathOp::RemoveFile(p) => out(fs::remove_file(at(p)).await, |()| Out::Unit),
            PathOp::CreateDir(p) => out(fs::create_dir(at(p)).await, |()| Out::Unit),
            PathOp::CreateDirAll(p) => out(fs::create_dir_all(at(p)).await, |()| Out::Unit),
            PathOp::RemoveDir(p) => out(fs::remove_dir(at(p)).await, |()| Out::Unit),
            PathOp::RemoveDirAll(p) => out(fs::remove_dir_all(at(p)).await, |()| Out::Unit),
            PathOp::ReadDir(p) => {
                let listed = async {
                    let mut names = Vec::new();
                    let mut rd = fs::read_dir(at(p)).await?;
                    while let Some(e) = rd.next_entry().await? {
                        let t = e.file_type().await?;
                        names.push(format!(
                            "{}:{}",
                            e.file_name().to_string_lossy(),
                            t.is_dir()
                        ));
                    }
                    names.sort();
                    Ok::<_, io::Error>(names.join(",").into_bytes())
                };
                out(listed.await, Out::Data)
            }
            PathOp::Metadata(p) => out(fs::metadata(at(p)).await, |m| {
                Out::N(m.len() * 2 + m.is_dir() as u64)
            }),
            PathOp::TryExists(p) => out(fs::try_exists(at(p)).await, |b| Out::N(b as u64)),
            PathOp::DirBuilder(p, r) => out(
                fs::DirBuilder::new().recursive(r).create(at(p)).await,
                |()| Out::Unit,
            ),
        }
    }};
}

fn path_differential(ops: &[PathOp]) -> Result<(), TestCaseError> {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (tr, cr) = (d.path().join("t"), d.path().join("c"));
    std::fs::create_dir(&tr).unwrap();
    std::fs::create_dir(&cr).unwrap();
    let rt = tokio_runtime();
    for (k, op) in ops.iter().enumerate() {
        if let PathOp::Copy(a, b) = *op {
            if same_file(&tr.join(NAMES[a]), &tr.join(NAMES[b])) {
                // std and tokio truncate the file; caio refuses (see its docs).
                continue;
            }
        }
        let a = rt.block_on(async { path_step!(tokio::fs, tr, op.clone()) });
        let b = rt.block_on(async { path_step!(caio::fs, cr, op.clone()) });
        prop_assert_eq!(&a, &b, "step {} ({:?}) of {:?}", k, op, ops);
    }
    prop_assert_eq!(util::tree(&tr), util::tree(&cr));
    Ok(())
}

#[test]
fn child() {
    let Ok(case) = std::env::var("CAIO_TOKIO_FS_CHILD") else {
        return;
    };
    match case.as_str() {
        "paths" => {
            let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
                cases: 64,
                ..ProptestConfig::default()
            });
            runner
                .run(&proptest::collection::vec(path_op(), 1..30), |ops| {
                    path_differential(&ops)
                })
                .unwrap();
        }
        "exit_file" | "exit_writer" => {
            // 3 MiB written and the file dropped unfinished; the process then returns
            // from `main` (here, the test harness's).
            let path = PathBuf::from(std::env::var("CAIO_TOKIO_FS_FILE").unwrap());
            let data = pattern(3 << 20, 7);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut f = caio::fs::File::create(&path).await.unwrap();
                if case == "exit_file" {
                    f.write_all(&data).await.unwrap();
                } else {
                    let mut w = f.writer();
                    w.write_all(&data).await.unwrap();
                    drop(w);
                }
                drop(f);
            });
            drop(rt);
        }
        "warn_no_logger" | "warn_logger" => {
            if case == "warn_logger" {
                log::set_logger(&CountingLogger).unwrap();
                log::set_max_level(log::LevelFilter::Warn);
            }
            let ctx = caio::Context::new();
            assert!(ctx.is_ok());
            // The selection is made once: a second look says nothing again.
            let _ = caio::Context::global();
        }
        other => panic!("no case {other}"),
    }
    println!("CHILD OK {case}");
}

struct CountingLogger;

impl log::Log for CountingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        println!("LOGGED {}", record.args());
    }

    fn flush(&self) {}
}

fn run_child(case: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut vars = vec![("CAIO_TOKIO_FS_CHILD", case)];
    vars.extend_from_slice(env);
    let out = util::run_test_child("child", &vars, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&format!("CHILD OK {case}")),
        "{case} {env:?}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn path_calls_match_tokio_on_every_backend() {
    for i in util::backends() {
        run_child("paths", &[("CAIO_IMPL", i.as_str())]);
    }
}

#[test]
fn a_file_or_writer_dropped_with_writes_pending_loses_nothing_at_exit() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = d.path().join("out");
    let want = pattern(3 << 20, 7);
    for i in util::backends() {
        for case in ["exit_file", "exit_writer"] {
            for run in 0..10 {
                let _ = std::fs::remove_file(&path);
                run_child(
                    case,
                    &[
                        ("CAIO_IMPL", i.as_str()),
                        ("CAIO_TOKIO_FS_FILE", path.to_str().unwrap()),
                    ],
                );
                let got = std::fs::read(&path).unwrap();
                assert!(
                    got == want,
                    "{i} {case} run {run}: {} of {} bytes in the file",
                    got.len(),
                    want.len()
                );
            }
        }
    }
}

#[test]
fn a_selection_warning_reaches_stderr_once_without_a_logger_and_the_log_with_one() {
    let out = run_child("warn_no_logger", &[("CAIO_IMPL", "garbage")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("garbage").count(),
        1,
        "once on stderr: {stderr}"
    );
    let out = run_child("warn_logger", &[("CAIO_IMPL", "garbage")]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stderr.contains("garbage"), "not on stderr: {stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("LOGGED caio:") && l.contains("garbage")),
        "logged: {stdout}"
    );
}

fn assert_send_sync<T: Send + Sync>(_: &T) {}

#[test]
fn the_futures_and_types_are_send_and_sync_as_tokios() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = d.path().join("f");
    util::block_on(async {
        assert_send_sync(&caio::fs::write(&p, "x"));
        assert_send_sync(&caio::fs::read(&p));
        assert_send_sync(&caio::fs::read_to_string(&p));
        assert_send_sync(&caio::fs::metadata(&p));
        assert_send_sync(&caio::fs::copy(&p, &p));
        assert_send_sync(&caio::fs::rename(&p, &p));
        assert_send_sync(&caio::fs::create_dir_all(&p));
        assert_send_sync(&caio::fs::DirBuilder::new().create(&p));
        assert_send_sync(&caio::fs::File::open(&p));
        assert_send_sync(&caio::fs::OpenOptions::new().read(true).open(&p));
        let rd = caio::fs::read_dir(d.path());
        assert_send_sync(&rd);
        let mut rd = rd.await.unwrap();
        assert_send_sync(&rd);
        assert_send_sync(&rd.next_entry());
        caio::fs::write(&p, "x").await.unwrap();
        let f = caio::fs::File::open(&p).await.unwrap();
        assert_send_sync(&f);
        assert_send_sync(&f.sync_all());
        assert_send_sync(&f.metadata());
        assert_send_sync(&f.read_at(1, 0));
    });
}

#[cfg(unix)]
#[test]
fn a_file_goes_to_std_and_back_with_its_position() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = d.path().join("f");
    std::fs::write(&p, b"0123456789").unwrap();
    let rt = tokio_runtime();
    rt.block_on(async {
        let mut std_file = std::fs::File::open(&p).unwrap();
        std::io::Seek::seek(&mut std_file, SeekFrom::Start(3)).unwrap();
        let mut f = caio::fs::File::from_std(std_file);
        let mut two = [0u8; 2];
        f.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"34", "the cursor starts at std's position");
        // Nothing under way, no other clone: it converts now, at the cursor's position.
        let mut back = f.try_into_std().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut back, &mut rest).unwrap();
        assert_eq!(rest, "56789");

        // A clone alive: try_into_std refuses, into_std makes a duplicate.
        let f = caio::fs::File::open(&p).await.unwrap();
        let clone = f.clone();
        let f = f.try_into_std().unwrap_err();
        let dup = f.into_std().await;
        assert_ne!(dup.as_raw_fd(), clone.as_raw_fd());
        assert_eq!(clone.read_at(2, 0).await.unwrap(), &b"01"[..]);

        // Raw and owned descriptors.
        let raw = std::fs::File::open(&p).unwrap().into_raw_fd();
        // SAFETY: `raw` was just given up by its owner.
        let f = unsafe { caio::fs::File::from_raw_fd(raw) };
        assert_eq!(f.as_fd().as_raw_fd(), raw);
        let back = f.into_raw_fd();
        assert_eq!(back, raw, "the only handle gives its own descriptor back");
        // SAFETY: `back` is ours again.
        let owned = unsafe { OwnedFd::from_raw_fd(back) };
        let f = caio::fs::File::from(owned);
        assert_eq!(f.read_at(1, 9).await.unwrap(), &b"9"[..]);
        let f = caio::fs::File::from(std::fs::File::open(&p).unwrap());
        assert_eq!(f.max_buf_size(), caio::fs::DEFAULT_MAX_BUF_SIZE);
    });
}

#[cfg(target_os = "linux")]
#[test]
fn a_write_error_comes_back_from_flush_and_sync() {
    // /dev/full: every write fails with ENOSPC, as a full disk does; the write is
    // accepted, and its error reported by the next flush (tokio does the same).
    let rt = tokio_runtime();
    for i in util::backends() {
        rt.block_on(async {
            let mut f = caio::fs::OpenOptions::new()
                .write(true)
                .context(util::ctx(i))
                .open("/dev/full")
                .await
                .unwrap();
            assert_eq!(f.write(b"hello").await.unwrap(), 5, "{i}: accepted");
            let e = f.flush().await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{i}: {e}");
            f.write_all(b"again").await.unwrap();
            let e = f.sync_all().await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{i}: {e}");
            f.flush().await.unwrap();
        });
    }
}

#[test]
fn open_options_from_std_open_with_std_and_take_later_settings() {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = d.path().join("f");
    let rt = tokio_runtime();
    rt.block_on(async {
        let mut std_opts = std::fs::OpenOptions::new();
        std_opts.read(true);
        // Set on caio's side after the conversion: create and write.
        let mut f = caio::fs::OpenOptions::from(std_opts)
            .write(true)
            .create(true)
            .open(&p)
            .await
            .unwrap();
        f.write_all(b"from std options").await.unwrap();
        f.seek(SeekFrom::Start(5)).await.unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "std options");
        assert_eq!(f.path(), p.as_path());
        // A missing file without create: std's error.
        let mut ro = std::fs::OpenOptions::new();
        ro.read(true);
        let e = caio::fs::OpenOptions::from(ro)
            .open(d.path().join("missing"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    });
}
