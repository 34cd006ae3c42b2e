//! What the workers' TURN servers share: the configuration, the nonce key, allocation quotas, the
//! relay-port cursor and EVEN-PORT reservations. Touched only when allocations are created, refreshed
//! away or expire (and a reservation is made or redeemed), never per relayed packet, so a mutex is
//! fine here.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use sha1::Sha1;

use super::auth::Nonces;
use super::TurnConfig;

/// How long a port reserved by EVEN-PORT with the R bit is held for a RESERVATION-TOKEN (RFC 8656
/// §7.2: "approximately 30 seconds").
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// Which quota an Allocate hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaError {
    /// The user already holds `max_allocations_per_user`.
    User,
    /// The engine holds `max_allocations`.
    Global,
}

#[derive(Default)]
struct Quota {
    total: u32,
    per_user: FxHashMap<Box<str>, u32>,
}

struct Reservation {
    socket: UdpSocket,
    expires: Instant,
}

/// State shared by every worker's TURN server (one per engine).
pub struct TurnShared {
    /// The configuration.
    pub cfg: TurnConfig,
    /// Address relay sockets bind and advertise in XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
    /// Whether peers on loopback addresses may be relayed to.
    pub allow_loopback_peers: bool,
    /// Issues and checks nonces.
    pub nonces: Nonces,
    /// The engine's own listening ports on `relay_ip` (TURN listener, media ports): never peers.
    own_ports: Vec<u16>,
    token_key: [u8; 32],
    token_counter: AtomicU64,
    quota: Mutex<Quota>,
    port_cursor: AtomicU32,
    reservations: Mutex<FxHashMap<[u8; 8], Reservation>>,
}

impl std::fmt::Debug for TurnShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnShared")
            .field("cfg", &self.cfg)
            .field("relay_ip", &self.relay_ip)
            .field("allocations", &self.allocations())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data under these locks stays consistent across a panic (plain counters and maps).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 32 random bytes from the kernel; a time-and-address mix if /dev/urandom cannot be read (then
/// nonces are still unforgeable without the secret... only less unpredictable).
fn random_key() -> [u8; 32] {
    use std::io::Read as _;
    let mut key = [0u8; 32];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)).is_ok() {
        return key;
    }
    let seed = format!("{:?}{:?}{}", std::time::SystemTime::now(), Instant::now(), std::process::id());
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(seed.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(&key);
    key[..20].copy_from_slice(&mac.finalize().into_bytes());
    key
}

impl TurnShared {
    /// Shared state for `cfg`, relays on `relay_ip`, with random nonce and token keys.
    pub fn new(cfg: TurnConfig, relay_ip: IpAddr) -> TurnShared {
        TurnShared::with_keys(cfg, relay_ip, random_key(), random_key())
    }

    /// As [`new`](Self::new) with given keys (tests).
    pub fn with_keys(cfg: TurnConfig, relay_ip: IpAddr, nonce_key: [u8; 32], token_key: [u8; 32]) -> TurnShared {
        let allow_loopback_peers = cfg.allow_loopback_peers.unwrap_or(relay_ip.is_loopback());
        let span = u32::from(cfg.relay_ports.1.saturating_sub(cfg.relay_ports.0)) + 1;
        let start = u32::from_le_bytes([token_key[0], token_key[1], token_key[2], token_key[3]]) % span;
        TurnShared {
            cfg,
            relay_ip,
            allow_loopback_peers,
            nonces: Nonces::new(nonce_key),
            own_ports: Vec::new(),
            token_key,
            token_counter: AtomicU64::new(0),
            quota: Mutex::new(Quota::default()),
            port_cursor: AtomicU32::new(start),
            reservations: Mutex::new(FxHashMap::default()),
        }
    }

    /// Declares the engine's own listening ports on the relay address: a client may not make the
    /// relay send to them (its Allocate requests or media would then come from the relay).
    pub fn with_own_ports(mut self, ports: Vec<u16>) -> TurnShared {
        self.own_ports = ports;
        self
    }

    /// Takes one allocation of `user`'s quota and the global one.
    pub fn try_acquire(&self, user: &str) -> Result<(), QuotaError> {
        let mut q = lock(&self.quota);
        if q.total >= self.cfg.max_allocations {
            return Err(QuotaError::Global);
        }
        let held = q.per_user.get(user).copied().unwrap_or(0);
        if held >= self.cfg.max_allocations_per_user {
            return Err(QuotaError::User);
        }
        q.per_user.insert(user.into(), held + 1);
        q.total += 1;
        Ok(())
    }

    /// Gives back what [`try_acquire`](Self::try_acquire) took.
    pub fn release(&self, user: &str) {
        let mut q = lock(&self.quota);
        q.total = q.total.saturating_sub(1);
        if let Some(n) = q.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                q.per_user.remove(user);
            }
        }
    }

    /// Allocations held engine-wide.
    pub fn allocations(&self) -> u32 {
        lock(&self.quota).total
    }

    /// Allocations `user` holds.
    pub fn allocations_of(&self, user: &str) -> u32 {
        lock(&self.quota).per_user.get(user).copied().unwrap_or(0)
    }

    /// The relay ports in search order starting at a shared, advancing cursor, so workers do not
    /// all try the same ports first. Yields each port of the range once; `even` yields only even ports.
    pub fn relay_port_candidates(&self, even: bool) -> impl Iterator<Item = u16> + '_ {
        let (lo, hi) = self.cfg.relay_ports;
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let start = self.port_cursor.fetch_add(1, Ordering::Relaxed) % span;
        (0..span).filter_map(move |i| {
            let port = u32::from(lo) + (start + i) % span;
            let port = u16::try_from(port).ok()?;
            (!even || port % 2 == 0).then_some(port)
        })
    }

    /// A fresh reservation token (unpredictable without the engine's random key).
    pub fn new_token(&self) -> [u8; 8] {
        let n = self.token_counter.fetch_add(1, Ordering::Relaxed);
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&self.token_key).unwrap_or_else(|_| unreachable!());
        mac.update(&n.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut t = [0u8; 8];
        t.copy_from_slice(&tag[..8]);
        t
    }

    /// Holds a bound socket for a later Allocate with `token` (on any worker).
    pub fn reserve(&self, token: [u8; 8], socket: UdpSocket, now: Instant) {
        lock(&self.reservations).insert(token, Reservation { socket, expires: now + RESERVATION_LIFETIME });
    }

    /// Redeems a reservation.
    pub fn take_reservation(&self, token: &[u8; 8], now: Instant) -> Option<UdpSocket> {
        let r = lock(&self.reservations).remove(token)?;
        (r.expires > now).then_some(r.socket)
    }

    /// Closes reservations nobody redeemed in time.
    pub fn sweep_reservations(&self, now: Instant) {
        let mut r = lock(&self.reservations);
        if !r.is_empty() {
            r.retain(|_, v| v.expires > now);
        }
    }

    /// Whether data may be relayed to `peer`: see [`ip_allowed`](Self::ip_allowed); port 0 never,
    /// nor the engine's own listening ports.
    pub fn peer_allowed(&self, peer: SocketAddr) -> bool {
        peer.port() != 0 && self.ip_allowed(peer.ip()) && !self.is_own(peer)
    }

    /// Whether `peer` is one of the engine's own listening sockets (TURN listener, media ports).
    #[inline]
    pub fn is_own(&self, peer: SocketAddr) -> bool {
        !self.own_ports.is_empty() && peer.ip() == self.relay_ip && self.own_ports.contains(&peer.port())
    }

    /// Whether permissions for `ip` may be installed: never unspecified, multicast or broadcast
    /// addresses, loopback only when the relays themselves are on loopback (or configured so).
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if let IpAddr::V4(v4) = ip {
            if v4.is_broadcast() {
                return false;
            }
        }
        !ip.is_loopback() || self.allow_loopback_peers
    }
}
