use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;

use evloop::{Command, ExitStatus, Loop, Pipe, Pipeline, Process, ReadEvent, RunMode, Stdio, os_error_code};
use evloop_platform::libc;

use crate::pipe::{Sum, collect, pattern};
use crate::util::{builder, spawn_recording};

use super::*;

/// The fd numbers process `pid` has open.
fn fds_of(pid: u32) -> BTreeSet<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect()
}

case!(
    fn stdin_stdout_stderr_pipes_together() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut cmd = sh("cat; echo to-stderr >&2; exit 3");
            cmd.stdin(Stdio::Pipe).stdout(Stdio::Pipe).stderr(Stdio::Pipe);
            let (child, status) = spawn_recording(&mut lp, &cmd);
            let out = collect(&mut lp, child.stdout.unwrap());
            let err = collect(&mut lp, child.stderr.unwrap());
            let stdin = child.stdin.unwrap();
            stdin.write(&mut lp, b"hello ", |_, r| r.unwrap()).unwrap();
            stdin.write(&mut lp, b"child", |_, r| r.unwrap()).unwrap();
            stdin
                .shutdown(&mut lp, move |lp, r| {
                    r.unwrap();
                    stdin.close(lp).unwrap();
                })
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            assert_eq!(out.borrow().data, b"hello child", "{name}");
            assert_eq!(err.borrow().data, b"to-stderr\n", "{name}");
            assert_eq!(status.get(), Some(ExitStatus::Exited(3)), "{name}");
        }
    }
);

case!(
    fn pipes_one_at_a_time() {
        let mut lp = builder().build().unwrap();
        // Only stdout.
        let mut cmd = Command::new("echo");
        cmd.arg("only stdout").stdin(Stdio::Null).stderr(Stdio::Null);
        let o = output_of(&mut lp, &mut cmd);
        assert_eq!(o.stdout, b"only stdout\n");
        // Only stderr (stdout to /dev/null).
        let mut cmd = sh("echo gone; echo kept >&2");
        cmd.stdout(Stdio::Null).stderr(Stdio::Pipe);
        let got = Rc::new(RefCell::new(None));
        let g = got.clone();
        let child = cmd.spawn(&mut lp, move |lp, p, _| p.close(lp).unwrap()).unwrap();
        assert!(child.stdout.is_none() && child.stdin.is_none());
        let err = collect(&mut lp, child.stderr.unwrap());
        lp.run(RunMode::Default).unwrap();
        *g.borrow_mut() = Some(err.borrow().data.clone());
        assert_eq!(got.borrow().as_deref(), Some(&b"kept\n"[..]));
        // Only stdin: the child reads what we write and answers with its exit code.
        let mut cmd = sh("read line; test \"$line\" = ping");
        cmd.stdin(Stdio::Pipe);
        let (child, st) = spawn_recording(&mut lp, &cmd);
        let stdin = child.stdin.unwrap();
        stdin
            .write(&mut lp, b"ping\n", move |lp, r| {
                r.unwrap();
                stdin.close(lp).unwrap();
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(st.get(), Some(ExitStatus::Exited(0)));
    }
);

case!(
    secs = 120,
    /// 100 MiB through `cat`: written and read at the same time by one thread, no deadlock.
    fn issue_6_hundred_mebibytes_through_cat() {
        const TOTAL: usize = 100 << 20;
        const BLOCK: usize = 1 << 20;
        let mut lp = builder().build().unwrap();
        let mut cmd = Command::new("cat");
        cmd.stdin(Stdio::Pipe).stdout(Stdio::Pipe);
        let (child, status) = spawn_recording(&mut lp, &cmd);
        let mut sent = Sum::new();
        let stdin = child.stdin.unwrap();
        for i in 0..(TOTAL / BLOCK) as u64 {
            let block = pattern(i, BLOCK);
            sent.update(&block);
            // All of it queued at once: the loop must read while it writes.
            stdin.write_vec(&mut lp, block, |_, r| r.unwrap()).unwrap();
        }
        assert!(stdin.write_queue_size(&lp).unwrap() > TOTAL / 2);
        stdin
            .shutdown(&mut lp, move |lp, r| {
                r.unwrap();
                stdin.close(lp).unwrap();
            })
            .unwrap();
        let got = Rc::new(RefCell::new(Sum::new()));
        let g = got.clone();
        child
            .stdout
            .unwrap()
            .read_start(&mut lp, move |lp, p, ev| match ev {
                ReadEvent::Data(d) => g.borrow_mut().update(d),
                ReadEvent::Eof => p.close(lp).unwrap(),
                ReadEvent::Error(e) => panic!("{e}"),
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(*got.borrow(), sent);
        assert_eq!(status.get(), Some(ExitStatus::Exited(0)));
    }
);

case!(
    fn issue_6_a_child_that_does_not_read_its_stdin_gives_epipe() {
        let mut lp = builder().build().unwrap();
        let mut cmd = Command::new("true");
        cmd.stdin(Stdio::Pipe);
        let result = Rc::new(RefCell::new(None));
        let child = cmd
            .spawn(&mut lp, {
                let result = result.clone();
                move |lp, p, st| {
                    assert!(st.unwrap().success());
                    p.close(lp).unwrap();
                    let _ = (lp, &result);
                }
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        // The child is gone, and so is the read end: 1 MiB cannot go anywhere.
        let stdin = child.stdin.unwrap();
        let r = result.clone();
        stdin
            .write_vec(&mut lp, vec![7u8; 1 << 20], move |lp, res| {
                *r.borrow_mut() = Some(res);
                stdin.close(lp).unwrap();
            })
            .unwrap();
        lp.run(RunMode::Default).unwrap();
        let res = result.borrow_mut().take().expect("the write callback ran");
        let e = res.expect_err("writing to a reader that exited fails");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(os_error_code(&e), Some(libc::EPIPE));
    }
);

case!(
    /// `Stdio::SameAs`, a shell's `2>&1`: to a new pipe, to the capture of `output` (merged,
    /// in order), along a chain, across a pipeline (`|&`); and its bad uses refused.
    fn stdio_same_as_is_a_shells_dup() {
        let script = "echo out; echo err >&2; echo three >&3";
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // To a new pipe, with fd 3 following fd 2 to it.
            let mut cmd = sh(script);
            cmd.stdin(Stdio::Null).stdout(Stdio::Pipe).stderr(Stdio::SameAs(1)).fd(3, Stdio::SameAs(2));
            let (child, status) = spawn_recording(&mut lp, &cmd);
            let out = collect(&mut lp, child.stdout.unwrap());
            lp.run(RunMode::Default).unwrap();
            assert!(child.stderr.is_none(), "{name}");
            assert_eq!(String::from_utf8_lossy(&out.borrow().data), "out\nerr\nthree\n", "{name}");
            assert!(status.get().unwrap().success(), "{name}");

            // The capture of `output`: stdout gets both; and `1>&2` the other way.
            for (stdio, merged_into_stdout) in [(Stdio::SameAs(1), true), (Stdio::SameAs(2), false)] {
                let mut cmd = sh("echo out; echo err >&2");
                cmd.fd(if merged_into_stdout { 2 } else { 1 }, stdio);
                let got = Rc::new(RefCell::new(None));
                let g = got.clone();
                cmd.output(&mut lp, move |_, out| *g.borrow_mut() = Some(out.unwrap())).unwrap();
                lp.run(RunMode::Default).unwrap();
                let o = got.borrow_mut().take().unwrap();
                assert!(o.status.success(), "{name}");
                let (both, none) =
                    if merged_into_stdout { (o.stdout, o.stderr) } else { (o.stderr, o.stdout) };
                assert_eq!(both, b"out\nerr\n", "{name}");
                assert!(none.is_empty(), "{name}");
            }

            // `a |& b`: the first stage's stderr into the pipe to the second.
            let mut first = sh("echo out; echo err >&2");
            first.stderr(Stdio::SameAs(1));
            let got = Rc::new(RefCell::new(None));
            let g = got.clone();
            Pipeline::new([first, Command::new("cat")])
                .output(&mut lp, move |_, out| *g.borrow_mut() = Some(out.unwrap().stdout))
                .unwrap();
            lp.run(RunMode::Default).unwrap();
            assert_eq!(got.borrow().as_deref(), Some(&b"out\nerr\n"[..]), "{name}");
        }
        let mut lp = builder().build().unwrap();
        let refused = |cmd: &Command, lp: &mut Loop, why: &str| {
            let e = status_of(lp, cmd).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains(why), "{e}");
        };
        let mut missing = Command::new("true");
        missing.stderr(Stdio::SameAs(5));
        refused(&missing, &mut lp, "which the child does not have");
        let mut closed = Command::new("true");
        closed.stdout(Stdio::Close).stderr(Stdio::SameAs(1));
        refused(&closed, &mut lp, "which the child has closed");
        let mut cycle = Command::new("true");
        cycle.fd(3, Stdio::SameAs(4)).fd(4, Stdio::SameAs(3));
        refused(&cycle, &mut lp, "comes back to itself");
        let mut itself = Command::new("true");
        itself.stderr(Stdio::SameAs(2));
        refused(&itself, &mut lp, "names no other child fd");
    }
);

case!(
    /// Issue 6: a program that closed its fd 0 before making its loop got the loop's epoll
    /// fd at 0, and a child given `stderr(SameAs(0))` or `InheritFrom(0)` got the loop's
    /// epoll fd (spawn audit). evloop's own fds now stay off 0, 1 and 2, and `SameAs` of an
    /// inherited standard stream that the child would not have (closed, or close-on-exec in
    /// the program) is refused, as a shell's `2>&1` of a closed fd 1 fails.
    fn issue_6_no_fd_of_the_loops_takes_a_closed_standard_streams_number() {
        // SAFETY: fd 0 (this test process's /dev/null) is not used by anything else here.
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(0) });
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            assert!(lp.backend_fd().as_raw_fd() >= 3, "{name}: the poller took {:?}", lp.backend_fd());
            let (r, w) = Pipe::pair(&mut lp).unwrap();
            let numbers = [r.fd(&lp).unwrap().as_raw_fd(), w.fd(&lp).unwrap().as_raw_fd()];
            assert!(numbers.iter().all(|&n| n >= 3), "{name}: {numbers:?}");
            assert!(status_of(&mut lp, &Command::new("true")).unwrap().success(), "{name}");
            assert!(!evloop_platform::fd::is_open_raw(0), "{name}: something of the loop's is at fd 0");
            let refused = |cmd: &Command, lp: &mut Loop| status_of(lp, cmd).unwrap_err();
            let e = refused(Command::new("true").stderr(Stdio::SameAs(0)), &mut lp);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name}: {e}");
            assert!(e.to_string().contains("closed or close-on-exec"), "{name}: {e}");
            let e = refused(Command::new("true").stderr(Stdio::InheritFrom(0)), &mut lp);
            assert_eq!(evloop::os_error_code(&e), Some(libc::EBADF), "{name}: {e}");
            // A close-on-exec stdout is not the child's either.
            evloop_platform::fd::set_cloexec(io::stdout().as_fd()).unwrap();
            let e = refused(Command::new("true").stderr(Stdio::SameAs(1)), &mut lp);
            assert!(e.to_string().contains("closed or close-on-exec"), "{name}: {e}");
            nix::fcntl::fcntl(io::stdout(), nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))
                .unwrap();
            r.close(&mut lp).unwrap();
            w.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
        }
    }
);

case!(
    /// `Command::try_clone`: each copy owns its own copy of a `Stdio::Fd`, so the pipe
    /// reaches end of file only once the last command and child are gone, and bad input
    /// travels with the copy.
    fn command_try_clone_copies_fds_and_bad_input() {
        use std::io::Read;
        let mut lp = builder().build().unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        let mut original = sh("echo $N");
        original.stdout(OwnedFd::from(w));
        let mut copy = original.try_clone().unwrap();
        original.env("N", "1");
        copy.env("N", "2");
        assert!(status_of(&mut lp, &original).unwrap().success());
        drop(original);
        assert!(status_of(&mut lp, &copy).unwrap().success());
        drop(copy);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(out, "1\n2\n");

        let mut bad = Command::new("true");
        bad.arg("a\0b");
        let e = status_of(&mut lp, &bad.try_clone().unwrap()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("NUL"), "{e}");
    }
);

case!(
    /// Issue 6: a shell's `<&-` and `2>&-` (`Stdio::Close`): the child's fd is closed, on
    /// every way to start it, whatever the other fds come from (a standard fd's source
    /// moved to another number included).
    fn issue_6_stdio_close_leaves_the_childs_fd_closed() {
        // The shell's `[` is a builtin: /proc/self is the shell.
        let script = "for n in 0 1 2 3 4; do [ -e /proc/self/fd/$n ] && printf $n; done; echo";
        let file = || Stdio::from(File::open("/dev/null").unwrap());
        type Redirect = fn(&mut Command, Stdio);
        let cases: [(&str, Redirect); 4] = [
            ("01", |c, f| {
                c.stdin(f).stderr(Stdio::Close);
            }),
            ("1", |c, _| {
                c.stdin(Stdio::Close).stderr(Stdio::Close);
            }),
            ("123", |c, f| {
                c.stdin(Stdio::Close).fd(3, f).fd(4, Stdio::Close);
            }),
            ("12", |c, f| {
                c.stdin(Stdio::Close).stderr(f);
            }),
        ];
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            for (want, set) in cases {
                let mut cmd = sh(script);
                cmd.stdout(Stdio::Pipe);
                set(&mut cmd, file());
                let (child, status) = spawn_recording(&mut lp, &cmd);
                let out = collect(&mut lp, child.stdout.unwrap());
                lp.run(RunMode::Default).unwrap();
                assert_eq!(String::from_utf8_lossy(&out.borrow().data), format!("{want}\n"), "{name}");
                assert!(status.get().unwrap().success(), "{name}");
            }
        }
    }
);

case!(
    fn a_child_sees_only_the_fds_it_was_given() {
        // A stray fd without close-on-exec in the parent: the child must not get it.
        let stray = nix::unistd::dup(std::io::stdin()).unwrap();
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            for extra in [false, true] {
                let mut cmd = sh("echo ready; read x; exit 0");
                cmd.stdin(Stdio::Pipe).stdout(Stdio::Pipe);
                let file = File::open("/dev/null").unwrap();
                if extra {
                    cmd.fd(3, file);
                }
                let child = cmd
                    .spawn(&mut lp, |lp, p, r| {
                        assert!(r.unwrap().success());
                        p.close(lp).unwrap();
                    })
                    .unwrap();
                let pid = child.process.pid(&lp).unwrap();
                let stdin = child.stdin.unwrap();
                let fds = Rc::new(RefCell::new(BTreeSet::new()));
                let f = fds.clone();
                child
                    .stdout
                    .unwrap()
                    .read_start(&mut lp, move |lp, p, ev| match ev {
                        ReadEvent::Data(d) => {
                            assert_eq!(d, b"ready\n");
                            // The shell now waits in `read`: list its fds, then let it go.
                            *f.borrow_mut() = fds_of(pid);
                            stdin.close(lp).unwrap();
                        }
                        _ => p.close(lp).unwrap(),
                    })
                    .unwrap();
                lp.run(RunMode::Default).unwrap();
                let want: BTreeSet<i32> = if extra { [0, 1, 2, 3].into() } else { [0, 1, 2].into() };
                assert_eq!(*fds.borrow(), want, "{name}, extra fd: {extra}");
            }
        }
        drop(stray);
    }
);

case!(
    /// libuv's "spawn_stdout_and_stderr_to_file_swap": each source is the other's target.
    fn swapped_fds_land_where_asked() {
        use std::os::fd::AsFd;
        let dir = TempDir::new("swap");
        let (a, b) = (dir.0.join("a"), dir.0.join("b"));
        for (name, builder) in flavours() {
            // Files a and b on two single-digit fds (what `sh` redirects), then child fd x is
            // the parent's y and the other way round.
            let fa = File::create(&a).unwrap();
            let fb = File::create(&b).unwrap();
            let x = evloop_platform::fd::dup_cloexec(fa.as_fd(), 7).unwrap();
            let y = evloop_platform::fd::dup_cloexec(fb.as_fd(), x.as_raw_fd() + 1).unwrap();
            let (xn, yn) = (x.as_raw_fd(), y.as_raw_fd());
            assert!(yn <= 9, "{xn} {yn}");
            let mut lp = builder.build().unwrap();
            let mut cmd = sh(&format!("echo to-{xn} >&{xn}; echo to-{yn} >&{yn}"));
            cmd.fd(xn, Stdio::InheritFrom(yn)).fd(yn, Stdio::InheritFrom(xn));
            assert!(status_of(&mut lp, &cmd).unwrap().success(), "{name}");
            drop((x, y, fa, fb, lp));
            // Child fd x was the parent's y (file b), and the other way round.
            assert_eq!(std::fs::read_to_string(&b).unwrap(), format!("to-{xn}\n"), "{name}");
            assert_eq!(std::fs::read_to_string(&a).unwrap(), format!("to-{yn}\n"), "{name}");
        }
    }
);

case!(
    /// A handle given to a child reaches it blocking, but not at the cost of another handle
    /// on the same open file description (stdout and stderr after `2>&1`, shared with the
    /// parent where they cannot be reopened): that one keeps its `O_NONBLOCK`. The flag was
    /// cleared under it, and its next write blocked the loop.
    fn issue_6_a_handle_given_to_a_child_leaves_another_on_its_description_nonblocking() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let nonblocking = |fd| evloop_platform::fd::status_flags(fd).unwrap().nonblocking;
            // Alone on its description: the child gets it blocking.
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            let mut cmd = sh("grep ^flags: /proc/self/fdinfo/1");
            cmd.stdout(tx);
            assert!(status_of(&mut lp, &cmd).unwrap().success(), "{name}");
            let got = collect(&mut lp, rx);
            lp.run(RunMode::Default).unwrap();
            let text = String::from_utf8(got.borrow().data.clone()).unwrap();
            let flags = i32::from_str_radix(text.trim().trim_start_matches("flags:").trim(), 8).unwrap();
            assert_eq!(flags & libc::O_NONBLOCK, 0, "{name}: the child's stdout is blocking ({text:?})");

            // Two handles on one description that was nonblocking already (so not reopened).
            let (r, w) = evloop_platform::fd::pipe().unwrap();
            evloop_platform::fd::set_nonblocking(w.as_fd(), true).unwrap();
            let w2 = w.try_clone().unwrap();
            let given = Pipe::open(&mut lp, w).unwrap();
            let kept = Pipe::open(&mut lp, w2).unwrap();
            let mut cmd = Command::new("true");
            cmd.stdout(given);
            assert!(status_of(&mut lp, &cmd).unwrap().success(), "{name}");
            assert!(nonblocking(kept.fd(&lp).unwrap()), "{name}: the other handle's flag stays");
            // Its write queues what the pipe cannot take, nobody reading yet.
            let result = Rc::new(RefCell::new(None));
            let res = result.clone();
            kept.write(&mut lp, &[0; 1 << 20], move |_, r| *res.borrow_mut() = Some(r.map_err(|e| e.kind())))
                .unwrap();
            assert!(kept.write_queue_size(&lp).unwrap() > 0, "{name}");
            drop(r);
            lp.run(RunMode::Default).unwrap();
            assert_eq!(*result.borrow(), Some(Err(io::ErrorKind::BrokenPipe)), "{name}");
            kept.close(&mut lp).unwrap();
            lp.run(RunMode::Default).unwrap();
        }
    }
);

case!(
    /// A pipe end open the wrong way for a child's stdin, stdout or stderr is refused at
    /// the spawn, naming the fd, and stays the caller's.
    fn a_handle_open_the_wrong_way_for_a_child_stdio_is_refused() {
        let fds = evloop_platform::fd::open_fd_count().unwrap();
        let mut lp = builder().build().unwrap();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        for (target, handle, text) in [
            (1, rx, "child fd 1 from the pipe"),
            (2, rx, "not open for writing, which the child's stderr needs"),
            (0, tx, "not open for reading, which the child's stdin needs"),
        ] {
            let mut cmd = Command::new("true");
            cmd.fd(target, handle);
            let e = cmd.spawn(&mut lp, |_, _, _| unreachable!("nothing started")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains(text), "`{e}` lacks `{text}`");
            assert!(!handle.is_closing(&lp).unwrap(), "the handle stays the caller's");
        }
        // The right way round still works, and an extra fd is not checked.
        let mut cmd = sh("echo right >&3");
        cmd.fd(3, tx);
        cmd.spawn(&mut lp, |lp, p, r| {
            assert!(r.unwrap().success());
            p.close(lp).unwrap();
        })
        .unwrap();
        let got = collect(&mut lp, rx);
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got.borrow().data, b"right\n");
        assert!(lp.handles().is_empty(), "{:?}", lp.handles());
        drop(lp);
        assert_eq!(evloop_platform::fd::open_fd_count().unwrap(), fds);
    }
);

case!(
    fn a_pipe_handle_moves_into_a_child() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            // The child writes into our pipe's write end, which it takes over.
            let mut cmd = Command::new("echo");
            cmd.arg("through a moved handle").stdout(tx);
            let child = cmd.spawn(&mut lp, |lp, p, r| {
                assert!(r.unwrap().success());
                p.close(lp).unwrap();
            });
            let _: Process = child.unwrap().process;
            assert!(tx.is_closing(&lp).unwrap(), "{name}: the moved handle closes");
            let got = collect(&mut lp, rx);
            lp.run(RunMode::Default).unwrap();
            assert_eq!(got.borrow().data, b"through a moved handle\n", "{name}");
        }
    }
);

case!(
    fn one_handle_as_stdout_and_stderr_merges_them() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let (rx, tx) = Pipe::pair(&mut lp).unwrap();
            // A shell's `2>&1`: both fds get the same pipe, in the order the child writes.
            let mut cmd = sh("echo out; echo err >&2; echo out again");
            cmd.stdout(tx).stderr(tx);
            let (_child, status) = spawn_recording(&mut lp, &cmd);
            let got = collect(&mut lp, rx);
            lp.run(RunMode::Default).unwrap();
            assert!(status.get().unwrap().success(), "{name}");
            assert_eq!(got.borrow().data, b"out\nerr\nout again\n", "{name}");
            assert!(lp.handles().is_empty(), "{name}");
        }
    }
);

case!(
    fn a_command_whose_handle_moved_says_so_when_spawned_again() {
        let mut lp = crate::util::test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let mut cmd = Command::new("true");
        cmd.stdout(tx);
        let (_child, status) = spawn_recording(&mut lp, &cmd);
        // Before the close phase the handle is closing; after it, its id is stale. Either
        // way the error names the fd and the handle, not a bare EBADF.
        let e = cmd.spawn(&mut lp, |_, _, _| unreachable!("not spawned")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("child fd 1") && text.contains("closing"), "{text}");
        assert!(text.contains("given to an earlier spawn"), "{text}");
        rx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert!(status.get().unwrap().success());
        let e = cmd.spawn(&mut lp, |_, _, _| unreachable!("not spawned")).unwrap_err();
        assert!(e.to_string().contains("child fd 1") && e.to_string().contains("stale"), "{e}");
        assert!(e.to_string().contains("given to an earlier spawn"), "{e}");
        still_works(&mut lp);
    }
);

case!(
    /// The fork path's exec-error pipe must not keep a stray copy of its write end: with an
    /// extra fd high above the next free number, the pipe is moved above the targets, and the
    /// originals used to stay open, so the parent waited forever for the end of the report.
    fn issue_6_fork_path_with_a_high_extra_fd_returns() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut cmd = Command::new("true");
            cmd.fd(40, evloop::Stdio::Pipe);
            let status = Rc::new(RefCell::new(None));
            let s = status.clone();
            let child = cmd
                .spawn(&mut lp, move |lp, p, st| {
                    *s.borrow_mut() = Some(st.unwrap());
                    p.close(lp).unwrap();
                })
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            for p in child.all_pipes() {
                p.close(&mut lp).unwrap();
            }
            lp.run(RunMode::Default).unwrap();
            assert!(status.borrow().unwrap().success(), "{name}");
            still_works(&mut lp);
        }
    }
);
