//! `select(2)` over heap-allocated fd sets sized to the highest fd: no `FD_SETSIZE` limit.
//!
//! `libc::fd_set` is a fixed 1024 bits and `libc::FD_SET` panics (or, in C on macOS 11+,
//! faults) above 1023. [`FdSet`] is a vector of words the kernel reads as a bit array: bit
//! `fd % W` of word `fd / W`, where `W` is the word size the kernel uses: 32 bits on Darwin
//! (`__int32_t fds_bits[]`), the native `long` elsewhere.
//!
//! On macOS `libc::select` links `select$1050` (x86_64) or `select` (arm64), both of which
//! fail with `EINVAL` when `nfds > 1024`. The `select$DARWIN_EXTSN` variant, which
//! `_DARWIN_UNLIMITED_SELECT` selects in C, has no such check; we bind it by name. Linux and
//! FreeBSD kernels take any `nfds` within the fd table.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use crate::cvt::cvt;

#[cfg(target_vendor = "apple")]
type Word = u32;
#[cfg(not(target_vendor = "apple"))]
type Word = libc::c_ulong;

const WORD_BITS: usize = Word::BITS as usize;

/// A set of fds for [`select`], growable to any fd number.
#[derive(Clone, Debug, Default)]
pub struct FdSet {
    words: Vec<Word>,
    /// One past the highest fd ever inserted since the last clear.
    nfds: usize,
}

impl FdSet {
    /// An empty set.
    pub fn new() -> FdSet {
        FdSet::default()
    }

    fn index(fd: RawFd) -> (usize, Word) {
        let fd = fd as usize;
        (fd / WORD_BITS, 1 << (fd % WORD_BITS))
    }

    /// Adds `fd` (which must be non-negative), growing the set as needed.
    pub fn insert(&mut self, fd: RawFd) {
        assert!(fd >= 0, "negative fd {fd}");
        let (w, bit) = Self::index(fd);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= bit;
        self.nfds = self.nfds.max(fd as usize + 1);
    }

    /// Whether `fd` is in the set.
    pub fn contains(&self, fd: RawFd) -> bool {
        if fd < 0 {
            return false;
        }
        let (w, bit) = Self::index(fd);
        self.words.get(w).is_some_and(|&word| word & bit != 0)
    }

    /// Empties the set, keeping its memory.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
        self.nfds = 0;
    }

    /// One past the highest fd in the set (0 when empty since the last clear).
    pub fn nfds(&self) -> usize {
        self.nfds
    }

    /// The number of words backing the set (for the bit-arithmetic tests).
    pub fn words_len(&self) -> usize {
        self.words.len()
    }

    /// Grows the backing store to cover `nfds` bits, so the kernel reads only our memory.
    fn cover(&mut self, nfds: usize) {
        let words = nfds.div_ceil(WORD_BITS);
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
    }
}

#[cfg(target_vendor = "apple")]
unsafe extern "C" {
    // The unlimited variant `_DARWIN_UNLIMITED_SELECT` chooses in C. Identical on x86_64 and
    // arm64 (xnu syscall.map aliases it to the raw ___select stub).
    #[link_name = "select$DARWIN_EXTSN"]
    fn select_unlimited(
        nfds: libc::c_int,
        readfds: *mut libc::fd_set,
        writefds: *mut libc::fd_set,
        errorfds: *mut libc::fd_set,
        timeout: *mut libc::timeval,
    ) -> libc::c_int;
}

#[cfg(not(target_vendor = "apple"))]
use libc::select as select_unlimited;

/// Waits until an fd in `read` is readable or one in `write` is writable, or `timeout`
/// passes (`None`: forever). On return the sets hold only the ready fds. Returns how many.
///
/// `EINTR` is returned as an error: the caller rebuilds its sets and calls again. `EBADF`
/// means an fd in a set is not open.
pub fn select(read: &mut FdSet, write: &mut FdSet, timeout: Option<Duration>) -> io::Result<usize> {
    let nfds = read.nfds.max(write.nfds);
    read.cover(nfds);
    write.cover(nfds);
    select_words(nfds, &mut read.words, Some(&mut write.words), timeout)
}

/// Waits until `fd` is readable or `timeout` passes (`None`: forever), with `select(2)` on
/// that one fd; `EINTR` counts as "not readable yet". For the devices `poll(2)` cannot wait
/// on: on macOS, poll answers `POLLNVAL` for a terminal that is not a pty slave, and for
/// other character devices, where select works. An fd below 1024 needs no allocation.
pub fn readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    let raw = fd.as_raw_fd();
    let nfds = raw as usize + 1;
    let (w, bit) = FdSet::index(raw);
    let mut stack = [0 as Word; STACK_FDS / WORD_BITS];
    let mut heap = Vec::new();
    let words: &mut [Word] = if nfds <= STACK_FDS {
        &mut stack
    } else {
        heap.resize(w + 1, 0);
        &mut heap
    };
    words[w] = bit;
    match select_words(nfds, words, None, timeout) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until `fd` is writable or `timeout` passes, as [`readable`] waits for reading,
/// but async-signal-safe: it never allocates, so an fd of `STACK_FDS` (1024) or more is not
/// waited on (`false` at once), nor is one the call refuses. For the restore bytes that a
/// signal handler writes to a macOS terminal, where `poll(2)` answers `POLLNVAL`.
pub fn writable_without_alloc(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let raw = fd.as_raw_fd();
    if raw as usize >= STACK_FDS {
        return false;
    }
    let mut read = [0 as Word; STACK_FDS / WORD_BITS];
    let mut write = [0 as Word; STACK_FDS / WORD_BITS];
    let (w, bit) = FdSet::index(raw);
    write[w] = bit;
    select_words(raw as usize + 1, &mut read, Some(&mut write), Some(timeout)).is_ok_and(|n| n > 0)
}

/// Fds below this fit the sets kept on the stack by [`readable`] and
/// [`writable_without_alloc`].
const STACK_FDS: usize = 1024;

/// The call itself, over word arrays that cover `nfds` bits (checked).
fn select_words(
    nfds: usize,
    read: &mut [Word],
    write: Option<&mut [Word]>,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let words = nfds.div_ceil(WORD_BITS);
    assert!(read.len() >= words && write.as_ref().is_none_or(|w| w.len() >= words), "fd sets too small");
    let nfds_c = libc::c_int::try_from(nfds).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut tv =
        timeout.map(|d| libc::timeval { tv_sec: crate::time::wait_secs(d), tv_usec: d.subsec_micros() as _ });
    let tv_ptr = tv.as_mut().map_or(std::ptr::null_mut(), |t| t as *mut libc::timeval);
    let write_ptr = write.map_or(std::ptr::null_mut(), |w| w.as_mut_ptr().cast());
    // Fds named in the sets need not be open: the kernel answers EBADF, and no memory
    // depends on them.
    // SAFETY: both sets (the write set may be null) cover at least `nfds` bits in whole
    // kernel words, as asserted above, so the kernel reads and writes only memory we own;
    // `tv_ptr` is null or points at `tv`, alive for the call.
    let n = unsafe {
        select_unlimited(nfds_c, read.as_mut_ptr().cast(), write_ptr, std::ptr::null_mut(), tv_ptr)
    };
    Ok(cvt(n)? as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn writable_without_alloc_waits_for_room() {
        let (r, w) = crate::fd::pipe().unwrap();
        crate::fd::set_nonblocking(w.as_fd(), true).unwrap();
        crate::fd::set_nonblocking(r.as_fd(), true).unwrap();
        assert!(writable_without_alloc(w.as_fd(), Duration::ZERO));
        let chunk = [0u8; 4096];
        while crate::fd::write(w.as_fd(), &chunk).is_ok() {}
        // Full: the wait runs out.
        let start = std::time::Instant::now();
        assert!(!writable_without_alloc(w.as_fd(), Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
        let mut buf = vec![0u8; 1 << 20];
        while crate::fd::read_nonblocking(r.as_fd(), &mut buf).unwrap().is_some_and(|n| n > 0) {}
        assert!(writable_without_alloc(w.as_fd(), Duration::from_secs(10)));
    }

    #[test]
    fn bit_arithmetic_at_the_word_edges() {
        for fd in [0, 31, 32, 63, 64, 1023, 1024, 65535] {
            let mut s = FdSet::new();
            s.insert(fd);
            assert!(s.contains(fd), "{fd}");
            assert!(!s.contains(fd + 1), "{fd}+1");
            if fd > 0 {
                assert!(!s.contains(fd - 1), "{fd}-1");
            }
            assert_eq!(s.nfds(), fd as usize + 1);
            assert_eq!(s.words_len(), fd as usize / WORD_BITS + 1);
            let (w, bit) = FdSet::index(fd);
            assert_eq!(w, fd as usize / WORD_BITS);
            assert_eq!(bit.trailing_zeros() as usize, fd as usize % WORD_BITS);
            s.clear();
            assert!(!s.contains(fd));
            assert_eq!(s.nfds(), 0);
        }
    }

    #[test]
    fn sets_many_bits_independently() {
        let fds = [0, 1, 31, 32, 33, 63, 64, 65, 1023, 1024, 1025, 4096, 65535];
        let mut s = FdSet::new();
        for &fd in &fds {
            s.insert(fd);
        }
        for fd in 0..=65536 {
            assert_eq!(s.contains(fd), fds.contains(&fd), "{fd}");
        }
    }

    #[test]
    fn select_reports_a_readable_pipe() {
        let (r, w) = crate::fd::pipe().unwrap();
        use std::os::fd::{AsFd, AsRawFd};
        let mut rs = FdSet::new();
        let mut ws = FdSet::new();
        rs.insert(r.as_raw_fd());
        assert_eq!(select(&mut rs, &mut ws, Some(Duration::ZERO)).unwrap(), 0);
        crate::fd::write(w.as_fd(), b"x").unwrap();
        rs.clear();
        rs.insert(r.as_raw_fd());
        assert_eq!(select(&mut rs, &mut ws, Some(Duration::from_secs(5))).unwrap(), 1);
        assert!(rs.contains(r.as_raw_fd()));
    }

    #[test]
    fn readable_waits_for_one_fd_below_and_above_the_stack_set() {
        use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
        let (r, w) = crate::fd::pipe().unwrap();
        assert!(!readable(r.as_fd(), Some(Duration::ZERO)).unwrap());
        crate::fd::write(w.as_fd(), b"x").unwrap();
        assert!(readable(r.as_fd(), Some(Duration::from_secs(5))).unwrap());
        // A number above 1024 (the heap-backed set), where the fd limit allows one.
        let _one_at_a_time = crate::fd::tests::NOFILE_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (soft, hard) = crate::fd::nofile_limit().unwrap();
        if hard > 1300 {
            crate::fd::set_nofile_soft_limit(soft.max(1300)).unwrap();
            // SAFETY: fcntl F_DUPFD_CLOEXEC returns a new fd that nothing else owns.
            let high = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1200) };
            assert!(high >= 1200, "{}", io::Error::last_os_error());
            // SAFETY: `high` was just created above and is owned here alone.
            let high = unsafe { OwnedFd::from_raw_fd(high) };
            assert!(readable(high.as_fd(), Some(Duration::ZERO)).unwrap());
            let mut buf = [0u8; 1];
            crate::fd::read(high.as_fd(), &mut buf).unwrap();
            assert!(!readable(high.as_fd(), Some(Duration::ZERO)).unwrap());
            drop(high);
            crate::fd::set_nofile_soft_limit(soft).unwrap();
        }
    }
}
