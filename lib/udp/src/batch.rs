//! Fixed-capacity batch of outgoing datagrams.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::{SocketId, MAX_DATAGRAM};

/// Fixed-capacity batch of outgoing datagrams; buffers allocated once. Each slot is a
/// [`MAX_DATAGRAM`]-byte buffer plus its destination; [`UdpIo::send`](crate::UdpIo::send) sends
/// all queued datagrams in one go and clears the batch, so one batch is reused for the whole life
/// of a worker without further allocation. Each slot also names the socket it leaves through
/// ([`SocketId::PRIMARY`] unless queued with [`push_with_via`](Self::push_with_via)).
///
/// Datagrams go out in the order they were queued, except that
/// [`group_by_destination`](Self::group_by_destination) (which `UdpIo::send` applies) moves each
/// destination's datagrams together, keeping their order, so that they can leave as UDP GSO trains.
#[derive(Debug)]
pub struct SendBatch {
    bufs: Box<[u8]>,
    lens: Box<[u16]>,
    addrs: Box<[SocketAddr]>,
    vias: Box<[SocketId]>,
    len: usize,
    /// Send order: position `i` sends slot `order[i]` (`order[..len]` is a permutation of `0..len`).
    order: Box<[u32]>,
    /// Scratch of `group_by_destination`, allocated with the batch: per slot the next slot of its
    /// destination; per destination its first slot, its last slot and its entry in `table`.
    link: Box<[u32]>,
    heads: Box<[u32]>,
    tails: Box<[u32]>,
    entries: Box<[u32]>,
    /// Open-addressing table, destination -> index into `heads` + 1 (0: free), at least twice the
    /// capacity and a power of two; all free between calls.
    table: Box<[u32]>,
}

/// End of a destination's chain in `SendBatch::link`.
const END: u32 = u32::MAX;

impl SendBatch {
    /// Allocates a batch of `capacity` slots of [`MAX_DATAGRAM`] bytes (at least one slot). This
    /// is the only allocation the batch ever makes.
    pub fn new(capacity: usize) -> SendBatch {
        let capacity = capacity.max(1);
        let unspecified = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let slots = || vec![0u32; capacity].into_boxed_slice();
        SendBatch {
            bufs: vec![0u8; capacity * MAX_DATAGRAM].into_boxed_slice(),
            lens: vec![0u16; capacity].into_boxed_slice(),
            addrs: vec![unspecified; capacity].into_boxed_slice(),
            vias: vec![SocketId::PRIMARY; capacity].into_boxed_slice(),
            len: 0,
            order: (0..capacity as u32).collect(),
            link: slots(),
            heads: slots(),
            tails: slots(),
            entries: slots(),
            table: vec![0u32; (2 * capacity).next_power_of_two()].into_boxed_slice(),
        }
    }

    /// Reorders the queued datagrams so that each destination's (same socket, same address) are
    /// adjacent, in the order they were queued; destinations keep the order of their first
    /// datagram. Two datagrams to one destination are never swapped, so a receiver sees exactly
    /// the order it would have seen without it. The point is the send: consecutive equal-size
    /// datagrams to one address leave as one UDP GSO message, and a worker that forwards each
    /// packet to N subscribers in turn would otherwise queue a frame's packets interleaved with
    /// the other subscribers'. Linear in the queued datagrams; no allocation.
    pub fn group_by_destination(&mut self) {
        let n = self.len;
        if n < 3 {
            return;
        }
        let mask = self.table.len() - 1;
        let mut groups = 0usize;
        for i in 0..n {
            let s = self.order[i] as usize;
            let (via, to) = (self.vias[s], self.addrs[s]);
            let mut p = destination_hash(via, &to) & mask;
            loop {
                let e = self.table[p] as usize;
                if e == 0 {
                    self.table[p] = (groups + 1) as u32;
                    self.heads[groups] = s as u32;
                    self.tails[groups] = s as u32;
                    self.entries[groups] = p as u32;
                    groups += 1;
                    break;
                }
                let head = self.heads[e - 1] as usize;
                if self.addrs[head] == to && self.vias[head] == via {
                    self.link[self.tails[e - 1] as usize] = s as u32;
                    self.tails[e - 1] = s as u32;
                    break;
                }
                p = (p + 1) & mask;
            }
            self.link[s] = END;
        }
        for g in 0..groups {
            self.table[self.entries[g] as usize] = 0;
        }
        if groups == n {
            return; // every datagram to its own destination: nothing to move
        }
        let mut k = 0;
        for g in 0..groups {
            let mut s = self.heads[g];
            while s != END {
                self.order[k] = s;
                k += 1;
                s = self.link[s as usize];
            }
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
        // The free slots are order[len..]: a permutation of order[..len] by group_by_destination
        // leaves them where they were.
        let i = self.order[self.len] as usize;
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

    /// The socket the `i`-th datagram in send order leaves through. `None` past [`len`](Self::len).
    pub fn via(&self, i: usize) -> Option<SocketId> {
        if i >= self.len {
            return None;
        }
        Some(self.vias[self.order[i] as usize])
    }

    /// Drops every queued datagram (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The `i`-th datagram in send order (the order queued, unless
    /// [`group_by_destination`](Self::group_by_destination) moved it): destination and bytes.
    /// `None` past [`len`](Self::len).
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.len {
            return None;
        }
        let s = self.order[i] as usize;
        let start = s * MAX_DATAGRAM;
        Some((self.addrs[s], &self.bufs[start..start + usize::from(self.lens[s])]))
    }
}

/// A hash of a destination for `SendBatch::group_by_destination`'s table (multiplicative, good
/// enough to spread ports and addresses; the table compares the keys in full).
fn destination_hash(via: SocketId, to: &SocketAddr) -> usize {
    let key = match to {
        SocketAddr::V4(a) => u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()),
        SocketAddr::V6(a) => {
            let b = a.ip().to_bits();
            (b as u64) ^ ((b >> 64) as u64).rotate_left(17) ^ u64::from(a.port()) << 48
        }
    };
    let k = key ^ u64::from(via.as_u32()).rotate_left(40);
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
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

    #[test]
    fn grouping_keeps_each_destinations_order_and_moves_nothing_else() {
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let other = SocketId::from_raw(7);
        let mut batch = SendBatch::new(16);
        // (via, to, tag); the same address through another socket is another destination.
        let plan = [
            (SocketId::PRIMARY, a, 1u8),
            (SocketId::PRIMARY, b, 2),
            (SocketId::PRIMARY, a, 3),
            (other, a, 4),
            (SocketId::PRIMARY, c, 5),
            (SocketId::PRIMARY, b, 6),
            (SocketId::PRIMARY, a, 7),
            (other, a, 8),
        ];
        for (via, to, tag) in plan {
            assert!(batch.push_with_via(via, to, |buf| {
                buf[0] = tag;
                Some(1)
            }));
        }
        batch.group_by_destination();
        let got: Vec<(SocketId, SocketAddr, u8)> = (0..batch.len())
            .map(|i| {
                let (to, data) = batch.get(i).unwrap_or_else(|| unreachable!());
                (batch.via(i).unwrap_or_else(|| unreachable!()), to, data[0])
            })
            .collect();
        let p = SocketId::PRIMARY;
        assert_eq!(
            got,
            [(p, a, 1), (p, a, 3), (p, a, 7), (p, b, 2), (p, b, 6), (other, a, 4), (other, a, 8), (p, c, 5)]
        );
        // Queuing after a grouping uses a free slot (none of the eight is overwritten), and a
        // second grouping is stable.
        assert!(batch.push(b, &[9]));
        batch.group_by_destination();
        let tags: Vec<u8> = (0..batch.len()).map(|i| batch.get(i).map_or(0, |(_, d)| d[0])).collect();
        assert_eq!(tags, [1, 3, 7, 2, 6, 9, 4, 8, 5]);
        // Cleared, the batch fills all its slots again.
        batch.clear();
        for i in 0..16u8 {
            assert!(batch.push(a, &[i]));
        }
        assert!(batch.is_full());
        batch.group_by_destination();
        let tags: Vec<u8> = (0..16).map(|i| batch.get(i).map_or(99, |(_, d)| d[0])).collect();
        assert_eq!(tags, (0..16).collect::<Vec<u8>>());
    }
}
