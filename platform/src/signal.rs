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
//! someone replaced our handler in between, theirs is left in place, and the saved
//! disposition is kept: should that code put ours back later (as code that saves and
//! restores what it found does), ours catches the signal for no loop until a loop watches it
//! again, and when that loop stops, the disposition from before ours comes back.
//!
//! `SIGCHLD` is chained: a handler that was there before ours is called after ours, with the
//! kernel's arguments, so code that reaps its own children when `SIGCHLD` arrives (another
//! library, an older event loop) keeps hearing of them while a loop watches the signal. Other
//! signals are not chained: a loop watching `SIGINT` means the loop handles it.
//!
//! Ours is installed for `SIGCHLD` without `SA_NOCLDSTOP`, so a loop hears of children that
//! stop and continue (job control needs them). A handler below that was installed with
//! `SA_NOCLDSTOP` is called for those too: `SIGCHLD` does not queue, so the one signal that
//! arrives may say a child stopped while another child's exit, which that handler waits
//! for, was folded into it. A `SIGCHLD` handler takes an extra call in its stride.
//!
//! The chain says what ours calls. It changes only when ours goes on top of another handler
//! (what was below becomes the first level) and when ours comes off the top (the chain goes
//! back to what it was). When another handler went on top of ours, ours stays reachable
//! through it, so it keeps its chain. If ours later goes on top of that handler, which calls
//! ours again, the second call goes one level further down, to the handler that was below
//! ours at first: ours, theirs, ours, the first one; then it stops. Deeper stacks than that
//! lose their lowest handler.
//!
//! The handler reads the chain once per signal, through one pointer to a chain that never
//! changes after it is published, so a chain changing meanwhile gives it the old view or the
//! new one, never half of each. Near such a change a signal may reach a handler in between
//! twice (theirs, ours, theirs, ours, the first one); `SIGCHLD` handlers take coalesced and
//! extra signals in their stride anyway. Limits: the handlers below run under our signal
//! mask and flags (only `SA_ONSTACK` follows theirs); one that leaves by
//! `siglongjmp` or ends its thread is not supported; and when more than
//! `CHAINING_THREADS_MAX` threads are in chained calls at once, the others skip the chain.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst,
};

use libc::{c_int, c_void, siginfo_t};

use crate::cvt::cvt;

/// The highest signal number a loop can watch (`SIGRTMAX` on Linux).
#[cfg(target_os = "linux")]
pub const SIGNAL_NUMBER_MAX: i32 = 64;
/// The highest signal number a loop can watch (`NSIG - 1` on macOS).
#[cfg(target_os = "macos")]
pub const SIGNAL_NUMBER_MAX: i32 = 31;
/// The highest signal number a loop can watch on FreeBSD: 32 and 33 are the C library's own
/// (`SIGTHR`, which libthr's `sigaction` refuses, and `SIGLIBRT`, which librt's
/// notifications use), and real-time signals, from 65, are not supported.
#[cfg(target_os = "freebsd")]
pub const SIGNAL_NUMBER_MAX: i32 = 31;

/// How many loops can watch signals at the same time.
pub const NOTIFY_SLOTS_MAX: usize = 128;

const _: () = assert!(SIGNAL_NUMBER_MAX <= 64, "pending masks are 64 bits wide");

struct Slot {
    claimed: AtomicBool,
    fd: AtomicI32,
    mask: AtomicU64,
    pending: AtomicU64,
    /// How many times the handler ran for each signal number since the loop last looked.
    counts: [AtomicU32; SIGNAL_NUMBER_MAX as usize + 1],
    busy: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT_INIT: Slot = Slot {
    claimed: AtomicBool::new(false),
    fd: AtomicI32::new(-1),
    mask: AtomicU64::new(0),
    pending: AtomicU64::new(0),
    counts: [const { AtomicU32::new(0) }; SIGNAL_NUMBER_MAX as usize + 1],
    busy: AtomicUsize::new(0),
};
static SLOTS: [Slot; NOTIFY_SLOTS_MAX] = [SLOT_INIT; NOTIFY_SLOTS_MAX];
/// One past the highest slot ever claimed: the handler scans no further.
static SLOTS_HIGH: AtomicUsize = AtomicUsize::new(0);

struct Installed {
    watchers: usize,
    previous: Option<libc::sigaction>,
    /// `SIGCHLD`: the chain before ours went on top, put back when it comes off.
    chain_before: Chain,
}
// SAFETY: `libc::sigaction` is plain data (a handler address, flags and a signal set); the
// raw handler address it may hold is never dereferenced by us, only handed back to the kernel.
unsafe impl Send for Installed {}

static INSTALLED: Mutex<[Installed; SIGNAL_NUMBER_MAX as usize + 1]> = Mutex::new(
    [const { Installed { watchers: 0, previous: None, chain_before: [None; CHAIN_LEVELS] } };
        SIGNAL_NUMBER_MAX as usize + 1],
);

// ----- SIGCHLD chaining (see the module docs) ------------------------------------------------

/// How deep the chain goes: the handler below ours, and the one below that when a handler
/// that calls ours sits in between.
const CHAIN_LEVELS: usize = 2;

/// A handler in the chain: its address, and whether it takes `SA_SIGINFO` arguments.
type Link = Option<(usize, bool)>;
type Chain = [Link; CHAIN_LEVELS];

/// The chain ours calls, as the handler reads it: null, or a `Chain` that is never changed or
/// freed once published (each distinct chain is leaked once, and there are few of them). A
/// handler that read it keeps one consistent view, however the chain changes meanwhile.
static SIGCHLD_CHAIN: AtomicPtr<Chain> = AtomicPtr::new(std::ptr::null_mut());

/// The chain as the model has it (see the module docs), and every chain ever published.
/// Changed only in `install` and `restore`, under the `INSTALLED` lock.
struct ChainState {
    current: Chain,
    published: Vec<&'static Chain>,
}
static CHAIN_STATE: Mutex<ChainState> =
    Mutex::new(ChainState { current: [None; CHAIN_LEVELS], published: Vec::new() });

/// Threads inside a chained call (by `pthread_self`), the chain each one read, and the level
/// it is calling. A handler that calls ours again arrives on the same thread, inside the call.
const CHAINING_THREADS_MAX: usize = 64;
static CHAINING_THREAD: [AtomicUsize; CHAINING_THREADS_MAX] =
    [const { AtomicUsize::new(0) }; CHAINING_THREADS_MAX];
static CHAINING_CHAIN: [AtomicPtr<Chain>; CHAINING_THREADS_MAX] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; CHAINING_THREADS_MAX];
static CHAINING_LEVEL: [AtomicUsize; CHAINING_THREADS_MAX] =
    [const { AtomicUsize::new(0) }; CHAINING_THREADS_MAX];

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
    // glibc's threads use the first real-time signals itself, and its sigaction refuses them.
    #[cfg(target_os = "linux")]
    if signo > 31 && signo < libc::SIGRTMIN() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signo} is the C library's own; real-time signals start at {}", libc::SIGRTMIN()),
        ));
    }
    Ok(())
}

/// [`check_signal_number`], and not `SIGTTIN` or `SIGTTOU`: caught, they make a read of the
/// terminal from the background (or a write, with `stty tostop`) fail in a loop that never
/// ends. The kernel sends the signal and has the call restarted, or, without `SA_RESTART`,
/// fails it with `EINTR`, which is retried; either way the same call sends it again.
/// Ignored, the call fails with `EIO` instead (a write goes through), which a loop reports.
pub fn check_watchable(signo: i32) -> io::Result<()> {
    check_signal_number(signo)?;
    if signo == libc::SIGTTIN || signo == libc::SIGTTOU {
        let name = if signo == libc::SIGTTIN { "SIGTTIN" } else { "SIGTTOU" };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name} cannot be watched: caught, it makes terminal I/O from the background \
                 retry for good; ignore it instead (evloop::signal::ignore)"
            ),
        ));
    }
    Ok(())
}

/// Sets `signo`'s disposition to `SIG_IGN`, process-wide: what a job-control shell does with
/// `SIGTTIN`, `SIGTTOU` and `SIGTSTP`. Refused while a loop watches the signal (its watcher
/// would stop hearing it), for `SIGCHLD` (ignored, the kernel reaps children itself, and
/// nobody can wait for them), and for what [`check_signal_number`] refuses. A watcher
/// started later takes `SIG_IGN` as the disposition to restore when it stops.
pub fn ignore(signo: i32) -> io::Result<()> {
    if [libc::SIGKILL, libc::SIGSTOP].contains(&signo) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signo} cannot be ignored (SIGKILL and SIGSTOP never are)"),
        ));
    }
    if [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE].contains(&signo) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {signo} is a synchronous fault: ignoring it is undefined"),
        ));
    }
    // The range, and the C library's own signals.
    check_signal_number(signo)?;
    if signo == libc::SIGCHLD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "SIGCHLD cannot be ignored: the kernel would then reap every child itself, and nobody could wait for one",
        ));
    }
    let mut table = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    let d = &mut table[signo as usize];
    if d.watchers > 0 {
        return Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!("signal {signo} is watched by a loop: stop its watchers first"),
        ));
    }
    swap_action(signo, &handler_action(libc::SIG_IGN, 0))?;
    // A disposition kept for a handler of ours left below someone else's (see `unwatch`) is
    // out of date: this one is what the program wants now.
    d.previous = None;
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
                // The count before the mask: a loop that sees the bit finds the count.
                if let Some(count) = slot.counts.get(signo as usize) {
                    count.fetch_add(1, SeqCst);
                }
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

/// Calls the handlers below ours (see the module docs). Runs in signal context.
fn call_chained_sigchld(signo: c_int, info: *mut siginfo_t, context: *mut c_void) {
    if SIGCHLD_CHAIN.load(SeqCst).is_null() {
        return;
    }
    // SAFETY: pthread_self takes no arguments and only reads the calling thread's id.
    let me = unsafe { libc::pthread_self() } as usize;
    for ((thread, chain), level) in CHAINING_THREAD.iter().zip(&CHAINING_CHAIN).zip(&CHAINING_LEVEL) {
        if thread.load(SeqCst) == me {
            // Ours again, from a handler we called: one level further down the chain this
            // call began with, if there is one.
            let next = level.load(SeqCst) + 1;
            if let Some(chain) = published(chain.load(SeqCst)).filter(|_| next < CHAIN_LEVELS) {
                level.store(next, SeqCst);
                call_link(chain[next], signo, info, context);
                level.store(next - 1, SeqCst);
            }
            return;
        }
    }
    for ((thread, chain), level) in CHAINING_THREAD.iter().zip(&CHAINING_CHAIN).zip(&CHAINING_LEVEL) {
        if thread.compare_exchange(0, me, SeqCst, SeqCst).is_ok() {
            let current = SIGCHLD_CHAIN.load(SeqCst);
            chain.store(current, SeqCst);
            level.store(0, SeqCst);
            if let Some(c) = published(current) {
                call_link(c[0], signo, info, context);
            }
            thread.store(0, SeqCst);
            return;
        }
    }
    // More threads in chained calls at once than slots: skipping beats an unguarded cycle.
}

/// The chain `p` points to, if any.
fn published(p: *mut Chain) -> Option<&'static Chain> {
    // SAFETY: every non-null pointer in SIGCHLD_CHAIN or CHAINING_CHAIN comes from `publish`,
    // which leaks it: it is never freed, and never written after it was published.
    unsafe { p.as_ref() }
}

/// Calls the handler `link` names with the kernel's own arguments to ours. Its code stays
/// mapped (the program installed it); it runs under our signal mask and flags, not its own.
fn call_link(link: Link, signo: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let Some((addr, siginfo)) = link else { return };
    if siginfo {
        // SAFETY: `addr` is a handler installed with SA_SIGINFO (`link_of`): three arguments.
        let f = unsafe {
            std::mem::transmute::<*const (), extern "C" fn(c_int, *mut siginfo_t, *mut c_void)>(
                addr as *const (),
            )
        };
        f(signo, info, context);
    } else {
        // SAFETY: `addr` is a handler installed without SA_SIGINFO (`link_of`): one argument.
        let f = unsafe { std::mem::transmute::<*const (), extern "C" fn(c_int)>(addr as *const ()) };
        f(signo);
    }
}

/// The link for `act`: none for `SIG_DFL`, `SIG_IGN` and ours.
fn link_of(act: &libc::sigaction) -> Link {
    let addr = act.sa_sigaction;
    if addr == libc::SIG_DFL || addr == libc::SIG_IGN || addr == on_signal_address() {
        return None;
    }
    Some((addr, act.sa_flags & libc::SA_SIGINFO != 0))
}

/// Makes `chain` the one handlers read (not in signal context: it may allocate).
fn publish(state: &mut ChainState, chain: Chain) {
    let p = if chain == [None; CHAIN_LEVELS] {
        std::ptr::null_mut()
    } else {
        let leaked = match state.published.iter().find(|c| ***c == chain) {
            Some(c) => *c,
            None => {
                let c: &'static Chain = Box::leak(Box::new(chain));
                state.published.push(c);
                c
            }
        };
        (leaked as *const Chain).cast_mut()
    };
    SIGCHLD_CHAIN.store(p, SeqCst);
}

/// For a handler installed for `signo` with `SA_RESETHAND` (`ours`, its address): whether
/// the kernel invoked it for that installation, so the signal is its own to act on. The
/// disposition is then `SIG_DFL` (the reset done), or `ours` still, where code that saved
/// and put back the action dropped the flag (`SIG_DFL` is set here, as the flag would
/// have). Anything else there means another handler (installed later, chaining to what it
/// replaced) called it: the signal is that one's. Async-signal-safe: only `sigaction`.
pub(crate) fn invoked_for_own_install(signo: i32, ours: libc::sighandler_t) -> bool {
    match current_action(signo) {
        Ok(cur) if cur.sa_sigaction == libc::SIG_DFL => true,
        Ok(cur) if cur.sa_sigaction == ours => set_disposition(signo, Disposition::Default).is_ok(),
        _ => false,
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

/// Installs our handler for `signo`; returns what was there, and the `SIGCHLD` chain before.
fn install(signo: i32) -> io::Result<(libc::sigaction, Chain)> {
    let mut flags = libc::SA_RESTART | libc::SA_SIGINFO;
    if signo != libc::SIGCHLD {
        let previous = swap_action(signo, &handler_action(on_signal_address(), flags))?;
        return Ok((previous, [None; CHAIN_LEVELS]));
    }
    let mut state = CHAIN_STATE.lock().unwrap_or_else(|p| p.into_inner());
    let chain_before = state.current;
    // The chain is in place before ours is, so no SIGCHLD falls between.
    let before = current_action(signo)?;
    flags |= sigchld_flags(&before);
    let on_top = chain_on_top_of(&before, chain_before);
    state.current = on_top;
    publish(&mut state, on_top);
    let previous = match swap_action(signo, &handler_action(on_signal_address(), flags)) {
        Ok(p) => p,
        Err(e) => {
            state.current = chain_before;
            publish(&mut state, chain_before);
            return Err(e);
        }
    };
    if previous.sa_sigaction != before.sa_sigaction || link_of(&previous) != link_of(&before) {
        // Changed in between by code that does not take our lock: chain to what was there.
        let on_top = chain_on_top_of(&previous, chain_before);
        state.current = on_top;
        publish(&mut state, on_top);
    }
    Ok((previous, chain_before))
}

/// The chain once ours goes on top of `below`: ours calls `below`, and a call back from it
/// goes to what ours called before. On top of itself, ours keeps its chain.
fn chain_on_top_of(below: &libc::sigaction, chain: Chain) -> Chain {
    if below.sa_sigaction == on_signal_address() {
        return chain;
    }
    let mut on_top = [None; CHAIN_LEVELS];
    if let Some(link) = link_of(below) {
        on_top[0] = Some(link);
        on_top[1..].copy_from_slice(&chain[..CHAIN_LEVELS - 1]);
    }
    on_top
}

/// Our `SIGCHLD` flags over `below`: run where the handler below expects to run (Go's
/// runtime, for one, insists on the alternate signal stack). Never `SA_NOCLDSTOP`: loops
/// report children that stop and continue.
fn sigchld_flags(below: &libc::sigaction) -> c_int {
    match link_of(below) {
        Some(_) => below.sa_flags & libc::SA_ONSTACK,
        None => 0,
    }
}

/// Puts `previous` back for `signo` if ours is still the handler, and the `SIGCHLD` chain with
/// it; returns whether it did. If someone installed theirs over ours, theirs stays, and ours,
/// which theirs may call, keeps its chain.
fn restore(signo: i32, previous: &libc::sigaction, chain_before: Chain) -> io::Result<bool> {
    if current_action(signo)?.sa_sigaction != on_signal_address() {
        return Ok(false);
    }
    let stands_for_default = previous.sa_sigaction == libc::SIG_DFL
        || previous.sa_sigaction == LAST_RESORT.load(SeqCst) as libc::sighandler_t;
    if stands_for_default && signo != libc::SIGCHLD {
        // A signal sent while ours was the handler may still be pending: blocked in the
        // thread it was sent to, or queued for the process and not yet taken by the thread
        // the kernel woke for it. Put back as it is, `SIG_DFL` (or the last resort that
        // stands in for it, which ends the same way) would then kill or stop the process for
        // a signal a watcher owned. Setting `SIG_IGN` discards it (POSIX), in every thread at
        // once. `SIGCHLD` is left out: its default is to ignore, and `SIG_IGN` on it, even
        // for a moment, lets the kernel reap children.
        set_disposition(signo, Disposition::Ignore)?;
    }
    // SAFETY: `previous` is the sigaction the kernel gave us when we installed ours.
    cvt(unsafe { libc::sigaction(signo, previous, std::ptr::null_mut()) })?;
    if signo == libc::SIGCHLD {
        let mut state = CHAIN_STATE.lock().unwrap_or_else(|p| p.into_inner());
        state.current = chain_before;
        // Nothing calls ours now but a SIGCHLD the kernel gave it a moment ago: when the
        // chain before was empty, leave the published one for that signal.
        if chain_before != [None; CHAIN_LEVELS] {
            publish(&mut state, chain_before);
        }
    }
    Ok(true)
}

/// A loop's slot in the process-wide signal table. It owns the write end of the loop's
/// signal pipe, and closes it only after the handler can no longer touch it.
#[derive(Debug)]
pub struct NotifySlot {
    index: usize,
    write_end: Option<OwnedFd>,
}

impl NotifySlot {
    /// Claims a slot whose handler writes go to `write_end`, a pipe write end, made
    /// nonblocking here (a handler must never wait on a full pipe). The pipe's read end must
    /// stay open as long as the slot: a write to a pipe without a reader raises `SIGPIPE` in
    /// the handler, which kills a program that set it back to its default action.
    ///
    /// Fails (with [`io::ErrorKind::QuotaExceeded`], and no OS error number) when
    /// [`NOTIFY_SLOTS_MAX`] loops already watch signals.
    pub fn new(write_end: OwnedFd) -> io::Result<NotifySlot> {
        crate::fd::set_nonblocking(std::os::fd::AsFd::as_fd(&write_end), true)?;
        for (index, slot) in SLOTS.iter().enumerate() {
            if slot.claimed.compare_exchange(false, true, SeqCst, SeqCst).is_ok() {
                slot.mask.store(0, SeqCst);
                slot.pending.store(0, SeqCst);
                for count in &slot.counts {
                    count.store(0, SeqCst);
                }
                slot.fd.store(write_end.as_raw_fd(), SeqCst);
                SLOTS_HIGH.fetch_max(index + 1, SeqCst);
                return Ok(NotifySlot { index, write_end: Some(write_end) });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::QuotaExceeded,
            format!("more than {NOTIFY_SLOTS_MAX} loops of this process would be watching signals"),
        ))
    }

    fn slot(&self) -> &'static Slot {
        &SLOTS[self.index]
    }

    /// Starts delivering `signo` to this slot; installs the process handler if this is the
    /// first slot to watch it. Watching twice is a no-op. `SIGTTIN` and `SIGTTOU` are refused
    /// (see [`check_watchable`]).
    pub fn watch(&self, signo: i32) -> io::Result<()> {
        check_watchable(signo)?;
        let slot = self.slot();
        if slot.mask.load(SeqCst) & bit(signo) != 0 {
            return Ok(());
        }
        let mut table = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        let d = &mut table[signo as usize];
        if d.watchers == 0 {
            let (previous, chain_before) = install(signo)?;
            // Ours found on top, with a disposition kept from before (see `unwatch`): code
            // that had put its handler over ours put ours back since. What was there before
            // ours is still the one to restore.
            let stranded = previous.sa_sigaction == on_signal_address() && d.previous.is_some();
            if !stranded {
                d.previous = Some(previous);
                d.chain_before = chain_before;
            }
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
            if let Some(prev) = d.previous {
                // With someone else's handler on top, ours stays below it, and the
                // disposition from before ours is kept: a library that put its handler over
                // ours may put ours back later, and the next watcher then restores the right
                // one when it stops.
                if restore(signo, &prev, d.chain_before)? {
                    d.previous = None;
                }
            }
        }
        Ok(())
    }

    /// Forgets the catches of `signo` not taken yet: for a watcher that starts after they
    /// happened. Call it while this slot does not watch `signo`: a handler that looked at
    /// the mask before it changed and is still running on another thread is waited out
    /// first, and one that comes later finds the bit clear, so no catch lands after this.
    pub fn forget(&self, signo: i32) {
        let slot = self.slot();
        // A handler raises `busy` before its second look at the mask, and adds its catch
        // before lowering it.
        while slot.busy.load(SeqCst) != 0 {
            std::thread::yield_now();
        }
        if let Some(count) = slot.counts.get(signo as usize) {
            count.store(0, SeqCst);
        }
        slot.pending.fetch_and(!bit(signo), SeqCst);
    }

    /// The signals caught since the last call, as a mask (bit `n - 1` for signal `n`).
    pub fn take_pending(&self) -> u64 {
        self.slot().pending.swap(0, SeqCst)
    }

    /// The signals caught and not taken yet, as [`take_pending`](Self::take_pending) would
    /// give them, leaving them there.
    pub fn pending(&self) -> u64 {
        self.slot().pending.load(SeqCst)
    }

    /// How many times `signo` was caught since the last call for it: after its bit in
    /// [`take_pending`](Self::take_pending), at least once, unless an earlier call took the
    /// count of a delivery whose bit came later (then 0). The kernel folds a standard signal
    /// that arrives while the same one is pending, so this counts the handler's runs, not
    /// the `kill`s.
    pub fn take_count(&self, signo: i32) -> u32 {
        match self.slot().counts.get(signo as usize) {
            Some(count) => count.swap(0, SeqCst),
            None => 0,
        }
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

/// Stops the calling process's group as Ctrl-Z at its terminal would, and returns once the
/// process is continued (`SIGCONT`: a shell's `fg` or `bg`). `Ok(false)` at once, with
/// nothing sent, where `SIGTSTP` is ignored (a shell without job control started the
/// program, which must not stop then).
///
/// `SIGTSTP` goes to the group's other processes (a pipeline's other stages stop too) while
/// this process ignores it, then to the calling thread, with the default action in place: a
/// signal for the whole process could be taken by another thread, and this call return
/// before the process stops; one for the thread is taken on the way out of the call, so the
/// stop comes first. Meanwhile the thread does not block the signal, and a handler (a
/// loop's, another library's) comes back after, having seen nothing of it. The kernel
/// discards `SIGTSTP` at its default action sent to an orphaned group (no member with a
/// parent in another group of its session, so nobody to continue it): the call then
/// returns at once.
///
/// Where the terminal sends its group one signal, this is two steps, and so has windows: a
/// `SIGTSTP` from elsewhere while this process ignores it is lost (as a watcher's), one just
/// before the stop makes a second stop, and a `SIGCONT` between the two steps continues the
/// other processes before this one stops. Under a debugger (a traced process), the kernel
/// keeps an ignored signal for the tracer, which may stop the process twice.
pub fn stop_group_as_ctrl_z() -> io::Result<bool> {
    // Under the lock of the loops' watch and unwatch, which change the disposition too.
    let _table = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    let cur = current_action(libc::SIGTSTP)?;
    if cur.sa_sigaction == libc::SIG_IGN {
        return Ok(false);
    }
    // Ignored first: a SIGTSTP pending while the thread blocked it goes, rather than stop
    // the process (or reach the handler) at the unblock.
    set_disposition(libc::SIGTSTP, Disposition::Ignore)?;
    let stopped = (|| {
        let blocked = blocked_in_this_thread(libc::SIGTSTP)?;
        if blocked {
            set_blocked(&[libc::SIGTSTP], false)?;
        }
        // SAFETY: kill takes no pointers; pid 0 is the caller's process group. Ignored
        // here, the signal is discarded for this process as it is sent.
        let mut res = cvt(unsafe { libc::kill(0, libc::SIGTSTP) }).map(drop);
        if res.is_ok() {
            res = set_disposition(libc::SIGTSTP, Disposition::Default).and_then(|()| raise(libc::SIGTSTP));
        }
        // Continued now (or never stopped: an orphaned group, or an error above).
        let reblocked = if blocked { set_blocked(&[libc::SIGTSTP], true) } else { Ok(()) };
        res.and(reblocked)
    })();
    let restored = swap_action(libc::SIGTSTP, &cur).map(drop);
    stopped.and(restored).map(|()| true)
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

/// Whether the kernel reaps this process's children by itself: `SIGCHLD` set to `SIG_IGN`,
/// or its handler installed with `SA_NOCLDWAIT`. Waiting for a child then fails with
/// `ECHILD`, and `SIG_IGN` also means that no `SIGCHLD` arrives. Installing a handler of
/// our own would end that for the whole program: other code's children would stay zombies.
pub fn children_reaped_by_kernel() -> io::Result<bool> {
    let cur = current_action(libc::SIGCHLD)?;
    Ok(cur.sa_sigaction == libc::SIG_IGN || cur.sa_flags & libc::SA_NOCLDWAIT != 0)
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

/// Whether `signo` is blocked in the calling thread's signal mask.
pub fn blocked_in_this_thread(signo: i32) -> io::Result<bool> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: no new mask is given (null), so the call only writes the current one into
    // `set`, which is valid for writes of one sigset_t.
    crate::cvt::cvt_errno(unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), set.as_mut_ptr())
    })?;
    // SAFETY: pthread_sigmask succeeded and filled in `set`.
    let member = unsafe { libc::sigismember(set.as_ptr(), signo) };
    Ok(cvt(member)? == 1)
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

/// The handler [`install_over_default`] installs (one, the terminal's reset), by address; 0
/// before the first call. It ends as `SIG_DFL` does, so `restore` treats it as such.
static LAST_RESORT: AtomicUsize = AtomicUsize::new(0);

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
    LAST_RESORT.store(handler as usize, SeqCst);
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Two foreign SIGCHLD handlers: `below` was there first (SA_SIGINFO style); `over` goes
    // on top of the loops' handler and, as chaining libraries do, calls what it replaced.
    static BELOW_CALLS: AtomicUsize = AtomicUsize::new(0);
    static OVER_CALLS: AtomicUsize = AtomicUsize::new(0);
    static OVER_REPLACED: AtomicUsize = AtomicUsize::new(0);
    /// The thread whose signals `below` and `over` count (others' SIGCHLDs, if any, are not
    /// the test's).
    static COUNTING_THREAD: AtomicUsize = AtomicUsize::new(0);

    fn this_thread() -> usize {
        // SAFETY: pthread_self takes no arguments and only reads the calling thread's id.
        unsafe { libc::pthread_self() as usize }
    }

    fn count(calls: &AtomicUsize) {
        if COUNTING_THREAD.load(SeqCst) == this_thread() {
            calls.fetch_add(1, SeqCst);
        }
    }

    extern "C" fn below(_: c_int, _: *mut siginfo_t, _: *mut c_void) {
        count(&BELOW_CALLS);
    }

    extern "C" fn over(signo: c_int) {
        count(&OVER_CALLS);
        // SAFETY: OVER_REPLACED holds the loops' handler, which takes SA_SIGINFO arguments
        // (null ones are fine: it passes them on, and `below` ignores them).
        let ours = unsafe {
            std::mem::transmute::<*const (), extern "C" fn(c_int, *mut siginfo_t, *mut c_void)>(
                OVER_REPLACED.load(SeqCst) as *const (),
            )
        };
        ours(signo, std::ptr::null_mut(), std::ptr::null_mut());
    }

    fn assert_over_is_the_handler() {
        assert_eq!(
            disposition(libc::SIGCHLD).unwrap(),
            Disposition::Handler(over as *const () as libc::sighandler_t)
        );
    }

    /// Raises SIGCHLD on this thread (every handler has run when it returns) and returns
    /// (below's calls, over's calls, whether the slot saw it) since the last look.
    fn raise_and_count(slot: &NotifySlot) -> (usize, usize, bool) {
        raise(libc::SIGCHLD).unwrap();
        let seen = slot.take_pending() & bit(libc::SIGCHLD) != 0;
        (BELOW_CALLS.swap(0, SeqCst), OVER_CALLS.swap(0, SeqCst), seen)
    }

    /// The SIGCHLD tests change process-wide state, and count the SIGCHLDs they raise: they
    /// run one at a time, and a test elsewhere that starts a child (whose exit raises one)
    /// takes this too.
    pub(crate) static SIGCHLD_TESTS: Mutex<()> = Mutex::new(());

    extern "C" fn foreign(_: c_int) {}

    #[test]
    fn issue_2_ours_put_back_by_a_library_gives_way_to_the_first_disposition_at_the_next_stop() {
        // A library saves what it finds (ours, while a loop watches) and puts its handler
        // on top; the last watcher stops, leaving theirs; the library puts back what it
        // saved: ours, with no loop watching. The disposition from before ours used to be
        // dropped at that stop, so every later watcher restored ours, for good.
        let signo = libc::SIGPROF;
        set_disposition(signo, Disposition::Default).unwrap();
        let (_read_end, write_end) = crate::fd::pipe().unwrap();
        crate::fd::set_nonblocking(std::os::fd::AsFd::as_fd(&write_end), true).unwrap();
        let slot = NotifySlot::new(write_end).unwrap();
        slot.watch(signo).unwrap();
        let saved =
            swap_action(signo, &handler_action(foreign as *const () as libc::sighandler_t, 0)).unwrap();
        assert_eq!(saved.sa_sigaction, on_signal_address());
        slot.unwatch(signo).unwrap();
        assert_eq!(
            disposition(signo).unwrap(),
            Disposition::Handler(foreign as *const () as usize),
            "theirs stays"
        );
        swap_action(signo, &saved).unwrap();
        slot.watch(signo).unwrap();
        slot.unwatch(signo).unwrap();
        assert_eq!(disposition(signo).unwrap(), Disposition::Default);
        // And the next cycle restores it again.
        slot.watch(signo).unwrap();
        slot.unwatch(signo).unwrap();
        assert_eq!(disposition(signo).unwrap(), Disposition::Default);
    }

    #[test]
    fn sigchld_chains_to_the_handlers_below_and_never_in_a_cycle() {
        let _one_at_a_time = SIGCHLD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        COUNTING_THREAD.store(this_thread(), SeqCst);
        BELOW_CALLS.store(0, SeqCst);
        OVER_CALLS.store(0, SeqCst);
        let (_read_end, write_end) = crate::fd::pipe().unwrap();
        crate::fd::set_nonblocking(std::os::fd::AsFd::as_fd(&write_end), true).unwrap();
        let slot = NotifySlot::new(write_end).unwrap();
        swap_action(
            libc::SIGCHLD,
            &handler_action(below as *const () as libc::sighandler_t, libc::SA_SIGINFO),
        )
        .unwrap();
        assert_eq!(raise_and_count(&slot), (1, 0, false), "only `below` so far");

        slot.watch(libc::SIGCHLD).unwrap();
        assert_eq!(raise_and_count(&slot), (1, 0, true), "ours, then `below`");

        let replaced =
            swap_action(libc::SIGCHLD, &handler_action(over as *const () as libc::sighandler_t, 0)).unwrap();
        OVER_REPLACED.store(replaced.sa_sigaction, SeqCst);
        assert_eq!(raise_and_count(&slot), (1, 1, true), "`over`, ours, `below`");

        // Ours is under `over` now: stopping leaves `over` in place, and ours, which `over`
        // still calls, still calls `below`.
        slot.unwatch(libc::SIGCHLD).unwrap();
        assert_over_is_the_handler();
        assert_eq!(raise_and_count(&slot), (1, 1, false), "`over`, ours (not watching), `below`");

        // Ours on top of `over` again: ours, `over`, ours again, `below`; and no further.
        slot.watch(libc::SIGCHLD).unwrap();
        assert_eq!(raise_and_count(&slot), (1, 1, true), "ours, `over`, ours, `below`");

        // Off the top: `over` is back, and the chain is what it was.
        slot.unwatch(libc::SIGCHLD).unwrap();
        assert_over_is_the_handler();
        assert_eq!(raise_and_count(&slot), (1, 1, false), "`over`, ours, `below`");

        set_disposition(libc::SIGCHLD, Disposition::Default).unwrap();
    }

    #[test]
    fn ours_never_asks_for_sa_nocldstop_and_follows_sa_onstack() {
        let below = handler_action(
            below as *const () as libc::sighandler_t,
            libc::SA_SIGINFO | libc::SA_NOCLDSTOP | libc::SA_ONSTACK,
        );
        assert_eq!(sigchld_flags(&below), libc::SA_ONSTACK);
        assert_eq!(sigchld_flags(&handler_action(libc::SIG_DFL, libc::SA_NOCLDSTOP)), 0);
    }

    static MEETING_CALLS: AtomicUsize = AtomicUsize::new(0);
    static MEETING_ARRIVED: AtomicUsize = AtomicUsize::new(0);
    static MEETING_ON: AtomicBool = AtomicBool::new(false);
    static MEETING_MET: AtomicUsize = AtomicUsize::new(0);

    /// A handler below ours that, while MEETING_ON, waits for a second thread to be in it too
    /// (at most five seconds), so that two chained calls overlap.
    extern "C" fn meeting(_: c_int) {
        MEETING_CALLS.fetch_add(1, SeqCst);
        if MEETING_ON.load(SeqCst) {
            MEETING_ARRIVED.fetch_add(1, SeqCst);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while MEETING_ARRIVED.load(SeqCst) < 2 && std::time::Instant::now() < deadline {
                std::hint::spin_loop();
            }
            if MEETING_ARRIVED.load(SeqCst) >= 2 {
                MEETING_MET.fetch_add(1, SeqCst);
            }
        }
    }

    #[test]
    fn overlapping_chained_calls_on_two_threads_leave_the_chain_working() {
        let _one_at_a_time = SIGCHLD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        let (_read_end, write_end) = crate::fd::pipe().unwrap();
        crate::fd::set_nonblocking(std::os::fd::AsFd::as_fd(&write_end), true).unwrap();
        let slot = NotifySlot::new(write_end).unwrap();
        swap_action(libc::SIGCHLD, &handler_action(meeting as *const () as libc::sighandler_t, 0)).unwrap();
        slot.watch(libc::SIGCHLD).unwrap();
        MEETING_ON.store(true, SeqCst);
        let other = std::thread::spawn(|| raise(libc::SIGCHLD).unwrap());
        raise(libc::SIGCHLD).unwrap();
        other.join().unwrap();
        MEETING_ON.store(false, SeqCst);
        assert_eq!(MEETING_MET.load(SeqCst), 2, "both threads were in the chained call at once");
        assert_eq!(MEETING_CALLS.swap(0, SeqCst), 2);
        // Afterwards every SIGCHLD, on either thread, still reaches the handler below.
        for _ in 0..3 {
            raise(libc::SIGCHLD).unwrap();
            std::thread::spawn(|| raise(libc::SIGCHLD).unwrap()).join().unwrap();
        }
        assert_eq!(MEETING_CALLS.swap(0, SeqCst), 6);
        slot.unwatch(libc::SIGCHLD).unwrap();
        set_disposition(libc::SIGCHLD, Disposition::Default).unwrap();
    }

    #[test]
    fn the_chain_holds_while_loops_come_and_go_under_a_handler_on_top() {
        // `over` sits on top of ours and calls it; a loop starting and stopping puts ours on
        // top of `over` and takes it off again, changing the chain each time. Every SIGCHLD
        // meanwhile must still reach `below`.
        let _one_at_a_time = SIGCHLD_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        COUNTING_THREAD.store(this_thread(), SeqCst);
        let new_slot = || {
            let (read_end, write_end) = crate::fd::pipe().unwrap();
            crate::fd::set_nonblocking(std::os::fd::AsFd::as_fd(&write_end), true).unwrap();
            (read_end, NotifySlot::new(write_end).unwrap())
        };
        swap_action(
            libc::SIGCHLD,
            &handler_action(below as *const () as libc::sighandler_t, libc::SA_SIGINFO),
        )
        .unwrap();
        let (_first_read_end, first) = new_slot();
        first.watch(libc::SIGCHLD).unwrap();
        let replaced =
            swap_action(libc::SIGCHLD, &handler_action(over as *const () as libc::sighandler_t, 0)).unwrap();
        OVER_REPLACED.store(replaced.sa_sigaction, SeqCst);
        first.unwatch(libc::SIGCHLD).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let toggled = std::sync::Arc::new(AtomicUsize::new(0));
        let toggler = {
            let (stop, toggled) = (stop.clone(), toggled.clone());
            std::thread::spawn(move || {
                let (_read_end, slot) = new_slot();
                while !stop.load(SeqCst) {
                    slot.watch(libc::SIGCHLD).unwrap();
                    slot.unwatch(libc::SIGCHLD).unwrap();
                    toggled.fetch_add(1, SeqCst);
                    // (Under valgrind, which runs one thread at a time, let the raiser run.)
                    std::thread::yield_now();
                }
            })
        };
        // The toggler runs before the signals start, and toggles again while they arrive:
        // a handshake, so that a toggler scheduled late cannot leave the chain unchanged.
        while toggled.load(SeqCst) == 0 && !toggler.is_finished() {
            std::thread::yield_now();
        }
        let at_start = toggled.load(SeqCst);
        // 5000 signals, or one second's worth where the machine is slow (valgrind), and
        // until the chain changed at least once meanwhile (for at most 10 s more).
        let start = std::time::Instant::now();
        let enough = |raised: u32| {
            let elapsed = start.elapsed();
            let counted = raised >= 5000 || elapsed >= std::time::Duration::from_secs(1);
            let overlapped = toggled.load(SeqCst) > at_start || elapsed >= std::time::Duration::from_secs(11);
            counted && overlapped
        };
        let (mut raised, mut missed) = (0, 0);
        while !enough(raised) {
            let before = BELOW_CALLS.load(SeqCst);
            raise(libc::SIGCHLD).unwrap();
            raised += 1;
            if BELOW_CALLS.load(SeqCst) == before {
                missed += 1;
            }
        }
        stop.store(true, SeqCst);
        toggler.join().unwrap();
        assert!(toggled.load(SeqCst) > at_start, "the chain changed while signals arrived");
        assert_eq!(missed, 0, "of {raised} SIGCHLDs, these did not reach the handler below");
        set_disposition(libc::SIGCHLD, Disposition::Default).unwrap();
    }
}
