//! Pipelines: `a | b | c`, wired child to child.

use super::*;

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
    /// The capture's pipe: the last stage's stdout.
    output: Pipe,
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
    /// The stages' programs, for `PipelineOutput::pipefail`.
    programs: Vec<String>,
    /// The last stage's `wait_delay`, and its timer, started once every stage has exited
    /// with the output still open.
    wait_delay: Option<Duration>,
    delay_timer: Option<crate::Timer>,
    /// `Process::cut_output` asked for a cut (on any stage's handle); it comes from a timer.
    cut_asked: bool,
    /// The output was still open at the cut: it was closed there.
    cut: bool,
}

impl PipelineCapture {
    /// Calls the callback once the stages have exited and the output has ended.
    fn maybe_done(state: &RefCell<PipelineCapture>, lp: &mut Loop) {
        let (cb, result, timer) = {
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
                    cut: c.cut,
                    cut_requested: c.cut && c.cut_asked,
                    truncated: c.dropped != 0,
                    stdout_dropped: c.dropped,
                    programs: std::mem::take(&mut c.programs),
                }),
            };
            (cb, result, c.delay_timer.take())
        };
        if let Some(t) = timer {
            let _ = t.close(lp);
        }
        cb(lp, result);
        let processes = std::mem::take(&mut state.borrow_mut().processes);
        close_open(lp, &processes);
    }

    /// Every stage has exited with the output still open: after the last stage's
    /// `wait_delay`, stop waiting for it.
    fn start_delay(state: &Rc<RefCell<PipelineCapture>>, lp: &mut Loop) {
        let delay = {
            let c = state.borrow();
            match c.wait_delay {
                Some(d) if c.cb.is_some() && !c.ended && c.delay_timer.is_none() => d,
                _ => return,
            }
        };
        let st = state.clone();
        // From now, not from the iteration's cached time (as a command's capture does).
        lp.update_time();
        match crate::Timer::once_internal(lp, delay, move |lp| {
            st.borrow_mut().delay_timer = None;
            log::debug!("a pipeline's output still open {delay:?} after its stages exited: closing it");
            PipelineCapture::cut(&st, lp);
        }) {
            Ok(t) => state.borrow_mut().delay_timer = Some(t),
            // (Out of memory in the timer heap, say: the capture waits for end of file.)
            Err(e) => log::warn!("a pipeline capture's wait_delay could not start: {e}"),
        }
    }

    /// `Process::cut_output` on a stage: the cut, from a timer due now (never nested in
    /// the output's own read).
    fn cut_soon(state: &Rc<RefCell<PipelineCapture>>, lp: &mut Loop) {
        {
            let mut c = state.borrow_mut();
            if c.cb.is_none() || c.ended || c.cut_asked {
                return;
            }
            c.cut_asked = true;
        }
        let st = state.clone();
        if let Err(e) =
            crate::Timer::once_internal(lp, Duration::ZERO, move |lp| PipelineCapture::cut(&st, lp))
        {
            log::warn!("a pipeline capture's cut could not start: {e}");
        }
    }

    /// Stops waiting for the output: what the pipe holds is read, then it closes, and the
    /// callback comes once every stage has exited (now, after a `wait_delay`).
    fn cut(state: &Rc<RefCell<PipelineCapture>>, lp: &mut Loop) {
        let output = {
            let c = state.borrow();
            if c.cb.is_none() || c.ended {
                return;
            }
            c.output
        };
        // (The read may reach the end, and finish the capture.)
        lp.stream_read_now(output.0);
        {
            let mut c = state.borrow_mut();
            if c.cb.is_none() || c.ended {
                return;
            }
            c.ended = true;
            c.cut = true;
        }
        let _ = output.close(lp);
        PipelineCapture::maybe_done(state, lp);
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
    /// of file: a background process that the last stage started and that keeps the output
    /// open delays `cb` until it exits. The last stage's
    /// [`wait_delay`](Command::wait_delay) bounds that wait, counted once every stage has
    /// exited, and [`Process::cut_output`] on any stage's handle stops it in the loop's next
    /// timers phase; `cb` still comes only once every stage has exited, with what was read
    /// and [`cut`](PipelineOutput::cut) set. ([`pause_output`](Process::pause_output) does
    /// not apply here.) Neither helps with what an earlier stage leaves behind: it holds
    /// the next stage's input open, so that stage does not exit (a `wait_delay` set there
    /// is refused, as it would bound nothing). Run such a job in a group of its own
    /// ([`process_group`](Pipeline::process_group)) and end what is left with
    /// [`terminate_group`](Process::terminate_group), or give the stages a
    /// [`timeout`](Command::timeout).
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
            if cmd.wait_delay.is_some() && i + 1 < self.stages.len() {
                return Err(invalid(format!(
                    "pipeline stage {} (`{}`): wait_delay bounds the wait for the pipeline's output, \
                     the last stage's stdout, so it belongs on the last stage (what this stage leaves \
                     behind holds the next one's input: end it with a timeout or terminate_group)",
                    i + 1,
                    cmd.name()
                )));
            }
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
            output: ours,
            stdout: Vec::new(),
            limit: last.output_limit,
            dropped: Default::default(),
            statuses: None,
            ended: false,
            error: None,
            cb: Some(Box::new(cb)),
            processes: Vec::new(),
            programs: self.stages.iter().map(Command::name).collect(),
            wait_delay: last.wait_delay,
            delay_timer: None,
            cut_asked: false,
            cut: false,
        }));
        let st = capture.clone();
        let on_exit: PipelineCb = Box::new(move |lp, statuses| {
            st.borrow_mut().statuses = Some(statuses);
            PipelineCapture::start_delay(&st, lp);
            PipelineCapture::maybe_done(&st, lp);
        });
        let st = capture.clone();
        let on_cancel: CloseHook = Box::new(move |lp| {
            let (cb, processes, timer) = {
                let mut c = st.borrow_mut();
                (c.cb.take(), std::mem::take(&mut c.processes), c.delay_timer.take())
            };
            if cb.is_none() {
                return;
            }
            drop(cb);
            if let Some(t) = timer {
                let _ = t.close(lp);
            }
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
            // `cut_output` on any stage's handle cuts the pipeline's output.
            let st = capture.clone();
            lp.children.extras.entry(p.0.key).or_default().on_cut =
                Some(Box::new(move |lp| PipelineCapture::cut_soon(&st, lp)));
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
            lp.mark_internal(timer.id());
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
