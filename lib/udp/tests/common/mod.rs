//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::net::SocketAddr;

use switchyard_udp::{probe_uring, Config, IoKind, UdpIo};

/// The backends to test: mmsg always, io_uring unless it is truly unavailable here (then the
/// reason is printed and the io_uring half of each test is skipped).
pub fn kinds() -> Vec<IoKind> {
    match probe_uring() {
        Ok(()) => vec![IoKind::Mmsg, IoKind::Uring],
        Err(reason) => {
            eprintln!("SKIP io_uring backend: {reason}");
            vec![IoKind::Mmsg]
        }
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn bind(kind: IoKind) -> UdpIo {
    bind_with(kind, &Config::default())
}

#[allow(dead_code)] // not every test binary uses it
pub fn bind_with(kind: IoKind, config: &Config) -> UdpIo {
    let (io, fallback) = UdpIo::bind(loopback(), Some(kind), config).expect("bind");
    assert_eq!(fallback, None);
    assert_eq!(io.kind(), kind);
    io
}

/// Deterministic payload for datagram `seq` of `len` bytes (len >= 4): the sequence number, then
/// a pattern derived from it.
pub fn payload(seq: u32, len: usize, out: &mut [u8]) -> usize {
    out[..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in out[4..len].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    len
}

pub fn check_payload(data: &[u8]) -> Option<u32> {
    if data.len() < 4 {
        return None;
    }
    let seq = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let mut expect = [0u8; 2048];
    payload(seq, data.len(), &mut expect);
    (expect[..data.len()] == *data).then_some(seq)
}
