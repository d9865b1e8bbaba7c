use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

use evloop::fd_watch::{Interest, Readiness};
use evloop::{FdWatch, RunMode};

use crate::util::test_loop;

/// A socket pair: the watched end (nonblocking, as a program using a watch sets it) and a
/// duplicate of it to do the I/O with, plus the peer.
fn pair() -> (OwnedFd, UnixStream, UnixStream) {
    let (ours, peer) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let io = ours.try_clone().unwrap();
    (OwnedFd::from(ours), io, peer)
}

case!(
    /// Level-triggered readiness: the callback runs while data waits, and stops running
    /// once the program read it all; a new interest replaces the old; stop makes the watch
    /// inactive, so the loop ends.
    fn a_watch_reports_readiness_until_the_program_drains_the_fd() {
        let mut lp = test_loop();
        let (fd, mut io, mut peer) = pair();
        let w = FdWatch::new(&mut lp, fd).unwrap();
        assert!(!w.is_active(&lp).unwrap(), "inactive until started");
        peer.write_all(&[7; 50_000]).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let calls = Rc::new(Cell::new(0));
        let (g, c) = (got.clone(), calls.clone());
        w.start(&mut lp, Interest::READABLE, move |lp, w, ready| {
            let ready = ready.unwrap();
            assert_eq!(ready, Readiness::READABLE);
            c.set(c.get() + 1);
            // One small read per call: level triggering brings it back while data waits.
            let mut buf = [0; 4096];
            match io.read(&mut buf) {
                Ok(n) => g.borrow_mut().extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
            if g.borrow().len() == 50_000 {
                w.stop(lp).unwrap();
            }
        })
        .unwrap();
        assert!(w.is_active(&lp).unwrap());
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().len(), 50_000);
        assert!(calls.get() >= 50_000 / 4096, "one read per call: {} calls", calls.get());
        assert!(!w.is_active(&lp).unwrap());

        // Writable at once; then a hang-up once the peer is gone.
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        w.start(&mut lp, Interest::WRITABLE, move |lp, w, ready| {
            s.borrow_mut().push(ready.unwrap());
            w.stop(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*seen.borrow(), [Readiness::WRITABLE]);
        drop(peer);
        let s = seen.clone();
        w.start(&mut lp, Interest::READABLE, move |lp, w, ready| {
            s.borrow_mut().push(ready.unwrap());
            w.close(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        let last = seen.borrow()[1];
        // (select(2), behind the select helper, tells readable only.)
        let want = if crate::util::forced_select() {
            Readiness::READABLE
        } else {
            Readiness::READABLE | Readiness::HANGUP
        };
        assert_eq!(last, want);
        assert!(w.fd(&lp).is_err(), "closed with its handle");
    }
);

case!(
    /// Starting again from inside the callback replaces it (the old one is dropped once it
    /// returns); closing from inside it ends the watch; the handle owns and closes the fd.
    fn a_watch_callback_may_replace_itself_and_close() {
        let mut lp = test_loop();
        let (fd, _io, peer) = pair();
        let raw = fd.as_raw_fd();
        let w = FdWatch::new(&mut lp, fd).unwrap();
        (&peer).write_all(b"x").unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        w.start(&mut lp, Interest::READABLE, move |lp, w, _| {
            l.borrow_mut().push("first");
            let l2 = l.clone();
            w.start(lp, Interest::READABLE, move |lp, w, _| {
                l2.borrow_mut().push("second");
                w.close(lp).unwrap();
            })
            .unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*log.borrow(), ["first", "second"]);
        assert!(!evloop_platform::fd::is_open_raw(raw), "the fd closed with the handle");
        assert!(w.start(&mut lp, Interest::READABLE, |_, _, _| {}).is_err(), "a stale id");
    }
);

case!(
    /// A regular file never blocks: ready in every iteration, without polling it.
    fn a_regular_file_is_always_ready() {
        let mut lp = test_loop();
        let file = File::open("/proc/self/exe").unwrap_or_else(|_| File::open("/bin/sh").unwrap());
        let w = FdWatch::new(&mut lp, file.into()).unwrap();
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        w.start(&mut lp, Interest::READABLE | Interest::WRITABLE, move |lp, w, ready| {
            // Opened for reading only; ready for what was asked all the same, as poll says.
            assert!(ready.unwrap().contains(Readiness::READABLE));
            c.set(c.get() + 1);
            if c.get() == 3 {
                w.close(lp).unwrap();
            }
        })
        .unwrap();
        let before = lp.iterations();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(calls.get(), 3);
        assert!(lp.iterations() - before <= 4, "once per iteration");
    }
);

case!(
    /// Bad input: an fd that is not open (refused, and not closed again), a directory, an
    /// empty interest. An unreferenced watch does not keep the loop running.
    fn fd_watch_bad_input_and_unref() {
        let mut lp = test_loop();
        let (r, _w) = std::io::pipe().unwrap();
        let raw = r.as_raw_fd();
        nix::unistd::close(raw).unwrap();
        let e = FdWatch::new(&mut lp, OwnedFd::from(r)).unwrap_err();
        assert_eq!(evloop::os_error_code(&e), Some(nix::libc::EBADF), "{e}");
        assert!(e.to_string().contains(&format!("fd {raw} as a watch: it is not open")), "{e}");
        let dir = File::open("/").unwrap();
        let e = FdWatch::new(&mut lp, dir.into()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("directory"), "{e}");
        let (r, _w) = std::io::pipe().unwrap();
        let watch = FdWatch::new(&mut lp, OwnedFd::from(r)).unwrap();
        let e = watch.start(&mut lp, Interest::empty(), |_, _, _| {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        watch.start(&mut lp, Interest::READABLE, |_, _, _| unreachable!("nothing is written")).unwrap();
        watch.set_ref(&mut lp, false).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap(), "an unreferenced watch keeps nothing alive");
        assert!(watch.fd(&lp).is_ok());
        watch.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// A pidfd is polled, not taken for an always-ready file: readable only once its process
    /// exits. (Some kernels' pidfs has `fstat` call a pidfd a regular file; a watch asks the
    /// poller before it believes that. This kernel's pidfds have no file type, so here the
    /// test shows the behaviour rather than that rule.)
    #[cfg(target_os = "linux")]
    fn a_watch_on_a_pidfd_waits_for_the_exit() {
        let mut lp = test_loop();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read a; true"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pidfd = evloop_platform::process::pidfd_open(child.id() as i32).unwrap();
        let w = FdWatch::new(&mut lp, pidfd).unwrap();
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        w.start(&mut lp, Interest::READABLE, move |lp, w, ready| {
            assert!(ready.unwrap().contains(Readiness::READABLE));
            c.set(c.get() + 1);
            w.close(lp).unwrap();
        })
        .unwrap();
        // Running: nothing to report, and the loop waits instead of spinning.
        let before = lp.iterations();
        for _ in 0..3 {
            lp.run(RunMode::NoWait).unwrap();
        }
        assert_eq!(calls.get(), 0, "not readable while the process runs");
        assert_eq!(lp.iterations() - before, 3);
        drop(child.stdin.take()); // `read` ends: the child exits
        lp.run(RunMode::Default).unwrap();
        assert_eq!(calls.get(), 1);
        assert!(child.wait().unwrap().success());
    }
);

case!(
    /// A watch whose fd was closed behind the loop's back, then stopped: the failed removal
    /// counts the registration as gone, instead of being retried (and the poll not waiting)
    /// in every iteration.
    fn a_failed_deregistration_is_not_retried_forever() {
        let mut lp = test_loop();
        let (fd, _io, _peer) = pair();
        let raw = fd.as_raw_fd();
        let w = FdWatch::new(&mut lp, fd).unwrap();
        w.start(&mut lp, Interest::READABLE, |_, _, _| {}).unwrap();
        lp.run(RunMode::NoWait).unwrap(); // registered now
        drop(_io); // (the duplicate goes, so the description closes with the number)
        nix::unistd::close(raw).unwrap();
        w.stop(&mut lp).unwrap();
        let t = evloop::Timer::once(&mut lp, std::time::Duration::from_millis(50), |_| {}).unwrap();
        let before = lp.iterations();
        lp.run(RunMode::Default).unwrap();
        let iterations = lp.iterations() - before;
        assert!(iterations < 20, "the loop spun: {iterations} iterations in 50 ms");
        let _ = t;
        w.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Found by mutation testing: with the `EPOLL_CTL_DEL` before the close taken out, every
    /// test passed, since a closed fd leaves epoll by itself when it was the last one on its
    /// description. Here a copy of the watched socket outlives the watch (as a child's copy
    /// of a stream's fd would), with a byte waiting: a registration left behind would be
    /// ready for good, and every later poll would return at once. A 30 ms timer after the
    /// close must take a handful of iterations, not a spin. (The count is the loop's own.)
    fn a_closed_watch_leaves_the_poller_though_a_copy_of_its_fd_lives_on() {
        let mut lp = test_loop();
        let (fd, io, mut peer) = pair();
        peer.write_all(b"x").unwrap();
        let w = FdWatch::new(&mut lp, fd).unwrap();
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        w.start(&mut lp, Interest::READABLE, move |lp, w, ready| {
            assert_eq!(ready.unwrap(), Readiness::READABLE);
            c.set(c.get() + 1);
            w.close(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(calls.get(), 1);
        evloop::Timer::once(&mut lp, std::time::Duration::from_millis(30), |_| {}).unwrap();
        let before = lp.iterations();
        lp.run(RunMode::Default).unwrap();
        let spent = lp.iterations() - before;
        assert!(spent < 100, "{spent} iterations to wait 30 ms: the closed fd is still polled");
        drop((io, peer));
    }
);

/// A started watch, registered, whose fd (and the last copy of its socket) was then closed
/// behind its back: the watch and the number, now free.
fn watch_closed_behind_its_back(lp: &mut evloop::Loop) -> (FdWatch, i32) {
    let (fd, io, peer) = pair();
    let raw = fd.as_raw_fd();
    let w = FdWatch::new(lp, fd).unwrap();
    w.start(lp, Interest::READABLE, |_, _, _| {}).unwrap();
    lp.run(RunMode::NoWait).unwrap(); // registered now
    drop((io, peer));
    nix::unistd::close(raw).unwrap();
    (w, raw)
}

case!(
    /// A watch whose fd was closed behind its back, its number then taken by another file:
    /// the restart fails and says so, with the number (its callback got a bare "Operation
    /// not permitted"), and the watch's close leaves that other file open (it closed it:
    /// service-manager trial).
    fn a_watch_whose_fd_number_was_reused_says_so_and_leaves_the_new_file_alone() {
        let mut lp = test_loop();
        let (w, raw) = watch_closed_behind_its_back(&mut lp);
        // The lowest free number: the one just closed.
        let other = File::open("/dev/null").unwrap();
        assert_eq!(other.as_raw_fd(), raw);
        let err = w.start(&mut lp, Interest::WRITABLE, |_, _, _| panic!("never called")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("fd {raw} was closed behind its back")), "{msg}");
        assert!(evloop::os_error_code(&err).is_some(), "the OS error is kept: {err:?}");
        lp.run(RunMode::NoWait).unwrap();
        w.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(evloop_platform::fd::status_flags(std::os::fd::AsFd::as_fd(&other)).is_ok(), "closed");
        drop(other);
    }
);

case!(
    /// The same with the number taken by a pollable file, another handle's pipe: the watch
    /// neither takes that pipe's registration over nor removes it (epoll would have watched
    /// the pipe under the watch's token, or dropped the pipe's own: review).
    fn a_watch_whose_fd_number_went_to_another_handle_leaves_that_handle_alone() {
        let mut lp = test_loop();
        let (w, raw) = watch_closed_behind_its_back(&mut lp);
        let (r, wr) = evloop::Pipe::pair(&mut lp).unwrap();
        assert_eq!(r.fd(&lp).unwrap().as_raw_fd(), raw, "the pipe's read end took the number");
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        r.read_start(&mut lp, move |lp, r, ev| match ev {
            evloop::ReadEvent::Data(d) => {
                g.borrow_mut().extend_from_slice(d);
                r.close(lp).unwrap();
            }
            other => panic!("{other:?}"),
        })
        .unwrap();
        let err = w.start(&mut lp, Interest::READABLE, |_, _, _| panic!("never called")).unwrap_err();
        assert!(err.to_string().contains(&format!("fd {raw} was closed behind its back")), "{err}");
        assert!(!w.is_active(&lp).unwrap(), "the failed start stopped the watch");
        // A stop would have removed the pipe's registration (epoll names it by the number).
        w.stop(&mut lp).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        w.close(&mut lp).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        wr.write(&mut lp, b"still heard", |_, res| res.unwrap()).unwrap();
        wr.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(&got.borrow()[..], b"still heard");
    }
);
