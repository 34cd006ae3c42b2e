//! One worker's TURN server, sans-I/O: datagrams and time in, datagrams (and relay socket requests)
//! out through a [`TurnOutput`]. The worker loop (via `io.rs`) and the unit tests drive it the same
//! way.
//!
//! Per RFC 8656 over UDP:
//! * requests on the listener: Binding (answered without credentials: NAT discovery), Allocate,
//!   Refresh, CreatePermission and ChannelBind (long-term credentials with REST usernames, see
//!   `auth.rs`); anything malformed is dropped and counted, an unknown method gets 400;
//! * Send indications and ChannelData from the client go out of the allocation's relay socket to a
//!   peer that has a permission; datagrams from peers come back as ChannelData (when the peer has a
//!   channel) or Data indications, and only from peers that have a permission;
//! * permissions last 300 s, channel bindings 600 s, allocations their granted lifetime (600 s by
//!   default, at most 3600 s); [`TurnServer::tick`] sweeps what expired, and the packet path checks
//!   expiry itself, so nothing expired is ever used between sweeps.
//!
//! The relay path looks up the allocation by client address or relay socket in a hash map, scans
//! the (few) permissions and channels of that allocation, and writes straight into the send slot
//! the output hands out: no allocation, no lock.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;
use switchyard_stun::{
    is_channel_data, parse_channel_data, write_binding_success, write_channel_data_header, write_data_indication_with,
    AttrType, Class, ErrorCode, Message, MessageType, MessageWriter, Method, CHANNEL_DATA_HEADER_LEN, FAMILY_IPV4,
    FAMILY_IPV6, TRANSPORT_UDP,
};
use switchyard_udp::SocketId;

use super::auth::{parse_rest_username, rest_key, Reject};
use super::shared::{QuotaError, TurnShared};
use crate::stats::{Counter, DropReason, WorkerCounters};

/// Most permissions (peer IPs) one allocation may hold.
pub const MAX_PERMISSIONS: usize = 64;
/// Most channels one allocation may bind.
pub const MAX_CHANNELS: usize = 64;
/// Channel numbers a ChannelBind may use: RFC 5766's range, as clients still use it (coturn's picks
/// numbers up to 0x7FFF), without the top value.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFE;
/// How often [`TurnServer::tick`] sweeps expired state.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Attributes a TURN request may carry that this server understands (or may safely ignore).
/// Anything else in the comprehension-required range earns a 420. DONT-FRAGMENT is deliberately
/// absent: relayed datagrams are sent without DF, so RFC 8656 §7.2 says treat it as unknown.
const KNOWN: &[AttrType] = &[
    AttrType::USERNAME,
    AttrType::MESSAGE_INTEGRITY,
    AttrType::MESSAGE_INTEGRITY_SHA256,
    AttrType::REALM,
    AttrType::NONCE,
    AttrType::LIFETIME,
    AttrType::REQUESTED_TRANSPORT,
    AttrType::REQUESTED_ADDRESS_FAMILY,
    AttrType::EVEN_PORT,
    AttrType::RESERVATION_TOKEN,
    AttrType::XOR_PEER_ADDRESS,
    AttrType::CHANNEL_NUMBER,
    AttrType::DATA,
];

/// What kind of relay socket an Allocate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayWant {
    /// Any port of the range.
    Any,
    /// An even port; with `reserve_next`, the next port is held for a later Allocate, under a
    /// reservation token.
    Even {
        /// The R bit of EVEN-PORT.
        reserve_next: bool,
    },
    /// The port held under this RESERVATION-TOKEN.
    Reserved([u8; 8]),
}

/// A relay socket opened for an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    /// The socket (an extra socket of the worker's `UdpIo`).
    pub id: SocketId,
    /// Its address: the allocation's relayed transport address.
    pub addr: SocketAddr,
    /// The token of the next port, held for a later Allocate (EVEN-PORT with R).
    pub reservation: Option<[u8; 8]>,
}

/// Where the TURN server's output goes: the worker's send batch and its sockets (or a test fake).
pub trait TurnOutput {
    /// Queues a datagram to `to` leaving through socket `via`; `fill` writes it into the send slot
    /// and returns its length (or `None` to abandon it). True if it was queued.
    fn send<F: FnOnce(&mut [u8]) -> Option<usize>>(&mut self, via: SocketId, to: SocketAddr, fill: F) -> bool;
    /// Opens a relay socket; `None` when no port is free (or sockets cannot be opened right now).
    fn open_relay(&mut self, want: RelayWant) -> Option<Relay>;
    /// Closes a relay socket once the datagrams queued through it are sent.
    fn close_relay(&mut self, id: SocketId);
}

#[derive(Debug)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    client: SocketAddr,
    relay: SocketId,
    relayed: SocketAddr,
    username: Box<str>,
    /// Quota key: the user part of the REST username.
    user: Box<str>,
    key: [u8; 16],
    expires: Instant,
    /// Transaction id of the Allocate that created it: a retransmission gets the same answer.
    txn: [u8; 12],
    reservation: Option<[u8; 8]>,
    perms: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
}

impl Allocation {
    #[inline]
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.perms.iter().any(|&(p, exp)| p == ip && exp > now)
    }

    fn permit(&mut self, ip: IpAddr, until: Instant) {
        match self.perms.iter_mut().find(|(p, _)| *p == ip) {
            Some(p) => p.1 = until,
            None => self.perms.push((ip, until)),
        }
    }
}

/// A request that passed authentication.
struct Authed<'a> {
    username: &'a str,
    user: &'a str,
    key: [u8; 16],
}

/// One worker's TURN allocations and packet path.
pub struct TurnServer {
    shared: Arc<TurnShared>,
    counters: Arc<WorkerCounters>,
    /// The client-facing socket (the worker's TURN listener).
    listener: SocketId,
    allocs: Vec<Option<Allocation>>,
    free: Vec<usize>,
    by_client: FxHashMap<SocketAddr, usize>,
    by_relay: FxHashMap<SocketId, usize>,
    /// Wall-clock anchor: unix seconds at `epoch` (REST expiry and nonces use wall-clock time).
    epoch: Instant,
    epoch_unix: u64,
    next_sweep: Instant,
    indication_seq: u64,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("listener", &self.listener)
            .field("allocations", &self.by_client.len())
            .finish()
    }
}

fn family_byte(a: SocketAddr) -> u8 {
    if a.is_ipv4() {
        FAMILY_IPV4
    } else {
        FAMILY_IPV6
    }
}

impl TurnServer {
    /// A server answering on socket `listener`, with the wall clock read now.
    pub fn new(shared: Arc<TurnShared>, counters: Arc<WorkerCounters>, listener: SocketId) -> TurnServer {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        TurnServer::with_clock(shared, counters, listener, Instant::now(), unix)
    }

    /// A server whose wall clock reads `unix` seconds at `epoch` (tests drive time through the
    /// `now` arguments from there).
    pub fn with_clock(
        shared: Arc<TurnShared>,
        counters: Arc<WorkerCounters>,
        listener: SocketId,
        epoch: Instant,
        unix: u64,
    ) -> TurnServer {
        TurnServer {
            shared,
            counters,
            listener,
            allocs: Vec::new(),
            free: Vec::new(),
            by_client: FxHashMap::default(),
            by_relay: FxHashMap::default(),
            epoch,
            epoch_unix: unix,
            next_sweep: epoch + SWEEP_INTERVAL,
            indication_seq: 0,
        }
    }

    /// Allocations on this worker.
    pub fn allocation_count(&self) -> usize {
        self.by_client.len()
    }

    /// The relayed address of `client`'s allocation, if it has one.
    pub fn relayed_address(&self, client: SocketAddr) -> Option<SocketAddr> {
        self.alloc_of(client).map(|a| a.relayed)
    }

    /// Unix seconds at `now`.
    pub fn unix_time(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.epoch) {
            Some(d) => self.epoch_unix.saturating_add(d.as_secs()),
            None => self.epoch_unix.saturating_sub(self.epoch.saturating_duration_since(now).as_secs()),
        }
    }

    fn alloc_of(&self, client: SocketAddr) -> Option<&Allocation> {
        self.by_client.get(&client).and_then(|&i| self.allocs.get(i)).and_then(Option::as_ref)
    }

    // ---- the client side: the TURN listener ----

    /// Handles a datagram from `from` on the TURN listener.
    pub fn handle_client(&mut self, now: Instant, from: SocketAddr, buf: &[u8], out: &mut impl TurnOutput) {
        match buf.first() {
            Some(0..=3) => self.handle_stun(now, from, buf, out),
            _ if is_channel_data(buf) => self.handle_channel_data(now, from, buf, out),
            _ => self.counters.drop_one(DropReason::TurnMalformed),
        }
    }

    /// Whether `buf` is an Allocate request: the one message that needs a new socket, which the
    /// worker can only open between receive batches (see `io.rs`).
    pub fn is_allocate(buf: &[u8]) -> bool {
        matches!(buf, [0x00, 0x03, ..])
    }

    #[inline]
    fn handle_channel_data(&mut self, now: Instant, from: SocketAddr, buf: &[u8], out: &mut impl TurnOutput) {
        let Some((number, data)) = parse_channel_data(buf) else {
            return self.counters.drop_one(DropReason::TurnMalformed);
        };
        let Some(a) = self.by_client.get(&from).and_then(|&i| self.allocs[i].as_ref()).filter(|a| a.expires > now) else {
            return self.counters.drop_one(DropReason::TurnNoAllocation);
        };
        let Some(peer) = a.channels.iter().find(|c| c.number == number && c.expires > now).map(|c| c.peer) else {
            return self.counters.drop_one(DropReason::TurnNoPermission);
        };
        if !a.permitted(peer.ip(), now) {
            return self.counters.drop_one(DropReason::TurnNoPermission);
        }
        relay_to_peer(&self.counters, a.relay, peer, data, out);
    }

    fn handle_send_indication(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>, out: &mut impl TurnOutput) {
        let Some(a) = self.by_client.get(&from).and_then(|&i| self.allocs[i].as_ref()).filter(|a| a.expires > now) else {
            return self.counters.drop_one(DropReason::TurnNoAllocation);
        };
        let (Some(peer), Some(data)) = (msg.xor_peer_address(), msg.data()) else {
            return self.counters.drop_one(DropReason::TurnMalformed);
        };
        if peer.is_ipv4() != a.relayed.is_ipv4() || !a.permitted(peer.ip(), now) || self.shared.is_own(peer) {
            return self.counters.drop_one(DropReason::TurnNoPermission);
        }
        relay_to_peer(&self.counters, a.relay, peer, data, out);
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, buf: &[u8], out: &mut impl TurnOutput) {
        let Ok(msg) = Message::parse(buf) else {
            return self.counters.drop_one(DropReason::TurnMalformed);
        };
        if msg.has_fingerprint() && !msg.verify_fingerprint() {
            return self.counters.drop_one(DropReason::TurnMalformed);
        }
        match (msg.class(), msg.method()) {
            (Class::Indication, Method::SEND) => self.handle_send_indication(now, from, &msg, out),
            (Class::Request, Method::BINDING) => {
                // NAT discovery: answered to anyone, without credentials.
                let listener = self.listener;
                if out.send(listener, from, |b| write_binding_success(b, &msg, from, &[]).ok()) {
                    self.counters.add(Counter::TurnBindings, 1);
                }
            }
            (Class::Request, m)
                if m == Method::ALLOCATE || m == Method::REFRESH || m == Method::CREATE_PERMISSION || m == Method::CHANNEL_BIND =>
            {
                self.handle_request(now, from, &msg, out)
            }
            (Class::Request, _) => {
                self.error(from, &msg, 400, "Bad Request: unknown method", None, out);
            }
            // Keepalives.
            (Class::Indication, Method::BINDING) => {}
            // Responses and other indications have no business here.
            _ => self.counters.drop_one(DropReason::TurnMalformed),
        }
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>, out: &mut impl TurnOutput) {
        let authed = match self.authenticate(now, from, msg) {
            Ok(a) => a,
            Err(reject) => {
                if reject.is_failure() {
                    self.counters.add(Counter::TurnAuthFailures, 1);
                }
                return self.challenge(now, from, msg, reject, out);
            }
        };
        let mut unknown = [AttrType(0); 8];
        let mut n_unknown = 0;
        for (t, _) in msg.protected_attributes() {
            if t.is_comprehension_required() && !KNOWN.contains(&t) && n_unknown < unknown.len() && !unknown[..n_unknown].contains(&t) {
                unknown[n_unknown] = t;
                n_unknown += 1;
            }
        }
        if n_unknown > 0 {
            let list = &unknown[..n_unknown];
            let key = authed.key;
            self.respond(from, msg, Class::ErrorResponse, Some(&key), out, |w| {
                w.add_error_code(ErrorCode::UNKNOWN_ATTRIBUTE, "Unknown Attribute")?;
                w.add_unknown_attributes(list)
            });
            return;
        }
        let m = msg.method();
        if m == Method::ALLOCATE {
            self.allocate(now, from, msg, &authed, out);
            return;
        }
        // The other requests act on the allocation of this 5-tuple, made with these credentials.
        let Some(&idx) = self.by_client.get(&from) else {
            return self.error(from, msg, ErrorCode::ALLOCATION_MISMATCH, "Allocation Mismatch", Some(&authed.key), out);
        };
        let Some(a) = self.allocs[idx].as_ref() else { return };
        if &*a.username != authed.username {
            return self.error(from, msg, ErrorCode::WRONG_CREDENTIALS, "Wrong Credentials", Some(&authed.key), out);
        }
        if m == Method::REFRESH {
            self.refresh(now, from, msg, idx, out);
        } else if m == Method::CREATE_PERMISSION {
            self.create_permission(now, from, msg, idx, out);
        } else {
            self.channel_bind(now, from, msg, idx, out);
        }
    }

    /// Long-term credentials with a REST username (RFC 8489 §9.2.4 order of checks).
    fn authenticate<'m>(&self, now: Instant, from: SocketAddr, msg: &Message<'m>) -> Result<Authed<'m>, Reject> {
        if !msg.has_integrity() {
            return Err(Reject::Challenge);
        }
        let (Some(username), Some(realm), Some(nonce)) = (msg.username(), msg.realm(), msg.nonce()) else {
            return Err(Reject::Incomplete);
        };
        let unix = self.unix_time(now);
        if !self.shared.nonces.check(nonce, from, unix) {
            return Err(Reject::StaleNonce);
        }
        let cfg = &self.shared.cfg;
        if realm != cfg.realm.as_bytes() {
            return Err(Reject::WrongRealm);
        }
        let username = std::str::from_utf8(username).map_err(|_| Reject::BadUsername)?;
        let rest = parse_rest_username(username).ok_or(Reject::BadUsername)?;
        // Check the MAC before saying "expired": only the secret's holder learns that.
        let key = rest_key(cfg.secret.as_bytes(), username.as_bytes(), realm);
        if !msg.verify_integrity(&key) {
            return Err(Reject::BadIntegrity);
        }
        if rest.expires <= unix {
            return Err(Reject::Expired);
        }
        Ok(Authed { username, user: rest.user, key })
    }

    /// 401 / 438 (with REALM and a fresh NONCE, no MESSAGE-INTEGRITY) or 400.
    fn challenge(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>, reject: Reject, out: &mut impl TurnOutput) {
        let nonce = self.shared.nonces.issue(from, self.unix_time(now));
        let realm = self.shared.cfg.realm.as_bytes();
        self.respond(from, msg, Class::ErrorResponse, None, out, |w| {
            w.add_error_code(reject.code(), reject.reason())?;
            if reject != Reject::Incomplete {
                w.add_attr(AttrType::REALM, realm)?;
                w.add_attr(AttrType::NONCE, &nonce)?;
            }
            Ok(())
        });
    }

    fn error(&self, from: SocketAddr, msg: &Message<'_>, code: u16, reason: &str, key: Option<&[u8; 16]>, out: &mut impl TurnOutput) {
        self.respond(from, msg, Class::ErrorResponse, key.map(|k| &k[..]), out, |w| w.add_error_code(code, reason));
    }

    /// Writes a response of `class` to `msg`: `attrs`, then MESSAGE-INTEGRITY with `key` (if any),
    /// then FINGERPRINT if the request had one.
    fn respond(
        &self,
        to: SocketAddr,
        msg: &Message<'_>,
        class: Class,
        key: Option<&[u8]>,
        out: &mut impl TurnOutput,
        attrs: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), switchyard_stun::Error>,
    ) -> bool {
        let fingerprint = msg.has_fingerprint();
        let ty = MessageType::new(class, msg.method());
        out.send(self.listener, to, |b| {
            let mut w = MessageWriter::new(b, ty, msg.transaction_id()).ok()?;
            attrs(&mut w).ok()?;
            if let Some(k) = key {
                w.add_message_integrity(k).ok()?;
            }
            if fingerprint {
                w.add_fingerprint().ok()?;
            }
            Some(w.finish())
        })
    }

    fn granted_lifetime(&self, requested: Option<u32>) -> Duration {
        let cfg = &self.shared.cfg;
        let asked = requested.map_or(cfg.default_lifetime, |s| Duration::from_secs(u64::from(s)));
        asked.min(cfg.max_lifetime).max(cfg.default_lifetime)
    }

    fn allocate(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>, authed: &Authed<'_>, out: &mut impl TurnOutput) {
        let key = authed.key;
        if let Some(a) = self.alloc_of(from) {
            // A retransmitted Allocate gets the original answer; anything else is a mismatch.
            if &a.txn == msg.transaction_id() && &*a.username == authed.username {
                let (relayed, reservation) = (a.relayed, a.reservation);
                let left = a.expires.saturating_duration_since(now).as_secs() as u32;
                self.allocate_success(from, msg, relayed, left, reservation, &key, out);
            } else {
                self.error(from, msg, ErrorCode::ALLOCATION_MISMATCH, "Allocation Mismatch", Some(&key), out);
            }
            return;
        }
        match msg.requested_transport() {
            None => return self.error(from, msg, 400, "Bad Request: REQUESTED-TRANSPORT missing", Some(&key), out),
            Some(TRANSPORT_UDP) => {}
            Some(_) => {
                return self.error(
                    from,
                    msg,
                    ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
                    "Unsupported Transport Protocol",
                    Some(&key),
                    out,
                )
            }
        }
        let family = msg.requested_address_family().unwrap_or(FAMILY_IPV4);
        let ours = if self.shared.relay_ip.is_ipv4() { FAMILY_IPV4 } else { FAMILY_IPV6 };
        if msg.attr(AttrType::REQUESTED_ADDRESS_FAMILY).is_some() && msg.reservation_token().is_some() {
            return self.error(from, msg, 400, "Bad Request", Some(&key), out);
        }
        if family != ours {
            return self.error(
                from,
                msg,
                ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
                "Address Family not Supported",
                Some(&key),
                out,
            );
        }
        let want = match (msg.even_port(), msg.reservation_token()) {
            (Some(_), Some(_)) => return self.error(from, msg, 400, "Bad Request: EVEN-PORT with RESERVATION-TOKEN", Some(&key), out),
            (Some(reserve_next), None) => RelayWant::Even { reserve_next },
            (None, Some(token)) => RelayWant::Reserved(token),
            (None, None) if msg.attr(AttrType::EVEN_PORT).is_some() || msg.attr(AttrType::RESERVATION_TOKEN).is_some() => {
                return self.error(from, msg, 400, "Bad Request: malformed EVEN-PORT or RESERVATION-TOKEN", Some(&key), out)
            }
            (None, None) => RelayWant::Any,
        };
        if let Err(q) = self.shared.try_acquire(authed.user) {
            self.counters.add(Counter::TurnQuotaRejections, 1);
            let reason = match q {
                QuotaError::User => "Allocation Quota Reached: too many allocations for this user",
                QuotaError::Global => "Allocation Quota Reached: server full",
            };
            return self.error(from, msg, ErrorCode::ALLOCATION_QUOTA_REACHED, reason, Some(&key), out);
        }
        let Some(relay) = out.open_relay(want) else {
            self.shared.release(authed.user);
            return self.error(from, msg, ErrorCode::INSUFFICIENT_CAPACITY, "Insufficient Capacity", Some(&key), out);
        };
        let lifetime = self.granted_lifetime(msg.lifetime());
        let a = Allocation {
            client: from,
            relay: relay.id,
            relayed: relay.addr,
            username: authed.username.into(),
            user: authed.user.into(),
            key,
            expires: now + lifetime,
            txn: *msg.transaction_id(),
            reservation: relay.reservation,
            perms: Vec::new(),
            channels: Vec::new(),
        };
        let idx = crate::slots::insert(&mut self.allocs, &mut self.free, a);
        self.by_client.insert(from, idx);
        self.by_relay.insert(relay.id, idx);
        self.counters.add(Counter::TurnAllocations, 1);
        tracing::debug!(client = %from, relayed = %relay.addr, lifetime = lifetime.as_secs(), "TURN allocation");
        self.allocate_success(from, msg, relay.addr, lifetime.as_secs() as u32, relay.reservation, &key, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate_success(
        &self,
        from: SocketAddr,
        msg: &Message<'_>,
        relayed: SocketAddr,
        lifetime: u32,
        reservation: Option<[u8; 8]>,
        key: &[u8; 16],
        out: &mut impl TurnOutput,
    ) {
        self.respond(from, msg, Class::SuccessResponse, Some(key), out, |w| {
            w.add_xor_address(AttrType::XOR_RELAYED_ADDRESS, relayed)?;
            w.add_u32(AttrType::LIFETIME, lifetime)?;
            if let Some(t) = reservation {
                w.add_attr(AttrType::RESERVATION_TOKEN, &t)?;
            }
            w.add_xor_address(AttrType::XOR_MAPPED_ADDRESS, from)
        });
    }

    fn refresh(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>, idx: usize, out: &mut impl TurnOutput) {
        let requested = msg.lifetime();
        let lifetime = self.granted_lifetime(requested);
        let Some(a) = self.allocs[idx].as_mut() else { return };
        let key = a.key;
        if let Some(f) = msg.requested_address_family() {
            if f != family_byte(a.relayed) {
                return self.error(from, msg, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, "Peer Address Family Mismatch", Some(&key), out);
            }
        }
        let granted = if requested == Some(0) {
            self.remove(idx, out);
            0
        } else {
            a.expires = now + lifetime;
            lifetime.as_secs() as u32
        };
        self.respond(from, msg, Class::SuccessResponse, Some(&key), out, |w| w.add_u32(AttrType::LIFETIME, granted));
    }

    fn create_permission(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>, idx: usize, out: &mut impl TurnOutput) {
        let until = now + self.shared.cfg.permission_lifetime;
        let Some(a) = self.allocs[idx].as_ref() else { return };
        let key = a.key;
        let mut peers = 0;
        let mut new = 0;
        for p in msg.xor_peer_addresses() {
            let Some(p) = p else {
                return self.error(from, msg, 400, "Bad Request: malformed XOR-PEER-ADDRESS", Some(&key), out);
            };
            if p.is_ipv4() != a.relayed.is_ipv4() {
                return self.error(from, msg, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, "Peer Address Family Mismatch", Some(&key), out);
            }
            if !self.shared.ip_allowed(p.ip()) {
                return self.error(from, msg, ErrorCode::FORBIDDEN, "Forbidden", Some(&key), out);
            }
            peers += 1;
            if !a.perms.iter().any(|(ip, _)| *ip == p.ip()) {
                new += 1;
            }
        }
        if peers == 0 {
            return self.error(from, msg, 400, "Bad Request: XOR-PEER-ADDRESS missing", Some(&key), out);
        }
        if a.perms.len() + new > MAX_PERMISSIONS {
            return self.error(from, msg, ErrorCode::INSUFFICIENT_CAPACITY, "Insufficient Capacity", Some(&key), out);
        }
        let Some(a) = self.allocs[idx].as_mut() else { return };
        for p in msg.xor_peer_addresses().flatten() {
            a.permit(p.ip(), until);
        }
        self.respond(from, msg, Class::SuccessResponse, Some(&key), out, |_| Ok(()));
    }

    fn channel_bind(&mut self, now: Instant, from: SocketAddr, msg: &Message<'_>, idx: usize, out: &mut impl TurnOutput) {
        let cfg = &self.shared.cfg;
        let (perm_until, chan_until) = (now + cfg.permission_lifetime, now + cfg.channel_lifetime);
        let Some(a) = self.allocs[idx].as_ref() else { return };
        let key = a.key;
        let (Some(number), Some(peer)) = (msg.channel_number(), msg.xor_peer_address()) else {
            return self.error(from, msg, 400, "Bad Request: CHANNEL-NUMBER or XOR-PEER-ADDRESS missing", Some(&key), out);
        };
        if !CHANNELS.contains(&number) {
            return self.error(from, msg, 400, "Bad Request: channel number out of range", Some(&key), out);
        }
        if peer.is_ipv4() != a.relayed.is_ipv4() {
            return self.error(from, msg, ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH, "Peer Address Family Mismatch", Some(&key), out);
        }
        if !self.shared.peer_allowed(peer) {
            return self.error(from, msg, ErrorCode::FORBIDDEN, "Forbidden", Some(&key), out);
        }
        let live = |c: &&Channel| c.expires > now;
        if a.channels.iter().filter(live).any(|c| (c.number == number) != (c.peer == peer)) {
            return self.error(from, msg, 400, "Bad Request: channel or peer already bound differently", Some(&key), out);
        }
        let exists = a.channels.iter().any(|c| c.number == number && c.peer == peer);
        let new_perm = !a.perms.iter().any(|(ip, _)| *ip == peer.ip());
        if (!exists && a.channels.iter().filter(live).count() >= MAX_CHANNELS) || (new_perm && a.perms.len() >= MAX_PERMISSIONS) {
            return self.error(from, msg, ErrorCode::INSUFFICIENT_CAPACITY, "Insufficient Capacity", Some(&key), out);
        }
        let Some(a) = self.allocs[idx].as_mut() else { return };
        // Expired bindings of this number or peer make way.
        a.channels.retain(|c| c.expires > now || (c.number != number && c.peer != peer));
        match a.channels.iter_mut().find(|c| c.number == number) {
            Some(c) => c.expires = chan_until,
            None => a.channels.push(Channel { number, peer, expires: chan_until }),
        }
        a.permit(peer.ip(), perm_until);
        self.respond(from, msg, Class::SuccessResponse, Some(&key), out, |_| Ok(()));
    }

    // ---- the peer side: relay sockets ----

    /// Whether `via` is one of this server's relay sockets.
    pub fn is_relay(&self, via: SocketId) -> bool {
        self.by_relay.contains_key(&via)
    }

    /// Handles a datagram from `from` that arrived on relay socket `relay`.
    #[inline]
    pub fn handle_peer(&mut self, now: Instant, relay: SocketId, from: SocketAddr, buf: &[u8], out: &mut impl TurnOutput) {
        let Some(a) = self.by_relay.get(&relay).and_then(|&i| self.allocs[i].as_ref()).filter(|a| a.expires > now) else {
            return self.counters.drop_one(DropReason::TurnNoAllocation);
        };
        if !a.permitted(from.ip(), now) {
            return self.counters.drop_one(DropReason::TurnNoPermission);
        }
        let client = a.client;
        let channel = a.channels.iter().find(|c| c.peer == from && c.expires > now).map(|c| c.number);
        let queued = match channel {
            Some(number) => out.send(self.listener, client, |b| {
                let n = write_channel_data_header(b, number, buf.len()).ok()?;
                b.get_mut(CHANNEL_DATA_HEADER_LEN..n)?.copy_from_slice(buf);
                Some(n)
            }),
            None => {
                self.indication_seq = self.indication_seq.wrapping_add(1);
                let mut tid = [0u8; 12];
                tid[4..].copy_from_slice(&self.indication_seq.to_be_bytes());
                out.send(self.listener, client, |b| {
                    write_data_indication_with(b, &tid, from, buf.len(), |d| d.copy_from_slice(buf)).ok()
                })
            }
        };
        if queued {
            self.counters.add(Counter::TurnRelayedToClient, 1);
        } else {
            self.counters.drop_one(DropReason::SendBatchFull);
        }
    }

    // ---- time ----

    /// Sweeps expired allocations, permissions and channels (at most every [`SWEEP_INTERVAL`]);
    /// call it at least that often.
    pub fn tick(&mut self, now: Instant, out: &mut impl TurnOutput) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        self.shared.sweep_reservations(now);
        for idx in 0..self.allocs.len() {
            let Some(a) = self.allocs[idx].as_mut() else { continue };
            if a.expires <= now {
                tracing::debug!(client = %a.client, relayed = %a.relayed, "TURN allocation expired");
                self.remove(idx, out);
                continue;
            }
            a.perms.retain(|&(_, exp)| exp > now);
            a.channels.retain(|c| c.expires > now);
        }
    }

    fn remove(&mut self, idx: usize, out: &mut impl TurnOutput) {
        let Some(a) = self.allocs.get_mut(idx).and_then(Option::take) else { return };
        self.by_client.remove(&a.client);
        self.by_relay.remove(&a.relay);
        out.close_relay(a.relay);
        self.shared.release(&a.user);
        self.free.push(idx);
        self.counters.add(Counter::TurnAllocationsClosed, 1);
    }

    /// Closes every allocation (the engine is stopping).
    pub fn shutdown(&mut self, out: &mut impl TurnOutput) {
        for idx in 0..self.allocs.len() {
            self.remove(idx, out);
        }
    }
}

#[inline]
fn relay_to_peer(counters: &WorkerCounters, relay: SocketId, peer: SocketAddr, data: &[u8], out: &mut impl TurnOutput) {
    let queued = out.send(relay, peer, |b| {
        b.get_mut(..data.len())?.copy_from_slice(data);
        Some(data.len())
    });
    if queued {
        counters.add(Counter::TurnRelayedToPeer, 1);
    } else {
        counters.drop_one(DropReason::SendBatchFull);
    }
}
