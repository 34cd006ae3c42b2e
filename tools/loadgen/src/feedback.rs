//! Loss injection and recovery: what a browser's RTP stack does about loss, sized for thousands of
//! participants (every ring is allocated when a stream appears, nothing per packet).
//!
//! - **Injection**: a subscriber drops `--loss-down` percent of the RTP packets it receives before
//!   looking at them (emulated downlink loss); a publisher drops `--loss-up` percent of the RTP
//!   packets it would send (emulated uplink loss): the packet still counts as sent and goes into its
//!   retransmission ring. Retransmissions are subject to the same loss.
//! - **Subscribers** feed every video packet's RTP sequence number to a
//!   [`NackGenerator`](switchyard_engine::media::nack_generator::NackGenerator) and send generic NACKs
//!   (RFC 4585) on SRTCP as soon as a gap appears, retried after the measured round trip (the time from
//!   a NACK to the retransmission it asked for); once a second they send a receiver report with a block
//!   per stream (loss, extended highest sequence, jitter, LSR/DLSR of the server's sender reports).
//! - **Publishers** keep the plaintext of what they sent in a
//!   [`NackCache`](switchyard_engine::media::nack_cache::NackCache) per track (about a second of
//!   packets) and answer NACKs by re-sending the packet (same SSRC and sequence number: RTX is not
//!   negotiated on publish); once a second they send a sender report per track.
//!
//! A packet a publisher dropped on the uplink is stored (and so retransmitted) with
//! [`FLAG_UPLINK_LOST`](crate::payload::FLAG_UPLINK_LOST) in its payload, which lets subscribers tell a
//! recovered uplink loss from a recovered downlink loss.

use std::time::{SystemTime, UNIX_EPOCH};

use switchyard_engine::media::nack_generator::{Config as NackConfig, NackGenerator};
use switchyard_engine::media::rtcp::ReportBlock;
use switchyard_engine::rtp::RecvStats;

/// Loss injection and the RTCP feedback that recovers from it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossOptions {
    /// Percent of received RTP packets each subscriber drops (downlink loss).
    pub loss_down_pct: f64,
    /// Percent of RTP packets each publisher drops instead of sending (uplink loss).
    pub loss_up_pct: f64,
    /// NACKs, retransmissions and sender/receiver reports: `None` turns them on when loss is injected.
    pub feedback: Option<bool>,
}

impl LossOptions {
    /// Whether participants send NACKs, answer them and send reports.
    pub fn feedback_on(&self) -> bool {
        self.feedback
            .unwrap_or(self.loss_down_pct > 0.0 || self.loss_up_pct > 0.0)
    }

    /// The share as a threshold for a uniform `u64`: drop when `rand < threshold`.
    pub fn threshold(pct: f64) -> u64 {
        if pct.is_nan() || pct <= 0.0 {
            0
        } else if pct >= 100.0 {
            u64::MAX
        } else {
            (pct / 100.0 * u64::MAX as f64) as u64
        }
    }
}

/// Receiver reports and sender reports are sent this often.
pub const REPORT_INTERVAL_NS: u64 = 1_000_000_000;
/// Round-trip estimate before the first measurement (libwebrtc's default).
pub const INITIAL_RTT_MS: u64 = 100;
/// Most sequence numbers one NACK poll lists.
pub const NACK_BATCH: usize = 128;

/// Index of a payload kind in per-kind arrays: audio 0, video 1.
pub fn kind_index(kind: u8) -> usize {
    usize::from(kind == crate::payload::KIND_VIDEO)
}

/// The NACK generator's tuning for a subscriber stream: a small ring (a second of 5% loss on a
/// 1 Mbit/s stream is ~6 packets), otherwise the engine's defaults.
pub fn nack_config() -> NackConfig {
    NackConfig {
        capacity: 256,
        ..NackConfig::default()
    }
}

/// The wall clock as a 64-bit NTP timestamp (seconds since 1900, 32.32 fixed point).
pub fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs().wrapping_add(2_208_988_800);
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (the LSR / DLSR unit: 1/65536 s).
pub fn compact(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Receive state of one RTP stream at a subscriber: RFC 3550 statistics for the receiver report,
/// the last sender report, and (video) the NACK generator with the send times of recent NACKs.
pub struct RtpRx {
    /// The SSRC the server sends this stream with.
    pub ssrc: u32,
    clock_hz: u32,
    /// RFC 3550 sequence statistics and jitter (the engine's, so both sides count alike).
    stats: RecvStats,
    last_sr: u32,
    last_sr_at_ns: u64,
    /// Loss detection (video streams with feedback on).
    pub nack: Option<NackGenerator>,
    /// (seq, ms) of the latest NACK naming seq, by `seq % 64`: round-trip samples.
    nacked_at: [(u16, u64); 64],
}

/// What one received packet did to a stream's loss detection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxEvent {
    /// It revealed a gap: a NACK is due.
    pub gap: bool,
    /// A round-trip sample: ms from our last NACK of this packet to its arrival.
    pub rtt_sample_ms: Option<u64>,
}

impl RtpRx {
    /// State for a stream first seen with `ssrc`; `nack` allocates the generator's ring now.
    pub fn new(ssrc: u32, clock_hz: u32, nack: bool) -> RtpRx {
        RtpRx {
            ssrc,
            clock_hz: clock_hz.max(1),
            stats: RecvStats::default(),
            last_sr: 0,
            last_sr_at_ns: 0,
            nack: nack.then(|| NackGenerator::new(nack_config())),
            nacked_at: [(0, u64::MAX); 64],
        }
    }

    /// Records a received packet (after authentication): sequence statistics and jitter (RFC 3550
    /// A.8, as the engine computes them), loss detection.
    pub fn on_rtp(&mut self, seq: u16, ts: u32, now_ns: u64) -> RxEvent {
        let mut ev = RxEvent::default();
        self.stats.on_packet(seq, ts, (now_ns / 1000) as i64, self.clock_hz);
        let now_ms = now_ns / 1_000_000;
        if let Some(g) = self.nack.as_mut() {
            let before = g.stats().missing;
            if g.on_packet(seq, now_ms) {
                let (s, t) = self.nacked_at[usize::from(seq) % 64];
                if s == seq && t != u64::MAX {
                    ev.rtt_sample_ms = Some(now_ms.saturating_sub(t));
                }
            }
            ev.gap = g.stats().missing > before;
        }
        ev
    }

    /// Sequence numbers due for a NACK now, into `out`; remembers when each was asked for.
    pub fn poll_nacks(&mut self, now_ms: u64, rtt_ms: u64, out: &mut [u16]) -> usize {
        let Some(g) = self.nack.as_mut() else {
            return 0;
        };
        let n = g.poll(now_ms, rtt_ms, out);
        for &s in out.iter().take(n) {
            self.nacked_at[usize::from(s) % 64] = (s, now_ms);
        }
        n
    }

    /// Whether packets are still missing (a retry may come due).
    pub fn outstanding(&self) -> bool {
        self.nack.as_ref().is_some_and(|g| {
            let s = g.stats();
            s.missing > s.recovered + s.given_up
        })
    }

    /// The server's sender report about this stream arrived.
    pub fn on_sr(&mut self, compact_ntp: u32, now_ns: u64) {
        self.last_sr = compact_ntp;
        self.last_sr_at_ns = now_ns;
    }

    /// This stream's receiver report block (RFC 3550 §6.4.1, A.3); starts a new interval.
    pub fn report_block(&mut self, now_ns: u64) -> Option<ReportBlock> {
        if !self.stats.started() {
            return None;
        }
        let delay_since_last_sr = if self.last_sr == 0 {
            0
        } else {
            ((u128::from(now_ns.saturating_sub(self.last_sr_at_ns)) << 16) / 1_000_000_000) as u32
        };
        Some(self.stats.report(self.ssrc, self.last_sr, delay_since_last_sr))
    }
}

/// Writes an SDES packet with one CNAME chunk for `ssrc` (RFC 3550 §6.5); returns its length.
pub fn write_sdes_cname(out: &mut [u8], ssrc: u32, cname: &[u8]) -> Option<usize> {
    let cname = cname.get(..cname.len().min(255))?;
    // Header 4, SSRC 4, CNAME item 2 + text, at least one null octet, padded to 32 bits.
    let len = (4 + 4 + 2 + cname.len() + 1).div_ceil(4) * 4;
    let b = out.get_mut(..len)?;
    b[0] = 0x81;
    b[1] = 202;
    b[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    b[4..8].copy_from_slice(&ssrc.to_be_bytes());
    b[8] = 1;
    b[9] = cname.len() as u8;
    b[10..10 + cname.len()].copy_from_slice(cname);
    b[10 + cname.len()..].fill(0);
    Some(len)
}

/// Round trip from a report block about one of our SSRCs (RFC 3550 §6.4.1): now − LSR − DLSR, in ms.
pub fn rtt_from_block(block: &ReportBlock, now_compact: u32) -> Option<f64> {
    if block.last_sr == 0 {
        return None;
    }
    let rtt = now_compact
        .wrapping_sub(block.last_sr)
        .wrapping_sub(block.delay_since_last_sr);
    // A negative or absurd result (clock steps, a report about an old SR) is no sample.
    (rtt < 10 << 16).then(|| f64::from(rtt) * 1000.0 / 65536.0)
}

/// Counters of the loss-recovery machinery, merged across media threads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// RTP packets subscribers dropped by injection (warm-up and retransmissions included).
    pub down_dropped: u64,
    /// RTP packets publishers dropped by injection (warm-up and retransmissions included).
    pub up_dropped: u64,
    /// NACK packets subscribers sent.
    pub nack_sent: u64,
    /// Sequence numbers those NACKs named (each retry counts again).
    pub nack_seqs_sent: u64,
    /// NACK packets publishers received (from the server).
    pub nack_received: u64,
    /// Sequence numbers named in them.
    pub nack_seqs_received: u64,
    /// Packets publishers retransmitted (dropped-by-injection ones included).
    pub rtx_sent: u64,
    /// Retransmissions the uplink injection dropped.
    pub rtx_dropped: u64,
    /// NACKed sequence numbers a publisher no longer (or never) had.
    pub rtx_missing: u64,
    /// Sender reports publishers sent.
    pub sr_sent: u64,
    /// Receiver reports subscribers sent (alone, not counting the RR heading each NACK).
    pub rr_sent: u64,
    /// Sender reports received (subscribers, from the server).
    pub sr_received: u64,
    /// Receiver reports with at least one report block received (publishers, from the server).
    pub rr_received: u64,
    /// SRTCP packets that failed to authenticate, or RTCP that did not parse.
    pub rtcp_errors: u64,
    /// Round-trip samples publishers took from the server's receiver reports.
    pub rtt_samples: u64,
    /// Their sum, microseconds.
    pub rtt_sum_us: u64,
    /// PLIs and new FIRs publishers received (from the server); each makes the next frame a keyframe.
    pub keyframe_requests: u64,
    /// Keyframes publishers sent (the first frame of each video track included).
    pub keyframes_sent: u64,
}

impl Counters {
    /// Adds another thread's counters.
    pub fn merge(&mut self, o: &Counters) {
        self.down_dropped += o.down_dropped;
        self.up_dropped += o.up_dropped;
        self.nack_sent += o.nack_sent;
        self.nack_seqs_sent += o.nack_seqs_sent;
        self.nack_received += o.nack_received;
        self.nack_seqs_received += o.nack_seqs_received;
        self.rtx_sent += o.rtx_sent;
        self.rtx_dropped += o.rtx_dropped;
        self.rtx_missing += o.rtx_missing;
        self.sr_sent += o.sr_sent;
        self.rr_sent += o.rr_sent;
        self.sr_received += o.sr_received;
        self.rr_received += o.rr_received;
        self.rtcp_errors += o.rtcp_errors;
        self.rtt_samples += o.rtt_samples;
        self.rtt_sum_us += o.rtt_sum_us;
        self.keyframe_requests += o.keyframe_requests;
        self.keyframes_sent += o.keyframes_sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_engine::media::rtcp::{self, Packet};

    #[test]
    fn thresholds() {
        assert_eq!(LossOptions::threshold(0.0), 0);
        assert_eq!(LossOptions::threshold(-3.0), 0);
        assert_eq!(LossOptions::threshold(f64::NAN), 0);
        assert_eq!(LossOptions::threshold(100.0), u64::MAX);
        let t = LossOptions::threshold(5.0) as f64 / u64::MAX as f64;
        assert!((t - 0.05).abs() < 1e-9);
        let auto = LossOptions {
            loss_down_pct: 5.0,
            ..LossOptions::default()
        };
        assert!(auto.feedback_on());
        assert!(!LossOptions::default().feedback_on());
        let off = LossOptions {
            feedback: Some(false),
            ..auto
        };
        assert!(!off.feedback_on());
    }

    #[test]
    fn gaps_are_detected_across_the_wrap_and_nacked_once_due() {
        let mut rx = RtpRx::new(7, 90_000, true);
        let mut out = [0u16; NACK_BATCH];
        let ms = 1_000_000;
        assert!(!rx.on_rtp(65534, 0, 1000 * ms).gap);
        assert!(rx.on_rtp(1, 0, 1001 * ms).gap, "65535 and 0 missing");
        assert!(rx.outstanding());
        assert_eq!(rx.poll_nacks(1001, 100, &mut out), 2);
        assert_eq!(&out[..2], &[65535, 0]);
        assert_eq!(
            rx.poll_nacks(1050, 100, &mut out),
            0,
            "not again within the RTT"
        );
        let ev = rx.on_rtp(0, 0, 1031 * ms);
        assert_eq!(ev.rtt_sample_ms, Some(30));
        assert!(!ev.gap);
        assert_eq!(rx.poll_nacks(1101, 100, &mut out), 1);
        assert_eq!(out[0], 65535);
        rx.on_rtp(65535, 0, 1110 * ms);
        assert!(!rx.outstanding());
        // The report: 4 expected (65534..=1), 4 received, highest extended seq after one wrap.
        let b = rx.report_block(1200 * ms).unwrap();
        assert_eq!(b.highest_seq, (1 << 16) + 1);
        assert_eq!((b.cumulative_lost, b.fraction_lost), (0, 0));
    }

    #[test]
    fn report_block_counts_loss_and_echoes_the_sr() {
        let mut rx = RtpRx::new(9, 48_000, false);
        let ms = 1_000_000u64;
        for (i, seq) in [10u16, 11, 13, 14].into_iter().enumerate() {
            rx.on_rtp(seq, 960 * u32::from(seq), (20 * i as u64 + 1) * ms);
        }
        rx.on_sr(0x1234_5678, 100 * ms);
        let b = rx.report_block(600 * ms).unwrap();
        assert_eq!(b.ssrc, 9);
        assert_eq!(b.cumulative_lost, 1);
        assert_eq!(b.fraction_lost, (256 / 5) as u8);
        assert_eq!(b.highest_seq, 14);
        assert_eq!(b.last_sr, 0x1234_5678);
        assert_eq!(b.delay_since_last_sr, 65536 / 2, "half a second");
        let b2 = rx.report_block(700 * ms).unwrap();
        assert_eq!(
            b2.fraction_lost, 0,
            "nothing new expected in the second interval"
        );
        assert!(RtpRx::new(1, 90_000, false).report_block(0).is_none());
    }

    #[test]
    fn sdes_parses_and_rtt_is_computed() {
        let mut b = [0u8; 64];
        let n = write_sdes_cname(&mut b, 42, b"loadgen").unwrap();
        assert_eq!(n % 4, 0);
        let mut it = rtcp::parse(&b[..n]);
        assert!(matches!(it.next(), Some(Ok(Packet::Sdes))));
        assert!(it.next().is_none());
        assert!(write_sdes_cname(&mut b[..8], 42, b"loadgen").is_none());
        let block = ReportBlock {
            ssrc: 1,
            fraction_lost: 0,
            cumulative_lost: 0,
            highest_seq: 0,
            jitter: 0,
            last_sr: 1000 << 16,
            delay_since_last_sr: 1 << 16,
        };
        let rtt = rtt_from_block(&block, (1001 << 16) + 655).unwrap();
        assert!((rtt - 10.0).abs() < 0.1, "{rtt}");
        assert!(rtt_from_block(&block, 999 << 16).is_none());
        let ntp = ntp_now();
        assert!(ntp >> 32 > 3_900_000_000, "after 2023");
    }
}
