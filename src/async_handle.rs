//! Wakeups from other threads: the loop's wake object, [`Async`] handles and [`Waker`]s.
//!
//! The loop owns one OS wake object (an eventfd, or `EVFILT_USER`) and a queue of woken
//! handles. A [`Waker::wake`] marks its handle pending; only the first wake of a burst queues
//! the handle and, if the loop is not already being woken, triggers the OS object. So any
//! number of wakes between two iterations cost one callback, and the loop looks only at the
//! handles that were actually woken.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, RwLock};

use crossbeam_channel::{Receiver, Sender};
use evloop_platform::poller::Poller;

use crate::event_loop::Loop;
use crate::handle::{HandleId, HandleKind, Kind, typed_handle};

/// The loop's wake object and queue of woken handles, shared with every waker.
pub(crate) struct LoopWake {
    /// Taken out when the loop drops, so its fd closes then, however long wakers live.
    waker: RwLock<Option<evloop_platform::waker::Waker>>,
    /// Set while an OS wakeup is outstanding, so a burst triggers the OS object once.
    triggered: AtomicBool,
    tx: Sender<u64>,
    rx: Receiver<u64>,
}

impl LoopWake {
    pub(crate) fn new(poller: &mut Poller, token: u64) -> io::Result<LoopWake> {
        let waker = evloop_platform::waker::Waker::new(poller, token)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(LoopWake { waker: RwLock::new(Some(waker)), triggered: AtomicBool::new(false), tx, rx })
    }

    /// Wakes the loop without naming a handle (the select helper uses this).
    pub(crate) fn wake_loop(&self) -> io::Result<()> {
        if !self.triggered.swap(true, SeqCst) {
            // (A poisoned lock still holds a usable waker: nothing panics while holding it.)
            let waker = self.waker.read().unwrap_or_else(|p| p.into_inner());
            match &*waker {
                // A wake that failed (kevent's ENOMEM) must not keep later ones from trying.
                Some(w) => w.wake().inspect_err(|_| self.triggered.store(false, SeqCst))?,
                None => return Err(io::Error::new(io::ErrorKind::NotConnected, "the loop was dropped")),
            }
        }
        Ok(())
    }

    /// The loop is dropping: its wake object goes now (a wake in progress finishes first).
    pub(crate) fn close(&self) {
        self.waker.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn notify(&self, token: u64) -> io::Result<()> {
        // The receiver lives in this same struct, so the send cannot fail.
        let _ = self.tx.send(token);
        self.wake_loop()
    }
}

/// What a handle woken from another thread shares with its wakers or senders.
pub(crate) struct AsyncShared {
    pub(crate) closed: AtomicBool,
    pending: AtomicBool,
    token: u64,
    loop_wake: Arc<LoopWake>,
    /// Live `Sender`s of a channel (unused by async handles).
    pub(crate) senders: AtomicUsize,
}

impl AsyncShared {
    pub(crate) fn new(id: HandleId, loop_wake: Arc<LoopWake>) -> AsyncShared {
        AsyncShared {
            closed: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            token: id.token(),
            loop_wake,
            senders: AtomicUsize::new(1),
        }
    }

    pub(crate) fn wake(&self) -> io::Result<()> {
        if self.closed.load(SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the async handle this waker wakes was closed, or its loop dropped",
            ));
        }
        if !self.pending.swap(true, SeqCst) {
            // A wake that failed leaves the handle free to be woken again (its token may then
            // be queued twice: one callback more, which coalescing allows).
            self.loop_wake.notify(self.token).inspect_err(|_| self.pending.store(false, SeqCst))?;
        }
        Ok(())
    }

    /// Marks the handle pending without waking the loop, so that wakes from now on do not
    /// either; returns whether it was not pending (no wake of it is on its way).
    pub(crate) fn hold(&self) -> bool {
        !self.pending.swap(true, SeqCst)
    }

    /// Called by the loop before it runs the callback: wakes from now on queue a new round.
    pub(crate) fn clear_pending(&self) {
        self.pending.store(false, SeqCst);
    }
}

type AsyncCb = Box<dyn FnMut(&mut Loop, Async)>;

pub(crate) struct AsyncState {
    pub(crate) shared: Arc<AsyncShared>,
    cb: Option<AsyncCb>,
}

typed_handle!(
    /// The loop side of a cross-thread wakeup (libuv's `uv_async_t`): its callback runs on the
    /// loop thread after one or more [`Waker::wake`] calls.
    ///
    /// An async handle is active from creation, so it keeps [`RunMode::Default`](crate::RunMode)
    /// running until it is closed or unreferenced.
    ///
    /// ```
    /// use evloop::{Async, Loop, RunMode};
    ///
    /// let mut lp = Loop::new()?;
    /// let (handle, waker) = Async::new(&mut lp, |lp, handle| {
    ///     println!("woken");
    ///     handle.close(lp).unwrap();
    /// });
    /// std::thread::spawn(move || waker.wake().unwrap());
    /// lp.run(RunMode::Default)?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    Async,
    HandleKind::Async
);

/// Wakes an [`Async`] handle from any thread. Cheap to clone; wakes coalesce.
#[derive(Clone)]
pub struct Waker {
    shared: Arc<AsyncShared>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker").field("closed", &self.shared.closed.load(SeqCst)).finish()
    }
}

impl Waker {
    /// Makes the handle's callback run on the loop thread. Wakes that arrive before the
    /// callback runs are coalesced into one callback. Waking a closed handle (or one whose
    /// loop is gone) gives [`io::ErrorKind::NotConnected`]. A wake that races with the close
    /// (or with the loop's drop, which closes its handles one by one) may still return `Ok`:
    /// its callback then never runs.
    ///
    /// Unlike libuv's `uv_async_send`, this is not async-signal-safe: it takes a lock and
    /// may allocate (the queue of woken handles), so a signal handler must not call it. To
    /// hear a signal on the loop, watch it with a [`Signal`](crate::Signal) handle, which
    /// does the handler's part safely; from a handler of the program's own, set an atomic
    /// flag, or write a byte to a pipe whose other end a [`Pipe`](crate::Pipe) handle reads.
    pub fn wake(&self) -> io::Result<()> {
        self.shared.wake()
    }
}

impl Async {
    /// Creates an active async handle and the waker that wakes it.
    pub fn new(lp: &mut Loop, cb: impl FnMut(&mut Loop, Async) + 'static) -> (Async, Waker) {
        let shared = Arc::new(AsyncShared::new(lp.next_id(), Arc::clone(&lp.wake)));
        let id = lp.insert(Kind::Async(AsyncState { shared: Arc::clone(&shared), cb: Some(Box::new(cb)) }));
        lp.set_active(id, true);
        (Async(id), Waker { shared })
    }
}

impl Loop {
    /// The poller reported the wake object: run the callbacks of every woken handle.
    // Out of line: keeps the common iteration (nothing of this kind to do) small.
    #[inline(never)]
    pub(crate) fn on_wake(&mut self) {
        // Reset the OS object first (a no-op for today's backends, whose trigger is consumed
        // when reported), then the flag. For a backend that needs the reset, the other order
        // loses wakeups: a wake landing between the two would see the flag clear, trigger
        // the OS object, and have the trigger consumed by the reset, leaving the flag set
        // with nothing pending, so every later wake would skip the OS object. In this order
        // a wake between the two sees the flag still set and skips the trigger; its work is
        // already queued (tokens and helper batches are queued before the wake), and is
        // drained below. A wake after the flag is cleared triggers a new event.
        if let Some(w) = &*self.wake.waker.read().unwrap_or_else(|p| p.into_inner()) {
            w.reset();
        }
        self.wake.triggered.store(false, SeqCst);
        // Only the handles woken before now: a thread that keeps waking cannot pin us here.
        for _ in 0..self.wake.rx.len() {
            let Ok(token) = self.wake.rx.try_recv() else { break };
            let id = HandleId { loop_id: self.id, key: token as u32, gen_: (token >> 32) as u32 };
            let Some(slot) = self.live_slot_mut(id) else { continue };
            if slot.flags.contains(crate::handle::Flags::CLOSING) {
                continue;
            }
            match &mut slot.kind {
                Kind::Async(a) => {
                    a.shared.clear_pending();
                    let Some(mut cb) = a.cb.take() else { continue };
                    cb(self, Async(id));
                    if let Some(Kind::Async(a)) = self.live_slot_mut(id).map(|s| &mut s.kind) {
                        if a.cb.is_none() {
                            a.cb = Some(cb);
                        }
                    }
                }
                Kind::Channel(_) => self.channel_drain(id),
                _ => {}
            }
        }
        self.select_helper_on_wake();
    }
}
