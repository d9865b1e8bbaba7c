//! examples/par.rs, a small `xargs -P`: compiled into this binary and run in a child process
//! (this binary again, as the ignored test `par::par_child`), with real pipes, a real pty,
//! real shells, and GNU xargs as the reference.

use std::io::{self, PipeReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal as NixSignal, kill};
use nix::unistd::Pid;

/// The par example itself.
#[allow(dead_code)]
#[path = "../../examples/par.rs"]
mod tool;

use evloop::Lines;

/// Carries par's arguments (joined by `\x1f`) to the child process.
const CHILD_ENV: &str = "EVLOOP_TEST_PAR_ARGS";
/// The child prints this on stdout and stderr before par starts: what comes before it is
/// libtest's ("running 1 test").
const START: &str = "\x01par starts\n";

/// Not a test: the entry point of the child process the par tests start, which runs
/// examples/par.rs on its stdio.
#[test]
#[ignore = "runs only as the par tests' child process"]
fn par_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else { return };
    print!("{START}");
    io::stdout().flush().unwrap();
    eprint!("{START}");
    let args = args.split('\x1f').filter(|a| !a.is_empty()).map(String::from);
    std::process::exit(tool::run(args.collect::<Vec<_>>(), crate::util::builder()));
}

// ----- running par and xargs ----------------------------------------------------------------

/// A running par; killed and reaped if a test fails before it ends.
struct ParChild {
    child: Child,
}

impl ParChild {
    /// Starts par with `args`, its stdin a pipe (see [`ParChild::feed`]).
    fn start(args: &[&str], stdout: impl Into<Stdio>, stderr: impl Into<Stdio>) -> ParChild {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["par::par_child", "--exact", "--ignored", "--nocapture", "--test-threads=1", "-q"])
            .env(CHILD_ENV, args.join("\x1f"))
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start par");
        ParChild { child }
    }

    /// Writes `input` to par's stdin from a thread, then closes it.
    fn feed(&mut self, input: String) -> std::thread::JoinHandle<()> {
        let mut stdin = self.child.stdin.take().expect("stdin is a pipe");
        std::thread::spawn(move || {
            // par may stop reading early (Ctrl-C); a broken pipe is fine then.
            let _ = stdin.write_all(input.as_bytes());
        })
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn wait(mut self) -> ExitStatus {
        self.child.wait().expect("wait for par")
    }
}

impl Drop for ParChild {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A pipe for a child's stdout and stderr together (`2>&1`), and its read end.
fn combined() -> (PipeReader, Stdio, Stdio) {
    let (r, w) = io::pipe().unwrap();
    (r, w.try_clone().unwrap().into(), w.into())
}

fn read_all(mut r: PipeReader) -> String {
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    s
}

/// What par wrote after the start marker.
fn after_start(out: &str) -> &str {
    match out.rfind(START) {
        Some(at) => &out[at + START.len()..],
        None => panic!("par did not start; its output: {out:?}"),
    }
}

/// Runs par with `args` on `commands` (one per line); returns its status and its stdout and
/// stderr together.
fn run_par(args: &[&str], input: String) -> (ExitStatus, String) {
    let (r, out, err) = combined();
    let mut par = ParChild::start(args, out, err);
    let feeder = par.feed(input);
    let got = read_all(r);
    feeder.join().unwrap();
    (par.wait(), after_start(&got).to_string())
}

/// Runs `xargs -d '\n' -n1 -P jobs sh -c` on the same input: each line as one command.
fn run_xargs(jobs: usize, input: &str) -> (ExitStatus, String) {
    let (r, out, err) = combined();
    let mut child = Command::new("xargs")
        .args(["-d", "\n", "-n1", "-P", &jobs.to_string(), "sh", "-c"])
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start xargs (GNU findutils)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let got = read_all(r);
    feeder.join().unwrap();
    (child.wait().unwrap(), got)
}

/// par's output, parsed: the command lines as (index, text), and par's own messages.
struct Parsed {
    lines: Vec<(usize, String)>,
    messages: Vec<String>,
}

fn parse(out: &str) -> Parsed {
    let mut parsed = Parsed { lines: Vec::new(), messages: Vec::new() };
    assert!(out.is_empty() || out.ends_with('\n'), "par's output ends mid-line: {out:?}");
    for line in out.lines() {
        if let Some(msg) = line.strip_prefix("par: ") {
            parsed.messages.push(msg.to_string());
            continue;
        }
        let (index, text) =
            line.split_once(": ").unwrap_or_else(|| panic!("a line without a prefix: {line:?}"));
        let index = index.parse().unwrap_or_else(|_| panic!("a line with a bad prefix: {line:?}"));
        parsed.lines.push((index, text.to_string()));
    }
    parsed
}

/// xargs' output lines, without its own messages, sorted.
fn xargs_lines(out: &str) -> Vec<String> {
    let mut lines: Vec<String> =
        out.lines().filter(|l| !l.starts_with("xargs: ")).map(String::from).collect();
    lines.sort();
    lines
}

fn sorted_texts(parsed: &Parsed) -> Vec<String> {
    let mut texts: Vec<String> = parsed.lines.iter().map(|(_, t)| t.clone()).collect();
    texts.sort();
    texts
}

/// Reads `r` into `got` until `done(got)`, within 10 seconds.
fn read_until(r: &mut PipeReader, got: &mut String, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "par's output so far: {got:?}");
        if evloop_platform::fd::poll_readable(r.as_fd(), Some(left)).unwrap() {
            let mut buf = [0u8; 4096];
            let n = r.read(&mut buf).unwrap();
            assert!(n > 0, "par's output ended early: {got:?}");
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
    }
}

/// Whether process `pid` is gone (our children's children: reaped by par, so not even a
/// zombie).
fn gone(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
}

// ----- output matches xargs ---------------------------------------------------------------------

/// Command `i`: every line it writes starts with `c<i> `, so the prefix can be checked.
fn varied_command(i: usize) -> String {
    match i % 6 {
        0 => format!("echo 'c{i} out'; echo 'c{i} err' >&2"),
        // Many lines, each one write.
        1 => format!("n=0; while [ $n -lt 40 ]; do echo \"c{i} line $n\"; n=$((n+1)); done"),
        // Long lines (below PIPE_BUF, so that xargs' own output keeps them whole).
        2 => format!("printf 'c{i} %0900d\\n' 1 2 3"),
        // Output from a program rather than the shell, on both streams.
        3 => format!("seq 1 5 | sed 's/^/c{i} seq /'; seq 1 3 | sed 's/^/c{i} seq-err /' >&2"),
        // Nothing at all.
        4 => "true".to_string(),
        _ => format!("for w in a b c; do echo \"c{i} $w\" >&2; done"),
    }
}

case!(
    secs = 60,
    fn output_matches_xargs_for_200_commands_with_j8() {
        let commands: Vec<String> = (1..=200).map(varied_command).collect();
        let input = commands.join("\n") + "\n";
        let (par_status, par_out) = run_par(&["-j", "8"], input.clone());
        let (xargs_status, xargs_out) = run_xargs(8, &input);
        assert_eq!(par_status.code(), Some(0), "{par_out}");
        assert_eq!(xargs_status.code(), Some(0), "{xargs_out}");
        let parsed = parse(&par_out);
        assert!(parsed.messages.is_empty(), "{:?}", parsed.messages);
        for (index, text) in &parsed.lines {
            assert!(text.starts_with(&format!("c{index} ")), "line {text:?} has prefix {index}");
        }
        let want = xargs_lines(&xargs_out);
        // 33 of each kind of command, plus commands 199 and 200.
        assert_eq!(want.len(), 33 * (2 + 40 + 3 + 8 + 3) + 40 + 3, "xargs' line count");
        assert_eq!(sorted_texts(&parsed), want);
    }
);

case!(
    fn output_matches_xargs_with_default_jobs_and_one_job() {
        let input: String = (1..=30).map(|i| varied_command(i) + "\n").collect();
        let (_, xargs_out) = run_xargs(1, &input);
        for args in [&[][..], &["-j", "1"][..], &["--jobs=3"][..], &["-j64"][..]] {
            let (status, out) = run_par(args, input.clone());
            assert_eq!(status.code(), Some(0), "{args:?}: {out}");
            assert_eq!(sorted_texts(&parse(&out)), xargs_lines(&xargs_out), "{args:?}");
        }
    }
);

case!(
    fn stdout_and_stderr_stay_apart() {
        let (out_r, out_w) = io::pipe().unwrap();
        let (err_r, err_w) = io::pipe().unwrap();
        let mut par = ParChild::start(&["-j", "2"], out_w, err_w);
        let feeder = par.feed("echo o1; echo e1 >&2\necho o2; echo e2 >&2; exit 1\n".to_string());
        let err_t = std::thread::spawn(move || read_all(err_r));
        let out = read_all(out_r);
        let err = err_t.join().unwrap();
        feeder.join().unwrap();
        assert_eq!(par.wait().code(), Some(123));
        let mut out = parse(after_start(&out)).lines;
        out.sort();
        assert_eq!(out, [(1, "o1".to_string()), (2, "o2".to_string())]);
        let err = parse(after_start(&err));
        let mut err_lines = err.lines;
        err_lines.sort();
        assert_eq!(err_lines, [(1, "e1".to_string()), (2, "e2".to_string())]);
        assert_eq!(err.messages, ["command 2 exited with code 1: echo o2; echo e2 >&2; exit 1"]);
    }
);

case!(
    secs = 120,
    fn thousands_of_commands_pass_through_the_input_queue() {
        // More than QUEUED_COMMANDS_MAX, so reading stdin pauses and resumes.
        let n = tool::QUEUED_COMMANDS_MAX * 2 + 100;
        let input: String = (1..=n).map(|i| format!("echo c{i}\n")).collect();
        let (status, out) = run_par(&["-j", "16"], input);
        assert_eq!(status.code(), Some(0));
        let mut lines = parse(&out).lines;
        lines.sort();
        let want: Vec<(usize, String)> = (1..=n).map(|i| (i, format!("c{i}"))).collect();
        assert!(lines == want, "{} lines, want {n}", lines.len());
    }
);

case!(
    fn a_closed_stdout_ends_par_and_its_commands() {
        // `par | head -1`: once the reader is gone, par stops its commands (`yes` would run
        // forever) and exits 1, without an error message for the broken pipe.
        let (mut out_r, out_w) = io::pipe().unwrap();
        let (err_r, err_w) = io::pipe().unwrap();
        let mut par = ParChild::start(&["-j", "2"], out_w, err_w);
        let feeder = par.feed("yes\nyes\nsleep 30\n".to_string());
        let mut out = String::new();
        read_until(&mut out_r, &mut out, |s| s.contains(START) && after_start(s).contains("1: y\n"));
        drop(out_r);
        let started = Instant::now();
        let err = read_all(err_r);
        feeder.join().unwrap();
        assert_eq!(par.wait().code(), Some(1), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "par took {:?} to stop", started.elapsed());
        let messages = parse(after_start(&err)).messages;
        assert!(messages.iter().all(|m| !m.contains("writing")), "{messages:?}");
        assert!(messages.iter().all(|m| !m.contains("sleep")), "command 3 started: {messages:?}");
    }
);

case!(
    fn a_command_line_too_long_is_an_error() {
        // The longest line runs (`:` does nothing); one byte more is an error.
        let longest = format!(": {}", "x".repeat(tool::COMMAND_BYTES_MAX - 2));
        let (status, out) = run_par(&["-j", "1"], format!("echo first\n{longest}\n"));
        assert_eq!(status.code(), Some(0), "{out:.200}");
        let too_long = format!("{longest}x");
        let (status, out) = run_par(&["-j", "1"], format!("echo first\n{too_long}\necho never\n"));
        assert_eq!(status.code(), Some(1), "{out:.200}");
        let parsed = parse(&out);
        assert_eq!(parsed.lines, [(1, "first".to_string())]);
        assert_eq!(parsed.messages, [format!("line 2 is longer than {} bytes", tool::COMMAND_BYTES_MAX)]);
    }
);

// ----- exit status -------------------------------------------------------------------------------

case!(
    secs = 60,
    fn exit_status_follows_xargs() {
        let cases: &[(&[&str], i32)] = &[
            (&["echo a", "echo b"], 0),
            (&["echo a", "exit 3", "echo b"], 123),
            (&["exit 125"], 123),
            // The shell's "not found" and "cannot execute" are command failures to xargs too.
            (&["exit 126"], 123),
            (&["no-such-command-for-par"], 123),
            (&["exit 255"], 124),
            (&["exit 2", "exit 255"], 124),
            (&["kill -TERM $$"], 125),
            (&["exit 2", "kill -KILL $$"], 125),
        ];
        for &(commands, want) in cases {
            let input = commands.join("\n") + "\n";
            // One job, so that xargs, which stops at the first 255 or signal, runs the same
            // commands as par.
            let (par_status, par_out) = run_par(&["-j", "1"], input.clone());
            let (xargs_status, xargs_out) = run_xargs(1, &input);
            assert_eq!(xargs_status.code(), Some(want), "xargs on {commands:?}: {xargs_out}");
            assert_eq!(par_status.code(), Some(want), "par on {commands:?}: {par_out}");
            let parsed = parse(&par_out);
            assert_eq!(sorted_texts(&parsed), xargs_lines(&xargs_out), "{commands:?}");
            assert_eq!(parsed.messages.is_empty(), want == 0, "{commands:?}: {:?}", parsed.messages);
        }
    }
);

case!(
    fn no_new_commands_after_255() {
        let (status, out) = run_par(&["-j", "1"], "echo one\nexit 255\necho three\n".to_string());
        assert_eq!(status.code(), Some(124));
        let parsed = parse(&out);
        assert_eq!(parsed.lines, [(1, "one".to_string())]);
        assert_eq!(
            parsed.messages,
            ["command 2 exited with code 255: exit 255", "starting no more commands"]
        );
    }
);

case!(
    fn bad_usage_exits_2_with_a_usage_line() {
        for args in [&["-j", "0"][..], &["-j", "many"], &["-j"], &["-j-3"], &["--frobnicate"], &["echo"]] {
            let (r, out, err) = combined();
            let par = ParChild::start(args, out, err);
            let got = read_all(r);
            assert_eq!(par.wait().code(), Some(2), "{args:?}: {got}");
            let got = after_start(&got);
            assert!(got.starts_with("par: ") && got.contains("usage: par [-j N]"), "{args:?}: {got}");
            assert!(!got.contains("panicked"), "{args:?}: {got}");
        }
        let (r, out, err) = combined();
        let par = ParChild::start(&["--help"], out, err);
        let got = read_all(r);
        assert_eq!(par.wait().code(), Some(0));
        assert!(after_start(&got).starts_with("usage: par [-j N]"), "{got}");
    }
);

// ----- lines ------------------------------------------------------------------------------------

case!(
    fn final_partial_lines_get_a_newline() {
        // The last input line has no newline either: it runs too.
        let input = "printf 'a\\nb'\nprintf c >&2\n\n   \nprintf 'd\\n'\nprintf e";
        let (status, out) = run_par(&["-j", "4"], input.to_string());
        assert_eq!(status.code(), Some(0), "{out}");
        let mut lines = parse(&out).lines;
        lines.sort();
        let want = [(1, "a"), (1, "b"), (2, "c"), (5, "d"), (6, "e")];
        assert_eq!(lines, want.map(|(i, t)| (i, t.to_string())));
    }
);

/// The line command `n` writes as line `i`: 50 pieces, each written on its own.
fn piecewise_line(n: usize, i: usize) -> String {
    (0..50).map(|k| format!("c{n}-{i}-{k}{}", "x".repeat(90))).collect()
}

case!(
    secs = 60,
    fn lines_never_interleave_mid_line() {
        // 16 commands, 8 at a time, each writing 20 lines of about 5 KB (more than PIPE_BUF)
        // in 50 small writes, even lines to stdout and odd ones to stderr, which here is the
        // same pipe.
        let pad = "x".repeat(90);
        let command = |n: usize| {
            format!(
                "i=0; while [ $i -lt 20 ]; do k=0; \
                 if [ $((i % 2)) = 0 ]; then \
                   while [ $k -lt 50 ]; do printf '%s' \"c{n}-$i-${{k}}{pad}\"; k=$((k+1)); done; echo; \
                 else \
                   while [ $k -lt 50 ]; do printf '%s' \"c{n}-$i-${{k}}{pad}\" >&2; k=$((k+1)); done; echo >&2; \
                 fi; i=$((i+1)); done"
            )
        };
        let input: String = (1..=16).map(|n| command(n) + "\n").collect();
        let (status, out) = run_par(&["-j", "8"], input);
        assert_eq!(status.code(), Some(0));
        let mut got = parse(&out).lines;
        for (index, text) in &got {
            assert!(text.starts_with(&format!("c{index}-")), "command {index} wrote {:.60}...", text);
        }
        got.sort();
        let mut want: Vec<(usize, String)> =
            (1..=16).flat_map(|n| (0..20).map(move |i| (n, piecewise_line(n, i)))).collect();
        want.sort();
        assert!(got == want, "{} lines, want {}; some line is cut or mixed", got.len(), want.len());
    }
);

case!(
    fn a_line_longer_than_the_limit_is_cut() {
        let len = 2 * tool::LINE_BYTES_MAX + 1000;
        let (status, out) = run_par(&[], format!("head -c {len} /dev/zero | tr '\\0' x; echo; echo after"));
        assert_eq!(status.code(), Some(0));
        let lines = parse(&out).lines;
        let want = [tool::LINE_BYTES_MAX, tool::LINE_BYTES_MAX, 1000].map(|n| (1, "x".repeat(n)));
        assert_eq!(lines.len(), 4);
        assert!(
            lines[..3] == want,
            "cut at the wrong places: {:?}",
            lines.iter().map(|l| l.1.len()).collect::<Vec<_>>()
        );
        assert_eq!(lines[3], (1, "after".to_string()));
    }
);

case!(
    fn lines_split_across_any_read_boundary() {
        let text = b"echo one\n\nlonger line two\nx\n\nlast without newline";
        let want: Vec<&[u8]> = vec![b"echo one", b"", b"longer line two", b"x", b"", b"last without newline"];
        // Every way of cutting the text in two and three.
        for a in 0..=text.len() {
            for b in a..=text.len() {
                let mut lines = Lines::new(usize::MAX);
                let mut got: Vec<Vec<u8>> = Vec::new();
                for chunk in [&text[..a], &text[a..b], &text[b..]] {
                    lines.push(chunk, |l| got.push(l.to_vec()));
                }
                got.extend(lines.finish());
                assert_eq!(got, want, "cut at {a} and {b}");
            }
        }
        // With a limit, long lines are cut at it wherever the reads end; a line of exactly
        // the limit stays whole.
        for chunk_len in 1..=12 {
            let mut lines = Lines::new(4);
            let mut got: Vec<Vec<u8>> = Vec::new();
            for chunk in b"abcd\nabcdefghij\n\nab".chunks(chunk_len) {
                lines.push(chunk, |l| got.push(l.to_vec()));
            }
            assert_eq!(lines.pending(), 2);
            got.extend(lines.finish());
            let want: Vec<&[u8]> = vec![b"abcd", b"abcd", b"efgh", b"ij", b"", b"ab"];
            assert_eq!(got, want, "chunks of {chunk_len}");
        }
    }
);

// ----- back-pressure ------------------------------------------------------------------------------

/// A process's resident memory, in KiB.
fn rss_kib(pid: Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

case!(
    secs = 60,
    fn a_slow_reader_holds_the_commands_back() {
        // Two commands write 32 MiB each while nobody reads par's stdout. With
        // back-pressure they block in their writes: par holds about HIGH_WATER_BYTES, and they
        // cannot report on stderr that they finished.
        const BYTES: usize = 32 << 20;
        let (mut out_r, out_w) = io::pipe().unwrap();
        let (mut err_r, err_w) = io::pipe().unwrap();
        let mut par = ParChild::start(&["-j", "2"], out_w, err_w);
        // Lines of 16 bytes, so that the last one is whole too.
        let command = format!("yes 0123456789abcde | head -c {BYTES}; echo finished >&2");
        let feeder = par.feed(format!("{command}\n{command}\n"));
        let mut err = String::new();
        read_until(&mut err_r, &mut err, |s| s.contains(START));
        let start_rss = rss_kib(par.pid());
        // Nothing on stderr for a second: the commands are stuck, not finished.
        let early = evloop_platform::fd::poll_readable(err_r.as_fd(), Some(Duration::from_secs(1))).unwrap();
        assert!(!early, "the commands finished while nobody read their output");
        let grown = rss_kib(par.pid()).saturating_sub(start_rss);
        assert!(grown < 16 << 10, "par grew by {grown} KiB while its reader stalled");
        // Now read everything: all of it arrives, in whole prefixed lines.
        let mut out = Vec::new();
        out_r.read_to_end(&mut out).unwrap();
        err_r.read_to_string(&mut err).unwrap();
        feeder.join().unwrap();
        assert_eq!(par.wait().code(), Some(0));
        let out = String::from_utf8(out).unwrap();
        let parsed = parse(after_start(&out));
        let bytes: usize = parsed.lines.iter().map(|(_, t)| t.len() + 1).sum();
        assert_eq!(bytes, 2 * BYTES);
        assert!(parsed.lines.iter().all(|(_, t)| t == "0123456789abcde"));
        let mut finished = parse(after_start(&err)).lines;
        finished.sort();
        assert_eq!(finished, [(1, "finished".to_string()), (2, "finished".to_string())]);
    }
);

// ----- Ctrl-C -------------------------------------------------------------------------------------

/// The pids in `ready <pid>` lines.
fn ready_pids(out: &str) -> Vec<i32> {
    parse_partial(out).filter_map(|(_, t)| t.strip_prefix("ready ").map(|p| p.parse().unwrap())).collect()
}

/// The complete command lines of a partial output.
fn parse_partial(out: &str) -> impl Iterator<Item = (usize, String)> + '_ {
    let complete = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
    parse(complete).lines.into_iter()
}

case!(
    fn ctrl_c_reaches_every_running_command_and_starts_no_more() {
        let (mut r, out, err) = combined();
        let mut par = ParChild::start(&["-j", "3"], out, err);
        // `exec`: the pid printed is the sleep's.
        let feeder = par.feed("echo ready $$; exec sleep 30\n".repeat(6));
        let mut got = String::new();
        read_until(&mut r, &mut got, |s| s.contains(START) && ready_pids(after_start(s)).len() == 3);
        let started = Instant::now();
        kill(par.pid(), NixSignal::SIGINT).unwrap();
        got.push_str(&read_all(r));
        feeder.join().unwrap();
        let status = par.wait();
        assert!(started.elapsed() < Duration::from_secs(10), "par took {:?} to stop", started.elapsed());
        // par ends itself with SIGINT, as a program interrupted by Ctrl-C should.
        assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}: {got}");
        let out = after_start(&got);
        let pids = ready_pids(out);
        assert_eq!(pids.len(), 3, "only the first three started: {out}");
        assert!(pids.iter().all(|&p| gone(p)), "a command survived: {out}");
        let parsed = parse(out);
        assert!(parsed.lines.iter().all(|(i, _)| *i <= 3), "{out}");
        assert!(parsed.messages[0].starts_with("interrupted"), "{:?}", parsed.messages);
        let killed = parsed.messages.iter().filter(|m| m.contains("killed by signal 2 (SIGINT)")).count();
        assert_eq!(killed, 3, "{:?}", parsed.messages);
    }
);

case!(
    fn a_second_ctrl_c_kills_commands_that_survive_the_first() {
        let (mut r, out, err) = combined();
        let mut par = ParChild::start(&["-j", "2"], out, err);
        let command = "trap 'echo got INT' INT; echo ready $$; while :; do sleep 0.1; done\n";
        let feeder = par.feed(command.repeat(2));
        let mut got = String::new();
        read_until(&mut r, &mut got, |s| s.contains(START) && ready_pids(after_start(s)).len() == 2);
        kill(par.pid(), NixSignal::SIGINT).unwrap();
        let got_int = |s: &str| parse_partial(after_start(s)).filter(|(_, t)| t == "got INT").count();
        read_until(&mut r, &mut got, |s| got_int(s) == 2);
        kill(par.pid(), NixSignal::SIGINT).unwrap();
        got.push_str(&read_all(r));
        feeder.join().unwrap();
        assert_eq!(par.wait().signal(), Some(libc::SIGINT));
        let out = after_start(&got);
        assert!(ready_pids(out).iter().all(|&p| gone(p)), "a command survived: {out}");
        let messages = parse(out).messages;
        assert!(messages.iter().any(|m| m.starts_with("interrupted again")), "{messages:?}");
        let killed = messages.iter().filter(|m| m.contains("killed by signal 9 (SIGKILL)")).count();
        assert_eq!(killed, 2, "{messages:?}");
    }
);

case!(
    fn sigterm_is_passed_on_too() {
        let (mut r, out, err) = combined();
        let mut par = ParChild::start(&["-j", "2"], out, err);
        let feeder = par.feed("echo ready $$; exec sleep 30\n".repeat(3));
        let mut got = String::new();
        read_until(&mut r, &mut got, |s| s.contains(START) && ready_pids(after_start(s)).len() == 2);
        kill(par.pid(), NixSignal::SIGTERM).unwrap();
        got.push_str(&read_all(r));
        feeder.join().unwrap();
        assert_eq!(par.wait().signal(), Some(libc::SIGTERM));
        let out = after_start(&got);
        assert!(ready_pids(out).iter().all(|&p| gone(p)), "a command survived: {out}");
        let messages = parse(out).messages;
        assert!(messages[0].starts_with("interrupted (SIGTERM)"), "{messages:?}");
        assert_eq!(
            messages.iter().filter(|m| m.contains("(SIGTERM): echo ready")).count(),
            2,
            "{messages:?}"
        );
    }
);

// ----- the progress line --------------------------------------------------------------------------

case!(
    fn progress_line_only_on_a_terminal() {
        let (master, slave) = evloop::tty::openpty().unwrap();
        let (out_r, out_w) = io::pipe().unwrap();
        let mut par = ParChild::start(&["-j", "2"], out_w, slave);
        let feeder = par.feed("echo out; echo err >&2\nexit 1\n".to_string());
        let out = read_all(out_r);
        feeder.join().unwrap();
        assert_eq!(par.wait().code(), Some(123));
        // par is gone and the slave closed: the master reads what is left, then EIO.
        let mut term = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = nix::unistd::read(&master, &mut buf) {
            term.extend_from_slice(&buf[..n]);
        }
        let term = String::from_utf8(term).unwrap();
        // Lines go above the progress line: clear it, write, draw it again. The terminal
        // turns "\n" into "\r\n".
        assert!(term.contains("\r\x1b[K1: err\r\npar: "), "{term:?}");
        assert!(term.contains("par: command 2 exited with code 1: exit 1\r\n"), "{term:?}");
        // At the end it stays, as a summary.
        assert!(term.contains("\r\x1b[Kpar: 2 done, 1 failed, 0 running, "), "{term:?}");
        assert!(term.ends_with("s\r\n"), "{term:?}");
        // stdout is a pipe: plain lines.
        assert_eq!(after_start(&out), "1: out\n");
    }
);
