//! Lock-free hand-off of shared packets between workers.
//!
//! Every ordered pair of workers has its own bounded single-producer queue (crossbeam's `ArrayQueue`,
//! preallocated), so a worker never contends with more than one other thread on a queue and pushing
//! never allocates. After pushing, the producer wakes the consumer only if it announced it was going
//! to sleep (see `switchyard_udp::Waker`), which keeps the wake-up syscall off the common path.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use switchyard_protocol::TransportId;
use switchyard_udp::Waker;

use crate::pool::PacketBuf;

/// What a hand-off carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A decrypted RTP packet to encrypt and send as it is.
    Rtp,
    /// A decrypted RTCP compound packet to encrypt and send as it is.
    Rtcp,
    /// A publisher's RTP packet for one of the destination's subscriptions ([`MediaMeta`] says which
    /// track and layer); the destination's worker rewrites it for the subscriber.
    Media,
    /// The publisher's latest sender report for a layer ([`MediaMeta::ntp`], [`MediaMeta::rtp_ts`]),
    /// for the destination's subscriptions to translate into their own; no packet.
    SenderInfo,
    /// A subscriber asks the destination (the publisher) for a keyframe of [`MediaMeta::track`],
    /// layer [`MediaMeta::layer`] (a FIR if [`MediaMeta::fir`]); no packet.
    KeyframeRequest,
}

/// What the subscriber's worker needs to know about a forwarded packet besides its bytes (filled on
/// the publisher's worker, copied with the hand-off: no allocation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaMeta {
    /// The publishing transport.
    pub publisher: TransportId,
    /// Its track.
    pub track: u32,
    /// Simulcast layer (0 = lowest).
    pub layer: u8,
    /// The packet starts a keyframe.
    pub keyframe: bool,
    /// For a keyframe request: FIR rather than PLI.
    pub fir: bool,
    /// The layer's frame height (from its last keyframe; 0 = unknown).
    pub height: u16,
    /// The layer's bitrate measured over the last second, bits per second.
    pub layer_bps: u32,
    /// Offset of the transport-wide sequence number in the packet (0 = none).
    pub twcc_offset: u16,
    /// Sender-report NTP time.
    pub ntp: u64,
    /// Sender-report RTP time.
    pub rtp_ts: u32,
}

/// A packet (or a small message) for one transport on another worker.
pub struct Handoff {
    /// The destination transport.
    pub transport: TransportId,
    /// The shared plaintext (`None` for [`PacketKind::SenderInfo`] and
    /// [`PacketKind::KeyframeRequest`]).
    pub packet: Option<Arc<PacketBuf>>,
    /// What it is.
    pub kind: PacketKind,
    /// When the original datagram was received (for the latency histogram).
    pub received: Instant,
    /// About a media packet, sender report or keyframe request.
    pub meta: MediaMeta,
}

/// The queues between all workers: `queue(from, to)`.
pub struct HandoffMesh {
    workers: usize,
    queues: Vec<ArrayQueue<Handoff>>,
    wakers: Vec<Waker>,
}

impl HandoffMesh {
    /// Queues of `capacity` entries for every ordered pair of `wakers.len()` workers.
    pub fn new(wakers: Vec<Waker>, capacity: usize) -> HandoffMesh {
        let workers = wakers.len();
        let queues = (0..workers * workers).map(|_| ArrayQueue::new(capacity.max(1))).collect();
        HandoffMesh { workers, queues, wakers }
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    fn queue(&self, from: usize, to: usize) -> &ArrayQueue<Handoff> {
        &self.queues[from * self.workers + to]
    }

    /// Pushes a hand-off from worker `from` to worker `to`; gives it back if the queue is full.
    #[inline]
    pub fn push(&self, from: usize, to: usize, h: Handoff) -> Result<(), Handoff> {
        self.queue(from, to).push(h)
    }

    /// Wakes worker `to` if it is asleep. Call once after a burst of pushes.
    #[inline]
    pub fn wake(&self, to: usize) {
        if let Some(w) = self.wakers.get(to) {
            w.wake();
        }
    }

    /// Takes the next hand-off for worker `to` from any other worker.
    #[inline]
    pub fn pop(&self, to: usize, start: &mut usize) -> Option<Handoff> {
        for i in 0..self.workers {
            let from = (*start + i) % self.workers;
            if from == to {
                continue;
            }
            if let Some(h) = self.queue(from, to).pop() {
                *start = from;
                return Some(h);
            }
        }
        None
    }

    /// Whether anything waits for worker `to`.
    pub fn pending(&self, to: usize) -> bool {
        (0..self.workers).any(|from| from != to && !self.queue(from, to).is_empty())
    }
}
