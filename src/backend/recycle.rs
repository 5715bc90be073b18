//! Boxes kept for reuse: a backend that hands the kernel each operation's address boxes
//! it, and a warm loop of operations should not pay an allocation for that.

use std::{
    mem::MaybeUninit,
    sync::{Mutex, MutexGuard},
};

/// Emptied boxes of `T`, at most `keep` of them, taken by one thread and given back by
/// another (a submitter and a reaper).
pub(crate) struct BoxPool<T> {
    free: Mutex<Vec<Box<MaybeUninit<T>>>>,
    keep: usize,
}

impl<T> BoxPool<T> {
    pub(crate) fn new(keep: usize) -> BoxPool<T> {
        BoxPool {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Box<MaybeUninit<T>>>> {
        // Pushes and pops only: poison carries no broken state.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `v` in a box, reused if one is free.
    pub(crate) fn boxed(&self, v: T) -> Box<T> {
        let mut b = self.lock().pop().unwrap_or_else(Box::new_uninit);
        b.write(v);
        // SAFETY: written just above.
        unsafe { b.assume_init() }
    }

    /// Takes the value out of `b` and keeps the box for reuse.
    pub(crate) fn unbox(&self, b: Box<T>) -> T {
        let raw = Box::into_raw(b);
        // SAFETY: `raw` comes from a live `Box<T>`: the value is read out exactly once, and
        // the allocation is then owned as uninitialised memory of the same layout, which
        // `MaybeUninit<T>` has.
        let (v, empty) = unsafe { (raw.read(), Box::from_raw(raw.cast::<MaybeUninit<T>>())) };
        let mut free = self.lock();
        if free.len() < self.keep {
            free.push(empty);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_reused_and_values_move_out_whole() {
        let pool = BoxPool::new(2);
        let a = pool.boxed(String::from("a"));
        let addr = &*a as *const String as usize;
        assert_eq!(pool.unbox(a), "a");
        let b = pool.boxed(String::from("b"));
        assert_eq!(&*b as *const String as usize, addr, "the box was reused");
        assert_eq!(*b, "b");
        drop(b); // an ordinary drop frees value and box
        let kept: Vec<_> = (0..4).map(|k| pool.boxed(k.to_string())).collect();
        for k in kept {
            pool.unbox(k);
        }
        assert_eq!(pool.lock().len(), 2, "at most `keep` boxes are kept");
    }
}
