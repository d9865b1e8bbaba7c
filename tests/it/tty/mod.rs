//! Ttys on ptys: one submodule per subject, and the helpers they share.
//!
//! A helper used by one subject only lives in that subject's file. The ignored tests at the
//! end of this file are child processes that tests of the submodules start by running the
//! test binary again under their full name (`tty::<name>`), so they stay here.

/// Job control: a shell and its jobs, `suspend`, reads from the background, a child's
/// controlling terminal.
mod jobs;
/// examples/keys.rs on a pty: keys in and bytes out, a redraw on resize, quitting, signals.
mod keys_example;
/// Modes and settings: the raw and io bits, `reset_mode`, settings a job left, several
/// handles on one terminal, a mode set for a child, `with_signals`.
mod modes;
/// Opening terminals: `open_controlling`, `AnyStream`, the reopen and `O_NONBLOCK`, pty
/// masters, names, hung-up terminals, bad input.
mod open;
/// Reading and writing: keystrokes, resize, writes and end of file around a hang-up, `end`.
mod read_write;
/// Putting terminals back: saved settings, restore sequences, the loop's drop, `exit`, the
/// restore hooks on signals and panics.
mod restore;

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::{Loop, ReadEvent, RunMode, Signal, Tty, TtyMode};
use nix::sys::termios::{self, LocalFlags, Termios};

use crate::util::test_loop;

/// The examples/keys.rs program, run by the keys tests in a child process on a pty.
#[allow(dead_code)]
#[path = "../../../examples/keys.rs"]
mod keys;

// ----- helpers --------------------------------------------------------------------------------

fn attrs(fd: impl AsFd) -> Termios {
    termios::tcgetattr(fd).expect("tcgetattr")
}

/// Puts the terminal in raw mode (`cfmakeraw`, as `stty raw -echo`): bytes pass as written.
fn make_raw(fd: impl AsFd) {
    let mut t = attrs(&fd);
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(fd, termios::SetArg::TCSANOW, &t).unwrap();
}

/// How many control characters the kernel keeps (x86 and the generic layout). The libc's
/// struct has room for more, which musl's `tcgetattr` leaves as they were.
const KERNEL_NCCS: usize = 19;

/// Compares every field the kernel keeps for a terminal, one by one.
#[track_caller]
fn assert_same_termios(got: &Termios, want: &Termios, what: &str) {
    assert_eq!(got.input_flags, want.input_flags, "{what}: c_iflag");
    assert_eq!(got.output_flags, want.output_flags, "{what}: c_oflag");
    assert_eq!(got.control_flags, want.control_flags, "{what}: c_cflag");
    assert_eq!(got.local_flags, want.local_flags, "{what}: c_lflag");
    assert_eq!(got.control_chars[..KERNEL_NCCS], want.control_chars[..KERNEL_NCCS], "{what}: c_cc");
}

/// A pty, plus a second fd on its slave to inspect the terminal with.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    probe: OwnedFd,
}

fn pty() -> Pty {
    let (master, slave) = evloop::tty::openpty().expect("openpty");
    let probe = slave.try_clone().expect("dup the slave");
    Pty { master, slave, probe }
}

/// Reads the master until `n` bytes came, within a deadline.
fn read_master(master: BorrowedFd<'_>, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only {:?} arrived on the master", String::from_utf8_lossy(&got));
        if evloop_platform::fd::poll_readable(master, Some(left)).unwrap() {
            let mut buf = [0u8; 4096];
            let k = nix::unistd::read(master, &mut buf[..n - got.len()]).unwrap();
            got.extend_from_slice(&buf[..k]);
        }
    }
    got
}

/// Starts `cmd` with the pty's slave as its stdin, stdout, stderr and controlling terminal,
/// and reads the master until `marker` shows: the cell that gets the exit status, and what
/// came.
fn start_on_pty(
    lp: &mut Loop,
    p: &Pty,
    mut cmd: evloop::Command,
    marker: &str,
) -> (Rc<Cell<Option<evloop::ExitStatus>>>, Vec<u8>) {
    cmd.stdin(p.slave.try_clone().unwrap())
        .stdout(p.slave.try_clone().unwrap())
        .stderr(p.slave.try_clone().unwrap())
        .controlling_terminal(0);
    let (_child, status) = crate::util::spawn_recording(lp, &cmd);
    let mut seen = Vec::new();
    crate::util::read_until(p.master.as_fd(), &mut seen, marker);
    (status, seen)
}

fn write_master(master: BorrowedFd<'_>, bytes: &[u8]) {
    assert_eq!(nix::unistd::write(master, bytes).unwrap(), bytes.len());
}

/// Opens `slave` as a tty handle the way a terminal of another user's (after `su`) is
/// opened: its node cannot be opened again by name, so the handle stays on `slave`'s
/// description, whose writes block. The node is unreadable meanwhile; root, whom that does
/// not stop, opens under another effective user id.
fn open_unreopenable(lp: &mut Loop, slave: OwnedFd) -> Tty {
    let tty = as_stranger(slave.as_fd(), || Tty::open(lp, slave.try_clone().unwrap())).unwrap();
    assert!(tty.writes_block(lp).unwrap(), "not reopened: its writes block");
    tty
}

/// Runs `f` while the terminal `fd` cannot be opened by name: its node unreadable, and
/// root, whom that does not stop, under another effective user id.
fn as_stranger<T>(fd: BorrowedFd<'_>, f: impl FnOnce() -> T) -> T {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let name = evloop_platform::termios::ttyname(fd).unwrap();
    let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
    let mode = std::fs::metadata(&path).unwrap().permissions();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root {
        nix::unistd::seteuid(nix::unistd::Uid::from_raw(65534)).unwrap();
    }
    let out = f();
    if root {
        nix::unistd::seteuid(nix::unistd::Uid::from_raw(0)).unwrap();
    }
    std::fs::set_permissions(&path, mode).unwrap();
    out
}

/// Starts this test binary's ignored test `entry` as a session leader on the pty's slave
/// (its stdin, stdout and stderr), with `$env` set to `prefix` followed by the slave's path;
/// the returned cell gets the leader's exit status, and its handle closes.
/// This binary, to run its ignored test `name` (a test's child process) with `$env=value`.
fn child_test(name: &str, env: &str, value: impl AsRef<std::ffi::OsStr>) -> evloop::Command {
    let mut cmd = evloop::Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"]).env(env, value);
    cmd
}

fn spawn_session_leader(
    lp: &mut Loop,
    p: &Pty,
    entry: &str,
    env: &str,
    prefix: &str,
) -> Rc<Cell<Option<evloop::ExitStatus>>> {
    use std::os::unix::ffi::OsStrExt;
    let slave = evloop_platform::termios::ttyname(p.slave.as_fd()).unwrap();
    let mut value = std::ffi::OsString::from(prefix);
    value.push(std::ffi::OsStr::from_bytes(slave.to_bytes()));
    let mut leader = child_test(entry, env, value);
    leader
        .setsid(true)
        .stdin(p.slave.try_clone().unwrap())
        .stdout(p.slave.try_clone().unwrap())
        .stderr(p.slave.try_clone().unwrap());
    let status = Rc::new(Cell::new(None));
    let st = status.clone();
    leader
        .spawn(lp, move |lp, proc_, res| {
            st.set(Some(res.unwrap()));
            proc_.close(lp).unwrap();
        })
        .unwrap();
    status
}

/// The `leader` half of a job-control test's children: makes the pty slave at `slave` the
/// controlling terminal of this session (a session leader without one that opens a terminal
/// without `O_NOCTTY` makes it its own, on Linux), starts this binary's `entry` with
/// `$env=value` in a group of its own, gives it the terminal (and a `SIGCONT`, in case it read
/// before it had it), and runs until it exits: `done` gets its status, then the handles close.
fn lead_session(
    lp: &mut Loop,
    slave: &str,
    entry: &str,
    (env, value): (&str, &str),
    done: impl FnOnce(&mut Loop, Tty, evloop::ExitStatus) + 'static,
) {
    lead_session_with(lp, slave, entry, (env, value), |_, _, _| {}, done);
}

/// `lead_session`, with `started` called with the terminal and the child once it has the
/// terminal.
fn lead_session_with(
    lp: &mut Loop,
    slave: &str,
    entry: &str,
    (env, value): (&str, &str),
    started: impl FnOnce(&mut Loop, Tty, evloop::Process),
    done: impl FnOnce(&mut Loop, Tty, evloop::ExitStatus) + 'static,
) {
    let own = evloop::process::current_process_group();
    let ctty = std::fs::OpenOptions::new().read(true).write(true).open(slave).unwrap();
    let tty = Tty::open(lp, ctty.into()).unwrap();
    assert_eq!(tty.foreground_group(lp).unwrap(), own, "the session leader's group is in front");
    let mut shell = child_test(entry, env, value);
    shell.process_group(0);
    let child = shell
        .spawn(lp, move |lp, p, status| {
            done(lp, tty, status.unwrap());
            p.close(lp).unwrap();
            tty.close(lp).unwrap();
        })
        .unwrap();
    tty.set_foreground_group(lp, child.process.pid(lp).unwrap() as i32).unwrap();
    child.process.kill_group(lp, evloop::signal::SIGCONT).unwrap();
    started(lp, tty, child.process);
    lp.run(RunMode::Default).unwrap();
}

/// Closes every handle that is not closing yet, and runs the loop until they are gone.
fn close_all(lp: &mut Loop) {
    for h in lp.handles() {
        if !h.closing {
            lp.close(h.id).unwrap();
        }
    }
    lp.run(RunMode::Default).unwrap();
    assert!(lp.handles().is_empty());
}

/// What a tty reader collected.
#[derive(Default)]
struct Got {
    data: Vec<u8>,
    eof: bool,
}

/// Reads `tty` into a `Got`; at end of file, closes it. Stops the loop once `stop_at` bytes
/// came (0: never).
fn collect(lp: &mut Loop, tty: Tty, stop_at: usize) -> Rc<RefCell<Got>> {
    let got = Rc::new(RefCell::new(Got::default()));
    let sink = got.clone();
    tty.read_start(lp, move |lp, tty, ev| match ev {
        ReadEvent::Data(d) => {
            let mut g = sink.borrow_mut();
            g.data.extend_from_slice(d);
            if g.data.len() == stop_at {
                lp.stop();
            }
        }
        ReadEvent::Eof => {
            assert!(!sink.borrow().eof, "EOF twice");
            sink.borrow_mut().eof = true;
            tty.close(lp).unwrap();
        }
        ReadEvent::Error(e) => panic!("tty read: {e}"),
    })
    .unwrap();
    got
}

// ----- tests that run this binary again by name -----------------------------------------------
//
// Each of these is the child process of a test in a submodule, which starts the test binary
// again with `tty::<name> --exact --ignored`, so they stay in this module: in a submodule their
// names would change. Their doc comments say which tests start them.

// ----- opening terminals ----------------------------------------------------------------------

/// Set by the controlling-terminal test for its children.
const CONTROLLING_ENV: &str = "EVLOOP_TEST_OPEN_CONTROLLING_CHILD";

/// Opens its controlling terminal as a tty handle, puts it in raw mode and says so, or
/// says why it could not.
#[test]
#[ignore = "runs only as a child process of the controlling-terminal test"]
fn open_controlling_child() {
    if std::env::var_os(CONTROLLING_ENV).is_none() {
        return;
    }
    let mut lp = test_loop();
    match Tty::open_controlling(&mut lp) {
        Ok(t) => {
            t.set_mode(&mut lp, TtyMode::Raw).unwrap();
            let raw = !attrs(io::stdin()).local_flags.contains(LocalFlags::ICANON);
            t.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            let cooked = attrs(io::stdin()).local_flags.contains(LocalFlags::ICANON);
            println!("OPENED raw={raw} cooked-after={cooked} END");
        }
        Err(e) => println!("ERR {:?} {e} END", evloop::os_error_code(&e)),
    }
}

/// Set by the std-streams test for its child.
const STD_STREAMS_ENV: &str = "EVLOOP_TEST_STD_STREAMS_CHILD";

/// Opens its stdin, stdout and stderr with `AnyStream::stdin`, `stdout` and `stderr`, and
/// says what each became.
#[test]
#[ignore = "runs only as a child process of the std-streams test"]
fn std_streams_child() {
    if std::env::var_os(STD_STREAMS_ENV).is_none() {
        return;
    }
    let mut lp = test_loop();
    let opened = [
        evloop::AnyStream::stdin(&mut lp),
        evloop::AnyStream::stdout(&mut lp),
        evloop::AnyStream::stderr(&mut lp),
    ];
    let kinds: Vec<String> = opened
        .iter()
        .map(|s| match s {
            Ok(evloop::AnyStream::Tty(_)) => "tty".to_string(),
            Ok(evloop::AnyStream::Pipe(_)) => "pipe".to_string(),
            Err(e) => format!("error: {e}"),
        })
        .collect();
    close_all(&mut lp);
    println!("KINDS {} END", kinds.join(" | "));
}

const CTTY_ENV: &str = "EVLOOP_TEST_CTTY_REOPEN";

/// Not a test: the child process of
/// `issue_5_a_controlling_terminal_that_cannot_be_reopened_by_name_is_reopened_through_dev_tty`.
/// Its controlling terminal is a pty whose node it may not open (made unreadable; root
/// drops to another effective user id): it opens its stdout as a tty handle and says
/// whether the handle's writes block.
#[test]
#[ignore = "runs only as a child process of the /dev/tty reopen test"]
fn ctty_reopen_child() {
    if std::env::var_os(CTTY_ENV).is_none() {
        return;
    }
    let mut lp = test_loop();
    if nix::unistd::geteuid().is_root() {
        nix::unistd::seteuid(nix::unistd::Uid::from_raw(65534)).unwrap();
    }
    let by_name = evloop_platform::termios::ttyname(io::stdout().as_fd()).unwrap();
    let refused = std::fs::OpenOptions::new().write(true).open(by_name.to_str().unwrap()).is_err();
    let tty = Tty::open(&mut lp, io::stdout().as_fd().try_clone_to_owned().unwrap()).unwrap();
    let blocks = tty.writes_block(&lp).unwrap();
    let shares = tty.shares_nonblocking(&lp).unwrap();
    tty.close(&mut lp).unwrap();
    lp.run(RunMode::Default).unwrap();
    println!("CTTY refused_by_name={refused} writes_block={blocks} shares_nonblocking={shares} END");
}

// ----- putting terminals back -----------------------------------------------------------------

/// Set by the restore-bytes test for its child, which runs on a pty as its controlling
/// terminal.
const RESTORE_BYTES_ENV: &str = "EVLOOP_TEST_RESTORE_BYTES_CHILD";

/// Puts another pty in raw mode first, then its own terminal, and resets with a restore
/// sequence: says what reached the other pty.
#[test]
#[ignore = "runs only as a child process of the restore-bytes test"]
fn restore_bytes_child() {
    if std::env::var_os(RESTORE_BYTES_ENV).is_none() {
        return;
    }
    let mut lp = test_loop();
    // Every slot taken by other terminals first.
    let mut others = Vec::new();
    for _ in 0..evloop::limits::SAVED_TERMINALS_MAX {
        let (other_master, other_slave) = evloop::tty::openpty().unwrap();
        let other = Tty::open(&mut lp, other_slave).unwrap();
        other.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop_platform::fd::set_nonblocking(other_master.as_fd(), true).unwrap();
        others.push(other_master);
    }
    let own = Tty::open(&mut lp, io::stdin().as_fd().try_clone_to_owned().unwrap()).unwrap();
    own.set_mode(&mut lp, TtyMode::Raw).unwrap();
    evloop::tty::set_restore_sequence(b"<restored>");
    evloop::tty::reset_mode().unwrap();
    let own_cooked = attrs(io::stdin()).local_flags.contains(LocalFlags::ICANON);
    let mut got = Vec::new();
    for master in &others {
        let mut buf = [0u8; 256];
        let n = nix::unistd::read(master, &mut buf).unwrap_or(0);
        got.extend_from_slice(&buf[..n]);
    }
    close_all(&mut lp);
    println!("OWN cooked={own_cooked} OTHER got={:?} END", String::from_utf8_lossy(&got));
}

const HOOK_FLAGS_ENV: &str = "EVLOOP_TEST_HOOK_FLAGS";

/// Not a test: the child process of
/// `issue_5_a_restore_hook_put_back_without_its_one_shot_flag_still_ends_the_process`. Puts
/// its stdin (a pty slave) in raw mode under the restore hooks, then puts `SIGINT`'s action
/// back as code that saves and restores it with `signal()` does (`SA_RESTART`, without
/// `SA_RESETHAND`), and raises `SIGINT`.
#[test]
#[ignore = "runs only as a child process of the hook-flags test"]
fn hook_flags_child() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal as NixSignal, sigaction};
    if std::env::var_os(HOOK_FLAGS_ENV).is_none() {
        return;
    }
    evloop::tty::install_restore_hooks().unwrap();
    let mut lp = test_loop();
    let tty = Tty::open(&mut lp, io::stdin().as_fd().try_clone_to_owned().unwrap()).unwrap();
    tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
    let query = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: the hook's handler goes straight back, with other flags only.
    let hook = unsafe { sigaction(NixSignal::SIGINT, &query) }.unwrap();
    let again = SigAction::new(hook.handler(), SaFlags::SA_RESTART, hook.mask());
    // SAFETY: as above.
    unsafe { sigaction(NixSignal::SIGINT, &again) }.unwrap();
    evloop::signal::raise(libc::SIGINT).unwrap();
    println!("survived SIGINT");
    std::process::exit(0);
}

const RESET_SIGNAL_ENV: &str = "EVLOOP_TEST_RESET_SIGNAL";

/// Not a test: the child process of
/// `issue_5_the_restore_hooks_cover_every_signal_that_ends_the_process`. Puts its stdin (a pty
/// slave) in raw mode under the restore hooks, then gets the signal that the environment
/// names, with its default action put back first (as a command-line tool that wants to end
/// quietly in a closed pipeline does for `SIGPIPE`; the test runner may have ignored
/// others): `SIGPIPE` from a write to a pipe with no reader, `SIGABRT` from `abort`, the
/// others raised.
#[test]
#[ignore = "runs only as a child process of the reset-signal test"]
fn reset_signal_child() {
    use nix::sys::resource::{Resource, setrlimit};
    use nix::sys::signal::{SigHandler, Signal as NixSignal, signal};
    let Some(signo) = std::env::var(RESET_SIGNAL_ENV).ok().and_then(|s| s.parse::<i32>().ok()) else {
        return;
    };
    // SIGABRT, SIGQUIT, SIGXCPU and SIGXFSZ dump core by default: not here.
    setrlimit(Resource::RLIMIT_CORE, 0, 0).unwrap();
    // SAFETY: SIG_DFL is no handler; nothing else in this process changes this signal.
    unsafe { signal(NixSignal::try_from(signo).unwrap(), SigHandler::SigDfl) }.unwrap();
    evloop::tty::install_restore_hooks().unwrap();
    let mut lp = test_loop();
    let tty = Tty::open(&mut lp, io::stdin().as_fd().try_clone_to_owned().unwrap()).unwrap();
    tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
    match signo {
        libc::SIGPIPE => {
            let (r, w) = nix::unistd::pipe().unwrap();
            drop(r);
            let _ = nix::unistd::write(&w, b"x");
        }
        libc::SIGABRT => std::process::abort(),
        _ => evloop::signal::raise(signo).unwrap(),
    }
    println!("survived signal {signo}");
    std::process::exit(0);
}

const FORKED_ENV: &str = "EVLOOP_TEST_FORKED_RESET";

/// Not a test: the child process of
/// `issue_5_a_child_forked_without_exec_leaves_the_parents_terminal_alone`. Puts its stdin
/// (a pty slave) in raw mode under the restore hooks, then forks three times: one child
/// ends by `SIGTERM`, one by `exit` (the two ways the inherited hooks run there), and one
/// by `SIGTERM` after putting a pty of its own in raw mode. After each, the terminal must
/// still be raw, and the child's own pty restored.
#[test]
#[ignore = "runs only as a child process of the forked-reset test"]
fn forked_reset_child() {
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, fork};
    if std::env::var_os(FORKED_ENV).is_none() {
        return;
    }
    // SAFETY: SIG_DFL is no handler; nothing else in this process changes SIGTERM.
    unsafe {
        nix::sys::signal::signal(nix::sys::signal::Signal::SIGTERM, nix::sys::signal::SigHandler::SigDfl)
    }
    .unwrap();
    evloop::tty::install_restore_hooks().unwrap();
    let mut lp = test_loop();
    let tty = Tty::open(&mut lp, io::stdin().as_fd().try_clone_to_owned().unwrap()).unwrap();
    tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
    let raw = attrs(io::stdin());
    // A terminal of the child's own, which its hooks do restore.
    let other = pty();
    let other_before = attrs(&other.probe);
    for how in ["SIGTERM", "exit", "SIGTERM after a save of its own"] {
        // SAFETY: this test process has one thread (the harness runs it with
        // --test-threads=1), so the child may do anything the parent could.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                if how.ends_with("own") {
                    let mut lp = test_loop();
                    let mine = Tty::open(&mut lp, other.slave.try_clone().unwrap()).unwrap();
                    mine.set_mode(&mut lp, TtyMode::Raw).unwrap();
                    assert_ne!(attrs(&other.probe).local_flags, other_before.local_flags);
                }
                if how.starts_with("SIGTERM") {
                    let _ = evloop::signal::raise(libc::SIGTERM);
                }
                std::process::exit(0);
            }
            ForkResult::Parent { child } => {
                let status = waitpid(child, None).unwrap();
                let ended = match status {
                    WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGTERM, _) => "SIGTERM",
                    WaitStatus::Exited(_, 0) => "exit",
                    _ => "otherwise",
                };
                assert!(how.starts_with(ended), "{how}: {status:?}");
            }
        }
        assert_same_termios(&attrs(io::stdin()), &raw, &format!("after a forked child's {how}"));
        assert_same_termios(&attrs(&other.probe), &other_before, &format!("the child's own, after {how}"));
        println!("still raw after {how}");
    }
    close_all(&mut lp);
    std::process::exit(0);
}

const EXIT_RAW_ENV: &str = "EVLOOP_TEST_EXIT_RAW";

/// Not a test: the child process of `exit_restores_a_terminal_left_in_raw_mode`. Puts its
/// stdin (a pty slave) in raw mode and calls `exit` with the handle open, without the
/// restore hooks. With `$EXIT_RAW_ENV` = `fork`, a child forked without exec calls `exit`
/// first: that must leave the terminal alone. With `saved`, it first turns echo off (as a
/// job's `stty -echo` would) and takes that as normal with `save_settings`.
#[test]
#[ignore = "runs only as a child process of the exit test"]
fn exit_raw_child() {
    let Ok(how) = std::env::var(EXIT_RAW_ENV) else { return };
    let mut lp = test_loop();
    let tty = Tty::open(&mut lp, io::stdin().as_fd().try_clone_to_owned().unwrap()).unwrap();
    tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
    if how == "saved" {
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        let mut quiet = attrs(io::stdin());
        quiet.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(io::stdin(), termios::SetArg::TCSANOW, &quiet).unwrap();
        tty.save_settings(&mut lp).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
    }
    let raw = !attrs(io::stdin()).local_flags.contains(LocalFlags::ICANON);
    if how == "fork" {
        // SAFETY: the child only calls exit, and the process has one thread here.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => std::process::exit(0),
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
    }
    let still_raw = !attrs(io::stdin()).local_flags.contains(LocalFlags::ICANON);
    println!("raw {raw}, after the fork's exit {still_raw}");
    std::process::exit(0);
}

const EXIT_BG_ENV: &str = "EVLOOP_TEST_EXIT_BG";

/// Not a test: the child processes of `exit_in_the_background_leaves_the_terminal_alone`, by
/// `$EXIT_BG_ENV`:
///
/// - `leader <slave path>`: a session leader that makes the pty slave its controlling
///   terminal and runs the shell below in a group of its own, in front.
/// - `shell`: puts the terminal in raw mode, hands it to a `sleep` in a group of its own (a
///   job in front), and calls `exit` with the handle open. Its group is not orphaned (its
///   parent is in another group of the session), so a `tcsetattr` from there would stop it
///   with `SIGTTOU`.
#[test]
#[ignore = "runs only as a child process of the exit-in-the-background test"]
fn exit_in_the_background_child() {
    use evloop::process::current_process_group;
    let Ok(mode) = std::env::var(EXIT_BG_ENV) else { return };
    let mut lp = test_loop();
    if let Some(rest) = mode.strip_prefix("leader ") {
        let (how, slave) = rest.split_once(' ').unwrap();
        let value = format!("shell {how}");
        lead_session(
            &mut lp,
            slave,
            "tty::exit_in_the_background_child",
            (EXIT_BG_ENV, &value),
            |_, _, status| {
                println!("shell {status}");
            },
        );
        return;
    }
    let how = mode.strip_prefix("shell ").unwrap();
    if how != "exit" {
        evloop::tty::install_restore_hooks().unwrap();
    }
    let own = current_process_group();
    let tty =
        Tty::open(&mut lp, File::options().read(true).write(true).open("/dev/tty").unwrap().into()).unwrap();
    // Wait to be in front (the leader hands over after the spawn).
    while tty.foreground_group(&lp).unwrap() != own {
        std::thread::yield_now();
    }
    tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
    let mut job = evloop::Command::new("sleep");
    job.arg("100").process_group(0);
    let child = job.spawn(&mut lp, |_, _, _| {}).unwrap();
    let pid = child.process.pid(&lp).unwrap();
    tty.set_foreground_group(&lp, pid as i32).unwrap();
    println!("job {pid} in front");
    if how == "gone" {
        // The job ends, and is reaped, without the shell taking the terminal back: its group
        // stays named as the foreground one, with nobody in it.
        child.process.kill(&mut lp, evloop::signal::SIGKILL).unwrap();
        lp.run(RunMode::Default).unwrap();
        println!("job gone");
    }
    match how {
        "panic" => panic!("a panic in the background"),
        "term" => {
            nix::sys::signal::raise(nix::sys::signal::SIGTERM).unwrap();
            unreachable!("SIGTERM ends the process");
        }
        _ => std::process::exit(0),
    }
}

// ----- examples/keys.rs through a pty ---------------------------------------------------------

const KEYS_CHILD_ENV: &str = "EVLOOP_TEST_KEYS_CHILD";

/// Not a test: the entry point of the child process the keys tests start (this binary,
/// re-executed with `--ignored --exact`), which runs examples/keys.rs on its stdio.
#[test]
#[ignore = "runs only as the keys tests' child process"]
fn keys_example_child() {
    if std::env::var_os(KEYS_CHILD_ENV).is_some() {
        std::process::exit(keys::run());
    }
}

// ----- job control ----------------------------------------------------------------------------

const JOB_CHILD_ENV: &str = "EVLOOP_TEST_JOB_CHILD";

/// Not a test: the two child processes of
/// `a_shell_gives_the_terminal_to_a_job_and_takes_it_back`, by `$JOB_CHILD_ENV`:
///
/// - `leader <slave path>`: a session leader (spawned with `setsid`) that makes the pty slave
///   its controlling terminal, then starts the shell below in a group of its own and gives
///   it the terminal, as a login would.
/// - `shell`: runs a job that reads the terminal in a group of its own, as a shell runs a
///   foreground job, and takes the terminal back afterwards, from the background. Its group
///   is not orphaned (its parent is in another group of the session), so there, as in a real
///   shell, a `SIGTTOU` would stop it.
#[test]
#[ignore = "runs only as a child process of the job-control test"]
fn job_control_child() {
    use evloop::process::current_process_group;
    let Ok(mode) = std::env::var(JOB_CHILD_ENV) else { return };
    let mut lp = test_loop();
    let own = current_process_group();
    if let Some(slave) = mode.strip_prefix("leader ") {
        lead_session(
            &mut lp,
            slave,
            "tty::job_control_child",
            (JOB_CHILD_ENV, "shell"),
            move |lp, tty, status| {
                assert!(status.success(), "the shell failed");
                tty.set_foreground_group(lp, own).unwrap();
                println!("leader done");
            },
        );
        return;
    }
    assert_eq!(mode, "shell");
    let tty = Tty::open(&mut lp, File::open("/dev/tty").unwrap().into()).unwrap();
    println!("shell ready");
    // The line the test types once it saw that: by the time it is read, the leader has given
    // the shell the terminal (a read before that stops the shell until its SIGCONT).
    tty.read_start(&mut lp, move |lp, tty, ev| {
        let ReadEvent::Data(_) = ev else { panic!("unexpected {ev:?}") };
        tty.read_stop(lp).unwrap();
        assert_eq!(tty.foreground_group(lp).unwrap(), own, "the shell's group is in front");
        // Only the foreground group may read the terminal: in the background, `read` stops
        // the job.
        let mut job = evloop::Command::new("sh");
        job.args(["-c", "echo job ready; read a; echo \"job read $a\"; read b; echo \"job read $b\""])
            .process_group(0);
        let child = job
            .spawn(lp, move |lp, p, status| {
                assert!(status.unwrap().success());
                // From the background now: SIGTTOU must not stop the shell.
                tty.set_foreground_group(lp, own).unwrap();
                assert_eq!(tty.foreground_group(lp).unwrap(), own);
                println!("back in front");
                p.close(lp).unwrap();
                tty.close(lp).unwrap();
            })
            .unwrap();
        let pgid = child.process.pid(lp).unwrap() as i32;
        tty.set_foreground_group(lp, pgid).unwrap();
        assert_eq!(tty.foreground_group(lp).unwrap(), pgid);
        // Ctrl-Z stops the job: the shell takes the terminal back, then resumes the job in
        // the foreground, as `fg` does.
        child
            .process
            .watch_stops(lp, move |lp, p, ev| match ev {
                evloop::StopEvent::Stopped(signal) => {
                    // (`SIGTTIN`: a read before the hand-over above; resumed all the same.)
                    if signal == evloop::signal::SIGTSTP {
                        tty.set_foreground_group(lp, own).unwrap();
                        println!("job stopped");
                        tty.set_foreground_group(lp, pgid).unwrap();
                    }
                    p.kill_group(lp, evloop::signal::SIGCONT).unwrap();
                }
                evloop::StopEvent::Continued => println!("job continued"),
            })
            .unwrap();
        // The job may have tried to read before it had the terminal, and been stopped.
        child.process.kill_group(lp, evloop::signal::SIGCONT).unwrap();
    })
    .unwrap();
    lp.run(RunMode::Default).unwrap();
}

const SUSPEND_CHILD_ENV: &str = "EVLOOP_TEST_SUSPEND_CHILD";

/// The processes of group `pgid`, from `/proc`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(") ").and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse().ok())
                == Some(pgid)
        })
        .collect()
}

/// Whether the terminal at `fd` is in canonical (line) mode, as normal mode is.
fn canonical(fd: impl AsFd) -> bool {
    attrs(fd).local_flags.contains(LocalFlags::ICANON)
}

/// Not a test: the child processes of `suspend_stops_the_group_in_normal_mode_and_resumes_raw`,
/// by `$SUSPEND_CHILD_ENV`:
///
/// - `leader <slave path>`: a session leader with the pty slave as its controlling terminal,
///   which runs the job below in a group of its own, in front, as a shell would; when the job
///   stops it says whether the terminal is in normal mode, waits for the job's other member
///   to stop too, takes the terminal and gives it back, and continues the job (`fg`); at the
///   end it says how often the job stopped.
/// - `job`: puts the terminal in raw mode, has a suspend through another terminal refused,
///   starts a `sleep` in its group, watches `SIGTSTP` with a `Signal` handle, and suspends;
///   once continued, says whether it is raw again, and checks that its watcher is back in
///   place by raising `SIGTSTP`, which must reach the watcher, not stop it; then suspends
///   through a handle on its stdout, in normal mode, which must take the input's mode.
/// - `leader-kill <slave path>`: as `leader`, with the job below; when it stops, takes the
///   terminal and sends the job `SIGTERM` then `SIGCONT`, as a shell's `kill %1` does.
/// - `job-term`: puts the terminal in raw mode, watches `SIGTERM` with a `Signal` handle that
///   ends it, and suspends: continued in the background with the signal waiting, the
///   suspend must return (`WouldBlock`) for the loop to run the handle's callback.
/// - `orphan <slave path>`: a session leader (its group orphaned: nobody to continue it)
///   that puts its terminal in raw mode and suspends: the kernel does not stop it.
#[test]
#[ignore = "runs only as a child process of the suspend test"]
fn suspend_child() {
    use evloop::process::current_process_group;
    let Ok(mode) = std::env::var(SUSPEND_CHILD_ENV) else { return };
    let mut lp = test_loop();
    let own = current_process_group();
    if let Some(slave) = mode.strip_prefix("leader ") {
        let probe = File::open(slave).unwrap();
        let stops = Rc::new(Cell::new(0));
        let counted = stops.clone();
        lead_session_with(
            &mut lp,
            slave,
            "tty::suspend_child",
            (SUSPEND_CHILD_ENV, "job"),
            move |lp, tty, job| {
                let pgid = job.pid(lp).unwrap() as i32;
                job.watch_stops(lp, move |lp, p, ev| {
                    if let evloop::StopEvent::Stopped(signal) = ev {
                        if signal == evloop::signal::SIGTSTP {
                            counted.set(counted.get() + 1);
                            // The job's other members stop with it (waited for: the
                            // signal reaches them as this process stops).
                            let members = group_members(pgid);
                            for m in members.iter().filter(|&&m| m != pgid) {
                                crate::util::wait_for_state(&format!("/proc/{m}/stat"), 'T');
                            }
                            println!(
                                "stop {}: canonical {}, {} members stopped",
                                counted.get(),
                                canonical(&probe),
                                members.len()
                            );
                            tty.set_foreground_group(lp, own).unwrap();
                            tty.set_foreground_group(lp, pgid).unwrap();
                        }
                        p.kill_group(lp, evloop::signal::SIGCONT).unwrap();
                    }
                })
                .unwrap();
            },
            move |lp, tty, status| {
                assert!(status.success(), "the job failed: {status}");
                tty.set_foreground_group(lp, own).unwrap();
                println!("leader done, {} stops", stops.get());
            },
        );
        return;
    }
    if let Some(slave) = mode.strip_prefix("leader-kill ") {
        // A shell's `kill %1` of the job it found stopped: the terminal back to itself, then
        // SIGTERM and SIGCONT to the job's group.
        lead_session_with(
            &mut lp,
            slave,
            "tty::suspend_child",
            (SUSPEND_CHILD_ENV, "job-term"),
            move |lp, tty, job| {
                job.watch_stops(lp, move |lp, p, ev| {
                    let evloop::StopEvent::Stopped(signal) = ev else { return };
                    if signal != evloop::signal::SIGTSTP {
                        // (The bug: stopped again by SIGTTOU, with the SIGTERM unheeded.)
                        println!("job stopped again by {}", evloop::signal::name(signal).unwrap_or("?"));
                        p.kill_group(lp, evloop::signal::SIGKILL).unwrap();
                        return;
                    }
                    tty.set_foreground_group(lp, own).unwrap();
                    p.kill_group(lp, evloop::signal::SIGTERM).unwrap();
                    p.kill_group(lp, evloop::signal::SIGCONT).unwrap();
                })
                .unwrap();
            },
            move |lp, tty, status| {
                tty.set_foreground_group(lp, own).unwrap();
                println!("leader done, the job {status}");
            },
        );
        return;
    }
    if mode == "job-term" {
        // A raw-mode program that ends cleanly on SIGTERM, suspended and then killed.
        let tty = Tty::open_controlling(&mut lp).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let term = Signal::new(&mut lp);
        term.start(&mut lp, evloop::signal::SIGTERM, move |lp, sig, _| {
            println!("job got SIGTERM, canonical {}", canonical(io::stdin()));
            sig.close(lp).unwrap();
            tty.close(lp).unwrap();
        })
        .unwrap();
        let err = tty.suspend(&mut lp).unwrap_err();
        println!("suspend: {:?}, {}", err.kind(), err.to_string().contains("SIGTERM waiting"));
        lp.run(RunMode::Default).unwrap();
        return;
    }
    if let Some(slave) = mode.strip_prefix("orphan ") {
        let tty = Tty::open(
            &mut lp,
            std::fs::OpenOptions::new().read(true).write(true).open(slave).unwrap().into(),
        )
        .unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let stopped = tty.suspend(&mut lp).unwrap();
        println!("orphan suspended {stopped}, canonical {}", canonical(io::stdin()));
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        return;
    }
    assert_eq!(mode, "job");
    let tty = Tty::open_controlling(&mut lp).unwrap();
    tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
    assert!(!canonical(io::stdin()));
    // A terminal that is not the process's own: refused, and nothing stops.
    let (_master, slave) = evloop::tty::openpty().unwrap();
    let other = Tty::open(&mut lp, slave).unwrap();
    other.set_mode(&mut lp, TtyMode::Raw).unwrap();
    let err = other.suspend(&mut lp).unwrap_err();
    println!("another terminal refused: {}", err.to_string().contains("controlling terminal"));
    other.close(&mut lp).unwrap();
    // A member of the job's group besides this process.
    let member =
        evloop::Command::new("sleep").arg("100").kill_on_drop(true).spawn(&mut lp, |_, _, _| {}).unwrap();
    let seen = Rc::new(Cell::new(0));
    let s = seen.clone();
    let watcher = Signal::new(&mut lp);
    watcher.start(&mut lp, evloop::signal::SIGTSTP, move |_, _, _| s.set(s.get() + 1)).unwrap();
    assert!(tty.suspend(&mut lp).unwrap(), "SIGTSTP is not ignored here");
    let mode = tty.mode(&lp).unwrap();
    lp.run(RunMode::NoWait).unwrap();
    println!("job resumed, canonical {}, mode {mode:?}, {} SIGTSTP seen", canonical(io::stdin()), seen.get());
    evloop::signal::raise(evloop::signal::SIGTSTP).unwrap();
    lp.run(RunMode::NoWait).unwrap();
    println!("after a raise, {} SIGTSTP seen", seen.get());
    // Through the output's handle, in normal mode: the input's raw mode goes and comes back.
    let out = Tty::open(&mut lp, io::stdout().as_fd().try_clone_to_owned().unwrap()).unwrap();
    assert!(out.suspend(&mut lp).unwrap());
    println!("resumed through stdout, canonical {}", canonical(io::stdin()));
    watcher.close(&mut lp).unwrap();
    out.close(&mut lp).unwrap();
    member.process.close(&mut lp).unwrap();
    tty.close(&mut lp).unwrap();
    lp.run(RunMode::Default).unwrap();
}

const BG_READ_ENV: &str = "EVLOOP_TEST_BG_READ";

/// Not a test: the child process of `a_read_from_the_background_is_an_error_not_eof`. A
/// session leader that makes the pty slave (`$BG_READ_ENV`) its controlling terminal, puts
/// a `sleep` in front, blocks `SIGTTIN`, and reads the terminal from the background.
#[test]
#[ignore = "runs only as a child process of the background-read test"]
fn background_read_child() {
    use nix::sys::signal::{SigSet, Signal as NixSignal};
    let Ok(slave) = std::env::var(BG_READ_ENV) else { return };
    let mut lp = test_loop();
    let ctty = std::fs::OpenOptions::new().read(true).write(true).open(slave).unwrap();
    let tty = Tty::open(&mut lp, ctty.into()).unwrap();
    let mut front = evloop::Command::new("sleep");
    front.arg("100").process_group(0).kill_on_drop(true);
    let child = front.spawn(&mut lp, |lp, p, _| p.close(lp).unwrap()).unwrap();
    let pgid = child.process.pid(&lp).unwrap() as i32;
    // SIGTTOU blocked while a background group takes the terminal is the loop's business;
    // here the leader is still in front.
    tty.set_foreground_group(&lp, pgid).unwrap();
    // Blocked, SIGTTIN does not stop a background reader: its read fails with EIO.
    let mut ttin = SigSet::empty();
    ttin.add(NixSignal::SIGTTIN);
    ttin.thread_block().unwrap();
    let p = child.process;
    tty.read_start(&mut lp, move |lp, tty, ev| {
        let what = match ev {
            ReadEvent::Data(d) => format!("data {:?}", String::from_utf8_lossy(d)),
            ReadEvent::Eof => "eof".to_string(),
            ReadEvent::Error(e) => {
                format!(
                    "error {:?} (background: {}): {e}",
                    evloop::os_error_code(&e),
                    evloop::tty::is_background_read(&e)
                )
            }
        };
        println!("bg read: {what}.");
        if let Err(e) = tty.read_stop(lp) {
            println!("read_stop: {e}");
        }
        p.kill(lp, evloop::signal::SIGKILL).unwrap();
        tty.close(lp).unwrap();
    })
    .unwrap();
    println!("reader ready");
    lp.run(RunMode::Default).unwrap();
}

const FOREGROUND_ENV: &str = "EVLOOP_TEST_FOREGROUND";

/// Not a test: the child processes of `issue_6_a_job_takes_the_terminal_before_its_exec`,
/// by `$FOREGROUND_ENV`: `leader <slave path>` leads the session; `shell` waits to be in
/// front, then starts `job` with `Command::foreground` and never hands the terminal over
/// itself; `job` says whether its group is in front when it starts.
#[test]
#[ignore = "runs only as a child process of the foreground test"]
fn foreground_child() {
    use evloop::process::current_process_group;
    let Ok(mode) = std::env::var(FOREGROUND_ENV) else { return };
    if mode == "job" || mode == "stage" {
        // (A stage's stdin is the pipeline's pipe: the terminal by its name.)
        let front = nix::unistd::tcgetpgrp(File::open("/dev/tty").unwrap()).unwrap();
        let own = nix::unistd::getpgrp();
        println!("{mode} {}", if front == own { "in front" } else { "in the background" });
        return;
    }
    let mut lp = test_loop();
    if let Some(slave) = mode.strip_prefix("leader ") {
        lead_session(&mut lp, slave, "tty::foreground_child", (FOREGROUND_ENV, "shell"), |_, _, status| {
            println!("shell {status}");
        });
        return;
    }
    let own = current_process_group();
    let tty =
        Tty::open(&mut lp, File::options().read(true).write(true).open("/dev/tty").unwrap().into()).unwrap();
    while tty.foreground_group(&lp).unwrap() != own {
        std::thread::yield_now();
    }
    // A group of its own is needed, and an open tty.
    let err = evloop::Command::new("true").foreground(tty).spawn(&mut lp, |_, _, _| {}).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let other =
        Tty::open(&mut lp, File::options().read(true).write(true).open("/dev/tty").unwrap().into()).unwrap();
    other.close(&mut lp).unwrap();
    let mut closing = evloop::Command::new("true");
    closing.process_group(0).foreground(other);
    let err = closing.spawn(&mut lp, |_, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("closing"), "{err}");
    // A child that took the terminal and then failed its exec: the terminal comes back.
    let mut missing = evloop::Command::new("/nonexistent/program");
    missing.process_group(0).foreground(tty);
    missing.spawn(&mut lp, |_, _, _| {}).unwrap_err();
    assert_eq!(tty.foreground_group(&lp).unwrap(), own, "back in front after a failed exec");
    // So does one a pipeline's first stage took, when a later stage fails.
    let mut first = evloop::Command::new("sleep");
    first.arg("100").foreground(tty);
    let mut pipeline = evloop::Pipeline::new([first, evloop::Command::new("/nonexistent/program")]);
    pipeline.process_group(true);
    pipeline.spawn(&mut lp, |_, _| {}).unwrap_err();
    assert_eq!(tty.foreground_group(&lp).unwrap(), own, "back in front after a failed pipeline");
    lp.run(RunMode::Default).unwrap();
    // In the background (a job has the terminal), a child is not let take it from that job
    // (pager trial: a tool started with `&` took it from the shell), and says why.
    assert!(tty.is_foreground(&lp).unwrap());
    let mut sleeper = evloop::Command::new("sleep");
    sleeper.arg("100").process_group(0).foreground(tty);
    let job = sleeper
        .spawn(&mut lp, move |lp, p, _| {
            tty.set_foreground_group(lp, own).unwrap();
            p.close(lp).unwrap();
        })
        .unwrap();
    let job_group = job.process.pid(&lp).unwrap() as i32;
    while tty.foreground_group(&lp).unwrap() != job_group {
        std::thread::yield_now();
    }
    assert!(!tty.is_foreground(&lp).unwrap());
    let mut pager = evloop::Command::new("true");
    pager.process_group(0).foreground(tty);
    let err = pager.spawn(&mut lp, |_, _, _| panic!("never spawned")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
    assert!(err.to_string().contains("runs in the background"), "{err}");
    assert_eq!(tty.foreground_group(&lp).unwrap(), job_group, "the job kept the terminal");
    job.process.kill(&mut lp, libc::SIGKILL).unwrap();
    lp.run(RunMode::Default).unwrap();
    assert!(tty.is_foreground(&lp).unwrap());
    // A group job whose first stage, the one to take the terminal, cannot start
    // (`spawn_each`): the stage that leads the group in its place takes it.
    let mut missing = evloop::Command::new("/nonexistent/program");
    missing.foreground(tty);
    let stage = child_test("tty::foreground_child", FOREGROUND_ENV, "stage");
    let mut pipeline = evloop::Pipeline::new([missing, stage]);
    pipeline.process_group(true);
    let started = pipeline
        .spawn_each(&mut lp, move |lp, all| {
            assert!(all[1].as_ref().unwrap().success());
            tty.set_foreground_group(lp, own).unwrap();
        })
        .unwrap();
    assert!(started[0].is_err() && started[1].is_ok());
    lp.run(RunMode::Default).unwrap();
    let mut job = child_test("tty::foreground_child", FOREGROUND_ENV, "job");
    job.process_group(0).foreground(tty);
    job.spawn(&mut lp, move |lp, p, status| {
        assert!(status.unwrap().success());
        tty.set_foreground_group(lp, own).unwrap();
        p.close(lp).unwrap();
        tty.close(lp).unwrap();
    })
    .unwrap();
    lp.run(RunMode::Default).unwrap();
}
