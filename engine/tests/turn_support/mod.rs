//! A minimal blocking TURN client for the engine's TURN tests (REST credentials, long-term
//! MESSAGE-INTEGRITY), plus credential minting exactly as `control/src/turn.rs` does it.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use switchyard_protocol::Reply;
use switchyard_stun::{long_term_key, AttrType, Class, Message, MessageType, MessageWriter, Method};

/// `(username, password)` for `user` valid `ttl_secs` from now (negative: already expired), minted
/// like the control daemon: `"<expiry>:<user>"`, base64(HMAC-SHA1(secret, username)).
pub fn mint(secret: &str, user: &str, ttl_secs: i64) -> (String, String) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let username = format!("{}:{user}", now + ttl_secs);
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// One client 5-tuple talking to the TURN server.
pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub realm: Vec<u8>,
    pub nonce: Vec<u8>,
    pub username: String,
    pub password: String,
    pub key: [u8; 16],
    tid: u8,
}

/// An error response: code and reason.
#[derive(Debug, PartialEq, Eq)]
pub struct TurnError(pub u16, pub String);

impl Client {
    pub fn new(server: SocketAddr, username: &str, password: &str) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        // The realm and nonce are learnt from the first 401; the key is computed then.
        Client {
            sock,
            server,
            realm: Vec::new(),
            nonce: Vec::new(),
            username: username.into(),
            password: password.into(),
            key: [0; 16],
            tid: 0,
        }
    }

    /// Sends `method` with `attrs` (+ credentials when known) and waits for the response.
    pub fn request(&mut self, method: Method, attrs: &[(AttrType, Vec<u8>)], peers: &[SocketAddr]) -> Result<Vec<u8>, TurnError> {
        for _attempt in 0..3 {
            self.tid = self.tid.wrapping_add(1);
            let tid = [self.tid; 12];
            let mut b = vec![0u8; 1500];
            let mut w = MessageWriter::new(&mut b, MessageType::new(Class::Request, method), &tid).unwrap();
            for (t, v) in attrs {
                w.add_attr(*t, v).unwrap();
            }
            for p in peers {
                w.add_xor_address(AttrType::XOR_PEER_ADDRESS, *p).unwrap();
            }
            if !self.nonce.is_empty() {
                w.add_attr(AttrType::USERNAME, self.username.as_bytes()).unwrap();
                w.add_attr(AttrType::REALM, &self.realm).unwrap();
                w.add_attr(AttrType::NONCE, &self.nonce).unwrap();
                w.add_message_integrity(&self.key).unwrap();
            }
            w.add_fingerprint().unwrap();
            let n = w.finish();
            self.sock.send_to(&b[..n], self.server).unwrap();
            let mut r = vec![0u8; 2048];
            let n = loop {
                let (n, _) = recv(&self.sock, &mut r).map_err(|e| TurnError(0, format!("no response: {e}")))?;
                let m = Message::parse(&r[..n]).map_err(|e| TurnError(0, e.to_string()))?;
                if m.transaction_id() == &tid {
                    break n;
                }
            };
            r.truncate(n);
            let m = Message::parse(&r).unwrap();
            match (m.class(), m.error_code()) {
                (Class::SuccessResponse, _) => {
                    assert!(m.verify_integrity(&self.key), "success responses carry MESSAGE-INTEGRITY");
                    return Ok(r);
                }
                (_, Some(e)) if (e.code == 401 && self.nonce.is_empty()) || e.code == 438 => {
                    // The challenge: learn realm and nonce, retry once with credentials.
                    self.realm = m.realm().unwrap().to_vec();
                    self.nonce = m.nonce().unwrap().to_vec();
                    self.key = long_term_key(self.username.as_bytes(), &self.realm, self.password.as_bytes());
                }
                (_, Some(e)) => return Err(TurnError(e.code, String::from_utf8_lossy(e.reason).into())),
                _ => return Err(TurnError(0, "malformed response".into())),
            }
        }
        Err(TurnError(401, "still challenged after sending credentials".into()))
    }

    /// Allocate (UDP, `lifetime` seconds if given): the relayed address.
    pub fn allocate(&mut self, lifetime: Option<u32>) -> Result<SocketAddr, TurnError> {
        let mut attrs = vec![(AttrType::REQUESTED_TRANSPORT, vec![17, 0, 0, 0])];
        if let Some(l) = lifetime {
            attrs.push((AttrType::LIFETIME, l.to_be_bytes().to_vec()));
        }
        let r = self.request(Method::ALLOCATE, &attrs, &[])?;
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.xor_mapped_address(), Some(self.sock.local_addr().unwrap()));
        Ok(m.xor_relayed_address().unwrap())
    }

    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<(), TurnError> {
        self.request(Method::CREATE_PERMISSION, &[], &[peer]).map(drop)
    }

    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), TurnError> {
        let [a, b] = channel.to_be_bytes();
        self.request(Method::CHANNEL_BIND, &[(AttrType::CHANNEL_NUMBER, vec![a, b, 0, 0])], &[peer]).map(drop)
    }

    pub fn refresh(&mut self, lifetime: u32) -> Result<u32, TurnError> {
        let r = self.request(Method::REFRESH, &[(AttrType::LIFETIME, lifetime.to_be_bytes().to_vec())], &[])?;
        Ok(Message::parse(&r).unwrap().lifetime().unwrap())
    }
}

/// Sum of a named counter (or drop reason) over the workers of a Stats reply.
pub fn counter(stats: &Reply, name: &str, drops: bool) -> u64 {
    let Reply::Stats(s) = stats else { panic!("not stats: {stats:?}") };
    s.workers
        .iter()
        .flat_map(|w| if drops { w.drops.iter() } else { w.counters.iter() })
        .filter(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .sum()
}

/// `recv_from` that retries `EINTR` (std does not; a socket with a read timeout reports it).
pub fn recv(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        match sock.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
