//! After warm-up, receiving and sending through either backend performs no heap allocation.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket;
use std::time::Duration;

use common::{bind_with, kinds, loopback};
use switchyard_udp::{Config, SendBatch, MAX_DATAGRAM};

/// Ping-pong rounds with a short coalescing window (the gathering path is exercised too, without
/// waiting the default's millisecond per round).
fn short_window() -> Config {
    Config { recv_coalesce: Duration::from_micros(50), ..Config::default() }
}

/// Counts allocations made by the current thread (other test threads do not disturb the count).
struct CountingAlloc;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

// SAFETY: forwards every call unchanged to the system allocator; counting touches only a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn steady_state_round_trips_do_not_allocate() {
    const WARMUP: u32 = 200;
    const ROUNDS: u32 = 10_000;
    // The counter works: an allocation on this thread is seen.
    let b = allocs();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(8)));
    assert!(allocs() > b, "counting allocator is not counting");
    for kind in kinds() {
        let mut io = bind_with(kind, &short_window());
        let io_addr = io.local_addr().expect("local_addr");
        let peer = UdpSocket::bind(loopback()).expect("peer");
        peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut batch = SendBatch::new(64);
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut echoed = 0u64;
        let mut before = 0;
        for i in 0..WARMUP + ROUNDS {
            if i == WARMUP {
                before = allocs();
            }
            let len = 20 + (i as usize % 1200);
            buf[..4].copy_from_slice(&i.to_be_bytes());
            peer.send_to(&buf[..len], io_addr).expect("send_to");
            let mut got = 0;
            while got == 0 {
                got = io
                    .recv(Some(Duration::from_secs(5)), |data, from| {
                        data[0] ^= 0xff; // modify in place
                        batch.push(from, data);
                    })
                    .expect("recv");
            }
            let report = io.send(&mut batch).expect("send");
            echoed += report.sent as u64;
            let (n, _) = peer.recv_from(&mut buf).expect("peer recv");
            assert!(n == len && buf[0] == (i >> 24) as u8 ^ 0xff, "{kind}: bad echo");
        }
        let during = allocs() - before;
        assert_eq!(echoed, u64::from(WARMUP + ROUNDS), "{kind}");
        assert_eq!(during, 0, "{kind}: {during} heap allocations in {ROUNDS} round trips");
        eprintln!("{kind}: {ROUNDS} round trips, 0 allocations");
    }
}

/// The same through an extra socket (`add_socket`): epoll + recvmmsg in, `push_with_via` out.
#[test]
fn extra_socket_round_trips_do_not_allocate() {
    use switchyard_udp::SocketId;
    const WARMUP: u32 = 200;
    const ROUNDS: u32 = 5_000;
    for kind in kinds() {
        let mut io = bind_with(kind, &short_window());
        let x = io.add_socket(loopback(), &Config::default()).expect("add");
        let xa = io.socket_addr(x).expect("addr");
        let peer = UdpSocket::bind(loopback()).expect("peer");
        peer.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut batch = SendBatch::new(64);
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut before = 0;
        for i in 0..WARMUP + ROUNDS {
            if i == WARMUP {
                before = allocs();
            }
            let len = 20 + (i as usize % 1200);
            buf[..4].copy_from_slice(&i.to_be_bytes());
            peer.send_to(&buf[..len], xa).expect("send_to");
            let mut got = 0;
            while got == 0 {
                got = io
                    .recv_any(Some(Duration::from_secs(5)), |data, from, via| {
                        assert_eq!(via, x);
                        batch.push_with_via(via, from, |out| {
                            out[..data.len()].copy_from_slice(data);
                            Some(data.len())
                        });
                    })
                    .expect("recv");
            }
            assert_eq!(batch.via(0), Some(x));
            assert_ne!(batch.via(0), Some(SocketId::PRIMARY));
            io.send(&mut batch).expect("send");
            let (n, from) = peer.recv_from(&mut buf).expect("peer recv");
            assert!(n == len && from == xa, "{kind}: bad echo");
        }
        let during = allocs() - before;
        assert_eq!(during, 0, "{kind}: {during} heap allocations in {ROUNDS} round trips via an extra socket");
        eprintln!("{kind}: {ROUNDS} extra-socket round trips, 0 allocations");
    }
}
