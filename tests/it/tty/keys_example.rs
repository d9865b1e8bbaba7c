use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evloop::WinSize;
use nix::sys::termios::{LocalFlags, Termios};

use super::*;

/// The keys example in a child process, with the pty slave as its stdin, stdout and stderr.
struct KeysChild {
    child: Child,
    master: OwnedFd,
    transcript: Vec<u8>,
}

impl KeysChild {
    fn start(master: OwnedFd, slave: BorrowedFd<'_>) -> KeysChild {
        let stdio = || Stdio::from(slave.try_clone_to_owned().unwrap());
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "tty::keys_example_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(KEYS_CHILD_ENV, "1")
            .stdin(stdio())
            .stdout(stdio())
            .stderr(stdio())
            .spawn()
            .unwrap();
        KeysChild { child, master, transcript: Vec::new() }
    }

    /// Reads the master until `needle` shows up after what earlier waits consumed.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = String::from_utf8_lossy(&self.transcript).find(needle) {
                self.transcript.drain(..at + needle.len());
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {needle:?} in {:?}", String::from_utf8_lossy(&self.transcript));
            if evloop_platform::fd::poll_readable(self.master.as_fd(), Some(left)).unwrap() {
                let mut buf = [0u8; 4096];
                match nix::unistd::read(&self.master, &mut buf) {
                    Ok(n) => self.transcript.extend_from_slice(&buf[..n]),
                    Err(e) => panic!(
                        "reading the master: {e}; so far {:?}",
                        String::from_utf8_lossy(&self.transcript)
                    ),
                }
            }
        }
    }

    fn send(&self, keys: &[u8]) {
        write_master(self.master.as_fd(), keys);
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for KeysChild {
    fn drop(&mut self) {
        // A failing test must not leave the child behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts keys on a fresh 80x24 pty and waits until it is in raw mode.
/// The pty stays open (`Pty::master` too) after the child exited, to inspect its settings.
fn start_keys() -> (KeysChild, Pty, Termios) {
    let p = pty();
    let size = WinSize { rows: 24, cols: 80, x_pixels: 0, y_pixels: 0 };
    evloop_platform::termios::set_winsize(p.master.as_fd(), size).unwrap();
    let before = attrs(&p.probe);
    let mut keys = KeysChild::start(p.master.try_clone().unwrap(), p.slave.as_fd());
    keys.wait_for("window 80x24");
    keys.wait_for("press q or Ctrl-C to quit");
    assert!(!attrs(&p.probe).local_flags.contains(LocalFlags::ICANON), "keys is in raw mode");
    (keys, p, before)
}

case!(
    secs = 60,
    /// Keys in, their bytes out, a redraw on resize, `q` quits, the terminal is restored.
    fn keys_example_through_a_pty() {
        let (mut keys, pty, before) = start_keys();
        keys.send(b"a");
        keys.wait_for("61");
        keys.send(b"\x1b[A");
        keys.wait_for("1b 5b 41");
        keys.wait_for("ESC [ A");
        let size = WinSize { rows: 40, cols: 100, x_pixels: 0, y_pixels: 0 };
        evloop_platform::termios::set_winsize(keys.master.as_fd(), size).unwrap();
        // The child has no controlling terminal, so the kernel's SIGWINCH goes nowhere.
        nix::sys::signal::kill(keys.pid(), nix::sys::signal::SIGWINCH).unwrap();
        keys.wait_for("window 100x40");
        keys.send(b"q");
        keys.wait_for("bye");
        let status = keys.wait();
        assert!(status.success(), "{status}");
        assert_same_termios(&attrs(&pty.probe), &before, "after keys quit");
    }
);

case!(
    secs = 60,
    fn keys_example_quits_on_ctrl_c() {
        let (keys, pty, before) = start_keys();
        keys.send(b"\x03");
        let status = keys.wait();
        assert!(status.success(), "{status}");
        assert_same_termios(&attrs(&pty.probe), &before, "after Ctrl-C");
    }
);

case!(
    secs = 60,
    /// Killed by SIGTERM or SIGHUP in raw mode: the hook restores the terminal, and the
    /// process still dies by that signal.
    fn keys_example_restores_the_terminal_when_killed() {
        for signal in [nix::sys::signal::SIGTERM, nix::sys::signal::SIGHUP] {
            let (keys, pty, before) = start_keys();
            nix::sys::signal::kill(keys.pid(), signal).unwrap();
            let status = keys.wait();
            assert_eq!(status.signal(), Some(signal as i32), "{status}");
            assert_same_termios(&attrs(&pty.probe), &before, "after the signal");
        }
    }
);

case!(
    fn keys_example_without_a_terminal_says_so() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "tty::keys_example_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(KEYS_CHILD_ENV, "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("keys: stdin is not a terminal"), "{err}");
    }
);
