use std::fmt;

/// Why a frame or message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field it needs.
    #[error("message truncated: needed {needed} more bytes for {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The message tag is not one this version knows.
    #[error("unknown {kind} type {tag}")]
    UnknownTag {
        /// "request", "reply" or "event".
        kind: &'static str,
        /// The tag byte received.
        tag: u8,
    },
    /// The frame kind byte is not request, reply or event.
    #[error("unknown frame kind {0}")]
    UnknownFrameKind(u8),
    /// A field holds a value outside its range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
    /// Bytes were left over after the message.
    #[error("{0} unexpected trailing bytes")]
    Trailing(usize),
    /// A frame announced a length over [`crate::MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// Error codes carried by [`crate::Reply::Error`], so a client can act on them without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame could not be decoded.
    BadFrame = 1,
    /// The message type is unknown to this side.
    UnknownMessage = 2,
    /// Hello carried a protocol version this side does not speak.
    VersionMismatch = 3,
    /// A request arrived before Hello.
    HelloFirst = 4,
    /// The request names a transport the engine does not have.
    UnknownTransport = 5,
    /// The request names a worker the engine does not have.
    UnknownWorker = 6,
    /// The transport id or ICE ufrag is already in use.
    Duplicate = 7,
    /// A field is well-formed but not acceptable (wrong key length, unknown SRTP profile, ...).
    Invalid = 8,
    /// The engine failed to carry out a valid request.
    Internal = 9,
    /// A limit was reached (subscribers per stream, transports per worker, ...).
    LimitReached = 10,
    /// The request names a track the publisher has not declared (`AddTrack`).
    UnknownTrack = 11,
}

impl ErrorCode {
    /// The code for a wire value; unknown values map to `Internal` so a newer peer's code still reads.
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            1 => ErrorCode::BadFrame,
            2 => ErrorCode::UnknownMessage,
            3 => ErrorCode::VersionMismatch,
            4 => ErrorCode::HelloFirst,
            5 => ErrorCode::UnknownTransport,
            6 => ErrorCode::UnknownWorker,
            7 => ErrorCode::Duplicate,
            8 => ErrorCode::Invalid,
            10 => ErrorCode::LimitReached,
            11 => ErrorCode::UnknownTrack,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
