use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use evloop::signal::{SIGKILL, SIGTERM};
use evloop::{Command, ExitStatus, Loop, Pipe, Pipeline, Process, ReadEvent, RunMode, Stdio};
use evloop_platform::libc;

use crate::pipe::collect;
use crate::util::builder;

use super::*;

case!(
    /// `Command::timeout` (crash-harness and task-runner trials, which each wrote it by hand,
    /// with a race between the timeout and an exit at that moment): a capture's child still
    /// running when the time is up is ended, with its group when it leads one (the
    /// grandchild too), by `SIGKILL` after the grace period when it ignores `SIGTERM`, and
    /// `Output::timed_out` or `stream_output`'s `RunTimedOut` says so; a child done in time
    /// leaves no timer behind.
    fn issue_6_a_captures_timeout_ends_the_child_and_its_group() {
        use evloop::RunTimedOut;
        use std::time::{Duration, Instant};
        let output = |lp: &mut Loop, cmd: &Command| {
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            cmd.output(lp, move |_, out| *g.borrow_mut() = Some(out.unwrap())).unwrap();
            lp.run(RunMode::Default).unwrap();
            got.borrow_mut().take().expect("the capture finished")
        };
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let t0 = Instant::now();
            let mut cmd = sh("echo started; (sleep 30; echo late) & sleep 30");
            cmd.process_group(0).timeout(Duration::from_millis(50), Duration::from_secs(5));
            let out = output(&mut lp, &cmd);
            assert!(out.timed_out, "{name}");
            assert_eq!(out.status.signal(), Some(SIGTERM), "{name}");
            // The grandchild went with its group: its end of the pipe closed.
            assert_eq!(out.stdout, b"started\n", "{name}");
            assert!(t0.elapsed() < Duration::from_secs(5), "{name}: {:?}", t0.elapsed());

            // Alone in the loop's group, ignoring SIGTERM: SIGKILL after the grace period.
            let mut cmd = sh("trap '' TERM; echo started; exec sleep 30");
            cmd.timeout(Duration::from_millis(50), Duration::from_millis(100));
            let out = output(&mut lp, &cmd);
            assert!(out.timed_out, "{name}");
            assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{name}");

            // Done in time: no timeout, and no timer left to count.
            let mut cmd = sh("echo hi");
            cmd.timeout(Duration::from_secs(3600), Duration::from_secs(1));
            let out = output(&mut lp, &cmd);
            assert!(!out.timed_out && out.status.success(), "{name}");
            assert_eq!(lp.backend_timeout(), None, "{name}: the timeout's timer outlived the child");

            let ended = Rc::new(RefCell::new(None));
            let e = ended.clone();
            let mut cmd = sh("exec sleep 30");
            cmd.timeout(Duration::from_millis(20), Duration::from_secs(5));
            cmd.stream_output(&mut lp, |_, _, _, _| {}, move |_, _, res| *e.borrow_mut() = Some(res))
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            let err = ended.borrow_mut().take().unwrap().unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{name}");
            let timed_out = RunTimedOut::of(&err).unwrap_or_else(|| panic!("{name}: {err}"));
            assert_eq!(timed_out.status.signal(), Some(SIGTERM), "{name}");
            assert_eq!(timed_out.after, Duration::from_millis(20), "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

/// An exit callback that notes whether a deadline ended the child, and how it ended; it
/// closes the handle if `close`.
fn note_exit(
    seen: &Rc<RefCell<Vec<(bool, ExitStatus)>>>,
    close: bool,
) -> impl FnOnce(&mut Loop, Process, io::Result<ExitStatus>) + 'static {
    let seen = seen.clone();
    move |lp, p, status| {
        seen.borrow_mut().push((p.timed_out(lp).unwrap(), status.unwrap()));
        if close {
            p.close(lp).unwrap();
        }
    }
}

case!(
    /// `Command::timeout` for `spawn` and a pipeline's stages too (benchmark-harness trial,
    /// which wrote it by hand where `spawn` refused it): the child still running is ended,
    /// with its group when it leads one, and `Process::timed_out` says so in the exit
    /// callback; a child done in time is not, and leaves no timer behind; the timeout's
    /// timer keeps nothing alive.
    fn issue_6_b_spawn_runs_the_commands_timeout() {
        use std::time::{Duration, Instant};
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let seen = Rc::new(RefCell::new(Vec::new()));
            let t0 = Instant::now();
            // A group whose grandchild holds a pipe: it goes with the group.
            let mut cmd = sh("(sleep 30; echo late) & sleep 30");
            cmd.process_group(0)
                .stdout(Stdio::Pipe)
                .timeout(Duration::from_millis(50), Duration::from_secs(5));
            let child = cmd.spawn(&mut lp, note_exit(&seen, true)).unwrap();
            assert!(!child.process.timed_out(&lp).unwrap());
            let out = collect(&mut lp, child.stdout.unwrap());
            let quick = sh("exit 3")
                .timeout(Duration::from_secs(3600), Duration::from_secs(1))
                .spawn(&mut lp, note_exit(&seen, true));
            quick.unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(t0.elapsed() < Duration::from_secs(5), "{name}: {:?}", t0.elapsed());
            assert!(
                out.borrow().eof && out.borrow().data.is_empty(),
                "{name}: the grandchild went with its group"
            );
            let seen = seen.borrow();
            assert_eq!(seen[0], (false, ExitStatus::Exited(3)), "{name}: done in time");
            assert_eq!(
                seen[1],
                (true, ExitStatus::Signaled { signal: SIGTERM, core_dumped: false }),
                "{name}"
            );
            assert_eq!(lp.backend_timeout(), None, "{name}: a timer outlived its child");

            // A pipeline's stage: the stuck one ends, and the job with it.
            let statuses = Rc::new(RefCell::new(None));
            let s = statuses.clone();
            let mut stuck = Command::new("sleep");
            stuck.arg("30").timeout(Duration::from_millis(50), Duration::from_secs(5));
            let job = Pipeline::new([Command::new("true"), stuck, Command::new("cat")]);
            let handles = job.spawn(&mut lp, move |_, st| *s.borrow_mut() = Some(st)).unwrap();
            lp.run(RunMode::Default).unwrap();
            let statuses = statuses.borrow_mut().take().unwrap();
            assert_eq!(statuses[1].as_ref().unwrap().signal(), Some(SIGTERM), "{name}: {statuses:?}");
            assert!(statuses[2].as_ref().unwrap().success(), "{name}: {statuses:?}");
            drop(handles);
            lp.run(RunMode::Default).unwrap();
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    /// `Process::terminate_after` (worker-pool trial, about 25 lines by hand): a worker asked
    /// to stop by the end of its input gets a deadline from then; one that stops in time is
    /// not ended and leaves no timer; one that does not is, and says so; a later deadline
    /// replaces the command's timeout; a reaped or closed child's is refused.
    fn issue_6_b_terminate_after_gives_a_running_child_a_deadline() {
        use std::time::Duration;
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let seen = Rc::new(RefCell::new(Vec::new()));
            let mut workers = Vec::new();
            for script in ["cat >/dev/null", "cat >/dev/null; exec sleep 30"] {
                let mut cmd = sh(script);
                cmd.stdin(Stdio::Pipe);
                let child = cmd.spawn(&mut lp, note_exit(&seen, false)).unwrap();
                child.stdin.unwrap().close(&mut lp).unwrap();
                child
                    .process
                    .terminate_after(&mut lp, Duration::from_millis(100), Duration::from_secs(5))
                    .unwrap();
                workers.push(child.process);
            }
            // The command's timeout, replaced at once by a later deadline.
            let mut cmd = sh("sleep 0.3; exit 4");
            cmd.timeout(Duration::from_millis(20), Duration::from_secs(5));
            let late = cmd.spawn(&mut lp, note_exit(&seen, false)).unwrap().process;
            late.terminate_after(&mut lp, Duration::from_secs(3600), Duration::from_secs(5)).unwrap();
            workers.push(late);
            lp.run(RunMode::Default).unwrap();
            let mut seen = seen.borrow().clone();
            seen.sort_by_key(|(_, st)| st.code());
            assert_eq!(
                seen,
                [
                    (true, ExitStatus::Signaled { signal: SIGTERM, core_dumped: false }),
                    (false, ExitStatus::Exited(0)),
                    (false, ExitStatus::Exited(4)),
                ],
                "{name}"
            );
            assert_eq!(lp.backend_timeout(), None, "{name}: a deadline outlived its child");
            // (Re-trial: closing, the handle said it had not timed out.)
            let ended = workers.iter().find(|w| w.timed_out(&lp).unwrap()).copied().unwrap();
            ended.close(&mut lp).unwrap();
            assert!(ended.timed_out(&lp).unwrap(), "{name}: kept until the close is done");
            let err = workers[0].terminate_after(&mut lp, Duration::ZERO, Duration::ZERO).unwrap_err();
            assert!(evloop::is_no_such_process(&err), "{name}: {err}");
            for w in workers {
                let _ = w.close(&mut lp);
                assert!(w.terminate_after(&mut lp, Duration::ZERO, Duration::ZERO).is_err(), "{name}");
            }
            lp.run(RunMode::Default).unwrap();
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());

            // A deadline moved many times keeps one timer; a capture's `RunTimedOut` names the
            // deadline that ended it, not the command's timeout (re-trial).
            let ended = Rc::new(RefCell::new(None));
            let e = ended.clone();
            let mut cmd = Command::new("sleep");
            cmd.arg("30").timeout(Duration::from_millis(20), Duration::from_secs(5));
            let p = cmd
                .stream_output(&mut lp, |_, _, _, _| {}, move |_, _, res| *e.borrow_mut() = Some(res))
                .unwrap();
            // (The loop's debug form counts every slot, internal timers included.)
            let slots = |lp: &Loop| {
                format!("{lp:?}").split("slots: ").nth(1).unwrap().split(',').next().unwrap().to_owned()
            };
            let before = slots(&lp);
            for ms in 1..=1000 {
                p.terminate_after(&mut lp, Duration::from_millis(ms), Duration::from_secs(5)).unwrap();
            }
            assert_eq!(slots(&lp), before, "{name}: one timer, moved");
            lp.run(RunMode::Default).unwrap();
            let err = ended.borrow_mut().take().unwrap().unwrap_err();
            let timed_out = evloop::RunTimedOut::of(&err).unwrap_or_else(|| panic!("{name}: {err}"));
            assert_eq!(timed_out.after, Duration::from_millis(1000), "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    /// Re-trial of `Command::timeout`: a capture started late in a slow callback had its
    /// timeout counted from the iteration's start, and was ended at once; and a capture
    /// abandoned (its handle closed) in the grace period after the timeout took the SIGKILL
    /// with it, so that a child ignoring SIGTERM ran on for good, holding `run` up.
    fn issue_6_a_captures_timeout_counts_from_its_spawn_and_outlives_an_abandon() {
        use std::time::{Duration, Instant};
        let mut lp = crate::util::test_loop();
        let got = Rc::new(RefCell::new(None));
        let g = got.clone();
        evloop::Timer::once(&mut lp, Duration::ZERO, move |lp| {
            // A callback that runs a blocking command, for longer than the timeout, before it
            // starts the capture (the loop's clock stays where the iteration began).
            let blocked = std::process::Command::new("sleep").arg("1.1").status().unwrap();
            assert!(blocked.success());
            let mut cmd = Command::new("true");
            cmd.timeout(Duration::from_secs(1), Duration::from_secs(1));
            let g = g.clone();
            cmd.output(lp, move |_, out| *g.borrow_mut() = Some(out.unwrap())).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        let out = got.borrow_mut().take().unwrap();
        assert!(!out.timed_out && out.status.success(), "{}", out.status);

        let t0 = Instant::now();
        let mut cmd = sh("trap '' TERM; exec sleep 30");
        cmd.timeout(Duration::from_millis(50), Duration::from_secs(60));
        let p = cmd.output(&mut lp, |_, _| unreachable!("abandoned")).unwrap();
        // Due with the timeout, and started after it: runs right after the SIGTERM.
        evloop::Timer::once(&mut lp, Duration::from_millis(50), move |lp| p.close(lp).unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}: the child outlived its capture", t0.elapsed());
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

/// Kills the process `line` names (a grandchild a test left running; `init` reaps it).
fn end_grandchild(line: &[u8]) {
    let pid: i32 = String::from_utf8_lossy(line).trim().parse().expect("a pid");
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL).expect("the grandchild still ran");
}

case!(
    /// Issue 6: a capture waited for end of file however long a descendant held the output
    /// open (`sh -c 'sleep 30 & echo hi'` took 30 s). With `wait_delay` it stops reading
    /// that long after the exit and finishes with what it read, saying it was cut: in
    /// `Output::cut`, and for `stream_output` as a `TimedOut` error holding the status
    /// (`OutputCut`: a failure with a cut was reported as the status alone, with no sign of
    /// the cut; REPL-kernel trial). A pending input write is cut too, with no error, and
    /// alone it does not make the output cut; output that ends in time is not cut, and the
    /// timer goes with it.
    fn issue_6_wait_delay_cuts_output_a_descendant_holds_open() {
        use std::time::Duration;
        let delay = Duration::from_millis(50);
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // output(): the sleep holds stdout; its pid is the output.
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            let mut cmd = sh("sleep 30 & echo $!");
            cmd.wait_delay(delay);
            cmd.output(&mut lp, move |_, out| *g.borrow_mut() = Some(out.unwrap())).unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture finished");
            assert!(out.status.success() && out.cut, "{name}: {out:?}");
            end_grandchild(&out.stdout);

            // stream_output(): a cut is a TimedOut error that holds the status, whatever it is.
            for (script, code) in [("sleep 30 & echo $!", 0), ("sleep 30 & echo $!; exit 3", 3)] {
                let mut cmd = sh(script);
                cmd.wait_delay(delay);
                let Streamed { got: data, done, .. } = stream_collect(&mut lp, &cmd);
                lp.run(RunMode::Default).unwrap();
                let err = done.borrow_mut().take().expect("on_done ran").unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{name}");
                let cut = evloop::OutputCut::of(&err).expect("the cut's details");
                assert_eq!((cut.status.code(), cut.delay), (Some(code), Some(delay)), "{name}");
                assert!(err.to_string().contains(&format!("exited ({})", cut.status)), "{name}: {err}");
                end_grandchild(&data.borrow());
            }

            // output_with_input(): the sleep holds stdin and reads none of it, so the write
            // waits on a full pipe; the cut cancels it, which is no error. Holding stdout too,
            // it cuts the output; holding stdin alone, the output ended complete and nothing
            // is cut (it said cut; test-runner trial).
            for (script, cut) in [
                ("sleep 30 & echo $!", true),
                ("exec 3<&0; sleep 30 <&3 3<&- >/dev/null 2>&1 & echo $!", false),
            ] {
                let got = Rc::new(RefCell::new(None));
                let g = got.clone();
                let mut cmd = sh(script);
                cmd.wait_delay(delay);
                cmd.output_with_input(&mut lp, vec![b'x'; 1 << 20], move |_, out| {
                    *g.borrow_mut() = Some(out)
                })
                .unwrap();
                lp.run(RunMode::Default).unwrap();
                let out = got.borrow_mut().take().expect("the capture finished").unwrap();
                assert!(out.status.success() && out.cut == cut, "{name}: {out:?}");
                end_grandchild(&out.stdout);
            }

            // In time: not cut, and the timer does not hold the run for its minute.
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            let mut cmd = sh("echo hi");
            cmd.wait_delay(Duration::from_secs(60));
            cmd.output(&mut lp, move |_, out| *g.borrow_mut() = Some(out.unwrap())).unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture finished");
            assert!(!out.cut && out.stdout == b"hi\n", "{name}: {out:?}");
            assert!(lp.handles().is_empty(), "{name}");
        }
    }
);

case!(
    /// Issue 6: a capture's `wait_delay` counted from the loop's cached time. When the
    /// child's exit came in one batch with a slow callback before it, the delay had passed
    /// before it began, and the output a descendant was still to write was cut at once
    /// (build-tool trial). It now counts from the moment the exit is handled.
    fn issue_6_wait_delay_counts_from_the_exit_after_a_slow_callback() {
        use std::time::{Duration, Instant};
        const SLOW: Duration = Duration::from_millis(300);
        const DELAY: Duration = Duration::from_millis(200);
        for (name, b) in [("pidfd", builder()), ("sigchld", builder().force_sigchld_reaping(true))] {
            let mut lp = b.build().unwrap();
            // A pipe whose read callback is the slow one; registered by a first pass.
            let (slow_r, slow_w) = Pipe::pair(&mut lp).unwrap();
            let slow_done = Rc::new(Cell::new(None));
            let d = slow_done.clone();
            slow_r
                .read_start(&mut lp, move |lp, pipe, _| {
                    // A time stamp (the loop caches the time it reads), then slow work.
                    let _stamp = lp.now();
                    crate::util::busy_for(SLOW);
                    d.set(Some(Instant::now()));
                    pipe.close(lp).unwrap();
                })
                .unwrap();
            lp.run(RunMode::NoWait).unwrap();
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            evloop::Timer::once(&mut lp, Duration::ZERO, move |lp| {
                // The slow pipe becomes readable first, then the child exits: one poll
                // reports both, in that order.
                slow_w.try_write(lp, b"x").unwrap();
                slow_w.close(lp).unwrap();
                let mut cmd = sh("sleep 30 & echo $!");
                cmd.wait_delay(DELAY);
                let p = cmd
                    .output(lp, move |_, out| *g.borrow_mut() = Some((Instant::now(), out.unwrap())))
                    .unwrap();
                crate::util::wait_for_state(&format!("/proc/{}/stat", p.pid(lp).unwrap()), 'Z');
            })
            .unwrap();
            lp.run(RunMode::Default).unwrap();
            let (at, out) = got.borrow_mut().take().expect("the capture finished");
            end_grandchild(&out.stdout);
            assert!(out.cut, "{name}: {out:?}");
            let waited = at - slow_done.get().expect("the slow callback ran");
            assert!(waited >= DELAY, "{name}: cut {waited:?} after the exit was handled, delay {DELAY:?}");
        }
    }
);

case!(
    /// Issue 6: `wait_delay` ran out while the consumer held the output back with
    /// `pause_output`, and cut a capture with no descendant at all, losing what the pipe
    /// held. The delay counts only while the capture reads now: paused past it several
    /// times over, then resumed, the capture gets everything and is not cut.
    fn issue_6_wait_delay_does_not_cut_paused_output() {
        use std::time::Duration;
        let mut lp = crate::util::test_loop();
        let mut cmd = sh("echo hi");
        cmd.wait_delay(Duration::from_millis(20));
        let Streamed { process: p, got, done } = stream_collect(&mut lp, &cmd);
        p.pause_output(&mut lp).unwrap();
        evloop::Timer::once(&mut lp, Duration::from_millis(150), move |lp| p.resume_output(lp).unwrap())
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        let res = done.borrow_mut().take().expect("on_done ran");
        assert!(res.is_ok_and(|s| s.success()), "not cut");
        assert_eq!(*got.borrow(), b"hi\n");
    }
);

case!(
    /// Issue 6: with `wait_delay`, a paused capture restarted its delay timer each time it
    /// came round, so `run(Default)` never returned (and spun, with a zero delay), against
    /// `pause_output`'s docs. Pausing holds the delay off now, and the resume starts it.
    fn issue_6_a_paused_capture_with_wait_delay_lets_run_return() {
        use std::time::Duration;
        for delay in [Duration::ZERO, Duration::from_millis(20)] {
            let mut lp = crate::util::test_loop();
            let mut cmd = sh("echo hi");
            cmd.wait_delay(delay);
            let Streamed { process: p, got, done } = stream_collect(&mut lp, &cmd);
            p.pause_output(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(done.borrow().is_none(), "{delay:?}: on_done waits for the resume");
            p.resume_output(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            let res = done.borrow_mut().take().expect("on_done ran");
            assert!(
                res.as_ref().is_ok_and(|s| s.success()),
                "{delay:?}: not cut: {res:?} {:?}",
                got.borrow()
            );
            assert_eq!(*got.borrow(), b"hi\n");
        }
    }
);

case!(
    /// One stream paused at a time (`pause_output_stream`): the other flows, and a
    /// `wait_delay` is held off while either is paused, so nothing is cut; the capture ends
    /// once both are resumed and read (LSP-client trial: a server's stdout back-pressured
    /// while its stderr log went on).
    fn issue_6_one_output_stream_pauses_while_the_other_flows() {
        use evloop::OutputStream::{Stderr, Stdout};
        use std::time::Duration;
        let mut lp = crate::util::test_loop();
        for (paused, flows) in [(Stdout, Stderr), (Stderr, Stdout)] {
            let mut cmd = sh("echo one; echo two >&2");
            cmd.wait_delay(Duration::ZERO);
            let Streamed { process: p, got, done } = stream_collect(&mut lp, &cmd);
            p.pause_output_stream(&mut lp, paused).unwrap();
            // Until the child is reaped and the flowing stream has ended.
            lp.run(RunMode::Default).unwrap();
            let (first, second) = if paused == Stdout { ("two\n", "one\n") } else { ("one\n", "two\n") };
            assert_eq!(String::from_utf8_lossy(&got.borrow()), first, "{flows:?} flowed, {paused:?} waited");
            assert!(done.borrow().is_none(), "on_done waits for {paused:?}, the delay held off");
            p.resume_output_stream(&mut lp, paused).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert_eq!(String::from_utf8_lossy(&got.borrow()), format!("{first}{second}"));
            let res = done.borrow_mut().take().expect("on_done ran");
            assert!(res.as_ref().is_ok_and(|s| s.success()), "not cut: {res:?}");
        }
        // A process whose output is not captured, as for `pause_output`.
        let mut c = Command::new("true");
        c.stdout(Stdio::Pipe);
        let child = c.spawn(&mut lp, |lp, p, _| p.close(lp).unwrap()).unwrap();
        let e = child.process.pause_output_stream(&mut lp, Stdout).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        child.stdout.unwrap().close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Issue 6: `pause_output` after both output streams had ended still held off
    /// `wait_delay`, whose cut was then all that could end a capture whose input write a
    /// descendant holding stdin never read: `run` waited for good. Only output still to
    /// come is held back now.
    fn issue_6_a_pause_after_the_output_ended_does_not_hold_off_the_input_cut() {
        use std::time::Duration;
        let mut lp = crate::util::test_loop();
        let got = Rc::new(RefCell::new(None));
        let g = got.clone();
        // The shell gives its output away and exits; the sleep holds stdin and reads none.
        let mut cmd = sh("exec >/dev/null 2>&1; exec 3<&0; sleep 30 <&3 3<&- & exit 0");
        // (Long enough for the ends of file to be read well before it, even through the
        // select helper on a loaded machine.)
        cmd.wait_delay(Duration::from_millis(500)).process_group(0);
        let p = cmd
            .output_with_input(&mut lp, vec![b'x'; 1 << 20], move |_, out| *g.borrow_mut() = Some(out))
            .unwrap();
        let pgid = p.pid(&lp).unwrap() as i32;
        // Until the child exited and both output pipes ended (closed: only the input's is
        // left), unless the delay has cut it all already.
        let pipes = |lp: &Loop| lp.handles().iter().filter(|h| h.kind == evloop::HandleKind::Pipe).count();
        while got.borrow().is_none() && (p.exit_status(&lp).unwrap().is_none() || pipes(&lp) > 1) {
            lp.run(RunMode::Once).unwrap();
        }
        if got.borrow().is_none() {
            p.pause_output(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        let out = got.borrow_mut().take().expect("the capture finished").unwrap();
        // The output was complete: only the input was dropped, which is no cut.
        assert!(out.status.success() && !out.cut, "{out:?}");
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::SIGKILL).unwrap();
    }
);

case!(
    /// Issue 6: a sink that pauses the capture during `wait_delay`'s last read (what the
    /// pipes held when the delay ran out) holds the cut off: the capture is not cut under a
    /// paused sink, and the resume starts the delay over, which then cuts. The delay here
    /// is zero and starts at the resume, so its timer runs before the poll reads: the
    /// output that waited while paused reaches the sink in that last read.
    fn issue_6_a_sink_that_pauses_during_the_last_read_is_not_cut() {
        let mut lp = crate::util::test_loop();
        let mut cmd = sh("sleep 30 & echo $!");
        cmd.wait_delay(std::time::Duration::ZERO);
        let got = Rc::new(RefCell::new(Vec::new()));
        let done = Rc::new(RefCell::new(None));
        let (g, d) = (got.clone(), done.clone());
        let p = cmd
            .stream_output(
                &mut lp,
                move |lp, p, _, bytes| {
                    g.borrow_mut().extend_from_slice(bytes);
                    p.pause_output(lp).unwrap();
                },
                move |_, _, res| *d.borrow_mut() = Some(res),
            )
            .unwrap();
        // Paused from the start: the shell exits, and its output waits in the pipe.
        p.pause_output(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(got.borrow().is_empty() && done.borrow().is_none());
        // The resume starts the zero delay; its last read hands the pid over, and the sink
        // pauses again: no cut.
        p.resume_output(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(!got.borrow().is_empty(), "the last read delivered the output");
        assert!(done.borrow().is_none(), "cut under a paused sink: {:?}", done.borrow());
        // Resumed with nothing left to read, the delay cuts.
        p.resume_output(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let err = done.borrow_mut().take().expect("on_done ran").unwrap_err();
        assert!(evloop::OutputCut::of(&err).is_some_and(|c| c.status.success()), "{err}");
        end_grandchild(&got.borrow());
    }
);

case!(
    /// `Process::cut_output` stops waiting for a capture's output that a descendant holds
    /// open (pty trial: a cancelled job whose daemon kept the terminal held its callback
    /// until the daemon exited, and abandoning it lost the status): the callback comes with
    /// the status and the output read so far, cut, through pipes and a pty; cut before the
    /// exit, it waits for the exit. Bad calls get clear errors.
    fn issue_6_cut_output_stops_waiting_for_output_a_descendant_holds() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // `output`: cut once the child said it is done (on a pipe of ours).
            let (ready_rx, ready_tx) = Pipe::pair(&mut lp).unwrap();
            let mut cmd = sh("echo hi; sleep 100 & echo ready >&2; exit 4");
            cmd.process_group(0).stderr(ready_tx);
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            let handle = Rc::new(Cell::new(None));
            let h = handle.clone();
            let job = cmd
                .output(&mut lp, move |lp, out| {
                    // The handle is open until this returns: end the daemon.
                    let job: Process = h.get().unwrap();
                    job.kill_group(lp, SIGKILL).unwrap();
                    *g.borrow_mut() = Some(out.unwrap());
                })
                .unwrap();
            handle.set(Some(job));
            ready_rx
                .read_start(&mut lp, move |lp, p, ev| {
                    assert!(matches!(ev, ReadEvent::Data(b"ready\n")), "{ev:?}");
                    job.cut_output(lp).unwrap();
                    job.cut_output(lp).unwrap();
                    p.close(lp).unwrap();
                })
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture's callback ran");
            assert_eq!(
                (out.status.code(), &out.stdout[..], out.cut),
                (Some(4), &b"hi\n"[..], true),
                "{name}"
            );
            assert!(job.cut_output(&mut lp).is_err(), "{name}: a finished capture's handle is closed");

            // On a pty, from the sink, after the exit; and before the exit, which it then
            // waits for.
            for before_exit in [false, true] {
                let script = if before_exit {
                    "echo hi; exec sleep 100"
                } else {
                    "trap '' HUP; sleep 100 & echo hi; exit 4"
                };
                let status = Rc::new(RefCell::new(None));
                let st = status.clone();
                // (A long wait_delay: its pause does not hold the cut off.)
                let mut cmd = sh(script);
                cmd.wait_delay(std::time::Duration::from_secs(60));
                let (_input, _) = cmd
                    .stream_output_on_pty(
                        &mut lp,
                        evloop::WinSize::default(),
                        move |lp, p, _, bytes| {
                            assert_eq!(bytes, b"hi\r\n");
                            // Paused output is cut all the same.
                            p.pause_output(lp).unwrap();
                            p.cut_output(lp).unwrap();
                            if before_exit {
                                // After the cut, which comes from a timer due now.
                                evloop::Timer::once(lp, std::time::Duration::ZERO, move |lp| {
                                    p.kill(lp, SIGKILL).unwrap();
                                })
                                .unwrap();
                            }
                        },
                        move |lp, p, res| {
                            // (The daemon, where there is one.)
                            let _ = p.kill_group(lp, SIGKILL);
                            let e = res.unwrap_err();
                            *st.borrow_mut() = Some(evloop::OutputCut::of(&e).expect("cut").status);
                        },
                    )
                    .unwrap();
                lp.run(RunMode::Default).unwrap();
                let status = status.borrow().expect("on_done ran");
                let want = if before_exit { (None, Some(SIGKILL)) } else { (Some(4), None) };
                assert_eq!((status.code(), status.signal()), want, "{name}");
            }

            // Not a capture.
            let child = Command::new("true").spawn(&mut lp, |lp, p, _| p.close(lp).unwrap()).unwrap();
            let e = child.process.cut_output(&mut lp).unwrap_err();
            assert!(e.to_string().contains("not captured"), "{name}: {e}");
            lp.run(RunMode::Default).unwrap();
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    /// `cut_output` reads what a paused capture holds before it cuts (review: the paused
    /// stream's bytes were dropped unread), and on a pty it stops reading the terminal
    /// without closing it, so that a child whose capture's input handle was closed early
    /// is not ended by the hang-up (review: it got `SIGHUP`). Its error says the cut was
    /// asked for, not a `wait_delay`'s.
    fn issue_6_cut_output_reads_paused_output_and_leaves_the_terminal_up() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // Paused at "hi"; the echo of "go" and "there" wait in the terminal at the cut.
            let (ready_rx, ready_tx) = Pipe::pair(&mut lp).unwrap();
            // (A descendant keeps the terminal: without the cut, no end of file.)
            let mut cmd = sh("echo hi; read go; echo there; echo ready >&2; trap '' HUP; sleep 100 & exit 4");
            cmd.stderr(ready_tx);
            let seen = Rc::new(RefCell::new(Vec::new()));
            let s = seen.clone();
            let done = Rc::new(RefCell::new(None));
            let d = done.clone();
            let input_cell = Rc::new(Cell::new(None::<evloop::Tty>));
            let ic = input_cell.clone();
            let (input, job) = cmd
                .stream_output_on_pty(
                    &mut lp,
                    evloop::WinSize::default(),
                    move |lp, p, _, bytes| {
                        let first = s.borrow().is_empty();
                        s.borrow_mut().extend_from_slice(bytes);
                        if first {
                            p.pause_output(lp).unwrap();
                            ic.get().unwrap().write(lp, b"go\n", |_, r| r.unwrap()).unwrap();
                        }
                    },
                    move |lp, p, res| {
                        p.kill_group(lp, SIGKILL).unwrap();
                        *d.borrow_mut() = Some(res);
                    },
                )
                .unwrap();
            input_cell.set(Some(input));
            ready_rx
                .read_start(&mut lp, move |lp, p, ev| {
                    assert!(matches!(ev, ReadEvent::Data(b"ready\n")), "{ev:?}");
                    job.cut_output(lp).unwrap();
                    p.close(lp).unwrap();
                })
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            assert_eq!(*seen.borrow(), b"hi\r\ngo\r\nthere\r\n", "{name}");
            let e = done.borrow_mut().take().expect("on_done ran").unwrap_err();
            let cut = evloop::OutputCut::of(&e).unwrap_or_else(|| panic!("{name}: {e}"));
            assert_eq!((cut.status.code(), cut.delay), (Some(4), None), "{name}");
            assert!(e.to_string().contains("as asked"), "{name}: {e}");

            // The input's copy closed, then a cut before the exit: the child ends as it
            // would have, not by a hang-up.
            // (It exits once told, on its fd 3, after the cut.)
            let (ready_rx, ready_tx) = Pipe::pair(&mut lp).unwrap();
            let (go_rx, go_tx) = Pipe::pair(&mut lp).unwrap();
            let mut cmd = sh("echo hi; echo ready >&2; read go <&3; exit 3");
            cmd.stderr(ready_tx).fd(3, go_rx);
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            let (input, job) = cmd
                .output_on_pty(&mut lp, evloop::WinSize::default(), move |_, out| {
                    *g.borrow_mut() = Some(out.unwrap());
                })
                .unwrap();
            input.close(&mut lp).unwrap();
            ready_rx
                .read_start(&mut lp, move |lp, p, _| {
                    job.cut_output(lp).unwrap();
                    p.close(lp).unwrap();
                    // After the cut, which comes from a timer due now.
                    evloop::Timer::once(lp, std::time::Duration::ZERO, move |lp| {
                        go_tx.write(lp, b"go\n", |_, r| r.unwrap()).unwrap();
                        go_tx.close(lp).unwrap();
                    })
                    .unwrap();
                })
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture's callback ran");
            assert_eq!(out.status.code(), Some(3), "{name}: {}", out.status);
            assert!(out.cut && out.cut_requested, "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);
