//! The TURN relay path makes no heap allocation per packet: a counting global allocator watches the
//! whole process (engine workers in-process, plus this test's allocation-free client loop) while
//! thousands of datagrams are relayed both ways, as ChannelData and as Send/Data indications, on
//! both I/O backends.

mod counting_alloc;
mod turn_support;

use std::net::UdpSocket;
use std::time::Duration;

use switchyard_engine::turn::TurnConfig;
use switchyard_engine::{Engine, EngineConfig};
use switchyard_protocol::{EngineClient, Request};
use switchyard_stun::{parse_channel_data, write_channel_data, write_send_indication, Message};
use switchyard_udp::IoKind;
use turn_support::{counter, mint, Client};


const SECRET: &str = "no-alloc-secret";
const CHANNEL: u16 = 0x4000;

fn run(io: IoKind) {
    let socket = std::env::temp_dir().join(format!("switchyard-turn-noalloc-{}-{io}.sock", std::process::id()));
    let turn = TurnConfig { port: 0, secret: SECRET.into(), relay_ports: (42_000, 42_999), ..TurnConfig::default() };
    let cfg = EngineConfig { workers: 2, io: Some(io), socket: socket.clone(), pin: false, turn: Some(turn), ..Default::default() };
    let engine = Engine::start(&cfg).unwrap();
    let server = engine.turn.expect("TURN runs");
    let (mut ctl, _) = EngineClient::connect(&socket, "turn-no-alloc-test", false).unwrap();

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (username, password) = mint(SECRET, "alice", 3600);
    let mut c = Client::new(server, &username, &password);
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(CHANNEL, peer_addr).unwrap();
    c.create_permission(peer_addr).unwrap();
    let client = &c.sock;

    let mut out = [0u8; 1500];
    let mut inb = [0u8; 2048];
    let mut round = |seq: u32| {
        let payload_len = 100 + (seq as usize % 1000);
        let mut payload = [0u8; 1100];
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        let payload = &payload[..payload_len];
        // Client -> peer, alternating ChannelData and Send indications.
        let n = if seq.is_multiple_of(2) {
            write_channel_data(&mut out, CHANNEL, payload).unwrap()
        } else {
            write_send_indication(&mut out, &[seq as u8; 12], peer_addr, payload).unwrap()
        };
        client.send_to(&out[..n], server).unwrap();
        let (n, from) = turn_support::recv(&peer, &mut inb).expect("relayed to the peer");
        assert!(from == relayed && inb[..n] == *payload, "{io}: bad datagram at the peer");
        // Peer -> client: ChannelData (the peer has a channel).
        peer.send_to(payload, relayed).unwrap();
        let (n, _) = turn_support::recv(client, &mut inb).expect("relayed to the client");
        let (ch, data) = parse_channel_data(&inb[..n]).expect("ChannelData");
        assert!(ch == CHANNEL && data == payload, "{io}: bad ChannelData at the client");
    };
    for seq in 0..500 {
        round(seq);
    }
    let before = counting_alloc::allocations();
    const MEASURED: u32 = 10_000;
    for seq in 500..500 + MEASURED {
        round(seq);
    }
    let allocs = counting_alloc::allocations() - before;
    println!("{io}: {allocs} heap allocations while relaying {MEASURED} round trips through TURN");
    assert_eq!(allocs, 0, "{io}: the TURN relay path allocated");

    // Data indications (no channel for this peer port): also allocation-free.
    let peer2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut data_round = |seq: u32| {
        let payload = seq.to_be_bytes();
        peer2.send_to(&payload, relayed).unwrap();
        let (n, _) = turn_support::recv(client, &mut inb).expect("Data indication");
        let m = Message::parse(&inb[..n]).expect("STUN");
        assert_eq!(m.data(), Some(&payload[..]));
    };
    for seq in 0..100 {
        data_round(seq);
    }
    let before = counting_alloc::allocations();
    for seq in 100..2100 {
        data_round(seq);
    }
    let allocs = counting_alloc::allocations() - before;
    assert_eq!(allocs, 0, "{io}: Data indications allocated");

    let stats = ctl.request(&Request::Stats).unwrap();
    let to_peer = counter(&stats, "turn_relayed_to_peer", false);
    let to_client = counter(&stats, "turn_relayed_to_client", false);
    println!("{io}: turn_relayed_to_peer {to_peer}, turn_relayed_to_client {to_client}");
    assert_eq!(to_peer, u64::from(500 + MEASURED));
    assert_eq!(to_client, u64::from(500 + MEASURED) + 2100);
    drop(ctl);
    engine.stop();
}

#[test]
fn relaying_allocates_nothing_per_packet() {
    // One test function: the allocator counts the whole process.
    run(IoKind::Mmsg);
    if switchyard_udp::probe_uring().is_ok() {
        run(IoKind::Uring);
    } else {
        eprintln!("SKIP io_uring: not available here");
    }
}
