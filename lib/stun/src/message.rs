//! The STUN message: header constants, message type encoding, the borrowed
//! [`Message`] view produced by parsing and the [`MessageWriter`] that builds
//! messages in a caller's buffer.

use core::fmt;
use core::net::SocketAddr;

use crate::attributes::{self, padded_len, AttrType, Attributes, ErrorCode, MAX_ADDRESS_LEN};
use crate::error::Error;
use crate::fingerprint::{self, FINGERPRINT_ATTR_LEN};
use crate::integrity::{self, INTEGRITY_ATTR_LEN, INTEGRITY_LEN};

/// The fixed magic cookie of RFC 5389+ messages (bytes 4..8 of the header).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Length of the fixed STUN header: type, length, cookie, transaction id.
pub const HEADER_LEN: usize = 20;

/// Cheap check whether a datagram looks like STUN, for demultiplexing it
/// from RTP/RTCP/DTLS on a shared port.
///
/// Checks the first byte is 0..=3 (the two leading zero bits; RFC 7983), the
/// magic cookie, and that the header length is a multiple of 4 matching the
/// datagram. It does not walk attributes; [`Message::parse`] does that.
pub fn is_stun(buf: &[u8]) -> bool {
    match buf {
        [b0, _, l0, l1, c0, c1, c2, c3, ..] if buf.len() >= HEADER_LEN => {
            let len = usize::from(u16::from_be_bytes([*l0, *l1]));
            *b0 <= 3
                && u32::from_be_bytes([*c0, *c1, *c2, *c3]) == MAGIC_COOKIE
                && len.is_multiple_of(4)
                && len == buf.len() - HEADER_LEN
        }
        _ => false,
    }
}

/// The class of a STUN message (the two C bits of the message type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request = 0b00,
    /// An indication: fire-and-forget, no response.
    Indication = 0b01,
    /// A success response to a request.
    SuccessResponse = 0b10,
    /// An error response to a request; carries ERROR-CODE.
    ErrorResponse = 0b11,
}

/// A STUN method (the 12 M bits of the message type).
///
/// A newtype so TURN's methods (Allocate, Refresh, Send, ...) can be added as
/// constants without touching the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489): the only method ICE and NAT discovery use.
    pub const BINDING: Self = Self(0x001);
    /// Allocate (RFC 8656): create a TURN allocation (request/response only).
    pub const ALLOCATE: Self = Self(0x003);
    /// Refresh (RFC 8656): extend or delete an allocation (request/response only).
    pub const REFRESH: Self = Self(0x004);
    /// Send (RFC 8656): client data for a peer (indication only).
    pub const SEND: Self = Self(0x006);
    /// Data (RFC 8656): peer data for the client (indication only).
    pub const DATA: Self = Self(0x007);
    /// CreatePermission (RFC 8656): install or refresh permissions (request/response only).
    pub const CREATE_PERMISSION: Self = Self(0x008);
    /// ChannelBind (RFC 8656): bind a channel number to a peer (request/response only).
    pub const CHANNEL_BIND: Self = Self(0x009);

    /// A method from its 12-bit number; higher bits are dropped because they
    /// cannot be encoded in the message type.
    pub const fn new(bits: u16) -> Self {
        Self(bits & 0x0FFF)
    }

    /// The 12-bit method number.
    pub const fn bits(self) -> u16 {
        self.0
    }
}

/// A message type: class plus method, as packed into the first 14 bits of
/// the header (RFC 8489 §5 interleaves the class bits into the method bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// Request, indication, success or error response.
    pub class: Class,
    /// The method, e.g. [`Method::BINDING`].
    pub method: Method,
}

impl MessageType {
    /// Binding request (0x0001).
    pub const BINDING_REQUEST: Self = Self::new(Class::Request, Method::BINDING);
    /// Binding success response (0x0101).
    pub const BINDING_SUCCESS: Self = Self::new(Class::SuccessResponse, Method::BINDING);
    /// Binding error response (0x0111).
    pub const BINDING_ERROR: Self = Self::new(Class::ErrorResponse, Method::BINDING);

    /// A message type from its class and method.
    pub const fn new(class: Class, method: Method) -> Self {
        Self { class, method }
    }

    /// Decodes the 16-bit type field; the top two bits are ignored (the
    /// parser has already rejected messages where they are set).
    pub const fn from_bits(t: u16) -> Self {
        let class = match ((t >> 4) & 0b01) | ((t >> 7) & 0b10) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        };
        let method = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80);
        Self {
            class,
            method: Method(method),
        }
    }

    /// Encodes into the 16-bit type field: M0-3, C0, M4-6, C1, M7-11.
    pub const fn bits(self) -> u16 {
        let m = self.method.0;
        let c = self.class as u16;
        (m & 0x000F)
            | ((c & 0b01) << 4)
            | ((m & 0x0070) << 1)
            | ((c & 0b10) << 7)
            | ((m & 0x0F80) << 2)
    }
}

/// A parsed STUN message borrowing the datagram it came from.
///
/// Construction via [`Message::parse`] validates the header and that every
/// attribute TLV fits, so the accessors below never fail on structure; they
/// return `None` only when an attribute is absent or its value is malformed.
/// Lookups by type ([`Message::attr`] and the helpers built on it) ignore
/// attributes after MESSAGE-INTEGRITY, except FINGERPRINT and
/// MESSAGE-INTEGRITY-SHA256, because RFC 8489 §14.5 says they are not
/// covered by the MAC and must be ignored — otherwise an on-path attacker
/// could append e.g. a USE-CANDIDATE to an authenticated check.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    msg_type: MessageType,
    /// Offset of the first MESSAGE-INTEGRITY attribute header.
    integrity: Option<usize>,
    /// End of the attributes that lookups consider (see the type docs).
    protected_end: usize,
    /// Offset of the first FINGERPRINT attribute header.
    fingerprint: Option<usize>,
}

impl<'a> Message<'a> {
    /// Parses and validates a datagram as one STUN message.
    ///
    /// Rejects a short buffer, non-zero leading type bits, a wrong magic
    /// cookie, a length that is not a multiple of 4 or does not match the
    /// datagram, and attributes whose padded value runs past the end.
    /// Padding bytes are not required to be zero (RFC 5769's own vectors use
    /// spaces). Costs one linear pass over the attribute headers.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let header: &[u8; HEADER_LEN] =
            match buf.get(..HEADER_LEN).map(<&[u8; HEADER_LEN]>::try_from) {
                Some(Ok(h)) => h,
                _ => return Err(Error::TooShort { len: buf.len() }),
            };
        let raw_type = u16::from_be_bytes([header[0], header[1]]);
        if raw_type & 0xC000 != 0 {
            return Err(Error::NotStun(raw_type));
        }
        let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if cookie != MAGIC_COOKIE {
            return Err(Error::BadMagicCookie(cookie));
        }
        let length = u16::from_be_bytes([header[2], header[3]]);
        if !length.is_multiple_of(4) {
            return Err(Error::UnalignedLength(length));
        }
        let actual = buf.len() - HEADER_LEN;
        if usize::from(length) != actual {
            return Err(Error::LengthMismatch {
                header: usize::from(length),
                actual,
            });
        }

        let mut integrity = None;
        let mut protected_end = buf.len();
        let mut fingerprint = None;
        let mut offset = HEADER_LEN;
        while offset < buf.len() {
            let (ty, len) = match buf.get(offset..offset + 4) {
                Some(&[t0, t1, l0, l1]) => (
                    AttrType(u16::from_be_bytes([t0, t1])),
                    usize::from(u16::from_be_bytes([l0, l1])),
                ),
                _ => return Err(Error::TruncatedAttribute { offset }),
            };
            let end = offset + 4 + padded_len(len);
            if end > buf.len() {
                return Err(Error::TruncatedAttribute { offset });
            }
            if ty == AttrType::MESSAGE_INTEGRITY && integrity.is_none() {
                integrity = Some(offset);
                protected_end = end;
            } else if ty == AttrType::FINGERPRINT && fingerprint.is_none() {
                fingerprint = Some(offset);
            }
            offset = end;
        }

        Ok(Self {
            buf,
            msg_type: MessageType::from_bits(raw_type),
            integrity,
            protected_end,
            fingerprint,
        })
    }

    /// The whole datagram this message was parsed from.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Class and method.
    pub fn msg_type(&self) -> MessageType {
        self.msg_type
    }

    /// Request, indication, success or error response.
    pub fn class(&self) -> Class {
        self.msg_type.class
    }

    /// The method, e.g. [`Method::BINDING`].
    pub fn method(&self) -> Method {
        self.msg_type.method
    }

    /// The 96-bit transaction id that pairs a response with its request.
    pub fn transaction_id(&self) -> &'a [u8; 12] {
        // `parse` guarantees at least HEADER_LEN bytes; the fallback keeps
        // this panic-free without an unwrap should that ever change.
        match self.buf.get(8..HEADER_LEN).map(<&[u8; 12]>::try_from) {
            Some(Ok(id)) => id,
            _ => &[0; 12],
        }
    }

    /// All attributes in wire order, including duplicates and any after
    /// MESSAGE-INTEGRITY (use [`Message::attr`] for authenticated lookups).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.buf.get(HEADER_LEN..).unwrap_or(&[]))
    }

    /// Value of the first attribute of type `ty`, ignoring unauthenticated
    /// attributes after MESSAGE-INTEGRITY (see the type docs).
    pub fn attr(&self, ty: AttrType) -> Option<&'a [u8]> {
        let end = match ty {
            AttrType::FINGERPRINT | AttrType::MESSAGE_INTEGRITY_SHA256 => self.buf.len(),
            _ => self.protected_end,
        };
        let body = self.buf.get(HEADER_LEN..end).unwrap_or(&[]);
        Attributes::new(body)
            .find(|(t, _)| *t == ty)
            .map(|(_, v)| v)
    }

    /// First attribute of type `ty` decoded as a big-endian integer of
    /// exactly `N` bytes.
    fn attr_array<const N: usize>(&self, ty: AttrType) -> Option<[u8; N]> {
        self.attr(ty)?.try_into().ok()
    }

    /// USERNAME; for an ICE check `"<receiver ufrag>:<sender ufrag>"`, see
    /// [`split_username`](crate::split_username).
    pub fn username(&self) -> Option<&'a [u8]> {
        self.attr(AttrType::USERNAME)
    }

    /// PRIORITY: the priority the checking agent would give a peer-reflexive
    /// candidate learned from this check.
    pub fn priority(&self) -> Option<u32> {
        self.attr_array(AttrType::PRIORITY).map(u32::from_be_bytes)
    }

    /// Whether USE-CANDIDATE is present, i.e. the controlling agent
    /// nominates the pair this check was sent on.
    pub fn use_candidate(&self) -> bool {
        self.attr(AttrType::USE_CANDIDATE).is_some()
    }

    /// The tie-breaker of ICE-CONTROLLING, if the sender claims that role.
    pub fn ice_controlling(&self) -> Option<u64> {
        self.attr_array(AttrType::ICE_CONTROLLING)
            .map(u64::from_be_bytes)
    }

    /// The tie-breaker of ICE-CONTROLLED, if the sender claims that role.
    pub fn ice_controlled(&self) -> Option<u64> {
        self.attr_array(AttrType::ICE_CONTROLLED)
            .map(u64::from_be_bytes)
    }

    /// XOR-MAPPED-ADDRESS decoded with this message's transaction id: the
    /// address the server saw the request come from.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        attributes::decode_xor_address(
            self.attr(AttrType::XOR_MAPPED_ADDRESS)?,
            self.transaction_id(),
        )
    }

    /// Plain MAPPED-ADDRESS, still sent by some pre-RFC 5389 servers.
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        attributes::decode_address(self.attr(AttrType::MAPPED_ADDRESS)?)
    }

    /// ERROR-CODE of an error response.
    pub fn error_code(&self) -> Option<ErrorCode<'a>> {
        ErrorCode::decode(self.attr(AttrType::ERROR_CODE)?)
    }

    /// SOFTWARE, the peer's free-form self-description.
    pub fn software(&self) -> Option<&'a [u8]> {
        self.attr(AttrType::SOFTWARE)
    }

    /// REALM (long-term credentials).
    pub fn realm(&self) -> Option<&'a [u8]> {
        self.attr(AttrType::REALM)
    }

    /// NONCE (long-term credentials).
    pub fn nonce(&self) -> Option<&'a [u8]> {
        self.attr(AttrType::NONCE)
    }

    /// The attributes that lookups consider, in wire order: everything up to
    /// and including MESSAGE-INTEGRITY (see the type docs). For attributes
    /// that may repeat, such as TURN's XOR-PEER-ADDRESS in CreatePermission.
    pub fn protected_attributes(&self) -> Attributes<'a> {
        Attributes::new(self.buf.get(HEADER_LEN..self.protected_end).unwrap_or(&[]))
    }

    /// Whether the message carries MESSAGE-INTEGRITY at all; lets a server
    /// tell "400, credentials missing" from "401, credentials wrong".
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether the message carries a FINGERPRINT attribute.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// Checks FINGERPRINT: it must be the last attribute, 4 bytes long, and
    /// equal the CRC-32 of everything before it XOR 0x5354554e.
    ///
    /// Because it must be last, the header length already ends after it, so
    /// the CRC runs directly over the received bytes.
    pub fn verify_fingerprint(&self) -> bool {
        let Some(offset) = self.fingerprint else {
            return false;
        };
        if offset + FINGERPRINT_ATTR_LEN != self.buf.len() {
            return false;
        }
        match (
            self.buf.get(offset + 2..offset + 4),
            self.buf.get(offset + 4..),
        ) {
            (Some(&[0, 4]), Some(&[a, b, c, d])) => {
                let prefix = self.buf.get(..offset).unwrap_or(&[]);
                fingerprint::compute(prefix) == u32::from_be_bytes([a, b, c, d])
            }
            _ => false,
        }
    }

    /// Checks MESSAGE-INTEGRITY with `key`: HMAC-SHA1 over the header (with
    /// the length patched to end after MESSAGE-INTEGRITY) and the attributes
    /// before it, compared in constant time.
    ///
    /// For ICE the key is the receiving agent's password bytes (short-term
    /// credential); for long-term credentials use
    /// [`long_term_key`](crate::long_term_key). An empty key always fails, so
    /// a missing password in configuration cannot turn into "accept all".
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(offset) = self.integrity else {
            return false;
        };
        if key.is_empty() {
            return false;
        }
        let value = self.buf.get(offset + 4..offset + INTEGRITY_ATTR_LEN);
        let declared = self.buf.get(offset + 2..offset + 4);
        match (declared, value) {
            (Some(&[0, 20]), Some(value)) => integrity::verify(self.buf, offset, key, value),
            _ => false,
        }
    }
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hand-written impl so logs show the structure rather than a dump
        // of raw bytes (which would also include MACs).
        struct Attrs<'a>(Attributes<'a>);
        impl fmt::Debug for Attrs<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.clone().map(|(t, v)| (t, v.len())))
                    .finish()
            }
        }
        f.debug_struct("Message")
            .field("type", &self.msg_type)
            .field("transaction_id", self.transaction_id())
            .field("len", &self.buf.len())
            .field("attributes", &Attrs(self.attributes()))
            .finish()
    }
}

/// Builds a STUN message in a caller-provided buffer, keeping the header's
/// length field current after every attribute.
///
/// This is the one place that knows TLV layout, padding and the ordering
/// rules of MESSAGE-INTEGRITY and FINGERPRINT; the Binding helpers (and TURN
/// later) only choose which attributes to add. Each `add_*` checks space up
/// front and fails with [`Error::BufferTooSmall`] rather than panicking;
/// after an error the buffer contents are unspecified.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message of type `msg_type` with `transaction_id` in `buf`.
    pub fn new(
        buf: &'b mut [u8],
        msg_type: MessageType,
        transaction_id: &[u8; 12],
    ) -> Result<Self, Error> {
        let available = buf.len();
        let header = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall {
            needed: HEADER_LEN,
            available,
        })?;
        header[0..2].copy_from_slice(&msg_type.bits().to_be_bytes());
        header[2..4].copy_from_slice(&0u16.to_be_bytes());
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(transaction_id);
        Ok(Self {
            buf,
            len: HEADER_LEN,
        })
    }

    /// Bytes written so far (header included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a writer holds at least the header. Present because
    /// clippy expects `is_empty` next to `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reserves an attribute of `value_len` bytes: writes its header and
    /// zero padding, updates the message length, and returns the offset of
    /// the value for the caller to fill.
    fn reserve(&mut self, ty: AttrType, value_len: usize) -> Result<usize, Error> {
        let wire_len = u16::try_from(value_len).map_err(|_| Error::AttributeTooLong(value_len))?;
        let end = self.len + 4 + padded_len(value_len);
        let body_len = end - HEADER_LEN;
        let body_len = u16::try_from(body_len).map_err(|_| Error::MessageTooLong(body_len))?;
        let available = self.buf.len();
        let attr = self
            .buf
            .get_mut(self.len..end)
            .ok_or(Error::BufferTooSmall {
                needed: end,
                available,
            })?;
        attr[0..2].copy_from_slice(&ty.0.to_be_bytes());
        attr[2..4].copy_from_slice(&wire_len.to_be_bytes());
        // Zero the padding: receivers must ignore it, but leaking stale
        // buffer contents onto the wire would be a (tiny) information leak.
        attr[4 + value_len..].fill(0);
        self.buf[2..4].copy_from_slice(&body_len.to_be_bytes());
        let value_offset = self.len + 4;
        self.len = end;
        Ok(value_offset)
    }

    /// Appends an attribute with a raw value (padding added here).
    pub fn add_attr(&mut self, ty: AttrType, value: &[u8]) -> Result<(), Error> {
        let at = self.reserve(ty, value.len())?;
        self.buf[at..at + value.len()].copy_from_slice(value);
        Ok(())
    }

    /// Appends an attribute with a 4-byte big-endian value (e.g. PRIORITY).
    pub fn add_u32(&mut self, ty: AttrType, value: u32) -> Result<(), Error> {
        self.add_attr(ty, &value.to_be_bytes())
    }

    /// Appends an attribute with an 8-byte big-endian value (e.g. ICE-CONTROLLING).
    pub fn add_u64(&mut self, ty: AttrType, value: u64) -> Result<(), Error> {
        self.add_attr(ty, &value.to_be_bytes())
    }

    /// Appends an XOR-encoded address attribute (XOR-MAPPED-ADDRESS, and
    /// TURN's XOR-PEER/RELAYED-ADDRESS) using this message's transaction id.
    pub fn add_xor_address(&mut self, ty: AttrType, addr: SocketAddr) -> Result<(), Error> {
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&self.buf[8..HEADER_LEN]);
        let mut value = [0u8; MAX_ADDRESS_LEN];
        let n = attributes::encode_xor_address(addr, &tid, &mut value);
        self.add_attr(ty, &value[..n])
    }

    /// Appends ERROR-CODE with `code` (300..=699) and a reason phrase of at
    /// most 763 bytes, the limits of RFC 8489 §14.8.
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> Result<(), Error> {
        if !(300..=699).contains(&code) {
            return Err(Error::InvalidErrorCode(code));
        }
        if reason.len() > 763 {
            return Err(Error::ReasonTooLong(reason.len()));
        }
        let at = self.reserve(AttrType::ERROR_CODE, 4 + reason.len())?;
        // Range-checked above, so both casts are lossless.
        let value = &mut self.buf[at..at + 4 + reason.len()];
        value[0] = 0;
        value[1] = 0;
        value[2] = (code / 100) as u8;
        value[3] = (code % 100) as u8;
        value[4..].copy_from_slice(reason.as_bytes());
        Ok(())
    }

    /// Appends UNKNOWN-ATTRIBUTES listing `types` (for a 420 response).
    pub fn add_unknown_attributes(&mut self, types: &[AttrType]) -> Result<(), Error> {
        let at = self.reserve(AttrType::UNKNOWN_ATTRIBUTES, types.len() * 2)?;
        for (i, t) in types.iter().enumerate() {
            self.buf[at + 2 * i..at + 2 * i + 2].copy_from_slice(&t.0.to_be_bytes());
        }
        Ok(())
    }

    /// Appends an attribute whose value is `len` bytes that `fill` writes in
    /// place (e.g. TURN's DATA, copied straight from a received datagram).
    pub fn add_attr_with(
        &mut self,
        ty: AttrType,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Error> {
        let at = self.reserve(ty, len)?;
        fill(&mut self.buf[at..at + len]);
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY keyed with `key` (ICE: the password bytes).
    ///
    /// Must come after every attribute it should protect; only FINGERPRINT
    /// may follow. The attribute is reserved first so the header length
    /// already ends after it when the HMAC runs.
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), Error> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let at = self.reserve(AttrType::MESSAGE_INTEGRITY, INTEGRITY_LEN)?;
        let mi_offset = at - 4;
        // Cannot fail: the buffer holds a full header and `mi_offset` lies
        // inside it; the error arm only keeps this path panic-free.
        let mac = integrity::compute(self.buf, mi_offset, key).ok_or(Error::EmptyKey)?;
        self.buf[at..at + INTEGRITY_LEN].copy_from_slice(&mac);
        Ok(())
    }

    /// Appends FINGERPRINT; must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<(), Error> {
        let at = self.reserve(AttrType::FINGERPRINT, 4)?;
        let crc = fingerprint::compute(&self.buf[..at - 4]);
        self.buf[at..at + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Finishes the message and returns its total length in bytes.
    pub fn finish(self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_round_trips_through_bits() {
        assert_eq!(MessageType::BINDING_REQUEST.bits(), 0x0001);
        assert_eq!(MessageType::BINDING_SUCCESS.bits(), 0x0101);
        assert_eq!(MessageType::BINDING_ERROR.bits(), 0x0111);
        assert_eq!(
            MessageType::new(Class::Indication, Method::BINDING).bits(),
            0x0011
        );
        // TURN Allocate (0x003) request and CreatePermission (0x008) success,
        // whose method bits straddle the class bit positions.
        assert_eq!(
            MessageType::new(Class::Request, Method::new(0x003)).bits(),
            0x0003
        );
        assert_eq!(
            MessageType::new(Class::SuccessResponse, Method::new(0x008)).bits(),
            0x0108
        );
        for t in 0..0x3FFFu16 {
            assert_eq!(MessageType::from_bits(t).bits(), t);
        }
    }

    #[test]
    fn is_stun_checks_header_fields() {
        let mut buf = [0u8; 28];
        let n = {
            let mut w =
                MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &[7; 12]).unwrap();
            w.add_u32(AttrType::PRIORITY, 1).unwrap();
            w.finish()
        };
        assert!(is_stun(&buf[..n]));
        assert!(!is_stun(&buf[..n - 4]), "length must match the datagram");
        let mut rtp = buf;
        rtp[0] = 0x80;
        assert!(!is_stun(&rtp));
        let mut cookie = buf;
        cookie[4] ^= 1;
        assert!(!is_stun(&cookie));
        assert!(!is_stun(&buf[..19]));
    }

    #[test]
    fn attributes_after_integrity_are_ignored_by_lookups() {
        let mut buf = [0u8; 128];
        let n = {
            let mut w =
                MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &[1; 12]).unwrap();
            w.add_attr(AttrType::USERNAME, b"a:b").unwrap();
            w.add_message_integrity(b"pw").unwrap();
            w.add_attr(AttrType::USE_CANDIDATE, &[]).unwrap();
            w.add_fingerprint().unwrap();
            w.finish()
        };
        let msg = Message::parse(&buf[..n]).unwrap();
        assert!(msg.verify_integrity(b"pw"));
        assert!(msg.verify_fingerprint());
        assert!(
            !msg.use_candidate(),
            "unauthenticated USE-CANDIDATE must be ignored"
        );
        assert!(msg.attributes().any(|(t, _)| t == AttrType::USE_CANDIDATE));
        assert_eq!(msg.username(), Some(&b"a:b"[..]));
    }

    #[test]
    fn writer_reports_small_buffers() {
        let mut buf = [0u8; 10];
        assert_eq!(
            MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &[0; 12]).unwrap_err(),
            Error::BufferTooSmall {
                needed: 20,
                available: 10
            }
        );
        let mut buf = [0u8; 27];
        let mut w = MessageWriter::new(&mut buf, MessageType::BINDING_REQUEST, &[0; 12]).unwrap();
        assert_eq!(
            w.add_u32(AttrType::PRIORITY, 5).unwrap_err(),
            Error::BufferTooSmall {
                needed: 28,
                available: 27
            }
        );
    }
}
