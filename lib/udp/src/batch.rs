//! Fixed-capacity batch of outgoing datagrams.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::{SocketId, MAX_DATAGRAM};

/// Fixed-capacity batch of outgoing datagrams; buffers allocated once. Each slot is a
/// [`MAX_DATAGRAM`]-byte buffer plus its destination; [`UdpIo::send`](crate::UdpIo::send) sends
/// all queued datagrams in one go and clears the batch, so one batch is reused for the whole life
/// of a worker without further allocation. Each slot also names the socket it leaves through
/// ([`SocketId::PRIMARY`] unless queued with [`push_with_via`](Self::push_with_via)).
#[derive(Debug)]
pub struct SendBatch {
    bufs: Box<[u8]>,
    lens: Box<[u16]>,
    addrs: Box<[SocketAddr]>,
    vias: Box<[SocketId]>,
    len: usize,
}

impl SendBatch {
    /// Allocates a batch of `capacity` slots of [`MAX_DATAGRAM`] bytes (at least one slot). This
    /// is the only allocation the batch ever makes.
    pub fn new(capacity: usize) -> SendBatch {
        let capacity = capacity.max(1);
        let unspecified = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        SendBatch {
            bufs: vec![0u8; capacity * MAX_DATAGRAM].into_boxed_slice(),
            lens: vec![0u16; capacity].into_boxed_slice(),
            addrs: vec![unspecified; capacity].into_boxed_slice(),
            vias: vec![SocketId::PRIMARY; capacity].into_boxed_slice(),
            len: 0,
        }
    }

    /// How many datagrams are queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many datagrams the batch can hold.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// True when no further datagram can be queued until the batch is sent or cleared.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// True when no datagram is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes one datagram in place: `fill` gets the next slot's [`MAX_DATAGRAM`]-byte buffer and
    /// returns the length to send (or `None` to abandon the slot, which then stays free; a length
    /// above the buffer size also abandons it). Returns `false` without calling `fill` when the
    /// batch is full, `true` otherwise (even if `fill` abandoned the slot).
    #[inline]
    pub fn push_with(&mut self, to: SocketAddr, fill: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        self.push_with_via(SocketId::PRIMARY, to, fill)
    }

    /// [`push_with`](Self::push_with) for a datagram that leaves through socket `via` (an extra
    /// socket added with [`UdpIo::add_socket`](crate::UdpIo::add_socket), or the primary one). A
    /// datagram whose socket was removed before the batch is sent counts as failed.
    pub fn push_with_via(
        &mut self,
        via: SocketId,
        to: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.len;
        let buf = &mut self.bufs[i * MAX_DATAGRAM..(i + 1) * MAX_DATAGRAM];
        if let Some(n) = fill(buf) {
            if n <= MAX_DATAGRAM {
                // n <= 2048 fits in u16.
                self.lens[i] = n as u16;
                self.addrs[i] = to;
                self.vias[i] = via;
                self.len += 1;
            }
        }
        true
    }

    /// Copies `data` into the next slot, addressed to `to`. Returns `false` if the batch is full;
    /// data longer than [`MAX_DATAGRAM`] is not queued (and `true` is returned, as with an
    /// abandoned [`push_with`](Self::push_with) slot).
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        self.push_with(to, |buf| {
            let dst = buf.get_mut(..data.len())?;
            dst.copy_from_slice(data);
            Some(data.len())
        })
    }

    /// The socket the `i`-th queued datagram leaves through. `None` past [`len`](Self::len).
    pub fn via(&self, i: usize) -> Option<SocketId> {
        if i >= self.len {
            return None;
        }
        Some(self.vias[i])
    }

    /// Drops every queued datagram (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The `i`-th queued datagram: destination and bytes. `None` past [`len`](Self::len).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.len {
            return None;
        }
        let start = i * MAX_DATAGRAM;
        Some((self.addrs[i], &self.bufs[start..start + usize::from(self.lens[i])]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_fill_clear() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap_or_else(|_| unreachable!());
        let mut b = SendBatch::new(2);
        assert!(b.is_empty());
        assert!(b.push(to, b"abc"));
        assert!(b.push_with(to, |_| None));
        assert_eq!(b.len(), 1);
        assert!(b.push_with(to, |buf| {
            assert_eq!(buf.len(), MAX_DATAGRAM);
            buf[..2].copy_from_slice(b"xy");
            Some(2)
        }));
        assert!(b.is_full());
        assert!(!b.push(to, b"z"));
        assert_eq!(b.get(0), Some((to, &b"abc"[..])));
        assert_eq!(b.get(1), Some((to, &b"xy"[..])));
        assert_eq!(b.get(2), None);
        assert_eq!(b.via(0), Some(SocketId::PRIMARY));
        assert_eq!(b.via(2), None);
        b.clear();
        assert!(b.is_empty());
        assert!(b.push(to, &[0u8; MAX_DATAGRAM]));
        assert!(b.push(to, &[0u8; MAX_DATAGRAM + 1]));
        assert_eq!(b.len(), 1);
    }
}
