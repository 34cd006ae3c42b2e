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
    /// A decrypted RTP packet for a subscriber.
    Rtp,
    /// A decrypted RTCP compound packet for a subscriber or publisher.
    Rtcp,
}

/// A decrypted packet for one transport on another worker, which encrypts and sends it.
pub struct Handoff {
    /// The destination transport.
    pub transport: TransportId,
    /// The shared plaintext.
    pub packet: Arc<PacketBuf>,
    /// RTP or RTCP.
    pub kind: PacketKind,
    /// When the original datagram was received (for the latency histogram).
    pub received: Instant,
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
