//! Runs a shell-like pipeline given as arguments, with stages separated by a `|` argument,
//! and prints every stage's status.
//!
//! ```sh
//! cargo run --example pipeline -- printf 'b\na\n' '|' sort '|' tr a-z A-Z
//! ```
//!
//! The stages are wired to each other directly (the loop is not in the data path); the last
//! stage writes to this program's stdout. Exits 0 when every stage succeeded, 1 otherwise
//! (like a shell with `pipefail`), 2 when the pipeline could not start at all (bad input, or
//! no pipe to be had). As in a shell, a stage that cannot start (a typo in a program's name)
//! is reported with the others' statuses, and the others run on without it.
//!
//! Without a controlling terminal (a build tool's or a CI job's case), the stages share one
//! process group of their own, and `SIGINT` or `SIGTERM` sent to this program goes on to the
//! whole group: the stages and whatever they started. With one they stay in this program's
//! group: a group of their own would be a background job there, stopped by the terminal as
//! soon as a stage reads it (a password prompt on `/dev/tty`, say; an interactive shell
//! hands the terminal over instead, see `Tty::set_foreground_group`), while Ctrl-C reaches
//! every stage of the foreground group anyway. Then only `SIGTERM` is passed on, to each
//! stage.

use std::cell::RefCell;
use std::rc::Rc;

use evloop::signal::{SIGINT, SIGTERM};
use evloop::{Command, Loop, Pipeline, RunMode, Signal};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let stages: Vec<&[String]> = args.split(|a| a == "|").collect();
    if args.is_empty() || stages.iter().any(|s| s.is_empty()) {
        eprintln!("usage: pipeline PROGRAM [ARGS...] ['|' PROGRAM [ARGS...]]...");
        std::process::exit(2);
    }
    let names: Vec<String> = stages.iter().map(|s| s.join(" ")).collect();
    let mut pipeline = Pipeline::new(stages.iter().map(|s| {
        let mut cmd = Command::new(s[0].as_str());
        cmd.args(&s[1..]);
        cmd
    }));
    // Whether there is a controlling terminal, which a stage could read even with its stdio
    // redirected.
    let on_terminal = std::fs::File::open("/dev/tty").is_ok();
    pipeline.process_group(!on_terminal);

    let mut lp = Loop::new()?;
    let failed = Rc::new(RefCell::new(None));
    let f = failed.clone();
    let started = pipeline.spawn_each(&mut lp, move |_, statuses| {
        let mut any_failed = false;
        for (i, (name, status)) in names.iter().zip(statuses).enumerate() {
            match status {
                Ok(st) => {
                    any_failed |= !st.success();
                    eprintln!("stage {} `{name}`: {st}", i + 1);
                }
                Err(e) => {
                    // (The error names the stage and its program.)
                    any_failed = true;
                    eprintln!("{e}");
                }
            }
        }
        *f.borrow_mut() = Some(any_failed);
    });
    let children = match started {
        Ok(children) => children,
        Err(e) => {
            eprintln!("pipeline: {e}");
            std::process::exit(2);
        }
    };
    // Pass the signals on: to the job's group, or (SIGTERM only: the terminal's Ctrl-C
    // reaches them itself) to each stage. The watchers are unreferenced: the loop ends when
    // the stages have.
    let processes: Vec<_> = children.iter().flatten().map(|c| c.process).collect();
    let forwarded: &[i32] = if on_terminal { &[SIGTERM] } else { &[SIGINT, SIGTERM] };
    for &signum in forwarded {
        let sig = Signal::new(&mut lp);
        let processes = processes.clone();
        sig.start(&mut lp, signum, move |lp, _, signum| {
            // A stage (or the whole group) may be gone already: nothing to pass on then.
            if on_terminal {
                for p in &processes {
                    let _ = p.kill(lp, signum);
                }
            } else if let Some(first) = processes.first() {
                // (The group's leader: the first stage that started.)
                let _ = first.kill_group(lp, signum);
            }
        })?;
        sig.set_ref(&mut lp, false)?;
    }
    lp.run(RunMode::Default)?;
    let any_failed = failed.borrow().expect("every stage exited");
    std::process::exit(i32::from(any_failed));
}
