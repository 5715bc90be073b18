//! Owned-buffer and vectored I/O, on every available implementation: the caller's buffers
//! go in and come back (on errors too), filled or written as std's positional and vectored
//! calls would, with any memory alignment and, on O_DIRECT files, any offset.
// Unix: these tests use descriptors, fork, signals or Unix permissions; the Windows
// suites are conformance, files, paths and copy (run under wine in CI).
#![cfg(unix)]

mod util;

use std::{
    io,
    os::unix::io::AsRawFd,
    time::{Duration, Instant},
};

use caio::{Buffer, Context};
use util::{backends, block_on, ctx, ctx_with, open_rw, pattern, poll_once, Scratch};

/// A `Buffer` over a `Vec` whose memory is not page-aligned, with room for `cap` bytes.
fn unaligned(cap: usize) -> Buffer {
    let mut keep = Vec::new();
    loop {
        let v: Vec<u8> = Vec::with_capacity(cap);
        if v.as_ptr() as usize % caio::ALIGNMENT != 0 {
            let b = Buffer::from(v);
            assert!(!b.is_aligned_to(caio::ALIGNMENT));
            return b;
        }
        keep.push(v); // an aligned block: keep it so the next one differs
    }
}

fn errno(r: &io::Result<usize>) -> i32 {
    r.as_ref()
        .expect_err("expected an OS error")
        .raw_os_error()
        .expect("an errno")
}

#[test]
fn a_buffer_makes_the_round_trip_on_the_raw_context() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            let data = pattern(10_000, 3);
            let mut buf = Buffer::from(&data[..]);
            let ptr = buf.as_ptr();
            let (n, back) = c.write_at_from(buf, s.fd(), 0).await;
            assert_eq!(n.unwrap(), 10_000, "{i}");
            assert_eq!(back.as_ptr(), ptr, "{i}: the same memory comes back");
            assert_eq!(back, data, "{i}: a write leaves the buffer as it was");
            buf = back;
            // A read fills the capacity from the start, whatever the buffer held.
            let (n, back) = c.read_at_into(buf, s.fd(), 100).await;
            assert_eq!(n.unwrap(), 9_900, "{i}: short only at end of file");
            assert_eq!((back.as_ptr(), back.len()), (ptr, 9_900), "{i}");
            assert_eq!(&back[..], &data[100..], "{i}");
            let (n, back) = c.read_at_into(back, s.fd(), 20_000).await;
            assert_eq!((n.unwrap(), back.len()), (0, 0), "{i}: past the end");
            assert_eq!(back.capacity(), 10_000, "{i}: the capacity is kept");
            // An unaligned Vec on a buffered descriptor is read in place.
            let v = unaligned(64);
            let p = v.as_ptr();
            let (n, v) = c.read_at_into(v, s.fd(), 0).await;
            assert_eq!((n.unwrap(), v.as_ptr()), (v.capacity(), p), "{i}");
            assert_eq!(&v[..], &data[..v.len()], "{i}");
        });
        assert_eq!(s.contents(), pattern(10_000, 3), "{i}");
    }
}

#[test]
fn a_buffer_makes_the_round_trip_on_a_file() {
    for i in backends() {
        let c = ctx(i);
        let d = util::dir();
        let f = open_rw(&c, &d.path().join("f"), false);
        block_on(async {
            let mut buf = Buffer::with_capacity(4096);
            assert_eq!((buf.len(), buf.capacity()), (0, 4096));
            for k in 0..8u64 {
                buf.clear();
                assert_eq!(buf.extend_from_slice(&[k as u8; 4096]), 4096);
                let (n, back) = f.write_at_from(buf, k * 4096).await;
                assert_eq!(n.unwrap(), 4096, "{i}");
                buf = back;
            }
            for k in (0..8u64).rev() {
                let (n, back) = f.read_at_into(buf, k * 4096).await;
                assert_eq!(n.unwrap(), 4096, "{i}");
                assert!(back.iter().all(|&b| b == k as u8), "{i}: block {k}");
                buf = back;
            }
        });
    }
}

#[test]
fn the_buffer_comes_back_on_every_error() {
    for i in backends() {
        let c = ctx(i);
        let d = util::dir();
        let path = d.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        block_on(async {
            let mark = |b: &Buffer| (b.as_ptr(), b.capacity());
            // A bad descriptor.
            let b = Buffer::with_capacity(100);
            let m = mark(&b);
            let (r, b) = c.read_at_into(b, -1, 0).await;
            assert_eq!((errno(&r), mark(&b)), (libc::EBADF, m), "{i}");
            let (r, b) = c.write_at_from(b, -1, 0).await;
            assert_eq!((errno(&r), mark(&b)), (libc::EBADF, m), "{i}");
            // A directory.
            let dir = std::fs::File::open(d.path()).unwrap();
            let (r, b) = c.read_at_into(b, dir.as_raw_fd(), 0).await;
            assert!(
                matches!(errno(&r), libc::EISDIR | libc::EINVAL),
                "{i}: {r:?}"
            );
            assert_eq!(mark(&b), m, "{i}");
            // An offset no file can have.
            let (r, b) = c.read_at_into(b, dir.as_raw_fd(), u64::MAX).await;
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidInput, "{i}");
            assert_eq!(mark(&b), m, "{i}");
            // The file layer's own refusals: the wrong access mode.
            let ro = caio::OpenOptions::new()
                .read(true)
                .context(c.clone())
                .open(&path)
                .await
                .unwrap();
            let data = Buffer::from("abc");
            let (r, data) = ro.write_at_from(data, 0).await;
            assert!(r
                .unwrap_err()
                .to_string()
                .contains("not opened for writing"));
            assert_eq!(&data[..], b"abc", "{i}: a refused write keeps its bytes");
            let wo = caio::OpenOptions::new()
                .write(true)
                .context(c.clone())
                .open(&path)
                .await
                .unwrap();
            let (r, b) = wo.read_at_into(b, 0).await;
            assert!(r
                .unwrap_err()
                .to_string()
                .contains("not opened for reading"));
            assert_eq!(mark(&b), m, "{i}");
            let (r, v) = wo.read_vectored_at(vec![b, data], 0).await;
            assert!(r.is_err(), "{i}");
            assert_eq!((v.len(), mark(&v[0])), (2, m), "{i}");
        });
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789", "{i}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn o_direct_takes_any_memory_offset_and_length() {
    for i in backends() {
        let c = ctx(i);
        let d = util::dir();
        let path = d.path().join("f");
        let data = pattern(64 * 1024, 9);
        std::fs::write(&path, &data).unwrap();
        let f = open_rw(&c, &path, true);
        assert!(f.is_direct());
        block_on(async {
            // Unaligned memory, aligned range: on an aligned copy, into the caller's buffer.
            let b = unaligned(8192);
            let p = b.as_ptr();
            let (n, b) = f.read_at_into(b, 4096).await;
            assert_eq!(n.unwrap(), 8192, "{i}");
            assert_eq!((b.as_ptr(), &b[..]), (p, &data[4096..12288]), "{i}");
            // Aligned memory, unaligned range.
            let (n, b) = f.read_at_into(Buffer::with_capacity(1000), 100).await;
            assert_eq!(n.unwrap(), 1000, "{i}");
            assert_eq!(&b[..], &data[100..1100], "{i}");
            // The same on the raw context, which bounces unaligned memory for O_DIRECT too.
            let (n, b) = c.read_at_into(unaligned(4096), f.as_raw_fd(), 8192).await;
            assert_eq!(n.unwrap(), 4096, "{i}");
            assert_eq!(&b[..], &data[8192..12288], "{i}");
            // Writes: unaligned memory at an aligned offset, then an unaligned range.
            let mut w = unaligned(4096);
            assert_eq!(w.extend_from_slice(&[7u8; 4096]), 4096);
            let (n, w) = f.write_at_from(w, 16384).await;
            assert_eq!(n.unwrap(), 4096, "{i}");
            assert_eq!(w.len(), 4096, "{i}");
            let (n, _) = f
                .write_at_from(Buffer::from(&[8u8; 5000][..]), 30_001)
                .await;
            assert_eq!(n.unwrap(), 5000, "{i}");
            // Vectored: aligned buffers go to the kernel as they are; unaligned ones and
            // an unaligned range are bounced.
            let bufs = vec![Buffer::with_capacity(4096), Buffer::with_capacity(8192)];
            let (n, bufs) = f.read_vectored_at(bufs, 0).await;
            assert_eq!(n.unwrap(), 12288, "{i}");
            assert_eq!(&bufs[0][..], &data[..4096], "{i}");
            assert_eq!(&bufs[1][..], &data[4096..12288], "{i}");
            let (n, bufs) = f
                .read_vectored_at(vec![unaligned(4096), unaligned(4096)], 0)
                .await;
            assert_eq!(n.unwrap(), 8192, "{i}");
            assert_eq!(&bufs[1][..], &data[4096..8192], "{i}");
            let (n, bufs) = f
                .read_vectored_at(vec![unaligned(10), unaligned(20)], 5)
                .await;
            assert_eq!(n.unwrap(), 30, "{i}");
            assert_eq!(
                (&bufs[0][..], &bufs[1][..]),
                (&data[5..15], &data[15..35]),
                "{i}"
            );
            let (n, _) = f
                .write_vectored_at(vec![Buffer::from("ab"), unaligned(0), "cde".into()], 40_003)
                .await;
            assert_eq!(n.unwrap(), 5, "{i}");
            let (n, _) = f
                .write_vectored_at(vec![Buffer::zeroed(4096), Buffer::zeroed(4096)], 49_152)
                .await;
            assert_eq!(n.unwrap(), 8192, "{i}");
        });
        let mut want = data.clone();
        want[16384..20480].fill(7);
        want[30_001..35_001].fill(8);
        want[40_003..40_008].copy_from_slice(b"abcde");
        want[49_152..57_344].fill(0);
        drop(f);
        assert!(c.wait_idle_timeout(Duration::from_secs(10)));
        assert!(std::fs::read(&path).unwrap() == want, "{i}");
    }
}

#[test]
fn vectored_io_fills_and_writes_in_order_like_std() {
    for i in backends() {
        let c = ctx(i);
        let d = util::dir();
        let path = d.path().join("f");
        let f = open_rw(&c, &path, false);
        block_on(async {
            let parts = vec![
                Buffer::from(&pattern(3, 1)[..]),
                Buffer::from(&pattern(5000, 2)[..]),
                Buffer::new(),
                Buffer::from(&pattern(7, 3)[..]),
            ];
            let (n, parts) = f.write_vectored_at(parts, 10).await;
            assert_eq!(n.unwrap(), 5010, "{i}");
            assert_eq!(parts.len(), 4, "{i}");
            let mut want = vec![0u8; 10];
            parts.iter().for_each(|p| want.extend_from_slice(p));
            assert_eq!(std::fs::read(&path).unwrap(), want, "{i}");
            // Reads fill each buffer to its capacity before the next; short at the end.
            let caps = [10, 4096, 0, 100_000];
            let bufs = caps.iter().map(|&n| Buffer::with_capacity(n)).collect();
            let (n, bufs) = f.read_vectored_at(bufs, 0).await;
            assert_eq!(n.unwrap(), 5020, "{i}");
            let lens: Vec<usize> = bufs.iter().map(|b| b.len()).collect();
            assert_eq!(lens, [10, 4096, 0, 914], "{i}");
            let got: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(got, want, "{i}");
            // Past the end: nothing, and every buffer empty.
            let (n, bufs) = f.read_vectored_at(bufs, 1 << 20).await;
            assert_eq!(n.unwrap(), 0, "{i}");
            assert!(bufs.iter().all(|b| b.is_empty()), "{i}");
            // More buffers than one system call takes (IOV_MAX, 1024): still whole.
            let many: Vec<Buffer> = (0..1500u32)
                .map(|k| Buffer::from(&k.to_le_bytes()[..]))
                .collect();
            let (n, _) = c.write_vectored_at(many, f.as_raw_fd(), 0).await;
            assert_eq!(n.unwrap(), 6000, "{i}");
            let many = (0..1500).map(|_| Buffer::with_capacity(4)).collect();
            let (n, many) = c.read_vectored_at(many, f.as_raw_fd(), 0).await;
            assert_eq!(n.unwrap(), 6000, "{i}");
            for (k, b) in many.iter().enumerate() {
                assert_eq!(&b[..], &(k as u32).to_le_bytes(), "{i}: buffer {k}");
            }
            // None at all.
            let (n, none) = f.read_vectored_at(Vec::new(), 0).await;
            assert_eq!((n.unwrap(), none.len()), (0, 0), "{i}");
        });
    }
}

#[test]
fn dropped_owned_operations_never_write_into_reused_memory() {
    for i in backends() {
        let c: Context = ctx_with(i, 16);
        let s = Scratch::new();
        let data = pattern(64 * 4096, 5);
        block_on(c.write(data.clone(), s.fd(), 0)).unwrap();
        for round in 0..10 {
            // Start 64 reads and vectored reads into the caller's buffers, drop half.
            let mut ops: Vec<_> = (0..64u64)
                .map(|k| {
                    let mut one =
                        Box::pin(c.read_at_into(Buffer::with_capacity(4096), s.fd(), k * 4096));
                    let mut two = Box::pin(c.read_vectored_at(
                        vec![Buffer::with_capacity(100), Buffer::with_capacity(3996)],
                        s.fd(),
                        k * 4096,
                    ));
                    let early = (poll_once(&mut one), poll_once(&mut two));
                    (k, one, two, early)
                })
                .collect();
            ops.retain(|(k, ..)| k % 2 == round % 2);
            // Memory freed by the dropped ones is handed out again at once: it must not
            // change under us while the kernel finishes their reads.
            let fresh: Vec<Buffer> = (0..64)
                .map(|_| {
                    let mut b = Buffer::with_capacity(4096);
                    b.extend_from_slice(&[0xAA; 4096]);
                    b
                })
                .collect();
            block_on(async {
                for (k, one, two, early) in ops {
                    let k = k as usize;
                    let (r, b) = match early.0 {
                        Some(r) => r,
                        None => one.await,
                    };
                    assert_eq!(r.unwrap(), 4096, "{i}");
                    assert_eq!(&b[..], &data[k * 4096..(k + 1) * 4096], "{i}");
                    let (r, v) = match early.1 {
                        Some(r) => r,
                        None => two.await,
                    };
                    assert_eq!(r.unwrap(), 4096, "{i}");
                    assert_eq!(&v[1][..], &data[k * 4096 + 100..(k + 1) * 4096], "{i}");
                }
            });
            let start = Instant::now();
            while c.in_flight() > 0 {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "{i}: never finished"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(fresh.iter().all(|b| b.iter().all(|&x| x == 0xAA)), "{i}");
        }
    }
}
