//! RFC 5769 "Test Vectors for STUN": every vector is parsed, its attributes
//! decoded and its MESSAGE-INTEGRITY and FINGERPRINT verified; corrupted
//! copies must fail verification.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use switchyard_stun::{is_stun, long_term_key, split_username, AttrType, Class, Message, Method};

mod common;
use common::*;

/// Flips each byte of `msg` in turn and asserts that no corrupted copy
/// passes `check` — proves the verifiers actually cover every byte.
fn every_byte_is_covered(msg: &[u8], check: impl Fn(&Message) -> bool) {
    for i in 0..msg.len() {
        let mut copy = msg.to_vec();
        copy[i] ^= 0x01;
        if let Ok(m) = Message::parse(&copy) {
            assert!(!check(&m), "flipping byte {i} went undetected");
        }
    }
}

#[test]
fn sample_request_short_term() {
    assert!(is_stun(&SAMPLE_REQUEST));
    let msg = Message::parse(&SAMPLE_REQUEST).expect("vector parses");
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.transaction_id(), &TID);
    assert_eq!(msg.software(), Some(&b"STUN test client"[..]));
    assert_eq!(msg.priority(), Some(0x6e0001ff));
    assert_eq!(msg.ice_controlled(), Some(0x932ff9b151263b36));
    assert_eq!(msg.ice_controlling(), None);
    assert!(!msg.use_candidate());
    assert_eq!(msg.username(), Some(&b"evtj:h6vY"[..]));
    assert_eq!(
        split_username(msg.username().unwrap()),
        Some((&b"evtj"[..], &b"h6vY"[..]))
    );

    assert!(msg.verify_fingerprint());
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD));
    assert!(!msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"));
    assert!(!msg.verify_integrity(b""));

    let types: Vec<AttrType> = msg.attributes().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            AttrType::SOFTWARE,
            AttrType::PRIORITY,
            AttrType::ICE_CONTROLLED,
            AttrType::USERNAME,
            AttrType::MESSAGE_INTEGRITY,
            AttrType::FINGERPRINT
        ]
    );

    every_byte_is_covered(&SAMPLE_REQUEST, |m| m.verify_fingerprint());
    // The HMAC covers everything up to the end of MESSAGE-INTEGRITY (byte
    // 100); the FINGERPRINT after it is not covered, by design.
    for i in 0..100 {
        let mut copy = SAMPLE_REQUEST;
        copy[i] ^= 0x80;
        if let Ok(m) = Message::parse(&copy) {
            assert!(
                !m.verify_integrity(SHORT_TERM_PASSWORD),
                "flip at {i} passed integrity"
            );
        }
    }
}

#[test]
fn sample_ipv4_response() {
    let msg = Message::parse(&SAMPLE_IPV4_RESPONSE).expect("vector parses");
    assert_eq!(msg.class(), Class::SuccessResponse);
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.transaction_id(), &TID);
    assert_eq!(msg.software(), Some(&b"test vector"[..]));
    assert_eq!(
        msg.xor_mapped_address(),
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            32853
        ))
    );
    assert!(msg.verify_fingerprint());
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD));
    assert!(!msg.verify_integrity(b"wrong password"));
    every_byte_is_covered(&SAMPLE_IPV4_RESPONSE, |m| m.verify_fingerprint());
    for i in 0..SAMPLE_IPV4_RESPONSE.len() - 8 {
        let mut copy = SAMPLE_IPV4_RESPONSE;
        copy[i] ^= 0x04;
        if let Ok(m) = Message::parse(&copy) {
            assert!(
                !m.verify_integrity(SHORT_TERM_PASSWORD),
                "flip at {i} passed integrity"
            );
        }
    }
}

#[test]
fn sample_ipv6_response() {
    let msg = Message::parse(&SAMPLE_IPV6_RESPONSE).expect("vector parses");
    assert_eq!(msg.class(), Class::SuccessResponse);
    assert_eq!(msg.transaction_id(), &TID);
    let ip: Ipv6Addr = "2001:db8:1234:5678:11:2233:4455:6677".parse().unwrap();
    assert_eq!(
        msg.xor_mapped_address(),
        Some(SocketAddr::new(IpAddr::V6(ip), 32853))
    );
    assert!(msg.verify_fingerprint());
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD));
    assert!(!msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxB"));
    every_byte_is_covered(&SAMPLE_IPV6_RESPONSE, |m| m.verify_fingerprint());
}

#[test]
fn sample_request_long_term() {
    let msg = Message::parse(&SAMPLE_LONG_TERM_REQUEST).expect("vector parses");
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), Method::BINDING);
    let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"; // "マトリックス"
    assert_eq!(msg.username(), Some(username.as_bytes()));
    assert_eq!(msg.nonce(), Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..]));
    assert_eq!(msg.realm(), Some(&b"example.org"[..]));
    assert!(!msg.has_fingerprint());
    assert!(
        !msg.verify_fingerprint(),
        "no FINGERPRINT attribute to verify"
    );

    // The vector's password is "The\u{AD}M\u{AA}tr\u{2168}", which
    // SASLprep maps to "TheMatrIX" before hashing.
    let key = long_term_key(username.as_bytes(), b"example.org", b"TheMatrIX");
    assert!(msg.verify_integrity(&key));
    let unprepared = long_term_key(
        username.as_bytes(),
        b"example.org",
        "The\u{AD}M\u{AA}tr\u{2168}".as_bytes(),
    );
    assert!(!msg.verify_integrity(&unprepared));
    assert!(
        !msg.verify_integrity(b"TheMatrIX"),
        "raw password is not the long-term key"
    );
}

#[test]
fn long_term_key_is_md5_of_user_realm_password() {
    // MD5("user:realm:pass") computed independently (`printf %s user:realm:pass | md5sum`).
    let key = long_term_key(b"user", b"realm", b"pass");
    assert_eq!(
        key,
        [
            0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb, 0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc,
            0x40, 0xeb
        ]
    );
}
