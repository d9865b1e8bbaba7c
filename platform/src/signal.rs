//! Signals: one process-wide handler per signal number, and a notification slot per loop.
//!
//! The handler is the only code here that runs in signal context. It touches atomics and
//! calls `write(2)`, both async-signal-safe, and preserves `errno`. For each loop slot that
//! watches the signal it sets the signal's bit in the slot's pending mask and writes one byte
//! to the slot's pipe, which the loop polls. A full pipe drops the byte; the pending bit is
//! already set, and a byte is already waiting.
//!
//! Dispositions are reference-counted across slots under a mutex that the handler never
//! takes: the first slot that watches a signal installs the handler and saves what was there;
//! when the last one stops, the saved disposition comes back (libuv restores `SIG_DFL`). If
//! someone replaced our handler in between, theirs is left in place.
//!
//! `SIGCHLD` is chained: a handler that was there before ours is called after ours, with the
//! kernel's arguments, so code that reaps its own children when `SIGCHLD` arrives (another
//! library, an older event loop) keeps hearing of them while a loop watches the signal. Other
//! signals are not chained: a loop watching `SIGINT` means the loop handles it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};

use libc::{c_int, c_void, siginfo_t};

use crate::cvt::cvt;

/// The highest signal number a loop can watch (`SIGRTMAX` on Linux).
#[cfg(target_os = "linux")]
pub const SIGNAL_NUMBER_MAX: i32 = 64;
/// The highest signal number a loop can watch (`NSIG - 1` on macOS).
#[cfg(target_os = "macos")]
pub const SIGNAL_NUMBER_MAX: i32 = 31;
/// The highest signal number a loop can watch (`SIGLIBRT`; FreeBSD's real-time signals start
/// at 65 and are not supported).
#[cfg(target_os = "freebsd")]
pub const SIGNAL_NUMBER_MAX: i32 = 33;

/// How many loops can watch signals at the same time.
pub const NOTIFY_SLOTS_MAX: usize = 128;

const _: () = assert!(SIGNAL_NUMBER_MAX <= 64, "pending masks are 64 bits wide");

struct Slot {
    claimed: AtomicBool,
    fd: AtomicI32,
    mask: AtomicU64,
    pending: AtomicU64,
    busy: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT_INIT: Slot = Slot {
    claimed: AtomicBool::new(false),
    fd: AtomicI32::new(-1),
    mask: AtomicU64::new(0),
    pending: AtomicU64::new(0),
    busy: AtomicUsize::new(0),
};
static SLOTS: [Slot; NOTIFY_SLOTS_MAX] = [SLOT_INIT; NOTIFY_SLOTS_MAX];
/// One past the highest slot ever claimed: the handler scans no further.
static SLOTS_HIGH: AtomicUsize = AtomicUsize::new(0);

struct Installed {
    watchers: usize,
    previous: Option<libc::sigaction>,
}
// SAFETY: `libc::sigaction` is plain data (a handler address, flags and a signal set); the
// raw handler address it may hold is never dereferenced by us, only handed back to the kernel.
unsafe impl Send for Installed {}

static INSTALLED: Mutex<[Installed; SIGNAL_NUMBER_MAX as usize + 1]> =
    Mutex::new([const { Installed { watchers: 0, previous: None } }; SIGNAL_NUMBER_MAX as usize + 1]);

/// The `SIGCHLD` handler that was in place when ours went in (0: none, or `SIG_DFL`/`SIG_IGN`),
/// and whether it takes `SA_SIGINFO` arguments. Written under the `INSTALLED` lock; read by
/// the handler.
static SIGCHLD_CHAINED: AtomicUsize = AtomicUsize::new(0);
static SIGCHLD_CHAINED_SIGINFO: AtomicBool = AtomicBool::new(false);
/// The `siginfo` of the chained call in progress. A handler that chains back to ours (one
/// installed over ours, which we later went back on top of) calls ours again with the same
/// `siginfo`, which lives on the signalled thread's stack: seeing it here ends the cycle.
static SIGCHLD_CHAINING: AtomicPtr<siginfo_t> = AtomicPtr::new(std::ptr::null_mut());

fn bit(signo: i32) -> u64 {
    1u64 << (signo - 1)
}

/// Checks that `signo` can be watched: in `1..=SIGNAL_NUMBER_MAX`, and not `SIGKILL`,
/// `SIGSTOP` (they cannot be caught) or a synchronous fault (`SIGSEGV`, `SIGBUS`, `SIGILL`,
/// `SIGFPE`: returning from their handler re-runs the faulting instruction).
pub fn check_signal_number(signo: i32) -> io::Result<()> {
    if !(1..=SIGNAL_NUMBER_MAX).contains(&signo) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal number {signo} is out of range (1..={SIGNAL_NUMBER_MAX})"),
        ));
    }
    if [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE]
        .contains(&signo)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signo} cannot be watched by a loop"),
        ));
    }
    Ok(())
}

extern "C" fn on_signal(signo: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let errno = crate::cvt::errno_location();
    // SAFETY: `errno` points at this thread's errno, valid for the thread's lifetime.
    let saved = unsafe { *errno };
    if (1..=SIGNAL_NUMBER_MAX).contains(&signo) {
        let b = bit(signo);
        let high = SLOTS_HIGH.load(SeqCst);
        for slot in &SLOTS[..high] {
            if slot.mask.load(SeqCst) & b == 0 {
                continue;
            }
            // `busy` keeps the slot's fd open while we use it: NotifySlot::drop waits for it.
            slot.busy.fetch_add(1, SeqCst);
            let fd = slot.fd.load(SeqCst);
            if fd >= 0 && slot.mask.load(SeqCst) & b != 0 {
                slot.pending.fetch_or(b, SeqCst);
                let byte = signo as u8;
                // SAFETY: `fd` is the slot's pipe write end, kept open until `busy` drops to
                // zero; `byte` is valid for one byte. write(2) is async-signal-safe. A full
                // pipe (EAGAIN) is fine: a byte is already waiting for the loop.
                unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
            }
            slot.busy.fetch_sub(1, SeqCst);
        }
    }
    if signo == libc::SIGCHLD {
        call_chained_sigchld(signo, info, context);
    }
    // SAFETY: as above.
    unsafe { *errno = saved };
}

/// Calls the `SIGCHLD` handler that was there before ours, if there was one.
fn call_chained_sigchld(signo: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let addr = SIGCHLD_CHAINED.load(SeqCst);
    if addr == 0 || SIGCHLD_CHAINING.load(SeqCst) == info {
        return;
    }
    // Handlers on other threads may interleave here; at worst one of them chains once more.
    let outer = SIGCHLD_CHAINING.swap(info, SeqCst);
    if SIGCHLD_CHAINED_SIGINFO.load(SeqCst) {
        // SAFETY: `addr` is the handler the kernel held for SIGCHLD with SA_SIGINFO set, so it
        // has the three-argument signature, and it gets the kernel's own arguments to ours.
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = unsafe { std::mem::transmute(addr) };
        f(signo, info, context);
    } else {
        // SAFETY: `addr` is the handler the kernel held for SIGCHLD without SA_SIGINFO, so it
        // has the one-argument signature.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(addr) };
        f(signo);
    }
    SIGCHLD_CHAINING.store(outer, SeqCst);
}

/// Whether `act` runs a function (not `SIG_DFL` or `SIG_IGN`).
fn is_function(act: &libc::sigaction) -> bool {
    act.sa_sigaction != libc::SIG_DFL && act.sa_sigaction != libc::SIG_IGN
}

/// Makes `previous` the handler ours chains to (none when it is not a function).
fn set_chained_sigchld(previous: Option<&libc::sigaction>) {
    match previous.filter(|p| is_function(p)) {
        Some(p) => {
            SIGCHLD_CHAINED_SIGINFO.store(p.sa_flags & libc::SA_SIGINFO != 0, SeqCst);
            SIGCHLD_CHAINED.store(p.sa_sigaction, SeqCst);
        }
        None => SIGCHLD_CHAINED.store(0, SeqCst),
    }
}

fn current_action(signo: i32) -> io::Result<libc::sigaction> {
    let mut cur = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a null new action only queries; `cur` is valid for writes of one sigaction.
    cvt(unsafe { libc::sigaction(signo, std::ptr::null(), cur.as_mut_ptr()) })?;
    // SAFETY: sigaction succeeded and filled in `cur`.
    Ok(unsafe { cur.assume_init() })
}

/// A sigaction that runs the handler at `handler` with `flags`, every signal blocked while it
/// runs (so it cannot interrupt itself).
fn handler_action(handler: libc::sighandler_t, flags: c_int) -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction (SIG_DFL, no flags, empty mask); every field we
    // rely on is then set below.
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = flags;
    // SAFETY: `act.sa_mask` is a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut act.sa_mask) };
    act
}

/// Installs `act` for `signo` and returns what was there.
fn swap_action(signo: i32, act: &libc::sigaction) -> io::Result<libc::sigaction> {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: `act` is a fully initialised sigaction and `old` is valid for writes.
    cvt(unsafe { libc::sigaction(signo, act, old.as_mut_ptr()) })?;
    // SAFETY: sigaction succeeded and filled in `old`.
    Ok(unsafe { old.assume_init() })
}

fn on_signal_address() -> libc::sighandler_t {
    on_signal as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as libc::sighandler_t
}

fn install(signo: i32) -> io::Result<libc::sigaction> {
    let mut flags = libc::SA_RESTART | libc::SA_SIGINFO;
    if signo == libc::SIGCHLD {
        // The handler we chain to is in place before ours is, so no SIGCHLD falls between.
        let before = current_action(signo)?;
        set_chained_sigchld(Some(&before));
        // Stopped and continued children wake the loop for nothing; skip them, unless the
        // chained handler asked for them.
        if !is_function(&before) || before.sa_flags & libc::SA_NOCLDSTOP != 0 {
            flags |= libc::SA_NOCLDSTOP;
        }
    }
    let previous = swap_action(signo, &handler_action(on_signal_address(), flags));
    if signo == libc::SIGCHLD {
        // (Changed in between by code that does not take our lock? Chain to what was there.)
        set_chained_sigchld(previous.as_ref().ok());
    }
    previous
}

fn restore(signo: i32, previous: &libc::sigaction) -> io::Result<()> {
    let cur = current_action(signo)?;
    if cur.sa_sigaction == on_signal_address() {
        // SAFETY: `previous` is the sigaction the kernel gave us when we installed ours.
        cvt(unsafe { libc::sigaction(signo, previous, std::ptr::null_mut()) })?;
    }
    // Someone who replaced our handler keeps theirs; either way, ours chains no more.
    if signo == libc::SIGCHLD {
        set_chained_sigchld(None);
    }
    Ok(())
}

/// A loop's slot in the process-wide signal table. It owns the write end of the loop's
/// signal pipe, and closes it only after the handler can no longer touch it.
#[derive(Debug)]
pub struct NotifySlot {
    index: usize,
    write_end: Option<OwnedFd>,
}

impl NotifySlot {
    /// Claims a slot whose handler writes go to `write_end` (a nonblocking pipe write end).
    ///
    /// Fails (with [`io::ErrorKind::OutOfMemory`], and no OS error number) when
    /// [`NOTIFY_SLOTS_MAX`] loops already watch signals.
    pub fn new(write_end: OwnedFd) -> io::Result<NotifySlot> {
        for (index, slot) in SLOTS.iter().enumerate() {
            if slot.claimed.compare_exchange(false, true, SeqCst, SeqCst).is_ok() {
                slot.mask.store(0, SeqCst);
                slot.pending.store(0, SeqCst);
                slot.fd.store(write_end.as_raw_fd(), SeqCst);
                SLOTS_HIGH.fetch_max(index + 1, SeqCst);
                return Ok(NotifySlot { index, write_end: Some(write_end) });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("more than {NOTIFY_SLOTS_MAX} loops are watching signals"),
        ))
    }

    fn slot(&self) -> &'static Slot {
        &SLOTS[self.index]
    }

    /// Starts delivering `signo` to this slot; installs the process handler if this is the
    /// first slot to watch it. Watching twice is a no-op.
    pub fn watch(&self, signo: i32) -> io::Result<()> {
        check_signal_number(signo)?;
        let slot = self.slot();
        if slot.mask.load(SeqCst) & bit(signo) != 0 {
            return Ok(());
        }
        let mut table = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let d = &mut table[signo as usize];
        if d.watchers == 0 {
            d.previous = Some(install(signo)?);
        }
        d.watchers += 1;
        slot.mask.fetch_or(bit(signo), SeqCst);
        Ok(())
    }

    /// Stops delivering `signo` to this slot; restores the previous disposition if this was
    /// the last slot watching it. Unwatching a signal not watched is a no-op.
    pub fn unwatch(&self, signo: i32) -> io::Result<()> {
        check_signal_number(signo)?;
        let slot = self.slot();
        if slot.mask.fetch_and(!bit(signo), SeqCst) & bit(signo) == 0 {
            return Ok(());
        }
        let mut table = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let d = &mut table[signo as usize];
        d.watchers -= 1;
        if d.watchers == 0 {
            if let Some(prev) = d.previous.take() {
                restore(signo, &prev)?;
            }
        }
        Ok(())
    }

    /// The signals caught since the last call, as a mask (bit `n - 1` for signal `n`).
    pub fn take_pending(&self) -> u64 {
        self.slot().pending.swap(0, SeqCst)
    }
}

impl Drop for NotifySlot {
    fn drop(&mut self) {
        let slot = self.slot();
        let mask = slot.mask.load(SeqCst);
        for signo in 1..=SIGNAL_NUMBER_MAX {
            if mask & bit(signo) != 0 {
                let _ = self.unwatch(signo);
            }
        }
        slot.fd.store(-1, SeqCst);
        // A handler on another thread may have loaded the fd just before; wait it out.
        while slot.busy.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
        drop(self.write_end.take());
        slot.claimed.store(false, SeqCst);
    }
}

/// Sends `signo` to the calling thread (`raise(3)`): the handler has run when this returns,
/// unless the thread blocks the signal.
pub fn raise(signo: i32) -> io::Result<()> {
    // SAFETY: raise takes no pointers.
    if unsafe { libc::raise(signo) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a signal does when it arrives, reduced to what callers compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// `SIG_DFL`: the default action.
    Default,
    /// `SIG_IGN`: ignored.
    Ignore,
    /// A handler function, by address.
    Handler(usize),
}

/// The current disposition of `signo`.
pub fn disposition(signo: i32) -> io::Result<Disposition> {
    let cur = current_action(signo)?;
    Ok(match cur.sa_sigaction {
        libc::SIG_DFL => Disposition::Default,
        libc::SIG_IGN => Disposition::Ignore,
        addr => Disposition::Handler(addr),
    })
}

/// Sets `signo` to `SIG_DFL` or `SIG_IGN` (a handler address is refused with `EINVAL`).
pub fn set_disposition(signo: i32, to: Disposition) -> io::Result<()> {
    // SAFETY: all-zero is a valid sigaction (SIG_DFL, no flags, empty mask).
    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
    act.sa_sigaction = match to {
        Disposition::Default => libc::SIG_DFL,
        Disposition::Ignore => libc::SIG_IGN,
        Disposition::Handler(_) => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    // SAFETY: `act` is fully initialised; no old action is asked for.
    cvt(unsafe { libc::sigaction(signo, &act, std::ptr::null_mut()) })?;
    Ok(())
}

/// Blocks (`true`) or unblocks (`false`) `signos` in the calling thread's signal mask.
pub fn set_blocked(signos: &[i32], blocked: bool) -> io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is valid for writes of one sigset_t; sigemptyset initialises it.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    for &s in signos {
        // SAFETY: `set` was initialised by sigemptyset above.
        cvt(unsafe { libc::sigaddset(set.as_mut_ptr(), s) })?;
    }
    let how = if blocked { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
    // SAFETY: `set` is initialised; no old mask is asked for.
    let rc = unsafe { libc::pthread_sigmask(how, set.as_ptr(), std::ptr::null_mut()) };
    crate::cvt::cvt_errno(rc)
}

/// Installs `handler` as a one-shot (`SA_RESETHAND`) last resort for `signo`, only where the
/// signal would otherwise take its default action:
///
/// - if no loop watches `signo` and its disposition is `SIG_DFL`, `handler` is installed now;
/// - if loops watch it, the loops' handler stays, and `handler` becomes the disposition they
///   put back when their last watcher stops, if that would have been `SIG_DFL`;
/// - any other disposition (`SIG_IGN`, someone else's handler) stays as it is.
///
/// The check and the change happen under the lock that serialises the loops' watch and
/// unwatch, so neither can slip in between.
pub(crate) fn install_over_default(signo: i32, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    check_signal_number(signo)?;
    let act = handler_action(handler as libc::sighandler_t, libc::SA_RESETHAND);
    let mut table = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    let d = &mut table[signo as usize];
    if d.watchers > 0 {
        if let Some(previous) = d.previous.as_mut().filter(|p| p.sa_sigaction == libc::SIG_DFL) {
            *previous = act;
        }
        return Ok(());
    }
    if current_action(signo)?.sa_sigaction == libc::SIG_DFL {
        swap_action(signo, &act)?;
    }
    Ok(())
}
