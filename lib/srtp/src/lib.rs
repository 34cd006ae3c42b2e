//! # switchyard-srtp
//!
//! SRTP and SRTCP (RFC 3711) for the Switchyard SFU, with the two DTLS-SRTP
//! profiles browsers negotiate: `AES_CM_128_HMAC_SHA1_80` and
//! `AEAD_AES_128_GCM` (RFC 7714). Packets are protected and unprotected **in
//! place** in the caller's buffer, with no heap allocation per packet: the
//! only allocation is the per-SSRC state created the first time an SSRC is
//! seen.
//!
//! ## How it fits
//!
//! `switchyard-engine` derives keys after the DTLS handshake (RFC 5764
//! exporter, [`split_keying_material`]) and builds two [`Context`]s per
//! transport: one to unprotect what the peer sends, one to protect what the
//! SFU sends. Each forwarded packet is unprotected once in the receive buffer,
//! then copied into a pooled buffer and protected for each subscriber. The
//! load generator and the integration tests use the same contexts in the
//! browser's role.
//!
//! ```
//! use switchyard_srtp::{split_keying_material, Context, Profile};
//!
//! let profile = Profile::from_rfc5764_id(0x0007).expect("negotiated profile");
//! let material = [7u8; 56]; // from the DTLS exporter in real use
//! let (client, server) = split_keying_material(profile, &material)?;
//! // The DTLS server (the SFU) sends with server_write keys ...
//! let mut tx = Context::new(profile, &server.key, &server.salt)?;
//! // ... and the client receives with the same keys.
//! let mut rx = Context::new(profile, &server.key, &server.salt)?;
//! # let _ = client;
//!
//! let mut buf = [0u8; 1500];
//! let rtp = [0x80, 96, 0, 1, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe, b'h', b'i'];
//! buf[..rtp.len()].copy_from_slice(&rtp);
//! let n = tx.protect_rtp(&mut buf, rtp.len())?;
//! assert_eq!(n, rtp.len() + profile.rtp_overhead());
//! let m = rx.unprotect_rtp(&mut buf[..n])?;
//! assert_eq!(&buf[..m], &rtp);
//! # Ok::<(), switchyard_srtp::Error>(())
//! ```
//!
//! Crypto: AES-GCM from `ring` (stitched AES and multi-block GHASH in
//! assembly, picked at run time), with RustCrypto's `aes-gcm` for payloads
//! over 2 KiB; AES-CM and HMAC-SHA1 from RustCrypto (`aes` with runtime
//! AES-NI detection, `ctr`, `hmac`/`sha1` with SHA-NI detection). Not implemented: MKI, key derivation rates other
//! than 0 (RFC 5764 forbids them), the `_32` and AES-256 profiles, RFC 6904
//! header extension encryption.

#![deny(missing_docs)]

mod cm;
mod context;
mod error;
mod gcm;
mod index;
mod kdf;
mod keys;
pub mod prefetch;
mod profile;
mod replay;
mod rtcp;
mod rtp;
mod transform;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use context::{Context, IndexKind, MAX_PACKET_LEN};
pub use error::{Error, PacketKind};
pub use keys::{split_keying_material, MasterKeys};
pub use profile::Profile;

/// Size of the per-SSRC replay window in packets, for SRTP and for SRTCP.
pub const REPLAY_WINDOW: u64 = replay::WINDOW;
