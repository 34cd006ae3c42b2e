//! DTLS-SRTP handshakes (RFC 5764) over datagrams handed in and out by the caller.
//!
//! In Switchyard the engine owns the UDP sockets and never runs DTLS: it punts every DTLS
//! record (first byte 20..=63, RFC 7983) arriving from a transport's ICE-verified address to
//! the control daemon, which feeds it to that transport's [`Session`] with [`Session::feed`].
//! Whatever DTLS wants to send comes out of the session's `send` callback and goes back to the
//! engine, which sends it to that address. When [`Session::established`] yields an
//! [`SrtpExport`], the control daemon installs the SRTP keys in the engine. The load generator
//! and tests use the same type in the [`Role::Client`] role over their own UDP sockets.
//!
//! The daemon has one [`Identity`] (an ECDSA P-256 self-signed certificate) whose
//! [`Identity::fingerprint`] goes in every SDP answer; each session checks the peer's
//! certificate against the fingerprint from the peer's SDP instead of a CA chain.
//!
//! The DTLS implementation is the webrtc-rs `dtls` crate (0.17 series), which is async
//! (tokio): sessions must be started inside a tokio runtime, and each one runs as a few tasks
//! on it that stop when the session is closed or dropped. Both SRTP profiles browsers offer
//! are negotiated (AEAD_AES_128_GCM preferred, then AES_CM_128_HMAC_SHA1_80) and the extended
//! master secret (RFC 7627) is required.
//!
//! ```no_run
//! # async fn demo(remote_fingerprint: &str) -> Result<(), switchyard_dtls::Error> {
//! use std::time::Duration;
//! use switchyard_dtls::{Identity, Role, Session};
//!
//! let identity = Identity::generate()?;
//! println!("a=fingerprint:sha-256 {}", identity.fingerprint());
//! let session = Session::start(Role::Server, &identity, remote_fingerprint, |datagram| {
//!     // hand `datagram` to the engine for sending to the peer
//!     let _ = datagram;
//! });
//! // for each datagram the engine punts: session.feed(datagram);
//! let keys = session.established(Duration::from_secs(10)).await?;
//! println!("profile {:#06x}: {} bytes of keying material", keys.profile_id, keys.keying_material.len());
//! session.close().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod conn;
mod error;
mod identity;
mod session;

pub use error::Error;
pub use identity::{fingerprint_of, Identity};
pub use session::{Role, Session, SessionOptions, SrtpExport, SrtpProfile};
