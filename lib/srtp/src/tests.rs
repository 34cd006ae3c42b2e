//! Context-level tests: RFC 7714 packet vectors (which are stated with session
//! keys, so they need the crate-internal constructor), replay, tamper, ROC
//! handling and a randomized robustness check.

use crate::kdf::SessionKeys;
use crate::testutil::unhex;
use crate::{Context, Error, PacketKind, Profile, REPLAY_WINDOW};

/// RFC 7714 §16/§17 session key 00..0f and salt "Quid pro quo", used for
/// both SRTP and SRTCP as the RFC's examples do.
fn rfc7714_context() -> Context {
    let mut salt = [0u8; 14];
    salt[..12].copy_from_slice(&unhex("517569642070726f2071756f"));
    let keys = SessionKeys {
        enc: unhex("000102030405060708090a0b0c0d0e0f")
            .try_into()
            .expect("16"),
        auth: [0; 20],
        salt,
    };
    Context::from_session_keys(Profile::AeadAes128Gcm, &keys, &keys).expect("context")
}

const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 \
                           20646976 69736120 696e2070 61727465 73207472 6573";
const RFC7714_SRTP: &str = "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca \
                            be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833 \
                            899d7f27 beb16a91 52cf765e e4390cce";
const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 \
                            4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";
const RFC7714_SRTCP: &str = "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 \
                             6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b \
                             c84aa458 96cf4d2f c5abf872 45d9eade 800005d4";
/// §17.3: the same RTCP packet authenticated but not encrypted (E = 0).
const RFC7714_SRTCP_UNENCRYPTED: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a \
                                         0000e930 4c756e61 deadbeef deadbeef deadbeef deadbeef \
                                         deadbeef 841dd968 3dd78ec9 2ae58790 125f62b3 000005d4";

#[test]
fn rfc7714_16_1_rtp_protect() {
    let plain = unhex(RFC7714_RTP);
    let mut buf = vec![0u8; plain.len() + 16];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = rfc7714_context()
        .protect_rtp(&mut buf, plain.len())
        .expect("protect");
    assert_eq!(buf[..n], unhex(RFC7714_SRTP)[..]);
}

#[test]
fn rfc7714_16_1_rtp_unprotect() {
    let mut buf = unhex(RFC7714_SRTP);
    let n = rfc7714_context()
        .unprotect_rtp(&mut buf)
        .expect("unprotect");
    assert_eq!(buf[..n], unhex(RFC7714_RTP)[..]);
}

#[test]
fn rfc7714_17_1_rtcp_protect() {
    let plain = unhex(RFC7714_RTCP);
    let mut ctx = rfc7714_context();
    let mut buf = vec![0u8; plain.len() + 20];
    // The vector uses SRTCP index 0x5d4; ours counts from 0, so send 0x5d4
    // packets first (which also checks the counter increments by exactly 1).
    for _ in 0..0x5d4 {
        buf[..plain.len()].copy_from_slice(&plain);
        ctx.protect_rtcp(&mut buf, plain.len()).expect("protect");
    }
    buf[..plain.len()].copy_from_slice(&plain);
    let n = ctx.protect_rtcp(&mut buf, plain.len()).expect("protect");
    assert_eq!(buf[..n], unhex(RFC7714_SRTCP)[..]);
}

#[test]
fn rfc7714_17_1_rtcp_unprotect() {
    let mut buf = unhex(RFC7714_SRTCP);
    let n = rfc7714_context()
        .unprotect_rtcp(&mut buf)
        .expect("unprotect");
    assert_eq!(buf[..n], unhex(RFC7714_RTCP)[..]);
}

#[test]
fn rfc7714_17_3_rtcp_unencrypted_unprotect() {
    let mut ctx = rfc7714_context();
    let mut buf = unhex(RFC7714_SRTCP_UNENCRYPTED);
    let n = ctx.unprotect_rtcp(&mut buf).expect("unprotect");
    assert_eq!(buf[..n], unhex(RFC7714_RTCP)[..]);

    // A forged E=0 packet fails and the buffer is restored byte for byte
    // (the implementation shuffles the index word around to build the AAD).
    let mut forged = unhex(RFC7714_SRTCP_UNENCRYPTED);
    forged[20] ^= 1;
    let before = forged.clone();
    let mut ctx = rfc7714_context();
    assert_eq!(
        ctx.unprotect_rtcp(&mut forged),
        Err(Error::AuthenticationFailed {
            kind: PacketKind::Rtcp
        })
    );
    assert_eq!(forged, before);
}

#[test]
fn cm_rtcp_unencrypted_e0_accepted_and_authenticated() {
    use hmac::{Hmac, Mac};
    // Build an E=0 SRTCP packet by hand from the RFC 3711 SRTCP session
    // auth key (label 4), since our sender always encrypts.
    let profile = Profile::Aes128CmHmacSha1_80;
    let key: [u8; 16] = (1..=16).collect::<Vec<u8>>().try_into().expect("16");
    let salt: Vec<u8> = (100..114).collect();
    let keys = SessionKeys::derive(profile, &key, &salt, true);
    let rr = rtcp_rr(0x5555);
    let mut pkt = rr.clone();
    pkt.extend_from_slice(&7u32.to_be_bytes()); // E=0, index 7
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(&keys.auth).expect("any key length");
    mac.update(&pkt);
    pkt.extend_from_slice(&mac.finalize().into_bytes()[..10]);

    let mut rx = Context::new(profile, &key, &salt).expect("rx");
    let mut forged = pkt.clone();
    forged[10] ^= 4;
    assert!(matches!(
        unprotect_rtcp(&mut rx, &forged),
        Err(Error::AuthenticationFailed { .. })
    ));
    assert_eq!(unprotect_rtcp(&mut rx, &pkt), Ok(rr));
    assert!(matches!(
        unprotect_rtcp(&mut rx, &pkt),
        Err(Error::Replayed { index: 7, .. })
    ));
}

fn contexts(profile: Profile) -> (Context, Context) {
    let key: Vec<u8> = (1..=16).collect();
    let salt: Vec<u8> = (100..100 + profile.salt_len() as u8).collect();
    (
        Context::new(profile, &key, &salt).expect("tx"),
        Context::new(profile, &key, &salt).expect("rx"),
    )
}

fn rtp_packet(ssrc: u32, seq: u16, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i as u8) ^ (seq as u8)));
    p
}

fn protect(tx: &mut Context, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + tx.profile().rtp_overhead()];
    buf[..plain.len()].copy_from_slice(plain);
    let n = tx.protect_rtp(&mut buf, plain.len()).expect("protect");
    buf.truncate(n);
    buf
}

fn protect_rtcp(tx: &mut Context, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + tx.profile().rtcp_overhead()];
    buf[..plain.len()].copy_from_slice(plain);
    let n = tx.protect_rtcp(&mut buf, plain.len()).expect("protect");
    buf.truncate(n);
    buf
}

fn unprotect(rx: &mut Context, srtp: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = srtp.to_vec();
    let n = rx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(rx: &mut Context, srtcp: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = srtcp.to_vec();
    let n = rx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn rtcp_rr(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..24).map(|i| i as u8));
    p
}

#[test]
fn roundtrip_both_profiles_and_payload_is_encrypted() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        let plain = rtp_packet(0x1234, 7, 100);
        let srtp = protect(&mut tx, &plain);
        assert_eq!(srtp.len(), plain.len() + profile.rtp_overhead());
        assert_eq!(srtp[..12], plain[..12], "{profile:?}: header stays clear");
        assert_ne!(
            srtp[12..112],
            plain[12..],
            "{profile:?}: payload is encrypted"
        );
        assert_eq!(unprotect(&mut rx, &srtp), Ok(plain));

        let rr = rtcp_rr(0x1234);
        let srtcp = protect_rtcp(&mut tx, &rr);
        assert_eq!(srtcp.len(), rr.len() + profile.rtcp_overhead());
        assert_ne!(
            srtcp[8..rr.len()],
            rr[8..],
            "{profile:?}: RTCP is encrypted"
        );
        assert_eq!(unprotect_rtcp(&mut rx, &srtcp), Ok(rr));
    }
}

#[test]
fn srtcp_index_word_counts_from_zero_with_e_flag() {
    for profile in Profile::ALL {
        let (mut tx, _) = contexts(profile);
        let word_at = |p: &[u8]| {
            let off = match profile {
                Profile::Aes128CmHmacSha1_80 => p.len() - 14,
                Profile::AeadAes128Gcm => p.len() - 4,
            };
            u32::from_be_bytes(p[off..off + 4].try_into().expect("4"))
        };
        for i in 0..3 {
            assert_eq!(
                word_at(&protect_rtcp(&mut tx, &rtcp_rr(9))),
                0x8000_0000 | i
            );
        }
        // Each sender SSRC has its own counter.
        assert_eq!(word_at(&protect_rtcp(&mut tx, &rtcp_rr(10))), 0x8000_0000);
    }
}

#[test]
fn replayed_packet_rejected() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        let srtp = protect(&mut tx, &rtp_packet(5, 1000, 20));
        unprotect(&mut rx, &srtp).expect("first");
        assert_eq!(
            unprotect(&mut rx, &srtp),
            Err(Error::Replayed {
                kind: PacketKind::Rtp,
                ssrc: 5,
                index: 1000,
                window: REPLAY_WINDOW
            })
        );
        let srtcp = protect_rtcp(&mut tx, &rtcp_rr(5));
        unprotect_rtcp(&mut rx, &srtcp).expect("first");
        assert!(matches!(
            unprotect_rtcp(&mut rx, &srtcp),
            Err(Error::Replayed {
                kind: PacketKind::Rtcp,
                index: 0,
                ..
            })
        ));
    }
}

#[test]
fn out_of_order_within_window_accepted_once_and_too_old_rejected() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        let pkts: Vec<Vec<u8>> = (0..300u16)
            .map(|s| protect(&mut tx, &rtp_packet(5, 60_000 + s, 10)))
            .collect();
        // Deliver the newest first, then older ones.
        unprotect(&mut rx, &pkts[299]).expect("newest");
        for i in [298, 250, 299 - (REPLAY_WINDOW as usize - 1)] {
            assert_eq!(
                unprotect(&mut rx, &pkts[i]),
                Ok(rtp_packet(5, 60_000 + i as u16, 10))
            );
            assert!(
                matches!(unprotect(&mut rx, &pkts[i]), Err(Error::Replayed { .. })),
                "{profile:?} {i}"
            );
        }
        for i in [0, 299 - REPLAY_WINDOW as usize] {
            assert!(
                matches!(unprotect(&mut rx, &pkts[i]), Err(Error::Replayed { .. })),
                "{profile:?} {i} too old"
            );
        }

        // Same for SRTCP indices.
        let rtcp: Vec<Vec<u8>> = (0..200)
            .map(|_| protect_rtcp(&mut tx, &rtcp_rr(5)))
            .collect();
        unprotect_rtcp(&mut rx, &rtcp[199]).expect("newest");
        unprotect_rtcp(&mut rx, &rtcp[150]).expect("reordered");
        assert!(matches!(
            unprotect_rtcp(&mut rx, &rtcp[150]),
            Err(Error::Replayed { .. })
        ));
        assert!(matches!(
            unprotect_rtcp(&mut rx, &rtcp[10]),
            Err(Error::Replayed { .. })
        ));
    }
}

#[test]
fn sequence_wrap_increments_roc_on_both_sides() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        let mut seq: u16 = 65_530;
        for _ in 0..12 {
            let plain = rtp_packet(77, seq, 30);
            let srtp = protect(&mut tx, &plain);
            assert_eq!(
                unprotect(&mut rx, &srtp),
                Ok(plain),
                "{profile:?} seq {seq}"
            );
            seq = seq.wrapping_add(1);
        }
        assert_eq!(tx.rtp_index(77), Some((1 << 16) | 5));
        assert_eq!(rx.rtp_index(77), Some((1 << 16) | 5));

        // A late packet from before the wrap still decrypts with ROC 0 ...
        let (mut tx2, mut rx2) = contexts(profile);
        let late = protect(&mut tx2, &rtp_packet(1, 65_535, 4));
        let after = protect(&mut tx2, &rtp_packet(1, 2, 4));
        unprotect(
            &mut rx2,
            &protect(&mut tx2.clone(), &rtp_packet(1, 65_534, 4)),
        )
        .ok();
        assert_eq!(unprotect(&mut rx2, &after), Ok(rtp_packet(1, 2, 4)));
        assert_eq!(unprotect(&mut rx2, &late), Ok(rtp_packet(1, 65_535, 4)));
        assert_eq!(rx2.rtp_index(1), Some((1 << 16) | 2));
    }
}

#[test]
fn roc_survives_long_gaps_and_many_wraps() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        // Step by 20000 so each step is under half the sequence space and the
        // estimate must follow through several rollovers.
        for step in 0..20u32 {
            let seq = (step * 20_000) as u16;
            let plain = rtp_packet(3, seq, 8);
            let srtp = protect(&mut tx, &plain);
            assert_eq!(unprotect(&mut rx, &srtp), Ok(plain));
            assert_eq!(rx.rtp_index(3), Some(u64::from(step) * 20_000));
        }
    }
}

/// What a packet that failed authentication leaves in the buffer: the CM
/// profiles check the tag before decrypting and leave it as it was; GCM
/// (ring) decrypts while it authenticates and zeroes the payload on a wrong
/// tag. Either way no unauthenticated plaintext, and the header and tag are
/// as they were.
fn assert_refused_packet(profile: Profile, buf: &[u8], before: &[u8], flipped: usize) {
    if profile != Profile::AeadAes128Gcm {
        assert_eq!(buf, before, "{profile:?}: failed unprotect modified the buffer (flip at {flipped})");
        return;
    }
    let tag = before.len() - 16;
    assert_eq!(buf[..12], before[..12], "{profile:?}: header changed (flip at {flipped})");
    assert_eq!(buf[tag..], before[tag..], "{profile:?}: tag changed (flip at {flipped})");
    for i in 12..tag {
        assert!(
            buf[i] == before[i] || buf[i] == 0,
            "{profile:?}: byte {i} is neither the ciphertext's nor zero after a refused unprotect (flip at {flipped})"
        );
    }
}

#[test]
fn tampered_packets_fail_and_leave_state_unchanged() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        let first = protect(&mut tx, &rtp_packet(9, 65_000, 40));
        unprotect(&mut rx, &first).expect("first");

        // A forgery whose sequence number would bump the ROC, in every byte position.
        let wrapping = protect(&mut tx, &rtp_packet(9, 10, 40));
        for i in 0..wrapping.len() {
            let mut bad = wrapping.clone();
            bad[i] ^= 0x40;
            let before = bad.clone();
            let r = unprotect(&mut rx, &bad);
            assert!(r.is_err(), "{profile:?}: flip at {i} accepted");
            assert_eq!(
                rx.rtp_index(9),
                Some(65_000),
                "{profile:?}: state moved by byte {i}"
            );
            let mut buf = bad.clone();
            let _ = rx.unprotect_rtp(&mut buf);
            assert_refused_packet(profile, &buf, &before, i);
        }
        // The genuine packet still decrypts and is not a "replay" of the forgery.
        assert_eq!(unprotect(&mut rx, &wrapping), Ok(rtp_packet(9, 10, 40)));
        assert_eq!(rx.rtp_index(9), Some((1 << 16) | 10));

        // A forged packet for an unknown SSRC creates no state.
        let mut bad = protect(&mut tx, &rtp_packet(10, 1, 40));
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            unprotect(&mut rx, &bad),
            Err(Error::AuthenticationFailed {
                kind: PacketKind::Rtp
            })
        );
        assert_eq!(rx.rtp_index(10), None);

        // SRTCP: a tampered packet, then the genuine one with the same index.
        let srtcp = protect_rtcp(&mut tx, &rtcp_rr(9));
        let mut bad = srtcp.clone();
        bad[12] ^= 0x01;
        assert_eq!(
            unprotect_rtcp(&mut rx, &bad),
            Err(Error::AuthenticationFailed {
                kind: PacketKind::Rtcp
            })
        );
        assert_eq!(unprotect_rtcp(&mut rx, &srtcp), Ok(rtcp_rr(9)));
    }
}

#[test]
fn wrong_keys_or_profile_fail_authentication() {
    let (mut tx, _) = contexts(Profile::AeadAes128Gcm);
    let srtp = protect(&mut tx, &rtp_packet(1, 1, 50));
    let mut other = Context::new(Profile::AeadAes128Gcm, &[9; 16], &[9; 12]).expect("ctx");
    assert_eq!(
        unprotect(&mut other, &srtp),
        Err(Error::AuthenticationFailed {
            kind: PacketKind::Rtp
        })
    );
    let mut cm = Context::new(
        Profile::Aes128CmHmacSha1_80,
        &(1..=16).collect::<Vec<u8>>(),
        &[0; 14],
    )
    .expect("ctx");
    assert!(unprotect(&mut cm, &srtp).is_err());
}

#[test]
fn csrcs_extension_and_padding_stay_clear_and_authenticated() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        // V=2, P=1, X=1, CC=2; two CSRCs; one-byte extension (2 words); payload
        // ending in 3 bytes of padding whose count byte is 3.
        let mut p = vec![0xb2, 96, 0, 42, 0, 0, 1, 0, 0xaa, 0xbb, 0xcc, 0xdd];
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0x7f, 0x22, 1, 2, 3, 0, 0]);
        let header_len = p.len();
        p.extend_from_slice(b"media");
        p.extend_from_slice(&[0, 0, 3]);
        let srtp = protect(&mut tx, &p);
        assert_eq!(srtp[..header_len], p[..header_len], "{profile:?}");
        assert_ne!(
            srtp[header_len..p.len()],
            p[header_len..],
            "{profile:?}: padding encrypted too"
        );
        // The extension is authenticated even though it is not encrypted.
        let mut bad = srtp.clone();
        bad[header_len - 3] ^= 1;
        assert!(matches!(
            unprotect(&mut rx, &bad),
            Err(Error::AuthenticationFailed { .. })
        ));
        assert_eq!(unprotect(&mut rx, &srtp), Ok(p));
    }
}

#[test]
fn header_only_packet_roundtrips() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        let p = rtp_packet(4, 4, 0);
        assert_eq!(unprotect(&mut rx, &protect(&mut tx, &p)), Ok(p));
    }
}

#[test]
fn setup_errors() {
    for profile in Profile::ALL {
        assert_eq!(
            Context::new(profile, &[0; 15], &vec![0; profile.salt_len()]).err(),
            Some(Error::BadKeyLength {
                what: "master key",
                expected: 16,
                got: 15
            })
        );
        assert_eq!(
            Context::new(profile, &[0; 16], &[0; 13]).err(),
            Some(Error::BadKeyLength {
                what: "master salt",
                expected: profile.salt_len(),
                got: 13
            })
        );
    }
}

#[test]
fn protect_errors() {
    for profile in Profile::ALL {
        let (mut tx, _) = contexts(profile);
        let p = rtp_packet(1, 1, 10);
        let mut buf = p.clone(); // no room for the tag
        assert_eq!(
            tx.protect_rtp(&mut buf, p.len()),
            Err(Error::BufferTooSmall {
                needed: p.len() + profile.rtp_overhead(),
                available: p.len()
            })
        );
        assert_eq!(buf, p, "failed protect must not touch the buffer");
        let mut big = vec![0u8; 100];
        assert!(matches!(
            tx.protect_rtp(&mut big, 101),
            Err(Error::BufferTooSmall { .. })
        ));
        assert!(matches!(
            tx.protect_rtp(&mut big, 5),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            tx.protect_rtp(&mut big, 50),
            Err(Error::MalformedHeader { .. })
        ));
        assert!(matches!(
            tx.protect_rtcp(&mut big, 7),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            tx.protect_rtcp(&mut big, 90),
            Err(Error::BufferTooSmall { .. })
        ));
        let mut huge = vec![0u8; crate::MAX_PACKET_LEN + 100];
        assert!(matches!(
            tx.protect_rtp(&mut huge, crate::MAX_PACKET_LEN + 1),
            Err(Error::PacketTooLarge { .. })
        ));
        // Sequence numbers far behind the first one cannot get ROC -1.
        protect(&mut tx, &rtp_packet(2, 10, 1));
        let mut buf = vec![0u8; 64];
        let q = rtp_packet(2, 60_000, 1);
        buf[..q.len()].copy_from_slice(&q);
        assert_eq!(
            tx.protect_rtp(&mut buf, q.len()),
            Err(Error::SequenceBeforeStart {
                ssrc: 2,
                seq: 60_000
            })
        );
    }
}

#[test]
fn truncated_inputs_are_reported() {
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        let srtp = protect(&mut tx, &rtp_packet(1, 1, 10));
        for n in 0..12 + profile.rtp_overhead() {
            let r = rx.unprotect_rtp(&mut srtp[..n].to_vec());
            assert!(
                matches!(r, Err(Error::Truncated { .. })),
                "{profile:?} len {n}: {r:?}"
            );
        }
        // CSRC count pointing into the tag must not be read as header.
        let mut p = rtp_packet(1, 2, 0);
        p[0] |= 0x03;
        p.extend_from_slice(&[0; 12]);
        let mut s = protect(&mut tx, &p);
        s.truncate(s.len() - 4);
        assert!(matches!(
            rx.unprotect_rtp(&mut s),
            Err(Error::Truncated { .. })
        ));
        let srtcp = protect_rtcp(&mut tx, &rtcp_rr(1));
        for n in 0..8 + profile.rtcp_overhead() {
            let r = rx.unprotect_rtcp(&mut srtcp[..n].to_vec());
            assert!(
                matches!(r, Err(Error::Truncated { .. })),
                "{profile:?} len {n}: {r:?}"
            );
        }
    }
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_garbage_never_panics_and_never_authenticates() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        let valid_rtp = protect(&mut tx, &rtp_packet(0xabc, 5, 60));
        let valid_rtcp = protect_rtcp(&mut tx, &rtcp_rr(0xabc));
        for round in 0..20_000 {
            let mut buf: Vec<u8> = match round % 4 {
                // Pure noise of random length (biased towards short).
                0 => (0..rng.below(if round % 8 == 0 { 1500 } else { 64 }))
                    .map(|_| rng.next() as u8)
                    .collect(),
                // Noise that at least looks like RTP/RTCP v2 with random CC/X bits.
                1 => {
                    let mut b: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
                    if let Some(f) = b.first_mut() {
                        *f = 0x80 | (*f & 0x3f);
                    }
                    b
                }
                // Mutated or truncated genuine packets.
                _ => {
                    let src = if round % 4 == 2 {
                        &valid_rtp
                    } else {
                        &valid_rtcp
                    };
                    let mut b = src.clone();
                    for _ in 0..1 + rng.below(3) {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                    b.truncate(rng.below(b.len() + 1).max(b.len() - rng.below(4)));
                    b
                }
            };
            if buf == valid_rtp || buf == valid_rtcp {
                continue; // two flips of the same bit cancelled out
            }
            let copy = buf.clone();
            if rx.unprotect_rtp(&mut buf).is_ok() {
                panic!("{profile:?}: garbage authenticated as SRTP: {copy:02x?}");
            }
            let mut buf = copy.clone();
            if rx.unprotect_rtcp(&mut buf).is_ok() {
                panic!("{profile:?}: garbage authenticated as SRTCP: {copy:02x?}");
            }
            // protect_* with random lengths must also only ever return errors or succeed.
            let mut buf = copy.clone();
            let len = rng.below(buf.len() + 8);
            let _ = tx.protect_rtp(&mut buf, len);
            let mut buf = copy;
            let _ = tx.protect_rtcp(&mut buf, len);
        }
        assert_eq!(
            rx.rtp_index(0xabc),
            None,
            "{profile:?}: garbage created state"
        );
    }
}

#[test]
fn context_is_send_and_debug_hides_keys() {
    fn is_send<T: Send + Sync>() {}
    is_send::<Context>();
    let (tx, _) = contexts(Profile::Aes128CmHmacSha1_80);
    let s = format!("{tx:?}");
    assert!(
        s.contains("Aes128CmHmacSha1_80") && !s.contains("aes"),
        "{s}"
    );
}

/// Drives `tx` for real (no seeding) to SRTP index `ROC 3, SEQ 65530` on
/// `ssrc`, in steps under half the sequence space.
fn sender_at_roc3_65530(tx: &mut Context, ssrc: u32) {
    let target: u64 = (3 << 16) | 65_530;
    let mut i: u64 = 0;
    loop {
        let plain = rtp_packet(ssrc, i as u16, 4);
        protect(tx, &plain);
        protect_rtcp(tx, &rtcp_rr(ssrc));
        if i == target {
            break;
        }
        i = (i + 30_000).min(target);
    }
    assert_eq!(tx.rtp_index(ssrc), Some(target));
}

#[test]
fn resumed_inbound_follows_a_stream_past_its_wrap() {
    use crate::IndexKind;
    for profile in Profile::ALL {
        let (mut tx, mut rx) = contexts(profile);
        sender_at_roc3_65530(&mut tx, 9);
        // What a previous receiver would have reported, seeded in a fresh one.
        rx.resume(9, IndexKind::RtpIn, (3 << 16) | 65_530);
        assert_eq!(
            rx.indexes(),
            vec![(9, IndexKind::RtpIn, (3 << 16) | 65_530)]
        );
        for seq in (65_531..=65_535).chain(0..=10) {
            let plain = rtp_packet(9, seq, 20);
            let srtp = protect(&mut tx, &plain);
            assert_eq!(
                unprotect(&mut rx, &srtp),
                Ok(plain),
                "{profile:?} seq {seq}"
            );
        }
        assert_eq!(rx.rtp_index(9), Some((4 << 16) | 10));
        assert_eq!(tx.rtp_index(9), Some((4 << 16) | 10));

        // The seeded index itself is new (the window starts empty there), then a replay.
        let (mut tx, mut rx) = contexts(profile);
        sender_at_roc3_65530(&mut tx, 9);
        let mut again = tx.clone();
        rx.resume(9, IndexKind::RtpIn, (3 << 16) | 65_530);
        let at = protect(&mut again, &rtp_packet(9, 65_530, 4));
        assert!(unprotect(&mut rx, &at).is_ok());
        assert!(matches!(
            unprotect(&mut rx, &at),
            Err(Error::Replayed { .. })
        ));

        // Unseeded, the same packets fail: a fresh receiver assumes ROC 0.
        let (mut tx, mut rx) = contexts(profile);
        sender_at_roc3_65530(&mut tx, 9);
        let srtp = protect(&mut tx, &rtp_packet(9, 65_531, 4));
        assert!(matches!(
            unprotect(&mut rx, &srtp),
            Err(Error::AuthenticationFailed { .. })
        ));
        assert!(rx.indexes().is_empty());
    }
}

#[test]
fn resumed_outbound_continues_the_index_and_srtcp_index() {
    use crate::IndexKind;
    for profile in Profile::ALL {
        let (mut old_tx, mut rx) = contexts(profile);
        // The receiver followed the old sender through three wraps.
        let mut i: u64 = 0;
        let target: u64 = (3 << 16) | 65_530;
        loop {
            let srtp = protect(&mut old_tx, &rtp_packet(5, i as u16, 4));
            assert!(unprotect(&mut rx, &srtp).is_ok());
            let srtcp = protect_rtcp(&mut old_tx, &rtcp_rr(5));
            assert!(unprotect_rtcp(&mut rx, &srtcp).is_ok());
            if i == target {
                break;
            }
            i = (i + 30_000).min(target);
        }
        let report = old_tx.indexes();
        assert_eq!(
            report,
            vec![(5, IndexKind::RtpOut, target), (5, IndexKind::RtcpOut, 10)]
        );
        // A fresh sender with the same keys, seeded from the report.
        let (mut tx, _) = contexts(profile);
        for &(ssrc, kind, index) in &report {
            assert!(tx.resume(ssrc, kind, index));
        }
        for seq in (65_531..=65_535).chain(0..=10) {
            let plain = rtp_packet(5, seq, 20);
            let srtp = protect(&mut tx, &plain);
            assert_eq!(
                unprotect(&mut rx, &srtp),
                Ok(plain),
                "{profile:?} seq {seq}"
            );
        }
        assert_eq!(tx.rtp_index(5), Some((4 << 16) | 10));
        let srtcp = protect_rtcp(&mut tx, &rtcp_rr(5));
        assert_eq!(unprotect_rtcp(&mut rx, &srtcp), Ok(rtcp_rr(5)));

        // Unseeded, a fresh sender uses ROC 0 and the receiver rejects it.
        let (mut fresh, _) = contexts(profile);
        let srtp = protect(&mut fresh, &rtp_packet(5, 11, 4));
        assert!(unprotect(&mut rx, &srtp).is_err());
    }
}

#[test]
fn resume_never_moves_back_and_rejects_out_of_range() {
    use crate::IndexKind;
    let (mut tx, mut rx) = contexts(Profile::Aes128CmHmacSha1_80);
    protect(&mut tx, &rtp_packet(1, 100, 4));
    tx.resume(1, IndexKind::RtpOut, 50);
    assert_eq!(tx.rtp_index(1), Some(100));
    assert!(!tx.resume(2, IndexKind::RtpOut, 1 << 48));
    assert!(!rx.resume(2, IndexKind::RtpIn, 1 << 48));
    assert!(!tx.resume(2, IndexKind::RtcpOut, (1 << 31) + 1));
    assert!(tx.resume(2, IndexKind::RtcpOut, 1 << 31));
    let srtp = protect(&mut tx.clone(), &rtp_packet(1, 200, 4));
    rx.resume(1, IndexKind::RtpIn, 150);
    rx.resume(1, IndexKind::RtpIn, 120);
    assert_eq!(rx.rtp_index(1), Some(150));
    assert!(unprotect(&mut rx, &srtp).is_ok());
}
