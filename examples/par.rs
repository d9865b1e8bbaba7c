//! par: a small `xargs -P` on evloop. It runs each line of its stdin as a shell command,
//! several at a time, and labels every line of their output with the command's line number.
//!
//! ```text
//! $ printf 'echo a; echo b >&2\nsleep 1; echo c\nexit 3\n' | cargo run --example par -- -j 2
//! 1: a
//! 1: b
//! par: command 3 exited with code 3: exit 3
//! 2: c
//! $ echo $?
//! 123
//! ```
//!
//! Usage: `par [-j N] < commands`.
//!
//! - **Commands.** Each line of stdin runs as `/bin/sh -c LINE`, with its stdin from
//!   `/dev/null` (as GNU xargs does), in a process group of its own. Commands are numbered by
//!   their line, from 1; blank lines are skipped (and keep their number). A last line without a
//!   newline counts. At most `-j N` commands run at once (default: the number of CPUs). stdin
//!   is read as commands start, so an endless stream of commands works: reading pauses while
//!   [`QUEUED_COMMANDS_MAX`] commands wait.
//! - **Output.** A command's stdout goes to par's stdout and its stderr to par's stderr (so
//!   redirections keep their meaning), every line prefixed with `N: `. Lines are written
//!   whole and never interleave mid-line: a command's unfinished line waits for its newline,
//!   and a last line without one gets one when the command's output ends. A line longer than
//!   [`LINE_BYTES_MAX`] is cut into lines of that size. When stdout and stderr are the same
//!   file (`2>&1`, or one terminal), both go through one handle, so even then no line is cut
//!   into by another. A command is finished when it has exited and its stdout and stderr are
//!   closed: a background process that keeps them open keeps the command running.
//! - **Back-pressure.** While more than [`HIGH_WATER_BYTES`] wait to be written to stdout or
//!   stderr, par stops reading the commands' output, and they block in their writes: memory
//!   stays bounded however fast they write and however slow the reader is.
//! - **Progress.** When stderr is a terminal, its last line shows
//!   `par: 12 done, 1 failed, 4 running, 3.2s` (done counts failed commands too), redrawn ten
//!   times a second and kept below the output; at the end it stays as a summary. When stderr
//!   is not a terminal there is no progress line.
//! - **Ctrl-C** (`SIGINT`). par forwards it to the process group of every running command,
//!   starts no new command, and waits for the running ones to finish or die. A second Ctrl-C
//!   sends them `SIGKILL`. When the last one is gone, par kills itself with `SIGINT`, so that
//!   a calling shell or script knows it was interrupted (a shell shows status 130). `SIGTERM`
//!   and `SIGHUP` are handled the same way, so that killing par does not leave its commands
//!   running unseen.
//! - **Exit status**, following GNU xargs:
//!   - 0: every command succeeded;
//!   - 123: a command exited with a status from 1 to 254 (xargs documents 1 to 125, but maps a
//!     command's 126 and 127 to 123 too);
//!   - 124: a command exited with 255;
//!   - 125: a command was killed by a signal;
//!   - 126: `/bin/sh` could not be started; 127: `/bin/sh` was not found;
//!   - 1: par's own error (reading stdin, writing output, a command line too long);
//!   - 2: bad usage (xargs says 1; 2 is what the other examples and most tools use).
//!
//!   When several apply, par exits with the most severe, in the order 1, 127, 126, 125, 124,
//!   123. After 124 to 127 and its own errors, par starts no new command, as xargs does; unlike
//!   xargs, which exits at once and leaves the running commands behind, it waits for them.
//!
//! When a spawn fails for lack of processes or fds while other commands run, par waits for
//! one of them to finish and tries again. The loop reaps every command: par leaves no zombie,
//! and it returns only once every command has ended.
//!
//! The integration tests compile this file into the test binary and compare its output with
//! `xargs -P`'s (`tests/it/par.rs`).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use evloop::signal::{SIGHUP, SIGINT, SIGKILL, SIGTERM};
use evloop::{
    AnyStream, Command, ExitStatus, HandleType, Lines, Loop, LoopBuilder, Pipe, Process, ReadEvent, RunMode,
    Signal, Stdio, Timer, guess_handle,
};

const USAGE: &str = "\
usage: par [-j N] < commands

Runs each line of stdin as a command (/bin/sh -c LINE), at most N at a time (default: the
number of CPUs), and prefixes every line of their output with the command's line number.

  -j N, --jobs N   run at most N commands at once (N >= 1)
  -h, --help       show this help
";

/// The shell that runs each command line.
const SHELL: &str = "/bin/sh";

/// Bytes waiting to be written to stdout or stderr above which par stops reading the
/// commands' output; it reads again below [`LOW_WATER_BYTES`].
pub const HIGH_WATER_BYTES: usize = 1 << 20;
/// See [`HIGH_WATER_BYTES`]. Well below it, so that reading does not flap at the mark.
pub const LOW_WATER_BYTES: usize = HIGH_WATER_BYTES / 4;
/// The longest output line written whole; longer ones are cut into lines of this size, so a
/// command that never writes a newline cannot make par buffer without bound.
pub const LINE_BYTES_MAX: usize = 64 << 10;
/// The longest command line: Linux refuses longer single arguments (`MAX_ARG_STRLEN`, which
/// counts the terminating NUL).
pub const COMMAND_BYTES_MAX: usize = (128 << 10) - 1;
/// Commands read ahead of those running; reading stdin pauses beyond this.
pub const QUEUED_COMMANDS_MAX: usize = 1024;
/// How often the progress line is redrawn.
const PROGRESS_PERIOD: Duration = Duration::from_millis(100);
/// Moves to the start of the line and erases it: how the progress line is cleared.
const CLEAR_LINE: &[u8] = b"\r\x1b[K";

const EXIT_ERROR: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_FAILED: i32 = 123;
const EXIT_255: i32 = 124;
const EXIT_SIGNALED: i32 = 125;
const EXIT_CANNOT_RUN: i32 = 126;
const EXIT_NOT_FOUND: i32 = 127;

/// Indexes of a command's two output streams (and of where each goes).
const OUT: usize = 0;
const ERR: usize = 1;

fn main() {
    // Arguments that are not UTF-8 cannot be a valid -j value: lossy is good enough to say so.
    let args = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned());
    std::process::exit(run(args, Loop::builder()));
}

/// Runs par with these arguments on this process's stdio, with a loop from `builder`, and
/// returns the exit status. After Ctrl-C (or `SIGTERM`, `SIGHUP`) it kills the process with
/// that signal instead.
pub fn run(args: impl IntoIterator<Item = String>, builder: LoopBuilder) -> i32 {
    let jobs = match parse_args(args) {
        Ok(Some(jobs)) => jobs,
        Ok(None) => {
            print!("{USAGE}");
            return 0;
        }
        Err(why) => {
            eprintln!("par: {why}\n{}\n(par --help tells more)", USAGE.lines().next().unwrap_or(""));
            return EXIT_USAGE;
        }
    };
    // Any error here comes from setting up or from the loop itself; the loop is gone by
    // then, and with it the O_NONBLOCK it set on our stdio, so eprintln cannot fail on it.
    match par(jobs, builder) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("par: {e}");
            EXIT_ERROR
        }
    }
}

/// Parses the arguments: `Ok(Some(jobs))`, `Ok(None)` for `--help`, or what is wrong.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<usize>, String> {
    let mut jobs = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "-j" | "--jobs" => args.next().ok_or_else(|| format!("{arg} needs a value"))?,
            _ if arg.starts_with("--jobs=") => arg["--jobs=".len()..].to_string(),
            _ if arg.starts_with("-j") => arg["-j".len()..].to_string(),
            _ => return Err(format!("unexpected argument `{arg}`")),
        };
        match value.parse::<usize>() {
            Ok(n) if n >= 1 => jobs = Some(n),
            _ => return Err(format!("bad number of jobs `{value}`: expected a whole number, at least 1")),
        }
    }
    Ok(Some(jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))))
}

/// Runs the commands from stdin with at most `jobs` in flight; returns the exit status.
fn par(jobs: usize, builder: LoopBuilder) -> io::Result<i32> {
    let mut lp = builder.build()?;
    let state = Par::start(&mut lp, jobs)?;
    lp.run(RunMode::Default)?;
    // Every command has finished and all output is written: leave the summary, let it out,
    // then close what is left.
    state.borrow_mut().draw_summary(&mut lp);
    lp.run(RunMode::Default)?;
    state.borrow_mut().close(&mut lp);
    lp.run(RunMode::Default)?;
    let par = state.borrow();
    if let Some(signal) = par.interrupted_by {
        // The watchers are closed, so the disposition is back to what it was: the default,
        // unless the signal was ignored when par started (then the shell's code for it).
        let _ = evloop::signal::raise(signal);
        return Ok(128 + signal);
    }
    Ok(par.status)
}

// ----- par's stdio --------------------------------------------------------------------------

/// Opens a duplicate of `fd` (par's `name`), so that closing the handle leaves fds 0, 1 and
/// 2 in place: a terminal as a `Tty` handle, which reopens it privately so that `O_NONBLOCK`
/// never reaches the shell sharing it, and anything else as a `Pipe` handle.
fn open_std(lp: &mut Loop, fd: impl AsFd, name: &str) -> io::Result<AnyStream> {
    let dup = fd.as_fd().try_clone_to_owned()?;
    AnyStream::open(lp, dup).map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))
}

/// Whether two fds are the same file (`2>&1`, or one terminal).
fn same_file(a: impl AsFd, b: impl AsFd) -> io::Result<bool> {
    let id = |fd: OwnedFd| File::from(fd).metadata().map(|m| (m.dev(), m.ino()));
    Ok(id(a.as_fd().try_clone_to_owned()?)? == id(b.as_fd().try_clone_to_owned()?)?)
}

/// Where output goes: stdout or stderr, or one sink for both.
#[derive(Debug)]
struct Sink {
    stream: AnyStream,
    /// A write failed: later output is dropped.
    broken: bool,
}

// ----- the state ------------------------------------------------------------------------------

/// A running command.
#[derive(Debug)]
struct Job {
    command: Vec<u8>,
    /// Kept open until the job is finished, to signal its group even after the shell exited.
    process: Process,
    exit: Option<io::Result<ExitStatus>>,
    /// The command's stdout and stderr, each until it reaches end of file.
    pipes: [Option<Pipe>; 2],
    /// The unfinished line of each.
    lines: [Lines; 2],
}

impl Job {
    fn is_finished(&self) -> bool {
        self.exit.is_some() && self.pipes.iter().all(Option::is_none)
    }
}

/// Everything par knows, shared by its callbacks (which reach it through `me`).
#[derive(Debug)]
struct Par {
    me: Weak<RefCell<Par>>,
    jobs_max: usize,
    /// stdin, until it ends or par stops taking commands.
    input: Option<AnyStream>,
    input_paused: bool,
    input_lines: Lines,
    lines_read: usize,
    /// Commands read and not started yet: (line number, command).
    queue: VecDeque<(usize, Vec<u8>)>,
    running: BTreeMap<usize, Job>,
    sinks: Vec<Sink>,
    /// The sink of commands' stdout (`OUT`) and of their stderr and par's messages (`ERR`).
    route: [usize; 2],
    /// The sink that shows the progress line: stderr's, when it is a terminal.
    progress: Option<usize>,
    /// Reading commands' output is paused: too much is waiting to be written.
    output_paused: bool,
    /// The watchers of `SIGINT`, `SIGTERM` and `SIGHUP`.
    signals: Vec<Signal>,
    timer: Option<Timer>,
    started: Instant,
    done: usize,
    failed: usize,
    /// The exit status so far (see [`severity`]).
    status: i32,
    /// No more commands start: after Ctrl-C, a fatal status, or an error.
    stopping: bool,
    /// The first of those signals that came, if one did.
    interrupted_by: Option<i32>,
}

/// How bad an exit status is, for "the worst status wins".
fn severity(status: i32) -> u8 {
    match status {
        0 => 0,
        EXIT_FAILED => 1,
        EXIT_255 => 2,
        EXIT_SIGNALED => 3,
        EXIT_CANNOT_RUN => 4,
        EXIT_NOT_FOUND => 5,
        _ => 6,
    }
}

/// What a command's end means for par's exit status, and whether par starts no more
/// commands after it (as xargs does after 255 and after a signal).
fn outcome(exit: &io::Result<ExitStatus>) -> (i32, bool) {
    match exit {
        Ok(ExitStatus::Exited(0)) => (0, false),
        Ok(ExitStatus::Exited(255)) => (EXIT_255, true),
        Ok(ExitStatus::Exited(_)) => (EXIT_FAILED, false),
        Ok(ExitStatus::Signaled { .. }) => (EXIT_SIGNALED, true),
        // The loop could not learn the status: someone else reaped the child.
        Err(_) => (EXIT_ERROR, true),
    }
}

/// Runs `f` on the state, if it still exists (it lives as long as the loop runs).
fn with(me: &Weak<RefCell<Par>>, f: impl FnOnce(&mut Par)) {
    if let Some(par) = me.upgrade() {
        f(&mut par.borrow_mut());
    }
}

impl Par {
    /// Opens stdio, starts reading commands, watching signals and, on a terminal, drawing
    /// progress.
    fn start(lp: &mut Loop, jobs_max: usize) -> io::Result<Rc<RefCell<Par>>> {
        let (stdout, stderr) = (io::stdout(), io::stderr());
        let err_is_tty = guess_handle(stderr.as_fd())? == HandleType::Tty;
        let mut sinks = vec![Sink { stream: open_std(lp, &stdout, "stdout")?, broken: false }];
        let route = if same_file(&stdout, &stderr)? {
            [0, 0]
        } else {
            sinks.push(Sink { stream: open_std(lp, &stderr, "stderr")?, broken: false });
            [0, 1]
        };
        let input = open_std(lp, io::stdin(), "stdin")?;
        let state = Rc::new_cyclic(|me| {
            RefCell::new(Par {
                me: me.clone(),
                jobs_max,
                input: Some(input),
                input_paused: false,
                input_lines: Lines::new(usize::MAX),
                lines_read: 0,
                queue: VecDeque::new(),
                running: BTreeMap::new(),
                sinks,
                route,
                progress: err_is_tty.then_some(route[ERR]),
                output_paused: false,
                signals: Vec::new(),
                timer: None,
                started: Instant::now(),
                done: 0,
                failed: 0,
                status: 0,
                stopping: false,
                interrupted_by: None,
            })
        });
        let mut par = state.borrow_mut();
        par.read_input(lp)?;
        for signum in [SIGINT, SIGTERM, SIGHUP] {
            let signal = Signal::new(lp);
            par.signals.push(signal);
            let me = par.me.clone();
            signal.start(lp, signum, move |lp, _, signum| with(&me, |par| par.interrupt(lp, signum)))?;
            // Watchers (and the timer below) keep the loop running no longer than the
            // commands and the output do.
            signal.set_ref(lp, false)?;
        }
        if par.progress.is_some() {
            let timer = Timer::new(lp);
            let me = par.me.clone();
            timer.start(lp, PROGRESS_PERIOD, PROGRESS_PERIOD, move |lp, _| {
                with(&me, |par| par.draw_progress(lp));
            })?;
            timer.set_ref(lp, false)?;
            par.timer = Some(timer);
        }
        drop(par);
        Ok(state)
    }

    /// Notes an exit status; the worst one wins.
    fn note(&mut self, status: i32) {
        if severity(status) > severity(self.status) {
            self.status = status;
        }
    }

    /// Starts no more commands, and reads no more of stdin.
    fn stop(&mut self, lp: &mut Loop) {
        self.stopping = true;
        self.queue.clear();
        if let Some(input) = self.input.take() {
            let _ = input.close(lp);
        }
    }

    // ----- reading commands -----------------------------------------------------------------

    fn read_input(&mut self, lp: &mut Loop) -> io::Result<()> {
        let Some(input) = self.input else { return Ok(()) };
        let me = self.me.clone();
        input.read_start(lp, move |lp, _, ev| with(&me, |par| par.on_input(lp, ev)))
    }

    fn on_input(&mut self, lp: &mut Loop, ev: ReadEvent<'_>) {
        match &ev {
            ReadEvent::Data(bytes) => self.add_input(lp, bytes),
            ReadEvent::Eof | ReadEvent::Error(_) => {
                if let Some(last) = self.input_lines.finish() {
                    self.lines_read += 1;
                    queue_command(&mut self.queue, self.lines_read, &last);
                }
                if let Some(input) = self.input.take() {
                    let _ = input.close(lp);
                }
            }
        }
        if let ReadEvent::Error(e) = ev {
            self.say(lp, format!("reading stdin: {e}"));
            self.note(EXIT_ERROR);
        }
        self.start_more(lp);
    }

    /// Queues the commands that `bytes` completes.
    fn add_input(&mut self, lp: &mut Loop, bytes: &[u8]) {
        let (lines, queue, count) = (&mut self.input_lines, &mut self.queue, &mut self.lines_read);
        let mut too_long = None;
        lines.push(bytes, |line| {
            *count += 1;
            if line.len() > COMMAND_BYTES_MAX {
                too_long = too_long.or(Some(*count));
            } else if too_long.is_none() {
                queue_command(queue, *count, line);
            }
        });
        // An unfinished line that is already too long need not wait for its end.
        let too_long = too_long.or((lines.pending() > COMMAND_BYTES_MAX).then_some(*count + 1));
        if let Some(line) = too_long {
            self.say(lp, format!("line {line} is longer than {COMMAND_BYTES_MAX} bytes"));
            self.note(EXIT_ERROR);
            self.stop(lp);
        } else if self.queue.len() >= QUEUED_COMMANDS_MAX {
            // Back-pressure on stdin: queued commands take memory, so read no further ahead.
            // `start_more` reads again once the queue has room.
            if let Some(input) = self.input {
                let _ = input.read_pause(lp);
            }
            self.input_paused = true;
        }
    }

    // ----- running commands -----------------------------------------------------------------

    /// Starts queued commands while fewer than `-j` run.
    fn start_more(&mut self, lp: &mut Loop) {
        while !self.stopping && self.running.len() < self.jobs_max {
            let Some((index, command)) = self.queue.pop_front() else { break };
            let Err(e) = self.spawn(lp, index, &command) else { continue };
            // Out of processes or fds: try again when a running command has finished.
            let temporary = matches!(
                evloop::os_error_code(&e),
                Some(libc::EAGAIN | libc::EMFILE | libc::ENFILE | libc::ENOMEM)
            );
            if temporary && !self.running.is_empty() {
                self.queue.push_front((index, command));
                break;
            }
            self.say(lp, format!("cannot run command {index}: {e}"));
            self.note(if e.kind() == io::ErrorKind::NotFound { EXIT_NOT_FOUND } else { EXIT_CANNOT_RUN });
            self.stop(lp);
        }
        if self.input_paused && self.queue.len() < QUEUED_COMMANDS_MAX / 2 {
            self.input_paused = false;
            if let Err(e) = self.input.map_or(Ok(()), |input| input.read_resume(lp)) {
                self.say(lp, format!("reading stdin: {e}"));
                self.note(EXIT_ERROR);
                self.stop(lp);
            }
        }
    }

    fn spawn(&mut self, lp: &mut Loop, index: usize, command: &[u8]) -> io::Result<()> {
        let me = self.me.clone();
        let child = Command::new(Path::new(SHELL))
            // As `sh` names itself in its messages ("sh: 1: foo: not found"), as under xargs.
            .arg0("sh")
            .arg("-c")
            .arg(OsStr::from_bytes(command))
            .stdin(Stdio::Null)
            .stdout(Stdio::Pipe)
            .stderr(Stdio::Pipe)
            // A group of its own, for Ctrl-C to reach everything the command started, and
            // only through par.
            .process_group(0)
            .spawn(lp, move |lp, _, res| with(&me, |par| par.on_exit(lp, index, res)))?;
        let pipes = [child.stdout, child.stderr];
        self.running.insert(
            index,
            Job {
                command: command.to_vec(),
                process: child.process,
                exit: None,
                pipes,
                lines: [Lines::new(LINE_BYTES_MAX), Lines::new(LINE_BYTES_MAX)],
            },
        );
        for (k, pipe) in pipes.into_iter().enumerate() {
            if let Some(pipe) = pipe {
                self.read_output(lp, index, k, pipe);
                if self.output_paused {
                    let _ = pipe.read_pause(lp);
                }
            }
        }
        Ok(())
    }

    fn read_output(&mut self, lp: &mut Loop, index: usize, k: usize, pipe: Pipe) {
        let me = self.me.clone();
        let res = pipe.read_start(lp, move |lp, _, ev| with(&me, |par| par.on_output(lp, index, k, ev)));
        if let Err(e) = res {
            self.on_output(lp, index, k, ReadEvent::Error(e));
        }
    }

    /// Output from command `index`'s stdout (`k == OUT`) or stderr: whole lines go out.
    fn on_output(&mut self, lp: &mut Loop, index: usize, k: usize, ev: ReadEvent<'_>) {
        let Some(job) = self.running.get_mut(&index) else { return };
        let prefix = format!("{index}: ");
        let mut text = Vec::new();
        let mut add_line = |line: &[u8]| {
            text.extend_from_slice(prefix.as_bytes());
            text.extend_from_slice(line);
            text.push(b'\n');
        };
        match &ev {
            ReadEvent::Data(bytes) => job.lines[k].push(bytes, add_line),
            // The end of this stream: out with its last line, and close the pipe.
            ReadEvent::Eof | ReadEvent::Error(_) => {
                if let Some(last) = job.lines[k].finish() {
                    add_line(&last);
                }
                if let Some(pipe) = job.pipes[k].take() {
                    let _ = pipe.close(lp);
                }
            }
        }
        self.emit(lp, k, text);
        if let ReadEvent::Error(e) = ev {
            self.say(lp, format!("reading the output of command {index}: {e}"));
            self.note(EXIT_ERROR);
        }
        self.finish_if_done(lp, index);
    }

    fn on_exit(&mut self, lp: &mut Loop, index: usize, res: io::Result<ExitStatus>) {
        if let Some(job) = self.running.get_mut(&index) {
            job.exit = Some(res);
            self.finish_if_done(lp, index);
        }
    }

    /// Once command `index` has exited and its output ended: counts it, and starts the next.
    fn finish_if_done(&mut self, lp: &mut Loop, index: usize) {
        if !self.running.get(&index).is_some_and(Job::is_finished) {
            return;
        }
        let Some(Job { command, process, exit: Some(exit), .. }) = self.running.remove(&index) else {
            return;
        };
        let _ = process.close(lp);
        self.done += 1;
        let (status, fatal) = outcome(&exit);
        if status != 0 {
            // Counted first, so that the progress line drawn below the message counts it.
            self.failed += 1;
            let how = match &exit {
                Ok(st) => st.to_string(),
                Err(e) => format!("could not be waited for ({e})"),
            };
            self.say(lp, format!("command {index} {how}: {}", String::from_utf8_lossy(&command)));
        }
        self.note(status);
        if fatal && !self.stopping {
            self.say(lp, "starting no more commands".to_string());
            self.stop(lp);
        }
        self.start_more(lp);
    }

    // ----- writing output -------------------------------------------------------------------

    /// Writes `text` (whole lines) where `route` (`OUT` or `ERR`) goes, above the progress
    /// line if that sink shows it.
    fn emit(&mut self, lp: &mut Loop, route: usize, text: Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let sink = self.route[route];
        if self.progress == Some(sink) {
            // Clear the progress line, write the lines where it was, draw it again below.
            let mut framed = CLEAR_LINE.to_vec();
            framed.extend_from_slice(&text);
            framed.extend_from_slice(self.progress_line().as_bytes());
            self.write(lp, sink, framed);
        } else {
            self.write(lp, sink, text);
        }
    }

    /// A message from par itself, on stderr.
    fn say(&mut self, lp: &mut Loop, message: String) {
        self.emit(lp, ERR, format!("par: {message}\n").into_bytes());
    }

    fn write(&mut self, lp: &mut Loop, sink: usize, bytes: Vec<u8>) {
        if self.sinks[sink].broken {
            return;
        }
        let me = self.me.clone();
        let res = self.sinks[sink].stream.write_vec(lp, bytes, move |lp, res| {
            with(&me, |par| par.written(lp, sink, res));
        });
        if let Err(e) = res {
            self.written(lp, sink, Err(e));
        }
        self.update_back_pressure(lp);
    }

    /// A write to `sink` completed.
    fn written(&mut self, lp: &mut Loop, sink: usize, res: io::Result<()>) {
        if let Err(e) = res {
            if !self.sinks[sink].broken {
                self.output_failed(lp, sink, e);
            }
        }
        self.update_back_pressure(lp);
    }

    /// Output cannot be written: nothing par does from here on can be seen, so it ends it
    /// (as `SIGPIPE` would end a command writing to a closed pipe).
    fn output_failed(&mut self, lp: &mut Loop, sink: usize, e: io::Error) {
        self.sinks[sink].broken = true;
        if self.progress == Some(sink) {
            self.progress = None;
        }
        // A reader that went away (`par ... | head`) is no error worth a message.
        if e.kind() != io::ErrorKind::BrokenPipe {
            let name = if sink == self.route[OUT] { "stdout" } else { "stderr" };
            self.say(lp, format!("writing {name}: {e}"));
        }
        self.note(EXIT_ERROR);
        self.stop(lp);
        self.signal_all(lp, SIGTERM);
    }

    /// Pauses reading the commands' output while too much waits to be written, and resumes
    /// once enough of it was.
    fn update_back_pressure(&mut self, lp: &mut Loop) {
        let queued = self.sinks.iter().map(|s| s.stream.write_queue_size(lp).unwrap_or(0)).max().unwrap_or(0);
        let pause = if !self.output_paused && queued > HIGH_WATER_BYTES {
            true
        } else if self.output_paused && queued <= LOW_WATER_BYTES {
            false
        } else {
            return;
        };
        self.output_paused = pause;
        for pipe in self.running.values().flat_map(|job| job.pipes.iter().flatten()) {
            let _ = if pause { pipe.read_pause(lp) } else { pipe.read_resume(lp) };
        }
    }

    // ----- Ctrl-C ---------------------------------------------------------------------------

    /// Ctrl-C, `SIGTERM` or `SIGHUP`: the first is passed on to the commands, the next kills
    /// them.
    fn interrupt(&mut self, lp: &mut Loop, signum: i32) {
        let n = self.running.len();
        if self.interrupted_by.is_none() {
            self.interrupted_by = Some(signum);
            self.stop(lp);
            let name = match signum {
                SIGINT => "Ctrl-C",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            self.say(lp, format!("interrupted ({name}): waiting for {n} running (Ctrl-C again kills them)"));
            self.signal_all(lp, signum);
        } else {
            self.say(lp, format!("interrupted again: killing {n} running"));
            self.signal_all(lp, SIGKILL);
        }
    }

    /// Sends `signal` to the process group of every running command.
    fn signal_all(&mut self, lp: &mut Loop, signal: i32) {
        for job in self.running.values() {
            // ESRCH: the group is gone already, and its output about to end.
            let _ = job.process.kill_group(lp, signal);
        }
    }

    // ----- progress -------------------------------------------------------------------------

    fn progress_line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let (done, failed, running) = (self.done, self.failed, self.running.len());
        format!("par: {done} done, {failed} failed, {running} running, {secs:.1}s")
    }

    /// Redraws the progress line, unless earlier output is still waiting to be written
    /// (redrawing then would only pile up more).
    fn draw_progress(&mut self, lp: &mut Loop) {
        let Some(sink) = self.progress else { return };
        if self.sinks[sink].stream.write_queue_size(lp).unwrap_or(0) == 0 {
            let mut line = CLEAR_LINE.to_vec();
            line.extend_from_slice(self.progress_line().as_bytes());
            self.write(lp, sink, line);
        }
    }

    /// The progress line a last time, as a summary that stays.
    fn draw_summary(&mut self, lp: &mut Loop) {
        let Some(sink) = self.progress else { return };
        let mut line = CLEAR_LINE.to_vec();
        line.extend_from_slice(self.progress_line().as_bytes());
        line.push(b'\n');
        self.write(lp, sink, line);
    }

    /// Closes every handle left: stdio, the signal watcher and the timer.
    fn close(&mut self, lp: &mut Loop) {
        if let Some(input) = self.input.take() {
            let _ = input.close(lp);
        }
        for sink in &self.sinks {
            let _ = sink.stream.close(lp);
        }
        for signal in self.signals.drain(..) {
            let _ = signal.close(lp);
        }
        if let Some(timer) = self.timer.take() {
            let _ = timer.close(lp);
        }
    }
}

/// Queues the command on input line `index`, unless the line is blank.
fn queue_command(queue: &mut VecDeque<(usize, Vec<u8>)>, index: usize, line: &[u8]) {
    if !line.iter().all(u8::is_ascii_whitespace) {
        queue.push_back((index, line.to_vec()));
    }
}
