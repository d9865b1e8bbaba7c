//! Every bound evloop enforces, as a named constant with its unit last.
//!
//! Loops over outside input are bounded so that one busy source cannot starve the others:
//! the loop moves on and level-triggered readiness brings the source back next iteration.

/// The read cap a stream starts with: each `read` asks for at most this many bytes.
///
/// 64 KiB is the default pipe capacity on Linux and the largest pipe buffer on macOS, so a
/// bigger read rarely returns more; larger reads only pay off with enlarged pipes.
pub const READ_CAP_BYTES_DEFAULT: usize = 64 * 1024;

/// The smallest read cap `set_read_cap` accepts.
pub const READ_CAP_BYTES_MIN: usize = 1;

/// The largest read cap `set_read_cap` accepts: 64 KiB on macOS, where nonblocking pipe reads
/// larger than the buffered amount have failed with `EINVAL` (gipc#13, bugs.python.org
/// issue 15896); 1 MiB elsewhere (Linux's default `pipe-max-size`).
#[cfg(target_vendor = "apple")]
pub const READ_CAP_BYTES_MAX: usize = 64 * 1024;
/// The largest read cap `set_read_cap` accepts: 1 MiB (Linux's default `pipe-max-size`).
#[cfg(not(target_vendor = "apple"))]
pub const READ_CAP_BYTES_MAX: usize = 1024 * 1024;

/// Reads per readiness event before the loop moves on to other handles (libuv's 32).
pub const READS_PER_EVENT_MAX: usize = 32;

/// `write`/`writev` calls per writable event before the loop moves on.
pub const WRITES_PER_EVENT_MAX: usize = 32;

/// Extra rounds of the pending phase right after the poll phase, as libuv (since 1.45) runs:
/// a write finished by an I/O callback completes in the same iteration, and a chain of
/// writes issued from write callbacks needs no iteration per link. The bound keeps an
/// endless chain from starving the check and close phases.
pub const PENDING_ROUNDS_AFTER_POLL_MAX: usize = 8;

/// Buffers passed to one `writev` call (`IOV_MAX`).
pub const WRITEV_BUFFERS_MAX: usize = evloop_platform::fd::IOV_MAX;

/// Queued writes one flush's `writev` looks at, and bytes it offers (it stops after the
/// entry that reaches either): far more than a pipe or socket buffer takes at once, yet a
/// queue of a million short writes costs each flush a bounded walk, not one of the whole
/// queue.
pub const WRITEV_ENTRIES_WALKED_MAX: usize = 8 * WRITEV_BUFFERS_MAX;
/// See [`WRITEV_ENTRIES_WALKED_MAX`].
pub const WRITEV_BYTES_OFFERED_MAX: usize = 1 << 20;

/// Events taken from the poller per wait.
pub const EVENTS_PER_POLL_MAX: usize = 1024;

/// Channel messages delivered per wakeup before the loop moves on.
pub const MESSAGES_PER_WAKE_MAX: usize = 1024;

/// Callbacks per signal handle per iteration for a signal caught several times since the
/// last one (each catch calls the callback once, as libuv's do); catches beyond this fold
/// into the last call. The loop's own `SIGCHLD` watcher runs once per iteration.
pub const SIGNAL_CALLS_PER_ITERATION_MAX: u32 = 64;

/// Stale timer entries (of stopped or moved timers) tolerated in the per-millisecond buckets,
/// beyond the live ones, before the buckets are compacted.
pub const TIMER_STALE_ENTRIES_MAX: usize = 1024;

/// Handle slots below which a loop does not bother giving storage back: past a burst (a
/// million timers at once), storage of this many slots or more is given back once at most
/// a quarter of it is in use, down to the highest key still open.
pub const SLOTS_KEPT_MAX: usize = 1024;

/// Entries the loop's internal queues (handles waiting for the close phase, callbacks
/// waiting for the pending phase) keep room for after a burst; beyond this, room is given
/// back once at most a quarter of it is in use.
pub const QUEUE_ENTRIES_KEPT_MAX: usize = 1024;

/// A borrowed write of at most this many bytes that has to be queued is copied onto the end
/// of its stream's one staging buffer, after the bytes queued before it; a longer one gets
/// a buffer of its own. A burst of small writes then costs no allocation per write for its
/// data, and leaves the stream in long `writev` runs.
pub const WRITE_STAGED_BYTES_MAX: usize = 4 << 10;

/// Bytes a stream's staging buffer keeps room for once everything queued has been written
/// (beyond this, the room a burst took is given back), and entries its write queue keeps
/// room for. Small: a program with a thousand children's stdins keeps a few KiB per stream
/// after a burst, not the burst's peak (a drained queue grows again, by doubling, at its
/// next burst beyond these).
pub const STAGED_BYTES_KEPT_MAX: usize = 4 << 10;
/// See [`STAGED_BYTES_KEPT_MAX`].
pub const WRITE_QUEUE_ENTRIES_KEPT_MAX: usize = 64;

/// How many bytes [`AnyStream::pipe_to`](crate::AnyStream::pipe_to) lets its destination
/// (and [`tee`](crate::AnyStream::tee) each of its destinations) have queued before it
/// pauses reading its source until they are out: with one read cap, the most a relay holds
/// in memory per destination.
pub const PIPE_TO_QUEUE_BYTES_MAX: usize = 1 << 20;

/// Children reaped per look for [`Loop::reap_adopted`](crate::Loop::reap_adopted) before
/// the loop moves on (the rest in the next pending phase): a burst of orphans cannot hold
/// it up.
pub const ADOPTED_REAPS_PER_SWEEP_MAX: usize = 256;

/// How often [`Process::terminate_group`](crate::Process::terminate_group) checks whether the
/// group it ends has members left, during its grace period.
pub const GROUP_EXIT_POLL_INTERVAL_MS: u64 = 20;

/// How long [`Process::terminate_group`](crate::Process::terminate_group) waits before it
/// first looks through `/proc` (Linux) for whether the members its group still has have
/// all exited (zombies whose parent, an `init` slow to reap orphans, has not reaped them
/// keep the group's id in use, but the group has ended), unless the group's leader is gone
/// before: it looks then. Each look reads the status of every process, so each that finds
/// a member alive doubles the wait for the next, up to 16 times this; after the `SIGKILL`
/// that ends the grace period, the waits start again from
/// [`GROUP_EXIT_POLL_INTERVAL_MS`].
pub const GROUP_EXITED_SCAN_INTERVAL_MS: u64 = 100;

/// How long [`Process::terminate_group`](crate::Process::terminate_group)'s escalation waits,
/// after its `SIGKILL`, for the group to be empty (killed members gone, and reaped by their
/// parents) before it ends all the same: members whose parent does not reap them (an
/// orphan's `init` that is slow to) would hold it up for good.
pub const GROUP_KILLED_WAIT_MS: u64 = 1000;

/// How long, in all, a dropped loop waits for the children it started on ptys
/// ([`Command::spawn_on_pty`](crate::Command::spawn_on_pty)) to end, once closing their
/// masters has hung them up, before it leaves those still running to the orphan list.
pub const PTY_HANGUP_WAIT_MS: u64 = 200;

/// How long [`Tty::suspend`](crate::Tty::suspend), continued in the background (`bg`, or a
/// shell's `kill %1`: `SIGTERM`, then `SIGCONT`), waits for a signal that ends a process by
/// default and that the loop watches to reach the loop, before it sets the terminal's mode
/// again (and `SIGTTOU` stops the process until it is in front). Another thread of the
/// program may have taken the signal and not yet run its handler; a program with one
/// thread never waits for a signal already sent. The wait happens only in the background,
/// and only where the loop watches such a signal.
pub const SUSPEND_SIGNAL_WAIT_MS: u64 = 50;

/// Terminals whose settings the process keeps saved at once for
/// [`tty::reset_mode`](crate::tty::reset_mode) and the restore hooks: each terminal put in
/// a raw mode takes one until the handle that saved it closes (pty masters take none).
pub const SAVED_TERMINALS_MAX: usize = evloop_platform::termios::SAVED_TERMINALS_MAX;

/// Loops of one process that may watch signals at once: [`Signal`](crate::Signal) handles,
/// [`Loop::reap_adopted`](crate::Loop::reap_adopted), stop watches, resize callbacks and
/// the `SIGCHLD` reaping path all take the loop one slot of the process-wide table the
/// signal handlers write through, given back once the loop watches no signal. A loop past
/// the limit gets an error naming it.
pub const SIGNAL_LOOPS_MAX: usize = evloop_platform::signal::NOTIFY_SLOTS_MAX;

/// The highest signal number a loop can watch.
pub const SIGNAL_NUMBER_MAX: i32 = evloop_platform::signal::SIGNAL_NUMBER_MAX;

const _: () = assert!(READ_CAP_BYTES_MIN <= READ_CAP_BYTES_DEFAULT);
const _: () = assert!(READ_CAP_BYTES_DEFAULT <= READ_CAP_BYTES_MAX);
const _: () = assert!(READS_PER_EVENT_MAX > 0 && WRITES_PER_EVENT_MAX > 0);
const _: () = assert!(WRITEV_BUFFERS_MAX >= 16);
