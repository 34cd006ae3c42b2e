//! The one error type every fallible operation in this crate returns.

use std::fmt;

/// Which protocol a failed packet belonged to, so an error message points at
/// the right half of the session (media or control).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// An RTP / SRTP media packet.
    Rtp,
    /// An RTCP / SRTCP control packet.
    Rtcp,
}

impl fmt::Display for PacketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PacketKind::Rtp => "RTP",
            PacketKind::Rtcp => "RTCP",
        })
    }
}

/// Everything that can go wrong while setting up a [`crate::Context`] or
/// protecting/unprotecting a packet. Per-packet errors leave the context's
/// state exactly as it was, so the caller can simply drop the packet and carry
/// on; setup errors (`BadKeyLength`, `UnknownProfile`) mean the keying
/// exchange produced something this crate cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The packet is shorter than its fixed header, declared CSRC list or
    /// header extension, plus the authentication trailer, requires.
    #[error("{kind} packet truncated: {len} bytes, but at least {needed} are required")]
    Truncated {
        /// Protocol of the packet.
        kind: PacketKind,
        /// Length that was supplied.
        len: usize,
        /// Minimum length this packet needs, given what its header declares.
        needed: usize,
    },
    /// The bytes do not look like an RTP/RTCP packet at all (e.g. version is
    /// not 2), so it is probably a STUN/DTLS datagram demuxed to the wrong place.
    #[error("malformed {kind} header: {reason}")]
    MalformedHeader {
        /// Protocol of the packet.
        kind: PacketKind,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The authentication tag did not verify: the keys or profile differ from
    /// the peer's (check which DTLS role's keys this context was built from),
    /// or the packet was corrupted or forged. The context is unchanged.
    #[error("{kind} authentication failed: wrong keys/profile for this direction, or a corrupted or forged packet")]
    AuthenticationFailed {
        /// Protocol of the packet.
        kind: PacketKind,
    },
    /// The packet index was already accepted, or is older than the replay
    /// window, for this SSRC. Usually a network duplicate; drop it.
    #[error("{kind} packet index {index} for SSRC {ssrc:#010x} was already received or is older than the {window}-packet replay window")]
    Replayed {
        /// Protocol of the packet.
        kind: PacketKind,
        /// SSRC the packet claims.
        ssrc: u32,
        /// Estimated packet index (48-bit for SRTP, 31-bit for SRTCP).
        index: u64,
        /// Size of the replay window in packets.
        window: u64,
    },
    /// `protect_*` needs room after the plaintext for the trailer; size pooled
    /// buffers as MTU + [`crate::Profile::rtp_overhead`] /
    /// [`crate::Profile::rtcp_overhead`]. Also returned when `len` exceeds the buffer.
    #[error("buffer too small: {needed} bytes needed but the buffer holds {available}; reserve Profile::rtp_overhead()/rtcp_overhead() bytes after the packet")]
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// A packet longer than any UDP datagram was supplied; it cannot have come
    /// from (or be sent over) the network.
    #[error("{kind} packet of {len} bytes exceeds the {max}-byte maximum datagram size")]
    PacketTooLarge {
        /// Protocol of the packet.
        kind: PacketKind,
        /// Length that was supplied.
        len: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// A master key, master salt or keying-material block has the wrong length
    /// for the negotiated profile.
    #[error("{what} must be {expected} bytes for this profile, got {got}")]
    BadKeyLength {
        /// Which input was wrong ("master key", "master salt", "keying material").
        what: &'static str,
        /// Length the profile requires.
        expected: usize,
        /// Length that was supplied.
        got: usize,
    },
    /// The DTLS `use_srtp` extension selected a profile this crate does not
    /// implement; offer only the ids [`crate::Profile::from_rfc5764_id`] accepts.
    #[error("unsupported SRTP protection profile id {0:#06x}; supported are 0x0001 (AES_CM_128_HMAC_SHA1_80) and 0x0007 (AEAD_AES_128_GCM)")]
    UnknownProfile(u16),
    /// The sender used up the packet index space of this key (2^48 SRTP or
    /// 2^31 SRTCP packets for one SSRC); the session must be re-keyed.
    #[error("{kind} index space exhausted for SSRC {ssrc:#010x}; re-key the session (new DTLS handshake)")]
    IndexExhausted {
        /// Protocol of the packet.
        kind: PacketKind,
        /// SSRC whose index space ran out.
        ssrc: u32,
    },
    /// `protect_rtp` was given a sequence number so far behind the first one
    /// protected for this SSRC (while the rollover counter is still 0) that it
    /// would need a negative rollover counter; the sender's sequence numbering
    /// is broken.
    #[error("RTP sequence number {seq} for SSRC {ssrc:#010x} lies before the first packet protected for that SSRC")]
    SequenceBeforeStart {
        /// SSRC of the packet.
        ssrc: u32,
        /// Its sequence number.
        seq: u16,
    },
}
