//! Extra sockets of a [`UdpIo`](crate::UdpIo): a set of further UDP sockets (a TURN listener, TURN
//! relay sockets) that the same worker receives from and sends through, next to its primary socket.
//!
//! Whatever the backend, extra sockets are watched by one level-triggered epoll instance and read
//! with `recvmmsg(2)` into buffers allocated when the first extra socket is added; the backend's
//! wait (ppoll for mmsg, a poll entry on the io_uring ring) includes the epoll descriptor, so a
//! datagram on any extra socket wakes the worker like one on the primary socket. Sends go through
//! the backend's normal batch path, each datagram through the socket named in the
//! [`SendBatch`](crate::SendBatch) slot. Adding and removing sockets allocates (rarely: once per
//! TURN allocation); receiving and sending does not.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use socket2::Socket;

use crate::sock::{self, is_fatal_recv_errno};
use crate::{Pass, MAX_DATAGRAM};

/// Identifies one socket of a [`UdpIo`](crate::UdpIo): [`SocketId::PRIMARY`] is the socket it was
/// bound with, further ids come from [`UdpIo::add_socket`](crate::UdpIo::add_socket). Ids carry a
/// generation, so the id of a removed socket never names a socket added later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u32);

impl SocketId {
    /// The socket the [`UdpIo`](crate::UdpIo) was bound with.
    pub const PRIMARY: SocketId = SocketId(0);

    fn extra(slot: u16, gen: u16) -> SocketId {
        // slot + 1 in the low half keeps 0 for the primary socket.
        SocketId((u32::from(gen) << 16) | (u32::from(slot) + 1))
    }

    /// (slot, generation) of an extra socket; `None` for the primary socket.
    fn parts(self) -> Option<(u16, u16)> {
        let low = (self.0 & 0xFFFF) as u16;
        let slot = low.checked_sub(1)?;
        Some((slot, (self.0 >> 16) as u16))
    }

    /// The raw value (for logs and hashing); stable for the life of the socket.
    pub fn as_u32(self) -> u32 {
        self.0
    }

    /// An id from a raw value, for test doubles of code that takes ids. A made-up value names no
    /// socket (sends through it fail) unless it happens to equal a live socket's id.
    pub const fn from_raw(raw: u32) -> SocketId {
        SocketId(raw)
    }
}

/// The largest number of extra sockets one [`UdpIo`](crate::UdpIo) can hold.
pub const MAX_EXTRA_SOCKETS: usize = 65_535;

/// epoll events fetched per `epoll_wait`.
const EVENTS: usize = 64;

struct Slot {
    socket: Option<Socket>,
    gen: u16,
    v6: bool,
}

/// The extra sockets and their receive machinery. Empty (no epoll instance, no buffers) until the
/// first socket is added.
pub(crate) struct Extras {
    epoll: Option<OwnedFd>,
    slots: Vec<Slot>,
    free: Vec<u16>,
    count: usize,
    batch: usize,
    events: Box<[libc::epoll_event]>,
    rx_bufs: Box<[u8]>,
    rx_iov: Box<[libc::iovec]>,
    rx_names: Box<[libc::sockaddr_storage]>,
    rx_hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside rx_iov/rx_hdrs only point into the boxed buffers owned by this
// same struct, so moving it to another thread moves exclusive ownership of what they point to.
unsafe impl Send for Extras {}

impl Extras {
    pub(crate) fn new(batch: usize) -> Extras {
        Extras {
            epoll: None,
            slots: Vec::new(),
            free: Vec::new(),
            count: 0,
            batch: batch.max(1),
            events: Box::new([]),
            rx_bufs: Box::new([]),
            rx_iov: Box::new([]),
            rx_names: Box::new([]),
            rx_hdrs: Box::new([]),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The epoll descriptor, once there is one.
    pub(crate) fn epoll_fd(&self) -> Option<RawFd> {
        self.epoll.as_ref().map(|e| e.as_raw_fd())
    }

    /// Creates the epoll instance and the receive buffers on first use.
    fn init(&mut self) -> io::Result<RawFd> {
        if let Some(e) = &self.epoll {
            return Ok(e.as_raw_fd());
        }
        // SAFETY: epoll_create1 has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let n = self.batch;
        // SAFETY: iovec, mmsghdr and epoll_event are plain C structs; all-zero bytes are valid.
        let (zero_iov, zero_hdr, zero_ev): (libc::iovec, libc::mmsghdr, libc::epoll_event) =
            unsafe { (mem::zeroed(), mem::zeroed(), mem::zeroed()) };
        self.events = vec![zero_ev; EVENTS].into_boxed_slice();
        self.rx_bufs = vec![0u8; n * MAX_DATAGRAM].into_boxed_slice();
        self.rx_iov = vec![zero_iov; n].into_boxed_slice();
        self.rx_names = vec![sock::zeroed_storage(); n].into_boxed_slice();
        self.rx_hdrs = vec![zero_hdr; n].into_boxed_slice();
        let bufs = self.rx_bufs.as_mut_ptr();
        for i in 0..n {
            self.rx_iov[i] = libc::iovec {
                // SAFETY: i * MAX_DATAGRAM is within the n * MAX_DATAGRAM byte allocation.
                iov_base: unsafe { bufs.add(i * MAX_DATAGRAM) }.cast(),
                iov_len: MAX_DATAGRAM,
            };
            let hdr = &mut self.rx_hdrs[i].msg_hdr;
            hdr.msg_name = (&mut self.rx_names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_iov = &mut self.rx_iov[i];
            hdr.msg_iovlen = 1;
        }
        self.epoll = Some(epoll);
        Ok(fd)
    }

    /// Registers a bound socket (made nonblocking here) and returns its id.
    pub(crate) fn add(&mut self, socket: Socket) -> io::Result<SocketId> {
        if self.count >= MAX_EXTRA_SOCKETS {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "too many extra sockets"));
        }
        let epfd = self.init()?;
        socket.set_nonblocking(true)?;
        let v6 = sock::local_addr(&socket)?.is_ipv6();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = u16::try_from(self.slots.len())
                    .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "too many extra sockets"))?;
                self.slots.push(Slot { socket: None, gen: 0, v6 });
                s
            }
        };
        let entry = &mut self.slots[usize::from(slot)];
        let id = SocketId::extra(slot, entry.gen);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(id.0),
        };
        // SAFETY: epfd and the socket are live descriptors; ev is a valid epoll_event.
        let rc = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut ev) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            self.free.push(slot);
            return Err(err);
        }
        entry.socket = Some(socket);
        entry.v6 = v6;
        self.count += 1;
        Ok(id)
    }

    fn slot(&self, id: SocketId) -> Option<&Slot> {
        let (slot, gen) = id.parts()?;
        let s = self.slots.get(usize::from(slot))?;
        (s.gen == gen && s.socket.is_some()).then_some(s)
    }

    /// The socket behind `id`, if it is a live extra socket.
    pub(crate) fn socket(&self, id: SocketId) -> Option<&Socket> {
        self.slot(id)?.socket.as_ref()
    }

    /// Descriptor and address family (true: IPv6) of a live extra socket.
    #[inline]
    pub(crate) fn resolve(&self, id: SocketId) -> Option<(RawFd, bool)> {
        let s = self.slot(id)?;
        Some((s.socket.as_ref()?.as_raw_fd(), s.v6))
    }

    /// The descriptor (and whether it is IPv6) a datagram queued `via` a socket goes out on:
    /// `primary` for [`SocketId::PRIMARY`], else the live extra socket; `None` if that socket was
    /// removed after the datagram was queued.
    pub(crate) fn target(&self, via: SocketId, primary: (RawFd, bool)) -> Option<(RawFd, bool)> {
        if via == SocketId::PRIMARY {
            Some(primary)
        } else {
            self.resolve(via)
        }
    }

    /// Unregisters and closes a socket; false if `id` names no live extra socket.
    pub(crate) fn remove(&mut self, id: SocketId) -> bool {
        let Some((slot, gen)) = id.parts() else { return false };
        let epfd = self.epoll_fd();
        let Some(s) = self.slots.get_mut(usize::from(slot)) else { return false };
        if s.gen != gen {
            return false;
        }
        let Some(socket) = s.socket.take() else { return false };
        if let Some(epfd) = epfd {
            // SAFETY: both descriptors are live; a null event is allowed for EPOLL_CTL_DEL.
            unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, socket.as_raw_fd(), ptr::null_mut()) };
        }
        drop(socket);
        s.gen = s.gen.wrapping_add(1);
        self.free.push(slot);
        self.count -= 1;
        true
    }

    /// Delivers up to `limit` datagrams already queued on extra sockets (never blocks). Sockets
    /// left with data (because the limit was reached) stay ready for the next call. Nothing is shown
    /// ahead: each datagram comes once, with [`Pass::Deliver`].
    pub(crate) fn recv_ready(
        &mut self,
        limit: usize,
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr, SocketId, Pass),
    ) -> io::Result<usize> {
        let Some(epfd) = self.epoll_fd() else { return Ok(0) };
        if self.count == 0 || limit == 0 {
            return Ok(0);
        }
        let ready = loop {
            // SAFETY: `events` is a live array of EVENTS epoll_event; timeout 0 never blocks.
            let r = unsafe { libc::epoll_wait(epfd, self.events.as_mut_ptr(), self.events.len() as libc::c_int, 0) };
            if r >= 0 {
                break r as usize;
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err);
            }
        };
        let mut delivered = 0;
        for i in 0..ready {
            if delivered >= limit {
                break;
            }
            let id = SocketId(self.events[i].u64 as u32);
            let Some((fd, _)) = self.resolve(id) else { continue };
            // Drain this socket (up to the limit): one recvmmsg per `batch` datagrams.
            loop {
                let want = (limit - delivered).min(self.rx_hdrs.len());
                if want == 0 {
                    break;
                }
                let (got, n) = self.recv_once(fd, id, want, on_packet)?;
                delivered += n;
                if got < want {
                    break;
                }
            }
        }
        Ok(delivered)
    }

    /// One nonblocking `recvmmsg` of up to `want` datagrams on `fd`; returns (received, delivered).
    fn recv_once(
        &mut self,
        fd: RawFd,
        id: SocketId,
        want: usize,
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr, SocketId, Pass),
    ) -> io::Result<(usize, usize)> {
        for h in self.rx_hdrs[..want].iter_mut() {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let got = loop {
            // SAFETY: rx_hdrs holds `want` initialised mmsghdrs whose name/iov pointers reference
            // live buffers owned by self of the advertised sizes; the timeout pointer may be null.
            let r = unsafe {
                libc::recvmmsg(fd, self.rx_hdrs.as_mut_ptr(), want as libc::c_uint, libc::MSG_DONTWAIT, ptr::null_mut())
            };
            if r >= 0 {
                break r as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(e) if is_fatal_recv_errno(e) => return Err(err),
                // EAGAIN, or a pending ICMP error (ECONNREFUSED from a peer's closed port)
                // consumed by this call.
                _ => return Ok((0, 0)),
            }
        };
        let mut delivered = 0;
        for i in 0..got {
            let h = &self.rx_hdrs[i];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue;
            }
            let len = (h.msg_len as usize).min(MAX_DATAGRAM);
            let Some(from) = sock::read_sockaddr(&self.rx_names[i], h.msg_hdr.msg_namelen as usize) else {
                continue;
            };
            let start = i * MAX_DATAGRAM;
            on_packet(&mut self.rx_bufs[start..start + len], from, id, Pass::Deliver);
            delivered += 1;
        }
        Ok((got, delivered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_encode_slot_and_generation() {
        assert_eq!(SocketId::PRIMARY.parts(), None);
        let id = SocketId::extra(0, 0);
        assert_ne!(id, SocketId::PRIMARY);
        assert_eq!(id.parts(), Some((0, 0)));
        assert_eq!(SocketId::extra(65_534, 7).parts(), Some((65_534, 7)));
        assert_ne!(SocketId::extra(3, 1), SocketId::extra(3, 2));
    }
}
