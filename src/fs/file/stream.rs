//! The reads and writes of a stream: what [`Reader`](crate::fs::Reader),
//! [`Writer`](crate::fs::Writer) and the cursor make, at an offset on a seekable file,
//! in sequence on a pipe, FIFO, terminal or device.

use super::*;

impl File {
    /// The next chunk of a stream: `nbytes` at `offset` for a seekable file, else the next
    /// `nbytes` in sequence (`read(2)` until that many or the end, through the backend).
    /// Short only at the end.
    pub(crate) async fn read_chunk(&self, nbytes: usize, offset: u64) -> io::Result<Buffer> {
        self.check_access(false)?;
        if self.is_seekable() {
            return self.read_at_now(nbytes, offset).await;
        }
        self.with_std(move |f| {
            use std::io::Read;
            let mut out = Vec::with_capacity(nbytes.min(16 << 20));
            f.take(nbytes as u64).read_to_end(&mut out)?;
            Ok(Buffer::from(out))
        })
        .await
    }

    /// One read for the cursor: up to `nbytes` at `offset` on a seekable file (short only
    /// at the end), else one `read(2)` in sequence, which returns what is there (a pipe's
    /// or a terminal's) rather than waiting for all of `nbytes`.
    pub(crate) async fn read_once(&self, nbytes: usize, offset: u64) -> io::Result<Buffer> {
        if self.is_seekable() {
            return self.read_at_now(nbytes, offset).await;
        }
        self.with_std(move |mut f| {
            use std::io::Read;
            let mut out = Buffer::try_zeroed(nbytes)?;
            let n = loop {
                match f.read(&mut out) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            out.truncate(n);
            Ok(out)
        })
        .await
    }

    /// Writes all of `data` as the next part of a stream: at `offset` for a seekable file,
    /// else in sequence (`write(2)` through the backend). Gives the buffer back.
    pub(crate) async fn write_chunk(&self, data: Buffer, offset: u64) -> io::Result<Buffer> {
        self.check_access(true)?;
        if self.is_seekable() {
            return self.write_all_now(data, offset).await;
        }
        self.with_std(move |mut f| {
            use std::io::Write;
            f.write_all(&data)?;
            Ok(data)
        })
        .await
    }

    /// Writes all of `data`, giving the buffer back (the writer reuses it).
    pub(crate) async fn write_all_now(
        &self,
        mut data: Buffer,
        mut offset: u64,
    ) -> io::Result<Buffer> {
        let mut done = 0;
        loop {
            if done == data.len() {
                return Ok(data);
            }
            let rest = if done == 0 {
                data
            } else {
                Buffer::from(&data[done..])
            };
            let (n, back) = self.write_once(rest, offset).await;
            let n = n?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("wrote 0 of {} bytes", back.len()),
                ));
            }
            offset += n as u64;
            data = back;
            done = n;
        }
    }
}
