//! fio-like workloads run through caio's public API: a fixed number of operations kept
//! in flight for a fixed time, on one thread (`futures::executor`), counting operations,
//! bytes and CPU time. Shared by `caio bench` and `benches/`.

// Each user takes a part (the benches write randomly and count CPU time, the CLI doesn't).
#![allow(dead_code)]

use std::{
    future::Future,
    io,
    pin::Pin,
    time::{Duration, Instant},
};

use caio::{Buffer, File};
use futures::{stream::FuturesUnordered, StreamExt};

/// What one workload does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Reads at random block-aligned offsets.
    RandRead,
    /// Writes at random block-aligned offsets.
    RandWrite,
    /// Reads block after block, wrapping at the end of the file.
    SeqRead,
    /// Writes block after block, wrapping at the end of the file.
    SeqWrite,
}

impl Pattern {
    fn is_write(self) -> bool {
        matches!(self, Pattern::RandWrite | Pattern::SeqWrite)
    }
}

/// A workload: pattern, block size, operations in flight, how long.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub pattern: Pattern,
    pub block: usize,
    pub depth: usize,
    pub duration: Duration,
}

/// What a workload achieved.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub ops: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// User + system CPU time of the whole process while it ran.
    pub cpu: Duration,
}

impl Outcome {
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64() / (1 << 20) as f64
    }

    pub fn cpu_per_op(&self) -> Duration {
        self.cpu / self.ops.max(1) as u32
    }
}

/// CPU time (user + system) this process has used.
pub fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A small fast generator (xorshift64*), seeded per run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Runs `w` on `file` (of `file_len` bytes), through the file's context.
///
/// # Errors
/// The first failed operation, or `InvalidInput` for a file smaller than one block.
pub fn run(file: &File, file_len: u64, w: &Workload) -> io::Result<Outcome> {
    let blocks = file_len / w.block as u64;
    if blocks == 0 || w.depth == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the file ({file_len} bytes) must hold at least one {}-byte block",
                w.block
            ),
        ));
    }
    let mut rng = Rng::new(0x5eed ^ w.depth as u64);
    let mut next_seq = 0u64;
    let mut next_offset = move || -> u64 {
        let block = match w.pattern {
            Pattern::RandRead | Pattern::RandWrite => rng.next() % blocks,
            Pattern::SeqRead | Pattern::SeqWrite => {
                let b = next_seq % blocks;
                next_seq += 1;
                b
            }
        };
        block * w.block as u64
    };
    let payload = Buffer::from(&vec![0xA5u8; w.block][..]);
    type Op = Pin<Box<dyn Future<Output = io::Result<usize>> + Send>>;
    let submit = |off: u64| -> Op {
        if w.pattern.is_write() {
            Box::pin(file.write_at(payload.clone(), off))
        } else {
            Box::pin(futures::FutureExt::map(file.read_at(w.block, off), |r| {
                r.map(|b| b.len())
            }))
        }
    };
    let cpu0 = process_cpu();
    let start = Instant::now();
    let deadline = start + w.duration;
    let (mut ops, mut bytes) = (0u64, 0u64);
    futures::executor::block_on(async {
        let mut inflight = FuturesUnordered::new();
        for _ in 0..w.depth {
            inflight.push(submit(next_offset()));
        }
        while let Some(r) = inflight.next().await {
            bytes += r? as u64;
            ops += 1;
            if Instant::now() < deadline {
                inflight.push(submit(next_offset()));
            }
        }
        io::Result::Ok(())
    })?;
    Ok(Outcome {
        ops,
        bytes,
        elapsed: start.elapsed(),
        cpu: process_cpu() - cpu0,
    })
}
