//! Keyframe-request coalescing for one publisher stream.
//!
//! Many subscribers of one stream ask for a keyframe at once (a new subscriber joins, a layer switch,
//! packet loss on several downlinks). The publisher needs one request, not one per subscriber, and
//! not more often than it can usefully produce keyframes. [`KeyframeRequester`] sends the first request
//! at once, then at most one per `interval_ms`: requests inside the interval are remembered and sent
//! together when it ends, unless a keyframe arrived meanwhile (which answers them).
//!
//! FIR carries a command sequence number (RFC 5104 §4.3.1.2): it increases by one for each *new*
//! request and stays the same when the same request is repeated (e.g. no keyframe came and the
//! interval passed). PLI has no sequence number. If any coalesced request was a FIR, a FIR is sent.
//!
//! Subscribers repeat their own FIRs with the same sequence number; [`FirDedup`] tells a repeat from a
//! new request so a repeat does not count as a new one.

/// What to ask the publisher for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Picture loss indication.
    Pli,
    /// Full intra request, with its command sequence number.
    Fir {
        /// RFC 5104 command sequence number.
        seq: u8,
    },
}

/// What kind of request a subscriber (or the control daemon) made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PLI.
    Pli,
    /// FIR.
    Fir,
}

/// Coalesces keyframe requests for one publisher stream.
#[derive(Debug, Clone)]
pub struct KeyframeRequester {
    interval_ms: u64,
    last_sent_ms: Option<u64>,
    /// A request waiting for the interval to end: whether any of them was a FIR.
    pending: Option<Kind>,
    /// Sent and not yet answered by a keyframe (a repeat after the interval reuses the FIR seq).
    outstanding: bool,
    fir_seq: u8,
    fir_used: bool,
    /// Requests received, and requests sent upstream.
    received: u64,
    sent: u64,
}

impl KeyframeRequester {
    /// At most one upstream request per `interval_ms` (e.g. 500).
    pub fn new(interval_ms: u64) -> KeyframeRequester {
        KeyframeRequester {
            interval_ms,
            last_sent_ms: None,
            pending: None,
            outstanding: false,
            fir_seq: 0,
            fir_used: false,
            received: 0,
            sent: 0,
        }
    }

    /// (requests received, requests sent upstream).
    pub fn counts(&self) -> (u64, u64) {
        (self.received, self.sent)
    }

    fn emit(&mut self, kind: Kind, now_ms: u64, repeat: bool) -> Request {
        self.last_sent_ms = Some(now_ms);
        self.pending = None;
        self.outstanding = true;
        self.sent += 1;
        match kind {
            Kind::Pli => Request::Pli,
            Kind::Fir => {
                if self.fir_used && !repeat {
                    self.fir_seq = self.fir_seq.wrapping_add(1);
                }
                self.fir_used = true;
                Request::Fir { seq: self.fir_seq }
            }
        }
    }

    fn due(&self, now_ms: u64) -> bool {
        self.last_sent_ms.is_none_or(|t| now_ms.saturating_sub(t) >= self.interval_ms)
    }

    /// A subscriber asks for a keyframe. Returns the request to send upstream now, if any; otherwise
    /// it is remembered for [`KeyframeRequester::poll`].
    pub fn request(&mut self, kind: Kind, now_ms: u64) -> Option<Request> {
        self.received += 1;
        let kind = match (self.pending, kind) {
            (Some(Kind::Fir), _) | (_, Kind::Fir) => Kind::Fir,
            _ => Kind::Pli,
        };
        if self.due(now_ms) {
            // New unless the previous request is still unanswered (then the same keyframe answers both).
            let repeat = self.outstanding;
            Some(self.emit(kind, now_ms, repeat))
        } else {
            self.pending = Some(kind);
            None
        }
    }

    /// Call periodically (every few tens of ms): sends a remembered request once the interval ended.
    /// If a request is outstanding and no keyframe arrived, this also repeats it (a repeated FIR keeps
    /// its sequence number), so a lost request does not leave subscribers frozen.
    pub fn poll(&mut self, now_ms: u64) -> Option<Request> {
        if !self.due(now_ms) {
            return None;
        }
        if let Some(kind) = self.pending {
            let repeat = self.outstanding;
            return Some(self.emit(kind, now_ms, repeat));
        }
        None
    }

    /// The publisher sent a keyframe: outstanding and pending requests are answered.
    pub fn on_keyframe(&mut self) {
        self.pending = None;
        self.outstanding = false;
    }

    /// The upstream request was not answered and the caller wants it repeated at the next poll (e.g.
    /// no keyframe within a timeout).
    pub fn retry(&mut self, kind: Kind) {
        if self.outstanding && self.pending.is_none() {
            self.pending = Some(kind);
        }
    }
}

/// Tells a subscriber's new FIR from a repetition (RFC 5104 §4.3.1.2), per subscriber and stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirDedup {
    last: Option<u8>,
}

impl FirDedup {
    /// True if `seq` is a new request.
    pub fn is_new(&mut self, seq: u8) -> bool {
        if self.last == Some(seq) {
            return false;
        }
        self.last = Some(seq);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_subscribers_one_request_per_interval() {
        let mut k = KeyframeRequester::new(500);
        assert_eq!(k.request(Kind::Pli, 1000), Some(Request::Pli), "first request goes at once");
        // 50 subscribers ask within the interval.
        for i in 0..50 {
            assert_eq!(k.request(Kind::Pli, 1000 + i * 5), None);
        }
        assert_eq!(k.poll(1400), None);
        assert_eq!(k.poll(1500), Some(Request::Pli), "coalesced into one");
        assert_eq!(k.poll(1600), None, "nothing pending");
        assert_eq!(k.counts(), (51, 2));
        // Over 10 s of a request every 10 ms: at most one upstream per 500 ms.
        let mut sent = 0;
        for t in (2000..12_000).step_by(10) {
            sent += k.request(Kind::Pli, t).is_some() as u32;
            sent += k.poll(t).is_some() as u32;
        }
        assert!((19..=21).contains(&sent), "{sent}");
    }

    #[test]
    fn keyframe_answers_pending() {
        let mut k = KeyframeRequester::new(500);
        assert!(k.request(Kind::Pli, 0).is_some());
        assert!(k.request(Kind::Pli, 100).is_none());
        k.on_keyframe();
        assert_eq!(k.poll(600), None, "the keyframe answered it");
    }

    #[test]
    fn fir_sequence_numbers() {
        let mut k = KeyframeRequester::new(500);
        assert_eq!(k.request(Kind::Fir, 0), Some(Request::Fir { seq: 0 }));
        k.on_keyframe();
        assert_eq!(k.request(Kind::Fir, 600), Some(Request::Fir { seq: 1 }), "new request: seq + 1");
        // Not answered: the caller repeats it; the repeat keeps seq 1.
        k.retry(Kind::Fir);
        assert_eq!(k.poll(1100), Some(Request::Fir { seq: 1 }));
        k.on_keyframe();
        // A PLI and a FIR coalesced: FIR wins, and it is new.
        assert_eq!(k.request(Kind::Pli, 1200), None);
        assert_eq!(k.request(Kind::Fir, 1300), None);
        assert_eq!(k.poll(1600), Some(Request::Fir { seq: 2 }));
        // Wraps at 255.
        for i in 0..300u64 {
            k.on_keyframe();
            assert!(k.request(Kind::Fir, 2100 + i * 500).is_some());
        }
        k.on_keyframe();
        assert_eq!(k.request(Kind::Fir, 1_000_000), Some(Request::Fir { seq: ((2 + 301) % 256) as u8 }));
    }

    #[test]
    fn fir_dedup() {
        let mut d = FirDedup::default();
        assert!(d.is_new(5));
        assert!(!d.is_new(5));
        assert!(d.is_new(6));
    }
}
