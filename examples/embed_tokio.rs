//! An evloop inside a tokio current-thread runtime, through `AsyncFd` on a copy of `backend_fd()`.
//!
//! `cargo run --release --example embed_tokio`
//!
//! A tokio task produces lines (with tokio timers between them) and sends them through an
//! evloop [`Channel`] to the loop, which writes them to a `cat` child spawned on the loop. The
//! loop reads `cat`'s output and forwards it over a tokio channel to a second tokio task,
//! which collects it. Both sides run on one thread: tokio awaits the loop's backend fd and
//! calls `run(NoWait)` whenever it is readable or the loop's next timer is due.

use std::time::Duration;

use evloop::{Channel, Command, Loop, ReadEvent, RunMode, Stdio};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let lines = local.block_on(&rt, async {
        let mut lp = Loop::new()?;
        let (to_tokio, mut from_loop) = mpsc::unbounded_channel::<String>();

        // The child, on the loop: every line written to its stdin comes back on its stdout.
        let child =
            Command::new("cat").stdin(Stdio::Pipe).stdout(Stdio::Pipe).spawn(&mut lp, |lp, p, status| {
                println!("loop: cat {}", status.expect("reaped"));
                p.close(lp).expect("open");
            })?;
        let (stdin, stdout) = (child.stdin.expect("piped"), child.stdout.expect("piped"));
        let mut partial = Vec::new();
        stdout.read_start(&mut lp, move |lp, out, ev| match ev {
            ReadEvent::Data(bytes) => {
                partial.extend_from_slice(bytes);
                while let Some(n) = partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=n).collect();
                    let _ = to_tokio.send(String::from_utf8_lossy(&line).trim_end().to_string());
                }
            }
            _ => out.close(lp).expect("open"),
        })?;

        // Messages from tokio tasks reach the loop thread through a channel handle; when the
        // producer is done (its sender dropped), stdin is shut and cat ends.
        let (chan, to_loop) = Channel::new(&mut lp, move |lp, _, line: Option<String>| match line {
            Some(line) => {
                stdin.write(lp, format!("{line}\n").as_bytes(), |_, r| r.expect("write")).expect("open")
            }
            None => stdin.shutdown(lp, move |lp, _| stdin.close(lp).expect("open")).expect("open"),
        });
        chan.set_ref(&mut lp, false)?;

        // Producer: a tokio task with tokio timers.
        tokio::task::spawn_local(async move {
            for i in 1..=5 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                to_loop.send(Some(format!("line {i} from a tokio task"))).expect("loop alive");
            }
            to_loop.send(None).expect("loop alive");
        });
        // Consumer: another tokio task.
        let consumer = tokio::task::spawn_local(async move {
            let mut got = Vec::new();
            while let Some(line) = from_loop.recv().await {
                println!("tokio: got {line:?}");
                got.push(line);
            }
            got
        });

        // The loop itself, driven by tokio: tokio watches a copy of the loop's poller fd
        // (the same epoll or kqueue instance), which the `AsyncFd` owns.
        let poller = lp.backend_fd().try_clone_to_owned()?;
        // SAFETY: the `AsyncFd` owns `poller`, and nothing replaces it (no `get_mut`), so the
        // fd stays open, and the same, for the `AsyncFd`'s whole life.
        let afd = unsafe { AsyncFd::register(poller) }?;
        while lp.is_alive() {
            match lp.backend_timeout() {
                // Due now (a timer, or a stream still ready after its bounded reads, which
                // makes no new edge for `AsyncFd`): no wait, only a turn for tokio's other
                // tasks. (tokio's `sleep(Duration::ZERO)` would take a millisecond tick.)
                Some(timeout) if timeout.is_zero() => tokio::task::yield_now().await,
                timeout => {
                    let timeout = timeout.unwrap_or(Duration::from_secs(3600));
                    tokio::select! {
                        guard = afd.readable() => guard?.clear_ready(),
                        _ = tokio::time::sleep(timeout) => {}
                    }
                }
            }
            lp.run(RunMode::NoWait)?;
        }
        drop(afd);
        chan.close(&mut lp)?;
        lp.run(RunMode::Default)?;
        drop(lp); // the loop's channel end is gone: the consumer's stream ends
        Ok::<_, std::io::Error>(consumer.await.expect("consumer task"))
    })?;
    assert_eq!(lines.len(), 5, "every line made the round trip");
    println!("embed_tokio: {} lines through cat, tokio and evloop on one thread", lines.len());
    Ok(())
}
