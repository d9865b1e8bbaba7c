use std::ffi::OsStr;
use std::io;
use std::path::Path;

use evloop::signal::{SIGINT, SIGTERM};
use evloop::{Command, Loop, Stdio, os_error_code};
use evloop_platform::libc;

use crate::util::builder;

use super::*;

/// Reads `/proc/<pid>/status` field `name` (a hex signal mask) as a number.
fn sigmask_field(status: &str, name: &str) -> u64 {
    let line =
        status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

case!(
    /// Issue 6: the vfork path put its child's 32 KiB stack in the spawning thread's frame,
    /// so a spawn from a thread with a small stack (32 or 40 KiB) overflowed it and ended the
    /// process; std and the other paths spawn there (spawn audit). The child's stack is a
    /// mapping of its own now.
    fn issue_6_a_thread_with_a_small_stack_spawns() {
        for (name, b) in flavours() {
            let spawned = std::thread::Builder::new()
                .stack_size(32 * 1024)
                .spawn(move || {
                    let mut lp = b.build().unwrap();
                    status_of(&mut lp, &Command::new("true")).map(|s| s.success())
                })
                .unwrap()
                .join()
                .unwrap();
            assert!(spawned.unwrap(), "{name}");
        }
    }
);

case!(
    fn env_and_cwd() {
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            // SAFETY-free: the variable is set by the child's command, not in this process.
            let mut cmd = sh("echo \"$EVLOOP_A|${EVLOOP_B-unset}|${HOME-nohome}\"; pwd");
            cmd.env("EVLOOP_A", "one").env("EVLOOP_B", "two").env_remove("EVLOOP_B").current_dir("/tmp");
            let o = output_of(&mut lp, &mut cmd);
            let home = std::env::var("HOME").unwrap_or_else(|_| "nohome".into());
            assert_eq!(String::from_utf8(o.stdout).unwrap(), format!("one|unset|{home}\n/tmp\n"), "{name}");
            assert!(o.status.success());
            // A cleared environment has only what is set afterwards.
            let mut cmd = Command::new("/usr/bin/env");
            cmd.env_clear().env("ONLY", "this");
            let o = output_of(&mut lp, &mut cmd);
            assert_eq!(o.stdout, b"ONLY=this\n", "{name}");
        }
    }
);

case!(
    fn program_names_of_any_length_spawn_alike() {
        // Short names live inside the Command and long ones on the heap: around the boundary
        // (40 bytes with the NUL, `./` included), both must name and run the same program.
        let dir = TempDir::new("names");
        std::env::set_current_dir(&dir.0).unwrap();
        let mut lp = builder().build().unwrap();
        for n in 34..=42 {
            let name = "p".repeat(n);
            dir.script(&name, &format!("#!/bin/sh\necho {n}\n"));
            let mut cmd = Command::new(Path::new(&name));
            assert_eq!(cmd.get_program(), OsStr::new(&format!("./{name}")));
            assert_eq!(output_of(&mut lp, &mut cmd).stdout, format!("{n}\n").into_bytes(), "{n}");
            // A bare name found through PATH: inline up to 39 bytes.
            let mut cmd = Command::new(name.as_str());
            cmd.env("PATH", &dir.0);
            assert_eq!(cmd.get_program(), OsStr::new(&name));
            assert_eq!(output_of(&mut lp, &mut cmd).stdout, format!("{n}\n").into_bytes(), "{n}");
        }
        std::env::set_current_dir("/").unwrap();
    }
);

case!(
    /// Issue 6: the posix_spawn path left the search of the program's own `PATH` to glibc's
    /// `posix_spawnp`, which took an entry longer than `PATH_MAX` for the working directory
    /// (the other paths went on to the next entry), and the other paths went on past a
    /// name too long for any file, to end with `ENOENT` (spawn audit). Every path searches
    /// alike now, and such a name is `ENAMETOOLONG`.
    fn issue_6_every_spawn_path_searches_path_alike() {
        let dir = TempDir::new("search");
        dir.script("good/trialprog", "#!/bin/sh\necho good\n");
        dir.script("trialprog", "#!/bin/sh\necho here\n");
        std::env::set_current_dir(&dir.0).unwrap();
        let long = format!("/{}", "d".repeat(5000));
        // SAFETY: this test's process has no other thread reading the environment now.
        unsafe { std::env::set_var("PATH", format!("{long}:{}/good", dir.0.display())) };
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            assert_eq!(output_of(&mut lp, &mut Command::new("trialprog")).stdout, b"good\n", "{name}");
            let e = status_of(&mut lp, &Command::new("n".repeat(256))).unwrap_err();
            assert_eq!(evloop::os_error_code(&e), Some(libc::ENAMETOOLONG), "{name}: {e}");
            assert!(e.to_string().contains(&format!("spawn `{}`", "n".repeat(256))), "{name}: {e}");
        }
        std::env::set_current_dir("/").unwrap();
    }
);

case!(
    /// A child fd that cannot be set up names where it was to come from: a spawn's own
    /// `/dev/null` was named by its fd number, which told the caller nothing (spawn audit).
    fn a_child_fd_the_kernel_refuses_names_its_source() {
        let (soft, _) = evloop_platform::fd::nofile_limit().unwrap();
        let beyond = i32::try_from(soft).unwrap_or(i32::MAX - 1).saturating_add(1);
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let e = status_of(&mut lp, Command::new("true").fd(beyond, Stdio::Null)).unwrap_err();
            assert!(e.to_string().contains(&format!("child fd {beyond} (/dev/null)")), "{name}: {e}");
            let e = status_of(&mut lp, Command::new("true").fd(beyond, Stdio::Pipe)).unwrap_err();
            assert!(e.to_string().contains(&format!("child fd {beyond} (a new pipe)")), "{name}: {e}");
            let e = status_of(&mut lp, Command::new("true").fd(3, Stdio::Null).fd(beyond, Stdio::SameAs(3)))
                .unwrap_err();
            assert!(e.to_string().contains(&format!("child fd {beyond} (/dev/null)")), "{name}: {e}");
        }
    }
);

case!(
    /// Exec errors that the error number alone leaves puzzling say what they mean (spawn
    /// audit): `ENOENT` for a script that exists names its missing `#!` interpreter, and
    /// `E2BIG` says the arguments and environment are too large.
    fn exec_errors_name_a_missing_interpreter_and_too_large_arguments() {
        let dir = TempDir::new("interp");
        dir.script("badinterp", "#!/nonexistent/interp -x\necho never\n");
        let script = dir.0.join("badinterp");
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let e = status_of(&mut lp, &Command::new(&script)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name}: {e}");
            assert!(e.to_string().contains("interpreter `/nonexistent/interp`"), "{name}: {e}");
            // Above every system's limit in all (4 MiB; macOS takes 1 MiB), and no one
            // argument above Linux's limit for one (128 KiB).
            let mut big = Command::new("true");
            big.args(std::iter::repeat_n("x".repeat(100 << 10), 40));
            let e = status_of(&mut lp, &big).unwrap_err();
            assert_eq!(evloop::os_error_code(&e), Some(libc::E2BIG), "{name}: {e}");
            assert!(
                e.to_string().contains("arguments and environment together are too large"),
                "{name}: {e}"
            );
        }
    }
);

case!(
    /// An exec refused with `E2BIG` because one string alone is over Linux's limit for one
    /// (128 KiB), however small the whole, names that string, not "the arguments and
    /// environment together" (a test runner's trial).
    #[cfg(target_os = "linux")]
    fn issue_6_e2big_names_the_one_argument_over_the_limit() {
        let max = evloop_platform::spawn::one_exec_string_bytes_max().unwrap();
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut one = Command::new("true");
            one.args(["short", &"x".repeat(max)]);
            let e = status_of(&mut lp, &one).unwrap_err();
            assert_eq!(evloop::os_error_code(&e), Some(libc::E2BIG), "{name}: {e}");
            let want = format!("argument 2 is {} bytes, and the system takes at most {max} for one", max + 1);
            assert!(e.to_string().contains(&want), "{name}: {e}");
            // One byte less (the NUL makes it the limit) is taken.
            let mut fits = Command::new("true");
            fits.arg("x".repeat(max - 1));
            assert!(status_of(&mut lp, &fits).unwrap().success(), "{name}");
            let mut var = Command::new("true");
            var.env("BIG_ONE", "y".repeat(max));
            let e = status_of(&mut lp, &var).unwrap_err();
            let want = format!("environment variable `BIG_ONE` is {} bytes", max + 9);
            assert!(e.to_string().contains(&want), "{name}: {e}");
            let mut zero = Command::new("true");
            zero.arg0("z".repeat(max));
            let e = status_of(&mut lp, &zero).unwrap_err();
            assert!(e.to_string().contains("argument 0 is"), "{name}: {e}");
            assert!(lp.handles().is_empty(), "{name}: {:?}", lp.handles());
        }
    }
);

case!(
    fn relative_program_paths_follow_ducts_rules() {
        let dir = TempDir::new("paths");
        dir.script("prog", "#!/bin/sh\necho \"prog in $(pwd)\"\n");
        dir.script("sub/tool", "#!/bin/sh\necho \"tool in $(pwd)\"\n");
        std::env::set_current_dir(&dir.0).unwrap();
        let here = dir.0.display().to_string();
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let run =
                |lp: &mut Loop, mut cmd: Command| String::from_utf8(output_of(lp, &mut cmd).stdout).unwrap();
            // A Path gets ./ in front: the file here, not a PATH search.
            assert_eq!(run(&mut lp, Command::new(Path::new("prog"))), format!("prog in {here}\n"), "{name}");
            assert_eq!(Command::new(Path::new("prog")).get_program(), OsStr::new("./prog"));
            // A plain string is looked up in PATH, which does not hold it.
            let e = status_of(&mut lp, &Command::new("prog")).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{name}: {e}");
            assert!(e.to_string().contains("spawn `prog`"), "{e}");
            // With a working directory, relative paths still start from the parent's.
            let mut cmd = Command::new(Path::new("prog"));
            cmd.current_dir("/");
            assert_eq!(run(&mut lp, cmd), "prog in /\n", "{name}");
            let mut cmd = Command::new("sub/tool");
            cmd.current_dir("/tmp");
            assert_eq!(run(&mut lp, cmd), "tool in /tmp\n", "{name}");
            // The child's PATH is the one searched when the command sets it.
            let mut cmd = Command::new("prog");
            cmd.env("PATH", &dir.0);
            assert_eq!(run(&mut lp, cmd), format!("prog in {here}\n"), "{name}");
            let mut cmd = Command::new("prog");
            cmd.env("PATH", format!("/nonexistent:{}", dir.0.display())).current_dir("/");
            assert_eq!(run(&mut lp, cmd), "prog in /\n", "{name}");
            // No PATH at all: the default (/bin:/usr/bin).
            let mut cmd = Command::new("true");
            cmd.env_remove("PATH");
            assert!(status_of(&mut lp, &cmd).unwrap().success(), "{name}");
            let mut cmd = Command::new("prog");
            cmd.env_clear();
            assert_eq!(status_of(&mut lp, &cmd).unwrap_err().kind(), io::ErrorKind::NotFound, "{name}");
        }
        std::env::set_current_dir("/").unwrap();
    }
);

case!(
    fn arg0_is_what_the_child_sees() {
        let mut lp = builder().build().unwrap();
        let mut cmd = sh("echo \"$0 $1\"");
        cmd.arg("-x").arg0("renamed");
        // sh -c takes $0 from the argument after the script.
        let mut cmd2 = Command::new("sh");
        cmd2.args(["-c", "echo \"$0\"", "zero"]);
        assert_eq!(output_of(&mut lp, &mut cmd2).stdout, b"zero\n");
        let o = output_of(&mut lp, &mut cmd);
        assert_eq!(o.stdout, b"-x \n");
        let mut ps = Command::new("sh");
        ps.arg0("not-sh").args(["-c", "cat /proc/$$/cmdline"]);
        let o = output_of(&mut lp, &mut ps);
        assert!(o.stdout.starts_with(b"not-sh\0-c\0"), "{:?}", String::from_utf8_lossy(&o.stdout));
    }
);

case!(
    fn issue_6_the_child_gets_default_signals_whatever_the_parent_blocks_or_ignores() {
        evloop_platform::signal::set_blocked(&[SIGTERM], true).unwrap();
        evloop_platform::signal::set_disposition(SIGINT, evloop_platform::signal::Disposition::Ignore)
            .unwrap();
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let o = output_of(&mut lp, Command::new("cat").arg("/proc/self/status"));
            let status = String::from_utf8(o.stdout).unwrap();
            assert_eq!(sigmask_field(&status, "SigBlk:"), 0, "{name}: the mask is empty");
            // glibc's internal signals (32 and 33, below SIGRTMIN) too: its posix_spawn left
            // them ignored, unless told otherwise.
            let ign = sigmask_field(&status, "SigIgn:");
            assert_eq!(ign & bit(SIGINT), 0, "{name}: SIGINT is back to default");
            assert_eq!(ign & bit(libc::SIGPIPE), 0, "{name}: SIGPIPE (ignored by Rust) is back to default");
            assert_eq!(ign, 0, "{name}");
            // And the parent still has what it set.
            let me = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            assert_ne!(sigmask_field(&me, "SigBlk:") & bit(SIGTERM), 0);
            assert_ne!(sigmask_field(&me, "SigIgn:") & bit(SIGINT), 0);
            // A child killed by the signal the parent blocks.
            assert_eq!(status_of(&mut lp, &sh("kill -TERM $$")).unwrap().signal(), Some(SIGTERM), "{name}");
        }
        evloop_platform::signal::set_blocked(&[SIGTERM], false).unwrap();
    }
);

case!(
    /// Issue 6: every child started with every signal at its default action, so a shell on
    /// the loop could not give a command an ignored signal: `trap '' INT`, the `SIGINT` and
    /// `SIGQUIT` a non-interactive shell's background jobs ignore, `nohup` (shell trial).
    /// `Command::ignore_signal` starts the child with the signals named ignored, on every
    /// path, and only those; a signal that cannot be ignored or named is refused at spawn.
    #[cfg(target_os = "linux")]
    fn issue_6_ignore_signal_starts_the_child_with_those_ignored() {
        // The parent ignores SIGHUP itself: that must not reach the child either way.
        evloop_platform::signal::set_disposition(libc::SIGHUP, evloop_platform::signal::Disposition::Ignore)
            .unwrap();
        let rt = libc::SIGRTMIN() + 1;
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut cmd = Command::new("cat");
            cmd.arg("/proc/self/status");
            for sig in [SIGINT, libc::SIGQUIT, libc::SIGTSTP, rt] {
                cmd.ignore_signal(sig);
            }
            let status = String::from_utf8(output_of(&mut lp, &mut cmd).stdout).unwrap();
            let want = bit(SIGINT) | bit(libc::SIGQUIT) | bit(libc::SIGTSTP) | bit(rt);
            assert_eq!(sigmask_field(&status, "SigIgn:"), want, "{name}");
            assert_eq!(sigmask_field(&status, "SigBlk:"), 0, "{name}: the mask is empty");
            // Kept across the shell's own exec: the shell cannot even trap it.
            let mut cmd = sh("trap 'exit 9' INT; kill -INT $$; exit 3");
            cmd.ignore_signal(SIGINT);
            assert_eq!(status_of(&mut lp, &cmd).unwrap().code(), Some(3), "{name}");
            assert_eq!(status_of(&mut lp, &sh("kill -INT $$")).unwrap().signal(), Some(SIGINT), "{name}");
        }
        let mut lp = crate::util::test_loop();
        let bad = [
            (libc::SIGKILL, "cannot be ignored"),
            (libc::SIGSTOP, "cannot be ignored"),
            (0, "no such signal"),
            (65, "no such signal"),
            (-1, "no such signal"),
            (32, "keeps this signal"),
        ];
        for (sig, why) in bad {
            let mut cmd = Command::new("true");
            cmd.ignore_signal(sig);
            let err = cmd.spawn(&mut lp, |_, _, _| unreachable!()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{sig}: {err}");
            assert!(
                err.to_string().contains(why) && err.to_string().contains(&format!("ignore_signal({sig})")),
                "{err}"
            );
        }
        assert!(lp.handles().is_empty());
    }
);

case!(
    /// A shell's job (a process group of its own) and a session leader were forked (as was
    /// every child of a program in front of a terminal): a copy of the parent's page tables,
    /// whose cost grows with its size, and then a copy-on-write fault for every page the
    /// parent wrote. A 1 GiB parent spawned 27 jobs a second where it spawns about 1,500 now
    /// (`spawn_bench --group --ballast 1g`). The vfork path copies nothing: rewriting the
    /// parent's memory after such a spawn takes no fault. The fork path shows that the count
    /// sees a copy.
    #[cfg(target_os = "linux")]
    fn issue_6_a_spawn_into_a_new_group_or_session_copies_nothing_of_the_parent() {
        use nix::sys::resource::{UsageWho, getrusage};
        if !evloop_platform::spawn::vfork_path_available() {
            // (A sandbox that refuses clone(CLONE_VM), or an emulator that runs it as a fork.)
            eprintln!("no vfork path here: nothing to test");
            return;
        }
        // This thread's faults only: the watchdog's and the loop's stay out of the count.
        let faults_now = || getrusage(UsageWho::RUSAGE_THREAD).unwrap().minor_page_faults();
        let mut ballast = vec![1u8; 64 << 20];
        // One write per page; with transparent huge pages a copy costs one fault per 2 MiB,
        // so a copy of this is 32 faults at the least.
        let rewrite = |ballast: &mut Vec<u8>| {
            let before = faults_now();
            for page in ballast.chunks_mut(4096) {
                page[0] = page[0].wrapping_add(1);
            }
            faults_now() - before
        };
        rewrite(&mut ballast);
        for (name, b) in [("default", builder()), ("fork", builder().force_fork_spawn(true))] {
            let mut lp = b.build().unwrap();
            for how in ["group", "session"] {
                let mut cmd = Command::new("true");
                if how == "group" {
                    cmd.process_group(0);
                } else {
                    cmd.setsid(true);
                }
                assert!(status_of(&mut lp, &cmd).unwrap().success(), "{name} {how}");
                let faults = rewrite(&mut ballast);
                if name == "fork" {
                    assert!(faults >= 32, "{name} {how}: the count saw no copy ({faults} faults)");
                } else {
                    assert!(faults < 8, "{name} {how}: {faults} faults: the parent was copied");
                }
            }
        }
        std::hint::black_box(&ballast);
    }
);

case!(
    /// A child run as another user switches its own ids only, on every path. Switched on
    /// the vfork path, where the child shares the parent's memory until its exec, the kernel
    /// would mark that memory non-dumpable (it marks the memory on an id change, not the
    /// task), leaving the parent without core dumps, and untraceable by its own user, for
    /// good: ids take the fork path. (As root the child becomes nobody; otherwise it
    /// "switches" to the ids it has, which marks nothing.)
    #[cfg(target_os = "linux")]
    fn issue_6_a_child_run_as_another_user_leaves_the_parent_dumpable() {
        use nix::sys::prctl::get_dumpable;
        let root = is_root();
        let (uid, gid) = if root {
            (65534, 65534)
        } else {
            (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw())
        };
        assert!(get_dumpable().unwrap(), "the test starts dumpable");
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut cmd = sh("echo $(id -u) $(id -g) $(id -G)");
            cmd.uid(uid).gid(gid);
            let o = output_of(&mut lp, &mut cmd);
            assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
            let out = String::from_utf8(o.stdout).unwrap();
            if root {
                assert_eq!(out, "65534 65534 65534\n", "{name}: supplementary groups dropped");
            } else {
                assert!(out.starts_with(&format!("{uid} {gid} ")), "{name}: {out}");
            }
            assert!(get_dumpable().unwrap(), "{name}: the parent is no longer dumpable");
        }
    }
);

case!(
    fn bad_input_gets_clear_errors() {
        let dir = TempDir::new("bad");
        let not_exec = dir.0.join("not-executable");
        std::fs::write(&not_exec, "#!/bin/sh\necho hi\n").unwrap();
        let garbage = dir.script("garbage", "\u{7f}ELF but not really\n");
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            still_works(&mut lp);
            let fds = evloop_platform::fd::open_fd_count().unwrap();
            let check = |lp: &mut Loop, cmd: &Command, errno: i32, text: &str| {
                let e = status_of(lp, cmd).unwrap_err();
                assert_eq!(os_error_code(&e), Some(errno), "{name}: {e}");
                assert!(e.to_string().contains(text), "{name}: `{e}` lacks `{text}`");
                still_works(lp);
            };
            check(
                &mut lp,
                &Command::new("evloop-no-such-program"),
                libc::ENOENT,
                "spawn `evloop-no-such-program`",
            );
            check(&mut lp, &Command::new("/no/such/program"), libc::ENOENT, "spawn `/no/such/program`");
            check(&mut lp, &Command::new("/tmp"), libc::EACCES, "spawn `/tmp`");
            check(&mut lp, &Command::new(&not_exec), libc::EACCES, "not-executable");
            check(&mut lp, &Command::new(&garbage), libc::ENOEXEC, "garbage");
            let mut cmd = Command::new("true");
            cmd.current_dir("/no/such/dir");
            check(&mut lp, &cmd, libc::ENOENT, "cannot enter directory `/no/such/dir`");
            let mut cmd = Command::new("true");
            cmd.fd(5, Stdio::InheritFrom(977));
            check(&mut lp, &cmd, libc::EBADF, "child fd 5 from parent fd 977");
            let mut cmd = Command::new("true");
            cmd.fd(4, Stdio::Inherit);
            if !evloop_platform::fd::is_open_raw(4) {
                check(&mut lp, &cmd, libc::EBADF, "child fd 4");
            }
            // Caught before anything is spawned.
            for (cmd, text) in [
                (sh("echo").arg("nul\0byte").to_owned_cmd(), "argument 3 contains a NUL byte"),
                // The name is escaped in the message, which stays plain text.
                (Command::new("tr\0ue"), "spawn `tr\\u{0}ue`: the program name contains a NUL byte"),
                (
                    Command::new(format!("/a/name/longer/than/the/inline/space/{}\0x", "y".repeat(40))),
                    "\\u{0}x`: the program name contains a NUL byte",
                ),
                (Command::new(""), "program name is empty"),
                (Command::new("true").env("A=B", "c").to_owned_cmd(), "contains `=`"),
                (Command::new("true").env("A", "b\0c").to_owned_cmd(), "NUL"),
                (
                    Command::new("true").current_dir("/t\0mp").to_owned_cmd(),
                    "working directory contains a NUL",
                ),
                (Command::new("true").setsid(true).process_group(0).to_owned_cmd(), "cannot be combined"),
                // The message names only what the caller gave (no internal /dev/null fd).
                (
                    Command::new("true").fd(-1, Stdio::Null).to_owned_cmd(),
                    "`true`: child fd -1: a child fd number cannot be negative",
                ),
                (
                    Command::new("true").fd(1 << 30, Stdio::Null).to_owned_cmd(),
                    "`true`: child fd 1073741824 (/dev/null): its number is beyond the open-file limit (",
                ),
            ] {
                let e = status_of(&mut lp, &cmd).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name}: {e}");
                assert!(e.to_string().contains(text), "{name}: `{e}` lacks `{text}`");
                still_works(&mut lp);
            }
            assert_eq!(evloop_platform::fd::open_fd_count().unwrap(), fds, "{name}: no fd leaked");
        }
    }
);

/// `Command` setters return `&mut Command`; tests want an owned one in a list.
trait ToOwnedCmd {
    fn to_owned_cmd(&mut self) -> Command;
}

impl ToOwnedCmd for Command {
    fn to_owned_cmd(&mut self) -> Command {
        std::mem::replace(self, Command::new("unused"))
    }
}

case!(
    /// `Command::groups` sets the child's supplementary groups before its ids switch, on
    /// every path (service-manager trial: a service running as another user could only
    /// drop them all). Without the privilege, or with more than the system takes, the spawn
    /// fails and says what it could not do.
    fn issue_6_groups_sets_the_childs_supplementary_groups() {
        // `id -G`: the effective group, then the supplementary ones.
        let ids = |out: &Output| String::from_utf8_lossy(&out.stdout).into_owned();
        let root = nix::unistd::geteuid().is_root();
        for (name, b) in flavours() {
            let mut lp = b.build().unwrap();
            let mut cmd = sh("id -G");
            cmd.groups(&[7, 3]);
            if !root {
                let err = cmd.spawn(&mut lp, |_, _, _| panic!("never spawned")).unwrap_err();
                assert_eq!(evloop::os_error_code(&err), Some(libc::EPERM), "{name}: {err}");
                assert!(err.to_string().contains("supplementary groups"), "{name}: {err}");
                continue;
            }
            let out = output_of(&mut lp, &mut cmd);
            assert!(out.status.success(), "{name}: {:?}", out.status);
            let mut got: Vec<String> = ids(&out).split_whitespace().map(String::from).collect();
            got.sort();
            assert_eq!(got, ["0", "3", "7"], "{name}");
            // With the ids switched after them, and an empty list.
            let mut cmd = sh("id -u; id -g; id -G");
            cmd.groups(&[5]).gid(1).uid(1);
            assert_eq!(ids(&output_of(&mut lp, &mut cmd)), "1\n1\n1 5\n", "{name}");
            let mut cmd = sh("id -G");
            cmd.groups(&[]).gid(1);
            assert_eq!(ids(&output_of(&mut lp, &mut cmd)), "1\n", "{name}");
        }
        if root {
            let mut lp = builder().build().unwrap();
            let many: Vec<u32> = (0..70_000).collect();
            let mut cmd = Command::new("true");
            cmd.groups(&many);
            let err = cmd.spawn(&mut lp, |_, _, _| panic!("never spawned")).unwrap_err();
            assert_eq!(evloop::os_error_code(&err), Some(libc::EINVAL), "{err}");
            assert!(err.to_string().contains("supplementary groups (70000 of them)"), "{err}");
        }
    }
);
