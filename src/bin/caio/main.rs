//! `caio`: see which implementation runs and what this machine supports, copy files
//! asynchronously, and measure every backend on your own disk.

/// `println!` that, when stdout is a closed pipe (`caio info | head -1`), ends the command
/// quietly as Unix tools do, removing its temporary files first.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            crate::signals::stdout_failed(e);
        }
    }};
}

/// `print!`, the same way.
macro_rules! out_part {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            crate::signals::stdout_failed(e);
        }
    }};
}

mod bench;
mod copy;
mod info;
mod signals;

use std::{
    fs,
    io::{self, IsTerminal},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

#[cfg(target_os = "linux")]
use caio::tools::fastdev;
use caio::tools::workload;
use caio::{fs::CopyOptions, Context, Implementation, OpenOptions, Source};
use clap::{Parser, Subcommand};
use workload::{Outcome, Pattern, Workload};

#[derive(Parser, Debug)]
#[command(
    name = "caio",
    version,
    about = "Asynchronous file I/O that is really asynchronous: inspect, copy, measure"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The selected implementation, where the choice came from, and what this machine
    /// supports (kernel AIO; O_DIRECT on PATH with its alignment).
    Info {
        /// A file or directory to check O_DIRECT on.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Copy SRC to DST with reads and writes in flight together.
    Copy {
        /// The file to copy: a regular file, or a pipe, FIFO or device read to its end.
        src: PathBuf,
        /// Where to copy it: written in place (created if missing, through a symlink, into
        /// a device or FIFO as it is), or replaced whole with --atomic.
        dst: PathBuf,
        /// Bypass the page cache (O_DIRECT); falls back, with a note, where refused.
        #[arg(long)]
        direct: bool,
        /// Replace DST atomically: write a new file beside it, flush it, and rename it over
        /// DST, so DST is the old file or the whole copy even after a crash or Ctrl-C. DST
        /// must be a regular file or not exist. Without it, DST is written in place, as cp
        /// does.
        #[arg(long)]
        atomic: bool,
        /// The implementation to copy with (default: the selected one).
        #[arg(long = "implementation", short = 'i', long_help = implementation_help())]
        implementation: Option<String>,
    },
    /// A short fio-like measurement of every available implementation.
    Bench {
        /// A directory to create a test file in, or an existing file to read.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Size of the test file created in a directory (K, M, G suffixes).
        #[arg(long, default_value = "256M")]
        size: String,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
        /// Only these implementations (repeatable).
        #[arg(long = "implementation", short = 'i', long_help = implementation_help())]
        implementations: Vec<String>,
        /// Measure on a fast device instead of PATH: a loop device with direct I/O over a
        /// tmpfs file of --size (needs root and losetup), where what shows is each
        /// implementation's own cost rather than the disk's drift.
        #[arg(long)]
        fast_device: bool,
        /// Run each measurement under `Context::block_on`, the thread waiting for
        /// completions itself, instead of a generic executor (`futures::executor`).
        #[arg(long)]
        block_on: bool,
    },
}

/// The implementations, one line each, for `--help`.
fn implementation_help() -> String {
    let mut help = String::from("One of:");
    for i in Implementation::ALL {
        help.push_str(&format!("\n  {:<9} {}", i.as_str(), i.summary()));
        for alias in i.aliases() {
            help.push_str(&format!("\n  {alias:<9} the same as {i}"));
        }
    }
    help
}

/// Prints `log` warnings (caio's fallbacks) as `caio: warning: ...` on stderr.
struct StderrLog;

/// Set while a report prints the warnings itself.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn && !QUIET.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let msg = r.args().to_string();
            eprintln!(
                "caio: {}: {}",
                r.level().as_str().to_lowercase(),
                msg.trim_start_matches("caio: ")
            );
        }
    }
    fn flush(&self) {}
}

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    signals::install();
    static LOG: StderrLog = StderrLog;
    let _ = log::set_logger(&LOG).map(|()| log::set_max_level(log::LevelFilter::Warn));
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Info { path } => info::info(&path),
        Command::Copy {
            src,
            dst,
            direct,
            atomic,
            implementation,
        } => copy::copy(&src, &dst, direct, atomic, implementation.as_deref()),
        Command::Bench {
            path,
            size,
            secs,
            implementations,
            fast_device,
            block_on,
        } => {
            if fast_device {
                bench::fast_bench(&size, secs, &implementations, block_on)
            } else {
                bench::bench(&path, &size, secs, &implementations, block_on)
            }
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("caio: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn context_for(name: Option<&str>, max_requests: Option<usize>) -> Result<Context> {
    let mut b = Context::builder();
    if let Some(name) = name {
        b = b.implementation(name.parse::<Implementation>().map_err(|e| e.to_string())?);
    }
    if let Some(n) = max_requests {
        b = b.max_requests(n);
    }
    b.build().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// info

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => {
                    return Err(format!(
                        "size {s:?} is not a number with an optional K, M, G or T suffix"
                    ))
                }
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("size {s:?} is not a number with an optional K/M/G/T"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

// ---------------------------------------------------------------------------------------
// bench
