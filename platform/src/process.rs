//! Child processes once they exist: waiting for them, signalling them, and Linux pidfds.
//!
//! Reaping is always by pid (`waitpid(pid, ...)`), never `waitpid(-1)`: children that other
//! code in the process spawned stay theirs to reap. ([`exited_child`] names any exited child,
//! for a caller that reaps them all by choice, and reaps none itself.) A pid that we have not reaped yet cannot
//! be reused by the kernel, so signalling an unreaped child by pid reaches that child and no
//! other process. Linux pidfds remove the last gap: they keep naming the same process even
//! after it was reaped.

use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::cvt::{cvt, cvt_r};

/// A process id.
pub type Pid = libc::pid_t;

/// How a child ended, decoded from its wait status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitStatus {
    /// It called `exit` (or returned from `main`) with this code (0..=255).
    Exited(i32),
    /// A signal ended it; `core_dumped` says whether it left a core file.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether a core dump was written.
        core_dumped: bool,
    },
}

impl WaitStatus {
    fn decode(status: libc::c_int) -> WaitStatus {
        if libc::WIFSIGNALED(status) {
            WaitStatus::Signaled { signal: libc::WTERMSIG(status), core_dumped: libc::WCOREDUMP(status) }
        } else {
            WaitStatus::Exited(libc::WEXITSTATUS(status))
        }
    }
}

/// Reaps child `pid` if it has exited: `waitpid(pid, WNOHANG)`, retrying `EINTR`.
///
/// `Ok(None)` means it is still running. `ECHILD` means it is not (or no longer) our
/// unreaped child: someone else reaped it, or `SIGCHLD` is ignored.
pub fn try_wait(pid: Pid) -> io::Result<Option<WaitStatus>> {
    reap(pid, false, None)
}

/// What a child used, as the kernel reports it when the child is reaped (`wait4`'s
/// `struct rusage`): the child's own, plus that of the descendants it waited for itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceUsage {
    /// CPU time in user mode.
    pub user: Duration,
    /// CPU time in the kernel on its behalf.
    pub system: Duration,
    /// The largest resident set, in bytes (`ru_maxrss`: kilobytes on Linux and FreeBSD,
    /// bytes on macOS).
    pub max_rss_bytes: u64,
    /// Page faults served without I/O (`ru_minflt`).
    pub minor_faults: u64,
    /// Page faults that needed I/O (`ru_majflt`).
    pub major_faults: u64,
    /// Block input operations (`ru_inblock`).
    pub blocks_in: u64,
    /// Block output operations (`ru_oublock`).
    pub blocks_out: u64,
    /// Context switches because it waited (`ru_nvcsw`).
    pub voluntary_switches: u64,
    /// Context switches because its time slice ran out or a higher priority ran (`ru_nivcsw`).
    pub involuntary_switches: u64,
}

impl ResourceUsage {
    /// User plus system CPU time.
    pub fn cpu_time(&self) -> Duration {
        self.user + self.system
    }

    /// From the `struct rusage` fields, as `long`s: the times' seconds and microseconds,
    /// then `ru_maxrss`, `ru_minflt`, `ru_majflt`, `ru_inblock`, `ru_oublock`, `ru_nvcsw` and
    /// `ru_nivcsw`. Out-of-range values count as 0, never a panic.
    fn from_fields(user: [i64; 2], system: [i64; 2], counts: [i64; 7]) -> ResourceUsage {
        let time = |[secs, micros]: [i64; 2]| match (u64::try_from(secs), u32::try_from(micros)) {
            (Ok(secs), Ok(micros)) if micros < 1_000_000 => Duration::new(secs, micros * 1_000),
            _ => Duration::ZERO,
        };
        let [max_rss, minor_faults, major_faults, blocks_in, blocks_out, voluntary, involuntary] =
            counts.map(|n| u64::try_from(n).unwrap_or(0));
        // (macOS counts in bytes; the others in kilobytes.)
        let rss_unit = if cfg!(target_vendor = "apple") { 1 } else { 1024 };
        ResourceUsage {
            user: time(user),
            system: time(system),
            max_rss_bytes: max_rss.saturating_mul(rss_unit),
            minor_faults,
            major_faults,
            blocks_in,
            blocks_out,
            voluntary_switches: voluntary,
            involuntary_switches: involuntary,
        }
    }
}

/// Reaps child `pid`: `waitpid(pid)`, retrying `EINTR`, waiting for its exit if `block`,
/// else `Ok(None)` while it runs (`WNOHANG`). With `usage`, `wait4` fills that in with what
/// the child used.
///
/// `ECHILD` means it is not (or no longer) our unreaped child.
#[inline]
pub fn reap(pid: Pid, block: bool, usage: Option<&mut ResourceUsage>) -> io::Result<Option<WaitStatus>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    if let Some(usage) = usage {
        return reap_with_usage(pid, flags, usage);
    }
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is valid for writes of one int for the whole call.
    let got = cvt_r(|| unsafe { libc::waitpid(pid, &mut status, flags) })?;
    Ok((got != 0).then(|| WaitStatus::decode(status)))
}

/// `reap` with the child's `usage` (`wait4`).
///
/// On Linux through the system call itself, whose `struct rusage` is the kernel's (`long`s,
/// and `timeval`s of `long`s) whatever the C library's is: 32-bit musl's `wait4` (with its
/// 64-bit `time_t`) returned the child's status and left the figures zeroed.
#[inline(never)]
fn reap_with_usage(
    pid: Pid,
    flags: libc::c_int,
    usage: &mut ResourceUsage,
) -> io::Result<Option<WaitStatus>> {
    let mut status: libc::c_int = 0;
    #[cfg(target_os = "linux")]
    {
        let mut ru: [libc::c_long; 18] = [0; 18];
        // SAFETY: `status` is valid for writes of one int, and `ru` of the kernel's struct
        // rusage (two timevals of two longs, then fourteen longs), for the whole call.
        let got =
            cvt_r(|| unsafe { libc::syscall(libc::SYS_wait4, pid, &mut status, flags, ru.as_mut_ptr()) })?;
        if got == 0 {
            return Ok(None);
        }
        let ru = ru.map(i64::from);
        *usage = ResourceUsage::from_fields(
            [ru[0], ru[1]],
            [ru[2], ru[3]],
            [ru[4], ru[8], ru[9], ru[11], ru[12], ru[16], ru[17]],
        );
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: `status` is valid for writes of one int, and `ru` of one rusage, for the
        // whole call.
        let got = cvt_r(|| unsafe { libc::wait4(pid, &mut status, flags, ru.as_mut_ptr()) })?;
        if got == 0 {
            return Ok(None);
        }
        // SAFETY: wait4 reaped the child, and so filled in `ru`.
        let ru = unsafe { ru.assume_init_ref() };
        // (Their types differ between systems.)
        fn wide(n: impl TryInto<i64>) -> i64 {
            n.try_into().unwrap_or(-1)
        }
        let time = |t: libc::timeval| [wide(t.tv_sec), wide(t.tv_usec)];
        let counts = [
            ru.ru_maxrss,
            ru.ru_minflt,
            ru.ru_majflt,
            ru.ru_inblock,
            ru.ru_oublock,
            ru.ru_nvcsw,
            ru.ru_nivcsw,
        ];
        *usage = ResourceUsage::from_fields(time(ru.ru_utime), time(ru.ru_stime), counts.map(wide));
    }
    Ok(Some(WaitStatus::decode(status)))
}

/// Whether child `pid`, this process's and unreaped, has exited, without reaping it:
/// `waitid(P_PID, pid, WEXITED | WNOHANG | WNOWAIT)`, retrying `EINTR`. `ECHILD` means it is
/// not (or no longer) our unreaped child.
pub fn has_exited(pid: Pid) -> io::Result<bool> {
    // SAFETY: all-zero is a valid siginfo_t; zeroed, as nothing to report may leave it
    // untouched (macOS).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is valid for writes of one siginfo_t for the whole call; `pid` is a
    // plain number (the caller's unreaped child, so it names no other process).
    cvt_r(|| unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) })?;
    // Only an exit: a stopped child reported here (macOS has been seen to) is no zombie.
    let exited = matches!(info.si_code, libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED);
    Ok(info.si_signo != 0 && exited)
}

/// A child of this process that has exited and waits to be reaped, left unreaped:
/// `waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`, retrying `EINTR`. `None` when there is none
/// (no child at all included). Which one comes first, of several, is the kernel's choice;
/// the caller reaps it by pid, and asks again.
pub fn exited_child() -> io::Result<Option<Pid>> {
    // SAFETY: all-zero is a valid siginfo_t; zeroed, as nothing to report may leave it
    // untouched (macOS).
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is valid for writes of one siginfo_t for the whole call.
    match cvt_r(|| unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) }) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => return Ok(None),
        Err(e) => return Err(e),
    }
    // Only an exit: a stopped child reported here (macOS has been seen to) is no zombie.
    let exited = matches!(info.si_code, libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED);
    if info.si_signo == 0 || !exited {
        return Ok(None);
    }
    // SAFETY: waitid filled `info` in for a child, in the SIGCHLD layout, which has si_pid.
    let pid = unsafe { info.si_pid() };
    Ok((pid > 0).then_some(pid))
}

/// Makes this process a subreaper: orphans among its descendants (a daemon's double fork,
/// a child's children once it exits) become its children instead of `init`'s, for it to
/// reap. Linux (`PR_SET_CHILD_SUBREAPER`) and FreeBSD (`PROC_REAP_ACQUIRE`); macOS has no
/// such thing, which is `Unsupported`.
pub fn become_subreaper() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument and no pointers.
        cvt(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) })?;
        Ok(())
    }
    #[cfg(target_os = "freebsd")]
    {
        // SAFETY: getpid takes no arguments; PROC_REAP_ACQUIRE takes a null data pointer.
        let rc = unsafe {
            libc::procctl(
                libc::P_PID,
                libc::getpid() as libc::id_t,
                libc::PROC_REAP_ACQUIRE,
                std::ptr::null_mut(),
            )
        };
        match cvt(rc) {
            // Already one.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            r => r.map(drop),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this system has no subreapers: orphans go to its init (launchd on macOS)",
        ))
    }
}

/// A living child stopped or continued (job control).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunChange {
    /// A signal stopped it (`SIGSTOP`, `SIGTSTP`, `SIGTTIN`, `SIGTTOU`).
    Stopped(i32),
    /// `SIGCONT` resumed it.
    Continued,
}

/// Whether child `pid` stopped or continued since this was last asked:
/// `waitid(P_PID, pid, WSTOPPED | WCONTINUED | WNOHANG)`, retrying `EINTR`.
///
/// Never reaps: without `WEXITED` an exited child stays for [`try_wait`]. Each change is
/// reported once, and the kernel keeps only the latest: a stop and then a continue since
/// the last call are reported as the continue.
pub fn try_wait_run_change(pid: Pid) -> io::Result<Option<RunChange>> {
    // SAFETY: all-zero is a valid siginfo_t; zeroing matters, as macOS may leave it untouched
    // when nothing is to be reported.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WSTOPPED | libc::WCONTINUED | libc::WNOHANG;
    // SAFETY: `info` is valid for writes of one siginfo_t for the whole call.
    cvt_r(|| unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) })?;
    // Nothing to report leaves it zeroed (Linux writes a zero si_signo). si_signo rather than
    // si_pid: xnu fills a continued child's si_pid with whoever sent the SIGCONT.
    if info.si_signo == 0 {
        return Ok(None);
    }
    // SAFETY: waitid filled `info` in for a child, in the SIGCHLD layout, which has si_status.
    let status = unsafe { info.si_status() };
    Ok(match info.si_code {
        libc::CLD_STOPPED | libc::CLD_TRAPPED => Some(RunChange::Stopped(status)),
        libc::CLD_CONTINUED => Some(RunChange::Continued),
        _ => None,
    })
}

/// Waits for child `pid` to exit and reaps it: `waitpid(pid, 0)`, retrying `EINTR`.
///
/// Blocks until the child exits. Callers use it only where the child is known to be exiting
/// (killed with `SIGKILL`, or reported by the kernel as gone).
pub fn wait(pid: Pid) -> io::Result<WaitStatus> {
    // (A blocking wait returns only with a status or an error.)
    reap(pid, true, None)?.ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD))
}

/// Sends `signal` to process `pid` (`kill(2)`; 0 only checks that it exists).
pub fn kill(pid: Pid, signal: i32) -> io::Result<()> {
    if pid <= 0 {
        // kill(0) and kill(-n) signal whole groups: never by accident.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill takes no pointers.
    cvt(unsafe { libc::kill(pid, signal) })?;
    Ok(())
}

/// Sends `signal` to every process in process group `pgid` (`kill(-pgid, signal)`).
pub fn kill_group(pgid: Pid, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        // 0 is our own group and -1 is "every process we may signal": never by accident.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: kill takes no pointers.
    cvt(unsafe { libc::kill(-pgid, signal) })?;
    Ok(())
}

/// This process's process group id.
pub fn process_group() -> Pid {
    // SAFETY: getpgrp takes no arguments and cannot fail.
    unsafe { libc::getpgrp() }
}

/// Whether the calling thread is the process's main thread, the one whose return from
/// `main` (or whose panic out of it) ends the process.
pub fn is_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and getpid take no arguments and cannot fail. (The raw syscall:
        // older C libraries have no gettid wrapper.)
        unsafe { libc::syscall(libc::SYS_gettid) == libc::c_long::from(libc::getpid()) }
    }
    #[cfg(any(target_os = "macos", target_os = "freebsd"))]
    {
        // SAFETY: pthread_main_np takes no arguments and cannot fail.
        unsafe { libc::pthread_main_np() == 1 }
    }
}

/// The process group of process `pid` (`getpgid`): a child that exited keeps its group
/// until it is reaped.
pub fn group_of(pid: Pid) -> io::Result<Pid> {
    // SAFETY: getpgid takes no pointers.
    cvt(unsafe { libc::getpgid(pid) })
}

/// Whether every process left in group `pgid` has exited (a zombie its parent has not
/// reaped yet), as `/proc` tells: `Some(true)` when no member is alive and at least one is
/// there, `Some(false)` when one is alive or none is there, `None` where `/proc` cannot
/// tell: not Linux, not mounted, a `/proc` of another pid namespace, or a process whose
/// status it would not show (another user's, under `hidepid=1`). `kill(-pgid, 0)` succeeds
/// for a group of zombies, so this is what tells an ended group whose orphans an `init` is
/// slow to reap. A process whose main thread ended while others run shows as a zombie
/// with threads left, and counts as alive. Under `hidepid=2` the processes of other users
/// are not listed at all: a member that switched to another user goes unseen.
///
/// It reads the status of every process the `/proc` mount shows (some hundreds of small
/// reads on a busy machine): a check to make now and then, not in a tight loop.
///
/// ```
/// // This process is alive, so its group has a live member.
/// let own = evloop_platform::process::process_group();
/// assert_ne!(evloop_platform::process::group_exited(own), Some(true));
/// ```
pub fn group_exited(pgid: Pid) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        // A /proc of another pid namespace names other processes by these numbers.
        // SAFETY: getpid takes no arguments and cannot fail.
        let own = unsafe { libc::getpid() };
        let shown = std::fs::read_link("/proc/self").ok()?;
        if shown.to_str()?.parse::<Pid>().ok()? != own {
            return None;
        }
        let mut seen = false;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<Pid>().ok()) else { continue };
            let stat = match std::fs::read(format!("/proc/{pid}/stat")) {
                Ok(stat) => stat,
                // Gone meanwhile (reaped): not a member any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
                    continue;
                }
                Err(_) => return None,
            };
            let (group, state, threads) = stat_group_state_threads(&stat)?;
            if group != pgid {
                continue;
            }
            if !(matches!(state, b'Z' | b'X') && threads <= 1) {
                return Some(false);
            }
            seen = true;
        }
        Some(seen)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pgid;
        None
    }
}

/// The process group, state letter and thread count in the text of `/proc/PID/stat`:
/// `PID (COMM) STATE PPID PGRP ...`, the thread count 18th after the name, which may hold
/// spaces and parentheses, so the fields are counted from its last `)`.
#[cfg(target_os = "linux")]
fn stat_group_state_threads(stat: &[u8]) -> Option<(Pid, u8, u64)> {
    let after = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let mut fields = after.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let group = std::str::from_utf8(fields.nth(1)?).ok()?.parse().ok()?;
    let threads = std::str::from_utf8(fields.nth(14)?).ok()?.trim().parse().ok()?;
    Some((group, state, threads))
}

/// Opens a pidfd for `pid` (`pidfd_open(2)`, Linux 5.3). The fd is close-on-exec, turns
/// readable when the process exits, and keeps naming that process after it is reaped.
///
/// `ENOSYS` on older kernels (and under seccomp filters that refuse the call).
#[cfg(target_os = "linux")]
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) })?;
    // SAFETY: the call returned a fresh fd that nothing else owns.
    crate::fd::settle(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `PIDFD_SIGNAL_PROCESS_GROUP` (Linux 6.9): signal the process group the pidfd's process
/// leads.
#[cfg(target_os = "linux")]
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// Sends `signal` through a pidfd (`pidfd_send_signal(2)`, Linux 5.1): to the process, or
/// with `group` to the process group it leads (Linux 6.9; older kernels give `EINVAL`).
///
/// A pidfd names one process for its whole life, so this cannot reach a process that reused
/// the number. Once the process (or, with `group`, every member of the group) is gone, the
/// call fails with `ESRCH`.
#[cfg(target_os = "linux")]
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32, group: bool) -> io::Result<()> {
    let flags = if group { PIDFD_SIGNAL_PROCESS_GROUP } else { 0 };
    let info: *const libc::siginfo_t = std::ptr::null();
    // SAFETY: the pidfd is borrowed, so it stays open; a null siginfo asks the kernel to
    // fill one in as kill(2) would.
    cvt(unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, info, flags) })?;
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_group_state_and_threads_are_counted_from_the_last_parenthesis() {
        // session, tty, tpgid, flags, four fault counts, four times, priority and nice (14),
        // then the thread count.
        let fields = " 0 0 0 0 0 0 0 0 0 0 0 0 0 0 2 0 0\n";
        let stat = format!("42 (a) b) c) Z 1 77{fields}");
        assert_eq!(super::stat_group_state_threads(stat.as_bytes()), Some((77, b'Z', 2)));
        let stat = format!("9 (sleep) S 1 9{fields}");
        assert_eq!(super::stat_group_state_threads(stat.as_bytes()), Some((9, b'S', 2)));
        assert_eq!(super::stat_group_state_threads(b"9 (sleep) S 1 9 9 0 -1"), None);
        assert_eq!(super::stat_group_state_threads(b"no parenthesis"), None);
        // This process's own, as the kernel writes it.
        let own = std::fs::read("/proc/self/stat").unwrap();
        let (group, state, threads) = super::stat_group_state_threads(&own).unwrap();
        assert_eq!(group, super::process_group());
        assert!(matches!(state, b'R' | b'S'), "{}", state as char);
        assert!(threads >= 1);
    }

    #[test]
    fn a_group_with_a_live_member_has_not_exited() {
        let own = super::process_group();
        assert_eq!(super::group_exited(own), Some(false));
        // A group nobody is in: no pid reaches the largest number.
        assert_eq!(super::group_exited(i32::MAX), Some(false));
    }
}
