//! Hostile-input test: random bytes, random TLV soup behind a valid header,
//! truncations and bit flips of valid messages go through `Message::parse`,
//! every accessor, both verifiers and the response writers. The test fails
//! if anything panics, or if a corrupted message still authenticates.

use switchyard_stun::{
    binding_response_address, is_stun, split_username, write_binding_error, write_binding_success,
    AttrType, Attributes, BindingRequest, ErrorCode, Message, HEADER_LEN, MAGIC_COOKIE,
};

mod common;
use common::*;

/// xorshift64*: deterministic, dependency-free, good enough to spray bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

const KEYS: [&[u8]; 3] = [SHORT_TERM_PASSWORD, b"x", b"serverPasswordOf22chars"];

/// Runs `buf` through everything that consumes untrusted input. Returns
/// whether it parsed.
fn exercise(buf: &[u8], rng: &mut Rng) -> bool {
    // The raw iterator must cope with any slice, parsed or not.
    for (_, v) in Attributes::new(buf) {
        assert!(v.len() <= buf.len());
    }
    let Ok(msg) = Message::parse(buf) else {
        return false;
    };
    // `parse` follows RFC 8489 (top two type bits zero, i.e. first byte
    // < 0x40); `is_stun` additionally applies RFC 7983's demux rule of a
    // first byte in 0..=3, since 16..=63 belong to ZRTP and DTLS.
    assert_eq!(is_stun(buf), buf[0] <= 3, "is_stun disagrees with parse");
    assert_eq!(msg.as_bytes().len(), buf.len());

    let _ = (
        msg.class(),
        msg.method(),
        msg.msg_type(),
        msg.transaction_id(),
    );
    let _ = (
        msg.priority(),
        msg.use_candidate(),
        msg.ice_controlling(),
        msg.ice_controlled(),
    );
    let _ = (
        msg.xor_mapped_address(),
        msg.mapped_address(),
        msg.error_code().map(|e| e.reason_str()),
    );
    let _ = (
        msg.software(),
        msg.realm(),
        msg.nonce(),
        msg.has_integrity(),
        msg.has_fingerprint(),
    );
    let _ = format!("{msg:?}");
    if let Some(u) = msg.username() {
        let _ = split_username(u);
    }
    let mut total = 0;
    for (t, v) in msg.attributes() {
        let _ = (t.name(), t.is_comprehension_required(), format!("{t:?}"));
        total += 4 + v.len().div_ceil(4) * 4;
        assert!(
            msg.attr(t).is_some() || msg.has_integrity(),
            "attr() misses a present attribute"
        );
    }
    assert_eq!(
        total,
        buf.len() - HEADER_LEN,
        "iterator must cover the whole validated body"
    );

    let _ = msg.verify_fingerprint();
    for key in KEYS {
        let _ = msg.verify_integrity(key);
    }
    let _ = binding_response_address(&msg, &TID);

    // Answer it into buffers of random (often too small) size.
    let mut out = [0u8; 128];
    let cap = rng.below(out.len() + 1);
    let mapped = if rng.next() & 1 == 0 {
        "192.0.2.1:9".parse().unwrap()
    } else {
        "[2001:db8::1]:9".parse().unwrap()
    };
    if let Ok(n) = write_binding_success(&mut out[..cap], &msg, mapped, KEYS[rng.below(3)]) {
        let resp = Message::parse(&out[..n]).expect("our own success response parses");
        assert!(resp.verify_fingerprint());
        assert_eq!(resp.xor_mapped_address(), Some(mapped));
    }
    if let Ok(n) = write_binding_error(
        &mut out[..cap],
        &msg,
        ErrorCode::ROLE_CONFLICT,
        "Role Conflict",
        b"k",
    ) {
        let resp = Message::parse(&out[..n]).expect("our own error response parses");
        assert!(resp.verify_integrity(b"k") && resp.verify_fingerprint());
    }
    true
}

/// Rewrites the header length to match `buf`, so a mutated message gets
/// past the length check and exercises the attribute walk and verifiers.
fn fix_length(buf: &mut [u8]) {
    if buf.len() >= HEADER_LEN {
        let len = (buf.len() - HEADER_LEN) as u16;
        buf[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

fn valid_messages() -> Vec<Vec<u8>> {
    let mut msgs = vec![
        SAMPLE_REQUEST.to_vec(),
        SAMPLE_IPV4_RESPONSE.to_vec(),
        SAMPLE_IPV6_RESPONSE.to_vec(),
        SAMPLE_LONG_TERM_REQUEST.to_vec(),
    ];
    let mut buf = [0u8; 256];
    let req = BindingRequest {
        transaction_id: TID,
        username: b"srv1:cli1",
        password: KEYS[2],
        priority: 12345,
        use_candidate: true,
        controlling: Some(7),
        controlled: None,
    };
    let n = req.write(&mut buf).unwrap();
    msgs.push(buf[..n].to_vec());
    msgs
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = [0u8; 200];
    for _ in 0..50_000 {
        let len = rng.below(buf.len() + 1);
        rng.fill(&mut buf[..len]);
        exercise(&buf[..len], &mut rng);
    }
}

#[test]
fn random_attributes_behind_valid_header_never_panic() {
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let mut parsed = 0;
    for _ in 0..50_000 {
        let mut buf = vec![0u8; HEADER_LEN];
        buf[0] = rng.below(4) as u8;
        buf[1] = rng.next() as u8;
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        rng.fill(&mut buf[8..20]);
        // A few TLVs with types drawn from the known set (so accessors
        // decode them) and lengths that are sometimes wrong.
        for _ in 0..rng.below(6) {
            let known = [
                AttrType::USERNAME,
                AttrType::PRIORITY,
                AttrType::ICE_CONTROLLING,
                AttrType::ICE_CONTROLLED,
                AttrType::USE_CANDIDATE,
                AttrType::XOR_MAPPED_ADDRESS,
                AttrType::MAPPED_ADDRESS,
                AttrType::ERROR_CODE,
                AttrType::MESSAGE_INTEGRITY,
                AttrType::FINGERPRINT,
                AttrType(rng.next() as u16),
            ];
            let ty = known[rng.below(known.len())];
            let vlen = [0, 1, 4, 8, 20, 24, rng.below(40)][rng.below(7)];
            buf.extend_from_slice(&ty.0.to_be_bytes());
            buf.extend_from_slice(&(vlen as u16).to_be_bytes());
            let start = buf.len();
            buf.resize(start + vlen, 0);
            rng.fill(&mut buf[start..]);
            if ty == AttrType::XOR_MAPPED_ADDRESS || ty == AttrType::MAPPED_ADDRESS {
                if let Some(fam) = buf.get_mut(start + 1) {
                    *fam = rng.below(3) as u8;
                }
            }
            // Usually pad correctly, sometimes not at all.
            if rng.below(8) != 0 {
                buf.resize(buf.len().div_ceil(4) * 4, 0);
            }
        }
        if rng.below(16) != 0 {
            fix_length(&mut buf);
        }
        parsed += exercise(&buf, &mut rng) as usize;
    }
    assert!(
        parsed > 10_000,
        "generator should mostly produce parseable messages, got {parsed}"
    );
}

#[test]
fn truncations_never_panic() {
    let mut rng = Rng(42);
    for msg in valid_messages() {
        for cut in 0..=msg.len() {
            let mut t = msg[..cut].to_vec();
            exercise(&t, &mut rng);
            fix_length(&mut t);
            exercise(&t, &mut rng);
        }
    }
}

#[test]
fn bit_flips_never_panic_and_never_authenticate() {
    let mut rng = Rng(7);
    for msg in valid_messages() {
        let original = Message::parse(&msg).unwrap();
        let key: &[u8] = if original.verify_integrity(SHORT_TERM_PASSWORD) {
            SHORT_TERM_PASSWORD
        } else {
            KEYS[2]
        };
        let protected = original.verify_integrity(key);
        for _ in 0..20_000 {
            let mut m = msg.clone();
            for _ in 0..1 + rng.below(3) {
                let bit = rng.below(m.len() * 8);
                m[bit / 8] ^= 1 << (bit % 8);
            }
            if rng.below(2) == 0 {
                fix_length(&mut m);
            }
            exercise(&m, &mut rng);
            if m != msg {
                if let Ok(p) = Message::parse(&m) {
                    // FINGERPRINT is last and covers every byte before it,
                    // and CRC-32 detects every 1-3 bit error at these lengths.
                    if original.has_fingerprint() {
                        assert!(!p.verify_fingerprint(), "corruption passed FINGERPRINT");
                    }
                    // MESSAGE-INTEGRITY covers everything up to its end; a
                    // change only in the trailing FINGERPRINT is allowed through.
                    let mi_end = msg.len() - if original.has_fingerprint() { 8 } else { 0 };
                    if protected && m[..mi_end] != msg[..mi_end] {
                        assert!(
                            !p.verify_integrity(key),
                            "corruption passed MESSAGE-INTEGRITY"
                        );
                    }
                }
            }
        }
    }
}
