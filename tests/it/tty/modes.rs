use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

use evloop::{Loop, RunMode, Tty, TtyMode};
use nix::sys::termios::{self, ControlFlags, InputFlags, LocalFlags, OutputFlags, SpecialCharacterIndices};

use crate::util::test_loop;

use super::*;

case!(
    /// Raw and io modes, each bit against what libuv and cfmakeraw define, then back.
    fn modes_set_exactly_the_documented_bits() {
        let mut lp = test_loop();
        let p = pty();
        let normal = attrs(&p.probe);
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        assert_eq!(tty.mode(&lp).unwrap(), TtyMode::Normal);

        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        assert_eq!(tty.mode(&lp).unwrap(), TtyMode::Raw);
        let mut want = normal.clone();
        want.input_flags.remove(
            InputFlags::BRKINT
                | InputFlags::ICRNL
                | InputFlags::INPCK
                | InputFlags::ISTRIP
                | InputFlags::IXON,
        );
        want.output_flags.insert(OutputFlags::ONLCR);
        want.control_flags.insert(ControlFlags::CS8);
        want.local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::IEXTEN | LocalFlags::ISIG);
        want.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        want.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        let raw = attrs(&p.probe);
        assert_same_termios(&raw, &want, "raw");
        assert!(raw.output_flags.contains(OutputFlags::OPOST | OutputFlags::ONLCR), "raw keeps OPOST");

        // Io comes from the saved normal settings, not from raw.
        tty.set_mode(&mut lp, TtyMode::Io).unwrap();
        let mut want = normal.clone();
        termios::cfmakeraw(&mut want);
        let io_mode = attrs(&p.probe);
        assert_same_termios(&io_mode, &want, "io");
        assert!(!io_mode.output_flags.contains(OutputFlags::OPOST), "io clears OPOST");
        assert!(!io_mode.local_flags.intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG));
        assert_eq!(io_mode.control_chars[SpecialCharacterIndices::VMIN as usize], 1);
        assert_eq!(io_mode.control_chars[SpecialCharacterIndices::VTIME as usize], 0);

        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        assert_same_termios(&attrs(&p.probe), &normal, "normal again");
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&p.probe), &normal, "after close");
    }
);

case!(
    /// reset_mode() puts back exactly what each terminal's first change found.
    fn reset_mode_restores_the_saved_settings_exactly() {
        let mut lp = test_loop();
        let (a, b) = (pty(), pty());
        // Make a's settings distinctive, so a wrong restore cannot pass by accident.
        let mut custom = attrs(&a.probe);
        custom.control_chars[SpecialCharacterIndices::VERASE as usize] = 0x08;
        custom.local_flags.remove(LocalFlags::ECHOCTL);
        termios::tcsetattr(&a.probe, termios::SetArg::TCSANOW, &custom).unwrap();
        let a_before = attrs(&a.probe);
        let b_before = attrs(&b.probe);

        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&a.probe), &a_before, "reset before any change is a no-op");

        let ta = Tty::open(&mut lp, a.slave).unwrap();
        let tb = Tty::open(&mut lp, b.slave).unwrap();
        ta.set_mode(&mut lp, TtyMode::Raw).unwrap();
        tb.set_mode(&mut lp, TtyMode::Io).unwrap();
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&a.probe), &a_before, "the first terminal is restored exactly");
        assert_same_termios(&attrs(&b.probe), &b_before, "the second terminal is restored exactly");

        // errno survives the call (it may run inside a signal handler).
        nix::errno::Errno::set_raw(nix::libc::EXDEV);
        evloop::tty::reset_mode().unwrap();
        assert_eq!(nix::errno::Errno::last_raw(), nix::libc::EXDEV);

        // Closing a terminal's handle releases its saved settings: later resets leave it alone.
        ta.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        termios::tcsetattr(&a.probe, termios::SetArg::TCSANOW, &custom).unwrap();
        make_raw(&a.probe);
        let a_raw = attrs(&a.probe);
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&a.probe), &a_raw, "a, its handle closed, is left alone");
        tb.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&b.probe), &b_before, "b restored at close");
    }
);

case!(
    /// Raw keeps output processing ("\n" becomes "\r\n"); io mode does not.
    fn output_through_the_handle_reads_back_on_the_master() {
        let mut lp = test_loop();
        let p = pty();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        assert!(!tty.writes_block(&lp).unwrap());
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let done = Rc::new(Cell::new(0));
        let d = done.clone();
        tty.write(&mut lp, b"one\ntwo\n", move |_, r| {
            r.unwrap();
            d.set(d.get() + 1);
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(read_master(p.master.as_fd(), 10), b"one\r\ntwo\r\n");
        tty.set_mode(&mut lp, TtyMode::Io).unwrap();
        let d = done.clone();
        tty.write(&mut lp, b"three\n", move |_, r| {
            r.unwrap();
            d.set(d.get() + 1);
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(read_master(p.master.as_fd(), 6), b"three\n");
        assert_eq!(done.get(), 2);
        close_all(&mut lp);
    }
);

case!(
    /// A shell goes raw at its prompt, back to normal for a job, and raw again after it.
    /// A job killed while it had the terminal raw leaves it raw; that used to become what
    /// the handle's `Normal` and its close put back (the settings were saved again at each
    /// leave of normal mode), so every later job, and the user after the shell, got a raw
    /// terminal. The settings found first are what `Normal` and close restore.
    fn issue_5_a_job_that_left_the_terminal_raw_does_not_change_normal() {
        let mut lp = test_loop();
        let p = pty();
        let before = attrs(&p.probe);
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "normal, for the job");
        // The job: `stty raw -echo`, then killed.
        make_raw(&p.probe);
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let raw = attrs(&p.probe);
        assert!(raw.output_flags.contains(termios::OutputFlags::OPOST), "Raw keeps output processing");
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "normal, for the next job");
        // A job that exited normally after `stty -echo`: the shell keeps that as normal.
        let mut quiet = attrs(&p.probe);
        quiet.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(&p.probe, termios::SetArg::TCSANOW, &quiet).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        assert!(tty.save_settings(&mut lp).unwrap_err().to_string().contains("Raw"), "only in normal mode");
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        termios::tcsetattr(&p.probe, termios::SetArg::TCSANOW, &quiet).unwrap();
        tty.save_settings(&mut lp).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        assert_same_termios(&attrs(&p.probe), &quiet, "normal, as saved");
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        // The process-wide settings follow (exit_restores_a_terminal_left_in_raw_mode, its "saved" case).
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&p.probe), &quiet, "reset_mode");
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&p.probe), &quiet, "after close");
    }
);

case!(
    /// A shell in normal mode while a job has the terminal, which the job leaves raw: the
    /// shell's `set_mode(Normal)` was a no-op (the handle was in normal mode already), and
    /// its close restored nothing (it restored only from the other modes), so the user got
    /// a raw terminal back. Both now put back the settings saved at the first `set_mode`.
    fn issue_5_normal_and_close_put_the_settings_back_after_a_job_left_them_raw() {
        let mut lp = test_loop();
        let p = pty();
        let before = attrs(&p.probe);
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        // A shell that never leaves normal mode (a cooked REPL): its first set_mode saves.
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        make_raw(&p.probe);
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "normal again");
        // A shell that edits in raw mode and gives the terminal to a job in normal mode.
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        make_raw(&p.probe);
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "after close");
        // A handle whose mode was never set leaves the settings alone.
        let p = pty();
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        make_raw(&p.probe);
        let raw = attrs(&p.probe);
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&p.probe), &raw, "a handle that set no mode");
    }
);

case!(
    /// A job-control shell keeps a stopped job's settings and gives them back at `fg`:
    /// `settings` reads them whoever set them, `set_settings` puts them back, and neither
    /// changes what `Normal` and close restore.
    fn issue_5_a_stopped_jobs_settings_come_back_at_fg() {
        let mut lp = test_loop();
        let p = pty();
        let before = attrs(&p.probe);
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap(); // the prompt
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap(); // a job starts
        make_raw(&p.probe); // the job, an editor, goes raw, and is stopped
        let job = tty.settings(&lp).unwrap();
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap(); // the shell takes the terminal back
        assert_same_termios(&attrs(&p.probe), &before, "normal for the shell");
        assert_ne!(tty.settings(&lp).unwrap(), job);
        tty.set_settings(&lp, &job).unwrap(); // fg
        assert_eq!(tty.settings(&lp).unwrap(), job);
        assert!(!attrs(&p.probe).local_flags.contains(LocalFlags::ICANON), "the job's raw settings");
        assert_eq!(tty.mode(&lp).unwrap(), TtyMode::Normal, "not a mode change");
        // The job stops again; the shell's prompt in raw mode, twice (the same mode again
        // re-applies it, whatever `set_settings` left).
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        let raw = attrs(&p.probe);
        tty.set_settings(&lp, &job).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        assert_same_termios(&attrs(&p.probe), &raw, "raw again after set_settings");
        tty.set_mode(&mut lp, TtyMode::Normal).unwrap();
        tty.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "close restores the shell's normal");
        // A closed handle: a clear error.
        assert!(tty.settings(&lp).is_err() && tty.set_settings(&lp, &job).is_err());
    }
);

case!(
    fn a_tty_handle_moves_into_a_child_and_its_mode_comes_back() {
        let mut lp = test_loop();
        let p = pty();
        let before = attrs(&p.probe);
        let tty = Tty::open(&mut lp, p.slave).unwrap();
        tty.set_mode(&mut lp, TtyMode::Raw).unwrap();
        // `From<Tty> for Stdio`: the child writes on the terminal; the handle closes, and
        // closing restores the mode it had changed.
        let status = Rc::new(Cell::new(None));
        let st = status.clone();
        evloop::Command::new("printf")
            .arg("from the child\n")
            .stdout(tty)
            .spawn(&mut lp, move |lp, proc_, s| {
                st.set(Some(s.unwrap()));
                proc_.close(lp).unwrap();
            })
            .unwrap();
        assert!(tty.is_closing(&lp).unwrap(), "moved to the child");
        lp.run(RunMode::Default).unwrap();
        assert!(status.get().unwrap().success());
        // Raw keeps OPOST, so the newline arrives as CR LF.
        assert_eq!(read_master(p.master.as_fd(), 16), b"from the child\r\n");
        assert_same_termios(&attrs(&p.probe), &before, "after the move");
        assert!(lp.handles().is_empty());
    }
);

/// Two handles on the terminal `slave` (a program's stdin and stdout, say), the first set
/// raw, then the second, which finds it raw already.
fn two_raw_handles(lp: &mut Loop, slave: OwnedFd) -> (Tty, Tty) {
    let input = Tty::open(lp, slave.try_clone().unwrap()).unwrap();
    let output = Tty::open(lp, slave).unwrap();
    input.set_mode(lp, TtyMode::Raw).unwrap();
    output.set_mode(lp, TtyMode::Raw).unwrap();
    (input, output)
}

case!(
    /// Two handles on one terminal (a program's stdin and stdout), both set raw: whichever
    /// closes first, the terminal ends as it was. The second handle took the raw settings it
    /// found for its normal ones, and closing it after the first put them back, leaving the
    /// user's shell raw, where `reset_mode` and the exit hooks could not help (the first
    /// handle's close had taken their saved settings with it).
    fn issue_5_two_handles_on_one_terminal_leave_it_as_it_was_in_any_close_order() {
        let mut lp = test_loop();
        for first_closes_first in [true, false] {
            let p = pty();
            let before = attrs(&p.probe);
            let (input, output) = two_raw_handles(&mut lp, p.slave);
            let order = if first_closes_first { [input, output] } else { [output, input] };
            for tty in order {
                tty.close(&mut lp).unwrap();
            }
            lp.run(RunMode::Default).unwrap();
            assert_same_termios(
                &attrs(&p.probe),
                &before,
                &format!("first closes first: {first_closes_first}"),
            );
        }
        // The handle left open after the other closed is the one `reset_mode` undoes.
        let p = pty();
        let before = attrs(&p.probe);
        let (input, output) = two_raw_handles(&mut lp, p.slave);
        input.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        output.set_mode(&mut lp, TtyMode::Io).unwrap();
        evloop::tty::reset_mode().unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "reset_mode with the second handle raw");
        output.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

/// A session recorder's handles on one terminal: its input in io mode (no output
/// processing: `\n` stays `\n`), and its output with `len` bytes of lines queued (more than
/// the pty holds): (input, output, the lines).
fn raw_input_and_busy_output(lp: &mut Loop, slave: OwnedFd, len: usize) -> (Tty, Tty, Vec<u8>) {
    let input = Tty::open(lp, slave.try_clone().unwrap()).unwrap();
    let output = Tty::open(lp, slave).unwrap();
    input.set_mode(lp, TtyMode::Io).unwrap();
    let lines: Vec<u8> = b"0123456789abcdef\n".iter().copied().cycle().take(len).collect();
    output.write(lp, &lines, |_, res| res.unwrap()).unwrap();
    assert!(output.write_queue_size(lp).unwrap() > 0, "the pty took it all");
    (input, output, lines)
}

case!(
    /// Issue 5 (a session recorder's trial): closing the input handle, whose mode it was,
    /// put the terminal's settings back at once, so the output still queued on the output
    /// handle went out with output processing on again (each `\n` as `\r\n`). The restore
    /// now waits until that queue is empty, or until a mode change through any handle on
    /// the terminal, or the loop's drop.
    fn issue_5_output_queued_on_another_handle_goes_out_before_the_terminal_is_restored() {
        const LEN: usize = 1 << 20;
        let mut lp = test_loop();
        let p = pty();
        let before = attrs(&p.probe);
        let (input, output, lines) = raw_input_and_busy_output(&mut lp, p.slave, LEN);
        input.close(&mut lp).unwrap();
        assert!(
            !attrs(&p.probe).output_flags.contains(OutputFlags::OPOST),
            "restored before the output went"
        );
        // (A copy: the pty stays, to be looked at after the handle closes.)
        let master = Tty::open(&mut lp, p.master.try_clone().unwrap()).unwrap();
        let got = collect(&mut lp, master, LEN);
        lp.run(RunMode::Default).unwrap();
        assert!(got.borrow().data == lines, "the output changed on its way");
        // Once the queue is empty, with the output handle still open.
        assert_eq!(output.write_queue_size(&lp).unwrap(), 0);
        assert_same_termios(&attrs(&p.probe), &before, "after the output went");
        close_all(&mut lp);
        assert_same_termios(&attrs(&p.probe), &before, "after close");

        // A mode change through another handle puts them back first: the restore, later,
        // does not undo it.
        let p = pty();
        let before = attrs(&p.probe);
        let (input, output, lines) = raw_input_and_busy_output(&mut lp, p.slave, LEN);
        input.close(&mut lp).unwrap();
        let again = Tty::open(&mut lp, p.probe.try_clone().unwrap()).unwrap();
        again.set_mode(&mut lp, TtyMode::Io).unwrap();
        // (A copy: the pty stays, to be looked at after the handle closes.)
        let master = Tty::open(&mut lp, p.master.try_clone().unwrap()).unwrap();
        let got = collect(&mut lp, master, LEN);
        lp.run(RunMode::Default).unwrap();
        assert!(got.borrow().data == lines, "the output changed on its way");
        assert_eq!(output.write_queue_size(&lp).unwrap(), 0);
        assert!(!attrs(&p.probe).output_flags.contains(OutputFlags::OPOST), "the new mode was undone");
        // (The close puts them back at once; the master's reader keeps `run` going.)
        again.close(&mut lp).unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "after the new handle closed");
        close_all(&mut lp);

        // A pty master's queue is the terminal's input, not its output: it takes no restore.
        let p = pty();
        let before = attrs(&p.probe);
        let input = Tty::open(&mut lp, p.slave).unwrap();
        input.set_mode(&mut lp, TtyMode::Io).unwrap();
        let master = Tty::open(&mut lp, p.master.try_clone().unwrap()).unwrap();
        master.write(&mut lp, &[b'k'; LEN], |_, _| {}).unwrap();
        assert!(master.write_queue_size(&lp).unwrap() > 0, "the pty took it all");
        input.close(&mut lp).unwrap();
        assert_same_termios(&attrs(&p.probe), &before, "after the input's close, with the master busy");
        close_all(&mut lp);

        // A loop dropped with the output still queued puts them back.
        let p = pty();
        let before = attrs(&p.probe);
        let (input, _output, _) = raw_input_and_busy_output(&mut lp, p.slave, LEN);
        input.close(&mut lp).unwrap();
        drop(lp);
        assert_same_termios(&attrs(&p.probe), &before, "after the loop's drop");
    }
);

case!(
    /// Issue 5: the process-wide saved settings were matched to a handle's terminal by
    /// `st_rdev`, which is 5:2 (`/dev/ptmx`) for every pty master on Linux, so a handle on
    /// pty B's master took pty A's settings for its normal ones and left them on B.
    fn issue_5_a_handle_on_another_pty_master_keeps_its_own_settings() {
        let mut lp = test_loop();
        let a = pty();
        // Pty A's user turned echo off; B's has it on.
        let mut t = attrs(&a.probe);
        t.local_flags.remove(termios::LocalFlags::ECHO);
        termios::tcsetattr(&a.probe, termios::SetArg::TCSANOW, &t).unwrap();
        let a_before = attrs(&a.probe);
        // (Duplicates: the slaves stay usable after the handles close the masters they own.)
        let on_a = Tty::open(&mut lp, a.master.try_clone().unwrap()).unwrap();
        on_a.set_mode(&mut lp, TtyMode::Raw).unwrap(); // the process-wide save: A's settings
        let b = pty();
        let b_before = attrs(&b.probe);
        let on_b = Tty::open(&mut lp, b.master.try_clone().unwrap()).unwrap();
        on_b.set_mode(&mut lp, TtyMode::Raw).unwrap();
        on_b.close(&mut lp).unwrap();
        on_a.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&b.probe), &b_before, "pty B after its handle closed");
        assert_same_termios(&attrs(&a.probe), &a_before, "pty A after its handle closed");
    }
);

case!(
    /// Issue 5: two handles on a terminal other than the one whose settings the process
    /// saved first shared nothing: the second took the raw settings the first had set for
    /// its normal ones, and the terminal was left raw.
    fn issue_5_two_handles_on_a_second_terminal_leave_it_as_it_was() {
        let mut lp = test_loop();
        let a = pty();
        let on_a = Tty::open(&mut lp, a.slave).unwrap();
        on_a.set_mode(&mut lp, TtyMode::Raw).unwrap(); // the process-wide save: A's
        let b = pty();
        let before = attrs(&b.probe);
        let (input, output) = two_raw_handles(&mut lp, b.slave);
        input.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        output.close(&mut lp).unwrap();
        on_a.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&b.probe), &before, "pty B after both its handles closed");
    }
);

/// The words of `stty -a` run on `slave` (its stdin), which it takes.
fn stty_words(lp: &mut Loop, slave: OwnedFd) -> Vec<String> {
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let mut stty = evloop::Command::new("stty");
    stty.arg("-a").stdin(slave);
    stty.output(lp, move |_, out| *g.borrow_mut() = Some(out.unwrap())).unwrap();
    drop(stty);
    lp.run(RunMode::Default).unwrap();
    let out = got.borrow_mut().take().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    text.split_whitespace().map(str::to_string).collect()
}

case!(
    /// A pty's mode set up for a child stays: `Settings::with_mode` and `apply` change the
    /// terminal with no handle to put it back (through a `Tty` handle, closing it restored
    /// the echo before the child ever ran: pty-tool trial). `with_echo` turns off the echo
    /// alone (pexpect's `setecho(False)`): line editing and Ctrl-C stay.
    fn issue_5_a_ptys_mode_set_for_a_child_stays() {
        let mut lp = test_loop();
        let (_master, slave) = evloop::tty::openpty().unwrap();
        let normal = evloop::Settings::of(slave.as_fd()).unwrap();
        normal.with_mode(TtyMode::Io).apply(slave.as_fd()).unwrap();
        let words = stty_words(&mut lp, slave);
        for flag in ["-echo", "-icanon", "-isig"] {
            assert!(words.iter().any(|w| w == flag), "{flag} in {words:?}");
        }
        let (_master, slave) = evloop::tty::openpty().unwrap();
        evloop::Settings::of(slave.as_fd()).unwrap().with_echo(false).apply(slave.as_fd()).unwrap();
        let words = stty_words(&mut lp, slave);
        for flag in ["-echo", "icanon", "isig"] {
            assert!(words.iter().any(|w| w == flag), "{flag} in {words:?}");
        }
    }
);

case!(
    /// `Settings::with_signals`: raw input with the signal keys kept (the mode of `less` and
    /// `htop`): Ctrl-C typed at the terminal reaches its foreground job, while input is
    /// otherwise raw. `TtyMode::Raw` turns the keys off, and there was no way to keep them.
    fn issue_5_raw_mode_can_keep_the_signal_keys() {
        use nix::sys::termios::LocalFlags;
        let mut lp = test_loop();
        let p = pty();
        let normal = attrs(&p.probe);
        let mut cmd = evloop::Command::new("sh");
        cmd.args(["-c", "echo ready && exec sleep 100"]);
        let (status, _) = start_on_pty(&mut lp, &p, cmd, "ready");
        let t = Tty::open(&mut lp, p.slave).unwrap();
        t.set_mode(&mut lp, TtyMode::Raw).unwrap();
        assert!(!attrs(&p.probe).local_flags.contains(LocalFlags::ISIG));
        t.set_settings(&lp, &t.settings(&lp).unwrap().with_signals(true)).unwrap();
        let now = attrs(&p.probe).local_flags;
        assert!(
            now.contains(LocalFlags::ISIG) && !now.intersects(LocalFlags::ICANON | LocalFlags::ECHO),
            "{now:?}"
        );
        write_master(p.master.as_fd(), b"\x03");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(status.get().unwrap().signal(), Some(libc::SIGINT));
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_same_termios(&attrs(&p.probe), &normal, "normal again at close");
    }
);
