//! [`Chunks`]: a file as a stream of buffers.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use futures::Stream;

use crate::{fs::File, Buffer};

type ReadFut = Pin<Box<dyn Future<Output = io::Result<Buffer>> + Send>>;

/// Chunks kept in flight ahead of the consumer.
pub const CHUNKS_AHEAD: usize = 4;

/// The chunks of a file from its start: `n` bytes each, the last one shorter, several read
/// ahead. Ends after the first error.
pub struct Chunks {
    file: File,
    size: usize,
    next: u64,
    ahead: VecDeque<ReadFut>,
    eof: bool,
    done: bool,
}

impl fmt::Debug for Chunks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunks")
            .field("file", &self.file)
            .field("size", &self.size)
            .field("next", &self.next)
            .finish()
    }
}

impl Chunks {
    pub(crate) fn new(file: File, size: usize) -> Chunks {
        Chunks {
            file,
            size,
            next: 0,
            ahead: VecDeque::new(),
            eof: false,
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
        if this.size == 0 {
            this.done = true;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "chunk size must be at least 1",
            ))));
        }
        while !this.eof && this.ahead.len() < CHUNKS_AHEAD {
            this.ahead
                .push_back(Box::pin(this.file.read_at(this.size, this.next)));
            this.next += this.size as u64;
        }
        let Some(front) = this.ahead.front_mut() else {
            this.done = true;
            return Poll::Ready(None);
        };
        match front.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                this.ahead.pop_front();
                match r {
                    Err(e) => {
                        this.done = true;
                        this.ahead.clear();
                        Poll::Ready(Some(Err(e)))
                    }
                    Ok(b) if b.is_empty() => {
                        this.done = true;
                        this.ahead.clear();
                        Poll::Ready(None)
                    }
                    Ok(b) => {
                        if b.len() < this.size {
                            this.eof = true;
                            this.ahead.clear();
                        }
                        Poll::Ready(Some(Ok(b)))
                    }
                }
            }
        }
    }
}
