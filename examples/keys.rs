//! keys: a raw-mode terminal demo. It shows the bytes of each key you press and the window
//! size, redraws when the window changes, quits on `q` or Ctrl-C, and stops on Ctrl-Z as
//! other programs do (`fg` brings it back, redrawn at the window's size of then), and the
//! same way on a `SIGTSTP` sent from elsewhere (`kill -TSTP`).
//!
//! Run it in a terminal with `cargo run --example keys`. The terminal always comes back the
//! way it was: on quit, on an error, on a panic, and when the process is killed by
//! `SIGINT`, `SIGTERM`, `SIGHUP` or `SIGQUIT`. Without a terminal on stdin it says so and
//! exits with status 1.
//!
//! The integration tests run this file's [`run`] in a child process on a pty.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use evloop::{HandleType, Loop, Pipe, ReadEvent, RunMode, Signal, Tty, TtyMode, WinSize, guess_handle};

/// How many keys the screen lists.
const KEYS_SHOWN_MAX: usize = 16;

fn main() {
    std::process::exit(run());
}

/// Runs the demo on this process's stdin and stdout, and returns the exit status.
pub fn run() -> i32 {
    match keys() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("keys: {e}");
            1
        }
    }
}

/// Where the screen goes: the terminal, or (when stdout is redirected) a pipe or file.
#[derive(Clone, Copy)]
enum Out {
    Tty(Tty),
    Pipe(Pipe),
}

impl Out {
    fn open(lp: &mut Loop, fd: OwnedFd) -> io::Result<Out> {
        if guess_handle(fd.as_fd())? == HandleType::Tty {
            Ok(Out::Tty(Tty::open(lp, fd)?))
        } else {
            Ok(Out::Pipe(Pipe::open(lp, fd)?))
        }
    }

    fn write(self, lp: &mut Loop, text: String) {
        self.write_then(lp, text, |_| {});
    }

    /// Writes `text`, then calls `then` once it is out.
    fn write_then(self, lp: &mut Loop, text: String, then: impl FnOnce(&mut Loop) + 'static) {
        let done = |lp: &mut Loop, res: io::Result<()>| {
            if let Err(e) = res {
                eprintln!("keys: writing the screen: {e}");
            }
            then(lp);
        };
        let res = match self {
            Out::Tty(t) => t.write_vec(lp, text.into_bytes(), done),
            Out::Pipe(p) => p.write_vec(lp, text.into_bytes(), done),
        };
        if let Err(e) = res {
            eprintln!("keys: writing the screen: {e}");
        }
    }

    fn close(self, lp: &mut Loop) {
        let _ = match self {
            Out::Tty(t) => t.close(lp),
            Out::Pipe(p) => p.close(lp),
        };
    }
}

struct Screen {
    size: WinSize,
    /// The last keys pressed, newest last.
    keys: VecDeque<Vec<u8>>,
}

impl Screen {
    /// The whole screen: cleared, then redrawn. `"\n"` works as a line break because raw
    /// mode keeps output processing on.
    fn render(&self) -> String {
        let mut s = String::from("\x1b[H\x1b[2J");
        s += &format!("evloop keys demo: window {}x{} (columns x rows)\n", self.size.cols, self.size.rows);
        s += "press keys to see their bytes; press q or Ctrl-C to quit, Ctrl-Z to stop\n\n";
        for key in &self.keys {
            s += &format!("  {:<24} {}\n", hex(key), readable(key));
        }
        s
    }
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn readable(key: &[u8]) -> String {
    key.iter()
        .map(|&b| match b {
            0x1b => "ESC".to_string(),
            b'\r' => "Enter".to_string(),
            0x7f => "Backspace".to_string(),
            1..=26 => format!("Ctrl-{}", (b'A' + b - 1) as char),
            0x20..=0x7e => (b as char).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn keys() -> io::Result<()> {
    let stdin = io::stdin().as_fd().try_clone_to_owned()?;
    if guess_handle(stdin.as_fd())? != HandleType::Tty {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "stdin is not a terminal; run keys in one"));
    }
    // First, so that a panic or a fatal signal from here on puts the terminal back.
    evloop::tty::install_restore_hooks()?;
    let mut lp = Loop::new()?;
    let input = Tty::open(&mut lp, stdin)?;
    let out = Out::open(&mut lp, io::stdout().as_fd().try_clone_to_owned()?)?;
    input.set_mode(&mut lp, TtyMode::Raw)?;

    let screen = Rc::new(RefCell::new(Screen { size: input.winsize(&lp)?, keys: VecDeque::new() }));
    out.write(&mut lp, screen.borrow().render());

    let on_resize = screen.clone();
    input.on_resize(&mut lp, move |lp, _, size| {
        let mut screen = on_resize.borrow_mut();
        screen.size = size;
        out.write(lp, screen.render());
    })?;

    // Ctrl-Z: raw mode reads it as a key. Once the screen is out, stop as the shell's Ctrl-Z
    // would stop a program in normal mode; draw again once continued. A `SIGTSTP` from
    // elsewhere (`kill -TSTP`), whose default stop would leave the terminal raw, goes the
    // same way.
    let on_stop = screen.clone();
    let stop = move |lp: &mut Loop| {
        let screen = on_stop.clone();
        out.write_then(lp, "\r\n".to_string(), move |lp| {
            if let Err(e) = input.suspend(lp) {
                eprintln!("keys: cannot stop: {e}");
            }
            let mut screen = screen.borrow_mut();
            screen.size = input.winsize(lp).unwrap_or(screen.size);
            out.write(lp, screen.render());
        });
    };
    let tstp = Signal::new(&mut lp);
    tstp.set_ref(&mut lp, false)?;
    let on_tstp = stop.clone();
    tstp.start(&mut lp, evloop::signal::SIGTSTP, move |lp, _, _| on_tstp(lp))?;

    input.read_start(&mut lp, move |lp, input, ev| {
        let quit = match ev {
            ReadEvent::Data([0x1a]) => {
                stop(lp);
                false
            }
            ReadEvent::Data(key) => {
                let mut screen = screen.borrow_mut();
                if screen.keys.len() == KEYS_SHOWN_MAX {
                    screen.keys.pop_front();
                }
                screen.keys.push_back(key.to_vec());
                out.write(lp, screen.render());
                key.iter().any(|&b| b == b'q' || b == 0x03)
            }
            ReadEvent::Eof => true,
            ReadEvent::Error(e) => {
                eprintln!("keys: reading the terminal: {e}");
                true
            }
        };
        if quit {
            out.write(lp, "bye\n".to_string());
            // Closing the input handle puts the terminal back in normal mode.
            let _ = input.close(lp);
            let _ = tstp.close(lp);
            out.close(lp);
        }
    })?;
    lp.run(RunMode::Default)?;
    Ok(())
}
