//! Not part of caio's API: code that the `caio` command and the benchmarks share, so that
//! `caio bench` and `cargo bench` measure the same workloads on the same devices. Hidden,
//! behind the `cli` feature, and free to change in any release.

#[cfg(target_os = "linux")]
pub mod fastdev;
pub mod workload;

/// The kernel AIO ABI, for the benchmarks' minimal `io_submit` loop.
#[cfg(target_os = "linux")]
pub use crate::sys::aio_abi;
