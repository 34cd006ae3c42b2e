//! RTP helpers for the packet path: header layout, the header-extension id remap done at ingest,
//! keyframe detection (VP8, H264), RFC 3550 receiver statistics, the TWCC arrival recorder and the
//! send-cap token bucket. Everything works in place on a packet or on fixed state; nothing allocates
//! after construction and nothing panics on any input.

use std::time::Instant;

use switchyard_protocol::{HeaderExtIds, OUT_EXT_AUDIO_LEVEL, OUT_EXT_TWCC, OUT_EXT_UNUSED};

use crate::media::rtcp::{write_twcc, ReportBlock};
use crate::media::{seq_diff, seq_newer};

/// Sequence number (bytes 2-3) of an RTP packet of at least 12 bytes.
#[inline]
pub fn seq(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[2], p[3]])
}

/// Timestamp (bytes 4-7).
#[inline]
pub fn timestamp(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[4], p[5], p[6], p[7]])
}

/// SSRC (bytes 8-11).
#[inline]
pub fn ssrc(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[8], p[9], p[10], p[11]])
}

/// Where the payload of an RTP packet is: `(start, end)` (after the CSRCs and header extension,
/// before the padding), or `None` if the lengths do not fit.
pub fn payload_range(p: &[u8]) -> Option<(usize, usize)> {
    if p.len() < 12 {
        return None;
    }
    let mut at = 12 + 4 * (p[0] & 0x0F) as usize;
    if p[0] & 0x10 != 0 {
        let h = p.get(at..at + 4)?;
        at += 4 + 4 * u16::from_be_bytes([h[2], h[3]]) as usize;
    }
    let mut end = p.len();
    if p[0] & 0x20 != 0 {
        let pad = *p.last()? as usize;
        end = end.checked_sub(pad)?;
    }
    (at <= end).then_some((at, end))
}

/// What [`remap_extensions`] found in a publisher's packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtInfo {
    /// The mid value: (offset, length) in the packet.
    pub mid: Option<(u16, u8)>,
    /// The rid (rtp-stream-id) value.
    pub rid: Option<(u16, u8)>,
    /// Offset of the 2-byte transport-wide sequence number.
    pub twcc: Option<u16>,
    /// The RFC 6464 audio level byte (V bit and level).
    pub audio_level: Option<u8>,
}

/// Reads the header extensions of a publisher's RTP packet with the ids it negotiated (`ids`) and
/// rewrites each element's id in place to the engine's canonical ones: audio level to
/// [`OUT_EXT_AUDIO_LEVEL`], transport-wide-cc to [`OUT_EXT_TWCC`], everything else to
/// [`OUT_EXT_UNUSED`]. Both the one-byte (RFC 8285 §4.2) and two-byte (§4.3) forms; a malformed
/// element ends the walk (what was before it is remapped).
pub fn remap_extensions(p: &mut [u8], ids: &HeaderExtIds) -> ExtInfo {
    let mut info = ExtInfo::default();
    if p.len() < 12 || p[0] & 0x10 == 0 {
        return info;
    }
    let at = 12 + 4 * (p[0] & 0x0F) as usize;
    let Some(h) = p.get(at..at + 4) else { return info };
    let profile = u16::from_be_bytes([h[0], h[1]]);
    let words = u16::from_be_bytes([h[2], h[3]]) as usize;
    let start = at + 4;
    let end = start + words * 4;
    if end > p.len() {
        return info;
    }
    let two_byte = profile & 0xFFF0 == 0x1000;
    if profile != 0xBEDE && !two_byte {
        return info;
    }
    let mut i = start;
    while i < end {
        let (id, len, data) = if two_byte {
            let id = p[i];
            if id == 0 {
                i += 1;
                continue;
            }
            let Some(&len) = p.get(i + 1) else { break };
            (id, len as usize, i + 2)
        } else {
            let b = p[i];
            let id = b >> 4;
            if id == 0 {
                i += 1;
                continue;
            }
            if id == 15 {
                break;
            }
            (id, (b & 0x0F) as usize + 1, i + 1)
        };
        if data + len > end {
            break;
        }
        let new_id = if id == ids.audio_level && ids.audio_level != 0 {
            if len >= 1 {
                info.audio_level = Some(p[data]);
            }
            OUT_EXT_AUDIO_LEVEL
        } else if id == ids.twcc && ids.twcc != 0 {
            if len == 2 {
                info.twcc = Some(data as u16);
            }
            OUT_EXT_TWCC
        } else {
            if id == ids.mid && ids.mid != 0 {
                info.mid = Some((data as u16, len as u8));
            } else if id == ids.rid && ids.rid != 0 {
                info.rid = Some((data as u16, len as u8));
            }
            OUT_EXT_UNUSED
        };
        if two_byte {
            p[i] = new_id;
        } else {
            p[i] = (new_id << 4) | (p[i] & 0x0F);
        }
        i = data + len;
    }
    info
}

/// The bytes of an [`ExtInfo`] value.
pub fn ext_value(p: &[u8], v: Option<(u16, u8)>) -> Option<&[u8]> {
    let (at, len) = v?;
    p.get(at as usize..at as usize + len as usize)
}

/// Offset of the 2-byte value of the element with `id` (one- or two-byte form), for stamping.
pub fn find_ext_offset(p: &[u8], id: u8) -> Option<usize> {
    let v = crate::media::audio_level::find_extension(p, id)?;
    if v.len() != 2 {
        return None;
    }
    Some(v.as_ptr() as usize - p.as_ptr() as usize)
}

/// Whether an RTP payload starts a keyframe, and the frame size when it is a VP8 keyframe.
///
/// VP8 (RFC 7741): payload descriptor with S=1 and PID=0, then the payload header's P bit clear and
/// the keyframe start code 9d 01 2a. H264 (RFC 6184): an IDR (5) or SPS (7) NAL unit, alone, in a
/// STAP-A, or the start of an FU-A.
pub fn keyframe(payload: &[u8]) -> (bool, Option<(u16, u16)>) {
    if let Some(size) = vp8_keyframe(payload) {
        return (true, Some(size));
    }
    (h264_keyframe(payload), None)
}

fn vp8_keyframe(p: &[u8]) -> Option<(u16, u16)> {
    let b0 = *p.first()?;
    // S set, PID 0, reserved bits clear.
    if b0 & 0x10 == 0 || b0 & 0x07 != 0 || b0 & 0x48 != 0 {
        return None;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        i = 2;
        if x & 0x80 != 0 {
            i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
    }
    let h = p.get(i..i + 10)?;
    if h[0] & 1 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3FFF;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3FFF;
    Some((w, ht))
}

fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    if b0 & 0x80 != 0 {
        return false;
    }
    let key = |t: u8| t == 5 || t == 7;
    match b0 & 0x1F {
        t @ 1..=23 => key(t),
        24 => {
            let mut i = 1;
            while i + 3 <= p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if key(p[i + 2] & 0x1F) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|&h| h & 0x80 != 0 && key(h & 0x1F)),
        _ => false,
    }
}

/// RFC 3550 (A.1, A.3, A.8) reception statistics of one incoming stream, for receiver reports.
#[derive(Debug, Clone, Default)]
pub struct RecvStats {
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    transit: Option<i64>,
    /// Interarrival jitter in timestamp units, ×16 (RFC 3550 A.8 integer form).
    jitter16: u64,
}

impl RecvStats {
    /// Records a packet received at `arrival_us` (any fixed origin).
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival_us: i64, clock_rate: u32) {
        if !self.started {
            self.started = true;
            self.base_seq = seq as u32;
            self.max_seq = seq;
        } else if seq_newer(seq, self.max_seq) {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
        }
        self.received = self.received.wrapping_add(1);
        // arrival_us * clock_rate / 10^6 without a 128-bit division (whole seconds, then the rest).
        let cr = clock_rate as i64;
        let arrival = (arrival_us / 1_000_000) * cr + (arrival_us % 1_000_000) * cr / 1_000_000;
        let transit = arrival.wrapping_sub(rtp_ts as i64);
        if let Some(prev) = self.transit {
            // Timestamps wrap at 32 bits: take the difference in that space.
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs() as u64;
            let j = self.jitter16 as i64 + d as i64 - ((self.jitter16 as i64 + 8) >> 4);
            self.jitter16 = j.max(0) as u64;
        }
        self.transit = Some(transit);
    }

    /// The extended highest sequence number received.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(self.max_seq as u32)
    }

    /// Packets received (including duplicates).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Whether any packet was received.
    pub fn started(&self) -> bool {
        self.started
    }

    /// A report block about `ssrc` (advances the fraction-lost interval). `last_sr`: the publisher's
    /// last SR (compact NTP) and its age in 1/65536 s.
    pub fn report(&mut self, ssrc: u32, last_sr: u32, dlsr: u32) -> ReportBlock {
        let ext = self.extended_max();
        let expected = ext.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = expected as i64 - self.received as i64;
        let expected_interval = expected.wrapping_sub(self.expected_prior) as i64;
        let received_interval = self.received.wrapping_sub(self.received_prior) as i64;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval - received_interval;
        let fraction = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        ReportBlock {
            ssrc,
            fraction_lost: fraction,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            highest_seq: ext,
            jitter: (self.jitter16 >> 4).min(u32::MAX as u64) as u32,
            last_sr,
            delay_since_last_sr: dlsr,
        }
    }
}

/// Arrival times of a publisher's packets by transport-wide sequence number, written out as TWCC
/// feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01) periodically.
pub struct TwccRecorder {
    base: Option<u16>,
    arrivals: Box<[Option<i64>]>,
    count: usize,
    fb_count: u8,
    /// An SSRC the peer sends: the feedback's media source (libwebrtc ignores transport feedback
    /// whose media SSRC is not one of its own).
    media: u32,
}

/// Most packets one TWCC feedback describes (the rest go in the next one).
const TWCC_MAX_PER_FEEDBACK: usize = 400;

impl TwccRecorder {
    /// A recorder for up to `capacity` packets between two feedbacks (allocated now).
    pub fn new(capacity: usize) -> TwccRecorder {
        TwccRecorder { base: None, arrivals: vec![None; capacity.max(16)].into_boxed_slice(), count: 0, fb_count: 0, media: 0 }
    }

    /// Records packet `seq` (sent on `ssrc`) arriving at `arrival_us`. Packets older than the last
    /// feedback, or too far ahead, are ignored.
    pub fn record(&mut self, seq: u16, ssrc: u32, arrival_us: i64) {
        self.media = ssrc;
        let base = *self.base.get_or_insert(seq);
        let d = seq_diff(seq, base);
        if d < 0 || d as usize >= self.arrivals.len() {
            if d as usize >= self.arrivals.len() && self.count == 0 {
                // A jump with nothing pending: start over from here.
                self.base = Some(seq);
                self.arrivals[0] = Some(arrival_us);
                self.count = 1;
            }
            return;
        }
        self.arrivals[d as usize] = Some(arrival_us);
        self.count = self.count.max(d as usize + 1);
    }

    /// Whether packets are waiting to be reported.
    pub fn pending(&self) -> bool {
        self.count > 0
    }

    /// Writes feedback for the packets recorded since the last one; `None` if none (or `out` is too
    /// small).
    pub fn write(&mut self, out: &mut [u8], sender: u32) -> Option<usize> {
        let media = self.media;
        let base = self.base?;
        if self.count == 0 {
            return None;
        }
        let n = self.count.min(TWCC_MAX_PER_FEEDBACK);
        let len = write_twcc(out, sender, media, base, self.fb_count, &self.arrivals[..n])?;
        self.fb_count = self.fb_count.wrapping_add(1);
        self.arrivals.copy_within(n..self.count, 0);
        for a in &mut self.arrivals[self.count - n..self.count] {
            *a = None;
        }
        self.count -= n;
        self.base = Some(base.wrapping_add(n as u16));
        Some(len)
    }
}

/// A token bucket in bytes: `rate` bits per second with a burst of 100 ms.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    bytes_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `bps`.
    pub fn new(bps: u64, now: Instant) -> TokenBucket {
        let bytes_per_s = bps as f64 / 8.0;
        let burst = (bytes_per_s * 0.1).max(1500.0);
        TokenBucket { bytes_per_s, burst, tokens: burst, last: now }
    }

    /// Takes `bytes`; false (and nothing taken) if the bucket holds fewer.
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.bytes_per_s).min(self.burst);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ext(profile: u16, body: &[u8]) -> Vec<u8> {
        let mut p = vec![0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        let words = body.len().div_ceil(4);
        p.extend_from_slice(&profile.to_be_bytes());
        p.extend_from_slice(&(words as u16).to_be_bytes());
        p.extend_from_slice(body);
        p.resize(16 + words * 4, 0);
        p.extend_from_slice(b"payload");
        p
    }

    #[test]
    fn one_byte_extensions_are_remapped_and_read() {
        // mid=4 "1", audio level=1 (0x85), twcc=5 (0x0102), rid=10 "h", other id 7.
        let body = [0x40, b'1', 0x10, 0x85, 0x51, 0x01, 0x02, 0xA0, b'h', 0x70, 9];
        let mut p = with_ext(0xBEDE, &body);
        let ids = HeaderExtIds { mid: 4, rid: 10, repaired_rid: 11, audio_level: 1, twcc: 5 };
        let info = remap_extensions(&mut p, &ids);
        assert_eq!(ext_value(&p, info.mid), Some(&b"1"[..]));
        assert_eq!(ext_value(&p, info.rid), Some(&b"h"[..]));
        assert_eq!(info.audio_level, Some(0x85));
        let tw = info.twcc.unwrap() as usize;
        assert_eq!(&p[tw..tw + 2], &[1, 2]);
        assert_eq!(p[16] >> 4, OUT_EXT_UNUSED);
        assert_eq!(p[18] >> 4, OUT_EXT_AUDIO_LEVEL);
        assert_eq!(p[20] >> 4, OUT_EXT_TWCC);
        assert_eq!(p[23] >> 4, OUT_EXT_UNUSED);
        assert_eq!(p[25] >> 4, OUT_EXT_UNUSED);
        assert_eq!(find_ext_offset(&p, OUT_EXT_TWCC), Some(tw));
        assert_eq!(crate::media::audio_level::audio_level(&p, OUT_EXT_AUDIO_LEVEL).map(|l| l.level), Some(5));
        assert_eq!(payload_range(&p), Some((28, p.len())));
    }

    #[test]
    fn two_byte_extensions_are_remapped() {
        let body = [20, 2, 0xAB, 0xCD, 0, 30, 1, 0x7F];
        let mut p = with_ext(0x1000, &body);
        let ids = HeaderExtIds { twcc: 20, audio_level: 30, ..Default::default() };
        let info = remap_extensions(&mut p, &ids);
        assert_eq!(info.twcc, Some(18));
        assert_eq!(info.audio_level, Some(0x7F));
        assert_eq!(p[16], OUT_EXT_TWCC);
        assert_eq!(p[21], OUT_EXT_AUDIO_LEVEL);
    }

    #[test]
    fn malformed_packets_never_panic() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let ids = HeaderExtIds { mid: 1, rid: 2, repaired_rid: 3, audio_level: 4, twcc: 5 };
        for _ in 0..100_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 40) as usize;
            let mut p: Vec<u8> = (0..len).map(|i| (rng >> (i % 8 * 8)) as u8 ^ i as u8).collect();
            if len > 0 {
                p[0] = 0x90 | (p[0] & 0x2F);
            }
            if len > 13 {
                p[12] = 0xBE;
                p[13] = 0xDE;
            }
            let _ = remap_extensions(&mut p, &ids);
            let _ = payload_range(&p);
            let _ = keyframe(&p);
            let _ = find_ext_offset(&p, 3);
        }
    }

    #[test]
    fn vp8_and_h264_keyframes_are_detected() {
        // VP8: X=1, I with 15-bit picture id, S=1; frame tag with P=0; start code; 640x360.
        let key = [0x90, 0x80, 0x80, 0x01, 0x50, 0x21, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01, 0xAA];
        assert_eq!(keyframe(&key), (true, Some((640, 360))));
        let mut delta = key;
        delta[4] |= 1; // P bit: interframe
        assert_eq!(keyframe(&delta), (false, None));
        let mut middle = key;
        middle[0] = 0x80; // not the start of a partition
        assert!(!keyframe(&middle).0);
        assert!(keyframe(&[0x65, 0x88]).0, "H264 IDR");
        assert!(keyframe(&[0x78, 0, 2, 0x67, 0x42]).0, "STAP-A with an SPS");
        assert!(keyframe(&[0x7c, 0x85, 0]).0, "FU-A start of an IDR");
        assert!(!keyframe(&[0x7c, 0x05, 0]).0, "FU-A continuation");
        assert!(!keyframe(&[0x41, 0x9a]).0, "H264 non-IDR slice");
        assert!(!keyframe(&[]).0);
    }

    #[test]
    fn receiver_statistics_follow_rfc3550() {
        let mut s = RecvStats::default();
        // 100 packets from seq 65500 across the wrap, every 4th lost; 20 ms apart, ts 1800 apart.
        let mut received = 0;
        for i in 0..100u32 {
            if i % 4 == 3 {
                continue;
            }
            let seq = 65_500u16.wrapping_add(i as u16);
            s.on_packet(seq, 1000 + i * 1800, i as i64 * 20_000, 90_000);
            received += 1;
        }
        let rb = s.report(7, 0x1234, 5);
        assert_eq!(rb.highest_seq, 65_598, "extended across the wrap (last received: 65500 + 98)");
        assert_eq!(received, 75);
        assert_eq!(rb.cumulative_lost, 24, "expected 99, received 75");
        assert_eq!(rb.fraction_lost, ((24 << 8) / 99) as u8);
        assert_eq!(rb.jitter, 0, "perfectly paced");
        assert_eq!((rb.last_sr, rb.delay_since_last_sr), (0x1234, 5));
        let rb2 = s.report(7, 0, 0);
        assert_eq!(rb2.fraction_lost, 0, "nothing new in the interval");
    }

    #[test]
    fn twcc_recorder_writes_what_arrived() {
        let mut r = TwccRecorder::new(1000);
        for (i, seq) in [10u16, 11, 13, 14].iter().enumerate() {
            r.record(*seq, 0xAB, 1_000_000 + i as i64 * 5_000);
        }
        let mut buf = [0u8; 1500];
        let n = r.write(&mut buf, 1).unwrap();
        let fb = match crate::media::rtcp::parse(&buf[..n]).next() {
            Some(Ok(crate::media::rtcp::Packet::Twcc(fb))) => fb,
            other => panic!("{other:?}"),
        };
        assert_eq!((fb.base_seq, fb.status_count, fb.fb_count), (10, 5, 0));
        assert_eq!(fb.media, 0xAB, "the media source is an SSRC the peer sends");
        let got: Vec<bool> = fb.packets().map(|(_, a)| a.is_some()).collect();
        assert_eq!(got, vec![true, true, false, true, true]);
        assert!(!r.pending());
        r.record(15, 0xCD, 2_000_000);
        let n = r.write(&mut buf, 1).unwrap();
        match crate::media::rtcp::parse(&buf[..n]).next() {
            Some(Ok(crate::media::rtcp::Packet::Twcc(fb))) => {
                assert_eq!((fb.base_seq, fb.status_count, fb.fb_count, fb.media), (15, 1, 1, 0xCD))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_bucket_polices_to_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(800_000, t0); // 100 kB/s, 10 kB burst
        let mut sent = 0;
        for ms in 0..1000u64 {
            let now = t0 + std::time::Duration::from_millis(ms);
            for _ in 0..2 {
                if b.take(1000, now) {
                    sent += 1000;
                }
            }
        }
        assert!((100_000..=111_000).contains(&sent), "{sent}");
    }
}
