//! The loop's table of children, how their exits are noticed and reaped, and the
//! children of dropped loops.

use super::*;

/// How the loop learns that a child exited.
pub(super) enum Watch {
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

pub(super) struct ChildEntry {
    pub(super) pid: Pid,
    pub(super) watch: Watch,
    /// The handle that gets the exit; `None` once it was closed (a background child).
    pub(super) owner: Option<HandleId>,
    /// A child that keeps `run(Default)` going until it is reaped, whatever its handle's
    /// `set_ref`: a background child (its handle closed while referenced), or a captured
    /// one (`Command::output`).
    pub(super) keeps_alive: bool,
    /// It was sent SIGKILL when its handle closed.
    pub(super) killed: bool,
    /// Its handle (`kill_group_on_drop`) closed while a `terminate_group` escalation ran on
    /// its group: its own SIGKILL waits for that to end (`GroupEscalation::spared`).
    pub(super) spared: bool,
    /// The last change a stop watch reported was a stop: only then is a continue reported
    /// (xnu may note a `SIGCONT` to a child that was running as a continue). Kept here, not
    /// with the watch, so that it outlives an unwatch and a new watch.
    stopped: bool,
    /// Its controlling terminal is a pty whose master the loop opened for it
    /// (`spawn_on_pty`): the loop's drop, which closes that master, hangs it up.
    pub(super) on_our_pty: bool,
    /// Its reap asks for its resource usage (`Command::record_usage`).
    record_usage: bool,
}

pub(super) type StopCb = Box<dyn FnMut(&mut Loop, Process, StopEvent)>;

/// A child's `Process::watch_stops`, kept apart from its `ChildEntry` so that the entries,
/// and the reaping path that every child takes, stay as small as before.
pub(super) struct StopWatch {
    pub(super) key: usize,
    pub(super) pid: Pid,
    /// Out while it runs.
    pub(super) cb: Option<StopCb>,
    /// Each watch gets a new one, so a callback that ran is put back only into its own.
    pub(super) epoch: u32,
}

/// Every child the loop spawned and has not reaped yet, with or without a handle.
#[derive(Default)]
pub(crate) struct Children {
    pub(super) entries: Slab<ChildEntry>,
    /// Background children that keep the loop alive.
    pub(super) keep_alive: usize,
    /// The internal SIGCHLD watcher: started by the first child that relies on it, kept
    /// until the loop drops (as libuv does), so spawning does not reinstall it every time.
    pub(super) sigchld: Option<Signal>,
    scratch: Vec<(usize, Pid)>,
    /// The children whose stops are watched (usually none).
    pub(super) stops: Vec<StopWatch>,
    pub(super) stop_epoch: u32,
    /// What a few process handles have besides their state, by slot key. Usually empty;
    /// kept out of `ProcessState`, which every slot pays for.
    pub(super) extras: crate::handle::KeyMap<ProcessExtras>,
    /// The groups whose `kill_group_on_drop` a close left to `terminate_group`'s escalation,
    /// with its flag: each leaves when its escalation ends, and a loop dropped before then
    /// kills those left itself, since the escalation goes with it.
    pub(super) grace_groups: Vec<(GroupTarget, Rc<GroupEscalation>)>,
    /// The running [`Process::terminate_group`] escalations, by the group they end: found
    /// through any handle on the group, open or not, so long as the escalation runs
    /// (usually empty).
    pub(super) escalations: Vec<(Pid, Rc<GroupEscalation>)>,
    /// The callback of [`Loop::reap_adopted`], while it is on.
    pub(super) adopted: Option<AdoptedCb>,
    /// Bumped when `adopted` is set or cleared: a callback that replaced itself stays out.
    adopted_epoch: u32,
    /// Children registered so far: an `adopted_sweep` knows its pid map is out of date
    /// when a callback spawned meanwhile.
    registered: u64,
    /// Set while a failed spawn closes the handle of the child it started, which no
    /// `terminate_group` grace period may spare.
    pub(super) abandoning: bool,
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
    pub(super) live: Cell<bool>,
    /// The callbacks of the `terminate_group_then` calls on the group, told its end together.
    pub(super) waiting: RefCell<Vec<GroupDoneCb>>,
    /// Set once the grace period is over (its SIGKILL went): a close then kills at once, as
    /// if no escalation ran, instead of leaving anything to it.
    pub(super) past_grace: Cell<bool>,
    /// The running children (entry key, pid) whose `kill_group_on_drop` close it spared: each
    /// gets its own SIGKILL when the grace period is over or the escalation ends, wherever
    /// its group is by then (a child that left the group is not reached by the group's).
    pub(super) spared: RefCell<Vec<(usize, Pid)>>,
}

/// See `Children::extras`.
#[derive(Default)]
pub(super) struct ProcessExtras {
    /// What closing the handle ends besides its child's watch: a capture's pipes
    /// (`Command::output`).
    pub(super) close_hook: Option<CloseHook>,
    /// A capture's output pipes, for [`Process::pause_output`]: those that ended are closed
    /// or closing.
    pub(super) output: Vec<(OutputStream, AnyStream)>,
    /// What else pausing and resuming a capture's output does: its `wait_delay`.
    pub(super) on_flow: Option<FlowHook>,
    /// A capture's cut ([`Process::cut_output`]).
    pub(super) on_cut: Option<FlowHook>,
    /// The escalation timer of [`Process::terminate`]: closed as soon as the child is reaped
    /// or its handle closes, so that a storm of terminations with a long grace leaves no
    /// timers waiting for nothing.
    pub(super) escalation: Option<crate::Timer>,
    /// What the child used, where its command asked (`Command::record_usage`).
    pub(super) usage: Usage,
    /// The deadline of `Command::timeout` or `Process::terminate_after`, while it runs.
    pub(super) timeout: Option<Deadline>,
    /// A deadline ended the child (`Process::timed_out`): the time it had been given.
    pub(super) timed_out: Option<Duration>,
}

/// A child's resource usage, for `Process::resource_usage`.
#[derive(Default)]
pub(super) enum Usage {
    /// Its command did not ask for it.
    #[default]
    NotAsked,
    /// Asked for: known at the reap (unless that fails).
    Awaited,
    Known(ResourceUsage),
}

/// A child's deadline: its timer, closed at the reap and the close, and what the timeout
/// gave it.
pub(super) struct Deadline {
    pub(super) timer: crate::Timer,
    pub(super) after: Duration,
    pub(super) grace: Duration,
}

impl ProcessExtras {
    pub(super) fn is_empty(&self) -> bool {
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
    pub(super) key: usize,
    pub(super) pid: Pid,
    /// The kernel said the child is gone: wait for it (briefly) instead of polling.
    pub(super) blocking: bool,
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
pub(super) static ORPHANS_LEFT: AtomicUsize = AtomicUsize::new(0);

pub(super) fn add_orphan(pid: Pid) {
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

impl Loop {
    // ----- reaping ------------------------------------------------------------------------

    /// Whether this loop's next child will be reaped through SIGCHLD.
    pub(super) fn sigchld_expected(&self) -> bool {
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
    pub(super) fn sigchld_watch(&mut self) -> io::Result<()> {
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
        self.mark_internal(s.id());
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
    pub(super) fn child_watch(
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
    pub(super) fn child_gone(&self, key: usize) -> bool {
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
    pub(super) fn child_record_usage(&mut self, id: HandleId) -> HandleId {
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
    pub(super) fn child_unwatch_stops(&mut self, key: usize) {
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
    pub(super) fn process_on_close(&mut self, id: HandleId, hook: CloseHook) {
        debug_assert!(self.live_slot_mut(id).is_some());
        self.children.extras.entry(id.key).or_default().close_hook = Some(hook);
    }

    /// [`Process::pause_output`] (`pause`) and [`Process::resume_output`].
    /// Pauses or resumes the capture's output: every stream it captures, or the one of `which`.
    pub(super) fn process_output_flow(
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
    pub(super) fn process_cut_output(&mut self, id: HandleId) -> io::Result<()> {
        if self.handle_flags(id, HandleKind::Process)?.contains(Flags::CLOSING) {
            return Err(crate::event_loop::closing_error(HandleKind::Process));
        }
        let not_captured = || {
            invalid(
                "the process's output is not captured (Command::output, stream_output or Pipeline::output)",
            )
        };
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
    pub(super) fn child_keeps_loop_alive(&mut self, id: HandleId) {
        let Some(Kind::Process(st)) = self.live_slot_mut(id).map(|s| &mut s.kind) else { return };
        let Some(key) = st.child_key() else { return };
        if let Some(entry) = self.children.entries.get_mut(key) {
            if !entry.keeps_alive {
                entry.keeps_alive = true;
                self.children.keep_alive += 1;
            }
        }
    }
}
