//! Boxes kept for reuse: a backend that hands the kernel each operation's address boxes
//! it, and a warm loop of operations should not pay an allocation for that.

use crate::sync::lock;
use std::{
    mem::MaybeUninit,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
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
///
/// An operation may also be queued *held* (see `backend::held`): no future flushes it,
/// and the next reap sends it with the rest ([`OpQueue::take_held`]). The decision is
/// made under the queue's lock, against the count of operations in flight, and so is the
/// reap's: either the reap sees the held operation, or the operation sees the reap's count.
pub(crate) struct OpQueue<T> {
    queued: Mutex<Queued<T>>,
    /// `Queued::loose`, to be read without the lock (see [`OpQueue::owes`]).
    owes: AtomicBool,
    /// Whether anything is queued, to be read without the lock.
    queued_any: AtomicBool,
    /// The emptied vector of the last flush, swapped in for the queue by the next.
    #[allow(clippy::vec_box)]
    spare: Mutex<Vec<Box<T>>>,
}

struct Queued<T> {
    /// Boxed: each op's address goes to the kernel at submission and must not move.
    #[allow(clippy::vec_box)]
    ops: Vec<Box<T>>,
    /// Some of `ops` were queued held: no future will flush them.
    held: bool,
    /// Some of `ops` were queued to be flushed by their futures.
    loose: bool,
}

impl<T> OpQueue<T> {
    pub(crate) fn new() -> OpQueue<T> {
        OpQueue {
            queued: Mutex::new(Queued {
                ops: Vec::new(),
                held: false,
                loose: false,
            }),
            owes: AtomicBool::new(false),
            queued_any: AtomicBool::new(false),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Queues `op` for the next flush; how many are queued now.
    pub(crate) fn push(&self, op: Box<T>) -> usize {
        let mut q = lock(&self.queued);
        q.ops.push(op);
        q.loose = true;
        self.owes.store(true, Ordering::Release);
        self.queued_any.store(true, Ordering::Release);
        q.ops.len()
    }

    /// Queues `op`, held if `hold` says so given how many are queued now; whether it is.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn push_or_hold(&self, op: Box<T>, hold: impl FnOnce(usize) -> bool) -> bool {
        let mut q = lock(&self.queued);
        q.ops.push(op);
        self.queued_any.store(true, Ordering::Release);
        let h = hold(q.ops.len());
        q.held |= h;
        q.loose |= !h;
        if !h {
            self.owes.store(true, Ordering::Release);
        }
        h
    }

    /// Whether nothing is queued: a hint, read without the lock. (uring's.)
    #[cfg(target_pointer_width = "64")]
    pub(crate) fn is_empty(&self) -> bool {
        !self.queued_any.load(Ordering::Acquire)
    }

    /// Whether some of what is queued waits for a future's flush: a hint, read without the
    /// lock (a flush that misses one queued just now leaves it to that future's own).
    /// (uring's.)
    #[cfg(target_pointer_width = "64")]
    pub(crate) fn owes(&self) -> bool {
        self.owes.load(Ordering::Acquire)
    }

    /// Everything queued, in a vector to hand back to [`OpQueue::give_back`] once drained.
    /// (uring's, and the tests'.)
    #[allow(clippy::vec_box)]
    #[cfg_attr(not(target_pointer_width = "64"), allow(dead_code))]
    pub(crate) fn take(&self) -> Vec<Box<T>> {
        self.take_if(|_| true)
    }

    /// What a future's flush sends: everything, unless all of it is held and `hold`
    /// (given how many are queued) still holds it. (A future may owe a flush that an
    /// earlier one already made.)
    #[allow(clippy::vec_box)]
    pub(crate) fn take_owed(&self, hold: impl FnOnce(usize) -> bool) -> Vec<Box<T>> {
        self.take_if(|q| q.loose || !hold(q.ops.len()))
    }

    /// What a reap sends: everything, if some of it is held and `hold` (given how many are
    /// queued) no longer holds it; else nothing (what futures queued, they flush).
    #[allow(clippy::vec_box)]
    pub(crate) fn take_held(&self, hold: impl FnOnce(usize) -> bool) -> Vec<Box<T>> {
        self.take_if(|q| q.held && !hold(q.ops.len()))
    }

    #[allow(clippy::vec_box)]
    fn take_if(&self, take: impl FnOnce(&Queued<T>) -> bool) -> Vec<Box<T>> {
        let mut q = lock(&self.queued);
        if q.ops.is_empty() || !take(&q) {
            // Not even the spare vector: a flush on another thread swaps it in.
            return Vec::new();
        }
        let mut batch = std::mem::take(&mut *lock(&self.spare));
        std::mem::swap(&mut q.ops, &mut batch);
        q.held = false;
        q.loose = false;
        self.owes.store(false, Ordering::Release);
        self.queued_any.store(false, Ordering::Release);
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
