//! The engine as its own process, over real loopback sockets: a test client programs it through the
//! control socket, passes ICE for two transports on different workers, and forwards 10,000 SRTP
//! packets from one to the other. Run once per I/O backend.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_protocol::{
    ClientError, EngineClient, ErrorCode, Event, Frame, FrameKind, KeySalt, Layer, Reply, Request, TrackKind, SRTP_RTP_INBOUND,
    SRTP_RTP_OUTBOUND,
};
use switchyard_srtp::{Context, IndexKind, Profile};
use switchyard_stun::{BindingRequest, Class, Message};

const PWD_A: &str = "publisher-password-0123456789";
const PWD_B: &str = "subscriber-password-0123456789";
const PACKETS: u32 = 10_000;
const SSRC: u32 = 0x5eed_0001;

struct EngineProcess {
    child: Child,
    socket: PathBuf,
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn start_engine(io: &str) -> EngineProcess {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket = std::env::temp_dir().join(format!("switchyard-engine-test-{}-{io}-{n}.sock", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard-engine"))
        .args(["--workers", "2", "--io", io, "--bind", "127.0.0.1", "--no-pin", "--socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn engine");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "engine did not create its control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    EngineProcess { child, socket }
}

fn ice_check(sock: &UdpSocket, to: SocketAddr, ufrag: &str, pwd: &str, tx: u8) -> Result<SocketAddr, String> {
    let user = format!("{ufrag}:peer");
    let req = BindingRequest {
        transaction_id: [tx; 12],
        username: user.as_bytes(),
        password: pwd.as_bytes(),
        priority: 1,
        use_candidate: true,
        controlling: Some(1),
        controlled: None,
    };
    let mut buf = [0u8; 1500];
    let n = req.write(&mut buf).map_err(|e| e.to_string())?;
    sock.send_to(&buf[..n], to).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
    let (n, _) = sock.recv_from(&mut buf).map_err(|e| format!("no binding response: {e}"))?;
    let m = Message::parse(&buf[..n]).map_err(|e| e.to_string())?;
    if m.class() != Class::SuccessResponse || !m.verify_integrity(pwd.as_bytes()) || m.transaction_id() != &[tx; 12] {
        return Err("bad binding response".into());
    }
    m.xor_mapped_address().ok_or_else(|| "no XOR-MAPPED-ADDRESS".into())
}

fn keys(seed: u8, p: Profile) -> KeySalt {
    KeySalt { key: (0..p.key_len() as u8).map(|i| i ^ seed).collect(), salt: (0..p.salt_len() as u8).map(|i| i.wrapping_mul(seed)).collect() }
}

fn payload(seq: u32) -> Vec<u8> {
    // Varying sizes, content derived from the sequence number so the receiver can check every byte.
    let len = 20 + (seq as usize * 37) % 1100;
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

fn rtp(seq: u32) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&(seq as u16).to_be_bytes());
    p.extend_from_slice(&(seq * 90).to_be_bytes());
    p.extend_from_slice(&SSRC.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&payload(seq));
    p
}

fn counter(stats: &Reply, name: &str, drops: bool) -> u64 {
    let Reply::Stats(s) = stats else { panic!("not stats: {stats:?}") };
    s.workers
        .iter()
        .flat_map(|w| if drops { w.drops.iter() } else { w.counters.iter() })
        .filter(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .sum()
}

fn forward_10k(io: &str) {
    let engine = start_engine(io);
    let (mut ctl, hello) = EngineClient::connect(&engine.socket, "loopback-test", true).expect("hello");
    let Reply::Hello { io: got_io, workers, .. } = hello else { panic!("{hello:?}") };
    assert_eq!(got_io, if io == "uring" { "io_uring" } else { "mmsg" });
    assert_eq!(workers.len(), 2);

    // Control socket robustness: garbage, an unknown message and a bad frame kind each get an error
    // reply, and the connection carries on.
    let mut bad = Frame { kind: FrameKind::Request, id: 900, body: vec![250, 1, 2] }.encode();
    match ctl.raw(&bad, 900) {
        Err(ClientError::Refused { code: ErrorCode::UnknownMessage, .. }) => {}
        other => panic!("unknown tag: {other:?}"),
    }
    bad = Frame { kind: FrameKind::Request, id: 901, body: vec![2, 0, 0] }.encode();
    match ctl.raw(&bad, 901) {
        Err(ClientError::Refused { code: ErrorCode::BadFrame, .. }) => {}
        other => panic!("truncated AddTransport: {other:?}"),
    }
    bad = Frame { kind: FrameKind::Event, id: 902, body: vec![8] }.encode();
    assert!(matches!(ctl.raw(&bad, 902), Err(ClientError::Refused { code: ErrorCode::BadFrame, .. })));
    assert!(matches!(
        ctl.request(&Request::RemoveTransport { transport: 12345 }),
        Err(ClientError::Refused { code: ErrorCode::UnknownTransport, .. })
    ));

    let added = |ctl: &mut EngineClient, id, worker, ufrag: &str, pwd: &str| -> SocketAddr {
        match ctl.request(&Request::AddTransport { transport: id, worker: Some(worker), ufrag: ufrag.into(), pwd: pwd.into() }) {
            Ok(Reply::TransportAdded { worker: w, addr }) => {
                assert_eq!(w, worker);
                addr
            }
            other => panic!("add transport: {other:?}"),
        }
    };
    let addr_a = added(&mut ctl, 1, 0, "pubufrag", PWD_A);
    let addr_b = added(&mut ctl, 2, 1, "subufrag", PWD_B);
    assert_ne!(addr_a, addr_b, "one port per worker");

    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Wrong credentials first: no answer, nothing bound.
    assert!(ice_check(&stranger, addr_a, "pubufrag", "not-the-password-0123456789", 1).is_err());
    assert_eq!(ice_check(&a, addr_a, "pubufrag", PWD_A, 2).unwrap(), a.local_addr().unwrap());
    assert_eq!(ice_check(&b, addr_b, "subufrag", PWD_B, 3).unwrap(), b.local_addr().unwrap());
    let mut bound = Vec::new();
    while let Some(ev) = ctl.next_event(Duration::from_secs(2)).unwrap() {
        if let Event::IceBound { transport, addr } = ev {
            bound.push((transport, addr));
        }
        if bound.len() == 2 {
            break;
        }
    }
    bound.sort();
    assert_eq!(bound, vec![(1, a.local_addr().unwrap()), (2, b.local_addr().unwrap())]);

    // DTLS punted up from a bound address, and a record sent back down.
    let client_hello = [22u8, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
    a.send_to(&client_hello, addr_a).unwrap();
    match ctl.next_event(Duration::from_secs(2)).unwrap() {
        Some(Event::DtlsIn { transport: 1, datagram }) => assert_eq!(datagram, client_hello),
        other => panic!("expected DtlsIn, got {other:?}"),
    }
    ctl.request(&Request::DtlsOut { transport: 1, datagram: vec![22, 254, 253, 7, 7] }).unwrap();
    let mut buf = [0u8; 2048];
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let (n, from) = a.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&[22u8, 254, 253, 7, 7][..], addr_a));

    let profile = Profile::AeadAes128Gcm;
    let (a_up, a_down, b_up, b_down) = (keys(1, profile), keys(2, profile), keys(3, profile), keys(4, profile));
    ctl.request(&Request::SetSrtp { transport: 1, profile: profile.rfc5764_id(), inbound: a_up.clone(), outbound: a_down }).unwrap();
    ctl.request(&Request::SetSrtp { transport: 2, profile: profile.rfc5764_id(), inbound: b_up, outbound: b_down.clone() }).unwrap();
    ctl.request(&Request::AddTrack { publisher: 1, track: SSRC, kind: TrackKind::Video, mid: String::new(), clock_rate: 90_000, payload_type: 96, feedback: 0, layers: vec![Layer { rid: String::new(), ssrc: SSRC }] }).unwrap();
    ctl.request(&Request::Subscribe { publisher: 1, track: SSRC, subscriber: 2, out_ssrc: SSRC, out_rtx_ssrc: 0, rtx_payload_type: 0 }).unwrap();

    let mut a_tx = Context::new(profile, &a_up.key, &a_up.salt).unwrap();
    let mut stranger_tx = Context::new(profile, &a_up.key, &a_up.salt).unwrap();
    let mut b_rx = Context::new(profile, &b_down.key, &b_down.salt).unwrap();
    let protect = |ctx: &mut Context, plain: &[u8]| {
        let mut out = vec![0u8; plain.len() + 32];
        out[..plain.len()].copy_from_slice(plain);
        let n = ctx.protect_rtp(&mut out, plain.len()).unwrap();
        out.truncate(n);
        out
    };

    // A packet with the publisher's own keys, from an address that never passed ICE, goes nowhere.
    stranger.send_to(&protect(&mut stranger_tx, &rtp(PACKETS + 1)), addr_a).unwrap();

    b.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut received = 0u32;
    let mut seq = 0u32;
    let mut garbage_sent = 0u64;
    while seq < PACKETS {
        // Keep at most 64 packets in flight so loopback socket buffers never overflow.
        let burst_end = (seq + 64).min(PACKETS);
        while seq < burst_end {
            a.send_to(&protect(&mut a_tx, &rtp(seq)), addr_a).unwrap();
            if seq % 1000 == 500 {
                // Garbage and truncated packets in the middle of the stream.
                a.send_to(&[0xff; 40], addr_a).unwrap();
                let mut t = protect(&mut a_tx, &rtp(PACKETS + 2 + seq));
                t.truncate(10);
                a.send_to(&t, addr_a).unwrap();
                garbage_sent += 2;
            }
            seq += 1;
        }
        while received < seq {
            let (n, from) = b.recv_from(&mut buf).unwrap_or_else(|e| panic!("{io}: packet {received} lost: {e}"));
            assert_eq!(from, addr_b);
            let n = b_rx.unprotect_rtp(&mut buf[..n]).unwrap();
            assert_eq!(&buf[..n], &rtp(received)[..], "{io}: packet {received} differs");
            received += 1;
        }
    }
    assert_eq!(received, PACKETS);
    b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(b.recv_from(&mut buf).is_err(), "nothing beyond the publisher's packets reached the subscriber");

    let stats = ctl.request(&Request::Stats).unwrap();
    assert_eq!(counter(&stats, "rtp_forwarded", false), PACKETS as u64);
    // Publisher and subscriber are on different workers: every packet is handed over, and so are the
    // new subscription's keyframe requests (subscriber's worker -> publisher's): one at the start,
    // repeated about once a second while no keyframe was forwarded (these payloads are not keyframes).
    let handoffs = counter(&stats, "handoffs_out", false);
    let asks = handoffs.saturating_sub(PACKETS as u64);
    assert!(handoffs > PACKETS as u64 && asks <= 10, "publisher and subscriber are on different workers: {handoffs} hand-offs");
    assert_eq!(counter(&stats, "unbound_source", true), 1);
    assert_eq!(counter(&stats, "not_webrtc", true) + counter(&stats, "srtp_malformed", true), garbage_sent);
    let Reply::Stats(s) = &stats else { unreachable!() };
    let measured: u64 = s.workers.iter().map(|w| w.latency.count).sum();
    assert!(measured >= PACKETS as u64, "latency recorded for every forwarded packet ({measured})");
    let p99 = s.workers.iter().map(|w| w.latency.p99_ns).max().unwrap_or(0);
    println!("{io}: forwarded {received} packets across workers; engine p99 receive-to-send {} us", p99 / 1000);

    // Unsubscribe stops the stream; Snapshot shows the state.
    ctl.request(&Request::Unsubscribe { publisher: 1, track: SSRC, subscriber: 2 }).unwrap();
    a.send_to(&protect(&mut a_tx, &rtp(PACKETS + 5000)), addr_a).unwrap();
    assert!(b.recv_from(&mut buf).is_err());
    match ctl.request(&Request::Snapshot).unwrap() {
        Reply::Snapshot(ts) => {
            assert_eq!(ts.len(), 2);
            assert!(ts.iter().all(|t| t.srtp && t.remote.is_some() && t.subscriptions.is_empty()));
            // The SRTP counters a restarted engine would be seeded with.
            let last = u64::from(PACKETS + 5000);
            assert!(ts[0].srtp_indexes.contains(&(SSRC, SRTP_RTP_INBOUND, last)), "{:?}", ts[0].srtp_indexes);
            assert!(ts[1].srtp_indexes.contains(&(SSRC, SRTP_RTP_OUTBOUND, u64::from(PACKETS - 1))), "{:?}", ts[1].srtp_indexes);
        }
        other => panic!("{other:?}"),
    }

    // Resuming streams that have wrapped: the publisher's stream 2 is at ROC 3, seq 65530; the
    // subscriber last received it from an earlier engine at ROC 5 (its outbound context started
    // later). Seeded both ways, the stream goes on across the next wrap.
    const SSRC2: u32 = 0x5eed_0002;
    let rtp2 = |seq: u16| {
        let mut p = rtp(u32::from(seq));
        p[8..12].copy_from_slice(&SSRC2.to_be_bytes());
        p
    };
    let (in_at, out_at) = ((3u64 << 16) | 65_530, (5u64 << 16) | 65_530);
    assert!(matches!(
        ctl.request(&Request::ResumeSrtp { transport: 1, indexes: vec![(SSRC2, 9, 1)] }),
        Err(_) | Ok(Reply::Error { .. })
    ));
    ctl.request(&Request::ResumeSrtp { transport: 1, indexes: vec![(SSRC2, SRTP_RTP_INBOUND, in_at)] }).unwrap();
    ctl.request(&Request::ResumeSrtp { transport: 2, indexes: vec![(SSRC2, SRTP_RTP_OUTBOUND, out_at)] }).unwrap();
    ctl.request(&Request::AddTrack { publisher: 1, track: SSRC2, kind: TrackKind::Video, mid: String::new(), clock_rate: 90_000, payload_type: 96, feedback: 0, layers: vec![Layer { rid: String::new(), ssrc: SSRC2 }] }).unwrap();
    ctl.request(&Request::Subscribe { publisher: 1, track: SSRC2, subscriber: 2, out_ssrc: SSRC2, out_rtx_ssrc: 0, rtx_payload_type: 0 }).unwrap();
    a_tx.resume(SSRC2, IndexKind::RtpOut, in_at);
    b_rx.resume(SSRC2, IndexKind::RtpIn, out_at);
    b.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for seq in (65_531..=65_535u16).chain(0..=10) {
        a.send_to(&protect(&mut a_tx, &rtp2(seq)), addr_a).unwrap();
        let (n, _) = b.recv_from(&mut buf).unwrap_or_else(|e| panic!("{io}: resumed seq {seq} lost: {e}"));
        let n = b_rx.unprotect_rtp(&mut buf[..n]).unwrap_or_else(|e| panic!("{io}: resumed seq {seq}: {e}"));
        assert_eq!(&buf[..n], &rtp2(seq)[..]);
    }
    assert_eq!(b_rx.rtp_index(SSRC2), Some((6 << 16) | 10));
    match ctl.request(&Request::Snapshot).unwrap() {
        Reply::Snapshot(ts) => {
            assert!(ts[0].srtp_indexes.contains(&(SSRC2, SRTP_RTP_INBOUND, (4 << 16) | 10)), "{:?}", ts[0].srtp_indexes);
            assert!(ts[1].srtp_indexes.contains(&(SSRC2, SRTP_RTP_OUTBOUND, (6 << 16) | 10)), "{:?}", ts[1].srtp_indexes);
        }
        other => panic!("{other:?}"),
    }
    ctl.request(&Request::RemoveTransport { transport: 1 }).unwrap();
    ctl.request(&Request::RemoveTransport { transport: 2 }).unwrap();
}

#[test]
fn forwards_10k_srtp_packets_across_workers_with_io_uring() {
    forward_10k("uring");
}

#[test]
fn forwards_10k_srtp_packets_across_workers_with_mmsg() {
    forward_10k("mmsg");
}

#[test]
fn hello_with_another_version_is_refused_and_requests_need_hello() {
    let engine = start_engine("mmsg");
    let mut s = std::os::unix::net::UnixStream::connect(&engine.socket).unwrap();
    use std::io::{Read, Write};
    let send = |s: &mut std::os::unix::net::UnixStream, req: Request, id| {
        s.write_all(&req.frame(id).encode()).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        assert_eq!(u32::from_be_bytes([body[1], body[2], body[3], body[4]]), id);
        Reply::decode(&body[5..]).unwrap()
    };
    match send(&mut s, Request::Stats, 1) {
        Reply::Error { code: ErrorCode::HelloFirst, .. } => {}
        r => panic!("{r:?}"),
    }
    match send(&mut s, Request::Hello { version: 999, client: "future".into(), events: false }, 2) {
        Reply::Error { code: ErrorCode::VersionMismatch, message } => assert!(message.contains("999"), "{message}"),
        r => panic!("{r:?}"),
    }
    match send(&mut s, Request::Hello { version: switchyard_protocol::VERSION, client: "now".into(), events: false }, 3) {
        Reply::Hello { .. } => {}
        r => panic!("{r:?}"),
    }
}

/// One publisher to 40 subscribers spread over both workers: every subscriber gets every packet, so
/// the receive batch is sized to the fan-out and nothing is dropped for lack of send buffers.
fn fan_out(io: &str) {
    const SUBS: u64 = 40;
    const N: u32 = 300;
    let engine = start_engine(io);
    let (mut ctl, _) = EngineClient::connect(&engine.socket, "fanout-test", false).expect("hello");
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut socks = Vec::new();
    for id in 0..=SUBS {
        let ufrag = format!("f{id}");
        let pwd = format!("fan-out-password-{id:08}-xxxx");
        let addr = match ctl.request(&Request::AddTransport { transport: id, worker: Some((id % 2) as u16), ufrag: ufrag.clone(), pwd: pwd.clone() }) {
            Ok(Reply::TransportAdded { addr, .. }) => addr,
            other => panic!("{other:?}"),
        };
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        ice_check(&s, addr, &ufrag, &pwd, id as u8).unwrap();
        ctl.request(&Request::SetSrtp { transport: id, profile: profile.rfc5764_id(), inbound: keys(id as u8 + 1, profile), outbound: keys(id as u8 + 101, profile) }).unwrap();
        socks.push((s, addr));
    }
    for sub in 1..=SUBS {
        ctl.request(&Request::AddTrack { publisher: 0, track: SSRC, kind: TrackKind::Video, mid: String::new(), clock_rate: 90_000, payload_type: 96, feedback: 0, layers: vec![Layer { rid: String::new(), ssrc: SSRC }] }).unwrap();
        ctl.request(&Request::Subscribe { publisher: 0, track: SSRC, subscriber: sub, out_ssrc: SSRC, out_rtx_ssrc: 0, rtx_payload_type: 0 }).unwrap();
    }
    let k = keys(1, profile);
    let mut tx = Context::new(profile, &k.key, &k.salt).unwrap();
    let mut rx: Vec<Context> = (1..=SUBS).map(|id| { let k = keys(id as u8 + 101, profile); Context::new(profile, &k.key, &k.salt).unwrap() }).collect();
    let mut buf = [0u8; 2048];
    let mut seq = 0u32;
    while seq < N {
        // Bursts of 30 packets: 1,200 copies leave the engine per burst.
        for _ in 0..30 {
            let plain = rtp(seq);
            let mut out = vec![0u8; plain.len() + 32];
            out[..plain.len()].copy_from_slice(&plain);
            let n = tx.protect_rtp(&mut out, plain.len()).unwrap();
            socks[0].0.send_to(&out[..n], socks[0].1).unwrap();
            seq += 1;
        }
        for (i, (s, _)) in socks[1..].iter().enumerate() {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            for expect in seq - 30..seq {
                let (n, _) = s.recv_from(&mut buf).unwrap_or_else(|e| panic!("{io}: subscriber {} lost packet {expect}: {e}", i + 1));
                let n = rx[i].unprotect_rtp(&mut buf[..n]).unwrap();
                assert_eq!(&buf[..n], &rtp(expect)[..]);
            }
        }
    }
    let stats = ctl.request(&Request::Stats).unwrap();
    assert_eq!(counter(&stats, "rtp_forwarded", false), N as u64 * SUBS);
    assert_eq!(counter(&stats, "send_batch_full", true), 0);
}

#[test]
fn fans_out_to_40_subscribers_across_workers_with_io_uring() {
    fan_out("uring");
}

#[test]
fn fans_out_to_40_subscribers_across_workers_with_mmsg() {
    fan_out("mmsg");
}
