use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::rc::Rc;

use evloop::{Pipe, ReadEvent, RunMode};

use crate::pipe::{Sum, collect};
use crate::util::test_loop;

case!(
    /// With RLIMIT_NOFILE lowered, making pipes fails with a clear EMFILE, and the loop keeps
    /// serving the handles it has; with the limit raised again, everything works.
    fn issue_7_fd_exhaustion() {
        let (soft, _) = evloop_platform::fd::nofile_limit().unwrap();
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let got = collect(&mut lp, rx);
        let open_now = evloop_platform::fd::open_fds().unwrap().len() as u64;
        evloop_platform::fd::set_nofile_soft_limit(open_now + 8).unwrap();
        let mut made = Vec::new();
        let err = loop {
            match Pipe::pair(&mut lp) {
                Ok(p) => made.push(p),
                Err(e) => break e,
            }
            assert!(made.len() < 100, "the limit is not enforced");
        };
        assert_eq!(evloop::os_error_code(&err), Some(nix::libc::EMFILE), "{err}");
        // The existing pipe still works at the limit.
        tx.write(&mut lp, b"still served", |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        lp.run(RunMode::NoWait).unwrap();
        assert_eq!(got.borrow().data, b"still served");
        // Raised again: new pipes work.
        evloop_platform::fd::set_nofile_soft_limit(soft).unwrap();
        let (rx2, tx2) = Pipe::pair(&mut lp).unwrap();
        let got2 = collect(&mut lp, rx2);
        tx2.write(&mut lp, b"and new ones too", |_, r| r.unwrap()).unwrap();
        tx2.close(&mut lp).unwrap();
        tx.close(&mut lp).unwrap();
        for (r, t) in made {
            r.close(&mut lp).unwrap();
            t.close(&mut lp).unwrap();
        }
        lp.run(RunMode::Default).unwrap();
        assert_eq!(got2.borrow().data, b"and new ones too");
    }
);

case!(
    secs = 60,
    /// One write of 1 GiB: queued without a copy (write_vec), reported once, all delivered.
    fn issue_7_a_one_gibibyte_write() {
        let mut lp = test_loop();
        let (r, w) = std::io::pipe().unwrap();
        let tx = Pipe::open(&mut lp, OwnedFd::from(w)).unwrap();
        let reader = std::thread::spawn(move || {
            let mut r = File::from(OwnedFd::from(r));
            let mut buf = vec![0u8; 1 << 20];
            let mut sum = Sum::new();
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return sum,
                    Ok(n) => sum.update(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let data: Vec<u8> = (0..1u64 << 30).map(|i| (i % 251) as u8).collect();
        let mut sent = Sum::new();
        sent.update(&data);
        let calls = Rc::new(Cell::new(0));
        let c = calls.clone();
        tx.write_vec(&mut lp, data, move |_, r| {
            r.unwrap();
            c.set(c.get() + 1);
        })
        .unwrap();
        assert!(tx.write_queue_size(&lp).unwrap() > 0);
        tx.shutdown(&mut lp, |_, r| r.unwrap()).unwrap();
        lp.run(RunMode::Default).unwrap();
        assert_eq!(calls.get(), 1);
        assert_eq!(reader.join().unwrap(), sent);
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);

case!(
    fn zero_length_writes_complete_in_order() {
        let mut lp = test_loop();
        let (rx, tx) = Pipe::pair(&mut lp).unwrap();
        let order = Rc::new(RefCell::new(Vec::new()));
        for (i, data) in [&b""[..], b"a", b"", &[0u8; 100_000][..], b""].into_iter().enumerate() {
            let o = order.clone();
            tx.write(&mut lp, data, move |_, r| {
                r.unwrap();
                o.borrow_mut().push(i);
            })
            .unwrap();
        }
        let got = Rc::new(Cell::new(0));
        let g = got.clone();
        rx.read_start(&mut lp, move |_, _, ev| {
            if let ReadEvent::Data(d) = ev {
                g.set(g.get() + d.len());
            }
        })
        .unwrap();
        while order.borrow().len() < 5 {
            lp.run(RunMode::Once).unwrap();
        }
        assert_eq!(*order.borrow(), [0, 1, 2, 3, 4], "completions in order, empty ones included");
        rx.close(&mut lp).unwrap();
        tx.close(&mut lp).unwrap();
        lp.run(RunMode::Default).unwrap();
    }
);
