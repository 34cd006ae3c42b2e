//! Extra sockets (`add_socket` / `recv_any` / `push_with_via`) on both backends: datagrams are
//! tagged with the socket they arrived on, sends leave through the socket their slot names, data
//! on an extra socket wakes a blocked receive, removed ids stay dead, and the receive limit
//! covers all sockets together.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{bind, kinds, loopback};
use switchyard_udp::{Config, SendBatch, SocketId, UdpIo};

fn peer() -> (UdpSocket, SocketAddr) {
    let p = UdpSocket::bind(loopback()).expect("peer");
    p.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let a = p.local_addr().expect("peer addr");
    (p, a)
}

/// Receives until `want` datagrams arrived (or 5 s passed): (bytes, from, socket) each.
fn collect(io: &mut UdpIo, want: usize) -> Vec<(Vec<u8>, SocketAddr, SocketId)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        io.recv_any(Some(Duration::from_millis(200)), |b, from, via| got.push((b.to_vec(), from, via)))
            .expect("recv_any");
    }
    got
}

#[test]
fn datagrams_are_tagged_and_sent_through_their_socket() {
    for kind in kinds() {
        let mut io = bind(kind);
        let primary = io.local_addr().expect("local");
        let small = Config { recv_buffer_bytes: 1 << 18, send_buffer_bytes: 1 << 18, ..Config::default() };
        let x = io.add_socket(loopback(), &small).expect("add x");
        let y = io.add_socket(loopback(), &small).expect("add y");
        assert_ne!(x, y);
        assert_ne!(x, SocketId::PRIMARY);
        assert_eq!(io.extra_sockets(), 2);
        let (xa, ya) = (io.socket_addr(x).expect("x addr"), io.socket_addr(y).expect("y addr"));
        assert_eq!(io.socket_addr(SocketId::PRIMARY).expect("primary"), primary);
        let (p, pa) = peer();
        p.send_to(b"to-primary", primary).expect("send");
        p.send_to(b"to-x", xa).expect("send");
        p.send_to(b"to-y", ya).expect("send");
        let mut got = collect(&mut io, 3);
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![(b"to-primary".to_vec(), pa, SocketId::PRIMARY), (b"to-x".to_vec(), pa, x), (b"to-y".to_vec(), pa, y)],
            "{kind}"
        );

        // Mixed batch: runs through different sockets, in order.
        let mut batch = SendBatch::new(8);
        assert!(batch.push_with_via(x, pa, |b| {
            b[..2].copy_from_slice(b"x1");
            Some(2)
        }));
        batch.push(pa, b"p1");
        assert!(batch.push_with_via(y, pa, |b| {
            b[..2].copy_from_slice(b"y1");
            Some(2)
        }));
        assert!(batch.push_with_via(y, pa, |b| {
            b[..2].copy_from_slice(b"y2");
            Some(2)
        }));
        assert_eq!(batch.via(0), Some(x));
        assert_eq!(io.send(&mut batch).expect("send").sent, 4, "{kind}");
        let mut buf = [0u8; 16];
        for (data, from) in [(b"x1", xa), (b"p1", primary), (b"y1", ya), (b"y2", ya)] {
            let (n, f) = p.recv_from(&mut buf).expect("peer recv");
            assert_eq!((&buf[..n], f), (&data[..], from), "{kind}");
        }

        // A removed socket: its id is dead (sends fail, counted), and a new socket gets a new id.
        assert!(io.remove_socket(x));
        assert!(!io.remove_socket(x));
        assert!(!io.remove_socket(SocketId::PRIMARY));
        assert!(io.socket_addr(x).is_err());
        let z = io.add_socket(loopback(), &small).expect("add z");
        assert_ne!(z, x, "ids are not reused");
        batch.push_with_via(x, pa, |b| {
            b[0] = 1;
            Some(1)
        });
        batch.push_with_via(z, pa, |b| {
            b[0] = 2;
            Some(1)
        });
        let r = io.send(&mut batch).expect("send");
        assert_eq!((r.sent, r.failed), (1, 1), "{kind}");
        let (n, f) = p.recv_from(&mut buf).expect("peer recv");
        assert_eq!((&buf[..n], f), (&[2u8][..], io.socket_addr(z).expect("z")));
    }
}

#[test]
fn extra_socket_wakes_a_blocked_receive() {
    for kind in kinds() {
        let mut io = bind(kind);
        let x = io.add_socket(loopback(), &Config::default()).expect("add");
        let xa = io.socket_addr(x).expect("addr");
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let (p, _) = peer();
            p.send_to(b"late", xa).expect("send");
        });
        let start = Instant::now();
        io.prepare_sleep();
        let mut got = Vec::new();
        while got.is_empty() && start.elapsed() < Duration::from_secs(5) {
            io.recv_any(Some(Duration::from_secs(10)), |b, _, via| got.push((b.to_vec(), via))).expect("recv");
        }
        let waited = start.elapsed();
        sender.join().expect("sender");
        assert_eq!(got, vec![(b"late".to_vec(), x)], "{kind}");
        assert!(waited < Duration::from_secs(3), "{kind}: woke only after {waited:?}");
        // And the waker still works with extra sockets present.
        let w = io.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            w.wake();
        });
        let start = Instant::now();
        io.prepare_sleep();
        let n = io.recv_any(Some(Duration::from_secs(10)), |_, _, _| {}).expect("recv");
        t.join().expect("waker thread");
        assert_eq!(n, 0);
        assert!(start.elapsed() < Duration::from_secs(3), "{kind}: wake-up lost");
    }
}

#[test]
fn receive_limit_covers_all_sockets_and_nobody_starves() {
    for kind in kinds() {
        let mut io = bind(kind);
        let primary = io.local_addr().expect("local");
        let x = io.add_socket(loopback(), &Config::default()).expect("add");
        let xa = io.socket_addr(x).expect("addr");
        io.set_recv_limit(4);
        let (p, _) = peer();
        for i in 0..20u8 {
            p.send_to(&[i], primary).expect("send");
            p.send_to(&[100 + i], xa).expect("send");
        }
        std::thread::sleep(Duration::from_millis(50));
        let (mut prim, mut extra) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut calls = 0;
        while prim + extra < 40 && Instant::now() < deadline {
            let mut n = 0;
            io.recv_any(Some(Duration::from_millis(100)), |_, _, via| {
                n += 1;
                if via == SocketId::PRIMARY {
                    prim += 1;
                } else {
                    extra += 1;
                }
            })
            .expect("recv");
            assert!(n <= 4, "{kind}: {n} datagrams in one call with a limit of 4");
            calls += 1;
            if calls == 4 {
                // After a few calls both kinds have been served.
                assert!(prim > 0 && extra > 0, "{kind}: primary {prim}, extra {extra}");
            }
        }
        assert_eq!((prim, extra), (20, 20), "{kind}");
    }
}
