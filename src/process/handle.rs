//! What a spawn returns: the `Child` and its `Process` handle, and the loop's side of the
//! handle's operations (signals, process groups, stops, close).

use super::*;

/// What a start on a new pty made ([`Command::on_new_pty`]): its child's handle.
pub(super) trait StartedChild {
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

pub(super) type ExitCb = Box<dyn FnOnce(&mut Loop, Process, io::Result<ExitStatus>)>;

/// A process handle's state, kept small enough to sit in its slot without a box of its own.
pub(crate) struct ProcessState {
    pub(super) on_exit: Option<ExitCb>,
    pub(super) pid: Pid,
    /// The child's entry in the loop's table while it runs; `NO_CHILD` afterwards.
    pub(super) child_key: u32,
    /// The process group `kill_group` signals; 0 when the child shares the loop's.
    pub(super) group: Pid,
    /// After exit, the pidfd of a child that led its group stays here: it can still signal
    /// that group. Other children's close at the reap.
    #[cfg(target_os = "linux")]
    pub(super) pidfd: Option<OwnedFd>,
    /// How the child ended (see `pack_status`), once `reaped` and `status_known`.
    pub(super) status: i32,
    pub(super) reaped: bool,
    pub(super) status_known: bool,
    pub(super) leads_group: bool,
    pub(super) on_drop: OnDrop,
}

pub(super) type CloseHook = Box<dyn FnOnce(&mut Loop)>;
/// What pausing (`true`) or resuming a capture's output does besides the pipes.
pub(super) type FlowHook = Box<dyn FnMut(&mut Loop)>;

/// What to add to the error for a `Stdio::Handle` that is closing or gone: most likely an
/// earlier spawn moved it into its child.
pub(super) fn moved_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotConnected | io::ErrorKind::NotFound => {
            " (closed by the program, or given to an earlier spawn: a Stdio::Handle moves its handle into the child)"
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
pub(super) struct GroupTarget {
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
pub(super) enum OnDrop {
    Nothing,
    KillChild,
    KillGroup,
}

const _: () = assert!(size_of::<ProcessState>() <= 40, "a bigger ProcessState grows every slot");

pub(super) const NO_CHILD: u32 = u32::MAX;

pub(super) fn pack_status(st: ExitStatus) -> i32 {
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

    pub(super) fn child_key(&self) -> Option<usize> {
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
        lp.mark_internal(escalation.id());
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
        lp.mark_internal(timer.id());
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
    /// captured, and for a closed handle (a finished capture's). On a stage of a
    /// [`Pipeline::output`], it cuts the pipeline's output, as the last stage's
    /// `wait_delay` does ([`PipelineOutput::cut`]).
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
pub(super) type GroupDoneCb = Box<dyn FnOnce(&mut Loop, io::Result<GroupEnd>)>;

impl Loop {
    // ----- handle operations --------------------------------------------------------------

    pub(super) fn process_ref(&self, id: HandleId) -> io::Result<&ProcessState> {
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
        self.process_signal(id.key as usize, signal, group).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => context(e, format!("signal {signal}: no such signal")),
            _ => e,
        })?;
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
    pub(super) fn process_cancel_timers(&mut self, id: HandleId) {
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
    pub(super) fn children_on_our_pty(&mut self, p: Process) {
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
