//! RFC 6464 client-to-mixer audio level, and a dominant-speaker detector over it.
//!
//! [`audio_level`] finds the extension with a given id in an RTP packet's header extensions, in either
//! the one-byte (RFC 8285 §4.2, profile 0xBEDE) or the two-byte form (§4.3, profile 0x100X), without
//! touching the payload (so it works on SRTP-decrypted or still-encrypted packets: header extensions
//! are not encrypted by plain SRTP). [`DominantSpeaker`] keeps, per speaker, the loudness summed over a
//! sliding window of time buckets and names the loudest, with hysteresis so it does not flap.

/// The voice-activity flag and level (0 = 0 dBov, loudest; 127 = -127 dBov, silence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The V bit: the sender's voice activity detection says this is speech.
    pub voice: bool,
    /// -dBov, 0..=127.
    pub level: u8,
}

/// Finds header extension `id` (1..=14 for one-byte, 1..=255 for two-byte) in an RTP packet.
pub fn find_extension(rtp: &[u8], id: u8) -> Option<&[u8]> {
    if rtp.len() < 12 || rtp[0] >> 6 != 2 || rtp[0] & 0x10 == 0 || id == 0 {
        return None;
    }
    let at = 12 + 4 * (rtp[0] & 0x0F) as usize;
    let hdr = rtp.get(at..at + 4)?;
    let profile = u16::from_be_bytes([hdr[0], hdr[1]]);
    let words = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    let ext = rtp.get(at + 4..at + 4 + words * 4)?;
    let mut i = 0;
    if profile == 0xBEDE {
        while i < ext.len() {
            let b = ext[i];
            let eid = b >> 4;
            if eid == 0 {
                i += 1; // padding
                continue;
            }
            if eid == 15 {
                return None; // stop: the rest is not to be parsed
            }
            let len = (b & 0x0F) as usize + 1;
            let data = ext.get(i + 1..i + 1 + len)?;
            if eid == id {
                return Some(data);
            }
            i += 1 + len;
        }
    } else if profile & 0xFFF0 == 0x1000 {
        while i < ext.len() {
            let eid = ext[i];
            if eid == 0 {
                i += 1;
                continue;
            }
            let len = *ext.get(i + 1)? as usize;
            let data = ext.get(i + 2..i + 2 + len)?;
            if eid == id {
                return Some(data);
            }
            i += 2 + len;
        }
    }
    None
}

/// The RFC 6464 audio level in extension `id` of an RTP packet, if present.
pub fn audio_level(rtp: &[u8], id: u8) -> Option<AudioLevel> {
    let b = *find_extension(rtp, id)?.first()?;
    Some(AudioLevel { voice: b & 0x80 != 0, level: b & 0x7F })
}

/// Tuning.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Levels at or above this (quieter) count as silence.
    pub silence_level: u8,
    /// Length of one bucket.
    pub bucket_ms: u64,
    /// A challenger must be this much louder than the current speaker to take over.
    pub switch_ratio: f64,
    /// Least time between two changes.
    pub min_hold_ms: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config { silence_level: 70, bucket_ms: 100, switch_ratio: 1.3, min_hold_ms: 500 }
    }
}

/// Buckets per window (window = `BUCKETS * bucket_ms`).
pub const BUCKETS: usize = 10;

#[derive(Clone, Copy, Default)]
struct Speaker {
    id: u32,
    live: bool,
    sums: [u32; BUCKETS],
    epochs: [u64; BUCKETS],
}

/// Dominant-speaker detector for one room (or one worker's view of it).
pub struct DominantSpeaker {
    cfg: Config,
    speakers: Box<[Speaker]>,
    current: Option<u32>,
    last_change_ms: Option<u64>,
}

impl DominantSpeaker {
    /// A detector for up to `capacity` speakers (allocated now).
    pub fn new(capacity: usize, cfg: Config) -> DominantSpeaker {
        DominantSpeaker { cfg, speakers: vec![Speaker::default(); capacity.max(1)].into_boxed_slice(), current: None, last_change_ms: None }
    }

    fn epoch(&self, now_ms: u64) -> u64 {
        now_ms / self.cfg.bucket_ms.max(1) + BUCKETS as u64
    }

    /// Records one level sample of `id`. Returns false if the detector is full and `id` is new.
    pub fn add(&mut self, id: u32, level: AudioLevel, now_ms: u64) -> bool {
        let e = self.epoch(now_ms);
        let slot = match self.speakers.iter().position(|s| s.live && s.id == id) {
            Some(i) => i,
            None => match self.speakers.iter().position(|s| !s.live) {
                Some(i) => {
                    self.speakers[i] = Speaker { id, live: true, ..Speaker::default() };
                    i
                }
                None => return false,
            },
        };
        let loud = if level.level >= self.cfg.silence_level { 0 } else { (self.cfg.silence_level - level.level) as u32 };
        let s = &mut self.speakers[slot];
        let b = (e % BUCKETS as u64) as usize;
        if s.epochs[b] != e {
            s.epochs[b] = e;
            s.sums[b] = 0;
        }
        s.sums[b] = s.sums[b].saturating_add(loud);
        true
    }

    /// Forgets a speaker.
    pub fn remove(&mut self, id: u32) {
        for s in self.speakers.iter_mut().filter(|s| s.id == id) {
            s.live = false;
        }
        if self.current == Some(id) {
            self.current = None;
        }
    }

    fn score(&self, s: &Speaker, now_ms: u64) -> u64 {
        let e = self.epoch(now_ms);
        s.sums.iter().zip(&s.epochs).filter(|(_, &ep)| ep + BUCKETS as u64 > e && ep <= e).map(|(&v, _)| v as u64).sum()
    }

    /// Re-evaluates and returns the dominant speaker (and whether it changed).
    pub fn update(&mut self, now_ms: u64) -> (Option<u32>, bool) {
        let mut best: Option<(u32, u64)> = None;
        let mut current_score = 0;
        for s in self.speakers.iter().filter(|s| s.live) {
            let sc = self.score(s, now_ms);
            if Some(s.id) == self.current {
                current_score = sc;
            }
            if sc > 0 && best.is_none_or(|(_, b)| sc > b) {
                best = Some((s.id, sc));
            }
        }
        let Some((id, sc)) = best else { return (self.current, false) };
        if Some(id) == self.current {
            return (self.current, false);
        }
        let held = self.last_change_ms.is_some_and(|t| now_ms.saturating_sub(t) < self.cfg.min_hold_ms);
        let louder = current_score == 0 || sc as f64 > current_score as f64 * self.cfg.switch_ratio;
        if self.current.is_none() || (!held && louder) {
            self.current = Some(id);
            self.last_change_ms = Some(now_ms);
            return (self.current, true);
        }
        (self.current, false)
    }

    /// The dominant speaker as of the last `update`.
    pub fn current(&self) -> Option<u32> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testutil::Rng;

    #[test]
    fn one_byte_extension() {
        // X=1, CC=0; 0xBEDE, 2 words: [id 3 len 1: 0xAA 0xBB] [id 1 len 0: 0x9E (V, level 30)] [pad] [pad]
        #[rustfmt::skip]
        let pkt = [
            0x90, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1,
            0xBE, 0xDE, 0, 2,
            0x31, 0xAA, 0xBB, 0x10, 0x9E, 0, 0, 0,
            0xDE, 0xAD,
        ];
        assert_eq!(audio_level(&pkt, 1), Some(AudioLevel { voice: true, level: 30 }));
        assert_eq!(find_extension(&pkt, 3), Some(&[0xAA, 0xBB][..]));
        assert_eq!(audio_level(&pkt, 2), None);
        let mut no_x = pkt;
        no_x[0] = 0x80;
        assert_eq!(audio_level(&no_x, 1), None);
    }

    #[test]
    fn two_byte_extension_after_csrcs() {
        // X=1, CC=1; 0x1000, 2 words: [pad] [id 20 len 1: 0x05 (no V, level 5)] [id 1 len 2: 1 2] [pad]
        #[rustfmt::skip]
        let pkt = [
            0x91, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1,
            0, 0, 0, 9,
            0x10, 0x00, 0, 2,
            0, 20, 1, 0x05, 1, 2, 1, 2,
        ];
        assert_eq!(audio_level(&pkt, 20), Some(AudioLevel { voice: false, level: 5 }));
        assert_eq!(find_extension(&pkt, 1), Some(&[1, 2][..]));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(99);
        let mut buf = [0u8; 64];
        for _ in 0..100_000 {
            let len = (rng.next_u64() % 64) as usize;
            rng.fill(&mut buf[..len]);
            if len > 0 {
                buf[0] = 0x90 | (buf[0] & 0x0F);
            }
            if len > 14 && rng.unit() < 0.5 {
                buf[12..14].copy_from_slice(if rng.unit() < 0.5 { &[0xBE, 0xDE] } else { &[0x10, 0x00] });
            }
            let _ = audio_level(&buf[..len], (rng.next_u64() % 16) as u8);
        }
    }

    #[test]
    fn follows_the_loudest() {
        let mut d = DominantSpeaker::new(8, Config::default());
        let quiet = AudioLevel { voice: false, level: 100 };
        let loud = AudioLevel { voice: true, level: 20 };
        let medium = AudioLevel { voice: true, level: 45 };
        // (speaker talking loud, from, to); others send silence or background.
        let script = [(1u32, 0u64, 3000u64), (2, 3000, 6000), (3, 6000, 9000), (1, 9000, 12_000)];
        let mut changes = Vec::new();
        for t in (0..12_000u64).step_by(20) {
            let talker = script.iter().find(|&&(_, a, b)| t >= a && t < b).unwrap().0;
            for id in 1..=4u32 {
                let l = if id == talker {
                    loud
                } else if id == 4 {
                    medium // someone with background noise: never loudest
                } else {
                    quiet
                };
                assert!(d.add(id, l, t));
            }
            if let (Some(id), true) = d.update(t) {
                changes.push((t, id));
            }
        }
        let ids: Vec<u32> = changes.iter().map(|c| c.1).collect();
        assert_eq!(ids, vec![1, 2, 3, 1], "{changes:?}");
        for (i, &(t, _)) in changes.iter().enumerate().skip(1) {
            let start = script[i].1;
            assert!(t >= start && t < start + 1000, "change {i} at {t}, talk started at {start}");
        }
        // A short interjection does not take over.
        let mut d2 = DominantSpeaker::new(2, Config::default());
        for t in (0..3000u64).step_by(20) {
            d2.add(1, loud, t);
            d2.add(2, if (1500..1600).contains(&t) { loud } else { quiet }, t);
            d2.update(t);
            assert_eq!(d2.current(), Some(1), "at {t}");
        }
        let mut full = DominantSpeaker::new(1, Config::default());
        assert!(full.add(1, loud, 0));
        assert!(!full.add(2, loud, 0), "full");
        full.remove(1);
        assert!(full.add(2, loud, 0));
    }
}
