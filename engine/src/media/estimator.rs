//! Send-side bandwidth estimation toward one subscriber, from transport-wide congestion control
//! feedback (TWCC), plus REMB passthrough.
//!
//! The engine is the *sender* toward subscribers: it stamps every packet with a transport-wide sequence
//! number, records when it sent it and how big it was ([`Estimator::on_sent`]), and the subscriber's
//! browser reports when each one arrived (or that it did not). From that the estimator derives:
//!
//! - **queuing delay**: one-way delay (arrival − send, with an unknown constant clock offset) above the
//!   smallest one seen recently (the base delay, kept over two rotating windows so it can drift);
//!   smoothed per packet. A rising queue means the link is full before any loss happens;
//! - **loss** per feedback;
//! - **acknowledged rate**: bytes that arrived over a sliding window of arrival time.
//!
//! The controller is GCC-like (draft-ietf-rmcat-gcc-02, simplified): on overuse (queuing delay above
//! `overuse_us`, or loss above `loss_high`) the estimate drops to `decrease` × the acknowledged rate, at
//! most once per `decrease_interval_us`; while the queue is near empty and loss low it grows by
//! `increase_per_s` per second (multiplicative), capped at 1.5 × the acknowledged rate so it does not run
//! away from what was actually tested; otherwise it holds. A REMB from the subscriber caps the result
//! while it is fresh.
//!
//! Times are microseconds on the caller's clock (`on_sent`, `on_feedback` `now`) and on the receiver's
//! clock (arrival times in the feedback); only differences of arrivals are used. Memory: a send-history
//! ring (2,048 packets by default: over a second of 16 Mbit/s, where feedback comes every 50-100 ms)
//! and an acknowledged-bytes ring ([`ACKED_RING`] entries; at higher packet rates the rate window
//! shortens to what it holds), both allocated on construction: 48 KiB per subscriber transport.

use super::rtcp::TwccFeedback;

/// Tuning.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Estimate before any feedback.
    pub initial_bps: u64,
    /// Floor.
    pub min_bps: u64,
    /// Ceiling.
    pub max_bps: u64,
    /// Send-history slots (a power of two; at least the packets in flight over a few RTTs).
    pub history: usize,
    /// Window of the acknowledged rate.
    pub rate_window_us: i64,
    /// Queuing delay above this is overuse.
    pub overuse_us: i64,
    /// Queuing delay below this allows increase.
    pub normal_us: i64,
    /// Loss fraction above this is overuse.
    pub loss_high: f64,
    /// Loss fraction below this allows increase.
    pub loss_low: f64,
    /// On overuse: estimate = decrease × acknowledged rate.
    pub decrease: f64,
    /// Least time between decreases.
    pub decrease_interval_us: i64,
    /// Multiplicative increase per second.
    pub increase_per_s: f64,
    /// Base delay window (the minimum is kept over between one and two of these).
    pub base_window_us: i64,
    /// How long a REMB caps the estimate.
    pub remb_ttl_us: i64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            initial_bps: 1_000_000,
            min_bps: 30_000,
            max_bps: 50_000_000,
            history: 2048,
            rate_window_us: 500_000,
            overuse_us: 40_000,
            normal_us: 15_000,
            loss_high: 0.10,
            loss_low: 0.02,
            decrease: 0.85,
            decrease_interval_us: 300_000,
            increase_per_s: 0.08,
            base_window_us: 5_000_000,
            remb_ttl_us: 5_000_000,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sent {
    valid: bool,
    seq: u16,
    size: u32,
    at_us: i64,
}

/// What the controller concluded from the last feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Queue building or loss: decreased (or would have, but decreased recently).
    Overuse,
    /// Neither growing nor draining clearly: held.
    Hold,
    /// Queue empty, loss low: increased.
    Underuse,
}

/// Entries of the acknowledged-bytes ring: a 500 ms rate window of up to 2,048 packets a second.
pub const ACKED_RING: usize = 1024;

/// One subscriber transport's estimator.
pub struct Estimator {
    cfg: Config,
    sent: Box<[Sent]>,
    /// Acknowledged (arrival µs, bytes) ring and its running sum.
    acked: Box<[(i64, u32)]>,
    acked_head: usize,
    acked_len: usize,
    acked_bytes: u64,
    /// Base delay: min over the current and the previous window.
    base_cur: i64,
    base_prev: i64,
    base_rotated_us: Option<i64>,
    queuing_us: f64,
    loss: f64,
    estimate: f64,
    last_update_us: Option<i64>,
    last_decrease_us: Option<i64>,
    remb: Option<(u64, i64)>,
    signal: Signal,
    app_limited: bool,
}

impl Estimator {
    /// An estimator with its rings allocated now.
    pub fn new(cfg: Config) -> Estimator {
        let h = cfg.history.clamp(64, 65536).next_power_of_two();
        Estimator {
            cfg,
            sent: vec![Sent::default(); h].into_boxed_slice(),
            acked: vec![(0, 0); ACKED_RING].into_boxed_slice(),
            acked_head: 0,
            acked_len: 0,
            acked_bytes: 0,
            base_cur: i64::MAX,
            base_prev: i64::MAX,
            base_rotated_us: None,
            queuing_us: 0.0,
            loss: 0.0,
            estimate: cfg.initial_bps as f64,
            last_update_us: None,
            last_decrease_us: None,
            remb: None,
            signal: Signal::Hold,
            app_limited: false,
        }
    }

    /// Tells the estimator the sender sends well below the estimate (a low simulcast layer, paused
    /// video): then an increase is not capped by the acknowledged rate, so the estimate can grow
    /// towards what a higher layer needs (there is no probing).
    pub fn set_app_limited(&mut self, yes: bool) {
        self.app_limited = yes;
    }

    /// No feedback arrived for a while because nothing was sent (paused video): with no evidence of
    /// congestion, the estimate grows as under underuse (from the last update, at most 1 s at a time)
    /// so video can resume. Does nothing within `decrease_interval_us` of a decrease.
    pub fn on_idle(&mut self, now_us: i64) {
        if self.last_decrease_us.is_some_and(|t| now_us.saturating_sub(t) < self.cfg.decrease_interval_us) {
            return;
        }
        let dt = self.last_update_us.map_or(0, |t| now_us.saturating_sub(t).clamp(0, 1_000_000));
        self.last_update_us = Some(now_us);
        self.loss = 0.0;
        self.queuing_us = 0.0;
        self.signal = Signal::Underuse;
        let grown = self.estimate * (1.0 + self.cfg.increase_per_s).powf(dt as f64 / 1e6);
        self.estimate = grown.clamp(self.cfg.min_bps as f64, self.cfg.max_bps as f64);
    }

    /// When the controller last ran (feedback or idle), µs.
    pub fn last_update_us(&self) -> Option<i64> {
        self.last_update_us
    }

    /// Records a packet sent with transport-wide sequence number `seq` and `size` bytes.
    pub fn on_sent(&mut self, seq: u16, size: usize, now_us: i64) {
        let i = seq as usize & (self.sent.len() - 1);
        self.sent[i] = Sent { valid: true, seq, size: size.min(u32::MAX as usize) as u32, at_us: now_us };
    }

    /// A REMB from the subscriber.
    pub fn on_remb(&mut self, bitrate_bps: u64, now_us: i64) {
        self.remb = Some((bitrate_bps, now_us));
    }

    /// The current estimate in bits per second (the REMB caps it while fresh).
    pub fn estimate(&self, now_us: i64) -> u64 {
        let own = self.estimate as u64;
        match self.remb {
            Some((r, at)) if now_us.saturating_sub(at) <= self.cfg.remb_ttl_us => own.min(r),
            _ => own,
        }
    }

    /// The smoothed queuing delay, µs.
    pub fn queuing_delay_us(&self) -> i64 {
        self.queuing_us as i64
    }

    /// Loss fraction in the last feedback.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// What the last feedback concluded.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Acknowledged rate over the window, bits per second (0 until two packets were acknowledged).
    pub fn acked_bps(&self) -> u64 {
        if self.acked_len < 2 {
            return 0;
        }
        let first = self.acked[self.acked_head].0;
        let last = self.acked[(self.acked_head + self.acked_len - 1) % self.acked.len()].0;
        let span = last.saturating_sub(first).max(self.cfg.rate_window_us / 4).max(1);
        (self.acked_bytes as u128 * 8 * 1_000_000 / span as u128).min(u64::MAX as u128 / 2) as u64
    }

    fn push_acked(&mut self, arrival: i64, bytes: u32) {
        let cap = self.acked.len();
        if self.acked_len == cap {
            self.acked_bytes -= self.acked[self.acked_head].1 as u64;
            self.acked_head = (self.acked_head + 1) % cap;
            self.acked_len -= 1;
        }
        self.acked[(self.acked_head + self.acked_len) % cap] = (arrival, bytes);
        self.acked_len += 1;
        self.acked_bytes += bytes as u64;
        while self.acked_len > 1 && self.acked[self.acked_head].0 < arrival.saturating_sub(self.cfg.rate_window_us) {
            self.acked_bytes -= self.acked[self.acked_head].1 as u64;
            self.acked_head = (self.acked_head + 1) % cap;
            self.acked_len -= 1;
        }
    }

    /// Applies one parsed TWCC feedback received at `now_us`.
    pub fn on_feedback(&mut self, fb: &TwccFeedback<'_>, now_us: i64) {
        let mut received = 0u32;
        let mut lost = 0u32;
        for (seq, arrival) in fb.packets() {
            if self.on_result(seq, arrival) {
                if arrival.is_some() {
                    received += 1;
                } else {
                    lost += 1;
                }
            }
        }
        self.update(received, lost, now_us);
    }

    /// One packet's result (lower-level than `on_feedback`): returns false if the send history does not
    /// know it (too old, or already reported). Call [`Estimator::update`] after a batch.
    pub fn on_result(&mut self, seq: u16, arrival_us: Option<i64>) -> bool {
        let i = seq as usize & (self.sent.len() - 1);
        let s = self.sent[i];
        if !s.valid || s.seq != seq {
            return false;
        }
        let Some(arrival) = arrival_us else {
            // Reported lost; it may still be reported received by a later feedback, so keep it.
            return true;
        };
        self.sent[i].valid = false;
        let delay = arrival.wrapping_sub(s.at_us);
        self.base_cur = self.base_cur.min(delay);
        let base = self.base_cur.min(self.base_prev);
        let q = delay.saturating_sub(base).max(0) as f64;
        self.queuing_us += (q - self.queuing_us) * 0.1;
        self.push_acked(arrival, s.size);
        true
    }

    /// Runs the controller after a batch of results: `received`/`lost` packets in it.
    pub fn update(&mut self, received: u32, lost: u32, now_us: i64) {
        // Rotate the base-delay windows.
        match self.base_rotated_us {
            None => self.base_rotated_us = Some(now_us),
            Some(t) if now_us.saturating_sub(t) >= self.cfg.base_window_us => {
                self.base_prev = self.base_cur;
                self.base_cur = i64::MAX;
                self.base_rotated_us = Some(now_us);
            }
            Some(_) => {}
        }
        let total = received + lost;
        if total > 0 {
            self.loss = lost as f64 / total as f64;
        }
        let dt = self.last_update_us.map_or(0, |t| now_us.saturating_sub(t).clamp(0, 1_000_000));
        self.last_update_us = Some(now_us);
        let q = self.queuing_us as i64;
        let acked = self.acked_bps() as f64;
        if q > self.cfg.overuse_us || self.loss > self.cfg.loss_high {
            self.signal = Signal::Overuse;
            let may = self.last_decrease_us.is_none_or(|t| now_us.saturating_sub(t) >= self.cfg.decrease_interval_us);
            if may {
                let mut target = if acked > 0.0 { acked * self.cfg.decrease } else { self.estimate * self.cfg.decrease };
                if self.loss > self.cfg.loss_high {
                    target = target.min(self.estimate * (1.0 - 0.5 * self.loss));
                }
                self.estimate = self.estimate.min(target);
                self.last_decrease_us = Some(now_us);
            }
        } else if q < self.cfg.normal_us && self.loss < self.cfg.loss_low {
            self.signal = Signal::Underuse;
            let grown = self.estimate * (1.0 + self.cfg.increase_per_s).powf(dt as f64 / 1e6);
            let cap = if acked > 0.0 && !self.app_limited { (acked * 1.5 + 10_000.0).max(self.estimate) } else { f64::MAX };
            self.estimate = grown.min(cap);
        } else {
            self.signal = Signal::Hold;
        }
        self.estimate = self.estimate.clamp(self.cfg.min_bps as f64, self.cfg.max_bps as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtcp::{self, Packet};

    /// A bottleneck link: FIFO with a byte-time buffer, a capacity that changes over time, a fixed
    /// propagation delay; the receiver's clock is offset from the sender's.
    struct Link {
        free_at: i64,
        buffer_us: i64,
        prop_us: i64,
    }

    impl Link {
        /// Arrival time of a packet sent at `t`, or None if the buffer overflows.
        fn send(&mut self, t: i64, bytes: usize, capacity_bps: u64) -> Option<i64> {
            let start = self.free_at.max(t);
            if start - t > self.buffer_us {
                return None;
            }
            let done = start + (bytes as i64 * 8 * 1_000_000) / capacity_bps as i64;
            self.free_at = done;
            Some(done + self.prop_us)
        }
    }

    /// Sends at the estimate through the link, feeds TWCC feedback (encoded and parsed) back every
    /// 100 ms; returns (time s, estimate bps) samples every 500 ms.
    fn simulate(capacity: impl Fn(i64) -> u64, until_s: i64) -> Vec<(f64, u64)> {
        let mut est = Estimator::new(Config::default());
        let mut link = Link { free_at: 0, buffer_us: 300_000, prop_us: 25_000 };
        let offset = 123_456_789i64; // receiver clock
        let size = 1200usize;
        let mut seq = 0u16;
        let mut sent: Vec<(u16, Option<i64>)> = Vec::new(); // (seq, arrival on the receiver clock)
        let mut reported = 0usize;
        let mut t = 0i64;
        let mut next_fb = 100_000i64;
        let mut next_sample = 0i64;
        let mut out = Vec::new();
        let mut fb_count = 0u8;
        let mut buf = [0u8; 1500];
        while t < until_s * 1_000_000 {
            // Pace one packet at the current estimate.
            let rate = est.estimate(t).max(1);
            est.on_sent(seq, size, t);
            let arrival = link.send(t, size, capacity(t)).map(|a| a + offset);
            sent.push((seq, arrival));
            seq = seq.wrapping_add(1);
            t += (size as i64 * 8 * 1_000_000) / rate as i64;
            while t >= next_fb {
                // Report everything up to the newest packet that has arrived by now.
                let now_rx = next_fb + offset;
                let last = sent.iter().rposition(|&(_, a)| a.is_some_and(|a| a <= now_rx));
                if let Some(last) = last.filter(|&l| l >= reported) {
                    let batch: Vec<Option<i64>> = sent[reported..=last].iter().map(|&(_, a)| a.filter(|&a| a <= now_rx)).collect();
                    for chunk_start in (0..batch.len()).step_by(200) {
                        let part = &batch[chunk_start..(chunk_start + 200).min(batch.len())];
                        let base = sent[reported + chunk_start].0;
                        let n = rtcp::write_twcc(&mut buf, 1, 2, base, fb_count, part).expect("fits");
                        fb_count = fb_count.wrapping_add(1);
                        for p in rtcp::parse(&buf[..n]) {
                            if let Ok(Packet::Twcc(fb)) = p {
                                est.on_feedback(&fb, next_fb);
                            }
                        }
                    }
                    reported = last + 1;
                }
                next_fb += 100_000;
            }
            while t >= next_sample {
                out.push((next_sample as f64 / 1e6, est.estimate(next_sample)));
                next_sample += 500_000;
            }
        }
        out
    }

    fn at(samples: &[(f64, u64)], s: f64) -> u64 {
        samples.iter().find(|&&(t, _)| t >= s).map(|&(_, e)| e).unwrap()
    }

    #[test]
    fn follows_a_capacity_step_down_and_up() {
        // 2 Mbit/s for 15 s, 500 kbit/s for 15 s, 2 Mbit/s again.
        let cap = |t: i64| if (15_000_000..30_000_000).contains(&t) { 500_000 } else { 2_000_000 };
        let s = simulate(cap, 60);
        let fmt = || s.iter().map(|(t, e)| format!("{t}:{}", e / 1000)).collect::<Vec<_>>().join(" ");
        // Converges near 2 Mbit/s without running away.
        let e14 = at(&s, 14.0);
        assert!((1_300_000..=2_600_000).contains(&e14), "before the drop: {}", fmt());
        // Falls below 600 kbit/s within 3 s of the drop, and stays in a sane band.
        let fell = s.iter().find(|&&(t, e)| t >= 15.0 && e < 600_000).map(|&(t, _)| t);
        assert!(fell.is_some_and(|t| t <= 18.0), "fell at {fell:?}: {}", fmt());
        for &(t, e) in s.iter().filter(|&&(t, _)| (19.0..30.0).contains(&t)) {
            assert!((200_000..=700_000).contains(&e), "at {t}: {e}: {}", fmt());
        }
        // Recovers upward when capacity returns.
        let e30 = at(&s, 30.0);
        let e45 = at(&s, 45.0);
        let e60 = s.last().unwrap().1;
        assert!(e45 > 2 * e30 && e45 >= 1_000_000, "recovering: {}", fmt());
        assert!(e60 >= 1_400_000, "recovered: {}", fmt());
    }

    #[test]
    fn remb_caps_and_expires() {
        let mut e = Estimator::new(Config::default());
        assert_eq!(e.estimate(0), 1_000_000);
        e.on_remb(300_000, 0);
        assert_eq!(e.estimate(1_000_000), 300_000);
        assert_eq!(e.estimate(6_000_000), 1_000_000, "stale REMB ignored");
    }

    #[test]
    fn loss_decreases_and_unknown_results_are_ignored() {
        let mut e = Estimator::new(Config::default());
        for s in 0..100u16 {
            e.on_sent(s, 1000, s as i64 * 1000);
        }
        assert!(!e.on_result(5000, Some(0)), "never sent");
        for s in 0..100u16 {
            let arrival = if s % 4 == 0 { None } else { Some(50_000 + s as i64 * 1000) };
            assert!(e.on_result(s, arrival));
        }
        assert!(!e.on_result(1, Some(1)), "already reported");
        e.update(75, 25, 200_000);
        assert_eq!(e.signal(), Signal::Overuse);
        assert!(e.estimate(200_000) < 1_000_000);
        assert!((e.loss() - 0.25).abs() < 1e-9);
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let mut e = Estimator::new(Config::default());
        for (i, &t) in [i64::MIN, -1, 0, 1, i64::MAX].iter().enumerate() {
            e.on_sent(i as u16, usize::MAX, t);
        }
        for (i, &a) in [i64::MAX, i64::MIN, 0, -5, 7].iter().enumerate() {
            e.on_result(i as u16, Some(a));
        }
        e.update(5, 0, i64::MIN);
        e.update(5, 0, i64::MAX);
        e.on_remb(u64::MAX, i64::MIN);
        let _ = (e.estimate(i64::MAX), e.acked_bps(), e.queuing_delay_us());
    }
}
