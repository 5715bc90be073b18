//! What `fs::copy` writes to, and atomic replacement: a copy writes into its destination
//! (through a symlink, under every hard link, into a device), never replacing it; an
//! atomic copy or `write_atomic` replaces a regular file all or nothing and refuses
//! anything else; a FIFO opened for reading never blocks the executor.
//!
//! On Windows (run under wine in CI): hard links, atomic replacement, refusals and the
//! sweep of dead writers' temporary files; symlinks, devices, FIFOs, full disks and
//! O_TMPFILE are Unix's and Linux's.

mod util;

#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, PermissionsExt};
#[cfg(target_os = "linux")]
use std::{
    future::Future,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    process::Command,
};
use std::{
    path::Path,
    time::{Duration, Instant},
};

#[cfg(target_os = "linux")]
use caio::File;
use caio::{fs, Implementation};
use util::{backends, block_on, dir, names, pattern};
#[cfg(target_os = "linux")]
use util::{is_root, mkfifo, mknod_null, LoopFs};

fn on(i: Implementation) -> fs::CopyOptions {
    fs::CopyOptions::new().context(util::ctx(i))
}

#[cfg(target_os = "linux")]
#[test]
fn copy_onto_a_symlink_writes_its_target() {
    for i in backends() {
        let d = dir();
        std::fs::write(d.path().join("src"), pattern(300_000, 1)).unwrap();
        std::fs::write(d.path().join("target"), b"old").unwrap();
        std::os::unix::fs::symlink("target", d.path().join("link")).unwrap();
        let n = block_on(fs::copy_with(
            d.path().join("src"),
            d.path().join("link"),
            on(i),
        ))
        .unwrap();
        assert_eq!(n, 300_000);
        let link = std::fs::symlink_metadata(d.path().join("link")).unwrap();
        assert!(link.file_type().is_symlink(), "{i}: the symlink stays");
        assert_eq!(
            std::fs::read(d.path().join("target")).unwrap(),
            pattern(300_000, 1),
            "{i}: its target got the data"
        );
    }
}

#[test]
fn copy_onto_a_hard_linked_file_changes_every_name() {
    for i in backends() {
        let d = dir();
        std::fs::write(d.path().join("src"), b"new contents").unwrap();
        std::fs::write(d.path().join("one"), b"old contents, longer").unwrap();
        std::fs::hard_link(d.path().join("one"), d.path().join("two")).unwrap();
        block_on(fs::copy_with(
            d.path().join("src"),
            d.path().join("two"),
            on(i),
        ))
        .unwrap();
        for name in ["one", "two"] {
            assert_eq!(
                std::fs::read(d.path().join(name)).unwrap(),
                b"new contents",
                "{i}: {name}"
            );
        }
        #[cfg(unix)]
        {
            let m = std::fs::metadata(d.path().join("one")).unwrap();
            assert_eq!(m.nlink(), 2, "{i}: still one file with two names");
        }
    }
}

#[cfg(target_os = "linux")]
#[test]
fn copy_onto_a_character_device_keeps_the_device() {
    if !is_root() {
        eprintln!("SKIP: making a device node needs root");
        return;
    }
    for i in backends() {
        let d = dir();
        let null = d.path().join("null");
        util::mknod_null(&null);
        std::fs::write(d.path().join("src"), pattern(2 << 20, 2)).unwrap();
        let n = block_on(fs::copy_with(d.path().join("src"), &null, on(i))).unwrap();
        assert_eq!(n, 2 << 20);
        let m = std::fs::symlink_metadata(&null).unwrap();
        assert!(m.file_type().is_char_device(), "{i}: still a device");
        assert_eq!(m.rdev(), libc::makedev(1, 3), "{i}: the same device");
        assert_eq!(names(d.path()), ["null", "src"], "{i}: nothing else");
    }
}

/// The command as root in a private mount namespace, with a scratch null device bound
/// over /dev/null: `caio copy f /dev/null` must leave /dev/null a character device.
#[cfg(target_os = "linux")]
#[test]
fn the_command_copies_onto_dev_null_without_replacing_it() {
    if !is_root() {
        eprintln!("SKIP: a private mount namespace needs root");
        return;
    }
    let d = dir();
    let scratch = d.path().join("null");
    mknod_null(&scratch);
    std::fs::write(d.path().join("src"), pattern(1 << 20, 3)).unwrap();
    let script = format!(
        "mount --bind {scratch} /dev/null && {caio} copy {src} /dev/null && stat -c %F /dev/null",
        scratch = scratch.display(),
        caio = env!("CARGO_BIN_EXE_caio"),
        src = d.path().join("src").display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output();
    let Ok(out) = out else {
        eprintln!("SKIP: unshare is not available");
        return;
    };
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if stderr.contains("unshare failed") || stderr.contains("Operation not permitted") {
        eprintln!("SKIP: cannot make a mount namespace here: {stderr}");
        return;
    }
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("character special file"),
        "/dev/null is no longer a device: {stdout}"
    );
    let m = std::fs::symlink_metadata(&scratch).unwrap();
    assert!(m.file_type().is_char_device(), "the scratch node too");
}

#[test]
fn atomic_copy_replaces_a_regular_file_whole_and_follows_symlinks() {
    for i in backends() {
        let d = dir();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        std::fs::write(&src, pattern(3_000_001, 4)).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&src, PermissionsExt::from_mode(0o640)).unwrap();
        std::fs::write(&dst, b"old").unwrap();
        let n = block_on(fs::copy_with(&src, &dst, on(i).atomic(true))).unwrap();
        assert_eq!(n, 3_000_001);
        assert_eq!(std::fs::read(&dst).unwrap(), pattern(3_000_001, 4), "{i}");
        #[cfg(unix)]
        {
            let mode = std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode, 0o640,
                "{i}: the source's permissions, as std::fs::copy"
            );
        }
        #[cfg(windows)]
        assert_eq!(names(d.path()), ["dst", "src"], "{i}: no temporary file");
        // Through a symlink: the target is replaced, the link stays.
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("dst", d.path().join("link")).unwrap();
            std::fs::write(&src, b"via the link").unwrap();
            block_on(fs::copy_with(
                &src,
                d.path().join("link"),
                on(i).atomic(true),
            ))
            .unwrap();
            assert!(std::fs::symlink_metadata(d.path().join("link"))
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(std::fs::read(&dst).unwrap(), b"via the link", "{i}");
            assert_eq!(
                names(d.path()),
                ["dst", "link", "src"],
                "{i}: no temporary file"
            );
        }
    }
}

#[test]
fn atomic_copy_and_write_atomic_refuse_what_is_not_a_regular_file() {
    let d = dir();
    let src = d.path().join("src");
    std::fs::write(&src, b"data").unwrap();
    let sub = d.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    #[cfg(unix)]
    let fifo = d.path().join("fifo");
    #[cfg(unix)]
    util::mkfifo(&fifo);
    #[cfg(unix)]
    let mut targets = vec![fifo.clone(), sub.clone()];
    #[cfg(windows)]
    let targets = vec![sub.clone()];
    #[cfg(unix)]
    if util::is_root() {
        let null = d.path().join("null");
        util::mknod_null(&null);
        targets.push(null);
    }
    for i in backends() {
        for t in &targets {
            let e = block_on(fs::copy_with(&src, t, on(i).atomic(true))).unwrap_err();
            if t == &sub {
                // As every copy onto a directory (on Windows, CopyFileExW's access denied).
                #[cfg(unix)]
                assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory, "{i}: {e}");
                #[cfg(windows)]
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{i}: {e}");
                continue;
            }
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{i} {t:?}: {e}");
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }
    for t in &targets {
        let e = block_on(fs::write_atomic(t, "x")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{t:?}: {e}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let fifo_meta = std::fs::symlink_metadata(&fifo).unwrap();
        assert!(fifo_meta.file_type().is_fifo(), "the FIFO is untouched");
    }
    assert!(std::fs::metadata(&sub).unwrap().is_dir());
}

#[cfg(target_os = "linux")]
#[test]
fn an_atomic_copy_from_a_stream_is_refused_and_the_target_keeps_its_contents() {
    use std::os::unix::fs::MetadataExt;
    let d = dir();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let dst = d.path().join("dst");
    for i in backends() {
        for src in [Path::new("/dev/zero"), &fifo] {
            std::fs::write(&dst, b"precious").unwrap();
            let ino = std::fs::metadata(&dst).unwrap().ino();
            let e = block_on(fs::copy_with(src, &dst, on(i).atomic(true))).unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::InvalidInput,
                "{i} {src:?}: {e}"
            );
            assert_eq!(std::fs::read(&dst).unwrap(), b"precious", "{i} {src:?}");
            assert_eq!(std::fs::metadata(&dst).unwrap().ino(), ino, "{i} {src:?}");
            let mut left = names(d.path());
            left.sort();
            assert_eq!(left, ["dst", "fifo"], "{i} {src:?}");
        }
    }
}

#[test]
fn write_atomic_replaces_keeps_permissions_and_leaves_nothing_else() {
    let d = dir();
    let p = d.path().join("config");
    block_on(fs::write_atomic(&p, "first")).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"first");
    #[cfg(unix)]
    std::fs::set_permissions(&p, PermissionsExt::from_mode(0o600)).unwrap();
    #[cfg(unix)]
    let ino = std::fs::metadata(&p).unwrap().ino();
    block_on(fs::write_atomic(&p, "second, longer")).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
    assert_eq!(names(d.path()), ["config"]);
    #[cfg(unix)]
    {
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "the old permissions");
        assert_ne!(m.ino(), ino, "a new file took its place");
        // fs::write stays in place, as std's: the same inode.
        block_on(fs::write(&p, "third")).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), m.ino());
    }
}

/// A full disk part-way through an atomic copy: the old file is intact and no temporary
/// file remains, on every backend, buffered and O_DIRECT.
#[cfg(target_os = "linux")]
#[test]
fn an_atomic_copy_that_runs_out_of_space_keeps_the_old_file() {
    let Some(fs_) = LoopFs::new(24) else { return };
    let d = dir();
    let src = d.path().join("big");
    std::fs::write(&src, pattern(40 << 20, 5)).unwrap();
    let dst = fs_.mnt.join("dst");
    std::fs::write(&dst, b"the old file").unwrap();
    for i in backends() {
        for direct in [false, true] {
            let e =
                block_on(fs::copy_with(&src, &dst, on(i).atomic(true).direct(direct))).unwrap_err();
            assert_eq!(
                e.raw_os_error(),
                Some(libc::ENOSPC),
                "{i} direct={direct}: {e}"
            );
            assert_eq!(
                std::fs::read(&dst).unwrap(),
                b"the old file",
                "{i} {direct}"
            );
            assert_eq!(
                names(&fs_.mnt),
                ["dst", "lost+found"],
                "{i} direct={direct}: no temporary file"
            );
        }
    }
}

#[cfg(target_os = "linux")]
const CHILD: &str = "CAIO_COPY_TEST_CHILD";

#[cfg(target_os = "linux")]
/// Makes every `openat` with `O_TMPFILE` fail with EOPNOTSUPP, as on a filesystem without
/// unnamed files (FUSE, NFS, vfat), for this process and its threads from now on.
fn deny_o_tmpfile() {
    use util::bpf::*;
    // struct seccomp_data: nr at 0, args[2] (the flags of openat) at 32, low word first.
    let mut filter = [
        op(LD_W_ABS, 0, 0, 0),
        op(JMP_JEQ_K, 0, 3, libc::SYS_openat as u32),
        op(LD_W_ABS, 0, 0, 32),
        op(
            JMP_JSET_K,
            0,
            1,
            (libc::O_TMPFILE & !libc::O_DIRECTORY) as u32,
        ),
        op(
            RET_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EOPNOTSUPP as u32,
        ),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    util::install_seccomp(&mut filter);
}

#[cfg(target_os = "linux")]
/// Polls an atomic copy until its hidden file exists, drops it, waits for the context to
/// go idle, and prints what is left.
fn dropped_part_way(ctx: &caio::Context, big: &Path, dst: &Path) {
    let d = dst.parent().unwrap();
    let opts = fs::CopyOptions::new().context(ctx.clone()).atomic(true);
    let mut copy = Box::pin(fs::copy_with(big, dst, opts));
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    let start = Instant::now();
    let mut saw_temp = false;
    while !saw_temp && start.elapsed() < Duration::from_secs(10) {
        assert!(
            copy.as_mut().poll(&mut cx).is_pending(),
            "finished too soon"
        );
        saw_temp = names(d).len() > 1;
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(copy);
    let start = Instant::now();
    while ctx.in_flight() > 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("DROPPED {saw_temp} {:?}", names(d));
}

/// In the child, with O_TMPFILE denied: an atomic copy dropped part-way, one that fails
/// (past RLIMIT_FSIZE) and one that succeeds, on `CAIO_IMPL`'s backend. Prints what it saw.
#[cfg(target_os = "linux")]
#[test]
fn child_named_temporary_files() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let d = Path::new(&dir);
    deny_o_tmpfile();
    let probe = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(d);
    println!(
        "\nPROBE {:?}",
        probe.map(drop).map_err(|e| e.raw_os_error())
    );
    let ctx = caio::Context::new().unwrap();
    let opts = || fs::CopyOptions::new().context(ctx.clone()).atomic(true);
    let (big, dst) = (d.join("big"), d.join("out/dst"));
    // Dropped part-way: polled until its hidden file exists, then dropped. (On blocking,
    // the first poll runs the whole copy: there is no part-way.)
    if ctx.implementation() == Implementation::Blocking {
        println!("DROPPED true [\"dst\"]");
    } else {
        dropped_part_way(&ctx, &big, &dst);
    }
    // SAFETY: ignoring SIGXFSZ so that writes past the limit fail with EFBIG instead.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let lim = libc::rlimit {
        rlim_cur: 3 << 20,
        rlim_max: 3 << 20,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
    let e = block_on(fs::copy_with(&big, &dst, opts())).unwrap_err();
    println!("FAILED {:?} {:?}", e.raw_os_error(), names(&d.join("out")));
    block_on(fs::copy_with(d.join("small"), &dst, opts())).unwrap();
    println!(
        "DONE {:?} {:?}",
        String::from_utf8(std::fs::read(&dst).unwrap()).unwrap(),
        names(&d.join("out"))
    );
}

/// Where the filesystem has no unnamed files, the hidden named file an atomic copy uses is
/// removed when the copy fails and when its future is dropped mid-copy.
#[cfg(target_os = "linux")]
#[test]
fn without_o_tmpfile_the_named_temporary_file_is_removed() {
    for i in backends() {
        let d = dir();
        std::fs::write(d.path().join("big"), pattern(256 << 20, 6)).unwrap();
        std::fs::write(d.path().join("small"), b"the new file").unwrap();
        std::fs::create_dir(d.path().join("out")).unwrap();
        std::fs::write(d.path().join("out/dst"), b"old").unwrap();
        let mut cmd = util::test_command("child_named_temporary_files", &[]);
        cmd.env(CHILD, d.path()).env("CAIO_IMPL", i.as_str());
        let out = util::output_within(cmd, Duration::from_secs(300));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{i}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = |tag: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(tag))
                .unwrap_or_else(|| panic!("{i}: no {tag}: {stdout}"))
                .to_string()
        };
        assert_eq!(
            line("PROBE "),
            format!("Err(Some({}))", libc::EOPNOTSUPP),
            "{i}"
        );
        assert_eq!(
            line("FAILED "),
            format!("Some({}) [\"dst\"]", libc::EFBIG),
            "{i}"
        );
        assert_eq!(line("DROPPED "), "true [\"dst\"]", "{i}");
        assert_eq!(line("DONE "), "\"the new file\" [\"dst\"]", "{i}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_fifo_opened_for_reading_without_a_writer_never_blocks_the_executor() {
    let d = dir();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    for i in backends() {
        if i == Implementation::Blocking {
            continue; // inline by definition: it would wait for the writer
        }
        let ctx = util::ctx(i);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let worst = rt.block_on(async {
            let open = tokio::spawn(
                caio::OpenOptions::new()
                    .read(true)
                    .context(ctx.clone())
                    .open(fifo.clone()),
            );
            // Tick for 300 ms while the open waits for a writer.
            let mut last = Instant::now();
            let mut worst = Duration::ZERO;
            let until = last + Duration::from_millis(300);
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let now = Instant::now();
                worst = worst.max(now - last);
                last = now;
            }
            assert!(!open.is_finished(), "{i}: no writer yet, so no open");
            // A writer arrives: the open completes.
            let w = std::thread::spawn({
                let fifo = fifo.clone();
                move || std::fs::OpenOptions::new().write(true).open(fifo).unwrap()
            });
            let f: File = open.await.unwrap().unwrap();
            drop(w.join().unwrap());
            f.close().await.unwrap();
            worst
        });
        eprintln!("{i}: largest tick gap while the FIFO open waited: {worst:?}");
        assert!(
            worst < Duration::from_millis(50),
            "{i}: the executor was held {worst:?}"
        );
    }
}

/// In the child, with O_TMPFILE denied (so the new file has a name from the start): atomic
/// writes of `CAIO_COPY_TEST_CHILD/target`, one after another, until it is killed.
#[test]
fn child_writes_atomically_until_killed() {
    let Ok(dir) = std::env::var(CHILD_WRITER) else {
        return;
    };
    #[cfg(target_os = "linux")]
    deny_o_tmpfile();
    let data = pattern(64 << 20, 8);
    loop {
        block_on(fs::write_atomic(
            Path::new(&dir).join("target"),
            data.clone(),
        ))
        .unwrap();
    }
}

const CHILD_WRITER: &str = "CAIO_COPY_TEST_WRITER";

/// Sets `path`'s modification time `secs` seconds back.
fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn temporary_files_of_killed_writers_are_swept_and_live_ones_kept() {
    let temps = |d: &Path| -> Vec<String> {
        names(d)
            .into_iter()
            .filter(|n| n.starts_with(".target.caio-"))
            .collect()
    };
    for i in backends() {
        let d = dir();
        // A writer killed (kill -9) while its named temporary file exists.
        let mut child = util::test_command("child_writes_atomically_until_killed", &[])
            .env(CHILD_WRITER, d.path())
            .env("CAIO_IMPL", i.as_str())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while temps(d.path()).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{i}: no temporary file"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let dead = temps(d.path());
        assert_eq!(dead.len(), 1, "{i}: {dead:?}");
        // The kernel may finish the dead writer's last writes (and hold its file, and so
        // its lock) a moment after the process is gone.
        let start = Instant::now();
        loop {
            let f = std::fs::File::open(d.path().join(&dead[0])).unwrap();
            // Closing it lets go.
            if f.try_lock().is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{i}: still locked"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Lookalikes: one a live writer holds (locked), one just made, one of another user.
        let live = d.path().join(".other.caio-1-1");
        std::fs::write(&live, b"live").unwrap();
        let held = std::fs::File::open(&live).unwrap();
        held.lock().unwrap();
        let young = d.path().join(".young.caio-2-2");
        std::fs::write(&young, b"young").unwrap();
        let foreign = d.path().join(".foreign.caio-3-3");
        std::fs::write(&foreign, b"foreign").unwrap();
        #[cfg(unix)]
        let chowned = util::is_root();
        #[cfg(unix)]
        if chowned {
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        }
        // Windows: files have no owner a sweep looks at; every old, unlocked one goes.
        #[cfg(windows)]
        let chowned = false;
        for p in [&d.path().join(&dead[0]), &live, &foreign] {
            age(p, 120);
        }
        // The next atomic write into the directory sweeps.
        block_on(fs::write_atomic(d.path().join("x"), "new")).unwrap();
        let mut left = names(d.path());
        left.retain(|n| n.contains(".caio-"));
        left.sort();
        let mut want = vec![".other.caio-1-1", ".young.caio-2-2"];
        if chowned {
            want.insert(0, ".foreign.caio-3-3");
        }
        assert_eq!(
            left, want,
            "{i}: the dead writer's file should be gone, the rest kept"
        );
        assert_eq!(std::fs::read(d.path().join("x")).unwrap(), b"new");
        drop(held);
    }
}
