//! File descriptors: pipes, `O_NONBLOCK`, capped reads and writes, `writev`, file types.
//!
//! Every fd this module creates is close-on-exec. Reads and writes retry `EINTR` (through
//! `cvt_r`) and report `EAGAIN` as [`io::ErrorKind::WouldBlock`].

use std::ffi::CStr;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use crate::cvt::{cvt, cvt_r, cvt_r_nb, cvt_write};
use crate::signal_lock::SignalLock;

/// The most bytes one `read` or `write` call asks for.
///
/// macOS rejects counts above `INT_MAX` with `EINVAL` (rust-lang/rust#38590); other systems
/// accept up to `SSIZE_MAX`. Callers cap much lower; this is the last line of defence.
#[cfg(target_vendor = "apple")]
pub const IO_BYTES_LIMIT: usize = libc::c_int::MAX as usize;
/// The most bytes one `read` or `write` call asks for (`SSIZE_MAX` here).
#[cfg(not(target_vendor = "apple"))]
pub const IO_BYTES_LIMIT: usize = isize::MAX as usize;

/// The most buffers one `writev` call passes (`IOV_MAX`: 1024 on Linux, macOS and FreeBSD).
pub const IOV_MAX: usize = 1024;

/// Creates a pipe: `(read end, write end)`, both close-on-exec and blocking.
///
/// Uses `pipe2(O_CLOEXEC)` where it exists. macOS has no `pipe2`: there the flag is set with
/// `fcntl` right after `pipe`, and a `fork` on another thread in between can leak the two fds
/// into that child (rust-lang/rust#95584). The loop itself is single-threaded, so only
/// another thread of the program that forks (evloop's fork path included, from another
/// loop) can hit that window.
#[inline]
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    #[cfg(not(target_vendor = "apple"))]
    {
        // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 requires.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    }
    #[cfg(target_vendor = "apple")]
    {
        // SAFETY: `fds` is a valid, writable array of two ints, as pipe requires.
        cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
    }
    // SAFETY: the call succeeded, so both numbers are fresh fds that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    #[cfg(target_vendor = "apple")]
    {
        set_cloexec(std::os::fd::AsFd::as_fd(&r))?;
        set_cloexec(std::os::fd::AsFd::as_fd(&w))?;
    }
    if fds[0].min(fds[1]) < own_fd_min() {
        return Ok((settle(r)?, settle(w)?));
    }
    Ok((r, w))
}

/// Sets `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is borrowed, so it is open for the duration of the call; F_GETFD takes no
    // pointer argument.
    let flags = cvt_r(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) })?;
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: as above; F_SETFD takes an int argument.
        cvt_r(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    }
    Ok(())
}

/// The access mode and `O_NONBLOCK` state of an open file description (`F_GETFL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusFlags {
    /// Opened for reading (`O_RDONLY` or `O_RDWR`).
    pub readable: bool,
    /// Opened for writing (`O_WRONLY` or `O_RDWR`).
    pub writable: bool,
    /// `O_NONBLOCK` is set on the open file description.
    pub nonblocking: bool,
    /// Linux's `O_PATH`: the fd only names a file, and can be neither read nor written.
    pub path_only: bool,
}

/// Reads the status flags of `fd`'s open file description.
///
/// An fd that is not open gives `EBADF`.
pub fn status_flags(fd: BorrowedFd<'_>) -> io::Result<StatusFlags> {
    let fl = getfl(fd)?;
    let acc = fl & libc::O_ACCMODE;
    Ok(StatusFlags {
        readable: acc == libc::O_RDONLY || acc == libc::O_RDWR,
        writable: acc == libc::O_WRONLY || acc == libc::O_RDWR,
        nonblocking: fl & libc::O_NONBLOCK != 0,
        #[cfg(any(target_os = "linux", target_os = "android"))]
        path_only: fl & libc::O_PATH != 0,
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        path_only: false,
    })
}

/// `fcntl(F_GETFL)`: the description's status flags and access mode (async-signal-safe).
fn getfl(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: `fd` is borrowed; F_GETFL takes no pointer argument.
    cvt_r(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// `fstat(fd)`.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is valid for writes of one `stat`; `fd` is borrowed.
    cvt_r(|| unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled in the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// `stat(path)`.
#[cfg_attr(target_os = "linux", allow(dead_code))] // Only terminal_id uses it, off Linux.
pub(crate) fn stat_path(path: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `path` is a NUL-terminated string; `st` is valid for writes of one `stat`.
    cvt_r(|| unsafe { libc::stat(path.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: stat succeeded, so it filled in the whole struct.
    Ok(unsafe { st.assume_init() })
}

/// Sets or clears `O_NONBLOCK` and returns the previous state.
///
/// The flag lives on the open file description: every fd and every process sharing that
/// description sees the change. Does no `F_SETFL` when the flag already has the asked value.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<bool> {
    let fl = getfl(fd)?;
    let was = fl & libc::O_NONBLOCK != 0;
    if was != on {
        let new = if on { fl | libc::O_NONBLOCK } else { fl & !libc::O_NONBLOCK };
        // SAFETY: `fd` is borrowed; F_SETFL takes an int argument.
        cvt_r(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) })?;
    }
    Ok(was)
}

/// Sets `O_NONBLOCK` on `fd`, an end of a pipe fresh from [`pipe`], which nothing else has
/// seen: its other status flags are known to be clear, so one `F_SETFL` does it, where
/// [`set_nonblocking`] reads them first.
pub fn set_fresh_pipe_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is borrowed; F_SETFL takes an int argument.
    cvt_r(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) }).map(drop)
}

// ----- O_NONBLOCK on shared descriptions -----------------------------------------------------

/// How many shared descriptions [`set_shared_nonblocking`] registers for
/// [`restore_shared_blocking`]; more still work, and are restored at release only.
pub const SHARED_NONBLOCKING_MAX: usize = 32;

/// The registry: a duplicate of each registered description's fd, or -1. Kept as duplicates,
/// so that a restore never reaches an fd number that was closed and reused meanwhile; each
/// is closed (under the lock) when its registration ends.
static SHARED_FDS: [AtomicI32; SHARED_NONBLOCKING_MAX] =
    [const { AtomicI32::new(-1) }; SHARED_NONBLOCKING_MAX];
/// How many [`SharedNonblocking`]s hold each registration: the one that set the flag, and
/// each [`join_shared_nonblocking`] that matched it. Changed under the lock.
static SHARED_HOLDERS: [AtomicU32; SHARED_NONBLOCKING_MAX] =
    [const { AtomicU32::new(0) }; SHARED_NONBLOCKING_MAX];
/// Each registration's `description_key` (device, inode, access mode), stored with it so
/// that a join compares without system calls under the lock.
static SHARED_DEV: [AtomicU64; SHARED_NONBLOCKING_MAX] =
    [const { AtomicU64::new(0) }; SHARED_NONBLOCKING_MAX];
static SHARED_INO: [AtomicU64; SHARED_NONBLOCKING_MAX] =
    [const { AtomicU64::new(0) }; SHARED_NONBLOCKING_MAX];
static SHARED_MODE: [AtomicI32; SHARED_NONBLOCKING_MAX] =
    [const { AtomicI32::new(0) }; SHARED_NONBLOCKING_MAX];
const _: () = assert!(SHARED_NONBLOCKING_MAX <= 32, "a holder's slots are a 32-bit mask");
/// Held while the registry changes or is restored. Writers spin; [`restore_shared_blocking`]
/// tries once and fails with `EBUSY` rather than wait.
static SHARED_LOCK: SignalLock = SignalLock::new();
/// The descriptions set nonblocking while the registry was full, with their holders: no
/// signal handler restores them, but the last holder does, not the first (which cleared the
/// flag under the handles still on the description, and their next write blocked).
/// Changed under `SHARED_LOCK`, as the registry is; never touched from a signal handler.
static OVERFLOW: std::sync::Mutex<Vec<(DescriptionKey, u32)>> = std::sync::Mutex::new(Vec::new());

/// `OVERFLOW`, whatever a panic elsewhere left (the list stays consistent).
fn overflow() -> std::sync::MutexGuard<'static, Vec<(DescriptionKey, u32)>> {
    OVERFLOW.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds a holder to the overflow entry `key` (a new one with `new`); whether there was one.
fn overflow_hold(key: DescriptionKey, new: bool) -> bool {
    let mut list = overflow();
    if let Some(entry) = list.iter_mut().find(|(k, _)| *k == key) {
        entry.1 += 1;
        return true;
    }
    if new {
        list.push((key, 1));
    }
    new
}

/// Gives up a holder of the overflow entry `key`; whether it was the last.
fn overflow_release(key: DescriptionKey) -> bool {
    let mut list = overflow();
    let Some(at) = list.iter().position(|(k, _)| *k == key) else { return false };
    list[at].1 -= 1;
    if list[at].1 > 0 {
        return false;
    }
    list.swap_remove(at);
    true
}

/// The process the registry belongs to (0 before the first registration). A child forked
/// without exec inherits a copy of the statics, the duplicates and maybe a held lock: it
/// must neither restore its parent's descriptions (at its `exit`, say) nor wait for a lock
/// whose holder did not come along, so everything here checks it first. (A descendant that
/// gets its ancestor's pid back, after the pid space wrapped or in a new pid namespace, would
/// pass the check; that needs two forks without exec and a reused pid, and is left alone.)
static SHARED_PID: AtomicI32 = AtomicI32::new(0);

/// Whether the registry is this process's own, claiming it if nobody has yet (`claim`);
/// without `claim`, an unclaimed registry is nobody's (and empty).
fn registry_is_ours(claim: bool) -> bool {
    // SAFETY: getpid has no preconditions and cannot fail; it is async-signal-safe.
    let me = unsafe { libc::getpid() };
    if !claim {
        return SHARED_PID.load(Ordering::Relaxed) == me;
    }
    match SHARED_PID.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => true,
        Err(owner) => owner == me,
    }
}

/// `O_NONBLOCK` that [`set_shared_nonblocking`] set on an open file description other
/// processes may share (an inherited stdin, say). [`restore`](SharedNonblocking::restore)
/// clears it again, once no other holder ([`join_shared_nonblocking`]) relies on it; until
/// then [`restore_shared_blocking`] can clear it from a signal handler or at `exit`.
/// Dropping it without `restore` only gives up this hold on the registration.
#[derive(Debug)]
pub struct SharedNonblocking {
    /// The registry slots held, one bit each: the registration made, or every one a join
    /// matched. Empty when the registry was full (or is a parent's).
    slots: u32,
    /// The `OVERFLOW` entry held, for a description set while the registry was full.
    overflow: Option<DescriptionKey>,
}

/// Sets `O_NONBLOCK` on `fd`'s open file description, which was blocking and may be shared,
/// and registers it (through a close-on-exec duplicate of `fd`) for
/// [`restore_shared_blocking`]. The first registration also makes `exit` restore what is
/// still registered then (`atexit`), for a program that exits with handles open.
///
/// With [`SHARED_NONBLOCKING_MAX`] descriptions registered already, or in a child forked
/// from the process that made the first registration (the registry is the parent's), the
/// flag is still set, and only [`SharedNonblocking::restore`] clears it.
///
/// The description is registered before the flag is set, so a signal in between finds it
/// (and clears a flag not yet set: harmless).
pub fn set_shared_nonblocking(fd: BorrowedFd<'_>) -> io::Result<SharedNonblocking> {
    let claim = if registry_is_ours(true) {
        restore_at_exit_once();
        let (key, mut dup) = (description_key(fd)?, Some(dup_cloexec(fd, 0)?));
        let claim = {
            let _guard = SHARED_LOCK.lock();
            register_locked(&mut dup, key)
        };
        drop(dup);
        claim
    } else {
        SharedNonblocking { slots: 0, overflow: None }
    };
    // On failure the claim drops, which ends the registration.
    set_nonblocking(fd, true)?;
    Ok(claim)
}

/// What a handle that relies on `O_NONBLOCK` calls on a description that others may share
/// (other processes, other handles): if it is blocking, sets the flag and registers it, as
/// [`set_shared_nonblocking`]; if it is nonblocking already, joins the registrations that
/// may have set it, as [`join_shared_nonblocking`] (`None` when none did: the flag is
/// someone else's). The look and what follows happen under the registry's lock, so two
/// threads opening one description cannot both register it, nor can one join a
/// registration that the other is restoring.
pub fn hold_shared_nonblocking(fd: BorrowedFd<'_>) -> io::Result<Option<SharedNonblocking>> {
    if !registry_is_ours(true) {
        // A forked child's handle: no registry here (it is the parent's).
        return if status_flags(fd)?.nonblocking { Ok(None) } else { set_shared_nonblocking(fd).map(Some) };
    }
    restore_at_exit_once();
    let key = description_key(fd)?;
    // A registration needs a duplicate, made outside the lock; a description that is
    // nonblocking already (a socket its program made so) needs none, and must not fail
    // for want of a free fd number (a server's last accepted connection).
    let mut dup = None;
    loop {
        let held = {
            let _guard = SHARED_LOCK.lock();
            let nonblocking = status_flags(fd)?.nonblocking;
            match dup.is_some() || nonblocking {
                true => Some(hold_locked(fd, key, &mut dup, nonblocking)),
                false => None,
            }
        };
        match held {
            // An unused duplicate is closed outside the lock.
            Some(held) => {
                drop(dup);
                return held;
            }
            None => dup = Some(dup_cloexec(fd, 0)?),
        }
    }
}

/// [`hold_shared_nonblocking`] with the lock held, for a description whose `O_NONBLOCK` the
/// caller read under it. It drops no `SharedNonblocking`: that would take the lock again.
fn hold_locked(
    fd: BorrowedFd<'_>,
    key: DescriptionKey,
    dup: &mut Option<OwnedFd>,
    nonblocking: bool,
) -> io::Result<Option<SharedNonblocking>> {
    if nonblocking {
        return Ok(join_locked(key));
    }
    let mut claim = register_locked(dup, key);
    if let Err(e) = set_nonblocking(fd, true) {
        for slot in slots_of(std::mem::take(&mut claim.slots)) {
            let _ = release(slot, false);
        }
        if let Some(key) = claim.overflow.take() {
            overflow_release(key);
        }
        return Err(e);
    }
    Ok(Some(claim))
}

/// The first registration makes `exit` restore what is still registered then.
fn restore_at_exit_once() {
    static AT_EXIT: std::sync::Once = std::sync::Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: `restore_at_exit` is an `extern "C" fn()` that never unwinds; atexit only
        // stores the pointer. Its failure (no room) leaves exit without the restore, which is
        // all it can cost.
        let _ = unsafe { libc::atexit(restore_at_exit) };
    });
}

/// Takes `dup` into a free slot of the registry (which is this process's; the lock is
/// held), or leaves it when there is none.
fn register_locked(dup: &mut Option<OwnedFd>, (dev, ino, mode): DescriptionKey) -> SharedNonblocking {
    let Some(slot) = SHARED_FDS.iter().position(|s| s.load(Ordering::Relaxed) < 0) else {
        overflow_hold((dev, ino, mode), true);
        return SharedNonblocking { slots: 0, overflow: Some((dev, ino, mode)) };
    };
    let Some(dup) = dup.take() else { return SharedNonblocking { slots: 0, overflow: None } };
    SHARED_FDS[slot].store(std::os::fd::IntoRawFd::into_raw_fd(dup), Ordering::Relaxed);
    SHARED_HOLDERS[slot].store(1, Ordering::Relaxed);
    SHARED_DEV[slot].store(dev, Ordering::Relaxed);
    SHARED_INO[slot].store(ino, Ordering::Relaxed);
    SHARED_MODE[slot].store(mode, Ordering::Relaxed);
    SharedNonblocking { slots: 1 << slot, overflow: None }
}

type DescriptionKey = (u64, u64, libc::c_int);

/// What names a description well enough to find its registration: the file (device and
/// inode) and the access mode. Two fds that share a description agree on all three. So do
/// some that do not: two opens of one FIFO or of `/dev/tty`, every pty master. A join
/// therefore holds every registration that matches, which can only make a restore late,
/// never early.
fn description_key(fd: BorrowedFd<'_>) -> io::Result<DescriptionKey> {
    let (st, fl) = (fstat(fd)?, getfl(fd)?);
    #[allow(clippy::unnecessary_cast)] // the widths differ by platform
    Ok((st.st_dev as u64, st.st_ino as u64, fl & libc::O_ACCMODE))
}

/// Whether `a` and `b` may be one open file description: the same file, open for the same
/// access (see `description_key`: two opens of one FIFO, or every pty master, agree as well).
/// `false` when either cannot be looked at.
pub fn may_share_description(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    matches!((description_key(a), description_key(b)), (Ok(x), Ok(y)) if x == y)
}

/// For an fd whose description is nonblocking already: if that may be because of a
/// registration of ours (another handle set it), holds that registration too, so the flag
/// stays until both let go. `None` when no registration matches (someone else set the flag:
/// it is theirs and stays).
///
/// Matching goes by file and access mode (see `description_key`), so a join may hold a
/// registration of another description of the same file as well: it holds every match.
pub fn join_shared_nonblocking(fd: BorrowedFd<'_>) -> io::Result<Option<SharedNonblocking>> {
    if !registry_is_ours(false) {
        return Ok(None);
    }
    let key = description_key(fd)?;
    let _guard = SHARED_LOCK.lock();
    Ok(join_locked(key))
}

/// [`join_shared_nonblocking`] with the lock held.
fn join_locked((dev, ino, mode): DescriptionKey) -> Option<SharedNonblocking> {
    let overflow = overflow_hold((dev, ino, mode), false).then_some((dev, ino, mode));
    let mut slots = 0;
    for slot in 0..SHARED_NONBLOCKING_MAX {
        let matches = SHARED_FDS[slot].load(Ordering::Relaxed) >= 0
            && SHARED_DEV[slot].load(Ordering::Relaxed) == dev
            && SHARED_INO[slot].load(Ordering::Relaxed) == ino
            && SHARED_MODE[slot].load(Ordering::Relaxed) == mode;
        if matches {
            SHARED_HOLDERS[slot].fetch_add(1, Ordering::Relaxed);
            slots |= 1 << slot;
        }
    }
    (slots != 0 || overflow.is_some()).then_some(SharedNonblocking { slots, overflow })
}

/// The slot numbers in a holder's mask.
fn slots_of(mask: u32) -> impl Iterator<Item = usize> {
    (0..SHARED_NONBLOCKING_MAX).filter(move |&slot| mask & (1 << slot) != 0)
}

/// Gives up one hold on registration `slot` (the lock is held). The last one out closes the
/// duplicate, first clearing `O_NONBLOCK` through it when `restore`; `Ok(false)` when other
/// holders remain (or the duplicate is gone), so nothing was restored.
fn release(slot: usize, restore: bool) -> io::Result<bool> {
    if SHARED_HOLDERS[slot].fetch_sub(1, Ordering::Relaxed) > 1 {
        return Ok(false);
    }
    let raw = SHARED_FDS[slot].swap(-1, Ordering::Relaxed);
    if raw < 0 {
        return Ok(false);
    }
    // SAFETY: `raw` is the duplicate `register` stored in this slot; the last holder takes it
    // out, under the lock, so no restore uses it after this close.
    let dup = unsafe { OwnedFd::from_raw_fd(raw) };
    if restore {
        set_nonblocking(std::os::fd::AsFd::as_fd(&dup), false)?;
    }
    Ok(true)
}

impl SharedNonblocking {
    /// Gives up this hold and, for each registration it was the last to hold, clears
    /// `O_NONBLOCK` again. That goes through the registry's duplicate, which reaches the
    /// right description even if `fd` (the fd it was set through) was closed behind the
    /// caller's back; without a registration (the registry was full), through `fd`, once
    /// no other holder of the description is left.
    pub fn restore(mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let (slots, overflow) = (std::mem::take(&mut self.slots), self.overflow.take());
        if slots == 0 && overflow.is_none() {
            return set_nonblocking(fd, false).map(drop);
        }
        if !registry_is_ours(false) {
            // A child forked without exec, letting go of its copy of the parent's stream:
            // the description is the parent's, and the parent's loop still uses it.
            return Ok(());
        }
        let _guard = SHARED_LOCK.lock();
        let mut res = Ok(());
        // Set while the registry was full: cleared through `fd`, by the last holder only.
        if let Some(key) = overflow {
            if overflow_release(key) {
                res = set_nonblocking(fd, false).map(drop);
            }
        }
        for slot in slots_of(slots) {
            if let Err(e) = release(slot, true) {
                res = Err(e);
            }
        }
        res
    }
}

impl Drop for SharedNonblocking {
    fn drop(&mut self) {
        // In a forked child the slot (and its duplicate) are the parent's.
        if (self.slots == 0 && self.overflow.is_none()) || !registry_is_ours(false) {
            return;
        }
        let _guard = SHARED_LOCK.lock();
        if let Some(key) = self.overflow.take() {
            overflow_release(key);
        }
        for slot in slots_of(self.slots) {
            let _ = release(slot, false);
        }
    }
}

/// Clears `O_NONBLOCK` on every description [`set_shared_nonblocking`] registered and that is
/// still registered: for a program about to end without closing its handles (a signal
/// handler, `exit`). Live handles on those descriptions would then block, so this is for the
/// end only.
///
/// Async-signal-safe (`getpid` and `fcntl` only), and preserves `errno`. Fails with `EBUSY`,
/// rather than wait, when the registry is being changed at that moment (by the interrupted
/// code or another thread); a handler must not retry in a loop, since on its own thread the
/// holder cannot go on. In a child forked without exec it does nothing: the registry is the
/// parent's.
pub fn restore_shared_blocking() -> io::Result<()> {
    crate::cvt::preserving_errno(|| {
        if !registry_is_ours(false) {
            return Ok(());
        }
        let Some(_guard) = SHARED_LOCK.try_lock() else {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        };
        let mut res = Ok(());
        for slot in &SHARED_FDS {
            let raw = slot.load(Ordering::Relaxed);
            if raw < 0 {
                continue;
            }
            // SAFETY: `raw` is a registry duplicate, closed only under the lock we hold.
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            if let Err(e) = set_nonblocking(fd, false) {
                res = Err(e);
            }
        }
        res
    })
}

extern "C" fn restore_at_exit() {
    let _ = restore_shared_blocking();
}

/// Whether `e` says "try again later" (`EAGAIN`/`EWOULDBLOCK`): by number, which is cheaper
/// than decoding its kind, as nonblocking I/O asks this after nearly every drained fd.
#[inline]
pub fn would_block(e: &io::Error) -> bool {
    match e.raw_os_error() {
        Some(n) => n == libc::EAGAIN || n == libc::EWOULDBLOCK,
        None => e.kind() == io::ErrorKind::WouldBlock,
    }
}

/// `read(2)`, retrying `EINTR`. Asks for at most [`IO_BYTES_LIMIT`] bytes.
///
/// `Ok(0)` is end of file (or an empty `buf`).
#[inline]
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len().min(IO_BYTES_LIMIT);
    // SAFETY: `buf` is valid for writes of `len` bytes for the whole call, and `fd` is
    // borrowed, so it stays open.
    let n = cvt_r(|| unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len) })?;
    Ok(n as usize)
}

/// [`read`] for a nonblocking fd: "would block" is `Ok(None)`, not an error, since it ends
/// nearly every round of reads.
///
/// ```
/// use std::os::fd::AsFd;
///
/// let (r, w) = evloop_platform::fd::pipe()?;
/// evloop_platform::fd::set_nonblocking(r.as_fd(), true)?;
/// let mut buf = [0u8; 8];
/// assert_eq!(evloop_platform::fd::read_nonblocking(r.as_fd(), &mut buf)?, None);
/// evloop_platform::fd::write(w.as_fd(), b"hi")?;
/// assert_eq!(evloop_platform::fd::read_nonblocking(r.as_fd(), &mut buf)?, Some(2));
/// # Ok::<(), std::io::Error>(())
/// ```
#[inline]
pub fn read_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let len = buf.len().min(IO_BYTES_LIMIT);
    // SAFETY: as in `read`.
    let n = cvt_r_nb(|| unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len) })?;
    Ok(n.map(|n| n as usize))
}

/// `write(2)`, retrying `EINTR`. Writes at most [`IO_BYTES_LIMIT`] bytes.
#[inline]
pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let len = buf.len().min(IO_BYTES_LIMIT);
    // SAFETY: `buf` is valid for reads of `len` bytes for the whole call; `fd` is borrowed.
    let n = cvt_write(|| unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), len) })?;
    Ok(n as usize)
}

/// `writev(2)`, retrying `EINTR`. Passes at most [`IOV_MAX`] buffers; the caller sees how
/// many bytes went out and advances its queue. The caller keeps the total within
/// [`IO_BYTES_LIMIT`]: macOS refuses more with `EINVAL`.
#[inline]
pub fn writev(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    let cnt = bufs.len().min(IOV_MAX) as libc::c_int;
    // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix, the slice is
    // valid for `cnt` entries, and each entry borrows memory that outlives the call.
    let n = cvt_write(|| unsafe { libc::writev(fd.as_raw_fd(), bufs.as_ptr().cast(), cnt) })?;
    Ok(n as usize)
}

/// Whether `send` and `sendmsg` honour `MSG_DONTWAIT` on a blocking socket. Linux and
/// FreeBSD do; macOS does not (xnu's `sosend` waits for room unless the socket itself is
/// nonblocking: the flag only affects taking the buffer's lock), so there a blocking socket
/// must get `O_NONBLOCK` instead. Receiving honours it everywhere.
pub const SEND_DONTWAIT_WORKS: bool = cfg!(any(target_os = "linux", target_os = "freebsd"));

/// Flags for the socket calls below: nonblocking for this one call, so the socket's open
/// file description (which other processes may share) stays blocking (see
/// [`SEND_DONTWAIT_WORKS`]); and no `SIGPIPE` when the peer has gone.
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;

/// `recv(2)` with `MSG_DONTWAIT`, retrying `EINTR`: [`read_nonblocking`] for a socket that
/// stays blocking. `Ok(None)` means nothing to read now.
#[inline]
pub fn recv_dontwait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let len = buf.len().min(IO_BYTES_LIMIT);
    // SAFETY: `buf` is valid for writes of `len` bytes for the whole call; `fd` is borrowed.
    let n =
        cvt_r_nb(|| unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len, libc::MSG_DONTWAIT) })?;
    Ok(n.map(|n| n as usize))
}

/// `send(2)` with `MSG_DONTWAIT`, retrying `EINTR`: [`write()`] for a socket that stays
/// blocking. Nothing to send now is a [`would_block`] error, as from [`write()`]. Where
/// [`SEND_DONTWAIT_WORKS`] is false, it may block.
#[inline]
pub fn send_dontwait(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let len = buf.len().min(IO_BYTES_LIMIT);
    // SAFETY: `buf` is valid for reads of `len` bytes for the whole call; `fd` is borrowed.
    let n = cvt_write(|| unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), len, SEND_FLAGS) })?;
    Ok(n as usize)
}

/// `sendmsg(2)` with `MSG_DONTWAIT`, retrying `EINTR`: [`writev`] for a socket that stays
/// blocking, with the same limits. Where [`SEND_DONTWAIT_WORKS`] is false, it may block.
#[inline]
pub fn sendmsg_dontwait(fd: BorrowedFd<'_>, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if bufs.is_empty() {
        // macOS refuses an empty message with EMSGSIZE; writev takes it.
        return Ok(0);
    }
    // SAFETY: an all-zero msghdr is valid: no name, no control data, no buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    #[allow(clippy::unnecessary_cast)] // msg_iovlen's type differs between libcs.
    {
        msg.msg_iovlen = bufs.len().min(IOV_MAX) as _;
    }
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec`; `msg` points at
    // `msg_iovlen` of them, each borrowing memory that outlives the call, and sendmsg only
    // reads through them; `fd` is borrowed.
    let n = cvt_write(|| unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, SEND_FLAGS) })?;
    Ok(n as usize)
}

/// Whether socket `fd` carries a byte stream (`SO_TYPE` is `SOCK_STREAM`), as opposed to
/// datagrams or sequenced packets, whose boundaries a stream would merge or cut.
pub fn is_stream_socket(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are valid for writes, and `len` holds `ty`'s size; `fd` is
    // borrowed.
    cvt(unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&raw mut ty).cast(), &mut len)
    })?;
    Ok(ty == libc::SOCK_STREAM)
}

/// Whether the socket `fd` is listening (`listen` was called on it: `accept` takes its
/// connections, and it carries no bytes itself), as far as the system says: macOS's
/// `getsockopt` does not answer `SO_ACCEPTCONN` (`ENOPROTOOPT`), and a socket it cannot tell
/// about counts as not listening.
pub fn is_listening_socket(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `on` and `len` are valid for writes, and `len` holds `on`'s size; `fd` is
    // borrowed.
    let asked = cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut on).cast(),
            &mut len,
        )
    });
    match asked {
        Ok(_) => Ok(on != 0),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EINVAL | libc::EOPNOTSUPP)) => {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// What kind of file an fd refers to, from `fstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    /// A pipe or FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A character device: a terminal, `/dev/null`, `/dev/zero`, a serial port.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// Anything else (a symlink cannot be an open fd's type, but the kernel may invent types).
    Other,
}

/// The file `fd` refers to, as `fstat` names it: (device, inode). Another file at the same
/// number (the fd closed and its number reused) has another, but for the files that share
/// one inode (Linux's anonymous inodes: eventfds, signalfds, epoll instances).
pub fn file_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = fstat(fd)?;
    #[allow(clippy::unnecessary_cast)] // the widths differ by platform
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// `fstat(fd)` reduced to the file type.
pub fn file_type(fd: BorrowedFd<'_>) -> io::Result<FileType> {
    let mode = fstat(fd)?.st_mode;
    Ok(match mode & libc::S_IFMT {
        libc::S_IFIFO => FileType::Fifo,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFREG => FileType::Regular,
        libc::S_IFDIR => FileType::Directory,
        _ => FileType::Other,
    })
}

/// Whether `fd` refers to a terminal (`isatty`).
pub fn isatty(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: `fd` is borrowed; isatty takes no pointer.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// The lowest number the fds this crate makes may take (see [`set_fd_floor`]); 0 leaves
/// the numbers to the kernel.
static FD_FLOOR: AtomicI32 = AtomicI32::new(0);

/// From now on, every fd this crate makes for itself (its pollers, wakeup fds, pipes,
/// pidfds, ptys, reopened descriptions, duplicates) gets a number at or above `floor`: one
/// that the kernel gives below it is moved up with `F_DUPFD_CLOEXEC`, its low number closed
/// at once. A shell keeps its own fds above 9 this way, so that a script's `exec 3>file`
/// (a `dup2` onto 3) cannot land on one. Below 3 (the default is 0) the floor is 3: a
/// program that closed a standard stream would find an fd of ours taken for it.
///
/// Fails with `InvalidInput` for a negative `floor`, and for one at or above the soft
/// `RLIMIT_NOFILE` (no fd could be moved there). A limit lowered to the floor or below
/// afterwards makes every move fail, with `EINVAL`.
pub fn set_fd_floor(floor: RawFd) -> io::Result<()> {
    let (soft, _) = nofile_limit()?;
    if floor < 0 || u64::try_from(floor).is_ok_and(|f| f >= soft) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd floor {floor}: it must be at least 0 and below the fd limit ({soft})"),
        ));
    }
    FD_FLOOR.store(floor, Ordering::Relaxed);
    Ok(())
}

/// The floor [`set_fd_floor`] set.
pub fn fd_floor() -> RawFd {
    FD_FLOOR.load(Ordering::Relaxed)
}

/// The lowest number an fd of this crate's takes: the fd floor, and never 0, 1 or 2. A
/// program that closed its standard streams leaves those numbers free, and an fd of ours
/// there (an epoll fd, a pipe) would be taken for one: by the program's own `println!`,
/// and by a child given the parent's stream (`2>&1` of a closed stdout would hand it ours).
#[inline]
fn own_fd_min() -> RawFd {
    FD_FLOOR.load(Ordering::Relaxed).max(3)
}

/// `fd`, a fresh fd of this crate's, moved to a number at or above the fd floor (and 3) if
/// it is below it (see [`set_fd_floor`]). Close-on-exec either way.
#[inline]
pub fn settle(fd: OwnedFd) -> io::Result<OwnedFd> {
    let min = own_fd_min();
    if fd.as_raw_fd() >= min {
        return Ok(fd);
    }
    raise(fd, min)
}

#[cold]
#[inline(never)]
fn raise(fd: OwnedFd, floor: RawFd) -> io::Result<OwnedFd> {
    // The error as it is (`EMFILE` once the numbers from the floor up are used up), its OS
    // number kept: the callers say what they were making.
    dup_cloexec(std::os::fd::AsFd::as_fd(&fd), floor)
}

/// Duplicates `fd` onto the lowest free number `>= min`, close-on-exec (`F_DUPFD_CLOEXEC`),
/// and at or above the fd floor ([`set_fd_floor`]) and 3.
pub fn dup_cloexec(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    let min = min.max(own_fd_min());
    // SAFETY: `fd` is borrowed; F_DUPFD_CLOEXEC takes an int argument.
    let n = cvt_r(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: fcntl returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// How to open a path with [`open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `O_RDONLY`
    Read,
    /// `O_WRONLY`
    Write,
    /// `O_RDWR`
    ReadWrite,
}

/// `open(path, access | O_CLOEXEC | O_NOCTTY [| O_NONBLOCK])`, retrying `EINTR`.
pub fn open(path: &CStr, access: Access, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::O_CLOEXEC | libc::O_NOCTTY;
    flags |= match access {
        Access::Read => libc::O_RDONLY,
        Access::Write => libc::O_WRONLY,
        Access::ReadWrite => libc::O_RDWR,
    };
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    // SAFETY: `path` is a valid NUL-terminated string for the whole call.
    let n = cvt_r(|| unsafe { libc::open(path.as_ptr(), flags) })?;
    // SAFETY: open returned a fresh fd that nothing else owns.
    settle(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Opens the pipe `fd` refers to again, as an open file description of its own:
/// `open("/proc/self/fd/N", access | O_NONBLOCK | O_CLOEXEC)`, checked to lead to the same
/// pipe. `O_NONBLOCK` on the new description touches nobody who shares `fd`'s.
///
/// Linux only: elsewhere (`/dev/fd/N` duplicates the fd instead) this is `Unsupported`.
/// A named FIFO is opened again only with write access: for writing (with no reader left,
/// that fails with `ENXIO`), or for both (a jobserver's FIFO: the new description is a
/// writer, as the old one was, so end of file stays out of reach as before). Opened again
/// for reading only after its writers left, it would not report the hang-up (Linux waits
/// for a new writer first), so its reader would never see end of file.
/// Fails, among other cases, for a pipe another user made (`EACCES`) and without `/proc`.
pub fn reopen_pipe(fd: BorrowedFd<'_>, access: Access) -> io::Result<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        const PIPEFS_MAGIC: libc::c_long = 0x5049_5045;
        let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: `fs` is valid for writes of one statfs; `fd` is borrowed, so it stays open.
        cvt(unsafe { libc::fstatfs(fd.as_raw_fd(), fs.as_mut_ptr()) })?;
        // SAFETY: fstatfs succeeded and filled in `fs`.
        let fs = unsafe { fs.assume_init() };
        #[allow(clippy::unnecessary_cast)] // f_type's type differs between libcs.
        if fs.f_type as libc::c_long != PIPEFS_MAGIC && access == Access::Read {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a named FIFO open for reading only keeps its description",
            ));
        }
        // SAFETY: `fd` is borrowed; F_GETFL takes no argument.
        let status = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
        if status & libc::O_DIRECT != 0 {
            // Packet mode lives on the description, and a new one would not have it.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a packet-mode pipe keeps its description",
            ));
        }
        let path =
            std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("a number has no NUL");
        let new = open(&path, access, true)?;
        let (a, b) = (fstat(fd)?, fstat(std::os::fd::AsFd::as_fd(&new))?);
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) || a.st_mode & libc::S_IFMT != libc::S_IFIFO {
            return Err(io::Error::other("the fd led to another file when opened again"));
        }
        Ok(new)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, access);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only Linux opens a pipe again as its own description",
        ))
    }
}

/// `shutdown(fd, SHUT_WR)`: half-closes a socket. Other fds give `ENOTSOCK`.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is borrowed; shutdown takes no pointer.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) })?;
    Ok(())
}

/// Sets a pipe's kernel buffer size (`F_SETPIPE_SZ`, Linux only) and returns the size the
/// kernel chose. Elsewhere gives `ENOTSUP`: macOS and FreeBSD size pipes themselves.
pub fn set_pipe_size(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    {
        let want = libc::c_int::try_from(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `fd` is borrowed; F_SETPIPE_SZ takes an int argument.
        let got = cvt_r(|| unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, want) })?;
        Ok(got as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (fd, bytes);
        Err(io::Error::from_raw_os_error(libc::ENOTSUP))
    }
}

/// How many fds are open in this process, counted from `/dev/fd` (or `/proc/self/fd`).
///
/// For leak checks in tests and benchmarks. The directory handle itself is not counted.
pub fn open_fd_count() -> io::Result<usize> {
    let dir = if cfg!(target_os = "linux") { "/proc/self/fd" } else { "/dev/fd" };
    // read_dir holds one fd of its own while it lists the directory.
    Ok(std::fs::read_dir(dir)?.count().saturating_sub(1))
}

/// Whether the fd number `fd` is open in this process (`fcntl(F_GETFD)`).
///
/// Only inspects the fd table: nothing is borrowed past the call. An answer about a number
/// another thread may close or reuse at any moment is only a hint.
pub fn is_open_raw(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the fd table entry; a closed number gives EBADF.
    let rc = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    rc != -1
}

/// Whether this process could make `dir` its working directory: it is a directory its
/// effective ids may search (`faccessat(X_OK, AT_EACCESS)`). A hint, for naming the cause
/// of a failure: the answer may change at any moment.
pub fn can_enter_dir(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return false };
    // SAFETY: `path` is a NUL-terminated string for the whole call.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::X_OK, libc::AT_EACCESS) };
    match cvt(rc).map_err(|e| e.raw_os_error()) {
        Ok(_) => dir.is_dir(),
        Err(Some(libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG)) => false,
        // Cannot tell (a sandbox that refuses `faccessat2` with EPERM, say).
        Err(_) => dir.is_dir(),
    }
}

/// Whether a program this process execs would have the fd number `fd`: it is open and not
/// close-on-exec (`fcntl(F_GETFD)`). A hint, as [`is_open_raw`]'s answer is.
pub fn kept_on_exec_raw(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the fd table entry; a closed number gives EBADF.
    let rc = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    rc != -1 && rc & libc::FD_CLOEXEC == 0
}

/// The numbers of the fds open in this process, ascending (for leak reports).
pub fn open_fds() -> io::Result<Vec<RawFd>> {
    let dir = if cfg!(target_os = "linux") { "/proc/self/fd" } else { "/dev/fd" };
    let mut v = Vec::new();
    let mut it = std::fs::read_dir(dir)?;
    for e in &mut it {
        if let Some(n) = e?.file_name().to_str().and_then(|s| s.parse::<RawFd>().ok()) {
            v.push(n);
        }
    }
    // The listing's own fd is open during the walk; drop any number that is closed now.
    drop(it);
    v.retain(|&n| is_open_raw(n));
    v.sort_unstable();
    Ok(v)
}

/// Waits until `fd` is readable or `timeout` passes (`poll(2)` on one fd); `None` waits
/// forever. Returns whether it is readable: a read would not block (data, end of file, a
/// hang-up, an error, an fd that is not open). For embedders and tests that drive a loop
/// from a plain `poll` loop, and for a blocking stream's reads; `EINTR` counts as "not
/// readable yet".
///
/// macOS builds `poll` from a kqueue, which refuses terminals other than ptys (slaves and
/// masters) and other character devices: poll answers `POLLNVAL` for them though they are open. Such an
/// fd is asked again with `select(2)`, which works for them.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout: Option<std::time::Duration>) -> io::Result<bool> {
    let ms =
        timeout.map_or(-1, |d| d.as_nanos().div_ceil(1_000_000).min(libc::c_int::MAX as u128) as libc::c_int);
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: `pfd` is one valid pollfd for the call; `fd` is borrowed, so it stays open.
    match cvt(unsafe { libc::poll(&mut pfd, 1, ms) }) {
        Ok(n) if n > 0 && pfd.revents & libc::POLLNVAL != 0 && is_open_raw(pfd.fd) => {
            crate::select::readable(fd, timeout)
        }
        Ok(n) => {
            Ok(n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `fd` reports a hang-up now (`poll`'s `POLLHUP`, without waiting): the other side
/// of a pty, a pipe or a socket has closed. `None` where `poll` cannot tell (macOS answers
/// `POLLNVAL` for the character devices its kqueue refuses).
pub fn poll_hung_up(fd: BorrowedFd<'_>) -> Option<bool> {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: 0, revents: 0 };
    // SAFETY: `pfd` is one valid pollfd for the call; `fd` is borrowed, so it stays open.
    match cvt_r(|| unsafe { libc::poll(&mut pfd, 1, 0) }) {
        Ok(_) if pfd.revents & libc::POLLNVAL != 0 => None,
        Ok(_) => Some(pfd.revents & libc::POLLHUP != 0),
        Err(_) => None,
    }
}

/// The soft and hard `RLIMIT_NOFILE` limits.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rl` is valid for writes of one rlimit.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) })?;
    // rlim_t is u64 on Linux and macOS, i64 on FreeBSD (where RLIM_INFINITY is i64::MAX).
    #[allow(clippy::unnecessary_cast)]
    Ok((rl.rlim_cur as u64, rl.rlim_max as u64))
}

/// One more than the highest fd number this process can have (what `dup2` accepts as a
/// target): the soft `RLIMIT_NOFILE` limit, bounded by the system's own limit where the soft
/// one is unlimited (FreeBSD's `kern.maxfilesperproc`, which `_SC_OPEN_MAX` reports), and
/// by the largest fd number (`i32::MAX`).
pub fn fd_table_size() -> io::Result<u64> {
    let (soft, _) = nofile_limit()?;
    // SAFETY: sysconf takes an int and no pointer.
    let open_max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let size = if open_max > 0 { soft.min(open_max as u64) } else { soft };
    Ok(size.min(i32::MAX as u64))
}

/// Sets the soft `RLIMIT_NOFILE` limit (at most the hard limit).
pub fn set_nofile_soft_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    #[allow(clippy::unnecessary_cast)]
    let rl = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: `rl` is a valid rlimit for the call.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) })?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::fd::AsFd;
    use std::sync::Mutex;

    use super::*;

    /// The tests that read or raise the process's soft fd limit run one at a time: one
    /// raises it for a while, and another reads it twice.
    pub(crate) static NOFILE_TESTS: Mutex<()> = Mutex::new(());

    /// The table size bounds a child fd target: at most the soft limit, and small enough that
    /// one past the highest fd still fits an fd number.
    #[test]
    fn fd_table_size_is_the_soft_limit_bounded_by_the_fd_range() {
        let _one_at_a_time = NOFILE_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let size = fd_table_size().unwrap();
        let (soft, _) = nofile_limit().unwrap();
        assert!(size > 2 && size <= soft && size <= i32::MAX as u64, "{size} (soft limit {soft})");
        // The highest fd number below it can be a dup2 target.
        let (r, _w) = pipe().unwrap();
        let top = (size - 1) as RawFd;
        // SAFETY: dup2 onto a number this test does not use otherwise; closed right below.
        let fd = unsafe { libc::dup2(r.as_raw_fd(), top) };
        assert_eq!(fd, top, "{}", io::Error::last_os_error());
        // SAFETY: `top` is the fd just made, owned by nothing else.
        unsafe { libc::close(top) };
    }

    fn nonblocking(fd: &OwnedFd) -> bool {
        status_flags(fd.as_fd()).unwrap().nonblocking
    }

    /// The registry's whole life: registration past its capacity, the signal-time restore,
    /// the restore at release (through the duplicate, whatever fd the caller passes), every
    /// slot free again, and a forked child that leaves the parent's registrations alone. The
    /// only test in this crate that registers anything, so the process-wide restore below
    /// cannot reach another test's descriptions.
    #[test]
    fn shared_nonblocking_registry() {
        // (our fd, another holder's fd, the write end) per description; one more than fits.
        let pipes: Vec<(OwnedFd, OwnedFd, OwnedFd)> = (0..=SHARED_NONBLOCKING_MAX)
            .map(|_| {
                let (r, w) = pipe().unwrap();
                let other = dup_cloexec(r.as_fd(), 0).unwrap();
                (r, other, w)
            })
            .collect();
        let claims: Vec<SharedNonblocking> =
            pipes.iter().map(|(r, _, _)| set_shared_nonblocking(r.as_fd()).unwrap()).collect();
        assert!(pipes.iter().all(|(_, other, _)| nonblocking(other)), "set on the shared description");
        assert!(claims[..SHARED_NONBLOCKING_MAX].iter().all(|c| c.slots != 0));
        assert_eq!(claims[SHARED_NONBLOCKING_MAX].slots, 0, "the registry is full");

        restore_shared_blocking().unwrap();
        for (i, (_, other, _)) in pipes.iter().enumerate() {
            assert_eq!(nonblocking(other), i == SHARED_NONBLOCKING_MAX, "description {i} after the restore");
        }

        // Set again; then release each. The first is given the wrong fd (as after its own was
        // closed behind its back and the number reused): the duplicate still finds its own.
        for (r, _, _) in &pipes {
            set_nonblocking(r.as_fd(), true).unwrap();
        }
        let mut claims = claims.into_iter();
        let (_, first_other, first_w) = &pipes[0];
        set_nonblocking(first_w.as_fd(), true).unwrap();
        claims.next().unwrap().restore(first_w.as_fd()).unwrap();
        assert!(!nonblocking(first_other), "restored through the registry's duplicate");
        assert!(nonblocking(first_w), "and not through the fd passed");
        for (claim, (r, other, _)) in claims.zip(&pipes[1..]) {
            claim.restore(r.as_fd()).unwrap();
            assert!(!nonblocking(other));
        }
        drop(pipes);

        // With the registry full, two holders of one description: the first to let go
        // leaves the flag to the second (it cleared it under the second's handle, whose next
        // write then blocked).
        let fill: Vec<(OwnedFd, OwnedFd)> = (0..SHARED_NONBLOCKING_MAX).map(|_| pipe().unwrap()).collect();
        let fill_claims: Vec<SharedNonblocking> =
            fill.iter().map(|(r, _)| set_shared_nonblocking(r.as_fd()).unwrap()).collect();
        let (r, w) = pipe().unwrap();
        let (second, other) = (dup_cloexec(r.as_fd(), 0).unwrap(), dup_cloexec(r.as_fd(), 0).unwrap());
        let first = hold_shared_nonblocking(r.as_fd()).unwrap().expect("set here");
        assert_eq!(first.slots, 0, "the registry is full");
        let joined = hold_shared_nonblocking(second.as_fd()).unwrap().expect("joined, though unregistered");
        first.restore(r.as_fd()).unwrap();
        assert!(nonblocking(&other), "kept for the second holder");
        joined.restore(second.as_fd()).unwrap();
        assert!(!nonblocking(&other), "cleared by the last");
        assert!(join_shared_nonblocking(second.as_fd()).unwrap().is_none(), "nothing held now");
        for (claim, (r, _)) in fill_claims.into_iter().zip(&fill) {
            claim.restore(r.as_fd()).unwrap();
        }
        drop((fill, r, w, second, other));

        // Two holders of one description (the second found it nonblocking already): the
        // flag stays until both let go, and a description nobody registered is not joined.
        let (r, w) = pipe().unwrap();
        let (second, other) = (dup_cloexec(r.as_fd(), 0).unwrap(), dup_cloexec(r.as_fd(), 0).unwrap());
        let first = set_shared_nonblocking(r.as_fd()).unwrap();
        let joined = join_shared_nonblocking(second.as_fd()).unwrap().expect("the same description");
        assert!(
            join_shared_nonblocking(w.as_fd()).unwrap().is_none(),
            "the write end is another description"
        );
        first.restore(r.as_fd()).unwrap();
        assert!(nonblocking(&other), "kept for the second holder");
        joined.restore(second.as_fd()).unwrap();
        assert!(!nonblocking(&other), "cleared by the last");
        assert!(join_shared_nonblocking(second.as_fd()).unwrap().is_none(), "nothing registered now");
        drop((r, w, second, other));

        // hold: sets and registers a blocking description, joins a nonblocking one of ours,
        // and leaves alone one somebody else made nonblocking.
        let (r, w) = pipe().unwrap();
        let again = dup_cloexec(r.as_fd(), 0).unwrap();
        let first = hold_shared_nonblocking(r.as_fd()).unwrap().expect("set here");
        assert!(nonblocking(&again));
        let second = hold_shared_nonblocking(again.as_fd()).unwrap().expect("joined");
        assert_eq!(first.slots, second.slots);
        set_nonblocking(w.as_fd(), true).unwrap();
        assert!(hold_shared_nonblocking(w.as_fd()).unwrap().is_none(), "not ours");
        first.restore(r.as_fd()).unwrap();
        assert!(nonblocking(&again));
        second.restore(again.as_fd()).unwrap();
        assert!(!nonblocking(&again));
        drop((r, w, again));

        // Every pty master is one file (the cloning device), so a join cannot tell their
        // descriptions apart: it holds both, and neither is restored early.
        let (m1, _s1) = crate::termios::openpty().unwrap();
        let (m2, _s2) = crate::termios::openpty().unwrap();
        let (m2_again, watch2) = (dup_cloexec(m2.as_fd(), 0).unwrap(), dup_cloexec(m2.as_fd(), 0).unwrap());
        let watch1 = dup_cloexec(m1.as_fd(), 0).unwrap();
        let first = set_shared_nonblocking(m1.as_fd()).unwrap();
        let second = set_shared_nonblocking(m2.as_fd()).unwrap();
        let joined = join_shared_nonblocking(m2_again.as_fd()).unwrap().unwrap();
        assert_eq!(joined.slots, first.slots | second.slots, "both masters' registrations");
        second.restore(m2.as_fd()).unwrap();
        assert!(nonblocking(&watch2), "not early: the joined handle may be on this one");
        first.restore(m1.as_fd()).unwrap();
        assert!(nonblocking(&watch1), "late: the joined handle holds it too");
        joined.restore(m2_again.as_fd()).unwrap();
        assert!(!nonblocking(&watch1) && !nonblocking(&watch2), "both cleared by the last holder");

        // (Other tests open fds in parallel threads, so the registry itself is checked.)
        assert!(SHARED_FDS.iter().all(|s| s.load(Ordering::Relaxed) < 0), "every registration ended");
        restore_shared_blocking().unwrap();

        // A child forked without exec (whose exit or fatal signal would run the restore)
        // leaves its parent's descriptions alone.
        let _no_sigchld_tests = crate::signal::tests::SIGCHLD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (r, _w) = pipe().unwrap();
        let other = dup_cloexec(r.as_fd(), 0).unwrap();
        let claim = set_shared_nonblocking(r.as_fd()).unwrap();
        assert_ne!(claim.slots, 0);
        // The child reports through an exec of `sh -c 'exit N'` rather than `_exit`: under
        // valgrind a forked child's own exit would run a leak check over the threads that
        // did not come along. Everything it uses is built before the fork.
        let argv =
            |code: &'static std::ffi::CStr| [c"sh".as_ptr(), c"-c".as_ptr(), code.as_ptr(), std::ptr::null()];
        let (ok, failed) = (argv(c"exit 0"), argv(c"exit 1"));
        // SAFETY: the child calls only async-signal-safe functions (getpid, fcntl, execv,
        // _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let argv = if restore_shared_blocking().is_ok() { &ok } else { &failed };
            // SAFETY: `argv` is a NULL-terminated array of NUL-terminated strings that live
            // to the end of the test; `_exit` ends the child if the exec fails.
            unsafe {
                libc::execv(c"/bin/sh".as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        assert!(pid > 0, "fork: {}", io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        cvt_r(|| unsafe { libc::waitpid(pid, &mut status, 0) }).unwrap();
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
        assert!(nonblocking(&other), "a forked child cleared its parent's O_NONBLOCK");
        claim.restore(r.as_fd()).unwrap();
        assert!(!nonblocking(&other));
    }
}
