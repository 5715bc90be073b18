//! Every raw system call the crate makes, each one a small typed function.
//!
//! Nothing else in the crate calls the OS on descriptors or on memory the kernel writes
//! into. Unix goes through `libc` (`unix.rs`, and Linux's kernel AIO, eventfd and statx in
//! `linux.rs`); Windows through std and a few `kernel32` functions (`windows.rs`), under
//! the same names, so the layers above are written once.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use self::unix::*;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use self::windows::*;

#[cfg(target_os = "linux")]
pub(crate) use self::{aio_abi::*, linux::*};

/// The kernel AIO ABI of `<linux/aio_abi.h>`, declared once: the linux backend uses it, and
/// the benchmarks' minimal loop (through `caio::tools`).
#[cfg(target_os = "linux")]
#[allow(missing_docs)] // the kernel's names, which its header documents
pub mod aio_abi;
/// Linux kernel AIO (`linux/aio_abi.h`), eventfd and statx.
#[cfg(target_os = "linux")]
mod linux;
