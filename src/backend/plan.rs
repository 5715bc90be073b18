//! How an operation becomes a [`Request`]: its [`Plan`] (the descriptor, the offset and
//! [`What`] it does), built once it has a permit; on an O_DIRECT file, unaligned memory
//! goes through aligned copies here.

use crate::sys::fd::RawFd;
use std::{io, sync::Arc};

#[cfg(target_os = "linux")]
use super::Class;
use super::{request::Vectored, Bufs, Completer, Controls, Kind, Meta, Out, Request};
use crate::{
    buffer::{Buffer, ALIGNMENT},
    sys,
};

/// What an operation will do, before it has a permit.
pub(crate) struct Plan {
    pub fd: RawFd,
    pub offset: u64,
    pub what: What,
    pub file: Option<FdInfo>,
    /// The caller's per-operation controls (priority, flags).
    pub controls: Controls,
}

pub(crate) enum What {
    /// Read into a new buffer of this many bytes.
    Read(usize),
    /// Read into the caller's buffer, up to its capacity.
    ReadInto(Buffer),
    Write(Buffer),
    /// Read into the caller's buffers, up to their capacity, in order.
    ReadV(Vec<Buffer>),
    WriteV(Vec<Buffer>),
    Fsync,
    Fdsync,
    Meta(Meta),
}

impl What {
    /// The caller's buffers in it, to give back when it cannot start.
    pub(crate) fn into_bufs(self) -> Bufs {
        match self {
            What::ReadInto(b) | What::Write(b) => Bufs::One(b),
            What::ReadV(v) | What::WriteV(v) => Bufs::Many(v),
            _ => Bufs::None,
        }
    }

    /// Bytes it moves at most.
    pub(crate) fn len(&self) -> usize {
        let sum = |v: &[Buffer], f: fn(&Buffer) -> usize| {
            v.iter().fold(0usize, |a, b| a.saturating_add(f(b)))
        };
        match self {
            What::Read(n) => *n,
            What::ReadInto(b) => b.capacity(),
            What::Write(b) => b.len(),
            What::ReadV(v) => sum(v, Buffer::capacity),
            What::WriteV(v) => sum(v, |b| b.len()),
            _ => 0,
        }
    }
}

/// What is known of a descriptor, as far as running operations on it cares: from the file
/// layer, which learnt it once at open, or else from the kernel, per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Facts {
    /// A regular file or block device: positional I/O makes sense, and kernel AIO may
    /// take it (it would consume a pipe's or a socket's data, ignoring the offset).
    pub seekable: bool,
    /// Opened with O_DIRECT.
    pub direct: bool,
    /// A regular file in memory (tmpfs, ramfs) without O_DIRECT: a read of it never
    /// waits for a device, so backends read it on the submitting thread. Only the file
    /// layer knows it (the kernel is not asked per request).
    pub memory: bool,
}

impl Facts {
    #[cfg(target_os = "linux")]
    /// The facts of `req`'s descriptor: the file layer's, or for a raw descriptor one
    /// `fstat` (cached) and, when seekable, one `fcntl`. Syncs and metadata operations
    /// need none: any descriptor can be synced, and metadata goes where it goes whatever
    /// the descriptor.
    pub(crate) fn of(req: &Request) -> io::Result<Facts> {
        if let Some(f) = &req.file {
            return Ok(f.facts);
        }
        if matches!(req.kind.class(), Class::Sync | Class::Meta) {
            return Ok(Facts {
                seekable: true,
                direct: false,
                memory: false,
            });
        }
        let t = sys::cached_file_type(req.fd)?;
        let seekable = t == libc::S_IFREG || t == libc::S_IFBLK;
        Ok(Facts {
            seekable,
            direct: seekable && sys::is_direct(req.fd)?,
            memory: false,
        })
    }
}

/// Whether `fd` is O_DIRECT: as the file layer knows it, else one `fcntl` (false when
/// that fails: the request then fails on its own).
pub(crate) fn is_direct(file: Option<&FdInfo>, fd: RawFd) -> bool {
    match file {
        Some(f) => f.facts.direct,
        None => sys::is_direct(fd).unwrap_or(false),
    }
}

/// What the file layer knows about its descriptor, and the owner that keeps it open until
/// every request on it is finished.
#[derive(Clone)]
pub(crate) struct FdInfo {
    pub _owner: Arc<dyn std::any::Any + Send + Sync>,
    pub facts: Facts,
}

impl Plan {
    /// Builds the request once a permit is held: allocates the read buffer (only now, so
    /// waiting operations cost no memory), and for O_DIRECT puts unaligned memory on an
    /// aligned copy (`Request::keep` holds the caller's buffers meanwhile).
    pub(crate) fn build(self, done: Completer) -> Result<Request, (io::Error, Completer, Bufs)> {
        let Plan {
            fd,
            offset,
            what,
            file,
            controls,
        } = self;
        let direct = || is_direct(file.as_ref(), fd);
        let unaligned = |v: &[Buffer]| v.iter().any(|b| !b.is_aligned_to(ALIGNMENT));
        let mut keep = Bufs::None;
        let kind = match what {
            What::Read(nbytes) => match Buffer::with_capacity_aligned(nbytes) {
                Ok(b) => Kind::Read(b),
                Err(e) => return Err((e, done, Bufs::None)),
            },
            What::ReadInto(mut buf) => {
                buf.clear();
                if !buf.is_aligned_to(ALIGNMENT) && direct() {
                    match Buffer::with_capacity_aligned(buf.capacity()) {
                        Ok(tmp) => {
                            keep = Bufs::One(buf);
                            Kind::Read(tmp)
                        }
                        Err(e) => return Err((e, done, Bufs::One(buf))),
                    }
                } else {
                    Kind::Read(buf)
                }
            }
            What::Write(buf) => {
                if !buf.is_aligned_to(ALIGNMENT) && direct() {
                    let copy = Buffer::from(&buf[..]);
                    keep = Bufs::One(buf);
                    Kind::Write(copy)
                } else {
                    Kind::Write(buf)
                }
            }
            What::ReadV(mut bufs) => {
                bufs.iter_mut().for_each(Buffer::clear);
                if unaligned(&bufs) && direct() {
                    let total = bufs.iter().map(Buffer::capacity).sum();
                    match Buffer::with_capacity_aligned(total) {
                        Ok(tmp) => {
                            keep = Bufs::Many(bufs);
                            Kind::Read(tmp)
                        }
                        Err(e) => return Err((e, done, Bufs::Many(bufs))),
                    }
                } else {
                    Kind::ReadV(Vectored::new(bufs))
                }
            }
            What::WriteV(bufs) => {
                if unaligned(&bufs) && direct() {
                    let total = bufs.iter().map(|b| b.len()).sum();
                    match Buffer::with_capacity_aligned(total) {
                        Ok(mut all) => {
                            bufs.iter().for_each(|b| {
                                all.extend_from_slice(b);
                            });
                            keep = Bufs::Many(bufs);
                            Kind::Write(all)
                        }
                        Err(e) => return Err((e, done, Bufs::Many(bufs))),
                    }
                } else {
                    Kind::WriteV(Vectored::new(bufs))
                }
            }
            What::Fsync => Kind::Fsync,
            What::Fdsync => Kind::Fdsync,
            What::Meta(m) => Kind::Meta(m),
        };
        // What each kind takes: a write every control, a read all but dsync and append,
        // a sync (which always waits for the device) only its priority.
        let controls = match kind {
            Kind::Write(_) | Kind::WriteV(_) => controls,
            Kind::Read(_) | Kind::ReadV(_) => Controls {
                dsync: false,
                append: false,
                ..controls
            },
            _ => Controls {
                prio: controls.prio,
                ..Controls::default()
            },
        };
        Ok(Request {
            fd,
            offset,
            kind,
            done,
            written: 0,
            file,
            out: Out::Nothing,
            keep,
            controls,
        })
    }
}
