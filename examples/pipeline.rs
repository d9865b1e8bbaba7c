//! Runs a shell-like pipeline given as arguments, with stages separated by a `|` argument,
//! and prints every stage's status.
//!
//! ```sh
//! cargo run --example pipeline -- printf 'b\na\n' '|' sort '|' tr a-z A-Z
//! ```
//!
//! The stages are wired to each other directly (the loop is not in the data path); the last
//! stage writes to this program's stdout. Exits 0 when every stage succeeded, 1 otherwise
//! (like a shell with `pipefail`), 2 when the pipeline could not start.

use std::cell::RefCell;
use std::rc::Rc;

use evloop::{Command, Loop, Pipeline, RunMode};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stages: Vec<&[String]> = args.split(|a| a == "|").collect();
    if args.is_empty() || stages.iter().any(|s| s.is_empty()) {
        eprintln!("usage: pipeline PROGRAM [ARGS...] ['|' PROGRAM [ARGS...]]...");
        std::process::exit(2);
    }
    let names: Vec<String> = stages.iter().map(|s| s.join(" ")).collect();
    let pipeline = Pipeline::new(stages.iter().map(|s| {
        let mut cmd = Command::new(s[0].as_str());
        cmd.args(&s[1..]);
        cmd
    }));

    let mut lp = Loop::new()?;
    let failed = Rc::new(RefCell::new(None));
    let f = failed.clone();
    let started = pipeline.spawn(&mut lp, move |_, statuses| {
        let mut any_failed = false;
        for (i, (name, status)) in names.iter().zip(statuses).enumerate() {
            match status {
                Ok(st) => {
                    any_failed |= !st.success();
                    eprintln!("stage {} `{name}`: {st}", i + 1);
                }
                Err(e) => {
                    any_failed = true;
                    eprintln!("stage {} `{name}`: {e}", i + 1);
                }
            }
        }
        *f.borrow_mut() = Some(any_failed);
    });
    if let Err(e) = started {
        eprintln!("pipeline: {e}");
        std::process::exit(2);
    }
    lp.run(RunMode::Default)?;
    let any_failed = failed.borrow().expect("every stage exited");
    std::process::exit(i32::from(any_failed));
}
