//! Bad sizes and depths get a clear `InvalidInput` at once, on every backend: never a
//! spin, a hang, unbounded memory or a panic. The cases run in a child process with a
//! timeout, so a regression fails instead of stalling the suite.

mod util;

use std::{io, time::Duration};

use caio::fs::{self, CopyOptions, Reader};
use futures::{AsyncReadExt, StreamExt};
use util::{backends, block_on, dir, pattern, run_test_child};

const CHILD: &str = "CAIO_BAD_INPUT_CHILD";

fn invalid<T: std::fmt::Debug>(what: &str, r: io::Result<T>) {
    match r {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            println!("{what}: {e}");
        }
        other => panic!("{what}: wanted InvalidInput, got {other:?}"),
    }
}

#[test]
fn child_bad_read_ahead_and_copy_options() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let d = dir();
    let src = d.path().join("src");
    std::fs::write(&src, pattern(1 << 20, 5)).unwrap();
    let f = block_on(caio::File::open(&src)).unwrap();
    for (chunk, depth) in [(0, 4), (4096, 0), (usize::MAX, 4), (4096, usize::MAX)] {
        let mut r = Reader::with_read_ahead(f.clone(), chunk, depth);
        let mut out = Vec::new();
        invalid(
            &format!("Reader chunk {chunk} depth {depth}"),
            block_on(r.read_to_end(&mut out)),
        );
        // And again: it does not turn valid after the first error.
        invalid("the second read", block_on(r.read(&mut [0; 10])));
    }
    for n in [0, usize::MAX] {
        let first = block_on(f.chunks(n).next()).expect("one item");
        invalid(&format!("chunks({n})"), first);
    }
    let dst = d.path().join("dst");
    for (chunk, depth) in [(usize::MAX, 8), (1 << 20, usize::MAX), (0, 8), (1 << 20, 0)] {
        let mut o = CopyOptions::new();
        o.chunk = chunk;
        o.depth = depth;
        invalid(
            &format!("copy chunk {chunk} depth {depth}"),
            block_on(fs::copy_with(&src, &dst, o)),
        );
        assert!(!dst.exists(), "a refused copy created its destination");
    }
    // The bounds themselves are accepted.
    let mut o = CopyOptions::new();
    o.chunk = 1 << 16;
    o.depth = 4096;
    assert_eq!(block_on(fs::copy_with(&src, &dst, o)).unwrap(), 1 << 20);
    println!("BAD INPUT ok");
}

#[test]
fn bad_read_ahead_and_copy_options_fail_at_once_with_invalid_input() {
    for i in backends() {
        let o = run_test_child(
            "child_bad_read_ahead_and_copy_options",
            &[(CHILD, "1"), ("CAIO_IMPL", i.as_str())],
            Duration::from_secs(60),
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("BAD INPUT ok"),
            "{i}:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
