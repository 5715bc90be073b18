//! valgrind finds no leak: a short mixed run on every backend (dropped futures, contexts
//! dropped with work in flight), under `valgrind --leak-check=full`.
#![cfg(target_os = "linux")]

mod util;

use std::{future::Future, pin::Pin, process::Command, task::Context as Cx, time::Duration};

use caio::Context;
use util::{backends, block_on, open_rw, pattern, threads, wait_for_threads};

const CHILD: &str = "CAIO_LEAKS_TEST_CHILD";

type VectoredRead = dyn Future<Output = (std::io::Result<usize>, Vec<caio::Buffer>)> + Send;

#[test]
fn child_workload() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let before = threads();
    let waker = futures::task::noop_waker();
    for i in backends() {
        for direct in [false, true] {
            let c = Context::builder()
                .implementation(i)
                .max_requests(8)
                .build()
                .unwrap();
            let path = std::path::Path::new(&dir).join(format!("{i}-{direct}"));
            let f = open_rw(&c, &path, direct);
            block_on(f.write_all_at(pattern(1 << 20, 1), 0)).unwrap();
            for k in 0..200u64 {
                let off = (k * 7919 % 256) * 4096;
                assert_eq!(block_on(f.read_at(4096, off)).unwrap().len(), 4096);
                block_on(f.write_at(pattern(5000, k), off + 100)).unwrap();
            }
            // Started, then dropped mid-flight.
            let mut dropped: Vec<
                Pin<Box<dyn Future<Output = std::io::Result<caio::Buffer>> + Send>>,
            > = (0..16u64)
                .map(|k| Box::pin(f.read_at(65536, k * 65536)) as _)
                .collect();
            for d in dropped.iter_mut() {
                let _ = d.as_mut().poll(&mut Cx::from_waker(&waker));
            }
            drop(dropped);
            // Owned and vectored operations, completed and dropped mid-flight.
            let (n, _) = block_on(f.read_at_into(caio::Buffer::with_capacity(4096), 8192));
            assert_eq!(n.unwrap(), 4096);
            let mut owned: Vec<Pin<Box<VectoredRead>>> = (0..8u64)
                .map(|k| {
                    let bufs = vec![
                        caio::Buffer::with_capacity(4096),
                        Vec::with_capacity(4096).into(),
                    ];
                    Box::pin(f.read_vectored_at(bufs, k * 8192)) as _
                })
                .collect();
            for d in owned.iter_mut() {
                let _ = d.as_mut().poll(&mut Cx::from_waker(&waker));
            }
            drop(owned);
            // Every handle dropped with work in flight.
            let mut last: Vec<_> = (0..8u64)
                .map(|k| Box::pin(f.write_at(vec![3u8; 8192], k * 8192)))
                .collect();
            for w in last.iter_mut() {
                let _ = w.as_mut().poll(&mut Cx::from_waker(&waker));
            }
            drop((c, f, last));
        }
    }
    // Every backend thread (workers, reapers) exits on its own once its context is gone.
    wait_for_threads(
        before,
        Duration::from_secs(60),
        "after every context is dropped",
    );
    println!("CHILD done");
}

#[test]
fn valgrind_finds_no_leak() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("SKIP: valgrind is not installed (.ci/run installs it)");
        return;
    }
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut cmd = util::test_command(
        "child_workload",
        &[
            "valgrind",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99",
            "--quiet",
        ],
    );
    cmd.env(CHILD, d.path());
    let out = util::output_within(cmd, std::time::Duration::from_secs(900));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("CHILD done"),
        "the child did not finish:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "valgrind found errors or leaks:\n{stderr}"
    );
    assert!(
        !stderr.contains("definitely lost: ") || stderr.contains("definitely lost: 0 bytes"),
        "{stderr}"
    );
}
