//! The loop's side of a spawn: preparing the fds, starting the child, and entering it in
//! the table.

use super::*;

/// A pipe made for a spawn: the loop's end and where it goes in the `Child`.
struct NewPipe {
    target: RawFd,
    ours: OwnedFd,
    we_read: bool,
}

/// Everything a spawn prepared on the parent side that must live until the child started.
#[derive(Default)]
struct Prepared {
    fds: Vec<FdMapping>,
    pipes: Vec<NewPipe>,
    /// The child's ends of new pipes, and /dev/null: closed in the parent after the spawn.
    child_ends: Vec<OwnedFd>,
    /// Handles whose fds move to the child.
    moved: Vec<Moved>,
}

/// A handle whose fd moves to a child: (id, kind, was its description nonblocking).
pub(super) type Moved = (HandleId, HandleKind, bool);

/// What a pipeline (or `output`) sets for one child on top of its command; the default is
/// a lone command's.
#[derive(Default)]
pub(super) struct Wiring<'a> {
    /// (target, parent fd) pairs that take precedence over the command's own entries for
    /// those targets.
    pub(super) links: &'a [(RawFd, RawFd)],
    /// Where handles moved to the child wait, for the caller to close or hand back; without
    /// it they close once the child started.
    pub(super) hold_moved: Option<&'a mut Vec<Moved>>,
    /// The process group to join (0: a new one), over the command's own setting.
    pub(super) process_group: Option<i32>,
    /// Handles that the job's other children take ([`Stdio::Handle`]), which close once
    /// the job has started, as this child's own do.
    pub(super) others_moving: &'a [HandleId],
    /// The terminal to take for the child's group when its command names none: a job's,
    /// from a stage before it that was to lead the group and could not start.
    pub(super) foreground: Option<HandleId>,
}

impl Loop {
    /// Spawns `cmd` as `wiring` adjusts it.
    pub(super) fn spawn_command(
        &mut self,
        cmd: &Command,
        wiring: Wiring<'_>,
        on_exit: ExitCb,
    ) -> io::Result<Child> {
        let Wiring { links, hold_moved, process_group, others_moving, foreground } = wiring;
        let foreground = cmd.foreground.or(foreground);
        let process_group = process_group.or(cmd.process_group);
        let name = cmd.check_input()?;
        cmd.check_group_kill(process_group)?;
        if self.is_poisoned() {
            // A child whose exit no `run` would report.
            return Err(io::Error::other(format!("spawn `{}`: {}", cmd.name(), crate::event_loop::POISONED)));
        }
        if ORPHANS_LEFT.load(Ordering::Relaxed) != 0 {
            reap_orphans();
        }
        let resolved;
        let child_path;
        let program = if name.to_bytes().contains(&b'/') {
            let relative = name.to_bytes().first() != Some(&b'/');
            if relative && cmd.cwd.is_some() {
                let here = std::env::current_dir().map_err(|e| {
                    context(e, format!("spawn `{}`: the parent's working directory", cmd.name()))
                })?;
                let full = here.join(OsStr::from_bytes(name.to_bytes()));
                resolved = CString::new(full.into_os_string().into_vec()).map_err(|_| {
                    invalid(format!("spawn `{}`: the parent's working directory contains a NUL", cmd.name()))
                })?;
                spawn::Program::Path(&resolved)
            } else {
                spawn::Program::Path(name)
            }
        } else {
            child_path = cmd.child_path();
            spawn::Program::Search { name, path: child_path.as_deref() }
        };
        let mut prep = Prepared::default();
        // With no fds given (the usual), it would find nothing to do; its inlined loops cost
        // the spawn some 15 instructions all the same.
        let prepared = if cmd.stdio.is_empty() && links.is_empty() {
            Ok(())
        } else {
            self.prepare_fds(cmd, links, others_moving, &mut prep)
        };
        if let Err(e) = prepared {
            self.restore_moved(&prep.moved);
            return Err(context(e, format!("spawn `{}`", cmd.name())));
        }
        let env = if cmd.env.is_some() { cmd.env_block() } else { None };
        if let Some(tty) = foreground {
            // Before the child has the terminal: from the background, no restore is made.
            self.tty_restore_handed_for(tty);
        }
        let foreground_fd = match foreground {
            None => None,
            Some(tty) => match self.foreground_fd(tty, process_group) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    self.restore_moved(&prep.moved);
                    return Err(context(e, format!("spawn `{}`: foreground", cmd.name())));
                }
            },
        };
        let sigchld_before = self.sigchld_expected();
        let req = spawn::Request {
            program,
            argv0: cmd.arg0.as_deref().unwrap_or(name),
            args: &cmd.args,
            env: env.as_deref(),
            cwd: cmd.cwd.as_ref().map(|(_, c)| c.as_c_str()),
            uid: cmd.uid,
            gid: cmd.gid,
            groups: cmd.groups.as_deref(),
            process_group,
            setsid: cmd.setsid,
            controlling_terminal: cmd.controlling_terminal,
            ignored_signals: cmd.ignored_signals,
            parent_death_signal: cmd.parent_death_signal,
            fds: &prep.fds,
            via: self.options.spawn_via,
            want_pidfd: cfg!(target_os = "linux") && !sigchld_before,
            foreground: foreground_fd,
        };
        // A loop that reaps through SIGCHLD watches it before the child exists.
        if sigchld_before {
            if let Err(e) = self.sigchld_watch() {
                self.restore_moved(&prep.moved);
                return Err(context(e, format!("spawn `{}`: watching SIGCHLD", cmd.name())));
            }
        }
        let spawned = match spawn::spawn(&req) {
            Ok(s) => s,
            Err(e) => {
                // (The child, if it ran, is reaped: one that took the terminal left it to a
                // group with no member.)
                self.take_terminal_back(foreground, None);
                self.restore_moved(&prep.moved);
                return Err(cmd.spawn_error(e, &prep.fds, process_group));
            }
        };
        log::debug!(
            "loop {}: spawned `{}` as pid {} ({:?})",
            self.id,
            cmd.name(),
            spawned.pid,
            spawned.method
        );
        // Taken apart: each part's drop is then inline, where those emptied or plain are
        // seen to need none (the drop of the whole, a call, looks at each).
        let Prepared { fds: _, pipes, child_ends, moved } = prep;
        drop(child_ends);
        let pid = spawned.pid;
        let pidfd = spawned.pidfd;
        let (group, leads_group) = match (cmd.setsid, process_group) {
            (true, _) | (false, Some(0)) => (pid, true),
            (false, Some(g)) => (g, false),
            (false, None) => (0, false),
        };
        let watched =
            self.process_insert(pid, group, leads_group, cmd.on_drop, on_exit, sigchld_before, pidfd);
        let id = match watched {
            Ok(id) if cmd.record_usage => self.child_record_usage(id),
            Ok(id) => id,
            Err(e) => {
                // Nothing would ever hear of its exit (no pidfd, and no SIGCHLD watcher: the
                // fd limit, say): end it and reap it now, SIGKILL taking effect at once,
                // rather than leave a child that nobody reaps.
                let _ = if leads_group {
                    sys::kill_group(pid, libc::SIGKILL)
                } else {
                    sys::kill(pid, libc::SIGKILL)
                };
                let _ = sys::wait(pid);
                self.take_terminal_back(foreground, None);
                self.restore_moved(&moved);
                return Err(context(
                    e,
                    format!("spawn `{}`: cannot watch the child for its exit", cmd.name()),
                ));
            }
        };
        let mut child =
            Child { process: Process(id), stdin: None, stdout: None, stderr: None, pipes: Vec::new() };
        for p in pipes {
            let made = fd::set_fresh_pipe_nonblocking(p.ours.as_fd())
                .and_then(|()| Pipe::from_private(self, p.ours, p.we_read, !p.we_read));
            let pipe = match made {
                Ok(pipe) => pipe,
                Err(e) => {
                    // The child runs, but the caller cannot have what it asked for: undo.
                    self.abandon_child(&child, false);
                    self.take_terminal_back(foreground, leads_group.then_some(pid));
                    self.restore_moved(&moved);
                    return Err(context(e, format!("spawn `{}`: opening a pipe to the child", cmd.name())));
                }
            };
            match p.target {
                0 => child.stdin = Some(pipe),
                1 => child.stdout = Some(pipe),
                2 => child.stderr = Some(pipe),
                n => child.pipes.push((n, pipe)),
            }
        }
        match hold_moved {
            Some(held) => held.extend_from_slice(&moved),
            None => self.close_moved(&moved),
        }
        if let Some((after, grace)) = cmd.timeout {
            if let Err(e) = self.process_start_timeout(id, after, grace) {
                log::warn!("loop {}: a child's timeout could not start: {e}", self.id);
            }
        }
        Ok(child)
    }

    /// `Command::timeout` and `Process::terminate_after` for process `id`, open and not
    /// reaped: a child still running `after` from now is ended, with its group if it leads
    /// one. Moves an earlier such deadline (its timer, which the reap and the handle's close
    /// cancel).
    #[cold]
    #[inline(never)]
    pub(super) fn process_start_timeout(
        &mut self,
        id: HandleId,
        after: Duration,
        grace: Duration,
    ) -> io::Result<()> {
        // From now, not from the iteration's cached time, which a slow callback (one that
        // starts many children) may have left far behind.
        self.update_time();
        if let Some(deadline) = self.children.extras.get_mut(&id.key).and_then(|x| x.timeout.as_mut()) {
            (deadline.after, deadline.grace) = (after, grace);
            let timer = deadline.timer;
            return timer.restart(self, after);
        }
        let timer = crate::Timer::new(self);
        let started = timer.start(self, after, Duration::ZERO, move |lp, t| {
            let _ = t.close(lp);
            lp.process_deadline_reached(id);
        });
        if let Err(e) = started {
            let _ = timer.close(self);
            return Err(e);
        }
        // The child keeps the loop going, not its deadline.
        let _ = timer.set_ref(self, false);
        self.mark_internal(timer.id());
        self.children.extras.entry(id.key).or_default().timeout = Some(Deadline { timer, after, grace });
        Ok(())
    }

    /// The deadline of process `id` came. (Its handle is open: the close cancels the timer.)
    fn process_deadline_reached(&mut self, id: HandleId) {
        let deadline = self.children.extras.get_mut(&id.key).and_then(|x| x.timeout.take());
        let Some(Deadline { after, grace, .. }) = deadline else { return };
        let p = Process(id);
        // An exit in this iteration, not handled yet, was in time.
        if !p.has_exited(self).is_ok_and(|exited| !exited) {
            return;
        }
        let leads_group = self.process_ref(id).is_ok_and(|st| st.leads_group);
        let mut ended = if leads_group { p.terminate_group(self, grace) } else { p.terminate(self, grace) };
        if leads_group && ended.as_ref().is_err_and(crate::is_no_such_process) {
            // The group is empty: its leader left it (a `setsid` of its own). End it alone.
            ended = p.terminate(self, grace);
        }
        match ended {
            Ok(()) => self.children.extras.entry(id.key).or_default().timed_out = Some(after),
            // (A child it may not signal: one that switched its ids.)
            Err(e) => log::warn!("loop {}: ending a child at its deadline: {e}", self.id),
        }
        // `terminate`'s SIGKILL goes with the handle: closed in the grace period, it ends
        // the child at once instead. (A group's escalation outlives the handle.)
        if let Some(Kind::Process(st)) = self.live_slot_mut(id).map(|s| &mut s.kind) {
            if st.on_drop == OnDrop::Nothing {
                st.on_drop = OnDrop::KillChild;
            }
        }
    }

    /// The time the deadline that ended process `id`'s child had given it, if one did.
    pub(super) fn process_timed_out(&self, id: HandleId) -> Option<Duration> {
        self.children.extras.get(&id.key).and_then(|x| x.timed_out)
    }

    /// A process handle for child `pid`, just spawned, watched for its exit. An error means
    /// nothing would hear of the exit, and no handle was made.
    // Inline: it is the spawn's, and a call with these many arguments costs it some 15
    // instructions.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn process_insert(
        &mut self,
        pid: Pid,
        group: Pid,
        leads_group: bool,
        on_drop: OnDrop,
        on_exit: ExitCb,
        sigchld_running: bool,
        pidfd: Option<OwnedFd>,
    ) -> io::Result<HandleId> {
        let id = self.insert(Kind::Process(ProcessState {
            on_exit: Some(on_exit),
            pid,
            child_key: NO_CHILD,
            group,
            #[cfg(target_os = "linux")]
            pidfd: None,
            status: 0,
            reaped: false,
            status_known: false,
            leads_group,
            on_drop,
        }));
        let key = match self.child_watch(id, pid, sigchld_running, pidfd) {
            Ok(key) => key,
            Err(e) => {
                drop(self.slot_release(id));
                return Err(e);
            }
        };
        self.update_then_set_active(id, true, |kind| {
            if let Kind::Process(st) = kind {
                st.child_key = key as u32;
            }
            Some(())
        });
        Ok(id)
    }

    /// After a failed spawn whose child (or a pipeline's stage) may have taken the terminal
    /// (`Command::foreground`): the caller's group takes it back from `dying` (the group of
    /// children killed but not reaped yet), or from a group with no member left, rather
    /// than leave it to a dead group. A live group that had it stays in front.
    pub(super) fn take_terminal_back(&self, foreground: Option<HandleId>, dying: Option<i32>) {
        let Some(tty) = foreground.map(crate::Tty) else { return };
        let own = sys::process_group();
        let Ok(front) = tty.foreground_group(self) else { return };
        if front != own && (Some(front) == dying || !evloop_platform::termios::group_alive(front)) {
            if let Err(e) = tty.set_foreground_group(self, own) {
                log::warn!("loop {}: taking the terminal back after a failed spawn: {e}", self.id);
            }
        }
    }

    /// The fd of tty handle `tty`, for a child that takes its terminal for its own group.
    fn foreground_fd(&self, tty: HandleId, process_group: Option<i32>) -> io::Result<RawFd> {
        if process_group.is_none() {
            return Err(invalid(
                "the child needs a process group of its own (Command::process_group) to take the terminal for",
            ));
        }
        let fd = self.open_stream_ref(tty, HandleKind::Tty)?.io.fd()?;
        // From the background, the child would take the terminal from the group in front (a
        // shell's), the blocked SIGTTOU letting it. (A pipeline's later stage joins the
        // group that took it. Where the group cannot be asked, the child's own call fails.)
        if let Ok(front) = evloop_platform::termios::foreground_group(fd) {
            let own = sys::process_group();
            let joined = process_group.filter(|&g| g > 0);
            if front > 0
                && front != own
                && Some(front) != joined
                && evloop_platform::termios::group_alive(front)
            {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "this process runs in the background: process group {front} has the terminal, not \
                         {own}, this process's, and the child would take it from that group (a child in \
                         this process's group, without `foreground`, stops and continues with it, as \
                         git's pager does)"
                    ),
                ));
            }
        }
        Ok(fd.as_raw_fd())
    }

    /// Builds the fd mappings: new pipes, /dev/null, moved handles.
    fn prepare_fds(
        &mut self,
        cmd: &Command,
        links: &[(RawFd, RawFd)],
        others_moving: &[HandleId],
        prep: &mut Prepared,
    ) -> io::Result<()> {
        let mut null: Option<RawFd> = None;
        for (target, stdio) in &cmd.stdio {
            let target = *target;
            if links.iter().any(|&(t, _)| t == target) {
                continue;
            }
            let source = match stdio {
                // After every other fd, below.
                Stdio::SameAs(_) => continue,
                Stdio::Inherit if target < 3 => continue,
                Stdio::Inherit => Source::Keep,
                Stdio::Close => Source::Close,
                Stdio::Null => match null {
                    Some(fd) => Source::Fd(fd),
                    None => {
                        let dev = fd::open(c"/dev/null", fd::Access::ReadWrite, false)?;
                        let raw = dev.as_raw_fd();
                        prep.child_ends.push(dev);
                        null = Some(raw);
                        Source::Fd(raw)
                    }
                },
                Stdio::Pipe | Stdio::PipeIn => {
                    let child_reads = matches!(stdio, Stdio::PipeIn) || target == 0;
                    let (r, w) = fd::pipe()?;
                    let (theirs, ours) = if child_reads { (r, w) } else { (w, r) };
                    let raw = theirs.as_raw_fd();
                    prep.child_ends.push(theirs);
                    prep.pipes.push(NewPipe { target, ours, we_read: !child_reads });
                    Source::Fd(raw)
                }
                Stdio::Fd(owned) => Source::Fd(owned.as_raw_fd()),
                Stdio::InheritFrom(n) => Source::Fd(*n),
                Stdio::Handle(hid) => {
                    let hid = *hid;
                    let kind = self.handle_kind(hid).map_err(|e| {
                        let hint = moved_hint(&e);
                        context(e, format!("child fd {target}{hint}"))
                    })?;
                    if !matches!(kind, HandleKind::Pipe | HandleKind::Tty) {
                        return Err(invalid(format!(
                            "child fd {target}: a {} cannot be a child's fd (only a pipe or a tty)",
                            kind.name()
                        )));
                    }
                    // A closing handle (one an earlier spawn moved to its child, say) is
                    // refused with its name, not with the EBADF of its missing fd.
                    let moved = self.stream_mut(hid, kind).and_then(|stream| {
                        // A child reads its stdin and writes its stdout and stderr: a pipe end
                        // that goes the other way can only be a mistake (the child would get
                        // EBADF), so refuse it. (A tty is left alone: a child may only ioctl
                        // it.)
                        let (wrong_way, needs) = match target {
                            _ if kind != HandleKind::Pipe => (false, ""),
                            0 => (!stream.readable, "reading"),
                            1 | 2 => (!stream.writable, "writing"),
                            _ => (false, ""),
                        };
                        if wrong_way {
                            return Err(invalid(format!(
                                "the handle is not open for {needs}, which the child's {} needs",
                                ["stdin", "stdout", "stderr"][target as usize]
                            )));
                        }
                        Ok(stream.io.fd()?.as_raw_fd())
                    });
                    let raw = moved.map_err(|e| {
                        let hint = moved_hint(&e);
                        context(e, format!("child fd {target} from the {} {hid:?}{hint}", kind.name()))
                    })?;
                    // Made blocking for the child below, once every moved handle is known.
                    prep.moved.push((hid, kind, false));
                    Source::Fd(raw)
                }
            };
            prep.fds.push(FdMapping { target, source });
        }
        for &(target, source) in links {
            prep.fds.push(FdMapping { target, source: Source::Fd(source) });
        }
        for (target, stdio) in &cmd.stdio {
            if let Stdio::SameAs(n) = *stdio {
                if !links.iter().any(|&(t, _)| t == *target) {
                    let source = same_as_source(cmd, &prep.fds, *target, n)?;
                    prep.fds.push(FdMapping { target: *target, source });
                }
            }
        }
        if !prep.moved.is_empty() {
            self.block_moved_for_child(others_moving, &mut prep.moved)?;
        }
        Ok(())
    }

    /// The children get moved handles' fds blocking, unless that takes `O_NONBLOCK` from
    /// another open stream of this loop (not moved: those close after the spawn) that relies
    /// on it: that stream's reads and writes would then block the loop.
    #[cold]
    #[inline(never)]
    fn block_moved_for_child(&mut self, others_moving: &[HandleId], moved: &mut [Moved]) -> io::Result<()> {
        let moving: Vec<HandleId> = moved.iter().map(|m| m.0).chain(others_moving.iter().copied()).collect();
        for m in moved.iter_mut() {
            let (hid, kind, _) = *m;
            let cleared = self.stream_ref(hid, kind).and_then(|s| {
                let fd = s.io.fd()?;
                let was = fd::set_nonblocking(fd, false)?;
                if was && s.shared && self.took_nonblocking(fd, &moving) {
                    log::debug!(
                        "loop {}: {hid:?} goes to the child with O_NONBLOCK: another handle on its description needs it",
                        self.id
                    );
                    fd::set_nonblocking(fd, true)?;
                    return Ok(false);
                }
                Ok(was)
            });
            m.2 = cleared.map_err(|e| context(e, format!("the {} {hid:?} for a child", kind.name())))?;
        }
        Ok(())
    }

    /// Whether clearing `O_NONBLOCK` through `fd` just took it from an open stream that
    /// relies on it (and so had it), other than those `moving`: that stream is on the same
    /// open file description. Only streams on the same file, open for the same access, are
    /// looked at; whether it is the same description, only the flag can tell everywhere.
    #[cold]
    fn took_nonblocking(&self, fd: BorrowedFd<'_>, moving: &[HandleId]) -> bool {
        self.slots.iter().any(|(key, slot)| {
            !moving.iter().any(|m| m.key as usize == key)
                && !slot.flags.contains(Flags::CLOSING)
                && matches!(&slot.kind, Kind::Stream(s)
                if s.relies_on_nonblocking()
                    && s.io.fd().is_ok_and(|other| {
                        fd::may_share_description(fd, other)
                            && fd::status_flags(other).is_ok_and(|f| !f.nonblocking)
                    }))
        })
    }

    /// Closes handles whose fds moved to children that started.
    pub(super) fn close_moved(&mut self, moved: &[Moved]) {
        for &(hid, kind, _) in moved {
            // (A handle a pipeline gave to several stages is closing after the first.)
            let _ = self.close_handle(hid, kind, None);
        }
    }

    /// A failed spawn hands moved handles back as they were.
    pub(super) fn restore_moved(&mut self, moved: &[Moved]) {
        for &(hid, kind, was_nonblocking) in moved {
            if was_nonblocking {
                if let Ok(fd) = self.stream_ref(hid, kind).and_then(|s| s.io.fd()) {
                    if let Err(e) = fd::set_nonblocking(fd, true) {
                        log::warn!("loop {}: {hid:?} stays blocking after a failed spawn: {e}", self.id);
                    }
                }
            }
        }
    }

    /// Gives up on a started child: SIGKILL, handle and pipes closed; the loop reaps it in
    /// the background.
    /// With `group`, what it started in its group goes too (a pipeline's own group).
    pub(super) fn abandon_child(&mut self, child: &Child, group: bool) {
        for p in child.all_pipes() {
            let _ = p.close(self);
        }
        if let Some(Kind::Process(st)) = self.live_slot_mut(child.process.0).map(|s| &mut s.kind) {
            if group {
                st.on_drop = OnDrop::KillGroup;
            } else if st.on_drop == OnDrop::Nothing {
                st.on_drop = OnDrop::KillChild;
            }
        }
        // Closing sends the SIGKILL (at once, even into a group whose `terminate_group`
        // grace period runs); the loop reaps the child when it dies.
        self.children.abandoning = true;
        let _ = child.process.close(self);
        self.children.abandoning = false;
    }
}
