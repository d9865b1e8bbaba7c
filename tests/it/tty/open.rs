use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use evloop::{Loop, Pipe, ReadEvent, RunMode, Tty, TtyMode};
use evloop_platform::fd::status_flags;

use crate::pipe::pattern;
use crate::util::test_loop;

use super::*;

/// Runs `cmd` to its end with its output captured: its status, and its stdout as text.
fn output_of(lp: &mut Loop, cmd: &evloop::Command) -> (evloop::ExitStatus, String) {
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    cmd.output(lp, move |_, out| *g.borrow_mut() = Some(out.unwrap())).unwrap();
    lp.run(RunMode::Default).unwrap();
    let out = got.borrow_mut().take().unwrap();
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned())
}

case!(
    /// `Tty::open_controlling`: the terminal of a process whose stdio may be pipes (a
    /// picker's UI), and a clear error for a process without one (picker trial: `ENXIO`
    /// said "No such device or address").
    fn issue_5_open_controlling_opens_dev_tty_or_says_there_is_none() {
        let mut lp = test_loop();
        let p = pty();
        let cmd = child_test("tty::open_controlling_child", CONTROLLING_ENV, "1");
        let (status, seen) = start_on_pty(&mut lp, &p, cmd, "END");
        lp.run(RunMode::Default).unwrap();
        let text = String::from_utf8_lossy(&seen);
        assert!(status.get().unwrap().success(), "{text}");
        assert!(text.contains("OPENED raw=true cooked-after=true"), "{text}");
        // A new session has no controlling terminal.
        let mut cmd = child_test("tty::open_controlling_child", CONTROLLING_ENV, "1");
        cmd.setsid(true);
        let (status, text) = output_of(&mut lp, &cmd);
        assert!(status.success(), "{text}");
        assert!(text.contains(&format!("ERR Some({})", libc::ENXIO)), "{text}");
        assert!(text.contains("this process has no controlling terminal"), "{text}");
    }
);

case!(
    /// `AnyStream::stdin`, `stdout` and `stderr`: the process's own, opened through a
    /// duplicate (the caller had to make it), with errors that name the stream where they
    /// named the duplicate's number (stdio-relay trial).
    fn anystream_opens_the_processs_stdio_and_names_it_in_errors() {
        let mut lp = test_loop();
        let p = pty();
        let cmd = child_test("tty::std_streams_child", STD_STREAMS_ENV, "1");
        let (status, seen) = start_on_pty(&mut lp, &p, cmd, "END");
        lp.run(RunMode::Default).unwrap();
        let text = String::from_utf8_lossy(&seen);
        assert!(status.get().unwrap().success(), "{text}");
        assert!(text.contains("KINDS tty | tty | tty END"), "{text}");
        let mut cmd = child_test("tty::std_streams_child", STD_STREAMS_ENV, "1");
        cmd.stdin(OwnedFd::from(File::open("/").unwrap()));
        let (status, text) = output_of(&mut lp, &cmd);
        assert!(status.success(), "{text}");
        assert!(text.contains("KINDS error: stdin (fd 0), duplicated as fd "), "{text}");
        assert!(text.contains("directory | pipe | pipe END"), "{text}");
    }
);

case!(
    /// The reopen keeps O_NONBLOCK off the description the caller shares with others.
    fn issue_5_reopen_leaves_the_shared_description_blocking() {
        let mut lp = test_loop();
        let p = pty();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        assert!(!status_flags(p.probe.as_fd()).unwrap().nonblocking, "the original description");
        assert!(status_flags(tty.fd(&lp).unwrap()).unwrap().nonblocking, "the handle's own");
        assert!(!tty.writes_block(&lp).unwrap());
        // Reads and writes work on the private description.
        let got = collect(&mut lp, tty, 3);
        write_master(p.master.as_fd(), b"hi\n");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"hi\n");
        close_all(&mut lp);
        assert!(!status_flags(p.probe.as_fd()).unwrap().nonblocking, "after close");
    }
);

case!(
    /// `Pipe::open` of a terminal (a stdout that is one, opened by a program that expects a
    /// pipe) used to set O_NONBLOCK on the description the terminal's other users share, and
    /// a child writing to the same terminal failed with EAGAIN. It now gets what a tty handle
    /// gets: a private reopen, or, for a pty master, blocking writes on the shared one.
    fn issue_3_pipe_open_of_a_terminal_leaves_the_shared_description_blocking() {
        let mut lp = test_loop();
        let p = pty();
        let pipe = Pipe::open(&mut lp, p.slave).unwrap();
        assert!(!status_flags(p.probe.as_fd()).unwrap().nonblocking, "the shared description");
        assert!(status_flags(pipe.fd(&lp).unwrap()).unwrap().nonblocking, "the handle's own");
        pipe.write(&mut lp, b"out\n", |_, r| r.unwrap()).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        pipe.read_start(&mut lp, move |lp, pipe, ev| {
            if let ReadEvent::Data(d) = ev {
                g.borrow_mut().extend_from_slice(d);
                pipe.read_stop(lp).unwrap();
            }
        })
        .unwrap();
        write_master(p.master.as_fd(), b"in\n");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*got.borrow(), b"in\n");
        // Our line, and the terminal's echo of the input.
        let seen = read_master(p.master.as_fd(), 9);
        assert!(seen.windows(5).any(|w| w == b"out\r\n"), "{:?}", String::from_utf8_lossy(&seen));
        pipe.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        // A pty master cannot be reopened: it takes O_NONBLOCK itself, and keeps it (it is
        // the program's own end of a pty it made: see `Tty::open`).
        let shared = p.master.try_clone().unwrap();
        let master = Pipe::open(&mut lp, p.master).unwrap();
        assert!(status_flags(shared.as_fd()).unwrap().nonblocking);
        master.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(status_flags(shared.as_fd()).unwrap().nonblocking);
        assert!(!status_flags(p.probe.as_fd()).unwrap().nonblocking, "the slave's, after close");
    }
);

case!(
    secs = 30,
    /// The classic way to drive a child through a terminal: `cat` on a pty's slave, the
    /// master opened with `Pipe::open`, more written than the terminal holds. The write
    /// queues what the master does not take and the echo comes back; with the master left
    /// blocking (as a first fix for terminals did) the loop sat in `write` while `cat` sat
    /// writing its echo to the master nobody read.
    fn issue_3_a_child_driven_through_a_pty_master_pipe_does_not_deadlock() {
        const TOTAL: usize = 256 * 1024;
        let mut lp = test_loop();
        let p = pty();
        make_raw(&p.probe);
        let mut cmd = evloop::Command::new("cat");
        cmd.stdin(evloop::Stdio::Fd(p.slave.try_clone().unwrap()))
            .stdout(evloop::Stdio::Fd(p.slave.try_clone().unwrap()));
        let (child, status) = crate::util::spawn_recording(&mut lp, &cmd);
        drop((p.slave, p.probe));
        let master = Pipe::open(&mut lp, p.master).unwrap();
        let data = pattern(3, TOTAL);
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        master
            .read_start(&mut lp, move |lp, m, ev| match ev {
                ReadEvent::Data(d) => {
                    g.borrow_mut().extend_from_slice(d);
                    if g.borrow().len() == TOTAL {
                        child.process.kill(lp, evloop::signal::SIGKILL).unwrap();
                        m.close(lp).unwrap();
                    }
                }
                ReadEvent::Eof => m.close(lp).unwrap(),
                ReadEvent::Error(e) => panic!("{e}"),
            })
            .unwrap();
        master.write_vec(&mut lp, data.clone(), |_, r| r.unwrap()).unwrap();
        assert!(master.write_queue_size(&lp).unwrap() > 0, "the rest waits in the queue");
        lp.run(RunMode::Default).unwrap();
        assert!(*got.borrow() == data, "{} of {TOTAL} bytes echoed", got.borrow().len());
        assert!(status.get().is_some(), "cat reaped");
    }
);

case!(
    /// Two handles on one blocking terminal description (one that cannot be reopened),
    /// both reading: the poller reports both ready, the first drains the line, and the
    /// second used to block in `read` for good. A blocking stream now reads only while the
    /// fd is still readable.
    fn issue_3_a_blocking_terminal_read_by_two_handles_does_not_block_the_loop() {
        let mut lp = test_loop();
        let p = pty();
        let dup = p.slave.try_clone().unwrap();
        let a = open_unreopenable(&mut lp, p.slave);
        let b = open_unreopenable(&mut lp, dup);
        let got = Rc::new(RefCell::new(Vec::new()));
        for h in [a, b] {
            let g = got.clone();
            h.read_start(&mut lp, move |lp, _, ev| {
                if let ReadEvent::Data(d) = ev {
                    g.borrow_mut().extend_from_slice(d);
                    // Both close from the next iteration: the other one's event of this
                    // batch must not block.
                    evloop::Timer::once(lp, Duration::ZERO, move |lp| {
                        for h in [a, b] {
                            if !h.is_closing(lp).unwrap_or(true) {
                                h.close(lp).unwrap();
                            }
                        }
                    })
                    .unwrap();
                }
            })
            .unwrap();
        }
        write_master(p.master.as_fd(), b"hello\n");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(&got.borrow()[..], b"hello\n");
    }
);

case!(
    /// A pty master cannot be reopened: its description is made nonblocking, and left so
    /// (its blocking writes stalled the loop whenever the child stopped reading: pty-tool
    /// trial). A terminal that cannot be reopened otherwise keeps its blocking mode, and its
    /// writes block.
    fn issue_5_a_pty_master_is_made_nonblocking() {
        let mut lp = test_loop();
        let p = pty();
        let shared = p.master.try_clone().unwrap();
        let master = Tty::open(&mut lp, p.master).unwrap();
        assert!(!master.writes_block(&lp).unwrap());
        assert!(status_flags(shared.as_fd()).unwrap().nonblocking);
        assert!(master.shares_nonblocking(&lp).unwrap());
        // A write bigger than the pty holds waits in the queue: the loop goes on.
        master
            .write_vec(&mut lp, vec![b'x'; 1 << 20], |_, r| assert!(evloop::is_cancelled(&r.unwrap_err())))
            .unwrap();
        assert!(master.write_queue_size(&lp).unwrap() > 0);
        master.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(status_flags(shared.as_fd()).unwrap().nonblocking, "left so: nobody to restore it for");
        drop((shared, p.slave, p.probe));

        let p = pty();
        let shared = p.slave.try_clone().unwrap();
        let slave = open_unreopenable(&mut lp, p.slave);
        assert!(!status_flags(shared.as_fd()).unwrap().nonblocking, "left alone");
        slave.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        // Both directions work through a master: keys in, output back.
        let p = pty();
        let master = Tty::open(&mut lp, p.master).unwrap();
        let slave = Tty::open(&mut lp, p.slave).unwrap();
        slave.set_mode(&mut lp, TtyMode::Io).unwrap();
        let got = collect(&mut lp, slave, 5);
        master.write(&mut lp, b"hello", |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"hello");
        close_all(&mut lp);
        drop(p.probe);
        // A master that is nonblocking already is used as it is, and left so.
        let (master, _slave) = evloop::tty::openpty().unwrap();
        evloop_platform::fd::set_nonblocking(master.as_fd(), true).unwrap();
        let shared = master.try_clone().unwrap();
        let master = Tty::open(&mut lp, master).unwrap();
        assert!(!master.writes_block(&lp).unwrap());
        close_all(&mut lp);
        assert!(status_flags(shared.as_fd()).unwrap().nonblocking);
    }
);

case!(
    fn bad_input_gets_clear_errors_and_leaves_the_terminal_alone() {
        let mut lp = test_loop();
        let p = pty();
        let before = attrs(&p.probe);

        // A regular file.
        let file = File::open("/proc/self/status").unwrap();
        let e = Tty::open(&mut lp, OwnedFd::from(file)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("a regular file, not a terminal"), "{e}");
        // A pipe.
        let (r, _w) = std::io::pipe().unwrap();
        let e = Tty::open(&mut lp, OwnedFd::from(r)).unwrap_err();
        assert!(e.to_string().contains("a pipe or FIFO, not a terminal"), "{e}");
        // /dev/null.
        let e = Tty::open(&mut lp, OwnedFd::from(File::open("/dev/null").unwrap())).unwrap_err();
        assert!(e.to_string().contains("a character device, not a terminal"), "{e}");
        // Named where the system tells (dashboard trial: "fd 7" was a copy of stdout).
        #[cfg(target_os = "linux")]
        assert!(e.to_string().contains("(/dev/null) as a tty"), "{e}");
        // A closed fd.
        let (r, _w) = std::io::pipe().unwrap();
        let raw = r.as_raw_fd();
        nix::unistd::close(raw).unwrap();
        let e = Tty::open(&mut lp, OwnedFd::from(r)).unwrap_err();
        assert_eq!(evloop::os_error_code(&e), Some(nix::libc::EBADF));
        assert!(e.to_string().contains(&format!("fd {raw} as a tty: it is not open")), "{e}");

        // A mode change through a handle that cannot read.
        let name = nix::unistd::ttyname(&p.probe).unwrap();
        let write_only = File::options().write(true).open(&name).unwrap();
        let out = Tty::open(&mut lp, OwnedFd::from(write_only)).unwrap();
        let e = out.set_mode(&mut lp, TtyMode::Raw).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("not readable"), "{e}");
        assert_eq!(out.mode(&lp).unwrap(), TtyMode::Normal);
        let e = out.read_start(&mut lp, |_, _, _| {}).unwrap_err();
        assert!(e.to_string().contains("not readable"), "{e}");
        // Its writes still work.
        out.write(&mut lp, b"x", |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(read_master(p.master.as_fd(), 1), b"x");

        // reset_mode() before any change: a no-op.
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "after every bad input");

        // A closing handle: the kind the crate docs give for it, not its missing fd's EBADF.
        out.close(&mut lp).unwrap();
        for e in [out.winsize(&lp).unwrap_err(), out.fd(&lp).unwrap_err()] {
            assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{e}");
            assert!(e.to_string().contains("the tty is closing"), "{e}");
        }
        // A closed id.
        lp.run(RunMode::Default).unwrap();
        assert!(out.set_mode(&mut lp, TtyMode::Raw).is_err());
        assert!(out.winsize(&lp).is_err());
        assert!(out.on_resize(&mut lp, |_, _, _| {}).is_err());

        // /dev/tty without a controlling terminal: the open fails, with ENXIO. A new session
        // has none; this test process leads its own process group (the harness's doing), so
        // it cannot start one itself: a child does.
        let status = Rc::new(Cell::new(None));
        let st = status.clone();
        let child = evloop::Command::new("sh")
            .args(["-c", "exec 3<>/dev/tty"])
            .setsid(true)
            .stderr(evloop::Stdio::Pipe)
            .spawn(&mut lp, move |lp, p, s| {
                st.set(Some(s.unwrap().code()));
                p.close(lp).unwrap();
            })
            .unwrap();
        let msg = Rc::new(RefCell::new(Vec::new()));
        let m = msg.clone();
        child
            .stderr
            .unwrap()
            .read_start(&mut lp, move |lp, err, ev| match ev {
                ReadEvent::Data(d) => m.borrow_mut().extend_from_slice(d),
                _ => err.close(lp).unwrap(),
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_ne!(status.get(), Some(Some(0)), "opening /dev/tty in a new session succeeded");
        let msg = String::from_utf8_lossy(&msg.borrow()).into_owned();
        assert!(msg.contains("No such device or address"), "ENXIO expected: {msg}");
        assert_same_termios(&attrs(&p.probe), &before, "at the end");
    }
);

case!(
    /// Opening the slave of a pty whose master closed: the error says it hung up, with its
    /// `EIO`; it said "a character device, not a terminal" (expect-tool trial).
    fn issue_5_opening_a_hung_up_terminal_says_so() {
        let mut lp = test_loop();
        let (master, slave) = evloop::tty::openpty().unwrap();
        drop(master);
        let e = Tty::open(&mut lp, slave).unwrap_err();
        assert_eq!(evloop::os_error_code(&e), Some(libc::EIO), "{e}");
        assert!(e.to_string().contains("hung up"), "{e}");
        // A file is still "not a terminal".
        let e = Tty::open(&mut lp, File::open("/dev/null").unwrap().into()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("not a terminal"), "{e}");
    }
);

case!(
    /// `AnyStream::open` takes a terminal as a `Tty` and anything else as a `Pipe`, and its
    /// methods reach whichever it is.
    fn any_stream_opens_a_terminal_as_a_tty_and_the_rest_as_pipes() {
        use evloop::AnyStream;
        let mut lp = test_loop();
        let p = pty();
        let term = AnyStream::open(&mut lp, p.slave.try_clone().unwrap()).unwrap();
        assert!(term.as_tty().is_some() && term.as_pipe().is_none());
        let (r, w) = std::io::pipe().unwrap();
        let rx = AnyStream::open(&mut lp, OwnedFd::from(r)).unwrap();
        assert!(matches!(rx, AnyStream::Pipe(_)));
        let null = AnyStream::open(&mut lp, File::open("/dev/null").unwrap().into()).unwrap();
        assert!(null.as_pipe().is_some());
        // The terminal's input reaches the callback, with the stream it came from.
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        term.read_start(&mut lp, move |lp, s, ev| {
            assert_eq!(s, term);
            if let ReadEvent::Data(d) = ev {
                g.borrow_mut().extend_from_slice(d);
                s.read_stop(lp).unwrap();
            }
        })
        .unwrap();
        write_master(p.master.as_fd(), b"typed\n");
        while got.borrow().is_empty() {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(&got.borrow()[..], b"typed\n");
        // A read of what is there now, and the ref, through the same methods.
        let mut buf = [0u8; 16];
        assert_eq!(term.try_read(&mut lp, &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        write_master(p.master.as_fd(), b"more\n");
        assert!(evloop_platform::fd::poll_readable(p.probe.as_fd(), Some(Duration::from_secs(10))).unwrap());
        let n = term.try_read(&mut lp, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"more\n");
        assert!(term.has_ref(&lp).unwrap());
        term.set_ref(&mut lp, false).unwrap();
        assert!(!term.has_ref(&lp).unwrap());
        term.set_ref(&mut lp, true).unwrap();
        // Its output reaches the master (after the echo of the input).
        term.write(&mut lp, b"shown", |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        crate::util::read_until(p.master.as_fd(), &mut Vec::new(), "shown");
        assert_eq!(term.write_queue_size(&lp).unwrap(), 0);
        // A pipe's end of file, through the same methods.
        drop(w);
        let eof = Rc::new(Cell::new(false));
        let e = eof.clone();
        rx.read_start(&mut lp, move |lp, s, ev| {
            assert!(matches!(ev, ReadEvent::Eof));
            e.set(true);
            s.close(lp).unwrap();
        })
        .unwrap();
        null.close(&mut lp).unwrap();
        term.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(eof.get());
        assert!(term.is_active(&lp).is_err(), "closed");
    }
);

case!(
    /// A master's handle names its pty's slave, as `ttyname` on the slave does (a pty
    /// recorder's wish, for its logs); any other terminal gets an error that says why.
    fn issue_5_a_pty_master_names_its_slave() {
        let mut lp = test_loop();
        let p = pty();
        let master = Tty::open(&mut lp, p.master.try_clone().unwrap()).unwrap();
        let name = master.pty_slave_name(&lp).unwrap();
        assert_eq!(name, nix::unistd::ttyname(&p.probe).unwrap());
        let slave = Tty::open(&mut lp, p.slave).unwrap();
        let e = slave.pty_slave_name(&lp).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("not a pty master"), "{e}");
        close_all(&mut lp);
        assert!(master.pty_slave_name(&lp).is_err(), "a closed handle");
    }
);

case!(
    /// A terminal that cannot be opened again by name (another user's, after `su` or
    /// `sudo -u`) but is the controlling terminal is opened again through `/dev/tty`, so its
    /// writes do not block the loop. Its writes used to block (libuv's fallback), and a
    /// full-screen program run as another user froze while the terminal was not read.
    fn issue_5_a_controlling_terminal_that_cannot_be_reopened_by_name_is_reopened_through_dev_tty() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        let mut lp = test_loop();
        let p = pty();
        let name = evloop_platform::termios::ttyname(p.slave.as_fd()).unwrap();
        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let mode = std::fs::metadata(&path).unwrap().permissions();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        let cmd = child_test("tty::ctty_reopen_child", CTTY_ENV, "1");
        let (status, seen) = start_on_pty(&mut lp, &p, cmd, "END");
        lp.run(RunMode::Default).unwrap();
        std::fs::set_permissions(&path, mode).unwrap();
        let text = String::from_utf8_lossy(&seen);
        assert!(status.get().unwrap().success(), "{text}");
        assert!(text.contains("refused_by_name=true"), "the set-up: {text}");
        assert!(text.contains("writes_block=false shares_nonblocking=false"), "{text}");
    }
);
