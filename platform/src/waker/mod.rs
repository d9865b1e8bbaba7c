//! A cross-thread wakeup, registered in the loop's poller.
//!
//! # The contract every backend meets
//!
//! - `Waker::new(&mut Poller, token) -> io::Result<Waker>` registers the waker; once woken,
//!   the poller reports a readable event with `token`.
//! - `Waker::wake(&self)` may be called from any thread, any number of times. Wakes that
//!   arrive before the loop notices coalesce into one event.
//! - `Waker::reset(&self)` is called by the loop after it saw the event, before it looks for
//!   the work the wake announced; afterwards the poller does not report that wake again.
//! - `Waker` is `Send + Sync`, and waking after the loop is gone is harmless: the kernel
//!   object lives as long as the last `Waker`.
//!
//! Linux uses an eventfd registered edge-triggered (each write is one event); macOS and
//! FreeBSD use `EVFILT_USER` with `EV_CLEAR`. Either way a trigger is consumed when it is
//! reported, and `reset` has nothing to do; it stays in the contract for a backend that
//! needs it (a pipe).

#[cfg(target_os = "linux")]
mod eventfd;
#[cfg(target_os = "linux")]
pub use eventfd::Waker;

#[cfg(any(target_os = "macos", target_os = "freebsd"))]
mod kqueue;
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub use kqueue::Waker;

#[cfg(test)]
mod tests {
    use super::Waker;
    use crate::poller::{Events, Poller};
    use std::time::Duration;

    #[test]
    fn wakes_coalesce_and_each_is_reported_once() {
        let mut poller = Poller::new().unwrap();
        let waker = Waker::new(&mut poller, 7).unwrap();
        let mut events = Events::with_capacity(8);
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
        let w = std::sync::Arc::new(waker);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        w.wake().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        poller.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
        let got: Vec<_> = events.iter().collect();
        assert_eq!(got.len(), 1, "400 wakes coalesce into one event: {got:?}");
        assert_eq!(got[0].token, 7);
        w.reset();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty(), "a reported wakeup is not reported again");
        // A wake after the event was taken is a new event.
        w.wake().unwrap();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().map(|e| e.token).collect::<Vec<_>>(), [7], "the next wake is seen");
        w.reset();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert!(events.is_empty());
    }
}
