//! The media plane: a few threads, each owning many participants' UDP sockets.
//!
//! Signaling, ICE and DTLS happen elsewhere (on the tokio runtime); once a transport is connected
//! its socket and SRTP contexts are handed to one media thread as an [`Endpoint`]. Each media
//! thread waits on epoll (mio) for all of its sockets at once and keeps a timer heap of send events:
//! a video frame every `1/fps` seconds (a burst of packets, sent with one `sendmmsg`), an Opus-like
//! audio packet every 20 ms, and an ICE consent check every few seconds. Received datagrams are
//! taken with `recvmmsg`, decrypted in place, and every payload byte is checked.
//!
//! A room's publishers send *warm-up* packets (flagged, not counted) until the runner says the
//! room has started (every subscriber saw every stream, or the warm-up timed out); from then on
//! every packet is counted, so loss is exact: each subscriber should receive every packet sent
//! after the start.
//!
//! With loss recovery on ([`LossOptions`], see [`crate::feedback`]) subscribers also send NACKs and
//! receiver reports, publishers answer NACKs from a ring of what they sent and send sender reports,
//! and either side may drop a share of the RTP it receives or sends.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token, Waker};
use switchyard_dtls::Session;
use switchyard_engine::media::nack_cache::NackCache;
use switchyard_engine::media::rtcp::{self, Packet, ReportBlock, SenderInfo};
use switchyard_srtp::Context;
use switchyard_stun::BindingRequest;

use crate::clock::now_ns;
use crate::feedback::{self, kind_index, Counters, LossOptions, RtpRx, NACK_BATCH};
use crate::mmsg::{Batch, RecvBatch};
use crate::payload::{
    self, Header, FLAG_FRAME_START, FLAG_KEYFRAME, FLAG_UPLINK_LOST, FLAG_WARMUP, KIND_AUDIO,
    KIND_VIDEO, VP8_KEYFRAME_HEADER,
};

const WAKER: Token = Token(usize::MAX);
const KEEPALIVE_NS: u64 = 2_500_000_000;
const AUDIO_PERIOD_NS: u64 = 20_000_000;
const RTP_HEADER: usize = 12;

/// What publishers send.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MediaParams {
    /// Video bits per second (0: no video).
    pub video_bitrate: u64,
    /// Video frames per second.
    pub fps: u32,
    /// Largest RTP packet (header + payload, before SRTP) in bytes.
    pub packet_size: usize,
    /// Audio bits per second (0: no audio); one packet per 20 ms.
    pub audio_bitrate: u64,
}

impl MediaParams {
    /// Payload bytes of one audio packet.
    pub fn audio_payload(&self) -> usize {
        ((self.audio_bitrate / 8 / 50) as usize).clamp(payload::HEADER_LEN + 8, 1000)
    }

    /// Packet payload sizes of one video frame (all equal but the last).
    pub fn video_frame(&self) -> (usize, usize) {
        let fps = u64::from(self.fps.max(1));
        let frame = ((self.video_bitrate / 8 / fps) as usize).max(payload::HEADER_LEN + 8);
        let max_payload = self
            .packet_size
            .saturating_sub(RTP_HEADER)
            .clamp(payload::HEADER_LEN + 8, 1400);
        let n = frame.div_ceil(max_payload);
        (n, frame.div_ceil(n).max(payload::HEADER_LEN + 8))
    }

    /// Packets per second one publisher sends.
    pub fn packets_per_second(&self) -> f64 {
        let audio = if self.audio_bitrate > 0 { 50.0 } else { 0.0 };
        let video = if self.video_bitrate > 0 {
            self.video_frame().0 as f64 * f64::from(self.fps)
        } else {
            0.0
        };
        audio + video
    }
}

/// One track a publisher sends.
#[derive(Debug, Clone, Copy)]
pub struct Track {
    /// Its SSRC (also the payload's stream id).
    pub ssrc: u32,
    /// RTP payload type.
    pub pt: u8,
    /// [`KIND_AUDIO`] or [`KIND_VIDEO`].
    pub kind: u8,
}

/// What an endpoint does.
pub enum Role {
    /// Sends these tracks.
    Publisher(Vec<Track>),
    /// Receives.
    Subscriber,
}

/// How an endpoint keeps its binding alive.
pub enum Keepalive {
    /// Nothing.
    None,
    /// ICE consent checks: USERNAME `server:client` and the server's password.
    Ice {
        /// `"<server ufrag>:<our ufrag>"`.
        username: String,
        /// The server's ICE password.
        password: String,
        /// Our ICE password, to answer the server's own checks.
        local_pwd: String,
    },
    /// Resend this datagram (raw mode registration).
    Datagram(Vec<u8>),
}

/// State a room's endpoints share with the runner.
#[derive(Debug, Default)]
pub struct RoomShared {
    /// Room number.
    pub id: u32,
    /// Subscribers whose media connected.
    pub subscribers: AtomicU32,
    /// Streams each subscriber should receive.
    pub streams_per_subscriber: AtomicU32,
    /// Subscribers that have seen a packet of every stream.
    pub ready: AtomicU32,
    /// The measured phase has begun: publishers stop flagging warm-up.
    pub started: AtomicBool,
}

/// A connected transport handed to a media thread.
pub struct Endpoint {
    /// The transport's socket (nonblocking).
    pub socket: std::net::UdpSocket,
    /// The server's address for it.
    pub remote: SocketAddr,
    /// SRTP context for what we send (None: raw RTP).
    pub tx: Option<Context>,
    /// SRTP context for what we receive (None: raw RTP).
    pub rx: Option<Context>,
    /// Publisher or subscriber.
    pub role: Role,
    /// Its room.
    pub room: Arc<RoomShared>,
    /// Keep-alive traffic.
    pub keepalive: Keepalive,
    /// The DTLS association, kept running (late handshake datagrams are fed to it).
    pub dtls: Option<Arc<Session>>,
}

/// Counters shared with the progress printer.
#[derive(Debug, Default)]
pub struct Live {
    /// RTP packets sent.
    pub tx_packets: AtomicU64,
    /// Bytes sent (on the wire, SRTP included).
    pub tx_bytes: AtomicU64,
    /// Datagrams received.
    pub rx_packets: AtomicU64,
    /// Bytes received.
    pub rx_bytes: AtomicU64,
    /// Measured packets that subscribers should receive (sent x subscribers of the room).
    pub expected: AtomicU64,
    /// Measured packets received (unique).
    pub received: AtomicU64,
    /// Decrypt, verify and send failures.
    pub errors: AtomicU64,
}

/// Payload sequence numbers remembered per stream for duplicate and late-arrival detection.
const WINDOW: u64 = 1024;

/// Per-stream receive state.
struct StreamRx {
    stream: u32,
    kind: u8,
    /// Measured packets received, duplicates excluded.
    unique: u64,
    highest: Option<u64>,
    /// Bit `seq % WINDOW`: payload `seq` (within `WINDOW` of `highest`) received.
    window: [u64; (WINDOW / 64) as usize],
    jitter_ns: f64,
    last_transit: Option<i64>,
    /// RTP-level statistics and loss detection (loss recovery on).
    rtp: Option<RtpRx>,
}

/// How a measured payload sequence number arrived.
#[derive(PartialEq, Eq)]
enum Arrival {
    /// Newer than everything before it.
    InOrder,
    /// After a newer one (reordered, or a retransmission).
    Late,
    /// Seen already.
    Duplicate,
}

impl StreamRx {
    fn new(stream: u32, kind: u8, rtp: Option<RtpRx>) -> StreamRx {
        StreamRx {
            stream,
            kind,
            unique: 0,
            highest: None,
            window: [0; (WINDOW / 64) as usize],
            jitter_ns: 0.0,
            last_transit: None,
            rtp,
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let b = seq % WINDOW;
        ((b / 64) as usize, 1u64 << (b % 64))
    }

    fn arrive(&mut self, seq: u64) -> Arrival {
        match self.highest {
            Some(hi) if seq <= hi => {
                if hi - seq < WINDOW {
                    let (w, m) = StreamRx::bit(seq);
                    if self.window[w] & m != 0 {
                        return Arrival::Duplicate;
                    }
                    self.window[w] |= m;
                }
                Arrival::Late
            }
            hi => {
                match hi {
                    Some(hi) if seq - hi < WINDOW => {
                        for s in hi + 1..seq {
                            let (w, m) = StreamRx::bit(s);
                            self.window[w] &= !m;
                        }
                    }
                    _ => self.window = [0; (WINDOW / 64) as usize],
                }
                let (w, m) = StreamRx::bit(seq);
                self.window[w] |= m;
                self.highest = Some(seq);
                Arrival::InOrder
            }
        }
    }
}

struct TrackTx {
    track: Track,
    rtp_seq: u16,
    rtp_ts: u32,
    seq: u64,
    frame: u32,
    /// Measured packets sent.
    sent: u64,
    /// Measured packets dropped on the emulated uplink (their retransmissions may still arrive).
    up_lost: u64,
    /// What was sent, for retransmission (loss recovery on).
    cache: Option<NackCache>,
    /// RTP timestamp of the last frame sent and when (for sender reports).
    last_ts: u32,
    last_ts_ns: u64,
    /// Packets and payload octets sent (sender report counts; dropped ones included).
    packets: u32,
    octets: u32,
    /// The next video frame is a keyframe: the first one, and the one after a PLI or a new FIR.
    keyframe_due: bool,
    /// Last FIR sequence number acted on (a repeated FIR asks for the same keyframe).
    fir_seq: Option<u8>,
}

/// The video track of `tracks` sending `ssrc` (what a PLI or FIR names).
fn video_track(tracks: &mut [TrackTx], ssrc: u32) -> Option<&mut TrackTx> {
    tracks.iter_mut().find(|t| t.track.ssrc == ssrc && t.track.kind == KIND_VIDEO)
}

struct Ep {
    socket: mio::net::UdpSocket,
    remote: SocketAddr,
    tx: Option<Context>,
    rx: Option<Context>,
    room: Arc<RoomShared>,
    keepalive: Keepalive,
    dtls: Option<Arc<Session>>,
    tracks: Vec<TrackTx>,
    streams: Vec<StreamRx>,
    ready: bool,
    subscriber: bool,
    /// Sender SSRC of our RTCP.
    rtcp_ssrc: u32,
    /// Round-trip estimate for NACK retries, ms (from NACK-to-retransmission times).
    rtt_ms: u64,
    rtt_measured: bool,
    /// A gap appeared: send NACKs once this batch is handled.
    nack_due: bool,
    /// A NACK retry timer is pending.
    nack_timer: bool,
}

/// What a media thread is told.
pub enum Command {
    /// Take over a connected transport.
    Add(Box<Endpoint>),
}

/// Totals of one room, merged across threads.
#[derive(Debug, Default, Clone)]
pub struct RoomTally {
    /// Measured packets sent, per stream.
    pub sent: HashMap<u32, u64>,
    /// Measured packets received by all subscribers (unique).
    pub received: u64,
    /// Measured packets sent, by kind (audio, video).
    pub sent_kind: [u64; 2],
    /// Measured packets received (unique), by kind.
    pub received_kind: [u64; 2],
    /// Measured packets publishers dropped on the emulated uplink, by kind (each is missing at every
    /// subscriber unless retransmitted).
    pub up_lost: [u64; 2],
    /// Received late with loss recovery on, by kind, whose original was dropped on the uplink.
    pub recovered_up: [u64; 2],
    /// Received late with loss recovery on, by kind, the others (downlink losses).
    pub recovered_down: [u64; 2],
}

impl RoomTally {
    fn add(&mut self, t: &RoomTally) {
        self.received += t.received;
        for (s, n) in &t.sent {
            *self.sent.entry(*s).or_default() += n;
        }
        for k in 0..2 {
            self.sent_kind[k] += t.sent_kind[k];
            self.received_kind[k] += t.received_kind[k];
            self.up_lost[k] += t.up_lost[k];
            self.recovered_up[k] += t.recovered_up[k];
            self.recovered_down[k] += t.recovered_down[k];
        }
    }
}

/// What a media thread reports when it ends.
#[derive(Debug)]
pub struct Report {
    /// RTP packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Datagrams the kernel refused to send.
    pub tx_failed: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// RTCP received.
    pub rx_rtcp: u64,
    /// STUN received.
    pub rx_stun: u64,
    /// DTLS received after hand-off.
    pub rx_dtls: u64,
    /// Warm-up packets received.
    pub rx_warmup: u64,
    /// SRTP unprotect failures (replays excluded).
    pub srtp_errors: u64,
    /// SRTP packets refused as replays (a packet received twice, e.g. a retransmission of a packet
    /// that had arrived).
    pub srtp_replayed: u64,
    /// Payloads that were not ours or failed the byte check.
    pub corrupt: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Arrived after a later packet of the same stream.
    pub reordered: u64,
    /// One-way latency in microseconds (with loss recovery on: first arrivals in order only).
    pub latency: Histogram<u64>,
    /// Loss recovery on: original send to arrival of packets that arrived late (recovered), µs.
    pub recovery_latency: Histogram<u64>,
    /// Loss injection and recovery counters.
    pub fb: Counters,
    /// Final RFC 3550 jitter of each received stream, microseconds.
    pub jitter_us: Vec<f64>,
    /// Per room.
    pub rooms: HashMap<u32, RoomTally>,
}

impl Report {
    fn new() -> Report {
        Report {
            tx_packets: 0,
            tx_bytes: 0,
            tx_failed: 0,
            rx_packets: 0,
            rx_bytes: 0,
            rx_rtcp: 0,
            rx_stun: 0,
            rx_dtls: 0,
            rx_warmup: 0,
            srtp_errors: 0,
            srtp_replayed: 0,
            corrupt: 0,
            duplicates: 0,
            reordered: 0,
            latency: new_histogram(),
            recovery_latency: new_histogram(),
            fb: Counters::default(),
            jitter_us: Vec::new(),
            rooms: HashMap::new(),
        }
    }

    /// Adds another thread's report.
    pub fn merge(&mut self, o: Report) {
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_failed += o.tx_failed;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.rx_rtcp += o.rx_rtcp;
        self.rx_stun += o.rx_stun;
        self.rx_dtls += o.rx_dtls;
        self.rx_warmup += o.rx_warmup;
        self.srtp_errors += o.srtp_errors;
        self.srtp_replayed += o.srtp_replayed;
        self.corrupt += o.corrupt;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        let _ = self.latency.add(&o.latency);
        let _ = self.recovery_latency.add(&o.recovery_latency);
        self.fb.merge(&o.fb);
        self.jitter_us.extend(o.jitter_us);
        for (id, t) in o.rooms {
            self.rooms.entry(id).or_default().add(&t);
        }
    }

    /// An empty report to merge into.
    pub fn empty() -> Report {
        Report::new()
    }
}

/// A latency histogram: 1 µs to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Flags shared by every media thread.
#[derive(Debug, Default)]
pub struct Control {
    /// Publishers stop sending.
    pub stop_sending: AtomicBool,
    /// Threads return their reports.
    pub exit: AtomicBool,
}

/// A running media thread.
pub struct MediaThread {
    /// Its command queue.
    pub commands: Sender<Command>,
    /// Wakes it when a command is queued.
    pub waker: Arc<Waker>,
    /// Its report, when it ends.
    pub handle: Mutex<Option<std::thread::JoinHandle<Report>>>,
}

impl MediaThread {
    /// Hands an endpoint to the thread.
    pub fn add(&self, ep: Endpoint) -> bool {
        let ok = self.commands.send(Command::Add(Box::new(ep))).is_ok();
        let _ = self.waker.wake();
        ok
    }

    /// Waits for the thread to end (after [`Control::exit`]) and takes its report.
    pub fn join(&self) -> Option<Report> {
        let _ = self.waker.wake();
        let h = self.handle.lock().ok()?.take()?;
        h.join().ok()
    }
}

/// Starts media thread `index` (no loss injection or recovery).
pub fn spawn(
    index: usize,
    params: MediaParams,
    control: Arc<Control>,
    live: Arc<Live>,
    interval: Arc<Mutex<Histogram<u64>>>,
) -> std::io::Result<MediaThread> {
    spawn_with(
        index,
        params,
        LossOptions::default(),
        true,
        control,
        live,
        interval,
    )
}

/// Starts media thread `index` with loss injection and recovery as `loss` says; `gro`: receive
/// trains whole (see [`crate::mmsg::enable_gro`]).
pub fn spawn_with(
    index: usize,
    params: MediaParams,
    loss: LossOptions,
    gro: bool,
    control: Arc<Control>,
    live: Arc<Live>,
    interval: Arc<Mutex<Histogram<u64>>>,
) -> std::io::Result<MediaThread> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let handle = std::thread::Builder::new()
        .name(format!("media-{index}"))
        .spawn(move || {
            let mut w = Worker {
                poll,
                commands: rx,
                params,
                control,
                live,
                interval,
                eps: Vec::new(),
                timers: BinaryHeap::new(),
                rxb: RecvBatch::new(64),
                batch: Batch::new(64),
                gro,
                txb: Batch::new(32),
                report: Report::new(),
                local_hist: new_histogram(),
                rng: Rng(
                    0x2545_F491_4F6C_DD1D ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ),
                fb: loss.feedback_on(),
                p_down: LossOptions::threshold(loss.loss_down_pct),
                p_up: LossOptions::threshold(loss.loss_up_pct),
                nack_out: [0; NACK_BATCH],
            };
            w.run();
            w.finish()
        })?;
    Ok(MediaThread {
        commands: tx,
        waker,
        handle: Mutex::new(Some(handle)),
    })
}

struct Worker {
    poll: Poll,
    commands: Receiver<Command>,
    params: MediaParams,
    control: Arc<Control>,
    live: Arc<Live>,
    interval: Arc<Mutex<Histogram<u64>>>,
    eps: Vec<Ep>,
    /// (due ns, endpoint, event): event < 253 is a track index, 253 a NACK retry, 254 an RTCP
    /// report, 255 a keep-alive.
    timers: BinaryHeap<Reverse<(u64, u32, u8)>>,
    /// Received datagrams (a train the kernel delivered whole comes apart here).
    rxb: RecvBatch,
    /// Media to send.
    batch: Batch,
    /// Ask the kernel for received trains whole (`UDP_GRO`) on every endpoint's socket.
    gro: bool,
    /// RTCP and retransmissions, sent while `rxb` holds received datagrams.
    txb: Batch,
    report: Report,
    local_hist: Histogram<u64>,
    rng: Rng,
    /// Loss recovery on: NACKs, retransmissions, reports.
    fb: bool,
    /// Drop thresholds for a uniform u64 (0: no injection).
    p_down: u64,
    p_up: u64,
    nack_out: [u16; NACK_BATCH],
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `threshold / 2^64` (never for 0).
    fn hit(&mut self, threshold: u64) -> bool {
        threshold > 0 && self.next() < threshold
    }
}

const EV_NACK: u8 = 253;
const EV_REPORT: u8 = 254;
const EV_KEEPALIVE: u8 = 255;

impl Worker {
    fn rand(&mut self) -> u64 {
        self.rng.next()
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_flush = now_ns();
        loop {
            while let Ok(cmd) = self.commands.try_recv() {
                match cmd {
                    Command::Add(ep) => self.add(*ep),
                }
            }
            if self.control.exit.load(Ordering::Relaxed) {
                break;
            }
            let now = now_ns();
            let next = self
                .timers
                .peek()
                .map_or(now + 50_000_000, |Reverse((t, _, _))| *t);
            let wait = Duration::from_nanos(next.saturating_sub(now).min(50_000_000));
            if self.poll.poll(&mut events, Some(wait)).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            for ev in events.iter() {
                let t = ev.token();
                if t != WAKER && t.0 < self.eps.len() {
                    self.drain(t.0);
                }
            }
            self.fire_timers();
            let now = now_ns();
            if now.saturating_sub(last_flush) > 200_000_000 {
                last_flush = now;
                self.flush_interval();
            }
        }
        // Drain once more so packets that arrived during the grace period count.
        for i in 0..self.eps.len() {
            self.drain(i);
        }
        self.flush_interval();
    }

    fn flush_interval(&mut self) {
        if self.local_hist.is_empty() {
            return;
        }
        if let Ok(mut h) = self.interval.lock() {
            let _ = h.add(&self.local_hist);
        }
        self.local_hist.reset();
    }

    fn add(&mut self, ep: Endpoint) {
        let idx = self.eps.len();
        let Ok(()) = ep.socket.set_nonblocking(true) else {
            return;
        };
        // Only from here on: the set-up before this read the socket one datagram at a time.
        if self.gro {
            crate::mmsg::enable_gro(ep.socket.as_raw_fd());
        }
        let mut socket = mio::net::UdpSocket::from_std(ep.socket);
        if self
            .poll
            .registry()
            .register(&mut socket, Token(idx), Interest::READABLE)
            .is_err()
        {
            return;
        }
        let now = now_ns();
        let fb = self.fb && ep.tx.is_some();
        let (tracks, subscriber) = match ep.role {
            Role::Publisher(tracks) => {
                let tracks: Vec<TrackTx> = tracks
                    .into_iter()
                    .map(|track| {
                        let rtp_ts = self.rand() as u32;
                        TrackTx {
                            track,
                            rtp_seq: (self.rand() & 0x7fff) as u16,
                            rtp_ts,
                            seq: 0,
                            frame: 0,
                            sent: 0,
                            up_lost: 0,
                            cache: fb.then(|| self.retransmission_ring(track.kind)),
                            last_ts: rtp_ts,
                            last_ts_ns: now,
                            packets: 0,
                            octets: 0,
                            keyframe_due: track.kind == KIND_VIDEO,
                            fir_seq: None,
                        }
                    })
                    .collect();
                (tracks, false)
            }
            Role::Subscriber => (Vec::new(), true),
        };
        for (i, t) in tracks.iter().enumerate() {
            let period = self.period(t.track.kind);
            // Random phase so publishers do not all burst at once.
            let phase = self.rand() % period.max(1);
            self.timers
                .push(Reverse((now + phase, idx as u32, i as u8)));
        }
        if !matches!(ep.keepalive, Keepalive::None) {
            let phase = self.rand() % KEEPALIVE_NS;
            self.timers
                .push(Reverse((now + phase, idx as u32, EV_KEEPALIVE)));
        }
        if fb {
            let phase = self.rand() % feedback::REPORT_INTERVAL_NS;
            self.timers
                .push(Reverse((now + phase, idx as u32, EV_REPORT)));
        }
        let rtcp_ssrc = match tracks.first() {
            Some(t) => t.track.ssrc,
            None => (self.rand() as u32).max(1),
        };
        self.eps.push(Ep {
            socket,
            remote: ep.remote,
            tx: ep.tx,
            rx: ep.rx,
            room: ep.room,
            keepalive: ep.keepalive,
            dtls: ep.dtls,
            tracks,
            streams: Vec::new(),
            ready: false,
            subscriber,
            rtcp_ssrc,
            rtt_ms: feedback::INITIAL_RTT_MS,
            rtt_measured: false,
            nack_due: false,
            nack_timer: false,
        });
        self.drain(idx);
    }

    /// A ring of about a second of one track's packets (at least 64), slots as large as its packets.
    fn retransmission_ring(&self, kind: u8) -> NackCache {
        let (per_second, size) = if kind == KIND_VIDEO {
            let (n, size) = self.params.video_frame();
            (n * self.params.fps.max(1) as usize, size)
        } else {
            (50, self.params.audio_payload())
        };
        NackCache::new(per_second.max(64), RTP_HEADER + size)
    }

    fn period(&self, kind: u8) -> u64 {
        if kind == KIND_AUDIO {
            AUDIO_PERIOD_NS
        } else {
            1_000_000_000 / u64::from(self.params.fps.max(1))
        }
    }

    fn fire_timers(&mut self) {
        let now = now_ns();
        let stop = self.control.stop_sending.load(Ordering::Relaxed);
        while let Some(&Reverse((due, ep, ev))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let ep = ep as usize;
            if ev == EV_KEEPALIVE {
                self.keepalive(ep);
                self.timers
                    .push(Reverse((due + KEEPALIVE_NS, ep as u32, ev)));
                continue;
            }
            if ev == EV_REPORT {
                self.send_report(ep, now);
                self.timers.push(Reverse((
                    due.max(now.saturating_sub(feedback::REPORT_INTERVAL_NS))
                        + feedback::REPORT_INTERVAL_NS,
                    ep as u32,
                    ev,
                )));
                continue;
            }
            if ev == EV_NACK {
                if let Some(e) = self.eps.get_mut(ep) {
                    e.nack_timer = false;
                }
                self.send_nacks(ep, now);
                continue;
            }
            // With loss recovery on, publishers keep sending (uncounted) packets after the measured
            // phase, so a loss among the last counted packets is still detected and recovered, as in
            // a call that goes on.
            if stop && !self.fb {
                continue;
            }
            let Some(kind) = self
                .eps
                .get(ep)
                .and_then(|e| e.tracks.get(usize::from(ev)))
                .map(|t| t.track.kind)
            else {
                continue;
            };
            self.send_track(ep, usize::from(ev), stop);
            let period = self.period(kind);
            let mut next = due + period;
            if next + 1_000_000_000 < now {
                // Far behind (the machine is overloaded): skip ahead rather than burst.
                next = now + period;
            }
            self.timers.push(Reverse((next, ep as u32, ev)));
        }
    }

    fn keepalive(&mut self, i: usize) {
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&self.rand().to_le_bytes());
        tid[8..].copy_from_slice(&(self.rand() as u32).to_le_bytes());
        let tie = self.rand();
        let Some(ep) = self.eps.get(i) else { return };
        let Some(buf) = self.batch.next_buf() else {
            return;
        };
        let len = match &ep.keepalive {
            Keepalive::None => return,
            Keepalive::Ice {
                username, password, ..
            } => {
                let req = BindingRequest {
                    transaction_id: tid,
                    username: username.as_bytes(),
                    password: password.as_bytes(),
                    priority: 0x6e00_1eff,
                    use_candidate: false,
                    controlling: Some(tie),
                    controlled: None,
                };
                match req.write(buf) {
                    Ok(n) => n,
                    Err(_) => return,
                }
            }
            Keepalive::Datagram(d) => {
                let Some(dst) = buf.get_mut(..d.len()) else {
                    return;
                };
                dst.copy_from_slice(d);
                d.len()
            }
        };
        self.batch.commit(len, ep.remote);
        let _ = self.batch.send(ep.socket.as_raw_fd());
    }

    fn send_track(&mut self, i: usize, t: usize, stopped: bool) {
        let params = self.params;
        let p_up = self.p_up;
        let Some(ep) = self.eps.get_mut(i) else {
            return;
        };
        let started = ep.room.started.load(Ordering::Relaxed) && !stopped;
        let subs = u64::from(ep.room.subscribers.load(Ordering::Relaxed));
        let Some(tr) = ep.tracks.get_mut(t) else {
            return;
        };
        let (count, size) = if tr.track.kind == KIND_VIDEO {
            params.video_frame()
        } else {
            (1, params.audio_payload())
        };
        let vp8 = tr.track.kind == KIND_VIDEO;
        let fd = ep.socket.as_raw_fd();
        let mut sent_total = 0u64;
        let mut bytes_total = 0u64;
        let mut failed_total = 0u64;
        let mut dropped_counted = 0u64;
        let mut k = 0;
        let frame_ns = now_ns();
        while k < count {
            while k < count {
                let Some(buf) = self.batch.next_buf() else {
                    break;
                };
                let last = k + 1 == count;
                let now = now_ns();
                let mut flags = if started { 0 } else { FLAG_WARMUP };
                if k == 0 && vp8 {
                    flags |= FLAG_FRAME_START;
                    if tr.keyframe_due && size >= 1 + VP8_KEYFRAME_HEADER.len() + payload::HEADER_LEN {
                        flags |= FLAG_KEYFRAME;
                        tr.keyframe_due = false;
                        self.report.fb.keyframes_sent += 1;
                    }
                }
                // Uplink loss injection: the packet is made, counted and kept, but not sent.
                let drop = self.rng.hit(p_up);
                if drop {
                    flags |= FLAG_UPLINK_LOST;
                }
                buf[0] = 0x80;
                buf[1] = tr.track.pt | if last && vp8 { 0x80 } else { 0 };
                buf[2..4].copy_from_slice(&tr.rtp_seq.to_be_bytes());
                buf[4..8].copy_from_slice(&tr.rtp_ts.to_be_bytes());
                buf[8..12].copy_from_slice(&tr.track.ssrc.to_be_bytes());
                let h = Header {
                    stream: tr.track.ssrc,
                    seq: tr.seq,
                    send_ns: now,
                    flags,
                    kind: tr.track.kind,
                    frame: tr.frame,
                };
                let plen = payload::write(&mut buf[RTP_HEADER..RTP_HEADER + size], &h, vp8);
                let mut len = RTP_HEADER + plen;
                tr.packets = tr.packets.wrapping_add(1);
                tr.octets = tr.octets.wrapping_add(plen as u32);
                if let Some(cache) = tr.cache.as_mut() {
                    let _ = cache.put(tr.rtp_seq, &buf[..len]);
                }
                if drop {
                    self.report.fb.up_dropped += 1;
                    if started {
                        tr.up_lost += 1;
                        dropped_counted += 1;
                    }
                    k += 1;
                    tr.seq += 1;
                    tr.rtp_seq = tr.rtp_seq.wrapping_add(1);
                    continue;
                }
                if let Some(ctx) = ep.tx.as_mut() {
                    match ctx.protect_rtp(buf, len) {
                        Ok(n) => len = n,
                        Err(_) => {
                            failed_total += 1;
                            k += 1;
                            tr.seq += 1;
                            tr.rtp_seq = tr.rtp_seq.wrapping_add(1);
                            continue;
                        }
                    }
                }
                self.batch.commit(len, ep.remote);
                bytes_total += len as u64;
                tr.seq += 1;
                tr.rtp_seq = tr.rtp_seq.wrapping_add(1);
                k += 1;
            }
            let queued = self.batch.len() as u64;
            let (sent, failed) = self.batch.send(fd);
            sent_total += sent as u64;
            failed_total += failed as u64;
            if failed > 0 && queued > 0 {
                bytes_total =
                    bytes_total.saturating_sub(bytes_total * failed as u64 / queued.max(1));
            }
        }
        tr.last_ts = tr.rtp_ts;
        tr.last_ts_ns = frame_ns;
        tr.rtp_ts = tr
            .rtp_ts
            .wrapping_add(if vp8 { 90_000 / params.fps.max(1) } else { 960 });
        if vp8 {
            tr.frame = tr.frame.wrapping_add(1);
        }
        if started {
            tr.sent += sent_total + dropped_counted;
            self.live
                .expected
                .fetch_add((sent_total + dropped_counted) * subs, Ordering::Relaxed);
        }
        self.report.tx_packets += sent_total;
        self.report.tx_bytes += bytes_total;
        self.report.tx_failed += failed_total;
        self.live
            .tx_packets
            .fetch_add(sent_total, Ordering::Relaxed);
        self.live.tx_bytes.fetch_add(bytes_total, Ordering::Relaxed);
        if failed_total > 0 {
            self.live.errors.fetch_add(failed_total, Ordering::Relaxed);
        }
    }

    fn drain(&mut self, i: usize) {
        let Some(fd) = self.eps.get(i).map(|e| e.socket.as_raw_fd()) else {
            return;
        };
        loop {
            let n = self.rxb.recv(fd).unwrap_or_default();
            if n == 0 {
                break;
            }
            let now = now_ns();
            let mut bytes = 0u64;
            for k in 0..n {
                let len = self.rxb.get_mut(k).len();
                bytes += len as u64;
                self.handle(i, k, now);
            }
            self.rxb.clear();
            self.report.rx_packets += n as u64;
            self.report.rx_bytes += bytes;
            self.live.rx_packets.fetch_add(n as u64, Ordering::Relaxed);
            self.live.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if self.eps.get(i).is_some_and(|e| e.nack_due) {
            self.send_nacks(i, now_ns());
        }
    }

    fn handle(&mut self, i: usize, k: usize, now: u64) {
        let Some(ep) = self.eps.get_mut(i) else {
            return;
        };
        let buf = self.rxb.get_mut(k);
        let Some(&first) = buf.first() else { return };
        match first {
            0..=3 => {
                self.report.rx_stun += 1;
                if let (Keepalive::Ice { local_pwd, .. }, Some(from)) =
                    (&ep.keepalive, self.rxb.addr(k))
                {
                    let mut reply = [0u8; 128];
                    if let Some(n) = crate::session::answer_check(
                        self.rxb.get_mut(k),
                        from,
                        local_pwd,
                        &mut reply,
                    ) {
                        let _ = ep.socket.send_to(&reply[..n], from);
                    }
                }
                return;
            }
            20..=63 => {
                self.report.rx_dtls += 1;
                if let Some(s) = &ep.dtls {
                    s.feed(buf.to_vec());
                }
                return;
            }
            128..=191 => {}
            // The raw forwarder's acknowledgements of our keep-alive registrations.
            b'S' if ep.rx.is_none() && buf.starts_with(b"SYOK") => return,
            _ => {
                self.report.corrupt += 1;
                return;
            }
        }
        let Some(&pt) = buf.get(1) else { return };
        if (192..=223).contains(&pt) {
            self.report.rx_rtcp += 1;
            // Publishers always read it (a keyframe request is answered as a browser's encoder
            // does); the rest of RTCP only with loss recovery on.
            if self.fb || !ep.subscriber {
                self.handle_rtcp(i, k, now);
            }
            return;
        }
        // Downlink loss injection: dropped before anything looks at it.
        if ep.subscriber && self.rng.hit(self.p_down) {
            self.report.fb.down_dropped += 1;
            return;
        }
        let plain_len = match ep.rx.as_mut() {
            Some(ctx) => match ctx.unprotect_rtp(buf) {
                Ok(n) => n,
                Err(switchyard_srtp::Error::Replayed { .. }) => {
                    self.report.srtp_replayed += 1;
                    return;
                }
                Err(_) => {
                    self.report.srtp_errors += 1;
                    self.live.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            None => buf.len(),
        };
        let Some(plain) = buf.get(..plain_len) else {
            return;
        };
        let Some(pl) = payload::rtp_payload(plain) else {
            self.report.corrupt += 1;
            return;
        };
        // A retransmission on an RTX stream (RFC 4588) carries the original sequence number first.
        let (h, rtx_osn) = match payload::verify(pl) {
            Ok(h) => (h, None),
            Err(_) => match pl.get(2..).map(payload::verify) {
                Some(Ok(h)) if self.fb => (h, Some(u16::from_be_bytes([pl[0], pl[1]]))),
                _ => {
                    self.report.corrupt += 1;
                    self.live.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        if !ep.subscriber {
            return;
        }
        let rtp_seq = u16::from_be_bytes([plain[2], plain[3]]);
        let rtp_ts = u32::from_be_bytes([plain[4], plain[5], plain[6], plain[7]]);
        let rtp_ssrc = u32::from_be_bytes([plain[8], plain[9], plain[10], plain[11]]);
        let pos = match ep.streams.iter().position(|s| s.stream == h.stream) {
            Some(p) => p,
            None => {
                let rtp = self
                    .fb
                    .then(|| RtpRx::new(rtp_ssrc, clock_hz(h.kind), h.kind == KIND_VIDEO));
                ep.streams.push(StreamRx::new(h.stream, h.kind, rtp));
                ep.streams.len() - 1
            }
        };
        if !ep.ready
            && ep.streams.len() as u32 >= ep.room.streams_per_subscriber.load(Ordering::Relaxed)
        {
            ep.ready = true;
            ep.room.ready.fetch_add(1, Ordering::Relaxed);
        }
        let s = &mut ep.streams[pos];
        if let Some(rx) = s.rtp.as_mut() {
            if rtx_osn.is_none() && rtp_ssrc != rx.ssrc {
                // The server changed the stream's SSRC: a new RTP stream.
                *rx = RtpRx::new(rtp_ssrc, clock_hz(h.kind), h.kind == KIND_VIDEO);
            }
            let ev = rx.on_rtp(rtx_osn.unwrap_or(rtp_seq), rtp_ts, now);
            ep.nack_due |= ev.gap;
            if let Some(sample) = ev.rtt_sample_ms {
                let sample = sample.max(1);
                ep.rtt_ms = if ep.rtt_measured {
                    (ep.rtt_ms * 7 + sample) / 8
                } else {
                    sample
                };
                ep.rtt_measured = true;
            }
        }
        if h.flags & FLAG_WARMUP != 0 {
            self.report.rx_warmup += 1;
            return;
        }
        let arrival = s.arrive(h.seq);
        match arrival {
            Arrival::Duplicate => {
                self.report.duplicates += 1;
                return;
            }
            Arrival::Late => self.report.reordered += 1,
            Arrival::InOrder => {}
        }
        s.unique += 1;
        let ki = kind_index(s.kind);
        let transit = now as i64 - h.send_ns as i64;
        let us = (transit.max(0) as u64 / 1000).clamp(1, 100_000_000);
        let tally = self.report.rooms.entry(ep.room.id).or_default();
        tally.received += 1;
        tally.received_kind[ki] += 1;
        self.live.received.fetch_add(1, Ordering::Relaxed);
        let uplink = h.flags & FLAG_UPLINK_LOST != 0;
        if self.fb && (arrival == Arrival::Late || uplink) {
            // Recovered: kept out of the latency histogram and jitter, which describe packets that
            // arrived the first time.
            if uplink {
                tally.recovered_up[ki] += 1;
            } else {
                tally.recovered_down[ki] += 1;
            }
            let _ = self.report.recovery_latency.record(us);
            return;
        }
        if let Some(prev) = s.last_transit {
            let d = (transit - prev).unsigned_abs() as f64;
            s.jitter_ns += (d - s.jitter_ns) / 16.0;
        }
        s.last_transit = Some(transit);
        let _ = self.report.latency.record(us);
        let _ = self.local_hist.record(us);
    }

    /// SRTCP from the server (loss recovery on): NACKs at publishers are answered from the ring,
    /// sender reports at subscribers are remembered for LSR/DLSR, receiver reports at publishers give
    /// round-trip samples.
    fn handle_rtcp(&mut self, i: usize, k: usize, now: u64) {
        let Some(ep) = self.eps.get_mut(i) else {
            return;
        };
        let (Some(rx), Some(tx)) = (ep.rx.as_mut(), ep.tx.as_mut()) else {
            return;
        };
        let buf = self.rxb.get_mut(k);
        let n = match rx.unprotect_rtcp(buf) {
            Ok(n) => n,
            Err(_) => {
                self.report.fb.rtcp_errors += 1;
                return;
            }
        };
        let Some(plain) = buf.get(..n) else { return };
        let fd = ep.socket.as_raw_fd();
        let now_compact = feedback::compact(feedback::ntp_now());
        for p in rtcp::parse(plain) {
            let p = match p {
                Ok(p) => p,
                Err(_) => {
                    self.report.fb.rtcp_errors += 1;
                    break;
                }
            };
            match p {
                Packet::Pli { media, .. } if !ep.subscriber => {
                    if let Some(t) = video_track(&mut ep.tracks, media) {
                        self.report.fb.keyframe_requests += 1;
                        t.keyframe_due = true;
                    }
                }
                Packet::Fir(fir) if !ep.subscriber => {
                    for (ssrc, seq) in fir.entries() {
                        if let Some(t) = video_track(&mut ep.tracks, ssrc) {
                            if t.fir_seq != Some(seq) {
                                t.fir_seq = Some(seq);
                                self.report.fb.keyframe_requests += 1;
                                t.keyframe_due = true;
                            }
                        }
                    }
                }
                _ if !self.fb => {}
                Packet::Nack(nack) if !ep.subscriber => {
                    self.report.fb.nack_received += 1;
                    let track = ep.tracks.iter().find(|t| t.track.ssrc == nack.media);
                    for seq in nack.lost() {
                        self.report.fb.nack_seqs_received += 1;
                        let Some(pkt) = track.and_then(|t| t.cache.as_ref()?.get(seq)) else {
                            self.report.fb.rtx_missing += 1;
                            continue;
                        };
                        self.report.fb.rtx_sent += 1;
                        if self.rng.hit(self.p_up) {
                            self.report.fb.rtx_dropped += 1;
                            self.report.fb.up_dropped += 1;
                            continue;
                        }
                        if self.txb.len() >= self.txb.capacity() {
                            let (_, failed) = self.txb.send(fd);
                            self.report.tx_failed += failed as u64;
                        }
                        let Some(out) = self.txb.next_buf() else {
                            continue;
                        };
                        let Some(dst) = out.get_mut(..pkt.len()) else {
                            continue;
                        };
                        dst.copy_from_slice(pkt);
                        match tx.protect_rtp(out, pkt.len()) {
                            Ok(len) => {
                                self.txb.commit(len, ep.remote);
                                self.report.tx_packets += 1;
                                self.report.tx_bytes += len as u64;
                            }
                            Err(_) => self.report.tx_failed += 1,
                        }
                    }
                }
                Packet::SenderReport(sr) => {
                    self.report.fb.sr_received += 1;
                    if ep.subscriber {
                        let compact = sr.compact_ntp();
                        for s in ep.streams.iter_mut() {
                            if let Some(r) = s.rtp.as_mut().filter(|r| r.ssrc == sr.ssrc) {
                                r.on_sr(compact, now);
                            }
                        }
                    } else {
                        for b in sr.blocks() {
                            rtt_sample(&mut self.report.fb, &ep.tracks, &b, now_compact);
                        }
                    }
                }
                Packet::ReceiverReport(rr) => {
                    // Reports, not the empty RRs that head NACK compounds.
                    if rr.blocks().next().is_some() {
                        self.report.fb.rr_received += 1;
                    }
                    for b in rr.blocks() {
                        rtt_sample(&mut self.report.fb, &ep.tracks, &b, now_compact);
                    }
                }
                _ => {}
            }
        }
        if !self.txb.is_empty() {
            let (_, failed) = self.txb.send(fd);
            self.report.tx_failed += failed as u64;
        }
    }

    /// Sends a NACK for every stream with sequence numbers due (a compound RR + generic NACK per
    /// stream, as browsers do), and arms the retry timer while packets are missing.
    fn send_nacks(&mut self, i: usize, now: u64) {
        let Some(ep) = self.eps.get_mut(i) else {
            return;
        };
        ep.nack_due = false;
        let Some(tx) = ep.tx.as_mut() else {
            return;
        };
        let fd = ep.socket.as_raw_fd();
        let now_ms = now / 1_000_000;
        let mut outstanding = false;
        for s in ep.streams.iter_mut() {
            let Some(rx) = s.rtp.as_mut() else { continue };
            let n = rx.poll_nacks(now_ms, ep.rtt_ms, &mut self.nack_out);
            outstanding |= rx.outstanding();
            if n == 0 {
                continue;
            }
            if self.txb.len() >= self.txb.capacity() {
                let (_, failed) = self.txb.send(fd);
                self.report.tx_failed += failed as u64;
            }
            let Some(buf) = self.txb.next_buf() else {
                continue;
            };
            let Some(rr) = rtcp::write_rr(buf, ep.rtcp_ssrc, &[]) else {
                continue;
            };
            // NACK_BATCH sequence numbers take at most NACK_BATCH FCI entries: 12 + 4 * 128 bytes.
            let Some((len, used)) = buf
                .get_mut(rr..rr + 12 + 4 * NACK_BATCH)
                .and_then(|b| rtcp::write_nack(b, ep.rtcp_ssrc, rx.ssrc, &self.nack_out[..n]))
            else {
                continue;
            };
            match tx.protect_rtcp(buf, rr + len) {
                Ok(len) => {
                    self.txb.commit(len, ep.remote);
                    self.report.fb.nack_sent += 1;
                    self.report.fb.nack_seqs_sent += used as u64;
                }
                Err(_) => self.report.tx_failed += 1,
            }
        }
        if !self.txb.is_empty() {
            let (_, failed) = self.txb.send(fd);
            self.report.tx_failed += failed as u64;
        }
        if outstanding && !ep.nack_timer {
            ep.nack_timer = true;
            let spacing = ep.rtt_ms.clamp(10, 200) * 1_000_000;
            self.timers
                .push(Reverse((now + spacing, i as u32, EV_NACK)));
        }
    }

    /// Once a second: a publisher's sender report per track, a subscriber's receiver report with a
    /// block per stream; each with an SDES CNAME.
    fn send_report(&mut self, i: usize, now: u64) {
        let Some(ep) = self.eps.get_mut(i) else {
            return;
        };
        let Some(tx) = ep.tx.as_mut() else {
            return;
        };
        let fd = ep.socket.as_raw_fd();
        let Some(buf) = self.txb.next_buf() else {
            return;
        };
        // Room for the SRTCP trailer after at most ~1200 bytes of reports.
        let limit = 1200.min(buf.len());
        let mut at = 0;
        if ep.subscriber {
            let zero = ReportBlock {
                ssrc: 0,
                fraction_lost: 0,
                cumulative_lost: 0,
                highest_seq: 0,
                jitter: 0,
                last_sr: 0,
                delay_since_last_sr: 0,
            };
            let mut blocks = [zero; 31];
            let mut n = 0;
            for s in ep.streams.iter_mut() {
                if n == blocks.len() {
                    break;
                }
                if let Some(b) = s.rtp.as_mut().and_then(|r| r.report_block(now)) {
                    blocks[n] = b;
                    n += 1;
                }
            }
            let Some(len) = buf
                .get_mut(..limit)
                .and_then(|b| rtcp::write_rr(b, ep.rtcp_ssrc, &blocks[..n]))
            else {
                return;
            };
            at += len;
            self.report.fb.rr_sent += 1;
        } else {
            let ntp = feedback::ntp_now();
            for t in &ep.tracks {
                let clock = u64::from(clock_hz(t.track.kind));
                let since = now.saturating_sub(t.last_ts_ns);
                let rtp_ts = t
                    .last_ts
                    .wrapping_add((u128::from(since) * u128::from(clock) / 1_000_000_000) as u32);
                let info = SenderInfo {
                    ssrc: t.track.ssrc,
                    ntp,
                    rtp_ts,
                    packet_count: t.packets,
                    octet_count: t.octets,
                };
                let Some(len) = buf
                    .get_mut(at..limit)
                    .and_then(|b| rtcp::write_sr(b, &info, &[]))
                else {
                    break;
                };
                at += len;
                self.report.fb.sr_sent += 1;
            }
            if at == 0 {
                return;
            }
        }
        if let Some(len) = buf
            .get_mut(at..limit)
            .and_then(|b| feedback::write_sdes_cname(b, ep.rtcp_ssrc, b"switchyard-loadgen"))
        {
            at += len;
        }
        match tx.protect_rtcp(buf, at) {
            Ok(len) => {
                self.txb.commit(len, ep.remote);
                let (_, failed) = self.txb.send(fd);
                self.report.tx_failed += failed as u64;
            }
            Err(_) => self.report.tx_failed += 1,
        }
    }

    fn finish(mut self) -> Report {
        for ep in &self.eps {
            for t in &ep.tracks {
                let tally = self.report.rooms.entry(ep.room.id).or_default();
                *tally.sent.entry(t.track.ssrc).or_default() += t.sent;
                tally.sent_kind[kind_index(t.track.kind)] += t.sent;
                tally.up_lost[kind_index(t.track.kind)] += t.up_lost;
            }
            for s in &ep.streams {
                if s.unique > 1 {
                    self.report.jitter_us.push(s.jitter_ns / 1000.0);
                }
            }
        }
        self.report
    }
}

/// RTP clock rate of a payload kind.
fn clock_hz(kind: u8) -> u32 {
    if kind == KIND_VIDEO {
        90_000
    } else {
        48_000
    }
}

/// A round-trip sample from a report block about one of a publisher's tracks.
fn rtt_sample(c: &mut Counters, tracks: &[TrackTx], b: &ReportBlock, now_compact: u32) {
    if !tracks.iter().any(|t| t.track.ssrc == b.ssrc) {
        return;
    }
    if let Some(ms) = feedback::rtt_from_block(b, now_compact) {
        c.rtt_samples += 1;
        c.rtt_sum_us += (ms * 1000.0) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_megabit_video_at_30_fps_is_four_packets_a_frame() {
        let p = MediaParams {
            video_bitrate: 1_000_000,
            fps: 30,
            packet_size: 1200,
            audio_bitrate: 32_000,
        };
        let (n, size) = p.video_frame();
        assert_eq!(n, 4);
        assert!(size * n >= 4166 && size + RTP_HEADER <= 1200);
        assert_eq!(p.audio_payload(), 80);
        assert!((p.packets_per_second() - 170.0).abs() < 1e-9);
    }

    #[test]
    fn raw_publisher_reaches_raw_subscriber() {
        let control = Arc::new(Control::default());
        let live = Arc::new(Live::default());
        let interval = Arc::new(Mutex::new(new_histogram()));
        let params = MediaParams {
            video_bitrate: 200_000,
            fps: 50,
            packet_size: 600,
            audio_bitrate: 32_000,
        };
        let t = spawn(0, params, Arc::clone(&control), Arc::clone(&live), interval).unwrap();
        wire(&t, 7, None, [11, 12]);
        std::thread::sleep(Duration::from_millis(500));
        control.stop_sending.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        control.exit.store(true, Ordering::Relaxed);
        let r = t.join().unwrap();
        let tally = &r.rooms[&7];
        let sent: u64 = tally.sent.values().sum();
        assert!(sent > 20, "{r:?}");
        assert_eq!(tally.received, sent, "{r:?}");
        assert_eq!((r.corrupt, r.duplicates, r.srtp_errors), (0, 0, 0));
        assert!(r.latency.len() == sent);
    }

    /// Wires a publisher (audio SSRC `ssrcs[0]`, video `ssrcs[1]`) straight to a subscriber on media
    /// thread `t`, in room `id`: plain RTP, or SRTP with the publisher sending under `keys.0` and the
    /// subscriber under `keys.1`; waits until both are ready and starts the room.
    fn wire(t: &MediaThread, id: u32, keys: Option<(u8, u8)>, ssrcs: [u32; 2]) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let room = Arc::new(RoomShared {
            id,
            ..Default::default()
        });
        room.subscribers.store(1, Ordering::Relaxed);
        room.streams_per_subscriber.store(2, Ordering::Relaxed);
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let (pub_key, sub_key) = keys.unzip();
        t.add(Endpoint {
            socket: b,
            remote: aa,
            tx: sub_key.map(ctx),
            rx: pub_key.map(ctx),
            role: Role::Subscriber,
            room: Arc::clone(&room),
            keepalive: Keepalive::None,
            dtls: None,
        });
        let tracks = vec![
            Track {
                ssrc: ssrcs[0],
                pt: 111,
                kind: KIND_AUDIO,
            },
            Track {
                ssrc: ssrcs[1],
                pt: 96,
                kind: KIND_VIDEO,
            },
        ];
        t.add(Endpoint {
            socket: a,
            remote: ba,
            tx: pub_key.map(ctx),
            rx: sub_key.map(ctx),
            role: Role::Publisher(tracks),
            room: Arc::clone(&room),
            keepalive: Keepalive::None,
            dtls: None,
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while room.ready.load(Ordering::Relaxed) < 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        room.started.store(true, Ordering::Relaxed);
    }

    fn ctx(key: u8) -> Context {
        let p = switchyard_srtp::Profile::Aes128CmHmacSha1_80;
        Context::new(p, &vec![key; p.key_len()], &vec![key ^ 0x5a; p.salt_len()]).unwrap()
    }

    /// A publisher and a subscriber wired to each other over SRTP (no server: the subscriber's NACKs
    /// reach the publisher directly) for `ms` of measured media; returns the thread's report and the
    /// room's tally.
    fn loopback(loss: LossOptions, ms: u64) -> (Report, RoomTally) {
        let control = Arc::new(Control::default());
        let live = Arc::new(Live::default());
        let interval = Arc::new(Mutex::new(new_histogram()));
        let params = MediaParams {
            video_bitrate: 1_000_000,
            fps: 30,
            packet_size: 1200,
            audio_bitrate: 32_000,
        };
        let t = spawn_with(
            0,
            params,
            loss,
            true,
            Arc::clone(&control),
            Arc::clone(&live),
            interval,
        )
        .unwrap();
        wire(&t, 3, Some((1, 2)), [21, 22]);
        std::thread::sleep(Duration::from_millis(ms));
        control.stop_sending.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(400));
        control.exit.store(true, Ordering::Relaxed);
        let r = t.join().unwrap();
        let tally = r.rooms.get(&3).cloned().unwrap_or_default();
        (r, tally)
    }

    const V: usize = 1;
    const A: usize = 0;

    #[test]
    fn downlink_loss_is_recovered_by_nacks_and_retransmissions() {
        let loss = LossOptions {
            loss_down_pct: 5.0,
            ..LossOptions::default()
        };
        let (r, t) = loopback(loss, 2500);
        eprintln!("{:?}\n{t:?}", r.fb);
        let missing_v = t.sent_kind[V] - t.received_kind[V];
        let recovered_v = t.recovered_down[V];
        // ~150 video packets/s for 2.5 s at 5%: about 19 lost.
        assert!(recovered_v >= 5, "{t:?}");
        assert!(
            recovered_v * 100 >= (recovered_v + missing_v) * 95,
            "video: {recovered_v} recovered, {missing_v} missing"
        );
        assert_eq!(t.recovered_up, [0, 0], "nothing was dropped on the uplink");
        assert_eq!(t.up_lost, [0, 0]);
        // Audio is not NACKed: its losses stay lost.
        assert_eq!(t.recovered_down[A], 0);
        assert!(t.sent_kind[A] > t.received_kind[A], "{t:?}");
        assert!(r.fb.down_dropped > 0 && r.fb.up_dropped == 0);
        assert!(r.fb.nack_sent > 0 && r.fb.nack_received == r.fb.nack_sent);
        assert!(r.fb.rtx_sent >= recovered_v);
        assert_eq!((r.corrupt, r.srtp_errors, r.fb.rtcp_errors), (0, 0, 0));
        // Reports flowed both ways, and the publisher's SRs reached the subscriber.
        assert!(r.fb.sr_sent >= 1 && r.fb.rr_sent >= 1, "{:?}", r.fb);
        assert!(r.fb.sr_received >= 1 && r.fb.rr_received >= 1, "{:?}", r.fb);
        assert!(
            r.fb.rtt_samples >= 1,
            "the subscriber's RR echoes the SR: {:?}",
            r.fb
        );
        // Recovered packets are kept out of the latency histogram.
        assert_eq!(
            r.latency.len() + r.recovery_latency.len(),
            t.received,
            "every measured packet in exactly one histogram"
        );
        assert_eq!(r.recovery_latency.len(), recovered_v);
    }

    #[test]
    fn uplink_loss_is_recovered_and_told_apart() {
        let loss = LossOptions {
            loss_up_pct: 5.0,
            ..LossOptions::default()
        };
        let (r, t) = loopback(loss, 2500);
        eprintln!("{:?}\n{t:?}", r.fb);
        assert!(t.up_lost[V] >= 5, "{t:?}");
        assert!(
            t.recovered_up[V] * 100 >= t.up_lost[V] * 95,
            "video: {} of {} uplink losses recovered",
            t.recovered_up[V],
            t.up_lost[V]
        );
        assert_eq!(
            t.recovered_down,
            [0, 0],
            "nothing was dropped on the downlink"
        );
        assert_eq!(t.recovered_up[A], 0);
        assert!(r.fb.up_dropped >= t.up_lost[V] + t.up_lost[A]);
        assert_eq!(r.fb.down_dropped, 0);
        // Every measured packet counts as sent, dropped or not.
        assert_eq!(
            t.sent_kind[A] - t.received_kind[A],
            t.up_lost[A],
            "audio: exactly the dropped ones are missing"
        );
    }

    #[test]
    fn without_feedback_injected_loss_stays_lost() {
        let loss = LossOptions {
            loss_down_pct: 5.0,
            loss_up_pct: 5.0,
            feedback: Some(false),
        };
        let (r, t) = loopback(loss, 1500);
        let missing: u64 = (0..2).map(|k| t.sent_kind[k] - t.received_kind[k]).sum();
        assert!(missing > 0 && r.fb.down_dropped > 0 && r.fb.up_dropped > 0);
        assert_eq!(t.recovered_down, [0, 0]);
        assert_eq!(t.recovered_up, [0, 0]);
        assert_eq!(
            (r.fb.nack_sent, r.fb.rtx_sent, r.fb.sr_sent, r.fb.rr_sent),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn late_and_duplicate_arrivals() {
        let mut s = StreamRx::new(1, KIND_VIDEO, None);
        assert!(s.arrive(5) == Arrival::InOrder);
        assert!(s.arrive(8) == Arrival::InOrder);
        assert!(s.arrive(6) == Arrival::Late);
        assert!(s.arrive(6) == Arrival::Duplicate);
        assert!(s.arrive(8) == Arrival::Duplicate);
        assert!(s.arrive(7) == Arrival::Late);
        // A jump larger than the window forgets it; a slot reused by a newer seq is cleared.
        assert!(s.arrive(8 + WINDOW) == Arrival::InOrder);
        assert!(s.arrive(9 + WINDOW) == Arrival::InOrder);
        assert!(
            s.arrive(7 + WINDOW) == Arrival::Late,
            "its slot held 7, cleared"
        );
    }
}
