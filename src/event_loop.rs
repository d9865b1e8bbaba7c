//! The loop: its state, its phases and the operations every handle shares.
//!
//! One iteration runs these phases, in libuv's order:
//!
//! 1. **timers**: due timers, in (deadline, start order); the loop's time is read first.
//! 2. **pending**: write and shutdown completions, and other deferred callbacks.
//! 3. **idle**, then **prepare** handles.
//! 4. **poll**: interest changes are flushed, then the loop waits for I/O (not at all when
//!    something is already runnable) and runs I/O callbacks; then the pending phase again,
//!    a bounded number of rounds (`PENDING_ROUNDS_AFTER_POLL_MAX`), so that the completions
//!    of this poll's writes run in this iteration, as in libuv 1.45.
//! 5. **check** handles.
//! 6. **close**: callbacks of handles closed since the last close phase.
//!
//! `RunMode::Once` runs its timers phase last, after the close phase, as libuv does since
//! 1.45.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use evloop_platform::fd;
use evloop_platform::poller::{Event, Events, Poller};
use evloop_platform::spawn::Via;
use slab::Slab;

use crate::async_handle::LoopWake;
use crate::handle::{CloseCb, Flags, HandleId, HandleInfo, HandleKind, Kind, Slot, stale_error};
use crate::limits::{
    EVENTS_PER_POLL_MAX, PENDING_ROUNDS_AFTER_POLL_MAX, QUEUE_ENTRIES_KEPT_MAX, SLOTS_KEPT_MAX,
};
use crate::loop_watcher::{Hooks, Phase};
use crate::signal::LoopSignals;
use crate::timer::TimerQueue;

/// How long [`Loop::run`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Until nothing keeps the loop alive (see [`Loop::is_alive`]), or [`Loop::stop`].
    Default,
    /// One iteration. The poll phase waits for I/O only if the iteration had nothing else
    /// to run: no pending callbacks (write completions, a child's state) when it began, no
    /// idle handle and no timer due (as libuv's `UV_RUN_ONCE`). So a callback that ran is
    /// progress enough, and `run(Once)` returns after it. As in libuv (1.45 and later), its
    /// timers phase comes after the poll, not before the pending phase: a timer due when
    /// `run(Once)` begins makes the poll not wait, and runs after it. So the close callback
    /// of a handle closed in that timers phase (a [`Timer::once`](crate::Timer::once)) waits
    /// for the next `run`, and this one returns `true`.
    Once,
    /// One iteration whose poll phase does not wait. This is how an outer loop drives a nested
    /// one: poll [`Loop::backend_fd`] with [`Loop::backend_timeout`], then `run(NoWait)`.
    /// Unlike the other modes (and libuv's), it makes its pass even when nothing referenced
    /// keeps the loop alive: an outer loop that was told the fd is readable, or that an
    /// unreferenced timer is due, gets that served. A [`Loop::stop`] made before it still
    /// wins: that `run` returns at once, without the pass.
    NoWait,
}

/// [`RunMode`]s as const parameters of `Loop::run_inner`.
const MODE_DEFAULT: u8 = 0;
const MODE_ONCE: u8 = 1;
const MODE_NOWAIT: u8 = 2;

/// Options for a new loop; see [`Loop::builder`].
#[derive(Clone, Debug, Default)]
pub struct LoopBuilder {
    pub(crate) force_select_helper: bool,
    pub(crate) force_sigchld_reaping: bool,
    pub(crate) spawn_via: Via,
    pub(crate) measure_idle_time: bool,
}

impl LoopBuilder {
    /// Routes every pipe, tty and [`FdWatch`](crate::FdWatch) through the select helper
    /// thread, as macOS does for the fds kqueue rejects. This exists so that the helper's
    /// code path runs on every platform (the test suite runs once with it on, through an
    /// environment variable of its own; the library reads none).
    pub fn force_select_helper(mut self, on: bool) -> LoopBuilder {
        self.force_select_helper = on;
        self
    }

    /// Reaps children through `SIGCHLD` and `waitpid(pid, WNOHANG)` instead of pidfds, as on
    /// Linux kernels older than 5.3. For tests of that path; Linux only has an effect.
    pub fn force_sigchld_reaping(mut self, on: bool) -> LoopBuilder {
        self.force_sigchld_reaping = on;
        self
    }

    /// Spawns children with fork/exec even where a faster way could express the request.
    /// For tests of that path.
    pub fn force_fork_spawn(mut self, on: bool) -> LoopBuilder {
        if on {
            self.spawn_via = Via::Fork;
        } else if self.spawn_via == Via::Fork {
            self.spawn_via = Via::Best;
        }
        self
    }

    /// Spawns children with `posix_spawn` wherever it can express the request, as on macOS
    /// (FreeBSD always forks), instead of Linux's own vfork path (see
    /// [how a child starts](crate::process#how-a-child-starts)). For tests of that path;
    /// elsewhere it changes nothing.
    pub fn force_posix_spawn(mut self, on: bool) -> LoopBuilder {
        if on {
            self.spawn_via = Via::PosixSpawn;
        } else if self.spawn_via == Via::PosixSpawn {
            self.spawn_via = Via::Best;
        }
        self
    }

    /// Measures how long the loop waits for events in its poll phase, for
    /// [`Loop::idle_time`] (libuv's `uv_loop_configure(loop, UV_METRICS_IDLE_TIME)`). It costs
    /// two reads of the monotonic clock per poll that may wait; off, nothing.
    ///
    /// ```
    /// let lp = evloop::Loop::builder().measure_idle_time(true).build()?;
    /// assert_eq!(lp.idle_time(), Some(std::time::Duration::ZERO));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn measure_idle_time(mut self, on: bool) -> LoopBuilder {
        self.measure_idle_time = on;
        self
    }

    /// Creates the loop.
    pub fn build(self) -> io::Result<Loop> {
        Loop::with_options(self)
    }
}

/// A deferred callback, run in the pending phase.
pub(crate) enum Pending {
    /// A write or shutdown of the stream in slot `.0` finished (or failed): its callback
    /// and result.
    Write(u32, crate::stream::WriteCb, io::Result<()>),
    /// A child whose exit may have been missed by its notification: look at it.
    Child(crate::process::ChildCheck),
    /// A child whose stops are newly watched: it may have stopped already.
    Stops(crate::process::ChildCheck),
    /// Children the loop did not spawn may have exited (`Loop::reap_adopted`).
    Adopted,
}

/// Tokens the loop itself registers in the poller. Handle tokens have a non-zero generation
/// in their high half, so they never collide with these.
pub(crate) const WAKE_TOKEN: u64 = u64::MAX;
pub(crate) const SIGNAL_TOKEN: u64 = u64::MAX - 1;

static NEXT_LOOP_ID: AtomicU32 = AtomicU32::new(1);

/// What `run`, and a spawn, on a poisoned loop say.
pub(crate) const POISONED: &str =
    "a callback panicked during an earlier Loop::run: the loop is poisoned, drop it";

/// A single-threaded event loop.
///
/// Handles are created on a loop and named by small `Copy` ids. Callbacks receive
/// `&mut Loop`, so they can start, stop, write, spawn and close freely, including their own
/// handle. A loop is not `Send`: it and its callbacks stay on the thread that made it. Other
/// threads reach it through a [`Waker`](crate::Waker) or a [`Channel`](crate::Channel).
///
/// ```compile_fail,E0277
/// // A loop cannot move to another thread.
/// fn send<T: Send>(_: T) {}
/// send(evloop::Loop::new().unwrap());
/// ```
///
/// A callback must not put another loop in the place of the one it was given
/// (`mem::swap` or `mem::replace` on its `&mut Loop`). That is memory-safe, and the loop
/// guards against the worst of it (ids are checked against the loop they belong to, and an
/// event batch ends at the swap), but what the interrupted run does afterwards is
/// unspecified, and the loop that was swapped out cannot run again.
///
/// # Dropping the loop
///
/// Dropping a loop releases everything it owns, without running any callback: handles stop
/// and their fds close, queued writes are discarded and their callbacks dropped uncalled
/// (as are pending completions and close callbacks), the select helper thread is joined,
/// and children are reaped, killed (`kill_on_drop`) or handed to the orphan list (see
/// [`Process`](crate::Process)). Terminals its tty handles changed get their settings
/// back, after the restore sequence
/// ([`tty::set_restore_sequence`](crate::tty::set_restore_sequence)) where it is meant for
/// one of them and the process's group is in front: a program that drops a loop and goes
/// on using its screen clears the sequence first. To hear every callback, close the handles and run the loop until
/// [`run`](Self::run) returns `false` before dropping it.
///
/// ```
/// use std::time::Duration;
/// use evloop::{Loop, RunMode, Timer};
///
/// let mut lp = Loop::new()?;
/// let t = Timer::new(&mut lp);
/// t.start(&mut lp, Duration::from_millis(1), Duration::ZERO, |lp, t| {
///     println!("fired at {} ms", lp.now());
///     t.close(lp).unwrap();
/// })?;
/// lp.run(RunMode::Default)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Loop {
    /// Not `Send` nor `Sync` on purpose, whatever the other fields are: a loop, its
    /// callbacks and its signal and child state belong to the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
    pub(crate) id: u32,
    pub(crate) slots: Slab<Slot>,
    /// The generation each slab key had last; bumped on every insert. It outlives the slot:
    /// when `shrink_storage` drops vacant slots, a stale id of one is still refused.
    gens: Vec<u32>,
    /// Slots released since `shrink_storage` last ran.
    slots_released: usize,
    /// When the close phase runs `shrink_storage` again: once fewer handles than this are
    /// open, or once `slots_released` reaches the second.
    shrink_when: (usize, usize),
    /// Handles that keep `run(Default)` going: active and referenced, or active and writing
    /// (`Flags::keeps_alive`).
    active_refs: usize,
    pub(crate) poller: Poller,
    pub(crate) events: Events,
    epoch: Instant,
    now_ms: Cell<u64>,
    /// The clock was past `now_ms` by a fraction of a millisecond when it was read.
    now_fraction: Cell<bool>,
    pub(crate) time_stale: Cell<bool>,
    pub(crate) timers: TimerQueue,
    pub(crate) pending: VecDeque<Pending>,
    closing: VecDeque<(HandleId, Option<CloseCb>)>,
    pub(crate) hooks: Hooks,
    pub(crate) wake: Arc<LoopWake>,
    pub(crate) signals: Option<LoopSignals>,
    /// The last signal watcher stopped in this iteration: release the pipe and slot at its
    /// end, unless one started again.
    pub(crate) signals_idle: bool,
    pub(crate) select_helper: Option<crate::select_helper::SelectHelper>,
    /// The one read buffer every stream reads into, sized to the largest read cap in use.
    pub(crate) read_buf: Box<[u8]>,
    /// Bumped whenever any stream starts or stops reading, changes its read cap, or begins
    /// closing. A round of reads that finds it unchanged after a callback knows its stream is
    /// untouched, and skips the full re-check of the slot (see `stream_read`).
    pub(crate) read_changes: u64,
    /// Streams whose interest changed since the last flush.
    pub(crate) io_dirty: Vec<HandleId>,
    /// Streams in always-ready mode that want something.
    pub(crate) always_ready: Vec<HandleId>,
    pub(crate) always_ready_scratch: Vec<HandleId>,
    stop_flag: bool,
    running: bool,
    /// `with_data` calls under way: their values are out of the loop, so `run` refuses.
    lending: u32,
    /// A callback panicked out of `run`: see [`Loop::run`].
    poisoned: bool,
    /// Being dropped: a terminal restored now is restored for good (see `TtyRelease::release`).
    pub(crate) dropping: bool,
    iterations: u64,
    /// Time spent waiting in the poll phase, when `options.measure_idle_time` is on.
    pub(crate) idle: Duration,
    /// The poll phase takes `poll_special`: the loop has started a select helper (which may
    /// hold the watches), or measures its idle time. Never cleared.
    pub(crate) poll_special: bool,
    pub(crate) options: LoopBuilder,
    /// Every child this loop spawned and has not reaped yet.
    pub(crate) children: crate::process::Children,
    /// The values stored with [`set_data`](Loop::set_data), one per type. Dropped after the
    /// handles, with the loop.
    data: Vec<(TypeId, Box<dyn Any>)>,
}

impl fmt::Debug for Loop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loop")
            .field("id", &self.id)
            .field("slots", &self.slots.len())
            .field("active_refs", &self.active_refs)
            .field("pending", &self.pending.len())
            .field("closing", &self.closing.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Loop {
    /// Creates a loop with default options.
    pub fn new() -> io::Result<Loop> {
        Loop::with_options(LoopBuilder::default())
    }

    /// Options for a new loop.
    ///
    /// ```
    /// let lp = evloop::Loop::builder().force_select_helper(true).build()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn builder() -> LoopBuilder {
        LoopBuilder::default()
    }

    fn with_options(options: LoopBuilder) -> io::Result<Loop> {
        let mut poller = Poller::new().map_err(|e| crate::error::context(e, "creating the loop's poller"))?;
        let wake = LoopWake::new(&mut poller, WAKE_TOKEN)
            .map_err(|e| crate::error::context(e, "creating the loop's wakeup fd"))?;
        let wake = Arc::new(wake);
        // Never reused: an id of a dropped loop must not pass for a new loop's.
        let id = NEXT_LOOP_ID
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| io::Error::other("this process has created 2^32 loops: loop ids are used up"))?;
        log::debug!("loop {id}: created");
        Ok(Loop {
            _not_send: std::marker::PhantomData,
            id,
            slots: Slab::new(),
            gens: Vec::new(),
            slots_released: 0,
            shrink_when: (0, SLOTS_KEPT_MAX / 2),
            active_refs: 0,
            poller,
            events: Events::with_capacity(EVENTS_PER_POLL_MAX),
            epoch: Instant::now(),
            now_ms: Cell::new(0),
            now_fraction: Cell::new(false),
            time_stale: Cell::new(true),
            timers: TimerQueue::default(),
            pending: VecDeque::new(),
            closing: VecDeque::new(),
            hooks: Hooks::default(),
            wake,
            signals: None,
            signals_idle: false,
            select_helper: None,
            read_buf: Box::default(),
            // Each loop counts in a range of its own (see `stream::reading_stream`).
            read_changes: u64::from(id) << 32,
            io_dirty: Vec::new(),
            always_ready: Vec::new(),
            always_ready_scratch: Vec::new(),
            stop_flag: false,
            children: Default::default(),
            running: false,
            lending: 0,
            poisoned: false,
            dropping: false,
            iterations: 0,
            idle: Duration::ZERO,
            poll_special: options.measure_idle_time,
            options,
            data: Vec::new(),
        })
    }

    // ----- user data ----------------------------------------------------------------------

    /// Stores `value` in the loop, one value per type, where every callback reaches it
    /// through the `&mut Loop` it receives (libuv's `data` field, calloop's shared data),
    /// in place of an `Rc<RefCell<_>>` that each callback captures. Returns the value of
    /// that type stored before, if any. What is still stored is dropped with the loop,
    /// after its handles.
    ///
    /// A reference from [`data_mut`](Loop::data_mut) borrows the loop: take what a
    /// callback needs, then let go of it before using the loop again, or use the value and
    /// the loop together through [`with_data`](Loop::with_data).
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// struct App { ticks: u32 }
    ///
    /// let mut lp = Loop::new()?;
    /// lp.set_data(App { ticks: 0 });
    /// let timer = Timer::new(&mut lp);
    /// timer.start(&mut lp, Duration::ZERO, Duration::from_millis(1), |lp, t| {
    ///     let app = lp.data_mut::<App>().unwrap();
    ///     app.ticks += 1;
    ///     if app.ticks == 3 {
    ///         t.close(lp).unwrap();
    ///     }
    /// })?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(lp.data::<App>().unwrap().ticks, 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_data<T: 'static>(&mut self, value: T) -> Option<T> {
        let old = self.take_data::<T>();
        self.data.push((TypeId::of::<T>(), Box::new(value)));
        old
    }

    /// The value of type `T` stored with [`set_data`](Loop::set_data), if any.
    ///
    /// ```
    /// let mut lp = evloop::Loop::new()?;
    /// assert_eq!(lp.data::<String>(), None);
    /// lp.set_data(String::from("config"));
    /// assert_eq!(lp.data::<String>().map(String::as_str), Some("config"));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn data<T: 'static>(&self) -> Option<&T> {
        let (_, value) = self.data.iter().find(|(t, _)| *t == TypeId::of::<T>())?;
        value.downcast_ref()
    }

    /// The value of type `T` stored with [`set_data`](Loop::set_data), if any, to change.
    ///
    /// ```
    /// let mut lp = evloop::Loop::new()?;
    /// lp.set_data(Vec::<u32>::new());
    /// lp.data_mut::<Vec<u32>>().unwrap().push(7);
    /// assert_eq!(lp.data::<Vec<u32>>().unwrap(), &[7]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn data_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let (_, value) = self.data.iter_mut().find(|(t, _)| *t == TypeId::of::<T>())?;
        value.downcast_mut()
    }

    /// Calls `f` with the loop and the value of type `T` stored with
    /// [`set_data`](Loop::set_data), both to use at once, and returns what it returns;
    /// `None`, without calling `f`, where no such value is stored. A program's state kept in
    /// the loop then needs no `Rc<RefCell<_>>`: a callback reaches it with the loop it
    /// drives handles with (a reference from [`data_mut`](Loop::data_mut) borrows the loop
    /// whole).
    ///
    /// The value is out of the loop while `f` runs: [`data`](Loop::data) and a nested
    /// `with_data` of that type find nothing then. Callbacks run only inside
    /// [`run`](Loop::run), which refuses to start inside `f` (a `ResourceBusy` error), as
    /// its callbacks would not find the value; no other call of `f`'s comes back to it. A
    /// value of that type stored by `f` replaces it; if `f` panics, the value is dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// struct App { ticks: u32, timer: Option<Timer> }
    ///
    /// let mut lp = Loop::new()?;
    /// lp.set_data(App { ticks: 0, timer: None });
    /// let timer = Timer::new(&mut lp);
    /// timer.start(&mut lp, Duration::ZERO, Duration::from_millis(1), |lp, _| {
    ///     lp.with_data(|lp, app: &mut App| {
    ///         app.ticks += 1;
    ///         if app.ticks == 3 {
    ///             // The loop and the state together: no borrow to let go of first.
    ///             app.timer.take().unwrap().close(lp).unwrap();
    ///         }
    ///     });
    /// })?;
    /// lp.data_mut::<App>().unwrap().timer = Some(timer);
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(lp.data::<App>().unwrap().ticks, 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_data<T: 'static, R>(&mut self, f: impl FnOnce(&mut Loop, &mut T) -> R) -> Option<R> {
        let at = self.data.iter().position(|(t, _)| *t == TypeId::of::<T>())?;
        let (type_id, mut value) = self.data.swap_remove(at);
        let value_mut = value.downcast_mut::<T>()?;
        self.lending += 1;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self, value_mut)));
        self.lending -= 1;
        let result = result.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        if self.data.iter().all(|(t, _)| *t != type_id) {
            self.data.push((type_id, value));
        }
        Some(result)
    }

    /// Takes the value of type `T` stored with [`set_data`](Loop::set_data) out of the
    /// loop, if any.
    ///
    /// ```
    /// let mut lp = evloop::Loop::new()?;
    /// lp.set_data(5u8);
    /// assert_eq!(lp.take_data::<u8>(), Some(5));
    /// assert_eq!(lp.take_data::<u8>(), None);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn take_data<T: 'static>(&mut self) -> Option<T> {
        let at = self.data.iter().position(|(t, _)| *t == TypeId::of::<T>())?;
        let (_, value) = self.data.swap_remove(at);
        value.downcast().ok().map(|b| *b)
    }

    // ----- time ---------------------------------------------------------------------------

    /// The loop's time in milliseconds, from an arbitrary start (the loop's creation).
    ///
    /// Inside [`run`](Self::run) the value is cached: it is read from the monotonic clock
    /// when first needed in each iteration, again after the poll (whose wait may have been
    /// long: the callbacks after it see a fresh reading), when the poll's timeout is counted
    /// to the next timer, and by [`update_time`](Self::update_time). So inside a callback the
    /// time may be a while old, as in libuv: every callback of a phase sees the reading made
    /// before the first one ran (a channel's batch of messages, a long timers phase), and
    /// callbacks that run late in one, or run long, should call `update_time` before they
    /// start timers. Outside `run` (after the loop was created, or
    /// after a run returned) every use reads the clock, so each timer started there counts
    /// from the moment it starts.
    pub fn now(&self) -> u64 {
        if self.time_stale.get() || !self.running {
            self.refresh_time();
        }
        self.now_ms.get()
    }

    /// Reads the clock into the cached time now.
    pub fn update_time(&mut self) {
        self.refresh_time();
    }

    fn refresh_time(&self) {
        let t = self.epoch.elapsed();
        self.now_ms.set(t.as_secs() * 1000 + u64::from(t.subsec_millis()));
        self.now_fraction.set(!t.subsec_nanos().is_multiple_of(1_000_000));
        self.time_stale.set(false);
    }

    /// [`now`](Self::now) rounded up to the next whole millisecond: what a timeout starts
    /// from, so that it never ends early.
    pub(crate) fn now_rounded_up(&self) -> u64 {
        let now = self.now();
        now + u64::from(self.now_fraction.get())
    }

    // ----- slots and ids ------------------------------------------------------------------

    /// The id the next [`insert`](Self::insert) will return, for states that need their own
    /// id (tokens) before they exist.
    pub(crate) fn next_id(&self) -> HandleId {
        let key = self.slots.vacant_key();
        let gen_ = self.gens.get(key).copied().unwrap_or(0) + 1;
        HandleId { loop_id: self.id, key: key as u32, gen_ }
    }

    /// A new handle of `kind`, referenced and inactive.
    // Inline: where `kind` is built, its tag is known without the match over every kind
    // (some 10 instructions a handle).
    #[inline]
    pub(crate) fn insert(&mut self, kind: Kind) -> HandleId {
        let tag = kind.handle_kind();
        self.insert_tagged(kind, tag)
    }

    fn insert_tagged(&mut self, kind: Kind, tag: HandleKind) -> HandleId {
        let key = self.slots.vacant_key();
        if key >= self.gens.len() {
            self.gens.resize(key + 1, 0);
        }
        // Never wraps: a key whose generation reached u32::MAX is retired when that handle
        // closes (`run_closing`).
        let gen_ = self.gens[key] + 1;
        self.gens[key] = gen_;
        let inserted = self.slots.insert(Slot { gen_, flags: Flags::REF, tag, kind });
        debug_assert_eq!(inserted, key);
        HandleId { loop_id: self.id, key: key as u32, gen_ }
    }

    /// The slot of a live handle of `kind`, or a clear error.
    #[inline]
    pub(crate) fn slot(&self, id: HandleId, kind: HandleKind) -> io::Result<&Slot> {
        match self.slots.get(id.key as usize) {
            Some(s) if id.loop_id == self.id && s.gen_ == id.gen_ && s.tag == kind => Ok(s),
            _ => Err(id_error(self.id, id, kind)),
        }
    }

    #[inline]
    pub(crate) fn slot_mut(&mut self, id: HandleId, kind: HandleKind) -> io::Result<&mut Slot> {
        let loop_id = self.id;
        match self.slots.get_mut(id.key as usize) {
            Some(s) if id.loop_id == loop_id && s.gen_ == id.gen_ && s.tag == kind => Ok(s),
            _ => Err(id_error(loop_id, id, kind)),
        }
    }

    /// Like [`slot_mut`](Self::slot_mut), and refuses handles that are closing.
    #[inline]
    pub(crate) fn open_slot_mut(&mut self, id: HandleId, kind: HandleKind) -> io::Result<&mut Slot> {
        let s = self.slot_mut(id, kind)?;
        if s.flags.contains(Flags::CLOSING) {
            return Err(closing_error(kind));
        }
        Ok(s)
    }

    /// The slot of `id`, taken from this loop's own tables just now (not held across a
    /// callback, which may have swapped the loop): key and generation only.
    #[inline]
    pub(crate) fn own_slot_mut(&mut self, id: HandleId) -> Option<&mut Slot> {
        debug_assert_eq!(id.loop_id, self.id);
        self.slots.get_mut(id.key as usize).filter(|s| s.gen_ == id.gen_)
    }

    /// The slot for an event's or a callback's id, if it is still the same handle.
    #[inline]
    /// Marks handle `id` as the loop's own (a timer or signal it made for itself):
    /// [`Loop::handles`] does not list it, so nothing outside closes it.
    pub(crate) fn mark_internal(&mut self, id: HandleId) {
        if let Some(slot) = self.live_slot_mut(id) {
            slot.flags.insert(Flags::INTERNAL);
        }
    }

    pub(crate) fn live_slot_mut(&mut self, id: HandleId) -> Option<&mut Slot> {
        // The loop too: a callback may have swapped this loop with another (`mem::swap` on its
        // `&mut Loop`), whose slots would otherwise answer for ids of this one.
        if id.loop_id != self.id {
            return None;
        }
        self.slots.get_mut(id.key as usize).filter(|s| s.gen_ == id.gen_)
    }

    pub(crate) fn id_of_key(&self, key: usize) -> HandleId {
        HandleId { loop_id: self.id, key: key as u32, gen_: self.slots[key].gen_ }
    }

    pub(crate) fn handle_flags(&self, id: HandleId, kind: HandleKind) -> io::Result<Flags> {
        Ok(self.slot(id, kind)?.flags)
    }

    /// Marks a handle active or inactive, keeping the count of handles that keep the loop
    /// alive.
    pub(crate) fn set_active(&mut self, id: HandleId, active: bool) {
        self.set_flags(id, Flags::ACTIVE, if active { Flags::ACTIVE } else { Flags::empty() });
    }

    /// `f` on handle `id`'s state, then, where it gave `Some`,
    /// [`set_active(id, active)`](Self::set_active): with one lookup of the slot.
    #[inline]
    pub(crate) fn update_then_set_active<R>(
        &mut self,
        id: HandleId,
        active: bool,
        f: impl FnOnce(&mut Kind) -> Option<R>,
    ) -> Option<R> {
        let s = self.slots.get_mut(id.key as usize).filter(|s| s.gen_ == id.gen_)?;
        let r = f(&mut s.kind)?;
        let before = s.flags;
        s.flags.set(Flags::ACTIVE, active);
        match (before.keeps_alive(), s.flags.keeps_alive()) {
            (false, true) => self.active_refs += 1,
            (true, false) => self.active_refs -= 1,
            _ => {}
        }
        Some(r)
    }

    /// Sets the flags in `mask` on handle `id` to those in `values`, keeping `active_refs`
    /// (the handles whose flags say they keep the loop alive) in step.
    #[inline]
    pub(crate) fn set_flags(&mut self, id: HandleId, mask: Flags, values: Flags) {
        let Some(s) = self.slots.get_mut(id.key as usize).filter(|s| s.gen_ == id.gen_) else {
            return;
        };
        let before = s.flags;
        s.flags = (s.flags - mask) | (values & mask);
        match (before.keeps_alive(), s.flags.keeps_alive()) {
            (false, true) => self.active_refs += 1,
            (true, false) => self.active_refs -= 1,
            _ => {}
        }
    }

    pub(crate) fn set_handle_ref(
        &mut self,
        id: HandleId,
        kind: HandleKind,
        referenced: bool,
    ) -> io::Result<()> {
        // A closing handle's ref has done its part: the close decided what its child keeps
        // alive. Changed now, `has_ref` would say what the loop no longer does.
        if !self.slot_mut(id, kind)?.flags.contains(Flags::CLOSING) {
            self.set_flags(id, Flags::REF, if referenced { Flags::REF } else { Flags::empty() });
        }
        Ok(())
    }

    /// Every live handle, including those whose close callback has not run yet: for
    /// debugging ("what keeps my loop alive?"), and for a program winding down, which
    /// closes whatever is left (libuv's `uv_walk` with `uv_close`), so that `run` returns:
    /// signal watchers, channels whose senders live on, streams, timers.
    ///
    /// ```
    /// use evloop::{HandleKind, Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let t = Timer::new(&mut lp);
    /// let list = lp.handles();
    /// assert_eq!(list.len(), 1);
    /// assert_eq!(list[0].kind, HandleKind::Timer);
    /// assert!(!list[0].active);
    /// // Winding down: close everything not closing already. A close may close others with
    /// // it (the stages of a captured pipeline): those are closing by their turn.
    /// for h in lp.handles().into_iter().filter(|h| !h.closing) {
    ///     match lp.close(h.id) {
    ///         Err(e) if e.kind() != std::io::ErrorKind::NotConnected => return Err(e),
    ///         _ => {}
    ///     }
    /// }
    /// assert!(!lp.run(RunMode::Default)?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handles(&self) -> Vec<HandleInfo> {
        self.slots
            .iter()
            .filter(|(_, s)| !s.flags.contains(Flags::INTERNAL))
            .map(|(key, s)| HandleInfo {
                id: HandleId { loop_id: self.id, key: key as u32, gen_: s.gen_ },
                kind: s.tag,
                active: s.flags.contains(Flags::ACTIVE),
                has_ref: s.flags.contains(Flags::REF),
                closing: s.flags.contains(Flags::CLOSING),
            })
            .collect()
    }

    /// The kind of handle `id` names, or an error if it is stale or foreign.
    pub fn handle_kind(&self, id: HandleId) -> io::Result<HandleKind> {
        if id.loop_id != self.id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("id {id:?} belongs to another loop"),
            ));
        }
        match self.slots.get(id.key as usize) {
            Some(s) if s.gen_ == id.gen_ => Ok(s.tag),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, format!("stale handle id {id:?}"))),
        }
    }

    /// Closes any handle by its untyped id; see the typed `close` methods.
    pub fn close(&mut self, id: impl Into<HandleId>) -> io::Result<()> {
        let id = id.into();
        let kind = self.handle_kind(id)?;
        self.close_handle(id, kind, None)
    }

    /// References or unreferences any handle by its untyped id, as the typed `set_ref`
    /// methods do: libuv's `uv_unref` from a `uv_walk`, for a program on its way out that
    /// lets what is left (a child it does not wait for) stop keeping `run` going.
    ///
    /// ```
    /// use evloop::{Loop, RunMode, Timer};
    /// use std::time::Duration;
    ///
    /// let mut lp = Loop::new()?;
    /// let t = Timer::new(&mut lp);
    /// t.start(&mut lp, Duration::from_secs(3600), Duration::ZERO, |_, _| {})?;
    /// for h in lp.handles() {
    ///     lp.set_ref(h.id, false)?;
    /// }
    /// assert!(!lp.run(RunMode::Default)?, "nothing referenced is left");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_ref(&mut self, id: impl Into<HandleId>, referenced: bool) -> io::Result<()> {
        let id = id.into();
        let kind = self.handle_kind(id)?;
        self.set_handle_ref(id, kind, referenced)
    }

    /// Closes any handle by its untyped id, and runs `cb` from the close phase once it is
    /// released, as the typed `close_with` methods do: libuv's `uv_close(handle, close_cb)`
    /// from a `uv_walk`.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc};
    /// use evloop::{Idle, Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let _t = Timer::new(&mut lp);
    /// let _i = Idle::new(&mut lp);
    /// let closed = Rc::new(Cell::new(0));
    /// // Winding down: close every handle, and count them out.
    /// for h in lp.handles().into_iter().filter(|h| !h.closing) {
    ///     let c = closed.clone();
    ///     lp.close_with(h.id, move |_| c.set(c.get() + 1))?;
    /// }
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(closed.get(), 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close_with(
        &mut self,
        id: impl Into<HandleId>,
        cb: impl FnOnce(&mut Loop) + 'static,
    ) -> io::Result<()> {
        let id = id.into();
        let kind = self.handle_kind(id)?;
        self.close_handle(id, kind, Some(Box::new(cb)))
    }

    /// Stops a handle now and queues its release for the close phase.
    pub(crate) fn close_handle(
        &mut self,
        id: HandleId,
        kind: HandleKind,
        cb: Option<CloseCb>,
    ) -> io::Result<()> {
        let s = self.slot_mut(id, kind)?;
        if s.flags.contains(Flags::CLOSING) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("the {} is already closing", kind.name()),
            ));
        }
        s.flags.insert(Flags::CLOSING);
        // An inactive process handle whose child was reaped, with nothing of its own left
        // (its exit callback ran, no pidfd kept, no extras, no escalation that could spare a
        // group): its stop would do nothing, nor would making it inactive. The usual close
        // of a spawn's handle, from its exit callback.
        let done = match &s.kind {
            Kind::Process(st) => st.closes_as_is() && !s.flags.contains(Flags::ACTIVE),
            _ => false,
        };
        if !(done && self.children.escalations_is_empty() && self.children.extras_is_empty()) {
            self.stop_for_close(id);
            self.set_active(id, false);
        }
        self.closing.push_back((id, cb));
        log::trace!("loop {}: closing {} {id:?}", self.id, kind.name());
        Ok(())
    }

    /// Kind-specific "stop now" part of close.
    // Inline: in `close_handle`, as a call it costs a spawn-and-close some 30 instructions.
    #[inline(always)]
    fn stop_for_close(&mut self, id: HandleId) {
        let key = id.key as usize;
        match &mut self.slots[key].kind {
            Kind::Timer(_) => self.timer_disarm(id),
            Kind::Hook(h) => {
                // Not started any more: a phase running now skips it too.
                h.stop_for_close();
                let phase = h.phase;
                self.hooks.remove(phase, id);
            }
            Kind::Async(a) => a.shared.closed.store(true, Ordering::SeqCst),
            Kind::Channel(c) => c.stop_for_close(),
            Kind::Signal(_) => self.signal_stop_now(id),
            Kind::Stream(_) => self.stream_stop_for_close(id),
            Kind::Process(_) => self.process_stop_for_close(id),
            Kind::FdWatch(_) => self.watch_stop_for_close(id),
            Kind::Retired => {}
        }
    }

    // ----- running ------------------------------------------------------------------------

    /// Runs the loop in `mode`. Returns whether the loop is still alive (see
    /// [`is_alive`](Self::is_alive)).
    ///
    /// Calling `run` from inside a callback of the same loop is an error.
    ///
    /// # Panics in callbacks
    ///
    /// A panic in a callback unwinds out of `run`, and **poisons** the loop, as a panic
    /// poisons a `std::sync::Mutex`: the phase that was running stopped halfway (a batch of
    /// events, timers or close callbacks partly done), so later calls to `run` return an
    /// error instead of running on a state nobody can reason about. The one thing to do
    /// with a poisoned loop is to drop it, which releases everything it owns, as always:
    /// every fd, the select helper thread, and its children (reaped, killed with
    /// `kill_on_drop`, or handed to the orphan list). A program that wants to survive a
    /// panicking callback catches the panic inside the callback; [`is_poisoned`](Self::is_poisoned)
    /// says whether one got out. A `run` made while the thread already unwinds from a panic
    /// elsewhere (a guard's `Drop` that flushes output through the loop) is not poisoned by
    /// that panic.
    pub fn run(&mut self, mode: RunMode) -> io::Result<bool> {
        if self.poisoned {
            return Err(io::Error::other(POISONED));
        }
        if self.running {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "Loop::run called from inside a callback of the same loop",
            ));
        }
        if self.lending > 0 {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "Loop::run called inside Loop::with_data: the value lent is out of the loop, where its \
                 callbacks would not find it",
            ));
        }
        self.running = true;
        let mut guard = RunGuard { lp: self, returned: false };
        // One copy of the loop per mode: the mode's tests fold away.
        let res = match mode {
            RunMode::Default => guard.lp.run_inner::<MODE_DEFAULT>(),
            RunMode::Once => guard.lp.run_inner::<MODE_ONCE>(),
            RunMode::NoWait => guard.lp.run_inner::<MODE_NOWAIT>(),
        };
        guard.returned = true;
        drop(guard);
        res
    }

    fn run_inner<const MODE: u8>(&mut self) -> io::Result<bool> {
        let mode = match MODE {
            MODE_DEFAULT => RunMode::Default,
            MODE_ONCE => RunMode::Once,
            _ => RunMode::NoWait,
        };
        let mut alive = self.is_alive();
        if !alive {
            self.refresh_time();
        }
        // NoWait always makes its one pass: it is how an outer loop hands over events
        // (a signal for an unreferenced watcher, an unreferenced timer) whatever keeps this
        // loop alive.
        let mut pass = alive || mode == RunMode::NoWait;
        while pass && !self.stop_flag {
            self.iterations += 1;
            self.time_stale.set(true);
            // Each phase is skipped with one test when it has nothing to do: an iteration
            // with one busy stream should cost little more than the poll itself. ONCE runs
            // its timers after the poll instead, whose timeout then counts them.
            if self.timers.is_armed() && mode != RunMode::Once {
                self.run_timers();
            }
            if !self.pending.is_empty() {
                self.run_pending();
                if mode == RunMode::Once {
                    // Pending callbacks are progress: ONCE then does not wait for I/O. Its
                    // pass ends after this iteration anyway, so the stop flag (which makes the
                    // poll not wait, and is cleared when `run` returns) says just that, at no
                    // cost to the common iteration.
                    self.stop_flag = true;
                }
            }
            if self.hooks.has(Phase::Idle) {
                self.run_hooks(Phase::Idle);
            }
            if self.hooks.has(Phase::Prepare) {
                self.run_hooks(Phase::Prepare);
            }
            // Interest changes reach the kernel before the timeout is chosen: they may move a
            // stream to the always-ready list, or fail and queue its callbacks.
            if !self.io_dirty.is_empty() && self.flush_io() && mode == RunMode::Once {
                // A refused change ran callbacks: progress, as a pending callback is.
                self.stop_flag = true;
            }
            // Stopped timers leave their entries queued: the timeout must not count them (a
            // wakeup for nothing, and a ONCE that returns having run nothing).
            if self.timers.is_armed() {
                self.timer_drop_stale_heads();
            }
            let timeout = self.poll_timeout(mode);
            self.poll(timeout)?;
            // The pending phase again, a bounded number of rounds: completions of this
            // poll's writes run in this iteration.
            let mut rounds = 0;
            while !self.pending.is_empty() && rounds < PENDING_ROUNDS_AFTER_POLL_MAX {
                self.run_pending();
                rounds += 1;
            }
            if self.hooks.has(Phase::Check) {
                self.run_hooks(Phase::Check);
            }
            if !self.closing.is_empty() {
                self.run_closing();
            }
            if mode == RunMode::Once {
                // ONCE's timers phase: those due when it began, and those that came due while
                // it waited.
                self.time_stale.set(true);
                self.run_timers();
            }
            if self.signals_idle {
                self.signals_release_if_idle();
            }
            alive = self.is_alive();
            if mode != RunMode::Default {
                break;
            }
            pass = alive;
        }
        // Changes made by the last callbacks (a stream closed in the close phase) reach the
        // backends now: left queued, they would have `backend_timeout` say zero, waking an
        // embedder for nothing. A refused one queues callbacks, which keep the loop alive.
        if !self.io_dirty.is_empty() {
            self.flush_io();
            alive = self.is_alive();
        }
        Ok(alive)
    }

    /// Makes [`run`](Self::run) return after the current iteration (without waiting for I/O
    /// in it). Called outside `run`, it makes the next `run` return at once, without an
    /// iteration (as libuv's `uv_stop` does); either way the request is then used up.
    ///
    /// The rest of the iteration still runs, as in libuv: the other callbacks of the phase
    /// that called `stop` (timers due at the same time, events of the same poll), then every
    /// later phase, the poll included (which then does not wait, but still runs the I/O
    /// callbacks of whatever is ready). A program that must not run script code after its
    /// `exit` keeps a flag of its own that its callbacks look at.
    pub fn stop(&mut self) {
        self.stop_flag = true;
    }

    /// Whether a panic got out of a callback during an earlier [`run`](Self::run), so that
    /// `run` now refuses to go on: the loop is only good for dropping.
    ///
    /// ```
    /// use evloop::{Loop, RunMode, Timer};
    /// use std::time::Duration;
    ///
    /// let mut lp = Loop::new()?;
    /// Timer::once(&mut lp, Duration::ZERO, |_| panic!("a callback panics"))?;
    /// let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run(RunMode::Default)));
    /// assert!(caught.is_err());
    /// assert!(lp.is_poisoned());
    /// assert!(lp.run(RunMode::Default).is_err());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether the loop has active, referenced handles (or streams with writes queued),
    /// pending callbacks, closing handles, or children it must still reap (of handles closed
    /// while referenced, or of a running [`Command::output`](crate::Command::output)).
    pub fn is_alive(&self) -> bool {
        self.active_refs > 0
            || !self.pending.is_empty()
            || !self.closing.is_empty()
            || self.children.keeps_loop_alive()
    }

    /// How many iterations have run, for statistics and tests.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// How long the loop has waited for events in its poll phase, in total, if it was built
    /// with [`LoopBuilder::measure_idle_time`] (`None` otherwise): libuv's
    /// `uv_metrics_idle_time`. With the wall time a run took, it gives the loop's load
    /// (the share of the time it was busy running callbacks and its own work), as Node's
    /// event-loop utilization does.
    ///
    /// Only waits count: a poll that cannot wait (a timer is due, a callback is pending,
    /// [`RunMode::NoWait`]) adds nothing, and neither does time the loop spends outside
    /// [`run`](Self::run), such as an outer loop's wait when this one is
    /// [embedded](Self::backend_fd). The time counts from the moment the wait begins until
    /// the kernel (or, for the fds the poller rejects, the select helper) reports back,
    /// including any time the thread was not scheduled.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use evloop::{Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::builder().measure_idle_time(true).build()?;
    /// let began = Instant::now();
    /// Timer::once(&mut lp, Duration::from_millis(30), |_| {})?;
    /// lp.run(RunMode::Default)?;
    /// let idle = lp.idle_time().unwrap();
    /// // Waiting for the timer is nearly all the run did (nearly: a wait counts from when
    /// // the poll began, which a busy machine may delay).
    /// assert!(idle <= began.elapsed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn idle_time(&self) -> Option<Duration> {
        self.options.measure_idle_time.then_some(self.idle)
    }

    /// The poll phase of a loop that has a select helper, or measures its idle time (see
    /// `poll_special`). Out of line: the common poll pays one test for both.
    #[inline(never)]
    fn poll_special(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.select_helper_holds() {
            return self.select_helper_poll(timeout);
        }
        // Timed for `idle_time` if the wait may block.
        let measure = self.options.measure_idle_time && timeout != Some(Duration::ZERO);
        let began = measure.then(Instant::now);
        self.poller.wait(&mut self.events, timeout)?;
        if let Some(t) = began {
            self.idle += t.elapsed();
        }
        self.time_stale.set(true);
        self.dispatch_events();
        Ok(())
    }

    // Out of line: keeps the common iteration (nothing of this kind to do) small.
    #[inline(never)]
    fn run_pending(&mut self) {
        // Callbacks queued while this round runs wait for the next round.
        for _ in 0..self.pending.len() {
            let Some(p) = self.pending.pop_front() else { break };
            match p {
                Pending::Write(_, cb, result) => cb(self, result),
                Pending::Child(check) => self.child_check(check),
                Pending::Stops(check) => self.child_stop_check(check),
                Pending::Adopted => self.adopted_sweep(),
            }
        }
        if self.pending.capacity() > QUEUE_ENTRIES_KEPT_MAX {
            self.shrink_pending();
        }
    }

    /// Gives back the room a burst of pending callbacks took, once it is over.
    #[cold]
    #[inline(never)]
    fn shrink_pending(&mut self) {
        if self.pending.len() <= self.pending.capacity() / 4 {
            self.pending.shrink_to(QUEUE_ENTRIES_KEPT_MAX.max(self.pending.len() * 2));
        }
    }

    // Out of line: keeps the common iteration (nothing of this kind to do) small.
    #[inline(never)]
    fn run_closing(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        let mut completed = self.stream_take_completed();
        // Handles closed by the callbacks below wait for the next close phase.
        for _ in 0..self.closing.len() {
            let Some((id, cb)) = self.closing.pop_front() else { break };
            let mut slot = self.slot_release(id);
            log::trace!("loop {}: closed {} {id:?}", self.id, slot.tag.name());
            if let Kind::Stream(s) = &mut slot.kind {
                // Callbacks in write order: those of finished writes, then the cancelled.
                self.stream_run_completed(&mut completed, id.key);
                self.stream_cancel(s);
            } else if !self.children.extras_is_empty() {
                // (Only a process handle's key can be in it.)
                self.process_released(id);
            }
            // A process handle's state dropped as such: the drop of any `Kind` is a jump
            // through every kind's, which costs each spawn's close some 20 instructions more.
            match slot.kind {
                Kind::Process(st) => drop(st),
                kind => drop(kind),
            }
            if let Some(cb) = cb {
                cb(self);
            }
        }
        debug_assert!(
            completed.is_none_or(|c| c.is_empty()),
            "finished writes of a stream not in the close batch"
        );
        // Two comparisons here; the rest, cold, now and then.
        if self.slots.len() < self.shrink_when.0 || self.slots_released >= self.shrink_when.1 {
            self.shrink_storage();
        }
    }

    /// Gives back the memory of a burst of handles once it is over, so that a long-running
    /// program does not keep its peak for good: the slots, and the queue of handles to close.
    ///
    /// Once at most a quarter of the slab's storage is in use, the vacant slots past the
    /// last live one go (a live handle's key cannot move, so one kept from the burst keeps
    /// the storage below it until it closes). Their generations stay in `gens`, 4 bytes a
    /// key. A try that walks the slab comes after the open handles halved, or after an
    /// eighth of the storage's worth of closes: O(1) a close, amortized.
    #[cold]
    #[inline(never)]
    fn shrink_storage(&mut self) {
        let (cap, open) = (self.slots.capacity(), self.slots.len());
        if cap >= SLOTS_KEPT_MAX && open <= cap / 4 {
            self.slots.shrink_to_fit();
            log::debug!("loop {}: slot storage {cap} -> {} ({open} open)", self.id, self.slots.capacity());
        }
        self.slots_released = 0;
        self.shrink_when = (open / 2, (self.slots.capacity() / 8).max(SLOTS_KEPT_MAX / 2));
        let queued = self.closing.len();
        if self.closing.capacity() > QUEUE_ENTRIES_KEPT_MAX && queued <= self.closing.capacity() / 4 {
            self.closing.shrink_to(QUEUE_ENTRIES_KEPT_MAX.max(queued * 2));
        }
    }

    /// Takes handle `id`'s slot out: its key is free again, unless the key's generations ran
    /// out, which keeps it occupied for good, so that no id can ever name two handles.
    pub(crate) fn slot_release(&mut self, id: HandleId) -> Slot {
        let key = id.key as usize;
        if id.gen_ == u32::MAX {
            std::mem::replace(&mut self.slots[key], Slot::retired())
        } else {
            self.slots_released += 1;
            self.slots.remove(key)
        }
    }

    /// Whether something can run without waiting for I/O: libuv's reasons for a zero poll
    /// timeout.
    fn runnable_now(&self) -> bool {
        self.stop_flag
            || !self.pending.is_empty()
            || !self.closing.is_empty()
            || self.hooks.has_idle()
            || !self.io_dirty.is_empty()
            || !self.always_ready.is_empty()
    }

    /// The poll phase's timeout: zero when something is runnable now, else until the next
    /// timer, else forever.
    #[inline(always)]
    fn poll_timeout(&self, mode: RunMode) -> Option<Duration> {
        if mode == RunMode::NoWait || self.runnable_now() || !self.is_alive() {
            return Some(Duration::ZERO);
        }
        self.timer_timeout()
    }

    #[inline]
    fn timer_timeout(&self) -> Option<Duration> {
        // The empty case inline: the deadline lookup is a call.
        if !self.timers.is_armed() {
            return None;
        }
        let deadline = self.timers.next_deadline()?;
        // From the clock, not the time cached at the start of the iteration: this
        // iteration's callbacks so far (timers, pending, idle, prepare) may have taken a
        // while, and a wait counted from the cached time would end late by as much (libuv's
        // does: a 10 ms repeat whose callback runs 6 ms fired every 16 ms). The poll that
        // follows makes the cached time stale anyway.
        self.refresh_time();
        Some(Duration::from_millis(deadline.saturating_sub(self.now_ms.get())))
    }

    /// The poll phase, after `flush_io` (a change still unflushed makes the timeout zero:
    /// see `runnable_now`).
    #[inline(always)]
    fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.poll_special {
            self.poll_special(timeout)?;
        } else {
            self.poller.wait(&mut self.events, timeout)?;
            self.time_stale.set(true);
            self.dispatch_events();
        }
        if !self.always_ready.is_empty() {
            self.run_always_ready();
        }
        Ok(())
    }

    /// Dispatches the events of the poller's last wait.
    // Always inlined into the poll phase: out of line, its call costs an iteration about 15
    // instructions even with no events.
    #[inline(always)]
    pub(crate) fn dispatch_events(&mut self) {
        // By index: each event is copied out, so callbacks get the loop without a borrow.
        // A callback that swapped this loop for another (`mem::swap` on its `&mut Loop`) ends
        // the batch: the rest is this loop's, and the events buffer is now the other's.
        let me = self.id;
        for i in 0..self.events.len() {
            if self.id != me {
                return;
            }
            let ev = self.events.get(i);
            self.dispatch(ev);
        }
    }

    // Inlined: a call per event costs the busiest path (one event per iteration) about 15
    // instructions.
    #[inline(always)]
    fn dispatch(&mut self, ev: Event) {
        let token = ev.token;
        let key = (token & 0xffff_ffff) as usize;
        let gen_ = (token >> 32) as u32;
        // Handle tokens carry a generation of at least 1; the loop's own tokens and child
        // tokens do not (see `process::is_child_token`). Handles first: the common case.
        if gen_ == 0 || token >= SIGNAL_TOKEN {
            self.dispatch_own(token);
            return;
        }
        // An event for a handle closed earlier in this batch (or earlier, while the kernel
        // still held the fd) is stale: drop it.
        let Some(s) = self.slots.get(key).filter(|s| s.gen_ == gen_) else {
            log::trace!("loop {}: dropped stale event for token {token:#x}", self.id);
            return;
        };
        if s.flags.contains(Flags::CLOSING) {
            return;
        }
        let id = HandleId { loop_id: self.id, key: key as u32, gen_ };
        log::trace!("loop {}: event {:?} for {id:?}", self.id, ev.readiness);
        match &s.kind {
            Kind::Stream(_) | Kind::FdWatch(_) if ev.change_error != 0 => {
                let e = io::Error::from_raw_os_error(ev.change_error);
                self.io_error(id, e);
            }
            Kind::Stream(st) => {
                let interest = st.interest();
                self.stream_event(id, ev.readiness, interest);
            }
            Kind::FdWatch(_) => self.watch_event(id, ev.readiness),
            _ => {}
        }
    }

    /// An event for one of the loop's own tokens: the waker, the signal pipe, a child. Out of
    /// line, so that the path of handle events stays short. (The waker's and the signal
    /// pipe's registrations are of eventfds and pipes, which every poller accepts: no change
    /// error to look at.)
    #[inline(never)]
    fn dispatch_own(&mut self, token: u64) {
        match token {
            WAKE_TOKEN => self.on_wake(),
            SIGNAL_TOKEN => self.on_signal_pipe(),
            token if crate::process::is_child_token(token) => self.on_child_event(token),
            _ => log::trace!("loop {}: dropped an event with the null token", self.id),
        }
    }

    // ----- embedding ----------------------------------------------------------------------

    /// The poller's fd (epoll or kqueue): readable when this loop has events, so an outer
    /// loop (poll(2), mio, tokio's `AsyncFd`, GTK, another evloop) can wait on it and then
    /// call [`run(RunMode::NoWait)`](Self::run). A copy (`try_clone_to_owned`) is the same
    /// poller: an outer loop that takes ownership of what it watches (tokio's
    /// `AsyncFd::register`) gets one, and the loop stays out of it.
    ///
    /// A kqueue inside another kqueue may not report readiness on macOS (libuv's docs say
    /// the same); there, bound the outer wait with [`backend_timeout`](Self::backend_timeout)
    /// and a short cap.
    pub fn backend_fd(&self) -> BorrowedFd<'_> {
        self.poller.as_fd()
    }

    /// How long an outer loop may wait on [`backend_fd`](Self::backend_fd) before it must
    /// call [`run(RunMode::NoWait)`](Self::run): `None` means "until the fd is readable",
    /// `Some(ZERO)` means "run now" (pending callbacks, idle handles, closing handles,
    /// interest changes not yet handed to the kernel, or events the poller holds already),
    /// anything else is the next timer.
    ///
    /// Ask again before each wait, and wake the outer wait after anything outside it used
    /// the loop (a task that started a timer or queued a write: the wait still runs on the
    /// timeout it read before). Keeping the loop inside the driver and sending it work over
    /// a [`Channel`](crate::Channel) does that by itself. An outer poller that watches the fd
    /// edge-triggered (mio, tokio's `AsyncFd`) hears only of new readiness, while a run
    /// leaves some ready on purpose: a stream's reads per event are bounded, so a stream
    /// with more to read stays ready, and makes no new edge. This says "run now" for it:
    /// `Some(Duration::ZERO)`, which calls for no wait at all. A zero wait through a timer
    /// that rounds up to its tick (tokio's `sleep(Duration::ZERO)` takes a millisecond)
    /// costs that tick each time (a stream read a few bytes a round then takes a
    /// millisecond a round): on zero, let the outer loop's other work run (tokio's
    /// `yield_now`) and run this loop at once. Each call asks the poller whether it has
    /// events, one `poll(2)` of its fd when nothing else is due (about half a microsecond).
    ///
    /// An outer wait that rounds its timeout up to its own tick (tokio's timers, whose
    /// tick is a millisecond) wakes that much late, and a repeating [`Timer`](crate::Timer)'s
    /// next period counts from the iteration it fired in, as in libuv: embedded so, a 10 ms
    /// repeat fires about every 11 ms. A timer that must not drift keeps a fixed rate
    /// ([`Timer::set_fixed_rate`](crate::Timer::set_fixed_rate)): its periods count from its
    /// deadlines.
    ///
    /// The time to the next timer can be very long (a timer started with `Duration::MAX`
    /// gives centuries): clamp it when turning it into a `poll(2)` or `epoll_wait` timeout in
    /// milliseconds, which is an `int`.
    ///
    /// Nested in another evloop, read it in a [`Prepare`](crate::Prepare) handle, which runs
    /// before the outer loop's poll (a `Check` handle runs after it, too late for the
    /// wait), and watch `backend_fd` with an [`FdWatch`](crate::FdWatch) on a duplicate.
    pub fn backend_timeout(&self) -> Option<Duration> {
        // Unlike `run`, an outer loop keeps unreferenced timers going: it decides how long the
        // nested loop lives.
        // (kqueue registers the changes queued since the last wait, such as a signal
        // watcher's pipe, only in the next wait.)
        if self.runnable_now() || self.poller.has_queued_changes() {
            return Some(Duration::ZERO);
        }
        // Level-triggered, the poller still holds what a bounded round left: asked, its fd
        // says so (an error says nothing, and the outer wait decides).
        if fd::poll_readable(self.backend_fd(), Some(Duration::ZERO)).unwrap_or(false) {
            return Some(Duration::ZERO);
        }
        // Stopped timers' entries do not count: an outer loop would wake for nothing.
        self.timer_next_live_deadline()
            .map(|deadline| Duration::from_millis(deadline.saturating_sub(self.now())))
    }
}

impl AsFd for Loop {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.backend_fd()
    }
}

/// For embedding APIs that still take a raw fd (tokio's `AsyncFd`, mio's `SourceFd`).
impl AsRawFd for Loop {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.backend_fd().as_raw_fd()
    }
}

/// Why `id` does not name a live handle of `kind` in loop `loop_id`. Kept out of line: the
/// lookups above are on every hot path.
#[cold]
#[inline(never)]
fn id_error(loop_id: u32, id: HandleId, kind: HandleKind) -> io::Error {
    if id.loop_id != loop_id {
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} id {id:?} belongs to another loop (this is loop {loop_id})", kind.name()),
        );
    }
    stale_error(kind)
}

#[cold]
#[inline(never)]
pub(crate) fn closing_error(kind: HandleKind) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, format!("the {} is closing", kind.name()))
}

/// Ends a `run`, however it ends.
struct RunGuard<'a> {
    lp: &'a mut Loop,
    /// Whether the phases returned: a guard dropped without it is unwinding from a panic
    /// in the run, which poisons the loop. (Not `std::thread::panicking`: a run from a
    /// `Drop` while another panic unwinds is not poisoned by that panic.)
    returned: bool,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        let lp = &mut *self.lp;
        lp.running = false;
        // A stop request is used up by the run it ended (or by one that failed).
        lp.stop_flag = false;
        // The caller may take any time before the next run: the next `now` reads the clock.
        lp.time_stale.set(true);
        // However `run` ends, the helper thread gets its fds back: an embedder may wait on
        // the backend fd before the next `run`, and only the thread can wake it for them.
        if lp.select_helper.is_some() {
            lp.select_helper_hand_back();
        }
        if !self.returned {
            lp.poisoned = true;
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        log::debug!("loop {}: dropped with {} handles", self.id, self.slots.len());
        self.dropping = true;
        // The program's code runs here only as its values drop (what its callbacks captured)
        // and in close hooks. A panic there must not cut the release short (a child left
        // unkilled, an fd open, a handler installed): each step is caught, and the first
        // panic goes on once everything is released.
        let mut caught = Caught::default();
        // Handles stop without callbacks: their callbacks are dropped with their slots.
        let ids: Vec<HandleId> = self
            .slots
            .iter()
            .map(|(k, s)| HandleId { loop_id: self.id, key: k as u32, gen_: s.gen_ })
            .collect();
        for id in ids {
            // Flagged first, as by `close`: a close hook that runs now (a pipeline's, a
            // capture's) sees it closing, and does not stop it a second time.
            let flags = &mut self.slots[id.key as usize].flags;
            if !flags.contains(Flags::CLOSING) {
                flags.insert(Flags::CLOSING);
                caught.run(|| self.stop_for_close(id));
            }
        }
        for p in std::mem::take(&mut self.pending) {
            caught.run(move || drop(p));
        }
        for c in std::mem::take(&mut self.closing) {
            caught.run(move || drop(c));
        }
        for slot in self.slots.drain() {
            caught.run(move || drop(slot));
        }
        // Joins the helper thread (the handles' fds closed as they stopped).
        self.select_helper = None;
        // Children whose handles just stopped: reaped, waited for (a child on a pty whose
        // master closed above is hung up, and given a moment to end), or left to the orphan
        // list.
        let mut callbacks = Vec::new();
        caught.run(|| callbacks = self.children_drop());
        for cb in callbacks {
            caught.run(move || drop(cb));
        }
        self.signals_release();
        // Wakers and senders may outlive the loop; its wake object does not.
        self.wake.close();
        caught.resume();
    }
}

/// The first panic of a loop's drop, held until the drop has released everything.
#[derive(Default)]
struct Caught(Option<Box<dyn std::any::Any + Send>>);

impl Caught {
    fn run(&mut self, step: impl FnOnce()) {
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
            self.0.get_or_insert(payload);
        }
    }

    /// Goes on with the panic caught, unless the thread already unwinds from another (a
    /// second panic would abort the process).
    fn resume(self) {
        if let Some(payload) = self.0 {
            if !std::thread::panicking() {
                std::panic::resume_unwind(payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::limits::{QUEUE_ENTRIES_KEPT_MAX, SLOTS_KEPT_MAX};
    use crate::{Loop, RunMode, Timer};

    #[test]
    fn a_key_whose_generations_ran_out_is_never_reused() {
        let mut lp = Loop::new().unwrap();
        let first = Timer::new(&mut lp);
        first.close(&mut lp).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        // Skip ahead four billion closes of that key: the next handle there has the last
        // generation.
        let key = first.id().key as usize;
        lp.gens[key] = u32::MAX - 1;
        let last = Timer::new(&mut lp);
        assert_eq!((last.id().key as usize, last.id().gen_), (key, u32::MAX));
        last.close(&mut lp).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        // A wrapped generation would give the next handle there `first`'s id back.
        let next = Timer::new(&mut lp);
        assert_ne!(next.id().key as usize, key, "the key is retired");
        for stale in [first, last] {
            assert!(stale.start(&mut lp, Duration::ZERO, Duration::ZERO, |_, _| {}).is_err());
            assert!(stale.close(&mut lp).is_err());
        }
        assert_eq!(lp.handles().len(), 1, "the retired slot is not listed");
        next.close(&mut lp).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap());
    }

    /// A burst of handles used to keep its peak memory for the loop's life: the slot storage
    /// and the close queue never shrank (a million timers left some 100 MB behind).
    #[test]
    fn issue_2_a_burst_of_handles_gives_its_memory_back() {
        const BURST: usize = 50_000;
        let mut lp = Loop::new().unwrap();
        let (r, w) = crate::Pipe::pair(&mut lp).unwrap();
        let burst: Vec<Timer> = (0..BURST).map(|_| Timer::new(&mut lp)).collect();
        // The last one stays open a while: the storage cannot shrink below a live key.
        let (pinned, rest) = burst.split_last().unwrap();
        for t in rest {
            t.close(&mut lp).unwrap();
        }
        // And a burst of writes finished at once, whose callbacks wait in the pending queue.
        for _ in 0..BURST {
            w.write(&mut lp, b"", |_, res| res.unwrap()).unwrap();
        }
        assert!(lp.pending.capacity() >= BURST && lp.closing.capacity() >= BURST);
        lp.run(RunMode::NoWait).unwrap();
        assert!(lp.slots.capacity() >= BURST, "a live handle pins the storage below it");
        assert!(lp.pending.capacity() <= 2 * QUEUE_ENTRIES_KEPT_MAX, "{}", lp.pending.capacity());
        assert!(lp.closing.capacity() <= 2 * QUEUE_ENTRIES_KEPT_MAX, "{}", lp.closing.capacity());
        // Once the pinning handle is gone, the storage goes after an eighth of it worth of
        // closes (the open handles no longer halve: two pipes are left).
        pinned.close(&mut lp).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        assert!(lp.slots.capacity() >= BURST, "not yet: that walk waits for more closes");
        for _ in 0..BURST / 2 {
            Timer::new(&mut lp).close(&mut lp).unwrap();
        }
        lp.run(RunMode::NoWait).unwrap();
        assert!(lp.slots.capacity() < SLOTS_KEPT_MAX, "{} slots kept", lp.slots.capacity());
        // The slots that went keep their generations: their ids stay stale, and new handles
        // there get new ones.
        let fresh: Vec<Timer> = (0..BURST).map(|_| Timer::new(&mut lp)).collect();
        for old in &burst {
            assert!(old.stop(&mut lp).is_err(), "a stale id answers for a new handle");
        }
        for t in fresh {
            t.close(&mut lp).unwrap();
        }
        r.close(&mut lp).unwrap();
        w.close(&mut lp).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap());
    }

    /// Bursts and churn of random sizes across many shrinks: every open id keeps working and
    /// every closed one stays stale, and the storage ends small.
    #[test]
    fn issue_2_ids_stay_right_across_storage_shrinks() {
        let mut lp = Loop::new().unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (mut open, mut closed): (Vec<Timer>, Vec<Timer>) = (Vec::new(), Vec::new());
        let mut most = 0;
        for _ in 0..60 {
            for _ in 0..next(6000) {
                open.push(Timer::new(&mut lp));
            }
            most = most.max(lp.slots.capacity());
            // Close a random share, from anywhere in the list.
            let share = next(101);
            let mut kept = Vec::new();
            for t in open.drain(..) {
                if next(100) < share {
                    t.close(&mut lp).unwrap();
                    closed.push(t);
                } else {
                    kept.push(t);
                }
            }
            open = kept;
            lp.run(RunMode::NoWait).unwrap();
            for t in &open {
                t.stop(&mut lp).expect("an open timer");
            }
            for t in closed.iter().rev().take(2000) {
                assert!(t.stop(&mut lp).is_err(), "a closed timer's id names another handle");
            }
        }
        for t in open.drain(..) {
            t.close(&mut lp).unwrap();
        }
        lp.run(RunMode::NoWait).unwrap();
        assert!(lp.slots.capacity() < SLOTS_KEPT_MAX, "{} of {most} slots kept", lp.slots.capacity());
        for t in &closed {
            assert!(t.stop(&mut lp).is_err());
        }
    }
}
