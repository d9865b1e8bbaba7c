//! Tty handles: a terminal as a stream, with modes, a window size and resize events; and the
//! process-wide ways to put a terminal back the way it was.
//!
//! A [`Tty`] reads and writes through the same machinery as a [`Pipe`](crate::Pipe):
//! bounded reads, a write queue, end of file. On top of that it has:
//!
//! - modes ([`TtyMode`]): normal, libuv's raw, and `cfmakeraw`'s;
//! - the window size, and a callback when it changes (`SIGWINCH`);
//! - restoration: closing a handle puts back the settings it found (or took later, with
//!   [`Tty::save_settings`]), [`reset_mode`] puts back every changed terminal's saved
//!   settings (from a signal handler too), and [`install_restore_hooks`] does that on a panic and on the
//!   signals that end the process (which also put back the blocking mode of shared
//!   descriptions, [`restore_shared_blocking`](crate::restore_shared_blocking)).
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use evloop::{Loop, ReadEvent, RunMode, Tty, TtyMode};
//!
//! let mut lp = Loop::new()?;
//! // A pty: the program runs on the slave side, a terminal emulator drives the master.
//! let (master, slave) = evloop::tty::openpty()?;
//! let term = Tty::open(&mut lp, slave)?;
//! let emulator = Tty::open(&mut lp, master)?;
//! term.set_mode(&mut lp, TtyMode::Raw)?;
//! // In raw mode each key arrives at once, without waiting for Enter.
//! emulator.write(&mut lp, b"q", |_, res| res.unwrap())?;
//! let got = Rc::new(RefCell::new(Vec::new()));
//! let sink = got.clone();
//! term.read_start(&mut lp, move |lp, term, ev| {
//!     if let ReadEvent::Data(keys) = ev {
//!         sink.borrow_mut().extend_from_slice(keys);
//!         term.close(lp).unwrap(); // puts the terminal back in normal mode
//!         emulator.close(lp).unwrap();
//!     }
//! })?;
//! lp.run(RunMode::Default)?;
//! assert_eq!(&got.borrow()[..], b"q");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # A full-screen program
//!
//! What a pager, an editor or a monitor (`less`, `vim`, `htop`) needs, piece by piece:
//!
//! - **Coming back however it ends**: [`install_restore_hooks`] at the start, and
//!   [`set_restore_sequence`] with what undoes its screen (the alternate screen, the hidden
//!   cursor), cleared when it undoes that itself.
//! - **The terminal when input is a pipe** (`cat file | pager`): keys come from `/dev/tty`
//!   ([`Tty::open_controlling`]), the text from stdin.
//! - **Raw mode** with [`Tty::set_mode`]; [`Settings::with_signals`] keeps Ctrl-C and Ctrl-Z
//!   working. **Resizes** with [`Tty::on_resize`].
//! - **Ctrl-Z** (with the signal keys kept, or `kill -TSTP` from outside): watch `SIGTSTP`
//!   with a [`Signal`]; in its callback write what leaves the screen, and in that write's
//!   callback (so it is out first) set the mode back to `Normal`, close the `SIGTSTP`
//!   handle (watched, the signal is caught instead of stopping the process) and
//!   [`raise`](crate::signal::raise) it: the process stops inside that call (but in an
//!   orphaned process group, with no job-control shell above it, the kernel discards the
//!   stop, and the call returns at once). When the shell
//!   continues it (`fg`), the call returns: watch `SIGTSTP` again, set raw mode (and
//!   `with_signals` again: `set_mode` builds raw from the saved settings), enter the screen
//!   and redraw. ([`Tty::save_settings`] first picks up what the user changed with `stty`
//!   meanwhile.) Draw nothing between the `SIGTSTP` callback and the stop: a frame queued
//!   after what leaves the screen is written before the stop, onto the shell's screen. The
//!   watcher is unreferenced ([`Signal::set_ref`]), or closed when the program quits: a
//!   referenced one keeps [`run`](crate::Loop::run) going after everything else is done. A
//!   `SIGSTOP` (`kill -STOP`) cannot be caught: the screen stays as it is,
//!   and a `SIGCONT` watcher redraws at `fg` (it also hears the continue after the
//!   `SIGTSTP` above, so redraw once). Typed Ctrl-Z and Ctrl-C (unlike `kill -TSTP`) also
//!   make the kernel discard the terminal's output not yet shown, part of a frame, unless
//!   `NOFLSH` is set: redraw in full after them.
//! - **From the background** (continued with `bg`, or started with `&`), changing the mode
//!   stops the process with `SIGTTOU` until `fg`, which is what `vim` does too;
//!   [`Tty::foreground_group`] equal to
//!   [`current_process_group`](crate::process::current_process_group) says beforehand
//!   whether it is in front.
//! - **A program in the foreground meanwhile** (an editor): `Normal` mode, reading paused,
//!   the child started with [`Command::foreground`](crate::Command::foreground) in a group
//!   of its own; at its exit the terminal back with [`Tty::set_foreground_group`], raw mode,
//!   a redraw. Keys typed right after the one that starts it, and read in the same read,
//!   are the program's, not the child's: hand them on, or read one byte at a time
//!   ([`set_read_cap`](Tty::set_read_cap)) while such a key may come.
//! - **What cannot be restored**: `SIGKILL` (and a `SIGSTOP` that is never continued) ends
//!   the process without running anything, so the terminal stays raw, on the alternate
//!   screen, until the shell (or `stty sane`, `reset`) puts it back.
//! - **A hang-up**: reading ends with end of file, and writes fail with `EIO`.
//!
//! ```no_run
//! use std::{cell::RefCell, rc::Rc};
//! use evloop::{Loop, Signal, Tty, TtyMode, signal};
//!
//! const ENTER: &[u8] = b"\x1b[?1049h\x1b[?25l";
//! const LEAVE: &[u8] = b"\x1b[?25h\x1b[?1049l";
//!
//! /// Watches Ctrl-Z for `tty`: leaves the screen, stops, and comes back at `fg`.
//! fn watch_suspend(lp: &mut Loop, tty: Tty, redraw: Rc<RefCell<dyn FnMut(&mut Loop)>>) {
//!     let tstp = Signal::new(lp);
//!     // It does not keep the loop running: the program ends when its work does.
//!     tstp.set_ref(lp, false).unwrap();
//!     tstp.start(lp, signal::SIGTSTP, move |lp, tstp, _| {
//!         let redraw = redraw.clone();
//!         tty.write(lp, LEAVE, move |lp, _| {
//!             tty.set_mode(lp, TtyMode::Normal).unwrap();
//!             tstp.close(lp).unwrap();
//!             signal::raise(signal::SIGTSTP).unwrap(); // stopped here until `fg`
//!             watch_suspend(lp, tty, redraw.clone());
//!             tty.set_mode(lp, TtyMode::Raw).unwrap();
//!             tty.write(lp, ENTER, |_, res| res.unwrap()).unwrap();
//!             (redraw.borrow_mut())(lp);
//!         })
//!         .unwrap();
//!     })
//!     .unwrap();
//! }
//! ```

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use evloop_platform::fd::{self, Access, FileType};
use evloop_platform::libc;
use evloop_platform::termios::{self, Saved, SavedClaim, Termios};

pub use evloop_platform::termios::WinSize;

use crate::error::{context, invalid};
use crate::event_loop::Loop;
use crate::handle::{Flags, HandleId, HandleKind, Kind, typed_handle};
use crate::io::{Io, IoMode};
use crate::limits::SUSPEND_SIGNAL_WAIT_MS;
use crate::signal::{self, Signal};
use crate::stream::{Stream, open_fd_flags, stream_methods};

typed_handle!(
    /// A terminal: a stream over a tty fd, with modes, a window size and resize events
    /// (libuv's `uv_tty_t`). See the [module docs](crate::tty) for an example.
    ///
    /// Open one with [`Tty::open`]: the fd may be stdin or stdout when they are terminals
    /// ([`guess_handle`](crate::guess_handle) says [`HandleType::Tty`](crate::HandleType::Tty)),
    /// `/dev/tty`, or either side of a pty from [`openpty`]. Reads, writes, `shutdown` and
    /// the read cap work as for a [`Pipe`](crate::Pipe). When the other side of a pty goes
    /// away, Linux reads fail with `EIO`; the handle reports that as
    /// [`ReadEvent::Eof`](crate::ReadEvent::Eof), after every byte still buffered (on a
    /// master: a slave's unread input is discarded by the kernel at the hangup). Writes still
    /// queued then fail with `EIO`, and so does every later `write`, `send` or `try_write`,
    /// however small, while the hangup lasts. That is the handle's choice: a Linux master
    /// whose slave has closed takes what fits in the pty's buffer, without an error, and
    /// keeps it for whoever opens the slave next (a getty, a peer of an emulated serial
    /// port), then stops taking data; nobody may ever open it, so the handle fails those
    /// writes rather than have them wait unseen. (Before a read has seen the hangup, the
    /// handle cannot know of it: a small write then goes into that buffer.) A slave opened
    /// again by name takes data again, and writes then go through, but not those that
    /// failed. Through the select helper (forced on Linux: macOS watches ptys with kqueue)
    /// the hangup shows only to a read: a master that is not read may keep its queue, or
    /// see its writes complete as the kernel takes the bytes into that buffer. A read of the controlling terminal from a background
    /// process group that ignores or blocks `SIGTTIN` (as shells do), or whose group is
    /// orphaned, fails with `EIO` too: that one
    /// is reported as [`ReadEvent::Error`](crate::ReadEvent::Error), since the terminal is
    /// still there. Like every read error, it ends the read, so reading starts again with
    /// a new [`read_start`](Tty::read_start) once the group is in front; a shell that does
    /// not want the error at all pauses its read ([`read_pause`](Tty::read_pause)) while a
    /// job has the terminal. [`is_background_read`] tells this error from others. With
    /// `stty tostop`, a write from the background is the same: stopped by `SIGTTOU`, or, if
    /// the group ignores it, written; from an orphaned group, it fails with `EIO`, which the
    /// write's callback gets. (`SIGTTIN` and `SIGTTOU` cannot be watched: see
    /// [`signal::ignore`].)
    ///
    /// A write's callback runs once its bytes, and so every byte written before them, are
    /// the kernel's: the callback of the last write before a job gets the terminal is the
    /// barrier that keeps the shell's output ahead of the job's.
    ///
    /// Closing the handle puts back the settings it found at its first
    /// [`set_mode`](Tty::set_mode), and stops its resize callback. While a job in another
    /// process group has the terminal (the program is a shell, in the background), the
    /// settings are the job's, and stay as they are (once the job is gone, they are put
    /// back).
    ///
    /// # Platform notes
    ///
    /// - **macOS**: kqueue rejects `/dev/tty` (the controlling-terminal indirection), so a
    ///   handle on it is served by the loop's select helper thread; reopening it by name
    ///   gives `/dev/tty` again. A pty's own path (`/dev/ttys003`) works with kqueue. The pty
    ///   master test is `TIOCPTYGNAME`.
    /// - **FreeBSD**: `/dev/tty` resolves to the real terminal, which kqueue accepts. The pty
    ///   master test is `TIOCGPTN`.
    /// - **Linux**: epoll accepts every terminal. The pty master test is `TIOCGPTN`.
    /// - Everywhere, a process in a background process group that changes the mode gets
    ///   `SIGTTOU` (which stops it by default), as with any `tcsetattr`.
    Tty,
    HandleKind::Tty
);

stream_methods!(Tty, HandleKind::Tty);

/// How the terminal treats input and output; see [`Tty::set_mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TtyMode {
    /// The settings the handle found: usually line editing, echo, and keys like Ctrl-C as
    /// signals.
    #[default]
    Normal,
    /// libuv's raw mode: every byte arrives as it is typed, unechoed and untranslated
    /// (Ctrl-C is byte 3, Enter is `\r`), and no key sends a signal. Output processing
    /// stays on, so `"\n"` still prints as `"\r\n"`.
    Raw,
    /// `cfmakeraw`: raw input, and raw output too (`"\n"` moves down without returning to
    /// the first column). For programs that drive the terminal byte for byte, and for
    /// proxies that pass a pty's output on to the user's terminal (`script`, a terminal
    /// multiplexer): the pty has already turned each `"\n"` into `"\r\n"`, and
    /// [`Raw`](TtyMode::Raw)'s output processing would print `"\r\r\n"`.
    Io,
}

/// A terminal's settings (its `struct termios`), as [`Tty::settings`] reads them: kept to be
/// put back with [`Tty::set_settings`]. Two are equal when every flag, control character and
/// speed is.
///
/// Without a handle, [`Settings::of`], [`with_mode`](Settings::with_mode),
/// [`with_echo`](Settings::with_echo) and [`apply`](Settings::apply) set up a terminal for
/// good, for another process: nothing saves or restores what they change. An `expect`-like
/// tool turns off the echo of a pty before its child starts on it (keeping line editing and
/// the signal keys, which [`TtyMode::Raw`] and [`TtyMode::Io`] turn off too):
///
/// ```
/// use std::os::fd::AsFd;
/// use evloop::{Settings, tty};
///
/// let (_master, slave) = tty::openpty()?;
/// let normal = Settings::of(slave.as_fd())?;
/// normal.with_echo(false).apply(slave.as_fd())?;
/// assert_ne!(Settings::of(slave.as_fd())?, normal); // until someone changes it again
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings(Termios);

impl Settings {
    /// The settings of the terminal on `fd` now (`tcgetattr`).
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<Settings> {
        termios::get(fd).map(Settings).map_err(|e| context(e, "cannot read the terminal's settings"))
    }

    /// These settings as [`Tty::set_mode`] makes `mode` from a handle's normal ones:
    /// `Normal` leaves them as they are; `Raw` and `Io` as [`TtyMode`] says.
    pub fn with_mode(mut self, mode: TtyMode) -> Settings {
        match mode {
            TtyMode::Normal => {}
            TtyMode::Raw => self.0.make_raw(),
            TtyMode::Io => self.0.make_io(),
        }
        self
    }

    /// These settings with the echo of typed input on or off (`ECHO`), and nothing else
    /// changed: line editing and the signal keys (Ctrl-C, ^D) keep working, as after
    /// pexpect's `setecho(False)`.
    pub fn with_echo(mut self, on: bool) -> Settings {
        self.0.set_echo(on);
        self
    }

    /// These settings with the signal keys on or off (`ISIG`), and nothing else changed: on,
    /// Ctrl-C, Ctrl-\\ and Ctrl-Z send `SIGINT`, `SIGQUIT` and `SIGTSTP` to the foreground
    /// group as in normal mode, while input stays raw otherwise: the mode of `less` and
    /// `htop`, which [`TtyMode::Raw`] does not keep. Through a handle, after its
    /// [`set_mode`](Tty::set_mode) (which saves the settings to restore), and after each
    /// later `set_mode` (raw again at `fg`), which builds raw from the saved settings:
    ///
    /// ```
    /// use evloop::{Loop, RunMode, Tty, TtyMode, tty};
    ///
    /// let mut lp = Loop::new()?;
    /// let (_master, slave) = tty::openpty()?;
    /// let t = Tty::open(&mut lp, slave)?;
    /// t.set_mode(&mut lp, TtyMode::Raw)?;
    /// t.set_settings(&lp, &t.settings(&lp)?.with_signals(true))?;
    /// t.close(&mut lp)?; // back to normal, as ever
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_signals(mut self, on: bool) -> Settings {
        self.0.set_signals(on);
        self
    }

    /// Sets the terminal on `fd` to these settings now (`tcsetattr(TCSANOW)`), for good:
    /// no handle records it, and nothing puts the old ones back. (Through a handle, use
    /// [`Tty::set_settings`].) From a background process group, it stops the process with
    /// `SIGTTOU` unless that is ignored or blocked, as any `tcsetattr` does.
    pub fn apply(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        termios::set(fd, &self.0).map_err(|e| context(e, "cannot set the terminal's settings"))
    }
}

/// A tty handle's terminal state, kept in its [`Stream`].
pub(crate) struct TtyState {
    mode: TtyMode,
    /// The settings found at the handle's first `set_mode` (or taken by
    /// `save_settings`): what `Normal` and close put back, and the base of the other modes.
    saved: Option<Termios>,
    /// Held when this handle saved its terminal's settings process-wide, for `reset_mode`
    /// (the first mode change through any handle on that terminal).
    claim: Option<SavedClaim>,
    /// Which terminal it is (`termios::terminal_id`), where that can be told: handles on
    /// one terminal share the settings saved first.
    terminal: Option<u64>,
    /// Whether it is a pty master, whose settings are its slave's, but whose output is
    /// that terminal's input.
    master: bool,
    /// The caller's fd, when the terminal was reopened: kept open, untouched, until close.
    original: Option<OwnedFd>,
    /// The internal, unreferenced `SIGWINCH` watcher behind the resize callback.
    resize: Option<Signal>,
    /// The restore of another handle on this terminal that closed while this one had
    /// output queued: it waits until that output is out (`Loop::tty_restore_handed`), so
    /// that what was written for the mode in place goes out in it.
    handed: Option<TtyRelease>,
    /// The writing handle of a pty capture (`Command::output_on_pty`), on a copy of the
    /// master the capture reads: not readable, and its errors say why.
    pub(crate) capture_input: bool,
}

/// What a tty gives back when its fd is released.
pub(crate) struct TtyRelease {
    restore: Option<Termios>,
    claim: Option<SavedClaim>,
    original: Option<OwnedFd>,
    /// The terminal, for a hand-over (see `Loop::tty_hand_over`): `None` for a pty master.
    terminal: Option<u64>,
}

impl TtyState {
    /// Takes what the release of the fd must restore and close: its own settings, or those
    /// handed to it.
    pub(crate) fn take_for_release(&mut self) -> TtyRelease {
        // Whatever the mode: in Normal, a job may have left the terminal raw.
        let handed = self.handed.take();
        let restore = self.saved.or(handed.as_ref().and_then(|h| h.restore));
        self.mode = TtyMode::Normal;
        // (At most one handle holds a terminal's claim: see `termios::save_original`.)
        let claim = self.claim.take().or(handed.and_then(|h| h.claim));
        let terminal = self.terminal.filter(|_| !self.master);
        TtyRelease { restore, claim, original: self.original.take(), terminal }
    }

    /// Whether another handle's restore waits for this one's queue (see `Loop::tty_hand_over`).
    pub(crate) fn has_handed(&self) -> bool {
        self.handed.is_some()
    }
}

impl TtyRelease {
    /// Puts the terminal's settings back through `fd`, which is about to be closed. At a
    /// loop's drop (`for_good`), the restore sequence goes first where it is meant for this
    /// terminal ([`set_restore_sequence`]): the program is on its way out (a `?` out of
    /// `main`, a panic), and no reset at `exit` would find the terminal after this.
    pub(crate) fn release(self, loop_id: u32, fd: BorrowedFd<'_>, for_good: bool) {
        // From the background the settings are the foreground job's (a shell that closes
        // its handle, or panics, while a job has the terminal), and writing them could stop
        // the process with SIGTTOU. (A pty master names its slave's group: not ours.)
        let in_background = !termios::is_pty_master(fd)
            && termios::foreground_group(fd).is_ok_and(|front| {
                front != evloop_platform::process::process_group() && termios::group_alive(front)
            });
        if in_background {
            log::debug!("loop {loop_id}: a job has the terminal: its settings stay as they are");
        } else if let Some(t) = self.restore {
            if let (true, Some(claim)) = (for_good, &self.claim) {
                termios::write_restore_bytes_for(claim);
            }
            // (From the background when the foreground group has no member left.)
            match termios::set_from_background(fd, &t) {
                Ok(()) => {}
                // A terminal that hung up (a pty whose master closed: a pane that ended) has
                // nothing left to restore, as for `reset_mode`.
                Err(e)
                    if e.raw_os_error() == Some(evloop_platform::libc::EIO)
                        && !termios::is_controlling_terminal(fd) =>
                {
                    log::debug!("loop {loop_id}: the terminal hung up: no settings to restore at close");
                }
                Err(e) => log::warn!("loop {loop_id}: restoring a terminal's settings at close failed: {e}"),
            }
        }
        // The claim goes after the restore, so a signal in between still finds the settings.
        drop(self.claim);
        drop(self.original);
    }
}

fn describe(ty: FileType) -> &'static str {
    match ty {
        FileType::Fifo => "a pipe or FIFO",
        FileType::Socket => "a socket",
        FileType::CharDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Regular => "a regular file",
        FileType::Directory => "a directory",
        FileType::Other => "an unknown kind of file",
    }
}

/// How a tty handle does its I/O on its terminal, chosen by `Tty::open`.
struct TerminalIo {
    fd: OwnedFd,
    /// Whether it is a pty master.
    master: bool,
    /// The caller's fd, kept open and untouched, when `fd` is a private reopen of it.
    original: Option<OwnedFd>,
    /// Writes block: the description is shared and left blocking.
    blocking: bool,
    mode: IoMode,
    restore_blocking: Option<fd::SharedNonblocking>,
}

/// Reopens the terminal `fd` privately where it can; otherwise leaves a writable
/// description blocking (writes block) and makes a read-only one nonblocking in place (see
/// `Tty::open`'s docs).
fn open_terminal(
    lp: &mut Loop,
    fd: OwnedFd,
    flags: fd::StatusFlags,
    kind: HandleKind,
) -> io::Result<TerminalIo> {
    let raw = fd.as_raw_fd();
    let access = match (flags.readable, flags.writable) {
        (true, true) => Access::ReadWrite,
        (false, true) => Access::Write,
        _ => Access::Read,
    };
    // By name; else, for the controlling terminal, through /dev/tty (never for a master,
    // which /dev/tty would swap for its slave).
    let reopened = termios::reopen(fd.as_fd(), access).or_else(|e| {
        if termios::is_pty_master(fd.as_fd()) {
            return Err(e);
        }
        termios::reopen_controlling(fd.as_fd(), access).map_err(|_| e).inspect(|_| {
            log::debug!("loop {}: reopened the terminal on fd {raw} through /dev/tty", lp.id);
        })
    });
    let (fd, original, blocking, nonblocking_in_place, master) = match reopened {
        Ok(private) => (private, Some(crate::pipe::kept_above_floor(fd)), false, false, false),
        Err(e) => {
            let master = termios::is_pty_master(fd.as_fd());
            let blocking = flags.writable && !flags.nonblocking && !master;
            if blocking {
                log::warn!("loop {}: cannot reopen the terminal on fd {raw} ({e}); writes will block", lp.id);
            }
            (fd, None, blocking, !flags.writable && !flags.nonblocking && !master, master)
        }
    };
    let mode = lp.choose_io_mode(fd.as_fd(), false, true)?;
    let restore_blocking = if master {
        // A pty master (never reopened: its name is the cloning /dev/ptmx) is the program's
        // own end of a pty it made: blocking writes would stall the loop whenever the child
        // stops reading. It is made nonblocking and left so: it has no one to restore it
        // for, and registering it would take a slot of the restore registry (which stdio
        // needs) per pty, under a key that every master shares.
        fd::set_nonblocking(fd.as_fd(), true)?;
        None
    } else if nonblocking_in_place || (original.is_none() && flags.nonblocking) {
        // Set here, or nonblocking already (maybe by another handle on this description):
        // held either way.
        fd::hold_shared_nonblocking(fd.as_fd())?
    } else {
        None
    };
    let how = match (original.is_some(), blocking) {
        (true, _) => "reopened",
        (false, true) => "blocking writes",
        (false, false) => "as it is",
    };
    log::debug!("loop {}: opened fd {raw} as a {} on a terminal ({mode:?}, {how})", lp.id, kind.name());
    Ok(TerminalIo { fd, master, original, blocking, mode, restore_blocking })
}

impl Tty {
    /// Opens the terminal `fd` as a tty handle. The handle owns `fd` and closes it on close.
    /// It is readable and writable as `fd`'s access mode says.
    ///
    /// An fd that is not open, or not a terminal (a file, a pipe, `/dev/null`), is an error.
    /// For stdin or stdout, pass a duplicate (`io::stdin().as_fd().try_clone_to_owned()?`),
    /// so that the handle's close leaves the process's fd 0 or 1 in place. The controlling
    /// terminal, whatever stdio is, opens with [`open_controlling`](Tty::open_controlling).
    ///
    /// # Blocking mode, and how this differs from libuv
    ///
    /// `O_NONBLOCK` belongs to the open file description, which a terminal usually shares
    /// with the shell and every other process started from it: setting it on an inherited
    /// stdin or stdout would make their reads and writes fail with `EAGAIN`. So:
    ///
    /// - **Reopened**: unless `fd` is a pty master, the terminal is opened again through its
    ///   name (`ttyname`, with the same access mode, `O_NOCTTY | O_CLOEXEC | O_NONBLOCK`),
    ///   and the handle does its I/O on that private description. `fd` itself stays open and
    ///   untouched until close (moved above the [fd floor](crate::set_fd_floor), when one is
    ///   set, so that a shell's later redirection onto its number is not closed with the
    ///   handle). libuv does the same reopen, then `dup3`s the new description
    ///   over the caller's fd number (which also marks stdin, stdout or stderr close-on-exec,
    ///   so children stop inheriting them, libuv#2062); evloop leaves the caller's fd alone.
    /// - **A pty master** cannot be reopened (its name is the cloning `/dev/ptmx`). It is
    ///   the program's own end of a pty it made (for a child, a terminal emulator, an
    ///   `expect`), whose writes must not stall the loop when the child stops reading: its
    ///   description is made nonblocking, and left so (as
    ///   [`Pipe::open`](crate::Pipe::open) leaves it): the handle closes the fd it owns, and
    ///   a copy of the fd kept elsewhere stays nonblocking.
    /// - **Through `/dev/tty`**: where that reopen fails (another user's terminal, after `su`
    ///   or `sudo -u`: its node is not ours to open) and the terminal is the process's
    ///   controlling one, it is opened again through `/dev/tty`, which anyone may open, as
    ///   a description of its own too. Linux only: FreeBSD checks the open of `/dev/tty`
    ///   against the terminal's own node, and on macOS `/dev/tty` cannot be told to be the
    ///   same terminal.
    /// - **Not reopened**: `ttyname` or the open can fail. Then, as in libuv, the
    ///   description's blocking mode is left alone and a writable handle's writes block
    ///   until the kernel took everything ([`writes_block`](Tty::writes_block) says so;
    ///   [`try_write`](Tty::try_write) blocks too), while reads still wait for readiness.
    ///   The loop waits with such a write: timers, signals and other handles are served
    ///   only once the terminal took it, so a terminal nobody drains (a stopped `less`, a
    ///   paused `ssh`, Ctrl-S) stalls the whole loop, and
    ///   [`write_queue_size`](Tty::write_queue_size) stays 0, which leaves back-pressure
    ///   nothing to see. A terminal of another user's (after
    ///   `su` or `sudo -u`), whose name this process may not open, is one such case where it
    ///   is not the controlling terminal (and, for the controlling one, on macOS and
    ///   FreeBSD). A
    ///   read-only fd is made nonblocking in place instead, and made blocking again at
    ///   close, when the loop is dropped, at `exit`, and by
    ///   [`restore_shared_blocking`](crate::restore_shared_blocking), which
    ///   [`install_restore_hooks`] makes most signals that end a process call. An fd that is already
    ///   nonblocking is used as it is.
    pub fn open(lp: &mut Loop, fd: OwnedFd) -> io::Result<Tty> {
        let raw = fd.as_raw_fd();
        let (fd, flags) = open_fd_flags(fd, HandleKind::Tty.name())?;
        if !fd::isatty(fd.as_fd()) {
            // A pty slave whose master closed is a terminal still, but answers only `EIO`.
            if let Err(e) = termios::get(fd.as_fd()) {
                if e.raw_os_error() == Some(libc::EIO) {
                    return Err(context(
                        e,
                        format!(
                            "cannot open fd {raw} as a tty: the terminal hung up (a pty whose master closed)"
                        ),
                    ));
                }
            }
            let what = fd::file_type(fd.as_fd()).map_or("not open", describe);
            // What it is open on, where the system says (Linux): a program's copy of its stdout
            // has a number its user has never seen.
            let path = std::fs::read_link(format!("/proc/self/fd/{raw}"))
                .map(|path| format!(" ({})", path.display()))
                .unwrap_or_default();
            return Err(invalid(format!(
                "cannot open fd {raw}{path} as a tty: it is {what}, not a terminal"
            )));
        }
        let TerminalIo { fd, master, original, blocking, mode, restore_blocking } =
            open_terminal(lp, fd, flags, HandleKind::Tty)?;
        let terminal = termios::terminal_id(fd.as_fd()).ok();
        let mut stream = Stream::new(Io::new(fd, mode), HandleKind::Tty, flags.readable, flags.writable);
        stream.blocking = blocking;
        stream.shared = original.is_none();
        stream.restore_blocking = restore_blocking;
        stream.eio_is_eof = true;
        stream.tty = Some(TtyState {
            mode: TtyMode::Normal,
            saved: None,
            claim: None,
            terminal,
            master,
            original,
            resize: None,
            handed: None,
            capture_input: false,
        });
        Ok(Tty(lp.stream_insert(stream)))
    }

    /// The handle a pty capture ([`Command::output_on_pty`](crate::Command::output_on_pty))
    /// gives its caller, for the program's input and the terminal's size, while the capture
    /// reads `master`: on a copy of the master's fd, so that its close leaves the terminal
    /// up, and not readable, so that every byte of output reaches the capture.
    pub(crate) fn capture_input(lp: &mut Loop, master: Tty) -> io::Result<Tty> {
        let copy = fd::dup_cloexec(lp.stream_mut(master.0, HandleKind::Tty)?.io.fd()?, 0)?;
        let input = Tty::open(lp, copy)?;
        let s = lp.stream_mut(input.0, HandleKind::Tty)?;
        s.readable = false;
        if let Some(t) = &mut s.tty {
            t.capture_input = true;
        }
        Ok(input)
    }

    /// Opens the process's controlling terminal (`/dev/tty`) read-write as a tty handle: the
    /// terminal to draw on and read keys from when stdin and stdout are pipes, as `fzf`,
    /// `less` and password prompts do. The open makes a description of the handle's own
    /// (nonblocking: nobody else shares it). Without a controlling terminal (a daemon, a CI
    /// job, a process after `setsid`) the error says so, with its `ENXIO`
    /// ([`os_error_code`](crate::os_error_code)).
    ///
    /// ```
    /// use evloop::{Loop, Tty};
    ///
    /// let mut lp = Loop::new()?;
    /// match Tty::open_controlling(&mut lp) {
    ///     Ok(tty) => println!("{} by {} cells", tty.winsize(&lp)?.rows, tty.winsize(&lp)?.cols),
    ///     Err(e) => println!("no terminal to draw on: {e}"),
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn open_controlling(lp: &mut Loop) -> io::Result<Tty> {
        let fd = fd::open(c"/dev/tty", Access::ReadWrite, true).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                context(e, "cannot open /dev/tty: this process has no controlling terminal")
            } else {
                context(e, "cannot open the controlling terminal (/dev/tty)")
            }
        })?;
        Tty::open(lp, fd)
    }

    /// Sets the terminal's mode (libuv's `uv_tty_set_mode`), with `tcsetattr(TCSANOW)`.
    ///
    /// The first call saves the terminal's settings; `Normal` and closing the handle put
    /// them back, and the other modes are made from them. So a program that ran in between
    /// and left the terminal changed (a job killed in raw mode) does not change what this
    /// handle's `Normal` is, unless [`save_settings`](Tty::save_settings) says so; and
    /// the mode the handle is in already puts its settings back all the same (a shell that
    /// gave the terminal to such a job calls it when it takes the terminal back), unless they
    /// are in place already. A handle whose mode was never set
    /// (nor its settings saved) leaves the settings alone at close.
    /// (libuv saves them again each time its handle leaves normal mode.) The first change of
    /// a terminal in the process also saves them process-wide, for [`reset_mode`] (a pty
    /// master's excepted: see there). The handle must be
    /// readable (modes are about input): changing the mode through a write-only handle is an
    /// error, and leaves the terminal as it was.
    ///
    /// Several handles on one terminal (stdin and stdout, say) share its settings: the ones
    /// saved at the first change through any of them are every handle's normal ones, so
    /// the terminal ends as it was whichever handle closes first. Where another handle of
    /// this loop on the terminal has output queued when the first closes (a session
    /// recorder's stdout, when it closes its stdin first), the settings go back once that
    /// queue is empty, so that the output goes out in the mode it was written for (an io-mode
    /// session's `\n` stays `\n`, not `\r\n`); or sooner, when that handle closes, the loop
    /// is dropped, a mode change ([`set_mode`](Tty::set_mode),
    /// [`save_settings`](Tty::save_settings)) is made through any handle on the terminal,
    /// or a spawn gives the terminal to its child ([`Command::foreground`]). Until then,
    /// [`set_settings`](Tty::set_settings) on the terminal is undone by them, and
    /// [`set_foreground_group`](Tty::set_foreground_group) to another group keeps them from
    /// being put back (they are the job's then).
    ///
    /// [`Command::foreground`]: crate::Command::foreground
    ///
    /// Change them while the loop's process group has the terminal: the settings of a
    /// terminal in another group's hands are that job's, and a change from the background
    /// stops the process with `SIGTTOU` (take the terminal back first with
    /// [`set_foreground_group`](Tty::set_foreground_group)).
    ///
    /// On a pty master, the settings are the pty's, which the program on the slave side
    /// sees (Linux's, at least, are changed through the master). Closing the master's
    /// handle puts them back, as for any terminal, so the mode lasts as long as the handle. To set up a pty
    /// for its child for good, without saving anything, use [`Settings::apply`].
    pub fn set_mode(self, lp: &mut Loop, mode: TtyMode) -> io::Result<()> {
        let s = lp.stream_mut(self.0, HandleKind::Tty)?;
        if !s.readable && s.tty.as_ref().is_some_and(|t| t.capture_input) {
            return Err(invalid(
                "cannot change the mode of a pty capture's input: modes are about reading, which is the \
                 capture's (for other settings, start the child with Command::spawn_on_pty_with)",
            ));
        }
        if !s.readable {
            return Err(invalid(
                "cannot change the mode of the tty: it is not readable (its fd is open for writing \
                 only); change it through a handle on the terminal's input",
            ));
        }
        if let Some(n) = s.tty.as_ref().and_then(|t| t.terminal) {
            lp.tty_restore_handed_on(n);
        }
        let s = lp.stream_mut(self.0, HandleKind::Tty)?;
        // The settings found before the first change are Normal mode's, and the base of the
        // others, for good: a job that left the terminal raw (killed before it could restore
        // it) must not make raw the handle's normal, nor what its close puts back.
        let now = termios::get(s.io.fd()?).map_err(|e| context(e, "cannot read the terminal's settings"))?;
        // Another handle on the same terminal may have changed it already (a program with
        // handles on stdin and stdout, both set raw): then the settings that handle saved
        // are this one's normal too, not the raw ones in place, or closing this one after
        // that one would leave the terminal raw. A handle of this loop first, then the
        // terminal whose settings the process saved first (a handle of another loop).
        let look_up = match s.tty.as_ref().expect("a tty stream has tty state") {
            TtyState { saved: None, terminal, .. } => *terminal,
            _ => None,
        };
        let shared = look_up.and_then(|n| lp.tty_saved_of(n).or_else(|| termios::saved_original_of(n)));
        let s = lp.stream_mut(self.0, HandleKind::Tty)?;
        let fd = s.io.fd()?;
        let tty = s.tty.as_mut().expect("a tty stream has tty state");
        let mut t = *tty.saved.get_or_insert(shared.unwrap_or(now));
        if tty.claim.is_none() {
            // (Whenever none is held: once another handle on this terminal that held it has
            // closed, this one's changes are the ones `reset_mode` and the exit hooks undo.)
            tty.claim = match termios::save_original(fd, &t)? {
                Saved::Claim(claim) => Some(claim),
                Saved::NoRoom => {
                    static WARNED: AtomicBool = AtomicBool::new(false);
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        log::warn!(
                            "{} terminals have their settings saved already: reset_mode and the \
                             restore hooks will not restore this one (closing its handle will)",
                            crate::limits::SAVED_TERMINALS_MAX
                        );
                    }
                    None
                }
                Saved::Already | Saved::PtyMaster => None,
            };
        }
        match mode {
            TtyMode::Normal => {}
            TtyMode::Raw => t.make_raw(),
            TtyMode::Io => t.make_io(),
        }
        // The same mode again is not a no-op: a job, or `set_settings`, may have changed the
        // settings since. But settings already in place are not set again: `tcsetattr` from
        // the background stops the process with SIGTTOU, and `tcgetattr` does not.
        if now == t {
            tty.mode = mode;
            return Ok(());
        }
        termios::set(fd, &t).map_err(|e| context(e, format!("cannot set the terminal to {mode:?} mode")))?;
        tty.mode = mode;
        Ok(())
    }

    /// Takes the terminal's settings as they are now as this handle's normal ones: what
    /// [`TtyMode::Normal`] and closing put back from now on, and what the other modes are
    /// made from. The handle must be in normal mode.
    ///
    /// A shell calls it after a job that exited normally, so that settings the user changed
    /// with `stty` stay (bash does the same), and not after one that a signal ended, which
    /// may have left the terminal raw. [`reset_mode`], the restore hooks and `exit` put
    /// these back from now on too, as closing the handle does.
    ///
    /// ```
    /// # let mut lp = evloop::Loop::new()?;
    /// # let (_master, slave) = evloop::tty::openpty()?;
    /// let tty = evloop::Tty::open(&mut lp, slave)?;
    /// // ... a job ran `stty erase ^H`, and exited with status 0:
    /// tty.save_settings(&mut lp)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn save_settings(self, lp: &mut Loop) -> io::Result<()> {
        let tty = lp.tty_ref(self.0)?;
        if tty.mode != TtyMode::Normal {
            return Err(invalid(format!(
                "cannot save the terminal's settings as normal ones: the tty is in {:?} mode",
                tty.mode
            )));
        }
        if let Some(n) = tty.terminal {
            lp.tty_restore_handed_on(n);
        }
        let s = lp.stream_mut(self.0, HandleKind::Tty)?;
        let fd = s.io.fd()?;
        let tty = s.tty.as_mut().expect("a tty stream has tty state");
        let t = termios::get(fd).map_err(|e| context(e, "cannot read the terminal's settings"))?;
        tty.saved = Some(t);
        if let Some(id) = tty.terminal {
            termios::update_saved(id, &t);
        }
        Ok(())
    }

    /// The mode last set through this handle.
    pub fn mode(self, lp: &Loop) -> io::Result<TtyMode> {
        Ok(lp.tty_ref(self.0)?.mode)
    }

    /// The terminal's settings as they are now (`tcgetattr`), whoever set them: to put back
    /// later with [`set_settings`](Tty::set_settings). A job-control shell takes a job's
    /// when it stops (the job may have been in raw mode, as an editor is) and gives them back
    /// when the job continues in front, as bash does.
    ///
    /// ```
    /// use evloop::{Tty, TtyMode};
    /// # let mut lp = evloop::Loop::new()?;
    /// # let (_master, slave) = evloop::tty::openpty()?;
    /// let tty = Tty::open(&mut lp, slave)?;
    /// tty.set_mode(&mut lp, TtyMode::Io)?; // a job's full-screen editor, say
    /// let job = tty.settings(&lp)?; // it stopped: keep its settings
    /// tty.set_mode(&mut lp, TtyMode::Normal)?; // the shell's prompt
    /// tty.set_settings(&lp, &job)?; // `fg`: the editor finds its terminal as it left it
    /// assert_eq!(tty.settings(&lp)?, job);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn settings(self, lp: &Loop) -> io::Result<Settings> {
        termios::get(self.fd(lp)?)
            .map(Settings)
            .map_err(|e| context(e, "cannot read the terminal's settings"))
    }

    /// Sets the terminal's settings (`tcsetattr(TCSANOW)`) to ones [`settings`](Tty::settings)
    /// read. This is not a mode change: what [`TtyMode::Normal`] and closing the handle put
    /// back stays as it was. As with [`set_mode`](Tty::set_mode), do it while the loop's
    /// process group has the terminal (or just before handing it over).
    pub fn set_settings(self, lp: &Loop, settings: &Settings) -> io::Result<()> {
        termios::set(self.fd(lp)?, &settings.0).map_err(|e| context(e, "cannot set the terminal's settings"))
    }

    /// The terminal's window size (`TIOCGWINSZ`).
    pub fn winsize(self, lp: &Loop) -> io::Result<WinSize> {
        termios::winsize(self.fd(lp)?)
    }

    /// Sets the terminal's window size (`TIOCSWINSZ`). On a pty master, this is how a
    /// terminal emulator tells the program on the slave side about a resize; the kernel
    /// sends that program's foreground process group `SIGWINCH`.
    pub fn set_winsize(self, lp: &Loop, size: WinSize) -> io::Result<()> {
        termios::set_winsize(self.fd(lp)?, size)
    }

    /// The path of the pty's slave, for a handle on its master (`ptsname`): what a terminal
    /// emulator or a session recorder names in its logs or in `utmp`, and what the program
    /// on the slave side sees as its `tty`. An `InvalidInput` error for any other terminal.
    ///
    /// ```
    /// use evloop::{Loop, Tty};
    ///
    /// let mut lp = Loop::new()?;
    /// let (master, slave) = evloop::tty::openpty()?;
    /// let master = Tty::open(&mut lp, master)?;
    /// let name = master.pty_slave_name(&lp)?;
    /// assert!(name.starts_with("/dev/"));
    /// assert!(Tty::open(&mut lp, slave)?.pty_slave_name(&lp).is_err()); // not a master
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pty_slave_name(self, lp: &Loop) -> io::Result<PathBuf> {
        let fd = self.fd(lp)?;
        if !lp.tty_ref(self.0)?.master {
            return Err(invalid("the tty is not a pty master: only a master's pty has a slave to name"));
        }
        let name = termios::pty_slave_name(fd).map_err(|e| context(e, "cannot name the pty's slave"))?;
        Ok(PathBuf::from(OsString::from_vec(name.into_bytes())))
    }

    /// Calls `cb` with the new window size each time the process gets `SIGWINCH`
    /// (at most once per loop iteration), replacing an earlier callback. The
    /// kernel sends `SIGWINCH` to the terminal's foreground process group when the window
    /// changes: while a job of a shell has the terminal, the shell hears of no resize, so it
    /// asks for the [`winsize`](Tty::winsize) again when it takes the terminal back.
    ///
    /// A resize before this call is not reported: a program that passes the size on (to a
    /// child's pty, say) calls this first and reads the [`winsize`](Tty::winsize) after,
    /// so that no resize falls between the two.
    ///
    /// Underneath is an internal [`Signal`] handle, unreferenced so it does not keep
    /// [`RunMode::Default`](crate::RunMode::Default) running, closed with the tty.
    pub fn on_resize(
        self,
        lp: &mut Loop,
        mut cb: impl FnMut(&mut Loop, Tty, WinSize) + 'static,
    ) -> io::Result<()> {
        lp.tty_mut(self.0)?;
        // A new watcher, started before the old one closes: with `SIGWINCH` watched all
        // along, its disposition never goes back in between (which would drop a resize
        // pending then).
        let sig = Signal::new(lp);
        sig.set_ref(lp, false)?;
        // Not the program's handle: `Loop::handles` does not list it.
        lp.mark_internal(sig.id());
        let tty = self;
        let started = sig.start(lp, crate::signal::SIGWINCH, move |lp, sig, _| match tty.winsize(lp) {
            Ok(size) => cb(lp, tty, size),
            Err(e) => {
                log::debug!("loop {}: resize of {:?}: {e}; no more resize callbacks", lp.id, tty.0);
                let _ = sig.close(lp);
            }
        });
        if let Err(e) = started {
            let _ = sig.close(lp);
            return Err(e);
        }
        if let Some(old) = lp.tty_mut(self.0)?.resize.replace(sig) {
            // (One that closed itself after an error is closing or gone: nothing to do.)
            let _ = old.close(lp);
        }
        Ok(())
    }

    /// Stops the resize callback. Stopping when there is none does nothing.
    pub fn resize_stop(self, lp: &mut Loop) -> io::Result<()> {
        // A closing tty's resize watcher closed with it: stopping is no error.
        if self.is_closing(lp)? {
            return Ok(());
        }
        if let Some(sig) = lp.tty_mut(self.0)?.resize.take() {
            let _ = sig.close(lp);
        }
        Ok(())
    }

    /// The terminal's foreground process group (`tcgetpgrp`): the group whose reads it serves
    /// and to which it sends Ctrl-C. The terminal must be the process's controlling terminal
    /// (`ENOTTY` otherwise), or a pty master, which answers for its slave: what
    /// runs in front in the session of a child given that slave as its controlling terminal
    /// ([`Command::controlling_terminal`](crate::Command::controlling_terminal)), and 0 (on
    /// Linux and macOS) while no session has it.
    pub fn foreground_group(self, lp: &Loop) -> io::Result<i32> {
        termios::foreground_group(self.fd(lp)?)
            .map_err(|e| context(e, "tcgetpgrp: the tty must be this process's controlling terminal"))
    }

    /// Whether this process's group has the terminal: it is the terminal's foreground group,
    /// or no live group is (none, or one whose members are all gone). A program started in
    /// the background (`tool &`) is not: reading the terminal would stop it with `SIGTTIN`,
    /// and [`Command::foreground`](crate::Command::foreground) refuses to take the terminal
    /// from the group in front. The terminal must be the process's controlling terminal.
    ///
    /// ```no_run
    /// use evloop::{Loop, Tty};
    ///
    /// let mut lp = Loop::new()?;
    /// let tty = Tty::open_controlling(&mut lp)?;
    /// if !tty.is_foreground(&lp)? {
    ///     eprintln!("running in the background: no pager");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_foreground(self, lp: &Loop) -> io::Result<bool> {
        let front = self.foreground_group(lp)?;
        Ok(front <= 0 || front == evloop_platform::process::process_group() || !termios::group_alive(front))
    }

    /// Stops the program as Ctrl-Z does, for one in raw or io mode, where the key is the byte
    /// `0x1a` rather than `SIGTSTP`: puts the terminal's normal settings back, stops the
    /// process's group with `SIGTSTP` (the shell reports it as it does a Ctrl-Z), and once
    /// the shell continues it (`fg`), sets the mode again and returns `Ok(true)`. The mode is
    /// this handle's, or, where this one is in normal mode (a program's output handle),
    /// that of the handle of this loop on the terminal whose mode the program set. The
    /// thread waits in the call while the process is stopped; timers that came due meanwhile
    /// run when the loop goes on.
    ///
    /// `Ok(false)` at once, with nothing changed, where `SIGTSTP` is ignored: a shell without
    /// job control started the program, which must not stop. A group that the kernel will not
    /// stop (orphaned: no member has a parent in another group of its session to continue
    /// it, as for a program that is its session's leader) comes back at once too, with
    /// `Ok(true)`, after the settings went to normal and back. The terminal must be the
    /// process's controlling terminal, with the process's group in front (Ctrl-Z stops the
    /// group in front): an error says so otherwise, and nothing changes.
    ///
    /// The screen is the program's: it writes what leaves its screen (the alternate screen,
    /// a hidden cursor) before the call, and draws again after it, at the window size of
    /// then ([`winsize`](Tty::winsize)): the window may have changed while the program was
    /// stopped, and only the group in front then was sent `SIGWINCH`. Call it once that
    /// output is out, from the callback of the last write: while a handle of this loop on the
    /// terminal has output queued, it fails with `WouldBlock` and changes nothing, since the
    /// output would go out in the wrong mode, or not before the stop.
    ///
    /// Continued in the background (`bg`), the process is stopped again by `SIGTTOU` as it
    /// sets its mode, until the shell gives it the terminal, as any program that changes the
    /// terminal from there is. Where `SIGTTOU` would not stop it (ignored, blocked or
    /// caught), the mode is not set from there, which would change the settings of the job
    /// in front: the terminal stays in normal mode, and a `WouldBlock` error says to set the
    /// mode again once in front (the shell's `fg` sends `SIGCONT`, which a [`Signal`] handle
    /// can watch). The same where a signal that ends a process by default (`SIGTERM`,
    /// `SIGHUP`, ...) was caught for this loop's [`Signal`] handles meanwhile, as a shell's
    /// `kill %1` sends `SIGTERM` and then `SIGCONT` to a stopped job: the error returns at
    /// once, and the loop runs the handle's callback, rather than the process stopping again
    /// until it is in front. (In a program with several threads, another thread may take
    /// the signal and run its handler a moment later: continued in the background, a loop
    /// that watches such a signal waits up to
    /// [`SUSPEND_SIGNAL_WAIT_MS`] for one before it
    /// sets the mode.) If setting the mode fails, the handle stays in normal mode
    /// and the error says the stop happened. A [`Signal`] handle on `SIGTSTP` does not see
    /// this stop (see `stop_group_as_ctrl_z` in the platform crate for the moments around
    /// it). It is what such a handle calls, though: a `SIGTSTP` sent from elsewhere
    /// (`kill -TSTP`, a tool that pauses jobs) stops a program in raw mode with the terminal
    /// left raw at the shell's prompt, unless the program watches it and suspends (the
    /// `keys` example does both). An error (`InvalidInput`) for a pty master, whose settings are its slave's.
    ///
    /// ```no_run
    /// use evloop::{Loop, ReadEvent, RunMode, Tty, TtyMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let tty = Tty::open_controlling(&mut lp)?;
    /// tty.set_mode(&mut lp, TtyMode::Raw)?;
    /// tty.read_start(&mut lp, |lp, tty, ev| match ev {
    ///     ReadEvent::Data(keys) if keys.contains(&0x1a) => {
    ///         // Ctrl-Z: leave the alternate screen, stop, and draw again once back.
    ///         tty.write(lp, b"\x1b[?1049l", move |lp, _| {
    ///             if let Err(e) = tty.suspend(lp) {
    ///                 eprintln!("cannot suspend: {e}");
    ///             }
    ///             // and the whole screen
    ///             if let Err(e) = tty.send(lp, b"\x1b[?1049h") {
    ///                 eprintln!("cannot draw: {e}");
    ///             }
    ///         })
    ///         .unwrap();
    ///     }
    ///     ReadEvent::Data(_) => {}
    ///     _ => tty.close(lp).unwrap(),
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn suspend(self, lp: &mut Loop) -> io::Result<bool> {
        let tty = lp.tty_ref(self.0)?;
        if tty.master {
            return Err(invalid(
                "cannot suspend through a pty master: its settings are its slave's, the terminal of \
                 the program on that side",
            ));
        }
        let (mode, terminal) = (tty.mode, tty.terminal);
        // The handle whose mode the program set: this one, or another of this loop on the
        // terminal (a program that calls this on its output's handle).
        let moded = match mode {
            TtyMode::Normal => terminal.and_then(|n| {
                lp.slots.iter().find_map(|(key, slot)| match &slot.kind {
                    Kind::Stream(s) if !slot.flags.contains(Flags::CLOSING) => s
                        .tty
                        .as_ref()
                        .filter(|t| !t.master && t.terminal == Some(n) && t.mode != TtyMode::Normal)
                        .map(|t| {
                            (Tty(HandleId { loop_id: lp.id, key: key as u32, gen_: slot.gen_ }), t.mode)
                        }),
                    _ => None,
                })
            }),
            mode => Some((self, mode)),
        };
        let queued = lp.slots.iter().any(|(key, slot)| match &slot.kind {
            Kind::Stream(s) if !slot.flags.contains(Flags::CLOSING) && s.has_queued_writes() => {
                key == self.0.key as usize
                    || s.tty
                        .as_ref()
                        .is_some_and(|t| !t.master && terminal.is_some() && t.terminal == terminal)
            }
            _ => false,
        });
        if queued {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "cannot suspend while output to the terminal is queued: call suspend from the \
                 callback of the last write",
            ));
        }
        if signal::is_ignored(signal::SIGTSTP)? {
            return Ok(false);
        }
        // Ctrl-Z stops the group in front, which is this one only on its own terminal.
        let own = evloop_platform::process::process_group();
        let fd = self.fd(lp)?;
        let front = termios::foreground_group(fd)
            .map_err(|e| context(e, "cannot suspend: the tty must be this process's controlling terminal"))?;
        if front != own {
            return Err(invalid(format!(
                "cannot suspend: the terminal's foreground group is {front}, not this process's ({own}); \
                 Ctrl-Z stops the group in front"
            )));
        }
        if let Some((handle, _)) = moded {
            handle.set_mode(lp, TtyMode::Normal)?;
        }
        log::debug!("loop {}: suspending the process for {:?}", lp.id, self.0);
        let stopped = evloop_platform::signal::stop_group_as_ctrl_z()
            .map_err(|e| context(e, "cannot stop the process group with SIGTSTP"))?;
        let Some((handle, mode)) = moded else { return Ok(stopped) };
        // Continued in the background (`bg`): setting the mode is for `SIGTTOU` to stop the
        // process until it is in front, where the signal does that; elsewhere it would change
        // the settings of the job in front.
        let fd = self.fd(lp)?;
        let in_front = termios::foreground_group(fd)
            .is_ok_and(|front| front <= 0 || front == own || !termios::group_alive(front));
        let stops_on_ttou = evloop_platform::signal::disposition(signal::SIGTTOU)?
            == evloop_platform::signal::Disposition::Default
            && !evloop_platform::signal::blocked_in_this_thread(signal::SIGTTOU)?;
        if !in_front && !stops_on_ttou {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "continued in the background, where SIGTTOU does not stop this process: the \
                     terminal stays in normal mode; set {mode:?} mode again once in front"
                ),
            ));
        }
        if let Some(signum) = (!in_front).then(|| fatal_signal_after_continue(lp)).flatten() {
            // A shell's `kill %1` of a stopped job: `SIGTERM`, then `SIGCONT`. Stopped again by
            // `SIGTTOU` here, the program would not heed the signal until it is in front.
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "continued in the background with {} waiting for the loop: the terminal stays \
                     in normal mode; set {mode:?} mode again once in front",
                    signal::name(signum).unwrap_or("a signal")
                ),
            ));
        }
        handle
            .set_mode(lp, mode)
            .map_err(|e| context(e, format!("stopped and continued, but cannot set {mode:?} mode again")))?;
        Ok(stopped)
    }

    /// Gives the terminal to process group `pgid` of this session (`tcsetpgrp`): job control,
    /// for a shell. The terminal must be the process's controlling terminal. Works from a
    /// background group too (`SIGTTOU` is blocked meanwhile), which is how the terminal comes
    /// back after a job: so it takes the terminal from whichever group has it, a shell's
    /// too, where the caller runs in the background (started with `&`); ask
    /// [`is_foreground`](Tty::is_foreground) first where that can be.
    ///
    /// A shell runs a job in the foreground like this:
    /// 1. Put the terminal in the settings the job should find: [`TtyMode::Normal`] for a
    ///    new job (after the shell's own raw prompt), or for `fg` those
    ///    [`settings`](Tty::settings) read when the job stopped, after `TtyMode::Normal`
    ///    too: [`set_settings`](Tty::set_settings) is not a mode change, and
    ///    [`save_settings`](Tty::save_settings) after the job wants the handle in normal
    ///    mode.
    /// 2. Start the job in a group of its own
    ///    ([`Pipeline::process_group`](crate::Pipeline::process_group), or
    ///    [`process_group(0)`](crate::Command::process_group)) with
    ///    [`Command::foreground`](crate::Command::foreground), so that it takes the terminal
    ///    itself before its exec, and hand the terminal over from the shell as well (this
    ///    call), as shells do: whichever comes first, the job never runs in the background.
    /// 3. When the job ends, take the terminal back with
    ///    [`current_process_group`](crate::process::current_process_group) (a shell, whose
    ///    group had it before the job: one that started in the background gives it back to
    ///    the group that [`foreground_group`](Tty::foreground_group) named before), and likewise
    ///    when it stops (Ctrl-Z sends its group `SIGTSTP`), which
    ///    [`Process::watch_stops`](crate::Process::watch_stops) reports for the child the
    ///    loop started (a job's leader that catches `SIGTSTP` and runs on while a process
    ///    it started stops, as `sh` with a `trap` does, reports nothing, for bash either).
    ///    Keep its settings then, for `fg`; after a job that exited normally,
    ///    [`save_settings`](Tty::save_settings) keeps what the user changed with `stty`.
    ///
    /// Do not send a new job `SIGCONT`: it would undo a stop that comes at once (a Ctrl-Z
    /// typed as the job starts, a program that stops itself), which `watch_stops` then never
    /// reports, since the job was running again by the time the loop looked. `SIGCONT`
    /// ([`Process::kill_group`](crate::Process::kill_group)) is for a job that stopped: `fg`
    /// gives it its settings and the terminal, then continues it; `bg` just continues it.
    /// A job started without `Command::foreground` may find the terminal not yet its own:
    /// a stage that reads it is then stopped by `SIGTTIN`, and one that changes its settings
    /// by `SIGTTOU`, which `watch_stops` reports, and the shell continues the job once it
    /// has the terminal.
    ///
    /// ```no_run
    /// use evloop::{Command, Loop, RunMode, Tty, TtyMode};
    /// use evloop::process::current_process_group;
    ///
    /// let mut lp = Loop::new()?;
    /// let tty = Tty::open(&mut lp, std::fs::File::open("/dev/tty")?.into())?;
    /// tty.set_mode(&mut lp, TtyMode::Normal)?;
    /// let mut vi = Command::new("vi");
    /// vi.process_group(0).foreground(tty);
    /// let child = vi.spawn(&mut lp, move |lp, p, status| {
    ///     tty.set_foreground_group(lp, current_process_group()).unwrap();
    ///     if status.is_ok_and(|s| s.success()) {
    ///         tty.save_settings(lp).unwrap();
    ///     }
    ///     p.close(lp).unwrap();
    ///     tty.close(lp).unwrap();
    /// })?;
    /// let job = child.process.pid(&lp)? as i32; // its group, which it leads
    /// tty.set_foreground_group(&lp, job)?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_foreground_group(self, lp: &Loop, pgid: i32) -> io::Result<()> {
        termios::set_foreground_group(self.fd(lp)?, pgid)
            .map_err(|e| context(e, format!("tcsetpgrp to process group {pgid}")))
    }

    /// Whether this handle's writes block until the kernel took all the data: when the
    /// terminal could not be reopened privately (see [`Tty::open`]).
    pub fn writes_block(self, lp: &Loop) -> io::Result<bool> {
        Ok(lp.stream_ref(self.0, HandleKind::Tty)?.blocking)
    }
}

/// The signal that ends a process by default that waits for a watcher of this loop, if
/// one does, once [`Tty::suspend`] has been continued in the background: a shell's `kill
/// %1` of a stopped job sends `SIGTERM`, then `SIGCONT`.
///
/// A thread that takes a signal runs its handler before it goes on, so in a program with
/// one thread the signal is seen at once. With several, another thread may have taken it
/// and not yet run the handler that tells the loop (it may be waiting for a CPU): without
/// the signal, this waits up to [`SUSPEND_SIGNAL_WAIT_MS`] for it, in 1 ms steps. Stopped
/// again by `SIGTTOU` meanwhile, the program would heed it only once in front.
fn fatal_signal_after_continue(lp: &Loop) -> Option<i32> {
    if !lp.watches_fatal_signal() {
        return None;
    }
    let deadline = Instant::now() + Duration::from_millis(SUSPEND_SIGNAL_WAIT_MS);
    loop {
        if let Some(signum) = lp.fatal_signal_waiting() {
            return Some(signum);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether `err`, from a [`Tty`]'s read, says the read came from a background process
/// group (`EIO`; see [`Tty`]): the terminal is still there, in another group's hands, and
/// reading can start again once this group is in front. A terminal that hung up ends the
/// read with [`ReadEvent::Eof`](crate::ReadEvent::Eof) instead.
///
/// ```
/// use std::io;
/// use evloop::tty::is_background_read;
///
/// assert!(is_background_read(&io::Error::from_raw_os_error(libc::EIO)));
/// assert!(!is_background_read(&io::Error::from(io::ErrorKind::BrokenPipe)));
/// ```
pub fn is_background_read(err: &io::Error) -> bool {
    crate::os_error_code(err) == Some(evloop_platform::libc::EIO)
}

/// Puts back each terminal's saved settings: the ones from before its first mode change in
/// the process, or the ones taken later with [`Tty::save_settings`] (libuv's
/// `uv_tty_reset_mode`, which knows one terminal only: the first), from the last terminal
/// changed to the first. Before any change, it does nothing and returns `Ok`.
///
/// It is async-signal-safe and preserves `errno`, so a signal handler may call it. It fails
/// with `EBUSY`, rather than wait, if a handle is changing the saved settings at that very
/// moment. A terminal's settings stay saved until the handle that saved them closes
/// (closing restores them too); the next mode change of that terminal saves again. `exit`
/// (`std::process::exit`, or returning from `main`) calls it for settings still saved then;
/// a child forked without exec does not.
///
/// Every terminal a handle changed is restored, as that handle's close would restore it,
/// including a pty slave a child also runs on: set up a child's pty with
/// [`Settings::apply`](crate::Settings::apply) instead, which saves nothing, to leave its
/// modes to it. A pty master's settings are not saved: they are its pty's, which ends with
/// the last open master, usually with the process. Up to
/// [`SAVED_TERMINALS_MAX`](crate::limits::SAVED_TERMINALS_MAX) terminals are saved at once;
/// one changed while that many are saved is restored by its handle's close only, and a
/// warning is logged, unless it is the process's controlling terminal, the user's own,
/// which takes the place of the terminal saved last (that one is then restored by its
/// handle's close only). A terminal that hung up (a pty whose master closed) has nothing left
/// to restore, and its `EIO` is not reported unless it is the controlling terminal.
///
/// Called from a background process group, it writes the terminal of the foreground job
/// (or, where `SIGTTOU` stops it, stops the process). `exit` and the hooks of
/// [`install_restore_hooks`] reset only while the process's group is in front.
///
/// ```
/// evloop::tty::reset_mode()?; // nothing changed yet: a no-op
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn reset_mode() -> io::Result<()> {
    termios::reset_saved()
}

/// Sets the bytes written to the terminal just before [`reset_mode`] restores its settings,
/// and so before the restore hooks of [`install_restore_hooks`] (a panic, a fatal signal)
/// and `exit` do: the escape sequences that undo what a full-screen program did to the
/// screen, which the settings do not hold (leaving the alternate screen, showing the
/// cursor, ending bracketed paste or mouse reports). Empty for none, as at the start.
///
/// Process-wide, as the saved settings are, and written only where they are restored:
/// while a handle holds settings saved, by `reset_mode` whenever it is called, by the hooks
/// and `exit` only while the process's group is in front, and by the drop of the [`Loop`]
/// whose handle holds them (a `?` out of `main` drops it before `exit` could see them),
/// also only in front (a program that drops a loop and goes on using its screen clears
/// them first). Written once: what they undo is undone then, and they are cleared,
/// so a program that sets its screen up again (after a panic it caught) sets them again.
/// A program that undoes those changes itself, on its way out or before it runs a program
/// in the foreground, clears them: written again on a normal screen, such sequences can
/// move the cursor (leaving the alternate screen restores the cursor position saved on
/// entering it). Closing a [`Tty`] handle puts its settings back but does not write these
/// bytes (the program may go on using the terminal): one that leaves through a close
/// writes them itself, or calls `reset_mode` first.
///
/// The bytes go to one terminal: the process's controlling terminal (as it was when the
/// settings were saved) if its settings are saved, else the terminal saved first of those
/// still saved; through the description of
/// the handle that saved them, or, where it is open for reading only
/// (`less` opens `/dev/tty` so) or blocks, through one that the save opened for writing
/// (by name, or `/dev/tty`; without either, nothing is written). A terminal whose output is
/// full gets 200 ms; still full then (it stopped reading), the output waiting for it is
/// discarded, the frame it would draw no longer mattering, and the bytes go in its place.
/// Nothing goes to a pty master (it would be its slave's input; its settings are not saved).
///
/// A signal can come in the middle of a frame, and the bytes then follow the part of the
/// frame already written, possibly half an escape sequence (`\x1b[38;5;`), which would
/// swallow the start of theirs: begin them with CAN (`\x18`), which cancels a sequence in
/// progress and is ignored otherwise.
///
/// ```
/// use evloop::tty;
///
/// // cancel a half-written sequence, paste off, cursor, main screen
/// tty::set_restore_sequence(b"\x18\x1b[?2004l\x1b[?25h\x1b[?1049l");
/// tty::install_restore_hooks()?;
/// // ... raw mode and the alternate screen; on the way out, undone by hand:
/// tty::set_restore_sequence(b"");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_restore_sequence(bytes: &'static [u8]) {
    termios::set_restore_bytes(bytes);
}

/// Restores the terminal ([`reset_mode`]) when the program panics or is ended by a signal:
/// the one line to call at the start of `main` in a program that uses raw mode, or that
/// opens its inherited stdio as handles. Calling it again does nothing.
///
/// The signals are those that end a process by default on Linux, macOS and FreeBSD alike
/// and are sent rather than raised by a fault: `SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT`,
/// `SIGABRT` (`abort`, a panic that aborts, a stack overflow), `SIGALRM`, `SIGUSR1`,
/// `SIGUSR2`, `SIGPIPE` (if its default was put back before this call: Rust programs start
/// with it ignored), `SIGVTALRM`, `SIGPROF`, `SIGXCPU` and `SIGXFSZ`. Each only where its
/// disposition is the default when this is called. Not covered: `SIGKILL`, which cannot be
/// caught; `SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP` and `SIGSYS`, which come from a
/// fault, in a state no handler should trust; the real-time signals, and those only some
/// systems have or end a process with (`SIGPWR`, `SIGIO`).
///
/// Each resets only while the process's group is the terminal's foreground group (or the
/// terminal has none, or the group in front has no member left): from the background, as a
/// shell is while a job has the terminal, the settings are the job's to keep, and writing
/// them could stop the process with `SIGTTOU`. None resets in a child forked without exec
/// (a worker, or a child between another library's `fork` and its exec), which inherits
/// them: the parent that set the mode may go on using the terminal.
///
/// What is restored is the terminal's settings, after the bytes of
/// [`set_restore_sequence`] (the screen: the alternate screen, the cursor).
///
/// - **Panics**: a panic hook resets the terminal, then calls the hook that was installed
///   before (which prints the message, now on a sane terminal). A panic of the main
///   thread, or any panic where panics abort, resets every terminal; another thread's
///   resets the terminals whose mode that thread's handles changed (the thread that runs
///   the program's terminal; the restore sequence only if it is meant for one of them),
///   and leaves the others as the program has them: a worker's
///   panic, which its pool or `join` takes, unwinds that thread alone, and if the program
///   ends over it, the main thread's own panic, the drop of its loop or `exit` restores the
///   terminal (a panic that aborts the process, `SIGABRT`, is a fatal signal: below). A
///   panic hook runs
///   before anyone can catch the panic: a program that survives one on its terminal's
///   thread (`catch_unwind` around [`Loop::run`]) finds its terminal in normal mode, while
///   its handles still say otherwise, and puts its mode back with [`Tty::set_mode`] (the
///   same mode again sets the settings again), and its screen and [`set_restore_sequence`]
///   too.
/// - **Signals**: for each of those signals whose disposition is the default (ending the
///   process), a handler resets the terminal, clears the `O_NONBLOCK` that handles set on
///   shared descriptions ([`restore_shared_blocking`](crate::restore_shared_blocking)),
///   puts the default back and raises the signal again, so the process still ends by that
///   signal (its exit status says so). The panic hook leaves `O_NONBLOCK` alone: a panic may
///   be caught, and the loop go on; one that unwinds out of `main` drops the loop, which
///   restores it.
///
/// `SIGTSTP` and `SIGCONT` are left alone: in the raw modes the keyboard does not send
/// `SIGTSTP`, and a program that reads Ctrl-Z as a key stops with [`Tty::suspend`], which
/// sets the mode around the stop.
///
/// It coexists with the loop's [`Signal`] handles, in either order. A signal that is
/// ignored or has a handler already (yours, another library's, or a loop's) keeps it: a
/// program that catches `SIGINT` decides itself what to do. So does one whose handler,
/// installed later, calls the handler it replaced, as signal-hook's (and so tokio's
/// `signal`) does: called that way, the hook does nothing, since the process may go on
/// (a graceful shutdown restores the terminal at `exit`; one that ends the process by the
/// signal or by `_exit`, as signal-hook's default emulation and conditional shutdown do,
/// calls [`reset_mode`] first). While a loop watches one of these signals, its callbacks
/// get it; when the last watcher stops, the loop puts back this handler (instead of the
/// default).
///
/// ```
/// evloop::tty::install_restore_hooks()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn install_restore_hooks() -> io::Result<()> {
    static PANIC_HOOK: std::sync::Once = std::sync::Once::new();
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Another thread's panic (a worker's) unwinds that thread alone, and the
            // program goes on using the terminals that thread did not change.
            if cfg!(panic = "abort") || evloop_platform::process::is_main_thread() {
                let _ = termios::reset_saved_in_front();
            } else {
                let _ = termios::reset_saved_of_this_thread();
            }
            previous(info);
        }));
    });
    termios::install_reset_handlers()
}

/// Creates a pty: `(master, slave)`, both read-write, blocking and close-on-exec; the slave
/// does not become the controlling terminal. A program runs on the slave side (its stdio),
/// with the slave as its controlling terminal if it is given one
/// ([`Command::controlling_terminal`](crate::Command::controlling_terminal) shows the whole
/// set-up); whoever drives it, like a terminal emulator, reads and writes the master, as a
/// [`Tty`] handle (which makes it nonblocking: see [`Tty::open`]).
///
/// A new pty's window size is 0 by 0. Give it its size before the program starts
/// ([`Tty::set_winsize`] on the master's handle): set after the spawn, it races the
/// program's first look (`stty size`, a full-screen program drawing its first screen).
///
/// ```
/// use evloop::{Loop, Tty, WinSize, tty};
///
/// let mut lp = Loop::new()?;
/// let (master, _slave) = tty::openpty()?;
/// let master = Tty::open(&mut lp, master)?;
/// let size = WinSize { rows: 24, cols: 80, ..WinSize::default() };
/// master.set_winsize(&lp, size)?; // then spawn the program on the slave
/// assert_eq!(master.winsize(&lp)?, size);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    termios::openpty().map_err(|e| context(e, "openpty"))
}

impl Loop {
    /// The settings a tty handle of this loop on terminal `terminal` saved as its normal
    /// ones, if one did.
    fn tty_saved_of(&self, terminal: u64) -> Option<Termios> {
        self.slots.iter().find_map(|(_, slot)| match &slot.kind {
            Kind::Stream(s) => match &s.tty {
                Some(TtyState { saved: Some(t), terminal: Some(n), .. }) if *n == terminal => Some(*t),
                _ => None,
            },
            _ => None,
        })
    }

    /// At the release of tty handle `id`, whose `release` puts its terminal's settings back:
    /// when another handle of this loop on that terminal has output queued (a program's
    /// stdout, when it closes its stdin first), that handle takes the restore over until its
    /// queue is empty, or it closes too. What was queued for the mode in place then goes out
    /// in it, not with the normal settings (in io mode, `\n` would become `\r\n`).
    pub(crate) fn tty_hand_over(&mut self, id: HandleId, release: &mut TtyRelease) {
        let (Some(_), Some(terminal)) = (release.restore, release.terminal) else { return };
        // Output to the terminal: not a pty master's, which is the terminal's input. One
        // that waits with a restore already comes first, so that one restore stands for all.
        let candidate = |key: usize, slot: &crate::handle::Slot| match &slot.kind {
            Kind::Stream(s) if key != id.key as usize && !slot.flags.contains(Flags::CLOSING) => s
                .tty
                .as_ref()
                .filter(|t| t.terminal == Some(terminal) && !t.master && s.has_queued_writes())
                .map(|t| (t.handed.is_none(), key)),
            _ => None,
        };
        let Some((_, key)) = self.slots.iter().filter_map(|(key, slot)| candidate(key, slot)).min() else {
            return;
        };
        let Some(Kind::Stream(s)) = self.slots.get_mut(key).map(|slot| &mut slot.kind) else { return };
        let Some(target) = s.tty.as_mut() else { return };
        log::debug!(
            "loop {}: the terminal of {id:?} is restored once another handle's output is out",
            self.id
        );
        let handed = target.handed.get_or_insert(TtyRelease {
            restore: None,
            claim: None,
            original: None,
            terminal: Some(terminal),
        });
        // (Handles on one terminal save the same settings: see `Tty::set_mode`.)
        let restore = release.restore.take();
        handed.restore = handed.restore.or(restore);
        if handed.claim.is_none() {
            handed.claim = release.claim.take();
        }
    }

    /// Puts back the settings handed to tty handle `id` (see `tty_hand_over`): its queue is
    /// empty.
    #[cold]
    #[inline(never)]
    pub(crate) fn tty_restore_handed(&mut self, id: HandleId) {
        let (loop_id, for_good) = (self.id, self.dropping);
        let Some(Kind::Stream(s)) = self.live_slot_mut(id).map(|s| &mut s.kind) else { return };
        let Some(handed) = s.tty.as_mut().and_then(|t| t.handed.take()) else { return };
        match s.io.fd() {
            Ok(fd) => handed.release(loop_id, fd, for_good),
            // (Not reached: a handle waiting with a restore has writes queued, so its fd.)
            Err(e) => log::warn!("loop {loop_id}: a terminal's settings not restored: {e}"),
        }
    }

    /// Puts back at once settings handed over on the terminal of tty handle `id` (see
    /// `tty_hand_over`), before the terminal is given to a child's group: from the
    /// background, the restore would not be made at all.
    pub(crate) fn tty_restore_handed_for(&mut self, id: HandleId) {
        if let Some(n) = self.tty_ref(id).ok().and_then(|t| t.terminal) {
            self.tty_restore_handed_on(n);
        }
    }

    /// Puts back at once settings handed over on `terminal` (see `tty_hand_over`): a mode
    /// change through any handle on it comes first, and the restore must not undo it later.
    fn tty_restore_handed_on(&mut self, terminal: u64) {
        let waiting: Vec<HandleId> = self
            .slots
            .iter()
            .filter_map(|(key, slot)| match &slot.kind {
                Kind::Stream(s) => s
                    .tty
                    .as_ref()
                    .filter(|t| t.handed.is_some() && t.terminal == Some(terminal))
                    .map(|_| HandleId { loop_id: self.id, key: key as u32, gen_: slot.gen_ }),
                _ => None,
            })
            .collect();
        for id in waiting {
            self.tty_restore_handed(id);
        }
    }

    fn tty_ref(&self, id: HandleId) -> io::Result<&TtyState> {
        let s = self.stream_ref(id, HandleKind::Tty)?;
        Ok(s.tty.as_ref().expect("a tty stream has tty state"))
    }

    fn tty_mut(&mut self, id: HandleId) -> io::Result<&mut TtyState> {
        let s = self.stream_mut(id, HandleKind::Tty)?;
        Ok(s.tty.as_mut().expect("a tty stream has tty state"))
    }

    /// The tty part of closing a stream: its resize watcher goes too.
    pub(crate) fn tty_stop_for_close(&mut self, id: HandleId) {
        let Some(Kind::Stream(s)) = self.live_slot_mut(id).map(|s| &mut s.kind) else { return };
        if let Some(sig) = s.tty.as_mut().and_then(|t| t.resize.take()) {
            // Already closed if the user closed every handle: nothing left to do then.
            let _ = sig.close(self);
        }
    }
}
