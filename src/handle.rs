//! Handle ids, the slot every handle lives in, and the operations all handles share.
//!
//! A handle is a slot in the loop's slab. Users hold a small `Copy` id: the slab key, the
//! slot's generation and the loop's id. Every operation checks all three, so an id whose
//! handle closed (the generation moved on) or that belongs to another loop gets a clear
//! error and never reaches the slot's next occupant.

use std::fmt;
use std::io;

use bitflags::bitflags;

use crate::event_loop::Loop;

/// The identity of a handle: which loop, which slot, which occupant of that slot.
///
/// Every typed handle ([`Timer`](crate::Timer), [`Pipe`](crate::Pipe), ...) converts into one,
/// for the operations that work on any handle ([`Loop::close`], [`Loop::handles`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandleId {
    pub(crate) loop_id: u32,
    pub(crate) key: u32,
    pub(crate) gen_: u32,
}

impl HandleId {
    /// The poller token for this handle's fd: generation in the high half, key in the low.
    pub(crate) fn token(self) -> u64 {
        (u64::from(self.gen_) << 32) | u64::from(self.key)
    }
}

impl fmt::Debug for HandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}@loop{}", self.key, self.gen_, self.loop_id)
    }
}

/// What kind of handle an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandleKind {
    /// A [`Timer`](crate::Timer).
    Timer,
    /// An [`Idle`](crate::Idle) handle.
    Idle,
    /// A [`Prepare`](crate::Prepare) handle.
    Prepare,
    /// A [`Check`](crate::Check) handle.
    Check,
    /// An [`Async`](crate::Async) handle (woken by a [`Waker`](crate::Waker)).
    Async,
    /// A [`Channel`](crate::Channel).
    Channel,
    /// A [`Signal`](crate::Signal) handle.
    Signal,
    /// A [`Pipe`](crate::Pipe).
    Pipe,
    /// A [`Tty`](crate::Tty).
    Tty,
    /// A [`Process`](crate::Process).
    Process,
    /// An [`FdWatch`](crate::FdWatch).
    FdWatch,
}

impl HandleKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            HandleKind::Timer => "timer",
            HandleKind::Idle => "idle handle",
            HandleKind::Prepare => "prepare handle",
            HandleKind::Check => "check handle",
            HandleKind::Async => "async handle",
            HandleKind::Channel => "channel",
            HandleKind::Signal => "signal handle",
            HandleKind::Pipe => "pipe",
            HandleKind::Tty => "tty",
            HandleKind::Process => "process",
            HandleKind::FdWatch => "watch",
        }
    }
}

/// One line of [`Loop::handles`]: a live handle and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleInfo {
    /// The handle.
    pub id: HandleId,
    /// What it is.
    pub kind: HandleKind,
    /// Whether it is active (started, reading, writing, running).
    pub active: bool,
    /// Whether it keeps [`RunMode::Default`](crate::RunMode::Default) running while active.
    /// (A stream with writes queued keeps it running even when this is false.)
    pub has_ref: bool,
    /// Whether it is closing: its close callback has not run yet.
    pub closing: bool,
}

bitflags! {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Flags: u8 {
        const ACTIVE = 1;
        const REF = 2;
        const CLOSING = 4;
        /// The loop's own handle (the SIGCHLD watcher, a tty's resize watcher): not listed by
        /// `Loop::handles`.
        const INTERNAL = 8;
        /// A stream with writes queued or a shutdown waiting: while active, it keeps the loop
        /// alive even unreferenced, as libuv's write requests do, so that nothing queued is
        /// dropped by a loop that ends.
        const WRITING = 16;
    }
}

impl Flags {
    /// Whether a handle with these flags keeps `run(Default)` going.
    #[inline]
    pub(crate) fn keeps_alive(self) -> bool {
        self.contains(Flags::ACTIVE) && self.intersects(Flags::REF | Flags::WRITING)
    }
}

pub(crate) type CloseCb = Box<dyn FnOnce(&mut Loop)>;

/// Where a handle lives: its generation, flags, close callback and kind-specific state.
pub(crate) struct Slot {
    pub(crate) gen_: u32,
    pub(crate) flags: Flags,
    /// What `kind` holds, kept beside it so that id checks need not look inside.
    pub(crate) tag: HandleKind,
    pub(crate) kind: Kind,
}

/// The kind-specific state of a handle. Large states are boxed to keep slots small.
pub(crate) enum Kind {
    Timer(crate::timer::TimerState),
    Hook(crate::loop_watcher::HookState),
    Async(crate::async_handle::AsyncState),
    Channel(crate::channel::ChannelState),
    Signal(crate::signal::SignalState),
    Stream(Box<crate::stream::Stream>),
    Process(crate::process::ProcessState),
    FdWatch(Box<crate::fd_watch::WatchState>),
    /// A slot whose generation ran out: kept occupied so that its key is never reused.
    Retired,
}

impl Slot {
    /// The slot a key keeps once its generation ran out: occupied for good, matching no id
    /// (ids have a generation of at least 1), listed nowhere, stopped by nothing.
    pub(crate) fn retired() -> Slot {
        Slot { gen_: 0, flags: Flags::CLOSING | Flags::INTERNAL, tag: HandleKind::Timer, kind: Kind::Retired }
    }
}

impl Kind {
    /// The fd and registration of a handle that has one (a stream, an fd watch).
    #[inline]
    pub(crate) fn io_mut(&mut self) -> Option<&mut crate::io::Io> {
        match self {
            Kind::Stream(s) => Some(&mut s.io),
            Kind::FdWatch(w) => Some(&mut w.io),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn handle_kind(&self) -> HandleKind {
        match self {
            Kind::Timer(_) => HandleKind::Timer,
            Kind::Hook(h) => h.phase.kind(),
            Kind::Async(_) => HandleKind::Async,
            Kind::Channel(_) => HandleKind::Channel,
            Kind::Signal(_) => HandleKind::Signal,
            Kind::Stream(s) => s.kind,
            Kind::Process(_) => HandleKind::Process,
            Kind::FdWatch(_) => HandleKind::FdWatch,
            // Never asked: a retired slot is made in place, not inserted, and matches no id.
            Kind::Retired => HandleKind::Timer,
        }
    }
}

pub(crate) fn stale_error(kind: HandleKind) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("stale {} id: the handle was closed", kind.name()))
}

/// Generates the typed id `$name` for handles of kind `$kind`, with the operations every
/// handle has.
macro_rules! typed_handle {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
        pub struct $name(pub(crate) $crate::handle::HandleId);

        impl $name {
            /// The untyped id, for [`Loop::handles`](crate::Loop::handles) and logs.
            pub fn id(self) -> $crate::handle::HandleId {
                self.0
            }

            /// Stops the handle now and releases it in the loop's close phase, which runs
            /// later in this iteration or in the next one, never inside this call. After that
            /// the id is dead: every operation on it returns an error.
            pub fn close(self, lp: &mut $crate::Loop) -> std::io::Result<()> {
                lp.close_handle(self.0, $kind, None)
            }

            /// Like [`close`](Self::close), and runs `cb` from the close phase once the handle
            /// is released.
            pub fn close_with(
                self,
                lp: &mut $crate::Loop,
                cb: impl FnOnce(&mut $crate::Loop) + 'static,
            ) -> std::io::Result<()> {
                lp.close_handle(self.0, $kind, Some(Box::new(cb)))
            }

            /// Sets whether this handle, while active, keeps
            /// [`RunMode::Default`](crate::RunMode::Default) running (libuv's `uv_ref` and
            /// `uv_unref`). Handles start referenced. A stream with writes queued (or a
            /// shutdown waiting) keeps it running until they are done, even unreferenced, as
            /// libuv's write requests do: nothing queued is lost to a loop that ends.
            ///
            /// On a closing handle it does nothing (a closed [`Process`](crate::Process)'s
            /// child keeps the loop running or not as its handle's ref said at the close:
            /// unreference it first).
            pub fn set_ref(self, lp: &mut $crate::Loop, referenced: bool) -> std::io::Result<()> {
                lp.set_handle_ref(self.0, $kind, referenced)
            }

            /// Whether this handle is referenced (see [`set_ref`](Self::set_ref)).
            pub fn has_ref(self, lp: &$crate::Loop) -> std::io::Result<bool> {
                Ok(lp.handle_flags(self.0, $kind)?.contains($crate::handle::Flags::REF))
            }

            /// Whether this handle is active: started, reading, writing or running.
            pub fn is_active(self, lp: &$crate::Loop) -> std::io::Result<bool> {
                Ok(lp.handle_flags(self.0, $kind)?.contains($crate::handle::Flags::ACTIVE))
            }

            /// Whether [`close`](Self::close) was called and the close phase has not run yet.
            pub fn is_closing(self, lp: &$crate::Loop) -> std::io::Result<bool> {
                Ok(lp.handle_flags(self.0, $kind)?.contains($crate::handle::Flags::CLOSING))
            }
        }

        impl From<$name> for $crate::handle::HandleId {
            fn from(h: $name) -> $crate::handle::HandleId {
                h.0
            }
        }
    };
}
pub(crate) use typed_handle;

/// A map by slot key. The keys are the loop's own small numbers, so a multiplication
/// hashes them: SipHash, std's default, guards against keys an attacker picks, and cost
/// some hundred instructions per lookup on paths that every captured child takes.
pub(crate) type KeyMap<V> = std::collections::HashMap<u32, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// The hasher of [`KeyMap`]: the key times an odd constant. The table takes a bucket from
/// the product's low bits, a one-to-one map of the key's low bits, and a tag from its well
/// mixed high bits: dense keys, as slab keys are, spread evenly (keys that differed only
/// in their high bits would share buckets).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u32` keys; correct for any others all the same.
        for &b in bytes {
            self.write_u32(u32::from(b) ^ (self.0 as u32).rotate_left(8));
        }
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}
