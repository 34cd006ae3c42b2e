//! The load generator's RTP payload: a header with the stream, sequence and send time, then a
//! fill pattern derived from them, so a receiver can check every byte it got.
//!
//! ```text
//! [VP8 descriptor, 1 byte, video only] [VP8 keyframe header, 10 bytes, a keyframe's first packet
//! only] magic "SYLG" | stream u32 | seq u64 | send_ns u64 | len u16 | flags u8 | kind u8 |
//! frame u32 | fill ...
//! ```
//!
//! A keyframe (the first frame, and the next one after a PLI or FIR, as a browser's encoder does)
//! starts with what a VP8 keyframe starts with: a frame tag with the key bit clear, the start code
//! `9d 01 2a` and the frame size, so a server that looks for keyframes finds one.
//!
//! `stream` is the publisher's own SSRC for the track: servers that rewrite SSRCs and sequence
//! numbers (Janus) leave it intact, so receivers key their statistics on it. `len` is the length of
//! the whole payload (descriptor included) so truncation is caught.

/// "SYLG".
pub const MAGIC: u32 = 0x5359_4c47;
/// Bytes of the payload header (after the optional VP8 descriptor).
pub const HEADER_LEN: usize = 32;
/// Flag: sent while the room warms up (before every subscriber receives); not counted.
pub const FLAG_WARMUP: u8 = 1;
/// Flag: first packet of a video frame.
pub const FLAG_FRAME_START: u8 = 2;
/// Flag: the publisher dropped this packet on its emulated uplink (`--loss-up`); what arrives is a
/// retransmission from its ring.
pub const FLAG_UPLINK_LOST: u8 = 4;

/// Flag: first packet of a keyframe (with [`FLAG_FRAME_START`]; the payload carries the VP8
/// keyframe header).
pub const FLAG_KEYFRAME: u8 = 8;
/// The VP8 keyframe header a keyframe's first packet carries after the descriptor: frame tag (key
/// frame, version 0, shown), start code, 640x360.
pub const VP8_KEYFRAME_HEADER: [u8; 10] = [0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];

/// Audio (Opus-like) payload.
pub const KIND_AUDIO: u8 = 1;
/// Video (VP8-like) payload.
pub const KIND_VIDEO: u8 = 2;

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The publisher's SSRC for this track.
    pub stream: u32,
    /// Per-stream sequence, from 0.
    pub seq: u64,
    /// Monotonic send time, nanoseconds ([`crate::clock::now_ns`]).
    pub send_ns: u64,
    /// [`FLAG_WARMUP`], [`FLAG_FRAME_START`].
    pub flags: u8,
    /// [`KIND_AUDIO`] or [`KIND_VIDEO`].
    pub kind: u8,
    /// Video frame number (0 for audio).
    pub frame: u32,
}

/// Why a payload failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// Too short, or no magic at offset 0, 1 or (after a VP8 keyframe header) 11.
    NotOurs,
    /// The length field disagrees with what arrived.
    Length,
    /// A fill byte differs.
    Corrupt,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn fill_word(seed: u64, i: usize) -> u64 {
    seed.wrapping_add((i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

fn seed(stream: u32, seq: u64) -> u64 {
    splitmix((u64::from(stream) << 32) ^ seq)
}

/// Writes a payload of exactly `buf.len()` bytes (at least `HEADER_LEN + descriptor`). `vp8`
/// prepends a one-byte VP8 payload descriptor (S bit on frame starts). Returns the length written,
/// or 0 if `buf` is too short.
pub fn write(buf: &mut [u8], h: &Header, vp8: bool) -> usize {
    let key = vp8 && h.flags & FLAG_KEYFRAME != 0 && h.flags & FLAG_FRAME_START != 0;
    let off = usize::from(vp8) + if key { VP8_KEYFRAME_HEADER.len() } else { 0 };
    let len = buf.len();
    if len < off + HEADER_LEN || len > usize::from(u16::MAX) {
        return 0;
    }
    if vp8 {
        buf[0] = if h.flags & FLAG_FRAME_START != 0 {
            0x10
        } else {
            0x00
        };
        if key {
            buf[1..off].copy_from_slice(&VP8_KEYFRAME_HEADER);
        }
    }
    let p = &mut buf[off..];
    p[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    p[4..8].copy_from_slice(&h.stream.to_be_bytes());
    p[8..16].copy_from_slice(&h.seq.to_be_bytes());
    p[16..24].copy_from_slice(&h.send_ns.to_be_bytes());
    p[24..26].copy_from_slice(&(len as u16).to_be_bytes());
    p[26] = h.flags;
    p[27] = h.kind;
    p[28..32].copy_from_slice(&h.frame.to_be_bytes());
    let s = seed(h.stream, h.seq);
    let fill = &mut p[HEADER_LEN..];
    let mut chunks = fill.chunks_exact_mut(8);
    let mut i = 0;
    for c in &mut chunks {
        c.copy_from_slice(&fill_word(s, i).to_le_bytes());
        i += 1;
    }
    let rest = chunks.into_remainder();
    let last = fill_word(s, i).to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
    len
}

/// Reads a payload's header without checking the fill.
pub fn parse(payload: &[u8]) -> Result<(Header, usize), VerifyError> {
    let off = if payload.len() >= 4 && payload[0..4] == MAGIC.to_be_bytes() {
        0
    } else if payload.len() >= 5 && payload[1..5] == MAGIC.to_be_bytes() {
        1
    } else if payload.len() >= 15 && payload[1..11] == VP8_KEYFRAME_HEADER && payload[11..15] == MAGIC.to_be_bytes() {
        11
    } else {
        return Err(VerifyError::NotOurs);
    };
    let p = payload.get(off..).ok_or(VerifyError::NotOurs)?;
    if p.len() < HEADER_LEN {
        return Err(VerifyError::NotOurs);
    }
    let u32_at = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&p[i..i + 8]);
        u64::from_be_bytes(b)
    };
    let h = Header {
        stream: u32_at(4),
        seq: u64_at(8),
        send_ns: u64_at(16),
        flags: p[26],
        kind: p[27],
        frame: u32_at(28),
    };
    let len = usize::from(u16::from_be_bytes([p[24], p[25]]));
    if len != payload.len() {
        return Err(VerifyError::Length);
    }
    Ok((h, off))
}

/// Parses a payload and checks every fill byte.
pub fn verify(payload: &[u8]) -> Result<Header, VerifyError> {
    let (h, off) = parse(payload)?;
    let fill = &payload[off + HEADER_LEN..];
    let s = seed(h.stream, h.seq);
    let mut chunks = fill.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        if c != fill_word(s, i).to_le_bytes() {
            return Err(VerifyError::Corrupt);
        }
        i += 1;
    }
    let rest = chunks.remainder();
    if rest != &fill_word(s, i).to_le_bytes()[..rest.len()] {
        return Err(VerifyError::Corrupt);
    }
    Ok(h)
}

/// The payload of a plaintext RTP packet: after the CSRCs and header extension, without padding.
pub fn rtp_payload(pkt: &[u8]) -> Option<&[u8]> {
    if pkt.len() < 12 || pkt[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(pkt[0] & 0x0f);
    let mut off = 12 + 4 * cc;
    if pkt[0] & 0x10 != 0 {
        let ext = pkt.get(off + 2..off + 4)?;
        off += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = pkt.len();
    if pkt[0] & 0x20 != 0 {
        let pad = usize::from(*pkt.last()?);
        end = end.checked_sub(pad)?;
    }
    pkt.get(off..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        for (len, vp8) in [
            (33, false),
            (34, true),
            (100, true),
            (1187, false),
            (1200, true),
        ] {
            let mut buf = vec![0u8; len];
            let h = Header {
                stream: 0xdead_beef,
                seq: 77,
                send_ns: 123_456,
                flags: FLAG_FRAME_START,
                kind: KIND_VIDEO,
                frame: 9,
            };
            assert_eq!(write(&mut buf, &h, vp8), len);
            assert_eq!(verify(&buf), Ok(h));
            let last = buf.len() - 1;
            buf[last] ^= 1;
            assert_eq!(verify(&buf), Err(VerifyError::Corrupt));
            assert_eq!(verify(&buf[..len - 1]), Err(VerifyError::Length));
        }
        assert_eq!(verify(b"hello"), Err(VerifyError::NotOurs));
    }

    #[test]
    fn a_keyframe_starts_like_a_vp8_keyframe_and_round_trips() {
        let h = Header { stream: 7, seq: 1, send_ns: 5, flags: FLAG_FRAME_START | FLAG_KEYFRAME, kind: KIND_VIDEO, frame: 0 };
        let mut buf = vec![0u8; 1200];
        assert_eq!(write(&mut buf, &h, true), 1200);
        assert_eq!(buf[0], 0x10, "descriptor: S=1, PID 0");
        assert_eq!(buf[1] & 1, 0, "frame tag: key frame");
        assert_eq!(&buf[4..7], &[0x9d, 0x01, 0x2a], "start code");
        assert_eq!((u16::from_le_bytes([buf[7], buf[8]]), u16::from_le_bytes([buf[9], buf[10]])), (640, 360));
        assert_eq!(verify(&buf), Ok(h));
        // Only a frame's first packet carries it; audio never does.
        let cont = Header { flags: FLAG_KEYFRAME, ..h };
        assert_eq!(write(&mut buf, &cont, true), 1200);
        assert_eq!(buf[0], 0x00);
        assert_eq!(verify(&buf), Ok(cont));
        let audio = Header { kind: KIND_AUDIO, ..h };
        let mut a = vec![0u8; 100];
        assert_eq!(write(&mut a, &audio, false), 100);
        assert_eq!(&a[0..4], &MAGIC.to_be_bytes());
        // Too short for descriptor, keyframe header and payload header together.
        assert_eq!(write(&mut [0u8; 40], &h, true), 0);
    }

    #[test]
    fn rtp_payload_skips_csrc_extension_and_padding() {
        let mut p = vec![0xB1, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        p.extend_from_slice(&[0, 0, 0, 5]); // one CSRC
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // extension, one word
        p.extend_from_slice(b"abc");
        p.extend_from_slice(&[0, 2]); // two bytes of padding
        assert_eq!(rtp_payload(&p), Some(&b"abc"[..]));
        assert_eq!(rtp_payload(&p[..14]), None);
    }
}
