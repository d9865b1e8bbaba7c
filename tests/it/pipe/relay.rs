use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender, channel};

use evloop::{Loop, Pipe, RunMode};

use crate::util::test_loop;

use super::*;

/// The byte at offset `k` of the relay tests' stream.
fn relay_byte(k: u64) -> u8 {
    (k % 251) as u8
}

/// A thread that writes the relay tests' stream, `total` bytes, into `w`.
fn relay_writer(mut w: std::io::PipeWriter, total: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut k = 0;
        while k < total {
            let chunk: Vec<u8> = (k..k + 65536).map(relay_byte).collect();
            w.write_all(&chunk).unwrap();
            k += 65536;
        }
    })
}

/// A thread that reads `r` to its end, once `go` says so (at once without it), checks that
/// it is the relay tests' stream, and returns how many bytes came.
fn relay_reader(mut r: std::io::PipeReader, go: Option<Receiver<()>>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        if let Some(go) = go {
            go.recv().unwrap();
        }
        let (mut k, mut buf) = (0u64, vec![0; 100_000]);
        loop {
            let n = std::io::Read::read(&mut r, &mut buf).unwrap();
            if n == 0 {
                return k;
            }
            for &b in &buf[..n] {
                assert_eq!(b, relay_byte(k), "byte {k}");
                k += 1;
            }
        }
    })
}

/// A check handle that keeps, each iteration, the most `to` had queued, and says `go` once
/// the relay has paused `from` (so that a reader that starts only then finds it waiting).
fn watch_relay(lp: &mut Loop, from: Pipe, to: Pipe, go: Sender<()>) -> (evloop::Check, Rc<Cell<usize>>) {
    let most = Rc::new(Cell::new(0));
    let m = most.clone();
    let mut go = Some(go);
    let check = evloop::Check::new(lp);
    check
        .start(lp, move |lp, check| {
            let Ok(queued) = to.write_queue_size(lp) else { return check.close(lp).unwrap() };
            m.set(m.get().max(queued));
            if from.is_paused(lp).unwrap_or(false) {
                if let Some(go) = go.take() {
                    go.send(()).unwrap();
                }
            }
        })
        .unwrap();
    check.set_ref(lp, false).unwrap();
    (check, most)
}

case!(
    /// `pipe_to`: a relay with back-pressure, end of file passed on, and one callback at
    /// the end (the stdio-relay and watch-tool trials each wrote one by hand). 32 MiB from
    /// a writer thread to a reader thread that starts only once the relay has paused: what
    /// the destination holds stays bounded, and every byte arrives in order.
    fn pipe_to_relays_with_back_pressure_and_passes_the_end_on() {
        use evloop::limits::{PIPE_TO_QUEUE_BYTES_MAX, READ_CAP_BYTES_DEFAULT};
        const TOTAL: u64 = 32 << 20;
        let mut lp = test_loop();
        let (src_r, src_w) = std::io::pipe().unwrap();
        let (dst_r, dst_w) = std::io::pipe().unwrap();
        let from = Pipe::open(&mut lp, src_r.into()).unwrap();
        let to = Pipe::open(&mut lp, dst_w.into()).unwrap();
        let writer = relay_writer(src_w, TOTAL);
        let (go_tx, go_rx) = channel();
        let reader = relay_reader(dst_r, Some(go_rx));
        let done = Rc::new(RefCell::new(None));
        let d = done.clone();
        evloop::AnyStream::from(from)
            .pipe_to(&mut lp, to, true, move |lp, res| {
                *d.borrow_mut() = Some(res.map_err(|e| e.to_string()));
                from.close(lp).unwrap();
                to.close(lp).unwrap();
            })
            .unwrap();
        let (check, most) = watch_relay(&mut lp, from, to, go_tx);
        lp.run(RunMode::Default).unwrap();
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), TOTAL, "every byte, in order, then end of file");
        assert_eq!(*done.borrow(), Some(Ok(TOTAL)));
        assert!(most.get() > PIPE_TO_QUEUE_BYTES_MAX, "the relay had to wait: {}", most.get());
        assert!(most.get() <= PIPE_TO_QUEUE_BYTES_MAX + READ_CAP_BYTES_DEFAULT, "bounded: {}", most.get());
        if !check.is_closing(&lp).unwrap_or(true) {
            check.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

case!(
    /// `pipe_to`'s errors: a source already reading is refused and left as it was; a
    /// destination whose reader is gone ends the relay with `EPIPE` and stops the reading;
    /// without `end`, the destination is only flushed, and takes more writes after.
    fn pipe_to_refuses_a_reading_source_and_ends_at_the_first_error() {
        let mut lp = test_loop();
        let (from, feed) = Pipe::pair(&mut lp).unwrap();
        let (unread, first_to) = Pipe::pair(&mut lp).unwrap();
        from.read_start(&mut lp, |_, _, _| {}).unwrap();
        let e =
            evloop::AnyStream::from(from).pipe_to(&mut lp, first_to, true, |_, _| panic!("ran")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
        assert!(from.is_reading(&lp).unwrap());
        from.read_stop(&mut lp).unwrap();

        // Without `end`: flushed at the source's end, and `to` still takes writes.
        let (back, to) = Pipe::pair(&mut lp).unwrap();
        let got = collect(&mut lp, back);
        let done = Rc::new(RefCell::new(None));
        let d = done.clone();
        evloop::AnyStream::from(from)
            .pipe_to(&mut lp, to, false, move |lp, res| {
                *d.borrow_mut() = Some(res.map_err(|e| e.kind()));
                to.write(lp, b" and more", move |lp, res| {
                    res.unwrap();
                    to.close(lp).unwrap();
                })
                .unwrap();
            })
            .unwrap();
        feed.write(&mut lp, b"relayed", |_, res| res.unwrap()).unwrap();
        feed.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*done.borrow(), Some(Ok(7)));
        assert_eq!(got.borrow().data, b"relayed and more");
        assert!(!from.is_reading(&lp).unwrap() && !from.is_paused(&lp).unwrap());

        // The source closed while the relay waits for its destination to drain, then the
        // destination: `done` goes uncalled, as the docs say (it ran with `ECANCELED`,
        // and its `from.close` failed: review).
        let (from3, feed3) = Pipe::pair(&mut lp).unwrap();
        let (held, w) = std::io::pipe().unwrap();
        let to3 = Pipe::open(&mut lp, w.into()).unwrap();
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        evloop::AnyStream::from(from3).pipe_to(&mut lp, to3, true, move |_, _| r.set(true)).unwrap();
        feed3.write(&mut lp, &vec![7u8; 3 << 20], |_, _| {}).unwrap();
        while !from3.is_paused(&lp).unwrap() {
            lp.run(RunMode::Once).unwrap();
        }
        for h in [from3, to3, feed3] {
            h.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert!(!ran.get(), "done ran after its source closed");
        drop(held);

        // EPIPE: the destination's reader is gone.
        let (from2, feed) = Pipe::pair(&mut lp).unwrap();
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let to = Pipe::open(&mut lp, w.into()).unwrap();
        let d = done.clone();
        evloop::AnyStream::from(from2)
            .pipe_to(&mut lp, to, true, move |_, res| *d.borrow_mut() = Some(res.map_err(|e| e.kind())))
            .unwrap();
        feed.write(&mut lp, b"lost", |_, res| res.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*done.borrow(), Some(Err(io::ErrorKind::BrokenPipe)));
        assert!(!from2.is_reading(&lp).unwrap(), "reading stopped");
        for h in [from, from2, to, feed, unread, first_to] {
            h.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

case!(
    /// `AnyStream::tee`: `pipe_to` to several destinations (tokio-port trial: a tee with
    /// back-pressure took 45 lines by hand). 16 MiB to two readers, one reading at once and
    /// one that starts only once the relay has paused for it: both get every byte in order
    /// and the end, the slow one's queue stays bounded, and `done` comes once, after both.
    /// Bad destinations are refused; a destination whose reader is gone ends the relay.
    fn tee_relays_to_every_destination_at_the_slowest_pace() {
        use evloop::AnyStream;
        use evloop::limits::{PIPE_TO_QUEUE_BYTES_MAX, READ_CAP_BYTES_DEFAULT};
        const TOTAL: u64 = 16 << 20;
        let mut lp = test_loop();
        let (src_r, src_w) = std::io::pipe().unwrap();
        let from = Pipe::open(&mut lp, src_r.into()).unwrap();
        let writer = relay_writer(src_w, TOTAL);
        let (fast_r, fast_w) = std::io::pipe().unwrap();
        let (slow_r, slow_w) = std::io::pipe().unwrap();
        let (go_tx, go_rx) = channel();
        let fast_reader = relay_reader(fast_r, None);
        let slow_reader = relay_reader(slow_r, Some(go_rx));
        let fast = Pipe::open(&mut lp, fast_w.into()).unwrap();
        let slow = Pipe::open(&mut lp, slow_w.into()).unwrap();
        // Refused, and nothing started.
        let source = AnyStream::from(from);
        for (to, what) in [(vec![], "no stream"), (vec![fast, slow, fast], "named twice")] {
            let e = source.tee(&mut lp, to, true, |_, _| panic!("ran")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
        assert!(!from.is_reading(&lp).unwrap());

        let done = Rc::new(RefCell::new(Vec::new()));
        let d = done.clone();
        source
            .tee(&mut lp, [fast, slow], true, move |lp, res| {
                d.borrow_mut().push(res.map_err(|e| e.to_string()));
                for p in [from, fast, slow] {
                    p.close(lp).unwrap();
                }
            })
            .unwrap();
        let (check, most) = watch_relay(&mut lp, from, slow, go_tx);
        lp.run(RunMode::Default).unwrap();
        writer.join().unwrap();
        assert_eq!(fast_reader.join().unwrap(), TOTAL, "the fast reader: every byte, then the end");
        assert_eq!(slow_reader.join().unwrap(), TOTAL, "the slow reader: every byte, then the end");
        assert_eq!(*done.borrow(), [Ok(TOTAL)], "done, once");
        assert!(most.get() > PIPE_TO_QUEUE_BYTES_MAX, "the relay had to wait: {}", most.get());
        assert!(most.get() <= PIPE_TO_QUEUE_BYTES_MAX + READ_CAP_BYTES_DEFAULT, "bounded: {}", most.get());
        if !check.is_closing(&lp).unwrap_or(true) {
            check.close(&mut lp).unwrap();
        }

        // EPIPE at one destination ends the relay, and the reading; the other is left open.
        let (from2, feed) = Pipe::pair(&mut lp).unwrap();
        let (kept, ok) = Pipe::pair(&mut lp).unwrap();
        let (r, w) = std::io::pipe().unwrap();
        drop(r);
        let gone = Pipe::open(&mut lp, w.into()).unwrap();
        let ended = Rc::new(RefCell::new(None));
        let e = ended.clone();
        AnyStream::from(from2)
            .tee(&mut lp, [ok, gone], true, move |_, res| *e.borrow_mut() = Some(res.map_err(|e| e.kind())))
            .unwrap();
        feed.write(&mut lp, b"lost", |_, res| res.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*ended.borrow(), Some(Err(io::ErrorKind::BrokenPipe)));
        assert!(!from2.is_reading(&lp).unwrap(), "reading stopped");
        assert!(!ok.is_closing(&lp).unwrap(), "the other destination is the program's to close");
        for h in [from2, feed, kept, ok, gone] {
            h.close(&mut lp).unwrap();
        }

        // A destination that refuses the end (closed) does not keep it from the others
        // (review: the later ones never saw end of file).
        let (from3, feed3) = Pipe::pair(&mut lp).unwrap();
        let (closed_r, closed) = Pipe::pair(&mut lp).unwrap();
        let (back, open) = Pipe::pair(&mut lp).unwrap();
        let got = collect(&mut lp, back);
        let e = ended.clone();
        AnyStream::from(from3)
            .tee(&mut lp, [closed, open], true, move |_, res| {
                *e.borrow_mut() = Some(res.map_err(|e| e.kind()))
            })
            .unwrap();
        closed.close(&mut lp).unwrap();
        feed3.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(matches!(*ended.borrow(), Some(Err(_))), "{:?}", ended.borrow());
        assert!(got.borrow().eof, "the open destination saw the end");
        for h in [from3, open, closed_r] {
            h.close(&mut lp).unwrap();
        }

        // The source among the destinations: a socket's echo, as `pipe_to` gives it.
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let sock = Pipe::open(&mut lp, ours.into()).unwrap();
        let e = ended.clone();
        AnyStream::from(sock)
            .pipe_to(&mut lp, sock, true, move |_, res| *e.borrow_mut() = Some(res.map_err(|e| e.kind())))
            .unwrap();
        theirs.write_all(b"hello").unwrap();
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*ended.borrow(), Some(Ok(5)));
        let mut echoed = Vec::new();
        std::io::Read::read_to_end(&mut theirs, &mut echoed).unwrap();
        assert_eq!(echoed, b"hello");
        sock.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);
