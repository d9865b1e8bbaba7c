//! A model-checked operation fuzzer for evloop.
//!
//! A seed drives a deterministic generator of loop operations: create and close pipes (also
//! from inside callbacks), start and stop reads, write, send, try_write and shutdown, start, stop
//! and re-arm timers, wake async handles from other threads, spawn, kill and give deadlines to
//! children (some with timeouts), capture children's output (each stream captured, dropped
//! or joined to the other; on a pty; a pipeline's), use stale and foreign ids, and run the loop a step at a time.
//! A small model of what must be true runs beside it:
//!
//! - no panic, anywhere;
//! - every write and shutdown callback runs exactly once, and every close callback exactly
//!   once;
//! - the bytes a reader receives are a prefix of the bytes written to its pipe, in order, and
//!   all of them when the writer shut down cleanly and the reader read to end of file;
//! - a stale or foreign id always gives an error;
//! - a child's exit callback can read its recorded resource usage, and only where asked for;
//! - a capture of a child that ended well holds what the child wrote to the streams it
//!   captures, and nothing of those the command sends elsewhere;
//! - a stopped timer never fires, a one-shot timer fires at most once per start;
//! - once the loop is dropped, no fd is left that it opened.
//!
//! `tests/fuzz.rs` runs a fixed set of seeds; `examples/fuzz_soak.rs` runs seeds for as long
//! as asked and reports how many sequences and operations it tried.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use evloop::{
    Async, Command, HandleId, Loop, Pipe, Pipeline, Process, ReadEvent, RunMode, Stdio, Timer, Waker,
};

/// What a run tried.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub sequences: u64,
    pub ops: u64,
    pub bytes_written: u64,
    pub callbacks: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.sequences += o.sequences;
        self.ops += o.ops;
        self.bytes_written += o.bytes_written;
        self.callbacks += o.callbacks;
    }
}

/// xorshift64*: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Counts calls of one callback; the model checks it ran exactly once.
#[derive(Clone, Default)]
struct Once(Rc<Cell<u32>>);

impl Once {
    fn hit(&self) {
        self.0.set(self.0.get() + 1);
    }
    fn count(&self) -> u32 {
        self.0.get()
    }
}

struct PipeModel {
    rx: Pipe,
    tx: Pipe,
    /// Shared with timer callbacks that may close the end.
    rx_open: Rc<Cell<bool>>,
    tx_open: Rc<Cell<bool>>,
    reading: bool,
    shut: bool,
    /// Every byte handed to write/send/try_write, in order.
    sent: Vec<u8>,
    /// Set when any write failed or was cancelled: from then on only a prefix is promised.
    lossy: Rc<Cell<bool>>,
    received: Rc<RefCell<Vec<u8>>>,
    eof: Rc<Cell<bool>>,
    read_error: Rc<Cell<bool>>,
    /// The read end's read cap, which read callbacks change now and then.
    read_cap: Rc<Cell<usize>>,
    /// The read callbacks' random state.
    cap_rng: Rc<Cell<u64>>,
}

struct ProcModel {
    p: Process,
    open: bool,
    /// A capture's handle closes itself once its callback has run.
    closed_itself: Rc<Cell<bool>>,
    /// Exit callbacks run: at most one, and exactly one unless the handle closed first.
    exits: Rc<Cell<u32>>,
    /// The lossy flag of the pipe model wired to its stdin/stdout (a `cat`), if any.
    lossy: Option<Rc<Cell<bool>>>,
    /// A capture's (`cut_output` works on it while it is open).
    capture: bool,
}

impl PipeModel {
    fn new(rx: Pipe, tx: Pipe, seed: u64) -> PipeModel {
        PipeModel {
            rx,
            tx,
            rx_open: Rc::new(Cell::new(true)),
            tx_open: Rc::new(Cell::new(true)),
            reading: false,
            shut: false,
            sent: Vec::new(),
            lossy: Rc::new(Cell::new(false)),
            received: Rc::default(),
            eof: Rc::default(),
            read_error: Rc::default(),
            read_cap: Rc::new(Cell::new(evloop::limits::READ_CAP_BYTES_DEFAULT)),
            cap_rng: Rc::new(Cell::new(seed)),
        }
    }
}

struct TimerModel {
    t: Timer,
    open: bool,
    /// The model's view: may the callback fire now?
    armed: Rc<Cell<bool>>,
    repeating: Rc<Cell<bool>>,
    fired: Rc<Cell<u32>>,
}

/// Everything the sequence has to check at the end.
#[derive(Default)]
struct Ledger {
    /// Callbacks that must run exactly once.
    once: Vec<(String, Once)>,
    /// Close callbacks registered from inside callbacks: (what, how many were registered,
    /// how many ran).
    counted: Vec<(String, Rc<Cell<u32>>, Once)>,
    stale: Rc<RefCell<Vec<HandleId>>>,
    callbacks: Rc<Cell<u64>>,
}

impl Ledger {
    fn expect_once(&mut self, what: String) -> Once {
        let o = Once::default();
        self.once.push((what, o.clone()));
        o
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// `bytes` a write call took: only an open pipe takes any, and its reader must get them.
fn accepted(
    p: &mut PipeModel,
    stats: &mut Stats,
    bytes: &[u8],
    writable: bool,
    what: impl FnOnce() -> String,
) -> Result<(), String> {
    check(writable, || format!("{}: accepted on a closed pipe", what()))?;
    p.sent.extend_from_slice(bytes);
    stats.bytes_written += bytes.len() as u64;
    Ok(())
}

fn start_reading(
    lp: &mut Loop,
    p: &mut PipeModel,
    calls: &Rc<Cell<u64>>,
    stale: &Rc<RefCell<Vec<HandleId>>>,
) -> io::Result<()> {
    let (received, eof, err, calls) =
        (p.received.clone(), p.eof.clone(), p.read_error.clone(), calls.clone());
    let (cap, cap_rng) = (p.read_cap.clone(), p.cap_rng.clone());
    let (rx_open, stale) = (p.rx_open.clone(), stale.clone());
    // Per read_start: the last event (end of file or an error) comes at most once, and
    // nothing after it. Restarting after end of file reports end of file again.
    let ended = Cell::new(false);
    p.rx.read_start(lp, move |lp, rx, ev| {
        calls.set(calls.get() + 1);
        assert!(!ended.get(), "a read callback ran after its last event");
        match ev {
            ReadEvent::Data(d) => {
                assert!(!eof.get(), "data after end of file");
                assert!(d.len() <= cap.get(), "a read of {} bytes with the cap at {}", d.len(), cap.get());
                received.borrow_mut().extend_from_slice(d);
                // One read in eight, the callback changes its stream's read cap, often in the
                // middle of a round of reads: the very next read must ask for the new cap.
                let x = cap_rng
                    .get()
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                cap_rng.set(x);
                if x >> 61 == 0 {
                    let new = [512, 4096, 65536][(x >> 32) as usize % 3];
                    rx.set_read_cap(lp, new).expect("set_read_cap from a read callback");
                    cap.set(new);
                }
                // One read in 64, it closes its stream: no call may follow, even if the read
                // was full and more is waiting.
                if (x >> 16) & 63 == 0 {
                    rx.close(lp).expect("close from a read callback");
                    rx_open.set(false);
                    stale.borrow_mut().push(rx.id());
                    ended.set(true);
                }
            }
            ReadEvent::Eof => {
                eof.set(true);
                ended.set(true);
            }
            ReadEvent::Error(_) => {
                err.set(true);
                ended.set(true);
            }
        }
    })
}

/// Where a capture's child sends one of its output streams.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Dest {
    Captured,
    Null,
    /// To the other stream (`2>&1`, `1>&2`).
    Joined,
}

/// A capture (`output` or `stream_output`) of a shell that writes a line to each stream,
/// each captured, dropped or sent to the other; once the shell ends well, what the capture
/// got must be what the settings say. Its done callback counts in `exits`.
fn start_capture(
    lp: &mut Loop,
    rng: &mut Rng,
    record: bool,
    exits: Rc<Cell<u32>>,
    closed_itself: Rc<Cell<bool>>,
) -> io::Result<Process> {
    let dests = [Dest::Captured, Dest::Null, Dest::Joined];
    let (out, err) = loop {
        let pair = (dests[rng.below(3) as usize], dests[rng.below(3) as usize]);
        if pair != (Dest::Joined, Dest::Joined) {
            break pair;
        }
    };
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo o; echo e >&2"]).kill_on_drop(true).record_usage(record);
    for (fd, dest) in [(1, out), (2, err)] {
        match dest {
            Dest::Captured => {}
            Dest::Null => {
                cmd.fd(fd, Stdio::Null);
            }
            Dest::Joined => {
                cmd.fd(fd, Stdio::SameAs(3 - fd));
            }
        }
    }
    if rng.chance(20) {
        cmd.timeout(Duration::from_millis(rng.below(20)), Duration::from_millis(rng.below(20)));
    }
    // What each field must hold, if captured: stdout's line, then stderr's (the shell's
    // order), each where its stream goes.
    let line = |b: &'static [u8], cond: bool| if cond { b } else { &b""[..] };
    let want_out = match out {
        Dest::Captured => [b"o\n", line(b"e\n", err == Dest::Joined)].concat(),
        _ => Vec::new(),
    };
    let want_err = match err {
        Dest::Captured => [line(b"o\n", out == Dest::Joined), b"e\n"].concat(),
        _ => Vec::new(),
    };
    let want = (want_out, want_err);
    let all = want.clone();
    let check = move |status: &evloop::ExitStatus, got: (&[u8], &[u8])| {
        if status.success() {
            assert_eq!(got, (&want.0[..], &want.1[..]), "capture of stdout {out:?}, stderr {err:?}");
        }
    };
    if rng.chance(50) {
        // Now and then, only the last bytes kept.
        let last = rng.chance(25).then(|| rng.below(4) as usize);
        if let Some(n) = last {
            cmd.output_limit_last(n);
        }
        let want = (check.clone(), all);
        return cmd.output(lp, move |_, res| {
            exits.set(exits.get() + 1);
            closed_itself.set(true);
            let o = res.expect("a capture's result");
            assert_eq!(o.usage.is_some(), record, "resource usage (recorded: {record})");
            let (check, (all_out, all_err)) = &want;
            let tail = |all: &[u8], n: usize| all[all.len().saturating_sub(n)..].to_vec();
            match (o.cut, last) {
                // Cut (`cut_output`): what came before.
                (true, None) => assert!(
                    all_out.starts_with(&o.stdout) && all_err.starts_with(&o.stderr),
                    "cut capture: {o:?}"
                ),
                (true, Some(n)) => assert!(o.stdout.len() <= n && o.stderr.len() <= n, "{o:?}"),
                (false, None) => check(&o.status, (&o.stdout, &o.stderr)),
                (false, Some(n)) if o.status.success() => {
                    assert_eq!((tail(all_out, n), tail(all_err, n)), (o.stdout, o.stderr), "last {n}")
                }
                (false, Some(_)) => {}
            }
        });
    }
    let got = Rc::new(RefCell::new((Vec::new(), Vec::new())));
    let g = got.clone();
    cmd.stream_output(
        lp,
        move |_, _, which, bytes| {
            let mut g = g.borrow_mut();
            let into = if which == evloop::OutputStream::Stdout { &mut g.0 } else { &mut g.1 };
            into.extend_from_slice(bytes);
        },
        move |lp, p, res| {
            exits.set(exits.get() + 1);
            closed_itself.set(true);
            let usage = p.resource_usage(lp);
            assert!(record == matches!(usage, Ok(Some(_))), "resource usage (recorded: {record}): {usage:?}");
            // (Cut short by its timeout: `TimedOut`.)
            if let Ok(status) = res {
                let g = got.borrow();
                check(&status, (&g.0, &g.1));
            }
        },
    )
}

/// A pipeline capture (`Pipeline::output`): `printf` into one to three `cat`s, now and then
/// in a group of its own, with the last stage's `wait_delay` or output limit. The handle
/// returned is the last stage's (the others close with it). Once every stage ends well and
/// nothing was cut, the output is all of `printf`'s; cut, a prefix of it.
fn start_pipeline_capture(
    lp: &mut Loop,
    rng: &mut Rng,
    exits: Rc<Cell<u32>>,
    closed_itself: Rc<Cell<bool>>,
) -> io::Result<Process> {
    const ALL: &[u8] = b"a\nb\n";
    let mut printf = Command::new("printf");
    printf.arg("a\\nb\\n");
    let mut stages = vec![printf];
    stages.extend((0..rng.below(3)).map(|_| Command::new("cat")));
    let mut last = Command::new("cat");
    if rng.chance(30) {
        last.wait_delay(Duration::from_millis(rng.below(20)));
    }
    let limit = rng.chance(25).then(|| (rng.below(4) as usize, rng.chance(50)));
    match limit {
        Some((n, false)) => last.output_limit(n),
        Some((n, true)) => last.output_limit_last(n),
        None => &mut last,
    };
    stages.push(last);
    let mut pipeline = Pipeline::new(stages);
    pipeline.process_group(rng.chance(50));
    let handles = pipeline.output(lp, move |_, res| {
        exits.set(exits.get() + 1);
        closed_itself.set(true);
        let o = res.expect("a pipeline capture's result");
        let all_ok = o.statuses.iter().all(|s| s.as_ref().is_ok_and(|s| s.success()));
        let want: &[u8] = match limit {
            None => ALL,
            Some((n, false)) => &ALL[..n],
            Some((n, true)) => &ALL[ALL.len() - n..],
        };
        match (o.cut, limit) {
            (true, None) => assert!(ALL.starts_with(&o.stdout), "cut pipeline capture: {o:?}"),
            (true, Some((n, _))) => assert!(o.stdout.len() <= n, "cut pipeline capture: {o:?}"),
            (false, _) if all_ok => assert_eq!(o.stdout, want, "pipeline capture, limit {limit:?}: {o:?}"),
            (false, _) => {}
        }
    })?;
    Ok(*handles.last().expect("a stage"))
}

/// A pty capture (`output_on_pty` or `stream_output_on_pty`): a shell that writes a line to
/// each stream, each to the terminal, dropped, or (stderr) captured apart through a pipe;
/// or a `cat` fed a line and Ctrl-D through the capture's input handle, which it may close
/// once that is written. Paused at its first bytes now and then, and resumed by a timer.
/// Once the child ends well, what the capture got must be what the settings say.
fn start_pty_capture(
    lp: &mut Loop,
    rng: &mut Rng,
    record: bool,
    exits: Rc<Cell<u32>>,
    closed_itself: Rc<Cell<bool>>,
) -> io::Result<Process> {
    let mut cmd;
    let want: (Vec<u8>, Vec<u8>);
    let feed = rng.chance(30);
    if feed {
        cmd = Command::new("cat");
        want = (b"x\r\nx\r\n".to_vec(), Vec::new());
    } else {
        let (out_null, err) = (rng.chance(30), rng.below(3));
        cmd = Command::new("sh");
        cmd.args(["-c", "echo o; echo e >&2"]);
        if out_null {
            cmd.stdout(Stdio::Null);
        }
        match err {
            0 => {}
            1 => {
                cmd.stderr(Stdio::Null);
            }
            _ => {
                cmd.stderr(Stdio::Pipe);
            }
        }
        let terminal = [(!out_null).then_some(&b"o\r\n"[..]), (err == 0).then_some(&b"e\r\n"[..])];
        want = (
            terminal.into_iter().flatten().flatten().copied().collect(),
            if err == 2 { b"e\n".to_vec() } else { Vec::new() },
        );
    }
    cmd.kill_on_drop(true).record_usage(record);
    if rng.chance(20) {
        cmd.timeout(Duration::from_millis(rng.below(20)), Duration::from_millis(rng.below(20)));
    }
    let all = want.clone();
    let check = move |status: &evloop::ExitStatus, got: (&[u8], &[u8])| {
        if status.success() {
            assert_eq!(got, (&want.0[..], &want.1[..]), "pty capture (fed: {feed})");
        }
    };
    let size = evloop::WinSize::default();
    let (input, p) = if rng.chance(50) {
        cmd.output_on_pty(lp, size, move |_, res| {
            exits.set(exits.get() + 1);
            closed_itself.set(true);
            let o = res.expect("a capture's result");
            assert_eq!(o.usage.is_some(), record, "resource usage (recorded: {record})");
            if o.cut {
                // (`cut_output`: what came before.)
                assert!(
                    all.0.starts_with(&o.stdout) && all.1.starts_with(&o.stderr),
                    "cut pty capture: {o:?}"
                );
            } else {
                check(&o.status, (&o.stdout, &o.stderr));
            }
        })?
    } else {
        let got = Rc::new(RefCell::new((Vec::new(), Vec::new())));
        let g = got.clone();
        let pause = rng.chance(30).then(|| rng.below(5));
        cmd.stream_output_on_pty(
            lp,
            size,
            move |lp, p, which, bytes| {
                let mut g = g.borrow_mut();
                let first = g.0.is_empty() && g.1.is_empty();
                let into = if which == evloop::OutputStream::Stdout { &mut g.0 } else { &mut g.1 };
                into.extend_from_slice(bytes);
                if let (true, Some(ms)) = (first, pause) {
                    p.pause_output(lp).expect("pause a capture's output");
                    Timer::once(lp, Duration::from_millis(ms), move |lp| {
                        // (Abandoned or done meanwhile: its handle is gone.)
                        let _ = p.resume_output(lp);
                    })
                    .expect("a timer");
                }
            },
            move |_, _, res| {
                exits.set(exits.get() + 1);
                closed_itself.set(true);
                // (Cut short by its timeout: `TimedOut`.)
                if let Ok(status) = res {
                    let g = got.borrow();
                    check(&status, (&g.0, &g.1));
                }
            },
        )?
    };
    let close_input = rng.chance(50);
    if feed {
        input.write(lp, b"x\n\x04", move |lp, res| {
            // (Cancelled or failed when the capture ended first: a timeout, an abandon.)
            if res.is_ok() && close_input {
                let _ = input.close(lp);
            }
        })?;
    } else if close_input {
        input.close(lp)?;
    }
    Ok(p)
}

/// Runs one sequence of `ops` operations from `seed`. `Err` describes the first violation.
pub fn run_sequence(seed: u64, ops: usize, force_select: bool) -> Result<Stats, String> {
    let fds_before = evloop_platform::fd::open_fds().map_err(|e| e.to_string())?;
    let stats = {
        let mut lp = Loop::builder()
            .force_select_helper(force_select)
            .build()
            .map_err(|e| format!("new loop: {e}"))?;
        let mut foreign = Loop::new().map_err(|e| e.to_string())?;
        let foreign_timer = Timer::new(&mut foreign);
        let result = sequence(&mut lp, seed, ops, foreign_timer.id());
        foreign_timer.close(&mut foreign).map_err(|e| e.to_string())?;
        foreign.run(RunMode::Default).map_err(|e| e.to_string())?;
        result?
    };
    let fds_after = evloop_platform::fd::open_fds().map_err(|e| e.to_string())?;
    check(fds_after == fds_before, || {
        format!("seed {seed}: fds before {fds_before:?}, after {fds_after:?}")
    })?;
    Ok(stats)
}

fn sequence(lp: &mut Loop, seed: u64, ops: usize, foreign: HandleId) -> Result<Stats, String> {
    let mut rng = Rng::new(seed);
    let mut ledger = Ledger::default();
    let calls = ledger.callbacks.clone();
    let mut pipes: Vec<PipeModel> = Vec::new();
    let mut timers: Vec<TimerModel> = Vec::new();
    let mut procs: Vec<ProcModel> = Vec::new();
    let mut wakers: Vec<(Async, Waker, Rc<Cell<u32>>)> = Vec::new();
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let stop_threads = Arc::new(AtomicBool::new(false));
    let mut stats = Stats { sequences: 1, ..Stats::default() };
    let ctx = |op: usize, what: &str| format!("seed {seed}, op {op} ({what})");

    for op in 0..ops {
        stats.ops += 1;
        let pick = rng.below(100);
        match pick {
            // Create a pipe, maybe with reading on.
            0..=7 if pipes.len() < 16 => {
                let (rx, tx) = Pipe::pair(lp).map_err(|e| format!("{}: {e}", ctx(op, "pair")))?;
                let mut p = PipeModel::new(rx, tx, rng.next());
                if rng.chance(70) {
                    start_reading(lp, &mut p, &calls, &ledger.stale)
                        .map_err(|e| format!("{}: {e}", ctx(op, "read_start")))?;
                    p.reading = true;
                }
                pipes.push(p);
            }
            // Write (borrowed or owned), send, or try_write.
            8..=35 if !pipes.is_empty() => {
                let i = rng.below(pipes.len() as u64) as usize;
                let len = match rng.below(10) {
                    0 => 0,
                    1..=6 => rng.below(512) as usize + 1,
                    7 | 8 => rng.below(70_000) as usize + 1,
                    _ => rng.below(300_000) as usize + 1,
                };
                let byte = rng.next() as u8;
                let data: Vec<u8> = (0..len).map(|k| byte.wrapping_add(k as u8)).collect();
                let p = &mut pipes[i];
                let writable = p.tx_open.get() && !p.shut;
                if rng.chance(20) {
                    let r = p.tx.try_write(lp, &data);
                    match r {
                        Ok(n) => accepted(p, &mut stats, &data[..n], writable, || ctx(op, "try_write"))?,
                        Err(e) => check(
                            !writable
                                || e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::BrokenPipe,
                            || format!("{}: unexpected {e}", ctx(op, "try_write")),
                        )?,
                    }
                } else if rng.chance(25) {
                    match p.tx.send(lp, &data) {
                        Ok(()) => accepted(p, &mut stats, &data, writable, || ctx(op, "send"))?,
                        Err(e) => {
                            // Refused (closed, shut down), or a failure now or of sends before
                            // it (the reader left): in any case, only a prefix is promised.
                            check(!writable || e.kind() == io::ErrorKind::BrokenPipe, || {
                                format!("{}: unexpected {e}", ctx(op, "send"))
                            })?;
                            p.lossy.set(true);
                        }
                    }
                } else {
                    let once = ledger.expect_once(ctx(op, "write callback"));
                    let lossy = p.lossy.clone();
                    let cb = move |_: &mut Loop, r: io::Result<()>| {
                        once.hit();
                        if r.is_err() {
                            lossy.set(true);
                        }
                    };
                    let r = if rng.chance(50) {
                        p.tx.write(lp, &data, cb)
                    } else {
                        p.tx.write_vec(lp, data.clone(), cb)
                    };
                    match r {
                        Ok(()) => accepted(p, &mut stats, &data, writable, || ctx(op, "write"))?,
                        Err(_) => {
                            check(!writable, || {
                                format!("{}: write refused on an open pipe", ctx(op, "write"))
                            })?;
                            // Refused writes never call back: take it off the ledger.
                            ledger.once.pop();
                        }
                    }
                }
            }
            // Start or stop reading.
            36..=45 if !pipes.is_empty() => {
                let i = rng.below(pipes.len() as u64) as usize;
                let p = &mut pipes[i];
                if p.reading {
                    // A closing end is stopped already: stopping it again is no error; a gone
                    // one's id is stale.
                    let closing = p.rx.is_closing(lp).unwrap_or(false);
                    let r = p.rx.read_stop(lp);
                    check(r.is_ok() == (p.rx_open.get() || closing), || {
                        format!("{}: {r:?}", ctx(op, "read_stop"))
                    })?;
                    p.reading = false;
                } else {
                    let r = start_reading(lp, p, &calls, &ledger.stale);
                    if p.rx_open.get() {
                        r.map_err(|e| format!("{}: {e}", ctx(op, "read_start")))?;
                        p.reading = true;
                    } else {
                        check(r.is_err(), || ctx(op, "read_start on a closed pipe succeeded"))?;
                    }
                }
            }
            // Shut down the write side.
            46..=49 if !pipes.is_empty() => {
                let i = rng.below(pipes.len() as u64) as usize;
                let p = &mut pipes[i];
                let once = ledger.expect_once(ctx(op, "shutdown callback"));
                let lossy = p.lossy.clone();
                let r = p.tx.shutdown(lp, move |_, r| {
                    once.hit();
                    if r.is_err() {
                        lossy.set(true);
                    }
                });
                if p.tx_open.get() && !p.shut {
                    r.map_err(|e| format!("{}: {e}", ctx(op, "shutdown")))?;
                    p.shut = true;
                } else {
                    check(r.is_err(), || ctx(op, "shutdown twice succeeded"))?;
                    ledger.once.pop();
                }
            }
            // Close one end, with a close callback.
            50..=56 if !pipes.is_empty() => {
                let i = rng.below(pipes.len() as u64) as usize;
                let p = &mut pipes[i];
                let (h, open) = if rng.chance(50) { (p.rx, &p.rx_open) } else { (p.tx, &p.tx_open) };
                let once = ledger.expect_once(ctx(op, "close callback"));
                let r = h.close_with(lp, move |_| once.hit());
                if open.get() {
                    r.map_err(|e| format!("{}: {e}", ctx(op, "close")))?;
                    open.set(false);
                    ledger.stale.borrow_mut().push(h.id());
                    if h == p.tx {
                        // Queued writes are cancelled: only a prefix is promised now.
                        p.lossy.set(true);
                    }
                } else {
                    check(r.is_err(), || ctx(op, "closing a closed pipe succeeded"))?;
                    ledger.once.pop();
                }
            }
            // Start a timer (maybe one that closes a pipe end, or itself, from its callback).
            57..=68 if timers.len() < 16 => {
                let t = Timer::new(lp);
                let armed = Rc::new(Cell::new(true));
                let repeating = Rc::new(Cell::new(rng.chance(30)));
                let fired = Rc::new(Cell::new(0));
                let timeout = Duration::from_millis(rng.below(4));
                let repeat =
                    if repeating.get() { Duration::from_millis(rng.below(3) + 1) } else { Duration::ZERO };
                // A pipe end this timer's callback closes: (handle, its open flag, lossy flag).
                let victim = if rng.chance(30) && !pipes.is_empty() {
                    let p = &pipes[rng.below(pipes.len() as u64) as usize];
                    Some(if rng.chance(50) {
                        (p.rx, p.rx_open.clone(), None)
                    } else {
                        (p.tx, p.tx_open.clone(), Some(p.lossy.clone()))
                    })
                } else {
                    None
                };
                let stale = ledger.stale.clone();
                let close_self = rng.chance(20);
                let (a, r, f, c) = (armed.clone(), repeating.clone(), fired.clone(), calls.clone());
                let registered = Rc::new(Cell::new(0u32));
                let ran = Once::default();
                ledger.counted.push((ctx(op, "timer self-close callback"), registered.clone(), ran.clone()));
                t.start(lp, timeout, repeat, move |lp, t| {
                    c.set(c.get() + 1);
                    assert!(a.get(), "a stopped timer fired");
                    f.set(f.get() + 1);
                    if !r.get() {
                        a.set(false);
                    }
                    if let Some((h, open, lossy)) = &victim {
                        // The victim may be closed already: then this must be a clean error.
                        let r = lp.close(*h);
                        assert_eq!(r.is_ok(), open.get(), "closing a pipe end from a callback: {r:?}");
                        if r.is_ok() {
                            open.set(false);
                            stale.borrow_mut().push(h.id());
                            if let Some(l) = lossy {
                                l.set(true);
                            }
                        }
                    }
                    if close_self {
                        let o = ran.clone();
                        if t.close_with(lp, move |_| o.hit()).is_ok() {
                            registered.set(registered.get() + 1);
                            a.set(false);
                        }
                    }
                })
                .map_err(|e| format!("{}: {e}", ctx(op, "timer start")))?;
                timers.push(TimerModel { t, open: true, armed, repeating, fired });
            }
            // Stop, again, or close a timer.
            69..=76 if !timers.is_empty() => {
                let i = rng.below(timers.len() as u64) as usize;
                let tm = &mut timers[i];
                let open = tm.t.is_active(lp).is_ok() && !tm.t.is_closing(lp).unwrap_or(true);
                match rng.below(3) {
                    0 => {
                        let r = tm.t.stop(lp);
                        if open {
                            r.map_err(|e| format!("{}: {e}", ctx(op, "timer stop")))?;
                            tm.armed.set(false);
                        }
                    }
                    1 => {
                        let r = tm.t.again(lp);
                        if open && r.is_ok() && tm.repeating.get() {
                            tm.armed.set(true);
                        }
                    }
                    _ => {
                        let once = ledger.expect_once(ctx(op, "timer close callback"));
                        let r = tm.t.close_with(lp, move |_| once.hit());
                        if r.is_ok() {
                            tm.armed.set(false);
                            tm.open = false;
                            ledger.stale.borrow_mut().push(tm.t.id());
                        } else {
                            ledger.once.pop();
                        }
                    }
                }
            }
            // Wake an async handle from another thread.
            77..=80 => {
                if wakers.len() < 4 {
                    let n = Rc::new(Cell::new(0));
                    let c = n.clone();
                    let (h, w) = Async::new(lp, move |_, _| c.set(c.get() + 1));
                    wakers.push((h, w, n));
                }
                let i = rng.below(wakers.len() as u64) as usize;
                let w = wakers[i].1.clone();
                let times = rng.below(50) + 1;
                let stop = stop_threads.clone();
                threads.push(std::thread::spawn(move || {
                    for _ in 0..times {
                        if stop.load(Ordering::Relaxed) || w.wake().is_err() {
                            break;
                        }
                    }
                }));
            }
            // Stale and foreign ids must give errors.
            81..=84 => {
                let stale = ledger.stale.borrow();
                let id = if !stale.is_empty() && rng.chance(80) {
                    stale[rng.below(stale.len() as u64) as usize]
                } else {
                    foreign
                };
                drop(stale);
                // A closed handle may still be closing (its id valid until the close phase):
                // only ids whose close phase has passed must fail.
                let k = lp.handle_kind(id);
                if let Ok(kind) = k {
                    let closing = lp.handles().iter().any(|h| h.id == id && h.closing);
                    check(closing, || format!("{}: id {id:?} ({kind:?}) still live", ctx(op, "stale id")))?;
                } else {
                    check(lp.close(id).is_err(), || ctx(op, "closing a stale id succeeded"))?;
                }
            }
            // Spawn a child: true, false, a short sleep, or a cat wired to a pipe model; now and
            // then with a timeout, and with its resource usage recorded.
            85..=89 if procs.len() < 8 => {
                let exits = Rc::new(Cell::new(0u32));
                let e = exits.clone();
                let record = rng.chance(50);
                let on_exit = move |lp: &mut Loop, p: Process, status: io::Result<evloop::ExitStatus>| {
                    e.set(e.get() + 1);
                    assert!(status.is_ok(), "a child of ours was not reaped by us: {status:?}");
                    let usage = p.resource_usage(lp);
                    assert!(
                        if record { matches!(usage, Ok(Some(_))) } else { usage.is_err() },
                        "resource usage (recorded: {record}): {usage:?}"
                    );
                    p.timed_out(lp).expect("timed_out of an open handle");
                };
                let closed_itself = Rc::new(Cell::new(false));
                if rng.chance(25) {
                    let started = if rng.chance(25) {
                        start_pty_capture(lp, &mut rng, record, exits.clone(), closed_itself.clone())
                    } else if rng.chance(25) {
                        start_pipeline_capture(lp, &mut rng, exits.clone(), closed_itself.clone())
                    } else {
                        start_capture(lp, &mut rng, record, exits.clone(), closed_itself.clone())
                    };
                    let p = started.map_err(|e| format!("{}: {e}", ctx(op, "capture")))?;
                    procs.push(ProcModel { p, open: true, closed_itself, exits, lossy: None, capture: true });
                    continue;
                }
                let mut cmd;
                let kind = rng.below(4);
                match kind {
                    0 => cmd = Command::new("true"),
                    1 => cmd = Command::new("false"),
                    2 => {
                        cmd = Command::new("sleep");
                        cmd.arg("0.01");
                    }
                    _ => {
                        cmd = Command::new("cat");
                        cmd.stdin(Stdio::Pipe).stdout(Stdio::Pipe);
                    }
                }
                cmd.kill_on_drop(true).record_usage(record);
                let timeout = rng.chance(30);
                if timeout {
                    cmd.timeout(Duration::from_millis(rng.below(20)), Duration::from_millis(rng.below(20)));
                }
                let child = cmd.spawn(lp, on_exit).map_err(|e| format!("{}: {e}", ctx(op, "spawn")))?;
                let mut lossy = None;
                if let (Some(tx), Some(rx)) = (child.stdin, child.stdout) {
                    let mut p = PipeModel::new(rx, tx, rng.next());
                    // Ended by its timeout at any time: only a prefix is promised.
                    p.lossy.set(timeout);
                    start_reading(lp, &mut p, &calls, &ledger.stale)
                        .map_err(|e| format!("{}: {e}", ctx(op, "read_start")))?;
                    p.reading = true;
                    lossy = Some(p.lossy.clone());
                    pipes.push(p);
                }
                procs.push(ProcModel {
                    p: child.process,
                    open: true,
                    closed_itself,
                    exits,
                    lossy,
                    capture: false,
                });
            }
            // Kill a child (it may have exited: then ESRCH), give it a deadline, or close its
            // handle.
            90..=92 if !procs.is_empty() => {
                let i = rng.below(procs.len() as u64) as usize;
                let pm = &mut procs[i];
                pm.open &= !pm.closed_itself.get();
                if rng.chance(20) {
                    let after = Duration::from_millis(rng.below(10));
                    match pm.p.terminate_after(lp, after, Duration::from_millis(rng.below(10))) {
                        Ok(()) => {
                            check(pm.open, || ctx(op, "terminate_after on a closed handle succeeded"))?;
                            if let Some(l) = &pm.lossy {
                                l.set(true);
                            }
                        }
                        Err(e) => {
                            check(!pm.open || evloop::os_error_code(&e) == Some(nix::libc::ESRCH), || {
                                format!("{}: {e}", ctx(op, "terminate_after"))
                            })?
                        }
                    }
                } else if rng.chance(15) {
                    // Works on an open capture's handle, however often; else an error.
                    let r = pm.p.cut_output(lp);
                    check(r.is_ok() == (pm.open && pm.capture), || {
                        format!("{}: {r:?} (open {}, capture {})", ctx(op, "cut_output"), pm.open, pm.capture)
                    })?;
                } else if rng.chance(70) {
                    let r = pm.p.kill(lp, evloop::signal::SIGTERM);
                    match r {
                        Ok(()) => {
                            if let Some(l) = &pm.lossy {
                                l.set(true);
                            }
                        }
                        Err(e) => {
                            check(!pm.open || evloop::os_error_code(&e) == Some(nix::libc::ESRCH), || {
                                format!("{}: {e}", ctx(op, "kill"))
                            })?
                        }
                    }
                } else {
                    let once = ledger.expect_once(ctx(op, "process close callback"));
                    let r = pm.p.close_with(lp, move |_| once.hit());
                    if pm.open {
                        r.map_err(|e| format!("{}: {e}", ctx(op, "process close")))?;
                        pm.open = false;
                        ledger.stale.borrow_mut().push(pm.p.id());
                        if let Some(l) = &pm.lossy {
                            // kill_on_drop: closing a running child's handle kills it.
                            l.set(true);
                        }
                    } else {
                        check(r.is_err(), || ctx(op, "closing a closed process succeeded"))?;
                        ledger.once.pop();
                    }
                }
            }
            // Run a step.
            _ => {
                let mode = if rng.chance(80) || timers.iter().all(|t| !t.armed.get()) {
                    RunMode::NoWait
                } else {
                    RunMode::Once
                };
                if mode == RunMode::Once {
                    // Once may wait: make sure something will wake it within milliseconds.
                    let t = Timer::new(lp);
                    t.start(lp, Duration::from_millis(2), Duration::ZERO, |lp, t| t.close(lp).unwrap())
                        .map_err(|e| e.to_string())?;
                }
                lp.run(mode).map_err(|e| format!("{}: {e}", ctx(op, "run")))?;
            }
        }
    }

    // Wind down: stop the wakers' threads, shut every writer, read every reader to the end.
    stop_threads.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| format!("seed {seed}: a waker thread panicked"))?;
    }
    for p in &mut pipes {
        if p.tx_open.get() && !p.shut {
            let once = ledger.expect_once(format!("seed {seed}: final shutdown"));
            let lossy = p.lossy.clone();
            p.tx.shutdown(lp, move |_, r| {
                once.hit();
                if r.is_err() {
                    lossy.set(true);
                }
            })
            .map_err(|e| format!("seed {seed}: final shutdown: {e}"))?;
            p.shut = true;
        }
        if p.rx_open.get() && !p.reading && !p.eof.get() {
            start_reading(lp, p, &calls, &ledger.stale)
                .map_err(|e| format!("seed {seed}: final read_start: {e}"))?;
            p.reading = true;
        }
    }
    for t in &timers {
        if t.open {
            let _ = t.t.stop(lp);
            t.armed.set(false);
        }
    }
    for (h, _, _) in &wakers {
        let _ = h.close(lp);
    }
    // Run until every open reader saw end of file (or its writer vanished). A repeating
    // timer bounds each wait: the select helper reports from its own thread.
    let tick = Timer::new(lp);
    tick.start(lp, Duration::from_millis(1), Duration::from_millis(1), |_, _| {})
        .map_err(|e| e.to_string())?;
    for round in 0.. {
        let done = pipes
            .iter()
            .all(|p| !p.rx_open.get() || !p.reading || p.eof.get() || p.read_error.get() || !p.tx_open.get());
        if done {
            break;
        }
        if round > 10_000 {
            let stuck: Vec<String> = pipes
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.rx_open.get() && p.reading && !p.eof.get() && !p.read_error.get() && p.tx_open.get()
                })
                .map(|(i, p)| {
                    format!(
                        "pipe {i}: received {} of {} bytes, writer queue {:?}",
                        p.received.borrow().len(),
                        p.sent.len(),
                        p.tx.write_queue_size(lp),
                    )
                })
                .collect();
            return Err(format!("seed {seed}: readers never reached end of file: {stuck:?}"));
        }
        lp.run(RunMode::Once).map_err(|e| format!("seed {seed}: run: {e}"))?;
    }
    tick.close(lp).map_err(|e| e.to_string())?;
    // Data: a prefix always, everything when nothing was lost and the reader saw EOF.
    for (i, p) in pipes.iter().enumerate() {
        let got = p.received.borrow();
        check(got.len() <= p.sent.len() && p.sent[..got.len()] == got[..], || {
            format!(
                "seed {seed}: pipe {i}: received {} bytes that are not a prefix of the {} sent",
                got.len(),
                p.sent.len()
            )
        })?;
        if p.eof.get() && !p.lossy.get() && p.tx_open.get() {
            check(got.len() == p.sent.len(), || {
                format!("seed {seed}: pipe {i}: end of file after {} of {} bytes", got.len(), p.sent.len())
            })?;
        }
    }
    // Children whose handle is still open: each exits (their stdin was shut above) and its
    // exit callback runs exactly once.
    for round in 0.. {
        if procs.iter().all(|p| !p.open || p.exits.get() > 0) {
            break;
        }
        if round > 10_000 {
            return Err(format!("seed {seed}: a child never exited"));
        }
        lp.run(RunMode::Once).map_err(|e| format!("seed {seed}: run: {e}"))?;
    }
    for (i, p) in procs.iter().enumerate() {
        check(p.exits.get() <= 1, || format!("seed {seed}: child {i}: {} exit callbacks", p.exits.get()))?;
        check(!p.open || p.exits.get() == 1, || format!("seed {seed}: child {i}: no exit callback"))?;
    }
    // Close everything and run to the end: every callback exactly once.
    for h in lp.handles() {
        if !h.closing {
            lp.close(h.id).map_err(|e| format!("seed {seed}: final close: {e}"))?;
        }
    }
    lp.run(RunMode::Default).map_err(|e| format!("seed {seed}: final run: {e}"))?;
    check(lp.handles().is_empty(), || format!("seed {seed}: handles left: {:?}", lp.handles()))?;
    for (what, o) in &ledger.once {
        check(o.count() == 1, || format!("{what}: ran {} times", o.count()))?;
    }
    for (what, registered, ran) in &ledger.counted {
        check(ran.count() == registered.get(), || {
            format!("{what}: registered {} times, ran {} times", registered.get(), ran.count())
        })?;
    }
    for id in ledger.stale.borrow().iter() {
        check(lp.handle_kind(*id).is_err() && lp.close(*id).is_err(), || {
            format!("seed {seed}: stale {id:?} accepted")
        })?;
    }
    stats.callbacks = calls.get() + ledger.once.len() as u64;
    Ok(stats)
}
