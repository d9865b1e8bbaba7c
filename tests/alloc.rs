//! Reading allocates nothing in steady state: a counting global allocator proves it.
//!
//! A binary of its own, because the global allocator is process-wide.

#[macro_use]
#[path = "it/util.rs"]
mod util;

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use evloop::{Loop, Pipe, ReadEvent, RunMode};

#[global_allocator]
static GLOBAL: evloop_platform::alloc::CountingAlloc = evloop_platform::alloc::CountingAlloc;

case!(
    secs = 60,
    fn reads_allocate_nothing_in_steady_state() {
        const TOTAL: usize = 256 << 20;
        let mut lp = util::test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = File::from(OwnedFd::from(w));
            let block = vec![0xa5u8; 64 << 10];
            for _ in 0..TOTAL / block.len() {
                w.write_all(&block).unwrap();
            }
        });
        let reads = Rc::new(Cell::new(0u64));
        let bytes = Rc::new(Cell::new(0usize));
        // Allocations counted from the 100th read on: start-up (buffers, registrations,
        // the helper thread) is over by then.
        let baseline = Rc::new(Cell::new(0u64));
        let (rd, by, base) = (reads.clone(), bytes.clone(), baseline.clone());
        rx.read_start(&mut lp, move |lp, p, ev| match ev {
            ReadEvent::Data(d) => {
                rd.set(rd.get() + 1);
                by.set(by.get() + d.len());
                if rd.get() == 100 {
                    base.set(evloop_platform::alloc::CountingAlloc::count());
                }
            }
            ReadEvent::Eof => p.close(lp).unwrap(),
            ReadEvent::Error(e) => panic!("{e}"),
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        let during = evloop_platform::alloc::CountingAlloc::count() - baseline.get();
        writer.join().unwrap();
        assert_eq!(bytes.get(), TOTAL);
        assert!(reads.get() >= 4096, "{} reads", reads.get());
        // The close at the end (slot release, pending callbacks) may allocate a few times;
        // per read it must be zero.
        assert!(during < 16, "{during} allocations during {} reads", reads.get() - 100);
    }
);

case!(
    fn building_a_command_for_a_short_program_allocates_nothing() {
        // Short names live inside the Command; a long one needs the heap.
        let before = evloop_platform::alloc::CountingAlloc::count();
        let cmd = std::hint::black_box(evloop::Command::new("/bin/true"));
        assert_eq!(evloop_platform::alloc::CountingAlloc::count() - before, 0);
        drop(cmd);
        let long = "/".repeat(64);
        let before = evloop_platform::alloc::CountingAlloc::count();
        let cmd = std::hint::black_box(evloop::Command::new(long.as_str()));
        assert_eq!(evloop_platform::alloc::CountingAlloc::count() - before, 1);
        drop(cmd);
    }
);

/// Reads `rx` to its end while `tx` shuts down after what is queued; returns the bytes read.
fn drain(lp: &mut Loop, rx: Pipe, tx: Pipe) -> usize {
    let got = Rc::new(Cell::new(0usize));
    let g = got.clone();
    rx.read_start(lp, move |lp, p, ev| match ev {
        ReadEvent::Data(d) => g.set(g.get() + d.len()),
        ReadEvent::Eof => p.close(lp).unwrap(),
        ReadEvent::Error(e) => panic!("{e}"),
    })
    .unwrap();
    tx.shutdown(lp, move |lp, r| {
        r.unwrap();
        tx.close(lp).unwrap();
    })
    .unwrap();
    lp.run(RunMode::Default).unwrap();
    got.get()
}

case!(
    /// A burst of short writes behind a full pipe used to cost an allocation each for its
    /// copy; they now share the stream's staging buffer, which grows by doubling. (The
    /// callbacks here capture nothing, so boxing them allocates nothing.)
    fn issue_3_short_queued_writes_allocate_nothing_for_their_data() {
        const WRITES: usize = 20_000;
        let mut lp = util::test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        // Fill the pipe: everything after this waits in the queue.
        let block = vec![1u8; 1 << 20];
        tx.write(&mut lp, &block, |_, r| r.unwrap()).unwrap();
        let line = [b'x'; 40];
        let before = evloop_platform::alloc::CountingAlloc::count();
        for _ in 0..WRITES {
            tx.write(&mut lp, &line, |_, r| r.unwrap()).unwrap();
        }
        let during = evloop_platform::alloc::CountingAlloc::count() - before;
        assert!(tx.write_queue_size(&lp).unwrap() > WRITES * line.len(), "they are queued");
        // The queue and the staging buffer each double about 15 times.
        assert!(during < 64, "{during} allocations for {WRITES} queued writes");
        assert_eq!(drain(&mut lp, rx, tx), block.len() + WRITES * line.len());
    }
);

case!(
    /// A burst of short sends behind a full pipe shares one queue entry and the staging
    /// buffer: the only allocations are the buffer's doublings (with an entry per send, the
    /// queue would double as many times again).
    fn issue_3_a_burst_of_sends_allocates_only_its_buffers_growth() {
        const SENDS: usize = 20_000;
        let mut lp = util::test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let block = vec![1u8; 1 << 20];
        tx.send(&mut lp, &block).unwrap();
        let line = [b'x'; 40];
        let before = evloop_platform::alloc::CountingAlloc::count();
        for _ in 0..SENDS {
            tx.send(&mut lp, &line).unwrap();
        }
        let during = evloop_platform::alloc::CountingAlloc::count() - before;
        assert!(tx.write_queue_size(&lp).unwrap() > SENDS * line.len(), "they are queued");
        // 800 kB in a buffer that grows by doubling: 16 allocations here.
        assert!(during <= 20, "{during} allocations for {SENDS} queued sends");
        assert_eq!(drain(&mut lp, rx, tx), block.len() + SENDS * line.len());
    }
);
