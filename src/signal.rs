//! Signal handles: a callback on the loop thread when the process receives a signal.
//!
//! Any number of loops (up to [`SIGNAL_LOOPS_MAX`](crate::limits::SIGNAL_LOOPS_MAX) at
//! once) may watch the same signal; each one's callbacks run. Underneath, one process-wide
//! handler per signal number (in `evloop-platform`) marks the signal pending in each
//! watching loop's slot and writes a byte to that loop's signal pipe, which the loop
//! polls. When the last watcher of a signal in the process stops, the disposition that was
//! there before the first one started comes back: `SIG_IGN` stays ignored, a handler of
//! another library gets its signal back (libuv restores `SIG_DFL` instead).
//!
//! A signal sent while the signal was watched, and still pending when the last watcher
//! stops (blocked in some thread, or not yet taken by the thread the kernel woke for it), is
//! dropped when `SIG_DFL` comes back (or the terminal reset of
//! [`install_restore_hooks`](crate::tty::install_restore_hooks), which ends the same way),
//! rather than killing or stopping the process for a signal that was a watcher's. A signal
//! sent after the stop gets the default action, at once: a callback may stop or close its
//! handle, then [`raise`] the signal to end the process with it, or [`ignore`] it.
//!
//! A signal caught and not delivered yet when a handle stops is delivered if that handle
//! starts again before the loop looks. Between the stop and the start, though, the signal is
//! not watched: one sent then gets the default action, and one pending (blocked) is dropped.
//! To replace a callback with no such gap, start a new handle on the signal first, then
//! close the old one: the signal stays watched throughout (as
//! [`Tty::on_resize`](crate::Tty::on_resize) does).
//! A handle that starts on the signal after the catch, when no other handle of the loop
//! watched it, does not get it; one that starts while another handle of the loop watches the
//! signal gets the catches made since that loop last looked, as the other handle does.
//!
//! While a loop watches a signal, the loop has it: a handler another library installed
//! before is not called (only `SIGCHLD` is chained; see `evloop-platform`'s `signal`
//! module), so tokio's `ctrl_c`, say, goes quiet until the last watcher stops. A handler
//! installed after ours that calls the one it replaced, as tokio's does, keeps both working:
//! start evloop's watchers first.
//!
//! Each time the handler catches a signal, the callback runs once, as in libuv, up to
//! [`SIGNAL_CALLS_PER_ITERATION_MAX`] times per iteration: two quick Ctrl-Cs are two calls.
//! The kernel itself folds a standard signal sent while the same one is pending (waiting for
//! the handler), so a burst of `kill`s may make fewer calls; real-time signals queue.
//!
//! The loop does not touch the signal mask. A signal blocked in every thread of the process
//! stays pending and never reaches the handler, so its watchers never hear of it (as in
//! libuv); a program that blocks signals for a thread of its own (`sigwait`) must leave the
//! watched ones out. Starting a watcher logs a warning when its signal is blocked in the
//! calling thread. The same goes for `SIGCHLD` on the `SIGCHLD` reaping path (see
//! [`process`](crate::process#reaping-and-the-loops-ownership-of-its-children)): blocked
//! everywhere, no exit is ever heard of.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use evloop_platform::poller::Interest;
use evloop_platform::signal::{NotifySlot, check_watchable};
use evloop_platform::{fd, libc};

use crate::event_loop::{Loop, SIGNAL_TOKEN};
use crate::handle::{Flags, HandleId, HandleKind, Kind, typed_handle};
use crate::limits::SIGNAL_CALLS_PER_ITERATION_MAX;

type SignalCb = Box<dyn FnMut(&mut Loop, Signal, i32)>;

pub(crate) struct SignalState {
    /// The watched signal; 0 when stopped.
    signum: i32,
    oneshot: bool,
    /// The last start's callback: kept by a stop for `restart`, out while it runs.
    cb: Option<SignalCb>,
    /// A start gave the handle a callback (`cb` may be out running).
    has_cb: bool,
}

/// A loop's signal pipe, its slot in the process-wide table, and its started handles: there
/// while a handle watches a signal. (The slot is declared first, so it drops first: the
/// handler can no longer write to the pipe once its read end closes.)
pub(crate) struct LoopSignals {
    slot: NotifySlot,
    pub(crate) read_end: OwnedFd,
    watchers: Vec<(i32, HandleId)>,
    /// For each signal no handle of this loop watches any more, the handle that watched it
    /// last: a catch not delivered yet is still its own if it starts again, and no other
    /// handle's.
    last_watcher: Vec<(i32, HandleId)>,
    scratch: Vec<HandleId>,
}

typed_handle!(
    /// Runs a callback on the loop thread when the process receives a signal (libuv's
    /// `uv_signal_t`).
    ///
    /// A started watcher keeps [`run`](Loop::run) going, as any active handle does. A
    /// program that watches `SIGINT` for as long as it does other work, and should end when
    /// that work ends, unreferences it ([`set_ref(false)`](Signal::set_ref)).
    ///
    /// ```
    /// use evloop::{Loop, RunMode, Signal};
    ///
    /// let mut lp = Loop::new()?;
    /// let sig = Signal::new(&mut lp);
    /// sig.start(&mut lp, evloop::signal::SIGUSR1, |lp, sig, signum| {
    ///     assert_eq!(signum, evloop::signal::SIGUSR1);
    ///     sig.close(lp).unwrap();
    /// })?;
    /// evloop::signal::raise(evloop::signal::SIGUSR1)?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Platform notes
    ///
    /// `SIGKILL` and `SIGSTOP` cannot be caught, and the synchronous fault signals
    /// (`SIGSEGV`, `SIGBUS`, `SIGILL`, `SIGFPE`) cannot be handled by returning from a handler,
    /// so starting a watcher for any of them is an error. Signal numbers run up to
    /// [`SIGNAL_NUMBER_MAX`](crate::limits::SIGNAL_NUMBER_MAX): 64 on Linux, 31 on macOS and
    /// FreeBSD. Those the C library keeps for itself are refused: 32 and 33 on Linux (glibc's
    /// threads) and on FreeBSD (`SIGTHR`, `SIGLIBRT`). So are `SIGTTIN` and `SIGTTOU`, which
    /// a program keeps from stopping it with [`ignore`] instead.
    Signal,
    HandleKind::Signal
);

/// Common signal numbers, so callers need not depend on `libc` for them (`SIGTTIN` and
/// `SIGTTOU` are the stops a job gets for reading or writing a terminal from the background).
pub use evloop_platform::libc::{
    SIGALRM, SIGCHLD, SIGCONT, SIGHUP, SIGINT, SIGPIPE, SIGQUIT, SIGTERM, SIGTSTP, SIGTTIN, SIGTTOU, SIGUSR1,
    SIGUSR2, SIGWINCH,
};
/// `SIGKILL` and `SIGSTOP`, for [`Process::kill`](crate::Process::kill) and
/// [`StopEvent`](crate::StopEvent): they cannot be watched.
pub use evloop_platform::libc::{SIGKILL, SIGSTOP};

/// Ignores `signum` process-wide (`SIG_IGN`), as a job-control shell ignores `SIGTTIN`,
/// `SIGTTOU` and `SIGTSTP` so that touching the terminal from the background, or Ctrl-Z,
/// does not stop it. The children evloop spawns do not inherit it: each starts with every
/// signal at its default (other ways of starting a program keep ignored signals ignored;
/// [`Command::ignore_signal`](crate::Command::ignore_signal) and [`is_ignored`] pass one on).
///
/// Refused while a loop watches the signal, for `SIGCHLD` (ignored, the kernel reaps every
/// child itself), for `SIGKILL` and `SIGSTOP`, for the synchronous faults (`SIGSEGV`,
/// `SIGBUS`, `SIGILL`, `SIGFPE`: ignoring them is undefined), and for numbers out of range. `SIGTTIN` and `SIGTTOU` cannot be watched
/// instead: caught, they make terminal I/O from the background retry for good; ignored, a
/// read from the background fails with `EIO`, which a tty's read callback gets as an error
/// that says so.
///
/// ```
/// use evloop::signal::{self, SIGTTOU};
///
/// signal::ignore(SIGTTOU)?;
/// // Watching it is refused, with the reason.
/// let mut lp = evloop::Loop::new()?;
/// let e = evloop::Signal::new(&mut lp).start(&mut lp, SIGTTOU, |_, _, _| {}).unwrap_err();
/// assert!(e.to_string().contains("ignore it instead"));
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn ignore(signum: i32) -> io::Result<()> {
    evloop_platform::signal::ignore(signum)
}

/// Whether `signum` is ignored process-wide now (`SIG_IGN`). A program started by `nohup`
/// finds `SIGHUP` ignored, and one started in the background by a non-interactive shell
/// finds `SIGINT` and `SIGQUIT` ignored; the children evloop spawns start with every signal
/// at its default, so a program that passes such a signal on asks at its start (before a
/// [`Signal`] watches it) and gives each command
/// [`ignore_signal`](crate::Command::ignore_signal). A number that is no signal is an error.
/// `SIGPIPE` is always ignored in a Rust program (its runtime ignores it before `main`), and
/// is not one to pass on: children expect its default.
///
/// ```
/// use evloop::Command;
/// use evloop::signal::{self, SIGHUP};
///
/// let mut cmd = Command::new("sleep");
/// cmd.arg("1");
/// if signal::is_ignored(SIGHUP)? {
///     // Started under nohup: the job keeps SIGHUP ignored too.
///     cmd.ignore_signal(SIGHUP);
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn is_ignored(signum: i32) -> io::Result<bool> {
    if !(1..=crate::limits::SIGNAL_NUMBER_MAX).contains(&signum) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal number {signum} is out of range (1..={})", crate::limits::SIGNAL_NUMBER_MAX),
        ));
    }
    Ok(evloop_platform::signal::disposition(signum)? == evloop_platform::signal::Disposition::Ignore)
}

/// The name of signal `signum`, as `<signal.h>` spells it (`"SIGSEGV"`); `None` for a number
/// it does not name: a real-time signal, a system's own (FreeBSD's `SIGTHR`, say), or none
/// at all. For a child's end: [`ExitStatus::signal`](crate::ExitStatus::signal) gives the
/// number, and the status's `Display` says both.
///
/// ```
/// use evloop::signal;
///
/// assert_eq!(signal::name(signal::SIGTERM), Some("SIGTERM"));
/// assert_eq!(signal::name(libc::SIGSEGV), Some("SIGSEGV"));
/// assert_eq!(signal::name(0), None);
/// ```
pub fn name(signum: i32) -> Option<&'static str> {
    Some(match signum {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGSYS => "SIGSYS",
        libc::SIGURG => "SIGURG",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGIO => "SIGIO",
        #[cfg(target_os = "linux")]
        libc::SIGPWR => "SIGPWR",
        #[cfg(target_os = "linux")]
        libc::SIGSTKFLT => "SIGSTKFLT",
        #[cfg(not(target_os = "linux"))]
        libc::SIGINFO => "SIGINFO",
        #[cfg(not(target_os = "linux"))]
        libc::SIGEMT => "SIGEMT",
        _ => return None,
    })
}

/// Sends `signum` to the calling thread (`raise(3)`). Unless the thread blocks it, the signal
/// has been handled (and every watching loop notified) when this returns.
pub fn raise(signum: i32) -> io::Result<()> {
    evloop_platform::signal::raise(signum)
}

impl Signal {
    /// Creates a stopped signal handle.
    pub fn new(lp: &mut Loop) -> Signal {
        Signal(lp.insert(Kind::Signal(SignalState { signum: 0, oneshot: false, cb: None, has_cb: false })))
    }

    /// Starts watching `signum`; `cb` runs on the loop thread once per delivery (see the
    /// module docs for the bound per iteration). Starting a started handle is an error; so is an out-of-range or
    /// uncatchable signal number. A loop's first watcher makes its signal pipe, two fds: a
    /// program that may use up its fds (one per file it follows, say) starts its watchers
    /// first, or a later start fails with `EMFILE`.
    pub fn start(
        self,
        lp: &mut Loop,
        signum: i32,
        cb: impl FnMut(&mut Loop, Signal, i32) + 'static,
    ) -> io::Result<()> {
        lp.signal_start(self.0, signum, Some((false, Box::new(cb))))
    }

    /// Like [`start`](Self::start), but the handle stops itself before its first callback.
    pub fn start_oneshot(
        self,
        lp: &mut Loop,
        signum: i32,
        cb: impl FnMut(&mut Loop, Signal, i32) + 'static,
    ) -> io::Result<()> {
        lp.signal_start(self.0, signum, Some((true, Box::new(cb))))
    }

    /// Stops watching. Stopping a stopped handle does nothing. The handle keeps its
    /// callback, for [`restart`](Self::restart).
    pub fn stop(self, lp: &mut Loop) -> io::Result<()> {
        lp.slot(self.0, HandleKind::Signal)?;
        lp.signal_stop_now(self.0);
        Ok(())
    }

    /// Watches `signum` with the callback of the handle's last start, one-shot if that start
    /// was ([`start_oneshot`](Self::start_oneshot)): libuv's `uv_signal_start` again with the
    /// same callback. A stopped handle starts again; a started one moves to `signum` (and
    /// stays as it is if it watches that already). It can be called from that callback. An
    /// error for a handle never started (it has no callback), and for a signal number
    /// [`start`](Self::start) refuses (the handle then stays as it was).
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use evloop::{Loop, RunMode, Signal, signal};
    ///
    /// let mut lp = Loop::new()?;
    /// let calls = Rc::new(Cell::new(0));
    /// let c = calls.clone();
    /// let sig = Signal::new(&mut lp);
    /// sig.start(&mut lp, signal::SIGUSR1, move |lp, sig, signum| {
    ///     c.set(c.get() + 1);
    ///     sig.stop(lp).unwrap();
    ///     if signum == signal::SIGUSR1 {
    ///         // Now SIGUSR2, with this callback.
    ///         sig.restart(lp, signal::SIGUSR2).unwrap();
    ///         signal::raise(signal::SIGUSR2).unwrap();
    ///     }
    /// })?;
    /// signal::raise(signal::SIGUSR1)?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(calls.get(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn restart(self, lp: &mut Loop, signum: i32) -> io::Result<()> {
        lp.signal_start(self.0, signum, None)
    }

    /// The signal being watched, or `None` when stopped.
    pub fn signum(self, lp: &Loop) -> io::Result<Option<i32>> {
        match &lp.slot(self.0, HandleKind::Signal)?.kind {
            Kind::Signal(s) => Ok((s.signum != 0).then_some(s.signum)),
            _ => unreachable!("slot() checked the kind"),
        }
    }
}

impl Loop {
    fn signals_mut(&mut self) -> io::Result<&mut LoopSignals> {
        if self.signals.is_none() {
            let here = |e| crate::error::context(e, "creating the loop's signal pipe");
            let (read_end, write_end) = fd::pipe().map_err(here)?;
            // (NotifySlot::new makes the write end nonblocking.)
            fd::set_fresh_pipe_nonblocking(read_end.as_fd()).map_err(here)?;
            self.poller
                .update(read_end.as_fd(), SIGNAL_TOKEN, Interest::empty(), Interest::READABLE)
                .map_err(here)?;
            let slot = match NotifySlot::new(write_end) {
                Ok(slot) => slot,
                Err(e) => {
                    let _ = self.poller.deregister(read_end.as_fd(), Interest::READABLE);
                    // A full process-wide table of loops says so itself: no pipe failed.
                    if e.kind() == io::ErrorKind::QuotaExceeded {
                        return Err(e);
                    }
                    return Err(here(e));
                }
            };
            self.signals = Some(LoopSignals {
                read_end,
                slot,
                watchers: Vec::new(),
                last_watcher: Vec::new(),
                scratch: Vec::new(),
            });
        }
        Ok(self.signals.as_mut().expect("created above"))
    }

    /// Starts signal handle `id` watching `signum`, with a callback (`start` and
    /// `start_oneshot`), or with its last one (`restart`, `with` `None`).
    fn signal_start(&mut self, id: HandleId, signum: i32, with: Option<(bool, SignalCb)>) -> io::Result<()> {
        let Kind::Signal(s) = &mut self.open_slot_mut(id, HandleKind::Signal)?.kind else {
            unreachable!("checked")
        };
        check_watchable(signum)?;
        let current = s.signum;
        match with {
            Some(_) if current != 0 => {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "signal handle is already started"));
            }
            // The handle keeps it from now, a failed start included (a stopped handle).
            Some((oneshot, cb)) => (s.oneshot, s.cb, s.has_cb) = (oneshot, Some(cb), true),
            None if !s.has_cb => {
                return Err(crate::error::invalid(
                    "signal handle never started: restart reuses the callback of the last start",
                ));
            }
            // A started handle's restart moves it to `signum` (as libuv's start of a started
            // handle does): nothing to do for the one it watches.
            None if current == signum => return Ok(()),
            None => {}
        }
        if current != 0 {
            self.signal_stop_now(id);
        }
        let loop_id = self.id;
        let sigs = self.signals_mut()?;
        if !sigs.watchers.iter().any(|&(n, _)| n == signum) {
            // A catch this loop has not delivered yet, made for a handle that has stopped
            // since, stays that handle's: for this one, it happened before it started.
            let last = sigs.last_watcher.iter().position(|&(n, _)| n == signum);
            if last.map(|i| sigs.last_watcher.swap_remove(i).1) != Some(id) {
                sigs.slot.forget(signum);
            }
            if let Err(e) = sigs.slot.watch(signum) {
                // Made for this start: they go with it.
                if sigs.watchers.is_empty() {
                    self.signals_release();
                }
                return Err(e);
            }
            if evloop_platform::signal::blocked_in_this_thread(signum).unwrap_or(false) {
                log::warn!(
                    "loop {loop_id}: signal {signum} is blocked in the loop's thread: it reaches the \
                     loop only if another thread leaves it unblocked"
                );
            }
        }
        sigs.watchers.push((signum, id));
        let Kind::Signal(s) = &mut self.slots[id.key as usize].kind else { unreachable!("checked") };
        s.signum = signum;
        self.set_active(id, true);
        log::debug!("loop {}: watching signal {signum}", self.id);
        Ok(())
    }

    /// Stops the signal handle `id` now (also the first half of its close).
    pub(crate) fn signal_stop_now(&mut self, id: HandleId) {
        let Some(Kind::Signal(s)) = self.live_slot_mut(id).map(|s| &mut s.kind) else { return };
        let signum = std::mem::replace(&mut s.signum, 0);
        self.set_active(id, false);
        if signum == 0 {
            return;
        }
        let Some(sigs) = self.signals.as_mut() else { return };
        sigs.watchers.retain(|&(_, h)| h != id);
        if !sigs.watchers.iter().any(|&(n, _)| n == signum) {
            if let Err(e) = sigs.slot.unwatch(signum) {
                log::warn!("restoring the disposition of signal {signum} failed: {e}");
            }
            sigs.last_watcher.retain(|&(n, _)| n != signum);
            sigs.last_watcher.push((signum, id));
        }
        if sigs.watchers.is_empty() {
            // At the end of the iteration, not now: a watcher stopped and started again
            // meanwhile (a callback replaced, a resize callback set again) keeps the slot,
            // and with it a signal caught before the stop and not delivered yet.
            self.signals_idle = true;
        }
    }

    /// The end of an iteration after the last watcher stopped: releases the pipe and slot
    /// if no handle watches a signal still.
    #[cold]
    pub(crate) fn signals_release_if_idle(&mut self) {
        self.signals_idle = false;
        if self.signals.as_ref().is_some_and(|s| s.watchers.is_empty()) {
            self.signals_release();
        }
    }

    /// Gives back the signal pipe and the slot in the process-wide table (there are
    /// `NOTIFY_SLOTS_MAX`) once no handle watches a signal: a loop that watched one once
    /// holds neither for the rest of its life.
    pub(crate) fn signals_release(&mut self) {
        let Some(sigs) = self.signals.take() else { return };
        // Out of the poller before the pipe closes (see the poller contract).
        if let Err(e) = self.poller.deregister(sigs.read_end.as_fd(), Interest::READABLE) {
            log::debug!("loop {}: deregistering the signal pipe: {e}", self.id);
        }
        log::debug!("loop {}: no signal watched; signal pipe released", self.id);
    }

    /// Whether a signal that ends a process by default (one of `termios::RESET_SIGNALS`:
    /// `SIGTERM`, `SIGHUP`, `SIGINT`, ...) was caught for this loop's watchers and waits for
    /// their callbacks.
    pub(crate) fn fatal_signal_waiting(&self) -> Option<i32> {
        let pending = self.signals.as_ref()?.slot.pending();
        evloop_platform::termios::RESET_SIGNALS.into_iter().find(|&n| pending & (1 << (n - 1)) != 0)
    }

    /// Whether a handle of this loop watches one of the signals
    /// [`fatal_signal_waiting`](Self::fatal_signal_waiting) looks for.
    pub(crate) fn watches_fatal_signal(&self) -> bool {
        self.signals.as_ref().is_some_and(|s| {
            s.watchers.iter().any(|(n, _)| evloop_platform::termios::RESET_SIGNALS.contains(n))
        })
    }

    /// The poller reported the signal pipe: run the callbacks of every caught signal.
    // Out of line: keeps the common iteration (nothing of this kind to do) small.
    #[inline(never)]
    pub(crate) fn on_signal_pipe(&mut self) {
        let Some(sigs) = self.signals.as_mut() else { return };
        let mut buf = [0u8; 64];
        // Drain before taking the mask: a signal after this read leaves a byte for next time.
        // A short read means the pipe is empty.
        while matches!(fd::read(sigs.read_end.as_fd(), &mut buf), Ok(n) if n == buf.len()) {}
        let mut mask = sigs.slot.take_pending();
        // Lowest signal first, visiting only the bits that are set.
        while mask != 0 {
            let signum = mask.trailing_zeros() as i32 + 1;
            mask &= mask - 1;
            let Some(sigs) = self.signals.as_ref() else { return };
            let caught = sigs.slot.take_count(signum);
            if caught > 0 {
                self.deliver_signal(signum, caught.min(SIGNAL_CALLS_PER_ITERATION_MAX));
            }
        }
    }

    /// Runs the callbacks of `signum`'s watchers, `calls` times each (the loop's own
    /// watchers once), while they still watch it.
    fn deliver_signal(&mut self, signum: i32, calls: u32) {
        let Some(sigs) = self.signals.as_mut() else { return };
        let mut batch = std::mem::take(&mut sigs.scratch);
        batch.clear();
        batch.extend(sigs.watchers.iter().filter(|&&(n, _)| n == signum).map(|&(_, h)| h));
        for &id in &batch {
            for _ in 0..calls {
                let Some(slot) = self.live_slot_mut(id) else { break };
                let internal = slot.flags.contains(Flags::INTERNAL);
                let Kind::Signal(s) = &mut slot.kind else { break };
                if s.signum != signum {
                    break;
                }
                let oneshot = s.oneshot;
                let Some(mut cb) = s.cb.take() else { break };
                if oneshot {
                    self.signal_stop_now(id);
                }
                cb(self, Signal(id), signum);
                if let Some(Kind::Signal(s)) = self.live_slot_mut(id).map(|s| &mut s.kind) {
                    if s.cb.is_none() {
                        s.cb = Some(cb);
                    }
                }
                // (The SIGCHLD reaper looks at every child each time: once is enough.)
                if internal {
                    break;
                }
            }
        }
        if let Some(sigs) = self.signals.as_mut() {
            sigs.scratch = batch;
        }
    }
}
