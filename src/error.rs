//! Error helpers. evloop reports `std::io::Error` everywhere; these build the messages.
//!
//! OS errors that need no context (`EPIPE` from a write, `ESRCH` from a kill) are passed on
//! as they are, so [`io::Error::raw_os_error`] works. Errors that need context ("spawn
//! `foo`: No such file or directory") wrap the OS error; [`os_error_code`] finds the number
//! in either form.

use std::fmt;
use std::io;

use evloop_platform::libc;

/// An OS error with a sentence of context in front of it.
#[derive(Debug)]
struct Context {
    context: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Wraps `source` with `context`, keeping its [`io::ErrorKind`].
pub(crate) fn context(source: io::Error, context: impl Into<String>) -> io::Error {
    io::Error::new(source.kind(), Context { context: context.into(), source })
}

/// A copy of `e` for each of several callbacks that fail for one reason: the same kind, OS
/// error number and context.
pub(crate) fn clone_error(e: &io::Error) -> io::Error {
    if let Some(code) = e.raw_os_error() {
        return io::Error::from_raw_os_error(code);
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Context>()) {
        Some(c) => context(clone_error(&c.source), c.context.clone()),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// The OS error number behind `err`, whether it is a plain OS error or one evloop wrapped
/// with context.
///
/// ```
/// use std::io;
/// let plain = io::Error::from_raw_os_error(32);
/// assert_eq!(evloop::os_error_code(&plain), Some(32));
/// let other = io::Error::new(io::ErrorKind::Other, "no number");
/// assert_eq!(evloop::os_error_code(&other), None);
/// ```
pub fn os_error_code(err: &io::Error) -> Option<i32> {
    if let Some(code) = err.raw_os_error() {
        return Some(code);
    }
    err.get_ref()?.downcast_ref::<Context>().and_then(|c| os_error_code(&c.source))
}

/// Whether `err` says a write or a shutdown was cancelled: its stream closed while it was
/// still queued (`ECANCELED`). `std::io::ErrorKind` has no kind for it. A cancelled write
/// may have gone out in part before the close.
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// use evloop::{Loop, Pipe, RunMode};
///
/// let mut lp = Loop::new()?;
/// let (rx, tx) = Pipe::pair(&mut lp)?;
/// let cancelled = Rc::new(Cell::new(false));
/// let c = cancelled.clone();
/// // Nobody reads: the pipe fills, and the rest of the write waits in the queue.
/// tx.write(&mut lp, &vec![0; 4 << 20], move |_, res| c.set(res.is_err_and(|e| evloop::is_cancelled(&e))))?;
/// tx.close(&mut lp)?;
/// rx.close(&mut lp)?;
/// lp.run(RunMode::Default)?;
/// assert!(cancelled.get());
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn is_cancelled(err: &io::Error) -> bool {
    os_error_code(err) == Some(libc::ECANCELED)
}

/// Whether `err` says there was no process to signal (`ESRCH`): the child has exited
/// ([`Process::kill`](crate::Process::kill)), or no member of its group is left
/// ([`Process::kill_group`](crate::Process::kill_group),
/// [`terminate_group`](crate::Process::terminate_group)). Routine when winding down
/// children that may be ending by themselves; `std::io::ErrorKind` has no kind for it.
///
/// ```
/// use evloop::{Command, Loop, RunMode, signal::SIGTERM};
///
/// let mut lp = Loop::new()?;
/// let child = Command::new("true").process_group(0).spawn(&mut lp, |_, _, _| {})?;
/// lp.run(RunMode::Default)?; // it exited, and was reaped
/// let err = child.process.kill_group(&mut lp, SIGTERM).unwrap_err();
/// assert!(evloop::is_no_such_process(&err));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn is_no_such_process(err: &io::Error) -> bool {
    os_error_code(err) == Some(libc::ESRCH)
}

pub(crate) fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// `ECANCELED`, for writes and shutdowns still queued when their stream closed.
pub(crate) fn cancelled() -> io::Error {
    os(libc::ECANCELED)
}

pub(crate) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}
