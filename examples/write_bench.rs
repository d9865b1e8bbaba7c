//! Small writes: N lines, each its own `write` with its own callback, to `cat` (whose output
//! goes to /dev/null), with the backpressure a careful producer applies: it writes until
//! `write_queue_size` reaches a high-water mark, and writes more from a completion callback
//! once the queue is below a low-water mark. Most lines are queued, then, not written at
//! once: this measures the write queue.
//!
//! With `--send`, each line is a `send` instead (no callback): an empty `write` queued where
//! the queue crosses `high - low` says, when its callback runs, that the queue is down to
//! about the low-water mark, and one at the end that every line is out.
//!
//! `cargo run --release --example write_bench -- [--lines 1000000] [--line-bytes 32] [--high 256k] [--low 64k] [--send] [--force-select]`
//!
//! Final line:
//! `write_bench lines=<n> line_bytes=<l> secs=<s> lines_per_sec=<x> max_queue=<q> allocs_per_line=<a>`
//!
//! `allocs_per_line` counts heap allocations from the first write to the last callback (the
//! callbacks' boxes included: each captures state), per line, with a counting allocator.

#[path = "support/args.rs"]
mod args;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use evloop::{Command, Loop, Pipe, RunMode, Stdio};
use evloop_platform::alloc::CountingAlloc;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

struct State {
    lines: u64,
    line: Vec<u8>,
    high: usize,
    low: usize,
    send: bool,
    /// An empty write marks the low-water point in the queue (`--send`).
    marked: Cell<bool>,
    sent: Cell<u64>,
    done: Cell<u64>,
    max_queue: Cell<usize>,
}

/// Writes lines until the queue reaches the high-water mark or every line is out.
fn fill(lp: &mut Loop, pipe: Pipe, st: &Rc<State>) {
    while st.sent.get() < st.lines {
        let queued = pipe.write_queue_size(lp).expect("open");
        st.max_queue.set(st.max_queue.get().max(queued));
        if queued >= st.high {
            if st.send && !st.marked.get() {
                // (The marker made below ran, the queue still above its mark.)
                mark(lp, pipe, st);
            }
            return;
        }
        st.sent.set(st.sent.get() + 1);
        if !st.send {
            let s = st.clone();
            pipe.write(lp, &st.line, move |lp, r| written(lp, pipe, &s, r)).expect("write");
            continue;
        }
        pipe.send(lp, &st.line).expect("send");
        if st.sent.get() == st.lines {
            // Everything is out when this runs.
            let s = st.clone();
            pipe.write(lp, b"", move |lp, r| {
                r.expect("send to cat");
                s.done.set(s.lines);
                pipe.close(lp).expect("open");
            })
            .expect("write");
        } else if !st.marked.get() && queued + st.line.len() >= st.high - st.low.min(st.high) {
            mark(lp, pipe, st);
        }
    }
}

/// Queues an empty write whose callback, once everything before it is out, fills again.
fn mark(lp: &mut Loop, pipe: Pipe, st: &Rc<State>) {
    st.marked.set(true);
    let s = st.clone();
    pipe.write(lp, b"", move |lp, r| {
        r.expect("send to cat");
        s.marked.set(false);
        fill(lp, pipe, &s);
    })
    .expect("write");
}

fn written(lp: &mut Loop, pipe: Pipe, st: &Rc<State>, r: std::io::Result<()>) {
    r.expect("write to cat");
    st.done.set(st.done.get() + 1);
    if st.done.get() == st.lines {
        // The child sees the end of its input and exits.
        pipe.close(lp).expect("open");
    } else if pipe.write_queue_size(lp).expect("open") <= st.low {
        fill(lp, pipe, st);
    }
}

fn main() -> std::io::Result<()> {
    let args = args::Args::from_env();
    let lines = args.u64("--lines", 1_000_000);
    let line_bytes = args.bytes("--line-bytes", 32).max(1) as usize;
    let high = args.bytes("--high", 256 << 10) as usize;
    let low = args.bytes("--low", 64 << 10) as usize;
    let send = args.flag("--send");
    let mut lp = Loop::builder().force_select_helper(args.flag("--force-select")).build()?;
    let mut line = vec![b'x'; line_bytes];
    line[line_bytes - 1] = b'\n';
    let st = Rc::new(State {
        lines,
        line,
        high,
        low,
        send,
        marked: Cell::new(false),
        sent: Cell::new(0),
        done: Cell::new(0),
        max_queue: Cell::new(0),
    });
    let exited = Rc::new(Cell::new(false));
    let ex = exited.clone();
    let child =
        Command::new("cat").stdin(Stdio::Pipe).stdout(Stdio::Null).spawn(&mut lp, move |lp, p, res| {
            assert!(res.expect("cat").success(), "cat failed");
            ex.set(true);
            p.close(lp).expect("open");
        })?;
    let pipe = child.stdin.expect("a pipe");
    let start = Instant::now();
    let allocs_before = CountingAlloc::count();
    fill(&mut lp, pipe, &st);
    lp.run(RunMode::Default)?;
    let secs = start.elapsed().as_secs_f64();
    let allocs = CountingAlloc::count() - allocs_before;
    assert!(exited.get(), "the loop ended before cat exited");
    assert_eq!(st.done.get(), lines, "every line went out");
    println!(
        "write_bench lines={lines} line_bytes={line_bytes} secs={secs:.3} lines_per_sec={:.0} max_queue={} allocs_per_line={:.3}",
        lines as f64 / secs,
        st.max_queue.get(),
        allocs as f64 / lines as f64
    );
    Ok(())
}
