use std::net::SocketAddr;

use crate::{DecodeError, ErrorCode, Frame, FrameKind, Reader, Writer};

/// The control daemon's name for a transport; chosen by it, unique within one engine.
pub type TransportId = u64;

/// An SRTP master key and salt for one direction of a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySalt {
    /// Master key (16 bytes for both supported profiles).
    pub key: Vec<u8>,
    /// Master salt (14 bytes for AES-CM, 12 for AES-GCM).
    pub salt: Vec<u8>,
}

/// In [`TransportInfo::srtp_indexes`] and [`Request::ResumeSrtp`]: the highest SRTP packet index
/// (`ROC << 16 | SEQ`, 48 bits) the engine authenticated from the peer for an SSRC.
pub const SRTP_RTP_INBOUND: u8 = 0;
/// The highest SRTP packet index the engine protected towards the peer for an SSRC.
pub const SRTP_RTP_OUTBOUND: u8 = 1;
/// The next SRTCP index the engine sends towards the peer for a sender SSRC.
pub const SRTP_RTCP_OUTBOUND: u8 = 2;

/// Header-extension ids (RFC 8285) a peer uses in the RTP it sends the engine; 0 = not negotiated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderExtIds {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`.
    pub mid: u8,
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`.
    pub rid: u8,
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id`.
    pub repaired_rid: u8,
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level`.
    pub audio_level: u8,
    /// `http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01`.
    pub twcc: u8,
}

/// The id the engine writes the audio-level element under in RTP it sends to subscribers (the
/// subscribe offer declares exactly this id).
pub const OUT_EXT_AUDIO_LEVEL: u8 = 1;
/// The id the engine writes the transport-wide sequence number under in RTP it sends to subscribers.
pub const OUT_EXT_TWCC: u8 = 3;
/// The id every other header-extension element is rewritten to at ingest (never negotiated on the
/// subscribe leg, so receivers ignore it).
pub const OUT_EXT_UNUSED: u8 = 14;

/// Feedback bit in [`Request::AddTrack`]: the publisher negotiated `a=rtcp-fb nack`.
pub const FB_NACK: u8 = 1;
/// Feedback bit: `nack pli`.
pub const FB_PLI: u8 = 2;
/// Feedback bit: `ccm fir`.
pub const FB_FIR: u8 = 4;
/// Feedback bit: `transport-cc`.
pub const FB_TWCC: u8 = 8;
/// Feedback bit: `goog-remb`.
pub const FB_REMB: u8 = 16;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TrackKind {
    /// An audio track.
    Audio = 0,
    /// A video track.
    Video = 1,
}

/// One simulcast layer (or the only layer) of a published track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The RID (`a=rid`), or "" when the track is not simulcast.
    pub rid: String,
    /// The layer's SSRC, or 0 to learn it from the first packet carrying the matching mid and rid
    /// header extensions.
    pub ssrc: u32,
}

/// A request from the control daemon to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// First request on every connection: the protocol version the client speaks and who it is.
    Hello {
        /// Must equal [`crate::VERSION`].
        version: u16,
        /// A name for logs ("switchyard-control", "switchyard-test").
        client: String,
        /// Whether this connection wants the engine's events (DTLS records, ICE bindings). The engine
        /// sends events to the most recent connection that asked.
        events: bool,
    },
    /// Creates a transport that answers ICE checks for `ufrag` with password `pwd`.
    AddTransport {
        /// The control daemon's id for it.
        transport: TransportId,
        /// Worker to place it on, or `None` to let the engine choose the least loaded.
        worker: Option<u16>,
        /// The engine's local ICE username fragment (the first half of incoming USERNAMEs).
        ufrag: String,
        /// The engine's local ICE password: the key of incoming checks' MESSAGE-INTEGRITY.
        pwd: String,
    },
    /// Removes a transport and every subscription to or from it.
    RemoveTransport {
        /// The transport.
        transport: TransportId,
    },
    /// Installs SRTP keys (exported from the DTLS handshake) so the transport starts carrying media.
    SetSrtp {
        /// The transport.
        transport: TransportId,
        /// RFC 5764 protection profile id (0x0001 AES_CM_128_HMAC_SHA1_80, 0x0007 AEAD_AES_128_GCM).
        profile: u16,
        /// Keys the peer encrypts with (what the engine decrypts with).
        inbound: KeySalt,
        /// Keys the engine encrypts with towards the peer.
        outbound: KeySalt,
    },
    /// Seeds the per-SSRC SRTP counters of a transport whose keys are installed (after `SetSrtp`), from
    /// a previous engine's [`TransportInfo::srtp_indexes`], so streams whose sequence numbers have
    /// wrapped go on authenticating in both directions after an engine restart. A counter already
    /// further ahead is kept. Errors if the transport has no SRTP keys or a kind is unknown.
    ResumeSrtp {
        /// The transport.
        transport: TransportId,
        /// `(ssrc, kind, index)`, kind one of [`SRTP_RTP_INBOUND`], [`SRTP_RTP_OUTBOUND`],
        /// [`SRTP_RTCP_OUTBOUND`].
        indexes: Vec<(u32, u8, u64)>,
    },
    /// The header-extension ids a (publishing) transport's peer uses; also tells the engine to send
    /// it TWCC feedback when `ext.twcc != 0`.
    SetExtensions {
        /// The transport.
        transport: TransportId,
        /// The ids of the publish offer (echoed by the answer).
        ext: HeaderExtIds,
    },
    /// Declares a track `publisher` sends: one stream, or up to three simulcast layers.
    AddTrack {
        /// The publishing transport.
        publisher: TransportId,
        /// The control daemon's id for the track, unique per publishing transport.
        track: u32,
        /// Audio or video.
        kind: TrackKind,
        /// The track's media id (the value of the mid header extension).
        mid: String,
        /// RTP clock rate (48000 for Opus, 90000 for video).
        clock_rate: u32,
        /// The negotiated payload type.
        payload_type: u8,
        /// `FB_*` bits of the feedback the publisher negotiated.
        feedback: u8,
        /// 1 to 3 layers, lowest quality first.
        layers: Vec<Layer>,
    },
    /// Removes a track and every subscription to it.
    RemoveTrack {
        /// The publishing transport.
        publisher: TransportId,
        /// The track.
        track: u32,
    },
    /// Forwards a track to `subscriber` as one stream with SSRC `out_ssrc` (sequence numbers and
    /// timestamps rewritten to stay continuous across layer switches; payload type unchanged).
    Subscribe {
        /// The publishing transport.
        publisher: TransportId,
        /// The track.
        track: u32,
        /// The transport that receives it.
        subscriber: TransportId,
        /// The SSRC the subscriber sees.
        out_ssrc: u32,
        /// SSRC of retransmissions (RFC 4588), or 0 to retransmit on `out_ssrc`.
        out_rtx_ssrc: u32,
        /// Payload type of retransmissions, or 0 when there is no RTX.
        rtx_payload_type: u8,
    },
    /// Stops forwarding a track to `subscriber`.
    Unsubscribe {
        /// The publishing transport.
        publisher: TransportId,
        /// The track.
        track: u32,
        /// The transport that stops receiving it.
        subscriber: TransportId,
    },
    /// The size the subscriber shows the track at: the engine's layer choice never exceeds it (the
    /// lowest layer is always allowed).
    SetPreferences {
        /// The publishing transport.
        publisher: TransportId,
        /// The track.
        track: u32,
        /// The subscribing transport.
        subscriber: TransportId,
        /// Maximum height in pixels; `u16::MAX` = no limit.
        max_height: u16,
    },
    /// Test aid: polices what the engine sends to `transport` to `bps` (token bucket, ~100 ms burst),
    /// dropping the excess (counted as `send_cap`); 0 removes the cap.
    SetSendCap {
        /// The transport.
        transport: TransportId,
        /// Bits per second, 0 = no cap.
        bps: u64,
    },
    /// Sends a DTLS datagram produced by the control daemon to the transport's ICE-selected address.
    DtlsOut {
        /// The transport.
        transport: TransportId,
        /// One datagram of DTLS records.
        datagram: Vec<u8>,
    },
    /// Asks the publisher of a video track for a keyframe (through the engine's coalescing keyframe
    /// requester, as PLI or FIR), so a new subscriber's video starts at once.
    RequestKeyframe {
        /// The publishing transport.
        publisher: TransportId,
        /// The track.
        track: u32,
    },
    /// Binds `addr` to the transport as if it had passed an ICE check and selects it for sending. The
    /// control daemon re-installs, in a restarted engine, the address the previous engine reported in
    /// `IceBound`, so media flows before the peer's next check (hitless restarts).
    BindRemote {
        /// The transport.
        transport: TransportId,
        /// The peer's address.
        addr: SocketAddr,
    },
    /// Asks for per-worker counters and latency.
    Stats,
    /// Asks for every transport the engine holds (for resynchronisation after a restart).
    Snapshot,
}

/// Where a worker listens, reported in the Hello reply so the control daemon can build ICE candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Worker index (0-based).
    pub index: u16,
    /// The worker's UDP address.
    pub addr: SocketAddr,
    /// The core it is pinned to, if pinning succeeded.
    pub core: Option<u16>,
}

/// Receive-to-send latency of one worker, from its histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Packets measured.
    pub count: u64,
    /// Median, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile, nanoseconds.
    pub p999_ns: u64,
    /// Maximum, nanoseconds.
    pub max_ns: u64,
    /// Sum of all samples, nanoseconds (for a Prometheus histogram's `_sum`).
    pub sum_ns: u64,
    /// Cumulative counts at fixed upper bounds: `(le_ns, count)`, ascending.
    pub buckets: Vec<(u64, u64)>,
}

/// One worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Worker index.
    pub index: u16,
    /// Transports placed on it.
    pub transports: u32,
    /// Named monotonically increasing counters (`rx_packets`, `tx_bytes`, `rtp_forwarded`, ...).
    pub counters: Vec<(String, u64)>,
    /// Dropped packets by reason (`not_webrtc`, `stun_bad_integrity`, `unbound_source`, ...).
    pub drops: Vec<(String, u64)>,
    /// Receive-to-send latency.
    pub latency: LatencySummary,
}

/// The engine's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// I/O backend in use ("io_uring" or "mmsg").
    pub io: String,
    /// One entry per worker.
    pub workers: Vec<WorkerStats>,
}

/// One transport as the engine holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportInfo {
    /// Its id.
    pub transport: TransportId,
    /// The worker it lives on.
    pub worker: u16,
    /// Local ICE ufrag.
    pub ufrag: String,
    /// The address ICE selected, once a check passed.
    pub remote: Option<SocketAddr>,
    /// Whether SRTP keys are installed.
    pub srtp: bool,
    /// Tracks it publishes that have subscribers: `(track, subscriber)`.
    pub subscriptions: Vec<(u32, TransportId)>,
    /// Tracks it publishes with their known SSRCs: `(track, [(layer, ssrc)])`.
    pub tracks: Vec<(u32, Vec<(u8, u32)>)>,
    /// Its SRTP per-SSRC counters `(ssrc, kind, index)` (kinds [`SRTP_RTP_INBOUND`],
    /// [`SRTP_RTP_OUTBOUND`], [`SRTP_RTCP_OUTBOUND`]), for [`Request::ResumeSrtp`] after a restart.
    pub srtp_indexes: Vec<(u32, u8, u64)>,
}

/// The engine's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer to Hello.
    Hello {
        /// The engine's protocol version.
        version: u16,
        /// I/O backend in use.
        io: String,
        /// The workers and their addresses.
        workers: Vec<WorkerInfo>,
        /// The engine's process id (a change tells the control daemon the engine restarted).
        pid: u32,
    },
    /// The request was carried out.
    Ok,
    /// Answer to AddTransport: where the transport lives.
    TransportAdded {
        /// Worker index.
        worker: u16,
        /// The worker's UDP address (the ICE candidate).
        addr: SocketAddr,
    },
    /// Answer to Stats.
    Stats(EngineStats),
    /// Answer to Snapshot.
    Snapshot(Vec<TransportInfo>),
    /// The request failed; nothing was changed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// A message a person can act on.
        message: String,
    },
}

/// Something the engine reports without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A DTLS datagram arrived from the transport's ICE-verified address.
    DtlsIn {
        /// The transport.
        transport: TransportId,
        /// The datagram.
        datagram: Vec<u8>,
    },
    /// A connectivity check with the right credentials arrived and bound this address to the transport.
    IceBound {
        /// The transport.
        transport: TransportId,
        /// The remote address now used for sending.
        addr: SocketAddr,
    },
    /// The engine bound a simulcast layer's SSRC from its mid and rid header extensions.
    SsrcLearned {
        /// The publishing transport.
        transport: TransportId,
        /// The track.
        track: u32,
        /// Layer index (0 = lowest).
        layer: u8,
        /// The SSRC.
        ssrc: u32,
    },
    /// Every 200 ms per worker: the loudest RFC 6464 level (-dBov, 127 = silence) of each audio track
    /// that received packets with the audio-level extension in the window.
    AudioLevels {
        /// `(publisher, track, level)`.
        levels: Vec<(TransportId, u32, u8)>,
    },
}

fn key_salt(w: &mut Writer, k: &KeySalt) {
    w.bytes(&k.key);
    w.bytes(&k.salt);
}

fn read_key_salt(r: &mut Reader<'_>) -> Result<KeySalt, DecodeError> {
    Ok(KeySalt { key: r.bytes("key")?, salt: r.bytes("salt")? })
}

impl Request {
    /// Encodes the request as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Request::Hello { version, client, events } => {
                w.u8(1);
                w.u16(*version);
                w.str(client);
                w.u8(u8::from(*events));
            }
            Request::AddTransport { transport, worker, ufrag, pwd } => {
                w.u8(2);
                w.u64(*transport);
                w.opt(*worker, |w, v| w.u16(v));
                w.str(ufrag);
                w.str(pwd);
            }
            Request::RemoveTransport { transport } => {
                w.u8(3);
                w.u64(*transport);
            }
            Request::SetSrtp { transport, profile, inbound, outbound } => {
                w.u8(4);
                w.u64(*transport);
                w.u16(*profile);
                key_salt(&mut w, inbound);
                key_salt(&mut w, outbound);
            }
            Request::Subscribe { publisher, track, subscriber, out_ssrc, out_rtx_ssrc, rtx_payload_type } => {
                w.u8(5);
                w.u64(*publisher);
                w.u32(*track);
                w.u64(*subscriber);
                w.u32(*out_ssrc);
                w.u32(*out_rtx_ssrc);
                w.u8(*rtx_payload_type);
            }
            Request::Unsubscribe { publisher, track, subscriber } => {
                w.u8(6);
                w.u64(*publisher);
                w.u32(*track);
                w.u64(*subscriber);
            }
            Request::SetExtensions { transport, ext } => {
                w.u8(13);
                w.u64(*transport);
                for v in [ext.mid, ext.rid, ext.repaired_rid, ext.audio_level, ext.twcc] {
                    w.u8(v);
                }
            }
            Request::AddTrack { publisher, track, kind, mid, clock_rate, payload_type, feedback, layers } => {
                w.u8(14);
                w.u64(*publisher);
                w.u32(*track);
                w.u8(*kind as u8);
                w.str(mid);
                w.u32(*clock_rate);
                w.u8(*payload_type);
                w.u8(*feedback);
                w.u32(layers.len() as u32);
                for l in layers {
                    w.str(&l.rid);
                    w.u32(l.ssrc);
                }
            }
            Request::RemoveTrack { publisher, track } => {
                w.u8(15);
                w.u64(*publisher);
                w.u32(*track);
            }
            Request::SetPreferences { publisher, track, subscriber, max_height } => {
                w.u8(16);
                w.u64(*publisher);
                w.u32(*track);
                w.u64(*subscriber);
                w.u16(*max_height);
            }
            Request::SetSendCap { transport, bps } => {
                w.u8(17);
                w.u64(*transport);
                w.u64(*bps);
            }
            Request::DtlsOut { transport, datagram } => {
                w.u8(7);
                w.u64(*transport);
                w.bytes(datagram);
            }
            Request::RequestKeyframe { publisher, track } => {
                w.u8(10);
                w.u64(*publisher);
                w.u32(*track);
            }
            Request::BindRemote { transport, addr } => {
                w.u8(11);
                w.u64(*transport);
                w.addr(*addr);
            }
            Request::ResumeSrtp { transport, indexes } => {
                w.u8(12);
                w.u64(*transport);
                write_indexes(&mut w, indexes);
            }
            Request::Stats => w.u8(8),
            Request::Snapshot => w.u8(9),
        }
        w.into_inner()
    }

    /// Decodes a request frame body.
    pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(body);
        let req = match r.u8("request type")? {
            1 => Request::Hello {
                version: r.u16("version")?,
                client: r.str("client")?,
                events: r.u8("events")? != 0,
            },
            2 => Request::AddTransport {
                transport: r.u64("transport")?,
                worker: r.opt("worker", |r| r.u16("worker"))?,
                ufrag: r.str("ufrag")?,
                pwd: r.str("pwd")?,
            },
            3 => Request::RemoveTransport { transport: r.u64("transport")? },
            4 => Request::SetSrtp {
                transport: r.u64("transport")?,
                profile: r.u16("profile")?,
                inbound: read_key_salt(&mut r)?,
                outbound: read_key_salt(&mut r)?,
            },
            5 => Request::Subscribe {
                publisher: r.u64("publisher")?,
                track: r.u32("track")?,
                subscriber: r.u64("subscriber")?,
                out_ssrc: r.u32("out_ssrc")?,
                out_rtx_ssrc: r.u32("out_rtx_ssrc")?,
                rtx_payload_type: r.u8("rtx_payload_type")?,
            },
            6 => Request::Unsubscribe {
                publisher: r.u64("publisher")?,
                track: r.u32("track")?,
                subscriber: r.u64("subscriber")?,
            },
            13 => Request::SetExtensions {
                transport: r.u64("transport")?,
                ext: HeaderExtIds {
                    mid: r.u8("mid id")?,
                    rid: r.u8("rid id")?,
                    repaired_rid: r.u8("repaired rid id")?,
                    audio_level: r.u8("audio level id")?,
                    twcc: r.u8("twcc id")?,
                },
            },
            14 => {
                let publisher = r.u64("publisher")?;
                let track = r.u32("track")?;
                let kind = match r.u8("kind")? {
                    0 => TrackKind::Audio,
                    1 => TrackKind::Video,
                    _ => return Err(DecodeError::Invalid { field: "kind", reason: "not 0 or 1" }),
                };
                let mid = r.str("mid")?;
                let clock_rate = r.u32("clock_rate")?;
                let payload_type = r.u8("payload_type")?;
                let feedback = r.u8("feedback")?;
                let n = r.count("layers", 8)?;
                let mut layers = Vec::with_capacity(n);
                for _ in 0..n {
                    layers.push(Layer { rid: r.str("rid")?, ssrc: r.u32("layer ssrc")? });
                }
                Request::AddTrack { publisher, track, kind, mid, clock_rate, payload_type, feedback, layers }
            }
            15 => Request::RemoveTrack { publisher: r.u64("publisher")?, track: r.u32("track")? },
            16 => Request::SetPreferences {
                publisher: r.u64("publisher")?,
                track: r.u32("track")?,
                subscriber: r.u64("subscriber")?,
                max_height: r.u16("max_height")?,
            },
            17 => Request::SetSendCap { transport: r.u64("transport")?, bps: r.u64("bps")? },
            7 => Request::DtlsOut { transport: r.u64("transport")?, datagram: r.bytes("datagram")? },
            10 => Request::RequestKeyframe { publisher: r.u64("publisher")?, track: r.u32("track")? },
            11 => Request::BindRemote { transport: r.u64("transport")?, addr: r.addr("addr")? },
            12 => Request::ResumeSrtp { transport: r.u64("transport")?, indexes: read_indexes(&mut r)? },
            8 => Request::Stats,
            9 => Request::Snapshot,
            tag => return Err(DecodeError::UnknownTag { kind: "request", tag }),
        };
        r.finish()?;
        Ok(req)
    }

    /// Wraps the request in a frame with `id`.
    pub fn frame(&self, id: u32) -> Frame {
        Frame { kind: FrameKind::Request, id, body: self.encode() }
    }
}

fn write_indexes(w: &mut Writer, v: &[(u32, u8, u64)]) {
    w.u32(v.len() as u32);
    for (ssrc, kind, index) in v {
        w.u32(*ssrc);
        w.u8(*kind);
        w.u64(*index);
    }
}

fn read_indexes(r: &mut Reader<'_>) -> Result<Vec<(u32, u8, u64)>, DecodeError> {
    let n = r.count("srtp indexes", 13)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((r.u32("ssrc")?, r.u8("index kind")?, r.u64("index")?));
    }
    Ok(v)
}

fn write_latency(w: &mut Writer, l: &LatencySummary) {
    w.u64(l.count);
    w.u64(l.p50_ns);
    w.u64(l.p99_ns);
    w.u64(l.p999_ns);
    w.u64(l.max_ns);
    w.u64(l.sum_ns);
    w.u32(l.buckets.len() as u32);
    for (le, c) in &l.buckets {
        w.u64(*le);
        w.u64(*c);
    }
}

fn read_latency(r: &mut Reader<'_>) -> Result<LatencySummary, DecodeError> {
    let mut l = LatencySummary {
        count: r.u64("latency count")?,
        p50_ns: r.u64("p50")?,
        p99_ns: r.u64("p99")?,
        p999_ns: r.u64("p999")?,
        max_ns: r.u64("max")?,
        sum_ns: r.u64("sum")?,
        buckets: Vec::new(),
    };
    let n = r.count("buckets", 16)?;
    for _ in 0..n {
        l.buckets.push((r.u64("bucket le")?, r.u64("bucket count")?));
    }
    Ok(l)
}

fn write_named(w: &mut Writer, v: &[(String, u64)]) {
    w.u32(v.len() as u32);
    for (k, n) in v {
        w.str(k);
        w.u64(*n);
    }
}

fn read_named(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<(String, u64)>, DecodeError> {
    let n = r.count(field, 12)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((r.str(field)?, r.u64(field)?));
    }
    Ok(v)
}

impl Reply {
    /// A convenience for error replies.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply::Error { code, message: message.into() }
    }

    /// Encodes the reply as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Reply::Hello { version, io, workers, pid } => {
                w.u8(1);
                w.u16(*version);
                w.str(io);
                w.u32(workers.len() as u32);
                for wk in workers {
                    w.u16(wk.index);
                    w.addr(wk.addr);
                    w.opt(wk.core, |w, c| w.u16(c));
                }
                w.u32(*pid);
            }
            Reply::Ok => w.u8(2),
            Reply::TransportAdded { worker, addr } => {
                w.u8(3);
                w.u16(*worker);
                w.addr(*addr);
            }
            Reply::Stats(s) => {
                w.u8(4);
                w.str(&s.io);
                w.u32(s.workers.len() as u32);
                for wk in &s.workers {
                    w.u16(wk.index);
                    w.u32(wk.transports);
                    write_named(&mut w, &wk.counters);
                    write_named(&mut w, &wk.drops);
                    write_latency(&mut w, &wk.latency);
                }
            }
            Reply::Snapshot(ts) => {
                w.u8(5);
                w.u32(ts.len() as u32);
                for t in ts {
                    w.u64(t.transport);
                    w.u16(t.worker);
                    w.str(&t.ufrag);
                    w.opt(t.remote, |w, a| w.addr(a));
                    w.u8(u8::from(t.srtp));
                    w.u32(t.subscriptions.len() as u32);
                    for (track, sub) in &t.subscriptions {
                        w.u32(*track);
                        w.u64(*sub);
                    }
                    w.u32(t.tracks.len() as u32);
                    for (track, layers) in &t.tracks {
                        w.u32(*track);
                        w.u32(layers.len() as u32);
                        for (layer, ssrc) in layers {
                            w.u8(*layer);
                            w.u32(*ssrc);
                        }
                    }
                    write_indexes(&mut w, &t.srtp_indexes);
                }
            }
            Reply::Error { code, message } => {
                w.u8(6);
                w.u16(*code as u16);
                w.str(message);
            }
        }
        w.into_inner()
    }

    /// Decodes a reply frame body.
    pub fn decode(body: &[u8]) -> Result<Reply, DecodeError> {
        let mut r = Reader::new(body);
        let reply = match r.u8("reply type")? {
            1 => {
                let version = r.u16("version")?;
                let io = r.str("io")?;
                let n = r.count("workers", 8)?;
                let mut workers = Vec::with_capacity(n);
                for _ in 0..n {
                    workers.push(WorkerInfo {
                        index: r.u16("worker index")?,
                        addr: r.addr("worker addr")?,
                        core: r.opt("core", |r| r.u16("core"))?,
                    });
                }
                Reply::Hello { version, io, workers, pid: r.u32("pid")? }
            }
            2 => Reply::Ok,
            3 => Reply::TransportAdded { worker: r.u16("worker")?, addr: r.addr("addr")? },
            4 => {
                let io = r.str("io")?;
                let n = r.count("workers", 30)?;
                let mut workers = Vec::with_capacity(n);
                for _ in 0..n {
                    workers.push(WorkerStats {
                        index: r.u16("worker index")?,
                        transports: r.u32("transports")?,
                        counters: read_named(&mut r, "counters")?,
                        drops: read_named(&mut r, "drops")?,
                        latency: read_latency(&mut r)?,
                    });
                }
                Reply::Stats(EngineStats { io, workers })
            }
            5 => {
                let n = r.count("transports", 20)?;
                let mut ts = Vec::with_capacity(n);
                for _ in 0..n {
                    let transport = r.u64("transport")?;
                    let worker = r.u16("worker")?;
                    let ufrag = r.str("ufrag")?;
                    let remote = r.opt("remote", |r| r.addr("remote"))?;
                    let srtp = r.u8("srtp")? != 0;
                    let m = r.count("subscriptions", 12)?;
                    let mut subscriptions = Vec::with_capacity(m);
                    for _ in 0..m {
                        subscriptions.push((r.u32("track")?, r.u64("subscriber")?));
                    }
                    let k = r.count("tracks", 8)?;
                    let mut tracks = Vec::with_capacity(k);
                    for _ in 0..k {
                        let track = r.u32("track")?;
                        let l = r.count("track layers", 5)?;
                        let mut layers = Vec::with_capacity(l);
                        for _ in 0..l {
                            layers.push((r.u8("layer")?, r.u32("layer ssrc")?));
                        }
                        tracks.push((track, layers));
                    }
                    let srtp_indexes = read_indexes(&mut r)?;
                    ts.push(TransportInfo {
                        transport,
                        worker,
                        ufrag,
                        remote,
                        srtp,
                        subscriptions,
                        tracks,
                        srtp_indexes,
                    });
                }
                Reply::Snapshot(ts)
            }
            6 => Reply::Error { code: ErrorCode::from_u16(r.u16("code")?), message: r.str("message")? },
            tag => return Err(DecodeError::UnknownTag { kind: "reply", tag }),
        };
        r.finish()?;
        Ok(reply)
    }

    /// Wraps the reply in a frame answering request `id`.
    pub fn frame(&self, id: u32) -> Frame {
        Frame { kind: FrameKind::Reply, id, body: self.encode() }
    }
}

impl Event {
    /// Encodes the event as a frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Event::DtlsIn { transport, datagram } => {
                w.u8(1);
                w.u64(*transport);
                w.bytes(datagram);
            }
            Event::IceBound { transport, addr } => {
                w.u8(2);
                w.u64(*transport);
                w.addr(*addr);
            }
            Event::SsrcLearned { transport, track, layer, ssrc } => {
                w.u8(3);
                w.u64(*transport);
                w.u32(*track);
                w.u8(*layer);
                w.u32(*ssrc);
            }
            Event::AudioLevels { levels } => {
                w.u8(4);
                w.u32(levels.len() as u32);
                for (t, track, level) in levels {
                    w.u64(*t);
                    w.u32(*track);
                    w.u8(*level);
                }
            }
        }
        w.into_inner()
    }

    /// Decodes an event frame body.
    pub fn decode(body: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader::new(body);
        let ev = match r.u8("event type")? {
            1 => Event::DtlsIn { transport: r.u64("transport")?, datagram: r.bytes("datagram")? },
            2 => Event::IceBound { transport: r.u64("transport")?, addr: r.addr("addr")? },
            3 => Event::SsrcLearned {
                transport: r.u64("transport")?,
                track: r.u32("track")?,
                layer: r.u8("layer")?,
                ssrc: r.u32("ssrc")?,
            },
            4 => {
                let n = r.count("levels", 13)?;
                let mut levels = Vec::with_capacity(n);
                for _ in 0..n {
                    levels.push((r.u64("transport")?, r.u32("track")?, r.u8("level")?));
                }
                Event::AudioLevels { levels }
            }
            tag => return Err(DecodeError::UnknownTag { kind: "event", tag }),
        };
        r.finish()?;
        Ok(ev)
    }

    /// Wraps the event in a frame (id 0).
    pub fn frame(&self) -> Frame {
        Frame { kind: FrameKind::Event, id: 0, body: self.encode() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Hello { version: 1, client: "test".into(), events: true },
            Request::AddTransport { transport: 9, worker: Some(1), ufrag: "u".into(), pwd: "p".into() },
            Request::AddTransport { transport: 9, worker: None, ufrag: "u".into(), pwd: "p".into() },
            Request::RemoveTransport { transport: 3 },
            Request::SetSrtp {
                transport: 1,
                profile: 7,
                inbound: KeySalt { key: vec![1; 16], salt: vec![2; 12] },
                outbound: KeySalt { key: vec![3; 16], salt: vec![4; 12] },
            },
            Request::Subscribe {
                publisher: 1,
                track: 7,
                subscriber: 2,
                out_ssrc: 0xdead_beef,
                out_rtx_ssrc: 0x0bad_cafe,
                rtx_payload_type: 97,
            },
            Request::Subscribe { publisher: 1, track: 0, subscriber: 2, out_ssrc: 5, out_rtx_ssrc: 0, rtx_payload_type: 0 },
            Request::Unsubscribe { publisher: 1, track: 5, subscriber: 2 },
            Request::SetExtensions {
                transport: 4,
                ext: HeaderExtIds { mid: 1, rid: 2, repaired_rid: 3, audio_level: 4, twcc: 5 },
            },
            Request::SetExtensions { transport: 4, ext: HeaderExtIds::default() },
            Request::AddTrack {
                publisher: 1,
                track: 3,
                kind: TrackKind::Video,
                mid: "1".into(),
                clock_rate: 90_000,
                payload_type: 96,
                feedback: FB_NACK | FB_PLI | FB_FIR | FB_TWCC,
                layers: vec![
                    Layer { rid: "q".into(), ssrc: 0 },
                    Layer { rid: "h".into(), ssrc: 0 },
                    Layer { rid: "f".into(), ssrc: 0x55 },
                ],
            },
            Request::AddTrack {
                publisher: 1,
                track: 4,
                kind: TrackKind::Audio,
                mid: "0".into(),
                clock_rate: 48_000,
                payload_type: 111,
                feedback: 0,
                layers: vec![Layer { rid: String::new(), ssrc: 1234 }],
            },
            Request::RemoveTrack { publisher: 1, track: 3 },
            Request::SetPreferences { publisher: 1, track: 3, subscriber: 2, max_height: 360 },
            Request::SetPreferences { publisher: 1, track: 3, subscriber: 2, max_height: u16::MAX },
            Request::SetSendCap { transport: 2, bps: 300_000 },
            Request::DtlsOut { transport: 4, datagram: vec![22, 254, 253] },
            Request::RequestKeyframe { publisher: 3, track: 0x1234 },
            Request::BindRemote { transport: 3, addr: "[::1]:5004".parse().unwrap() },
            Request::ResumeSrtp { transport: 3, indexes: vec![(7, SRTP_RTP_INBOUND, (3 << 16) | 65_530), (8, SRTP_RTCP_OUTBOUND, 12)] },
            Request::ResumeSrtp { transport: 4, indexes: vec![] },
            Request::Stats,
            Request::Snapshot,
        ]
    }

    #[test]
    fn requests_round_trip() {
        for req in requests() {
            assert_eq!(Request::decode(&req.encode()).unwrap(), req);
        }
    }

    #[test]
    fn replies_and_events_round_trip() {
        let replies = vec![
            Reply::Hello {
                version: 1,
                io: "mmsg".into(),
                workers: vec![WorkerInfo { index: 0, addr: "127.0.0.1:5000".parse().unwrap(), core: Some(0) }],
                pid: 42,
            },
            Reply::Ok,
            Reply::TransportAdded { worker: 1, addr: "[::1]:7".parse().unwrap() },
            Reply::Stats(EngineStats {
                io: "io_uring".into(),
                workers: vec![WorkerStats {
                    index: 0,
                    transports: 2,
                    counters: vec![("rx_packets".into(), 10)],
                    drops: vec![("not_webrtc".into(), 1)],
                    latency: LatencySummary { count: 3, buckets: vec![(1000, 2)], ..Default::default() },
                }],
            }),
            Reply::Snapshot(vec![TransportInfo {
                transport: 1,
                worker: 0,
                ufrag: "abc".into(),
                remote: Some("127.0.0.1:9".parse().unwrap()),
                srtp: true,
                subscriptions: vec![(5, 2)],
                tracks: vec![(5, vec![(0, 0x11), (2, 0x33)]), (6, vec![])],
                srtp_indexes: vec![(5, SRTP_RTP_INBOUND, 0x4_0001), (9, SRTP_RTP_OUTBOUND, 0x1_ffff)],
            }]),
            Reply::error(ErrorCode::UnknownTransport, "no transport 5"),
        ];
        for rep in replies {
            assert_eq!(Reply::decode(&rep.encode()).unwrap(), rep);
        }
        for ev in [
            Event::DtlsIn { transport: 1, datagram: vec![22; 40] },
            Event::IceBound { transport: 2, addr: "127.0.0.1:4".parse().unwrap() },
            Event::SsrcLearned { transport: 3, track: 2, layer: 1, ssrc: 0xfeed_f00d },
            Event::AudioLevels { levels: vec![(1, 0, 127), (2, 5, 30)] },
            Event::AudioLevels { levels: vec![] },
        ] {
            assert_eq!(Event::decode(&ev.encode()).unwrap(), ev);
        }
    }

    #[test]
    fn bad_track_kind_is_rejected() {
        let mut body = Request::AddTrack {
            publisher: 1,
            track: 0,
            kind: TrackKind::Audio,
            mid: String::new(),
            clock_rate: 48_000,
            payload_type: 111,
            feedback: 0,
            layers: vec![],
        }
        .encode();
        body[13] = 2; // tag, publisher (8), track (4), then kind
        assert!(matches!(Request::decode(&body), Err(DecodeError::Invalid { field: "kind", .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for req in requests() {
            let body = req.encode();
            for n in 0..body.len() {
                assert!(Request::decode(&body[..n]).is_err(), "{req:?} truncated to {n}");
            }
            let mut longer = body.clone();
            longer.push(0);
            assert_eq!(Request::decode(&longer), Err(DecodeError::Trailing(1)));
        }
    }

    #[test]
    fn unknown_tag_and_hostile_counts_are_rejected() {
        assert_eq!(Request::decode(&[200]), Err(DecodeError::UnknownTag { kind: "request", tag: 200 }));
        // A Snapshot reply claiming four billion transports in a few bytes.
        let body = [5u8, 0xff, 0xff, 0xff, 0xff, 0, 0];
        assert!(matches!(Reply::decode(&body), Err(DecodeError::Invalid { .. })));
    }
}
