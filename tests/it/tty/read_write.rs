use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use evloop::{Loop, Pipe, ReadEvent, RunMode, Tty, TtyMode, WinSize};

use crate::pipe::pattern;
use crate::util::test_loop;

use super::*;

case!(
    fn keystrokes_on_the_master_reach_the_read_callback() {
        let mut lp = test_loop();
        let p = pty();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let got = collect(&mut lp, tty, 7);
        // Enter stays \r (no ICRNL), Ctrl-C is a byte (no ISIG), no line is needed (no ICANON).
        write_master(p.master.as_fd(), b"ab\r\x03\x1b[A");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"ab\r\x03\x1b[A");
        // Nothing was echoed back to the master.
        assert!(!evloop_platform::fd::poll_readable(p.master.as_fd(), Some(Duration::ZERO)).unwrap());
        close_all(&mut lp);
    }
);

case!(
    /// TIOCSWINSZ on the master, then SIGWINCH: the callback gets the new size. The
    /// internal signal handle keeps nothing alive and goes with the tty.
    fn resize_reaches_the_callback_with_the_new_size() {
        let mut lp = test_loop();
        let p = pty();
        let first = WinSize { rows: 24, cols: 80, x_pixels: 0, y_pixels: 0 };
        evloop_platform::termios::set_winsize(p.master.as_fd(), first).unwrap();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        assert_eq!(tty.winsize(&lp).unwrap(), first);

        let sizes = Rc::new(RefCell::new(Vec::new()));
        let s = sizes.clone();
        tty.on_resize(&mut lp, move |lp, tty, size| {
            s.borrow_mut().push(size);
            tty.close(lp).unwrap();
        })
        .unwrap();
        let listed: Vec<_> = lp.handles().iter().map(|h| h.kind).collect();
        assert_eq!(listed, [evloop::HandleKind::Tty], "the internal signal handle is not listed");
        // Unreferenced: a tty with only a resize callback does not keep the loop running.
        assert!(!lp.run(RunMode::Default).unwrap());
        assert!(sizes.borrow().is_empty());

        // Reading keeps the loop alive until the resize callback closes the tty.
        tty.read_start(&mut lp, |_, _, ev| panic!("no input expected: {ev:?}")).unwrap();
        let second = WinSize { rows: 40, cols: 100, x_pixels: 800, y_pixels: 640 };
        evloop_platform::termios::set_winsize(p.master.as_fd(), second).unwrap();
        evloop::signal::raise(evloop::signal::SIGWINCH).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*sizes.borrow(), [second]);
        assert!(lp.handles().is_empty(), "the internal signal handle closed with the tty");
    }
);

/// A pty with a raw slave, and a tty handle on its master: (master handle, slave).
fn raw_pty_master(lp: &mut Loop) -> (Tty, OwnedFd) {
    let (master, slave) = evloop::tty::openpty().unwrap();
    make_raw(&slave);
    (Tty::open(lp, master).unwrap(), slave)
}

/// Results of writes: `Ok`, or the error's OS code.
type WriteResults = Rc<RefCell<Vec<Result<(), Option<i32>>>>>;

/// Queues a 1 MiB write on `tty`, its result recorded in `results`.
fn write_mib(lp: &mut Loop, tty: Tty, results: &WriteResults) {
    let r = results.clone();
    tty.write(lp, &[b'z'; 1 << 20], move |_, res| {
        r.borrow_mut().push(res.map_err(|e| evloop::os_error_code(&e)))
    })
    .unwrap();
}

case!(
    /// Writes queued on a pty master fail with `EIO` once the slave side has closed (a child
    /// that exits without reading its input), whether or not the master is read. A pty
    /// master answers such writes with `EAGAIN` and stays ready with the hangup: the loop
    /// spun with the writes queued, and `run` never returned.
    fn issue_5_queued_writes_to_a_pty_master_fail_once_its_slave_closes() {
        for reading in [false, true] {
            // The select helper hears of a hangup as readability only: through a read.
            if !reading && crate::util::forced_select() {
                continue;
            }
            let mut lp = test_loop();
            let (master, slave) = raw_pty_master(&mut lp);
            let results = WriteResults::default();
            for _ in 0..2 {
                write_mib(&mut lp, master, &results);
            }
            assert!(master.write_queue_size(&lp).unwrap() > 1 << 20, "the pty holds less than 1 MiB");
            let eof = Rc::new(Cell::new(false));
            if reading {
                let e = eof.clone();
                master
                    .read_start(&mut lp, move |_, _, ev| match ev {
                        ReadEvent::Eof => e.set(true),
                        other => panic!("{other:?}"),
                    })
                    .unwrap();
            }
            drop(slave);
            lp.run(RunMode::Default).unwrap();
            let results = results.borrow();
            assert_eq!(results.len(), 2, "reading: {reading}");
            assert_eq!(results[1], Err(Some(nix::libc::EIO)), "reading: {reading}");
            assert!(
                matches!(results[0], Ok(()) | Err(Some(nix::libc::EIO))),
                "reading: {reading}: {results:?}"
            );
            assert_eq!(master.write_queue_size(&lp).unwrap(), 0);
            assert_eq!(eof.get(), reading);
            master.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
        }
    }
);

case!(
    /// Writes queued on a pty master whose slave closed fail with `EIO` even when the read
    /// callback closes the handle at end of file (as most readers do): the failure came
    /// after that callback, and the close turned it into "cancelled".
    fn issue_5_queued_writes_fail_with_eio_when_the_eof_callback_closes_the_master() {
        let mut lp = test_loop();
        let (master, slave) = raw_pty_master(&mut lp);
        let results = WriteResults::default();
        for _ in 0..2 {
            write_mib(&mut lp, master, &results);
        }
        assert!(master.write_queue_size(&lp).unwrap() > 1 << 20, "the pty holds less than 1 MiB");
        master
            .read_start(&mut lp, move |lp, m, ev| match ev {
                ReadEvent::Eof => m.close(lp).unwrap(),
                other => panic!("{other:?}"),
            })
            .unwrap();
        drop(slave);
        lp.run(RunMode::Default).unwrap();
        let results = results.borrow();
        assert_eq!(results.len(), 2);
        assert_eq!(results[1], Err(Some(nix::libc::EIO)), "{results:?}");
        assert!(matches!(results[0], Ok(()) | Err(Some(nix::libc::EIO))), "{results:?}");
        assert!(lp.handles().is_empty());
    }
);

case!(
    /// Writes queued on a pty master after its hangup was read (from the end-of-file
    /// callback, and later) fail with `EIO`: through the select helper, which hears of the
    /// hangup only through that read, they waited for good and `run` never returned
    /// (review).
    fn issue_5_writes_queued_after_a_pty_masters_hangup_fail() {
        // Both ways whatever the run's mode: epoll hears of the hangup on its own.
        for select in [false, true] {
            let mut lp = crate::util::builder().force_select_helper(select).build().unwrap();
            let (master, slave) = raw_pty_master(&mut lp);
            let results = WriteResults::default();
            let r = results.clone();
            master
                .read_start(&mut lp, move |lp, m, ev| match ev {
                    ReadEvent::Eof => {
                        // One now, one from a later iteration.
                        write_mib(lp, m, &r);
                        let r = r.clone();
                        evloop::Timer::once(lp, Duration::ZERO, move |lp| write_mib(lp, m, &r)).unwrap();
                    }
                    other => panic!("{other:?}"),
                })
                .unwrap();
            drop(slave);
            lp.run(RunMode::Default).unwrap();
            let eio = Err(Some(nix::libc::EIO));
            assert_eq!(*results.borrow(), [eio, eio], "select helper: {select}");
            master.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(lp.handles().is_empty());
        }
    }
);

case!(
    /// A small write to a pty master whose hangup a read had seen completed as if it went
    /// through (Linux keeps what fits for whoever opens the slave next, maybe nobody), and a
    /// `send` or `try_write` of a few bytes returned success, while a large write failed
    /// with `EIO` (expect-tool trial):
    /// each fails with `EIO` at once now, whatever its size, and a write queued behind
    /// nothing is not needed for it. Direct and through the select helper.
    fn issue_5_a_small_write_to_a_master_that_hung_up_fails_at_once() {
        for select in [false, true] {
            let mut lp = crate::util::builder().force_select_helper(select).build().unwrap();
            let (master, slave) = raw_pty_master(&mut lp);
            master.read_start(&mut lp, |_, _, ev| assert!(matches!(ev, ReadEvent::Eof), "{ev:?}")).unwrap();
            drop(slave);
            lp.run(RunMode::Default).unwrap();
            let results = WriteResults::default();
            let r = results.clone();
            master
                .write(&mut lp, b"anyone there?\r", move |_, res| {
                    r.borrow_mut().push(res.map_err(|e| evloop::os_error_code(&e)))
                })
                .unwrap();
            let sent = master.send(&mut lp, b"z").unwrap_err();
            let tried = master.try_write(&mut lp, b"z").unwrap_err();
            for e in [&sent, &tried] {
                assert_eq!(evloop::os_error_code(e), Some(libc::EIO), "select helper {select}: {e}");
                assert!(e.to_string().contains("hung up"), "{e}");
            }
            assert!(results.borrow().is_empty(), "the callback waits for the pending phase");
            lp.run(RunMode::Default).unwrap();
            assert_eq!(*results.borrow(), [Err(Some(libc::EIO))], "select helper {select}");
            master.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert!(lp.handles().is_empty());
        }
    }
);

case!(
    /// `try_write` on a master whose slave hung up (as a read found) took bytes the kernel
    /// dropped, then said "would block" for good, where `write` failed with `EIO` (pty-proxy
    /// trial): it fails with `EIO` now too, from the first call.
    fn issue_5_try_write_to_a_hung_up_master_fails_as_write_does() {
        let mut lp = test_loop();
        let (master, slave) = evloop::tty::openpty().unwrap();
        let master = Tty::open(&mut lp, master).unwrap();
        master.read_start(&mut lp, |_, _, ev| assert!(matches!(ev, ReadEvent::Eof), "{ev:?}")).unwrap();
        drop(slave);
        lp.run(RunMode::Default).unwrap();
        let e = master.try_write(&mut lp, &[b'z'; 4096]).unwrap_err();
        assert_eq!(evloop::os_error_code(&e), Some(libc::EIO), "{e}");
        assert!(e.to_string().contains("hung up"), "{e}");
        master.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// A master whose slave hung up takes writes again once the slave is opened again by
    /// name (a new session on the pty, as a getty opens it): the hang-up seen by a read
    /// made every later queued write fail (review).
    fn issue_5_a_master_takes_writes_again_once_its_slave_is_reopened() {
        let mut lp = test_loop();
        let (master, slave) = evloop::tty::openpty().unwrap();
        let name = evloop_platform::termios::ttyname(slave.as_fd()).unwrap();
        let master = Tty::open(&mut lp, master).unwrap();
        let eof = Rc::new(Cell::new(false));
        let e = eof.clone();
        master
            .read_start(&mut lp, move |_, _, ev| match ev {
                ReadEvent::Eof => e.set(true),
                other => panic!("{other:?}"),
            })
            .unwrap();
        drop(slave);
        lp.run(RunMode::Default).unwrap();
        assert!(eof.get());
        // Opened again, raw, and drained by a thread.
        let again = evloop_platform::fd::open(&name, evloop_platform::fd::Access::ReadWrite, false).unwrap();
        make_raw(&again);
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut total = 0;
            while total < 1 << 20 {
                match nix::unistd::read(&again, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        let result = Rc::new(RefCell::new(None));
        let r = result.clone();
        master
            .write(&mut lp, &[b'z'; 1 << 20], move |_, res| {
                *r.borrow_mut() = Some(res.map_err(|e| evloop::os_error_code(&e)));
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*result.borrow(), Some(Ok(())));
        // (The master stays open until the slave has read it all: its close would hang up
        // the pty, and the kernel drop what the slave has not read.)
        assert_eq!(reader.join().unwrap(), 1 << 20);
        master.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    secs = 60,
    /// A child writes 64 KiB to the slave and exits: the master delivers every byte, then
    /// end of file (Linux's EIO), and nothing is lost at the hang-up (libuv#4992, #4997).
    fn issue_5_a_pty_master_delivers_everything_before_eof() {
        const TOTAL: usize = 64 * 1024;
        let mut lp = test_loop();
        let p = pty();
        // No output processing: the bytes arrive as written.
        make_raw(&p.probe);
        drop(p.probe);
        let dir = std::env::temp_dir().join(format!("evloop-tty-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data");
        let data = pattern(5, TOTAL);
        File::create(&path).unwrap().write_all(&data).unwrap();

        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "cat \"$0\"", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(p.slave));
        let mut child = cmd.spawn().unwrap();
        drop(cmd); // our copy of the slave: the child now holds the only one

        let master = Tty::open(&mut lp, p.master).unwrap();
        let got = collect(&mut lp, master, 0);
        lp.run(RunMode::Default).unwrap();
        assert!(child.wait().unwrap().success());
        let got = got.borrow();
        assert_eq!(got.data.len(), TOTAL);
        assert!(got.data == data, "the bytes arrived in order");
        assert!(got.eof, "then end of file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
);

/// Warnings logged while a test runs (a logger of its own: each test is a process).
static WARNINGS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct WarningLog;

impl log::Log for WarningLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            WARNINGS.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

case!(
    /// Closing the handle of a pty slave whose master has closed (a pane that ended) warned
    /// that restoring its settings failed (`EIO`) once per pane: a hung-up terminal has
    /// nothing to restore, as `reset_mode` already knew.
    fn issue_5_closing_a_hung_up_terminals_handle_warns_of_nothing() {
        log::set_logger(&WarningLog).unwrap();
        log::set_max_level(log::LevelFilter::Warn);
        let mut lp = test_loop();
        let p = pty();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        drop(p.master);
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*WARNINGS.lock().unwrap(), Vec::<String>::new());
    }
);

case!(
    /// Closing a master's handle closes its pty, whatever other masters are open: the
    /// restore registry, which tells descriptions apart by file, took every master for one
    /// (all are `/dev/ptmx`), and a handle on an already nonblocking master joined the
    /// registration of another, whose duplicate then kept that pty open after its own
    /// handle closed: no hang-up for its child (review).
    fn issue_5_closing_a_masters_handle_hangs_up_its_pty_whatever_other_masters_are_open() {
        let mut lp = test_loop();
        let (a_master, a_slave) = evloop::tty::openpty().unwrap();
        let (c_master, _c_slave) = evloop::tty::openpty().unwrap();
        evloop_platform::fd::set_nonblocking(c_master.as_fd(), true).unwrap();
        let a = Tty::open(&mut lp, a_master).unwrap();
        let c = Pipe::open(&mut lp, c_master).unwrap();
        a.close(&mut lp).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        // A's slave sees the hang-up: a read ends (EIO on Linux), it does not wait for data.
        evloop_platform::fd::set_nonblocking(a_slave.as_fd(), true).unwrap();
        let mut buf = [0u8; 16];
        let r = nix::unistd::read(&a_slave, &mut buf);
        assert!(!matches!(r, Err(nix::errno::Errno::EAGAIN)), "the pty is still open: {r:?}");
        c.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// `end` finishes any output (pv/tee trial): a write-only pipe's write side closes, and
    /// its reader sees end of file; a terminal, whose `shutdown` is `Unsupported` (and took
    /// the callback with it), gets its queue drained, then the callback. A callback that
    /// owns its state (an `Rc`) runs exactly once either way.
    fn issue_3_end_closes_a_pipe_and_drains_a_terminal() {
        let mut lp = test_loop();
        let ran = Rc::new(Cell::new(0));
        // A pipe: shut down, so the reader gets everything, then end of file.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let got = crate::pipe::collect(&mut lp, rx);
        tx.send(&mut lp, b"last words").unwrap();
        let r = ran.clone();
        tx.end(&mut lp, move |lp, res| {
            res.unwrap();
            r.set(r.get() + 1);
            tx.close(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!((&got.borrow().data[..], got.borrow().eof), (&b"last words"[..], true));
        assert_eq!(ran.get(), 1);
        // A terminal: no half-close, so a drain; the bytes are out when the callback runs.
        let p = pty();
        let tty = Tty::open(&mut lp, p.slave.try_clone().unwrap()).unwrap();
        let err = tty.shutdown(&mut lp, |_, _| unreachable!()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        let big = pattern(3, 200_000);
        let master = p.master.try_clone().unwrap();
        let r = ran.clone();
        tty.send(&mut lp, &big).unwrap();
        assert!(tty.write_queue_size(&lp).unwrap() > 0, "the pty holds less than was sent");
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            let mut buf = [0u8; 65536];
            while n < 200_000 {
                n += nix::unistd::read(&master, &mut buf).unwrap();
            }
            n
        });
        tty.end(&mut lp, move |lp, res| {
            res.unwrap();
            assert_eq!(tty.write_queue_size(lp).unwrap(), 0, "all out before the callback");
            r.set(r.get() + 1);
            tty.close(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(ran.get(), 2);
        assert!(reader.join().unwrap() >= 200_000);
    }
);
