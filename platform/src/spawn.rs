//! Starting child processes: on Linux a vfork path of our own, elsewhere `posix_spawn`
//! wherever it can express the request, and fork/exec otherwise.
//!
//! # The vfork path (Linux)
//!
//! `clone(CLONE_VM | CLONE_VFORK)`, as glibc's `posix_spawn` (2.24 and later) runs its child,
//! but running `child_exec`, the fork path's child code: no page tables are copied, however
//! large the parent. The child shares the parent's memory until its exec, so it only reads
//! what the parent prepared (nothing allocates), writes only its own stack (a mapping with a
//! guard, kept per thread), its report, the calling thread's `errno` (its
//! failed calls set it; the parent reads `errno` only for `clone`'s own failure) and
//! `STOPS_BEFORE_EXEC` (the stop signals it caught, for the parent), and every signal stays
//! blocked until the last step, so no handler of the parent's runs in it. It takes every
//! request but ids, which would change the shared memory's dumpable flag and let the new
//! user stop the child with the parent suspended (see `vfork_can`). It gives the child's pidfd through `CLONE_PIDFD`.
//! A failed child leaves its report in the parent's frame, read once `clone` returns: no
//! pipe, which a fork by another thread could hold open. A first clone finds out whether the
//! child really shares memory; where it does not (valgrind and QEMU run such a clone as a
//! fork), reports take the fork path's error pipe. glibc before 2.24 (whose `clone` child
//! overwrote its caller's thread id, bug 19957) and a `clone` that refuses `CLONE_VM` leave
//! the spawns to `posix_spawn`.
//!
//! # posix_spawn
//!
//! macOS implements it in the kernel, glibc with `clone(CLONE_VM | CLONE_VFORK)`. It is used
//! on macOS (and on Linux where the vfork path is refused) unless the request needs
//! something it cannot say. Not on FreeBSD: its `posix_spawn` reaps a child whose exec
//! failed with a `WNOHANG` wait, which can come before that child is a zombie (the
//! caller's vfork-style wait ends as the child starts to exit). The zombie is then left for
//! good, with a pid nobody was told; the fork path reaps its failed child itself. (libuv
//! forks there too.) What `posix_spawn` cannot say:
//!
//! - a uid, gid or supplementary groups (posix_spawn has no way to switch ids);
//! - a working directory where `posix_spawn_file_actions_addchdir_np` is missing (glibc
//!   before 2.29, macOS before 10.15, FreeBSD before 13.1), or, on macOS, together with a
//!   relative executable path (that combination reports `ENOENT` although the child ran,
//!   rust-lang/rust#80537);
//! - `setsid` where `POSIX_SPAWN_SETSID` is missing (glibc before 2.26, macOS before 10.15,
//!   FreeBSD);
//! - except on macOS, a process group or session, and a caller in front of a terminal: a
//!   Ctrl-Z can stop its child before the exec, with the caller suspended (see
//!   `discard_stop` for how our own child avoids it);
//! - anything, where `posix_spawn_file_actions_addclosefrom_np` is missing (but on macOS,
//!   which has `POSIX_SPAWN_CLOEXEC_DEFAULT`): the child would inherit every fd of the
//!   parent's that lacks close-on-exec, the classic source of pipes that never see their end
//!   of file.
//!
//! Optional functions are looked up with `dlsym` at run time, so the binary runs on the
//! oldest libc this crate builds for and uses what the running one offers.
//!
//! # The fallback
//!
//! `fork`, then in the child only async-signal-safe calls on data prepared before the fork:
//! nothing allocates between `fork` and `exec`. All signals are blocked in the parent around
//! `fork`, so no handler of the parent's runs in the child. An exec failure (and the failure
//! of any step before it) travels back through a close-on-exec pipe as the step and its
//! error number; end of file on that pipe means the exec succeeded. A failed child is reaped
//! before this returns.
//!
//! # What the child gets, on every path
//!
//! - Every signal at its default disposition (`SIG_IGN` included) and an empty signal mask.
//! - Exactly the fds the request maps, plus 0, 1 and 2 where the request leaves them alone.
//!   Every other fd is closed: by `POSIX_SPAWN_CLOEXEC_DEFAULT` on macOS, by
//!   `posix_spawn_file_actions_addclosefrom_np` where it exists (glibc 2.34, FreeBSD 13.1), by
//!   `close_range` (Linux), `closefrom` (FreeBSD, whose `/dev/fd` may list only 0 to 2) or a
//!   close loop over the listed fds on the fork and vfork paths. Where `posix_spawn` has no
//!   way to close them (glibc before 2.34, musl, FreeBSD before 13.1), it is not used: such
//!   spawns take the fork path. Every fd evloop creates is close-on-exec besides.
//! - Sources are moved out of the way before any target is written: a source whose number is
//!   itself a target (the classic "stdout and stderr swapped" case) is first duplicated above
//!   every target, so the mapping never reads an fd it already overwrote.

use std::ffi::{CStr, CString, OsStr, OsString, c_char, c_int};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;

use crate::cvt::{cvt, cvt_errno, cvt_r, errno};
use crate::process::Pid;

/// What to execute.
#[derive(Clone, Copy, Debug)]
pub enum Program<'a> {
    /// This path, as it is (it contains a `/`; a relative one is relative to the child's
    /// working directory).
    Path(&'a CStr),
    /// A name to look up in the directories of a `PATH` value, as `execvp` does: the first
    /// entry where the exec succeeds wins, entries where the file is missing are skipped, and
    /// if none succeeds the error is `EACCES` when some entry was not executable, `ENOENT`
    /// otherwise. `path: None` searches this process's `PATH`.
    Search {
        /// The program name (no `/`).
        name: &'a CStr,
        /// The `PATH` value to search; `None` for this process's own.
        path: Option<&'a OsStr>,
    },
}

/// Where a child's fd comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The parent's fd with the same number, as it is.
    Keep,
    /// A copy of this parent fd (which stays the parent's).
    Fd(RawFd),
    /// None: the child's fd is closed (a shell's `2>&-`). Above 2 this is what leaving the
    /// fd out does.
    Close,
}

/// One fd of the child: `target` in the child is `source` from the parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdMapping {
    /// The fd number in the child.
    pub target: RawFd,
    /// Where it comes from.
    pub source: Source,
}

/// What to spawn and how.
#[derive(Debug)]
pub struct Request<'a> {
    /// The executable.
    pub program: Program<'a>,
    /// `argv[0]`.
    pub argv0: &'a CStr,
    /// `argv[1..]`.
    pub args: &'a [CString],
    /// The environment, as `KEY=value` strings; `None` passes this process's environment on
    /// (`environ`, read at the moment of the spawn).
    pub env: Option<&'a [CString]>,
    /// The child's working directory; `None` keeps the parent's.
    pub cwd: Option<&'a CStr>,
    /// Switch to this user id before exec.
    pub uid: Option<u32>,
    /// Switch to this group id before exec (supplementary groups are dropped when either id
    /// is set, unless `groups` sets them).
    pub gid: Option<u32>,
    /// Set these supplementary groups before exec (`setgroups`), before the ids switch.
    pub groups: Option<&'a [u32]>,
    /// Join process group `n` (0: a new group led by the child).
    pub process_group: Option<Pid>,
    /// Start a new session (and process group) led by the child.
    pub setsid: bool,
    /// The child's fds. 0, 1 and 2 are kept when not listed; every other fd is closed.
    /// Targets must be distinct.
    pub fds: &'a [FdMapping],
    /// Which way to start the child: [`Via::Best`] but in tests of the other paths.
    pub via: Via,
    /// Linux: return a pidfd for the child where the way it starts gives one for free
    /// (`CLONE_PIDFD`, Linux 5.2). Ignored elsewhere.
    pub want_pidfd: bool,
    /// A terminal whose foreground process group the child makes its own, after joining
    /// its group and before its exec (`tcsetpgrp`), so it never starts in the background:
    /// shells do it in the child as well as in the parent. The vfork and fork paths only.
    pub foreground: Option<RawFd>,
    /// The child's fd (after the moves of `fds`) whose terminal becomes the controlling
    /// terminal of the new session (`TIOCSCTTY`), as `login_tty` does. Needs `setsid`. The
    /// vfork and fork paths only.
    pub controlling_terminal: Option<RawFd>,
    /// Signals the child starts with ignored (`SIG_IGN`, which its exec keeps): bit `n - 1`
    /// for signal `n`, 1 to 64 but `SIGKILL` and `SIGSTOP`. Every other signal starts at its
    /// default action. The vfork and fork paths only.
    pub ignored_signals: u64,
    /// A signal the child gets when its parent dies, 0 for none: on Linux when the thread
    /// that spawned it ends (`PR_SET_PDEATHSIG`), on FreeBSD when the process does
    /// (`PROC_PDEATHSIG_CTL`). Set after the ids switch (which would clear it), and followed
    /// by a look at the parent, so a parent gone before it counts too. macOS has no such
    /// thing: the caller refuses it there. The vfork and fork paths only.
    pub parent_death_signal: c_int,
}

/// Whether `signal` is in the bit set `set` of [`Request::ignored_signals`].
fn signal_in(set: u64, signal: c_int) -> bool {
    (1..=64).contains(&signal) && set & (1 << (signal - 1)) != 0
}

/// Which way to start a child.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Via {
    /// The fastest way that can express the request: on Linux the vfork path, on macOS
    /// `posix_spawn`, and fork/exec where neither can (always on FreeBSD).
    #[default]
    Best,
    /// `posix_spawn` where it can express the request, fork/exec otherwise (the way macOS
    /// goes; for tests of that path on Linux).
    PosixSpawn,
    /// fork/exec (for tests of that path).
    Fork,
}

/// How a child was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Linux: `clone(CLONE_VM | CLONE_VFORK)` running this module's own child code.
    Vfork,
    /// `posix_spawn`.
    PosixSpawn,
    /// `fork` then `execve`.
    Fork,
}

/// The step of a spawn that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// In the parent, before the child existed (a pipe, `fork`, the plan for the fds).
    Setup,
    /// Somewhere in `posix_spawn`: the call reports one error number for every step.
    Spawn,
    /// Setting up the child's fd `n` (its source is not open, or `dup2` failed).
    Fd(RawFd),
    /// Moving the source of the child's fd `n` above every child fd number, out of the way
    /// of the others: no free number there (the open-file limit).
    FdRoom(RawFd),
    /// `setsid`.
    Session,
    /// `setpgid`.
    Group,
    /// `tcsetpgrp`: taking the terminal for the child's group.
    Foreground,
    /// `TIOCSCTTY`: making the terminal on the child's fd `n` the session's controlling
    /// terminal.
    ControllingTerminal(RawFd),
    /// `chdir` to the working directory.
    Chdir,
    /// `setgroups`: the supplementary groups.
    SetGroups,
    /// `setgid`.
    SetGid,
    /// `setuid`.
    SetUid,
    /// Asking for the signal on the parent's death (`prctl`, `procctl`).
    ParentDeathSignal,
    /// `execve`.
    Exec,
}

/// A failed spawn: the error and the step it came from. No child is left behind.
#[derive(Debug)]
pub struct SpawnError {
    /// The OS error.
    pub error: io::Error,
    /// Where it happened.
    pub stage: Stage,
}

impl SpawnError {
    fn new(stage: Stage, error: io::Error) -> SpawnError {
        SpawnError { error, stage }
    }
    fn os(stage: Stage, errno: i32) -> SpawnError {
        SpawnError { error: io::Error::from_raw_os_error(errno), stage }
    }
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// Its process id.
    pub pid: Pid,
    /// How it was started.
    pub method: Method,
    /// A pidfd for it, when [`Request::want_pidfd`] asked for one and the way it started
    /// gave one (Linux only).
    pub pidfd: Option<OwnedFd>,
}

/// The `PATH` searched when the child's environment has none (glibc's `_CS_PATH`).
pub const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// `bytes` as a C string, if its one NUL byte is its last. The scan is the C library's
/// `strlen`: `CStr::from_bytes_with_nul` scans a slice this short one byte at a time, which
/// costs about twice as many instructions for a name like `/bin/true`.
///
/// ```
/// use evloop_platform::spawn::c_str_with_nul;
/// assert_eq!(c_str_with_nul(b"/bin/true\0").unwrap().to_bytes(), b"/bin/true");
/// assert!(c_str_with_nul(b"/bin/\0true\0").is_none()); // a NUL inside
/// assert!(c_str_with_nul(b"/bin/true").is_none()); // no NUL at the end
/// ```
#[inline]
pub fn c_str_with_nul(bytes: &[u8]) -> Option<&CStr> {
    if bytes.last() != Some(&0) {
        return None;
    }
    // SAFETY: `bytes` ends with a NUL byte, so strlen stops inside the slice.
    let len = unsafe { libc::strlen(bytes.as_ptr().cast()) };
    if len + 1 != bytes.len() {
        return None;
    }
    // SAFETY: the last byte is a NUL and the first NUL (strlen's stop) is that same byte.
    Some(unsafe { CStr::from_bytes_with_nul_unchecked(bytes) })
}

/// The longest string `execve` takes as one argument or one environment entry, counting its
/// NUL, where the kernel has such a limit: Linux's `MAX_ARG_STRLEN`, 32 pages (128 KiB with
/// 4 KiB pages), on top of the limit on the whole (`ARG_MAX`). A longer one fails the exec
/// with `E2BIG` however short the rest is. macOS and FreeBSD limit only the whole.
///
/// ```
/// # #[cfg(target_os = "linux")]
/// assert!(evloop_platform::spawn::one_exec_string_bytes_max().unwrap() >= 128 * 1024);
/// ```
pub fn one_exec_string_bytes_max() -> Option<usize> {
    if cfg!(target_os = "linux") { Some(32 * page_bytes()) } else { None }
}

/// The size of a memory page.
fn page_bytes() -> usize {
    // SAFETY: sysconf only reads a system constant.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096)
}

/// The longest file name (`NAME_MAX`) on Linux, macOS and FreeBSD.
const NAME_BYTES_MAX: usize = 255;

/// Starts a child as `req` says. See the module documentation.
pub fn spawn(req: &Request<'_>) -> Result<Spawned, SpawnError> {
    if let Program::Search { name, .. } = req.program {
        // No file has a longer name, so no `PATH` entry can help: `ENAMETOOLONG`, as glibc's
        // and musl's `execvp` say, where a search that went on would end with `ENOENT`.
        if name.to_bytes().len() > NAME_BYTES_MAX {
            return Err(SpawnError::os(Stage::Exec, libc::ENAMETOOLONG));
        }
    }
    let plan = FdPlan::new(req.fds)?;
    let mut argv_stack = [const { MaybeUninit::uninit() }; PTRS_ON_STACK];
    let argv = PtrArray::new(req.argv0, req.args, &mut argv_stack);
    let env_ptrs = req.env.map(|env| {
        let mut v: Vec<*const c_char> = env.iter().map(|s| s.as_ptr()).collect();
        v.push(std::ptr::null());
        v
    });
    let envp = match &env_ptrs {
        Some(v) => v.as_ptr(),
        None => environ_block(),
    };
    #[cfg(target_os = "linux")]
    if req.via == Via::Best && vfork_can(req) {
        match vfork_exec(req, &plan, argv.as_ptr(), envp) {
            Err(Unsupported) => {}
            Ok(res) => return res,
        }
    }
    if req.via != Via::Fork && posix_spawn_can(req) {
        match posix_spawn_child(req, &plan, argv.as_ptr(), envp) {
            Err(Unsupported) => {}
            Ok(res) => return res.map(|pid| Spawned { pid, method: Method::PosixSpawn, pidfd: None }),
        }
    }
    fork_exec(req, &plan, argv.as_ptr(), envp).map(|pid| Spawned { pid, method: Method::Fork, pidfd: None })
}

// ----- the parent's plan for the child's fds --------------------------------------------------

struct FdPlan {
    /// (target, source): every source is above every target.
    dups: Vec<(RawFd, RawFd)>,
    /// Targets 0..=2 left as the parent has them.
    keep: [bool; 3],
    /// Numbers between the targets that are open in the parent without close-on-exec: the
    /// child closes them.
    close: Vec<RawFd>,
    /// The lowest number above every target: the child closes everything from here on.
    close_from: RawFd,
    /// Parent-side copies made to move sources out of the way; closed after the spawn.
    _moved: Vec<OwnedFd>,
}

/// `fcntl(F_GETFD)`: `Ok(cloexec)` for an open fd, `EBADF` for a closed number.
fn fd_flags(fd: RawFd) -> io::Result<bool> {
    // SAFETY: F_GETFD only reads the fd table entry; a closed number gives EBADF.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    Ok(flags & libc::FD_CLOEXEC != 0)
}

/// `F_DUPFD_CLOEXEC` of a raw number onto the lowest free number `>= min`.
fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int; a closed `fd` gives EBADF.
    let n = cvt_r(|| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: fcntl returned a fresh fd that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(n) })
}

impl FdPlan {
    fn new(fds: &[FdMapping]) -> Result<FdPlan, SpawnError> {
        let opened = fds.iter().filter(|m| m.source != Source::Close);
        let max_target = opened.map(|m| m.target).max().unwrap_or(2).max(2);
        for m in fds {
            if m.target < 0 {
                return Err(SpawnError::new(
                    Stage::Fd(m.target),
                    io::Error::new(io::ErrorKind::InvalidInput, "a child fd number cannot be negative"),
                ));
            }
        }
        if max_target > 2 {
            // (Below it, `max_target + 1` cannot overflow.)
            let limit = crate::fd::fd_table_size().map_err(|e| SpawnError::new(Stage::Setup, e))?;
            if max_target as u64 >= limit {
                return Err(SpawnError::new(
                    Stage::Fd(max_target),
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("its number is beyond the open-file limit ({limit} fds)"),
                    ),
                ));
            }
        }
        let mut plan = FdPlan {
            dups: Vec::new(),
            keep: [true; 3],
            close: Vec::new(),
            close_from: max_target + 1,
            _moved: Vec::new(),
        };
        for m in fds {
            let source = match m.source {
                Source::Keep if m.target < 3 => {
                    // A standard fd the parent marked close-on-exec would vanish at exec;
                    // "keep" means the child has it, so copy it in like any other source.
                    match fd_flags(m.target) {
                        Ok(true) => m.target,
                        _ => continue,
                    }
                }
                Source::Keep => m.target,
                Source::Fd(s) => s,
                Source::Close => {
                    if m.target < 3 {
                        plan.keep[m.target as usize] = false;
                    }
                    // Above the others, `close_from` covers it; a number closed in the parent
                    // or closed at exec needs nothing.
                    if m.target < plan.close_from && matches!(fd_flags(m.target), Ok(false)) {
                        plan.close.push(m.target);
                    }
                    continue;
                }
            };
            if m.target < 3 {
                plan.keep[m.target as usize] = false;
            }
            if let Err(e) = fd_flags(source) {
                // EBADF: the source is not open.
                return Err(SpawnError::new(Stage::Fd(m.target), e));
            }
            let source = if source <= max_target {
                let moved = dup_above(source, plan.close_from)
                    .map_err(|e| SpawnError::new(Stage::FdRoom(m.target), e))?;
                let raw = moved.as_raw_fd();
                plan._moved.push(moved);
                raw
            } else {
                source
            };
            plan.dups.push((m.target, source));
        }
        for n in 3..plan.close_from {
            if !fds.iter().any(|m| m.target == n) && matches!(fd_flags(n), Ok(false)) {
                plan.close.push(n);
            }
        }
        Ok(plan)
    }
}

// ----- argv and envp ------------------------------------------------------------------------

/// A NULL-terminated array of C string pointers: in the caller's `stack` when short (only
/// what it uses is written: zeroing it all, and moving it, cost a spawn some 20
/// instructions), else on the heap.
enum PtrArray<'s> {
    Stack(&'s [MaybeUninit<*const c_char>; PTRS_ON_STACK]),
    Heap(Vec<*const c_char>),
}

/// How many pointers, the null one included, `PtrArray` keeps on the stack.
const PTRS_ON_STACK: usize = 16;

impl<'s> PtrArray<'s> {
    fn new(
        first: &CStr,
        rest: &[CString],
        stack: &'s mut [MaybeUninit<*const c_char>; PTRS_ON_STACK],
    ) -> PtrArray<'s> {
        if rest.len() + 2 <= PTRS_ON_STACK {
            stack[0].write(first.as_ptr());
            for (slot, s) in stack[1..].iter_mut().zip(rest) {
                slot.write(s.as_ptr());
            }
            stack[rest.len() + 1].write(std::ptr::null());
            PtrArray::Stack(stack)
        } else {
            let mut v = Vec::with_capacity(rest.len() + 2);
            v.push(first.as_ptr());
            v.extend(rest.iter().map(|s| s.as_ptr()));
            v.push(std::ptr::null());
            PtrArray::Heap(v)
        }
    }

    /// The array, written up to its null pointer (the stack's rest is not to be read).
    fn as_ptr(&self) -> *const *const c_char {
        match self {
            PtrArray::Stack(a) => a.as_ptr().cast(),
            PtrArray::Heap(v) => v.as_ptr(),
        }
    }
}

// (Declared here: the libc crate has it for glibc only. `mut`: setenv changes it.)
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
unsafe extern "C" {
    static mut environ: *const *const c_char;
}

/// This process's environment block (`environ`), for a child that inherits it.
///
/// Like every exec of the inherited environment, this reads `environ` without std's lock:
/// `std::env::set_var` on another thread at the same time is undefined behaviour (which is
/// why it is `unsafe` in edition 2024).
fn environ_block() -> *const *const c_char {
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    {
        // SAFETY: reading the pointer value of libc's `environ` by value (no reference to a
        // static that libc changes); see the function docs.
        unsafe { environ }
    }
    #[cfg(target_vendor = "apple")]
    {
        // SAFETY: _NSGetEnviron returns the address of the process's environ pointer, valid for
        // the life of the process (a plain `environ` is not reachable from dylibs).
        unsafe { *libc::_NSGetEnviron() as *const *const c_char }
    }
}

/// The paths to try for `name` along a `PATH` value. An empty entry means the working
/// directory, as for `execvp`.
fn search_candidates(name: &CStr, path: Option<&OsStr>) -> Vec<CString> {
    let own;
    let path = match path {
        Some(p) => p,
        None => {
            own = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH));
            own.as_os_str()
        }
    };
    let name = name.to_bytes();
    path.as_bytes()
        .split(|&b| b == b':')
        .filter_map(|dir| {
            let mut full = Vec::with_capacity(dir.len() + 1 + name.len());
            if !dir.is_empty() {
                full.extend_from_slice(dir);
                full.push(b'/');
            }
            full.extend_from_slice(name);
            CString::new(full).ok()
        })
        .collect()
}

/// Errors after which `execvp` tries the next `PATH` entry.
fn search_continues(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOENT
            | libc::ENOTDIR
            | libc::ESTALE
            | libc::ENODEV
            | libc::ETIMEDOUT
            | libc::ELOOP
            | libc::ENAMETOOLONG
    )
}

// ----- optional libc functions, looked up at run time --------------------------------------

type ActionPath = unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, *const c_char) -> c_int;
type ActionFd = unsafe extern "C" fn(*mut libc::posix_spawn_file_actions_t, c_int) -> c_int;

fn lookup(name: &CStr) -> *mut libc::c_void {
    // SAFETY: `name` is a valid C string; RTLD_DEFAULT searches the global symbol scope.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

/// `posix_spawn_file_actions_addchdir_np`: glibc 2.29, macOS 10.15, FreeBSD 13.1.
fn addchdir() -> Option<ActionPath> {
    static F: OnceLock<Option<ActionPath>> = OnceLock::new();
    *F.get_or_init(|| {
        let p = lookup(c"posix_spawn_file_actions_addchdir_np");
        // SAFETY: every libc that exports this symbol declares it as
        // `int (posix_spawn_file_actions_t *, const char *)`.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, ActionPath>(p) })
    })
}

/// `posix_spawn_file_actions_addclosefrom_np`: glibc 2.34, FreeBSD 13.1.
#[cfg(not(target_vendor = "apple"))]
fn addclosefrom() -> Option<ActionFd> {
    static F: OnceLock<Option<ActionFd>> = OnceLock::new();
    *F.get_or_init(|| {
        let p = lookup(c"posix_spawn_file_actions_addclosefrom_np");
        // SAFETY: declared as `int (posix_spawn_file_actions_t *, int)` wherever it exists.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, ActionFd>(p) })
    })
}

/// `posix_spawn_file_actions_addinherit_np` (macOS 10.7): keeps an fd across
/// `POSIX_SPAWN_CLOEXEC_DEFAULT`.
#[cfg(target_vendor = "apple")]
fn addinherit() -> Option<ActionFd> {
    static F: OnceLock<Option<ActionFd>> = OnceLock::new();
    *F.get_or_init(|| {
        let p = lookup(c"posix_spawn_file_actions_addinherit_np");
        // SAFETY: declared as `int (posix_spawn_file_actions_t *, int)` in <spawn.h>.
        (!p.is_null()).then(|| unsafe { std::mem::transmute::<*mut libc::c_void, ActionFd>(p) })
    })
}

#[cfg(target_os = "linux")]
const SPAWN_SETSID: c_int = libc::POSIX_SPAWN_SETSID as c_int;
/// `POSIX_SPAWN_SETSID` (xnu-6153, macOS 10.15); older releases ignore it silently.
#[cfg(target_vendor = "apple")]
const SPAWN_SETSID: c_int = 0x0400;

/// Whether `POSIX_SPAWN_SETSID` works here.
fn setsid_supported() -> bool {
    static S: OnceLock<bool> = OnceLock::new();
    *S.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            // glibc before 2.26 refuses the unknown flag with EINVAL: ask it.
            match Attr::new() {
                Ok(mut attr) => attr.set_flags(SPAWN_SETSID).is_ok(),
                Err(_) => false,
            }
        }
        #[cfg(target_vendor = "apple")]
        {
            // macOS ignores unknown flags, so ask for the kernel release: 19 is 10.15.
            darwin_major() >= 19
        }
        #[cfg(target_os = "freebsd")]
        {
            false
        }
    })
}

#[cfg(target_vendor = "apple")]
fn darwin_major() -> u32 {
    let mut buf = [0u8; 32];
    let mut len = buf.len();
    // SAFETY: `buf` is valid for writes of `len` bytes and `len` is a valid size_t; a null new
    // value only reads.
    let rc = unsafe {
        libc::sysctlbyname(
            c"kern.osrelease".as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return 0;
    }
    let s = &buf[..len.min(buf.len())];
    s.iter().take_while(|b| b.is_ascii_digit()).fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'))
}

// ----- posix_spawn --------------------------------------------------------------------------

/// posix_spawn turned down a request it cannot express (found out only at run time).
struct Unsupported;

/// Whether posix_spawn can express `req` (see the module docs).
fn posix_spawn_can(req: &Request<'_>) -> bool {
    // FreeBSD's can leave a failed child unreaped (see the module docs).
    if cfg!(target_os = "freebsd") {
        return false;
    }
    // (Its attributes can reset signals to their default, not make them ignored.)
    if req.uid.is_some()
        || req.groups.is_some()
        || req.ignored_signals != 0
        || req.parent_death_signal != 0
        || req.gid.is_some()
        || req.foreground.is_some()
        || req.controlling_terminal.is_some()
    {
        return false;
    }
    // glibc's and FreeBSD's posix_spawn suspend the caller until the child's exec, and
    // reset the child's signals and mask with nothing between: a stop signal sent to the
    // caller's group meanwhile (Ctrl-Z) stops the child before its exec, and the caller stays
    // suspended for good (std's Command has the same hazard). Our own child (the vfork and
    // fork paths) catches the stop signals until its exec (`discard_stop`). So those take
    // the children that join a new group or session (a shell's jobs), and every child of a
    // caller whose group is in front of a terminal on its stdin, stdout or stderr, where a
    // Ctrl-Z comes from. (macOS's posix_spawn is one system call that returns with the new
    // program running.)
    #[cfg(not(target_vendor = "apple"))]
    if req.process_group.is_some() || req.setsid || crate::termios::stdio_in_front() {
        return false;
    }
    if req.setsid && (req.process_group.is_some() || !setsid_supported()) {
        return false;
    }
    // Without a way to close the parent's other fds, the child would get every one that
    // lacks close-on-exec (macOS closes them with POSIX_SPAWN_CLOEXEC_DEFAULT).
    #[cfg(not(target_vendor = "apple"))]
    if addclosefrom().is_none() {
        return false;
    }
    if let Some(_cwd) = req.cwd {
        if addchdir().is_none() {
            return false;
        }
        #[cfg(target_vendor = "apple")]
        {
            // addchdir_np plus a relative executable path misreports ENOENT on macOS.
            let relative = match req.program {
                Program::Path(p) => p.to_bytes().first() != Some(&b'/'),
                Program::Search { name, path } => {
                    search_candidates(name, path).iter().any(|c| c.to_bytes().first() != Some(&b'/'))
                }
            };
            if relative {
                return false;
            }
        }
    }
    true
}

struct Attr(MaybeUninit<libc::posix_spawnattr_t>);

impl Attr {
    fn new() -> io::Result<Attr> {
        let mut a = MaybeUninit::uninit();
        // SAFETY: `a` is valid for writes of one posix_spawnattr_t.
        cvt_errno(unsafe { libc::posix_spawnattr_init(a.as_mut_ptr()) })?;
        // Wrapped (so that `drop` destroys it) only once initialised: on macOS and FreeBSD
        // the attribute is a pointer that init allocates, and init can fail (ENOMEM).
        // Moving it is fine: glibc's is a plain struct, the BSDs' a pointer.
        Ok(Attr(a))
    }
    fn ptr(&mut self) -> *mut libc::posix_spawnattr_t {
        self.0.as_mut_ptr()
    }
    fn set_flags(&mut self, flags: c_int) -> io::Result<()> {
        // SAFETY: the attr was initialised by posix_spawnattr_init.
        cvt_errno(unsafe { libc::posix_spawnattr_setflags(self.ptr(), flags as libc::c_short) })
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: an `Attr` exists only once `new` initialised it, and is destroyed once, here.
        unsafe { libc::posix_spawnattr_destroy(self.ptr()) };
    }
}

struct Actions(MaybeUninit<libc::posix_spawn_file_actions_t>);

impl Actions {
    fn new() -> io::Result<Actions> {
        let mut a = MaybeUninit::uninit();
        // SAFETY: `a` is valid for writes of one posix_spawn_file_actions_t.
        cvt_errno(unsafe { libc::posix_spawn_file_actions_init(a.as_mut_ptr()) })?;
        // Wrapped only once initialised, as in `Attr::new`.
        Ok(Actions(a))
    }
    fn ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
        self.0.as_mut_ptr()
    }
}

impl Drop for Actions {
    fn drop(&mut self) {
        // SAFETY: an `Actions` exists only once `new` initialised it, and is destroyed once,
        // here.
        unsafe { libc::posix_spawn_file_actions_destroy(self.ptr()) };
    }
}

fn sigset(full: bool) -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: both functions initialise the whole set they are given.
    unsafe {
        if full {
            libc::sigfillset(set.as_mut_ptr());
        } else {
            libc::sigemptyset(set.as_mut_ptr());
        }
        set.assume_init()
    }
}

/// The set of signals `posix_spawn` resets to `SIG_DFL`: all of them. glibc's `sigfillset`
/// leaves out its two internal signals (32 and 33, below `SIGRTMIN`), and its `posix_spawn`
/// then sets those to `SIG_IGN` in the child, which keeps them ignored across the exec; with
/// their bits set they get `SIG_DFL`, as on the fork path.
fn every_signal() -> libc::sigset_t {
    #[allow(unused_mut)] // Only glibc needs the extra bits.
    let mut set = sigset(true);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // `sigaddset` refuses these two signals: their bits are set by hand.
        const WORD_BITS: usize = libc::c_ulong::BITS as usize;
        const _: () = assert!(size_of::<libc::sigset_t>() >= 2 * size_of::<libc::c_ulong>());
        const _: () = assert!(align_of::<libc::sigset_t>() >= align_of::<libc::c_ulong>());
        // SAFETY: glibc's sigset_t is an array of `unsigned long`, signal n at bit n - 1 (its
        // `__sigword`/`__sigmask`): aligned for c_ulong, two words long at least (see above).
        let words = unsafe { &mut *(&raw mut set).cast::<[libc::c_ulong; 2]>() };
        for signo in [32, 33] {
            let bit = signo - 1;
            words[bit / WORD_BITS] |= 1 << (bit % WORD_BITS);
        }
    }
    set
}

/// The attributes: signals reset, mask emptied, group or session.
fn spawn_attr(req: &Request<'_>) -> Result<Attr, SpawnError> {
    let setup = |e| SpawnError::new(Stage::Setup, e);
    let mut attr = Attr::new().map_err(setup)?;
    let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
    if let Some(pgid) = req.process_group {
        flags |= libc::POSIX_SPAWN_SETPGROUP;
        // SAFETY: the attr is initialised.
        cvt_errno(unsafe { libc::posix_spawnattr_setpgroup(attr.ptr(), pgid) }).map_err(setup)?;
    }
    #[cfg(not(target_os = "freebsd"))]
    if req.setsid {
        flags |= SPAWN_SETSID;
    }
    #[cfg(target_vendor = "apple")]
    {
        flags |= libc::POSIX_SPAWN_CLOEXEC_DEFAULT;
    }
    attr.set_flags(flags).map_err(setup)?;
    let (empty, full) = (sigset(false), every_signal());
    // SAFETY: the attr is initialised; the sets are initialised and outlive the calls.
    unsafe {
        cvt_errno(libc::posix_spawnattr_setsigmask(attr.ptr(), &empty)).map_err(setup)?;
        cvt_errno(libc::posix_spawnattr_setsigdefault(attr.ptr(), &full)).map_err(setup)?;
    }
    Ok(attr)
}

/// The file actions: fd moves, closes and the working directory. `None` when there is
/// nothing to do.
fn spawn_actions(req: &Request<'_>, plan: &FdPlan) -> Result<Option<Actions>, SpawnError> {
    #[cfg(not(target_vendor = "apple"))]
    let closefrom = addclosefrom();
    #[cfg(target_vendor = "apple")]
    let closefrom: Option<ActionFd> = None;
    let needed = !plan.dups.is_empty()
        || !plan.close.is_empty()
        || req.cwd.is_some()
        || closefrom.is_some()
        || cfg!(target_vendor = "apple");
    if !needed {
        return Ok(None);
    }
    let setup = |e| SpawnError::new(Stage::Setup, e);
    let mut acts = Actions::new().map_err(setup)?;
    for &(target, source) in &plan.dups {
        // SAFETY: the actions are initialised; both numbers are plain ints.
        cvt_errno(unsafe { libc::posix_spawn_file_actions_adddup2(acts.ptr(), source, target) })
            .map_err(|e| SpawnError::new(Stage::Fd(target), e))?;
    }
    // Under POSIX_SPAWN_CLOEXEC_DEFAULT (macOS) what no action names is closed anyway, and a
    // close action on a number another thread closed meanwhile would fail the spawn.
    let close = if cfg!(target_vendor = "apple") { &[][..] } else { &plan.close[..] };
    for &n in close {
        // SAFETY: as above.
        cvt_errno(unsafe { libc::posix_spawn_file_actions_addclose(acts.ptr(), n) })
            .map_err(|e| SpawnError::new(Stage::Fd(n), e))?;
    }
    if let Some(add) = closefrom {
        // SAFETY: `add` is addclosefrom_np (see `addclosefrom`); the actions are initialised.
        cvt_errno(unsafe { add(acts.ptr(), plan.close_from) }).map_err(setup)?;
    }
    #[cfg(target_vendor = "apple")]
    {
        // POSIX_SPAWN_CLOEXEC_DEFAULT closes what no action names: name the kept stdio fds,
        // those an exec keeps open. (An inherit action also clears close-on-exec, so a kept
        // stdio fd marked close-on-exec, which every other path closes at exec, is left out.)
        let inherit = addinherit().ok_or_else(|| SpawnError::os(Stage::Setup, libc::ENOSYS))?;
        for fd in 0..3 {
            if plan.keep[fd as usize] && matches!(fd_flags(fd), Ok(false)) {
                // SAFETY: `inherit` is addinherit_np; the actions are initialised.
                cvt_errno(unsafe { inherit(acts.ptr(), fd) })
                    .map_err(|e| SpawnError::new(Stage::Fd(fd), e))?;
            }
        }
    }
    if let Some(cwd) = req.cwd {
        let add = addchdir().ok_or_else(|| SpawnError::os(Stage::Chdir, libc::ENOSYS))?;
        // SAFETY: `add` is addchdir_np (see `addchdir`); `cwd` is a valid C string, which glibc
        // copies and macOS and FreeBSD copy as well.
        cvt_errno(unsafe { add(acts.ptr(), cwd.as_ptr()) }).map_err(|e| SpawnError::new(Stage::Chdir, e))?;
    }
    Ok(Some(acts))
}

fn posix_spawn_one(
    path: &CStr,
    acts: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Result<Pid, i32> {
    let mut pid: Pid = 0;
    // The C prototype takes argv and envp as `*mut`, but posix_spawn does not write
    // through them, so the `*const` arrays are cast.
    // SAFETY: `pid` is writable; `path`, `argv`, `envp` are valid NUL-terminated C strings and
    // NULL-terminated arrays that outlive the call; `acts` is null or initialised, `attr` is
    // initialised (`Setup` upholds both).
    let rc = unsafe { libc::posix_spawn(&mut pid, path.as_ptr(), acts, attr, argv.cast(), envp.cast()) };
    if rc == 0 { Ok(pid) } else { Err(rc) }
}

/// The attributes and file actions of one spawn.
struct Setup {
    attr: Attr,
    acts: Option<Actions>,
}

// SAFETY: the shared `Setup` (see `common_setup`) is built once and then never changed or
// destroyed; posix_spawn only reads attributes and file actions, which any number of threads
// may do at once.
unsafe impl Sync for Setup {}
// SAFETY: as above; the objects hold no thread-bound state.
unsafe impl Send for Setup {}

impl Setup {
    fn new(req: &Request<'_>, plan: &FdPlan) -> Result<Setup, SpawnError> {
        Ok(Setup { attr: spawn_attr(req)?, acts: spawn_actions(req, plan)? })
    }

    fn ptrs(&self) -> (*const libc::posix_spawn_file_actions_t, *const libc::posix_spawnattr_t) {
        (self.acts.as_ref().map_or(std::ptr::null(), |a| a.0.as_ptr()), self.attr.0.as_ptr())
    }
}

/// The commonest request (no group, session, directory or fd moves) needs the same
/// attributes and file actions every time: build them once and share them.
fn common_setup(req: &Request<'_>, plan: &FdPlan) -> Option<&'static Setup> {
    let common = !cfg!(target_vendor = "apple")
        && req.process_group.is_none()
        && !req.setsid
        && req.cwd.is_none()
        && plan.dups.is_empty()
        && plan.close.is_empty()
        && plan.close_from == 3;
    if !common {
        return None;
    }
    static COMMON: OnceLock<Option<Setup>> = OnceLock::new();
    COMMON.get_or_init(|| Setup::new(req, plan).ok()).as_ref()
}

/// `access(path, X_OK)` as a cheap pre-check before a search spends a whole spawn on an
/// entry that cannot work. `None`: worth trying.
fn precheck(path: &CStr) -> Option<i32> {
    if path.to_bytes().first() != Some(&b'/') {
        // Relative to the child's directory, which may differ from ours: just try it.
        return None;
    }
    // With the effective ids, as `execve` checks (a setuid program's search).
    // SAFETY: `path` is a valid C string.
    if unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::X_OK, libc::AT_EACCESS) } == 0 {
        return None;
    }
    Some(io::Error::last_os_error().raw_os_error().unwrap_or(libc::ENOENT))
}

fn posix_spawn_child(
    req: &Request<'_>,
    plan: &FdPlan,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Result<Result<Pid, SpawnError>, Unsupported> {
    let own;
    let setup = match common_setup(req, plan) {
        Some(shared) => shared,
        None => {
            own = match Setup::new(req, plan) {
                // An old glibc refused POSIX_SPAWN_SETSID after all: fork handles it.
                Err(e) if req.setsid && e.error.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(Unsupported);
                }
                Err(e) => return Ok(Err(e)),
                Ok(s) => s,
            };
            &own
        }
    };
    let (acts, attr) = setup.ptrs();
    let result = match req.program {
        Program::Path(path) => posix_spawn_one(path, acts, attr, argv, envp),
        // The search of the other paths, not the libc's `posix_spawnp`, so that every path
        // finds the same program: glibc's takes a `PATH` entry longer than `PATH_MAX` for
        // the working directory, and macOS's misbehaves (libuv#3583).
        Program::Search { name, path } => {
            let mut eacces = false;
            let mut result = Err(libc::ENOENT);
            for cand in search_candidates(name, path) {
                let r = match precheck(&cand) {
                    Some(errno) => Err(errno),
                    None => posix_spawn_one(&cand, acts, attr, argv, envp),
                };
                match r {
                    Ok(pid) => {
                        result = Ok(pid);
                        break;
                    }
                    Err(libc::EACCES) => eacces = true,
                    Err(e) if search_continues(e) => {}
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            match result {
                Err(libc::ENOENT) if eacces => Err(libc::EACCES),
                other => other,
            }
        }
    };
    Ok(result.map_err(|errno| SpawnError::os(Stage::Spawn, errno)))
}

// ----- fork and exec ------------------------------------------------------------------------

/// The kernel's number of signals (`_NSIG`) on Linux: 128 on MIPS, 64 elsewhere.
#[cfg(target_os = "linux")]
const KERNEL_SIGNALS: usize = if cfg!(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "mips32r6",
    target_arch = "mips64r6"
)) {
    128
} else {
    64
};

/// The highest signal number to reset in the child, plus one.
#[cfg(target_os = "linux")]
const SIGNAL_END: c_int = KERNEL_SIGNALS as c_int + 1;
#[cfg(target_vendor = "apple")]
const SIGNAL_END: c_int = 32;
#[cfg(target_os = "freebsd")]
const SIGNAL_END: c_int = 129;

/// The size of the kernel's signal set, which `rt_sigaction` takes.
#[cfg(target_os = "linux")]
const KERNEL_SIGSET_BYTES: usize = KERNEL_SIGNALS / 8;

/// Everything the child needs, prepared before `fork`: the child only reads it.
struct ChildPlan<'a> {
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// Paths to try, in order.
    exec: &'a [*const c_char],
    /// Whether `exec` is a PATH search (execvp's rules) or one path.
    search: bool,
    plan: &'a FdPlan,
    /// fds open in the parent at or above `plan.close_from`, where the child has no way to
    /// close them without a list (Linux without close_range, macOS).
    open_above: &'a [RawFd],
    /// Where a failure goes.
    report: ReportTo<'a>,
    /// The rest of what the child does (its directory, ids, group, session, terminal and
    /// signals), read where the caller keeps it rather than copied (which cost each spawn
    /// some 20 instructions): its frame lives until the child's exec (suspended meanwhile
    /// on the vfork path; copied with the rest on the fork path).
    req: &'a Request<'a>,
    /// The parent's pid, where `parent_death_signal` is set (else 0).
    parent: libc::pid_t,
    /// See `leaves_group`.
    leaves_group: bool,
}

/// How long the fork path waits for its child's exec before it looks whether a stop signal
/// stopped the child first.
const STOPPED_BEFORE_EXEC_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// The report a failed child writes to the error pipe: stage, stage argument, errno.
const REPORT_BYTES: usize = 12;

/// The code of the note a job's child writes to the error pipe before an exec try, in the
/// report's form, when the stop signals it caught changed since its last note (the
/// argument: their bits, as in `STOPS_BEFORE_EXEC`; 0 after a `SIGCONT`): see
/// `discard_stop`. A failure's report may follow the notes. Outside the stage codes.
const STOP_NOTE: i32 = -1;

/// Where the child reports the step that failed before it exits.
#[derive(Clone, Copy)]
enum ReportTo<'a> {
    /// The write end of a close-on-exec pipe, whose end of file tells the parent that the
    /// exec succeeded (the fork path, and the vfork path where the child turns out not to
    /// share the parent's memory: valgrind and QEMU run such a clone as a fork).
    Pipe(RawFd),
    /// Memory in the parent's frame (the vfork path): the parent reads it once `clone`
    /// returns, which is after the child's exec or exit. No pipe, so nothing another thread's
    /// fork could hold open.
    Shared(&'a SharedReport),
}

/// A vfork child's report: stage code, stage argument, errno; `failed` set last.
#[derive(Default)]
struct SharedReport {
    failed: std::sync::atomic::AtomicBool,
    words: [std::sync::atomic::AtomicI32; 3],
}

fn stage_code(stage: Stage) -> (i32, i32) {
    match stage {
        Stage::Setup => (0, 0),
        Stage::Spawn => (1, 0),
        Stage::Fd(n) => (2, n),
        Stage::Session => (3, 0),
        Stage::Group => (4, 0),
        Stage::Chdir => (5, 0),
        Stage::SetGid => (6, 0),
        Stage::SetUid => (7, 0),
        Stage::Exec => (8, 0),
        Stage::FdRoom(n) => (9, n),
        Stage::Foreground => (10, 0),
        Stage::ControllingTerminal(n) => (11, n),
        Stage::ParentDeathSignal => (12, 0),
        Stage::SetGroups => (13, 0),
    }
}

fn report_error(code: i32, arg: i32, errno: i32) -> SpawnError {
    let stage = match code {
        2 => Stage::Fd(arg),
        3 => Stage::Session,
        4 => Stage::Group,
        5 => Stage::Chdir,
        6 => Stage::SetGid,
        7 => Stage::SetUid,
        8 => Stage::Exec,
        9 => Stage::FdRoom(arg),
        10 => Stage::Foreground,
        11 => Stage::ControllingTerminal(arg),
        12 => Stage::ParentDeathSignal,
        13 => Stage::SetGroups,
        _ => Stage::Setup,
    };
    SpawnError::os(stage, errno)
}

fn decode(b: &[u8; REPORT_BYTES]) -> SpawnError {
    let word = |i: usize| i32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    report_error(word(0), word(4), word(8))
}

/// `close` in the child. On Linux the bare system call: glibc's `close` is a cancellation
/// point, which reads and may act on the cancellation state of the thread that the vfork
/// child shares its memory with.
fn child_close(fd: RawFd) {
    // SAFETY: close takes an int; closing a number that is not open is harmless here.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::syscall(libc::SYS_close, fd as libc::c_long);
    }
    // SAFETY: as above (the fork path's child, a process of its own).
    #[cfg(not(target_os = "linux"))]
    unsafe {
        libc::close(fd);
    }
}

/// Writes one report (code, argument, errno) to the error pipe, in the child.
/// Async-signal-safe.
fn child_write_report(fd: RawFd, code: i32, arg: i32, errno: i32) {
    let mut b = [0u8; REPORT_BYTES];
    b[..4].copy_from_slice(&code.to_ne_bytes());
    b[4..8].copy_from_slice(&arg.to_ne_bytes());
    b[8..].copy_from_slice(&errno.to_ne_bytes());
    // A failed write leaves the parent with end of file (and, after a failure, a child that
    // exited 127).
    // SAFETY: `b` is valid for REPORT_BYTES bytes; write is async-signal-safe (and on Linux
    // the bare system call, as for `child_close`).
    unsafe {
        #[cfg(target_os = "linux")]
        libc::syscall(libc::SYS_write, fd as libc::c_long, b.as_ptr(), REPORT_BYTES);
        #[cfg(not(target_os = "linux"))]
        libc::write(fd, b.as_ptr().cast(), REPORT_BYTES);
    }
}

/// Reports `stage` and `errno` to the parent and exits. Async-signal-safe.
fn child_fail(to: ReportTo<'_>, stage: Stage, errno: i32) -> ! {
    let (code, arg) = stage_code(stage);
    match to {
        ReportTo::Pipe(fd) => child_write_report(fd, code, arg, errno),
        ReportTo::Shared(r) => {
            use std::sync::atomic::Ordering::Release;
            for (w, v) in r.words.iter().zip([code, arg, errno]) {
                w.store(v, Relaxed);
            }
            r.failed.store(true, Release);
        }
    }
    // SAFETY: _exit is async-signal-safe and ends only this child.
    unsafe { libc::_exit(127) }
}

/// Closes every fd at or above `from` except `keep` (the error pipe, if it is up there), in
/// the child.
fn child_close_above(from: RawFd, keep: Option<RawFd>, open_above: &[RawFd]) {
    #[cfg(target_os = "linux")]
    {
        let range = |first: RawFd, last: libc::c_uint, flags: libc::c_uint| {
            // SAFETY: close_range takes plain ints and acts on this child's own fd table.
            unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last, flags) == 0 }
        };
        // Linux 5.11: mark them close-on-exec in one call (the error pipe closes at exec too).
        if range(from, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) {
            return;
        }
        // Linux 5.9: close around the error pipe (`keep` is at or above `from`).
        let done = match keep {
            Some(keep) => {
                (keep <= from || range(from, (keep - 1) as libc::c_uint, 0))
                    && range(keep + 1, libc::c_uint::MAX, 0)
            }
            None => range(from, libc::c_uint::MAX, 0),
        };
        if done {
            return;
        }
    }
    #[cfg(target_os = "freebsd")]
    {
        // /dev/fd lists only 0, 1 and 2 without fdescfs, so the parent could not list what is
        // open: close every number up to the error pipe (the numbers below it were taken when
        // the pipe was made), then the rest with closefrom (FreeBSD 8), which cannot fail.
        let _ = open_above;
        let rest = match keep {
            Some(keep) => {
                for fd in from..keep {
                    child_close(fd);
                }
                keep + 1
            }
            None => from,
        };
        // SAFETY: closefrom takes an int and closes only this (forked) process's fds.
        unsafe { libc::closefrom(rest) };
    }
    #[cfg(not(target_os = "freebsd"))]
    {
        for &fd in open_above {
            if fd >= from && Some(fd) != keep {
                child_close(fd);
            }
        }
    }
}

/// The child's action for `SIGTSTP`, `SIGTTIN` and `SIGTTOU` until its exec.
///
/// A stop signal for the caller's process group (Ctrl-Z at a shell) that reaches the child
/// before its exec would stop it there, while the parent waits for that exec: on the vfork
/// path for good, since the parent is suspended until then. Caught, the signal does nothing,
/// and the exec gives the new program the default action back (an exec resets every caught
/// signal), so there is no moment at which a stop signal stops the child before its exec.
/// The child's mask keeps every signal blocked until just before the exec, so this runs
/// there at the earliest.
///
/// It notes the signal (in [`STOPS_BEFORE_EXEC`]), for a child that left the caller's
/// group: there the signal was meant for the child's own group (Ctrl-Z at the terminal a
/// shell's job has taken), and the parent sends it again once the exec is done, which
/// stops the new program as the signal would have a moment later. For a child in the
/// caller's group it is dropped: the caller had it too. A `SIGCONT` caught meanwhile
/// (`forget_stops`) cancels the noted stops, as it discards pending ones. Async-signal-safe:
/// one atomic operation on thread-local memory that the parent touched before the child
/// began.
///
/// It goes in through the libc's `sigaction`, which supplies the return trampoline. musl's
/// also notes in its own (on the vfork path, shared) memory that a handler was set, and in a
/// process without threads that its internal signals are unblocked, as it does in the child:
/// the first makes its `posix_spawn` reset one more signal, the second leaves them blocked
/// in the context its later handlers see if the parent was started with them blocked.
extern "C" fn discard_stop(signal: c_int) {
    STOPS_BEFORE_EXEC.with(|s| s.fetch_or(stop_bit(signal), Relaxed));
}

/// The child's action for `SIGCONT` until its exec: forgets the stop signals noted so far.
extern "C" fn forget_stops(_: c_int) {
    STOPS_BEFORE_EXEC.with(|s| s.store(0, Relaxed));
}

/// The stop signals, in the order the parent looks for them in a note.
const STOP_SIGNALS: [c_int; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// `signal`'s bit in `STOPS_BEFORE_EXEC` (the stop signals are below 32 everywhere).
fn stop_bit(signal: c_int) -> u32 {
    if (0..32).contains(&signal) { 1 << signal } else { 0 }
}

thread_local! {
    /// The stop signals the child's `discard_stop` caught (`stop_bit`s), since the last
    /// `SIGCONT`. The vfork child shares the memory and the thread pointer of the parent's
    /// thread, suspended until the exec: it writes the parent's own slot, which the parent
    /// reads after `clone`. The fork child writes its own copy, and passes it on through
    /// the error pipe. The parent clears the slot before each spawn, so it exists before the
    /// child needs it: in an executable it is a fixed offset from the thread pointer; in a
    /// shared library it is found through `__tls_get_addr`, which then takes its fast path
    /// (unless another thread loads or unloads a library with thread-locals during the
    /// spawn, when glibc may update its tables, allocating, in the child).
    static STOPS_BEFORE_EXEC: std::sync::atomic::AtomicU32 = const { std::sync::atomic::AtomicU32::new(0) };
}

/// Whether the child leaves the caller's process group: a session, a new group, or another
/// group than the caller's.
fn leaves_group(req: &Request<'_>) -> bool {
    match req.process_group {
        _ if req.setsid => true,
        Some(0) => true,
        Some(g) => g != crate::process::process_group(),
        None => false,
    }
}

/// The child side of fork/exec and of the vfork path. Only async-signal-safe calls on
/// prepared data, none of which changes state that the parent shares with the child on the
/// vfork path (no id changes there: see `vfork_can`), but for the reports meant for the
/// parent (the failure's, and the stop signals in `STOPS_BEFORE_EXEC`).
fn child_exec(p: &ChildPlan<'_>) -> ! {
    // SAFETY: a forked child, or the vfork child whose parent thread is suspended until the
    // exec: what `p` points to is neither freed nor changed before it; every call below is
    // async-signal-safe and allocates nothing; `dfl`, `held`, `empty` are fully initialised.
    unsafe {
        // 1. Every signal back to its default action (SIGKILL and SIGSTOP cannot change),
        //    but the stop signals, which `discard_stop` catches until the exec, and those
        //    asked to be ignored (an ignored stop signal cannot stop the child either).
        let mut held: libc::sigaction = std::mem::zeroed();
        held.sa_sigaction = discard_stop as extern "C" fn(c_int) as libc::sighandler_t;
        held.sa_flags = libc::SA_RESTART;
        libc::sigfillset(&mut held.sa_mask);
        let mut forget = held;
        forget.sa_sigaction = forget_stops as extern "C" fn(c_int) as libc::sighandler_t;
        #[cfg(not(target_os = "linux"))]
        let dfl = {
            let mut d: libc::sigaction = std::mem::zeroed();
            d.sa_sigaction = libc::SIG_DFL;
            d
        };
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        for sig in 1..SIGNAL_END {
            match sig {
                libc::SIGKILL | libc::SIGSTOP => {}
                // (The libc's call: the signals asked for are never the libc's internal ones,
                // which the caller cannot name.)
                _ if signal_in(p.req.ignored_signals, sig) => {
                    libc::sigaction(sig, &ign, std::ptr::null_mut());
                }
                // (The libc's call: a handler needs its return trampoline.)
                libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => {
                    libc::sigaction(sig, &held, std::ptr::null_mut());
                }
                libc::SIGCONT if p.leaves_group => {
                    libc::sigaction(sig, &forget, std::ptr::null_mut());
                }
                // On Linux the kernel's call, with all zeros: SIG_DFL, no flags, an empty
                // mask. The libc's refuses its internal signals (glibc's 32 and 33, musl's 32
                // to 34), which a parent started by glibc's posix_spawn may have ignored (exec
                // keeps that), and musl's takes a lock in the shared memory for SIGABRT.
                #[cfg(target_os = "linux")]
                _ => {
                    let kernel_dfl = [0u64; 8];
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        sig as libc::c_long,
                        kernel_dfl.as_ptr(),
                        std::ptr::null_mut::<u64>(),
                        KERNEL_SIGSET_BYTES,
                    );
                }
                #[cfg(not(target_os = "linux"))]
                _ => {
                    libc::sigaction(sig, &dfl, std::ptr::null_mut());
                }
            }
        }
        // 2. Session or group.
        if p.req.setsid && libc::setsid() < 0 {
            child_fail(p.report, Stage::Session, errno());
        }
        if let Some(pgid) = p.req.process_group {
            if libc::setpgid(0, pgid) < 0 {
                child_fail(p.report, Stage::Group, errno());
            }
        }
        // Stop signals already waiting were sent while the child was in the caller's group,
        // and meant for it: `discard_stop` runs for them, but they are not passed on. (Taken
        // after the child left it, not before: a stop for the caller's group may come in
        // between, while one for the new group comes only from who knows the new group, the
        // terminal not before the `tcsetpgrp` below.)
        let mut earlier = 0;
        if p.leaves_group {
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pending);
            libc::sigpending(&mut pending);
            for sig in STOP_SIGNALS {
                if libc::sigismember(&pending, sig) == 1 {
                    earlier |= stop_bit(sig);
                }
            }
        }
        // Every signal is blocked here, so the background group's tcsetpgrp raises no
        // SIGTTOU.
        if let Some(tty) = p.req.foreground {
            if libc::tcsetpgrp(tty, libc::getpgrp()) < 0 {
                child_fail(p.report, Stage::Foreground, errno());
            }
        }
        // 3. fds: every source is above every target, so order does not matter.
        for &(target, source) in &p.plan.dups {
            while libc::dup2(source, target) < 0 {
                let e = errno();
                if e != libc::EINTR {
                    child_fail(p.report, Stage::Fd(target), e);
                }
            }
        }
        let report_fd = match p.report {
            ReportTo::Pipe(fd) => fd,
            ReportTo::Shared(_) => -1,
        };
        for &n in &p.plan.close {
            // (A number the plan found open may have been closed by another thread since,
            // and taken by the error pipe.)
            if n != report_fd {
                child_close(n);
            }
        }
        // (An error pipe below `close_from` is out of the way there already.)
        let keep = match p.report {
            ReportTo::Pipe(fd) if fd >= p.plan.close_from => Some(fd),
            _ => None,
        };
        child_close_above(p.plan.close_from, keep, p.open_above);
        // The session's controlling terminal, now that the fd is in place (a session leader
        // without one: `setsid` above). `ioctl` is a bare system call, safe here; its
        // request number's type differs by platform.
        if let Some(fd) = p.req.controlling_terminal {
            if libc::ioctl(fd, libc::TIOCSCTTY as _, 0) < 0 {
                child_fail(p.report, Stage::ControllingTerminal(fd), errno());
            }
        }
        // 4. Directory, then ids (the directory may need the old ones).
        if let Some(cwd) = p.req.cwd {
            if libc::chdir(cwd.as_ptr()) < 0 {
                child_fail(p.report, Stage::Chdir, errno());
            }
        }
        if let Some(groups) = p.req.groups {
            // (Its count is a size_t on Linux, an int elsewhere; the caller bounded it.)
            if libc::setgroups(groups.len() as _, groups.as_ptr()) < 0 {
                child_fail(p.report, Stage::SetGroups, errno());
            }
        } else if p.req.uid.is_some() || p.req.gid.is_some() {
            // Drop supplementary groups (only root may; others keep theirs, as libuv does).
            libc::setgroups(0, std::ptr::null());
        }
        if let Some(gid) = p.req.gid {
            if libc::setgid(gid) < 0 {
                child_fail(p.report, Stage::SetGid, errno());
            }
        }
        if let Some(uid) = p.req.uid {
            if libc::setuid(uid) < 0 {
                child_fail(p.report, Stage::SetUid, errno());
            }
        }
        // The signal on the parent's death, after the ids (a switch clears it). A parent
        // already gone would never send it: the child sends it itself, and it waits in the
        // mask until step 5 as a later one would.
        #[cfg(any(target_os = "linux", target_os = "freebsd"))]
        if p.req.parent_death_signal != 0 {
            if set_parent_death_signal(p.req.parent_death_signal) < 0 {
                child_fail(p.report, Stage::ParentDeathSignal, errno());
            }
            if libc::getppid() != p.parent {
                kill_self(p.req.parent_death_signal);
            }
        }
        // (macOS has none; its caller refuses the request.)
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        let _ = (p.req.parent_death_signal, p.parent);
        // 5. An empty mask, last: a signal from here on gets its default action, and a stop
        //    signal that waited runs `discard_stop`.
        let empty = sigset(false);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        STOPS_BEFORE_EXEC.with(|s| s.fetch_and(!earlier, Relaxed));
        // 6. Exec. Before each try, a job's child whose caught stop signals changed since
        //    its last note (a `SIGCONT` clears them) notes them for the parent: the parent
        //    goes by the last one (a vfork child shares the slot itself).
        let mut err = libc::ENOENT;
        let mut eacces = false;
        let mut noted = 0;
        for &path in p.exec {
            if let (ReportTo::Pipe(fd), true) = (p.report, p.leaves_group) {
                let caught = STOPS_BEFORE_EXEC.with(|s| s.load(Relaxed));
                if caught != noted {
                    child_write_report(fd, STOP_NOTE, caught as i32, 0);
                    noted = caught;
                }
            }
            libc::execve(path, p.argv.cast(), p.envp.cast());
            let e = errno();
            if !p.search {
                err = e;
                break;
            }
            if e == libc::EACCES {
                eacces = true;
            } else if !search_continues(e) {
                err = e;
                break;
            }
        }
        if p.search && err == libc::ENOENT && eacces {
            err = libc::EACCES;
        }
        child_fail(p.report, Stage::Exec, err)
    }
}

/// Asks the kernel for `signal` to this process when its parent dies. Async-signal-safe: one
/// system call.
///
/// # Safety
///
/// None beyond a system call's; `unsafe` for the child's context it runs in.
#[cfg(target_os = "linux")]
unsafe fn set_parent_death_signal(signal: c_int) -> c_int {
    // SAFETY: PR_SET_PDEATHSIG takes the signal number by value; no pointers.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            signal as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    }
}

/// Sends `signal` to the calling process, by system calls alone: the vfork child shares the
/// parent thread's libc state, where a glibc before 2.25 kept the parent's pid.
///
/// # Safety
///
/// None beyond a system call's; `unsafe` for the child's context it runs in.
#[cfg(target_os = "linux")]
unsafe fn kill_self(signal: c_int) {
    // SAFETY: getpid and kill take integers only.
    unsafe {
        let pid = libc::syscall(libc::SYS_getpid);
        libc::syscall(libc::SYS_kill, pid, signal as libc::c_long);
    }
}

/// As on Linux; FreeBSD only forks, so the libc's calls are the child's own.
///
/// # Safety
///
/// None beyond a system call's.
#[cfg(target_os = "freebsd")]
unsafe fn kill_self(signal: c_int) {
    // SAFETY: getpid and kill take integers only.
    unsafe {
        libc::kill(libc::getpid(), signal);
    }
}

/// As on Linux, through `procctl` (FreeBSD 11.2).
///
/// # Safety
///
/// None beyond a system call's; `unsafe` for the child's context it runs in.
#[cfg(target_os = "freebsd")]
unsafe fn set_parent_death_signal(signal: c_int) -> c_int {
    let mut sig = signal;
    // SAFETY: `sig` outlives the call, which reads one int through the pointer; P_PID with
    // id 0 names the calling process.
    unsafe { libc::procctl(libc::P_PID, 0, libc::PROC_PDEATHSIG_CTL, (&raw mut sig).cast()) }
}

/// This process's pid, for a child that must know whether its parent is gone. Out of the
/// way of the common spawn, which does not ask.
#[cold]
#[inline(never)]
fn own_pid() -> libc::pid_t {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { libc::getpid() }
}

/// Restores the parent's signal mask when dropped. On Linux, the kernel's signal set: its
/// `KERNEL_SIGSET_BYTES`, not the C library's 128-byte `sigset_t`, most of which the kernel
/// never reads (filling and copying that costs a spawn some 35 instructions).
#[cfg(target_os = "linux")]
struct MaskGuard(KernelSigset);
#[cfg(not(target_os = "linux"))]
struct MaskGuard(libc::sigset_t);

/// The kernel's signal set, as `rt_sigprocmask` takes it: `KERNEL_SIGSET_BYTES` (8, or 16
/// where there are 128 signals).
#[cfg(target_os = "linux")]
type KernelSigset = [u64; KERNEL_SIGSET_BYTES / 8];

impl MaskGuard {
    /// Blocks every signal in this thread. On Linux this is the bare `rt_sigprocmask`, as in
    /// glibc's `posix_spawn`: glibc's `pthread_sigmask` leaves its two internal signals
    /// unblocked, and would let them into the vfork child.
    fn block_all() -> io::Result<MaskGuard> {
        #[cfg(target_os = "linux")]
        {
            // Every bit set: a valid set (the kernel ignores SIGKILL's and SIGSTOP's).
            let full: KernelSigset = [u64::MAX; KERNEL_SIGSET_BYTES / 8];
            let mut old: KernelSigset = [0; KERNEL_SIGSET_BYTES / 8];
            // SAFETY: both are `KERNEL_SIGSET_BYTES` long, `full` readable, `old` writable.
            cvt(unsafe { kernel_setmask(&full, &mut old) })?;
            Ok(MaskGuard(old))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let full = sigset(true);
            let mut old = MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: `full` is initialised; `old` is valid for writes of one sigset_t.
            cvt_errno(unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &full, old.as_mut_ptr()) })?;
            // SAFETY: pthread_sigmask succeeded and filled in `old`.
            Ok(MaskGuard(unsafe { old.assume_init() }))
        }
    }
}

/// The bare `rt_sigprocmask(SIG_SETMASK, new, old)`, which (unlike glibc's
/// `pthread_sigmask`) sets every bit it is given. Returns -1 with `errno` on failure.
///
/// # Safety
///
/// `new` must point to a readable kernel signal set, and `old` be null or point to a
/// writable one; the kernel touches the first `KERNEL_SIGSET_BYTES` of each.
#[cfg(target_os = "linux")]
unsafe fn kernel_setmask(new: *const KernelSigset, old: *mut KernelSigset) -> libc::c_long {
    // SAFETY: the caller's contract; the other arguments are plain integers.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as libc::c_long,
            new,
            old,
            KERNEL_SIGSET_BYTES,
        )
    }
}

impl Drop for MaskGuard {
    fn drop(&mut self) {
        // SAFETY: `self.0` is the mask saved by `block_all`; no old mask is asked for.
        #[cfg(target_os = "linux")]
        unsafe {
            kernel_setmask(&self.0, std::ptr::null_mut());
        }
        // SAFETY: `self.0` is the mask saved by `block_all`.
        #[cfg(not(target_os = "linux"))]
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// What the parent prepares for the fork and vfork paths' child: the paths to exec, the fds
/// it must close by number, and the error pipe where one is needed.
struct ExecPrep {
    /// The candidates of a `PATH` search, which `paths` points into.
    _owned: Vec<CString>,
    paths: Vec<*const c_char>,
    /// The one path of a request that names it (no allocation).
    one: [*const c_char; 1],
    search: bool,
    /// fds open at or above the plan's `close_from` (empty where the child closes them
    /// without a list).
    open_above: Vec<RawFd>,
    /// The error pipe (read end, write end), the write end at a number no child fd takes,
    /// so that the fd moves cannot touch it (see `error_pipe`).
    pipe: Option<(OwnedFd, OwnedFd)>,
}

impl ExecPrep {
    fn new(req: &Request<'_>, plan: &FdPlan, with_pipe: bool) -> Result<ExecPrep, SpawnError> {
        let setup = |e| SpawnError::new(Stage::Setup, e);
        let (owned, search, one) = match req.program {
            Program::Path(p) => (Vec::new(), false, [p.as_ptr()]),
            Program::Search { name, path } => (search_candidates(name, path), true, [std::ptr::null()]),
        };
        let paths = owned.iter().map(|c| c.as_ptr()).collect();
        // Linux with close_range, and FreeBSD (closefrom), close without a list.
        let open_above: Vec<RawFd> = if cfg!(target_os = "freebsd")
            || cfg!(target_os = "linux") && close_range_works()
        {
            Vec::new()
        } else {
            crate::fd::open_fds().map_err(setup)?.into_iter().filter(|&fd| fd >= plan.close_from).collect()
        };
        let pipe = if with_pipe { Some(error_pipe(req.fds)?) } else { None };
        Ok(ExecPrep { _owned: owned, paths, one, search, open_above, pipe })
    }

    /// The child's plan, borrowing from `self`, the request and the fd plan. Failures go to
    /// the error pipe if there is one, else to `shared`.
    fn child<'a>(
        &'a self,
        req: &'a Request<'a>,
        plan: &'a FdPlan,
        argv: *const *const c_char,
        envp: *const *const c_char,
        shared: &'a SharedReport,
    ) -> ChildPlan<'a> {
        ChildPlan {
            argv,
            envp,
            exec: if self.search { &self.paths } else { &self.one },
            search: self.search,
            plan,
            open_above: &self.open_above,
            report: match &self.pipe {
                Some((_, w)) => ReportTo::Pipe(w.as_raw_fd()),
                None => ReportTo::Shared(shared),
            },
            req,
            parent: if req.parent_death_signal != 0 { own_pid() } else { 0 },
            leaves_group: leaves_group(req),
        }
    }
}

/// A close-on-exec pipe for the child's report: (read end, write end). The child keeps the
/// write end until its exec, so its number is one that no child fd takes (nor 0, 1 or 2),
/// and the child's fd moves cannot touch it; it is often a low one, so that a child fd
/// just below the open-file limit leaves the room above it to the sources that must move
/// there (see `FdPlan`). The read end, the parent's, may be anywhere but 0, 1 and 2 (where
/// another thread reading stdin could take the report): the child leaves it alone or
/// replaces it.
fn error_pipe(fds: &[FdMapping]) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let setup = |e| SpawnError::new(Stage::Setup, e);
    let (mut r, mut w) = crate::fd::pipe().map_err(setup)?;
    if r.as_raw_fd() <= 2 {
        r = dup_above(r.as_raw_fd(), 3).map_err(setup)?;
    }
    let clear = |n: RawFd| n > 2 && !fds.iter().any(|m| m.target == n);
    let mut min = 3;
    while !clear(w.as_raw_fd()) {
        // The lowest free number from `min`: past the child's fd numbers in a few steps.
        let moved = dup_above(w.as_raw_fd(), min).map_err(setup)?;
        min = moved.as_raw_fd() + 1;
        w = moved;
    }
    Ok((r, w))
}

/// After the child's exec or its failure, with the parent's copy of the error pipe's write
/// end closed: the child's report, if it wrote one. A failed child is reaped here. Success
/// gives the stop signals the child caught before its exec (its last `STOP_NOTE`), or 0.
///
/// `forked`: the child runs on as a fork, and the parent waits here for its exec. A stop
/// signal that reaches it before then (`SIGSTOP`, which it cannot catch) would hold the
/// read for good, since the caller, if it was stopped too, is continued without it: while
/// nothing comes, look now and then whether the child stopped, and continue it. (That
/// `SIGCONT` also makes a job's child forget a stop signal it caught before.)
fn child_report(report_r: &OwnedFd, pid: Pid, forked: bool) -> Result<u32, SpawnError> {
    // Reports of REPORT_BYTES each (written whole: less than PIPE_BUF), until end of file:
    // stop notes, the last of which counts, then perhaps a failure.
    let mut report = [0u8; REPORT_BYTES];
    let mut got = 0;
    let mut stops = 0;
    let mut failure = None;
    loop {
        while forked
            && !crate::fd::poll_readable(report_r.as_fd(), Some(STOPPED_BEFORE_EXEC_CHECK)).unwrap_or(true)
        {
            if let Ok(Some(crate::process::RunChange::Stopped(_))) = crate::process::try_wait_run_change(pid)
            {
                let _ = crate::process::kill(pid, libc::SIGCONT);
            }
        }
        match crate::fd::read(report_r.as_fd(), &mut report[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        if got == REPORT_BYTES {
            got = 0;
            match i32::from_ne_bytes([report[0], report[1], report[2], report[3]]) {
                STOP_NOTE => stops = u32::from_ne_bytes([report[4], report[5], report[6], report[7]]),
                _ => failure = Some(report),
            }
        }
    }
    if failure.is_none() && got == 0 {
        return Ok(stops);
    }
    // The child failed and exited: reap it before reporting.
    let _ = crate::process::wait(pid);
    match failure {
        Some(failure) if got == 0 => Err(decode(&failure)),
        _ => Err(SpawnError::os(Stage::Setup, libc::EIO)),
    }
}

/// After a successful exec: a stop signal that the child caught before it (`discard_stop`,
/// `stops` its bits), when the child left the caller's group, goes to it again.
fn resend_stop(req: &Request<'_>, pid: Pid, stops: u32) {
    if stops != 0 && leaves_group(req) {
        if let Some(&sig) = STOP_SIGNALS.iter().find(|&&s| stops & stop_bit(s) != 0) {
            let _ = crate::process::kill(pid, sig);
        }
    }
}

fn fork_exec(
    req: &Request<'_>,
    plan: &FdPlan,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Result<Pid, SpawnError> {
    let setup = |e| SpawnError::new(Stage::Setup, e);
    let prep = ExecPrep::new(req, plan, true)?;
    let unused = SharedReport::default();
    let child = prep.child(req, plan, argv, envp, &unused);
    STOPS_BEFORE_EXEC.with(|s| s.store(0, Relaxed));
    let pid = {
        // No handler of ours may run in the child before it resets them.
        let _mask = MaskGuard::block_all().map_err(setup)?;
        // SAFETY: the child runs only `child_exec`, which is async-signal-safe (see there).
        let pid = unsafe { libc::fork() };
        match pid {
            0 => child_exec(&child),
            -1 => return Err(setup(io::Error::last_os_error())),
            pid => pid,
        }
    };
    let Some((report_r, report_w)) = prep.pipe else { unreachable!("asked for above") };
    drop(report_w);
    child_report(&report_r, pid, true).map(|stop| {
        resend_stop(req, pid, stop);
        pid
    })
}

// ----- Linux: the vfork path ----------------------------------------------------------------

/// How much stack the vfork child gets. It needs little (`child_exec` and the libc calls it
/// makes, about 2 KiB, plus a signal frame for `discard_stop`, which CPUs with large vector
/// state make bigger: some 11 KiB with x86's AMX). The rest is margin, which costs address
/// space only: pages never touched are never backed.
#[cfg(target_os = "linux")]
const VFORK_STACK_BYTES: usize = 64 * 1024;

/// The inaccessible guard below the vfork child's stack: wide, so that no frame (a signal
/// frame, a C function's locals) can step over it, and free but for address space.
#[cfg(target_os = "linux")]
const VFORK_GUARD_BYTES: usize = 64 * 1024;

/// The vfork child's stack: a mapping of its own, with an inaccessible guard below it, so
/// that a child that overran it dies of `SIGSEGV` (reported as a child killed by that
/// signal) instead of writing into the memory it shares with the parent. (Linux before 5.16
/// takes every process that shares the memory with a child that dumps core: the parent
/// then dies with it, unless core dumps are off for it; still better than memory changed
/// under it.) (glibc's
/// `posix_spawn` maps its child a stack too, on each spawn.) One per thread, mapped by the
/// thread's first vfork and unmapped when the thread ends: `CLONE_VFORK` suspends the
/// calling thread while its child runs, and every signal is blocked meanwhile, so no two
/// children use one stack at once. Holds the stack's top, null before the first use.
#[cfg(target_os = "linux")]
struct VforkStack(std::cell::Cell<*mut u8>);

#[cfg(target_os = "linux")]
thread_local! {
    static VFORK_STACK: VforkStack = const { VforkStack::new() };
}

#[cfg(target_os = "linux")]
impl VforkStack {
    const fn new() -> VforkStack {
        VforkStack(std::cell::Cell::new(std::ptr::null_mut()))
    }

    /// The guard's length and the whole mapping's: the guard, then the stack, each in whole
    /// pages.
    fn layout() -> (usize, usize) {
        let page = page_bytes();
        let guard = VFORK_GUARD_BYTES.next_multiple_of(page);
        (guard, guard + VFORK_STACK_BYTES.next_multiple_of(page))
    }

    /// The stack's top (one past its last byte, page-aligned), mapped on first use.
    #[inline]
    fn top(&self) -> io::Result<*mut u8> {
        let top = self.0.get();
        if !top.is_null() {
            return Ok(top);
        }
        let top = Self::map()?;
        self.0.set(top);
        Ok(top)
    }

    #[cold]
    fn map() -> io::Result<*mut u8> {
        let (guard, len) = Self::layout();
        // SAFETY: a new private anonymous mapping at an address the kernel picks touches no
        // memory of ours. All of it starts inaccessible, so the guard never is anything
        // else.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        cvt(base.addr() as isize)?;
        let base = base.cast::<u8>();
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: the `len - guard` bytes from `base + guard` lie within the mapping just
        // made, which nothing else knows of.
        if let Err(e) = cvt(unsafe { libc::mprotect(base.add(guard).cast(), len - guard, rw) }) {
            // SAFETY: the whole mapping just made, unused.
            unsafe { libc::munmap(base.cast(), len) };
            return Err(e);
        }
        // SAFETY: one past the mapping's end, within the bounds of the same allocation.
        Ok(unsafe { base.add(len) })
    }
}

#[cfg(target_os = "linux")]
impl Drop for VforkStack {
    fn drop(&mut self) {
        let top = self.0.get();
        if !top.is_null() {
            let len = Self::layout().1;
            // SAFETY: the mapping `map` made, `len` bytes below `top`; no child runs on it
            // (its thread is ending, or the one spawn it was made for returned).
            unsafe { libc::munmap(top.sub(len).cast(), len) };
        }
    }
}

/// What this process found the first time it tried the vfork path (`vfork_mode`).
#[cfg(target_os = "linux")]
static VFORK_MODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(VFORK_UNTRIED);
#[cfg(target_os = "linux")]
const VFORK_UNTRIED: u8 = 0;
/// The child shares our memory: it reports a failure there.
#[cfg(target_os = "linux")]
const VFORK_SHARED: u8 = 1;
/// The child runs as a fork (valgrind, QEMU): it reports through the error pipe.
#[cfg(target_os = "linux")]
const VFORK_COPIED: u8 = 2;
/// `clone` refused `CLONE_VM` (a sandbox), or the C library's `clone` cannot be used so (see
/// `vfork_mode`): the other paths do the job.
#[cfg(target_os = "linux")]
const VFORK_REFUSED: u8 = 3;

/// `clone` refused `CLONE_PIDFD` (an emulator or sandbox that does not know it).
#[cfg(target_os = "linux")]
static CLONE_PIDFD_REFUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the vfork path can express `req`: everything but ids. A child that switches ids
/// while it shares the parent's memory changes the parent too, and exposes it:
///
/// - the kernel marks the memory non-dumpable when a task's ids change (`commit_creds`), and
///   that flag belongs to the memory, so the parent would lose its core dumps, and its user
///   the right to trace it, for good;
/// - once switched, the child may be signalled by the user it now runs as: a `SIGSTOP`
///   (which cannot be caught) before its exec would hold the parent suspended in `clone`.
///
/// The fork path has neither problem (its child has memory of its own, and its parent
/// continues a child stopped before its exec), so ids take it, as in libuv.
#[cfg(target_os = "linux")]
fn vfork_can(req: &Request<'_>) -> bool {
    req.uid.is_none() && req.gid.is_none() && req.groups.is_none()
}

/// Whether this process spawns through the vfork path, and how its children report (a
/// `VFORK_*` value), found out once: a first `clone(CLONE_VM | CLONE_VFORK)` whose child only
/// sets a flag in our memory and exits.
#[cfg(target_os = "linux")]
fn vfork_mode() -> u8 {
    let mode = VFORK_MODE.load(Relaxed);
    if mode != VFORK_UNTRIED {
        return mode;
    }
    let mode = if libc_clone_vm_safe() { vfork_probe() } else { VFORK_REFUSED };
    VFORK_MODE.store(mode, Relaxed);
    mode
}

/// glibc before 2.24 has its `clone` wrapper's child write the thread id of the thread
/// that called it (its `CLONE_VM` child shares that thread's memory), leaving that thread
/// with a wrong id for good (glibc bug 19957).
#[cfg(target_os = "linux")]
fn libc_clone_vm_safe() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
        let mut parts = v.to_bytes().split(|&b| b == b'.').map(|p| {
            p.iter().take_while(|b| b.is_ascii_digit()).fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'))
        });
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (2, 24)
    }
    #[cfg(not(target_env = "gnu"))]
    {
        true
    }
}

#[cfg(target_os = "linux")]
extern "C" fn probe_child(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the flag in `vfork_probe`'s frame, which is suspended (CLONE_VFORK)
    // until this child exits; _exit is async-signal-safe.
    unsafe {
        (*arg.cast::<std::sync::atomic::AtomicBool>()).store(true, Relaxed);
        libc::_exit(0)
    }
}

/// Runs `child(arg)` in a `clone(CLONE_VM | CLONE_VFORK | flags)` child on this thread's
/// [`VforkStack`], with every signal blocked around the call, so that no handler of
/// ours runs in the child, which shares our memory, before it resets them. Returns the
/// child's pid, or the error number (read before the mask comes off, since a handler that
/// runs then may change it). With `CLONE_PIDFD` the kernel stores the pidfd in `pidfd`.
///
/// # Safety
///
/// `child` must make only async-signal-safe calls on what `arg` points to, write nothing of
/// this process's memory but through `arg` (besides the calling thread's `errno`, which its
/// failed calls set, and thread-locals of its own, such as `STOPS_BEFORE_EXEC`) and end in an
/// exec or `_exit` (one that overruns its stack faults on the guard); `arg` must stay
/// valid until this returns (CLONE_VFORK suspends the calling thread until the child's exec
/// or exit), and `pidfd` must be valid for a write.
#[cfg(target_os = "linux")]
unsafe fn clone_vfork(
    child: extern "C" fn(*mut libc::c_void) -> c_int,
    arg: *const libc::c_void,
    flags: c_int,
    pidfd: *mut c_int,
) -> Result<Pid, i32> {
    // A thread whose thread-locals are gone (a spawn from another thread-local's destructor)
    // gets a stack for this call only.
    let own;
    let top = match VFORK_STACK.try_with(VforkStack::top) {
        Ok(top) => top,
        Err(_) => {
            own = VforkStack::new();
            own.top()
        }
    };
    let os_error = |e: io::Error| e.raw_os_error().unwrap_or(libc::EINVAL);
    let top = top.map_err(os_error)?;
    let _mask = MaskGuard::block_all().map_err(os_error)?;
    // The stack's top is page-aligned; this thread's stack is used by no one else until
    // clone returns, this thread being suspended meanwhile; every signal is blocked, so no
    // handler runs on the child's stack. The kernel writes `pidfd` only with CLONE_PIDFD.
    // SAFETY: as just said; the caller upholds the rest (see `# Safety`).
    let pid = unsafe {
        libc::clone(
            child,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | flags,
            arg.cast_mut(),
            pidfd,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<c_int>(),
        )
    };
    if pid < 0 { Err(errno()) } else { Ok(pid) }
}

/// The first vfork of this process: whether `clone` takes `CLONE_VM | CLONE_VFORK`, and
/// whether the child really shares our memory.
#[cfg(target_os = "linux")]
fn vfork_probe() -> u8 {
    let seen = std::sync::atomic::AtomicBool::new(false);
    let mut no_pidfd: c_int = -1;
    // No exit signal: the program's own SIGCHLD handler (or a loop's watcher) would count a
    // child it never started, and no `waitpid(-1)` elsewhere can take it. (QEMU's user mode
    // refuses any exit signal but SIGCHLD for a clone that is not a thread: then SIGCHLD.)
    let pidfd_out = &raw mut no_pidfd;
    let probe = |exit_signal| {
        // SAFETY: `probe_child` only sets `seen`, which outlives the call, and exits;
        // `pidfd_out` points to a live int (written only with CLONE_PIDFD, not asked here).
        unsafe { clone_vfork(probe_child, (&raw const seen).cast(), exit_signal, pidfd_out) }
    };
    let pid = match probe(0).or_else(|e| if e == libc::EINVAL { probe(libc::SIGCHLD) } else { Err(e) }) {
        Ok(pid) => pid,
        // Refused for good, or (the process limit, memory) only for now: ask again later.
        Err(libc::EINVAL | libc::ENOSYS | libc::EPERM) => return VFORK_REFUSED,
        Err(_) => return VFORK_UNTRIED,
    };
    // Our own child, by pid: it has exited (or is about to), so this does not wait long.
    // `__WALL`: a child without an exit signal is a "clone" child, which waitpid skips
    // otherwise.
    let mut status: c_int = 0;
    // SAFETY: `status` is valid for writes of one int for the whole call.
    let _ = cvt_r(|| unsafe { libc::waitpid(pid, &mut status, libc::__WALL) });
    if seen.load(Relaxed) { VFORK_SHARED } else { VFORK_COPIED }
}

#[cfg(target_os = "linux")]
extern "C" fn vfork_child(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the `ChildPlan` that `vfork_exec` handed to clone. With CLONE_VFORK
    // the parent's thread, which owns it, is suspended until this child's exec or exit, so
    // the plan stays alive and unchanged while the child reads it.
    let plan = unsafe { &*arg.cast::<ChildPlan<'_>>() };
    child_exec(plan)
}

/// `clone(CLONE_VM | CLONE_VFORK)` with `child_exec` as the child, as glibc's `posix_spawn`
/// does with its own: no page tables copied, whatever the parent's size. Unlike
/// `posix_spawn`, it takes a new group or session, a terminal and a Ctrl-Z (see
/// `discard_stop`), and `CLONE_PIDFD` gives the pidfd with the child.
///
/// A child stopped before its exec by `SIGSTOP` (which it cannot catch: a debugger, or a
/// `kill -STOP` of its group) holds this call until it is continued, as with glibc's
/// `posix_spawn`; the fork path's parent continues it itself.
#[cfg(target_os = "linux")]
fn vfork_exec(
    req: &Request<'_>,
    plan: &FdPlan,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Result<Result<Spawned, SpawnError>, Unsupported> {
    use std::sync::atomic::Ordering::Acquire;
    let mode = vfork_mode();
    if mode != VFORK_SHARED && mode != VFORK_COPIED {
        return Err(Unsupported);
    }
    let prep = match ExecPrep::new(req, plan, mode == VFORK_COPIED) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let shared = SharedReport::default();
    let child = prep.child(req, plan, argv, envp, &shared);
    STOPS_BEFORE_EXEC.with(|s| s.store(0, Relaxed));
    let mut pidfd: c_int = -1;
    let mut flags = libc::SIGCHLD;
    if req.want_pidfd && !CLONE_PIDFD_REFUSED.load(Relaxed) {
        flags |= libc::CLONE_PIDFD;
    }
    let pid = loop {
        // SAFETY: the child runs only `child_exec` (see there) on `child`, which outlives the
        // call, as `shared` does (see `vfork_child`); `pidfd` is writable.
        match unsafe { clone_vfork(vfork_child, (&raw const child).cast(), flags, &raw mut pidfd) } {
            Ok(pid) => break pid,
            Err(libc::EINVAL) if flags & libc::CLONE_PIDFD != 0 => {
                CLONE_PIDFD_REFUSED.store(true, Relaxed);
                flags &= !libc::CLONE_PIDFD;
            }
            Err(e) => return Ok(Err(SpawnError::os(Stage::Setup, e))),
        }
    };
    // SAFETY: with CLONE_PIDFD the kernel stored a fresh fd that nothing else owns; a kernel
    // before 5.2 ignores the flag and leaves -1. (The caller moves it above the fd floor,
    // `fd::settle`, where a failure can fall back to another way of watching the child.)
    let pidfd = (pidfd >= 0).then(|| unsafe { std::os::fd::FromRawFd::from_raw_fd(pidfd) });
    let spawned = |stop| {
        resend_stop(req, pid, stop);
        Spawned { pid, method: Method::Vfork, pidfd }
    };
    match prep.pipe {
        Some((report_r, report_w)) => {
            drop(report_w);
            // The child has exec'd or exited (it may still be closing its fds: the read
            // waits that long at most).
            Ok(child_report(&report_r, pid, false).map(spawned))
        }
        // The child has exec'd or exited, and a failure is in `shared`.
        None if shared.failed.load(Acquire) => {
            let _ = crate::process::wait(pid);
            let [code, arg, errno] = shared.words.each_ref().map(|w| w.load(Relaxed));
            Ok(Err(report_error(code, arg, errno)))
        }
        None => Ok(Ok(spawned(STOPS_BEFORE_EXEC.with(|s| s.load(Relaxed))))),
    }
}

/// Whether this process spawns through the vfork path on Linux (`clone(CLONE_VM |
/// CLONE_VFORK)` with a child that shares its memory), found out with a first clone. `false`
/// elsewhere, and where `clone` refuses it or runs it as a fork (valgrind, QEMU).
pub fn vfork_path_available() -> bool {
    #[cfg(target_os = "linux")]
    {
        vfork_mode() == VFORK_SHARED
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Whether `close_range(CLOSE_RANGE_CLOEXEC)` (Linux 5.11) or plain `close_range` (5.9) is
/// available, so the fork path need not list open fds first.
fn close_range_works() -> bool {
    #[cfg(target_os = "linux")]
    {
        static W: OnceLock<bool> = OnceLock::new();
        *W.get_or_init(|| {
            // An empty range above any possible fd: succeeds where the call exists.
            // SAFETY: close_range takes plain ints and closes nothing here.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, libc::c_uint::MAX, libc::c_uint::MAX, 0) };
            rc == 0
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The error pipe's write end keeps off every child fd number: made where a new pipe
    /// lands, the lowest free numbers, it moves on (as far as no other test thread took
    /// those numbers first: the assertion holds either way).
    #[test]
    fn the_error_pipes_write_end_takes_no_child_fd_number() {
        let free: Vec<RawFd> = (3..).filter(|&n| fd_flags(n).is_err()).take(3).collect();
        let fds: Vec<FdMapping> =
            free.iter().map(|&target| FdMapping { target, source: Source::Close }).collect();
        let (r, w) = error_pipe(&fds).expect("error pipe");
        assert!(!free.contains(&w.as_raw_fd()), "the write end is at child fd {}", w.as_raw_fd());
        assert!(w.as_raw_fd() > 2 && r.as_raw_fd() > 2);
        assert!(fd_flags(w.as_raw_fd()).expect("open"), "close-on-exec");
    }

    /// Writes the byte just below the bottom of its stack (`arg`), as a child that overran
    /// it would.
    extern "C" fn overrun_child(below: *mut libc::c_void) -> c_int {
        // SAFETY: `below` is the last byte of the guard, which is mapped, and inaccessible:
        // the write faults. (Without a guard, it would land in memory the child shares with
        // its parent, and the child would exit 0.)
        unsafe {
            below.cast::<u8>().write_volatile(1);
            libc::_exit(0)
        }
    }

    /// Spawns from a thread-local's destructor, after the thread's `VFORK_STACK` is gone, and
    /// sends whether it was gone and whether the child ran in our memory.
    struct SpawnAtThreadEnd(std::sync::mpsc::Sender<(bool, bool)>);

    impl Drop for SpawnAtThreadEnd {
        fn drop(&mut self) {
            let gone = VFORK_STACK.try_with(|_| ()).is_err();
            let seen = std::sync::atomic::AtomicBool::new(false);
            let mut no_pidfd: c_int = -1;
            // SAFETY: `probe_child` only sets `seen`, which outlives the call, and exits;
            // `no_pidfd` is writable (and not written: no CLONE_PIDFD).
            let pid = unsafe {
                clone_vfork(probe_child, (&raw const seen).cast(), libc::SIGCHLD, &raw mut no_pidfd)
            };
            // (No panic here: one in a thread-local's destructor aborts the whole run.)
            let mut status: c_int = -1;
            if let Ok(pid) = pid {
                // SAFETY: `status` is valid for writes of one int for the whole call.
                let _ = cvt_r(|| unsafe { libc::waitpid(pid, &mut status, 0) });
            }
            let _ = self.0.send((gone, seen.load(Relaxed) && status == 0));
        }
    }

    thread_local! {
        static AT_THREAD_END: std::cell::RefCell<Option<SpawnAtThreadEnd>> = const { std::cell::RefCell::new(None) };
    }

    #[test]
    fn a_vfork_spawn_after_the_threads_stack_is_gone_maps_one_for_itself() {
        if vfork_mode() != VFORK_SHARED {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Registered first, destroyed last (thread-locals go in the reverse order).
            AT_THREAD_END.with(|a| *a.borrow_mut() = Some(SpawnAtThreadEnd(tx)));
            VFORK_STACK.with(|s| s.top()).expect("map the stack");
        })
        .join()
        .unwrap();
        let (gone, ran) =
            rx.recv_timeout(std::time::Duration::from_secs(30)).expect("the destructor's spawn");
        assert!(gone, "the thread's stack was still there: the test did not reach the fallback");
        assert!(ran, "the child did not run on a stack of its own");
    }

    #[test]
    fn a_vfork_child_that_overruns_its_stack_faults_on_the_guard_page() {
        // Only a child that shares our memory could harm it (valgrind runs it as a fork).
        if vfork_mode() != VFORK_SHARED {
            return;
        }
        // Mapped here, before the fork, so that the helper below allocates nothing.
        let top = VFORK_STACK.with(VforkStack::top).expect("map the stack");
        let (guard, len) = VforkStack::layout();
        let below = top.wrapping_sub(len - guard + 1);
        // The fault in a helper process of its own, made not dumpable: a core dump of the
        // child would take every process that shares its memory with it on Linux before
        // 5.16, and a dump piped to a collector would take this whole test binary.
        // SAFETY: the helper makes only async-signal-safe calls (prctl, sigprocmask, clone,
        // waitpid) on memory mapped before the fork, then `_exit`s.
        let helper = unsafe { libc::fork() };
        if helper == 0 {
            let mut status: c_int = 0;
            let mut no_pidfd: c_int = -1;
            // SAFETY: as above; the child writes nothing of ours (its write faults) and ends
            // in `_exit`; `no_pidfd` is writable (and not written: no CLONE_PIDFD).
            unsafe {
                libc::prctl(libc::PR_SET_DUMPABLE, 0);
                if let Ok(pid) = clone_vfork(overrun_child, below.cast(), libc::SIGCHLD, &raw mut no_pidfd) {
                    libc::waitpid(pid, &mut status, 0);
                }
                let faulted = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV;
                libc::_exit(if faulted { 0 } else { 1 })
            }
        }
        assert!(helper > 0, "fork: {}", io::Error::last_os_error());
        let mut status: c_int = 0;
        // SAFETY: `status` is valid for writes of one int for the whole call.
        cvt_r(|| unsafe { libc::waitpid(helper, &mut status, 0) }).expect("waitpid");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child was not stopped by the guard (helper status {status:#x})"
        );
    }
}
