//! The run's results: one progress line per second while it runs, a summary table and JSON at the end.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::feedback::Counters;
use crate::media::MediaParams;

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn from_us(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Seconds since the start.
    pub t: u64,
    /// Participants connected.
    pub connected: u64,
    /// Setups that failed.
    pub failed: u64,
    /// Packets sent per second.
    pub tx_pps: f64,
    /// Packets received per second.
    pub rx_pps: f64,
    /// Megabits per second sent.
    pub tx_mbps: f64,
    /// Megabits per second received.
    pub rx_mbps: f64,
    /// Measured packets not (yet) received in this second, percent of those expected.
    pub loss_pct: f64,
    /// Latency p50 this second, ms.
    pub p50_ms: f64,
    /// Latency p99 this second, ms.
    pub p99_ms: f64,
    /// Errors so far (SRTP, payload check, send).
    pub errors: u64,
}

impl Progress {
    /// The terminal line.
    pub fn line(&self, target: u64) -> String {
        format!(
            "[{:>4}s] conn {}/{}{} | tx {:>9.0} pps {:>8.1} Mbit/s | rx {:>9.0} pps {:>8.1} Mbit/s | loss {:>6.2}% | p50 {:>6.2} ms p99 {:>7.2} ms | err {}",
            self.t,
            self.connected,
            target,
            if self.failed > 0 { format!(" (failed {})", self.failed) } else { String::new() },
            self.tx_pps,
            self.tx_mbps,
            self.rx_pps,
            self.rx_mbps,
            self.loss_pct,
            self.p50_ms,
            self.p99_ms,
            self.errors
        )
    }
}

/// CPU and memory of one process over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ProcUsage {
    /// What it is.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Average cores busy over the measured window.
    pub cpu_cores: f64,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
}

/// Lost and recovered packets of one leg and kind, counted at subscribers (a packet every subscriber
/// of a room misses counts once per subscriber).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LegLoss {
    /// Measured packets that did not arrive the first time: dropped by injection, or never arrived.
    pub lost: u64,
    /// Of those, arrived later (retransmitted).
    pub recovered: u64,
    /// Of those, still missing at the end of the run.
    pub unrecovered: u64,
    /// recovered / lost, percent (100 when nothing was lost).
    pub recovered_pct: f64,
}

impl LegLoss {
    /// From the lost and recovered counts.
    pub fn new(lost: u64, recovered: u64) -> LegLoss {
        LegLoss {
            lost,
            recovered,
            unrecovered: lost.saturating_sub(recovered),
            recovered_pct: if lost == 0 {
                100.0
            } else {
                recovered as f64 * 100.0 / lost as f64
            },
        }
    }
}

/// Loss injection and recovery over the run. A measured packet a publisher dropped on its uplink is
/// *uplink* loss at each of its room's subscribers (recovered when the server NACKed the publisher and
/// forwarded the retransmission); any other measured packet a subscriber did not get the first time is
/// *downlink* loss (recovered when the subscriber's NACK was answered). A packet lost on both counts as
/// uplink loss. Subscribers NACK video only: audio has no NACK negotiated (as with browsers).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovery {
    /// `--loss-down`, percent.
    pub loss_down_pct: f64,
    /// `--loss-up`, percent.
    pub loss_up_pct: f64,
    /// NACKs, retransmissions and reports were on.
    pub feedback: bool,
    /// Downlink loss of video.
    pub down_video: LegLoss,
    /// Uplink loss of video.
    pub up_video: LegLoss,
    /// Downlink loss of audio (no NACK: not expected to be recovered).
    pub down_audio: LegLoss,
    /// Uplink loss of audio.
    pub up_audio: LegLoss,
    /// Time from a recovered packet's original send to its arrival, ms.
    pub recovery_ms: Percentiles,
    /// Mean round trip publishers measured from the server's receiver reports (LSR/DLSR), ms.
    pub publisher_rtt_ms: Option<f64>,
    /// Injection, NACK, retransmission and report counters.
    pub counters: Counters,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// `switchyard`, `janus` or `raw`.
    pub server: String,
    /// Where it was sent.
    pub target: String,
    /// Rooms.
    pub rooms: u32,
    /// Publishers per room.
    pub publishers_per_room: u32,
    /// Subscribers per room.
    pub subscribers_per_room: u32,
    /// Publishers whose media connected.
    pub publishers_connected: u64,
    /// Subscribers whose media connected.
    pub subscribers_connected: u64,
    /// Participants that failed to connect.
    pub setup_failures: u64,
    /// The first few failure messages.
    pub failure_samples: Vec<String>,
    /// Time from a participant's first message to its media connecting, ms.
    pub setup_ms: Percentiles,
    /// What publishers sent.
    pub media: Option<MediaParams>,
    /// Seconds from the first join until every room started.
    pub ramp_s: f64,
    /// Seconds of steady state measured (every room started, until senders stopped).
    pub measured_s: f64,
    /// RTP packets sent over the whole run.
    pub tx_packets: u64,
    /// Datagrams received over the whole run.
    pub rx_packets: u64,
    /// Packets sent per second in steady state.
    pub tx_pps: f64,
    /// Packets received per second in steady state (what the server forwarded to us).
    pub rx_pps: f64,
    /// Megabits per second sent in steady state.
    pub tx_mbps: f64,
    /// Megabits per second received in steady state.
    pub rx_mbps: f64,
    /// Measured packets subscribers should have received.
    pub expected: u64,
    /// Measured packets received (unique, payload verified).
    pub received: u64,
    /// expected - received.
    pub lost: u64,
    /// Loss in percent.
    pub loss_pct: f64,
    /// Duplicates received.
    pub duplicates: u64,
    /// Packets that arrived after a later one of their stream.
    pub reordered: u64,
    /// Payloads that failed the byte-for-byte check.
    pub corrupt: u64,
    /// SRTP packets that failed to authenticate or decrypt (replays excluded).
    pub srtp_errors: u64,
    /// SRTP packets refused as replays: packets that arrived twice (a retransmission of a packet that
    /// had arrived).
    pub srtp_replayed: u64,
    /// Datagrams the load generator's kernel refused to send.
    pub tx_failed: u64,
    /// One-way latency (send to receive, same clock), ms. With loss recovery on, only packets that
    /// arrived the first time and in order (recovered ones are in `recovery.recovery_ms`).
    pub latency_ms: Percentiles,
    /// RFC 3550 interarrival jitter: mean over streams, ms.
    pub jitter_mean_ms: f64,
    /// Largest stream jitter, ms.
    pub jitter_max_ms: f64,
    /// RTCP / STUN / DTLS datagrams received after set-up.
    pub rx_rtcp: u64,
    /// STUN responses received after set-up.
    pub rx_stun: u64,
    /// Keyframe requests (PLI, new FIR) publishers received from the server, whole run.
    pub keyframe_requests: u64,
    /// Keyframes publishers sent (each video track's first frame included), whole run.
    pub keyframes_sent: u64,
    /// The kernel's UDP receive-buffer drops during the run (whole machine).
    pub udp_rcvbuf_errors: u64,
    /// The kernel's UDP send-buffer drops during the run (whole machine).
    pub udp_sndbuf_errors: u64,
    /// The load generator itself and any `--watch-pid` process.
    pub processes: Vec<ProcUsage>,
    /// Loss injection and recovery (present when loss is injected or feedback is on).
    pub recovery: Option<Recovery>,
    /// One entry per second.
    pub progress: Vec<Progress>,
}

impl Summary {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== switchyard-loadgen summary: {} at {} ==",
            self.server, self.target
        );
        let row = |s: &mut String, k: &str, v: String| {
            let _ = writeln!(s, "  {k:<28} {v}");
        };
        row(
            &mut s,
            "rooms x (pubs + subs)",
            format!(
                "{} x ({} + {})",
                self.rooms, self.publishers_per_room, self.subscribers_per_room
            ),
        );
        row(
            &mut s,
            "connected",
            format!(
                "{} publishers, {} subscribers, {} failed",
                self.publishers_connected, self.subscribers_connected, self.setup_failures
            ),
        );
        for f in &self.failure_samples {
            row(&mut s, "  failure", f.clone());
        }
        row(
            &mut s,
            "setup time (ms)",
            format!(
                "p50 {:.0}  p99 {:.0}  max {:.0}",
                self.setup_ms.p50, self.setup_ms.p99, self.setup_ms.max
            ),
        );
        if let Some(m) = &self.media {
            row(
                &mut s,
                "per publisher",
                format!(
                    "video {} kbit/s @ {} fps, audio {} kbit/s, packets <= {} B ({:.0} pkt/s)",
                    m.video_bitrate / 1000,
                    m.fps,
                    m.audio_bitrate / 1000,
                    m.packet_size,
                    m.packets_per_second()
                ),
            );
        }
        row(
            &mut s,
            "ramp / measured",
            format!("{:.1} s / {:.1} s", self.ramp_s, self.measured_s),
        );
        row(
            &mut s,
            "sent",
            format!("{:.0} pkt/s, {:.1} Mbit/s", self.tx_pps, self.tx_mbps),
        );
        row(
            &mut s,
            "received",
            format!("{:.0} pkt/s, {:.1} Mbit/s", self.rx_pps, self.rx_mbps),
        );
        row(
            &mut s,
            "expected / received",
            format!("{} / {}", self.expected, self.received),
        );
        row(
            &mut s,
            "loss",
            format!("{} ({:.3}%)", self.lost, self.loss_pct),
        );
        row(
            &mut s,
            "dup / reordered / corrupt",
            format!(
                "{} / {} / {}",
                self.duplicates, self.reordered, self.corrupt
            ),
        );
        row(
            &mut s,
            "srtp errors / send failures",
            format!("{} / {}", self.srtp_errors, self.tx_failed),
        );
        if self.srtp_replayed > 0 {
            row(&mut s, "srtp replays", self.srtp_replayed.to_string());
        }
        row(
            &mut s,
            "keyframe requests / keyframes",
            format!("{} / {}", self.keyframe_requests, self.keyframes_sent),
        );
        let l = &self.latency_ms;
        row(
            &mut s,
            "latency (ms)",
            format!(
                "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p90, l.p99, l.p999, l.max
            ),
        );
        row(
            &mut s,
            "jitter (ms)",
            format!(
                "mean {:.3}  max {:.3}",
                self.jitter_mean_ms, self.jitter_max_ms
            ),
        );
        row(
            &mut s,
            "kernel UDP drops",
            format!(
                "rcvbuf {}  sndbuf {}",
                self.udp_rcvbuf_errors, self.udp_sndbuf_errors
            ),
        );
        for p in &self.processes {
            row(
                &mut s,
                &format!("cpu/rss {} ({})", p.name, p.pid),
                format!("{:.2} cores, {:.1} MiB", p.cpu_cores, p.rss_mib),
            );
        }
        if let Some(r) = &self.recovery {
            r.rows(&mut s, row);
        }
        s
    }
}

impl Recovery {
    fn rows(&self, s: &mut String, row: impl Fn(&mut String, &str, String)) {
        let c = &self.counters;
        row(
            s,
            "loss injected",
            format!(
                "downlink {:.1}% ({} dropped), uplink {:.1}% ({} dropped); NACK {}",
                self.loss_down_pct,
                c.down_dropped,
                self.loss_up_pct,
                c.up_dropped,
                if self.feedback { "on" } else { "off" }
            ),
        );
        let leg = |l: &LegLoss| {
            format!(
                "lost {}, recovered {} ({:.1}%), unrecovered {}",
                l.lost, l.recovered, l.recovered_pct, l.unrecovered
            )
        };
        row(s, "downlink video", leg(&self.down_video));
        row(s, "uplink video", leg(&self.up_video));
        row(s, "downlink audio (no NACK)", leg(&self.down_audio));
        row(s, "uplink audio (no NACK)", leg(&self.up_audio));
        let r = &self.recovery_ms;
        row(
            s,
            "recovered after (ms)",
            format!("p50 {:.2}  p99 {:.2}  max {:.2}", r.p50, r.p99, r.max),
        );
        row(
            s,
            "NACKs",
            format!(
                "subscribers sent {} ({} seqs); publishers got {} ({} seqs), resent {} ({} dropped, {} not in ring)",
                c.nack_sent,
                c.nack_seqs_sent,
                c.nack_received,
                c.nack_seqs_received,
                c.rtx_sent,
                c.rtx_dropped,
                c.rtx_missing
            ),
        );
        row(
            s,
            "RTCP reports",
            format!(
                "SR sent {} got {}, RR sent {} got {}, errors {}{}",
                c.sr_sent,
                c.sr_received,
                c.rr_sent,
                c.rr_received,
                c.rtcp_errors,
                match self.publisher_rtt_ms {
                    Some(ms) => format!(", publisher RTT {ms:.2} ms"),
                    None => String::new(),
                }
            ),
        );
    }
}
