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
    /// Forwards the stream `ssrc` sent by `publisher` to `subscriber`.
    Subscribe {
        /// The transport the stream arrives on.
        publisher: TransportId,
        /// The stream's SSRC.
        ssrc: u32,
        /// The transport that receives copies.
        subscriber: TransportId,
    },
    /// Stops forwarding `ssrc` from `publisher` to `subscriber`.
    Unsubscribe {
        /// The transport the stream arrives on.
        publisher: TransportId,
        /// The stream's SSRC.
        ssrc: u32,
        /// The transport that stops receiving it.
        subscriber: TransportId,
    },
    /// Sends a DTLS datagram produced by the control daemon to the transport's ICE-selected address.
    DtlsOut {
        /// The transport.
        transport: TransportId,
        /// One datagram of DTLS records.
        datagram: Vec<u8>,
    },
    /// Sends a keyframe request (RTCP PLI, RFC 4585) for `ssrc` to the transport that publishes it, so
    /// a new subscriber's video starts at once instead of at the publisher's next periodic keyframe.
    RequestKeyframe {
        /// The publishing transport.
        publisher: TransportId,
        /// The video stream's SSRC.
        ssrc: u32,
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
    /// Streams it publishes that have subscribers: `(ssrc, subscriber)`.
    pub subscriptions: Vec<(u32, TransportId)>,
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
            Request::Subscribe { publisher, ssrc, subscriber } => {
                w.u8(5);
                w.u64(*publisher);
                w.u32(*ssrc);
                w.u64(*subscriber);
            }
            Request::Unsubscribe { publisher, ssrc, subscriber } => {
                w.u8(6);
                w.u64(*publisher);
                w.u32(*ssrc);
                w.u64(*subscriber);
            }
            Request::DtlsOut { transport, datagram } => {
                w.u8(7);
                w.u64(*transport);
                w.bytes(datagram);
            }
            Request::RequestKeyframe { publisher, ssrc } => {
                w.u8(10);
                w.u64(*publisher);
                w.u32(*ssrc);
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
                ssrc: r.u32("ssrc")?,
                subscriber: r.u64("subscriber")?,
            },
            6 => Request::Unsubscribe {
                publisher: r.u64("publisher")?,
                ssrc: r.u32("ssrc")?,
                subscriber: r.u64("subscriber")?,
            },
            7 => Request::DtlsOut { transport: r.u64("transport")?, datagram: r.bytes("datagram")? },
            10 => Request::RequestKeyframe { publisher: r.u64("publisher")?, ssrc: r.u32("ssrc")? },
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
                    for (ssrc, sub) in &t.subscriptions {
                        w.u32(*ssrc);
                        w.u64(*sub);
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
                        subscriptions.push((r.u32("ssrc")?, r.u64("subscriber")?));
                    }
                    let srtp_indexes = read_indexes(&mut r)?;
                    ts.push(TransportInfo { transport, worker, ufrag, remote, srtp, subscriptions, srtp_indexes });
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
        }
        w.into_inner()
    }

    /// Decodes an event frame body.
    pub fn decode(body: &[u8]) -> Result<Event, DecodeError> {
        let mut r = Reader::new(body);
        let ev = match r.u8("event type")? {
            1 => Event::DtlsIn { transport: r.u64("transport")?, datagram: r.bytes("datagram")? },
            2 => Event::IceBound { transport: r.u64("transport")?, addr: r.addr("addr")? },
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
            Request::Subscribe { publisher: 1, ssrc: 0xdead_beef, subscriber: 2 },
            Request::Unsubscribe { publisher: 1, ssrc: 5, subscriber: 2 },
            Request::DtlsOut { transport: 4, datagram: vec![22, 254, 253] },
            Request::RequestKeyframe { publisher: 3, ssrc: 0x1234 },
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
        ] {
            assert_eq!(Event::decode(&ev.encode()).unwrap(), ev);
        }
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
