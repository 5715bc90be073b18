//! `caio bench`: fio-like workloads through caio, on a file or on a fast device.

use super::*;
use crate::info::direct_support;

/// `bench --fast-device`: Linux's loop devices only.
#[cfg(not(target_os = "linux"))]
pub(crate) fn fast_bench(_: &str, _: f64, _: &[String], _: bool) -> Result<()> {
    Err("--fast-device needs Linux (a loop device with direct I/O over tmpfs)".into())
}

/// `bench --fast-device`: the same measurement on a loop device over tmpfs.
#[cfg(target_os = "linux")]
pub(crate) fn fast_bench(size: &str, secs: f64, only: &[String], block_on: bool) -> Result<()> {
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

pub(crate) fn bench(
    path: &Path,
    size: &str,
    secs: f64,
    only: &[String],
    block_on: bool,
) -> Result<()> {
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
    } else if is_block_device(&meta) {
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

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub(crate) fn human_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub(crate) fn lay_out(path: &Path, len: u64) -> io::Result<()> {
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

pub(crate) fn measure(
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

/// Whether `meta` is a block device's (Unix; Windows names none by path here).
fn is_block_device(meta: &fs::Metadata) -> bool {
    #[cfg(unix)]
    return std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type());
    #[cfg(windows)]
    {
        let _ = meta;
        false
    }
}
