//! TURN REST API credentials (draft-uberti-behave-turn-rest) checked with long-term-credential
//! MESSAGE-INTEGRITY (RFC 8489 §9.2), and the server's stateless nonces.
//!
//! The control daemon mints (`control/src/turn.rs`): username `"<expiry unix secs>:<user>"`,
//! password `base64(HMAC-SHA1(secret, username))`. The engine never sees a password: it recomputes
//! it from the username with the same secret, derives the long-term key
//! `MD5(username ":" realm ":" password)` and checks the request's MESSAGE-INTEGRITY with it, so no
//! per-user state crosses the control socket. A username whose expiry has passed is refused (401).
//!
//! Nonces are stateless too: `"<issue time, 8 hex>" + "<16 hex of HMAC-SHA1(nonce key, time ||
//! client address)>"`. A nonce is valid for the client address it was issued to, for
//! [`NONCE_LIFETIME`]; after that the request gets 438 Stale Nonce with a fresh one.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use switchyard_stun::long_term_key;

/// How long a nonce stays valid.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// Length of our nonces.
pub const NONCE_LEN: usize = 24;

/// Why a request's credentials were not accepted; each maps to one STUN error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No MESSAGE-INTEGRITY: the normal first Allocate; answered with 401 and a challenge.
    Challenge,
    /// MESSAGE-INTEGRITY without USERNAME, REALM or NONCE: 400.
    Incomplete,
    /// The NONCE is not ours, not for this client, or too old: 438 with a fresh one.
    StaleNonce,
    /// The REALM is not ours: 401.
    WrongRealm,
    /// The username is not `"<expiry>:<user>"` (or not UTF-8): 401.
    BadUsername,
    /// The username's expiry has passed: 401.
    Expired,
    /// MESSAGE-INTEGRITY does not verify with the key derived from the username: 401.
    BadIntegrity,
}

impl Reject {
    /// The STUN error code to answer with.
    pub fn code(self) -> u16 {
        match self {
            Reject::Incomplete => 400,
            Reject::StaleNonce => 438,
            _ => 401,
        }
    }

    /// A reason phrase that says no more than the code (no hint which part was wrong beyond what
    /// the RFC requires).
    pub fn reason(self) -> &'static str {
        match self {
            Reject::Incomplete => "Bad Request",
            Reject::StaleNonce => "Stale Nonce",
            Reject::Expired => "Unauthorized: credentials expired",
            _ => "Unauthorized",
        }
    }

    /// Whether this counts as an authentication failure (the initial challenge does not).
    pub fn is_failure(self) -> bool {
        !matches!(self, Reject::Challenge | Reject::StaleNonce)
    }
}

/// The REST username's parts: expiry (unix seconds) and the user, for quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestUser<'a> {
    /// Unix seconds after which the credential is refused.
    pub expires: u64,
    /// What follows the first `:` (empty when there is none).
    pub user: &'a str,
}

/// Splits a REST username `"<expiry>:<user>"` (or a bare `"<expiry>"`).
pub fn parse_rest_username(username: &str) -> Option<RestUser<'_>> {
    let (ts, user) = match username.split_once(':') {
        Some((ts, user)) => (ts, user),
        None => (username, ""),
    };
    if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(RestUser { expires: ts.parse().ok()?, user })
}

/// The REST password for `username`: base64(HMAC-SHA1(secret, username)), 28 characters, written
/// into a stack buffer (no allocation on the request path).
pub fn rest_password(secret: &[u8], username: &[u8]) -> [u8; 28] {
    let mut out = [0u8; 28];
    // HMAC accepts keys of any length.
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(secret) else { return out };
    mac.update(username);
    let tag = mac.finalize().into_bytes();
    // 20 bytes encode to exactly 28 base64 characters.
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(tag, &mut out);
    out
}

/// The long-term key of a REST credential: MD5(username ":" realm ":" password).
pub fn rest_key(secret: &[u8], username: &[u8], realm: &[u8]) -> [u8; 16] {
    long_term_key(username, realm, &rest_password(secret, username))
}

/// Issues and checks nonces bound to a client address.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces { key: <redacted> }")
    }
}

impl Nonces {
    /// Nonces keyed with `key` (random per engine start).
    pub fn new(key: [u8; 32]) -> Nonces {
        Nonces { key }
    }

    fn mac(&self, issued: u32, client: SocketAddr) -> Hmac<Sha1> {
        // HMAC accepts keys of any length; a 32-byte key never fails.
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(&issued.to_be_bytes());
        match client {
            SocketAddr::V4(a) => mac.update(&a.ip().octets()),
            SocketAddr::V6(a) => mac.update(&a.ip().octets()),
        }
        mac.update(&client.port().to_be_bytes());
        mac
    }

    /// A nonce for `client` issued at unix time `now`.
    pub fn issue(&self, client: SocketAddr, now: u64) -> [u8; NONCE_LEN] {
        let issued = now as u32;
        let tag = self.mac(issued, client).finalize().into_bytes();
        let mut out = [0u8; NONCE_LEN];
        hex(&issued.to_be_bytes(), &mut out[..8]);
        hex(&tag[..8], &mut out[8..]);
        out
    }

    /// Whether `nonce` was issued by us to `client` no longer than [`NONCE_LIFETIME`] before
    /// `now` (and not in the future).
    pub fn check(&self, nonce: &[u8], client: SocketAddr, now: u64) -> bool {
        if nonce.len() != NONCE_LEN {
            return false;
        }
        let mut ts = [0u8; 4];
        let mut tag = [0u8; 8];
        if !unhex(&nonce[..8], &mut ts) || !unhex(&nonce[8..], &mut tag) {
            return false;
        }
        let issued = u32::from_be_bytes(ts);
        // Wall-clock time in u32 seconds wraps in 2106; compare in that ring.
        let age = (now as u32).wrapping_sub(issued);
        if u64::from(age) > NONCE_LIFETIME.as_secs() {
            return false;
        }
        self.mac(issued, client).verify_truncated_left(&tag).is_ok()
    }
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 15)];
    }
}

fn unhex(s: &[u8], out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 {
        return false;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        match (digit(s[2 * i]), digit(s[2 * i + 1])) {
            (Some(h), Some(l)) => *o = (h << 4) | l,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_usernames() {
        assert_eq!(parse_rest_username("1700003600:p7"), Some(RestUser { expires: 1_700_003_600, user: "p7" }));
        assert_eq!(parse_rest_username("1700003600"), Some(RestUser { expires: 1_700_003_600, user: "" }));
        assert_eq!(parse_rest_username("1700003600:a:b"), Some(RestUser { expires: 1_700_003_600, user: "a:b" }));
        assert_eq!(parse_rest_username("alice"), None);
        assert_eq!(parse_rest_username(":alice"), None);
        assert_eq!(parse_rest_username("-5:alice"), None);
        assert_eq!(parse_rest_username("99999999999999999999999:x"), None);
    }

    #[test]
    fn password_matches_the_control_daemons_scheme() {
        // control/src/turn.rs: base64(HMAC-SHA1(secret, username)); 28 characters. Reference value
        // computed independently: printf %s '1700003600:p7' | openssl dgst -sha1 -hmac s3cret -binary | base64
        let p = rest_password(b"s3cret", b"1700003600:p7");
        assert_eq!(&p, b"EU+LCX4d2lR0UHDA6tMsdwKwRqI=");
        assert_ne!(p, rest_password(b"other", b"1700003600:p7"));
        assert_ne!(p, rest_password(b"s3cret", b"1700003601:p7"));
    }

    #[test]
    fn nonces_are_bound_to_client_and_time() {
        let n = Nonces::new([7; 32]);
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let t = 1_700_000_000;
        let nonce = n.issue(a, t);
        assert!(n.check(&nonce, a, t));
        assert!(n.check(&nonce, a, t + NONCE_LIFETIME.as_secs()));
        assert!(!n.check(&nonce, a, t + NONCE_LIFETIME.as_secs() + 1), "stale");
        assert!(!n.check(&nonce, a, t - 10), "from the future");
        assert!(!n.check(&nonce, b, t), "another client");
        assert!(!Nonces::new([8; 32]).check(&nonce, a, t), "another key");
        let mut bad = nonce;
        bad[20] = if bad[20] == b'0' { b'1' } else { b'0' };
        assert!(!n.check(&bad, a, t));
        assert!(!n.check(b"short", a, t));
        assert!(!n.check(b"zzzzzzzzzzzzzzzzzzzzzzzz", a, t));
    }
}
