//! TURN (RFC 8656) on top of the generic STUN machinery: typed accessors for
//! TURN's attributes, ChannelData framing, and writers for the Send and Data
//! indications. The methods ([`Method::ALLOCATE`], ...), attribute types
//! ([`AttrType::LIFETIME`], ...) and error codes
//! ([`ErrorCode::ALLOCATION_QUOTA_REACHED`](crate::ErrorCode), ...) live
//! with their STUN siblings. Like the rest of the crate, nothing here
//! allocates or panics on input.

use core::net::SocketAddr;

use crate::attributes::{decode_xor_address, AttrType};
use crate::error::Error;
use crate::message::{Class, Message, MessageType, MessageWriter, Method};

/// The protocol number REQUESTED-TRANSPORT carries for UDP.
pub const TRANSPORT_UDP: u8 = 17;

/// REQUESTED-ADDRESS-FAMILY value for IPv4.
pub const FAMILY_IPV4: u8 = 0x01;
/// REQUESTED-ADDRESS-FAMILY value for IPv6.
pub const FAMILY_IPV6: u8 = 0x02;

/// Length of the ChannelData header: channel number and data length.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// Lowest channel number (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest channel number RFC 5766 allowed (RFC 8656 narrows new bindings
/// to 0x4FFF for RFC 7983 demultiplexing, but clients such as coturn's still
/// pick numbers up to 0x7FFF).
pub const CHANNEL_MAX: u16 = 0x7FFF;

impl<'a> Message<'a> {
    /// LIFETIME in seconds.
    pub fn lifetime(&self) -> Option<u32> {
        let v: [u8; 4] = self.attr(AttrType::LIFETIME)?.try_into().ok()?;
        Some(u32::from_be_bytes(v))
    }

    /// The protocol number of REQUESTED-TRANSPORT (17 for UDP).
    pub fn requested_transport(&self) -> Option<u8> {
        match self.attr(AttrType::REQUESTED_TRANSPORT)? {
            [proto, _, _, _] => Some(*proto),
            _ => None,
        }
    }

    /// REQUESTED-ADDRESS-FAMILY ([`FAMILY_IPV4`] or [`FAMILY_IPV6`]).
    pub fn requested_address_family(&self) -> Option<u8> {
        match self.attr(AttrType::REQUESTED_ADDRESS_FAMILY)? {
            [family, _, _, _] => Some(*family),
            _ => None,
        }
    }

    /// The channel number of CHANNEL-NUMBER.
    pub fn channel_number(&self) -> Option<u16> {
        match self.attr(AttrType::CHANNEL_NUMBER)? {
            [a, b, _, _] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }

    /// The first XOR-PEER-ADDRESS, decoded.
    pub fn xor_peer_address(&self) -> Option<SocketAddr> {
        decode_xor_address(
            self.attr(AttrType::XOR_PEER_ADDRESS)?,
            self.transaction_id(),
        )
    }

    /// Every XOR-PEER-ADDRESS before MESSAGE-INTEGRITY (CreatePermission may
    /// carry several); `None` items are values that do not decode.
    pub fn xor_peer_addresses(&self) -> impl Iterator<Item = Option<SocketAddr>> + 'a {
        let tid = *self.transaction_id();
        self.protected_attributes()
            .filter(|(t, _)| *t == AttrType::XOR_PEER_ADDRESS)
            .map(move |(_, v)| decode_xor_address(v, &tid))
    }

    /// XOR-RELAYED-ADDRESS of an Allocate success response, decoded.
    pub fn xor_relayed_address(&self) -> Option<SocketAddr> {
        decode_xor_address(
            self.attr(AttrType::XOR_RELAYED_ADDRESS)?,
            self.transaction_id(),
        )
    }

    /// The DATA attribute's value (Send and Data indications).
    pub fn data(&self) -> Option<&'a [u8]> {
        self.attr(AttrType::DATA)
    }

    /// EVEN-PORT: `Some(r)` when present, `r` being the R bit (reserve the
    /// next higher port too).
    pub fn even_port(&self) -> Option<bool> {
        match self.attr(AttrType::EVEN_PORT)? {
            [flags, ..] => Some(flags & 0x80 != 0),
            [] => None,
        }
    }

    /// RESERVATION-TOKEN's 8 bytes.
    pub fn reservation_token(&self) -> Option<[u8; 8]> {
        self.attr(AttrType::RESERVATION_TOKEN)?.try_into().ok()
    }

    /// Whether DONT-FRAGMENT is present.
    pub fn dont_fragment(&self) -> bool {
        self.attr(AttrType::DONT_FRAGMENT).is_some()
    }
}

/// Whether the first byte says ChannelData on a TURN server's own port
/// (0x40..=0x7F: channel numbers 0x4000..=0x7FFF). On a port shared with
/// DTLS and RTP, RFC 7983 assigns only 64..=79.
pub fn is_channel_data(buf: &[u8]) -> bool {
    matches!(buf.first(), Some(0x40..=0x7F))
}

/// Splits a ChannelData message into its channel number and application
/// data. The length field must fit the datagram; up to 3 bytes of padding
/// after the data are accepted (RFC 8656 §12.5: over UDP a sender may pad).
/// `None` for anything else.
pub fn parse_channel_data(buf: &[u8]) -> Option<(u16, &[u8])> {
    let (header, rest) = buf.split_at_checked(CHANNEL_DATA_HEADER_LEN)?;
    let channel = u16::from_be_bytes([header[0], header[1]]);
    if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if len > rest.len() || rest.len() - len > 3 {
        return None;
    }
    Some((channel, &rest[..len]))
}

/// Writes the 4-byte ChannelData header for `len` bytes of data on
/// `channel` into `out`; the data goes right after it (no padding: over UDP
/// none is needed). Returns the total length, header included.
pub fn write_channel_data_header(out: &mut [u8], channel: u16, len: usize) -> Result<usize, Error> {
    let total = CHANNEL_DATA_HEADER_LEN + len;
    let wire_len = u16::try_from(len).map_err(|_| Error::AttributeTooLong(len))?;
    let available = out.len();
    let header = out
        .get_mut(..CHANNEL_DATA_HEADER_LEN)
        .filter(|_| total <= available)
        .ok_or(Error::BufferTooSmall {
            needed: total,
            available,
        })?;
    header[0..2].copy_from_slice(&channel.to_be_bytes());
    header[2..4].copy_from_slice(&wire_len.to_be_bytes());
    Ok(total)
}

/// Writes a ChannelData message carrying `data` on `channel`.
pub fn write_channel_data(out: &mut [u8], channel: u16, data: &[u8]) -> Result<usize, Error> {
    let total = write_channel_data_header(out, channel, data.len())?;
    out[CHANNEL_DATA_HEADER_LEN..total].copy_from_slice(data);
    Ok(total)
}

/// Writes a Data indication (server to client): XOR-PEER-ADDRESS `peer`,
/// then DATA of `len` bytes written in place by `fill`. No
/// MESSAGE-INTEGRITY (indications are not authenticated) and no
/// FINGERPRINT.
pub fn write_data_indication_with(
    out: &mut [u8],
    transaction_id: &[u8; 12],
    peer: SocketAddr,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize, Error> {
    let mut w = MessageWriter::new(
        out,
        MessageType::new(Class::Indication, Method::DATA),
        transaction_id,
    )?;
    w.add_xor_address(AttrType::XOR_PEER_ADDRESS, peer)?;
    w.add_attr_with(AttrType::DATA, len, fill)?;
    Ok(w.finish())
}

/// Writes a Send indication (client to server) for `data` to `peer`.
pub fn write_send_indication(
    out: &mut [u8],
    transaction_id: &[u8; 12],
    peer: SocketAddr,
    data: &[u8],
) -> Result<usize, Error> {
    let mut w = MessageWriter::new(
        out,
        MessageType::new(Class::Indication, Method::SEND),
        transaction_id,
    )?;
    w.add_xor_address(AttrType::XOR_PEER_ADDRESS, peer)?;
    w.add_attr(AttrType::DATA, data)?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_data_round_trip_and_rejections() {
        let mut buf = [0u8; 64];
        let n = write_channel_data(&mut buf, 0x4001, b"hello").unwrap();
        assert_eq!(n, 9);
        assert!(is_channel_data(&buf[..n]));
        assert_eq!(parse_channel_data(&buf[..n]), Some((0x4001, &b"hello"[..])));
        // Padding to 4 bytes is accepted, more trailing bytes are not.
        assert_eq!(
            parse_channel_data(&buf[..12]),
            Some((0x4001, &b"hello"[..]))
        );
        assert_eq!(parse_channel_data(&buf[..13]), None);
        // Length beyond the datagram, short header, channel out of range.
        assert_eq!(parse_channel_data(&buf[..8]), None);
        assert_eq!(parse_channel_data(&buf[..3]), None);
        let mut bad = buf;
        bad[0] = 0x80;
        assert_eq!(parse_channel_data(&bad[..n]), None);
        assert!(write_channel_data(&mut buf[..8], 0x4001, b"hello").is_err());
    }

    #[test]
    fn method_bits_of_turn_messages() {
        assert_eq!(
            MessageType::new(Class::Request, Method::ALLOCATE).bits(),
            0x0003
        );
        assert_eq!(
            MessageType::new(Class::Indication, Method::SEND).bits(),
            0x0016
        );
        assert_eq!(
            MessageType::new(Class::Indication, Method::DATA).bits(),
            0x0017
        );
        assert_eq!(
            MessageType::new(Class::SuccessResponse, Method::CHANNEL_BIND).bits(),
            0x0109
        );
        assert_eq!(
            MessageType::new(Class::ErrorResponse, Method::REFRESH).bits(),
            0x0114
        );
    }
}
