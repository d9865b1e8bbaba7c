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
//! # Grandchildren
//!
//! A child's handle reaches the child only: [`Process::kill`], [`Command::timeout`] and
//! [`Command::kill_on_drop`] miss what it started (a shell's programs, a build's
//! compilers), which runs on and holds the child's pipes open. Give a command that starts
//! other programs a group of its own ([`Command::process_group`]`(0)`), and end it through
//! the group: [`Command::kill_group_on_drop`], [`Process::terminate_group`] (a timeout
//! then ends the group too). What leaves the group (a daemon that calls `setsid`) is
//! reached by none of them: [`Command::wait_delay`] bounds the wait for output it holds.
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

mod command;
mod handle;
mod output;
mod pipeline;
mod reap;
mod spawning;
mod stdio;
#[cfg(test)]
mod tests;

pub use command::{Command, IntoProgram};
pub(crate) use handle::ProcessState;
pub use handle::{Child, GroupEnd, Process, StopEvent};
pub use output::{Output, OutputCut, OutputStream, PipelineOutput, RunTimedOut};
pub use pipeline::Pipeline;
pub use reap::{AdoptedExit, become_subreaper, current_process_group, reap_orphans};
pub(crate) use reap::{ChildCheck, Children, GroupEscalation, is_child_token};
pub use stdio::Stdio;
// What the parts use of each other's.
use self::{handle::*, output::*, reap::*, spawning::*, stdio::*};

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
