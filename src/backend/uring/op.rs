//! How a request becomes a submission entry: the operation box whose address is the
//! entry's `user_data`, how the kernel is asked to run it ([`Mode`]), and the opcodes this
//! kernel has.

use super::*;

/// A request on its way through the ring. Aligned so that the low bits of its address
/// are free to tag it with its ring (see [`kernel_name`]).
#[repr(align(64))]
pub(super) struct UringOp {
    pub(super) req: Request,
    /// Bytes asked of the kernel in this attempt.
    pub(super) len: usize,
    pub(super) mode: Mode,
    /// Times the kernel cancelled it before it ran (see [`Ring::complete`]).
    pub(super) cancelled: u8,
    /// Where it stands in its `Own` ring's `taken` list, while the kernel has it there.
    pub(super) taken_at: usize,
}

impl UringOp {
    /// What is left of `req`, at most `MAX_IO` bytes of it.
    pub(super) fn new(req: Request, mode: Mode) -> UringOp {
        let len = match &req.kind {
            Kind::Read(buf) => (buf.capacity() - buf.len()).min(MAX_IO),
            Kind::Write(buf) => (buf.len() - req.written).min(MAX_IO),
            // The kernel caps a vectored transfer itself; a short one is resubmitted.
            Kind::ReadV(v) => v.bufs.iter().map(|b| b.capacity() - b.len()).sum(),
            Kind::WriteV(v) => v.bufs.iter().map(|b| b.len()).sum::<usize>() - req.written,
            _ => 0,
        };
        UringOp {
            req,
            len,
            mode,
            taken_at: 0,
            cancelled: 0,
        }
    }
}

/// How the kernel is asked to run an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// As it sees fit: O_DIRECT I/O (queued to the device) and syncs (its workers).
    Plain,
    /// `RWF_NOWAIT`: a buffered read the page cache can serve completes inside
    /// `io_uring_enter`; one that would block comes back EAGAIN and goes to `Worker`.
    NoWait,
    /// On the kernel's workers, never inline (`IOSQE_ASYNC`): buffered writes, page-cache
    /// misses and metadata, which some filesystems (FUSE, NFS) perform inline and slowly.
    Worker,
}

/// Which metadata opcodes this kernel has.
#[derive(Debug, Clone, Copy)]
pub(super) struct Opcodes {
    pub(super) close: bool,
    pub(super) rename: bool,
    pub(super) unlink: bool,
    pub(super) mkdir: bool,
    pub(super) fallocate: bool,
    pub(super) ftruncate: bool,
    pub(super) fadvise: bool,
    pub(super) sync_range: bool,
}

/// The submission entry for `op`.
pub(super) fn entry(op: &mut UringOp, ops: &Opcodes) -> squeue::Entry {
    let (len, nowait, req) = (op.len, op.mode == Mode::NoWait, &mut op.req);
    let fd = types::Fd(req.fd);
    // The caller's controls: RWF_* flags and the I/O priority of the transfer.
    let c = req.controls;
    let flags = if nowait { libc::RWF_NOWAIT } else { 0 } | sys::rw_flags(c.rw_flags());
    let prio = c.prio.unwrap_or(0);
    match &mut req.kind {
        Kind::Read(buf) => {
            let (ptr, _) = buf.spare_ptr();
            opcode::Read::new(fd, ptr, len as u32)
                .offset(req.offset + buf.len() as u64)
                .rw_flags(flags)
                .ioprio(prio)
                .build()
        }
        Kind::Write(buf) => {
            let rest = &buf[req.written..];
            opcode::Write::new(fd, rest.as_ptr(), len as u32)
                .offset(req.offset + req.written as u64)
                .rw_flags(flags)
                .ioprio(prio)
                .build()
        }
        Kind::ReadV(v) => {
            let done = v.filled();
            let (iov, _) = v.read_iov();
            opcode::Readv::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(req.offset + done as u64)
                .rw_flags(flags)
                .ioprio(prio)
                .build()
        }
        Kind::WriteV(v) => {
            let (iov, _) = v.write_iov(req.written);
            opcode::Writev::new(fd, iov.as_ptr(), iov.len() as u32)
                .offset(req.offset + req.written as u64)
                .rw_flags(flags)
                .ioprio(prio)
                .build()
        }
        Kind::Fsync => opcode::Fsync::new(fd).build(),
        Kind::Fdsync => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        Kind::Meta(m) => meta_entry(m, req.fd, ops).expect("routed to the ring"),
    }
}

/// `entry` with the op's flags.
pub(super) fn flagged(op: &mut UringOp, ops: &Opcodes) -> squeue::Entry {
    let mode = op.mode;
    let e = entry(op, ops);
    match mode {
        Mode::Worker => e.flags(squeue::Flags::ASYNC),
        Mode::Plain | Mode::NoWait => e,
    }
}

/// The entry of a metadata operation the ring runs natively, if it does.
pub(super) fn meta_entry(m: &Meta, fd: i32, ops: &Opcodes) -> Option<squeue::Entry> {
    let cwd = types::Fd(libc::AT_FDCWD);
    Some(match m {
        // The ring closes the number; `complete` then forgets the OwnedFd.
        Meta::Close(owned) if ops.close => opcode::Close::new(types::Fd(owned.as_raw_fd())).build(),
        Meta::Rename { from, to } if ops.rename => {
            opcode::RenameAt::new(cwd, from.as_ptr(), cwd, to.as_ptr()).build()
        }
        Meta::Unlink { path, dir } if ops.unlink => opcode::UnlinkAt::new(cwd, path.as_ptr())
            .flags(if *dir { libc::AT_REMOVEDIR } else { 0 })
            .build(),
        Meta::Mkdir { path, mode } if ops.mkdir => {
            opcode::MkDirAt::new(cwd, path.as_ptr()).mode(*mode).build()
        }
        Meta::Allocate { offset, len } if ops.fallocate => {
            opcode::Fallocate::new(types::Fd(fd), *len)
                .offset(*offset)
                .build()
        }
        Meta::Truncate(len) if ops.ftruncate => opcode::Ftruncate::new(types::Fd(fd), *len).build(),
        Meta::Advise {
            offset,
            len,
            advice,
        } if ops.fadvise && *len <= i64::MAX as u64 => {
            opcode::Fadvise::new(types::Fd(fd), *len as libc::off_t, *advice)
                .offset(*offset)
                .build()
        }
        // The ring's length is 32 bits; a longer range goes to the pool.
        Meta::SyncRange { offset, len, flags } if ops.sync_range && *len <= u64::from(u32::MAX) => {
            opcode::SyncFileRange::new(types::Fd(fd), *len as u32)
                .offset(*offset)
                .flags(*flags)
                .build()
        }
        _ => return None,
    })
}
