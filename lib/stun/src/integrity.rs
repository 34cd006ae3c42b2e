//! MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 over the message, and the
//! long-term credential key derivation that TURN will use.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::message::HEADER_LEN;

/// Length of the HMAC-SHA1 value carried by MESSAGE-INTEGRITY.
pub const INTEGRITY_LEN: usize = 20;

/// Length of a whole MESSAGE-INTEGRITY attribute (header + value).
pub(crate) const INTEGRITY_ATTR_LEN: usize = 4 + INTEGRITY_LEN;

/// A keyed HMAC-SHA1 instance fed with the patched header and the attributes
/// that precede MESSAGE-INTEGRITY at byte offset `mi_offset` of `msg`.
///
/// The HMAC covers the message as if MESSAGE-INTEGRITY were its last
/// attribute, so the length field is rewritten to end right after it. The
/// patched header lives in a 20-byte stack copy and is fed before the rest of
/// the bytes: no allocation, and the caller's buffer stays untouched.
/// Returns `None` if `msg` is shorter than `mi_offset` or the offset is
/// inside the header, which parsed messages and the writer never produce.
fn mac_until(msg: &[u8], mi_offset: usize, key: &[u8]) -> Option<Hmac<Sha1>> {
    let header: &[u8; HEADER_LEN] = msg.get(..HEADER_LEN)?.try_into().ok()?;
    let body = msg.get(HEADER_LEN..mi_offset)?;
    let adjusted = u16::try_from(body.len() + INTEGRITY_ATTR_LEN).ok()?;
    let mut patched = *header;
    patched[2..4].copy_from_slice(&adjusted.to_be_bytes());
    // HMAC accepts keys of any length, so this never fails in practice; the
    // `ok()?` only avoids an unwrap on the per-packet path.
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).ok()?;
    mac.update(&patched);
    mac.update(body);
    Some(mac)
}

/// HMAC-SHA1 for a MESSAGE-INTEGRITY attribute placed at `mi_offset` of `msg`.
pub(crate) fn compute(msg: &[u8], mi_offset: usize, key: &[u8]) -> Option<[u8; INTEGRITY_LEN]> {
    let mac = mac_until(msg, mi_offset, key)?;
    Some(mac.finalize().into_bytes().into())
}

/// Whether `expected` is the HMAC-SHA1 for MESSAGE-INTEGRITY at `mi_offset`.
///
/// The comparison is constant-time (via `Mac::verify_slice`) so a remote
/// peer cannot learn the correct MAC byte by byte from response timing.
pub(crate) fn verify(msg: &[u8], mi_offset: usize, key: &[u8], expected: &[u8]) -> bool {
    match mac_until(msg, mi_offset, key) {
        Some(mac) => mac.verify_slice(expected).is_ok(),
        None => false,
    }
}

/// The long-term credential key, `MD5(username ":" realm ":" password)`
/// (RFC 8489 §9.2.2), used as the MESSAGE-INTEGRITY key by TURN clients and
/// servers.
///
/// The inputs are taken as already-prepared bytes (OpaqueString/SASLprep is
/// the caller's business) and hashed incrementally, so nothing is
/// concatenated on the heap. ICE does not use this: its short-term key is
/// simply the password bytes.
pub fn long_term_key(username: &[u8], realm: &[u8], password: &[u8]) -> [u8; 16] {
    let mut ctx = md5::Context::new();
    ctx.consume(username);
    ctx.consume(b":");
    ctx.consume(realm);
    ctx.consume(b":");
    ctx.consume(password);
    ctx.finalize().into()
}
