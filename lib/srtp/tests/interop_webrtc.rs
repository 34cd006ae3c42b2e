//! Cross-checks against webrtc-srtp 0.17 (the webrtc-rs implementation,
//! which interoperates with browsers): both implementations must produce the
//! same bytes and decrypt each other's packets, for both profiles, RTP and
//! RTCP, across a sequence number wrap, with CSRCs, header extensions and padding.

use switchyard_srtp::{split_keying_material, Context, Profile};
use webrtc_srtp::context::Context as RefContext;
use webrtc_srtp::protection_profile::ProtectionProfile;

fn ref_profile(p: Profile) -> ProtectionProfile {
    match p {
        Profile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        Profile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    }
}

/// Ours and the reference, keyed from the same exporter output as a DTLS
/// server's send direction would be.
fn pair(profile: Profile) -> (Context, RefContext) {
    let material: Vec<u8> = (0..profile.keying_material_len())
        .map(|i| (i * 37 + 11) as u8)
        .collect();
    let (_client, server) = split_keying_material(profile, &material).expect("material");
    let ours = Context::new(profile, &server.key, &server.salt).expect("ours");
    let theirs = RefContext::new(&server.key, &server.salt, ref_profile(profile), None, None)
        .expect("reference");
    (ours, theirs)
}

/// RTP packets of varied shape: plain, with CSRCs, with one- and two-byte
/// header extensions, with padding.
fn rtp_packet(ssrc: u32, seq: u16, shape: usize) -> Vec<u8> {
    let payload_len = [160, 1, 1100, 33, 0][shape % 5];
    let (cc, ext, padding): (u8, &[u8], bool) = match shape % 5 {
        0 => (0, &[], false),
        1 => (2, &[], false),
        2 => (
            0,
            &[0xbe, 0xde, 0, 2, 0x10, 0x55, 0x21, 0xaa, 0xbb, 0, 0, 0],
            false,
        ),
        3 => (1, &[0x10, 0x00, 0, 1, 0x05, 0x02, 0x12, 0x34], true),
        _ => (15, &[0xbe, 0xde, 0, 1, 0x30, 1, 0, 0], false),
    };
    let b0 = 0x80 | (u8::from(padding) << 5) | (u8::from(!ext.is_empty()) << 4) | cc;
    let marker = if seq % 2 == 1 { 0x80 } else { 0 };
    let mut p = vec![b0, 96 | marker];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(3000)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for c in 0..cc {
        p.extend_from_slice(&(0x1000 + u32::from(c)).to_be_bytes());
    }
    p.extend_from_slice(ext);
    p.extend((0..payload_len).map(|i| (i * 7) as u8 ^ seq as u8));
    if padding {
        p.extend_from_slice(&[0, 0, 0, 4]);
    }
    p
}

fn protect(ctx: &mut Context, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + ctx.profile().rtcp_overhead()];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtp(&mut buf, plain.len()).expect("protect_rtp");
    buf.truncate(n);
    buf
}

fn protect_rtcp(ctx: &mut Context, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + ctx.profile().rtcp_overhead()];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx
        .protect_rtcp(&mut buf, plain.len())
        .expect("protect_rtcp");
    buf.truncate(n);
    buf
}

fn unprotect(ctx: &mut Context, srtp: &[u8]) -> Vec<u8> {
    let mut buf = srtp.to_vec();
    let n = ctx.unprotect_rtp(&mut buf).expect("unprotect_rtp");
    buf.truncate(n);
    buf
}

fn unprotect_rtcp(ctx: &mut Context, srtcp: &[u8]) -> Vec<u8> {
    let mut buf = srtcp.to_vec();
    let n = ctx.unprotect_rtcp(&mut buf).expect("unprotect_rtcp");
    buf.truncate(n);
    buf
}

#[test]
fn rtp_matches_reference_byte_for_byte_across_wrap() {
    for profile in [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm] {
        let (mut our_tx, mut ref_tx) = pair(profile);
        let (mut our_rx, mut ref_rx) = pair(profile);
        // Two SSRCs starting at different points; 0xffb0 wraps after 80 packets.
        for (ssrc, start) in [(0x1111_2222u32, 0xffb0u16), (0xdead_beef, 3)] {
            for i in 0..200u16 {
                let seq = start.wrapping_add(i);
                let plain = rtp_packet(ssrc, seq, usize::from(i));

                let ours = protect(&mut our_tx, &plain);
                let theirs = ref_tx.encrypt_rtp(&plain).expect("reference encrypt");
                assert_eq!(
                    ours,
                    theirs.as_ref(),
                    "{profile:?} ssrc {ssrc:#x} seq {seq}: ciphertext differs"
                );

                // Each side decrypts the other's packet.
                let by_ref = ref_rx.decrypt_rtp(&ours).expect("reference decrypt");
                assert_eq!(
                    by_ref.as_ref(),
                    &plain[..],
                    "{profile:?} seq {seq}: reference decrypt of ours"
                );
                assert_eq!(
                    unprotect(&mut our_rx, &theirs),
                    plain,
                    "{profile:?} seq {seq}: our decrypt of reference"
                );
            }
        }
        assert_eq!(
            our_tx.rtp_index(0x1111_2222),
            Some((1 << 16) | 0x77),
            "{profile:?}: ROC advanced"
        );
        assert_eq!(
            our_rx.rtp_index(0x1111_2222),
            Some((1 << 16) | 0x77),
            "{profile:?}: ROC advanced"
        );
    }
}

#[test]
fn reference_decrypts_our_reordered_stream_after_wrap() {
    // Our sender protects in order; our receiver gets the reference's packets
    // out of order around the wrap and must still pick the right ROC.
    for profile in [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm] {
        let (_, mut ref_tx) = pair(profile);
        let (mut our_rx, _) = pair(profile);
        let seqs: Vec<u16> = (0..40u16).map(|i| 0xfff0u16.wrapping_add(i)).collect();
        let pkts: Vec<(Vec<u8>, Vec<u8>)> = seqs
            .iter()
            .map(|&s| {
                let plain = rtp_packet(42, s, usize::from(s));
                let enc = ref_tx.encrypt_rtp(&plain).expect("encrypt").to_vec();
                (plain, enc)
            })
            .collect();
        // Deliver in the order 0, 20, 1..20 (late pre-wrap packets), 21..
        let mut order = vec![0, 20];
        order.extend(1..20);
        order.extend(21..40);
        for i in order {
            assert_eq!(
                unprotect(&mut our_rx, &pkts[i].1),
                pkts[i].0,
                "{profile:?} #{i}"
            );
        }
    }
}

fn rtcp_compound(ssrc: u32, n: u8) -> Vec<u8> {
    // Sender report (no report blocks) followed by an SDES CNAME chunk.
    let mut p = vec![0x80, 200, 0, 6];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xe9, 0x3b, 0x2a, 0x10, 0x4c, 0x75, 0x6e, n]);
    p.extend_from_slice(&(u32::from(n) * 960).to_be_bytes());
    p.extend_from_slice(&u32::from(n).to_be_bytes());
    p.extend_from_slice(&(u32::from(n) * 1200).to_be_bytes());
    p.extend_from_slice(&[0x81, 202, 0, 3]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[1, 4, b'y', b'a', b'r', b'd', 0, 0]);
    p
}

#[test]
fn rtcp_interoperates_and_matches_reference_at_equal_index() {
    for profile in [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm] {
        let (mut our_tx, mut ref_tx) = pair(profile);
        let (mut our_rx, mut ref_rx) = pair(profile);
        for ssrc in [0x0102_0304u32, 0xffff_fff0] {
            // RFC 3711 §3.4 starts the SRTCP index at 0; webrtc-rs (like
            // libsrtp) starts at 1. Spend index 0 so both then use equal indices.
            let first = protect_rtcp(&mut our_tx, &rtcp_compound(ssrc, 0));
            assert_eq!(
                ref_rx
                    .decrypt_rtcp(&first)
                    .expect("reference decrypt")
                    .as_ref(),
                &rtcp_compound(ssrc, 0)[..]
            );
            for n in 1..50u8 {
                let plain = rtcp_compound(ssrc, n);
                let ours = protect_rtcp(&mut our_tx, &plain);
                let theirs = ref_tx.encrypt_rtcp(&plain).expect("reference encrypt");
                assert_eq!(
                    ours,
                    theirs.as_ref(),
                    "{profile:?} ssrc {ssrc:#x} #{n}: SRTCP differs"
                );
                let by_ref = ref_rx.decrypt_rtcp(&ours).expect("reference decrypt");
                assert_eq!(
                    by_ref.as_ref(),
                    &plain[..],
                    "{profile:?} #{n}: reference decrypt of ours"
                );
                assert_eq!(
                    unprotect_rtcp(&mut our_rx, &theirs),
                    plain,
                    "{profile:?} #{n}: our decrypt of reference"
                );
            }
        }
    }
}

#[test]
fn tampered_reference_packets_rejected() {
    for profile in [Profile::Aes128CmHmacSha1_80, Profile::AeadAes128Gcm] {
        let (mut our_rx, mut ref_tx) = pair(profile);
        let plain = rtp_packet(7, 100, 2);
        let srtp = ref_tx.encrypt_rtp(&plain).expect("encrypt").to_vec();
        let mut forged = srtp.clone();
        let mid = forged.len() / 2;
        forged[mid] ^= 0x80;
        assert!(our_rx.unprotect_rtp(&mut forged).is_err(), "{profile:?}");
        assert_eq!(unprotect(&mut our_rx, &srtp), plain);
    }
}
