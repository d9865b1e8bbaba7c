//! Watching an fd that the loop does not read or write itself (libuv's `uv_poll_t`): an
//! inotify or signalfd instance, a netlink or foreign socket, a library's own fd.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use evloop_platform::fd::{self, FileType};
use evloop_platform::libc;
use evloop_platform::poller::{Interest as IoInterest, Readiness as IoReadiness};

use crate::error::context;
use crate::event_loop::Loop;
use crate::handle::{HandleId, HandleKind, Kind, typed_handle};
use crate::io::Io;

bitflags::bitflags! {
    /// What an [`FdWatch`] waits for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Interest: u8 {
        /// A read would not block: data, end of file, or an error to collect.
        const READABLE = 1;
        /// A write would not block.
        const WRITABLE = 2;
    }
}

bitflags::bitflags! {
    /// What an [`FdWatch`] found: what it waits for, and a hang-up or an error, which are
    /// reported whatever it waits for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Readiness: u8 {
        /// A read would not block.
        const READABLE = 1;
        /// A write would not block.
        const WRITABLE = 2;
        /// The other side is gone (epoll's `EPOLLHUP`, kqueue's `EV_EOF`); data may still be
        /// there to read. An fd behind the select helper reports it as readable only, as
        /// select(2) does. On a socket, kqueue reports a half-close (the peer's
        /// `shutdown(SHUT_WR)`) as a hang-up already, where epoll waits for both directions
        /// to close.
        const HANGUP = 4;
        /// An error is pending on the fd (`EPOLLERR`): a read or write collects it.
        const ERROR = 8;
    }
}

type WatchCb = Box<dyn FnMut(&mut Loop, FdWatch, io::Result<Readiness>)>;

/// The state of an [`FdWatch`].
pub(crate) struct WatchState {
    pub(crate) io: Io,
    interest: Interest,
    cb: Option<WatchCb>,
    /// Bumped by every start and stop: a callback taken out while it runs goes back only if
    /// neither happened meanwhile.
    epoch: u32,
    /// The file the fd was given for (`fd::file_id`): another one at its number means the fd
    /// was closed behind the watch's back, and the number is not the watch's to close.
    file: Option<(u64, u64)>,
}

impl WatchState {
    /// Whether the fd's number no longer names the file the watch was given (closed behind
    /// its back, and reused or not): best effort, as files can share an inode.
    pub(crate) fn fd_replaced(&self) -> bool {
        match (self.file, self.io.fd()) {
            (Some(file), Ok(fd)) => fd::file_id(fd).ok() != Some(file),
            _ => false,
        }
    }

    fn raw_fd(&self) -> i32 {
        self.io.fd().map_or(-1, |fd| std::os::fd::AsRawFd::as_raw_fd(&fd))
    }

    /// `e`, said of a watch whose fd was closed behind its back.
    fn replaced_error(&self, e: io::Error) -> io::Error {
        let raw = self.raw_fd();
        context(
            e,
            format!(
                "the watch's fd {raw} was closed behind its back (the watch owns it), and the number now \
                 names another file or none"
            ),
        )
    }
}

typed_handle!(
    /// Tells when an fd is readable or writable, for fds that the program reads and writes
    /// itself: an inotify instance, a netlink or D-Bus socket, the fd of a library with its
    /// own I/O (libuv's `uv_poll_t`). The handle owns the fd and closes it on close; keep a
    /// duplicate (`try_clone`) to do the I/O with, or borrow it with [`fd`](Self::fd).
    ///
    /// Readiness is level-triggered, as everywhere in the loop: the callback runs in every
    /// iteration while the fd stays ready, so it should read or write until `EAGAIN` (set
    /// `O_NONBLOCK` on the fd: the handle leaves its flags alone), or stop the watch. The
    /// poller is asked first; an fd it refuses because it never blocks (a regular file on
    /// Linux) is reported ready in every iteration, without polling, as poll(2) would. On
    /// macOS, a character device that kqueue refuses goes to the select helper thread, as a
    /// stream's would. kqueue accepts a regular file, and reports it readable only while the
    /// file offset is before its end: at the end of the file a watch waits for the file to
    /// grow, where on Linux it is ready at once (a stream on a regular file is always ready
    /// on every system). FreeBSD refuses to watch a pipe for writing once its reader has
    /// gone: the watch then reports [`WRITABLE`](Readiness::WRITABLE) and
    /// [`ERROR`](Readiness::ERROR) once (the next write meets `EPIPE`), and not again.
    ///
    /// ```
    /// use std::{cell::Cell, os::fd::OwnedFd, rc::Rc};
    /// use evloop::fd_watch::{Interest, Readiness};
    /// use evloop::{FdWatch, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    /// let watch = FdWatch::new(&mut lp, OwnedFd::from(ours))?;
    /// let seen = Rc::new(Cell::new(Readiness::empty()));
    /// let s = seen.clone();
    /// watch.start(&mut lp, Interest::READABLE, move |lp, w, ready| {
    ///     s.set(ready.unwrap());
    ///     w.close(lp).unwrap(); // (a real program reads until EAGAIN instead)
    /// })?;
    /// std::io::Write::write_all(&mut &theirs, b"ping")?;
    /// lp.run(RunMode::Default)?;
    /// assert!(seen.get().contains(Readiness::READABLE));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Serving a socket
    ///
    /// evloop has no listener handle: a server watches its nonblocking listening socket for
    /// [`READABLE`](Interest::READABLE), accepts until `WouldBlock`, and opens each
    /// connection as a [`Pipe`](crate::Pipe). (`O_NONBLOCK` is the description's: a
    /// listening socket that is also handed to a child, socket activation's fd 3, reaches it
    /// nonblocking. Keep that one blocking, accept once per callback, and stop the watch
    /// before the child takes over.) Out of fds, `accept` fails with `EMFILE` and
    /// leaves the connection waiting, so the level-triggered watch would call again at once,
    /// for good: stop it, and start it again once a connection has closed.
    ///
    /// ```
    /// use std::io::{ErrorKind, Read, Write};
    /// use std::os::fd::OwnedFd;
    /// use std::os::unix::net::{UnixListener, UnixStream};
    /// use evloop::fd_watch::Interest;
    /// use evloop::{FdWatch, Loop, Pipe, ReadEvent, RunMode};
    ///
    /// let path = std::env::temp_dir().join(format!("evloop-doc-server-{}", std::process::id()));
    /// let listener = UnixListener::bind(&path)?;
    /// listener.set_nonblocking(true)?;
    /// let mut lp = Loop::new()?;
    /// let watch = FdWatch::new(&mut lp, OwnedFd::from(listener.try_clone()?))?;
    /// watch.start(&mut lp, Interest::READABLE, move |lp, w, _| loop {
    ///     match listener.accept() {
    ///         Ok((conn, _)) => {
    ///             conn.set_nonblocking(true).unwrap();
    ///             let conn = Pipe::open(lp, OwnedFd::from(conn)).unwrap();
    ///             // An echo, until the client's end of file; then our side ends too.
    ///             conn.read_start(lp, |lp, c, ev| match ev {
    ///                 ReadEvent::Data(d) => c.write(lp, d, |_, _| {}).unwrap(),
    ///                 _ => c.shutdown(lp, move |lp, _| c.close(lp).unwrap()).unwrap(),
    ///             })
    ///             .unwrap();
    ///             w.close(lp).unwrap(); // (one client is enough here)
    ///             break;
    ///         }
    ///         Err(e) if e.kind() == ErrorKind::WouldBlock => break,
    ///         Err(_) => {
    ///             w.stop(lp).unwrap(); // EMFILE, say: see above
    ///             break;
    ///         }
    ///     }
    /// })?;
    /// let to = path.clone();
    /// let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
    ///     let mut s = UnixStream::connect(to)?;
    ///     s.write_all(b"hello")?;
    ///     s.shutdown(std::net::Shutdown::Write)?;
    ///     let mut got = Vec::new();
    ///     s.read_to_end(&mut got)?;
    ///     Ok(got)
    /// });
    /// lp.run(RunMode::Default)?;
    /// std::fs::remove_file(&path)?;
    /// assert_eq!(client.join().unwrap()?, b"hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    FdWatch,
    HandleKind::FdWatch
);

impl FdWatch {
    /// A watch on `fd`, which it owns from now on; it waits for nothing until
    /// [`start`](Self::start). An fd that is not open, or a directory, is an error (and an fd
    /// that is not open is not closed: its number may be someone else's by now).
    pub fn new(lp: &mut Loop, fd: OwnedFd) -> io::Result<FdWatch> {
        let (fd, flags) = crate::stream::open_fd_flags(fd, HandleKind::FdWatch.name())?;
        let ty = fd::file_type(fd.as_fd()).map_err(|e| context(e, "cannot watch the fd"))?;
        if ty == FileType::Directory {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot watch a directory's fd"));
        }
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        if ty == FileType::Regular {
            log::warn!(
                "loop {}: watching fd {raw}, a regular file: it is ready at every iteration, so the \
                 callback runs at each (a file does not tell when it grows)",
                lp.id
            );
        } else if !flags.nonblocking {
            log::debug!(
                "loop {}: watching fd {raw}, which is blocking: a callback that reads or writes it \
                 until EAGAIN blocks the loop",
                lp.id
            );
        }
        let mode = lp.choose_io_mode(fd.as_fd(), matches!(ty, FileType::Fifo | FileType::Socket), false)?;
        let file = fd::file_id(fd.as_fd()).ok();
        let state =
            WatchState { io: Io::new(fd, mode), interest: Interest::empty(), cb: None, epoch: 0, file };
        Ok(FdWatch(lp.insert(Kind::FdWatch(Box::new(state)))))
    }

    /// Waits for `interest`, and calls `cb` in every iteration in which the fd is ready for
    /// it (or hung up, or in error), with what it is ready for. Starting again replaces the
    /// interest and the callback. An empty interest is an error.
    ///
    /// If the loop can no longer watch the fd (the backend refused it, or it was closed
    /// behind the loop's back), `cb` gets the error once, and the watch stops. A close the
    /// loop can see is one before the poller took the fd, or before the next change of the
    /// watch's interest. epoll and kqueue drop an fd at its close without a word, and the
    /// select helper's `select`, once waiting, keeps the file until something wakes it (a
    /// change to any of its fds). So a watch whose fd is closed while it waits hears
    /// nothing more (libuv and mio have the same limit), and one whose description another
    /// fd still holds is reported ready for good, with a number that is no longer open.
    /// Close the watch first, then the fd (or let the watch own it). A watch whose fd's
    /// number names another file by the time of a `start` fails it with an error that says
    /// so, and is stopped (one that finds that out at a `stop` tells its callback, if it has
    /// one), and its close leaves that number, and the poller's registration of it, to their
    /// new owner (as far as the system tells files apart: Linux's eventfds, signalfds and
    /// epoll fds share one inode). The old file's registration cannot be removed without
    /// its fd: while another fd keeps that file open, epoll goes on reporting it, and the
    /// loop wakes for nothing until that fd closes.
    pub fn start(
        self,
        lp: &mut Loop,
        interest: Interest,
        cb: impl FnMut(&mut Loop, FdWatch, io::Result<Readiness>) + 'static,
    ) -> io::Result<()> {
        if interest.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an fd watch needs an interest"));
        }
        let w = lp.watch_mut(self.0)?;
        if w.fd_replaced() {
            let e = w.replaced_error(io::Error::from_raw_os_error(libc::EBADF));
            // Stopped: the callback it had is not called again.
            self.stop(lp)?;
            return Err(e);
        }
        w.interest = interest;
        w.cb = Some(Box::new(cb));
        w.epoch = w.epoch.wrapping_add(1);
        lp.watch_sync(self.0);
        Ok(())
    }

    /// Stops waiting, and drops the callback. Stopping twice does nothing.
    pub fn stop(self, lp: &mut Loop) -> io::Result<()> {
        // A closing watch is stopped already: no error, as for every handle's `stop`.
        if self.is_closing(lp)? {
            return Ok(());
        }
        let w = lp.watch_mut(self.0)?;
        w.interest = Interest::empty();
        w.cb = None;
        w.epoch = w.epoch.wrapping_add(1);
        lp.watch_sync(self.0);
        Ok(())
    }

    /// The fd, to read or write it (from the callback, say).
    pub fn fd(self, lp: &Loop) -> io::Result<BorrowedFd<'_>> {
        let slot = lp.slot(self.0, HandleKind::FdWatch)?;
        if slot.flags.contains(crate::handle::Flags::CLOSING) {
            return Err(crate::event_loop::closing_error(HandleKind::FdWatch));
        }
        match &slot.kind {
            Kind::FdWatch(w) => w.io.fd(),
            _ => unreachable!("slot checked the kind"),
        }
    }
}

fn io_interest(i: Interest) -> IoInterest {
    let mut out = IoInterest::empty();
    if i.contains(Interest::READABLE) {
        out |= IoInterest::READABLE;
    }
    if i.contains(Interest::WRITABLE) {
        out |= IoInterest::WRITABLE;
    }
    out
}

impl Loop {
    fn watch_mut(&mut self, id: HandleId) -> io::Result<&mut WatchState> {
        match &mut self.open_slot_mut(id, HandleKind::FdWatch)?.kind {
            Kind::FdWatch(w) => Ok(w),
            _ => unreachable!("open_slot_mut checked the kind"),
        }
    }

    fn live_watch(&mut self, id: HandleId) -> Option<&mut WatchState> {
        match self.live_slot_mut(id) {
            Some(slot) if !slot.flags.contains(crate::handle::Flags::CLOSING) => match &mut slot.kind {
                Kind::FdWatch(w) => Some(w),
                _ => None,
            },
            _ => None,
        }
    }

    /// Brings the watch's registration and active flag in line with its interest.
    fn watch_sync(&mut self, id: HandleId) {
        let Some(w) = self.live_watch(id) else { return };
        let active = w.cb.is_some();
        if w.io.want(io_interest(w.interest)) {
            self.io_dirty.push(id);
        }
        self.set_active(id, active);
    }

    /// Readiness for watch `id`, from the poller, the always-ready list or the select helper.
    pub(crate) fn watch_event(&mut self, id: HandleId, r: IoReadiness) {
        let Some(w) = self.live_watch(id) else { return };
        let mut ready = Readiness::empty();
        if r.contains(IoReadiness::READABLE) && w.interest.contains(Interest::READABLE) {
            ready |= Readiness::READABLE;
        }
        if r.contains(IoReadiness::WRITABLE) && w.interest.contains(Interest::WRITABLE) {
            ready |= Readiness::WRITABLE;
        }
        if r.contains(IoReadiness::HUP) {
            ready |= Readiness::HANGUP;
        }
        if r.contains(IoReadiness::ERROR) {
            ready |= Readiness::ERROR;
        }
        if ready.is_empty() {
            return;
        }
        let Some(mut cb) = w.cb.take() else { return };
        let epoch = w.epoch;
        cb(self, FdWatch(id), Ok(ready));
        if let Some(w) = self.live_watch(id) {
            if w.epoch == epoch && w.cb.is_none() {
                w.cb = Some(cb);
            }
        }
    }

    /// The loop cannot watch the fd any more: the watch stops, and its callback hears why.
    pub(crate) fn watch_error(&mut self, id: HandleId, e: io::Error) {
        log::debug!("loop {}: fd watch {id:?} failed: {e}", self.id);
        let Some(w) = self.live_watch(id) else { return };
        let e = if w.fd_replaced() {
            w.replaced_error(e)
        } else {
            context(e, format!("cannot watch fd {} any more", w.raw_fd()))
        };
        let cb = w.cb.take();
        w.interest = Interest::empty();
        w.epoch = w.epoch.wrapping_add(1);
        self.watch_sync(id);
        if let Some(mut cb) = cb {
            cb(self, FdWatch(id), Err(e));
        }
    }

    /// Close's part: out of the backend, fd closed, callback dropped.
    pub(crate) fn watch_stop_for_close(&mut self, id: HandleId) {
        self.io_release(id);
        if let Some(Kind::FdWatch(w)) = self.live_slot_mut(id).map(|s| &mut s.kind) {
            w.cb = None;
            w.interest = Interest::empty();
        }
    }
}
