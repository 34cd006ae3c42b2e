//! The crate's error type.

/// Everything that can go wrong while making an identity or running a DTLS-SRTP session.
///
/// Handshake outcomes the control daemon must tell apart have their own variants: a peer
/// whose certificate does not match the SDP fingerprint ([`Error::FingerprintMismatch`]), no
/// SRTP protection profile in common ([`Error::NoSrtpProfile`]), no answer in time
/// ([`Error::Timeout`]) and a peer that aborted with a fatal alert ([`Error::PeerAlert`]).
/// Anything else the DTLS stack reports ends up in [`Error::Handshake`]. The type is `Clone`
/// so that every caller of [`crate::Session::established`] can be given the same outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Generating the self-signed certificate failed.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// A PEM identity could not be parsed, or is not an ECDSA P-256 key with its certificate.
    #[error("invalid identity PEM: {0}")]
    Pem(String),
    /// Reading or writing an identity file failed.
    #[error("identity file {path}: {message}")]
    Io {
        /// The file concerned.
        path: String,
        /// The I/O error, as text.
        message: String,
    },
    /// The remote fingerprint names a hash function this crate does not support (only sha-256 is).
    #[error("unsupported fingerprint hash algorithm {0:?}: only sha-256 is supported")]
    UnsupportedFingerprintAlgorithm(String),
    /// The remote fingerprint is not 32 colon-separated hex bytes.
    #[error("malformed sha-256 fingerprint {0:?}: expected 32 colon-separated hex bytes")]
    InvalidFingerprint(String),
    /// The peer's certificate does not hash to the fingerprint given by its SDP.
    #[error("peer certificate fingerprint mismatch: expected sha-256 {expected}, got {got}")]
    FingerprintMismatch {
        /// The fingerprint from the SDP, normalised to uppercase.
        expected: String,
        /// The SHA-256 fingerprint of the certificate the peer presented.
        got: String,
    },
    /// The peer presented no certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The peer offered or selected no SRTP protection profile that this side supports.
    #[error("no SRTP protection profile in common with the peer")]
    NoSrtpProfile,
    /// The peer does not support the extended master secret (RFC 7627), which this side requires.
    #[error("peer does not support the extended master secret (RFC 7627)")]
    NoExtendedMasterSecret,
    /// The handshake did not complete within the time given to [`crate::Session::established`].
    #[error("DTLS handshake timed out")]
    Timeout,
    /// The peer aborted the handshake with a fatal alert (seen in the clear, before encryption).
    #[error("peer sent fatal alert {name} ({code})")]
    PeerAlert {
        /// The TLS AlertDescription code (e.g. 42 for bad_certificate).
        code: u8,
        /// Its RFC 5246 name, or "unknown".
        name: &'static str,
    },
    /// Exporting the SRTP keying material failed.
    #[error("SRTP keying material export failed: {0}")]
    Export(String),
    /// Any other handshake failure reported by the DTLS stack.
    #[error("DTLS handshake failed: {0}")]
    Handshake(String),
    /// The session was closed or dropped before the handshake completed.
    #[error("session closed before the handshake completed")]
    Closed,
    /// [`crate::Session::start`] was called outside a tokio runtime.
    #[error("no tokio runtime: Session::start must be called from within a tokio runtime")]
    NoRuntime,
}

/// The RFC 5246 / RFC 8446 name of a TLS AlertDescription code.
pub(crate) fn alert_name(code: u8) -> &'static str {
    match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        90 => "user_canceled",
        110 => "unsupported_extension",
        _ => "unknown",
    }
}
