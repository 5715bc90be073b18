//! `caio copy`: a file copy through caio, in place or atomic, with progress.

use super::*;
use crate::info::kind_of;

pub(crate) fn copy(
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
        if used_direct && cfg!(windows) {
            ", unbuffered (FILE_FLAG_NO_BUFFERING)"
        } else if used_direct {
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
pub(crate) fn stream_copy(ctx: &Context, src: &Path, dst: &Path) -> Result<()> {
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

pub(crate) fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
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
