//! One errno everywhere: an operation the kernel refuses fails with the same error on
//! every backend, the one std's positional calls (`FileExt::read_at`/`write_at`) give.
#![cfg(target_os = "linux")]

mod util;

use std::{
    fs,
    os::unix::{fs::FileExt, io::AsRawFd},
};

use caio::Buffer;
use util::{backends, block_on, dir};

#[test]
fn a_refused_read_or_write_fails_with_std_s_errno_on_every_backend() {
    let d = dir();
    let regular = d.path().join("f");
    fs::write(&regular, b"some bytes").unwrap();
    let read_only = fs::File::open(&regular).unwrap();
    let write_only = fs::OpenOptions::new().write(true).open(&regular).unwrap();
    // A /proc file takes no positional write: pwrite says ESPIPE before it checks access.
    let proc_file = fs::File::open("/proc/self/stat").unwrap();
    let cases: [(&str, &fs::File, bool); 3] = [
        ("write on a read-only /proc file", &proc_file, true),
        ("write on a read-only file", &read_only, true),
        ("read on a write-only file", &write_only, false),
    ];
    for (what, file, write) in cases {
        let want = if write {
            file.write_at(b"x", 0)
        } else {
            file.read_at(&mut [0; 4], 0)
        }
        .unwrap_err()
        .raw_os_error();
        for i in backends() {
            let ctx = util::ctx(i);
            let fd = file.as_raw_fd();
            let got = if write {
                block_on(ctx.write(&b"x"[..], fd, 0)).unwrap_err()
            } else {
                block_on(ctx.read(4, fd, 0)).unwrap_err()
            };
            assert_eq!(got.raw_os_error(), want, "{i}: {what}: {got}");
            // The owned and vectored forms say the same.
            let got = if write {
                let mut b = Buffer::with_capacity(1);
                b.extend_from_slice(b"x");
                block_on(ctx.write_vectored_at(vec![b], fd, 0))
                    .0
                    .unwrap_err()
            } else {
                block_on(ctx.read_at_into(Buffer::with_capacity(4), fd, 0))
                    .0
                    .unwrap_err()
            };
            assert_eq!(got.raw_os_error(), want, "{i}: {what} (owned): {got}");
        }
    }
}
