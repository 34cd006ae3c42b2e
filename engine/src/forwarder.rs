//! The sans-I/O core of one worker: bytes and time in, datagrams / hand-offs / events out.
//!
//! [`Forwarder`] owns the worker's transports and routes and never touches a socket or the clock: the
//! worker loop (`worker.rs`) passes each received datagram with the batch's receive time, and an
//! [`Output`] collects what to send. That makes every rule of the packet path testable without sockets:
//!
//! 1. demultiplex by first byte (RFC 7983);
//! 2. STUN binding requests are checked against the transport's ICE password and answered; a valid
//!    check binds the source address to the transport;
//! 3. DTLS from a bound address is punted to the control daemon (rate-limited);
//! 4. SRTP/SRTCP from a bound address is decrypted once, in place, and routed by SSRC: each local
//!    subscriber gets its own encryption straight into a send buffer; subscribers on other workers get
//!    one shared copy of the plaintext, handed over a lock-free queue.
//!
//! Nothing on the SRTP path allocates: routes and buffers are built when the control daemon asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashMap;
use switchyard_protocol::{
    ErrorCode, Event, KeySalt, TransportId, TransportInfo, SRTP_RTCP_OUTBOUND, SRTP_RTP_INBOUND, SRTP_RTP_OUTBOUND,
};
use switchyard_srtp::{Context, IndexKind, Profile};
use switchyard_stun::{split_username, write_binding_success, Class, Message, Method};

use crate::demux::{self, Kind};
use crate::handoff::{Handoff, PacketKind};
use crate::pool::{PacketBuf, PacketPool};
use crate::stats::{Counter, DropReason, WorkerCounters};
use crate::transport::Transport;

/// SSRC the engine uses as the sender of RTCP it originates (keyframe requests).
pub const ENGINE_RTCP_SSRC: u32 = 0x5359_4400;

/// Where a routed packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// A transport on this worker.
    Local(TransportId),
    /// A transport on another worker.
    Remote {
        /// Its worker.
        worker: u16,
        /// The transport.
        transport: TransportId,
    },
}

impl Dest {
    /// The destination transport.
    pub fn transport(&self) -> TransportId {
        match *self {
            Dest::Local(t) => t,
            Dest::Remote { transport, .. } => transport,
        }
    }
}

/// What the forwarder produces; implemented by the worker loop (and by tests).
pub trait Output {
    /// Queues one datagram to `to`: `fill` writes it into a send buffer and returns its length, or
    /// `None` to abandon it. Returns false if it was not queued.
    fn send<F: FnOnce(&mut [u8]) -> Option<usize>>(&mut self, to: SocketAddr, received: Instant, fill: F) -> bool;
    /// Queues a shared packet for a transport on another worker; gives it back if that queue is full.
    fn handoff(&mut self, worker: u16, h: Handoff) -> Result<(), Handoff>;
    /// Reports an event to the control daemon; false if the event queue is full.
    fn event(&mut self, ev: Event) -> bool;
}

/// A worker-command failure: nothing was changed.
pub type CommandError = (ErrorCode, String);

/// One worker's transports, routes and packet path.
pub struct Forwarder {
    worker: u16,
    counters: Arc<WorkerCounters>,
    transports: Vec<Option<Transport>>,
    free_slots: Vec<usize>,
    by_id: FxHashMap<TransportId, usize>,
    by_ufrag: FxHashMap<String, usize>,
    by_addr: FxHashMap<SocketAddr, usize>,
    /// (publisher slot, ssrc) -> subscribers.
    routes: FxHashMap<(usize, u32), Vec<Dest>>,
    /// (subscriber slot, media ssrc) -> the publisher, for feedback (PLI, FIR, NACK) flowing upstream.
    feedback: FxHashMap<(usize, u32), Dest>,
    pool: PacketPool,
    /// Largest subscriber list in `routes`, kept current on every route change.
    max_fanout: usize,
}

impl Forwarder {
    /// An empty forwarder for worker `worker`, with `pool_size` shared packet buffers.
    pub fn new(worker: u16, counters: Arc<WorkerCounters>, pool_size: usize) -> Forwarder {
        Forwarder {
            worker,
            counters,
            transports: Vec::new(),
            free_slots: Vec::new(),
            by_id: FxHashMap::default(),
            by_ufrag: FxHashMap::default(),
            by_addr: FxHashMap::default(),
            routes: FxHashMap::default(),
            feedback: FxHashMap::default(),
            pool: PacketPool::new(pool_size),
            max_fanout: 0,
        }
    }

    /// This worker's counters.
    pub fn counters(&self) -> &WorkerCounters {
        &self.counters
    }

    /// Number of transports.
    pub fn transport_count(&self) -> usize {
        self.by_id.len()
    }

    /// Largest number of subscribers any one stream here has: the worker keeps that much room in its
    /// send batch before taking the next datagram.
    pub fn max_fanout(&self) -> usize {
        self.max_fanout
    }

    fn refresh_fanout(&mut self) {
        self.max_fanout = self.routes.values().map(Vec::len).max().unwrap_or(0);
    }

    fn slot(&self, id: TransportId) -> Result<usize, CommandError> {
        self.by_id
            .get(&id)
            .copied()
            .ok_or_else(|| (ErrorCode::UnknownTransport, format!("no transport {id} on worker {}", self.worker)))
    }

    // ---- commands from the control daemon ----

    /// Adds a transport answering ICE checks for `ufrag`.
    pub fn add_transport(&mut self, id: TransportId, ufrag: String, pwd: String, now: Instant) -> Result<(), CommandError> {
        if self.by_id.contains_key(&id) {
            return Err((ErrorCode::Duplicate, format!("transport {id} already exists")));
        }
        if self.by_ufrag.contains_key(&ufrag) {
            return Err((ErrorCode::Duplicate, format!("ICE ufrag {ufrag:?} is already in use")));
        }
        if ufrag.is_empty() || ufrag.contains(':') || pwd.len() < 22 {
            return Err((
                ErrorCode::Invalid,
                "ICE ufrag must be non-empty without ':' and the password at least 22 characters (RFC 8839)".into(),
            ));
        }
        let t = Transport::new(id, ufrag.clone(), pwd, now);
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.transports[s] = Some(t);
                s
            }
            None => {
                self.transports.push(Some(t));
                self.transports.len() - 1
            }
        };
        self.by_id.insert(id, slot);
        self.by_ufrag.insert(ufrag, slot);
        Ok(())
    }

    /// Removes a transport, its addresses, the routes it publishes and any route or feedback entry
    /// naming it on this worker.
    pub fn remove_transport(&mut self, id: TransportId) -> Result<(), CommandError> {
        let slot = self.slot(id)?;
        let Some(t) = self.transports[slot].take() else {
            return Err((ErrorCode::Internal, format!("transport {id} slot empty")));
        };
        self.by_id.remove(&id);
        self.by_ufrag.remove(&t.ufrag);
        for a in t.validated.iter().flatten() {
            self.by_addr.remove(a);
        }
        self.routes.retain(|(s, _), _| *s != slot);
        for dests in self.routes.values_mut() {
            dests.retain(|d| d.transport() != id);
        }
        self.routes.retain(|_, d| !d.is_empty());
        self.feedback.retain(|(s, _), d| *s != slot && d.transport() != id);
        self.free_slots.push(slot);
        self.refresh_fanout();
        Ok(())
    }

    /// Binds `addr` to a transport as if a check from it had passed and selects it for sending (the
    /// control daemon re-installs the address a previous engine bound, after a restart).
    pub fn bind_remote(&mut self, id: TransportId, addr: SocketAddr) -> Result<(), CommandError> {
        let slot = self.slot(id)?;
        if let Some(&other) = self.by_addr.get(&addr) {
            if other != slot {
                return Err((ErrorCode::Duplicate, format!("{addr} is bound to another transport")));
            }
        }
        let Some(t) = self.transports[slot].as_mut() else {
            return Err((ErrorCode::Internal, format!("transport {id} slot empty")));
        };
        if let Some(evicted) = t.validate(addr) {
            self.by_addr.remove(&evicted);
        }
        t.remote = Some(addr);
        self.by_addr.insert(addr, slot);
        Ok(())
    }

    /// Installs SRTP keys on a transport.
    pub fn set_srtp(&mut self, id: TransportId, profile: u16, inbound: &KeySalt, outbound: &KeySalt) -> Result<(), CommandError> {
        let slot = self.slot(id)?;
        let p = Profile::from_rfc5764_id(profile)
            .ok_or_else(|| (ErrorCode::Invalid, format!("unsupported SRTP profile {profile:#06x}")))?;
        let cin = Context::new(p, &inbound.key, &inbound.salt)
            .map_err(|e| (ErrorCode::Invalid, format!("inbound SRTP keys: {e}")))?;
        let cout = Context::new(p, &outbound.key, &outbound.salt)
            .map_err(|e| (ErrorCode::Invalid, format!("outbound SRTP keys: {e}")))?;
        if let Some(t) = self.transports[slot].as_mut() {
            t.srtp_in = Some(cin);
            t.srtp_out = Some(cout);
        }
        Ok(())
    }

    /// Seeds a transport's per-SSRC SRTP counters from a previous engine's snapshot (see
    /// `Request::ResumeSrtp`). Checks every entry before changing anything.
    pub fn resume_srtp(&mut self, id: TransportId, indexes: &[(u32, u8, u64)]) -> Result<(), CommandError> {
        let slot = self.slot(id)?;
        let Some(t) = self.transports[slot].as_mut() else {
            return Err((ErrorCode::UnknownTransport, format!("no transport {id}")));
        };
        let (Some(cin), Some(cout)) = (t.srtp_in.as_mut(), t.srtp_out.as_mut()) else {
            return Err((ErrorCode::Invalid, format!("transport {id} has no SRTP keys")));
        };
        let kind = |k: u8| match k {
            SRTP_RTP_INBOUND => Ok(IndexKind::RtpIn),
            SRTP_RTP_OUTBOUND => Ok(IndexKind::RtpOut),
            SRTP_RTCP_OUTBOUND => Ok(IndexKind::RtcpOut),
            k => Err((ErrorCode::Invalid, format!("unknown SRTP index kind {k}"))),
        };
        for &(ssrc, k, index) in indexes {
            kind(k)?;
            let (max, what) = if k == SRTP_RTCP_OUTBOUND { (1u64 << 31, "SRTCP") } else { ((1u64 << 48) - 1, "SRTP") };
            if index > max {
                return Err((ErrorCode::Invalid, format!("{what} index {index} of SSRC {ssrc} out of range")));
            }
        }
        for &(ssrc, k, index) in indexes {
            let k = kind(k)?;
            let ctx = if k == IndexKind::RtpIn { &mut *cin } else { &mut *cout };
            ctx.resume(ssrc, k, index);
        }
        Ok(())
    }

    /// Routes `ssrc` from local publisher `publisher` to `dest`.
    pub fn add_route(&mut self, publisher: TransportId, ssrc: u32, dest: Dest, limit: usize) -> Result<(), CommandError> {
        let slot = self.slot(publisher)?;
        let dests = self.routes.entry((slot, ssrc)).or_default();
        if dests.iter().any(|d| d.transport() == dest.transport()) {
            return Ok(());
        }
        if dests.len() >= limit {
            return Err((ErrorCode::LimitReached, format!("stream {ssrc} already has {limit} subscribers")));
        }
        dests.push(dest);
        self.max_fanout = self.max_fanout.max(dests.len());
        Ok(())
    }

    /// Stops routing `ssrc` from `publisher` to `subscriber`.
    pub fn remove_route(&mut self, publisher: TransportId, ssrc: u32, subscriber: TransportId) -> Result<(), CommandError> {
        let slot = self.slot(publisher)?;
        if let Some(dests) = self.routes.get_mut(&(slot, ssrc)) {
            dests.retain(|d| d.transport() != subscriber);
            if dests.is_empty() {
                self.routes.remove(&(slot, ssrc));
            }
        }
        self.refresh_fanout();
        Ok(())
    }

    /// Sends feedback that local subscriber `subscriber` sends about `ssrc` to its publisher.
    pub fn add_feedback(&mut self, subscriber: TransportId, ssrc: u32, publisher: Dest) -> Result<(), CommandError> {
        let slot = self.slot(subscriber)?;
        self.feedback.insert((slot, ssrc), publisher);
        Ok(())
    }

    /// Forgets a feedback route.
    pub fn remove_feedback(&mut self, subscriber: TransportId, ssrc: u32) -> Result<(), CommandError> {
        let slot = self.slot(subscriber)?;
        self.feedback.remove(&(slot, ssrc));
        Ok(())
    }

    /// Sends a DTLS datagram from the control daemon to the transport's selected address.
    pub fn dtls_out(&mut self, id: TransportId, datagram: &[u8], now: Instant, out: &mut impl Output) -> Result<(), CommandError> {
        let slot = self.slot(id)?;
        let Some(remote) = self.transports[slot].as_ref().and_then(|t| t.remote) else {
            return Err((ErrorCode::Invalid, format!("transport {id} has not passed ICE yet")));
        };
        let sent = out.send(remote, now, |b| {
            let dst = b.get_mut(..datagram.len())?;
            dst.copy_from_slice(datagram);
            Some(datagram.len())
        });
        if sent {
            self.counters.add(Counter::DtlsOut, 1);
            Ok(())
        } else {
            Err((ErrorCode::Internal, "send batch full or datagram too large".into()))
        }
    }

    /// Sends a PLI for `ssrc` to the publisher `id` (a new subscriber needs a keyframe to start).
    pub fn request_keyframe(&mut self, id: TransportId, ssrc: u32, now: Instant, out: &mut impl Output) -> Result<(), CommandError> {
        let slot = self.slot(id)?;
        let Some(t) = self.transports[slot].as_mut() else {
            return Err((ErrorCode::UnknownTransport, format!("no transport {id}")));
        };
        if t.remote.is_none() || t.srtp_out.is_none() {
            return Err((ErrorCode::Invalid, format!("transport {id} has no media connection yet")));
        }
        // PLI: V=2, FMT=1, PT=206, length 2 words; sender SSRC is the engine's own, media SSRC the stream.
        let mut pli = [0x81, 206, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0];
        pli[4..8].copy_from_slice(&ENGINE_RTCP_SSRC.to_be_bytes());
        pli[8..12].copy_from_slice(&ssrc.to_be_bytes());
        let before = self.counters.get(Counter::RtcpForwarded);
        protect_and_send(t, &self.counters, &pli, PacketKind::Rtcp, now, out);
        if self.counters.get(Counter::RtcpForwarded) > before {
            Ok(())
        } else {
            Err((ErrorCode::Internal, "could not send the keyframe request".into()))
        }
    }

    /// The transports on this worker (for the Snapshot reply).
    pub fn snapshot(&self) -> Vec<TransportInfo> {
        let mut v = Vec::new();
        for (slot, t) in self.transports.iter().enumerate() {
            let Some(t) = t else { continue };
            let mut subscriptions = Vec::new();
            for ((s, ssrc), dests) in &self.routes {
                if *s == slot {
                    subscriptions.extend(dests.iter().map(|d| (*ssrc, d.transport())));
                }
            }
            subscriptions.sort_unstable();
            let mut srtp_indexes = Vec::new();
            let contexts = [(t.srtp_in.as_ref(), true), (t.srtp_out.as_ref(), false)];
            for (ctx, inbound) in contexts {
                for (ssrc, kind, index) in ctx.map(Context::indexes).unwrap_or_default() {
                    let k = match kind {
                        IndexKind::RtpIn if inbound => SRTP_RTP_INBOUND,
                        IndexKind::RtpOut if !inbound => SRTP_RTP_OUTBOUND,
                        IndexKind::RtcpOut if !inbound => SRTP_RTCP_OUTBOUND,
                        _ => continue,
                    };
                    srtp_indexes.push((ssrc, k, index));
                }
            }
            v.push(TransportInfo {
                transport: t.id,
                worker: self.worker,
                ufrag: t.ufrag.clone(),
                remote: t.remote,
                srtp: t.srtp_in.is_some(),
                subscriptions,
                tracks: Vec::new(),
                srtp_indexes,
            });
        }
        v
    }

    // ---- the packet path ----

    /// Handles one received datagram. `buf` is modified in place (SRTP is decrypted there).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8], out: &mut impl Output) {
        self.counters.add(Counter::RxPackets, 1);
        self.counters.add(Counter::RxBytes, buf.len() as u64);
        match demux::classify(buf) {
            Kind::Stun => self.handle_stun(now, from, buf, out),
            Kind::Dtls => self.handle_dtls(now, from, buf, out),
            Kind::Rtp => self.handle_srtp(now, from, buf, false, out),
            Kind::Rtcp => self.handle_srtp(now, from, buf, true, out),
            Kind::ChannelData => self.counters.drop_one(DropReason::TurnWrongPort),
            Kind::Other => self.counters.drop_one(DropReason::NotWebrtc),
        }
    }

    fn handle_stun(&mut self, now: Instant, from: SocketAddr, buf: &[u8], out: &mut impl Output) {
        let Ok(msg) = Message::parse(buf) else {
            return self.counters.drop_one(DropReason::StunMalformed);
        };
        if msg.class() != Class::Request || msg.method() != Method::BINDING {
            return self.counters.drop_one(DropReason::StunUnexpected);
        }
        let Some((local, _remote)) = msg.username().and_then(split_username) else {
            return self.counters.drop_one(DropReason::StunMalformed);
        };
        let Some(&slot) = std::str::from_utf8(local).ok().and_then(|u| self.by_ufrag.get(u)) else {
            return self.counters.drop_one(DropReason::StunUnknownUfrag);
        };
        let Some(t) = self.transports[slot].as_mut() else {
            return self.counters.drop_one(DropReason::StunUnknownUfrag);
        };
        if !msg.has_fingerprint() || !msg.verify_fingerprint() || !msg.verify_integrity(t.pwd.as_bytes()) {
            return self.counters.drop_one(DropReason::StunBadIntegrity);
        }
        t.last_rx = now;
        let pwd = t.pwd.as_bytes();
        if out.send(from, now, |b| write_binding_success(b, &msg, from, pwd).ok()) {
            self.counters.add(Counter::StunAnswered, 1);
        } else {
            self.counters.drop_one(DropReason::SendBatchFull);
        }
        if let Some(evicted) = t.validate(from) {
            self.by_addr.remove(&evicted);
        }
        self.by_addr.insert(from, slot);
        // ICE-lite: the controlling side's nomination selects the pair; until one arrives, the first
        // address that passed a check is as good as any.
        if (msg.use_candidate() || t.remote.is_none()) && t.remote != Some(from) {
            t.remote = Some(from);
            if !out.event(Event::IceBound { transport: t.id, addr: from }) {
                self.counters.drop_one(DropReason::EventQueueFull);
            }
        }
    }

    fn handle_dtls(&mut self, now: Instant, from: SocketAddr, buf: &[u8], out: &mut impl Output) {
        let Some(t) = self.by_addr.get(&from).and_then(|&s| self.transports[s].as_mut()) else {
            return self.counters.drop_one(DropReason::UnboundSource);
        };
        t.last_rx = now;
        if !t.take_dtls_token(now) {
            return self.counters.drop_one(DropReason::DtlsRateLimited);
        }
        if out.event(Event::DtlsIn { transport: t.id, datagram: buf.to_vec() }) {
            self.counters.add(Counter::DtlsIn, 1);
        } else {
            self.counters.drop_one(DropReason::EventQueueFull);
        }
    }

    fn handle_srtp(&mut self, now: Instant, from: SocketAddr, buf: &mut [u8], rtcp: bool, out: &mut impl Output) {
        let Some(&slot) = self.by_addr.get(&from) else {
            return self.counters.drop_one(DropReason::UnboundSource);
        };
        let Some(t) = self.transports[slot].as_mut() else {
            return self.counters.drop_one(DropReason::UnboundSource);
        };
        t.last_rx = now;
        let Some(ctx) = t.srtp_in.as_mut() else {
            return self.counters.drop_one(DropReason::NoSrtpKeys);
        };
        let res = if rtcp { ctx.unprotect_rtcp(buf) } else { ctx.unprotect_rtp(buf) };
        let len = match res {
            Ok(n) => n,
            Err(e) => return self.counters.drop_one(srtp_drop_reason(&e)),
        };
        let plain = &buf[..len];
        if !rtcp {
            // unprotect_rtp validated the 12-byte header.
            let ssrc = u32::from_be_bytes([plain[8], plain[9], plain[10], plain[11]]);
            self.fan_out(slot, ssrc, plain, PacketKind::Rtp, now, out);
            return;
        }
        // RTCP: a sender report (or anything whose sender SSRC is a routed stream) goes down to that
        // stream's subscribers; feedback about a stream goes up to its publisher.
        let sender = u32::from_be_bytes([plain[4], plain[5], plain[6], plain[7]]);
        if self.routes.contains_key(&(slot, sender)) {
            self.fan_out(slot, sender, plain, PacketKind::Rtcp, now, out);
        } else if let Some(media) = feedback_media_ssrc(plain) {
            if let Some(&dest) = self.feedback.get(&(slot, media)) {
                self.deliver(dest, plain, PacketKind::Rtcp, now, out, &mut None);
            }
        }
    }

    fn fan_out(&mut self, slot: usize, ssrc: u32, plain: &[u8], kind: PacketKind, now: Instant, out: &mut impl Output) {
        let Some(dests) = self.routes.get(&(slot, ssrc)) else { return };
        let mut shared = None;
        for &dest in dests {
            deliver_to(
                &mut self.transports,
                &self.by_id,
                &mut self.pool,
                &self.counters,
                dest,
                plain,
                kind,
                now,
                out,
                &mut shared,
            );
        }
    }

    fn deliver(&mut self, dest: Dest, plain: &[u8], kind: PacketKind, now: Instant, out: &mut impl Output, shared: &mut Option<Arc<PacketBuf>>) {
        deliver_to(&mut self.transports, &self.by_id, &mut self.pool, &self.counters, dest, plain, kind, now, out, shared);
    }

    /// Encrypts and sends a packet another worker handed over.
    pub fn handle_handoff(&mut self, h: Handoff, out: &mut impl Output) {
        self.counters.add(Counter::HandoffsIn, 1);
        let Some(t) = self.by_id.get(&h.transport).and_then(|&s| self.transports[s].as_mut()) else {
            return self.counters.drop_one(DropReason::StaleHandoff);
        };
        protect_and_send(t, &self.counters, h.packet.bytes(), h.kind, h.received, out);
    }

    /// Transport ids whose peer has sent nothing since `before` (for consent / liveness timeouts).
    pub fn idle_since(&self, before: Instant) -> Vec<TransportId> {
        self.transports.iter().flatten().filter(|t| t.last_rx < before).map(|t| t.id).collect()
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn deliver_to(
    transports: &mut [Option<Transport>],
    by_id: &FxHashMap<TransportId, usize>,
    pool: &mut PacketPool,
    counters: &WorkerCounters,
    dest: Dest,
    plain: &[u8],
    kind: PacketKind,
    now: Instant,
    out: &mut impl Output,
    shared: &mut Option<Arc<PacketBuf>>,
) {
    match dest {
        Dest::Local(id) => {
            let Some(t) = by_id.get(&id).and_then(|&s| transports[s].as_mut()) else {
                return counters.drop_one(DropReason::StaleHandoff);
            };
            protect_and_send(t, counters, plain, kind, now, out);
        }
        Dest::Remote { worker, transport } => {
            if shared.is_none() {
                *shared = pool.share(plain);
            }
            let Some(packet) = shared.as_ref() else {
                return counters.drop_one(DropReason::PoolExhausted);
            };
            let h = Handoff { transport, packet: Arc::clone(packet), kind, received: now };
            match out.handoff(worker, h) {
                Ok(()) => counters.add(Counter::HandoffsOut, 1),
                Err(_) => counters.drop_one(DropReason::HandoffQueueFull),
            }
        }
    }
}

#[inline]
fn protect_and_send(t: &mut Transport, counters: &WorkerCounters, plain: &[u8], kind: PacketKind, received: Instant, out: &mut impl Output) {
    let (Some(remote), Some(ctx)) = (t.remote, t.srtp_out.as_mut()) else {
        return counters.drop_one(DropReason::ProtectFailed);
    };
    let mut protect_failed = false;
    let queued = out.send(remote, received, |b| {
        let dst = b.get_mut(..plain.len())?;
        dst.copy_from_slice(plain);
        let r = match kind {
            PacketKind::Rtp => ctx.protect_rtp(b, plain.len()),
            PacketKind::Rtcp => ctx.protect_rtcp(b, plain.len()),
        };
        protect_failed = r.is_err();
        r.ok()
    });
    if queued {
        counters.add(if kind == PacketKind::Rtp { Counter::RtpForwarded } else { Counter::RtcpForwarded }, 1);
    } else if protect_failed {
        counters.drop_one(DropReason::ProtectFailed);
    } else {
        counters.drop_one(DropReason::SendBatchFull);
    }
}

/// The media SSRC of the first feedback message (RTPFB 205 / PSFB 206, RFC 4585 §6.1) in a compound
/// RTCP packet, if any.
pub fn feedback_media_ssrc(mut rtcp: &[u8]) -> Option<u32> {
    while rtcp.len() >= 4 {
        let pt = rtcp[1];
        let words = u16::from_be_bytes([rtcp[2], rtcp[3]]) as usize;
        let len = (words + 1) * 4;
        if len > rtcp.len() {
            return None;
        }
        if (pt == 205 || pt == 206) && len >= 12 {
            return Some(u32::from_be_bytes([rtcp[8], rtcp[9], rtcp[10], rtcp[11]]));
        }
        rtcp = &rtcp[len..];
    }
    None
}

fn srtp_drop_reason(e: &switchyard_srtp::Error) -> DropReason {
    use switchyard_srtp::Error as E;
    match e {
        E::Replayed { .. } => DropReason::SrtpReplay,
        E::AuthenticationFailed { .. } => DropReason::SrtpAuth,
        _ => DropReason::SrtpMalformed,
    }
}
