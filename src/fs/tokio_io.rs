//! tokio's own I/O traits on [`Reader`] and [`Writer`] (feature `tokio`), beside the
//! `futures::io` ones, so `tokio::io::copy`, `tokio::io::BufReader`, `AsyncBufReadExt::lines`
//! and the rest take them without `tokio_util::compat`. [`Lines`](crate::fs::Lines) and
//! [`Chunks`](crate::fs::Chunks) are `futures::Stream`s, the trait `tokio_stream` uses.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use tokio::io::AsyncBufReadExt;
//! let src = caio::File::open("app.log").await?;
//! let dst = caio::File::create("app.log.bak").await?;
//! let (mut r, mut w) = (src.reader(), dst.writer());
//! let n = tokio::io::copy(&mut r, &mut w).await?;
//! tokio::io::AsyncWriteExt::shutdown(&mut w).await?; // writes everything, reports errors
//! let mut lines = caio::File::open("app.log.bak").await?.reader().lines();
//! while let Some(line) = lines.next_line().await? {
//!     println!("{line}");
//! }
//! # let _ = n; Ok(()) }
//! ```

use std::{
    io::{self, SeekFrom},
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures::io::{AsyncBufRead as _, AsyncSeek as _, AsyncWrite as _};
use tokio::io::ReadBuf;

use crate::fs::{Reader, Writer};

fn busy() -> io::Error {
    io::Error::other("caio: a seek is already under way; call poll_complete before start_seek")
}

impl tokio::io::AsyncRead for Reader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Copied straight from the read-ahead buffer: no zeroing of `buf`.
        let data = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        futures::io::AsyncBufRead::consume(self, n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncBufRead for Reader {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        futures::io::AsyncBufRead::poll_fill_buf(self, cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        futures::io::AsyncBufRead::consume(self, amt)
    }
}

/// tokio's two-step seek over the one-step `futures::io` seek: `start_seek` records the
/// target, `poll_complete` runs it (or reports the position when none was started).
macro_rules! tokio_seek {
    ($t:ty) => {
        impl tokio::io::AsyncSeek for $t {
            fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
                let this = self.get_mut();
                if this.tokio_seek.is_some() {
                    return Err(busy());
                }
                this.tokio_seek = Some(position);
                Ok(())
            }

            fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
                let this = self.get_mut();
                let Some(to) = this.tokio_seek else {
                    return Poll::Ready(Ok(this.position()));
                };
                let r = ready!(Pin::new(&mut *this).poll_seek(cx, to));
                this.tokio_seek = None;
                Poll::Ready(r)
            }
        }
    };
}

tokio_seek!(Reader);

/// tokio's `AsyncWrite` over the `futures::io` one, whose `close` is tokio's `shutdown`:
/// the writer's writes everything and reports any error; the file's is its flush, as on
/// tokio's `File`.
macro_rules! tokio_write {
    ($t:ty) => {
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                data: &[u8],
            ) -> Poll<io::Result<usize>> {
                futures::io::AsyncWrite::poll_write(self, cx, data)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                futures::io::AsyncWrite::poll_flush(self, cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.poll_close(cx)
            }
        }
    };
}

tokio_write!(Writer);
tokio_seek!(Writer);

impl tokio::io::AsyncRead for crate::File {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let file = &*self;
        let want = buf.remaining();
        crate::fs::file::cursor::poll_with(file, cx, |c, cx| {
            c.poll_read(cx, file, want, |data| buf.put_slice(data))
        })
        .map_ok(drop)
    }
}

tokio_write!(crate::File);

impl tokio::io::AsyncSeek for crate::File {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        crate::fs::file::cursor::with(&self, |c| c.start_seek(position))
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let file = &*self;
        crate::fs::file::cursor::poll_with(file, cx, |c, cx| c.poll_complete(cx, file))
    }
}
