//! [`AnyStream`]: a pipe or a terminal, for code that takes whatever its stdin or stdout is.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

use evloop_platform::fd;

use crate::error::context;
use crate::event_loop::Loop;
use crate::handle::HandleId;
use crate::pipe::Pipe;
use crate::stream::ReadEvent;
use crate::tty::Tty;

/// A stream that is either a [`Pipe`] or a [`Tty`], with the operations they share.
///
/// A program's stdin and stdout are a terminal at one time and a pipe, a file or
/// `/dev/null` at another. [`AnyStream::open`] opens a terminal as a [`Tty`] (so it is
/// reopened privately and its settings restored) and anything else as a [`Pipe`]; the
/// methods below forward to whichever it is. Match on the variants for what only one has
/// (a terminal's mode and window size).
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use evloop::{AnyStream, Loop, ReadEvent, RunMode};
///
/// let mut lp = Loop::new()?;
/// let (r, mut w) = std::io::pipe()?;
/// std::io::Write::write_all(&mut w, b"hello")?;
/// drop(w);
/// let input = AnyStream::open(&mut lp, r.into())?;
/// assert!(matches!(input, AnyStream::Pipe(_)));
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let sink = got.clone();
/// input.read_start(&mut lp, move |lp, s, ev| match ev {
///     ReadEvent::Data(d) => sink.borrow_mut().extend_from_slice(d),
///     _ => s.close(lp).unwrap(),
/// })?;
/// lp.run(RunMode::Default)?;
/// assert_eq!(&got.borrow()[..], b"hello");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum AnyStream {
    /// A pipe, FIFO, socket, file or device.
    Pipe(Pipe),
    /// A terminal.
    Tty(Tty),
}

impl From<Pipe> for AnyStream {
    fn from(p: Pipe) -> AnyStream {
        AnyStream::Pipe(p)
    }
}

impl From<Tty> for AnyStream {
    fn from(t: Tty) -> AnyStream {
        AnyStream::Tty(t)
    }
}

/// The callback of [`AnyStream::pipe_to`] and [`AnyStream::tee`].
type RelayDoneCb = Box<dyn FnOnce(&mut Loop, io::Result<u64>)>;

/// A running [`AnyStream::tee`] (or `pipe_to`, a tee to one destination).
struct Relay {
    /// The source: closed, it takes `done` with it.
    from: AnyStream,
    /// Taken by the first end, success or error.
    done: Option<RelayDoneCb>,
    bytes: u64,
    /// Reading is paused until this many destinations' queues are out.
    draining: usize,
    /// The source reached its end of file: this many destinations are still flushing.
    ended: bool,
    flushing: usize,
}

impl Relay {
    /// The callback of a destination's last write or shutdown: once every destination's
    /// has come, the relay's end, with the bytes relayed; an error ends it at once.
    fn flushed(relay: &Rc<RefCell<Relay>>) -> impl FnOnce(&mut Loop, io::Result<()>) + 'static {
        let relay = relay.clone();
        move |lp, res| {
            let (bytes, left) = {
                let mut r = relay.borrow_mut();
                r.flushing = r.flushing.saturating_sub(1);
                (r.bytes, r.flushing)
            };
            if left == 0 || res.is_err() {
                Relay::finish(&relay, lp, res.map(|()| bytes))
            }
        }
    }

    fn finish(relay: &Rc<RefCell<Relay>>, lp: &mut Loop, res: io::Result<u64>) {
        let (from, done) = {
            let mut relay = relay.borrow_mut();
            (relay.from, relay.done.take())
        };
        // Not once the program closed the source (a write still pending may fail after).
        if let Some(done) = done.filter(|_| from.is_closing(lp).is_ok_and(|closing| !closing)) {
            done(lp, res);
        }
    }
}

/// Calls the same method on whichever handle `$s` is.
macro_rules! forward {
    ($s:expr, $h:ident => $call:expr) => {
        match $s {
            AnyStream::Pipe($h) => $call,
            AnyStream::Tty($h) => $call,
        }
    };
}

impl AnyStream {
    /// Opens `fd` as a [`Tty`] if it is a terminal, else as a [`Pipe`]; the handle owns it.
    /// See [`Tty::open`] and [`Pipe::open`] for what each does to the fd, and to the open
    /// file description it may share with the shell and with children that inherit it.
    ///
    /// For stdin, stdout or stderr, [`stdin`](AnyStream::stdin), [`stdout`](AnyStream::stdout)
    /// and [`stderr`](AnyStream::stderr) pass a duplicate (the handle closes the fd it owns,
    /// and the process's fds 0 to 2 should stay in place), and name the stream in errors.
    ///
    /// Where a handle cannot get a description of its own (a pipe on macOS and FreeBSD, a
    /// packet-mode pipe on Linux, a pty master: see [`Pipe::open`] and [`Tty::open`]), it
    /// sets `O_NONBLOCK` on the one it shares (until it closes; a pty master's for good),
    /// and the program's own `println!` to it, or `eprintln!` after `2>&1`, can then fail
    /// with `EAGAIN` and panic. [`shares_nonblocking`](AnyStream::shares_nonblocking) tells;
    /// write such output through the handle while it is open.
    pub fn open(lp: &mut Loop, fd: OwnedFd) -> io::Result<AnyStream> {
        // (Checked here too, so that the error does not call it a pipe.)
        let (fd, _) = crate::stream::open_fd_flags(fd, "stream")?;
        if fd::isatty(fd.as_fd()) {
            Tty::open(lp, fd).map(AnyStream::Tty)
        } else {
            Pipe::open(lp, fd).map(AnyStream::Pipe)
        }
    }

    /// The process's stdin (fd 0) as a stream: [`open`](AnyStream::open) of a duplicate of
    /// it, so fd 0 itself stays in place (the handle closes its duplicate), with errors that
    /// name stdin. A terminal comes as a [`Tty`], anything else as a [`Pipe`]; what either
    /// does to a description it shares with the shell is in [`open`](AnyStream::open).
    ///
    /// `cat`, whatever stdin and stdout are (a terminal, a pipe, a file, `/dev/null`):
    ///
    /// ```no_run
    /// use evloop::{AnyStream, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let input = AnyStream::stdin(&mut lp)?;
    /// let output = AnyStream::stdout(&mut lp)?;
    /// // Flushed at the end, not shut down: the process's stdout stays usable.
    /// input.pipe_to(&mut lp, output, false, move |lp, res| {
    ///     res.unwrap();
    ///     input.close(lp).unwrap();
    ///     output.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stdin(lp: &mut Loop) -> io::Result<AnyStream> {
        Self::open_std(lp, io::stdin().as_fd(), "stdin (fd 0)")
    }

    /// The process's stdout (fd 1) as a stream, as [`stdin`](AnyStream::stdin) opens fd 0.
    ///
    /// ```
    /// use evloop::{AnyStream, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let out = AnyStream::stdout(&mut lp)?;
    /// out.write(&mut lp, b"hello\n", move |lp, res| {
    ///     res.unwrap();
    ///     out.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stdout(lp: &mut Loop) -> io::Result<AnyStream> {
        Self::open_std(lp, io::stdout().as_fd(), "stdout (fd 1)")
    }

    /// The process's stderr (fd 2) as a stream, as [`stdin`](AnyStream::stdin) opens fd 0.
    pub fn stderr(lp: &mut Loop) -> io::Result<AnyStream> {
        Self::open_std(lp, io::stderr().as_fd(), "stderr (fd 2)")
    }

    fn open_std(lp: &mut Loop, fd: BorrowedFd<'_>, what: &str) -> io::Result<AnyStream> {
        let own = fd.try_clone_to_owned().map_err(|e| context(e, format!("cannot open {what}")))?;
        // (The errors below name the duplicate's number: said here which it is.)
        let dup = std::os::fd::AsRawFd::as_raw_fd(&own);
        AnyStream::open(lp, own).map_err(|e| context(e, format!("{what}, duplicated as fd {dup}")))
    }

    /// The pipe, if it is one.
    pub fn as_pipe(self) -> Option<Pipe> {
        match self {
            AnyStream::Pipe(p) => Some(p),
            AnyStream::Tty(_) => None,
        }
    }

    /// The terminal, if it is one.
    pub fn as_tty(self) -> Option<Tty> {
        match self {
            AnyStream::Tty(t) => Some(t),
            AnyStream::Pipe(_) => None,
        }
    }

    /// The untyped id.
    pub fn id(self) -> HandleId {
        forward!(self, h => h.id())
    }

    /// As [`Pipe::read_start`]; the callback gets this `AnyStream` back.
    pub fn read_start(
        self,
        lp: &mut Loop,
        mut cb: impl FnMut(&mut Loop, AnyStream, ReadEvent<'_>) + 'static,
    ) -> io::Result<()> {
        match self {
            AnyStream::Pipe(p) => p.read_start(lp, move |lp, p, ev| cb(lp, AnyStream::Pipe(p), ev)),
            AnyStream::Tty(t) => t.read_start(lp, move |lp, t, ev| cb(lp, AnyStream::Tty(t), ev)),
        }
    }

    /// Relays this stream to `to`, as Node's `pipe()` does: every byte read is written to
    /// `to`, and reading pauses while `to` has more than
    /// [`PIPE_TO_QUEUE_BYTES_MAX`](crate::limits::PIPE_TO_QUEUE_BYTES_MAX) queued (a slow
    /// reader at `to`'s end holds the writer at this one's end back, and memory stays
    /// bounded), going on once that is out. At this stream's end of file, with `end`, `to`
    /// is [`shutdown`](AnyStream::shutdown) (its reader sees end of file once no other fd
    /// on its pipe is open: the process's own fd 1 keeps [`stdout`](AnyStream::stdout)'s
    /// open until the process exits; a `to` that cannot be shut down, a terminal, is only
    /// flushed), and without it, only flushed, for more of the program's own writes.
    ///
    /// `done` runs once, from a callback, never inside this call: with the number of bytes
    /// relayed once everything is written (and shut down), or with the first error, which
    /// ends the relay (a read error; a write error, `EPIPE` when `to`'s reader is gone;
    /// `ECANCELED` when `to` is closed with writes queued; the error of a `to` closed
    /// before). Reading has stopped by then, and neither stream is closed: `done` closes
    /// what it no longer needs.
    ///
    /// It takes this stream's reading over: an error (`AlreadyExists`) if it is reading
    /// already, and nothing happens then (a paused stream's kept callback is replaced, as
    /// [`read_start`](AnyStream::read_start) replaces it); while it runs, the program leaves
    /// this stream's reading alone (a pause of its own would be resumed, a stop would end
    /// the relay without a word). To end it early, close a stream: closing this one drops
    /// `done` uncalled, as it drops any read callback; closing `to` ends the relay with an
    /// error at this stream's next read (a relay from a source that sends nothing waits
    /// for good, as a read does), whose kind depends on the moment (`NotFound` for the
    /// closed handle, `NotConnected` while it closes, `ECANCELED` for a write it
    /// cancelled): a program that closes `to` itself remembers that it did. For a [`Pipe`] or [`Tty`], `AnyStream::from(pipe).pipe_to(..)`.
    ///
    /// ```
    /// use evloop::{AnyStream, Command, Loop, RunMode, Stdio};
    ///
    /// let mut lp = Loop::new()?;
    /// // `seq 100000 | wc -l`, with the program in between.
    /// let seq = Command::new("seq").arg("100000").stdout(Stdio::Pipe).spawn(&mut lp, |lp, p, _| {
    ///     p.close(lp).unwrap();
    /// })?;
    /// let mut wc = Command::new("wc");
    /// wc.arg("-l").stdin(Stdio::Pipe).stdout(Stdio::Pipe);
    /// let wc = wc.spawn(&mut lp, |lp, p, _| p.close(lp).unwrap())?;
    /// let (from, to) = (seq.stdout.unwrap(), wc.stdin.unwrap());
    /// AnyStream::from(from).pipe_to(&mut lp, to, true, move |lp, res| {
    ///     assert_eq!(res.unwrap(), 588_895); // the bytes of the 100,000 lines
    ///     from.close(lp).unwrap();
    ///     to.close(lp).unwrap();
    /// })?;
    /// let out = wc.stdout.unwrap();
    /// let counted = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    /// let c = counted.clone();
    /// out.read_start(&mut lp, move |lp, out, ev| match ev {
    ///     evloop::ReadEvent::Data(d) => c.borrow_mut().extend_from_slice(d),
    ///     _ => out.close(lp).unwrap(),
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(String::from_utf8_lossy(&counted.borrow()).trim(), "100000");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pipe_to(
        self,
        lp: &mut Loop,
        to: impl Into<AnyStream>,
        end: bool,
        done: impl FnOnce(&mut Loop, io::Result<u64>) + 'static,
    ) -> io::Result<()> {
        self.tee(lp, [to.into()], end, done)
    }

    /// [`pipe_to`](AnyStream::pipe_to) to several streams at once, as `tee(1)` copies its
    /// input: every byte read is written to each of `to`, in the same order, and reading
    /// pauses while any of them has more than
    /// [`PIPE_TO_QUEUE_BYTES_MAX`](crate::limits::PIPE_TO_QUEUE_BYTES_MAX) queued, until
    /// all of those are out (the slowest reader sets the pace, and memory stays bounded: up
    /// to that bound plus a read cap per destination). At the end of file each is shut down
    /// with `end`, or flushed, and `done` gets the bytes relayed once all are. The first
    /// error, from the source or any destination, ends the relay and goes to `done`;
    /// what the other destinations have queued is still written. No stream is closed.
    /// Everything else is as for `pipe_to`. An error for an empty `to`, and for a stream
    /// named twice in it.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{AnyStream, Command, Loop, Pipe, ReadEvent, RunMode, Stdio};
    ///
    /// let mut lp = Loop::new()?;
    /// // `seq 3 | tee` into two pipes of the program's own.
    /// let seq = Command::new("seq").arg("3").stdout(Stdio::Pipe).spawn(&mut lp, |lp, p, _| {
    ///     p.close(lp).unwrap();
    /// })?;
    /// let (a_r, a_w) = Pipe::pair(&mut lp)?;
    /// let (b_r, b_w) = Pipe::pair(&mut lp)?;
    /// let from = seq.stdout.unwrap();
    /// AnyStream::from(from).tee(&mut lp, [a_w, b_w], true, move |lp, res| {
    ///     assert_eq!(res.unwrap(), 6);
    ///     for p in [from, a_w, b_w] {
    ///         p.close(lp).unwrap();
    ///     }
    /// })?;
    /// let mut got = Vec::new();
    /// for r in [a_r, b_r] {
    ///     let g = Rc::new(RefCell::new(Vec::new()));
    ///     got.push(g.clone());
    ///     r.read_start(&mut lp, move |lp, r, ev| match ev {
    ///         ReadEvent::Data(d) => g.borrow_mut().extend_from_slice(d),
    ///         _ => r.close(lp).unwrap(),
    ///     })?;
    /// }
    /// lp.run(RunMode::Default)?;
    /// for g in got {
    ///     assert_eq!(&g.borrow()[..], b"1\n2\n3\n");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn tee<T: Into<AnyStream>>(
        self,
        lp: &mut Loop,
        to: impl IntoIterator<Item = T>,
        end: bool,
        done: impl FnOnce(&mut Loop, io::Result<u64>) + 'static,
    ) -> io::Result<()> {
        let to: Rc<[AnyStream]> = to.into_iter().map(Into::into).collect();
        if to.is_empty() {
            return Err(crate::error::invalid("tee: no stream to write to"));
        }
        // (The source may be among them: a socket's or a terminal's echo.)
        for (i, s) in to.iter().enumerate() {
            if to[..i].contains(s) {
                return Err(crate::error::invalid(format!("tee: {s:?} is named twice")));
            }
        }
        let relay = Rc::new(RefCell::new(Relay {
            from: self,
            done: Some(Box::new(done)),
            bytes: 0,
            draining: 0,
            ended: false,
            flushing: 0,
        }));
        let r = relay.clone();
        self.read_start(lp, move |lp, from, ev| match ev {
            ReadEvent::Data(d) => {
                for &to in to.iter() {
                    if let Err(e) = to.send(lp, d) {
                        let _ = from.read_stop(lp);
                        return Relay::finish(&r, lp, Err(e));
                    }
                }
                r.borrow_mut().bytes += d.len() as u64;
                let over = |to: AnyStream| {
                    to.write_queue_size(lp).is_ok_and(|n| n > crate::limits::PIPE_TO_QUEUE_BYTES_MAX)
                };
                let full: Vec<AnyStream> = to.iter().copied().filter(|&to| over(to)).collect();
                if full.is_empty() || r.borrow().draining > 0 {
                    return;
                }
                let _ = from.read_pause(lp);
                r.borrow_mut().draining = full.len();
                for to in full {
                    let waits = r.clone();
                    let drained = move |lp: &mut Loop, res: io::Result<()>| {
                        let left = {
                            let mut w = waits.borrow_mut();
                            w.draining = w.draining.saturating_sub(1);
                            w.draining
                        };
                        match res {
                            Err(e) => {
                                let _ = from.read_stop(lp);
                                Relay::finish(&waits, lp, Err(e))
                            }
                            // Once every full queue is out; not after the end, nor once the
                            // relay ended (an error at another destination: the source's
                            // reading is the program's again), nor once the program stopped
                            // or closed `from`.
                            Ok(())
                                if left == 0
                                    && !waits.borrow().ended
                                    && waits.borrow().done.is_some()
                                    && from.is_paused(lp).unwrap_or(false) =>
                            {
                                let _ = from.read_resume(lp);
                            }
                            Ok(()) => {}
                        }
                    };
                    if let Err(e) = to.write(lp, b"", drained) {
                        let _ = from.read_stop(lp);
                        return Relay::finish(&r, lp, Err(e));
                    }
                }
            }
            ReadEvent::Eof => {
                {
                    let mut relay = r.borrow_mut();
                    relay.ended = true;
                    relay.flushing = to.len();
                }
                // Every destination hears of the end, even after one refused it.
                let mut refused = None;
                for &to in to.iter() {
                    let res = if end {
                        to.end(lp, Relay::flushed(&r))
                    } else {
                        to.write(lp, b"", Relay::flushed(&r))
                    };
                    if let Err(e) = res {
                        refused.get_or_insert(e);
                    }
                }
                if let Some(e) = refused {
                    Relay::finish(&r, lp, Err(e));
                }
            }
            ReadEvent::Error(e) => Relay::finish(&r, lp, Err(e)),
        })
    }

    /// As [`Pipe::read_stop`].
    pub fn read_stop(self, lp: &mut Loop) -> io::Result<()> {
        forward!(self, h => h.read_stop(lp))
    }

    /// As [`Pipe::read_pause`].
    pub fn read_pause(self, lp: &mut Loop) -> io::Result<()> {
        forward!(self, h => h.read_pause(lp))
    }

    /// As [`Pipe::read_resume`].
    pub fn read_resume(self, lp: &mut Loop) -> io::Result<()> {
        forward!(self, h => h.read_resume(lp))
    }

    /// As [`Pipe::write`].
    pub fn write(
        self,
        lp: &mut Loop,
        data: &[u8],
        cb: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> io::Result<()> {
        forward!(self, h => h.write(lp, data, cb))
    }

    /// As [`Pipe::send`].
    pub fn send(self, lp: &mut Loop, data: &[u8]) -> io::Result<()> {
        forward!(self, h => h.send(lp, data))
    }

    /// As [`Pipe::write_vec`].
    pub fn write_vec(
        self,
        lp: &mut Loop,
        data: Vec<u8>,
        cb: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> io::Result<()> {
        forward!(self, h => h.write_vec(lp, data, cb))
    }

    /// As [`Pipe::write_shared`].
    pub fn write_shared(
        self,
        lp: &mut Loop,
        data: impl AsRef<[u8]> + 'static,
        cb: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> io::Result<()> {
        forward!(self, h => h.write_shared(lp, data, cb))
    }

    /// As [`Pipe::try_write`].
    pub fn try_write(self, lp: &mut Loop, data: &[u8]) -> io::Result<usize> {
        forward!(self, h => h.try_write(lp, data))
    }

    /// As [`Pipe::try_read`].
    pub fn try_read(self, lp: &mut Loop, buf: &mut [u8]) -> io::Result<usize> {
        forward!(self, h => h.try_read(lp, buf))
    }

    /// As [`Pipe::shutdown`].
    pub fn shutdown(
        self,
        lp: &mut Loop,
        cb: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> io::Result<()> {
        forward!(self, h => h.shutdown(lp, cb))
    }

    /// As [`Pipe::end`]: `shutdown` where the write side can close alone, else an empty
    /// write that waits for the queue to drain.
    pub fn end(self, lp: &mut Loop, cb: impl FnOnce(&mut Loop, io::Result<()>) + 'static) -> io::Result<()> {
        forward!(self, h => h.end(lp, cb))
    }

    /// As [`Pipe::write_queue_size`].
    pub fn write_queue_size(self, lp: &Loop) -> io::Result<usize> {
        forward!(self, h => h.write_queue_size(lp))
    }

    /// As [`Pipe::is_reading`].
    pub fn is_reading(self, lp: &Loop) -> io::Result<bool> {
        forward!(self, h => h.is_reading(lp))
    }

    /// As [`Pipe::is_paused`].
    pub fn is_paused(self, lp: &Loop) -> io::Result<bool> {
        forward!(self, h => h.is_paused(lp))
    }

    /// As [`Pipe::set_read_cap`].
    pub fn set_read_cap(self, lp: &mut Loop, bytes: usize) -> io::Result<()> {
        forward!(self, h => h.set_read_cap(lp, bytes))
    }

    /// As [`Pipe::read_cap`].
    pub fn read_cap(self, lp: &Loop) -> io::Result<usize> {
        forward!(self, h => h.read_cap(lp))
    }

    /// As [`Pipe::shares_nonblocking`].
    pub fn shares_nonblocking(self, lp: &Loop) -> io::Result<bool> {
        forward!(self, h => h.shares_nonblocking(lp))
    }

    /// As [`Pipe::fd`].
    pub fn fd(self, lp: &Loop) -> io::Result<BorrowedFd<'_>> {
        forward!(self, h => h.fd(lp))
    }

    /// As [`Pipe::close`].
    pub fn close(self, lp: &mut Loop) -> io::Result<()> {
        forward!(self, h => h.close(lp))
    }

    /// As [`Pipe::close_with`].
    pub fn close_with(self, lp: &mut Loop, cb: impl FnOnce(&mut Loop) + 'static) -> io::Result<()> {
        forward!(self, h => h.close_with(lp, cb))
    }

    /// As [`Pipe::set_ref`].
    pub fn set_ref(self, lp: &mut Loop, referenced: bool) -> io::Result<()> {
        forward!(self, h => h.set_ref(lp, referenced))
    }

    /// As [`Pipe::has_ref`].
    pub fn has_ref(self, lp: &Loop) -> io::Result<bool> {
        forward!(self, h => h.has_ref(lp))
    }

    /// As [`Pipe::is_active`].
    pub fn is_active(self, lp: &Loop) -> io::Result<bool> {
        forward!(self, h => h.is_active(lp))
    }

    /// As [`Pipe::is_closing`].
    pub fn is_closing(self, lp: &Loop) -> io::Result<bool> {
        forward!(self, h => h.is_closing(lp))
    }
}
