//! What [`File::advise`](crate::File::advise) and
//! [`File::sync_range`](crate::File::sync_range) take.

use crate::sys::c;
use std::ops::BitOr;

/// How a range of a file will be read, for the kernel's read-ahead and caching
/// (`posix_fadvise(2)`).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let file = caio::File::open("big.bin").await?;
/// file.advise(0, 0, caio::fs::Advice::Sequential).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Advice {
    /// No particular pattern (the default).
    Normal,
    /// Read from start to end: read ahead more.
    Sequential,
    /// Read at random: no read-ahead.
    Random,
    /// Read once (Linux ignores it).
    NoReuse,
    /// Needed soon: start reading it into the page cache now.
    WillNeed,
    /// Not needed again: drop its clean pages from the page cache.
    DontNeed,
}

impl Advice {
    /// The `POSIX_FADV_*` value.
    pub(crate) fn raw(self) -> c::c_int {
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
        {
            match self {
                Advice::Normal => c::POSIX_FADV_NORMAL,
                Advice::Sequential => c::POSIX_FADV_SEQUENTIAL,
                Advice::Random => c::POSIX_FADV_RANDOM,
                Advice::NoReuse => c::POSIX_FADV_NOREUSE,
                Advice::WillNeed => c::POSIX_FADV_WILLNEED,
                Advice::DontNeed => c::POSIX_FADV_DONTNEED,
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        {
            // No posix_fadvise here: the call reports Unsupported whatever the value.
            self as c::c_int
        }
    }
}

/// What [`File::sync_range`](crate::File::sync_range) does (`sync_file_range(2)`'s flags);
/// combine them with `|`.
///
/// `WAIT_BEFORE | WRITE | WAIT_AFTER` waits until the range's dirty pages are written.
/// Unlike `fdatasync`, it neither writes the file's metadata nor flushes the device's
/// cache, so it is **not** a durability guarantee: it paces write-back (a log that starts
/// writing each megabyte as it fills, a copy that keeps the dirty page count low).
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use caio::fs::SyncRange;
/// let log = caio::File::create("log").await?;
/// log.write_all_at(vec![0u8; 1 << 20], 0).await?;
/// log.sync_range(0, 1 << 20, SyncRange::WAIT_BEFORE | SyncRange::WRITE | SyncRange::WAIT_AFTER)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SyncRange(u32);

impl SyncRange {
    /// Wait for write-out already under way on the range to finish.
    pub const WAIT_BEFORE: SyncRange = SyncRange(1);
    /// Start writing out the range's dirty pages (does not wait).
    pub const WRITE: SyncRange = SyncRange(2);
    /// Wait for the write-out to finish.
    pub const WAIT_AFTER: SyncRange = SyncRange(4);

    /// The `SYNC_FILE_RANGE_*` bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for SyncRange {
    type Output = SyncRange;

    fn bitor(self, other: SyncRange) -> SyncRange {
        SyncRange(self.0 | other.0)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn flags_are_the_kernels() {
        assert_eq!(
            SyncRange::WAIT_BEFORE.bits(),
            c::SYNC_FILE_RANGE_WAIT_BEFORE
        );
        assert_eq!(SyncRange::WRITE.bits(), c::SYNC_FILE_RANGE_WRITE);
        assert_eq!(SyncRange::WAIT_AFTER.bits(), c::SYNC_FILE_RANGE_WAIT_AFTER);
        assert_eq!(
            (SyncRange::WAIT_BEFORE | SyncRange::WRITE | SyncRange::WAIT_AFTER).bits(),
            7
        );
    }
}
