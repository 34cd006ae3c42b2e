//! The SRTP/SRTCP cryptographic context: session keys plus per-SSRC index,
//! rollover and replay state, with the in-place protect/unprotect entry points.

use rustc_hash::FxHashMap as HashMap;
use std::fmt;

use crate::error::PacketKind;
use crate::index;
use crate::kdf::SessionKeys;
use crate::replay::{self, ReplayWindow};
use crate::rtcp;
use crate::rtp;
use crate::transform::Transform;
use crate::{Error, Profile};

/// Largest packet accepted: nothing bigger fits in a UDP datagram, and the
/// bound keeps AES-CM well inside its 2^16-block per-packet keystream.
pub const MAX_PACKET_LEN: usize = 65_535;

/// One direction of one transport's SRTP session, covering every SSRC sent in
/// that direction: the derived SRTP and SRTCP session keys, and per-SSRC state
/// (rollover counter, replay window, outbound SRTCP index) created the first
/// time an SSRC is seen. That map insertion is the only allocation; steady-state
/// protect/unprotect allocate nothing and work in the caller's buffer.
///
/// Build one context for sending (from the local role's write keys) and one
/// for receiving (from the peer's). Protect and unprotect keep separate
/// per-SSRC state, so a context used both ways (e.g. a loopback test) works
/// too. Inbound state is only created or advanced by packets that
/// authenticate, so forged packets can neither move the rollover counter nor
/// grow the SSRC map. Every error leaves the context unchanged.
#[derive(Clone)]
pub struct Context {
    profile: Profile,
    rtp: Transform,
    rtcp: Transform,
    // Per-SSRC state in maps keyed by the Fx hash: one lookup per packet, and inbound entries are only
    // made by packets that authenticated, so the keys are not an attacker's choice.
    /// Highest SRTP index protected per SSRC (its ROC and s_l).
    rtp_tx: HashMap<u32, u64>,
    /// Replay window per SSRC; its top is the highest authenticated index.
    rtp_rx: HashMap<u32, ReplayWindow>,
    /// Next SRTCP index to send per SSRC.
    rtcp_tx: HashMap<u32, u32>,
    rtcp_rx: HashMap<u32, ReplayWindow>,
}

impl fmt::Debug for Context {
    /// Shows the profile and how many SSRCs have state; never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("profile", &self.profile)
            .field("rtp_tx_ssrcs", &self.rtp_tx.len())
            .field("rtp_rx_ssrcs", &self.rtp_rx.len())
            .field("rtcp_tx_ssrcs", &self.rtcp_tx.len())
            .field("rtcp_rx_ssrcs", &self.rtcp_rx.len())
            .finish()
    }
}

impl Context {
    /// Derives the SRTP and SRTCP session keys (RFC 3711 §4.3, key derivation
    /// rate 0) from one direction's master key and salt, e.g. a
    /// [`crate::MasterKeys`] from [`crate::split_keying_material`].
    /// Fails with [`Error::BadKeyLength`] if the lengths do not match `profile`.
    pub fn new(profile: Profile, master_key: &[u8], master_salt: &[u8]) -> Result<Context, Error> {
        let key: &[u8; 16] = master_key.try_into().map_err(|_| Error::BadKeyLength {
            what: "master key",
            expected: profile.key_len(),
            got: master_key.len(),
        })?;
        if master_salt.len() != profile.salt_len() {
            return Err(Error::BadKeyLength {
                what: "master salt",
                expected: profile.salt_len(),
                got: master_salt.len(),
            });
        }
        let rtp = SessionKeys::derive(profile, key, master_salt, false);
        let rtcp = SessionKeys::derive(profile, key, master_salt, true);
        Context::from_session_keys(profile, &rtp, &rtcp)
    }

    /// Builds a context straight from session keys, skipping the KDF; the
    /// RFC 7714 vectors are stated this way.
    pub(crate) fn from_session_keys(
        profile: Profile,
        rtp: &SessionKeys,
        rtcp: &SessionKeys,
    ) -> Result<Context, Error> {
        Ok(Context {
            profile,
            rtp: Transform::new(profile, rtp)?,
            rtcp: Transform::new(profile, rtcp)?,
            rtp_tx: HashMap::default(),
            rtp_rx: HashMap::default(),
            rtcp_tx: HashMap::default(),
            rtcp_rx: HashMap::default(),
        })
    }

    /// The protection profile this context was created with.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Highest 48-bit SRTP packet index (`ROC * 2^16 + SEQ`) protected, or
    /// else authenticated, for `ssrc`; `None` before its first packet. Its top
    /// 32 bits are the rollover counter; meant for diagnostics and tests.
    pub fn rtp_index(&self, ssrc: u32) -> Option<u64> {
        self.rtp_tx
            .get(&ssrc)
            .copied()
            .or_else(|| self.rtp_rx.get(&ssrc).map(ReplayWindow::top))
    }

    /// Every per-SSRC packet counter this context keeps that a restarted
    /// process needs to carry on the same streams: the highest SRTP index
    /// authenticated per SSRC ([`IndexKind::RtpIn`]), the highest SRTP index
    /// protected per SSRC ([`IndexKind::RtpOut`]) and the next SRTCP index to
    /// send per SSRC ([`IndexKind::RtcpOut`]), sorted. Feed them to
    /// [`Context::resume`] on a fresh context with the same keys. Inbound
    /// SRTCP needs nothing: SRTCP packets carry their index.
    pub fn indexes(&self) -> Vec<(u32, IndexKind, u64)> {
        let mut v: Vec<_> = self
            .rtp_rx
            .iter()
            .map(|(s, w)| (*s, IndexKind::RtpIn, w.top()))
            .chain(self.rtp_tx.iter().map(|(s, i)| (*s, IndexKind::RtpOut, *i)))
            .chain(
                self.rtcp_tx
                    .iter()
                    .map(|(s, i)| (*s, IndexKind::RtcpOut, u64::from(*i))),
            )
            .collect();
        v.sort_unstable();
        v
    }

    /// Seeds the per-SSRC state of `ssrc` from a counter another context with
    /// the same keys reported in [`Context::indexes`] (e.g. before a process
    /// restart), so the stream goes on past sequence number wraps:
    ///
    /// - [`IndexKind::RtpIn`]: the RFC 3711 Appendix A estimate starts from
    ///   `index` (its ROC and s_l), so packets up to 2^15 ahead of it, across
    ///   a wrap too, authenticate. The replay window starts empty at `index`.
    /// - [`IndexKind::RtpOut`]: protection goes on from `index`; the ROC
    ///   advances when the sequence number wraps past its low 16 bits.
    /// - [`IndexKind::RtcpOut`]: the next SRTCP index sent is `index`.
    ///
    /// State already further ahead is kept (a seed never moves a counter
    /// back). Returns `false`, changing nothing, if `index` is out of range
    /// (above 2^48-1 for SRTP, above 2^31 for SRTCP).
    pub fn resume(&mut self, ssrc: u32, kind: IndexKind, index: u64) -> bool {
        match kind {
            IndexKind::RtpIn => {
                if index > index::MAX_INDEX {
                    return false;
                }
                match self.rtp_rx.get(&ssrc) {
                    Some(w) if w.top() >= index => {}
                    _ => {
                        self.rtp_rx.insert(ssrc, ReplayWindow::empty_at(index));
                    }
                }
            }
            IndexKind::RtpOut => {
                if index > index::MAX_INDEX {
                    return false;
                }
                let highest = self.rtp_tx.entry(ssrc).or_insert(index);
                *highest = (*highest).max(index);
            }
            IndexKind::RtcpOut => {
                let Ok(next) = u32::try_from(index) else {
                    return false;
                };
                if next > rtcp::MAX_INDEX + 1 {
                    return false;
                }
                let n = self.rtcp_tx.entry(ssrc).or_insert(next);
                *n = (*n).max(next);
            }
        }
        true
    }

    /// Starts loading what unprotecting (`inbound`) or protecting an RTP
    /// packet reads first: the SRTP session key and the head of the per-SSRC
    /// state table. Only computes addresses (and reads which profile the key
    /// is for). With [`Context::prefetch_rtp_state`], for the packets of a
    /// receive batch before the first is handled, so that the cache misses of
    /// many packets overlap instead of stalling each packet in turn. Changes
    /// nothing.
    #[inline]
    pub fn prefetch_rtp_keys(&self, inbound: bool) {
        self.rtp.prefetch();
        if inbound {
            crate::prefetch::line(&self.rtp_rx);
        } else {
            crate::prefetch::line(&self.rtp_tx);
        }
    }

    /// Looks up `ssrc`'s rollover or replay state, so that it is in the cache
    /// when the packet is handled (best after [`Context::prefetch_rtp_keys`]
    /// for the whole batch). Changes nothing.
    #[inline]
    pub fn prefetch_rtp_state(&self, ssrc: u32, inbound: bool) {
        if inbound {
            std::hint::black_box(self.rtp_rx.get(&ssrc));
        } else {
            std::hint::black_box(self.rtp_tx.get(&ssrc));
        }
    }

    /// `buf[..len]` holds a plaintext RTP packet; `buf` must have room for
    /// [`Profile::rtp_overhead`] more bytes. Encrypts the payload (everything
    /// after the CSRCs and header extension, padding included) in place,
    /// appends the tag and returns the new length. The sender's rollover
    /// counter advances when the sequence number wraps. Re-protecting an
    /// already-sent sequence number is allowed for retransmitting the *same*
    /// packet (same index, so an identical SRTP packet); sending different
    /// content under a reused sequence number would reuse keystream.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        check_max(PacketKind::Rtp, len)?;
        let needed = len + self.profile.rtp_overhead();
        check_room(buf, needed)?;
        let hdr = rtp::parse(&buf[..len])?;

        let Context { rtp, rtp_tx, .. } = self;
        let highest = rtp_tx.entry(hdr.ssrc).or_insert(u64::from(hdr.seq));
        let index = index::estimate(*highest, hdr.seq).ok_or(if *highest >> 16 == 0 {
            Error::SequenceBeforeStart {
                ssrc: hdr.ssrc,
                seq: hdr.seq,
            }
        } else {
            Error::IndexExhausted {
                kind: PacketKind::Rtp,
                ssrc: hdr.ssrc,
            }
        })?;
        let out = rtp
            .protect_rtp(&mut buf[..needed], hdr.len, len, hdr.ssrc, index)
            .ok_or(Error::PacketTooLarge {
                kind: PacketKind::Rtp,
                len,
                max: MAX_PACKET_LEN,
            })?;
        *highest = (*highest).max(index);
        Ok(out)
    }

    /// `buf` holds exactly one SRTP packet. Estimates its index from the
    /// sequence number and the SSRC's rollover state (RFC 3711 Appendix A),
    /// rejects replays, authenticates and decrypts in place, and returns the
    /// plaintext RTP length (`buf[..n]`). Rollover and replay state are only
    /// updated once the packet has authenticated. A packet that fails
    /// authentication is for dropping: under GCM its payload is zeroed (the
    /// cipher decrypts while it authenticates; zeroes rather than
    /// unauthenticated plaintext), under AES-CM it is left as it was.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let n = buf.len();
        check_max(PacketKind::Rtp, n)?;
        let tag_len = self.profile.rtp_overhead();
        let min = rtp::FIXED_HEADER_LEN + tag_len;
        if n < min {
            return Err(Error::Truncated {
                kind: PacketKind::Rtp,
                len: n,
                needed: min,
            });
        }
        // The header must end before the tag, so parse only what precedes it.
        let hdr = rtp::parse(&buf[..n - tag_len]).map_err(|e| match e {
            Error::Truncated { kind, needed, .. } => Error::Truncated {
                kind,
                len: n,
                needed: needed + tag_len,
            },
            e => e,
        })?;
        let auth_failed = Error::AuthenticationFailed {
            kind: PacketKind::Rtp,
        };

        let Context { rtp, rtp_rx, .. } = self;
        match rtp_rx.get_mut(&hdr.ssrc) {
            Some(window) => {
                let replayed = |index| Error::Replayed {
                    kind: PacketKind::Rtp,
                    ssrc: hdr.ssrc,
                    index,
                    window: replay::WINDOW,
                };
                let index =
                    index::estimate(window.top(), hdr.seq).ok_or(replayed(u64::from(hdr.seq)))?;
                if !window.check(index) {
                    return Err(replayed(index));
                }
                let out = rtp
                    .unprotect_rtp(buf, hdr.len, hdr.ssrc, index)
                    .ok_or(auth_failed)?;
                window.accept(index);
                Ok(out)
            }
            None => {
                // RFC 3711 §3.3.1: a receiver starts with ROC 0 and s_l = SEQ.
                let index = u64::from(hdr.seq);
                let out = rtp
                    .unprotect_rtp(buf, hdr.len, hdr.ssrc, index)
                    .ok_or(auth_failed)?;
                rtp_rx.insert(hdr.ssrc, ReplayWindow::new(index));
                Ok(out)
            }
        }
    }

    /// `buf[..len]` holds a plaintext (compound) RTCP packet; `buf` must have
    /// room for [`Profile::rtcp_overhead`] more bytes. Encrypts everything
    /// after the first 8 bytes, appends the `E || SRTCP index` word and the
    /// tag (in the order the profile requires) and returns the new length.
    /// The SRTCP index counts from 0 per sender SSRC (RFC 3711 §3.4).
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        check_max(PacketKind::Rtcp, len)?;
        let needed = len + self.profile.rtcp_overhead();
        check_room(buf, needed)?;
        let ssrc = rtcp::parse(&buf[..len])?;

        let Context { rtcp, rtcp_tx, .. } = self;
        let next = rtcp_tx.entry(ssrc).or_insert(0);
        if *next > rtcp::MAX_INDEX {
            return Err(Error::IndexExhausted {
                kind: PacketKind::Rtcp,
                ssrc,
            });
        }
        let out = rtcp
            .protect_rtcp(&mut buf[..needed], len, ssrc, *next)
            .ok_or(Error::PacketTooLarge {
                kind: PacketKind::Rtcp,
                len,
                max: MAX_PACKET_LEN,
            })?;
        *next += 1;
        Ok(out)
    }

    /// `buf` holds exactly one SRTCP packet. Reads the SRTCP index, rejects
    /// replays per sender SSRC, authenticates, decrypts in place if the E
    /// flag is set, and returns the plaintext RTCP length (`buf[..n]`).
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let n = buf.len();
        check_max(PacketKind::Rtcp, n)?;
        let min = rtcp::HEADER_LEN + self.profile.rtcp_overhead();
        if n < min {
            return Err(Error::Truncated {
                kind: PacketKind::Rtcp,
                len: n,
                needed: min,
            });
        }
        let ssrc = rtcp::parse(buf)?;
        let Context { rtcp, rtcp_rx, .. } = self;
        let off = rtcp.rtcp_word_offset(n);
        let word = u32::from_be_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]);
        let index = u64::from(word & rtcp::MAX_INDEX);
        let auth_failed = Error::AuthenticationFailed {
            kind: PacketKind::Rtcp,
        };

        match rtcp_rx.get_mut(&ssrc) {
            Some(window) => {
                if !window.check(index) {
                    return Err(Error::Replayed {
                        kind: PacketKind::Rtcp,
                        ssrc,
                        index,
                        window: replay::WINDOW,
                    });
                }
                let out = rtcp.unprotect_rtcp(buf, ssrc, word).ok_or(auth_failed)?;
                window.accept(index);
                Ok(out)
            }
            None => {
                let out = rtcp.unprotect_rtcp(buf, ssrc, word).ok_or(auth_failed)?;
                rtcp_rx.insert(ssrc, ReplayWindow::new(index));
                Ok(out)
            }
        }
    }
}

/// Which per-SSRC counter an entry of [`Context::indexes`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexKind {
    /// Highest SRTP index (`ROC * 2^16 + SEQ`) authenticated from the SSRC.
    RtpIn,
    /// Highest SRTP index protected for the SSRC.
    RtpOut,
    /// Next SRTCP index to send for the SSRC.
    RtcpOut,
}

fn check_max(kind: PacketKind, len: usize) -> Result<(), Error> {
    if len > MAX_PACKET_LEN {
        return Err(Error::PacketTooLarge {
            kind,
            len,
            max: MAX_PACKET_LEN,
        });
    }
    Ok(())
}

fn check_room(buf: &[u8], needed: usize) -> Result<(), Error> {
    if buf.len() < needed {
        return Err(Error::BufferTooSmall {
            needed,
            available: buf.len(),
        });
    }
    Ok(())
}
