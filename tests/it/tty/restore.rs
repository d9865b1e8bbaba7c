use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::{Loop, Pipe, RunMode, Signal, Tty, TtyMode};
use evloop_platform::fd::status_flags;
use nix::sys::termios::{LocalFlags, Termios};

use crate::util::test_loop;

use super::*;

/// Writes `bytes` on the slave side (`slave`: a blocking description of it).
fn write_slave_side(slave: &OwnedFd, bytes: &[u8]) {
    assert_eq!(nix::unistd::write(slave, bytes).unwrap(), bytes.len());
}

case!(
    /// The restore sequence goes to the process's own (controlling) terminal, whichever
    /// terminal was saved first: it went to the first saved, a pty the program drives, and
    /// left the user's screen on the alternate screen (review). And the own terminal is
    /// saved even when other terminals took every slot first (it was not, and stayed raw at
    /// `exit` and at a fatal signal).
    fn issue_5_the_restore_sequence_goes_to_the_controlling_terminal() {
        let mut lp = test_loop();
        let p = pty();
        let cmd = child_test("tty::restore_bytes_child", RESTORE_BYTES_ENV, "1");
        let (status, seen) = start_on_pty(&mut lp, &p, cmd, "END");
        lp.run(RunMode::Default).unwrap();
        let text = String::from_utf8_lossy(&seen);
        assert!(status.get().unwrap().success(), "{text}");
        assert!(text.contains("OWN cooked=true"), "the own terminal was not restored: {text}");
        assert!(text.contains("OTHER got=\"\""), "another pty got the sequence: {text}");
        let restored = text.find("<restored>").unwrap_or_else(|| panic!("not on the own terminal: {text}"));
        assert!(restored < text.find("OWN").unwrap(), "{text}");
    }
);

case!(
    /// A saved pty slave whose master has closed (hung up) has nothing left to restore: a
    /// reset reports no error for it, and still restores the terminals that are there.
    fn issue_5_a_hung_up_terminal_does_not_fail_the_reset() {
        let mut lp = test_loop();
        let (gone, live) = (pty(), pty());
        let live_before = attrs(&live.probe);
        let on_gone = Tty::open(&mut lp, gone.slave).unwrap();
        on_gone.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let on_live = Tty::open(&mut lp, live.slave).unwrap();
        on_live.set_mode(&mut lp, TtyMode::Raw).unwrap();
        drop(gone.master);
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&live.probe), &live_before, "the live terminal");
        close_all(&mut lp);
    }
);

case!(
    /// Issue 5: the process kept one terminal's settings saved, the first changed, and
    /// nothing passed them on when its handle closed. A program that put a pty it drives in
    /// raw mode, then its own terminal, and closed the pty's handle, left its user's shell
    /// raw at `exit`, at a fatal signal (the restore hooks) and through `reset_mode`: none of
    /// them had settings to restore.
    fn issue_5_a_terminal_changed_second_is_restored_after_the_first_closes() {
        let mut lp = test_loop();
        let (session, own) = (pty(), pty());
        let own_before = attrs(&own.probe);
        let sub = Tty::open(&mut lp, session.slave).unwrap();
        sub.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let term = Tty::open(&mut lp, own.slave).unwrap();
        term.set_mode(&mut lp, TtyMode::Raw).unwrap();
        sub.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        // What `exit` and the hooks run (no foreground group on a fresh pty: they restore).
        evloop_platform::termios::reset_saved_in_front().unwrap();
        assert_same_termios(&attrs(&own.probe), &own_before, "the restore hooks' reset");
        term.set_mode(&mut lp, TtyMode::Io).unwrap();
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&own.probe), &own_before, "reset_mode");
        term.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Pty masters take no saved slot (their pty ends with the process), and a terminal
    /// changed while every slot is taken is restored by its handle's close alone: with
    /// many masters in raw mode, the terminal changed after them is still restored.
    fn issue_5_pty_masters_leave_every_saved_slot_to_terminals() {
        let mut lp = test_loop();
        let mut masters = Vec::new();
        for _ in 0..evloop::limits::SAVED_TERMINALS_MAX + 2 {
            let (master, slave) = evloop::tty::openpty().unwrap();
            let m = Tty::open(&mut lp, master).unwrap();
            m.set_mode(&mut lp, TtyMode::Raw).unwrap();
            masters.push((m, slave));
        }
        let terms: Vec<(Pty, Termios)> = (0..evloop::limits::SAVED_TERMINALS_MAX + 1)
            .map(|_| {
                let p = pty();
                let before = attrs(&p.probe);
                (p, before)
            })
            .collect();
        let handles: Vec<Tty> = terms
            .iter()
            .map(|(p, _)| {
                let t = Tty::open(&mut lp, p.slave.try_clone().unwrap()).unwrap();
                t.set_mode(&mut lp, TtyMode::Raw).unwrap();
                t
            })
            .collect();
        evloop::tty::reset_mode().unwrap();
        let (last, saved) = terms.split_last().unwrap();
        for (i, (p, before)) in saved.iter().enumerate() {
            assert_same_termios(&attrs(&p.probe), before, &format!("terminal {i}"));
        }
        assert!(!attrs(&last.0.probe).local_flags.contains(LocalFlags::ICANON), "no slot was left for it");
        // One closes: the last one's next change saves it.
        handles[0].close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let newest = *handles.last().unwrap();
        newest.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&last.0.probe), &last.1, "saved once a slot was free");
        close_all(&mut lp);
        for (p, before) in &terms {
            assert_same_termios(&attrs(&p.probe), before, "after close");
        }
        drop(masters);
    }
);

case!(
    /// Closing the loop closes its ttys, which restores their modes (also through the
    /// select helper, which gets the fd only after the restore).
    fn dropping_the_loop_restores_the_terminal() {
        let p = pty();
        let before = attrs(&p.probe);
        let mut lp = test_loop();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        tty.read_start(&mut lp, |_, _, _| {}).unwrap();
        tty.on_resize(&mut lp, |_, _, _| {}).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        drop(lp);
        assert_same_termios(&attrs(&p.probe), &before, "after the loop dropped");
        // The saved settings went with the handle.
        evloop::tty::reset_mode().unwrap();
    }
);

case!(
    /// Terminal safety: a callback panics while the terminal is raw; the hook restores it.
    fn issue_7_a_panic_in_a_callback_restores_the_terminal() {
        evloop::tty::install_restore_hooks().unwrap();
        let mut lp = test_loop();
        let p = pty();
        let before = attrs(&p.probe);
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        tty.read_start(&mut lp, |_, _, _| panic!("a callback panics (on purpose)")).unwrap();
        write_master(p.master.as_fd(), b"k");
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run(RunMode::Default)));
        assert!(res.is_err(), "the panic went through run()");
        assert_same_termios(&attrs(&p.probe), &before, "the hook restored the terminal");
        assert_eq!(tty.mode(&lp).unwrap(), TtyMode::Raw, "the handle is still open");
        // The panic poisoned the loop: dropping it is what is left to do.
        drop(lp);
    }
);

case!(
    secs = 5,
    /// The restore hooks under a handler installed after them that calls the one it
    /// replaced (signal-hook's, and so tokio's `ctrl_c`): the signal is that handler's, and
    /// the process may go on, its terminal as it was. The hook reset the terminal and
    /// raised the signal again, which came back to it through that handler, for good: the
    /// process spun at full CPU (embedder trial).
    fn issue_5_restore_hooks_leave_a_signal_to_a_chaining_handler_after_them() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        evloop::tty::install_restore_hooks().unwrap();
        let mut lp = test_loop();
        let p = pty();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let raw = attrs(&p.probe);
        let caught = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(libc::SIGINT, caught.clone()).unwrap();
        evloop::signal::raise(libc::SIGINT).unwrap();
        assert!(caught.load(SeqCst), "the chaining handler had it");
        assert_same_termios(&attrs(&p.probe), &raw, "the terminal is as the program set it");
        close_all(&mut lp);
    }
);

/// Runs the ignored test `name` of this binary as a child process, with `env` set and
/// `stdin` as its stdin, and waits for it.
fn run_child_test(name: &str, env: (&str, &str), stdin: &OwnedFd) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"])
        .env(env.0, env.1)
        .stdin(stdin.try_clone().unwrap())
        .stderr(Stdio::inherit())
        .output()
        .unwrap()
}

case!(
    /// The restore hook put back without its one-shot flag (by code that saves and restores
    /// actions with `signal()`): the kernel calls it, and it still restores the terminal and
    /// ends the process by the signal. Told apart from a call through a chaining handler by
    /// the disposition alone, it took itself for chained, and the signal was swallowed
    /// (review).
    fn issue_5_a_restore_hook_put_back_without_its_one_shot_flag_still_ends_the_process() {
        let p = pty();
        let before = attrs(p.probe.as_fd());
        let out = run_child_test("tty::hook_flags_child", (HOOK_FLAGS_ENV, "1"), &p.slave);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.signal(), Some(libc::SIGINT), "{}: {text}", out.status);
        assert_same_termios(&attrs(p.probe.as_fd()), &before, "restored by the hook");
    }
);

case!(
    secs = 30,
    /// The restore hooks put the terminal back before any signal that ends the process by
    /// default and that can be caught, and the process still ends by it: they covered only
    /// `SIGHUP`, `SIGINT`, `SIGQUIT` and `SIGTERM`, and a program that `abort`ed, or that a
    /// `SIGUSR1` or `SIGALRM` ended, left its terminal raw (docs audit: the README said only
    /// `SIGKILL` could).
    fn issue_5_the_restore_hooks_cover_every_signal_that_ends_the_process() {
        // Each of the thirteen the docs name, whatever way it comes.
        assert_eq!(evloop_platform::termios::RESET_SIGNALS.len(), 13);
        for signo in evloop_platform::termios::RESET_SIGNALS {
            let p = pty();
            let before = attrs(p.probe.as_fd());
            let out =
                run_child_test("tty::reset_signal_child", (RESET_SIGNAL_ENV, &signo.to_string()), &p.slave);
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.signal(), Some(signo), "{}: {text}", out.status);
            let what = format!("signal {signo}: restored by the hook");
            assert_same_termios(&attrs(p.probe.as_fd()), &before, &what);
        }
    }
);

case!(
    secs = 30,
    /// A child forked without exec inherits the restore hooks; ended by a signal it reset
    /// the terminal of the parent, which went on in raw mode with cooked settings (a
    /// worker's `SIGTERM`, or a child between another library's fork and its exec). Its
    /// `exit` already left the terminal alone.
    fn issue_5_a_child_forked_without_exec_leaves_the_parents_terminal_alone() {
        let p = pty();
        let out = run_child_test("tty::forked_reset_child", (FORKED_ENV, "1"), &p.slave);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}: {text}", out.status);
        assert_eq!(text.matches("still raw after").count(), 3, "{text}");
    }
);

case!(
    /// A panic on the loop's thread that the program survives (`catch_unwind`) resets the
    /// terminal through the hook, as documented, and the same mode again puts the program's
    /// mode back. (A worker's panic leaves it alone: see
    /// `issue_5_a_workers_panic_leaves_the_terminal_to_the_program`.)
    fn a_survived_panic_resets_the_terminal_and_set_mode_puts_it_back() {
        evloop::tty::install_restore_hooks().unwrap();
        let mut lp = test_loop();
        let p = pty();
        let before = attrs(&p.probe);
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let raw = attrs(&p.probe);
        assert!(std::panic::catch_unwind(|| panic!("a panic (on purpose)")).is_err());
        assert_same_termios(&attrs(&p.probe), &before, "reset by the hook");
        assert_eq!(tty.mode(&lp).unwrap(), TtyMode::Raw);
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        assert_same_termios(&attrs(&p.probe), &raw, "raw again");
        close_all(&mut lp);
    }
);

case!(
    /// The hooks and the loop's signal handles share SIGINT and SIGTERM in either order: a
    /// watched signal goes to its watcher, and the hook comes back when the watcher stops.
    fn restore_hooks_coexist_with_signal_handles() {
        use evloop::signal::{SIGINT, SIGTERM, raise};
        use evloop_platform::signal::{Disposition, disposition};
        let mut lp = test_loop();
        let p = pty();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let caught = Rc::new(RefCell::new(Vec::new()));
        let watch = |lp: &mut Loop, signum| {
            let c = caught.clone();
            let sig = Signal::new(lp);
            sig.start_oneshot(lp, signum, move |lp, sig, n| {
                c.borrow_mut().push(n);
                sig.close(lp).unwrap();
            })
            .unwrap();
        };
        // SIGTERM is watched before the hooks arrive, SIGINT after.
        watch(&mut lp, SIGTERM);
        evloop::tty::install_restore_hooks().unwrap();
        let hook = disposition(SIGINT).unwrap();
        assert!(matches!(hook, Disposition::Handler(_)), "the hook took the default SIGINT");
        watch(&mut lp, SIGINT);
        raise(SIGTERM).unwrap();
        raise(SIGINT).unwrap();
        lp.run(RunMode::Default).unwrap();
        caught.borrow_mut().sort();
        assert_eq!(*caught.borrow(), [SIGINT, SIGTERM], "both went to their watchers");
        assert!(!attrs(&p.probe).local_flags.contains(LocalFlags::ICANON), "and nobody reset the terminal");
        assert_eq!(disposition(SIGINT).unwrap(), hook, "the hook is back for SIGINT");
        assert_eq!(disposition(SIGTERM).unwrap(), hook, "and installed for SIGTERM when its watcher stopped");
        close_all(&mut lp);
    }
);

case!(
    /// A program that calls `exit` with a terminal in raw mode leaves it as it found it
    /// (without the restore hooks); a child it forked, calling `exit`, does not touch it.
    /// Issue 5: after `save_settings`, `exit` put back the settings found first, where
    /// closing the handle put back the saved ones (a shell's `exit` builtin undid the user's
    /// `stty`; shell trial). Both now put back the saved ones.
    fn exit_restores_a_terminal_left_in_raw_mode() {
        for how in ["plain", "fork", "saved"] {
            let p = pty();
            let before = attrs(p.probe.as_fd());
            assert!(before.local_flags.contains(LocalFlags::ICANON));
            let out = Command::new(std::env::current_exe().unwrap())
                .args([
                    "tty::exit_raw_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                    "-q",
                ])
                .env(EXIT_RAW_ENV, how)
                .stdin(p.slave.try_clone().unwrap())
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{how}: {text}");
            assert!(text.contains("raw true, after the fork's exit true"), "{how}: {text}");
            let mut expected = before.clone();
            if how == "saved" {
                expected.local_flags.remove(LocalFlags::ECHO);
            }
            assert_same_termios(&attrs(p.probe.as_fd()), &expected, &format!("{how}: restored at exit"));
        }
    }
);

case!(
    /// A program that ends while a job holds the terminal leaves the settings alone: they
    /// are the job's now, and writing them from the background would stop the program with
    /// `SIGTTOU` (the test would time out) or overwrite the job's. So does `exit`, and so
    /// do the restore hooks on a panic and on `SIGTERM`: the panic hook used to stop the
    /// program with `SIGTTOU`, and the signal handler (which blocks `SIGTTOU`) to put the
    /// shell's settings over the job's raw mode.
    fn exit_in_the_background_leaves_the_terminal_alone() {
        for (how, ends) in [
            ("exit", "exited with code 0"),
            ("panic", "exited with code 101"),
            ("term", "killed by signal 15"),
            ("gone", "exited with code 0"),
        ] {
            let p = pty();
            let mut lp = test_loop();
            let status = spawn_session_leader(
                &mut lp,
                &p,
                "tty::exit_in_the_background_child",
                EXIT_BG_ENV,
                &format!("leader {how} "),
            );
            let mut seen = Vec::new();
            crate::util::read_until(p.master.as_fd(), &mut seen, "in front");
            crate::util::read_until(p.master.as_fd(), &mut seen, &format!("shell {ends}"));
            lp.run(RunMode::Default).unwrap();
            let text = String::from_utf8_lossy(&seen).into_owned();
            assert!(status.get().unwrap().success(), "{how}: {text}");
            // A job still there keeps its settings; once it is gone (its group is still the
            // terminal's foreground one, with nobody in it), `exit` puts the shell's back.
            let icanon = attrs(p.probe.as_fd()).local_flags.contains(LocalFlags::ICANON);
            assert_eq!(icanon, how == "gone", "{how}: the terminal's mode");
            // The job got SIGHUP when its session leader exited; in case it did not:
            if let Some(pid) =
                text.split_whitespace().skip_while(|w| *w != "job").nth(1).and_then(|w| w.parse().ok())
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
        }
    }
);

case!(
    /// Pty masters take no slot of the registry that restores shared descriptions at a
    /// fatal signal or `exit`: with 40 masters open, a shared stdout opened after them is
    /// still restored (it was not, the 32 slots being the masters': review).
    fn issue_5_many_pty_masters_leave_room_to_restore_a_shared_stdout() {
        let mut lp = test_loop();
        let mut slaves = Vec::new();
        for _ in 0..40 {
            let (master, slave) = evloop::tty::openpty().unwrap();
            Tty::open(&mut lp, master).unwrap();
            slaves.push(slave);
        }
        let (r, w) = crate::util::packet_pipe();
        let shared = w.try_clone().unwrap();
        let out = Pipe::open(&mut lp, w).unwrap();
        assert!(status_flags(shared.as_fd()).unwrap().nonblocking);
        evloop::restore_shared_blocking().unwrap();
        assert!(!status_flags(shared.as_fd()).unwrap().nonblocking, "restored as at a fatal signal");
        out.close(&mut lp).unwrap();
        close_all(&mut lp);
        drop((r, slaves));
    }
);

case!(
    /// The drop of the loop whose handle holds a terminal's saved settings writes the
    /// restore sequence before it puts them back, where the sequence is meant for that
    /// terminal: a program that left `main` with `?` dropped its loop, and its terminal was
    /// left on the alternate screen with the cursor hidden, the sequence never written: no
    /// reset at `exit` found the terminal after the drop (picker trial). A handle's close
    /// still leaves the screen to the program, and the sequence goes out once.
    fn issue_5_a_dropped_loop_writes_the_restore_sequence() {
        let p = pty();
        let normal = attrs(&p.probe);
        let master = p.master.as_fd();
        let written = || {
            write_slave_side(&p.probe, b"M");
            let mut seen = Vec::new();
            crate::util::read_until(master, &mut seen, "M");
            seen.truncate(seen.len() - 1);
            seen
        };
        let slave = || p.probe.try_clone().unwrap();
        // A close: settings back, the screen left to the program.
        let mut lp = test_loop();
        let t = Tty::open(&mut lp, slave()).unwrap();
        t.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop::tty::set_restore_sequence(b"<bye>");
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&p.probe), &normal, "restored at close");
        assert_eq!(written(), b"");
        // A drop: the sequence, then the settings.
        let t = Tty::open(&mut lp, slave()).unwrap();
        t.set_mode(&mut lp, TtyMode::Raw).unwrap();
        drop(lp);
        assert_same_termios(&attrs(&p.probe), &normal, "restored at the drop");
        assert_eq!(written(), b"<bye>");
        // Once: the next loop's drop writes nothing.
        let mut lp = test_loop();
        let t = Tty::open(&mut lp, slave()).unwrap();
        t.set_mode(&mut lp, TtyMode::Raw).unwrap();
        drop(lp);
        assert_same_termios(&attrs(&p.probe), &normal, "restored at the drop");
        assert_eq!(written(), b"");
        // Nor twice when a reset wrote it first (the panic hook, before the unwinding drop).
        let mut lp = test_loop();
        let t = Tty::open(&mut lp, slave()).unwrap();
        t.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop::tty::set_restore_sequence(b"<bye>");
        evloop::tty::reset_mode().unwrap();
        drop(lp);
        assert_eq!(written(), b"<bye>");
    }
);

case!(
    /// The panic hook of `install_restore_hooks` resets, for a panic of a thread other than
    /// the main one, the terminals whose mode that thread changed, not the others: a
    /// picker whose matcher thread panicked found its terminal cooked, echoing keys, while
    /// it went on drawing in raw mode (picker trial). A thread with a loop of its own that
    /// changed no terminal (a supervisor's worker) leaves them alone too (review).
    fn issue_5_a_workers_panic_leaves_the_terminal_to_the_program() {
        evloop::tty::install_restore_hooks().unwrap();
        let mut lp = test_loop();
        let (p, q) = (pty(), pty());
        let q_normal = attrs(&q.probe);
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let raw = attrs(&p.probe);
        assert!(!raw.local_flags.contains(LocalFlags::ICANON));
        let worker = std::thread::spawn(|| panic!("a worker panics (on purpose)"));
        assert!(worker.join().is_err());
        assert_same_termios(&attrs(&p.probe), &raw, "a worker's panic left the terminal raw");
        let with_loop = std::thread::spawn(|| {
            let _lp = evloop::Loop::new().unwrap();
            panic!("a thread with a loop panics (on purpose)");
        });
        assert!(with_loop.join().is_err());
        assert_same_termios(&attrs(&p.probe), &raw, "a loop's thread left it raw too");
        // A thread that put its own terminal in raw mode: the hook resets that one (seen
        // before the loop's drop would), not the other.
        let (q_slave, q_probe) = (q.slave, q.probe.try_clone().unwrap());
        let own = std::thread::spawn(move || {
            let mut lp = evloop::Loop::new().unwrap();
            let t = Tty::open(&mut lp, q_slave).unwrap();
            t.set_mode(&mut lp, TtyMode::Raw).unwrap();
            let caught =
                std::panic::catch_unwind(|| panic!("a thread with its terminal raw panics (on purpose)"));
            assert!(caught.is_err());
            let reset = attrs(&q_probe).local_flags.contains(LocalFlags::ICANON);
            close_all(&mut lp);
            reset
        });
        assert!(own.join().unwrap(), "the hook reset the thread's own terminal");
        assert_same_termios(&attrs(&q.probe), &q_normal, "its own terminal is normal");
        assert_same_termios(&attrs(&p.probe), &raw, "the other one left raw");
        close_all(&mut lp);
    }
);

case!(
    /// `set_restore_sequence`: a restore (`reset_mode`, and so the hooks and `exit`) writes
    /// it to the terminal with the settings, and only where it restores them. The hooks
    /// used to restore the settings alone, and left a full-screen program's shell on the
    /// alternate screen with the cursor hidden. Never to a pty master (its slave's input),
    /// nor where the write could block.
    fn issue_5_a_restore_writes_the_restore_sequence() {
        let mut lp = test_loop();
        let p = pty();
        let normal = attrs(&p.probe);
        let master = p.master.as_fd();
        // Output comes in order: what reaches the master before a marker written after a
        // restore is what the restore wrote.
        let written_by_restore = || {
            write_slave_side(&p.probe, b"M");
            let mut seen = Vec::new();
            crate::util::read_until(master, &mut seen, "M");
            seen.truncate(seen.len() - 1);
            seen
        };
        // Nothing saved yet: nothing restored, nothing written.
        evloop::tty::set_restore_sequence(b"\x1b[?25h\x1b[?1049l");
        evloop::tty::reset_mode().unwrap();
        assert_eq!(written_by_restore(), b"");
        let t = Tty::open(&mut lp, p.slave).unwrap();
        t.set_mode(&mut lp, TtyMode::Raw).unwrap();
        // (Raw mode keeps output processing: the bytes go out as they are, with no newline.)
        evloop::tty::reset_mode().unwrap();
        assert_eq!(written_by_restore(), b"\x1b[?25h\x1b[?1049l");
        assert_same_termios(&attrs(&p.probe), &normal, "restored with the bytes");
        // Cleared: a restore writes nothing.
        t.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop::tty::set_restore_sequence(b"");
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&p.probe), &normal, "restored");
        assert_eq!(written_by_restore(), b"");
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        // Saved through a read-only handle (as `less` opens /dev/tty): the bytes go through
        // a description opened for writing.
        let name = evloop_platform::termios::ttyname(p.probe.as_fd()).unwrap();
        let ro = evloop_platform::fd::open(&name, evloop_platform::fd::Access::Read, false).unwrap();
        let keys = Tty::open(&mut lp, ro).unwrap();
        keys.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop::tty::set_restore_sequence(b"\x1b[?25h");
        evloop::tty::reset_mode().unwrap();
        assert_eq!(written_by_restore(), b"\x1b[?25h");
        // Written once: what they undo is undone.
        keys.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop::tty::reset_mode().unwrap();
        assert_eq!(written_by_restore(), b"");
        // A terminal that stopped reading, its output full: what waits is discarded, and the
        // bytes go in its place.
        keys.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop::tty::set_restore_sequence(b"\x1b[?25h");
        let fill = evloop_platform::fd::open(&name, evloop_platform::fd::Access::Write, true).unwrap();
        while evloop_platform::fd::write(fill.as_fd(), &[b'.'; 4096]).is_ok() {}
        evloop::tty::reset_mode().unwrap();
        let mut seen = Vec::new();
        crate::util::read_until(master, &mut seen, "\x1b[?25h");
        assert!(
            seen.ends_with(b"\x1b[?25h"),
            "{:?}",
            String::from_utf8_lossy(&seen[seen.len().saturating_sub(40)..])
        );
        drop(fill);
        keys.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        // Saved through a master: the bytes would be typed into its slave.
        let q = pty();
        let m = Tty::open(&mut lp, q.master).unwrap();
        m.set_mode(&mut lp, TtyMode::Raw).unwrap();
        evloop::tty::set_restore_sequence(b"\x1b[?1049l");
        evloop::tty::reset_mode().unwrap();
        // Input comes in order: what reaches the slave before this marker came first.
        m.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let mark = m.try_write(&mut lp, b"Z").unwrap();
        assert_eq!(mark, 1);
        let mut typed = Vec::new();
        crate::util::read_until(q.probe.as_fd(), &mut typed, "Z");
        assert_eq!(typed, b"Z", "the restore typed into the slave");
        m.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        // A terminal whose writes block and that cannot be opened again for writing, with
        // its output full (through a description of its own): nothing written, where the
        // write would wait for good.
        let r = pty();
        let r_normal = attrs(&r.probe);
        let name = evloop_platform::termios::ttyname(r.slave.as_fd()).unwrap();
        let b = open_unreopenable(&mut lp, r.slave.try_clone().unwrap());
        as_stranger(r.slave.as_fd(), || b.set_mode(&mut lp, TtyMode::Raw)).unwrap();
        let fill = evloop_platform::fd::open(&name, evloop_platform::fd::Access::Write, true).unwrap();
        while evloop_platform::fd::write(fill.as_fd(), &[b'x'; 4096]).is_ok() {}
        let t0 = Instant::now();
        evloop::tty::reset_mode().unwrap();
        assert!(t0.elapsed() < Duration::from_millis(150), "no wait for a write: {:?}", t0.elapsed());
        assert_same_termios(&attrs(&r.probe), &r_normal, "restored, the bytes left out");
        // Drained, nothing but the filling came.
        drop(fill);
        let mut seen = Vec::new();
        let mut buf = [0u8; 65536];
        while evloop_platform::fd::poll_readable(r.master.as_fd(), Some(Duration::ZERO)).unwrap() {
            let n = evloop_platform::fd::read(r.master.as_fd(), &mut buf).unwrap();
            seen.extend_from_slice(&buf[..n]);
        }
        write_slave_side(&r.probe, b"M");
        crate::util::read_until(r.master.as_fd(), &mut seen, "M");
        assert!(!String::from_utf8_lossy(&seen).contains("\x1b"), "the bytes were written");
        drop(r.master);
        b.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);
