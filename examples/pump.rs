//! Pipe throughput: a writer process (this program, re-executed) writes N bytes in blocking
//! 64 KiB writes; the loop reads them with bounded reads.
//!
//! `cargo run --release --example pump -- --bytes 2g [--read-cap 64k] [--pipe-size 1m] [--force-select] [--child PROGRAM]`
//!
//! Final line:
//! `pump bytes=<n> secs=<s> gbps=<x> reads=<r> max_read=<m> allocs_per_read=<a>`
//! `allocs_per_read` counts heap allocations made while reading (from the first read to end of
//! file), per read, with a counting global allocator.

#[path = "support/args.rs"]
mod args;

use std::cell::Cell;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Instant;

use evloop::{Loop, Pipe, ReadEvent, RunMode};

#[global_allocator]
static GLOBAL: evloop_platform::alloc::CountingAlloc = evloop_platform::alloc::CountingAlloc;

/// The other side: blocking 64 KiB writes straight to fd 1 (no `Stdout` line buffering, which
/// would scan every block for newlines).
fn writer(total: u64) {
    let block = vec![0x5au8; 64 << 10];
    let out = std::io::stdout();
    let fd = out.as_fd();
    let mut left = total;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        let mut done = 0;
        while done < n {
            done += evloop_platform::fd::write(fd, &block[done..n]).expect("writer: write");
        }
        left -= n as u64;
    }
}

fn main() -> std::io::Result<()> {
    let args = args::Args::from_env();
    let total = args.bytes("--bytes", 1 << 30);
    if args.flag("--writer") {
        writer(total);
        return Ok(());
    }
    let read_cap = args.bytes("--read-cap", 64 << 10) as usize;
    let mut lp = Loop::builder().force_select_helper(args.flag("--force-select")).build()?;
    // The writer: this program again, or `--child PROGRAM`, run as `PROGRAM TOTAL 65536` (the
    // peers' writer, for a comparison with the same other side).
    let mut writer = match args.value("--child") {
        Some(program) => {
            let mut c = Command::new(program);
            c.args([total.to_string(), (64 << 10).to_string()]);
            c
        }
        None => {
            let mut c = Command::new(std::env::current_exe()?);
            c.args(["--writer", "--bytes", &total.to_string()]);
            c
        }
    };
    let mut child = writer.stdout(Stdio::piped()).spawn()?;
    let out = OwnedFd::from(child.stdout.take().expect("piped"));
    if let Some(size) = args.value("--pipe-size").and_then(args::parse_bytes) {
        evloop_platform::fd::set_pipe_size(out.as_fd(), size as usize)?;
    }
    let rx = Pipe::open(&mut lp, out)?;
    rx.set_read_cap(&mut lp, read_cap)?;
    // One shared record, so the callback does about as little per read as the peers' do.
    // Allocations are counted from the first read to end of file: the steady state.
    #[derive(Default)]
    struct Stats {
        got: Cell<u64>,
        reads: Cell<u64>,
        max_read: Cell<usize>,
        allocs_at_first_read: Cell<Option<u64>>,
        allocs_at_eof: Cell<u64>,
    }
    let stats = Rc::new(Stats::default());
    let st = stats.clone();
    let start = Instant::now();
    rx.read_start(&mut lp, move |lp, rx, ev| match ev {
        ReadEvent::Data(d) => {
            if st.allocs_at_first_read.get().is_none() {
                st.allocs_at_first_read.set(Some(evloop_platform::alloc::CountingAlloc::count()));
            }
            st.got.set(st.got.get() + d.len() as u64);
            st.reads.set(st.reads.get() + 1);
            st.max_read.set(st.max_read.get().max(d.len()));
        }
        ReadEvent::Eof => {
            st.allocs_at_eof.set(evloop_platform::alloc::CountingAlloc::count());
            rx.close(lp).expect("open");
        }
        ReadEvent::Error(e) => panic!("pump: read: {e}"),
    })?;
    lp.run(RunMode::Default)?;
    let secs = start.elapsed().as_secs_f64();
    let allocs = stats.allocs_at_eof.get() - stats.allocs_at_first_read.get().unwrap_or(0);
    child.wait()?;
    assert_eq!(stats.got.get(), total, "every byte arrived");
    let reads = stats.reads.get().max(1);
    println!(
        "pump bytes={total} secs={secs:.3} gbps={:.3} reads={reads} max_read={} allocs_per_read={:.4}",
        total as f64 / secs / 1e9,
        stats.max_read.get(),
        allocs as f64 / reads as f64
    );
    Ok(())
}
