//! SDP for Switchyard: parsing and writing session descriptions (the RFC 8866 / RFC 8829 subset
//! WebRTC endpoints use) and the offer/answer rules of the SFU's two connections per participant.
//!
//! `switchyard-control` uses it to answer a participant's **publish** offer ([`answer_publish`]:
//! ICE-lite, DTLS server, one codec per m-line, the accepted tracks as [`PublishedTrack`]s), to
//! offer the other participants' tracks on the **subscribe** connection ([`offer_subscribe`] over
//! stable [`SubscribeSlot`]s) and to check the browser's answer ([`check_subscribe_answer`]). The
//! load generator uses the client side: [`offer_publish_client`] and [`answer_subscribe_client`],
//! and [`remote_transport`] to read the server's ICE/DTLS parameters. Both read SDP with
//! [`SessionDescription::parse`] into the model of [`model`] and write it with
//! [`SessionDescription::to_sdp`] (CRLF).
//!
//! Everything is a pure function: no I/O, no clock, no randomness (the caller supplies
//! credentials, fingerprint, candidate and session ids in [`LocalTransport`]). No input panics;
//! errors are [`Error`]s whose messages say which line or m-line is wrong and what the server
//! needs instead, fit to show to whoever produced the SDP. See `docs/signaling.md` for the
//! session model.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
mod ext;
pub mod model;
mod parse;
mod publish;
mod simulcast;
mod subscribe;
mod transport;
mod write;

pub use client::{answer_subscribe_client, offer_publish_client, ClientTrack};
pub use error::Error;
pub use model::{
    Candidate, Codec, Direction, Extmap, Fingerprint, Group, Media, MediaKind, Origin,
    SessionDescription, Setup, SsrcGroup, SsrcInfo,
};
pub use ext::{
    feedback, ExtIds, CLIENT_EXT_IDS, FB_FIR, FB_NACK, FB_PLI, FB_REMB, FB_TWCC,
    SUBSCRIBE_EXT_AUDIO_LEVEL, SUBSCRIBE_EXT_TWCC, URI_AUDIO_LEVEL, URI_MID, URI_REPAIRED_RID,
    URI_RID, URI_TWCC,
};
pub use publish::{answer_publish, PublishAnswer, PublishedTrack};
pub use subscribe::{check_subscribe_answer, offer_subscribe, SubscribeSlot};
pub use transport::{remote_transport, LocalTransport, RemoteTransport};
