//! caio beside fio (the machine's limit) and beside what users pick instead (tokio
//! `spawn_blocking` + `pread`, a plain `pread` loop, `std::fs::copy`, `cp`), on the same
//! 1 GiB file, in the same run.
//!
//! `cargo bench --bench vs_fio` (options after `--`: `--secs N` per point, default 3;
//! `--file PATH`; `--out DIR`, default `benches/results`; `--only SUITE`). Writes
//! `results.md`, `results.csv` and `iops_vs_qd.png` to the output directory. Needs `fio`
//! on PATH for fio's figures (they are left out otherwise).
//!
//! `--fast` measures on a fast device instead (a loop device with direct I/O over tmpfs;
//! needs root and `losetup`, and says why it skips otherwise): see `vs_fio/fast.rs`. It
//! writes to `OUT/fast/`; `--rounds N` repeats the interleaved sweep and reports medians.
//! `--replot` only draws `OUT/fast/iops_vs_qd.png` again from that sweep's `results.csv`.

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[path = "vs_fio/linux.rs"]
mod linux;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn main() {
    linux::main()
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn main() {
    eprintln!("vs_fio compares caio with fio on Linux's kernel interfaces: 64-bit Linux only");
}
