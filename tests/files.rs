//! The file layer (the contract's "Files", `../shared/API.md`) on every available
//! implementation.

mod util;

use std::{io, path::Path};

use caio::{fs, Context, File, OpenOptions};
use futures::{
    AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, StreamExt, TryStreamExt,
};
use util::{backends, block_on, ctx, pattern};

/// The errno of an OS error, or of the OS error a caio error explains (its `source()`).
fn os_errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        std::error::Error::source(e.get_ref()?)?
            .downcast_ref::<io::Error>()?
            .raw_os_error()
    })
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn opts(c: &Context) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.context(c.clone());
    o
}

fn rw(c: &Context, path: &Path) -> File {
    block_on(opts(c).read(true).write(true).create(true).open(path)).unwrap()
}

#[test]
fn positional_io_len_set_len_and_syncs() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let f = rw(&c, &d.path().join("f"));
        assert_eq!(f.context().implementation(), i);
        block_on(async {
            assert_eq!(f.write_at("hello world", 0).await.unwrap(), 11);
            f.write_all_at(pattern(3 << 20, 1), 11).await.unwrap();
            assert_eq!(f.len().await.unwrap(), 11 + (3 << 20));
            assert_eq!(&f.read_at(5, 6).await.unwrap()[..], b"world");
            f.sync_all().await.unwrap();
            f.sync_data().await.unwrap();
            f.set_len(5).await.unwrap();
            assert_eq!(f.len().await.unwrap(), 5);
            assert_eq!(f.read_to_vec().await.unwrap(), b"hello");
            assert!(f.read_at(10, 5).await.unwrap().is_empty(), "{i}: past EOF");
        });
    }
}

#[test]
fn open_errors_are_the_os_errors() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        block_on(async {
            let e = opts(&c)
                .read(true)
                .open(d.path().join("missing"))
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{i}");
            // A directory: EISDIR on Unix (where std would open it); on Windows what std
            // says, ERROR_ACCESS_DENIED.
            let e = opts(&c).read(true).open(d.path()).await.unwrap_err();
            #[cfg(unix)]
            assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{i}: a directory");
            #[cfg(windows)]
            {
                let std = std::fs::File::open(d.path()).unwrap_err();
                assert_eq!(e.raw_os_error(), std.raw_os_error(), "{i}: a directory");
                assert_eq!(e.kind(), std.kind(), "{i}: a directory");
            }
            let p = d.path().join("exists");
            std::fs::write(&p, b"x").unwrap();
            let e = opts(&c)
                .write(true)
                .create_new(true)
                .open(&p)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{i}");
            let ro = opts(&c).read(true).open(&p).await.unwrap();
            let e = ro.write_at("y", 0).await.unwrap_err();
            assert_eq!(os_errno(&e), Some(util::code::WRONG_ACCESS), "{i}");
            assert!(e.to_string().contains("not opened for writing"), "{i}: {e}");
            let e = opts(&c).open(&p).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{i}: no access mode");
        });
        assert_eq!(
            std::fs::read(d.path().join("exists")).unwrap(),
            b"x",
            "{i}: nothing was lost"
        );
    }
}

#[test]
fn the_descriptor_stays_open_while_operations_run() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("f");
        std::fs::write(&p, pattern(1 << 20, 2)).unwrap();
        let f = block_on(opts(&c).read(true).open(&p)).unwrap();
        let reads: Vec<_> = (0..16u64).map(|k| f.read_at(65536, k * 65536)).collect();
        drop(f);
        // Other files opened now must not take the old descriptor's number while it is in use.
        let _others: Vec<_> = (0..8).map(|_| std::fs::File::open(&p).unwrap()).collect();
        let data = pattern(1 << 20, 2);
        block_on(async {
            for (k, r) in reads.into_iter().enumerate() {
                assert_eq!(
                    &r.await.unwrap()[..],
                    &data[k * 65536..(k + 1) * 65536],
                    "{i}"
                );
            }
        });
    }
}

#[test]
fn o_direct_files_take_any_offset_and_length() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("direct");
        let f = match block_on(
            opts(&c)
                .read(true)
                .write(true)
                .create(true)
                .direct(true)
                .open(&p),
        ) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("SKIP {i}: O_DIRECT refused here: {e}");
                return;
            }
        };
        assert!(f.is_direct());
        let a = f.direct_alignment().unwrap();
        assert!(a.offset.is_power_of_two() && a.offset <= 4096, "{a:?}");
        let mut model = vec![0u8; 0];
        fn put(model: &mut Vec<u8>, off: usize, data: &[u8]) {
            if model.len() < off + data.len() {
                model.resize(off + data.len(), 0);
            }
            model[off..off + data.len()].copy_from_slice(data);
        }
        block_on(async {
            // Aligned, unaligned head, unaligned tail, both, tiny, across pages.
            for (k, (off, len)) in [
                (0, 8192),
                (100, 5000),
                (4096, 4097),
                (12345, 20000),
                (7, 3),
                (65536 - 10, 20),
            ]
            .into_iter()
            .enumerate()
            {
                let data = pattern(len, k as u64 + 10);
                f.write_all_at(data.clone(), off as u64).await.unwrap();
                put(&mut model, off, &data);
            }
            assert_eq!(f.len().await.unwrap() as usize, model.len(), "{i}");
            for (off, len) in [
                (0, model.len()),
                (1, 100),
                (4095, 2),
                (12345, 20000),
                (model.len() - 5, 100),
            ] {
                let got = f.read_at(len, off as u64).await.unwrap();
                let want = &model[off..(off + len).min(model.len())];
                assert!(got[..] == *want, "{i}: read {len} at {off}");
            }
            f.sync_all().await.unwrap();
        });
        assert_eq!(
            std::fs::read(&p).unwrap(),
            model,
            "{i}: what a buffered reader sees"
        );
    }
}

#[test]
fn o_direct_refused_by_the_filesystem_is_a_clear_error() {
    // ramfs has no direct I/O at all; mounting it needs root (CI is root).
    let d = dir();
    let Some(mut ram) = util::Mount::new("ramfs", None, d.path().join("ramfs")) else {
        return;
    };
    let mnt = ram.path.clone();
    let r = block_on(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .direct(true)
            .open(mnt.join("x")),
    );
    // Closed, not dropped: close().await is how to know the descriptor is gone (a drop
    // closes it on the backend, later), so the mount is not busy.
    let fallback = block_on(async {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .open(mnt.join("x"))
            .await?
            .close()
            .await
    });
    assert!(ram.unmount(), "the test mount must go");
    let e = r.expect_err("ramfs cannot do O_DIRECT");
    let msg = e.to_string();
    assert!(
        msg.contains("O_DIRECT is not supported") && msg.contains("without direct(true)"),
        "{msg}"
    );
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert!(fallback.is_ok(), "opening without O_DIRECT is the fallback");
}

#[test]
fn sequential_readers_and_writers_keep_several_operations_in_flight() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("big");
        std::fs::write(&p, pattern(8 << 20, 9)).unwrap();
        let f = block_on(opts(&c).read(true).write(true).open(&p)).unwrap();
        let mut r = f.reader();
        block_on(r.fill_buf()).unwrap();
        assert_eq!(
            r.in_flight(),
            caio::fs::READ_AHEAD - 1,
            "{i}: read-ahead after the first chunk"
        );

        // Write-behind on fast storage: the data lands. (That several writes are in flight
        // at once is shown on slow storage, where it does not depend on timing:
        // tests/fuse.rs, slow_storage_keeps_several_writes_behind.)
        let mut w = f.writer();
        let chunk = vec![7u8; caio::fs::WRITE_CHUNK];
        for _ in 0..4 {
            block_on(w.write_all(&chunk)).unwrap();
        }
        block_on(w.close()).unwrap();
        assert!(std::fs::read(&p).unwrap()[..4 * caio::fs::WRITE_CHUNK]
            .iter()
            .all(|&b| b == 7));
    }
}

#[test]
fn reader_reads_seeks_and_buffers() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("r");
        let data = pattern((1 << 20) * 3 + 777, 3);
        std::fs::write(&p, &data).unwrap();
        let f = block_on(opts(&c).read(true).open(&p)).unwrap();
        block_on(async {
            let mut all = Vec::new();
            f.reader().read_to_end(&mut all).await.unwrap();
            assert!(all == data, "{i}: whole read");

            let mut r = f.reader();
            let mut four = [0u8; 4];
            r.read_exact(&mut four).await.unwrap();
            assert_eq!(four, data[..4]);
            assert_eq!(
                r.seek(io::SeekFrom::Current(2)).await.unwrap(),
                6,
                "{i}: inside the buffer"
            );
            r.read_exact(&mut four).await.unwrap();
            assert_eq!(four, data[6..10]);
            assert_eq!(
                r.seek(io::SeekFrom::End(-100)).await.unwrap(),
                data.len() as u64 - 100
            );
            let mut tail = Vec::new();
            r.read_to_end(&mut tail).await.unwrap();
            assert_eq!(tail, data[data.len() - 100..], "{i}");
            r.seek(io::SeekFrom::Start(2_000_000)).await.unwrap();
            let buffered = r.fill_buf().await.unwrap().to_vec();
            assert!(
                !buffered.is_empty() && buffered[..] == data[2_000_000..2_000_000 + buffered.len()]
            );
            // Before the start: the error std's seek gives (EINVAL; on Windows
            // ERROR_NEGATIVE_SEEK).
            let e = r.seek(io::SeekFrom::Current(-3_000_000)).await.unwrap_err();
            let std = io::Seek::seek(
                &mut std::fs::File::open(&p).unwrap(),
                io::SeekFrom::Current(-1),
            )
            .unwrap_err();
            assert_eq!(
                (e.kind(), e.raw_os_error()),
                (std.kind(), std.raw_os_error()),
                "{i}: before the start"
            );
            assert_eq!(
                r.seek(io::SeekFrom::Start(data.len() as u64 + 50))
                    .await
                    .unwrap(),
                data.len() as u64 + 50
            );
            assert_eq!(r.read(&mut four).await.unwrap(), 0, "{i}: past the end");
        });
    }
}

#[test]
fn writer_writes_behind_and_close_reports_everything() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("w");
        let data = pattern((1 << 20) * 3 + 12345, 4);
        block_on(async {
            let f = opts(&c).write(true).create(true).open(&p).await.unwrap();
            let mut w = f.writer();
            for piece in data.chunks(10_007) {
                w.write_all(piece).await.unwrap();
            }
            assert_eq!(w.position(), data.len() as u64);
            w.close().await.unwrap();
        });
        assert!(std::fs::read(&p).unwrap() == data, "{i}: written content");

        block_on(async {
            // Seek back and overwrite a range.
            let f = opts(&c).write(true).open(&p).await.unwrap();
            let mut w = f.writer();
            w.seek(io::SeekFrom::Start(10)).await.unwrap();
            w.write_all(b"OVERWRITE").await.unwrap();
            w.close().await.unwrap();
        });
        let mut want = data.clone();
        want[10..19].copy_from_slice(b"OVERWRITE");
        assert!(std::fs::read(&p).unwrap() == want, "{i}: overwrite");

        block_on(async {
            // A writer on a read-only file: the error reaches the caller.
            let f = opts(&c).read(true).open(&p).await.unwrap();
            let mut w = f.writer();
            let r = async {
                w.write_all(&[1u8; 1 << 20]).await?;
                w.close().await
            }
            .await;
            let e = r.unwrap_err();
            assert_eq!(os_errno(&e), Some(util::code::WRONG_ACCESS), "{i}: {e}");
        });
        assert!(std::fs::read(&p).unwrap() == want, "{i}: nothing changed");
    }
}

#[test]
fn append_mode_appends_in_order() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("log");
        std::fs::write(&p, b"start\n").unwrap();
        block_on(async {
            let f = opts(&c).append(true).open(&p).await.unwrap();
            let mut w = f.writer();
            for k in 0..2000 {
                w.write_all(format!("line {k}\n").as_bytes()).await.unwrap();
            }
            w.close().await.unwrap();
            f.write_all_at("end\n", 0).await.unwrap(); // offset ignored: appended
        });
        let text = std::fs::read_to_string(&p).unwrap();
        let mut want = String::from("start\n");
        for k in 0..2000 {
            want.push_str(&format!("line {k}\n"));
        }
        want.push_str("end\n");
        assert!(text == want, "{i}: appended content differs");
    }
}

#[test]
fn lines_handle_crlf_utf8_long_lines_and_invalid_data() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("text");
        let long: String = "ü€".repeat(200_000); // 1 MiB of multi-byte characters in one line
        let text = format!("one\r\ntwo\n\nłódź 🚀\n{long}\nlast without newline");
        std::fs::write(&p, &text).unwrap();
        let f = block_on(opts(&c).read(true).open(&p)).unwrap();
        let lines: Vec<String> = block_on(f.lines().try_collect()).unwrap();
        assert_eq!(lines.len(), 6, "{i}");
        assert_eq!(&lines[..4], ["one", "two", "", "łódź 🚀"], "{i}");
        assert!(lines[4] == long, "{i}: the long line");
        assert_eq!(lines[5], "last without newline");

        std::fs::write(&p, b"good\nbad \xff\xfe here\nafter\n").unwrap();
        let f = block_on(opts(&c).read(true).open(&p)).unwrap();
        let got: Vec<io::Result<String>> = block_on(f.lines().collect());
        assert_eq!(got[0].as_ref().unwrap(), "good");
        assert_eq!(
            got[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::InvalidData,
            "{i}"
        );
    }
}

#[test]
fn chunks_cover_the_file() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("c");
        let data = pattern(1_000_003, 5);
        std::fs::write(&p, &data).unwrap();
        let f = block_on(opts(&c).read(true).open(&p)).unwrap();
        let chunks: Vec<caio::Buffer> = block_on(f.chunks(65536).try_collect()).unwrap();
        assert_eq!(chunks.len(), 16, "{i}");
        assert!(chunks[..15].iter().all(|c| c.len() == 65536));
        assert_eq!(chunks[15].len(), 1_000_003 - 15 * 65536);
        assert!(
            chunks
                .iter()
                .flat_map(|c| c.iter().copied())
                .collect::<Vec<u8>>()
                == data,
            "{i}"
        );
        let first = block_on(f.chunks(0).next()).unwrap();
        assert_eq!(first.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let empty = block_on(
            opts(&c)
                .write(true)
                .create(true)
                .read(true)
                .open(d.path().join("e")),
        )
        .unwrap();
        assert!(
            block_on(empty.chunks(10).next()).is_none(),
            "{i}: an empty file has no chunks"
        );
    }
}

#[test]
fn fs_read_write_copy() {
    let d = dir();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let data = pattern((1 << 20) * 5 + 3, 6);
    block_on(async {
        fs::write(&a, data.clone()).await.unwrap();
        assert!(fs::read(&a).await.unwrap() == data);
        #[cfg(unix)]
        std::fs::set_permissions(&a, {
            use std::os::unix::fs::PermissionsExt;
            std::fs::Permissions::from_mode(0o640)
        })
        .unwrap();
        assert_eq!(fs::copy(&a, &b).await.unwrap(), data.len() as u64);
    });
    assert!(std::fs::read(&b).unwrap() == data);
    // As std: the permissions follow the source (on Windows, the read-only attribute:
    // checked in tests/copy.rs).
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&b).unwrap().permissions())
            & 0o777,
        0o640
    );
    block_on(async {
        let e = fs::copy(&a, &a).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        // As std::fs::copy: a directory is not a regular file (on Windows, std's error
        // is CopyFileExW's, access denied).
        let e = fs::copy(d.path(), &b).await.unwrap_err();
        #[cfg(unix)]
        {
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("neither a regular file"), "{e}");
        }
        #[cfg(windows)]
        assert_eq!(
            e.kind(),
            std::fs::copy(d.path(), &b).unwrap_err().kind(),
            "{e}"
        );
        // Onto a directory: as std's open for writing (EISDIR); on Windows as
        // CopyFileExW, access denied.
        let e = fs::copy(&a, d.path()).await.unwrap_err();
        #[cfg(unix)]
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory);
        #[cfg(windows)]
        assert_eq!(
            e.raw_os_error(),
            std::fs::copy(&a, d.path()).unwrap_err().raw_os_error()
        );
        let e = fs::copy(d.path().join("none"), &b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(fs::copy(&a, d.path().join("no/such/dir/x")).await.is_err());
        // An empty file copies to an empty file.
        fs::write(d.path().join("empty"), "").await.unwrap();
        assert_eq!(
            fs::copy(d.path().join("empty"), d.path().join("empty2"))
                .await
                .unwrap(),
            0
        );
    });
    assert!(
        std::fs::read(&a).unwrap() == data,
        "the source survives a copy onto itself"
    );
    assert!(
        std::fs::read(&b).unwrap() == data,
        "failed copies left the destination alone"
    );
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("caio-copy"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[cfg(unix)]
const CHILD: &str = "CAIO_FILES_TEST_CHILD";

/// In a child: a file size limit makes the copy fail half way (EFBIG).
#[cfg(unix)]
#[test]
fn child_copy_past_file_size_limit() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let dir = Path::new(&dir);
    // SAFETY: ignoring SIGXFSZ so that writes past the limit fail with EFBIG instead.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let lim = libc::rlimit {
        rlim_cur: 3 << 20,
        rlim_max: 3 << 20,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &lim) }, 0);
    let atomic = fs::CopyOptions::new().atomic(true);
    let e = block_on(fs::copy_with(dir.join("big"), dir.join("dst"), atomic)).unwrap_err();
    println!("ATOMIC COPY ERROR errno={:?} {e}", e.raw_os_error());
    let e = block_on(fs::copy(dir.join("big"), dir.join("in-place"))).unwrap_err();
    println!("IN-PLACE COPY ERROR errno={:?} {e}", e.raw_os_error());
    // Looked at the moment the copy returned: no write of it is still under way.
    let len = std::fs::metadata(dir.join("in-place")).unwrap().len();
    println!("IN-PLACE LENGTH AT THE ERROR {len}");
}

#[cfg(unix)]
#[test]
fn a_failed_atomic_copy_keeps_the_old_destination_and_leaves_no_temporary_file() {
    let d = dir();
    std::fs::write(d.path().join("big"), pattern(8 << 20, 7)).unwrap();
    std::fs::write(d.path().join("dst"), b"the old destination").unwrap();
    std::fs::write(d.path().join("in-place"), b"written over").unwrap();
    let mut cmd = util::test_command("child_copy_past_file_size_limit", &[]);
    cmd.env(CHILD, d.path());
    let out = util::output_within(cmd, std::time::Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for which in ["ATOMIC", "IN-PLACE"] {
        assert!(
            stdout.contains(&format!("{which} COPY ERROR errno=Some({})", libc::EFBIG)),
            "{stdout}"
        );
    }
    assert_eq!(
        std::fs::read(d.path().join("dst")).unwrap(),
        b"the old destination"
    );
    // In place, as std::fs::copy and cp: what fit under the limit is there, and was by
    // the time the copy returned its error.
    assert!(
        stdout.contains(&format!("IN-PLACE LENGTH AT THE ERROR {}", 3 << 20)),
        "{stdout}"
    );
    let partial = std::fs::read(d.path().join("in-place")).unwrap();
    assert_eq!(partial.len(), 3 << 20);
    assert_eq!(partial, pattern(8 << 20, 7)[..3 << 20]);
    let mut names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["big", "dst", "in-place"],
        "no temporary file remains"
    );
}

#[test]
fn works_with_tokio_through_compat_and_with_futures_io_copy() {
    use tokio_util::compat::{FuturesAsyncReadCompatExt, FuturesAsyncWriteCompatExt};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let (a, b, e) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        let data = pattern(2_500_000, 8);
        std::fs::write(&a, &data).unwrap();
        rt.block_on(async {
            let src = opts(&c).read(true).open(&a).await.unwrap();
            let dst = opts(&c).write(true).create(true).open(&b).await.unwrap();
            let (mut r, mut w) = (src.reader().compat(), dst.writer().compat_write());
            let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
            tokio::io::AsyncWriteExt::shutdown(&mut w).await.unwrap();
            assert_eq!(n, data.len() as u64, "{i}");
            let mut back = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(
                &mut opts(&c)
                    .read(true)
                    .open(&b)
                    .await
                    .unwrap()
                    .reader()
                    .compat(),
                &mut back,
            )
            .await
            .unwrap();
            assert!(back == data, "{i}: tokio round trip");
        });
        block_on(async {
            let src = opts(&c).read(true).open(&a).await.unwrap();
            let dst = opts(&c).write(true).create(true).open(&e).await.unwrap();
            let mut w = dst.writer();
            assert_eq!(
                futures::io::copy(src.reader(), &mut w).await.unwrap(),
                data.len() as u64
            );
            w.close().await.unwrap();
        });
        assert!(std::fs::read(&e).unwrap() == data, "{i}: futures::io::copy");
    }
}

#[test]
fn from_std_learns_the_access_and_append_mode_of_the_handle() {
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        let ro = File::from_std_on(c.clone(), std::fs::File::open(&p).unwrap());
        let wo = File::from_std_on(
            c.clone(),
            std::fs::OpenOptions::new().write(true).open(&p).unwrap(),
        );
        let app = File::from_std_on(
            c.clone(),
            std::fs::OpenOptions::new().append(true).open(&p).unwrap(),
        );
        block_on(async {
            assert_eq!(&ro.read_at(4, 2).await.unwrap()[..], b"2345", "{i}");
            let e = ro.write_at("x", 0).await.unwrap_err();
            assert_eq!(os_errno(&e), Some(util::code::WRONG_ACCESS), "{i}: {e}");
            assert!(e.to_string().contains("not opened for writing"), "{i}: {e}");
            let e = wo.read_at(4, 0).await.unwrap_err();
            assert_eq!(os_errno(&e), Some(util::code::WRONG_ACCESS), "{i}: {e}");
            wo.write_all_at("AB", 0).await.unwrap();
            // Append mode: at the end, whatever the offset.
            app.write_all_at("!", 0).await.unwrap();
        });
        assert_eq!(std::fs::read(&p).unwrap(), b"AB23456789!", "{i}");
    }
}

/// A handle opened for overlapped I/O (`FILE_FLAG_OVERLAPPED`) returns before a call is
/// done: each is waited for on its own, with many in flight on the one handle. (Under
/// wine every such call reports "pending", so this takes the waiting path each time.)
#[cfg(windows)]
#[test]
fn a_handle_opened_for_overlapped_io_is_waited_for() {
    const FILE_FLAG_OVERLAPPED: u32 = 0x4000_0000;
    for i in backends() {
        let (c, d) = (ctx(i), dir());
        let p = d.path().join("f");
        let f = block_on(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .custom_flags(FILE_FLAG_OVERLAPPED)
                .context(c.clone())
                .open(&p),
        )
        .unwrap();
        block_on(async {
            let writes = (0..64u64).map(|k| f.write_all_at(pattern(4096, k), k * 4096));
            futures::future::try_join_all(writes).await.unwrap();
            let reads = (0..64u64).map(|k| f.read_at(4096, k * 4096));
            let got = futures::future::try_join_all(reads).await.unwrap();
            for (k, b) in got.iter().enumerate() {
                assert!(b[..] == pattern(4096, k as u64)[..], "{i}: block {k}");
            }
        });
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 64 * 4096, "{i}");
    }
}
