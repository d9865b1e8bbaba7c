//! Pipe handles: a pipe pair made by the loop, or any fd opened as a stream.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use evloop_platform::fd::{self, FileType};
use evloop_platform::termios;

use crate::error::context;
use crate::event_loop::Loop;
use crate::handle::{HandleKind, typed_handle};
use crate::io::{Io, IoMode};
use crate::stream::{Stream, open_fd_flags, stream_methods};

typed_handle!(
    /// A pipe: a stream of bytes over an fd, with bounded reads and a write queue.
    ///
    /// Make a connected pair with [`Pipe::pair`], open any fd with [`Pipe::open`], or get one
    /// from a child's stdio. A pipe whose fd the poller refuses still works: regular files and
    /// `/dev/null` run in an always-ready mode on Linux, and on macOS character devices go to
    /// the select helper thread.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Loop, Pipe, ReadEvent, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let (rx, tx) = Pipe::pair(&mut lp)?;
    /// let got = Rc::new(RefCell::new(Vec::new()));
    /// let sink = got.clone();
    /// rx.read_start(&mut lp, move |lp, rx, ev| match ev {
    ///     ReadEvent::Data(bytes) => sink.borrow_mut().extend_from_slice(bytes),
    ///     ReadEvent::Eof => rx.close(lp).unwrap(),
    ///     ReadEvent::Error(e) => panic!("{e}"),
    /// })?;
    /// tx.write(&mut lp, b"hello", |_, res| res.unwrap())?;
    /// tx.shutdown(&mut lp, |lp, res| res.unwrap())?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(&got.borrow()[..], b"hello");
    /// # tx.close(&mut lp)?; lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Pipe,
    HandleKind::Pipe
);

stream_methods!(Pipe, HandleKind::Pipe);

/// What an fd refers to, as [`guess_handle`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandleType {
    /// A terminal: open it with [`Tty::open`](crate::Tty::open).
    Tty,
    /// A pipe or FIFO.
    Pipe,
    /// A regular file, or a character or block device that is not a terminal (`/dev/null`).
    File,
    /// A socket.
    Socket,
    /// Something else (a directory, an unknown type).
    Unknown,
}

/// Clears `O_NONBLOCK` on every shared open file description that evloop made nonblocking
/// in place and has not put back yet: an inherited blocking pipe or FIFO that could not be
/// opened again privately (on macOS and FreeBSD, say), or a blocking socket on macOS, given
/// to [`Pipe::open`], or a terminal that [`Tty::open`](crate::Tty::open) could not reopen
/// privately (a read-only one). It is for a program that is about to end with those
/// handles still open, so that the shell or the other processes sharing them do not
/// inherit `EAGAIN`s.
///
/// Closing a handle, or dropping its loop, puts its description back anyway, and `exit`
/// calls this for what is still open then. A process killed by a signal runs neither:
/// [`install_restore_hooks`](crate::tty::install_restore_hooks) makes most signals that end a
/// process by default (`SIGINT`, `SIGTERM`, `SIGHUP`, `SIGABRT`, ...: the list is there) call
/// this (and restore the terminal) before the process ends; a program with its own handler
/// for such a signal calls it there. Handles still open
/// afterwards may block the loop, so it is for the very end only.
///
/// It is async-signal-safe and preserves `errno`. It fails with `EBUSY`, rather than wait,
/// if a handle is being opened or closed at that moment, on another thread or by the code
/// the signal interrupted: never retry it in a loop. In a child forked without exec it does
/// nothing (the descriptions are the parent's to restore). Up to
/// [`SHARED_NONBLOCKING_MAX`](evloop_platform::fd::SHARED_NONBLOCKING_MAX) descriptions are
/// tracked at once; beyond that, only their close puts them back.
///
/// ```
/// use std::os::fd::{AsFd, OwnedFd};
/// use nix::fcntl::{FcntlArg, OFlag, fcntl};
/// use evloop::{Loop, Pipe};
///
/// let nonblocking = |fd: &OwnedFd| {
///     let fl = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL).unwrap());
///     fl.contains(OFlag::O_NONBLOCK)
/// };
/// // A named FIFO open for reading only: its description is the one it was opened with
/// // (an anonymous pipe would get one of its own on Linux, and a socket is left blocking).
/// let dir = std::env::temp_dir().join(format!("restore-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("fifo");
/// nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
/// // (A writer first, so that opening the reader does not wait for one.)
/// let _writer = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
/// let reader = OwnedFd::from(std::fs::File::open(&path)?);
/// std::fs::remove_dir_all(&dir)?;
/// // Another holder of the same description, as a parent shell would be.
/// let shared = reader.try_clone()?;
/// let mut lp = Loop::new()?;
/// let pipe = Pipe::open(&mut lp, reader)?;
/// assert!(nonblocking(&shared));
/// evloop::restore_shared_blocking()?; // what a fatal signal's handler would do
/// assert!(!nonblocking(&shared));
/// # pipe.close(&mut lp)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn restore_shared_blocking() -> io::Result<()> {
    fd::restore_shared_blocking()
}

/// Keeps the fds evloop makes for itself at or above `floor`, from now on, in the whole
/// process: a shell's way to keep fds 0 to 9 for its scripts' redirections (`exec 3>file`
/// is a `dup2` onto 3, which would silently close whatever the loop had there, its poller
/// say). bash and zsh keep their own fds at 10 and above for the same reason.
///
/// It covers every fd evloop opens and keeps: a loop's poller and wakeup fd, its signal
/// pipe and select helper pipe, pidfds, the parent's ends of a child's pipes,
/// [`Pipe::pair`], descriptions [`Pipe::open`] and [`Tty::open`](crate::Tty::open) open
/// again, and [`openpty`](crate::tty::openpty). Each is moved up with `F_DUPFD_CLOEXEC` when
/// the kernel gives a lower number (one `fcntl` and one `close` more per fd), so it is still
/// close-on-exec. An fd the caller hands over (to [`Pipe::open`], say) keeps its number, and
/// fds made before the call keep theirs: set the floor before the first loop. `0`, the
/// default, leaves the numbers to the kernel, but for 0, 1 and 2: whatever the floor, no fd
/// evloop makes takes the number of a standard stream, which a program that closed its own
/// leaves free (an fd of the loop's there would be taken for that stream, by `println!` and
/// by the children given it). An fd handed to [`Pipe::open`] or
/// [`Tty::open`](crate::Tty::open) that they keep aside (while they work on a description
/// of their own) is moved above the floor too, its number closed at once; so is a copy that
/// [`Command::try_clone`](crate::Command::try_clone) makes. Fds the caller gives a child
/// ([`Stdio::Fd`](crate::Stdio::Fd)) stay the caller's, at their numbers: a shell copies
/// them above the floor itself (`fcntl(fd, F_DUPFD_CLOEXEC, floor)`, not std's
/// `try_clone`, which takes the lowest free number from 3), or a later redirection onto
/// that number changes what the child gets.
///
/// Fails with [`InvalidInput`](io::ErrorKind::InvalidInput) for a negative floor and for one
/// at or above the soft fd limit (`RLIMIT_NOFILE`). Once the numbers at and above the floor
/// are used up, making an fd fails with `EMFILE`, even if lower ones are free (a limit
/// lowered to the floor or below afterwards: `EINVAL` where a lower number is free,
/// `EMFILE` otherwise; the floor stays as it was when a call fails). Keep the floor
/// small (10, as bash): the kernel's fd table, and the select helper's sets, grow to the
/// highest number in use. In a program with other threads, an fd lives at its low number
/// for a moment before its move: a `dup2` onto that number by another thread then would
/// replace it (as it would without a floor).
///
/// ```standalone_crate
/// use std::os::fd::AsRawFd;
/// use evloop::{Loop, Pipe};
///
/// evloop::set_fd_floor(10)?;
/// let mut lp = Loop::new()?;
/// assert!(lp.backend_fd().as_raw_fd() >= 10);
/// let (r, w) = Pipe::pair(&mut lp)?;
/// assert!(r.fd(&lp)?.as_raw_fd() >= 10 && w.fd(&lp)?.as_raw_fd() >= 10);
/// assert_eq!(evloop::fd_floor(), 10);
/// # evloop::set_fd_floor(0)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_fd_floor(floor: RawFd) -> io::Result<()> {
    fd::set_fd_floor(floor)
}

/// The floor [`set_fd_floor`] set (0 by default).
pub fn fd_floor() -> RawFd {
    fd::fd_floor()
}

/// The caller's fd that a handle keeps open, untouched, while it works on a description of
/// its own (so that the number is not reused meanwhile): moved above the fd floor when one
/// is set, its low number closed at once, since a shell will `dup2` onto that number (and
/// the release would then close the shell's file). Where it cannot move (no number above
/// the floor is free), it stays where it is.
pub(crate) fn kept_above_floor(original: OwnedFd) -> OwnedFd {
    if original.as_raw_fd() >= fd::fd_floor() {
        return original;
    }
    match fd::dup_cloexec(original.as_fd(), 0) {
        Ok(moved) => moved,
        Err(e) => {
            log::debug!("fd {} stays below the fd floor: {e}", original.as_raw_fd());
            original
        }
    }
}

/// Guesses what kind of handle suits `fd` (libuv's `uv_guess_handle`).
///
/// ```
/// use std::os::fd::AsFd;
/// let (r, _w) = std::io::pipe()?;
/// assert_eq!(evloop::guess_handle(r.as_fd())?, evloop::HandleType::Pipe);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn guess_handle(fd: BorrowedFd<'_>) -> io::Result<HandleType> {
    if fd::isatty(fd) {
        return Ok(HandleType::Tty);
    }
    Ok(match fd::file_type(fd)? {
        FileType::Fifo => HandleType::Pipe,
        FileType::Socket => HandleType::Socket,
        FileType::Regular | FileType::CharDevice | FileType::BlockDevice => HandleType::File,
        FileType::Directory | FileType::Other => HandleType::Unknown,
    })
}

impl Pipe {
    /// Creates a pipe and opens both ends on the loop: `(read end, write end)`. Both fds are
    /// close-on-exec and nonblocking: their open file descriptions are the loop's own, so the
    /// flag touches nobody else. A copy of one given to a child (through
    /// [`Pipe::fd`](Pipe::fd) and [`Stdio::Fd`](crate::Stdio::Fd)) shares that description and
    /// its `O_NONBLOCK`, and the child's reads and writes may fail with `EAGAIN`. To share a
    /// pipe with children, give them a blocking pipe (`std::io::pipe()`) and, on Linux, open
    /// the program's own copy with [`Pipe::open`](Pipe::open), which keeps their description
    /// blocking (on macOS and FreeBSD it cannot: there the program reads its copy blocking,
    /// from a thread); or let [`Stdio::Pipe`](crate::Stdio::Pipe) make the child's end.
    pub fn pair(lp: &mut Loop) -> io::Result<(Pipe, Pipe)> {
        let (r, w) = fd::pipe()?;
        fd::set_fresh_pipe_nonblocking(r.as_fd())?;
        fd::set_fresh_pipe_nonblocking(w.as_fd())?;
        let rx = Pipe::from_private(lp, r, true, false)?;
        let tx = Pipe::from_private(lp, w, false, true)?;
        Ok((rx, tx))
    }

    /// Opens a pipe end we created (nonblocking, private), without probing.
    pub(crate) fn from_private(
        lp: &mut Loop,
        fd: OwnedFd,
        readable: bool,
        writable: bool,
    ) -> io::Result<Pipe> {
        let mode = lp.choose_io_mode(fd.as_fd(), true, true)?;
        let stream = Stream::new(Io::new(fd, mode), HandleKind::Pipe, readable, writable);
        Ok(Pipe(lp.stream_insert(stream)))
    }

    /// A socket a pipe handle can carry: a stream, and not a listening one.
    #[cold]
    fn check_socket(fd: BorrowedFd<'_>, raw: RawFd) -> io::Result<()> {
        let what = || format!("cannot open fd {raw} as a pipe");
        let why = if !fd::is_stream_socket(fd).map_err(|e| context(e, what()))? {
            "it is a datagram or packet socket, whose messages a byte stream would merge or cut (watch it \
             with an FdWatch instead)"
        } else if fd::is_listening_socket(fd).map_err(|e| context(e, what()))? {
            "it is a listening socket, which carries no bytes: watch it with an FdWatch, accept its \
             connections, and open those"
        } else {
            return Ok(());
        };
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {why}", what())))
    }

    /// Opens an existing fd as a pipe handle; the handle owns it and closes it on close.
    ///
    /// The fd may be a pipe, a FIFO, a connected stream socket, a terminal, a regular file or
    /// a device such as `/dev/null`. It is readable and writable as its access mode says (on
    /// FreeBSD both ends of a pipe are open for both, and a pipe carries data both ways:
    /// what is written to the end you read from goes to the other end's reader). A
    /// directory, a datagram or packet socket (a stream would merge or cut its messages: an
    /// [`FdWatch`](crate::FdWatch) suits it), a listening socket (an `FdWatch` says when to
    /// accept; the connections are what a pipe handle carries; not told apart on macOS,
    /// whose `getsockopt` cannot say), an fd with no file type (an
    /// eventfd, a timerfd, an epoll fd: an `FdWatch` again), an `O_PATH` fd, or an fd that is
    /// not open, is an error.
    ///
    /// `O_NONBLOCK` lives on the open file description, which other processes may share (a
    /// stdin or stdout inherited from a shell, and passed on to the program's children).
    /// So, on Linux, a blocking pipe is opened again through `/proc/self/fd` as a
    /// description of the handle's own: the flag then touches nobody else. That includes a
    /// named FIFO open for writing, or for both (a jobserver's FIFO, whose fd the program's
    /// children share and read blocking). A terminal is
    /// opened again through its name, on every system, as [`Tty::open`](crate::Tty::open)
    /// does; a pty master cannot be (its name is the cloning `/dev/ptmx`), and is made
    /// nonblocking and left so, being the program's own end of a pty it made (see
    /// [`Tty::open`](crate::Tty::open)). `fd` itself stays open, untouched,
    /// until the handle closes, so its number is not reused meanwhile (moved above the
    /// [fd floor](crate::set_fd_floor), when one is set). On Linux and FreeBSD
    /// a blocking socket (the stdout a service manager such as systemd hands its services)
    /// is left blocking: the handle reads and writes it with `MSG_DONTWAIT`, one call at a
    /// time. Where neither can be done (a pipe on macOS and FreeBSD; a socket on macOS,
    /// whose `send` ignores `MSG_DONTWAIT`; a named FIFO open for reading only; a packet-mode
    /// pipe; a pipe another user made; no `/proc`; a terminal whose name cannot be
    /// opened), the flag is set on the shared
    /// description, and other holders see it too until the handle closes: a child that
    /// inherits such a stdout may fail its writes with `EAGAIN`. Closing the handle (or
    /// dropping its loop) clears it again (after the last of several handles on one
    /// description), and so do `exit` and
    /// [`restore_shared_blocking`] for a program that ends with the handle open:
    /// [`install_restore_hooks`](crate::tty::install_restore_hooks) makes most signals that
    /// end a process by default call it. Regular files, and on Linux devices that
    /// never block (`/dev/null`), are left alone. (Where the select helper serves such a
    /// device, macOS's `/dev/null`, the flag is set and cleared as for a pipe, which changes
    /// nothing for the device's other holders.)
    ///
    /// One of those other holders is often the program itself: with `2>&1`, stdout and
    /// stderr are one description, so after `Pipe::open` of a shared stdout a `println!`
    /// or `eprintln!` can fail with `EAGAIN` (and `print!` panics on it) while the reader
    /// is slow. Write such output through the handle instead while it is open;
    /// [`shares_nonblocking`](Pipe::shares_nonblocking) tells whether it must.
    ///
    /// A named FIFO whose writers come and go: read while no writer has it open, it gives
    /// end of file at once, each time reading starts again, so a reader that restarts on
    /// end of file spins. Keep a write end of its own open beside the reader (a second
    /// open of the FIFO for writing, after the one for reading; or one open for both,
    /// `O_RDWR`, which Linux allows for a FIFO and POSIX leaves undefined): there is then
    /// always a writer, and the reader waits for the next one's data instead of reading end
    /// of file.
    ///
    /// A regular file is read to its current end, which the read callback gets as end of
    /// file, once; reading then stops, and a new `read_start` goes on from where it stopped
    /// (the fd's offset), getting what was appended since. No system call waits for a file
    /// to grow, so a
    /// follower (`tail -f`) that restarts reading at once from that callback spins a CPU.
    /// Restart it from a [`Timer`](crate::Timer) instead (a `stat` on each tick also finds a
    /// file rotated or truncated; what changes and changes back between two ticks goes
    /// unseen, as with `tail -F`), or, on Linux, watch an inotify fd with an
    /// [`FdWatch`](crate::FdWatch) and read when it says the file changed.
    pub fn open(lp: &mut Loop, fd: OwnedFd) -> io::Result<Pipe> {
        let raw = fd.as_raw_fd();
        let (fd, flags) = open_fd_flags(fd, HandleKind::Pipe.name())?;
        let ty =
            fd::file_type(fd.as_fd()).map_err(|e| context(e, format!("cannot open fd {raw} as a pipe")))?;
        if ty == FileType::Directory {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot open fd {raw} as a pipe: it is a directory"),
            ));
        }
        if ty == FileType::Other {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot open fd {raw} as a pipe: it is not a byte stream (it has no file type, as an \
                     eventfd, a timerfd, a signalfd or an epoll fd; watch it with an FdWatch instead)"
                ),
            ));
        }
        if ty == FileType::Socket {
            Self::check_socket(fd.as_fd(), raw)?;
        }
        // A blocking pipe or terminal (a stdin or stdout shared with a shell, and with the
        // children that inherit it) gets a description of its own where the system can open
        // one, so that its O_NONBLOCK touches nobody else: a pipe through /proc/self/fd, a
        // terminal through its name (not a pty master: its name is the cloning /dev/ptmx).
        // The caller's fd stays open, untouched, until the handle is released: its number (1,
        // say) must not go to the next fd the loop makes.
        let tty = fd::isatty(fd.as_fd());
        let access = match (flags.readable, flags.writable) {
            (true, true) => fd::Access::ReadWrite,
            (true, false) => fd::Access::Read,
            _ => fd::Access::Write,
        };
        let (fd, original) = if (ty == FileType::Fifo || tty) && !flags.nonblocking {
            let reopened =
                if tty { termios::reopen(fd.as_fd(), access) } else { fd::reopen_pipe(fd.as_fd(), access) };
            match reopened {
                Ok(own) => (own, Some(kept_above_floor(fd))),
                // Out of fds (or of numbers above the fd floor): the O_NONBLOCK it needs goes
                // on the shared description, which the program should hear of.
                Err(e) if crate::error::os_error_code(&e) == Some(evloop_platform::libc::EMFILE) => {
                    log::warn!("loop {}: fd {raw} stays on its shared description: {e}", lp.id);
                    (fd, None)
                }
                // What the system cannot do is expected; a reopen refused (another user's
                // FIFO or pipe, no /proc) is the program's to hear of.
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                    log::debug!("loop {}: fd {raw} stays on its shared description: {e}", lp.id);
                    (fd, None)
                }
                Err(e) => {
                    log::warn!("loop {}: fd {raw} stays on its shared description: {e}", lp.id);
                    (fd, None)
                }
            }
        } else {
            (fd, None)
        };
        let private = original.is_some();
        let known_pollable = matches!(ty, FileType::Fifo | FileType::Socket);
        let mode = lp.choose_io_mode(fd.as_fd(), known_pollable, true)?;
        // Set here, or by another handle on this description (stdout and stderr after
        // `2>&1`): held either way, so closing one handle keeps it for the other.
        // A blocking socket stays blocking where the handle can pass MSG_DONTWAIT to each call.
        let dontwait = ty == FileType::Socket && !flags.nonblocking && fd::SEND_DONTWAIT_WORKS;
        // A regular file never blocks, whatever the flag: left alone through the select
        // helper too (where a forced helper takes it).
        let never_blocks = mode == IoMode::AlwaysReady || ty == FileType::Regular;
        let restore_blocking = if private || dontwait || never_blocks {
            None
        } else if tty && termios::is_pty_master(fd.as_fd()) {
            // The program's own end of a pty: nonblocking, and left so (see `Tty::open`).
            fd::set_nonblocking(fd.as_fd(), true)?;
            None
        } else {
            fd::hold_shared_nonblocking(fd.as_fd())
                .map_err(|e| context(e, format!("cannot open fd {raw} as a pipe: making it nonblocking")))?
        };
        let mut stream = Stream::new(Io::new(fd, mode), HandleKind::Pipe, flags.readable, flags.writable);
        stream.restore_blocking = restore_blocking;
        stream.original = original;
        stream.dontwait = dontwait;
        stream.shared = !private;
        stream.eio_is_eof = tty;
        log::debug!("loop {}: opened fd {raw} ({ty:?}, {mode:?}) as a pipe", lp.id);
        Ok(Pipe(lp.stream_insert(stream)))
    }
}
