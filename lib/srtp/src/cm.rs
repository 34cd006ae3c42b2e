//! AES_CM_128_HMAC_SHA1_80 (RFC 3711 §4.1.1, §4.2): AES counter-mode
//! encryption of the payload and a truncated HMAC-SHA1 over the packet.
//!
//! Callers (the context) validate lengths first; every slice bound used here
//! follows from the preconditions each function states.

use aes::Aes128Enc;
use ctr::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use ctr::flavors::Ctr128BE;
use ctr::CtrCore;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::kdf::SessionKeys;
use crate::profile::{CM_TAG_LEN, SRTCP_INDEX_LEN};
use crate::rtcp;
use crate::Error;

type HmacSha1 = Hmac<Sha1>;

/// Session state for one of SRTP or SRTCP under the CM profile. Both the AES
/// key schedule and the HMAC inner/outer pads are computed once here, so the
/// per-packet cost is a copy of each plus the actual work.
#[derive(Clone)]
pub(crate) struct CmTransform {
    aes: Aes128Enc,
    salt: [u8; 14],
    mac: HmacSha1,
}

impl CmTransform {
    /// Starts loading the AES key schedule and the HMAC pads.
    #[inline]
    pub fn prefetch(&self) {
        crate::prefetch::lines(&self.aes);
        crate::prefetch::lines(&self.mac);
    }

    pub fn new(keys: &SessionKeys) -> Result<Self, Error> {
        let mac =
            <HmacSha1 as Mac>::new_from_slice(&keys.auth).map_err(|_| Error::BadKeyLength {
                what: "HMAC-SHA1 session key",
                expected: keys.auth.len(),
                got: keys.auth.len(),
            })?;
        Ok(CmTransform {
            aes: Aes128Enc::new(&keys.enc.into()),
            salt: keys.salt,
            mac,
        })
    }

    /// XORs the AES-CM keystream for (`ssrc`, `index`) into `data`:
    /// IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (index * 2^16).
    pub fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *d ^= s;
        }
        for (d, s) in iv[8..16].iter_mut().zip((index << 16).to_be_bytes()) {
            *d ^= s;
        }
        // Reuse the expanded key schedule instead of re-keying per packet.
        let core = CtrCore::<Aes128Enc, Ctr128BE>::inner_iv_init(self.aes.clone(), &iv.into());
        StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
    }

    fn mac_over(&self, parts: [&[u8]; 2]) -> HmacSha1 {
        let mut mac = self.mac.clone();
        for p in parts {
            mac.update(p);
        }
        mac
    }

    fn tag(&self, parts: [&[u8]; 2]) -> [u8; CM_TAG_LEN] {
        let full = self.mac_over(parts).finalize().into_bytes();
        let mut tag = [0u8; CM_TAG_LEN];
        tag.copy_from_slice(&full[..CM_TAG_LEN]);
        tag
    }

    /// Protects `pkt[..len]` in place and appends the tag.
    /// Requires `header_len <= len` and `len + CM_TAG_LEN <= pkt.len()`.
    pub fn protect_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> usize {
        let (body, rest) = pkt.split_at_mut(len);
        self.apply_keystream(ssrc, index, &mut body[header_len..]);
        // RFC 3711 §4.2: the authenticated portion is followed by the ROC.
        let roc = ((index >> 16) as u32).to_be_bytes();
        rest[..CM_TAG_LEN].copy_from_slice(&self.tag([body, &roc]));
        len + CM_TAG_LEN
    }

    /// Verifies and decrypts a whole SRTP packet; `None` if the tag is wrong,
    /// in which case `pkt` is untouched. Requires `header_len + CM_TAG_LEN <= pkt.len()`.
    pub fn unprotect_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Option<usize> {
        let len = pkt.len() - CM_TAG_LEN;
        let (body, tag) = pkt.split_at_mut(len);
        let roc = ((index >> 16) as u32).to_be_bytes();
        // Verify before decrypting: constant-time compare, nothing modified on failure.
        self.mac_over([body, &roc])
            .verify_truncated_left(tag)
            .ok()?;
        self.apply_keystream(ssrc, index, &mut body[header_len..]);
        Some(len)
    }

    /// Protects `pkt[..len]` (an RTCP compound packet) with SRTCP `index`:
    /// encrypts after the first 8 bytes, appends `E || index`, then the tag.
    /// Requires `rtcp::HEADER_LEN <= len` and `len + 14 <= pkt.len()`.
    pub fn protect_rtcp(&self, pkt: &mut [u8], len: usize, ssrc: u32, index: u32) -> usize {
        self.apply_keystream(ssrc, u64::from(index), &mut pkt[rtcp::HEADER_LEN..len]);
        let word_end = len + SRTCP_INDEX_LEN;
        pkt[len..word_end].copy_from_slice(&(rtcp::E_FLAG | index).to_be_bytes());
        let (authed, rest) = pkt.split_at_mut(word_end);
        rest[..CM_TAG_LEN].copy_from_slice(&self.tag([authed, &[]]));
        word_end + CM_TAG_LEN
    }

    /// Where the `E || index` word sits in an SRTCP packet of this profile.
    /// Requires `pkt.len() >= CM_TAG_LEN + SRTCP_INDEX_LEN`.
    pub fn rtcp_word_offset(pkt_len: usize) -> usize {
        pkt_len - CM_TAG_LEN - SRTCP_INDEX_LEN
    }

    /// Verifies and (if E is set) decrypts a whole SRTCP packet. Requires
    /// `pkt.len() >= rtcp::HEADER_LEN + 14`.
    pub fn unprotect_rtcp(&self, pkt: &mut [u8], ssrc: u32, word: u32) -> Option<usize> {
        let (authed, tag) = pkt.split_at_mut(pkt.len() - CM_TAG_LEN);
        self.mac_over([authed, &[]])
            .verify_truncated_left(tag)
            .ok()?;
        let len = authed.len() - SRTCP_INDEX_LEN;
        if word & rtcp::E_FLAG != 0 {
            let index = u64::from(word & rtcp::MAX_INDEX);
            self.apply_keystream(ssrc, index, &mut authed[rtcp::HEADER_LEN..len]);
        }
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unhex;

    /// RFC 3711 Appendix B.2: AES-CM keystream for session key
    /// 2B7E1516..., salt F0F1...FD, SSRC 0, index 0, at blocks 0..2 and
    /// 0xfeff..0xff01 (the latter checks the 16-bit block counter runs on).
    #[test]
    fn rfc3711_b2_keystream() {
        let keys = SessionKeys {
            enc: unhex("2B7E151628AED2A6ABF7158809CF4F3C")
                .try_into()
                .expect("16"),
            auth: [0; 20],
            salt: unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
                .try_into()
                .expect("14"),
        };
        let t = CmTransform::new(&keys).expect("keys");
        let mut ks = vec![0u8; 16 * 0xff02];
        t.apply_keystream(0, 0, &mut ks);
        let block = |i: usize| ks[16 * i..16 * (i + 1)].to_vec();
        assert_eq!(block(0), unhex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), unhex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), unhex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xfeff), unhex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), unhex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), unhex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    #[test]
    fn ssrc_and_index_change_the_keystream() {
        let keys = SessionKeys {
            enc: [7; 16],
            auth: [9; 20],
            salt: [3; 14],
        };
        let t = CmTransform::new(&keys).expect("keys");
        let ks = |ssrc, index| {
            let mut b = [0u8; 32];
            t.apply_keystream(ssrc, index, &mut b);
            b
        };
        let base = ks(1, 1);
        assert_ne!(base, ks(2, 1));
        assert_ne!(base, ks(1, 2));
        assert_ne!(base, ks(1, 1 << 16));
        assert_ne!(base, ks(1, 1 << 47));
    }
}
