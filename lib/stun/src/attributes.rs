//! Attribute types, the generic TLV iterator and codecs for the structured
//! attribute values (addresses, ERROR-CODE).
//!
//! Everything here works on raw values (`&[u8]`) so that a new attribute
//! (TURN's LIFETIME, XOR-RELAYED-ADDRESS, ...) needs only a constant and, if
//! it is structured, a codec function — no change to parsing or writing.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::message::MAGIC_COOKIE;

/// A STUN attribute type (the 16-bit "Type" of the TLV).
///
/// A newtype rather than an enum because unknown types must round-trip
/// through the iterator untouched: comprehension-optional ones are ignored and
/// comprehension-required ones reported by the caller. Known types are
/// associated constants; TURN (RFC 8656) will add its own next to them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

impl AttrType {
    /// MAPPED-ADDRESS (RFC 8489), the pre-XOR form kept for old servers.
    pub const MAPPED_ADDRESS: Self = Self(0x0001);
    /// USERNAME (RFC 8489); for ICE `"<receiver ufrag>:<sender ufrag>"`.
    pub const USERNAME: Self = Self(0x0006);
    /// MESSAGE-INTEGRITY (RFC 8489): HMAC-SHA1 over the message.
    pub const MESSAGE_INTEGRITY: Self = Self(0x0008);
    /// ERROR-CODE (RFC 8489).
    pub const ERROR_CODE: Self = Self(0x0009);
    /// UNKNOWN-ATTRIBUTES (RFC 8489), carried by 420 responses.
    pub const UNKNOWN_ATTRIBUTES: Self = Self(0x000A);
    /// CHANNEL-NUMBER (RFC 8656): channel number, then two reserved bytes.
    pub const CHANNEL_NUMBER: Self = Self(0x000C);
    /// LIFETIME (RFC 8656): seconds until the allocation expires.
    pub const LIFETIME: Self = Self(0x000D);
    /// XOR-PEER-ADDRESS (RFC 8656): a peer's address, XOR-encoded.
    pub const XOR_PEER_ADDRESS: Self = Self(0x0012);
    /// DATA (RFC 8656): application data in Send and Data indications.
    pub const DATA: Self = Self(0x0013);
    /// XOR-RELAYED-ADDRESS (RFC 8656): the allocation's relayed transport address.
    pub const XOR_RELAYED_ADDRESS: Self = Self(0x0016);
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656): 0x01 IPv4, 0x02 IPv6.
    pub const REQUESTED_ADDRESS_FAMILY: Self = Self(0x0017);
    /// EVEN-PORT (RFC 8656): ask for an even relay port (R bit: reserve the next one).
    pub const EVEN_PORT: Self = Self(0x0018);
    /// REQUESTED-TRANSPORT (RFC 8656): protocol number (17 = UDP), then three reserved bytes.
    pub const REQUESTED_TRANSPORT: Self = Self(0x0019);
    /// DONT-FRAGMENT (RFC 8656): set DF on relayed datagrams.
    pub const DONT_FRAGMENT: Self = Self(0x001A);
    /// RESERVATION-TOKEN (RFC 8656): 8 bytes naming a relay port held in reserve.
    pub const RESERVATION_TOKEN: Self = Self(0x0022);
    /// REALM (RFC 8489), long-term credentials.
    pub const REALM: Self = Self(0x0014);
    /// NONCE (RFC 8489), long-term credentials.
    pub const NONCE: Self = Self(0x0015);
    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489).
    pub const MESSAGE_INTEGRITY_SHA256: Self = Self(0x001C);
    /// PASSWORD-ALGORITHM (RFC 8489).
    pub const PASSWORD_ALGORITHM: Self = Self(0x001D);
    /// USERHASH (RFC 8489).
    pub const USERHASH: Self = Self(0x001E);
    /// XOR-MAPPED-ADDRESS (RFC 8489): the reflexive transport address.
    pub const XOR_MAPPED_ADDRESS: Self = Self(0x0020);
    /// PRIORITY (RFC 8445): the candidate priority of the checking agent.
    pub const PRIORITY: Self = Self(0x0024);
    /// USE-CANDIDATE (RFC 8445): the controlling agent nominates this pair.
    pub const USE_CANDIDATE: Self = Self(0x0025);
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656): ask for a second, IPv6 relayed address.
    pub const ADDITIONAL_ADDRESS_FAMILY: Self = Self(0x8000);
    /// ADDRESS-ERROR-CODE (RFC 8656).
    pub const ADDRESS_ERROR_CODE: Self = Self(0x8001);
    /// PASSWORD-ALGORITHMS (RFC 8489).
    pub const PASSWORD_ALGORITHMS: Self = Self(0x8002);
    /// ALTERNATE-DOMAIN (RFC 8489).
    pub const ALTERNATE_DOMAIN: Self = Self(0x8003);
    /// SOFTWARE (RFC 8489): free-form agent description.
    pub const SOFTWARE: Self = Self(0x8022);
    /// ALTERNATE-SERVER (RFC 8489).
    pub const ALTERNATE_SERVER: Self = Self(0x8023);
    /// FINGERPRINT (RFC 8489): CRC-32 demultiplexing aid, always last.
    pub const FINGERPRINT: Self = Self(0x8028);
    /// ICE-CONTROLLED (RFC 8445): sender is controlled; value is its tie-breaker.
    pub const ICE_CONTROLLED: Self = Self(0x8029);
    /// ICE-CONTROLLING (RFC 8445): sender is controlling; value is its tie-breaker.
    pub const ICE_CONTROLLING: Self = Self(0x802A);

    /// Whether an agent that does not understand this attribute must reject
    /// the message (types 0x0000..=0x7FFF, RFC 8489 §14).
    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }

    /// The RFC name of a known attribute type, for logs and `Debug`.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::MAPPED_ADDRESS => "MAPPED-ADDRESS",
            Self::USERNAME => "USERNAME",
            Self::MESSAGE_INTEGRITY => "MESSAGE-INTEGRITY",
            Self::ERROR_CODE => "ERROR-CODE",
            Self::UNKNOWN_ATTRIBUTES => "UNKNOWN-ATTRIBUTES",
            Self::CHANNEL_NUMBER => "CHANNEL-NUMBER",
            Self::LIFETIME => "LIFETIME",
            Self::XOR_PEER_ADDRESS => "XOR-PEER-ADDRESS",
            Self::DATA => "DATA",
            Self::XOR_RELAYED_ADDRESS => "XOR-RELAYED-ADDRESS",
            Self::REQUESTED_ADDRESS_FAMILY => "REQUESTED-ADDRESS-FAMILY",
            Self::EVEN_PORT => "EVEN-PORT",
            Self::REQUESTED_TRANSPORT => "REQUESTED-TRANSPORT",
            Self::DONT_FRAGMENT => "DONT-FRAGMENT",
            Self::RESERVATION_TOKEN => "RESERVATION-TOKEN",
            Self::ADDITIONAL_ADDRESS_FAMILY => "ADDITIONAL-ADDRESS-FAMILY",
            Self::ADDRESS_ERROR_CODE => "ADDRESS-ERROR-CODE",
            Self::REALM => "REALM",
            Self::NONCE => "NONCE",
            Self::MESSAGE_INTEGRITY_SHA256 => "MESSAGE-INTEGRITY-SHA256",
            Self::PASSWORD_ALGORITHM => "PASSWORD-ALGORITHM",
            Self::USERHASH => "USERHASH",
            Self::XOR_MAPPED_ADDRESS => "XOR-MAPPED-ADDRESS",
            Self::PRIORITY => "PRIORITY",
            Self::USE_CANDIDATE => "USE-CANDIDATE",
            Self::PASSWORD_ALGORITHMS => "PASSWORD-ALGORITHMS",
            Self::ALTERNATE_DOMAIN => "ALTERNATE-DOMAIN",
            Self::SOFTWARE => "SOFTWARE",
            Self::ALTERNATE_SERVER => "ALTERNATE-SERVER",
            Self::FINGERPRINT => "FINGERPRINT",
            Self::ICE_CONTROLLED => "ICE-CONTROLLED",
            Self::ICE_CONTROLLING => "ICE-CONTROLLING",
            _ => return None,
        })
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "AttrType({:#06x})", self.0),
        }
    }
}

/// Length of an attribute value rounded up to the 4-byte boundary that the
/// next attribute starts on.
pub const fn padded_len(len: usize) -> usize {
    (len + 3) & !3
}

/// Iterator over the attributes of a message body, yielding
/// `(type, value)` with the value borrowed from the message (padding
/// excluded).
///
/// It can be built over any byte slice; it stops at the first TLV that does
/// not fit instead of failing, because bodies reached through
/// [`Message::attributes`](crate::Message::attributes) were already
/// validated by [`Message::parse`](crate::Message::parse), and for raw input
/// stopping early is the only answer that needs no allocation or error plumbing.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    /// Iterates over the TLVs in `body` (the bytes after the 20-byte header).
    pub const fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (AttrType, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (ty, len, rest) = match self.rest {
            [t0, t1, l0, l1, rest @ ..] => (
                AttrType(u16::from_be_bytes([*t0, *t1])),
                usize::from(u16::from_be_bytes([*l0, *l1])),
                rest,
            ),
            _ => {
                self.rest = &[];
                return None;
            }
        };
        // The final attribute of a well-formed message is always padded
        // (the message length is a multiple of 4), but a raw slice may end
        // right after the value: accept that rather than drop the attribute.
        let value = rest.get(..len);
        let after = rest.get(padded_len(len)..).unwrap_or(&[]);
        match value {
            Some(value) => {
                self.rest = after;
                Some((ty, value))
            }
            None => {
                self.rest = &[];
                None
            }
        }
    }
}

const FAMILY_IPV4: u8 = 0x01;
const FAMILY_IPV6: u8 = 0x02;

/// Largest encoded (XOR-)MAPPED-ADDRESS value: the IPv6 form.
pub const MAX_ADDRESS_LEN: usize = 20;

/// Decodes a plain MAPPED-ADDRESS (or ALTERNATE-SERVER) value.
///
/// Returns `None` for an unknown family or a length that does not match it,
/// so a malformed attribute is indistinguishable from an absent one.
pub fn decode_address(value: &[u8]) -> Option<SocketAddr> {
    match value {
        [_, FAMILY_IPV4, p0, p1, a @ ..] if a.len() == 4 => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([*p0, *p1]),
            ))
        }
        [_, FAMILY_IPV6, p0, p1, a @ ..] => {
            let octets: [u8; 16] = a.try_into().ok()?;
            let ip = Ipv6Addr::from(octets);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([*p0, *p1]),
            ))
        }
        _ => None,
    }
}

/// The 16-byte XOR mask for IPv6 addresses: magic cookie then transaction id.
fn xor_mask(transaction_id: &[u8; 12]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(transaction_id);
    mask
}

/// Decodes an XOR-MAPPED-ADDRESS (or TURN's XOR-PEER/RELAYED-ADDRESS) value
/// of the message with `transaction_id`.
///
/// The XOR exists so NATs that rewrite addresses in payloads leave it alone;
/// the port and IPv4 address are XORed with the magic cookie, the IPv6
/// address with cookie || transaction id.
pub fn decode_xor_address(value: &[u8], transaction_id: &[u8; 12]) -> Option<SocketAddr> {
    let mask = xor_mask(transaction_id);
    let port_mask = u16::from_be_bytes([mask[0], mask[1]]);
    match value {
        [_, FAMILY_IPV4, p0, p1, a @ ..] if a.len() == 4 => {
            let ip = Ipv4Addr::new(
                a[0] ^ mask[0],
                a[1] ^ mask[1],
                a[2] ^ mask[2],
                a[3] ^ mask[3],
            );
            let port = u16::from_be_bytes([*p0, *p1]) ^ port_mask;
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        [_, FAMILY_IPV6, p0, p1, a @ ..] => {
            let mut octets: [u8; 16] = a.try_into().ok()?;
            for (o, m) in octets.iter_mut().zip(mask) {
                *o ^= m;
            }
            let port = u16::from_be_bytes([*p0, *p1]) ^ port_mask;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => None,
    }
}

/// Encodes `addr` as an XOR-MAPPED-ADDRESS value into `out` and returns the
/// value length (8 for IPv4, 20 for IPv6).
///
/// Writes into a fixed stack array so callers can hand the result straight
/// to [`MessageWriter::add_attr`](crate::MessageWriter::add_attr).
pub fn encode_xor_address(
    addr: SocketAddr,
    transaction_id: &[u8; 12],
    out: &mut [u8; MAX_ADDRESS_LEN],
) -> usize {
    let mask = xor_mask(transaction_id);
    let port = addr.port() ^ u16::from_be_bytes([mask[0], mask[1]]);
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_IPV4;
            for (i, (o, m)) in ip.octets().into_iter().zip(mask).enumerate() {
                out[4 + i] = o ^ m;
            }
            8
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_IPV6;
            for (i, (o, m)) in ip.octets().into_iter().zip(mask).enumerate() {
                out[4 + i] = o ^ m;
            }
            20
        }
    }
}

/// A decoded ERROR-CODE attribute: the numeric code and the reason phrase.
///
/// The reason stays as bytes because it is UTF-8 only by convention; use
/// [`ErrorCode::reason_str`] when it is to be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The error number, e.g. 401 or 487 (class * 100 + number).
    pub code: u16,
    /// The reason phrase, borrowed from the message.
    pub reason: &'a [u8],
}

impl<'a> ErrorCode<'a> {
    /// 400 Bad Request: malformed request (e.g. missing USERNAME or MI).
    pub const BAD_REQUEST: u16 = 400;
    /// 401 Unauthenticated: wrong credentials or failed MESSAGE-INTEGRITY.
    pub const UNAUTHENTICATED: u16 = 401;
    /// 420 Unknown Attribute: a comprehension-required attribute was not understood.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    /// 438 Stale Nonce (long-term credentials).
    pub const STALE_NONCE: u16 = 438;
    /// 487 Role Conflict (RFC 8445): both agents claim the same ICE role.
    pub const ROLE_CONFLICT: u16 = 487;
    /// 500 Server Error.
    pub const SERVER_ERROR: u16 = 500;
    /// 403 Forbidden (RFC 8656): e.g. a peer address the server will not relay to.
    pub const FORBIDDEN: u16 = 403;
    /// 437 Allocation Mismatch (RFC 8656): no allocation for this 5-tuple, or
    /// an Allocate for a 5-tuple that already has one.
    pub const ALLOCATION_MISMATCH: u16 = 437;
    /// 440 Address Family not Supported (RFC 8656).
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    /// 441 Wrong Credentials (RFC 8656): not the credentials that created the allocation.
    pub const WRONG_CREDENTIALS: u16 = 441;
    /// 442 Unsupported Transport Protocol (RFC 8656).
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: u16 = 442;
    /// 443 Peer Address Family Mismatch (RFC 8656).
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    /// 486 Allocation Quota Reached (RFC 8656).
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    /// 508 Insufficient Capacity (RFC 8656).
    pub const INSUFFICIENT_CAPACITY: u16 = 508;

    /// Decodes an ERROR-CODE value; `None` if it is too short or its class
    /// or number are out of range.
    pub fn decode(value: &'a [u8]) -> Option<Self> {
        match value {
            [_, _, class, number, reason @ ..] => {
                let class = u16::from(class & 0x07);
                let number = u16::from(*number);
                if !(3..=6).contains(&class) || number > 99 {
                    return None;
                }
                Some(Self {
                    code: class * 100 + number,
                    reason,
                })
            }
            _ => None,
        }
    }

    /// The reason phrase as text, if it is valid UTF-8.
    pub fn reason_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.reason).ok()
    }
}
