//! The forwarding loop makes no heap allocation per packet: a counting global allocator watches the
//! whole process (engine workers in-process, plus this test's own allocation-free client loop) while
//! thousands of SRTP packets are forwarded to a subscriber on the same worker and one on another.

mod counting_alloc;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use switchyard_engine::{Engine, EngineConfig};
use switchyard_engine::media::audio_level::find_extension;
use switchyard_engine::media::rtcp::{write_nack, write_sr, write_twcc, SenderInfo};
use switchyard_protocol::{
    EngineClient, HeaderExtIds, KeySalt, Layer, Reply, Request, TrackKind, FB_NACK, FB_PLI, FB_TWCC, OUT_EXT_TWCC,
};
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

/// An engine with two workers and three connected transports: 1 (the publisher) and 2 on worker 0, 3 on
/// worker 1, each with a client socket that passed ICE and SRTP keys `ks(id)` in, `ks(id + 10)` out.
fn engine_with_three_transports(io: IoKind, name: &str, nonblocking: bool) -> (Engine, EngineClient, Vec<(UdpSocket, std::net::SocketAddr)>) {
    let socket = std::env::temp_dir().join(format!("switchyard-{name}-{}-{io}.sock", std::process::id()));
    let cfg = EngineConfig { workers: 2, io: Some(io), socket: socket.clone(), pin: false, ..Default::default() };
    let engine = Engine::start(&cfg).unwrap();
    let (mut ctl, _) = EngineClient::connect(&socket, name, false).unwrap();
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
        s.set_nonblocking(nonblocking).unwrap();
        ctl.request(&Request::SetSrtp { transport: id, profile: profile.rfc5764_id(), inbound: ks(id as u8), outbound: ks(id as u8 + 10) })
            .unwrap();
        socks.push((s, addr));
    }
    (engine, ctl, socks)
}

fn run(io: IoKind) {
    let (engine, mut ctl, socks) = engine_with_three_transports(io, "noalloc", false);
    let profile = Profile::Aes128CmHmacSha1_80;
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

/// The media-quality path in steady state, in real time: a publisher sends two simulcast layers
/// (learned by rid) with header extensions, gaps (NACKed upstream), keyframes and sender reports; two
/// subscribers (one on each worker) send TWCC feedback and NACKs that are answered from the cache;
/// the engine ticks (RR, NACK, TWCC to the publisher, SR to subscribers, layer choice). During the
/// measured 3 s the subscribers start reporting loss, the estimate falls and the stream switches to
/// the lower layer. The counters show each of these happened while nothing was allocated.
fn run_media(io: IoKind) {
    let (engine, mut ctl, socks) = engine_with_three_transports(io, "noalloc-media", true);
    let profile = Profile::Aes128CmHmacSha1_80;
    let ext = HeaderExtIds { mid: 4, rid: 10, repaired_rid: 0, audio_level: 0, twcc: 5 };
    ctl.request(&Request::SetExtensions { transport: 1, ext }).unwrap();
    let layers = vec![Layer { rid: "q".into(), ssrc: 0 }, Layer { rid: "h".into(), ssrc: 0 }];
    let track = Request::AddTrack {
        publisher: 1,
        track: 9,
        kind: TrackKind::Video,
        mid: "1".into(),
        clock_rate: 90_000,
        payload_type: 96,
        feedback: FB_NACK | FB_PLI | FB_TWCC,
        layers,
    };
    ctl.request(&track).unwrap();
    for sub in [2, 3] {
        let req = Request::Subscribe { publisher: 1, track: 9, subscriber: sub, out_ssrc: 0x5000 + sub as u32, out_rtx_ssrc: 0, rtx_payload_type: 0 };
        ctl.request(&req).unwrap();
    }

    let mut pub_tx = Context::new(profile, &[1; 16], &[1; 14]).unwrap();
    let mut sub_tx: Vec<Context> = [2u8, 3].iter().map(|&s| Context::new(profile, &[s; 16], &[s; 14]).unwrap()).collect();
    let mut sub_rx: Vec<Context> = [12u8, 13].iter().map(|&s| Context::new(profile, &[s; 16], &[s; 14]).unwrap()).collect();
    let mut buf = [0u8; 1500];
    let mut rbuf = [0u8; 1500];
    let mut rtcp = [0u8; 1500];
    let (publisher, engine_addr) = (&socks[0].0, socks[0].1);
    // Per subscriber: TWCC arrivals since the last feedback (by transport-wide seq), the last seq.
    const TW: usize = 2048;
    let mut arrivals = [[None::<i64>; TW]; 2];
    let mut tw_base = [None::<u16>; 2];
    let mut tw_count = [0usize; 2];
    let mut fb_count = [0u8; 2];
    let mut fake_us = [0i64; 2];
    let mut last_seq = [None::<u16>; 2];
    let mut received = [0u64; 2];
    let mut seq = [1000u16, 30_000];
    let mut tw_pub = 0u16;
    let start = std::time::Instant::now();
    let mut step = 0u64;
    let mut report_loss = false;

    let mut run = |until: Duration, report_loss_after: Option<Duration>| {
        while start.elapsed() < until {
            let t = start.elapsed();
            if let Some(a) = report_loss_after {
                report_loss = t >= a;
            }
            step += 1;
            // Every 10 ms: layer "h" (800 bytes); every 20 ms: layer "q" (150 bytes). A keyframe on
            // both every 250 ms; every 97th "h" packet is skipped (a gap the engine NACKs).
            if step.is_multiple_of(10) {
                let frame = step / 10;
                for l in 0..2usize {
                    if l == 0 && frame % 2 == 1 {
                        continue;
                    }
                    if l == 1 && frame.is_multiple_of(97) {
                        seq[l] = seq[l].wrapping_add(1);
                    }
                    let key = frame.is_multiple_of(25);
                    let ssrc = [0x100u32, 0x200][l];
                    let size = [150usize, 800][l];
                    let ts = (frame * 900) as u32;
                    tw_pub = tw_pub.wrapping_add(1);
                    let [s0, s1] = seq[l].to_be_bytes();
                    let [t0, t1, t2, t3] = ts.to_be_bytes();
                    let [c0, c1, c2, c3] = ssrc.to_be_bytes();
                    let [w0, w1] = tw_pub.to_be_bytes();
                    let rid = [b'q', b'h'][l];
                    // Header, then extensions: mid "1" (4), rid (10), twcc (5), 8 bytes.
                    let head = [0x90, 96, s0, s1, t0, t1, t2, t3, c0, c1, c2, c3, 0xBE, 0xDE, 0, 2, 0x40, b'1', 0xA0, rid, 0x51, w0, w1, 0];
                    buf[..24].copy_from_slice(&head);
                    // VP8: start of frame; keyframe with its frame header (640x360), or an interframe.
                    let vp8 = [0x90, 0x80, 0x80, 0x01, if key { 0x50 } else { 0x51 }, 0x21, 0, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
                    buf[24..38].copy_from_slice(&vp8);
                    buf[38..24 + size].fill(l as u8);
                    let n = pub_tx.protect_rtp(&mut buf, 24 + size).unwrap();
                    publisher.send_to(&buf[..n], engine_addr).unwrap();
                    seq[l] = seq[l].wrapping_add(1);
                    if frame.is_multiple_of(50) {
                        // The publisher's SR for this layer.
                        let info = SenderInfo { ssrc, ntp: (frame << 32) / 100, rtp_ts: ts, packet_count: 0, octet_count: 0 };
                        let len = write_sr(&mut rtcp, &info, &[]).unwrap();
                        let n = pub_tx.protect_rtcp(&mut rtcp, len).unwrap();
                        publisher.send_to(&rtcp[..n], engine_addr).unwrap();
                    }
                }
            }
            // Drain what the engine sent the publisher (RR, NACK, TWCC feedback).
            while publisher.recv_from(&mut rbuf).is_ok() {}
            // The subscribers: record TWCC arrivals, then feedback every 50 ms and a NACK every 100 ms.
            for i in 0..2 {
                let s = &socks[i + 1].0;
                while let Ok((n, _)) = s.recv_from(&mut rbuf) {
                    if (192..=223).contains(&rbuf[1]) {
                        continue; // an SR
                    }
                    // The header (with the transport-wide sequence number) is not encrypted; read it
                    // first: a retransmission of a packet this subscriber already has fails SRTP's
                    // replay check, but it did arrive.
                    if let Some(tw) = find_extension(&rbuf[..n], OUT_EXT_TWCC) {
                        let tw = u16::from_be_bytes([tw[0], tw[1]]);
                        let base = *tw_base[i].get_or_insert(tw);
                        let d = tw.wrapping_sub(base) as usize;
                        if d < TW {
                            // Arrival times on a synthetic clock 100 µs per packet: never slower than
                            // the engine sends, so this test's own scheduling never looks like a queue.
                            fake_us[i] += 100;
                            arrivals[i][d] = Some(fake_us[i]);
                            tw_count[i] = tw_count[i].max(d + 1);
                        }
                    }
                    let Ok(_) = sub_rx[i].unprotect_rtp(&mut rbuf[..n]) else { continue };
                    received[i] += 1;
                    last_seq[i] = Some(u16::from_be_bytes([rbuf[2], rbuf[3]]));
                }
                if step % 50 == i as u64 * 25 && tw_count[i] > 0 {
                    if let Some(base) = tw_base[i] {
                        if report_loss {
                            // Everything since the last feedback lost, but the last one.
                            let last = tw_count[i] - 1;
                            arrivals[i][..last].fill(None);
                        }
                        if let Some(len) = write_twcc(&mut rtcp, 0x77, 0, base, fb_count[i], &arrivals[i][..tw_count[i]]) {
                            let n = sub_tx[i].protect_rtcp(&mut rtcp, len).unwrap();
                            s.send_to(&rtcp[..n], socks[i + 1].1).unwrap();
                        }
                        fb_count[i] = fb_count[i].wrapping_add(1);
                        tw_base[i] = Some(base.wrapping_add(tw_count[i] as u16));
                        arrivals[i][..tw_count[i]].fill(None);
                        tw_count[i] = 0;
                    }
                }
                if step % 100 == 50 {
                    if let Some(last) = last_seq[i] {
                        let lost = [last.wrapping_sub(3)];
                        if let Some((len, _)) = write_nack(&mut rtcp, 0x77, 0x5002 + i as u32, &lost) {
                            let n = sub_tx[i].protect_rtcp(&mut rtcp, len).unwrap();
                            s.send_to(&rtcp[..n], socks[i + 1].1).unwrap();
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // Warm-up: layers learned, first SRs, NACK answers, TWCC both ways, the first layer chosen.
    run(Duration::from_millis(2500), None);
    let before_stats = ctl.request(&Request::Stats).unwrap();
    let before = counting_alloc::allocations();
    run(Duration::from_millis(5500), Some(Duration::from_millis(3000)));
    let allocs = counting_alloc::allocations() - before;
    let after_stats = ctl.request(&Request::Stats).unwrap();
    let delta = |name: &str| counter(&after_stats, name) - counter(&before_stats, name);
    let what: Vec<(&str, u64)> = ["rtp_forwarded", "rtx_sent", "nack_received", "nack_sent", "twcc_sent", "sr_sent", "rr_sent", "layer_switches", "handoffs_out"]
        .iter()
        .map(|n| (*n, delta(n)))
        .collect();
    println!("{io}: {allocs} heap allocations in 3 s of the media path; meanwhile {what:?}; received {received:?}");
    if let Reply::Stats(s) = &after_stats {
        for w in &s.workers {
            println!("  worker {} drops {:?}", w.index, w.drops.iter().filter(|d| d.1 > 0).collect::<Vec<_>>());
        }
    }
    for (name, n) in &what {
        assert!(*n > 0, "{io}: no {name} during the measurement: {what:?}");
    }
    assert_eq!(allocs, 0, "{io}: the media path allocated");
    drop(ctl);
    engine.stop();
}

fn counter(stats: &Reply, name: &str) -> u64 {
    let Reply::Stats(s) = stats else { panic!("{stats:?}") };
    s.workers.iter().flat_map(|w| w.counters.iter()).filter(|(n, _)| n == name).map(|(_, v)| v).sum()
}

#[test]
fn forwarding_allocates_nothing_per_packet() {
    // One test function: the allocator counts the whole process, so the two backends (and the two
    // scenarios) must not run at the same time.
    run(IoKind::Mmsg);
    run(IoKind::Uring);
    run_media(IoKind::Mmsg);
    run_media(IoKind::Uring);
}
