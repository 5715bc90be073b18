//! The `caio` command: info, copy, bench, and one clear line for every error.
// Unix: these tests use descriptors, fork, signals or Unix permissions; the Windows
// suites are conformance, files, paths and copy (run under wine in CI).
#![cfg(unix)]
#![cfg(feature = "cli")]

mod util;

use std::{
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

use util::pattern;

fn caio(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caio"))
        .args(args)
        .env_remove("CAIO_IMPL")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// Fails unless the command failed with exactly one clear `caio: error:` line.
fn assert_clean_failure(o: &Output, mentions: &str) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(1), "stdout: {out}\nstderr: {err}");
    let lines: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("caio: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line expected: {err}");
    assert!(
        lines[0].contains(mentions),
        "{:?} should mention {mentions:?}",
        lines[0]
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

use util::{dir, is_root, mkfifo, names};

/// Starts the command, waits until `ready` holds (up to 20 s), sends `sig`, and returns
/// its exit status code and stderr.
fn interrupt(
    args: &[&str],
    sig: libc::c_int,
    ready: impl Fn(u32) -> bool,
) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caio"))
        .args(args)
        .env_remove("CAIO_IMPL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !ready(child.id()) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the command never got going"
        );
        assert!(child.try_wait().unwrap().is_none(), "it finished first");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: kill sends a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Whether process `pid` has `path` open.
fn opened(pid: u32, path: &Path) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.filter_map(Result::ok)
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path))
    })
}

#[test]
fn ctrl_c_during_bench_removes_its_test_file() {
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let d = dir();
        let p = d.path().to_str().unwrap().to_string();
        // Interrupted once the test file exists (while it is laid out or measured).
        let (status, err) = interrupt(&["bench", &p, "--size", "512M", "--secs", "5"], sig, |_| {
            !names(d.path()).is_empty()
        });
        assert_eq!(status, Some(code), "{err}");
        assert_eq!(
            names(d.path()),
            Vec::<String>::new(),
            "the test file is left: {err}"
        );
    }
}

#[test]
fn ctrl_c_during_an_atomic_copy_keeps_the_old_file_and_leaves_nothing() {
    let d = dir();
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    // 1 GiB, sparse: quick to make, long enough to copy that the signal lands mid-way.
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(1 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &pattern(1 << 20, 9), 0).unwrap();
    std::fs::write(&dst, b"the old file").unwrap();
    for i in ["linux", "thread"] {
        let (status, err) = interrupt(
            &[
                "copy",
                "--atomic",
                "-i",
                i,
                src.to_str().unwrap(),
                dst.to_str().unwrap(),
            ],
            libc::SIGINT,
            // Once it has the source open: the copy is under way.
            |pid| opened(pid, &src),
        );
        if err.contains("unavailable") {
            continue;
        }
        assert_eq!(status, Some(130), "{i}: {err}");
        assert_eq!(std::fs::read(&dst).unwrap(), b"the old file", "{i}");
        assert_eq!(names(d.path()), ["dst", "src"], "{i}: {err}");
    }
}

#[test]
fn info_reports_selection_implementations_and_direct_io() {
    let d = dir();
    let o = caio(&["info", d.path().to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    for want in [
        "selected implementation:",
        "chosen by:",
        "  linux",
        "  thread",
        "  blocking",
        "O_DIRECT:",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_caio"))
        .arg("info")
        .env("CAIO_IMPL", "thread")
        .output()
        .unwrap();
    let (out, _) = text(&o);
    assert!(
        out.contains("selected implementation: thread")
            && out.contains("chosen by: CAIO_IMPL=thread"),
        "{out}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_caio"))
        .arg("info")
        .env("CAIO_IMPL", "warp")
        .output()
        .unwrap();
    let (out, _) = text(&o);
    assert!(
        out.contains("warning: CAIO_IMPL") && out.contains("\"warp\""),
        "{out}"
    );
}

#[test]
fn copy_copies_and_summarises() {
    let d = dir();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let data = pattern((3 << 20) + 5, 1);
    std::fs::write(&a, &data).unwrap();
    for extra in [
        &[][..],
        &["--direct"][..],
        &["-i", "thread"][..],
        &["-i", "python"][..],
    ] {
        let mut args = vec!["copy", a.to_str().unwrap(), b.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = caio(&args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{extra:?}: {out}{err}");
        assert!(
            out.contains(&format!("copied {} bytes", data.len())) && out.contains("MiB/s"),
            "{out}"
        );
        assert!(std::fs::read(&b).unwrap() == data, "{extra:?}");
        std::fs::remove_file(&b).unwrap();
    }
}

#[test]
fn copy_errors_are_one_clear_line() {
    let d = dir();
    let a = d.path().join("a");
    std::fs::write(&a, b"data").unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    assert_clean_failure(
        &caio(&[
            "copy",
            &p(&d.path().join("missing")),
            &p(&d.path().join("x")),
        ]),
        "No such file",
    );
    assert_clean_failure(
        &caio(&["copy", &p(d.path()), &p(&d.path().join("x"))]),
        "is a directory",
    );
    assert_clean_failure(
        &caio(&["copy", &p(&a), &p(&d.path().join("no/dir/x"))]),
        "No such file",
    );
    assert_clean_failure(&caio(&["copy", &p(&a), &p(&a)]), "same file");
    assert_clean_failure(
        &caio(&["copy", &p(&a), &p(&d.path().join("y")), "-i", "fast"]),
        "unknown caio implementation",
    );
}

#[test]
fn copy_permission_denied_is_one_clear_line() {
    let d = dir();
    let a = d.path().join("secret");
    std::fs::write(&a, b"data").unwrap();
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let dst = d.path().join("copy");
    let o = if is_root() {
        // Root reads anything: run the command as nobody.
        let r = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_caio"),
                "copy",
            ])
            .args([&a, &dst])
            .output();
        match r {
            Ok(o) => o,
            Err(e) => {
                eprintln!("SKIP: cannot drop root to test permissions: {e}");
                return;
            }
        }
    } else {
        caio(&["copy", a.to_str().unwrap(), dst.to_str().unwrap()])
    };
    if text(&o).1.contains("setpriv:") {
        eprintln!("SKIP: setpriv failed: {}", text(&o).1);
        return;
    }
    assert_clean_failure(&o, "Permission denied");
    assert!(!dst.exists());
}

#[test]
fn copy_onto_a_full_disk_is_one_clear_line_and_atomic_leaves_nothing() {
    let d = dir();
    let Some(small) = util::Mount::new("tmpfs", Some("size=1m"), d.path().join("small")) else {
        return;
    };
    let mnt = small.path.clone();
    let src = d.path().join("big");
    std::fs::write(&src, pattern(4 << 20, 2)).unwrap();
    let o = caio(&[
        "copy",
        "--atomic",
        src.to_str().unwrap(),
        mnt.join("big").to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "No space left on device");
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        0,
        "the failed atomic copy left files behind"
    );
    // In place, as cp: the same clear line, and what fitted stays.
    let o = caio(&[
        "copy",
        src.to_str().unwrap(),
        mnt.join("big").to_str().unwrap(),
    ]);
    assert_clean_failure(&o, "No space left on device");
    let names: Vec<_> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["big"], "only the destination itself");
}

#[test]
fn bench_prints_a_table_for_every_backend() {
    let d = dir();
    let o = caio(&[
        "bench",
        d.path().to_str().unwrap(),
        "--size",
        "8M",
        "--secs",
        "0.05",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    for want in [
        "workload",
        "linux",
        "thread",
        "blocking",
        "4 KiB random read, page cache",
        "O_DIRECT",
        "MiB/s",
        "IOPS",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    assert!(!out.contains("error"), "{out}{err}");
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "the test file is removed"
    );
    // On an existing file: read-only rows only.
    let f = d.path().join("existing");
    std::fs::write(&f, pattern(2 << 20, 3)).unwrap();
    let o = caio(&[
        "bench",
        f.to_str().unwrap(),
        "--secs",
        "0.05",
        "-i",
        "thread",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success() && !out.contains("write"), "{out}{err}");
    assert!(
        !out.contains("blocking implementation"),
        "a note on a backend not measured: {out}"
    );
    // Under Context::block_on: the same rows, every cell measured.
    let o = caio(&["bench", f.to_str().unwrap(), "--secs", "0.05", "--block-on"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("under Context::block_on"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("4 KiB random read, page cache"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("IOPS") && !row.contains("error"), "{row}");
}

#[test]
fn bench_rejects_bad_arguments_clearly() {
    let d = dir();
    let p = d.path().to_str().unwrap();
    assert_clean_failure(
        &caio(&["bench", p, "--size", "12X"]),
        "is not a number with an optional K, M, G or T suffix",
    );
    assert_clean_failure(&caio(&["bench", p, "--size", "1M"]), "at least 4 MiB");
    assert_clean_failure(&caio(&["bench", p, "--secs", "0"]), "--secs");
    assert_clean_failure(&caio(&["bench", &format!("{p}/missing")]), "No such file");
    assert_clean_failure(
        &caio(&["bench", p, "-i", "turbo"]),
        "unknown caio implementation",
    );
    let o = caio(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2 (clap)");
}

/// Runs the command with stdout read up to `lines` lines and then closed, as `| head`.
fn into_head(args: &[&str], lines: usize) -> (std::process::ExitStatus, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_caio"))
        .args(args)
        .env_remove("CAIO_IMPL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
    }
    drop(out);
    let o = child.wait_with_output().unwrap();
    (o.status, String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let d = dir();
    let p = d.path().to_str().unwrap().to_string();
    for (args, lines) in [
        (vec!["info", p.as_str()], 1),
        (
            vec!["bench", p.as_str(), "--size", "8M", "--secs", "0.05"],
            3,
        ),
    ] {
        let (status, err) = into_head(&args, lines);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {status:?} {err}"
        );
    }
    assert!(names(d.path()).is_empty(), "bench left its file");
}

#[test]
fn info_checks_its_path_creates_nothing_and_warns_once() {
    let o = caio(&["info", "/nonexistent/caio"]);
    assert_clean_failure(&o, "No such file");
    let d = dir();
    let o = Command::new(env!("CARGO_BIN_EXE_caio"))
        .args(["info", d.path().to_str().unwrap()])
        .env("CAIO_IMPL", "bogus-name")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        names(d.path()).is_empty(),
        "info made a file in the directory"
    );
    assert!(!out.contains("temporary file"), "{out}");
    let said = out.matches("bogus-name").count() + err.matches("bogus-name").count();
    assert_eq!(said, 1, "the warning once:\n{out}\n{err}");
    let o = caio(&["info", "/proc"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("  O_DIRECT:")).unwrap();
    assert!(
        line.contains("cannot tell") || line.contains("not supported"),
        "{line}"
    );
}

#[test]
fn argument_errors_say_what_is_wrong() {
    let d = dir();
    let p = d.path().to_str().unwrap();
    let o = caio(&["bench", p, "--secs", "0"]);
    assert_clean_failure(&o, "must be more than 0 and at most 3600");
    let o = caio(&["bench", p, "--size", "abc"]);
    assert_clean_failure(&o, "is not a number with an optional K, M, G or T suffix");
    let o = caio(&[
        "bench", p, "--size", "8M", "--secs", "0.02", "-i", "thread", "-i", "thread",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let header = out.lines().find(|l| l.contains("workload")).unwrap();
    assert_eq!(header.matches("thread").count(), 1, "{header}");
    let (help, _) = text(&caio(&["copy", "--help"]));
    assert!(
        help.contains("The file to copy") && help.contains("Where to copy it"),
        "{help}"
    );
}

#[test]
fn copy_reads_a_fifo_to_its_end() {
    let d = dir();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let data = pattern(3 << 20, 12);
    let writer = std::thread::spawn({
        let (fifo, data) = (fifo.clone(), data.clone());
        move || std::fs::write(fifo, data).unwrap()
    });
    let dst = d.path().join("dst");
    let o = caio(&["copy", fifo.to_str().unwrap(), dst.to_str().unwrap()]);
    let (out, err) = text(&o);
    writer.join().unwrap();
    assert!(o.status.success(), "{out}{err}");
    assert!(std::fs::read(&dst).unwrap() == data);
}

#[test]
fn copy_direct_onto_a_filesystem_without_it_says_page_cache() {
    let d = dir();
    let Some(mut ram) = util::Mount::new("ramfs", None, d.path().join("ram")) else {
        return;
    };
    let mnt = ram.path.clone();
    let src = d.path().join("src");
    std::fs::write(&src, pattern(1 << 20, 13)).unwrap();
    let o = caio(&[
        "copy",
        "--direct",
        src.to_str().unwrap(),
        mnt.join("dst").to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    let unmounted = ram.unmount();
    assert!(o.status.success(), "{out}{err}");
    assert!(err.contains("copying through the page cache"), "{err}");
    assert!(!err.contains("direct(true)"), "library advice: {err}");
    assert!(
        out.contains("page cache") && !out.contains("O_DIRECT"),
        "{out}"
    );
    assert!(unmounted);
}

#[test]
fn copy_reads_standard_input() {
    use std::io::Write;
    let d = dir();
    let dst = d.path().join("dst");
    let data = pattern(2 << 20, 14);
    let mut child = Command::new(env!("CARGO_BIN_EXE_caio"))
        .args(["copy", "/dev/stdin", dst.to_str().unwrap()])
        .env_remove("CAIO_IMPL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn({
        let data = data.clone();
        move || stdin.write_all(&data).unwrap()
    });
    let o = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(std::fs::read(&dst).unwrap() == data);
}

/// Loop devices whose backing file is `caio-fast-PID.img` of a process of ours.
fn fast_devices() -> Vec<String> {
    let out = Command::new("losetup").arg("-a").output();
    let text = out.map_or(String::new(), |o| String::from_utf8_lossy(&o.stdout).into());
    text.lines()
        .filter(|l| l.contains("caio-fast-"))
        .map(String::from)
        .collect()
}

#[test]
fn bench_on_a_fast_device_measures_and_detaches_it_even_on_ctrl_c() {
    if !util::is_root() || !Path::new("/dev/shm").is_dir() {
        eprintln!("SKIP: a loop device needs root and /dev/shm");
        return;
    }
    let before = fast_devices();
    let o = caio(&[
        "bench",
        "--fast-device",
        "--size",
        "16M",
        "--secs",
        "0.1",
        "-i",
        "blocking",
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    if err.contains("cannot set up a fast device") {
        eprintln!("SKIP: {err}");
        return;
    }
    assert!(o.status.success(), "{err}");
    assert!(out.contains("/dev/loop"), "{out}");
    assert!(out.contains("4 KiB random read, O_DIRECT"), "{out}");
    assert_eq!(fast_devices(), before, "a loop device is left attached");
    // Interrupted while it measures: the device is detached and its file removed.
    let shm = || {
        names(Path::new("/dev/shm"))
            .into_iter()
            .filter(|n| n.starts_with("caio-fast-"))
            .count()
    };
    let files = shm();
    let (status, err) = interrupt(
        &[
            "bench",
            "--fast-device",
            "--size",
            "16M",
            "--secs",
            "5",
            "-i",
            "blocking",
        ],
        libc::SIGINT,
        |pid| {
            opened(pid, Path::new(&format!("/dev/shm/caio-fast-{pid}.img")))
                || fast_devices().len() > before.len()
        },
    );
    assert_eq!(status, Some(130), "{err}");
    assert_eq!(
        fast_devices(),
        before,
        "Ctrl-C left a loop device attached: {err}"
    );
    assert_eq!(shm(), files, "Ctrl-C left the tmpfs file: {err}");
}

/// Runs the command with `stdin` fed to it, killed after `limit` (a hang fails the test).
fn caio_within(args: &[&str], stdin: Option<&[u8]>, limit: std::time::Duration) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_caio"))
        .args(args)
        .env_remove("CAIO_IMPL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(data) = stdin {
        let data = data.to_vec();
        // Written beside the command; a refusal closes the pipe, which ends the writer.
        std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
    } else {
        drop(input);
    }
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("caio {args:?} hung for {limit:?}: {:?}", text(&o));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn copy_atomic_from_a_stream_is_refused_and_the_target_keeps_its_contents() {
    use std::os::unix::fs::MetadataExt;
    let d = dir();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let dst = d.path().join("dst");
    let limit = std::time::Duration::from_secs(20);
    let sources: [(&str, Option<&[u8]>); 3] = [
        ("/dev/zero", None),
        (fifo.to_str().unwrap(), None),
        ("/dev/stdin", Some(&[7u8; 1 << 20])),
    ];
    for (src, stdin) in sources {
        std::fs::write(&dst, b"precious").unwrap();
        let ino = std::fs::metadata(&dst).unwrap().ino();
        let o = caio_within(
            &["copy", "--atomic", src, dst.to_str().unwrap()],
            stdin,
            limit,
        );
        assert_clean_failure(&o, "--atomic");
        assert_eq!(std::fs::read(&dst).unwrap(), b"precious", "{src}");
        assert_eq!(std::fs::metadata(&dst).unwrap().ino(), ino, "{src}");
        let mut left = names(d.path());
        left.sort();
        assert_eq!(
            left,
            ["dst", "fifo"],
            "{src}: something was left beside the target"
        );
    }
}

#[test]
fn info_on_a_fifo_answers_at_once() {
    let d = dir();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let o = caio_within(
        &["info", fifo.to_str().unwrap()],
        None,
        std::time::Duration::from_secs(20),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("O_DIRECT:") && l.contains("is a pipe or FIFO")),
        "{out}"
    );
}
