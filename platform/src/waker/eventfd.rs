//! The eventfd waker (Linux). See the contract in `waker/mod.rs`.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use crate::cvt::cvt;
use crate::poller::Poller;

/// An eventfd registered for reading, edge-triggered.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// Creates a nonblocking, close-on-exec eventfd and registers it with `token`.
    pub fn new(poller: &mut Poller, token: u64) -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers.
        let raw = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: the call returned a fresh fd that nothing else owns.
        let fd = crate::fd::settle(unsafe { OwnedFd::from_raw_fd(raw) })?;
        poller.add_edge_readable(fd.as_fd(), token)?;
        Ok(Waker { fd })
    }

    /// Adds one to the counter: one new event.
    pub fn wake(&self) -> io::Result<()> {
        let one = 1u64.to_ne_bytes();
        match crate::fd::write(self.fd.as_fd(), &one) {
            // The counter is at its maximum (after 2^64 - 2 wakes): empty it, so this write
            // makes an edge.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.drain();
                crate::fd::write(self.fd.as_fd(), &one).map(drop)
            }
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    /// Nothing to do: edge-triggered, the event was consumed when it was reported, and the
    /// counter never needs reading (see `wake`). Saves the loop a `read` per wakeup.
    pub fn reset(&self) {}

    fn drain(&self) {
        let mut buf = [0u8; 8];
        // EAGAIN means it was already zero; nothing else can fail on an eventfd we own.
        let _ = crate::fd::read(self.fd.as_fd(), &mut buf);
    }
}

#[cfg(test)]
mod tests {
    use super::Waker;
    use crate::poller::{Events, Poller};
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// A counter at its maximum refuses the write; the waker empties it and still makes an
    /// event.
    #[test]
    fn a_full_counter_still_wakes() {
        let mut poller = Poller::new().unwrap();
        let waker = Waker::new(&mut poller, 9).unwrap();
        let mut events = Events::with_capacity(4);
        crate::fd::write(waker.fd.as_fd(), &(u64::MAX - 1).to_ne_bytes()).unwrap();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.len(), 1);
        waker.wake().unwrap();
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().map(|e| e.token).collect::<Vec<_>>(), [9]);
    }
}
