//! The engine's per-packet path across many rooms, the way the harness's fan-out 1 load drives it:
//! `ROOMS` rooms of one publisher (VP8-like video in bursts of 1200 B packets and 20 ms audio, with
//! the transport-wide-cc and audio-level extensions) and one subscriber, each set up as the control
//! daemon sets up an SFU room (extensions, tracks with NACK/PLI/FIR/transport-cc, subscriptions with a
//! retransmission cache and the subscriber's bandwidth estimator). Packets go round-robin over the
//! rooms on a simulated clock, with the worker's 20 ms tick, so the state of every room is touched
//! as often as under real load and caches see the same spread.
//!
//! Prints nanoseconds per forwarded packet (wall clock, the input packets are encrypted beforehand
//! and not counted). Packets are handled in batches of `SY_BATCH` (default 32), each first shown to
//! the forwarder's look-ahead as the worker does (`SY_BATCH=1`: none). `SY_ROOMS` (default 200) and
//! `SY_PACKETS` (default 2,000,000) change the load;
//! for instruction and cache-miss counts, run the built binary under
//! `valgrind --tool=callgrind --cache-sim=yes` with a smaller `SY_PACKETS`.
//!
//! Run: `cargo bench -p switchyard-loadgen --bench rooms`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_engine::forwarder::{Dest, Forwarder, TrackSpec};
use switchyard_engine::stats::WorkerCounters;
use switchyard_engine::streams::SubscriptionSpec;
use switchyard_protocol::{HeaderExtIds, KeySalt, Layer, TrackKind, FB_FIR, FB_NACK, FB_PLI, FB_TWCC};
use switchyard_srtp::{Context, Profile};

mod common;
use common::{bind, Sink, PWD};

const TWCC_ID: u8 = 3;
const LEVEL_ID: u8 = 1;
const PROFILE: Profile = Profile::AeadAes128Gcm;

fn keys(seed: u32) -> KeySalt {
    let b = seed.to_be_bytes();
    KeySalt {
        key: (0..16).map(|i| b[i % 4] ^ i as u8).collect(),
        salt: (0..12).map(|i| b[i % 4] ^ 0x55 ^ i as u8).collect(),
    }
}

fn addr(n: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, (n >> 8) as u8 + 1, n as u8], 10_000))
}

/// A transport that passed ICE from `from` and has SRTP keys; returns the context its client sends with.
fn transport(fwd: &mut Forwarder, id: u64, from: SocketAddr, now: Instant, out: &mut Sink) -> Context {
    let ufrag = format!("t{id}");
    fwd.add_transport(id, ufrag.clone(), PWD.into(), now).expect("transport");
    bind(fwd, &ufrag, from, now, out);
    let (up, down) = (keys(id as u32), keys(id as u32 + 0x1000_0000));
    fwd.set_srtp(id, PROFILE.rfc5764_id(), &up, &down).expect("keys");
    let ext = HeaderExtIds { mid: 0, rid: 0, repaired_rid: 0, audio_level: LEVEL_ID, twcc: TWCC_ID };
    fwd.set_extensions(id, ext).expect("extensions");
    Context::new(PROFILE, &up.key, &up.salt).expect("client keys")
}

/// RTP with a one-byte-header extension block (transport-wide seq, and the audio level for audio).
fn rtp(ssrc: u32, seq: u16, ts: u32, twcc: u16, level: Option<u8>, payload_len: usize, first: bool) -> Vec<u8> {
    let mut p = vec![0x90, if level.is_some() { 111 } else { 96 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1]);
    let t = twcc.to_be_bytes();
    match level {
        Some(l) => p.extend_from_slice(&[(TWCC_ID << 4) | 1, t[0], t[1], LEVEL_ID << 4, l]),
        None => p.extend_from_slice(&[(TWCC_ID << 4) | 1, t[0], t[1], 0]),
    }
    while p.len() % 4 != 0 {
        p.push(0);
    }
    let len = p.len();
    p[14..16].copy_from_slice(&(((len - 16) / 4) as u16).to_be_bytes());
    // A VP8 payload descriptor (S bit on the first packet of a frame; never a keyframe here) or Opus.
    if level.is_none() {
        p.extend_from_slice(&[if first { 0x90 } else { 0x80 }, 0x80, 0x80, 0x01, 0x01]);
    }
    p.resize(len + payload_len, 0xAB);
    p
}

fn main() {
    let rooms: u32 = std::env::var("SY_ROOMS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let packets: usize = std::env::var("SY_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let mut fwd = Forwarder::new(0, Arc::new(WorkerCounters::default()), 1024);
    let mut out = Sink::new();
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for r in 0..rooms {
        let (p, s) = (1 + 2 * u64::from(r), 2 + 2 * u64::from(r));
        let (video, audio) = (0x1000_0000 + r, 0x2000_0000 + r);
        let client = transport(&mut fwd, p, addr(2 * r), t0, &mut out);
        transport(&mut fwd, s, addr(2 * r + 1), t0, &mut out);
        for (ssrc, kind, clock_rate, feedback) in
            [(video, TrackKind::Video, 90_000, FB_NACK | FB_PLI | FB_FIR | FB_TWCC), (audio, TrackKind::Audio, 48_000, FB_TWCC)]
        {
            let spec = TrackSpec {
                track: ssrc,
                kind,
                mid: String::new(),
                clock_rate,
                payload_type: if kind == TrackKind::Video { 96 } else { 111 },
                feedback,
                layers: vec![Layer { rid: String::new(), ssrc }],
            };
            fwd.add_track(p, spec, t0).expect("track");
            let sub = SubscriptionSpec {
                publisher: p,
                publisher_at: Dest::Local(p),
                track: ssrc,
                kind,
                clock_rate,
                layers: 1,
                out_ssrc: ssrc,
                out_rtx_ssrc: 0,
                rtx_payload_type: 0,
            };
            fwd.add_subscription(s, sub, t0, &mut out).expect("subscription");
            fwd.add_route(p, ssrc, Dest::Local(s), 1000).expect("route");
        }
        clients.push((client, video, audio));
    }
    // The input: per room, one 20 ms period = 3 video packets (a burst of a 1 Mbit/s 30 fps frame,
    // 2/3 of the time) and one audio packet, encrypted ahead. ~170 packets/s per room as in the
    // harness; the simulated clock advances so that every room sends at that rate.
    let per_room_period = 4usize;
    let periods = packets.div_ceil(per_room_period * rooms as usize).max(1);
    let mut input: Vec<(SocketAddr, Vec<u8>)> = Vec::with_capacity(periods * rooms as usize * per_room_period);
    let mut seqs = vec![(0u16, 0u16, 0u16); rooms as usize];
    for period in 0..periods {
        for (r, (client, video, audio)) in clients.iter_mut().enumerate() {
            let (vs, aseq, tw) = &mut seqs[r];
            for i in 0..3 {
                let plain = rtp(*video, *vs, period as u32 * 1800, *tw, None, 1150, i == 0);
                *vs = vs.wrapping_add(1);
                *tw = tw.wrapping_add(1);
                input.push((addr(2 * r as u32), protect(client, &plain)));
            }
            let plain = rtp(*audio, *aseq, period as u32 * 960, *tw, Some(40), 100, true);
            *aseq = aseq.wrapping_add(1);
            *tw = tw.wrapping_add(1);
            input.push((addr(2 * r as u32), protect(client, &plain)));
        }
    }
    let step = Duration::from_nanos(20_000_000 / (rooms as u64 * per_room_period as u64));
    let tick = Duration::from_millis(20);
    let mut now = t0 + Duration::from_millis(1);
    let mut next_tick = now + tick;
    eprintln!("input ready after {:.1} s; forwarding", t0.elapsed().as_secs_f64());
    // Batches of `SY_BATCH` packets (default 32: what the worker receives per wake-up at the
    // harness's load), each shown to the forwarder's look-ahead before any is handled, as the
    // worker does; SY_BATCH=1 handles each packet alone.
    let batch: usize = std::env::var("SY_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(32).max(1);
    let started = Instant::now();
    let n = input.len();
    for chunk in input.chunks_mut(batch) {
        if batch > 1 {
            for (from, pkt) in chunk.iter() {
                fwd.look_ahead(from, pkt);
            }
            fwd.prefetch_batch();
        }
        for (from, pkt) in chunk.iter_mut() {
            fwd.handle_datagram(now, *from, pkt, &mut out);
            now += step;
            if now >= next_tick {
                fwd.tick(now, &mut out);
                next_tick += tick;
            }
        }
    }
    let elapsed = started.elapsed();
    let forwarded = out.packets;
    assert!(forwarded >= n as u64 * 9 / 10, "forwarded {forwarded} of {n}");
    println!(
        "rooms {rooms}: {n} packets in, {forwarded} sent, {:.1} ns per packet in ({:.0} packets/s on one core, crypto included)",
        elapsed.as_nanos() as f64 / n as f64,
        n as f64 / elapsed.as_secs_f64()
    );
}

fn protect(ctx: &mut Context, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + 64];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtp(&mut buf, plain.len()).expect("protect");
    buf.truncate(n);
    buf
}
