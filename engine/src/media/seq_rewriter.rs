//! Simulcast rewriting: the selected layer's (SSRC, sequence number, timestamp) mapped onto one
//! continuous outgoing stream.
//!
//! A subscriber sees one SSRC whatever layer it is sent. Each layer has its own sequence and timestamp
//! spaces, so on a switch the rewriter recomputes two offsets: the new layer's first packet gets the
//! sequence number after the last one sent, and a timestamp advanced from the last one sent by the wall
//! time elapsed (at the codec clock rate, at least 1), so the outgoing sequence stays contiguous and
//! the timestamps monotonic. A switch happens only on a keyframe of the target layer (the caller says
//! which packets start one); until then the current layer keeps flowing. Packets of other layers are
//! dropped without leaving a gap; [`SeqRewriter::skip`] also drops a packet of the selected layer
//! without a gap (e.g. padding-only), when it is the next in sequence.
//!
//! All arithmetic wraps (16-bit sequence numbers, 32-bit timestamps).

use super::{seq_newer, ts_diff};

/// The outgoing header fields for a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Outgoing SSRC.
    pub ssrc: u32,
    /// Outgoing sequence number.
    pub seq: u16,
    /// Outgoing timestamp.
    pub ts: u32,
    /// This packet switched the stream to a new layer.
    pub switched: bool,
}

/// Rewriter for one subscriber's view of one simulcast stream.
#[derive(Debug, Clone)]
pub struct SeqRewriter {
    out_ssrc: u32,
    clock_rate: u32,
    /// Layer being forwarded.
    current: Option<u32>,
    /// Layer to switch to at its next keyframe.
    target: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// First incoming seq of the current layer after the switch: older ones are dropped.
    switch_seq: u16,
    /// Highest incoming seq of the current layer.
    highest_in: u16,
    /// Last outgoing seq/ts (highest) and when it was sent.
    last_seq: u16,
    last_ts: u32,
    last_ms: u64,
    started: bool,
    /// A layer switch happened after the first packet: numbers from before a switch point belong to
    /// another layer's numbering.
    switched_since_start: bool,
}

impl SeqRewriter {
    /// A rewriter sending as `out_ssrc`, starting at `first_seq`/`first_ts` (random per RFC 3550), for
    /// a codec with `clock_rate` (90000 for video).
    pub fn new(out_ssrc: u32, first_seq: u16, first_ts: u32, clock_rate: u32) -> SeqRewriter {
        SeqRewriter {
            out_ssrc,
            clock_rate,
            current: None,
            target: None,
            seq_offset: 0,
            ts_offset: 0,
            switch_seq: 0,
            highest_in: 0,
            last_seq: first_seq.wrapping_sub(1),
            last_ts: first_ts,
            last_ms: 0,
            started: false,
            switched_since_start: false,
        }
    }

    /// The layer (SSRC) being forwarded.
    pub fn current(&self) -> Option<u32> {
        self.current
    }

    /// The layer to switch to at its next keyframe (`None`: paused).
    pub fn target(&self) -> Option<u32> {
        self.target
    }

    /// What is added to the current layer's timestamps (to map an incoming RTP time, e.g. from the
    /// publisher's sender report, onto the outgoing stream).
    pub fn ts_offset(&self) -> u32 {
        self.ts_offset
    }

    /// For a stream that kept the publisher's numbers (one layer, no switch since the first packet):
    /// `out_seq` if it is from before the first packet this rewriter forwarded (at most 1024 before),
    /// i.e. a packet this subscriber lost before the stream reached it through this rewriter, such as
    /// while an engine restarted. A subscriber's NACK for it cannot be answered from the cache and is
    /// passed on to the publisher. (Later misses are the engine's own upstream losses, which it NACKs
    /// itself, once for all subscribers.)
    pub fn earlier_seq(&self, out_seq: u16) -> Option<u16> {
        self.current?;
        if !self.started || self.seq_offset != 0 || self.switched_since_start {
            return None;
        }
        let back = self.switch_seq.wrapping_sub(out_seq);
        (1..=1024).contains(&back).then_some(out_seq)
    }

    /// Whether a packet was forwarded yet.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The layer to switch to, or `None` to pause (nothing is forwarded once the current layer stops).
    pub fn select(&mut self, layer: Option<u32>) {
        self.target = layer;
        if layer.is_none() {
            self.current = None;
        }
    }

    /// Whether the caller should ask the publisher for a keyframe on the target layer (a switch is
    /// waiting for one).
    pub fn needs_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }

    /// Maps one incoming packet; `None` means drop it. `keyframe`: the packet is the first of a keyframe
    /// (the only place a layer switch may happen). `now_ms` is its receive time.
    pub fn rewrite(&mut self, ssrc: u32, seq: u16, ts: u32, keyframe: bool, now_ms: u64) -> Option<Rewritten> {
        let mut switched = false;
        if Some(ssrc) != self.current {
            if Some(ssrc) != self.target || !keyframe {
                return None;
            }
            // Switch: next seq after the last sent; timestamp advanced by the elapsed wall time.
            let out_seq = self.last_seq.wrapping_add(1);
            let out_ts = if self.started {
                let elapsed = now_ms.saturating_sub(self.last_ms);
                let ticks = (elapsed.saturating_mul(self.clock_rate as u64) / 1000).clamp(1, u32::MAX as u64 / 4);
                self.last_ts.wrapping_add(ticks as u32)
            } else {
                self.last_ts
            };
            self.seq_offset = out_seq.wrapping_sub(seq);
            self.ts_offset = out_ts.wrapping_sub(ts);
            self.switch_seq = seq;
            self.highest_in = seq;
            self.current = Some(ssrc);
            self.switched_since_start |= self.started;
            switched = true;
        } else if seq_newer(self.switch_seq, seq) && (self.switched_since_start || self.seq_offset != 0) {
            // From before the switch point: its sequence number was already used by the old layer.
            // (Without a switch since the start and with the publisher's own numbers, an earlier
            // packet, such as a retransmission of one lost before the stream reached this
            // subscriber, keeps its number.)
            return None;
        }
        if seq_newer(seq, self.highest_in) {
            self.highest_in = seq;
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        if !self.started || seq_newer(out_seq, self.last_seq) {
            self.last_seq = out_seq;
            self.last_ms = now_ms;
        }
        if !self.started || ts_diff(out_ts, self.last_ts) > 0 {
            self.last_ts = out_ts;
        }
        self.started = true;
        Some(Rewritten { ssrc: self.out_ssrc, seq: out_seq, ts: out_ts, switched })
    }

    /// Drops packet `seq` of the current layer without leaving a gap, if it is the next in sequence
    /// (returns false otherwise: then dropping it would leave a gap the subscriber NACKs).
    pub fn skip(&mut self, ssrc: u32, seq: u16) -> bool {
        if Some(ssrc) != self.current || seq != self.highest_in.wrapping_add(1) {
            return false;
        }
        self.highest_in = seq;
        self.seq_offset = self.seq_offset.wrapping_sub(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: u32 = 0x1000;
    const MID: u32 = 0x2000;
    const HIGH: u32 = 0x3000;

    /// Three layers sending in lockstep: 30 fps, 3 packets per frame, independent seq/ts bases.
    struct Source {
        seq: [u16; 3],
        ts: [u32; 3],
    }

    impl Source {
        fn frame(&mut self, layer: usize) -> [(u32, u16, u32); 3] {
            let ssrc = [LOW, MID, HIGH][layer];
            let r = [0, 1, 2].map(|k| (ssrc, self.seq[layer].wrapping_add(k), self.ts[layer]));
            self.seq[layer] = self.seq[layer].wrapping_add(3);
            self.ts[layer] = self.ts[layer].wrapping_add(3000);
            r
        }
    }

    fn check_continuous(out: &[Rewritten]) {
        for w in out.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "contiguous: {w:?}");
            assert!(ts_diff(w[1].ts, w[0].ts) >= 0, "monotonic: {w:?}");
            assert_eq!(w[1].ssrc, 0xABCD);
        }
    }

    fn run(switches: &[(u64, u32)], seq0: [u16; 3], ts0: [u32; 3], out_seq: u16, out_ts: u32) -> Vec<Rewritten> {
        let mut src = Source { seq: seq0, ts: ts0 };
        let mut rw = SeqRewriter::new(0xABCD, out_seq, out_ts, 90_000);
        let mut out = Vec::new();
        rw.select(Some(LOW));
        for f in 0..300u64 {
            let now = f * 33;
            if let Some(&(_, l)) = switches.iter().find(|&&(at, _)| at == f) {
                rw.select(Some(l));
            }
            // A keyframe on every layer every 60 frames, and on the target layer right after select.
            let key = f % 60 == 0 || rw.needs_keyframe() && f % 10 == 5;
            for layer in 0..3 {
                for (i, (ssrc, seq, ts)) in src.frame(layer).into_iter().enumerate() {
                    if let Some(r) = rw.rewrite(ssrc, seq, ts, key && i == 0, now) {
                        assert_eq!(rw.current(), Some(ssrc));
                        out.push(r);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn only_numbers_from_before_the_first_packet_map_to_the_publisher() {
        let mut rw = SeqRewriter::new(9, 3, 0, 90_000);
        rw.select(Some(1));
        assert_eq!(rw.earlier_seq(1), None, "nothing forwarded yet");
        for (i, seq) in (3u16..=10).enumerate() {
            assert!(rw.rewrite(1, seq, i as u32 * 3000, i == 0, i as u64 * 33).is_some());
        }
        assert_eq!(rw.earlier_seq(2), Some(2));
        assert_eq!(rw.earlier_seq(65535), Some(65535), "across the wrap");
        assert_eq!(rw.earlier_seq(3), None, "forwarded by this rewriter: the cache's business");
        assert_eq!(rw.earlier_seq(9), None);
        assert_eq!(rw.earlier_seq(3u16.wrapping_sub(2000)), None, "too old");
        // A layer switch: the numbering is no longer the publisher's.
        rw.select(Some(2));
        assert!(rw.rewrite(2, 7000, 0, true, 400).is_some());
        assert_eq!(rw.earlier_seq(2), None);
        // A rewriter that started with an offset (a simulcast subscriber) never maps.
        let mut other = SeqRewriter::new(9, 500, 0, 90_000);
        other.select(Some(1));
        assert!(other.rewrite(1, 3, 0, true, 0).is_some());
        assert_eq!(other.earlier_seq(499), None);
    }

    #[test]
    fn switch_up_and_down_stays_continuous() {
        let out = run(&[(20, HIGH), (100, MID), (150, LOW), (200, HIGH)], [100, 20_000, 40_000], [0, 1_000_000, 7], 5000, 90_000);
        assert_eq!(out[0].seq, 5000);
        assert_eq!(out[0].ts, 90_000);
        check_continuous(&out);
        let switches = out.iter().filter(|r| r.switched).count();
        assert_eq!(switches, 5, "initial + 4");
        // One layer's 3 packets per frame, plus the old layer's packets in a frame where the new layer's
        // keyframe (processed later in the frame) switched: nothing was lost or duplicated around switches.
        assert!((900..=912).contains(&out.len()), "{}", out.len());
    }

    #[test]
    fn wraps_sequence_and_timestamp() {
        let out = run(&[(30, HIGH), (90, LOW)], [65_500, 65_000, 10], [u32::MAX - 100_000, u32::MAX - 50, 5], 65_400, u32::MAX - 2000);
        check_continuous(&out);
        assert!(out.iter().any(|r| r.seq == 0), "out seq wrapped");
        assert!(out.windows(2).any(|w| w[1].ts < w[0].ts), "out ts wrapped");
    }

    #[test]
    fn drops_other_layers_old_packets_and_skips() {
        let mut rw = SeqRewriter::new(9, 0, 0, 90_000);
        rw.select(Some(MID));
        assert_eq!(rw.rewrite(MID, 10, 100, false, 0), None, "no keyframe yet");
        assert!(rw.needs_keyframe());
        let r = rw.rewrite(MID, 11, 100, true, 0).unwrap();
        assert_eq!((r.seq, r.ts, r.switched), (0, 0, true));
        assert_eq!(rw.rewrite(HIGH, 11, 100, true, 0), None, "not selected");
        assert_eq!(rw.rewrite(MID, 10, 100, false, 0), None, "before the switch point");
        assert!(rw.skip(MID, 12), "padding");
        assert!(!rw.skip(MID, 14), "not next: would leave a gap");
        assert_eq!(rw.rewrite(MID, 13, 3100, false, 33).unwrap().seq, 1);
        // A reordered packet after the switch point keeps its place.
        assert_eq!(rw.rewrite(MID, 15, 3100, false, 34).unwrap().seq, 3);
        assert_eq!(rw.rewrite(MID, 14, 3100, false, 34).unwrap().seq, 2);
        // Pause.
        rw.select(None);
        assert_eq!(rw.rewrite(MID, 16, 6100, true, 66), None);
        // Resume on LOW: contiguous, timestamp advanced by elapsed time (1000 ms -> 90000).
        rw.select(Some(LOW));
        let r = rw.rewrite(LOW, 500, 1, true, 1034).unwrap();
        assert_eq!(r.seq, 4);
        assert_eq!(r.ts, 3000 + 90_000);
    }
}
