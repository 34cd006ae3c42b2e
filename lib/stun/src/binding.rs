//! The Binding method as ICE uses it: answering connectivity checks on an
//! ICE-lite server, sending them as a client, and plain NAT discovery.

use core::fmt;
use core::net::SocketAddr;

use crate::attributes::AttrType;
use crate::error::Error;
use crate::message::{Class, Message, MessageType, MessageWriter, Method, HEADER_LEN};

/// Whether `request` is something a Binding response may answer.
fn check_binding_request(request: &Message<'_>) -> Result<(), Error> {
    if request.class() == Class::Request && request.method() == Method::BINDING {
        Ok(())
    } else {
        Err(Error::NotBindingRequest)
    }
}

/// Writes the Binding success response to `request` into `out` and returns
/// its length: same transaction id, XOR-MAPPED-ADDRESS = `mapped` (the
/// source address the request arrived from), MESSAGE-INTEGRITY keyed with
/// `integrity_key`, then FINGERPRINT.
///
/// For an ICE-lite server the key is the server's own ICE password, the
/// same key the request was verified with. An empty key omits
/// MESSAGE-INTEGRITY, which is what a plain STUN server answering
/// unauthenticated NAT-discovery requests sends. Fails with
/// [`Error::NotBindingRequest`] if `request` is not a Binding request. The
/// largest response (IPv6) is 80 bytes.
pub fn write_binding_success(
    out: &mut [u8],
    request: &Message<'_>,
    mapped: SocketAddr,
    integrity_key: &[u8],
) -> Result<usize, Error> {
    check_binding_request(request)?;
    let mut w = MessageWriter::new(out, MessageType::BINDING_SUCCESS, request.transaction_id())?;
    w.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, mapped)?;
    if !integrity_key.is_empty() {
        w.add_message_integrity(integrity_key)?;
    }
    w.add_fingerprint()?;
    Ok(w.finish())
}

/// Writes a Binding error response to `request` with ERROR-CODE `code` and
/// `reason`, then MESSAGE-INTEGRITY (unless `integrity_key` is empty) and
/// FINGERPRINT; returns its length.
///
/// Per RFC 8489 §9.1.3, a 400 (missing USERNAME or MESSAGE-INTEGRITY) or
/// 401 (unknown user or failed integrity) answers a request that could not
/// be authenticated, so those must be sent with an empty key; a 487 Role
/// Conflict (RFC 8445 §7.3.1.1) follows a verified request and is sent with
/// the password. See the code constants on
/// [`ErrorCode`](crate::ErrorCode).
pub fn write_binding_error(
    out: &mut [u8],
    request: &Message<'_>,
    code: u16,
    reason: &str,
    integrity_key: &[u8],
) -> Result<usize, Error> {
    check_binding_request(request)?;
    let mut w = MessageWriter::new(out, MessageType::BINDING_ERROR, request.transaction_id())?;
    w.add_error_code(code, reason)?;
    if !integrity_key.is_empty() {
        w.add_message_integrity(integrity_key)?;
    }
    w.add_fingerprint()?;
    Ok(w.finish())
}

/// An ICE connectivity check as sent by a full ICE agent (our load
/// generator and tests acting as the browser).
///
/// `username` is `"<remote ufrag>:<local ufrag>"` and `password` the remote
/// agent's ICE password, which keys MESSAGE-INTEGRITY. At most one of
/// `controlling`/`controlled` may be set; each carries the agent's 64-bit
/// tie-breaker. An empty `username` or `password` omits that attribute,
/// which is only useful to provoke 400 responses in tests.
#[derive(Clone, Copy, Default)]
pub struct BindingRequest<'a> {
    /// Transaction id; must be cryptographically random in real checks.
    pub transaction_id: [u8; 12],
    /// USERNAME value, `"<remote ufrag>:<local ufrag>"`.
    pub username: &'a [u8],
    /// Short-term credential: the remote agent's ICE password.
    pub password: &'a [u8],
    /// PRIORITY of the would-be peer-reflexive candidate.
    pub priority: u32,
    /// Send USE-CANDIDATE (nominate the pair; controlling agent only).
    pub use_candidate: bool,
    /// ICE-CONTROLLING tie-breaker, if we are the controlling agent.
    pub controlling: Option<u64>,
    /// ICE-CONTROLLED tie-breaker, if we are the controlled agent.
    pub controlled: Option<u64>,
}

impl BindingRequest<'_> {
    /// Writes the check into `out` and returns its length: USERNAME,
    /// PRIORITY, ICE-CONTROLLING or ICE-CONTROLLED, USE-CANDIDATE,
    /// MESSAGE-INTEGRITY, FINGERPRINT (RFC 8445 §7.1.1 order is free, but
    /// integrity and fingerprint must close the message).
    pub fn write(&self, out: &mut [u8]) -> Result<usize, Error> {
        if self.controlling.is_some() && self.controlled.is_some() {
            return Err(Error::ConflictingRoles);
        }
        let mut w = MessageWriter::new(out, MessageType::BINDING_REQUEST, &self.transaction_id)?;
        if !self.username.is_empty() {
            w.add_attr(AttrType::USERNAME, self.username)?;
        }
        w.add_u32(AttrType::PRIORITY, self.priority)?;
        if let Some(tie_breaker) = self.controlling {
            w.add_u64(AttrType::ICE_CONTROLLING, tie_breaker)?;
        }
        if let Some(tie_breaker) = self.controlled {
            w.add_u64(AttrType::ICE_CONTROLLED, tie_breaker)?;
        }
        if self.use_candidate {
            w.add_attr(AttrType::USE_CANDIDATE, &[])?;
        }
        if !self.password.is_empty() {
            w.add_message_integrity(self.password)?;
        }
        w.add_fingerprint()?;
        Ok(w.finish())
    }
}

impl fmt::Debug for BindingRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so the password never ends up in logs.
        f.debug_struct("BindingRequest")
            .field("transaction_id", &self.transaction_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("priority", &self.priority)
            .field("use_candidate", &self.use_candidate)
            .field("controlling", &self.controlling)
            .field("controlled", &self.controlled)
            .finish()
    }
}

/// Writes an attribute-less Binding request, as used for STUN NAT discovery
/// against a public server, and returns its length (always 20).
///
/// No FINGERPRINT or SOFTWARE: the bare header is what every server
/// generation since RFC 3489 answers, and there is nothing to demultiplex on
/// a socket dedicated to discovery.
pub fn write_plain_binding_request(
    out: &mut [u8],
    transaction_id: &[u8; 12],
) -> Result<usize, Error> {
    let w = MessageWriter::new(out, MessageType::BINDING_REQUEST, transaction_id)?;
    debug_assert_eq!(w.len(), HEADER_LEN);
    Ok(w.finish())
}

/// Extracts our reflexive address from a Binding response to the request
/// with `transaction_id`.
///
/// Checks the method and transaction id, turns an error response into
/// [`Error::ErrorResponse`], and prefers XOR-MAPPED-ADDRESS, falling back to
/// MAPPED-ADDRESS for pre-RFC 5389 servers. Integrity, if the exchange used
/// credentials, is for the caller to verify first.
pub fn binding_response_address(
    response: &Message<'_>,
    transaction_id: &[u8; 12],
) -> Result<SocketAddr, Error> {
    if response.method() != Method::BINDING {
        return Err(Error::NotBindingResponse);
    }
    if response.transaction_id() != transaction_id {
        return Err(Error::TransactionMismatch);
    }
    match response.class() {
        Class::SuccessResponse => response
            .xor_mapped_address()
            .or_else(|| response.mapped_address())
            .ok_or(Error::MissingAttribute(AttrType::XOR_MAPPED_ADDRESS)),
        Class::ErrorResponse => Err(Error::ErrorResponse {
            code: response.error_code().map_or(0, |e| e.code),
        }),
        Class::Request | Class::Indication => Err(Error::NotBindingResponse),
    }
}

/// Splits an ICE USERNAME `"<first>:<second>"` into its two ufrags.
///
/// On an ICE-lite server the first is our (server) ufrag, which identifies
/// the session, and the second the client's. Returns `None` unless there is
/// exactly one colon with a non-empty ufrag on each side; a ufrag cannot
/// contain a colon (RFC 8839 `ice-char`), so anything else is malformed.
pub fn split_username(u: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = u.iter().position(|&b| b == b':')?;
    let (first, rest) = u.split_at(colon);
    let second = rest.get(1..)?;
    if first.is_empty() || second.is_empty() || second.contains(&b':') {
        return None;
    }
    Some((first, second))
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn split_username_accepts_only_two_ufrags() {
        assert_eq!(
            split_username(b"srvA:cliB"),
            Some((&b"srvA"[..], &b"cliB"[..]))
        );
        assert_eq!(
            split_username(b"evtj:h6vY"),
            Some((&b"evtj"[..], &b"h6vY"[..]))
        );
        assert_eq!(split_username(b"nocolon"), None);
        assert_eq!(split_username(b":cli"), None);
        assert_eq!(split_username(b"srv:"), None);
        assert_eq!(split_username(b"a:b:c"), None);
        assert_eq!(split_username(b""), None);
    }

    #[test]
    fn binding_request_rejects_both_roles() {
        let req = BindingRequest {
            controlling: Some(1),
            controlled: Some(2),
            ..Default::default()
        };
        assert_eq!(req.write(&mut [0u8; 128]), Err(Error::ConflictingRoles));
    }

    #[test]
    fn debug_hides_password() {
        let req = BindingRequest {
            password: b"hunter2",
            ..Default::default()
        };
        let s = std::format!("{req:?}");
        assert!(!s.contains("hunter2") && !s.contains("104, 117"));
    }
}
