//! evloop's integration tests: one binary, one module per area.
//!
//! Every test runs in a process of its own under a watchdog and checks that it leaked no fd
//! and no child (see `util`). Regression tests are named after their issue: `issue_<n>_...`.

#[macro_use]
mod util;

/// Wakers and channels from other threads.
mod cross_thread;
/// The loop nested in poll(2), mio and tokio.
mod embed;
/// Fd watches: readiness of fds the program reads and writes itself.
mod fd_watch;
/// Run modes, stop, ref/unref, close order and deferral, phase order, stale ids, drop.
mod loop_core;
/// examples/par.rs, a small `xargs -P`: output compared with xargs', status, Ctrl-C, progress.
mod par;
/// Pipes: bounded reads, the write queue, EOF, EPIPE, fairness, always-ready fds, bad input.
mod pipe;
/// Child processes: spawn paths, stdio, exit and kill, reaping without zombies, pipelines.
mod process;
/// Reliability: a signal storm, fd exhaustion, misbehaving children, huge and empty writes.
mod reliability;
/// The select helper thread: high fds, many streams, interest changes, close, drop, no spin.
mod select_helper;
/// Signal handles: delivery, several loops, dispositions restored.
mod signal;
/// Timer order, repeat, again, the zero-timeout re-arm rule.
mod timer;
/// Ttys on ptys: modes, reset, resize, the reopen, EOF after a hang-up, examples/keys.rs,
/// terminal safety on panics and signals, bad input.
mod tty;
