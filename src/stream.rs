//! The machinery pipes and ttys share: bounded reads, the write queue, shutdown, close.
//!
//! **Reads.** While a stream is reading, each readiness event gets at most
//! [`READS_PER_EVENT_MAX`] reads of at most the stream's read cap each, into one buffer the
//! loop owns and reuses: callbacks see `&[u8]`, and reading allocates nothing in steady
//! state. A short read ends the round (the fd is most likely drained; level-triggered
//! readiness brings it back if not). End of file stops reading by itself. A hang-up is read
//! through, so data still buffered is delivered before end of file; on a terminal, `EIO`
//! after the other side closed is end of file too. Any other error is reported once and
//! stops reading.
//!
//! **Writes.** [`write`](crate::Pipe::write) tries at once when nothing is queued and queues
//! only what the kernel did not take. Queued data goes out with `writev` when the fd is
//! writable, in order. Completion callbacks run from the pending phase, never inside
//! `write`; those of a stream that closes (its finished writes, then the cancelled ones) run
//! from the close phase. A write error fails the write it hit and every write queued behind it (their bytes
//! could no longer arrive in order). A short borrowed write that has to wait is copied onto
//! the end of the stream's staging buffer, after the staged writes before it, so a run of
//! them goes out as one buffer; longer ones and owned or shared buffers queue as they are.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use evloop_platform::fd::{self, FileType};
use evloop_platform::libc;
use evloop_platform::poller::{Interest, Readiness};
use evloop_platform::termios;

use crate::error::{cancelled, clone_error, context, invalid};
use crate::event_loop::{Loop, Pending};
use crate::handle::{Flags, HandleId, HandleKind, Kind};
use crate::io::{Io, IoMode};
use crate::limits::{READ_CAP_BYTES_DEFAULT, READ_CAP_BYTES_MAX, READ_CAP_BYTES_MIN};
use crate::limits::{
    READS_PER_EVENT_MAX, WRITE_QUEUE_ENTRIES_KEPT_MAX, WRITES_PER_EVENT_MAX, WRITEV_BUFFERS_MAX,
};
use crate::limits::{
    STAGED_BYTES_KEPT_MAX, WRITE_STAGED_BYTES_MAX, WRITEV_BYTES_OFFERED_MAX, WRITEV_ENTRIES_WALKED_MAX,
};

/// What a read callback receives.
#[derive(Debug)]
pub enum ReadEvent<'a> {
    /// Bytes read: never empty, at most the stream's read cap. The slice borrows the loop's
    /// read buffer, so copy what you keep.
    Data(&'a [u8]),
    /// End of file. Reading has stopped. For a socket, the peer's `shutdown` of its write
    /// side and its close look the same here: writes tell the second (`EPIPE` on a UNIX
    /// socket; on TCP the first write after the close draws a reset, and a later one fails
    /// with `EPIPE` or `ECONNRESET`).
    Eof,
    /// A read failed. Reading has stopped; the error is reported once.
    Error(io::Error),
}

/// A read callback, boxed as the user gave it. One variant per stream handle type, so a
/// read calls the user's closure directly, with no adapter closure in between.
pub(crate) enum ReadCb {
    Pipe(TypedReadCb<crate::Pipe>),
    Tty(TypedReadCb<crate::Tty>),
}

pub(crate) type TypedReadCb<H> = Box<dyn FnMut(&mut Loop, H, ReadEvent<'_>)>;

impl ReadCb {
    #[inline]
    fn call(&mut self, lp: &mut Loop, id: HandleId, ev: ReadEvent<'_>) {
        match self {
            ReadCb::Pipe(cb) => cb(lp, crate::Pipe(id), ev),
            ReadCb::Tty(cb) => cb(lp, crate::Tty(id), ev),
        }
    }
}

pub(crate) type WriteCb = Box<dyn FnOnce(&mut Loop, io::Result<()>)>;

/// Finished writes of closing streams, by slot key: see `stream_take_completed`.
pub(crate) type Completed = crate::handle::KeyMap<Vec<(WriteCb, io::Result<()>)>>;

/// The data of a write: borrowed (copied only if queued) or owned (moved if queued), by the
/// writer alone or shared with others (one buffer fed to many children, say). A trait, not
/// an enum: each kind gets its own copy of `stream_write`, and the borrowed one, the most
/// common, carries nothing of the others.
pub(crate) trait WriteBuf {
    fn as_slice(&self) -> &[u8];
    /// The queue's entry for what is left after `written` bytes, and its offset. A short
    /// borrowed write goes onto the end of the stream's `staging` buffer.
    fn into_queued(self, written: usize, staging: &mut Staging) -> (Queued, usize);
}

impl WriteBuf for &[u8] {
    #[inline]
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn into_queued(self, written: usize, staging: &mut Staging) -> (Queued, usize) {
        let rest = &self[written..];
        if rest.len() <= WRITE_STAGED_BYTES_MAX {
            staging.push(rest);
            (Queued::Staged(rest.len()), 0)
        } else {
            (Queued::Owned(rest.to_vec()), 0)
        }
    }
}

impl WriteBuf for Vec<u8> {
    #[inline]
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn into_queued(self, written: usize, _: &mut Staging) -> (Queued, usize) {
        (Queued::Owned(self), written)
    }
}

impl WriteBuf for Box<dyn AsRef<[u8]>> {
    #[inline]
    fn as_slice(&self) -> &[u8] {
        (**self).as_ref()
    }
    fn into_queued(self, written: usize, _: &mut Staging) -> (Queued, usize) {
        (Queued::Shared(self), written)
    }
}

/// A queued write's data.
pub(crate) enum Queued {
    Owned(Vec<u8>),
    Shared(Box<dyn AsRef<[u8]>>),
    /// This many bytes in the stream's [`Staging`] buffer, right after those of the staged
    /// writes queued before it.
    Staged(usize),
}

impl Queued {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Queued::Owned(v) => v.len(),
            Queued::Shared(b) => (**b).as_ref().len(),
            Queued::Staged(n) => *n,
        }
    }
}

/// The copies of a stream's short queued writes, one after another in queue order: a
/// write's bytes leave from the front as they are written, and a new one goes on the end.
/// Its live bytes are those of the `Staged` entries in the queue, exactly. Its room stays
/// within a small multiple of them (see `trim`), and a few KiB once the queue is empty.
#[derive(Default)]
pub(crate) struct Staging {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    head: usize,
}

impl Staging {
    fn push(&mut self, data: &[u8]) {
        self.trim(data.len());
        self.buf.extend_from_slice(data);
    }

    /// Drops the written front once it is at least half the buffer (each live byte is moved
    /// at most once per doubling of what was written), and gives back the room a burst
    /// took once what is live, with `more` bytes about to go on, is a quarter of it: a
    /// queue that never drains would otherwise keep its peak for good. Called before each
    /// push and after each flush that leaves the queue non-empty (a stalled owned write
    /// behind a written burst, with no short write coming, keeps it from being pushed to).
    fn trim(&mut self, more: usize) {
        if self.head == 0 || self.head * 2 < self.buf.len() {
            return;
        }
        self.buf.drain(..self.head);
        self.head = 0;
        let wanted = self.buf.len() + more;
        if self.buf.capacity() > STAGED_BYTES_KEPT_MAX.max(4 * wanted) {
            self.buf.shrink_to(STAGED_BYTES_KEPT_MAX.max(2 * wanted));
        }
    }

    /// `n` staged bytes were written.
    #[inline]
    fn consume(&mut self, n: usize) {
        self.head += n;
        debug_assert!(self.head <= self.buf.len());
    }

    /// Nothing is staged any more (every staged write went out, failed or was cancelled):
    /// start over, giving back the room a burst took.
    fn reset(&mut self) {
        self.buf.clear();
        self.head = 0;
        if self.buf.capacity() > STAGED_BYTES_KEPT_MAX {
            self.buf.shrink_to(STAGED_BYTES_KEPT_MAX);
        }
    }
}

/// The buffers of one `writev`: on the stack while they are few, as they mostly are
/// (filling a list of `IOV_MAX` entries every time cost more than the write of one buffer).
struct IoList<'a> {
    short: [IoSlice<'a>; 8],
    long: Vec<IoSlice<'a>>,
    len: usize,
}

impl<'a> IoList<'a> {
    fn new() -> IoList<'a> {
        IoList { short: [IoSlice::new(&[]); 8], long: Vec::new(), len: 0 }
    }

    /// Adds a buffer; false (and nothing added) once the list holds `WRITEV_BUFFERS_MAX`.
    /// `more` is how many may follow, for the one allocation a long list makes.
    #[inline]
    fn push(&mut self, buf: &'a [u8], more: usize) -> bool {
        if self.len < self.short.len() {
            self.short[self.len] = IoSlice::new(buf);
        } else if self.len == WRITEV_BUFFERS_MAX {
            return false;
        } else {
            if self.long.is_empty() {
                self.long.reserve((self.len + 1 + more).min(WRITEV_BUFFERS_MAX));
                self.long.extend_from_slice(&self.short);
            }
            self.long.push(IoSlice::new(buf));
        }
        self.len += 1;
        true
    }

    fn as_slice(&self) -> &[IoSlice<'a>] {
        if self.len <= self.short.len() { &self.short[..self.len] } else { &self.long }
    }
}

struct WriteReq {
    data: Queued,
    /// Bytes of `data` already written.
    offset: usize,
    /// `None` for a [`send`](crate::Pipe::send), which nobody hears of once queued.
    cb: Option<WriteCb>,
}

enum Shutdown {
    None,
    Pending(WriteCb),
    Done,
}

/// The state of a pipe or tty handle.
pub(crate) struct Stream {
    pub(crate) io: Io,
    pub(crate) kind: HandleKind,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    reading: bool,
    /// Reading is paused with its callback kept, for `read_resume` (never with `reading`).
    paused: bool,
    read_cb: Option<ReadCb>,
    /// Bumped by every read_start and read_stop, and when reading ends: a callback taken out
    /// while it runs goes back only if none of these happened meanwhile. Pausing and resuming
    /// keep the callback, and the epoch.
    read_epoch: u32,
    read_cap: usize,
    queue: VecDeque<WriteReq>,
    /// The data of the queue's `Staged` writes.
    staging: Staging,
    queued_bytes: usize,
    /// The error that failed queued sends, which nobody has heard of yet: the next write,
    /// send or `try_write` fails with it.
    send_failed: Option<io::Error>,
    shutdown: Shutdown,
    /// We set `O_NONBLOCK` on a description we did not create: clear it again at close.
    pub(crate) restore_blocking: Option<fd::SharedNonblocking>,
    /// The caller's fd when `Pipe::open` reopened its pipe privately: kept open, untouched,
    /// until the release, so that its number is not reused meanwhile.
    pub(crate) original: Option<OwnedFd>,
    /// `EIO` means the other side of a terminal went away: end of file (unless the read came
    /// from the background: see `terminal_eio`).
    pub(crate) eio_is_eof: bool,
    /// A read's `EIO` said that the other side of the terminal went away: writes queued from
    /// then on fail (nothing takes them, and the select helper would never hear of it) while
    /// the fd still reports the hang-up, and until reading starts again.
    pub(crate) hung_up: bool,
    /// The fd stays blocking: a tty with no private description to make nonblocking. Each
    /// readiness event gets one read (a second could block), and writes loop until done.
    pub(crate) blocking: bool,
    /// A socket whose description stays blocking (it may be shared: a stdout under a
    /// service manager): read and written with `MSG_DONTWAIT` instead of `O_NONBLOCK`.
    pub(crate) dontwait: bool,
    /// The fd is on the caller's open file description, which others may share: not a
    /// private reopen, and not one the loop created.
    pub(crate) shared: bool,
    /// The terminal state of a tty handle; `None` for pipes.
    pub(crate) tty: Option<crate::tty::TtyState>,
}

/// The status flags of an fd handed to a handle's `open`. An fd that is not open is an
/// error, and is not closed: its number may belong to someone else by now.
pub(crate) fn open_fd_flags(fd: OwnedFd, what: &str) -> io::Result<(OwnedFd, fd::StatusFlags)> {
    match fd::status_flags(fd.as_fd()) {
        Ok(flags) if flags.path_only => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot open fd {} as a {what}: it was opened with O_PATH, so it can be neither read nor written",
                fd.as_raw_fd()
            ),
        )),
        Ok(flags) => Ok((fd, flags)),
        Err(e) => {
            let raw = fd.into_raw_fd();
            Err(context(e, format!("cannot open fd {raw} as a {what}: it is not open")))
        }
    }
}

impl Stream {
    /// Whether the stream's reads and writes need `O_NONBLOCK` on its description: not a
    /// blocking one (a terminal's writes), nor one read and written with `MSG_DONTWAIT`, nor
    /// an always-ready file.
    pub(crate) fn relies_on_nonblocking(&self) -> bool {
        !self.blocking && !self.dontwait && self.io.mode != crate::io::IoMode::AlwaysReady
    }

    /// Whether writes are queued.
    pub(crate) fn has_queued_writes(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether an event should read, and whether it should flush writes.
    #[inline]
    pub(crate) fn interest(&self) -> (bool, bool) {
        (self.reading, !self.queue.is_empty())
    }

    pub(crate) fn new(io: Io, kind: HandleKind, readable: bool, writable: bool) -> Stream {
        Stream {
            io,
            kind,
            readable,
            writable,
            reading: false,
            paused: false,
            read_cb: None,
            read_epoch: 0,
            read_cap: READ_CAP_BYTES_DEFAULT,
            queue: VecDeque::new(),
            staging: Staging::default(),
            queued_bytes: 0,
            send_failed: None,
            shutdown: Shutdown::None,
            restore_blocking: None,
            original: None,
            eio_is_eof: false,
            hung_up: false,
            blocking: false,
            dontwait: false,
            shared: false,
            tty: None,
        }
    }

    fn wanted(&self) -> Interest {
        let mut w = Interest::empty();
        if self.reading {
            w |= Interest::READABLE;
        }
        if !self.queue.is_empty() {
            w |= Interest::WRITABLE;
        }
        w
    }

    /// Empties the write queue (to fail or cancel what it held), and with it the staging
    /// buffer its short writes were in.
    fn take_queue(&mut self) -> VecDeque<WriteReq> {
        self.queued_bytes = 0;
        self.staging.reset();
        std::mem::take(&mut self.queue)
    }

    fn is_busy(&self) -> bool {
        self.reading || !self.queue.is_empty() || matches!(self.shutdown, Shutdown::Pending(_))
    }
}

/// A reading call on a handle whose fd is open for writing only, or on a pty capture's
/// input.
#[cold]
fn not_readable(s: &Stream, kind: HandleKind) -> io::Error {
    let why = if s.tty.as_ref().is_some_and(|t| t.capture_input) {
        "it is a pty capture's input: the capture reads the terminal's output"
    } else {
        "its fd is open for writing only"
    };
    io::Error::new(io::ErrorKind::InvalidInput, format!("the {} is not readable ({why})", kind.name()))
}

impl Loop {
    pub(crate) fn stream_insert(&mut self, stream: Stream) -> HandleId {
        self.insert(Kind::Stream(Box::new(stream)))
    }

    /// The stream state of an open (not closing) pipe or tty.
    #[inline]
    pub(crate) fn stream_mut(&mut self, id: HandleId, kind: HandleKind) -> io::Result<&mut Stream> {
        match &mut self.open_slot_mut(id, kind)?.kind {
            Kind::Stream(s) => Ok(s),
            _ => unreachable!("open_slot_mut checked the kind"),
        }
    }

    /// Like `stream_ref`, refusing a closing handle: its fd is already gone.
    pub(crate) fn open_stream_ref(&self, id: HandleId, kind: HandleKind) -> io::Result<&Stream> {
        if self.slot(id, kind)?.flags.contains(Flags::CLOSING) {
            return Err(crate::event_loop::closing_error(kind));
        }
        self.stream_ref(id, kind)
    }

    pub(crate) fn stream_ref(&self, id: HandleId, kind: HandleKind) -> io::Result<&Stream> {
        match &self.slot(id, kind)?.kind {
            Kind::Stream(s) => Ok(s),
            _ => unreachable!("slot checked the kind"),
        }
    }

    /// Reads what stream `id` holds now, while it is reading, up to its end of file: for a
    /// reader about to give up on it, so that what is already there is not lost with it. At
    /// most `READS_PER_EVENT_MAX` rounds of reads (a round ends at a short read, so a
    /// stream whose writer is gone takes two: the data, then the end of file).
    pub(crate) fn stream_read_now(&mut self, id: HandleId) {
        for _ in 0..READS_PER_EVENT_MAX {
            let Some(s) = self.live_stream(id).filter(|s| s.reading) else { return };
            let Ok(fd) = s.io.fd() else { return };
            if !fd::poll_readable(fd, Some(Duration::ZERO)).unwrap_or(false) {
                return;
            }
            self.stream_read(id);
        }
    }

    #[inline]
    fn live_stream(&mut self, id: HandleId) -> Option<&mut Stream> {
        match self.live_slot_mut(id) {
            Some(slot) if !slot.flags.contains(Flags::CLOSING) => match &mut slot.kind {
                Kind::Stream(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// Brings the stream's interest and active flag in line with its state.
    fn stream_sync(&mut self, id: HandleId) {
        let Some(s) = self.live_stream(id) else { return };
        let wanted = s.wanted();
        let mut flags = Flags::empty();
        if s.is_busy() {
            flags |= Flags::ACTIVE;
        }
        if !s.queue.is_empty() || matches!(s.shutdown, Shutdown::Pending(_)) {
            flags |= Flags::WRITING;
        }
        if s.io.want(wanted) {
            self.io_dirty.push(id);
        }
        // One lookup for both: the stream is busy while it writes.
        self.set_flags(id, Flags::ACTIVE | Flags::WRITING, flags);
    }

    // ----- reading ------------------------------------------------------------------------

    pub(crate) fn read_start(&mut self, id: HandleId, kind: HandleKind, cb: ReadCb) -> io::Result<()> {
        let s = self.stream_mut(id, kind)?;
        if !s.readable {
            return Err(not_readable(s, kind));
        }
        if s.reading {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the {} is already reading", kind.name()),
            ));
        }
        s.io.fd()?;
        s.reading = true;
        s.paused = false;
        s.hung_up = false;
        s.read_cb = Some(cb);
        s.read_epoch = s.read_epoch.wrapping_add(1);
        self.read_changed();
        self.stream_sync(id);
        Ok(())
    }

    pub(crate) fn read_stop(&mut self, id: HandleId, kind: HandleKind) -> io::Result<()> {
        // A closing stream is stopped already; stopping it again is no error (as for every
        // handle's `stop`).
        if self.handle_flags(id, kind)?.contains(Flags::CLOSING) {
            return Ok(());
        }
        let s = self.stream_mut(id, kind)?;
        s.reading = false;
        s.paused = false;
        s.read_cb = None;
        s.read_epoch = s.read_epoch.wrapping_add(1);
        self.read_changed();
        self.stream_sync(id);
        Ok(())
    }

    pub(crate) fn read_pause(&mut self, id: HandleId, kind: HandleKind) -> io::Result<()> {
        if self.handle_flags(id, kind)?.contains(Flags::CLOSING) {
            return Ok(());
        }
        let s = self.stream_mut(id, kind)?;
        if s.reading {
            s.reading = false;
            s.paused = true;
            self.read_changed();
            self.stream_sync(id);
        }
        Ok(())
    }

    /// Whether stream `id` is reading, and whether its reading is paused: both `false` for
    /// a closing handle.
    pub(crate) fn read_state(&self, id: HandleId, kind: HandleKind) -> io::Result<(bool, bool)> {
        if self.handle_flags(id, kind)?.contains(Flags::CLOSING) {
            return Ok((false, false));
        }
        let s = self.stream_ref(id, kind)?;
        Ok((s.reading, s.paused))
    }

    /// Whether stream `id` is open and its reading paused ([`read_pause`](Self::read_pause)).
    pub(crate) fn read_paused(&self, id: HandleId) -> bool {
        match self.slots.get(id.key as usize) {
            Some(s) if s.gen_ == id.gen_ && !s.flags.contains(Flags::CLOSING) => {
                matches!(&s.kind, Kind::Stream(st) if st.paused)
            }
            _ => false,
        }
    }

    pub(crate) fn read_resume(&mut self, id: HandleId, kind: HandleKind) -> io::Result<()> {
        let s = self.stream_mut(id, kind)?;
        if s.reading {
            return Ok(());
        }
        if !s.paused {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!(
                    "the {} has no paused reading to resume (never started, stopped with read_stop, or ended at end of file or an error)",
                    kind.name()
                ),
            ));
        }
        s.io.fd()?;
        s.reading = true;
        s.paused = false;
        self.read_changed();
        self.stream_sync(id);
        Ok(())
    }

    pub(crate) fn set_read_cap(&mut self, id: HandleId, kind: HandleKind, bytes: usize) -> io::Result<()> {
        // The id first: a stale one is `NotFound` whatever the cap.
        let s = self.stream_mut(id, kind)?;
        if !(READ_CAP_BYTES_MIN..=READ_CAP_BYTES_MAX).contains(&bytes) {
            return Err(invalid(format!(
                "read cap {bytes} is out of range ({READ_CAP_BYTES_MIN}..={READ_CAP_BYTES_MAX} bytes)"
            )));
        }
        if !s.readable {
            return Err(not_readable(s, kind));
        }
        s.read_cap = bytes;
        // A round of reads in progress ends, so that the next read already asks for the new cap.
        self.read_changed();
        Ok(())
    }

    pub(crate) fn read_cap(&self, id: HandleId, kind: HandleKind) -> io::Result<usize> {
        Ok(self.stream_ref(id, kind)?.read_cap)
    }

    /// Records that a stream started or stopped reading, changed its read cap, or began
    /// closing: a round of reads in progress then re-checks its stream in full.
    #[inline]
    fn read_changed(&mut self) {
        self.read_changes = self.read_changes.wrapping_add(1);
    }

    /// The stream a round of reads is serving, found again after a callback ran: still the
    /// same stream, not closing, still reading (or, without `need_reading`, paused) with the
    /// callback the round holds (none of which a callback can change without bumping
    /// `read_changes`).
    #[inline(always)]
    fn reading_stream(
        &mut self,
        id: HandleId,
        changes: u64,
        epoch: u32,
        need_reading: bool,
    ) -> Option<&mut Stream> {
        let same = |s: &&mut Stream| (s.reading || !need_reading) && s.read_epoch == epoch;
        if self.read_changes == changes {
            debug_assert!(self.live_stream(id).is_some_and(|s| same(&s)));
            // Unchanged since the round began: the slot still holds this stream (a slot is
            // freed only in the close phase, after close bumped the counter). Each loop
            // counts from its own id shifted up 32 bits, so a callback that swapped this loop
            // with another one (`mem::swap` on the `&mut Loop`) lands on the full check.
            return match self.slots.get_mut(id.key as usize).map(|slot| &mut slot.kind) {
                Some(Kind::Stream(s)) => Some(s),
                _ => None,
            };
        }
        if id.loop_id != self.id {
            return None;
        }
        self.live_stream(id).filter(same)
    }

    /// Delivers the last event of a read (end of file or an error): reading stops first, and
    /// the callback is dropped after it ran.
    fn deliver_read(&mut self, id: HandleId, ev: ReadEvent<'_>) {
        debug_assert!(!matches!(ev, ReadEvent::Data(_)));
        let Some(s) = self.live_stream(id) else { return };
        let Some(mut cb) = s.read_cb.take() else { return };
        s.reading = false;
        s.paused = false;
        s.read_epoch = s.read_epoch.wrapping_add(1);
        self.read_changed();
        cb.call(self, id, ev);
        self.stream_sync(id);
    }

    #[inline(never)]
    fn stream_read(&mut self, id: HandleId) {
        let mut buf = std::mem::take(&mut self.read_buf);
        let changes = self.read_changes;
        // The callback comes out once per event, not once per read.
        let Some(mut s) = self.live_stream(id) else {
            self.read_buf = buf;
            return;
        };
        let Some(mut cb) = s.read_cb.take() else {
            self.read_buf = buf;
            return;
        };
        // What the round checks after a callback, copied: the stream is looked up again
        // then. (Its flags are read where they are used, from the stream in hand.)
        let (epoch, cap) = (s.read_epoch, s.read_cap);
        // A blocking fd reads once per readiness event, and only while it is still readable
        // (another handle on its description may have drained it since the event), so a read
        // never blocks.
        let reads_max = if s.blocking { 1 } else { READS_PER_EVENT_MAX };
        if buf.len() < cap {
            buf = vec![0; cap].into_boxed_slice();
        }
        let capped = &mut buf[..cap];
        let mut last = None;
        let mut reads = 0;
        loop {
            let res = match s.io.fd() {
                Ok(fd) => read_some(fd, s.dontwait, s.blocking, capped),
                Err(e) => Err(e),
            };
            reads += 1;
            match res {
                Ok(Some(0)) => last = Some(ReadEvent::Eof),
                Ok(Some(n)) => {
                    cb.call(self, id, ReadEvent::Data(&capped[..n]));
                    // A full read may have left more behind, if the stream is still reading
                    // with this callback and this cap (the callback may have stopped,
                    // restarted or closed it, or changed the cap: then the round ends, and
                    // level-triggered readiness brings the stream back).
                    if n == cap && reads < reads_max {
                        if let Some(next) = self.reading_stream(id, changes, epoch, true) {
                            if next.read_cap == cap {
                                s = next;
                                continue;
                            }
                        }
                    }
                }
                Ok(None) => {}
                // The other side of the terminal is gone, and everything it wrote has been
                // read (Linux returns EIO only once the buffer is empty); or a read from the
                // background.
                Err(e) if s.eio_is_eof && e.raw_os_error() == Some(libc::EIO) => {
                    last = Some(terminal_eio(s, e))
                }
                Err(e) => last = Some(ReadEvent::Error(e)),
            }
            break;
        }
        match last {
            // End of file or an error.
            Some(ev) => self.stream_read_ended(id, cb, ev),
            // The callback goes back to a stream still reading with it, or paused with it.
            None => {
                if let Some(s) = self.reading_stream(id, changes, epoch, false) {
                    if s.read_cb.is_none() {
                        s.read_cb = Some(cb);
                    }
                }
            }
        }
        self.read_buf = buf;
    }

    /// A read round ended with end of file or an error: reading stops first, the queued
    /// writes of a terminal that hung up fail, and the callback gets its last call and is
    /// dropped after it. (Out of line: the common round, which ends with `EAGAIN`, stays
    /// small.)
    #[cold]
    #[inline(never)]
    fn stream_read_ended(&mut self, id: HandleId, mut cb: ReadCb, ev: ReadEvent<'_>) {
        let mut hung_up = false;
        if let Some(s) = self.live_stream(id) {
            s.reading = false;
            s.paused = false;
            s.read_epoch = s.read_epoch.wrapping_add(1);
            hung_up = s.hung_up;
        }
        self.read_changed();
        // Nothing will take what is queued either (the select helper, which hears of the
        // hangup only as readability, learns it here). The writes fail before the callback
        // hears of the end, so that a close there does not turn their `EIO` into "cancelled".
        if hung_up {
            self.stream_hung_up(id);
        }
        cb.call(self, id, ev);
        self.stream_sync(id);
    }

    // ----- writing ------------------------------------------------------------------------

    #[inline]
    fn complete_write(&mut self, id: HandleId, cb: WriteCb, result: io::Result<()>) {
        self.pending.push_back(Pending::Write(id.key, cb, result));
    }

    /// A queued write or send finished: a write's callback waits for the pending phase.
    #[inline]
    fn complete_queued(&mut self, id: HandleId, cb: Option<WriteCb>, result: io::Result<()>) {
        if let Some(cb) = cb {
            self.complete_write(id, cb, result);
        }
    }

    /// The close phase's first part: the finished writes (and shutdowns) of the streams
    /// closing in this batch, whose callbacks still wait for the pending phase, leave the
    /// queue in one pass, by stream and in write order (a scan per stream made closing many
    /// streams at once quadratic). Every slot flagged `CLOSING` is in the batch: a handle
    /// closed by a close callback has its flag set only after this. A stream's entries all
    /// leave the queue here at the latest, so while one waits, its key names that stream.
    pub(crate) fn stream_take_completed(&mut self) -> Option<Completed> {
        let slots = &self.slots;
        let closing = |key: u32| slots.get(key as usize).is_some_and(|s| s.flags.contains(Flags::CLOSING));
        if !self.pending.iter().any(|p| matches!(p, Pending::Write(k, ..) if closing(*k))) {
            return None;
        }
        let mut taken = Completed::default();
        let mut kept = VecDeque::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            match p {
                Pending::Write(k, cb, result) if closing(k) => taken.entry(k).or_default().push((cb, result)),
                p => kept.push_back(p),
            }
        }
        self.pending = kept;
        Some(taken)
    }

    /// Runs the callbacks of stream `key`'s finished writes, taken out by
    /// [`stream_take_completed`](Self::stream_take_completed), in order: before the cancelled
    /// ones and the close callback.
    pub(crate) fn stream_run_completed(&mut self, completed: &mut Option<Completed>, key: u32) {
        let Some(done) = completed.as_mut().and_then(|c| c.remove(&key)) else { return };
        for (cb, result) in done {
            cb(self, result);
        }
    }

    #[inline]
    fn check_writable(s: &Stream, kind: HandleKind) -> io::Result<()> {
        if matches!(s.shutdown, Shutdown::None) && s.writable {
            return Ok(());
        }
        Self::not_writable(s, kind)
    }

    #[cold]
    fn not_writable(s: &Stream, kind: HandleKind) -> io::Result<()> {
        let why = if !matches!(s.shutdown, Shutdown::None) {
            "it was shut down for writing"
        } else {
            "its fd is open for reading only"
        };
        Err(io::Error::new(io::ErrorKind::BrokenPipe, format!("cannot write to the {}: {why}", kind.name())))
    }

    /// Writes `buf`, or queues what the kernel does not take now. An owned buffer moves into
    /// the queue; a borrowed one is copied, from the first byte not written. Without a
    /// callback (a send), an error of the write made now is returned, and a short remainder
    /// joins a send queued just before it.
    #[inline(always)]
    pub(crate) fn stream_write(
        &mut self,
        id: HandleId,
        kind: HandleKind,
        buf: impl WriteBuf,
        cb: Option<WriteCb>,
    ) -> io::Result<()> {
        let data = buf.as_slice();
        let s = self.stream_mut(id, kind)?;
        Self::check_writable(s, kind)?;
        if s.send_failed.is_some() {
            return self.report_send_failure(id, cb);
        }
        if s.queue.is_empty() && !data.is_empty() {
            // A terminal whose other side hung up, as a read found: Linux would keep a small
            // write for whoever opens the slave next, maybe nobody, so it fails here, with
            // the error of the queue's writes.
            if let Some(e) = Self::still_hung_up(s) {
                return self.write_failed(id, cb, e);
            }
            // The common case, kept short: the kernel takes the whole buffer.
            let res = write_some(s.io.fd()?, s.dontwait, data);
            if matches!(res, Ok(n) if n == data.len()) {
                self.complete_queued(id, cb, Ok(()));
                return Ok(());
            }
            return self.stream_write_rest(id, buf, cb, res);
        }
        self.stream_enqueue(id, buf, 0, cb)
    }

    /// The first write of an empty queue took part of `buf`, or nothing (`res`): a blocking
    /// terminal writes on until done, an error fails the write, and the rest is queued.
    #[inline(never)]
    fn stream_write_rest(
        &mut self,
        id: HandleId,
        buf: impl WriteBuf,
        cb: Option<WriteCb>,
        mut res: io::Result<usize>,
    ) -> io::Result<()> {
        let data = buf.as_slice();
        let Some(s) = self.live_stream(id) else { unreachable!("checked by stream_write") };
        let (fd, blocking, dontwait) = (s.io.fd()?, s.blocking, s.dontwait);
        let mut written = 0;
        loop {
            match res {
                Ok(n) => {
                    written += n;
                    // A blocking tty write finishes the whole buffer, as libuv does.
                    if written == data.len() {
                        self.complete_queued(id, cb, Ok(()));
                        return Ok(());
                    }
                    if !blocking {
                        break;
                    }
                }
                Err(e) if fd::would_block(&e) => break,
                Err(e) => return self.write_failed(id, cb, e),
            }
            res = write_some(fd, dontwait, &data[written..]);
        }
        self.stream_enqueue(id, buf, written, cb)
    }

    /// The write made now failed: a write's callback hears it, a send returns it.
    #[cold]
    #[inline(never)]
    fn write_failed(&mut self, id: HandleId, cb: Option<WriteCb>, e: io::Error) -> io::Result<()> {
        match cb {
            Some(cb) => {
                self.complete_write(id, cb, Err(e));
                Ok(())
            }
            None => Err(e),
        }
    }

    /// Queues what is left of `buf` after `written` bytes (or, for an empty write with
    /// nothing queued before it, completes it).
    #[inline(never)]
    fn stream_enqueue(
        &mut self,
        id: HandleId,
        buf: impl WriteBuf,
        written: usize,
        cb: Option<WriteCb>,
    ) -> io::Result<()> {
        let Some(s) = self.live_stream(id) else { unreachable!("checked by stream_write") };
        if buf.as_slice().is_empty() {
            if cb.is_some() && !s.queue.is_empty() {
                // A flush barrier: its callback runs after those of the writes before it.
            } else {
                self.complete_queued(id, cb, Ok(()));
                return Ok(());
            }
        }
        if cb.is_none() {
            // Nobody would hear that the queue failed: the send itself does.
            if let Some(e) = Self::still_hung_up(s) {
                self.stream_hung_up(id);
                return Err(e);
            }
        }
        let (data, offset) = buf.into_queued(written, &mut s.staging);
        s.queued_bytes += data.len() - offset;
        match (s.queue.back_mut(), &data, &cb) {
            // Staged bytes follow those of the entry before them: one entry for a burst of
            // sends, as nothing tells them apart.
            (Some(WriteReq { data: Queued::Staged(last), cb: None, .. }), Queued::Staged(n), None) => {
                *last += n
            }
            _ => s.queue.push_back(WriteReq { data, offset, cb }),
        }
        let hung_up = s.hung_up;
        self.stream_sync(id);
        if hung_up {
            self.stream_queued_after_hangup(id);
        }
        Ok(())
    }

    /// The first write, send or `try_write` after queued sends failed hears why, and
    /// writes nothing: what it would write might otherwise reach a reader that missed the
    /// failed data before it.
    #[cold]
    #[inline(never)]
    fn report_send_failure(&mut self, id: HandleId, cb: Option<WriteCb>) -> io::Result<()> {
        let Some(e) = self.live_stream(id).and_then(|s| s.send_failed.take()) else { return Ok(()) };
        // Told apart from a failure of this call's own write, which may have written a part.
        let e = context(e, "sends queued before this call failed; it wrote nothing");
        match cb {
            Some(cb) => {
                self.complete_write(id, cb, Err(e));
                Ok(())
            }
            None => Err(e),
        }
    }

    #[inline]
    pub(crate) fn try_write(&mut self, id: HandleId, kind: HandleKind, data: &[u8]) -> io::Result<usize> {
        let s = self.stream_mut(id, kind)?;
        Self::check_writable(s, kind)?;
        if s.send_failed.is_some() {
            return self.report_send_failure(id, None).map(|()| 0);
        }
        if !s.queue.is_empty() {
            // Writing now would overtake the queued data.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if data.is_empty() {
            return Ok(0);
        }
        // A terminal whose other side hung up, as a read found: the write fails with `EIO`,
        // as `write` does (Linux would take a few bytes, kept for whoever opens the slave
        // next, then say "would block" for good; macOS and FreeBSD fail it with `EIO`
        // themselves).
        if let Some(e) = Self::still_hung_up(s) {
            return Err(e);
        }
        write_some(s.io.fd()?, s.dontwait, data)
    }

    /// The error of a write to a terminal whose other side hung up, as a read found, while
    /// it is still hung up: one flag test on the write path.
    #[inline]
    fn still_hung_up(s: &mut Stream) -> Option<io::Error> {
        if s.hung_up { Self::hung_up_error(s) } else { None }
    }

    /// The error of a write to a terminal whose other side hung up (`EIO`), unless it is
    /// back (a slave opened again): see `stream_queued_after_hangup`.
    #[cold]
    fn hung_up_error(s: &mut Stream) -> Option<io::Error> {
        let still = s.io.fd().map_or(true, |fd| fd::poll_hung_up(fd) != Some(false));
        if !still {
            s.hung_up = false;
            return None;
        }
        Some(hangup_error())
    }

    pub(crate) fn try_read(&mut self, id: HandleId, kind: HandleKind, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.stream_mut(id, kind)?;
        if !s.readable {
            return Err(not_readable(s, kind));
        }
        // Bounded as the loop's own reads are (macOS refuses some big pipe reads).
        let len = buf.len().min(s.read_cap);
        let buf = &mut buf[..len];
        if buf.is_empty() {
            return Ok(0);
        }
        // With no readiness event to go by, a description others share (who may have made it
        // blocking again) is asked first too.
        match read_some(s.io.fd()?, s.dontwait, s.blocking || s.shared, buf) {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
            Err(e) if s.eio_is_eof && e.raw_os_error() == Some(libc::EIO) => match terminal_eio(s, e) {
                ReadEvent::Error(e) => Err(e),
                _ => {
                    // As a read round's end of file does: what is queued fails now.
                    self.stream_hung_up(id);
                    Ok(0)
                }
            },
            Err(e) => Err(e),
        }
    }

    pub(crate) fn shares_nonblocking(&self, id: HandleId, kind: HandleKind) -> io::Result<bool> {
        let s = self.open_stream_ref(id, kind)?;
        Ok(s.shared && fd::status_flags(s.io.fd()?)?.nonblocking)
    }

    pub(crate) fn write_queue_size(&self, id: HandleId, kind: HandleKind) -> io::Result<usize> {
        Ok(self.stream_ref(id, kind)?.queued_bytes)
    }

    #[inline(never)]
    fn stream_flush(&mut self, id: HandleId) {
        for _ in 0..WRITES_PER_EVENT_MAX {
            let Some(s) = self.live_stream(id) else { return };
            if s.queue.is_empty() {
                break;
            }
            let Ok(fd) = s.io.fd() else { break };
            // One buffer per queued write, but one for each run of staged writes, which lie
            // one after another in the staging buffer. At most IO_BYTES_LIMIT in all (macOS
            // refuses a writev of more than INT_MAX), and a bounded walk: a long queue of
            // short writes, which all go into one buffer, would otherwise be walked whole by
            // every flush.
            let mut iov = IoList::new();
            let mut offered = 0;
            let mut staged_at = s.staging.head;
            let mut run = None;
            let walked = s.queue.len().min(WRITEV_ENTRIES_WALKED_MAX);
            for (i, req) in s.queue.iter().take(walked).enumerate() {
                let buf = match &req.data {
                    Queued::Owned(v) => &v[req.offset..],
                    Queued::Shared(b) => &(**b).as_ref()[req.offset..],
                    Queued::Staged(n) => {
                        if run.is_none() && iov.len == WRITEV_BUFFERS_MAX {
                            break;
                        }
                        // (A burst of sends is one entry of any length: bounded here too.)
                        let take =
                            (n - req.offset).min(WRITEV_BYTES_OFFERED_MAX.min(fd::IO_BYTES_LIMIT) - offered);
                        run.get_or_insert(staged_at);
                        staged_at += take;
                        offered += take;
                        if offered >= WRITEV_BYTES_OFFERED_MAX.min(fd::IO_BYTES_LIMIT) {
                            break;
                        }
                        continue;
                    }
                };
                if let Some(from) = run.take() {
                    if !iov.push(&s.staging.buf[from..staged_at], walked - i) {
                        offered -= staged_at - from;
                        break;
                    }
                }
                let take = buf.len().min(fd::IO_BYTES_LIMIT - offered);
                if !iov.push(&buf[..take], walked - i) {
                    break;
                }
                offered += take;
                if offered >= WRITEV_BYTES_OFFERED_MAX.min(fd::IO_BYTES_LIMIT) {
                    break;
                }
            }
            if let Some(from) = run {
                if !iov.push(&s.staging.buf[from..staged_at], 0) {
                    offered -= staged_at - from;
                }
            }
            let (iov, n_iov) = (iov.as_slice(), iov.len);
            let res = match (n_iov, s.dontwait) {
                (1, dontwait) => write_some(fd, dontwait, &iov[0]),
                (_, false) => fd::writev(fd, &iov[..n_iov]),
                (_, true) => fd::sendmsg_dontwait(fd, &iov[..n_iov]),
            };
            match res {
                Ok(n) => {
                    self.stream_advance(id, n);
                    if n < offered {
                        break;
                    }
                }
                Err(e) if fd::would_block(&e) => break,
                Err(e) => {
                    self.stream_fail_writes(id, &e);
                    break;
                }
            }
        }
        // A drained queue gives back the room a burst of writes took, and puts back the
        // settings of a handle on the same terminal that closed while it was not (see
        // `Loop::tty_hand_over`).
        let mut restore_handed = false;
        if let Some(s) = self.live_stream(id) {
            if !s.queue.is_empty() {
                s.staging.trim(0);
            } else {
                s.staging.reset();
                if s.queue.capacity() > WRITE_QUEUE_ENTRIES_KEPT_MAX {
                    s.queue.shrink_to(WRITE_QUEUE_ENTRIES_KEPT_MAX);
                }
                restore_handed = s.tty.as_ref().is_some_and(crate::tty::TtyState::has_handed);
            }
        }
        if restore_handed {
            self.tty_restore_handed(id);
        }
        self.stream_maybe_shutdown(id);
        self.stream_sync(id);
    }

    /// `n` bytes of the queue went out: complete the writes they finished.
    fn stream_advance(&mut self, id: HandleId, mut n: usize) {
        loop {
            let Some(s) = self.live_stream(id) else { return };
            let Some(front) = s.queue.front_mut() else { return };
            let rest = front.data.len() - front.offset;
            let staged = matches!(front.data, Queued::Staged(_));
            if rest > n {
                front.offset += n;
                s.queued_bytes -= n;
                if staged {
                    s.staging.consume(n);
                }
                return;
            }
            n -= rest;
            s.queued_bytes -= rest;
            if staged {
                s.staging.consume(rest);
            }
            let req = s.queue.pop_front().expect("front exists");
            self.complete_queued(id, req.cb, Ok(()));
        }
    }

    fn stream_fail_writes(&mut self, id: HandleId, e: &io::Error) {
        let Some(s) = self.live_stream(id) else { return };
        let queue = s.take_queue();
        // Sends with no write queued after them, whose callback would hear of it.
        if queue.back().is_some_and(|req| req.cb.is_none()) {
            s.send_failed = Some(clone_error(e));
        }
        for req in queue {
            self.complete_queued(id, req.cb, Err(clone_error(e)));
        }
    }

    // ----- shutdown -----------------------------------------------------------------------

    pub(crate) fn stream_shutdown(&mut self, id: HandleId, kind: HandleKind, cb: WriteCb) -> io::Result<()> {
        let s = self.stream_mut(id, kind)?;
        if !matches!(s.shutdown, Shutdown::None) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("the {} was already shut down for writing", kind.name()),
            ));
        }
        Self::check_writable(s, kind)?;
        if let Some(ty) = Self::no_half_close(s)? {
            let what = match ty {
                FileType::Fifo => "FIFO",
                FileType::CharDevice if kind == HandleKind::Tty => "terminal",
                FileType::CharDevice => "device",
                FileType::Regular => "regular file",
                _ => "file",
            };
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "cannot shut down a {} open for reading and writing (a {what}): only a socket's \
                     write side closes alone; to close once the queued writes are out, close from the \
                     callback of an empty write{}",
                    kind.name(),
                    if kind == HandleKind::Tty {
                        " (and to end a program's input at a terminal, write its end-of-file character, ^D)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        s.shutdown = Shutdown::Pending(cb);
        self.stream_maybe_shutdown(id);
        self.stream_sync(id);
        Ok(())
    }

    /// The type of a stream that cannot close its write side alone: one open for reading
    /// and writing, other than a socket.
    fn no_half_close(s: &Stream) -> io::Result<Option<FileType>> {
        // (A pty capture's input is a master's copy, open for both: its close alone would
        // end nothing, as the capture holds the master.)
        if !s.readable && !s.tty.as_ref().is_some_and(|t| t.capture_input) {
            return Ok(None);
        }
        let ty = fd::file_type(s.io.fd()?)?;
        Ok((ty != FileType::Socket).then_some(ty))
    }

    /// `end`: a shutdown where the stream can close its write side alone, else an empty
    /// write, whose callback runs once everything queued before it is out.
    pub(crate) fn stream_end(&mut self, id: HandleId, kind: HandleKind, cb: WriteCb) -> io::Result<()> {
        let s = self.stream_mut(id, kind)?;
        if matches!(s.shutdown, Shutdown::None) && Self::no_half_close(s)?.is_some() {
            return self.stream_write(id, kind, &b""[..], Some(cb));
        }
        self.stream_shutdown(id, kind, cb)
    }

    /// Shuts the write side once the queue has drained.
    fn stream_maybe_shutdown(&mut self, id: HandleId) {
        let Some(s) = self.live_stream(id) else { return };
        if !s.queue.is_empty() || !matches!(s.shutdown, Shutdown::Pending(_)) {
            return;
        }
        let Shutdown::Pending(cb) = std::mem::replace(&mut s.shutdown, Shutdown::Done) else {
            unreachable!()
        };
        s.writable = false;
        // Sends that failed with nobody told: the shutdown's callback is the last that can
        // hear of it (no write can follow).
        let send_failed = s.send_failed.take();
        let res = if s.readable {
            // A socket: half-close.
            s.io.fd().and_then(fd::shutdown_write)
        } else {
            // A write-only pipe: closing our end is how its reader sees end of file.
            self.io_release(id);
            Ok(())
        };
        let send_failed = send_failed.map(|e| context(e, "sends queued before the shutdown failed"));
        self.complete_write(id, cb, send_failed.map_or(res, Err));
    }

    // ----- readiness, flush, close --------------------------------------------------------

    /// Serves one readiness event for a stream known by its id.
    /// Readiness for handle `id` (a stream or an fd watch) from the always-ready list or the
    /// select helper.
    pub(crate) fn io_event(&mut self, id: HandleId, r: Readiness) {
        match self.live_slot_mut(id).map(|s| &mut s.kind) {
            Some(Kind::Stream(s)) => {
                let interest = s.interest();
                self.stream_event(id, r, interest);
            }
            Some(Kind::FdWatch(_)) => self.watch_event(id, r),
            _ => {}
        }
    }

    /// A backend cannot watch handle `id` (a stream or an fd watch) any more: a change it
    /// refused (at the flush, or later as a kqueue receipt), or the select helper's error.
    /// The registration counts as gone, so that the handle's next interest starts afresh
    /// instead of retrying a change that fails in every iteration.
    pub(crate) fn io_error(&mut self, id: HandleId, e: io::Error) {
        let Some(slot) = self.live_slot_mut(id) else { return };
        if let Some(io) = slot.kind.io_mut() {
            io.registered = Interest::empty();
        }
        match &slot.kind {
            Kind::FdWatch(_) => self.watch_error(id, e),
            _ => self.stream_io_error(id, e),
        }
    }

    /// Serves one readiness event. `interest` is [`Stream::interest`], read by the caller
    /// from the slot it already looked up.
    #[inline]
    pub(crate) fn stream_event(&mut self, id: HandleId, r: Readiness, (reading, writing): (bool, bool)) {
        if reading && r.intersects(Readiness::READABLE | Readiness::HUP | Readiness::ERROR) {
            self.stream_read(id);
        }
        if writing && r.intersects(Readiness::WRITABLE | Readiness::HUP | Readiness::ERROR) {
            self.stream_flush(id);
            if r.contains(Readiness::HUP) {
                self.stream_hung_up(id);
            }
        }
    }

    /// A terminal's other side hung up, and what the flush could not write will never go: the
    /// queued writes fail. A pty master whose slave has closed answers a write with `EAGAIN`,
    /// not `EPIPE` (which fails a pipe's or socket's queue in the flush), and stays ready with
    /// the hangup: the loop spun with the queue kept, and `run` never returned. (Only for
    /// terminals: kqueue reports a socket's half-close as a hangup too, and its peer may
    /// still read.)
    #[cold]
    #[inline(never)]
    fn stream_hung_up(&mut self, id: HandleId) {
        if self.live_stream(id).is_none_or(|s| s.queue.is_empty() || !s.eio_is_eof) {
            return;
        }
        self.stream_fail_writes(id, &hangup_error());
        self.stream_maybe_shutdown(id);
        self.stream_sync(id);
    }

    /// Data was queued on a terminal whose read saw it hang up: the queue fails unless the
    /// other side is back (a slave opened again by name, as a getty does), which a hang-up
    /// no longer reported tells. Where that cannot be told, the queue fails.
    #[cold]
    #[inline(never)]
    fn stream_queued_after_hangup(&mut self, id: HandleId) {
        let Some(s) = self.live_stream(id) else { return };
        if Self::hung_up_error(s).is_some() {
            self.stream_hung_up(id);
        }
    }

    /// A registration failed: report it to whoever waits on the stream.
    pub(crate) fn stream_io_error(&mut self, id: HandleId, e: io::Error) {
        log::debug!("loop {}: stream {id:?} registration failed: {e}", self.id);
        self.stream_fail_writes(id, &e);
        // A shutdown waiting for those writes fails with them: the fd will not drain.
        if let Some(s) = self.live_stream(id) {
            if let Shutdown::Pending(cb) = std::mem::replace(&mut s.shutdown, Shutdown::Done) {
                s.writable = false;
                self.complete_write(id, cb, Err(clone_error(&e)));
            }
        }
        if self.live_stream(id).is_some_and(|s| s.reading) {
            self.deliver_read(id, ReadEvent::Error(e));
        }
        self.stream_sync(id);
    }

    /// Hands every interest change of this iteration to the backends.
    // Out of line: keeps the common iteration (nothing of this kind to do) small.
    #[inline(never)]
    pub(crate) fn flush_io(&mut self) -> bool {
        let mut failed = false;
        let mut dirty = std::mem::take(&mut self.io_dirty);
        for &id in &dirty {
            // Field-level borrows: the slot, the poller and the always-ready list are disjoint.
            let Some(slot) = self.slots.get_mut(id.key as usize).filter(|s| s.gen_ == id.gen_) else {
                continue;
            };
            if slot.flags.contains(Flags::CLOSING) {
                continue;
            }
            // A watch's fd number that names another file now is not the watch's to register
            // (the poller would take the other file, or another handle's registration).
            let replaced = matches!(&slot.kind, Kind::FdWatch(w) if w.io.dirty && w.fd_replaced());
            let Some(io) = slot.kind.io_mut() else { continue };
            io.dirty = false;
            let (old, new) = (io.registered, io.wanted);
            if old == new {
                continue;
            }
            let Some(fd) = io.fd.as_ref() else { continue };
            let res = match io.mode {
                _ if replaced => Err(io::Error::from_raw_os_error(libc::EBADF)),
                IoMode::Poller => self.poller.update(fd.as_fd(), id.token(), old, new),
                IoMode::AlwaysReady => {
                    if old.is_empty() {
                        self.always_ready.push(id);
                    } else if new.is_empty() {
                        self.always_ready.retain(|&h| h != id);
                    }
                    Ok(())
                }
                IoMode::SelectHelper => {
                    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
                    self.select_helper_update(id, raw, new)
                }
            };
            match res {
                Ok(()) => {
                    if let Some(io) = self.live_slot_mut(id).and_then(|s| s.kind.io_mut()) {
                        io.registered = new;
                    }
                }
                Err(e) => {
                    failed = true;
                    self.io_error(id, e)
                }
            }
        }
        dirty.clear();
        // Errors above may have queued more changes; keep them for the next flush.
        dirty.append(&mut self.io_dirty);
        self.io_dirty = dirty;
        failed
    }

    /// Runs the streams in always-ready mode as if the poller had reported them.
    // Out of line: keeps the common iteration (nothing of this kind to do) small.
    #[inline(never)]
    pub(crate) fn run_always_ready(&mut self) {
        if self.always_ready.is_empty() {
            return;
        }
        // A copy, since callbacks may change the list; kept between calls so that an idle
        // always-ready stream costs no allocation per iteration.
        let mut batch = std::mem::take(&mut self.always_ready_scratch);
        batch.clear();
        batch.extend_from_slice(&self.always_ready);
        for &id in &batch {
            let Some(slot) = self.live_slot_mut(id) else { continue };
            let Some(io) = slot.kind.io_mut() else { continue };
            let mut r = Readiness::empty();
            if io.registered.contains(Interest::READABLE) {
                r |= Readiness::READABLE;
            }
            if io.registered.contains(Interest::WRITABLE) {
                r |= Readiness::WRITABLE;
            }
            self.io_event(id, r);
        }
        self.always_ready_scratch = batch;
    }

    /// Takes the fd out of its backend and closes it, restoring what we changed on it: a
    /// tty's settings, then `O_NONBLOCK`.
    pub(crate) fn io_release(&mut self, id: HandleId) {
        let Some(slot) = self.live_slot_mut(id) else { return };
        let replaced = matches!(&slot.kind, Kind::FdWatch(w) if w.fd_replaced());
        let (restore_blocking, tty, original) = match &mut slot.kind {
            Kind::Stream(s) => (
                s.restore_blocking.take(),
                s.tty.as_mut().map(crate::tty::TtyState::take_for_release),
                s.original.take(),
            ),
            _ => (None, None, None),
        };
        let Some(io) = slot.kind.io_mut() else { return };
        let registered = std::mem::take(&mut io.registered);
        let mode = io.mode;
        let Some(fd) = io.fd.take() else { return };
        match mode {
            // (Its number is another file's: another handle's registration, maybe.)
            IoMode::Poller if replaced => {}
            IoMode::Poller => {
                if let Err(e) = self.poller.deregister(fd.as_fd(), registered) {
                    log::debug!("loop {}: deregistering {id:?}: {e}", self.id);
                }
            }
            IoMode::AlwaysReady => self.always_ready.retain(|&h| h != id),
            IoMode::SelectHelper => {}
        }
        if let Some(mut tty) = tty {
            self.tty_hand_over(id, &mut tty);
            tty.release(self.id, fd.as_fd(), self.dropping);
        }
        if let Some(nb) = restore_blocking {
            let _ = nb.restore(fd.as_fd());
        }
        let fd = if replaced || fd::status_flags(fd.as_fd()).is_err() {
            // Closed behind our back: closing again could close someone else's fd.
            log::warn!("loop {}: the fd of {id:?} was closed behind the loop's back", self.id);
            let _ = fd.into_raw_fd();
            None
        } else {
            Some(fd)
        };
        if mode == IoMode::SelectHelper {
            // The helper thread may be inside select() with this fd: the release waits until
            // it has left, then closes the fd.
            self.select_helper_release(id, fd);
        } else {
            drop(fd);
        }
        // The caller's own fd goes last, under the same rule.
        if let Some(original) = original {
            if fd::status_flags(original.as_fd()).is_err() {
                let _ = original.into_raw_fd();
            }
        }
    }

    /// Stops a stream for close: out of every backend, fd closed, reading stopped. Queued
    /// writes stay for the close phase, which cancels them.
    pub(crate) fn stream_stop_for_close(&mut self, id: HandleId) {
        self.io_release(id);
        let mut read_cb = None;
        if let Some(Kind::Stream(s)) = self.live_slot_mut(id).map(|s| &mut s.kind) {
            s.reading = false;
            s.paused = false;
            read_cb = s.read_cb.take();
        }
        self.read_changed();
        self.tty_stop_for_close(id);
        // Last: a panic as the program's value drops (a loop's drop catches it) must not
        // skip the terminal's restore.
        drop(read_cb);
    }

    /// The close phase's part: cancel every queued write and a pending shutdown, in order.
    pub(crate) fn stream_cancel(&mut self, s: &mut Stream) {
        for cb in s.take_queue().into_iter().filter_map(|req| req.cb) {
            self.complete_now(cb, Err(cancelled()));
        }
        if let Shutdown::Pending(cb) = std::mem::replace(&mut s.shutdown, Shutdown::Done) {
            self.complete_now(cb, Err(cancelled()));
        }
    }

    fn complete_now(&mut self, cb: WriteCb, result: io::Result<()>) {
        cb(self, result);
    }
}

/// One read from a stream's fd that cannot block: `recv` with `MSG_DONTWAIT` for a socket
/// that stays blocking; with `poll_first` (a blocking fd, or one whose description others
/// may make blocking), only once `poll` says it is readable (one read then returns what is
/// there). `Ok(None)`: nothing to read now.
#[inline(always)]
fn read_some(
    fd: std::os::fd::BorrowedFd<'_>,
    dontwait: bool,
    poll_first: bool,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    if dontwait {
        fd::recv_dontwait(fd, buf)
    } else if poll_first && !fd::poll_readable(fd, Some(Duration::ZERO)).unwrap_or(true) {
        Ok(None)
    } else {
        fd::read_nonblocking(fd, buf)
    }
}

/// What a write to a terminal whose other side hung up fails with.
fn hangup_error() -> io::Error {
    context(io::Error::from_raw_os_error(libc::EIO), "write: the other side hung up")
}

/// One write to a stream's fd: `send` with `MSG_DONTWAIT` for a socket that stays blocking.
#[inline]
fn write_some(fd: std::os::fd::BorrowedFd<'_>, dontwait: bool, data: &[u8]) -> io::Result<usize> {
    if dontwait { fd::send_dontwait(fd, data) } else { fd::write(fd, data) }
}

/// What `EIO` from a terminal read means: end of file when the terminal hung up (the other
/// side of a pty closed, a modem line dropped); an error when this process group reads its
/// controlling terminal from the background, where `SIGTTIN` is ignored or blocked or the
/// group is orphaned: the terminal is still there, in another group's hands. The hangup is
/// noted on the stream.
#[cold]
fn terminal_eio(s: &mut Stream, e: io::Error) -> ReadEvent<'static> {
    // A hung-up terminal answers tcgetpgrp with EIO, one that is not the controlling
    // terminal with ENOTTY; a pty master names its slave's foreground group, which does not
    // make its reader a background one.
    if let Ok(fd) = s.io.fd() {
        if !termios::is_pty_master(fd) {
            if let Ok(front) = termios::foreground_group(fd) {
                let own = evloop_platform::process::process_group();
                if front != own {
                    return ReadEvent::Error(context(
                        e,
                        format!(
                            "read from the terminal in the background: process group {own} is not the foreground group ({front})"
                        ),
                    ));
                }
            }
        }
    }
    s.hung_up = true;
    ReadEvent::Eof
}

/// Generates the stream operations shared by [`Pipe`](crate::Pipe) and [`Tty`](crate::Tty).
macro_rules! stream_methods {
    ($name:ident, $kind:expr) => {
        impl $name {
            /// Starts reading: `cb` receives data (at most the read cap per call), then end of
            /// file or an error, after which reading has stopped. Starting twice is an error;
            /// so is reading an fd open for writing only.
            #[inline]
            pub fn read_start(
                self,
                lp: &mut $crate::Loop,
                cb: impl FnMut(&mut $crate::Loop, $name, $crate::ReadEvent<'_>) + 'static,
            ) -> std::io::Result<()> {
                lp.read_start(self.0, $kind, $crate::stream::ReadCb::$name(Box::new(cb)))
            }

            /// Stops reading and drops the callback. Data arriving meanwhile stays in the
            /// kernel. Stopping twice does nothing. To stop for a while and go on with the same
            /// callback, use [`read_pause`](Self::read_pause).
            #[inline]
            pub fn read_stop(self, lp: &mut $crate::Loop) -> std::io::Result<()> {
                lp.read_stop(self.0, $kind)
            }

            /// Stops reading, keeping the callback for [`read_resume`](Self::read_resume): the
            /// way to apply back-pressure (stop reading while the other side lags behind)
            /// without building the callback again. Data arriving meanwhile stays in the
            /// kernel, and nothing is lost. Like a stopped stream, a paused one does not keep
            /// the loop alive (unless writes are queued on it).
            ///
            /// It may be called from the read callback itself: no further data is delivered
            /// in that round. Pausing a stream that is not reading does nothing. A later
            /// [`read_start`](Self::read_start) replaces the kept callback, and
            /// [`read_stop`](Self::read_stop) or closing drops it.
            ///
            /// With a pipe (a tty works the same way):
            ///
            /// ```
            /// use std::{cell::RefCell, rc::Rc};
            /// use evloop::{Loop, Pipe, ReadEvent, RunMode};
            ///
            /// let mut lp = Loop::new()?;
            /// let (rx, tx) = Pipe::pair(&mut lp)?;
            /// let got = Rc::new(RefCell::new(Vec::new()));
            /// let sink = got.clone();
            /// rx.read_start(&mut lp, move |lp, rx, ev| match ev {
            ///     ReadEvent::Data(bytes) => {
            ///         sink.borrow_mut().push(bytes.to_vec());
            ///         rx.read_pause(lp).unwrap(); // one chunk, then wait for the consumer
            ///     }
            ///     ReadEvent::Eof => rx.close(lp).unwrap(),
            ///     ReadEvent::Error(e) => panic!("{e}"),
            /// })?;
            /// tx.write(&mut lp, b"hello", |_, res| res.unwrap())?;
            /// lp.run(RunMode::Default)?; // returns once paused: nothing else keeps it alive
            /// assert_eq!(got.borrow().len(), 1);
            /// tx.write(&mut lp, b"world", |_, res| res.unwrap())?;
            /// tx.close(&mut lp)?;
            /// // The consumer caught up: resume until end of file closes `rx`.
            /// while rx.read_resume(&mut lp).is_ok() {
            ///     lp.run(RunMode::Default)?;
            /// }
            /// assert_eq!(got.borrow().concat(), b"helloworld");
            /// # Ok::<(), std::io::Error>(())
            /// ```
            #[inline]
            pub fn read_pause(self, lp: &mut $crate::Loop) -> std::io::Result<()> {
                lp.read_pause(self.0, $kind)
            }

            /// Resumes reading paused with [`read_pause`](Self::read_pause), with the kept
            /// callback. Resuming a stream that is reading does nothing. A stream with nothing
            /// paused (never started, stopped with [`read_stop`](Self::read_stop), or ended by
            /// end of file or an error) gives a `NotConnected` error.
            #[inline]
            pub fn read_resume(self, lp: &mut $crate::Loop) -> std::io::Result<()> {
                lp.read_resume(self.0, $kind)
            }

            /// Whether the stream is reading now: started, not paused, and not ended (by
            /// end of file, an error, [`read_stop`](Self::read_stop) or a close). A closing
            /// handle answers `false`.
            ///
            /// ```
            /// use evloop::{Loop, Pipe, RunMode};
            ///
            /// let mut lp = Loop::new()?;
            /// let (rx, tx) = Pipe::pair(&mut lp)?;
            /// assert!(!rx.is_reading(&lp)?);
            /// rx.read_start(&mut lp, |_, _, _| {})?;
            /// assert!(rx.is_reading(&lp)?);
            /// rx.read_pause(&mut lp)?;
            /// assert!(!rx.is_reading(&lp)? && rx.is_paused(&lp)?);
            /// tx.close(&mut lp)?;
            /// rx.read_resume(&mut lp)?;
            /// lp.run(RunMode::Default)?; // end of file ends the reading
            /// assert!(!rx.is_reading(&lp)? && !rx.is_paused(&lp)?);
            /// rx.close(&mut lp)?;
            /// # Ok::<(), std::io::Error>(())
            /// ```
            pub fn is_reading(self, lp: &$crate::Loop) -> std::io::Result<bool> {
                lp.read_state(self.0, $kind).map(|(reading, _)| reading)
            }

            /// Whether the stream's reading is paused ([`read_pause`](Self::read_pause)), so
            /// that [`read_resume`](Self::read_resume) would go on with the kept callback. A
            /// closing handle answers `false`.
            pub fn is_paused(self, lp: &$crate::Loop) -> std::io::Result<bool> {
                lp.read_state(self.0, $kind).map(|(_, paused)| paused)
            }

            /// Writes `data`: what the kernel takes now is written at once, the rest is copied
            /// into the write queue and goes out in order when the fd is writable. Short
            /// remainders (up to [`WRITE_STAGED_BYTES_MAX`](crate::limits::WRITE_STAGED_BYTES_MAX))
            /// are copied one after another into one buffer per stream, so a burst of small
            /// writes (lines, escape sequences) allocates nothing per write for its data and
            /// goes out in long `writev` runs: past the queue's own growth, the only
            /// allocation per write is `cb`'s box, when `cb` captures something. That
            /// batching happens only while writes wait: to a reader that keeps up, each write
            /// is a system call of its own, so a program that makes many tiny writes at once
            /// is faster joining them first. A program that does not need to hear of each
            /// write uses [`send`](Self::send), which has no callback to box or run. `cb` runs
            /// from the pending phase with the outcome (`EPIPE` when the reader is gone,
            /// `ECANCELED` if the handle closes first), never inside this call.
            ///
            /// Returns an error, and never calls `cb`, for a handle that cannot be written:
            /// closed, shut down, or open for reading only. After queued
            /// [`send`](Self::send)s failed with nobody told, the first write gets their
            /// error in its callback, and writes nothing.
            ///
            /// A write that fails or is cancelled may have gone out in part: the kernel took
            /// its first bytes before the reader left or the handle closed (libuv's writes
            /// are the same). The callback does not say how many. A callback's success says
            /// only that the kernel took the bytes (into a pipe's buffer, say), not that the
            /// reader read them, let alone acted on them: a reader killed then loses what
            /// its pipe held. What a reader processed, only the reader can say (an answer of
            /// its own, or its successful exit after the stream's
            /// [`shutdown`](Self::shutdown)); a program that must resend what was lost keeps
            /// its data until then.
            ///
            /// Closing a handle cancels what is still queued: those callbacks, and those of
            /// finished writes still waiting for the pending phase, run in the close phase,
            /// in write order, just before the close callback, with the handle released
            /// already (its id is stale there: `NotFound`). To close once everything is
            /// out (a terminal program's last escape sequences, say), close from the callback
            /// of the last write: callbacks run in write order. An empty write is allowed,
            /// and its callback too runs after those of the writes before it: a flush
            /// barrier, for a stream that cannot be [`shutdown`](Self::shutdown) (one open
            /// for reading and writing).
            ///
            /// A reader that stopped reading (a hung child, a stalled peer) shows as a queue
            /// that grows: [`write_queue_size`](Self::write_queue_size) after each write
            /// bounds the memory it takes, and a [`Timer`](crate::Timer) started with an empty
            /// write, and stopped by its callback, says when everything before it has been
            /// waiting too long.
            ///
            /// A child's stdin that the program closes when the child exits (its exit
            /// callback often runs before the queued writes have failed with `EPIPE`) fails
            /// them as cancelled instead: to a writer that restarts a dead reader, both mean
            /// "the reader did not take it" ([`is_cancelled`](crate::is_cancelled)).
            #[inline]
            pub fn write(
                self,
                lp: &mut $crate::Loop,
                data: &[u8],
                cb: impl FnOnce(&mut $crate::Loop, std::io::Result<()>) + 'static,
            ) -> std::io::Result<()> {
                lp.stream_write(self.0, $kind, data, Some(Box::new(cb)))
            }

            /// Writes `data` with no callback: what the kernel takes now is written at once,
            /// the rest is queued, in order with [`write`](Self::write)s, and nothing runs
            /// when it goes out. For a producer that does not need to hear of each write (a
            /// log writer, a terminal's output, a protocol's messages): no box, no pending
            /// callback, and while the queue waits, consecutive short sends share one queue
            /// entry and are copied one after another into the stream's staging buffer, so
            /// a burst of them costs a copy each and goes out in few system calls. To a
            /// reader that keeps up, each send is a system call of its own, as each write is.
            /// A queued remainder longer than
            /// [`WRITE_STAGED_BYTES_MAX`](crate::limits::WRITE_STAGED_BYTES_MAX) is copied into
            /// a buffer of its own: a large buffer the program owns goes into the queue
            /// without a copy through [`write_vec`](Self::write_vec), whose callback may do
            /// nothing.
            ///
            /// Errors:
            /// - a handle that cannot be written gives an error, as for `write`;
            /// - when the write made now fails (`EPIPE` once the reader is gone, say), the
            ///   error is returned and nothing is queued; the kernel may have taken the first
            ///   bytes of `data` before it;
            /// - a send that was queued and then failed is heard of by the first write or
            ///   [`shutdown`](Self::shutdown) queued after it (its callback gets the error),
            ///   or else by the first `write`, `send` or `try_write` made after the failure,
            ///   which gets the error and writes nothing, or by a `shutdown` made after it.
            ///   Its message says so, told apart from a failure of the call's own write;
            ///   [`os_error_code`](crate::os_error_code) gives its `errno`.
            ///   Only a close drops it unheard, as it drops the queued sends themselves
            ///   (queued writes are cancelled).
            ///
            /// To hear that everything sent so far is out, or why not, queue an empty
            /// `write`: its callback runs after every byte before it, with the error that
            /// stopped them, if any.
            ///
            /// ```
            /// use evloop::{Loop, Pipe, ReadEvent, RunMode};
            ///
            /// let mut lp = Loop::new()?;
            /// let (rx, tx) = Pipe::pair(&mut lp)?;
            /// for i in 0..10_000 {
            ///     tx.send(&mut lp, format!("line {i}\n").as_bytes())?;
            /// }
            /// // The barrier: everything sent before it is out (or failed) when it runs.
            /// tx.write(&mut lp, b"", move |lp, res| {
            ///     res.expect("all sent");
            ///     tx.close(lp).unwrap();
            /// })?;
            /// let mut got = 0;
            /// rx.read_start(&mut lp, move |lp, rx, ev| match ev {
            ///     ReadEvent::Data(d) => got += d.iter().filter(|&&b| b == b'\n').count(),
            ///     _ => {
            ///         assert_eq!(got, 10_000);
            ///         rx.close(lp).unwrap();
            ///     }
            /// })?;
            /// lp.run(RunMode::Default)?;
            /// # Ok::<(), std::io::Error>(())
            /// ```
            #[inline]
            pub fn send(self, lp: &mut $crate::Loop, data: &[u8]) -> std::io::Result<()> {
                lp.stream_write(self.0, $kind, data, None)
            }

            /// Like [`write`](Self::write), taking ownership of `data` so that a queued
            /// remainder is not copied: the way to write large buffers.
            #[inline]
            pub fn write_vec(
                self,
                lp: &mut $crate::Loop,
                data: Vec<u8>,
                cb: impl FnOnce(&mut $crate::Loop, std::io::Result<()>) + 'static,
            ) -> std::io::Result<()> {
                lp.stream_write(self.0, $kind, data, Some(Box::new(cb)))
            }

            /// Like [`write_vec`](Self::write_vec), with data that others may share: an
            /// `Rc<[u8]>`, an `Arc<[u8]>`, a `&'static [u8]`, a `String`, anything that is
            /// bytes. The same buffer fed to many streams is never copied; each queue holds
            /// it until its write finishes. Its bytes must not change meanwhile (`as_ref`
            /// gives the same slice each time). For a one-off borrowed buffer,
            /// [`write`](Self::write) saves the box this takes.
            ///
            /// ```
            /// use std::rc::Rc;
            /// use evloop::{Loop, Pipe, RunMode};
            ///
            /// let mut lp = Loop::new()?;
            /// let input: Rc<[u8]> = vec![7u8; 1 << 20].into();
            /// for _ in 0..3 {
            ///     let (rx, tx) = Pipe::pair(&mut lp)?;
            ///     tx.write_shared(&mut lp, input.clone(), move |lp, res| {
            ///         res.unwrap();
            ///         tx.close(lp).unwrap();
            ///     })?;
            ///     rx.read_start(&mut lp, |lp, rx, ev| {
            ///         if !matches!(ev, evloop::ReadEvent::Data(_)) {
            ///             rx.close(lp).unwrap();
            ///         }
            ///     })?;
            /// }
            /// lp.run(RunMode::Default)?;
            /// assert_eq!(Rc::strong_count(&input), 1, "every queue let go of it");
            /// # Ok::<(), std::io::Error>(())
            /// ```
            #[inline]
            pub fn write_shared(
                self,
                lp: &mut $crate::Loop,
                data: impl AsRef<[u8]> + 'static,
                cb: impl FnOnce(&mut $crate::Loop, std::io::Result<()>) + 'static,
            ) -> std::io::Result<()> {
                let data: Box<dyn AsRef<[u8]>> = Box::new(data);
                lp.stream_write(self.0, $kind, data, Some(Box::new(cb)))
            }

            /// Writes what the kernel takes now, without queueing, and returns how many bytes
            /// that was. Fails with [`WouldBlock`](std::io::ErrorKind::WouldBlock) when the
            /// kernel takes nothing, or when writes are queued: writing around them would
            /// reorder the data. On a terminal whose other side hung up (a read found it), it
            /// fails with `EIO` instead once the kernel takes no more, as a queued
            /// [`write`](Self::write) does. After queued [`send`](Self::send)s failed with
            /// nobody told, it fails with their error and writes nothing.
            #[inline]
            pub fn try_write(self, lp: &mut $crate::Loop, data: &[u8]) -> std::io::Result<usize> {
                lp.try_write(self.0, $kind, data)
            }

            /// Reads what the stream holds now into `buf`, without waiting, and returns how
            /// many bytes that was: at most the [read cap](Self::read_cap), and `0` at end of
            /// file (or for an empty `buf`). Fails with
            /// [`WouldBlock`](std::io::ErrorKind::WouldBlock) when nothing is there yet. A
            /// terminal that hung up gives end of file, and its queued writes fail, as they
            /// do when a read callback hears of it. For
            /// taking a little when it is there (a jobserver's token) or draining what is
            /// left, without a read callback. While the handle is reading
            /// ([`read_start`](Self::read_start)), what this takes does not reach its
            /// callback. A write-only handle gives `InvalidInput`, a closing one
            /// `NotConnected`.
            ///
            /// ```
            /// use evloop::{Loop, Pipe};
            ///
            /// let mut lp = Loop::new()?;
            /// let (rx, tx) = Pipe::pair(&mut lp)?;
            /// let mut token = [0u8; 1];
            /// assert_eq!(rx.try_read(&mut lp, &mut token).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
            /// tx.try_write(&mut lp, b"+")?;
            /// assert_eq!(rx.try_read(&mut lp, &mut token)?, 1);
            /// tx.close(&mut lp)?;
            /// lp.run(evloop::RunMode::Default)?;
            /// assert_eq!(rx.try_read(&mut lp, &mut token)?, 0, "end of file");
            /// # Ok::<(), std::io::Error>(())
            /// ```
            pub fn try_read(self, lp: &mut $crate::Loop, buf: &mut [u8]) -> std::io::Result<usize> {
                lp.try_read(self.0, $kind, buf)
            }

            /// Closes the write side once the write queue has drained; `cb` runs from the
            /// pending phase. A write-only pipe closes its fd, which is how the reader sees end
            /// of file once no other fd on the pipe is open (a handle opened on a copy of
            /// stdout: the reader sees the end when the process's own fd 1 goes too, at exit
            /// at the latest); a socket is half-closed, for every process that shares it (a child
            /// given the same stdout socket can write to it no more). A read-write pipe or tty cannot be
            /// half-closed: that is an error. The handle itself stays: close it as usual once
            /// done with it. `Ok` says the write side was closed; it does not say the reader
            /// got everything: a write that failed before (with `EPIPE`, say) told its own
            /// callback. Sends that failed with nobody told give `cb` their error instead
            /// (the write side is closed all the same).
            #[inline]
            pub fn shutdown(
                self,
                lp: &mut $crate::Loop,
                cb: impl FnOnce(&mut $crate::Loop, std::io::Result<()>) + 'static,
            ) -> std::io::Result<()> {
                lp.stream_shutdown(self.0, $kind, Box::new(cb))
            }

            /// Ends the output, whatever the stream is: [`shutdown`](Self::shutdown) where
            /// its write side can close alone (a write-only pipe, a socket), else (a
            /// terminal, a file or a pipe open for reading and writing, where `shutdown` is
            /// `Unsupported`) an empty [`write`](Self::write), whose callback runs once
            /// everything queued before it is out. Either way `cb` runs from the pending
            /// phase once the output is done with, with the error of a write that failed
            /// unheard (as `shutdown`'s) or of the empty write; close the handle then. A
            /// tool that writes to whatever its stdout is ends it this way, as
            /// [`AnyStream::pipe_to`](crate::AnyStream::pipe_to) does with `end`.
            ///
            /// ```
            /// use evloop::{Loop, Pipe, ReadEvent, RunMode};
            ///
            /// let mut lp = Loop::new()?;
            /// let (rx, tx) = Pipe::pair(&mut lp)?;
            /// tx.write(&mut lp, b"last words", |_, r| r.unwrap())?;
            /// // A write-only pipe: its write side closes once the words are out.
            /// tx.end(&mut lp, move |lp, r| {
            ///     r.unwrap();
            ///     tx.close(lp).unwrap();
            /// })?;
            /// // The reader gets the words, then end of file.
            /// rx.read_start(&mut lp, |lp, rx, ev| match ev {
            ///     ReadEvent::Data(d) => assert_eq!(d, b"last words"),
            ///     _ => rx.close(lp).unwrap(),
            /// })?;
            /// lp.run(RunMode::Default)?;
            /// # Ok::<(), std::io::Error>(())
            /// ```
            #[inline]
            pub fn end(
                self,
                lp: &mut $crate::Loop,
                cb: impl FnOnce(&mut $crate::Loop, std::io::Result<()>) + 'static,
            ) -> std::io::Result<()> {
                lp.stream_end(self.0, $kind, Box::new(cb))
            }

            /// Bytes queued and not yet written, sends included. The memory held is more: each
            /// queued write also takes its queue entry (some 50 bytes) and its callback's box
            /// (none for a callback that captures nothing), which for 1-byte writes is most of
            /// it (consecutive short [`send`](Self::send)s share one entry); and a
            /// buffer given to [`write_vec`](Self::write_vec) or
            /// [`write_shared`](Self::write_shared) is kept whole until its last byte is out.
            /// A producer of tiny writes sets its high-water mark with that in mind, or joins
            /// them into larger ones.
            ///
            /// For back-pressure (Node's `'drain'`): a producer that finds the queue above
            /// its high-water mark stops producing (pausing the stream it reads from, say),
            /// and queues an empty [`write`](Self::write), whose callback runs once
            /// everything queued before it is out: the moment to produce again. (A
            /// low-water mark above zero: the callback of the write that crossed it, since
            /// callbacks run in write order.)
            #[inline]
            pub fn write_queue_size(self, lp: &$crate::Loop) -> std::io::Result<usize> {
                lp.write_queue_size(self.0, $kind)
            }

            /// Sets the most bytes one read asks for, between
            /// [`READ_CAP_BYTES_MIN`](crate::limits::READ_CAP_BYTES_MIN) and
            /// [`READ_CAP_BYTES_MAX`](crate::limits::READ_CAP_BYTES_MAX). The default is
            /// [`READ_CAP_BYTES_DEFAULT`](crate::limits::READ_CAP_BYTES_DEFAULT) (64 KiB).
            /// The next read asks for the new cap, also when this is called from the
            /// stream's own read callback. A handle open for writing only gives an
            /// `InvalidInput` error, as [`read_start`](Self::read_start) does.
            #[inline]
            pub fn set_read_cap(self, lp: &mut $crate::Loop, bytes: usize) -> std::io::Result<()> {
                lp.set_read_cap(self.0, $kind, bytes)
            }

            /// The most bytes one read asks for.
            #[inline]
            pub fn read_cap(self, lp: &$crate::Loop) -> std::io::Result<usize> {
                lp.read_cap(self.0, $kind)
            }

            /// Whether the handle's fd is on an open file description that others may
            /// share (a stdout inherited from the shell, and passed on to children) and that
            /// is nonblocking, set so by this handle or before it. Writes through the other
            /// fds on it may then fail with `EAGAIN`: the program's own `println!` or, after
            /// `2>&1`, `eprintln!` (both panic on it), or a child's. See
            /// [`Pipe::open`](crate::Pipe::open) for when a handle cannot get a description
            /// of its own; `false` also where the handle leaves the description blocking (a
            /// socket read with `MSG_DONTWAIT`, a terminal whose writes block, a regular
            /// file; through the select helper, which reads nonblocking, a regular file or
            /// `/dev/null` is made nonblocking too, and restored at close). It errs on the
            /// side of caution: a description nobody else holds (a pty
            /// master the program made, say) counts as one that others may share.
            ///
            /// ```
            /// # let mut lp = evloop::Loop::new()?;
            /// // A pair the loop made is its own: nobody else holds it.
            /// let (rx, tx) = evloop::Pipe::pair(&mut lp)?;
            /// assert!(!rx.shares_nonblocking(&lp)? && !tx.shares_nonblocking(&lp)?);
            /// # Ok::<(), std::io::Error>(())
            /// ```
            pub fn shares_nonblocking(self, lp: &$crate::Loop) -> std::io::Result<bool> {
                lp.shares_nonblocking(self.0, $kind)
            }

            /// The handle's fd, borrowed from the loop (for `fstat`, `F_SETPIPE_SZ`,
            /// `ioctl`s). Do not close it or change its flags. A copy of it shares its open file
            /// description, nonblocking as the loop uses it: a child given one (as
            /// [`Stdio::Fd`](crate::Stdio::Fd)) may see `EAGAIN` (see
            /// [`Pipe::pair`](crate::Pipe::pair) for what to give children instead). Closed behind the loop's back,
            /// it gives the stream an error once, at the next read, write or change of what
            /// the loop waits for on it. A stream that only waits hears nothing: epoll and
            /// kqueue drop an fd at its close without a word (libuv and mio alike), and the
            /// select helper's `select`, once waiting, keeps the file until something wakes
            /// it. On Linux, while another fd shares its description (a `dup`, a child's
            /// copy), epoll keeps reporting it, the loop can no longer take it out (that
            /// needs the fd), and every poll returns at once.
            #[inline]
            pub fn fd(self, lp: &$crate::Loop) -> std::io::Result<std::os::fd::BorrowedFd<'_>> {
                lp.open_stream_ref(self.0, $kind)?.io.fd()
            }
        }
    };
}
pub(crate) use stream_methods;

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::ReadEvent;
    use crate::handle::Kind;
    use crate::limits::{STAGED_BYTES_KEPT_MAX, WRITE_QUEUE_ENTRIES_KEPT_MAX};
    use crate::{Loop, Pipe, RunMode};

    fn queue_capacity(lp: &Loop, pipe: Pipe) -> usize {
        match &lp.slots[pipe.id().key as usize].kind {
            Kind::Stream(s) => s.queue.capacity(),
            _ => unreachable!("a pipe"),
        }
    }

    /// A burst of queued writes used to keep its room in the stream's queue for the
    /// stream's life.
    #[test]
    fn issue_3_a_drained_write_queue_gives_its_room_back() {
        const WRITES: usize = 20_000;
        let mut lp = Loop::new().unwrap();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        // A full pipe, and many small writes queued behind it.
        tx.write_vec(&mut lp, vec![0u8; 1 << 20], |_, res| res.unwrap()).unwrap();
        for _ in 0..WRITES {
            tx.write(&mut lp, b"x", |_, res| res.unwrap()).unwrap();
        }
        assert!(queue_capacity(&lp, tx) >= WRITES);
        let left = Rc::new(Cell::new((1 << 20) + WRITES));
        let l = left.clone();
        rx.read_start(&mut lp, move |lp, rx, ev| match ev {
            ReadEvent::Data(bytes) => {
                l.set(l.get() - bytes.len());
                if l.get() == 0 {
                    rx.close(lp).unwrap();
                }
            }
            ReadEvent::Eof => panic!("the writer is still open"),
            ReadEvent::Error(e) => panic!("{e}"),
        })
        .unwrap();
        while left.get() > 0 {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(tx.write_queue_size(&lp).unwrap(), 0);
        assert!(queue_capacity(&lp, tx) <= WRITE_QUEUE_ENTRIES_KEPT_MAX, "{}", queue_capacity(&lp, tx));
        assert!(staging_capacity(&lp, tx) <= STAGED_BYTES_KEPT_MAX, "{}", staging_capacity(&lp, tx));
        tx.close(&mut lp).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap());
    }

    fn staging_capacity(lp: &Loop, pipe: Pipe) -> usize {
        match &lp.slots[pipe.id().key as usize].kind {
            Kind::Stream(s) => s.staging.buf.capacity(),
            _ => unreachable!("a pipe"),
        }
    }

    /// Queues at least `bytes` in 1,000-byte writes (short: staged once the pipe is full),
    /// and says how many.
    fn write_burst(lp: &mut Loop, tx: Pipe, bytes: usize) -> usize {
        let line = [b'x'; 1000];
        let mut written = 0;
        while written < bytes {
            tx.write(lp, &line, |_, res| res.unwrap()).unwrap();
            written += line.len();
        }
        written
    }

    /// A burst of short writes, written, with an owned write behind it that the reader
    /// stalls in: nothing staged is live and no short write comes to trim the buffer, so
    /// the flush gives the burst's room back (second review: 32 MB kept for 85 KB queued).
    #[test]
    fn issue_3_a_written_burst_behind_a_stalled_owned_write_gives_its_room_back() {
        const BURST_BYTES: usize = 32 << 20;
        let mut lp = Loop::new().unwrap();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let written = write_burst(&mut lp, tx, BURST_BYTES);
        // (Cancelled by the close at the end.)
        tx.write_vec(&mut lp, vec![b'y'; 256 << 10], |_, _| {}).unwrap();
        let read = Rc::new(Cell::new(0));
        let r = read.clone();
        // The reader stops a little into the owned write.
        rx.read_start(&mut lp, move |lp, rx, ev| match ev {
            ReadEvent::Data(bytes) => {
                r.set(r.get() + bytes.len());
                if r.get() > written + (16 << 10) {
                    rx.read_stop(lp).unwrap();
                }
            }
            ev => panic!("{ev:?}"),
        })
        .unwrap();
        while rx.is_active(&lp).unwrap() {
            lp.run(RunMode::Once).unwrap();
        }
        lp.run(RunMode::NoWait).unwrap();
        assert!(tx.write_queue_size(&lp).unwrap() > 0, "the owned write is still queued");
        assert!(
            staging_capacity(&lp, tx) <= STAGED_BYTES_KEPT_MAX,
            "{} bytes of staging",
            staging_capacity(&lp, tx)
        );
        tx.close(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }

    /// A queue that never drains (a producer topping it up as it goes) keeps its staging
    /// buffer within a small multiple of what is queued: the written front is dropped as
    /// it goes, and the room of a burst before is given back on the way (review: it kept
    /// the burst's peak for as long as the queue never drained). Once the queue drains,
    /// the room goes back.
    #[test]
    fn issue_3_the_staging_buffer_stays_within_a_multiple_of_what_is_queued() {
        const QUEUED_BYTES_MAX: usize = 200 << 10;
        const BURST_BYTES: usize = 32 << 20;
        const TOTAL: usize = 64 << 20;
        let mut lp = Loop::new().unwrap();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let line = [b'x'; 1000];
        // A burst with nobody reading yet: 32 MB staged.
        let mut written = write_burst(&mut lp, tx, BURST_BYTES);
        assert!(staging_capacity(&lp, tx) >= BURST_BYTES - (1 << 20));
        let read = Rc::new(Cell::new(0));
        let r = read.clone();
        rx.read_start(&mut lp, move |_, _, ev| match ev {
            ReadEvent::Data(bytes) => r.set(r.get() + bytes.len()),
            ev => panic!("{ev:?}"),
        })
        .unwrap();
        // The reader catches up, but the queue never quite drains.
        while tx.write_queue_size(&lp).unwrap() > QUEUED_BYTES_MAX / 2 {
            lp.run(RunMode::Once).unwrap();
        }
        let mut most = 0;
        while written < BURST_BYTES + TOTAL {
            while tx.write_queue_size(&lp).unwrap() < QUEUED_BYTES_MAX {
                tx.write(&mut lp, &line, |_, res| res.unwrap()).unwrap();
                written += line.len();
            }
            lp.run(RunMode::Once).unwrap();
            // From the second half on, the burst's room must be gone.
            if written > BURST_BYTES + TOTAL / 2 {
                most = most.max(staging_capacity(&lp, tx));
            }
        }
        assert!(most <= 4 * QUEUED_BYTES_MAX + (16 << 10), "{most} bytes of staging");
        while read.get() < written {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(tx.write_queue_size(&lp).unwrap(), 0);
        assert!(staging_capacity(&lp, tx) <= STAGED_BYTES_KEPT_MAX, "{}", staging_capacity(&lp, tx));
        tx.close(&mut lp).unwrap();
        rx.close(&mut lp).unwrap();
        assert!(!lp.run(RunMode::Default).unwrap());
    }
}
