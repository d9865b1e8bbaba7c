use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use evloop::{Command, HandleType, Idle, Loop, Pipe, ReadEvent, RunMode, Stdio, Timer};

use crate::util::test_loop;

/// A checksum that notices reordering and loss: FNV-1a over every byte, plus the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sum {
    hash: u64,
    len: u64,
}

impl Sum {
    pub fn new() -> Sum {
        Sum { hash: 0xcbf2_9ce4_8422_2325, len: 0 }
    }
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.len += data.len() as u64;
    }
}

/// Deterministic test data: block `i` of `len` bytes.
pub fn pattern(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A deterministic stream of pseudo-random numbers (xorshift), for mixes of operations.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// A named FIFO in a directory of its own, opened nonblocking at either end.
pub struct NamedFifo {
    dir: std::path::PathBuf,
}

impl NamedFifo {
    pub fn new(tag: &str) -> NamedFifo {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        NamedFifo { dir }
    }

    pub fn open(&self, write: bool) -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(self.dir.join("fifo"))
            .unwrap()
    }

    /// Removes the FIFO's name (open ends stay usable).
    pub fn remove(&self) {
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

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

/// What a reader collected.
#[derive(Default)]
pub struct Collected {
    pub data: Vec<u8>,
    pub eof: bool,
    pub errors: Vec<io::Error>,
    pub reads: usize,
    pub max_read: usize,
}

/// Starts reading `p`, collecting everything; closes the pipe at end of file or error.
pub fn collect(lp: &mut Loop, p: Pipe) -> Rc<RefCell<Collected>> {
    let c = Rc::new(RefCell::new(Collected::default()));
    let sink = c.clone();
    p.read_start(lp, move |lp, p, ev| {
        let mut c = sink.borrow_mut();
        match ev {
            ReadEvent::Data(d) => {
                assert!(!d.is_empty());
                c.data.extend_from_slice(d);
                c.reads += 1;
                c.max_read = c.max_read.max(d.len());
            }
            ReadEvent::Eof => {
                assert!(!c.eof, "EOF reported twice");
                c.eof = true;
                p.close(lp).unwrap();
            }
            ReadEvent::Error(e) => {
                c.errors.push(e);
                p.close(lp).unwrap();
            }
        }
    })
    .unwrap();
    c
}

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
    /// Short writes queued behind a full pipe fail together when the reader goes (each
    /// callback once, with `EPIPE`), and a stream that closes cancels them.
    fn issue_3_staged_writes_fail_and_cancel_each_once() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let results = Rc::new(RefCell::new(Vec::new()));
        let block = vec![7u8; 100];
        for i in 0..2000 {
            let r = results.clone();
            tx.write(&mut lp, &block, move |_, res| {
                r.borrow_mut().push((i, res.map_err(|e| e.raw_os_error())))
            })
            .unwrap();
        }
        let queued = tx.write_queue_size(&lp).unwrap();
        assert!(queued > 100_000, "{queued}");
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let results = std::mem::take(&mut *results.borrow_mut());
        assert_eq!(results.len(), 2000);
        let first_failed = results.iter().position(|(_, r)| r.is_err()).expect("some failed");
        for (k, (i, r)) in results.iter().enumerate() {
            assert_eq!(*i, k, "in order");
            if k < first_failed {
                assert!(r.is_ok());
            } else {
                assert_eq!(*r, Err(Some(nix::libc::EPIPE)), "write {k}");
            }
        }
        assert_eq!(tx.write_queue_size(&lp).unwrap(), 0);
        tx.close(&mut lp).unwrap();

        // Cancelled by a close, each once, after the ones that went out.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let (done, cancelled) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        for _ in 0..2000 {
            let (d, c) = (done.clone(), cancelled.clone());
            tx.write(&mut lp, &block, move |_, res| match res {
                Ok(()) => d.set(d.get() + 1),
                Err(e) if evloop::is_cancelled(&e) => c.set(c.get() + 1),
                Err(e) => panic!("{e}"),
            })
            .unwrap();
        }
        let queued = tx.write_queue_size(&lp).unwrap();
        tx.close(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(done.get() + cancelled.get(), 2000, "each callback once");
        assert_eq!(cancelled.get(), queued.div_ceil(100), "the queued ones cancelled");
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
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
    fn epipe_reaches_the_write_callback() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let res = Rc::new(RefCell::new(None));
        let r = res.clone();
        tx.write(&mut lp, b"nobody listens", move |_, e| *r.borrow_mut() = Some(e)).unwrap();
        lp.run(RunMode::Default).unwrap();
        let e = res.borrow_mut().take().unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(evloop::os_error_code(&e), Some(nix::libc::EPIPE));
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn epipe_fails_every_queued_write_once() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let results = Rc::new(RefCell::new(Vec::new()));
        for i in 0..5 {
            let r = results.clone();
            tx.write(&mut lp, &[i; 100_000], move |_, e| r.borrow_mut().push((i, e.map_err(|e| e.kind()))))
                .unwrap();
        }
        // The reader goes away with most of the data still queued.
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let results = results.borrow();
        assert_eq!(results.len(), 5, "each callback exactly once: {results:?}");
        assert_eq!(results.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert!(results.iter().skip(1).all(|r| r.1 == Err(io::ErrorKind::BrokenPipe)), "{results:?}");
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn close_cancels_queued_writes_before_the_close_callback() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let log = Rc::new(RefCell::new(Vec::new()));
        for i in 0..3 {
            let l = log.clone();
            tx.write(&mut lp, &[0; 200_000], move |_, r| {
                l.borrow_mut().push(format!("write {i}: {:?}", r.map_err(|e| evloop::os_error_code(&e))))
            })
            .unwrap();
        }
        let l = log.clone();
        tx.shutdown(&mut lp, move |_, r| l.borrow_mut().push(format!("shutdown: {:?}", r.is_ok()))).unwrap();
        let l = log.clone();
        tx.close_with(&mut lp, move |_| l.borrow_mut().push("closed".into())).unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        let ecanceled = nix::libc::ECANCELED;
        assert_eq!(
            *log.borrow(),
            [
                // The first write partly went out; it is still cancelled (the rest never will).
                format!("write 0: Err(Some({ecanceled}))"),
                format!("write 1: Err(Some({ecanceled}))"),
                format!("write 2: Err(Some({ecanceled}))"),
                "shutdown: false".to_string(),
                "closed".to_string(),
            ]
        );
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

case!(
    /// A named FIFO's writer outlives its reader: the queued writes fail with `EPIPE`, and
    /// once a new reader opens the FIFO, the same handle writes on. What was queued before
    /// the failure (short writes, staged in the stream's buffer) never reaches the new
    /// reader (review: nothing showed that the failed writes' staged bytes are dropped;
    /// both the failure's reset and the drained flush's would have to go for this to fail).
    fn issue_3_a_fifo_writer_that_outlived_its_reader_writes_on_without_the_failed_bytes() {
        let fifo = NamedFifo::new("evloop-fifo-again");
        let open = |write: bool| fifo.open(write);
        let first_reader = open(false);
        let mut lp = test_loop();
        let tx = Pipe::open(&mut lp, OwnedFd::from(open(true))).unwrap();
        let failed = Rc::new(Cell::new(0));
        let queue = |lp: &mut Loop, big: u8, small: u8, on: Rc<Cell<usize>>, last: bool| {
            let o = on.clone();
            tx.write_vec(lp, vec![big; 1 << 20], move |_, r| o.set(o.get() + r.is_err() as usize)).unwrap();
            for i in 0..100 {
                let o = on.clone();
                tx.write(lp, &[small; 50], move |lp, r| {
                    o.set(o.get() + r.is_err() as usize);
                    if last && i == 99 {
                        tx.close(lp).unwrap();
                    }
                })
                .unwrap();
            }
        };
        queue(&mut lp, b'A', b'S', failed.clone(), false);
        drop(first_reader);
        lp.run(RunMode::Default).unwrap();
        assert_eq!(failed.get(), 101, "every write failed once");
        assert_eq!(tx.write_queue_size(&lp).unwrap(), 0);

        let rx = Pipe::open(&mut lp, OwnedFd::from(open(false))).unwrap();
        fifo.remove();
        let got = collect(&mut lp, rx);
        let failed_again = Rc::new(Cell::new(0));
        queue(&mut lp, b'B', b'F', failed_again.clone(), true);
        lp.run(RunMode::Default).unwrap();
        assert_eq!(failed_again.get(), 0);
        let got = got.borrow();
        assert!(got.eof && got.errors.is_empty());
        // What the kernel took before the reader left is still in the FIFO; then the new
        // writes, whole, and nothing of the failed short ones.
        let old = got.data.iter().take_while(|&&b| b == b'A').count();
        assert!(old <= 1 << 20);
        let mut expected = vec![b'B'; 1 << 20];
        expected.extend_from_slice(&[b'F'; 100 * 50]);
        assert!(!got.data.contains(&b'S'), "a failed write's bytes went out");
        assert_eq!(got.data.len() - old, expected.len());
        assert!(got.data[old..] == expected[..]);
    }
);

case!(
    fn a_socket_half_closes_on_shutdown() {
        let mut lp = test_loop();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let pa = Pipe::open(&mut lp, OwnedFd::from(a)).unwrap();
        let pb = Pipe::open(&mut lp, OwnedFd::from(b)).unwrap();
        let got = collect(&mut lp, pb);
        pa.write(&mut lp, b"ping", |_, r| r.unwrap()).unwrap();
        pa.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"ping");
        assert!(got.borrow().eof);
        pa.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

// ----- O_NONBLOCK on a shared description when the process ends -------------------------------

const SHARED_CHILD_ENV: &str = "EVLOOP_TEST_SHARED_CHILD";

/// Not a test: the entry point of the child process that
/// `issue_3_a_shared_description_is_blocking_again_when_the_process_ends` starts. It opens its
/// stdin (a named FIFO the test shares) as a pipe handle, echoes `got <data>` for each read,
/// and exits with the handle open on `exit`; the test kills it otherwise. `$SHARED_CHILD_ENV`
/// says whether to install the restore hooks first.
#[test]
#[ignore = "runs only as a child process of the shared-description test"]
fn shared_description_child() {
    use std::os::fd::AsFd;
    let Ok(how) = std::env::var(SHARED_CHILD_ENV) else { return };
    if how == "hooks" || how == "exit" {
        evloop::tty::install_restore_hooks().unwrap();
    }
    let mut lp = test_loop();
    let stdin = Pipe::open(&mut lp, io::stdin().as_fd().try_clone_to_owned().unwrap()).unwrap();
    stdin
        .read_start(&mut lp, |_, _, ev| {
            let ReadEvent::Data(d) = ev else { panic!("unexpected {ev:?}") };
            let mut out = io::stdout().lock();
            writeln!(out, "got {}", String::from_utf8_lossy(d)).unwrap();
            out.flush().unwrap();
            if d == b"exit" {
                // Ends the process with the handle open: only `exit`'s restore runs.
                std::process::exit(0);
            }
        })
        .unwrap();
    lp.run(RunMode::Default).unwrap();
}

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
    /// A write the kernel takes at once, one that has to queue, then close: the callbacks
    /// come in write order (done, cancelled), all before the close callback, whichever
    /// phase closes: poll (a read callback, as an echo server would), pending (a write
    /// callback) or check. The first one's callback used to come last, an iteration late.
    fn issue_3_callbacks_keep_write_order_when_a_stream_closes() {
        for phase in ["poll", "pending", "check"] {
            let mut lp = test_loop();
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            let log = Rc::new(RefCell::new(Vec::<String>::new()));
            let l = log.clone();
            let burst = move |lp: &mut Loop| {
                let l1 = l.clone();
                tx.write(lp, b"small", move |_, r| l1.borrow_mut().push(format!("small {}", r.is_ok())))
                    .unwrap();
                let l2 = l.clone();
                tx.write_vec(lp, vec![7; 1 << 20], move |_, r| {
                    l2.borrow_mut().push(format!("big {}", r.is_ok()))
                })
                .unwrap();
                assert!(tx.write_queue_size(lp).unwrap() > 0, "the big one waits in the queue");
                let l3 = l.clone();
                tx.close_with(lp, move |_| l3.borrow_mut().push("close".into())).unwrap();
            };
            let (in_rx, in_tx) = Pipe::pair(&mut lp).unwrap();
            match phase {
                "poll" => {
                    let mut burst = Some(burst);
                    in_rx
                        .read_start(&mut lp, move |lp, in_rx, _| {
                            if let Some(b) = burst.take() {
                                b(lp);
                            }
                            in_rx.close(lp).unwrap();
                        })
                        .unwrap();
                    in_tx.write(&mut lp, b"ping", |_, r| r.unwrap()).unwrap();
                }
                "pending" => {
                    in_rx.close(&mut lp).unwrap();
                    in_tx
                        .write(&mut lp, b"", move |lp, r| {
                            r.unwrap();
                            burst(lp);
                        })
                        .unwrap();
                }
                _ => {
                    in_rx.close(&mut lp).unwrap();
                    let check = evloop::Check::new(&mut lp);
                    let mut burst = Some(burst);
                    check
                        .start(&mut lp, move |lp, check| {
                            check.close(lp).unwrap();
                            if let Some(b) = burst.take() {
                                b(lp);
                            }
                        })
                        .unwrap();
                    // Something for the iteration to wait on before the check phase.
                    Timer::once(&mut lp, Duration::ZERO, |_| {}).unwrap();
                }
            }
            in_tx.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            rx.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
            assert_eq!(*log.borrow(), ["small true", "big false", "close"], "closed in the {phase} phase");
        }
    }
);

case!(
    /// Many streams with finished writes, every other one closed in the same callback: each
    /// closed stream's callbacks keep their order (done, cancelled, close), and the open
    /// ones' finished writes still complete in the pending phase, in write order. The close
    /// phase used to scan the pending queue once per closing stream, which made closing n
    /// streams at once cost O(n²).
    fn issue_3_closing_many_streams_at_once_keeps_each_ones_order() {
        const STREAMS: usize = 600;
        let mut lp = test_loop();
        let log = Rc::new(RefCell::new(Vec::<(usize, &'static str)>::new()));
        let pairs = Rc::new(RefCell::new(Vec::new()));
        for _ in 0..STREAMS {
            pairs.borrow_mut().push(Pipe::pair(&mut lp).unwrap());
        }
        // From the check phase, after this iteration's pending rounds: the finished writes
        // wait in the queue when the close phase comes.
        let check = evloop::Check::new(&mut lp);
        // The idle handle keeps the poll phase from waiting.
        let idle = Idle::new(&mut lp);
        idle.start(&mut lp, |_, _| {}).unwrap();
        let (l, p) = (log.clone(), pairs.clone());
        check
            .start(&mut lp, move |lp, check| {
                check.close(lp).unwrap();
                idle.close(lp).unwrap();
                for (i, &(_, tx)) in p.borrow().iter().enumerate() {
                    let l1 = l.clone();
                    tx.write(lp, b"small", move |_, r| {
                        l1.borrow_mut().push((i, if r.is_ok() { "small" } else { "small failed" }))
                    })
                    .unwrap();
                    if i % 2 == 0 {
                        let l2 = l.clone();
                        // More than the pipe holds: the rest waits in the queue, and is cancelled.
                        tx.write_vec(lp, vec![0; 1 << 17], move |_, r| {
                            l2.borrow_mut().push((i, if r.is_ok() { "big" } else { "big cancelled" }))
                        })
                        .unwrap();
                        let l3 = l.clone();
                        tx.close_with(lp, move |_| l3.borrow_mut().push((i, "close"))).unwrap();
                    }
                }
            })
            .unwrap();
        lp.run(RunMode::Once).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        let mut want = Vec::new();
        for i in (0..STREAMS).step_by(2) {
            want.extend([(i, "small"), (i, "big cancelled"), (i, "close")]);
        }
        // The open streams' writes complete in the next pending phase, in write order.
        want.extend((1..STREAMS).step_by(2).map(|i| (i, "small")));
        assert_eq!(*log.borrow(), want);
        for (i, (rx, tx)) in pairs.take().into_iter().enumerate() {
            rx.close(&mut lp).unwrap();
            if i % 2 == 1 {
                tx.close(&mut lp).unwrap();
            }
        }
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
    /// A stream that cannot be shut down (open for reading and writing) says what it is and
    /// what to do instead: the message called a regular file a "pipe" (stream-tool trial).
    /// What it suggests works: an empty write's callback runs after those of the writes
    /// before it, so closing from it loses nothing.
    fn issue_3_a_read_write_stream_refuses_shutdown_and_an_empty_write_flushes_it() {
        let mut lp = test_loop();
        let path = std::env::temp_dir().join(format!("evloop-rw-shutdown-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let p = Pipe::open(&mut lp, file.into()).unwrap();
        let e = p.shutdown(&mut lp, |_, _| panic!("never called")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("(a regular file)") && e.to_string().contains("empty write"), "{e}");
        // The barrier, on a pipe whose writes must wait in the queue.
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        let o = order.clone();
        tx.write_vec(&mut lp, vec![1; 1 << 20], move |_, r| {
            r.unwrap();
            o.borrow_mut().push("big");
        })
        .unwrap();
        assert!(tx.write_queue_size(&lp).unwrap() > 0);
        let o = order.clone();
        tx.write(&mut lp, b"", move |lp, r| {
            r.unwrap();
            o.borrow_mut().push("empty");
            tx.close(lp).unwrap();
        })
        .unwrap();
        let got = collect(&mut lp, rx);
        p.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*order.borrow(), ["big", "empty"]);
        assert_eq!(got.borrow().data.len(), 1 << 20, "every byte before the close");
        std::fs::remove_file(&path).unwrap();
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

/// The examples/cat.rs program, run by the cat test in a child process.
#[allow(dead_code)]
#[path = "../../../examples/cat.rs"]
mod cat_example;

const CAT_CHILD_ENV: &str = "EVLOOP_TEST_CAT_CHILD";

/// Not a test: the entry point of the child process the cat test starts (this binary,
/// re-executed with `--ignored --exact`), which runs examples/cat.rs on its stdio.
#[test]
#[ignore = "runs only as the cat test's child process"]
fn cat_example_child() {
    if std::env::var_os(CAT_CHILD_ENV).is_some() {
        let code = match cat_example::main() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cat: {e}");
                1
            }
        };
        std::process::exit(code);
    }
}

case!(
    /// examples/cat.rs ends cleanly where its stdout cannot be shut down alone: a terminal,
    /// or `/dev/null` or a file open for reading and writing. It panicked at the end of its
    /// input, after writing everything.
    fn cat_example_ends_cleanly_on_a_terminal_or_a_read_write_stdout() {
        use std::os::fd::AsFd;
        let (master, slave) = evloop::tty::openpty().unwrap();
        let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").unwrap();
        for (what, out) in [("a terminal", slave), ("/dev/null open read-write", null.into())] {
            let (r, mut w) = std::io::pipe().unwrap();
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "pipe::cat_example_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                    "-q",
                ])
                .env(CAT_CHILD_ENV, "1")
                .stdin(r)
                .stdout(out)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            w.write_all(b"hello through the loop\n").unwrap();
            drop(w);
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{what}: {:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut seen = Vec::new();
        crate::util::read_until(master.as_fd(), &mut seen, "hello through the loop");
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

/// The byte at offset `k` of the relay tests' stream.
fn relay_byte(k: u64) -> u8 {
    (k % 251) as u8
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
        let (src_r, mut src_w) = std::io::pipe().unwrap();
        let (mut dst_r, dst_w) = std::io::pipe().unwrap();
        let from = Pipe::open(&mut lp, src_r.into()).unwrap();
        let to = Pipe::open(&mut lp, dst_w.into()).unwrap();
        let writer = std::thread::spawn(move || {
            let mut k = 0;
            while k < TOTAL {
                let chunk: Vec<u8> = (k..k + 65536).map(relay_byte).collect();
                src_w.write_all(&chunk).unwrap();
                k += 65536;
            }
        });
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            go_rx.recv().unwrap();
            let (mut k, mut buf) = (0u64, vec![0; 100_000]);
            loop {
                let n = std::io::Read::read(&mut dst_r, &mut buf).unwrap();
                if n == 0 {
                    return k;
                }
                for &b in &buf[..n] {
                    assert_eq!(b, relay_byte(k), "byte {k}");
                    k += 1;
                }
            }
        });
        let done = Rc::new(RefCell::new(None));
        let d = done.clone();
        evloop::AnyStream::from(from)
            .pipe_to(&mut lp, to, true, move |lp, res| {
                *d.borrow_mut() = Some(res.map_err(|e| e.to_string()));
                from.close(lp).unwrap();
                to.close(lp).unwrap();
            })
            .unwrap();
        // Each iteration: the most the destination held, and the go once the relay paused.
        let most = Rc::new(Cell::new(0));
        let m = most.clone();
        let mut go = Some(go_tx);
        let check = evloop::Check::new(&mut lp);
        check
            .start(&mut lp, move |lp, check| {
                let Ok(queued) = to.write_queue_size(lp) else { return check.close(lp).unwrap() };
                m.set(m.get().max(queued));
                if from.is_paused(lp).unwrap_or(false) {
                    if let Some(go) = go.take() {
                        go.send(()).unwrap();
                    }
                }
            })
            .unwrap();
        check.set_ref(&mut lp, false).unwrap();
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
