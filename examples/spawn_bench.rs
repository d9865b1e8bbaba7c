//! Spawn throughput: `/bin/true` N times with C children in flight, each exit callback closing
//! its handle and starting the next child.
//!
//! `cargo run --release --example spawn_bench -- --count N --concurrency C`
//!
//! Options: `--reuse` spawns one `Command` again and again (by default each spawn builds its
//! own, as std, tokio and libuv callers do); `--fork` and `--sigchld` force the fallback
//! paths; `--program PATH` runs something else; `--group` puts each child in a process group
//! of its own, as a shell does with its jobs; `--ballast SIZE` (k/m/g) fills that much heap
//! first, standing for a large parent (a fork copies its page tables).
//!
//! Final line:
//! `spawn_bench count=<n> concurrency=<c> secs=<s> per_sec=<x> zombies=<z> fds_leaked=<f>`

#[path = "support/args.rs"]
mod args;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use evloop::{Command, Loop, RunMode};

struct Bench {
    program: String,
    reuse: Option<Command>,
    group: bool,
    started: u64,
    exited: u64,
    count: u64,
}

fn start(lp: &mut Loop, bench: &Rc<RefCell<Bench>>) {
    let b = bench.clone();
    let on_exit = move |lp: &mut Loop, p: evloop::Process, status: std::io::Result<evloop::ExitStatus>| {
        let status = status.expect("reap");
        assert!(status.success(), "child failed: {status}");
        p.close(lp).expect("close");
        let more = {
            let mut s = b.borrow_mut();
            s.exited += 1;
            s.started < s.count
        };
        if more {
            start(lp, &b);
        }
    };
    let mut s = bench.borrow_mut();
    s.started += 1;
    let res = match &s.reuse {
        Some(cmd) => cmd.spawn(lp, on_exit),
        None if s.group => Command::new(s.program.as_str()).process_group(0).spawn(lp, on_exit),
        None => Command::new(s.program.as_str()).spawn(lp, on_exit),
    };
    drop(s);
    res.expect("spawn");
}

/// Children of this process still there (running or zombie).
fn children_left() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        // No /proc: reap what is a zombie (counting it), without waiting for the rest.
        let mut n = 0;
        while let Ok(st) = nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if st == nix::sys::wait::WaitStatus::StillAlive {
                break;
            }
            n += 1;
        }
        return n;
    };
    tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("children")).unwrap_or_default().split_whitespace().count()
        })
        .sum()
}

fn main() -> std::io::Result<()> {
    let args = args::Args::from_env();
    let count = args.u64("--count", 1000);
    let concurrency = args.u64("--concurrency", 1).max(1);
    let program = args.value("--program").unwrap_or("/bin/true").to_string();
    // Everything the loop opens (its poller, a SIGCHLD loop's signal pipe) closes with it.
    let fds_before = evloop_platform::fd::open_fd_count()?;
    let mut lp = Loop::builder()
        .force_fork_spawn(args.flag("--fork"))
        .force_sigchld_reaping(args.flag("--sigchld"))
        .build()?;
    let group = args.flag("--group");
    let reuse = args.flag("--reuse").then(|| {
        let mut cmd = Command::new(program.as_str());
        if group {
            cmd.process_group(0);
        }
        cmd
    });
    // Touched, so that its pages are mapped.
    let ballast = vec![1u8; args.bytes("--ballast", 0) as usize];
    let bench = Rc::new(RefCell::new(Bench { program, reuse, group, started: 0, exited: 0, count }));
    let t0 = Instant::now();
    for _ in 0..concurrency.min(count) {
        start(&mut lp, &bench);
    }
    lp.run(RunMode::Default)?;
    let secs = t0.elapsed().as_secs_f64();
    if std::env::var_os("SPAWN_BENCH_DEBUG").is_some() {
        eprintln!("iterations: {}", lp.iterations());
    }
    let exited = bench.borrow().exited;
    assert_eq!(exited, count, "every child exited");
    drop(lp);
    drop(std::hint::black_box(ballast));
    let fds_leaked = evloop_platform::fd::open_fd_count()? as i64 - fds_before as i64;
    let zombies = children_left();
    println!(
        "spawn_bench count={count} concurrency={concurrency} secs={secs:.3} per_sec={:.0} zombies={zombies} fds_leaked={fds_leaked}",
        count as f64 / secs
    );
    Ok(())
}
