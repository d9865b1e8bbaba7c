use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use evloop::{Pipe, ReadEvent, RunMode};

use crate::pipe::{Sum, collect};
use crate::util::test_loop;

case!(
    /// With RLIMIT_NOFILE lowered, making pipes and spawning children with pipes fail with a
    /// clear EMFILE, and the loop keeps serving the handles it has; with the limit raised
    /// again, everything works.
    fn issue_7_fd_exhaustion() {
        let (soft, _) = evloop_platform::fd::nofile_limit().unwrap();
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let got = collect(&mut lp, rx);
        let open_now = evloop_platform::fd::open_fds().unwrap().len() as u64;
        evloop_platform::fd::set_nofile_soft_limit(open_now + 8).unwrap();
        let mut made = Vec::new();
        let err = loop {
            match Pipe::pair(&mut lp) {
                Ok(p) => made.push(p),
                Err(e) => break e,
            }
            assert!(made.len() < 100, "the limit is not enforced");
        };
        assert_eq!(evloop::os_error_code(&err), Some(nix::libc::EMFILE), "{err}");
        // Spawning a child with a stdout pipe fails the same way, naming the program.
        let mut cmd = evloop::Command::new("true");
        cmd.stdout(evloop::Stdio::Pipe);
        let err = cmd.spawn(&mut lp, |_, _, _| panic!("never spawned")).unwrap_err();
        assert_eq!(evloop::os_error_code(&err), Some(nix::libc::EMFILE), "{err}");
        assert!(err.to_string().contains("true"), "{err}");
        // The existing pipe still works at the limit.
        tx.write(&mut lp, b"still served", |_, r| r.unwrap()).unwrap();
        // Once waits for the data (through the select helper it comes from another thread).
        while got.borrow().data.len() < 12 {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(got.borrow().data, b"still served");
        // Raised again: new pipes work.
        evloop_platform::fd::set_nofile_soft_limit(soft).unwrap();
        let (rx2, tx2) = Pipe::pair(&mut lp).unwrap();
        let got2 = collect(&mut lp, rx2);
        tx2.write(&mut lp, b"and new ones too", |_, r| r.unwrap()).unwrap();
        tx2.close(&mut lp).unwrap();
        tx.close(&mut lp).unwrap();
        for (r, t) in made {
            r.close(&mut lp).unwrap();
            t.close(&mut lp).unwrap();
        }
        // And children spawn again.
        let status = Rc::new(Cell::new(None));
        let st = status.clone();
        cmd.spawn(&mut lp, move |lp, p, s| {
            st.set(Some(s.unwrap().success()));
            p.close(lp).unwrap();
        })
        .unwrap()
        .stdout
        .unwrap()
        .close(&mut lp)
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got2.borrow().data, b"and new ones too");
        assert_eq!(status.get(), Some(true));
    }
);

case!(
    secs = 60,
    /// One write of 1 GiB: queued without a copy (write_vec), reported once, all delivered.
    fn issue_7_a_one_gibibyte_write() {
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let tx = Pipe::open(&mut lp, OwnedFd::from(w)).unwrap();
        let reader = std::thread::spawn(move || {
            let mut r = File::from(OwnedFd::from(r));
            let mut buf = vec![0u8; 1 << 20];
            let mut sum = Sum::new();
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return sum,
                    Ok(n) => sum.update(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let data: Vec<u8> = (0..1u64 << 30).map(|i| (i % 251) as u8).collect();
        let mut sent = Sum::new();
        sent.update(&data);
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        tx.write_vec(&mut lp, data, move |_, r| {
            r.unwrap();
            c.set(c.get() + 1);
        })
        .unwrap();
        assert!(tx.write_queue_size(&lp).unwrap() > 0);
        tx.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(reader.join().unwrap(), sent);
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn zero_length_writes_complete_in_order() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        for (i, data) in [&b""[..], b"a", b"", &[0u8; 100_000][..], b""].into_iter().enumerate() {
            let o = order.clone();
            tx.write(&mut lp, data, move |_, r| {
                r.unwrap();
                o.borrow_mut().push(i);
            })
            .unwrap();
        }
        let got = Rc::new(Cell::new(0));
        let g = got.clone();
        rx.read_start(&mut lp, move |_, _, ev| {
            if let ReadEvent::Data(d) = ev {
                g.set(g.get() + d.len());
            }
        })
        .unwrap();
        while order.borrow().len() < 5 {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(*order.borrow(), [0, 1, 2, 3, 4], "completions in order, empty ones included");
        rx.close(&mut lp).unwrap();
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

/// Sends `signals` to this process, `per_sec` of them a second, until `stop` is set. Returns
/// how many were sent. The pacing wait is a load generator's rate limit, not a way to
/// synchronize with the code under test.
fn storm(
    signals: &'static [nix::sys::signal::Signal],
    per_sec: u32,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let period = Duration::from_secs(1) / per_sec;
        let start = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let sig = signals[sent as usize % signals.len()];
            nix::sys::signal::kill(nix::unistd::Pid::this(), sig).unwrap();
            sent += 1;
            let due = start + period * sent as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::park_timeout(wait);
            }
        }
        sent
    })
}

case!(
    secs = 120,
    /// Signals at 10k/s while the loop pumps 1 GiB through a pipe and spawns 1,000 children:
    /// the data arrives intact, no EINTR reaches a callback, every child is reaped.
    fn issue_7_signal_storm() {
        use nix::sys::signal::Signal as Sig;
        const TOTAL: u64 = 1 << 30;
        const CHILDREN: u32 = 1000;
        let fds_before = evloop_platform::fd::open_fds().unwrap().len();
        let mut lp = test_loop();
        let caught = Rc::new(Cell::new(0u64));
        let mut watchers = Vec::new();
        for signum in [evloop::signal::SIGUSR1, evloop::signal::SIGWINCH] {
            let s = evloop::Signal::new(&mut lp);
            let c = caught.clone();
            s.start(&mut lp, signum, move |_, _, _| c.set(c.get() + 1)).unwrap();
            s.set_ref(&mut lp, false).unwrap();
            watchers.push(s);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sender = storm(&[Sig::SIGUSR1, Sig::SIGWINCH], 10_000, stop.clone());

        // The pump: a writer thread, the loop reading with a checksum.
        let (r, w) = std::io::pipe().unwrap();
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = File::from(OwnedFd::from(w));
            let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
            let mut sum = Sum::new();
            for _ in 0..TOTAL >> 20 {
                std::io::Write::write_all(&mut w, &block).unwrap();
                sum.update(&block);
            }
            sum
        });
        let got = Rc::new(RefCell::new(Sum::new()));
        let g = got.clone();
        rx.read_start(&mut lp, move |lp, p, ev| match ev {
            ReadEvent::Data(d) => g.borrow_mut().update(d),
            ReadEvent::Eof => p.close(lp).unwrap(),
            ReadEvent::Error(e) => panic!("read error during the storm: {e}"),
        })
        .unwrap();

        // 1,000 children, 20 in flight.
        let exited = Rc::new(Cell::new(0u32));
        fn spawn_one(lp: &mut evloop::Loop, left: Rc<Cell<u32>>, exited: Rc<Cell<u32>>) {
            if left.get() == 0 {
                return;
            }
            left.set(left.get() - 1);
            evloop::Command::new("true")
                .spawn(lp, move |lp, p, status| {
                    let status = status.expect("reaped by the loop");
                    assert!(status.success(), "{status}");
                    exited.set(exited.get() + 1);
                    p.close(lp).unwrap();
                    spawn_one(lp, left.clone(), exited.clone());
                })
                .unwrap_or_else(|e| panic!("spawn during the storm: {e}"));
        }
        let left = Rc::new(Cell::new(CHILDREN));
        for _ in 0..20 {
            spawn_one(&mut lp, left.clone(), exited.clone());
        }
        lp.run(RunMode::Default).unwrap();
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap();
        assert_eq!(*got.borrow(), writer.join().unwrap(), "the checksum matches");
        assert_eq!(exited.get(), CHILDREN, "every child reaped");
        assert!(caught.get() > 0, "signals reached their callbacks");
        for s in watchers {
            s.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        drop(lp);
        let fds_after = evloop_platform::fd::open_fds().unwrap().len();
        assert_eq!(fds_after, fds_before, "fds before and after the storm");
        eprintln!(
            "storm: {sent} signals sent, {} callbacks (the kernel folds a signal sent while one is pending), {CHILDREN} children spawned and reaped, \
             1 GiB checksummed, open fds {fds_before} before and {fds_after} after",
            caught.get()
        );
    }
);

case!(
    /// A child that closes its stdout early: the reader sees end of file while the child
    /// still runs; the exit comes later, on its own.
    fn issue_7_child_closes_stdout_early() {
        let mut lp = test_loop();
        let events = Rc::new(RefCell::new(Vec::new()));
        let e = events.clone();
        let child = evloop::Command::new("sh")
            .args(["-c", "echo before; exec 1>&-; read line; exit 4"])
            .stdin(evloop::Stdio::Pipe)
            .stdout(evloop::Stdio::Pipe)
            .spawn(&mut lp, move |lp, p, st| {
                e.borrow_mut().push(format!("exit {:?}", st.unwrap().code()));
                p.close(lp).unwrap();
            })
            .unwrap();
        let stdin = child.stdin.unwrap();
        let e = events.clone();
        child
            .stdout
            .unwrap()
            .read_start(&mut lp, move |lp, out, ev| match ev {
                ReadEvent::Data(d) => e.borrow_mut().push(String::from_utf8_lossy(d).trim().to_string()),
                ReadEvent::Eof => {
                    e.borrow_mut().push("eof".into());
                    out.close(lp).unwrap();
                    // Only now let the child go on: the EOF did not wait for its exit.
                    stdin.write(lp, b"go\n", |_, r| r.unwrap()).unwrap();
                    stdin.close(lp).unwrap();
                }
                ReadEvent::Error(e) => panic!("{e}"),
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*events.borrow(), ["before", "eof", "exit Some(4)"]);
    }
);

case!(
    /// A child that never reads its stdin: the queue holds exactly what the caller queued
    /// beyond the pipe's capacity, write_queue_size says so, and closing frees it (the writes
    /// are cancelled, once each).
    #[cfg(target_os = "linux")]
    fn issue_7_child_never_reads_stdin() {
        let mut lp = test_loop();
        let child = evloop::Command::new("sleep")
            .arg("100")
            .stdin(evloop::Stdio::Pipe)
            .kill_on_drop(true)
            .spawn(&mut lp, |lp, p, st| {
                assert_eq!(st.unwrap().signal(), Some(evloop::signal::SIGKILL));
                p.close(lp).unwrap();
            })
            .unwrap();
        let stdin = child.stdin.unwrap();
        let capacity =
            nix::fcntl::fcntl(stdin.fd(&lp).unwrap(), nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap() as usize;
        let cancelled = Rc::new(Cell::new(0));
        let total = 4 << 20;
        for _ in 0..4 {
            let c = cancelled.clone();
            stdin
                .write_vec(&mut lp, vec![7u8; 1 << 20], move |_, r| {
                    assert_eq!(evloop::os_error_code(&r.unwrap_err()), Some(nix::libc::ECANCELED));
                    c.set(c.get() + 1);
                })
                .unwrap();
        }
        lp.run(RunMode::NoWait).unwrap();
        assert_eq!(
            stdin.write_queue_size(&lp).unwrap(),
            total - capacity,
            "queued = written - what the pipe holds"
        );
        stdin.close(&mut lp).unwrap();
        child.process.kill(&mut lp, evloop::signal::SIGKILL).unwrap();
        lp.run(RunMode::Default).unwrap();
        // The first write partly went into the pipe; all four still report cancelled once.
        assert_eq!(cancelled.get(), 4);
    }
);

case!(
    /// A child killed in the middle of writing: the reader gets what was written, then end
    /// of file; the status says which signal.
    fn issue_7_child_killed_mid_write() {
        let mut lp = test_loop();
        let status = Rc::new(Cell::new(None));
        let s = status.clone();
        let child = evloop::Command::new("yes")
            .stdout(evloop::Stdio::Pipe)
            .spawn(&mut lp, move |lp, p, st| {
                s.set(st.unwrap().signal());
                p.close(lp).unwrap();
            })
            .unwrap();
        let process = child.process;
        let bytes = Rc::new(Cell::new(0usize));
        let b = bytes.clone();
        let eof = Rc::new(Cell::new(false));
        let e = eof.clone();
        let mut killed = false;
        child
            .stdout
            .unwrap()
            .read_start(&mut lp, move |lp, out, ev| match ev {
                ReadEvent::Data(d) => {
                    assert!(d.chunks(2).all(|c| c[0] == b'y'), "whole lines of y");
                    b.set(b.get() + d.len());
                    if b.get() > 1 << 20 && !killed {
                        process.kill(lp, evloop::signal::SIGKILL).unwrap();
                        killed = true;
                    }
                }
                ReadEvent::Eof => {
                    e.set(true);
                    out.close(lp).unwrap();
                }
                ReadEvent::Error(e) => panic!("{e}"),
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(eof.get() && bytes.get() > 1 << 20);
        assert_eq!(status.get(), Some(evloop::signal::SIGKILL));
    }
);

case!(
    /// A child that forks a grandchild holding the pipe open: the child's exit comes at once,
    /// the pipe's end of file only when the grandchild goes, which kill_group arranges.
    fn issue_7_grandchild_holds_the_pipe() {
        let mut lp = test_loop();
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let child = evloop::Command::new("sh")
            .args(["-c", "sleep 100 & echo started"])
            .stdout(evloop::Stdio::Pipe)
            .process_group(0)
            .spawn(&mut lp, move |lp, p, st| {
                l.borrow_mut().push(format!("child exit {:?}", st.unwrap().code()));
                // The grandchild still holds stdout: end the whole group. The child is gone
                // but its group lives on in the grandchild.
                p.kill_group(lp, evloop::signal::SIGTERM).unwrap();
                p.close(lp).unwrap();
            })
            .unwrap();
        let l = log.clone();
        child
            .stdout
            .unwrap()
            .read_start(&mut lp, move |lp, out, ev| match ev {
                ReadEvent::Data(d) => l.borrow_mut().push(String::from_utf8_lossy(d).trim().to_string()),
                ReadEvent::Eof => {
                    l.borrow_mut().push("eof".into());
                    out.close(lp).unwrap();
                }
                ReadEvent::Error(e) => panic!("{e}"),
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        // The exit and the output race (both are ready together); the end of file comes
        // after both: only the grandchild's death ends the pipe.
        let log = log.borrow();
        assert_eq!(log.len(), 3, "{log:?}");
        assert_eq!(log[2], "eof", "{log:?}");
        assert!(
            log.contains(&"started".to_string()) && log.contains(&"child exit Some(0)".to_string()),
            "{log:?}"
        );
    }
);

case!(
    /// At the fd limit, `posix_spawn` needs no fd, but watching the child does (its pidfd,
    /// or else the loop's signal pipe for SIGCHLD). A spawn that cannot watch its child
    /// used to return `Ok` with a child nobody would reap, and `run` never returned. Now it
    /// fails naming the program, the child is ended and reaped, and with fds free again
    /// the loop spawns and reaps as before.
    fn issue_6_a_child_the_loop_cannot_watch_is_not_left_unreaped() {
        let (soft, _) = evloop_platform::fd::nofile_limit().unwrap();
        let mut lp = test_loop();
        let filler = crate::util::fill_fd_table(8);
        let mut cmd = evloop::Command::new("sleep");
        cmd.arg("0.2");
        let err = cmd.spawn(&mut lp, |_, _, _| panic!("an exit callback for a failed spawn")).unwrap_err();
        drop(filler);
        evloop_platform::fd::set_nofile_soft_limit(soft).unwrap();
        assert_eq!(evloop::os_error_code(&err), Some(nix::libc::EMFILE), "{err}");
        assert!(err.to_string().contains("`sleep`"), "{err}");
        // The internal SIGCHLD watcher that failed to start is not listed.
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
        // Nothing to wait for: `run` returns (the harness checks that no child is left).
        lp.run(RunMode::Default).unwrap();
        // Fds again: spawn and reap as usual.
        let status = Rc::new(Cell::new(None));
        let st = status.clone();
        evloop::Command::new("true")
            .spawn(&mut lp, move |lp, p, s| {
                st.set(Some(s.unwrap().success()));
                p.close(lp).unwrap();
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(status.get(), Some(true));
    }
);

/// Loops that spawn through each path: the default (vfork on Linux), `posix_spawn`, fork.
fn spawn_paths() -> [evloop::LoopBuilder; 3] {
    [
        crate::util::builder(),
        crate::util::builder().force_posix_spawn(true),
        crate::util::builder().force_fork_spawn(true),
    ]
}

case!(
    /// Spawn errors name the step that failed: a child fd whose source cannot move above
    /// the child's fd numbers (the open-file limit) used to say only "Invalid argument", a
    /// process group that cannot be joined only "Operation not permitted" on the
    /// `posix_spawn` path, and a pipe between pipeline stages named no stage.
    fn issue_6_spawn_errors_name_the_step_that_failed() {
        let (soft, _) = evloop_platform::fd::nofile_limit().unwrap();
        let mut lp = test_loop();
        for b in spawn_paths() {
            let mut lp = b.build().unwrap();
            // Room for the loop's own fds and /dev/null, but not above fd 63.
            evloop_platform::fd::set_nofile_soft_limit(64).unwrap();
            let mut cmd = evloop::Command::new("true");
            cmd.fd(63, evloop::Stdio::Null);
            let err = cmd.spawn(&mut lp, |_, _, _| panic!("never spawned")).unwrap_err();
            evloop_platform::fd::set_nofile_soft_limit(soft).unwrap();
            let msg = err.to_string();
            assert!(msg.contains("child fd 63") && msg.contains("open-file limit"), "{msg}");
            assert!(evloop::os_error_code(&err).is_some(), "the OS error is kept: {err:?}");
        }
        // Process group 1 (init's) is another session's: setpgid refuses it.
        for b in spawn_paths() {
            let mut lp = b.build().unwrap();
            let mut cmd = evloop::Command::new("true");
            cmd.process_group(1);
            let err = cmd.spawn(&mut lp, |_, _, _| panic!("never spawned")).unwrap_err();
            assert!(err.to_string().contains("process group 1"), "{err}");
        }
        // The pipe between two stages, at the fd limit.
        let open_now = evloop_platform::fd::open_fds().unwrap().len() as u64;
        evloop_platform::fd::set_nofile_soft_limit(open_now + 2).unwrap();
        let mut filler = Vec::new();
        while let Ok(f) = File::open("/dev/null") {
            filler.push(f);
        }
        let p = evloop::Pipeline::new([evloop::Command::new("true"), evloop::Command::new("cat")]);
        let err = p.spawn(&mut lp, |_, _| panic!("never spawned")).unwrap_err();
        drop(filler);
        evloop_platform::fd::set_nofile_soft_limit(soft).unwrap();
        let msg = err.to_string();
        assert!(msg.contains("stage 1 (`true`) to stage 2 (`cat`)"), "{msg}");
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Out of fds, what the loop failed to make is named: its poller, its signal pipe, a pty
    /// (hostile-environment trial: each was a bare "Too many open files"). The OS error code
    /// stays, and nothing is left behind.
    fn out_of_fds_the_error_names_what_failed() {
        let (soft, _) = evloop_platform::fd::nofile_limit().unwrap();
        let mut lp = test_loop();
        let before = evloop_platform::fd::open_fds().unwrap();
        let filler = crate::util::fill_fd_table(0);
        let err = evloop::Loop::new().unwrap_err();
        assert_eq!(evloop::os_error_code(&err), Some(nix::libc::EMFILE), "{err}");
        assert!(err.to_string().contains("the loop's poller"), "{err}");
        let s = evloop::Signal::new(&mut lp);
        let err = s.start(&mut lp, evloop::signal::SIGUSR1, |_, _, _| {}).unwrap_err();
        assert_eq!(evloop::os_error_code(&err), Some(nix::libc::EMFILE), "{err}");
        assert!(err.to_string().contains("signal pipe"), "{err}");
        let err = evloop::tty::openpty().unwrap_err();
        assert_eq!(evloop::os_error_code(&err), Some(nix::libc::EMFILE), "{err}");
        assert!(err.to_string().contains("openpty"), "{err}");
        drop(filler);
        evloop_platform::fd::set_nofile_soft_limit(soft).unwrap();
        s.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(evloop_platform::fd::open_fds().unwrap(), before);
    }
);

case!(
    /// Child fds just below the open-file limit: their sources move to the numbers above
    /// them, and the fork path's error pipe, which had to go above every child fd too, found
    /// no room there ("Too many open files", naming no fd), while the other paths spawned
    /// (service-manager trial). Each path puts the fd in place; a low child fd that a
    /// fresh pipe would take is kept clear of the error pipe as well, and an exec failure
    /// still comes back through it.
    fn issue_6_a_child_fd_just_below_the_open_file_limit_works_on_every_spawn_path() {
        let (soft, _) = evloop_platform::fd::nofile_limit().unwrap();
        for b in spawn_paths() {
            let mut lp = b.build().unwrap();
            evloop_platform::fd::set_nofile_soft_limit(64).unwrap();
            // The lowest free number, where the error pipe would land.
            let open = evloop_platform::fd::open_fds().unwrap();
            let low = (3..).find(|n| !open.contains(n)).unwrap();
            let mut cmd = evloop::Command::new("sh");
            cmd.args(["-c", &format!("test -e /proc/self/fd/61 && test -e /proc/self/fd/{low}")])
                .fd(61, evloop::Stdio::Null)
                .fd(low, evloop::Stdio::Null);
            let status = Rc::new(Cell::new(None));
            let s = status.clone();
            cmd.spawn(&mut lp, move |lp, p, res| {
                s.set(Some(res.unwrap().code()));
                p.close(lp).unwrap();
            })
            .unwrap();
            lp.run(RunMode::Default).unwrap();
            assert_eq!(status.get(), Some(Some(0)), "fds 61 and {low} in place");
            let mut missing = evloop::Command::new("/nonexistent/program");
            missing.fd(61, evloop::Stdio::Null).fd(low, evloop::Stdio::Null);
            let err = missing.spawn(&mut lp, |_, _, _| panic!("never spawned")).unwrap_err();
            evloop_platform::fd::set_nofile_soft_limit(soft).unwrap();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        }
    }
);
