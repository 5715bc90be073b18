//! What O_DIRECT asks of a file: memory, offset and length alignment.

use crate::sys::fd::RawFd;
use std::io;

use crate::sys;

/// The safe default when the system does not say: a page satisfies every device.
pub const DEFAULT_DIRECT_ALIGNMENT: usize = 4096;

/// Where a [`DirectAlignment`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlignmentSource {
    /// `statx(STATX_DIOALIGN)`, reported by the filesystem (Linux 6.1+).
    Statx,
    /// The block device's logical block size (`BLKSSZGET`).
    BlockDevice,
    /// Not reported: the safe default, [`DEFAULT_DIRECT_ALIGNMENT`].
    Default,
}

/// The alignment O_DIRECT transfers on one file need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectAlignment {
    /// Alignment of the memory address (every crate-allocated [`Buffer`](crate::Buffer)
    /// meets it; other memory is bounced through an aligned copy).
    pub memory: usize,
    /// Alignment of file offsets and transfer lengths.
    pub offset: usize,
    /// Where the figures came from.
    pub source: AlignmentSource,
}

impl DirectAlignment {
    /// Whether `offset` and `len` meet the offset alignment.
    pub fn allows(&self, offset: u64, len: usize) -> bool {
        offset % self.offset as u64 == 0 && len % self.offset == 0
    }
}

/// Discovers the O_DIRECT alignment of an open file: `statx` `STATX_DIOALIGN` where the
/// kernel and filesystem report it, the logical block size for a block device, else
/// the safe default of 4096.
///
/// # Errors
/// The OS error of `statx`/`fstat` (EBADF for a bad descriptor); `Unsupported` when the
/// filesystem reports that the file cannot do O_DIRECT.
pub fn direct_alignment(fd: crate::RawFd) -> io::Result<DirectAlignment> {
    alignment_of(sys::fd::inner(fd))
}

/// [`direct_alignment`] of the crate's own descriptor type.
pub(crate) fn alignment_of(fd: RawFd) -> io::Result<DirectAlignment> {
    #[cfg(target_os = "linux")]
    {
        match sys::dio_alignment(fd) {
            Ok(Some((0, _))) => return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "O_DIRECT is not supported for this file (statx reports no direct I/O alignment)",
            )),
            Ok(Some((memory, offset))) => {
                return Ok(DirectAlignment {
                    memory: memory as usize,
                    offset: offset.max(1) as usize,
                    source: AlignmentSource::Statx,
                })
            }
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            Err(e) => return Err(e),
        }
        if sys::file_type(fd)? == libc::S_IFBLK {
            let size = sys::block_size(fd)? as usize;
            return Ok(DirectAlignment {
                memory: size,
                offset: size,
                source: AlignmentSource::BlockDevice,
            });
        }
    }
    sys::file_type(fd)?;
    Ok(DirectAlignment {
        memory: DEFAULT_DIRECT_ALIGNMENT,
        offset: DEFAULT_DIRECT_ALIGNMENT,
        source: AlignmentSource::Default,
    })
}
