//! The one place where a syscall's return value becomes an `io::Result`, and the one place
//! where `EINTR` is retried.

use std::io;

/// Return types of syscalls that signal failure with `-1`.
pub(crate) trait IsMinusOne: Copy {
    fn is_minus_one(self) -> bool;
}

macro_rules! impl_is_minus_one {
    ($($t:ty)*) => {$(
        impl IsMinusOne for $t {
            fn is_minus_one(self) -> bool {
                self == -1
            }
        }
    )*};
}
impl_is_minus_one! { i32 i64 isize }

/// Turns `-1` into the thread's `errno` as an `io::Error`.
#[inline]
pub(crate) fn cvt<T: IsMinusOne>(ret: T) -> io::Result<T> {
    if ret.is_minus_one() { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Calls `f` until it fails with something other than `EINTR`.
///
/// Only for calls that are safe to repeat unchanged: reads, writes, `fcntl`, `waitpid`,
/// `tcsetattr`. A blocking wait with a timeout must not use this (the timeout would restart);
/// the poller reports `EINTR` as "no events" instead.
#[inline]
pub(crate) fn cvt_r<T: IsMinusOne>(f: impl FnMut() -> T) -> io::Result<T> {
    match cvt_r_nb(f) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
        Err(e) => Err(e),
    }
}

// `cvt_r_nb` tests one number for "would block".
const _: () = assert!(libc::EAGAIN == libc::EWOULDBLOCK);

/// Like [`cvt_r`], but "would block" (`EAGAIN`, which is `EWOULDBLOCK` on every supported
/// system) is `Ok(None)`: the usual end of a round of reads or writes on a nonblocking fd,
/// so no `io::Error` is built and dropped for it. The one place where `EINTR` is retried.
#[inline]
pub(crate) fn cvt_r_nb<T: IsMinusOne>(mut f: impl FnMut() -> T) -> io::Result<Option<T>> {
    loop {
        let ret = f();
        if !ret.is_minus_one() {
            return Ok(Some(ret));
        }
        // Compare numbers, not kinds: decoding a kind costs a table lookup on every error.
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// [`cvt_r`] for writes (`write`, `writev`, `send`, `sendmsg`). On macOS it also absorbs two
/// transient errors of stream sockets, as libuv does there: `EPROTOTYPE` (xnu's answer to
/// a write that races the peer's close, where `EPIPE` is meant) is retried a few times,
/// after which the write meets the `EPIPE` itself; and `ENOBUFS` (the kernel out of mbufs
/// for a moment) becomes "would block", so the queue waits instead of failing. Elsewhere
/// it is [`cvt_r`].
#[inline]
pub(crate) fn cvt_write<T: IsMinusOne>(f: impl FnMut() -> T) -> io::Result<T> {
    #[cfg(target_vendor = "apple")]
    return cvt_write_transient(f);
    #[cfg(not(target_vendor = "apple"))]
    cvt_r(f)
}

/// How often [`cvt_write`] retries macOS's `EPROTOTYPE` before passing it on.
const EPROTOTYPE_RETRIES: u32 = 8;

/// [`cvt_write`]'s macOS policy. Built everywhere, so that its unit test runs on Linux.
#[cfg_attr(not(any(target_vendor = "apple", test)), allow(dead_code))]
fn cvt_write_transient<T: IsMinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    let mut retries = 0;
    loop {
        match cvt_r(&mut f) {
            Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) && retries < EPROTOTYPE_RETRIES => {
                retries += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
            other => return other,
        }
    }
}

/// This thread's `errno` slot: for code that runs in signal context and must preserve it.
#[cfg(target_os = "linux")]
pub(crate) fn errno_location() -> *mut libc::c_int {
    // SAFETY: __errno_location has no preconditions and returns this thread's errno slot.
    unsafe { libc::__errno_location() }
}
/// This thread's `errno` slot: for code that runs in signal context and must preserve it.
#[cfg(any(target_vendor = "apple", target_os = "freebsd"))]
pub(crate) fn errno_location() -> *mut libc::c_int {
    // SAFETY: __error has no preconditions and returns this thread's errno slot.
    unsafe { libc::__error() }
}

/// Runs `f` and puts `errno` back as it was: for code that signal handlers call, which must
/// not change the `errno` of the code they interrupted.
pub(crate) fn preserving_errno<T>(f: impl FnOnce() -> T) -> T {
    let errno = errno_location();
    // SAFETY: `errno` points at this thread's errno, valid for the thread's lifetime.
    let saved = unsafe { *errno };
    let res = f();
    // SAFETY: as above.
    unsafe { *errno = saved };
    res
}

/// This thread's `errno`. Async-signal-safe.
#[inline]
pub(crate) fn errno() -> i32 {
    // SAFETY: the slot is this thread's errno, valid for the thread's lifetime.
    unsafe { *errno_location() }
}

/// For the functions that return an error number instead of setting `errno`
/// (`posix_spawn`, the `pthread_*` family).
#[allow(dead_code)]
pub(crate) fn cvt_errno(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(ret)) }
}

/// The symbolic name of an error number (`"EPIPE"`), for log lines and messages.
///
/// Unknown numbers give `"E?"`.
///
/// ```
/// assert_eq!(evloop_platform::errno_name(libc::EPIPE), "EPIPE");
/// ```
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTSOCK => "ENOTSOCK",
        libc::ENOTSUP => "ENOTSUP",
        libc::ECANCELED => "ECANCELED",
        libc::ENOTCONN => "ENOTCONN",
        libc::ECONNRESET => "ECONNRESET",
        libc::EALREADY => "EALREADY",
        _ => "E?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that fails with each of `errnos` in turn, then returns 7.
    fn failing(errnos: &[i32]) -> impl FnMut() -> isize + '_ {
        let mut left = errnos.iter();
        move || match left.next() {
            Some(&e) => {
                // SAFETY: this thread's errno slot, valid for the thread's lifetime.
                unsafe { *errno_location() = e };
                -1
            }
            None => 7,
        }
    }

    #[test]
    fn macos_write_policy_retries_eprototype_and_waits_on_enobufs() {
        let eproto = [libc::EPROTOTYPE; EPROTOTYPE_RETRIES as usize];
        assert_eq!(cvt_write_transient(failing(&eproto)).unwrap(), 7);
        assert_eq!(cvt_write_transient(failing(&[libc::EINTR, libc::EPROTOTYPE, libc::EINTR])).unwrap(), 7);
        // Past the retries the error is passed on, as is any other error.
        let more = [libc::EPROTOTYPE; EPROTOTYPE_RETRIES as usize + 1];
        assert_eq!(cvt_write_transient(failing(&more)).unwrap_err().raw_os_error(), Some(libc::EPROTOTYPE));
        assert_eq!(
            cvt_write_transient(failing(&[libc::EPIPE])).unwrap_err().raw_os_error(),
            Some(libc::EPIPE)
        );
        // ENOBUFS is "would block", for the caller's queue to wait on.
        let e = cvt_write_transient(failing(&[libc::ENOBUFS])).unwrap_err();
        assert!(crate::fd::would_block(&e), "{e}");
        assert_eq!(cvt_r(failing(&[libc::EAGAIN])).unwrap_err().raw_os_error(), Some(libc::EAGAIN));
    }
}
