//! A tour of evloop: every kind of handle, in one short program.
//!
//! Run it with `cargo run --release --example tour`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use evloop::fd_watch::Interest;
use evloop::{
    Async, Channel, Check, Command, FdWatch, Idle, Loop, Pipe, Pipeline, Prepare, ReadEvent, RunMode, Signal,
    Stdio, Timer, Tty, TtyMode, WinSize,
};

fn main() -> std::io::Result<()> {
    let mut lp = Loop::new()?;
    let log = Rc::new(RefCell::new(Vec::<String>::new()));
    let say = {
        let log = log.clone();
        move |line: String| {
            println!("{line}");
            log.borrow_mut().push(line);
        }
    };

    // 1. Timers: a one-shot and a repeating one, ordered by (deadline, start order).
    println!("== timers");
    let once = Timer::new(&mut lp);
    let s = say.clone();
    once.start(&mut lp, Duration::from_millis(5), Duration::ZERO, move |lp, t| {
        s(format!("one-shot timer fired at {} ms", lp.now()));
        t.close(lp).unwrap();
    })?;
    let tick = Timer::new(&mut lp);
    let s = say.clone();
    let mut n = 0;
    tick.start(&mut lp, Duration::from_millis(1), Duration::from_millis(2), move |lp, t| {
        n += 1;
        s(format!("tick {n}"));
        if n == 3 {
            t.close(lp).unwrap();
        }
    })?;
    lp.run(RunMode::Default)?;

    // 2. The phases of one iteration: idle, prepare, (poll), check, close.
    println!("== phases");
    let idle = Idle::new(&mut lp);
    let prep = Prepare::new(&mut lp);
    let check = Check::new(&mut lp);
    let s = say.clone();
    idle.start(&mut lp, move |lp, h| {
        s("idle".into());
        h.close(lp).unwrap();
    })?;
    let s = say.clone();
    prep.start(&mut lp, move |lp, h| {
        s("prepare".into());
        h.close(lp).unwrap();
    })?;
    let s = say.clone();
    check.start(&mut lp, move |lp, h| {
        s("check".into());
        let s = s.clone();
        h.close_with(lp, move |_| s("close callback".into())).unwrap();
    })?;
    lp.run(RunMode::Default)?;

    // 3. Other threads: a waker (coalescing) and a typed channel (in order).
    println!("== threads");
    let s = say.clone();
    let (wake_handle, waker) = Async::new(&mut lp, move |lp, h| {
        s("woken by another thread".into());
        h.close(lp).unwrap();
    });
    let s = say.clone();
    let (chan, tx) = Channel::new(&mut lp, move |_, _, msg: String| s(format!("channel: {msg}")));
    // Once the worker's sender is gone and its messages are in, the channel closes itself.
    let s = say.clone();
    chan.on_disconnect(&mut lp, move |lp, chan| {
        s("channel: the sender is gone".into());
        chan.close(lp).unwrap();
    })?;
    let worker = std::thread::spawn(move || {
        for i in 1..=3 {
            tx.send(format!("message {i}")).unwrap();
        }
        waker.wake().unwrap();
    });
    lp.run(RunMode::Default)?;
    worker.join().unwrap();
    let _ = wake_handle;

    // 4. Signals: a handler on the loop thread.
    println!("== signals");
    let sig = Signal::new(&mut lp);
    let s = say.clone();
    sig.start_oneshot(&mut lp, evloop::signal::SIGUSR1, move |lp, h, signum| {
        s(format!("caught signal {signum}"));
        h.close(lp).unwrap();
    })?;
    evloop::signal::raise(evloop::signal::SIGUSR1)?;
    lp.run(RunMode::Default)?;

    // 5. Pipes: bounded reads, a write queue, shutdown and end of file.
    println!("== pipes");
    let (rx, tx) = Pipe::pair(&mut lp)?;
    let s = say.clone();
    let mut total = 0;
    rx.read_start(&mut lp, move |lp, rx, ev| match ev {
        ReadEvent::Data(bytes) => total += bytes.len(),
        ReadEvent::Eof => {
            s(format!("read {total} bytes, then end of file"));
            rx.close(lp).unwrap();
        }
        ReadEvent::Error(e) => panic!("read: {e}"),
    })?;
    let big = vec![b'x'; 1 << 20];
    tx.write_vec(&mut lp, big, |_, r| r.unwrap())?;
    println!("write queue after a 1 MiB write: {} bytes", tx.write_queue_size(&lp)?);
    let s = say.clone();
    tx.shutdown(&mut lp, move |lp, r| {
        r.unwrap();
        s("write side shut down".into());
        tx.close(lp).unwrap();
    })?;
    lp.run(RunMode::Default)?;

    // 5b. An fd the program reads itself (a library's socket, say): readiness only.
    println!("== fd watches");
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let mut reader = ours.try_clone()?;
    let watch = FdWatch::new(&mut lp, ours.into())?;
    let s = say.clone();
    watch.start(&mut lp, Interest::READABLE, move |lp, watch, ready| {
        let mut buf = [0; 64];
        let n = std::io::Read::read(&mut reader, &mut buf).unwrap();
        s(format!("{:?}: read {:?} myself", ready.unwrap(), String::from_utf8_lossy(&buf[..n])));
        watch.close(lp).unwrap();
    })?;
    std::io::Write::write_all(&mut &theirs, b"ping")?;
    lp.run(RunMode::Default)?;

    // 6. Ttys, on a pty pair so that this runs without a terminal too: the program's side
    //    (the slave) in raw mode, driven from the terminal emulator's side (the master).
    println!("== ttys");
    let (master, slave) = evloop::tty::openpty()?;
    let term = Tty::open(&mut lp, slave)?;
    let emulator = Tty::open(&mut lp, master)?;
    emulator.set_winsize(&lp, WinSize { rows: 24, cols: 80, ..WinSize::default() })?;
    let size = term.winsize(&lp)?;
    say(format!("the terminal is {}x{}", size.cols, size.rows));
    term.set_mode(&mut lp, TtyMode::Raw)?;
    let s = say.clone();
    term.read_start(&mut lp, move |lp, term, ev| {
        if let ReadEvent::Data(key) = ev {
            s(format!("raw mode: key {:?} arrived without Enter", String::from_utf8_lossy(key)));
            term.write(lp, b"bye\n", |_, r| r.unwrap()).unwrap();
            // Closing puts the terminal back in normal mode; the master then sees the end.
            term.close(lp).unwrap();
        }
    })?;
    let s = say.clone();
    let mut screen = Vec::new();
    emulator.read_start(&mut lp, move |lp, emulator, ev| match ev {
        ReadEvent::Data(bytes) => screen.extend_from_slice(bytes),
        ReadEvent::Eof => {
            let screen = String::from_utf8_lossy(&screen);
            s(format!("the emulator saw {screen:?} (raw mode keeps \\n -> \\r\\n), then the end"));
            emulator.close(lp).unwrap();
        }
        ReadEvent::Error(e) => panic!("read: {e}"),
    })?;
    emulator.write(&mut lp, b"k", |_, r| r.unwrap())?;
    lp.run(RunMode::Default)?;

    // 7. Children: a process with its stdout on a pipe, its exit status, and a pipeline
    //    whose stages talk to each other directly.
    println!("== children");
    let child = Command::new("sh")
        .args(["-c", "echo hello from a child; exit 3"])
        .stdout(Stdio::Pipe)
        .spawn(&mut lp, {
            let s = say.clone();
            move |lp, p, status| {
                s(format!("child {}", status.unwrap()));
                p.close(lp).unwrap();
            }
        })?;
    let s = say.clone();
    child.stdout.unwrap().read_start(&mut lp, move |lp, out, ev| match ev {
        ReadEvent::Data(d) => s(format!("child says {:?}", String::from_utf8_lossy(d).trim_end())),
        _ => out.close(lp).unwrap(),
    })?;
    let mut sort = Command::new("sort");
    sort.stdout(Stdio::Pipe);
    let mut printf = Command::new("printf");
    printf.arg("pear\napple\n");
    let s = say.clone();
    let stages = Pipeline::new([printf, sort]).spawn(&mut lp, move |_, statuses| {
        let ok = statuses.iter().filter(|st| st.as_ref().is_ok_and(|st| st.success())).count();
        s(format!("pipeline: {ok} of {} stages succeeded", statuses.len()));
    })?;
    let s = say.clone();
    stages[1].stdout.unwrap().read_start(&mut lp, move |lp, out, ev| match ev {
        ReadEvent::Data(d) => s(format!("sorted: {:?}", String::from_utf8_lossy(d))),
        _ => out.close(lp).unwrap(),
    })?;
    lp.run(RunMode::Default)?;

    // 8. A child on a pty, as a terminal emulator or an `expect` runs one: the slave is its
    //    stdio and its controlling terminal, so it knows the window size, and a Ctrl-C typed
    //    at the master interrupts it.
    println!("== a child on a pty");
    let (master, slave) = evloop::tty::openpty()?;
    let emulator = Tty::open(&mut lp, master)?;
    emulator.set_winsize(&lp, WinSize { rows: 24, cols: 80, ..WinSize::default() })?;
    let mut job = Command::new("sh");
    job.args(["-c", "echo \"window $(stty size)\"; exec sleep 10"])
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave)
        .controlling_terminal(0);
    let s = say.clone();
    job.spawn(&mut lp, move |lp, p, status| {
        s(format!("the child on the pty: {}", status.unwrap()));
        p.close(lp).unwrap();
    })?;
    drop(job); // its copies of the slave: the master sees the end once the child's are gone
    let s = say.clone();
    let mut screen = Vec::new();
    emulator.read_start(&mut lp, move |lp, emulator, ev| match ev {
        ReadEvent::Data(bytes) => {
            let had_line = screen.ends_with(b"\r\n");
            screen.extend_from_slice(bytes);
            if !had_line && screen.ends_with(b"\r\n") {
                s(format!("the child says {:?}; typing Ctrl-C", String::from_utf8_lossy(&screen).trim_end()));
                emulator.write(lp, b"\x03", |_, r| r.unwrap()).unwrap();
            }
        }
        // The child's session is gone: the master reaches its end.
        _ => emulator.close(lp).unwrap(),
    })?;
    lp.run(RunMode::Default)?;

    println!(
        "== done: {} events, {} iterations, no handles left: {}",
        log.borrow().len(),
        lp.iterations(),
        lp.handles().is_empty()
    );
    // Every handle above closed itself; CI runs the tour, so a leak shows as a failure.
    if !lp.handles().is_empty() {
        return Err(std::io::Error::other(format!("handles left open: {:?}", lp.handles())));
    }
    Ok(())
}
