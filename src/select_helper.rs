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
//! **Errors.** If select fails with `EBADF` (an fd closed behind the loop's back), the thread
//! finds the culprits, reports an error for each to its stream only, stops watching them and
//! goes on serving the others.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

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
    thread: Option<JoinHandle<()>>,
}

impl SelectHelper {
    fn start(loop_id: u32, wake: Arc<LoopWake>) -> io::Result<SelectHelper> {
        let (int_r, int_w) = fd::pipe()?;
        fd::set_nonblocking(int_r.as_fd(), true)?;
        fd::set_nonblocking(int_w.as_fd(), true)?;
        let shared = Arc::new(Shared { table: Mutex::new(Table::default()), left_select: Condvar::new() });
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        let (started_tx, started_rx) = crossbeam_channel::bounded(0);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("evloop-select".into()).spawn(move || {
            let _ = started_tx.send(());
            helper_main(thread_shared, int_r, ready_tx, ack_rx, wake)
        })?;
        // Once the thread runs, it exists under its name (for debuggers, tests, `top -H`).
        let _ = started_rx.recv();
        log::debug!("loop {loop_id}: select helper thread started");
        Ok(SelectHelper { shared, interrupt: int_w, ready_rx, ack_tx, thread: Some(thread) })
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

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.shared.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SelectHelper {
    fn drop(&mut self) {
        self.table().shutdown = true;
        self.interrupt();
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

fn helper_main(
    shared: Arc<Shared>,
    int_r: OwnedFd,
    ready_tx: Sender<Vec<Ready>>,
    ack_rx: Receiver<Vec<Ready>>,
    wake: Arc<LoopWake>,
) {
    let mut rset = FdSet::new();
    let mut wset = FdSet::new();
    let mut watched: Vec<(u64, RawFd, Interest)> = Vec::new();
    let mut batch: Vec<Ready> = Vec::new();
    loop {
        {
            let mut t = lock(&shared);
            if t.shutdown {
                return;
            }
            watched.clear();
            watched.extend(
                t.watches.iter().filter(|(_, w)| !w.interest.is_empty()).map(|(&k, w)| (k, w.fd, w.interest)),
            );
            // Counted under the same lock as the snapshot: a close that removed its fd before
            // this point will never be selected on; one that removed it after waits for this
            // select to end.
            t.selects_entered += 1;
        }
        rset.clear();
        wset.clear();
        rset.insert(int_r.as_raw_fd());
        for &(_, fd, interest) in &watched {
            if interest.contains(Interest::READABLE) {
                rset.insert(fd);
            }
            if interest.contains(Interest::WRITABLE) {
                wset.insert(fd);
            }
        }
        batch.clear();
        let res = select(&mut rset, &mut wset, None);
        let closers = {
            let mut t = lock(&shared);
            t.selects_left = t.selects_entered;
            t.waiting_closers
        };
        if closers > 0 {
            shared.left_select.notify_all();
        }
        match res {
            Ok(_) => {
                if rset.contains(int_r.as_raw_fd()) {
                    let mut buf = [0u8; 64];
                    while matches!(fd::read(int_r.as_fd(), &mut buf), Ok(n) if n > 0) {}
                }
                for &(token, fd, _) in &watched {
                    let mut r = Readiness::empty();
                    if rset.contains(fd) {
                        r |= Readiness::READABLE;
                    }
                    if wset.contains(fd) {
                        r |= Readiness::WRITABLE;
                    }
                    if !r.is_empty() {
                        batch.push(Ready { token, readiness: r, errno: 0 });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Find the fds select refuses; report each to its stream and drop it.
                let code = e.raw_os_error().unwrap_or(libc::EINVAL);
                let mut t = lock(&shared);
                for &(token, fd, _) in &watched {
                    if code != libc::EBADF || !fd_is_open(fd) {
                        t.watches.remove(&token);
                        batch.push(Ready { token, readiness: Readiness::ERROR, errno: code });
                    }
                }
                if batch.is_empty() {
                    log::warn!("select helper: select failed with no culprit found: {e}");
                    return;
                }
            }
        }
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
        if self.select_helper.is_none() {
            self.select_helper = Some(SelectHelper::start(self.id, Arc::clone(&self.wake))?);
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
        helper.interrupt();
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

    /// Runs the streams the helper reported ready, then lets it select again.
    pub(crate) fn select_helper_on_wake(&mut self) {
        let Some(helper) = self.select_helper.as_ref() else { return };
        let Ok(mut batch) = helper.ready_rx.try_recv() else { return };
        for &r in &batch {
            let id = HandleId { loop_id: self.id, key: r.token as u32, gen_: (r.token >> 32) as u32 };
            if r.errno != 0 {
                let e = crate::error::context(
                    io::Error::from_raw_os_error(r.errno),
                    "the select helper cannot watch this fd",
                );
                self.stream_io_error(id, e);
            } else {
                self.stream_event_for(id, r.readiness);
            }
        }
        batch.clear();
        if let Some(helper) = self.select_helper.as_ref() {
            helper.acknowledge(batch);
        }
    }
}
