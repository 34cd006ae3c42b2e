//! Per-stream state of the media-quality path, allocated when the control daemon configures a track
//! or a subscription, never per packet.
//!
//! - [`PubTrack`] lives on the publisher's worker: per layer the loss detector (NACKs upstream), the
//!   keyframe-request coalescer, RFC 3550 receive statistics, the publisher's last sender report, the
//!   measured bitrate and frame height; per track the subscriber list and the audio level window.
//! - [`SubStream`] lives on the subscriber's worker: the sequence/timestamp rewriter onto `out_ssrc`,
//!   the layer selector, the record of what the subscriber was sent ([`SentRing`]), the sender-report
//!   counters and the translated sender-report mapping of each layer.
//! - [`PacketStore`] lives on every worker with subscribers of a video track, one per track and worker:
//!   the track's recent packets as they came from the publisher, which all of that worker's
//!   subscriptions to it answer NACKs from (each rewrites a packet the way it first sent it).

use std::time::Instant;

use switchyard_protocol::{Layer, TrackKind, TransportId, FB_NACK};

use crate::forwarder::Dest;
use crate::media::keyframe::{FirDedup, KeyframeRequester};
use crate::media::layer_selector::{self, LayerSelector};
use crate::media::nack_cache::NackCache;
use crate::media::nack_generator::{self, NackGenerator};
use crate::media::seq_rewriter::SeqRewriter;
use crate::rtp::RecvStats;

/// Most layers a track has.
pub const MAX_LAYERS: usize = 3;
/// Least time between two keyframe requests sent upstream for one layer.
pub const KEYFRAME_INTERVAL_MS: u64 = 500;
/// Packets a [`PacketStore`] keeps per layer: about 1.5 s of 1.5 Mbit/s video, longer than a packet is
/// worth retransmitting (the upstream NACK generator gives up after 1 s), at 384 KiB per layer and
/// worker (not per subscriber). A subscription's [`SentRing`] has as many entries, 12 bytes each.
pub const NACK_CACHE_PACKETS: usize = 256;
/// Largest packet the store keeps.
pub const NACK_CACHE_SLOT: usize = 1500;

/// A video track's recent packets on one worker, per layer and by the publisher's sequence number, as
/// they arrived (plaintext, header-extension ids already rewritten): shared by every subscription to
/// the track on this worker, which answer NACKs from it.
pub struct PacketStore {
    /// (publisher, track).
    pub key: (TransportId, u32),
    /// One ring per layer.
    pub layers: Vec<NackCache>,
    /// Subscriptions on this worker using it; it goes with the last.
    pub users: u32,
}

impl PacketStore {
    /// A store for `layers` layers (1 to [`MAX_LAYERS`]) with one user.
    pub fn new(key: (TransportId, u32), layers: u8) -> PacketStore {
        let n = (layers as usize).clamp(1, MAX_LAYERS);
        PacketStore { key, layers: (0..n).map(|_| NackCache::new(NACK_CACHE_PACKETS, NACK_CACHE_SLOT)).collect(), users: 1 }
    }

    /// Keeps packet `seq` of `layer` unless it is already kept (a packet from another worker arrives
    /// once per subscriber here).
    #[inline]
    pub fn keep(&mut self, layer: u8, seq: u16, pkt: &[u8]) {
        if let Some(c) = self.layers.get_mut(layer as usize) {
            if c.get(seq).is_none() {
                let _ = c.put(seq, pkt);
            }
        }
    }

    /// Packet `seq` of `layer`, if still kept.
    pub fn get(&self, layer: u8, seq: u16) -> Option<&[u8]> {
        self.layers.get(layer as usize)?.get(seq)
    }
}

/// One packet a subscription sent: which stored packet it was and the timestamp it went out with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentPacket {
    /// Its outgoing sequence number.
    pub out_seq: u16,
    /// The publisher's sequence number of the layer it came from.
    pub in_seq: u16,
    /// Its outgoing RTP timestamp.
    pub ts: u32,
    /// The layer.
    pub layer: u8,
    /// Whether the entry holds a packet.
    pub valid: bool,
}

/// What a subscription sent, by outgoing sequence number: a ring of [`SentPacket`]s.
pub struct SentRing {
    slots: Box<[SentPacket]>,
}

impl SentRing {
    /// A ring of `capacity` entries (rounded up to a power of two).
    pub fn new(capacity: usize) -> SentRing {
        SentRing { slots: vec![SentPacket::default(); capacity.clamp(1, 32768).next_power_of_two()].into_boxed_slice() }
    }

    /// Records that `out_seq` was `in_seq` of `layer`, sent with timestamp `ts`.
    #[inline]
    pub fn record(&mut self, out_seq: u16, layer: u8, in_seq: u16, ts: u32) {
        let mask = self.slots.len() - 1;
        self.slots[out_seq as usize & mask] = SentPacket { out_seq, in_seq, ts, layer, valid: true };
    }

    /// What went out as `out_seq`, if the ring still remembers it.
    pub fn get(&self, out_seq: u16) -> Option<SentPacket> {
        let e = self.slots[out_seq as usize & (self.slots.len() - 1)];
        (e.valid && e.out_seq == out_seq).then_some(e)
    }
}

/// A publisher's latest sender report for one layer: NTP time, RTP time, when it arrived.
pub type SrInfo = (u64, u32, Instant);

/// One layer (SSRC) of a published track.
pub struct PubLayer {
    /// Its rid ("" = not simulcast).
    pub rid: String,
    /// Its SSRC, 0 until learned.
    pub ssrc: u32,
    /// Loss detection for NACKs (video with `nack` negotiated).
    pub nack: Option<NackGenerator>,
    /// Keyframe-request coalescing.
    pub keyframes: KeyframeRequester,
    /// RFC 3550 receive statistics.
    pub stats: RecvStats,
    /// The publisher's last SR about it.
    pub last_sr: Option<SrInfo>,
    /// Bytes in the current bitrate window, and when the window started (ms).
    pub window_bytes: u64,
    /// Start of the bitrate window, ms.
    pub window_start_ms: u64,
    /// Bitrate over the last complete window.
    pub bps: u32,
    /// Frame height from the last VP8 keyframe.
    pub height: u16,
}

/// A track a local transport publishes.
pub struct PubTrack {
    /// The publisher's slot.
    pub slot: usize,
    /// The publisher's id.
    pub publisher: TransportId,
    /// The control daemon's track id.
    pub id: u32,
    /// Audio or video.
    pub kind: TrackKind,
    /// Its mid.
    pub mid: String,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Negotiated feedback (`FB_*`).
    pub feedback: u8,
    /// Layers, lowest first.
    pub layers: Vec<PubLayer>,
    /// Where its packets go.
    pub subscribers: Vec<Route>,
    /// Index of this worker's [`PacketStore`] for it as last found (`usize::MAX` before; checked
    /// against the store's key on every use, like [`Route::sub`]).
    pub store: usize,
    /// Loudest audio level (lowest -dBov) in the current window, if any packet carried one.
    pub level: Option<u8>,
    /// Last receiver report sent about it, ms.
    pub last_rr_ms: u64,
}

/// One destination of a track's packets.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The subscriber.
    pub dest: Dest,
    /// For a local subscriber: the index of its subscription state as last found (`usize::MAX`
    /// before). Checked on every use against the subscription's key and its transport's id, so a
    /// stale index after removals and re-use only costs the hash lookups it saves.
    pub sub: usize,
}

impl Route {
    /// A route to `dest` whose subscription is yet to be looked up.
    pub fn new(dest: Dest) -> Route {
        Route { dest, sub: usize::MAX }
    }
}

impl PubTrack {
    /// State for a newly declared track.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        slot: usize,
        publisher: TransportId,
        id: u32,
        kind: TrackKind,
        mid: String,
        clock_rate: u32,
        feedback: u8,
        layers: &[Layer],
        now_ms: u64,
    ) -> PubTrack {
        let video = kind == TrackKind::Video;
        let layers = layers
            .iter()
            .take(MAX_LAYERS)
            .map(|l| PubLayer {
                rid: l.rid.clone(),
                ssrc: l.ssrc,
                nack: (video && feedback & FB_NACK != 0).then(|| NackGenerator::new(nack_generator::Config::default())),
                keyframes: KeyframeRequester::new(KEYFRAME_INTERVAL_MS),
                stats: RecvStats::default(),
                last_sr: None,
                window_bytes: 0,
                window_start_ms: now_ms,
                bps: 0,
                height: 0,
            })
            .collect();
        PubTrack {
            slot,
            publisher,
            id,
            kind,
            mid,
            clock_rate: clock_rate.max(1),
            feedback,
            layers,
            subscribers: Vec::new(),
            store: usize::MAX,
            level: None,
            last_rr_ms: now_ms,
        }
    }

    /// Whether the declaration matches (a repeated `AddTrack` is accepted when it does).
    pub fn same_as(&self, kind: TrackKind, mid: &str, clock_rate: u32, feedback: u8, layers: &[Layer]) -> bool {
        self.kind == kind
            && self.mid == mid
            && self.clock_rate == clock_rate.max(1)
            && self.feedback == feedback
            && self.layers.len() == layers.len()
            && self.layers.iter().zip(layers).all(|(a, b)| a.rid == b.rid && (b.ssrc == 0 || a.ssrc == b.ssrc))
    }
}

/// What a subscription needs to know when it is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The publishing transport.
    pub publisher: TransportId,
    /// Where the publisher lives (for keyframe requests).
    pub publisher_at: Dest,
    /// The track.
    pub track: u32,
    /// Audio or video.
    pub kind: TrackKind,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Number of layers (1 = not simulcast).
    pub layers: u8,
    /// SSRC the subscriber sees.
    pub out_ssrc: u32,
    /// SSRC of retransmissions (0 = on `out_ssrc`).
    pub out_rtx_ssrc: u32,
    /// Payload type of retransmissions.
    pub rtx_payload_type: u8,
}

/// One track as one local subscriber receives it.
pub struct SubStream {
    /// The subscriber's slot.
    pub slot: usize,
    /// What it was created with.
    pub spec: SubscriptionSpec,
    /// Video (rewriting waits for keyframes, layers, cache).
    pub video: bool,
    /// Created at the first packet of the target layer (its seq/ts become the starting point, so a
    /// single-layer stream keeps its numbers).
    pub rewriter: Option<SeqRewriter>,
    /// The layer being asked for (`None`: not chosen yet, or paused).
    pub target: Option<u8>,
    /// The selector says nothing fits: video is withheld.
    pub paused: bool,
    /// Layer choice (simulcast only).
    pub selector: LayerSelector,
    /// Largest height the subscriber shows (`SetPreferences`).
    pub max_height: u16,
    /// When each layer was last seen, ms.
    pub layer_seen_ms: [Option<u64>; MAX_LAYERS],
    /// Each layer's latest sender report from the publisher.
    pub layer_sr: [Option<SrInfo>; MAX_LAYERS],
    /// What the subscriber was sent, by outgoing sequence number (video): NACKs are answered from the
    /// track's [`PacketStore`] through it.
    pub sent: Option<SentRing>,
    /// Tells a repeated FIR from a new one.
    pub fir: FirDedup,
    /// Next RTX sequence number.
    pub rtx_seq: u16,
    /// Packets and payload octets sent (for SR).
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
    /// Last SR sent: when (ms) and its compact NTP with the instant, for RTT from receiver reports.
    pub last_sr_ms: u64,
    /// Compact NTP of the last SR sent and when.
    pub sr_sent: Option<(u32, Instant)>,
    /// When a keyframe was last requested for a switch, ms.
    pub keyframe_asked_ms: Option<u64>,
    /// Whether anything was forwarded yet (the first layer is not a switch).
    pub forwarded: bool,
    /// Whether a keyframe was forwarded yet: until then the subscriber cannot decode, so a
    /// single-layer subscription keeps asking (a first request can be lost: sent before the publisher
    /// was connected, or after an engine restart that joined the stream mid-frame).
    pub keyframe_sent: bool,
    /// Each layer's incoming SSRC, as last seen (for NACKs passed on to the publisher).
    pub in_ssrc: [u32; MAX_LAYERS],
    /// Sequence numbers from before the stream reached the subscriber (`SeqRewriter::earlier_seq`)
    /// already asked of the publisher, by `seq % 1024` (that window is 1024 long): each is passed
    /// on once, so a subscriber repeating its NACKs cannot make the publisher resend to the room.
    pub earlier_asked: [u64; 16],
}

impl SubStream {
    /// State for a new subscription.
    pub fn new(slot: usize, spec: SubscriptionSpec, now_ms: u64) -> SubStream {
        let video = spec.kind == TrackKind::Video;
        let layers = spec.layers.clamp(1, MAX_LAYERS as u8);
        let mut selector = LayerSelector::new(layer_selector::Config::default());
        let ls: Vec<layer_selector::Layer> = (0..layers)
            .map(|i| layer_selector::Layer { ssrc: i as u32, height: 0, bitrate_bps: 0, active: false })
            .collect();
        selector.set_layers(&ls);
        SubStream {
            slot,
            video,
            rewriter: None,
            // One layer: always that one (never paused for bandwidth, no wait for a keyframe).
            target: (layers == 1).then_some(0),
            paused: false,
            selector,
            max_height: u16::MAX,
            layer_seen_ms: [None; MAX_LAYERS],
            layer_sr: [None; MAX_LAYERS],
            sent: video.then(|| SentRing::new(NACK_CACHE_PACKETS)),
            fir: FirDedup::default(),
            rtx_seq: (spec.out_ssrc as u16) ^ 0x5a5a,
            packets: 0,
            octets: 0,
            last_sr_ms: now_ms,
            sr_sent: None,
            keyframe_asked_ms: None,
            forwarded: false,
            keyframe_sent: false,
            in_ssrc: [0; MAX_LAYERS],
            earlier_asked: [0; 16],
            spec: SubscriptionSpec { layers, ..spec },
        }
    }

    /// Simulcast (more than one layer).
    pub fn simulcast(&self) -> bool {
        self.spec.layers > 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sent_ring_remembers_the_last_capacity_sequence_numbers() {
        let mut r = SentRing::new(200);
        for out in 65_500u16..=65_535 {
            r.record(out, 1, out.wrapping_add(7), u32::from(out) * 10);
        }
        for out in 0u16..300 {
            r.record(out, 2, out.wrapping_add(7), u32::from(out) * 10);
        }
        // 256 entries: 44..=299 are there, older ones (and never-sent ones) are not.
        assert_eq!(r.get(299), Some(SentPacket { out_seq: 299, in_seq: 306, ts: 2990, layer: 2, valid: true }));
        assert_eq!(r.get(44).map(|e| e.in_seq), Some(51));
        assert_eq!(r.get(43), None, "overwritten by 299");
        assert_eq!(r.get(65_530), None, "overwritten after the wrap");
        assert_eq!(r.get(1000), None, "never sent");
    }

    #[test]
    fn a_store_keeps_each_packet_once_per_layer() {
        let mut s = PacketStore::new((1, 7), 2);
        s.keep(0, 10, b"layer zero");
        s.keep(1, 10, b"layer one");
        s.keep(1, 10, b"again, from a second hand-off");
        s.keep(2, 10, b"no such layer");
        assert_eq!(s.get(0, 10), Some(&b"layer zero"[..]));
        assert_eq!(s.get(1, 10), Some(&b"layer one"[..]), "the first copy stays");
        assert_eq!(s.get(2, 10), None);
        assert_eq!(s.get(0, 11), None);
        for seq in 11..(11 + NACK_CACHE_PACKETS as u16) {
            s.keep(0, seq, b"x");
        }
        assert_eq!(s.get(0, 10), None, "older than the ring");
    }
}
