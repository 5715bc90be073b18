//! Where each request runs, decided in one place: a pure function of what it is
//! ([`Class`]) and what its descriptor is ([`Facts`]), with a table test.

use super::*;

/// Where a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Kernel AIO as it is: O_DIRECT reads the file layer knows, and syncs
    /// (`IOCB_CMD_FSYNC`/`FDSYNC` run on the kernel's workqueue).
    Kernel,
    /// Kernel AIO with `RWF_NOWAIT`: O_DIRECT writes (block allocation would block inside
    /// `io_submit`; what would block comes back EAGAIN and is routed by
    /// [`route_would_block`]).
    KernelNowait,
    /// `preadv2(RWF_NOWAIT)` on the submitting thread, a miss to the pool: buffered reads.
    InlineCached,
    /// The fallback pool: buffered writes (the kernel would copy them inside `io_submit`),
    /// and anything that is not a regular file or block device.
    Pool,
}

/// How a request runs, from what it is and what its descriptor is.
pub(super) fn route(class: Class, facts: Facts) -> Route {
    match (class, facts.seekable, facts.direct) {
        (Class::Meta, _, _) => Route::Pool,
        (Class::Sync, _, _) => Route::Kernel,
        (_, false, _) => Route::Pool,
        (Class::Read, true, true) => Route::Kernel,
        (Class::Read, true, false) => Route::InlineCached,
        (Class::Write, true, true) => Route::KernelNowait,
        (Class::Write, true, false) => Route::Pool,
    }
}

/// Where a request submitted with `RWF_NOWAIT` goes when the kernel says it would block
/// (EAGAIN, or EOPNOTSUPP where the filesystem has no NOWAIT path): an O_DIRECT read is
/// what the kernel queues without blocking, so it is resubmitted plainly; anything else (a
/// page-cache miss, a write needing block allocation) is run by the pool.
pub(super) fn route_would_block(class: Class, direct: bool) -> Route {
    match (class, direct) {
        (Class::Read, true) => Route::Kernel,
        _ => Route::Pool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_has_one_route() {
        use {Class::*, Route::*};
        // Whether the file is in memory changes no route: such reads never get here.
        let f = |seekable, direct| Facts {
            seekable,
            direct,
            memory: false,
        };
        let table = [
            // Metadata operations: the pool, whatever the descriptor.
            (Meta, f(true, true), Pool),
            (Meta, f(true, false), Pool),
            (Meta, f(false, false), Pool),
            // Syncs always go to the kernel's workqueue.
            (Sync, f(true, false), Kernel),
            (Sync, f(true, true), Kernel),
            (Sync, f(false, false), Kernel),
            // Pipes, sockets, directories: never to kernel AIO.
            (Read, f(false, false), Pool),
            (Write, f(false, false), Pool),
            // Reads.
            (Read, f(true, true), Kernel),
            (Read, f(true, false), InlineCached),
            // Writes.
            (Write, f(true, true), KernelNowait),
            (Write, f(true, false), Pool),
        ];
        for (class, facts, want) in table {
            assert_eq!(route(class, facts), want, "{class:?} {facts:?}");
        }
    }

    #[test]
    fn what_would_block_goes_where_it_will_not() {
        use {Class::*, Route::*};
        for (class, direct, want) in [
            (Read, true, Kernel),
            (Read, false, Pool),
            (Write, true, Pool),
            (Write, false, Pool),
            (Sync, false, Pool),
            (Meta, true, Pool),
        ] {
            assert_eq!(route_would_block(class, direct), want, "{class:?} {direct}");
        }
    }
}
