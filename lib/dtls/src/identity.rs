//! The daemon's certificate and SHA-256 fingerprints (RFC 8122).

use std::fmt;
use std::io::Write;
use std::path::Path;

use dtls::crypto::{Certificate, CryptoPrivateKey, CryptoPrivateKeyKind};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use sha2::{Digest, Sha256};

use crate::Error;

const PEM_KEY_TAG: &str = "PRIVATE KEY";
const PEM_CERT_TAG: &str = "CERTIFICATE";

/// One certificate per daemon: ECDSA P-256, self-signed; its SHA-256 fingerprint goes in every SDP answer.
///
/// WebRTC does not use certificate chains: each side proves it holds the key whose certificate
/// hashes to the `a=fingerprint` of its SDP. [`Identity::generate`] makes a fresh key and
/// certificate; [`Identity::to_pem`] / [`Identity::from_pem`] (or [`Identity::load_or_create`])
/// let the control daemon keep the same one across restarts. Cloning is cheap enough to do once
/// per session (the key is re-parsed from its PKCS#8 form). `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct Identity {
    certificate: Certificate,
    fingerprint: String,
}

impl Identity {
    /// Generates a new ECDSA P-256 key and a self-signed certificate for it (CN "switchyard").
    pub fn generate() -> Result<Identity, Error> {
        let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| Error::Certificate(e.to_string()))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "switchyard");
        params.distinguished_name = name;
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        let private_key = CryptoPrivateKey::from_key_pair(&key_pair)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        Ok(Identity::from_parts(cert.der().to_vec(), private_key))
    }

    fn from_parts(der: Vec<u8>, private_key: CryptoPrivateKey) -> Identity {
        let fingerprint = fingerprint_of(&der);
        Identity {
            certificate: Certificate {
                certificate: vec![der.into()],
                private_key,
            },
            fingerprint,
        }
    }

    /// The SHA-256 fingerprint of the DER certificate: 32 uppercase hex bytes joined by ':'
    /// ("AB:CD:..."), the value that follows `a=fingerprint:sha-256 ` in an SDP.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The certificate in DER form.
    pub fn certificate_der(&self) -> &[u8] {
        self.certificate
            .certificate
            .first()
            .map(|c| c.as_ref())
            .unwrap_or(&[])
    }

    /// Serialises the identity as two PEM blocks: the PKCS#8 "PRIVATE KEY" then the "CERTIFICATE".
    /// The output contains the private key: store it readable by the daemon only.
    pub fn to_pem(&self) -> String {
        pem::encode_many(&[
            pem::Pem::new(
                PEM_KEY_TAG,
                self.certificate.private_key.serialized_der.clone(),
            ),
            pem::Pem::new(PEM_CERT_TAG, self.certificate_der().to_vec()),
        ])
    }

    /// Parses what [`Identity::to_pem`] wrote: a PKCS#8 ECDSA P-256 "PRIVATE KEY" block and the
    /// "CERTIFICATE" block of that key, in either order. Fails with [`Error::Pem`] if a block is
    /// missing, the key is not P-256, or the certificate is not for that key.
    pub fn from_pem(text: &str) -> Result<Identity, Error> {
        let blocks = pem::parse_many(text).map_err(|e| Error::Pem(e.to_string()))?;
        let key_der = blocks
            .iter()
            .find(|b| b.tag() == PEM_KEY_TAG)
            .ok_or_else(|| Error::Pem("no PRIVATE KEY block".into()))?
            .contents();
        let cert_der = blocks
            .iter()
            .find(|b| b.tag() == PEM_CERT_TAG)
            .ok_or_else(|| Error::Pem("no CERTIFICATE block".into()))?
            .contents();
        let key_pair = KeyPair::try_from(key_der).map_err(|e| Error::Pem(e.to_string()))?;
        if !key_pair.is_compatible(&PKCS_ECDSA_P256_SHA256) {
            return Err(Error::Pem("the key is not an ECDSA P-256 key".into()));
        }
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| Error::Pem(format!("bad certificate: {e}")))?;
        if cert
            .tbs_certificate
            .subject_pki
            .subject_public_key
            .data
            .as_ref()
            != key_pair.public_key_raw()
        {
            return Err(Error::Pem("the certificate is not for this key".into()));
        }
        let private_key =
            CryptoPrivateKey::from_key_pair(&key_pair).map_err(|e| Error::Pem(e.to_string()))?;
        if !matches!(private_key.kind, CryptoPrivateKeyKind::Ecdsa256(_)) {
            return Err(Error::Pem("the key is not an ECDSA P-256 key".into()));
        }
        Ok(Identity::from_parts(cert_der.to_vec(), private_key))
    }

    /// Loads the identity kept at `path`, or generates one and writes it there (created with
    /// mode 0600 on Unix, never overwriting an existing file), so that the daemon's fingerprint
    /// survives restarts.
    pub fn load_or_create(path: &Path) -> Result<Identity, Error> {
        let io_err = |e: std::io::Error| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => return Identity::from_pem(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let identity = Identity::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(identity.to_pem().as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io_err)?;
                Ok(identity)
            }
            // Someone else created it meanwhile: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path).map_err(io_err)?;
                Identity::from_pem(&text)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    pub(crate) fn dtls_certificate(&self) -> Certificate {
        self.certificate.clone()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Formats bytes as uppercase hex pairs joined by ':'.
fn colon_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// The SDP-style SHA-256 fingerprint ("AB:CD:...") of a DER certificate.
pub fn fingerprint_of(der: &[u8]) -> String {
    colon_hex(&Sha256::digest(der))
}

/// A parsed remote fingerprint: the SHA-256 digest the peer's certificate must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RemoteFingerprint([u8; 32]);

impl RemoteFingerprint {
    /// Parses "sha-256 AB:CD:..." (the value of an SDP `a=fingerprint:` line) or a bare
    /// "AB:CD:..." (taken as sha-256). Hex digits and the algorithm name are case-insensitive.
    pub(crate) fn parse(text: &str) -> Result<RemoteFingerprint, Error> {
        let text = text.trim();
        let hex = match text.split_once(char::is_whitespace) {
            Some((algorithm, rest)) => {
                if !algorithm.eq_ignore_ascii_case("sha-256") {
                    return Err(Error::UnsupportedFingerprintAlgorithm(
                        algorithm.to_string(),
                    ));
                }
                rest.trim()
            }
            None => text,
        };
        let invalid = || Error::InvalidFingerprint(text.to_string());
        let mut digest = [0u8; 32];
        let mut parts = hex.split(':');
        for byte in digest.iter_mut() {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(RemoteFingerprint(digest))
    }

    /// Whether `der` hashes to this fingerprint.
    pub(crate) fn matches(&self, der: &[u8]) -> bool {
        Sha256::digest(der).as_slice() == self.0
    }

    /// The fingerprint as uppercase "AB:CD:...".
    pub(crate) fn to_colon_hex(self) -> String {
        colon_hex(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_uppercase_colon_hex_of_der() {
        let id = Identity::generate().expect("generate");
        let fp = id.fingerprint();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp
            .chars()
            .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert_eq!(fp, fingerprint_of(id.certificate_der()));
        let parsed = RemoteFingerprint::parse(&format!("sha-256 {}", fp.to_lowercase()))
            .expect("parse lowercase");
        assert!(parsed.matches(id.certificate_der()));
        assert_eq!(parsed.to_colon_hex(), fp);
        let bare = RemoteFingerprint::parse(fp).expect("parse bare");
        assert_eq!(bare, parsed);
        let upper_alg =
            RemoteFingerprint::parse(&format!("SHA-256  {fp} ")).expect("parse SHA-256");
        assert_eq!(upper_alg, parsed);
    }

    #[test]
    fn rejects_unsupported_or_malformed_fingerprints() {
        let id = Identity::generate().expect("generate");
        let fp = id.fingerprint();
        assert_eq!(
            RemoteFingerprint::parse(&format!("sha-1 {}", &fp[..59])),
            Err(Error::UnsupportedFingerprintAlgorithm("sha-1".into()))
        );
        assert!(matches!(
            RemoteFingerprint::parse(&format!("sha-512 {fp}")),
            Err(Error::UnsupportedFingerprintAlgorithm(a)) if a == "sha-512"
        ));
        assert!(matches!(
            RemoteFingerprint::parse("sha-256"),
            Err(Error::InvalidFingerprint(_))
        ));
        assert!(matches!(
            RemoteFingerprint::parse(""),
            Err(Error::InvalidFingerprint(_))
        ));
        assert!(matches!(
            RemoteFingerprint::parse(&format!("sha-256 {}", &fp[..92])),
            Err(Error::InvalidFingerprint(_))
        ));
        assert!(matches!(
            RemoteFingerprint::parse(&format!("sha-256 {fp}:00")),
            Err(Error::InvalidFingerprint(_))
        ));
        assert!(matches!(
            RemoteFingerprint::parse(&format!("sha-256 {}", fp.replace(':', ""))),
            Err(Error::InvalidFingerprint(_))
        ));
        assert!(matches!(
            RemoteFingerprint::parse(&format!("sha-256 ZZ{}", &fp[2..])),
            Err(Error::InvalidFingerprint(_))
        ));
    }

    #[test]
    fn pem_round_trip_keeps_the_fingerprint() {
        let id = Identity::generate().expect("generate");
        let pem = id.to_pem();
        assert!(pem.contains("BEGIN PRIVATE KEY") && pem.contains("BEGIN CERTIFICATE"));
        let back = Identity::from_pem(&pem).expect("from_pem");
        assert_eq!(back.fingerprint(), id.fingerprint());
        assert_eq!(back.certificate_der(), id.certificate_der());

        // A certificate with someone else's key is refused.
        let other = Identity::generate().expect("generate");
        let key_block = pem
            .split("-----BEGIN CERTIFICATE-----")
            .next()
            .unwrap_or("");
        let other_cert = &other.to_pem()[other
            .to_pem()
            .find("-----BEGIN CERTIFICATE-----")
            .unwrap_or(0)..];
        let mixed = format!("{key_block}{other_cert}");
        assert!(matches!(Identity::from_pem(&mixed), Err(Error::Pem(_))));
        assert!(matches!(Identity::from_pem("garbage"), Err(Error::Pem(_))));
    }

    #[test]
    fn load_or_create_persists() {
        let dir = std::env::temp_dir().join(format!("switchyard-dtls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("identity.pem");
        let _ = std::fs::remove_file(&path);
        let a = Identity::load_or_create(&path).expect("create");
        let b = Identity::load_or_create(&path).expect("load");
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
