//! Retransmission cache: the last N packets of one stream, by sequence number.
//!
//! A ring of `capacity` preallocated slots of `slot_size` bytes, indexed by `seq % capacity`. Each slot
//! remembers the full sequence number it holds, so a lookup for a packet that was overwritten (or never
//! stored) misses instead of returning the wrong packet. Storing and looking up never allocate.
//!
//! Packets go in with non-temporal stores (on x86-64): a slot is rewritten a ring's length later
//! and read only when a subscriber asks for a retransmission, so an ordinary copy would first read
//! every cache line of the slot from memory (it is long gone from the caches) and then push the
//! state of other rooms out of the caches with data that will most likely never be read. Slots are
//! cache-line aligned for this.
//!
//! The engine keeps one per layer of a video track in a `PacketStore` (`streams.rs`): the publisher's
//! plaintext packets by the publisher's sequence numbers, shared by the subscriptions on a worker; a
//! subscriber's NACK names *its* sequence numbers, which its `SentRing` maps back to these.

use super::seq_newer;

/// Per-stream ring of recent packets.
pub struct NackCache {
    /// Largest packet kept.
    slot_size: usize,
    /// Cache lines per slot (`slot_size` rounded up).
    slot_lines: usize,
    data: Box<[Line]>,
    /// Per slot: (valid, seq, len).
    meta: Box<[Slot]>,
    /// Newest sequence number stored, if any.
    highest: Option<u16>,
}

/// One cache line of slot memory; slots start on a line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; LINE]);

const LINE: usize = 64;

#[derive(Clone, Copy, Default)]
struct Slot {
    valid: bool,
    seq: u16,
    len: u16,
}

/// Why `put` refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutError {
    /// Larger than a slot.
    TooLarge,
    /// Older than everything the ring can hold relative to the newest stored packet.
    TooOld,
}

impl NackCache {
    /// A cache of `capacity` packets (rounded up to a power of two, at most 32768) of up to `slot_size`
    /// bytes each. All memory is allocated here.
    pub fn new(capacity: usize, slot_size: usize) -> NackCache {
        let capacity = capacity.clamp(1, 32768).next_power_of_two();
        let slot_size = slot_size.clamp(1, u16::MAX as usize);
        let slot_lines = slot_size.div_ceil(LINE);
        NackCache {
            slot_size,
            slot_lines,
            data: vec![Line([0; LINE]); capacity * slot_lines].into_boxed_slice(),
            meta: vec![Slot::default(); capacity].into_boxed_slice(),
            highest: None,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// The newest sequence number stored.
    pub fn highest(&self) -> Option<u16> {
        self.highest
    }

    #[inline]
    fn index(&self, seq: u16) -> usize {
        seq as usize & (self.meta.len() - 1)
    }

    /// Slot `i`'s memory.
    #[inline]
    fn slot(&self, i: usize) -> &[u8] {
        let lines = &self.data[i * self.slot_lines..(i + 1) * self.slot_lines];
        // SAFETY: `Line` is 64 plain bytes with no padding, so its array is as many bytes.
        unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<u8>(), lines.len() * LINE) }
    }

    #[inline]
    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let lines = &mut self.data[i * self.slot_lines..(i + 1) * self.slot_lines];
        // SAFETY: as in `slot`; the borrow is exclusive.
        unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), lines.len() * LINE) }
    }

    /// Stores packet `seq`. A packet newer than the newest invalidates the slots it skips over (those
    /// sequence numbers were lost, and their slots hold packets `capacity` older).
    pub fn put(&mut self, seq: u16, bytes: &[u8]) -> Result<(), PutError> {
        if bytes.len() > self.slot_size {
            return Err(PutError::TooLarge);
        }
        let cap = self.meta.len();
        match self.highest {
            Some(h) if seq_newer(seq, h) => {
                let jump = seq.wrapping_sub(h) as usize;
                if jump >= cap {
                    self.meta.iter_mut().for_each(|m| m.valid = false);
                } else {
                    // Invalidate the skipped-over slots h+1 .. seq-1.
                    for k in 1..jump {
                        let i = self.index(h.wrapping_add(k as u16));
                        self.meta[i].valid = false;
                    }
                }
                self.highest = Some(seq);
            }
            Some(h) => {
                // Late (reordered) or duplicate packet: keep it only if the ring still covers it.
                if h.wrapping_sub(seq) as usize >= cap {
                    return Err(PutError::TooOld);
                }
            }
            None => self.highest = Some(seq),
        }
        let i = self.index(seq);
        copy_streaming(self.slot_mut(i), bytes);
        self.meta[i] = Slot { valid: true, seq, len: bytes.len() as u16 };
        Ok(())
    }

    /// The stored packet `seq`, if the ring still holds it.
    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        let h = self.highest?;
        if seq_newer(seq, h) || h.wrapping_sub(seq) as usize >= self.meta.len() {
            return None;
        }
        let i = self.index(seq);
        let m = self.meta[i];
        if !m.valid || m.seq != seq {
            return None;
        }
        Some(&self.slot(i)[..m.len as usize])
    }

    /// Forgets everything (e.g. the stream's SSRC changed).
    pub fn clear(&mut self) {
        self.meta.iter_mut().for_each(|m| m.valid = false);
        self.highest = None;
    }
}

/// Copies `src` to the start of `dst` with non-temporal stores where the CPU has them and `dst` is
/// 16-byte aligned with room for `src` rounded up to 16 bytes (the bytes after `src` up to there
/// get zeroes); an ordinary copy otherwise. `dst` must be at least as long as `src`.
#[inline]
fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let chunks = src.len().div_ceil(16);
        if (dst.as_ptr() as usize).is_multiple_of(16) && dst.len() >= chunks * 16 {
            let d = dst.as_mut_ptr().cast::<__m128i>();
            let full = src.len() / 16;
            // SAFETY: SSE2 is part of x86-64. The first `full` 16-byte loads read inside `src`;
            // every store writes one aligned 16-byte chunk inside `dst` (checked above). The fence
            // orders the non-temporal stores before any later access to `dst`, as the intrinsic
            // requires.
            unsafe {
                let s = src.as_ptr().cast::<__m128i>();
                for k in 0..full {
                    _mm_stream_si128(d.add(k), _mm_loadu_si128(s.add(k)));
                }
                if full < chunks {
                    let mut tail = [0u8; 16];
                    tail[..src.len() - full * 16].copy_from_slice(&src[full * 16..]);
                    _mm_stream_si128(d.add(full), _mm_loadu_si128(tail.as_ptr().cast::<__m128i>()));
                }
                _mm_sfence();
            }
            return;
        }
    }
    dst[..src.len()].copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> [u8; 4] {
        let s = seq.to_be_bytes();
        [s[0], s[1], 0xAB, 0xCD]
    }

    #[test]
    fn packets_of_every_length_come_back_intact() {
        // Lengths around every 16-byte boundary (the streaming copy's chunk) up to a full slot.
        let mut c = NackCache::new(64, 1500);
        let pattern = |seq: u16, len: usize| (0..len).map(|k| (k as u8).wrapping_mul(31) ^ seq as u8).collect::<Vec<u8>>();
        for len in 0..=1500usize {
            let seq = len as u16;
            c.put(seq, &pattern(seq, len)).unwrap();
            assert_eq!(c.get(seq), Some(&pattern(seq, len)[..]), "length {len}");
            if len >= 1 {
                // The previous slot was not touched by this one's copy.
                let p = seq - 1;
                assert_eq!(c.get(p), Some(&pattern(p, len - 1)[..]), "neighbour of length {len}");
            }
        }
    }

    #[test]
    fn streaming_copy_falls_back_when_it_cannot_stream() {
        let src: Vec<u8> = (1..=37u8).collect();
        // Misaligned destination, and an aligned one too short for the rounded-up copy.
        let mut lines = [Line([0xEE; LINE]); 2];
        // SAFETY: as in NackCache::slot_mut.
        let bytes = unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), 2 * LINE) };
        copy_streaming(&mut bytes[3..40], &src);
        assert_eq!(&bytes[3..40], &src[..]);
        assert_eq!(bytes[2], 0xEE);
        assert_eq!(bytes[40], 0xEE);
        copy_streaming(&mut bytes[64..101], &src);
        assert_eq!(&bytes[64..101], &src[..]);
        assert_eq!(bytes[101], 0xEE, "no rounded-up tail when it would not fit");
        // Room for the rounded-up copy: the tail is zero-filled up to the 16-byte boundary only.
        copy_streaming(&mut bytes[64..128], &src);
        assert_eq!(&bytes[64..101], &src[..]);
        assert!(bytes[101..112].iter().all(|&b| b == 0));
        assert!(bytes[112..128].iter().all(|&b| b == 0xEE));
    }

    #[test]
    fn hits_and_misses() {
        let mut c = NackCache::new(1024, 1500);
        assert_eq!(c.capacity(), 1024);
        assert_eq!(c.get(5), None, "empty");
        for s in 100..200u16 {
            c.put(s, &pkt(s)).unwrap();
        }
        assert_eq!(c.get(150), Some(&pkt(150)[..]));
        assert_eq!(c.get(99), None, "never seen");
        assert_eq!(c.get(200), None, "not yet seen");
        // Push far ahead: old ones are too old / overwritten.
        for s in 200..1200u16 {
            c.put(s, &pkt(s)).unwrap();
        }
        assert_eq!(c.get(150), None, "too old (overwritten by 1174)");
        assert_eq!(c.get(175), None, "just outside the window");
        assert_eq!(c.get(176), Some(&pkt(176)[..]), "oldest still held");
        assert_eq!(c.get(1199), Some(&pkt(1199)[..]));
        assert_eq!(c.put(100, &pkt(100)), Err(PutError::TooOld));
        assert_eq!(c.put(1, &[0u8; 1501]), Err(PutError::TooLarge));
    }

    #[test]
    fn gaps_do_not_return_stale_packets() {
        let mut c = NackCache::new(16, 100);
        for s in 0..16u16 {
            c.put(s, &pkt(s)).unwrap();
        }
        // 16..=19 lost; 20 arrives. Slots of 16..19 (held 0..3) must now miss, not return 0..3.
        c.put(20, &pkt(20)).unwrap();
        for s in 16..20u16 {
            assert_eq!(c.get(s), None, "lost {s}");
        }
        assert_eq!(c.get(4), None, "overwritten by 20");
        assert_eq!(c.get(5), Some(&pkt(5)[..]));
        // A late 17 is still accepted and found.
        c.put(17, &pkt(17)).unwrap();
        assert_eq!(c.get(17), Some(&pkt(17)[..]));
        // A big jump clears everything.
        c.put(1000, &pkt(1000)).unwrap();
        assert_eq!(c.get(17), None);
        assert_eq!(c.get(1000), Some(&pkt(1000)[..]));
    }

    #[test]
    fn wraps_at_65535() {
        let mut c = NackCache::new(128, 100);
        for i in 0..100u32 {
            let s = (65500 + i) as u16;
            c.put(s, &pkt(s)).unwrap();
        }
        // 65500+99 = 65599 -> 63.
        assert_eq!(c.highest(), Some(63));
        assert_eq!(c.get(65535), Some(&pkt(65535)[..]));
        assert_eq!(c.get(0), Some(&pkt(0)[..]));
        assert_eq!(c.get(63), Some(&pkt(63)[..]));
        assert_eq!(c.get(65500), Some(&pkt(65500)[..]));
        assert_eq!(c.get(65499), None, "never seen");
        assert_eq!(c.get(63u16.wrapping_sub(128)), None, "too old across the wrap");
        assert_eq!(c.get(64), None, "newer than newest");
        c.clear();
        assert_eq!(c.get(63), None);
    }
}
