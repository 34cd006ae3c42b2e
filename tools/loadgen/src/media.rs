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
use switchyard_srtp::Context;
use switchyard_stun::BindingRequest;

use crate::clock::now_ns;
use crate::mmsg::Batch;
use crate::payload::{self, Header, FLAG_FRAME_START, FLAG_WARMUP, KIND_AUDIO, KIND_VIDEO};

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

/// Per-stream receive state.
struct StreamRx {
    stream: u32,
    /// Measured packets received, duplicates excluded.
    unique: u64,
    highest: Option<u64>,
    /// Bit i: `highest - i` received.
    window: u128,
    jitter_ns: f64,
    last_transit: Option<i64>,
}

struct TrackTx {
    track: Track,
    rtp_seq: u16,
    rtp_ts: u32,
    seq: u64,
    frame: u32,
    /// Measured packets sent.
    sent: u64,
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
    /// SRTP unprotect failures.
    pub srtp_errors: u64,
    /// Payloads that were not ours or failed the byte check.
    pub corrupt: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Arrived after a later packet of the same stream.
    pub reordered: u64,
    /// One-way latency in microseconds.
    pub latency: Histogram<u64>,
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
            corrupt: 0,
            duplicates: 0,
            reordered: 0,
            latency: new_histogram(),
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
        self.corrupt += o.corrupt;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        let _ = self.latency.add(&o.latency);
        self.jitter_us.extend(o.jitter_us);
        for (id, t) in o.rooms {
            let mine = self.rooms.entry(id).or_default();
            mine.received += t.received;
            for (s, n) in t.sent {
                *mine.sent.entry(s).or_default() += n;
            }
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

/// Starts media thread `index`.
pub fn spawn(
    index: usize,
    params: MediaParams,
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
                batch: Batch::new(64),
                report: Report::new(),
                local_hist: new_histogram(),
                rng: 0x2545_F491_4F6C_DD1D ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
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
    /// (due ns, endpoint, event): event < 254 is a track index, 255 a keep-alive.
    timers: BinaryHeap<Reverse<(u64, u32, u8)>>,
    batch: Batch,
    report: Report,
    local_hist: Histogram<u64>,
    rng: u64,
}

const EV_KEEPALIVE: u8 = 255;

impl Worker {
    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
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
        let (tracks, subscriber) = match ep.role {
            Role::Publisher(tracks) => {
                let tracks: Vec<TrackTx> = tracks
                    .into_iter()
                    .map(|track| TrackTx {
                        track,
                        rtp_seq: (self.rand() & 0x7fff) as u16,
                        rtp_ts: self.rand() as u32,
                        seq: 0,
                        frame: 0,
                        sent: 0,
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
        });
        self.drain(idx);
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
            if stop {
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
            self.send_track(ep, usize::from(ev));
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

    fn send_track(&mut self, i: usize, t: usize) {
        let params = self.params;
        let Some(ep) = self.eps.get_mut(i) else {
            return;
        };
        let started = ep.room.started.load(Ordering::Relaxed);
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
        let mut k = 0;
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
        tr.rtp_ts = tr
            .rtp_ts
            .wrapping_add(if vp8 { 90_000 / params.fps.max(1) } else { 960 });
        if vp8 {
            tr.frame = tr.frame.wrapping_add(1);
        }
        if started {
            tr.sent += sent_total;
            self.live
                .expected
                .fetch_add(sent_total * subs, Ordering::Relaxed);
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
            let n = self.batch.recv(fd).unwrap_or_default();
            if n == 0 {
                break;
            }
            let now = now_ns();
            let mut bytes = 0u64;
            for k in 0..n {
                let len = self.batch.get_mut(k).len();
                bytes += len as u64;
                self.handle(i, k, now);
            }
            self.batch.clear();
            self.report.rx_packets += n as u64;
            self.report.rx_bytes += bytes;
            self.live.rx_packets.fetch_add(n as u64, Ordering::Relaxed);
            self.live.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn handle(&mut self, i: usize, k: usize, now: u64) {
        let Some(ep) = self.eps.get_mut(i) else {
            return;
        };
        let buf = self.batch.get_mut(k);
        let Some(&first) = buf.first() else { return };
        match first {
            0..=3 => {
                self.report.rx_stun += 1;
                if let (Keepalive::Ice { local_pwd, .. }, Some(from)) =
                    (&ep.keepalive, self.batch.addr(k))
                {
                    let mut reply = [0u8; 128];
                    if let Some(n) = crate::session::answer_check(
                        self.batch.get_mut(k),
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
            return;
        }
        let plain_len = match ep.rx.as_mut() {
            Some(ctx) => match ctx.unprotect_rtp(buf) {
                Ok(n) => n,
                Err(_) => {
                    self.report.srtp_errors += 1;
                    self.live.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            None => buf.len(),
        };
        let Some(pl) = buf.get(..plain_len).and_then(payload::rtp_payload) else {
            self.report.corrupt += 1;
            return;
        };
        let h = match payload::verify(pl) {
            Ok(h) => h,
            Err(_) => {
                self.report.corrupt += 1;
                self.live.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if !ep.subscriber {
            return;
        }
        let pos = match ep.streams.iter().position(|s| s.stream == h.stream) {
            Some(p) => p,
            None => {
                ep.streams.push(StreamRx {
                    stream: h.stream,
                    unique: 0,
                    highest: None,
                    window: 0,
                    jitter_ns: 0.0,
                    last_transit: None,
                });
                ep.streams.len() - 1
            }
        };
        if !ep.ready
            && ep.streams.len() as u32 >= ep.room.streams_per_subscriber.load(Ordering::Relaxed)
        {
            ep.ready = true;
            ep.room.ready.fetch_add(1, Ordering::Relaxed);
        }
        if h.flags & FLAG_WARMUP != 0 {
            self.report.rx_warmup += 1;
            return;
        }
        let s = &mut ep.streams[pos];
        // Duplicate / reorder detection over a 128-packet window.
        match s.highest {
            None => {
                s.highest = Some(h.seq);
                s.window = 1;
            }
            Some(hi) if h.seq > hi => {
                let shift = h.seq - hi;
                s.window = if shift >= 128 {
                    1
                } else {
                    (s.window << shift) | 1
                };
                s.highest = Some(h.seq);
            }
            Some(hi) => {
                let back = hi - h.seq;
                if back < 128 {
                    let bit = 1u128 << back;
                    if s.window & bit != 0 {
                        self.report.duplicates += 1;
                        return;
                    }
                    s.window |= bit;
                }
                self.report.reordered += 1;
            }
        }
        s.unique += 1;
        let transit = now as i64 - h.send_ns as i64;
        if let Some(prev) = s.last_transit {
            let d = (transit - prev).unsigned_abs() as f64;
            s.jitter_ns += (d - s.jitter_ns) / 16.0;
        }
        s.last_transit = Some(transit);
        let us = (transit.max(0) as u64 / 1000).max(1);
        let _ = self.report.latency.record(us.min(100_000_000));
        let _ = self.local_hist.record(us.min(100_000_000));
        self.live.received.fetch_add(1, Ordering::Relaxed);
        self.report.rooms.entry(ep.room.id).or_default().received += 1;
    }

    fn finish(mut self) -> Report {
        for ep in &self.eps {
            for t in &ep.tracks {
                *self
                    .report
                    .rooms
                    .entry(ep.room.id)
                    .or_default()
                    .sent
                    .entry(t.track.ssrc)
                    .or_default() += t.sent;
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
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let room = Arc::new(RoomShared {
            id: 7,
            ..Default::default()
        });
        room.subscribers.store(1, Ordering::Relaxed);
        room.streams_per_subscriber.store(2, Ordering::Relaxed);
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        t.add(Endpoint {
            socket: b,
            remote: aa,
            tx: None,
            rx: None,
            role: Role::Subscriber,
            room: Arc::clone(&room),
            keepalive: Keepalive::None,
            dtls: None,
        });
        let tracks = vec![
            Track {
                ssrc: 11,
                pt: 111,
                kind: KIND_AUDIO,
            },
            Track {
                ssrc: 12,
                pt: 96,
                kind: KIND_VIDEO,
            },
        ];
        t.add(Endpoint {
            socket: a,
            remote: ba,
            tx: None,
            rx: None,
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
}
