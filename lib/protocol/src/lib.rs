//! The control socket between `switchyard-control` and `switchyard-engine`.
//!
//! The control daemon programs the engine (the data plane) over a Unix stream socket. Both daemons link
//! this crate, so the two sides cannot disagree about the bytes:
//!
//! ```text
//!  frame   = length:u32be  body            (length counts the body; at most MAX_FRAME)
//!  body    = kind:u8  id:u32be  tag:u8  payload
//!  kind    = 1 request | 2 reply | 3 event
//! ```
//!
//! Every request carries an id and gets exactly one reply with the same id; events (DTLS records punted
//! up from a transport, ICE bindings) have id 0. The first request on a connection must be
//! [`Request::Hello`] carrying [`VERSION`]; the engine refuses any other version with
//! [`ErrorCode::VersionMismatch`]. A frame that cannot be decoded gets an [`ErrorCode::BadFrame`] or
//! [`ErrorCode::UnknownMessage`] reply and the connection carries on.
//!
//! Vocabulary (shared with the engine and control daemon): a **transport** is one participant's
//! bundled ICE/DTLS/SRTP connection, living on one **worker** (a pinned thread with its own UDP port); a
//! **publisher** transport sends a stream identified by its **SSRC**; a **subscriber** transport
//! receives a copy of it.
#![warn(unreachable_pub, missing_docs)]

mod client;
mod codec;
mod error;
mod frame;
mod message;

pub use client::{ClientError, EngineClient};
pub use codec::{Reader, Writer};
pub use error::{DecodeError, ErrorCode};
pub use frame::{Frame, FrameKind, FrameReader, MAX_FRAME};
pub use message::{
    EngineStats, Event, HeaderExtIds, KeySalt, Layer, LatencySummary, Reply, Request, TrackKind,
    TransportId, TransportInfo, WorkerInfo, WorkerStats, FB_FIR, FB_NACK, FB_PLI, FB_REMB, FB_TWCC,
    OUT_EXT_AUDIO_LEVEL, OUT_EXT_TWCC, OUT_EXT_UNUSED, SRTP_RTCP_OUTBOUND, SRTP_RTP_INBOUND,
    SRTP_RTP_OUTBOUND,
};

/// Version of the control protocol. Bumped on any change to the frames or messages; both daemons refuse
/// to talk across a mismatch rather than misread each other.
pub const VERSION: u16 = 4;
