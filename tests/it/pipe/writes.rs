use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use evloop::{Loop, Pipe, RunMode};

use crate::util::test_loop;

use super::*;

/// A write length from `r`: empty, around the staging bound (4 KiB), longer, or short.
fn mixed_len(r: u64) -> usize {
    match r % 16 {
        0 => 0,
        1 => 4096,
        2 => 4097,
        3 => 5000 + (r >> 8) as usize % 20_000,
        _ => 1 + (r >> 8) as usize % 200,
    }
}

/// A write callback that expects success and records write `i` in `order`.
fn record_order(
    order: &Rc<RefCell<Vec<usize>>>,
    i: usize,
) -> impl FnOnce(&mut Loop, io::Result<()>) + 'static {
    let o = order.clone();
    move |_, res| {
        res.unwrap();
        o.borrow_mut().push(i);
    }
}

/// With most of `sent` queued on `tx`: shuts it down, runs the loop until the reader saw
/// end of file, and checks that it got every byte of `sent`, in order; then closes `tx`.
fn drain_in_order(lp: &mut Loop, tx: Pipe, got: &Rc<RefCell<Collected>>, sent: &[u8]) {
    assert!(tx.write_queue_size(lp).unwrap() > 1 << 20, "most of it is queued");
    tx.shutdown(lp, |_, r| r.unwrap()).unwrap();
    lp.run(RunMode::Default).unwrap();
    assert_eq!(tx.write_queue_size(lp).unwrap(), 0);
    let got = got.borrow();
    assert!(got.eof && got.errors.is_empty());
    assert_eq!(got.data.len(), sent.len());
    assert!(got.data == sent, "every byte, in order");
    tx.close(lp).unwrap();
    lp.run(RunMode::Default).unwrap();
}

case!(
    fn partial_writes_queue_the_rest_and_complete_in_order() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let sizes = [10usize, 300_000, 5, 1 << 20, 0, 7];
        let mut sent = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            let block = pattern(i as u64, n);
            sent.extend_from_slice(&block);
            let o = order.clone();
            tx.write(&mut lp, &block, move |_, r| {
                r.unwrap();
                o.borrow_mut().push(i);
            })
            .unwrap();
        }
        // The pipe holds 64 KiB: the rest waits in the queue, and try_write must not jump it.
        let queued = tx.write_queue_size(&lp).unwrap();
        assert!(queued > 1 << 20, "{queued}");
        assert_eq!(tx.try_write(&mut lp, b"x").unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let got = collect(&mut lp, rx);
        tx.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*order.borrow(), [0, 1, 2, 3, 4, 5]);
        assert_eq!(got.borrow().data, sent);
        assert_eq!(tx.write_queue_size(&lp).unwrap(), 0);
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    secs = 60,
    /// Short borrowed writes that have to wait are copied one after another into one
    /// staging buffer and go out in long runs; longer ones, owned and shared buffers queue
    /// on their own between them. Whatever the mix and wherever a partial write cuts, the
    /// bytes arrive in write order and each callback runs once, in order.
    fn issue_3_short_queued_writes_share_a_buffer_and_keep_their_order() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        // Small reads: the writes are cut at many places.
        rx.set_read_cap(&mut lp, 1000).unwrap();
        let got = collect(&mut lp, rx);
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut sent = Vec::new();
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        const WRITES: usize = 20_000;
        for i in 0..WRITES {
            let r = next();
            let block = pattern(i as u64, mixed_len(r));
            sent.extend_from_slice(&block);
            let cb = record_order(&order, i);
            match (r >> 40) % 8 {
                0 => tx.write_vec(&mut lp, block, cb).unwrap(),
                1 => tx.write_shared(&mut lp, block, cb).unwrap(),
                _ => tx.write(&mut lp, &block, cb).unwrap(),
            }
            // Now and then the loop runs a little: some of the queue goes, the rest stays.
            if i % 1000 == 999 {
                lp.run(RunMode::NoWait).unwrap();
            }
        }
        drain_in_order(&mut lp, tx, &got, &sent);
        assert_eq!(*order.borrow(), (0..WRITES).collect::<Vec<_>>());
    }
);

case!(
    secs = 60,
    /// Sends (no callback) queue in one order with writes of every kind: whatever the mix
    /// and wherever a partial write cuts, the bytes arrive in order, and each write's
    /// callback runs once, in order. A burst of short sends takes one queue entry.
    fn issue_3_sends_and_writes_keep_one_order() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        rx.set_read_cap(&mut lp, 1000).unwrap();
        let got = collect(&mut lp, rx);
        let order = Rc::new(RefCell::new(Vec::new()));
        let (mut sent, mut written) = (Vec::new(), Vec::new());
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        const OPS: usize = 20_000;
        for i in 0..OPS {
            let r = next();
            let block = pattern(i as u64, mixed_len(r));
            sent.extend_from_slice(&block);
            let cb = record_order(&order, i);
            match (r >> 40) % 8 {
                0 => tx.write_vec(&mut lp, block, cb).unwrap(),
                1 => tx.write_shared(&mut lp, block, cb).unwrap(),
                2 => tx.write(&mut lp, &block, cb).unwrap(),
                _ => {
                    tx.send(&mut lp, &block).unwrap();
                    continue;
                }
            }
            written.push(i);
            if i % 1000 == 999 {
                lp.run(RunMode::NoWait).unwrap();
            }
        }
        drain_in_order(&mut lp, tx, &got, &sent);
        assert_eq!(*order.borrow(), written);
    }
);

case!(
    /// A send's own write failing is returned; a queued send that fails is heard of by the
    /// write queued after it, or else by the next call, which writes nothing; sends still
    /// queued at close are dropped, and the writes among them cancelled once each.
    fn issue_3_a_failed_send_is_heard_of_once() {
        let mut lp = test_loop();
        let block = [5u8; 100];
        let fill = |lp: &mut Loop, tx: Pipe| {
            for _ in 0..2000 {
                tx.send(lp, &block).unwrap();
            }
            assert!(tx.write_queue_size(lp).unwrap() > 100_000);
        };
        let epipe =
            |r: io::Result<()>| assert_eq!(evloop::os_error_code(&r.unwrap_err()), Some(nix::libc::EPIPE));

        // Nothing queued after the sends: the next send hears it, once, told apart from a
        // failure of its own.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        fill(&mut lp, tx);
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(tx.write_queue_size(&lp).unwrap(), 0);
        let e = tx.send(&mut lp, b"x").unwrap_err();
        assert!(e.to_string().contains("sends queued before this call failed"), "{e}");
        epipe(Err(e));
        // The reader is still gone: the write made now fails, and says so itself.
        epipe(tx.send(&mut lp, b"x"));
        tx.close(&mut lp).unwrap();

        // A write queued after them hears it, and nothing after that does again.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        fill(&mut lp, tx);
        let heard = Rc::new(RefCell::new(Vec::new()));
        let h = heard.clone();
        tx.write(&mut lp, b"", move |_, r| h.borrow_mut().push(r.map_err(|e| evloop::os_error_code(&e))))
            .unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*heard.borrow(), [Err(Some(nix::libc::EPIPE))]);
        let h = heard.clone();
        tx.write(&mut lp, b"", move |_, r| h.borrow_mut().push(r.map_err(|e| evloop::os_error_code(&e))))
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(heard.borrow().len(), 2);
        assert_eq!(heard.borrow()[1], Ok(()), "an empty write with nothing to fail");
        tx.close(&mut lp).unwrap();

        // A shutdown queued after them hears it, and so does one made after the failure; the
        // write side closes all the same.
        for shutdown_first in [true, false] {
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            fill(&mut lp, tx);
            let heard = Rc::new(RefCell::new(Vec::new()));
            let shutdown = |lp: &mut Loop| {
                let h = heard.clone();
                tx.shutdown(lp, move |_, r| h.borrow_mut().push(r.map_err(|e| evloop::os_error_code(&e))))
                    .unwrap();
            };
            if shutdown_first {
                shutdown(&mut lp);
            }
            rx.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            if !shutdown_first {
                shutdown(&mut lp);
                lp.run(RunMode::Default).unwrap();
            }
            assert_eq!(*heard.borrow(), [Err(Some(nix::libc::EPIPE))], "shutdown first: {shutdown_first}");
            assert!(tx.send(&mut lp, b"x").unwrap_err().to_string().contains("shut down"));
            tx.close(&mut lp).unwrap();
        }

        // try_write hears it too.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        fill(&mut lp, tx);
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let e = tx.try_write(&mut lp, b"x").unwrap_err();
        assert_eq!(evloop::os_error_code(&e), Some(nix::libc::EPIPE));
        assert!(e.to_string().contains("wrote nothing"), "{e}");
        tx.close(&mut lp).unwrap();

        // Closed with sends and writes queued: each write cancelled once, in order.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        fill(&mut lp, tx);
        let results = Rc::new(RefCell::new(Vec::new()));
        for i in 0..10 {
            let r = results.clone();
            tx.write(&mut lp, &block, move |_, res| {
                r.borrow_mut().push((i, evloop::is_cancelled(&res.unwrap_err())))
            })
            .unwrap();
            tx.send(&mut lp, &block).unwrap();
        }
        tx.close(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*results.borrow(), (0..10).map(|i| (i, true)).collect::<Vec<_>>());
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

case!(
    /// A FIFO writer whose reader left while sends were queued: once a new reader is there,
    /// the first send hears of the failure and writes nothing, so the new reader gets only
    /// what came after (without the report, the stale send would reach it as if nothing had
    /// been lost before it).
    fn issue_3_a_fifo_writer_hears_of_its_failed_sends_before_writing_on() {
        let fifo = NamedFifo::new("evloop-fifo-sends");
        let open = |write: bool| fifo.open(write);
        let first_reader = open(false);
        let mut lp = test_loop();
        let tx = Pipe::open(&mut lp, OwnedFd::from(open(true))).unwrap();
        for _ in 0..2000 {
            tx.send(&mut lp, &[b'A'; 100]).unwrap();
        }
        assert!(tx.write_queue_size(&lp).unwrap() > 0);
        drop(first_reader);
        lp.run(RunMode::Default).unwrap();
        assert_eq!(tx.write_queue_size(&lp).unwrap(), 0, "the queue failed");

        let rx = Pipe::open(&mut lp, OwnedFd::from(open(false))).unwrap();
        fifo.remove();
        let got = collect(&mut lp, rx);
        let e = tx.send(&mut lp, b"stale").unwrap_err();
        assert_eq!(evloop::os_error_code(&e), Some(nix::libc::EPIPE), "{e}");
        tx.send(&mut lp, b"new").unwrap();
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let got = got.borrow();
        assert!(got.eof && got.errors.is_empty());
        let old = got.data.iter().take_while(|&&b| b == b'A').count();
        assert_eq!(&got.data[old..], b"new");
    }
);

case!(
    /// A send on a handle that cannot be written gets a clear error, as a write does, and
    /// an empty send does nothing.
    fn issue_3_send_refuses_what_write_refuses() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let e = rx.send(&mut lp, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        assert!(e.to_string().contains("reading only"), "{e}");
        tx.send(&mut lp, b"").unwrap();
        assert_eq!(tx.write_queue_size(&lp).unwrap(), 0);
        tx.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
        let e = tx.send(&mut lp, b"x").unwrap_err();
        assert!(e.to_string().contains("shut down"), "{e}");
        tx.close(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let e = tx.send(&mut lp, b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
);

case!(
    fn try_write_writes_what_fits() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let big = vec![1u8; 1 << 20];
        let n = tx.try_write(&mut lp, &big).unwrap();
        assert!(n > 0 && n < big.len(), "a full pipe takes part: {n}");
        assert_eq!(tx.try_write(&mut lp, &big).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(tx.try_write(&mut lp, b"").unwrap(), 0);
        rx.close(&mut lp).unwrap();
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Writes queued on an unreferenced stream keep `run(Default)` going until they are
    /// done, as libuv's write requests do: a program that unreferences its stdout handle
    /// (so that the loop ends with its real work) must not lose its last lines. `run` used
    /// to return with the queue full, its callbacks never run.
    fn issue_3_queued_writes_keep_run_going_on_an_unreferenced_stream() {
        const TOTAL: usize = 1 << 20;
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let out = Pipe::open(&mut lp, w.into()).unwrap();
        out.set_ref(&mut lp, false).unwrap();
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        out.write_vec(&mut lp, vec![5; TOTAL], move |_, r| d.set(r.is_ok())).unwrap();
        assert!(out.write_queue_size(&lp).unwrap() > 0, "more than the pipe holds");
        let reader = std::thread::spawn(move || {
            let mut all = vec![0; TOTAL];
            std::io::Read::read_exact(&mut File::from(OwnedFd::from(r)), &mut all).unwrap();
            all.iter().all(|&b| b == 5)
        });
        assert!(lp.is_alive(), "the queue keeps the loop alive");
        lp.run(RunMode::Default).unwrap();
        assert!(done.get(), "run returned after the write finished");
        assert!(reader.join().unwrap());
        assert!(!lp.is_alive(), "and not after it");
        out.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// A write made by an I/O callback completes in the same iteration, before the check
    /// phase, as in libuv since 1.45 (a few more pending rounds after the poll); and a chain
    /// of writes, each issued by the last one's callback, takes an iteration per nine links
    /// rather than one per link, while the check phase still runs every iteration.
    fn issue_3_a_write_completes_in_the_iteration_that_made_it() {
        const LINKS: usize = 90;
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let (in_rx, in_tx) = Pipe::pair(&mut lp).unwrap();
        let log = Rc::new(RefCell::new(Vec::<&'static str>::new()));
        let checks = Rc::new(Cell::new(0));
        let check = evloop::Check::new(&mut lp);
        let (l, c) = (log.clone(), checks.clone());
        check
            .start(&mut lp, move |_, _| {
                l.borrow_mut().push("check");
                c.set(c.get() + 1);
            })
            .unwrap();
        fn link(lp: &mut Loop, tx: Pipe, left: usize, done: Rc<Cell<Option<u64>>>) {
            tx.write(lp, b"x", move |lp, r| {
                r.unwrap();
                if left == 0 {
                    done.set(Some(lp.iterations()));
                } else {
                    link(lp, tx, left - 1, done);
                }
            })
            .unwrap();
        }
        let done = Rc::new(Cell::new(None));
        let started = Rc::new(Cell::new(0));
        let (l, d, st) = (log.clone(), done.clone(), started.clone());
        in_rx
            .read_start(&mut lp, move |lp, in_rx, _| {
                l.borrow_mut().push("read");
                let l = l.clone();
                tx.write(lp, b"first", move |_, r| {
                    r.unwrap();
                    l.borrow_mut().push("write done");
                })
                .unwrap();
                st.set(lp.iterations());
                link(lp, tx, LINKS - 1, d.clone());
                in_rx.close(lp).unwrap();
            })
            .unwrap();
        in_tx.write(&mut lp, b"ping", |_, r| r.unwrap()).unwrap();
        while done.get().is_none() {
            lp.run(RunMode::Once).unwrap();
        }
        let log = log.take();
        let read = log.iter().position(|&e| e == "read").unwrap();
        assert_eq!(log[read..read + 3], ["read", "write done", "check"], "{log:?}");
        let iterations = done.get().unwrap() - started.get() + 1;
        assert!(iterations as usize <= LINKS / 9 + 1, "{LINKS} links took {iterations} iterations");
        assert!(checks.get() as u64 >= iterations, "the check phase ran in every iteration");
        check.close(&mut lp).unwrap();
        in_tx.close(&mut lp).unwrap();
        tx.close(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// One buffer fed to several streams through `write_shared` is never copied: each queue
    /// holds the same `Rc` until its write finishes (or is cancelled), and every reader gets
    /// all of it, in order. Feeding one input to N children used to take N copies.
    fn issue_3_write_shared_feeds_one_buffer_to_many_streams() {
        let mut lp = test_loop();
        let input: Rc<[u8]> = pattern(1, 3 << 20).into();
        let mut readers = Vec::new();
        for _ in 0..3 {
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            tx.write_shared(&mut lp, input.clone(), move |lp, res| {
                res.unwrap();
                tx.close(lp).unwrap();
            })
            .unwrap();
            readers.push(collect(&mut lp, rx));
        }
        // More than a pipe holds: every queue keeps the buffer, none copied it.
        assert_eq!(Rc::strong_count(&input), 4);
        lp.run(RunMode::Default).unwrap();
        for r in &readers {
            let r = r.borrow();
            assert!(r.eof && r.errors.is_empty());
            assert!(r.data[..] == input[..], "all of it, in order");
        }
        assert_eq!(Rc::strong_count(&input), 1, "every queue let go of it");

        // Cancelled by a close: the queue lets go of it too, and the callback says so.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let cancelled = Rc::new(Cell::new(false));
        let c = cancelled.clone();
        tx.write_shared(&mut lp, input.clone(), move |_, res| {
            c.set(res.is_err_and(|e| evloop::is_cancelled(&e)))
        })
        .unwrap();
        assert_eq!(Rc::strong_count(&input), 2);
        tx.close(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(cancelled.get());
        assert_eq!(Rc::strong_count(&input), 1);
        // Anything that is bytes: a static slice, a String.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        tx.write_shared(&mut lp, &b"static "[..], |_, r| r.unwrap()).unwrap();
        tx.write_shared(&mut lp, String::from("string"), |_, r| r.unwrap()).unwrap();
        tx.close(&mut lp).unwrap();
        let got = collect(&mut lp, rx);
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"static string");
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

case!(
    /// Found by mutation testing: `try_write` was only ever tried against a full pipe, where
    /// the kernel says `EAGAIN` anyway, so dropping its "queue not empty" check passed.
    /// Here the queue waits for the loop's flush while the pipe has room again: `try_write`
    /// must still refuse, or its bytes would land before the queued ones.
    fn try_write_refuses_while_writes_are_queued_even_with_room_in_the_pipe() {
        use std::io::Read;
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let tx = Pipe::open(&mut lp, OwnedFd::from(w)).unwrap();
        let block = pattern(11, 1 << 20);
        tx.write(&mut lp, &block, |_, r| r.unwrap()).unwrap();
        assert!(tx.write_queue_size(&lp).unwrap() > 0, "a pipe takes less than 1 MiB");
        // Room again (a page: every pipe holds one, even past the user's pipe-size quota), and
        // the loop has not run to flush the queue into it.
        let mut r = File::from(OwnedFd::from(r));
        let mut all = vec![0; 4096];
        r.read_exact(&mut all).unwrap();
        let e = tx.try_write(&mut lp, b"!").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        let reader = std::thread::spawn(move || {
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            rest
        });
        tx.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        all.extend(reader.join().unwrap());
        assert!(all == block, "the bytes arrive as written, nothing before or between them");
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);
