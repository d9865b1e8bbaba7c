//! The epoll backend (Linux). See the contract in `poller/mod.rs`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::{Event, Interest, Readiness};
use crate::cvt::cvt;

/// An epoll instance.
#[derive(Debug)]
pub struct Poller {
    epfd: OwnedFd,
}

/// A reusable buffer of epoll events.
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("len", &self.len).field("capacity", &self.buf.len()).finish()
    }
}

impl Events {
    /// A buffer for up to `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Events {
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Events { buf: vec![empty; capacity.max(1)], len: 0 }
    }

    /// How many events the last wait returned.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last wait returned no events.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.len).map(|i| self.get(i))
    }

    /// Event `i` of the last wait (`i < len()`).
    #[inline]
    pub fn get(&self, i: usize) -> Event {
        // epoll_event is packed on x86_64: copy it out, never reference its fields.
        let e = self.buf[..self.len][i];
        // We never ask for EPOLLPRI or EPOLLRDHUP, so epoll's bits are our Readiness bits.
        Event { token: e.u64, readiness: Readiness::from_bits_truncate(e.events), change_error: 0 }
    }
}

fn epoll_bits(interest: Interest) -> u32 {
    let mut bits = 0;
    if interest.contains(Interest::READABLE) {
        bits |= libc::EPOLLIN as u32;
    }
    if interest.contains(Interest::WRITABLE) {
        bits |= libc::EPOLLOUT as u32;
    }
    bits
}

impl Poller {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: the call returned a fresh fd that nothing else owns.
        let epfd = crate::fd::settle(unsafe { OwnedFd::from_raw_fd(fd) })?;
        Ok(Poller { epfd })
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, bits: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: bits, u64: token };
        // SAFETY: `ev` is a valid epoll_event for the call (ignored for DEL); both fds are open
        // for the duration: `epfd` is owned by self, `fd` is borrowed.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) })?;
        Ok(())
    }

    /// Adds `fd` for reading, edge-triggered: each time it becomes readable again (for an
    /// eventfd, each write) is one event, and nothing needs to be read to quiet it. Only for
    /// the waker; every stream is level-triggered.
    pub(crate) fn add_edge_readable(&mut self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32 | libc::EPOLLET as u32, token)
    }

    /// Moves `fd` from interest `old` to `new` (ADD, MOD or DEL), at once.
    #[inline]
    pub fn update(&mut self, fd: BorrowedFd<'_>, token: u64, old: Interest, new: Interest) -> io::Result<()> {
        let op = match (old.is_empty(), new.is_empty()) {
            (true, true) => return Ok(()),
            (true, false) => libc::EPOLL_CTL_ADD,
            (false, false) if old == new => return Ok(()),
            (false, false) => libc::EPOLL_CTL_MOD,
            (false, true) => libc::EPOLL_CTL_DEL,
        };
        match self.ctl(op, fd, epoll_bits(new), token) {
            Ok(()) => Ok(()),
            Err(e) => self.update_again(op, e, fd, epoll_bits(new), token),
        }
    }

    /// The caller's idea of the registration can be wrong after an error (it then counts it
    /// as gone): an ADD that finds one modifies it, a MOD that finds none adds one.
    #[cold]
    #[inline(never)]
    fn update_again(
        &self,
        op: libc::c_int,
        e: io::Error,
        fd: BorrowedFd<'_>,
        bits: u32,
        token: u64,
    ) -> io::Result<()> {
        match (op, e.raw_os_error()) {
            (libc::EPOLL_CTL_ADD, Some(libc::EEXIST)) => self.ctl(libc::EPOLL_CTL_MOD, fd, bits, token),
            (libc::EPOLL_CTL_MOD, Some(libc::ENOENT)) => self.ctl(libc::EPOLL_CTL_ADD, fd, bits, token),
            _ => Err(e),
        }
    }

    /// Always false: epoll applies every change at once.
    pub fn has_queued_changes(&self) -> bool {
        false
    }

    /// Removes `fd` now (`EPOLL_CTL_DEL`). Does nothing when `old` is empty.
    #[inline]
    pub fn deregister(&mut self, fd: BorrowedFd<'_>, old: Interest) -> io::Result<()> {
        if old.is_empty() {
            return Ok(());
        }
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Adds and deletes `fd` to learn whether epoll accepts it (`EPERM` for regular files,
    /// directories and `/dev/null`).
    pub fn probe(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, 0, 0)?;
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events; see the contract. After `EINTR`, collects what is ready at once.
    #[inline]
    pub fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            Some(d) if d.is_zero() => 0,
            Some(d) => timeout_ms(d),
        };
        let n = self.epoll_wait(events, ms);
        if n >= 0 {
            events.len = n as usize;
            return Ok(());
        }
        self.wait_failed(events)
    }

    #[inline]
    fn epoll_wait(&self, events: &mut Events, ms: libc::c_int) -> libc::c_int {
        let cap = events.buf.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: `events.buf` is valid for writes of `cap` entries; `epfd` is owned by self.
        unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), events.buf.as_mut_ptr(), cap, ms) }
    }

    /// The wait failed: `EINTR` collects what is ready just after it without waiting again;
    /// anything else is an error.
    #[cold]
    fn wait_failed(&mut self, events: &mut Events) -> io::Result<()> {
        let e = io::Error::last_os_error();
        events.len = 0;
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
        events.len = cvt(self.epoll_wait(events, 0)).map_or(0, |n| n as usize);
        Ok(())
    }
}

/// Milliseconds for epoll, rounded up: a 0.3 ms timeout must not become a busy poll of 0 ms.
fn timeout_ms(d: Duration) -> libc::c_int {
    let sub = u64::from(d.subsec_nanos()).div_ceil(1_000_000);
    let ms = d.as_secs().saturating_mul(1000).saturating_add(sub);
    ms.min(libc::c_int::MAX as u64) as libc::c_int
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epfd.as_fd()
    }
}
