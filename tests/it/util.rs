//! Test support: every test runs in its own child process, under a watchdog, with leak checks.
//!
//! `cargo test` runs tests as threads of one process, which makes fd counts, children and
//! signal dispositions shared and racy. So each test re-executes this binary to run only
//! itself (`--exact`), in a fresh process:
//!
//! - the parent waits for it at most the test's time bound (a watchdog, not a sleep), kills it
//!   on timeout and fails with its output;
//! - the child compares its open fds before and after the body, and fails if the body left
//!   an fd open or a child process (running or zombie) behind.
//!
//! Set `EVLOOP_TEST_FORCE_SELECT=1` to build every loop from [`test_loop`] with the select
//! helper forced on.

// Shared by several test binaries, each using part of it.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use evloop::Loop;

const CHILD_ENV: &str = "EVLOOP_TEST_CHILD";

/// What a test may leave behind.
#[derive(Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // AllowChildren is for the process tests.
pub enum Leaks {
    /// Nothing: no fd, no child.
    None,
    /// Children may outlive the body (tests of documented orphan behaviour).
    AllowChildren,
}

/// A loop for tests: honours `EVLOOP_TEST_FORCE_SELECT`.
pub fn test_loop() -> Loop {
    builder().build().expect("create loop")
}

/// The builder [`test_loop`] uses, for tests that add options.
pub fn builder() -> evloop::LoopBuilder {
    let force = std::env::var_os("EVLOOP_TEST_FORCE_SELECT").is_some_and(|v| v == "1");
    Loop::builder().force_select_helper(force)
}

/// Whether this run forces the select helper.
#[allow(dead_code)]
pub fn forced_select() -> bool {
    std::env::var_os("EVLOOP_TEST_FORCE_SELECT").is_some_and(|v| v == "1")
}

fn children_of_self() -> Vec<String> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return out };
    for t in tasks.flatten() {
        let p = t.path().join("children");
        if let Ok(s) = std::fs::read_to_string(p) {
            for pid in s.split_whitespace() {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                out.push(format!("pid {pid}: {}", stat.trim()));
            }
        }
    }
    out
}

fn describe_fds(fds: &[i32]) -> String {
    fds.iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string());
            format!("{fd} -> {}", target.unwrap_or_else(|e| e.to_string()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Gives the test the signal state of a command started from an interactive shell: a
/// suite started in the background by a script (`cargo test &` makes `SIGINT` and `SIGQUIT`
/// ignored), under `nohup`, or by a runner that blocks signals, sees the same as one started
/// by hand. (Tests about inherited dispositions set them up themselves.)
fn fresh_signal_state() {
    use evloop_platform::signal::{Disposition, set_blocked, set_disposition};
    let signals = [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM, libc::SIGCHLD];
    for sig in signals {
        set_disposition(sig, Disposition::Default).expect("reset a disposition");
    }
    set_blocked(&signals, false).expect("unblock");
}

/// Runs `body` as the test `name` (its full path, `module_path!()::fn`), isolated.
pub fn isolated(full_name: &str, timeout: Duration, leaks: Leaks, body: impl FnOnce()) {
    if std::env::var_os(CHILD_ENV).is_some() {
        fresh_signal_state();
        let before = evloop_platform::fd::open_fds().expect("list fds");
        body();
        let after = evloop_platform::fd::open_fds().expect("list fds");
        let leaked: Vec<i32> = after.iter().copied().filter(|fd| !before.contains(fd)).collect();
        assert!(leaked.is_empty(), "fds leaked by the test: {}", describe_fds(&leaked));
        if leaks == Leaks::None {
            let kids = children_of_self();
            assert!(kids.is_empty(), "child processes left behind: {kids:?}");
        }
        return;
    }
    // Strip the crate name: libtest names tests by their path inside the crate.
    let name = full_name.split_once("::").map_or(full_name, |(_, rest)| rest);
    let exe = std::env::current_exe().expect("current_exe");
    // A process group of its own, so the watchdog can end the test's children with it.
    let mut child = Command::new(exe)
        .process_group(0)
        .args([name, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, "1")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the test's own process");
    // Read as it comes, into buffers the threads share, with one bound on the wait for
    // their ends: a descendant that escaped the watchdog's kill (a daemon in a session of
    // its own) may hold the pipes open for long, and what came before is the report.
    let (done_tx, done_rx) = mpsc::channel();
    let read_all = |mut from: Box<dyn Read + Send>| {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (g, done) = (got.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                g.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = done.send(());
        });
        got
    };
    let out_buf = read_all(Box::new(child.stdout.take().expect("piped")));
    let err_buf = read_all(Box::new(child.stderr.take().expect("piped")));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let st = child.wait();
        let _ = tx.send(());
        st
    });
    // The watchdog: wait for the child's exit, at most `timeout`.
    let timed_out = rx.recv_timeout(timeout).is_err();
    if timed_out {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
    }
    let status = waiter.join().expect("waiter thread").expect("wait for test process");
    let deadline = Instant::now() + Duration::from_secs(5);
    let ended =
        (0..2).all(|_| done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok());
    let text = |buf: &Mutex<Vec<u8>>| String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    let (out, mut err) = (text(&out_buf), text(&err_buf));
    if !ended {
        err.push_str("\n(the output was still held open 5 s after the exit, by a process the test left)\n");
    }
    if timed_out || !status.success() {
        panic!(
            "test {name} {} ({status})\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
            if timed_out { format!("timed out after {timeout:?}") } else { "failed".to_string() }
        );
    }
    if !out.contains("1 passed") && !out.contains("test result: ok. 1 passed") {
        panic!("test {name} did not run in its child process:\n{out}\n{err}");
    }
    // What the test reported (figures, for one): shown with `--nocapture`.
    eprint!("{err}");
}

/// Declares isolated tests: `case!(fn name() { ... })`, with an optional time bound in
/// seconds (`case!(secs = 60, fn name() { ... })`) and leak policy
/// (`case!(leaks = AllowChildren, fn ...)`).
#[macro_export]
macro_rules! case {
    (secs = $secs:expr, leaks = $leaks:ident, $(#[$m:meta])* fn $name:ident() $body:block) => {
        #[test]
        $(#[$m])*
        fn $name() {
            $crate::util::isolated(
                concat!(module_path!(), "::", stringify!($name)),
                std::time::Duration::from_secs($secs),
                $crate::util::Leaks::$leaks,
                || $body,
            )
        }
    };
    (secs = $secs:expr, $(#[$m:meta])* fn $name:ident() $body:block) => {
        $crate::case!(secs = $secs, leaks = None, $(#[$m])* fn $name() $body);
    };
    (leaks = $leaks:ident, $(#[$m:meta])* fn $name:ident() $body:block) => {
        $crate::case!(secs = 20, leaks = $leaks, $(#[$m])* fn $name() $body);
    };
    ($(#[$m:meta])* fn $name:ident() $body:block) => {
        $crate::case!(secs = 20, leaks = None, $(#[$m])* fn $name() $body);
    };
}

/// Spins (yielding) until the process or thread whose `/proc/.../stat` is `stat` is in
/// `state` (`T` stopped, `S` sleeping); the test's watchdog bounds it.
#[allow(dead_code)]
pub fn wait_for_state(stat: &str, state: char) {
    while state_of(stat).unwrap_or_else(|| panic!("{stat} is gone")) != state {
        std::thread::yield_now();
    }
}

/// The state in the `/proc/.../stat` file `stat` (`R`, `S`, `T`, `Z`...); `None` when it
/// cannot be read (the process or thread is gone).
#[allow(dead_code)]
pub fn state_of(stat: &str) -> Option<char> {
    // The state follows the command name, which is in parentheses and may hold anything.
    std::fs::read_to_string(stat).ok()?.rsplit_once(") ")?.1.chars().next()
}

/// Spins (yielding) until this process's select helper thread sleeps in `select`, as its
/// `/proc/self/task/*/wchan` tells; the test's watchdog bounds it.
#[allow(dead_code)]
pub fn wait_for_select_helper_to_wait() {
    let helper_waits = || {
        std::fs::read_dir("/proc/self/task").unwrap().flatten().any(|t| {
            let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
            // Where the kernel is (a kernel without symbols says "0": then the syscall, on
            // x86-64 select or pselect6, asleep).
            let wchan = read("wchan");
            let in_select =
                ["poll_schedule_timeout", "do_select", "core_sys_select"].iter().any(|f| wchan.contains(f))
                    || (wchan.trim() == "0"
                        && cfg!(target_arch = "x86_64")
                        && ["23 ", "270 "].iter().any(|n| read("syscall").starts_with(n))
                        && state_of(&t.path().join("stat").to_string_lossy()) == Some('S'));
            read("comm").trim() == "evloop-select" && in_select
        })
    };
    while !helper_waits() {
        std::thread::yield_now();
    }
}

/// Reads `fd` (a child's output, a pty master) into `seen` until `needle` shows up there,
/// within 10 s: a deadline for a test that fails, not a sleep.
#[allow(dead_code)]
pub fn read_until(fd: std::os::fd::BorrowedFd<'_>, seen: &mut Vec<u8>, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(seen).contains(needle) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(!left.is_zero(), "no {needle:?} in {:?}", String::from_utf8_lossy(seen));
        if evloop_platform::fd::poll_readable(fd, Some(left)).unwrap() {
            let mut buf = [0u8; 4096];
            let n = nix::unistd::read(fd, &mut buf)
                .unwrap_or_else(|e| panic!("reading: {e}; so far {:?}", String::from_utf8_lossy(seen)));
            assert!(n > 0, "end of file before {needle:?}; so far {:?}", String::from_utf8_lossy(seen));
            seen.extend_from_slice(&buf[..n]);
        }
    }
}

/// A named FIFO's read and write ends, both blocking, one-way, with the FIFO's name already
/// gone. Unlike an anonymous pipe or a FIFO end with write access (which `Pipe::open` opens
/// again as a description of its own on Linux) or a socket (read and written with
/// `MSG_DONTWAIT`), a named FIFO open for reading only gets `O_NONBLOCK` on its shared
/// description: the case the restore machinery exists for. (For a shared description to
/// write to, see `packet_pipe`.)
pub fn fifo_pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("evloop-fifo-pair-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // Read-write first, so that neither one-way open below waits for the other side.
    let both = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("open fifo");
    let r = std::fs::File::open(&path).expect("open fifo for reading");
    let w = std::fs::OpenOptions::new().write(true).open(&path).expect("open fifo for writing");
    drop(both);
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
    (r.into(), w.into())
}

/// A blocking packet-mode pipe (`O_DIRECT`): the one pipe whose write end `Pipe::open` leaves
/// on its shared description on Linux (packet mode lives on the description), so `O_NONBLOCK`
/// goes there, where other holders see it. What any blocking pipe gets on macOS and FreeBSD,
/// so there it is a plain one.
pub fn packet_pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    #[cfg(target_os = "linux")]
    let pair = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_DIRECT)
        .expect("pipe2 O_DIRECT");
    #[cfg(not(target_os = "linux"))]
    let pair = std::io::pipe().map(|(r, w)| (r.into(), w.into())).expect("pipe");
    pair
}

/// Spawns `cmd`; when it exits, the returned cell gets its status and the handle closes.
pub fn spawn_recording(
    lp: &mut evloop::Loop,
    cmd: &evloop::Command,
) -> (evloop::Child, std::rc::Rc<std::cell::Cell<Option<evloop::ExitStatus>>>) {
    let status = std::rc::Rc::new(std::cell::Cell::new(None));
    let s = status.clone();
    let child = cmd
        .spawn(lp, move |lp, p, r| {
            s.set(Some(r.unwrap()));
            p.close(lp).unwrap();
        })
        .unwrap();
    (child, status)
}

/// Lowers the soft open-file limit to `headroom` above the fds open now, then fills the
/// table with `/dev/null` up to it: the next fd anyone asks for gets `EMFILE`. Dropping the
/// result frees them; the caller restores the limit.
pub fn fill_fd_table(headroom: u64) -> Vec<std::fs::File> {
    let open_now = evloop_platform::fd::open_fds().unwrap().len() as u64;
    evloop_platform::fd::set_nofile_soft_limit(open_now + headroom).unwrap();
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
        assert!(filler.len() < 100, "the limit is not enforced");
    }
    filler
}

/// Slow work in a callback, for tests of what such work does to the loop's time: the
/// thread stays busy for `d` (work, not a wait the test synchronizes on).
#[allow(dead_code)]
pub fn busy_for(d: std::time::Duration) {
    let began = std::time::Instant::now();
    while began.elapsed() < d {
        std::hint::spin_loop();
    }
}
