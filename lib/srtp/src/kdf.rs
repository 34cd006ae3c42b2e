//! RFC 3711 §4.3 session key derivation with the AES-CM PRF and a key
//! derivation rate of 0 (RFC 5764 forbids anything else), used unchanged by
//! RFC 7714 §11 for the GCM profile.

use aes::Aes128Enc;
use ctr::cipher::{KeyIvInit, StreamCipher};

use crate::profile::CM_AUTH_KEY_LEN;
use crate::Profile;

/// AES-128 in the big-endian counter mode RFC 3711 calls AES-CM. The crate's
/// 128-bit counter equals RFC 3711's 16-bit block counter as long as a packet
/// stays under 2^16 blocks, which every datagram does.
pub(crate) type AesCtr = ctr::Ctr128BE<Aes128Enc>;

/// Longest salt the PRF input has room for (112 bits).
const MAX_SALT_LEN: usize = 14;

/// RFC 3711 §4.3.1 key derivation labels.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Label {
    RtpEncryption = 0,
    RtpAuthentication = 1,
    RtpSalt = 2,
    RtcpEncryption = 3,
    RtcpAuthentication = 4,
    RtcpSalt = 5,
}

/// Fills `out` with the PRF output for `label`. A master salt shorter than 112
/// bits (GCM's 96) is zero-padded on the right, as libsrtp and webrtc-rs do.
pub(crate) fn derive(master_key: &[u8; 16], master_salt: &[u8], label: Label, out: &mut [u8]) {
    // x = (label || r) XOR master_salt with r = index DIV kdr = 0, so the
    // label lands in byte 7 of the 112-bit value; IV = x * 2^16.
    let mut iv = [0u8; 16];
    for (d, s) in iv.iter_mut().zip(master_salt.iter().take(MAX_SALT_LEN)) {
        *d = *s;
    }
    iv[7] ^= label as u8;
    out.fill(0);
    AesCtr::new(master_key.into(), &iv.into()).apply_keystream(out);
}

/// Session keys for one of SRTP or SRTCP. `auth` is only meaningful for the
/// HMAC profile and only the first `salt_len` bytes of `salt` are used.
pub(crate) struct SessionKeys {
    pub enc: [u8; 16],
    pub auth: [u8; CM_AUTH_KEY_LEN],
    pub salt: [u8; MAX_SALT_LEN],
}

impl SessionKeys {
    /// Derives the SRTP (`rtcp == false`) or SRTCP session keys of `profile`.
    /// The caller has already checked the master key and salt lengths.
    pub fn derive(profile: Profile, master_key: &[u8; 16], master_salt: &[u8], rtcp: bool) -> Self {
        let (enc_label, auth_label, salt_label) = if rtcp {
            (
                Label::RtcpEncryption,
                Label::RtcpAuthentication,
                Label::RtcpSalt,
            )
        } else {
            (
                Label::RtpEncryption,
                Label::RtpAuthentication,
                Label::RtpSalt,
            )
        };
        let mut keys = SessionKeys {
            enc: [0; 16],
            auth: [0; CM_AUTH_KEY_LEN],
            salt: [0; MAX_SALT_LEN],
        };
        derive(master_key, master_salt, enc_label, &mut keys.enc);
        let salt_len = profile.salt_len().min(MAX_SALT_LEN);
        derive(
            master_key,
            master_salt,
            salt_label,
            &mut keys.salt[..salt_len],
        );
        if profile == Profile::Aes128CmHmacSha1_80 {
            derive(master_key, master_salt, auth_label, &mut keys.auth);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unhex;

    /// RFC 3711 Appendix B.3 master key and salt.
    fn b3_master() -> ([u8; 16], Vec<u8>) {
        let key: [u8; 16] = unhex("E1F97A0D3E018BE0D64FA32C06DE4139")
            .try_into()
            .expect("16 bytes");
        (key, unhex("0EC675AD498AFEEBB6960B3AABE6"))
    }

    #[test]
    fn rfc3711_b3_cipher_key() {
        let (key, salt) = b3_master();
        let mut out = [0u8; 16];
        derive(&key, &salt, Label::RtpEncryption, &mut out);
        assert_eq!(out.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
    }

    #[test]
    fn rfc3711_b3_cipher_salt() {
        let (key, salt) = b3_master();
        let mut out = [0u8; 14];
        derive(&key, &salt, Label::RtpSalt, &mut out);
        assert_eq!(out.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
    }

    #[test]
    fn rfc3711_b3_auth_key() {
        let (key, salt) = b3_master();
        // B.3 prints 94 bytes of PRF output for label 1; the first 20 are the
        // HMAC-SHA1 key, the rest checks that the counter keeps running.
        let expected = unhex(concat!(
            "CEBE321F6FF7716B6FD4AB49AF256A15",
            "6D38BAA48F0A0ACF3C34E2359E6CDBCE",
            "E049646C43D9327AD175578EF7227098",
            "6371C10C9A369AC2F94A8C5FBCDDDC25",
            "6D6E919A48B610EF17C2041E47403576",
            "6B68642C59BBFC2F34DB60DBDFB2",
        ));
        let mut out = vec![0u8; expected.len()];
        derive(&key, &salt, Label::RtpAuthentication, &mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn session_keys_use_rfc3711_labels() {
        let (key, salt) = b3_master();
        let p = Profile::Aes128CmHmacSha1_80;
        let rtp = SessionKeys::derive(p, &key, &salt, false);
        assert_eq!(rtp.enc.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(rtp.salt.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            rtp.auth.to_vec(),
            unhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );

        // SRTCP keys come from labels 3..5, so they must differ from SRTP's
        // and equal a direct derivation with those labels.
        let rtcp = SessionKeys::derive(p, &key, &salt, true);
        let mut enc = [0u8; 16];
        derive(&key, &salt, Label::RtcpEncryption, &mut enc);
        assert_eq!(rtcp.enc, enc);
        assert_ne!(rtcp.enc, rtp.enc);
        let mut auth = [0u8; 20];
        derive(&key, &salt, Label::RtcpAuthentication, &mut auth);
        assert_eq!(rtcp.auth, auth);
        let mut s = [0u8; 14];
        derive(&key, &salt, Label::RtcpSalt, &mut s);
        assert_eq!(rtcp.salt, s);
    }

    #[test]
    fn gcm_salt_is_zero_padded() {
        // A 12-byte master salt must behave exactly like the same salt
        // followed by two zero bytes.
        let (key, salt14) = b3_master();
        let mut padded = salt14[..12].to_vec();
        padded.extend_from_slice(&[0, 0]);
        let a = SessionKeys::derive(Profile::AeadAes128Gcm, &key, &salt14[..12], false);
        let b = SessionKeys::derive(Profile::AeadAes128Gcm, &key, &padded, false);
        assert_eq!(a.enc, b.enc);
        assert_eq!(a.salt[..12], b.salt[..12]);
        assert_eq!(a.salt[12..], [0, 0]);
    }
}
