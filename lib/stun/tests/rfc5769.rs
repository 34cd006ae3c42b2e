//! RFC 5769 "Test Vectors for STUN": every vector is parsed, its attributes
//! decoded and its MESSAGE-INTEGRITY and FINGERPRINT verified; corrupted
//! copies must fail verification.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use switchyard_stun::{is_stun, long_term_key, split_username, AttrType, Class, Message, Method};

const TID: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];
const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

/// §2.1 Sample Request (short-term credentials; note the padding after
/// USERNAME is spaces, not zeros).
const SAMPLE_REQUEST: [u8; 108] = [
    0x00, 0x01, 0x00, 0x58, // Request type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x10, // SOFTWARE attribute header
    0x53, 0x54, 0x55, 0x4e, // }
    0x20, 0x74, 0x65, 0x73, // }  User-agent...
    0x74, 0x20, 0x63, 0x6c, // }  ...name
    0x69, 0x65, 0x6e, 0x74, // }
    0x00, 0x24, 0x00, 0x04, // PRIORITY attribute header
    0x6e, 0x00, 0x01, 0xff, // ICE priority value
    0x80, 0x29, 0x00, 0x08, // ICE-CONTROLLED attribute header
    0x93, 0x2f, 0xf9, 0xb1, // }  Pseudo-random tie breaker...
    0x51, 0x26, 0x3b, 0x36, // }   ...for ICE control
    0x00, 0x06, 0x00, 0x09, // USERNAME attribute header
    0x65, 0x76, 0x74, 0x6a, // }
    0x3a, 0x68, 0x36, 0x76, // }  Username (9 bytes) and padding (3 bytes)
    0x59, 0x20, 0x20, 0x20, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0x9a, 0xea, 0xa7, 0x0c, // }
    0xbf, 0xd8, 0xcb, 0x56, // }
    0x78, 0x1e, 0xf2, 0xb5, // }  HMAC-SHA1 fingerprint
    0xb2, 0xd3, 0xf2, 0x49, // }
    0xc1, 0xb5, 0x71, 0xa2, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xe5, 0x7a, 0x3b, 0xcf, // CRC32 fingerprint
];

/// §2.2 Sample IPv4 Response.
const SAMPLE_IPV4_RESPONSE: [u8; 80] = [
    0x01, 0x01, 0x00, 0x3c, // Response type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x08, // XOR-MAPPED-ADDRESS attribute header
    0x00, 0x01, 0xa1, 0x47, // Address family (IPv4) and xor'd mapped port number
    0xe1, 0x12, 0xa6, 0x43, // Xor'd mapped IPv4 address
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0x2b, 0x91, 0xf5, 0x99, // }
    0xfd, 0x9e, 0x90, 0xc3, // }
    0x8c, 0x74, 0x89, 0xf9, // }  HMAC-SHA1 fingerprint
    0x2a, 0xf9, 0xba, 0x53, // }
    0xf0, 0x6b, 0xe7, 0xd7, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xc0, 0x7d, 0x4c, 0x96, // CRC32 fingerprint
];

/// §2.3 Sample IPv6 Response.
const SAMPLE_IPV6_RESPONSE: [u8; 92] = [
    0x01, 0x01, 0x00, 0x48, // Response type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0xb7, 0xe7, 0xa7, 0x01, // }
    0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
    0xfa, 0x87, 0xdf, 0xae, // }
    0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
    0x74, 0x65, 0x73, 0x74, // }
    0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
    0x74, 0x6f, 0x72, 0x20, // }
    0x00, 0x20, 0x00, 0x14, // XOR-MAPPED-ADDRESS attribute header
    0x00, 0x02, 0xa1, 0x47, // Address family (IPv6) and xor'd mapped port number
    0x01, 0x13, 0xa9, 0xfa, // }
    0xa5, 0xd3, 0xf1, 0x79, // }  Xor'd mapped IPv6 address
    0xbc, 0x25, 0xf4, 0xb5, // }
    0xbe, 0xd2, 0xb9, 0xd9, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0xa3, 0x82, 0x95, 0x4e, // }
    0x4b, 0xe6, 0x7b, 0xf1, // }
    0x17, 0x84, 0xc9, 0x7c, // }  HMAC-SHA1 fingerprint
    0x82, 0x92, 0xc2, 0x75, // }
    0xbf, 0xe3, 0xed, 0x41, // }
    0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
    0xc8, 0xfb, 0x0b, 0x4c, // CRC32 fingerprint
];

/// §2.4 Sample Request with Long-Term Authentication (no FINGERPRINT).
const SAMPLE_LONG_TERM_REQUEST: [u8; 116] = [
    0x00, 0x01, 0x00, 0x60, // Request type and message length
    0x21, 0x12, 0xa4, 0x42, // Magic cookie
    0x78, 0xad, 0x34, 0x33, // }
    0xc6, 0xad, 0x72, 0xc0, // }  Transaction ID
    0x29, 0xda, 0x41, 0x2e, // }
    0x00, 0x06, 0x00, 0x12, // USERNAME attribute header
    0xe3, 0x83, 0x9e, 0xe3, // }
    0x83, 0x88, 0xe3, 0x83, // }
    0xaa, 0xe3, 0x83, 0x83, // }  Username value (18 bytes) and padding (2 bytes)
    0xe3, 0x82, 0xaf, 0xe3, // }
    0x82, 0xb9, 0x00, 0x00, // }
    0x00, 0x15, 0x00, 0x1c, // NONCE attribute header
    0x66, 0x2f, 0x2f, 0x34, // }
    0x39, 0x39, 0x6b, 0x39, // }
    0x35, 0x34, 0x64, 0x36, // }
    0x4f, 0x4c, 0x33, 0x34, // }  Nonce value
    0x6f, 0x4c, 0x39, 0x46, // }
    0x53, 0x54, 0x76, 0x79, // }
    0x36, 0x34, 0x73, 0x41, // }
    0x00, 0x14, 0x00, 0x0b, // REALM attribute header
    0x65, 0x78, 0x61, 0x6d, // }
    0x70, 0x6c, 0x65, 0x2e, // }  Realm value (11 bytes) and padding (1 byte)
    0x6f, 0x72, 0x67, 0x00, // }
    0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
    0xf6, 0x70, 0x24, 0x65, // }
    0x6d, 0xd6, 0x4a, 0x3e, // }
    0x02, 0xb8, 0xe0, 0x71, // }  HMAC-SHA1 fingerprint
    0x2e, 0x85, 0xc9, 0xa2, // }
    0x8c, 0xa8, 0x96, 0x66, // }
];

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
    assert_eq!(split_username(msg.username().unwrap()), Some((&b"evtj"[..], &b"h6vY"[..])));

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
            assert!(!m.verify_integrity(SHORT_TERM_PASSWORD), "flip at {i} passed integrity");
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
        Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 32853))
    );
    assert!(msg.verify_fingerprint());
    assert!(msg.verify_integrity(SHORT_TERM_PASSWORD));
    assert!(!msg.verify_integrity(b"wrong password"));
    every_byte_is_covered(&SAMPLE_IPV4_RESPONSE, |m| m.verify_fingerprint());
    for i in 0..SAMPLE_IPV4_RESPONSE.len() - 8 {
        let mut copy = SAMPLE_IPV4_RESPONSE;
        copy[i] ^= 0x04;
        if let Ok(m) = Message::parse(&copy) {
            assert!(!m.verify_integrity(SHORT_TERM_PASSWORD), "flip at {i} passed integrity");
        }
    }
}

#[test]
fn sample_ipv6_response() {
    let msg = Message::parse(&SAMPLE_IPV6_RESPONSE).expect("vector parses");
    assert_eq!(msg.class(), Class::SuccessResponse);
    assert_eq!(msg.transaction_id(), &TID);
    let ip: Ipv6Addr = "2001:db8:1234:5678:11:2233:4455:6677".parse().unwrap();
    assert_eq!(msg.xor_mapped_address(), Some(SocketAddr::new(IpAddr::V6(ip), 32853)));
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
    assert!(!msg.verify_fingerprint(), "no FINGERPRINT attribute to verify");

    // The vector's password is "The\u{AD}M\u{AA}tr\u{2168}", which
    // SASLprep maps to "TheMatrIX" before hashing.
    let key = long_term_key(username.as_bytes(), b"example.org", b"TheMatrIX");
    assert!(msg.verify_integrity(&key));
    let unprepared = long_term_key(username.as_bytes(), b"example.org", "The\u{AD}M\u{AA}tr\u{2168}".as_bytes());
    assert!(!msg.verify_integrity(&unprepared));
    assert!(!msg.verify_integrity(b"TheMatrIX"), "raw password is not the long-term key");
}

#[test]
fn long_term_key_is_md5_of_user_realm_password() {
    // MD5("user:realm:pass") computed independently (`printf %s user:realm:pass | md5sum`).
    let key = long_term_key(b"user", b"realm", b"pass");
    assert_eq!(
        key,
        [0x84, 0x93, 0xfb, 0xc5, 0x3b, 0xa5, 0x82, 0xfb, 0x4c, 0x04, 0x4c, 0x45, 0x6b, 0xdc, 0x40, 0xeb]
    );
}
