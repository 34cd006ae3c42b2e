//! Zero-copy RTCP: a compound (or reduced-size, RFC 5506) packet parsed into an iterator of typed
//! views over the input bytes, and writers of the messages the SFU originates into `&mut [u8]`.
//!
//! Parsed: SR (RFC 3550 §6.4.1) with its NTP/RTP mapping and report blocks, RR (§6.4.2), SDES (skipped,
//! reported as `Sdes`), BYE (§6.6), PLI and FIR (RFC 4585 §6.3.1, RFC 5104 §4.3.1), generic NACK
//! (RFC 4585 §6.2.1, PID+BLP expanded by an iterator), REMB (draft-alvestrand-rmcat-remb) and
//! transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1,
//! run-length and status-vector chunks, small and large receive deltas). Anything else is `Other`.
//!
//! Nothing here allocates or panics: every length is checked before it is used, and a malformed packet
//! ends the iteration with one `Err`.

/// RTCP packet types.
pub mod pt {
    /// Sender report.
    pub const SR: u8 = 200;
    /// Receiver report.
    pub const RR: u8 = 201;
    /// Source description.
    pub const SDES: u8 = 202;
    /// Goodbye.
    pub const BYE: u8 = 203;
    /// Application-defined.
    pub const APP: u8 = 204;
    /// Transport-layer feedback (NACK, TWCC).
    pub const RTPFB: u8 = 205;
    /// Payload-specific feedback (PLI, FIR, REMB).
    pub const PSFB: u8 = 206;
}

/// Why parsing stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Fewer than 4 bytes left, or a length field pointing past the end.
    Truncated,
    /// Version is not 2.
    BadVersion,
    /// The padding count is larger than the packet.
    BadPadding,
    /// A known packet type whose body is too short for what its header claims.
    BadBody,
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One report block of an SR or RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received from the source.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    const LEN: usize = 24;
    fn parse(b: &[u8]) -> ReportBlock {
        let cl = ((b[5] as u32) << 16) | ((b[6] as u32) << 8) | b[7] as u32;
        let cumulative_lost = ((cl << 8) as i32) >> 8;
        ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            cumulative_lost,
            highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            last_sr: be32(b, 16),
            delay_since_last_sr: be32(b, 20),
        }
    }
    fn write(&self, b: &mut [u8]) {
        b[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        b[4] = self.fraction_lost;
        let cl = (self.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0xFF_FFFF;
        b[5..8].copy_from_slice(&cl.to_be_bytes()[1..]);
        b[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        b[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        b[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        b[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// Iterator over report blocks.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;
    fn next(&mut self) -> Option<ReportBlock> {
        if self.0.len() < ReportBlock::LEN {
            return None;
        }
        let (head, rest) = self.0.split_at(ReportBlock::LEN);
        self.0 = rest;
        Some(ReportBlock::parse(head))
    }
}

/// A sender report.
#[derive(Debug, Clone)]
pub struct SenderReport<'a> {
    /// Sender SSRC.
    pub ssrc: u32,
    /// NTP timestamp (64-bit fixed point, seconds since 1900).
    pub ntp: u64,
    /// The RTP timestamp corresponding to `ntp`.
    pub rtp_ts: u32,
    /// Sender's packet count.
    pub packet_count: u32,
    /// Sender's octet count.
    pub octet_count: u32,
    blocks: &'a [u8],
}

impl<'a> SenderReport<'a> {
    /// The report blocks.
    pub fn blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks(self.blocks)
    }
    /// The middle 32 bits of `ntp`, which receivers echo as LSR.
    pub fn compact_ntp(&self) -> u32 {
        (self.ntp >> 16) as u32
    }
}

/// A receiver report.
#[derive(Debug, Clone)]
pub struct ReceiverReport<'a> {
    /// Sender SSRC.
    pub ssrc: u32,
    blocks: &'a [u8],
}

impl<'a> ReceiverReport<'a> {
    /// The report blocks.
    pub fn blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks(self.blocks)
    }
}

/// A BYE.
#[derive(Debug, Clone)]
pub struct Bye<'a> {
    ssrcs: &'a [u8],
}

impl<'a> Bye<'a> {
    /// The SSRCs leaving.
    pub fn ssrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.ssrcs.chunks_exact(4).map(|c| be32(c, 0))
    }
}

/// A generic NACK (RFC 4585 §6.2.1).
#[derive(Debug, Clone)]
pub struct Nack<'a> {
    /// Sender SSRC.
    pub sender: u32,
    /// The media SSRC whose packets are missing.
    pub media: u32,
    fci: &'a [u8],
}

impl<'a> Nack<'a> {
    /// The (PID, BLP) pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.fci.chunks_exact(4).map(|c| (be16(c, 0), be16(c, 2)))
    }
    /// Every lost sequence number: each PID followed by the ones its BLP bits name.
    pub fn lost(&self) -> impl Iterator<Item = u16> + 'a {
        self.pairs().flat_map(|(pid, blp)| {
            core::iter::once(pid).chain((0..16u16).filter(move |i| blp & (1 << i) != 0).map(move |i| pid.wrapping_add(i + 1)))
        })
    }
}

/// A FIR (RFC 5104 §4.3.1).
#[derive(Debug, Clone)]
pub struct Fir<'a> {
    /// Sender SSRC.
    pub sender: u32,
    fci: &'a [u8],
}

impl<'a> Fir<'a> {
    /// (media SSRC, command sequence number) entries.
    pub fn entries(&self) -> impl Iterator<Item = (u32, u8)> + 'a {
        self.fci.chunks_exact(8).map(|c| (be32(c, 0), c[4]))
    }
}

/// A REMB (receiver estimated maximum bitrate).
#[derive(Debug, Clone)]
pub struct Remb<'a> {
    /// Sender SSRC.
    pub sender: u32,
    /// The estimate, bits per second (saturates at `u64::MAX`).
    pub bitrate: u64,
    ssrcs: &'a [u8],
}

impl<'a> Remb<'a> {
    /// The media SSRCs the estimate applies to.
    pub fn ssrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.ssrcs.chunks_exact(4).map(|c| be32(c, 0))
    }
}

/// Status of one packet in TWCC feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TwccStatus {
    /// Not received.
    NotReceived,
    /// Received, with a receive delta (0..=63.75 ms) in one byte.
    Small,
    /// Received, with a signed 16-bit delta.
    Large,
}

/// Transport-wide congestion control feedback.
#[derive(Debug, Clone)]
pub struct TwccFeedback<'a> {
    /// Sender SSRC.
    pub sender: u32,
    /// Media SSRC (unused by the protocol, usually 0 or the first media SSRC).
    pub media: u32,
    /// Transport-wide sequence number of the first packet described.
    pub base_seq: u16,
    /// Number of packets described.
    pub status_count: u16,
    /// Reference time in multiples of 64 ms (24-bit signed).
    pub reference_time: i32,
    /// Feedback packet counter.
    pub fb_count: u8,
    chunks: &'a [u8],
    deltas: &'a [u8],
}

impl<'a> TwccFeedback<'a> {
    /// Reference time in microseconds.
    pub fn reference_us(&self) -> i64 {
        self.reference_time as i64 * 64_000
    }

    /// Every described packet: (transport-wide seq, receive time in µs on the receiver's clock, or
    /// `None` if not received). Times are the reference time plus the running sum of deltas.
    pub fn packets(&self) -> TwccPackets<'a> {
        TwccPackets {
            chunks: self.chunks,
            deltas: self.deltas,
            seq: self.base_seq,
            left: self.status_count,
            chunk: 0,
            in_chunk: 0,
            at: self.reference_us(),
        }
    }

    /// Parses the FCI after the two SSRCs; returns `None` if it is inconsistent.
    fn parse(sender: u32, media: u32, fci: &'a [u8]) -> Option<TwccFeedback<'a>> {
        if fci.len() < 8 {
            return None;
        }
        let base_seq = be16(fci, 0);
        let status_count = be16(fci, 2);
        let rt = ((fci[4] as u32) << 16) | ((fci[5] as u32) << 8) | fci[6] as u32;
        let reference_time = ((rt << 8) as i32) >> 8;
        let fb_count = fci[7];
        // First pass: walk the chunks to find where the deltas start and how many bytes they need.
        let body = &fci[8..];
        let mut at = 0;
        let mut left = status_count as u32;
        let mut delta_bytes = 0usize;
        while left > 0 {
            if at + 2 > body.len() {
                return None;
            }
            let c = be16(body, at);
            at += 2;
            for_each_status(c, left, |s| {
                delta_bytes += match s {
                    TwccStatus::Small => 1,
                    TwccStatus::Large => 2,
                    TwccStatus::NotReceived => 0,
                };
            })
            .map(|n| left -= n)?;
        }
        let deltas = body.get(at..at + delta_bytes)?;
        Some(TwccFeedback { sender, media, base_seq, status_count, reference_time, fb_count, chunks: &body[..at], deltas })
    }
}

/// Number of statuses chunk `c` carries (capped at `left`), calling `f` for each; `None` for a chunk
/// using the reserved status symbol 3.
fn for_each_status(c: u16, left: u32, mut f: impl FnMut(TwccStatus)) -> Option<u32> {
    let n = chunk_len(c).min(left);
    for i in 0..n {
        f(chunk_status(c, i)?);
    }
    Some(n)
}

fn chunk_len(c: u16) -> u32 {
    if c & 0x8000 == 0 {
        (c & 0x1FFF) as u32
    } else if c & 0x4000 == 0 {
        14
    } else {
        7
    }
}

fn symbol(v: u16) -> Option<TwccStatus> {
    match v {
        0 => Some(TwccStatus::NotReceived),
        1 => Some(TwccStatus::Small),
        2 => Some(TwccStatus::Large),
        _ => None,
    }
}

fn chunk_status(c: u16, i: u32) -> Option<TwccStatus> {
    if c & 0x8000 == 0 {
        symbol((c >> 13) & 3)
    } else if c & 0x4000 == 0 {
        symbol((c >> (13 - i)) & 1)
    } else {
        symbol((c >> (12 - 2 * i)) & 3)
    }
}

/// Iterator over the packets a TWCC feedback describes.
#[derive(Debug, Clone)]
pub struct TwccPackets<'a> {
    chunks: &'a [u8],
    deltas: &'a [u8],
    seq: u16,
    left: u16,
    chunk: usize,
    in_chunk: u32,
    at: i64,
}

impl Iterator for TwccPackets<'_> {
    /// (seq, receive time in µs or None)
    type Item = (u16, Option<i64>);
    fn next(&mut self) -> Option<(u16, Option<i64>)> {
        loop {
            if self.left == 0 || self.chunk + 2 > self.chunks.len() {
                return None;
            }
            let c = be16(self.chunks, self.chunk);
            if self.in_chunk >= chunk_len(c) {
                self.chunk += 2;
                self.in_chunk = 0;
                continue;
            }
            let s = chunk_status(c, self.in_chunk)?;
            self.in_chunk += 1;
            let seq = self.seq;
            self.seq = self.seq.wrapping_add(1);
            self.left -= 1;
            let t = match s {
                TwccStatus::NotReceived => None,
                TwccStatus::Small => {
                    let d = *self.deltas.first()?;
                    self.deltas = &self.deltas[1..];
                    self.at += d as i64 * 250;
                    Some(self.at)
                }
                TwccStatus::Large => {
                    if self.deltas.len() < 2 {
                        return None;
                    }
                    let d = be16(self.deltas, 0) as i16;
                    self.deltas = &self.deltas[2..];
                    self.at += d as i64 * 250;
                    Some(self.at)
                }
            };
            return Some((seq, t));
        }
    }
}

/// One RTCP packet of a compound.
#[derive(Debug, Clone)]
pub enum Packet<'a> {
    /// Sender report.
    SenderReport(SenderReport<'a>),
    /// Receiver report.
    ReceiverReport(ReceiverReport<'a>),
    /// Source description (not parsed).
    Sdes,
    /// Goodbye.
    Bye(Bye<'a>),
    /// Picture loss indication.
    Pli {
        /// Sender SSRC.
        sender: u32,
        /// Media SSRC.
        media: u32,
    },
    /// Full intra request.
    Fir(Fir<'a>),
    /// Generic NACK.
    Nack(Nack<'a>),
    /// Receiver estimated maximum bitrate.
    Remb(Remb<'a>),
    /// Transport-wide congestion control feedback.
    Twcc(TwccFeedback<'a>),
    /// Anything else (APP, XR, other feedback formats), with its header fields and body.
    Other {
        /// Packet type.
        pt: u8,
        /// The 5-bit count / FMT field.
        count: u8,
        /// The bytes after the 4-byte header, padding removed.
        body: &'a [u8],
    },
}

/// Iterator over the packets of a compound RTCP packet.
#[derive(Debug, Clone)]
pub struct Compound<'a> {
    rest: &'a [u8],
}

/// Parses a compound (or reduced-size) RTCP packet lazily.
pub fn parse(buf: &[u8]) -> Compound<'_> {
    Compound { rest: buf }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Result<Packet<'a>, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.next_packet();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

impl<'a> Compound<'a> {
    fn next_packet(&mut self) -> Result<Packet<'a>, Error> {
        let b = self.rest;
        if b.len() < 4 {
            return Err(Error::Truncated);
        }
        if b[0] >> 6 != 2 {
            return Err(Error::BadVersion);
        }
        let len = (be16(b, 2) as usize + 1) * 4;
        if len > b.len() {
            return Err(Error::Truncated);
        }
        self.rest = &b[len..];
        let mut body = &b[4..len];
        if b[0] & 0x20 != 0 {
            let pad = *body.last().ok_or(Error::BadPadding)? as usize;
            if pad == 0 || pad > body.len() {
                return Err(Error::BadPadding);
            }
            body = &body[..body.len() - pad];
        }
        let count = b[0] & 0x1F;
        let p = b[1];
        let blocks = |from: usize| -> Result<&'a [u8], Error> {
            let need = from + count as usize * ReportBlock::LEN;
            body.get(from..need).ok_or(Error::BadBody)
        };
        Ok(match p {
            pt::SR => {
                if body.len() < 24 {
                    return Err(Error::BadBody);
                }
                SenderReport {
                    ssrc: be32(body, 0),
                    ntp: ((be32(body, 4) as u64) << 32) | be32(body, 8) as u64,
                    rtp_ts: be32(body, 12),
                    packet_count: be32(body, 16),
                    octet_count: be32(body, 20),
                    blocks: blocks(24)?,
                }
                .into()
            }
            pt::RR => {
                if body.len() < 4 {
                    return Err(Error::BadBody);
                }
                Packet::ReceiverReport(ReceiverReport { ssrc: be32(body, 0), blocks: blocks(4)? })
            }
            pt::SDES => Packet::Sdes,
            pt::BYE => Packet::Bye(Bye { ssrcs: body.get(..count as usize * 4).ok_or(Error::BadBody)? }),
            pt::RTPFB | pt::PSFB => {
                if body.len() < 8 {
                    return Err(Error::BadBody);
                }
                let sender = be32(body, 0);
                let media = be32(body, 4);
                let fci = &body[8..];
                match (p, count) {
                    (pt::RTPFB, 1) => Packet::Nack(Nack { sender, media, fci }),
                    (pt::RTPFB, 15) => Packet::Twcc(TwccFeedback::parse(sender, media, fci).ok_or(Error::BadBody)?),
                    (pt::PSFB, 1) => Packet::Pli { sender, media },
                    (pt::PSFB, 4) => Packet::Fir(Fir { sender, fci }),
                    (pt::PSFB, 15) if fci.len() >= 8 && &fci[..4] == b"REMB" => {
                        let n = fci[4] as usize;
                        let exp = fci[5] >> 2;
                        let mantissa = (((fci[5] & 3) as u64) << 16) | ((fci[6] as u64) << 8) | fci[7] as u64;
                        let bitrate = mantissa.checked_shl(exp as u32).filter(|v| v >> exp == mantissa).unwrap_or(u64::MAX);
                        let ssrcs = fci.get(8..8 + n * 4).ok_or(Error::BadBody)?;
                        Packet::Remb(Remb { sender, bitrate, ssrcs })
                    }
                    _ => Packet::Other { pt: p, count, body },
                }
            }
            _ => Packet::Other { pt: p, count, body },
        })
    }
}

impl<'a> From<SenderReport<'a>> for Packet<'a> {
    fn from(s: SenderReport<'a>) -> Packet<'a> {
        Packet::SenderReport(s)
    }
}

// ---- writers ----

/// Writes a header (V=2, no padding) for a packet of `len` bytes (a multiple of 4).
fn header(b: &mut [u8], count: u8, p: u8, len: usize) {
    b[0] = 0x80 | (count & 0x1F);
    b[1] = p;
    b[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
}

/// What the sender part of an SR says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Sender SSRC.
    pub ssrc: u32,
    /// NTP timestamp.
    pub ntp: u64,
    /// RTP timestamp at `ntp`.
    pub rtp_ts: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
}

/// Writes an SR with up to 31 report blocks; returns its length, or `None` if `out` is too small.
pub fn write_sr(out: &mut [u8], info: &SenderInfo, blocks: &[ReportBlock]) -> Option<usize> {
    if blocks.len() > 31 {
        return None;
    }
    let len = 28 + blocks.len() * ReportBlock::LEN;
    let b = out.get_mut(..len)?;
    header(b, blocks.len() as u8, pt::SR, len);
    b[4..8].copy_from_slice(&info.ssrc.to_be_bytes());
    b[8..16].copy_from_slice(&info.ntp.to_be_bytes());
    b[16..20].copy_from_slice(&info.rtp_ts.to_be_bytes());
    b[20..24].copy_from_slice(&info.packet_count.to_be_bytes());
    b[24..28].copy_from_slice(&info.octet_count.to_be_bytes());
    for (i, rb) in blocks.iter().enumerate() {
        rb.write(&mut b[28 + i * 24..52 + i * 24]);
    }
    Some(len)
}

/// Writes an RR with up to 31 report blocks.
pub fn write_rr(out: &mut [u8], ssrc: u32, blocks: &[ReportBlock]) -> Option<usize> {
    if blocks.len() > 31 {
        return None;
    }
    let len = 8 + blocks.len() * ReportBlock::LEN;
    let b = out.get_mut(..len)?;
    header(b, blocks.len() as u8, pt::RR, len);
    b[4..8].copy_from_slice(&ssrc.to_be_bytes());
    for (i, rb) in blocks.iter().enumerate() {
        rb.write(&mut b[8 + i * 24..32 + i * 24]);
    }
    Some(len)
}

/// Writes a PLI.
pub fn write_pli(out: &mut [u8], sender: u32, media: u32) -> Option<usize> {
    let b = out.get_mut(..12)?;
    header(b, 1, pt::PSFB, 12);
    b[4..8].copy_from_slice(&sender.to_be_bytes());
    b[8..12].copy_from_slice(&media.to_be_bytes());
    Some(12)
}

/// Writes a FIR with one entry (RFC 5104: the media SSRC field of the common header is 0).
pub fn write_fir(out: &mut [u8], sender: u32, media: u32, fir_seq: u8) -> Option<usize> {
    let b = out.get_mut(..20)?;
    header(b, 4, pt::PSFB, 20);
    b[4..8].copy_from_slice(&sender.to_be_bytes());
    b[8..12].fill(0);
    b[12..16].copy_from_slice(&media.to_be_bytes());
    b[16] = fir_seq;
    b[17..20].fill(0);
    Some(20)
}

/// Writes a generic NACK naming `lost` (ascending, in sequence order, wrap allowed) as PID+BLP pairs.
/// Returns the length and how many of `lost` fitted in `out`.
pub fn write_nack(out: &mut [u8], sender: u32, media: u32, lost: &[u16]) -> Option<(usize, usize)> {
    if out.len() < 16 || lost.is_empty() {
        return None;
    }
    let mut at = 12;
    let mut used = 0;
    while used < lost.len() && at + 4 <= out.len() && at + 4 <= 4 * 65536 {
        let pid = lost[used];
        let mut blp = 0u16;
        used += 1;
        while used < lost.len() {
            let d = lost[used].wrapping_sub(pid);
            if !(1..=16).contains(&d) {
                break;
            }
            blp |= 1 << (d - 1);
            used += 1;
        }
        out[at..at + 2].copy_from_slice(&pid.to_be_bytes());
        out[at + 2..at + 4].copy_from_slice(&blp.to_be_bytes());
        at += 4;
    }
    header(out, 1, pt::RTPFB, at);
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..12].copy_from_slice(&media.to_be_bytes());
    Some((at, used))
}

/// Writes a REMB for `ssrcs` (at most 255).
pub fn write_remb(out: &mut [u8], sender: u32, bitrate: u64, ssrcs: &[u32]) -> Option<usize> {
    if ssrcs.len() > 255 {
        return None;
    }
    let len = 20 + 4 * ssrcs.len();
    let b = out.get_mut(..len)?;
    header(b, 15, pt::PSFB, len);
    b[4..8].copy_from_slice(&sender.to_be_bytes());
    b[8..12].fill(0);
    b[12..16].copy_from_slice(b"REMB");
    b[16] = ssrcs.len() as u8;
    let mut exp = 0u32;
    while (bitrate >> exp) > 0x3FFFF {
        exp += 1;
    }
    let mantissa = (bitrate >> exp) as u32;
    b[17] = ((exp as u8) << 2) | ((mantissa >> 16) as u8 & 3);
    b[18] = (mantissa >> 8) as u8;
    b[19] = mantissa as u8;
    for (i, s) in ssrcs.iter().enumerate() {
        b[20 + 4 * i..24 + 4 * i].copy_from_slice(&s.to_be_bytes());
    }
    Some(len)
}

/// Writes TWCC feedback for consecutive packets from `base_seq`: `arrivals[i]` is the receive time in
/// µs of packet `base_seq + i`, or `None`. Uses two-bit status-vector chunks only (valid, if not the
/// most compact encoding). `reference_us` is rounded down to 64 ms. Returns `None` if `out` is too
/// small, there are more than 65535 packets, or a delta does not fit 16 bits of 250 µs.
pub fn write_twcc(out: &mut [u8], sender: u32, media: u32, base_seq: u16, fb_count: u8, arrivals: &[Option<i64>]) -> Option<usize> {
    if arrivals.len() > u16::MAX as usize || out.len() < 20 {
        return None;
    }
    let first = arrivals.iter().flatten().next().copied().unwrap_or(0);
    let reference = first.div_euclid(64_000);
    if !(-0x80_0000..0x80_0000).contains(&reference) {
        return None;
    }
    let mut at = 20;
    // Status chunks: two-bit vectors, all "not received" until the deltas below set the symbols.
    for _ in arrivals.chunks(7) {
        out.get_mut(at..at + 2)?.copy_from_slice(&0xC000u16.to_be_bytes());
        at += 2;
    }
    // Deltas, now fixing the symbols to small where the delta fits a byte.
    let mut t = reference * 64_000;
    let chunks_start = 20;
    for (i, a) in arrivals.iter().enumerate() {
        let Some(a) = *a else { continue };
        let d = a.saturating_sub(t).div_euclid(250);
        let ci = chunks_start + (i / 7) * 2;
        let shift = 12 - 2 * (i % 7);
        let mut c = be16(out, ci);
        c &= !(3 << shift);
        if (0..=255).contains(&d) {
            c |= 1 << shift;
            *out.get_mut(at)? = d as u8;
            at += 1;
        } else if (i16::MIN as i64..=i16::MAX as i64).contains(&d) {
            c |= 2 << shift;
            out.get_mut(at..at + 2)?.copy_from_slice(&(d as i16).to_be_bytes());
            at += 2;
        } else {
            return None;
        }
        t += d * 250;
        out[ci..ci + 2].copy_from_slice(&c.to_be_bytes());
    }
    // Pad to a word.
    while at % 4 != 0 {
        *out.get_mut(at)? = 0;
        at += 1;
    }
    header(out, 15, pt::RTPFB, at);
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..12].copy_from_slice(&media.to_be_bytes());
    out[12..14].copy_from_slice(&base_seq.to_be_bytes());
    out[14..16].copy_from_slice(&(arrivals.len() as u16).to_be_bytes());
    out[16..19].copy_from_slice(&(reference as u32).to_be_bytes()[1..]);
    out[19] = fb_count;
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::testutil::Rng;

    fn all(buf: &[u8]) -> Vec<Packet<'_>> {
        parse(buf).map(|p| p.unwrap()).collect()
    }

    #[test]
    fn sender_report_with_block_and_sdes() {
        // SR (1 block) + SDES, crafted by hand.
        #[rustfmt::skip]
        let buf = [
            0x81, 200, 0x00, 0x0c,          // V=2 RC=1 SR len=12 words
            0x11, 0x22, 0x33, 0x44,         // SSRC
            0xE9, 0x2B, 0x6F, 0x80,         // NTP msw
            0x40, 0x00, 0x00, 0x00,         // NTP lsw (0.25 s)
            0x00, 0x01, 0x5F, 0x90,         // RTP ts 90000
            0x00, 0x00, 0x00, 0x64,         // 100 packets
            0x00, 0x00, 0x27, 0x10,         // 10000 octets
            0xAA, 0xBB, 0xCC, 0xDD,         // block: ssrc
            0x40, 0xFF, 0xFF, 0xFE,         // fraction 64, cumulative -2
            0x00, 0x01, 0x00, 0x05,         // ext highest seq
            0x00, 0x00, 0x00, 0x10,         // jitter
            0x6F, 0x80, 0x40, 0x00,         // lsr
            0x00, 0x01, 0x00, 0x00,         // dlsr 1 s
            0x81, 202, 0x00, 0x02,          // SDES, 1 chunk, 2 words
            0x11, 0x22, 0x33, 0x44, 0x00, 0x00, 0x00, 0x00,
        ];
        let p = all(&buf);
        assert_eq!(p.len(), 2);
        let Packet::SenderReport(sr) = &p[0] else { panic!("{:?}", p[0]) };
        assert_eq!(sr.ssrc, 0x1122_3344);
        assert_eq!(sr.ntp, 0xE92B_6F80_4000_0000);
        assert_eq!(sr.compact_ntp(), 0x6F80_4000);
        assert_eq!(sr.rtp_ts, 90000);
        assert_eq!((sr.packet_count, sr.octet_count), (100, 10000));
        let blocks: Vec<_> = sr.blocks().collect();
        assert_eq!(blocks.len(), 1);
        let b = blocks[0];
        assert_eq!(b.ssrc, 0xAABB_CCDD);
        assert_eq!(b.fraction_lost, 64);
        assert_eq!(b.cumulative_lost, -2);
        assert_eq!(b.highest_seq, 0x0001_0005);
        assert_eq!(b.delay_since_last_sr, 65536);
        assert!(matches!(p[1], Packet::Sdes));
        // Round trip through the writer.
        let mut out = [0u8; 64];
        let info = SenderInfo { ssrc: sr.ssrc, ntp: sr.ntp, rtp_ts: sr.rtp_ts, packet_count: 100, octet_count: 10000 };
        let n = write_sr(&mut out, &info, &blocks).unwrap();
        assert_eq!(&out[..n], &buf[..52]);
    }

    #[test]
    fn receiver_report_round_trip() {
        let rb = ReportBlock {
            ssrc: 7,
            fraction_lost: 3,
            cumulative_lost: 0x7F_FFFF,
            highest_seq: 9,
            jitter: 1,
            last_sr: 2,
            delay_since_last_sr: 3,
        };
        let mut out = [0u8; 64];
        let n = write_rr(&mut out, 42, &[rb, rb]).unwrap();
        assert_eq!(n, 56);
        assert_eq!(&out[..4], &[0x82, 201, 0, 13]);
        let p = all(&out[..n]);
        let Packet::ReceiverReport(rr) = &p[0] else { panic!() };
        assert_eq!(rr.ssrc, 42);
        assert_eq!(rr.blocks().collect::<Vec<_>>(), vec![rb, rb]);
        // Empty RR (what a pure receiver sends in a compound).
        assert_eq!(write_rr(&mut out, 42, &[]), Some(8));
        assert_eq!(&out[..8], &[0x80, 201, 0, 1, 0, 0, 0, 42]);
    }

    #[test]
    fn pli_fir_bye() {
        // PLI as the forwarder writes it, FIR per RFC 5104 §4.3.1, BYE with 2 SSRCs.
        #[rustfmt::skip]
        let buf = [
            0x81, 206, 0, 2, 0x53, 0x59, 0x44, 0x00, 0, 0, 0x12, 0x34,
            0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 7, 0, 0, 0,
            0x82, 203, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2,
        ];
        let p = all(&buf);
        assert!(matches!(p[0], Packet::Pli { sender: 0x5359_4400, media: 0x1234 }));
        let Packet::Fir(f) = &p[1] else { panic!() };
        assert_eq!(f.sender, 1);
        assert_eq!(f.entries().collect::<Vec<_>>(), vec![(0x1234, 7)]);
        let Packet::Bye(b) = &p[2] else { panic!() };
        assert_eq!(b.ssrcs().collect::<Vec<_>>(), vec![1, 2]);
        let mut out = [0u8; 20];
        assert_eq!(write_pli(&mut out, 0x5359_4400, 0x1234), Some(12));
        assert_eq!(&out[..12], &buf[..12]);
        assert_eq!(write_fir(&mut out, 1, 0x1234, 7), Some(20));
        assert_eq!(&out[..20], &buf[12..32]);
    }

    #[test]
    fn generic_nack_expansion_and_writer() {
        // PID 100, BLP 0b1000_0000_0000_0101 -> 100, 101, 103, 116; PID 65535 BLP 1 -> 65535, 0.
        #[rustfmt::skip]
        let buf = [0x81, 205, 0, 4, 0, 0, 0, 9, 0, 0, 0, 5, 0, 100, 0x80, 0x05, 0xFF, 0xFF, 0x00, 0x01];
        let p = all(&buf);
        let Packet::Nack(n) = &p[0] else { panic!() };
        assert_eq!((n.sender, n.media), (9, 5));
        assert_eq!(n.lost().collect::<Vec<_>>(), vec![100, 101, 103, 116, 65535, 0]);
        let mut out = [0u8; 64];
        let lost = [100, 101, 103, 116, 65535, 0];
        let (len, used) = write_nack(&mut out, 9, 5, &lost).unwrap();
        assert_eq!(used, 6);
        assert_eq!(&out[..len], &buf[..]);
        // Too small for all: only what fits.
        let (len, used) = write_nack(&mut out[..16], 9, 5, &[1, 40]).unwrap();
        assert_eq!((len, used), (16, 1));
    }

    #[test]
    fn remb() {
        // 1 SSRC, exp 3, mantissa 0x3_0D40 (200000) -> 1_600_000 bps.
        #[rustfmt::skip]
        let buf = [0x8F, 206, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 1, 0x0F, 0x0D, 0x40, 0xDE, 0xAD, 0xBE, 0xEF];
        let p = all(&buf);
        let Packet::Remb(r) = &p[0] else { panic!("{:?}", p[0]) };
        assert_eq!(r.bitrate, 200_000 << 3);
        assert_eq!(r.ssrcs().collect::<Vec<_>>(), vec![0xDEAD_BEEF]);
        let mut out = [0u8; 32];
        let n = write_remb(&mut out, 1, 1_600_000, &[0xDEAD_BEEF]).unwrap();
        // The writer picks the smallest exponent: 1.6M needs exp 3 (1.6M >> 2 = 400000 > 0x3FFFF).
        assert_eq!(&out[..n], &buf[..]);
    }

    #[test]
    fn twcc_hand_crafted() {
        // base 10, 6 packets, reference time 2 (128 ms), fb count 5.
        // chunk 1: run length, symbol 1 (small), run 3        -> 0x2003
        // chunk 2: status vector, 2-bit: [0 (lost), 2 (large), 1 (small)] -> 1 1 00 10 01 00 00 00 00 = 0xC900
        //          (7 symbols, only 3 used since count is 6)
        // deltas: 4 (1 ms), 0 (0), 255 (63.75 ms), large -8 (-2 ms), 40 (10 ms)
        #[rustfmt::skip]
        let buf = [
            0x8F, 205, 0, 7,
            0, 0, 0, 1, 0, 0, 0, 2,
            0, 10, 0, 6, 0, 0, 2, 5,
            0x20, 0x03, 0xC9, 0x00,
            4, 0, 255, 0xFF, 0xF8, 40, 0, 0,
        ];
        let p = all(&buf);
        let Packet::Twcc(t) = &p[0] else { panic!("{:?}", p[0]) };
        assert_eq!((t.base_seq, t.status_count, t.reference_time, t.fb_count), (10, 6, 2, 5));
        let base = 128_000;
        let v: Vec<_> = t.packets().collect();
        assert_eq!(
            v,
            vec![
                (10, Some(base + 1000)),
                (11, Some(base + 1000)),
                (12, Some(base + 1000 + 63_750)),
                (13, None),
                (14, Some(base + 64_750 - 2000)),
                (15, Some(base + 62_750 + 10_000)),
            ]
        );
        // One-bit status vector 0xA000 (1 0, then symbols 1 0 0 ...): base 65535, 3 packets, reference
        // time -1 (-64 ms): [received +2 ms, lost, lost] across the sequence wrap.
        #[rustfmt::skip]
        let one_bit = [
            0x8F, 205, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0,
            0xFF, 0xFF, 0, 3, 0xFF, 0xFF, 0xFF, 0,
            0xA0, 0x00, 8, 0,
        ];
        let p = all(&one_bit);
        let Packet::Twcc(t) = &p[0] else { panic!() };
        assert_eq!(t.reference_time, -1);
        assert_eq!(t.packets().collect::<Vec<_>>(), vec![(65535, Some(-64_000 + 2000)), (0, None), (1, None)]);
    }

    #[test]
    fn twcc_writer_round_trip() {
        let mut rng = Rng(7);
        let mut arrivals = Vec::new();
        let mut t = 10_000_000i64;
        for _ in 0..100 {
            t += (rng.next_u64() % 30_000) as i64;
            arrivals.push(if rng.unit() < 0.1 { None } else { Some(t / 250 * 250) });
        }
        let t = t / 250 * 250;
        arrivals[50] = Some(t + 100_000); // a large delta
        arrivals[51] = Some(t); // and a negative one
        let mut out = [0u8; 1200];
        let n = write_twcc(&mut out, 1, 2, 65500, 9, &arrivals).unwrap();
        let p = all(&out[..n]);
        let Packet::Twcc(fb) = &p[0] else { panic!() };
        let got: Vec<_> = fb.packets().collect();
        assert_eq!(got.len(), 100);
        for (i, (seq, at)) in got.into_iter().enumerate() {
            assert_eq!(seq, 65500u16.wrapping_add(i as u16));
            assert_eq!(at, arrivals[i], "packet {i}");
        }
    }

    #[test]
    fn malformed_input_ends_iteration() {
        assert!(matches!(parse(&[0x80, 200, 0]).next(), Some(Err(Error::Truncated))));
        assert!(matches!(parse(&[0x40, 200, 0, 0]).next(), Some(Err(Error::BadVersion))));
        assert!(matches!(parse(&[0x80, 200, 0, 5, 0, 0, 0, 0]).next(), Some(Err(Error::Truncated))));
        assert!(matches!(parse(&[0xA0, 201, 0, 1, 0, 0, 0, 9]).next(), Some(Err(Error::BadPadding))));
        assert!(matches!(parse(&[0x81, 201, 0, 1, 0, 0, 0, 9]).next(), Some(Err(Error::BadBody))), "RC=1 without a block");
        // Padding accepted on the last packet.
        let p = all(&[0xA0, 201, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4]);
        assert!(matches!(&p[0], Packet::ReceiverReport(r) if r.ssrc == 9));
        let mut it = parse(&[0x80, 201, 0, 1, 0, 0, 0, 9, 0x80]);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none(), "stops after an error");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x5EED);
        let mut buf = [0u8; 256];
        for i in 0..200_000 {
            let len = (rng.next_u64() % 256) as usize;
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len >= 4 {
                // Make headers plausible so the typed parsers get exercised, not just the version check.
                buf[0] = 0x80 | (buf[0] & 0x3F);
                buf[1] = 200 + (buf[1] % 7);
                let words = (len / 4).saturating_sub(1) as u16;
                buf[2..4].copy_from_slice(&words.to_be_bytes());
            }
            for p in parse(&buf[..len]) {
                match p {
                    Ok(Packet::SenderReport(s)) => s.blocks().for_each(drop),
                    Ok(Packet::ReceiverReport(r)) => r.blocks().for_each(drop),
                    Ok(Packet::Nack(n)) => n.lost().for_each(drop),
                    Ok(Packet::Fir(f)) => f.entries().for_each(drop),
                    Ok(Packet::Remb(r)) => r.ssrcs().for_each(drop),
                    Ok(Packet::Bye(b)) => b.ssrcs().for_each(drop),
                    Ok(Packet::Twcc(t)) => t.packets().for_each(drop),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn writers_never_panic_on_small_buffers_or_odd_input() {
        let mut rng = Rng(3);
        let mut buf = [0u8; 300];
        let rb = ReportBlock {
            ssrc: 1,
            fraction_lost: 0,
            cumulative_lost: i32::MIN,
            highest_seq: 0,
            jitter: 0,
            last_sr: 0,
            delay_since_last_sr: 0,
        };
        let info = SenderInfo { ssrc: 1, ntp: 0, rtp_ts: 0, packet_count: 0, octet_count: 0 };
        for len in 0..300 {
            let out = &mut buf[..len];
            let _ = write_sr(out, &info, &[rb; 3]);
            let _ = write_rr(out, 1, &[rb; 40]);
            let _ = write_pli(out, 1, 2);
            let _ = write_fir(out, 1, 2, 3);
            let _ = write_nack(out, 1, 2, &[1, 2, 300, 301, 65535, 0]);
            let _ = write_remb(out, 1, u64::MAX, &[1, 2]);
            let arrivals: Vec<Option<i64>> = (0..rng.next_u64() % 40)
                .map(|_| if rng.unit() < 0.2 { None } else { Some(rng.next_u64() as i64 >> (rng.next_u64() % 64)) })
                .collect();
            if let Some(n) = write_twcc(out, 1, 2, 3, 4, &arrivals) {
                for p in parse(&out[..n]) {
                    assert!(p.is_ok());
                }
            }
        }
        // A huge REMB round-trips saturated.
        let n = write_remb(&mut buf, 1, u64::MAX, &[]).unwrap();
        let Some(Ok(Packet::Remb(r))) = parse(&buf[..n]).next() else { panic!() };
        assert!(r.bitrate >= u64::MAX / 2);
    }
}
