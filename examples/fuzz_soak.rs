//! Runs the operation fuzzer (`tests/common/fuzz.rs`) for as long as asked, and reports how
//! many sequences and operations it tried.
//!
//! ```text
//! cargo run --release --example fuzz_soak -- --secs 3600 [--ops 400] [--first-seed 0] [--force-select]
//! cargo run --release --example fuzz_soak -- --count 100 [--first-seed 0]   # a fixed set
//! cargo run --release --example fuzz_soak -- --seed 1234 [--force-select]   # replay one seed
//! ```
//!
//! Final line: `fuzz_soak sequences=<n> ops=<o> bytes=<b> callbacks=<c> secs=<s> failures=<f>`

#[path = "support/args.rs"]
mod args;
#[path = "../tests/common/fuzz.rs"]
mod fuzz;

use std::time::Instant;

fn main() {
    let args = args::Args::from_env();
    let ops = args.u64("--ops", 400) as usize;
    let force = args.flag("--force-select");
    if let Some(seed) = args.value("--seed") {
        let seed: u64 = seed.parse().expect("--seed takes a number");
        match fuzz::run_sequence(seed, ops, force) {
            Ok(s) => println!("seed {seed}: ok, {} operations, {} callbacks", s.ops, s.callbacks),
            Err(e) => {
                println!("seed {seed}: FAILED: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let secs = args.f64("--secs", 10.0);
    let count = args.value("--count").map(|c| c.parse::<u64>().expect("--count takes a number"));
    let first = args.u64("--first-seed", 0);
    let mut seed = first;
    let start = Instant::now();
    let mut total = fuzz::Stats::default();
    let mut failures = 0u64;
    let more = |seed: u64, start: &Instant| match count {
        Some(n) => seed < first + n,
        None => start.elapsed().as_secs_f64() < secs,
    };
    while more(seed, &start) {
        let res = std::panic::catch_unwind(|| fuzz::run_sequence(seed, ops, force));
        match res {
            Ok(Ok(s)) => total += s,
            Ok(Err(e)) => {
                failures += 1;
                eprintln!("seed {seed}: FAILED: {e}");
            }
            Err(_) => {
                failures += 1;
                eprintln!("seed {seed}: PANICKED");
            }
        }
        seed += 1;
    }
    println!(
        "fuzz_soak sequences={} ops={} bytes={} callbacks={} secs={:.0} failures={failures}",
        total.sequences,
        total.ops,
        total.bytes_written,
        total.callbacks,
        start.elapsed().as_secs_f64()
    );
    if failures > 0 {
        std::process::exit(1);
    }
}
