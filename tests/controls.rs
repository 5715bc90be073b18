//! The per-operation controls (`priority`, `dsync`, `nowait`, `uncached`, `append`) on
//! every available backend: each moves the same bytes as the plain operation, does what
//! it promises where the kernel has the flag, falls back as documented (counted in
//! `Context::stats`) where it has not, and never blocks for `nowait`.

mod util;

use std::io;

use caio::{Buffer, Implementation, Priority};
use util::{backends, block_on, ctx, pattern, Scratch};

/// The counters move as operations run: submitted and completed, none left in flight.
#[test]
fn stats_count_what_runs() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            for k in 0..10u64 {
                c.write(pattern(4096, k), s.fd(), k * 4096).await.unwrap();
            }
            for k in 0..10u64 {
                c.read(4096, s.fd(), k * 4096).await.unwrap();
            }
            c.fsync(s.fd()).await.unwrap();
        });
        let st = c.stats();
        assert_eq!(
            (st.submitted, st.completed, st.in_flight),
            (21, 21, 0),
            "{i}: {st}"
        );
        // Buffered writes go to the pool on the kernel backends, never on the others.
        match i {
            Implementation::Linux => assert!(st.to_pool >= 10, "{i}: {st}"),
            Implementation::Thread | Implementation::Blocking => {
                assert_eq!(st.to_pool, 0, "{i}: {st}")
            }
            _ => {}
        }
        assert!(st.to_string().contains("submitted 21"), "{st}");
    }
}

/// Every control, alone and together, moves the bytes the plain operation would.
#[test]
fn every_control_moves_the_same_bytes() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        let mut model = Vec::new();
        block_on(async {
            let a = pattern(10_000, 1);
            let n = c.write(a.clone(), s.fd(), 0).dsync().await.unwrap();
            assert_eq!(n, a.len(), "{i}");
            model.extend_from_slice(&a);
            let b = pattern(5000, 2);
            let (n, _) = c
                .write_at_from(Buffer::from(&b[..]), s.fd(), 3000)
                .uncached()
                .priority(Priority::BestEffort(4))
                .await;
            assert_eq!(n.unwrap(), b.len(), "{i}");
            model[3000..8000].copy_from_slice(&b);
            let read = c
                .read(20_000, s.fd(), 0)
                .uncached()
                .priority(Priority::Idle)
                .await
                .unwrap();
            assert!(read[..] == model[..], "{i}: read back");
            let (n, bufs) = c
                .read_vectored_at(
                    vec![Buffer::with_capacity(100), Buffer::with_capacity(200)],
                    s.fd(),
                    50,
                )
                .priority(Priority::RealTime(0))
                .await;
            assert_eq!(n.unwrap(), 300, "{i}");
            assert!(
                bufs[0][..] == model[50..150] && bufs[1][..] == model[150..350],
                "{i}"
            );
            c.fdsync(s.fd())
                .priority(Priority::BestEffort(0))
                .await
                .unwrap();
        });
        assert!(s.contents() == model, "{i}: the file");
    }
}

/// `append()` writes at the end, whatever the offset, on every write form.
#[test]
fn append_writes_at_the_end_whatever_the_offset() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        std::fs::write(&s.path, b"start|").unwrap();
        let r = block_on(async {
            c.write("one|", s.fd(), 0).append().await?;
            let (n, _) = c
                .write_vectored_at(vec!["two".into(), "|".into()], s.fd(), 2)
                .append()
                .await;
            n?;
            let (n, _) = c.write_at_from("three".into(), s.fd(), 0).append().await;
            n
        });
        match r {
            Ok(_) => assert_eq!(s.contents(), b"start|one|two|three", "{i}"),
            // macOS and FreeBSD: no RWF_APPEND, and no way to do it in one step.
            Err(e) if cfg!(not(any(target_os = "linux", windows))) => {
                assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{i}: {e}")
            }
            Err(e) => panic!("{i}: {e}"),
        }
    }
}

/// A priority level above 7 is refused when the operation is polled, before it runs;
/// the buffer comes back.
#[test]
fn a_priority_level_out_of_range_is_invalid_input() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            let e = c
                .read(10, s.fd(), 0)
                .priority(Priority::BestEffort(8))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{i}: {e}");
            let buf = Buffer::from("kept");
            let (r, back) = c
                .write_at_from(buf, s.fd(), 0)
                .priority(Priority::RealTime(9))
                .await;
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidInput, "{i}");
            assert_eq!(&back[..], b"kept", "{i}: the buffer comes back");
        });
        assert!(s.contents().is_empty(), "{i}: nothing written");
    }
}

/// Linux: a page-cache miss read with `nowait()` is `WouldBlock` on every backend (the
/// kernel's RWF_NOWAIT answer, not a blocking read); once cached, it reads.
#[cfg(target_os = "linux")]
#[test]
fn nowait_on_a_page_cache_miss_would_block_and_on_a_hit_reads() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        let data = pattern(8 << 20, 3);
        std::fs::write(&s.path, &data).unwrap();
        s.file.sync_all().unwrap();
        evict(&s);
        if util::resident_fraction(&s.path) > 0.0 {
            eprintln!("SKIP {i}: the page cache keeps this file's pages after DONTNEED");
            continue;
        }
        block_on(async {
            let e = c.read(4096, s.fd(), 4 << 20).nowait().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{i}: {e}");
            let (r, _) = c
                .read_at_into(Buffer::with_capacity(4096), s.fd(), 5 << 20)
                .nowait()
                .await;
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::WouldBlock, "{i}");
            // Cached now: the same read succeeds.
            c.read(4096, s.fd(), 4 << 20).await.unwrap();
            let hit = c.read(4096, s.fd(), 4 << 20).nowait().await.unwrap();
            assert!(hit[..] == data[4 << 20..(4 << 20) + 4096], "{i}");
        });
        assert_eq!(c.stats().fallbacks.nowait, 0, "{i}: ext4 has RWF_NOWAIT");
    }
}

/// Linux: `uncached()` leaves no pages of what it read in the page cache (RWF_DONTCACHE,
/// or its fallback where the filesystem lacks it); a plain read leaves them.
#[cfg(target_os = "linux")]
#[test]
fn an_uncached_read_leaves_no_pages_in_the_cache() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        std::fs::write(&s.path, pattern(4 << 20, 4)).unwrap();
        s.file.sync_all().unwrap();
        evict(&s);
        block_on(async {
            for k in 0..4u64 {
                c.read(1 << 20, s.fd(), k << 20).uncached().await.unwrap();
            }
        });
        let after_uncached = util::resident_fraction(&s.path);
        block_on(async {
            for k in 0..4u64 {
                c.read(1 << 20, s.fd(), k << 20).await.unwrap();
            }
        });
        let after_plain = util::resident_fraction(&s.path);
        eprintln!(
            "{i}: resident after uncached reads {after_uncached:.2}, after plain {after_plain:.2}; {}",
            c.stats()
        );
        assert!(after_uncached < 0.1, "{i}: {after_uncached}");
        assert!(after_plain > 0.9, "{i}: {after_plain}");
    }
}

/// Linux: on tmpfs, which has no RWF_DONTCACHE, `uncached()` is the plain read then
/// `posix_fadvise(DONTNEED)`, counted; and `nowait()` reads, since memory never blocks.
#[cfg(target_os = "linux")]
#[test]
fn on_tmpfs_uncached_falls_back_counted_and_nowait_reads() {
    let Ok(d) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("SKIP: no /dev/shm");
        return;
    };
    let p = d.path().join("f");
    std::fs::write(&p, pattern(64 << 10, 5)).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let fd = util::raw(&f);
    for i in backends() {
        let c = ctx(i);
        std::fs::write(&p, pattern(64 << 10, 5)).unwrap();
        block_on(async {
            let got = c.read(64 << 10, fd, 0).uncached().await.unwrap();
            assert!(
                got[..] == pattern(64 << 10, 5)[..],
                "{i}: {} bytes, {}",
                got.len(),
                c.stats()
            );
            c.write("x", fd, 0).uncached().await.unwrap();
            let got = c.read(10, fd, 0).nowait().await.unwrap();
            assert_eq!(&got[..1], b"x", "{i}");
        });
        let st = c.stats();
        assert!(st.fallbacks.uncached >= 2, "{i}: {st}");
        assert_eq!(st.fallbacks.nowait, 0, "{i}: {st}");
    }
}

/// Linux: the priority reaches the kernel: `ioprio_set` around the call on the thread
/// backends, `aio_reqprio` in the iocb on `linux`, as strace shows them. (io_uring's
/// submission entries are in shared memory, which strace does not show: the block layer
/// shows every backend's, in `the_block_layer_sees_each_operations_priority`.)
#[cfg(target_os = "linux")]
#[test]
fn the_priority_reaches_the_kernel() {
    if !util::has_strace() {
        eprintln!("SKIP: no strace");
        return;
    }
    for i in [
        Implementation::Linux,
        Implementation::Thread,
        Implementation::Blocking,
    ] {
        if !i.is_available() {
            eprintln!("SKIP {i}: not available");
            continue;
        }
        let mut cmd = util::test_command(
            "child_priority",
            &["strace", "-f", "-e", "trace=ioprio_set,io_submit", "-v"],
        );
        cmd.env(CHILD, i.as_str());
        let out = util::output_within(cmd, std::time::Duration::from_secs(120));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{i}: {stderr}");
        let want = "IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)";
        match i {
            Implementation::Linux => assert!(
                stderr
                    .lines()
                    .any(|l| l.contains("io_submit") && l.contains(want)),
                "{i}: no io_submit with the priority:\n{stderr}"
            ),
            _ => assert!(
                stderr
                    .lines()
                    .any(|l| l.contains("ioprio_set") && l.contains(want)),
                "{i}: no ioprio_set:\n{stderr}"
            ),
        }
    }
}

/// Linux: each operation's priority reaches the block layer, on every backend (uring
/// too, whose entries strace cannot show): the class and level of the requests of
/// O_DIRECT reads, read back from the `block:block_rq_issue` tracepoint, in a tracing
/// instance of the test's own (removed after, so no system setting changes).
#[cfg(target_os = "linux")]
#[test]
fn the_block_layer_sees_each_operations_priority() {
    let Some(trace) = util::TraceInstance::new("block/block_rq_issue") else {
        return;
    };
    // Sizes and levels no other test here uses: 64 KiB reads, 128 KiB apart (never
    // merged), at BestEffort(6) and RealTime(3).
    const LEN: usize = 64 << 10;
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::direct();
        std::fs::write(&s.path, pattern(32 * 2 * LEN, 9)).unwrap();
        s.file.sync_all().unwrap();
        trace.clear();
        block_on(async {
            for k in 0..32u64 {
                let p = if k % 2 == 0 {
                    Priority::BestEffort(6)
                } else {
                    Priority::RealTime(3)
                };
                let (r, _) = c
                    .read_at_into(Buffer::with_capacity(LEN), s.fd(), k * 2 * LEN as u64)
                    .priority(p)
                    .await;
                assert_eq!(r.unwrap(), LEN, "{i}");
            }
        });
        let text = trace.read();
        let count = |class: &str| {
            text.lines()
                .filter(|l| l.contains(&format!(" {LEN} ")) && l.contains(class))
                .count()
        };
        let (be, rt) = (count(" be,0,6 "), count(" rt,0,3 "));
        println!("{i}: {be} requests at be,6 and {rt} at rt,3 for 16 reads of each");
        assert!(
            be >= 16 && rt >= 16,
            "{i}: {be} requests at be,6, {rt} at rt,3:\n{text}"
        );
    }
}

#[cfg(target_os = "linux")]
const CHILD: &str = "CAIO_CONTROLS_CHILD";

/// In a child under strace: one O_DIRECT read and one buffered write at `Idle` priority.
#[cfg(target_os = "linux")]
#[test]
fn child_priority() {
    let Ok(name) = std::env::var(CHILD) else {
        return;
    };
    let i: Implementation = name.parse().unwrap();
    let c = caio::Context::builder().implementation(i).build().unwrap();
    let s = Scratch::direct();
    block_on(async {
        c.write(Buffer::from(&pattern(4096, 1)[..]), s.fd(), 0)
            .await
            .unwrap();
        c.read(4096, s.fd(), 0)
            .priority(Priority::Idle)
            .await
            .unwrap();
    });
    let b = Scratch::new();
    block_on(c.write("x", b.fd(), 0).priority(Priority::Idle)).unwrap();
}

/// Drops the file's pages from the page cache.
#[cfg(target_os = "linux")]
fn evict(s: &Scratch) {
    // SAFETY: posix_fadvise takes the descriptor and a range, no pointers.
    let r = unsafe { libc::posix_fadvise(util::raw(&s.file), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0);
}

/// Windows: no RWF_* flags; `dsync()` is the write then FlushFileBuffers, `nowait()`
/// answers `WouldBlock`, `uncached()` runs plain, `priority()` is not applied: each
/// counted, the bytes the same.
#[cfg(windows)]
#[test]
fn on_windows_the_controls_fall_back_counted() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            c.write("abc", s.fd(), 0).dsync().await.unwrap();
            let e = c.read(3, s.fd(), 0).nowait().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{i}");
            let got = c
                .read(3, s.fd(), 0)
                .uncached()
                .priority(Priority::BestEffort(1))
                .await
                .unwrap();
            assert_eq!(&got[..], b"abc", "{i}");
        });
        let f = c.stats().fallbacks;
        assert_eq!(
            (f.dsync, f.nowait, f.uncached, f.priority),
            (1, 1, 1, 1),
            "{i}"
        );
    }
}

/// The same controls on `File`'s futures: a plain file and, on Linux, an O_DIRECT one at
/// unaligned offsets (several requests per call, each with the controls).
#[test]
fn file_operations_take_the_controls_too() {
    for i in backends() {
        let c = ctx(i);
        for direct in [false, cfg!(target_os = "linux")] {
            let d = util::dir();
            let p = d.path().join("f");
            let f = util::open_rw(&c, &p, direct);
            let mut model = vec![0u8; 20_000];
            block_on(async {
                let a = pattern(20_000, 1);
                f.write_all_at(a.clone(), 0)
                    .dsync()
                    .priority(Priority::BestEffort(2))
                    .await
                    .unwrap();
                model.copy_from_slice(&a);
                let b = pattern(3000, 2);
                let n = f.write_at(b.clone(), 1001).uncached().await.unwrap();
                model[1001..1001 + n].copy_from_slice(&b[..n]);
                let (n, _) = f.write_at_from(Buffer::from(&b[..]), 7777).dsync().await;
                let n = n.unwrap();
                model[7777..7777 + n].copy_from_slice(&b[..n]);
                let (r, _) = f
                    .write_vectored_at(vec!["xy".into(), "z".into()], 13)
                    .dsync()
                    .await;
                assert_eq!(r.unwrap(), 3, "{i}");
                model[13..16].copy_from_slice(b"xyz");
                let got = f.read_at(20_000, 0).uncached().await.unwrap();
                assert!(got[..] == model[..], "{i} direct={direct}: read_at");
                let (n, back) = f
                    .read_at_into(Buffer::with_capacity(5000), 333)
                    .priority(Priority::Idle)
                    .await;
                assert_eq!(n.unwrap(), 5000, "{i}");
                assert!(
                    back[..] == model[333..5333],
                    "{i} direct={direct}: read_at_into"
                );
                let (n, bufs) = f
                    .read_vectored_at(vec![Buffer::with_capacity(10), Buffer::with_capacity(7)], 9)
                    .uncached()
                    .await;
                assert_eq!(n.unwrap(), 17, "{i}");
                assert!(
                    bufs[0][..] == model[9..19] && bufs[1][..] == model[19..26],
                    "{i}"
                );
                f.sync_data()
                    .priority(Priority::BestEffort(0))
                    .await
                    .unwrap();
                // An out-of-range priority: refused, the buffer back, nothing written.
                let (r, back) = f
                    .write_at_from(Buffer::from("no"), 0)
                    .priority(Priority::Idle)
                    .priority(Priority::RealTime(8))
                    .await;
                assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidInput, "{i}");
                assert_eq!(&back[..], b"no");
                let e = f
                    .read_at(1, 0)
                    .priority(Priority::BestEffort(9))
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{i}");
            });
            assert!(
                std::fs::read(&p).unwrap() == model,
                "{i} direct={direct}: the file"
            );
        }
    }
}

/// Linux: `File::read_at(..).nowait()` on a cold page is `WouldBlock`, and
/// `File::read_at_into(..).uncached()` leaves no pages cached.
#[cfg(target_os = "linux")]
#[test]
fn file_nowait_and_uncached_act() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        std::fs::write(&s.path, pattern(2 << 20, 6)).unwrap();
        s.file.sync_all().unwrap();
        evict(&s);
        let f = util::open_rw(&c, &s.path, false);
        block_on(async {
            let e = f.read_at(4096, 1 << 20).nowait().await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{i}: {e}");
            let mut buf = Buffer::with_capacity(256 << 10);
            for k in 0..8u64 {
                let (n, back) = f.read_at_into(buf, k * (256 << 10)).uncached().await;
                n.unwrap();
                buf = back;
            }
        });
        let resident = util::resident_fraction(&s.path);
        assert!(
            resident < 0.1,
            "{i}: {resident} of the file cached after uncached reads"
        );
    }
}
