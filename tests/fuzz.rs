//! The operation fuzzer's fixed seeds (see `tests/common/fuzz.rs`), directly and through the
//! select helper. `examples/fuzz_soak.rs` runs the same model for as long as asked.

#[macro_use]
#[path = "it/util.rs"]
mod util;
#[path = "common/fuzz.rs"]
mod fuzz;

const SEEDS: u64 = 1000;
const OPS: usize = 400;

fn run(force_select: bool) {
    let mut total = fuzz::Stats::default();
    for seed in 0..SEEDS {
        match fuzz::run_sequence(seed, OPS, force_select) {
            Ok(s) => total += s,
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!(
        "fuzz: {} sequences, {} operations, {} bytes written, {} callbacks",
        total.sequences, total.ops, total.bytes_written, total.callbacks
    );
}

case!(
    secs = 300,
    fn fixed_seeds() {
        run(util::forced_select());
    }
);

case!(
    secs = 300,
    fn fixed_seeds_through_the_select_helper() {
        run(true);
    }
);
