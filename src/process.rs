//! Child processes on the loop: spawn, stdio pipes, exit status, kill, pipelines, and never a
//! zombie.
//!
//! A [`Command`] describes a child: program, arguments, environment, working directory, ids,
//! process group or session, and what each of its fds is ([`Stdio`]). [`Command::spawn`]
//! starts it and returns a [`Child`]: the [`Process`] handle and the loop's ends of any pipes.
//! The exit callback given to `spawn` runs on the loop thread once the child has exited and
//! been reaped, with its [`ExitStatus`]. A [`Pipeline`] starts `a | b | c` with the stages
//! wired to each other directly.
//!
//! ```
//! use std::{cell::RefCell, rc::Rc};
//! use evloop::{Command, Loop, ReadEvent, RunMode, Stdio};
//!
//! let mut lp = Loop::new()?;
//! let out = Rc::new(RefCell::new(Vec::new()));
//! let status = Rc::new(RefCell::new(None));
//! let st = status.clone();
//! let child = Command::new("sh")
//!     .args(["-c", "echo hello; exit 3"])
//!     .stdout(Stdio::Pipe)
//!     .spawn(&mut lp, move |lp, p, res| {
//!         *st.borrow_mut() = Some(res.unwrap());
//!         p.close(lp).unwrap();
//!     })?;
//! let sink = out.clone();
//! child.stdout.unwrap().read_start(&mut lp, move |lp, pipe, ev| match ev {
//!     ReadEvent::Data(d) => sink.borrow_mut().extend_from_slice(d),
//!     _ => pipe.close(lp).unwrap(),
//! })?;
//! lp.run(RunMode::Default)?;
//! assert_eq!(&out.borrow()[..], b"hello\n");
//! assert_eq!(status.borrow().unwrap().code(), Some(3));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Running a pager (`git log` and `less`)
//!
//! - Where [`Tty::is_foreground`](crate::Tty::is_foreground) says the program has the
//!   terminal, the pager can take it: [`Command::process_group`]`(0)` and
//!   [`Command::foreground`], and the terminal back
//!   ([`Tty::set_foreground_group`](crate::Tty::set_foreground_group)) when it exits. In
//!   the background (`tool &`) it cannot; started in the program's own group instead, as
//!   git starts its pager, it is stopped and continued with the program by the shell.
//! - Its stdin is a pipe ([`Stdio::Pipe`]): write with back-pressure
//!   ([`write_queue_size`](crate::Pipe::write_queue_size), or the write callbacks), and
//!   stop producing at the first `EPIPE` (the user quit the pager), which a write's
//!   callback gets, never the process as `SIGPIPE` (Rust programs ignore it; one that put
//!   its default back dies of it instead).
//! - While it runs, Ctrl-C and Ctrl-\ reach the group in front. With the pager in the
//!   program's own group, the program watches `SIGINT` and `SIGQUIT` ([`Signal`]), so that
//!   it waits for the pager instead of dying under it. On `SIGTERM` or `SIGHUP` it ends the
//!   pager, or waits for it, before exiting: left behind, the pager reads the shell's keys.
//! - Put the terminal in [`TtyMode::Normal`](crate::TtyMode::Normal) before the spawn, and
//!   again once the terminal is back: a pager killed in its raw mode leaves it so.
//!
//! # Running many jobs (build tools, test runners, supervisors)
//!
//! - [`Command::output`] and [`Command::stream_output`] (its output as it comes, in the
//!   pieces the reads give; [`Lines`](crate::Lines) cuts them into lines) join a job's
//!   exit and the end of its output streams, which a hand-written `spawn` must do
//!   itself. [`Command::wait_delay`] bounds the wait for a grandchild that keeps a pipe open
//!   after the job exited, and [`Command::output_limit`] the memory a job's output takes.
//! - Start each job in a group of its own ([`Command::process_group`]`(0)`), with
//!   [`Command::kill_group_on_drop`], and end it (Ctrl-C) with
//!   [`Process::terminate_group`]; [`Command::timeout`] does that for a job that runs too
//!   long, and [`Process::terminate_after`] for one given a deadline later (a worker told
//!   to stop by the end of its input).
//! - [`Command::record_usage`] keeps what each job used (CPU time, peak memory), its own
//!   and no other job's, for [`Process::resource_usage`] and [`Output::usage`].
//! - A spawn that fails with `EMFILE` or `ENFILE` (out of fds: each capture takes three
//!   while its job runs) or `EAGAIN` (out of processes) is no verdict on the job: wait for
//!   a running job to end and start it again (`examples/par.rs` does), rather than fail
//!   the whole queue at once.
//! - A job's orphans count as members of its group until their new parent reaps them. In a
//!   container whose first process is not an init, that can hold `terminate_group` for its
//!   whole grace period: make the program their parent, with [`become_subreaper`] at start
//!   and [`Loop::reap_adopted`].
//! - A program that can die without dropping its loop (a `SIGKILL`, a crash) leaves its
//!   children running; [`Command::parent_death_signal`] has the kernel signal them then
//!   (Linux and FreeBSD).
//! - A daemon that starts its own session or group (`setsid`, a double fork) leaves the job's
//!   group, and `terminate_group` does not reach it; a subreaper still reaps it once it
//!   exits. If it inherited the job's stdout or stderr, the pipe stays open while it runs:
//!   a supervisor that stops a job closes the job's output handles too (or bounds the wait
//!   with [`Command::wait_delay`]), or they keep [`Loop::run`] going.
//! - An fd that jobs share with each other and with the program (a jobserver's pipe) must
//!   stay blocking for them: see [`Pipe::pair`](crate::Pipe::pair) (on Linux; elsewhere the
//!   program reads its own copy blocking, or from a thread).
//!
//! # How a child starts
//!
//! Without copying the parent, wherever the platform allows: a large parent spawns as fast
//! as a small one.
//!
//! - **Linux**: `clone(CLONE_VM | CLONE_VFORK)` running evloop's own child code, as glibc's
//!   `posix_spawn` runs its own, with nothing allocated between the clone and the exec. It
//!   takes every request but a [`uid`](Command::uid), [`gid`](Command::gid) or
//!   [`groups`](Command::groups): process
//!   groups, sessions, a terminal to take, and callers in front of a terminal, which
//!   `posix_spawn` would leave hanging on a Ctrl-Z (see below). `CLONE_PIDFD` (Linux 5.2)
//!   gives the child's pidfd with it.
//! - **macOS**: `posix_spawn` wherever it can express the request. Optional libc functions
//!   (`addchdir_np`, `POSIX_SPAWN_SETSID`) are looked up at run time, so the binary does not
//!   require a newer macOS than it was built for.
//! - Otherwise fork/exec, with nothing allocated between the two: always on FreeBSD, whose
//!   `posix_spawn` can leave a child whose exec failed as a zombie nobody can reap (as
//!   libuv, which forks there too).
//!
//! Either way the child starts with every signal at its default disposition (but those
//! named with [`Command::ignore_signal`]) and an empty signal mask, whatever the parent
//! blocks or ignores, and with only the fds it was given (0,
//! 1 and 2 unless redirected, plus the extra fds asked for). Every fd evloop creates is
//! close-on-exec.
//!
//! A Ctrl-Z for the caller's process group can reach a child before its exec, while it still
//! belongs to that group: it would stop the child there, with the parent waiting for the
//! exec. evloop's child catches the stop signals until its exec, which gives the program
//! their default actions back; glibc's `posix_spawn` cannot, so a caller in
//! front of a terminal on its stdio, and a child joining a group or session of its own, do
//! not go through it there (std's `Command` has that hazard). A stop signal caught once the
//! child is in a group or session of its own (a shell's job, its terminal taken with
//! [`Command::foreground`]: Ctrl-Z as it starts) was meant for it: the parent sends it
//! again after the exec, and the job stops then, as it would have a moment later. One
//! caught while the child was still in the caller's group is dropped (the caller had it
//! too).
//!
//! # The program path
//!
//! Following duct's rules:
//!
//! - A program given as a string without a `/` (`Command::new("ls")`) is looked up in `PATH`.
//!   Which `PATH`: **the child's**. When the command sets or removes `PATH`, or clears the
//!   environment, that value is searched (`/bin:/usr/bin` when there is none); otherwise the
//!   parent's. This is what `execvp` in the child would do, and what std and libuv do.
//! - A program given as a [`Path`] (`Command::new(Path::new("script"))`) is never looked up:
//!   a relative path gets `./` in front, so `Path::new("echo")` runs `./echo`, never
//!   `/bin/echo`.
//! - With [`current_dir`](Command::current_dir), a relative program path (one with a `/`) is
//!   resolved against the **parent's** working directory, not the child's: adding a working
//!   directory never breaks a relative program path. evloop joins it with the parent's
//!   directory instead of canonicalizing it (duct does), so symlinks stay as they are and a
//!   missing file is reported by the spawn itself. `argv[0]` stays as written.
//! - A file the kernel cannot run (a script without a `#!` line) is an error, `ENOEXEC`
//!   ("Exec format error"), as with `posix_spawn` and `execve`; glibc's `execvp` would run it
//!   with `/bin/sh`. Add the `#!` line, or run `sh script`.
//!
//! # Reaping, and the loop's ownership of its children
//!
//! The loop owns every child it spawned and reaps each one itself, by pid: never
//! `waitpid(-1)`, and `SIGCHLD` is never set to `SIG_IGN`, so children that other code in the
//! process spawned (`std::process::Command`, another library) stay theirs to reap, unless
//! the program asks the loop to reap every child it did not spawn
//! ([`Loop::reap_adopted`], for supervisors and inits).
//! Conversely, a program that set `SIGCHLD` to `SIG_IGN` (or installed its handler with
//! `SA_NOCLDWAIT`) has the kernel reap every child, and a loop does not take that away by
//! installing a handler: where it would need `SIGCHLD` (the fallback below, and
//! [`Process::watch_stops`]), the call fails with [`io::ErrorKind::Unsupported`]. With pidfds
//! children still spawn, and each exit callback gets the `ECHILD` error (a child the
//! kernel reaped before the loop could watch it included: its spawn succeeds all the same).
//!
//! - **Linux**: a pidfd per child, in epoll. Where `pidfd_open` fails with `ENOSYS` (kernels
//!   before 5.3, some seccomp sandboxes), the loop falls back to `SIGCHLD` through its signal
//!   machinery (an internal, unreferenced [`Signal`] handle that [`Loop::handles`] does not
//!   list, started with the first such child and kept until the loop drops, which restores
//!   the previous disposition) and
//!   calls `waitpid(pid, WNOHANG)` for each of its own children. That path needs `SIGCHLD`
//!   delivered: blocked in every thread (the loop does not change the signal mask), no exit
//!   is heard of, and the loop waits for good; a warning is logged when it is blocked in the
//!   loop's thread. A `SIGCHLD` handler that
//!   another library installed earlier keeps being called, after the loop's, and is the
//!   disposition again when the loop drops; one installed later that calls the handler it
//!   replaced (as signal-hook's does) reaches the loop's, and through it the earlier one.
//!   The loop's handler asks for stopped and continued children too (for
//!   [`Process::watch_stops`]); a handler below it is called for those as well, since one
//!   `SIGCHLD` may stand for several children.
//!   [`LoopBuilder::force_sigchld_reaping`](crate::LoopBuilder::force_sigchld_reaping) forces
//!   that path.
//! - **macOS, FreeBSD**: `EVFILT_PROC`/`NOTE_EXIT` per child in the kqueue.
//!
//! A [`Process`] handle is active, and keeps [`RunMode::Default`](crate::RunMode::Default)
//! running, until its child exits. Its exit callback runs once, after the handle stopped.
//! Close the handle afterwards, as with libuv; [`Process::exit_status`] still answers until
//! then.
//!
//! **Closing a handle before its child exits** drops the exit callback, but the child stays
//! the loop's: it is reaped in the background when it exits. If the handle was referenced,
//! the loop keeps running until that happens (a child still running is work the loop owns);
//! call `set_ref(false)` before closing to let the loop end without it. With
//! [`Command::kill_on_drop`] the child gets `SIGKILL` when its handle closes; with
//! [`Command::kill_group_on_drop`], its whole process group does.
//!
//! **Dropping the loop** leaves no zombie that it could have reaped:
//!
//! - children that have exited are reaped on the spot;
//! - children started with [`Command::kill_on_drop`] get `SIGKILL` (with
//!   [`kill_group_on_drop`](Command::kill_group_on_drop), their groups too) and are waited
//!   for (a blocking wait, which `SIGKILL` makes short; only a child stuck in an
//!   uninterruptible sleep can make it long);
//! - children started on a pty by [`Command::spawn_on_pty`] are hung up, as the drop
//!   closes the masters, and most end at that `SIGHUP`: they are waited for, a short while
//!   ([`PTY_HANGUP_WAIT_MS`](crate::limits::PTY_HANGUP_WAIT_MS) in all) at most, and those
//!   that ignore it go on as the next point says;
//! - other children keep running. Their pids go on a process-wide list that is reaped
//!   without blocking whenever any loop in the process spawns or is dropped, and by
//!   [`reap_orphans`] (the strategy of duct and CPython). If the process exits first, `init`
//!   (or the nearest subreaper) reaps them.
//!
//! # Stopped and continued children
//!
//! The exit callback reports exits only. [`Process::watch_stops`] reports a child stopping
//! (Ctrl-Z, `SIGSTOP`, `SIGTTIN`) and continuing, which a shell doing job control needs, and
//! which libuv, tokio and std leave to a `SIGCHLD` handler of the caller's own. It watches
//! `SIGCHLD` and asks `waitid(WSTOPPED | WCONTINUED)` for each watched child by pid; it never
//! reaps and never looks at another library's children. See
//! [`Tty::set_foreground_group`](crate::Tty::set_foreground_group) for the terminal's side.
//!
//! # Signals
//!
//! [`Process::kill`] reaches only the loop's own, living child: on Linux through the pidfd
//! (`pidfd_send_signal`), elsewhere by pid, which cannot have been reused because nobody but
//! the loop reaps it. After the child was reaped it fails with `ESRCH`.
//! [`Process::kill_group`] signals the child's process group, for children started with
//! [`process_group(0)`](Command::process_group) or [`setsid`](Command::setsid): the answer to
//! "killing grandchild processes". On Linux 6.9 and later the group is named through the
//! pidfd, which stays race-free even after the group leader was reaped; elsewhere by number.
//!
//! # duct's rules, and evloop's answers
//!
//! duct's "gotchas" document lists what a child-process library must get right. Each one,
//! and what evloop does:
//!
//! - **Reporting errors by default.** evloop is a callback loop, not a runner: every spawn
//!   takes an exit callback, which always receives the status, so a status cannot be
//!   forgotten. It does not turn a non-zero exit into an error by itself (a shell, a test
//!   runner or a supervisor each decides what failure means); [`ExitStatus::ok`] does that in
//!   one call, with a message like duct's. A pipeline reports every stage's status, in order.
//! - **Catching pipe errors when writing to stdin.** A child that exits without reading
//!   makes the write callback receive `EPIPE` ([`io::ErrorKind::BrokenPipe`]), never a
//!   `SIGPIPE` death (Rust ignores `SIGPIPE`; embedders that restore it must ignore it
//!   again). duct swallows the error; evloop reports it and lets the callback ignore it,
//!   since some callers do need to know that the input was not consumed.
//!   [`Command::output_with_input`], duct's `stdin_bytes`, swallows it as duct does: there
//!   the status is what answers.
//! - **Waiting on killed children by default.** Followed, without blocking: `kill` only
//!   signals (it never blocks), and the loop reaps the child when it dies, whether or not its
//!   handle is still open. Blocking happens in one place, dropping the loop with
//!   [`kill_on_drop`](Command::kill_on_drop) children, where duct's priorities (no zombies
//!   before no blocking) decide.
//! - **Making kill thread-safe** (the PID-reuse race between `kill` and a reaping thread).
//!   Solved by construction: one thread reaps and signals, a reaped child is marked so `kill`
//!   gives `ESRCH`, and on Linux the signal goes through the pidfd. duct's `waitid(WNOWAIT)`
//!   dance is not needed.
//! - **Adding `./` to relative program paths.** Followed for [`Path`] programs (see above).
//! - **Preventing `dir` from affecting relative program paths.** Followed: resolved against
//!   the parent's directory (joined, not canonicalized).
//! - **Preventing pipe inheritance races** (a Windows problem in duct's text). The Unix form
//!   of it is a pipe end leaking into a child spawned by another thread: evloop creates every
//!   fd close-on-exec atomically where the OS can (`pipe2`), the child closes every fd it was
//!   not given where the libc can say so (`addclosefrom_np`, `close_range`, and
//!   `POSIX_SPAWN_CLOEXEC_DEFAULT` on macOS), and a child's end of a pipe is closed in the
//!   parent right after the spawn.
//! - **Environment variable case.** Unix names are case-sensitive; evloop keeps them as given.
//! - **Cleaning up partially started pipelines.** Followed: when a later stage fails to start,
//!   the started stages get `SIGKILL` and are reaped by the loop without blocking the caller,
//!   and the original error is returned.
//! - **Using IO threads to avoid blocking children.** Improved on: no threads at all. The loop
//!   serves every pipe of every child at once, so a child never blocks on a full pipe while
//!   the loop runs and its output is being read; memory stays bounded by the read cap.
//! - **Killing grandchild processes.** [`Process::kill_group`] with a process group or session
//!   of the child's own; on Linux 6.9+ the group is named by pidfd (race-free). A capture
//!   that a grandchild holds up after the child exited is bounded by
//!   [`Command::wait_delay`] (Go's `WaitDelay`).
//!
//! # Platform notes
//!
//! - Linux: pidfds need 5.3 (older kernels use `SIGCHLD`), group signals by pidfd 6.9.
//!   Where `clone` refuses `CLONE_VM` (some sandboxes and emulators), `posix_spawn` takes
//!   over. It needs glibc 2.34 to close the parent's other fds in the child,
//!   2.29 for `current_dir` and 2.26 for `setsid`; without them (and always with musl) those
//!   spawns take the fork path, which closes the other fds itself.
//! - macOS: `posix_spawn` with `POSIX_SPAWN_CLOEXEC_DEFAULT`; `current_dir` together with a
//!   relative executable path takes the fork path (a libc bug reports `ENOENT` for it).
//! - FreeBSD: every spawn takes the fork path. Its `posix_spawn` reaps a child whose exec
//!   failed with a `WNOHANG` wait that can come before the child is a zombie, which then
//!   stays, with a pid nobody was told.
//! - uid and gid always take the fork path. `posix_spawn` cannot switch ids, and a child
//!   that switched them while sharing the parent's memory (the vfork path) would leave the
//!   parent non-dumpable for good (the kernel marks the memory, not the task) and could be
//!   stopped by the user it now runs as, with the parent suspended until its exec.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use evloop_platform::fd;
use evloop_platform::libc;
pub use evloop_platform::process::ResourceUsage;
use evloop_platform::process::{self as sys, Pid, WaitStatus};
use evloop_platform::spawn::{self, FdMapping, Source, SpawnError, Stage};
use slab::Slab;

use crate::any_stream::AnyStream;
use crate::error::{clone_error, context, invalid, os};
use crate::event_loop::{Loop, Pending};
use crate::handle::{Flags, HandleId, HandleKind, Kind, typed_handle};
use crate::limits::ADOPTED_REAPS_PER_SWEEP_MAX;
use crate::pipe::Pipe;
use crate::signal::Signal;
use crate::stream::ReadEvent;

// ----- exit status --------------------------------------------------------------------------

/// How a child ended.
///
/// ```
/// use evloop::ExitStatus;
/// let ok = ExitStatus::Exited(0);
/// assert!(ok.success() && ok.ok().is_ok());
/// let killed = ExitStatus::Signaled { signal: 9, core_dumped: false };
/// assert_eq!(killed.signal(), Some(9));
/// assert_eq!(killed.to_string(), "killed by signal 9 (SIGKILL)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code (0 to 255).
    Exited(i32),
    /// A signal ended it.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether it left a core dump.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Whether it exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(c),
            ExitStatus::Signaled { .. } => None,
        }
    }

    /// The signal that ended it, if one did.
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signaled { signal, .. } => Some(signal),
            ExitStatus::Exited(_) => None,
        }
    }

    /// Whether a signal ended it with a core dump.
    pub fn core_dumped(self) -> bool {
        matches!(self, ExitStatus::Signaled { core_dumped: true, .. })
    }

    /// The status as a shell's `$?` gives it: the exit code, or 128 plus the signal that
    /// ended it (130 for `SIGINT`), what a shell or a job runner passes on as its own exit
    /// code.
    ///
    /// ```
    /// use evloop::ExitStatus;
    /// assert_eq!(ExitStatus::Exited(3).shell_code(), 3);
    /// assert_eq!(ExitStatus::Signaled { signal: 2, core_dumped: false }.shell_code(), 130);
    /// ```
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(c) => c,
            ExitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }

    /// `Ok(())` on success, else an error that says how the child ended ("exited with code
    /// 3", "killed by signal 9 (SIGKILL)"): duct's "non-zero is an error", on request.
    pub fn ok(self) -> io::Result<()> {
        if self.success() { Ok(()) } else { Err(io::Error::other(self.to_string())) }
    }
}

impl From<WaitStatus> for ExitStatus {
    fn from(w: WaitStatus) -> ExitStatus {
        match w {
            WaitStatus::Exited(c) => ExitStatus::Exited(c),
            WaitStatus::Signaled { signal, core_dumped } => ExitStatus::Signaled { signal, core_dumped },
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited(c) => write!(f, "exited with code {c}"),
            ExitStatus::Signaled { signal, core_dumped } => {
                write!(f, "killed by signal {signal}")?;
                match crate::signal::name(signal) {
                    Some(name) => write!(f, " ({name})")?,
                    #[cfg(target_os = "linux")]
                    None if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal) => {
                        write!(f, " (SIGRTMIN+{})", signal - libc::SIGRTMIN())?
                    }
                    None => {}
                }
                if core_dumped {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
        }
    }
}

// ----- stdio --------------------------------------------------------------------------------

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
fn same_as_source(cmd: &Command, fds: &[FdMapping], target: RawFd, mut n: RawFd) -> io::Result<Source> {
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

// ----- programs -----------------------------------------------------------------------------

mod sealed {
    pub trait Sealed {}
}

/// What [`Command::new`] accepts as a program: a string (`&str`, `String`, `&OsStr`,
/// `OsString`), which is looked up in `PATH` unless it contains a `/`, or a path (`&Path`,
/// `PathBuf`), which never is (see [the module docs](self#the-program-path)).
pub trait IntoProgram: sealed::Sealed {
    /// Calls `f` with the program and whether it was given as a path.
    #[doc(hidden)]
    fn with_program<R>(self, f: impl FnOnce(&OsStr, bool) -> R) -> R;
}

macro_rules! program_impls {
    ($is_path:expr => $($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl IntoProgram for $t {
            fn with_program<R>(self, f: impl FnOnce(&OsStr, bool) -> R) -> R {
                f(self.as_ref(), $is_path)
            }
        }
    )*};
}
program_impls!(false => &str, String, &String, &OsStr, OsString, &OsString);
program_impls!(true => &Path, PathBuf, &PathBuf);

/// Whether a relative path needs `./` in front: it does not already start with `.` or `..`
/// (duct's `dotify_relative_exe_path`).
fn needs_dot(p: &OsStr) -> bool {
    matches!(Path::new(p).components().next(), Some(Component::Normal(_)))
}

/// The longest program name, with `./` and its NUL, kept inside the [`Command`]; a longer
/// one goes to the heap.
const PROGRAM_INLINE_BYTES: usize = 40;

/// The program as a C string, with `./` in front of a relative [`Path`]. Short names (most
/// are: `/bin/true`, `cargo`) live inside the `Command`, so building one allocates nothing.
#[derive(Clone)]
enum ProgramName {
    /// `bytes[..len]` is the name, `bytes[len]` its NUL.
    Inline { len: u8, bytes: [u8; PROGRAM_INLINE_BYTES] },
    /// The name and its NUL.
    Heap(Vec<u8>),
}

impl ProgramName {
    /// Copies the name. A NUL byte inside it is found by [`as_c_str`], which scans it anyway,
    /// so building a command reads the name once, and a bad name is still shown in messages.
    ///
    /// [`as_c_str`]: ProgramName::as_c_str
    fn new(p: &OsStr, is_path: bool) -> Result<ProgramName, &'static str> {
        let name = p.as_bytes();
        if name.is_empty() {
            return Err("the program name is empty");
        }
        let dot: &[u8] = if is_path && needs_dot(p) { b"./" } else { b"" };
        let len = dot.len() + name.len();
        if len < PROGRAM_INLINE_BYTES {
            let mut bytes = [0; PROGRAM_INLINE_BYTES];
            // (Only when there is one: a copy of a length not known here is a call, even of
            // nothing.)
            if !dot.is_empty() {
                bytes[..2].copy_from_slice(b"./");
            }
            bytes[dot.len()..len].copy_from_slice(name);
            return Ok(ProgramName::Inline { len: len as u8, bytes });
        }
        let mut v = Vec::with_capacity(len + 1);
        v.extend_from_slice(dot);
        v.extend_from_slice(name);
        v.push(0);
        Ok(ProgramName::Heap(v))
    }

    /// The name's bytes, without the NUL.
    fn as_bytes(&self) -> &[u8] {
        match self {
            ProgramName::Inline { len, bytes } => &bytes[..*len as usize],
            ProgramName::Heap(v) => &v[..v.len() - 1],
        }
    }

    /// The name for the C side: an error if it holds a NUL byte.
    fn as_c_str(&self) -> Result<&CStr, &'static str> {
        let with_nul = match self {
            ProgramName::Inline { len, bytes } => &bytes[..=*len as usize],
            ProgramName::Heap(v) => v,
        };
        spawn::c_str_with_nul(with_nul).ok_or(PROGRAM_NUL)
    }
}

const PROGRAM_NUL: &str = "the program name contains a NUL byte";

impl fmt::Debug for ProgramName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(OsStr::from_bytes(self.as_bytes()), f)
    }
}

// ----- the command --------------------------------------------------------------------------

/// Edits to the inherited environment.
#[derive(Clone, Debug, Default)]
struct EnvEdits {
    clear: bool,
    /// `None`: removed.
    vars: BTreeMap<OsString, Option<OsString>>,
}

/// A child to spawn: program, arguments, environment, directory, ids, group and fds.
///
/// Setters take and return `&mut Command`, as std's do; a command can be spawned any number
/// of times, except that a [`Stdio::Handle`] moves its handle to the first child, so later
/// spawns of the same command fail with an error that names the handle. Bad input (a NUL
/// byte in any string, an `=` in an environment variable name) is remembered and reported by
/// [`spawn`](Command::spawn), before anything is started.
///
/// ```
/// use evloop::{Command, Loop, RunMode};
///
/// let mut lp = Loop::new()?;
/// let mut cmd = Command::new("sh");
/// cmd.args(["-c", "test \"$GREETING\" = hi && test \"$(pwd)\" = /"])
///     .env("GREETING", "hi")
///     .current_dir("/");
/// cmd.spawn(&mut lp, |lp, p, status| {
///     assert!(status.unwrap().success());
///     p.close(lp).unwrap();
/// })?;
/// lp.run(RunMode::Default)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Command {
    /// As given, with `./` for relative paths.
    program: ProgramName,
    arg0: Option<CString>,
    args: Vec<CString>,
    env: Option<EnvEdits>,
    cwd: Option<(PathBuf, CString)>,
    uid: Option<u32>,
    gid: Option<u32>,
    /// The supplementary groups to set, where the caller gives them.
    groups: Option<Vec<u32>>,
    process_group: Option<i32>,
    setsid: bool,
    /// A tty handle whose terminal the child takes for its group before its exec.
    foreground: Option<HandleId>,
    /// The child's fd whose terminal becomes its new session's controlling terminal.
    controlling_terminal: Option<RawFd>,
    /// Explicit fd entries, at most one per target.
    stdio: Vec<(RawFd, Stdio)>,
    on_drop: OnDrop,
    /// How long a capture waits for the output to end once the child exited.
    wait_delay: Option<Duration>,
    /// How long a capture lets the child run, and the grace period of its ending then.
    timeout: Option<(Duration, Duration)>,
    /// How much of each stream a capture keeps.
    output_limit: OutputLimit,
    /// Signals the child starts with ignored: bit `n - 1` for signal `n`.
    ignored_signals: u64,
    /// The signal the child gets when the spawning thread ends, 0 for none.
    parent_death_signal: i32,
    /// Keep what the child used, for `Process::resource_usage`.
    record_usage: bool,
    /// The first bad input, reported at spawn.
    invalid: Option<String>,
}

/// `bytes` for an error message: invalid UTF-8 replaced, control characters (a NUL, say)
/// escaped, so that the message stays one line of text.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether [`Command::ignore_signal`] can start a child with `signal` ignored.
fn ignorable(signal: i32) -> Result<(), &'static str> {
    if signal == libc::SIGKILL || signal == libc::SIGSTOP {
        return Err("SIGKILL and SIGSTOP cannot be ignored");
    }
    nameable(signal)
}

/// Whether a caller may name `signal` for a child: a signal, and not one the C library keeps
/// for itself.
fn nameable(signal: i32) -> Result<(), &'static str> {
    #[cfg(target_os = "linux")]
    let realtime = (libc::SIGRTMIN()..=libc::SIGRTMAX().min(64)).contains(&signal);
    #[cfg(not(target_os = "linux"))]
    let realtime = false;
    if (1..32).contains(&signal) || realtime {
        Ok(())
    } else if (32..=64).contains(&signal) && cfg!(target_os = "linux") {
        Err("the C library keeps this signal for itself")
    } else {
        Err("no such signal")
    }
}

fn cstring(s: impl Into<Vec<u8>>) -> Result<CString, ()> {
    CString::new(s).map_err(|_| ())
}

impl Command {
    /// A command for `program`; see [`IntoProgram`] for how strings and paths differ.
    pub fn new(program: impl IntoProgram) -> Command {
        let (program, invalid) = match program.with_program(ProgramName::new) {
            Ok(c) => (c, None),
            Err(why) => (ProgramName::Heap(vec![0]), Some(why.to_string())),
        };
        Command {
            program,
            arg0: None,
            args: Vec::new(),
            env: None,
            cwd: None,
            uid: None,
            gid: None,
            groups: None,
            process_group: None,
            setsid: false,
            foreground: None,
            controlling_terminal: None,
            stdio: Vec::new(),
            on_drop: OnDrop::Nothing,
            wait_delay: None,
            timeout: None,
            output_limit: OutputLimit { bytes: usize::MAX, last: false },
            ignored_signals: 0,
            parent_death_signal: 0,
            record_usage: false,
            invalid,
        }
    }

    /// A copy of the command, to start variants of one template (a test runner's per-test
    /// arguments, a build system's per-target environment); std's `Command` has none. fds
    /// given as [`Stdio::Fd`] are copied ([`Stdio::try_clone`]), so each command owns its
    /// own; that copy is the only way this fails (`EMFILE`). Bad input remembered by the
    /// original is remembered by the copy too.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut template = Command::new("sh");
    /// template.env("LEVEL", "2").arg("-c");
    /// for script in ["test $LEVEL = 2", "exit $((LEVEL - 2))"] {
    ///     let mut cmd = template.try_clone()?;
    ///     cmd.arg(script);
    ///     cmd.spawn(&mut lp, |lp, p, status| {
    ///         assert!(status.unwrap().success());
    ///         p.close(lp).unwrap();
    ///     })?;
    /// }
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_clone(&self) -> io::Result<Command> {
        let stdio = self.stdio.iter().map(|(n, s)| Ok((*n, s.try_clone()?))).collect::<io::Result<_>>()?;
        Ok(Command {
            program: self.program.clone(),
            arg0: self.arg0.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
            process_group: self.process_group,
            setsid: self.setsid,
            foreground: self.foreground,
            controlling_terminal: self.controlling_terminal,
            stdio,
            on_drop: self.on_drop,
            wait_delay: self.wait_delay,
            timeout: self.timeout,
            output_limit: self.output_limit,
            ignored_signals: self.ignored_signals,
            parent_death_signal: self.parent_death_signal,
            record_usage: self.record_usage,
            invalid: self.invalid.clone(),
        })
    }

    fn bad(&mut self, why: String) {
        self.invalid.get_or_insert(why);
    }

    fn cstr_or_bad(&mut self, s: &OsStr, what: impl FnOnce() -> String) -> CString {
        match cstring(s.as_bytes()) {
            Ok(c) => c,
            Err(()) => {
                let why = format!("{} contains a NUL byte", what());
                self.bad(why);
                CString::default()
            }
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        let n = self.args.len() + 1;
        let c = self.cstr_or_bad(arg.as_ref(), || format!("argument {n}"));
        self.args.push(c);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets `argv[0]` (by default the program as given).
    pub fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Command {
        let c = self.cstr_or_bad(arg0.as_ref(), || "argument 0".into());
        self.arg0 = Some(c);
        self
    }

    fn check_var(&mut self, key: &OsStr, value: Option<&OsStr>) {
        let k = key.as_bytes();
        if k.is_empty() {
            self.bad("an environment variable name is empty".into());
        } else if k.contains(&b'=') {
            self.bad(format!("environment variable name `{}` contains `=`", printable(key.as_bytes())));
        } else if k.contains(&0) || value.is_some_and(|v| v.as_bytes().contains(&0)) {
            self.bad(format!("environment variable `{}` contains a NUL byte", printable(key.as_bytes())));
        }
    }

    /// Sets an environment variable for the child. A name that is empty or holds `=`, or a
    /// name or value with a NUL byte, makes the spawn fail with `InvalidInput`.
    ///
    /// A variable that holds the child's own pid, which is not known before the spawn
    /// (socket activation's `LISTEN_PID`), is set by a shell that then becomes the program:
    /// `Command::new("sh").args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", program, arg1])`
    /// (`exec` keeps the pid).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Command {
        let (key, value) = (key.as_ref(), value.as_ref());
        self.check_var(key, Some(value));
        self.env.get_or_insert_with(Default::default).vars.insert(key.to_owned(), Some(value.to_owned()));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        let key = key.as_ref();
        self.check_var(key, None);
        self.env.get_or_insert_with(Default::default).vars.insert(key.to_owned(), None);
        self
    }

    /// Starts the child's environment empty (variables set afterwards are still passed).
    pub fn env_clear(&mut self) -> &mut Command {
        let env = self.env.get_or_insert_with(Default::default);
        env.clear = true;
        env.vars.clear();
        self
    }

    /// Sets the child's working directory. A relative program path still resolves against
    /// the parent's working directory (see [the module docs](self#the-program-path)). The
    /// child enters it before it switches to [`uid`](Self::uid) and [`gid`](Self::gid), as
    /// libuv's does: a directory only the parent may enter works (std's `Command` switches
    /// first, and fails there with `EACCES`).
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        let dir = dir.as_ref();
        let c = self.cstr_or_bad(dir.as_os_str(), || "the working directory".into());
        self.cwd = Some((dir.to_owned(), c));
        self
    }

    /// Runs the child as user `uid` (the parent needs the privilege to switch). Takes the
    /// fork path (see [the platform notes](crate::process#platform-notes)). Supplementary
    /// groups are dropped where permitted, but the group id stays the parent's unless
    /// [`gid`](Self::gid) sets it too: a root parent's child then runs as that user in group
    /// 0, as with std and libuv.
    pub fn uid(&mut self, uid: u32) -> &mut Command {
        self.uid = Some(uid);
        self
    }

    /// Runs the child with group `gid`; supplementary groups are dropped where permitted
    /// (unless [`groups`](Self::groups) sets them). Takes the fork path.
    pub fn gid(&mut self, gid: u32) -> &mut Command {
        self.gid = Some(gid);
        self
    }

    /// Sets the child's supplementary groups (`setgroups`, which needs the privilege),
    /// before [`gid`](Self::gid) and [`uid`](Self::uid) switch its ids: what a service
    /// manager gives a service that runs as another user and needs its groups' files (an
    /// empty list drops them all, which `uid` and `gid` do by themselves). More groups than
    /// the system takes (`NGROUPS_MAX`, 65,536 on Linux) fail the spawn with `EINVAL`, as
    /// does a caller without the privilege with `EPERM`. Takes the fork path.
    ///
    /// ```no_run
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// // A service as user 1000, group 1000, also in group 27 (sudo) and 44 (video).
    /// let mut service = Command::new("/usr/bin/my-service");
    /// service.groups(&[27, 44]).gid(1000).uid(1000);
    /// service.spawn(&mut lp, |lp, p, status| {
    ///     println!("service: {status:?}");
    ///     p.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn groups(&mut self, groups: &[u32]) -> &mut Command {
        self.groups = Some(groups.to_vec());
        self
    }

    /// Puts the child in process group `pgid`; 0 makes a new group that the child leads,
    /// which [`Process::kill_group`] can then signal as a whole.
    ///
    /// A group of its own is a background group of the terminal (unless it is handed the
    /// terminal, see [`Tty::set_foreground_group`](crate::Tty::set_foreground_group)): a
    /// child in it that reads the terminal (a password prompt) is stopped by `SIGTTIN`
    /// until it is. [`Process::watch_stops`] tells.
    ///
    /// A group counts as long as a member is there, an exited one included until its parent
    /// reaps it: members orphaned by the child's exit (`sh -c 'server &'`) go to `init`,
    /// which some containers' first process is slow to do. [`Process::terminate_group`]
    /// tells such a group's end on Linux all the same; elsewhere, and for
    /// [`Process::kill_group`]'s `ESRCH`, a supervisor that restarts groups makes itself
    /// their reaper: [`become_subreaper`] and [`Loop::reap_adopted`].
    pub fn process_group(&mut self, pgid: i32) -> &mut Command {
        self.process_group = Some(pgid);
        self
    }

    /// Makes the child's process group the foreground group of `tty`'s terminal, from the
    /// child itself, after it joined its group and before its exec: what shells do in the
    /// child as well as in the parent ([`Tty::set_foreground_group`](crate::Tty::set_foreground_group)),
    /// so that a job never starts in the background. Without it, a program that looks at
    /// once whether it is in front (an interactive shell, some full-screen programs) can find
    /// it is not yet, and stop itself with `SIGTTIN`. Needs a group of the child's own
    /// ([`process_group`](Self::process_group); in a [`Pipeline`], on the first stage, with
    /// [`Pipeline::process_group`]), and the terminal must be the caller's controlling
    /// terminal. The caller's group must have the terminal ([`Tty::is_foreground`](crate::Tty::is_foreground)):
    /// from the background (a program started with `&`) the spawn fails with
    /// `ResourceBusy`, where the child would take the terminal from the group in front, a
    /// shell's, whose reads of it then fail. A program that runs a pager (`git log` and
    /// `less`) starts it without this where it is not in front: in the program's own group,
    /// the shell's job control stops and continues the two together.
    ///
    /// The shell itself must survive the keys that reach the foreground group while the
    /// terminal changes hands: a Ctrl-C typed just as the job starts can reach the shell's
    /// group too. An interactive shell watches `SIGINT` and `SIGQUIT` with a
    /// [`Signal`] handle (or leaves them to [`install_restore_hooks`](crate::tty::install_restore_hooks)
    /// only when dying on them is what it wants), and ignores `SIGTSTP`, `SIGTTIN` and
    /// `SIGTTOU` with [`signal::ignore`](crate::signal::ignore).
    pub fn foreground(&mut self, tty: crate::Tty) -> &mut Command {
        self.foreground = Some(tty.id());
        self
    }

    /// Starts the child in a new session (and a new process group), detached from the
    /// controlling terminal. The session has no controlling terminal until one of its
    /// processes gets one: [`controlling_terminal`](Self::controlling_terminal) gives it
    /// one at the start. `setsid(false)` cancels that too.
    pub fn setsid(&mut self, on: bool) -> &mut Command {
        self.setsid = on;
        if !on {
            self.controlling_terminal = None;
        }
        self
    }

    /// Starts the child with `signal` ignored (`SIG_IGN`, which its exec keeps, so the
    /// program starts with it ignored), where every other signal starts at its default
    /// action whatever the parent does with it. What a shell needs for `trap '' INT`
    /// (commands inherit the ignored signal), for the `SIGINT` and `SIGQUIT` that a
    /// non-interactive shell's background jobs ignore, and for `nohup` (`SIGHUP`). A
    /// child asked to ignore a stop signal (`SIGTSTP`, `SIGTTIN`, `SIGTTOU`) ignores it
    /// before its exec too.
    ///
    /// `SIGKILL` and `SIGSTOP` cannot be ignored, and the signals a libc keeps for itself
    /// (on Linux, those between 31 and `SIGRTMIN`) cannot be named: either is an
    /// `InvalidInput` error at spawn, as is a number that is no signal.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode, signal::SIGINT};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// // The shell sees SIGINT ignored: it cannot even trap it.
    /// cmd.args(["-c", "kill -INT $$; exit 3"]).ignore_signal(SIGINT);
    /// cmd.spawn(&mut lp, |lp, p, status| {
    ///     assert_eq!(status.unwrap().code(), Some(3));
    ///     p.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn ignore_signal(&mut self, signal: i32) -> &mut Command {
        if let Err(why) = ignorable(signal) {
            self.bad(format!("ignore_signal({signal}): {why}"));
        } else {
            self.ignored_signals |= 1 << (signal - 1);
        }
        self
    }

    /// Has the child get `signal` when its parent goes, so that it does not outlive a program
    /// that dies without a chance to end it (`SIGKILL`, a crash): `kill_on_drop` needs the
    /// loop to be dropped, this needs nothing (Linux's `PR_SET_PDEATHSIG`, FreeBSD's
    /// `PROC_PDEATHSIG_CTL`). `SIGKILL` cannot be refused; `SIGTERM` or `SIGHUP` lets a
    /// child clean up.
    ///
    /// - **Linux counts the thread, not the process**: the signal comes when the thread that
    ///   spawned the child ends, even if the process goes on. Spawn from a thread that lives
    ///   as long as the child should (the loop's thread usually does). FreeBSD counts the
    ///   process.
    /// - The signal is set in the child after its ids switch ([`uid`](Self::uid), which
    ///   would clear it); a parent already gone by then is caught too (the child sends it
    ///   to itself). The exec of a set-user-id program clears it (the kernel's rule).
    /// - It applies to the child, not to what the child starts: a grandchild outlives the
    ///   program (run the child in a group of its own and end the group for that, or ask
    ///   the child to pass the signal on).
    /// - The child starts through a fork or evloop's vfork path, never `posix_spawn`.
    /// - A signal whose default action is to ignore it (`SIGCHLD`, `SIGWINCH`, `SIGURG`,
    ///   `SIGCONT`) does nothing unless the program the child runs handles it.
    ///
    /// macOS has no such thing: there it is an `Unsupported` error at spawn. A number that is
    /// no signal, a signal the child is to ignore ([`ignore_signal`](Self::ignore_signal)),
    /// and a stop signal (which would only stop the child) are `InvalidInput` errors at
    /// spawn.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode, signal::SIGTERM};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("true");
    /// # #[cfg(not(target_os = "macos"))]
    /// cmd.parent_death_signal(SIGTERM);
    /// cmd.spawn(&mut lp, |lp, p, status| {
    ///     assert!(status.unwrap().success());
    ///     p.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn parent_death_signal(&mut self, signal: i32) -> &mut Command {
        if let Err(why) = nameable(signal) {
            self.bad(format!("parent_death_signal({signal}): {why}"));
        } else {
            self.parent_death_signal = signal;
        }
        self
    }

    /// Starts the child in a new session ([`setsid`](Self::setsid)) whose controlling
    /// terminal is the terminal on the child's fd `fd` (after the stdio set-up, so usually
    /// 0: the slave of a pty from [`tty::openpty`](crate::tty::openpty)), as `login_tty`
    /// and terminal emulators do: Ctrl-C and Ctrl-Z typed at the terminal then reach the
    /// child's group, it can open `/dev/tty`, it hears `SIGWINCH` when the window size
    /// changes, and `SIGHUP` when the other side of the pty closes (so closing the master's
    /// handle ends a child that does not catch it). Without it, a child in a session of its
    /// own has no controlling terminal, and none of that happens.
    ///
    /// The fd must be one of the child's (0, 1, 2, or one set with [`fd`](Self::fd)), open
    /// for reading, and a terminal that is no other session's controlling terminal (a fresh
    /// pty's slave is none), or the spawn fails and names the step. The child's group is
    /// then in front of the terminal from the start:
    /// [`process_group`](Self::process_group) and [`foreground`](Self::foreground) do not
    /// combine with it. `posix_spawn` having no step for it, such a child takes the fork path
    /// on macOS and FreeBSD. A session is one child's and its descendants': the stages of a
    /// [`Pipeline`] cannot share one, so a pipeline meant to run on a pty runs there as a
    /// shell's (`sh -c 'a | b'`), the shell given the terminal.
    ///
    /// The parent gives the child its copies of the slave and closes its own: a slave still
    /// open in the parent (or in the `Command`, which keeps the fds it was given until it
    /// drops) keeps the master from reaching end of file when the child's session is gone.
    /// A master reports that end of file after every byte the child wrote; its exit and that
    /// end of file come in either order. [`spawn_on_pty`](Command::spawn_on_pty) does all of
    /// this in one call.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, ReadEvent, RunMode, Stdio, Tty, tty};
    ///
    /// let mut lp = Loop::new()?;
    /// let (master, slave) = tty::openpty()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "test -t 0 && exec 3</dev/tty && echo has a terminal"])
    ///     .stdin(slave) // (one copy, the Command's: the parent keeps none)
    ///     .stdout(Stdio::SameAs(0))
    ///     .stderr(Stdio::SameAs(0))
    ///     .controlling_terminal(0);
    /// cmd.spawn(&mut lp, |lp, p, status| {
    ///     assert!(status.unwrap().success());
    ///     p.close(lp).unwrap();
    /// })?;
    /// drop(cmd); // its copy of the slave
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let out = seen.clone();
    /// let master = Tty::open(&mut lp, master)?;
    /// master.read_start(&mut lp, move |lp, m, ev| match ev {
    ///     ReadEvent::Data(d) => out.borrow_mut().extend_from_slice(d),
    ///     _ => m.close(lp).unwrap(),
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(&seen.borrow()[..], b"has a terminal\r\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn controlling_terminal(&mut self, fd: RawFd) -> &mut Command {
        if fd < 0 {
            self.bad(format!("controlling terminal: a child fd number cannot be negative ({fd})"));
            return self;
        }
        self.setsid = true;
        self.controlling_terminal = Some(fd);
        self
    }

    /// Sets what the child's fd `fd` is. fds 0, 1 and 2 default to [`Stdio::Inherit`]; any
    /// other number given here is set up as well, and all others are closed in the child.
    pub fn fd(&mut self, fd: RawFd, stdio: impl Into<Stdio>) -> &mut Command {
        let stdio = stdio.into();
        if fd < 0 {
            self.bad(format!("child fd {fd}: a child fd number cannot be negative"));
            return self;
        }
        if let Stdio::SameAs(n) = stdio {
            if n < 0 || n == fd {
                self.bad(format!("child fd {fd}: Stdio::SameAs({n}) names no other child fd"));
                return self;
            }
        }
        match self.stdio.iter_mut().find(|(t, _)| *t == fd) {
            Some(entry) => entry.1 = stdio,
            None => self.stdio.push((fd, stdio)),
        }
        self
    }

    /// Sets the child's stdin (fd 0).
    pub fn stdin(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.fd(0, stdio)
    }

    /// Sets the child's stdout (fd 1).
    pub fn stdout(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.fd(1, stdio)
    }

    /// Sets the child's stderr (fd 2).
    pub fn stderr(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.fd(2, stdio)
    }

    /// Sends the child `SIGKILL` if its [`Process`] handle is closed, or its loop dropped,
    /// while it still runs (tokio's `kill_on_drop`). It is reaped either way. Replaces
    /// [`kill_group_on_drop`](Command::kill_group_on_drop).
    pub fn kill_on_drop(&mut self, on: bool) -> &mut Command {
        self.on_drop = if on { OnDrop::KillChild } else { OnDrop::Nothing };
        self
    }

    /// Like [`kill_on_drop`](Command::kill_on_drop), for the child's whole process group:
    /// `SIGKILL` to the group ([`Process::kill_group`]) and to the child, so that what the
    /// child started goes with it (a build tool's compiler and its subprocesses, a test and
    /// the servers it forked). The child must be in a process group other than the loop's,
    /// else the spawn fails: its own ([`process_group(0)`](Command::process_group),
    /// [`setsid`](Command::setsid), a [`Pipeline::process_group`]), or one it joined with
    /// `process_group(pgid)`, which is then the group killed. The child is reaped and waited
    /// for as with `kill_on_drop`; its descendants are not the loop's to reap.
    ///
    /// When the child itself has exited already (it forked a server and returned, say), the
    /// group is killed too where it can be named race-free: on Linux 6.9 and later, through
    /// the pidfd of a child that leads its group. Elsewhere (macOS, FreeBSD, older kernels,
    /// the `SIGCHLD` reaping path, a child that joined another group) closing the handle of
    /// a reaped child kills nothing, since by then an emptied group's number could be
    /// another's: call [`Process::kill_group`] from the exit callback instead (for a capture,
    /// [`output`](Command::output) or [`stream_output`](Command::stream_output), whose handle
    /// is still open while its done callback runs: from that callback). Replaces
    /// `kill_on_drop`.
    ///
    /// A handle closed while a [`Process::terminate_group`] gives the group its grace period
    /// (a capture that closes its handle once the leader exited, say) leaves the group to
    /// it: the members that heed `SIGTERM` get their time, and the rest get `SIGKILL` when
    /// it is over. The child itself gets its `SIGKILL` when the escalation ends (the grace
    /// period is over, or the group emptied before), even if it left the group meanwhile
    /// (`setsid`, a shell's job control), where the group's `SIGKILL` would miss it. A close
    /// once the grace period's `SIGKILL` went kills the group and the child at once, as
    /// does dropping the loop.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "sleep 100 & sleep 100"]).process_group(0).kill_group_on_drop(true);
    /// let child = cmd.spawn(&mut lp, |_, _, _| {})?;
    /// // Both sleeps and the shell are killed; the shell is reaped.
    /// child.process.close(&mut lp)?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn kill_group_on_drop(&mut self, on: bool) -> &mut Command {
        self.on_drop = if on { OnDrop::KillGroup } else { OnDrop::Nothing };
        self
    }

    /// For a capture ([`output`](Command::output), [`output_with_input`](Command::output_with_input),
    /// [`stream_output`](Command::stream_output)): how long to wait, once the child has
    /// exited, for its output to end (Go's `Cmd.WaitDelay`). Without it, the capture waits
    /// for end of file however long that takes, and a descendant that inherited the streams
    /// and runs on (`sh -c 'server & echo started'`) holds it up for as long as it lives,
    /// the duct gotcha.
    ///
    /// When the delay runs out first, the capture stops reading and closes its pipes (a
    /// descendant still writing to them gets `SIGPIPE`, or `EPIPE`), stops feeding the input,
    /// and finishes with what it has: `output`'s [`Output`] says so in
    /// [`cut`](Output::cut); `stream_output`'s `on_done` gets an error of kind
    /// [`TimedOut`](io::ErrorKind::TimedOut) whose [`OutputCut`] holds the child's status
    /// (every byte read has reached `on_data`). The descendant itself runs on: end it with
    /// the child's group
    /// ([`process_group`](Command::process_group) and
    /// [`kill_group_on_drop`](Command::kill_group_on_drop), or
    /// [`Process::kill_group`]).
    ///
    /// The delay counts from when the loop handles the exit, by a fresh reading of its clock
    /// (a slow callback just before in the same iteration does not use it up). What the
    /// pipes already hold is read before they close, and the delay counts only while the
    /// capture reads: output held back with [`Process::pause_output`] is not
    /// cut, and the delay starts over when it comes round paused.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// // The shell exits at once; the sleep it leaves behind holds stdout open.
    /// cmd.args(["-c", "sleep 1 & echo started"]).wait_delay(Duration::from_millis(50));
    /// cmd.output(&mut lp, |_, out| {
    ///     let out = out.unwrap();
    ///     assert!(out.status.success() && out.cut);
    ///     assert_eq!(out.stdout, b"started\n");
    /// })?;
    /// lp.run(RunMode::Default)?; // 50 ms after the shell's exit, not a second
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait_delay(&mut self, delay: Duration) -> &mut Command {
        self.wait_delay = Some(delay);
        self
    }

    /// A child still running `after` its start is ended, gently: `SIGTERM` (with `SIGCONT`,
    /// for a stopped child), then `SIGKILL` to what is left once `grace` is over. A child
    /// that leads its process group ([`process_group(0)`](Command::process_group),
    /// [`setsid`](Command::setsid), the first stage of a [`Pipeline`] run as one group) is
    /// ended with its group ([`Process::terminate_group`]), whatever it started with it;
    /// any other alone ([`Process::terminate`]). [`Process::timed_out`] says that the
    /// timeout ended the child (it was still running when the time was up: its status says
    /// how it ended, which may be an exit of its own at that very moment), as do
    /// [`Output::timed_out`] for a capture and, for [`stream_output`](Command::stream_output),
    /// a [`TimedOut`](io::ErrorKind::TimedOut) error holding the status ([`RunTimedOut`]).
    /// Check the status too: a child that exits just as the time is up can be told timed
    /// out with an exit of its own. A child done in time leaves nothing waiting. Counted
    /// from the spawn, on the loop's clock (brought up to date then); for every way of
    /// starting a child: [`spawn`](Command::spawn), the captures,
    /// [`spawn_on_pty`](Command::spawn_on_pty), a pipeline's stages.
    ///
    /// The timeout ends at the child's exit: after it, only a
    /// [`wait_delay`](Command::wait_delay) bounds the wait for output that a process it
    /// started holds open. A child ended alone leaves what it started running: a shell that
    /// runs its program as a child of its own (`sh -c 'prog; echo done'`) is ended, and the
    /// program holds the output open, so that the capture waits for it. Give such a command
    /// its own group, or a `wait_delay`. Once the timeout has sent its `SIGTERM`, the
    /// child is ended for good: a handle closed in the grace period (a capture abandoned),
    /// or the loop dropped then, sends it `SIGKILL` at once, whatever
    /// [`kill_on_drop`](Command::kill_on_drop) says, rather than after the grace period (a
    /// group's escalation goes on without the handle). Where the timeout cannot signal the
    /// child (a `uid` it may not signal), it logs a warning and the child is not told
    /// timed out. A `grace` of [`Duration::MAX`] never sends `SIGKILL`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "echo started; sleep 10"]).process_group(0);
    /// cmd.timeout(Duration::from_millis(50), Duration::from_secs(1));
    /// cmd.output(&mut lp, |_, out| {
    ///     let out = out.unwrap();
    ///     assert!(out.timed_out);
    ///     assert_eq!(out.status.signal(), Some(evloop::signal::SIGTERM));
    ///     assert_eq!(out.stdout, b"started\n");
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn timeout(&mut self, after: Duration, grace: Duration) -> &mut Command {
        self.timeout = Some((after, grace));
        self
    }

    /// For [`output`](Command::output) and [`output_with_input`](Command::output_with_input)
    /// ([`stream_output`](Command::stream_output) keeps nothing, and ignores it): keep at most
    /// `bytes` of each of stdout and stderr, the first ones (0: none). The rest is still
    /// read, and dropped, so the child is neither held up on a full pipe nor ended by
    /// `SIGPIPE` for printing too much, and its status is its own;
    /// [`Output::truncated`] says that something was dropped, and [`Output::stdout_dropped`]
    /// and [`Output::stderr_dropped`] how much. Memory for a capture is then bounded whatever
    /// the child prints (a test runner's cap on a test's log). No limit by default.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "yes | head -c 1000000; exit 3"]).output_limit(4);
    /// cmd.output(&mut lp, |_, out| {
    ///     let out = out.unwrap();
    ///     assert_eq!(out.stdout, b"y\ny\n");
    ///     assert!(out.truncated);
    ///     assert_eq!(out.stdout_dropped, 1_000_000 - 4);
    ///     assert_eq!(out.status.code(), Some(3));
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn output_limit(&mut self, bytes: usize) -> &mut Command {
        self.output_limit = OutputLimit { bytes, last: false };
        self
    }

    /// [`output_limit`](Command::output_limit), keeping the last `bytes` of each stream
    /// instead of the first: the end of a log, where a failed test or build step says
    /// what went wrong. [`Output::stdout_dropped`] and [`Output::stderr_dropped`] then
    /// count the bytes dropped from the start. Memory for a capture stays bounded, by
    /// twice `bytes` a stream at most while it runs. The later of the two calls counts. A
    /// [`Pipeline::output`] keeps the end of the last stage's stdout likewise.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "seq 1 100000; echo 'error: it broke' >&2; exit 1"]).output_limit_last(13);
    /// cmd.output(&mut lp, |_, out| {
    ///     let out = out.unwrap();
    ///     assert_eq!(out.stdout, b"99999\n100000\n");
    ///     assert_eq!(out.stderr, b"error: it broke\n"[3..]);
    ///     assert_eq!((out.stdout_dropped, out.stderr_dropped), (588_895 - 13, 3));
    ///     assert!(out.truncated);
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn output_limit_last(&mut self, bytes: usize) -> &mut Command {
        self.output_limit = OutputLimit { bytes, last: true };
        self
    }

    /// Keeps what the child used, as the kernel reports it at the reap (`wait4`): its CPU
    /// time in user mode and in the kernel, its peak memory, its page faults and context
    /// switches, for [`Process::resource_usage`] and [`Output::usage`]. Off by default (the
    /// figures are kept with the handle until it closes). What a benchmark tool, a test
    /// runner or a build system reports per job; std's, tokio's and libuv's children offer
    /// none of it, and the process-wide `getrusage(RUSAGE_CHILDREN)` mixes all children
    /// together, whereas these are the one child's.
    ///
    /// The figures are the child's own plus those of the descendants it waited for itself
    /// (a shell's commands, say); a descendant left running, or reaped by someone else, is
    /// not in them. [`ResourceUsage::max_rss_bytes`] is the largest of those processes'
    /// peaks, not their sum.
    ///
    /// **Linux counts the spawning process's memory in the child's peak**: at the exec, the
    /// kernel takes the peak of the memory the child had until then into its
    /// `max_rss_bytes`. evloop's spawns on Linux share this process's memory until the
    /// exec (as `posix_spawn`'s `vfork` does), so the figure is at least this process's own
    /// peak resident set so far, its whole life long: a supervisor that once used 2 GB
    /// sees at least 2 GB for every child after. A forked child (with
    /// [`uid`](Command::uid), say, or `LoopBuilder::force_fork_spawn`) starts with a copy,
    /// and counts this process's resident set at the fork instead. Telling for a child that
    /// grows bigger than that, meaningless below it. (Whether macOS and FreeBSD count the
    /// same way is not known: evloop has not been run there.)
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i + 1)); done"]).record_usage(true);
    /// cmd.spawn(&mut lp, |lp, p, status| {
    ///     assert!(status.unwrap().success());
    ///     let usage = p.resource_usage(lp).unwrap().expect("recorded at the reap");
    ///     println!("{:?} of CPU, {} KiB at most", usage.cpu_time(), usage.max_rss_bytes / 1024);
    ///     assert!(usage.cpu_time() > std::time::Duration::ZERO);
    ///     p.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn record_usage(&mut self, on: bool) -> &mut Command {
        self.record_usage = on;
        self
    }

    /// The program as given (with `./` added to a relative [`Path`]).
    pub fn get_program(&self) -> &OsStr {
        OsStr::from_bytes(self.program.as_bytes())
    }

    /// The arguments after the program, in order (`argv[0]` is not among them). One that
    /// held a NUL byte, which [`spawn`](Command::spawn) refuses, shows as empty.
    ///
    /// ```
    /// use std::ffi::OsStr;
    /// use std::path::Path;
    /// use evloop::Command;
    ///
    /// let mut cmd = Command::new("cc");
    /// cmd.args(["-c", "main.c"]).env("LANG", "C").env_remove("CFLAGS").current_dir("/tmp");
    /// // A build tool logs what it is about to run.
    /// let line: Vec<&OsStr> = std::iter::once(cmd.get_program()).chain(cmd.get_args()).collect();
    /// assert_eq!(line, ["cc", "-c", "main.c"]);
    /// let envs: Vec<_> = cmd.get_envs().collect();
    /// assert_eq!(envs, [(OsStr::new("CFLAGS"), None), (OsStr::new("LANG"), Some(OsStr::new("C")))]);
    /// assert!(!cmd.get_env_clear());
    /// assert_eq!(cmd.get_current_dir(), Some(Path::new("/tmp")));
    /// ```
    pub fn get_args(&self) -> impl ExactSizeIterator<Item = &OsStr> + '_ {
        self.args.iter().map(|a| OsStr::from_bytes(a.to_bytes()))
    }

    /// The changes to the inherited environment, by name in byte order: `(name, Some(value))`
    /// for one set, `(name, None)` for one removed. After [`env_clear`](Command::env_clear),
    /// only the variables set since.
    pub fn get_envs(&self) -> impl Iterator<Item = (&OsStr, Option<&OsStr>)> + '_ {
        self.env.iter().flat_map(|e| e.vars.iter().map(|(k, v)| (k.as_os_str(), v.as_deref())))
    }

    /// Whether the child's environment starts empty ([`env_clear`](Command::env_clear)).
    pub fn get_env_clear(&self) -> bool {
        self.env.as_ref().is_some_and(|e| e.clear)
    }

    /// The child's working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_ref().map(|(p, _)| p.as_path())
    }

    /// Starts the child. `on_exit` runs on the loop thread once the child has exited and
    /// been reaped, with its status (or the error that kept the loop from learning it: the
    /// child was reaped by someone else, which happens only when `SIGCHLD` is set to
    /// `SIG_IGN` or other code calls `waitpid(-1)`).
    ///
    /// Returns the [`Process`] handle and the loop's ends of the pipes asked for. A failure
    /// to start (missing program, no permission, bad directory, an fd that is not open, ...)
    /// is returned here as an error that names the program; no child, zombie or fd is left
    /// behind. Such an error keeps its [`kind`](io::Error::kind) and OS error number, but
    /// as context wraps it, `raw_os_error` is `None`: read the number with
    /// [`os_error_code`](crate::os_error_code) (`EMFILE` or `EAGAIN` to retry later, say:
    /// `EAGAIN`, the process limit, is of kind [`WouldBlock`](io::ErrorKind::WouldBlock),
    /// and `EMFILE` of a kind std does not name yet).
    ///
    /// The exit and the pipes' end of file are separate events, in no set order: `on_exit`
    /// may run before the last output is read, and a pipe reaches end of file only when
    /// every process holding its other end has closed it, so a background descendant that
    /// inherited the child's stdout keeps it open after the child exits. A program that
    /// needs both waits for all three (as [`output`](Command::output) and
    /// [`stream_output`](Command::stream_output) do), and bounds the wait for the pipes
    /// after the exit: a capture's [`wait_delay`](Command::wait_delay), a
    /// [`Timer::once`](crate::Timer::once) started in `on_exit` that closes them, or a child
    /// in a group of its own whose leftovers [`terminate_group`](Process::terminate_group)
    /// ends. Closing a pipe drops what it holds unread: such a timer should leave a pipe the
    /// program paused ([`read_pause`](Pipe::read_pause)) alone until it resumes, as
    /// `wait_delay` does.
    ///
    /// A long-running child the program talks to over its stdio (a language server, a REPL
    /// behind an editor) needs no such bookkeeping: [`stream_output`](Command::stream_output)
    /// hands over its output as it comes and joins the exit with the ends of file, with
    /// [`Stdio::Handle`] of the read end of a [`Pipe::pair`] as its stdin for the requests,
    /// [`wait_delay`](Command::wait_delay) for a descendant that keeps the output open, and
    /// [`Process::pause_output`] for back-pressure.
    #[inline]
    pub fn spawn(
        &self,
        lp: &mut Loop,
        on_exit: impl FnOnce(&mut Loop, Process, io::Result<ExitStatus>) + 'static,
    ) -> io::Result<Child> {
        lp.spawn_command(self, Wiring::default(), Box::new(on_exit))
    }

    /// Starts the child on a new pty of `size`, as a terminal emulator or an `expect`-like
    /// tool does, and returns the master's [`Tty`](crate::Tty) handle with the [`Child`]:
    /// what the program writes to its terminal is read from the master, and what is written
    /// to the master (keystrokes, Ctrl-C as `\x03`) is its input.
    ///
    /// The steps of the recipe in [`controlling_terminal`](Command::controlling_terminal),
    /// in their order: the master is opened as a handle and given its size before the
    /// program starts (so that its first look at the size is right); each of the child's
    /// fds 0, 1 and 2 that the command does not name (with `stdin`, `stdout`, `stderr` or
    /// [`fd`](Command::fd)) is the pty's slave, the lowest of them its controlling
    /// terminal, in a session of its own; and the parent keeps no copy of the slave, so the
    /// master reaches end of file once the child's session is gone. fds the command names
    /// stay as set (`stderr(Stdio::Pipe)` keeps the program's errors apart from its
    /// terminal): it is an error to name all three. The child leads a session of its own,
    /// so a command with [`process_group`](Command::process_group),
    /// [`foreground`](Command::foreground) or a
    /// [`controlling_terminal`](Command::controlling_terminal) of its own is an error too.
    /// The command itself is not changed, and can start more children (but for a
    /// [`Stdio::Handle`], which moves to the first child, as with [`spawn`](Command::spawn)).
    ///
    /// The pty starts with the system's default settings (line editing, echo, the signal
    /// keys); [`spawn_on_pty_with`](Command::spawn_on_pty_with) changes them before the
    /// program starts. The guide [`programs_on_a_pty`](crate::guide::programs_on_a_pty)
    /// has a small `expect`-like tool, and what such a tool needs to know. A tool that
    /// relays a person's terminal to the program puts that terminal in
    /// [`TtyMode::Io`](crate::TtyMode::Io) (not `Raw`, which would turn the program's
    /// `\r\n` into `\r\r\n`).
    ///
    /// The child's exit and the master's end of file come in either order; a program that
    /// needs all of the output waits for both. The master is returned by this call, after
    /// `on_exit` was made: an exit callback that needs it finds it where the program keeps
    /// its state (an `Rc<Cell<Option<Tty>>>` set after the call, or
    /// [`Loop::set_data`](crate::Loop::set_data)); it runs no sooner than the loop's next
    /// iteration. On an error nothing is left: the master's handle is closed (in the loop's
    /// next close phase), and no child runs.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, ReadEvent, RunMode, WinSize};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "stty size; tty >/dev/null && echo on a terminal"]);
    /// let size = WinSize { rows: 30, cols: 100, ..WinSize::default() };
    /// let (master, _child) = cmd.spawn_on_pty(&mut lp, size, |lp, p, status| {
    ///     assert!(status.unwrap().success());
    ///     p.close(lp).unwrap();
    /// })?;
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let out = seen.clone();
    /// master.read_start(&mut lp, move |lp, m, ev| match ev {
    ///     ReadEvent::Data(d) => out.borrow_mut().extend_from_slice(d),
    ///     _ => m.close(lp).unwrap(),
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(&seen.borrow()[..], b"30 100\r\non a terminal\r\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_on_pty(
        &self,
        lp: &mut Loop,
        size: crate::WinSize,
        on_exit: impl FnOnce(&mut Loop, Process, io::Result<ExitStatus>) + 'static,
    ) -> io::Result<(crate::Tty, Child)> {
        self.spawn_on_pty_inner(lp, size, None::<fn(crate::Settings) -> crate::Settings>, on_exit)
    }

    /// [`spawn_on_pty`](Command::spawn_on_pty), with the pty's settings made by `settings`
    /// from its defaults before the program starts: echo off for an `expect`-like tool that
    /// sends passwords or does not want its input back among the output (changed through the
    /// master after the start, it races the program's first reads and writes), a raw mode
    /// for a program that should see every byte as it comes.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, ReadEvent, RunMode, WinSize};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "read line; echo \"got $line\""]);
    /// let (master, _child) =
    ///     cmd.spawn_on_pty_with(&mut lp, WinSize::default(), |s| s.with_echo(false), |lp, p, _| {
    ///         p.close(lp).unwrap();
    ///     })?;
    /// master.write(&mut lp, b"secret\n", |_, res| res.unwrap())?;
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let out = seen.clone();
    /// master.read_start(&mut lp, move |lp, m, ev| match ev {
    ///     ReadEvent::Data(d) => out.borrow_mut().extend_from_slice(d),
    ///     _ => m.close(lp).unwrap(),
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// // Only the program's own line: the input was not echoed.
    /// assert_eq!(&seen.borrow()[..], b"got secret\r\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_on_pty_with(
        &self,
        lp: &mut Loop,
        size: crate::WinSize,
        settings: impl FnOnce(crate::Settings) -> crate::Settings,
        on_exit: impl FnOnce(&mut Loop, Process, io::Result<ExitStatus>) + 'static,
    ) -> io::Result<(crate::Tty, Child)> {
        self.spawn_on_pty_inner(lp, size, Some(settings), on_exit)
    }

    fn spawn_on_pty_inner(
        &self,
        lp: &mut Loop,
        size: crate::WinSize,
        settings: Option<impl FnOnce(crate::Settings) -> crate::Settings>,
        on_exit: impl FnOnce(&mut Loop, Process, io::Result<ExitStatus>) + 'static,
    ) -> io::Result<(crate::Tty, Child)> {
        self.on_new_pty(lp, size, settings, |lp, cmd, _| cmd.spawn(lp, on_exit))
    }

    /// Makes a pty of `size` for a child of this command, and starts the child with
    /// `start`, given a copy of the command that has the slave as each of fds 0, 1 and 2 it
    /// leaves unset, the lowest of them the controlling terminal of a session of its own
    /// (see [`spawn_on_pty`](Command::spawn_on_pty)), and the master's handle. Returns the
    /// master's handle, and what `start` made; on an error, nothing is left (`start` leaves
    /// the master open).
    fn on_new_pty<T>(
        &self,
        lp: &mut Loop,
        size: crate::WinSize,
        settings: Option<impl FnOnce(crate::Settings) -> crate::Settings>,
        start: impl FnOnce(&mut Loop, &Command, crate::Tty) -> io::Result<T>,
    ) -> io::Result<(crate::Tty, T)>
    where
        T: StartedChild,
    {
        let on_pty = || format!("spawn `{}` on a pty", self.name());
        let Some(first) = (0..3).find(|t| !self.stdio.iter().any(|(n, _)| n == t)) else {
            return Err(invalid(format!(
                "{}: the command names fds 0, 1 and 2 itself, so none would be the terminal",
                on_pty()
            )));
        };
        if self.controlling_terminal.is_some() || self.process_group.is_some() || self.foreground.is_some() {
            return Err(invalid(format!(
                "{}: the child leads a session of its own there, with the pty as its controlling \
                 terminal: the command's own controlling_terminal, process_group or foreground \
                 cannot be combined with it",
                on_pty()
            )));
        }
        let (master, slave) = crate::tty::openpty().map_err(|e| context(e, on_pty()))?;
        if let Some(edit) = settings {
            let made = crate::Settings::of(slave.as_fd()).map(edit);
            made.and_then(|s| s.apply(slave.as_fd())).map_err(|e| context(e, on_pty()))?;
        }
        let master = crate::Tty::open(lp, master).map_err(|e| context(e, on_pty()))?;
        let sized = master.set_winsize(lp, size).map_err(|e| context(e, on_pty()));
        let started = sized.and_then(|()| {
            // A copy for this spawn, which closes the parent's slave when it drops.
            let mut cmd = self.try_clone().map_err(|e| context(e, on_pty()))?;
            cmd.fd(first, Stdio::Fd(slave));
            for t in first + 1..3 {
                if !self.stdio.iter().any(|(n, _)| *n == t) {
                    cmd.fd(t, Stdio::SameAs(first));
                }
            }
            cmd.controlling_terminal(first);
            start(lp, &cmd, master)
        });
        match started {
            Ok(made) => {
                lp.children_on_our_pty(made.process());
                Ok((master, made))
            }
            Err(e) => {
                let _ = master.close(lp);
                Err(e)
            }
        }
    }

    /// Starts the child with its stdout and stderr captured, as std's `output` does, and
    /// calls `cb` once: when the child has exited and the captured streams have reached end of
    /// file.
    /// Its stdin is `/dev/null` unless the command sets one (but not to a new pipe, which
    /// would have no owner: [`output_with_input`](Command::output_with_input) feeds one).
    /// stdout and stderr are captured unless the command sends them elsewhere, as with
    /// std's `output`: a stream set to anything but [`Stdio::Pipe`] ([`Stdio::Null`], a
    /// file as [`Stdio::Fd`], the program's own with [`Stdio::Inherit`] or
    /// [`Stdio::InheritFrom`], a handle, [`Stdio::Close`], or [`Stdio::SameAs`] a stream not
    /// captured) goes there, and its field of [`Output`] stays empty (stderr to a log file,
    /// stdout captured, say), with no pipe made for it; [`Stdio::PipeIn`], a pipe the child
    /// would read, is refused. `stderr(Stdio::SameAs(1))` captures both streams in
    /// `stdout`, in the order the child wrote them (`2>&1`).
    ///
    /// The returned [`Process`] handle can kill the child meanwhile, and closes itself once
    /// `cb` has returned (unless `cb` closed it): inside `cb` it still reaches what the child
    /// left running in its group, which [`terminate_group`](Process::terminate_group) ends
    /// gently (a `kill_group_on_drop` then leaves the group to it). Closing it yourself
    /// before `cb` abandons the capture: `cb` never
    /// runs, the capture's pipes close at once (a child still writing to them gets
    /// `SIGPIPE`, which ends it, or `EPIPE` where it ignores that), and the child is still
    /// reaped, killed first if the command says [`kill_on_drop`](Command::kill_on_drop).
    /// Errors to start come back here, as from [`spawn`](Command::spawn), and `cb` then
    /// never runs.
    /// A read error (rare: the streams are pipes) is what `cb` receives, in place of the
    /// output.
    ///
    /// The capture keeps `run` going until `cb` has run, whatever the
    /// [`set_ref`](Process::set_ref) of the returned process handle, except while its output is paused
    /// ([`Process::pause_output`]): then only the running child does, as a stopped read
    /// keeps nothing alive, so a program that resumes from outside the loop (another
    /// thread, through an [`Async`](crate::Async)) keeps that handle referenced meanwhile.
    /// The output is kept in memory: for a child that prints
    /// without bound, read its pipes yourself. Like std, this waits for end of file, so a
    /// background grandchild that keeps the streams open delays `cb` until it exits: bound
    /// that wait with [`wait_delay`](Command::wait_delay), and end what is left with a
    /// process group of the child's own ([`process_group(0)`](Command::process_group) and
    /// [`kill_group_on_drop`](Command::kill_group_on_drop), or [`Process::kill_group`]; a
    /// grandchild that started a session of its own is out of the group's reach).
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]).output(&mut lp, |_, out| {
    ///     let out = out.unwrap();
    ///     assert_eq!(out.status.code(), Some(3));
    ///     assert_eq!(out.stdout, b"out\n");
    ///     assert_eq!(out.stderr, b"err\n");
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert!(lp.handles().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn output(
        &self,
        lp: &mut Loop,
        cb: impl FnOnce(&mut Loop, io::Result<Output>) + 'static,
    ) -> io::Result<Process> {
        lp.command_output(self, None, None, Box::new(|lp, _, out| cb(lp, out)), None).map(|(p, _)| p)
    }

    /// Like [`output`](Command::output), with `input` fed to the child's stdin through a
    /// pipe, which then closes, so the child reads end of file after it (duct's
    /// `stdin_bytes`). The input is any bytes: a `Vec<u8>` moved in, or an `Rc<[u8]>`
    /// shared by many runs, which is not copied (see [`Pipe::write_shared`]). `cb` runs once
    /// the child has exited, the captured streams have ended and the input is written or
    /// refused.
    ///
    /// A child that exits, or closes its stdin, without reading all of `input` is not an
    /// error (as `yes | head` is not in a shell): the result reports its status. Any other
    /// failure to write is the result's error. The command must leave its stdin unset.
    /// That write fails with `EPIPE` only while `SIGPIPE` is ignored, as Rust programs start:
    /// a program that set it back to the default action is killed by it instead (see
    /// [`SIGPIPE`](crate#sigpipe)).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let result = Rc::new(RefCell::new(None));
    /// let r = result.clone();
    /// Command::new("sort").output_with_input(&mut lp, b"pear\napple\n", move |_, out| {
    ///     *r.borrow_mut() = Some(out);
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// let out = result.take().unwrap()?;
    /// assert!(out.status.success());
    /// assert_eq!(out.stdout, b"apple\npear\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn output_with_input(
        &self,
        lp: &mut Loop,
        input: impl AsRef<[u8]> + 'static,
        cb: impl FnOnce(&mut Loop, io::Result<Output>) + 'static,
    ) -> io::Result<Process> {
        if self.stdio.iter().any(|(target, _)| *target == 0) {
            return Err(invalid(format!(
                "spawn `{}`: output_with_input feeds the child's stdin; leave it unset",
                self.name()
            )));
        }
        let cb: OutputCb = Box::new(|lp, _, out| cb(lp, out));
        lp.command_output(self, Some(Box::new(input)), None, cb, None).map(|(p, _)| p)
    }

    /// Like [`output`](Command::output), handing the output to `on_data` as it comes
    /// instead of keeping it: memory stays bounded by the read cap however much the child
    /// prints. `on_data` gets each piece with the stream it came from, in order per stream;
    /// `on_done` runs once, when the child has exited and the streams it hands over have
    /// ended, with its status (or the first error). Both get the capture's process handle, as `spawn`'s exit
    /// callback does: `on_data` can pause the output with it, `on_done` read the child's
    /// [`resource_usage`](Process::resource_usage) or end what it left in its group. A child's stdin is `/dev/null` unless the command sets
    /// one (not to a new pipe: to feed it, give it the read end of a [`Pipe::pair`] as a
    /// [`Stdio::Handle`]).
    ///
    /// What goes for `output` goes here: the returned handle can kill the child and closes
    /// itself once `on_done` has returned (within it, it can still end the child's group
    /// gently); closed before `on_done` (from `on_data` too), it abandons the
    /// capture: `on_data` is not called again, `on_done` never runs, and the output pipes
    /// close at once (a child still writing then gets `SIGPIPE`, or `EPIPE`). Both callbacks
    /// may use the loop freely. For back-pressure (stop reading while the output cannot go
    /// anywhere, so that a child printing faster than it can be shown blocks instead of
    /// filling memory), pause and resume the capture with the returned handle's
    /// [`pause_output`](Process::pause_output) and [`resume_output`](Process::resume_output).
    /// To learn of the exit before the output has ended (a background grandchild holding
    /// it open), set [`wait_delay`](Command::wait_delay): `on_done` then comes that long
    /// after the exit at the latest, with a [`TimedOut`](io::ErrorKind::TimedOut) error
    /// that holds the status ([`OutputCut`]) if the output was cut.
    ///
    /// For a child to write to interactively, make a [`Pipe::pair`] and give the child its
    /// reading end as stdin ([`Stdio::Handle`]): the capture then leaves stdin to you, and
    /// its writes' callbacks, an `EPIPE` once the child is gone say, can come after
    /// `on_done`. The spawn takes that reading end; if it fails, both ends are still yours
    /// to close. A write still queued when the child exits fails with `EPIPE` (its end
    /// closed with it, unless a process it started holds it too), usually before `on_done`
    /// comes, since that waits for the end of the output; only one still queued when you
    /// close the writing end fails with `ECANCELED`.
    /// ([`output_with_input`](Command::output_with_input) feeds a fixed input and waits for
    /// it.)
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, OutputStream, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let lines = Rc::new(RefCell::new(String::new()));
    /// let l = lines.clone();
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "echo building; echo warning >&2; exit 0"]);
    /// cmd.stream_output(
    ///     &mut lp,
    ///     move |_, _process, which, bytes| {
    ///         let tag = if which == OutputStream::Stdout { "out" } else { "err" };
    ///         l.borrow_mut().push_str(&format!("{tag}: {}", String::from_utf8_lossy(bytes)));
    ///     },
    ///     |_, _process, status| assert!(status.unwrap().success()),
    /// )?;
    /// lp.run(RunMode::Default)?;
    /// assert!(lines.borrow().contains("out: building\n"));
    /// assert!(lines.borrow().contains("err: warning\n"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stream_output(
        &self,
        lp: &mut Loop,
        on_data: impl FnMut(&mut Loop, Process, OutputStream, &[u8]) + 'static,
        on_done: impl FnOnce(&mut Loop, Process, io::Result<ExitStatus>) + 'static,
    ) -> io::Result<Process> {
        let done = self.stream_done(on_done);
        lp.command_output(self, None, Some(Box::new(on_data)), done, None).map(|(p, _)| p)
    }

    /// Like [`output`](Command::output), with the child on a new pty of `size` (as
    /// [`spawn_on_pty`](Command::spawn_on_pty) starts it): what it writes to its terminal
    /// comes back in [`Output::stdout`], as a person at a terminal would have seen it. For a
    /// test runner or a CI log that wants a program's colours and its terminal-only output
    /// (progress bars, prompts), and for tests of terminal programs.
    ///
    /// - **What is captured.** Everything the terminal got: the program's stdout and
    ///   stderr, unless the command sets them elsewhere, in the order written, with the
    ///   terminal's line endings (`\r\n`, from the pty's default `onlcr`) and the echo of
    ///   any input written to it. `stderr(Stdio::Pipe)` captures stderr apart, in
    ///   [`Output::stderr`]; `stdout(Stdio::Pipe)` is an error, since the terminal is the
    ///   capture's stdout. The child's stdin is the terminal too, unless the command sets
    ///   one.
    /// - **The returned [`Tty`](crate::Tty)** is for the program's input and the
    ///   terminal's size ([`write`](crate::Tty::write), Ctrl-C as `\x03`,
    ///   [`set_winsize`](crate::Tty::set_winsize)); it does not read, since every byte of
    ///   output goes to the capture. A program that reads its terminal waits for input, as
    ///   at a real one: write it, or end it with Ctrl-D (`\x04`) at the start of a line
    ///   (as on any terminal, [`shutdown`](crate::Tty::shutdown) is refused, and
    ///   [`end`](crate::Tty::end) only waits for the queued writes); or give the command
    ///   `stdin(Stdio::Null)`, which leaves its stdout on the terminal. The handle is on a
    ///   copy of the master, and closes with the capture: after `cb` has returned, or when
    ///   the capture is abandoned; writes still queued then fail as cancelled
    ///   (`ECANCELED`). Closed sooner by you, it leaves the terminal up.
    /// - **When `cb` runs.** Once the child has exited and the terminal's output has ended,
    ///   which is when every process holding the terminal has let it go. The child leads
    ///   the terminal's session, and its exit hangs the terminal up for its process group,
    ///   which ends the descendants left there (`SIGHUP`) unless they ignore it; one that
    ///   does, or that moved to a group of its own, keeps the terminal and delays `cb` until
    ///   it exits, which [`wait_delay`](Command::wait_delay) bounds, as it bounds a pipe's.
    ///   What the child wrote before its exit is not lost to that race: the terminal keeps
    ///   it until read.
    /// - **The rest is as with `output`**: the returned [`Process`] kills the child, and
    ///   pauses and resumes the output; closing it before `cb` abandons the capture. The
    ///   terminal then hangs up, which sends the child, its session's leader, `SIGHUP` (and
    ///   its exit then sends one to the group it leaves in front); a child that ignores it
    ///   runs on, reaped when it exits, and keeps `run` going until then:
    ///   [`kill_on_drop`](Command::kill_on_drop) or
    ///   [`kill_group_on_drop`](Command::kill_group_on_drop) end it with the abandon. `cb`
    ///   never runs after an error to start; [`timeout`](Command::timeout),
    ///   [`output_limit`](Command::output_limit) (which counts the terminal's bytes, each
    ///   `\r` of its line ends included) and [`record_usage`](Command::record_usage)
    ///   apply. The child leads a session of its own,
    ///   so a command with a [`process_group`](Command::process_group),
    ///   [`foreground`](Command::foreground) or
    ///   [`controlling_terminal`](Command::controlling_terminal) is an error, as with
    ///   `spawn_on_pty`. The pty has the system's default settings: for others, read the
    ///   master of [`spawn_on_pty_with`](Command::spawn_on_pty_with) yourself.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode, WinSize};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "test -t 1 && echo on a terminal; stty size; echo oops >&2"]);
    /// let size = WinSize { rows: 30, cols: 100, ..WinSize::default() };
    /// cmd.output_on_pty(&mut lp, size, |_, out| {
    ///     let out = out.unwrap();
    ///     assert!(out.status.success());
    ///     assert_eq!(out.stdout, b"on a terminal\r\n30 100\r\noops\r\n");
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// // The capture's handles closed themselves.
    /// assert!(lp.handles().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn output_on_pty(
        &self,
        lp: &mut Loop,
        size: crate::WinSize,
        cb: impl FnOnce(&mut Loop, io::Result<Output>) + 'static,
    ) -> io::Result<(crate::Tty, Process)> {
        self.capture_on_pty(lp, size, None, Box::new(|lp, _, out| cb(lp, out)))
    }

    /// [`stream_output`](Command::stream_output) with the child on a new pty of `size`, as
    /// [`output_on_pty`](Command::output_on_pty) runs it: `on_data` gets what the terminal
    /// got, as [`OutputStream::Stdout`] (and stderr apart, where the command sets it to
    /// [`Stdio::Pipe`]), and `on_done` comes once the child has exited and the terminal's
    /// output has ended. For a program that shows another's terminal output as it comes, as
    /// `script` or a CI runner's live log does, and relays input through the returned
    /// [`Tty`](crate::Tty) (which closes with the capture: after `on_done`, or when the
    /// capture is abandoned). [`Process::pause_output`] holds the output back: the program
    /// then blocks once the terminal's buffer is full. As with `stream_output`, nothing is
    /// kept, and [`output_limit`](Command::output_limit) does not apply.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, RunMode, WinSize};
    ///
    /// let mut lp = Loop::new()?;
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let out = seen.clone();
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "read name; echo \"hello, $name\""]);
    /// let (input, _process) = cmd.stream_output_on_pty(
    ///     &mut lp,
    ///     WinSize::default(),
    ///     move |_, _, _, bytes| out.borrow_mut().extend_from_slice(bytes),
    ///     |_, _, status| assert!(status.unwrap().success()),
    /// )?;
    /// input.write(&mut lp, b"world\n", |_, res| res.unwrap())?;
    /// lp.run(RunMode::Default)?;
    /// // The echo of the input, then the program's line.
    /// assert_eq!(&seen.borrow()[..], b"world\r\nhello, world\r\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stream_output_on_pty(
        &self,
        lp: &mut Loop,
        size: crate::WinSize,
        on_data: impl FnMut(&mut Loop, Process, OutputStream, &[u8]) + 'static,
        on_done: impl FnOnce(&mut Loop, Process, io::Result<ExitStatus>) + 'static,
    ) -> io::Result<(crate::Tty, Process)> {
        let done = self.stream_done(on_done);
        self.capture_on_pty(lp, size, Some(Box::new(on_data)), done)
    }

    /// `output_on_pty` and `stream_output_on_pty`.
    fn capture_on_pty(
        &self,
        lp: &mut Loop,
        size: crate::WinSize,
        sink: Option<OutputSink>,
        cb: OutputCb,
    ) -> io::Result<(crate::Tty, Process)> {
        if matches!(self.stdio.iter().find(|(t, _)| *t == 1), Some((_, Stdio::Pipe))) {
            return Err(invalid(format!(
                "spawn `{}` on a pty: the terminal's output is the capture's stdout; leave stdout unset \
                 (or send it elsewhere)",
                self.name()
            )));
        }
        let no_settings = None::<fn(crate::Settings) -> crate::Settings>;
        let (_master, (process, input)) = self.on_new_pty(lp, size, no_settings, |lp, cmd, master| {
            lp.command_output(cmd, None, sink, cb, Some(master))
        })?;
        // (Made with a terminal, a capture has its input handle.)
        let input = input.ok_or_else(|| io::Error::other("a pty capture without its input handle"))?;
        Ok((input, process))
    }

    /// `stream_output`'s `on_done`, as a capture's callback: a timeout or a cut is an
    /// error that holds the status.
    fn stream_done(
        &self,
        on_done: impl FnOnce(&mut Loop, Process, io::Result<ExitStatus>) + 'static,
    ) -> OutputCb {
        let delay = self.wait_delay.unwrap_or_default();
        Box::new(move |lp, p, out| {
            // (The deadline that ended it: the command's timeout, or a later terminate_after.)
            let after = lp.process_timed_out(p.0).unwrap_or_default();
            on_done(
                lp,
                p,
                out.and_then(|o| match (o.timed_out, o.cut) {
                    (true, _) => {
                        Err(io::Error::new(io::ErrorKind::TimedOut, RunTimedOut { status: o.status, after }))
                    }
                    (false, true) => {
                        let delay = (!o.cut_requested).then_some(delay);
                        Err(io::Error::new(io::ErrorKind::TimedOut, OutputCut { status: o.status, delay }))
                    }
                    (false, false) => Ok(o.status),
                }),
            )
        })
    }

    fn name(&self) -> String {
        printable(self.program.as_bytes())
    }

    /// The parent death signal must be able to reach the child: not ignored, and not a stop
    /// signal (caught until the exec, and which would only stop the child).
    #[cold]
    fn check_parent_death_signal(&self) -> io::Result<()> {
        let sig = self.parent_death_signal;
        if cfg!(target_os = "macos") {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "spawn `{}`: parent_death_signal: macOS has no signal on a parent's death",
                    self.name()
                ),
            ));
        }
        let why = if self.ignored_signals & (1 << (sig - 1)) != 0 {
            "the child ignores that signal (ignore_signal)"
        } else if [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig) {
            "a stop signal would only stop the child"
        } else {
            return Ok(());
        };
        Err(invalid(format!("spawn `{}`: parent_death_signal({sig}): {why}", self.name())))
    }

    /// The bad input found in this command, if any, as spawn reports it; else the program
    /// as a C string.
    fn check_input(&self) -> io::Result<&CStr> {
        // The settings that can be wrong are rare: their checks, and the messages' code, out
        // of line (inline, every spawn saved and restored registers for them, some 20
        // instructions).
        if self.invalid.is_some()
            || self.parent_death_signal != 0
            || self.controlling_terminal.is_some()
            || (self.setsid && self.process_group.is_some())
        {
            self.check_settings()?;
        } else {
            // (A check added to `check_settings` needs its setting in the test above.)
            debug_assert!(self.check_settings().is_ok());
        }
        self.program.as_c_str().map_err(|why| self.input_error(why))
    }

    #[cold]
    #[inline(never)]
    fn input_error(&self, why: &str) -> io::Error {
        invalid(format!("spawn `{}`: {why}", self.name()))
    }

    /// `check_input`'s checks of the settings, in its order.
    #[cold]
    #[inline(never)]
    fn check_settings(&self) -> io::Result<()> {
        if let Some(why) = &self.invalid {
            return Err(invalid(format!("spawn `{}`: {why}", self.name())));
        }
        if self.parent_death_signal != 0 {
            self.check_parent_death_signal()?;
        }
        if self.controlling_terminal.is_some() && (self.process_group.is_some() || self.foreground.is_some())
        {
            return Err(invalid(format!(
                "spawn `{}`: controlling_terminal starts a session, whose leader leads its own group: \
                 process_group and foreground cannot be combined with it (its group is in front of \
                 that terminal from the start)",
                self.name()
            )));
        }
        if self.setsid && self.process_group.is_some() {
            return Err(invalid(format!(
                "spawn `{}`: setsid and process_group cannot be combined (a session leader leads its own group)",
                self.name()
            )));
        }
        if let Some(fd) = self.controlling_terminal {
            if fd > 2 && !self.stdio.iter().any(|(t, _)| *t == fd) {
                return Err(invalid(format!(
                    "spawn `{}`: controlling_terminal: the child has no fd {fd} (set it with Command::fd)",
                    self.name()
                )));
            }
        }
        Ok(())
    }

    /// [`kill_group_on_drop`](Command::kill_group_on_drop) must not reach the loop's own group:
    /// `group` is the one the spawn puts the child in.
    #[inline]
    fn check_group_kill(&self, group: Option<i32>) -> io::Result<()> {
        if self.on_drop == OnDrop::KillGroup
            && !self.setsid
            && group.is_none_or(|g| g != 0 && g == sys::process_group())
        {
            return Err(invalid(format!(
                "spawn `{}`: kill_group_on_drop needs a process group other than the loop's (process_group, setsid or Pipeline::process_group)",
                self.name()
            )));
        }
        Ok(())
    }

    /// The `PATH` the child's program is searched in: `None` for the parent's own.
    fn child_path(&self) -> Option<OsString> {
        let env = self.env.as_ref()?;
        match env.vars.get(OsStr::new("PATH")) {
            Some(Some(p)) => Some(p.clone()),
            Some(None) => Some(spawn::DEFAULT_PATH.into()),
            None if env.clear => Some(spawn::DEFAULT_PATH.into()),
            None => None,
        }
    }

    /// The child's environment block, when it differs from the parent's.
    fn env_block(&self) -> Option<Vec<CString>> {
        let env = self.env.as_ref()?;
        let entry = |k: &OsStr, v: &OsStr| {
            // (Room for the NUL too: `CString::new` would reallocate to add it.)
            let mut s = Vec::with_capacity(k.len() + 1 + v.len() + 1);
            s.extend_from_slice(k.as_bytes());
            s.push(b'=');
            s.extend_from_slice(v.as_bytes());
            // Checked by the setters; the parent's own variables cannot hold a NUL.
            CString::new(s).ok()
        };
        let mut block = Vec::new();
        if !env.clear {
            let inherited = std::env::vars_os();
            block.reserve(inherited.size_hint().0 + env.vars.len());
            block.extend(
                inherited.filter(|(k, _)| !env.vars.contains_key(k)).filter_map(|(k, v)| entry(&k, &v)),
            );
        }
        block.extend(env.vars.iter().filter_map(|(k, v)| entry(k, v.as_deref()?)));
        Some(block)
    }

    /// What child fd `n` is set to, through a chain of [`Stdio::SameAs`].
    fn stdio_of(&self, mut n: RawFd) -> Option<&Stdio> {
        for _ in 0..=self.stdio.len() {
            match self.stdio.iter().find(|(t, _)| *t == n).map(|(_, s)| s)? {
                Stdio::SameAs(m) => n = *m,
                s => return Some(s),
            }
        }
        None
    }

    /// Turns a platform spawn error into one that names the program and the failed step.
    fn spawn_error(&self, e: SpawnError, fds: &[FdMapping], group: Option<i32>) -> io::Error {
        let prog = self.name();
        let cwd = || self.cwd.as_ref().map(|(p, _)| p.display().to_string()).unwrap_or_default();
        let why = match e.stage {
            Stage::Chdir => format!("spawn `{prog}`: cannot enter directory `{}`", cwd()),
            // posix_spawn reports one number for every step: tell a bad directory apart.
            Stage::Spawn
                if self.cwd.as_ref().is_some_and(|(dir, _)| !fd::can_enter_dir(dir))
                    && matches!(
                        e.error.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES)
                    ) =>
            {
                format!("spawn `{prog}`: cannot enter directory `{}`", cwd())
            }
            Stage::SetUid => format!("spawn `{prog}`: cannot switch to user id {}", self.uid.unwrap_or(0)),
            Stage::SetGid => format!("spawn `{prog}`: cannot switch to group id {}", self.gid.unwrap_or(0)),
            Stage::SetGroups => format!(
                "spawn `{prog}`: cannot set the supplementary groups ({} of them)",
                self.groups.as_ref().map_or(0, Vec::len)
            ),
            Stage::Session => format!("spawn `{prog}`: cannot start a session"),
            Stage::ParentDeathSignal => format!(
                "spawn `{prog}`: cannot ask for signal {} on the parent's death",
                self.parent_death_signal
            ),
            Stage::Foreground => {
                format!("spawn `{prog}`: cannot give the terminal to the child's process group")
            }
            Stage::ControllingTerminal(n) => format!(
                "spawn `{prog}`: cannot make the terminal on child fd {n} the controlling terminal of its \
                 session (the fd must be open, a terminal, readable, and no other session's controlling \
                 terminal)"
            ),
            Stage::Group => format!("spawn `{prog}`: cannot join process group {}", group.unwrap_or(0)),
            Stage::Fd(n) => match (self.stdio_of(n), fds.iter().find(|m| m.target == n).map(|m| m.source)) {
                // Sources of the spawn's own making: their numbers would tell the caller nothing.
                (Some(Stdio::Null), _) => format!("spawn `{prog}`: child fd {n} (/dev/null)"),
                (Some(Stdio::Pipe | Stdio::PipeIn), _) => {
                    format!("spawn `{prog}`: child fd {n} (a new pipe)")
                }
                (_, Some(Source::Fd(s))) if s != n => {
                    format!("spawn `{prog}`: child fd {n} from parent fd {s}")
                }
                _ => format!("spawn `{prog}`: child fd {n} (the parent's fd {n})"),
            },
            Stage::FdRoom(n) => format!(
                "spawn `{prog}`: child fd {n}: its source must first move above fd {}, the highest \
                 child fd, and no number there is free (raise the open-file limit, or use lower child \
                 fd numbers)",
                fds.iter().map(|m| m.target).max().unwrap_or(n)
            ),
            // posix_spawn reports its setpgid's refusal (a group of another session's) as it
            // does an exec's: name the group, the likely cause.
            Stage::Spawn
                if group.is_some_and(|g| g != 0)
                    && matches!(e.error.raw_os_error(), Some(libc::EPERM | libc::ESRCH)) =>
            {
                format!("spawn `{prog}` into process group {}", group.unwrap_or(0))
            }
            Stage::Spawn | Stage::Exec if e.error.raw_os_error() == Some(libc::E2BIG) => {
                match self.oversized_exec_string() {
                    Some((what, len, max)) => format!(
                        "spawn `{prog}`: {what} is {len} bytes, and the system takes at most {max} for one \
                         argument or environment entry"
                    ),
                    None => format!("spawn `{prog}`: its arguments and environment together are too large"),
                }
            }
            Stage::Spawn | Stage::Exec if e.error.raw_os_error() == Some(libc::ENOENT) => {
                match self.missing_interpreter() {
                    Some(interp) => format!(
                        "spawn `{prog}`: its interpreter `{interp}` (from its `#!` line) was not found"
                    ),
                    None => format!("spawn `{prog}`"),
                }
            }
            Stage::Setup | Stage::Spawn | Stage::Exec => format!("spawn `{prog}`"),
        };
        context(e.error, why)
    }

    /// Why the exec said `E2BIG`, where one string alone is over the system's limit for one
    /// (`one_exec_string_bytes_max`): which it is (the first), its length with its NUL, and
    /// the limit. `None` where the whole is too large but no one string is.
    #[cold]
    fn oversized_exec_string(&self) -> Option<(String, usize, usize)> {
        let max = spawn::one_exec_string_bytes_max()?;
        let over = |bytes: &[u8]| bytes.len() + 1 > max;
        let argv0 = self.arg0.as_ref().map_or(self.program.as_bytes(), |a| a.as_bytes());
        if over(argv0) {
            return Some(("argument 0".into(), argv0.len() + 1, max));
        }
        if let Some((i, a)) = self.args.iter().enumerate().find(|(_, a)| over(a.as_bytes())) {
            return Some((format!("argument {}", i + 1), a.as_bytes().len() + 1, max));
        }
        let env = self.env_block().unwrap_or_else(|| {
            std::env::vars_os()
                .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
                .collect()
        });
        let entry = env.iter().find(|e| over(e.as_bytes()))?;
        let name = entry.as_bytes().split(|&b| b == b'=').next().unwrap_or_default();
        Some((format!("environment variable `{}`", printable(name)), entry.as_bytes().len() + 1, max))
    }

    /// Why the exec of a program file that exists said `ENOENT`: the interpreter its `#!`
    /// line names is missing. `None` for a program found through `PATH` (which file was
    /// tried is not known here), a file that is not there, or one without such a line.
    #[cold]
    fn missing_interpreter(&self) -> Option<String> {
        use std::io::Read;
        let path = Path::new(OsStr::from_bytes(self.program.as_bytes()));
        if !path.as_os_str().as_bytes().contains(&b'/') || !path.is_file() {
            return None;
        }
        let mut head = [0u8; 256];
        let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
        let line = head[..n].strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
        let interp = line.split(|b| b.is_ascii_whitespace()).find(|w| !w.is_empty())?;
        Some(printable(interp))
    }
}

// ----- what spawn returns -------------------------------------------------------------------

/// What a start on a new pty made ([`Command::on_new_pty`]): its child's handle.
trait StartedChild {
    fn process(&self) -> Process;
}

impl StartedChild for Child {
    fn process(&self) -> Process {
        self.process
    }
}

impl StartedChild for (Process, Option<crate::Tty>) {
    fn process(&self) -> Process {
        self.0
    }
}

/// A started child: its [`Process`] handle and the loop's ends of the pipes it was given.
///
/// The pipe handles are ids, not owners: dropping a `Child` closes nothing. A pipe that is
/// neither read nor closed stays open, and a child that fills it (64 KiB on Linux) blocks
/// there for good, which keeps the loop running. Read each pipe, or close it (a child
/// writing to a closed pipe gets `SIGPIPE`, or `EPIPE` where it ignores that), or ask for
/// [`Stdio::Null`] instead.
#[derive(Debug)]
pub struct Child {
    /// The process handle.
    pub process: Process,
    /// The loop's end of the child's stdin, for [`Stdio::Pipe`] on fd 0.
    pub stdin: Option<Pipe>,
    /// The loop's end of the child's stdout, for [`Stdio::Pipe`] on fd 1.
    pub stdout: Option<Pipe>,
    /// The loop's end of the child's stderr, for [`Stdio::Pipe`] on fd 2.
    pub stderr: Option<Pipe>,
    /// The loop's ends of pipes on fds above 2, by the child's fd number.
    pub pipes: Vec<(RawFd, Pipe)>,
}

impl Child {
    /// Every pipe handle of this child (stdin, stdout, stderr, then the extra ones).
    pub fn all_pipes(&self) -> impl Iterator<Item = Pipe> + '_ {
        self.stdin
            .iter()
            .chain(&self.stdout)
            .chain(&self.stderr)
            .copied()
            .chain(self.pipes.iter().map(|p| p.1))
    }
}

typed_handle!(
    /// A child process the loop spawned and will reap (see [the module docs](crate::process)).
    ///
    /// It is active, and keeps [`RunMode::Default`](crate::RunMode::Default) running, until
    /// the child exits; then its exit callback runs. Close it afterwards. Closing it earlier
    /// drops the exit callback, and the loop still reaps the child.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode, signal::SIGTERM};
    ///
    /// let mut lp = Loop::new()?;
    /// let child = Command::new("sleep").arg("100").spawn(&mut lp, |lp, p, status| {
    ///     assert_eq!(status.unwrap().signal(), Some(SIGTERM));
    ///     p.close(lp).unwrap();
    /// })?;
    /// child.process.kill(&mut lp, SIGTERM)?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Process,
    HandleKind::Process
);

type ExitCb = Box<dyn FnOnce(&mut Loop, Process, io::Result<ExitStatus>)>;

/// A process handle's state, kept small enough to sit in its slot without a box of its own.
pub(crate) struct ProcessState {
    on_exit: Option<ExitCb>,
    pid: Pid,
    /// The child's entry in the loop's table while it runs; `NO_CHILD` afterwards.
    child_key: u32,
    /// The process group `kill_group` signals; 0 when the child shares the loop's.
    group: Pid,
    /// After exit, the pidfd of a child that led its group stays here: it can still signal
    /// that group. Other children's close at the reap.
    #[cfg(target_os = "linux")]
    pidfd: Option<OwnedFd>,
    /// How the child ended (see `pack_status`), once `reaped` and `status_known`.
    status: i32,
    reaped: bool,
    status_known: bool,
    leads_group: bool,
    on_drop: OnDrop,
}

type CloseHook = Box<dyn FnOnce(&mut Loop)>;
/// What pausing (`true`) or resuming a capture's output does besides the pipes.
type FlowHook = Box<dyn FnMut(&mut Loop)>;

/// What to add to the error for a `Stdio::Handle` that is closing or gone: most likely an
/// earlier spawn moved it into its child.
fn moved_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotConnected | io::ErrorKind::NotFound => {
            " (a Stdio::Handle moves its handle into the child: was it given to an earlier spawn?)"
        }
        _ => "",
    }
}

/// SIGKILL to an unreaped child of the loop's (through its pidfd where it has one), for
/// `kill_on_drop` and `kill_group_on_drop`; a failure is logged and returned.
fn kill_child(entry: &ChildEntry, loop_id: u32) -> io::Result<()> {
    let res = match &entry.watch {
        #[cfg(target_os = "linux")]
        Watch::Pidfd(fd) => sys::pidfd_send_signal(fd.as_fd(), libc::SIGKILL, false),
        #[cfg(target_os = "linux")]
        Watch::Gone => Err(os(libc::ESRCH)),
        _ => sys::kill(entry.pid, libc::SIGKILL),
    };
    if let Err(e) = &res {
        log::debug!("loop {loop_id}: SIGKILL to {}: {e}", entry.pid);
    }
    res
}

/// Sends `signal` to process group `pgid`, which a child of ours leads (`leads_group`) or
/// joined: through the child's pidfd where it leads and the kernel knows the flag (Linux
/// 6.9), else by number. Refuses the loop's own group (0 stands for it too).
#[cold]
fn signal_group(pgid: Pid, leads_group: bool, pidfd: Option<BorrowedFd<'_>>, signal: i32) -> io::Result<()> {
    if pgid == 0 {
        return Err(invalid(
            "cannot signal the child's process group: the child shares the loop's; spawn it with \
             process_group(0) or setsid",
        ));
    }
    if pgid == sys::process_group() {
        return Err(invalid("cannot signal the child's process group: it is the loop's own"));
    }
    #[cfg(target_os = "linux")]
    if let (true, Some(fd)) = (leads_group, pidfd) {
        match sys::pidfd_send_signal(fd, signal, true) {
            // Before Linux 6.9 the kernel does not know the flag (and without the call,
            // ENOSYS): by number below.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
            other => return other,
        }
    }
    let _ = (leads_group, pidfd);
    sys::kill_group(pgid, signal)
}

/// A process group named for later, independently of the handle of the child that led it
/// ([`Process::terminate_group`]): its number, and on Linux a duplicate of the leader's
/// pidfd, which names the group race-free on 6.9 and later.
struct GroupTarget {
    pgid: Pid,
    leads_group: bool,
    #[cfg(target_os = "linux")]
    pidfd: Option<OwnedFd>,
}

impl GroupTarget {
    fn signal(&self, signal: i32) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        let pidfd = self.pidfd.as_ref().map(|fd| fd.as_fd());
        #[cfg(not(target_os = "linux"))]
        let pidfd = None;
        signal_group(self.pgid, self.leads_group, pidfd, signal)
    }
}

/// What closing a [`Process`] handle (or dropping its loop) does to a child still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnDrop {
    Nothing,
    KillChild,
    KillGroup,
}

const _: () = assert!(size_of::<ProcessState>() <= 40, "a bigger ProcessState grows every slot");

const NO_CHILD: u32 = u32::MAX;

fn pack_status(st: ExitStatus) -> i32 {
    match st {
        ExitStatus::Exited(code) => code & 0xff,
        ExitStatus::Signaled { signal, core_dumped } => {
            0x100 | (i32::from(core_dumped) << 9) | (signal << 10)
        }
    }
}

fn unpack_status(raw: i32) -> ExitStatus {
    if raw & 0x100 == 0 {
        ExitStatus::Exited(raw & 0xff)
    } else {
        ExitStatus::Signaled { signal: raw >> 10, core_dumped: raw & 0x200 != 0 }
    }
}

impl ProcessState {
    fn status(&self) -> Option<ExitStatus> {
        (self.reaped && self.status_known).then(|| unpack_status(self.status))
    }

    /// Reaped, its exit callback gone, and no pidfd kept (a group leader's): its close has
    /// nothing to stop, given no extras and no escalation (`Loop::close_handle`). It is
    /// inactive: `child_finish` made it so at the reap.
    #[inline]
    pub(crate) fn closes_as_is(&self) -> bool {
        #[cfg(target_os = "linux")]
        let no_pidfd = self.pidfd.is_none();
        #[cfg(not(target_os = "linux"))]
        let no_pidfd = true;
        self.child_key == NO_CHILD && self.reaped && self.on_exit.is_none() && no_pidfd
    }

    fn child_key(&self) -> Option<usize> {
        (self.child_key != NO_CHILD).then_some(self.child_key as usize)
    }
}

impl Process {
    /// The child's process id.
    pub fn pid(self, lp: &Loop) -> io::Result<u32> {
        Ok(lp.process_ref(self.0)?.pid as u32)
    }

    /// How the child ended, once it has been reaped.
    pub fn exit_status(self, lp: &Loop) -> io::Result<Option<ExitStatus>> {
        Ok(lp.process_ref(self.0)?.status())
    }

    /// Whether the command's [`timeout`](Command::timeout), or a deadline set with
    /// [`terminate_after`](Self::terminate_after), ended the child: it was still
    /// running when the time was up, and was sent `SIGTERM` (its group, where it leads one).
    /// Known from then on, in the exit callback too, until the handle closes. Check the
    /// status as well: a child that exits of its own accord just as the time is up can be
    /// told timed out.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sleep");
    /// cmd.arg("10").timeout(Duration::from_millis(20), Duration::from_secs(1));
    /// cmd.spawn(&mut lp, |lp, p, status| {
    ///     assert!(p.timed_out(lp).unwrap());
    ///     assert_eq!(status.unwrap().signal(), Some(evloop::signal::SIGTERM));
    ///     p.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn timed_out(self, lp: &Loop) -> io::Result<bool> {
        lp.process_ref(self.0)?;
        Ok(lp.process_timed_out(self.0).is_some())
    }

    /// What the child used, for a command with [`Command::record_usage`]: `None` until it
    /// has been reaped (in its exit callback and later, until the handle closes, it is
    /// there), and also where the reap failed and so told nothing. A command without
    /// `record_usage` gets an `InvalidInput` error, as the figures were not kept.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let child = Command::new("true").record_usage(true).spawn(&mut lp, |lp, p, _| {
    ///     assert!(p.resource_usage(lp).unwrap().is_some());
    /// })?;
    /// assert_eq!(child.process.resource_usage(&lp)?, None); // still running
    /// lp.run(RunMode::Default)?;
    /// child.process.close(&mut lp)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn resource_usage(self, lp: &Loop) -> io::Result<Option<ResourceUsage>> {
        lp.process_ref(self.0)?;
        match lp.children.extras.get(&self.0.key).map(|x| &x.usage) {
            Some(Usage::Known(usage)) => Ok(Some(*usage)),
            Some(Usage::Awaited) => Ok(None),
            Some(Usage::NotAsked) | None => Err(invalid(
                "the child's resource usage was not recorded: set Command::record_usage(true) before the spawn",
            )),
        }
    }

    /// Whether the child has exited: reaped, or exited with its exit not yet handled by the
    /// loop, whose exit callback then comes in a later iteration all the same (this does not
    /// reap it). What a timeout that fires in the same iteration as the exit asks before it
    /// calls the child timed out: [`exit_status`](Self::exit_status) is `None` until the exit
    /// is handled, and [`kill`](Self::kill) still reaches an exited child not yet reaped.
    ///
    /// ```
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let child = Command::new("sleep").arg("100").spawn(&mut lp, |lp, p, status| {
    ///     assert!(p.has_exited(lp).unwrap());
    ///     assert!(status.unwrap().signal().is_some());
    ///     p.close(lp).unwrap();
    /// })?;
    /// assert!(!child.process.has_exited(&lp)?);
    /// child.process.kill(&mut lp, evloop::signal::SIGKILL)?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn has_exited(self, lp: &Loop) -> io::Result<bool> {
        let st = lp.process_ref(self.0)?;
        if st.reaped || st.child_key().is_some_and(|k| lp.child_gone(k)) {
            return Ok(true);
        }
        match sys::has_exited(st.pid) {
            // Not ours to wait for any more: the kernel reaped it (`SIGCHLD` ignored on
            // macOS and FreeBSD).
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => Ok(true),
            other => other,
        }
    }

    /// Sends `signal` to the child (0 checks that it is not reaped yet: a child that has
    /// exited, but whose exit the loop has not handled, still passes). Reaches only this child:
    /// through its pidfd on Linux, elsewhere by a pid that nobody but the loop can reap.
    /// After the child was reaped, fails with `ESRCH`. Does not wait: the exit callback
    /// follows when the child dies.
    ///
    /// One exception on macOS and FreeBSD: in a program that set `SIGCHLD` to `SIG_IGN` (see
    /// [Reaping](crate::process#reaping-and-the-loops-ownership-of-its-children)), the
    /// kernel reaps the child itself, and between its exit and the loop hearing of it a
    /// signal sent by pid could reach a new process that took the number.
    pub fn kill(self, lp: &mut Loop, signal: i32) -> io::Result<()> {
        lp.process_kill(self.0, signal, false)
    }

    /// Ends the child gently: `SIGTERM` now (with `SIGCONT`, so that a stopped child acts on
    /// it), then `SIGKILL` after `grace` if it has not exited by then, as service managers
    /// do. Both reach only this child, as [`kill`](Self::kill) does; fails with `ESRCH` after
    /// the child was reaped. The exit callback follows when the child dies.
    ///
    /// The grace counts from the call: the loop's clock is read afresh
    /// ([`Loop::update_time`]), so slow work earlier in the callback does not use it up.
    /// The escalation waits in an internal timer that does not keep the loop alive (the
    /// child does, while its handle is referenced), and goes as soon as the child is reaped
    /// or the handle closes: closing it first leaves the child to
    /// [`kill_on_drop`](Command::kill_on_drop). Calling `terminate` again sends `SIGTERM`
    /// again and keeps the first deadline. For a whole group, see
    /// [`terminate_group`](Self::terminate_group).
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Command, Loop, RunMode, signal::SIGTERM};
    ///
    /// let mut lp = Loop::new()?;
    /// let child = Command::new("sleep").arg("100").spawn(&mut lp, |lp, p, status| {
    ///     // It heeded SIGTERM: no SIGKILL came.
    ///     assert_eq!(status.unwrap().signal(), Some(SIGTERM));
    ///     p.close(lp).unwrap();
    /// })?;
    /// child.process.terminate(&mut lp, Duration::from_secs(5))?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn terminate(self, lp: &mut Loop, grace: Duration) -> io::Result<()> {
        self.kill(lp, libc::SIGTERM)?;
        let _ = self.kill(lp, libc::SIGCONT);
        // A second call keeps the first deadline.
        if lp.children.extras.get(&self.0.key).is_some_and(|x| x.escalation.is_some()) {
            return Ok(());
        }
        // The grace counts from now, not from the iteration's cached time, which a slow
        // callback before this call may have left far behind (it would be spent already).
        lp.update_time();
        let escalation = crate::Timer::once(lp, grace, move |lp| {
            lp.process_take_escalation(self.0);
            // (The reap and the close cancel this timer, so the child still runs.)
            if let Err(e) = self.kill(lp, libc::SIGKILL) {
                log::debug!("terminate: SIGKILL after the grace period: {e}");
            }
        })?;
        escalation.set_ref(lp, false)?;
        lp.slot_mut(escalation.id(), HandleKind::Timer)?.flags.insert(Flags::INTERNAL);
        lp.children.extras.entry(self.0.key).or_default().escalation = Some(escalation);
        Ok(())
    }

    /// Ends the child gently if it still runs `after` from now, as a command's
    /// [`timeout`](Command::timeout) does from the spawn: `SIGTERM`, then `SIGKILL` once
    /// `grace` is over, to its group where it leads one
    /// ([`terminate_group`](Self::terminate_group)), else to it alone
    /// ([`terminate`](Self::terminate)); [`timed_out`](Self::timed_out) then says so. For a
    /// worker asked to stop by the end of its input (close its stdin, then give it a
    /// second), or a job given a deadline once it started. The child's exit and the
    /// handle's close cancel it; it keeps nothing alive. Fails with `ESRCH` once the child
    /// was reaped.
    ///
    /// A later call, or a command's timeout, is replaced: the last deadline set counts,
    /// until it has come. Once it has, `SIGTERM` went and the grace period runs: a later
    /// call sends `SIGTERM` again when its time comes, and leaves the `SIGKILL` at the end
    /// of the first grace period, as a second `terminate` does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Command, Loop, RunMode, Stdio};
    ///
    /// let mut lp = Loop::new()?;
    /// // A worker that goes on after the end of its input.
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "cat >/dev/null; exec sleep 10"]).stdin(Stdio::Pipe);
    /// let child = cmd.spawn(&mut lp, |lp, p, status| {
    ///     assert!(p.timed_out(lp).unwrap());
    ///     assert_eq!(status.unwrap().signal(), Some(evloop::signal::SIGTERM));
    ///     p.close(lp).unwrap();
    /// })?;
    /// child.stdin.unwrap().close(&mut lp)?;
    /// child.process.terminate_after(&mut lp, Duration::from_millis(20), Duration::from_secs(1))?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn terminate_after(self, lp: &mut Loop, after: Duration, grace: Duration) -> io::Result<()> {
        lp.open_slot_mut(self.0, HandleKind::Process)?;
        if lp.process_ref(self.0)?.reaped {
            return Err(os(libc::ESRCH));
        }
        lp.process_start_timeout(self.0, after, grace)
    }

    /// Ends the child's whole process group gently, as [`terminate`](Self::terminate) ends
    /// the child: `SIGTERM` and `SIGCONT` to the group now, then `SIGKILL` to whatever is left
    /// of it after `grace`. For a service that forks helpers, a test that starts servers, a
    /// build step and its compilers. The group is named as [`kill_group`](Self::kill_group)
    /// names it, with the same errors now (`ESRCH` when no member is left).
    ///
    /// Unlike `terminate`, the escalation does not depend on the child or its handle: the
    /// leader that heeds `SIGTERM` may be reaped, and its handle closed, while a member that
    /// ignores it lives on. Until the group is empty (checked every
    /// [`GROUP_EXIT_POLL_INTERVAL_MS`](crate::limits::GROUP_EXIT_POLL_INTERVAL_MS)), an
    /// internal timer keeps the loop alive, so a `run(Default)` that winds a program down
    /// does not return with members still there; after the `SIGKILL` at the end of `grace`,
    /// for [`GROUP_KILLED_WAIT_MS`](crate::limits::GROUP_KILLED_WAIT_MS) at most (killed
    /// members whose parent does not reap them would count for good). A second call on the
    /// group while this runs, through this handle or another on the group (a pipeline's
    /// stages), sends the signals again and keeps the first deadline, as `terminate` does.
    /// Dropping the loop ends the escalation (see
    /// [`kill_group_on_drop`](Command::kill_group_on_drop) for that case); closing the
    /// handle does not, not even with `kill_group_on_drop`, which leaves the group to the
    /// escalation until the grace period is over.
    ///
    /// It watches the group, not the child: a child that left the group (`setsid`, a
    /// shell's job control) gets neither signal, and the group may end while it runs. Its
    /// exit callback says when it is gone; [`terminate`](Self::terminate) ends it (and so
    /// does closing its handle, with `kill_group_on_drop`, when the escalation ends).
    ///
    /// On Linux 6.9 and later the group of a child that leads it is named through (a copy
    /// of) the child's pidfd, race-free. Elsewhere, for a group the child joined, and when
    /// the pidfd cannot be copied (the process out of fds: `EMFILE`), it is named by number, with the race that [`kill_group`](Self::kill_group) describes: should every
    /// member be gone and another process take the number as its group id between two
    /// checks (the pid space wrapping around within 20 ms), the `SIGKILL` at the end of
    /// `grace` would reach that group. On Linux, a group whose members left have all exited
    /// has ended, reaped or not (`/proc` tells; it is looked at at the first check after
    /// the group's leader is gone, where the child leads its group, and right after the
    /// `SIGKILL`, else after
    /// [`GROUP_EXITED_SCAN_INTERVAL_MS`](crate::limits::GROUP_EXITED_SCAN_INTERVAL_MS), then
    /// less and less often).
    /// Elsewhere, a member that has exited counts until its parent reaps it: where an
    /// orphan's new parent does not (a container whose first process is not an init), the
    /// wait lasts the whole grace period, unless the program is that parent and reaps them
    /// ([`become_subreaper`] and [`Loop::reap_adopted`]).
    /// [`terminate_group_then`](Self::terminate_group_then) says how the group ended.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Command, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// // The shell heeds SIGTERM; the sleep it starts in the background ignores it.
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "(trap '' TERM; exec sleep 100) & exec sleep 100"]).process_group(0);
    /// let child = cmd.spawn(&mut lp, |lp, p, _| p.close(lp).unwrap())?;
    /// child.process.terminate_group(&mut lp, Duration::from_millis(200))?;
    /// // Returns once the group is empty, or at the latest once SIGKILL, 200 ms from now,
    /// // has gone to what is left of it (the background sleep).
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn terminate_group(self, lp: &mut Loop, grace: Duration) -> io::Result<()> {
        self.terminate_group_inner(lp, grace, None)
    }

    /// [`terminate_group`](Self::terminate_group), and `done` says how the group ended, once
    /// it has: [`GroupEnd::Emptied`] when no member was left before the grace period was over
    /// (exited, and reaped by its parent), [`GroupEnd::Killed`] when `SIGKILL` went to what
    /// was left at its end, once the group is empty after it (or
    /// [`GROUP_KILLED_WAIT_MS`](crate::limits::GROUP_KILLED_WAIT_MS) later at the most).
    /// What a rolling restart waits for before it starts the new group, and what tells a
    /// clean stop from a forced one. (Elsewhere than on Linux, a member that exited counts
    /// until its parent reaps it, so where orphans go to an `init` that is slow to reap
    /// them, a group that heeded `SIGTERM` can end `Killed`, unless the program reaps them
    /// itself: [`become_subreaper`] and [`Loop::reap_adopted`].) A second call on the group while
    /// an escalation runs joins it: its `done` is told the same end. An error is a signal the
    /// group's members may not be sent (`EPERM`: a member became another user's): the
    /// escalation ends there. A group with no member left is no error here (as it is for
    /// [`terminate_group`](Self::terminate_group), `ESRCH`): `done` is told
    /// [`GroupEnd::Emptied`], so one path serves a group that ended before the call too.
    /// `done` runs from a timer callback, never inside this call, and not at all when this
    /// call fails or the loop is dropped first. (To ask without ending anything
    /// whether a group has members left: `kill_group(lp, 0)`, which fails with `ESRCH` when
    /// none is.)
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::{Command, GroupEnd, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let child = Command::new("sleep")
    ///     .arg("100")
    ///     .process_group(0)
    ///     .spawn(&mut lp, |lp, p, _| p.close(lp).unwrap())?;
    /// let end = Rc::new(Cell::new(None));
    /// let e = end.clone();
    /// child.process.terminate_group_then(&mut lp, Duration::from_secs(10), move |_lp, res| {
    ///     e.set(Some(res.unwrap()));
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// // sleep heeds SIGTERM: its group emptied long before the grace period was over.
    /// assert_eq!(end.get(), Some(GroupEnd::Emptied));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn terminate_group_then(
        self,
        lp: &mut Loop,
        grace: Duration,
        done: impl FnOnce(&mut Loop, io::Result<GroupEnd>) + 'static,
    ) -> io::Result<()> {
        self.terminate_group_inner(lp, grace, Some(Box::new(done)))
    }

    fn terminate_group_inner(
        self,
        lp: &mut Loop,
        grace: Duration,
        done: Option<GroupDoneCb>,
    ) -> io::Result<()> {
        // A call on a group whose escalation runs (through this handle or another on the
        // group): the signals again, and `done` joins it; its deadline stands, as
        // `terminate`'s does.
        if let Some(running) = lp.process_grace(self.0) {
            match self.kill_group(lp, libc::SIGTERM) {
                // Emptied meanwhile: the escalation's next look tells `done` so.
                Err(e) if !(done.is_some() && crate::is_no_such_process(&e)) => return Err(e),
                _ => {}
            }
            let _ = self.kill_group(lp, libc::SIGCONT);
            running.waiting.borrow_mut().extend(done);
            return Ok(());
        }
        // Named first: nothing may fail once SIGTERM has gone.
        let group = lp.process_group_target(self.0)?;
        let pgid = group.pgid;
        let timer = crate::Timer::new(lp);
        lp.slot_mut(timer.id(), HandleKind::Timer)?.flags.insert(Flags::INTERNAL);
        if let Err(e) = self.kill_group(lp, libc::SIGTERM) {
            return match done {
                // No member left: `done` hears that the group is empty, from the timer.
                Some(done) if crate::is_no_such_process(&e) => {
                    let mut done = Some(done);
                    let told = timer.start(lp, Duration::ZERO, Duration::ZERO, move |lp, t| {
                        let _ = t.close(lp);
                        if let Some(done) = done.take() {
                            done(lp, Ok(GroupEnd::Emptied));
                        }
                    });
                    if told.is_err() {
                        let _ = timer.close(lp);
                    }
                    told
                }
                _ => {
                    let _ = timer.close(lp);
                    Err(e)
                }
            };
        }
        let _ = self.kill_group(lp, libc::SIGCONT);
        // From now, not from the iteration's cached time (see `terminate`).
        lp.update_time();
        let mut deadline = lp.now_rounded_up().saturating_add(crate::timer::ceil_ms(grace));
        let poll = Duration::from_millis(crate::limits::GROUP_EXIT_POLL_INTERVAL_MS);
        let first = grace.min(poll);
        let escalation = Rc::new(GroupEscalation {
            live: Cell::new(true),
            waiting: RefCell::new(done.into_iter().collect()),
            past_grace: Cell::new(false),
            spared: RefCell::new(Vec::new()),
        });
        let mine = escalation.clone();
        // Set once SIGKILL went: then it waits for the group to empty, a while at most.
        let mut killed = false;
        let (mut scanned, mut scan_every) = (lp.now(), crate::limits::GROUP_EXITED_SCAN_INTERVAL_MS);
        // Whether the group's leader is gone (reaped): members left then are often orphans,
        // zombies if their new parent is slow to reap them, so `/proc` is looked at at once.
        let mut leader_gone = !group.leads_group;
        let started = timer.start(lp, first, first, move |lp, t| {
            let over = |lp: &mut Loop, end: io::Result<GroupEnd>| {
                lp.children_kill_spared(&mine);
                mine.live.set(false);
                lp.children.grace_groups.retain(|(_, e)| !Rc::ptr_eq(e, &mine));
                lp.children.escalations.retain(|(_, e)| !Rc::ptr_eq(e, &mine));
                let _ = t.close(lp);
                let waiting = std::mem::take(&mut *mine.waiting.borrow_mut());
                for done in waiting {
                    done(lp, end.as_ref().map(|&end| end).map_err(clone_error));
                }
            };
            let end = if killed { GroupEnd::Killed } else { GroupEnd::Emptied };
            match group.signal(0) {
                Ok(()) => {}
                // Empty (ESRCH), or not ours to signal any more (EPERM): nothing to wait for.
                Err(e) => {
                    log::debug!("terminate_group: group {} done: {e}", group.pgid);
                    over(lp, if crate::is_no_such_process(&e) { Ok(end) } else { Err(e) });
                    return;
                }
            }
            // Members left that have all exited (orphans whose `init` is slow to reap them):
            // the group has ended all the same.
            // (A look reads every process's status: each finds members alive, the next waits
            // twice as long, up to 16 times the first wait. The first comes at once when the
            // leader is gone, and again after SIGKILL.)
            // (Only Linux can tell exited members apart: elsewhere there is nothing to look at.)
            let leader_left = cfg!(target_os = "linux")
                && !leader_gone
                && sys::kill(group.pgid, 0).is_err_and(|e| crate::is_no_such_process(&e));
            leader_gone |= leader_left;
            if leader_left || lp.now().saturating_sub(scanned) >= scan_every {
                scanned = lp.now();
                scan_every = (scan_every * 2).min(crate::limits::GROUP_EXITED_SCAN_INTERVAL_MS * 16);
                if sys::group_exited(group.pgid) == Some(true) {
                    log::debug!(
                        "terminate_group: group {} done: only unreaped exited members left",
                        group.pgid
                    );
                    return over(lp, Ok(end));
                }
            }
            if deadline.saturating_sub(lp.now()) == 0 {
                if killed {
                    // Members a while after SIGKILL: zombies whose parent does not reap them.
                    over(lp, Ok(GroupEnd::Killed));
                    return;
                }
                lp.children_kill_spared(&mine);
                mine.past_grace.set(true);
                match group.signal(libc::SIGKILL) {
                    Ok(()) => {
                        killed = true;
                        deadline = lp.now().saturating_add(crate::limits::GROUP_KILLED_WAIT_MS);
                        // The killed are zombies at the next check if their parent is slow:
                        // looks from the poll's interval up again.
                        (scanned, scan_every) = (lp.now(), crate::limits::GROUP_EXIT_POLL_INTERVAL_MS);
                    }
                    // Emptied just now.
                    Err(e) if crate::is_no_such_process(&e) => return over(lp, Ok(GroupEnd::Emptied)),
                    Err(e) => {
                        log::debug!(
                            "terminate_group: SIGKILL to group {} after the grace period: {e}",
                            group.pgid
                        );
                        return over(lp, Err(e));
                    }
                }
            }
            // The next check, at the deadline at the latest.
            let next = Duration::from_millis(deadline.saturating_sub(lp.now())).min(poll);
            let _ = t.stop(lp);
            let _ = t.set_repeat(lp, next);
            let _ = t.again(lp);
        });
        if let Err(e) = started {
            let _ = timer.close(lp);
            return Err(e);
        }
        lp.children.escalations.push((pgid, escalation));
        Ok(())
    }

    /// Sends `signal` to the child's whole process group: the child and every descendant
    /// that stayed in its group (duct's "grandchildren" problem).
    ///
    /// The child must have a group of its own: spawned with
    /// [`process_group`](Command::process_group) or [`setsid`](Command::setsid); otherwise
    /// (it shares the loop's group) this is an error. Works after the child itself exited,
    /// while descendants remain: on Linux 6.9 and later through the pidfd, which names the
    /// group race-free; elsewhere by number, which, once every member is gone, another
    /// process could take as its own group id. Fails with `ESRCH` when no member is left
    /// ([`is_no_such_process`](crate::is_no_such_process) tells it): signal 0, which sends
    /// nothing, asks just that.
    ///
    /// Descendants that left the group (with `setsid` or `setpgid`, as daemons do) are out
    /// of its reach. A supervisor can make itself a subreaper
    /// ([`become_subreaper`], Linux and FreeBSD), so that
    /// such orphans become its children instead of `init`'s, and have the loop reap them
    /// with [`Loop::reap_adopted`] (by pid, never `waitpid(-1)`, which would take the loop's
    /// own children too).
    ///
    /// Stopped members (Ctrl-Z, `SIGTTIN`) do not act on `SIGTERM` until they are continued:
    /// send `SIGCONT` after it, as shells do, or end with `SIGKILL`, which ends them stopped
    /// or not.
    ///
    /// The signal reaches the members the group has at that moment. A member that is about
    /// to fork with signals blocked (shells block them around the fork of a foreground
    /// command) holds the signal pending, and its new child starts without it: a group that
    /// may still be growing should be signalled again, or killed with `SIGKILL` after a
    /// grace period.
    pub fn kill_group(self, lp: &mut Loop, signal: i32) -> io::Result<()> {
        lp.process_kill(self.0, signal, true)
    }

    /// Calls `cb` when the child stops or continues: what a shell needs to notice a job
    /// suspended with Ctrl-Z (`SIGTSTP`), or stopped by `SIGTTIN` reading a terminal it does
    /// not own, and resumed by `SIGCONT`.
    ///
    /// What is reported is the child's latest change, as the kernel keeps it, and a continue
    /// only after a stop was reported: the events go stopped, continued, stopped, and so on
    /// (two stops in a row when a continue and the next stop came before the loop looked).
    /// A stop that a continue followed before the loop looked is not reported at all: the
    /// child runs, as it did when last reported. A stop that happened before this call is
    /// reported too, in the next pending phase. Replaces
    /// an earlier callback; [`unwatch_stops`](Self::unwatch_stops) or closing the handle ends
    /// the watch. A child that exits gets its exit callback only: a stop it did not live to
    /// have reported is not reported after it. Fails with `ESRCH` after the child was reaped.
    ///
    /// How: the loop watches `SIGCHLD` (an internal, unreferenced watcher, as on the fallback
    /// reaping path) and asks `waitid(P_PID, pid, WSTOPPED | WCONTINUED | WNOHANG)` for each
    /// watched child, which never reaps and never looks at another library's children.
    /// Nothing is watched unless asked: pidfds and `EVFILT_PROC` do not report stops.
    ///
    /// Platform notes: macOS sends no `SIGCHLD` when a child continues. A continue that
    /// this loop caused ([`kill`](Self::kill) or [`kill_group`](Self::kill_group) with
    /// `SIGCONT`) is looked for right after, on every platform (and reported unless the
    /// child exits before the loop looks: then only its exit is); one caused by another
    /// process is, on macOS, not reported. And a `SIGCHLD` handler that other code installs
    /// over the loop's with `SA_NOCLDSTOP` stops the kernel from announcing stops at all.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, RunMode, StopEvent};
    ///
    /// let mut lp = Loop::new()?;
    /// let child = Command::new("sh")
    ///     .args(["-c", "kill -STOP $$; exit 7"])
    ///     .spawn(&mut lp, |lp, p, res| {
    ///         assert_eq!(res.unwrap().code(), Some(7));
    ///         p.close(lp).unwrap();
    ///     })?;
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let log = seen.clone();
    /// child.process.watch_stops(&mut lp, move |lp, p, ev| {
    ///     log.borrow_mut().push(ev);
    ///     if ev == StopEvent::Stopped(libc::SIGSTOP) {
    ///         p.kill(lp, libc::SIGCONT).unwrap();
    ///     }
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(seen.borrow()[0], StopEvent::Stopped(libc::SIGSTOP));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn watch_stops<F>(self, lp: &mut Loop, cb: F) -> io::Result<()>
    where
        F: FnMut(&mut Loop, Process, StopEvent) + 'static,
    {
        lp.process_watch_stops(self.0, Some(Box::new(cb)))
    }

    /// Ends [`watch_stops`](Self::watch_stops); a no-op when nothing is watched.
    pub fn unwatch_stops(self, lp: &mut Loop) -> io::Result<()> {
        // A closing handle watches nothing any more: stopping is no error.
        if self.is_closing(lp)? {
            return Ok(());
        }
        lp.process_watch_stops(self.0, None)
    }

    /// Stops reading the output of a child that [`Command::stream_output`] (or
    /// [`output`](Command::output)) captures, until [`resume_output`](Self::resume_output):
    /// back-pressure for output that cannot go anywhere now (a terminal that is not being
    /// read, a slow consumer). The child's writes then block once its pipes fill, so memory
    /// stays bounded; the child still runs, and can still be killed. The capture ends only
    /// after its streams have ended, so `on_done` waits for the resume (a
    /// [`wait_delay`](Command::wait_delay) does not run out while paused). Pausing paused
    /// output does nothing.
    ///
    /// Paused pipes keep the loop alive no more than a [`Pipe::read_pause`]d one does (as
    /// in libuv, a stopped read is an inactive handle); the running child does. So resume
    /// from the callback of something else that keeps the loop going (a timer, the
    /// consumer's own handle). With nothing else, `run(RunMode::Default)` returns once the
    /// child has exited, `on_done` still to come after a resume and another run; or, for a
    /// child blocked on a full pipe, which never exits, it does not return at all.
    ///
    /// An error for a process whose output is not captured (one from [`Command::spawn`]:
    /// pause its pipes with [`Pipe::read_pause`]; or a capture whose command sends both
    /// streams elsewhere, which has nothing to pause), and for a closed handle, which is what
    /// the handle of a finished capture is once its callback has returned (within the
    /// callback, with the output all read, pausing and resuming do nothing).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, RunMode, Timer};
    /// use std::time::Duration;
    ///
    /// let mut lp = Loop::new()?;
    /// let got = Rc::new(RefCell::new(0));
    /// let g = got.clone();
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "head -c 300000 /dev/zero"]);
    /// let child = cmd.stream_output(&mut lp, move |_, _, _, bytes| *g.borrow_mut() += bytes.len(), |_, _, status| {
    ///     assert!(status.unwrap().success());
    /// })?;
    /// child.pause_output(&mut lp)?;
    /// // Nothing is read while paused; a timer resumes it.
    /// Timer::new(&mut lp).start(&mut lp, Duration::from_millis(20), Duration::ZERO, move |lp, t| {
    ///     child.resume_output(lp).unwrap();
    ///     t.close(lp).unwrap();
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(*got.borrow(), 300_000);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pause_output(self, lp: &mut Loop) -> io::Result<()> {
        lp.process_output_flow(self.0, true, None)
    }

    /// Resumes reading output paused with [`pause_output`](Self::pause_output) (or
    /// [`pause_output_stream`](Self::pause_output_stream)). Resuming output that is being
    /// read does nothing; the errors are `pause_output`'s.
    pub fn resume_output(self, lp: &mut Loop) -> io::Result<()> {
        lp.process_output_flow(self.0, false, None)
    }

    /// As [`pause_output`](Self::pause_output), for one of the two streams: the other
    /// goes on. For a child whose stdout is the channel that needs back-pressure (a
    /// language server's answers) while its stderr, a log, keeps flowing (a child blocked
    /// on a full stderr would stop answering). A `wait_delay` is held off while either
    /// stream is paused.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, OutputStream, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let got = Rc::new(RefCell::new(Vec::new()));
    /// let g = got.clone();
    /// let mut cmd = Command::new("sh");
    /// cmd.args(["-c", "echo out; echo log >&2"]);
    /// let child = cmd.stream_output(
    ///     &mut lp,
    ///     move |lp, child, which, bytes| {
    ///         g.borrow_mut().push((which, bytes.to_vec()));
    ///         // The log came while stdout waited: let it go now.
    ///         child.resume_output_stream(lp, OutputStream::Stdout).unwrap();
    ///     },
    ///     |_, _, status| assert!(status.unwrap().success()),
    /// )?;
    /// child.pause_output_stream(&mut lp, OutputStream::Stdout)?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(got.borrow()[0], (OutputStream::Stderr, b"log\n".to_vec()));
    /// assert_eq!(got.borrow()[1], (OutputStream::Stdout, b"out\n".to_vec()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pause_output_stream(self, lp: &mut Loop, which: OutputStream) -> io::Result<()> {
        lp.process_output_flow(self.0, true, Some(which))
    }

    /// Resumes one stream paused with [`pause_output_stream`](Self::pause_output_stream) or
    /// [`pause_output`](Self::pause_output); the other stays as it is.
    pub fn resume_output_stream(self, lp: &mut Loop, which: OutputStream) -> io::Result<()> {
        lp.process_output_flow(self.0, false, Some(which))
    }

    /// Stops waiting for a capture's output, as its [`wait_delay`](Command::wait_delay)
    /// would when it runs out: in the loop's next timers phase, what the streams hold is
    /// read (paused ones too), then they close, and the capture's callback comes once the
    /// child has exited (then, if it has), with the output cut ([`Output::cut`] and
    /// [`Output::cut_requested`]; for [`stream_output`](Command::stream_output), an
    /// [`OutputCut`] error that holds the status, with no `delay`). Streams that reach
    /// their end of file in that read were not cut: if all do, the result is whole, as
    /// without the call. For a cancel: after [`terminate_group`](Process::terminate_group),
    /// a descendant that left the group (a daemon that called `setsid`) can hold the
    /// output open for good, and the abandon (closing the handle) would lose the status.
    ///
    /// A child still running is not stopped by it: it gets `SIGPIPE` at its next write to
    /// a captured pipe (`EPIPE` where it ignores that); on a pty
    /// ([`output_on_pty`](Command::output_on_pty)), the capture stops reading the terminal
    /// but keeps it up until the capture ends (a hang-up would end the child), so its
    /// writes block once the terminal's buffer is full. So end it too, as a cancel does. An
    /// input still being written ([`output_with_input`](Command::output_with_input)) is
    /// dropped. A second call does nothing. An error for a process whose output is not
    /// captured, and for a closed handle (a finished capture's).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, OutputCut, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// // A daemon in a session of its own keeps the output open.
    /// cmd.args(["-c", "setsid sleep 1 & echo started; exit 7"]);
    /// let status = Rc::new(RefCell::new(None));
    /// let st = status.clone();
    /// let job = cmd.stream_output(
    ///     &mut lp,
    ///     |lp, p, _, bytes| {
    ///         assert_eq!(bytes, b"started\n");
    ///         p.cut_output(lp).unwrap();
    ///     },
    ///     move |_, _, res| *st.borrow_mut() = Some(OutputCut::of(&res.unwrap_err()).unwrap().status),
    /// )?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(status.borrow().unwrap().code(), Some(7));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn cut_output(self, lp: &mut Loop) -> io::Result<()> {
        lp.process_cut_output(self.0)
    }
}

/// A living child stopped or continued: what [`Process::watch_stops`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopEvent {
    /// This signal stopped it: `SIGTSTP` (Ctrl-Z at its terminal), `SIGSTOP`, `SIGTTIN` or
    /// `SIGTTOU`.
    Stopped(i32),
    /// `SIGCONT` resumed it.
    Continued,
}

/// How a group that [`Process::terminate_group_then`] ended did end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupEnd {
    /// No member was left before the grace period was over: each exited (on `SIGTERM`, or
    /// of its own accord) and was reaped by its parent, or, on Linux, is an exited member
    /// its parent has not reaped yet (`/proc` tells).
    Emptied,
    /// The grace period ended with members left, and `SIGKILL` went to them; told once the
    /// group is empty (or a while after, see
    /// [`GROUP_KILLED_WAIT_MS`](crate::limits::GROUP_KILLED_WAIT_MS)).
    Killed,
}

/// The callback of [`Process::terminate_group_then`].
type GroupDoneCb = Box<dyn FnOnce(&mut Loop, io::Result<GroupEnd>)>;

/// What a finished child printed and how it ended: the result of [`Command::output`].
#[derive(Debug)]
pub struct Output {
    /// How the child ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (and to stderr under `2>&1`); empty where the command
    /// sent stdout elsewhere ([`Command::output`]).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr; empty where the command sent stderr elsewhere.
    pub stderr: Vec<u8>,
    /// The output was cut short: the child had exited, and its stdout or stderr was still
    /// open (a descendant held it) when the command's [`wait_delay`](Command::wait_delay)
    /// ran out; or [`Process::cut_output`] asked for the cut (`cut_requested`). `stdout`
    /// and `stderr` hold what was read until then. (An input still being written then is
    /// dropped, and that alone is no cut: a child need not read all of it.)
    pub cut: bool,
    /// The cut was [`Process::cut_output`]'s, not the `wait_delay`'s.
    pub cut_requested: bool,
    /// Output beyond the command's [`output_limit`](Command::output_limit) was read and
    /// dropped: `stdout` or `stderr` holds only the first bytes (the last ones, with
    /// [`output_limit_last`](Command::output_limit_last)).
    pub truncated: bool,
    /// How many bytes of stdout were read and dropped, beyond the
    /// [`output_limit`](Command::output_limit).
    pub stdout_dropped: u64,
    /// How many bytes of stderr were read and dropped, beyond the
    /// [`output_limit`](Command::output_limit).
    pub stderr_dropped: u64,
    /// The command's [`timeout`](Command::timeout) (or a deadline set with
    /// [`Process::terminate_after`]) ended the child: it was still running
    /// when the time was up.
    pub timed_out: bool,
    /// What the child used, where the command has
    /// [`record_usage`](Command::record_usage).
    pub usage: Option<ResourceUsage>,
}

/// How much of a captured stream to keep: `Command::output_limit` (the first `bytes`) or
/// `output_limit_last` (the last).
#[derive(Clone, Copy, Debug)]
struct OutputLimit {
    bytes: usize,
    last: bool,
}

impl OutputLimit {
    /// Adds what was read, `d`, to what is `kept` of a stream; returns how many bytes were
    /// dropped. Keeping the last bytes, `kept` has room for twice the limit once past it,
    /// and its start goes when that is full (`finish` trims it to the limit): memory stays
    /// at twice the limit, and each byte is moved once at most.
    fn keep(self, kept: &mut Vec<u8>, d: &[u8]) -> u64 {
        if !self.last {
            let keep = d.len().min(self.bytes.saturating_sub(kept.len()));
            kept.extend_from_slice(&d[..keep]);
            return (d.len() - keep) as u64;
        }
        if d.len() >= self.bytes {
            let dropped = kept.len() + d.len() - self.bytes;
            kept.clear();
            kept.extend_from_slice(&d[d.len() - self.bytes..]);
            return dropped as u64;
        }
        let room = self.bytes.saturating_mul(2);
        let mut dropped = 0;
        if kept.len() + d.len() > room {
            // What is kept, less what `d` brings beyond the limit: the limit, with `d`.
            dropped = kept.len() + d.len() - self.bytes;
            kept.drain(..dropped);
        } else if kept.len() + d.len() > self.bytes && kept.capacity() < room {
            // (At once, not by doublings that could reach four times the limit.)
            kept.reserve_exact(room - kept.len());
        }
        kept.extend_from_slice(d);
        dropped as u64
    }

    /// Trims what `keep` kept to the limit; returns how many bytes that dropped.
    fn finish(self, kept: &mut Vec<u8>) -> u64 {
        let excess = kept.len().saturating_sub(self.bytes);
        if self.last && excess > 0 {
            kept.drain(..excess);
        }
        excess as u64
    }
}

/// A capture's callback, with the capture's process handle.
type OutputCb = Box<dyn FnOnce(&mut Loop, Process, io::Result<Output>)>;
type PipelineOutputCb = Box<dyn FnOnce(&mut Loop, io::Result<PipelineOutput>)>;

/// What a finished pipeline printed and how each stage ended: the result of
/// [`Pipeline::output`].
#[derive(Debug)]
pub struct PipelineOutput {
    /// Each stage's status, first to last, as [`Pipeline::spawn`] reports them.
    pub statuses: Vec<io::Result<ExitStatus>>,
    /// Everything the last stage wrote to stdout, or its first bytes when the last stage
    /// has an [`output_limit`](Command::output_limit) (its last ones with
    /// [`output_limit_last`](Command::output_limit_last)).
    pub stdout: Vec<u8>,
    /// Output beyond the last stage's [`output_limit`](Command::output_limit) was read and
    /// dropped.
    pub truncated: bool,
    /// How many bytes of it were dropped.
    pub stdout_dropped: u64,
}

impl PipelineOutput {
    /// The pipeline's status as a shell with `pipefail` sees it: the last stage's that
    /// failed (an error, a nonzero exit or a signal), else the last stage's. As with
    /// [`ExitStatus::ok`], `Ok(())` for success.
    ///
    /// ```
    /// use evloop::{Command, Loop, Pipeline, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let job = Pipeline::new([Command::new("false"), Command::new("true")]);
    /// job.output(&mut lp, |_, out| {
    ///     let out = out.unwrap();
    ///     assert!(out.statuses[1].as_ref().unwrap().success()); // a shell's `$?`
    ///     assert!(out.pipefail().is_err()); // `set -o pipefail`
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pipefail(&self) -> io::Result<()> {
        let failed = self.statuses.iter().rev().find(|s| !matches!(s, Ok(st) if st.success()));
        match failed.or(self.statuses.last()) {
            Some(Ok(status)) => status.ok(),
            Some(Err(e)) => Err(crate::error::clone_error(e)),
            None => Ok(()),
        }
    }
}

/// A [`stream_output`](Command::stream_output) capture cut short by the command's
/// [`wait_delay`](Command::wait_delay) or by [`Process::cut_output`]: the payload of the
/// [`TimedOut`](io::ErrorKind::TimedOut) error its `on_done` gets, with the child's exit
/// status. [`OutputCut::of`] finds it in the error. (An error of the capture itself, a
/// failed read, comes instead, as it would without the cut.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputCut {
    /// How the child ended.
    pub status: ExitStatus,
    /// The command's [`wait_delay`](Command::wait_delay), which ran out (counted while the
    /// capture read: a pause starts it over); `None` for a cut that
    /// [`Process::cut_output`] asked for.
    pub delay: Option<Duration>,
}

impl OutputCut {
    /// The cut `err` reports, if it is a `stream_output` capture's cut.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Command, Loop, OutputCut, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sh");
    /// // The shell exits with 3 at once; the sleep it leaves behind holds stdout open.
    /// cmd.args(["-c", "sleep 1 & exit 3"]).wait_delay(Duration::from_millis(20));
    /// cmd.stream_output(&mut lp, |_, _, _, _| {}, |_, _, res| {
    ///     let err = res.unwrap_err();
    ///     let cut = OutputCut::of(&err).unwrap();
    ///     assert_eq!(cut.status.code(), Some(3));
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn of(err: &io::Error) -> Option<&OutputCut> {
        err.get_ref()?.downcast_ref()
    }
}

/// The command's [`timeout`](Command::timeout), or a deadline set with
/// [`Process::terminate_after`], ended the child of a
/// [`stream_output`](Command::stream_output) capture: the payload of the
/// [`TimedOut`](io::ErrorKind::TimedOut) error its `on_done` gets, with the child's exit
/// status. [`RunTimedOut::of`] finds it in the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunTimedOut {
    /// How the child ended: usually by the timeout's signal.
    pub status: ExitStatus,
    /// The time the deadline that ran out had given the child.
    pub after: Duration,
}

impl RunTimedOut {
    /// The timeout `err` reports, if it is a `stream_output` capture's.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Command, Loop, RunMode, RunTimedOut};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut cmd = Command::new("sleep");
    /// cmd.arg("10").timeout(Duration::from_millis(20), Duration::from_secs(1));
    /// cmd.stream_output(&mut lp, |_, _, _, _| {}, |_, _, res| {
    ///     let err = res.unwrap_err();
    ///     let timed_out = RunTimedOut::of(&err).unwrap();
    ///     assert_eq!(timed_out.status.signal(), Some(evloop::signal::SIGTERM));
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn of(err: &io::Error) -> Option<&RunTimedOut> {
        err.get_ref()?.downcast_ref()
    }
}

impl fmt::Display for RunTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the child ran past its timeout ({:?}) and was ended: {}", self.after, self.status)
    }
}

impl std::error::Error for RunTimedOut {}

impl fmt::Display for OutputCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.delay {
            Some(delay) => write!(
                f,
                "the child exited ({}), but its output was still open when the wait delay ({delay:?}) ran \
                 out (a descendant holding it?): reading stopped there",
                self.status
            ),
            None => write!(
                f,
                "the child exited ({}); its output was cut short, as asked (cut_output)",
                self.status
            ),
        }
    }
}

impl std::error::Error for OutputCut {}

/// Which of a child's output streams some bytes came from, in [`Command::stream_output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The child's stdout (fd 1).
    Stdout,
    /// The child's stderr (fd 2).
    Stderr,
}

type OutputSink = Box<dyn FnMut(&mut Loop, Process, OutputStream, &[u8])>;

/// [`Command::output`]'s progress: the exit and the ends of file it waits for, and with
/// [`Command::output_with_input`] the end of the input's write.
struct Capture {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<ExitStatus>,
    /// The first failure (a read error, or the exit status lost); it is what `cb` gets.
    error: Option<io::Error>,
    left: u8,
    cb: Option<OutputCb>,
    /// Where the output goes as it comes, instead of into `stdout` and `stderr`: out while
    /// it runs.
    sink: Option<OutputSink>,
    /// The process handle was closed before `cb` ran: the capture is abandoned.
    cancelled: bool,
    /// The command's timeout ended the child (`Process::timed_out`).
    timed_out: bool,
    /// Closed after the last event, not at the exit: a grandchild holding the streams open
    /// can still be reached through `kill_group` meanwhile.
    process: Option<Process>,
    /// The capture's own pipes, closed when it is abandoned: those of the streams it
    /// captures (not those the command sends elsewhere), or a pty's master as stdout
    /// (`output_on_pty`), and the input's.
    outputs: Vec<(OutputStream, AnyStream)>,
    input: Option<Pipe>,
    /// A pty capture's handle for the program's input, on a copy of the master: closed
    /// with the capture, after `cb` or at an abandon, unless its owner closed it.
    terminal_input: Option<crate::Tty>,
    /// `Command::wait_delay`, and the timer that runs it out once the child exited, while
    /// the output is not `paused` (`pause_output`).
    wait_delay: Option<Duration>,
    /// How much of each stream to keep (`Command::output_limit`), and how much more came,
    /// stdout's and stderr's.
    limit: OutputLimit,
    dropped: [u64; 2],
    delay_timer: Option<crate::Timer>,
    exited: bool,
    paused: bool,
    /// The delay ran out with streams still open: they were closed there.
    delay_over: bool,
    /// `Process::cut_output` asked for the cut, which comes from a timer.
    cut_asked: bool,
    /// ... and stdout or stderr was one of them: the output is cut short. (The input alone
    /// is not: a child that leaves it unread is no error.)
    cut: bool,
    /// What the child used (`Command::record_usage`), from its reap.
    usage: Option<ResourceUsage>,
}

impl Capture {
    /// Writes `input` to the child's stdin, then closes it; the write's end is one of the
    /// events the capture waits for. The child not reading it all (`EPIPE`) is no error.
    fn feed(state: &Rc<RefCell<Capture>>, lp: &mut Loop, stdin: Pipe, input: Box<dyn AsRef<[u8]>>) {
        let st = state.clone();
        let done = move |lp: &mut Loop, res: io::Result<()>| {
            let _ = stdin.close(lp);
            Capture::one_done(&st, lp, |c| match res {
                // (Cancelled by the close of a cut: no error.)
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe && !c.delay_over => {
                    c.error.get_or_insert(context(e, "writing the child's stdin"));
                }
                _ => {}
            });
        };
        if (*input).as_ref().is_empty() {
            // Nothing to write: the child reads end of file at once.
            done(lp, Ok(()));
        } else if let Err(e) = lp.stream_write(stdin.0, HandleKind::Pipe, input, Some(Box::new(done))) {
            // Only a closed handle refuses a write, and this one was just made: report it.
            let _ = stdin.close(lp);
            Capture::one_done(state, lp, |c| {
                c.error.get_or_insert(context(e, "writing the child's stdin"));
            });
        }
    }

    /// The child exited with streams still open, and they are read: after the command's
    /// `wait_delay`, stop waiting for them. (Paused, they are not timed: the resume starts
    /// the delay again, see `command_output`.)
    fn start_delay(state: &Rc<RefCell<Capture>>, lp: &mut Loop) {
        let delay = {
            let c = state.borrow();
            match c.wait_delay {
                Some(d)
                    if c.cb.is_some()
                        && c.exited
                        && !c.paused
                        && !c.delay_over
                        && c.delay_timer.is_none() =>
                {
                    d
                }
                _ => return,
            }
        };
        let st = state.clone();
        // From now, not from the iteration's cached time (see `terminate`): an exit handled
        // after a slow callback in the same batch must still get its whole delay.
        lp.update_time();
        let timer = crate::Timer::once(lp, delay, move |lp| {
            {
                let mut c = st.borrow_mut();
                c.delay_timer = None;
                if c.cb.is_none() || c.paused {
                    return;
                }
            }
            log::debug!("a child's streams still open {delay:?} after its exit: closing them");
            Capture::cut(&st, lp, false);
        });
        match timer {
            Ok(t) => {
                if let Ok(slot) = lp.slot_mut(t.id(), HandleKind::Timer) {
                    slot.flags.insert(Flags::INTERNAL);
                }
                state.borrow_mut().delay_timer = Some(t);
            }
            // (Out of memory in the timer heap, say: the capture waits for end of file.)
            Err(e) => log::warn!("a capture's wait_delay could not start: {e}"),
        }
    }

    /// `Process::cut_output`: the cut, from a timer due now. Not at once: called from a
    /// read callback (the sink's), the reads before the cut would be nested in that one.
    fn cut_soon(st: &Rc<RefCell<Capture>>, lp: &mut Loop) {
        {
            let mut c = st.borrow_mut();
            // (Done, or cut, or to be: nothing more to do.)
            if c.cb.is_none() || c.delay_over || c.cut_asked {
                return;
            }
            c.cut_asked = true;
        }
        let st = st.clone();
        match crate::Timer::once(lp, Duration::ZERO, move |lp| Capture::cut(&st, lp, true)) {
            Ok(t) => {
                if let Ok(slot) = lp.slot_mut(t.id(), HandleKind::Timer) {
                    slot.flags.insert(Flags::INTERNAL);
                }
            }
            // (Out of memory in the timer heap, say.)
            Err(e) => log::warn!("a capture's cut could not start: {e}"),
        }
    }

    /// Stops waiting for the streams: what they hold is read, then they close, and the
    /// output is cut. After `wait_delay` (`forced` false: a pause, also one the sink makes
    /// while what is held is read, holds it off), or at once for `Process::cut_output`.
    fn cut(st: &Rc<RefCell<Capture>>, lp: &mut Loop, forced: bool) {
        let (outputs, input) = {
            let c = st.borrow();
            if c.cb.is_none() {
                return;
            }
            (c.outputs.clone(), c.input)
        };
        // What the streams hold already is the child's too: read before cutting (a paused
        // one too, when asked for). (It may end a stream, or the capture; the sink may
        // abandon it, or pause it.)
        for (_, p) in &outputs {
            if forced && lp.read_paused(p.id()) {
                let _ = p.read_resume(lp);
            }
            lp.stream_read_now(p.id());
        }
        {
            let mut c = st.borrow_mut();
            if c.cb.is_none() || (c.paused && !forced) {
                return;
            }
            c.delay_over = true;
        }
        let outputs = outputs.into_iter().map(|(_, p)| (p, true));
        for (p, output) in outputs.chain(input.map(|p| (AnyStream::Pipe(p), false))) {
            // (One that ended is closing or gone already.)
            if p.is_closing(lp).ok() != Some(false) {
                continue;
            }
            match p {
                // A pty's master only stops reading: its close would hang the terminal up
                // (if the input's copy is gone), and end the child with `SIGHUP`. It
                // closes with the capture (`one_done`).
                AnyStream::Tty(_) => {
                    let _ = p.read_stop(lp);
                }
                AnyStream::Pipe(_) => {
                    let _ = p.close(lp);
                }
            }
            // The outputs count here; the input's write, cancelled by the close, counts
            // when its callback runs (`feed`).
            if output {
                Capture::one_done(st, lp, |c| c.cut = true);
            }
        }
    }

    /// One of the events happened; the last one delivers the result.
    fn one_done(state: &RefCell<Capture>, lp: &mut Loop, note: impl FnOnce(&mut Capture)) {
        let (cb, result, process, timer) = {
            let mut c = state.borrow_mut();
            note(&mut c);
            c.left -= 1;
            if c.left > 0 {
                return;
            }
            let c = &mut *c;
            for (kept, dropped) in [&mut c.stdout, &mut c.stderr].into_iter().zip(&mut c.dropped) {
                *dropped += c.limit.finish(kept);
            }
            let result = match (c.error.take(), c.status) {
                (Some(e), _) => Err(e),
                (None, Some(status)) => Ok(Output {
                    status,
                    stdout: std::mem::take(&mut c.stdout),
                    stderr: std::mem::take(&mut c.stderr),
                    cut: c.cut,
                    cut_requested: c.cut && c.cut_asked,
                    truncated: c.dropped != [0, 0],
                    stdout_dropped: c.dropped[0],
                    stderr_dropped: c.dropped[1],
                    timed_out: c.timed_out,
                    usage: c.usage,
                }),
                (None, None) => unreachable!("the exit noted a status or an error"),
            };
            (c.cb.take(), result, c.process.take(), c.delay_timer.take())
        };
        if let Some(t) = timer {
            let _ = t.close(lp);
        }
        let (terminal_input, outputs) = {
            let mut c = state.borrow_mut();
            (c.terminal_input.take(), std::mem::take(&mut c.outputs))
        };
        // The handle stays open while `cb` runs, so that it can end what the child left in
        // its group gently (`terminate_group`); it closes once `cb` returns, unless `cb`
        // closed it. Its close hook finds `cb` gone, and abandons nothing. (Closed by its
        // owner before, the capture was abandoned, and the count never got here.)
        // (The handle is there: set at the spawn, before any event, and taken only here or
        // with `cb` at an abandon.)
        if let (Some(cb), Some(p)) = (cb, process) {
            cb(lp, p, result);
        }
        if let Some(p) = process {
            if p.is_closing(lp).ok() == Some(false) {
                let _ = p.close(lp);
            }
        }
        // The input's copy of a pty's master, and the master where a cut only stopped it.
        let outputs = outputs.into_iter().map(|(_, p)| p);
        for p in terminal_input.map(AnyStream::Tty).into_iter().chain(outputs) {
            if p.is_closing(lp).ok() == Some(false) {
                let _ = p.close(lp);
            }
        }
    }
}

// ----- the loop's table of children ---------------------------------------------------------

/// How the loop learns that a child exited.
enum Watch {
    /// A pidfd in the poller (Linux).
    #[cfg(target_os = "linux")]
    Pidfd(OwnedFd),
    /// `EVFILT_PROC` in the kqueue.
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    Kqueue,
    /// `SIGCHLD`, then `waitpid(pid, WNOHANG)`.
    Sigchld,
    /// Gone before it could be watched: `pidfd_open` found no such process, so the kernel
    /// (`SIGCHLD` ignored) or another waiter reaped it, and its status is lost. The
    /// pending phase reports that (`ECHILD`); its pid may be another process's already.
    #[cfg(target_os = "linux")]
    Gone,
}

struct ChildEntry {
    pid: Pid,
    watch: Watch,
    /// The handle that gets the exit; `None` once it was closed (a background child).
    owner: Option<HandleId>,
    /// A child that keeps `run(Default)` going until it is reaped, whatever its handle's
    /// `set_ref`: a background child (its handle closed while referenced), or a captured
    /// one (`Command::output`).
    keeps_alive: bool,
    /// It was sent SIGKILL when its handle closed.
    killed: bool,
    /// Its handle (`kill_group_on_drop`) closed while a `terminate_group` escalation ran on
    /// its group: its own SIGKILL waits for that to end (`GroupEscalation::spared`).
    spared: bool,
    /// The last change a stop watch reported was a stop: only then is a continue reported
    /// (xnu may note a `SIGCONT` to a child that was running as a continue). Kept here, not
    /// with the watch, so that it outlives an unwatch and a new watch.
    stopped: bool,
    /// Its controlling terminal is a pty whose master the loop opened for it
    /// (`spawn_on_pty`): the loop's drop, which closes that master, hangs it up.
    on_our_pty: bool,
    /// Its reap asks for its resource usage (`Command::record_usage`).
    record_usage: bool,
}

type StopCb = Box<dyn FnMut(&mut Loop, Process, StopEvent)>;

/// A child's `Process::watch_stops`, kept apart from its `ChildEntry` so that the entries,
/// and the reaping path that every child takes, stay as small as before.
struct StopWatch {
    key: usize,
    pid: Pid,
    /// Out while it runs.
    cb: Option<StopCb>,
    /// Each watch gets a new one, so a callback that ran is put back only into its own.
    epoch: u32,
}

/// Every child the loop spawned and has not reaped yet, with or without a handle.
#[derive(Default)]
pub(crate) struct Children {
    entries: Slab<ChildEntry>,
    /// Background children that keep the loop alive.
    keep_alive: usize,
    /// The internal SIGCHLD watcher: started by the first child that relies on it, kept
    /// until the loop drops (as libuv does), so spawning does not reinstall it every time.
    sigchld: Option<Signal>,
    scratch: Vec<(usize, Pid)>,
    /// The children whose stops are watched (usually none).
    stops: Vec<StopWatch>,
    stop_epoch: u32,
    /// What a few process handles have besides their state, by slot key. Usually empty;
    /// kept out of `ProcessState`, which every slot pays for.
    extras: crate::handle::KeyMap<ProcessExtras>,
    /// The groups whose `kill_group_on_drop` a close left to `terminate_group`'s escalation,
    /// with its flag: each leaves when its escalation ends, and a loop dropped before then
    /// kills those left itself, since the escalation goes with it.
    grace_groups: Vec<(GroupTarget, Rc<GroupEscalation>)>,
    /// The running [`Process::terminate_group`] escalations, by the group they end: found
    /// through any handle on the group, open or not, so long as the escalation runs
    /// (usually empty).
    escalations: Vec<(Pid, Rc<GroupEscalation>)>,
    /// The callback of [`Loop::reap_adopted`], while it is on.
    adopted: Option<AdoptedCb>,
    /// Bumped when `adopted` is set or cleared: a callback that replaced itself stays out.
    adopted_epoch: u32,
    /// Children registered so far: an `adopted_sweep` knows its pid map is out of date
    /// when a callback spawned meanwhile.
    registered: u64,
    /// Set while a failed spawn closes the handle of the child it started, which no
    /// `terminate_group` grace period may spare.
    abandoning: bool,
}

/// The callback of [`Loop::reap_adopted`].
type AdoptedCb = Box<dyn FnMut(&mut Loop, AdoptedExit)>;

/// A child of the process that the loop did not spawn, reaped by [`Loop::reap_adopted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdoptedExit {
    /// Its process id.
    pub pid: i32,
    /// The process group it was in when it exited (a service's, for an orphan it left
    /// behind in its group), or 0 where that could not be read: Linux tells the group of
    /// a child that exited and is not reaped yet, macOS does not (and FreeBSD may not).
    pub group: i32,
    /// How it ended.
    pub status: ExitStatus,
}

/// A running [`Process::terminate_group`] escalation, shared by the calls on its group.
pub(crate) struct GroupEscalation {
    /// Up until it ends: a close meanwhile leaves the group to it, instead of
    /// `kill_group_on_drop`'s `SIGKILL` at once (see `Children::grace_groups`).
    live: Cell<bool>,
    /// The callbacks of the `terminate_group_then` calls on the group, told its end together.
    waiting: RefCell<Vec<GroupDoneCb>>,
    /// Set once the grace period is over (its SIGKILL went): a close then kills at once, as
    /// if no escalation ran, instead of leaving anything to it.
    past_grace: Cell<bool>,
    /// The running children (entry key, pid) whose `kill_group_on_drop` close it spared: each
    /// gets its own SIGKILL when the grace period is over or the escalation ends, wherever
    /// its group is by then (a child that left the group is not reached by the group's).
    spared: RefCell<Vec<(usize, Pid)>>,
}

/// See `Children::extras`.
#[derive(Default)]
struct ProcessExtras {
    /// What closing the handle ends besides its child's watch: a capture's pipes
    /// (`Command::output`).
    close_hook: Option<CloseHook>,
    /// A capture's output pipes, for [`Process::pause_output`]: those that ended are closed
    /// or closing.
    output: Vec<(OutputStream, AnyStream)>,
    /// What else pausing and resuming a capture's output does: its `wait_delay`.
    on_flow: Option<FlowHook>,
    /// A capture's cut ([`Process::cut_output`]).
    on_cut: Option<FlowHook>,
    /// The escalation timer of [`Process::terminate`]: closed as soon as the child is reaped
    /// or its handle closes, so that a storm of terminations with a long grace leaves no
    /// timers waiting for nothing.
    escalation: Option<crate::Timer>,
    /// What the child used, where its command asked (`Command::record_usage`).
    usage: Usage,
    /// The deadline of `Command::timeout` or `Process::terminate_after`, while it runs.
    timeout: Option<Deadline>,
    /// A deadline ended the child (`Process::timed_out`): the time it had been given.
    timed_out: Option<Duration>,
}

/// A child's resource usage, for `Process::resource_usage`.
#[derive(Default)]
enum Usage {
    /// Its command did not ask for it.
    #[default]
    NotAsked,
    /// Asked for: known at the reap (unless that fails).
    Awaited,
    Known(ResourceUsage),
}

/// A child's deadline: its timer, closed at the reap and the close, and what the timeout
/// gave it.
struct Deadline {
    timer: crate::Timer,
    after: Duration,
    grace: Duration,
}

impl ProcessExtras {
    fn is_empty(&self) -> bool {
        let ProcessExtras { close_hook, output, on_flow, on_cut, escalation, usage, timeout, timed_out } =
            self;
        close_hook.is_none()
            && output.is_empty()
            && on_flow.is_none()
            && on_cut.is_none()
            && escalation.is_none()
            && matches!(usage, Usage::NotAsked)
            && timeout.is_none()
            && timed_out.is_none()
    }
}

impl Children {
    pub(crate) fn keeps_loop_alive(&self) -> bool {
        self.keep_alive > 0
    }

    /// No `terminate_group` escalation runs (the usual case).
    #[inline]
    pub(crate) fn escalations_is_empty(&self) -> bool {
        self.escalations.is_empty()
    }

    /// No process handle has extras (the usual case).
    pub(crate) fn extras_is_empty(&self) -> bool {
        self.extras.is_empty()
    }
}

/// A deferred look at one child: its exit was (or may have been) missed by the usual
/// notification. Runs in the pending phase.
pub(crate) struct ChildCheck {
    key: usize,
    pid: Pid,
    /// The kernel said the child is gone: wait for it (briefly) instead of polling.
    blocking: bool,
}

/// `pidfd_open` gave `ENOSYS` once: this kernel has no pidfds.
#[cfg(target_os = "linux")]
static PIDFD_MISSING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The poller token of child entry `key`: handle tokens always have a non-zero generation in
/// their high half, so tokens below 2^32 are free for children. Zero stays unused, so that a
/// null token (an event whose kernel data was cleared) never names a child.
fn child_token(key: usize) -> u64 {
    key as u64 + 1
}

/// Whether a poller token names a child entry.
pub(crate) fn is_child_token(token: u64) -> bool {
    token != 0 && token >> 32 == 0
}

// ----- process-wide orphans -----------------------------------------------------------------

/// Children of dropped loops that were still running: reaped by pid, without blocking,
/// whenever a loop spawns or drops, and by [`reap_orphans`].
static ORPHANS: Mutex<Vec<Pid>> = Mutex::new(Vec::new());
static ORPHANS_LEFT: AtomicUsize = AtomicUsize::new(0);

fn add_orphan(pid: Pid) {
    let mut list = ORPHANS.lock().unwrap_or_else(|p| p.into_inner());
    list.push(pid);
    ORPHANS_LEFT.store(list.len(), Ordering::Relaxed);
}

/// The process group of the calling process (`getpgrp`): what a shell gives the terminal
/// back to after a job ([`Tty::set_foreground_group`](crate::Tty::set_foreground_group)).
///
/// ```
/// assert!(evloop::process::current_process_group() > 0);
/// ```
pub fn current_process_group() -> i32 {
    sys::process_group()
}

/// Makes this process a subreaper: orphans among its descendants (a service's daemon that
/// double-forked, the children a service leaves when it exits) become its children
/// instead of `init`'s, so that a supervisor keeps them in sight and reaps them, with
/// [`Loop::reap_adopted`]. Without it, an orphan that exited waits for `init` to reap it,
/// and counts as its group's member until then (see
/// [`Process::terminate_group`]); in a container whose first process is no init, that is
/// forever.
///
/// Linux (`PR_SET_CHILD_SUBREAPER`) and FreeBSD (`PROC_REAP_ACQUIRE`); macOS has no
/// subreapers, which is an `Unsupported` error. It lasts for the process's life, and its
/// children's from `fork` on do not inherit it.
///
/// ```no_run
/// let mut lp = evloop::Loop::new()?;
/// evloop::process::become_subreaper()?;
/// lp.reap_adopted(|_lp, exit| println!("orphan {} of group {} ended: {}", exit.pid, exit.group, exit.status))?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn become_subreaper() -> io::Result<()> {
    sys::become_subreaper()
}

/// Takes `pid` off the list of orphans of dropped loops: reaped elsewhere.
fn forget_orphan(pid: Pid) {
    if ORPHANS_LEFT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut list = ORPHANS.lock().unwrap_or_else(|p| p.into_inner());
    list.retain(|&p| p != pid);
    ORPHANS_LEFT.store(list.len(), Ordering::Relaxed);
}

/// Reaps, without blocking, the children of dropped loops that have exited since, and
/// returns how many are still running (not how many it reaped: 0 means the list is empty).
///
/// A loop that is dropped while children it spawned still run leaves them running (unless
/// they were started with [`Command::kill_on_drop`]); their pids wait on a process-wide
/// list. evloop calls this whenever a loop spawns or is dropped; call it yourself where the
/// program has nothing else to do, before exit for instance.
///
/// ```
/// assert_eq!(evloop::process::reap_orphans(), 0);
/// ```
pub fn reap_orphans() -> usize {
    if ORPHANS_LEFT.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let mut list = ORPHANS.lock().unwrap_or_else(|p| p.into_inner());
    // ECHILD: someone else reaped it after all; either way it is off our hands.
    list.retain(|&pid| matches!(sys::try_wait(pid), Ok(None)));
    ORPHANS_LEFT.store(list.len(), Ordering::Relaxed);
    list.len()
}

// ----- spawning -----------------------------------------------------------------------------

/// A pipe made for a spawn: the loop's end and where it goes in the `Child`.
struct NewPipe {
    target: RawFd,
    ours: OwnedFd,
    we_read: bool,
}

/// Everything a spawn prepared on the parent side that must live until the child started.
#[derive(Default)]
struct Prepared {
    fds: Vec<FdMapping>,
    pipes: Vec<NewPipe>,
    /// The child's ends of new pipes, and /dev/null: closed in the parent after the spawn.
    child_ends: Vec<OwnedFd>,
    /// Handles whose fds move to the child.
    moved: Vec<Moved>,
}

/// A handle whose fd moves to a child: (id, kind, was its description nonblocking).
type Moved = (HandleId, HandleKind, bool);

/// What a pipeline (or `output`) sets for one child on top of its command; the default is
/// a lone command's.
#[derive(Default)]
struct Wiring<'a> {
    /// (target, parent fd) pairs that take precedence over the command's own entries for
    /// those targets.
    links: &'a [(RawFd, RawFd)],
    /// Where handles moved to the child wait, for the caller to close or hand back; without
    /// it they close once the child started.
    hold_moved: Option<&'a mut Vec<Moved>>,
    /// The process group to join (0: a new one), over the command's own setting.
    process_group: Option<i32>,
    /// Handles that the job's other children take ([`Stdio::Handle`]), which close once
    /// the job has started, as this child's own do.
    others_moving: &'a [HandleId],
    /// The terminal to take for the child's group when its command names none: a job's,
    /// from a stage before it that was to lead the group and could not start.
    foreground: Option<HandleId>,
}

impl Loop {
    /// Spawns `cmd` as `wiring` adjusts it.
    fn spawn_command(&mut self, cmd: &Command, wiring: Wiring<'_>, on_exit: ExitCb) -> io::Result<Child> {
        let Wiring { links, hold_moved, process_group, others_moving, foreground } = wiring;
        let foreground = cmd.foreground.or(foreground);
        let process_group = process_group.or(cmd.process_group);
        let name = cmd.check_input()?;
        cmd.check_group_kill(process_group)?;
        if ORPHANS_LEFT.load(Ordering::Relaxed) != 0 {
            reap_orphans();
        }
        let resolved;
        let child_path;
        let program = if name.to_bytes().contains(&b'/') {
            let relative = name.to_bytes().first() != Some(&b'/');
            if relative && cmd.cwd.is_some() {
                let here = std::env::current_dir().map_err(|e| {
                    context(e, format!("spawn `{}`: the parent's working directory", cmd.name()))
                })?;
                let full = here.join(OsStr::from_bytes(name.to_bytes()));
                resolved = CString::new(full.into_os_string().into_vec()).map_err(|_| {
                    invalid(format!("spawn `{}`: the parent's working directory contains a NUL", cmd.name()))
                })?;
                spawn::Program::Path(&resolved)
            } else {
                spawn::Program::Path(name)
            }
        } else {
            child_path = cmd.child_path();
            spawn::Program::Search { name, path: child_path.as_deref() }
        };
        let mut prep = Prepared::default();
        // With no fds given (the usual), it would find nothing to do; its inlined loops cost
        // the spawn some 15 instructions all the same.
        let prepared = if cmd.stdio.is_empty() && links.is_empty() {
            Ok(())
        } else {
            self.prepare_fds(cmd, links, others_moving, &mut prep)
        };
        if let Err(e) = prepared {
            self.restore_moved(&prep.moved);
            return Err(context(e, format!("spawn `{}`", cmd.name())));
        }
        let env = if cmd.env.is_some() { cmd.env_block() } else { None };
        if let Some(tty) = foreground {
            // Before the child has the terminal: from the background, no restore is made.
            self.tty_restore_handed_for(tty);
        }
        let foreground_fd = match foreground {
            None => None,
            Some(tty) => match self.foreground_fd(tty, process_group) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    self.restore_moved(&prep.moved);
                    return Err(context(e, format!("spawn `{}`: foreground", cmd.name())));
                }
            },
        };
        let sigchld_before = self.sigchld_expected();
        let req = spawn::Request {
            program,
            argv0: cmd.arg0.as_deref().unwrap_or(name),
            args: &cmd.args,
            env: env.as_deref(),
            cwd: cmd.cwd.as_ref().map(|(_, c)| c.as_c_str()),
            uid: cmd.uid,
            gid: cmd.gid,
            groups: cmd.groups.as_deref(),
            process_group,
            setsid: cmd.setsid,
            controlling_terminal: cmd.controlling_terminal,
            ignored_signals: cmd.ignored_signals,
            parent_death_signal: cmd.parent_death_signal,
            fds: &prep.fds,
            via: self.options.spawn_via,
            want_pidfd: cfg!(target_os = "linux") && !sigchld_before,
            foreground: foreground_fd,
        };
        // A loop that reaps through SIGCHLD watches it before the child exists.
        if sigchld_before {
            if let Err(e) = self.sigchld_watch() {
                self.restore_moved(&prep.moved);
                return Err(context(e, format!("spawn `{}`: watching SIGCHLD", cmd.name())));
            }
        }
        let spawned = match spawn::spawn(&req) {
            Ok(s) => s,
            Err(e) => {
                // (The child, if it ran, is reaped: one that took the terminal left it to a
                // group with no member.)
                self.take_terminal_back(foreground, None);
                self.restore_moved(&prep.moved);
                return Err(cmd.spawn_error(e, &prep.fds, process_group));
            }
        };
        log::debug!(
            "loop {}: spawned `{}` as pid {} ({:?})",
            self.id,
            cmd.name(),
            spawned.pid,
            spawned.method
        );
        // Taken apart: each part's drop is then inline, where those emptied or plain are
        // seen to need none (the drop of the whole, a call, looks at each).
        let Prepared { fds: _, pipes, child_ends, moved } = prep;
        drop(child_ends);
        let pid = spawned.pid;
        let pidfd = spawned.pidfd;
        let (group, leads_group) = match (cmd.setsid, process_group) {
            (true, _) | (false, Some(0)) => (pid, true),
            (false, Some(g)) => (g, false),
            (false, None) => (0, false),
        };
        let watched =
            self.process_insert(pid, group, leads_group, cmd.on_drop, on_exit, sigchld_before, pidfd);
        let id = match watched {
            Ok(id) if cmd.record_usage => self.child_record_usage(id),
            Ok(id) => id,
            Err(e) => {
                // Nothing would ever hear of its exit (no pidfd, and no SIGCHLD watcher: the
                // fd limit, say): end it and reap it now, SIGKILL taking effect at once,
                // rather than leave a child that nobody reaps.
                let _ = if leads_group {
                    sys::kill_group(pid, libc::SIGKILL)
                } else {
                    sys::kill(pid, libc::SIGKILL)
                };
                let _ = sys::wait(pid);
                self.take_terminal_back(foreground, None);
                self.restore_moved(&moved);
                return Err(context(
                    e,
                    format!("spawn `{}`: cannot watch the child for its exit", cmd.name()),
                ));
            }
        };
        let mut child =
            Child { process: Process(id), stdin: None, stdout: None, stderr: None, pipes: Vec::new() };
        for p in pipes {
            let made = fd::set_fresh_pipe_nonblocking(p.ours.as_fd())
                .and_then(|()| Pipe::from_private(self, p.ours, p.we_read, !p.we_read));
            let pipe = match made {
                Ok(pipe) => pipe,
                Err(e) => {
                    // The child runs, but the caller cannot have what it asked for: undo.
                    self.abandon_child(&child, false);
                    self.take_terminal_back(foreground, leads_group.then_some(pid));
                    self.restore_moved(&moved);
                    return Err(context(e, format!("spawn `{}`: opening a pipe to the child", cmd.name())));
                }
            };
            match p.target {
                0 => child.stdin = Some(pipe),
                1 => child.stdout = Some(pipe),
                2 => child.stderr = Some(pipe),
                n => child.pipes.push((n, pipe)),
            }
        }
        match hold_moved {
            Some(held) => held.extend_from_slice(&moved),
            None => self.close_moved(&moved),
        }
        if let Some((after, grace)) = cmd.timeout {
            if let Err(e) = self.process_start_timeout(id, after, grace) {
                log::warn!("loop {}: a child's timeout could not start: {e}", self.id);
            }
        }
        Ok(child)
    }

    /// `Command::timeout` and `Process::terminate_after` for process `id`, open and not
    /// reaped: a child still running `after` from now is ended, with its group if it leads
    /// one. Moves an earlier such deadline (its timer, which the reap and the handle's close
    /// cancel).
    #[cold]
    #[inline(never)]
    fn process_start_timeout(&mut self, id: HandleId, after: Duration, grace: Duration) -> io::Result<()> {
        // From now, not from the iteration's cached time, which a slow callback (one that
        // starts many children) may have left far behind.
        self.update_time();
        if let Some(deadline) = self.children.extras.get_mut(&id.key).and_then(|x| x.timeout.as_mut()) {
            (deadline.after, deadline.grace) = (after, grace);
            let timer = deadline.timer;
            return timer.restart(self, after);
        }
        let timer = crate::Timer::new(self);
        let started = timer.start(self, after, Duration::ZERO, move |lp, t| {
            let _ = t.close(lp);
            lp.process_deadline_reached(id);
        });
        if let Err(e) = started {
            let _ = timer.close(self);
            return Err(e);
        }
        // The child keeps the loop going, not its deadline.
        let _ = timer.set_ref(self, false);
        if let Ok(slot) = self.slot_mut(timer.id(), HandleKind::Timer) {
            slot.flags.insert(Flags::INTERNAL);
        }
        self.children.extras.entry(id.key).or_default().timeout = Some(Deadline { timer, after, grace });
        Ok(())
    }

    /// The deadline of process `id` came. (Its handle is open: the close cancels the timer.)
    fn process_deadline_reached(&mut self, id: HandleId) {
        let deadline = self.children.extras.get_mut(&id.key).and_then(|x| x.timeout.take());
        let Some(Deadline { after, grace, .. }) = deadline else { return };
        let p = Process(id);
        // An exit in this iteration, not handled yet, was in time.
        if !p.has_exited(self).is_ok_and(|exited| !exited) {
            return;
        }
        let leads_group = self.process_ref(id).is_ok_and(|st| st.leads_group);
        let mut ended = if leads_group { p.terminate_group(self, grace) } else { p.terminate(self, grace) };
        if leads_group && ended.as_ref().is_err_and(crate::is_no_such_process) {
            // The group is empty: its leader left it (a `setsid` of its own). End it alone.
            ended = p.terminate(self, grace);
        }
        match ended {
            Ok(()) => self.children.extras.entry(id.key).or_default().timed_out = Some(after),
            // (A child it may not signal: one that switched its ids.)
            Err(e) => log::warn!("loop {}: ending a child at its deadline: {e}", self.id),
        }
        // `terminate`'s SIGKILL goes with the handle: closed in the grace period, it ends
        // the child at once instead. (A group's escalation outlives the handle.)
        if let Some(Kind::Process(st)) = self.live_slot_mut(id).map(|s| &mut s.kind) {
            if st.on_drop == OnDrop::Nothing {
                st.on_drop = OnDrop::KillChild;
            }
        }
    }

    /// The time the deadline that ended process `id`'s child had given it, if one did.
    fn process_timed_out(&self, id: HandleId) -> Option<Duration> {
        self.children.extras.get(&id.key).and_then(|x| x.timed_out)
    }

    /// A process handle for child `pid`, just spawned, watched for its exit. An error means
    /// nothing would hear of the exit, and no handle was made.
    // Inline: it is the spawn's, and a call with these many arguments costs it some 15
    // instructions.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn process_insert(
        &mut self,
        pid: Pid,
        group: Pid,
        leads_group: bool,
        on_drop: OnDrop,
        on_exit: ExitCb,
        sigchld_running: bool,
        pidfd: Option<OwnedFd>,
    ) -> io::Result<HandleId> {
        let id = self.insert(Kind::Process(ProcessState {
            on_exit: Some(on_exit),
            pid,
            child_key: NO_CHILD,
            group,
            #[cfg(target_os = "linux")]
            pidfd: None,
            status: 0,
            reaped: false,
            status_known: false,
            leads_group,
            on_drop,
        }));
        let key = match self.child_watch(id, pid, sigchld_running, pidfd) {
            Ok(key) => key,
            Err(e) => {
                drop(self.slot_release(id));
                return Err(e);
            }
        };
        self.update_then_set_active(id, true, |kind| {
            if let Kind::Process(st) = kind {
                st.child_key = key as u32;
            }
            Some(())
        });
        Ok(id)
    }

    /// After a failed spawn whose child (or a pipeline's stage) may have taken the terminal
    /// (`Command::foreground`): the caller's group takes it back from `dying` (the group of
    /// children killed but not reaped yet), or from a group with no member left, rather
    /// than leave it to a dead group. A live group that had it stays in front.
    fn take_terminal_back(&self, foreground: Option<HandleId>, dying: Option<i32>) {
        let Some(tty) = foreground.map(crate::Tty) else { return };
        let own = sys::process_group();
        let Ok(front) = tty.foreground_group(self) else { return };
        if front != own && (Some(front) == dying || !evloop_platform::termios::group_alive(front)) {
            if let Err(e) = tty.set_foreground_group(self, own) {
                log::warn!("loop {}: taking the terminal back after a failed spawn: {e}", self.id);
            }
        }
    }

    /// The fd of tty handle `tty`, for a child that takes its terminal for its own group.
    fn foreground_fd(&self, tty: HandleId, process_group: Option<i32>) -> io::Result<RawFd> {
        if process_group.is_none() {
            return Err(invalid(
                "the child needs a process group of its own (Command::process_group) to take the terminal for",
            ));
        }
        let fd = self.open_stream_ref(tty, HandleKind::Tty)?.io.fd()?;
        // From the background, the child would take the terminal from the group in front (a
        // shell's), the blocked SIGTTOU letting it. (A pipeline's later stage joins the
        // group that took it. Where the group cannot be asked, the child's own call fails.)
        if let Ok(front) = evloop_platform::termios::foreground_group(fd) {
            let own = sys::process_group();
            let joined = process_group.filter(|&g| g > 0);
            if front > 0
                && front != own
                && Some(front) != joined
                && evloop_platform::termios::group_alive(front)
            {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "this process runs in the background: process group {front} has the terminal, not \
                         {own}, this process's, and the child would take it from that group (a child in \
                         this process's group, without `foreground`, stops and continues with it, as \
                         git's pager does)"
                    ),
                ));
            }
        }
        Ok(fd.as_raw_fd())
    }

    /// Builds the fd mappings: new pipes, /dev/null, moved handles.
    fn prepare_fds(
        &mut self,
        cmd: &Command,
        links: &[(RawFd, RawFd)],
        others_moving: &[HandleId],
        prep: &mut Prepared,
    ) -> io::Result<()> {
        let mut null: Option<RawFd> = None;
        for (target, stdio) in &cmd.stdio {
            let target = *target;
            if links.iter().any(|&(t, _)| t == target) {
                continue;
            }
            let source = match stdio {
                // After every other fd, below.
                Stdio::SameAs(_) => continue,
                Stdio::Inherit if target < 3 => continue,
                Stdio::Inherit => Source::Keep,
                Stdio::Close => Source::Close,
                Stdio::Null => match null {
                    Some(fd) => Source::Fd(fd),
                    None => {
                        let dev = fd::open(c"/dev/null", fd::Access::ReadWrite, false)?;
                        let raw = dev.as_raw_fd();
                        prep.child_ends.push(dev);
                        null = Some(raw);
                        Source::Fd(raw)
                    }
                },
                Stdio::Pipe | Stdio::PipeIn => {
                    let child_reads = matches!(stdio, Stdio::PipeIn) || target == 0;
                    let (r, w) = fd::pipe()?;
                    let (theirs, ours) = if child_reads { (r, w) } else { (w, r) };
                    let raw = theirs.as_raw_fd();
                    prep.child_ends.push(theirs);
                    prep.pipes.push(NewPipe { target, ours, we_read: !child_reads });
                    Source::Fd(raw)
                }
                Stdio::Fd(owned) => Source::Fd(owned.as_raw_fd()),
                Stdio::InheritFrom(n) => Source::Fd(*n),
                Stdio::Handle(hid) => {
                    let hid = *hid;
                    let kind = self.handle_kind(hid).map_err(|e| {
                        let hint = moved_hint(&e);
                        context(e, format!("child fd {target}{hint}"))
                    })?;
                    if !matches!(kind, HandleKind::Pipe | HandleKind::Tty) {
                        return Err(invalid(format!(
                            "child fd {target}: a {} cannot be a child's fd (only a pipe or a tty)",
                            kind.name()
                        )));
                    }
                    // A closing handle (one an earlier spawn moved to its child, say) is
                    // refused with its name, not with the EBADF of its missing fd.
                    let moved = self.stream_mut(hid, kind).and_then(|stream| {
                        // A child reads its stdin and writes its stdout and stderr: a pipe end
                        // that goes the other way can only be a mistake (the child would get
                        // EBADF), so refuse it. (A tty is left alone: a child may only ioctl
                        // it.)
                        let (wrong_way, needs) = match target {
                            _ if kind != HandleKind::Pipe => (false, ""),
                            0 => (!stream.readable, "reading"),
                            1 | 2 => (!stream.writable, "writing"),
                            _ => (false, ""),
                        };
                        if wrong_way {
                            return Err(invalid(format!(
                                "the handle is not open for {needs}, which the child's {} needs",
                                ["stdin", "stdout", "stderr"][target as usize]
                            )));
                        }
                        Ok(stream.io.fd()?.as_raw_fd())
                    });
                    let raw = moved.map_err(|e| {
                        let hint = moved_hint(&e);
                        context(e, format!("child fd {target} from the {} {hid:?}{hint}", kind.name()))
                    })?;
                    // Made blocking for the child below, once every moved handle is known.
                    prep.moved.push((hid, kind, false));
                    Source::Fd(raw)
                }
            };
            prep.fds.push(FdMapping { target, source });
        }
        for &(target, source) in links {
            prep.fds.push(FdMapping { target, source: Source::Fd(source) });
        }
        for (target, stdio) in &cmd.stdio {
            if let Stdio::SameAs(n) = *stdio {
                if !links.iter().any(|&(t, _)| t == *target) {
                    let source = same_as_source(cmd, &prep.fds, *target, n)?;
                    prep.fds.push(FdMapping { target: *target, source });
                }
            }
        }
        if !prep.moved.is_empty() {
            self.block_moved_for_child(others_moving, &mut prep.moved)?;
        }
        Ok(())
    }

    /// The children get moved handles' fds blocking, unless that takes `O_NONBLOCK` from
    /// another open stream of this loop (not moved: those close after the spawn) that relies
    /// on it: that stream's reads and writes would then block the loop.
    #[cold]
    #[inline(never)]
    fn block_moved_for_child(&mut self, others_moving: &[HandleId], moved: &mut [Moved]) -> io::Result<()> {
        let moving: Vec<HandleId> = moved.iter().map(|m| m.0).chain(others_moving.iter().copied()).collect();
        for m in moved.iter_mut() {
            let (hid, kind, _) = *m;
            let cleared = self.stream_ref(hid, kind).and_then(|s| {
                let fd = s.io.fd()?;
                let was = fd::set_nonblocking(fd, false)?;
                if was && s.shared && self.took_nonblocking(fd, &moving) {
                    log::debug!(
                        "loop {}: {hid:?} goes to the child with O_NONBLOCK: another handle on its description needs it",
                        self.id
                    );
                    fd::set_nonblocking(fd, true)?;
                    return Ok(false);
                }
                Ok(was)
            });
            m.2 = cleared.map_err(|e| context(e, format!("the {} {hid:?} for a child", kind.name())))?;
        }
        Ok(())
    }

    /// Whether clearing `O_NONBLOCK` through `fd` just took it from an open stream that
    /// relies on it (and so had it), other than those `moving`: that stream is on the same
    /// open file description. Only streams on the same file, open for the same access, are
    /// looked at; whether it is the same description, only the flag can tell everywhere.
    #[cold]
    fn took_nonblocking(&self, fd: BorrowedFd<'_>, moving: &[HandleId]) -> bool {
        self.slots.iter().any(|(key, slot)| {
            !moving.iter().any(|m| m.key as usize == key)
                && !slot.flags.contains(Flags::CLOSING)
                && matches!(&slot.kind, Kind::Stream(s)
                if s.relies_on_nonblocking()
                    && s.io.fd().is_ok_and(|other| {
                        fd::may_share_description(fd, other)
                            && fd::status_flags(other).is_ok_and(|f| !f.nonblocking)
                    }))
        })
    }

    /// Closes handles whose fds moved to children that started.
    fn close_moved(&mut self, moved: &[Moved]) {
        for &(hid, kind, _) in moved {
            // (A handle a pipeline gave to several stages is closing after the first.)
            let _ = self.close_handle(hid, kind, None);
        }
    }

    /// A failed spawn hands moved handles back as they were.
    fn restore_moved(&mut self, moved: &[Moved]) {
        for &(hid, kind, was_nonblocking) in moved {
            if was_nonblocking {
                if let Ok(fd) = self.stream_ref(hid, kind).and_then(|s| s.io.fd()) {
                    if let Err(e) = fd::set_nonblocking(fd, true) {
                        log::warn!("loop {}: {hid:?} stays blocking after a failed spawn: {e}", self.id);
                    }
                }
            }
        }
    }

    /// Gives up on a started child: SIGKILL, handle and pipes closed; the loop reaps it in
    /// the background.
    /// With `group`, what it started in its group goes too (a pipeline's own group).
    fn abandon_child(&mut self, child: &Child, group: bool) {
        for p in child.all_pipes() {
            let _ = p.close(self);
        }
        if let Some(Kind::Process(st)) = self.live_slot_mut(child.process.0).map(|s| &mut s.kind) {
            if group {
                st.on_drop = OnDrop::KillGroup;
            } else if st.on_drop == OnDrop::Nothing {
                st.on_drop = OnDrop::KillChild;
            }
        }
        // Closing sends the SIGKILL (at once, even into a group whose `terminate_group`
        // grace period runs); the loop reaps the child when it dies.
        self.children.abandoning = true;
        let _ = child.process.close(self);
        self.children.abandoning = false;
    }

    // ----- reaping ------------------------------------------------------------------------

    /// Whether this loop's next child will be reaped through SIGCHLD.
    fn sigchld_expected(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.options.force_sigchld_reaping || PIDFD_MISSING.load(Ordering::Relaxed)
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Starts the internal SIGCHLD watcher if it is not running.
    fn sigchld_watch(&mut self) -> io::Result<()> {
        // (Someone closing every handle of the loop may have closed it.)
        let live = self.children.sigchld.is_some_and(|s| {
            let id = s.id();
            self.slots
                .get(id.key as usize)
                .is_some_and(|slot| slot.gen_ == id.gen_ && !slot.flags.contains(Flags::CLOSING))
        });
        if live {
            return Ok(());
        }
        if evloop_platform::signal::children_reaped_by_kernel()? {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SIGCHLD is ignored in this process (SIG_IGN or SA_NOCLDWAIT): the kernel reaps \
                 every child by itself, so SIGCHLD cannot tell of a child's exit or stop, and \
                 evloop will not take that behaviour from the rest of the program; set SIGCHLD \
                 back to SIG_DFL first",
            ));
        }
        let s = Signal::new(self);
        // Internal from the start: not listed by `handles`, even while a failed start closes.
        if let Some(slot) = self.live_slot_mut(s.id()) {
            slot.flags.insert(Flags::INTERNAL);
        }
        let started = s.start(self, libc::SIGCHLD, |lp, _, _| lp.children_sweep());
        if let Err(e) = started {
            let _ = s.close(self);
            return Err(e);
        }
        let _ = s.set_ref(self, false);
        self.children.sigchld = Some(s);
        log::debug!("loop {}: watching SIGCHLD", self.id);
        Ok(())
    }

    /// Registers child `pid` of handle `id` for exit notification; returns its entry key. An
    /// error means nothing would hear of the child's exit, and nothing was registered.
    /// `pidfd` is the child's, when its spawn gave one.
    fn child_watch(
        &mut self,
        id: HandleId,
        pid: Pid,
        sigchld_running: bool,
        pidfd: Option<OwnedFd>,
    ) -> io::Result<usize> {
        self.children.registered += 1;
        let key = self.children.entries.vacant_key();
        let watch = self.exit_notification(key, pid, pidfd);
        if matches!(watch, Watch::Sigchld) && !sigchld_running {
            // An unexpected fallback: the watcher starts only now, and the child may have
            // exited before it was there to hear it.
            self.sigchld_watch()?;
            self.pending.push_back(Pending::Child(ChildCheck { key, pid, blocking: false }));
        }
        let inserted = self.children.entries.insert(ChildEntry {
            pid,
            watch,
            owner: Some(id),
            keeps_alive: false,
            killed: false,
            spared: false,
            stopped: false,
            on_our_pty: false,
            record_usage: false,
        });
        debug_assert_eq!(inserted, key);
        Ok(key)
    }

    /// Whether child entry `key` was gone before it could be watched ([`Watch::Gone`]): its
    /// pid is not to be signalled or waited for.
    fn child_gone(&self, key: usize) -> bool {
        #[cfg(target_os = "linux")]
        return self.children.entries.get(key).is_some_and(|e| matches!(e.watch, Watch::Gone));
        #[cfg(not(target_os = "linux"))]
        {
            let _ = key;
            false
        }
    }

    /// The best way this platform offers to hear of `pid`'s exit.
    fn exit_notification(&mut self, key: usize, pid: Pid, pidfd: Option<OwnedFd>) -> Watch {
        #[cfg(not(target_os = "linux"))]
        drop(pidfd);
        #[cfg(target_os = "linux")]
        if !self.sigchld_expected() {
            use evloop_platform::poller::Interest;
            // (One from `clone` goes above the fd floor here, as `pidfd_open`'s does there.)
            match pidfd.map_or_else(|| sys::pidfd_open(pid), fd::settle) {
                Ok(pidfd) => match self.poller.update(
                    pidfd.as_fd(),
                    child_token(key),
                    Interest::empty(),
                    Interest::READABLE,
                ) {
                    Ok(()) => return Watch::Pidfd(pidfd),
                    Err(e) => {
                        log::warn!("loop {}: epoll refused the pidfd of {pid} ({e}); using SIGCHLD", self.id)
                    }
                },
                // Reaped already, by the kernel (SIGCHLD ignored) or by someone's waitpid(-1):
                // nothing to watch, and SIGCHLD would not help. Its status is lost. (The error
                // is ESRCH, or EINVAL for a group or session leader whose group lives on:
                // waitid, which does not reap, says whether the child is still ours.)
                Err(e)
                    if e.raw_os_error() != Some(libc::ENOSYS)
                        && sys::has_exited(pid).is_err_and(|e| e.raw_os_error() == Some(libc::ECHILD)) =>
                {
                    self.pending.push_back(Pending::Child(ChildCheck { key, pid, blocking: false }));
                    return Watch::Gone;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    PIDFD_MISSING.store(true, Ordering::Relaxed);
                    log::warn!("loop {}: no pidfd_open (ENOSYS); reaping children through SIGCHLD", self.id);
                }
                Err(e) => log::warn!("loop {}: no pidfd for child {pid} ({e}); using SIGCHLD", self.id),
            }
        }
        #[cfg(any(target_os = "macos", target_os = "freebsd"))]
        match self.poller.watch_exit(pid, child_token(key)) {
            Ok(true) => return Watch::Kqueue,
            Ok(false) => {
                // ESRCH: it already exited. Reap it in the pending phase.
                self.pending.push_back(Pending::Child(ChildCheck { key, pid, blocking: true }));
                return Watch::Kqueue;
            }
            Err(e) => log::warn!("loop {}: EVFILT_PROC for {pid} failed ({e}); using SIGCHLD", self.id),
        }
        let _ = (key, pid);
        Watch::Sigchld
    }

    /// The poller reported child entry `key` (its pidfd or its `EVFILT_PROC`).
    pub(crate) fn on_child_event(&mut self, token: u64) {
        let key = token as usize - 1;
        let Some(entry) = self.children.entries.get(key) else { return };
        let (pid, record_usage) = (entry.pid, entry.record_usage);
        let block = match entry.watch {
            #[cfg(target_os = "linux")]
            Watch::Pidfd(_) => false,
            // NOTE_EXIT fired, so the child has exited; but xnu posts it before the child is
            // a zombie that `waitpid(WNOHANG)` finds, and the one-shot event comes only once:
            // wait, as libuv does (a moment at most). The pid is this event's: a kqueue-watched
            // entry is freed only by this reap, or when its registration found it gone
            // already, which left no event behind.
            #[cfg(any(target_os = "macos", target_os = "freebsd"))]
            Watch::Kqueue => true,
            Watch::Sigchld => return,
            #[cfg(target_os = "linux")]
            Watch::Gone => return,
        };
        self.child_reap(key, pid, block, record_usage);
    }

    /// Reaps child entry `key`, which is `pid`, if it has exited (waiting for that if
    /// `block`), with its resource usage if `record_usage`. `false` while it runs.
    fn child_reap(&mut self, key: usize, pid: Pid, block: bool, record_usage: bool) -> bool {
        let res = if record_usage {
            self.child_reap_recording(key, pid, block)
        } else {
            sys::reap(pid, block, None)
        };
        match res {
            Ok(None) => return false,
            Ok(Some(st)) => self.child_finish(key, Ok(st)),
            Err(e) => self.child_finish(key, Err(e)),
        }
        true
    }

    /// `child_reap`'s wait for a child with `Command::record_usage`: its usage goes with its
    /// handle, for the exit callback and after.
    #[cold]
    #[inline(never)]
    fn child_reap_recording(&mut self, key: usize, pid: Pid, block: bool) -> io::Result<Option<WaitStatus>> {
        let mut usage = ResourceUsage::default();
        let res = sys::reap(pid, block, Some(&mut usage));
        if let (Ok(Some(_)), Some(owner)) = (&res, self.children.entries[key].owner) {
            self.children.extras.entry(owner.key).or_default().usage = Usage::Known(usage);
        }
        res
    }

    /// Child `id` was just spawned with `Command::record_usage`: its reap keeps its usage.
    #[cold]
    #[inline(never)]
    fn child_record_usage(&mut self, id: HandleId) -> HandleId {
        if let Some(key) = self.process_ref(id).ok().and_then(ProcessState::child_key) {
            self.children.entries[key].record_usage = true;
            self.children.extras.entry(id.key).or_default().usage = Usage::Awaited;
        }
        id
    }

    /// The pending phase's look at a child whose exit may have been missed.
    pub(crate) fn child_check(&mut self, c: ChildCheck) {
        match self.children.entries.get(c.key) {
            #[cfg(target_os = "linux")]
            Some(e) if e.pid == c.pid && matches!(e.watch, Watch::Gone) => {
                // No wait: the pid may name another process now.
                self.child_finish(c.key, Err(os(libc::ECHILD)));
            }
            Some(e) if e.pid == c.pid => {
                let record_usage = e.record_usage;
                self.child_reap(c.key, c.pid, c.blocking, record_usage);
            }
            _ => {}
        }
    }

    /// Reports the latest change of child entry `c.key` since the last look (stopped or
    /// continued), if it still is `c.pid` and watched.
    pub(crate) fn child_stop_check(&mut self, c: ChildCheck) {
        // Twice at most: a change, and one that came while its callback ran.
        for _ in 0..2 {
            let entry = self.children.entries.get(c.key).filter(|e| e.pid == c.pid);
            let Some((owner, stopped)) = entry.and_then(|e| Some((e.owner?, e.stopped))) else { return };
            let Some(w) = self.children.stops.iter_mut().find(|w| w.key == c.key && w.pid == c.pid) else {
                return;
            };
            let Some(mut cb) = w.cb.take() else { return };
            let event = match sys::try_wait_run_change(c.pid) {
                Ok(Some(sys::RunChange::Stopped(signal))) => StopEvent::Stopped(signal),
                Ok(Some(sys::RunChange::Continued)) if stopped => StopEvent::Continued,
                Ok(Some(sys::RunChange::Continued)) | Ok(None) => {
                    w.cb = Some(cb);
                    return;
                }
                Err(e) => {
                    w.cb = Some(cb);
                    log::debug!("loop {}: waitid(WSTOPPED) for {}: {e}", self.id, c.pid);
                    return;
                }
            };
            let epoch = w.epoch;
            self.children.entries[c.key].stopped = matches!(event, StopEvent::Stopped(_));
            log::trace!("loop {}: child {} {event:?}", self.id, c.pid);
            cb(self, Process(owner), event);
            let own = |w: &&mut StopWatch| w.key == c.key && w.pid == c.pid && w.epoch == epoch;
            match self.children.stops.iter_mut().find(own) {
                Some(w) => w.cb = Some(cb),
                None => return,
            }
        }
    }

    /// Ends the stop watch of child entry `key`, if it has one.
    fn child_unwatch_stops(&mut self, key: usize) {
        if !self.children.stops.is_empty() {
            self.children.stops.retain(|w| w.key != key);
        }
    }

    /// SIGCHLD arrived: report the watched children that stopped or continued, then
    /// `waitpid(pid, WNOHANG)` for each of our children that relies on SIGCHLD for its exit.
    fn children_sweep(&mut self) {
        let mut keys = std::mem::take(&mut self.children.scratch);
        keys.clear();
        keys.extend(self.children.stops.iter().map(|w| (w.key, w.pid)));
        for &(key, pid) in &keys {
            self.child_stop_check(ChildCheck { key, pid, blocking: false });
        }
        keys.clear();
        keys.extend(
            self.children
                .entries
                .iter()
                .filter(|(_, e)| matches!(e.watch, Watch::Sigchld))
                .map(|(k, e)| (k, e.pid)),
        );
        for &(key, pid) in &keys {
            match self.children.entries.get(key) {
                Some(e) if e.pid == pid => {
                    let record_usage = e.record_usage;
                    self.child_reap(key, pid, false, record_usage);
                }
                _ => {}
            }
        }
        self.children.scratch = keys;
        if self.children.adopted.is_some() {
            self.adopted_sweep();
        }
    }

    /// Reaps the children of this process that this loop did not spawn, and calls `cb` with
    /// each one's pid, group and status ([`AdoptedExit`]): the orphans a subreaper inherits (see
    /// [`process::become_subreaper`](crate::process::become_subreaper)), and the children
    /// a process had before it exec'd this program. What a supervisor or an init needs,
    /// where evloop otherwise leaves every child it did not spawn alone.
    ///
    /// **Every** such child: also those that other code in this process spawned (a
    /// `std::process::Command`, another evloop loop), whose own wait then fails with
    /// `ECHILD`. So this is for a program whose children all come from this loop.
    ///
    /// How: on each `SIGCHLD` (through the loop's internal watcher, unreferenced: this keeps
    /// nothing alive), `waitid(P_ALL, WNOWAIT)` names an exited child without reaping it; a
    /// child of this loop goes to its own exit callback, any other is reaped by pid and
    /// reported here. Children that exited before this call are looked at in the next
    /// pending phase, never inside it. A second call replaces the callback. Fails where
    /// `SIGCHLD` is ignored (the kernel reaps every child itself then).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let s = seen.clone();
    /// lp.reap_adopted(move |_lp, exit| s.borrow_mut().push(exit))?;
    /// lp.run(RunMode::NoWait)?;
    /// lp.stop_reaping_adopted();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reap_adopted(&mut self, cb: impl FnMut(&mut Loop, AdoptedExit) + 'static) -> io::Result<()> {
        self.sigchld_watch()?;
        self.children.adopted = Some(Box::new(cb));
        self.children.adopted_epoch = self.children.adopted_epoch.wrapping_add(1);
        self.pending.push_back(Pending::Adopted);
        Ok(())
    }

    /// Stops [`reap_adopted`](Self::reap_adopted): the children this loop did not spawn are
    /// left alone again. Does nothing when it was not on.
    pub fn stop_reaping_adopted(&mut self) {
        if self.children.adopted.take().is_some() {
            self.children.adopted_epoch = self.children.adopted_epoch.wrapping_add(1);
        }
    }

    /// Reaps the exited children of the process, for [`reap_adopted`](Self::reap_adopted):
    /// this loop's own through their entries, the others reported to its callback.
    pub(crate) fn adopted_sweep(&mut self) {
        // This loop's children by pid, made at the first exit found and again after a
        // callback spawned: a scan per child would make a burst of exits quadratic.
        let mut own: Option<(u64, HashMap<Pid, usize>)> = None;
        for _ in 0..ADOPTED_REAPS_PER_SWEEP_MAX {
            if self.children.adopted.is_none() {
                return;
            }
            let pid = match sys::exited_child() {
                Ok(Some(pid)) => pid,
                Ok(None) => return,
                Err(e) => {
                    log::warn!("loop {}: looking for exited children: {e}", self.id);
                    return;
                }
            };
            let registered = self.children.registered;
            if own.as_ref().is_none_or(|(at, _)| *at != registered) {
                // (Not those gone before their watch: their pids may be others' now.)
                let pids = (self.children.entries.iter())
                    .filter(|&(key, _)| !self.child_gone(key))
                    .map(|(key, e)| (e.pid, key))
                    .collect();
                own = Some((registered, pids));
            }
            let key = own.as_ref().and_then(|(_, pids)| pids.get(&pid).copied());
            if let Some(key) = key.filter(|&k| self.children.entries.get(k).is_some_and(|e| e.pid == pid)) {
                // One of this loop's own, whose notification may still be on its way.
                #[cfg(any(target_os = "macos", target_os = "freebsd"))]
                if matches!(self.children.entries[key].watch, Watch::Kqueue) {
                    // Its `NOTE_EXIT` is queued (it is a zombie): that event reaps it, whose
                    // blocking wait must find it unreaped. The rest after it.
                    self.pending.push_back(Pending::Adopted);
                    return;
                }
                let record_usage = self.children.entries[key].record_usage;
                if !self.child_reap(key, pid, false, record_usage) {
                    return;
                }
                continue;
            }
            // (Read while it is a zombie: reaped, it has none.)
            let group = sys::group_of(pid).unwrap_or(0);
            let status = match sys::try_wait(pid) {
                Ok(Some(st)) => ExitStatus::from(st),
                // (Reaped meanwhile by another thread: nothing to report.)
                Ok(None) | Err(_) => return,
            };
            forget_orphan(pid);
            log::debug!("loop {}: reaped adopted child {pid} of group {group}: {status}", self.id);
            let Some(mut cb) = self.children.adopted.take() else { return };
            let epoch = self.children.adopted_epoch;
            cb(self, AdoptedExit { pid, group, status });
            if self.children.adopted_epoch == epoch {
                self.children.adopted = Some(cb);
            }
        }
        // More than one sweep's worth: the rest after other work.
        self.pending.push_back(Pending::Adopted);
    }

    /// Child entry `key` was reaped (or cannot be): release its notification and tell its
    /// handle, if it still has one.
    // Out of line: its exit callback call then stays inline in it, and the event dispatch
    // that reaches it stays small.
    #[inline(never)]
    fn child_finish(&mut self, key: usize, res: io::Result<WaitStatus>) {
        let entry = self.children.entries.remove(key);
        self.child_unwatch_stops(key);
        #[cfg(target_os = "linux")]
        let mut pidfd = None;
        match entry.watch {
            #[cfg(target_os = "linux")]
            Watch::Pidfd(fd) => {
                use evloop_platform::poller::Interest;
                // Out of epoll now: an exited child's pidfd stays readable.
                if let Err(e) = self.poller.deregister(fd.as_fd(), Interest::READABLE) {
                    log::debug!("loop {}: deregistering the pidfd of {}: {e}", self.id, entry.pid);
                }
                pidfd = Some(fd);
            }
            #[cfg(any(target_os = "macos", target_os = "freebsd"))]
            Watch::Kqueue => {}
            Watch::Sigchld => {}
            #[cfg(target_os = "linux")]
            Watch::Gone => {}
        }
        if entry.keeps_alive {
            self.children.keep_alive -= 1;
        }
        let res = res.map(ExitStatus::from).map_err(|e| {
            if e.raw_os_error() == Some(libc::ECHILD) {
                context(
                    e,
                    format!(
                        "child {} was reaped by someone else (SIGCHLD set to SIG_IGN, or other code \
                         calling waitpid(-1) or wait())",
                        entry.pid
                    ),
                )
            } else {
                context(e, format!("waiting for child {}", entry.pid))
            }
        });
        let Some(id) = entry.owner else {
            log::debug!("loop {}: reaped background child {}: {res:?}", self.id, entry.pid);
            return;
        };
        // (The owner comes from this loop's child table.) Made inactive, in the same lookup.
        let Some(cb) = self.update_then_set_active(id, false, |kind| {
            let Kind::Process(st) = kind else { return None };
            st.child_key = NO_CHILD;
            st.reaped = true;
            if let Ok(status) = &res {
                st.status = pack_status(*status);
                st.status_known = true;
            }
            // Only a group leader's pidfd is of use after the reap: it names the group
            // race-free. Any other closes now, not with the handle, which a program may keep
            // for long.
            // (Taken, not moved in: another's still closes at the end of this function.)
            #[cfg(target_os = "linux")]
            if st.leads_group {
                st.pidfd = pidfd.take();
            }
            Some(st.on_exit.take())
        }) else {
            return;
        };
        if !self.children.extras.is_empty() {
            self.process_cancel_timers(id);
        }
        log::debug!("loop {}: child {} {res:?}", self.id, entry.pid);
        if let Some(cb) = cb {
            cb(self, Process(id), res);
        }
    }

    /// Sets what closing process handle `id` (open) ends besides the child's watch (see
    /// `Children::extras`). Its close takes the hook out before the slot goes.
    fn process_on_close(&mut self, id: HandleId, hook: CloseHook) {
        debug_assert!(self.live_slot_mut(id).is_some());
        self.children.extras.entry(id.key).or_default().close_hook = Some(hook);
    }

    /// [`Process::pause_output`] (`pause`) and [`Process::resume_output`].
    /// Pauses or resumes the capture's output: every stream it captures, or the one of `which`.
    fn process_output_flow(
        &mut self,
        id: HandleId,
        pause: bool,
        which: Option<OutputStream>,
    ) -> io::Result<()> {
        if self.handle_flags(id, HandleKind::Process)?.contains(Flags::CLOSING) {
            return Err(crate::event_loop::closing_error(HandleKind::Process));
        }
        let pipes = match self.children.extras.get(&id.key) {
            Some(extras) if !extras.output.is_empty() => extras.output.clone(),
            _ => {
                return Err(invalid(
                    "the process's output is not captured (Command::output or stream_output, of a stream the \
                     command does not send elsewhere); pause the pipes of a spawned child with Pipe::read_pause",
                ));
            }
        };
        for (_, pipe) in pipes.into_iter().filter(|&(stream, _)| which.is_none_or(|w| w == stream)) {
            // A stream that ended is closed or closing: nothing left to pause or resume.
            if pipe.is_closing(self).unwrap_or(true) {
                continue;
            }
            if pause {
                pipe.read_pause(self)?;
            } else {
                pipe.read_resume(self)?;
            }
        }
        if let Some(mut hook) = self.children.extras.get_mut(&id.key).and_then(|e| e.on_flow.take()) {
            hook(self);
            if let Some(e) = self.children.extras.get_mut(&id.key) {
                e.on_flow.get_or_insert(hook);
            }
        }
        Ok(())
    }

    /// [`Process::cut_output`].
    fn process_cut_output(&mut self, id: HandleId) -> io::Result<()> {
        if self.handle_flags(id, HandleKind::Process)?.contains(Flags::CLOSING) {
            return Err(crate::event_loop::closing_error(HandleKind::Process));
        }
        let not_captured =
            || invalid("the process's output is not captured (Command::output or stream_output)");
        let mut hook =
            self.children.extras.get_mut(&id.key).and_then(|e| e.on_cut.take()).ok_or_else(not_captured)?;
        hook(self);
        if let Some(e) = self.children.extras.get_mut(&id.key) {
            e.on_cut.get_or_insert(hook);
        }
        Ok(())
    }

    /// Makes the child of process `id`, if not reaped yet, keep `run(Default)` going until
    /// it is, whatever the handle's `set_ref`.
    fn child_keeps_loop_alive(&mut self, id: HandleId) {
        let Some(Kind::Process(st)) = self.live_slot_mut(id).map(|s| &mut s.kind) else { return };
        let Some(key) = st.child_key() else { return };
        if let Some(entry) = self.children.entries.get_mut(key) {
            if !entry.keeps_alive {
                entry.keeps_alive = true;
                self.children.keep_alive += 1;
            }
        }
    }

    // ----- handle operations --------------------------------------------------------------

    fn process_ref(&self, id: HandleId) -> io::Result<&ProcessState> {
        match &self.slot(id, HandleKind::Process)?.kind {
            Kind::Process(st) => Ok(st),
            _ => unreachable!("slot() checked the kind"),
        }
    }

    fn process_watch_stops(&mut self, id: HandleId, cb: Option<StopCb>) -> io::Result<()> {
        let st = self.open_slot_mut(id, HandleKind::Process)?;
        let Kind::Process(st) = &st.kind else { unreachable!("checked the kind") };
        let pid = st.pid;
        let Some(key) = st.child_key().filter(|&k| !self.child_gone(k)) else {
            if cb.is_none() {
                return Ok(());
            }
            return Err(context(os(libc::ESRCH), format!("watch_stops: child {pid} has exited")));
        };
        if cb.is_some() {
            // Before the first look below: a stop after that look raises SIGCHLD.
            self.sigchld_watch().map_err(|e| context(e, "watch_stops: watching SIGCHLD"))?;
        }
        self.child_unwatch_stops(key);
        if let Some(cb) = cb {
            let pid = self.children.entries[key].pid;
            self.children.stop_epoch = self.children.stop_epoch.wrapping_add(1);
            let epoch = self.children.stop_epoch;
            self.children.stops.push(StopWatch { key, pid, cb: Some(cb), epoch });
            // It may have stopped already, before anything listened.
            self.pending.push_back(Pending::Stops(ChildCheck { key, pid, blocking: false }));
        }
        Ok(())
    }

    fn process_kill(&mut self, id: HandleId, signal: i32, group: bool) -> io::Result<()> {
        self.open_slot_mut(id, HandleKind::Process)?;
        self.process_signal(id.key as usize, signal, group)?;
        if signal == libc::SIGCONT {
            // macOS announces no continue with SIGCHLD: look at the watched children now
            // (the state is set before kill returns). Elsewhere this finds what the SIGCHLD
            // would have, once: each change is reported once.
            for w in &self.children.stops {
                self.pending.push_back(Pending::Stops(ChildCheck {
                    key: w.key,
                    pid: w.pid,
                    blocking: false,
                }));
            }
        }
        Ok(())
    }

    /// `kill` or `kill_group` for the process handle in slot `key`, which was checked.
    fn process_signal(&self, key: usize, signal: i32, group: bool) -> io::Result<()> {
        // Field borrows: the slot and the children table are disjoint.
        let Kind::Process(st) = &self.slots[key].kind else { unreachable!("checked the kind") };
        let entry = st.child_key().and_then(|k| self.children.entries.get(k));
        if !group {
            if st.reaped {
                return Err(os(libc::ESRCH));
            }
            #[cfg(target_os = "linux")]
            if let Some(ChildEntry { watch: Watch::Gone, .. }) = entry {
                return Err(os(libc::ESRCH));
            }
            #[cfg(target_os = "linux")]
            if let Some(ChildEntry { watch: Watch::Pidfd(fd), .. }) = entry {
                match sys::pidfd_send_signal(fd.as_fd(), signal, false) {
                    // No such call (a sandbox, or valgrind before 3.20, where the pidfd came
                    // from `clone`): by pid, which nobody but the loop reaps.
                    Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
                    other => return other,
                }
            }
            return sys::kill(st.pid, signal);
        }
        #[cfg(target_os = "linux")]
        let pidfd = match entry {
            Some(ChildEntry { watch: Watch::Pidfd(fd), .. }) => Some(fd.as_fd()),
            _ => st.pidfd.as_ref().map(|fd| fd.as_fd()),
        };
        #[cfg(not(target_os = "linux"))]
        let pidfd = {
            // kqueue systems name a group by number only.
            let _ = entry;
            None
        };
        signal_group(st.group, st.leads_group, pidfd, signal)
    }

    /// The group that process `id`'s child leads or joined, named for later (see
    /// [`GroupTarget`]).
    fn process_group_target(&self, id: HandleId) -> io::Result<GroupTarget> {
        let Kind::Process(st) = &self.slot(id, HandleKind::Process)?.kind else {
            unreachable!("checked the kind")
        };
        #[cfg(target_os = "linux")]
        let pidfd = {
            let entry = st.child_key().and_then(|k| self.children.entries.get(k));
            let fd = match entry {
                Some(ChildEntry { watch: Watch::Pidfd(fd), .. }) => Some(fd),
                _ => st.pidfd.as_ref(),
            };
            match fd {
                // No copy (out of fds: EMFILE), the group by number, with the race
                // `kill_group` describes, rather than no signal at all.
                Some(fd) if st.leads_group => fd::dup_cloexec(fd.as_fd(), 0)
                    .inspect_err(|e| {
                        log::warn!(
                            "terminate_group: group {} named by number: no copy of its pidfd: {e}",
                            st.group
                        )
                    })
                    .ok(),
                _ => None,
            }
        };
        Ok(GroupTarget {
            pgid: st.group,
            leads_group: st.leads_group,
            #[cfg(target_os = "linux")]
            pidfd,
        })
    }

    /// `close` of a process handle: drop the callback; a running child stays the loop's.
    pub(crate) fn process_stop_for_close(&mut self, id: HandleId) {
        self.process_unwatch_for_close(id);
        if !self.children.extras.is_empty() {
            self.process_close_extras(id);
        }
    }

    /// The close of process handle `id` ends its extras: its timers go, and its close hook
    /// runs. What it reports (the usage, the deadline that ended the child) stays until its
    /// slot goes, in the close phase (`process_released`).
    #[cold]
    #[inline(never)]
    fn process_close_extras(&mut self, id: HandleId) {
        let Some(extras) = self.children.extras.get_mut(&id.key) else { return };
        let timers = [extras.escalation.take(), extras.timeout.take().map(|d| d.timer)];
        let hook = extras.close_hook.take();
        (extras.output, extras.on_flow, extras.on_cut) = (Vec::new(), None, None);
        if extras.is_empty() {
            self.children.extras.remove(&id.key);
        }
        for timer in timers.into_iter().flatten() {
            let _ = timer.close(self);
        }
        if let Some(hook) = hook {
            hook(self);
        }
    }

    /// The slot of process handle `id` went, in the close phase: so do its extras.
    #[cold]
    #[inline(never)]
    pub(crate) fn process_released(&mut self, id: HandleId) {
        self.children.extras.remove(&id.key);
    }

    /// Takes the [`Process::terminate`] timer of process `id` out of its extras.
    fn process_take_escalation(&mut self, id: HandleId) -> Option<crate::Timer> {
        let extras = self.children.extras.get_mut(&id.key)?;
        let timer = extras.escalation.take();
        if extras.is_empty() {
            self.children.extras.remove(&id.key);
        }
        timer
    }

    /// Closes the timers of process `id`'s child, if any: [`Process::terminate`]'s and the
    /// command's timeout. Its child was reaped.
    #[cold]
    #[inline(never)]
    fn process_cancel_timers(&mut self, id: HandleId) {
        let timeout = self.children.extras.get_mut(&id.key).and_then(|x| x.timeout.take()).map(|d| d.timer);
        for timer in [self.process_take_escalation(id), timeout].into_iter().flatten() {
            let _ = timer.close(self);
        }
    }

    /// The child's part of a close: what happens to a child whose handle goes.
    fn process_unwatch_for_close(&mut self, id: HandleId) {
        let loop_id = self.id;
        // (Usually no escalation runs: no lookup then.) An escalation past its grace period,
        // or a spawn abandoning its child, spares nothing.
        let grace = if self.children.escalations.is_empty() || self.children.abandoning {
            None
        } else {
            self.process_grace(id).filter(|e| !e.past_grace.get())
        };
        let in_grace = grace.is_some();
        let Some(slot) = self.live_slot_mut(id) else { return };
        let referenced = slot.flags.contains(Flags::REF);
        let Kind::Process(st) = &mut slot.kind else { return };
        // Dropped on the way out, last: a panic as the program's value drops (a loop's drop
        // catches it) must not keep the child from being killed or handed on.
        let _on_exit = st.on_exit.take();
        // A `terminate_group` in its grace period ends the group itself, when that is over.
        let kill_group = st.on_drop == OnDrop::KillGroup && !in_grace;
        let left_to_grace =
            (st.on_drop == OnDrop::KillGroup && in_grace).then_some((st.group, st.leads_group));
        #[cfg(target_os = "linux")]
        let pidfd = st.pidfd.take();
        let Some(key) = st.child_key() else {
            // Reaped already; what it started may still run in its group, which goes too, if
            // the group can be named race-free: through the leader's pidfd (Linux 6.9). By
            // number, an emptied group's id could be a stranger's by now.
            #[cfg(target_os = "linux")]
            if let (true, true, Some(fd)) = (kill_group, st.leads_group, &pidfd) {
                match sys::pidfd_send_signal(fd.as_fd(), libc::SIGKILL, true) {
                    Err(e) if !matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)) => {
                        log::debug!("loop {loop_id}: SIGKILL to the group of {} on close: {e}", st.pid);
                    }
                    _ => {}
                }
            }
            let _ = (loop_id, kill_group);
            if let Some((pgid, leads_group)) = left_to_grace {
                #[cfg(target_os = "linux")]
                let pidfd =
                    pidfd.as_ref().filter(|_| leads_group).and_then(|fd| fd::dup_cloexec(fd.as_fd(), 0).ok());
                #[cfg(not(target_os = "linux"))]
                let pidfd = None;
                self.children_left_to_grace(pgid, leads_group, pidfd, grace);
            }
            return;
        };
        st.child_key = NO_CHILD;
        let on_drop = st.on_drop;
        let group = (st.group, st.leads_group);
        self.child_unwatch_stops(key);
        if let Some((pgid, leads_group)) = left_to_grace {
            let pidfd = match self.children.entries.get(key).map(|e| &e.watch) {
                #[cfg(target_os = "linux")]
                Some(Watch::Pidfd(fd)) if leads_group => fd::dup_cloexec(fd.as_fd(), 0).ok(),
                _ => None,
            };
            if let (Some(entry), Some(live)) = (self.children.entries.get_mut(key), &grace) {
                entry.spared = true;
                live.spared.borrow_mut().push((key, entry.pid));
            }
            self.children_left_to_grace(pgid, leads_group, pidfd, grace);
        }
        // A leader gone before its watch was reaped at once: its group goes by number only,
        // which may be a stranger's by now (as for any leader reaped without its pidfd).
        let kill_group = kill_group && !(group.1 && self.child_gone(key));
        let Some(entry) = self.children.entries.get_mut(key) else { return };
        entry.owner = None;
        if kill_group {
            // The group first, through the pidfd where the kernel can; then the child itself
            // (below), in case it left the group.
            let pidfd = match &entry.watch {
                #[cfg(target_os = "linux")]
                Watch::Pidfd(fd) => Some(fd.as_fd()),
                _ => None,
            };
            if let Err(e) = signal_group(group.0, group.1, pidfd, libc::SIGKILL) {
                log::debug!("loop {}: SIGKILL to the group of {} on close: {e}", self.id, entry.pid);
            }
        }
        // (A child in a group left to a running escalation is the escalation's too: its own
        // SIGKILL waits for the end of the grace period, `children_kill_spared`.)
        if on_drop == OnDrop::KillChild || kill_group {
            let res = kill_child(entry, self.id);
            // Only a child we could kill is waited for when the loop drops; one we could not
            // (EPERM: a setuid child) goes to the orphan list like any running child.
            entry.killed = res.is_ok();
        }
        // Closed before the exit, the capture's callback is gone with the handle: what keeps
        // the loop going now is the handle's own ref, as for any background child.
        if entry.keeps_alive != referenced {
            entry.keeps_alive = referenced;
            if referenced {
                self.children.keep_alive += 1;
            } else {
                self.children.keep_alive -= 1;
            }
        }
        log::debug!("loop {}: child {} runs on in the background", self.id, entry.pid);
    }

    /// The `terminate_group` escalation running for process `id`'s group, if one runs.
    #[cold]
    #[inline(never)]
    fn process_grace(&self, id: HandleId) -> Option<Rc<GroupEscalation>> {
        let group = match self.slots.get(id.key as usize).map(|s| &s.kind) {
            Some(Kind::Process(st)) if st.group != 0 => st.group,
            _ => return None,
        };
        // (Through this handle or another on the group: a pipeline's stages share one, and
        // the handle that started it may be closed by now.)
        self.children.escalations.iter().find(|(g, e)| *g == group && e.live.get()).map(|(_, e)| e.clone())
    }

    /// A close left the group `pgid` (named through `pidfd`, a duplicate of the leader's,
    /// where there is one) to the `terminate_group` escalation whose flag is `live`.
    #[cold]
    #[inline(never)]
    fn children_left_to_grace(
        &mut self,
        pgid: Pid,
        leads_group: bool,
        pidfd: Option<OwnedFd>,
        live: Option<Rc<GroupEscalation>>,
    ) {
        #[cfg(not(target_os = "linux"))]
        let _ = pidfd;
        let target = GroupTarget {
            pgid,
            leads_group,
            #[cfg(target_os = "linux")]
            pidfd,
        };
        if let Some(live) = live {
            self.children.grace_groups.push((target, live));
        }
    }

    /// The escalation `esc` is over (or its grace period is): the children its close spared
    /// get their SIGKILL now, and are waited for at the loop's drop as those killed at their
    /// close are. (The key and pid name an entry still unreaped, and so still that child.)
    fn children_kill_spared(&mut self, esc: &GroupEscalation) {
        for (key, pid) in std::mem::take(&mut *esc.spared.borrow_mut()) {
            if let Some(entry) = self.children.entries.get_mut(key).filter(|e| e.pid == pid && e.spared) {
                entry.spared = false;
                entry.killed = kill_child(entry, self.id).is_ok();
            }
        }
    }

    /// Child `p` runs on a pty whose master the loop opened for it (`spawn_on_pty`).
    fn children_on_our_pty(&mut self, p: Process) {
        let key = self.own_slot_mut(p.0).and_then(|s| match &s.kind {
            Kind::Process(st) => st.child_key(),
            _ => None,
        });
        if let Some(entry) = key.and_then(|k| self.children.entries.get_mut(k)) {
            entry.on_our_pty = true;
        }
    }

    /// The drop's last look at the children its closing of their pty masters hung up:
    /// `SIGHUP` ends most of them a moment later, so they are waited for, a short while
    /// ([`PTY_HANGUP_WAIT_MS`](crate::limits::PTY_HANGUP_WAIT_MS) in all) at most, rather
    /// than left to the orphan list as zombies the drop itself made. Those still running
    /// then (a child that ignores `SIGHUP`) go to that list.
    fn children_wait_hung_up(&self, mut hung_up: Vec<ChildEntry>) {
        if hung_up.is_empty() {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(crate::limits::PTY_HANGUP_WAIT_MS);
        loop {
            hung_up.retain(|e| matches!(sys::try_wait(e.pid), Ok(None)));
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(first) = hung_up.first().filter(|_| !left.is_zero()) else { break };
            match &first.watch {
                // Readable once it exited: the wait ends then.
                #[cfg(target_os = "linux")]
                Watch::Pidfd(fd) => {
                    let _ = evloop_platform::fd::poll_readable(fd.as_fd(), Some(left));
                }
                _ => std::thread::sleep(left.min(Duration::from_millis(1))),
            }
        }
        for entry in hung_up {
            log::debug!("loop {}: child {} outlives the loop and its pty's hangup", self.id, entry.pid);
            add_orphan(entry.pid);
        }
    }

    /// The loop is being dropped (every process handle was already stopped): reap what can be
    /// reaped, wait for the children that were killed, and leave the rest to the process-wide
    /// orphan list. What holds the program's callbacks (stop watches, `reap_adopted`'s, the
    /// `done` of a `terminate_group_then`) is handed back, for the caller to drop one by one
    /// once the children are seen to: a panic as a value one of them captured drops cannot
    /// skip that.
    pub(crate) fn children_drop(&mut self) -> Vec<Box<dyn std::any::Any>> {
        let mut callbacks: Vec<Box<dyn std::any::Any>> = Vec::new();
        callbacks.extend(std::mem::take(&mut self.children.stops).into_iter().map(|w| Box::new(w) as _));
        callbacks.extend(self.children.adopted.take().map(|cb| Box::new(cb) as _));
        callbacks
            .extend(std::mem::take(&mut self.children.escalations).into_iter().map(|e| Box::new(e) as _));
        let mut escalations = Vec::new();
        // Groups left to an escalation that ends with the loop: killed now, as
        // `kill_group_on_drop` says (before the reaping below, which waits for the killed).
        let mut killed_groups = Vec::new();
        for (target, live) in std::mem::take(&mut self.children.grace_groups) {
            escalations.push(live.clone());
            if live.live.get() {
                match target.signal(libc::SIGKILL) {
                    Ok(()) => killed_groups.push(target.pgid),
                    Err(e) => {
                        log::debug!("loop {}: SIGKILL to group {} at the drop: {e}", self.id, target.pgid)
                    }
                }
            }
        }
        let mut hung_up = Vec::new();
        for (_, entry) in std::mem::take(&mut self.children.entries) {
            #[cfg(target_os = "linux")]
            match &entry.watch {
                Watch::Pidfd(fd) => {
                    let _ = self.poller.deregister(fd.as_fd(), evloop_platform::poller::Interest::READABLE);
                }
                // Reaped already; its pid may be another process's now: not to be waited for.
                Watch::Gone => continue,
                Watch::Sigchld => {}
            }
            // (A child left to an escalation was spared at its close: killed now, with its
            // group just before, it is waited for as the children killed at their close are.)
            let spared_killed = entry.spared && kill_child(&entry, self.id).is_ok();
            let in_killed_group = !killed_groups.is_empty()
                && sys::group_of(entry.pid).is_ok_and(|g| killed_groups.contains(&g));
            if entry.killed || spared_killed || in_killed_group {
                let _ = sys::wait(entry.pid);
            } else if !matches!(sys::try_wait(entry.pid), Ok(None)) {
                // Reaped.
            } else if entry.on_our_pty {
                hung_up.push(entry);
            } else {
                log::debug!("loop {}: child {} outlives the loop", self.id, entry.pid);
                add_orphan(entry.pid);
            }
        }
        self.children_wait_hung_up(hung_up);
        self.children.keep_alive = 0;
        self.children.sigchld = None;
        reap_orphans();
        callbacks.extend(escalations.into_iter().map(|e| Box::new(e) as _));
        callbacks
    }
}

// ----- captured output ----------------------------------------------------------------------

impl Loop {
    /// Starts a capture: `output`, `output_with_input` and `stream_output`, and with
    /// `terminal`, a pty's master, `output_on_pty` and `stream_output_on_pty` (whose
    /// `cmd` has the slave where the terminal goes). Returns the process handle, and a pty
    /// capture's input handle.
    fn command_output(
        &mut self,
        cmd: &Command,
        input: Option<Box<dyn AsRef<[u8]>>>,
        sink: Option<OutputSink>,
        cb: OutputCb,
        terminal: Option<crate::Tty>,
    ) -> io::Result<(Process, Option<crate::Tty>)> {
        let what = match (&sink, terminal) {
            (None, None) => "output",
            (Some(_), None) => "stream_output",
            (None, Some(_)) => "output_on_pty",
            (Some(_), Some(_)) => "stream_output_on_pty",
        };
        // Pipes other than the captured ones would have no owner: refuse them up front.
        if let Some((target, _)) = cmd.stdio.iter().find(|(t, s)| match s {
            Stdio::Pipe => !matches!(t, 1 | 2),
            Stdio::PipeIn => true,
            _ => false,
        }) {
            if matches!(target, 1 | 2) {
                return Err(invalid(format!(
                    "spawn `{}`: {what}() captures stdout and stderr through pipes of its own; child fd \
                     {target} cannot be a pipe the child reads (Stdio::PipeIn)",
                    cmd.name()
                )));
            }
            return Err(invalid(format!(
                "spawn `{}`: {what}() captures stdout and stderr only; child fd {target} cannot be a new pipe \
                 (pass one end of a Pipe::pair as Stdio::Handle, or use spawn)",
                cmd.name()
            )));
        }
        // stdout and stderr, unless the command sends them elsewhere (as std's `output`).
        let captured =
            [(1, OutputStream::Stdout), (2, OutputStream::Stderr)].into_iter().filter(|(target, _)| {
                matches!(cmd.stdio.iter().find(|(t, _)| t == target), None | Some((_, Stdio::Pipe)))
            });
        let captured: Vec<_> = captured.collect();
        let state = Rc::new(RefCell::new(Capture {
            stdout: Vec::new(),
            stderr: Vec::new(),
            status: None,
            error: None,
            // The exit, the end of each captured stream and of the terminal, and the input's
            // write.
            left: 1 + captured.len() as u8 + u8::from(terminal.is_some()) + u8::from(input.is_some()),
            cb: Some(cb),
            sink,
            cancelled: false,
            timed_out: false,
            process: None,
            outputs: Vec::new(),
            input: None,
            terminal_input: None,
            wait_delay: cmd.wait_delay,
            limit: cmd.output_limit,
            dropped: Default::default(),
            delay_timer: None,
            exited: false,
            paused: false,
            delay_over: false,
            cut_asked: false,
            cut: false,
            usage: None,
        }));
        // The loop's ends exist before the child does, so a failure after the spawn has
        // nothing left to undo.
        let mut outputs = Vec::with_capacity(captured.len() + 1);
        let mut stdin = None;
        let mut terminal_input = None;
        let mut links = Vec::with_capacity(3);
        let mut child_ends = Vec::with_capacity(3);
        // (What failed, for the error: the pipes, /dev/null, or the pty's input handle.)
        let mut making = "pipes for its output";
        let opened = (|| -> io::Result<()> {
            for (target, stream) in captured {
                let (r, w) = fd::pipe()?;
                fd::set_fresh_pipe_nonblocking(r.as_fd())?;
                outputs.push((stream, AnyStream::Pipe(Pipe::from_private(self, r, true, false)?)));
                links.push((target, w.as_raw_fd()));
                child_ends.push(w);
            }
            if input.is_some() {
                making = "a pipe for its input";
                let (r, w) = fd::pipe()?;
                fd::set_fresh_pipe_nonblocking(w.as_fd())?;
                stdin = Some(Pipe::from_private(self, w, false, true)?);
                links.push((0, r.as_raw_fd()));
                child_ends.push(r);
            } else if !cmd.stdio.iter().any(|(target, _)| *target == 0) {
                making = "/dev/null for its stdin";
                let null = fd::open(c"/dev/null", fd::Access::ReadWrite, false)?;
                links.push((0, null.as_raw_fd()));
                child_ends.push(null);
            }
            if let Some(master) = terminal {
                making = "a copy of the pty's master for its input";
                terminal_input = Some(crate::Tty::capture_input(self, master)?);
            }
            Ok(())
        })();
        let on_pty = if terminal.is_some() { " on a pty" } else { "" };
        let st = state.clone();
        let on_exit: ExitCb = Box::new(move |lp, p, res| {
            let usage = p.resource_usage(lp).ok().flatten();
            let timed_out = p.timed_out(lp).unwrap_or(false);
            Capture::one_done(&st, lp, |c| match res {
                Ok(status) => {
                    c.status = Some(status);
                    c.usage = usage;
                    c.timed_out = timed_out;
                }
                Err(e) => {
                    c.error.get_or_insert(e);
                }
            });
            st.borrow_mut().exited = true;
            Capture::start_delay(&st, lp);
        });
        let spawned = opened
            .map_err(|e| context(e, format!("spawn `{}`{on_pty}: {making}", cmd.name())))
            .and_then(|()| self.spawn_command(cmd, Wiring { links: &links, ..Wiring::default() }, on_exit));
        // The child holds its ends now (or there is no child): the parent's copies go.
        drop(child_ends);
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let ours = outputs.iter().map(|&(_, p)| p);
                for p in ours.chain(stdin.map(AnyStream::Pipe)).chain(terminal_input.map(AnyStream::Tty)) {
                    let _ = p.close(self);
                }
                return Err(e);
            }
        };
        // (Closed by the caller on an error to start, so added only now.)
        if let Some(master) = terminal {
            outputs.push((OutputStream::Stdout, AnyStream::Tty(master)));
        }
        {
            let mut c = state.borrow_mut();
            c.process = Some(child.process);
            (c.outputs, c.input, c.terminal_input) = (outputs.clone(), stdin, terminal_input);
        }
        // Closed before `cb` runs, the handle abandons the capture: `cb` and the sink go
        // uncalled, and the pipes close now; a silent grandchild holding the streams open
        // then holds up nothing.
        let st = state.clone();
        self.process_on_close(
            child.process.0,
            Box::new(move |lp| {
                let (outputs, input, terminal_input, timer) = {
                    let mut c = st.borrow_mut();
                    if c.cb.is_none() {
                        return;
                    }
                    c.cancelled = true;
                    c.cb = None;
                    c.sink = None;
                    c.process = None;
                    let input = c.input.take().map(AnyStream::Pipe);
                    (std::mem::take(&mut c.outputs), input, c.terminal_input.take(), c.delay_timer.take())
                };
                if let Some(t) = timer {
                    let _ = t.close(lp);
                }
                // (A pty's master and the input's copy of it close: the terminal hangs up.)
                let terminal_input = terminal_input.map(AnyStream::Tty);
                for p in outputs.into_iter().map(|(_, p)| p).chain(input).chain(terminal_input) {
                    // (One that ended already is closing or gone: nothing to do.)
                    let _ = p.close(lp);
                }
            }),
        );
        // The child keeps the loop going until it is reaped, whatever the handle's `set_ref`
        // (the pipes, the capture's own, keep it going until the streams end).
        self.child_keeps_loop_alive(child.process.0);
        if let (Some(input), Some(stdin)) = (input, stdin) {
            Capture::feed(&state, self, stdin, input);
        }
        let extras = self.children.extras.entry(child.process.0.key).or_default();
        extras.output = outputs.clone();
        let st = state.clone();
        extras.on_cut = Some(Box::new(move |lp| Capture::cut_soon(&st, lp)));
        if cmd.wait_delay.is_some() {
            // A pause of either stream holds the delay off, and the resume of the last one
            // paused starts it again.
            let st = state.clone();
            extras.on_flow = Some(Box::new(move |lp| {
                let timer = {
                    let mut c = st.borrow_mut();
                    // Only output still to come is held back: once the streams ended, a
                    // pause leaves the delay to cut what is left (a stuck input write).
                    c.paused = c.outputs.iter().any(|(_, p)| lp.read_paused(p.id()));
                    if c.paused { c.delay_timer.take() } else { None }
                };
                match timer {
                    Some(t) => {
                        let _ = t.close(lp);
                    }
                    None => Capture::start_delay(&st, lp),
                }
            }));
        }
        for (which, pipe) in outputs {
            let i = usize::from(which == OutputStream::Stderr);
            let st = state.clone();
            let started = pipe.read_start(self, move |lp, p, ev| match ev {
                ReadEvent::Data(d) => {
                    let mut c = st.borrow_mut();
                    match c.sink.take() {
                        Some(mut sink) => {
                            // Out of the state while it runs: it may use the loop freely, and
                            // close the process handle, which abandons the capture. (The
                            // handle is there: set at the spawn, before any read, and taken
                            // only with the sink.)
                            let process = c.process;
                            drop(c);
                            if let Some(process) = process {
                                sink(lp, process, which, d);
                            }
                            let mut c = st.borrow_mut();
                            if !c.cancelled {
                                c.sink.get_or_insert(sink);
                            }
                        }
                        None => {
                            let c = &mut *c;
                            let kept = if i == 0 { &mut c.stdout } else { &mut c.stderr };
                            c.dropped[i] += c.limit.keep(kept, d);
                        }
                    }
                }
                ReadEvent::Eof => {
                    let _ = p.close(lp);
                    Capture::one_done(&st, lp, |_| {});
                }
                ReadEvent::Error(e) => {
                    let _ = p.close(lp);
                    let which = match (p, i) {
                        (AnyStream::Tty(_), _) => "terminal",
                        (_, 0) => "stdout",
                        _ => "stderr",
                    };
                    Capture::one_done(&st, lp, |c| {
                        c.error.get_or_insert(context(e, format!("reading the child's {which}")));
                    });
                }
            });
            if let Err(e) = started {
                let _ = pipe.close(self);
                Capture::one_done(&state, self, |c| {
                    c.error.get_or_insert(e);
                });
            }
        }
        Ok((child.process, terminal_input))
    }
}

// ----- pipelines ----------------------------------------------------------------------------

type PipelineCb = Box<dyn FnOnce(&mut Loop, Vec<io::Result<ExitStatus>>)>;

struct PipelineState {
    statuses: Vec<Option<io::Result<ExitStatus>>>,
    left: usize,
    processes: Vec<Process>,
    cb: Option<PipelineCb>,
    /// Runs when a stage's handle closes before the pipeline is done with it: before the
    /// stage's exit is reported (which also cancels `cb`), or while a [`Pipeline::output`]
    /// capture still waits for its output (which then abandons the capture).
    on_cancel: Option<CloseHook>,
    /// The handles stay open after `cb`: a [`Pipeline::output`] capture closes them once its
    /// own callback has run.
    keep_open: bool,
}

/// A [`Pipeline::output`] under way.
struct PipelineCapture {
    stdout: Vec<u8>,
    /// The last stage's `output_limit`, and how much output beyond it was dropped.
    limit: OutputLimit,
    dropped: u64,
    /// Every stage's, once all have exited.
    statuses: Option<Vec<io::Result<ExitStatus>>>,
    /// The output reached its end (or failed).
    ended: bool,
    error: Option<io::Error>,
    cb: Option<PipelineOutputCb>,
    /// The stages' handles, which the capture closes once `cb` has run.
    processes: Vec<Process>,
}

impl PipelineCapture {
    /// Calls the callback once the stages have exited and the output has ended.
    fn maybe_done(state: &RefCell<PipelineCapture>, lp: &mut Loop) {
        let (cb, result) = {
            let mut c = state.borrow_mut();
            if !c.ended || c.statuses.is_none() {
                return;
            }
            let Some(cb) = c.cb.take() else { return };
            let c = &mut *c;
            c.dropped += c.limit.finish(&mut c.stdout);
            let result = match c.error.take() {
                Some(e) => Err(e),
                None => Ok(PipelineOutput {
                    statuses: c.statuses.take().unwrap_or_default(),
                    stdout: std::mem::take(&mut c.stdout),
                    truncated: c.dropped != 0,
                    stdout_dropped: c.dropped,
                }),
            };
            (cb, result)
        };
        cb(lp, result);
        let processes = std::mem::take(&mut state.borrow_mut().processes);
        close_open(lp, &processes);
    }
}

/// What [`Pipeline::spawn_wired`] adds to the pipeline's own links: parent fds for the
/// first stage's stdin and the last stage's stdout, and what to run if the callback is
/// cancelled.
#[derive(Default)]
struct PipelineEnds {
    first_stdin: Option<RawFd>,
    last_stdout: Option<RawFd>,
    on_cancel: Option<CloseHook>,
    keep_open: bool,
    /// A stage that cannot start does not stop the others ([`Pipeline::spawn_each`]).
    keep_going: bool,
}

/// `a | b | c`: commands whose stdout feeds the next one's stdin, child to child, with the
/// loop out of the data path.
///
/// The first stage's stdin and the last stage's stdout are what those commands say (a
/// [`Stdio::Pipe`] there gives the loop a pipe handle); every stage's stderr and extra fds
/// too. The links in between belong to the pipeline: a stage that sets its own stdin (all but
/// the first) or stdout (all but the last) is an error. [`output`](Pipeline::output) runs
/// the pipeline with the last stage's stdout captured, as a shell's `$(a | b)` does.
///
/// One callback receives every stage's status, in order, once all have exited; the stages'
/// [`Process`] handles close themselves once it has returned (within it, the first stage's
/// handle can still end what the job left in its group, with
/// [`terminate_group`](Process::terminate_group)). Closing a stage's handle before its exit
/// is reported cancels the callback, as with [`Command::output`]; the other stages' handles
/// still close themselves once those stages have exited. If a stage fails to start, the
/// stages already started get `SIGKILL` and are reaped by the loop in the background,
/// without blocking, and `spawn` returns the failed stage's error.
///
/// ```
/// use std::{cell::RefCell, rc::Rc};
/// use evloop::{Command, Loop, Pipeline, ReadEvent, RunMode, Stdio};
///
/// let mut lp = Loop::new()?;
/// let mut sort = Command::new("sort");
/// sort.stdout(Stdio::Pipe);
/// let mut printf = Command::new("printf");
/// printf.arg("b\\na\\n");
/// let statuses = Rc::new(RefCell::new(Vec::new()));
/// let st = statuses.clone();
/// let children = Pipeline::new([printf, sort]).spawn(&mut lp, move |_, all| {
///     st.borrow_mut().extend(all.into_iter().map(|s| s.unwrap().success()));
/// })?;
/// let out = Rc::new(RefCell::new(Vec::new()));
/// let sink = out.clone();
/// children[1].stdout.unwrap().read_start(&mut lp, move |lp, p, ev| match ev {
///     ReadEvent::Data(d) => sink.borrow_mut().extend_from_slice(d),
///     _ => p.close(lp).unwrap(),
/// })?;
/// lp.run(RunMode::Default)?;
/// assert_eq!(&out.borrow()[..], b"a\nb\n");
/// assert_eq!(*statuses.borrow(), [true, true]);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Pipeline {
    stages: Vec<Command>,
    process_group: bool,
}

impl Pipeline {
    /// A pipeline of `stages`, first to last.
    pub fn new(stages: impl IntoIterator<Item = Command>) -> Pipeline {
        Pipeline { stages: stages.into_iter().collect(), process_group: false }
    }

    /// Runs every stage in one new process group, led by the first stage, as a shell runs a
    /// job: [`kill_group`](Process::kill_group) on any stage's [`Process`] then signals the
    /// whole pipeline, with whatever its stages started (and
    /// [`terminate_group`](Process::terminate_group) ends it all). The first stage's handle
    /// serves for the whole job, even after that stage exited: the handles stay open until
    /// every stage has exited and the pipeline's callback has returned, and a group signal
    /// needs only some member left. (Closing a stage's handle early cancels the pipeline's
    /// callback, as the type's docs say, though its child may still run in the group:
    /// signal the group before closing it, if the job must end with the handles.) Off by
    /// default (the stages stay in the loop's group, or in the groups their commands ask
    /// for).
    ///
    /// At a terminal, a group other than the terminal's foreground group is a background
    /// job: a stage that reads the terminal is stopped (`SIGTTIN`), and so is one that changes
    /// its settings or, with `stty tostop`, writes to it (`SIGTTOU`). An interactive shell
    /// gives the terminal to the job while it runs:
    /// [`Tty::set_foreground_group`](crate::Tty::set_foreground_group) shows how. Otherwise a
    /// job that talks to the terminal stays in the loop's group, where Ctrl-C reaches every
    /// stage.
    ///
    /// With it on, a stage may not set [`process_group`](Command::process_group) or
    /// [`setsid`](Command::setsid) itself: [`spawn`](Pipeline::spawn) refuses that. The
    /// group's id is the first stage's pid; after every member is gone, another process
    /// could take it, so signal the group while some stage is still running (on Linux 6.9
    /// and later, the first stage's `kill_group` goes through its pidfd, which cannot reach
    /// another group).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, Pipeline, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut job = Pipeline::new([Command::new("sleep"), Command::new("sleep")]);
    /// job.stages_mut().iter_mut().for_each(|c| { c.arg("100"); });
    /// job.process_group(true);
    /// let ended = Rc::new(RefCell::new(Vec::new()));
    /// let e = ended.clone();
    /// let children = job.spawn(&mut lp, move |_, all| {
    ///     e.borrow_mut().extend(all.into_iter().map(|s| s.unwrap().signal()));
    /// })?;
    /// // One signal, through the last stage, ends both.
    /// children[1].process.kill_group(&mut lp, evloop::signal::SIGTERM)?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(*ended.borrow(), [Some(evloop::signal::SIGTERM); 2]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn process_group(&mut self, on: bool) -> &mut Pipeline {
        self.process_group = on;
        self
    }

    /// Appends a stage.
    pub fn push(&mut self, stage: Command) -> &mut Pipeline {
        self.stages.push(stage);
        self
    }

    /// The stages.
    pub fn stages(&self) -> &[Command] {
        &self.stages
    }

    /// The stages, to change them after the pipeline was built.
    pub fn stages_mut(&mut self) -> &mut [Command] {
        &mut self.stages
    }

    /// Starts every stage, first to last, and returns their [`Child`]ren in order. `on_exit`
    /// receives every stage's status, in order, once all have exited, unless a stage's
    /// handle is closed before its exit is reported: that cancels it.
    ///
    /// If a stage cannot start, the stages already started are killed and reaped in the
    /// background, and the error names the stage ([`spawn_each`](Pipeline::spawn_each) goes
    /// on without it instead, as a shell does). Handles given to stages as
    /// [`Stdio::Handle`] are then left open as they were, as with a single failed spawn (a
    /// stage that had started may have used them before it was killed).
    pub fn spawn(
        &self,
        lp: &mut Loop,
        on_exit: impl FnOnce(&mut Loop, Vec<io::Result<ExitStatus>>) + 'static,
    ) -> io::Result<Vec<Child>> {
        self.spawn_wired(lp, PipelineEnds::default(), Box::new(on_exit))?.into_iter().collect()
    }

    /// Starts every stage it can, as a shell runs a pipeline: a stage that cannot start (a
    /// missing program, which a shell reports as status 127) does not stop the others.
    /// Returns each stage's start, in order: its [`Child`], or the error that names it.
    /// `on_exit` receives every stage's status as [`spawn`](Pipeline::spawn)'s does, that
    /// same error for a stage that did not start, once every started stage has exited (from
    /// the loop, never from here, even when no stage started).
    ///
    /// The neighbours of a stage that did not start find their pipe to it closed: the one
    /// before it gets `EPIPE` (or `SIGPIPE`) when it writes, and the one after it reads end
    /// of file. A [`Stdio::Handle`] given to such a stage stays open, as after a failed
    /// [`Command::spawn`], unless a stage that started took it too. In a
    /// [`process_group`](Pipeline::process_group) job, the first stage that starts leads the
    /// group, and takes the terminal if the stage that was to lead it had
    /// [`Command::foreground`].
    ///
    /// The outer error is the pipeline's as a whole, as from `spawn`: bad input in any
    /// stage, reported before the first one starts, or no pipe to be had between two stages
    /// (the stages already started are then killed and reaped in the background).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Command, Loop, Pipeline, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let job = Pipeline::new([
    ///     Command::new("echo"),
    ///     Command::new("no-such-program-here"),
    ///     Command::new("true"),
    /// ]);
    /// let statuses = Rc::new(RefCell::new(Vec::new()));
    /// let s = statuses.clone();
    /// let started = job.spawn_each(&mut lp, move |_, all| *s.borrow_mut() = all)?;
    /// assert!(started[0].is_ok() && started[2].is_ok());
    /// let e = started[1].as_ref().unwrap_err();
    /// assert_eq!(e.kind(), std::io::ErrorKind::NotFound); // a shell's 127
    /// lp.run(RunMode::Default)?;
    /// let statuses = statuses.take();
    /// assert!(statuses[1].is_err());
    /// assert!(statuses[2].as_ref().unwrap().success()); // a shell's `$?`
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_each(
        &self,
        lp: &mut Loop,
        on_exit: impl FnOnce(&mut Loop, Vec<io::Result<ExitStatus>>) + 'static,
    ) -> io::Result<Vec<io::Result<Child>>> {
        let ends = PipelineEnds { keep_going: true, ..PipelineEnds::default() };
        self.spawn_wired(lp, ends, Box::new(on_exit))
    }

    /// Runs the pipeline with the last stage's stdout captured, as a shell's `$(a | b)`
    /// (duct's `read`), and calls `cb` once: when every stage has exited and the output has
    /// reached end of file, with every stage's status and the output. The first stage's
    /// stdin is `/dev/null` unless its command sets one; the last stage must leave its
    /// stdout unset, and no stage may ask for a new pipe ([`Stdio::Pipe`]: it would have no
    /// owner). Each stage's stderr is what its command says (the loop's by default;
    /// [`Stdio::SameAs`]`(1)` sends it down the pipeline, as a shell's `|&`). The last
    /// stage's [`output_limit`](Command::output_limit) bounds what is kept, as for
    /// [`Command::output`]: the rest is read and dropped, and
    /// [`PipelineOutput::truncated`] says so.
    ///
    /// Returns the stages' [`Process`] handles, which close themselves once `cb` has
    /// returned, as [`spawn`](Pipeline::spawn)'s do (inside `cb` the first stage's can
    /// still end what the job left in its group, with
    /// [`terminate_group`](Process::terminate_group)). Closing one before `cb` abandons the
    /// capture: `cb` never runs, the output pipe closes at once (a stage still writing to it
    /// gets `SIGPIPE`, or `EPIPE`), and the other handles close with it (their stages are
    /// still reaped, killed first where their commands say
    /// [`kill_on_drop`](Command::kill_on_drop)). Errors to start come back here, as from `spawn`,
    /// and `cb` then never runs. A read error (rare: the output is a pipe) is what `cb`
    /// receives, in place of the output.
    ///
    /// The capture keeps `run` going until `cb` has run, whatever the handles'
    /// [`set_ref`](Process::set_ref). The output is kept in memory, and the wait is for end
    /// of file: a background process that a stage started and that keeps the output open
    /// delays `cb` until it exits (a stage's [`wait_delay`](Command::wait_delay) does not
    /// apply here, nor [`pause_output`](Process::pause_output)). Run such a job in a group
    /// of its own ([`process_group`](Pipeline::process_group)) and end what is left with
    /// [`terminate_group`](Process::terminate_group).
    ///
    /// ```
    /// use evloop::{Command, Loop, Pipeline, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let mut printf = Command::new("printf");
    /// printf.arg("pear\napple\n");
    /// Pipeline::new([printf, Command::new("sort")]).output(&mut lp, |_, out| {
    ///     let out = out.unwrap();
    ///     assert_eq!(out.stdout, b"apple\npear\n");
    ///     assert!(out.pipefail().is_ok());
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert!(lp.handles().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn output(
        &self,
        lp: &mut Loop,
        cb: impl FnOnce(&mut Loop, io::Result<PipelineOutput>) + 'static,
    ) -> io::Result<Vec<Process>> {
        let Some(last) = self.stages.last() else {
            return Err(invalid("a pipeline needs at least one stage"));
        };
        if last.stdio.iter().any(|(target, _)| *target == 1) {
            return Err(invalid(format!(
                "pipeline stage {} (`{}`): its stdout is the pipeline's output (Pipeline::output); leave it unset",
                self.stages.len(),
                last.name()
            )));
        }
        for (i, cmd) in self.stages.iter().enumerate() {
            if let Some((target, _)) =
                cmd.stdio.iter().find(|(_, s)| matches!(s, Stdio::Pipe | Stdio::PipeIn))
            {
                return Err(invalid(format!(
                    "pipeline stage {} (`{}`): output() captures the last stage's stdout only; child fd \
                     {target} cannot be a new pipe (pass one end of a Pipe::pair as Stdio::Handle, or use spawn)",
                    i + 1,
                    cmd.name()
                )));
            }
        }
        let (r, w) = fd::pipe().map_err(|e| context(e, "pipeline: a pipe for its output"))?;
        let null = match self.stages[0].stdio.iter().any(|(target, _)| *target == 0) {
            true => None,
            false => Some(
                fd::open(c"/dev/null", fd::Access::ReadWrite, false)
                    .map_err(|e| context(e, "pipeline: /dev/null for its stdin"))?,
            ),
        };
        fd::set_fresh_pipe_nonblocking(r.as_fd())?;
        let ours = Pipe::from_private(lp, r, true, false)?;
        let capture = Rc::new(RefCell::new(PipelineCapture {
            stdout: Vec::new(),
            limit: last.output_limit,
            dropped: Default::default(),
            statuses: None,
            ended: false,
            error: None,
            cb: Some(Box::new(cb)),
            processes: Vec::new(),
        }));
        let st = capture.clone();
        let on_exit: PipelineCb = Box::new(move |lp, statuses| {
            st.borrow_mut().statuses = Some(statuses);
            PipelineCapture::maybe_done(&st, lp);
        });
        let st = capture.clone();
        let on_cancel: CloseHook = Box::new(move |lp| {
            let (cb, processes) = {
                let mut c = st.borrow_mut();
                (c.cb.take(), std::mem::take(&mut c.processes))
            };
            if cb.is_none() {
                return;
            }
            drop(cb);
            // (One that ended already is closing or gone: nothing to do.)
            let _ = ours.close(lp);
            close_open(lp, &processes);
        });
        let ends = PipelineEnds {
            first_stdin: null.as_ref().map(AsRawFd::as_raw_fd),
            last_stdout: Some(w.as_raw_fd()),
            on_cancel: Some(on_cancel),
            keep_open: true,
            keep_going: false,
        };
        let spawned = self
            .spawn_wired(lp, ends, on_exit)
            .and_then(|all| all.into_iter().collect::<io::Result<Vec<Child>>>());
        // The stages hold their ends now (or there are no stages): the parent's copies go.
        drop((w, null));
        let processes: Vec<Process> = match spawned {
            Ok(children) => children.into_iter().map(|c| c.process).collect(),
            Err(e) => {
                let _ = ours.close(lp);
                return Err(e);
            }
        };
        capture.borrow_mut().processes.clone_from(&processes);
        // The stages keep the loop going until they are reaped, whatever their handles'
        // `set_ref` (the output pipe, the capture's own, keeps it going until its end).
        for p in &processes {
            lp.child_keeps_loop_alive(p.0);
        }
        let st = capture.clone();
        let started = ours.read_start(lp, move |lp, p, ev| {
            let end = match ev {
                ReadEvent::Data(d) => {
                    let c = &mut *st.borrow_mut();
                    c.dropped += c.limit.keep(&mut c.stdout, d);
                    return;
                }
                ReadEvent::Eof => None,
                ReadEvent::Error(e) => Some(e),
            };
            {
                let mut c = st.borrow_mut();
                c.ended = true;
                if let Some(e) = end {
                    c.error.get_or_insert(e);
                }
            }
            let _ = p.close(lp);
            PipelineCapture::maybe_done(&st, lp);
        });
        if let Err(e) = started {
            // (Not expected for a pipe just made.) The stages run on and are reaped; the
            // capture ends with the error.
            {
                let mut c = capture.borrow_mut();
                c.ended = true;
                c.error = Some(e);
            }
            let _ = ours.close(lp);
        }
        Ok(processes)
    }

    /// [`spawn`](Pipeline::spawn), with `ends` wired in as well. Each stage's start, in
    /// order: all `Ok` unless `ends.keep_going`.
    fn spawn_wired(
        &self,
        lp: &mut Loop,
        ends: PipelineEnds,
        on_exit: PipelineCb,
    ) -> io::Result<Vec<io::Result<Child>>> {
        let n = self.stages.len();
        if n == 0 {
            return Err(invalid("a pipeline needs at least one stage"));
        }
        for (i, cmd) in self.stages.iter().enumerate() {
            // Bad input in any stage is reported before the first one starts.
            let group = if self.process_group { Some(0) } else { cmd.process_group };
            cmd.check_input()
                .and_then(|_| cmd.check_group_kill(group))
                .map_err(|e| context(e, format!("pipeline stage {}", i + 1)))?;
            if self.process_group && (cmd.setsid || cmd.process_group.is_some()) {
                return Err(invalid(format!(
                    "pipeline stage {} (`{}`): its process group is the pipeline's (Pipeline::process_group); leave process_group, setsid and controlling_terminal unset",
                    i + 1,
                    cmd.name()
                )));
            }
            for (target, _) in &cmd.stdio {
                let linked = (*target == 0 && i > 0) || (*target == 1 && i + 1 < n);
                if linked {
                    let which = if *target == 0 { "stdin" } else { "stdout" };
                    return Err(invalid(format!(
                        "pipeline stage {} (`{}`): its {which} is wired by the pipeline; leave it unset",
                        i + 1,
                        cmd.name()
                    )));
                }
            }
        }
        let PipelineEnds { first_stdin, last_stdout, on_cancel, keep_open, keep_going } = ends;
        let state = Rc::new(RefCell::new(PipelineState {
            statuses: (0..n).map(|_| None).collect(),
            left: n,
            processes: Vec::with_capacity(n),
            cb: Some(on_exit),
            on_cancel,
            keep_open,
        }));
        let mut children: Vec<io::Result<Child>> = Vec::with_capacity(n);
        let mut upstream: Option<OwnedFd> = None;
        // Handles moved to stages stay open until every stage has started, so that a failure
        // hands them back as they were.
        let mut moved: Vec<Moved> = Vec::new();
        // Every handle a stage takes: none counts as another holder of a description that a
        // stage's handle may share, since all close once the stages have started.
        let moving: Vec<HandleId> = self
            .stages
            .iter()
            .flat_map(|cmd| cmd.stdio.iter())
            .filter_map(|(_, stdio)| match stdio {
                Stdio::Handle(h) => Some(*h),
                _ => None,
            })
            .collect();
        let mut leader: Option<i32> = None;
        // The terminal of a group job whose would-be leader could not start (`keep_going`):
        // the stage that leads the group in its place takes it.
        let mut handed_foreground: Option<HandleId> = None;
        for (i, cmd) in self.stages.iter().enumerate() {
            let (next_read, write) = if i + 1 < n {
                match fd::pipe() {
                    Ok((r, w)) => (Some(r), Some(w)),
                    Err(e) => {
                        abandon_stages(lp, &children, self.process_group);
                        self.take_terminal_back(lp, leader);
                        lp.restore_moved(&moved);
                        return Err(context(
                            e,
                            format!(
                                "pipeline: making the pipe from stage {} (`{}`) to stage {} (`{}`)",
                                i + 1,
                                cmd.name(),
                                i + 2,
                                self.stages[i + 1].name()
                            ),
                        ));
                    }
                }
            } else {
                (None, None)
            };
            let mut links = Vec::with_capacity(2);
            if let Some(r) = &upstream {
                links.push((0, r.as_raw_fd()));
            }
            if let Some(w) = &write {
                links.push((1, w.as_raw_fd()));
            }
            if let (0, Some(fd)) = (i, first_stdin) {
                links.push((0, fd));
            }
            if let (true, Some(fd)) = (i + 1 == n, last_stdout) {
                links.push((1, fd));
            }
            let st = state.clone();
            let on_stage_exit: ExitCb = Box::new(move |lp, _, res| {
                let done = {
                    let mut s = st.borrow_mut();
                    s.statuses[i] = Some(res);
                    s.left -= 1;
                    s.left == 0
                };
                if done {
                    pipeline_finish(lp, &st);
                }
            });
            // The first stage leads the group; the others join it.
            let process_group = self.process_group.then_some(leader.unwrap_or(0));
            let wiring = Wiring {
                links: &links,
                hold_moved: Some(&mut moved),
                process_group,
                others_moving: &moving,
                foreground: handed_foreground,
            };
            match lp.spawn_command(cmd, wiring, on_stage_exit) {
                Ok(child) => {
                    if leader.is_none() {
                        leader = lp.process_ref(child.process.0).ok().map(|st| st.pid);
                    }
                    handed_foreground = None;
                    let st = state.clone();
                    lp.process_on_close(
                        child.process.0,
                        Box::new(move |lp| pipeline_stage_closed(lp, &st, i)),
                    );
                    state.borrow_mut().processes.push(child.process);
                    children.push(Ok(child));
                }
                Err(e) => {
                    // The error as spawn gave it (kind and OS error code kept), with the stage.
                    let e = context(e, format!("pipeline stage {}", i + 1));
                    if !keep_going {
                        abandon_stages(lp, &children, self.process_group);
                        self.take_terminal_back(lp, leader);
                        lp.restore_moved(&moved);
                        return Err(e);
                    }
                    // As a shell goes on past a stage it cannot start: the others run, and
                    // find their pipes to this one closed (below).
                    if self.process_group && leader.is_none() {
                        handed_foreground = cmd.foreground.or(handed_foreground);
                    }
                    {
                        let mut s = state.borrow_mut();
                        s.statuses[i] = Some(Err(crate::error::clone_error(&e)));
                        s.left -= 1;
                    }
                    children.push(Err(e));
                }
            }
            // The parent's copies of the links close now: the stages hold the only ones.
            drop(write);
            upstream = next_read;
        }
        lp.close_moved(&moved);
        if state.borrow().left == 0 {
            // No stage started: the callback still comes, from the loop, through a timer of
            // the loop's own (`Loop::handles` does not list it, so nothing closes it).
            let timer = crate::Timer::new(lp);
            lp.slot_mut(timer.id(), HandleKind::Timer)?.flags.insert(Flags::INTERNAL);
            let st = state.clone();
            let zero = Duration::ZERO;
            let started = timer.start(lp, zero, zero, move |lp, t| {
                let _ = t.close(lp);
                pipeline_finish(lp, &st);
            });
            if let Err(e) = started {
                let _ = timer.close(lp);
                return Err(e);
            }
        }
        Ok(children)
    }
}

impl Pipeline {
    /// A stage failed to start: the terminal an earlier stage took (`Command::foreground`)
    /// goes back to the caller's group, from the started stages' group `leader`.
    fn take_terminal_back(&self, lp: &Loop, leader: Option<i32>) {
        for cmd in &self.stages {
            lp.take_terminal_back(cmd.foreground, leader);
        }
    }
}

/// Every stage of a pipeline has exited (or had its handle closed): the callback gets the
/// statuses, unless a stage's close cancelled it, and the stages' handles close.
fn pipeline_finish(lp: &mut Loop, state: &RefCell<PipelineState>) {
    let (procs, cb, statuses, keep_open) = {
        let mut s = state.borrow_mut();
        let statuses: Vec<_> = s.statuses.iter_mut().map(|x| x.take()).collect();
        (std::mem::take(&mut s.processes), s.cb.take(), statuses, s.keep_open)
    };
    // Open while `cb` runs, as a capture's: it can end the job's leftovers gently
    // (`terminate_group`).
    if let Some(cb) = cb {
        cb(lp, statuses.into_iter().map(|x| x.expect("every stage reported")).collect());
        if keep_open {
            return;
        }
    }
    close_open(lp, &procs);
}

/// Closes those of `processes` that are open and not closing already.
fn close_open(lp: &mut Loop, processes: &[Process]) {
    for p in processes {
        if p.is_closing(lp).ok() == Some(false) {
            let _ = p.close(lp);
        }
    }
}

/// Stage `i`'s handle closes (within its `close`): if its exit was not reported yet, the
/// pipeline's callback is cancelled, and the stage counts as done, so that the other stages'
/// handles still close themselves once they have exited. Either way, an output capture
/// still waiting is abandoned (`on_cancel`, which does nothing once the capture is done).
fn pipeline_stage_closed(lp: &mut Loop, state: &RefCell<PipelineState>, i: usize) {
    let (cancelled, on_cancel, done) = {
        let mut s = state.borrow_mut();
        if s.left == 0 || s.statuses[i].is_some() {
            // Its exit is in, and stands; an output capture still waiting is abandoned.
            (None, s.on_cancel.take(), false)
        } else {
            s.left -= 1;
            (s.cb.take(), s.on_cancel.take(), s.left == 0)
        }
    };
    // Dropped with the state released: its captures' own drops may run anything.
    drop(cancelled);
    if let Some(on_cancel) = on_cancel {
        on_cancel(lp);
    }
    if done {
        pipeline_finish(lp, state);
    }
}

/// A later stage failed to start: kill the started ones and let the loop reap them.
fn abandon_stages(lp: &mut Loop, started: &[io::Result<Child>], group: bool) {
    for child in started.iter().flatten() {
        lp.abandon_child(child, group);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use crate::{Command, Loop};

    /// Whether a process not yet dead (a zombie is dead) is in process group `pgid`.
    #[cfg(target_os = "linux")]
    fn group_has_a_live_member(pgid: i32) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp ...: the fields after the command's closing parenthesis.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
    }

    /// A child that was reaped before the loop could watch it (the kernel reaps at once while
    /// SIGCHLD is ignored; a waitpid(-1) elsewhere may) is `Watch::Gone`: its exit callback
    /// gets `ECHILD`, and nothing signals or waits for its pid, which may be another
    /// process's now. `pidfd_open` refuses such a pid with `ESRCH` (kernels before 6.x: with
    /// `EINVAL` for a group leader whose group lives on, the second case here; the loop asks
    /// `waitid` whatever the error). Made deterministic by reaping a child of std's before
    /// the loop takes it.
    #[cfg(target_os = "linux")]
    #[test]
    fn issue_6_a_child_reaped_before_its_watch_is_gone_and_left_alone() {
        use std::os::unix::process::CommandExt;

        use super::{OnDrop, Watch, sys};
        use crate::error::os_error_code;

        let _watchdog = watchdog(Duration::from_secs(20));
        for leader_of_a_live_group in [false, true] {
            let mut cmd = std::process::Command::new("sh");
            if leader_of_a_live_group {
                // The leader exits; the sleep it leaves behind keeps its group (and so its pid
                // number) in use.
                cmd.args(["-c", "sleep 30 </dev/null >/dev/null 2>&1 & exit 0"]).process_group(0);
            } else {
                cmd.args(["-c", "exit 0"]);
            }
            let mut child = cmd.spawn().unwrap();
            let pid = child.id() as i32;
            assert!(child.wait().unwrap().success());
            let mut lp = Loop::new().unwrap();
            let got = Rc::new(Cell::new(None));
            let g = got.clone();
            let on_exit: super::ExitCb =
                Box::new(move |_, _, res| g.set(Some(os_error_code(&res.unwrap_err()))));
            let (group, leads) = if leader_of_a_live_group { (pid, true) } else { (0, false) };
            let id = lp.process_insert(pid, group, leads, OnDrop::KillGroup, on_exit, false, None).unwrap();
            let p = super::Process(id);
            let key = lp.process_ref(id).unwrap().child_key().unwrap();
            assert!(
                matches!(lp.children.entries[key].watch, Watch::Gone),
                "leader: {leader_of_a_live_group}"
            );
            // Its pid is nobody's to signal or wait for.
            assert_eq!(os_error_code(&p.kill(&mut lp, libc::SIGTERM).unwrap_err()), Some(libc::ESRCH));
            assert!(p.has_exited(&lp).unwrap());
            let err = p.watch_stops(&mut lp, |_, _, _| {}).unwrap_err();
            assert_eq!(os_error_code(&err), Some(libc::ESRCH), "{err}");
            if leader_of_a_live_group {
                // Closed with kill_group_on_drop: the group is not killed by number.
                p.close(&mut lp).unwrap();
                lp.run(crate::RunMode::Default).unwrap();
                assert_eq!(got.get(), None, "a closed handle's callback does not run");
                assert!(group_has_a_live_member(pid), "the group was left alone");
                sys::kill_group(pid, libc::SIGKILL).unwrap();
            } else {
                lp.run(crate::RunMode::Default).unwrap();
                assert_eq!(got.get(), Some(Some(libc::ECHILD)));
                assert!(p.has_exited(&lp).unwrap());
            }
            // A loop dropped with such an entry waits for nothing.
            let g = Rc::new(Cell::new(None));
            let g2 = g.clone();
            let cb: super::ExitCb = Box::new(move |_, _, res| g2.set(Some(res.is_err())));
            lp.process_insert(pid, 0, false, OnDrop::Nothing, cb, false, None).unwrap();
            drop(lp);
            assert_eq!(g.get(), None);
        }
    }

    /// Aborts the test process if the returned sender is still alive after `limit` (a test
    /// ends by dropping it, a panic too).
    fn watchdog(limit: Duration) -> std::sync::mpsc::Sender<()> {
        let (done, watchdog) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(limit) {
                eprintln!("watchdog: the test ran {limit:?}");
                std::process::abort();
            }
        });
        done
    }

    /// A close hook that runs while the loop drops (a pipeline's, a capture's) sees the
    /// handles stopped before it as closing, as after `close`: a pipeline's hook took them
    /// for open, and stopped them a second time.
    #[test]
    fn issue_6_close_hooks_during_a_drop_see_the_handles_stopped_before_as_closing() {
        let _watchdog = watchdog(Duration::from_secs(20));
        let mut lp = Loop::new().unwrap();
        let mut sleeper = Command::new("sleep");
        sleeper.arg("100").kill_on_drop(true);
        let first = sleeper.spawn(&mut lp, |_, _, _| {}).unwrap().process;
        let second = sleeper.spawn(&mut lp, |_, _, _| {}).unwrap().process;
        let pids = [first.pid(&lp).unwrap(), second.pid(&lp).unwrap()];
        assert!(first.0.key < second.0.key, "the drop stops the first one first");
        let seen = Rc::new(Cell::new(None));
        let s = seen.clone();
        lp.process_on_close(second.0, Box::new(move |lp| s.set(first.is_closing(lp).ok())));
        drop(lp);
        assert_eq!(seen.get(), Some(true));
        // Killed and reaped by the drop.
        for pid in pids {
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "child {pid} left");
        }
    }
}
