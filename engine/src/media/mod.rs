//! Sans-I/O building blocks for media quality (issue 7): retransmission, loss detection, keyframe
//! requests, simulcast rewriting and layer choice, RTCP, bandwidth estimation and audio levels.
//!
//! One file per concept. Every block follows the packet path's rules:
//!
//! - no heap allocation per packet in steady state: rings and arrays are sized on construction;
//! - no panic on any input: parsers return `None`/skip what they do not understand;
//! - time is passed in (`u64` milliseconds, or microseconds where stated), never read from the clock;
//! - `&mut self` APIs, no interior mutability, no locks.
//!
//! The forwarder (`crate::forwarder`, state in `crate::streams`) wires them into the packet path;
//! `docs/media-quality.md` says how.

pub mod audio_level;
pub mod estimator;
pub mod keyframe;
pub mod layer_selector;
pub mod nack_cache;
pub mod nack_generator;
pub mod rtcp;
pub mod seq_rewriter;

/// `a` is newer than `b` in 16-bit sequence space (RFC 3550 arithmetic; a distance of exactly half
/// the space counts as newer).
#[inline]
pub fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) <= 0x8000
}

/// Signed distance `a - b` in 16-bit sequence space, in -32768..=32767.
#[inline]
pub fn seq_diff(a: u16, b: u16) -> i32 {
    a.wrapping_sub(b) as i16 as i32
}

/// Signed distance `a - b` in 32-bit RTP timestamp space.
#[inline]
pub fn ts_diff(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

#[cfg(test)]
pub(crate) mod testutil {
    /// A tiny deterministic PRNG (xorshift64*) so tests need no extra dependency.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        /// Uniform in [0, 1).
        pub(crate) fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
        pub(crate) fn fill(&mut self, b: &mut [u8]) {
            for x in b {
                *x = self.next_u64() as u8;
            }
        }
    }
}

/// Counts heap allocations per thread in this crate's unit-test binary (tests run on parallel threads,
/// so a per-thread count is what one test can assert on). Passes everything through to `System`.
#[cfg(test)]
pub(crate) mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    struct Counting;

    fn bump() {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: delegates to the system allocator; only counts calls.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            bump();
            System.alloc(l)
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            bump();
            System.alloc_zeroed(l)
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            System.dealloc(p, l)
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            bump();
            System.realloc(p, l, n)
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations made by this thread so far.
    pub(crate) fn allocations() -> u64 {
        COUNT.with(|c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_arithmetic_wraps() {
        assert!(seq_newer(0, 65535));
        assert!(!seq_newer(65535, 0));
        assert!(seq_newer(10, 5));
        assert!(!seq_newer(5, 5));
        assert_eq!(seq_diff(2, 65534), 4);
        assert_eq!(seq_diff(65534, 2), -4);
        assert_eq!(ts_diff(5, u32::MAX - 4), 10);
    }

    /// Every block's per-packet calls, in steady state, make no heap allocation.
    #[test]
    fn steady_state_does_not_allocate() {
        use super::alloc_count::allocations;
        use super::audio_level::{audio_level, DominantSpeaker};
        use super::estimator::Estimator;
        use super::keyframe::{KeyframeRequester, Kind};
        use super::layer_selector::{Layer, LayerSelector};
        use super::nack_cache::NackCache;
        use super::nack_generator::NackGenerator;
        use super::rtcp::{self, Packet, ReportBlock, SenderInfo};
        use super::seq_rewriter::SeqRewriter;

        // Construction allocates; everything after `before` must not.
        let mut cache = NackCache::new(1024, 1500);
        let mut gen = NackGenerator::new(Default::default());
        let mut kf = KeyframeRequester::new(500);
        let mut rw = SeqRewriter::new(1, 0, 0, 90_000);
        let mut est = Estimator::new(Default::default());
        let mut sel = LayerSelector::new(Default::default());
        sel.set_layers(&[
            Layer { ssrc: 10, height: 180, bitrate_bps: 150_000, active: true },
            Layer { ssrc: 11, height: 720, bitrate_bps: 1_500_000, active: true },
        ]);
        let mut ds = DominantSpeaker::new(16, Default::default());
        let mut rtp = [0u8; 1200];
        rtp[..20].copy_from_slice(&[0x90, 111, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 0xBE, 0xDE, 0, 1, 0x10, 0x9E, 0, 0]);
        let mut nacks = [0u16; 64];
        let mut rtcp_buf = [0u8; 1500];
        let mut arrivals = [None; 50];
        rw.select(Some(10));

        let before = allocations();
        for i in 0..10_000u32 {
            let now = i as u64 * 5;
            let seq = (i as u16).wrapping_add(60_000);
            if i % 20 != 7 {
                gen.on_packet(seq, now);
            }
            let n = gen.poll(now, 50, &mut nacks);
            if let Some(r) = rw.rewrite(10, seq, i * 3000, i % 100 == 0, now) {
                rtp[2..4].copy_from_slice(&r.seq.to_be_bytes());
                cache.put(r.seq, &rtp).unwrap();
                est.on_sent(r.seq, rtp.len(), now as i64 * 1000);
                arrivals[i as usize % 50] = Some(now as i64 * 1000 + 30_000);
            }
            for &s in &nacks[..n] {
                let _ = cache.get(s);
            }
            if n > 0 {
                let (len, _) = rtcp::write_nack(&mut rtcp_buf, 1, 10, &nacks[..n]).unwrap();
                for p in rtcp::parse(&rtcp_buf[..len]) {
                    if let Ok(Packet::Nack(nk)) = p {
                        nk.lost().for_each(|s| {
                            let _ = cache.get(s);
                        });
                    }
                }
            }
            let _ = kf.request(Kind::Pli, now);
            let _ = kf.poll(now);
            if i % 50 == 49 {
                let base = rw_base(i);
                let len = rtcp::write_twcc(&mut rtcp_buf, 1, 10, base, 0, &arrivals).unwrap();
                let rb = ReportBlock {
                    ssrc: 10,
                    fraction_lost: 0,
                    cumulative_lost: 0,
                    highest_seq: 0,
                    jitter: 0,
                    last_sr: 0,
                    delay_since_last_sr: 0,
                };
                let sr = SenderInfo { ssrc: 1, ntp: 0, rtp_ts: 0, packet_count: 0, octet_count: 0 };
                let sr_len = rtcp::write_sr(&mut rtcp_buf[len..], &sr, &[rb]).unwrap();
                for p in rtcp::parse(&rtcp_buf[..len + sr_len]) {
                    match p {
                        Ok(Packet::Twcc(fb)) => est.on_feedback(&fb, now as i64 * 1000),
                        Ok(Packet::SenderReport(s)) => s.blocks().for_each(drop),
                        _ => {}
                    }
                }
                let _ = sel.select(est.estimate(now as i64 * 1000), 720, now);
            }
            if let Some(l) = audio_level(&rtp, 1) {
                ds.add(i % 4, l, now);
            }
            let _ = ds.update(now);
        }
        assert_eq!(allocations() - before, 0, "heap allocations in steady state");
        // The counter does count.
        let v = std::hint::black_box(Vec::<u8>::with_capacity(16));
        assert!(allocations() > before, "counting allocator inactive");
        drop(v);

        fn rw_base(i: u32) -> u16 {
            // The rewriter started at out seq 0 on packet 0 (a keyframe): out seq = i.
            (i - 49) as u16
        }
    }

    /// Random calls with random arguments into every stateful block: nothing panics, and the invariants
    /// that must hold whatever the input do.
    #[test]
    fn random_inputs_never_panic() {
        use super::audio_level::{AudioLevel, DominantSpeaker};
        use super::keyframe::{KeyframeRequester, Kind};
        use super::layer_selector::{Layer, LayerSelector};
        use super::nack_cache::NackCache;
        use super::nack_generator::{Config, NackGenerator};
        use super::seq_rewriter::SeqRewriter;
        use super::testutil::Rng;

        let mut rng = Rng(0xFEED);
        let mut cache = NackCache::new(64, 32);
        let mut gen = NackGenerator::new(Config { capacity: 16, max_gap: 40, ..Config::default() });
        let mut kf = KeyframeRequester::new(500);
        let mut rw = SeqRewriter::new(7, 65530, u32::MAX - 10, 90_000);
        let mut sel = LayerSelector::new(Default::default());
        let mut ds = DominantSpeaker::new(3, Default::default());
        let mut out = [0u16; 8];
        let mut bytes = [0u8; 40];
        let mut now = 0u64;
        for _ in 0..200_000 {
            let r = rng.next_u64();
            now = now.wrapping_add(r % 50);
            let seq = (rng.next_u64() % 128) as u16 ^ if r & 1 == 0 { 0 } else { 0xFFC0 };
            match r % 11 {
                0 => {
                    let len = (r >> 8) as usize % 40;
                    rng.fill(&mut bytes[..len]);
                    if cache.put(seq, &bytes[..len]).is_ok() {
                        assert_eq!(cache.get(seq), Some(&bytes[..len]));
                    }
                }
                1 => {
                    if let Some(b) = cache.get(seq) {
                        assert!(b.len() <= 32);
                    }
                }
                2 => {
                    gen.on_packet(seq, now);
                }
                3 => {
                    let n = gen.poll(now, r >> 60, &mut out);
                    assert!(n <= out.len());
                }
                4 => {
                    let _ = kf.request(if r & 2 == 0 { Kind::Pli } else { Kind::Fir }, now);
                }
                5 => {
                    let _ = kf.poll(now);
                    if r & 4 == 0 {
                        kf.on_keyframe();
                    }
                }
                6 => rw.select(if r & 8 == 0 { None } else { Some((r >> 4) as u32 % 3) }),
                7 => {
                    let _ = rw.rewrite((r >> 4) as u32 % 3, seq, rng.next_u64() as u32, r & 16 == 0, now);
                    let _ = rw.skip((r >> 4) as u32 % 3, seq);
                }
                8 => {
                    let layers: Vec<Layer> = (0..(r >> 5) % 6)
                        .map(|i| Layer {
                            ssrc: i as u32,
                            height: rng.next_u64() as u16,
                            bitrate_bps: rng.next_u64() >> 20,
                            active: r & 32 == 0,
                        })
                        .collect();
                    sel.set_layers(&layers);
                    sel.update_layer((r >> 7) as usize % 6, rng.next_u64(), true);
                }
                9 => {
                    let _ = sel.select(rng.next_u64() >> (r % 64), rng.next_u64() as u16, now);
                }
                _ => {
                    ds.add((r >> 8) as u32 % 5, AudioLevel { voice: true, level: (r >> 16) as u8 }, now);
                    let _ = ds.update(now);
                    if r & 64 == 0 {
                        ds.remove((r >> 8) as u32 % 5);
                    }
                }
            }
        }
    }
}
