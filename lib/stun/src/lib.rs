//! Zero-allocation STUN (RFC 8489) for Switchyard's ICE handling.
//!
//! The engine's per-packet path uses it as an ICE-lite server: it demuxes
//! datagrams with [`is_stun`], parses connectivity checks with
//! [`Message::parse`], authenticates them with
//! [`Message::verify_integrity`] (short-term credentials: the key is the
//! server's ICE password) and answers with [`write_binding_success`] or
//! [`write_binding_error`]. The load generator and tests use the client side:
//! [`BindingRequest`] writes a full ICE check, [`write_plain_binding_request`]
//! a NAT-discovery request, and [`binding_response_address`] reads the
//! answer.
//!
//! Nothing here allocates: parsing hands out views borrowing the datagram,
//! writers fill a caller's `&mut [u8]` and return the length, and HMAC-SHA1 /
//! CRC-32 are fed incrementally with a patched copy of the 20-byte header.
//! The crate is `no_std` without `alloc`, which makes that a compile-time
//! guarantee. No input panics; malformed data yields [`Error`] or `None`.
//!
//! Attribute handling is generic ([`AttrType`] constants, the [`Attributes`]
//! iterator, [`MessageWriter`]); TURN (RFC 8656) adds its methods, attribute
//! types and error codes as constants, typed accessors on [`Message`]
//! (LIFETIME, XOR-PEER-ADDRESS, CHANNEL-NUMBER, DATA, ...), ChannelData
//! framing and the Send/Data indication writers (`turn.rs`), and
//! [`long_term_key`] for its long-term credentials. The TURN server itself
//! (allocations, permissions, relaying) lives in the engine.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attributes;
mod binding;
mod error;
mod fingerprint;
mod integrity;
mod message;
mod turn;

pub use attributes::{
    decode_address, decode_xor_address, encode_xor_address, padded_len, AttrType, Attributes,
    ErrorCode, MAX_ADDRESS_LEN,
};
pub use binding::{
    binding_response_address, split_username, write_binding_error, write_binding_success,
    write_plain_binding_request, BindingRequest,
};
pub use error::Error;
pub use fingerprint::FINGERPRINT_XOR;
pub use integrity::{long_term_key, INTEGRITY_LEN};
pub use message::{
    is_stun, Class, Message, MessageType, MessageWriter, Method, HEADER_LEN, MAGIC_COOKIE,
};
pub use turn::{
    is_channel_data, parse_channel_data, write_channel_data, write_channel_data_header,
    write_data_indication_with, write_send_indication, CHANNEL_DATA_HEADER_LEN, CHANNEL_MAX,
    CHANNEL_MIN, FAMILY_IPV4, FAMILY_IPV6, TRANSPORT_UDP,
};
