//! The system-call layer of `evloop`.
//!
//! Every syscall and every line of `unsafe` in evloop lives in this crate. It exposes safe
//! functions over [`OwnedFd`](std::os::fd::OwnedFd) and [`BorrowedFd`](std::os::fd::BorrowedFd);
//! the few functions whose contract a type cannot carry are `unsafe fn` with a `# Safety`
//! section.
//!
//! The crate is organised feature first:
//!
//! - [`poller`]: epoll (Linux) or kqueue (macOS, FreeBSD), level-triggered, one contract.
//! - [`waker`]: a cross-thread wakeup registered in the poller (eventfd or `EVFILT_USER`).
//! - [`fd`]: pipes, `O_NONBLOCK`, capped reads and writes, `writev`, file types.
//! - [`signal`]: the one process-wide signal handler and its per-loop notification slots.
//! - [`termios`]: terminal modes, window sizes, ptys, and the saved termios a signal handler
//!   can restore.
//! - [`spawn`]: starting children (posix_spawn, or fork/exec with nothing allocated between).
//! - [`process`]: children once started: reaping by pid, signals, Linux pidfds.
//!
//! Conventions:
//!
//! - A syscall's `-1` becomes an [`std::io::Error`] in one place (`cvt`), and `EINTR` is
//!   retried in one place (`cvt_r`). Callers choose the retrying form on purpose.
//! - Everything this crate creates is close-on-exec.
#![deny(missing_docs)]

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")))]
compile_error!("evloop-platform supports Linux, macOS and FreeBSD");

pub mod alloc;
mod cvt;
pub mod fd;
pub mod poller;
pub mod process;
pub mod select;
pub mod signal;
mod signal_lock;
pub mod spawn;
pub mod termios;
pub mod time;
pub mod waker;

pub use cvt::errno_name;

/// The `libc` crate this layer is built on, for its constants and types (signal numbers,
/// error numbers). Calling its functions needs `unsafe`, which only this crate contains.
pub use libc;
