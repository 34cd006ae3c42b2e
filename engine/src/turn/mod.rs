//! The engine's TURN server (RFC 8656 over UDP), run by the same workers and the same zero-copy
//! send batches as SFU traffic.
//!
//! ```text
//!  client ──UDP──> :3478 (one SO_REUSEPORT socket per worker; the kernel hashes each client
//!                   5-tuple to one worker, for good)
//!                      │ worker k: TurnServer (sans-I/O, server.rs)
//!                      │   STUN Binding (NAT discovery), Allocate / Refresh / CreatePermission /
//!                      │   ChannelBind (long-term credentials, REST usernames, auth.rs),
//!                      │   Send indications, ChannelData
//!                      v
//!                  relay socket of the allocation (a port of --relay-ports, an extra socket of
//!                  worker k's UdpIo) ──UDP──> peer
//!  peer ──UDP──> relay socket ──> worker k ──> Data indication / ChannelData ──> client
//! ```
//!
//! Every socket an allocation uses belongs to the worker its client hashed to, so a relayed packet
//! is received, checked and queued in one turn of one worker's loop: no hand-off, no lock, no heap
//! allocation (the payload is copied once, straight into the worker's send batch). Quotas, nonce and
//! token keys and EVEN-PORT reservations are shared (`shared.rs`) and touched only when allocations
//! come and go. `io.rs` is the thin glue between the worker loop and the sans-I/O server.

pub mod auth;
pub mod cli;
pub mod io;
pub mod server;
pub mod shared;

use std::time::Duration;

pub use cli::TurnArgs;
pub use io::WorkerTurn;
pub use server::{Relay, RelayWant, TurnOutput, TurnServer};
pub use shared::{QuotaError, TurnShared};

/// The shared secret the control daemon defaults to as well (`--turn-secret`).
pub const DEFAULT_SECRET: &str = "switchyard-dev-secret";
/// Default realm (`--turn-realm`).
pub const DEFAULT_REALM: &str = "switchyard";
/// Default TURN port (`--turn-port`).
pub const DEFAULT_PORT: u16 = 3478;
/// Default relay port range (`--relay-ports`).
pub const DEFAULT_RELAY_PORTS: (u16, u16) = (49152, 65535);
/// Default per-user allocation quota (`--turn-max-allocations-per-user`).
pub const DEFAULT_MAX_PER_USER: u32 = 10;
/// Default engine-wide allocation quota (`--turn-max-allocations`).
pub const DEFAULT_MAX_ALLOCATIONS: u32 = 1000;

/// How the TURN server runs.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// UDP port of the TURN listener on the engine's bind address (0: the kernel picks one, for
    /// tests; every worker then joins that port).
    pub port: u16,
    /// REALM of the long-term credentials.
    pub realm: String,
    /// Shared secret of the TURN REST credentials (the control daemon mints with the same one).
    pub secret: String,
    /// Ports relayed transport addresses are taken from, inclusive.
    pub relay_ports: (u16, u16),
    /// Most allocations one user (the part of the REST username after `:`) may hold.
    pub max_allocations_per_user: u32,
    /// Most allocations the engine holds.
    pub max_allocations: u32,
    /// Allocation lifetime when the client asks for less (or nothing): 600 s (RFC 8656).
    pub default_lifetime: Duration,
    /// Longest allocation lifetime granted: 3600 s.
    pub max_lifetime: Duration,
    /// Permission lifetime: 300 s (RFC 8656 §9).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime: 600 s (RFC 8656 §12).
    pub channel_lifetime: Duration,
    /// Relay to loopback peers: `None` allows it exactly when the engine itself binds loopback.
    pub allow_loopback_peers: Option<bool>,
}

impl Default for TurnConfig {
    fn default() -> TurnConfig {
        TurnConfig {
            port: DEFAULT_PORT,
            realm: DEFAULT_REALM.into(),
            secret: DEFAULT_SECRET.into(),
            relay_ports: DEFAULT_RELAY_PORTS,
            max_allocations_per_user: DEFAULT_MAX_PER_USER,
            max_allocations: DEFAULT_MAX_ALLOCATIONS,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            allow_loopback_peers: None,
        }
    }
}

impl std::fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // By hand so the secret never reaches a log.
        f.debug_struct("TurnConfig")
            .field("port", &self.port)
            .field("realm", &self.realm)
            .field("secret", &"<redacted>")
            .field("relay_ports", &self.relay_ports)
            .field("max_allocations_per_user", &self.max_allocations_per_user)
            .field("max_allocations", &self.max_allocations)
            .field("default_lifetime", &self.default_lifetime)
            .field("max_lifetime", &self.max_lifetime)
            .field("permission_lifetime", &self.permission_lifetime)
            .field("channel_lifetime", &self.channel_lifetime)
            .field("allow_loopback_peers", &self.allow_loopback_peers)
            .finish()
    }
}

/// Parses a relay port range `"LOW-HIGH"` (inclusive, 1..=65535, LOW <= HIGH).
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("expected a port range \"LOW-HIGH\" within 1-65535, got {s:?}");
    let (lo, hi) = s.trim().split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("49160-49200"), Ok((49160, 49200)));
        assert_eq!(parse_port_range("5000-5000"), Ok((5000, 5000)));
        assert!(parse_port_range("9-2").is_err());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("10").is_err());
        assert!(parse_port_range("1-70000").is_err());
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = TurnConfig { secret: "hunter2".into(), ..Default::default() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}

#[cfg(test)]
mod server_tests;
