//! `recvmmsg(2)` / `sendmmsg(2)` on nonblocking UDP sockets, with buffers allocated once.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Largest datagram sent.
pub const MAX_DATAGRAM: usize = 2048;

/// Datagrams to send with one `sendmmsg`: contiguous buffers plus the kernel structures pointing
/// at them. (Receiving is [`RecvBatch`]'s.)
pub struct Batch {
    bufs: Vec<u8>,
    lens: Vec<usize>,
    msgs: Headers,
    n: usize,
}

/// The kernel's side of a batch of messages, allocated once: per message an address, one iovec
/// and the `mmsghdr` pointing at them.
struct Headers {
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside point into the headers' own vectors and the owning batch's.
unsafe impl Send for Headers {}

impl Headers {
    /// `n` zeroed messages.
    fn new(n: usize) -> Headers {
        // SAFETY: all-zero is a valid sockaddr_storage / mmsghdr.
        let zeroed_addr: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let zeroed_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        let no_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Headers {
            addrs: vec![zeroed_addr; n],
            iovs: vec![no_iov; n],
            hdrs: vec![zeroed_hdr; n],
        }
    }

    /// Points message `i` at `len` bytes from `buf`, its address (`namelen` bytes of it) and the
    /// control buffer `control` of `controllen` bytes (null and 0 for none), for one call.
    fn point(&mut self, i: usize, buf: *mut u8, len: usize, namelen: u32, control: *mut u8, controllen: usize) {
        self.iovs[i] = libc::iovec {
            iov_base: buf.cast(),
            iov_len: len,
        };
        let h = &mut self.hdrs[i];
        h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
        h.msg_hdr.msg_namelen = namelen;
        h.msg_hdr.msg_iov = &mut self.iovs[i];
        h.msg_hdr.msg_iovlen = 1;
        h.msg_hdr.msg_control = control.cast();
        h.msg_hdr.msg_controllen = controllen;
        h.msg_hdr.msg_flags = 0;
        h.msg_len = 0;
    }
}

impl Batch {
    /// A batch of `cap` datagrams of up to [`MAX_DATAGRAM`] bytes.
    pub fn new(cap: usize) -> Batch {
        let cap = cap.max(1);
        Batch {
            bufs: vec![0; cap * MAX_DATAGRAM],
            lens: vec![0; cap],
            msgs: Headers::new(cap),
            n: 0,
        }
    }

    /// Capacity in datagrams.
    pub fn capacity(&self) -> usize {
        self.lens.len()
    }

    /// Datagrams queued.
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
        self.msgs.addrs[self.n] = to_storage(to);
        self.n += 1;
    }

    /// Sends every queued datagram on `fd` (never blocks); returns (sent, failed) and clears.
    pub fn send(&mut self, fd: RawFd) -> (usize, usize) {
        let n = self.n;
        for i in 0..n {
            let buf = self.bufs[i * MAX_DATAGRAM..].as_mut_ptr();
            let namelen = addr_len(&self.msgs.addrs[i]);
            self.msgs.point(i, buf, self.lens[i], namelen, std::ptr::null_mut(), 0);
        }
        let mut done = 0;
        let mut failed = 0;
        while done < n {
            // SAFETY: hdrs[done..n] are prepared and point into self.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs.hdrs[done..].as_mut_ptr(),
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

/// `UDP_GRO` socket option and control message type (linux/udp.h).
const UDP_GRO: libc::c_int = 104;
/// Bytes one received message may hold: a whole coalesced train (the kernel keeps it under 64 KiB,
/// and no single UDP datagram is larger, so nothing is ever truncated).
pub const GRO_MESSAGE: usize = 65_536;
/// Datagrams one coalesced message may carry (the kernel's `UDP_MAX_SEGMENTS`).
const GRO_MAX_SEGMENTS: usize = 128;

/// Asks the kernel to hand a socket's datagrams over as trains: consecutive datagrams of one flow
/// and size that arrived as one unit (on the loopback, a sender's UDP GSO message; from a NIC,
/// what its GRO merged) come as one message plus their size, instead of being cut apart first.
/// Receive them with [`RecvBatch`], which splits them again. Returns whether the kernel agreed
/// (Linux 5.0+); without it the socket works as before, one datagram per message.
pub fn enable_gro(fd: RawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: a plain setsockopt with an int option value that lives across the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// One received datagram inside a [`RecvBatch`] message.
#[derive(Debug, Clone, Copy)]
struct Segment {
    off: u32,
    len: u32,
    msg: u32,
}

/// Control buffer for one received message: room for the `UDP_GRO` control message (an int;
/// `CMSG_SPACE(4)` is 24 on 64-bit Linux), 8-aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; 32]);

/// Receive side of `recvmmsg(2)` for sockets that may deliver trains ([`enable_gro`]): every
/// message has room for a whole train, and the datagrams are addressed one by one however they
/// arrived. Buffers are allocated once.
pub struct RecvBatch {
    bufs: Vec<u8>,
    msgs: Headers,
    cmsgs: Vec<CmsgBuf>,
    segs: Vec<Segment>,
}

impl RecvBatch {
    /// Room for `msgs` messages per call, each up to [`GRO_MESSAGE`] bytes.
    pub fn new(msgs: usize) -> RecvBatch {
        let msgs = msgs.max(1);
        RecvBatch {
            bufs: vec![0; msgs * GRO_MESSAGE],
            msgs: Headers::new(msgs),
            cmsgs: vec![CmsgBuf([0; 32]); msgs],
            segs: Vec::with_capacity(msgs * GRO_MAX_SEGMENTS),
        }
    }

    /// Datagrams received by the last [`recv`](Self::recv).
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    /// Whether the last `recv` delivered nothing.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Forgets the received datagrams.
    pub fn clear(&mut self) {
        self.segs.clear();
    }

    /// Receives what is waiting on `fd` without blocking, up to the batch's messages; returns how
    /// many datagrams (0 when none waiting). A message the kernel truncated counts as one empty
    /// datagram.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.segs.clear();
        let msgs = self.msgs.hdrs.len();
        let namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        for i in 0..msgs {
            let buf = self.bufs[i * GRO_MESSAGE..].as_mut_ptr();
            let control = self.cmsgs[i].0.as_mut_ptr();
            self.msgs.point(i, buf, GRO_MESSAGE, namelen, control, std::mem::size_of::<CmsgBuf>());
        }
        // SAFETY: hdrs[..msgs] point at iovecs, addresses and control buffers inside self, valid
        // for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.hdrs.as_mut_ptr(),
                msgs as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for m in 0..r as usize {
            let h = &self.msgs.hdrs[m].msg_hdr;
            let base = (m * GRO_MESSAGE) as u32;
            let len = (self.msgs.hdrs[m].msg_len as usize).min(GRO_MESSAGE);
            if h.msg_flags & libc::MSG_TRUNC != 0 {
                self.segs.push(Segment { off: base, len: 0, msg: m as u32 });
                continue;
            }
            let size = match gro_size(h) {
                Some(s) if s > 0 && s < len => s,
                _ => len,
            };
            let mut off = 0;
            loop {
                let n = size.min(len - off);
                self.segs.push(Segment {
                    off: base + off as u32,
                    len: n as u32,
                    msg: m as u32,
                });
                off += n;
                if off >= len {
                    break;
                }
            }
        }
        Ok(self.segs.len())
    }

    /// Received datagram `i`: its bytes (mutable, for in-place decryption).
    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        let s = self.segs[i];
        &mut self.bufs[s.off as usize..(s.off + s.len) as usize]
    }

    /// Received datagram `i`'s source address.
    pub fn addr(&self, i: usize) -> Option<SocketAddr> {
        from_storage(&self.msgs.addrs[self.segs[i].msg as usize])
    }
}

/// The datagram size of a coalesced message, from its `UDP_GRO` control message.
fn gro_size(h: &libc::msghdr) -> Option<usize> {
    // SAFETY: the kernel filled msg_control / msg_controllen of this header within our buffer;
    // CMSG_FIRSTHDR / CMSG_NXTHDR stay inside msg_controllen and the int is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP
                && (*c).cmsg_type == UDP_GRO
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(4) as usize
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
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
        let mut inb = RecvBatch::new(8);
        assert_eq!(inb.recv(b.as_raw_fd()).unwrap(), 5);
        assert_eq!(inb.get_mut(4), &[4, 4, 4]);
        assert_eq!(inb.addr(0), Some(a.local_addr().unwrap()));
        assert_eq!(inb.recv(b.as_raw_fd()).unwrap(), 0);
    }

    /// Sends `data` to `to` as one UDP GSO message of `seg`-byte datagrams (the last shorter).
    fn send_train(from: &std::net::UdpSocket, to: SocketAddr, data: &mut [u8], seg: u16) {
        let mut addr = to_storage(to);
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut ctrl = CmsgBuf([0; 32]);
        // SAFETY: all-zero is a valid msghdr; every pointer set below outlives the sendmsg call,
        // and the 32-byte control buffer holds CMSG_SPACE(2).
        let r = unsafe {
            let mut h: libc::msghdr = MaybeUninit::zeroed().assume_init();
            h.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = addr_len(&addr);
            h.msg_iov = &mut iov;
            h.msg_iovlen = 1;
            h.msg_control = ctrl.0.as_mut_ptr().cast();
            h.msg_controllen = libc::CMSG_SPACE(2) as usize;
            let c = libc::CMSG_FIRSTHDR(&h);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = 103; // UDP_SEGMENT
            (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
            libc::sendmsg(from.as_raw_fd(), &h, 0)
        };
        assert_eq!(r, data.len() as isize, "{}", io::Error::last_os_error());
    }

    /// A train of 5 datagrams (4 x 100 B + 37 B) and a lone datagram after it.
    fn train_then_single(gro: bool) -> Vec<Vec<u8>> {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        if gro {
            assert!(enable_gro(b.as_raw_fd()));
        }
        let to = b.local_addr().unwrap();
        let mut data: Vec<u8> = (0..437u32).map(|i| (i / 100) as u8 + 1).collect();
        send_train(&a, to, &mut data, 100);
        a.send_to(&[9; 7], to).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Four messages per call: the six datagrams take one call as a train and a single,
        // two calls as six separate datagrams.
        let mut inb = RecvBatch::new(4);
        let mut got = Vec::new();
        let mut calls = 0;
        loop {
            let n = inb.recv(b.as_raw_fd()).unwrap();
            if n == 0 {
                break;
            }
            calls += 1;
            for k in 0..n {
                got.push(inb.get_mut(k).to_vec());
                assert_eq!(inb.addr(k), Some(a.local_addr().unwrap()));
            }
        }
        assert_eq!(calls, if gro { 1 } else { 2 });
        got
    }

    fn expected_train() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = (1..=4u8).map(|i| vec![i; 100]).collect();
        v.push(vec![5; 37]);
        v.push(vec![9; 7]);
        v
    }

    #[test]
    fn a_coalesced_train_comes_apart_into_its_datagrams() {
        assert_eq!(train_then_single(true), expected_train());
    }

    #[test]
    fn without_gro_the_kernel_splits_the_train_and_the_batch_sees_the_same() {
        assert_eq!(train_then_single(false), expected_train());
    }
}
