//! The cursor of a [`File`]: `AsyncRead`, `AsyncWrite` and `AsyncSeek` (futures' always,
//! tokio's with the `tokio` feature) with `tokio::fs::File`'s semantics.
//!
//! - A read asks the OS for as much as the caller's buffer holds, at most `max_buf_size`
//!   (what a read finished for a caller that went away waits for the next one).
//! - A write is accepted into a buffer of the cursor's (at most `max_buf_size` bytes of it)
//!   and finished in the background: `poll_write` returns at once, and the write's error,
//!   if any, comes from the next write, `flush`, `sync_all`, `sync_data`, `set_len` or
//!   `close`.
//! - One operation at a time: a read, write or seek waits for the one before it.
//! - A `File` dropped with a write pending finishes it in the background (see
//!   [`finish`](crate::fs::finish)).
//!
//! The cursor is shared by the clones of a `File`, as the offset of a descriptor is shared
//! by its duplicates, and used by none of the positional calls.

use std::{
    future::Future,
    io::{self, SeekFrom},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll, Wake, Waker},
};

use super::File;
use crate::{fs::reader::seek_target, sync::lock, Buffer};

/// The largest read or write a cursor operation makes, unless `set_max_buf_size` says
/// otherwise: tokio's default.
pub const DEFAULT_MAX_BUF_SIZE: usize = 2 * 1024 * 1024;

type OpFuture = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What an operation of the cursor came back with.
enum Done {
    Read(io::Result<Buffer>),
    /// A write, with its buffer for the next one, and in append mode the end of the file
    /// just after it (where the cursor is then, as an append-mode descriptor's offset).
    Write(io::Result<Buffer>, Option<u64>),
    /// The file's length, for a seek from the end, or the position after an append.
    Len(io::Result<u64>),
}

/// A cursor's state; see the module docs.
pub(crate) struct Cursor {
    /// Where the next byte is read or written; `None` in append mode once a write went
    /// (the end of the file, wherever that is by then).
    pos: Option<u64>,
    /// What a read got beyond what its caller took: `ahead[taken..]`, from `pos` on.
    ahead: Buffer,
    taken: usize,
    /// The last read found the end of the file (for the read that waits on it).
    eof: bool,
    /// The operation under way, and whether it is a write.
    op: Option<(OpFuture, bool)>,
    /// The buffer of the last write, for the next.
    spare: Option<Buffer>,
    write_error: Option<io::Error>,
    read_error: Option<io::Error>,
    len: Option<io::Result<u64>>,
    /// A seek started by tokio's `start_seek`, finished by `poll_complete`.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    seek: Option<SeekFrom>,
    max_buf: usize,
    /// Everyone waiting for the operation: a task reading or writing, and `sync_all`'s.
    waiting: Arc<Waiting>,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("pos", &self.pos)
            .field("buffered", &(self.ahead.len() - self.taken))
            .field("busy", &self.op.is_some())
            .finish()
    }
}

/// The wakers of every task waiting for a cursor's operation: the operation's future is
/// polled by whichever of them comes, with a waker that wakes them all.
#[derive(Default)]
struct Waiting(Mutex<Vec<Waker>>);

impl Waiting {
    fn add(&self, w: &Waker) {
        let mut all = lock(&self.0);
        if !all.iter().any(|x| x.will_wake(w)) {
            all.push(w.clone());
        }
    }

    fn wake_all(&self) {
        let all = std::mem::take(&mut *lock(&self.0));
        all.into_iter().for_each(Waker::wake);
    }

    /// Wakes every waiting task but `me`, which is running and sees the result itself.
    fn wake_others(&self, me: &Waker) {
        let all = std::mem::take(&mut *lock(&self.0));
        all.into_iter()
            .filter(|w| !w.will_wake(me))
            .for_each(Waker::wake);
    }
}

impl Wake for Waiting {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

impl Cursor {
    pub(crate) fn new(pos: Option<u64>) -> Cursor {
        Cursor {
            pos,
            ahead: Buffer::new(),
            taken: 0,
            eof: false,
            op: None,
            spare: None,
            write_error: None,
            read_error: None,
            len: None,
            seek: None,
            max_buf: DEFAULT_MAX_BUF_SIZE,
            waiting: Arc::default(),
        }
    }

    pub(crate) fn max_buf(&self) -> usize {
        self.max_buf
    }

    pub(crate) fn set_max_buf(&mut self, n: usize) {
        self.max_buf = n.max(1);
    }

    /// The position, where known without asking the OS.
    pub(crate) fn position(&self) -> Option<u64> {
        self.pos
    }

    /// Whether an operation is under way.
    pub(crate) fn busy(&self) -> bool {
        self.op.is_some()
    }

    /// Waits for the operation under way, if any, and keeps what it came back with.
    fn poll_op(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Some((op, _)) = self.op.as_mut() else {
            return Poll::Ready(());
        };
        self.waiting.add(cx.waker());
        let waker = Waker::from(Arc::clone(&self.waiting));
        let done = match op.as_mut().poll(&mut TaskContext::from_waker(&waker)) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(d) => d,
        };
        self.op = None;
        // The others waiting see it done when they look.
        self.waiting.wake_others(cx.waker());
        match done {
            Done::Read(Ok(b)) => {
                self.eof = b.is_empty();
                self.ahead = b;
                self.taken = 0;
            }
            Done::Read(Err(e)) => self.read_error = Some(e),
            Done::Write(r, end) => {
                if end.is_some() {
                    self.pos = end;
                }
                match r {
                    Ok(b) => self.spare = Some(b),
                    Err(e) => {
                        self.write_error.get_or_insert(e);
                    }
                }
            }
            Done::Len(r) => self.len = Some(r),
        }
        Poll::Ready(())
    }

    /// Waits for the operation under way; the error of a write that finished in the
    /// background, if any.
    pub(crate) fn poll_idle(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_op(cx));
        Poll::Ready(self.write_error.take().map_or(Ok(()), Err))
    }

    /// Forgets what was read ahead (the file changed under it: a write, a truncate).
    pub(crate) fn drop_ahead(&mut self) {
        self.ahead.clear();
        self.taken = 0;
        self.eof = false;
        // A length learnt before is no longer to be trusted either.
        self.len = None;
    }

    /// The position, learning it first in append mode after a write.
    fn poll_pos(&mut self, cx: &mut TaskContext<'_>, file: &File) -> Poll<io::Result<u64>> {
        loop {
            if let Some(p) = self.pos {
                return Poll::Ready(Ok(p));
            }
            std::task::ready!(self.poll_op(cx));
            if let Some(r) = self.len.take() {
                let len = r?;
                self.pos = Some(len);
                continue;
            }
            let f = file.detached();
            self.op = Some((Box::pin(async move { Done::Len(f.len().await) }), false));
        }
    }

    /// Reads up to `want` bytes, handing them to `put` (once, with at most `want`).
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut TaskContext<'_>,
        file: &File,
        want: usize,
        put: impl FnOnce(&[u8]),
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.poll_op(cx));
            if let Some(e) = self.read_error.take() {
                return Poll::Ready(Err(e));
            }
            if want == 0 {
                return Poll::Ready(Ok(0));
            }
            let unread = &self.ahead[self.taken..];
            if !unread.is_empty() {
                let n = unread.len().min(want);
                put(&unread[..n]);
                self.taken += n;
                if let Some(p) = &mut self.pos {
                    *p += n as u64;
                }
                return Poll::Ready(Ok(n));
            }
            if std::mem::take(&mut self.eof) {
                return Poll::Ready(Ok(0));
            }
            file.check_access(false)?;
            let pos = std::task::ready!(self.poll_pos(cx, file))?;
            self.drop_ahead();
            let n = want.min(self.max_buf);
            let f = file.detached();
            let read = async move { Done::Read(f.read_once(n, pos).await) };
            self.op = Some((Box::pin(read), false));
        }
    }

    pub(crate) fn poll_write(
        &mut self,
        cx: &mut TaskContext<'_>,
        file: &File,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_idle(cx))?;
        if src.is_empty() {
            return Poll::Ready(Ok(0));
        }
        file.check_access(true)?;
        // What was read ahead is not what the file holds any more.
        self.drop_ahead();
        let n = src.len().min(self.max_buf);
        let mut buf = match self.spare.take() {
            Some(mut b) if b.capacity() >= n => {
                b.clear();
                b
            }
            _ => Buffer::with_capacity_aligned(n)?,
        };
        buf.extend_from_slice(&src[..n]);
        let f = file.detached();
        let at = self.pos.unwrap_or(0);
        // In append mode the OS writes at the end, wherever the cursor is; the cursor is
        // then where the write ended, which the write learns (unknown until then).
        let append = file.is_append();
        self.pos = if append { None } else { Some(at + n as u64) };
        // Context::wait_idle waits for the write, between its steps too.
        let hold = f.context().hold();
        self.op = Some((
            Box::pin(async move {
                let _hold = hold;
                let r = f.write_chunk(buf, at).await;
                let end = match (&r, append) {
                    (Ok(_), true) => f.len().await.ok(),
                    _ => None,
                };
                Done::Write(r, end)
            }),
            true,
        ));
        // Started now: on a kernel backend, the write is with the kernel when this
        // returns (the task that accepted it may never poll the cursor again).
        let _ = self.poll_op(cx);
        Poll::Ready(Ok(n))
    }

    /// Moves the cursor; waits for the operation under way first.
    pub(crate) fn poll_seek(
        &mut self,
        cx: &mut TaskContext<'_>,
        file: &File,
        to: SeekFrom,
    ) -> Poll<io::Result<u64>> {
        loop {
            std::task::ready!(self.poll_op(cx));
            if !file.is_seekable() {
                return Poll::Ready(Err(file.cannot_seek()));
            }
            let needs_len = matches!(to, SeekFrom::End(_))
                || (self.pos.is_none() && matches!(to, SeekFrom::Current(_)));
            let len = if needs_len {
                match self.len.take() {
                    Some(r) => Some(r?),
                    None => {
                        let f = file.detached();
                        self.op = Some((Box::pin(async move { Done::Len(f.len().await) }), false));
                        continue;
                    }
                }
            } else {
                None
            };
            let current = self.pos.or(len).unwrap_or(0);
            let target = seek_target(current, to, len)?;
            // What was read and not taken goes, as tokio's does: the next read starts at
            // the target, and returns as much as it asks for.
            self.drop_ahead();
            self.pos = Some(target);
            return Poll::Ready(Ok(target));
        }
    }

    /// tokio's `start_seek`: keeps the target for `poll_complete`.
    #[cfg(feature = "tokio")]
    pub(crate) fn start_seek(&mut self, to: SeekFrom) -> io::Result<()> {
        if self.seek.is_some() || self.op.is_some() {
            return Err(io::Error::other(
                "other file operation is pending, call poll_complete before start_seek",
            ));
        }
        self.seek = Some(to);
        Ok(())
    }

    /// tokio's `poll_complete`: the seek `start_seek` kept, or the position.
    #[cfg(feature = "tokio")]
    pub(crate) fn poll_complete(
        &mut self,
        cx: &mut TaskContext<'_>,
        file: &File,
    ) -> Poll<io::Result<u64>> {
        let Some(to) = self.seek else {
            // No seek started: where the cursor is, as tokio's (no seek of the OS's).
            return self.poll_position(cx, file);
        };
        let r = std::task::ready!(self.poll_seek(cx, file, to));
        self.seek = None;
        Poll::Ready(r)
    }

    /// The position once nothing is under way (for `into_std`, and tokio's
    /// `poll_complete` with no seek started).
    pub(crate) fn poll_position(
        &mut self,
        cx: &mut TaskContext<'_>,
        file: &File,
    ) -> Poll<io::Result<u64>> {
        std::task::ready!(self.poll_op(cx));
        self.poll_pos(cx, file)
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        // A write accepted and not finished is finished in the background, as tokio's
        // File does; a read nobody will take is dropped (its memory stays the kernel's
        // until it is done).
        if let Some(e) = self.write_error.take() {
            log::error!("caio: a write of a File dropped before its error was seen failed: {e}");
        }
        if let Some((op, true)) = self.op.take() {
            crate::fs::finish::finish("a write of a dropped File", async move {
                match op.await {
                    Done::Write(Err(e), _) => Err(e),
                    _ => Ok(()),
                }
            });
        }
    }
}

/// Runs `f` on the cursor of `file`: a file without one (made for an operation of a
/// cursor) gets `Unsupported`.
#[cfg(feature = "tokio")]
pub(crate) fn with<T>(file: &File, f: impl FnOnce(&mut Cursor) -> io::Result<T>) -> io::Result<T> {
    match &file.cursor {
        Some(c) => f(&mut lock(c)),
        None => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "caio: this File has no cursor",
        )),
    }
}

/// As [`with`], for a poll.
pub(crate) fn poll_with<T>(
    file: &File,
    cx: &mut TaskContext<'_>,
    f: impl FnOnce(&mut Cursor, &mut TaskContext<'_>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match &file.cursor {
        Some(c) => poll_locked(c, cx, f),
        None => Poll::Ready(Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "caio: this File has no cursor",
        ))),
    }
}

/// Runs `f` on the cursor if it is free now; else polls again soon. Never waits for the
/// lock: its holder may be this very thread, polling the cursor's operation, whose wake
/// (an executor that polls inside `wake`) brought it here; and another thread holds it
/// only for the length of a poll.
fn poll_locked<T>(
    c: &Mutex<Cursor>,
    cx: &mut TaskContext<'_>,
    f: impl FnOnce(&mut Cursor, &mut TaskContext<'_>) -> Poll<T>,
) -> Poll<T> {
    match c.try_lock() {
        Ok(mut g) => f(&mut g, cx),
        Err(std::sync::TryLockError::Poisoned(p)) => f(&mut p.into_inner(), cx),
        Err(std::sync::TryLockError::WouldBlock) => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Waits until the cursor of `file` has nothing under way; the error of a write that
/// finished in the background, if any. For `sync_all`, `sync_data`, `set_len` and `close`.
pub(crate) async fn settle(cursor: Option<Arc<Mutex<Cursor>>>) -> io::Result<()> {
    let Some(c) = cursor else { return Ok(()) };
    futures::future::poll_fn(|cx| {
        poll_locked(&c, cx, |c, cx| {
            let r = std::task::ready!(c.poll_idle(cx));
            c.drop_ahead();
            Poll::Ready(r)
        })
    })
    .await
}

impl futures::io::AsyncRead for File {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let file = &*self;
        poll_with(file, cx, |c, cx| {
            c.poll_read(cx, file, buf.len(), |data| {
                buf[..data.len()].copy_from_slice(data)
            })
        })
    }
}

impl futures::io::AsyncWrite for File {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let file = &*self;
        poll_with(file, cx, |c, cx| c.poll_write(cx, file, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        poll_with(&self, cx, |c, cx| c.poll_idle(cx))
    }

    /// As `poll_flush`: the descriptor stays open until the `File` is dropped or closed.
    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl futures::io::AsyncSeek for File {
    fn poll_seek(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        to: SeekFrom,
    ) -> Poll<io::Result<u64>> {
        let file = &*self;
        poll_with(file, cx, |c, cx| c.poll_seek(cx, file, to))
    }
}
