use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use evloop::{Command, HandleType, Pipe, RunMode, Stdio};

use crate::util::test_loop;

use super::*;

case!(
    fn an_fd_closed_behind_the_loops_back_gives_an_error() {
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        nix::unistd::close(rx.fd(&lp).unwrap().as_raw_fd()).unwrap();
        let got = collect(&mut lp, rx);
        lp.run(RunMode::Default).unwrap();
        let got = got.borrow();
        assert_eq!(got.errors.len(), 1, "reported once");
        assert_eq!(evloop::os_error_code(&got.errors[0]), Some(nix::libc::EBADF), "{}", got.errors[0]);
        drop(w);
    }
);

case!(
    /// An fd closed behind the loop's back after the poller took it: the poller drops it
    /// without a word (epoll and kqueue both forget a file's last fd), so a handle that
    /// only waits hears nothing; the handle's next change of interest, or its next write,
    /// reports the error (the documented limit, which the docs had left out). Through the
    /// select helper the same holds once the thread waits in select, which keeps the file
    /// until it wakes: the docs promised the error at once, and a run could wait for good.
    fn an_fd_closed_behind_the_loops_back_after_registration_errs_at_the_next_change() {
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let (r2, w2) = std::io::pipe().unwrap();
        let tx = Pipe::open(&mut lp, OwnedFd::from(w2)).unwrap();
        let got = collect(&mut lp, rx);
        lp.run(RunMode::NoWait).unwrap();
        if crate::util::forced_select() {
            // Let the helper thread reach its select on the fd, the case that waited.
            crate::util::wait_for_select_helper_to_wait();
        }
        nix::unistd::close(rx.fd(&lp).unwrap().as_raw_fd()).unwrap();
        nix::unistd::close(tx.fd(&lp).unwrap().as_raw_fd()).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        assert!(got.borrow().errors.is_empty(), "nothing heard while only waiting");
        // The next change of interest that reaches the poller (or the helper).
        rx.read_stop(&mut lp).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        let again = collect(&mut lp, rx);
        lp.run(RunMode::Default).unwrap();
        assert!(got.borrow().errors.is_empty());
        *got.borrow_mut() = std::mem::take(&mut *again.borrow_mut());
        assert_eq!(got.borrow().errors.len(), 1, "reported once");
        assert_eq!(evloop::os_error_code(&got.borrow().errors[0]), Some(nix::libc::EBADF));
        // A write tries the fd at once.
        let result = Rc::new(RefCell::new(None));
        let res = result.clone();
        tx.write(&mut lp, b"x", move |_, r| {
            *res.borrow_mut() = Some(r.map_err(|e| evloop::os_error_code(&e)))
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*result.borrow(), Some(Err(Some(nix::libc::EBADF))));
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty());
        drop((w, r2));
    }
);

case!(
    /// A shutdown waiting behind queued writes fails with them when the fd turns out to be
    /// closed behind the loop's back; the handle goes inactive (a hang before).
    fn a_shutdown_behind_writes_fails_with_them_on_a_closed_fd() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        while tx.try_write(&mut lp, &[0; 65536]).is_ok() {}
        let results = Rc::new(RefCell::new(Vec::new()));
        let r = results.clone();
        tx.write(&mut lp, b"queued", move |_, res| {
            r.borrow_mut().push(("write", res.map_err(|e| evloop::os_error_code(&e))))
        })
        .unwrap();
        let r = results.clone();
        tx.shutdown(&mut lp, move |_, res| {
            r.borrow_mut().push(("shutdown", res.map_err(|e| evloop::os_error_code(&e))))
        })
        .unwrap();
        nix::unistd::close(tx.fd(&lp).unwrap().as_raw_fd()).unwrap();
        rx.close(&mut lp).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap());
        let failed = Err(Some(nix::libc::EBADF));
        assert_eq!(*results.borrow(), [("write", failed), ("shutdown", failed)]);
        assert!(!tx.is_active(&lp).unwrap());
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// An `O_PATH` fd can be neither read nor written: every handle refuses it with that
    /// reason (a pipe took one as readable, and its reads failed with a bare `EBADF`). A pipe
    /// refuses an fd with no file type (an epoll fd was taken, and its reads and writes failed
    /// with `EINVAL`). An fd the poller refuses (the loop's own epoll fd) is named in the
    /// error.
    #[cfg(target_os = "linux")]
    fn issue_3_o_path_fds_and_fds_the_poller_refuses_get_clear_errors() {
        let mut lp = test_loop();
        let o_path = || {
            let fd = nix::fcntl::open(
                "/etc/passwd",
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .unwrap();
            let raw = fd.as_raw_fd();
            (fd, raw)
        };
        let (fd, raw) = o_path();
        let e = Pipe::open(&mut lp, fd).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains(&format!("fd {raw} as a pipe: it was opened with O_PATH")), "{e}");
        let (fd, raw) = o_path();
        let e = evloop::FdWatch::new(&mut lp, fd).unwrap_err();
        assert!(e.to_string().contains(&format!("fd {raw} as a watch: it was opened with O_PATH")), "{e}");
        let (fd, _) = o_path();
        assert!(evloop::AnyStream::open(&mut lp, fd).unwrap_err().to_string().contains("O_PATH"));
        let (fd, _) = o_path();
        assert!(evloop::Tty::open(&mut lp, fd).unwrap_err().to_string().contains("O_PATH"));
        // An epoll fd (a copy of the loop's own) is no byte stream.
        let ep = std::os::fd::AsFd::as_fd(&lp).try_clone_to_owned().unwrap();
        let e = Pipe::open(&mut lp, ep).unwrap_err();
        assert!(e.to_string().contains("not a byte stream"), "{e}");
        if !crate::util::forced_select() {
            // (The forced helper takes every fd without asking the poller.)
            let own = std::os::fd::AsFd::as_fd(&lp).try_clone_to_owned().unwrap();
            let raw = own.as_raw_fd();
            let e = evloop::FdWatch::new(&mut lp, own).unwrap_err();
            assert!(e.to_string().contains(&format!("cannot watch fd {raw}")), "{e}");
            assert_eq!(evloop::os_error_code(&e), Some(nix::libc::EINVAL), "{e}");
        }
        assert!(lp.handles().is_empty());
    }
);

case!(
    fn bad_input_gets_clear_errors() {
        let mut lp = test_loop();
        // A closed fd.
        let (r, _w) = std::io::pipe().unwrap();
        let raw = r.as_raw_fd();
        nix::unistd::close(raw).unwrap();
        let e = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap_err();
        assert_eq!(evloop::os_error_code(&e), Some(nix::libc::EBADF));
        assert!(e.to_string().contains(&format!("fd {raw}")), "{e}");
        // (Not called a pipe by AnyStream, which may have taken it as a terminal.)
        let (r, _w) = std::io::pipe().unwrap();
        let raw = r.as_raw_fd();
        nix::unistd::close(raw).unwrap();
        let e = evloop::AnyStream::open(&mut lp, OwnedFd::from(r)).unwrap_err();
        assert!(e.to_string().contains(&format!("cannot open fd {raw} as a stream: it is not open")), "{e}");
        // A directory.
        let dir = File::open("/").unwrap();
        let e = Pipe::open(&mut lp, OwnedFd::from(dir)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("directory"), "{e}");
        // Datagram and packet sockets (issue 3): a byte stream would merge queued writes into
        // one message and cut messages longer than the read cap, so they are refused.
        for ty in [nix::sys::socket::SockType::Datagram, nix::sys::socket::SockType::SeqPacket] {
            let (a, _b) = nix::sys::socket::socketpair(
                nix::sys::socket::AddressFamily::Unix,
                ty,
                None,
                nix::sys::socket::SockFlag::empty(),
            )
            .unwrap();
            let e = Pipe::open(&mut lp, a).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{ty:?}: {e}");
            assert!(e.to_string().contains("packet socket"), "{e}");
        }
        // A listening socket carries no bytes: it was taken, and failed later with ENOTCONN
        // and EINVAL (IPC-daemon trial).
        let path = std::env::temp_dir().join(format!("evloop-listener-{}", std::process::id()));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // (macOS's getsockopt cannot tell a listening socket.)
        if cfg!(not(target_vendor = "apple")) {
            let e = Pipe::open(&mut lp, OwnedFd::from(listener)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("listening socket"), "{e}");
        }
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        // Read caps out of range.
        for bad in [0, evloop::limits::READ_CAP_BYTES_MAX + 1] {
            let e = rx.set_read_cap(&mut lp, bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
        rx.set_read_cap(&mut lp, evloop::limits::READ_CAP_BYTES_MAX).unwrap();
        // Wrong directions.
        let e = rx.write(&mut lp, b"x", |_, _| panic!("never called")).unwrap_err();
        assert!(e.to_string().contains("reading only"), "{e}");
        let e = tx.read_start(&mut lp, |_, _, _| panic!("never called")).unwrap_err();
        assert!(e.to_string().contains("not readable"), "{e}");
        // (A read cap on the write end was taken without a word: data-pipeline trial.)
        let e = tx.set_read_cap(&mut lp, 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("not readable"), "{e}");
        // A second read_start.
        rx.read_start(&mut lp, |_, _, _| {}).unwrap();
        assert_eq!(rx.read_start(&mut lp, |_, _, _| {}).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        // Writing after shutdown.
        tx.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
        let e = tx.write(&mut lp, b"late", |_, _| panic!("never called")).unwrap_err();
        assert!(e.to_string().contains("shut down"), "{e}");
        let e = tx.shutdown(&mut lp, |_, _| {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "shutdown twice: {e}");
        assert!(e.to_string().contains("already shut down"), "{e}");
        rx.close(&mut lp).unwrap();
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        // Closed ids.
        assert!(rx.read_start(&mut lp, |_, _, _| {}).is_err());
        assert!(tx.write(&mut lp, b"x", |_, _| {}).is_err());
        assert!(rx.write_queue_size(&lp).is_err());
        // A stale id is that, whatever else is wrong with the call (a bad cap was
        // `InvalidInput` first: docs audit).
        assert_eq!(rx.set_read_cap(&mut lp, 0).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
);

case!(
    /// `Pipe::open` of a socket that is nonblocking already (a server's accepted connection)
    /// needs no fd of its own: with every number taken, it failed with `EMFILE` and closed
    /// the connection, for a duplicate that it made and threw away (IPC-daemon trial).
    fn issue_3_a_nonblocking_socket_opens_with_no_fd_to_spare() {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        use std::io::{Read, Write};
        let mut lp = test_loop();
        // The select helper, where a run forces it, starts with the first handle, and needs
        // fds of its own: before the limit.
        let (warm_r, warm_w) = Pipe::pair(&mut lp).unwrap();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        // Every number up to the limit taken.
        let top = a.as_raw_fd().max(b.as_raw_fd());
        let mut fillers = Vec::new();
        loop {
            let f = File::open("/dev/null").unwrap();
            if f.as_raw_fd() > top {
                break;
            }
            fillers.push(f);
        }
        let limits = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, ((top + 1) as u32).into(), limits.1).unwrap();
        assert!(File::open("/dev/null").is_err(), "no number is free");
        let opened = Pipe::open(&mut lp, OwnedFd::from(a));
        setrlimit(Resource::RLIMIT_NOFILE, limits.0, limits.1).unwrap();
        drop(fillers);
        let pipe = opened.unwrap();
        // And it works.
        pipe.write(&mut lp, b"hi", |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        let mut got = [0u8; 2];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        b.write_all(b"x").unwrap();
        pipe.close(&mut lp).unwrap();
        warm_r.close(&mut lp).unwrap();
        warm_w.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn guess_handle_names_what_an_fd_is() {
        use std::os::fd::AsFd;
        let (r, _w) = std::io::pipe().unwrap();
        assert_eq!(evloop::guess_handle(r.as_fd()).unwrap(), HandleType::Pipe);
        let f = File::open("/proc/self/status").unwrap();
        assert_eq!(evloop::guess_handle(f.as_fd()).unwrap(), HandleType::File);
        let n = File::open("/dev/null").unwrap();
        assert_eq!(evloop::guess_handle(n.as_fd()).unwrap(), HandleType::File);
        let d = File::open("/").unwrap();
        assert_eq!(evloop::guess_handle(d.as_fd()).unwrap(), HandleType::Unknown);
        let (s, _t) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(evloop::guess_handle(s.as_fd()).unwrap(), HandleType::Socket);
        let pty = nix::pty::openpty(None, None).unwrap();
        assert_eq!(evloop::guess_handle(pty.slave.as_fd()).unwrap(), HandleType::Tty);
    }
);

case!(
    /// The fd given to `Pipe::open` keeps its number while the handle is open, even where
    /// the pipe is reopened privately: a program's stdout (fd 1) must not be handed to the
    /// next fd the loop makes (its children would write into the loop's own pipes).
    fn issue_3_an_opened_fd_keeps_its_number_until_close() {
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let raw = r.as_raw_fd();
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        assert!(evloop_platform::fd::is_open_raw(raw), "still open");
        let (a, b) = Pipe::pair(&mut lp).unwrap();
        let taken = [a.fd(&lp).unwrap().as_raw_fd(), b.fd(&lp).unwrap().as_raw_fd()];
        assert!(!taken.contains(&raw), "fd {raw} went to a new pipe: {taken:?}");
        for h in [rx, a, b] {
            h.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert!(!evloop_platform::fd::is_open_raw(raw), "closed with the handle");
        drop(w);
    }
);

case!(
    /// An `AnyStream` goes to a child as its stdio, as a `Pipe` or `Tty` does.
    fn an_any_stream_can_be_a_childs_stdout() {
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let out = evloop::AnyStream::open(&mut lp, OwnedFd::from(w)).unwrap();
        let mut cmd = Command::new("echo");
        cmd.arg("hi").stdout(out);
        cmd.spawn(&mut lp, |lp, p, st| {
            assert!(st.unwrap().success());
            p.close(lp).unwrap();
        })
        .unwrap();
        assert!(out.is_closing(&lp).unwrap(), "moved to the child");
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let got = collect(&mut lp, rx);
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"hi\n");
    }
);

case!(
    /// A shell keeps fds 0 to 9 for its scripts: with the fd floor set, every fd the loop
    /// makes and keeps (its poller and wakeup fd, the signal pipe, the select helper's pipe,
    /// pipes, a child's pipes and pidfd, reopened descriptions, a shared socket's copy, a
    /// saved terminal's copy, a pty) is at or above it, so a script's `dup2` onto 3 to 9
    /// cannot land on one. Bad floors are refused.
    fn the_fd_floor_keeps_the_loops_fds_above_it() {
        use evloop_platform::fd::{nofile_limit, open_fds};
        assert_eq!(evloop::set_fd_floor(-1).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let (soft, _) = nofile_limit().unwrap();
        let err = evloop::set_fd_floor(soft as i32).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        assert_eq!(evloop::fd_floor(), 0);
        let before = open_fds().unwrap();
        // Above whatever the test harness holds open.
        let floor = before.iter().copied().max().unwrap_or(0).max(19) + 1;
        // The caller's own blocking pipe, which Pipe::open takes (and opens again), and a
        // blocking socket, which it cannot open again (its O_NONBLOCK is undone through a
        // copy the loop keeps).
        let (theirs_r, theirs_w) = nix::unistd::pipe().unwrap();
        let (sock, sock_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let theirs = [theirs_r.as_raw_fd(), theirs_w.as_raw_fd(), sock.as_raw_fd(), sock_peer.as_raw_fd()];
        evloop::set_fd_floor(floor).unwrap();
        let mut lp = test_loop();
        let (r, w) = Pipe::pair(&mut lp).unwrap();
        let s = evloop::Signal::new(&mut lp);
        s.start(&mut lp, evloop::signal::SIGUSR2, |_, _, _| {}).unwrap();
        let opened = Pipe::open(&mut lp, theirs_r).unwrap();
        let socket = Pipe::open(&mut lp, OwnedFd::from(sock)).unwrap();
        let (master, slave) = evloop::tty::openpty().unwrap();
        let tty = evloop::Tty::open(&mut lp, slave).unwrap();
        // Raw mode keeps a copy of the terminal, for the restore.
        tty.set_mode(&mut lp, evloop::TtyMode::Raw).unwrap();
        let mut cmd = Command::new("cat");
        cmd.stdin(Stdio::Pipe).stdout(Stdio::Pipe);
        let status = Rc::new(Cell::new(None));
        let st = status.clone();
        let mut child = cmd
            .spawn(&mut lp, move |lp, p, res| {
                st.set(Some(res.unwrap().success()));
                p.close(lp).unwrap();
            })
            .unwrap();
        let loops_below_floor = || -> Vec<i32> {
            let mut fds = open_fds().unwrap();
            fds.retain(|fd| !before.contains(fd) && !theirs.contains(fd) && *fd < floor);
            fds
        };
        assert_eq!(loops_below_floor(), [], "the loop's fds below the floor");
        for h in [r.fd(&lp).unwrap(), w.fd(&lp).unwrap(), opened.fd(&lp).unwrap(), tty.fd(&lp).unwrap()] {
            assert!(h.as_raw_fd() >= floor, "{h:?}");
        }
        assert!(master.as_raw_fd() >= floor);
        // The loop works with its fds up there: data goes through the child and back.
        let stdin = child.stdin.take().unwrap();
        stdin.write(&mut lp, b"through cat", |_, r| r.unwrap()).unwrap();
        stdin.close(&mut lp).unwrap();
        let got = collect(&mut lp, child.stdout.take().unwrap());
        // Reading and writing made the select helper's pipe too, when it is forced.
        assert_eq!(loops_below_floor(), [], "the loop's fds below the floor");
        for h in [r.into(), w.into(), opened.into(), socket.into(), tty.into(), s.into()] {
            let h: evloop::HandleId = h;
            lp.close(h).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"through cat");
        assert!(got.borrow().eof && got.borrow().errors.is_empty());
        assert_eq!(status.get(), Some(true));
        drop(lp);
        drop((master, theirs_w, sock_peer));
        evloop::set_fd_floor(0).unwrap();
    }
);

case!(
    /// With the numbers from the fd floor up used up, making an fd fails with `EMFILE`
    /// (its OS number kept) even though lower ones are free; a spawn whose pidfd cannot go
    /// up leaves no child behind; nothing leaks; and the loop goes on once fds are free.
    fn past_the_fd_floor_making_an_fd_is_a_clear_emfile() {
        use evloop_platform::fd::{nofile_limit, open_fds};
        let (soft, _) = nofile_limit().unwrap();
        let before = open_fds().unwrap();
        // Room for the loop's poller and wakeup fd, and no more.
        let floor = soft as i32 - 2;
        assert!(before.iter().all(|&fd| fd < floor), "{before:?}");
        evloop::set_fd_floor(floor).unwrap();
        let mut lp = test_loop();
        let err = Pipe::pair(&mut lp).unwrap_err();
        assert_eq!(evloop::os_error_code(&err), Some(libc::EMFILE), "{err}");
        let exited = Rc::new(Cell::new(false));
        let e = exited.clone();
        // The child starts, but nothing can watch it (its pidfd cannot go up, and neither can
        // the signal pipe of the SIGCHLD fallback): it is killed and reaped at once.
        let err = Command::new("true").spawn(&mut lp, move |_, _, _| e.set(true)).unwrap_err();
        assert_eq!(evloop::os_error_code(&err), Some(libc::EMFILE), "{err}");
        assert!(err.to_string().contains("cannot watch the child"), "{err}");
        evloop::set_fd_floor(0).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(!exited.get());
        drop(lp);
        assert_eq!(open_fds().unwrap(), before, "nothing leaked");
        let mut again = test_loop();
        Pipe::pair(&mut again).unwrap();
    }
);

case!(
    /// A shell hands `Pipe::open` or `Tty::open` an fd at a low number, which the handle keeps
    /// aside while it works on a description of its own. With the fd floor set, that fd moves
    /// above it at once: the shell's next redirection onto the number (here, the next file it
    /// opens) is its own, and the handle's close leaves it open (shell trial: the close
    /// closed the shell's `exec 3>file`).
    fn an_fd_handed_over_and_kept_aside_moves_above_the_floor() {
        use evloop_platform::fd::open_fds;
        let before = open_fds().unwrap();
        let floor = before.iter().copied().max().unwrap_or(0).max(19) + 1;
        let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
        let (master, slave) = evloop::tty::openpty().unwrap();
        let slave_low = slave.try_clone().unwrap();
        let handed = [pipe_r.as_raw_fd(), slave_low.as_raw_fd()];
        assert!(handed.iter().all(|&fd| fd < floor), "{handed:?}");
        evloop::set_fd_floor(floor).unwrap();
        let mut lp = test_loop();
        let pipe = Pipe::open(&mut lp, pipe_r).unwrap();
        let tty = evloop::Tty::open(&mut lp, slave_low).unwrap();
        let open_now = open_fds().unwrap();
        assert!(handed.iter().all(|fd| !open_now.contains(fd)), "{handed:?} still open: {open_now:?}");
        // The shell redirects onto those numbers (opens files there), then the handles close.
        let (mut redirected, mut others) = (Vec::new(), Vec::new());
        while redirected.len() < 2 {
            let f = OwnedFd::from(File::open("/dev/null").unwrap());
            if handed.contains(&f.as_raw_fd()) {
                redirected.push(f);
            } else {
                assert!(f.as_raw_fd() < floor, "ran past the numbers handed over");
                others.push(f);
            }
        }
        pipe.close(&mut lp).unwrap();
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let open_now = open_fds().unwrap();
        assert!(handed.iter().all(|fd| open_now.contains(fd)), "the shell's files were closed: {open_now:?}");
        evloop::set_fd_floor(0).unwrap();
        drop((redirected, others, pipe_w, master, slave, lp));
    }
);

case!(
    /// Found by mutation testing: `pipe2` without `O_CLOEXEC` passed every test, since
    /// evloop's own spawns close every fd above the child's. Another spawner in the program
    /// (std's `Command`, `system`) closes nothing: the loop's fds must not reach its children.
    fn the_loops_fds_do_not_leak_into_children_of_other_spawners() {
        let before = evloop_platform::fd::open_fds().unwrap();
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let ours: Vec<String> = evloop_platform::fd::open_fds()
            .unwrap()
            .into_iter()
            .filter(|fd| !before.contains(fd))
            .map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap().display().to_string())
            .collect();
        assert!(ours.iter().filter(|t| t.starts_with("pipe:")).count() >= 1, "the pair: {ours:?}");
        let out = std::process::Command::new("ls")
            .args(["-l", "/proc/self/fd/"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let theirs = String::from_utf8_lossy(&out.stdout);
        for t in &ours {
            assert!(!theirs.contains(&format!("-> {t}")), "{t} reached the child:\n{theirs}");
        }
        for p in [rx, tx] {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);
