use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use evloop::signal::{SIGINT, SIGKILL};
use evloop::{Command, Loop, ReadEvent, RunMode, Stdio, os_error_code};
use evloop_platform::libc;

use crate::pipe::collect;
use crate::util::builder;

use super::*;

/// What a pty master handle read, until its end of file; `on_data` may answer what it saw.
fn read_master(
    lp: &mut Loop,
    master: evloop::Tty,
    mut on_data: impl FnMut(&mut Loop, evloop::Tty, &[u8]) + 'static,
) -> Rc<RefCell<Vec<u8>>> {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let out = seen.clone();
    master
        .read_start(lp, move |lp, m, ev| match ev {
            ReadEvent::Data(d) => {
                out.borrow_mut().extend_from_slice(d);
                let all = out.borrow().clone();
                on_data(lp, m, &all);
            }
            ReadEvent::Eof => m.close(lp).unwrap(),
            ReadEvent::Error(e) => panic!("master: {e}"),
        })
        .unwrap();
    seen
}

case!(
    /// `spawn_on_pty` gives the child the pty as stdin, stdout, stderr and controlling
    /// terminal, with its size set before the program starts: Ctrl-C written to the master
    /// reaches the child as `SIGINT`. On every spawn path.
    fn issue_6_a_child_on_a_pty_has_it_as_its_terminal() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "test -t 0 && test -t 1 && test -t 2 && stty size && exec 3</dev/tty && echo ready && exec sleep 100"]);
            let size = evloop::WinSize { rows: 33, cols: 111, ..evloop::WinSize::default() };
            let status = Rc::new(RefCell::new(None));
            let st = status.clone();
            let (master, _child) = cmd
                .spawn_on_pty(&mut lp, size, move |lp, p, res| {
                    *st.borrow_mut() = Some(res.unwrap());
                    p.close(lp).unwrap();
                })
                .unwrap();
            let interrupted = Rc::new(Cell::new(false));
            let i = interrupted.clone();
            let seen = read_master(&mut lp, master, move |lp, m, all| {
                if !i.get() && all.ends_with(b"ready\r\n") {
                    i.set(true);
                    m.write(lp, b"\x03", |_, r| r.unwrap()).unwrap();
                }
            });
            lp.run(RunMode::Default).unwrap();
            assert!(interrupted.get(), "{name}: {:?}", String::from_utf8_lossy(&seen.borrow()));
            assert!(
                seen.borrow().starts_with(b"33 111\r\nready\r\n"),
                "{name}: {:?}",
                String::from_utf8_lossy(&seen.borrow())
            );
            assert_eq!(status.borrow().unwrap().signal(), Some(SIGINT), "{name}");
        }
    }
);

case!(
    /// An `expect`-like tool could turn the echo off only through the master once the child
    /// ran, racing its first reads (expect-tool trial): `spawn_on_pty_with` makes the pty's
    /// settings before the program starts, as its first `stty -a` shows; `spawn_on_pty`
    /// leaves the defaults.
    fn issue_6_spawn_on_pty_with_sets_the_ptys_settings_before_the_program_starts() {
        let mut lp = builder().build().unwrap();
        let size = evloop::WinSize::default();
        let cmd = sh("stty -a");
        let words = |seen: &Rc<RefCell<Vec<u8>>>| {
            let text = String::from_utf8_lossy(&seen.borrow()).into_owned();
            text.split(|c: char| c.is_whitespace() || c == ';').map(str::to_string).collect::<Vec<_>>()
        };
        let quiet = |s: evloop::Settings| s.with_echo(false).with_signals(false);
        let (master, _) =
            cmd.spawn_on_pty_with(&mut lp, size, quiet, |lp, p, _| p.close(lp).unwrap()).unwrap();
        let edited = read_master(&mut lp, master, |_, _, _| {});
        let (master, _) = cmd.spawn_on_pty(&mut lp, size, |lp, p, _| p.close(lp).unwrap()).unwrap();
        let defaults = read_master(&mut lp, master, |_, _, _| {});
        lp.run(RunMode::Default).unwrap();
        let (edited, defaults) = (words(&edited), words(&defaults));
        for (word, set) in [("-echo", &edited), ("-isig", &edited), ("echo", &defaults), ("isig", &defaults)]
        {
            assert!(set.iter().any(|w| w == word), "{word} in {set:?}");
        }
        // Only those two changed: line editing stays on.
        assert!(edited.iter().any(|w| w == "icanon"), "{edited:?}");
    }
);

case!(
    /// A dropped loop closes the masters of the children it started on ptys, and a `cat`
    /// that the hangup ended a moment later, after the drop's look at the children, was
    /// left a zombie on the orphan list (expect-tool trial). The drop now waits a short
    /// while (`PTY_HANGUP_WAIT_MS`) for the children their hangup ends; one that ignores
    /// `SIGHUP` is left running, to the orphan list, after that short while. On every spawn
    /// path. (Nothing tells when `cat` will have died of the `SIGHUP`: on a machine so loaded
    /// that it has not within the wait, the test checks that the drop waited it out, and
    /// finds the `cat` on the orphan list.)
    fn issue_6_a_dropped_loop_reaps_the_children_its_pty_hangup_ends() {
        use std::time::{Duration, Instant};
        let wait = Duration::from_millis(evloop::limits::PTY_HANGUP_WAIT_MS);
        for (name, b) in flavours() {
            let mut lp = b.clone().build().unwrap();
            let ends = Command::new("cat").spawn_on_pty(&mut lp, evloop::WinSize::default(), |_, _, _| {});
            let ends = ends.unwrap().1.process.pid(&lp).unwrap();
            let began = Instant::now();
            drop(lp);
            let took = began.elapsed();
            if !gone(ends) {
                assert!(took >= wait, "{name}: the drop returned after {took:?}, its hung-up child left");
                eprintln!("{name}: `cat` not ended by its hangup within {took:?}: a loaded machine");
                wait_exited_unreaped(ends);
                assert_eq!(evloop::process::reap_orphans(), 1, "{name}");
            }
            assert!(gone(ends), "{name}: ended by the hangup, and reaped");

            let mut lp = b.build().unwrap();
            let cmd = sh("trap '' HUP; echo ready; exec sleep 100");
            let (master, stays) =
                cmd.spawn_on_pty(&mut lp, evloop::WinSize::default(), |_, _, _| {}).unwrap();
            let stays = stays.process.pid(&lp).unwrap();
            // Dropped once the child ignores SIGHUP.
            read_master(&mut lp, master, |lp, _, all| {
                if all.ends_with(b"ready\r\n") {
                    lp.stop();
                }
            });
            lp.run(RunMode::Default).unwrap();
            let began = Instant::now();
            drop(lp);
            let took = began.elapsed();
            assert!(!gone(stays), "{name}: ignores SIGHUP");
            assert!(took >= wait && took < Duration::from_secs(5), "{name}: the drop took {took:?}");
            assert_eq!(evloop::process::reap_orphans(), 1, "{name}");
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(stays as i32), nix::sys::signal::SIGKILL)
                .unwrap();
            wait_exited_unreaped(stays);
            assert_eq!(evloop::process::reap_orphans(), 0, "{name}");
            assert!(gone(stays), "{name}");
        }
    }
);

case!(
    /// The fds the command sets itself stay as set (stderr to a pipe here, apart from the
    /// terminal); setting all three is an error, as are a process group of the command's
    /// own and a program that cannot start, and none leaves a handle, an fd or a child
    /// behind.
    fn issue_6_spawn_on_a_pty_keeps_the_fds_the_command_sets() {
        let mut lp = builder().build().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; test -t 2 || echo stderr is no tty"]).stderr(Stdio::Pipe);
        let (master, child) = cmd
            .spawn_on_pty(&mut lp, evloop::WinSize::default(), |lp, p, res| {
                assert!(res.unwrap().success());
                p.close(lp).unwrap();
            })
            .unwrap();
        let seen = read_master(&mut lp, master, |_, _, _| {});
        let err = collect(&mut lp, child.stderr.expect("a stderr pipe"));
        lp.run(RunMode::Default).unwrap();
        assert_eq!(&seen.borrow()[..], b"out\r\nstderr is no tty\r\n");
        assert_eq!(err.borrow().data, b"err\n");

        let mut all = Command::new("true");
        all.stdin(Stdio::Null).stdout(Stdio::Null).stderr(Stdio::Null);
        let e = all.spawn_on_pty(&mut lp, evloop::WinSize::default(), |_, _, _| panic!("ran")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let mut grouped = Command::new("true");
        grouped.process_group(0);
        let e =
            grouped.spawn_on_pty(&mut lp, evloop::WinSize::default(), |_, _, _| panic!("ran")).unwrap_err();
        assert!(e.to_string().contains("on a pty") && e.to_string().contains("process_group"), "{e}");
        let e = Command::new("/nonexistent/program")
            .spawn_on_pty(&mut lp, evloop::WinSize::default(), |_, _, _| panic!("ran"))
            .unwrap_err();
        assert_eq!(os_error_code(&e), Some(libc::ENOENT), "{e}");
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

case!(
    /// The pty trial's wish: a capture of what a child writes to its terminal, in one
    /// callback after both its exit and the terminal's end of file. `output_on_pty` runs
    /// the child with the pty as its stdin, stdout, stderr and controlling terminal, and
    /// returns all of its output (200 KB written just before the exit too) with its status;
    /// `stderr(Stdio::Pipe)` keeps stderr apart; `output_limit` and the handle for input
    /// work as elsewhere. On every spawn path.
    fn issue_6_output_on_pty_captures_what_the_terminal_got() {
        let numbers: String = (1..=30_000).map(|i| format!("{i}\n")).collect();
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // On a terminal, all three; the output in order, with the terminal's line ends.
            let cmd =
                sh("test -t 0 && test -t 1 && test -t 2 && echo tty; echo err >&2; seq 1 30000; exit 3");
            let out = captured_on_pty(&mut lp, &cmd);
            assert_eq!(out.status.code(), Some(3), "{name}");
            assert_eq!(out.stdout, crlf(&format!("tty\nerr\n{numbers}")), "{name}");
            assert!(out.stderr.is_empty() && !out.truncated && !out.cut, "{name}");
            // stderr apart, through a pipe.
            let mut cmd = sh("echo out; echo err >&2; test -t 2 || echo 'stderr is no terminal'");
            cmd.stderr(Stdio::Pipe);
            let out = captured_on_pty(&mut lp, &cmd);
            assert_eq!(out.stdout, crlf("out\nstderr is no terminal\n"), "{name}");
            assert_eq!(out.stderr, b"err\n", "{name}");
            // The limit keeps the first bytes.
            let mut cmd = sh("seq 1 30000");
            cmd.output_limit(10);
            let out = captured_on_pty(&mut lp, &cmd);
            assert_eq!(out.stdout, crlf("1\n2\n3\n4\n5\n")[..10], "{name}");
            assert!(out.truncated && out.stdout_dropped == crlf(&numbers).len() as u64 - 10, "{name}");
            // Input through the returned handle, echoed by the terminal; Ctrl-D ends it.
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            let (input, process) = Command::new("cat")
                .output_on_pty(&mut lp, evloop::WinSize::default(), move |_, out| *g.borrow_mut() = Some(out))
                .unwrap();
            input.write(&mut lp, b"hello\n", |_, r| r.unwrap()).unwrap();
            // As on any terminal, the input ends with ^D, not a shutdown (which would close
            // only the copy, and leave `cat` waiting); `end` waits for the queue.
            let e = input.shutdown(&mut lp, |_, _| panic!("shut down")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{name}: {e}");
            let ended = Rc::new(Cell::new(false));
            let en = ended.clone();
            input.end(&mut lp, move |_, r| en.set(r.is_ok())).unwrap();
            input.write(&mut lp, b"\x04", |_, r| r.unwrap()).unwrap();
            // It does not read: every byte goes to the capture.
            let e = input.read_start(&mut lp, |_, _, _| panic!("read")).unwrap_err();
            assert!(e.to_string().contains("pty capture's input"), "{name}: {e}");
            assert!(process.pid(&lp).is_ok(), "{name}");
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture's callback ran").unwrap();
            assert!(out.status.success(), "{name}: {}", out.status);
            assert_eq!(out.stdout, b"hello\r\nhello\r\n", "{name}");
            assert!(ended.get(), "{name}: end's callback");
            assert!(input.is_closing(&lp).is_err() && process.is_closing(&lp).is_err(), "{name}");
            // The handle sizes the terminal; a mode is not its to set.
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            let (input, _) = sh("read go; stty size")
                .output_on_pty(&mut lp, evloop::WinSize::default(), move |_, out| *g.borrow_mut() = Some(out))
                .unwrap();
            let e = input.set_mode(&mut lp, evloop::TtyMode::Raw).unwrap_err();
            assert!(e.to_string().contains("pty capture's input"), "{name}: {e}");
            input.set_winsize(&lp, evloop::WinSize { rows: 40, cols: 120, ..Default::default() }).unwrap();
            input.write(&mut lp, b"go\n", |_, r| r.unwrap()).unwrap();
            lp.run(RunMode::Default).unwrap();
            let out = got.borrow_mut().take().expect("the capture's callback ran").unwrap();
            assert_eq!(out.stdout, b"go\r\n40 120\r\n", "{name}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    /// `stream_output_on_pty` hands the terminal's output over as it comes, and `on_done`
    /// comes after the exit and the end of file; a background descendant that keeps the
    /// terminal (one that ignores `SIGHUP`) delays it only by `wait_delay`, then the output
    /// is cut and the error holds the status; `pause_output` holds the terminal's output
    /// back, and the resume brings all of it. Closing the process handle abandons the
    /// capture: the terminal hangs up, and its child is reaped.
    fn issue_6_stream_output_on_pty_streams_cuts_pauses_and_abandons() {
        use std::time::{Duration, Instant};
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // A descendant that keeps the terminal (deaf to the hang-up that the exit of the
            // session's leader sends its group): cut after the delay, not after 100 s.
            let mut cmd = sh("trap '' HUP; sleep 100 & echo started");
            cmd.wait_delay(Duration::from_millis(200));
            let seen = Rc::new(RefCell::new(Vec::new()));
            let s = seen.clone();
            let done = Rc::new(RefCell::new(None));
            let d = done.clone();
            let began = Instant::now();
            cmd.stream_output_on_pty(
                &mut lp,
                evloop::WinSize::default(),
                move |_, _, which, bytes| {
                    assert_eq!(which, evloop::OutputStream::Stdout);
                    s.borrow_mut().extend_from_slice(bytes);
                },
                move |lp, p, res| {
                    // The session leader's group holds the sleep: end it.
                    p.kill_group(lp, SIGKILL).unwrap();
                    *d.borrow_mut() = Some(res);
                },
            )
            .unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(began.elapsed() < Duration::from_secs(20), "{name}");
            let e = done.borrow_mut().take().expect("on_done ran").unwrap_err();
            let cut = evloop::OutputCut::of(&e).unwrap_or_else(|| panic!("{name}: {e}"));
            assert!(cut.status.success(), "{name}: {e}");
            assert_eq!(*seen.borrow(), b"started\r\n", "{name}");

            // Paused at the first bytes and resumed later: all of the output.
            let want = crlf(&(1..=30_000).map(|i| format!("{i}\n")).collect::<String>());
            let seen = Rc::new(RefCell::new(Vec::new()));
            let s = seen.clone();
            let status = Rc::new(RefCell::new(None));
            let st = status.clone();
            let (input, process) = sh("seq 1 30000")
                .stream_output_on_pty(
                    &mut lp,
                    evloop::WinSize::default(),
                    move |lp, p, _, bytes| {
                        let first = s.borrow().is_empty();
                        s.borrow_mut().extend_from_slice(bytes);
                        if first {
                            p.pause_output(lp).unwrap();
                            evloop::Timer::once(lp, Duration::from_millis(50), move |lp| {
                                p.resume_output(lp).unwrap();
                            })
                            .unwrap();
                        }
                    },
                    move |_, _, res| *st.borrow_mut() = Some(res.unwrap()),
                )
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(status.borrow().unwrap().success(), "{name}");
            assert!(*seen.borrow() == want, "{name}: {} bytes of {}", seen.borrow().len(), want.len());
            assert!(input.is_closing(&lp).is_err() && process.is_closing(&lp).is_err(), "{name}");

            // Abandoned: `cat` waits for input until its terminal hangs up.
            let (input, process) = Command::new("cat")
                .stream_output_on_pty(
                    &mut lp,
                    evloop::WinSize::default(),
                    |_, _, _, _| panic!("no output"),
                    |_, _, _| panic!("abandoned"),
                )
                .unwrap();
            let pid = process.pid(&lp).unwrap();
            process.close(&mut lp).unwrap();
            assert_eq!(input.is_closing(&lp).ok(), Some(true), "{name}: the input closes with it");
            lp.run(RunMode::Default).unwrap();
            assert!(gone(pid), "{name}: reaped");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    /// A pty capture refuses what it cannot honour before anything starts: stdout as a
    /// pipe (the terminal is its stdout), a command that names fds 0, 1 and 2, or a group
    /// of its own; and a missing program is the spawn's error. Nothing is left open.
    fn issue_6_output_on_pty_refuses_what_it_cannot_do() {
        let mut lp = builder().build().unwrap();
        let size = evloop::WinSize::default();
        let mut piped = Command::new("true");
        piped.stdout(Stdio::Pipe);
        let e = piped.output_on_pty(&mut lp, size, |_, _| panic!("ran")).unwrap_err();
        assert!(e.to_string().contains("the terminal's output is the capture's stdout"), "{e}");
        let mut all = Command::new("true");
        all.stdin(Stdio::Null).stdout(Stdio::Null).stderr(Stdio::Null);
        let e = all.output_on_pty(&mut lp, size, |_, _| panic!("ran")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let mut grouped = Command::new("true");
        grouped.process_group(0);
        let e = grouped
            .stream_output_on_pty(&mut lp, size, |_, _, _, _| {}, |_, _, _| panic!("ran"))
            .unwrap_err();
        assert!(e.to_string().contains("process_group"), "{e}");
        let e = Command::new("/nonexistent/program")
            .output_on_pty(&mut lp, size, |_, _| panic!("ran"))
            .unwrap_err();
        assert_eq!(os_error_code(&e), Some(libc::ENOENT), "{e}");
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);
