//! Many timers: start N with pseudo-random timeouts in 0..999 ms (the same fixed-seed LCG as
//! libuv's million-timers benchmark), run until all fired, then close them all.
//!
//! `cargo run --release --example timers_bench -- --count 1000000`
//!
//! Final line:
//! `timers_bench count=<n> start_ms=<a> run_ms=<b> close_ms=<c> cpu_ms=<d> late_ms_max=<e>`
//! where `late_ms_max` is the largest delay the loop added to a timer: from the later of the
//! timer's due time (the moment its `start` was called plus its timeout) and the moment the
//! loop got control back (`run` started), to the moment its callback ran. Timers due while
//! the program was still inserting cannot run before it returns to the loop; that wait is
//! the insert phase, reported as `start_ms` (libuv's benchmark measures lateness the same way,
//! from the end of the inserts). To keep clock reads out of the insert loop, "the moment
//! `start` was called" is read once per 256 timers; the value used is never later than the
//! true one, so lateness is if anything overstated.

#[path = "support/args.rs"]
mod args;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::{Loop, RunMode, Timer};

fn main() -> std::io::Result<()> {
    let args = args::Args::from_env();
    let count = args.u64("--count", 1_000_000) as usize;
    let max_ms = args.u64("--max-ms", 1000);
    let mut lp = Loop::new()?;
    let fired = Rc::new(Cell::new(0usize));
    let late_max = Rc::new(Cell::new(Duration::ZERO));
    let run_start = Rc::new(Cell::new(None::<Instant>));
    let mut timers = Vec::with_capacity(count);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let cpu0 = evloop_platform::time::process_cpu_time()?;
    let t0 = Instant::now();
    let mut started = t0;
    for i in 0..count {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let timeout = Duration::from_millis((seed >> 33) % max_ms);
        if i.is_multiple_of(256) {
            started = Instant::now();
        }
        let due = started + timeout;
        let t = Timer::new(&mut lp);
        let (f, l, r) = (fired.clone(), late_max.clone(), run_start.clone());
        t.start(&mut lp, timeout, Duration::ZERO, move |_, _| {
            f.set(f.get() + 1);
            let from = r.get().map_or(due, |r| r.max(due));
            let late = Instant::now().saturating_duration_since(from);
            if late > l.get() {
                l.set(late);
            }
        })?;
        timers.push(t);
    }
    let t1 = Instant::now();
    run_start.set(Some(t1));
    lp.run(RunMode::Default)?;
    let t2 = Instant::now();
    for t in timers {
        t.close(&mut lp)?;
    }
    lp.run(RunMode::Default)?;
    let t3 = Instant::now();
    let cpu = evloop_platform::time::process_cpu_time()? - cpu0;
    assert_eq!(fired.get(), count, "every timer fired once");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "timers_bench count={count} start_ms={:.1} run_ms={:.1} close_ms={:.1} cpu_ms={:.1} late_ms_max={:.1}",
        ms(t1 - t0),
        ms(t2 - t1),
        ms(t3 - t2),
        ms(cpu),
        ms(late_max.get())
    );
    Ok(())
}
