use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use evloop::{Check, HandleKind, Idle, Loop, Prepare, RunMode, Timer};

use crate::util::test_loop;

case!(
    fn default_mode_returns_when_nothing_is_alive() {
        let mut lp = test_loop();
        assert!(!lp.is_alive());
        assert!(!lp.run(RunMode::Default).unwrap());
        // An inactive handle does not keep the loop alive either.
        let _t = Timer::new(&mut lp);
        assert!(!lp.run(RunMode::Default).unwrap());
    }
);

case!(
    fn once_waits_for_the_next_timer_and_nowait_does_not() {
        let mut lp = test_loop();
        let fired = Rc::new(Cell::new(false));
        let t = Timer::new(&mut lp);
        let f = fired.clone();
        // NoWait: the timer is not due, nothing blocks (a wait would last the test's time).
        t.start(&mut lp, Duration::from_secs(60), Duration::ZERO, move |_, _| f.set(true)).unwrap();
        assert!(lp.run(RunMode::NoWait).unwrap());
        assert!(!fired.get());
        // Once: waits until the timer is due, runs it, and reports the loop dead.
        let start = std::time::Instant::now();
        t.restart(&mut lp, Duration::from_millis(30)).unwrap();
        assert!(!lp.run(RunMode::Once).unwrap());
        assert!(fired.get());
        assert!(start.elapsed() >= Duration::from_millis(30));
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    secs = 10,
    /// `run(Once)` with a timer due: the poll does not wait, and the timer runs after it, as
    /// in libuv 1.45 and later. The timer used to run first, and the poll then waited for
    /// I/O that never came (a reading pipe keeps the loop alive): the watchdog ends it.
    fn issue_2_once_runs_a_due_timer_without_waiting() {
        let mut lp = test_loop();
        let (rx, tx) = evloop::Pipe::pair(&mut lp).unwrap();
        rx.read_start(&mut lp, |_, _, _| unreachable!("nothing is written to it")).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        // (Not `Timer::once`: its close after the callback would make the poll not wait.)
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::ZERO, Duration::ZERO, move |_, _| f.set(true)).unwrap();
        // Due for sure when Once begins: a timeout counts from the loop's time rounded up to
        // the next millisecond.
        let due = lp.now() + 2;
        while lp.now() < due {
            lp.update_time();
        }
        assert!(lp.run(RunMode::Once).unwrap(), "still alive: rx is reading");
        assert!(fired.get(), "the timer ran, and Once returned after it");
        t.close(&mut lp).unwrap();
        for p in [rx, tx] {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    secs = 10,
    /// `run(Once)` whose flush of interest changes ran a callback (the kernel refused a
    /// registration: the fd was closed behind the loop's back) returns after it, instead of
    /// waiting for the next timer, here far away.
    fn issue_2_once_returns_after_a_refused_registration_reported_an_error() {
        use std::os::fd::AsRawFd;
        let mut lp = test_loop();
        let (rx, tx) = evloop::Pipe::pair(&mut lp).unwrap();
        let far = Timer::new(&mut lp);
        far.start(&mut lp, Duration::from_secs(60), Duration::ZERO, |_, _| {}).unwrap();
        nix::unistd::close(rx.fd(&lp).unwrap().as_raw_fd()).unwrap();
        let got = Rc::new(Cell::new(false));
        let g = got.clone();
        rx.read_start(&mut lp, move |_, _, ev| g.set(matches!(ev, evloop::ReadEvent::Error(_)))).unwrap();
        while !got.get() {
            lp.run(RunMode::Once).unwrap();
        }
        for h in [far.id(), rx.id(), tx.id()] {
            lp.close(h).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// `run(Once)` with a stopped timer's entry already due (stopping leaves it queued) and
    /// a live timer later: it waits for the live one, which the stale entry must not hide.
    /// It used to return at once, having run nothing.
    fn issue_2_once_is_not_fooled_by_a_stopped_timer() {
        let mut lp = test_loop();
        let (rx, tx) = evloop::Pipe::pair(&mut lp).unwrap();
        rx.read_start(&mut lp, |_, _, _| unreachable!("nothing is written to it")).unwrap();
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        let live = Timer::new(&mut lp);
        live.start(&mut lp, Duration::from_millis(30), Duration::ZERO, move |_, _| f.set(true)).unwrap();
        let stopped = Timer::new(&mut lp);
        stopped.start(&mut lp, Duration::from_millis(1), Duration::ZERO, |_, _| unreachable!()).unwrap();
        // Past the stopped timer's deadline, before anything ran it.
        let due = lp.now() + 3;
        while lp.now() < due {
            lp.update_time();
        }
        stopped.stop(&mut lp).unwrap();
        assert!(lp.run(RunMode::Once).unwrap(), "still alive: rx is reading");
        assert!(fired.get(), "Once waited for the live timer and ran it");
        for h in [live.id(), stopped.id(), rx.id(), tx.id()] {
            lp.close(h).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// `run(Once)` just after an interest change (a stream started reading) still waits for
    /// the next timer and runs it. The unflushed change used to count as something to run,
    /// so Once returned at once, having done nothing.
    fn issue_2_once_after_an_interest_change_waits_for_the_timer() {
        let mut lp = test_loop();
        let (rx, tx) = evloop::Pipe::pair(&mut lp).unwrap();
        rx.read_start(&mut lp, |_, _, _| unreachable!("nothing is written to it")).unwrap();
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        Timer::once(&mut lp, Duration::from_millis(20), move |_| f.set(true)).unwrap();
        assert!(lp.run(RunMode::Once).unwrap(), "still alive: rx is reading");
        assert!(fired.get(), "Once waited for the timer and ran it");
        for p in [rx, tx] {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// `run(Once)` whose pending phase ran a callback (a write's completion, a child's stop
    /// report) returns without waiting for I/O, as libuv's `UV_RUN_ONCE` does: a program
    /// that runs Once until its callback ran must not hang when nothing else happens. A
    /// reading pipe with no writer keeps the loop alive meanwhile.
    fn issue_2_once_does_not_wait_after_a_pending_callback() {
        let mut lp = test_loop();
        let (rx, tx) = evloop::Pipe::pair(&mut lp).unwrap();
        rx.read_start(&mut lp, |_, _, _| unreachable!("nothing is written to it")).unwrap();
        let (other_rx, other_tx) = evloop::Pipe::pair(&mut lp).unwrap();
        // Interest changes reach the poller first, so that nothing else makes Once runnable.
        lp.run(RunMode::NoWait).unwrap();
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        other_tx.write(&mut lp, b"x", move |_, r| d.set(r.is_ok())).unwrap();
        // The write went out at once; its callback waits for the pending phase.
        assert!(lp.run(RunMode::Once).unwrap(), "still alive: rx is reading");
        assert!(done.get(), "the completion ran, and Once returned after it");
        for p in [rx, tx, other_rx, other_tx] {
            p.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn stop_inside_a_callback_ends_run_after_the_iteration() {
        let mut lp = test_loop();
        let idle = Idle::new(&mut lp);
        let n = Rc::new(Cell::new(0));
        let c = n.clone();
        idle.start(&mut lp, move |lp, _| {
            c.set(c.get() + 1);
            if c.get() == 3 {
                lp.stop();
            }
        })
        .unwrap();
        assert!(lp.run(RunMode::Default).unwrap(), "still alive: the idle handle is active");
        assert_eq!(n.get(), 3);
        // stop() before run(): one iteration, no waiting.
        lp.stop();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(n.get(), 3, "stop before run: due callbacks do not run (libuv semantics)");
        idle.close(&mut lp).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap());
    }
);

case!(
    fn unreferenced_handles_do_not_keep_the_loop_alive() {
        let mut lp = test_loop();
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::from_secs(3600), Duration::ZERO, |_, _| panic!("must not fire")).unwrap();
        assert!(lp.is_alive());
        t.set_ref(&mut lp, false).unwrap();
        assert!(!t.has_ref(&lp).unwrap());
        assert!(!lp.is_alive());
        assert!(!lp.run(RunMode::Default).unwrap(), "returns at once");
        assert!(t.is_active(&lp).unwrap(), "still armed");
        // ref is a flag, not a counter.
        t.set_ref(&mut lp, false).unwrap();
        t.set_ref(&mut lp, true).unwrap();
        assert!(lp.is_alive());
        t.stop(&mut lp).unwrap();
        assert!(!lp.is_alive());
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn close_is_deferred_to_the_close_phase_in_call_order() {
        let mut lp = test_loop();
        let order = Rc::new(RefCell::new(Vec::new()));
        let a = Timer::new(&mut lp);
        let b = Idle::new(&mut lp);
        let c = Check::new(&mut lp);
        for (name, id) in [("b", b.id()), ("a", a.id()), ("c", c.id())] {
            let o = order.clone();
            match lp.handle_kind(id).unwrap() {
                HandleKind::Timer => a.close_with(&mut lp, move |_| o.borrow_mut().push(name)).unwrap(),
                HandleKind::Idle => b.close_with(&mut lp, move |_| o.borrow_mut().push(name)).unwrap(),
                HandleKind::Check => c.close_with(&mut lp, move |_| o.borrow_mut().push(name)).unwrap(),
                k => unreachable!("{k:?}"),
            }
        }
        assert!(order.borrow().is_empty(), "close callbacks never run synchronously");
        assert!(a.is_closing(&lp).unwrap());
        assert!(lp.is_alive(), "closing handles keep the loop alive");
        assert_eq!(a.close(&mut lp).unwrap_err().kind(), io::ErrorKind::NotConnected, "double close");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*order.borrow(), ["b", "a", "c"]);
        // After the close callback, the ids are dead.
        let e = a.is_active(&lp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("stale timer id"), "{e}");
        assert!(lp.handles().is_empty());
    }
);

case!(
    fn a_handle_can_close_itself_from_its_own_callback() {
        let mut lp = test_loop();
        let t = Timer::new(&mut lp);
        let closed = Rc::new(Cell::new(false));
        let c = closed.clone();
        t.start(&mut lp, Duration::ZERO, Duration::from_millis(1), move |lp, t| {
            let c = c.clone();
            t.close_with(lp, move |_| c.set(true)).unwrap();
            // Operations on a closing handle fail cleanly.
            assert_eq!(t.again(lp).unwrap_err().kind(), io::ErrorKind::NotConnected);
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(closed.get());
    }
);

/// One iteration of `run(mode)` over a due timer, an idle, a prepare and a check handle
/// (which closes itself): the callbacks' order.
fn phase_order(mode: RunMode) -> Vec<&'static str> {
    let mut lp = test_loop();
    let log = Rc::new(RefCell::new(Vec::<&'static str>::new()));
    let t = Timer::new(&mut lp);
    let l = log.clone();
    t.start(&mut lp, Duration::ZERO, Duration::ZERO, move |_, _| l.borrow_mut().push("timer")).unwrap();
    // Due for sure when the run begins: a timeout counts from the loop's time rounded up to
    // the next millisecond.
    let due = lp.now() + 2;
    while lp.now() < due {
        lp.update_time();
    }
    // The idle handle keeps the poll phase from waiting; the check callback stops it.
    let idle = Idle::new(&mut lp);
    let l = log.clone();
    idle.start(&mut lp, move |_, _| l.borrow_mut().push("idle")).unwrap();
    let prep = Prepare::new(&mut lp);
    let l = log.clone();
    prep.start(&mut lp, move |lp, p| {
        l.borrow_mut().push("prepare");
        p.stop(lp).unwrap();
    })
    .unwrap();
    let check = Check::new(&mut lp);
    let l = log.clone();
    let l2 = log.clone();
    check
        .start(&mut lp, move |lp, c| {
            l.borrow_mut().push("check");
            idle.stop(lp).unwrap();
            let l2 = l2.clone();
            c.close_with(lp, move |_| l2.borrow_mut().push("close")).unwrap();
        })
        .unwrap();
    lp.run(mode).unwrap();
    for h in [t.id(), idle.id(), prep.id()] {
        lp.close(h).unwrap();
    }
    lp.run(RunMode::Default).unwrap();
    log.take()
}

case!(
    /// libuv's order; `Once` runs its timers last, as libuv's `UV_RUN_ONCE` does since 1.45.
    fn phases_run_in_libuv_order() {
        assert_eq!(phase_order(RunMode::Default), ["timer", "idle", "prepare", "check", "close"]);
        assert_eq!(phase_order(RunMode::NoWait), ["timer", "idle", "prepare", "check", "close"]);
        assert_eq!(phase_order(RunMode::Once), ["idle", "prepare", "check", "close", "timer"]);
    }
);

case!(
    fn stale_and_foreign_ids_give_errors_not_panics() {
        let mut lp = test_loop();
        let mut other = Loop::new().unwrap();
        let t = Timer::new(&mut lp);
        let foreign = Timer::new(&mut other);
        let e = foreign.start(&mut lp, Duration::ZERO, Duration::ZERO, |_, _| {}).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("another loop"), "{e}");
        assert!(lp.close(foreign.id()).is_err());
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        // The slot is reused by a new handle; the old id must not reach it.
        let idle = Idle::new(&mut lp);
        assert_eq!(idle.id().clone(), idle.id());
        assert!(t.start(&mut lp, Duration::ZERO, Duration::ZERO, |_, _| {}).is_err());
        assert!(t.stop(&mut lp).is_err());
        assert!(t.close(&mut lp).is_err());
        assert!(lp.close(t.id()).is_err());
        assert!(lp.handle_kind(t.id()).is_err());
        assert!(!idle.is_active(&lp).unwrap(), "the new occupant is untouched");
        idle.close(&mut lp).unwrap();
        foreign.close(&mut other).unwrap();
        lp.run(RunMode::Default).unwrap();
        other.run(RunMode::Default).unwrap();
    }
);

case!(
    fn handles_lists_live_and_closing_handles() {
        let mut lp = test_loop();
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::from_secs(60), Duration::ZERO, |_, _| {}).unwrap();
        t.set_ref(&mut lp, false).unwrap();
        let i = Idle::new(&mut lp);
        i.close(&mut lp).unwrap();
        let list = lp.handles();
        assert_eq!(list.len(), 2);
        let ti = list.iter().find(|h| h.id == t.id()).unwrap();
        assert!(ti.active && !ti.has_ref && !ti.closing && ti.kind == HandleKind::Timer);
        let ii = list.iter().find(|h| h.id == i.id()).unwrap();
        assert!(ii.closing && !ii.active);
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn run_inside_a_callback_is_an_error() {
        let mut lp = test_loop();
        let t = Timer::new(&mut lp);
        let seen = Rc::new(RefCell::new(None));
        let s = seen.clone();
        t.start(&mut lp, Duration::ZERO, Duration::ZERO, move |lp, _| {
            *s.borrow_mut() = Some(lp.run(RunMode::NoWait).map_err(|e| e.to_string()));
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        let got = seen.borrow_mut().take().unwrap();
        assert!(got.unwrap_err().contains("inside a callback"));
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// A panic in a callback propagates, poisons the loop (later runs are an error), and
    /// dropping the poisoned loop still releases every fd, thread and child.
    fn issue_7_a_panicking_callback_poisons_the_loop() {
        let mut lp = crate::util::builder().build().unwrap();
        let (rx, tx) = evloop::Pipe::pair(&mut lp).unwrap();
        rx.read_start(&mut lp, |_, _, _| {}).unwrap();
        tx.write(&mut lp, &[1; 200_000], |_, _| {}).unwrap();
        let child =
            evloop::Command::new("sleep").arg("100").kill_on_drop(true).spawn(&mut lp, |_, _, _| {}).unwrap();
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::ZERO, Duration::ZERO, |_, _| panic!("boom")).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run(RunMode::Default)));
        assert!(r.is_err(), "the panic propagates out of run");
        assert!(lp.is_poisoned());
        let e = lp.run(RunMode::NoWait).unwrap_err();
        assert!(e.to_string().contains("poisoned"), "{e}");
        // Nor does it start children whose exits no run would report (tokio-port trial: the
        // spawn succeeded), on any path.
        let e = evloop::Command::new("true").spawn(&mut lp, |_, _, _| {}).unwrap_err();
        assert!(e.to_string().contains("spawn `true`: a callback panicked"), "{e}");
        let e = evloop::Command::new("true").output(&mut lp, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("poisoned"), "{e}");
        let job = evloop::Pipeline::new([evloop::Command::new("true"), evloop::Command::new("cat")]);
        assert!(job.output(&mut lp, |_, _| {}).unwrap_err().to_string().contains("poisoned"));
        let _ = child;
        // Dropping releases everything: the harness checks that no fd and no child is left.
        drop(lp);
    }
);

case!(
    /// A `run` from a `Drop` while another panic unwinds (a host's guard that flushes its
    /// output on the way out) runs as any other and leaves the loop usable: the guard's second
    /// run was refused as poisoned, though no callback had panicked (runtime-host trial).
    fn issue_7_a_run_while_another_panic_unwinds_does_not_poison_the_loop() {
        struct FlushOnDrop(Option<evloop::Loop>, Rc<Cell<u32>>);
        impl Drop for FlushOnDrop {
            fn drop(&mut self) {
                let mut lp = self.0.take().unwrap();
                for _ in 0..2 {
                    let fired = self.1.clone();
                    Timer::once(&mut lp, Duration::ZERO, move |_| fired.set(fired.get() + 1)).unwrap();
                    assert!(!lp.run(RunMode::Default).unwrap(), "the timer ran, nothing is left");
                }
                assert!(!lp.is_poisoned());
            }
        }
        let fired = Rc::new(Cell::new(0));
        let guard = FlushOnDrop(Some(test_loop()), fired.clone());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("the host fails (on purpose)");
        }));
        assert!(r.is_err());
        assert_eq!(fired.get(), 2, "both runs ran their timer");

        // A callback that panics in such a run still poisons the loop (review).
        struct PanicOnDrop(Option<evloop::Loop>, Rc<Cell<bool>>);
        impl Drop for PanicOnDrop {
            fn drop(&mut self) {
                let mut lp = self.0.take().unwrap();
                Timer::once(&mut lp, Duration::ZERO, |_| panic!("a callback fails (on purpose)")).unwrap();
                let caught =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run(RunMode::Default)));
                assert!(caught.is_err());
                self.1.set(lp.is_poisoned());
            }
        }
        let poisoned = Rc::new(Cell::new(false));
        let guard = PanicOnDrop(Some(test_loop()), poisoned.clone());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("the host fails (on purpose)");
        }));
        assert!(r.is_err());
        assert!(poisoned.get(), "the callback's panic poisoned the loop");
    }
);

case!(
    fn dropping_a_loop_drops_every_callback_once_and_releases_its_fds() {
        struct Probe(Rc<Cell<u32>>);
        impl Drop for Probe {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        let drops = Rc::new(Cell::new(0));
        let fds_before = evloop_platform::fd::open_fds().unwrap();
        {
            let mut lp = test_loop();
            let t = Timer::new(&mut lp);
            let p = Probe(drops.clone());
            t.start(&mut lp, Duration::from_secs(60), Duration::ZERO, move |_, _| {
                let _ = &p;
            })
            .unwrap();
            let p = Probe(drops.clone());
            let (_a, _w) = evloop::Async::new(&mut lp, move |_, _| {
                let _ = &p;
            });
            let s = evloop::Signal::new(&mut lp);
            let p = Probe(drops.clone());
            s.start(&mut lp, evloop::signal::SIGUSR2, move |_, _, _| {
                let _ = &p;
            })
            .unwrap();
            let i = Idle::new(&mut lp);
            let p = Probe(drops.clone());
            i.close_with(&mut lp, move |_| {
                let _ = &p;
            })
            .unwrap();
            assert!(evloop_platform::fd::open_fds().unwrap().len() > fds_before.len());
        }
        assert_eq!(drops.get(), 4, "every callback dropped exactly once");
        assert_eq!(evloop_platform::fd::open_fds().unwrap(), fds_before);
        assert_eq!(
            evloop_platform::signal::disposition(evloop::signal::SIGUSR2).unwrap(),
            evloop_platform::signal::Disposition::Default
        );
    }
);

case!(
    /// `close` stops a handle at once, also when an earlier handle of the same phase closes
    /// it while the phase runs: its callback does not run after that.
    fn a_hook_closed_by_an_earlier_hook_of_its_phase_does_not_run() {
        let mut lp = test_loop();
        let ran_after_close = Rc::new(RefCell::new(Vec::new()));
        let (i1, i2) = (Idle::new(&mut lp), Idle::new(&mut lp));
        let (p1, p2) = (Prepare::new(&mut lp), Prepare::new(&mut lp));
        let (c1, c2) = (Check::new(&mut lp), Check::new(&mut lp));
        i1.start(&mut lp, move |lp, i1| {
            i2.close(lp).unwrap();
            i1.close(lp).unwrap();
        })
        .unwrap();
        p1.start(&mut lp, move |lp, p1| {
            p2.close(lp).unwrap();
            p1.close(lp).unwrap();
        })
        .unwrap();
        c1.start(&mut lp, move |lp, c1| {
            c2.close(lp).unwrap();
            c1.close(lp).unwrap();
        })
        .unwrap();
        let r = ran_after_close.clone();
        i2.start(&mut lp, move |_, _| r.borrow_mut().push("idle")).unwrap();
        let r = ran_after_close.clone();
        p2.start(&mut lp, move |_, _| r.borrow_mut().push("prepare")).unwrap();
        let r = ran_after_close.clone();
        c2.start(&mut lp, move |_, _| r.borrow_mut().push("check")).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap());
        assert!(ran_after_close.borrow().is_empty(), "ran after close: {:?}", ran_after_close.borrow());
    }
);

case!(
    /// A handle started during its own phase first runs in the next iteration: also one that
    /// an earlier handle of the phase stopped and started again.
    fn a_hook_restarted_by_an_earlier_hook_of_its_phase_waits_for_the_next_iteration() {
        let mut lp = test_loop();
        let (a, b) = (Idle::new(&mut lp), Idle::new(&mut lp));
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        a.start(&mut lp, move |lp, a| {
            b.stop(lp).unwrap();
            let l = l.clone();
            b.start(lp, move |lp, b| {
                l.borrow_mut().push(lp.iterations());
                b.close(lp).unwrap();
            })
            .unwrap();
            a.close(lp).unwrap();
        })
        .unwrap();
        b.start(&mut lp, |_, _| unreachable!("stopped before its turn")).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        let restarted_in = lp.iterations();
        assert!(log.borrow().is_empty(), "ran in the iteration that restarted it");
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*log.borrow(), [restarted_in + 1]);
    }
);

case!(
    /// `stop` outside `run` makes the next `run` return without an iteration, as libuv's.
    fn stop_before_run_makes_it_return_at_once() {
        let mut lp = test_loop();
        let t = Timer::new(&mut lp);
        let fired = Rc::new(Cell::new(false));
        let f = fired.clone();
        t.start(&mut lp, Duration::ZERO, Duration::ZERO, move |lp, t| {
            f.set(true);
            t.close(lp).unwrap();
        })
        .unwrap();
        let before = lp.iterations();
        lp.stop();
        assert!(lp.run(RunMode::Default).unwrap(), "the timer still keeps it alive");
        assert_eq!((lp.iterations(), fired.get()), (before, false));
        // The request was used up.
        assert!(!lp.run(RunMode::Default).unwrap());
        assert!(fired.get());
    }
);

case!(
    /// A callback that swaps its `&mut Loop` with another loop: the rest of the phase looks
    /// its ids up in the other loop's slots, and must find nothing there (their keys and
    /// generations match, the loop does not).
    fn a_loop_swapped_inside_a_callback_never_runs_the_other_loops_handles() {
        let other = Rc::new(RefCell::new(test_loop()));
        let foreign_runs = Rc::new(Cell::new(0));
        for _ in 0..2 {
            let b = &mut *other.borrow_mut();
            let f = foreign_runs.clone();
            Idle::new(b).start(b, move |_, _| f.set(f.get() + 1)).unwrap();
        }
        let mut lp = test_loop();
        let (a0, a1) = (Idle::new(&mut lp), Idle::new(&mut lp));
        let o = other.clone();
        a0.start(&mut lp, move |lp, _| {
            std::mem::swap(lp, &mut *o.borrow_mut());
            lp.stop();
        })
        .unwrap();
        a1.start(&mut lp, |_, _| {}).unwrap();
        let _ = lp.run(RunMode::NoWait);
        assert_eq!(foreign_runs.get(), 0, "the other loop's idle callbacks ran in this one's phase");
        // The first loop's callbacks hold the cell it now sits in: break the cycle.
        drop(other.replace(test_loop()));
    }
);

case!(
    /// The same from a read callback with more events in the batch: the batch ends (the
    /// events buffer is the other loop's now, and may be shorter), without a panic.
    fn a_loop_swapped_inside_a_read_callback_ends_the_event_batch() {
        use evloop::{Pipe, ReadEvent};
        let other = Rc::new(RefCell::new(test_loop()));
        let mut lp = test_loop();
        let reads = Rc::new(Cell::new(0));
        let mut writers = Vec::new();
        for _ in 0..4 {
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            tx.try_write(&mut lp, b"x").unwrap();
            writers.push(tx);
            let (o, r) = (other.clone(), reads.clone());
            rx.read_start(&mut lp, move |lp, _, ev| {
                assert!(matches!(ev, ReadEvent::Data(_)));
                r.set(r.get() + 1);
                std::mem::swap(lp, &mut *o.borrow_mut());
            })
            .unwrap();
        }
        // (Once: through the select helper, readiness comes from its thread.)
        while reads.get() == 0 {
            let _ = lp.run(RunMode::Once);
        }
        assert_eq!(reads.get(), 1, "the batch ended at the swap");
        // The first loop's callbacks hold the cell it now sits in: break the cycle.
        drop(other.replace(test_loop()));
        for tx in writers {
            let _ = tx.close(&mut lp);
        }
    }
);

case!(
    /// Stopping a closing handle succeeds and does nothing, for every kind: `read_stop`,
    /// `read_pause` and `FdWatch::stop` said `NotConnected` where the timers' and hooks'
    /// `stop` said nothing. And `run` re-entered from a callback is `ResourceBusy`, not
    /// `WouldBlock`, which retry loops take for "try again".
    fn issue_2_stopping_a_closing_handle_is_no_error_and_reentering_run_is_resource_busy() {
        use evloop::fd_watch::Interest;
        use evloop::{FdWatch, Pipe};
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        rx.read_start(&mut lp, |_, _, _| {}).unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        let watch = FdWatch::new(&mut lp, r.into()).unwrap();
        watch.start(&mut lp, Interest::READABLE, |_, _, _| {}).unwrap();
        let t = Timer::new(&mut lp);
        t.start(&mut lp, Duration::from_secs(60), Duration::ZERO, |_, _| {}).unwrap();
        for id in [rx.id(), tx.id(), watch.id(), t.id()] {
            lp.close(id).unwrap();
        }
        rx.read_stop(&mut lp).unwrap();
        rx.read_pause(&mut lp).unwrap();
        watch.stop(&mut lp).unwrap();
        t.stop(&mut lp).unwrap();
        rx.set_ref(&mut lp, false).unwrap();
        let child = evloop::Command::new("true").spawn(&mut lp, |_, _, _| {}).unwrap();
        child.process.close(&mut lp).unwrap();
        child.process.unwatch_stops(&mut lp).unwrap();
        let (_master, slave) = evloop::tty::openpty().unwrap();
        let tty = evloop::Tty::open(&mut lp, slave).unwrap();
        tty.on_resize(&mut lp, |_, _, _| {}).unwrap();
        tty.close(&mut lp).unwrap();
        tty.resize_stop(&mut lp).unwrap();
        // What uses a closing handle still says so.
        assert_eq!(rx.read_resume(&mut lp).unwrap_err().kind(), io::ErrorKind::NotConnected);
        assert_eq!(tx.write(&mut lp, b"x", |_, _| {}).unwrap_err().kind(), io::ErrorKind::NotConnected);

        let kind = Rc::new(Cell::new(None));
        let k = kind.clone();
        let idle = Idle::new(&mut lp);
        idle.start(&mut lp, move |lp, idle| {
            k.set(Some(lp.run(RunMode::NoWait).unwrap_err().kind()));
            idle.close(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(kind.get(), Some(io::ErrorKind::ResourceBusy));
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
    }
);

case!(
    /// Values stored in the loop, one per type: callbacks reach them through the loop they
    /// receive; storing again replaces (and returns) the old one; what is stored when the
    /// loop drops is dropped with it, after its handles.
    fn loop_data_is_one_value_per_type_and_drops_with_the_loop() {
        struct Counter(u32);
        struct Name(&'static str);
        let mut lp = test_loop();
        assert!(lp.data::<Counter>().is_none());
        assert!(lp.set_data(Counter(0)).is_none());
        assert!(lp.set_data(Name("a")).is_none());
        let idle = Idle::new(&mut lp);
        idle.start(&mut lp, |lp, idle| {
            let c = lp.data_mut::<Counter>().unwrap();
            c.0 += 1;
            if c.0 == 5 {
                idle.close(lp).unwrap();
            }
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(lp.data::<Counter>().unwrap().0, 5);
        assert_eq!(lp.set_data(Name("b")).unwrap().0, "a");
        assert_eq!(lp.data::<Name>().unwrap().0, "b");
        assert_eq!(lp.take_data::<Counter>().unwrap().0, 5);
        assert!(lp.data::<Counter>().is_none() && lp.take_data::<Counter>().is_none());
        assert_eq!(lp.data::<Name>().unwrap().0, "b", "the other type's value stays");

        // Dropped with the loop, after the handles (and their callbacks).
        struct Noted(&'static str, Rc<RefCell<Vec<&'static str>>>);
        impl Drop for Noted {
            fn drop(&mut self) {
                self.1.borrow_mut().push(self.0);
            }
        }
        let order = Rc::new(RefCell::new(Vec::new()));
        let kept = Rc::new(());
        lp.set_data((Noted("data", order.clone()), kept.clone()));
        let timer = Timer::new(&mut lp);
        let held = Noted("handle", order.clone());
        // (The whole value goes into the callback, not just a field.)
        timer
            .start(&mut lp, Duration::from_secs(60), Duration::ZERO, move |_, _| {
                let _whole = &held;
            })
            .unwrap();
        drop(lp);
        assert_eq!(*order.borrow(), ["handle", "data"]);
        assert_eq!(Rc::strong_count(&kept), 1);
    }
);

case!(
    /// `with_data` (worker-pool trial: state kept in the loop could not be used with the
    /// loop, and went into an `Rc<RefCell<_>>`): the value and the loop together; the value
    /// is out meanwhile, a value stored meanwhile replaces it, and nothing is called where
    /// none is stored.
    fn loop_with_data_lends_the_value_and_the_loop_together() {
        struct Jobs(Vec<Timer>);
        let mut lp = test_loop();
        assert_eq!(lp.with_data(|_, _: &mut Jobs| unreachable!("nothing stored")), None::<()>);
        lp.set_data(Jobs(Vec::new()));
        let started = lp.with_data(|lp, jobs: &mut Jobs| {
            assert!(lp.data::<Jobs>().is_none(), "out while lent");
            assert_eq!(lp.with_data(|_, _: &mut Jobs| ()), None, "not lent twice");
            for _ in 0..3 {
                let t = Timer::new(lp);
                t.start(lp, Duration::from_secs(60), Duration::ZERO, |_, _| {}).unwrap();
                jobs.0.push(t);
            }
            jobs.0.len()
        });
        assert_eq!(started, Some(3));
        assert_eq!(lp.data::<Jobs>().unwrap().0.len(), 3, "back in the loop");
        let idle = Idle::new(&mut lp);
        idle.start(&mut lp, |lp, idle| {
            lp.with_data(|lp, jobs: &mut Jobs| {
                for t in jobs.0.drain(..) {
                    t.close(lp).unwrap();
                }
            });
            idle.close(lp).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
        // No run inside: its callbacks would not find the value (review); a panic in `f`
        // drops the value, and leaves nothing lent.
        let refused = lp.with_data(|lp, _: &mut Jobs| lp.run(RunMode::NoWait).unwrap_err()).unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::ResourceBusy, "{refused}");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lp.with_data(|_, _: &mut Jobs| panic!("in with_data"));
        }));
        assert!(panicked.is_err());
        assert!(lp.data::<Jobs>().is_none(), "dropped with the panic");
        lp.run(RunMode::NoWait).unwrap();
        lp.set_data(Jobs(Vec::new()));
        // Stored again by `f`: the new value stays.
        lp.with_data(|lp, _: &mut Jobs| {
            let t = Timer::new(lp);
            assert!(lp.set_data(Jobs(vec![t])).is_none());
        });
        assert_eq!(lp.data::<Jobs>().unwrap().0.len(), 1);
    }
);

case!(
    /// `idle_time` counts the poll phase's waits and nothing else: not callbacks, however
    /// long they run, and not polls that cannot wait. Off, it is `None`.
    fn idle_time_counts_the_waits_and_not_the_work() {
        assert_eq!(test_loop().idle_time(), None);
        let mut lp = crate::util::builder().measure_idle_time(true).build().unwrap();
        assert_eq!(lp.idle_time(), Some(Duration::ZERO));
        // The work runs in a read callback, which the poll phase runs after its wait.
        let (r, w) = evloop::Pipe::pair(&mut lp).unwrap();
        // Not `Timer::once`, nor closed in its callback: a close would make the next poll,
        // the one that runs the read callback, not wait.
        let t = Timer::new(&mut lp);
        let spin = Duration::from_millis(30);
        r.read_start(&mut lp, move |lp, r, _| {
            t.close(lp).unwrap();
            crate::util::busy_for(spin);
            r.close(lp).unwrap();
            w.close(lp).unwrap();
        })
        .unwrap();
        let began = std::time::Instant::now();
        t.start(&mut lp, Duration::from_millis(100), Duration::ZERO, move |lp, _| {
            w.write(lp, b"x", |_, res| res.unwrap()).unwrap();
        })
        .unwrap();
        lp.run(RunMode::Default).unwrap();
        let elapsed = began.elapsed();
        let idle = lp.idle_time().unwrap();
        assert!(idle > Duration::ZERO, "the loop waited for the timer");
        assert!(idle <= elapsed - spin, "idle {idle:?} of {elapsed:?}, with {spin:?} of work");

        // Polls that cannot wait (an idle handle runs) add nothing.
        let idle_handle = Idle::new(&mut lp);
        let n = Rc::new(Cell::new(0));
        idle_handle
            .start(&mut lp, move |lp, h| {
                n.set(n.get() + 1);
                if n.get() == 100 {
                    h.close(lp).unwrap();
                }
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(lp.idle_time(), Some(idle), "no wait, no idle time");
    }
);

case!(
    /// `uv_walk` then `uv_close(h, cb)`: any handle closes by its untyped id with a close
    /// callback, which runs once, in the close phase; a stale id is an error and runs nothing.
    fn close_with_by_untyped_id_runs_each_callback_once() {
        let mut lp = test_loop();
        let t = Timer::new(&mut lp);
        let i = Idle::new(&mut lp);
        i.start(&mut lp, |_, _| {}).unwrap();
        let closed = Rc::new(RefCell::new(Vec::new()));
        for h in lp.handles() {
            let c = closed.clone();
            lp.close_with(h.id, move |lp| c.borrow_mut().push((h.kind, lp.handle_kind(h.id).is_err())))
                .unwrap();
        }
        assert!(closed.borrow().is_empty(), "not inside close_with");
        let c = closed.clone();
        let err = lp.close_with(t, move |_| c.borrow_mut().push((HandleKind::Timer, false))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
        lp.run(RunMode::Default).unwrap();
        let mut got = closed.borrow().clone();
        got.sort_by_key(|(k, _)| format!("{k:?}"));
        assert_eq!(got, [(HandleKind::Idle, true), (HandleKind::Timer, true)]);
        let err = lp.close_with(t, |_| panic!("a stale id's callback")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        lp.run(RunMode::Default).unwrap();
    }
);
