//! Pipes: one submodule per subject, and the helpers they share (other areas' tests use
//! `collect`, `Collected`, `pattern` and `Sum` too).
//!
//! A helper used by one subject only lives in that subject's file. The ignored tests at the
//! end of this file are child processes that tests of the submodules start by running the
//! test binary again under their full name (`pipe::<name>`), so they stay here.

/// Ends: `EPIPE`, shutdown, close with writes queued, half-closes, streams that cannot be
/// shut down.
mod ending;
/// Fds: what the handles take and refuse, bad input, fds closed behind the loop's back, fd
/// numbers and the fd floor.
mod fds;
/// `O_NONBLOCK` on shared descriptions: left blocking, restored, `shares_nonblocking`.
mod nonblocking;
/// Reads: transfers and end of file, read caps and rounds, fairness, always-ready fds,
/// pausing, `try_read`.
mod reads;
/// `pipe_to`: relays with back-pressure.
mod relay;
/// The write queue: partial writes, staging, sends, `try_write`, `write_shared`, completion.
mod writes;

use std::cell::RefCell;
use std::io::{self, Write};
use std::rc::Rc;

use evloop::{Loop, Pipe, ReadEvent, RunMode};

use crate::util::test_loop;

// ----- helpers --------------------------------------------------------------------------------

/// A checksum that notices reordering and loss: FNV-1a over every byte, plus the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sum {
    hash: u64,
    len: u64,
}

impl Sum {
    pub fn new() -> Sum {
        Sum { hash: 0xcbf2_9ce4_8422_2325, len: 0 }
    }
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.len += data.len() as u64;
    }
}

/// Deterministic test data: block `i` of `len` bytes.
pub fn pattern(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A deterministic stream of pseudo-random numbers (xorshift), for mixes of operations.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// A named FIFO in a directory of its own, opened nonblocking at either end.
pub struct NamedFifo {
    dir: std::path::PathBuf,
}

impl NamedFifo {
    pub fn new(tag: &str) -> NamedFifo {
        let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        NamedFifo { dir }
    }

    pub fn open(&self, write: bool) -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(self.dir.join("fifo"))
            .unwrap()
    }

    /// Removes the FIFO's name (open ends stay usable).
    pub fn remove(&self) {
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

/// What a reader collected.
#[derive(Default)]
pub struct Collected {
    pub data: Vec<u8>,
    pub eof: bool,
    pub errors: Vec<io::Error>,
    pub reads: usize,
    pub max_read: usize,
}

/// Starts reading `p`, collecting everything; closes the pipe at end of file or error.
pub fn collect(lp: &mut Loop, p: Pipe) -> Rc<RefCell<Collected>> {
    let c = Rc::new(RefCell::new(Collected::default()));
    let sink = c.clone();
    p.read_start(lp, move |lp, p, ev| {
        let mut c = sink.borrow_mut();
        match ev {
            ReadEvent::Data(d) => {
                assert!(!d.is_empty());
                c.data.extend_from_slice(d);
                c.reads += 1;
                c.max_read = c.max_read.max(d.len());
            }
            ReadEvent::Eof => {
                assert!(!c.eof, "EOF reported twice");
                c.eof = true;
                p.close(lp).unwrap();
            }
            ReadEvent::Error(e) => {
                c.errors.push(e);
                p.close(lp).unwrap();
            }
        }
    })
    .unwrap();
    c
}

// ----- tests that run this binary again by name -----------------------------------------------
//
// Each of these is the child process of a test in a submodule, which starts the test binary
// again with `pipe::<name> --exact --ignored`, so they stay in this module: in a submodule
// their names would change. Their doc comments say which tests start them.

// ----- O_NONBLOCK on a shared description when the process ends -------------------------------

const SHARED_CHILD_ENV: &str = "EVLOOP_TEST_SHARED_CHILD";

/// Not a test: the entry point of the child process that
/// `issue_3_a_shared_description_is_blocking_again_when_the_process_ends` starts. It opens its
/// stdin (a named FIFO the test shares) as a pipe handle, echoes `got <data>` for each read,
/// and exits with the handle open on `exit`; the test kills it otherwise. `$SHARED_CHILD_ENV`
/// says whether to install the restore hooks first.
#[test]
#[ignore = "runs only as a child process of the shared-description test"]
fn shared_description_child() {
    use std::os::fd::AsFd;
    let Ok(how) = std::env::var(SHARED_CHILD_ENV) else { return };
    if how == "hooks" || how == "exit" {
        evloop::tty::install_restore_hooks().unwrap();
    }
    let mut lp = test_loop();
    let stdin = Pipe::open(&mut lp, io::stdin().as_fd().try_clone_to_owned().unwrap()).unwrap();
    stdin
        .read_start(&mut lp, |_, _, ev| {
            let ReadEvent::Data(d) = ev else { panic!("unexpected {ev:?}") };
            let mut out = io::stdout().lock();
            writeln!(out, "got {}", String::from_utf8_lossy(d)).unwrap();
            out.flush().unwrap();
            if d == b"exit" {
                // Ends the process with the handle open: only `exit`'s restore runs.
                std::process::exit(0);
            }
        })
        .unwrap();
    lp.run(RunMode::Default).unwrap();
}

// ----- examples/cat.rs where its stdout cannot be shut down -----------------------------------

/// The examples/cat.rs program, run by the cat test in a child process.
#[allow(dead_code)]
#[path = "../../../examples/cat.rs"]
mod cat_example;

const CAT_CHILD_ENV: &str = "EVLOOP_TEST_CAT_CHILD";

/// Not a test: the entry point of the child process the cat test starts (this binary,
/// re-executed with `--ignored --exact`), which runs examples/cat.rs on its stdio.
#[test]
#[ignore = "runs only as the cat test's child process"]
fn cat_example_child() {
    if std::env::var_os(CAT_CHILD_ENV).is_some() {
        let code = match cat_example::main() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cat: {e}");
                1
            }
        };
        std::process::exit(code);
    }
}
