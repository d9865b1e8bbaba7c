//! Idle, prepare and check handles: callbacks at fixed points of every iteration.
//!
//! - [`Idle`] handles run before prepare, and while any is active the poll phase does not
//!   wait: the loop spins, calling them once per iteration.
//! - [`Prepare`] handles run right before the poll phase.
//! - [`Check`] handles run right after it.
//!
//! Handles of one phase run in the order they were started. A handle started during its own
//! phase first runs in the next iteration.

use std::io;

use crate::event_loop::Loop;
use crate::handle::{Flags, HandleId, HandleKind, Kind, typed_handle};

type HookCb = Box<dyn FnMut(&mut Loop, HandleId)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Prepare,
    Check,
}

impl Phase {
    pub(crate) fn kind(self) -> HandleKind {
        match self {
            Phase::Idle => HandleKind::Idle,
            Phase::Prepare => HandleKind::Prepare,
            Phase::Check => HandleKind::Check,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

pub(crate) struct HookState {
    pub(crate) phase: Phase,
    cb: Option<HookCb>,
    started: bool,
    /// `Hooks::runs` when it was last started: a phase run with that number (the one in
    /// progress then) skips it, so it first runs in the next one.
    started_at: u64,
}

impl HookState {
    pub(crate) fn stop_for_close(&mut self) {
        self.started = false;
        self.cb = None;
    }
}

/// The started handles of each phase, in start order.
#[derive(Default)]
pub(crate) struct Hooks {
    lists: [Vec<HandleId>; 3],
    /// A reusable copy of one list, so callbacks can start and stop handles while it runs.
    scratch: Vec<HandleId>,
    /// How many phase runs have begun.
    runs: u64,
}

impl Hooks {
    pub(crate) fn has_idle(&self) -> bool {
        self.has(Phase::Idle)
    }

    #[inline]
    pub(crate) fn has(&self, phase: Phase) -> bool {
        !self.lists[phase.index()].is_empty()
    }

    pub(crate) fn remove(&mut self, phase: Phase, id: HandleId) {
        self.lists[phase.index()].retain(|&h| h != id);
    }
}

impl Loop {
    fn hook_new(&mut self, phase: Phase) -> HandleId {
        self.insert(Kind::Hook(HookState { phase, cb: None, started: false, started_at: 0 }))
    }

    fn hook_start(&mut self, id: HandleId, phase: Phase, cb: HookCb) -> io::Result<()> {
        let runs = self.hooks.runs;
        let Kind::Hook(h) = &mut self.open_slot_mut(id, phase.kind())?.kind else {
            unreachable!("checked kind")
        };
        if h.started {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is already started", phase.kind().name()),
            ));
        }
        h.started = true;
        h.started_at = runs;
        h.cb = Some(cb);
        self.hooks.lists[phase.index()].push(id);
        self.set_active(id, true);
        Ok(())
    }

    fn hook_stop(&mut self, id: HandleId, phase: Phase) -> io::Result<()> {
        let Kind::Hook(h) = &mut self.slot_mut(id, phase.kind())?.kind else { unreachable!("checked kind") };
        if h.started {
            h.started = false;
            self.hooks.remove(phase, id);
            self.set_active(id, false);
        }
        Ok(())
    }

    /// Runs the callbacks of every handle started in `phase`.
    pub(crate) fn run_hooks(&mut self, phase: Phase) {
        if self.hooks.lists[phase.index()].is_empty() {
            return;
        }
        self.hooks.runs += 1;
        let this_run = self.hooks.runs;
        let mut batch = std::mem::take(&mut self.hooks.scratch);
        batch.clear();
        batch.extend_from_slice(&self.hooks.lists[phase.index()]);
        for &id in &batch {
            let Some(slot) = self.live_slot_mut(id) else { continue };
            let Kind::Hook(h) = &mut slot.kind else { continue };
            // Stopped or closed by an earlier callback of this run, or stopped and started
            // again by one (it waits for the next run, as a newly started handle does).
            if !h.started || h.started_at == this_run {
                continue;
            }
            let Some(mut cb) = h.cb.take() else { continue };
            cb(self, id);
            // Back in its slot, unless the callback closed the handle or started it anew.
            if let Some(slot) = self.live_slot_mut(id).filter(|s| !s.flags.contains(Flags::CLOSING)) {
                if let Kind::Hook(h) = &mut slot.kind {
                    if h.cb.is_none() {
                        h.cb = Some(cb);
                    }
                }
            }
        }
        self.hooks.scratch = batch;
    }
}

macro_rules! hook_handle {
    ($(#[$doc:meta])* $name:ident, $phase:expr, $kind:expr) => {
        typed_handle!($(#[$doc])* $name, $kind);

        impl $name {
            /// Creates a stopped handle.
            pub fn new(lp: &mut Loop) -> $name {
                $name(lp.hook_new($phase))
            }

            /// Starts calling `cb` once per iteration. Starting a started handle is an error.
            pub fn start(self, lp: &mut Loop, mut cb: impl FnMut(&mut Loop, $name) + 'static) -> io::Result<()> {
                lp.hook_start(self.0, $phase, Box::new(move |lp, id| cb(lp, $name(id))))
            }

            /// Stops calling the callback. Stopping a stopped handle does nothing.
            pub fn stop(self, lp: &mut Loop) -> io::Result<()> {
                lp.hook_stop(self.0, $phase)
            }
        }
    };
}

hook_handle!(
    /// Runs a callback once per iteration, before prepare handles; while one is active the
    /// loop does not wait for I/O.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use evloop::{Idle, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let n = Rc::new(Cell::new(0));
    /// let idle = Idle::new(&mut lp);
    /// let count = n.clone();
    /// idle.start(&mut lp, move |lp, idle| {
    ///     count.set(count.get() + 1);
    ///     if count.get() == 10 {
    ///         idle.stop(lp).unwrap();
    ///     }
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(n.get(), 10);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Idle,
    Phase::Idle,
    HandleKind::Idle
);

hook_handle!(
    /// Runs a callback once per iteration, right before the loop polls for I/O.
    ///
    /// A prepare handle alone does not make the poll phase return: it keeps the loop alive,
    /// and the poll after it waits until something happens (I/O, a timer), as with a
    /// [`Check`] (and libuv's).
    ///
    /// ```
    /// use evloop::{Loop, Prepare, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let p = Prepare::new(&mut lp);
    /// p.start(&mut lp, |lp, p| p.close(lp).unwrap())?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Prepare,
    Phase::Prepare,
    HandleKind::Prepare
);

hook_handle!(
    /// Runs a callback once per iteration, right after the loop polled for I/O.
    ///
    /// A check handle alone does not make the poll phase return: something must happen (I/O,
    /// a timer) or the loop must not wait, as with `NoWait` here.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use evloop::{Check, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let ran = Rc::new(Cell::new(0));
    /// let c = Check::new(&mut lp);
    /// let r = ran.clone();
    /// c.start(&mut lp, move |_, _| r.set(r.get() + 1))?;
    /// lp.run(RunMode::NoWait)?;
    /// assert_eq!(ran.get(), 1);
    /// c.close(&mut lp)?;
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Check,
    Phase::Check,
    HandleKind::Check
);
