//! `recvmmsg(2)` / `sendmmsg(2)` on nonblocking UDP sockets, with buffers allocated once.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Largest datagram handled.
pub const MAX_DATAGRAM: usize = 2048;

/// Storage for a batch of datagrams: contiguous buffers plus the kernel structures pointing at them.
pub struct Batch {
    bufs: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    n: usize,
}

// SAFETY: the raw pointers inside point into the batch's own vectors.
unsafe impl Send for Batch {}

impl Batch {
    /// A batch of `cap` datagrams of up to [`MAX_DATAGRAM`] bytes.
    pub fn new(cap: usize) -> Batch {
        let cap = cap.max(1);
        // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
        let zeroed_addr: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let zeroed_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        Batch {
            bufs: vec![0; cap * MAX_DATAGRAM],
            lens: vec![0; cap],
            addrs: vec![zeroed_addr; cap],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                cap
            ],
            hdrs: vec![zeroed_hdr; cap],
            n: 0,
        }
    }

    /// Capacity in datagrams.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Datagrams queued (send) or received (recv).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Forgets the queued datagrams.
    pub fn clear(&mut self) {
        self.n = 0;
    }

    /// The next free send buffer (full size); commit it with [`Batch::commit`].
    pub fn next_buf(&mut self) -> Option<&mut [u8]> {
        if self.n >= self.capacity() {
            return None;
        }
        let i = self.n;
        Some(&mut self.bufs[i * MAX_DATAGRAM..(i + 1) * MAX_DATAGRAM])
    }

    /// Queues the buffer last returned by [`Batch::next_buf`] with `len` bytes to `to`.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        if self.n >= self.capacity() {
            return;
        }
        self.lens[self.n] = len.min(MAX_DATAGRAM);
        self.addrs[self.n] = to_storage(to);
        self.n += 1;
    }

    /// Received datagram `i`: its bytes (mutable, for in-place decryption).
    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.lens[i].min(MAX_DATAGRAM);
        &mut self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len]
    }

    /// Received datagram `i`'s source address.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        from_storage(&self.addrs[i])
    }

    fn prepare(&mut self, n: usize, recv: bool) {
        for i in 0..n {
            let base = self.bufs[i * MAX_DATAGRAM..].as_mut_ptr();
            self.iovs[i] = libc::iovec {
                iov_base: base.cast(),
                iov_len: if recv { MAX_DATAGRAM } else { self.lens[i] },
            };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = if recv {
                std::mem::size_of::<libc::sockaddr_storage>() as u32
            } else {
                addr_len(&self.addrs[i])
            };
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }

    /// Receives up to a batch from `fd` without blocking; returns how many (0 when none waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let cap = self.capacity();
        self.prepare(cap, true);
        // SAFETY: hdrs[..cap] point at iovecs and addresses inside self, valid for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                cap as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            self.n = 0;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = r as usize;
        for i in 0..n {
            self.lens[i] = self.hdrs[i].msg_len as usize;
            // Truncated datagrams (larger than our buffers) are marked empty.
            if self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                self.lens[i] = 0;
            }
        }
        self.n = n;
        Ok(n)
    }

    /// Sends every queued datagram on `fd` (never blocks); returns (sent, failed) and clears.
    pub fn send(&mut self, fd: RawFd) -> (usize, usize) {
        let n = self.n;
        self.prepare(n, false);
        let mut done = 0;
        let mut failed = 0;
        while done < n {
            // SAFETY: hdrs[done..n] are prepared and point into self.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[done..].as_mut_ptr(),
                    (n - done) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first datagram failed (buffer full, refused): count it and skip it.
                failed += 1;
                done += 1;
                continue;
            }
            done += r as usize;
        }
        self.n = 0;
        (n - failed, failed)
    }
}

fn addr_len(s: &libc::sockaddr_storage) -> u32 {
    if i32::from(s.ss_family) == libc::AF_INET6 {
        std::mem::size_of::<libc::sockaddr_in6>() as u32
    } else {
        std::mem::size_of::<libc::sockaddr_in>() as u32
    }
}

/// A socket address as the kernel wants it.
pub fn to_storage(a: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero is valid; we then write one of the two address types into it.
    let mut s: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    s
}

/// The address the kernel wrote, if IPv4 or IPv6.
pub fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((s as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((s as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn send_and_receive_a_batch() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let mut out = Batch::new(8);
        for i in 0..5u8 {
            let buf = out.next_buf().unwrap();
            buf[..3].copy_from_slice(&[i, i, i]);
            out.commit(3, to);
        }
        assert_eq!(out.send(a.as_raw_fd()), (5, 0));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut inb = Batch::new(8);
        assert_eq!(inb.recv(b.as_raw_fd()).unwrap(), 5);
        assert_eq!(inb.get_mut(4), &[4, 4, 4]);
        assert_eq!(inb.addr(0), Some(a.local_addr().unwrap()));
        assert_eq!(inb.recv(b.as_raw_fd()).unwrap(), 0);
    }
}
