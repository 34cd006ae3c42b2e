//! Rough measurements behind docs/turn.md (ignored by default; run with
//! `cargo test --release -p switchyard-engine --test turn_bench -- --ignored --nocapture`):
//!
//! 1. what the TURN listener costs SFU forwarding: the same SRTP stream forwarded with TURN off and
//!    on (on: every receive call also asks the extra sockets' epoll instance);
//! 2. TURN relaying itself: ChannelData client -> relay -> peer -> relay -> client, several
//!    datagrams in flight.

mod turn_support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use switchyard_engine::turn::TurnConfig;
use switchyard_engine::{Engine, EngineConfig};
use switchyard_protocol::{EngineClient, KeySalt, Layer, Reply, Request, TrackKind};
use switchyard_srtp::{Context, Profile};
use switchyard_stun::{parse_channel_data, write_channel_data, BindingRequest};
use switchyard_udp::IoKind;
use turn_support::{mint, recv, Client};

const PWD: &str = "bench-password-0123456789";
const WINDOW: usize = 32;

fn engine(io: IoKind, tag: &str, turn: Option<TurnConfig>) -> (Engine, EngineClient) {
    let socket = std::env::temp_dir().join(format!("switchyard-turn-bench-{tag}-{}-{io}.sock", std::process::id()));
    let cfg = EngineConfig { workers: 1, io: Some(io), socket: socket.clone(), pin: false, turn, ..Default::default() };
    let engine = Engine::start(&cfg).unwrap();
    let (ctl, _) = EngineClient::connect(&socket, "turn-bench", false).unwrap();
    (engine, ctl)
}

/// Packets per second of one SRTP stream forwarded publisher -> subscriber (same worker).
fn sfu_rate(io: IoKind, turn: bool, packets: u32) -> f64 {
    let tc = turn.then(|| TurnConfig { port: 0, relay_ports: (47_000, 47_099), ..TurnConfig::default() });
    let (engine, mut ctl) = engine(io, if turn { "sfu-turn" } else { "sfu" }, tc);
    let profile = Profile::Aes128CmHmacSha1_80;
    let ks = |s: u8| KeySalt { key: vec![s; 16], salt: vec![s; 14] };
    let mut socks = Vec::new();
    for id in [1u64, 2] {
        let addr = match ctl.request(&Request::AddTransport { transport: id, worker: Some(0), ufrag: format!("b{id}"), pwd: PWD.into() }).unwrap() {
            Reply::TransportAdded { addr, .. } => addr,
            r => panic!("{r:?}"),
        };
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let user = format!("b{id}:x");
        let req = BindingRequest { transaction_id: [id as u8; 12], username: user.as_bytes(), password: PWD.as_bytes(), priority: 1, use_candidate: true, controlling: Some(1), controlled: None };
        let mut b = [0u8; 512];
        let n = req.write(&mut b).unwrap();
        s.send_to(&b[..n], addr).unwrap();
        recv(&s, &mut b).unwrap();
        ctl.request(&Request::SetSrtp { transport: id, profile: profile.rfc5764_id(), inbound: ks(id as u8), outbound: ks(id as u8 + 10) }).unwrap();
        socks.push((s, addr));
    }
    ctl.request(&Request::AddTrack { publisher: 1, track: 7, kind: TrackKind::Video, mid: String::new(), clock_rate: 90_000, payload_type: 96, feedback: 0, layers: vec![Layer { rid: String::new(), ssrc: 7 }] }).unwrap();
    ctl.request(&Request::Subscribe { publisher: 1, track: 7, subscriber: 2, out_ssrc: 7, out_rtx_ssrc: 0, rtx_payload_type: 0 }).unwrap();
    let mut tx = Context::new(profile, &[1; 16], &[1; 14]).unwrap();
    let (publisher, to) = (&socks[0].0, socks[0].1);
    let sub = &socks[1].0;
    let mut buf = [0u8; 1500];
    let mut rbuf = [0u8; 1500];
    let mut send = |seq: u32| {
        buf[..12].copy_from_slice(&[0x80, 96, (seq >> 8) as u8, seq as u8, 0, 0, 0, 0, 0, 0, 0, 7]);
        buf[12..1012].fill(seq as u8);
        let n = tx.protect_rtp(&mut buf, 1012).unwrap();
        publisher.send_to(&buf[..n], to).unwrap();
    };
    for seq in 0..WINDOW as u32 {
        send(seq);
    }
    let start = Instant::now();
    for seq in WINDOW as u32..packets + WINDOW as u32 {
        recv(sub, &mut rbuf).expect("forwarded");
        send(seq);
    }
    let rate = f64::from(packets) / start.elapsed().as_secs_f64();
    drop(ctl);
    engine.stop();
    rate
}

/// Datagrams per second relayed one way through a TURN allocation: (client -> peer as
/// ChannelData, peer -> client as ChannelData).
fn turn_rate(io: IoKind, packets: u32) -> (f64, f64) {
    let tc = TurnConfig { port: 0, secret: "bench".into(), relay_ports: (47_100, 47_199), ..TurnConfig::default() };
    let (engine, ctl) = engine(io, "relay", Some(tc));
    let server = engine.turn.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (u, p) = mint("bench", "b", 600);
    let mut c = Client::new(server, &u, &p);
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
    let mut out = [0u8; 1500];
    let mut inb = [0u8; 2048];
    let payload = [7u8; 1000];
    let n = write_channel_data(&mut out, 0x4000, &payload).unwrap();
    // Client -> peer.
    for _ in 0..WINDOW {
        c.sock.send_to(&out[..n], server).unwrap();
    }
    let start = Instant::now();
    for _ in 0..packets {
        recv(&peer, &mut inb).expect("at the peer");
        c.sock.send_to(&out[..n], server).unwrap();
    }
    let up = f64::from(packets) / start.elapsed().as_secs_f64();
    for _ in 0..WINDOW {
        recv(&peer, &mut inb).expect("at the peer");
    }
    // Peer -> client.
    for _ in 0..WINDOW {
        peer.send_to(&payload, relayed).unwrap();
    }
    let start = Instant::now();
    for _ in 0..packets {
        let (m, _) = recv(&c.sock, &mut inb).expect("at the client");
        assert!(parse_channel_data(&inb[..m]).is_some());
        peer.send_to(&payload, relayed).unwrap();
    }
    let down = f64::from(packets) / start.elapsed().as_secs_f64();
    drop(ctl);
    engine.stop();
    (up, down)
}

#[test]
#[ignore = "measurement; run explicitly"]
fn measure() {
    let mut kinds = vec![IoKind::Mmsg];
    if switchyard_udp::probe_uring().is_ok() {
        kinds.push(IoKind::Uring);
    }
    for io in kinds {
        let mut off = Vec::new();
        let mut on = Vec::new();
        for _ in 0..3 {
            off.push(sfu_rate(io, false, 100_000));
            on.push(sfu_rate(io, true, 100_000));
        }
        let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        println!(
            "{io}: SFU forwarding, 1 worker, 1000-byte SRTP, {WINDOW} in flight: TURN off {:.0} pkt/s, TURN on {:.0} pkt/s (best of 3)",
            best(&off),
            best(&on)
        );
        let relay: Vec<(f64, f64)> = (0..3).map(|_| turn_rate(io, 100_000)).collect();
        let up: Vec<f64> = relay.iter().map(|r| r.0).collect();
        let down: Vec<f64> = relay.iter().map(|r| r.1).collect();
        println!(
            "{io}: TURN relay, 1000-byte payloads, {WINDOW} in flight: client->peer {:.0} pkt/s, peer->client {:.0} pkt/s (best of 3)",
            best(&up),
            best(&down)
        );
    }
}
