//! `File::read_many` against a model: random files, random ranges (overlapping, repeated,
//! empty, reversed, past the end), random merge limits, on every backend, buffered and
//! O_DIRECT. Every range comes back once, with the bytes the model has there.

mod util;

use std::ops::Range;

use caio::ReadManyOptions;
use futures::StreamExt;
use proptest::prelude::*;
use util::{block_on, ctx, open_rw, pattern};

fn range() -> impl Strategy<Value = Range<u64>> {
    prop_oneof![
        8 => (0u64..350_000, 0u64..40_000).prop_map(|(s, l)| s..s + l),
        1 => (1u64..350_000, 1u64..1000).prop_map(|(s, l)| s..s.saturating_sub(l)),
        1 => (0u64..350_000).prop_map(|s| s..s),
    ]
}

fn opts() -> impl Strategy<Value = ReadManyOptions> {
    (0u64..100_000, 1usize..2 << 20, 1usize..64, 1.0f64..8.0).prop_map(|(g, m, f, a)| {
        ReadManyOptions::new()
            .merge_gap(g)
            .max_merged(m)
            .max_in_flight(f)
            .max_amplification(a)
    })
}

fn check(
    i: caio::Implementation,
    direct: bool,
    len: usize,
    ranges: &[Range<u64>],
    o: ReadManyOptions,
) -> Result<(), TestCaseError> {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = d.path().join("f");
    let model = pattern(len, 3);
    std::fs::write(&path, &model).unwrap();
    let f = open_rw(&ctx(i), &path, direct);
    let got: Vec<_> = block_on(f.read_many(ranges.to_vec(), o).collect());
    prop_assert_eq!(got.len(), ranges.len(), "one result per range");
    let mut want: Vec<Range<u64>> = ranges.to_vec();
    for (r, data) in got {
        let k = want.iter().position(|w| *w == r);
        prop_assert!(k.is_some(), "{:?} came back more often than asked", r);
        want.swap_remove(k.unwrap());
        if r.end < r.start {
            prop_assert_eq!(data.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
            continue;
        }
        let data = data.unwrap();
        let (s, e) = ((r.start as usize).min(len), (r.end as usize).min(len));
        prop_assert!(
            data == model[s..e],
            "{:?} on {} ({} bytes)",
            r,
            i,
            data.len()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_range_comes_back_once_with_the_models_bytes(
        len in 0usize..300_000,
        ranges in proptest::collection::vec(range(), 0..60),
        o in opts(),
        direct in any::<bool>(),
    ) {
        for i in util::backends() {
            check(i, direct, len, &ranges, o)?;
        }
    }
}

#[test]
fn nearby_ranges_are_read_together() {
    // Under strace, the blocking backend's preads: 64 ranges of 1 KiB, 1 KiB apart,
    // are two reads with a 64 KiB limit, not 64.
    if !util::has_strace() {
        eprintln!("SKIP: no strace");
        return;
    }
    let out = std::process::Command::new("strace")
        .args(["-f", "-e", "trace=pread64", "-o", "/dev/stderr"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture"])
        .env("CAIO_READ_MANY_CHILD", "1")
        .env("CAIO_IMPL", "blocking")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // pread64(fd, "...", size, offset) = n: the reads of the file are the large ones
    // (the loader's and the runtime's are under 1 KiB).
    let sizes: Vec<u64> = stderr
        .lines()
        .filter(|l| l.contains("pread64("))
        .filter_map(|l| {
            let args = l.split_once(") = ")?.0;
            let mut rest = args.rsplit(", ");
            rest.next()?; // the offset
            rest.next()?.trim().parse().ok()
        })
        .collect();
    let merged = sizes.iter().filter(|&&n| n >= 16 << 10).count();
    let single = sizes.iter().filter(|&&n| n == 1024).count();
    eprintln!("reads of the file: {merged} merged, {single} of one range; {sizes:?}");
    assert!(
        (1..=4).contains(&merged) && single == 0,
        "64 nearby ranges in {merged} merged reads and {single} single ones"
    );
}

#[test]
fn child() {
    if std::env::var("CAIO_READ_MANY_CHILD").is_err() {
        return;
    }
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = d.path().join("f");
    std::fs::write(&path, pattern(256 << 10, 1)).unwrap();
    let f = block_on(caio::File::open(&path)).unwrap();
    let ranges: Vec<Range<u64>> = (0..64u64).map(|k| k * 2048..k * 2048 + 1024).collect();
    let o = ReadManyOptions::new().merge_gap(4096).max_merged(64 << 10);
    let got: Vec<_> = block_on(f.read_many(ranges, o).collect());
    assert_eq!(got.len(), 64);
    assert!(got.iter().all(|(_, d)| d.as_ref().unwrap().len() == 1024));
}
