//! O_DIRECT at any offset: an unaligned read reads the aligned blocks around it; an
//! unaligned write goes in up to three parts, its unaligned head and tail through a
//! second, buffered descriptor (the twin).

use super::*;
#[cfg(unix)]
use crate::sys::c;

impl File {
    pub(super) async fn read_at_now(&self, nbytes: usize, offset: u64) -> io::Result<Buffer> {
        let i = &self.inner;
        match i.known.align {
            Some(a) if !a.allows(offset, nbytes) => {
                let unit = a.offset as u64;
                let start = offset - offset % unit;
                let end = offset
                    .checked_add(nbytes as u64)
                    .and_then(|e| e.checked_next_multiple_of(unit))
                    .filter(|e| e - start <= isize::MAX as u64)
                    .ok_or_else(|| {
                        invalid(format!("a read of {nbytes} bytes at {offset} is too large"))
                    })?;
                let block = i
                    .ctx
                    .read_file((end - start) as usize, i.fd, start, &i.info)
                    .with_controls(self.controls, None)
                    .joined(self.abort.as_ref())
                    .await?;
                let skip = ((offset - start) as usize).min(block.len());
                let take = (block.len() - skip).min(nbytes);
                Ok(Buffer::from(&block[skip..skip + take]))
            }
            _ => {
                i.ctx
                    .read_file(nbytes, i.fd, offset, &i.info)
                    .with_controls(self.controls, None)
                    .joined(self.abort.as_ref())
                    .await
            }
        }
    }

    /// One pass: a single write, or for an unaligned direct write up to three (buffered
    /// head, direct middle, buffered tail), stopping at the first short one.
    /// Gives the buffer back, on an error too.
    pub(super) fn write_once(
        &self,
        data: Buffer,
        offset: u64,
    ) -> impl Future<Output = (io::Result<usize>, Buffer)> + Send + 'static {
        let i = &self.inner;
        match i.known.align {
            Some(a) if !a.allows(offset, data.len()) && !i.known.append => {
                let f = self.clone();
                Either::Right(Box::pin(async move {
                    let r = f.write_split(&data, offset, a).await;
                    (r, data)
                }))
            }
            _ => Either::Left(
                i.ctx
                    .owned_file(What::Write(data), i.fd, offset, &i.info)
                    .with_controls(self.controls, None)
                    .joined(self.abort.as_ref()),
            ),
        }
    }

    /// An unaligned write on an O_DIRECT file: split on page boundaries (at least), so
    /// the buffered and the direct parts never share a page of the page cache.
    pub(super) async fn write_split(
        &self,
        data: &Buffer,
        offset: u64,
        a: DirectAlignment,
    ) -> io::Result<usize> {
        let i = &self.inner;
        let unit = (a.offset as u64).max(4096);
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            invalid(format!(
                "a write of {} bytes at {offset} ends past the largest offset",
                data.len()
            ))
        })?;
        let mid_start = offset.next_multiple_of(unit).min(end);
        let mid_end = (end - end % unit).max(mid_start);
        let twin = self.twin().await?;
        let mut written = 0usize;
        for (start, stop, direct) in [
            (offset, mid_start, false),
            (mid_start, mid_end, true),
            (mid_end, end, false),
        ] {
            if start == stop {
                continue;
            }
            let part = Buffer::from(&data[(start - offset) as usize..(stop - offset) as usize]);
            let want = part.len();
            let (fd, info) = if direct {
                (i.fd, &i.info)
            } else {
                (twin.fd, &twin.info)
            };
            let op = i.ctx.owned_file(What::Write(part), fd, start, info);
            let n = match op
                .with_controls(self.controls, None)
                .joined(self.abort.as_ref())
                .await
                .0
            {
                Ok(n) => n,
                // As std's write: once bytes are in the file, the count is the answer,
                // and the error comes with the next write, where it writes nothing.
                Err(_) if written > 0 => break,
                Err(e) => return Err(e),
            };
            written += n;
            if n < want {
                break;
            }
        }
        Ok(written)
    }

    /// The buffered twin, opened (through the backend) on first use.
    pub(super) async fn twin(&self) -> io::Result<&Twin> {
        let i = &self.inner;
        if let Some(t) = i.twin.get() {
            return Ok(t);
        }
        if !i.known.writable {
            return Err(io::Error::from_raw_os_error(crate::sys::WRONG_ACCESS));
        }
        #[cfg(unix)]
        let fd = {
            let open = Meta::Open {
                path: crate::sys::os_path(Path::new(&format!("/proc/self/fd/{}", i.fd)))?,
                flags: c::O_WRONLY,
                mode: 0,
                direct: false,
            };
            i.ctx.meta(-1, open, Some(&i.info), opened).await?.fd
        };
        // The same file, not a path that may lead elsewhere by now: `ReOpenFile`.
        #[cfg(windows)]
        let fd = {
            let raw = i.fd;
            i.ctx
                .run(Some(&i.info), move || crate::sys::reopen_buffered(raw))
                .await?
        };
        let raw = fd.as_raw_fd();
        let owner = FdOwner::new(fd, i.ctx.clone());
        let twin = Twin {
            fd: raw,
            info: FdInfo {
                _owner: Arc::clone(&owner) as Arc<dyn std::any::Any + Send + Sync>,
                facts: Facts {
                    seekable: true,
                    direct: false,
                    memory: false,
                },
            },
            owner,
        };
        // Another write may have opened one meanwhile: keep the first (ours is closed).
        let _ = i.twin.set(twin);
        Ok(i.twin.get().expect("set just above"))
    }
}
