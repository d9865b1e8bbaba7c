use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;

use evloop::signal::{SIGKILL, SIGTERM};
use evloop::{Child, Command, ExitStatus, Loop, Pipe, Pipeline, RunMode, Stdio, os_error_code};
use evloop_platform::libc;

use crate::pipe::collect;
use crate::util::builder;

use super::*;

case!(
    /// `Pipeline::output` keeps at most the last stage's `output_limit` (it kept everything,
    /// whatever the limit), reading and dropping the rest, so every stage keeps its status.
    fn pipeline_output_keeps_the_last_stages_limit() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            for (limit, kept, dropped) in [(1000, 1000, 2_999_000), (5_000_000, 3_000_000, 0)] {
                let mut last = sh("cat; exit 3");
                last.output_limit(limit);
                let got = Rc::new(RefCell::new(None));
                let g = got.clone();
                Pipeline::new([sh("head -c 3000000 /dev/zero"), last])
                    .output(&mut lp, move |_, out| *g.borrow_mut() = Some(out.unwrap()))
                    .unwrap();
                lp.run(RunMode::Default).unwrap();
                let out = got.borrow_mut().take().expect("the capture finished");
                assert_eq!(out.stdout.len(), kept, "{name}: limit {limit}");
                assert_eq!(out.truncated, dropped != 0, "{name}: limit {limit}");
                assert_eq!(out.stdout_dropped, dropped, "{name}: limit {limit}");
                let codes: Vec<_> = out.statuses.iter().map(|s| s.as_ref().unwrap().code()).collect();
                assert_eq!(codes, [Some(0), Some(3)], "{name}: limit {limit}");
                assert!(lp.handles().is_empty(), "{name}");
            }
        }
    }
);

/// Runs `p` with the last stage's stdout on a pipe; returns the output and every status.
fn pipeline_output(lp: &mut Loop, p: &Pipeline) -> (Vec<u8>, Vec<io::Result<ExitStatus>>) {
    let statuses = Rc::new(RefCell::new(None));
    let s = statuses.clone();
    let children: Vec<Child> = p.spawn(lp, move |_, all| *s.borrow_mut() = Some(all)).unwrap();
    let out = collect(lp, children.last().unwrap().stdout.unwrap());
    lp.run(RunMode::Default).unwrap();
    let data = out.borrow().data.clone();
    (data, statuses.borrow_mut().take().expect("the pipeline callback ran"))
}

case!(
    fn issue_6_pipelines_wire_child_to_child() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut last = Command::new("tr");
            last.args(["a-z", "A-Z"]).stdout(Stdio::Pipe);
            let p = Pipeline::new([sh("printf 'b\\na\\nc\\n'"), Command::new("sort"), last]);
            let (out, st) = pipeline_output(&mut lp, &p);
            assert_eq!(out, b"A\nB\nC\n", "{name}");
            assert!(st.iter().all(|s| s.as_ref().unwrap().success()), "{name}");
            assert!(lp.handles().is_empty(), "{name}: the stages' handles closed themselves");
            // A failing middle stage: every status is reported, in order.
            let mut last = Command::new("cat");
            last.stdout(Stdio::Pipe);
            let p = Pipeline::new([sh("echo data; exit 2"), sh("cat >/dev/null; exit 3"), last]);
            let (out, st) = pipeline_output(&mut lp, &p);
            assert_eq!(out, b"", "{name}");
            let codes: Vec<_> = st.iter().map(|s| s.as_ref().unwrap().code()).collect();
            assert_eq!(codes, [Some(2), Some(3), Some(0)], "{name}");
        }
    }
);

case!(
    /// `Pipeline::output`: a shell's `$(a | b | c)`, with every stage's status (duct's
    /// `read`, with `pipefail` as an option). Building it from `spawn` took a pipe handle, a
    /// reader and two callbacks joined by hand.
    fn issue_6_pipeline_output_captures_the_last_stage_and_every_status() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut printf = Command::new("printf");
            printf.arg("pear\\napple\\nfig\\n");
            let stages = [printf, sh("cat; exit 3"), Command::new("sort")];
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            let procs = Pipeline::new(stages)
                .output(&mut lp, move |lp, out| {
                    // The stages' handles are open while the callback runs.
                    let open = |h: &&evloop::HandleInfo| h.kind == evloop::HandleKind::Process && !h.closing;
                    assert_eq!(lp.handles().iter().filter(open).count(), 3);
                    *g.borrow_mut() = Some(out.unwrap());
                })
                .unwrap();
            assert_eq!(procs.len(), 3);
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the callback ran");
            assert_eq!(out.stdout, b"apple\nfig\npear\n", "{name}");
            let codes: Vec<_> = out.statuses.iter().map(|s| s.as_ref().unwrap().code()).collect();
            assert_eq!(codes, [Some(0), Some(3), Some(0)], "{name}");
            let pipefail = out.pipefail().unwrap_err();
            // It names the stage (tokio-port trial: "exited with code 3" alone).
            assert_eq!(pipefail.to_string(), "pipeline stage 2 (`sh`): exited with code 3", "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());

            // The stages exit before the output ends (a background process holds it): their
            // handles stay open until the callback has run.
            let (go_r, go_w) = Pipe::pair(&mut lp).unwrap();
            let mut stage = sh("(read x <&3; echo late) & echo early");
            stage.fd(3, go_r);
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            let procs = Pipeline::new([stage])
                .output(&mut lp, move |lp, out| {
                    let open = |h: &&evloop::HandleInfo| h.kind == evloop::HandleKind::Process && !h.closing;
                    assert_eq!(lp.handles().iter().filter(open).count(), 1);
                    *g.borrow_mut() = Some(out.unwrap());
                })
                .unwrap();
            while procs[0].exit_status(&lp).unwrap().is_none() {
                lp.run(RunMode::Once).unwrap();
            }
            assert!(got.borrow().is_none(), "{name}: the output has not ended");
            go_w.write(&mut lp, b"go\n", |_, r| r.unwrap()).unwrap();
            go_w.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the callback ran");
            assert_eq!(out.stdout, b"early\nlate\n", "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());

            // A stage that closes the output and runs on, its handle unreferenced: the
            // capture still waits for its exit (`run` returned at the end of the output).
            let got = Rc::new(Cell::new(false));
            let g = got.clone();
            let procs = Pipeline::new([sh("exec >&-; exec sleep 0.2")])
                .output(&mut lp, move |_, out| g.set(out.unwrap().pipefail().is_ok()))
                .unwrap();
            procs[0].set_ref(&mut lp, false).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(got.get(), "{name}: the callback ran, with success");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());

            // More than a pipe holds, from a single stage.
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            Pipeline::new([sh("head -c 300000 /dev/zero")])
                .output(&mut lp, move |_, out| *g.borrow_mut() = Some(out.unwrap()))
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().unwrap();
            assert_eq!(out.stdout.len(), 300_000, "{name}");
            assert!(out.pipefail().is_ok());
        }
    }
);

case!(
    /// `Pipeline::output` gives the first stage `/dev/null` as stdin unless its command sets
    /// one, refuses what it cannot own, and closing a stage's handle before the callback
    /// abandons the capture: no callback, the output pipe closed, nothing left behind.
    fn issue_6_pipeline_output_input_bad_input_and_abandon() {
        use std::os::fd::FromRawFd;
        let mut lp = crate::util::test_loop();
        // A stdin that never ends: a stage that inherited it would wait for good.
        let (r, w) = nix::unistd::pipe().unwrap();
        // SAFETY: fd 0 is this test process's own, duplicated to be put back after.
        let saved = unsafe { OwnedFd::from_raw_fd(nix::libc::dup(0)) };
        // SAFETY: replaces this test process's fd 0, which nothing else uses meanwhile.
        assert_eq!(unsafe { nix::libc::dup2(r.as_raw_fd(), 0) }, 0);
        let got = Rc::new(RefCell::new(None));
        let g = got.clone();
        Pipeline::new([Command::new("cat"), Command::new("wc")])
            .output(&mut lp, move |_, out| *g.borrow_mut() = Some(out.unwrap()))
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        // SAFETY: as above: fd 0 back as it was.
        assert_eq!(unsafe { nix::libc::dup2(saved.as_raw_fd(), 0) }, 0);
        drop((r, w, saved));
        let out = got.borrow_mut().take().expect("the callback ran");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>(),
            ["0", "0", "0"]
        );

        let no = |p: Pipeline| p.output(&mut crate::util::test_loop(), |_, _| unreachable!()).unwrap_err();
        let mut last = Command::new("cat");
        last.stdout(Stdio::Null);
        let e = no(Pipeline::new([Command::new("true"), last]));
        assert!(e.to_string().contains("stage 2 (`cat`): its stdout is the pipeline's output"), "{e}");
        let mut piped = Command::new("true");
        piped.stderr(Stdio::Pipe);
        let e = no(Pipeline::new([piped, Command::new("cat")]));
        assert!(e.to_string().contains("stage 1 (`true`)") && e.to_string().contains("child fd 2"), "{e}");
        let e = no(Pipeline::new([]));
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = no(Pipeline::new([Command::new("/nonexistent/evloop-test")]));
        assert_eq!(os_error_code(&e), Some(libc::ENOENT), "{e}");

        // Abandoned: a stage that writes without end, its handle closed before the
        // callback. The output pipe closes with it, and the stage ends by SIGPIPE (read on,
        // it would run for good).
        let writer = sh("while :; do echo x; done");
        let procs =
            Pipeline::new([Command::new("true"), writer]).output(&mut lp, |_, _| unreachable!()).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        procs[1].close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

case!(
    fn issue_6_a_pipeline_stage_that_cannot_start_takes_the_started_ones_down() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // Warm up: the loop's own fds (a SIGCHLD loop's signal pipe) are there from now on.
            assert!(status_of(&mut lp, &Command::new("true")).unwrap().success());
            let before = evloop_platform::fd::open_fd_count().unwrap();
            let mut first = Command::new("sleep");
            first.arg("100");
            let mut last = Command::new("cat");
            last.stdout(Stdio::Pipe);
            let p = Pipeline::new([first, Command::new("/nonexistent/stage"), last]);
            let e = p
                .spawn(&mut lp, |_, _| unreachable!("no pipeline callback after a failed start"))
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name}: {e}");
            assert!(e.to_string().contains("pipeline stage 2: spawn `/nonexistent/stage`"), "{e}");
            assert_eq!(os_error_code(&e), Some(libc::ENOENT));
            // The sleep was killed; the loop reaps it, and then has nothing left to do.
            lp.run(RunMode::Default).unwrap();
            assert!(lp.handles().is_empty(), "{name}");
            assert_eq!(evloop_platform::fd::open_fd_count().unwrap(), before, "{name}");
            // And the loop still works.
            assert!(status_of(&mut lp, &Command::new("true")).unwrap().success());
        }
    }
);

case!(
    /// `Pipeline::spawn_each` goes on past a stage that cannot start, as a shell does (its
    /// status 127): the others run, and find their pipes to it closed; its start and its
    /// status are the error; with no stage started the callback still comes, from the loop;
    /// in a group job the first stage that starts leads the group.
    fn pipeline_spawn_each_goes_on_past_a_stage_that_cannot_start() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let record = || {
                let got = Rc::new(RefCell::new(None));
                let g = got.clone();
                (got, move |_: &mut Loop, all: Vec<io::Result<ExitStatus>>| *g.borrow_mut() = Some(all))
            };
            // `yes | missing | cat`: yes meets the closed pipe, cat reads end of file.
            let mut last = Command::new("cat");
            last.stdout(Stdio::Pipe);
            let p = Pipeline::new([Command::new("yes"), Command::new("/nonexistent/stage"), last]);
            let (got, on_exit) = record();
            let started = p.spawn_each(&mut lp, on_exit).unwrap();
            assert_eq!(started.len(), 3, "{name}");
            let e = started[1].as_ref().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name}: {e}");
            assert!(e.to_string().contains("pipeline stage 2: spawn `/nonexistent/stage`"), "{e}");
            let out = collect(&mut lp, started[2].as_ref().unwrap().stdout.unwrap());
            lp.run(RunMode::Default).unwrap();
            assert_eq!(out.borrow().data, b"", "{name}");
            let all = got.borrow_mut().take().expect("the pipeline callback ran");
            assert_eq!(all[0].as_ref().unwrap().signal(), Some(libc::SIGPIPE), "{name}");
            assert_eq!(all[1].as_ref().unwrap_err().kind(), io::ErrorKind::NotFound, "{name}");
            assert!(all[2].as_ref().unwrap().success(), "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());

            // No stage starts: the callback comes from the loop, with every error.
            let p = Pipeline::new([Command::new("/nonexistent/a"), Command::new("/nonexistent/b")]);
            let (got, on_exit) = record();
            let started = p.spawn_each(&mut lp, on_exit).unwrap();
            assert!(started.iter().all(Result::is_err), "{name}");
            assert!(got.borrow().is_none(), "{name}: not from spawn_each itself");
            assert!(lp.handles().is_empty(), "{name}: its timer is the loop's own: {:?}", lp.handles());
            lp.run(RunMode::Default).unwrap();
            let all = got.borrow_mut().take().expect("the pipeline callback ran");
            assert!(all.iter().all(|s| s.as_ref().unwrap_err().kind() == io::ErrorKind::NotFound));
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());

            // A group job whose first stage cannot start: the second leads the group, and
            // one group signal ends the rest.
            let mut sleeper = Command::new("sleep");
            sleeper.arg("100");
            let mut p =
                Pipeline::new([Command::new("/nonexistent/a"), sleeper.try_clone().unwrap(), sleeper]);
            p.process_group(true);
            let (got, on_exit) = record();
            let started = p.spawn_each(&mut lp, on_exit).unwrap();
            let second = started[1].as_ref().unwrap().process;
            let leader = second.pid(&lp).unwrap();
            let third = started[2].as_ref().unwrap().process.pid(&lp).unwrap();
            let pgid = |pid: u32| {
                nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap().as_raw() as u32
            };
            assert_eq!((pgid(leader), pgid(third)), (leader, leader), "{name}");
            second.kill_group(&mut lp, SIGTERM).unwrap();
            lp.run(RunMode::Default).unwrap();
            let all = got.borrow_mut().take().expect("the pipeline callback ran");
            assert!(all[0].is_err(), "{name}");
            assert_eq!(all[1].as_ref().unwrap().signal(), Some(SIGTERM), "{name}");
            assert_eq!(all[2].as_ref().unwrap().signal(), Some(SIGTERM), "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    /// A handle moved into a stage stays the caller's when a later stage fails to start,
    /// as it does when a single spawn fails; one handle can serve several stages.
    fn issue_6_a_failed_pipeline_leaves_moved_handles_as_they_were() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            let nonblocking = |lp: &Loop| evloop_platform::fd::status_flags(rx.fd(lp).unwrap()).unwrap();
            let flags_before = nonblocking(&lp);
            let mut first = Command::new("sleep");
            first.arg("100").stdin(rx);
            let p = Pipeline::new([first, Command::new("/nonexistent/stage")]);
            let e = p.spawn(&mut lp, |_, _| unreachable!("no callback after a failed start")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name}: {e}");
            assert!(!rx.is_closing(&lp).unwrap(), "{name}: the handle is still open");
            assert_eq!(nonblocking(&lp), flags_before, "{name}: its O_NONBLOCK is back");
            // And it still works: what goes into the pipe comes out of it.
            tx.write(&mut lp, b"still ours", |_, r| r.unwrap()).unwrap();
            tx.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
            let got = collect(&mut lp, rx);
            lp.run(RunMode::Default).unwrap();
            assert_eq!(got.borrow().data, b"still ours", "{name}");
            tx.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();

            // One handle as every stage's stderr: it closes once all have started.
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            let mut a = sh("echo one >&2; echo data");
            a.stderr(tx);
            let mut z = sh("cat >/dev/null; echo two >&2");
            z.stderr(tx).stdout(Stdio::Pipe);
            let (out, st) = pipeline_output(&mut lp, &Pipeline::new([a, z]));
            assert!(st.iter().all(|s| s.as_ref().unwrap().success()), "{name}: {st:?}");
            assert_eq!(out, b"", "{name}");
            let got = collect(&mut lp, rx);
            lp.run(RunMode::Default).unwrap();
            assert_eq!(got.borrow().data, b"one\ntwo\n", "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    /// Closing a stage's handle before its exit is reported cancels the pipeline's callback,
    /// and the other stages' handles (each holding a pidfd on Linux) still close themselves
    /// once their stages have exited: they used to stay open until the loop was dropped.
    fn issue_6_closing_a_pipeline_stage_early_leaves_no_handle_open() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let ran = Rc::new(Cell::new(false));
            // The first stage's handle closes while both stages still run.
            let mut first = Command::new("cat");
            first.stdin(Stdio::Pipe);
            let mut last = Command::new("cat");
            last.stdout(Stdio::Null);
            let r = ran.clone();
            let children = Pipeline::new([first, last]).spawn(&mut lp, move |_, _| r.set(true)).unwrap();
            children[0].process.close(&mut lp).unwrap();
            // End of input ends the first cat, and with it the second.
            children[0].stdin.unwrap().close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(!ran.get(), "{name}: the callback was cancelled");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());

            // The last stage's handle closes after the first stage's exit was reported.
            let mut last = Command::new("sleep");
            last.arg("100");
            let r = ran.clone();
            let children =
                Pipeline::new([Command::new("true"), last]).spawn(&mut lp, move |_, _| r.set(true)).unwrap();
            while children[0].process.exit_status(&lp).unwrap().is_none() {
                lp.run(RunMode::Once).unwrap();
            }
            let sleeper = children[1].process;
            sleeper.kill(&mut lp, libc::SIGKILL).unwrap();
            sleeper.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(!ran.get(), "{name}: the callback was cancelled");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    /// Handles given to a pipeline's stages reach them blocking even when they share one
    /// description (every stage's handles close once all have started, so none needs the
    /// flag), and an unrelated handle does not count as sharing it: the stages got
    /// `O_NONBLOCK`, as did a child given one pty master while another was open.
    fn issue_6_handles_given_to_a_job_reach_it_blocking() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let nonblocking_in = |text: &[u8]| -> Vec<bool> {
                String::from_utf8(text.to_vec())
                    .unwrap()
                    .lines()
                    .map(|l| i32::from_str_radix(l.trim_start_matches("flags:").trim(), 8).unwrap())
                    .map(|f| f & libc::O_NONBLOCK != 0)
                    .collect()
            };
            // Two handles on one nonblocking description: stage 1's stderr, stage 2's stdout.
            let (r, w) = evloop_platform::fd::pipe().unwrap();
            evloop_platform::fd::set_nonblocking(w.as_fd(), true).unwrap();
            let w2 = w.try_clone().unwrap();
            let (a, z) = (Pipe::open(&mut lp, w).unwrap(), Pipe::open(&mut lp, w2).unwrap());
            let mut first = sh("grep ^flags: /proc/self/fdinfo/2 >&2");
            first.stderr(a);
            let mut last = sh("cat; grep ^flags: /proc/self/fdinfo/1");
            last.stdout(z);
            let statuses = Rc::new(RefCell::new(None));
            let s = statuses.clone();
            Pipeline::new([first, last]).spawn(&mut lp, move |_, all| *s.borrow_mut() = Some(all)).unwrap();
            let rx = Pipe::open(&mut lp, r).unwrap();
            let got = collect(&mut lp, rx);
            lp.run(RunMode::Default).unwrap();
            assert!(
                statuses.borrow().as_ref().unwrap().iter().all(|s| s.as_ref().unwrap().success()),
                "{name}"
            );
            assert_eq!(nonblocking_in(&got.borrow().data), [false, false], "{name}");

            // One pty master given to a child while another, unrelated, stays open.
            let (m1, _s1) = evloop::tty::openpty().unwrap();
            let (m2, _s2) = evloop::tty::openpty().unwrap();
            let (given, kept) =
                (evloop::Tty::open(&mut lp, m1).unwrap(), evloop::Tty::open(&mut lp, m2).unwrap());
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            let mut cmd = sh("grep ^flags: /proc/self/fdinfo/0");
            cmd.stdin(given).stdout(tx);
            assert!(status_of(&mut lp, &cmd).unwrap().success(), "{name}");
            let got = collect(&mut lp, rx);
            lp.run(RunMode::Default).unwrap();
            assert_eq!(nonblocking_in(&got.borrow().data), [false], "{name}");
            kept.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
        }
    }
);

case!(
    fn a_pipeline_refuses_links_set_by_its_stages() {
        let mut lp = builder().build().unwrap();
        let mut second = Command::new("cat");
        second.stdin(Stdio::Null);
        let e = Pipeline::new([Command::new("true"), second]).spawn(&mut lp, |_, _| {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("stdin is wired by the pipeline"), "{e}");
        assert!(Pipeline::new([]).spawn(&mut lp, |_, _| {}).is_err());
        // Bad input in a later stage is found before the first stage starts: no child at
        // all (the first would never exit if started).
        let mut sleeper = Command::new("sleep");
        sleeper.arg("100");
        let mut bad = Command::new("cat");
        bad.arg("a\0b");
        let e = Pipeline::new([sleeper, bad]).spawn(&mut lp, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("pipeline stage 2: spawn `cat`: argument 1 contains a NUL"), "{e}");
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

case!(
    /// A loop dropped while a pipeline runs, one stage's handle closed early, ends it as its
    /// commands say (here `kill_on_drop`), and leaves no fd and no child. (That the stages'
    /// close hooks, which run during the drop, stop nothing twice, a unit test in
    /// `src/process/tests.rs` checks.)
    fn issue_6_a_loop_dropped_during_a_pipeline_leaves_nothing() {
        for (name, b) in flavours() {
            let fds = evloop_platform::fd::open_fd_count().unwrap();
            let mut lp = b.build().unwrap();
            let stage = || {
                let mut c = Command::new("sleep");
                c.arg("100").kill_on_drop(true);
                c
            };
            let mut job = Pipeline::new([stage(), stage(), stage()]);
            job.process_group(true);
            let children = job.spawn(&mut lp, |_, _| unreachable!("dropped first")).unwrap();
            let pids: Vec<u32> = children.iter().map(|c| c.process.pid(&lp).unwrap()).collect();
            // One stage closed early: its hook has run; the others' run during the drop.
            children[1].process.close(&mut lp).unwrap();
            drop(lp);
            assert!(pids.iter().all(|&p| gone(p)), "{name}: every stage killed and reaped");
            assert_eq!(evloop_platform::fd::open_fd_count().unwrap(), fds, "{name}");
        }
    }
);

case!(
    /// A pipeline as a shell's job: every stage in one process group led by the first, so one
    /// `kill_group`, through the last stage, ends every stage and what they started.
    fn issue_6_a_pipeline_in_one_process_group_ends_with_one_signal() {
        become_subreaper();
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut last = Command::new("cat");
            last.stdout(Stdio::Pipe);
            // As in issue_6_kill_group_ends_the_whole_group: nothing forks after the echo.
            let mut job = Pipeline::new([sh("sleep 100 & echo $!; wait"), Command::new("cat"), last]);
            job.process_group(true);
            let statuses = Rc::new(RefCell::new(Vec::new()));
            let st = statuses.clone();
            let children = job
                .spawn(&mut lp, move |_, all| st.borrow_mut().extend(all.into_iter().map(|r| r.unwrap())))
                .unwrap();
            let pids: Vec<i32> = children.iter().map(|c| c.process.pid(&lp).unwrap() as i32).collect();
            for &pid in &pids {
                let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
                assert_eq!(pgid.as_raw(), pids[0], "{name}: stage {pid} is in the first stage's group");
            }
            let last = children[2].process;
            let line = on_first_line(&mut lp, children[2].stdout.unwrap(), move |lp, _| {
                last.kill_group(lp, SIGTERM).unwrap();
            });
            lp.run(RunMode::Default).unwrap();
            let signals: Vec<Option<i32>> = statuses.borrow().iter().map(|s| s.signal()).collect();
            assert_eq!(signals, [Some(SIGTERM); 3], "{name}: every stage ended by the one signal");
            let bg: u32 = line.borrow().trim().parse().unwrap();
            let adopted = reap_adopted();
            assert!(gone(bg), "{name}: the first stage's background sleep is gone");
            assert_eq!(group_members(pids[0]), Vec::<i32>::new(), "{name}: nothing left in the group");
            assert!(
                adopted.iter().all(|s| matches!(
                    s,
                    nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::SIGTERM, _)
                )),
                "{name}: {adopted:?}"
            );
        }
        // A stage that asks for a group of its own contradicts the pipeline's: refused
        // before anything starts.
        let mut lp = builder().build().unwrap();
        for own in [0, 1] {
            let mut stage = Command::new("true");
            if own == 0 {
                stage.process_group(0);
            } else {
                stage.setsid(true);
            }
            let mut job = Pipeline::new([Command::new("true"), stage]);
            job.process_group(true);
            let e = job.spawn(&mut lp, |_, _| panic!("nothing starts")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(
                e.to_string().contains("pipeline stage 2 (`true`): its process group is the pipeline's"),
                "{e}"
            );
        }
        assert!(!lp.run(RunMode::Default).unwrap());
    }
);

case!(
    /// A pipeline run as one group: its first stage's handle signals the whole job even
    /// after that stage exited (a shell's `kill %1`: the shell trial signalled each stage in
    /// turn, unsure the first one's handle would serve).
    fn issue_6_a_pipelines_first_stage_signals_the_job_after_it_exited() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut stages = vec![Command::new("true"), Command::new("sleep"), Command::new("sleep")];
            stages[1].arg("100");
            stages[2].arg("100");
            let statuses = Rc::new(RefCell::new(Vec::new()));
            let st = statuses.clone();
            let children = Pipeline::new(stages)
                .process_group(true)
                .spawn(&mut lp, move |_, all| st.borrow_mut().extend(all.into_iter().map(|s| s.unwrap())))
                .unwrap();
            let first = children[0].process;
            // Looks after every poll: the first stage's exit wakes the loop.
            let check = evloop::Check::new(&mut lp);
            check
                .start(&mut lp, move |lp, check| {
                    if first.exit_status(lp).unwrap().is_some() {
                        first.kill_group(lp, SIGKILL).unwrap();
                        check.close(lp).unwrap();
                    }
                })
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            let got: Vec<_> = statuses.borrow().iter().map(|s| (s.code(), s.signal())).collect();
            assert_eq!(got, [(Some(0), None), (None, Some(SIGKILL)), (None, Some(SIGKILL))], "{name}");
        }
    }
);

case!(
    /// A pipeline's output capture has the last stage's `wait_delay` and `cut_output` on
    /// any stage, as a command's capture does (the stage's `wait_delay` was ignored, and a
    /// daemon that the last stage left holding the output held the callback for its whole
    /// life): the callback comes with every status and the output read so far, cut. Cut
    /// before the stages exit, it waits for them. A `wait_delay` on another stage is
    /// refused.
    fn issue_6_pipeline_output_wait_delay_and_cut_output() {
        use evloop::{PipelineOutput, Process, ReadEvent};
        use std::time::{Duration, Instant};
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // The last stage leaves a daemon in the pipeline's group holding the output.
            let tail = |delay: Duration| {
                let mut cmd = sh("cat; sleep 100 & exit 3");
                cmd.wait_delay(delay);
                let mut printf = Command::new("printf");
                printf.arg("hi\\n");
                let mut p = Pipeline::new([printf, cmd]);
                p.process_group(true);
                p
            };
            let got = Rc::new(RefCell::new(None));
            let run = |lp: &mut Loop,
                       pipeline: &Pipeline,
                       got: &Rc<RefCell<Option<PipelineOutput>>>,
                       daemon: bool| {
                let g = got.clone();
                let handles = Rc::new(RefCell::new(Vec::new()));
                let h = handles.clone();
                let stages = pipeline
                    .output(lp, move |lp, out| {
                        // The handles are open until this returns: end the daemon.
                        if daemon {
                            let first: Process = h.borrow()[0];
                            first.kill_group(lp, SIGKILL).unwrap();
                        }
                        *g.borrow_mut() = Some(out.unwrap());
                    })
                    .unwrap();
                *handles.borrow_mut() = stages.clone();
                stages
            };

            // The delay runs out after the exits: cut, with the statuses and what was read.
            let started = Instant::now();
            run(&mut lp, &tail(Duration::from_millis(50)), &got, true);
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture's callback ran");
            let codes: Vec<_> = out.statuses.iter().map(|s| s.as_ref().unwrap().code()).collect();
            assert_eq!(
                (codes, &out.stdout[..], out.cut, out.cut_requested),
                (vec![Some(0), Some(3)], &b"hi\n"[..], true, false),
                "{name}"
            );
            assert!(started.elapsed() < Duration::from_secs(5), "{name}: waited for the daemon");

            // cut_output on the first stage's handle, once the output came: no delay set.
            let (ready_rx, ready_tx) = Pipe::pair(&mut lp).unwrap();
            let mut last = sh("cat; sleep 100 & echo ready >&2; exit 3");
            last.stderr(ready_tx);
            let mut printf = Command::new("printf");
            printf.arg("hi\\n");
            let mut pipeline = Pipeline::new([printf, last]);
            pipeline.process_group(true);
            let stages = run(&mut lp, &pipeline, &got, true);
            let first = stages[0];
            ready_rx
                .read_start(&mut lp, move |lp, p, ev| {
                    assert!(matches!(ev, ReadEvent::Data(b"ready\n")), "{ev:?}");
                    first.cut_output(lp).unwrap();
                    first.cut_output(lp).unwrap();
                    p.close(lp).unwrap();
                })
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture's callback ran");
            assert_eq!((&out.stdout[..], out.cut, out.cut_requested), (&b"hi\n"[..], true, true), "{name}");
            assert!(first.cut_output(&mut lp).is_err(), "{name}: a finished capture's handles are closed");

            // Cut before the stages exit: the callback waits for their exits.
            // (The first stage writes nothing: `cat` would get SIGPIPE after the cut.)
            let mut slow = sh("read x; true");
            let (stop_rx, stop_tx) = Pipe::pair(&mut lp).unwrap();
            slow.stdin(stop_rx);
            let stages = run(&mut lp, &Pipeline::new([slow, Command::new("cat")]), &got, false);
            let stop = Rc::new(Cell::new(Some(stop_tx)));
            evloop::Timer::once(&mut lp, Duration::ZERO, {
                let stages = stages.clone();
                move |lp| {
                    stages[1].cut_output(lp).unwrap();
                    // After the cut, which comes from a timer due now: let the first stage
                    // end (the last then reads the end of its input).
                    let stop = stop.take().unwrap();
                    evloop::Timer::once(lp, Duration::ZERO, move |lp| stop.close(lp).unwrap()).unwrap();
                }
            })
            .unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture's callback ran");
            let ok = out.statuses.iter().all(|s| s.as_ref().is_ok_and(|s| s.success()));
            assert!(ok && out.cut && out.cut_requested && out.stdout.is_empty(), "{name}: {out:?}");

            // A wait_delay elsewhere than on the last stage holds no output: refused.
            let mut first = Command::new("true");
            first.wait_delay(Duration::from_secs(1));
            let e = Pipeline::new([first, Command::new("cat")]).output(&mut lp, |_, _| {}).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name}");
            assert!(e.to_string().contains("stage 1 (`true`): wait_delay"), "{name}: {e}");
            // And on a command that is not captured, cut_output says what is.
            let lone = Command::new("true").spawn(&mut lp, |_, _, _| {}).unwrap().process;
            let e = lone.cut_output(&mut lp).unwrap_err();
            assert!(e.to_string().contains("Pipeline::output"), "{name}: {e}");
            lp.run(RunMode::Default).unwrap();
            lone.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
        }
    }
);
