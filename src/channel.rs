//! A typed channel from any thread to a callback on the loop thread, in order.
//!
//! Built on crossbeam-channel. Each send wakes the loop through the same coalescing path as a
//! [`Waker`](crate::Waker); the loop delivers at most
//! [`crate::limits::MESSAGES_PER_WAKE_MAX`] messages per wakeup, then
//! moves on and comes back next iteration.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

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

pub(crate) struct ChannelState {
    pub(crate) shared: Arc<AsyncShared>,
    drain: Option<DrainFn>,
}

typed_handle!(
    /// The loop side of a channel: its callback receives, on the loop thread and in order,
    /// every message sent through the matching [`Sender`].
    ///
    /// The channel is active while any `Sender` is alive or messages are queued, so a loop
    /// whose only handle is a channel runs until every sender is dropped and the queue is
    /// drained.
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
        Sender { tx: self.tx.clone(), shared: Arc::clone(&self.shared) }
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
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        if self.shared.closed.load(SeqCst) {
            return Err(SendError(msg));
        }
        self.tx().send(msg)?;
        let _ = self.shared.wake();
        Ok(())
    }

    /// Like [`send`](Self::send), but a full bounded channel gives
    /// [`TrySendError::Full`] instead of blocking.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        if self.shared.closed.load(SeqCst) {
            return Err(TrySendError::Disconnected(msg));
        }
        self.tx().try_send(msg)?;
        let _ = self.shared.wake();
        Ok(())
    }
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
        let drain: DrainFn = Box::new(move |lp, chan| {
            for _ in 0..MESSAGES_PER_WAKE_MAX {
                match rx.try_recv() {
                    Ok(msg) => cb(lp, chan, msg),
                    Err(crossbeam_channel::TryRecvError::Empty) => return Drained::Empty,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => return Drained::Disconnected,
                }
                // The callback closed the channel: stop delivering.
                if lp
                    .slot(chan.0, HandleKind::Channel)
                    .map_or(true, |s| s.flags.contains(crate::handle::Flags::CLOSING))
                {
                    return Drained::Empty;
                }
            }
            Drained::More
        });
        let shared = Arc::new(AsyncShared::new(lp.next_id(), Arc::clone(&lp.wake)));
        let id = lp.insert(Kind::Channel(ChannelState { shared: Arc::clone(&shared), drain: Some(drain) }));
        lp.set_active(id, true);
        (Channel(id), Sender { tx: Some(tx), shared })
    }
}

impl Loop {
    pub(crate) fn channel_drain(&mut self, id: HandleId) {
        let Some(Kind::Channel(c)) = self.live_slot_mut(id).map(|s| &mut s.kind) else { return };
        c.shared.clear_pending();
        let shared = Arc::clone(&c.shared);
        let Some(mut drain) = c.drain.take() else { return };
        let outcome = drain(self, Channel(id));
        if let Some(Kind::Channel(c)) = self.live_slot_mut(id).map(|s| &mut s.kind) {
            c.drain = Some(drain);
        }
        match outcome {
            Drained::More => {
                let _ = shared.wake();
            }
            Drained::Disconnected => self.set_active(id, false),
            Drained::Empty => {}
        }
    }
}
