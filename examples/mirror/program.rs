// A directory mirror written against tokio::fs, as a tokio user writes one. It is
// compiled twice: in `main.rs` after `use caio::fs;`, and in tests/ported.rs after
// `use tokio::fs;`, to show that swapping the one line is the whole port.

use std::{
    collections::BTreeSet,
    io,
    path::{Path, PathBuf},
};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// What a run of the mirror did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub copied: u64,
    pub skipped: u64,
    pub removed: u64,
    pub bytes: u64,
    /// A sum over every byte of every file copied, read back from the mirror.
    pub checksum: u64,
}

/// Makes `dst` a copy of `src`: directories created, new or changed files copied (through
/// a temporary name and a rename), files gone from `src` removed, and a line per run
/// appended to `dst/.mirror.log`.
pub async fn mirror(src: &Path, dst: &Path) -> io::Result<Summary> {
    let mut summary = Summary::default();
    fs::DirBuilder::new().recursive(true).create(dst).await?;
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let (from, to) = (src.join(&rel), dst.join(&rel));
        fs::create_dir_all(&to).await?;
        let mut seen = BTreeSet::new();
        let mut entries = fs::read_dir(&from).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            seen.insert(name.clone());
            let file_type = entry.file_type().await?;
            if file_type.is_dir() {
                dirs.push(rel.join(&name));
                continue;
            }
            let target = to.join(&name);
            let len = entry.metadata().await?.len();
            if fs::try_exists(&target).await? && fs::metadata(&target).await?.len() == len {
                summary.skipped += 1;
                continue;
            }
            let tmp = to.join(format!(".{}.part", name.to_string_lossy()));
            summary.bytes += fs::copy(entry.path(), &tmp).await?;
            fs::rename(&tmp, &target).await?;
            summary.checksum = summary.checksum.wrapping_add(checksum(&target).await?);
            summary.copied += 1;
        }
        // What the source no longer has.
        let mut old = fs::read_dir(&to).await?;
        while let Some(entry) = old.next_entry().await? {
            let name = entry.file_name();
            if rel.as_os_str().is_empty() && name == ".mirror.log" {
                continue;
            }
            if !seen.contains(&name) {
                if entry.file_type().await?.is_dir() {
                    fs::remove_dir_all(entry.path()).await?;
                } else {
                    fs::remove_file(entry.path()).await?;
                }
                summary.removed += 1;
            }
        }
    }
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dst.join(".mirror.log"))
        .await?;
    let line = format!(
        "copied {} skipped {} removed {} bytes {}\n",
        summary.copied, summary.skipped, summary.removed, summary.bytes
    );
    log.write_all(line.as_bytes()).await?;
    // No flush: the write finishes as the file is dropped, as tokio's does.
    Ok(summary)
}

/// The sum of a file's bytes, read through the cursor in 64 KiB pieces, the first piece
/// twice (a seek back to the start in between).
async fn checksum(path: &Path) -> io::Result<u64> {
    let mut file = fs::File::open(path).await?;
    let mut buf = vec![0u8; 64 << 10];
    let n = file.read(&mut buf).await?;
    let first: u64 = buf[..n].iter().map(|&b| u64::from(b)).sum();
    file.seek(io::SeekFrom::Start(0)).await?;
    let mut sum = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sum += buf[..n].iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    Ok(sum.wrapping_add(first))
}
