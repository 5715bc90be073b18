//! Offsets and sizes past 2 and 4 GiB, on every backend: what 32-bit targets reach only
//! through the large-file calls (`pread64`, `O_LARGEFILE`...), as std does. The file is
//! sparse: a few blocks far apart.

mod util;

use util::{block_on, ctx, open_rw, pattern};

#[test]
fn reads_writes_and_lengths_past_4_gib_on_every_backend() {
    for i in util::backends() {
        let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let path = d.path().join("sparse");
        let f = open_rw(&ctx(i), &path, false);
        for (k, off) in [(1u64 << 31) + 7, (1 << 32) + 4096 * 3 + 1]
            .into_iter()
            .enumerate()
        {
            let data = pattern(5000, k as u64);
            block_on(f.write_all_at(data.clone(), off)).unwrap();
            let back = block_on(f.read_at(data.len(), off)).unwrap();
            assert!(back == data, "{i}: the data at {off}");
        }
        let end = (1u64 << 32) + 4096 * 3 + 1 + 5000;
        assert_eq!(block_on(f.len()).unwrap(), end, "{i}: the length");
        block_on(f.set_len(end + (1 << 31))).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            end + (1 << 31),
            "{i}: set_len past 4 GiB"
        );
        // The cursor, past 4 GiB.
        let mut c = f.clone();
        let at = futures::executor::block_on(futures::AsyncSeekExt::seek(
            &mut c,
            std::io::SeekFrom::Start((1 << 32) + 4096 * 3 + 1),
        ))
        .unwrap();
        assert_eq!(at, (1 << 32) + 4096 * 3 + 1);
        let mut buf = [0u8; 16];
        futures::executor::block_on(futures::AsyncReadExt::read_exact(&mut c, &mut buf)).unwrap();
        assert_eq!(
            &buf[..],
            &pattern(5000, 1)[..16],
            "{i}: a cursor read past 4 GiB"
        );
    }
}
