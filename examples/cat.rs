//! `cat` through the loop: stdin to stdout, with bounded reads and a write queue.
//!
//! Works when stdin is a pipe, a file, a terminal or /dev/null, and stdout any of those:
//!
//! ```text
//! echo hello | cargo run --example cat
//! cargo run --example cat < Cargo.toml
//! cargo run --example cat < /dev/null
//! ```
//!
//! Reading stops while the write queue is above a high-water mark, so memory stays bounded
//! however fast stdin is and however slow stdout is.

use std::io;
use std::os::fd::AsFd;

use evloop::{Loop, Pipe, ReadEvent, RunMode};

const HIGH_WATER_BYTES: usize = 1 << 20;

pub fn main() -> io::Result<()> {
    // Ctrl-C or a kill must not leave the shell's stdin or stdout nonblocking (nor a
    // terminal in a changed mode): the hooks put both back before the process ends.
    evloop::tty::install_restore_hooks()?;
    let mut lp = Loop::new()?;
    // Pipes are opened again as descriptions of their own (Linux); where a handle must set
    // O_NONBLOCK on the description it shares with the shell, it is cleared again when the
    // handles close (or by the hooks, or at exit).
    let input = Pipe::open(&mut lp, io::stdin().as_fd().try_clone_to_owned()?)?;
    let output = Pipe::open(&mut lp, io::stdout().as_fd().try_clone_to_owned()?)?;
    input.read_start(&mut lp, move |lp, input, ev| on_read(lp, input, output, ev))?;
    lp.run(RunMode::Default)?;
    Ok(())
}

fn on_read(lp: &mut Loop, input: Pipe, output: Pipe, ev: ReadEvent<'_>) {
    match ev {
        ReadEvent::Data(bytes) => {
            output
                .write(lp, bytes, move |lp, r| on_written(lp, input, output, r))
                .expect("stdout is writable");
            // Back-pressure: pause reading while stdout lags behind.
            if output.write_queue_size(lp).unwrap_or(0) >= HIGH_WATER_BYTES {
                input.read_pause(lp).expect("input is open");
            }
        }
        ReadEvent::Eof => {
            input.close(lp).expect("input is open");
            // Close stdout's handle once the queued writes are out: `end` shuts its write
            // side where its fd allows that (a pipe), else (a terminal, or a file open for
            // reading and writing) waits for the queue to drain.
            let close = move |lp: &mut Loop, _| output.close(lp).expect("output is open");
            if let Err(e) = output.end(lp, close) {
                fail("end", e);
            }
        }
        ReadEvent::Error(e) => fail("read", e),
    }
}

fn on_written(lp: &mut Loop, input: Pipe, output: Pipe, r: io::Result<()>) {
    if let Err(e) = r {
        fail("write", e);
    }
    // Resume once the queue has drained below the mark. Resuming a stream that is reading
    // does nothing; one that ended (and was closed) gives an error, which is fine here.
    if output.write_queue_size(lp).unwrap_or(0) < HIGH_WATER_BYTES {
        let _ = input.read_resume(lp);
    }
}

fn fail(what: &str, e: io::Error) -> ! {
    eprintln!("cat: {what}: {e}");
    std::process::exit(1);
}
