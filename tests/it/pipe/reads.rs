use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use evloop::{Idle, Loop, Pipe, ReadEvent, RunMode, Timer};

use crate::util::test_loop;

use super::*;

case!(
    fn small_transfer_then_eof() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let got = collect(&mut lp, rx);
        let done = Rc::new(Cell::new(0));
        for chunk in [&b"hello "[..], b"world", b""] {
            let d = done.clone();
            tx.write(&mut lp, chunk, move |_, r| {
                r.unwrap();
                d.set(d.get() + 1);
            })
            .unwrap();
        }
        assert_eq!(done.get(), 0, "completions never run inside write()");
        tx.shutdown(&mut lp, |lp, r| r.unwrap_or_else(|e| panic!("shutdown: {e} {lp:?}"))).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(done.get(), 3);
        let got = got.borrow();
        assert_eq!(got.data, b"hello world");
        assert!(got.eof && got.errors.is_empty());
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    secs = 120,
    /// 1 GiB from a writer thread, checksummed on both sides.
    fn one_gibibyte_with_a_checksum() {
        const TOTAL: u64 = 1 << 30;
        const BLOCK: usize = 1 << 20;
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = File::from(OwnedFd::from(w));
            let block = pattern(7, BLOCK);
            let mut sum = Sum::new();
            for _ in 0..TOTAL / BLOCK as u64 {
                w.write_all(&block).unwrap();
                sum.update(&block);
            }
            sum
        });
        let sum = Rc::new(RefCell::new(Sum::new()));
        let s = sum.clone();
        let max_read = Rc::new(Cell::new(0));
        let m = max_read.clone();
        rx.read_start(&mut lp, move |lp, p, ev| match ev {
            ReadEvent::Data(d) => {
                s.borrow_mut().update(d);
                m.set(m.get().max(d.len()));
            }
            ReadEvent::Eof => p.close(lp).unwrap(),
            ReadEvent::Error(e) => panic!("{e}"),
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        let sent = writer.join().unwrap();
        assert_eq!(*sum.borrow(), sent);
        assert_eq!(sent.len, TOTAL);
        assert!(max_read.get() <= evloop::limits::READ_CAP_BYTES_DEFAULT);
    }
);

case!(
    secs = 60,
    /// The loop writes 256 MiB into a pipe and also reads it back, the reader capped at
    /// 4 KiB per read: the writer is much faster, the queue absorbs it, order is kept.
    fn writer_faster_than_reader() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        rx.set_read_cap(&mut lp, 4096).unwrap();
        let got = Rc::new(RefCell::new(Sum::new()));
        let g = got.clone();
        let max = Rc::new(Cell::new(0));
        let m = max.clone();
        rx.read_start(&mut lp, move |lp, p, ev| match ev {
            ReadEvent::Data(d) => {
                g.borrow_mut().update(d);
                m.set(m.get().max(d.len()));
            }
            ReadEvent::Eof => p.close(lp).unwrap(),
            ReadEvent::Error(e) => panic!("{e}"),
        })
        .unwrap();
        let mut sent = Sum::new();
        let completed = Rc::new(Cell::new(0));
        for i in 0..64 {
            let block = pattern(i, 4 << 20);
            sent.update(&block);
            let c = completed.clone();
            tx.write_vec(&mut lp, block, move |_, r| {
                r.unwrap();
                c.set(c.get() + 1);
            })
            .unwrap();
        }
        assert!(tx.write_queue_size(&lp).unwrap() > 200 << 20, "most of it is queued");
        tx.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(completed.get(), 64);
        assert_eq!(*got.borrow(), sent);
        assert_eq!(max.get(), 4096);
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// A timer writes one small piece per tick: the reader is faster and waits each time.
    fn reader_faster_than_writer() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let got = collect(&mut lp, rx);
        let t = Timer::new(&mut lp);
        let n = Rc::new(Cell::new(0u8));
        t.start(&mut lp, Duration::ZERO, Duration::from_millis(1), move |lp, t| {
            n.set(n.get() + 1);
            tx.write(lp, &[n.get()], |_, r| r.unwrap()).unwrap();
            if n.get() == 50 {
                t.close(lp).unwrap();
                tx.close(lp).unwrap();
            }
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        let got = got.borrow();
        assert_eq!(got.data, (1..=50).collect::<Vec<u8>>());
        assert!(got.eof);
        assert!(got.reads >= 25, "the reader saw the bytes as they came: {} reads", got.reads);
    }
);

case!(
    fn eof_comes_after_the_data_still_buffered() {
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let mut w = File::from(OwnedFd::from(w));
        w.write_all(&pattern(1, 50_000)).unwrap();
        drop(w);
        // The writer is gone before we even start: HUP with data buffered.
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let got = collect(&mut lp, rx);
        lp.run(RunMode::Default).unwrap();
        let got = got.borrow();
        assert_eq!(got.data, pattern(1, 50_000));
        assert!(got.eof);
    }
);

case!(
    fn two_streams_stay_fair() {
        let mut lp = test_loop();
        // A flood: a thread writes as fast as it can into pipe A.
        let (ra, wa) = std::io::pipe().unwrap();
        let flood = Pipe::open(&mut lp, OwnedFd::from(ra)).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let flooder = std::thread::spawn(move || {
            let mut w = File::from(OwnedFd::from(wa));
            let block = vec![0u8; 1 << 16];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if w.write_all(&block).is_err() {
                    break;
                }
            }
        });
        let flooded = Rc::new(Cell::new(0usize));
        let f = flooded.clone();
        flood
            .read_start(&mut lp, move |_, _, ev| {
                if let ReadEvent::Data(d) = ev {
                    f.set(f.get() + d.len());
                }
            })
            .unwrap();
        // Pipe B gets one byte every millisecond; each must arrive while A floods.
        let (rb, tb) = Pipe::pair(&mut lp).unwrap();
        let seen = Rc::new(Cell::new(0u32));
        let s = seen.clone();
        rb.read_start(&mut lp, move |lp, _, ev| {
            if let ReadEvent::Data(d) = ev {
                s.set(s.get() + d.len() as u32);
                if s.get() == 20 {
                    lp.stop();
                }
            }
        })
        .unwrap();
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::from_millis(1), Duration::from_millis(1), move |lp, _| {
            tb.write(lp, b"x", |_, r| r.unwrap()).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(seen.get(), 20);
        assert!(flooded.get() > 0);
        flood.close(&mut lp).unwrap();
        for h in lp.handles() {
            if !h.closing {
                lp.close(h.id).unwrap();
            }
        }
        lp.run(RunMode::Default).unwrap();
        flooder.join().unwrap();
    }
);

case!(
    /// A round of reads (one readiness event, many full reads) ends at once when its callback
    /// stops, restarts or closes the stream, or changes its read cap; changing another
    /// stream's reading does not end it. Either way every byte arrives once, in order, at the
    /// callback current at the time, in reads no larger than the cap current at the time.
    fn a_read_callback_can_change_reading_in_the_middle_of_a_round() {
        type Log = Rc<RefCell<Vec<(char, Vec<u8>)>>>;
        fn logger(log: &Log, who: char) -> impl FnMut(&mut Loop, Pipe, ReadEvent<'_>) + 'static {
            let log = log.clone();
            move |_, _, ev| match ev {
                ReadEvent::Data(d) => log.borrow_mut().push((who, d.to_vec())),
                ev => panic!("unexpected {ev:?}"),
            }
        }
        let data: Vec<u8> = (0..64).collect();
        for action in ["stop", "restart", "close", "cap", "other"] {
            let mut lp = test_loop();
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            let (other, other_tx) = Pipe::pair(&mut lp).unwrap();
            // 64 bytes waiting and a 4-byte cap: one readiness event serves 16 full reads.
            rx.set_read_cap(&mut lp, 4).unwrap();
            assert_eq!(tx.try_write(&mut lp, &data).unwrap(), 64);
            let log: Log = Rc::default();
            let mut b = Some(logger(&log, 'b'));
            let mut a = logger(&log, 'a');
            let first = Cell::new(true);
            rx.read_start(&mut lp, move |lp, p, ev| {
                a(lp, p, ev);
                if first.replace(false) {
                    match action {
                        "stop" => p.read_stop(lp).unwrap(),
                        "restart" => {
                            p.read_stop(lp).unwrap();
                            p.read_start(lp, b.take().unwrap()).unwrap();
                        }
                        "close" => p.close(lp).unwrap(),
                        "cap" => p.set_read_cap(lp, 8).unwrap(),
                        _ => {
                            other.read_start(lp, |_, _, _| panic!("nothing is written")).unwrap();
                            other.read_stop(lp).unwrap();
                        }
                    }
                }
            })
            .unwrap();
            // The first pass that sees the pipe readable runs the round.
            while log.borrow().is_empty() {
                lp.run(RunMode::Once).unwrap();
            }
            let calls = log.borrow().len();
            match action {
                "other" => assert_eq!(calls, 16, "{action}: the round goes on"),
                _ => assert_eq!(calls, 1, "{action}: the round ends at the first read"),
            }
            match action {
                "stop" => rx.read_start(&mut lp, logger(&log, 'b')).unwrap(),
                "close" => assert!(rx.read_stop(&mut lp).is_err(), "closed"),
                _ => {}
            }
            // Everything else arrives, in order, at the callback current at the time.
            while action != "close" && log.borrow().iter().map(|(_, d)| d.len()).sum::<usize>() < 64 {
                lp.run(RunMode::Once).unwrap();
            }
            let log = log.borrow();
            let all: Vec<u8> = log.iter().flat_map(|(_, d)| d.iter().copied()).collect();
            assert_eq!(all, if action == "close" { &data[..4] } else { &data[..] }, "{action}");
            let late = if matches!(action, "other" | "cap") { 'a' } else { 'b' };
            assert!(log[1..].iter().all(|(who, _)| *who == late), "{action}: {log:?}");
            if action == "cap" {
                assert_eq!(log[1].1.len(), 8, "the next read asks for the new cap");
                assert!(log.iter().all(|(_, d)| d.len() <= 8), "{log:?}");
            }
            for p in [rx, tx, other, other_tx] {
                let _ = p.close(&mut lp);
            }
            lp.run(RunMode::Default).unwrap();
        }
    }
);

case!(
    fn regular_files_and_dev_null_use_always_ready_mode() {
        let mut lp = test_loop();
        let dir = std::env::temp_dir().join(format!("evloop-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("input");
        std::fs::write(&path, pattern(3, 300_000)).unwrap();
        let file = Pipe::open(&mut lp, OwnedFd::from(File::open(&path).unwrap())).unwrap();
        let got = collect(&mut lp, file);
        let null = Pipe::open(&mut lp, OwnedFd::from(File::options().write(true).open("/dev/null").unwrap()))
            .unwrap();
        let wrote = Rc::new(Cell::new(false));
        let w = wrote.clone();
        null.write(&mut lp, &[7; 100_000], move |lp, r| {
            r.unwrap();
            w.set(true);
            null.close(lp).unwrap();
        })
        .unwrap();
        // A timer keeps running while the file streams: the loop stays fair.
        let ticks = Rc::new(Cell::new(0));
        let idle = Idle::new(&mut lp);
        let tk = ticks.clone();
        idle.start(&mut lp, move |lp, i| {
            tk.set(tk.get() + 1);
            if tk.get() == 3 {
                i.close(lp).unwrap();
            }
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, pattern(3, 300_000));
        assert!(got.borrow().eof);
        assert!(wrote.get());
        assert_eq!(ticks.get(), 3);
        // /dev/null reads give EOF at once.
        let null = Pipe::open(&mut lp, OwnedFd::from(File::open("/dev/null").unwrap())).unwrap();
        let got = collect(&mut lp, null);
        lp.run(RunMode::Default).unwrap();
        assert!(got.borrow().eof && got.borrow().data.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
);

case!(
    /// A named FIFO whose writer finished before the program opened its read side (as in
    /// `echo hi > fifo & prog < fifo`): the data, then end of file. A FIFO reopened for
    /// reading would wait for a new writer before reporting the hang-up.
    fn issue_3_a_fifo_whose_writer_left_reaches_end_of_file() {
        let dir = std::env::temp_dir().join(format!("evloop-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let p2 = path.clone();
        let writer = std::thread::spawn(move || {
            std::fs::OpenOptions::new().write(true).open(p2).unwrap().write_all(b"hi\n").unwrap();
        });
        let r = File::open(&path).unwrap(); // blocking, as a shell's `< fifo`
        writer.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut lp = test_loop();
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let got = collect(&mut lp, rx);
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"hi\n");
        assert!(got.borrow().eof);
    }
);

/// Sets its flag when dropped: tells whether a callback that owns it still exists.
struct DropFlag(Rc<Cell<bool>>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

case!(
    secs = 60,
    /// Back-pressure with `read_pause`: the reader pauses after every chunk, and an idle
    /// handle resumes it on the next iteration. The one callback sees every byte in order.
    fn read_pause_and_resume_keep_the_callback_and_lose_nothing() {
        const TOTAL: usize = 4 << 20;
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        rx.set_read_cap(&mut lp, 4096).unwrap();
        let sent = pattern(3, TOTAL);
        tx.write(&mut lp, &sent, |_, r| r.unwrap()).unwrap();
        tx.shutdown(&mut lp, move |lp, r| {
            r.unwrap();
            tx.close(lp).unwrap();
        })
        .unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let (pauses, eof) = (Rc::new(Cell::new(0usize)), Rc::new(Cell::new(false)));
        let dropped = Rc::new(Cell::new(false));
        let flag = DropFlag(dropped.clone());
        let (sink, p, e) = (got.clone(), pauses.clone(), eof.clone());
        rx.read_start(&mut lp, move |lp, rx, ev| {
            let _owned = &flag;
            match ev {
                ReadEvent::Data(d) => {
                    sink.borrow_mut().extend_from_slice(d);
                    rx.read_pause(lp).unwrap();
                    assert!(!rx.is_active(lp).unwrap(), "a paused stream is not active");
                    p.set(p.get() + 1);
                }
                ReadEvent::Eof => {
                    e.set(true);
                    rx.close(lp).unwrap();
                }
                ReadEvent::Error(e) => panic!("read: {e}"),
            }
        })
        .unwrap();
        let resumer = Idle::new(&mut lp);
        let (e, d) = (eof.clone(), dropped.clone());
        resumer
            .start(&mut lp, move |lp, idle| {
                if e.get() {
                    idle.close(lp).unwrap();
                    return;
                }
                assert!(!d.get(), "the paused callback was dropped");
                // Paused after the last chunk, or still reading (the write side is slower).
                rx.read_resume(lp).unwrap();
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(eof.get());
        assert!(dropped.get(), "the callback is dropped after end of file");
        assert_eq!(got.borrow().len(), TOTAL);
        assert!(*got.borrow() == sent, "the data arrived in order");
        assert!(pauses.get() >= TOTAL / 4096, "one chunk per pause: {} pauses", pauses.get());
    }
);

case!(
    /// What pausing and resuming do around `read_start`, `read_stop`, end of file and close.
    fn read_pause_and_resume_rules() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let not_connected = |r: io::Result<()>| r.unwrap_err().kind() == io::ErrorKind::NotConnected;

        // Nothing to pause or resume before read_start.
        rx.read_pause(&mut lp).unwrap();
        assert!(not_connected(rx.read_resume(&mut lp)));

        // A reader that counts its calls and tells when it is dropped.
        let start = |lp: &mut Loop, calls: &Rc<Cell<usize>>| {
            let dropped = Rc::new(Cell::new(false));
            let flag = DropFlag(dropped.clone());
            let calls = calls.clone();
            rx.read_start(lp, move |lp, rx, ev| {
                let _owned = &flag;
                calls.set(calls.get() + 1);
                if let ReadEvent::Data(_) = ev {
                    // Pause and resume inside the callback: reading goes on.
                    rx.read_pause(lp).unwrap();
                    rx.read_resume(lp).unwrap();
                    rx.read_pause(lp).unwrap();
                }
            })
            .unwrap();
            dropped
        };
        let calls = Rc::new(Cell::new(0));
        let first = start(&mut lp, &calls);
        tx.write(&mut lp, b"a", |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(calls.get(), 1, "paused from the callback: the run ended");
        assert!(!first.get(), "kept while paused");
        rx.read_resume(&mut lp).unwrap();
        rx.read_resume(&mut lp).unwrap(); // resuming a reading stream does nothing
        assert!(rx.is_active(&lp).unwrap());
        rx.read_pause(&mut lp).unwrap();
        rx.read_pause(&mut lp).unwrap(); // twice does nothing

        // read_start while paused replaces the kept callback.
        let second = start(&mut lp, &calls);
        assert!(first.get(), "replaced, so dropped");
        // read_stop while paused drops it, and leaves nothing to resume.
        rx.read_pause(&mut lp).unwrap();
        rx.read_stop(&mut lp).unwrap();
        assert!(second.get());
        assert!(not_connected(rx.read_resume(&mut lp)));

        // Closing a paused stream drops the callback.
        let third = start(&mut lp, &calls);
        rx.read_pause(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        assert!(third.get());
        assert!(rx.read_resume(&mut lp).is_err());
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();

        // After end of file there is nothing to resume.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        tx.close(&mut lp).unwrap();
        let ended = Rc::new(Cell::new(false));
        let e = ended.clone();
        rx.read_start(&mut lp, move |_, _, ev| {
            assert!(matches!(ev, ReadEvent::Eof));
            e.set(true);
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(ended.get());
        assert!(not_connected(rx.read_resume(&mut lp)));
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// `try_read` takes what a stream holds now without a read callback (a jobserver's
    /// token), and says `WouldBlock` when nothing is there: on a pair, on a blocking pipe
    /// opened as a description of its own, on a regular file (always ready), and on a
    /// terminal whose other side went (end of file). Bad uses get the crate's usual kinds
    /// (jobserver trial).
    fn issue_3_try_read_takes_what_is_there_without_waiting() {
        use std::io::ErrorKind;
        let mut lp = test_loop();
        let mut buf = [0u8; 8];
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        assert_eq!(rx.try_read(&mut lp, &mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        assert_eq!(tx.try_write(&mut lp, b"ab").unwrap(), 2);
        assert_eq!(rx.try_read(&mut lp, &mut buf[..1]).unwrap(), 1, "no more than asked");
        assert_eq!(rx.try_read(&mut lp, &mut []).unwrap(), 0);
        assert_eq!(rx.try_read(&mut lp, &mut buf).unwrap(), 1);
        assert_eq!(&buf[..1], b"b");
        assert_eq!(tx.try_read(&mut lp, &mut buf).unwrap_err().kind(), ErrorKind::InvalidInput, "write-only");
        tx.close(&mut lp).unwrap();
        assert_eq!(tx.try_read(&mut lp, &mut buf).unwrap_err().kind(), ErrorKind::NotConnected, "closing");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(rx.try_read(&mut lp, &mut buf).unwrap(), 0, "end of file");
        rx.close(&mut lp).unwrap();

        // A blocking pipe, opened as the loop's own description: the caller's stays blocking.
        let (r, mut w) = std::io::pipe().unwrap();
        let h = Pipe::open(&mut lp, r.into()).unwrap();
        assert_eq!(h.try_read(&mut lp, &mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        w.write_all(b"token").unwrap();
        assert_eq!(h.try_read(&mut lp, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"token");
        drop(w);
        assert_eq!(h.try_read(&mut lp, &mut buf).unwrap(), 0);
        h.close(&mut lp).unwrap();

        // A regular file, then its end.
        let path = std::env::temp_dir().join(format!("evloop-try-read-{}", std::process::id()));
        std::fs::write(&path, b"0123456789abcdef!").unwrap();
        let file = Pipe::open(&mut lp, File::open(&path).unwrap().into()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut all = Vec::new();
        loop {
            match file.try_read(&mut lp, &mut buf).unwrap() {
                0 => break,
                n => all.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(all, b"0123456789abcdef!");
        file.close(&mut lp).unwrap();

        // A terminal: what its other side wrote, then end of file once that side is gone.
        let (master, slave) = evloop::tty::openpty().unwrap();
        let tty = evloop::Tty::open(&mut lp, slave).unwrap();
        assert_eq!(tty.try_read(&mut lp, &mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        let mut master = File::from(master);
        master.write_all(b"x\n").unwrap();
        let got = loop {
            // The line discipline passes the byte on a moment later: poll for it, bounded.
            match tty.try_read(&mut lp, &mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    evloop_platform::fd::poll_readable(tty.fd(&lp).unwrap(), None).unwrap();
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(&buf[..got], b"x\n");
        drop(master);
        assert_eq!(tty.try_read(&mut lp, &mut buf).unwrap(), 0, "hung up");
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Found by mutation testing: no test counted the reads of one readiness event, so a
    /// round of 33 reads, or an unbounded one, passed. 100 bytes wait behind a 1-byte cap:
    /// each iteration that sees the pipe readable delivers exactly `READS_PER_EVENT_MAX` of
    /// them, then leaves the rest to level triggering. (`Once` waits for the readiness
    /// itself, so through the select helper too.)
    fn a_readiness_event_serves_at_most_reads_per_event_max_reads() {
        const MAX: usize = evloop::limits::READS_PER_EVENT_MAX;
        const TOTAL: usize = 3 * MAX + 4;
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        rx.set_read_cap(&mut lp, 1).unwrap();
        assert_eq!(tx.try_write(&mut lp, &[b'x'; TOTAL]).unwrap(), TOTAL);
        let got = Rc::new(Cell::new(0usize));
        let g = got.clone();
        rx.read_start(&mut lp, move |_, _, ev| match ev {
            ReadEvent::Data(d) => {
                assert_eq!(d.len(), 1, "the cap");
                g.set(g.get() + 1);
            }
            other => panic!("{other:?}"),
        })
        .unwrap();
        for round in 1..=3 {
            let before = got.get();
            while got.get() == before {
                lp.run(RunMode::Once).unwrap();
            }
            assert_eq!(got.get(), round * MAX, "round {round}: one event, {MAX} reads");
        }
        while got.get() < TOTAL {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(got.get(), TOTAL);
        for p in [rx, tx] {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Found by mutation testing: every capped test had one reading stream, so reading into
    /// the whole shared buffer instead of `..cap` passed. A stream on the default cap grows
    /// the loop's one read buffer to 64 KiB; a stream capped at 16 bytes still gets reads of
    /// at most 16.
    fn a_small_read_cap_holds_after_another_stream_grew_the_shared_buffer() {
        let mut lp = test_loop();
        let (big_rx, big_tx) = Pipe::pair(&mut lp).unwrap();
        let (small_rx, small_tx) = Pipe::pair(&mut lp).unwrap();
        small_rx.set_read_cap(&mut lp, 16).unwrap();
        assert_eq!(big_tx.try_write(&mut lp, b"grow").unwrap(), 4);
        let big = collect(&mut lp, big_rx);
        while big.borrow().data.len() < 4 {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(small_tx.try_write(&mut lp, &[7; 100]).unwrap(), 100);
        let small = collect(&mut lp, small_rx);
        while small.borrow().data.len() < 100 {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(small.borrow().max_read, 16, "reads of at most the stream's own cap");
        assert_eq!(small.borrow().reads, 7, "100 bytes in reads of 16");
        for p in [big_tx, small_tx] {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert!(big.borrow().eof && small.borrow().eof);
    }
);

case!(
    /// Found by mutation testing: an always-ready stream left on the always-ready list after
    /// its interest went (a file read to its end, the handle kept open) made every poll
    /// zero-timeout, and no test noticed the spin. A 30 ms timer after that must take a
    /// handful of iterations, not thousands. (The count is the loop's own; no sleep.)
    fn an_always_ready_stream_that_wants_nothing_lets_the_poll_wait() {
        let mut lp = test_loop();
        let null = Pipe::open(&mut lp, OwnedFd::from(File::open("/dev/null").unwrap())).unwrap();
        let eof = Rc::new(Cell::new(false));
        let e = eof.clone();
        // End of file stops the reading; the handle stays open.
        null.read_start(&mut lp, move |_, _, ev| match ev {
            ReadEvent::Eof => e.set(true),
            other => panic!("{other:?}"),
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(eof.get());
        assert!(!null.is_active(&lp).unwrap(), "not reading any more");
        Timer::once(&mut lp, Duration::from_millis(30), |_| {}).unwrap();
        let before = lp.iterations();
        lp.run(RunMode::Default).unwrap();
        let spent = lp.iterations() - before;
        assert!(spent < 100, "{spent} iterations to wait 30 ms: the poll did not wait");
        null.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// `is_reading` and `is_paused`: a reader that pauses for back-pressure had to keep
    /// track itself of whether its stream was reading, paused or at end of file, since
    /// `read_resume` at end of file is an error (log-shipper trial).
    fn a_stream_says_whether_it_is_reading_or_paused() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let state = |lp: &Loop| (rx.is_reading(lp).unwrap(), rx.is_paused(lp).unwrap());
        assert_eq!(state(&lp), (false, false), "not started");
        let ended = Rc::new(Cell::new(false));
        let e = ended.clone();
        let start = move |lp: &mut Loop| {
            let e = e.clone();
            rx.read_start(lp, move |_, _, ev| {
                if !matches!(ev, ReadEvent::Data(_)) {
                    e.set(true)
                }
            })
            .unwrap()
        };
        start(&mut lp);
        assert_eq!(state(&lp), (true, false), "started");
        rx.read_pause(&mut lp).unwrap();
        assert_eq!(state(&lp), (false, true), "paused");
        rx.read_resume(&mut lp).unwrap();
        assert_eq!(state(&lp), (true, false), "resumed");
        rx.read_stop(&mut lp).unwrap();
        assert_eq!(state(&lp), (false, false), "stopped");
        start(&mut lp);
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(ended.get());
        assert_eq!(state(&lp), (false, false), "ended by end of file");
        start(&mut lp);
        rx.read_pause(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        assert_eq!(state(&lp), (false, false), "closing");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(rx.is_reading(&lp).unwrap_err().kind(), io::ErrorKind::NotFound, "closed");
        assert_eq!(rx.is_paused(&lp).unwrap_err().kind(), io::ErrorKind::NotFound, "closed");
    }
);
