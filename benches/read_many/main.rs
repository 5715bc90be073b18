//! Many range reads of one large file (the tokio#8367 workload: a Parquet reader's 20k
//! page reads), as a tokio program makes them, four ways in one interleaved run:
//! `File::read_many` (one call, 32 reads in flight), `File::read_at` from 32 tasks, tokio
//! `spawn_blocking` + `pread` from 32 tasks, and a copy out of an `mmap` of the file.
//!
//! `cargo bench --bench read_many -- [--rounds N] [--dir DIR] [--cold | --direct]` (5
//! rounds by default): a 512 MiB file in DIR (default: the target directory), read from
//! the page cache (warmed first); with `--cold`, from the device, the page cache dropped
//! before each system's turn (root: `/proc/sys/vm/drop_caches`); with `--direct`, through
//! O_DIRECT (caio's rows only: the others have no such mode).
//! The ranges are 20,000 pages of 4 to 128 KiB: column chunks of 1 to 4 MiB cut into
//! consecutive pages, the chunks' order and the pages' order shuffled, as a reader that
//! fetches pages of several columns at once asks for them. Prints one line per system and
//! round, then the medians: MiB/s, CPU (user + system) per MiB, and the ratios.

#[cfg(unix)]
mod unix;

fn main() {
    #[cfg(unix)]
    unix::main();
    #[cfg(not(unix))]
    eprintln!("the read_many bench runs on Unix: its baselines are pread and mmap");
}
