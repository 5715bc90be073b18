//! [`Chunks`]: a file as a stream of buffers.

use std::{
    fmt, io,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use futures::Stream;

use crate::{
    fs::{ahead::ReadAhead, File},
    Buffer,
};

/// Chunks kept in flight ahead of the consumer.
pub const CHUNKS_AHEAD: usize = 4;

/// The chunks of a file from its start: `n` bytes each, the last one shorter, several read
/// ahead. Ends after the first error.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use futures::StreamExt;
/// let mut chunks = caio::File::open("big.bin").await?.chunks(1 << 20);
/// while let Some(chunk) = chunks.next().await {
///     println!("{} bytes", chunk?.len());
/// }
/// # Ok(()) }
/// ```
pub struct Chunks {
    reads: ReadAhead,
    size: usize,
    done: bool,
}

impl fmt::Debug for Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunks")
            .field("file", self.reads.file())
            .field("size", &self.size)
            .field("in_flight", &self.reads.in_flight())
            .finish()
    }
}

impl Chunks {
    pub(crate) fn new(file: File, size: usize) -> Chunks {
        Chunks {
            reads: ReadAhead::new(file, size, CHUNKS_AHEAD, 0),
            size,
            done: false,
        }
    }
}

impl Stream for Chunks {
    type Item = io::Result<Buffer>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<io::Result<Buffer>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = match this.reads.poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok((_, b)))) if !b.is_empty() => Some(Ok(b)),
            Poll::Ready(Some(Err(e))) => Some(Err(e)),
            Poll::Ready(_) => None,
        };
        if !matches!(item, Some(Ok(_))) {
            this.done = true;
            this.reads.stop();
        }
        Poll::Ready(item)
    }
}
