//! The parts of RTCP (RFC 3550 §6.4) and the SRTCP trailer (RFC 3711 §3.4)
//! that SRTCP needs: the sender SSRC and the `E || SRTCP index` word.

use crate::error::PacketKind;
use crate::Error;

/// RTCP common header plus the sender SSRC: never encrypted, and the SSRC
/// selects the SRTCP cryptographic state.
pub(crate) const HEADER_LEN: usize = 8;

/// The E flag in the SRTCP index word: set when the payload is encrypted.
pub(crate) const E_FLAG: u32 = 0x8000_0000;

/// Largest SRTCP index (31 bits).
pub(crate) const MAX_INDEX: u32 = 0x7fff_ffff;

/// Checks the RTCP header at the start of `pkt` and returns its sender SSRC.
pub(crate) fn parse(pkt: &[u8]) -> Result<u32, Error> {
    let h: &[u8; HEADER_LEN] = pkt
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(Error::Truncated {
            kind: PacketKind::Rtcp,
            len: pkt.len(),
            needed: HEADER_LEN,
        })?;
    if h[0] >> 6 != 2 {
        return Err(Error::MalformedHeader {
            kind: PacketKind::Rtcp,
            reason: "version is not 2",
        });
    }
    Ok(u32::from_be_bytes([h[4], h[5], h[6], h[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sender_ssrc() {
        let p = [0x81, 200, 0, 6, 0x4d, 0x61, 0x72, 0x73, 1, 2, 3];
        assert_eq!(parse(&p), Ok(0x4d617273));
    }

    #[test]
    fn rejects_short_and_non_v2() {
        let p = [0x81, 200, 0, 6, 0x4d, 0x61, 0x72, 0x73];
        for n in 0..8 {
            assert!(matches!(parse(&p[..n]), Err(Error::Truncated { .. })));
        }
        let mut q = p;
        q[0] = 0x41;
        assert!(matches!(parse(&q), Err(Error::MalformedHeader { .. })));
    }
}
