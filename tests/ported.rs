//! A tokio program ported by one line: `examples/mirror/program.rs`, written against
//! `tokio::fs`, compiled here once after `use tokio::fs;` and once after `use caio::fs;`.
//! Both mirror the same tree, then mirror it again after it changed; their summaries and
//! the trees they leave must be the same, on every backend.
// Unix: under wine, std's (so tokio's) copy counts 0 bytes (CopyFileExW reports no
// progress there), and the program logs the count, so the two trees cannot match.
#![cfg(unix)]
#![cfg(feature = "tokio")]

mod util;

mod with_tokio {
    use tokio::fs;
    include!("../examples/mirror/program.rs");
}

mod with_caio {
    use caio::fs;
    include!("../examples/mirror/program.rs");
}

use std::{path::Path, time::Duration};

fn source(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("top.txt"), b"top\n").unwrap();
    std::fs::write(root.join("a/big.bin"), util::pattern(3 << 20, 1)).unwrap();
    std::fs::write(root.join("a/b/mid.bin"), util::pattern(70_000, 2)).unwrap();
    std::fs::write(root.join("a/b/c/zero"), b"").unwrap();
}

fn change(root: &Path) {
    std::fs::write(root.join("top.txt"), b"top, longer now\n").unwrap();
    std::fs::remove_file(root.join("a/b/mid.bin")).unwrap();
    std::fs::remove_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("a/new.bin"), util::pattern(5000, 3)).unwrap();
}

#[test]
fn child() {
    if std::env::var("CAIO_PORTED_CHILD").is_err() {
        return;
    }
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (src, t, c) = (d.path().join("src"), d.path().join("t"), d.path().join("c"));
    source(&src);
    // One blocking thread: tokio's File runs its writes there in order, so a blocking
    // task spawned after a run finishes after the run's dropped log file is written.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..2 {
        if round == 1 {
            change(&src);
        }
        let a = rt.block_on(with_tokio::mirror(&src, &t)).unwrap();
        let b = rt.block_on(with_caio::mirror(&src, &c)).unwrap();
        assert_eq!(
            (a.copied, a.skipped, a.removed, a.bytes, a.checksum),
            (b.copied, b.skipped, b.removed, b.bytes, b.checksum),
            "round {round}"
        );
        // The log line of the run is written by a dropped file: wait for both.
        rt.block_on(async { tokio::task::spawn_blocking(|| ()).await })
            .unwrap();
        assert!(caio::Context::global()
            .unwrap()
            .wait_idle_timeout(Duration::from_secs(20)));
        assert_eq!(util::tree(&t), util::tree(&c), "round {round}");
    }
    assert_eq!(
        std::fs::read_to_string(c.join(".mirror.log"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    println!("CHILD OK");
}

#[test]
fn a_tokio_fs_program_runs_on_caio_by_its_use_line_on_every_backend() {
    for i in util::backends() {
        let out = util::run_test_child(
            "child",
            &[("CAIO_PORTED_CHILD", "1"), ("CAIO_IMPL", i.as_str())],
            Duration::from_secs(120),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("CHILD OK"),
            "{i}: {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
