//! Receive-to-send latency inside the engine, per worker. The worker owns its histogram (no sharing);
//! the control thread asks for a [`LatencySummary`] through the worker's command queue.

use std::time::Duration;

use hdrhistogram::Histogram;
use switchyard_protocol::LatencySummary;

/// Upper bounds of the exported buckets, nanoseconds: 5 µs to 100 ms.
pub const BUCKETS_NS: [u64; 14] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 25_000_000, 50_000_000, 100_000_000,
];

/// A latency histogram that never allocates after construction: values above its range are clamped.
pub struct Latency {
    hist: Histogram<u64>,
    sum_ns: u64,
}

impl Latency {
    const MAX_NS: u64 = 10_000_000_000;

    /// An empty histogram covering 1 ns to 10 s with 3 significant digits.
    pub fn new() -> Latency {
        // The bounds are constants that hdrhistogram accepts; a failure here is a programming error.
        let hist = Histogram::new_with_bounds(1, Self::MAX_NS, 3).unwrap_or_else(|_| unreachable!());
        Latency { hist, sum_ns: 0 }
    }

    /// Records one packet's time in the engine.
    #[inline]
    pub fn record(&mut self, d: Duration) {
        let ns = (d.as_nanos() as u64).clamp(1, Self::MAX_NS);
        // In range by the clamp above, so this cannot fail or resize.
        let _ = self.hist.record(ns);
        self.sum_ns = self.sum_ns.wrapping_add(ns);
    }

    /// Percentiles and cumulative buckets for the Stats reply.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.hist;
        let mut buckets = Vec::with_capacity(BUCKETS_NS.len());
        for le in BUCKETS_NS {
            buckets.push((le, h.count_between(0, le)));
        }
        LatencySummary {
            count: h.len(),
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            sum_ns: self.sum_ns,
            buckets,
        }
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reflects_samples() {
        let mut l = Latency::new();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary();
        assert_eq!(s.count, 100);
        assert!((49_000..=51_000).contains(&s.p50_ns), "p50 {}", s.p50_ns);
        assert!(s.max_ns >= 99_000);
        // 5 µs bucket holds 1..=5 µs, 10 µs bucket 1..=10 µs (histogram precision: 3 digits).
        assert_eq!(s.buckets[0], (5_000, 5));
        assert_eq!(s.buckets[1], (10_000, 10));
        assert_eq!(s.buckets.last().map(|b| b.1), Some(100));
    }
}
