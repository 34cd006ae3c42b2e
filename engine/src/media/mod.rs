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
//! None of this is wired into the forwarder yet; `docs/media-quality.md` names the hook points.

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
}
