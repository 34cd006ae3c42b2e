//! Loss detection on an upstream (publisher) stream: which sequence numbers to NACK, and when.
//!
//! Feed every received sequence number to [`NackGenerator::on_packet`]; a jump forward records the
//! skipped numbers as missing. [`NackGenerator::poll`] then lists the missing numbers that are due: never
//! NACKed yet, or last NACKed at least one RTT (and at least `min_spacing_ms`) ago. Each number is NACKed
//! at most `max_retries` times and forgotten after `max_age_ms`; a late or retransmitted arrival removes
//! it at once. The missing list is a fixed ring allocated on construction; when it is full the oldest
//! entry is given up.

use super::{seq_diff, seq_newer};

/// Tuning.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How many missing packets are tracked at once.
    pub capacity: usize,
    /// How many times one packet is NACKed before it is given up.
    pub max_retries: u8,
    /// Least time between two NACKs of the same packet, whatever the RTT.
    pub min_spacing_ms: u64,
    /// A packet missing for longer than this is given up (a keyframe is cheaper by then).
    pub max_age_ms: u64,
    /// A forward jump larger than this is treated as a stream restart, not loss.
    pub max_gap: u16,
}

impl Default for Config {
    fn default() -> Config {
        Config { capacity: 512, max_retries: 10, min_spacing_ms: 20, max_age_ms: 1000, max_gap: 1000 }
    }
}

#[derive(Clone, Copy, Default)]
struct Missing {
    live: bool,
    seq: u16,
    retries: u8,
    detected_ms: u64,
    last_sent_ms: Option<u64>,
}

/// Counters, for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NackStats {
    /// Sequence numbers found missing.
    pub missing: u64,
    /// Missing ones that arrived later.
    pub recovered: u64,
    /// Missing ones given up (retries, age, ring full).
    pub given_up: u64,
    /// NACK entries produced by `poll`.
    pub nacked: u64,
}

/// Missing-packet tracker for one incoming stream.
pub struct NackGenerator {
    cfg: Config,
    ring: Box<[Missing]>,
    /// Index of the oldest entry and number of entries (live or dead) in the ring.
    head: usize,
    len: usize,
    highest: Option<u16>,
    stats: NackStats,
}

impl NackGenerator {
    /// A tracker with the missing ring allocated now.
    pub fn new(cfg: Config) -> NackGenerator {
        let cap = cfg.capacity.max(1);
        NackGenerator {
            cfg,
            ring: vec![Missing::default(); cap].into_boxed_slice(),
            head: 0,
            len: 0,
            highest: None,
            stats: NackStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> NackStats {
        self.stats
    }

    /// Number of sequence numbers currently missing.
    pub fn missing_count(&self) -> usize {
        self.iter_live().count()
    }

    fn iter_live(&self) -> impl Iterator<Item = &Missing> {
        (0..self.len).map(|k| &self.ring[(self.head + k) % self.ring.len()]).filter(|m| m.live)
    }

    fn push(&mut self, seq: u16, now_ms: u64) {
        let cap = self.ring.len();
        if self.len == cap {
            if self.ring[self.head].live {
                self.stats.given_up += 1;
            }
            self.head = (self.head + 1) % cap;
            self.len -= 1;
        }
        let i = (self.head + self.len) % cap;
        self.ring[i] = Missing { live: true, seq, retries: 0, detected_ms: now_ms, last_sent_ms: None };
        self.len += 1;
        self.stats.missing += 1;
    }

    /// Drops dead entries from the front so the ring's space is reused.
    fn compact_front(&mut self) {
        while self.len > 0 && !self.ring[self.head].live {
            self.head = (self.head + 1) % self.ring.len();
            self.len -= 1;
        }
    }

    /// Records a received packet. Returns true if it was one we were missing (a recovery).
    pub fn on_packet(&mut self, seq: u16, now_ms: u64) -> bool {
        let Some(h) = self.highest else {
            self.highest = Some(seq);
            return false;
        };
        if seq_newer(seq, h) {
            let gap = seq.wrapping_sub(h);
            if gap > self.cfg.max_gap {
                // A restart (or a huge burst of loss): NACKing would not help.
                self.reset();
                self.highest = Some(seq);
                return false;
            }
            for k in 1..gap {
                self.push(h.wrapping_add(k), now_ms);
            }
            self.highest = Some(seq);
            return false;
        }
        // Old: a reordered or retransmitted packet.
        let cap = self.ring.len();
        for k in 0..self.len {
            let m = &mut self.ring[(self.head + k) % cap];
            if m.live && m.seq == seq {
                m.live = false;
                self.stats.recovered += 1;
                self.compact_front();
                return true;
            }
        }
        false
    }

    /// Writes the sequence numbers due for a NACK now (oldest first) into `out`; returns how many.
    /// `rtt_ms` spaces retries of the same packet.
    pub fn poll(&mut self, now_ms: u64, rtt_ms: u64, out: &mut [u16]) -> usize {
        let spacing = rtt_ms.max(self.cfg.min_spacing_ms);
        let cap = self.ring.len();
        let mut n = 0;
        for k in 0..self.len {
            let m = &mut self.ring[(self.head + k) % cap];
            if !m.live {
                continue;
            }
            if m.retries >= self.cfg.max_retries || now_ms.saturating_sub(m.detected_ms) > self.cfg.max_age_ms {
                m.live = false;
                self.stats.given_up += 1;
                continue;
            }
            let due = m.last_sent_ms.is_none_or(|t| now_ms.saturating_sub(t) >= spacing);
            if due && n < out.len() {
                out[n] = m.seq;
                n += 1;
                m.retries += 1;
                m.last_sent_ms = Some(now_ms);
            }
        }
        self.compact_front();
        self.stats.nacked += n as u64;
        n
    }

    /// Forgets every missing packet and the highest sequence number.
    pub fn reset(&mut self) {
        for k in 0..self.len {
            let i = (self.head + k) % self.ring.len();
            if self.ring[i].live {
                self.stats.given_up += 1;
                self.ring[i].live = false;
            }
        }
        self.head = 0;
        self.len = 0;
        self.highest = None;
    }

    /// Whether `seq` is older than the newest packet by more than `window` (for callers deciding to ask
    /// for a keyframe instead).
    pub fn is_older_than(&self, seq: u16, window: u16) -> bool {
        self.highest.is_some_and(|h| seq_diff(h, seq) > window as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testutil::Rng;
    use std::collections::{BTreeMap, HashSet};

    #[test]
    fn gap_is_nacked_then_spaced_then_given_up() {
        let mut g = NackGenerator::new(Config { max_retries: 3, ..Config::default() });
        let mut out = [0u16; 16];
        g.on_packet(65533, 0);
        g.on_packet(65534, 0);
        g.on_packet(1, 10); // 65535 and 0 lost across the wrap
        assert_eq!(g.poll(10, 100, &mut out), 2);
        assert_eq!(&out[..2], &[65535, 0]);
        assert_eq!(g.poll(50, 100, &mut out), 0, "within one RTT");
        assert_eq!(g.poll(110, 100, &mut out), 2, "after one RTT");
        assert!(g.on_packet(0, 120), "0 recovered");
        assert!(!g.on_packet(0, 121), "duplicate is not a second recovery");
        assert_eq!(g.poll(210, 100, &mut out), 1);
        assert_eq!(out[0], 65535);
        assert_eq!(g.poll(310, 100, &mut out), 0, "3 retries used: given up");
        assert_eq!(g.missing_count(), 0);
        let s = g.stats();
        assert_eq!((s.missing, s.recovered, s.given_up, s.nacked), (2, 1, 1, 5));
    }

    #[test]
    fn old_entries_age_out_and_huge_jumps_reset() {
        let mut g = NackGenerator::new(Config::default());
        let mut out = [0u16; 16];
        g.on_packet(10, 0);
        g.on_packet(12, 0);
        assert_eq!(g.poll(0, 10, &mut out), 1);
        assert_eq!(g.poll(2000, 10, &mut out), 0, "older than max_age");
        g.on_packet(20, 2000);
        g.on_packet(5000, 2001);
        assert_eq!(g.missing_count(), 0, "a jump beyond max_gap is a restart");
        assert!(g.is_older_than(100, 1000));
    }

    #[test]
    fn ring_full_gives_up_oldest() {
        let mut g = NackGenerator::new(Config { capacity: 8, ..Config::default() });
        g.on_packet(0, 0);
        g.on_packet(21, 0); // 20 missing, ring holds 8
        assert_eq!(g.missing_count(), 8);
        let mut out = [0u16; 16];
        assert_eq!(g.poll(0, 10, &mut out), 8);
        assert_eq!(&out[..8], &[13, 14, 15, 16, 17, 18, 19, 20]);
        assert_eq!(g.stats().given_up, 12);
    }

    /// 5% random loss on the original packets and on retransmissions: every lost packet is NACKed,
    /// and a recovered packet is never NACKed again.
    #[test]
    fn five_percent_loss() {
        let mut rng = Rng(0xC0FFEE);
        let mut g = NackGenerator::new(Config::default());
        let rtt = 60u64;
        let mut out = [0u16; 256];
        let mut lost = HashSet::new();
        let mut nacked = HashSet::new();
        let mut recovered_at: BTreeMap<u16, u64> = BTreeMap::new();
        // Retransmissions in flight: (arrival time, seq).
        let mut in_flight: Vec<(u64, u16)> = Vec::new();
        let start = 60_000u16; // crosses the wrap
        for i in 0..20_000u32 {
            let now = i as u64 * 5;
            let seq = start.wrapping_add(i as u16);
            in_flight.sort_unstable();
            while in_flight.first().is_some_and(|&(t, _)| t <= now) {
                let (_, s) = in_flight.remove(0);
                if g.on_packet(s, now) {
                    recovered_at.insert(s, now);
                }
            }
            if rng.unit() < 0.05 && i > 0 {
                lost.insert(seq);
            } else {
                g.on_packet(seq, now);
            }
            let n = g.poll(now, rtt, &mut out);
            for &s in &out[..n] {
                assert!(!recovered_at.contains_key(&s), "{s} NACKed after it was recovered");
                nacked.insert(s);
                if rng.unit() >= 0.05 {
                    in_flight.push((now + rtt, s));
                }
            }
        }
        assert!(lost.len() > 800, "{} lost", lost.len());
        // The last few lost may not have been detected yet (no later packet): all others NACKed.
        let undetected: Vec<_> = lost.iter().filter(|s| !nacked.contains(s)).collect();
        assert!(undetected.len() <= 1, "never NACKed: {undetected:?}");
        assert!(recovered_at.len() as f64 >= lost.len() as f64 * 0.99, "{} of {} recovered", recovered_at.len(), lost.len());
        let s = g.stats();
        assert_eq!(s.recovered, recovered_at.len() as u64);
        assert!(s.nacked < lost.len() as u64 * 12 / 10, "about one NACK per loss, plus retries: {}", s.nacked);
    }
}
