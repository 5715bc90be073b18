//! Random operation sequences on every backend, buffered and O_DIRECT, checked against a
//! model of the file's contents.

mod util;

use caio::Implementation;
use proptest::prelude::*;
use util::{block_on, ctx, open_rw, pattern};

#[derive(Debug, Clone)]
enum Op {
    Write { off: u64, len: usize, seed: u64 },
    WriteAll { off: u64, len: usize, seed: u64 },
    Read { off: u64, len: usize },
    SetLen(u64),
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..300_000, 0usize..70_000, any::<u64>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        2 => (0u64..300_000, 0usize..70_000, any::<u64>()).prop_map(|(off, len, seed)| Op::WriteAll { off, len, seed }),
        4 => (0u64..320_000, 0usize..70_000).prop_map(|(off, len)| Op::Read { off, len }),
        1 => (0u64..320_000).prop_map(Op::SetLen),
        1 => Just(Op::Sync),
    ]
}

fn run(i: Implementation, direct: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let f = open_rw(&ctx(i), &d.path().join("m"), direct);
    let mut model: Vec<u8> = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        match *op {
            Op::Write { off, len, seed } | Op::WriteAll { off, len, seed } => {
                let data = pattern(len, seed);
                let n = if matches!(op, Op::Write { .. }) {
                    block_on(f.write_at(data.clone(), off)).unwrap()
                } else {
                    block_on(f.write_all_at(data.clone(), off)).unwrap();
                    len
                };
                prop_assert_eq!(n, len, "{} direct={} op {}: {:?}", i, direct, k, op);
                let end = off as usize + len;
                if len > 0 && model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            Op::Read { off, len } => {
                let got = block_on(f.read_at(len, off)).unwrap();
                let start = (off as usize).min(model.len());
                let want = &model[start..(start + len).min(model.len())];
                prop_assert!(
                    got[..] == *want,
                    "{} direct={} op {}: {:?}: {} bytes, want {}",
                    i,
                    direct,
                    k,
                    op,
                    got.len(),
                    want.len()
                );
            }
            Op::SetLen(n) => {
                block_on(f.set_len(n)).unwrap();
                model.resize(n as usize, 0);
            }
            Op::Sync => block_on(f.sync_data()).unwrap(),
        }
    }
    prop_assert_eq!(block_on(f.len()).unwrap() as usize, model.len());
    prop_assert!(
        block_on(f.read_to_vec()).unwrap() == model,
        "{} direct={}: whole file",
        i,
        direct
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_match_the_model(ops in prop::collection::vec(op(), 1..40)) {
        for i in Implementation::ALL.into_iter().filter(|i| i.is_available()) {
            run(i, false, &ops)?;
            run(i, true, &ops)?;
        }
    }
}
