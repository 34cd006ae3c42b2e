//! The portable backend: a nonblocking socket driven by `recvmmsg(2)`, `sendmmsg(2)` and
//! `ppoll(2)` on [socket, eventfd].

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

use crate::batch::SendBatch;
use crate::extra::{Extras, SocketId};
use crate::sock::{self, is_fatal_recv_errno, is_fatal_send_errno};
use crate::waker::WakerInner;
use crate::{Deadline, SendReport, MAX_DATAGRAM};

/// recvmmsg/sendmmsg backend. All arrays are allocated once in [`Mmsg::new`]; the raw pointers in
/// the `iovec`/`mmsghdr` arrays point into the boxed buffers owned by this struct, whose heap
/// addresses do not change when the struct moves.
pub(crate) struct Mmsg {
    socket: Socket,
    v6: bool,
    waker: Arc<WakerInner>,
    rx_bufs: Box<[u8]>,
    rx_iov: Box<[libc::iovec]>,
    rx_names: Box<[libc::sockaddr_storage]>,
    rx_hdrs: Box<[libc::mmsghdr]>,
    /// One iovec per queued datagram.
    tx_iov: Box<[libc::iovec]>,
    /// Per message (a message carries one datagram, or a GSO train of several): destination,
    /// header, `UDP_SEGMENT` control buffer and datagram count.
    tx_names: Box<[libc::sockaddr_storage]>,
    tx_hdrs: Box<[libc::mmsghdr]>,
    tx_cmsg: Box<[CmsgBuf]>,
    tx_segs: Box<[usize]>,
    /// Most datagrams per GSO message; 0 when UDP GSO is unavailable or was turned off.
    gso_segments: usize,
    /// Most datagrams one `recv` delivers (at most the number of receive buffers).
    recv_limit: usize,
}

/// `UDP_SEGMENT` socket option / control message type (linux/udp.h).
const UDP_SEGMENT: libc::c_int = 103;
/// Datagrams per GSO send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
const GSO_MAX_SEGMENTS: usize = 64;
/// Payload bytes per GSO send, safely below the 64 KiB IP datagram limit for IPv4 and IPv6.
const GSO_MAX_BYTES: usize = 65_000;

/// Room for one control message carrying a u16 (`CMSG_SPACE(2)` is 24 on 64-bit Linux).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; 32]);

// SAFETY: the raw pointers inside the iovec/mmsghdr arrays only ever point into heap memory owned
// by this same struct (or, during `send`, into the borrowed batch), so moving the whole struct to
// another thread moves exclusive ownership of everything they point to.
unsafe impl Send for Mmsg {}

impl Mmsg {
    /// Takes ownership of a bound socket, makes it nonblocking and allocates `batch` receive
    /// buffers and send headers.
    pub(crate) fn new(socket: Socket, batch: usize) -> io::Result<Mmsg> {
        socket.set_nonblocking(true)?;
        let v6 = sock::local_addr(&socket)?.is_ipv6();
        let waker = WakerInner::new(true)?;
        let n = batch.max(1);
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are valid.
        let zero_iov: libc::iovec = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let mut me = Mmsg {
            socket,
            v6,
            waker,
            rx_bufs: vec![0u8; n * MAX_DATAGRAM].into_boxed_slice(),
            rx_iov: vec![zero_iov; n].into_boxed_slice(),
            rx_names: vec![sock::zeroed_storage(); n].into_boxed_slice(),
            rx_hdrs: vec![zero_hdr; n].into_boxed_slice(),
            tx_iov: vec![zero_iov; n].into_boxed_slice(),
            tx_names: vec![sock::zeroed_storage(); n].into_boxed_slice(),
            tx_hdrs: vec![zero_hdr; n].into_boxed_slice(),
            tx_cmsg: vec![CmsgBuf([0; 32]); n].into_boxed_slice(),
            tx_segs: vec![0usize; n].into_boxed_slice(),
            gso_segments: 0,
            recv_limit: n,
        };
        if n > 1 && gso_supported(&me.socket) {
            me.gso_segments = GSO_MAX_SEGMENTS.min(n);
        }
        let bufs = me.rx_bufs.as_mut_ptr();
        for i in 0..n {
            me.rx_iov[i] = libc::iovec {
                // SAFETY: i * MAX_DATAGRAM is within the n * MAX_DATAGRAM byte allocation.
                iov_base: unsafe { bufs.add(i * MAX_DATAGRAM) }.cast(),
                iov_len: MAX_DATAGRAM,
            };
            let hdr = &mut me.rx_hdrs[i].msg_hdr;
            hdr.msg_name = (&mut me.rx_names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_iov = &mut me.rx_iov[i];
            hdr.msg_iovlen = 1;
        }
        Ok(me)
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    pub(crate) fn waker(&self) -> &Arc<WakerInner> {
        &self.waker
    }

    /// See [`UdpIo::set_recv_limit`](crate::UdpIo::set_recv_limit).
    pub(crate) fn set_recv_limit(&mut self, n: usize) {
        self.recv_limit = n.clamp(1, self.rx_hdrs.len());
    }

    /// Most datagrams sent per UDP GSO message (0 = GSO not used).
    pub(crate) fn gso_segments(&self) -> usize {
        self.gso_segments
    }

    /// Nonblocking `recvmmsg` until at least one datagram was delivered or the socket queue is
    /// empty. `Ok(0)` when nothing is queued (or a transient socket error was consumed).
    fn recv_batch(&mut self, limit: usize, on_packet: &mut impl FnMut(&mut [u8], SocketAddr)) -> io::Result<usize> {
        loop {
            let (received, delivered) = self.recv_once(limit, on_packet)?;
            // Datagrams that were dropped (truncated, unknown address family) must not make the
            // caller block while more may be queued: try again.
            if received == 0 || delivered > 0 {
                return Ok(delivered);
            }
        }
    }

    /// One nonblocking `recvmmsg`; returns (datagrams received, datagrams delivered).
    fn recv_once(&mut self, limit: usize, on_packet: &mut impl FnMut(&mut [u8], SocketAddr)) -> io::Result<(usize, usize)> {
        let n = self.recv_limit.min(limit).clamp(1, self.rx_hdrs.len());
        for h in self.rx_hdrs[..n].iter_mut() {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let got = loop {
            // SAFETY: rx_hdrs holds n initialised mmsghdrs whose name/iov pointers reference live
            // buffers owned by self of the advertised sizes; the timeout pointer may be null.
            let r = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    self.rx_hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if r >= 0 {
                break r as usize;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(e) if is_fatal_recv_errno(e) => return Err(err),
                // EAGAIN, or a pending ICMP error / ENOMEM consumed by this call.
                _ => return Ok((0, 0)),
            }
        };
        let mut delivered = 0;
        for i in 0..got {
            let h = &self.rx_hdrs[i];
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                continue; // larger than MAX_DATAGRAM: not a datagram this server can use
            }
            let len = (h.msg_len as usize).min(MAX_DATAGRAM);
            let Some(from) = sock::read_sockaddr(&self.rx_names[i], h.msg_hdr.msg_namelen as usize) else {
                continue;
            };
            let start = i * MAX_DATAGRAM;
            on_packet(&mut self.rx_bufs[start..start + len], from);
            delivered += 1;
        }
        Ok((got, delivered))
    }

    /// Most datagrams one `recv` delivers.
    pub(crate) fn recv_limit(&self) -> usize {
        self.recv_limit
    }

    /// See [`UdpIo::recv`](crate::UdpIo::recv); delivers at most `limit` (and the receive limit)
    /// datagrams. `extra` is a descriptor whose readability (the extra sockets' epoll instance)
    /// ends the wait too, like a wake-up.
    pub(crate) fn recv(
        &mut self,
        timeout: Option<Duration>,
        limit: usize,
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr),
        extra: Option<RawFd>,
    ) -> io::Result<usize> {
        let n = self.recv_batch(limit, on_packet)?;
        if n > 0 {
            return Ok(n);
        }
        if timeout == Some(Duration::ZERO) {
            return Ok(0);
        }
        let deadline = Deadline::new(timeout);
        self.waker.announce_sleep();
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.waker.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: extra.unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let nfds: libc::nfds_t = if extra.is_some() { 3 } else { 2 };
            let ts = deadline.remaining().map(|d| libc::timespec {
                tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts.as_ref().map_or(ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: fds is a live array of 3 pollfds (nfds <= 3); ts_ptr is null or points to a
            // live timespec; a null sigmask keeps the current mask.
            let r = unsafe { libc::ppoll(fds.as_mut_ptr(), nfds, ts_ptr, ptr::null()) };
            if r < 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINTR) {
                    return Err(err);
                }
            } else if r > 0 {
                let woken = fds[1].revents != 0;
                if woken {
                    self.waker.drain();
                }
                if fds[0].revents != 0 {
                    let n = self.recv_batch(limit, on_packet)?;
                    if n > 0 {
                        return Ok(n);
                    }
                }
                if woken || fds[2].revents != 0 {
                    return Ok(0);
                }
            }
            if deadline.expired() {
                return Ok(0);
            }
        }
    }

    /// See [`UdpIo::send`](crate::UdpIo::send). Consecutive datagrams to the same destination
    /// with the same size (the last of a run may be shorter) go out as one UDP GSO message when
    /// the kernel supports it; the receiver still sees separate datagrams.
    /// Datagrams for extra sockets go out through them (`extras` resolves the ids); consecutive
    /// datagrams through the same socket share one `sendmmsg`.
    pub(crate) fn send(&mut self, batch: &SendBatch, extras: &Extras) -> io::Result<SendReport> {
        let mut report = SendReport::default();
        let total = batch.len();
        let mut next = 0;
        while next < total {
            let via = batch.via(next).unwrap_or(SocketId::PRIMARY);
            let (fd, v6) = if via == SocketId::PRIMARY {
                (self.socket.as_raw_fd(), self.v6)
            } else {
                match extras.resolve(via) {
                    Some(r) => r,
                    None => {
                        // The socket was removed after the datagram was queued.
                        report.failed += 1;
                        next += 1;
                        continue;
                    }
                }
            };
            let m = self.build_messages(batch, &mut next, &mut report, via, v6);
            // Send them, looping on partial sends and skipping a message that fails.
            let mut k = 0;
            while k < m {
                // SAFETY: tx_hdrs[k..m] are initialised mmsghdrs whose name, iovec and control
                // pointers reference arrays owned by self, and whose iovecs reference datagrams
                // inside `batch`, which is borrowed for the duration of this call.
                let r = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.tx_hdrs.as_mut_ptr().add(k),
                        (m - k) as libc::c_uint,
                        0,
                    )
                };
                if r > 0 {
                    let r = r as usize;
                    report.sent += self.tx_segs[k..k + r].iter().sum::<usize>();
                    k += r;
                    continue;
                }
                let errno = if r < 0 { io::Error::last_os_error().raw_os_error() } else { None };
                match errno {
                    Some(libc::EINTR) => {}
                    Some(e) if is_fatal_send_errno(e) => return Err(io::Error::from_raw_os_error(e)),
                    Some(e @ (libc::EIO | libc::EINVAL)) if self.tx_segs[k] > 1 => {
                        // EIO: the device cannot segment (checksum offload missing): stop using
                        // GSO on this socket. EINVAL: e.g. segment size above the path MTU. Either
                        // way, send this train's datagrams one by one.
                        if e == libc::EIO {
                            self.gso_segments = 0;
                        }
                        self.send_train_individually(fd, k, &mut report)?;
                        k += 1;
                    }
                    _ => {
                        // The message at k failed (EAGAIN with a full send buffer, ECONNREFUSED,
                        // EMSGSIZE, ENETUNREACH, ...): count its datagrams and go on.
                        report.failed += self.tx_segs[k];
                        k += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Fills up to `cap` message headers (and as many iovecs) from `batch`, starting at `*next`.
    /// Returns the number of messages.
    /// Only datagrams leaving through `via` (an `v6` socket or not) are taken: the run ends at the
    /// first datagram for another socket.
    fn build_messages(
        &mut self,
        batch: &SendBatch,
        next: &mut usize,
        report: &mut SendReport,
        via: SocketId,
        v6: bool,
    ) -> usize {
        let cap = self.tx_hdrs.len();
        let total = batch.len();
        let mut m = 0; // messages
        let mut d = 0; // iovecs (datagrams)
        while m < cap && d < cap && *next < total {
            if batch.via(*next) != Some(via) {
                break;
            }
            let Some((to, data)) = batch.get(*next) else { break };
            *next += 1;
            let Some(namelen) = sock::write_sockaddr(to, v6, &mut self.tx_names[m]) else {
                report.failed += 1;
                continue;
            };
            let first = d;
            self.tx_iov[d] = iovec_for(data);
            d += 1;
            // Extend into a GSO train: same destination, same size (a shorter one ends it).
            let seg = data.len();
            let mut bytes = seg;
            if self.gso_segments > 1 && seg > 0 {
                while d < cap && d - first < self.gso_segments && *next < total {
                    if batch.via(*next) != Some(via) {
                        break;
                    }
                    let Some((to2, data2)) = batch.get(*next) else { break };
                    if to2 != to || data2.is_empty() || data2.len() > seg || bytes + data2.len() > GSO_MAX_BYTES {
                        break;
                    }
                    *next += 1;
                    self.tx_iov[d] = iovec_for(data2);
                    d += 1;
                    bytes += data2.len();
                    if data2.len() < seg {
                        break;
                    }
                }
            }
            let segs = d - first;
            self.tx_segs[m] = segs;
            let h = &mut self.tx_hdrs[m];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.tx_names[m] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &mut self.tx_iov[first];
            h.msg_hdr.msg_iovlen = segs;
            h.msg_hdr.msg_flags = 0;
            if segs > 1 {
                h.msg_hdr.msg_control = self.tx_cmsg[m].0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE is a pure computation.
                h.msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
                // SAFETY: the control buffer is 32 bytes, 8-aligned, larger than CMSG_SPACE(2),
                // so CMSG_FIRSTHDR is non-null and the header plus 2 data bytes fit inside it.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*c).cmsg_level = libc::SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
                    ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
                }
            } else {
                h.msg_hdr.msg_control = ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
            m += 1;
        }
        m
    }

    /// Sends the datagrams of GSO message `k` one `sendmsg` each (after the kernel refused the
    /// train).
    fn send_train_individually(&mut self, fd: RawFd, k: usize, report: &mut SendReport) -> io::Result<()> {
        let h = self.tx_hdrs[k].msg_hdr;
        for j in 0..self.tx_segs[k] {
            let mut single = h;
            // SAFETY: msg_iov points at tx_segs[k] consecutive iovecs inside tx_iov.
            single.msg_iov = unsafe { h.msg_iov.add(j) };
            single.msg_iovlen = 1;
            single.msg_control = ptr::null_mut();
            single.msg_controllen = 0;
            loop {
                // SAFETY: `single` references a live name and iovec as in `send`.
                let r = unsafe { libc::sendmsg(fd, &single, 0) };
                if r >= 0 {
                    report.sent += 1;
                    break;
                }
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(e) if is_fatal_send_errno(e) => return Err(io::Error::from_raw_os_error(e)),
                    _ => {
                        report.failed += 1;
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

fn iovec_for(data: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    }
}

/// Whether the kernel knows the `UDP_SEGMENT` option (Linux 4.18+) for this socket.
fn gso_supported(socket: &Socket) -> bool {
    let mut val: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a live c_int and its exact size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
}
