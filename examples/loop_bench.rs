//! The cost of an empty loop iteration: `run(NoWait)` with one idle pipe registered.
//!
//! `cargo run --release --example loop_bench -- --secs 1`
//!
//! Final line: `loop_bench iters=<n> secs=<s> ns_per_iter=<x>`

#[path = "support/args.rs"]
mod args;

use std::time::Instant;

use evloop::{Loop, Pipe, RunMode};

fn main() -> std::io::Result<()> {
    let args = args::Args::from_env();
    let secs = args.f64("--secs", 1.0);
    let mut lp = Loop::builder().force_select_helper(args.flag("--force-select")).build()?;
    // One registered, idle pipe, as in the raw epoll_wait(0) baseline.
    let (rx, tx) = Pipe::pair(&mut lp)?;
    rx.read_start(&mut lp, |_, _, _| unreachable!("nothing is ever written"))?;
    // Register it before timing starts.
    lp.run(RunMode::NoWait)?;
    let start = Instant::now();
    let mut iters: u64 = 0;
    loop {
        for _ in 0..1024 {
            lp.run(RunMode::NoWait)?;
        }
        iters += 1024;
        if start.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    rx.close(&mut lp)?;
    tx.close(&mut lp)?;
    lp.run(RunMode::Default)?;
    println!("loop_bench iters={iters} secs={elapsed:.3} ns_per_iter={:.1}", elapsed * 1e9 / iters as f64);
    Ok(())
}
