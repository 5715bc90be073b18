//! fio-like workloads run through caio's public API: a fixed number of operations kept
//! in flight for a fixed time, on one thread (`futures::executor`), counting operations,
//! bytes and CPU time. Shared by `caio bench` and `benches/`.

use std::{
    cell::Cell,
    future::Future,
    io,
    time::{Duration, Instant},
};

use crate::{Buffer, Context, File};
use futures::{future::Either, stream::FuturesUnordered, StreamExt};

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
    /// Run the lanes under [`Context::block_on`], the thread waiting for completions
    /// itself, instead of `futures::executor::block_on`.
    pub block_on: bool,
}

/// What a workload achieved.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub ops: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// User + system CPU time of the whole process while it ran.
    pub cpu: Duration,
    /// Of which user time.
    pub user: Duration,
    /// Of which system time.
    pub sys: Duration,
}

impl Outcome {
    /// `ops` operations moving `bytes`, from `start` to now, with the process's CPU time
    /// since `cpu0` (what [`process_cpu_split`] said at `start`).
    pub fn since(ops: u64, bytes: u64, start: Instant, cpu0: (Duration, Duration)) -> Outcome {
        let (user, sys) = process_cpu_split();
        Outcome {
            ops,
            bytes,
            elapsed: start.elapsed(),
            cpu: (user - cpu0.0) + (sys - cpu0.1),
            user: user - cpu0.0,
            sys: sys - cpu0.1,
        }
    }

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

/// CPU time (user + system) this process has used, every thread included.
pub fn process_cpu() -> Duration {
    let (user, sys) = process_cpu_split();
    user + sys
}

/// User and system CPU time this process has used, every thread included (getrusage;
/// GetProcessTimes on Windows).
pub fn process_cpu_split() -> (Duration, Duration) {
    crate::sys::process_cpu()
}

/// A small fast generator (xorshift64*), seeded per run.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
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
    lanes(&file.context(), file_len, w, |buf, off| {
        if w.pattern.is_write() {
            Either::Left(file.write_at_from(buf, off))
        } else {
            Either::Right(file.read_at_into(buf, off))
        }
    })
}

/// Runs `w` through the raw `Context` API on a descriptor (of `file_len` bytes).
///
/// # Errors
/// As [`run`].
pub fn run_raw(
    ctx: &Context,
    fd: crate::RawFd,
    file_len: u64,
    w: &Workload,
) -> io::Result<Outcome> {
    lanes(ctx, file_len, w, |buf, off| {
        if w.pattern.is_write() {
            ctx.write_at_from(buf, fd, off)
        } else {
            ctx.read_at_into(buf, fd, off)
        }
    })
}

/// `w.depth` lanes on one thread (`futures::executor`), each doing one operation after
/// another into its own reused buffer, as fio's jobs do: what a run measures is caio's
/// cost, not a buffer allocation or a boxed future per operation.
fn lanes<F, Fut>(ctx: &Context, file_len: u64, w: &Workload, op: F) -> io::Result<Outcome>
where
    F: Fn(Buffer, u64) -> Fut,
    Fut: Future<Output = (io::Result<usize>, Buffer)>,
{
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
    let rng = Cell::new(Rng::new(0x5eed ^ w.depth as u64).0);
    let next_seq = Cell::new(0u64);
    let next_offset = || -> u64 {
        let block = match w.pattern {
            Pattern::RandRead | Pattern::RandWrite => {
                let mut r = Rng(rng.get());
                let b = r.next_u64() % blocks;
                rng.set(r.0);
                b
            }
            Pattern::SeqRead | Pattern::SeqWrite => {
                let b = next_seq.get() % blocks;
                next_seq.set(next_seq.get() + 1);
                b
            }
        };
        block * w.block as u64
    };
    let (ops, bytes) = (Cell::new(0u64), Cell::new(0u64));
    let cpu0 = process_cpu_split();
    let start = Instant::now();
    let deadline = start + w.duration;
    let lane = |_| async {
        let mut buf = if w.pattern.is_write() {
            Buffer::from(&vec![0xA5u8; w.block][..])
        } else {
            Buffer::with_capacity(w.block)
        };
        while Instant::now() < deadline {
            let (r, back) = op(buf, next_offset()).await;
            buf = back;
            bytes.set(bytes.get() + r? as u64);
            ops.set(ops.get() + 1);
        }
        io::Result::Ok(())
    };
    let all = async {
        let mut lanes: FuturesUnordered<_> = (0..w.depth).map(lane).collect();
        while let Some(r) = lanes.next().await {
            r?;
        }
        io::Result::Ok(())
    };
    if w.block_on {
        ctx.block_on(all)?;
    } else {
        futures::executor::block_on(all)?;
    }
    Ok(Outcome::since(ops.get(), bytes.get(), start, cpu0))
}
