//! Terminals: termios and the two raw modes, window sizes, ptys, reopening a terminal by
//! name, and the process-wide saved termios that a signal handler can restore.
//!
//! **The saved termios.** Each terminal whose mode changes in the process claims a slot here
//! ([`save_original`], up to [`SAVED_TERMINALS_MAX`] at once) holding its settings from
//! before its first change and a duplicate of its fd; pty masters take none, their pty
//! ending with the process. [`reset_saved`] writes the settings back, from the last terminal
//! saved to the first, and is async-signal-safe: it takes one atomic flag without waiting,
//! calls `tcsetattr` (on POSIX's list of async-signal-safe functions) and preserves `errno`.
//! If the flag is held, by the code the signal interrupted or by another thread, it fails
//! with `EBUSY` rather than wait (as libuv's `uv_tty_reset_mode` does). The slots' writers
//! spin on the flag; they never run in signal context and hold it only for a copy or a
//! close. Each slot keeps its own duplicate of the fd, so a reset never reaches an fd
//! number that was closed and reused meanwhile; the claim ([`SavedClaim`]) closes it when
//! it drops. (libuv saves one terminal, the first: a second one put in raw mode, the
//! user's own after a pty's, stayed raw at exit once the first had closed.)
//!
//! **Telling a pty master from the rest.** `TIOCGPTN` (Linux, FreeBSD) and `TIOCPTYGNAME`
//! (macOS) answer only on a pty *master*, with the number or name of its slave; on a slave,
//! a console or a serial line they fail with `ENOTTY`. libuv's `uv__tty_is_slave` is that
//! test negated, so it really asks "is this not a pty master?". That is the question that
//! matters for reopening: `ttyname` of a master is the cloning `/dev/ptmx` (checked on
//! Linux), and opening that creates a new pty instead of reaching this one. Every other
//! terminal can be reopened through its name; [`reopen`] then also checks that the path
//! still leads to the same file.

use std::cell::UnsafeCell;
use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::cvt::{cvt, cvt_errno, cvt_r};
use crate::fd::{self, Access};
use crate::signal_lock::{SignalLock, SignalLockGuard};

/// A terminal's settings (`struct termios`).
#[derive(Clone, Copy)]
pub struct Termios(libc::termios);

impl fmt::Debug for Termios {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Termios")
            .field("iflag", &format_args!("{:#o}", self.0.c_iflag))
            .field("oflag", &format_args!("{:#o}", self.0.c_oflag))
            .field("cflag", &format_args!("{:#o}", self.0.c_cflag))
            .field("lflag", &format_args!("{:#o}", self.0.c_lflag))
            .field("vmin", &self.0.c_cc[libc::VMIN])
            .field("vtime", &self.0.c_cc[libc::VTIME])
            .finish_non_exhaustive()
    }
}

/// Every flag, control character and speed (the fields the system defines; padding and
/// reserved bytes do not count).
impl PartialEq for Termios {
    fn eq(&self, other: &Termios) -> bool {
        let (a, b) = (&self.0, &other.0);
        #[cfg(target_os = "linux")]
        if a.c_line != b.c_line {
            return false;
        }
        a.c_iflag == b.c_iflag
            && a.c_oflag == b.c_oflag
            && a.c_cflag == b.c_cflag
            && a.c_lflag == b.c_lflag
            && a.c_cc == b.c_cc
            && speeds(a) == speeds(b)
    }
}

/// The input and output speeds as the struct holds them (musl's fields are named apart).
fn speeds(t: &libc::termios) -> (libc::speed_t, libc::speed_t) {
    #[cfg(not(target_env = "musl"))]
    {
        (t.c_ispeed, t.c_ospeed)
    }
    #[cfg(target_env = "musl")]
    {
        (t.__c_ispeed, t.__c_ospeed)
    }
}

impl Eq for Termios {}

impl Termios {
    /// libuv's raw mode (`UV_TTY_MODE_RAW`): input bytes arrive one at a time, unechoed and
    /// untranslated, and control keys are bytes, not signals; output processing stays on,
    /// so `"\n"` still prints as `"\r\n"`.
    ///
    /// Clears `BRKINT ICRNL INPCK ISTRIP IXON` in `c_iflag` and `ECHO ICANON IEXTEN ISIG` in
    /// `c_lflag`, sets `ONLCR` in `c_oflag` (keeping `OPOST`) and `CS8` in `c_cflag`;
    /// `VMIN` 1, `VTIME` 0.
    pub fn make_raw(&mut self) {
        let t = &mut self.0;
        t.c_iflag &= !(libc::BRKINT | libc::ICRNL | libc::INPCK | libc::ISTRIP | libc::IXON);
        t.c_oflag |= libc::ONLCR;
        t.c_cflag |= libc::CS8;
        t.c_lflag &= !(libc::ECHO | libc::ICANON | libc::IEXTEN | libc::ISIG);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
    }

    /// Turns the echo of typed input on or off (`ECHO` in `c_lflag`), and nothing else: line
    /// editing and the signal keys stay as they are (pexpect's `setecho`).
    pub fn set_echo(&mut self, on: bool) {
        if on {
            self.0.c_lflag |= libc::ECHO;
        } else {
            self.0.c_lflag &= !libc::ECHO;
        }
    }

    /// Turns the signal keys on or off (`ISIG` in `c_lflag`: Ctrl-C, Ctrl-\\ and Ctrl-Z send
    /// `SIGINT`, `SIGQUIT` and `SIGTSTP` to the foreground group), and nothing else.
    pub fn set_signals(&mut self, on: bool) {
        if on {
            self.0.c_lflag |= libc::ISIG;
        } else {
            self.0.c_lflag &= !libc::ISIG;
        }
    }

    /// `cfmakeraw`: raw input as in [`make_raw`](Self::make_raw), and no output processing
    /// either (libuv's `UV_TTY_MODE_IO`). The exact bits are the C library's; BSDs clear a
    /// few more than glibc. Reads return each byte as it comes (`VMIN` 1, `VTIME` 0) on
    /// every system: older BSD and Apple versions of `cfmakeraw` leave those two as they
    /// were.
    pub fn make_io(&mut self) {
        // SAFETY: `self.0` is a valid termios, exclusively borrowed for the call.
        unsafe { libc::cfmakeraw(&mut self.0) };
        self.0.c_cc[libc::VMIN] = 1;
        self.0.c_cc[libc::VTIME] = 0;
    }
}

/// `tcgetattr(fd)`. A non-terminal gives `ENOTTY`.
pub fn get(fd: BorrowedFd<'_>) -> io::Result<Termios> {
    // Zeroed first: musl's tcgetattr is the bare `TCGETS`, which fills in only the kernel's
    // part of the struct (19 control characters of 32, no speed fields), and two reads of
    // one terminal must compare equal.
    let mut t = MaybeUninit::<libc::termios>::zeroed();
    // SAFETY: `t` is valid for writes of one termios; `fd` is borrowed, so it stays open.
    cvt_r(|| unsafe { libc::tcgetattr(fd.as_raw_fd(), t.as_mut_ptr()) })?;
    // SAFETY: every byte is initialised: zeroed, then partly or wholly written by tcgetattr.
    Ok(Termios(unsafe { t.assume_init() }))
}

/// `tcsetattr(fd, TCSANOW, t)`.
pub fn set(fd: BorrowedFd<'_>, t: &Termios) -> io::Result<()> {
    // SAFETY: `t.0` is a valid termios for reads; `fd` is borrowed.
    cvt_r(|| unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t.0) })?;
    Ok(())
}

/// A terminal's window size (`struct winsize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct WinSize {
    /// Rows of characters.
    pub rows: u16,
    /// Columns of characters.
    pub cols: u16,
    /// Width in pixels, where the terminal reports it (often 0).
    pub x_pixels: u16,
    /// Height in pixels, where the terminal reports it (often 0).
    pub y_pixels: u16,
}

/// The window size of the terminal `fd` (`TIOCGWINSZ`).
pub fn winsize(fd: BorrowedFd<'_>) -> io::Result<WinSize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which is valid for
    // that; `fd` is borrowed.
    cvt_r(|| unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) })?;
    Ok(WinSize { rows: ws.ws_row, cols: ws.ws_col, x_pixels: ws.ws_xpixel, y_pixels: ws.ws_ypixel })
}

/// Sets the window size of the terminal `fd` (`TIOCSWINSZ`). On a pty master this is how a
/// terminal emulator tells the program on the slave side; the kernel sends `SIGWINCH` to the
/// slave's foreground process group, if it has one.
pub fn set_winsize(fd: BorrowedFd<'_>, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: size.x_pixels,
        ws_ypixel: size.y_pixels,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, valid for that.
    cvt_r(|| unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// The foreground process group of terminal `fd` (`tcgetpgrp`), which must be the calling
/// process's controlling terminal (`ENOTTY` otherwise).
pub fn foreground_group(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: `fd` is borrowed; tcgetpgrp takes no pointer.
    cvt(unsafe { libc::tcgetpgrp(fd.as_raw_fd()) })
}

/// Makes process group `pgid`, of the caller's session, the foreground group of terminal `fd`,
/// the caller's controlling terminal (`tcsetpgrp`). `SIGTTOU` is blocked on the calling
/// thread meanwhile: a process in a background group may then do it too (a shell taking the
/// terminal back after a job), instead of being stopped. Blocked is as good as ignored here
/// (POSIX), so no `SIGTTOU` is sent.
pub fn set_foreground_group(fd: BorrowedFd<'_>, pgid: i32) -> io::Result<()> {
    // SAFETY: `fd` is borrowed; tcsetpgrp takes no pointer.
    with_sigttou_blocked(|| cvt_r(|| unsafe { libc::tcsetpgrp(fd.as_raw_fd(), pgid) }).map(drop))?
}

/// [`set`], with `SIGTTOU` blocked: from a background group too (a terminal whose foreground
/// group has no member left, after a job ended, say), instead of being stopped.
pub fn set_from_background(fd: BorrowedFd<'_>, t: &Termios) -> io::Result<()> {
    with_sigttou_blocked(|| set(fd, t))?
}

/// Runs `f` with `SIGTTOU` blocked on the calling thread (blocked is as good as ignored for
/// a background group's terminal calls, POSIX says, and no `SIGTTOU` is sent).
/// Async-signal-safe, as long as `f` is.
fn with_sigttou_blocked<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let mut ttou = MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `ttou` is valid for writes of one sigset_t; sigemptyset initialises it and
    // sigaddset then changes the initialised set.
    unsafe {
        libc::sigemptyset(ttou.as_mut_ptr());
        libc::sigaddset(ttou.as_mut_ptr(), libc::SIGTTOU);
    }
    // SAFETY: `ttou` is initialised; `old` is valid for writes of one sigset_t.
    cvt_errno(unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, ttou.as_ptr(), old.as_mut_ptr()) })?;
    let res = f();
    // SAFETY: pthread_sigmask succeeded above and filled in `old`, the mask to put back.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut()) };
    Ok(res)
}

/// The path of the slave of the pty master `fd`. Fails (`ENOTTY`, or `EINVAL` on some
/// systems) for anything that is not a pty master, which makes it the master test too.
pub fn pty_slave_name(fd: BorrowedFd<'_>) -> io::Result<CString> {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    {
        let mut n: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes one unsigned int through the pointer, valid for that.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n) })?;
        Ok(CString::new(format!("/dev/pts/{n}")).expect("no NUL in a formatted number"))
    }
    #[cfg(target_os = "macos")]
    {
        // TIOCPTYGNAME's size (128) is encoded in the request number.
        let mut buf = [0u8; 128];
        // SAFETY: TIOCPTYGNAME writes at most 128 bytes, a NUL-terminated name, into `buf`.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCPTYGNAME as libc::c_ulong, buf.as_mut_ptr()) })?;
        let name =
            CStr::from_bytes_until_nul(&buf).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(name.to_owned())
    }
}

/// Whether `fd` is a pty master (see the module docs for the test). Async-signal-safe: one
/// `ioctl`, nothing allocated.
pub fn is_pty_master(fd: BorrowedFd<'_>) -> bool {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    {
        let mut n: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes one unsigned int through the pointer, valid for that.
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n) == 0 }
    }
    #[cfg(target_os = "macos")]
    {
        let mut buf = [0u8; 128];
        // SAFETY: TIOCPTYGNAME writes at most 128 bytes (its size is in the request number).
        unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCPTYGNAME as libc::c_ulong, buf.as_mut_ptr()) == 0 }
    }
}

/// A number naming the terminal `fd` is open on, the same through every fd on it; for
/// telling whether two fds lead to one terminal's settings.
///
/// - Linux: the device `TIOCGDEV` reports. It sees through the aliases: a pty master gives
///   its slave's device (whose settings it reads and writes), `/dev/tty` and `/dev/console`
///   the terminal behind them. (`st_rdev` cannot: every pty master is the cloning
///   `/dev/ptmx`, 5:2.) Where the kernel lacks it (before 2.6.38), `st_rdev`, except for a
///   pty master, which then has no number (`Unsupported`).
/// - macOS and FreeBSD: `st_rdev`, and for a pty master that of its slave (found by name,
///   [`pty_slave_name`]), so a master and its slave count as one terminal, as on Linux.
///   (Where the slave's node cannot be seen, as in a jail without it, the master's own
///   `st_rdev`: on macOS a number of its own.)
///   `/dev/tty` has a device number of its own on macOS: there it counts as the terminal
///   behind it where a stdio fd is that terminal (the process's controlling terminal), and
///   as a terminal of its own otherwise.
pub fn terminal_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let id = device_id(fd)?;
    #[cfg(target_vendor = "apple")]
    if let Some(behind) = controlling_terminal_behind_dev_tty(id) {
        return Ok(behind);
    }
    Ok(id)
}

/// [`terminal_id`], but for `/dev/tty` on macOS its own number: the device `fd` is open
/// on, with nothing guessed.
fn device_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut dev: libc::c_uint = 0;
        // SAFETY: TIOCGDEV writes one unsigned int through the pointer, valid for that.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGDEV, &mut dev) } == 0 {
            // The top bit keeps these apart from the `st_rdev` numbers below (another
            // encoding of the same devices).
            return Ok(1 << 63 | u64::from(dev));
        }
        if is_pty_master(fd) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel cannot tell which pty a master belongs to (no TIOCGDEV)",
            ));
        }
    }
    #[cfg(not(target_os = "linux"))]
    if let Ok(slave) = pty_slave_name(fd) {
        // A master reads and writes its slave's settings: it is that terminal. (The slave's
        // node cannot be renamed or reused while the master holds the pty.) Where the node
        // cannot be seen (a jail without it), the master's own number still tells ptys
        // apart.
        if let Ok(st) = fd::stat_path(&slave) {
            return Ok(rdev_id(&st));
        }
    }
    Ok(rdev_id(&fd::fstat(fd)?))
}

/// macOS: for `/dev/tty`'s own device number `id`, that of the terminal behind it, where a
/// stdio fd is that terminal (the controlling terminal, by its session). A handle on
/// `/dev/tty` and one on stdin then count as one terminal and share their saved settings:
/// otherwise the second to change the mode took the first one's raw settings for its
/// normal ones, and put them back.
#[cfg(target_vendor = "apple")]
fn controlling_terminal_behind_dev_tty(id: u64) -> Option<u64> {
    if fd::stat_path(c"/dev/tty").ok().map(|st| rdev_id(&st)) != Some(id) {
        return None;
    }
    // SAFETY: getsid takes no pointers.
    let own = unsafe { libc::getsid(0) };
    (0..3).find_map(|n: RawFd| {
        let mut st = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: by number, as `stdio_in_front` asks: on a number that is not open (or not
        // a terminal) each call fails and writes nothing. `st` is valid for one stat.
        let (stat_ok, tty, sid) =
            unsafe { (libc::fstat(n, st.as_mut_ptr()) == 0, libc::isatty(n) == 1, libc::tcgetsid(n)) };
        // SAFETY: fstat succeeded, so it filled `st` in.
        let stdio_id = stat_ok.then(|| rdev_id(&unsafe { st.assume_init() }))?;
        (tty && sid > 0 && sid == own && stdio_id != id).then_some(stdio_id)
    })
}

/// A device number as a [`terminal_id`]: the top bit clear.
fn rdev_id(st: &libc::stat) -> u64 {
    // The field's type differs by platform (u32, i32 or u64); only equality matters.
    #[allow(clippy::unnecessary_cast)]
    let rdev = st.st_rdev as u64;
    rdev & !(1 << 63)
}

/// Creates a pty: `(master, slave)`, both read-write, close-on-exec and blocking. The slave
/// does not become the caller's controlling terminal (`O_NOCTTY`).
///
/// Built from `posix_openpt`, `grantpt`, `unlockpt` and the slave's name, not `openpty(3)`,
/// so that both fds are born close-on-exec. macOS's `posix_openpt` takes no `O_CLOEXEC`:
/// there the master gets the flag right after, as [`fd::pipe`] does.
pub fn openpty() -> io::Result<(OwnedFd, OwnedFd)> {
    #[cfg(not(target_vendor = "apple"))]
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    #[cfg(target_vendor = "apple")]
    let flags = libc::O_RDWR | libc::O_NOCTTY;
    // SAFETY: posix_openpt takes no pointers.
    let raw = cvt_r(|| unsafe { libc::posix_openpt(flags) })?;
    // SAFETY: posix_openpt returned a fresh fd that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    #[cfg(target_vendor = "apple")]
    fd::set_cloexec(master.as_fd())?;
    let master = fd::settle(master)?;
    // SAFETY: `master` is an open pty master for both calls; neither takes a pointer.
    cvt(unsafe { libc::grantpt(master.as_raw_fd()) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
    let name = pty_slave_name(master.as_fd())?;
    let slave = fd::open(&name, Access::ReadWrite, false)?;
    Ok((master, slave))
}

/// The path of the terminal `fd` (`ttyname_r`).
pub fn ttyname(fd: BorrowedFd<'_>) -> io::Result<CString> {
    let mut buf = vec![0u8; 128];
    loop {
        // SAFETY: `buf` is valid for writes of its length; ttyname_r writes a NUL-terminated
        // name that fits, or fails with ERANGE.
        let rc = unsafe { libc::ttyname_r(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match cvt_errno(rc) {
            Ok(()) => {
                let name = CStr::from_bytes_until_nul(&buf)
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                return Ok(name.to_owned());
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 4096 => {
                buf.resize(buf.len() * 2, 0)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether two fds refer to the same file: the same `(st_dev, st_ino, st_rdev)`.
fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> io::Result<bool> {
    // The field types differ by platform (u32, i32 or u64); only equality matters.
    #[allow(clippy::unnecessary_cast)]
    fn id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64, u64)> {
        let st = crate::fd::fstat(fd)?;
        Ok((st.st_dev as u64, st.st_ino as u64, st.st_rdev as u64))
    }
    Ok(id(a)? == id(b)?)
}

/// Opens the terminal `fd` refers to again, through its name, as an open file description of
/// its own: `open(ttyname(fd), access | O_NOCTTY | O_CLOEXEC | O_NONBLOCK)`.
///
/// `O_NONBLOCK` is set at open, so a serial line without `CLOCAL` does not wait for carrier.
/// Fails for a pty master (its name is the cloning `/dev/ptmx`, see the module docs), when
/// `ttyname` fails (the fd's path is not visible here, as in another mount namespace), when
/// the open fails, and when the path leads to another file than `fd` by then.
pub fn reopen(fd: BorrowedFd<'_>, access: Access) -> io::Result<OwnedFd> {
    if is_pty_master(fd) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a pty master cannot be reopened by name (its name is the cloning /dev/ptmx)",
        ));
    }
    let name = ttyname(fd)?;
    let new = fd::open(&name, access, true)?;
    if !same_file(fd, new.as_fd())? {
        return Err(io::Error::other(format!("{} leads to another file now", name.to_string_lossy())));
    }
    Ok(new)
}

/// Opens the terminal `fd` refers to again through `/dev/tty`, when it is the process's
/// controlling terminal: for a terminal [`reopen`] cannot open by name (another user's,
/// after `su` or `sudo -u`: its node is not ours to open, while `/dev/tty` is everyone's).
/// `/dev/tty` gives a description of its own, with `O_NONBLOCK` set. Fails without a
/// controlling terminal (`ENXIO`), and when the controlling terminal is another one than
/// `fd`'s or cannot be told to be the same: by the device number ([`terminal_id`] without
/// its guess for `/dev/tty`), which on macOS gives `/dev/tty` a number of its own, so there
/// it always fails. On FreeBSD the open of `/dev/tty` is checked against the terminal's own
/// node, so it fails where the open by name did: in practice this helps on Linux.
pub fn reopen_controlling(fd: BorrowedFd<'_>, access: Access) -> io::Result<OwnedFd> {
    let new = fd::open(c"/dev/tty", access, true)?;
    if device_id(fd)? != device_id(new.as_fd())? {
        return Err(io::Error::other("the controlling terminal is another terminal"));
    }
    Ok(new)
}

// ----- the process-wide saved termios -----------------------------------------------------

/// How many terminals can have their settings saved process-wide at once (see
/// [`save_original`]): the program's own terminal and a few others it puts in a raw mode.
pub const SAVED_TERMINALS_MAX: usize = 8;

/// Held while [`SAVED`] is read or written.
static SAVED_LOCK: SignalLock = SignalLock::new();
/// How many of [`SAVED`]'s slots are in use, written under the lock: read without it, so
/// that a lookup with nothing saved takes no lock.
static SAVED_COUNT: AtomicUsize = AtomicUsize::new(0);
/// The [`terminal_id`] of each slot's terminal, `NO_TERMINAL_ID` for an empty slot (or a
/// terminal without one), written under the lock: read without it, so that the common
/// repeated question, whether a terminal is saved already, takes no lock (a fatal signal
/// arriving while it is held gets `EBUSY`, and leaves the terminals as they are).
static SAVED_IDS: [AtomicU64; SAVED_TERMINALS_MAX] =
    [const { AtomicU64::new(NO_TERMINAL_ID) }; SAVED_TERMINALS_MAX];

/// Whether terminal `id` has a slot (a hint without the lock; exact under it).
fn id_saved(id: u64) -> bool {
    id != NO_TERMINAL_ID && SAVED_IDS.iter().any(|a| a.load(Ordering::Relaxed) == id)
}

/// Matches no terminal: `terminal_id` never returns it.
const NO_TERMINAL_ID: u64 = u64::MAX;

/// One terminal's saved settings.
#[derive(Clone, Copy)]
struct SavedSlot {
    /// The slot's own duplicate of the terminal's fd; -1 while the slot is empty.
    fd: RawFd,
    /// A description to write the restore bytes through, where `fd` will not do (see
    /// `restore_writer`); -1 for none.
    writer: RawFd,
    /// Whether the terminal was the process's controlling terminal when it was saved: the
    /// user's own, which the restore bytes go to.
    controlling: bool,
    /// When it was saved: a restore goes from the last saved to the first.
    order: u64,
    /// The process that saved it: a child forked without exec, which inherits the table,
    /// leaves the parent's terminals to the parent in its hooks (`reset_saved_in_front`).
    pid: i32,
    /// The thread that saved it ([`thread_key`]): its panic resets it
    /// ([`reset_saved_of_this_thread`]).
    thread: u64,
    /// The settings, written before `fd` is set.
    termios: MaybeUninit<libc::termios>,
}

impl SavedSlot {
    const EMPTY: SavedSlot = SavedSlot {
        fd: -1,
        writer: -1,
        controlling: false,
        order: 0,
        pid: 0,
        thread: 0,
        termios: MaybeUninit::uninit(),
    };

    fn in_use(&self) -> bool {
        self.fd >= 0
    }
}

struct SavedTable {
    slots: [SavedSlot; SAVED_TERMINALS_MAX],
    /// The next save's `order`.
    next_order: u64,
    /// What a restore writes to the terminal before its settings: [`set_restore_bytes`]'s.
    restore_bytes: &'static [u8],
}

/// Why terminal `id` cannot take a slot, if it cannot: exact under the lock, a hint
/// without it.
fn refusal(id: u64) -> Option<Saved> {
    if id_saved(id) {
        Some(Saved::Already)
    } else if SAVED_COUNT.load(Ordering::Relaxed) >= SAVED_TERMINALS_MAX {
        Some(Saved::NoRoom)
    } else {
        None
    }
}

impl SavedTable {
    /// The slot the restore bytes go to, by its `order`: the process's controlling terminal
    /// saved first, else the terminal saved first.
    fn bytes_to(&self) -> Option<u64> {
        let first = |controlling: bool| {
            self.slots.iter().filter(|s| s.in_use() && s.controlling >= controlling).map(|s| s.order).min()
        };
        first(true).or_else(|| first(false))
    }
}

struct SavedCell(UnsafeCell<SavedTable>);
// SAFETY: the table is only reached through `SavedGuard::table`, with SAVED_LOCK held (taken
// with Acquire, released with Release), so no two accesses overlap and each sees the one
// before.
unsafe impl Sync for SavedCell {}
static SAVED: SavedCell = SavedCell(UnsafeCell::new(SavedTable {
    slots: [SavedSlot::EMPTY; SAVED_TERMINALS_MAX],
    next_order: 0,
    restore_bytes: &[],
}));

/// SAVED_LOCK, held: the key to [`SAVED`].
struct SavedGuard(#[allow(dead_code, reason = "held for its drop")] SignalLockGuard<'static>);

impl SavedGuard {
    /// Takes the lock, spinning while someone else holds it. Not for signal context.
    fn lock() -> SavedGuard {
        SavedGuard(SAVED_LOCK.lock())
    }

    /// Takes the lock if it is free. Async-signal-safe.
    fn try_lock() -> Option<SavedGuard> {
        SAVED_LOCK.try_lock().map(SavedGuard)
    }

    fn table(&mut self) -> &mut SavedTable {
        // SAFETY: SAVED_LOCK is held while `self` lives, and the result borrows `self`
        // mutably, so there is one reference to the table at a time.
        unsafe { &mut *SAVED.0.get() }
    }
}

/// Waits of 50 ms at most that writing the restore bytes may take, for a terminal whose
/// output is full: a restore runs in signal handlers and at `exit`, and must not hang.
const RESTORE_WRITE_WAITS: u32 = 4;
/// How long each of those waits may take.
const RESTORE_WRITE_WAIT_MS: libc::c_int = 50;

/// Sets the bytes that [`reset_saved`] (and so the restore hooks and `exit`) writes just
/// before it restores the settings, to one terminal: the process's controlling terminal if
/// it is saved, else the one saved first; empty for none.
pub fn set_restore_bytes(bytes: &'static [u8]) {
    SavedGuard::lock().table().restore_bytes = bytes;
}

/// Writes `all` to `fd` as far as it takes them soon: a terminal whose output is full gets
/// [`RESTORE_WRITE_WAITS`] short waits; still full then (a terminal that stopped reading),
/// the output waiting for it is discarded (`tcflush`: the screen it would draw no longer
/// matters) and `all` goes in its place, once more. Nothing goes to a description open for
/// reading only or in blocking mode (whose write could wait for good), nor to a pty master,
/// where the bytes would be the input of the program on the slave. Whether all of them went
/// out. Async-signal-safe.
fn write_briefly(fd: BorrowedFd<'_>, all: &[u8]) -> bool {
    let usable = fd::status_flags(fd).is_ok_and(|f| f.writable && f.nonblocking);
    if all.is_empty() || !usable || is_pty_master(fd) {
        return false;
    }
    let mut bytes = all;
    let mut waits = 0;
    while !bytes.is_empty() {
        match fd::write(fd, bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && waits < RESTORE_WRITE_WAITS => {
                waits += 1;
                let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
                // SAFETY: `pfd` is one valid pollfd for the call. (EINTR just ends this wait.)
                unsafe { libc::poll(&mut pfd, 1, RESTORE_WRITE_WAIT_MS) };
                if pfd.revents & libc::POLLNVAL != 0 {
                    // macOS: poll cannot wait on a terminal that is not a pty slave.
                    crate::select::writable_without_alloc(
                        fd,
                        std::time::Duration::from_millis(RESTORE_WRITE_WAIT_MS as u64),
                    );
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // SAFETY: tcflush takes no pointers; `fd` is borrowed, so it stays open.
                unsafe { libc::tcflush(fd.as_raw_fd(), libc::TCOFLUSH) };
                return fd::write(fd, all).is_ok_and(|n| n == all.len());
            }
            Err(_) => return false,
        }
    }
    true
}

/// A terminal's claim on its slot of the process-wide saved termios: while it lives,
/// [`reset_saved`] restores the settings it saved. Dropping it empties the slot (and closes
/// the slot's duplicate fd), so that the terminal's next [`save_original`] saves again.
#[derive(Debug)]
pub struct SavedClaim {
    index: usize,
    order: u64,
}

impl Drop for SavedClaim {
    fn drop(&mut self) {
        let mut guard = SavedGuard::lock();
        let slot = &mut guard.table().slots[self.index];
        if !slot.in_use() || slot.order != self.order {
            return;
        }
        for raw in [slot.fd, slot.writer] {
            if raw >= 0 {
                // SAFETY: `raw` is an fd save_original opened and stored in this claim's
                // slot; only this claim closes it, under the lock, and empties the slot
                // with it, so no reset uses it after.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        *slot = SavedSlot::EMPTY;
        SAVED_IDS[self.index].store(NO_TERMINAL_ID, Ordering::Relaxed);
        SAVED_COUNT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A description of its own to write the restore bytes through: the terminal opened again
/// for writing, nonblocking, by name or through `/dev/tty`. `fd`'s own may be open for
/// reading only (`less` opens `/dev/tty` so), or blocking, whose write could wait for good,
/// or be made blocking later (by a child given it, as shells do). `None` when neither open
/// works: `fd`'s own serves then, where it is writable and nonblocking. (Never for a pty
/// master, which [`save_original`] does not keep: the bytes would be its slave's input.)
fn restore_writer(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    reopen(fd, Access::Write).or_else(|_| reopen_controlling(fd, Access::Write)).ok()
}

/// What [`save_original`] did.
#[derive(Debug)]
pub enum Saved {
    /// The settings are saved, for as long as the claim lives.
    Claim(SavedClaim),
    /// Nothing: the terminal's settings are saved already, by another handle on it.
    Already,
    /// Nothing: `fd` is a pty master. Its settings are its pty's, which ends with its last
    /// open master, usually with the process: a restore at `exit` or at a fatal signal has
    /// nothing to do for it.
    PtyMaster,
    /// Nothing: [`SAVED_TERMINALS_MAX`] terminals are saved already.
    NoRoom,
}

/// Saves `t`, the settings of terminal `fd` from before its first mode change, as the ones
/// [`reset_saved`] restores for that terminal, unless they are saved already (by another
/// handle on it: the first one wins), `fd` is a pty master, or every slot is taken. The
/// process's controlling terminal takes the place of the terminal saved last then, whose
/// claim no longer holds anything.
pub fn save_original(fd: BorrowedFd<'_>, t: &Termios) -> io::Result<Saved> {
    if is_pty_master(fd) {
        return Ok(Saved::PtyMaster);
    }
    let id = terminal_id(fd).unwrap_or(NO_TERMINAL_ID);
    // Without the lock first: a second handle on a terminal asks at each mode change. (The
    // controlling terminal, the user's own, takes the place of another where every slot is
    // taken.)
    let controlling = match refusal(id) {
        Some(Saved::NoRoom) if is_controlling_terminal(fd) => true,
        Some(r) => return Ok(r),
        None => is_controlling_terminal(fd),
    };
    // The fds are made without the lock, which a signal handler only tries.
    let dup = fd::dup_cloexec(fd, 0)?;
    let writer = restore_writer(fd);
    let mut guard = SavedGuard::lock();
    let full = match refusal(id) {
        Some(Saved::NoRoom) if controlling => true,
        Some(r) => return Ok(r),
        None => false,
    };
    let table = guard.table();
    let index = if full {
        // The terminal saved last takes the fall (its close still restores it).
        let last = table.slots.iter().enumerate().filter(|(_, s)| s.in_use() && !s.controlling);
        let Some((index, _)) = last.max_by_key(|(_, s)| s.order) else { return Ok(Saved::NoRoom) };
        let slot = &mut table.slots[index];
        for raw in [slot.fd, slot.writer] {
            if raw >= 0 {
                // SAFETY: `raw` is an fd this function opened and stored in the slot; it is
                // closed here, under the lock, with the slot emptied, and the slot's claim
                // (its `order` no longer the slot's) closes nothing.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        *slot = SavedSlot::EMPTY;
        SAVED_IDS[index].store(NO_TERMINAL_ID, Ordering::Relaxed);
        SAVED_COUNT.fetch_sub(1, Ordering::Relaxed);
        index
    } else {
        table.slots.iter().position(|s| !s.in_use()).expect("refusal() found a free slot")
    };
    let order = table.next_order;
    table.next_order += 1;
    table.slots[index] = SavedSlot {
        fd: std::os::fd::IntoRawFd::into_raw_fd(dup),
        writer: writer.map_or(-1, std::os::fd::IntoRawFd::into_raw_fd),
        controlling,
        order,
        // SAFETY: getpid has no preconditions and cannot fail.
        pid: unsafe { libc::getpid() },
        thread: thread_key(),
        termios: MaybeUninit::new(t.0),
    };
    SAVED_IDS[index].store(id, Ordering::Relaxed);
    SAVED_COUNT.fetch_add(1, Ordering::Relaxed);
    drop(guard);
    reset_at_exit_once();
    Ok(Saved::Claim(SavedClaim { index, order }))
}

/// The settings [`save_original`] saved for the terminal numbered `id` (its
/// [`terminal_id`]), if it saved some: the normal settings for a second handle on that
/// terminal, whose first mode change may find the terminal raw through the first one.
pub fn saved_original_of(id: u64) -> Option<Termios> {
    if !id_saved(id) {
        return None;
    }
    let mut guard = SavedGuard::lock();
    let index = SAVED_IDS.iter().position(|a| a.load(Ordering::Relaxed) == id)?;
    let slot = &guard.table().slots[index];
    // SAFETY: a slot with an id is in use, and had its settings written when it was filled.
    slot.in_use().then(|| Termios(unsafe { slot.termios.assume_init() }))
}

/// Replaces the settings saved for the terminal numbered `id` (its [`terminal_id`]), if
/// some are: a program that takes the settings in place as its normal ones (a shell after
/// a job that ran `stty`) has [`reset_saved`] and the exit hooks put those back, as closing
/// its handle does.
pub fn update_saved(id: u64, t: &Termios) {
    if !id_saved(id) {
        return;
    }
    let mut guard = SavedGuard::lock();
    let Some(index) = SAVED_IDS.iter().position(|a| a.load(Ordering::Relaxed) == id) else { return };
    let slot = &mut guard.table().slots[index];
    if slot.in_use() {
        slot.termios = MaybeUninit::new(t.0);
    }
}

/// The first save makes `exit` restore what is still saved then: a program that calls
/// `std::process::exit` with a terminal in raw mode leaves a usable shell behind.
fn reset_at_exit_once() {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: `reset_at_exit` is an `extern "C" fn()` that never unwinds; atexit only
        // stores the pointer. Its failure (no room) leaves exit without the reset, which is
        // all it can cost.
        let _ = unsafe { libc::atexit(reset_at_exit) };
    });
}

extern "C" fn reset_at_exit() {
    let _ = reset_saved_in_front();
}

/// Whether terminal `fd` is this process's controlling terminal (`/dev/tty`'s).
pub fn is_controlling_terminal(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: tcgetsid and getsid take no pointers; tcgetsid fails (ENOTTY) for a terminal
    // that is no session's controlling terminal, and `fd` is borrowed, so open.
    unsafe {
        let sid = libc::tcgetsid(fd.as_raw_fd());
        sid > 0 && sid == libc::getsid(0)
    }
}

/// Whether process group `pgid` has a member left (zombies count). Linux keeps naming a
/// terminal's foreground group after its last member is gone: such a group owns nothing.
/// Async-signal-safe.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing and takes no pointers.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether this process's group is the foreground group of a terminal on its stdin, stdout
/// or stderr: where a Ctrl-Z sends it `SIGTSTP`.
pub fn stdio_in_front() -> bool {
    // SAFETY: getpgrp takes no arguments.
    let own = unsafe { libc::getpgrp() };
    (0..3).any(|fd| {
        // (tcgetpgrp's own ioctl, without its wrapper: this runs for every spawn.)
        let mut front: libc::pid_t = -1;
        // SAFETY: TIOCGPGRP writes one pid_t through the pointer, valid for that; on an fd
        // that is not open or not a terminal it fails and writes nothing, which counts as no.
        unsafe { libc::ioctl(fd, libc::TIOCGPGRP as _, &mut front) == 0 && front == own }
    })
}

/// Restores the settings [`save_original`] saved, every terminal's, from the last saved to
/// the first; does nothing (and succeeds) when none are. Tries every terminal, and returns
/// the first failure, but for the `EIO` of a terminal other than the controlling one that
/// hung up (nothing is left to restore there).
///
/// Async-signal-safe, and preserves `errno`: a signal handler may call it. Fails with
/// `EBUSY` when a slot is being changed at that moment (by the interrupted code or another
/// thread) instead of waiting for it.
pub fn reset_saved() -> io::Result<()> {
    reset_saved_when(false, None)
}

/// A number for the calling thread, unique in the process (never 0), given at its first use;
/// 0 once the thread's locals are gone. Not async-signal-safe.
fn thread_key() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static KEY: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    KEY.try_with(|k| {
        if k.get() == 0 {
            k.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        k.get()
    })
    .unwrap_or(0)
}

/// [`reset_saved_in_front`] for the terminals whose settings the calling thread saved: for
/// a panic of that thread, which may end the program (the thread that runs its terminal),
/// where another thread's panic may not. Not async-signal-safe (it reads a thread-local).
pub fn reset_saved_of_this_thread() -> io::Result<()> {
    match thread_key() {
        0 => Ok(()),
        key => reset_saved_when(true, Some(key)),
    }
}

/// [`reset_saved`], but only while this process group owns the terminal (or nobody does: no
/// foreground group, or one whose members are all gone):
/// from the background the settings are the foreground job's, and writing them would change
/// that job's terminal under it, or stop the process with `SIGTTOU`. For the hooks that run
/// at `exit`, on a panic and on fatal signals. Async-signal-safe, as `reset_saved`.
///
/// A child forked without exec (a worker, or a child between another library's `fork` and
/// its exec), which inherits the hooks, restores only what it saved itself: the parent
/// that set a terminal's mode may well go on using it.
pub fn reset_saved_in_front() -> io::Result<()> {
    reset_saved_when(true, None)
}

/// [`reset_saved`]; with `in_front`, only while this process group owns the terminal (see
/// [`reset_saved_in_front`]); with `thread`, only what that thread saved.
fn reset_saved_when(in_front: bool, thread: Option<u64>) -> io::Result<()> {
    crate::cvt::preserving_errno(|| {
        if SAVED_COUNT.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let Some(mut guard) = SavedGuard::try_lock() else {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        };
        let table = guard.table();
        let bytes_to = table.bytes_to();
        // (The hooks: only what this process saved. See `reset_saved_in_front`.)
        // SAFETY: getpid has no preconditions, cannot fail, and is async-signal-safe.
        let me = unsafe { libc::getpid() };
        let own = |s: &SavedSlot| (!in_front || s.pid == me) && thread.is_none_or(|t| s.thread == t);
        // From the last saved to the first, as the changes were made (a terminal saved twice
        // under two numbers, as macOS gives `/dev/tty` one of its own, ends as it was at the
        // first save); each terminal is tried, and the first failure is reported.
        let mut result = Ok(());
        let mut before = u64::MAX;
        while let Some(&slot) =
            table.slots.iter().filter(|s| s.in_use() && s.order < before && own(s)).max_by_key(|s| s.order)
        {
            before = slot.order;
            let bytes = if Some(slot.order) == bytes_to { table.restore_bytes } else { &[] };
            let (wrote, restored) = restore_slot(&slot, bytes, in_front);
            // What the bytes undo is undone: written once (see `set_restore_bytes`).
            if wrote {
                table.restore_bytes = &[];
            }
            // A terminal other than the process's own that hung up (a pty whose master
            // closed) has nothing left to restore: its `EIO` (FreeBSD: `ENXIO`, the
            // answer of a tty device that is gone) is no failure of the reset.
            let hung_up = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EIO | libc::ENXIO));
            let gone = !slot.controlling && restored.as_ref().is_err_and(hung_up);
            if result.is_ok() && !gone {
                result = restored;
            }
        }
        result
    })
}

/// Whether this process group owns the terminal of `slot` (or nobody does: no foreground
/// group, or one whose members are all gone). Async-signal-safe; the caller holds the lock.
fn slot_in_front(slot: &SavedSlot) -> bool {
    // SAFETY: `slot.fd` is the slot's own duplicate, open while the caller holds the lock;
    // tcgetpgrp and getpgrp take no pointers.
    let (front, own) = unsafe { (libc::tcgetpgrp(slot.fd), libc::getpgrp()) };
    front <= 0 || front == own || !group_alive(front)
}

/// Restores one saved terminal's settings, after writing `bytes` to it; with `in_front`,
/// only while this process group owns it. Whether all of `bytes` went out (none did where
/// it left the terminal alone), even where the settings then failed, and how that went.
/// Async-signal-safe; the caller holds the lock.
fn restore_slot(slot: &SavedSlot, bytes: &[u8], in_front: bool) -> (bool, io::Result<()>) {
    let fd = slot.fd;
    if in_front && !slot_in_front(slot) {
        return (false, Ok(()));
    }
    // SAFETY: a slot in use had its settings written when it was filled.
    let t = unsafe { slot.termios.assume_init_ref() };
    // The bytes first (with TOSTOP, a write from the background raises SIGTTOU as the
    // change does, blocked below), then the settings.
    let writer = if slot.writer >= 0 { slot.writer } else { fd };
    let set = || {
        // SAFETY: `writer` is the slot's own (its duplicate or its writer), open while the
        // caller holds the lock.
        let wrote = write_briefly(unsafe { BorrowedFd::borrow_raw(writer) }, bytes);
        // SAFETY: `fd` is the slot's own duplicate, closed only under the lock the caller
        // holds; `t` is a valid termios.
        (wrote, cvt_r(|| unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) }).map(drop))
    };
    // In front, or the foreground group has no member left: SIGTTOU blocked for the latter,
    // which would stop the process instead.
    if in_front { with_sigttou_blocked(set).unwrap_or_else(|e| (false, Err(e))) } else { set() }
}

/// Writes the restore bytes ([`set_restore_bytes`]) to the terminal whose settings `claim`
/// holds, if they go to it (the controlling terminal, else the one saved first) and this
/// process group owns it, and clears them, as [`reset_saved`] does: for a release of the
/// settings that ends the program's use of the terminal (a loop dropped on the way out),
/// after which no reset would find the terminal.
pub fn write_restore_bytes_for(claim: &SavedClaim) {
    // The write, which may wait for a full terminal, goes through a duplicate, without the
    // lock: a fatal signal meanwhile still finds the settings to restore.
    let (writer, bytes) = {
        let mut guard = SavedGuard::lock();
        let table = guard.table();
        let slot = table.slots[claim.index];
        let bytes = table.restore_bytes;
        let ours = slot.in_use() && slot.order == claim.order && table.bytes_to() == Some(slot.order);
        if bytes.is_empty() || !ours || !slot_in_front(&slot) {
            return;
        }
        let raw = if slot.writer >= 0 { slot.writer } else { slot.fd };
        // SAFETY: `raw` is the slot's own (its duplicate or its writer), open while the lock
        // is held.
        match fd::dup_cloexec(unsafe { BorrowedFd::borrow_raw(raw) }, 0) {
            Ok(writer) => (writer, bytes),
            Err(_) => return,
        }
    };
    // (SIGTTOU blocked: the group in front may have no member left.)
    let wrote = with_sigttou_blocked(|| write_briefly(writer.as_fd(), bytes)).unwrap_or(false);
    let mut guard = SavedGuard::lock();
    let table = guard.table();
    // Written once, unless they were set anew meanwhile.
    if wrote && std::ptr::eq(table.restore_bytes, bytes) {
        table.restore_bytes = &[];
    }
}

/// The signals [`install_reset_handlers`] covers: every signal whose default action ends
/// the process (some with a core dump) on Linux, macOS and FreeBSD alike, and that is sent
/// rather than caused by the faulting instruction. Left out: `SIGKILL` (nothing can catch
/// it); `SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP` and `SIGSYS`, which a fault raises
/// in a state no handler should trust (Rust's runtime has its own for the first two); the
/// signals that only some of the systems have or end a process with (`SIGPWR`, `SIGIO`); and
/// the real-time ones, which belong to whichever library uses them.
pub const RESET_SIGNALS: [i32; 13] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGABRT,
    libc::SIGALRM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGPIPE,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGXCPU,
    libc::SIGXFSZ,
];

/// The handler behind [`install_reset_handlers`]. `SA_RESETHAND` has put `SIG_DFL` back
/// before it runs, and the signal is blocked while it runs: raised again, it is delivered
/// with its default action as soon as the handler returns.
///
/// Reached through a handler installed after it that calls the one it replaced
/// (signal-hook's, and so tokio's, do), it does nothing: the signal is that handler's, which
/// may keep the process running (a graceful shutdown, a program that goes on), and raised
/// again, the signal would come back here through it, for good. A normal `exit` restores
/// later; a program that handler ends by the signal or by `_exit` restores first itself
/// (`reset_mode`).
extern "C" fn reset_then_default(signo: libc::c_int) {
    let ours = reset_then_default as extern "C" fn(libc::c_int) as libc::sighandler_t;
    if !crate::signal::invoked_for_own_install(signo, ours) {
        return;
    }
    let _ = reset_saved_in_front();
    let _ = crate::fd::restore_shared_blocking();
    let _ = crate::signal::raise(signo);
}

/// Makes each of [`RESET_SIGNALS`] restore the saved settings ([`reset_saved_in_front`]) and the
/// blocking mode of registered shared descriptions
/// ([`restore_shared_blocking`](crate::fd::restore_shared_blocking)), and then take
/// its default action (ending the process), where that default action is what the signal
/// would do: a signal that is ignored or has a handler keeps it, and one whose handler
/// installed later calls this one (signal-hook's does) is that handler's: this one then does
/// nothing. While a loop watches one of these signals, the loop keeps it, and the reset
/// handler becomes what the loop restores when it stops watching. Calling this again
/// changes nothing.
pub fn install_reset_handlers() -> io::Result<()> {
    for signo in RESET_SIGNALS {
        crate::signal::install_over_default(signo, reset_then_default)?;
    }
    Ok(())
}
