//! CPU time, for benchmarks and the tests that prove a thread does not spin; the longest
//! timeout a wait passes to the kernel.

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

use crate::cvt::cvt;

fn rusage(who: libc::c_int) -> io::Result<Duration> {
    let mut ru = MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `ru` is valid for writes of one rusage.
    cvt(unsafe { libc::getrusage(who, ru.as_mut_ptr()) })?;
    // SAFETY: getrusage succeeded and filled in `ru`.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// User plus system CPU time of the whole process so far (`getrusage(RUSAGE_SELF)`).
pub fn process_cpu_time() -> io::Result<Duration> {
    rusage(libc::RUSAGE_SELF)
}

/// The longest timeout, in seconds, that a wait (`kevent`, `select`) hands to the kernel:
/// xnu refuses one above 10^8 seconds (about three years) with `EINVAL`. A longer wait is
/// cut to this; the loop computes its timeout again when the wait returns.
pub(crate) const WAIT_SECS_MAX: u64 = 100_000_000;

/// `d`'s whole seconds, cut to [`WAIT_SECS_MAX`], as the seconds field of a `timespec` or
/// `timeval` (`time_t`, 32 or 64 bits: the cut value fits either).
pub(crate) fn wait_secs<T: From<i32>>(d: Duration) -> T {
    T::from(d.as_secs().min(WAIT_SECS_MAX) as i32)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_wait_of_any_length_is_cut_to_what_xnu_accepts() {
        assert_eq!(super::wait_secs::<i64>(Duration::MAX), 100_000_000);
        assert_eq!(super::wait_secs::<i32>(Duration::from_millis(2500)), 2);
    }
}
