//! A transport: one participant's bundled connection (ICE credentials, the addresses that passed ICE,
//! SRTP contexts). It lives on exactly one worker and is touched only by that worker's thread.

use std::net::SocketAddr;
use std::time::Instant;

use switchyard_protocol::{HeaderExtIds, TransportId};
use switchyard_srtp::Context;

use crate::media::estimator::Estimator;
use crate::rtp::{TokenBucket, TwccRecorder};

/// How many distinct remote addresses may pass ICE for one transport (one per candidate pair a client
/// checks; browsers use one or two).
pub const MAX_VALIDATED: usize = 4;

/// DTLS datagrams a transport may punt per second, with a burst allowance: a handshake needs a
/// handful, so this only bites on a flood.
const DTLS_RATE_PER_SEC: f64 = 50.0;
const DTLS_BURST: f64 = 100.0;

/// One participant's connection as the engine holds it.
pub struct Transport {
    /// The control daemon's id.
    pub id: TransportId,
    /// Our ICE ufrag (the first half of incoming USERNAME).
    pub ufrag: String,
    /// Our ICE password: the MESSAGE-INTEGRITY key of incoming checks.
    pub pwd: String,
    /// The address media is sent to: the nominated one (or the first that passed a check).
    pub remote: Option<SocketAddr>,
    /// Every address that passed a check; packets from these are accepted.
    pub validated: [Option<SocketAddr>; MAX_VALIDATED],
    /// SRTP context for what the peer sends us.
    pub srtp_in: Option<Context>,
    /// SRTP context for what we send the peer.
    pub srtp_out: Option<Context>,
    /// Last datagram received from the peer.
    pub last_rx: Instant,
    /// Header-extension ids the peer uses in what it sends (`SetExtensions`).
    pub ext: HeaderExtIds,
    /// Arrival times by transport-wide sequence number, for TWCC feedback to the peer (a publisher
    /// that negotiated transport-cc).
    pub twcc_rx: Option<Box<TwccRecorder>>,
    /// Bandwidth estimate towards the peer (a subscriber), from its TWCC feedback and REMB.
    pub estimator: Option<Box<Estimator>>,
    /// Whether the peer ever sent TWCC feedback or REMB (without, the estimate means nothing).
    pub estimator_fed: bool,
    /// Next transport-wide sequence number stamped into what we send the peer.
    pub twcc_seq: u16,
    /// Bytes sent to the peer since the last tick (to tell an application-limited sender).
    pub sent_bytes: u64,
    /// `SetSendCap`: what we send the peer is policed to this.
    pub send_cap: Option<TokenBucket>,
    /// Round-trip time to the peer from its receiver reports, ms (0 = unknown).
    pub rtt_ms: u32,
    dtls_tokens: f64,
    dtls_refilled: Instant,
}

impl Transport {
    /// A transport that has not yet passed ICE.
    pub fn new(id: TransportId, ufrag: String, pwd: String, now: Instant) -> Transport {
        Transport {
            id,
            ufrag,
            pwd,
            remote: None,
            validated: [None; MAX_VALIDATED],
            srtp_in: None,
            srtp_out: None,
            last_rx: now,
            ext: HeaderExtIds::default(),
            twcc_rx: None,
            estimator: None,
            estimator_fed: false,
            twcc_seq: 0,
            sent_bytes: 0,
            send_cap: None,
            rtt_ms: 0,
            dtls_tokens: DTLS_BURST,
            dtls_refilled: now,
        }
    }

    /// Records that `addr` passed a check. Returns the address evicted to make room, if any (the
    /// oldest non-selected one), so the caller can forget it in its address map.
    pub fn validate(&mut self, addr: SocketAddr) -> Option<SocketAddr> {
        if self.validated.contains(&Some(addr)) {
            return None;
        }
        if let Some(slot) = self.validated.iter_mut().find(|s| s.is_none()) {
            *slot = Some(addr);
            return None;
        }
        // Full: replace the first entry that is not the selected address.
        let idx = self.validated.iter().position(|s| *s != self.remote).unwrap_or(0);
        let evicted = self.validated[idx].replace(addr);
        // Keep insertion order roughly oldest-first.
        self.validated[idx..].rotate_left(1);
        evicted
    }

    /// Takes one DTLS punt token; false when the transport is over its rate.
    pub fn take_dtls_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.dtls_refilled).as_secs_f64();
        self.dtls_refilled = now;
        self.dtls_tokens = (self.dtls_tokens + elapsed * DTLS_RATE_PER_SEC).min(DTLS_BURST);
        if self.dtls_tokens >= 1.0 {
            self.dtls_tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn validated_addresses_are_bounded_and_keep_the_selected_one() {
        let mut t = Transport::new(1, "u".into(), "p".into(), Instant::now());
        for p in 1..=4 {
            assert_eq!(t.validate(a(p)), None);
        }
        t.remote = Some(a(1));
        assert_eq!(t.validate(a(2)), None, "already known");
        let evicted = t.validate(a(5));
        assert_eq!(evicted, Some(a(2)));
        assert!(t.validated.contains(&Some(a(1))));
        assert!(t.validated.contains(&Some(a(5))));
    }

    #[test]
    fn dtls_punts_are_rate_limited() {
        let now = Instant::now();
        let mut t = Transport::new(1, "u".into(), "p".into(), now);
        let allowed = (0..1000).filter(|_| t.take_dtls_token(now)).count();
        assert_eq!(allowed, 100);
        assert!(t.take_dtls_token(now + std::time::Duration::from_millis(100)));
    }
}
