//! How a request becomes a kernel AIO command: the iocb, and the request that owns the
//! memory it points into.

use super::*;

/// A request on its way through the kernel: the iocb the kernel reads and the request
/// that owns the memory it points into.
pub(super) struct AioOp {
    pub(super) iocb: Iocb,
    pub(super) req: Request,
    /// Submitted with RWF_NOWAIT: EAGAIN/EOPNOTSUPP mean "run it elsewhere".
    pub(super) nowait: bool,
    /// Bytes asked of the kernel in this attempt.
    pub(super) len: usize,
}

impl AioOp {
    pub(super) fn new(mut req: Request, nowait: bool) -> AioOp {
        let c = req.controls;
        let mut iocb = Iocb {
            aio_fildes: req.fd as u32,
            aio_rw_flags: if nowait { libc::RWF_NOWAIT } else { 0 } | sys::rw_flags(c.rw_flags()),
            ..Iocb::default()
        };
        if let Some(prio) = c.prio {
            iocb.aio_reqprio = prio as i16;
            iocb.aio_flags |= sys::IOCB_FLAG_IOPRIO;
        }
        let mut len = 0;
        match &mut req.kind {
            Kind::Read(buf) => {
                let (ptr, room) = buf.spare_ptr();
                iocb.aio_lio_opcode = sys::IOCB_CMD_PREAD;
                iocb.aio_buf = ptr as u64;
                iocb.aio_offset = (req.offset + buf.len() as u64) as i64;
                len = room;
            }
            Kind::Write(buf) => {
                let rest = &buf[req.written..];
                iocb.aio_lio_opcode = sys::IOCB_CMD_PWRITE;
                iocb.aio_buf = rest.as_ptr() as u64;
                iocb.aio_offset = (req.offset + req.written as u64) as i64;
                len = rest.len();
            }
            Kind::ReadV(v) => {
                let done = v.filled();
                let (iov, room) = v.read_iov();
                iocb.aio_lio_opcode = sys::IOCB_CMD_PREADV;
                iocb.aio_buf = iov.as_ptr() as u64;
                iocb.aio_offset = (req.offset + done as u64) as i64;
                iocb.aio_nbytes = iov.len() as u64;
                len = room;
            }
            Kind::WriteV(v) => {
                let (iov, rest) = v.write_iov(req.written);
                iocb.aio_lio_opcode = sys::IOCB_CMD_PWRITEV;
                iocb.aio_buf = iov.as_ptr() as u64;
                iocb.aio_offset = (req.offset + req.written as u64) as i64;
                iocb.aio_nbytes = iov.len() as u64;
                len = rest;
            }
            Kind::Fsync => iocb.aio_lio_opcode = sys::IOCB_CMD_FSYNC,
            Kind::Fdsync => iocb.aio_lio_opcode = sys::IOCB_CMD_FDSYNC,
            Kind::Meta(_) => unreachable!("metadata operations are routed to the pool"),
        }
        if !matches!(req.kind, Kind::ReadV(_) | Kind::WriteV(_)) {
            // A vectored command's count is of iovecs, set above.
            iocb.aio_nbytes = len as u64;
        }
        AioOp {
            iocb,
            req,
            nowait,
            len,
        }
    }
}
