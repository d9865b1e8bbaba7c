//! The `EVFILT_USER` waker (macOS, FreeBSD). See the contract in `waker/mod.rs`.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::poller::Poller;
use crate::poller::kqueue::{WAKER_IDENT, kev, kevent_now};

/// A user event on the loop's kqueue.
#[derive(Debug)]
pub struct Waker {
    kq: Arc<OwnedFd>,
    token: u64,
}

impl Waker {
    /// Adds the `EVFILT_USER` event (`EV_CLEAR`, so a trigger is consumed when reported).
    pub fn new(poller: &mut Poller, token: u64) -> io::Result<Waker> {
        let kq = poller.shared_fd();
        let flags = libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT;
        let change = [kev(WAKER_IDENT, libc::EVFILT_USER, flags, 0, token)];
        let mut out = [kev(0, 0, 0, 0, 0); 1];
        let got = kevent_now(kq.as_fd(), &change, &mut out)?;
        if let Some(r) = out[..got].first().filter(|r| r.data != 0) {
            return Err(io::Error::from_raw_os_error(r.data as i32));
        }
        Ok(Waker { kq, token })
    }

    /// Triggers the user event.
    pub fn wake(&self) -> io::Result<()> {
        // The trigger carries the token again: both kernels copy a change's udata into the
        // knote (FreeBSD always, xnu whenever it differs), so a null udata would erase it.
        let change = [kev(WAKER_IDENT, libc::EVFILT_USER, 0, libc::NOTE_TRIGGER, self.token)];
        // kevent_now retries EINTR, so a signal cannot lose a wakeup (smol-rs/polling#265).
        kevent_now(self.kq.as_fd(), &change, &mut [])?;
        Ok(())
    }

    /// Nothing to do: `EV_CLEAR` consumed the trigger when it was reported.
    pub fn reset(&self) {}
}
