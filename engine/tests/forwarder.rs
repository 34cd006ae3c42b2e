//! The sans-I/O packet path, driven with byte slices: no sockets, no threads, no clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_engine::forwarder::{Dest, Forwarder, Output, TrackSpec, ENGINE_RTCP_SSRC};
use switchyard_engine::media::rtcp::{self, Packet};
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
    Forwarder::new(0, Arc::new(WorkerCounters::default()), 64)
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
    let mut w1 = Forwarder::new(1, Arc::new(WorkerCounters::default()), 64);
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
