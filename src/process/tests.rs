//! Unit tests of the table of children: paths that `spawn` alone cannot reach (a child
//! reaped before its watch), and close hooks during a loop's drop.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use crate::{Command, Loop};

/// Whether a process not yet dead (a zombie is dead) is in process group `pgid`.
#[cfg(target_os = "linux")]
fn group_has_a_live_member(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp ...: the fields after the command's closing parenthesis.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

/// A child that was reaped before the loop could watch it (the kernel reaps at once while
/// SIGCHLD is ignored; a waitpid(-1) elsewhere may) is `Watch::Gone`: its exit callback
/// gets `ECHILD`, and nothing signals or waits for its pid, which may be another
/// process's now. `pidfd_open` refuses such a pid with `ESRCH` (kernels before 6.x: with
/// `EINVAL` for a group leader whose group lives on, the second case here; the loop asks
/// `waitid` whatever the error). Made deterministic by reaping a child of std's before
/// the loop takes it.
#[cfg(target_os = "linux")]
#[test]
fn issue_6_a_child_reaped_before_its_watch_is_gone_and_left_alone() {
    use std::os::unix::process::CommandExt;

    use super::{OnDrop, Watch, sys};
    use crate::error::os_error_code;

    let _watchdog = watchdog(Duration::from_secs(20));
    for leader_of_a_live_group in [false, true] {
        let mut cmd = std::process::Command::new("sh");
        if leader_of_a_live_group {
            // The leader exits; the sleep it leaves behind keeps its group (and so its pid
            // number) in use.
            cmd.args(["-c", "sleep 30 </dev/null >/dev/null 2>&1 & exit 0"]).process_group(0);
        } else {
            cmd.args(["-c", "exit 0"]);
        }
        let mut child = cmd.spawn().unwrap();
        let pid = child.id() as i32;
        assert!(child.wait().unwrap().success());
        let mut lp = Loop::new().unwrap();
        let got = Rc::new(Cell::new(None));
        let g = got.clone();
        let on_exit: super::ExitCb = Box::new(move |_, _, res| g.set(Some(os_error_code(&res.unwrap_err()))));
        let (group, leads) = if leader_of_a_live_group { (pid, true) } else { (0, false) };
        let id = lp.process_insert(pid, group, leads, OnDrop::KillGroup, on_exit, false, None).unwrap();
        let p = super::Process(id);
        let key = lp.process_ref(id).unwrap().child_key().unwrap();
        assert!(matches!(lp.children.entries[key].watch, Watch::Gone), "leader: {leader_of_a_live_group}");
        // Its pid is nobody's to signal or wait for.
        assert_eq!(os_error_code(&p.kill(&mut lp, libc::SIGTERM).unwrap_err()), Some(libc::ESRCH));
        assert!(p.has_exited(&lp).unwrap());
        let err = p.watch_stops(&mut lp, |_, _, _| {}).unwrap_err();
        assert_eq!(os_error_code(&err), Some(libc::ESRCH), "{err}");
        if leader_of_a_live_group {
            // Closed with kill_group_on_drop: the group is not killed by number.
            p.close(&mut lp).unwrap();
            lp.run(crate::RunMode::Default).unwrap();
            assert_eq!(got.get(), None, "a closed handle's callback does not run");
            assert!(group_has_a_live_member(pid), "the group was left alone");
            sys::kill_group(pid, libc::SIGKILL).unwrap();
        } else {
            lp.run(crate::RunMode::Default).unwrap();
            assert_eq!(got.get(), Some(Some(libc::ECHILD)));
            assert!(p.has_exited(&lp).unwrap());
        }
        // A loop dropped with such an entry waits for nothing.
        let g = Rc::new(Cell::new(None));
        let g2 = g.clone();
        let cb: super::ExitCb = Box::new(move |_, _, res| g2.set(Some(res.is_err())));
        lp.process_insert(pid, 0, false, OnDrop::Nothing, cb, false, None).unwrap();
        drop(lp);
        assert_eq!(g.get(), None);
    }
}

/// Aborts the test process if the returned sender is still alive after `limit` (a test
/// ends by dropping it, a panic too).
fn watchdog(limit: Duration) -> std::sync::mpsc::Sender<()> {
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(limit) {
            eprintln!("watchdog: the test ran {limit:?}");
            std::process::abort();
        }
    });
    done
}

/// A close hook that runs while the loop drops (a pipeline's, a capture's) sees the
/// handles stopped before it as closing, as after `close`: a pipeline's hook took them
/// for open, and stopped them a second time.
#[test]
fn issue_6_close_hooks_during_a_drop_see_the_handles_stopped_before_as_closing() {
    let _watchdog = watchdog(Duration::from_secs(20));
    let mut lp = Loop::new().unwrap();
    let mut sleeper = Command::new("sleep");
    sleeper.arg("100").kill_on_drop(true);
    let first = sleeper.spawn(&mut lp, |_, _, _| {}).unwrap().process;
    let second = sleeper.spawn(&mut lp, |_, _, _| {}).unwrap().process;
    let pids = [first.pid(&lp).unwrap(), second.pid(&lp).unwrap()];
    assert!(first.0.key < second.0.key, "the drop stops the first one first");
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    lp.process_on_close(second.0, Box::new(move |lp| s.set(first.is_closing(lp).ok())));
    drop(lp);
    assert_eq!(seen.get(), Some(true));
    // Killed and reaped by the drop.
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "child {pid} left");
    }
}
