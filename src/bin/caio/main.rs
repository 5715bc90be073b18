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

mod signals;

use std::{
    fs,
    io::{self, IsTerminal},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use caio::tools::{fastdev, workload};
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
        Command::Info { path } => info(&path),
        Command::Copy {
            src,
            dst,
            direct,
            atomic,
            implementation,
        } => copy(&src, &dst, direct, atomic, implementation.as_deref()),
        Command::Bench {
            path,
            size,
            secs,
            implementations,
            fast_device,
            block_on,
        } => {
            if fast_device {
                fast_bench(&size, secs, &implementations, block_on)
            } else {
                bench(&path, &size, secs, &implementations, block_on)
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

fn info(path: &Path) -> Result<()> {
    fs::metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    // The report lists the selection's warnings: the log need not print them too.
    QUIET.store(true, std::sync::atomic::Ordering::Relaxed);
    let s = caio::selection();
    QUIET.store(false, std::sync::atomic::Ordering::Relaxed);
    out!("caio {}", env!("CARGO_PKG_VERSION"));
    out!("selected implementation: {}", s.implementation());
    let from = match s.source() {
        Source::Env => format!(
            "CAIO_IMPL={}",
            std::env::var("CAIO_IMPL").unwrap_or_default().trim()
        ),
        Source::File => "the default_implementation file compiled into this build".to_string(),
        _ => format!(
            "the built-in order ({}: first available)",
            Implementation::ALL.map(Implementation::as_str).join(", ")
        ),
    };
    out!("  chosen by: {from}");
    if s.warnings().is_empty() {
        out!("  warnings: none");
    } else {
        for w in s.warnings() {
            out!("  warning: {w}");
        }
    }
    out!("implementations:");
    for i in Implementation::ALL {
        match i.check() {
            Ok(()) => out!("  {:<9} available: {}", i.as_str(), i.summary()),
            Err(caio::Error::Unavailable { reason, .. }) => {
                out!("  {:<9} unavailable: {reason}", i.as_str())
            }
            Err(e) => out!("  {:<9} unavailable: {e}", i.as_str()),
        }
    }
    if let (Ok(nr), Ok(max)) = (
        fs::read_to_string("/proc/sys/fs/aio-nr"),
        fs::read_to_string("/proc/sys/fs/aio-max-nr"),
    ) {
        out!(
            "kernel AIO: fs.aio-nr {} of fs.aio-max-nr {}",
            nr.trim(),
            max.trim()
        );
    }
    out!(
        "defaults: max_requests {}, thread pool {} threads",
        caio::DEFAULT_MAX_REQUESTS,
        caio::default_threads()
    );
    out!(
        "path: {}{}",
        path.display(),
        fs_type(path).map(|t| format!(" ({t})")).unwrap_or_default()
    );
    match direct_support(path) {
        Ok((a, note)) => {
            out!(
                "  O_DIRECT: supported; memory alignment {} B, offset/length alignment {} B ({:?})",
                a.memory,
                a.offset,
                a.source
            );
            if let Some(n) = note {
                out!("  ({n})");
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            out!("  O_DIRECT: not supported by this filesystem ({e})")
        }
        Err(e) => out!("  O_DIRECT: {e}"),
    }
    Ok(())
}

/// The filesystem type of `path`, by `statfs` magic number.
fn fs_type(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated path and `st` writable memory for statfs.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statfs succeeded and filled `st`.
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between platforms
    let magic = unsafe { st.assume_init() }.f_type as i64;
    Some(match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        0x2FC1_2FC1 => "zfs",
        0xF2F5_2010 => "f2fs",
        _ => "other filesystem",
    })
}

/// What a non-regular file is, for a message: "a FIFO", "a character device"...
fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a pipe or FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_dir() {
        "a directory"
    } else {
        "a regular file"
    }
}

/// O_DIRECT support on `path`: for a directory, on a file made there without a name
/// (`O_TMPFILE`), so nothing appears in it; where the filesystem cannot, on a named file
/// that is removed at once, and the note says so.
fn direct_support(path: &Path) -> io::Result<(caio::DirectAlignment, Option<String>)> {
    use std::os::unix::{
        fs::{FileTypeExt, OpenOptionsExt},
        io::AsRawFd,
    };
    let meta = fs::metadata(path)?;
    let t = meta.file_type();
    if !(t.is_file() || t.is_dir() || t.is_block_device()) {
        // Opening a FIFO would wait for a writer; O_DIRECT means nothing there anyway.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}: O_DIRECT applies to regular files, directories (a file made in \
                 them) and block devices",
                path.display(),
                kind_of(&meta)
            ),
        ));
    }
    if !meta.is_dir() {
        let f = fs::OpenOptions::new()
            .read(true)
            // Never waits, whatever the path names by the time it is opened.
            .custom_flags(libc::O_DIRECT | libc::O_NONBLOCK)
            .open(path)?;
        return caio::direct_alignment(f.as_raw_fd()).map(|a| (a, None));
    }
    let unnamed = |flags| {
        fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE | flags)
            .open(path)
    };
    match unnamed(libc::O_DIRECT) {
        Ok(f) => return caio::direct_alignment(f.as_raw_fd()).map(|a| (a, None)),
        // Unnamed files work, O_DIRECT does not.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && unnamed(0).is_ok() => return Err(e),
        Err(_) => {}
    }
    let probe = path.join(format!(".caio-info-probe-{}", std::process::id()));
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = fs::remove_file(&probe);
    let note = format!(
        "checked with a temporary file {} (removed): the filesystem cannot make unnamed files",
        probe.display()
    );
    r.and_then(|f| caio::direct_alignment(f.as_raw_fd()))
        .map(|a| (a, Some(note)))
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                e
            } else {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot tell: no file can be made in {} ({e})",
                        path.display()
                    ),
                )
            }
        })
}

// ---------------------------------------------------------------------------------------
// copy

fn copy(
    src: &Path,
    dst: &Path,
    direct: bool,
    atomic: bool,
    implementation: Option<&str>,
) -> Result<()> {
    let meta = fs::metadata(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    if meta.is_dir() {
        return Err(format!("cannot copy {}: it is a directory", src.display()));
    }
    if !meta.is_file() && atomic {
        // A stream cannot be copied through the library's atomic copy, and writing it in
        // place would break the promise --atomic makes: refused before DST is touched.
        return Err(format!(
            "cannot copy {} with --atomic: it is {}, not a regular file; --atomic copies \
             regular files only (copy it without --atomic, or into a regular file first)",
            src.display(),
            kind_of(&meta)
        ));
    }
    let ctx = context_for(implementation, None)?;
    if !meta.is_file() {
        // A pipe, FIFO or device, read to its end, as cp does.
        return stream_copy(&ctx, src, dst);
    }
    let total = meta.len();
    let bar = progress_bar(total);
    let b = bar.clone();
    let mut opts = CopyOptions {
        direct,
        atomic,
        context: Some(ctx.clone()),
        progress: b
            .map(|b| Arc::new(move |n: u64| b.set_position(n)) as Arc<dyn Fn(u64) + Send + Sync>),
        ..CopyOptions::default()
    };
    let started = Instant::now();
    let idle = || ctx.in_flight() == 0;
    let mut r = signals::interruptible(caio::fs::copy_with(src, dst, opts.clone()), idle);
    let mut used_direct = direct;
    if direct {
        if let Err(e) = &r {
            if e.to_string().contains("O_DIRECT is not supported") {
                eprintln!(
                    "caio: note: the filesystem does not support O_DIRECT; copying through \
                     the page cache instead"
                );
                opts.direct = false;
                used_direct = false;
                r = signals::interruptible(caio::fs::copy_with(src, dst, opts), idle);
            }
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let n = r.map_err(|e| format!("copying {} to {} failed: {e}", src.display(), dst.display()))?;
    let secs = started.elapsed().as_secs_f64();
    out!(
        "copied {n} bytes ({}) in {secs:.3} s: {:.1} MiB/s via {}{}",
        human_bytes(n),
        n as f64 / secs.max(1e-9) / (1 << 20) as f64,
        ctx.implementation(),
        if used_direct {
            ", O_DIRECT"
        } else {
            ", page cache"
        }
    );
    // Nothing of the command's is left in flight when it exits.
    ctx.wait_idle_timeout(Duration::from_secs(30));
    Ok(())
}

/// Copies from a pipe, FIFO or device, in sequence, to its end.
fn stream_copy(ctx: &Context, src: &Path, dst: &Path) -> Result<()> {
    let started = Instant::now();
    let copy = async {
        let input = OpenOptions::new()
            .read(true)
            .context(ctx.clone())
            .open(src)
            .await?;
        let output = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .context(ctx.clone())
            .open(dst)
            .await?;
        let mut w = output.writer();
        let n = futures::io::copy(input.reader(), &mut w).await?;
        futures::AsyncWriteExt::close(&mut w).await?;
        drop(w);
        output.close().await?;
        input.close().await?;
        io::Result::Ok(n)
    };
    let n = signals::interruptible(copy, || ctx.in_flight() == 0)
        .map_err(|e| format!("copying {} to {} failed: {e}", src.display(), dst.display()))?;
    let secs = started.elapsed().as_secs_f64();
    out!(
        "copied {n} bytes ({}) in {secs:.3} s from a stream via {}",
        human_bytes(n),
        ctx.implementation()
    );
    ctx.wait_idle_timeout(Duration::from_secs(30));
    Ok(())
}

fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

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

/// `bench --fast-device`: the same measurement on a loop device over tmpfs.
fn fast_bench(size: &str, secs: f64, only: &[String], block_on: bool) -> Result<()> {
    let len = parse_size(size)?;
    if len < 4 << 20 {
        return Err(format!(
            "--size {size}: the fast device needs at least 4 MiB"
        ));
    }
    // Ctrl-C detaches the device and removes its file too, even while they are set up
    // (the process then exits through the handler, not through Drop).
    let image = fastdev::FastDevice::image_path();
    let _detach = signals::detach_on_signal(image.clone());
    let _image = signals::remove_on_signal(image);
    let dev = fastdev::FastDevice::setup(len)
        .map_err(|why| format!("cannot set up a fast device: {why}"))?;
    eprintln!(
        "caio: fast device {} (direct I/O over {} in tmpfs)",
        dev.dev.display(),
        dev.image.display()
    );
    bench(&dev.dev, size, secs, only, block_on)
}

fn bench(path: &Path, size: &str, secs: f64, only: &[String], block_on: bool) -> Result<()> {
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!(
            "--secs {secs} must be more than 0 and at most 3600"
        ));
    }
    let duration = Duration::from_secs_f64(secs);
    let mut impls = Vec::new();
    for name in only {
        let i = name.parse::<Implementation>().map_err(|e| e.to_string())?;
        if !impls.contains(&i) {
            impls.push(i); // `-i thread -i thread` measures it once
        }
    }
    if impls.is_empty() {
        impls = Implementation::ALL.to_vec();
    }
    let mut available = Vec::new();
    for i in impls {
        match i.check() {
            Ok(()) => available.push(i),
            Err(e) => eprintln!("caio: note: skipping {e}"),
        }
    }
    let meta = fs::metadata(path).map_err(|e| format!("cannot use {}: {e}", path.display()))?;
    let (file, len, _temp, writable) = if meta.is_dir() {
        let len = parse_size(size)?;
        if len < 4 << 20 {
            return Err(format!("--size {size}: the test file needs at least 4 MiB"));
        }
        let file = path.join(format!(".caio-bench-{}.dat", std::process::id()));
        let temp = signals::remove_on_signal(file.clone());
        eprintln!("caio: laying out {} ({})", file.display(), human_bytes(len));
        lay_out(&file, len)
            .map_err(|e| format!("cannot create the test file {}: {e}", file.display()))?;
        (file, len, Some(temp), true)
    } else if meta.is_file() {
        (path.to_path_buf(), meta.len(), None, false)
    } else if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        // Read only: nothing is written to a device.
        let len = std::io::Seek::seek(
            &mut fs::File::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            std::io::SeekFrom::End(0),
        )
        .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
        (path.to_path_buf(), len, None, false)
    } else {
        return Err(format!(
            "{} is neither a directory, a regular file nor a block device",
            path.display()
        ));
    };
    if len < 1 << 20 {
        return Err(format!(
            "{} is smaller than 1 MiB: too small to measure",
            file.display()
        ));
    }
    let direct_ok = match direct_support(&file) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("caio: note: O_DIRECT rows skipped: {e}");
            false
        }
    };
    let rand = |block, depth, pattern| Workload {
        pattern,
        block,
        depth,
        duration,
        block_on,
    };
    let mut rows: Vec<(&str, bool, Workload)> = vec![
        (
            "4 KiB random read, page cache",
            false,
            rand(4096, 1, Pattern::RandRead),
        ),
        (
            "4 KiB random read, page cache",
            false,
            rand(4096, 32, Pattern::RandRead),
        ),
        (
            "4 KiB random read, O_DIRECT",
            true,
            rand(4096, 1, Pattern::RandRead),
        ),
        (
            "4 KiB random read, O_DIRECT",
            true,
            rand(4096, 32, Pattern::RandRead),
        ),
        (
            "4 KiB random read, O_DIRECT",
            true,
            rand(4096, 128, Pattern::RandRead),
        ),
        (
            "1 MiB sequential read, O_DIRECT",
            true,
            rand(1 << 20, 4, Pattern::SeqRead),
        ),
    ];
    if writable {
        rows.push((
            "1 MiB sequential write, O_DIRECT",
            true,
            rand(1 << 20, 4, Pattern::SeqWrite),
        ));
    }
    out!(
        "caio bench: {} ({}), {secs} s per cell, {} cores{}",
        file.display(),
        human_bytes(len),
        cores(),
        if block_on {
            ", under Context::block_on"
        } else {
            ""
        }
    );
    out_part!("{:<34} {:>4}", "workload", "qd");
    for i in &available {
        out_part!(" {:>16}", i.as_str());
    }
    out!();
    // Warm the page cache for the buffered rows.
    let _ = fs::read(&file);
    for (name, direct, w) in rows {
        out_part!("{name:<34} {:>4}", w.depth);
        for &i in &available {
            let cell = if direct && !direct_ok {
                "n/a".to_string()
            } else {
                match measure(i, &file, len, direct, &w, writable) {
                    Ok(o) if w.block >= 1 << 20 => format!("{:.0} MiB/s", o.mib_per_sec()),
                    Ok(o) => format!("{} IOPS", human_count(o.iops())),
                    Err(e) => {
                        eprintln!("\ncaio: {i} {name} qd {}: {e}", w.depth);
                        "error".to_string()
                    }
                }
            };
            out_part!(" {cell:>16}");
            use std::io::Write;
            let _ = io::stdout().flush();
        }
        out!();
    }
    if available.contains(&Implementation::Blocking) {
        out!("(the blocking implementation runs one operation at a time whatever the queue depth)");
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn human_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn lay_out(path: &Path, len: u64) -> io::Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(path)?;
    let mut rng = workload::Rng::new(7);
    let block: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

fn measure(
    i: Implementation,
    path: &Path,
    len: u64,
    direct: bool,
    w: &Workload,
    writable: bool,
) -> io::Result<Outcome> {
    let ctx = Context::builder()
        .implementation(i)
        .max_requests(w.depth)
        .build()?;
    let file = futures::executor::block_on(
        OpenOptions::new()
            .read(true)
            .write(writable)
            .direct(direct)
            .context(ctx.clone())
            .open(path),
    )?;
    let r = workload::run(&file, len, w);
    // A failed run drops operations in flight: they finish before the next (and before
    // the command exits), and so does the close of the file.
    drop(file);
    ctx.wait_idle_timeout(Duration::from_secs(30));
    r
}
