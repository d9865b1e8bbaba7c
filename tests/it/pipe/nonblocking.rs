use std::cell::Cell;
#[cfg(target_os = "linux")]
use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::rc::Rc;
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
use std::time::Duration;

use evloop::{Command, Pipe, RunMode, Stdio};
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
use evloop::{ReadEvent, Timer};

use crate::util::test_loop;

use super::*;

case!(
    /// (A named FIFO: see `fifo_pair`.)
    fn opening_a_shared_fd_restores_its_blocking_mode() {
        use std::os::fd::AsFd;
        let mut lp = test_loop();
        let (r, w) = crate::util::fifo_pair();
        // A second fd on the same open file description, as a shell's stdin would be.
        let shared = r.as_fd().try_clone_to_owned().unwrap();
        let rx = Pipe::open(&mut lp, r).unwrap();
        assert!(evloop_platform::fd::status_flags(shared.as_fd()).unwrap().nonblocking, "while open");
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(!evloop_platform::fd::status_flags(shared.as_fd()).unwrap().nonblocking, "restored on close");
        drop(w);
    }
);

case!(
    /// Two handles on one shared description (stdout and stderr after `2>&1`): the first
    /// sets `O_NONBLOCK`, and closing it must not clear the flag under the second, whose
    /// writes would then block the loop. (A packet-mode pipe: see `packet_pipe`.)
    fn two_handles_on_one_description_keep_it_nonblocking_until_the_last_closes() {
        use std::os::fd::AsFd;
        let nonblocking = |fd: &OwnedFd| evloop_platform::fd::status_flags(fd.as_fd()).unwrap().nonblocking;
        for close_first_opened_first in [true, false] {
            let mut lp = test_loop();
            let (r, w) = crate::util::packet_pipe();
            let stderr = w.try_clone().unwrap();
            let watch = w.try_clone().unwrap();
            let out = Pipe::open(&mut lp, w).unwrap();
            let err = Pipe::open(&mut lp, stderr).unwrap();
            assert!(nonblocking(&watch));
            let (first, second) = if close_first_opened_first { (out, err) } else { (err, out) };
            first.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(nonblocking(&watch), "still nonblocking under the other handle");
            // So a write bigger than the pipe is queued, not blocking.
            second.write_vec(&mut lp, vec![7; 1 << 20], |_, r| r.unwrap()).unwrap();
            assert!(second.write_queue_size(&lp).unwrap() > 0);
            // (`watch` keeps the write side open: read the bytes, not to end of file.)
            let reader = std::thread::spawn(move || {
                let mut all = vec![0; 1 << 20];
                std::io::Read::read_exact(&mut File::from(r), &mut all).unwrap();
                all.iter().all(|&b| b == 7)
            });
            lp.run(RunMode::Default).unwrap();
            assert!(reader.join().unwrap());
            second.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(!nonblocking(&watch), "blocking again after the last close");
        }
    }
);

/// A program opens its stdout (shared with the shell, and with the children that inherit
/// it) as a pipe handle and writes through it while a child writes to the shared description
/// and nobody reads yet: the child's writes must block, as it expects, not fail with
/// `EAGAIN`; and every byte of both arrives. `r` and `w` are the two ends of a blocking pipe
/// or socket; returns whether the handle's own fd is nonblocking.
fn write_beside_a_child_on_a_shared_stdout(r: OwnedFd, w: OwnedFd) -> bool {
    use std::os::fd::AsFd;
    let nonblocking = |fd: BorrowedFd<'_>| evloop_platform::fd::status_flags(fd).unwrap().nonblocking;
    const OURS: usize = 1 << 20;
    const THEIRS: usize = 3_000_000;
    let mut lp = test_loop();
    let shared = w.try_clone().unwrap();
    let out = Pipe::open(&mut lp, w).unwrap();
    assert!(!nonblocking(shared.as_fd()), "the shared description stays blocking");
    let own_nonblocking = nonblocking(out.fd(&lp).unwrap());
    // The pipe fills up, and nobody reads yet. (Two writes: the queue is flushed with one
    // call for both, `writev` or `sendmsg`.)
    out.write_vec(&mut lp, vec![b'a'; OURS / 2], |_, r| r.unwrap()).unwrap();
    out.write_vec(&mut lp, vec![b'a'; OURS / 2], move |lp, r| {
        r.unwrap();
        out.close(lp).unwrap();
    })
    .unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("head -c {THEIRS} /dev/zero")]).stdout(Stdio::Fd(shared));
    let status = Rc::new(Cell::new(None));
    let st = status.clone();
    cmd.spawn(&mut lp, move |lp, p, r| {
        st.set(Some(r.unwrap()));
        p.close(lp).unwrap();
    })
    .unwrap();
    drop(cmd); // Its copy of the shared fd: the reader's end of file needs every one closed.
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut File::from(r), &mut all).unwrap();
        all.len()
    });
    lp.run(RunMode::Default).unwrap();
    assert_eq!(reader.join().unwrap(), OURS + THEIRS, "every byte of both writers");
    assert!(status.get().unwrap().success(), "the child's writes blocked, not failed");
    own_nonblocking
}

case!(
    /// A pipe gets a description of its own on Linux, through `/proc/self/fd`.
    #[cfg(target_os = "linux")]
    fn issue_3_an_opened_pipe_leaves_the_shared_description_blocking() {
        let (r, w) = std::io::pipe().unwrap();
        assert!(
            write_beside_a_child_on_a_shared_stdout(r.into(), w.into()),
            "the handle's own is nonblocking"
        );
    }
);

case!(
    /// A named FIFO's write end (`prog > fifo`) gets a description of its own on Linux too.
    #[cfg(target_os = "linux")]
    fn issue_3_an_opened_fifo_writer_leaves_the_shared_description_blocking() {
        let (r, w) = crate::util::fifo_pair();
        assert!(write_beside_a_child_on_a_shared_stdout(r, w), "the handle's own is nonblocking");
    }
);

case!(
    /// A build tool's jobserver on a named FIFO open for both reading and writing (make
    /// 4.4's `fifo:` style), opened as a handle and also given to its jobs as fd 3: the jobs
    /// read it blocking, so its shared description must stay blocking. It used to get
    /// `O_NONBLOCK` (only write-only FIFO ends got a description of their own), and a job's
    /// read of an empty jobserver failed with `EAGAIN` (jobserver trial).
    #[cfg(target_os = "linux")]
    fn issue_3_a_jobserver_fifo_open_for_both_stays_blocking_for_the_jobs() {
        use std::os::fd::AsFd;
        let dir = std::env::temp_dir().join(format!("evloop-jobserver-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fifo: OwnedFd = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap().into();
        std::fs::remove_dir_all(&dir).unwrap();
        let nonblocking = |fd: &OwnedFd| evloop_platform::fd::status_flags(fd.as_fd()).unwrap().nonblocking;
        let mut lp = test_loop();
        let jobserver = Pipe::open(&mut lp, fifo.try_clone().unwrap()).unwrap();
        assert!(!nonblocking(&fifo), "the jobs' description stays blocking");
        assert!(!jobserver.shares_nonblocking(&lp).unwrap());
        // A job takes a token with a blocking read, whether or not it is there yet. Once it
        // is done, another gives one back, which the tool reads through its handle.
        let mut job = Command::new("sh");
        job.args(["-c", "head -c 1 <&3"]).fd(3, Stdio::Fd(fifo.try_clone().unwrap()));
        let mut give_back = Command::new("sh");
        give_back.args(["-c", "printf r >&3"]).fd(3, Stdio::Fd(fifo.try_clone().unwrap()));
        let out = Rc::new(RefCell::new(None));
        let returned = Rc::new(RefCell::new(Vec::new()));
        let (o, r) = (out.clone(), returned.clone());
        job.output(&mut lp, move |lp, res| {
            *o.borrow_mut() = Some(res.unwrap());
            give_back
                .spawn(lp, |lp, p, st| {
                    assert!(st.unwrap().success());
                    p.close(lp).unwrap();
                })
                .unwrap();
            jobserver
                .read_start(lp, move |lp, h, ev| match ev {
                    ReadEvent::Data(d) => {
                        r.borrow_mut().extend_from_slice(d);
                        h.close(lp).unwrap();
                    }
                    ReadEvent::Eof => panic!("jobserver: end of file"),
                    ReadEvent::Error(e) => panic!("jobserver: {e}"),
                })
                .unwrap();
        })
        .unwrap();
        jobserver.write(&mut lp, b"t", |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        let out = out.borrow_mut().take().expect("the job ran");
        assert!(out.status.success(), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, b"t", "the job got the token");
        assert_eq!(*returned.borrow(), b"r", "the tool got the job's token");
        assert!(!nonblocking(&fifo), "still blocking after the close");
    }
);

case!(
    /// A socket (a service manager's stdout) stays blocking on Linux and FreeBSD: the handle
    /// reads and writes it with `MSG_DONTWAIT`. It used to get `O_NONBLOCK`, and a child writing to the
    /// same stdout lost its output to `EAGAIN`.
    fn issue_3_an_opened_socket_leaves_the_shared_description_blocking() {
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!write_beside_a_child_on_a_shared_stdout(r.into(), w.into()), "one description, blocking");
    }
);

case!(
    /// A blocking socket read and written with `MSG_DONTWAIT` (Linux, FreeBSD): no call may
    /// block the loop while the other side is not reading. A read that fills the cap is
    /// followed by one that finds nothing; `try_write` stops at `WouldBlock`; a flush of two
    /// queued writes (one `sendmsg`) sends what fits and returns. Any of them blocking would
    /// hang the test until its watchdog ends it.
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    fn issue_3_a_blocking_socket_never_blocks_the_loop() {
        use std::io::Read;
        const CAP: usize = 4096;
        const QUEUED: usize = 1 << 20;
        let mut lp = test_loop();
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let h = Pipe::open(&mut lp, ours.into()).unwrap();
        h.set_read_cap(&mut lp, CAP).unwrap();
        peer.write_all(&[1; CAP]).unwrap();
        let got = Rc::new(Cell::new(0));
        let g = got.clone();
        h.read_start(&mut lp, move |_, _, ev| {
            if let ReadEvent::Data(d) = ev {
                g.set(g.get() + d.len());
            }
        })
        .unwrap();
        while got.get() < CAP {
            lp.run(RunMode::NoWait).unwrap();
        }
        let mut sent = 0;
        loop {
            match h.try_write(&mut lp, &[2; CAP]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("try_write: {e}"),
            }
        }
        let done = Rc::new(Cell::new(0));
        for _ in 0..2 {
            let d = done.clone();
            h.write_vec(&mut lp, vec![3; QUEUED], move |_, r| {
                r.unwrap();
                d.set(d.get() + 1);
            })
            .unwrap();
        }
        // The peer takes what try_write sent and a little of the queue, then stops reading
        // until told: the flush that follows finds room for part of the two writes only.
        let (partial_tx, partial_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut all = vec![0; sent + 2 * QUEUED];
            let first = sent + CAP;
            peer.read_exact(&mut all[..first]).unwrap();
            partial_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            peer.read_exact(&mut all[first..]).unwrap();
            all[..sent].iter().all(|&b| b == 2) && all[sent..].iter().all(|&b| b == 3)
        });
        while partial_rx.try_recv().is_err() {
            lp.run(RunMode::NoWait).unwrap();
        }
        // With the peer stalled, the loop still serves a timer.
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        Timer::once(&mut lp, Duration::ZERO, move |_| f.set(true)).unwrap();
        while !fired.get() {
            lp.run(RunMode::NoWait).unwrap();
        }
        assert!(done.get() < 2, "the queue cannot have gone out yet");
        go_tx.send(()).unwrap();
        while done.get() < 2 {
            lp.run(RunMode::Once).unwrap();
        }
        assert!(reader.join().unwrap(), "every byte, in order");
        h.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// A process that ends with a pipe handle open on a shared, blocking description (its
    /// stdin, inherited from a shell) must not leave `O_NONBLOCK` behind for the shell:
    /// killed by `SIGTERM` with the restore hooks installed, or by `exit`, it is cleared.
    /// Without the hooks a signal death leaves it set (the control: what the hooks fix).
    fn issue_3_a_shared_description_is_blocking_again_when_the_process_ends() {
        use std::os::fd::AsFd;
        use std::os::unix::process::ExitStatusExt;
        let nonblocking = |fd: &OwnedFd| evloop_platform::fd::status_flags(fd.as_fd()).unwrap().nonblocking;
        for how in ["hooks", "exit", "none"] {
            // A named FIFO: see `fifo_pair`.
            let (r, w) = crate::util::fifo_pair();
            let mut w = File::from(w);
            // The test's own fd on the child's stdin description, as the shell's would be.
            let shared = r.try_clone().unwrap();
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["pipe::shared_description_child", "--exact", "--ignored", "--nocapture", "-q"])
                .env(SHARED_CHILD_ENV, how)
                .stdin(r)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let out = child.stdout.take().unwrap();
            let mut seen = Vec::new();
            let mut wait_for = |needle: &str| crate::util::read_until(out.as_fd(), &mut seen, needle);
            w.write_all(b"ping").unwrap();
            wait_for("got ping");
            assert!(
                nonblocking(&shared),
                "{how}: the child's handle made the shared description nonblocking"
            );
            let status = if how == "exit" {
                w.write_all(b"exit").unwrap();
                wait_for("got exit");
                child.wait().unwrap()
            } else {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::SIGTERM,
                )
                .unwrap();
                let status = child.wait().unwrap();
                assert_eq!(status.signal(), Some(libc::SIGTERM), "{how}: still dies by the signal");
                status
            };
            assert!(how != "exit" || status.success(), "{how}: {status}");
            assert_eq!(nonblocking(&shared), how == "none", "{how}: O_NONBLOCK after the child ended");
        }
    }
);

case!(
    /// `shares_nonblocking` tells whether the program's own writes to the description a
    /// handle shares can fail with `EAGAIN`: a stream tool's `eprintln!` panicked after `2>&1`
    /// on a description its stdout handle had to make nonblocking, with nothing to ask
    /// beforehand.
    fn issue_3_shares_nonblocking_tells_when_the_programs_own_writes_can_fail() {
        use std::os::fd::AsFd;
        let mut lp = test_loop();
        // A packet-mode pipe keeps its description (see `packet_pipe`).
        let (r, w) = crate::util::packet_pipe();
        let stderr = w.try_clone().unwrap(); // `2>&1`
        let out = Pipe::open(&mut lp, w).unwrap();
        assert!(out.shares_nonblocking(&lp).unwrap());
        // What it warns of: the other fd's writes fail once the pipe is full.
        let mut stderr = File::from(stderr);
        let full = loop {
            if let Err(e) = stderr.write_all(&[b'e'; 4096]) {
                break e;
            }
        };
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
        // A pair the loop made is nobody else's; a regular file is left blocking, also when
        // the select helper is forced to serve it (it set the flag there: picker trial).
        let (a, b) = Pipe::pair(&mut lp).unwrap();
        assert!(!a.shares_nonblocking(&lp).unwrap() && !b.shares_nonblocking(&lp).unwrap());
        let exe = File::open(std::env::current_exe().unwrap()).unwrap();
        let file = Pipe::open(&mut lp, exe.try_clone().unwrap().into()).unwrap();
        assert!(!file.shares_nonblocking(&lp).unwrap());
        assert!(!evloop_platform::fd::status_flags(exe.as_fd()).unwrap().nonblocking);
        // On Linux a blocking pipe gets a description of its own.
        #[cfg(target_os = "linux")]
        {
            let (_pr, pw) = std::io::pipe().unwrap();
            let private = Pipe::open(&mut lp, OwnedFd::from(pw)).unwrap();
            assert!(!private.shares_nonblocking(&lp).unwrap());
            private.close(&mut lp).unwrap();
        }
        for h in [out, a, b, file] {
            h.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert!(out.shares_nonblocking(&lp).is_err(), "a closed handle is an error");
        assert!(!evloop_platform::fd::status_flags(stderr.as_fd()).unwrap().nonblocking, "blocking again");
        drop(r);
    }
);

case!(
    /// A terminal reopened privately shares nothing. A pty master cannot be reopened: as a
    /// tty or a pipe handle, it takes the flag on the shared description.
    fn issue_3_shares_nonblocking_on_terminals() {
        let mut lp = test_loop();
        let (master, slave) = evloop::tty::openpty().unwrap();
        let as_pipe = master.try_clone().unwrap();
        let tty = evloop::Tty::open(&mut lp, slave).unwrap();
        assert!(!tty.shares_nonblocking(&lp).unwrap());
        let m = evloop::AnyStream::open(&mut lp, master).unwrap();
        assert!(!m.as_tty().unwrap().writes_block(&lp).unwrap());
        assert!(m.shares_nonblocking(&lp).unwrap());
        let p = Pipe::open(&mut lp, as_pipe).unwrap();
        assert!(p.shares_nonblocking(&lp).unwrap());
        for h in [tty.into(), m, p.into()] {
            evloop::AnyStream::close(h, &mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Two handles on one shared description, opened once `SHARED_NONBLOCKING_MAX` others
    /// had filled the process's registry of descriptions set nonblocking: closing the first
    /// cleared `O_NONBLOCK` under the second, whose next big write then blocked the loop.
    /// Now the last to close clears it.
    fn issue_3_past_a_full_nonblocking_registry_the_last_handle_clears_the_flag() {
        let nonblocking = |fd: &OwnedFd| {
            use std::os::fd::AsFd;
            evloop_platform::fd::status_flags(fd.as_fd()).unwrap().nonblocking
        };
        let mut lp = test_loop();
        let fill: Vec<(Pipe, OwnedFd)> = (0..evloop_platform::fd::SHARED_NONBLOCKING_MAX)
            .map(|_| {
                let (r, w) = crate::util::fifo_pair();
                (Pipe::open(&mut lp, r).unwrap(), w)
            })
            .collect();
        assert!(fill.iter().all(|(p, _)| p.shares_nonblocking(&lp).unwrap()));
        let (r, _w) = crate::util::fifo_pair();
        let probe = r.try_clone().unwrap();
        let first = Pipe::open(&mut lp, r.try_clone().unwrap()).unwrap();
        let second = Pipe::open(&mut lp, r).unwrap();
        assert!(nonblocking(&probe));
        first.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(nonblocking(&probe), "kept for the second handle");
        second.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(!nonblocking(&probe), "cleared by the last");
        for (p, _) in &fill {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);
