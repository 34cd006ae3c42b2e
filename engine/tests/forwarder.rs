//! The sans-I/O packet path, driven with byte slices: no sockets, no threads, no clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_engine::forwarder::{Dest, Forwarder, Output, TrackSpec, ENGINE_RTCP_SSRC};
use switchyard_engine::media::rtcp::{self, Packet, SenderInfo};
use switchyard_engine::streams::SubscriptionSpec;
use switchyard_engine::handoff::Handoff;
use switchyard_engine::stats::{Counter, DropReason, WorkerCounters};
use switchyard_protocol::{Event, KeySalt, Layer, TrackKind, FB_PLI};
use switchyard_srtp::{Context, Profile};
use switchyard_stun::{BindingRequest, Class, Message};

#[derive(Default)]
struct Captured {
    sent: Vec<(SocketAddr, Vec<u8>)>,
    handoffs: Vec<(u16, Handoff)>,
    events: Vec<Event>,
}

impl Output for Captured {
    fn send<F: FnOnce(&mut [u8]) -> Option<usize>>(&mut self, to: SocketAddr, _received: Instant, fill: F) -> bool {
        let mut buf = vec![0u8; 2048];
        match fill(&mut buf) {
            Some(n) => {
                buf.truncate(n);
                self.sent.push((to, buf));
                true
            }
            None => false,
        }
    }
    fn handoff(&mut self, worker: u16, h: Handoff) -> Result<(), Handoff> {
        self.handoffs.push((worker, h));
        Ok(())
    }
    fn event(&mut self, ev: Event) -> bool {
        self.events.push(ev);
        true
    }
}

const PWD: &str = "engine-password-0123456789";

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

fn check(ufrag: &str, pwd: &str, tx: u8, use_candidate: bool) -> Vec<u8> {
    let user = format!("{ufrag}:client");
    let req = BindingRequest {
        transaction_id: [tx; 12],
        username: user.as_bytes(),
        password: pwd.as_bytes(),
        priority: 12345,
        use_candidate,
        controlling: Some(7),
        controlled: None,
    };
    let mut buf = vec![0u8; 512];
    let n = req.write(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn keys(seed: u8, profile: Profile) -> KeySalt {
    KeySalt { key: vec![seed; profile.key_len()], salt: vec![seed ^ 0x5a; profile.salt_len()] }
}

/// A transport `id` with ufrag `u<id>`, bound to 127.0.0.1:<port> and keyed; returns the client's
/// contexts (the one it sends with, the one it receives with).
fn connected(f: &mut Forwarder, id: u64, port: u16, profile: Profile) -> (Context, Context) {
    let now = Instant::now();
    f.add_transport(id, format!("u{id}"), PWD.into(), now).unwrap();
    let mut out = Captured::default();
    f.handle_datagram(now, addr(port), &mut check(&format!("u{id}"), PWD, id as u8, true), &mut out);
    assert_eq!(out.sent.len(), 1, "binding answered");
    let up = keys(id as u8, profile);
    let down = keys(id as u8 + 100, profile);
    f.set_srtp(id, profile.rfc5764_id(), &up, &down).unwrap();
    (
        Context::new(profile, &up.key, &up.salt).unwrap(),
        Context::new(profile, &down.key, &down.salt).unwrap(),
    )
}

fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn protect(ctx: &mut Context, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + 64];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn one_layer_spec(publisher: u64, publisher_at: Dest, ssrc: u32) -> SubscriptionSpec {
    SubscriptionSpec {
        publisher,
        publisher_at,
        track: ssrc,
        kind: TrackKind::Video,
        clock_rate: 90_000,
        layers: 1,
        out_ssrc: ssrc,
        out_rtx_ssrc: 0,
        rtx_payload_type: 0,
    }
}

fn video_track(track: u32, feedback: u8, layers: &[(&str, u32)]) -> TrackSpec {
    TrackSpec {
        track,
        kind: TrackKind::Video,
        mid: "1".into(),
        clock_rate: 90_000,
        payload_type: 96,
        feedback,
        layers: layers.iter().map(|(rid, ssrc)| Layer { rid: rid.to_string(), ssrc: *ssrc }).collect(),
    }
}

fn forwarder() -> Forwarder {
    forwarder_on(0)
}

/// The forwarder of worker `worker` (tests with subscribers on a second worker).
fn forwarder_on(worker: u16) -> Forwarder {
    Forwarder::new(worker, Arc::new(WorkerCounters::default()), 64)
}

#[test]
fn binding_request_with_right_credentials_is_answered_and_binds_the_address() {
    let mut f = forwarder();
    let now = Instant::now();
    f.add_transport(1, "u1".into(), PWD.into(), now).unwrap();
    let mut out = Captured::default();
    f.handle_datagram(now, addr(4000), &mut check("u1", PWD, 1, true), &mut out);
    assert_eq!(out.sent.len(), 1);
    let (to, resp) = &out.sent[0];
    assert_eq!(*to, addr(4000));
    let m = Message::parse(resp).unwrap();
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(m.transaction_id(), &[1u8; 12]);
    assert_eq!(m.xor_mapped_address(), Some(addr(4000)));
    assert!(m.verify_integrity(PWD.as_bytes()));
    assert!(m.verify_fingerprint());
    assert_eq!(out.events, vec![Event::IceBound { transport: 1, addr: addr(4000) }]);
    assert_eq!(f.counters().get(Counter::StunAnswered), 1);
}

#[test]
fn wrong_password_unknown_ufrag_and_garbage_are_dropped_and_counted() {
    let mut f = forwarder();
    let now = Instant::now();
    f.add_transport(1, "u1".into(), PWD.into(), now).unwrap();
    let mut out = Captured::default();
    f.handle_datagram(now, addr(4000), &mut check("u1", "wrong-password-0123456789", 1, true), &mut out);
    f.handle_datagram(now, addr(4000), &mut check("nobody", PWD, 2, true), &mut out);
    let mut truncated = check("u1", PWD, 3, true);
    truncated.truncate(30);
    f.handle_datagram(now, addr(4000), &mut truncated, &mut out);
    f.handle_datagram(now, addr(4000), &mut [0xff, 1, 2, 3], &mut out);
    f.handle_datagram(now, addr(4000), &mut [], &mut out);
    // RTP and DTLS from an address that never passed ICE.
    f.handle_datagram(now, addr(4000), &mut rtp(5, 1, b"media"), &mut out);
    f.handle_datagram(now, addr(4000), &mut [22, 254, 253, 0, 0], &mut out);
    assert!(out.sent.is_empty() && out.events.is_empty() && out.handoffs.is_empty());
    let c = f.counters();
    assert_eq!(c.dropped(DropReason::StunBadIntegrity), 1);
    assert_eq!(c.dropped(DropReason::StunUnknownUfrag), 1);
    assert_eq!(c.dropped(DropReason::StunMalformed), 1);
    assert_eq!(c.dropped(DropReason::NotWebrtc), 2);
    assert_eq!(c.dropped(DropReason::UnboundSource), 2);
}

#[test]
fn srtp_is_decrypted_once_and_reencrypted_per_local_subscriber() {
    for profile in [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm] {
        let mut f = forwarder();
        let (mut pub_tx, _) = connected(&mut f, 1, 5001, profile);
        let (_, mut sub2_rx) = connected(&mut f, 2, 5002, profile);
        let (_, mut sub3_rx) = connected(&mut f, 3, 5003, profile);
        f.add_route(1, 0xabc, Dest::Local(2), 10).unwrap();
        f.add_route(1, 0xabc, Dest::Local(3), 10).unwrap();
        for seq in 0..50u16 {
            let plain = rtp(0xabc, seq, &[seq as u8; 100]);
            let mut out = Captured::default();
            f.handle_datagram(Instant::now(), addr(5001), &mut protect(&mut pub_tx, &plain), &mut out);
            assert_eq!(out.sent.len(), 2);
            for (to, mut pkt) in out.sent {
                let ctx = if to == addr(5002) { &mut sub2_rx } else { &mut sub3_rx };
                let n = ctx.unprotect_rtp(&mut pkt).unwrap();
                assert_eq!(&pkt[..n], &plain[..], "{profile:?} seq {seq}");
            }
        }
        assert_eq!(f.counters().get(Counter::RtpForwarded), 100);
    }
}

#[test]
fn remote_subscribers_share_one_plaintext_copy_and_their_worker_encrypts() {
    let profile = Profile::AeadAes128Gcm;
    let mut w0 = forwarder();
    let mut w1 = forwarder_on(1);
    let (mut pub_tx, _) = connected(&mut w0, 1, 6001, profile);
    let (_, mut sub_rx) = connected(&mut w1, 2, 6002, profile);
    let (_, mut sub3_rx) = connected(&mut w1, 3, 6003, profile);
    for sub in [2, 3] {
        w1.add_subscription(sub, one_layer_spec(1, Dest::Remote { worker: 0, transport: 1 }, 77), Instant::now(), &mut Captured::default())
            .unwrap();
        w0.add_route(1, 77, Dest::Remote { worker: 1, transport: sub }, 10).unwrap();
    }
    let plain = rtp(77, 9, b"hello across workers");
    let mut out = Captured::default();
    w0.handle_datagram(Instant::now(), addr(6001), &mut protect(&mut pub_tx, &plain), &mut out);
    assert!(out.sent.is_empty());
    assert_eq!(out.handoffs.len(), 2);
    let (p0, p1) = (out.handoffs[0].1.packet.as_ref().unwrap(), out.handoffs[1].1.packet.as_ref().unwrap());
    assert!(Arc::ptr_eq(p0, p1), "one shared copy");
    assert_eq!(p0.bytes(), &plain[..]);
    let mut out1 = Captured::default();
    for (w, h) in out.handoffs {
        assert_eq!(w, 1);
        w1.handle_handoff(h, &mut out1);
    }
    assert_eq!(out1.sent.len(), 2);
    for (to, mut pkt) in out1.sent {
        let ctx = if to == addr(6002) { &mut sub_rx } else { &mut sub3_rx };
        let n = ctx.unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(&pkt[..n], &plain[..]);
    }
}

/// The worker shows a receive batch to `look_ahead` and `prefetch_batch` before handling it: that
/// must change nothing, whatever the batch holds (garbage, STUN, short or unknown RTP, RTCP, more
/// packets than it notes), and the packets then forward exactly as without it.
#[test]
fn looking_ahead_at_a_batch_changes_nothing() {
    let profile = Profile::AeadAes128Gcm;
    let mut f = forwarder();
    let (mut pub_tx, _) = connected(&mut f, 1, 5101, profile);
    let (_, mut sub_rx) = connected(&mut f, 2, 5102, profile);
    f.add_route(1, 0xabc, Dest::Local(2), 10).unwrap();
    let mut batch: Vec<(SocketAddr, Vec<u8>)> = vec![
        (addr(5101), vec![]),
        (addr(5101), vec![0x80]),
        (addr(5101), vec![0x80, 96, 0, 1]),
        (addr(5101), check("x", "y", 1, false)),
        (addr(5199), rtp(0xabc, 7, b"unknown address")),
        (addr(5101), rtp(0xdead, 7, b"unknown ssrc")),
        (addr(5101), vec![0x80, 200, 0, 1, 0, 0, 0, 1]),
    ];
    for seq in 0..100u16 {
        batch.push((addr(5101), protect(&mut pub_tx, &rtp(0xabc, seq, &[seq as u8; 300]))));
    }
    let before = (f.counters().counters_named(), f.counters().drops_named(), f.snapshot().len());
    for _ in 0..3 {
        for (from, pkt) in &batch {
            f.look_ahead(from, pkt);
        }
        f.prefetch_batch();
    }
    f.prefetch_batch();
    assert_eq!((f.counters().counters_named(), f.counters().drops_named(), f.snapshot().len()), before);
    let mut out = Captured::default();
    for (from, pkt) in batch.iter_mut().skip(7) {
        f.look_ahead(from, pkt);
    }
    f.prefetch_batch();
    for (seq, (from, pkt)) in batch.iter_mut().skip(7).enumerate() {
        f.handle_datagram(Instant::now(), *from, pkt, &mut out);
        let (to, mut sent) = out.sent.pop().expect("forwarded");
        assert_eq!(to, addr(5102));
        let n = sub_rx.unprotect_rtp(&mut sent).unwrap();
        assert_eq!(&sent[..n], &rtp(0xabc, seq as u16, &[seq as u8; 300])[..]);
    }
    assert_eq!(f.counters().get(Counter::RtpForwarded), 100);
}

#[test]
fn rooms_with_the_same_ssrc_never_see_each_others_media() {
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut f = forwarder();
    let (mut a_tx, _) = connected(&mut f, 1, 7001, profile);
    connected(&mut f, 2, 7002, profile);
    let (mut c_tx, _) = connected(&mut f, 3, 7003, profile);
    connected(&mut f, 4, 7004, profile);
    // Room X: 1 -> 2. Room Y: 3 -> 4. Both publish SSRC 42.
    f.add_route(1, 42, Dest::Local(2), 10).unwrap();
    f.add_route(3, 42, Dest::Local(4), 10).unwrap();
    let mut out = Captured::default();
    f.handle_datagram(Instant::now(), addr(7001), &mut protect(&mut a_tx, &rtp(42, 1, b"x")), &mut out);
    f.handle_datagram(Instant::now(), addr(7003), &mut protect(&mut c_tx, &rtp(42, 1, b"y")), &mut out);
    let dests: Vec<_> = out.sent.iter().map(|(a, _)| *a).collect();
    assert_eq!(dests, vec![addr(7002), addr(7004)]);
}

#[test]
fn replayed_tampered_and_unkeyed_srtp_is_dropped() {
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut f = forwarder();
    let (mut tx, _) = connected(&mut f, 1, 8001, profile);
    connected(&mut f, 2, 8002, profile);
    f.add_route(1, 5, Dest::Local(2), 10).unwrap();
    let pkt = protect(&mut tx, &rtp(5, 1, b"payload"));
    let mut out = Captured::default();
    f.handle_datagram(Instant::now(), addr(8001), &mut pkt.clone(), &mut out);
    f.handle_datagram(Instant::now(), addr(8001), &mut pkt.clone(), &mut out);
    let mut tampered = protect(&mut tx, &rtp(5, 2, b"payload"));
    tampered[14] ^= 1;
    f.handle_datagram(Instant::now(), addr(8001), &mut tampered, &mut out);
    let mut short = protect(&mut tx, &rtp(5, 3, b"payload"));
    short.truncate(11);
    f.handle_datagram(Instant::now(), addr(8001), &mut short, &mut out);
    assert_eq!(out.sent.len(), 1);
    let c = f.counters();
    assert_eq!(c.dropped(DropReason::SrtpReplay), 1);
    assert_eq!(c.dropped(DropReason::SrtpAuth), 1);
    assert_eq!(c.dropped(DropReason::SrtpMalformed), 1);

    // A transport that passed ICE but has no keys yet.
    f.add_transport(9, "u9".into(), PWD.into(), Instant::now()).unwrap();
    f.handle_datagram(Instant::now(), addr(8009), &mut check("u9", PWD, 9, true), &mut out);
    f.handle_datagram(Instant::now(), addr(8009), &mut rtp(6, 1, b"early"), &mut out);
    assert_eq!(f.counters().dropped(DropReason::NoSrtpKeys), 1);
}

#[test]
fn dtls_from_a_bound_address_is_punted_up_and_control_records_go_back_out() {
    let mut f = forwarder();
    let now = Instant::now();
    f.add_transport(1, "u1".into(), PWD.into(), now).unwrap();
    let mut out = Captured::default();
    f.handle_datagram(now, addr(9001), &mut check("u1", PWD, 1, true), &mut out);
    let hello = vec![22u8, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    f.handle_datagram(now, addr(9001), &mut hello.clone(), &mut out);
    assert_eq!(out.events.last(), Some(&Event::DtlsIn { transport: 1, datagram: hello }));
    let mut out = Captured::default();
    f.dtls_out(1, &[22, 254, 253, 9], now, &mut out).unwrap();
    assert_eq!(out.sent, vec![(addr(9001), vec![22, 254, 253, 9])]);
    assert!(f.dtls_out(5, &[22], now, &mut out).is_err(), "unknown transport");
}

#[test]
fn keyframe_requests_from_a_subscriber_reach_the_publisher() {
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut f = forwarder();
    let (_, mut pub_rx) = connected(&mut f, 1, 9101, profile);
    let (mut sub_tx, _) = connected(&mut f, 2, 9102, profile);
    let t0 = Instant::now();
    f.add_route(1, 0x1234, Dest::Local(2), 10).unwrap();
    // PLI (RFC 4585 §6.3.1): V=2 FMT=1 PT=206 length=2, sender SSRC, media SSRC.
    let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0x12, 0x34];
    let mut buf = vec![0u8; 64];
    buf[..12].copy_from_slice(&pli);
    let n = sub_tx.protect_rtcp(&mut buf, 12).unwrap();
    buf.truncate(n);
    let mut out = Captured::default();
    f.handle_datagram(t0, addr(9102), &mut buf, &mut out);
    assert_eq!(out.sent.len(), 1);
    let (to, mut pkt) = out.sent.remove(0);
    assert_eq!(to, addr(9101));
    let n = pub_rx.unprotect_rtcp(&mut pkt).unwrap();
    // The engine's own request: an empty receiver report, then the PLI for the stream.
    let got: Vec<_> = rtcp::parse(&pkt[..n]).map(|p| p.unwrap()).collect();
    assert!(matches!(got[0], Packet::ReceiverReport(ref rr) if rr.ssrc == ENGINE_RTCP_SSRC));
    assert!(matches!(got[1], Packet::Pli { sender: ENGINE_RTCP_SSRC, media: 0x1234 }), "{got:?}");
}

#[test]
fn removing_a_transport_removes_its_routes_and_addresses() {
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut f = forwarder();
    let (mut tx, _) = connected(&mut f, 1, 9201, profile);
    connected(&mut f, 2, 9202, profile);
    f.add_route(1, 5, Dest::Local(2), 10).unwrap();
    f.remove_transport(2).unwrap();
    let mut out = Captured::default();
    f.handle_datagram(Instant::now(), addr(9201), &mut protect(&mut tx, &rtp(5, 1, b"x")), &mut out);
    assert!(out.sent.is_empty());
    assert_eq!(f.snapshot().len(), 1);
    f.remove_transport(1).unwrap();
    f.handle_datagram(Instant::now(), addr(9201), &mut protect(&mut tx, &rtp(5, 2, b"x")), &mut out);
    assert_eq!(f.counters().dropped(DropReason::UnboundSource), 1);
    assert!(f.add_transport(1, "u1".into(), PWD.into(), Instant::now()).is_ok(), "id and ufrag free again");
}

#[test]
fn a_keyframe_request_is_sent_to_the_publisher_as_a_pli() {
    let profile = Profile::AeadAes128Gcm;
    let mut f = forwarder();
    let (_, mut pub_rx) = connected(&mut f, 1, 9301, profile);
    let mut out = Captured::default();
    let t0 = Instant::now();
    f.add_track(1, video_track(5, FB_PLI, &[("", 0xfeed)]), t0).unwrap();
    f.request_keyframe(1, 5, t0, &mut out).unwrap();
    let (to, mut pkt) = out.sent.remove(0);
    assert_eq!(to, addr(9301));
    let n = pub_rx.unprotect_rtcp(&mut pkt).unwrap();
    let got: Vec<_> = rtcp::parse(&pkt[..n]).map(|p| p.unwrap()).collect();
    assert!(matches!(got[1], Packet::Pli { media: 0xfeed, .. }), "{got:?}");
    // Within the coalescing interval a second request waits.
    f.request_keyframe(1, 5, t0 + Duration::from_millis(10), &mut out).unwrap();
    assert!(out.sent.is_empty());
    assert_eq!(f.counters().get(Counter::KeyframeRequestsCoalesced), 1);
    assert!(f.request_keyframe(1, 6, t0, &mut out).is_err(), "no such track");
    f.add_transport(2, "u2".into(), PWD.into(), Instant::now()).unwrap();
    assert!(f.request_keyframe(2, 1, Instant::now(), &mut out).is_err(), "no ICE/keys yet");
}

// ---- media quality (issue 7): tracks, subscriptions, RTCP, simulcast ----

use switchyard_engine::media::rtcp::{write_nack, write_pli, write_twcc};
use switchyard_protocol::{HeaderExtIds, FB_FIR, FB_NACK, FB_TWCC, OUT_EXT_AUDIO_LEVEL, OUT_EXT_TWCC, OUT_EXT_UNUSED};

/// Publisher header-extension ids (as a browser's offer might number them).
const EXT: HeaderExtIds = HeaderExtIds { mid: 4, rid: 10, repaired_rid: 11, audio_level: 1, twcc: 5 };

/// An RTP packet with one-byte header extensions and a payload.
fn rtp_ext(ssrc: u32, seq: u16, ts: u32, ext: &[(u8, &[u8])], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, v) in ext {
        body.push((id << 4) | (v.len() as u8 - 1));
        body.extend_from_slice(v);
    }
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let mut p = vec![if ext.is_empty() { 0x80 } else { 0x90 }, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if !ext.is_empty() {
        p.extend_from_slice(&[0xBE, 0xDE]);
        p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(&body);
    }
    p.extend_from_slice(payload);
    p
}

/// A VP8 payload: the start of a frame (keyframe with `height`, or not) or a continuation, padded to
/// `size`, its last byte `tag`.
fn vp8(start: bool, key: bool, height: u16, size: usize, tag: u8) -> Vec<u8> {
    let mut p = vec![if start { 0x90 } else { 0x80 }, 0x80, 0x80, 0x01];
    if start {
        p.extend_from_slice(&[if key { 0x50 } else { 0x51 }, 0x21, 0x00, 0x9d, 0x01, 0x2a]);
        let w = height * 16 / 9;
        p.extend_from_slice(&w.to_le_bytes());
        p.extend_from_slice(&height.to_le_bytes());
    }
    p.resize(size.max(p.len() + 1), 0x33);
    *p.last_mut().unwrap() = tag;
    p
}

fn protect_rtcp(ctx: &mut Context, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + 64];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtcp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn is_rtcp(pkt: &[u8]) -> bool {
    (192..=223).contains(&pkt[1])
}

/// What was sent to `to`: decrypted RTP and RTCP.
fn received(out: &mut Captured, to: SocketAddr, rx: &mut Context) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut rtps, mut rtcps) = (Vec::new(), Vec::new());
    for (a, mut pkt) in std::mem::take(&mut out.sent) {
        if a != to {
            out.sent.push((a, pkt));
            continue;
        }
        if is_rtcp(&pkt) {
            let n = rx.unprotect_rtcp(&mut pkt).unwrap();
            pkt.truncate(n);
            rtcps.push(pkt);
        } else {
            let n = rx.unprotect_rtp(&mut pkt).unwrap();
            pkt.truncate(n);
            rtps.push(pkt);
        }
    }
    (rtps, rtcps)
}

fn seq_of(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}
fn ts_of(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[4], p[5], p[6], p[7]])
}
fn ssrc_of(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[8], p[9], p[10], p[11]])
}

fn sub_spec(publisher: u64, at: Dest, track: u32, kind: TrackKind, layers: u8, out_ssrc: u32, rtx: (u32, u8)) -> SubscriptionSpec {
    SubscriptionSpec {
        publisher,
        publisher_at: at,
        track,
        kind,
        clock_rate: if kind == TrackKind::Video { 90_000 } else { 48_000 },
        layers,
        out_ssrc,
        out_rtx_ssrc: rtx.0,
        rtx_payload_type: rtx.1,
    }
}

/// Publisher 1 (port 11001) with video track 7 (SSRC 0xAAAA), subscribers 2 and 3 on the same
/// worker: 2 receives it as 0xB2, 3 as 0xB3 with RTX 0xC3 / PT 97.
struct Nacky {
    f: Forwarder,
    pub_tx: Context,
    pub_rx: Context,
    subs: Vec<(Context, Context)>,
    t0: Instant,
}

fn nacky(feedback: u8) -> Nacky {
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut f = forwarder();
    let (pub_tx, pub_rx) = connected(&mut f, 1, 11001, profile);
    let t0 = Instant::now();
    f.add_track(1, video_track(7, feedback, &[("", 0xAAAA)]), t0).unwrap();
    let mut subs = Vec::new();
    for (id, out_ssrc, rtx) in [(2u64, 0xB2u32, (0u32, 0u8)), (3, 0xB3, (0xC3, 97))] {
        subs.push(connected(&mut f, id, 11000 + id as u16, profile));
        f.add_subscription(id, sub_spec(1, Dest::Local(1), 7, TrackKind::Video, 1, out_ssrc, rtx), t0, &mut Captured::default()).unwrap();
        f.add_route(1, 7, Dest::Local(id), 10).unwrap();
    }
    Nacky { f, pub_tx, pub_rx, subs, t0 }
}

impl Nacky {
    /// The publisher sends video packet `seq` (a frame start, 200 bytes) at t0.
    fn publish(&mut self, out: &mut Captured, seq: u16) {
        let plain = rtp_ext(0xAAAA, seq, seq as u32 * 3000, &[], &vp8(true, false, 0, 200, seq as u8));
        self.f.handle_datagram(self.t0, addr(11001), &mut protect(&mut self.pub_tx, &plain), out);
    }
}

/// The sequence numbers the NACKs in these RTCP packets name, in order.
fn nacked_seqs(rtcps: &[Vec<u8>]) -> Vec<u16> {
    rtcps
        .iter()
        .flat_map(|p| rtcp::parse(p).collect::<Vec<_>>())
        .filter_map(|x| match x {
            Ok(Packet::Nack(k)) => Some(k.lost().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn subscriber_nacks_are_answered_from_the_cache_and_never_reach_the_publisher() {
    let mut n = nacky(FB_NACK | FB_PLI);
    let mut out = Captured::default();
    for seq in 100..120u16 {
        n.publish(&mut out, seq);
    }
    let (to2, _) = received(&mut out, addr(11002), &mut n.subs[0].1);
    let (to3, _) = received(&mut out, addr(11003), &mut n.subs[1].1);
    assert_eq!((to2.len(), to3.len()), (20, 20));
    assert!(to2.iter().all(|p| ssrc_of(p) == 0xB2) && to3.iter().all(|p| ssrc_of(p) == 0xB3), "rewritten onto out_ssrc");
    // Subscriber 2 lost the packets it saw as seq 105 and 110, and asks for one never sent.
    let (s105, s110) = (seq_of(&to2[5]), seq_of(&to2[10]));
    let mut nack = vec![0u8; 64];
    let (len, _) = write_nack(&mut nack, 0x2222, 0xB2, &[s105, s110, s110.wrapping_add(1000)]).unwrap();
    let mut rtcp2 = protect_rtcp(&mut n.subs[0].0, &nack[..len]);
    n.f.handle_datagram(n.t0, addr(11002), &mut rtcp2, &mut out);
    // The originals were received, so a fresh receive context (as after their loss) reads the copies.
    let k = keys(102, Profile::Aes128CmHmacSha1_80);
    let mut fresh = Context::new(Profile::Aes128CmHmacSha1_80, &k.key, &k.salt).unwrap();
    let (rtx, _) = received(&mut out, addr(11002), &mut fresh);
    assert_eq!(rtx, vec![to2[5].clone(), to2[10].clone()], "the same bytes the subscriber was sent");
    assert!(out.sent.is_empty(), "nothing to the publisher: {:?}", out.sent.iter().map(|s| s.0).collect::<Vec<_>>());
    let c = n.f.counters();
    assert_eq!((c.get(Counter::NackReceived), c.get(Counter::RtxSent), c.dropped(DropReason::NackCacheMiss)), (3, 2, 1));

    // Subscriber 3 has RTX: the answer is RFC 4588 (RTX SSRC and PT, own sequence, OSN first).
    let s3 = seq_of(&to3[7]);
    let (len, _) = write_nack(&mut nack, 0x3333, 0xB3, &[s3]).unwrap();
    let mut rtcp3 = protect_rtcp(&mut n.subs[1].0, &nack[..len]);
    n.f.handle_datagram(n.t0, addr(11003), &mut rtcp3, &mut out);
    let (rtx, _) = received(&mut out, addr(11003), &mut n.subs[1].1);
    assert_eq!(rtx.len(), 1);
    let (r, orig) = (&rtx[0], &to3[7]);
    assert_eq!((ssrc_of(r), r[1] & 0x7F, ts_of(r)), (0xC3, 97, ts_of(orig)));
    assert_eq!(&r[12..14], &s3.to_be_bytes(), "OSN");
    assert_eq!(&r[14..], &orig[12..], "original payload after the OSN");
    // Nothing went to the publisher but nothing is expected either: a tick now has no gap to NACK.
    n.f.tick(n.t0 + Duration::from_millis(30), &mut out);
    let (_, rtcp_up) = received(&mut out, addr(11001), &mut n.pub_rx);
    for p in &rtcp_up {
        assert!(rtcp::parse(p).all(|x| !matches!(x, Ok(Packet::Nack(_)))), "no NACK upstream");
    }
}

#[test]
fn nacks_the_cache_cannot_answer_go_to_the_publisher_and_the_retransmission_comes_through() {
    // As after an engine restart: the subscriber lost packets the new engine never saw (95..=99).
    let mut n = nacky(FB_NACK | FB_PLI);
    let mut out = Captured::default();
    for seq in 100..110u16 {
        n.publish(&mut out, seq);
    }
    let _ = received(&mut out, addr(11002), &mut n.subs[0].1);
    out.sent.clear();
    let mut nack = vec![0u8; 64];
    let (len, _) = write_nack(&mut nack, 0x2222, 0xB2, &[97, 98, 2000]).unwrap();
    let mut rtcp2 = protect_rtcp(&mut n.subs[0].0, &nack[..len]);
    n.f.handle_datagram(n.t0, addr(11002), &mut rtcp2, &mut out);
    let (_, up) = received(&mut out, addr(11001), &mut n.pub_rx);
    assert_eq!(nacked_seqs(&up), vec![97, 98], "the misses the stream's numbering covers, not one never sent");
    // The publisher retransmits 97: the subscriber gets it under the number it asked for.
    n.publish(&mut out, 97);
    let (to2, _) = received(&mut out, addr(11002), &mut n.subs[0].1);
    assert_eq!(to2.iter().map(|p| seq_of(p)).collect::<Vec<_>>(), vec![97]);
}

#[test]
fn nacks_are_answered_from_one_store_per_track_and_worker_across_workers() {
    // Publisher 1 on worker 0; subscriber 2 there, subscribers 3 and 4 on worker 1 (RTX for 4). Every
    // worker keeps the track's packets once, and each subscriber's NACK gets back exactly what it was
    // sent (its own numbering), from its own worker.
    let profile = Profile::AeadAes128Gcm;
    let mut w0 = forwarder();
    let mut w1 = forwarder_on(1);
    let (mut pub_tx, _) = connected(&mut w0, 1, 13001, profile);
    let t0 = Instant::now();
    w0.add_track(1, video_track(7, FB_NACK | FB_PLI, &[("", 0xAAAA)]), t0).unwrap();
    let mut out = Captured::default();
    let mut subs = vec![connected(&mut w0, 2, 13002, profile)];
    w0.add_subscription(2, sub_spec(1, Dest::Local(1), 7, TrackKind::Video, 1, 0xB2, (0, 0)), t0, &mut out).unwrap();
    w0.add_route(1, 7, Dest::Local(2), 10).unwrap();
    for (id, rtx) in [(3u64, (0u32, 0u8)), (4, (0xC4, 97))] {
        subs.push(connected(&mut w1, id, 13000 + id as u16, profile));
        let at = Dest::Remote { worker: 0, transport: 1 };
        w1.add_subscription(id, sub_spec(1, at, 7, TrackKind::Video, 1, 0xB0 + id as u32, rtx), t0, &mut out).unwrap();
        w0.add_route(1, 7, Dest::Remote { worker: 1, transport: id }, 10).unwrap();
    }
    assert_eq!((w0.packet_stores(), w1.packet_stores()), (1, 1), "one store per track and worker");
    out = Captured::default();
    for seq in 500..530u16 {
        let plain = rtp_ext(0xAAAA, seq, seq as u32 * 3000, &[], &vp8(seq == 500, seq == 500, 360, 700, seq as u8));
        w0.handle_datagram(t0, addr(13001), &mut protect(&mut pub_tx, &plain), &mut out);
    }
    for (worker, h) in std::mem::take(&mut out.handoffs) {
        assert_eq!(worker, 1);
        w1.handle_handoff(h, &mut out);
    }
    let mut firsts = Vec::new();
    for (i, (_, rx)) in subs.iter_mut().enumerate() {
        let (got, _) = received(&mut out, addr(13002 + i as u16), rx);
        assert_eq!(got.len(), 30, "subscriber {}", i + 2);
        firsts.push(got);
    }
    for (i, nacked) in [(0usize, vec![3usize, 17]), (1, vec![5, 29]), (2, vec![11])] {
        let id = i as u64 + 2;
        let w = if i == 0 { &mut w0 } else { &mut w1 };
        let seqs: Vec<u16> = nacked.iter().map(|&k| seq_of(&firsts[i][k])).collect();
        let mut nack = vec![0u8; 64];
        let (len, _) = write_nack(&mut nack, 0x1000 + id as u32, 0xB0 + id as u32, &seqs).unwrap();
        let mut rtcp = protect_rtcp(&mut subs[i].0, &nack[..len]);
        w.handle_datagram(t0, addr(13000 + id as u16), &mut rtcp, &mut out);
        let k = keys(id as u8 + 100, profile);
        let mut fresh = Context::new(profile, &k.key, &k.salt).unwrap();
        let (again, _) = received(&mut out, addr(13000 + id as u16), &mut fresh);
        if i < 2 {
            let want: Vec<Vec<u8>> = nacked.iter().map(|&k| firsts[i][k].clone()).collect();
            assert_eq!(again, want, "subscriber {id}: the same packets, byte for byte");
        } else {
            // RTX: own SSRC and payload type, the original sequence number first, then the payload.
            let (orig, rtx) = (&firsts[i][11], &again[0]);
            assert_eq!(again.len(), 1);
            assert_eq!((ssrc_of(rtx), rtx[1] & 0x7F), (0xC4, 97));
            assert_eq!(&rtx[4..8], &orig[4..8], "the timestamp it was sent with");
            assert_eq!(rtx.len(), orig.len() + 2);
            let hl = 12; // no CSRCs, no header extension
            assert_eq!(u16::from_be_bytes([rtx[hl], rtx[hl + 1]]), seq_of(orig), "OSN");
            assert_eq!(&rtx[hl + 2..], &orig[hl..], "payload");
        }
    }
    let c = w1.counters();
    assert_eq!((c.get(Counter::NackReceived), c.get(Counter::RtxSent), c.dropped(DropReason::NackCacheMiss)), (3, 3, 0));
    // The store goes with the last subscription on its worker.
    w1.remove_subscription(3, 1, 7).unwrap();
    assert_eq!(w1.packet_stores(), 1);
    w1.remove_subscription(4, 1, 7).unwrap();
    assert_eq!(w1.packet_stores(), 0);
}

#[test]
fn a_long_gap_from_before_the_stream_goes_to_the_publisher_whole_and_once() {
    // A subscriber that lost 300 packets while an engine restarted (aiortc's receiver waits for every
    // one of them before it shows another frame) NACKs them all; the engine passes all on, in NACK
    // packets of bounded size, and a repeat of the same NACK passes nothing on again.
    let mut n = nacky(FB_NACK | FB_PLI);
    let mut out = Captured::default();
    for seq in 1000..1010u16 {
        n.publish(&mut out, seq);
    }
    let _ = received(&mut out, addr(11002), &mut n.subs[0].1);
    out.sent.clear();
    let lost: Vec<u16> = (700..1000u16).collect();
    let mut asked_twice = Vec::new();
    for round in 0..2 {
        for chunk in lost.chunks(100) {
            let mut nack = vec![0u8; 1200];
            let (len, used) = write_nack(&mut nack, 0x2222, 0xB2, chunk).unwrap();
            assert_eq!(used, chunk.len());
            let mut rtcp2 = protect_rtcp(&mut n.subs[0].0, &nack[..len]);
            n.f.handle_datagram(n.t0, addr(11002), &mut rtcp2, &mut out);
        }
        let (_, up) = received(&mut out, addr(11001), &mut n.pub_rx);
        assert!(up.iter().all(|p| p.len() <= 1024 + 64), "NACK packets stay small");
        asked_twice.push((round, nacked_seqs(&up)));
    }
    assert_eq!(asked_twice[0].1, lost, "every lost packet asked of the publisher");
    assert!(asked_twice[1].1.is_empty(), "a repeated NACK is not passed on again: {:?}", asked_twice[1].1.len());
}

#[test]
fn a_gap_from_the_publisher_is_nacked_upstream_until_recovered() {
    let mut n = nacky(FB_NACK | FB_PLI);
    let mut out = Captured::default();
    let send = |n: &mut Nacky, out: &mut Captured, seq: u16, ms: u64| {
        let plain = rtp_ext(0xAAAA, seq, seq as u32 * 3000, &[], &vp8(false, false, 0, 100, 0));
        n.f.handle_datagram(n.t0 + Duration::from_millis(ms), addr(11001), &mut protect(&mut n.pub_tx, &plain), out);
    };
    for seq in (1..=10u16).chain(13..=20) {
        send(&mut n, &mut out, seq, 0);
    }
    out.sent.clear();
    n.f.tick(n.t0 + Duration::from_millis(25), &mut out);
    let nacked = |out: &mut Captured, n: &mut Nacky| -> Vec<u16> {
        let (_, rtcps) = received(out, addr(11001), &mut n.pub_rx);
        let mut v = Vec::new();
        for p in &rtcps {
            for x in rtcp::parse(p) {
                if let Ok(Packet::Nack(k)) = x {
                    assert_eq!((k.sender, k.media), (ENGINE_RTCP_SSRC, 0xAAAA));
                    v.extend(k.lost());
                }
            }
        }
        v
    };
    assert_eq!(nacked(&mut out, &mut n), vec![11, 12]);
    assert_eq!(n.f.counters().get(Counter::NackSent), 1);
    // 11 arrives (retransmitted); a later tick asks for 12 only.
    send(&mut n, &mut out, 11, 150);
    out.sent.clear();
    n.f.tick(n.t0 + Duration::from_millis(200), &mut out);
    assert_eq!(nacked(&mut out, &mut n), vec![12]);
    // A track without NACK negotiated never sends one.
    let mut m = nacky(FB_PLI);
    for seq in [1u16, 5] {
        send(&mut m, &mut out, seq, 0);
    }
    m.f.tick(m.t0 + Duration::from_millis(25), &mut out);
    assert!(nacked(&mut out, &mut m).is_empty());
}

#[test]
fn keyframe_requests_of_many_subscribers_are_coalesced_into_one() {
    let profile = Profile::AeadAes128Gcm;
    let mut w0 = forwarder();
    let mut w1 = forwarder_on(1);
    let (mut pub_tx, mut pub_rx) = connected(&mut w0, 1, 12001, profile);
    let t0 = Instant::now();
    w0.add_track(1, video_track(7, FB_PLI | FB_FIR, &[("", 0xAAAA)]), t0).unwrap();
    let mut out = Captured::default();
    let mut subs = Vec::new();
    // 20 subscribers here, 5 on worker 1.
    for id in 2..27u64 {
        let (w, at) = if id < 22 { (&mut w0, Dest::Local(1)) } else { (&mut w1, Dest::Remote { worker: 0, transport: 1 }) };
        subs.push(connected(w, id, 12000 + id as u16, profile));
        w.add_subscription(id, sub_spec(1, at, 7, TrackKind::Video, 1, 0xB000 + id as u32, (0, 0)), t0, &mut out).unwrap();
        let dest = if id < 22 { Dest::Local(id) } else { Dest::Remote { worker: 1, transport: id } };
        w0.add_route(1, 7, dest, 100).unwrap();
    }
    let pump = |w0: &mut Forwarder, out: &mut Captured| {
        for (_, h) in std::mem::take(&mut out.handoffs) {
            w0.handle_handoff(h, out);
        }
    };
    pump(&mut w0, &mut out);
    let plis = |out: &mut Captured, rx: &mut Context| -> usize {
        let (_, rtcps) = received(out, addr(12001), rx);
        rtcps.iter().flat_map(|p| rtcp::parse(p).collect::<Vec<_>>()).filter(|x| matches!(x, Ok(Packet::Pli { media: 0xAAAA, .. }))).count()
    };
    assert_eq!(plis(&mut out, &mut pub_rx), 1, "25 new subscriptions, one keyframe request");
    // 600 ms later every subscriber sends a PLI at once (the remote ones through worker 1).
    let t1 = t0 + Duration::from_millis(600);
    for (i, (tx, _)) in subs.iter_mut().enumerate() {
        let id = i as u64 + 2;
        let mut b = [0u8; 12];
        write_pli(&mut b, 0x1000 + id as u32, 0xB000 + id as u32).unwrap();
        let w = if id < 22 { &mut w0 } else { &mut w1 };
        w.handle_datagram(t1, addr(12000 + id as u16), &mut protect_rtcp(tx, &b), &mut out);
    }
    pump(&mut w0, &mut out);
    assert_eq!(plis(&mut out, &mut pub_rx), 1, "25 PLIs, one upstream");
    // The keyframe arrives before the interval ends: nothing is repeated.
    let key = rtp_ext(0xAAAA, 1, 0, &[], &vp8(true, true, 360, 300, 0));
    w0.handle_datagram(t1 + Duration::from_millis(100), addr(12001), &mut protect(&mut pub_tx, &key), &mut out);
    out.sent.clear();
    w0.tick(t1 + Duration::from_millis(600), &mut out);
    assert_eq!(plis(&mut out, &mut pub_rx), 0);
    let c = w0.counters();
    assert_eq!(c.get(Counter::KeyframeRequestsSent), 2);
    assert_eq!(c.get(Counter::KeyframeRequestsCoalesced), 48);
}

#[test]
fn a_subscriber_without_a_keyframe_keeps_asking_until_one_is_forwarded() {
    // As after an engine restart: the subscription exists before the publisher is connected, so the
    // first keyframe request cannot be sent, and media then starts mid-frame.
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut f = forwarder();
    let t0 = Instant::now();
    let mut out = Captured::default();
    f.add_transport(1, "pub1".into(), "p".repeat(24), t0).unwrap();
    f.add_track(1, video_track(7, FB_PLI, &[("", 0xAAAA)]), t0).unwrap();
    let (_sub_tx, mut sub_rx) = connected(&mut f, 2, 13002, profile);
    f.add_subscription(2, sub_spec(1, Dest::Local(1), 7, TrackKind::Video, 1, 0xB2, (0, 0)), t0, &mut out).unwrap();
    f.add_route(1, 7, Dest::Local(2), 10).unwrap();
    assert!(out.sent.is_empty(), "nothing can reach an unconnected publisher");
    // The publisher connects (its address and keys, as the control daemon re-installs them).
    let mut pub_tx = Context::new(profile, &keys(1, profile).key, &keys(1, profile).salt).unwrap();
    let k2 = keys(101, profile);
    let mut pub_rx = Context::new(profile, &k2.key, &k2.salt).unwrap();
    f.bind_remote(1, addr(13001)).unwrap();
    f.set_srtp(1, profile.rfc5764_id(), &keys(1, profile), &k2).unwrap();
    let plis = |out: &mut Captured, rx: &mut Context| -> usize {
        let (_, rtcps) = received(out, addr(13001), rx);
        rtcps.iter().flat_map(|p| rtcp::parse(p).collect::<Vec<_>>()).filter(|x| matches!(x, Ok(Packet::Pli { media: 0xAAAA, .. }))).count()
    };
    let mut asked = 0;
    for (i, ms) in (0..3000u64).step_by(20).enumerate() {
        let t = t0 + Duration::from_millis(ms);
        let plain = rtp_ext(0xAAAA, 100 + i as u16, ms as u32 * 90, &[], &vp8(i % 3 == 0, false, 0, 200, 0));
        f.handle_datagram(t, addr(13001), &mut protect(&mut pub_tx, &plain), &mut out);
        f.tick(t, &mut out);
        asked += plis(&mut out, &mut pub_rx);
    }
    let (media, _) = received(&mut out, addr(13002), &mut sub_rx);
    assert!(!media.is_empty(), "media flows to the subscriber");
    assert!((2..=4).contains(&asked), "asked about once a second while no keyframe came: {asked}");
    // A keyframe is forwarded: the asking stops.
    let t = t0 + Duration::from_millis(3000);
    let key = rtp_ext(0xAAAA, 250, 300_000, &[], &vp8(true, true, 360, 300, 0));
    f.handle_datagram(t, addr(13001), &mut protect(&mut pub_tx, &key), &mut out);
    let mut after = 0;
    for (i, ms) in (3020..6000u64).step_by(20).enumerate() {
        let t = t0 + Duration::from_millis(ms);
        let plain = rtp_ext(0xAAAA, 251 + i as u16, ms as u32 * 90, &[], &vp8(i % 3 == 0, false, 0, 200, 0));
        f.handle_datagram(t, addr(13001), &mut protect(&mut pub_tx, &plain), &mut out);
        f.tick(t, &mut out);
        after += plis(&mut out, &mut pub_rx);
    }
    assert_eq!(after, 0, "no request once the subscriber had its keyframe");
}

#[test]
fn receiver_and_sender_reports_carry_the_right_mapping() {
    let mut n = nacky(FB_NACK | FB_PLI);
    let mut out = Captured::default();
    // 50 packets, 3 lost (seq 1000..1049 without 1010, 1020, 1021), ts 3000 apart.
    let mut payload_octets = 0u32;
    for seq in (1000..1050u16).filter(|s| ![1010, 1020, 1021].contains(s)) {
        let payload = vp8(false, false, 0, 500, 0);
        payload_octets += payload.len() as u32;
        let plain = rtp_ext(0xAAAA, seq, 77_000 + (seq as u32 - 1000) * 3000, &[], &payload);
        n.f.handle_datagram(n.t0, addr(11001), &mut protect(&mut n.pub_tx, &plain), &mut out);
    }
    // The publisher's SR: NTP 0x0000_1000.8000_0000 (4096.5 s) is RTP 500_000.
    let ntp: u64 = (0x1000u64 << 32) | 0x8000_0000;
    let mut sr = [0u8; 28];
    let info = SenderInfo { ssrc: 0xAAAA, ntp, rtp_ts: 500_000, packet_count: 50, octet_count: 25_000 };
    rtcp::write_sr(&mut sr, &info, &[]).unwrap();
    let t_sr = n.t0 + Duration::from_millis(100);
    n.f.handle_datagram(t_sr, addr(11001), &mut protect_rtcp(&mut n.pub_tx, &sr), &mut out);
    out.sent.clear();
    let t1 = n.t0 + Duration::from_millis(1000);
    n.f.tick(t1, &mut out);
    // RR to the publisher.
    let (_, up) = received(&mut out, addr(11001), &mut n.pub_rx);
    let rb = up
        .iter()
        .flat_map(|p| rtcp::parse(p).collect::<Vec<_>>())
        .find_map(|x| match x {
            Ok(Packet::ReceiverReport(rr)) => rr.blocks().next(),
            _ => None,
        })
        .expect("a receiver report block");
    assert_eq!((rb.ssrc, rb.highest_seq, rb.cumulative_lost), (0xAAAA, 1049, 3));
    assert_eq!(rb.fraction_lost, (3 * 256 / 50) as u8);
    assert_eq!(rb.last_sr, 0x1000_8000, "middle 32 bits of the SR's NTP time");
    assert_eq!(rb.delay_since_last_sr, 900 * 65_536 / 1000, "900 ms in 1/65536 s");
    // SR to each subscriber: the publisher's mapping carried forward 900 ms (+ 81000 ticks at
    // 90 kHz) onto the outgoing timestamps (a single-layer stream keeps its timestamps).
    let (_, down) = received(&mut out, addr(11002), &mut n.subs[0].1);
    let sr = down
        .iter()
        .flat_map(|p| rtcp::parse(p).collect::<Vec<_>>())
        .find_map(|x| match x {
            Ok(Packet::SenderReport(s)) => Some((s.ssrc, s.ntp, s.rtp_ts, s.packet_count, s.octet_count)),
            _ => None,
        })
        .expect("a sender report");
    let ntp_900ms = ntp + ((900u64 << 32) / 1000);
    assert_eq!(sr.0, 0xB2);
    assert!(sr.1.abs_diff(ntp_900ms) < 5, "{:#x} vs {:#x}", sr.1, ntp_900ms);
    assert_eq!(sr.2, 500_000 + 81_000);
    assert_eq!((sr.3, sr.4), (47, payload_octets));
    assert_eq!(n.f.counters().get(Counter::SrSent), 2);
    assert_eq!(n.f.counters().get(Counter::RrSent), 1);
}

#[test]
fn send_cap_polices_what_a_subscriber_gets() {
    let mut n = nacky(FB_PLI);
    n.f.set_send_cap(2, 200_000, n.t0).unwrap();
    let mut out = Captured::default();
    // 1 s of 1000-byte packets every 5 ms (1.6 Mbit/s).
    for (seq, ms) in (0..1000u64).step_by(5).enumerate() {
        let seq = seq as u16;
        let plain = rtp_ext(0xAAAA, seq, seq as u32 * 450, &[], &vp8(false, false, 0, 1000, 0));
        n.f.handle_datagram(n.t0 + Duration::from_millis(ms), addr(11001), &mut protect(&mut n.pub_tx, &plain), &mut out);
    }
    let (capped, _) = received(&mut out, addr(11002), &mut n.subs[0].1);
    let (free, _) = received(&mut out, addr(11003), &mut n.subs[1].1);
    let bits: usize = capped.iter().map(|p| (p.len() + 44) * 8).sum();
    assert_eq!(free.len(), 200);
    assert!((150_000..=230_000).contains(&bits), "{bits} bits through a 200 kbit/s cap in 1 s (+100 ms burst)");
    assert_eq!(n.f.counters().dropped(DropReason::SendCap) as usize, 200 - capped.len());
    // The stream the subscriber sees has gaps (as on a lossy link), which a NACK can recover.
    assert!(capped.windows(2).any(|w| seq_of(&w[1]) != seq_of(&w[0]).wrapping_add(1)));
    n.f.set_send_cap(2, 0, n.t0).unwrap();
}

#[test]
fn audio_levels_are_reported_every_200_ms_and_extension_ids_are_rewritten() {
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut f = forwarder();
    let (mut tx, _) = connected(&mut f, 1, 13001, profile);
    let (_, mut rx) = connected(&mut f, 2, 13002, profile);
    f.set_extensions(1, EXT).unwrap();
    let t0 = Instant::now();
    let spec = TrackSpec {
        track: 3,
        kind: TrackKind::Audio,
        mid: "0".into(),
        clock_rate: 48_000,
        payload_type: 111,
        feedback: 0,
        layers: vec![Layer { rid: String::new(), ssrc: 0xA0D }],
    };
    f.add_track(1, spec, t0).unwrap();
    let mut out = Captured::default();
    f.add_subscription(2, sub_spec(1, Dest::Local(1), 3, TrackKind::Audio, 1, 0xA0E, (0, 0)), t0, &mut out).unwrap();
    f.add_route(1, 3, Dest::Local(2), 10).unwrap();
    f.tick(t0, &mut out);
    for (i, level) in [50u8, 30, 40].into_iter().enumerate() {
        let plain = rtp_ext(0xA0D, i as u16, i as u32 * 960, &[(4, b"0"), (1, &[0x80 | level])], b"opus");
        f.handle_datagram(t0 + Duration::from_millis(20 * i as u64), addr(13001), &mut protect(&mut tx, &plain), &mut out);
    }
    f.tick(t0 + Duration::from_millis(200), &mut out);
    assert_eq!(out.events, vec![Event::AudioLevels { levels: vec![(1, 3, 30)] }], "loudest of the window");
    out.events.clear();
    f.tick(t0 + Duration::from_millis(400), &mut out);
    assert!(out.events.is_empty(), "nothing when no packet carried a level");
    let (rtps, _) = received(&mut out, addr(13002), &mut rx);
    assert_eq!(rtps.len(), 3);
    // mid (4) -> unused (14), audio level (1) -> the engine's 1.
    assert_eq!((rtps[1][16] >> 4, rtps[1][18] >> 4), (OUT_EXT_UNUSED, OUT_EXT_AUDIO_LEVEL));
    assert_eq!(rtps[1][19], 0x80 | 30);
}

#[test]
fn rooms_with_the_same_track_ids_and_ssrcs_stay_isolated() {
    let profile = Profile::Aes128CmHmacSha1_80;
    let mut f = forwarder();
    let (mut a_tx, mut a_rx) = connected(&mut f, 1, 14001, profile);
    let (mut b_tx, _) = connected(&mut f, 2, 14002, profile);
    let (mut c_tx, mut c_rx) = connected(&mut f, 3, 14003, profile);
    let (_, mut d_rx) = connected(&mut f, 4, 14004, profile);
    let t0 = Instant::now();
    let mut out = Captured::default();
    // Room X: 1 -> 2. Room Y: 3 -> 4. Same track id, SSRC and out SSRC in both.
    for (p, s) in [(1u64, 2u64), (3, 4)] {
        f.add_track(p, video_track(1, FB_PLI | FB_NACK, &[("", 42)]), t0).unwrap();
        f.add_subscription(s, sub_spec(p, Dest::Local(p), 1, TrackKind::Video, 1, 42, (0, 0)), t0, &mut out).unwrap();
        f.add_route(p, 1, Dest::Local(s), 10).unwrap();
    }
    out.sent.clear();
    for (tx, port, tag) in [(&mut a_tx, 14001u16, b'x'), (&mut c_tx, 14003, b'y')] {
        let plain = rtp_ext(42, 7, 0, &[], &vp8(false, false, 0, 50, tag));
        f.handle_datagram(t0 + Duration::from_secs(1), addr(port), &mut protect(tx, &plain), &mut out);
    }
    let (x, _) = received(&mut out, addr(14002), &mut keyed(102));
    let (y, _) = received(&mut out, addr(14004), &mut d_rx);
    assert_eq!((x.len(), y.len()), (1, 1));
    assert_eq!((*x[0].last().unwrap(), *y[0].last().unwrap()), (b'x', b'y'));
    assert!(out.sent.is_empty());
    // A PLI from room X's subscriber reaches room X's publisher only.
    let mut b = [0u8; 12];
    write_pli(&mut b, 9, 42).unwrap();
    f.handle_datagram(t0 + Duration::from_secs(2), addr(14002), &mut protect_rtcp(&mut b_tx, &b), &mut out);
    let (_, to_a) = received(&mut out, addr(14001), &mut a_rx);
    let (_, to_c) = received(&mut out, addr(14003), &mut c_rx);
    assert_eq!((to_a.len(), to_c.len()), (1, 0));
}

fn keyed(seed: u8) -> Context {
    let k = keys(seed, Profile::Aes128CmHmacSha1_80);
    Context::new(Profile::Aes128CmHmacSha1_80, &k.key, &k.salt).unwrap()
}

/// One subscriber's view of one packet.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at_ms: u64,
    seq: u16,
    ts: u32,
    layer: u8,
    frame: u32,
    key: bool,
}

/// A simulcast publisher (three layers sent by rid, answering keyframe requests 100 ms later) and one
/// subscriber that sends TWCC feedback for what reaches it, around one forwarder in fake time.
struct Simulcast {
    f: Forwarder,
    t0: Instant,
    ms: u64,
    pub_tx: Context,
    pub_rx: Context,
    sub_tx: Context,
    sub_rx: Context,
    out: Captured,
    seq: [u16; 3],
    key_at: [Option<u64>; 3],
    tw_pub: u16,
    frame: u32,
    seen: Vec<Seen>,
    srs: Vec<(u64, u64, u32)>,
    arrivals: std::collections::BTreeMap<u16, i64>,
    tw_base: Option<u16>,
    fb_count: u8,
    feedback: bool,
    keyframe_requests: usize,
    twcc_to_publisher: usize,
}

const LAYER_SSRC: [u32; 3] = [0x100, 0x200, 0x300];
const LAYER_TS0: [u32; 3] = [10_000, 2_000_000_000, 4_000_000_000];
const LAYER_HEIGHT: [u16; 3] = [180, 360, 720];
/// Packets of 1100 bytes per 20 ms frame: ~0.45, ~1.8 Mbit/s; the lowest layer sends one of 300.
const LAYER_PACKETS: [usize; 3] = [1, 1, 4];
const OUT: u32 = 0xD00D;

impl Simulcast {
    fn new() -> Simulcast {
        let profile = Profile::AeadAes128Gcm;
        let mut f = forwarder();
        let (pub_tx, pub_rx) = connected(&mut f, 1, 15001, profile);
        let (sub_tx, sub_rx) = connected(&mut f, 2, 15002, profile);
        f.set_extensions(1, EXT).unwrap();
        let t0 = Instant::now();
        let fb = FB_NACK | FB_PLI | FB_FIR | FB_TWCC;
        f.add_track(1, video_track(9, fb, &[("q", 0), ("h", 0), ("f", 0)]), t0).unwrap();
        let mut out = Captured::default();
        f.add_subscription(2, sub_spec(1, Dest::Local(1), 9, TrackKind::Video, 3, OUT, (0, 0)), t0, &mut out).unwrap();
        f.add_route(1, 9, Dest::Local(2), 10).unwrap();
        Simulcast {
            f,
            t0,
            ms: 0,
            pub_tx,
            pub_rx,
            sub_tx,
            sub_rx,
            out,
            seq: [1000, 30_000, 65_000],
            key_at: [Some(0); 3],
            tw_pub: 0,
            frame: 0,
            seen: Vec::new(),
            srs: Vec::new(),
            arrivals: Default::default(),
            tw_base: None,
            fb_count: 0,
            feedback: true,
            keyframe_requests: 0,
            twcc_to_publisher: 0,
        }
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_millis(self.ms)
    }

    /// Runs 20 ms steps until `until_ms`.
    fn run(&mut self, until_ms: u64) {
        while self.ms < until_ms {
            self.ms += 20;
            self.frame += 1;
            let now = self.now();
            for l in 0..3 {
                let key = self.key_at[l].is_some_and(|t| t <= self.ms);
                if key {
                    self.key_at[l] = None;
                }
                let ts = LAYER_TS0[l].wrapping_add(self.frame * 1800);
                for k in 0..LAYER_PACKETS[l] {
                    let size = if l == 0 { 300 } else { 1100 };
                    let mut payload = vp8(k == 0, key, LAYER_HEIGHT[l], size, 0);
                    let n = payload.len();
                    payload[n - 5..n - 1].copy_from_slice(&self.frame.to_be_bytes());
                    payload[n - 1] = l as u8;
                    self.tw_pub = self.tw_pub.wrapping_add(1);
                    let rid: &[u8] = [b"q", b"h", b"f"][l];
                    let ext: [(u8, &[u8]); 3] = [(4, b"1"), (10, rid), (5, &self.tw_pub.to_be_bytes())];
                    let plain = rtp_ext(LAYER_SSRC[l], self.seq[l], ts, &ext, &payload);
                    self.seq[l] = self.seq[l].wrapping_add(1);
                    let mut pkt = protect(&mut self.pub_tx, &plain);
                    self.f.handle_datagram(now, addr(15001), &mut pkt, &mut self.out);
                }
            }
            if self.ms.is_multiple_of(1000) {
                // Each layer's SR: NTP time = the simulation clock (from 1000 s), RTP from the layer's base.
                for l in 0..3 {
                    let ntp = (1000u64 << 32) + ((self.ms as u128) << 32) as u64 / 1000;
                    let info = SenderInfo {
                        ssrc: LAYER_SSRC[l],
                        ntp,
                        rtp_ts: LAYER_TS0[l].wrapping_add((self.ms * 90) as u32),
                        packet_count: 0,
                        octet_count: 0,
                    };
                    let mut sr = [0u8; 28];
                    rtcp::write_sr(&mut sr, &info, &[]).unwrap();
                    let mut pkt = protect_rtcp(&mut self.pub_tx, &sr);
                    self.f.handle_datagram(now, addr(15001), &mut pkt, &mut self.out);
                }
            }
            self.f.tick(now, &mut self.out);
            self.collect();
            if self.feedback && self.ms.is_multiple_of(100) {
                self.send_feedback();
            }
        }
    }

    fn collect(&mut self) {
        let (rtps, rtcps) = received(&mut self.out, addr(15002), &mut self.sub_rx);
        for p in rtps {
            assert_eq!(ssrc_of(&p), OUT, "one outgoing SSRC");
            let (a, b) = switchyard_engine::rtp::payload_range(&p).unwrap();
            let key = switchyard_engine::rtp::keyframe(&p[a..b]).0;
            let frame = u32::from_be_bytes(p[b - 5..b - 1].try_into().unwrap());
            self.seen.push(Seen { at_ms: self.ms, seq: seq_of(&p), ts: ts_of(&p), layer: p[b - 1], frame, key });
            if let Some(tw) = switchyard_engine::media::audio_level::find_extension(&p, OUT_EXT_TWCC) {
                self.arrivals.insert(u16::from_be_bytes([tw[0], tw[1]]), (self.ms as i64 + 10) * 1000);
            }
        }
        for p in rtcps {
            for x in rtcp::parse(&p) {
                if let Ok(Packet::SenderReport(s)) = x {
                    assert_eq!(s.ssrc, OUT);
                    self.srs.push((self.ms, s.ntp, s.rtp_ts));
                }
            }
        }
        let (_, up) = received(&mut self.out, addr(15001), &mut self.pub_rx);
        for p in up {
            for x in rtcp::parse(&p) {
                match x {
                    Ok(Packet::Pli { media, .. }) => self.keyframe(media),
                    Ok(Packet::Fir(fir)) => {
                        for (media, _) in fir.entries() {
                            self.keyframe(media);
                        }
                    }
                    Ok(Packet::Twcc(_)) => self.twcc_to_publisher += 1,
                    _ => {}
                }
            }
        }
        assert!(self.out.sent.is_empty(), "nothing to anyone else");
    }

    fn keyframe(&mut self, media: u32) {
        self.keyframe_requests += 1;
        if let Some(l) = LAYER_SSRC.iter().position(|s| *s == media) {
            self.key_at[l].get_or_insert(self.ms + 100);
        }
    }

    fn send_feedback(&mut self) {
        let Some((&hi, _)) = self.arrivals.iter().next_back() else { return };
        let base = *self.tw_base.get_or_insert(*self.arrivals.keys().next().unwrap());
        let n = hi.wrapping_sub(base) as usize + 1;
        let list: Vec<Option<i64>> = (0..n).map(|i| self.arrivals.get(&base.wrapping_add(i as u16)).copied()).collect();
        let mut buf = vec![0u8; 4096];
        let len = write_twcc(&mut buf, 0x5b, OUT, base, self.fb_count, &list).unwrap();
        self.fb_count = self.fb_count.wrapping_add(1);
        self.tw_base = Some(hi.wrapping_add(1));
        self.arrivals.clear();
        let mut pkt = protect_rtcp(&mut self.sub_tx, &buf[..len]);
        let now = self.now();
        self.f.handle_datagram(now, addr(15002), &mut pkt, &mut self.out);
        self.collect();
    }

    /// The layer the subscriber got last.
    fn layer(&self) -> Option<u8> {
        self.seen.last().map(|s| s.layer)
    }

    /// Checks the stream the subscriber saw: sequence numbers continuous except what the send cap
    /// dropped, timestamps never going back, a layer change only at a keyframe. Returns the number of
    /// layer changes seen.
    fn check_stream(&self) -> usize {
        let mut gaps = 0u64;
        let mut changes = 0;
        for w in self.seen.windows(2) {
            let d = w[1].seq.wrapping_sub(w[0].seq);
            assert!((1..1000).contains(&d), "sequence goes forward: {:?} -> {:?}", w[0], w[1]);
            gaps += d as u64 - 1;
            assert!(w[1].ts.wrapping_sub(w[0].ts) < 1 << 31, "timestamps never go back: {:?} -> {:?}", w[0], w[1]);
            if w[1].layer != w[0].layer {
                changes += 1;
                if d == 1 {
                    assert!(w[1].key, "a layer change starts with a keyframe: {:?} -> {:?}", w[0], w[1]);
                }
            }
        }
        assert_eq!(gaps, self.f.counters().dropped(DropReason::SendCap), "the only gaps are the send cap's drops");
        changes
    }
}

#[test]
fn simulcast_layers_are_learned_and_follow_the_bandwidth_estimate_down_to_a_pause_and_back() {
    let mut s = Simulcast::new();
    s.run(3000);
    // Three SSRCs learned from their rid.
    let learned: Vec<_> = s.out.events.iter().filter(|e| matches!(e, Event::SsrcLearned { .. })).cloned().collect();
    assert_eq!(
        learned,
        (0..3u8).map(|l| Event::SsrcLearned { transport: 1, track: 9, layer: l, ssrc: LAYER_SSRC[l as usize] }).collect::<Vec<_>>()
    );
    let snap = s.f.snapshot();
    assert_eq!(snap[0].tracks, vec![(9, vec![(0, 0x100), (1, 0x200), (2, 0x300)])]);
    assert_eq!(snap[0].subscriptions, vec![(9, 2)]);
    // The estimate starts at 1 Mbit/s: the middle layer (~0.45 Mbit/s), not the top (~1.8).
    assert_eq!(s.layer(), Some(1), "{:?}", s.seen.last());
    assert!(s.twcc_to_publisher > 0 && s.f.counters().get(Counter::TwccSent) > 0, "TWCC feedback to the publisher");

    // The subscriber's downlink drops to 250 kbit/s: loss in its TWCC feedback brings the estimate
    // down and the stream moves to the lowest layer (at its keyframe).
    s.f.set_send_cap(2, 250_000, s.now()).unwrap();
    s.run(8000);
    assert_eq!(s.layer(), Some(0));
    let at_low = s.seen.len();

    // 60 kbit/s: not even the lowest layer fits; video pauses.
    s.f.set_send_cap(2, 60_000, s.now()).unwrap();
    s.run(14_000);
    let paused = s.f.counters().dropped(DropReason::Paused);
    assert!(paused > 0, "video withheld");
    let last_before_resume = s.seen.last().unwrap().at_ms;
    assert!(last_before_resume < 14_000 - 1000, "nothing sent for a while (last at {last_before_resume} ms)");

    // The downlink recovers: video resumes, and climbs back up.
    s.f.set_send_cap(2, 0, s.now()).unwrap();
    s.run(60_000);
    assert!(s.seen.last().unwrap().at_ms > 59_000, "resumed");
    assert!(s.seen[at_low..].iter().any(|x| x.at_ms > 14_000), "resumed after the pause");
    assert!(s.layer() >= Some(1), "back above the lowest layer once the link allows: {:?}", s.layer());
    let changes = s.check_stream();
    assert!(changes >= 3, "{changes} layer changes");
    assert!(s.f.counters().get(Counter::LayerSwitches) >= changes as u64);

    // Sender reports map onto the outgoing timestamps: rtp - offset(of the forwarded layer's packets)
    // is the publisher's own mapping of the same NTP time.
    let mut checked = 0;
    for &(ms, ntp, rtp_out) in &s.srs {
        let Some(p) = s.seen.iter().rev().find(|x| x.at_ms <= ms) else { continue };
        let offset = p.ts.wrapping_sub(LAYER_TS0[p.layer as usize].wrapping_add(p.frame * 1800));
        let t_ms = (((ntp - (1000u64 << 32)) as u128 * 1000) >> 32) as u64;
        let expected = LAYER_TS0[p.layer as usize].wrapping_add((t_ms * 90) as u32).wrapping_add(offset);
        assert!(rtp_out.wrapping_sub(expected).wrapping_add(2) <= 4, "SR at {ms} ms: {rtp_out} vs {expected}");
        checked += 1;
    }
    assert!(checked > 20, "{checked} sender reports checked");
}

#[test]
fn the_requested_size_caps_the_layer() {
    let mut s = Simulcast::new();
    s.feedback = false; // no estimate: only the size limits
    s.run(2000);
    assert_eq!(s.layer(), Some(2), "no limit: the top layer");
    s.f.set_preferences(2, 1, 9, 360).unwrap();
    s.run(4000);
    assert_eq!(s.layer(), Some(1), "360p asked for");
    s.f.set_preferences(2, 1, 9, 90).unwrap();
    s.run(6000);
    assert_eq!(s.layer(), Some(0), "smaller than the lowest still gets the lowest");
    s.f.set_preferences(2, 1, 9, u16::MAX).unwrap();
    s.run(9000);
    assert_eq!(s.layer(), Some(2));
    assert_eq!(s.check_stream(), 3, "2 -> 1 -> 0 -> 2");
}

#[test]
fn padding_only_probes_are_not_forwarded_and_leave_no_gap() {
    let mut n = nacky(FB_PLI);
    let mut out = Captured::default();
    for seq in 1..=6u16 {
        let plain = if seq == 3 || seq == 4 {
            // Padding only: P bit, no payload but the 224 padding bytes (the last says how many).
            let mut p = rtp_ext(0xAAAA, seq, 3000, &[], &[0u8; 224]);
            p[0] |= 0x20;
            *p.last_mut().unwrap() = 224;
            p
        } else {
            rtp_ext(0xAAAA, seq, seq as u32 * 3000, &[], &vp8(false, false, 0, 100, seq as u8))
        };
        n.f.handle_datagram(n.t0, addr(11001), &mut protect(&mut n.pub_tx, &plain), &mut out);
    }
    let (got, _) = received(&mut out, addr(11002), &mut n.subs[0].1);
    let tags: Vec<u8> = got.iter().map(|p| *p.last().unwrap()).collect();
    assert_eq!(tags, vec![1, 2, 5, 6]);
    let seqs: Vec<u16> = got.iter().map(|p| seq_of(p)).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4], "contiguous over the skipped probes");
    assert_eq!(n.f.counters().dropped(DropReason::PaddingOnly), 4, "two probes, two subscribers");
}
