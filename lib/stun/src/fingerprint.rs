//! FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message XORed with a
//! constant, so STUN can be told apart from other protocols on one port.

/// XORed into the CRC so that a STUN message embedded in another protocol's
/// CRC-32-protected payload does not yield a matching fingerprint by accident.
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Length of a whole FINGERPRINT attribute (header + 4-byte value).
pub(crate) const FINGERPRINT_ATTR_LEN: usize = 8;

/// Fingerprint of `prefix`, the message bytes before the FINGERPRINT
/// attribute.
///
/// The header length inside `prefix` must already count the FINGERPRINT
/// attribute. That holds for a received message because FINGERPRINT is
/// required to be last, and the writer bumps the length before calling this,
/// so unlike MESSAGE-INTEGRITY no header patching is needed here.
pub(crate) fn compute(prefix: &[u8]) -> u32 {
    crc32fast::hash(prefix) ^ FINGERPRINT_XOR
}
