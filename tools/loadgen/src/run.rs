//! A whole run: media threads, ramp-up at the join rate, room start, progress, summary.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use switchyard_dtls::Identity;
use switchyard_sdp::{ClientTrack, Codec, MediaKind};
use tokio::sync::{watch, Semaphore};

use crate::feedback::LossOptions;
use crate::media::{
    self, Control, Endpoint, Keepalive, Live, MediaParams, MediaThread, Role, RoomShared, Track,
};
use crate::payload::{KIND_AUDIO, KIND_VIDEO};
use crate::procstat::{self, CpuWindow};
use crate::report::{LegLoss, Percentiles, ProcUsage, Progress, Recovery, Summary};

/// Opus payload type.
pub const PT_OPUS: u8 = 111;
/// VP8 payload type.
pub const PT_VP8: u8 = 96;

/// Which server and how to reach it.
#[derive(Debug, Clone)]
pub enum Target {
    /// Switchyard's WebSocket signaling, e.g. `ws://127.0.0.1:8080/ws`.
    Switchyard(String),
    /// Janus's HTTP API, e.g. `http://127.0.0.1:8088/janus`.
    Janus(String),
    /// A raw forwarder (switchyard-baseline): plain RTP to one of these ports (room i uses port
    /// i mod n), subscribers register with a datagram.
    Raw(Vec<SocketAddr>),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Switchyard(_) => "switchyard",
            Target::Janus(_) => "janus",
            Target::Raw(_) => "raw",
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Switchyard(u) | Target::Janus(u) => u.clone(),
            Target::Raw(a) => a
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server.
    pub target: Target,
    /// Rooms.
    pub rooms: u32,
    /// Publishers per room.
    pub publishers: u32,
    /// Subscribers per room.
    pub subscribers: u32,
    /// Participants joining per second.
    pub join_rate: f64,
    /// Most set-ups in flight at once.
    pub max_pending: usize,
    /// Steady-state seconds after every room started.
    pub duration: Duration,
    /// Time after senders stop for the last packets to arrive.
    pub grace: Duration,
    /// How long a room waits for every subscriber to see every stream before it starts anyway.
    pub warmup_timeout: Duration,
    /// Per-participant set-up limit.
    pub setup_timeout: Duration,
    /// What publishers send.
    pub media: MediaParams,
    /// Media threads.
    pub threads: usize,
    /// Address the load generator's sockets bind.
    pub bind: IpAddr,
    /// Print a progress line per second on stderr.
    pub progress: bool,
    /// Room name prefix (a random suffix keeps runs apart).
    pub room_prefix: String,
    /// Processes to report CPU and memory for: (name, pid).
    pub watch: Vec<(String, u32)>,
    /// Receive trains whole (`UDP_GRO`): a server's UDP GSO message reaches the simulated
    /// participant as one unit, as from a NIC that segments in hardware, instead of being cut into
    /// datagrams on the loopback at the server's expense (see docs/load-testing.md).
    pub udp_gro: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            target: Target::Switchyard("ws://127.0.0.1:8080/ws".into()),
            rooms: 1,
            publishers: 1,
            subscribers: 1,
            join_rate: 50.0,
            max_pending: 64,
            duration: Duration::from_secs(10),
            grace: Duration::from_millis(500),
            warmup_timeout: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(20),
            media: MediaParams {
                video_bitrate: 1_000_000,
                fps: 30,
                packet_size: 1200,
                audio_bitrate: 32_000,
            },
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
            bind: IpAddr::from([127, 0, 0, 1]),
            progress: true,
            room_prefix: "lg".into(),
            watch: Vec::new(),
            udp_gro: true,
        }
    }
}

/// What the signaling side shares.
pub struct Shared {
    /// Our DTLS certificate.
    pub identity: Identity,
    /// Socket bind address.
    pub bind: IpAddr,
    /// The media threads.
    pub media: Vec<MediaThread>,
    /// Per-participant limit.
    pub setup_timeout: Duration,
    /// Flips to true at the end of the run.
    pub shutdown: watch::Receiver<bool>,
    /// What publishers send.
    pub params: MediaParams,
}

/// Set-up counters.
#[derive(Default)]
struct Setup {
    publishers: AtomicU64,
    subscribers: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
    times_ms: Mutex<Vec<u64>>,
}

impl Setup {
    fn fail(&self, who: &str, e: &anyhow::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock() {
            if f.len() < 5 {
                f.push(format!("{who}: {e:#}"));
            }
        }
    }
}

/// Paces joins: the k-th acquisition returns at start + k / rate.
struct Pacer {
    next: Mutex<tokio::time::Instant>,
    gap: Duration,
}

impl Pacer {
    async fn wait(&self) {
        let slot = {
            let Ok(mut next) = self.next.lock() else {
                return;
            };
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.gap;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The SSRC of publisher `p`'s track in room `r` (unique in the run; raw subscribers derive them).
pub fn ssrc_for(room: u32, publisher: u32, kind: u8) -> u32 {
    0x1000_0000
        | ((room & 0xf_ffff) << 8)
        | ((publisher & 0x7f) << 1)
        | u32::from(kind == KIND_VIDEO)
}

/// The tracks publisher `p` of room `r` sends.
pub fn tracks_for(params: &MediaParams, room: u32, publisher: u32) -> Vec<Track> {
    let mut v = Vec::new();
    if params.audio_bitrate > 0 {
        v.push(Track {
            ssrc: ssrc_for(room, publisher, KIND_AUDIO),
            pt: PT_OPUS,
            kind: KIND_AUDIO,
        });
    }
    if params.video_bitrate > 0 {
        v.push(Track {
            ssrc: ssrc_for(room, publisher, KIND_VIDEO),
            pt: PT_VP8,
            kind: KIND_VIDEO,
        });
    }
    v
}

/// The SDP description of our tracks, as a browser would offer them.
pub fn client_tracks(tracks: &[Track], name: &str) -> Vec<ClientTrack> {
    tracks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let video = t.kind == KIND_VIDEO;
            ClientTrack {
                mid: i.to_string(),
                kind: if video {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                },
                ssrc: t.ssrc,
                rids: Vec::new(),
                feedback: 0,
                codec: if video {
                    Codec {
                        pt: t.pt,
                        name: "VP8".into(),
                        clock_rate: 90_000,
                        channels: None,
                        fmtp: None,
                        rtcp_fb: vec!["nack".into(), "nack pli".into(), "ccm fir".into()],
                    }
                } else {
                    Codec {
                        pt: t.pt,
                        name: "opus".into(),
                        clock_rate: 48_000,
                        channels: Some(2),
                        fmtp: Some("minptime=10;useinbandfec=1".into()),
                        rtcp_fb: Vec::new(),
                    }
                },
                stream_id: name.to_string(),
                track_id: format!("{name}-{}", if video { "video" } else { "audio" }),
                cname: name.to_string(),
            }
        })
        .collect()
}

/// Runs the load described by `cfg` and returns what it measured.
pub fn run(cfg: &Config) -> anyhow::Result<Summary> {
    run_with(cfg, &LossOptions::default())
}

/// [`run`] with loss injection and recovery as `loss` says.
pub fn run_with(cfg: &Config, loss: &LossOptions) -> anyhow::Result<Summary> {
    raise_fd_limit();
    let control = Arc::new(Control::default());
    let live = Arc::new(Live::default());
    let interval = Arc::new(Mutex::new(media::new_histogram()));
    let mut threads = Vec::new();
    for i in 0..cfg.threads.max(1) {
        threads.push(
            media::spawn_with(
                i,
                cfg.media,
                *loss,
                cfg.udp_gro,
                Arc::clone(&control),
                Arc::clone(&live),
                Arc::clone(&interval),
            )
            .context("starting a media thread")?,
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    crate::janus::set_shutdown(shutdown_rx.clone());
    let identity = Identity::generate().map_err(|e| anyhow::anyhow!("DTLS certificate: {e}"))?;
    let shared = Arc::new(Shared {
        identity,
        bind: cfg.bind,
        media: threads,
        setup_timeout: cfg.setup_timeout,
        shutdown: shutdown_rx,
        params: cfg.media,
    });
    let setup = Arc::new(Setup::default());
    let target = u64::from(cfg.rooms) * u64::from(cfg.publishers + cfg.subscribers);
    let suffix: u32 = rand::random::<u32>() % 1_000_000;

    let t0 = Instant::now();
    let rcvbuf0 = procstat::udp_counter("RcvbufErrors").unwrap_or(0);
    let sndbuf0 = procstat::udp_counter("SndbufErrors").unwrap_or(0);

    // Progress: one line per second, in a thread of its own.
    let progress_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = {
        let live = Arc::clone(&live);
        let setup = Arc::clone(&setup);
        let interval = Arc::clone(&interval);
        let stop = Arc::clone(&progress_stop);
        let print = cfg.progress;
        std::thread::spawn(move || progress_loop(live, setup, interval, stop, print, target, t0))
    };

    let rooms: Vec<Arc<RoomShared>> = (0..cfg.rooms)
        .map(|id| {
            Arc::new(RoomShared {
                id,
                ..Default::default()
            })
        })
        .collect();
    let (steady_start, steady_cpu) = rt.block_on(async {
        let pacer = Arc::new(Pacer {
            next: Mutex::new(tokio::time::Instant::now()),
            gap: Duration::from_secs_f64(1.0 / cfg.join_rate.max(0.01)),
        });
        let pending = Arc::new(Semaphore::new(cfg.max_pending.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for room in &rooms {
            let name = format!("{}-{suffix}-{}", cfg.room_prefix, room.id);
            let job = RoomJob {
                sh: Arc::clone(&shared),
                cfg: cfg.clone(),
                room: Arc::clone(room),
                name,
                pacer: Arc::clone(&pacer),
                pending: Arc::clone(&pending),
                setup: Arc::clone(&setup),
            };
            set.spawn(job.run());
        }
        while set.join_next().await.is_some() {}
        let start = Instant::now();
        let cpu: Vec<CpuWindow> = cfg
            .watch
            .iter()
            .map(|(_, pid)| CpuWindow::start(*pid))
            .chain([CpuWindow::start(std::process::id())])
            .collect();
        (start, cpu)
    });
    let (tx0, rx0, txb0, rxb0) = (
        live.tx_packets.load(Ordering::Relaxed),
        live.rx_packets.load(Ordering::Relaxed),
        live.tx_bytes.load(Ordering::Relaxed),
        live.rx_bytes.load(Ordering::Relaxed),
    );
    std::thread::sleep(cfg.duration);
    let measured = steady_start.elapsed().as_secs_f64();
    let (tx1, rx1, txb1, rxb1) = (
        live.tx_packets.load(Ordering::Relaxed),
        live.rx_packets.load(Ordering::Relaxed),
        live.tx_bytes.load(Ordering::Relaxed),
        live.rx_bytes.load(Ordering::Relaxed),
    );
    let mut processes: Vec<ProcUsage> = Vec::new();
    for (w, (name, pid)) in steady_cpu.iter().zip(
        cfg.watch
            .iter()
            .cloned()
            .chain([("loadgen".to_string(), std::process::id())]),
    ) {
        processes.push(ProcUsage {
            name,
            pid,
            cpu_cores: w.cores().unwrap_or(0.0),
            rss_mib: procstat::rss_mib(pid).unwrap_or(0.0),
        });
    }
    control.stop_sending.store(true, Ordering::Relaxed);
    std::thread::sleep(cfg.grace);
    control.exit.store(true, Ordering::Relaxed);
    let mut report = media::Report::empty();
    for t in &shared.media {
        if let Some(r) = t.join() {
            report.merge(r);
        }
    }
    let _ = shutdown_tx.send(true);
    progress_stop.store(true, Ordering::Relaxed);
    let lines = progress.join().unwrap_or_default();
    // Let WebSockets say goodbye, then drop the runtime (and the DTLS sessions on it).
    let linger = if matches!(cfg.target, Target::Janus(_)) {
        500
    } else {
        150
    };
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(linger)).await });
    rt.shutdown_timeout(Duration::from_secs(1));

    let mut expected = 0u64;
    let mut received = 0u64;
    for room in &rooms {
        let subs = u64::from(room.subscribers.load(Ordering::Relaxed));
        if let Some(t) = report.rooms.get(&room.id) {
            expected += t.sent.values().sum::<u64>() * subs;
            received += t.received;
        }
    }
    let lost = expected.saturating_sub(received);
    let recovery = recovery_summary(loss, &report, &rooms);
    let mut setup_hist = Histogram::<u64>::new(3).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Ok(times) = setup.times_ms.lock() {
        for &t in times.iter() {
            let _ = setup_hist.record(t.max(1) * 1000);
        }
    }
    let jitter = &report.jitter_us;
    let secs = measured.max(1e-9);
    Ok(Summary {
        server: cfg.target.name().into(),
        target: cfg.target.describe(),
        rooms: cfg.rooms,
        publishers_per_room: cfg.publishers,
        subscribers_per_room: cfg.subscribers,
        publishers_connected: setup.publishers.load(Ordering::Relaxed),
        subscribers_connected: setup.subscribers.load(Ordering::Relaxed),
        setup_failures: setup.failed.load(Ordering::Relaxed),
        failure_samples: setup.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        setup_ms: Percentiles::from_us(&setup_hist),
        media: Some(cfg.media),
        ramp_s: steady_start.duration_since(t0).as_secs_f64(),
        measured_s: measured,
        tx_packets: report.tx_packets,
        rx_packets: report.rx_packets,
        tx_pps: (tx1 - tx0) as f64 / secs,
        rx_pps: (rx1 - rx0) as f64 / secs,
        tx_mbps: (txb1 - txb0) as f64 * 8.0 / secs / 1e6,
        rx_mbps: (rxb1 - rxb0) as f64 * 8.0 / secs / 1e6,
        expected,
        received,
        lost,
        loss_pct: if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        },
        duplicates: report.duplicates,
        reordered: report.reordered,
        corrupt: report.corrupt,
        srtp_errors: report.srtp_errors,
        srtp_replayed: report.srtp_replayed,
        tx_failed: report.tx_failed,
        latency_ms: Percentiles::from_us(&report.latency),
        jitter_mean_ms: if jitter.is_empty() {
            0.0
        } else {
            jitter.iter().sum::<f64>() / jitter.len() as f64 / 1000.0
        },
        jitter_max_ms: jitter.iter().cloned().fold(0.0, f64::max) / 1000.0,
        rx_rtcp: report.rx_rtcp,
        rx_stun: report.rx_stun,
        keyframe_requests: report.fb.keyframe_requests,
        keyframes_sent: report.fb.keyframes_sent,
        udp_rcvbuf_errors: procstat::udp_counter("RcvbufErrors")
            .unwrap_or(0)
            .saturating_sub(rcvbuf0),
        udp_sndbuf_errors: procstat::udp_counter("SndbufErrors")
            .unwrap_or(0)
            .saturating_sub(sndbuf0),
        processes,
        recovery,
        progress: lines,
    })
}

/// Lost / recovered per leg and kind from the rooms' tallies (see [`Recovery`]).
fn recovery_summary(
    loss: &LossOptions,
    report: &media::Report,
    rooms: &[Arc<RoomShared>],
) -> Option<Recovery> {
    let feedback = loss.feedback_on();
    if !feedback && loss.loss_down_pct <= 0.0 && loss.loss_up_pct <= 0.0 {
        return None;
    }
    // Per kind: [expected, received, uplink lost, recovered up, recovered down].
    let mut k = [[0u64; 5]; 2];
    for room in rooms {
        let subs = u64::from(room.subscribers.load(Ordering::Relaxed));
        let Some(t) = report.rooms.get(&room.id) else {
            continue;
        };
        for (i, v) in k.iter_mut().enumerate() {
            v[0] += t.sent_kind[i] * subs;
            v[1] += t.received_kind[i];
            v[2] += t.up_lost[i] * subs;
            v[3] += t.recovered_up[i];
            v[4] += t.recovered_down[i];
        }
    }
    let legs = |v: [u64; 5]| {
        let [expected, received, up_lost, rec_up, rec_down] = v;
        let unrecovered = expected.saturating_sub(received);
        let up_unrecovered = up_lost.saturating_sub(rec_up);
        let down_unrecovered = unrecovered.saturating_sub(up_unrecovered);
        (
            LegLoss::new(rec_down + down_unrecovered, rec_down),
            LegLoss::new(up_lost.max(rec_up), rec_up),
        )
    };
    let (down_audio, up_audio) = legs(k[0]);
    let (down_video, up_video) = legs(k[1]);
    let c = report.fb;
    Some(Recovery {
        loss_down_pct: loss.loss_down_pct,
        loss_up_pct: loss.loss_up_pct,
        feedback,
        down_video,
        up_video,
        down_audio,
        up_audio,
        recovery_ms: Percentiles::from_us(&report.recovery_latency),
        publisher_rtt_ms: (c.rtt_samples > 0)
            .then(|| c.rtt_sum_us as f64 / c.rtt_samples as f64 / 1000.0),
        counters: c,
    })
}

fn progress_loop(
    live: Arc<Live>,
    setup: Arc<Setup>,
    interval: Arc<Mutex<Histogram<u64>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    print: bool,
    target: u64,
    t0: Instant,
) -> Vec<Progress> {
    let mut lines = Vec::new();
    let mut prev = [0u64; 6];
    let mut prev_t = t0;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let due = t0 + Duration::from_secs(n);
        while Instant::now() < due {
            if stop.load(Ordering::Relaxed) {
                return lines;
            }
            std::thread::sleep(
                Duration::from_millis(20).min(due.saturating_duration_since(Instant::now())),
            );
        }
        let now = Instant::now();
        let dt = now.duration_since(prev_t).as_secs_f64().max(1e-6);
        prev_t = now;
        let cur = [
            live.tx_packets.load(Ordering::Relaxed),
            live.rx_packets.load(Ordering::Relaxed),
            live.tx_bytes.load(Ordering::Relaxed),
            live.rx_bytes.load(Ordering::Relaxed),
            live.expected.load(Ordering::Relaxed),
            live.received.load(Ordering::Relaxed),
        ];
        let d: Vec<u64> = cur
            .iter()
            .zip(prev.iter())
            .map(|(c, p)| c.saturating_sub(*p))
            .collect();
        prev = cur;
        let (p50, p99) = match interval.lock() {
            Ok(mut h) => {
                let r = if h.is_empty() {
                    (0.0, 0.0)
                } else {
                    (
                        h.value_at_quantile(0.5) as f64 / 1000.0,
                        h.value_at_quantile(0.99) as f64 / 1000.0,
                    )
                };
                h.reset();
                r
            }
            Err(_) => (0.0, 0.0),
        };
        let p = Progress {
            t: n,
            connected: setup.publishers.load(Ordering::Relaxed)
                + setup.subscribers.load(Ordering::Relaxed),
            failed: setup.failed.load(Ordering::Relaxed),
            tx_pps: d[0] as f64 / dt,
            rx_pps: d[1] as f64 / dt,
            tx_mbps: d[2] as f64 * 8.0 / dt / 1e6,
            rx_mbps: d[3] as f64 * 8.0 / dt / 1e6,
            loss_pct: if d[4] > 0 {
                (d[4].saturating_sub(d[5])) as f64 * 100.0 / d[4] as f64
            } else {
                0.0
            },
            p50_ms: p50,
            p99_ms: p99,
            errors: live.errors.load(Ordering::Relaxed),
        };
        if print {
            eprintln!("{}", p.line(target));
        }
        lines.push(p);
    }
    lines
}

struct RoomJob {
    sh: Arc<Shared>,
    cfg: Config,
    room: Arc<RoomShared>,
    name: String,
    pacer: Arc<Pacer>,
    pending: Arc<Semaphore>,
    setup: Arc<Setup>,
}

impl RoomJob {
    async fn run(self) {
        let tracks_per_pub = tracks_for(&self.cfg.media, 0, 0).len() as u32;
        self.room
            .streams_per_subscriber
            .store(self.cfg.publishers * tracks_per_pub, Ordering::Relaxed);
        let thread_of =
            |k: u32| ((self.room.id as usize) * 7 + k as usize) % self.sh.media.len().max(1);
        let mut janus_room = None;
        if let Target::Janus(url) = &self.cfg.target {
            match crate::janus::Room::create(url, self.room.id, &self.cfg).await {
                Ok(r) => janus_room = Some(Arc::new(r)),
                Err(e) => {
                    for _ in 0..self.cfg.publishers + self.cfg.subscribers {
                        self.setup.fail(&self.name, &e);
                    }
                    return;
                }
            }
        }
        // Publishers first, so subscribers are offered their tracks at once.
        let mut pubs_ok = 0;
        let mut feeds = Vec::new();
        for p in 0..self.cfg.publishers {
            let tracks = tracks_for(&self.cfg.media, self.room.id, p);
            let who = format!("{}-pub{p}", self.name);
            let r = self
                .participant(
                    || async {
                        match &self.cfg.target {
                            Target::Switchyard(url) => crate::switchyard::publisher(
                                Arc::clone(&self.sh),
                                url.clone(),
                                self.name.clone(),
                                who.clone(),
                                tracks.clone(),
                                Arc::clone(&self.room),
                                thread_of(p),
                            )
                            .await
                            .map(|_| None),
                            Target::Raw(addrs) => raw_publisher(
                                &self.sh,
                                addrs,
                                tracks.clone(),
                                Arc::clone(&self.room),
                                thread_of(p),
                            )
                            .await
                            .map(|_| None),
                            Target::Janus(_) => match &janus_room {
                                Some(j) => j
                                    .publisher(
                                        Arc::clone(&self.sh),
                                        who.clone(),
                                        tracks.clone(),
                                        Arc::clone(&self.room),
                                        thread_of(p),
                                    )
                                    .await
                                    .map(Some),
                                None => Err(anyhow::anyhow!("no Janus room")),
                            },
                        }
                    },
                    &who,
                )
                .await;
            if let Some(feed) = r {
                pubs_ok += 1;
                self.setup.publishers.fetch_add(1, Ordering::Relaxed);
                if let Some(f) = feed {
                    feeds.push(f);
                }
            }
        }
        self.room
            .streams_per_subscriber
            .store(pubs_ok * tracks_per_pub, Ordering::Relaxed);
        let mut subs = tokio::task::JoinSet::new();
        for s in 0..self.cfg.subscribers {
            let job = SubJob {
                sh: Arc::clone(&self.sh),
                target: self.cfg.target.clone(),
                room: Arc::clone(&self.room),
                name: self.name.clone(),
                who: format!("{}-sub{s}", self.name),
                thread: thread_of(self.cfg.publishers + s),
                pacer: Arc::clone(&self.pacer),
                pending: Arc::clone(&self.pending),
                setup: Arc::clone(&self.setup),
                tracks: (0..self.cfg.publishers)
                    .flat_map(|p| tracks_for(&self.cfg.media, self.room.id, p))
                    .collect(),
                janus: janus_room.clone(),
                feeds: feeds.clone(),
            };
            subs.spawn(job.run());
            // Let the pacer spread the spawns: a room's subscribers join one by one.
            tokio::task::yield_now().await;
        }
        let mut connected = 0;
        while let Some(r) = subs.join_next().await {
            if matches!(r, Ok(true)) {
                connected += 1;
            }
        }
        self.room.subscribers.store(connected, Ordering::Relaxed);
        // Warm-up: wait until every subscriber has seen every stream, then count from here on.
        let deadline = tokio::time::Instant::now() + self.cfg.warmup_timeout;
        while self.room.ready.load(Ordering::Relaxed) < connected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.room.started.store(true, Ordering::Relaxed);
    }

    async fn participant<F, Fut, T>(&self, f: F, who: &str) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        self.pacer.wait().await;
        let _permit = self.pending.acquire().await.ok()?;
        let start = Instant::now();
        match f().await {
            Ok(v) => {
                if let Ok(mut t) = self.setup.times_ms.lock() {
                    t.push(start.elapsed().as_millis() as u64);
                }
                Some(v)
            }
            Err(e) => {
                self.setup.fail(who, &e);
                None
            }
        }
    }
}

struct SubJob {
    sh: Arc<Shared>,
    target: Target,
    room: Arc<RoomShared>,
    name: String,
    who: String,
    thread: usize,
    pacer: Arc<Pacer>,
    pending: Arc<Semaphore>,
    setup: Arc<Setup>,
    tracks: Vec<Track>,
    janus: Option<Arc<crate::janus::Room>>,
    feeds: Vec<u64>,
}

impl SubJob {
    async fn run(self) -> bool {
        self.pacer.wait().await;
        let Ok(_permit) = self.pending.acquire().await else {
            return false;
        };
        let start = Instant::now();
        let r = match &self.target {
            Target::Switchyard(url) => {
                crate::switchyard::subscriber(
                    Arc::clone(&self.sh),
                    url.clone(),
                    self.name.clone(),
                    self.who.clone(),
                    Arc::clone(&self.room),
                    self.thread,
                )
                .await
            }
            Target::Raw(addrs) => {
                raw_subscriber(
                    &self.sh,
                    addrs,
                    &self.tracks,
                    Arc::clone(&self.room),
                    self.thread,
                )
                .await
            }
            Target::Janus(_) => match &self.janus {
                Some(j) => {
                    j.subscriber(
                        Arc::clone(&self.sh),
                        self.who.clone(),
                        &self.feeds,
                        Arc::clone(&self.room),
                        self.thread,
                    )
                    .await
                }
                None => Err(anyhow::anyhow!("no Janus room")),
            },
        };
        match r {
            Ok(()) => {
                self.setup.subscribers.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut t) = self.setup.times_ms.lock() {
                    t.push(start.elapsed().as_millis() as u64);
                }
                true
            }
            Err(e) => {
                self.setup.fail(&self.who, &e);
                false
            }
        }
    }
}

fn raw_addr(addrs: &[SocketAddr], room: u32) -> anyhow::Result<SocketAddr> {
    addrs
        .get(room as usize % addrs.len().max(1))
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no raw forwarder address"))
}

async fn raw_publisher(
    sh: &Shared,
    addrs: &[SocketAddr],
    tracks: Vec<Track>,
    room: Arc<RoomShared>,
    thread: usize,
) -> anyhow::Result<()> {
    let remote = raw_addr(addrs, room.id)?;
    let socket = crate::session::bind_socket(sh.bind)?;
    let ep = Endpoint {
        socket,
        remote,
        tx: None,
        rx: None,
        role: Role::Publisher(tracks),
        room,
        keepalive: Keepalive::None,
        dtls: None,
    };
    anyhow::ensure!(sh.media[thread].add(ep), "media thread {thread} is gone");
    Ok(())
}

/// The raw forwarder's registration: `SYSUB` then the SSRCs (big-endian) to receive.
pub fn raw_registration(tracks: &[Track]) -> Vec<u8> {
    let mut reg = b"SYSUB".to_vec();
    for t in tracks {
        reg.extend_from_slice(&t.ssrc.to_be_bytes());
    }
    reg
}

async fn raw_subscriber(
    sh: &Shared,
    addrs: &[SocketAddr],
    tracks: &[Track],
    room: Arc<RoomShared>,
    thread: usize,
) -> anyhow::Result<()> {
    let remote = raw_addr(addrs, room.id)?;
    let socket = crate::session::bind_socket(sh.bind)?;
    let reg = raw_registration(tracks);
    let sock = tokio::net::UdpSocket::from_std(socket.try_clone()?)?;
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + sh.setup_timeout;
    'outer: loop {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "raw forwarder {remote} did not acknowledge the registration"
        );
        sock.send_to(&reg, remote).await?;
        let retry = tokio::time::Instant::now() + Duration::from_millis(200);
        loop {
            match tokio::time::timeout_at(retry, sock.recv_from(&mut buf)).await {
                Err(_) => continue 'outer,
                Ok(Ok((n, from))) if from == remote && buf[..n].starts_with(b"SYOK") => {
                    break 'outer
                }
                Ok(_) => {}
            }
        }
    }
    drop(sock);
    let ep = Endpoint {
        socket,
        remote,
        tx: None,
        rx: None,
        role: Role::Subscriber,
        room,
        keepalive: Keepalive::Datagram(reg),
        dtls: None,
    };
    anyhow::ensure!(sh.media[thread].add(ep), "media thread {thread} is gone");
    Ok(())
}

/// Thousands of participants need thousands of sockets (two descriptors each while DTLS runs):
/// raise the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::RoomTally;

    #[test]
    fn lost_packets_are_split_between_the_legs() {
        let room = Arc::new(RoomShared {
            id: 4,
            ..Default::default()
        });
        room.subscribers.store(2, Ordering::Relaxed);
        let mut report = media::Report::empty();
        report.rooms.insert(
            4,
            RoomTally {
                // Video: 1000 sent to each of 2 subscribers, 10 dropped on the uplink (20 gaps), 8 of
                // those recovered; 30 other packets arrived late (downlink recoveries); 5 never came.
                sent_kind: [100, 1000],
                received_kind: [190, 2000 - 12 - 5],
                up_lost: [5, 10],
                recovered_up: [0, 8],
                recovered_down: [0, 30],
                ..Default::default()
            },
        );
        let loss = LossOptions {
            loss_down_pct: 5.0,
            loss_up_pct: 5.0,
            feedback: None,
        };
        let r = recovery_summary(&loss, &report, &[room]).expect("loss was injected");
        assert!(r.feedback);
        assert_eq!((r.up_video.lost, r.up_video.recovered), (20, 8));
        assert_eq!(r.up_video.unrecovered, 12);
        assert_eq!(
            (
                r.down_video.lost,
                r.down_video.recovered,
                r.down_video.unrecovered
            ),
            (35, 30, 5)
        );
        assert!((r.down_video.recovered_pct - 30.0 * 100.0 / 35.0).abs() < 1e-9);
        // Audio: 10 uplink gaps, 200 - 190 = 10 missing in all, so no downlink loss.
        assert_eq!((r.up_audio.lost, r.up_audio.unrecovered), (10, 10));
        assert_eq!(r.down_audio.lost, 0);
        assert_eq!(r.down_audio.recovered_pct, 100.0);
        assert!(recovery_summary(&LossOptions::default(), &report, &[]).is_none());
    }
}
