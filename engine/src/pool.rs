//! Shared packet buffers for fan-out across workers.
//!
//! A packet decrypted once on its publisher's worker is copied once into a pooled buffer and shared by
//! reference count with every other worker that has subscribers for it; each of them encrypts its own
//! copy from that shared plaintext. The pool owns a fixed set of `Arc`s: a buffer is free again when
//! the pool holds its only reference (`Arc::get_mut` succeeds), so taking and returning buffers never
//! allocates and never locks.

use std::sync::Arc;

/// Largest datagram the engine forwards (an Ethernet MTU with room to spare).
pub const MAX_PACKET: usize = 2048;

/// One shared, immutable-once-filled packet.
pub struct PacketBuf {
    len: usize,
    data: [u8; MAX_PACKET],
}

impl PacketBuf {
    /// The packet bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// A worker's fixed set of shared buffers.
pub struct PacketPool {
    slots: Vec<Arc<PacketBuf>>,
    next: usize,
}

impl PacketPool {
    /// A pool of `n` buffers, allocated now.
    pub fn new(n: usize) -> PacketPool {
        let slots = (0..n.max(1)).map(|_| Arc::new(PacketBuf { len: 0, data: [0; MAX_PACKET] })).collect();
        PacketPool { slots, next: 0 }
    }

    /// Copies `bytes` into a free buffer and returns a shared reference to it, or `None` when every
    /// buffer is still referenced by a queue or another worker (or `bytes` is too long).
    pub fn share(&mut self, bytes: &[u8]) -> Option<Arc<PacketBuf>> {
        if bytes.len() > MAX_PACKET {
            return None;
        }
        let n = self.slots.len();
        for i in 0..n {
            let idx = (self.next + i) % n;
            if let Some(buf) = Arc::get_mut(&mut self.slots[idx]) {
                buf.data[..bytes.len()].copy_from_slice(bytes);
                buf.len = bytes.len();
                self.next = (idx + 1) % n;
                return Some(Arc::clone(&self.slots[idx]));
            }
        }
        None
    }

    /// Buffers currently free (for tests and stats).
    pub fn free(&self) -> usize {
        self.slots.iter().filter(|a| Arc::strong_count(a) == 1).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_when_all_references_drop() {
        let mut pool = PacketPool::new(2);
        let a = pool.share(b"one").unwrap();
        let b = pool.share(b"two").unwrap();
        assert!(pool.share(b"three").is_none(), "both buffers are in use");
        let a2 = Arc::clone(&a);
        drop(a);
        assert!(pool.share(b"x").is_none(), "a clone still holds the first buffer");
        drop(a2);
        let c = pool.share(b"three").unwrap();
        assert_eq!(c.bytes(), b"three");
        assert_eq!(b.bytes(), b"two");
        assert!(pool.share(&[0; MAX_PACKET + 1]).is_none());
    }
}
