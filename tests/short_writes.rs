//! std's rule for a write that stops part-way: `Ok(bytes written)` once anything reached
//! the file, the error only when nothing did. Here for an unaligned O_DIRECT write, which
//! caio splits into a buffered head, a direct middle and a buffered tail: the file size
//! limit (`RLIMIT_FSIZE`) is set where the head ends, so the middle fails with EFBIG after
//! the head was written. Runs per backend in a child process (the limit is the process's).
#![cfg(target_os = "linux")]

mod util;

use std::time::Duration;

use caio::{fs::File, OpenOptions};
use util::{backends, block_on, pattern, run_test_child};

const CHILD: &str = "CAIO_SHORT_WRITES_CHILD";

#[test]
fn child_split_write_stopped_by_the_size_limit() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let path = std::path::Path::new(&dir).join("f");
    let f: File = block_on(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .direct(true)
            .open(&path),
    )
    .unwrap();
    assert!(f.is_direct());
    // SAFETY: plain libc calls on this process: ignore SIGXFSZ (the limit's signal) and
    // cap the file size at 4096 bytes.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 4096,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let data = pattern(20_000, 4);
    // Head 100..4096 (buffered) fits under the limit; the middle from 4096 on cannot.
    let n = block_on(f.write_at(data.clone(), 100)).expect("the head reached the file");
    assert_eq!(n, 3996);
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(on_disk.len(), 4096);
    assert_eq!(&on_disk[100..], &data[..3996]);
    // Vectored: the same answer.
    let bufs = vec![
        caio::Buffer::from(&data[..10_000]),
        caio::Buffer::from(&data[10_000..]),
    ];
    let (r, _) = block_on(f.write_vectored_at(bufs, 100));
    assert_eq!(r.expect("the vectored head reached the file"), 3996);
    // Where nothing can be written, the error.
    let e = block_on(f.write_at(data.clone(), 4096)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    // write_all_at writes what it can and then reports the error, as std's write_all.
    let e = block_on(f.write_all_at(data, 100)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}");
    println!("SHORT ok");
}

#[test]
fn an_unaligned_direct_write_that_stops_part_way_reports_what_it_wrote() {
    for i in backends() {
        let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let o = run_test_child(
            "child_split_write_stopped_by_the_size_limit",
            &[
                (CHILD, d.path().to_str().unwrap()),
                ("CAIO_IMPL", i.as_str()),
            ],
            Duration::from_secs(60),
        );
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("SHORT ok"),
            "{i}:\n{out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
