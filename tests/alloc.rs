//! Reading allocates nothing in steady state: a counting global allocator proves it.
//!
//! A binary of its own, because the global allocator is process-wide.

#[macro_use]
#[path = "it/util.rs"]
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use evloop::{Pipe, ReadEvent, RunMode};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
                    base.set(ALLOCS.load(Relaxed));
                }
            }
            ReadEvent::Eof => p.close(lp).unwrap(),
            ReadEvent::Error(e) => panic!("{e}"),
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        let during = ALLOCS.load(Relaxed) - baseline.get();
        writer.join().unwrap();
        assert_eq!(bytes.get(), TOTAL);
        assert!(reads.get() >= 4096, "{} reads", reads.get());
        // The close at the end (slot release, pending callbacks) may allocate a few times;
        // per read it must be zero.
        assert!(during < 16, "{during} allocations during {} reads", reads.get() - 100);
    }
);
