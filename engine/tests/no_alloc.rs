//! The forwarding loop makes no heap allocation per packet: a counting global allocator watches the
//! whole process (engine workers in-process, plus this test's own allocation-free client loop) while
//! thousands of SRTP packets are forwarded to a subscriber on the same worker and one on another.

mod counting_alloc;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use switchyard_engine::{Engine, EngineConfig};
use switchyard_protocol::{EngineClient, KeySalt, Layer, Reply, Request, TrackKind};
use switchyard_srtp::{Context, Profile};
use switchyard_stun::BindingRequest;
use switchyard_udp::IoKind;


const PWD: &str = "allocation-test-password-0123";

fn bind_ice(sock: &UdpSocket, to: SocketAddr, ufrag: &str) {
    let user = format!("{ufrag}:x");
    let req = BindingRequest {
        transaction_id: [7; 12],
        username: user.as_bytes(),
        password: PWD.as_bytes(),
        priority: 1,
        use_candidate: true,
        controlling: Some(1),
        controlled: None,
    };
    let mut buf = [0u8; 512];
    let n = req.write(&mut buf).unwrap();
    sock.send_to(&buf[..n], to).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.recv_from(&mut buf).expect("binding response");
}

fn run(io: IoKind) {
    let socket = std::env::temp_dir().join(format!("switchyard-noalloc-{}-{io}.sock", std::process::id()));
    let cfg = EngineConfig { workers: 2, io: Some(io), socket: socket.clone(), pin: false, ..Default::default() };
    let engine = Engine::start(&cfg).unwrap();
    let (mut ctl, _) = EngineClient::connect(&socket, "no-alloc-test", false).unwrap();
    let profile = Profile::Aes128CmHmacSha1_80;
    let ks = |s: u8| KeySalt { key: vec![s; 16], salt: vec![s; 14] };
    let mut socks = Vec::new();
    for (id, worker) in [(1u64, 0u16), (2, 0), (3, 1)] {
        let addr = match ctl
            .request(&Request::AddTransport { transport: id, worker: Some(worker), ufrag: format!("u{id}"), pwd: PWD.into() })
            .unwrap()
        {
            Reply::TransportAdded { addr, .. } => addr,
            r => panic!("{r:?}"),
        };
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        bind_ice(&s, addr, &format!("u{id}"));
        ctl.request(&Request::SetSrtp { transport: id, profile: profile.rfc5764_id(), inbound: ks(id as u8), outbound: ks(id as u8 + 10) })
            .unwrap();
        socks.push((s, addr));
    }
    ctl.request(&Request::AddTrack { publisher: 1, track: 99, kind: TrackKind::Video, mid: String::new(), clock_rate: 90_000, payload_type: 96, feedback: 0, layers: vec![Layer { rid: String::new(), ssrc: 99 }] }).unwrap();
    ctl.request(&Request::Subscribe { publisher: 1, track: 99, subscriber: 2, out_ssrc: 99, out_rtx_ssrc: 0, rtx_payload_type: 0 }).unwrap();
    ctl.request(&Request::AddTrack { publisher: 1, track: 99, kind: TrackKind::Video, mid: String::new(), clock_rate: 90_000, payload_type: 96, feedback: 0, layers: vec![Layer { rid: String::new(), ssrc: 99 }] }).unwrap();
    ctl.request(&Request::Subscribe { publisher: 1, track: 99, subscriber: 3, out_ssrc: 99, out_rtx_ssrc: 0, rtx_payload_type: 0 }).unwrap();

    let mut tx = Context::new(profile, &[1; 16], &[1; 14]).unwrap();
    let mut buf = [0u8; 1500];
    let mut rbuf = [0u8; 1500];
    let (publisher, engine_addr) = (&socks[0].0, socks[0].1);
    let subs = [&socks[1].0, &socks[2].0];
    let mut forward = |seq: u16| {
        buf[..12].copy_from_slice(&[0x80, 96, (seq >> 8) as u8, seq as u8, 0, 0, 0, 0, 0, 0, 0, 99]);
        buf[12..1012].fill(seq as u8);
        let n = tx.protect_rtp(&mut buf, 1012).unwrap();
        publisher.send_to(&buf[..n], engine_addr).unwrap();
        for s in subs {
            s.recv_from(&mut rbuf).expect("forwarded packet");
        }
    };
    // Warm up: first packets create per-SSRC SRTP state and fill lazily-initialised structures.
    for seq in 0..1000 {
        forward(seq);
    }
    let before = counting_alloc::allocations();
    const MEASURED: u16 = 10_000;
    for seq in 1000..1000 + MEASURED {
        forward(seq);
    }
    let allocs = counting_alloc::allocations() - before;
    println!("{io}: {allocs} heap allocations while forwarding {MEASURED} packets to 2 subscribers");
    assert_eq!(allocs, 0, "{io}: the forwarding path allocated");
    drop(ctl);
    engine.stop();
}

#[test]
fn forwarding_allocates_nothing_per_packet() {
    // One test function: the allocator counts the whole process, so the two backends must not run
    // at the same time.
    run(IoKind::Mmsg);
    run(IoKind::Uring);
}
