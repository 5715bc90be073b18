//! Boxes kept for reuse: a backend that hands the kernel each operation's address boxes
//! it, and a warm loop of operations should not pay an allocation for that.

use crate::sync::lock;
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
        lock(&self.free)
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

    /// Drops the value in `b` where it is and keeps the box for reuse.
    pub(crate) fn recycle(&self, b: Box<T>) {
        let raw = Box::into_raw(b);
        // SAFETY: `raw` comes from a live `Box<T>`: the value is dropped exactly once, and
        // the allocation is then owned as uninitialised memory of the same layout, which
        // `MaybeUninit<T>` has.
        let empty = unsafe {
            raw.drop_in_place();
            Box::from_raw(raw.cast::<MaybeUninit<T>>())
        };
        let mut free = self.lock();
        if free.len() < self.keep {
            free.push(empty);
        }
    }
}

/// Operations queued for a batching backend's next flush. A flush takes the queue whole
/// and gives the emptied vector back, so a warm loop allocates no vector either.
pub(crate) struct OpQueue<T> {
    /// Boxed: each op's address goes to the kernel at submission and must not move.
    #[allow(clippy::vec_box)]
    queued: Mutex<Vec<Box<T>>>,
    /// The emptied vector of the last flush, swapped in for the queue by the next.
    #[allow(clippy::vec_box)]
    spare: Mutex<Vec<Box<T>>>,
}

impl<T> OpQueue<T> {
    pub(crate) fn new() -> OpQueue<T> {
        OpQueue {
            queued: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Queues `op` for the next flush; how many are queued now.
    pub(crate) fn push(&self, op: Box<T>) -> usize {
        let mut q = lock(&self.queued);
        q.push(op);
        q.len()
    }

    /// Everything queued, in a vector to hand back to [`OpQueue::give_back`] once drained.
    #[allow(clippy::vec_box)]
    pub(crate) fn take(&self) -> Vec<Box<T>> {
        let mut batch = std::mem::take(&mut *lock(&self.spare));
        std::mem::swap(&mut *lock(&self.queued), &mut batch);
        batch
    }

    /// Keeps a drained vector's room for the next flush.
    #[allow(clippy::vec_box)]
    pub(crate) fn give_back(&self, batch: Vec<Box<T>>) {
        debug_assert!(batch.is_empty());
        let mut spare = lock(&self.spare);
        if spare.capacity() < batch.capacity() {
            *spare = batch;
        }
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

    #[test]
    fn a_flush_takes_the_queue_whole_and_its_vector_comes_back() {
        let q = OpQueue::new();
        q.push(Box::new(1));
        q.push(Box::new(2));
        let mut batch = q.take();
        assert_eq!(batch.drain(..).map(|b| *b).collect::<Vec<_>>(), [1, 2]);
        let room = batch.capacity();
        q.give_back(batch);
        assert!(q.take().is_empty());
        q.push(Box::new(3));
        let batch = q.take();
        assert!(
            batch.capacity() >= room,
            "the drained vector's room is reused"
        );
    }
}
