//! The select helper: one thread per loop that watches, with `select(2)`, the fds the poller
//! rejects (macOS kqueue refuses `/dev/tty`, `/dev/null` and other character devices).
//!
//! The raw call and the unlimited fd sets are in `evloop_platform::select`; this is the
//! policy around them.
//!
//! **Lock-step hand-off.** The thread selects on every watched fd plus the read end of an
//! interrupt pipe. When fds are ready it sends their tokens to the loop over a channel, wakes
//! the loop, and then parks until the loop's acknowledgement before it selects again. The
//! loop does its bounded reads and writes for those fds, and acknowledges by sending the
//! batch's vector back and unparking the thread. Without that wait, level-triggered select
//! would report the same fds again and again while the loop has not read yet: the thread
//! would spin. It parks rather than spinning or yielding first (as a channel's blocking
//! receive does): on one CPU, each yield hands the CPU around without progress.
//!
//! **The loop selects in place of the thread while it runs.** Once the loop has served a
//! batch, it keeps the thread parked and, for as long as `run` goes on, waits with one
//! `select` over the watched fds plus the poller's own fd (which is readable when the
//! poller has events) instead of waiting on the poller. A ready fd is then served without
//! any thread hand-off. When `run` returns, the loop acknowledges and the thread takes over
//! again, so an embedder waiting on `backend_fd` between runs still hears of these fds.
//! This needs a poller fd that `select` can watch: an epoll fd always is, a kqueue fd is
//! checked once per process (`poller_is_selectable`).
//!
//! **Interest changes and shutdown** update a shared table under a mutex and write a byte to
//! the interrupt pipe, so a thread sitting in select comes back and rebuilds its sets.
//!
//! **Closing.** An fd must not be closed while the thread is inside `select` with it: select
//! would fail with `EBADF`, or watch whatever reused the number, and on Linux a sleeping
//! select also holds a reference to the file, so the peer would not see the close. So closing
//! is a short handshake: the loop removes the fd from the table, and if the thread is inside
//! select it interrupts it and waits (on a condition variable) until the thread has left.
//! Then the loop closes the fd itself, exactly once, and the close is visible at once. The
//! interrupt pipe's ends are each owned once (libuv leaks the real fd and closes its
//! socketpair twice, libuv#5207).
//!
//! **Errors.** If select fails with `EBADF` (an fd closed behind the loop's back before the
//! thread's next select call: one already waiting keeps the file and hears nothing until an
//! interest change wakes it, as epoll and kqueue hear nothing of it), the thread finds the
//! culprits, reports an error for each to its stream only, stops watching them and
//! goes on serving the others. If it finds no culprit (the number may have been reused in
//! the meantime), or select fails otherwise (`EINVAL`, `ENOMEM`, or the `EAGAIN` that macOS
//! documents as temporary), it tries once more, a millisecond later. A second unexplained
//! failure in a row reports the error to the fds that select refuses on their own, or, if
//! none does, to every watched stream, so that none waits in silence. The loop's own select
//! does the same over two iterations. If the thread's interrupt pipe is what fails (closed
//! behind the loop's back), the thread stops and wakes the loop, which starts a new one with
//! the watches.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use evloop_platform::fd;
use evloop_platform::libc;
use evloop_platform::poller::{Interest, Readiness};
use evloop_platform::select::{FdSet, select};

use crate::async_handle::LoopWake;
use crate::event_loop::Loop;
use crate::handle::HandleId;

/// One ready fd: its stream's token, what is ready, and an error number if select could not
/// watch it.
#[derive(Clone, Copy, Debug)]
struct Ready {
    token: u64,
    readiness: Readiness,
    errno: i32,
}

struct Watch {
    fd: RawFd,
    interest: Interest,
}

#[derive(Default)]
struct Table {
    watches: HashMap<u64, Watch>,
    /// Selects entered, counting the current one: each entry takes a snapshot of `watches`.
    selects_entered: u64,
    /// Selects left. The thread is inside select while this is behind `selects_entered`.
    selects_left: u64,
    /// Closes waiting on `left_select`: the thread signals only when someone waits, since a
    /// signal costs a syscall even with nobody to wake.
    waiting_closers: u32,
    shutdown: bool,
    /// The thread has stopped, or is about to, for good (see `helper_main`).
    stopped: bool,
}

struct Shared {
    table: Mutex<Table>,
    /// Signalled when the thread leaves select.
    left_select: Condvar,
}

/// The loop's handle on its helper thread.
pub(crate) struct SelectHelper {
    shared: Arc<Shared>,
    interrupt: OwnedFd,
    ready_rx: Receiver<Vec<Ready>>,
    /// Acknowledgements carry the batch's vector back, so the hand-off allocates nothing.
    ack_tx: Sender<Vec<Ready>>,
    /// The batch the loop served and has not acknowledged: while it is here, the thread is
    /// parked and the loop selects itself (see the module docs).
    held: Option<Vec<Ready>>,
    /// Whether the loop may select itself: its poller's fd works with `select`.
    may_hold: bool,
    /// The loop's own select: its sets and a batch, kept between polls.
    selector: Selector,
    inline_batch: Vec<Ready>,
    /// Whether the loop's own last select failed with no culprit found (see `helper_main`).
    unexplained: bool,
    thread: Option<JoinHandle<()>>,
}

impl SelectHelper {
    /// Starts the thread, watching `watches` from its first select.
    fn start(loop_id: u32, wake: Arc<LoopWake>, watches: HashMap<u64, Watch>) -> io::Result<SelectHelper> {
        let here = |e| crate::error::context(e, "starting the select helper thread");
        let (int_r, int_w) = fd::pipe().map_err(here)?;
        fd::set_fresh_pipe_nonblocking(int_r.as_fd()).map_err(here)?;
        fd::set_fresh_pipe_nonblocking(int_w.as_fd()).map_err(here)?;
        let table = Table { watches, ..Table::default() };
        let shared = Arc::new(Shared { table: Mutex::new(table), left_select: Condvar::new() });
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        let (started_tx, started_rx) = crossbeam_channel::bounded(0);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("evloop-select".into()).spawn(move || {
            let _ = started_tx.send(());
            helper_main(thread_shared, int_r, ready_tx, ack_rx, wake)
        });
        let thread = thread.map_err(here)?;
        // Once the thread runs, it exists under its name (for debuggers, tests, `top -H`).
        let _ = started_rx.recv();
        log::debug!("loop {loop_id}: select helper thread started");
        Ok(SelectHelper {
            shared,
            interrupt: int_w,
            ready_rx,
            ack_tx,
            held: None,
            may_hold: poller_is_selectable(),
            selector: Selector::new(),
            inline_batch: Vec::new(),
            unexplained: false,
            thread: Some(thread),
        })
    }

    fn interrupt(&self) {
        // A full pipe already holds an interrupt; nothing else can fail on our own pipe.
        let _ = fd::write(self.interrupt.as_fd(), &[1]);
    }

    /// Lets a thread that reported ready fds select again; `batch` goes back for reuse.
    fn acknowledge(&self, batch: Vec<Ready>) {
        let _ = self.ack_tx.try_send(batch);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Whether the thread stopped for good (or is stopping), and must be replaced.
    fn stopped(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished()) || self.table().stopped
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.shared.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SelectHelper {
    fn drop(&mut self) {
        self.table().shutdown = true;
        // (A thread that stopped has closed the pipe's read end: a write would raise
        // SIGPIPE, where an embedder restored its default.)
        if !self.stopped() {
            self.interrupt();
        }
        // Unblock a thread waiting for an acknowledgement.
        self.acknowledge(Vec::new());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::warn!("the select helper thread panicked");
            }
        }
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Table> {
    shared.table.lock().unwrap_or_else(|p| p.into_inner())
}

/// One `select` over the table's watches plus one more fd to read (the thread's interrupt
/// pipe, or the loop's poller): the sets and the snapshot, kept between rounds.
struct Selector {
    rset: FdSet,
    wset: FdSet,
    watched: Vec<(u64, RawFd, Interest)>,
}

impl Selector {
    fn new() -> Selector {
        Selector { rset: FdSet::new(), wset: FdSet::new(), watched: Vec::new() }
    }

    /// Takes the watches with interest (the caller holds the table's lock).
    fn snapshot(&mut self, t: &Table) {
        self.watched.clear();
        self.watched.extend(
            t.watches.iter().filter(|(_, w)| !w.interest.is_empty()).map(|(&k, w)| (k, w.fd, w.interest)),
        );
    }

    /// Selects on the snapshot plus `extra` (for reading), at most `timeout`.
    fn wait(&mut self, extra: RawFd, timeout: Option<Duration>) -> io::Result<usize> {
        self.rset.clear();
        self.wset.clear();
        self.rset.insert(extra);
        for &(_, fd, interest) in &self.watched {
            if interest.contains(Interest::READABLE) {
                self.rset.insert(fd);
            }
            if interest.contains(Interest::WRITABLE) {
                self.wset.insert(fd);
            }
        }
        select(&mut self.rset, &mut self.wset, timeout)
    }

    /// Turns the result of `wait` into `batch`: the ready fds, or, when select refused the
    /// sets with `EBADF`, the watched fds that are closed, with the error (they leave the
    /// table). Returns whether `extra` is readable; an error when select failed and no
    /// watched fd explains it.
    fn results(
        &self,
        res: io::Result<usize>,
        shared: &Shared,
        extra: RawFd,
        batch: &mut Vec<Ready>,
    ) -> io::Result<bool> {
        match res {
            Ok(_) => {
                for &(token, fd, _) in &self.watched {
                    let mut r = Readiness::empty();
                    if self.rset.contains(fd) {
                        r |= Readiness::READABLE;
                    }
                    if self.wset.contains(fd) {
                        r |= Readiness::WRITABLE;
                    }
                    if !r.is_empty() {
                        batch.push(Ready { token, readiness: r, errno: 0 });
                    }
                }
                Ok(self.rset.contains(extra))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            // EBADF: find the fds closed behind the loop's back; report each to its stream
            // and drop it. Other errors (EINVAL, ENOMEM, macOS's temporary EAGAIN) blame no
            // fd: the caller retries, and fails them all only if it happens again.
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
                let mut t = lock(shared);
                for &(token, fd, _) in &self.watched {
                    if !fd_is_open(fd) {
                        t.watches.remove(&token);
                        batch.push(Ready { token, readiness: Readiness::ERROR, errno: libc::EBADF });
                    }
                }
                if batch.is_empty() { Err(e) } else { Ok(false) }
            }
            Err(e) => Err(e),
        }
    }

    /// Select refused the sets and no watched fd explains it, again. Each watched fd is
    /// tried alone (without waiting): those select refuses alone leave the table with the
    /// error; if none does, every watched fd does, so that no stream waits in silence for
    /// events that will never come.
    fn fail_unexplained(&self, shared: &Shared, e: &io::Error, batch: &mut Vec<Ready>) {
        let code = e.raw_os_error().unwrap_or(libc::EINVAL);
        let fails_alone = |fd: RawFd, interest: Interest| {
            let (mut rset, mut wset) = (FdSet::new(), FdSet::new());
            if interest.contains(Interest::READABLE) {
                rset.insert(fd);
            }
            if interest.contains(Interest::WRITABLE) {
                wset.insert(fd);
            }
            select(&mut rset, &mut wset, Some(Duration::ZERO)).is_err()
        };
        let culprits: Vec<u64> =
            self.watched.iter().filter(|&&(_, fd, i)| fails_alone(fd, i)).map(|&(token, ..)| token).collect();
        let mut t = lock(shared);
        for &(token, ..) in &self.watched {
            if culprits.is_empty() || culprits.contains(&token) {
                t.watches.remove(&token);
                batch.push(Ready { token, readiness: Readiness::ERROR, errno: code });
            }
        }
    }
}

fn helper_main(
    shared: Arc<Shared>,
    int_r: OwnedFd,
    ready_tx: Sender<Vec<Ready>>,
    ack_rx: Receiver<Vec<Ready>>,
    wake: Arc<LoopWake>,
) {
    let mut sel = Selector::new();
    let mut batch: Vec<Ready> = Vec::new();
    // Whether the last select failed with no culprit found. Once may be a race (an fd closed
    // behind the loop's back, its number reused before the search), so the thread retries.
    let mut unexplained = false;
    loop {
        {
            let mut t = lock(&shared);
            if t.shutdown {
                return;
            }
            sel.snapshot(&t);
            // Counted under the same lock as the snapshot: a close that removed its fd before
            // this point will never be selected on; one that removed it after waits for this
            // select to end.
            t.selects_entered += 1;
        }
        let res = sel.wait(int_r.as_raw_fd(), None);
        let closers = {
            let mut t = lock(&shared);
            t.selects_left = t.selects_entered;
            t.waiting_closers
        };
        if closers > 0 {
            shared.left_select.notify_all();
        }
        batch.clear();
        match sel.results(res, &shared, int_r.as_raw_fd(), &mut batch) {
            Ok(true) => {
                let mut buf = [0u8; 64];
                while matches!(fd::read(int_r.as_fd(), &mut buf), Ok(n) if n > 0) {}
            }
            Ok(false) => {}
            // The interrupt pipe itself (closed behind the loop's back): the thread cannot be
            // told of changes any more. It stops and wakes the loop, which starts a new one
            // with the watches.
            Err(e) if !fd_is_open(int_r.as_raw_fd()) => {
                log::warn!("select helper: its interrupt pipe was closed ({e}); the thread stops");
                // Closed already: its number may be someone else's fd by now.
                std::mem::forget(int_r);
                lock(&shared).stopped = true;
                let _ = wake.wake_loop();
                return;
            }
            Err(e) if !unexplained => {
                // Perhaps a passing shortage (ENOMEM; macOS's EAGAIN): a moment, then again.
                log::debug!("select helper: select failed with no culprit found: {e}; retrying");
                unexplained = true;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            Err(e) => {
                sel.fail_unexplained(&shared, &e, &mut batch);
                if batch.is_empty() {
                    // Nothing watched, so the interrupt pipe is what select refuses.
                    log::warn!(
                        "select helper: select fails on the interrupt pipe alone ({e}); the thread stops"
                    );
                    // Closed before the loop hears of it: it may reuse the number at once.
                    drop(int_r);
                    lock(&shared).stopped = true;
                    let _ = wake.wake_loop();
                    return;
                }
                log::warn!(
                    "select helper: select failed twice with no culprit found ({e}); reported to the fds that fail alone, or else to every watched fd"
                );
            }
        }
        unexplained = false;
        if batch.is_empty() {
            continue;
        }
        if ready_tx.send(std::mem::take(&mut batch)).is_err() || wake.wake_loop().is_err() {
            return;
        }
        // Lock-step: wait until the loop has read or written. Parked, not spinning: a spin
        // or yield costs the loop its CPU when both share one, and the loop unparks us.
        batch = loop {
            match ack_rx.try_recv() {
                Ok(returned) => break returned,
                Err(TryRecvError::Empty) => std::thread::park(),
                Err(TryRecvError::Disconnected) => return,
            }
        };
    }
}

/// Whether `select` sees a poller's fd become readable when the poller has an event. Always
/// so for epoll; checked once for kqueue, whose fd supports select on macOS and FreeBSD, so
/// that a system where it does not falls back to the thread alone. The check covers a
/// readable fd and the cross-thread waker (`EVFILT_USER` on kqueue).
fn poller_is_selectable() -> bool {
    static SELECTABLE: OnceLock<bool> = OnceLock::new();
    if let Some(&ok) = SELECTABLE.get() {
        return ok;
    }
    fn sees(poller: &evloop_platform::poller::Poller) -> io::Result<bool> {
        let (mut rset, mut wset) = (FdSet::new(), FdSet::new());
        rset.insert(poller.as_fd().as_raw_fd());
        select(&mut rset, &mut wset, Some(Duration::ZERO))?;
        Ok(rset.contains(poller.as_fd().as_raw_fd()))
    }
    let probe = || -> io::Result<bool> {
        let mut poller = evloop_platform::poller::Poller::new()?;
        let mut events = evloop_platform::poller::Events::with_capacity(4);
        // The waker's event alone.
        let waker = evloop_platform::waker::Waker::new(&mut poller, 2)?;
        waker.wake()?;
        if !sees(&poller)? {
            return Ok(false);
        }
        poller.wait(&mut events, Some(Duration::ZERO))?;
        waker.reset();
        // A readable fd alone (kqueue applies the change in its next wait; the fd stays
        // ready, level-triggered, after that wait reports it).
        let (r, w) = fd::pipe()?;
        fd::write(w.as_fd(), b"x")?;
        poller.update(r.as_fd(), 1, Interest::empty(), Interest::READABLE)?;
        poller.wait(&mut events, Some(Duration::ZERO))?;
        if events.is_empty() {
            return Ok(false);
        }
        sees(&poller)
    };
    match probe() {
        Ok(ok) => {
            if !ok {
                log::debug!("select does not see the poller's fd: the select helper thread serves alone");
            }
            let _ = SELECTABLE.set(ok);
            ok
        }
        // Out of fds, say: no answer, so no fast path for this helper; the next one asks again.
        Err(e) => {
            log::debug!("cannot check whether select sees the poller's fd: {e}");
            false
        }
    }
}

fn fd_is_open(fd: RawFd) -> bool {
    evloop_platform::fd::is_open_raw(fd)
}

impl Loop {
    /// Starts the helper thread if it is not running: when the first fd moves to it.
    pub(crate) fn select_helper_start(&mut self) -> io::Result<()> {
        self.select_helper()?;
        Ok(())
    }

    fn select_helper(&mut self) -> io::Result<&SelectHelper> {
        let mut watches = HashMap::new();
        if self.select_helper.as_ref().is_some_and(SelectHelper::stopped) {
            // It stopped because select refused its interrupt pipe (see `helper_main`). Its
            // watches move to the new one: a stream may have changed its interest since the
            // thread last looked.
            log::warn!("loop {}: the select helper thread had stopped; starting a new one", self.id);
            if let Some(old) = self.select_helper.take() {
                watches = std::mem::take(&mut old.table().watches);
            }
        }
        if self.select_helper.is_none() {
            self.select_helper = Some(SelectHelper::start(self.id, Arc::clone(&self.wake), watches)?);
            self.poll_special = true;
        }
        Ok(self.select_helper.as_ref().expect("started above"))
    }

    /// Tells the helper what stream `id` (whose fd is `fd`) wants now.
    pub(crate) fn select_helper_update(
        &mut self,
        id: HandleId,
        fd: RawFd,
        interest: Interest,
    ) -> io::Result<()> {
        let helper = self.select_helper()?;
        let mut t = helper.table();
        let w = t.watches.entry(id.token()).or_insert(Watch { fd, interest: Interest::empty() });
        w.interest = interest;
        drop(t);
        // A parked thread rebuilds its sets when it resumes; only one in select needs waking.
        if helper.held.is_none() {
            helper.interrupt();
        }
        Ok(())
    }

    /// Stops watching stream `id`; once the thread is out of select, closes `fd` (if any).
    pub(crate) fn select_helper_release(&mut self, id: HandleId, fd: Option<OwnedFd>) {
        let Some(helper) = self.select_helper.as_ref() else { return };
        let mut t = helper.table();
        t.watches.remove(&id.token());
        // Wait for the select that may hold the fd, not for the thread to be idle: it may
        // well enter a new select (without this fd) before we get the lock back.
        let current = t.selects_entered;
        if t.selects_left < current {
            helper.interrupt();
            // Counted under the lock the thread reads it under, so its signal is not lost.
            t.waiting_closers += 1;
            while t.selects_left < current {
                t = helper.shared.left_select.wait(t).unwrap_or_else(|p| p.into_inner());
            }
            t.waiting_closers -= 1;
        }
        drop(t);
        drop(fd);
    }

    /// Runs the streams the helper reported ready. Then the loop holds the watches (the
    /// thread stays parked) if it can select itself, or lets the thread select again.
    pub(crate) fn select_helper_on_wake(&mut self) {
        let Some(helper) = self.select_helper.as_ref() else { return };
        let Ok(mut batch) = helper.ready_rx.try_recv() else {
            // A thread that stopped woke the loop to be replaced (see `helper_main`).
            if helper.stopped() {
                if let Err(e) = self.select_helper_start() {
                    log::warn!("loop {}: cannot restart the select helper: {e}", self.id);
                }
            }
            return;
        };
        self.select_helper_serve(&batch);
        batch.clear();
        if let Some(helper) = self.select_helper.as_mut() {
            if helper.may_hold && helper.held.is_none() {
                helper.held = Some(batch);
            } else {
                helper.acknowledge(batch);
            }
        }
    }

    fn select_helper_serve(&mut self, batch: &[Ready]) {
        // (A callback that swapped this loop for another ends the batch, as in
        // `dispatch_events`.)
        let me = self.id;
        for &r in batch {
            if self.id != me {
                return;
            }
            let id = HandleId { loop_id: self.id, key: r.token as u32, gen_: (r.token >> 32) as u32 };
            if r.errno != 0 {
                let e = crate::error::context(
                    io::Error::from_raw_os_error(r.errno),
                    "the select helper cannot watch this fd",
                );
                self.io_error(id, e);
            } else {
                self.io_event(id, r.readiness);
            }
        }
    }

    /// Whether the loop holds the helper's watches, and so waits with its own select.
    pub(crate) fn select_helper_holds(&self) -> bool {
        self.select_helper.as_ref().is_some_and(|h| h.held.is_some())
    }

    /// Gives the watches back to the thread, at the end of `run`: an embedder may wait on
    /// `backend_fd` before the next `run`, and only the thread can wake it for these fds.
    pub(crate) fn select_helper_hand_back(&mut self) {
        if let Some(helper) = self.select_helper.as_mut() {
            if let Some(batch) = helper.held.take() {
                helper.acknowledge(batch);
            }
        }
    }

    /// The poll phase while the loop holds the watches: one select over them plus the
    /// poller's fd, at most `timeout`; then the poller's events (without waiting) and the
    /// ready watched fds.
    pub(crate) fn select_helper_poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let mut timeout = timeout;
        // kqueue applies interest changes (and reports rejected ones) only in its next wait:
        // without one now, the select below would not see them and might wait forever.
        if self.poller.has_queued_changes() {
            self.poller.wait(&mut self.events, Some(Duration::ZERO))?;
            self.time_stale.set(true);
            if !self.events.is_empty() {
                self.dispatch_events();
                timeout = Some(Duration::ZERO);
            }
        }
        let measure = self.options.measure_idle_time;
        let Some(helper) = self.select_helper.as_mut() else { return Ok(()) };
        let mut sel = std::mem::replace(&mut helper.selector, Selector::new());
        let mut batch = std::mem::take(&mut helper.inline_batch);
        sel.snapshot(&helper.table());
        let poller_fd = self.poller.as_fd().as_raw_fd();
        // (For `Loop::idle_time`, as `Loop::poll_special` does.)
        let began = (measure && timeout != Some(Duration::ZERO)).then(std::time::Instant::now);
        let res = sel.wait(poller_fd, timeout);
        if let Some(t) = began {
            self.idle += t.elapsed();
        }
        self.time_stale.set(true);
        batch.clear();
        let shared = Arc::clone(&helper.shared);
        let polled = sel.results(res, &shared, poller_fd, &mut batch);
        let failed_before = std::mem::replace(&mut helper.unexplained, polled.is_err());
        let res = match polled {
            Ok(true) => {
                self.poller.wait(&mut self.events, Some(Duration::ZERO)).map(|()| self.dispatch_events())
            }
            Ok(false) => Ok(()),
            // As in the thread: once may be a race, and the next iteration retries.
            Err(_) if !failed_before => Ok(()),
            Err(e) => {
                sel.fail_unexplained(&shared, &e, &mut batch);
                if batch.is_empty() {
                    // Nothing watched: select refuses the poller's own fd.
                    Err(crate::error::context(e, "select over the poller's fd failed"))
                } else {
                    log::warn!(
                        "loop {}: select failed twice with no culprit found ({e}); reported to the fds that fail alone, or else to every watched fd",
                        self.id
                    );
                    if let Some(helper) = self.select_helper.as_mut() {
                        helper.unexplained = false;
                    }
                    Ok(())
                }
            }
        };
        if let Some(helper) = self.select_helper.as_mut() {
            helper.selector = sel;
        }
        if res.is_ok() {
            self.select_helper_serve(&batch);
        }
        batch.clear();
        if let Some(helper) = self.select_helper.as_mut() {
            helper.inline_batch = batch;
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Select failing with every watched fd open has no culprit: the first time the thread
    /// retries; the second, every watched fd leaves the table with the error.
    #[test]
    fn an_unexplained_select_failure_reaches_every_watched_stream() {
        let (r, w) = fd::pipe().unwrap();
        let shared = Shared { table: Mutex::new(Table::default()), left_select: Condvar::new() };
        {
            let mut t = lock(&shared);
            t.watches.insert(7, Watch { fd: r.as_raw_fd(), interest: Interest::READABLE });
            t.watches.insert(9, Watch { fd: w.as_raw_fd(), interest: Interest::WRITABLE });
            t.watches.insert(11, Watch { fd: w.as_raw_fd(), interest: Interest::empty() });
        }
        let mut sel = Selector::new();
        sel.snapshot(&lock(&shared));
        let mut batch = Vec::new();
        let ebadf = || Err(io::Error::from_raw_os_error(libc::EBADF));
        assert!(sel.results(ebadf(), &shared, r.as_raw_fd(), &mut batch).is_err());
        assert!(batch.is_empty());
        sel.fail_unexplained(&shared, &io::Error::from_raw_os_error(libc::EBADF), &mut batch);
        let mut tokens: Vec<u64> = batch.iter().map(|r| r.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [7, 9]);
        assert!(batch.iter().all(|r| r.errno == libc::EBADF && r.readiness == Readiness::ERROR));
        // The watch with no interest was not selected on, and stays.
        assert_eq!(lock(&shared).watches.keys().copied().collect::<Vec<_>>(), [11]);
    }

    /// Linux's epoll fd works with select, so the loop can hold the helper's watches.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_epoll_fd_is_selectable() {
        assert!(poller_is_selectable());
    }
}
