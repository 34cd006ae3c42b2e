//! The crate's single error type.

use crate::attributes::AttrType;

/// Everything that can go wrong while parsing or writing a STUN message.
///
/// Parse errors describe why a datagram is not a well-formed STUN message;
/// write errors describe why the caller's buffer or arguments cannot produce
/// one. The type is `Copy` and carries no heap data so it can be returned on
/// the per-packet path without cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The datagram is shorter than the fixed 20-byte STUN header.
    #[error("datagram of {len} bytes is shorter than the 20-byte STUN header")]
    TooShort {
        /// Length of the datagram.
        len: usize,
    },
    /// The two most significant bits of the message type are not zero, so
    /// this is some other protocol (RTP, DTLS, ...) sharing the port.
    #[error("first two bits of the message type are not zero (type {0:#06x})")]
    NotStun(u16),
    /// The magic cookie is not 0x2112A442 (this is not an RFC 5389+ message).
    #[error("magic cookie is {0:#010x}, expected 0x2112a442")]
    BadMagicCookie(u32),
    /// The header's message length is not a multiple of four.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(u16),
    /// The header's message length does not match the datagram.
    #[error("header says {header} bytes of attributes but the datagram carries {actual}")]
    LengthMismatch {
        /// Attribute length announced by the header.
        header: usize,
        /// Attribute bytes actually present after the header.
        actual: usize,
    },
    /// An attribute's header or (padded) value runs past the end of the message.
    #[error("attribute at byte offset {offset} runs past the end of the message")]
    TruncatedAttribute {
        /// Byte offset of the attribute header within the message.
        offset: usize,
    },
    /// The output buffer cannot hold the message being written.
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the message needs so far.
        needed: usize,
        /// Size of the caller's buffer.
        available: usize,
    },
    /// An attribute value does not fit the 16-bit attribute length field.
    #[error("attribute value of {0} bytes exceeds the 65535-byte limit")]
    AttributeTooLong(usize),
    /// The message would exceed the 16-bit message length field.
    #[error("message body of {0} bytes exceeds the 65535-byte limit")]
    MessageTooLong(usize),
    /// MESSAGE-INTEGRITY was requested with an empty key, which would
    /// authenticate nothing.
    #[error("message integrity key is empty")]
    EmptyKey,
    /// An ERROR-CODE outside 300..=699 (the range RFC 8489 allows).
    #[error("error code {0} is outside 300..=699")]
    InvalidErrorCode(u16),
    /// An ERROR-CODE reason phrase longer than the 763 bytes RFC 8489 allows.
    #[error("error reason phrase of {0} bytes exceeds 763 bytes")]
    ReasonTooLong(usize),
    /// A Binding response was asked for, but the message being answered is
    /// not a Binding request.
    #[error("message being answered is not a Binding request")]
    NotBindingRequest,
    /// A Binding response was expected but the message is something else.
    #[error("message is not a Binding success or error response")]
    NotBindingResponse,
    /// The response does not belong to the transaction we sent.
    #[error("response transaction id does not match the request")]
    TransactionMismatch,
    /// The peer answered with a Binding error response.
    #[error("peer answered with STUN error {code}")]
    ErrorResponse {
        /// The ERROR-CODE number (0 if the attribute was absent or malformed).
        code: u16,
    },
    /// A required attribute is absent or its value is malformed.
    #[error("attribute {0:?} is missing or malformed")]
    MissingAttribute(AttrType),
    /// A Binding request cannot claim both ICE roles at once.
    #[error("binding request sets both ICE-CONTROLLING and ICE-CONTROLLED")]
    ConflictingRoles,
}
