//! evloop: a single-threaded, callback-driven event loop in the spirit of libuv.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod async_handle;
pub mod channel;
mod error;
mod event_loop;
mod handle;
mod io;
pub mod limits;
mod loop_watcher;
mod pipe;
pub mod process;
mod select_helper;
pub mod signal;
mod stream;
mod timer;
pub mod tty;

pub use async_handle::{Async, Waker};
pub use channel::{Channel, Sender};
pub use error::os_error_code;
pub use event_loop::{Loop, LoopBuilder, RunMode};
pub use handle::{HandleId, HandleInfo, HandleKind};
pub use loop_watcher::{Check, Idle, Prepare};
pub use pipe::{HandleType, Pipe, guess_handle};
pub use process::{Child, Command, ExitStatus, Pipeline, Process, Stdio};
pub use signal::Signal;
pub use stream::ReadEvent;
pub use timer::Timer;
pub use tty::{Tty, TtyMode, WinSize};
