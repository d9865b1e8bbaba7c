use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use evloop::{Async, Channel, RunMode};

use crate::util::test_loop;

case!(
    fn wakes_from_many_threads_coalesce() {
        let mut lp = test_loop();
        let calls = Rc::new(Cell::new(0u32));
        let c = calls.clone();
        let (handle, waker) = Async::new(&mut lp, move |_, _| c.set(c.get() + 1));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = waker.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        w.wake().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every wake happened before this run: one callback covers them all.
        lp.run(RunMode::NoWait).unwrap();
        assert_eq!(calls.get(), 1, "4000 wakes before the loop ran coalesce into one callback");
        // A wake from another thread while the loop waits wakes it.
        let w = waker.clone();
        let t = std::thread::spawn(move || w.wake().unwrap());
        lp.run(RunMode::Once).unwrap();
        t.join().unwrap();
        assert_eq!(calls.get(), 2);
        handle.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(waker.wake().unwrap_err().kind(), io::ErrorKind::NotConnected);
    }
);

case!(
    fn async_keeps_the_loop_alive_until_closed_or_unreferenced() {
        let mut lp = test_loop();
        let (handle, waker) = Async::new(&mut lp, |lp, h| h.close(lp).unwrap());
        assert!(lp.is_alive());
        let t = std::thread::spawn(move || waker.wake().unwrap());
        // Runs until the callback closes the handle.
        assert!(!lp.run(RunMode::Default).unwrap());
        t.join().unwrap();
        let (h2, _w2) = Async::new(&mut lp, |_, _| {});
        h2.set_ref(&mut lp, false).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap());
        let _ = handle;
        h2.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn channel_delivers_each_senders_messages_in_order() {
        let mut lp = test_loop();
        let got = Rc::new(RefCell::new(vec![Vec::new(); 4]));
        let g = got.clone();
        let (_chan, tx) =
            Channel::new(&mut lp, move |_, _, (sender, seq): (usize, u32)| g.borrow_mut()[sender].push(seq));
        let threads: Vec<_> = (0..4)
            .map(|s| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        tx.send((s, i)).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        // Runs until every sender is gone and the queue is drained.
        lp.run(RunMode::Default).unwrap();
        for t in threads {
            t.join().unwrap();
        }
        for (s, v) in got.borrow().iter().enumerate() {
            assert_eq!(v.len(), 20_000, "sender {s}");
            assert!(v.windows(2).all(|w| w[0] < w[1]), "sender {s} out of order");
        }
        // The channel went inactive; closing it is still needed to free it.
        let list = lp.handles();
        assert_eq!(list.len(), 1);
        assert!(!list[0].active);
        lp.close(list[0].id).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn a_bounded_channel_holds_the_producer_back() {
        let mut lp = test_loop();
        let got = Rc::new(Cell::new(0u32));
        let g = got.clone();
        let (_chan, tx) = Channel::bounded(&mut lp, 4, move |_, _, n: u32| {
            assert_eq!(n, g.get());
            g.set(n + 1);
        });
        let t = std::thread::spawn(move || {
            for i in 0..10_000 {
                tx.send(i).unwrap();
            }
        });
        lp.run(RunMode::Default).unwrap();
        t.join().unwrap();
        assert_eq!(got.get(), 10_000);
        for h in lp.handles() {
            lp.close(h.id).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn on_disconnect_runs_once_after_the_last_message() {
        let mut lp = test_loop();
        let got = Rc::new(Cell::new(0u32));
        let ended_after = Rc::new(Cell::new(None));
        let g = got.clone();
        let (chan, tx) = Channel::new(&mut lp, move |_, _, n: u32| {
            assert_eq!(n, g.get(), "in order");
            g.set(n + 1);
        });
        // A handle that keeps the loop alive until the disconnect callback closes it.
        let (keeper, _keeper_waker) = Async::new(&mut lp, |_, _| {});
        let (g, e) = (got.clone(), ended_after.clone());
        chan.on_disconnect(&mut lp, move |lp, chan| {
            assert!(e.replace(Some(g.get())).is_none(), "runs once");
            keeper.close(lp).unwrap();
            chan.close(lp).unwrap();
        })
        .unwrap();
        let senders: Vec<_> = (0..3).map(|_| tx.clone()).collect();
        drop(tx);
        let t = std::thread::spawn(move || {
            // More than one wakeup's worth, from a sender that is dropped last.
            for i in 0..5_000 {
                senders[0].send(i).unwrap();
            }
        });
        lp.run(RunMode::Default).unwrap();
        t.join().unwrap();
        assert_eq!(ended_after.get(), Some(5_000), "after every message, and only then");
        assert!(lp.handles().is_empty());
    }
);

case!(
    fn on_disconnect_set_after_the_senders_left_still_runs_but_not_inside_the_call() {
        let mut lp = test_loop();
        let (chan, tx) = Channel::new(&mut lp, |_, _, _: u8| {});
        drop(tx);
        lp.run(RunMode::NoWait).unwrap();
        assert!(!chan.is_active(&lp).unwrap(), "inactive once the senders are gone");
        let ran = Rc::new(Cell::new(false));
        let r = ran.clone();
        chan.on_disconnect(&mut lp, move |lp, chan| {
            r.set(true);
            chan.close(lp).unwrap();
        })
        .unwrap();
        assert!(!ran.get(), "never inside on_disconnect");
        lp.run(RunMode::Default).unwrap();
        assert!(ran.get());
        assert!(lp.handles().is_empty());
        // A closed channel refuses a callback, and a closed-first one never runs it.
        assert!(chan.on_disconnect(&mut lp, |_, _| {}).is_err());
        let (chan, tx) = Channel::new(&mut lp, |_, _, _: u8| {});
        chan.on_disconnect(&mut lp, |_, _| panic!("the channel closed first")).unwrap();
        chan.close(&mut lp).unwrap();
        drop(tx);
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn sending_to_a_closed_channel_gives_the_message_back() {
        let mut lp = test_loop();
        let (chan, tx) = Channel::new(&mut lp, |_, _, _: String| panic!("closed before delivery"));
        chan.close(&mut lp).unwrap();
        let err = tx.send("hello".to_string()).unwrap_err();
        assert_eq!(err.0, "hello");
        lp.run(RunMode::Default).unwrap();
        assert!(tx.send("again".to_string()).is_err());
        assert!(matches!(tx.try_send("x".into()), Err(evloop::channel::TrySendError::Disconnected(_))));
    }
);

case!(
    /// A wake racing with the loop's reset of its wake object must not be lost. A thread and
    /// the loop ping-pong 20,000 times: each round needs exactly the previous wake delivered.
    fn issue_2_no_wakeup_is_lost() {
        let mut lp = test_loop();
        let (back_tx, back_rx) = std::sync::mpsc::channel::<()>();
        let rounds = Rc::new(Cell::new(0u32));
        let r = rounds.clone();
        let (handle, waker) = Async::new(&mut lp, move |lp, h| {
            r.set(r.get() + 1);
            back_tx.send(()).unwrap();
            if r.get() == 20_000 {
                h.close(lp).unwrap();
            }
        });
        // A second source of wakes on the same loop, so both race for the wake object.
        let (noise, noise_waker) = Async::new(&mut lp, |_, _| {});
        noise.set_ref(&mut lp, false).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let noisy = std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = noise_waker.wake();
            }
        });
        let pinger = std::thread::spawn(move || {
            for _ in 0..20_000 {
                waker.wake().unwrap();
                back_rx.recv().unwrap();
            }
        });
        lp.run(RunMode::Default).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        pinger.join().unwrap();
        noisy.join().unwrap();
        assert_eq!(rounds.get(), 20_000);
        let _ = handle;
        noise.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// `close` releases a sender blocked on a full bounded channel at once, even if the loop
    /// never runs again (a program that closes the channel, then joins the producer, would
    /// deadlock otherwise): its message is dropped with those queued, and its next send
    /// fails.
    #[cfg(target_os = "linux")]
    fn closing_a_bounded_channel_releases_a_blocked_sender() {
        let mut lp = test_loop();
        let (chan, tx) = Channel::bounded(&mut lp, 1, |_, _, _: u32| unreachable!("never delivered"));
        tx.send(1).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let producer = std::thread::spawn(move || {
            ready_tx.send(nix::unistd::gettid()).unwrap();
            // Blocks on the full channel.
            let blocked = tx.send(2).map_err(|e| e.into_inner());
            (blocked, tx.send(3).map_err(|e| e.into_inner()))
        });
        // Until the producer sleeps in that send (the test's watchdog bounds the spin).
        let tid = ready_rx.recv().unwrap();
        crate::util::wait_for_state(&format!("/proc/self/task/{tid}/stat"), 'S');
        chan.close(&mut lp).unwrap();
        assert_eq!(producer.join().unwrap(), (Ok(()), Err(3)), "released, then refused");
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// Closing a bounded channel drops the messages still queued at once, as closing an
    /// unbounded one does, while its senders live on (an embedding host's trial: a request
    /// that carries its reply channel kept the requester waiting until the last sender
    /// went, since crossbeam's bounded channel keeps its messages until then). Senders
    /// blocked on the full channel, and sends that race with the close, either fail with
    /// their message back or have it dropped with the rest: none is left queued.
    #[cfg(target_os = "linux")]
    fn issue_2_closing_a_bounded_channel_drops_what_it_holds() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        /// A message that counts its drops.
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, SeqCst);
            }
        }
        for bounded in [true, false] {
            let mut lp = test_loop();
            let dropped = Arc::new(AtomicUsize::new(0));
            let never = |_: &mut evloop::Loop, _, _: Counted| unreachable!("never delivered");
            let (chan, tx) =
                if bounded { Channel::bounded(&mut lp, 4, never) } else { Channel::new(&mut lp, never) };
            for _ in 0..4 {
                tx.send(Counted(dropped.clone())).unwrap();
            }
            // Blocked on the full channel (bounded), or racing with the close.
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let senders: Vec<_> = (0..3)
                .map(|_| {
                    let (tx, d, ready) = (tx.clone(), dropped.clone(), ready_tx.clone());
                    std::thread::spawn(move || {
                        ready.send(nix::unistd::gettid()).unwrap();
                        let mut failed = 0;
                        for _ in 0..1000 {
                            failed += usize::from(tx.send(Counted(d.clone())).is_err());
                        }
                        failed
                    })
                })
                .collect();
            for _ in 0..3 {
                let tid = ready_rx.recv().unwrap();
                if bounded {
                    crate::util::wait_for_state(&format!("/proc/self/task/{tid}/stat"), 'S');
                }
            }
            chan.close(&mut lp).unwrap();
            let failed: usize = senders.into_iter().map(|t| t.join().unwrap()).sum();
            // Every message is dropped, with `tx` still alive: the four queued first, those
            // the close dropped, and those whose send failed (dropped by their thread).
            assert_eq!(dropped.load(SeqCst), 4 + 3000, "bounded: {bounded}");
            if bounded {
                assert!(failed > 0, "a blocked sender got through a closed channel");
            }
            let back = tx.send(Counted(dropped.clone())).unwrap_err().into_inner();
            drop(back);
            lp.run(RunMode::Default).unwrap();
            drop(lp);
            assert_eq!(dropped.load(SeqCst), 4 + 3000 + 1, "bounded: {bounded}");
            drop(tx);
        }
    }
);

case!(
    /// A dropped loop closes its wake object (an eventfd, or on kqueue the kqueue itself),
    /// however long its wakers and senders live.
    fn a_dropped_loop_closes_its_wake_object_while_wakers_live() {
        let fds = || evloop_platform::fd::open_fds().unwrap();
        let before = fds();
        let mut lp = test_loop();
        let (_handle, waker) = Async::new(&mut lp, |_, _| {});
        let (_chan, tx) = Channel::new(&mut lp, |_, _, _: u8| {});
        drop(lp);
        assert_eq!(fds(), before, "the loop's fds are all closed");
        assert_eq!(waker.wake().unwrap_err().kind(), io::ErrorKind::NotConnected);
        assert!(tx.send(1).is_err());
    }
);

case!(
    /// A value a callback captured that panics as the dropped loop drops it cut the drop
    /// short: the wake object stayed open while a waker lived, and the select helper's
    /// thread, the children and the signal handlers were left as they were (runtime-host
    /// trial); a read callback's, dropped as its stream stops, or the exit callback's of a
    /// `kill_on_drop` child, left that child running (reviews). The drop runs to its end all
    /// the same now, the first panic going on after it.
    fn a_panic_as_the_dropped_loop_drops_a_callback_still_releases_the_rest() {
        struct PanicOnDrop;
        impl Drop for PanicOnDrop {
            fn drop(&mut self) {
                panic!("a capture panics as it drops");
            }
        }
        let fds = || evloop_platform::fd::open_fds().unwrap();
        let before = fds();
        let mut lp = crate::util::builder().build().unwrap();
        let (_handle, waker) = Async::new(&mut lp, |_, _| {});
        let capture = PanicOnDrop;
        evloop::Timer::once(&mut lp, std::time::Duration::from_secs(100), move |_| {
            let _ = &capture;
        })
        .unwrap();
        // Dropped as the stream stops, before the children are seen to.
        let (rx, _tx) = evloop::Pipe::pair(&mut lp).unwrap();
        let capture = PanicOnDrop;
        rx.read_start(&mut lp, move |_, _, _| {
            let _ = &capture;
        })
        .unwrap();
        // A child that exited: the drop reaps it.
        let child = evloop::Command::new("true").spawn(&mut lp, |_, _, _| {}).unwrap();
        let pid = child.process.pid(&lp).unwrap();
        // One to kill and wait for, whose exit callback's capture panics too.
        let capture = PanicOnDrop;
        let child =
            evloop::Command::new("sleep").arg("100").kill_on_drop(true).spawn(&mut lp, move |_, _, _| {
                let _ = &capture;
            });
        let killed = child.unwrap().process.pid(&lp).unwrap();
        let silent = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(lp)));
        std::panic::set_hook(silent);
        assert!(dropped.is_err(), "the panic goes on");
        assert_eq!(fds(), before, "the loop's fds are all closed");
        assert_eq!(waker.wake().unwrap_err().kind(), io::ErrorKind::NotConnected);
        // Reaped, by the drop or (had it not exited yet) later from the orphan list.
        while evloop::process::reap_orphans() > 0 {
            std::thread::yield_now();
        }
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "reaped");
        assert!(!std::path::Path::new(&format!("/proc/{killed}")).exists(), "killed and reaped");
    }
);

case!(
    /// An unreferenced channel's queued messages: a `run(Default)` with nothing else alive
    /// makes no pass and delivers none; each `run(NoWait)` makes one, a batch of
    /// `MESSAGES_PER_WAKE_MAX`. (The docs said "the next run delivers them".)
    fn an_unreferenced_channels_queue_goes_out_through_nowait_runs() {
        let mut lp = test_loop();
        let got = Rc::new(Cell::new(0usize));
        let g = got.clone();
        let (chan, tx) = Channel::new(&mut lp, move |_, _, _: u32| g.set(g.get() + 1));
        chan.set_ref(&mut lp, false).unwrap();
        let batch = evloop::limits::MESSAGES_PER_WAKE_MAX;
        let total = 2 * batch + 10;
        for i in 0..total {
            tx.send(i as u32).unwrap();
        }
        drop(tx);
        assert!(!lp.run(RunMode::Default).unwrap());
        assert!(!lp.run(RunMode::Once).unwrap());
        assert_eq!(got.get(), 0, "nothing alive: no pass");
        for expected in [batch, 2 * batch, total] {
            lp.run(RunMode::NoWait).unwrap();
            assert_eq!(got.get(), expected);
        }
        chan.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    /// `pause` and `resume` hold a channel's messages back for a consumer that cannot keep
    /// up (a log shipper whose write queue is past its high-water mark): a paused channel
    /// delivers nothing, even when messages sent meanwhile wake the loop, keeps no `run`
    /// going, and after the resume delivers what waited, in order; a pause inside the
    /// callback ends the batch there; `on_disconnect` comes after the last message, once
    /// resumed (log-shipper trial).
    fn issue_2_a_paused_channel_holds_its_messages_until_resumed() {
        const BATCH: u32 = 10;
        const ROUNDS: u32 = 50;
        let mut lp = test_loop();
        let got = Rc::new(RefCell::new(Vec::new()));
        let disconnected = Rc::new(Cell::new(false));
        let sink = got.clone();
        let (chan, tx) = Channel::new(&mut lp, move |lp, chan, n: u32| {
            sink.borrow_mut().push(n);
            if sink.borrow().len() % BATCH as usize == 0 {
                chan.pause(lp).unwrap();
                chan.pause(lp).unwrap(); // a second pause does nothing
            }
        });
        let d = disconnected.clone();
        chan.on_disconnect(&mut lp, move |lp, chan| {
            d.set(true);
            chan.close(lp).unwrap();
        })
        .unwrap();
        // The producer sends a batch each time it is told to, and says when it has.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
        let producer = std::thread::spawn(move || {
            let mut next = 0;
            while go_rx.recv().is_ok() {
                for _ in 0..BATCH {
                    tx.send(next).unwrap();
                    next += 1;
                }
                sent_tx.send(()).unwrap();
            }
        });
        let batch = || {
            go_tx.send(()).unwrap();
            sent_rx.recv().unwrap();
        };
        batch();
        for round in 1..=ROUNDS {
            lp.run(RunMode::Default).unwrap();
            let seen = got.borrow().len();
            assert_eq!(seen, (round * BATCH) as usize, "a batch ends at the pause");
            assert!(!chan.is_active(&lp).unwrap(), "a paused channel is not active");
            // The next batch wakes the loop while it is paused: nothing comes of it.
            batch();
            lp.run(RunMode::NoWait).unwrap();
            assert_eq!(got.borrow().len(), seen, "nothing delivered while paused");
            chan.resume(&mut lp).unwrap();
            chan.resume(&mut lp).unwrap(); // a second resume does nothing
            assert_eq!(got.borrow().len(), seen, "nothing delivered inside resume");
        }
        drop(go_tx);
        producer.join().unwrap();
        // The last batch, then (resumed once more) the senders' end.
        lp.run(RunMode::Default).unwrap();
        assert!(!disconnected.get(), "on_disconnect waits for the resume");
        chan.resume(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(disconnected.get());
        assert_eq!(*got.borrow(), (0..(ROUNDS + 1) * BATCH).collect::<Vec<_>>());
        // Closed by its on_disconnect, and released.
        assert_eq!(chan.pause(&mut lp).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert!(lp.handles().is_empty());
    }
);

case!(
    /// Review of `Channel::pause`: an `on_disconnect` set while paused made the channel
    /// active again, and with nothing to drain it (paused) `run(Default)` never returned.
    /// (An unreferenced timer stops the loop if something else keeps it going.)
    fn issue_2_on_disconnect_set_while_paused_keeps_the_channel_inactive() {
        let mut lp = test_loop();
        let (chan, tx) = Channel::new(&mut lp, move |_, _, _: u32| {});
        chan.pause(&mut lp).unwrap();
        let disconnected = Rc::new(Cell::new(false));
        let d = disconnected.clone();
        chan.on_disconnect(&mut lp, move |lp, chan| {
            d.set(true);
            chan.close(lp).unwrap();
        })
        .unwrap();
        assert!(!chan.is_active(&lp).unwrap());
        drop(tx);
        let kept = Rc::new(Cell::new(false));
        let k = kept.clone();
        let t = evloop::Timer::once(&mut lp, std::time::Duration::from_millis(300), move |lp| {
            k.set(true);
            lp.stop();
        })
        .unwrap();
        t.set_ref(&mut lp, false).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(!kept.get(), "a paused channel kept run(Default) going");
        assert!(!disconnected.get(), "on_disconnect waits for the resume");
        chan.resume(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(disconnected.get());
        t.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(lp.handles().is_empty());
    }
);

case!(
    /// Review of `Channel::pause`: a resume while the channel's wake was still queued queued
    /// a second one, and every iteration then delivered twice `MESSAGES_PER_WAKE_MAX` (more
    /// with each pause and resume) for as long as a backlog lasted. Each pass keeps to the
    /// bound, however the pauses and resumes fall.
    fn issue_2_a_resumed_channel_keeps_to_the_bound_per_wakeup() {
        const MAX: usize = evloop::limits::MESSAGES_PER_WAKE_MAX;
        let mut lp = test_loop();
        let got = Rc::new(Cell::new(0usize));
        let g = got.clone();
        let (chan, tx) = Channel::new(&mut lp, move |_, _, _: u32| g.set(g.get() + 1));
        let total = 5 * MAX as u32;
        // A send queues the channel's wake; pauses and resumes follow before the loop runs.
        tx.send(0).unwrap();
        for _ in 0..4 {
            chan.pause(&mut lp).unwrap();
            chan.resume(&mut lp).unwrap();
        }
        // Paused with nothing pending, then a backlog, then the resume.
        let sender = std::thread::spawn(move || {
            (1..total).for_each(|n| tx.send(n).unwrap());
        });
        sender.join().unwrap();
        let mut passes = Vec::new();
        while got.get() < total as usize {
            let before = got.get();
            lp.run(RunMode::NoWait).unwrap();
            passes.push(got.get() - before);
            if passes.len() == 2 {
                chan.pause(&mut lp).unwrap();
                chan.resume(&mut lp).unwrap();
            }
        }
        assert!(passes.iter().all(|&n| n <= MAX), "{passes:?}");
        assert_eq!(passes.iter().sum::<usize>(), total as usize);
        chan.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);
