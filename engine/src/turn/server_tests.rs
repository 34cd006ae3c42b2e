//! The TURN server's packet path, sans-I/O: byte slices and a fake clock in, captured datagrams out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_stun::{
    write_channel_data, write_send_indication, AttrType, Class, Message, MessageType, MessageWriter, Method,
};
use switchyard_udp::SocketId;

use super::auth::{rest_key, rest_password};
use super::server::{Relay, RelayWant, TurnOutput, TurnServer};
use super::shared::TurnShared;
use super::TurnConfig;
use crate::stats::{Counter, DropReason, WorkerCounters};

const SECRET: &str = "test-secret";
const REALM: &str = "switchyard";
/// Wall clock at the start of every test.
const T0: u64 = 1_700_000_000;
const LISTENER: SocketId = SocketId::from_raw(1);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[derive(Default)]
struct Fake {
    sent: Vec<(SocketId, SocketAddr, Vec<u8>)>,
    opened: Vec<(RelayWant, Relay)>,
    closed: Vec<SocketId>,
    next: u32,
    no_ports: bool,
}

impl TurnOutput for Fake {
    fn send<F: FnOnce(&mut [u8]) -> Option<usize>>(&mut self, via: SocketId, to: SocketAddr, fill: F) -> bool {
        let mut b = vec![0u8; switchyard_udp::MAX_DATAGRAM];
        match fill(&mut b) {
            Some(n) => {
                b.truncate(n);
                self.sent.push((via, to, b));
                true
            }
            None => false,
        }
    }

    fn open_relay(&mut self, want: RelayWant) -> Option<Relay> {
        if self.no_ports {
            return None;
        }
        self.next += 1;
        let id = SocketId::from_raw(100 + self.next);
        let port = 49_160 + 2 * self.next as u16;
        let reservation = matches!(want, RelayWant::Even { reserve_next: true }).then_some([9; 8]);
        let r = Relay { id, addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port), reservation };
        self.opened.push((want, r));
        Some(r)
    }

    fn close_relay(&mut self, id: SocketId) {
        self.closed.push(id);
    }
}

impl Fake {
    /// The one datagram sent since the last call.
    fn take_one(&mut self) -> (SocketId, SocketAddr, Vec<u8>) {
        assert_eq!(self.sent.len(), 1, "expected exactly one datagram, got {:?}", self.sent.len());
        self.sent.remove(0)
    }
}

struct Setup {
    server: TurnServer,
    shared: Arc<TurnShared>,
    counters: Arc<WorkerCounters>,
    out: Fake,
    t0: Instant,
}

/// The engine's own TURN and media ports (never peers).
const OWN: [u16; 2] = [3478, 40_001];

fn setup_with(cfg: TurnConfig) -> Setup {
    let counters = Arc::new(WorkerCounters::default());
    let shared = TurnShared::with_keys(cfg, IpAddr::from([127, 0, 0, 1]), [1; 32], [2; 32]).with_own_ports(OWN.to_vec());
    let shared = Arc::new(shared);
    let t0 = Instant::now();
    let server = TurnServer::with_clock(Arc::clone(&shared), Arc::clone(&counters), LISTENER, t0, T0);
    Setup { server, shared, counters, out: Fake::default(), t0 }
}

fn setup() -> Setup {
    setup_with(TurnConfig { secret: SECRET.into(), realm: REALM.into(), ..TurnConfig::default() })
}

/// A REST username valid for an hour after T0.
fn user(name: &str) -> String {
    format!("{}:{name}", T0 + 3600)
}

/// A request built by a test client: method, transaction id, attributes, then (when credentials
/// are given) USERNAME, REALM, NONCE, MESSAGE-INTEGRITY; always FINGERPRINT.
struct Req<'a> {
    method: Method,
    tid: [u8; 12],
    creds: Option<(&'a str, &'a str, &'a [u8])>,
    attrs: Vec<(AttrType, Vec<u8>)>,
    peers: Vec<SocketAddr>,
}

impl<'a> Req<'a> {
    fn new(method: Method, tid: u8) -> Req<'a> {
        Req { method, tid: [tid; 12], creds: None, attrs: Vec::new(), peers: Vec::new() }
    }

    fn allocate(tid: u8) -> Req<'a> {
        Req::new(Method::ALLOCATE, tid).attr(AttrType::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
    }

    fn attr(mut self, t: AttrType, v: &[u8]) -> Self {
        self.attrs.push((t, v.to_vec()));
        self
    }

    fn lifetime(self, secs: u32) -> Self {
        self.attr(AttrType::LIFETIME, &secs.to_be_bytes())
    }

    fn peer(mut self, p: SocketAddr) -> Self {
        self.peers.push(p);
        self
    }

    fn channel(self, n: u16) -> Self {
        let [a, b] = n.to_be_bytes();
        self.attr(AttrType::CHANNEL_NUMBER, &[a, b, 0, 0])
    }

    /// Credentials: username, password, nonce.
    fn creds(mut self, username: &'a str, password: &'a str, nonce: &'a [u8]) -> Self {
        self.creds = Some((username, password, nonce));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; 1500];
        let mut w = MessageWriter::new(&mut b, MessageType::new(Class::Request, self.method), &self.tid).unwrap();
        for (t, v) in &self.attrs {
            w.add_attr(*t, v).unwrap();
        }
        for p in &self.peers {
            w.add_xor_address(AttrType::XOR_PEER_ADDRESS, *p).unwrap();
        }
        if let Some((u, p, n)) = self.creds {
            w.add_attr(AttrType::USERNAME, u.as_bytes()).unwrap();
            w.add_attr(AttrType::REALM, REALM.as_bytes()).unwrap();
            w.add_attr(AttrType::NONCE, n).unwrap();
            let key = switchyard_stun::long_term_key(u.as_bytes(), REALM.as_bytes(), p.as_bytes());
            w.add_message_integrity(&key).unwrap();
        }
        w.add_fingerprint().unwrap();
        let n = w.finish();
        b.truncate(n);
        b
    }
}

fn password(username: &str) -> String {
    String::from_utf8(rest_password(SECRET.as_bytes(), username.as_bytes()).to_vec()).unwrap()
}

impl Setup {
    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn client(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.server.handle_client(now, from, datagram, &mut self.out);
    }

    /// Sends a request and returns the response's bytes (exactly one datagram, back to `from`
    /// through the listener).
    fn request(&mut self, now: Instant, from: SocketAddr, req: &Req<'_>) -> Vec<u8> {
        self.client(now, from, &req.bytes());
        let (via, to, bytes) = self.out.take_one();
        assert_eq!((via, to), (LISTENER, from));
        bytes
    }

    /// The nonce of a 401 challenge to an unauthenticated Allocate.
    fn nonce(&mut self, now: Instant, from: SocketAddr) -> Vec<u8> {
        let r = self.request(now, from, &Req::allocate(0xee));
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.error_code().unwrap().code, 401);
        m.nonce().unwrap().to_vec()
    }

    /// A complete allocation for `username` from `from`; returns (relayed address, relay socket).
    fn allocate(&mut self, now: Instant, from: SocketAddr, username: &str) -> (SocketAddr, SocketId) {
        let nonce = self.nonce(now, from);
        let pw = password(username);
        let r = self.request(now, from, &Req::allocate(1).creds(username, &pw, &nonce));
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.class(), Class::SuccessResponse, "{:?}", m.error_code());
        let relayed = m.xor_relayed_address().unwrap();
        let (_, relay) = self.out.opened.last().copied().unwrap();
        assert_eq!(relay.addr, relayed);
        (relayed, relay.id)
    }

    /// An authenticated request on an existing allocation; returns the parsed response bytes.
    fn authed(&mut self, now: Instant, from: SocketAddr, username: &str, req: Req<'_>) -> Vec<u8> {
        let nonce = self.server_nonce(now, from);
        let pw = password(username);
        self.request(now, from, &req.creds(username, &pw, &nonce))
    }

    fn server_nonce(&self, now: Instant, from: SocketAddr) -> Vec<u8> {
        self.shared.nonces.issue(from, self.server.unix_time(now)).to_vec()
    }

    fn peer(&mut self, now: Instant, relay: SocketId, from: SocketAddr, data: &[u8]) {
        self.server.handle_peer(now, relay, from, data, &mut self.out);
    }
}

fn code(r: &[u8]) -> Option<u16> {
    let m = Message::parse(r).unwrap();
    m.error_code().map(|e| e.code)
}

const CLIENT: &str = "198.51.100.7:40000";
const PEER: &str = "127.0.0.1:5555";

#[test]
fn binding_requests_are_answered_without_credentials() {
    let mut s = setup();
    let from = addr(CLIENT);
    let r = s.request(s.t0, from, &Req::new(Method::BINDING, 3));
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.msg_type(), MessageType::BINDING_SUCCESS);
    assert_eq!(m.transaction_id(), &[3; 12]);
    assert_eq!(m.xor_mapped_address(), Some(from));
    assert!(!m.has_integrity());
    assert!(m.verify_fingerprint());
    assert_eq!(s.counters.get(Counter::TurnBindings), 1);
}

#[test]
fn allocate_is_challenged_with_401_then_succeeds() {
    let mut s = setup();
    let from = addr(CLIENT);
    let now = s.t0;
    // 1. No credentials: 401 with REALM and NONCE, no MESSAGE-INTEGRITY; not an auth failure.
    let r = s.request(now, from, &Req::allocate(1));
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.msg_type(), MessageType::new(Class::ErrorResponse, Method::ALLOCATE));
    assert_eq!(m.error_code().unwrap().code, 401);
    assert_eq!(m.realm(), Some(REALM.as_bytes()));
    assert!(!m.has_integrity());
    let nonce = m.nonce().unwrap().to_vec();
    assert_eq!(s.counters.get(Counter::TurnAuthFailures), 0);
    assert!(s.out.opened.is_empty());

    // 2. With the REST credential the control daemon would mint: success.
    let username = user("alice");
    let pw = password(&username);
    let req = Req::allocate(2).creds(&username, &pw, &nonce).lifetime(1200);
    let r = s.request(now, from, &req);
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.msg_type(), MessageType::new(Class::SuccessResponse, Method::ALLOCATE));
    let key = rest_key(SECRET.as_bytes(), username.as_bytes(), REALM.as_bytes());
    assert!(m.verify_integrity(&key), "the response is authenticated with the long-term key");
    assert!(m.verify_fingerprint());
    assert_eq!(m.xor_mapped_address(), Some(from));
    assert_eq!(m.lifetime(), Some(1200));
    let relayed = m.xor_relayed_address().unwrap();
    assert_eq!(s.out.opened.len(), 1);
    assert_eq!(s.out.opened[0].0, RelayWant::Any);
    assert_eq!(s.out.opened[0].1.addr, relayed);
    assert_eq!(s.server.relayed_address(from), Some(relayed));
    assert_eq!(s.counters.get(Counter::TurnAllocations), 1);
    assert_eq!(s.shared.allocations_of("alice"), 1);

    // 3. A retransmission gets the same answer and no second relay; a new Allocate on the same
    //    5-tuple is a mismatch.
    let again = s.request(now, from, &req);
    assert_eq!(again, r);
    assert_eq!(s.out.opened.len(), 1);
    let r = s.request(now, from, &Req::allocate(3).creds(&username, &pw, &nonce));
    assert_eq!(code(&r), Some(437));
    assert!(Message::parse(&r).unwrap().verify_integrity(&key));
}

#[test]
fn lifetimes_are_clamped() {
    let mut s = setup();
    for (i, (asked, granted)) in [(None, 600), (Some(30), 600), (Some(1800), 1800), (Some(99_999), 3600)].into_iter().enumerate() {
        let from = SocketAddr::new(IpAddr::from([198, 51, 100, 7]), 40_000 + i as u16);
        let username = user(&format!("u{i}"));
        let nonce = s.nonce(s.t0, from);
        let pw = password(&username);
        let mut req = Req::allocate(1).creds(&username, &pw, &nonce);
        if let Some(a) = asked {
            req = req.lifetime(a);
        }
        let r = s.request(s.t0, from, &req);
        assert_eq!(Message::parse(&r).unwrap().lifetime(), Some(granted), "asked {asked:?}");
    }
}

#[test]
fn wrong_expired_and_malformed_credentials_are_refused() {
    let mut s = setup();
    let from = addr(CLIENT);
    let now = s.t0;
    let nonce = s.nonce(now, from);
    let good = user("alice");
    let good_pw = password(&good);
    let expired = format!("{}:alice", T0 - 1);
    let expired_pw = password(&expired);
    let not_rest = "alice";
    let not_rest_pw = password(not_rest);
    let cases: [(&str, &str, &[u8], u16); 5] = [
        (&good, "wrong-password", &nonce, 401),
        (&expired, &expired_pw, &nonce, 401),
        (not_rest, &not_rest_pw, &nonce, 401),
        (&good, &good_pw, b"0123456789abcdef01234567", 438),
        (&good, &good_pw, b"bogus", 438),
    ];
    for (i, (u, p, n, want)) in cases.into_iter().enumerate() {
        let r = s.request(now, from, &Req::allocate(10 + i as u8).creds(u, p, n));
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.error_code().map(|e| e.code), Some(want), "case {i}");
        assert_eq!(m.realm(), Some(REALM.as_bytes()), "case {i}");
        assert!(m.nonce().is_some() && !m.has_integrity(), "case {i}");
    }
    assert_eq!(s.counters.get(Counter::TurnAuthFailures), 3, "stale nonces are not failures");
    // A password minted with another secret.
    let mut other = [0u8; 28];
    other.copy_from_slice(&rest_password(b"another-secret", good.as_bytes()));
    let r = s.request(now, from, &Req::allocate(20).creds(&good, std::str::from_utf8(&other).unwrap(), &nonce));
    assert_eq!(code(&r), Some(401));
    // The nonce is bound to the client address.
    let r = s.request(now, addr("198.51.100.8:40000"), &Req::allocate(21).creds(&good, &good_pw, &nonce));
    assert_eq!(code(&r), Some(438));
    // A nonce goes stale after an hour.
    let later = s.at(3601);
    let r = s.request(later, from, &Req::allocate(22).creds(&good, &good_pw, &nonce));
    assert_eq!(code(&r), Some(438));
    // MESSAGE-INTEGRITY without USERNAME/REALM/NONCE: 400.
    let mut b = vec![0u8; 200];
    let mut w = MessageWriter::new(&mut b, MessageType::new(Class::Request, Method::ALLOCATE), &[5; 12]).unwrap();
    w.add_attr(AttrType::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
    w.add_message_integrity(b"key").unwrap();
    let n = w.finish();
    s.client(now, from, &b[..n]);
    let (_, _, r) = s.out.take_one();
    assert_eq!(code(&r), Some(400));
    // Expiry is checked against the clock: the good username expires an hour after T0.
    let r = s.request(s.at(3600), from, &Req::allocate(23).creds(&good, &good_pw, &s.server_nonce(s.at(3600), from)));
    assert_eq!(code(&r), Some(401));
    assert!(s.out.opened.is_empty(), "nothing was allocated");
    assert_eq!(s.server.allocation_count(), 0);
}

#[test]
fn requests_need_the_allocations_credentials_and_5_tuple() {
    let mut s = setup();
    let from = addr(CLIENT);
    let now = s.t0;
    s.allocate(now, from, &user("alice"));
    // Another user's valid credentials on alice's allocation: 441.
    let r = s.authed(now, from, &user("bob"), Req::new(Method::REFRESH, 4));
    assert_eq!(code(&r), Some(441));
    // No allocation for this 5-tuple: 437.
    let r = s.authed(now, addr("198.51.100.7:40001"), &user("alice"), Req::new(Method::REFRESH, 5));
    assert_eq!(code(&r), Some(437));
    // Refresh/CreatePermission without credentials are challenged too.
    let r = s.request(now, from, &Req::new(Method::CREATE_PERMISSION, 6).peer(addr(PEER)));
    assert_eq!(code(&r), Some(401));
}

#[test]
fn allocate_checks_transport_family_and_attributes() {
    let mut s = setup();
    let from = addr(CLIENT);
    let now = s.t0;
    let u = user("alice");
    let cases: [(Req<'_>, u16); 5] = [
        (Req::new(Method::ALLOCATE, 1), 400),
        (Req::new(Method::ALLOCATE, 2).attr(AttrType::REQUESTED_TRANSPORT, &[6, 0, 0, 0]), 442),
        (Req::allocate(3).attr(AttrType::REQUESTED_ADDRESS_FAMILY, &[2, 0, 0, 0]), 440),
        (Req::allocate(4).attr(AttrType::DONT_FRAGMENT, &[]), 420),
        (Req::allocate(5).attr(AttrType::EVEN_PORT, &[0]).attr(AttrType::RESERVATION_TOKEN, &[1; 8]), 400),
    ];
    for (req, want) in cases {
        let r = s.authed(now, from, &u, req);
        assert_eq!(code(&r), Some(want));
        let m = Message::parse(&r).unwrap();
        if want == 420 {
            assert_eq!(m.attr(AttrType::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x1A][..]));
        }
    }
    assert!(s.out.opened.is_empty());
    // EVEN-PORT with R: the relay is asked for an even port and the next one held; the token is
    // handed back.
    let r = s.authed(now, from, &u, Req::allocate(6).attr(AttrType::EVEN_PORT, &[0x80]));
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(m.reservation_token(), Some([9; 8]));
    assert_eq!(s.out.opened[0].0, RelayWant::Even { reserve_next: true });
    // A token is redeemed by another Allocate (another 5-tuple).
    let r = s.authed(now, addr("198.51.100.7:40002"), &u, Req::allocate(7).attr(AttrType::RESERVATION_TOKEN, &[9; 8]));
    assert_eq!(Message::parse(&r).unwrap().class(), Class::SuccessResponse);
    assert_eq!(s.out.opened[1].0, RelayWant::Reserved([9; 8]));
    // No port free: 508 and the quota is given back.
    s.out.no_ports = true;
    let r = s.authed(now, addr("198.51.100.7:40003"), &u, Req::allocate(8));
    assert_eq!(code(&r), Some(508));
    assert_eq!(s.shared.allocations_of("alice"), 2);
    // Unknown methods get 400; responses and unknown indications are dropped.
    let r = s.request(now, from, &Req::new(Method::new(0x0AB), 9));
    assert_eq!(code(&r), Some(400));
}

#[test]
fn permission_required_before_data_flows() {
    let mut s = setup();
    let from = addr(CLIENT);
    let peer = addr(PEER);
    let now = s.t0;
    let username = user("alice");
    let (relayed, relay) = s.allocate(now, from, &username);
    let mut send = vec![0u8; 300];
    let n = write_send_indication(&mut send, &[1; 12], peer, b"hello peer").unwrap();
    send.truncate(n);

    // No permission: nothing flows either way.
    s.client(now, from, &send);
    s.peer(now, relay, peer, b"hello client");
    assert!(s.out.sent.is_empty());
    assert_eq!(s.counters.dropped(DropReason::TurnNoPermission), 2);

    // CreatePermission for the peer's IP (the port does not matter).
    let r = s.authed(now, from, &username, Req::new(Method::CREATE_PERMISSION, 7).peer(SocketAddr::new(peer.ip(), 1)));
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.msg_type(), MessageType::new(Class::SuccessResponse, Method::CREATE_PERMISSION));
    assert!(m.verify_integrity(&rest_key(SECRET.as_bytes(), username.as_bytes(), REALM.as_bytes())));

    // Client to peer: out of the relay socket, payload only.
    s.client(now, from, &send);
    assert_eq!(s.out.take_one(), (relay, peer, b"hello peer".to_vec()));
    // Peer to client: a Data indication from the listener, naming the peer.
    s.peer(now, relay, peer, b"hello client");
    let (via, to, bytes) = s.out.take_one();
    assert_eq!((via, to), (LISTENER, from));
    let m = Message::parse(&bytes).unwrap();
    assert_eq!(m.msg_type(), MessageType::new(Class::Indication, Method::DATA));
    assert_eq!(m.xor_peer_address(), Some(peer));
    assert_eq!(m.data(), Some(&b"hello client"[..]));
    // Another IP still has none.
    s.peer(now, relay, addr("127.0.0.2:5555"), b"intruder");
    assert!(s.out.sent.is_empty());
    assert_eq!(s.counters.get(Counter::TurnRelayedToPeer), 1);
    assert_eq!(s.counters.get(Counter::TurnRelayedToClient), 1);
    // Data for the relay from the wrong socket id, or a Send from a client without allocation.
    s.peer(now, SocketId::from_raw(999), peer, b"x");
    s.client(now, addr("198.51.100.9:1"), &send);
    assert!(s.out.sent.is_empty());
    assert_eq!(s.counters.dropped(DropReason::TurnNoAllocation), 2);
    let _ = relayed;
}

#[test]
fn channel_data_flows_both_ways() {
    let mut s = setup();
    let from = addr(CLIENT);
    let peer = addr(PEER);
    let now = s.t0;
    let username = user("alice");
    let (_, relay) = s.allocate(now, from, &username);
    // ChannelData before the binding is dropped.
    let mut cd = vec![0u8; 100];
    let n = write_channel_data(&mut cd, 0x4001, b"via channel").unwrap();
    cd.truncate(n);
    s.client(now, from, &cd);
    assert!(s.out.sent.is_empty());

    let r = s.authed(now, from, &username, Req::new(Method::CHANNEL_BIND, 8).channel(0x4001).peer(peer));
    assert_eq!(Message::parse(&r).unwrap().msg_type(), MessageType::new(Class::SuccessResponse, Method::CHANNEL_BIND));
    // Client to peer.
    s.client(now, from, &cd);
    assert_eq!(s.out.take_one(), (relay, peer, b"via channel".to_vec()));
    // Padded ChannelData (allowed over UDP) too.
    let mut padded = cd.clone();
    padded.push(0);
    s.client(now, from, &padded);
    assert_eq!(s.out.take_one().2, b"via channel".to_vec());
    // Peer to client: ChannelData, 4-byte header and the payload.
    s.peer(now, relay, peer, b"reply");
    let (via, to, bytes) = s.out.take_one();
    assert_eq!((via, to), (LISTENER, from));
    assert_eq!(bytes, [&[0x40, 0x01, 0, 5][..], b"reply"].concat());
    // The same IP on another port has the permission (installed by ChannelBind) but no channel:
    // Data indication.
    s.peer(now, relay, addr("127.0.0.1:5556"), b"other port");
    let (_, _, bytes) = s.out.take_one();
    assert_eq!(Message::parse(&bytes).unwrap().data(), Some(&b"other port"[..]));
    // Refreshing the same binding is fine; rebinding the number or the peer differently is not;
    // numbers outside 0x4000..=0x7FFE are refused.
    for (ch, p, want) in [
        (0x4001, peer, None),
        (0x4002, peer, Some(400)),
        (0x4001, addr("127.0.0.1:5557"), Some(400)),
        (0x3FFF, addr("127.0.0.1:5558"), Some(400)),
        (0x7FFF, addr("127.0.0.1:5558"), Some(400)),
        (0x7FFE, addr("127.0.0.1:5558"), None),
    ] {
        let r = s.authed(now, from, &username, Req::new(Method::CHANNEL_BIND, 9).channel(ch).peer(p));
        assert_eq!(code(&r), want, "channel {ch:#x} to {p}");
    }
    // Malformed ChannelData: length beyond the datagram, or too much trailing data.
    s.client(now, from, &[0x40, 0x01, 0, 50, 1, 2]);
    s.client(now, from, &[&cd[..], &[0; 4]].concat());
    assert!(s.out.sent.is_empty());
    assert_eq!(s.counters.dropped(DropReason::TurnMalformed), 2);
}

#[test]
fn permissions_channels_and_allocations_expire() {
    let mut s = setup();
    let from = addr(CLIENT);
    let peer = addr(PEER);
    let username = user("alice");
    let (_, relay) = s.allocate(s.t0, from, &username);
    let r = s.authed(s.t0, from, &username, Req::new(Method::CHANNEL_BIND, 8).channel(0x4001).peer(peer));
    assert_eq!(code(&r), None);
    let mut cd = vec![0u8; 100];
    let n = write_channel_data(&mut cd, 0x4001, b"x").unwrap();
    cd.truncate(n);

    // 299 s: the permission still holds.
    s.server.tick(s.at(299), &mut s.out);
    s.client(s.at(299), from, &cd);
    assert_eq!(s.out.take_one().0, relay);
    // 300 s: the permission (300 s) is gone although the channel (600 s) is not; nothing flows
    // even before a sweep.
    s.client(s.at(300), from, &cd);
    s.peer(s.at(300), relay, peer, b"y");
    assert!(s.out.sent.is_empty());
    // A fresh CreatePermission brings the channel back to life.
    let r = s.authed(s.at(301), from, &username, Req::new(Method::CREATE_PERMISSION, 9).peer(peer));
    assert_eq!(code(&r), None);
    s.client(s.at(301), from, &cd);
    assert_eq!(s.out.take_one().0, relay);
    // The allocation (600 s by default) is refreshed at 500 s for 700 s more.
    let r = s.authed(s.at(500), from, &username, Req::new(Method::REFRESH, 10).lifetime(700));
    assert_eq!(Message::parse(&r).unwrap().lifetime(), Some(700));
    // 600 s: the channel expired; the permission (to 601 s) still lets Data indications through.
    s.server.tick(s.at(600), &mut s.out);
    s.client(s.at(600), from, &cd);
    assert!(s.out.sent.is_empty());
    s.peer(s.at(600), relay, peer, b"z");
    let (_, _, b) = s.out.take_one();
    assert_eq!(Message::parse(&b).unwrap().method(), Method::DATA);

    // The allocation lives to 1200 s...
    s.server.tick(s.at(1199), &mut s.out);
    assert_eq!(s.server.allocation_count(), 1);
    assert!(s.out.closed.is_empty());
    // ... and gone at 1200 s: relay closed, quota given back, data dropped.
    s.server.tick(s.at(1200), &mut s.out);
    assert_eq!(s.server.allocation_count(), 0);
    assert_eq!(s.out.closed, vec![relay]);
    assert_eq!(s.shared.allocations(), 0);
    assert_eq!(s.counters.get(Counter::TurnAllocationsClosed), 1);
    s.peer(s.at(1200), relay, peer, b"late");
    assert!(s.out.sent.is_empty());
}

#[test]
fn refresh_with_lifetime_zero_deletes() {
    let mut s = setup();
    let from = addr(CLIENT);
    let username = user("alice");
    let (_, relay) = s.allocate(s.t0, from, &username);
    assert_eq!(s.shared.allocations_of("alice"), 1);
    let r = s.authed(s.at(10), from, &username, Req::new(Method::REFRESH, 11).lifetime(0));
    let m = Message::parse(&r).unwrap();
    assert_eq!(m.msg_type(), MessageType::new(Class::SuccessResponse, Method::REFRESH));
    assert_eq!(m.lifetime(), Some(0));
    assert_eq!(s.out.closed, vec![relay]);
    assert_eq!(s.server.allocation_count(), 0);
    assert_eq!(s.shared.allocations_of("alice"), 0);
    // Gone: a second delete gets 437, and the 5-tuple can allocate again.
    let r = s.authed(s.at(11), from, &username, Req::new(Method::REFRESH, 12).lifetime(0));
    assert_eq!(code(&r), Some(437));
    s.allocate(s.at(12), from, &username);
}

#[test]
fn quotas_per_user_and_global() {
    let mut s = setup_with(TurnConfig {
        secret: SECRET.into(),
        realm: REALM.into(),
        max_allocations_per_user: 2,
        max_allocations: 3,
        ..TurnConfig::default()
    });
    let client = |i: u16| SocketAddr::new(IpAddr::from([198, 51, 100, 7]), 40_000 + i);
    let alice = user("alice");
    // Two usernames with different expiries count for the same user.
    let alice2 = format!("{}:alice", T0 + 7200);
    s.allocate(s.t0, client(1), &alice);
    s.allocate(s.t0, client(2), &alice2);
    let r = s.authed(s.t0, client(3), &alice, Req::allocate(1));
    assert_eq!(code(&r), Some(486));
    assert_eq!(s.counters.get(Counter::TurnQuotaRejections), 1);
    // Bob may, until the engine is full.
    s.allocate(s.t0, client(4), &user("bob"));
    let r = s.authed(s.t0, client(5), &user("carol"), Req::allocate(1));
    assert_eq!(code(&r), Some(486));
    // Deleting one of alice's makes room for her (and the engine).
    let r = s.authed(s.t0, client(1), &alice, Req::new(Method::REFRESH, 2).lifetime(0));
    assert_eq!(code(&r), None);
    s.allocate(s.t0, client(3), &alice);
    assert_eq!((s.shared.allocations(), s.shared.allocations_of("alice")), (3, 2));
}

#[test]
fn forbidden_peers_and_family_mismatch() {
    // Relays on a public address: loopback, unspecified and multicast peers are refused.
    let counters = Arc::new(WorkerCounters::default());
    let cfg = TurnConfig { secret: SECRET.into(), realm: REALM.into(), ..TurnConfig::default() };
    let shared = Arc::new(TurnShared::with_keys(cfg, IpAddr::from([192, 0, 2, 1]), [1; 32], [2; 32]));
    let t0 = Instant::now();
    let server = TurnServer::with_clock(Arc::clone(&shared), Arc::clone(&counters), LISTENER, t0, T0);
    let mut s = Setup { server, shared, counters, out: Fake::default(), t0 };
    let from = addr(CLIENT);
    let username = user("alice");
    s.allocate(s.t0, from, &username);
    for (p, want) in [
        ("127.0.0.1:5000", Some(403)),
        ("0.0.0.0:5000", Some(403)),
        ("224.0.0.1:5000", Some(403)),
        ("255.255.255.255:5000", Some(403)),
        ("[2001:db8::1]:5000", Some(443)),
        ("203.0.113.5:5000", None),
    ] {
        let r = s.authed(s.t0, from, &username, Req::new(Method::CREATE_PERMISSION, 3).peer(addr(p)));
        assert_eq!(code(&r), want, "{p}");
    }
    let r = s.authed(s.t0, from, &username, Req::new(Method::CREATE_PERMISSION, 4));
    assert_eq!(code(&r), Some(400), "no XOR-PEER-ADDRESS");
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut s = setup();
    let from = addr(CLIENT);
    let (_, relay) = s.allocate(s.t0, from, &user("alice"));
    let valid = Req::allocate(1).creds("1:x", "y", b"z").bytes();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..20_000 {
        let len = (next() % 200) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match i % 4 {
            // Mutations of a valid request (header intact, attributes damaged).
            0 => {
                buf = valid.clone();
                for _ in 0..3 {
                    let at = (next() as usize) % buf.len();
                    buf[at] = next() as u8;
                }
            }
            1 if !buf.is_empty() => buf[0] = 0x40 | (buf[0] & 0x3F),
            2 if buf.len() >= 20 => {
                buf[0] &= 0x01;
                buf[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
            _ => {}
        }
        s.client(s.t0, from, &buf);
        s.peer(s.t0, relay, addr(PEER), &buf);
        s.out.sent.clear();
    }
    assert!(s.counters.dropped(DropReason::TurnMalformed) > 1000);
}

#[test]
fn the_engines_own_ports_are_not_peers() {
    let mut s = setup();
    let from = addr(CLIENT);
    let username = user("alice");
    let (_, relay) = s.allocate(s.t0, from, &username);
    // The IP is fine (loopback relays may reach loopback peers)...
    let r = s.authed(s.t0, from, &username, Req::new(Method::CREATE_PERMISSION, 3).peer(addr("127.0.0.1:3478")));
    assert_eq!(code(&r), None);
    // ... but not the TURN listener or a media port.
    for own in OWN {
        let r = s.authed(s.t0, from, &username, Req::new(Method::CHANNEL_BIND, 4).channel(0x4100).peer(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), own)));
        assert_eq!(code(&r), Some(403), "port {own}");
        let mut send = vec![0u8; 100];
        let n = write_send_indication(&mut send, &[1; 12], SocketAddr::new(IpAddr::from([127, 0, 0, 1]), own), b"loop").unwrap();
        s.client(s.t0, from, &send[..n]);
        assert!(s.out.sent.is_empty(), "sent to own port {own}");
    }
    // Another port of the same IP is a peer like any other.
    let mut send = vec![0u8; 100];
    let n = write_send_indication(&mut send, &[1; 12], addr("127.0.0.1:3479"), b"ok").unwrap();
    s.client(s.t0, from, &send[..n]);
    assert_eq!(s.out.take_one().0, relay);
}
