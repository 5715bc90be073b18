//! Where each request runs, decided in one place: a pure function of what it is
//! ([`Class`]), what its descriptor is ([`Facts`]) and what this kernel has, with a table
//! test.

use super::*;

/// Where a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// The ring, which is asked to run it this way.
    Ring(Mode),
    /// The fallback pool: I/O on what has no offset (pipes, sockets, directories), and
    /// metadata operations this kernel has no opcode for.
    Pool,
}

/// How a request runs, from what it is, what its descriptor is, and (for a metadata
/// operation) whether this kernel has an opcode for it.
pub(super) fn route(class: Class, facts: Facts, native_meta: bool) -> Route {
    match (class, facts.seekable, facts.direct) {
        // The kernel runs syncs on its workers.
        (Class::Sync, _, _) => Route::Ring(Mode::Plain),
        // Metadata calls may wait on a filesystem: the kernel's workers run them.
        (Class::Meta, _, _) if native_meta => Route::Ring(Mode::Worker),
        (Class::Meta, _, _) => Route::Pool,
        (_, false, _) => Route::Pool,
        // O_DIRECT: queued to the device without blocking the submitter.
        (_, true, true) => Route::Ring(Mode::Plain),
        // A page-cache hit completes inside the enter; a miss goes to the workers.
        (Class::Read, true, false) => Route::Ring(Mode::NoWait),
        (Class::Write, true, false) => Route::Ring(Mode::Worker),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_has_one_route() {
        use {Class::*, Mode::*, Route::*};
        // Whether the file is in memory changes no route: such reads never get here.
        let f = |seekable, direct| Facts {
            seekable,
            direct,
            memory: false,
        };
        let table = [
            // Syncs: the kernel's workers, whatever the descriptor.
            (Sync, f(true, true), false, Ring(Plain)),
            (Sync, f(true, false), false, Ring(Plain)),
            (Sync, f(false, false), false, Ring(Plain)),
            // Metadata: the kernel's workers where it has the opcode, else the pool.
            (Meta, f(true, false), true, Ring(Worker)),
            (Meta, f(false, false), true, Ring(Worker)),
            (Meta, f(true, false), false, Pool),
            (Meta, f(false, false), false, Pool),
            // Pipes, sockets, directories: never to the ring.
            (Read, f(false, false), false, Pool),
            (Write, f(false, false), false, Pool),
            // O_DIRECT: queued to the device as it is.
            (Read, f(true, true), false, Ring(Plain)),
            (Write, f(true, true), false, Ring(Plain)),
            // Buffered: reads try the page cache first, writes go to the workers.
            (Read, f(true, false), false, Ring(NoWait)),
            (Write, f(true, false), false, Ring(Worker)),
        ];
        for (class, facts, native, want) in table {
            assert_eq!(
                route(class, facts, native),
                want,
                "{class:?} {facts:?} {native}"
            );
        }
    }
}
