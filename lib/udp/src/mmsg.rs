//! The portable backend: a nonblocking socket driven by `recvmmsg(2)`, `sendmmsg(2)` and
//! `ppoll(2)` on [socket, eventfd].

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;

use crate::batch::SendBatch;
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
    tx_iov: Box<[libc::iovec]>,
    tx_names: Box<[libc::sockaddr_storage]>,
    tx_hdrs: Box<[libc::mmsghdr]>,
}

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
        };
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

    /// Nonblocking `recvmmsg` until at least one datagram was delivered or the socket queue is
    /// empty. `Ok(0)` when nothing is queued (or a transient socket error was consumed).
    fn recv_batch(&mut self, on_packet: &mut impl FnMut(&mut [u8], SocketAddr)) -> io::Result<usize> {
        loop {
            let (received, delivered) = self.recv_once(on_packet)?;
            // Datagrams that were dropped (truncated, unknown address family) must not make the
            // caller block while more may be queued: try again.
            if received == 0 || delivered > 0 {
                return Ok(delivered);
            }
        }
    }

    /// One nonblocking `recvmmsg`; returns (datagrams received, datagrams delivered).
    fn recv_once(&mut self, on_packet: &mut impl FnMut(&mut [u8], SocketAddr)) -> io::Result<(usize, usize)> {
        let n = self.rx_hdrs.len();
        for h in self.rx_hdrs.iter_mut() {
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

    /// See [`UdpIo::recv`](crate::UdpIo::recv).
    pub(crate) fn recv(
        &mut self,
        timeout: Option<Duration>,
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr),
    ) -> io::Result<usize> {
        let n = self.recv_batch(on_packet)?;
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
            ];
            let ts = deadline.remaining().map(|d| libc::timespec {
                tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts.as_ref().map_or(ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: fds is a live array of 2 pollfds; ts_ptr is null or points to a live
            // timespec; a null sigmask keeps the current mask.
            let r = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, ts_ptr, ptr::null()) };
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
                    let n = self.recv_batch(on_packet)?;
                    if n > 0 {
                        return Ok(n);
                    }
                }
                if woken {
                    return Ok(0);
                }
            }
            if deadline.expired() {
                return Ok(0);
            }
        }
    }

    /// See [`UdpIo::send`](crate::UdpIo::send).
    pub(crate) fn send(&mut self, batch: &SendBatch) -> io::Result<SendReport> {
        let mut report = SendReport::default();
        let cap = self.tx_hdrs.len();
        let total = batch.len();
        let mut next = 0;
        while next < total {
            // Fill up to `cap` headers from the batch.
            let mut m = 0;
            while m < cap && next < total {
                let Some((to, data)) = batch.get(next) else { break };
                next += 1;
                let Some(namelen) = sock::write_sockaddr(to, self.v6, &mut self.tx_names[m]) else {
                    report.failed += 1;
                    continue;
                };
                self.tx_iov[m] = libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                };
                let h = &mut self.tx_hdrs[m];
                h.msg_hdr.msg_name = (&mut self.tx_names[m] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = namelen;
                h.msg_hdr.msg_iov = &mut self.tx_iov[m];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
                m += 1;
            }
            // Send them, looping on partial sends and skipping a datagram that fails.
            let mut k = 0;
            while k < m {
                // SAFETY: tx_hdrs[k..m] are initialised mmsghdrs whose name pointers reference
                // tx_names entries owned by self and whose iovecs reference datagrams inside
                // `batch`, which is borrowed for the duration of this call.
                let r = unsafe {
                    libc::sendmmsg(
                        self.socket.as_raw_fd(),
                        self.tx_hdrs.as_mut_ptr().add(k),
                        (m - k) as libc::c_uint,
                        0,
                    )
                };
                if r > 0 {
                    report.sent += r as usize;
                    k += r as usize;
                    continue;
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) if r < 0 => {}
                    Some(e) if r < 0 && is_fatal_send_errno(e) => return Err(err),
                    _ => {
                        // The datagram at k failed (EAGAIN with a full send buffer,
                        // ECONNREFUSED, EMSGSIZE, ENETUNREACH, ...): count it and go on.
                        report.failed += 1;
                        k += 1;
                    }
                }
            }
        }
        Ok(report)
    }
}
