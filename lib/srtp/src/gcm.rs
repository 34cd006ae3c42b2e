//! AEAD_AES_128_GCM (RFC 7714): AES-GCM over the payload with the RTP header
//! (or the SRTCP header and index word) as associated data.
//!
//! The per-packet work is `ring`'s AES-GCM, which interleaves AES-CTR with a
//! GHASH that folds several blocks per reduction (VAES/VPCLMULQDQ or
//! AES-NI/PCLMULQDQ, chosen at run time). It decrypts while it authenticates
//! and zeroes the payload when the tag is wrong, so a packet that fails
//! authentication leaves no unauthenticated plaintext behind, only zeroes
//! where its payload was (the header and tag are untouched). Keeping a copy
//! to put the ciphertext back would cost a copy of every packet received,
//! for packets the caller drops anyway. Payloads over [`RING_MAX`] (only
//! possible on loopback: they exceed any path MTU) go through RustCrypto's
//! `aes-gcm`, which checks the tag before decrypting and so leaves a forged
//! packet as it was.
//!
//! Callers (the context) validate lengths first; every slice bound used here
//! follows from the preconditions each function states.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM};

use crate::kdf::SessionKeys;
use crate::profile::{GCM_TAG_LEN, SRTCP_INDEX_LEN};
use crate::rtcp;
use crate::Error;

/// Largest payload [`GcmTransform::open`] decrypts with `ring`; larger ones
/// take the `aes-gcm` path.
pub(crate) const RING_MAX: usize = 2048;

/// Session state for one of SRTP or SRTCP under the GCM profile: the AES key
/// schedule and GHASH key powers are computed once, per-packet work is in place.
#[derive(Clone)]
pub(crate) struct GcmTransform {
    key: LessSafeKey,
    /// Verify-then-decrypt for payloads over [`RING_MAX`].
    large: Aes128Gcm,
    salt: [u8; 12],
}

impl GcmTransform {
    pub fn new(keys: &SessionKeys) -> Result<Self, Error> {
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&keys.salt[..12]);
        let key = UnboundKey::new(&AES_128_GCM, &keys.enc).map_err(|_| Error::BadKeyLength {
            what: "AES-128-GCM session key",
            expected: 16,
            got: keys.enc.len(),
        })?;
        Ok(GcmTransform {
            key: LessSafeKey::new(key),
            large: Aes128Gcm::new(&keys.enc.into()),
            salt,
        })
    }

    /// Starts loading ring's key (AES round keys and GHASH powers): all a
    /// packet up to [`RING_MAX`] reads.
    #[inline]
    pub fn prefetch(&self) {
        crate::prefetch::lines(&self.key);
    }

    /// RFC 7714 §8.1: IV = (0x0000 || SSRC || ROC || SEQ) XOR salt, where
    /// ROC || SEQ is the 48-bit packet index.
    pub fn rtp_iv(&self, ssrc: u32, index: u64) -> [u8; 12] {
        let mut iv = self.salt;
        for (d, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
            *d ^= s;
        }
        for (d, s) in iv[6..12].iter_mut().zip(index.to_be_bytes()[2..].iter()) {
            *d ^= s;
        }
        iv
    }

    /// RFC 7714 §9.1: IV = (0x0000 || SSRC || 0x0000 || 0 || index) XOR salt.
    pub fn rtcp_iv(&self, ssrc: u32, index: u32) -> [u8; 12] {
        let mut iv = self.salt;
        for (d, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
            *d ^= s;
        }
        for (d, s) in iv[8..12]
            .iter_mut()
            .zip((index & rtcp::MAX_INDEX).to_be_bytes())
        {
            *d ^= s;
        }
        iv
    }

    fn seal(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8]) -> Option<[u8; GCM_TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*iv), Aad::from(aad), data)
            .ok()?;
        tag.as_ref().try_into().ok()
    }

    /// Verifies and decrypts `data` in place; on a wrong tag returns false
    /// with `data` zeroed (or, over [`RING_MAX`], as it was): never
    /// unauthenticated plaintext.
    pub(crate) fn open(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
        let tag: [u8; GCM_TAG_LEN] = match tag.try_into() {
            Ok(t) => t,
            Err(_) => return false,
        };
        if data.len() > RING_MAX {
            return self
                .large
                .decrypt_in_place_detached(iv.into(), aad, data, &tag.into())
                .is_ok();
        }
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*iv),
                Aad::from(aad),
                Tag::from(tag),
                data,
                0..,
            )
            .is_ok()
    }

    /// Protects `pkt[..len]` in place and appends the tag; `None` only if GCM
    /// refuses the length (over 64 GiB, so never for a datagram).
    /// Requires `header_len <= len` and `len + GCM_TAG_LEN <= pkt.len()`.
    pub fn protect_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        len: usize,
        ssrc: u32,
        index: u64,
    ) -> Option<usize> {
        let iv = self.rtp_iv(ssrc, index);
        let (header, rest) = pkt.split_at_mut(header_len);
        let (payload, trailer) = rest.split_at_mut(len - header_len);
        let tag = self.seal(&iv, header, payload)?;
        trailer[..GCM_TAG_LEN].copy_from_slice(&tag);
        Some(len + GCM_TAG_LEN)
    }

    /// Verifies and decrypts a whole SRTP packet; `None` on a bad tag, with
    /// the payload zeroed (see [`GcmTransform::open`]). Requires `header_len + GCM_TAG_LEN <= pkt.len()`.
    pub fn unprotect_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Option<usize> {
        let iv = self.rtp_iv(ssrc, index);
        let len = pkt.len() - GCM_TAG_LEN;
        let (header, rest) = pkt.split_at_mut(header_len);
        let (payload, tag) = rest.split_at_mut(len - header_len);
        self.open(&iv, header, payload, tag).then_some(len)
    }

    /// Protects `pkt[..len]` with SRTCP `index`: encrypts after the first 8
    /// bytes with AAD = header || E || index, then appends tag and index word
    /// (RFC 7714 §9: the tag precedes the index word, unlike the CM profile).
    /// Requires `rtcp::HEADER_LEN <= len` and `len + 20 <= pkt.len()`.
    pub fn protect_rtcp(&self, pkt: &mut [u8], len: usize, ssrc: u32, index: u32) -> Option<usize> {
        let word = (rtcp::E_FLAG | index).to_be_bytes();
        let aad = rtcp_aad(&pkt[..rtcp::HEADER_LEN], word);
        let iv = self.rtcp_iv(ssrc, index);
        let (payload, trailer) = pkt[rtcp::HEADER_LEN..].split_at_mut(len - rtcp::HEADER_LEN);
        let tag = self.seal(&iv, &aad, payload)?;
        trailer[..GCM_TAG_LEN].copy_from_slice(&tag);
        trailer[GCM_TAG_LEN..GCM_TAG_LEN + SRTCP_INDEX_LEN].copy_from_slice(&word);
        Some(len + GCM_TAG_LEN + SRTCP_INDEX_LEN)
    }

    /// Where the `E || index` word sits: the last four bytes.
    /// Requires `pkt_len >= SRTCP_INDEX_LEN`.
    pub fn rtcp_word_offset(pkt_len: usize) -> usize {
        pkt_len - SRTCP_INDEX_LEN
    }

    /// Verifies and (if E is set) decrypts a whole SRTCP packet; `None` on a
    /// bad tag, with the encrypted part zeroed (see [`GcmTransform::open`];
    /// an unencrypted packet is left as it was). Requires `pkt.len() >= rtcp::HEADER_LEN + 20`.
    pub fn unprotect_rtcp(&self, pkt: &mut [u8], ssrc: u32, word: u32) -> Option<usize> {
        let len = pkt.len() - GCM_TAG_LEN - SRTCP_INDEX_LEN;
        let iv = self.rtcp_iv(ssrc, word);
        if word & rtcp::E_FLAG != 0 {
            let aad = rtcp_aad(&pkt[..rtcp::HEADER_LEN], word.to_be_bytes());
            let (payload, tag) = pkt[rtcp::HEADER_LEN..].split_at_mut(len - rtcp::HEADER_LEN);
            return self
                .open(&iv, &aad, payload, &tag[..GCM_TAG_LEN])
                .then_some(len);
        }
        // E = 0 (RFC 7714 §9.2, §17.3): the whole packet plus the index word
        // is AAD. GCM takes one contiguous AAD, so move the word next to the
        // packet (over the tag's first bytes, saved here) and put it back if
        // the tag fails, leaving `pkt` as it was.
        let mut tag = [0u8; GCM_TAG_LEN];
        tag.copy_from_slice(&pkt[len..len + GCM_TAG_LEN]);
        pkt.copy_within(len + GCM_TAG_LEN.., len);
        if self.open(&iv, &pkt[..len + SRTCP_INDEX_LEN], &mut [], &tag) {
            Some(len)
        } else {
            pkt[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
            None
        }
    }
}

/// SRTCP AAD for an encrypted packet: the 8-byte header, then `E || index`.
fn rtcp_aad(header: &[u8], word: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..rtcp::HEADER_LEN].copy_from_slice(header);
    aad[rtcp::HEADER_LEN..].copy_from_slice(&word);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unhex;

    /// RFC 7714 §16/§17 session key and salt ("Quid pro quo").
    fn rfc7714() -> GcmTransform {
        let mut salt = [0u8; 14];
        salt[..12].copy_from_slice(&unhex("517569642070726f2071756f"));
        GcmTransform::new(&SessionKeys {
            enc: unhex("000102030405060708090a0b0c0d0e0f")
                .try_into()
                .expect("16"),
            auth: [0; 20],
            salt,
        })
        .expect("16-byte key")
    }

    /// Both open paths (ring, aes-gcm above RING_MAX) agree with aes-gcm's
    /// seal, and a wrong tag or a flipped byte is refused on either side of
    /// the boundary, leaving zeroes (ring) or the ciphertext (aes-gcm), never
    /// unauthenticated plaintext.
    #[test]
    fn open_paths_agree_and_leave_no_plaintext_on_failure() {
        let t = rfc7714();
        let iv = t.rtp_iv(0x1234_5678, 77);
        let aad = [0x80u8, 96, 0, 77, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78];
        for len in [
            0,
            1,
            15,
            16,
            17,
            RING_MAX - 1,
            RING_MAX,
            RING_MAX + 1,
            9000,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut ours = plain.clone();
            let tag = t.seal(&iv, &aad, &mut ours).expect("seal");
            let mut reference = plain.clone();
            let ref_tag = t
                .large
                .encrypt_in_place_detached((&iv).into(), &aad, &mut reference)
                .expect("reference seal");
            assert_eq!(ours, reference, "ciphertext, {len} B");
            assert_eq!(tag.as_slice(), ref_tag.as_slice(), "tag, {len} B");

            for flip in [None, Some(0usize), Some(len / 2), Some(len + 3)] {
                let mut data = ours.clone();
                let mut bad_tag = tag;
                match flip {
                    Some(i) if i < len => data[i] ^= 0x01,
                    Some(_) => bad_tag[5] ^= 0x80,
                    None => {}
                }
                let before = data.clone();
                let ok = t.open(&iv, &aad, &mut data, &bad_tag);
                if flip.is_none() {
                    assert!(ok, "genuine {len} B packet rejected");
                    assert_eq!(data, plain, "plaintext, {len} B");
                } else {
                    assert!(!ok, "{len} B forgery accepted (flip {flip:?})");
                    assert_no_plaintext(&data, &before, len);
                }
            }
            let mut wrong_aad = aad;
            wrong_aad[3] ^= 1;
            let mut data = ours.clone();
            assert!(!t.open(&iv, &wrong_aad, &mut data, &tag));
            assert_no_plaintext(&data, &ours, len);
        }
    }

    /// What a refused open leaves: zeroes from ring, the ciphertext from aes-gcm.
    fn assert_no_plaintext(data: &[u8], ciphertext: &[u8], len: usize) {
        if len <= RING_MAX {
            assert!(data.iter().all(|&b| b == 0), "{len} B: not zeroed");
        } else {
            assert_eq!(data, ciphertext, "{len} B: changed");
        }
    }

    #[test]
    fn rfc7714_rtp_iv() {
        // §16.1.1: SSRC 0x5501a0b2, ROC 0, SEQ 0xf17b.
        assert_eq!(
            rfc7714().rtp_iv(0x5501a0b2, 0xf17b).to_vec(),
            unhex("51753c6580c2726f20718414")
        );
    }

    #[test]
    fn rfc7714_rtcp_iv() {
        // §17.1: (00 00 || SSRC "Mars" || 00 00 || index 0x5d4) XOR salt.
        assert_eq!(
            rfc7714().rtcp_iv(0x4d617273, 0x5d4).to_vec(),
            unhex("517524055203726f207170bb")
        );
        // The E flag must not leak into the IV.
        assert_eq!(
            rfc7714().rtcp_iv(0x4d617273, 0x8000_05d4),
            rfc7714().rtcp_iv(0x4d617273, 0x5d4)
        );
    }
}
