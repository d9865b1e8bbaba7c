//! Captured output: `Output` and the other results of a capture, the capture's
//! progress, and the loop's side of `output` and `stream_output`.

use super::*;

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
pub(super) struct OutputLimit {
    pub(super) bytes: usize,
    pub(super) last: bool,
}

impl OutputLimit {
    /// Adds what was read, `d`, to what is `kept` of a stream; returns how many bytes were
    /// dropped. Keeping the last bytes, `kept` has room for twice the limit once past it,
    /// and its start goes when that is full (`finish` trims it to the limit): memory stays
    /// at twice the limit, and each byte is moved once at most.
    pub(super) fn keep(self, kept: &mut Vec<u8>, d: &[u8]) -> u64 {
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
    pub(super) fn finish(self, kept: &mut Vec<u8>) -> u64 {
        let excess = kept.len().saturating_sub(self.bytes);
        if self.last && excess > 0 {
            kept.drain(..excess);
        }
        excess as u64
    }
}

/// A capture's callback, with the capture's process handle.
pub(super) type OutputCb = Box<dyn FnOnce(&mut Loop, Process, io::Result<Output>)>;
pub(super) type PipelineOutputCb = Box<dyn FnOnce(&mut Loop, io::Result<PipelineOutput>)>;

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
    /// The output was cut short: every stage had exited, and the output was still open (a
    /// descendant of the last stage held it) when the last stage's
    /// [`wait_delay`](Command::wait_delay) ran out; or [`Process::cut_output`] on a stage's
    /// handle asked for the cut (`cut_requested`). `stdout` holds what was read until then.
    pub cut: bool,
    /// The cut was [`Process::cut_output`]'s, not the `wait_delay`'s.
    pub cut_requested: bool,
    /// Output beyond the last stage's [`output_limit`](Command::output_limit) was read and
    /// dropped.
    pub truncated: bool,
    /// How many bytes of it were dropped.
    pub stdout_dropped: u64,
    /// Each stage's program, for `pipefail`'s error.
    pub(super) programs: Vec<String>,
}

impl PipelineOutput {
    /// The pipeline's status as a shell with `pipefail` sees it: the last stage's that
    /// failed (an error, a nonzero exit or a signal), else the last stage's. As with
    /// [`ExitStatus::ok`], `Ok(())` for success; the error names the stage ("pipeline stage
    /// 2 (`grep`): exited with code 1").
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
        let failed = self.statuses.iter().rposition(|s| !matches!(s, Ok(st) if st.success()));
        match failed.map(|i| (i, &self.statuses[i])) {
            None => Ok(()),
            // (Its own error names the stage already.)
            Some((_, Err(e))) => Err(crate::error::clone_error(e)),
            Some((i, Ok(status))) => {
                let program = self.programs.get(i).map_or("", String::as_str);
                Err(io::Error::other(format!("pipeline stage {} (`{program}`): {status}", i + 1)))
            }
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

pub(super) type OutputSink = Box<dyn FnMut(&mut Loop, Process, OutputStream, &[u8])>;

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
        let timer = crate::Timer::once_internal(lp, delay, move |lp| {
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
            Ok(t) => state.borrow_mut().delay_timer = Some(t),
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
        // (Out of memory in the timer heap, say.)
        if let Err(e) = crate::Timer::once_internal(lp, Duration::ZERO, move |lp| Capture::cut(&st, lp, true))
        {
            log::warn!("a capture's cut could not start: {e}");
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

impl Loop {
    /// Starts a capture: `output`, `output_with_input` and `stream_output`, and with
    /// `terminal`, a pty's master, `output_on_pty` and `stream_output_on_pty` (whose
    /// `cmd` has the slave where the terminal goes). Returns the process handle, and a pty
    /// capture's input handle.
    pub(super) fn command_output(
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
