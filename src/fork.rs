//! What belongs to one process. A child after `fork()` has one thread, and a copy of every
//! lock as its parent's threads held it at that instant: a lock held then stays held in
//! the child forever. [`PerProcess`] gives each process (each fork generation) a value of
//! its own, so a child never waits on a lock of its parent's.

use std::{
    ptr,
    sync::atomic::{AtomicPtr, Ordering},
};

use crate::sys;

/// The process something was made in (its fork generation). Made before a `fork()` of
/// this process, it is the parent's: its threads stayed there, and the child must never
/// submit to, reap from or tear down its kernel objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Born(u64);

impl Born {
    /// This process.
    pub(crate) fn here() -> Born {
        Born(sys::fork_generation())
    }

    /// Made before a `fork()` of this process: the parent's.
    pub(crate) fn is_inherited(self) -> bool {
        self.0 != sys::fork_generation()
    }
}

struct Generation<T> {
    generation: u64,
    value: T,
}

/// A value made once per process, on first use; a child after `fork()` makes its own.
///
/// The parent's value is never dropped in the child: it may own the parent's threads or
/// kernel objects, which the child must not tear down. It is leaked instead, once per fork.
pub(crate) struct PerProcess<T: 'static> {
    current: AtomicPtr<Generation<T>>,
}

impl<T: Send + Sync + 'static> PerProcess<T> {
    pub(crate) const fn new() -> PerProcess<T> {
        PerProcess {
            current: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// This process's value, made by `make` if it has none yet. `make` may run on two
    /// threads at once the first time; one value is kept and the other dropped, so it
    /// should be cheap (a lock, an empty cell), with the costly part behind it.
    pub(crate) fn get(&self, make: impl Fn() -> T) -> &'static T {
        let generation = sys::fork_generation();
        let mut seen = self.current.load(Ordering::Acquire);
        loop {
            // SAFETY: a non-null pointer here came from `Box::into_raw` below and is never
            // freed, so it lives for the rest of the process.
            if let Some(g) = unsafe { seen.as_ref() } {
                if g.generation == generation {
                    return &g.value;
                }
            }
            let new = Box::into_raw(Box::new(Generation {
                generation,
                value: make(),
            }));
            match self
                .current
                .compare_exchange(seen, new, Ordering::AcqRel, Ordering::Acquire)
            {
                // The one it replaced (an ancestor's, or none) is leaked on purpose.
                // SAFETY: `new` was just made from a Box and is never freed.
                Ok(_) => return unsafe { &(*new).value },
                Err(now) => {
                    // SAFETY: `new` was never shared: the exchange failed.
                    drop(unsafe { Box::from_raw(new) });
                    seen = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_process_however_many_threads_ask() {
        static V: PerProcess<std::sync::atomic::AtomicUsize> = PerProcess::new();
        let addrs: Vec<usize> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| V.get(Default::default) as *const _ as usize))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(addrs.windows(2).all(|w| w[0] == w[1]), "{addrs:?}");
    }
}
