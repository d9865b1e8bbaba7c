use std::cell::Cell;
use std::io;
use std::os::fd::AsFd;
use std::rc::Rc;

use evloop::{RunMode, Tty, TtyMode};

use crate::util::test_loop;

use super::*;

case!(
    /// Job control: a shell gives the terminal to a job's process group, which then reads
    /// it; Ctrl-Z stops the job, and the shell, told by `watch_stops`, takes the terminal
    /// back and resumes the job in front; the shell takes it back from the background when
    /// the job ends. Without the hand-over the job's `read` is stopped by `SIGTTIN`; without
    /// `SIGTTOU` blocked, taking the terminal back stops the shell; without the stop report
    /// the shell never hears of Ctrl-Z. Each way the test times out.
    fn a_shell_gives_the_terminal_to_a_job_and_takes_it_back() {
        let p = pty();
        let mut lp = test_loop();
        let status = spawn_session_leader(&mut lp, &p, "tty::job_control_child", JOB_CHILD_ENV, "leader ");
        let mut seen = Vec::new();
        let mut wait_for = |needle: &str| crate::util::read_until(p.master.as_fd(), &mut seen, needle);
        wait_for("shell ready");
        write_master(p.master.as_fd(), b"go\n");
        wait_for("job ready");
        write_master(p.master.as_fd(), b"hi\n");
        wait_for("job read hi");
        // Ctrl-Z: the terminal sends the foreground group SIGTSTP.
        write_master(p.master.as_fd(), b"\x1a");
        wait_for("job stopped");
        wait_for("job continued");
        write_master(p.master.as_fd(), b"more\n");
        wait_for("job read more");
        wait_for("back in front");
        wait_for("leader done");
        lp.run(RunMode::Default).unwrap();
        let status = status.get().unwrap();
        assert!(status.success(), "{status}; the children said {:?}", String::from_utf8_lossy(&seen));
    }
);

case!(
    /// `Tty::suspend`, Ctrl-Z for a raw-mode program: the job stops with the terminal in
    /// normal mode (its shell finds it as it left it), and once continued, it is raw again;
    /// a `Signal` handle on `SIGTSTP` is back in place after, having seen nothing. A job
    /// killed while stopped (`kill %1`: `SIGTERM`, then `SIGCONT`) heeds the `SIGTERM` its
    /// handle watches at once. A program whose group the kernel will not stop (orphaned)
    /// comes back at once, still raw.
    fn suspend_stops_the_group_in_normal_mode_and_resumes_raw() {
        let p = pty();
        let mut lp = test_loop();
        let status = spawn_session_leader(&mut lp, &p, "tty::suspend_child", SUSPEND_CHILD_ENV, "leader ");
        let mut seen = Vec::new();
        let mut wait_for = |needle: &str| crate::util::read_until(p.master.as_fd(), &mut seen, needle);
        wait_for("another terminal refused: true");
        wait_for("stop 1: canonical true, 2 members stopped");
        wait_for("job resumed, canonical false, mode Raw, 0 SIGTSTP seen");
        wait_for("after a raise, 1 SIGTSTP seen");
        wait_for("stop 2: canonical true, 2 members stopped");
        wait_for("resumed through stdout, canonical false");
        // One stop a suspend: the signal to the group and the one to the thread make one.
        wait_for("leader done, 2 stops");
        lp.run(RunMode::Default).unwrap();
        let status = status.get().unwrap();
        assert!(status.success(), "{status}; the children said {:?}", String::from_utf8_lossy(&seen));

        // A shell's `kill %1` of the stopped job (dashboard trial): the SIGTERM its handle
        // watches is heeded at once, not once in front (it was stopped again by SIGTTOU).
        let p = pty();
        let status =
            spawn_session_leader(&mut lp, &p, "tty::suspend_child", SUSPEND_CHILD_ENV, "leader-kill ");
        let mut seen = Vec::new();
        let mut wait_for = |needle: &str| crate::util::read_until(p.master.as_fd(), &mut seen, needle);
        wait_for("suspend: WouldBlock, true");
        wait_for("job got SIGTERM, canonical true");
        wait_for("leader done, the job exited with code 0");
        lp.run(RunMode::Default).unwrap();
        let status = status.get().unwrap();
        assert!(status.success(), "{status}; the children said {:?}", String::from_utf8_lossy(&seen));

        let p = pty();
        let status = spawn_session_leader(&mut lp, &p, "tty::suspend_child", SUSPEND_CHILD_ENV, "orphan ");
        let mut seen = Vec::new();
        crate::util::read_until(p.master.as_fd(), &mut seen, "orphan suspended true, canonical false");
        lp.run(RunMode::Default).unwrap();
        let status = status.get().unwrap();
        assert!(status.success(), "{status}; the child said {:?}", String::from_utf8_lossy(&seen));
    }
);

case!(
    /// `Tty::suspend` refuses, changing nothing, through a pty master and while output to the
    /// terminal is queued; with `SIGTSTP` ignored (no job control) it returns `false` at once,
    /// the terminal still raw.
    fn suspend_refuses_with_output_queued_and_does_nothing_where_sigtstp_is_ignored() {
        let p = pty();
        let mut lp = test_loop();
        let tty = Tty::open(&mut lp, p.slave.try_clone().unwrap()).unwrap();
        let master = Tty::open(&mut lp, p.master.try_clone().unwrap()).unwrap();
        let err = master.suspend(&mut lp).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        // Nobody reads the master: the pty fills, and the rest waits in the queue.
        let out = Tty::open(&mut lp, p.slave.try_clone().unwrap()).unwrap();
        let failed = Rc::new(Cell::new(false));
        let f = failed.clone();
        out.write(&mut lp, &vec![b'x'; 1 << 20], move |_, res| f.set(res.is_err())).unwrap();
        assert!(out.write_queue_size(&lp).unwrap() > 0);
        let err = tty.suspend(&mut lp).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert!(err.to_string().contains("output to the terminal is queued"), "{err}");
        assert!(!canonical(&p.probe), "still raw");
        out.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(failed.get(), "the queued write was cancelled");

        // A shell without job control: SIGTSTP ignored.
        // SAFETY: setting SIG_IGN installs no handler; this test runs in a process of its own.
        unsafe { nix::sys::signal::signal(nix::sys::signal::SIGTSTP, nix::sys::signal::SigHandler::SigIgn) }
            .unwrap();
        assert!(!tty.suspend(&mut lp).unwrap());
        assert!(!canonical(&p.probe), "still raw");
        assert_eq!(tty.mode(&lp).unwrap(), TtyMode::Raw);
        master.close(&mut lp).unwrap();
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(canonical(&p.probe), "normal again after the close");
    }
);

case!(
    /// A read of the controlling terminal from a background group with `SIGTTIN` blocked
    /// fails with `EIO` although the terminal is there: reported as an error, not as end of
    /// file (which would tell the program that the terminal hung up).
    fn a_read_from_the_background_is_an_error_not_eof() {
        let p = pty();
        let mut lp = test_loop();
        let status = spawn_session_leader(&mut lp, &p, "tty::background_read_child", BG_READ_ENV, "");
        let mut seen = Vec::new();
        let mut wait_for = |needle: &str| crate::util::read_until(p.master.as_fd(), &mut seen, needle);
        wait_for("reader ready");
        write_master(p.master.as_fd(), b"x\n");
        wait_for("bg read: ");
        wait_for(".");
        lp.run(RunMode::Default).unwrap();
        let text = String::from_utf8_lossy(&seen).into_owned();
        assert!(status.get().unwrap().success(), "{text}");
        assert!(
            text.contains(
                "bg read: error Some(5) (background: true): read from the terminal in the background"
            ),
            "{text}"
        );
    }
);

case!(
    /// A shell starts a job with `Command::foreground`: the job's group has the terminal
    /// from its first instruction, without the shell handing it over. Handed over by the
    /// parent only (after the spawn), a program that looked at once found itself in the
    /// background now and then, and stopped itself with `SIGTTIN`. And from the background
    /// a child does not take the terminal from the job that has it (see `foreground_child`).
    fn issue_6_a_job_takes_the_terminal_before_its_exec() {
        let p = pty();
        let mut lp = test_loop();
        let status = spawn_session_leader(&mut lp, &p, "tty::foreground_child", FOREGROUND_ENV, "leader ");
        let mut seen = Vec::new();
        crate::util::read_until(p.master.as_fd(), &mut seen, "shell exited");
        lp.run(RunMode::Default).unwrap();
        let text = String::from_utf8_lossy(&seen).into_owned();
        assert!(status.get().unwrap().success(), "{text}");
        assert!(text.contains("job in front"), "{text}");
        assert!(text.contains("stage in front"), "{text}");
        assert!(text.contains("shell exited with code 0"), "{text}");
    }
);

case!(
    /// A child given a pty's slave as its controlling terminal (`Command::controlling_terminal`)
    /// hears the terminal: Ctrl-C typed at the master interrupts it, closing the master hangs
    /// it up, and it can open `/dev/tty`. A child in a session of its own had no controlling
    /// terminal, with no way to give it one (pty-tool trial).
    fn issue_6_a_child_on_a_pty_gets_it_as_its_controlling_terminal() {
        use evloop::signal::{SIGHUP, SIGINT};
        for (ctrl_c, want) in [(true, SIGINT), (false, SIGHUP)] {
            let mut lp = test_loop();
            let (master, slave) = evloop::tty::openpty().unwrap();
            let mut cmd = evloop::Command::new("sh");
            cmd.args(["-c", "exec 3</dev/tty && echo ready && exec sleep 100"])
                .stdin(slave.try_clone().unwrap())
                .stdout(slave.try_clone().unwrap())
                .stderr(slave)
                .controlling_terminal(0);
            let (child, status) = crate::util::spawn_recording(&mut lp, &cmd);
            drop(cmd);
            let mut seen = Vec::new();
            crate::util::read_until(master.as_fd(), &mut seen, "ready");
            // The master answers for its slave: the child leads the group in front.
            let front = evloop_platform::termios::foreground_group(master.as_fd()).unwrap();
            assert_eq!(front, child.process.pid(&lp).unwrap() as i32);
            if ctrl_c {
                write_master(master.as_fd(), b"\x03");
                lp.run(RunMode::Default).unwrap();
                drop(master);
            } else {
                drop(master);
                lp.run(RunMode::Default).unwrap();
            }
            assert_eq!(status.get().unwrap().signal(), Some(want), "{}", String::from_utf8_lossy(&seen));
        }
    }
);

case!(
    /// `controlling_terminal` on an fd that is no terminal fails the spawn with an error that
    /// names the step, leaving no child; a stage of a pipeline run as one group may not ask
    /// for it (it starts a session).
    fn issue_6_a_controlling_terminal_that_is_not_one_is_a_clear_error() {
        let mut lp = test_loop();
        let mut cmd = evloop::Command::new("true");
        cmd.stdin(evloop::Stdio::Null).controlling_terminal(0);
        let e = cmd.spawn(&mut lp, |_, _, _| panic!("never started")).unwrap_err();
        assert_eq!(e.raw_os_error().or(evloop::os_error_code(&e)), Some(libc::ENOTTY), "{e}");
        assert!(
            e.to_string().contains("cannot make the terminal on child fd 0 the controlling terminal"),
            "{e}"
        );
        let mut stage = evloop::Command::new("true");
        stage.controlling_terminal(0);
        let e = evloop::Pipeline::new([stage, evloop::Command::new("true")])
            .process_group(true)
            .spawn(&mut lp, |_, _| panic!("never started"))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e =
            evloop::Command::new("true").controlling_terminal(-1).spawn(&mut lp, |_, _, _| {}).unwrap_err();
        assert!(e.to_string().contains("cannot be negative"), "{e}");
        // An fd the child does not get; a group or the terminal's front asked for as well.
        let e =
            evloop::Command::new("true").controlling_terminal(5).spawn(&mut lp, |_, _, _| {}).unwrap_err();
        assert!(e.to_string().contains("the child has no fd 5"), "{e}");
        let e = evloop::Command::new("true")
            .controlling_terminal(0)
            .process_group(0)
            .spawn(&mut lp, |_, _, _| {})
            .unwrap_err();
        assert!(e.to_string().contains("controlling_terminal starts a session"), "{e}");
        let (_master, slave) = evloop::tty::openpty().unwrap();
        let tty = Tty::open(&mut lp, slave).unwrap();
        let e = evloop::Command::new("true")
            .controlling_terminal(0)
            .foreground(tty)
            .spawn(&mut lp, |_, _, _| {})
            .unwrap_err();
        assert!(e.to_string().contains("controlling_terminal starts a session"), "{e}");
        tty.close(&mut lp).unwrap();
        // An fd above 2 that the command sets up serves.
        let (_master, slave) = evloop::tty::openpty().unwrap();
        let mut cmd = evloop::Command::new("sh");
        cmd.args(["-c", "exec 4</dev/tty"]).fd(3, slave).controlling_terminal(3);
        let ok = Rc::new(Cell::new(false));
        let o = ok.clone();
        cmd.spawn(&mut lp, move |lp, p, r| {
            o.set(r.unwrap().success());
            p.close(lp).unwrap();
        })
        .unwrap();
        drop(cmd);
        lp.run(RunMode::Default).unwrap();
        assert!(ok.get(), "the child has its terminal on fd 3");
    }
);
