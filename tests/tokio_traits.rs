//! With the `tokio` feature, Reader and Writer are tokio's own AsyncRead, AsyncBufRead,
//! AsyncWrite and AsyncSeek: `tokio::io::copy`, `BufReader::lines` and seeks work without
//! `tokio_util::compat`, on every implementation.
#![cfg(feature = "tokio")]

mod util;

use std::io::SeekFrom;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use util::{backends, ctx, open_rw, pattern};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tokio_copy_lines_and_seek_take_readers_and_writers_as_they_are() {
    for i in backends() {
        let c = ctx(i);
        let d = util::dir();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        let text: String = (0..20_000).map(|k| format!("line {k}\n")).collect();
        std::fs::write(&src, &text).unwrap();
        runtime().block_on(async {
            let from = open_rw(&c, &src, false);
            let to = open_rw(&c, &dst, false);
            let (mut r, mut w) = (from.reader(), to.writer());
            let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
            assert_eq!(n, text.len() as u64, "{i}");
            w.shutdown().await.unwrap();
            assert_eq!(std::fs::read_to_string(&dst).unwrap(), text, "{i}");

            // Lines through tokio's BufReader, and straight off the reader (it buffers).
            let mut lines = BufReader::new(from.reader()).lines();
            let mut count = 0;
            while let Some(line) = lines.next_line().await.unwrap() {
                assert_eq!(line, format!("line {count}"), "{i}");
                count += 1;
            }
            assert_eq!(count, 20_000, "{i}");
            let mut direct = from.reader().lines();
            assert_eq!(direct.next_line().await.unwrap().unwrap(), "line 0", "{i}");

            // Seeks: from the start, the current position and the end.
            let mut r = from.reader();
            assert_eq!(r.seek(SeekFrom::Start(5)).await.unwrap(), 5, "{i}");
            let mut two = [0u8; 2];
            r.read_exact(&mut two).await.unwrap();
            assert_eq!(&two, b"0\n", "{i}");
            assert_eq!(r.stream_position().await.unwrap(), 7, "{i}");
            let end = r.seek(SeekFrom::End(-3)).await.unwrap();
            assert_eq!(end, text.len() as u64 - 3, "{i}");
            let mut tail = String::new();
            r.read_to_string(&mut tail).await.unwrap();
            assert_eq!(tail, "99\n", "{i}");

            // A writer that seeks back and overwrites.
            let mut w = to.writer();
            w.write_all(&pattern(100, 1)).await.unwrap();
            assert_eq!(w.seek(SeekFrom::Start(10)).await.unwrap(), 10, "{i}");
            w.write_all(b"XY").await.unwrap();
            assert_eq!(w.stream_position().await.unwrap(), 12, "{i}");
            w.shutdown().await.unwrap();
            let got = std::fs::read(&dst).unwrap();
            assert_eq!(&got[10..12], b"XY", "{i}");
            assert_eq!(&got[..10], &pattern(100, 1)[..10], "{i}");
        });
    }
}
