//! [`Reader`]: `AsyncRead + AsyncBufRead + AsyncSeek` with read-ahead.

use crate::sys;
use std::{
    fmt,
    future::Future,
    io::{self, SeekFrom},
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use futures::io::{AsyncBufRead, AsyncRead, AsyncSeek};

use crate::{
    fs::{
        ahead::{self, ReadAhead},
        File,
    },
    Buffer,
};

/// Bytes per read.
pub const READ_CHUNK: usize = 256 << 10;
/// Reads kept in flight ahead of the consumer.
pub const READ_AHEAD: usize = 4;

/// A buffered, seekable reader over a [`File`] that keeps several chunk reads in flight
/// ahead of the consumer, so sequential reading runs at the device's pace rather than one
/// operation at a time.
///
/// It is `futures::io::{AsyncRead, AsyncBufRead, AsyncSeek}`, and with the `tokio` feature
/// also `tokio::io::{AsyncRead, AsyncBufRead, AsyncSeek}`: `tokio::io::copy` and
/// `AsyncBufReadExt::lines` take it as it is.
///
/// ```no_run
/// # #[cfg(feature = "tokio")]
/// # async fn f() -> std::io::Result<()> {
/// use tokio::io::AsyncBufReadExt;
/// let mut lines = caio::File::open("app.log").await?.reader().lines();
/// while let Some(line) = lines.next_line().await? {
///     println!("{line}");
/// }
/// # Ok(()) }
/// ```
pub struct Reader {
    reads: ReadAhead,
    /// Offsets must be multiples of this (O_DIRECT), else 1.
    unit: u64,
    buf: Buffer,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// Logical position: the next byte the consumer gets.
    pos: u64,
    len: PendingLen,
    /// A seek started by tokio's `AsyncSeek::start_seek`, finished by `poll_complete`.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) tokio_seek: Option<SeekFrom>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("file", self.reads.file())
            .field("pos", &self.pos)
            .field("in_flight", &self.reads.in_flight())
            .finish()
    }
}

impl Reader {
    pub(crate) fn new(file: File) -> Reader {
        Self::with_read_ahead(file, READ_CHUNK, READ_AHEAD)
    }

    /// A reader issuing reads of `chunk` bytes (rounded up to the O_DIRECT alignment),
    /// `depth` of them in flight.
    ///
    /// A `chunk` of 0 or over 1 GiB, or a `depth` of 0 or over 4096, makes every read
    /// fail with an error of kind `InvalidInput`.
    pub fn with_read_ahead(file: File, chunk: usize, depth: usize) -> Reader {
        let unit = file.direct_alignment().map_or(1, |a| a.offset.max(1));
        // Rounded within the bound, so that a valid chunk stays valid.
        let chunk = match chunk.checked_next_multiple_of(unit) {
            Some(c) if chunk > 0 && c <= ahead::MAX_CHUNK => c,
            _ => chunk,
        };
        let unit = unit as u64;
        Reader {
            reads: ReadAhead::new(file, chunk, depth, 0),
            unit,
            buf: Buffer::new(),
            buf_start: 0,
            pos: 0,
            len: PendingLen::default(),
            tokio_seek: None,
        }
    }

    /// Reads in flight ahead of the consumer.
    pub fn in_flight(&self) -> usize {
        self.reads.in_flight()
    }

    /// The current position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The file being read.
    pub fn file(&self) -> &File {
        self.reads.file()
    }

    /// Forgets the buffer and reads in flight; the next read starts at `pos`.
    fn restart(&mut self, pos: u64) {
        self.buf = Buffer::new();
        self.buf_start = pos;
        self.pos = pos;
        self.reads.restart(pos - pos % self.unit);
    }

    fn buffered(&self) -> usize {
        let start = (self.pos - self.buf_start) as usize;
        self.buf.len().saturating_sub(start)
    }
}

impl AsyncBufRead for Reader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.buffered() == 0 {
            match this.reads.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // End of file, as far as we know: report it, and look again next time
                    // (the file may grow).
                    let pos = this.pos;
                    this.restart(pos);
                    return Poll::Ready(Ok(&[]));
                }
                Poll::Ready(Some(Err(e))) => {
                    let pos = this.pos;
                    this.restart(pos);
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Some(Ok((off, b)))) => {
                    this.buf = b;
                    this.buf_start = off;
                }
            }
        }
        let start = (this.pos - this.buf_start) as usize;
        Poll::Ready(Ok(&this.buf[start..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos += amt.min(this.buffered()) as u64;
    }
}

impl AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(data)) => {
                let n = data.len().min(out.len());
                out[..n].copy_from_slice(&data[..n]);
                n
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

pub(crate) fn seek_target(current: u64, to: SeekFrom, len: Option<u64>) -> io::Result<u64> {
    let (base, delta) = match to {
        SeekFrom::Start(n) => return Ok(n),
        SeekFrom::Current(d) => (current, d),
        SeekFrom::End(d) => (
            len.ok_or_else(|| io::Error::other("caio: a seek from the end needs the length"))?,
            d,
        ),
    };
    // As the OS says it (and std, and tokio through it): lseek(2)'s EINVAL;
    // SetFilePointerEx's ERROR_NEGATIVE_SEEK.
    base.checked_add_signed(delta)
        .filter(|&t| i64::try_from(t).is_ok())
        .ok_or_else(|| io::Error::from_raw_os_error(sys::NEGATIVE_SEEK))
}

/// A file length being fetched through the backend, for a seek from the end (or a
/// writer's start in append mode): never an `fstat` on the polling thread.
#[derive(Default)]
pub(crate) struct PendingLen(Option<Pin<Box<dyn Future<Output = io::Result<u64>> + Send>>>);

impl PendingLen {
    /// The file's length.
    pub(crate) fn poll_len(
        &mut self,
        cx: &mut TaskContext<'_>,
        file: &File,
    ) -> Poll<io::Result<u64>> {
        let fut = self.0.get_or_insert_with(|| Box::pin(file.len()));
        let r = std::task::ready!(fut.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(r)
    }

    /// The length a seek to `to` needs: `Some` for a seek from the end, else `None`.
    pub(crate) fn poll_for(
        &mut self,
        cx: &mut TaskContext<'_>,
        file: &File,
        to: SeekFrom,
    ) -> Poll<io::Result<Option<u64>>> {
        match to {
            SeekFrom::End(_) => self.poll_len(cx, file).map(|r| r.map(Some)),
            _ => Poll::Ready(Ok(None)),
        }
    }
}

impl AsyncSeek for Reader {
    fn poll_seek(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        to: SeekFrom,
    ) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        if matches!(to, SeekFrom::End(_)) && !this.reads.file().is_seekable() {
            return Poll::Ready(Err(this.reads.file().cannot_seek()));
        }
        let len = match this.len.poll_for(cx, this.reads.file(), to) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(len)) => len,
        };
        let target = match seek_target(this.pos, to, len) {
            Ok(t) => t,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if target != this.pos && !this.reads.file().is_seekable() {
            return Poll::Ready(Err(this.reads.file().cannot_seek()));
        }
        if target >= this.buf_start && target <= this.buf_start + this.buf.len() as u64 {
            this.pos = target; // inside what is buffered: keep the read-ahead
        } else {
            this.restart(target);
        }
        Poll::Ready(Ok(target))
    }
}
