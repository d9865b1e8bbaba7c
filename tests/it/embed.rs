use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use evloop::{Async, Loop, Pipe, ReadEvent, RunMode, Timer};

use crate::util::test_loop;

/// Three timer ticks plus one wake from another thread: the work every embedding test drives.
/// The waking thread finishes before the wake lands; callers join it at the end.
fn inner_work(lp: &mut Loop) -> (Rc<Cell<u32>>, Rc<Cell<bool>>, std::thread::JoinHandle<()>) {
    let ticks = Rc::new(Cell::new(0));
    let woken = Rc::new(Cell::new(false));
    let t = Timer::new(lp);
    let tk = ticks.clone();
    t.start(lp, Duration::from_millis(5), Duration::from_millis(5), move |lp, t| {
        tk.set(tk.get() + 1);
        if tk.get() == 3 {
            t.close(lp).unwrap();
        }
    })
    .unwrap();
    let w = woken.clone();
    let (_h, waker) = Async::new(lp, move |lp, h| {
        w.set(true);
        h.close(lp).unwrap();
    });
    let t = std::thread::spawn(move || waker.wake().unwrap());
    (ticks, woken, t)
}

case!(
    fn nested_in_a_plain_poll_loop() {
        let mut lp = test_loop();
        let (ticks, woken, waker_thread) = inner_work(&mut lp);
        let mut outer_iterations = 0;
        while lp.is_alive() {
            outer_iterations += 1;
            evloop_platform::fd::poll_readable(lp.backend_fd(), lp.backend_timeout()).unwrap();
            lp.run(RunMode::NoWait).unwrap();
        }
        assert_eq!(ticks.get(), 3);
        assert!(woken.get());
        waker_thread.join().unwrap();
        assert!(outer_iterations < 1000, "the outer loop slept between events: {outer_iterations}");
    }
);

case!(
    /// An embedded loop whose handles are all unreferenced (a resize watcher, a background
    /// timer) still gets them served: the outer loop owns the lifetime, so run(NoWait) makes
    /// its pass and backend_timeout counts the unreferenced timer. Before, run(NoWait) did
    /// nothing once no referenced handle was left, and the outer loop spun on a due timer.
    fn nested_loop_with_only_unreferenced_handles_still_runs_them() {
        let mut lp = test_loop();
        let fired = Rc::new(Cell::new(0u32));
        let f = fired.clone();
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::from_millis(2), Duration::from_millis(2), move |lp, t| {
            f.set(f.get() + 1);
            if f.get() == 3 {
                t.close(lp).unwrap();
            }
        })
        .unwrap();
        t.set_ref(&mut lp, false).unwrap();
        // A wake for an unreferenced Async: it must arrive through the backend fd.
        let woken = Rc::new(Cell::new(false));
        let w = woken.clone();
        let (a, waker) = Async::new(&mut lp, move |lp, h| {
            w.set(true);
            h.close(lp).unwrap();
        });
        a.set_ref(&mut lp, false).unwrap();
        assert!(!lp.is_alive(), "nothing referenced");
        waker.wake().unwrap();
        let mut outer_iterations = 0;
        while !lp.handles().is_empty() {
            outer_iterations += 1;
            assert!(outer_iterations < 1000, "the outer loop spins: the nested one serves nothing");
            evloop_platform::fd::poll_readable(lp.backend_fd(), lp.backend_timeout()).unwrap();
            lp.run(RunMode::NoWait).unwrap();
        }
        assert_eq!(fired.get(), 3);
        assert!(woken.get());
    }
);

case!(
    fn nested_in_another_evloop_through_backend_timeout() {
        // The inner loop's backend fd polled by an outer loop's prepare/check cycle is the
        // libuv embedding pattern; here the outer loop uses a timer for the timeout.
        let mut inner = test_loop();
        let (ticks, woken, waker_thread) = inner_work(&mut inner);
        let mut outer = test_loop();
        while inner.is_alive() {
            let wait = inner.backend_timeout().unwrap_or(Duration::from_millis(50));
            let t = Timer::new(&mut outer);
            t.start(&mut outer, wait, Duration::ZERO, |_, _| {}).unwrap();
            // Wait for either the outer timer or inner readiness.
            if !evloop_platform::fd::poll_readable(inner.backend_fd(), Some(Duration::ZERO)).unwrap() {
                outer.run(RunMode::Once).unwrap();
            }
            t.close(&mut outer).unwrap();
            outer.run(RunMode::NoWait).unwrap();
            inner.run(RunMode::NoWait).unwrap();
        }
        assert_eq!(ticks.get(), 3);
        assert!(woken.get());
        waker_thread.join().unwrap();
    }
);

/// A mio `Poll` watching the loop's fd (edge-triggered, as mio does), and that fd.
fn mio_poll_on(lp: &Loop) -> (mio::Poll, std::os::fd::RawFd) {
    let poll = mio::Poll::new().unwrap();
    let raw = lp.as_raw_fd();
    poll.registry().register(&mut mio::unix::SourceFd(&raw), mio::Token(0), mio::Interest::READABLE).unwrap();
    (poll, raw)
}

case!(
    fn nested_in_mio() {
        let mut lp = test_loop();
        let (ticks, woken, waker_thread) = inner_work(&mut lp);
        let (mut poll, raw) = mio_poll_on(&lp);
        let mut events = mio::Events::with_capacity(8);
        while lp.is_alive() {
            poll.poll(&mut events, lp.backend_timeout()).unwrap();
            lp.run(RunMode::NoWait).unwrap();
        }
        poll.registry().deregister(&mut mio::unix::SourceFd(&raw)).unwrap();
        assert_eq!(ticks.get(), 3);
        assert!(woken.get());
        waker_thread.join().unwrap();
    }
);

case!(
    fn nested_in_tokio_through_async_fd() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (ticks, woken, tokio_ticks, waker_thread) = rt.block_on(async {
            let mut lp = test_loop();
            let (ticks, woken, waker_thread) = inner_work(&mut lp);
            // A tokio task runs beside the nested loop on the same thread.
            let tokio_ticks = Rc::new(Cell::new(0));
            let tt = tokio_ticks.clone();
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async move {
                    tokio::task::spawn_local(async move {
                        for _ in 0..3 {
                            tokio::time::sleep(Duration::from_millis(3)).await;
                            tt.set(tt.get() + 1);
                        }
                    });
                    let poller = lp.backend_fd().try_clone_to_owned().unwrap();
                    // SAFETY: the `AsyncFd` owns `poller`, and nothing replaces it.
                    let afd = unsafe { tokio::io::unix::AsyncFd::register(poller) }.unwrap();
                    while lp.is_alive() {
                        tokio_round(&mut lp, &afd, Duration::from_secs(3600)).await;
                    }
                })
                .await;
            (ticks, woken, tokio_ticks, waker_thread)
        });
        assert_eq!(ticks.get(), 3);
        assert!(woken.get());
        waker_thread.join().unwrap();
        assert!(tokio_ticks.get() > 0);
    }
);

case!(
    /// `backend_timeout` counts live timers only: a stopped timer leaves its entry queued,
    /// and an outer loop told to wake for it would wake for nothing. It used to name the
    /// stopped timer's deadline.
    fn issue_2_backend_timeout_ignores_stopped_timers() {
        let mut lp = test_loop();
        let stopped = Timer::new(&mut lp);
        stopped.start(&mut lp, Duration::from_millis(10), Duration::ZERO, |_, _| unreachable!()).unwrap();
        stopped.stop(&mut lp).unwrap();
        assert_eq!(lp.backend_timeout(), None, "nothing to wake for");
        let live = Timer::new(&mut lp);
        live.start(&mut lp, Duration::from_secs(60), Duration::ZERO, |_, _| unreachable!()).unwrap();
        let wait = lp.backend_timeout().expect("the live timer");
        assert!(wait > Duration::from_secs(50), "the live timer's deadline, not the stopped one's: {wait:?}");
        for t in [stopped, live] {
            t.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

/// One round of a loop nested in tokio, as examples/embed_tokio.rs drives it: work due now
/// gets no wait, only a turn for tokio's other tasks; else the wait is for the loop's fd
/// or its timeout (`forever` if none). Then a `run(NoWait)`. Returns the timeout it read,
/// and whether the fd ended the wait.
async fn tokio_round(
    lp: &mut Loop,
    afd: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    forever: Duration,
) -> (Option<Duration>, bool) {
    let timeout = lp.backend_timeout();
    let woke = match timeout {
        Some(t) if t.is_zero() => {
            tokio::task::yield_now().await;
            false
        }
        _ => tokio::select! {
            guard = afd.readable() => { guard.unwrap().clear_ready(); true }
            _ = tokio::time::sleep(timeout.unwrap_or(forever)) => false,
        },
    };
    lp.run(RunMode::NoWait).unwrap();
    (timeout, woke)
}

/// A pipe holding `n` bytes, read one byte at a time: more than one event's bounded reads
/// take, so each run leaves the pipe ready. Returns the count read so far.
fn slow_reader(lp: &mut Loop, n: usize) -> (Rc<Cell<usize>>, Pipe, Pipe) {
    let (rx, tx) = Pipe::pair(lp).unwrap();
    rx.set_read_cap(lp, 1).unwrap();
    let got = Rc::new(Cell::new(0));
    let g = got.clone();
    rx.read_start(lp, move |_, _, ev| {
        if let ReadEvent::Data(d) = ev {
            g.set(g.get() + d.len())
        }
    })
    .unwrap();
    tx.write(lp, &vec![b'x'; n], |_, r| r.unwrap()).unwrap();
    (got, rx, tx)
}

case!(
    secs = 30,
    /// Nested in mio, which watches the loop's fd edge-triggered: a run that stops at the
    /// bound on reads per event leaves the pipe ready in the loop's level-triggered poller,
    /// which makes no new edge for the outer one. `backend_timeout` said "wait for the fd",
    /// and the outer loop waited for good with bytes unread; it now says "run now".
    fn issue_3_nested_in_mio_a_bounded_read_round_does_not_stall_the_outer_loop() {
        let mut lp = test_loop();
        let (got, rx, tx) = slow_reader(&mut lp, 100);
        let (mut poll, raw) = mio_poll_on(&lp);
        let mut events = mio::Events::with_capacity(8);
        while got.get() < 100 {
            let timeout = lp.backend_timeout();
            // Two seconds tell a wait for good (the test's watchdog would tell too, later).
            poll.poll(&mut events, Some(timeout.unwrap_or(Duration::from_secs(2)))).unwrap();
            assert!(
                timeout.is_some() || !events.is_empty(),
                "the outer loop would wait for good with {} of 100 bytes read",
                got.get()
            );
            lp.run(RunMode::NoWait).unwrap();
        }
        poll.registry().deregister(&mut mio::unix::SourceFd(&raw)).unwrap();
        for p in [rx, tx] {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert_eq!(lp.backend_timeout(), None, "nothing left");
    }
);

case!(
    secs = 30,
    /// The same, nested in tokio through `AsyncFd` (edge-triggered too), as
    /// examples/embed_tokio.rs does it. Each round with bytes left says "run now" (zero),
    /// which the pattern meets with no wait: it waited through tokio's `sleep(ZERO)`, which
    /// takes a millisecond tick, so a stream read a few bytes a round took a millisecond a
    /// round (embedding trial: 60,000 bytes at 16 a read, 127 ms against 1.2 ms).
    fn issue_3_nested_in_tokio_a_bounded_read_round_does_not_stall_the_outer_loop() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut lp = test_loop();
            let (got, rx, tx) = slow_reader(&mut lp, 100);
            let poller = lp.backend_fd().try_clone_to_owned().unwrap();
            // SAFETY: the `AsyncFd` owns `poller`, and nothing replaces it.
            let afd = unsafe { tokio::io::unix::AsyncFd::register(poller) }.unwrap();
            while got.get() < 100 {
                let left = 100 - got.get();
                let (timeout, woke) = tokio_round(&mut lp, &afd, Duration::from_secs(2)).await;
                assert!(
                    timeout.is_some() || woke,
                    "the outer loop would wait for good with {left} bytes unread"
                );
                // (Through the select helper, readiness comes from its thread, a moment later:
                // the fd tells then.)
                if !crate::util::forced_select() {
                    assert_eq!(timeout, Some(Duration::ZERO), "{left} of 100 bytes unread: run now");
                }
            }
            drop(afd);
            for p in [rx, tx] {
                p.close(&mut lp).unwrap();
            }
            lp.run(RunMode::Default).unwrap();
        });
    }
);

case!(
    /// The pattern `backend_timeout`'s docs give for a loop nested in another evloop: an
    /// `FdWatch` on a duplicate of the inner loop's fd, and a `Prepare` handle (before the
    /// outer poll) that arms an outer timer for the inner loop's next timeout.
    fn nested_in_another_evloop_through_prepare_and_fd_watch() {
        use evloop::fd_watch::Interest;
        use evloop::{FdWatch, Prepare};
        let inner = Rc::new(std::cell::RefCell::new(test_loop()));
        let (ticks, woken, waker_thread) = inner_work(&mut inner.borrow_mut());
        let mut outer = test_loop();
        let dup = inner.borrow().backend_fd().try_clone_to_owned().unwrap();
        let watch = FdWatch::new(&mut outer, dup).unwrap();
        let i = inner.clone();
        watch
            .start(&mut outer, Interest::READABLE, move |_, _, _| {
                i.borrow_mut().run(RunMode::NoWait).unwrap();
            })
            .unwrap();
        let timer = Timer::new(&mut outer);
        let prepare = Prepare::new(&mut outer);
        let i = inner.clone();
        prepare
            .start(&mut outer, move |lp, prepare| {
                let inner = i.borrow();
                if !inner.is_alive() {
                    for id in [watch.id(), timer.id(), prepare.id()] {
                        lp.close(id).unwrap();
                    }
                    return;
                }
                let _ = timer.stop(lp);
                if let Some(wait) = inner.backend_timeout() {
                    let i = i.clone();
                    timer
                        .start(lp, wait, Duration::ZERO, move |_, _| {
                            i.borrow_mut().run(RunMode::NoWait).unwrap();
                        })
                        .unwrap();
                }
                drop(inner);
            })
            .unwrap();
        outer.run(RunMode::Default).unwrap();
        assert_eq!(ticks.get(), 3);
        assert!(woken.get());
        waker_thread.join().unwrap();
        assert!(outer.handles().is_empty(), "{:?}", outer.handles());
    }
);

case!(
    /// Re-trial: after `run(Default)` returned with nothing left, `backend_timeout` said zero
    /// about half the time (an embedder woke once for nothing): a capture whose child left
    /// its 4 MiB input unread closed its stdin pipe in the close phase, and that stream's
    /// interest change stayed queued. `run` hands the last changes to the backend now.
    fn issue_6_backend_timeout_says_nothing_once_run_left_nothing() {
        for i in 0..10 {
            let mut lp = test_loop();
            evloop::Command::new("sleep")
                .arg("0.05")
                .output_with_input(&mut lp, vec![b'x'; 4 << 20], |_, out| {
                    assert!(out.unwrap().status.success())
                })
                .unwrap();
            assert!(!lp.run(RunMode::Default).unwrap());
            assert!(lp.handles().is_empty(), "round {i}");
            assert_eq!(lp.backend_timeout(), None, "round {i}");
        }
    }
);
