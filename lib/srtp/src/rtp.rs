//! Just enough RTP header parsing (RFC 3550 §5.1, RFC 8285) to find the SSRC,
//! the sequence number and where the encrypted payload starts.

use crate::error::PacketKind;
use crate::Error;

/// Fixed RTP header length.
pub(crate) const FIXED_HEADER_LEN: usize = 12;

/// The fields of an RTP header that SRTP needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RtpHeader {
    pub ssrc: u32,
    pub seq: u16,
    /// Fixed header + CSRCs + header extension. Everything from here on is
    /// payload (including any padding) and gets encrypted.
    pub len: usize,
}

/// Parses the header at the start of `pkt`, which must be the part of the
/// packet before any SRTP trailer so the header cannot overlap the tag.
pub(crate) fn parse(pkt: &[u8]) -> Result<RtpHeader, Error> {
    let truncated = |needed| Error::Truncated {
        kind: PacketKind::Rtp,
        len: pkt.len(),
        needed,
    };
    let fixed: &[u8; FIXED_HEADER_LEN] = pkt
        .get(..FIXED_HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| truncated(FIXED_HEADER_LEN))?;
    if fixed[0] >> 6 != 2 {
        return Err(Error::MalformedHeader {
            kind: PacketKind::Rtp,
            reason: "version is not 2",
        });
    }
    let csrc_count = usize::from(fixed[0] & 0x0f);
    let has_extension = fixed[0] & 0x10 != 0;
    let mut len = FIXED_HEADER_LEN + 4 * csrc_count;
    if has_extension {
        // 4-byte extension header: profile-defined id, then length in words.
        let ext = pkt.get(len..len + 4).ok_or_else(|| truncated(len + 4))?;
        let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        len += 4 + 4 * words;
    }
    if pkt.len() < len {
        return Err(truncated(len));
    }
    Ok(RtpHeader {
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
        seq: u16::from_be_bytes([fixed[2], fixed[3]]),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(first: u8) -> Vec<u8> {
        vec![first, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]
    }

    #[test]
    fn plain_header() {
        let mut p = header(0x80);
        p.extend_from_slice(b"payload");
        let h = parse(&p).expect("valid");
        assert_eq!(
            h,
            RtpHeader {
                ssrc: 0xdeadbeef,
                seq: 0x1234,
                len: 12
            }
        );
    }

    #[test]
    fn csrcs_and_extension_are_header() {
        // CC=2, X=1, P=1 (padding changes nothing for the header).
        let mut p = header(0x80 | 0x20 | 0x10 | 2);
        p.extend_from_slice(&[0; 8]); // two CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0x00, 0x02]); // one-byte ext, 2 words
        p.extend_from_slice(&[0x10, 0xff, 0, 0, 0x21, 1, 2, 0]);
        p.extend_from_slice(b"xy");
        assert_eq!(parse(&p).expect("valid").len, 12 + 8 + 4 + 8);
    }

    #[test]
    fn header_may_be_the_whole_packet() {
        let p = header(0x80 | 1);
        let mut with_csrc = p.clone();
        with_csrc.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(parse(&with_csrc).expect("valid").len, 16);
    }

    #[test]
    fn rejects_truncation_and_wrong_version() {
        for n in 0..12 {
            assert!(matches!(
                parse(&header(0x80)[..n]),
                Err(Error::Truncated { .. })
            ));
        }
        // CSRC count says 3 CSRCs but only one is there.
        let mut p = header(0x83);
        p.extend_from_slice(&[0; 4]);
        assert_eq!(
            parse(&p),
            Err(Error::Truncated {
                kind: PacketKind::Rtp,
                len: 16,
                needed: 24
            })
        );
        // Extension header missing, then extension body too short.
        let p = header(0x90);
        assert!(matches!(
            parse(&p),
            Err(Error::Truncated { needed: 16, .. })
        ));
        let mut p = header(0x90);
        p.extend_from_slice(&[0xbe, 0xde, 0xff, 0xff]);
        assert!(
            matches!(parse(&p), Err(Error::Truncated { needed, .. }) if needed == 16 + 4 * 0xffff)
        );
        for v in [0x00, 0x40, 0xc0] {
            assert!(matches!(
                parse(&header(v)),
                Err(Error::MalformedHeader { .. })
            ));
        }
    }
}
