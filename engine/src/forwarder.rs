//! The sans-I/O core of one worker: bytes and time in, datagrams / hand-offs / events out.
//!
//! [`Forwarder`] owns the worker's transports, tracks and subscriptions and never touches a socket or
//! the clock: the worker loop (`worker.rs`) passes each received datagram with the batch's receive
//! time, calls [`Forwarder::tick`] about every 20 ms, and an [`Output`] collects what to send. That
//! makes every rule of the packet path testable without sockets:
//!
//! 1. demultiplex by first byte (RFC 7983);
//! 2. STUN binding requests are checked against the transport's ICE password and answered; a valid
//!    check binds the source address to the transport;
//! 3. DTLS from a bound address is punted to the control daemon (rate-limited);
//! 4. SRTP/SRTCP from a bound address is decrypted once, in place. RTP is matched to a track layer by
//!    SSRC (simulcast SSRCs are learned from the mid/rid header extensions), its header-extension ids
//!    are rewritten to the engine's canonical ones, and the publisher-side state is updated (loss
//!    detection, keyframes, receive statistics, bitrate, audio level, TWCC arrivals). Then every
//!    subscriber of the track gets it: on this worker directly, on another worker as one shared copy
//!    of the plaintext with a small [`MediaMeta`], handed over a lock-free queue. On the subscriber's
//!    worker the subscription rewrites SSRC/sequence/timestamp (one stream across simulcast layers),
//!    stamps the transport-wide sequence number, keeps the packet for retransmission and encrypts it.
//! 5. RTCP is consumed, not relayed: NACKs are answered from the subscription's cache, PLI/FIR go
//!    through the publisher's coalescing keyframe requester, TWCC/REMB feed the subscriber's
//!    bandwidth estimate, sender reports update the mapping subscribers' own SRs are made from.
//!
//! Nothing on the packet path allocates: state is built when the control daemon asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use switchyard_protocol::{
    ErrorCode, Event, HeaderExtIds, KeySalt, Layer, TrackKind, TransportId, TransportInfo, FB_FIR, FB_PLI,
    OUT_EXT_TWCC, SRTP_RTCP_OUTBOUND, SRTP_RTP_INBOUND, SRTP_RTP_OUTBOUND,
};
use switchyard_srtp::{Context, IndexKind, Profile};
use switchyard_stun::{split_username, write_binding_success, Class, Message, Method};

use crate::demux::{self, Kind};
use crate::handoff::{Handoff, MediaMeta, PacketKind};
use crate::media::estimator::{self, Estimator};
use crate::media::keyframe::{self, Request as KeyframeRequest};
use crate::media::layer_selector::Choice;
use crate::media::rtcp::{self, Packet, SenderInfo};
use crate::media::seq_rewriter::{Rewritten, SeqRewriter};
use crate::pool::{PacketBuf, PacketPool, MAX_PACKET};
use crate::rtp::{self, TokenBucket, TwccRecorder};
use crate::slots;
use crate::stats::{Counter, DropReason, WorkerCounters};
use crate::streams::{PacketStore, PubTrack, Route, SubStream, SubscriptionSpec, MAX_LAYERS};
use crate::transport::Transport;

/// SSRC the engine uses as the sender of RTCP it originates towards publishers (receiver reports,
/// NACKs, keyframe requests, TWCC feedback).
pub const ENGINE_RTCP_SSRC: u32 = 0x5359_4400;
/// How often the worker calls [`Forwarder::tick`] while streams exist.
pub const TICK: Duration = Duration::from_millis(20);
/// Receiver reports to publishers and sender reports to subscribers, per stream.
const REPORT_INTERVAL_MS: u64 = 1000;
/// TWCC feedback to publishers.
const TWCC_FEEDBACK_MS: u64 = 50;
/// Audio-level events.
const AUDIO_LEVEL_MS: u64 = 200;
/// Window of the per-layer bitrate.
const BITRATE_WINDOW_MS: u64 = 1000;
/// Spacing of NACK retries towards publishers (their RTT is not measured: they receive no media).
const PUBLISHER_RTT_MS: u64 = 100;
/// A layer not seen for this long counts as stopped (the publisher dropped it).
const LAYER_IDLE_MS: u64 = 1500;
/// A switch still waiting for its keyframe asks again after this long.
const KEYFRAME_RETRY_MS: u64 = 1000;
/// Most sequence numbers of one subscriber NACK passed on to the publisher: the whole window
/// `SeqRewriter::earlier_seq` covers (a subscriber whose receiver cannot skip a gap, such as
/// aiortc's, stalls until every packet lost while an engine restarted is resent).
const UPSTREAM_NACK_MAX: usize = 1024;
/// Largest NACK packet sent to a publisher, bytes (longer lists go in several).
const UPSTREAM_NACK_BYTES: usize = 1024;
/// A subscriber estimator with no feedback for this long (nothing sent: paused) grows optimistically.
const ESTIMATOR_IDLE_MS: i64 = 1000;
/// A subscriber transport sent less than this fraction of its estimate over the last tick: it is
/// application-limited (a low simulcast layer), so the estimate may grow past what was acknowledged
/// and a higher layer gets tried (there is no probing).
const APP_LIMITED: f64 = 0.75;
/// Sequence numbers one NACK poll takes per stream.
const MAX_NACKS: usize = 64;

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
    /// Queues a hand-off for a transport on another worker; gives it back if that queue is full.
    fn handoff(&mut self, worker: u16, h: Handoff) -> Result<(), Handoff>;
    /// Reports an event to the control daemon; false if the event queue is full.
    fn event(&mut self, ev: Event) -> bool;
}

/// A worker-command failure: nothing was changed.
pub type CommandError = (ErrorCode, String);

/// A track as `AddTrack` declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    /// The control daemon's id, unique per publisher.
    pub track: u32,
    /// Audio or video.
    pub kind: TrackKind,
    /// Its mid.
    pub mid: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Negotiated payload type.
    pub payload_type: u8,
    /// `FB_*` bits.
    pub feedback: u8,
    /// 1 to 3 layers, lowest first.
    pub layers: Vec<Layer>,
}

/// Most packets of a receive batch [`Forwarder::look_ahead`] notes (the worker's batch).
const AHEAD_MAX: usize = 64;

/// An index that names nothing, in an [`Ahead`] whose packet leads nowhere.
const NONE: usize = usize::MAX;

/// A packet of the receive batch, noted by [`Forwarder::look_ahead`], and where its state is, as
/// [`Forwarder::prefetch_batch`] finds it step by step.
#[derive(Clone, Copy)]
struct Ahead {
    from: SocketAddr,
    ssrc: u32,
    slot: usize,
    track: usize,
    layer: u8,
    sub: usize,
}

/// One worker's transports, tracks, subscriptions and packet path.
pub struct Forwarder {
    worker: u16,
    counters: Arc<WorkerCounters>,
    transports: Vec<Option<Transport>>,
    free_slots: Vec<usize>,
    by_id: FxHashMap<TransportId, usize>,
    by_ufrag: FxHashMap<String, usize>,
    by_addr: FxHashMap<SocketAddr, usize>,
    /// Tracks published by local transports.
    tracks: Vec<Option<PubTrack>>,
    free_tracks: Vec<usize>,
    /// (publisher slot, track id) -> track.
    track_by_id: FxHashMap<(usize, u32), usize>,
    /// (publisher slot, ssrc) -> (track, layer).
    by_ssrc: FxHashMap<(usize, u32), (usize, u8)>,
    /// Subscriptions of local transports.
    subs: Vec<Option<SubStream>>,
    free_subs: Vec<usize>,
    /// (subscriber slot, publisher, track) -> subscription.
    sub_by_key: FxHashMap<(usize, TransportId, u32), usize>,
    /// (subscriber slot, out_ssrc or out_rtx_ssrc) -> subscription, for the subscriber's RTCP.
    sub_by_out: FxHashMap<(usize, u32), usize>,
    /// Per transport slot: video subscriptions (to split its estimate), refilled every tick.
    video_subs: Vec<u16>,
    /// Recent packets of the video tracks local transports subscribe to, one store per track.
    stores: Vec<Option<PacketStore>>,
    free_stores: Vec<usize>,
    /// (publisher, track) -> store.
    store_by_key: FxHashMap<(TransportId, u32), usize>,
    pool: PacketPool,
    /// The receive batch's packets, between `look_ahead` and `prefetch_batch`.
    ahead: Vec<Ahead>,
    /// Largest subscriber list of a track, kept current on every route change.
    max_fanout: usize,
    /// Scratch for RTCP the engine writes.
    scratch: Box<[u8]>,
    epoch: Instant,
    last_tick_ms: Option<u64>,
    last_twcc_ms: u64,
    last_levels_ms: u64,
}

impl Forwarder {
    /// An empty forwarder for worker `worker`, with `pool_size` shared packet buffers.
    pub fn new(worker: u16, counters: Arc<WorkerCounters>, pool_size: usize) -> Forwarder {
        // Time in ms/µs counts from a little before now, so callers' instants taken just before this
        // (tests) are still after the origin.
        let now = Instant::now();
        let epoch = now.checked_sub(Duration::from_secs(10)).unwrap_or(now);
        Forwarder {
            worker,
            counters,
            transports: Vec::new(),
            free_slots: Vec::new(),
            by_id: FxHashMap::default(),
            by_ufrag: FxHashMap::default(),
            by_addr: FxHashMap::default(),
            tracks: Vec::new(),
            free_tracks: Vec::new(),
            track_by_id: FxHashMap::default(),
            by_ssrc: FxHashMap::default(),
            subs: Vec::new(),
            free_subs: Vec::new(),
            sub_by_key: FxHashMap::default(),
            sub_by_out: FxHashMap::default(),
            video_subs: Vec::new(),
            stores: Vec::new(),
            free_stores: Vec::new(),
            store_by_key: FxHashMap::default(),
            pool: PacketPool::new(pool_size),
            ahead: Vec::with_capacity(AHEAD_MAX),
            max_fanout: 0,
            scratch: vec![0u8; MAX_PACKET].into_boxed_slice(),
            epoch,
            last_tick_ms: None,
            last_twcc_ms: 0,
            last_levels_ms: 0,
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

    /// Largest number of subscribers any one track here has: the worker keeps that much room in its
    /// send batch before taking the next datagram.
    pub fn max_fanout(&self) -> usize {
        self.max_fanout
    }

    /// Packet stores held (one per video track local transports subscribe to).
    pub fn packet_stores(&self) -> usize {
        self.store_by_key.len()
    }

    /// Whether there are tracks or subscriptions (then the worker calls [`Forwarder::tick`]).
    pub fn has_streams(&self) -> bool {
        !self.track_by_id.is_empty() || !self.sub_by_key.is_empty()
    }

    fn refresh_fanout(&mut self) {
        self.max_fanout = self.tracks.iter().flatten().map(|t| t.subscribers.len()).max().unwrap_or(0);
    }

    fn slot(&self, id: TransportId) -> Result<usize, CommandError> {
        self.by_id
            .get(&id)
            .copied()
            .ok_or_else(|| (ErrorCode::UnknownTransport, format!("no transport {id} on worker {}", self.worker)))
    }

    fn transport_mut(&mut self, id: TransportId) -> Result<&mut Transport, CommandError> {
        let slot = self.slot(id)?;
        self.transports[slot].as_mut().ok_or_else(|| (ErrorCode::Internal, format!("transport {id} slot empty")))
    }

    #[inline]
    fn micros(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.epoch).as_micros() as i64
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
        let slot = slots::insert(&mut self.transports, &mut self.free_slots, t);
        self.by_id.insert(id, slot);
        self.by_ufrag.insert(ufrag, slot);
        Ok(())
    }

    /// Removes a transport, its addresses, the tracks it publishes, its subscriptions and any route
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
        let own: Vec<u32> = self.tracks.iter().flatten().filter(|tr| tr.slot == slot).map(|tr| tr.id).collect();
        for track in own {
            self.drop_track(slot, track);
        }
        for tr in self.tracks.iter_mut().flatten() {
            tr.subscribers.retain(|r| r.dest.transport() != id);
        }
        let subs: Vec<(TransportId, u32)> =
            self.subs.iter().flatten().filter(|s| s.slot == slot).map(|s| (s.spec.publisher, s.spec.track)).collect();
        for (p, track) in subs {
            self.drop_subscription(slot, p, track);
        }
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

    /// The header-extension ids the transport's peer uses (and whether it wants TWCC feedback).
    pub fn set_extensions(&mut self, id: TransportId, ext: HeaderExtIds) -> Result<(), CommandError> {
        let t = self.transport_mut(id)?;
        t.ext = ext;
        if ext.twcc == 0 {
            t.twcc_rx = None;
        } else if t.twcc_rx.is_none() {
            t.twcc_rx = Some(Box::new(TwccRecorder::new(4096)));
        }
        Ok(())
    }

    /// Polices what is sent to the transport to `bps` (0: no cap).
    pub fn set_send_cap(&mut self, id: TransportId, bps: u64, now: Instant) -> Result<(), CommandError> {
        let t = self.transport_mut(id)?;
        t.send_cap = (bps > 0).then(|| TokenBucket::new(bps, now));
        Ok(())
    }

    /// Declares a track the local transport `publisher` sends. Declaring the same track again is
    /// accepted; a different declaration under the same id is refused.
    pub fn add_track(&mut self, publisher: TransportId, spec: TrackSpec, now: Instant) -> Result<(), CommandError> {
        let slot = self.slot(publisher)?;
        let TrackSpec { track, kind, mid, clock_rate, payload_type: _, feedback, layers } = spec;
        if layers.is_empty() || layers.len() > MAX_LAYERS {
            return Err((ErrorCode::Invalid, format!("a track has 1 to {MAX_LAYERS} layers, not {}", layers.len())));
        }
        if let Some(&ti) = self.track_by_id.get(&(slot, track)) {
            let same = self.tracks[ti].as_ref().is_some_and(|t| t.same_as(kind, &mid, clock_rate, feedback, &layers));
            return if same { Ok(()) } else { Err((ErrorCode::Duplicate, format!("track {track} of {publisher} already exists"))) };
        }
        for l in layers.iter().filter(|l| l.ssrc != 0) {
            if self.by_ssrc.contains_key(&(slot, l.ssrc)) || layers.iter().filter(|m| m.ssrc == l.ssrc).count() > 1 {
                return Err((ErrorCode::Duplicate, format!("SSRC {} is already used by a track of {publisher}", l.ssrc)));
            }
        }
        let now_ms = self.micros(now) as u64 / 1000;
        let t = PubTrack::new(slot, publisher, track, kind, mid, clock_rate, feedback, &layers, now_ms);
        let ti = slots::insert(&mut self.tracks, &mut self.free_tracks, t);
        for (i, l) in layers.iter().enumerate() {
            if l.ssrc != 0 {
                self.by_ssrc.insert((slot, l.ssrc), (ti, i as u8));
            }
        }
        self.track_by_id.insert((slot, track), ti);
        Ok(())
    }

    /// Removes a track (its subscriptions on other transports are the control thread's to remove).
    pub fn remove_track(&mut self, publisher: TransportId, track: u32) -> Result<(), CommandError> {
        let slot = self.slot(publisher)?;
        self.drop_track(slot, track);
        self.refresh_fanout();
        Ok(())
    }

    fn drop_track(&mut self, slot: usize, track: u32) {
        let Some(ti) = self.track_by_id.remove(&(slot, track)) else { return };
        self.by_ssrc.retain(|_, (t, _)| *t != ti);
        self.tracks[ti] = None;
        self.free_tracks.push(ti);
    }

    /// Sends track `track` of local publisher `publisher` to `dest` (whose worker must hold the
    /// subscription: [`Forwarder::add_subscription`]).
    ///
    /// For tests and benchmarks that drive a forwarder directly: when the publisher declared no such
    /// track, a one-layer video track with SSRC `track` is declared, and a local `dest` without a
    /// subscription gets one with `out_ssrc` = `track` (the stream arrives unchanged).
    pub fn add_route(&mut self, publisher: TransportId, track: u32, dest: Dest, limit: usize) -> Result<(), CommandError> {
        let slot = self.slot(publisher)?;
        let now = Instant::now();
        if !self.track_by_id.contains_key(&(slot, track)) {
            let layers = vec![Layer { rid: String::new(), ssrc: track }];
            let spec = TrackSpec { track, kind: TrackKind::Video, mid: String::new(), clock_rate: 90_000, payload_type: 0, feedback: 0, layers };
            self.add_track(publisher, spec, now)?;
        }
        if let Dest::Local(sub) = dest {
            let sslot = self.slot(sub)?;
            if !self.sub_by_key.contains_key(&(sslot, publisher, track)) {
                let (kind, clock_rate, layers) = self.track_by_id.get(&(slot, track)).and_then(|&ti| self.tracks[ti].as_ref()).map_or(
                    (TrackKind::Video, 90_000, 1),
                    |t| (t.kind, t.clock_rate, t.layers.len() as u8),
                );
                let spec = SubscriptionSpec {
                    publisher,
                    publisher_at: Dest::Local(publisher),
                    track,
                    kind,
                    clock_rate,
                    layers,
                    out_ssrc: track,
                    out_rtx_ssrc: 0,
                    rtx_payload_type: 0,
                };
                self.insert_subscription(sub, spec, now)?;
            }
        }
        let ti = self.track_by_id.get(&(slot, track)).copied().ok_or_else(|| no_track(publisher, track))?;
        let Some(t) = self.tracks[ti].as_mut() else { return Err(no_track(publisher, track)) };
        if t.subscribers.iter().any(|r| r.dest.transport() == dest.transport()) {
            return Ok(());
        }
        if t.subscribers.len() >= limit {
            return Err((ErrorCode::LimitReached, format!("track {track} already has {limit} subscribers")));
        }
        t.subscribers.push(Route::new(dest));
        self.max_fanout = self.max_fanout.max(t.subscribers.len());
        Ok(())
    }

    /// Stops sending track `track` of `publisher` to `subscriber`.
    pub fn remove_route(&mut self, publisher: TransportId, track: u32, subscriber: TransportId) -> Result<(), CommandError> {
        let slot = self.slot(publisher)?;
        if let Some(t) = self.track_by_id.get(&(slot, track)).and_then(|&ti| self.tracks[ti].as_mut()) {
            t.subscribers.retain(|r| r.dest.transport() != subscriber);
        }
        self.refresh_fanout();
        Ok(())
    }

    /// Creates the state of local transport `subscriber`'s subscription to a track (rewriter, layer
    /// selector, retransmission cache; its transport's bandwidth estimator if it has none). A
    /// single-layer video track asks its publisher for a keyframe at once (a simulcast one does when
    /// its first layer is chosen).
    pub fn add_subscription(&mut self, subscriber: TransportId, spec: SubscriptionSpec, now: Instant, out: &mut impl Output) -> Result<(), CommandError> {
        let si = self.insert_subscription(subscriber, spec, now)?;
        if let Some(s) = self.subs[si].as_ref() {
            if s.video && !s.simulcast() {
                self.ask_keyframe(si, 0, false, now, out);
            }
        }
        Ok(())
    }

    fn insert_subscription(&mut self, subscriber: TransportId, spec: SubscriptionSpec, now: Instant) -> Result<usize, CommandError> {
        let slot = self.slot(subscriber)?;
        if spec.publisher == subscriber {
            return Err((ErrorCode::Invalid, "a transport cannot subscribe to its own track".into()));
        }
        if let Some(&si) = self.sub_by_key.get(&(slot, spec.publisher, spec.track)) {
            return Ok(si);
        }
        for ssrc in [spec.out_ssrc, spec.out_rtx_ssrc] {
            if ssrc != 0 && self.sub_by_out.contains_key(&(slot, ssrc)) {
                return Err((ErrorCode::Duplicate, format!("out SSRC {ssrc} is already used towards transport {subscriber}")));
            }
        }
        if spec.out_ssrc == 0 {
            return Err((ErrorCode::Invalid, "out_ssrc must not be 0".into()));
        }
        let now_ms = self.micros(now) as u64 / 1000;
        let key = (slot, spec.publisher, spec.track);
        let outs = [spec.out_ssrc, spec.out_rtx_ssrc];
        let s = SubStream::new(slot, spec, now_ms);
        if s.video {
            let skey = (s.spec.publisher, s.spec.track);
            match self.store_by_key.get(&skey).and_then(|&i| self.stores[i].as_mut()) {
                Some(st) => st.users += 1,
                None => {
                    let i = slots::insert(&mut self.stores, &mut self.free_stores, PacketStore::new(skey, s.spec.layers));
                    self.store_by_key.insert(skey, i);
                }
            }
        }
        let si = slots::insert(&mut self.subs, &mut self.free_subs, s);
        self.sub_by_key.insert(key, si);
        for ssrc in outs.into_iter().filter(|s| *s != 0) {
            self.sub_by_out.insert((slot, ssrc), si);
        }
        if let Some(t) = self.transports[slot].as_mut() {
            if t.estimator.is_none() {
                t.estimator = Some(Box::new(Estimator::new(estimator::Config::default())));
            }
        }
        if self.video_subs.len() < self.transports.len() {
            self.video_subs.resize(self.transports.len(), 0);
        }
        Ok(si)
    }

    /// Removes a subscription's state.
    pub fn remove_subscription(&mut self, subscriber: TransportId, publisher: TransportId, track: u32) -> Result<(), CommandError> {
        let slot = self.slot(subscriber)?;
        self.drop_subscription(slot, publisher, track);
        Ok(())
    }

    fn drop_subscription(&mut self, slot: usize, publisher: TransportId, track: u32) {
        let Some(si) = self.sub_by_key.remove(&(slot, publisher, track)) else { return };
        self.sub_by_out.retain(|_, v| *v != si);
        if self.subs[si].as_ref().is_some_and(|s| s.video) {
            if let Some(&i) = self.store_by_key.get(&(publisher, track)) {
                let last = self.stores[i].as_mut().is_some_and(|st| {
                    st.users = st.users.saturating_sub(1);
                    st.users == 0
                });
                if last {
                    self.stores[i] = None;
                    self.free_stores.push(i);
                    self.store_by_key.remove(&(publisher, track));
                }
            }
        }
        self.subs[si] = None;
        self.free_subs.push(si);
    }

    /// The largest height the subscriber shows the track at (`u16::MAX`: no limit).
    pub fn set_preferences(&mut self, subscriber: TransportId, publisher: TransportId, track: u32, max_height: u16) -> Result<(), CommandError> {
        let slot = self.slot(subscriber)?;
        let si = self.sub_by_key.get(&(slot, publisher, track)).copied().ok_or_else(|| no_track(publisher, track))?;
        if let Some(s) = self.subs[si].as_mut() {
            s.max_height = max_height;
        }
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

    /// Asks local publisher `id` for a keyframe of every layer of video track `track`, through the
    /// coalescing keyframe requester (what it lets through goes out as PLI or FIR).
    pub fn request_keyframe(&mut self, id: TransportId, track: u32, now: Instant, out: &mut impl Output) -> Result<(), CommandError> {
        let slot = self.slot(id)?;
        let Some(t) = self.transports[slot].as_ref() else {
            return Err((ErrorCode::UnknownTransport, format!("no transport {id}")));
        };
        if t.remote.is_none() || t.srtp_out.is_none() {
            return Err((ErrorCode::Invalid, format!("transport {id} has no media connection yet")));
        }
        let ti = self.track_by_id.get(&(slot, track)).copied().ok_or_else(|| no_track(id, track))?;
        let layers = self.tracks[ti].as_ref().filter(|t| t.kind == TrackKind::Video).map_or(0, |t| t.layers.len());
        for layer in 0..layers {
            self.publisher_keyframe(id, track, layer as u8, false, now, out);
        }
        Ok(())
    }

    /// The transports on this worker (for the Snapshot reply).
    pub fn snapshot(&self) -> Vec<TransportInfo> {
        let mut v = Vec::new();
        for (slot, t) in self.transports.iter().enumerate() {
            let Some(t) = t else { continue };
            let mut subscriptions = Vec::new();
            let mut tracks = Vec::new();
            for tr in self.tracks.iter().flatten().filter(|tr| tr.slot == slot) {
                subscriptions.extend(tr.subscribers.iter().map(|r| (tr.id, r.dest.transport())));
                let layers = tr.layers.iter().enumerate().filter(|(_, l)| l.ssrc != 0).map(|(i, l)| (i as u8, l.ssrc));
                tracks.push((tr.id, layers.collect()));
            }
            subscriptions.sort_unstable();
            tracks.sort_unstable();
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
                tracks,
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

    /// Notes an SRTP packet of the receive batch for [`prefetch_batch`](Self::prefetch_batch)
    /// (anything else is ignored). The worker shows it every datagram of a batch before handling
    /// the first.
    pub fn look_ahead(&mut self, from: &SocketAddr, buf: &[u8]) {
        if demux::classify(buf) != Kind::Rtp || buf.len() < 12 || self.ahead.len() == self.ahead.capacity() {
            return;
        }
        self.ahead.push(Ahead { from: *from, ssrc: rtp::ssrc(buf), slot: NONE, track: NONE, layer: 0, sub: NONE });
    }

    /// Starts loading what handling the packets noted by [`look_ahead`](Self::look_ahead) will
    /// read, and forgets them; changes nothing else. With hundreds of rooms a room's state has
    /// left the cache by the time its next packet arrives, and handling a packet is a chain of
    /// dependent loads (address -> transport and its SRTP state -> track and layer -> subscription
    /// -> the subscriber's transport and SRTP state) that would otherwise wait on each miss in
    /// turn, packet after packet. Here each step is one pass over the whole batch: the loads of a
    /// pass are independent of each other, so the CPU overlaps their misses, and each pass reads
    /// what the one before it prefetched. Only a packet's first subscriber is prefetched: with a
    /// larger fan-out the worker stays on one packet long enough for that not to matter.
    pub fn prefetch_batch(&mut self) {
        use switchyard_srtp::prefetch::{line, lines};
        if self.ahead.is_empty() {
            return;
        }
        let mut ahead = std::mem::take(&mut self.ahead);
        let Forwarder { transports, by_addr, by_ssrc, tracks, subs, .. } = &*self;
        for a in ahead.iter_mut() {
            a.slot = by_addr.get(&a.from).copied().unwrap_or(NONE);
        }
        for a in ahead.iter() {
            if let Some(Some(t)) = transports.get(a.slot) {
                line(&t.last_rx);
                line(&t.ext);
                if let Some(ctx) = t.srtp_in.as_ref() {
                    ctx.prefetch_rtp_keys(true);
                }
            }
        }
        for a in ahead.iter_mut() {
            let Some(Some(t)) = transports.get(a.slot) else { continue };
            if let Some(ctx) = t.srtp_in.as_ref() {
                ctx.prefetch_rtp_state(a.ssrc, true);
            }
            if let Some(r) = t.twcc_rx.as_deref() {
                line(r);
            }
            if let Some(&(ti, li)) = by_ssrc.get(&(a.slot, a.ssrc)) {
                (a.track, a.layer) = (ti, li);
                if let Some(track) = tracks.get(ti) {
                    lines(track);
                }
            }
        }
        for a in ahead.iter() {
            if let Some(Some(track)) = tracks.get(a.track) {
                if let Some(layer) = track.layers.get(a.layer as usize) {
                    lines(layer);
                }
                if let Some(route) = track.subscribers.first() {
                    line(route);
                }
            }
        }
        for a in ahead.iter_mut() {
            let Some(Some(track)) = tracks.get(a.track) else { continue };
            if let Some(route) = track.subscribers.first() {
                a.sub = route.sub;
                if let Some(sub) = subs.get(route.sub) {
                    lines(sub);
                }
            }
        }
        for a in ahead.iter() {
            let Some(Some(sub)) = subs.get(a.sub) else { continue };
            if let Some(Some(dt)) = transports.get(sub.slot) {
                line(&dt.twcc_seq);
                line(&dt.send_cap);
                if let Some(ctx) = dt.srtp_out.as_ref() {
                    ctx.prefetch_rtp_keys(false);
                }
            }
        }
        for a in ahead.iter() {
            let Some(Some(sub)) = subs.get(a.sub) else { continue };
            if let Some(Some(dt)) = transports.get(sub.slot) {
                if let Some(ctx) = dt.srtp_out.as_ref() {
                    ctx.prefetch_rtp_state(sub.spec.out_ssrc, false);
                }
                if let Some(e) = dt.estimator.as_deref() {
                    line(e);
                }
            }
        }
        ahead.clear();
        self.ahead = ahead;
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
        if rtcp {
            self.handle_rtcp(slot, now, &buf[..len], out);
        } else {
            // unprotect_rtp validated the 12-byte header.
            self.handle_rtp(slot, now, &mut buf[..len], out);
        }
    }

    /// A publisher's RTP packet: publisher-side state, then every subscriber of its track.
    fn handle_rtp(&mut self, slot: usize, now: Instant, pkt: &mut [u8], out: &mut impl Output) {
        let ssrc = rtp::ssrc(pkt);
        let now_us = self.micros(now);
        let (ti, li) = match self.by_ssrc.get(&(slot, ssrc)) {
            Some(&v) => v,
            None => match self.learn_ssrc(slot, ssrc, pkt, out) {
                Some(v) => v,
                None => {
                    // Not routed (a probe, a layer not learned yet), but an arrival all the same:
                    // a packet missing from the TWCC feedback counts as lost in the sender's estimate.
                    if let Some(t) = self.transports[slot].as_mut() {
                        let offset = (t.ext.twcc != 0).then(|| rtp::find_ext_offset(pkt, t.ext.twcc)).flatten();
                        record_twcc(t, pkt, offset, ssrc, now_us);
                    }
                    return self.counters.drop_one(DropReason::UnknownSsrc);
                }
            },
        };
        let now_ms = now_us as u64 / 1000;
        let Forwarder { transports, tracks, subs, by_id, sub_by_key, pool, counters, stores, store_by_key, .. } = self;
        let Some(pt) = transports[slot].as_mut() else { return };
        let info = rtp::remap_extensions(pkt, &pt.ext);
        record_twcc(pt, pkt, info.twcc.map(usize::from), ssrc, now_us);
        let publisher = pt.id;
        let Some(track) = tracks[ti].as_mut() else { return };
        let Some(layer) = track.layers.get_mut(li as usize) else { return };
        let seq = rtp::seq(pkt);
        let ts = rtp::timestamp(pkt);
        layer.stats.on_packet(seq, ts, now_us, track.clock_rate);
        layer.window_bytes += pkt.len() as u64;
        if let Some(n) = layer.nack.as_mut() {
            n.on_packet(seq, now_ms);
        }
        let mut key = false;
        if track.kind == TrackKind::Video {
            if let Some((a, b)) = rtp::payload_range(pkt) {
                let (k, size) = rtp::keyframe(&pkt[a..b]);
                if k {
                    key = true;
                    layer.keyframes.on_keyframe();
                    if let Some((_, h)) = size {
                        layer.height = h;
                    }
                }
            }
        } else if let Some(level) = info.audio_level {
            let l = level & 0x7F;
            track.level = Some(track.level.map_or(l, |m| m.min(l)));
        }
        let meta = MediaMeta {
            publisher,
            track: track.id,
            layer: li,
            keyframe: key,
            fir: false,
            height: layer.height,
            layer_bps: layer.bps,
            twcc_offset: info.twcc.unwrap_or(0),
            ntp: 0,
            rtp_ts: 0,
        };
        let plain = &*pkt;
        if track.kind == TrackKind::Video {
            // This worker's subscribers answer NACKs from the store: one copy per packet, not one per
            // subscriber.
            let key = (publisher, track.id);
            let hit = stores.get(track.store).and_then(Option::as_ref).is_some_and(|st| st.key == key);
            if !hit {
                track.store = store_by_key.get(&key).copied().unwrap_or(usize::MAX);
            }
            if let Some(st) = stores.get_mut(track.store).and_then(Option::as_mut) {
                st.keep(li, seq, plain);
            }
        }
        let mut shared: Option<Arc<PacketBuf>> = None;
        for route in track.subscribers.iter_mut() {
            match route.dest {
                Dest::Local(id) => {
                    let si = match checked_route(subs, transports, route.sub, id, publisher, meta.track) {
                        Some(si) => si,
                        None => {
                            let Some(&sslot) = by_id.get(&id) else { continue };
                            let Some(&si) = sub_by_key.get(&(sslot, publisher, meta.track)) else { continue };
                            route.sub = si;
                            si
                        }
                    };
                    let Some(sub) = subs[si].as_mut() else { continue };
                    let Some(t) = transports[sub.slot].as_mut() else { continue };
                    deliver_media(sub, t, counters, &meta, plain, now, now_us, out);
                }
                Dest::Remote { worker, transport } => {
                    if shared.is_none() {
                        shared = pool.share(plain);
                    }
                    let Some(packet) = shared.as_ref() else {
                        counters.drop_one(DropReason::PoolExhausted);
                        continue;
                    };
                    let h = Handoff { transport, packet: Some(Arc::clone(packet)), kind: PacketKind::Media, received: now, meta };
                    match out.handoff(worker, h) {
                        Ok(()) => counters.add(Counter::HandoffsOut, 1),
                        Err(_) => counters.drop_one(DropReason::HandoffQueueFull),
                    }
                }
            }
        }
    }

    /// Binds an unknown SSRC to a layer whose SSRC is not known yet, from the packet's mid and rid
    /// header extensions (rid "" layers by mid alone).
    fn learn_ssrc(&mut self, slot: usize, ssrc: u32, pkt: &[u8], out: &mut impl Output) -> Option<(usize, u8)> {
        let ext = self.transports[slot].as_ref()?.ext;
        if ext.mid == 0 && ext.rid == 0 {
            return None;
        }
        let find = |id: u8| if id == 0 { None } else { crate::media::audio_level::find_extension(pkt, id) };
        let mid = find(ext.mid);
        let rid = find(ext.rid);
        if mid.is_none() && rid.is_none() {
            return None;
        }
        let mut found = None;
        for (ti, tr) in self.tracks.iter_mut().enumerate() {
            let Some(tr) = tr else { continue };
            if tr.slot != slot || mid.is_some_and(|m| m != tr.mid.as_bytes()) {
                continue;
            }
            for (li, l) in tr.layers.iter_mut().enumerate() {
                let matches = match rid {
                    Some(r) => l.rid.as_bytes() == r,
                    None => l.rid.is_empty() && mid.is_some(),
                };
                if l.ssrc == 0 && matches {
                    l.ssrc = ssrc;
                    found = Some((ti, li as u8, tr.publisher, tr.id));
                    break;
                }
            }
            if found.is_some() {
                break;
            }
        }
        let (ti, li, publisher, track) = found?;
        self.by_ssrc.insert((slot, ssrc), (ti, li));
        if !out.event(Event::SsrcLearned { transport: publisher, track, layer: li, ssrc }) {
            self.counters.drop_one(DropReason::EventQueueFull);
        }
        Some((ti, li))
    }

    /// RTCP from a transport: its own reports and its feedback about what we send it.
    fn handle_rtcp(&mut self, slot: usize, now: Instant, plain: &[u8], out: &mut impl Output) {
        let now_us = self.micros(now);
        for p in rtcp::parse(plain) {
            let Ok(p) = p else { break };
            match p {
                Packet::SenderReport(sr) => {
                    self.on_publisher_sr(slot, sr.ssrc, sr.ntp, sr.rtp_ts, now, out);
                    for b in sr.blocks() {
                        self.on_report_block(slot, &b, now);
                    }
                }
                Packet::ReceiverReport(rr) => {
                    for b in rr.blocks() {
                        self.on_report_block(slot, &b, now);
                    }
                }
                Packet::Nack(n) => self.on_nack(slot, n.media, n.lost(), now, out),
                Packet::Pli { media, .. } => self.on_keyframe_request(slot, media, false, now, out),
                Packet::Fir(f) => {
                    for (ssrc, seq) in f.entries() {
                        let new = self.sub_by_out.get(&(slot, ssrc)).and_then(|&si| self.subs[si].as_mut()).is_some_and(|s| s.fir.is_new(seq));
                        if new {
                            self.on_keyframe_request(slot, ssrc, true, now, out);
                        }
                    }
                }
                Packet::Twcc(fb) => {
                    if let Some(t) = self.transports[slot].as_mut() {
                        if let Some(e) = t.estimator.as_mut() {
                            e.on_feedback(&fb, now_us);
                            t.estimator_fed = true;
                        }
                    }
                }
                Packet::Remb(r) => {
                    if let Some(t) = self.transports[slot].as_mut() {
                        if let Some(e) = t.estimator.as_mut() {
                            e.on_remb(r.bitrate, now_us);
                            t.estimator_fed = true;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// A publisher's sender report: kept for our receiver reports and passed to the subscribers.
    fn on_publisher_sr(&mut self, slot: usize, ssrc: u32, ntp: u64, rtp_ts: u32, now: Instant, out: &mut impl Output) {
        let Some(&(ti, li)) = self.by_ssrc.get(&(slot, ssrc)) else { return };
        let Forwarder { tracks, subs, by_id, sub_by_key, counters, .. } = self;
        let Some(tr) = tracks[ti].as_mut() else { return };
        let Some(layer) = tr.layers.get_mut(li as usize) else { return };
        layer.last_sr = Some((ntp, rtp_ts, now));
        let meta = MediaMeta { publisher: tr.publisher, track: tr.id, layer: li, ntp, rtp_ts, ..MediaMeta::default() };
        for r in &tr.subscribers {
            match r.dest {
                Dest::Local(id) => {
                    let Some(&sslot) = by_id.get(&id) else { continue };
                    if let Some(s) = sub_by_key.get(&(sslot, tr.publisher, tr.id)).and_then(|&si| subs[si].as_mut()) {
                        if let Some(x) = s.layer_sr.get_mut(li as usize) {
                            *x = Some((ntp, rtp_ts, now));
                        }
                    }
                }
                Dest::Remote { worker, transport } => {
                    let h = Handoff { transport, packet: None, kind: PacketKind::SenderInfo, received: now, meta };
                    if out.handoff(worker, h).is_err() {
                        counters.drop_one(DropReason::HandoffQueueFull);
                    }
                }
            }
        }
    }

    /// A report block from a subscriber about one of our outgoing streams: round-trip time.
    fn on_report_block(&mut self, slot: usize, b: &rtcp::ReportBlock, now: Instant) {
        let Some(&si) = self.sub_by_out.get(&(slot, b.ssrc)) else { return };
        let Some(s) = self.subs[si].as_ref() else { return };
        let Some((compact, sent)) = s.sr_sent else { return };
        if b.last_sr == 0 || b.last_sr != compact {
            return;
        }
        let since_us = now.saturating_duration_since(sent).as_micros() as i64;
        let dlsr_us = b.delay_since_last_sr as i64 * 1_000_000 / 65_536;
        if let Some(t) = self.transports[slot].as_mut() {
            t.rtt_ms = ((since_us - dlsr_us).max(0) / 1000) as u32;
        }
    }

    /// A subscriber's NACK: answered from its subscription's cache. Packets from before the stream
    /// first reached the subscriber through this engine (lost while an engine restarted) are asked of
    /// the publisher (`SeqRewriter::earlier_seq`); the retransmission then flows to the subscriber like
    /// any packet. Other misses are not passed on: the engine NACKs its own upstream losses once for all
    /// subscribers.
    fn on_nack(&mut self, slot: usize, media: u32, lost: impl Iterator<Item = u16>, now: Instant, out: &mut impl Output) {
        let now_us = self.micros(now);
        let Some(&si) = self.sub_by_out.get(&(slot, media)) else { return };
        let mut upstream = [0u16; UPSTREAM_NACK_MAX];
        let mut n_up = 0;
        let Forwarder { subs, transports, counters, stores, store_by_key, .. } = self;
        let (Some(sub), Some(t)) = (subs[si].as_mut(), transports[slot].as_mut()) else { return };
        let store = store_by_key.get(&(sub.spec.publisher, sub.spec.track)).and_then(|&i| stores[i].as_ref());
        let out_ssrc = sub.spec.out_ssrc;
        for seq in lost {
            counters.add(Counter::NackReceived, 1);
            let found = sub.sent.as_ref().and_then(|r| r.get(seq)).and_then(|e| Some((e, store?.get(e.layer, e.in_seq)?)));
            let Some((sent_as, pkt)) = found else {
                counters.drop_one(DropReason::NackCacheMiss);
                if let Some(orig) = sub.rewriter.as_ref().and_then(|r| r.earlier_seq(seq)) {
                    let (word, bit) = ((seq as usize % 1024) / 64, 1u64 << (seq % 64));
                    if n_up < upstream.len() && sub.earlier_asked[word] & bit == 0 {
                        sub.earlier_asked[word] |= bit;
                        upstream[n_up] = orig;
                        n_up += 1;
                    }
                }
                continue;
            };
            let (rtx_ssrc, rtx_pt) = (sub.spec.out_rtx_ssrc, sub.spec.rtx_payload_type);
            let rtx_seq = sub.rtx_seq;
            let tw = match (rtp::find_ext_offset(pkt, OUT_EXT_TWCC), t.estimator.is_some()) {
                (Some(off), true) => Some((off, t.twcc_seq)),
                _ => None,
            };
            let mut n = 0usize;
            // The stored packet as the publisher sent it, rewritten the way it went to this subscriber.
            let rw = Rewritten { ssrc: out_ssrc, seq, ts: sent_as.ts, switched: false };
            let build = |b: &mut [u8]| -> Option<usize> {
                if rtx_ssrc == 0 {
                    rewrite_into(b, pkt, &rw, tw)
                } else {
                    // RFC 4588: RTX SSRC, payload type and sequence number; the original sequence
                    // number (OSN) first in the payload.
                    let (hl, _) = rtp::payload_range(pkt)?;
                    let len = pkt.len() + 2;
                    let d = b.get_mut(..len)?;
                    d[..hl].copy_from_slice(&pkt[..hl]);
                    d[1] = (pkt[1] & 0x80) | (rtx_pt & 0x7F);
                    d[2..4].copy_from_slice(&rtx_seq.to_be_bytes());
                    d[4..8].copy_from_slice(&sent_as.ts.to_be_bytes());
                    d[8..12].copy_from_slice(&rtx_ssrc.to_be_bytes());
                    d[hl..hl + 2].copy_from_slice(&seq.to_be_bytes());
                    d[hl + 2..].copy_from_slice(&pkt[hl..]);
                    if let Some((off, s)) = tw {
                        d.get_mut(off..off + 2)?.copy_from_slice(&s.to_be_bytes());
                    }
                    Some(len)
                }
            };
            let sent = send_rtp(t, counters, now, out, |b| {
                let r = build(b);
                if let Some(len) = r {
                    n = len;
                }
                r
            });
            if rtx_ssrc != 0 {
                sub.rtx_seq = sub.rtx_seq.wrapping_add(1);
            }
            if let Some((_, s)) = tw {
                t.twcc_seq = t.twcc_seq.wrapping_add(1);
                if let Some(e) = t.estimator.as_mut() {
                    e.on_sent(s, n, now_us);
                }
            }
            if sent {
                counters.add(Counter::RtxSent, 1);
            }
        }
        if n_up > 0 {
            self.nack_publisher(si, &upstream[..n_up], now, out);
        }
    }

    /// Sends a NACK for `seqs` of a subscription's current layer to its publisher (here or on its
    /// worker, as an RTCP packet to send as it is).
    fn nack_publisher(&mut self, si: usize, seqs: &[u16], now: Instant, out: &mut impl Output) {
        let Some(s) = self.subs[si].as_ref() else { return };
        let layer = s.rewriter.as_ref().and_then(SeqRewriter::current).unwrap_or(0) as usize;
        let Some(&ssrc) = s.in_ssrc.get(layer).filter(|&&x| x != 0) else { return };
        let publisher_at = s.spec.publisher_at;
        let mut rest = seqs;
        while !rest.is_empty() {
            let buf = &mut self.scratch[..UPSTREAM_NACK_BYTES];
            let Some((len, used)) = rtcp::write_nack(buf, ENGINE_RTCP_SSRC, ssrc, rest) else { return };
            rest = &rest[used.max(1).min(rest.len())..];
            self.send_upstream_rtcp(publisher_at, len, now, out);
        }
    }

    /// Sends the RTCP in `scratch[..len]` to a subscription's publisher (through its worker).
    fn send_upstream_rtcp(&mut self, publisher_at: Dest, len: usize, now: Instant, out: &mut impl Output) {
        match publisher_at {
            Dest::Local(p) => {
                let Forwarder { by_id, transports, counters, scratch, .. } = self;
                let Some(t) = by_id.get(&p).and_then(|&i| transports[i].as_mut()) else { return };
                if send_rtcp(t, counters, &scratch[..len], now, out) {
                    counters.add(Counter::NackSent, 1);
                }
            }
            Dest::Remote { worker, transport } => {
                let Some(packet) = self.pool.share(&self.scratch[..len]) else {
                    return self.counters.drop_one(DropReason::PoolExhausted);
                };
                let h = Handoff { transport, packet: Some(packet), kind: PacketKind::Rtcp, received: now, meta: MediaMeta::default() };
                match out.handoff(worker, h) {
                    Ok(()) => {
                        self.counters.add(Counter::HandoffsOut, 1);
                        self.counters.add(Counter::NackSent, 1);
                    }
                    Err(_) => self.counters.drop_one(DropReason::HandoffQueueFull),
                }
            }
        }
    }

    /// A subscriber's PLI or FIR about one of its streams: to the publisher's coalescing requester,
    /// for the layer the subscriber currently gets.
    fn on_keyframe_request(&mut self, slot: usize, media: u32, fir: bool, now: Instant, out: &mut impl Output) {
        let Some(&si) = self.sub_by_out.get(&(slot, media)) else { return };
        let Some(s) = self.subs[si].as_ref() else { return };
        if !s.video {
            return;
        }
        let layer = s.rewriter.as_ref().and_then(SeqRewriter::current).map(|l| l as u8).or(s.target).unwrap_or(0);
        self.ask_keyframe(si, layer, fir, now, out);
    }

    /// Asks a subscription's publisher (here or on its worker) for a keyframe of `layer`.
    fn ask_keyframe(&mut self, si: usize, layer: u8, fir: bool, now: Instant, out: &mut impl Output) {
        let Some(s) = self.subs[si].as_ref() else { return };
        let (publisher_at, track) = (s.spec.publisher_at, s.spec.track);
        match publisher_at {
            Dest::Local(p) => self.publisher_keyframe(p, track, layer, fir, now, out),
            Dest::Remote { worker, transport } => {
                let meta = MediaMeta { publisher: transport, track, layer, fir, ..MediaMeta::default() };
                let h = Handoff { transport, packet: None, kind: PacketKind::KeyframeRequest, received: now, meta };
                match out.handoff(worker, h) {
                    Ok(()) => self.counters.add(Counter::HandoffsOut, 1),
                    Err(_) => self.counters.drop_one(DropReason::HandoffQueueFull),
                }
            }
        }
    }

    /// A keyframe request for a local publisher's layer: through its requester; what it lets through
    /// goes out as PLI or FIR (per what the publisher negotiated).
    fn publisher_keyframe(&mut self, publisher: TransportId, track: u32, layer: u8, fir: bool, now: Instant, out: &mut impl Output) {
        let now_ms = self.micros(now) as u64 / 1000;
        let Some(&slot) = self.by_id.get(&publisher) else { return };
        let Some(&ti) = self.track_by_id.get(&(slot, track)) else { return };
        let Forwarder { tracks, transports, counters, scratch, .. } = self;
        let (Some(tr), Some(t)) = (tracks[ti].as_mut(), transports[slot].as_mut()) else { return };
        if t.remote.is_none() || t.srtp_out.is_none() {
            // Not connected yet: nothing can reach it (a later request or the track's first
            // keyframe serves the subscriber).
            return;
        }
        let feedback = tr.feedback;
        let li = if (layer as usize) < tr.layers.len() { layer as usize } else { 0 };
        let Some(l) = tr.layers.get_mut(li) else { return };
        let kind = keyframe_kind(feedback, fir);
        match l.keyframes.request(kind, now_ms) {
            Some(req) if l.ssrc != 0 => {
                let at = rtcp::write_rr(scratch, ENGINE_RTCP_SSRC, &[]).unwrap_or(0);
                if let Some(n) = write_keyframe_request(&mut scratch[at..], l.ssrc, req) {
                    if send_rtcp(t, counters, &scratch[..at + n], now, out) {
                        counters.add(Counter::KeyframeRequestsSent, 1);
                    }
                }
            }
            Some(_) => {}
            None => counters.add(Counter::KeyframeRequestsCoalesced, 1),
        }
    }

    /// Handles what another worker handed over: media for a local subscription, a publisher's sender
    /// report for it, a keyframe request for a local publisher, or a packet to send as it is.
    pub fn handle_handoff(&mut self, h: Handoff, out: &mut impl Output) {
        self.counters.add(Counter::HandoffsIn, 1);
        let Some(&slot) = self.by_id.get(&h.transport) else {
            return self.counters.drop_one(DropReason::StaleHandoff);
        };
        let m = h.meta;
        match h.kind {
            PacketKind::Rtp | PacketKind::Rtcp => {
                let (Some(t), Some(p)) = (self.transports[slot].as_mut(), h.packet.as_ref()) else {
                    return self.counters.drop_one(DropReason::StaleHandoff);
                };
                protect_and_send(t, &self.counters, p.bytes(), h.kind, h.received, out);
            }
            PacketKind::Media => {
                let now_us = self.micros(h.received);
                let Forwarder { subs, transports, sub_by_key, counters, stores, store_by_key, .. } = self;
                let Some(&si) = sub_by_key.get(&(slot, m.publisher, m.track)) else {
                    return counters.drop_one(DropReason::StaleHandoff);
                };
                let (Some(sub), Some(t), Some(p)) = (subs[si].as_mut(), transports[slot].as_mut(), h.packet.as_ref()) else {
                    return counters.drop_one(DropReason::StaleHandoff);
                };
                if sub.video && p.bytes().len() >= 12 {
                    if let Some(st) = store_by_key.get(&(m.publisher, m.track)).and_then(|&i| stores[i].as_mut()) {
                        st.keep(m.layer, rtp::seq(p.bytes()), p.bytes());
                    }
                }
                deliver_media(sub, t, counters, &m, p.bytes(), h.received, now_us, out);
            }
            PacketKind::SenderInfo => {
                if let Some(s) = self.sub_by_key.get(&(slot, m.publisher, m.track)).and_then(|&si| self.subs[si].as_mut()) {
                    if let Some(x) = s.layer_sr.get_mut(m.layer as usize) {
                        *x = Some((m.ntp, m.rtp_ts, h.received));
                    }
                }
            }
            PacketKind::KeyframeRequest => self.publisher_keyframe(h.transport, m.track, m.layer, m.fir, h.received, out),
        }
    }

    // ---- periodic work ----

    /// Periodic work, about every 20 ms while streams exist: NACKs, keyframe-request repeats, receiver
    /// reports and TWCC feedback to publishers; layer choice, sender reports to subscribers; per-layer
    /// bitrates; audio levels.
    pub fn tick(&mut self, now: Instant, out: &mut impl Output) {
        let now_us = self.micros(now);
        let now_ms = now_us as u64 / 1000;
        let elapsed_ms = self.last_tick_ms.map_or(TICK.as_millis() as u64, |t| now_ms.saturating_sub(t)).max(1);
        self.last_tick_ms = Some(now_ms);
        self.tick_publishers(now, now_ms, out);
        if now_ms.saturating_sub(self.last_twcc_ms) >= TWCC_FEEDBACK_MS {
            self.last_twcc_ms = now_ms;
            self.tick_twcc(now, out);
        }
        self.tick_subscribers(now, now_us, elapsed_ms, out);
        if now_ms.saturating_sub(self.last_levels_ms) >= AUDIO_LEVEL_MS {
            self.last_levels_ms = now_ms;
            self.tick_levels(out);
        }
    }

    fn tick_publishers(&mut self, now: Instant, now_ms: u64, out: &mut impl Output) {
        let Forwarder { tracks, transports, counters, scratch, .. } = self;
        let mut lost = [0u16; MAX_NACKS];
        for tr in tracks.iter_mut().flatten() {
            let Some(t) = transports[tr.slot].as_mut() else { continue };
            let rr_due = now_ms.saturating_sub(tr.last_rr_ms) >= REPORT_INTERVAL_MS;
            for l in &mut tr.layers {
                let span = now_ms.saturating_sub(l.window_start_ms);
                if span >= BITRATE_WINDOW_MS {
                    l.bps = (l.window_bytes * 8 * 1000 / span).min(u32::MAX as u64) as u32;
                    l.window_bytes = 0;
                    l.window_start_ms = now_ms;
                }
            }
            if t.remote.is_none() || t.srtp_out.is_none() {
                continue;
            }
            // Receiver report first (with blocks when due, else empty), then NACKs and keyframe
            // requests, as one compound packet.
            let mut blocks = [rtcp::ReportBlock {
                ssrc: 0,
                fraction_lost: 0,
                cumulative_lost: 0,
                highest_seq: 0,
                jitter: 0,
                last_sr: 0,
                delay_since_last_sr: 0,
            }; MAX_LAYERS];
            let mut nb = 0;
            if rr_due {
                tr.last_rr_ms = now_ms;
                for l in tr.layers.iter_mut().filter(|l| l.ssrc != 0 && l.stats.started()) {
                    let (lsr, dlsr) = match l.last_sr {
                        Some((ntp, _, at)) => {
                            let d = now.saturating_duration_since(at).as_micros() as u64 * 65_536 / 1_000_000;
                            ((ntp >> 16) as u32, d.min(u32::MAX as u64) as u32)
                        }
                        None => (0, 0),
                    };
                    blocks[nb] = l.stats.report(l.ssrc, lsr, dlsr);
                    nb += 1;
                }
            }
            let Some(mut at) = rtcp::write_rr(scratch, ENGINE_RTCP_SSRC, &blocks[..nb]) else { continue };
            let header_only = at;
            let mut nacks = 0;
            let mut keyframes = 0;
            for l in &mut tr.layers {
                if l.ssrc == 0 {
                    continue;
                }
                if let Some(g) = l.nack.as_mut() {
                    let n = g.poll(now_ms, PUBLISHER_RTT_MS, &mut lost);
                    if n > 0 {
                        if let Some((len, _)) = rtcp::write_nack(&mut scratch[at..], ENGINE_RTCP_SSRC, l.ssrc, &lost[..n]) {
                            at += len;
                            nacks += 1;
                        }
                    }
                }
                if let Some(req) = l.keyframes.poll(now_ms) {
                    if let Some(len) = write_keyframe_request(&mut scratch[at..], l.ssrc, req) {
                        at += len;
                        keyframes += 1;
                    }
                }
            }
            if (nb > 0 || rr_due || at > header_only) && send_rtcp(t, counters, &scratch[..at], now, out) {
                if rr_due {
                    counters.add(Counter::RrSent, 1);
                }
                counters.add(Counter::NackSent, nacks);
                counters.add(Counter::KeyframeRequestsSent, keyframes);
            }
        }
    }

    fn tick_twcc(&mut self, now: Instant, out: &mut impl Output) {
        let Forwarder { transports, counters, scratch, .. } = self;
        for t in transports.iter_mut().flatten() {
            if t.remote.is_none() || t.srtp_out.is_none() {
                continue;
            }
            let Some(rec) = t.twcc_rx.as_mut() else { continue };
            if !rec.pending() {
                continue;
            }
            let Some(at) = rtcp::write_rr(scratch, ENGINE_RTCP_SSRC, &[]) else { continue };
            let Some(n) = rec.write(&mut scratch[at..], ENGINE_RTCP_SSRC) else { continue };
            if send_rtcp(t, counters, &scratch[..at + n], now, out) {
                counters.add(Counter::TwccSent, 1);
            }
        }
    }

    fn tick_subscribers(&mut self, now: Instant, now_us: i64, elapsed_ms: u64, out: &mut impl Output) {
        let now_ms = now_us as u64 / 1000;
        // Estimates: split over each transport's video subscriptions; application-limited senders may
        // grow past what was acknowledged; without feedback for a while (paused) grow optimistically.
        if self.video_subs.len() < self.transports.len() {
            self.video_subs.resize(self.transports.len(), 0);
        }
        self.video_subs.iter_mut().for_each(|v| *v = 0);
        for s in self.subs.iter().flatten().filter(|s| s.video) {
            if let Some(v) = self.video_subs.get_mut(s.slot) {
                *v += 1;
            }
        }
        for t in self.transports.iter_mut().flatten() {
            let sent_bps = t.sent_bytes * 8 * 1000 / elapsed_ms;
            t.sent_bytes = 0;
            let Some(e) = t.estimator.as_mut() else { continue };
            e.set_app_limited((sent_bps as f64) < APP_LIMITED * e.estimate(now_us) as f64);
            if t.estimator_fed && e.last_update_us().is_some_and(|u| now_us.saturating_sub(u) > ESTIMATOR_IDLE_MS * 1000) {
                e.on_idle(now_us);
            }
        }
        for si in 0..self.subs.len() {
            let ask = {
                let Forwarder { subs, transports, counters, scratch, video_subs, .. } = &mut *self;
                let Some(s) = subs[si].as_mut() else { continue };
                let Some(t) = transports[s.slot].as_mut() else { continue };
                let ask = if s.video && s.simulcast() {
                    let share = video_subs.get(s.slot).copied().unwrap_or(1).max(1) as u64;
                    let estimate = match (&t.estimator, t.estimator_fed) {
                        (Some(e), true) => e.estimate(now_us) / share,
                        _ => u64::MAX,
                    };
                    choose_layer(s, estimate, now_ms)
                } else if s.video && s.forwarded && !s.keyframe_sent {
                    // Single layer, media flowing but never a keyframe: ask again (coalesced upstream).
                    let due = s.keyframe_asked_ms.is_none_or(|t| now_ms.saturating_sub(t) >= KEYFRAME_RETRY_MS);
                    if due {
                        s.keyframe_asked_ms = Some(now_ms);
                    }
                    due.then_some(0)
                } else {
                    None
                };
                if now_ms.saturating_sub(s.last_sr_ms) >= REPORT_INTERVAL_MS && t.remote.is_some() && t.srtp_out.is_some() {
                    s.last_sr_ms = now_ms;
                    send_sr(s, t, counters, scratch, now, out);
                }
                ask
            };
            if let Some(layer) = ask {
                self.ask_keyframe(si, layer, false, now, out);
            }
        }
    }

    fn tick_levels(&mut self, out: &mut impl Output) {
        let n = self.tracks.iter().flatten().filter(|t| t.level.is_some()).count();
        if n == 0 {
            return;
        }
        let mut levels = Vec::with_capacity(n);
        for t in self.tracks.iter_mut().flatten() {
            if let Some(l) = t.level.take() {
                levels.push((t.publisher, t.id, l));
            }
        }
        if !out.event(Event::AudioLevels { levels }) {
            self.counters.drop_one(DropReason::EventQueueFull);
        }
    }

    /// Transport ids whose peer has sent nothing since `before` (for consent / liveness timeouts).
    pub fn idle_since(&self, before: Instant) -> Vec<TransportId> {
        self.transports.iter().flatten().filter(|t| t.last_rx < before).map(|t| t.id).collect()
    }
}

fn no_track(publisher: TransportId, track: u32) -> CommandError {
    (ErrorCode::UnknownTrack, format!("no track {track} of transport {publisher}"))
}

/// PLI or FIR, from what the publisher negotiated (nothing declared: PLI) and what was asked.
fn keyframe_kind(feedback: u8, fir: bool) -> keyframe::Kind {
    let pli_ok = feedback & FB_PLI != 0 || feedback & (FB_PLI | FB_FIR) == 0;
    let fir_ok = feedback & FB_FIR != 0;
    if fir_ok && (fir || !pli_ok) {
        keyframe::Kind::Fir
    } else {
        keyframe::Kind::Pli
    }
}

fn write_keyframe_request(out: &mut [u8], ssrc: u32, req: KeyframeRequest) -> Option<usize> {
    match req {
        KeyframeRequest::Pli => rtcp::write_pli(out, ENGINE_RTCP_SSRC, ssrc),
        KeyframeRequest::Fir { seq } => rtcp::write_fir(out, ENGINE_RTCP_SSRC, ssrc, seq),
    }
}

/// Re-chooses a simulcast subscription's layer; returns a layer to ask a keyframe of (a new target,
/// or a switch still waiting for one).
fn choose_layer(s: &mut SubStream, estimate: u64, now_ms: u64) -> Option<u8> {
    for i in 0..s.spec.layers as usize {
        if let Some(seen) = s.layer_seen_ms[i] {
            if now_ms.saturating_sub(seen) > LAYER_IDLE_MS {
                let bps = s.selector.layer(i).map_or(0, |l| l.bitrate_bps);
                s.selector.update_layer(i, bps, false);
                s.layer_seen_ms[i] = None;
            }
        }
    }
    let any_active = s.layer_seen_ms.iter().any(Option::is_some);
    let target = match s.selector.select(estimate, s.max_height, now_ms) {
        Choice::Layer { index, .. } => Some(index as u8),
        Choice::Paused => None,
    };
    s.paused = target.is_none() && any_active;
    let mut ask = None;
    if target != s.target {
        s.target = target;
        if let Some(r) = s.rewriter.as_mut() {
            r.select(target.map(u32::from));
        }
        if let Some(l) = target {
            s.keyframe_asked_ms = Some(now_ms);
            ask = Some(l);
        }
    } else if let Some(l) = target {
        let waiting = s.rewriter.as_ref().is_none_or(|r| r.current() != Some(l as u32));
        if waiting && s.keyframe_asked_ms.is_none_or(|t| now_ms.saturating_sub(t) >= KEYFRAME_RETRY_MS) {
            s.keyframe_asked_ms = Some(now_ms);
            ask = Some(l);
        }
    }
    ask
}

/// A sender report for a subscription: the publisher's latest SR of the layer being forwarded,
/// carried forward to now and translated through the rewriter's timestamp offset; the counts are
/// what this subscriber was sent.
fn send_sr(s: &mut SubStream, t: &mut Transport, counters: &WorkerCounters, scratch: &mut [u8], now: Instant, out: &mut impl Output) {
    let Some(r) = s.rewriter.as_ref().filter(|r| r.started()) else { return };
    let Some(layer) = r.current() else { return };
    let Some(&Some((ntp, rtp_ts, at))) = s.layer_sr.get(layer as usize) else { return };
    let elapsed = now.saturating_duration_since(at);
    let ntp_now = ntp.wrapping_add(((elapsed.as_nanos() << 32) / 1_000_000_000) as u64);
    let ticks = (elapsed.as_micros() as u64).saturating_mul(s.spec.clock_rate as u64) / 1_000_000;
    let rtp_now = rtp_ts.wrapping_add(ticks as u32).wrapping_add(r.ts_offset());
    let info = SenderInfo { ssrc: s.spec.out_ssrc, ntp: ntp_now, rtp_ts: rtp_now, packet_count: s.packets, octet_count: s.octets };
    let Some(n) = rtcp::write_sr(scratch, &info, &[]) else { return };
    if send_rtcp(t, counters, &scratch[..n], now, out) {
        s.sr_sent = Some(((ntp_now >> 16) as u32, now));
        counters.add(Counter::SrSent, 1);
    }
}

/// Records a publisher packet's transport-wide sequence number (the 2-byte extension value at
/// `offset`) for the TWCC feedback sent to it, if it asked for feedback.
#[inline]
fn record_twcc(t: &mut Transport, pkt: &[u8], offset: Option<usize>, ssrc: u32, now_us: i64) {
    if let (Some(rec), Some(v)) = (t.twcc_rx.as_mut(), offset.and_then(|o| pkt.get(o..o + 2))) {
        rec.record(u16::from_be_bytes([v[0], v[1]]), ssrc, now_us);
    }
}

/// One publisher packet for one local subscription: layer bookkeeping, rewriting onto `out_ssrc`,
/// transport-wide sequence number, retransmission cache, send cap, encryption.
#[allow(clippy::too_many_arguments)]
#[inline]
fn deliver_media(
    sub: &mut SubStream,
    t: &mut Transport,
    counters: &WorkerCounters,
    meta: &MediaMeta,
    plain: &[u8],
    received: Instant,
    now_us: i64,
    out: &mut impl Output,
) {
    let now_ms = now_us as u64 / 1000;
    let layer = meta.layer as usize;
    if sub.video && sub.simulcast() {
        if let Some(seen) = sub.layer_seen_ms.get_mut(layer) {
            *seen = Some(now_ms);
        }
        sub.selector.update_layer(layer, meta.layer_bps as u64, true);
        if meta.height != 0 {
            sub.selector.set_height(layer, meta.height);
        }
        if sub.paused {
            return counters.drop_one(DropReason::Paused);
        }
    }
    let seq = rtp::seq(plain);
    let ts = rtp::timestamp(plain);
    if let Some(x) = sub.in_ssrc.get_mut(layer) {
        *x = rtp::ssrc(plain);
    }
    // One layer: every packet may start the stream (a single-layer stream is not held for a keyframe).
    let keyframe = meta.keyframe || !sub.simulcast();
    if sub.rewriter.is_none() {
        if sub.target != Some(meta.layer) {
            return counters.drop_one(DropReason::LayerNotSelected);
        }
        let mut r = SeqRewriter::new(sub.spec.out_ssrc, seq, ts, sub.spec.clock_rate);
        r.select(Some(meta.layer as u32));
        sub.rewriter = Some(r);
    }
    // A padding-only packet (a bandwidth probe) that is next in sequence is not forwarded; the
    // outgoing sequence closes over it.
    if plain[0] & 0x20 != 0 && rtp::payload_range(plain).is_some_and(|(a, b)| a == b) {
        if let Some(r) = sub.rewriter.as_mut() {
            if r.skip(meta.layer as u32, seq) {
                return counters.drop_one(DropReason::PaddingOnly);
            }
        }
    }
    let Some(rw) = sub.rewriter.as_mut().and_then(|r| r.rewrite(meta.layer as u32, seq, ts, keyframe, now_ms)) else {
        return counters.drop_one(DropReason::LayerNotSelected);
    };
    if rw.switched && sub.forwarded {
        counters.add(Counter::LayerSwitches, 1);
    }
    sub.forwarded = true;
    sub.keyframe_sent |= meta.keyframe;
    let tw = match (meta.twcc_offset, t.estimator.is_some()) {
        (off, true) if off != 0 => {
            let s = t.twcc_seq;
            t.twcc_seq = s.wrapping_add(1);
            Some((off as usize, s))
        }
        _ => None,
    };
    let len = plain.len();
    let payload = rtp::payload_range(plain).map_or(0, |(a, b)| b - a);
    sub.packets = sub.packets.wrapping_add(1);
    sub.octets = sub.octets.wrapping_add(payload as u32);
    if let Some(e) = t.estimator.as_mut() {
        if let Some((_, s)) = tw {
            e.on_sent(s, len, now_us);
        }
    }
    if let Some(r) = sub.sent.as_mut() {
        // Recorded even if the send cap drops it: a NACK recovers it as after loss on a real link.
        r.record(rw.seq, meta.layer, seq, rw.ts);
    }
    send_rtp(t, counters, received, out, |b| rewrite_into(b, plain, &rw, tw));
}

/// `hint` if it is the index of `subscriber`'s subscription to `publisher`'s `track` (see [`Route`]).
#[inline]
fn checked_route(
    subs: &[Option<SubStream>],
    transports: &[Option<Transport>],
    hint: usize,
    subscriber: TransportId,
    publisher: TransportId,
    track: u32,
) -> Option<usize> {
    let s = subs.get(hint)?.as_ref()?;
    let ok = s.spec.publisher == publisher
        && s.spec.track == track
        && transports.get(s.slot)?.as_ref().is_some_and(|t| t.id == subscriber);
    ok.then_some(hint)
}

/// Copies `plain` into `b` with the rewritten SSRC/seq/ts and the transport-wide sequence number.
#[inline]
fn rewrite_into(b: &mut [u8], plain: &[u8], rw: &Rewritten, tw: Option<(usize, u16)>) -> Option<usize> {
    let d = b.get_mut(..plain.len())?;
    d.copy_from_slice(plain);
    d[2..4].copy_from_slice(&rw.seq.to_be_bytes());
    d[4..8].copy_from_slice(&rw.ts.to_be_bytes());
    d[8..12].copy_from_slice(&rw.ssrc.to_be_bytes());
    if let Some((off, s)) = tw {
        d.get_mut(off..off + 2)?.copy_from_slice(&s.to_be_bytes());
    }
    Some(plain.len())
}

/// Sends an RTP packet `build` writes to a subscriber, through its send cap: a packet over the cap is
/// built but not sent (the subscription's `SentRing` already has it, so a NACK can recover it, as
/// after loss on a real link). Returns whether it was queued.
#[inline]
fn send_rtp(
    t: &mut Transport,
    counters: &WorkerCounters,
    received: Instant,
    out: &mut impl Output,
    build: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    let Transport { remote, srtp_out, send_cap, .. } = t;
    let (Some(remote), Some(ctx)) = (*remote, srtp_out.as_mut()) else {
        counters.drop_one(DropReason::ProtectFailed);
        return false;
    };
    let capped = send_cap.is_some();
    let (mut protect_failed, mut build_failed, mut policed, mut n) = (false, false, false, 0);
    let queued = out.send(remote, received, |b| {
        let Some(len) = build(b) else {
            build_failed = true;
            return None;
        };
        n = len;
        if let Some(cap) = send_cap.as_mut() {
            // Size on the wire is about the plaintext plus the SRTP tag; the cap is a test aid, so
            // this is close enough.
            if !cap.take(n + 28 + 16, received) {
                policed = true;
                return None;
            }
        }
        let r = ctx.protect_rtp(b, n);
        protect_failed = r.is_err();
        r.ok()
    });
    if policed {
        counters.drop_one(DropReason::SendCap);
        return false;
    }
    if capped && build_failed {
        counters.drop_one(DropReason::ProtectFailed);
        return false;
    }
    account(t, counters, queued, protect_failed, n)
}

#[inline]
fn account(t: &mut Transport, counters: &WorkerCounters, queued: bool, protect_failed: bool, n: usize) -> bool {
    if queued {
        counters.add(Counter::RtpForwarded, 1);
        t.sent_bytes += n as u64;
    } else if protect_failed {
        counters.drop_one(DropReason::ProtectFailed);
    } else {
        counters.drop_one(DropReason::SendBatchFull);
    }
    queued
}

/// Encrypts and sends RTCP the engine made; returns whether it was queued.
fn send_rtcp(t: &mut Transport, counters: &WorkerCounters, plain: &[u8], now: Instant, out: &mut impl Output) -> bool {
    let before = counters.get(Counter::RtcpForwarded);
    protect_and_send(t, counters, plain, PacketKind::Rtcp, now, out);
    counters.get(Counter::RtcpForwarded) > before
}

#[inline]
fn protect_and_send(t: &mut Transport, counters: &WorkerCounters, plain: &[u8], kind: PacketKind, received: Instant, out: &mut impl Output) {
    let (Some(remote), Some(ctx)) = (t.remote, t.srtp_out.as_mut()) else {
        return counters.drop_one(DropReason::ProtectFailed);
    };
    let mut protect_failed = false;
    let rtcp = kind != PacketKind::Rtp;
    let queued = out.send(remote, received, |b| {
        let dst = b.get_mut(..plain.len())?;
        dst.copy_from_slice(plain);
        let r = if rtcp { ctx.protect_rtcp(b, plain.len()) } else { ctx.protect_rtp(b, plain.len()) };
        protect_failed = r.is_err();
        r.ok()
    });
    if queued {
        counters.add(if rtcp { Counter::RtcpForwarded } else { Counter::RtpForwarded }, 1);
    } else if protect_failed {
        counters.drop_one(DropReason::ProtectFailed);
    } else {
        counters.drop_one(DropReason::SendBatchFull);
    }
}

fn srtp_drop_reason(e: &switchyard_srtp::Error) -> DropReason {
    use switchyard_srtp::Error as E;
    match e {
        E::Replayed { .. } => DropReason::SrtpReplay,
        E::AuthenticationFailed { .. } => DropReason::SrtpAuth,
        _ => DropReason::SrtpMalformed,
    }
}
