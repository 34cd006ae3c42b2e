//! TURN REST API credentials (draft-uberti-behave-turn-rest): the control daemon mints time-limited
//! credentials that the engine's TURN server checks with the same shared secret, so no per-user state
//! crosses the control socket. Username `"<expiry unix seconds>:<user>"`, password
//! `base64(HMAC-SHA1(secret, username))`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Where clients find our STUN/TURN service and how credentials are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnSettings {
    /// `turn:` / `stun:` URLs handed to clients (e.g. `turn:127.0.0.1:3478?transport=udp`).
    pub urls: Vec<String>,
    /// The shared secret (also given to the engine's TURN server).
    pub secret: String,
    /// How long minted credentials stay valid.
    pub ttl: Duration,
}

/// A username/password pair valid until `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `"<expiry>:<user>"`.
    pub username: String,
    /// base64 HMAC-SHA1 of the username under the shared secret.
    pub password: String,
    /// Unix seconds.
    pub expires: u64,
}

/// The password for `username` under `secret`.
pub fn password_for(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Mints a credential for `user` valid for `ttl` from `now`.
pub fn mint(secret: &str, user: &str, ttl: Duration, now: SystemTime) -> Credential {
    let expires = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + ttl.as_secs();
    let username = format!("{expires}:{user}");
    Credential { password: password_for(secret, &username), username, expires }
}

/// The `iceServers` list for a client: our URLs with a fresh credential.
pub fn ice_servers(settings: &TurnSettings, user: &str, now: SystemTime) -> Vec<serde_json::Value> {
    if settings.urls.is_empty() {
        return Vec::new();
    }
    let c = mint(&settings.secret, user, settings.ttl, now);
    vec![serde_json::json!({ "urls": settings.urls, "username": c.username, "credential": c.password })]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let c = mint("s3cret", "p7", Duration::from_secs(3600), now);
        assert_eq!(c.username, "1700003600:p7");
        assert_eq!(c.expires, 1_700_003_600);
        assert_eq!(c.password, password_for("s3cret", "1700003600:p7"));
        assert_ne!(c.password, password_for("other", "1700003600:p7"));
        // HMAC-SHA1 is 20 bytes: 28 base64 characters.
        assert_eq!(c.password.len(), 28);
    }
}
