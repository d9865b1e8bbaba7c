//! The eventfd waker (Linux). See the contract in `waker/mod.rs`.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use crate::cvt::cvt;
use crate::poller::{Interest, Poller};

/// An eventfd registered for reading.
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
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        poller.update(fd.as_fd(), token, Interest::empty(), Interest::READABLE)?;
        Ok(Waker { fd })
    }

    /// Adds one to the counter, which makes the eventfd readable.
    pub fn wake(&self) -> io::Result<()> {
        match crate::fd::write(self.fd.as_fd(), &1u64.to_ne_bytes()) {
            // The counter is at its maximum: the fd is readable already.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    /// Reads the counter back to zero.
    pub fn reset(&self) {
        let mut buf = [0u8; 8];
        // EAGAIN means it was already zero; nothing else can fail on an eventfd we own.
        let _ = crate::fd::read(self.fd.as_fd(), &mut buf);
    }
}
