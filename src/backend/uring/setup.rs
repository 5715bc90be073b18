//! Whether this process can make a ring, and why not in words a user can act on.

use super::*;
use crate::backend::setup_error;

/// Why `io_uring_setup` fails, in words a user can act on.
pub(super) fn describe_setup_error(e: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    match e.raw_os_error() {
        Some(libc::EPERM) if disabled == "2" => format!(
            "io_uring_setup: {e}: kernel.io_uring_disabled is 2 (io_uring is off for every process)"
        ),
        Some(libc::EPERM) if disabled == "1" => format!(
            "io_uring_setup: {e}: kernel.io_uring_disabled is 1 and this process is not in \
             kernel.io_uring_group"
        ),
        Some(libc::ENOMEM) => format!(
            "io_uring_setup: {e}: no memory for the rings (RLIMIT_MEMLOCK or the cgroup's limit)"
        ),
        _ => setup_error("io_uring_setup", e, "io_uring"),
    }
}

/// Whether this process can make a ring now, or why not.
pub(crate) fn probe() -> Result<(), String> {
    IoUring::new(4)
        .map(drop)
        .map_err(|e| describe_setup_error(&e))
}
