//! Per-stream state of the media-quality path, allocated when the control daemon configures a track
//! or a subscription, never per packet.
//!
//! - [`PubTrack`] lives on the publisher's worker: per layer the loss detector (NACKs upstream), the
//!   keyframe-request coalescer, RFC 3550 receive statistics, the publisher's last sender report, the
//!   measured bitrate and frame height; per track the subscriber list and the audio level window.
//! - [`SubStream`] lives on the subscriber's worker: the sequence/timestamp rewriter onto `out_ssrc`,
//!   the layer selector, the retransmission cache of what the subscriber was sent, the sender-report
//!   counters and the translated sender-report mapping of each layer.

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
/// Packets a subscription's retransmission cache holds: about 1.5 s of 1.5 Mbit/s video, longer than
/// a packet is worth retransmitting (the upstream NACK generator gives up after 1 s), at 384 KiB per
/// video subscription.
pub const NACK_CACHE_PACKETS: usize = 256;
/// Largest packet the cache keeps.
pub const NACK_CACHE_SLOT: usize = 1500;

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
    /// What the subscriber was sent, by outgoing sequence number.
    pub cache: Option<NackCache>,
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
            cache: video.then(|| NackCache::new(NACK_CACHE_PACKETS, NACK_CACHE_SLOT)),
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
