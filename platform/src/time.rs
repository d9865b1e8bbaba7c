//! CPU time, for benchmarks and the tests that prove a thread does not spin.

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
