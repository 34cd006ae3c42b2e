//! Static dispatch over the two profiles' packet transforms, so the context
//! holds no trait objects and the hot path has no indirect calls.

use crate::cm::CmTransform;
use crate::gcm::GcmTransform;
use crate::kdf::SessionKeys;
use crate::{Error, Profile};

/// The per-session crypto of one of SRTP or SRTCP. Each method has the same
/// preconditions as the profile-specific function it forwards to.
/// The variants differ in size by a few hundred bytes (ring's GHASH key
/// powers); a context holds two, built once per session, and boxing would add
/// a pointer chase per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Transform {
    Cm(CmTransform),
    Gcm(GcmTransform),
}

impl Transform {
    pub fn new(profile: Profile, keys: &SessionKeys) -> Result<Self, Error> {
        Ok(match profile {
            Profile::Aes128CmHmacSha1_80 => Transform::Cm(CmTransform::new(keys)?),
            Profile::AeadAes128Gcm => Transform::Gcm(GcmTransform::new(keys)?),
        })
    }

    /// Starts loading the key material a packet reads (see [`crate::Context::prefetch_rtp_keys`]).
    #[inline]
    pub fn prefetch(&self) {
        match self {
            Transform::Cm(t) => t.prefetch(),
            Transform::Gcm(t) => t.prefetch(),
        }
    }

    pub fn protect_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> Option<usize> {
        match self {
            Transform::Cm(t) => Some(t.protect_rtp(pkt, header_len, len, ssrc, index)),
            Transform::Gcm(t) => t.protect_rtp(pkt, header_len, len, ssrc, index),
        }
    }

    pub fn unprotect_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Option<usize> {
        match self {
            Transform::Cm(t) => t.unprotect_rtp(pkt, header_len, ssrc, index),
            Transform::Gcm(t) => t.unprotect_rtp(pkt, header_len, ssrc, index),
        }
    }

    pub fn protect_rtcp(&self, pkt: &mut [u8], len: usize, ssrc: u32, index: u32) -> Option<usize> {
        match self {
            Transform::Cm(t) => Some(t.protect_rtcp(pkt, len, ssrc, index)),
            Transform::Gcm(t) => t.protect_rtcp(pkt, len, ssrc, index),
        }
    }

    /// Offset of the `E || SRTCP index` word in an SRTCP packet of `pkt_len`
    /// bytes (at least the profile's RTCP overhead).
    pub fn rtcp_word_offset(&self, pkt_len: usize) -> usize {
        match self {
            Transform::Cm(_) => CmTransform::rtcp_word_offset(pkt_len),
            Transform::Gcm(_) => GcmTransform::rtcp_word_offset(pkt_len),
        }
    }

    pub fn unprotect_rtcp(&self, pkt: &mut [u8], ssrc: u32, word: u32) -> Option<usize> {
        match self {
            Transform::Cm(t) => t.unprotect_rtcp(pkt, ssrc, word),
            Transform::Gcm(t) => t.unprotect_rtcp(pkt, ssrc, word),
        }
    }
}
