//! Child processes: one submodule per subject, and the helpers they share.
//!
//! Most tests run on every way a loop can spawn and reap (`flavours`). A helper used by one
//! subject only lives in that subject's file. The tests at the end of this file run the test
//! binary again under their own full name, `process::<name>`, so they stay here.

/// Exit status, resource usage, `kill`, stops and continues, stop signals around a job's exec.
mod exit;
/// Captures: `output`, `stream_output`, input, limits, pausing, what a capture takes or leaves.
mod output;
/// Pipelines: wiring, `Pipeline::output`, stages that cannot start, handles, one group a job.
mod pipelines;
/// Children on a pty: `spawn_on_pty`, `output_on_pty`, `stream_output_on_pty`, the drop's hang-up.
mod pty;
/// Reaping without zombies: closes and drops, others' children, SIGCHLD handlers, many spawns.
mod reaping;
/// Spawn paths: environment, directory, program lookup, arg0, signal dispositions, ids, bad input.
mod spawn;
/// Stdio: pipes, `SameAs`, `Close`, the fds a child gets, handles moved into a child.
mod stdio;
/// Ending children and groups: `kill_group`, `kill_group_on_drop`, `terminate`, `terminate_group`.
mod termination;
/// Deadlines: `Command::timeout`, `terminate_after`, `wait_delay`, `cut_output`.
mod timeouts;

use std::cell::{Cell, RefCell};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

#[cfg(target_os = "linux")]
use evloop::signal::SIGKILL;
#[cfg(not(target_vendor = "apple"))]
use evloop::signal::SIGTERM;
use evloop::{
    Command, ExitStatus, Loop, LoopBuilder, Pipe, Process, ReadEvent, RunMode, Stdio, os_error_code,
};
use evloop_platform::libc;

use crate::pipe::{Collected, collect};
use crate::util::builder;

// ----- helpers ------------------------------------------------------------------------------

/// The ways a loop can spawn and reap: default (the vfork path + pidfd), posix_spawn forced
/// (the way of macOS and FreeBSD), fork forced, SIGCHLD forced, fork and SIGCHLD forced.
fn flavours() -> [(&'static str, LoopBuilder); 5] {
    [
        ("default", builder()),
        ("posix_spawn", builder().force_posix_spawn(true)),
        ("fork", builder().force_fork_spawn(true)),
        ("sigchld", builder().force_sigchld_reaping(true)),
        ("fork+sigchld", builder().force_fork_spawn(true).force_sigchld_reaping(true)),
    ]
}

/// Spawns `cmd`, runs the loop until the child exits, closes the handle; returns the status.
fn status_of(lp: &mut Loop, cmd: &Command) -> io::Result<ExitStatus> {
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    cmd.spawn(lp, move |lp, p, res| {
        *g.borrow_mut() = Some(res);
        p.close(lp).unwrap();
    })?;
    lp.run(RunMode::Default).unwrap();
    got.borrow_mut().take().expect("the exit callback ran")
}

/// What a child printed and how it ended.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Spawns `cmd` with stdout and stderr on pipes and collects everything.
fn output_of(lp: &mut Loop, cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::Pipe).stderr(Stdio::Pipe);
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let child = cmd
        .spawn(lp, move |lp, p, res| {
            *g.borrow_mut() = Some(res.unwrap());
            p.close(lp).unwrap();
        })
        .unwrap();
    let out = collect(lp, child.stdout.unwrap());
    let err = collect(lp, child.stderr.unwrap());
    lp.run(RunMode::Default).unwrap();
    let take = |c: Rc<RefCell<Collected>>| {
        let c = c.borrow();
        assert!(c.eof && c.errors.is_empty());
        c.data.clone()
    };
    Output { status: got.borrow_mut().take().expect("exited"), stdout: take(out), stderr: take(err) }
}

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", script]);
    c
}

/// A scratch directory for this test process, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("evloop-proc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes an executable file.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// Whether process `pid` no longer exists (not even as a zombie).
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Makes this (isolated) test process the subreaper of its descendants, so grandchildren
/// orphaned by a killed shell come back to it and their end can be observed.
fn become_subreaper() {
    // (Linux and FreeBSD; macOS has no subreapers, and its tests that need one fail here.)
    evloop::process::become_subreaper().unwrap();
}

/// Waits for a (reparented) grandchild and returns how it ended.
fn wait_grandchild(pid: i32) -> nix::sys::wait::WaitStatus {
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap()
}

/// The processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so count from the last ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        if rest.split_whitespace().nth(2).and_then(|g| g.parse().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

/// Reads `pipe` as text and calls `on_line` once its first line is complete; closes the pipe
/// at its end. Returns the text read.
fn on_first_line(
    lp: &mut Loop,
    pipe: Pipe,
    on_line: impl FnOnce(&mut Loop, Pipe) + 'static,
) -> Rc<RefCell<String>> {
    let text = Rc::new(RefCell::new(String::new()));
    let t = text.clone();
    let mut on_line = Some(on_line);
    pipe.read_start(lp, move |lp, pipe, ev| match ev {
        ReadEvent::Data(d) => {
            t.borrow_mut().push_str(std::str::from_utf8(d).unwrap());
            if t.borrow().contains('\n') {
                if let Some(f) = on_line.take() {
                    f(lp, pipe);
                }
            }
        }
        _ => pipe.close(lp).unwrap(),
    })
    .unwrap();
    text
}

/// Reaps every descendant that was reparented to this (subreaper) process, by pid; returns
/// how each ended. Only for tests whose loop has no child left.
fn reap_adopted() -> Vec<nix::sys::wait::WaitStatus> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let list = std::fs::read_to_string(task.unwrap().path().join("children")).unwrap_or_default();
        for pid in list.split_whitespace() {
            out.push(wait_grandchild(pid.parse().unwrap()));
        }
    }
    out
}

/// Blocks until child `pid` has exited, without reaping it (`waitid(WNOWAIT)`).
fn wait_exited_unreaped(pid: u32) {
    #[cfg(not(target_vendor = "apple"))]
    {
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        waitid(Id::Pid(nix::unistd::Pid::from_raw(pid as i32)), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
            .unwrap();
    }
    // (nix has no waitid for Apple targets: the platform crate's non-blocking form, polled.)
    #[cfg(target_vendor = "apple")]
    while !evloop_platform::process::has_exited(pid as i32).unwrap() {
        std::thread::yield_now();
    }
}

/// After a failed spawn: nothing left behind, and the loop still spawns.
fn still_works(lp: &mut Loop) {
    lp.run(RunMode::Default).unwrap();
    assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    assert!(status_of(lp, &Command::new("true")).unwrap().success());
}

/// Whether this process runs as root.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// A `stream_output` capture: what both streams printed, in the order it came, and what
/// `on_done` got, once it ran.
struct Streamed {
    process: Process,
    got: Rc<RefCell<Vec<u8>>>,
    done: Rc<RefCell<Option<io::Result<ExitStatus>>>>,
}

fn stream_collect(lp: &mut Loop, cmd: &Command) -> Streamed {
    let got = Rc::new(RefCell::new(Vec::new()));
    let done = Rc::new(RefCell::new(None));
    let (g, d) = (got.clone(), done.clone());
    let process = cmd
        .stream_output(
            lp,
            move |_, _, _, bytes| g.borrow_mut().extend_from_slice(bytes),
            move |_, _, res| *d.borrow_mut() = Some(res),
        )
        .unwrap();
    Streamed { process, got, done }
}

/// Runs `cmd.output` to the end.
fn captured(lp: &mut Loop, cmd: &Command) -> evloop::Output {
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    cmd.output(lp, move |_, out| *g.borrow_mut() = Some(out.unwrap())).unwrap();
    lp.run(RunMode::Default).unwrap();
    got.borrow_mut().take().expect("the capture's callback ran")
}

/// A pty capture's result, after the loop ran.
fn captured_on_pty(lp: &mut Loop, cmd: &Command) -> evloop::Output {
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let (input, _) = cmd
        .output_on_pty(lp, evloop::WinSize::default(), move |_, out| *g.borrow_mut() = Some(out.unwrap()))
        .unwrap();
    lp.run(RunMode::Default).unwrap();
    assert!(input.is_closing(lp).is_err(), "the input handle closed with the capture");
    got.borrow_mut().take().expect("the capture's callback ran")
}

/// `text`'s lines as a terminal with `onlcr` shows them.
fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

// ----- tests that run this binary again by name ---------------------------------------------
//
// Each of these starts the test binary again as `process::<name>` (itself, or an ignored
// child test next to it), so they stay in this module: in a submodule their names, and the
// ones they call, would change.

const UNPRIVILEGED_ENV: &str = "EVLOOP_TEST_UNPRIVILEGED";

case!(
    secs = 60,
    fn a_uid_we_cannot_switch_to_is_eperm() {
        if is_root() && std::env::var_os(UNPRIVILEGED_ENV).is_none() {
            // Root may switch to anyone. So run this very test again in a child that evloop
            // starts as nobody (its own uid switch, on the fork path), from a copy of the test
            // binary that nobody can read, and check that it passed there.
            let dir = TempDir::new("nobody");
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
            let exe = dir.0.join("it");
            std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
            let mut lp = builder().build().unwrap();
            let mut cmd = Command::new(&exe);
            cmd.args([
                "process::a_uid_we_cannot_switch_to_is_eperm",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(UNPRIVILEGED_ENV, "1")
            .current_dir("/")
            .uid(65534)
            .gid(65534);
            let o = output_of(&mut lp, &mut cmd);
            let text =
                format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(o.status.success() && text.contains("1 passed"), "as nobody: {}\n{text}", o.status);
            return;
        }
        assert!(!is_root());
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut cmd = Command::new("true");
            cmd.uid(0);
            let e = status_of(&mut lp, &cmd).unwrap_err();
            assert_eq!(os_error_code(&e), Some(libc::EPERM), "{name}: {e}");
            assert!(e.to_string().contains("cannot switch to user id 0"), "{e}");
            still_works(&mut lp);
            let mut cmd = Command::new("true");
            cmd.gid(0);
            let e = status_of(&mut lp, &cmd).unwrap_err();
            assert_eq!(os_error_code(&e), Some(libc::EPERM), "{name}: {e}");
            assert!(e.to_string().contains("cannot switch to group id 0"), "{e}");
            still_works(&mut lp);
        }
    }
);

#[cfg(not(target_vendor = "apple"))]
const PDEATH_ENV: &str = "EVLOOP_TEST_PDEATH";

/// Not a test: the child process of
/// `issue_6_parent_death_signal_ends_a_child_whose_parent_is_gone`. `$PDEATH_ENV` is
/// `<flavour> <0|1>`: with a loop of that flavour it spawns `sleep 100`, asking for
/// `SIGTERM` on its parent's death or not, prints the child's pid and exits without
/// dropping the loop (as a program killed or crashed would), so nothing of evloop's ends the
/// child.
#[cfg(not(target_vendor = "apple"))]
#[test]
#[ignore = "runs only as a child process of the parent death test"]
fn pdeath_child() {
    let Ok(spec) = std::env::var(PDEATH_ENV) else { return };
    let (flavour, set) = spec.split_once(' ').unwrap();
    let (_, b) = flavours().into_iter().find(|(name, _)| *name == flavour).unwrap();
    let mut lp = b.build().unwrap();
    let mut cmd = Command::new("sleep");
    cmd.arg("100").stdout(Stdio::Null);
    if set == "1" {
        cmd.parent_death_signal(SIGTERM);
    }
    let child = cmd.spawn(&mut lp, |_, _, _| {}).unwrap();
    println!("PID {}", child.process.pid(&lp).unwrap());
    std::process::exit(0);
}

#[cfg(not(target_vendor = "apple"))]
case!(
    /// `Command::parent_death_signal`: a child whose parent exits without ending it (killed,
    /// crashed, or gone without dropping its loop) gets the signal, on every spawn path
    /// (`posix_spawn` cannot ask for it: that flavour takes another path). Without it (the
    /// control), the child runs on. An editor's language servers outlived an editor that was
    /// killed (LSP-client trial).
    fn issue_6_parent_death_signal_ends_a_child_whose_parent_is_gone() {
        use nix::sys::wait::WaitStatus;
        use nix::unistd::Pid;
        // The orphans come back to this process, to be waited for.
        become_subreaper();
        for (name, _) in flavours() {
            for set in [true, false] {
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "process::pdeath_child",
                        "--exact",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                        "-q",
                    ])
                    .env(PDEATH_ENV, format!("{name} {}", u8::from(set)))
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{name}: {}: {text}", out.status);
                let pid: i32 = text
                    .lines()
                    .find_map(|l| l.strip_prefix("PID "))
                    .unwrap_or_else(|| panic!("{name}: no pid in {text:?}"))
                    .parse()
                    .unwrap();
                if !set {
                    // Alive: `kill(pid, 0)` finds it (a zombie would be found too, but it
                    // could only be one once killed, below).
                    nix::sys::signal::kill(Pid::from_raw(pid), None).unwrap();
                    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
                }
                let want = if set { nix::sys::signal::SIGTERM } else { nix::sys::signal::SIGKILL };
                assert_eq!(
                    wait_grandchild(pid),
                    WaitStatus::Signaled(Pid::from_raw(pid), want, false),
                    "{name}"
                );
            }
        }
        // Bad input, at spawn.
        let mut lp = crate::util::test_loop();
        for bad in [0, -1, 99, libc::SIGTSTP, libc::SIGSTOP] {
            let e = Command::new("true").parent_death_signal(bad).spawn(&mut lp, |_, _, _| {}).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("parent_death_signal"), "{e}");
        }
        // A signal the child ignores would never end it.
        let e = Command::new("true")
            .ignore_signal(SIGTERM)
            .parent_death_signal(SIGTERM)
            .spawn(&mut lp, |_, _, _| {})
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("ignore_signal"), "{e}");
    }
);

const ADOPT_ENV: &str = "EVLOOP_TEST_ADOPT";

/// Not a test: the child process of `issue_6_reap_adopted_reaps_the_children_the_loop_did_not_spawn`.
/// Started as `sh -c 'sleep 0.3 & exec <this test>'`, it has a child it did not spawn
/// (`$INHERITED`); it becomes a subreaper, and a child of its loop leaves an orphan behind.
/// It prints what it reaped, and the children it has left.
#[test]
#[ignore = "runs only as a child process of the adoption test"]
fn adopt_child() {
    let Ok(flavour) = std::env::var(ADOPT_ENV) else { return };
    let inherited: i32 = std::env::var("INHERITED").unwrap().parse().unwrap();
    let (_, b) = flavours().into_iter().find(|(name, _)| *name == flavour).unwrap();
    let mut lp = b.build().unwrap();
    evloop::process::become_subreaper().unwrap();
    // Keeps the loop going until both are in (the watchdog of this process).
    let hold = evloop::Timer::new(&mut lp);
    hold.start(&mut lp, std::time::Duration::from_secs(20), std::time::Duration::ZERO, |_, _| {
        panic!("the adopted children were not all reaped")
    })
    .unwrap();
    let adopted = Rc::new(RefCell::new(Vec::new()));
    let a = adopted.clone();
    lp.reap_adopted(move |lp, exit| {
        a.borrow_mut().push((exit.pid, exit.group, exit.status));
        if a.borrow().len() == 2 {
            hold.close(lp).unwrap();
        }
    })
    .unwrap();
    let own = Rc::new(Cell::new(None));
    let o = own.clone();
    // In a group of its own, which its orphan stays in.
    let mut cmd = sh("sleep 0.3 & echo $!");
    cmd.stdout(Stdio::Pipe).process_group(0);
    let child = cmd
        .spawn(&mut lp, move |lp, p, res| {
            o.set(Some(res.unwrap()));
            p.close(lp).unwrap();
        })
        .unwrap();
    let own_group = Rc::new(Cell::new(child.process.pid(&lp).unwrap()));
    let orphan = Rc::new(Cell::new(0));
    let (or, mut line) = (orphan.clone(), Vec::new());
    child
        .stdout
        .unwrap()
        .read_start(&mut lp, move |lp, out, ev| match ev {
            ReadEvent::Data(d) => line.extend_from_slice(d),
            _ => {
                or.set(String::from_utf8_lossy(&line).trim().parse().unwrap());
                out.close(lp).unwrap();
            }
        })
        .unwrap();
    lp.run(RunMode::Default).unwrap();
    let mut adopted = adopted.borrow().clone();
    adopted.sort_by_key(|&(pid, ..)| pid != inherited);
    let left: usize = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .map(|t| std::fs::read_to_string(t.path().join("children")).unwrap().split_whitespace().count())
        .sum();
    println!(
        "ADOPTED own={:?} inherited={} orphan={} ours={} theirs={} got={adopted:?} left={left}",
        own.get().and_then(|s| s.code()),
        inherited,
        orphan.get(),
        evloop::process::current_process_group(),
        own_group.get(),
    );
}

case!(
    /// `Loop::reap_adopted` with `become_subreaper`: the children a program did not spawn
    /// (one it had before it exec'd, and the orphan its own child left) are reaped and
    /// reported, while the loop's own child still gets its exit callback. Before, a
    /// supervisor had to find and reap them itself, unsafe `prctl` included.
    fn issue_6_reap_adopted_reaps_the_children_the_loop_did_not_spawn() {
        for (name, _) in flavours() {
            let out = std::process::Command::new("/bin/sh")
                .args([
                    "-c",
                    r#"sleep 0.3 & export INHERITED=$!; exec "$0" "$@""#,
                    std::env::current_exe().unwrap().to_str().unwrap(),
                    "process::adopt_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                    "-q",
                ])
                .env(ADOPT_ENV, name)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{name}: {text} {}", String::from_utf8_lossy(&out.stderr));
            let line =
                text.lines().find(|l| l.starts_with("ADOPTED")).unwrap_or_else(|| panic!("{name}: {text}"));
            let field = |key: &str| {
                line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or_else(|| panic!("{line}"))
            };
            assert_eq!(field("own="), "Some(0)", "{name}: the loop's own child kept its callback: {line}");
            let (inherited, orphan) = (field("inherited="), field("orphan="));
            // Each with the group it exited in: the inherited one in ours, the orphan in the
            // group of the child that left it.
            let (ours, theirs) = (field("ours="), field("theirs="));
            assert!(
                line.contains(&format!("({inherited}, {ours}, Exited(0))"))
                    && line.contains(&format!("({orphan}, {theirs}, Exited(0))")),
                "{name}: {line}"
            );
            assert_eq!(field("left="), "0", "{name}: {line}");
        }
    }
);

/// Env var of [`kill_after_reap_child`]: set when it runs as the init of a pid namespace.
#[cfg(target_os = "linux")]
const PID_REUSE_ENV: &str = "EVLOOP_TEST_PID_REUSE";

/// The child of [`kill_after_the_reap_never_reaches_the_process_that_took_the_pid`]: pid 1
/// of a user and pid namespace of its own, where it can choose the next pid.
#[test]
#[ignore = "runs only as a child process, in a pid namespace, of the pid reuse test"]
#[cfg(target_os = "linux")]
fn kill_after_reap_child() {
    if std::env::var_os(PID_REUSE_ENV).is_none() {
        return;
    }
    assert_eq!(std::process::id(), 1, "the init of a new pid namespace");
    for (name, b) in flavours() {
        let mut lp = b.build().unwrap();
        let reaped = Rc::new(Cell::new(false));
        let r = reaped.clone();
        let child =
            Command::new("true").spawn(&mut lp, move |_, _, res| r.set(res.unwrap().success())).unwrap();
        let pid = child.process.pid(&lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(reaped.get(), "{name}");
        // The next process made in this namespace takes the reaped child's pid.
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).unwrap();
        let mut stranger = std::process::Command::new("sleep").arg("100").spawn().unwrap();
        assert_eq!(stranger.id(), pid, "{name}: the stranger has the reaped child's pid");
        let e = child.process.kill(&mut lp, SIGKILL).unwrap_err();
        assert_eq!(os_error_code(&e), Some(libc::ESRCH), "{name}: {e}");
        assert!(stranger.try_wait().unwrap().is_none(), "{name}: the stranger was left alone");
        stranger.kill().unwrap();
        stranger.wait().unwrap();
        child.process.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
    println!("pid reuse: ok");
}

case!(
    /// Found by mutation testing: `kill` after the reap was checked only where the pid was
    /// still free, so a `kill` that fell through to `kill(pid)` got `ESRCH` from the kernel
    /// and passed. Here the pid is given to another process (a pid namespace of the test's
    /// own, `ns_last_pid`), and the `kill` must still fail with `ESRCH` and leave it alone.
    #[cfg(target_os = "linux")]
    fn kill_after_the_reap_never_reaches_the_process_that_took_the_pid() {
        // A host that refuses user namespaces, or a read-only /proc/sys (some containers),
        // has nothing to run this in. (This one has both, and CI runs it.)
        let probe = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--pid", "--fork", "sh", "-c"])
            .arg("echo 1 > /proc/sys/kernel/ns_last_pid")
            .stdin(std::process::Stdio::null())
            .output();
        if !probe.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("skipped: no user and pid namespace with a writable ns_last_pid: {probe:?}");
            return;
        }
        let out = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--pid", "--fork", "--kill-child"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "process::kill_after_reap_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(PID_REUSE_ENV, "1")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("util-linux unshare");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("pid reuse: ok"), "{}: {text}", out.status);
    }
);
