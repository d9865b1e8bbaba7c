//! What each of a child's fds is: `Stdio`, and where a `SameAs` entry points.

use super::*;

/// What one of a child's fds is.
///
/// fds 0, 1 and 2 default to [`Stdio::Inherit`]. Any other fd number the command names is
/// set up too; every fd the command does not name (above 2) is closed in the child.
#[derive(Debug)]
pub enum Stdio {
    /// The parent's fd with the same number, shared as it is (its blocking mode included).
    Inherit,
    /// Closed in the child, as a shell's `2>&-` or `<&-` leaves it: the child's next open
    /// file gets the number. Programs expect 0, 1 and 2 open, and many fail (or write their
    /// errors into the file they opened next) without them: for output to nowhere use
    /// [`Stdio::Null`]. Above 2, this is what leaving the fd out does.
    ///
    /// ```
    /// # use std::{cell::Cell, rc::Rc};
    /// use evloop::{Command, Loop, RunMode, Stdio};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// // `sh` sees its stderr closed: the redirection to it fails.
    /// cmd.args(["-c", "echo to stderr >&2"]).stderr(Stdio::Close);
    /// let code = Rc::new(Cell::new(None));
    /// let c = code.clone();
    /// cmd.spawn(&mut lp, move |lp, p, status| {
    ///     c.set(status.unwrap().code());
    ///     p.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_ne!(code.get(), Some(0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Close,
    /// `/dev/null`, open for reading and writing.
    Null,
    /// A new pipe. The child reads it when it is fd 0 and writes it on every other fd; the
    /// loop's end becomes a [`Pipe`] handle in the [`Child`]. The child's end is blocking: the
    /// loop's end has a file description of its own, so the child never sees its
    /// `O_NONBLOCK`.
    Pipe,
    /// A new pipe that the child reads, whatever its fd number (for input fds above 2).
    PipeIn,
    /// A copy of this fd. The command keeps owning it (each spawn copies it again) and closes
    /// it when dropped. The child shares its file description as it is, blocking mode
    /// included: a copy of a loop handle's fd ([`Pipe::fd`]) is nonblocking, and a child
    /// writing to it meets `EAGAIN` (most programs then fail) once the pipe is full. For one
    /// pipe that many children write in turn (a supervisor's log pipe, kept across
    /// restarts), make it with [`std::io::pipe`], give the children copies of its blocking
    /// write end, and open only the read end as a [`Pipe`].
    Fd(OwnedFd),
    /// A copy of the parent's fd number `n`, which stays the caller's. It must be open at
    /// the spawn. Its description is shared as it is, as with [`Stdio::Fd`].
    InheritFrom(RawFd),
    /// The fd of an open [`Pipe`] (or tty) handle, moved to the child: its file description
    /// is made blocking (the child expects that), unless another open handle of the loop
    /// shares that description (one opened from a copy of the same fd, where it could not be
    /// opened again privately) and needs `O_NONBLOCK`: then the child gets the description
    /// as it is, since blocking it would block that handle's reads and writes, and with them
    /// the loop. The handle is closed once the child has started (queued writes are
    /// cancelled, as by `close`); in a [`Pipeline`], once every stage has started. If the
    /// spawn fails the handle is left as it was. The same handle may fill several fds of one
    /// child (give it as both stdout and stderr for a shell's `2>&1`) and several stages of
    /// one pipeline (every stage's stderr into one pipe, say). A pipe end as stdin must be
    /// the read end, as stdout or stderr the write end: the wrong one is refused at the
    /// spawn, not left to fail in the child.
    Handle(HandleId),
    /// A copy of the child's own fd `n`, as the command sets it up: a shell's `2>&1` is
    /// `stderr(Stdio::SameAs(1))`, whatever stdout is (a new pipe, a file, a handle, the
    /// next stage of a [`Pipeline`] for `|&`, the capture of [`Command::output`], which then
    /// gets both streams, in order, as its stdout). fd `n` must be one the child has: one
    /// the command names, or 0, 1 or 2 inherited (the program's own, unless it closed it or
    /// made it close-on-exec); a chain (`3>&2 2>&1`) is followed to its end. A fd
    /// [`Stdio::Close`]d, a missing one, or a cycle is an error at the spawn.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode, Stdio};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "echo out; echo err >&2"]).stderr(Stdio::SameAs(1));
    /// cmd.output(&mut lp, |_, out| {
    ///     let out = out.unwrap();
    ///     assert_eq!(out.stdout, b"out\nerr\n");
    ///     assert!(out.stderr.is_empty());
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    SameAs(RawFd),
}

/// Where child fd `target`, given as [`Stdio::SameAs`]`(n)`, comes from: the source of the
/// child's fd `n` among the mappings made so far (`fds`), following a chain of `SameAs`.
pub(super) fn same_as_source(
    cmd: &Command,
    fds: &[FdMapping],
    target: RawFd,
    mut n: RawFd,
) -> io::Result<Source> {
    let bad = |why: String| invalid(format!("child fd {target}: {why}"));
    for _ in 0..=cmd.stdio.len() {
        if let Some(m) = fds.iter().find(|m| m.target == n) {
            return match m.source {
                Source::Close => Err(bad(format!("Stdio::SameAs names fd {n}, which the child has closed"))),
                Source::Keep => Ok(Source::Fd(n)),
                source => Ok(source),
            };
        }
        match cmd.stdio.iter().find(|(t, _)| *t == n).map(|(_, s)| s) {
            Some(Stdio::SameAs(next)) => n = *next,
            // The parent's own 0, 1 or 2, which the child inherits, unless it is closed or
            // close-on-exec (as a shell's `2>&1` fails when its fd 1 is closed).
            Some(Stdio::Inherit) | None if n < 3 => {
                if !fd::kept_on_exec_raw(n) {
                    return Err(bad(format!(
                        "Stdio::SameAs names fd {n}, which the child does not have (the program's own fd \
                         {n}, which it would inherit, is closed or close-on-exec)"
                    )));
                }
                return Ok(Source::Fd(n));
            }
            _ => return Err(bad(format!("Stdio::SameAs names fd {n}, which the child does not have"))),
        }
    }
    Err(bad("its Stdio::SameAs chain comes back to itself".to_string()))
}

impl Stdio {
    /// A copy: the same, but that [`Stdio::Fd`] gets a copy of its fd (`F_DUPFD_CLOEXEC`),
    /// which the copy owns. A [`Stdio::Handle`] names the same handle, which still moves to
    /// the first child that gets it. Fails only where the fd cannot be copied (`EMFILE`).
    pub fn try_clone(&self) -> io::Result<Stdio> {
        Ok(match self {
            Stdio::Inherit => Stdio::Inherit,
            Stdio::Close => Stdio::Close,
            Stdio::Null => Stdio::Null,
            Stdio::Pipe => Stdio::Pipe,
            Stdio::PipeIn => Stdio::PipeIn,
            // (Above the fd floor, as every fd evloop keeps.)
            Stdio::Fd(fd) => Stdio::Fd(fd::dup_cloexec(fd.as_fd(), 0)?),
            Stdio::InheritFrom(n) => Stdio::InheritFrom(*n),
            Stdio::Handle(h) => Stdio::Handle(*h),
            Stdio::SameAs(n) => Stdio::SameAs(*n),
        })
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Stdio {
        Stdio::Fd(fd)
    }
}

impl From<std::fs::File> for Stdio {
    fn from(f: std::fs::File) -> Stdio {
        Stdio::Fd(f.into())
    }
}

impl From<Pipe> for Stdio {
    fn from(p: Pipe) -> Stdio {
        Stdio::Handle(p.id())
    }
}

/// The tty handle moves to the child, as [`Stdio::Handle`] says: the handle closes (and its
/// terminal mode is restored) once the child starts. To share the terminal with a child
/// and keep the handle, give the child [`Stdio::Inherit`], or a copy of the fd given to
/// [`Tty::open`](crate::Tty::open) made before ([`Stdio::Fd`]), or `/dev/tty` opened
/// afresh. Not a copy of the handle's own fd ([`Tty::fd`](crate::Tty::fd)): that is the
/// handle's private, nonblocking description, on which a child's reads fail with
/// `EAGAIN`.
impl From<crate::Tty> for Stdio {
    fn from(t: crate::Tty) -> Stdio {
        Stdio::Handle(t.id())
    }
}

/// The stream moves to the child, as [`Stdio::Handle`] says (a terminal as for a [`Tty`]).
///
/// [`Tty`]: crate::Tty
impl From<crate::AnyStream> for Stdio {
    fn from(s: crate::AnyStream) -> Stdio {
        Stdio::Handle(s.id())
    }
}
