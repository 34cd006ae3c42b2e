//! The engine's TURN server over real sockets (in-process engine, 2 workers, both I/O backends):
//! NAT discovery, 401 then allocation, permission before data, ChannelData and Data indications,
//! credentials refused, quotas, deletion and expiry closing relay sockets, counters.

mod turn_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use switchyard_engine::turn::TurnConfig;
use switchyard_engine::{Engine, EngineConfig};
use switchyard_protocol::{EngineClient, Request};
use switchyard_stun::{
    parse_channel_data, write_channel_data, write_plain_binding_request, write_send_indication, binding_response_address,
    Message,
};
use switchyard_udp::IoKind;
use turn_support::{counter, mint, Client, TurnError};

const SECRET: &str = "relay-test-secret";

struct Running {
    engine: Option<Engine>,
    ctl: EngineClient,
    server: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(e) = self.engine.take() {
            e.stop();
        }
    }
}

fn start(io: IoKind, tag: &str, turn: TurnConfig) -> Running {
    let socket = std::env::temp_dir().join(format!("switchyard-turn-{tag}-{}-{io}.sock", std::process::id()));
    let cfg = EngineConfig { workers: 2, io: Some(io), socket: socket.clone(), pin: false, turn: Some(turn), ..Default::default() };
    let engine = Engine::start(&cfg).unwrap();
    let server = engine.turn.expect("TURN runs");
    let (ctl, _) = EngineClient::connect(&socket, "turn-test", false).unwrap();
    Running { engine: Some(engine), ctl, server }
}

fn kinds() -> Vec<IoKind> {
    match switchyard_udp::probe_uring() {
        Ok(()) => vec![IoKind::Mmsg, IoKind::Uring],
        Err(reason) => {
            eprintln!("SKIP io_uring backend: {reason}");
            vec![IoKind::Mmsg]
        }
    }
}

fn peer() -> (UdpSocket, SocketAddr) {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let a = p.local_addr().unwrap();
    (p, a)
}

fn config(ports: (u16, u16)) -> TurnConfig {
    TurnConfig { port: 0, secret: SECRET.into(), relay_ports: ports, ..TurnConfig::default() }
}

#[test]
fn allocate_permission_and_data_both_ways() {
    for (i, io) in kinds().into_iter().enumerate() {
        let base = 43_000 + 200 * i as u16;
        let mut r = start(io, "data", config((base, base + 99)));
        // NAT discovery on the TURN port, no credentials.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 512];
        let n = write_plain_binding_request(&mut b, &[4; 12]).unwrap();
        probe.send_to(&b[..n], r.server).unwrap();
        let (n, _) = turn_support::recv(&probe, &mut b).unwrap();
        let mapped = binding_response_address(&Message::parse(&b[..n]).unwrap(), &[4; 12]).unwrap();
        assert_eq!(mapped, probe.local_addr().unwrap(), "{io}");

        let (username, password) = mint(SECRET, "alice", 600);
        let mut c = Client::new(r.server, &username, &password);
        let relayed = c.allocate(Some(900)).unwrap();
        assert!((base..=base + 99).contains(&relayed.port()), "{io}: relay port {relayed} from the range");
        let (p, pa) = peer();
        let mut buf = [0u8; 2048];

        // Before any permission: nothing in either direction.
        let n = write_send_indication(&mut buf, &[1; 12], pa, b"too early").unwrap();
        c.sock.send_to(&buf[..n], r.server).unwrap();
        assert!(turn_support::recv(&p, &mut buf).is_err(), "{io}: relayed without a permission");
        p.send_to(b"unsolicited", relayed).unwrap();
        c.sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert!(turn_support::recv(&c.sock, &mut buf).is_err(), "{io}: peer data without a permission");
        c.sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();

        // Permission: Send indication out, Data indication back.
        c.create_permission(pa).unwrap();
        let n = write_send_indication(&mut buf, &[2; 12], pa, b"hello peer").unwrap();
        c.sock.send_to(&buf[..n], r.server).unwrap();
        let (n, from) = turn_support::recv(&p, &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"hello peer"[..], relayed), "{io}");
        p.send_to(b"hello client", relayed).unwrap();
        let (n, from) = turn_support::recv(&c.sock, &mut buf).unwrap();
        assert_eq!(from, r.server);
        let m = Message::parse(&buf[..n]).unwrap();
        assert_eq!((m.xor_peer_address(), m.data()), (Some(pa), Some(&b"hello client"[..])), "{io}");

        // Channel: ChannelData both ways.
        c.channel_bind(0x4321, pa).unwrap();
        for i in 0..50u8 {
            let n = write_channel_data(&mut buf, 0x4321, &[i; 33]).unwrap();
            c.sock.send_to(&buf[..n], r.server).unwrap();
            let (n, _) = turn_support::recv(&p, &mut buf).unwrap();
            assert_eq!(&buf[..n], &[i; 33], "{io}");
            p.send_to(&[i; 7], relayed).unwrap();
            let (n, _) = turn_support::recv(&c.sock, &mut buf).unwrap();
            assert_eq!(parse_channel_data(&buf[..n]), Some((0x4321, &[i; 7][..])), "{io}");
        }
        assert_eq!(c.refresh(1200).unwrap(), 1200);

        let stats = r.ctl.request(&Request::Stats).unwrap();
        assert_eq!(counter(&stats, "turn_allocations", false), 1, "{io}");
        assert_eq!(counter(&stats, "turn_relayed_to_peer", false), 51, "{io}");
        assert_eq!(counter(&stats, "turn_relayed_to_client", false), 51, "{io}");
        assert_eq!(counter(&stats, "turn_bindings", false), 1, "{io}");
        assert_eq!(counter(&stats, "turn_no_permission", true), 2, "{io}");

        // Deleting closes the relay socket: the peer's datagrams go nowhere.
        assert_eq!(c.refresh(0).unwrap(), 0);
        std::thread::sleep(Duration::from_millis(100));
        p.send_to(b"after delete", relayed).unwrap();
        c.sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        assert!(turn_support::recv(&c.sock, &mut buf).is_err(), "{io}");
        let stats = r.ctl.request(&Request::Stats).unwrap();
        assert_eq!(counter(&stats, "turn_allocations_closed", false), 1, "{io}");
        // The port is free again (the socket was closed, not just forgotten).
        drop(UdpSocket::bind(relayed).unwrap_or_else(|e| panic!("{io}: relay port {relayed} still bound: {e}")));
    }
}

#[test]
fn credentials_and_quotas() {
    for (i, io) in kinds().into_iter().enumerate() {
        let base = 44_000 + 200 * i as u16;
        let turn = TurnConfig { max_allocations_per_user: 2, max_allocations: 3, ..config((base, base + 99)) };
        let r = start(io, "auth", turn);
        // Wrong password, expired username, another secret: 401 after the challenge.
        let (username, _) = mint(SECRET, "mallory", 600);
        let mut c = Client::new(r.server, &username, "not-the-password");
        assert_eq!(c.allocate(None).map_err(|e| e.0), Err(401), "{io}");
        let (expired, expired_pw) = mint(SECRET, "mallory", -10);
        let mut c = Client::new(r.server, &expired, &expired_pw);
        let e = c.allocate(None).unwrap_err();
        assert_eq!(e.0, 401, "{io}: {e:?}");
        let (u, p) = mint("another-secret", "mallory", 600);
        assert_eq!(Client::new(r.server, &u, &p).allocate(None).map_err(|e| e.0), Err(401), "{io}");
        // Quotas: two for alice, then 486; bob gets the last one of three; carol none.
        let (alice, alice_pw) = mint(SECRET, "alice", 600);
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = Client::new(r.server, &alice, &alice_pw);
            c.allocate(None).unwrap();
            held.push(c);
        }
        let e = Client::new(r.server, &alice, &alice_pw).allocate(None).unwrap_err();
        assert_eq!(e, TurnError(486, "Allocation Quota Reached: too many allocations for this user".into()), "{io}");
        let (bob, bob_pw) = mint(SECRET, "bob", 600);
        let mut b = Client::new(r.server, &bob, &bob_pw);
        b.allocate(None).unwrap();
        let (carol, carol_pw) = mint(SECRET, "carol", 600);
        assert_eq!(Client::new(r.server, &carol, &carol_pw).allocate(None).map_err(|e| e.0), Err(486), "{io}");
        // Bob deletes his: carol fits.
        b.refresh(0).unwrap();
        Client::new(r.server, &carol, &carol_pw).allocate(None).unwrap();
        let mut ctl = r;
        let stats = ctl.ctl.request(&Request::Stats).unwrap();
        assert_eq!(counter(&stats, "turn_auth_failures", false), 3, "{io}");
        assert_eq!(counter(&stats, "turn_quota_rejections", false), 2, "{io}");
        assert_eq!(counter(&stats, "turn_allocations", false), 4, "{io}");
        drop(held);
    }
}

#[test]
fn allocations_and_permissions_expire() {
    for (i, io) in kinds().into_iter().enumerate() {
        let base = 45_000 + 200 * i as u16;
        // Short lifetimes so real time can pass them.
        let turn = TurnConfig {
            default_lifetime: Duration::from_secs(2),
            max_lifetime: Duration::from_secs(2),
            permission_lifetime: Duration::from_secs(1),
            ..config((base, base + 99))
        };
        let mut r = start(io, "expiry", turn);
        let (username, password) = mint(SECRET, "alice", 600);
        let mut c = Client::new(r.server, &username, &password);
        let relayed = c.allocate(None).unwrap();
        // Both were created before their responses arrived: they expire before these + lifetime.
        let allocated = Instant::now();
        let (p, pa) = peer();
        c.create_permission(pa).unwrap();
        let permitted = Instant::now();
        let mut buf = [0u8; 256];
        p.send_to(b"in time", relayed).unwrap();
        let (n, _) = turn_support::recv(&c.sock, &mut buf).unwrap();
        assert_eq!(Message::parse(&buf[..n]).unwrap().data(), Some(&b"in time"[..]));
        // After the permission's second, the peer is cut off.
        std::thread::sleep(Duration::from_millis(1200).saturating_sub(permitted.elapsed()));
        p.send_to(b"too late", relayed).unwrap();
        c.sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(turn_support::recv(&c.sock, &mut buf).is_err(), "{io}: permission outlived its lifetime");
        // After the allocation's 2 s (and the next sweep), its relay socket is closed.
        std::thread::sleep(Duration::from_millis(3500).saturating_sub(allocated.elapsed()));
        let stats = r.ctl.request(&Request::Stats).unwrap();
        assert_eq!(counter(&stats, "turn_allocations_closed", false), 1, "{io}");
        drop(UdpSocket::bind(relayed).unwrap_or_else(|e| panic!("{io}: relay port {relayed} still bound: {e}")));
        assert_eq!(c.refresh(600).map_err(|e| e.0), Err(437), "{io}: the allocation is gone");
    }
}
