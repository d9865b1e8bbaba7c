//! The command builder: the program and how it is named, arguments, environment, ids,
//! groups, fds and the spawn calls.

use super::*;

mod sealed {
    pub trait Sealed {}
}

/// What [`Command::new`] accepts as a program: a string (`&str`, `String`, `&OsStr`,
/// `OsString`), which is looked up in `PATH` unless it contains a `/`, or a path (`&Path`,
/// `PathBuf`), which never is (see [the module docs](super#the-program-path)).
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
pub(super) struct EnvEdits {
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
    pub(super) arg0: Option<CString>,
    pub(super) args: Vec<CString>,
    pub(super) env: Option<EnvEdits>,
    pub(super) cwd: Option<(PathBuf, CString)>,
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    /// The supplementary groups to set, where the caller gives them.
    pub(super) groups: Option<Vec<u32>>,
    pub(super) process_group: Option<i32>,
    pub(super) setsid: bool,
    /// A tty handle whose terminal the child takes for its group before its exec.
    pub(super) foreground: Option<HandleId>,
    /// The child's fd whose terminal becomes its new session's controlling terminal.
    pub(super) controlling_terminal: Option<RawFd>,
    /// Explicit fd entries, at most one per target.
    pub(super) stdio: Vec<(RawFd, Stdio)>,
    pub(super) on_drop: OnDrop,
    /// How long a capture waits for the output to end once the child exited.
    pub(super) wait_delay: Option<Duration>,
    /// How long a capture lets the child run, and the grace period of its ending then.
    pub(super) timeout: Option<(Duration, Duration)>,
    /// How much of each stream a capture keeps.
    pub(super) output_limit: OutputLimit,
    /// Signals the child starts with ignored: bit `n - 1` for signal `n`.
    pub(super) ignored_signals: u64,
    /// The signal the child gets when the spawning thread ends, 0 for none.
    pub(super) parent_death_signal: i32,
    /// Keep what the child used, for `Process::resource_usage`.
    pub(super) record_usage: bool,
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
    /// the parent's working directory (see [the module docs](super#the-program-path)). The
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
    /// [`stream_output`](Command::stream_output), and the last stage of a
    /// [`Pipeline::output`], where it counts once every stage has exited): how long to wait,
    /// once the child has exited, for its output to end (Go's `Cmd.WaitDelay`). Without it, the capture waits
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
    /// for a stopped child), then `SIGKILL` to what is left once `grace` is over. **Give a
    /// command that starts other programs a group of its own**
    /// ([`process_group(0)`](Command::process_group)): ended alone, a shell (`sh -c 'sleep
    /// 10'`, where the shell does not replace itself with its last command) leaves what it
    /// started running, holding the output open. A child
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

    pub(super) fn name(&self) -> String {
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
    pub(super) fn check_input(&self) -> io::Result<&CStr> {
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
    pub(super) fn check_group_kill(&self, group: Option<i32>) -> io::Result<()> {
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
    pub(super) fn child_path(&self) -> Option<OsString> {
        let env = self.env.as_ref()?;
        match env.vars.get(OsStr::new("PATH")) {
            Some(Some(p)) => Some(p.clone()),
            Some(None) => Some(spawn::DEFAULT_PATH.into()),
            None if env.clear => Some(spawn::DEFAULT_PATH.into()),
            None => None,
        }
    }

    /// The child's environment block, when it differs from the parent's.
    pub(super) fn env_block(&self) -> Option<Vec<CString>> {
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
    pub(super) fn spawn_error(&self, e: SpawnError, fds: &[FdMapping], group: Option<i32>) -> io::Error {
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
