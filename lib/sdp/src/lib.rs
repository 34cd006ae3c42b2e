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
//! # Header extensions, feedback and simulcast
//!
//! On the publish connection the answer takes the offer's ids for the header extensions the
//! engine reads (mid, rid, repaired rid, audio level, transport-wide-cc; [`ExtIds`] in
//! [`PublishAnswer::ext`]) and declines the others; keeps the feedback the engine gives publishers
//! (`nack`, `nack pli`, `ccm fir`, and `transport-cc` when the transport-wide-cc extension is
//! accepted; [`PublishedTrack::feedback`]); takes one codec per m-line, so no RTX, RED or FEC
//! (libwebrtc then retransmits NACKed packets on the media SSRC); and receives rid simulcast
//! (`a=rid:<rid> send` + `a=simulcast:send`, at most 3 layers, lowest first) with no SSRC in the
//! SDP: the engine learns each layer's SSRC from the mid and rid extensions, which a simulcast
//! m-line must therefore negotiate.
//!
//! On the subscribe connection the engine sends each track as one stream with its own SSRC and
//! rewrites the header extensions to fixed ids, so the offer declares exactly those
//! ([`SUBSCRIBE_EXT_AUDIO_LEVEL`], [`SUBSCRIBE_EXT_TWCC`]), one `a=ssrc` per track and no rids,
//! and the feedback the engine answers itself (NACK from its cache, PLI/FIR, transport-cc and
//! goog-remb for its bandwidth estimate), whatever the publisher negotiated.
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
pub use ext::{
    feedback, ExtIds, CLIENT_EXT_IDS, FB_FIR, FB_NACK, FB_PLI, FB_REMB, FB_TWCC,
    SUBSCRIBE_EXT_AUDIO_LEVEL, SUBSCRIBE_EXT_TWCC, URI_AUDIO_LEVEL, URI_MID, URI_REPAIRED_RID,
    URI_RID, URI_TWCC,
};
pub use model::{
    Candidate, Codec, Direction, Extmap, Fingerprint, Group, Media, MediaKind, Origin,
    SessionDescription, Setup, SsrcGroup, SsrcInfo,
};
pub use publish::{answer_publish, PublishAnswer, PublishedTrack};
pub use subscribe::{check_subscribe_answer, offer_subscribe, SubscribeSlot};
pub use transport::{remote_transport, LocalTransport, RemoteTransport};
