//! Latency: 1-byte messages to `cat` and back over two pipes, one at a time.
//!
//! `cargo run --release --example pingpong -- --secs 1 [--child PROGRAM] [--try-write | --send] [--force-select]`
//!
//! Each message is a `write` with a callback, or with `--try-write` a `try_write`, or with
//! `--send` a `send` (no callback).
//!
//! Final line: `pingpong round_trips=<n> secs=<s> rt_per_sec=<x>`

#[path = "support/args.rs"]
mod args;

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Instant;

use evloop::{Loop, Pipe, ReadEvent, RunMode};

fn main() -> std::io::Result<()> {
    let args = args::Args::from_env();
    let secs = args.f64("--secs", 1.0);
    let program = args.value("--child").unwrap_or("cat").to_string();
    let try_write = args.flag("--try-write");
    let send_only = args.flag("--send");
    let mut lp = Loop::builder().force_select_helper(args.flag("--force-select")).build()?;
    let mut child = Command::new(&program).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let to_child = Pipe::open(&mut lp, OwnedFd::from(child.stdin.take().expect("piped")))?;
    let from_child = Pipe::open(&mut lp, OwnedFd::from(child.stdout.take().expect("piped")))?;
    let trips = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let send = move |lp: &mut Loop| {
        if try_write {
            assert_eq!(to_child.try_write(lp, b"x").expect("try_write"), 1);
        } else if send_only {
            to_child.send(lp, b"x").expect("send");
        } else {
            to_child.write(lp, b"x", |_, r| r.expect("write")).expect("write");
        }
    };
    let t = trips.clone();
    from_child.read_start(&mut lp, move |lp, from_child, ev| match ev {
        ReadEvent::Data(d) => {
            t.set(t.get() + d.len() as u64);
            if t.get().is_multiple_of(1024) && start.elapsed().as_secs_f64() >= secs {
                // Closing stdin makes the child exit; its stdout then ends.
                to_child.close(lp).expect("open");
            } else {
                send(lp);
            }
        }
        ReadEvent::Eof => from_child.close(lp).expect("open"),
        ReadEvent::Error(e) => panic!("pingpong: read: {e}"),
    })?;
    send(&mut lp);
    lp.run(RunMode::Default)?;
    let elapsed = start.elapsed().as_secs_f64();
    child.wait()?;
    println!(
        "pingpong round_trips={} secs={elapsed:.3} rt_per_sec={:.0}",
        trips.get(),
        trips.get() as f64 / elapsed
    );
    Ok(())
}
