//! The one way this crate takes a lock.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, poisoned or not. Every critical section in the crate leaves its data whole
/// at each point a panic could unwind from (it moves values in or out whole, or counts),
/// so a poisoned lock carries no broken invariant, and refusing it would turn one panic
/// (a user's closure on a worker, say) into a failure of every later operation.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
