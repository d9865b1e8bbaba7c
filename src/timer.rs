//! Timers, ordered by (deadline, start order), in buckets per millisecond deadline.
//!
//! Deadlines have millisecond resolution, so timers share deadlines by the thousand when
//! there are many of them. Each distinct deadline has a bucket (a vector in a `BTreeMap`);
//! starting a timer appends to its bucket, which keeps every bucket in start order. Running
//! the due timers walks whole buckets in order: sequential memory instead of a heap pop per
//! timer.
//!
//! Stopping a timer does not search: the timer forgets its entry's sequence number, and the
//! entry is skipped when its bucket runs. Restarting appends a new entry. When stale entries
//! outnumber live ones by [`TIMER_STALE_ENTRIES_MAX`] (checked on every start and stop), the
//! buckets are compacted, so memory stays proportional to the number of armed timers, and
//! looking for the next live deadline ([`Loop::backend_timeout`]) skips few stale entries.
//!
//! A timer armed while the timers phase runs (a timer re-armed with timeout 0 inside its own
//! callback) gets a sequence number at or past the one the phase started with, so it waits for
//! the next iteration: I/O is never starved (libuv 1.44 re-runs such a timer in the same pass).

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use crate::event_loop::Loop;
use crate::handle::{Flags, HandleId, HandleKind, Kind, typed_handle};
use crate::limits::TIMER_STALE_ENTRIES_MAX;

type TimerCb = Box<dyn FnMut(&mut Loop, Timer)>;

pub(crate) struct TimerState {
    cb: Option<TimerCb>,
    repeat_ms: u64,
    /// The sequence number of this timer's live entry; 0 when not armed.
    armed_seq: u64,
    deadline: u64,
    started: bool,
    /// Repeats count from the previous deadline, not from the iteration it fired in.
    fixed_rate: bool,
    /// Ticks a fixed-rate timer skipped before its latest firing.
    skipped: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry {
    seq: u64,
    key: u32,
}

#[derive(Default)]
pub(crate) struct TimerQueue {
    /// Deadline (ms) to the entries due then, in start order.
    buckets: BTreeMap<u64, Vec<Entry>>,
    /// Entries in all buckets, live or stale.
    entries: usize,
    /// Armed timers; the other entries are stale.
    live: usize,
    /// The last sequence number handed out (start order).
    seq: u64,
    /// Emptied bucket vectors, kept to be reused.
    spare: Vec<Vec<Entry>>,
}

impl TimerQueue {
    /// Whether any entry (live or stale) is queued: the timers phase has work.
    #[inline]
    pub(crate) fn is_armed(&self) -> bool {
        !self.buckets.is_empty()
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.buckets.first_key_value().map(|(&d, _)| d)
    }

    fn push(&mut self, deadline: u64, e: Entry) {
        let spare = &mut self.spare;
        self.buckets.entry(deadline).or_insert_with(|| spare.pop().unwrap_or_default()).push(e);
        self.entries += 1;
    }

    fn recycle(&mut self, mut v: Vec<Entry>) {
        // Keep a few small vectors; let big ones go.
        if self.spare.len() < 64 && v.capacity() <= 4096 {
            v.clear();
            self.spare.push(v);
        }
    }
}

/// Milliseconds in `d`, rounded up, so a timer never fires early.
pub(crate) fn ceil_ms(d: Duration) -> u64 {
    let sub = u64::from(d.subsec_nanos()).div_ceil(1_000_000);
    d.as_secs().saturating_mul(1000).saturating_add(sub)
}

/// A fixed-rate timer's next deadline after the one at `deadline`, fired at `now`, and how
/// many ticks it skips: those due by `now`, which the loop was too late for (one firing per
/// iteration, never a burst). A tick due at `now` exactly is one of them: it would fire in
/// this iteration too.
fn next_tick(deadline: u64, repeat_ms: u64, now: u64) -> (u64, u64) {
    let next = deadline.saturating_add(repeat_ms);
    if next > now {
        return (next, 0);
    }
    let skipped = (now - next) / repeat_ms + 1;
    (next.saturating_add(skipped.saturating_mul(repeat_ms)), skipped)
}

/// What a timer's timeout counts from.
#[derive(Clone, Copy)]
enum Start {
    /// The loop's time, rounded up to the next millisecond: a started timer never fires
    /// before its timeout has passed (the cached time may be a fraction behind the clock).
    Now,
    /// The loop's time as cached: a repeating timer's next period, counted from the
    /// iteration it fired in, as libuv does (rounding up would stretch every period).
    Iteration,
}

typed_handle!(
    /// A timer: runs a callback once after a timeout, then every `repeat` if that is not zero.
    ///
    /// Times have millisecond resolution, and a timer never fires before its timeout has
    /// passed on the loop's clock since it was started: counted from the loop's time, which
    /// inside a callback is the iteration's (see [`Loop::now`]), rounded up to the next
    /// millisecond; the poll's wait counts whole milliseconds too, so that in an idle loop a
    /// timer fires about 1 ms after its timeout (a median of 1.12 ms late, 1.07 at least, in
    /// one measurement of a 20 ms timer, where a thread's `sleep` woke 0.12 ms late). By the
    /// wall clock, a timer started after 30 ms of work in a callback may fire up to 30 ms
    /// early: call [`Loop::update_time`] before starting it to count from the real now (a
    /// script runtime's `setTimeout`). A repeating
    /// timer's next period counts from the iteration it fired in, as in libuv; unlike libuv's,
    /// the loop's wait for it counts from the clock, so callbacks that take a while do not
    /// make it late (a 10 ms repeat with a 6 ms callback fires every 10 ms, not every 16).
    /// A callback that takes longer than the period makes the timer fire once per
    /// iteration, the periods missed meanwhile dropped rather than run in a burst. For a
    /// schedule that does not drift at all, see [`set_fixed_rate`](Self::set_fixed_rate).
    /// Timers due in the same iteration run in (deadline, start order).
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let ticks = Rc::new(Cell::new(0));
    /// let t = Timer::new(&mut lp);
    /// let n = ticks.clone();
    /// t.start(&mut lp, Duration::from_millis(1), Duration::from_millis(1), move |lp, t| {
    ///     n.set(n.get() + 1);
    ///     if n.get() == 3 {
    ///         t.stop(lp).unwrap();
    ///     }
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(ticks.get(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Timer,
    HandleKind::Timer
);

impl Timer {
    /// Creates a stopped timer.
    pub fn new(lp: &mut Loop) -> Timer {
        Timer(lp.insert(Kind::Timer(TimerState {
            cb: None,
            repeat_ms: 0,
            armed_seq: 0,
            deadline: 0,
            started: false,
            fixed_rate: false,
            skipped: 0,
        })))
    }

    /// Creates a stopped timer that has its callback already, and `repeat` as its repeat
    /// interval: armed later by [`restart`](Self::restart) (or [`again`](Self::again)), as
    /// often as needed, without a closure each time. For a timeout that activity arms and
    /// pushes back, and that is idle in between.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let fired = Rc::new(Cell::new(0));
    /// let f = fired.clone();
    /// let idle = Timer::with_callback(&mut lp, Duration::ZERO, move |_, _| f.set(f.get() + 1));
    /// assert_eq!(idle.due_in(&lp)?, None, "not armed");
    /// idle.restart(&mut lp, Duration::from_millis(1))?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(fired.get(), 1);
    /// idle.close(&mut lp)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_callback(
        lp: &mut Loop,
        repeat: Duration,
        cb: impl FnMut(&mut Loop, Timer) + 'static,
    ) -> Timer {
        Timer(lp.insert(Kind::Timer(TimerState {
            cb: Some(Box::new(cb)),
            repeat_ms: ceil_ms(repeat),
            armed_seq: 0,
            deadline: 0,
            started: true,
            fixed_rate: false,
            skipped: 0,
        })))
    }

    /// A one-shot timeout: `cb` runs once, `timeout` from the loop's current time, and the
    /// timer closes itself after it. The loop's time is cached ([`Loop::now`]): a
    /// callback that spent a while working before it starts a timer calls
    /// [`Loop::update_time`] first, or the timeout counts from before that work (as in
    /// libuv). Closing the returned timer before then cancels it (the
    /// callback is dropped without running). Cancel with [`cancel`](Self::cancel), which
    /// says whether that call closed the timer and is no error once the timer fired and
    /// closed itself (`close` then fails: the id is stale), not with [`stop`](Self::stop): a
    /// stopped one-shot timer stays open, inactive, until closed.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let fired = Rc::new(Cell::new(false));
    /// let f = fired.clone();
    /// Timer::once(&mut lp, Duration::from_millis(1), move |_lp| f.set(true))?;
    /// let cancelled = Timer::once(&mut lp, Duration::from_secs(60), |_lp| unreachable!())?;
    /// cancelled.close(&mut lp)?;
    /// lp.run(RunMode::Default)?;
    /// assert!(fired.get());
    /// assert!(lp.handles().is_empty(), "both closed themselves or were closed");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn once(lp: &mut Loop, timeout: Duration, cb: impl FnOnce(&mut Loop) + 'static) -> io::Result<Timer> {
        let t = Timer::new(lp);
        let mut cb = Some(cb);
        let started = t.start(lp, timeout, Duration::ZERO, move |lp, t| {
            // Closed first: the timer is done whatever the callback does.
            let _ = t.close(lp);
            if let Some(cb) = cb.take() {
                cb(lp);
            }
        });
        if let Err(e) = started {
            let _ = t.close(lp);
            return Err(e);
        }
        Ok(t)
    }

    /// [`once`](Self::once), for a timer of the loop's own ([`Loop::mark_internal`]).
    pub(crate) fn once_internal(
        lp: &mut Loop,
        timeout: Duration,
        cb: impl FnOnce(&mut Loop) + 'static,
    ) -> io::Result<Timer> {
        let t = Timer::once(lp, timeout, cb)?;
        lp.mark_internal(t.id());
        Ok(t)
    }

    /// Starts the timer: `cb` runs `timeout` from the loop's current time ([`Loop::now`]), then
    /// every `repeat` if `repeat` is not zero. That time is cached, and is the iteration's in
    /// every callback of a phase: a timer started late in a long phase (in the last of a
    /// channel's batch of messages, or after slow work) counts from before it unless
    /// [`Loop::update_time`] is called first.
    ///
    /// Starting a timer that is already active is an error. To move it (libuv code calls
    /// `uv_timer_start` again for that, a debounce), use [`restart`](Self::restart), which
    /// keeps its callback; or [`stop`](Self::stop) it first. ([`again`](Self::again) does
    /// nothing to a timer whose repeat is 0.)
    pub fn start(
        self,
        lp: &mut Loop,
        timeout: Duration,
        repeat: Duration,
        cb: impl FnMut(&mut Loop, Timer) + 'static,
    ) -> io::Result<()> {
        let state = lp.timer_state(self.0)?;
        if state.armed_seq != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "timer is already active: stop it first, or move it with Timer::restart (which keeps its callback)",
            ));
        }
        state.cb = Some(Box::new(cb));
        state.started = true;
        state.repeat_ms = ceil_ms(repeat);
        lp.timer_arm(self.0, ceil_ms(timeout), Start::Now);
        Ok(())
    }

    /// Stops the timer. Its callback is kept for [`again`](Self::again). Stopping a stopped
    /// timer does nothing.
    pub fn stop(self, lp: &mut Loop) -> io::Result<()> {
        lp.slot(self.0, HandleKind::Timer)?;
        lp.timer_disarm(self.0);
        Ok(())
    }

    /// Restarts a repeating timer with its repeat interval as the timeout (libuv's
    /// `uv_timer_again`). Does nothing if the repeat interval is zero. A timer that was never
    /// started has no callback: that is an error (one made by [`with_callback`](Self::with_callback) has).
    pub fn again(self, lp: &mut Loop) -> io::Result<()> {
        let state = lp.timer_state(self.0)?;
        if !state.started {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "timer was never started"));
        }
        let repeat = state.repeat_ms;
        if repeat > 0 {
            lp.timer_disarm(self.0);
            lp.timer_arm(self.0, repeat, Start::Now);
        }
        Ok(())
    }

    /// Arms the timer to fire `timeout` from the loop's current time, with the callback and
    /// repeat interval it has; an active timer is moved. For a deadline that activity
    /// pushes back (a debounce, an idle timeout) without a new closure each time: libuv's
    /// `uv_timer_start` given the same callback again. A timer that was never started has no
    /// callback: that is an error (one made by [`with_callback`](Self::with_callback) has).
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let idle = Rc::new(Cell::new(0));
    /// let n = idle.clone();
    /// let t = Timer::new(&mut lp);
    /// t.start(&mut lp, Duration::from_secs(60), Duration::ZERO, move |lp, t| {
    ///     n.set(n.get() + 1);
    ///     t.close(lp).unwrap();
    /// })?;
    /// // Activity came: the idle timeout now counts from here, and is shorter.
    /// t.restart(&mut lp, Duration::from_millis(1))?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(idle.get(), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn restart(self, lp: &mut Loop, timeout: Duration) -> io::Result<()> {
        if !lp.timer_state(self.0)?.started {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "timer was never started: Timer::start gives it its callback",
            ));
        }
        lp.timer_disarm(self.0);
        lp.timer_arm(self.0, ceil_ms(timeout), Start::Now);
        Ok(())
    }

    /// Closes the timer if it is still open: `Ok(true)` when this call closed it, `Ok(false)`
    /// when it was closed or closing already (a [`once`](Self::once) timer that fired, or one
    /// closed before), so that a `clearTimeout` needs no error handling. Its callback never
    /// runs again either way. An id of another loop is still an error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let fired = Timer::once(&mut lp, Duration::ZERO, |_lp| {})?;
    /// let pending = Timer::once(&mut lp, Duration::from_secs(60), |_lp| unreachable!())?;
    /// lp.run(RunMode::Once)?;
    /// assert!(!fired.cancel(&mut lp)?, "it fired, and closed itself");
    /// assert!(pending.cancel(&mut lp)?);
    /// assert!(!pending.cancel(&mut lp)?, "once is enough");
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn cancel(self, lp: &mut Loop) -> io::Result<bool> {
        match lp.handle_kind(self.0) {
            Ok(_) if lp.handle_flags(self.0, HandleKind::Timer)?.contains(Flags::CLOSING) => Ok(false),
            Ok(_) => lp.close_handle(self.0, HandleKind::Timer, None).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets the repeat interval. It takes effect when the timer is next re-armed: at
    /// [`again`](Self::again), or when it fires. A timer is re-armed before its callback runs
    /// (as in libuv): set in a repeating timer's callback, the new interval separates the
    /// next firing (still after the old one) from those after it, and set in a one-shot
    /// timer's callback, it needs `again` to re-arm the timer.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let t = Timer::new(&mut lp);
    /// let fired = Rc::new(Cell::new(0));
    /// let f = fired.clone();
    /// t.start(&mut lp, Duration::ZERO, Duration::ZERO, move |lp, t| {
    ///     f.set(f.get() + 1);
    ///     if f.get() == 1 {
    ///         // A one-shot so far: it becomes a repeating one, re-armed by `again`.
    ///         t.set_repeat(lp, Duration::from_millis(1)).unwrap();
    ///         t.again(lp).unwrap();
    ///     } else if f.get() == 3 {
    ///         t.stop(lp).unwrap();
    ///     }
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(fired.get(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_repeat(self, lp: &mut Loop, repeat: Duration) -> io::Result<()> {
        lp.timer_state(self.0)?.repeat_ms = ceil_ms(repeat);
        Ok(())
    }

    /// The repeat interval.
    pub fn repeat(self, lp: &Loop) -> io::Result<Duration> {
        match &lp.slot(self.0, HandleKind::Timer)?.kind {
            Kind::Timer(t) => Ok(Duration::from_millis(t.repeat_ms)),
            _ => unreachable!("slot() checked the kind"),
        }
    }

    /// Makes a repeating timer keep a fixed rate (`on`), or count each period from the
    /// iteration it fired in, as libuv does (the default). At a fixed rate a period counts
    /// from the previous deadline: a 10 ms repeat started at time `t` fires at `t + 10`,
    /// `t + 20`, `t + 30`... however late each firing ran, so it does not drift (libuv's and
    /// the default's fall behind by the loop's lateness at each firing, about 1.6% of a 10
    /// ms period in one measurement). Ticks the loop was too late for are skipped, not run in a burst:
    /// the timer fires once, and the next deadline is the first one of the schedule still
    /// ahead; [`skipped_ticks`](Self::skipped_ticks) tells its callback how many it missed
    /// (an animation moves on that many frames more). tokio's `Interval` with
    /// `MissedTickBehavior::Skip` behaves the same way.
    ///
    /// It takes effect when the timer is next re-armed as it fires. [`start`](Self::start),
    /// [`restart`](Self::restart) and [`again`](Self::again) begin a new schedule, from the
    /// loop's time as always.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let t = Timer::new(&mut lp);
    /// let skipped = Rc::new(Cell::new(None));
    /// let (n, s) = (Rc::new(Cell::new(0)), skipped.clone());
    /// t.set_fixed_rate(&mut lp, true)?;
    /// t.start(&mut lp, Duration::from_millis(10), Duration::from_millis(10), move |lp, t| {
    ///     n.set(n.get() + 1);
    ///     if n.get() == 1 {
    ///         // A stall longer than two periods: the tick due meanwhile is skipped.
    ///         std::thread::sleep(Duration::from_millis(25));
    ///     } else {
    ///         s.set(Some(t.skipped_ticks(lp).unwrap()));
    ///         t.close(lp).unwrap();
    ///     }
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert!(skipped.get().unwrap() >= 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_fixed_rate(self, lp: &mut Loop, on: bool) -> io::Result<()> {
        lp.timer_state(self.0)?.fixed_rate = on;
        Ok(())
    }

    /// How many ticks of its schedule a fixed-rate timer ([`set_fixed_rate`](Self::set_fixed_rate))
    /// skipped at its latest firing: the ticks after the one that fired that were due too
    /// by the time it ran, which its callback stands for as well. 0 when the loop was on
    /// time, and always 0 for any other timer. Read it in the callback; starting the timer
    /// again ([`start`](Self::start), [`restart`](Self::restart), [`again`](Self::again))
    /// resets it.
    pub fn skipped_ticks(self, lp: &Loop) -> io::Result<u64> {
        match &lp.slot(self.0, HandleKind::Timer)?.kind {
            Kind::Timer(t) => Ok(t.skipped),
            _ => unreachable!("slot() checked the kind"),
        }
    }

    /// How long until the timer fires, from the loop's current time rounded up to a whole
    /// millisecond, as timeouts count from it (a timer just started for 5 ms is due in 5
    /// ms); `None` when stopped. So it is the time left rounded down: a repeating timer,
    /// re-armed from the iteration's time as it fired, reports one millisecond less than its
    /// period in its callback when that time fell between two milliseconds.
    pub fn due_in(self, lp: &Loop) -> io::Result<Option<Duration>> {
        let now = lp.now_rounded_up();
        match &lp.slot(self.0, HandleKind::Timer)?.kind {
            Kind::Timer(t) if t.armed_seq != 0 => {
                Ok(Some(Duration::from_millis(t.deadline.saturating_sub(now))))
            }
            Kind::Timer(_) => Ok(None),
            _ => unreachable!("slot() checked the kind"),
        }
    }
}

impl Loop {
    fn timer_state(&mut self, id: HandleId) -> io::Result<&mut TimerState> {
        match &mut self.open_slot_mut(id, HandleKind::Timer)?.kind {
            Kind::Timer(t) => Ok(t),
            _ => unreachable!("open_slot_mut() checked the kind"),
        }
    }

    /// Arms the timer `id` (which must be disarmed) to fire `timeout_ms` from now.
    fn timer_arm(&mut self, id: HandleId, timeout_ms: u64, start: Start) {
        let from = match start {
            // Zero means the next iteration, whatever the fraction.
            Start::Now if timeout_ms > 0 => self.now_rounded_up(),
            _ => self.now(),
        };
        self.timer_arm_at(id, from.saturating_add(timeout_ms), 0);
    }

    /// Arms the timer `id` (which must be disarmed) to fire at `deadline`, in the loop's
    /// time, having skipped `skipped` ticks.
    fn timer_arm_at(&mut self, id: HandleId, deadline: u64, skipped: u64) {
        self.timers.seq += 1;
        let seq = self.timers.seq;
        let Kind::Timer(t) = &mut self.slots[id.key as usize].kind else { unreachable!("a timer id") };
        debug_assert_eq!(t.armed_seq, 0);
        t.armed_seq = seq;
        t.deadline = deadline;
        t.skipped = skipped;
        self.timers.push(deadline, Entry { seq, key: id.key });
        self.timers.live += 1;
        self.set_active(id, true);
        self.timer_maybe_compact();
    }

    /// Disarms the timer `id`; its queue entry turns stale.
    pub(crate) fn timer_disarm(&mut self, id: HandleId) {
        if let Some(slot) = self.live_slot_mut(id) {
            if let Kind::Timer(t) = &mut slot.kind {
                if t.armed_seq != 0 {
                    t.armed_seq = 0;
                    self.timers.live -= 1;
                    // Stops alone can leave a bucket of stale entries in front of a live
                    // one, which `backend_timeout` would walk on every call.
                    self.timer_maybe_compact();
                }
            }
        }
        self.set_active(id, false);
    }

    /// Compacts the buckets once stale entries outnumber live ones by
    /// [`TIMER_STALE_ENTRIES_MAX`]: O(1) per start or stop, amortized.
    #[inline]
    fn timer_maybe_compact(&mut self) {
        if self.timers.entries > 2 * self.timers.live + TIMER_STALE_ENTRIES_MAX {
            self.timer_compact();
        }
    }

    fn entry_is_live(&self, e: &Entry) -> bool {
        matches!(self.slots.get(e.key as usize), Some(s) if matches!(&s.kind, Kind::Timer(t) if t.armed_seq == e.seq))
    }

    fn timer_compact(&mut self) {
        let mut buckets = std::mem::take(&mut self.timers.buckets);
        buckets.retain(|_, v| {
            v.retain(|e| self.entry_is_live(e));
            !v.is_empty()
        });
        self.timers.entries = buckets.values().map(Vec::len).sum();
        // Equal, unless this runs in a callback of the timers phase: the bucket being fired
        // is out of the map then, and its timers still to fire count in `live` only.
        debug_assert!(self.timers.entries <= self.timers.live);
        self.timers.buckets = buckets;
    }

    /// The timers phase.
    pub(crate) fn run_timers(&mut self) {
        if self.timers.buckets.is_empty() {
            return;
        }
        let now = self.now();
        // Timers armed from here on (inside callbacks) wait for the next iteration. They are
        // due at `now` or later, so they can only sit at the tail of the last due bucket.
        let pass_end = self.timers.seq + 1;
        while let Some(entry) = self.timers.buckets.first_entry() {
            if *entry.key() > now {
                break;
            }
            let deadline = *entry.key();
            let bucket = entry.remove();
            self.timers.entries -= bucket.len();
            // Entries are in start order: the ones armed during this pass are a suffix.
            let split = bucket.partition_point(|e| e.seq < pass_end);
            for e in &bucket[..split] {
                if self.entry_is_live(e) {
                    self.fire_timer(e.key as usize);
                }
            }
            if split < bucket.len() {
                let later: Vec<Entry> = bucket[split..].to_vec();
                self.timers.entries += later.len();
                // Anything appended to this deadline meanwhile is newer still: it goes after.
                let slot = self.timers.buckets.entry(deadline).or_default();
                let newer = std::mem::replace(slot, later);
                slot.extend(newer);
                self.timers.recycle(bucket);
                break;
            }
            self.timers.recycle(bucket);
        }
    }

    /// The earliest deadline of a live timer, past the entries stopped timers left queued
    /// (which the poll phase drops first; an embedder's `backend_timeout` only looks).
    pub(crate) fn timer_next_live_deadline(&self) -> Option<u64> {
        self.timers.buckets.iter().find(|(_, v)| self.bucket_is_live(v)).map(|(&d, _)| d)
    }

    /// Whether a bucket holds an entry of a timer still armed for it. From the newest: a
    /// timer restarted again and again within one millisecond leaves its stale entries in
    /// front of its live one, the last (until a compaction), and the poll phase asks this
    /// in every iteration.
    fn bucket_is_live(&self, bucket: &[Entry]) -> bool {
        bucket.iter().rev().any(|e| self.entry_is_live(e))
    }

    /// Drops leading buckets that hold only stopped timers' entries, so that the poll
    /// timeout counts live timers only.
    pub(crate) fn timer_drop_stale_heads(&mut self) {
        while let Some((&d, v)) = self.timers.buckets.first_key_value() {
            if self.bucket_is_live(v) {
                break;
            }
            let bucket = self.timers.buckets.remove(&d).expect("first");
            self.timers.entries -= bucket.len();
            self.timers.recycle(bucket);
        }
    }

    fn fire_timer(&mut self, key: usize) {
        let id = self.id_of_key(key);
        let Kind::Timer(t) = &mut self.slots[key].kind else {
            unreachable!("entry_is_live checked the kind")
        };
        t.armed_seq = 0;
        let repeat = t.repeat_ms;
        let (fixed_rate, deadline) = (t.fixed_rate, t.deadline);
        let cb = t.cb.take();
        self.timers.live -= 1;
        if repeat > 0 {
            // Re-armed before the callback, as libuv does: the callback may stop it.
            self.set_active(id, false);
            if fixed_rate {
                let (next, skipped) = next_tick(deadline, repeat, self.now());
                self.timer_arm_at(id, next, skipped);
            } else {
                self.timer_arm(id, repeat, Start::Iteration);
            }
        } else {
            self.set_active(id, false);
        }
        let Some(mut cb) = cb else { return };
        cb(self, Timer(id));
        if let Some(slot) = self.live_slot_mut(id) {
            if let Kind::Timer(t) = &mut slot.kind {
                // Unless the callback installed a new one with start().
                if t.cb.is_none() {
                    t.cb = Some(cb);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::next_tick;

    #[test]
    fn next_tick_skips_what_is_due_and_saturates() {
        assert_eq!(next_tick(100, 10, 100), (110, 0), "on time");
        assert_eq!(next_tick(100, 10, 109), (110, 0), "late, within the period");
        assert_eq!(next_tick(100, 10, 110), (120, 1), "the next tick due now is skipped");
        assert_eq!(next_tick(100, 10, 135), (140, 3));
        assert_eq!(next_tick(100, u64::MAX, 200), (u64::MAX, 0), "a Duration::MAX repeat");
        assert_eq!(next_tick(u64::MAX - 5, 10, u64::MAX - 5), (u64::MAX, 0), "at the end of time");
    }

    use crate::limits::TIMER_STALE_ENTRIES_MAX;
    use crate::{Loop, Timer};

    /// Stops alone compact the buckets. Many timers with one deadline, all but the last
    /// stopped, left a bucket that `backend_timeout` walked whole on every call, until a
    /// start compacted it (3 ms a call with a million timers: embedder trial).
    #[test]
    fn issue_2_stops_alone_compact_the_timer_buckets() {
        let mut lp = Loop::new().unwrap();
        let n = 20_000;
        let timers: Vec<Timer> = (0..n)
            .map(|_| {
                let t = Timer::new(&mut lp);
                t.start(&mut lp, Duration::from_secs(30), Duration::ZERO, |_, _| {}).unwrap();
                t
            })
            .collect();
        for t in &timers[..n - 1] {
            t.stop(&mut lp).unwrap();
        }
        assert_eq!(lp.timers.live, 1);
        assert!(lp.timers.entries <= 2 + TIMER_STALE_ENTRIES_MAX, "{} entries", lp.timers.entries);
        assert!(lp.backend_timeout().unwrap() > Duration::from_secs(29));
    }
}
