//! The behaviour the public contract (`../shared/API.md`) promises, run on every
//! available implementation.

mod util;

use std::{io, sync::Arc};

use caio::{Buffer, Context, Implementation};
use futures::future::join_all;
use util::{backends, block_on, ctx, ctx_with, pattern, poll_once, raw, Scratch};

#[cfg(unix)]
fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    r.expect_err("expected an OS error")
        .raw_os_error()
        .expect("an errno")
}

#[test]
fn write_then_read_round_trips() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        let data = pattern(10_000, 1);
        block_on(async {
            assert_eq!(
                c.write(data.clone(), s.fd(), 0).await.unwrap(),
                10_000,
                "{i}"
            );
            let got = c.read(10_000, s.fd(), 0).await.unwrap();
            assert_eq!(got, data, "{i}");
            let mid = c.read(100, s.fd(), 5000).await.unwrap();
            assert_eq!(&mid[..], &data[5000..5100], "{i}");
        });
        assert_eq!(s.contents(), data, "{i}");
    }
}

#[test]
fn every_buffer_source_can_be_written() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            c.write("ab", s.fd(), 0).await.unwrap();
            c.write(String::from("cd"), s.fd(), 2).await.unwrap();
            c.write(&b"ef"[..], s.fd(), 4).await.unwrap();
            c.write(b"gh", s.fd(), 6).await.unwrap();
            c.write(vec![b'i', b'j'], s.fd(), 8).await.unwrap();
            c.write(Buffer::from("kl"), s.fd(), 10).await.unwrap();
        });
        assert_eq!(s.contents(), b"abcdefghijkl", "{i}");
    }
}

#[test]
fn overwrite_replaces_only_the_range_written() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            c.write(vec![b'a'; 100], s.fd(), 0).await.unwrap();
            c.write(vec![b'b'; 10], s.fd(), 45).await.unwrap();
        });
        let mut want = vec![b'a'; 100];
        want[45..55].fill(b'b');
        assert_eq!(s.contents(), want, "{i}");
    }
}

#[test]
fn reads_are_short_across_eof_and_empty_past_it() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        let data = pattern(1000, 2);
        block_on(async {
            c.write(data.clone(), s.fd(), 0).await.unwrap();
            let crossing = c.read(4096, s.fd(), 900).await.unwrap();
            assert_eq!(&crossing[..], &data[900..], "{i}: short read across EOF");
            assert!(
                c.read(10, s.fd(), 1000).await.unwrap().is_empty(),
                "{i}: at EOF"
            );
            assert!(
                c.read(10, s.fd(), 1 << 40).await.unwrap().is_empty(),
                "{i}: far past EOF"
            );
        });
    }
}

#[test]
fn zero_length_operations_succeed() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            assert!(c.read(0, s.fd(), 0).await.unwrap().is_empty(), "{i}");
            assert_eq!(c.write(Vec::new(), s.fd(), 0).await.unwrap(), 0, "{i}");
            assert_eq!(c.write("", s.fd(), 1 << 20).await.unwrap(), 0, "{i}");
        });
        assert_eq!(
            s.file.metadata().unwrap().len(),
            0,
            "{i}: a zero write extends nothing"
        );
    }
}

#[test]
fn a_sparse_hole_reads_as_zeros() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            c.write("tail", s.fd(), 1 << 20).await.unwrap();
            let hole = c.read(8192, s.fd(), 4096).await.unwrap();
            assert_eq!(hole.len(), 8192, "{i}");
            assert!(hole.iter().all(|&b| b == 0), "{i}");
            assert_eq!(
                &c.read(10, s.fd(), 1 << 20).await.unwrap()[..],
                b"tail",
                "{i}"
            );
        });
        assert_eq!(s.file.metadata().unwrap().len(), (1 << 20) + 4);
    }
}

#[test]
fn multi_mebibyte_transfers_are_whole() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        let data = pattern(24 << 20, 3);
        block_on(async {
            assert_eq!(
                c.write(data.clone(), s.fd(), 0).await.unwrap(),
                data.len(),
                "{i}"
            );
            let got = c.read(data.len(), s.fd(), 0).await.unwrap();
            assert!(got == data, "{i}: 24 MiB read back differs");
        });
    }
}

#[test]
fn many_concurrent_writes_at_distinct_offsets_then_fdsync() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        let blocks: Vec<Vec<u8>> = (0..512).map(|k| pattern(4096, k)).collect();
        block_on(async {
            let writes = blocks
                .iter()
                .enumerate()
                .map(|(k, b)| c.write(b.clone(), s.fd(), k as u64 * 4096));
            for r in join_all(writes).await {
                assert_eq!(r.unwrap(), 4096, "{i}");
            }
            c.fdsync(s.fd()).await.unwrap();
            c.fsync(s.fd()).await.unwrap();
        });
        assert_eq!(s.contents(), blocks.concat(), "{i}");
    }
}

#[cfg(unix)]
#[test]
fn bad_and_closed_descriptors_are_ebadf() {
    for i in backends() {
        let c = ctx(i);
        // A descriptor that was open and is closed now: dup to a number nothing else in the
        // test process reaches (the lowest free number is taken by every open), then close.
        let s = Scratch::new();
        let closed = 900 + i as i32;
        // SAFETY: dup2 to an unused descriptor number, closed right after.
        assert_eq!(unsafe { libc::dup2(s.fd(), closed) }, closed);
        // SAFETY: we own `closed`; nothing else uses it.
        assert_eq!(unsafe { libc::close(closed) }, 0);
        block_on(async {
            for fd in [-1, closed, i32::MAX] {
                assert_eq!(
                    errno(c.read(10, fd, 0).await),
                    libc::EBADF,
                    "{i} read fd {fd}"
                );
                assert_eq!(
                    errno(c.write("x", fd, 0).await),
                    libc::EBADF,
                    "{i} write fd {fd}"
                );
                assert_eq!(errno(c.fsync(fd).await), libc::EBADF, "{i} fsync fd {fd}");
                assert_eq!(errno(c.fdsync(fd).await), libc::EBADF, "{i} fdsync fd {fd}");
            }
        });
    }
}

#[cfg(unix)]
#[test]
fn a_descriptor_without_the_needed_access_is_ebadf() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        std::fs::write(&s.path, b"content").unwrap();
        let ro = std::fs::File::open(&s.path).unwrap();
        let wo = std::fs::OpenOptions::new()
            .write(true)
            .open(&s.path)
            .unwrap();
        block_on(async {
            assert_eq!(errno(c.write("x", raw(&ro), 0).await), libc::EBADF, "{i}");
            assert_eq!(errno(c.read(4, raw(&wo), 0).await), libc::EBADF, "{i}");
        });
        assert_eq!(s.contents(), b"content", "{i}: nothing was written");
    }
}

#[cfg(unix)]
#[test]
fn a_directory_is_eisdir_and_a_pipe_is_espipe() {
    for i in backends() {
        let c = ctx(i);
        let dir = std::fs::File::open(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        block_on(async {
            let e = errno(c.read(10, raw(&dir), 0).await);
            assert!(
                e == libc::EISDIR || e == libc::EINVAL,
                "{i}: directory gave errno {e}"
            );
            assert_eq!(errno(c.write("x", raw(&dir), 0).await), libc::EBADF, "{i}");
            assert_eq!(
                errno(c.read(10, fds[0], 0).await),
                libc::ESPIPE,
                "{i}: pipe read"
            );
            assert_eq!(
                errno(c.write("x", fds[1], 0).await),
                libc::ESPIPE,
                "{i}: pipe write"
            );
        });
        // SAFETY: closing the two pipe ends we own.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}

#[test]
fn absurd_sizes_are_invalid_input_without_abort() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        block_on(async {
            for n in [usize::MAX, usize::MAX / 2, 1usize << 52] {
                let e = c.read(n, s.fd(), 0).await.unwrap_err();
                assert_eq!(
                    e.kind(),
                    io::ErrorKind::InvalidInput,
                    "{i}: nbytes {n}: {e}"
                );
            }
            let e = c.read(1, s.fd(), u64::MAX).await.unwrap_err();
            assert_eq!(
                e.kind(),
                io::ErrorKind::InvalidInput,
                "{i}: offset u64::MAX: {e}"
            );
            // The context still works afterwards.
            c.write("ok", s.fd(), 0).await.unwrap();
        });
    }
}

#[test]
fn far_more_operations_than_max_requests_wait_their_turn() {
    for i in backends() {
        let c = ctx_with(i, 4);
        assert_eq!(c.max_requests(), 4);
        let s = Scratch::new();
        let n = 3000u64;
        block_on(async {
            let writes = (0..n).map(|k| c.write(k.to_le_bytes().to_vec(), s.fd(), k * 8));
            for r in join_all(writes).await {
                assert_eq!(r.unwrap(), 8, "{i}");
            }
            let reads = (0..n).map(|k| c.read(8, s.fd(), k * 8));
            for (k, r) in join_all(reads).await.into_iter().enumerate() {
                assert_eq!(&r.unwrap()[..], &(k as u64).to_le_bytes(), "{i}");
            }
        });
    }
}

#[test]
fn futures_dropped_mid_flight_do_not_disturb_the_others() {
    for i in backends() {
        let c = ctx_with(i, 8);
        let s = Scratch::new();
        let data = pattern(64 * 4096, 5);
        block_on(c.write(data.clone(), s.fd(), 0)).unwrap();
        for round in 0..20 {
            // Start every read (in flight, queued or waiting for a slot), then drop every
            // other one and finish the rest.
            let mut reads: Vec<_> = (0..64)
                .map(|k| {
                    let mut f = c.read(4096, s.fd(), k * 4096);
                    let early = poll_once(&mut f);
                    (f, early)
                })
                .collect();
            let mut k = 0;
            reads.retain(|_| {
                k += 1;
                (k - 1) % 2 == round % 2
            });
            block_on(async {
                for (n, (f, early)) in reads.into_iter().enumerate() {
                    let k = n * 2 + round % 2;
                    let got = match early {
                        Some(r) => r,
                        None => f.await,
                    };
                    assert_eq!(&got.unwrap()[..], &data[k * 4096..(k + 1) * 4096], "{i}");
                }
            });
        }
        // Writes dropped after starting: the context keeps working and data written
        // afterwards lands where it should.
        let mut w: Vec<_> = (0..16)
            .map(|k| c.write(vec![1u8; 4096], s.fd(), k * 4096))
            .collect();
        for f in w.iter_mut() {
            poll_once(f);
        }
        drop(w);
        // They still run (dropping a started write does not undo it): wait them out, then
        // the same range takes new data.
        let start = std::time::Instant::now();
        while c.in_flight() > 0 {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "{i}: dropped writes never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        block_on(c.write(vec![9u8; 10], s.fd(), 0)).unwrap();
        block_on(c.fdsync(s.fd())).unwrap();
        assert_eq!(
            &block_on(c.read(10, s.fd(), 0)).unwrap()[..],
            &[9u8; 10],
            "{i}"
        );
    }
}

#[test]
fn dropping_every_handle_with_work_in_flight_blocks_nobody() {
    for i in backends() {
        let s = Scratch::new();
        let data = pattern(1 << 20, 6);
        {
            let c = ctx_with(i, 16);
            let mut ops: Vec<_> = (0..32)
                .map(|k| c.write(data.clone(), s.fd(), k << 20))
                .collect();
            for f in ops.iter_mut() {
                poll_once(f);
            }
            let started = std::time::Instant::now();
            drop(c);
            drop(ops);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "{i}: dropping took {:?}",
                started.elapsed()
            );
        }
        // The operations that started finish on their own (still writing the first 32 MiB
        // for a while); a fresh context works meanwhile, past their range.
        let c = ctx(i);
        block_on(c.write("fresh", s.fd(), 64 << 20)).unwrap();
        assert_eq!(
            &block_on(c.read(5, s.fd(), 64 << 20)).unwrap()[..],
            b"fresh",
            "{i}"
        );
    }
}

#[test]
fn futures_outlive_the_context_handle() {
    for i in backends() {
        let s = Scratch::new();
        let c = ctx(i);
        let write = c.write("still here", s.fd(), 0);
        let read = c.read(10, s.fd(), 0);
        drop(c);
        block_on(async {
            assert_eq!(write.await.unwrap(), 10, "{i}");
            assert_eq!(&read.await.unwrap()[..], b"still here", "{i}");
        });
    }
}

#[test]
fn one_context_serves_several_os_threads() {
    for i in backends() {
        let c = ctx_with(i, 32);
        let s = Arc::new(Scratch::new());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let (c, s) = (c.clone(), Arc::clone(&s));
                std::thread::spawn(move || {
                    for k in 0..50u64 {
                        let off = (t * 50 + k) * 512;
                        let block = pattern(512, off);
                        block_on(c.write(block.clone(), s.fd(), off)).unwrap();
                        assert_eq!(block_on(c.read(512, s.fd(), off)).unwrap(), block);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker thread panicked");
        }
        let all = s.contents();
        for off in (0..400u64).map(|n| n * 512) {
            assert_eq!(
                &all[off as usize..off as usize + 512],
                &pattern(512, off)[..],
                "{i}"
            );
        }
    }
}

#[test]
fn futures_run_on_tokio_multi_thread_via_spawn() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for i in backends() {
        let c = ctx(i);
        let s = Arc::new(Scratch::new());
        rt.block_on(async {
            let tasks: Vec<_> = (0..64u64)
                .map(|k| {
                    let (c, s) = (c.clone(), Arc::clone(&s));
                    tokio::spawn(async move {
                        let block = pattern(4096, k);
                        c.write(block.clone(), s.fd(), k * 4096).await.unwrap();
                        c.read(4096, s.fd(), k * 4096).await.unwrap() == block
                    })
                })
                .collect();
            for t in tasks {
                assert!(t.await.unwrap(), "{i}");
            }
        });
    }
}

#[test]
fn futures_run_on_tokio_current_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        rt.block_on(async {
            c.write("tokio", s.fd(), 3).await.unwrap();
            assert_eq!(
                &c.read(8, s.fd(), 0).await.unwrap()[..],
                b"\0\0\0tokio",
                "{i}"
            );
        });
    }
}

#[test]
fn futures_run_on_a_futures_thread_pool() {
    let pool = futures::executor::ThreadPool::builder()
        .pool_size(2)
        .create()
        .unwrap();
    for i in backends() {
        let c = ctx(i);
        let s = Arc::new(Scratch::new());
        let (tx, rx) = std::sync::mpsc::channel();
        for k in 0..16u64 {
            let (c, s, tx) = (c.clone(), Arc::clone(&s), tx.clone());
            pool.spawn_ok(async move {
                let r = c.write(pattern(100, k), s.fd(), k * 100).await;
                tx.send(r.map(|n| n == 100)).unwrap();
            });
        }
        drop(tx);
        assert_eq!(
            rx.iter().filter(|r| matches!(r, Ok(true))).count(),
            16,
            "{i}"
        );
        assert_eq!(&s.contents()[300..400], &pattern(100, 3)[..], "{i}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn o_direct_works_with_any_buffer() {
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::direct();
        let data = pattern(16384, 7);
        // A Vec whose memory is deliberately not page-aligned.
        let mut backing = vec![0u8; 16384 + 1];
        let start = if backing.as_ptr() as usize % 4096 == 0 {
            1
        } else {
            0
        };
        let unaligned: Vec<u8> = {
            backing.truncate(start + 16384);
            backing[start..].copy_from_slice(&data);
            if start == 1 {
                backing.remove(0);
            }
            backing
        };
        let fresh = Buffer::from(unaligned);
        block_on(async {
            assert_eq!(
                c.write(fresh, s.fd(), 4096).await.unwrap(),
                16384,
                "{i}: unaligned Vec"
            );
            assert_eq!(
                c.write(Buffer::from(&data[..4096]), s.fd(), 0)
                    .await
                    .unwrap(),
                4096,
                "{i}"
            );
            let back = c.read(16384, s.fd(), 4096).await.unwrap();
            assert!(back.is_aligned_to(caio::ALIGNMENT), "{i}");
            assert!(back == data, "{i}: O_DIRECT read back differs");
            // Misaligned offsets are the kernel's EINVAL, the same on every backend.
            assert_eq!(errno(c.read(4096, s.fd(), 100).await), libc::EINVAL, "{i}");
        });
    }
}

#[test]
fn builder_rejects_bad_settings_and_reports_what_it_built() {
    for (b, what) in [
        (Context::builder().max_requests(0), "max_requests"),
        (Context::builder().max_requests(usize::MAX), "max_requests"),
        (Context::builder().threads(0), "threads"),
        (Context::builder().threads(1 << 20), "threads"),
    ] {
        match b.build() {
            Err(caio::Error::InvalidConfig(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    for i in backends() {
        let c = Context::builder()
            .implementation(i)
            .max_requests(7)
            .threads(3)
            .build()
            .unwrap();
        assert_eq!((c.implementation(), c.max_requests()), (i, 7));
        let dbg = format!("{c:?}");
        assert!(dbg.contains(i.as_str()), "{dbg}");
    }
    for i in Implementation::ALL
        .into_iter()
        .filter(|i| !i.is_available())
    {
        match Context::builder().implementation(i).build() {
            Err(caio::Error::Unavailable {
                implementation,
                reason,
            }) => {
                assert_eq!(implementation, i);
                assert!(!reason.is_empty());
            }
            other => panic!("{i} is unavailable but build gave {other:?}"),
        }
    }
}

#[test]
fn context_and_futures_are_send_sync_static() {
    fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send_static<T: Send + 'static>(_: &T) {}
    let c = ctx(Implementation::Blocking);
    send_sync(&c);
    let s = Scratch::new();
    send_static(&c.read(1, s.fd(), 0));
    send_static(&c.write("x", s.fd(), 0));
    send_static(&c.fsync(s.fd()));
    send_static(&c.fdsync(s.fd()));
    fn buffer_traits<T: Send + Sync + Clone + Eq + std::fmt::Debug + AsRef<[u8]>>() {}
    buffer_traits::<Buffer>();
}

#[test]
fn errors_convert_into_io_errors() {
    let e: io::Error = "nope".parse::<Implementation>().unwrap_err().into();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("nope"));
    let e: io::Error = caio::Error::InvalidConfig("x".into()).into();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    fn uses_question_mark() -> io::Result<Context> {
        Ok(Context::builder().max_requests(0).build()?)
    }
    assert!(uses_question_mark().is_err());
}

#[cfg(target_os = "linux")]
#[test]
fn direct_alignment_is_discovered_and_sane() {
    let s = Scratch::direct();
    let a = caio::direct_alignment(s.fd()).unwrap();
    for v in [a.memory, a.offset] {
        assert!(
            v.is_power_of_two() && (1..=caio::ALIGNMENT).contains(&v),
            "{a:?}"
        );
    }
    assert!(a.allows(0, a.offset) && !a.allows(1, a.offset) && !a.allows(0, a.offset + 1));
    if cfg!(target_os = "linux") && a.source != caio::AlignmentSource::Statx {
        eprintln!("NOTE: statx STATX_DIOALIGN not reported here; using {a:?}");
    }
    assert_eq!(
        caio::direct_alignment(-1).unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
}

/// What std's own call on the same handle gives: caio's errors carry the Windows error
/// code and the `ErrorKind` std maps it to.
#[cfg(windows)]
fn same_as_std<T: std::fmt::Debug, U: std::fmt::Debug>(
    what: &str,
    caio: io::Result<T>,
    std: io::Result<U>,
) {
    let (c, s) = (caio.expect_err(what), std.expect_err(what));
    assert!(
        c.raw_os_error().is_some(),
        "{what}: {c:?} has no Windows error code"
    );
    assert_eq!(
        c.raw_os_error(),
        s.raw_os_error(),
        "{what}: {c:?} against std's {s:?}"
    );
    assert_eq!(c.kind(), s.kind(), "{what}");
}

#[cfg(windows)]
#[test]
fn a_bad_handle_fails_as_std_does() {
    use std::os::windows::{fs::FileExt, io::FromRawHandle};
    for i in backends() {
        let c = ctx(i);
        // Null, and a value far above any handle a process is given: never open.
        for h in [std::ptr::null_mut(), 0x7fff_fff0 as caio::RawFd] {
            // SAFETY: a handle value that is not open: every call on it fails, and
            // ManuallyDrop never closes it.
            let bad = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_handle(h) });
            block_on(async {
                let mut b = [0u8; 10];
                same_as_std(
                    &format!("{i} read {h:?}"),
                    c.read(10, h, 0).await,
                    bad.seek_read(&mut b, 0),
                );
                same_as_std(
                    &format!("{i} write {h:?}"),
                    c.write("x", h, 0).await,
                    bad.seek_write(b"x", 0),
                );
                same_as_std(
                    &format!("{i} fsync {h:?}"),
                    c.fsync(h).await,
                    bad.sync_all(),
                );
                same_as_std(
                    &format!("{i} fdsync {h:?}"),
                    c.fdsync(h).await,
                    bad.sync_data(),
                );
            });
        }
    }
}

#[cfg(windows)]
#[test]
fn a_handle_without_the_needed_access_fails_as_std_does() {
    use std::os::windows::fs::FileExt;
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        std::fs::write(&s.path, b"content").unwrap();
        let ro = std::fs::File::open(&s.path).unwrap();
        let wo = std::fs::OpenOptions::new()
            .write(true)
            .open(&s.path)
            .unwrap();
        block_on(async {
            same_as_std(
                &format!("{i} write to read-only"),
                c.write("x", raw(&ro), 0).await,
                ro.seek_write(b"x", 0),
            );
            let mut b = [0u8; 4];
            same_as_std(
                &format!("{i} read of write-only"),
                c.read(4, raw(&wo), 0).await,
                wo.seek_read(&mut b, 0),
            );
        });
        assert_eq!(s.contents(), b"content", "{i}: nothing was written");
    }
}

#[cfg(windows)]
#[test]
fn positional_calls_leave_caio_files_cursor_alone() {
    // A Windows call at an offset moves the handle's own file pointer: caio's `File`
    // keeps its cursor apart, so cursor reads still start where they were.
    use futures::{AsyncReadExt, AsyncSeekExt};
    for i in backends() {
        let c = ctx(i);
        let s = Scratch::new();
        std::fs::write(&s.path, b"0123456789").unwrap();
        let mut f = util::open_rw(&c, &s.path, false);
        block_on(async {
            f.seek(io::SeekFrom::Start(2)).await.unwrap();
            assert_eq!(&f.read_at(3, 7).await.unwrap()[..], b"789", "{i}");
            let mut two = [0u8; 2];
            f.read_exact(&mut two).await.unwrap();
            assert_eq!(&two, b"23", "{i}");
        });
    }
}
