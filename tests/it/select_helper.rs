use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;

use evloop::{Loop, Pipe, ReadEvent, RunMode, Timer};

use crate::pipe::{Sum, collect, pattern};

fn helper_loop() -> Loop {
    Loop::builder().force_select_helper(true).build().unwrap()
}

/// Thread ids of this process whose name is `name`.
fn threads_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits, at most 10 s, until `count` threads are named `name`: a thread whose join has
/// returned still shows in `/proc/self/task` until the kernel finishes its exit.
fn wait_for_threads(name: &str, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while threads_named(name).len() != count && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// User plus system CPU time of thread `tid`, in clock ticks.
fn thread_cpu_ticks(tid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the parenthesised name: state is field 3; utime, stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Moves both ends of a fresh pipe to fd numbers at or above `min`.
fn high_pipe(min: i32) -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    let r = evloop_platform::fd::dup_cloexec(r.as_fd(), min).unwrap();
    let w = evloop_platform::fd::dup_cloexec(w.as_fd(), min).unwrap();
    (r, w)
}

fn transfer_through(lp: &mut Loop, r: OwnedFd, w: OwnedFd, bytes: usize) {
    let rx = Pipe::open(lp, r).unwrap();
    let tx = Pipe::open(lp, w).unwrap();
    let got = collect(lp, rx);
    let data = pattern(9, bytes);
    tx.write(lp, &data, |_, r| r.unwrap()).unwrap();
    tx.shutdown(lp, move |lp, r| {
        r.unwrap();
        tx.close(lp).unwrap();
    })
    .unwrap();
    lp.run(RunMode::Default).unwrap();
    assert_eq!(got.borrow().data, data);
    assert!(got.borrow().eof);
}

case!(
    fn fds_above_1024_and_4096_work() {
        let (soft, hard) = evloop_platform::fd::nofile_limit().unwrap();
        if soft < 8192 {
            evloop_platform::fd::set_nofile_soft_limit(8192.min(hard)).unwrap();
        }
        let mut lp = helper_loop();
        for min in [1025, 4097] {
            let (r, w) = high_pipe(min);
            assert!(r.as_raw_fd() >= min && w.as_raw_fd() >= min);
            transfer_through(&mut lp, r, w, 300_000);
        }
        drop(lp);
        evloop_platform::fd::set_nofile_soft_limit(soft).unwrap();
    }
);

case!(
    fn two_hundred_streams_at_once() {
        let mut lp = helper_loop();
        let mut expect = Vec::new();
        for i in 0..200u64 {
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            let got = collect(&mut lp, rx);
            let data = pattern(i, 1000 + (i as usize * 997) % 100_000);
            tx.write(&mut lp, &data, |_, r| r.unwrap()).unwrap();
            tx.shutdown(&mut lp, move |lp, r| {
                r.unwrap();
                tx.close(lp).unwrap();
            })
            .unwrap();
            expect.push((got, data));
        }
        lp.run(RunMode::Default).unwrap();
        for (i, (got, data)) in expect.iter().enumerate() {
            assert_eq!(got.borrow().data, *data, "stream {i}");
            assert!(got.borrow().eof, "stream {i}");
        }
        assert_eq!(threads_named("evloop-select").len(), 1, "one helper thread serves them all");
    }
);

case!(
    fn interest_changes_while_the_helper_sits_in_select() {
        let mut lp = helper_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let got = Rc::new(RefCell::new(Sum::new()));
        let on_read = {
            let got = got.clone();
            move |lp: &mut Loop, rx: Pipe, ev: ReadEvent<'_>| match ev {
                ReadEvent::Data(d) => got.borrow_mut().update(d),
                ReadEvent::Eof => rx.close(lp).unwrap(),
                ReadEvent::Error(e) => panic!("{e}"),
            }
        };
        rx.read_start(&mut lp, on_read.clone()).unwrap();
        // Let the helper settle into select with the read interest.
        lp.run(RunMode::NoWait).unwrap();
        let mut sent = Sum::new();
        let step = Rc::new(Cell::new(0));
        let t = Timer::new(&mut lp);
        let blocks: Vec<Vec<u8>> = (0..4).map(|i| pattern(i, 200_000)).collect();
        for b in &blocks {
            sent.update(b);
        }
        t.start(&mut lp, Duration::from_millis(2), Duration::from_millis(2), move |lp, t| {
            step.set(step.get() + 1);
            match step.get() {
                // Stop reading, then write more than the pipe holds: the write interest is
                // armed while the helper is in select, and nothing can drain it.
                1 => {
                    rx.read_stop(lp).unwrap();
                    tx.write(lp, &blocks[0], |_, r| r.unwrap()).unwrap();
                    tx.write(lp, &blocks[1], |_, r| r.unwrap()).unwrap();
                    assert!(tx.write_queue_size(lp).unwrap() > 0);
                }
                // Start reading again: the queue drains through the helper's write reports.
                2 => rx.read_start(lp, on_read.clone()).unwrap(),
                3 => {
                    tx.write(lp, &blocks[2], |_, r| r.unwrap()).unwrap();
                    tx.write(lp, &blocks[3], |_, r| r.unwrap()).unwrap();
                }
                _ => {
                    if tx.write_queue_size(lp).unwrap() == 0 {
                        tx.close(lp).unwrap();
                        t.close(lp).unwrap();
                    }
                }
            }
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*got.borrow(), sent);
    }
);

case!(
    fn closing_a_stream_while_the_helper_is_in_select() {
        let mut lp = helper_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        rx.read_start(&mut lp, |_, _, _| panic!("nothing is written")).unwrap();
        let (rx2, tx2) = Pipe::pair(&mut lp).unwrap();
        let got = collect(&mut lp, rx2);
        lp.run(RunMode::NoWait).unwrap();
        let t = Timer::new(&mut lp);
        let epipe = Rc::new(Cell::new(false));
        let e = epipe.clone();
        t.start(&mut lp, Duration::from_millis(5), Duration::ZERO, move |lp, t| {
            // The helper watches rx inside select right now.
            rx.close(lp).unwrap();
            // The peer sees the close at once: a write gets EPIPE.
            let e = e.clone();
            tx.write(lp, b"x", move |_, r| e.set(r.is_err())).unwrap();
            tx2.write(lp, b"still served", |_, r| r.unwrap()).unwrap();
            tx2.close(lp).unwrap();
            t.close(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(epipe.get(), "the reader end was released when closed");
        assert_eq!(got.borrow().data, b"still served");
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn dropping_the_loop_ends_the_helper_thread() {
        let before = threads_named("evloop-select").len();
        {
            let mut lp = helper_loop();
            let (rx, _tx) = Pipe::pair(&mut lp).unwrap();
            rx.read_start(&mut lp, |_, _, _| {}).unwrap();
            lp.run(RunMode::NoWait).unwrap();
            assert_eq!(threads_named("evloop-select").len(), before + 1);
            // Dropped with the stream open and the thread inside select.
        }
        // Joined: the kernel lets the join return before the thread leaves /proc.
        wait_for_threads("evloop-select", before);
        assert_eq!(threads_named("evloop-select").len(), before, "joined");
    }
);

case!(
    /// The lock-step hand-off: idle streams cost the helper no CPU, and a ready stream the
    /// loop has not read yet does not make it spin.
    fn issue_4_the_helper_does_not_spin() {
        let mut lp = helper_loop();
        let mut pipes = Vec::new();
        for _ in 0..50 {
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            rx.read_start(&mut lp, |_, _, _| {}).unwrap();
            pipes.push((rx, tx));
        }
        lp.run(RunMode::NoWait).unwrap();
        let tid = threads_named("evloop-select").pop().unwrap();
        // 1. Idle: the loop waits 300 ms on a timer while the helper watches 50 streams.
        let before = thread_cpu_ticks(&tid);
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::from_millis(300), Duration::ZERO, |_, _| {}).unwrap();
        let iterations = lp.iterations();
        while t.is_active(&lp).unwrap() {
            lp.run(RunMode::Once).unwrap();
        }
        let idle = thread_cpu_ticks(&tid) - before;
        assert!(idle <= 2, "helper used {idle} ticks of CPU in 300 ms of idleness");
        assert!(lp.iterations() - iterations < 20, "the loop slept too");
        // 2. Ready but not yet read: data waits on a watched stream and the loop does not run
        // for 300 ms. The helper reported it once and waits for the loop's acknowledgement;
        // without that wait, level-triggered select would return at once, over and over.
        let (rx, tx) = pipes[0];
        tx.write(&mut lp, b"ready", |_, r| r.unwrap()).unwrap();
        // The helper's report wakes the loop's backend; from then on it waits for the loop.
        let report = Duration::from_secs(10);
        assert!(evloop_platform::fd::poll_readable(lp.backend_fd(), Some(report)).unwrap(), "no report");
        let (quiet, _keep) = std::io::pipe().unwrap();
        let before = thread_cpu_ticks(&tid);
        assert!(
            !evloop_platform::fd::poll_readable(quiet.as_fd(), Some(Duration::from_millis(300))).unwrap()
        );
        let waiting = thread_cpu_ticks(&tid) - before;
        assert!(waiting <= 2, "helper used {waiting} ticks while waiting for the loop");
        // The loop then reads the data it was told about.
        rx.read_stop(&mut lp).unwrap();
        let got = collect(&mut lp, rx);
        lp.run(RunMode::NoWait).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        assert_eq!(got.borrow().data, b"ready");
        for h in lp.handles() {
            if !h.closing {
                lp.close(h.id).unwrap();
            }
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn an_fd_select_rejects_fails_only_its_own_stream() {
        let mut lp = helper_loop();
        let (r, w) = std::io::pipe().unwrap();
        let bad = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let raw = bad.fd(&lp).unwrap().as_raw_fd();
        let bad_got = collect(&mut lp, bad);
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let good = collect(&mut lp, rx);
        // Closed behind the loop's back before the helper's first select with it (the loop
        // hands the fd over at its next run): select refuses it. (Closed while the thread
        // is already inside select, nothing is heard until the next wakeup; see
        // pipe::an_fd_closed_behind_the_loops_back_after_registration_errs_at_the_next_change.)
        nix::unistd::close(raw).unwrap();
        tx.write(&mut lp, b"the others keep working", |_, r| r.unwrap()).unwrap();
        tx.shutdown(&mut lp, move |lp, _| tx.close(lp).unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        let bad_got = bad_got.borrow();
        assert_eq!(bad_got.errors.len(), 1, "one error, on that stream");
        let e = &bad_got.errors[0];
        assert_eq!(evloop::os_error_code(e), Some(nix::libc::EBADF));
        assert!(e.to_string().contains("select helper"), "the error says why: {e}");
        assert_eq!(good.borrow().data, b"the others keep working");
        drop(w);
    }
);

case!(
    /// An fd watch behind the helper whose fd was closed behind the loop's back: its
    /// callback gets the error once, and the watch stops; a stream beside it keeps working.
    /// (The watch finds the fd gone itself, before handing it to the helper; a stream's
    /// such error comes from the helper: above.)
    fn an_fd_watch_the_helper_cannot_watch_gets_the_error_once() {
        use evloop::FdWatch;
        use evloop::fd_watch::Interest;
        let mut lp = helper_loop();
        let (r, w) = std::io::pipe().unwrap();
        let watch = FdWatch::new(&mut lp, OwnedFd::from(r)).unwrap();
        let errors = Rc::new(RefCell::new(Vec::new()));
        let e = errors.clone();
        watch
            .start(&mut lp, Interest::READABLE, move |_, _, ready| {
                e.borrow_mut().push(ready.map_err(|e| (evloop::os_error_code(&e), e.to_string())));
            })
            .unwrap();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let good = collect(&mut lp, rx);
        nix::unistd::close(watch.fd(&lp).unwrap().as_raw_fd()).unwrap();
        tx.write(&mut lp, b"the others keep working", |_, r| r.unwrap()).unwrap();
        tx.shutdown(&mut lp, move |lp, _| tx.close(lp).unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        let errors = errors.borrow();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let (code, text) = errors[0].clone().unwrap_err();
        assert_eq!(code, Some(nix::libc::EBADF));
        // (Found by the watch itself, before the helper would have been asked.)
        assert!(text.contains("closed behind its back"), "{text}");
        assert!(!watch.is_active(&lp).unwrap(), "stopped");
        assert_eq!(good.borrow().data, b"the others keep working");
        watch.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        drop(w);
    }
);

case!(
    /// While `run` goes on, the loop selects on the helper's fds itself; when `run` returns,
    /// the thread takes them back, so an embedder waiting on `backend_fd` hears of new data.
    fn issue_4_the_thread_takes_the_fds_back_when_run_returns() {
        let mut lp = helper_loop();
        let (r, w) = std::io::pipe().unwrap();
        let mut w = std::fs::File::from(OwnedFd::from(w));
        let rx = Pipe::open(&mut lp, OwnedFd::from(r)).unwrap();
        let got = collect(&mut lp, rx);
        // Interest changes reach the helper in the next poll phase.
        lp.run(RunMode::NoWait).unwrap();
        for (i, msg) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
            std::io::Write::write_all(&mut w, msg).unwrap();
            // Only the thread can make the backend fd readable here: the loop is not running.
            assert!(
                evloop_platform::fd::poll_readable(lp.backend_fd(), Some(Duration::from_secs(10))).unwrap(),
                "message {i}: the backend fd never became readable"
            );
            let want = got.borrow().data.len() + msg.len();
            while got.borrow().data.len() < want {
                lp.run(RunMode::NoWait).unwrap();
            }
        }
        assert_eq!(got.borrow().data, b"onetwothree");
        // And inside one run: a message from a timer callback, read by the loop itself.
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::from_millis(1), Duration::ZERO, move |lp, t| {
            std::io::Write::write_all(&mut w, b"four").unwrap();
            drop(std::mem::replace(&mut w, std::fs::File::open("/dev/null").unwrap()));
            t.close(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"onetwothreefour");
        assert!(got.borrow().eof);
    }
);

/// The fd numbers open in this process (not counting the one that lists them).
fn open_fd_numbers() -> Vec<i32> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    listed.into_iter().filter(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok()).collect()
}

case!(
    /// The helper thread's interrupt pipe, closed behind the loop's back: select then failed
    /// with no watched fd to blame, and the thread ended in silence, leaving the streams it
    /// served deaf for good. Now it wakes the loop as it stops, and the loop starts a new
    /// thread with the watches.
    fn issue_3_a_select_helper_thread_whose_interrupt_pipe_was_closed_is_replaced() {
        let mut lp = helper_loop();
        let before = open_fd_numbers();
        let (reader, writer) = Pipe::pair(&mut lp).unwrap();
        let ours = [reader.fd(&lp).unwrap().as_raw_fd(), writer.fd(&lp).unwrap().as_raw_fd()];
        // The helper's interrupt pipe: the other new fds; its read end is open read-only.
        let read_only = |fd: i32| {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap().trim();
            i32::from_str_radix(flags, 8).unwrap() & libc::O_ACCMODE == libc::O_RDONLY
        };
        let interrupt: Vec<i32> =
            open_fd_numbers().into_iter().filter(|fd| !before.contains(fd) && !ours.contains(fd)).collect();
        assert_eq!(interrupt.len(), 2, "{interrupt:?}");
        let int_r = interrupt.into_iter().find(|&fd| read_only(fd)).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let g = got.clone();
        reader
            .read_start(&mut lp, move |_, _, ev| {
                if let ReadEvent::Data(d) = ev {
                    g.borrow_mut().extend_from_slice(d);
                }
            })
            .unwrap();
        let send = |lp: &Loop, b: &[u8]| {
            nix::unistd::write(writer.fd(lp).unwrap(), b).unwrap();
        };
        let until = |lp: &mut Loop, want: &[u8]| {
            while got.borrow().as_slice() != want {
                lp.run(RunMode::Once).unwrap();
            }
        };
        send(&lp, b"a");
        until(&mut lp, b"a");
        let first = threads_named("evloop-select");
        // Behind the loop's back (the thread forgets the fd rather than close the number
        // again). The thread notices at its next select, after "b" and the hand-back, and
        // stops; the loop, woken, starts another.
        nix::unistd::close(int_r).unwrap();
        send(&lp, b"b");
        until(&mut lp, b"ab");
        let bound = Timer::once(&mut lp, Duration::from_secs(5), |_| {}).unwrap();
        while threads_named("evloop-select") == first && bound.is_active(&lp).unwrap_or(false) {
            lp.run(RunMode::Once).unwrap();
        }
        assert_ne!(threads_named("evloop-select"), first, "the thread was not replaced");
        // The new one serves the pipe.
        send(&lp, b"c");
        while got.borrow().as_slice() != b"abc" && bound.is_active(&lp).unwrap_or(false) {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(got.borrow().as_slice(), b"abc");
        // The old thread has returned; it leaves /proc a little later.
        wait_for_threads("evloop-select", 1);
        assert_eq!(threads_named("evloop-select").len(), 1);
        let _ = bound.close(&mut lp);
        reader.close(&mut lp).unwrap();
        writer.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

/// How many times thread `tid` of this process gave up the CPU by itself (it slept: parked,
/// or waited in `select` or on a lock).
#[cfg(target_os = "linux")]
fn voluntary_switches(tid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
    line["voluntary_ctxt_switches:".len()..].trim().parse().unwrap()
}

case!(
    /// Found by mutation testing: with the thread's wait for the acknowledgement taken out,
    /// every test passed, since the one-slot hand-off channel holds back a thread that
    /// reports again before the loop took the last report. While the loop holds the watches
    /// inside `run` (it selects on them itself), the thread must stay parked and select on
    /// nothing: a ping-pong of 1,000 bytes through one stream costs it no wakeup. (Each
    /// wakeup of the thread is a voluntary context switch; no time is measured.)
    #[cfg(target_os = "linux")]
    fn issue_4_the_thread_stays_parked_while_the_loop_selects_its_fds() {
        const ROUNDS: usize = 1000;
        let mut lp = helper_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        // The thread exists once a stream does.
        let tid = threads_named("evloop-select").pop().unwrap();
        let n = Rc::new(Cell::new(0));
        let switches = Rc::new(Cell::new((0, 0)));
        let (c, s) = (n.clone(), switches.clone());
        rx.read_start(&mut lp, move |lp, _, ev| {
            let ReadEvent::Data(d) = ev else { panic!("{ev:?}") };
            c.set(c.get() + d.len());
            // From the 10th byte on, the loop holds the watches (it did from the first report).
            if c.get() == 10 {
                s.set((voluntary_switches(&tid), 0));
            }
            if c.get() == ROUNDS {
                s.set((s.get().0, voluntary_switches(&tid)));
                lp.stop();
                return;
            }
            tx.write(lp, b"x", |_, r| r.unwrap()).unwrap();
        })
        .unwrap();
        tx.write(&mut lp, b"x", |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(n.get(), ROUNDS);
        let (from, to) = switches.get();
        assert!(to - from <= 2, "the thread woke {} times while the loop held its fds", to - from);
        for p in [rx, tx] {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);
