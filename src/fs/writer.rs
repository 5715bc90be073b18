//! [`Writer`]: `AsyncWrite + AsyncSeek` with write-behind.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    io::{self, SeekFrom},
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use futures::io::{AsyncSeek, AsyncWrite};

use crate::{
    fs::{
        reader::{seek_target, PendingLen},
        File,
    },
    Buffer,
};

/// Bytes per write.
pub const WRITE_CHUNK: usize = 256 << 10;
/// Writes kept in flight behind the producer.
pub const WRITE_BEHIND: usize = 4;

type WriteFut = Pin<Box<dyn Future<Output = io::Result<Buffer>> + Send>>;

/// A buffered, seekable writer over a [`File`] that keeps several chunk writes in flight
/// behind the producer.
///
/// `flush` waits until everything written so far is written; `close` is `flush`. Errors of
/// writes in flight are reported by the next call. In append mode one write is in flight at
/// a time, so the order of the data is kept.
///
/// **Call `close().await`**: it is how you know that everything reached the file (then
/// [`File::sync_data`] for the device, [`File::close`] for close-time errors). A writer
/// dropped without `close` still writes what it holds, in the background, and a normal
/// exit of the process waits for that (see [`EXIT_WAIT`](crate::fs::EXIT_WAIT)); but
/// its error can only be logged (through `log`).
///
/// It is `futures::io::{AsyncWrite, AsyncSeek}`, and with the `tokio` feature also
/// `tokio::io::{AsyncWrite, AsyncSeek}`, whose `shutdown` is `close`.
///
/// ```no_run
/// # #[cfg(feature = "tokio")]
/// # async fn f() -> std::io::Result<()> {
/// use tokio::io::AsyncWriteExt;
/// let mut w = caio::File::create("out.txt").await?.writer();
/// let mut src = caio::File::open("in.txt").await?.reader();
/// tokio::io::copy(&mut src, &mut w).await?;
/// w.shutdown().await?; // writes everything and reports any error
/// # Ok(()) }
/// ```
pub struct Writer {
    file: File,
    chunk: usize,
    depth: usize,
    /// Bytes not yet handed to a write; they go at `pos`.
    buf: Buffer,
    pos: u64,
    /// False in append mode until the file's length (where writing starts) is known.
    pos_known: bool,
    len: PendingLen,
    inflight: VecDeque<WriteFut>,
    spare: Vec<Buffer>,
    error: Option<io::Error>,
    /// A seek started by tokio's `AsyncSeek::start_seek`, finished by `poll_complete`.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) tokio_seek: Option<SeekFrom>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("file", &self.file)
            .field("pos", &self.pos)
            .field("buffered", &self.buf.len())
            .field("in_flight", &self.inflight.len())
            .finish()
    }
}

impl Writer {
    pub(crate) fn new(file: File) -> Writer {
        Self::with_write_behind(file, WRITE_CHUNK, WRITE_BEHIND)
    }

    /// A writer issuing writes of `chunk` bytes, `depth` of them in flight (one in append
    /// mode).
    pub fn with_write_behind(file: File, chunk: usize, depth: usize) -> Writer {
        let unit = file.direct_alignment().map_or(1, |a| a.offset.max(1));
        let chunk = chunk.max(1).next_multiple_of(unit);
        let pos_known = !file.is_append();
        // In order: one write at a time in append mode and on pipes, FIFOs and devices.
        let depth = if file.is_append() || !file.is_seekable() {
            1
        } else {
            depth.max(1)
        };
        Writer {
            file,
            chunk,
            depth,
            buf: Buffer::new(),
            pos: 0,
            pos_known,
            len: PendingLen::default(),
            inflight: VecDeque::new(),
            spare: Vec::new(),
            error: None,
            tokio_seek: None,
        }
    }

    /// The position the next byte will be written at (ignored by the OS in append mode,
    /// where it counts from the file's length when the writer was first polled).
    pub fn position(&self) -> u64 {
        self.pos + self.buf.len() as u64
    }

    /// Writes in flight behind the producer.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// The file being written.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// In append mode, learns where writing starts (the length, through the backend).
    fn poll_pos(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        if !self.pos_known {
            let len = std::task::ready!(self.len.poll_len(cx, &self.file))?;
            self.pos += len;
            self.pos_known = true;
        }
        Poll::Ready(Ok(()))
    }

    fn fresh_buffer(&mut self) -> io::Result<Buffer> {
        match self.spare.pop() {
            Some(mut b) => {
                b.clear();
                Ok(b)
            }
            None => Buffer::with_capacity_aligned(self.chunk),
        }
    }

    /// Hands the buffered bytes to a write.
    fn launch(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self.fresh_buffer()?;
        let data = std::mem::replace(&mut self.buf, next);
        let (file, off) = (self.file.clone(), self.pos);
        self.pos += data.len() as u64;
        self.inflight
            .push_back(Box::pin(async move { file.write_chunk(data, off).await }));
        Ok(())
    }

    /// Polls the oldest write; `Ready(())` when it finished (its error kept for the caller).
    fn poll_oldest(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Some(f) = self.inflight.front_mut() else {
            return Poll::Ready(());
        };
        match f.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.inflight.pop_front();
                match r {
                    Ok(b) if b.capacity() == self.chunk && self.spare.len() < self.depth => {
                        self.spare.push(b)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.error.get_or_insert(e);
                    }
                }
                Poll::Ready(())
            }
        }
    }

    /// Waits for every write in flight; the first error, if any.
    fn poll_drain(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        while !self.inflight.is_empty() {
            if self.poll_oldest(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(self.error.take().map_or(Ok(()), Err))
    }
}

impl AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pos(cx))?;
        // Collect what finished already, without waiting.
        while !this.inflight.is_empty() && this.poll_oldest(cx).is_ready() {}
        if let Some(e) = this.error.take() {
            return Poll::Ready(Err(e));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.buf.capacity() == 0 {
            match this.fresh_buffer() {
                Ok(b) => this.buf = b,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if this.buf.len() == this.chunk {
            while this.inflight.len() >= this.depth {
                if this.poll_oldest(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            if let Some(e) = this.error.take() {
                return Poll::Ready(Err(e));
            }
            if let Err(e) = this.launch() {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(this.buf.extend_from_slice(data)))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_pos(cx))?;
        if this.depth == 1 && !this.buf.is_empty() {
            // Append mode: one write at a time, in order.
            while !this.inflight.is_empty() {
                if this.poll_oldest(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        if let Err(e) = this.launch() {
            return Poll::Ready(Err(e));
        }
        this.poll_drain(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl AsyncSeek for Writer {
    fn poll_seek(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        to: SeekFrom,
    ) -> Poll<io::Result<u64>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        let this = self.get_mut();
        if !this.file.is_seekable() && to != SeekFrom::Current(0) {
            return Poll::Ready(Err(this.file.cannot_seek()));
        }
        let len = match this.len.poll_for(cx, &this.file, to) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(len)) => len,
        };
        let target = match seek_target(this.pos, to, len) {
            Ok(t) => t,
            Err(e) => return Poll::Ready(Err(e)),
        };
        this.pos = target;
        Poll::Ready(Ok(target))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.buf.is_empty() && self.inflight.is_empty() {
            return;
        }
        let pending = self.buf.len();
        if let Err(e) = self.launch() {
            log::error!("caio: a writer dropped without close lost {pending} bytes: {e}");
            return;
        }
        let mut inflight = std::mem::take(&mut self.inflight);
        // Context::wait_idle waits for these writes, started or not.
        let hold = self.file.context().hold();
        crate::fs::finish::finish("a write of a Writer dropped without close", async move {
            let _hold = hold;
            let mut first = Ok(());
            while let Some(f) = inflight.pop_front() {
                if let Err(e) = f.await {
                    first = first.and(Err(e));
                }
            }
            first
        });
    }
}
