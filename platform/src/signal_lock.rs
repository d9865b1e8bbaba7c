//! A lock that ordinary code shares with signal handlers.

use std::sync::atomic::{AtomicBool, Ordering};

/// A lock that ordinary code takes by spinning, and that a signal handler only tries: spinning
/// in a handler could wait forever for the very code it interrupted. Holders keep it for a
/// few loads and stores or one system call, and never take it in signal context.
pub(crate) struct SignalLock(AtomicBool);

/// Holds a [`SignalLock`] until dropped.
pub(crate) struct SignalLockGuard<'a>(&'a SignalLock);

impl SignalLock {
    pub(crate) const fn new() -> SignalLock {
        SignalLock(AtomicBool::new(false))
    }

    /// Takes the lock, spinning while someone else holds it. Not for signal context.
    pub(crate) fn lock(&self) -> SignalLockGuard<'_> {
        while self.0.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::hint::spin_loop();
        }
        SignalLockGuard(self)
    }

    /// Takes the lock if it is free. Async-signal-safe (one atomic swap).
    pub(crate) fn try_lock(&self) -> Option<SignalLockGuard<'_>> {
        (!self.0.swap(true, Ordering::Acquire)).then_some(SignalLockGuard(self))
    }
}

impl Drop for SignalLockGuard<'_> {
    fn drop(&mut self) {
        (self.0).0.store(false, Ordering::Release);
    }
}
