//! The two SRTP protection profiles this crate implements, with the sizes the
//! rest of the engine needs for buffer planning and DTLS-SRTP keying.

use crate::Error;

/// Length of the SRTCP `E || index` word appended to every SRTCP packet.
pub(crate) const SRTCP_INDEX_LEN: usize = 4;

/// HMAC-SHA1 session authentication key length (RFC 3711 §8.2 default n_a = 160).
pub(crate) const CM_AUTH_KEY_LEN: usize = 20;
/// Truncated HMAC-SHA1 tag length of the `_80` profile.
pub(crate) const CM_TAG_LEN: usize = 10;
/// Full-size GCM tag required by RFC 7714 §14.2 for DTLS-SRTP.
pub(crate) const GCM_TAG_LEN: usize = 16;

/// An SRTP protection profile as negotiated by the DTLS `use_srtp` extension
/// (RFC 5764). It fixes the cipher, the key and salt sizes and the tag length
/// for both SRTP and SRTCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (RFC 3711, RFC 5764 id 0x0001): AES-128
    /// counter mode plus an 80-bit truncated HMAC-SHA1 tag.
    Aes128CmHmacSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (RFC 7714, RFC 5764 id 0x0007): AES-128-GCM with
    /// a 128-bit tag; cheaper than the CM profile on AES-NI/CLMUL hardware.
    AeadAes128Gcm,
}

impl Profile {
    /// Every supported profile, in the order an offer should prefer them
    /// (GCM first: faster and smaller per-packet work).
    pub const ALL: [Profile; 2] = [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80];

    /// Maps the 16-bit profile id from the DTLS `use_srtp` extension to a
    /// profile, or `None` for ids this crate does not implement.
    pub fn from_rfc5764_id(id: u16) -> Option<Profile> {
        match id {
            0x0001 => Some(Profile::Aes128CmHmacSha1_80),
            0x0007 => Some(Profile::AeadAes128Gcm),
            _ => None,
        }
    }

    /// The 16-bit id of this profile in the DTLS `use_srtp` extension.
    pub fn rfc5764_id(self) -> u16 {
        match self {
            Profile::Aes128CmHmacSha1_80 => 0x0001,
            Profile::AeadAes128Gcm => 0x0007,
        }
    }

    /// Master (and session) encryption key length in bytes: 16 for both profiles.
    pub fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes: 14 for AES-CM, 12 for GCM.
    pub fn salt_len(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => 14,
            Profile::AeadAes128Gcm => 12,
        }
    }

    /// Bytes that protecting an RTP packet appends (the authentication tag):
    /// 10 for AES-CM-HMAC-SHA1-80, 16 for GCM.
    pub fn rtp_overhead(self) -> usize {
        match self {
            Profile::Aes128CmHmacSha1_80 => CM_TAG_LEN,
            Profile::AeadAes128Gcm => GCM_TAG_LEN,
        }
    }

    /// Bytes that protecting an RTCP packet appends: the tag plus the 4-byte
    /// `E || SRTCP index` word (14 for AES-CM, 20 for GCM).
    pub fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + SRTCP_INDEX_LEN
    }

    /// Bytes to request from the RFC 5705 exporter with label
    /// "EXTRACTOR-dtls_srtp": `2 * (key_len + salt_len)` (60 for CM, 56 for GCM).
    pub fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }
}

impl TryFrom<u16> for Profile {
    type Error = Error;

    /// Same as [`Profile::from_rfc5764_id`], but with an error that names the
    /// offending id.
    fn try_from(id: u16) -> Result<Profile, Error> {
        Profile::from_rfc5764_id(id).ok_or(Error::UnknownProfile(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_rfcs() {
        let cm = Profile::Aes128CmHmacSha1_80;
        let gcm = Profile::AeadAes128Gcm;
        assert_eq!((cm.key_len(), cm.salt_len()), (16, 14));
        assert_eq!((gcm.key_len(), gcm.salt_len()), (16, 12));
        assert_eq!((cm.rtp_overhead(), cm.rtcp_overhead()), (10, 14));
        assert_eq!((gcm.rtp_overhead(), gcm.rtcp_overhead()), (16, 20));
        assert_eq!(cm.keying_material_len(), 60);
        assert_eq!(gcm.keying_material_len(), 56);
    }

    #[test]
    fn rfc5764_ids_round_trip() {
        for p in Profile::ALL {
            assert_eq!(Profile::from_rfc5764_id(p.rfc5764_id()), Some(p));
            assert_eq!(Profile::try_from(p.rfc5764_id()), Ok(p));
        }
        assert_eq!(Profile::Aes128CmHmacSha1_80.rfc5764_id(), 0x0001);
        assert_eq!(Profile::AeadAes128Gcm.rfc5764_id(), 0x0007);
        // 0x0002 (SHA1_32) and 0x0008 (AES-256-GCM) exist but are not implemented.
        for id in [0x0000, 0x0002, 0x0005, 0x0006, 0x0008, 0xffff] {
            assert_eq!(Profile::from_rfc5764_id(id), None);
            assert_eq!(Profile::try_from(id), Err(Error::UnknownProfile(id)));
        }
    }
}
