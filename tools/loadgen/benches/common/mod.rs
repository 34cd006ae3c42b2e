//! What the engine benchmarks share: an `Output` that keeps nothing, and an ICE check that binds a
//! transport's address.

use std::net::SocketAddr;
use std::time::Instant;

use switchyard_engine::forwarder::{Forwarder, Output};
use switchyard_engine::handoff::Handoff;
use switchyard_protocol::Event;
use switchyard_stun::BindingRequest;

/// The ICE password of every benchmark transport.
pub const PWD: &str = "bench-password-0123456789ab";

/// Writes every datagram into one buffer and counts them; hand-offs are refused.
pub struct Sink {
    buf: Vec<u8>,
    /// Datagrams written.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
}

impl Sink {
    pub fn new() -> Sink {
        Sink { buf: vec![0u8; 2048], packets: 0, bytes: 0 }
    }
}

impl Output for Sink {
    fn send<F: FnOnce(&mut [u8]) -> Option<usize>>(&mut self, _to: SocketAddr, _received: Instant, fill: F) -> bool {
        match fill(&mut self.buf) {
            Some(n) => {
                self.packets += 1;
                self.bytes += n as u64;
                true
            }
            None => false,
        }
    }
    fn handoff(&mut self, _worker: u16, h: Handoff) -> Result<(), Handoff> {
        Err(h)
    }
    fn event(&mut self, _ev: Event) -> bool {
        true
    }
}

/// Sends the forwarder a nominating ICE check for `ufrag` from `from`, which binds that address.
pub fn bind(fwd: &mut Forwarder, ufrag: &str, from: SocketAddr, now: Instant, out: &mut Sink) {
    let user = format!("{ufrag}:client");
    let req = BindingRequest {
        transaction_id: [7; 12],
        username: user.as_bytes(),
        password: PWD.as_bytes(),
        priority: 1,
        use_candidate: true,
        controlling: Some(1),
        controlled: None,
    };
    let mut buf = vec![0u8; 256];
    let n = req.write(&mut buf).expect("check");
    fwd.handle_datagram(now, from, &mut buf[..n], out);
}
