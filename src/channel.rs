//! A typed channel from any thread to a callback on the loop thread, in order.
//!
//! Built on crossbeam-channel. Each send wakes the loop through the same coalescing path as a
//! [`Waker`](crate::Waker); the loop delivers at most
//! [`crate::limits::MESSAGES_PER_WAKE_MAX`] messages per wakeup, then
//! moves on and comes back next iteration. A [`Loop::stop`] from the callback takes effect
//! after that batch: to stop taking messages at once, [`pause`](Channel::pause) the channel
//! (they wait, for a [`resume`](Channel::resume)) or close it (which drops those still
//! queued).

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::fence;

pub use crossbeam_channel::{SendError, TrySendError};

use crate::async_handle::AsyncShared;
use crate::event_loop::Loop;
use crate::handle::{HandleId, HandleKind, Kind, typed_handle};
use crate::limits::MESSAGES_PER_WAKE_MAX;

#[derive(PartialEq, Eq)]
enum Drained {
    Empty,
    More,
    Disconnected,
}

type DrainFn = Box<dyn FnMut(&mut Loop, Channel) -> Drained>;
type DisconnectFn = Box<dyn FnOnce(&mut Loop, Channel)>;
/// Closes the channel for sends and drops what is queued: see `ChannelState::stop_for_close`.
type CloseFn = Box<dyn FnOnce()>;

pub(crate) struct ChannelState {
    pub(crate) shared: Arc<AsyncShared>,
    drain: Option<DrainFn>,
    close: Option<CloseFn>,
    on_disconnect: Option<DisconnectFn>,
    /// `pause`d: nothing is delivered until `resume`.
    paused: bool,
    /// While paused, `pending` is held set (sends wake nobody) with no wake of the channel's
    /// on its way: `resume` must clear it and wake.
    swallowed: bool,
}

impl ChannelState {
    /// `close`: sends fail from now on, and the messages still queued are dropped now, which
    /// also makes room for a sender blocked on a full bounded channel (its message is
    /// dropped after it, by the sender: see `Sender::after_push`). (Dropping the receiver is
    /// not enough: crossbeam's bounded channel keeps what it holds until the last sender
    /// goes too, and a message that carries a reply channel keeps its requester waiting.)
    pub(crate) fn stop_for_close(&mut self) {
        match self.close.take() {
            Some(close) => close(),
            None => self.shared.closed.store(true, SeqCst),
        }
        self.drain = None;
        self.on_disconnect = None;
    }
}

typed_handle!(
    /// The loop side of a channel: its callback receives, on the loop thread and in order,
    /// every message sent through the matching [`Sender`] while the channel is open. Closing
    /// it drops the messages still queued, and sends fail from then on.
    ///
    /// The channel is active while it is not [paused](Channel::pause) and any `Sender` is
    /// alive, messages are queued or an `on_disconnect` callback waits, so a loop whose only handle is a channel runs until
    /// every sender is dropped and the queue is drained. Unreferenced
    /// ([`set_ref(false)`](Channel::set_ref)), it keeps nothing going, queued messages
    /// included: `run(Default)` may return with some undelivered. A later run delivers them
    /// while something else keeps the loop alive, or a `run(NoWait)`, which makes one pass
    /// whatever is alive (up to `MESSAGES_PER_WAKE_MAX` of them a pass); a `run(Default)` or
    /// `run(Once)` with nothing alive returns at once. A pool of workers that keeps the loop
    /// alive only while jobs are out references the channel while any are, and unreferences
    /// it when the last result came.
    /// [`on_disconnect`](Channel::on_disconnect) says when that happened, for a loop that
    /// has other handles to close then.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Channel, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let got = Rc::new(RefCell::new(Vec::new()));
    /// let sink = got.clone();
    /// let (_chan, tx) = Channel::new(&mut lp, move |_lp, _chan, msg: u32| sink.borrow_mut().push(msg));
    /// std::thread::spawn(move || {
    ///     for i in 0..100 {
    ///         tx.send(i).unwrap();
    ///     }
    /// });
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(*got.borrow(), (0..100).collect::<Vec<_>>());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Channel,
    HandleKind::Channel
);

/// Sends messages to a [`Channel`]'s callback on the loop thread. Clone it for more threads.
pub struct Sender<T> {
    tx: Option<crossbeam_channel::Sender<T>>,
    /// For the sends that race with the close: they drop what it missed (see
    /// `after_push`). So the channel never disconnects from the senders' side: `closed`
    /// says that it is closed.
    rx: crossbeam_channel::Receiver<T>,
    shared: Arc<AsyncShared>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("closed", &self.shared.closed.load(SeqCst)).finish()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, SeqCst);
        Sender { tx: self.tx.clone(), rx: self.rx.clone(), shared: Arc::clone(&self.shared) }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Drop our end first, so the loop sees the disconnection when it wakes.
        drop(self.tx.take());
        if self.shared.senders.fetch_sub(1, SeqCst) == 1 {
            let _ = self.shared.wake();
        }
    }
}

impl<T> Sender<T> {
    fn tx(&self) -> &crossbeam_channel::Sender<T> {
        self.tx.as_ref().expect("present until drop")
    }

    /// Queues `msg` and wakes the loop. Blocks only for a bounded channel that is full. Fails,
    /// giving the message back, once the channel handle is closed.
    ///
    /// A send that was under way when the channel closed (one blocked on a full bounded
    /// channel, say) returns at once: `Ok`, its message dropped with those queued.
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        if self.shared.closed.load(SeqCst) {
            return Err(SendError(msg));
        }
        self.tx().send(msg)?;
        self.after_push();
        Ok(())
    }

    /// Like [`send`](Self::send), but a full bounded channel gives
    /// [`TrySendError::Full`] instead of blocking.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        if self.shared.closed.load(SeqCst) {
            return Err(TrySendError::Disconnected(msg));
        }
        self.tx().try_send(msg)?;
        self.after_push();
        Ok(())
    }

    /// After a message went in: wakes the loop, or, where the channel closed meanwhile,
    /// drops what the close may not have seen. The close sets `closed`, then (after a fence)
    /// empties the queue; a send pushes, then looks at `closed`. crossbeam's push is a
    /// sequentially consistent compare-exchange of the queue's tail (`start_send` in its
    /// `flavors/array.rs` and `flavors/list.rs`, 0.5), and its receive reads the tail after a
    /// sequentially consistent fence, so either the close sees the message, or the send sees `closed`:
    /// no message stays queued behind a close. (A fence here as well cost a bounded channel
    /// a quarter of its rate.)
    #[inline]
    fn after_push(&self) {
        if self.shared.closed.load(SeqCst) {
            drop_queued(&self.rx);
        } else {
            let _ = self.shared.wake();
        }
    }
}

/// Drops every message `rx` holds, outside any lock: one whose drop sends on the channel
/// finds it closed.
fn drop_queued<T>(rx: &crossbeam_channel::Receiver<T>) {
    while rx.try_recv().is_ok() {}
}

impl Channel {
    /// Creates an unbounded channel whose messages go to `cb`.
    pub fn new<T: Send + 'static>(
        lp: &mut Loop,
        cb: impl FnMut(&mut Loop, Channel, T) + 'static,
    ) -> (Channel, Sender<T>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        Channel::with(lp, tx, rx, cb)
    }

    /// Creates a channel that holds at most `capacity` messages: [`Sender::send`] blocks the
    /// sending thread while it is full, which is how a fast producer is held back.
    /// A capacity of 0 is taken as 1: the loop takes messages when it wakes, so it cannot
    /// meet a sender in a rendezvous.
    ///
    /// Only other threads may block this way: a `send` on the loop's own thread (from a
    /// callback, say) into a full channel waits for the loop, which cannot run, for good.
    /// There, use [`Sender::try_send`].
    pub fn bounded<T: Send + 'static>(
        lp: &mut Loop,
        capacity: usize,
        cb: impl FnMut(&mut Loop, Channel, T) + 'static,
    ) -> (Channel, Sender<T>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        Channel::with(lp, tx, rx, cb)
    }

    fn with<T: Send + 'static>(
        lp: &mut Loop,
        tx: crossbeam_channel::Sender<T>,
        rx: crossbeam_channel::Receiver<T>,
        mut cb: impl FnMut(&mut Loop, Channel, T) + 'static,
    ) -> (Channel, Sender<T>) {
        let (rx_for_close, senders_rx) = (rx.clone(), rx.clone());
        let drain: DrainFn = Box::new(move |lp, chan| {
            for _ in 0..MESSAGES_PER_WAKE_MAX {
                match rx.try_recv() {
                    Ok(msg) => cb(lp, chan, msg),
                    Err(crossbeam_channel::TryRecvError::Empty) => return Drained::Empty,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return Drained::Disconnected,
                }
                // The callback closed or paused the channel: stop delivering.
                if lp.slot(chan.0, HandleKind::Channel).map_or(true, |s| {
                    s.flags.contains(crate::handle::Flags::CLOSING)
                        || matches!(&s.kind, Kind::Channel(c) if c.paused)
                }) {
                    return Drained::Empty;
                }
            }
            Drained::More
        });
        let shared = Arc::new(AsyncShared::new(lp.next_id(), Arc::clone(&lp.wake)));
        let closing = Arc::clone(&shared);
        let close: CloseFn = Box::new(move || {
            closing.closed.store(true, SeqCst);
            // (See `Sender::after_push`.)
            fence(SeqCst);
            drop_queued(&rx_for_close);
        });
        let id = lp.insert(Kind::Channel(ChannelState {
            shared: Arc::clone(&shared),
            drain: Some(drain),
            close: Some(close),
            on_disconnect: None,
            paused: false,
            swallowed: false,
        }));
        lp.set_active(id, true);
        (Channel(id), Sender { tx: Some(tx), rx: senders_rx, shared })
    }
}

impl Channel {
    /// Runs `cb` once, on the loop thread, when every [`Sender`] is gone and every message
    /// has been delivered: the moment the channel stops keeping the loop alive. Use it to
    /// close what belongs with the producers (a progress timer, say). A second call replaces
    /// the callback; closing the channel first means it never runs. When the senders are
    /// already gone, `cb` runs in the next iteration, never inside this call (given the loop
    /// iterates: an unref'd channel alone does not keep `run` going). While the channel is
    /// paused, it waits for the [`resume`](Channel::resume).
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::Duration};
    /// use evloop::{Channel, Loop, RunMode, Timer};
    ///
    /// let mut lp = Loop::new()?;
    /// let got = Rc::new(Cell::new(0));
    /// let g = got.clone();
    /// let (chan, tx) = Channel::new(&mut lp, move |_lp, _chan, n: u32| g.set(g.get() + n));
    /// // A progress timer that would keep the loop alive forever on its own.
    /// let progress = Timer::new(&mut lp);
    /// progress.start(&mut lp, Duration::from_millis(5), Duration::from_millis(5), |_, _| {})?;
    /// chan.on_disconnect(&mut lp, move |lp, chan| {
    ///     progress.close(lp).unwrap();
    ///     chan.close(lp).unwrap();
    /// })?;
    /// std::thread::spawn(move || (1..=100).for_each(|n| tx.send(n).unwrap()));
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(got.get(), 5050);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn on_disconnect(
        self,
        lp: &mut Loop,
        cb: impl FnOnce(&mut Loop, Channel) + 'static,
    ) -> std::io::Result<()> {
        let Kind::Channel(c) = &mut lp.open_slot_mut(self.0, HandleKind::Channel)?.kind else {
            unreachable!("open_slot_mut checked the kind")
        };
        c.on_disconnect = Some(Box::new(cb));
        if c.paused {
            // `resume` makes the drain pass, and the channel active again.
            return Ok(());
        }
        // A drain pass finds out whether the senders are already gone; until it has run, the
        // callback is work to do, so the channel is active (it may have stopped being).
        let _ = c.shared.wake();
        lp.set_active(self.0, true);
        Ok(())
    }
}

impl Channel {
    /// Stops delivering messages until [`resume`](Channel::resume), for a consumer that
    /// cannot keep up (a write queue past its high-water mark, say): they wait in the
    /// channel, and a [`bounded`](Channel::bounded) one then pushes back on its senders. In a
    /// callback, the message it got is the last one delivered (unless the callback resumes
    /// too: the two cancel out, and the batch goes on). A paused channel is not active (as a
    /// paused stream is not): it keeps no `run` going, delivers nothing on any pass, and its
    /// [`on_disconnect`](Channel::on_disconnect) waits for the resume too. Pausing a paused
    /// or closing channel does nothing.
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use evloop::{Channel, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let got = Rc::new(RefCell::new(Vec::new()));
    /// let sink = got.clone();
    /// // One message at a time: each pauses the channel until the loop's owner says more.
    /// let (chan, tx) = Channel::new(&mut lp, move |lp, chan, msg: u32| {
    ///     sink.borrow_mut().push(msg);
    ///     chan.pause(lp).unwrap();
    /// });
    /// std::thread::spawn(move || (0..3).for_each(|n| tx.send(n).unwrap())).join().unwrap();
    /// lp.run(RunMode::Default)?; // returns once paused
    /// assert_eq!(*got.borrow(), [0]);
    /// chan.resume(&mut lp)?;
    /// lp.run(RunMode::Default)?;
    /// assert_eq!(*got.borrow(), [0, 1]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pause(self, lp: &mut Loop) -> std::io::Result<()> {
        let slot = lp.slot_mut(self.0, HandleKind::Channel)?;
        if slot.flags.contains(crate::handle::Flags::CLOSING) {
            return Ok(());
        }
        if let Kind::Channel(c) = &mut slot.kind {
            if !c.paused {
                c.paused = true;
                // Sends made meanwhile then wake nobody (a wake already on its way finds the
                // channel paused, and leaves this to `resume` too).
                if c.shared.hold() {
                    c.swallowed = true;
                }
            }
        }
        lp.set_active(self.0, false);
        Ok(())
    }

    /// Delivers messages again after [`pause`](Channel::pause), never inside this call: those
    /// that waited, in order, then the rest as they come, at most
    /// [`MESSAGES_PER_WAKE_MAX`] an iteration as always.
    /// Resuming a channel that is not paused does nothing (unlike a stream's `read_resume`:
    /// only this pair pauses a channel); a closing one is an error.
    pub fn resume(self, lp: &mut Loop) -> std::io::Result<()> {
        let Kind::Channel(c) = &mut lp.open_slot_mut(self.0, HandleKind::Channel)?.kind else {
            unreachable!("open_slot_mut checked the kind")
        };
        if !c.paused {
            return Ok(());
        }
        c.paused = false;
        // A drain pass: what came meanwhile, or the news that the senders are gone. A wake is
        // queued only where none is on its way (a paused drain used it up, or the pause held
        // the flag with none queued); one still queued drains as it is.
        if std::mem::take(&mut c.swallowed) {
            c.shared.clear_pending();
        }
        let _ = c.shared.wake();
        lp.set_active(self.0, true);
        Ok(())
    }
}

impl Loop {
    pub(crate) fn channel_drain(&mut self, id: HandleId) {
        let Some(Kind::Channel(c)) = self.live_slot_mut(id).map(|s| &mut s.kind) else { return };
        if c.paused {
            // Its wake stays pending, so sends made meanwhile wake nobody; `resume` drains.
            c.swallowed = true;
            return;
        }
        c.shared.clear_pending();
        let shared = Arc::clone(&c.shared);
        let Some(mut drain) = c.drain.take() else { return };
        let outcome = drain(self, Channel(id));
        match self.live_slot_mut(id) {
            // Closed by the callback: the receiver goes now (see `stop_for_close`).
            Some(s) if s.flags.contains(crate::handle::Flags::CLOSING) => drop(drain),
            Some(s) => {
                if let Kind::Channel(c) = &mut s.kind {
                    c.drain = Some(drain);
                }
            }
            None => {}
        }
        match outcome {
            Drained::More => {
                let _ = shared.wake();
            }
            Drained::Disconnected => {
                self.set_active(id, false);
                let cb = match self.live_slot_mut(id) {
                    Some(s) if !s.flags.contains(crate::handle::Flags::CLOSING) => match &mut s.kind {
                        Kind::Channel(c) => c.on_disconnect.take(),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(cb) = cb {
                    cb(self, Channel(id));
                }
            }
            Drained::Empty => {}
        }
    }
}
