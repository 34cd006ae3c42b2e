//! Per-worker counters. Each worker writes only its own (relaxed atomics on its own cache lines); the
//! control thread reads them for the Stats reply, so reading never stops forwarding.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a datagram was dropped. The names are the `reason` label of `switchyard_engine_drops_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// First byte outside the RFC 7983 STUN / DTLS / RTP ranges.
    NotWebrtc,
    /// STUN that does not parse.
    StunMalformed,
    /// A STUN message that is not a binding request (we are ICE-lite: we never send checks).
    StunUnexpected,
    /// A binding request whose USERNAME names no transport on this worker.
    StunUnknownUfrag,
    /// A binding request whose MESSAGE-INTEGRITY or FINGERPRINT does not verify.
    StunBadIntegrity,
    /// DTLS or SRTP from an address that has not passed an ICE check.
    UnboundSource,
    /// SRTP before the DTLS handshake installed keys.
    NoSrtpKeys,
    /// SRTP/SRTCP that fails authentication.
    SrtpAuth,
    /// SRTP/SRTCP already received (replay window).
    SrtpReplay,
    /// SRTP/SRTCP with a malformed header or length.
    SrtpMalformed,
    /// DTLS beyond the per-transport punt rate.
    DtlsRateLimited,
    /// The control daemon is not taking events fast enough.
    EventQueueFull,
    /// A cross-worker hand-off queue was full.
    HandoffQueueFull,
    /// Every shared packet buffer was still in flight.
    PoolExhausted,
    /// The send batch had no room.
    SendBatchFull,
    /// The kernel refused a send.
    SendFailed,
    /// A hand-off for a transport that was removed meanwhile.
    StaleHandoff,
    /// Encrypting for a subscriber failed (no keys yet, packet too large).
    ProtectFailed,
    // ---- TURN (engine/src/turn) ----
    /// A datagram on the TURN port that is neither STUN nor ChannelData, or does not parse.
    TurnMalformed,
    /// TURN data (ChannelData, Send indication, a peer's datagram) for no live allocation.
    TurnNoAllocation,
    /// TURN data to or from a peer without a permission (or on an unbound channel).
    TurnNoPermission,
    /// ChannelData (first byte 64..=79) on a media port: TURN listens on its own port.
    TurnWrongPort,
    // ---- media quality (issue 7) ----
    /// A sequence number a subscriber NACKed that its retransmission cache no longer (or never) held.
    NackCacheMiss,
    /// A packet of a simulcast layer the subscriber is not receiving (normal: one copy per layer per
    /// subscriber is looked at, one layer is sent).
    LayerNotSelected,
    /// Video withheld from a subscriber whose bandwidth estimate does not fit even the lowest layer.
    Paused,
    /// Dropped by a transport's send cap (`SetSendCap`).
    SendCap,
    /// RTP from a publisher whose SSRC belongs to none of its tracks (and could not be learned).
    UnknownSsrc,
    /// A padding-only packet (a sender's bandwidth probe) not forwarded to a subscriber (the
    /// subscriber's sequence numbers close over it).
    PaddingOnly,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 28] = [
        DropReason::NotWebrtc,
        DropReason::StunMalformed,
        DropReason::StunUnexpected,
        DropReason::StunUnknownUfrag,
        DropReason::StunBadIntegrity,
        DropReason::UnboundSource,
        DropReason::NoSrtpKeys,
        DropReason::SrtpAuth,
        DropReason::SrtpReplay,
        DropReason::SrtpMalformed,
        DropReason::DtlsRateLimited,
        DropReason::EventQueueFull,
        DropReason::HandoffQueueFull,
        DropReason::PoolExhausted,
        DropReason::SendBatchFull,
        DropReason::SendFailed,
        DropReason::StaleHandoff,
        DropReason::ProtectFailed,
        DropReason::TurnMalformed,
        DropReason::TurnNoAllocation,
        DropReason::TurnNoPermission,
        DropReason::TurnWrongPort,
        DropReason::NackCacheMiss,
        DropReason::LayerNotSelected,
        DropReason::Paused,
        DropReason::SendCap,
        DropReason::UnknownSsrc,
        DropReason::PaddingOnly,
    ];

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotWebrtc => "not_webrtc",
            DropReason::StunMalformed => "stun_malformed",
            DropReason::StunUnexpected => "stun_unexpected",
            DropReason::StunUnknownUfrag => "stun_unknown_ufrag",
            DropReason::StunBadIntegrity => "stun_bad_integrity",
            DropReason::UnboundSource => "unbound_source",
            DropReason::NoSrtpKeys => "no_srtp_keys",
            DropReason::SrtpAuth => "srtp_auth",
            DropReason::SrtpReplay => "srtp_replay",
            DropReason::SrtpMalformed => "srtp_malformed",
            DropReason::DtlsRateLimited => "dtls_rate_limited",
            DropReason::EventQueueFull => "event_queue_full",
            DropReason::HandoffQueueFull => "handoff_queue_full",
            DropReason::PoolExhausted => "pool_exhausted",
            DropReason::SendBatchFull => "send_batch_full",
            DropReason::SendFailed => "send_failed",
            DropReason::StaleHandoff => "stale_handoff",
            DropReason::ProtectFailed => "protect_failed",
            DropReason::TurnMalformed => "turn_malformed",
            DropReason::TurnNoAllocation => "turn_no_allocation",
            DropReason::TurnNoPermission => "turn_no_permission",
            DropReason::TurnWrongPort => "turn_wrong_port",
            DropReason::NackCacheMiss => "nack_cache_miss",
            DropReason::LayerNotSelected => "layer_not_selected",
            DropReason::Paused => "paused",
            DropReason::SendCap => "send_cap",
            DropReason::UnknownSsrc => "unknown_ssrc",
            DropReason::PaddingOnly => "padding_only",
        }
    }
}

/// A monotonically increasing per-worker counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Datagrams received.
    RxPackets,
    /// Bytes received.
    RxBytes,
    /// Datagrams sent.
    TxPackets,
    /// Bytes sent.
    TxBytes,
    /// RTP packets forwarded to a subscriber (one per copy).
    RtpForwarded,
    /// RTCP packets forwarded to a subscriber or publisher.
    RtcpForwarded,
    /// Binding requests answered.
    StunAnswered,
    /// DTLS datagrams punted to the control daemon.
    DtlsIn,
    /// DTLS datagrams sent for the control daemon.
    DtlsOut,
    /// Packets handed to another worker.
    HandoffsOut,
    /// Packets received from another worker.
    HandoffsIn,
    // ---- TURN (engine/src/turn) ----
    /// TURN allocations created.
    TurnAllocations,
    /// TURN allocations ended (deleted by the client or expired).
    TurnAllocationsClosed,
    /// Datagrams relayed from a TURN client to a peer.
    TurnRelayedToPeer,
    /// Datagrams relayed from a peer to a TURN client.
    TurnRelayedToClient,
    /// TURN requests refused for bad, unknown or expired credentials (not counting the first 401
    /// challenge every client gets).
    TurnAuthFailures,
    /// Allocate requests refused with 486 Allocation Quota Reached.
    TurnQuotaRejections,
    /// STUN Binding requests answered on the TURN port (NAT discovery).
    TurnBindings,
    // ---- media quality (issue 7) ----
    /// Sequence numbers subscribers NACKed (each is answered, `rtx_sent`, or missed, `nack_cache_miss`).
    NackReceived,
    /// Retransmissions answered from a subscription's cache.
    RtxSent,
    /// NACK packets sent to publishers.
    NackSent,
    /// Keyframe requests (PLI/FIR) sent to publishers.
    KeyframeRequestsSent,
    /// Keyframe requests absorbed by coalescing (answered by one already sent or pending).
    KeyframeRequestsCoalesced,
    /// Sender reports sent to subscribers.
    SrSent,
    /// Receiver reports sent to publishers.
    RrSent,
    /// TWCC feedback packets sent to publishers.
    TwccSent,
    /// Simulcast layer switches (a subscriber's stream moved to another layer at a keyframe).
    LayerSwitches,
}

impl Counter {
    /// Every counter, in order.
    pub const ALL: [Counter; 27] = [
        Counter::RxPackets,
        Counter::RxBytes,
        Counter::TxPackets,
        Counter::TxBytes,
        Counter::RtpForwarded,
        Counter::RtcpForwarded,
        Counter::StunAnswered,
        Counter::DtlsIn,
        Counter::DtlsOut,
        Counter::HandoffsOut,
        Counter::HandoffsIn,
        Counter::TurnAllocations,
        Counter::TurnAllocationsClosed,
        Counter::TurnRelayedToPeer,
        Counter::TurnRelayedToClient,
        Counter::TurnAuthFailures,
        Counter::TurnQuotaRejections,
        Counter::TurnBindings,
        Counter::NackReceived,
        Counter::RtxSent,
        Counter::NackSent,
        Counter::KeyframeRequestsSent,
        Counter::KeyframeRequestsCoalesced,
        Counter::SrSent,
        Counter::RrSent,
        Counter::TwccSent,
        Counter::LayerSwitches,
    ];

    /// The metrics name suffix.
    pub fn name(self) -> &'static str {
        match self {
            Counter::RxPackets => "rx_packets",
            Counter::RxBytes => "rx_bytes",
            Counter::TxPackets => "tx_packets",
            Counter::TxBytes => "tx_bytes",
            Counter::RtpForwarded => "rtp_forwarded",
            Counter::RtcpForwarded => "rtcp_forwarded",
            Counter::StunAnswered => "stun_answered",
            Counter::DtlsIn => "dtls_in",
            Counter::DtlsOut => "dtls_out",
            Counter::HandoffsOut => "handoffs_out",
            Counter::HandoffsIn => "handoffs_in",
            Counter::TurnAllocations => "turn_allocations",
            Counter::TurnAllocationsClosed => "turn_allocations_closed",
            Counter::TurnRelayedToPeer => "turn_relayed_to_peer",
            Counter::TurnRelayedToClient => "turn_relayed_to_client",
            Counter::TurnAuthFailures => "turn_auth_failures",
            Counter::TurnQuotaRejections => "turn_quota_rejections",
            Counter::TurnBindings => "turn_bindings",
            Counter::NackReceived => "nack_received",
            Counter::RtxSent => "rtx_sent",
            Counter::NackSent => "nack_sent",
            Counter::KeyframeRequestsSent => "keyframe_requests_sent",
            Counter::KeyframeRequestsCoalesced => "keyframe_requests_coalesced",
            Counter::SrSent => "sr_sent",
            Counter::RrSent => "rr_sent",
            Counter::TwccSent => "twcc_sent",
            Counter::LayerSwitches => "layer_switches",
        }
    }
}

/// One worker's counters, padded so two workers never share a cache line.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct WorkerCounters {
    counters: [AtomicU64; Counter::ALL.len()],
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl WorkerCounters {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one dropped datagram.
    #[inline]
    pub fn drop_one(&self, r: DropReason) {
        self.drops[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }

    /// Reads a drop counter.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize].load(Ordering::Relaxed)
    }

    /// All counters as `(name, value)`.
    pub fn counters_named(&self) -> Vec<(String, u64)> {
        Counter::ALL.iter().map(|c| (c.name().to_string(), self.get(*c))).collect()
    }

    /// All drop counters as `(reason, value)`.
    pub fn drops_named(&self) -> Vec<(String, u64)> {
        DropReason::ALL.iter().map(|r| (r.name().to_string(), self.dropped(*r))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_order_matches_all_arrays() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
