//! How a stream's fd is watched, decided in one place.
//!
//! - [`IoMode::Poller`]: registered with epoll or kqueue, level-triggered. The usual case.
//! - [`IoMode::AlwaysReady`]: the poller refuses the fd because it can never block (Linux
//!   epoll gives `EPERM` for regular files and `/dev/null`). The loop treats it as ready for
//!   whatever it wants, does not sleep while it wants something, and bounded reads keep the
//!   other handles served.
//! - [`IoMode::SelectHelper`]: the poller refuses a device that can block (macOS kqueue gives
//!   `EINVAL` for `/dev/tty`, `/dev/null` and other character devices; FreeBSD gives
//!   `ENODEV`). The select helper thread watches it. [`LoopBuilder::force_select_helper`]
//!   sends every stream here, so this path runs on Linux too.
//!
//! [`LoopBuilder::force_select_helper`]: crate::LoopBuilder::force_select_helper

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use evloop_platform::fd::{self, FileType};
use evloop_platform::libc;
use evloop_platform::poller::Interest;

use crate::error::context;
use crate::event_loop::Loop;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoMode {
    Poller,
    AlwaysReady,
    SelectHelper,
}

/// A stream's fd and its registration state.
pub(crate) struct Io {
    /// `None` once the write side of a write-only pipe was shut down (the fd is closed).
    pub(crate) fd: Option<OwnedFd>,
    pub(crate) mode: IoMode,
    /// What the stream wants now.
    pub(crate) wanted: Interest,
    /// What the backend (poller, always-ready list or select helper) was last told.
    pub(crate) registered: Interest,
    /// Queued on the loop's dirty list, to be flushed before the next poll.
    pub(crate) dirty: bool,
}

impl Io {
    pub(crate) fn new(fd: OwnedFd, mode: IoMode) -> Io {
        Io { fd: Some(fd), mode, wanted: Interest::empty(), registered: Interest::empty(), dirty: false }
    }

    /// Records what the stream wants now. Returns true when the stream must be queued on the
    /// loop's dirty list: the change reaches the backend at the next flush (interest changes
    /// are batched per iteration).
    #[must_use]
    pub(crate) fn want(&mut self, wanted: Interest) -> bool {
        self.wanted = wanted;
        if self.wanted != self.registered && !self.dirty {
            self.dirty = true;
            return true;
        }
        false
    }

    #[inline]
    pub(crate) fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        match &self.fd {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(Self::no_fd()),
        }
    }

    #[cold]
    fn no_fd() -> io::Error {
        crate::error::context(
            io::Error::from_raw_os_error(libc::EBADF),
            "the handle's fd is released (its write side was shut down)",
        )
    }
}

impl Loop {
    /// Decides how `fd` will be watched: the one place where fds the poller rejects are
    /// routed (see the module docs).
    ///
    /// `for_stream`: the fd will be read and written as a stream. A regular file then goes
    /// straight to the always-ready mode. An fd watch asks the poller first: some fds that
    /// `fstat` calls regular files can be polled (a pidfd on some kernels' pidfs; procfs and
    /// sysfs files), and only the poller knows.
    pub(crate) fn choose_io_mode(
        &mut self,
        fd: BorrowedFd<'_>,
        known_pollable: bool,
        for_stream: bool,
    ) -> io::Result<IoMode> {
        if self.options.force_select_helper {
            self.select_helper_start()?;
            return Ok(IoMode::SelectHelper);
        }
        if known_pollable {
            return Ok(IoMode::Poller);
        }
        // A regular file never blocks. kqueue accepts one, but reports it readable only while
        // unread bytes remain, so the end of file would never be reported; epoll refuses it.
        // Either way the always-ready mode is the right one.
        if for_stream && fd::file_type(fd)? == FileType::Regular {
            return Ok(IoMode::AlwaysReady);
        }
        match self.poller.probe(fd) {
            Ok(()) => Ok(IoMode::Poller),
            // epoll: regular files, directories, /dev/null, /dev/zero. They never block.
            Err(e) if cfg!(target_os = "linux") && e.raw_os_error() == Some(libc::EPERM) => {
                log::debug!("loop {}: epoll refused fd (EPERM); always-ready mode", self.id);
                Ok(IoMode::AlwaysReady)
            }
            // kqueue: character devices other than ptys (macOS EINVAL, FreeBSD ENODEV).
            Err(e)
                if !cfg!(target_os = "linux")
                    && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENODEV)) =>
            {
                if fd::file_type(fd)? == FileType::Regular {
                    return Ok(IoMode::AlwaysReady);
                }
                log::warn!(
                    "loop {}: kqueue rejected a {:?} fd ({}); using the select helper",
                    self.id,
                    fd::file_type(fd)?,
                    evloop_platform::errno_name(e.raw_os_error().unwrap_or(0))
                );
                self.select_helper_start()?;
                Ok(IoMode::SelectHelper)
            }
            Err(e) => {
                let (raw, ty) = (fd.as_raw_fd(), fd::file_type(fd).ok());
                Err(context(e, format!("cannot watch fd {raw} ({ty:?}): the poller refused it")))
            }
        }
    }
}
