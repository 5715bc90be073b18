//! The one read-ahead engine: sequential reads of a fixed chunk size, several in flight,
//! delivered in order. [`Reader`](crate::fs::Reader), [`Chunks`](crate::fs::Chunks) and
//! `copy` all read through it.

use std::{
    collections::VecDeque,
    future::Future,
    io,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use crate::{fs::File, Buffer};

type ReadFut = Pin<Box<dyn Future<Output = io::Result<Buffer>> + Send>>;

/// The largest chunk a read-ahead reads at once. One `read(2)` moves at most just under
/// 2 GiB on Linux anyway, and the chunk is one allocation.
pub(crate) const MAX_CHUNK: usize = 1 << 30;
/// The most reads a read-ahead keeps in flight: each is a future and, once started, a
/// chunk of memory.
pub(crate) const MAX_DEPTH: usize = 4096;

/// Whether a read-ahead of `chunk` bytes, `depth` in flight, can run: `InvalidInput`
/// naming the bound otherwise.
pub(crate) fn check(chunk: usize, depth: usize) -> io::Result<()> {
    let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    if chunk == 0 || chunk > MAX_CHUNK {
        return bad(format!(
            "a read-ahead chunk of {chunk} bytes: it must be from 1 byte to {MAX_CHUNK} (1 GiB)"
        ));
    }
    if depth == 0 || depth > MAX_DEPTH {
        return bad(format!(
            "a read-ahead depth of {depth}: it must be from 1 to {MAX_DEPTH} reads in flight"
        ));
    }
    Ok(())
}

/// Reads of `chunk` bytes from `next` on, `depth` of them in flight.
pub(crate) struct ReadAhead {
    file: File,
    chunk: usize,
    depth: usize,
    /// Where the next scheduled read starts.
    next: u64,
    ahead: VecDeque<(u64, ReadFut)>,
    /// A short read was seen: nothing more is scheduled until `restart`.
    eof: bool,
    /// Made with a chunk or depth out of bounds (see `check`): every read fails with it.
    invalid: Option<String>,
}

impl ReadAhead {
    /// On a file that is read in sequence (a pipe, FIFO or device), one read at a time.
    /// A chunk or depth out of bounds makes every read fail with `InvalidInput`.
    pub(crate) fn new(file: File, chunk: usize, depth: usize, start: u64) -> ReadAhead {
        let invalid = check(chunk, depth).err().map(|e| e.to_string());
        let depth = if file.is_seekable() {
            depth.clamp(1, MAX_DEPTH)
        } else {
            1
        };
        ReadAhead {
            file,
            chunk: chunk.clamp(1, MAX_CHUNK),
            depth,
            next: start,
            ahead: VecDeque::new(),
            eof: false,
            invalid,
        }
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Reads in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.ahead.len()
    }

    /// Forgets the reads in flight (their futures are dropped; see the contract) and starts
    /// again at `at`.
    pub(crate) fn restart(&mut self, at: u64) {
        self.ahead.clear();
        self.next = at;
        self.eof = false;
    }

    /// Stops scheduling: what is in flight is dropped.
    pub(crate) fn stop(&mut self) {
        self.ahead.clear();
        self.eof = true;
    }

    /// The next chunk in file order with its offset; `None` once a short read has been
    /// delivered (end of file, as far as is known). A short chunk ends the read-ahead:
    /// the reads scheduled past it are dropped.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<io::Result<(u64, Buffer)>>> {
        if let Some(why) = &self.invalid {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                why.clone(),
            ))));
        }
        while !self.eof && self.ahead.len() < self.depth {
            let off = self.next;
            let (file, chunk) = (self.file.clone(), self.chunk);
            self.ahead.push_back((
                off,
                Box::pin(async move { file.read_chunk(chunk, off).await }),
            ));
            self.next += self.chunk as u64;
        }
        let Some((off, fut)) = self.ahead.front_mut() else {
            return Poll::Ready(None);
        };
        let off = *off;
        let r = match fut.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        self.ahead.pop_front();
        if matches!(&r, Ok(b) if b.len() < self.chunk) {
            self.stop();
        }
        Poll::Ready(Some(r.map(|b| (off, b))))
    }
}
