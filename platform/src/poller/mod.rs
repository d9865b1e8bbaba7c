//! The readiness poller: epoll on Linux, kqueue on macOS and FreeBSD.
//!
//! # The contract every backend meets
//!
//! Each backend file exports a `Poller` and an `Events` with exactly these semantics:
//!
//! - `Poller::new() -> io::Result<Poller>`: a new, close-on-exec poller (a kqueue is never
//!   inherited anyway; an epoll fd would be, hence `EPOLL_CLOEXEC`).
//! - `Poller::update(&mut self, fd, token, old, new) -> io::Result<()>`: moves `fd`'s
//!   registration from interest `old` to interest `new`, tagging its events with `token`.
//!   `old` is what the caller last asked for; an empty interest means "not registered".
//!   **Level-triggered**: an fd that stays ready is reported again on every `wait`.
//!   epoll applies the change at once. kqueue queues it in a changelist that the next `wait`
//!   (or `deregister`) submits; a change the kernel rejects comes back from `wait` as an
//!   [`Event`] with [`Event::change_error`] set, tagged with the change's token. When a
//!   submission fails as a whole (`ENOMEM`), each change is applied again on its own and
//!   gets its own answer.
//! - `Poller::deregister(&mut self, fd, old) -> io::Result<()>`: removes `fd` **now**, and
//!   drops any queued change that names it. Call it before closing `fd`: epoll keys
//!   registrations on the open file description, so a closed fd whose description lives on
//!   in a child keeps producing events (libuv#4323).
//! - `Poller::probe(&mut self, fd) -> io::Result<()>`: registers and removes `fd` at once (on
//!   kqueue, a filter for each direction its access mode allows), to learn whether this
//!   poller accepts it: epoll
//!   refuses regular files and `/dev/null` with `EPERM`; macOS kqueue refuses `/dev/tty`,
//!   `/dev/null` and other character devices with `EINVAL`; FreeBSD kqueue refuses, with
//!   `ENODEV`, devices whose driver has no filter for the direction (its `/dev/tty` names
//!   the real terminal, which kqueue accepts).
//! - `Poller::wait(&mut self, events, timeout) -> io::Result<()>`: waits until an event, or
//!   `timeout` (`None` waits forever; sub-millisecond timeouts round up, never down to a
//!   busy poll). A signal interrupting the wait (`EINTR`) is not an error: the batch holds
//!   what is ready just after it, collected without waiting again (the handler has usually
//!   just written to the loop's signal pipe; libuv re-polls too), possibly nothing. The caller
//!   recomputes its timeout.
//! - `Poller::has_queued_changes(&self) -> bool`: whether the next `wait` has changes to
//!   submit or rejections to report (always false for epoll). Someone who waits on the
//!   poller's fd instead of calling `wait` (the loop's own `select`, see the select helper)
//!   calls `wait` with a zero timeout first, or the kernel would not know the changes.
//! - `Events::with_capacity(n)`, `Events::len()`, `Events::get(i)` and `Events::iter()`
//!   yielding [`Event`]s.
//!
//! The backend owns no policy: which fds go where, and what an event means for a handle, is
//! decided by the loop.

use bitflags::bitflags;

#[cfg(target_os = "linux")]
mod epoll;
#[cfg(target_os = "linux")]
pub use epoll::{Events, Poller};

#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub(crate) mod kqueue;
#[cfg(any(target_os = "macos", target_os = "freebsd"))]
pub use kqueue::{Events, Poller};

bitflags! {
    /// What a registration waits for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Interest: u8 {
        /// Data to read, end of file, or an error.
        const READABLE = 1;
        /// Room to write, or an error.
        const WRITABLE = 2;
    }
}

bitflags! {
    /// What an event reports. On Linux the bits are epoll's own, so an event converts with a
    /// mask.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct Readiness: u32 {
        /// A read will not block (data, end of file or an error is there).
        const READABLE = READABLE_BIT;
        /// A write will not block.
        const WRITABLE = WRITABLE_BIT;
        /// An error is pending on the fd (`EPOLLERR`; a pipe's write end whose reader closed).
        const ERROR = ERROR_BIT;
        /// The peer is gone: epoll's `EPOLLHUP`, kqueue's `EV_EOF`. Data may still be
        /// buffered; the caller drains before it reports end of file.
        const HUP = HUP_BIT;
    }
}

#[cfg(target_os = "linux")]
const READABLE_BIT: u32 = libc::EPOLLIN as u32;
#[cfg(target_os = "linux")]
const WRITABLE_BIT: u32 = libc::EPOLLOUT as u32;
#[cfg(target_os = "linux")]
const ERROR_BIT: u32 = libc::EPOLLERR as u32;
#[cfg(target_os = "linux")]
const HUP_BIT: u32 = libc::EPOLLHUP as u32;
#[cfg(not(target_os = "linux"))]
const READABLE_BIT: u32 = 1;
#[cfg(not(target_os = "linux"))]
const WRITABLE_BIT: u32 = 2;
#[cfg(not(target_os = "linux"))]
const ERROR_BIT: u32 = 4;
#[cfg(not(target_os = "linux"))]
const HUP_BIT: u32 = 8;

/// One event out of a [`Poller::wait`] batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The token the fd was registered with.
    pub token: u64,
    /// What is ready.
    pub readiness: Readiness,
    /// Non-zero when this is not readiness but a queued change that the kernel rejected
    /// (kqueue only): the error number.
    pub change_error: i32,
}
