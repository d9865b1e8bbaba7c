//! The kqueue backend (macOS, FreeBSD). See the contract in `poller/mod.rs`.
//!
//! Level-triggered filters (no `EV_CLEAR`), as libuv uses them: with bounded reads, a stream
//! that was only partly drained is simply reported again. Interest changes are queued in a
//! changelist and submitted in one `kevent` call with `EV_RECEIPT` before the wait, so every
//! change gets its own result, in a buffer of its own: without receipts, a failed change
//! comes back as an `EV_ERROR` entry among the pending events, and once the event list is
//! full the call stops at the next failure (kqueue(2)).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use super::{Event, Interest, Readiness};
use crate::cvt::{cvt, cvt_r};

// Tokens travel in `udata`, a pointer-sized field: evloop's tokens need 64 bits.
const _: () = assert!(size_of::<usize>() == 8, "the kqueue backend needs 64-bit pointers");

/// Changes queued beyond this many are submitted at once, to bound the changelist.
const CHANGES_QUEUED_MAX: usize = 256;

/// The `EVFILT_USER` identifier of the loop's waker.
pub(crate) const WAKER_IDENT: usize = 0x6576_6c70; // "evlp"

/// A kqueue.
#[derive(Debug)]
pub struct Poller {
    kq: Arc<OwnedFd>,
    changes: Vec<libc::kevent>,
    receipts: Vec<libc::kevent>,
    /// Rejections found by an early submit, reported by the next `wait`.
    parked: Vec<Event>,
}

/// A reusable buffer of kevents, plus the queued changes the kernel rejected.
pub struct Events {
    buf: Vec<libc::kevent>,
    len: usize,
    failed: Vec<Event>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("len", &self.len()).field("capacity", &self.buf.len()).finish()
    }
}

/// A zeroed kevent with the given fields; `ext` (FreeBSD) stays zero.
pub(crate) fn kev(ident: usize, filter: i16, flags: u16, fflags: u32, token: u64) -> libc::kevent {
    // SAFETY: kevent is a plain C struct of integers and one pointer; all-zero is a valid value
    // for every field (a null udata).
    let mut k: libc::kevent = unsafe { std::mem::zeroed() };
    k.ident = ident as libc::uintptr_t;
    k.filter = filter;
    k.flags = flags;
    k.fflags = fflags;
    k.udata = std::ptr::without_provenance_mut(token as usize);
    k
}

fn token_of(k: &libc::kevent) -> u64 {
    k.udata as usize as u64
}

/// The kernel's answer `err` (0 for success) to the queued `change`: a rejection becomes an
/// event in `failed`, and a rejected add's fd joins `rejected_adds`, for the cleanup of its
/// other filter.
fn judge(change: &libc::kevent, err: i32, failed: &mut Vec<Event>, rejected_adds: &mut Vec<libc::uintptr_t>) {
    let deleting = change.flags & libc::EV_DELETE != 0;
    match err {
        0 => {}
        libc::ENOENT if deleting => {}
        libc::EPIPE if change.filter == libc::EVFILT_WRITE => {
            // FreeBSD refuses a write filter once the reader is gone (sys_pipe.c); report the
            // pipe as writable so the next write meets the EPIPE itself.
            failed.push(Event {
                token: token_of(change),
                readiness: Readiness::WRITABLE | Readiness::ERROR,
                change_error: 0,
            });
        }
        _ => {
            failed.push(Event { token: token_of(change), readiness: Readiness::empty(), change_error: err });
            if !deleting {
                rejected_adds.push(change.ident);
            }
        }
    }
}

fn to_timespec(d: Duration) -> libc::timespec {
    libc::timespec { tv_sec: crate::time::wait_secs(d), tv_nsec: d.subsec_nanos() as _ }
}

fn kevent_raw(
    kq: BorrowedFd<'_>,
    changes: &[libc::kevent],
    out: &mut [libc::kevent],
    ts: Option<&libc::timespec>,
) -> libc::c_int {
    let ts_ptr = ts.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `changes` is valid for reads and `out` for writes of their lengths; `ts_ptr` is
    // null or points at a timespec that outlives the call; `kq` is borrowed, so it stays open.
    unsafe {
        libc::kevent(
            kq.as_raw_fd(),
            changes.as_ptr(),
            changes.len().min(libc::c_int::MAX as usize) as libc::c_int,
            out.as_mut_ptr(),
            out.len().min(libc::c_int::MAX as usize) as libc::c_int,
            ts_ptr,
        )
    }
}

/// Submits `changes` and collects up to `out.len()` receipts without waiting, retrying
/// `EINTR` (the changes are idempotent: a repeated add modifies, a repeated delete gives an
/// `ENOENT` receipt that callers ignore).
pub(crate) fn kevent_now(
    kq: BorrowedFd<'_>,
    changes: &[libc::kevent],
    out: &mut [libc::kevent],
) -> io::Result<usize> {
    let zero = to_timespec(Duration::ZERO);
    Ok(cvt_r(|| kevent_raw(kq, changes, out, Some(&zero)))? as usize)
}

impl Events {
    /// A buffer for up to `capacity` events per wait (at least 1).
    pub fn with_capacity(capacity: usize) -> Events {
        Events { buf: vec![kev(0, 0, 0, 0, 0); capacity.max(1)], len: 0, failed: Vec::new() }
    }

    /// How many events the last wait returned.
    pub fn len(&self) -> usize {
        self.len + self.failed.len()
    }

    /// Whether the last wait returned no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The events of the last wait: rejected changes first, then readiness.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Event `i` of the last wait (`i < len()`).
    #[inline]
    pub fn get(&self, i: usize) -> Event {
        if let Some(&failed) = self.failed.get(i) {
            return failed;
        }
        let k = &self.buf[..self.len][i - self.failed.len()];
        let token = token_of(k);
        let flags = k.flags;
        if flags & libc::EV_ERROR != 0 {
            return Event { token, readiness: Readiness::empty(), change_error: k.data as i32 };
        }
        let eof = flags & libc::EV_EOF != 0;
        let mut r = Readiness::empty();
        match k.filter {
            libc::EVFILT_READ => {
                r |= Readiness::READABLE;
                if eof {
                    r |= Readiness::HUP;
                    // Sockets put their error in fflags (mio does the same check).
                    if k.fflags != 0 {
                        r |= Readiness::ERROR;
                    }
                }
            }
            libc::EVFILT_WRITE => {
                r |= Readiness::WRITABLE;
                if eof {
                    r |= Readiness::HUP | Readiness::ERROR;
                }
            }
            // EVFILT_USER (the waker) and EVFILT_PROC (a child exited) read as "readable".
            _ => r |= Readiness::READABLE,
        }
        Event { token, readiness: r, change_error: 0 }
    }
}

impl Poller {
    /// `kqueue()`. A kqueue is not inherited by children.
    pub fn new() -> io::Result<Poller> {
        // SAFETY: kqueue takes no arguments.
        let fd = cvt(unsafe { libc::kqueue() })?;
        // SAFETY: the call returned a fresh fd that nothing else owns.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        // kqueues are not inherited across fork, but exec of a child started with
        // posix_spawn/vfork would still see the number; mark it anyway.
        crate::fd::set_cloexec(kq.as_fd())?;
        let kq = crate::fd::settle(kq)?;
        Ok(Poller { kq: Arc::new(kq), changes: Vec::new(), receipts: Vec::new(), parked: Vec::new() })
    }

    /// The kqueue fd, shared with wakers on other threads so it outlives them.
    pub(crate) fn shared_fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.kq)
    }

    /// Queues the filter changes that move `fd` from `old` to `new`.
    pub fn update(&mut self, fd: BorrowedFd<'_>, token: u64, old: Interest, new: Interest) -> io::Result<()> {
        let ident = fd.as_raw_fd() as usize;
        for (flag, filter) in
            [(Interest::READABLE, libc::EVFILT_READ), (Interest::WRITABLE, libc::EVFILT_WRITE)]
        {
            let action = match (old.contains(flag), new.contains(flag)) {
                (false, true) => libc::EV_ADD,
                (true, false) => libc::EV_DELETE,
                _ => continue,
            };
            self.changes.push(kev(ident, filter, action | libc::EV_RECEIPT, 0, token));
        }
        if self.changes.len() >= CHANGES_QUEUED_MAX {
            // Nobody is waiting yet: park the rejections for the next wait to report.
            let mut parked = std::mem::take(&mut self.parked);
            let res = self.submit(&mut parked);
            self.parked = parked;
            res?;
        }
        Ok(())
    }

    /// Removes `fd` now, dropping any queued change that names it.
    pub fn deregister(&mut self, fd: BorrowedFd<'_>, old: Interest) -> io::Result<()> {
        let ident = fd.as_raw_fd() as usize;
        // A queued delete (the caller's `old` already left that filter out) is still a filter
        // in the kernel: dropped with the rest, it must be deleted now with them.
        let mut in_kernel = old;
        self.changes.retain(|c| {
            if c.ident != ident {
                return true;
            }
            if c.flags & libc::EV_DELETE != 0 {
                in_kernel |=
                    if c.filter == libc::EVFILT_READ { Interest::READABLE } else { Interest::WRITABLE };
            }
            false
        });
        let mut dels = [kev(0, 0, 0, 0, 0); 2];
        let mut n = 0;
        for (flag, filter) in
            [(Interest::READABLE, libc::EVFILT_READ), (Interest::WRITABLE, libc::EVFILT_WRITE)]
        {
            if in_kernel.contains(flag) {
                dels[n] = kev(ident, filter, libc::EV_DELETE | libc::EV_RECEIPT, 0, 0);
                n += 1;
            }
        }
        if n == 0 {
            return Ok(());
        }
        let mut out = [kev(0, 0, 0, 0, 0); 2];
        let got = kevent_now(self.kq.as_fd(), &dels[..n], &mut out[..n])?;
        for r in &out[..got] {
            let err = r.data as i32;
            // ENOENT: the add was still queued (and is now dropped) or the kernel already
            // removed the knote; either way nothing is registered.
            if err != 0 && err != libc::ENOENT {
                return Err(io::Error::from_raw_os_error(err));
            }
        }
        Ok(())
    }

    /// Adds and deletes the filters for `fd`'s access mode (read, write, or both) to learn
    /// whether kqueue accepts it (libuv's `uv__stream_try_select` probe, which tries the
    /// read filter only: a device whose driver has a read filter and no write filter, such
    /// as FreeBSD's `/dev/random`, would pass it and then fail at its first write).
    pub fn probe(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let ident = fd.as_raw_fd() as usize;
        let mode = crate::fd::status_flags(fd)?;
        // (An fd open for neither, as `O_EXEC` on FreeBSD, is asked about reading.)
        let filters =
            [(mode.readable || !mode.writable, libc::EVFILT_READ), (mode.writable, libc::EVFILT_WRITE)];
        let mut changes = [kev(0, 0, 0, 0, 0); 4];
        let mut n = 0;
        for action in [libc::EV_ADD, libc::EV_DELETE] {
            for &(wanted, filter) in &filters {
                if wanted {
                    changes[n] = kev(ident, filter, action | libc::EV_RECEIPT, 0, 0);
                    n += 1;
                }
            }
        }
        let mut out = [kev(0, 0, 0, 0, 0); 4];
        let got = kevent_now(self.kq.as_fd(), &changes[..n], &mut out[..n])?;
        // The first failed add is the answer; the deletes then meet ENOENT, which says nothing.
        // FreeBSD refuses the write filter of a pipe whose other end is gone with EPIPE (and
        // its pipe ends are read-write): the fd is pollable, and its first write gets EPIPE.
        let adds = n / 2;
        let refused = |r: &&libc::kevent| {
            r.data != 0 && !(r.filter == libc::EVFILT_WRITE && r.data as i32 == libc::EPIPE)
        };
        match out[..got].iter().take(adds).find(refused) {
            // (With receipts every change is applied: an add that went through before a
            // refused one is deleted by its own delete.)
            Some(r) => Err(io::Error::from_raw_os_error(r.data as i32)),
            None => Ok(()),
        }
    }

    /// Submits the queued changes, turning rejections into events in `failed`.
    fn submit(&mut self, failed: &mut Vec<Event>) -> io::Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let n = self.changes.len();
        self.receipts.clear();
        self.receipts.resize(n, kev(0, 0, 0, 0, 0));
        let mut rejected_adds = Vec::new();
        match kevent_now(self.kq.as_fd(), &self.changes, &mut self.receipts) {
            Ok(got) => {
                for (i, r) in self.receipts[..got].iter().enumerate() {
                    // What the change asked for comes from the change itself: FreeBSD
                    // replaces a receipt's flags with EV_ERROR, so EV_DELETE cannot be read
                    // back from it. Receipts come in changelist order; look further only if
                    // that ever fails.
                    let same = |c: &libc::kevent| c.ident == r.ident && c.filter == r.filter;
                    let change = match self.changes.get(i) {
                        Some(c) if same(c) => c,
                        _ => self.changes.iter().find(|c| same(c)).unwrap_or(r),
                    };
                    judge(change, r.data as i32, failed, &mut rejected_adds);
                }
            }
            Err(_) => {
                // The whole call failed (ENOMEM, say): none of the changes is known to be in
                // the kernel, and the loop believes each was applied. Apply them one by one,
                // so that each gets its own answer: a delete its ENOENT or nothing, an add
                // that fails again an error its handle hears, instead of waiting for good.
                for c in &self.changes {
                    let mut out = [kev(0, 0, 0, 0, 0)];
                    let err = match kevent_now(self.kq.as_fd(), std::slice::from_ref(c), &mut out) {
                        Ok(1) => out[0].data as i32,
                        Ok(_) => 0,
                        Err(e) => e.raw_os_error().unwrap_or(libc::EIO),
                    };
                    judge(c, err, failed, &mut rejected_adds);
                }
            }
        }
        self.changes.clear();
        // The loop takes a rejection as "nothing registered" for the fd: a sibling filter
        // the kernel accepted (the read side of a device that refuses the write filter)
        // must go too, or, level-triggered and never deleted, it would wake every wait.
        for ident in rejected_adds {
            let dels = [
                kev(ident, libc::EVFILT_READ, libc::EV_DELETE | libc::EV_RECEIPT, 0, 0),
                kev(ident, libc::EVFILT_WRITE, libc::EV_DELETE | libc::EV_RECEIPT, 0, 0),
            ];
            let mut out = [kev(0, 0, 0, 0, 0); 2];
            // ENOENT (nothing there) is the expected answer for the refused filter.
            let _ = kevent_now(self.kq.as_fd(), &dels, &mut out);
        }
        Ok(())
    }

    /// Whether the next `wait` has changes to submit or rejections to report.
    pub fn has_queued_changes(&self) -> bool {
        !self.changes.is_empty() || !self.parked.is_empty()
    }

    /// Submits queued changes, then waits; see the contract.
    pub fn wait(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.len = 0;
        events.failed.clear();
        events.failed.append(&mut self.parked);
        self.submit(&mut events.failed)?;
        // A rejected change is news: report it without sleeping.
        let timeout = if events.failed.is_empty() { timeout } else { Some(Duration::ZERO) };
        let ts = timeout.map(to_timespec);
        match cvt(kevent_raw(self.kq.as_fd(), &[], &mut events.buf, ts.as_ref())) {
            Ok(n) => events.len = n as usize,
            // A signal ends the wait early: collect what it made ready, without waiting; the
            // caller recomputes its timeout.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                let zero = to_timespec(Duration::ZERO);
                if let Ok(n) = cvt(kevent_raw(self.kq.as_fd(), &[], &mut events.buf, Some(&zero))) {
                    events.len = n as usize;
                }
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Watches child `pid` for exit (`EVFILT_PROC`/`NOTE_EXIT`, one shot), at once.
    ///
    /// Returns `Ok(false)` when the child has already exited: macOS refuses the registration
    /// with `ESRCH` for a zombie, while FreeBSD accepts it and fires at once. The filter does
    /// not reap: the caller still calls `waitpid`.
    pub fn watch_exit(&mut self, pid: libc::pid_t, token: u64) -> io::Result<bool> {
        let flags = libc::EV_ADD | libc::EV_ONESHOT | libc::EV_RECEIPT;
        let change = [kev(pid as usize, libc::EVFILT_PROC, flags, libc::NOTE_EXIT, token)];
        let mut out = [kev(0, 0, 0, 0, 0); 1];
        let got = kevent_now(self.kq.as_fd(), &change, &mut out)?;
        match out[..got].first().map(|r| r.data as i32) {
            Some(libc::ESRCH) => Ok(false),
            Some(0) | None => Ok(true),
            Some(err) => Err(io::Error::from_raw_os_error(err)),
        }
    }

    /// The raw kqueue fd number, for log lines.
    pub fn raw_fd(&self) -> RawFd {
        self.kq.as_raw_fd()
    }
}

impl AsFd for Poller {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.kq.as_fd()
    }
}
