//! evloop: a single-threaded, callback-driven event loop in the spirit of libuv. It drives
//! pipes and terminals, spawns child processes with their stdio wired to pipes, and offers
//! timers, signals and wakeups from other threads, on epoll (Linux) and kqueue (macOS,
//! FreeBSD).
//!
//! Spawn a child, read its output, wait for its exit:
//!
//! ```
//! use evloop::{Command, Loop, ReadEvent, RunMode, Stdio};
//!
//! let mut lp = Loop::new()?;
//! let child = Command::new("echo").arg("hello").stdout(Stdio::Pipe).spawn(&mut lp, |lp, p, st| {
//!     assert!(st.unwrap().success());
//!     p.close(lp).unwrap(); // the process handle, once its status is in
//! })?;
//! child.stdout.unwrap().read_start(&mut lp, |lp, out, ev| match ev {
//!     ReadEvent::Data(bytes) => print!("{}", String::from_utf8_lossy(bytes)),
//!     _ => out.close(lp).unwrap(),
//! })?;
//! lp.run(RunMode::Default)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # The handle types
//!
//! | handle | what it is | libuv |
//! |---|---|---|
//! | [`Timer`] | a callback after a timeout, optionally repeating | `uv_timer_t` |
//! | [`Idle`], [`Prepare`], [`Check`] | callbacks at fixed points of every iteration | `uv_idle_t`... |
//! | [`Async`] + [`Waker`] | a callback woken from any thread | `uv_async_t` |
//! | [`Channel`] + [`Sender`] | typed messages from any thread, in order | none |
//! | [`Signal`] | a callback when the process receives a signal | `uv_signal_t` |
//! | [`Pipe`] | a stream over an fd: bounded reads, a write queue | `uv_pipe_t` |
//! | [`Tty`] | a terminal stream: modes, window size, resize, restore | `uv_tty_t` |
//! | [`AnyStream`] | a `Pipe` or a `Tty`: stdin or stdout, whichever it is | `uv_stream_t` |
//! | [`FdWatch`] | readiness callbacks for an fd the program reads and writes itself | `uv_poll_t` |
//! | [`Process`] (from [`Command`], [`Pipeline`]) | a child process, reaped by the loop | `uv_process_t` |
//!
//! Every handle is a small `Copy` id. Operations take the loop (`&mut Loop`) and return
//! `io::Result`: an id whose handle closed, or that belongs to another loop, gives an error
//! and never reaches another handle. Callbacks receive `&mut Loop` and run on the loop's
//! thread; user state lives in the closures (an `Rc<RefCell<_>>` where several share it),
//! or in the loop itself ([`Loop::set_data`]), reached with the loop through
//! [`Loop::with_data`].
//!
//! # How a loop runs
//!
//! Each iteration runs timers, pending callbacks (write completions), idle and prepare
//! handles, polls for I/O, runs the pending callbacks that I/O made (up to 8 more rounds,
//! as libuv 1.45 does), then check handles and close callbacks. See [`Loop::run`] and
//! [`RunMode`]. A loop nests inside another event loop through [`Loop::backend_fd`] and
//! [`Loop::backend_timeout`].
//!
//! Callbacks run only inside [`Loop::run`]: no other call (a write, a close, a spawn, a
//! stop) runs one before it returns. A `RefCell` borrow of the program's state may be held
//! across those calls, but not across `run`.
//!
//! # Errors
//!
//! Everything returns `std::io::Error`. OS errors that need no context (a write's `EPIPE`, a
//! kill's `ESRCH`) come through unchanged; errors that need context ("spawn `foo`: No such
//! file or directory") keep their [`std::io::ErrorKind`], and [`os_error_code`] recovers the
//! error number from either.
//!
//! A handle's own errors have fixed kinds, so code can match on them:
//!
//! | situation | kind |
//! |---|---|
//! | the handle is closing (`close` was called; its close callback has not run) | `NotConnected`; stopping it (`stop`, `read_stop`, `read_pause`, a channel's `pause`, `resize_stop`, `unwatch_stops`, `set_ref`) succeeds and does nothing; what only reports its state (`is_active`, `is_closing`, `read_cap`, `write_queue_size`, `has_ref`) still answers |
//! | the id is stale (the handle is gone) | `NotFound` |
//! | the id belongs to another loop, or the call does not fit the handle (reading a write-only pipe, a read cap out of range) | `InvalidInput` |
//! | writing to a stream that cannot be written (shut down, or open for reading only) | `BrokenPipe`, as the OS says for a write nobody can read |
//! | starting what is already started (a second `read_start`, a second `shutdown`) | `AlreadyExists` |
//! | what the fd cannot do (`shutdown` of a pipe or terminal open for reading and writing, which only a socket can close the write side of) | `Unsupported` |
//! | resuming a stream with nothing paused (`read_resume`) | `NotConnected` |
//! | a write or shutdown still queued when its stream closed | `Uncategorized` (`ECANCELED`): see [`is_cancelled`]; its callback runs in the close phase, just before the close callback, with the handle released already (its id is stale there) |
//! | [`Loop::run`] called from inside one of the same loop's callbacks | `ResourceBusy` (nothing ran: the loop is running already) |
//!
//! # `SIGPIPE`
//!
//! Rust programs start with `SIGPIPE` ignored, so a write to a pipe whose reader is gone
//! fails with `EPIPE`, which reaches the write's callback. A program that restores the
//! default action (some do, to die quietly in `cmd | head`) must ignore `SIGPIPE` again
//! before it writes to pipes through evloop, or it is killed instead. Children start with
//! default dispositions, `SIGPIPE`'s included, but for the signals their
//! [`Command::ignore_signal`] names.
//!
//! # Guides
//!
//! - [`guide::from_libuv`]: each libuv call and its evloop counterpart, and what differs.
//! - [`guide::from_tokio_and_duct`]: when to pick evloop, and the same tasks in each.
//! - [`guide::programs_on_a_pty`]: driving a program on a pty, as `expect` does.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod any_stream;
mod async_handle;
pub mod channel;
mod error;
mod event_loop;
pub mod fd_watch;
pub mod guide;
mod handle;
mod io;
pub mod limits;
mod lines;
mod loop_watcher;
mod pipe;
pub mod process;
mod select_helper;
pub mod signal;
mod stream;
mod timer;
pub mod tty;

pub use any_stream::AnyStream;
pub use async_handle::{Async, Waker};
pub use channel::{Channel, Sender};
pub use error::{is_cancelled, is_no_such_process, os_error_code};
pub use event_loop::{Loop, LoopBuilder, RunMode};
pub use fd_watch::{FdWatch, Interest, Readiness};
pub use handle::{HandleId, HandleInfo, HandleKind};
pub use lines::{LineEnd, Lines};
pub use loop_watcher::{Check, Idle, Prepare};
pub use pipe::{HandleType, Pipe, fd_floor, guess_handle, restore_shared_blocking, set_fd_floor};
pub use process::{
    AdoptedExit, Child, Command, ExitStatus, GroupEnd, Output, OutputCut, OutputStream, Pipeline,
    PipelineOutput, Process, ResourceUsage, RunTimedOut, Stdio, StopEvent,
};
pub use signal::Signal;
pub use stream::ReadEvent;
pub use timer::Timer;
pub use tty::{Settings, Tty, TtyMode, WinSize};
