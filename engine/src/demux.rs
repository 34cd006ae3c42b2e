//! RFC 7983 demultiplexing: one UDP port carries STUN, DTLS and SRTP/SRTCP, told apart by the first
//! byte; RTP and RTCP on the same port (RFC 5761) are told apart by the second.

/// What a datagram is, judged by its first two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// First byte 0..=3.
    Stun,
    /// First byte 20..=63.
    Dtls,
    /// First byte 64..=79: TURN ChannelData (RFC 7983). The TURN server has its own port
    /// (`turn/`); on a media port these are dropped as `turn_wrong_port`.
    ChannelData,
    /// First byte 128..=191, payload type not in the RTCP range.
    Rtp,
    /// First byte 128..=191, second byte 192..=223 (RTCP packet types 192..=223, RFC 5761 §4).
    Rtcp,
    /// Anything else (ZRTP, garbage, empty).
    Other,
}

/// Classifies a datagram.
#[inline]
pub fn classify(buf: &[u8]) -> Kind {
    match buf.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        Some(64..=79) => Kind::ChannelData,
        Some(128..=191) => match buf.get(1) {
            Some(192..=223) => Kind::Rtcp,
            Some(_) => Kind::Rtp,
            None => Kind::Other,
        },
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_lands_in_its_rfc7983_range() {
        for b in 0..=255u8 {
            let k = classify(&[b, 96]);
            let expect = match b {
                0..=3 => Kind::Stun,
                20..=63 => Kind::Dtls,
                64..=79 => Kind::ChannelData,
                128..=191 => Kind::Rtp,
                _ => Kind::Other,
            };
            assert_eq!(k, expect, "first byte {b}");
        }
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_packet_type() {
        assert_eq!(classify(&[0x80, 200]), Kind::Rtcp); // SR
        assert_eq!(classify(&[0x81, 206]), Kind::Rtcp); // PSFB
        assert_eq!(classify(&[0x80, 111]), Kind::Rtp); // Opus, marker clear
        assert_eq!(classify(&[0x80, 0x80 | 96]), Kind::Rtp); // VP8 with marker (224)
        assert_eq!(classify(&[0x80]), Kind::Other);
        assert_eq!(classify(&[]), Kind::Other);
    }
}
