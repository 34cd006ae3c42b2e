//! DTLS-SRTP keying: turning the exporter output into per-direction master keys.

use std::fmt;

use crate::{Error, Profile};

/// One direction's SRTP master key and master salt, as produced by the
/// DTLS-SRTP exporter. Feed it to [`crate::Context::new`]. `Debug` prints only
/// lengths so keys never end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKeys {
    /// Master key, [`Profile::key_len`] bytes.
    pub key: Vec<u8>,
    /// Master salt, [`Profile::salt_len`] bytes.
    pub salt: Vec<u8>,
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeys")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("salt", &format_args!("<{} bytes>", self.salt.len()))
            .finish()
    }
}

/// Splits the RFC 5764 §4.2 exporter output (`EXTRACTOR-dtls_srtp`, exactly
/// [`Profile::keying_material_len`] bytes) into `(client_write, server_write)`
/// master keys. The material is laid out as
/// `client_key || server_key || client_salt || server_salt`. The DTLS client
/// protects with `client_write` and unprotects with `server_write`; the DTLS
/// server (the SFU, normally) does the opposite.
pub fn split_keying_material(
    profile: Profile,
    material: &[u8],
) -> Result<(MasterKeys, MasterKeys), Error> {
    let expected = profile.keying_material_len();
    if material.len() != expected {
        return Err(Error::BadKeyLength {
            what: "keying material",
            expected,
            got: material.len(),
        });
    }
    let (k, s) = (profile.key_len(), profile.salt_len());
    let (client_key, rest) = material.split_at(k);
    let (server_key, rest) = rest.split_at(k);
    let (client_salt, server_salt) = rest.split_at(s);
    Ok((
        MasterKeys {
            key: client_key.to_vec(),
            salt: client_salt.to_vec(),
        },
        MasterKeys {
            key: server_key.to_vec(),
            salt: server_salt.to_vec(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Material whose every byte names its own offset, so the test checks the
    /// exact offsets of each field rather than just the lengths.
    fn numbered(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }

    #[test]
    fn splits_cm_material_in_rfc5764_order() {
        let m = numbered(60);
        let (client, server) =
            split_keying_material(Profile::Aes128CmHmacSha1_80, &m).expect("60 bytes is right");
        assert_eq!(client.key, (0..16).collect::<Vec<u8>>());
        assert_eq!(server.key, (16..32).collect::<Vec<u8>>());
        assert_eq!(client.salt, (32..46).collect::<Vec<u8>>());
        assert_eq!(server.salt, (46..60).collect::<Vec<u8>>());
    }

    #[test]
    fn splits_gcm_material_in_rfc5764_order() {
        let m = numbered(56);
        let (client, server) =
            split_keying_material(Profile::AeadAes128Gcm, &m).expect("56 bytes is right");
        assert_eq!(client.key, (0..16).collect::<Vec<u8>>());
        assert_eq!(server.key, (16..32).collect::<Vec<u8>>());
        assert_eq!(client.salt, (32..44).collect::<Vec<u8>>());
        assert_eq!(server.salt, (44..56).collect::<Vec<u8>>());
    }

    #[test]
    fn rejects_wrong_material_length() {
        for (profile, len) in [
            (Profile::Aes128CmHmacSha1_80, 56),
            (Profile::AeadAes128Gcm, 60),
            (Profile::AeadAes128Gcm, 0),
        ] {
            assert_eq!(
                split_keying_material(profile, &numbered(len)),
                Err(Error::BadKeyLength {
                    what: "keying material",
                    expected: profile.keying_material_len(),
                    got: len,
                })
            );
        }
    }

    #[test]
    fn debug_does_not_leak_key_bytes() {
        let k = MasterKeys {
            key: vec![0xAB; 16],
            salt: vec![0xCD; 14],
        };
        let s = format!("{k:?}");
        assert!(
            !s.contains("171") && !s.contains("AB") && !s.contains("ab"),
            "{s}"
        );
        assert!(s.contains("16 bytes"));
    }
}
