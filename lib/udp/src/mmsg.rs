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
use crate::tx::TxMessages;
use crate::waker::WakerInner;
use crate::{Deadline, Pass, SendReport, MAX_DATAGRAM};

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
    /// Outgoing message headers (GSO trains).
    tx: TxMessages,
    /// Most datagrams one `recv` delivers (at most the number of receive buffers).
    recv_limit: usize,
    /// See [`Config::recv_coalesce`](crate::Config::recv_coalesce); zero = off.
    coalesce: Duration,
    /// The last `recv` that delivered anything delivered more than one datagram and left the
    /// socket empty: the next one waits up to `coalesce` before reading.
    drained: bool,
}

// SAFETY: the raw pointers inside the iovec/mmsghdr arrays only ever point into heap memory owned
// by this same struct (or, during `send`, into the borrowed batch), so moving the whole struct to
// another thread moves exclusive ownership of everything they point to.
unsafe impl Send for Mmsg {}

impl Mmsg {
    /// Takes ownership of a bound socket, makes it nonblocking and allocates `batch` receive
    /// buffers and send headers.
    pub(crate) fn new(socket: Socket, batch: usize, coalesce: Duration) -> io::Result<Mmsg> {
        socket.set_nonblocking(true)?;
        let v6 = sock::local_addr(&socket)?.is_ipv6();
        let waker = WakerInner::new(true)?;
        let n = batch.max(1);
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are valid.
        let zero_iov: libc::iovec = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        let mut me = Mmsg {
            v6,
            waker,
            rx_bufs: vec![0u8; n * MAX_DATAGRAM].into_boxed_slice(),
            rx_iov: vec![zero_iov; n].into_boxed_slice(),
            rx_names: vec![sock::zeroed_storage(); n].into_boxed_slice(),
            rx_hdrs: vec![zero_hdr; n].into_boxed_slice(),
            tx: TxMessages::new(&socket, n),
            recv_limit: n,
            coalesce,
            drained: false,
            socket,
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

    /// See [`UdpIo::set_recv_limit`](crate::UdpIo::set_recv_limit).
    pub(crate) fn set_recv_limit(&mut self, n: usize) {
        self.recv_limit = n.clamp(1, self.rx_hdrs.len());
    }

    /// Most datagrams sent per UDP GSO message (0 = GSO not used).
    pub(crate) fn gso_segments(&self) -> usize {
        self.tx.gso_segments()
    }

    /// Nonblocking `recvmmsg` until at least one datagram was delivered or the socket queue is
    /// empty. `Ok(0)` when nothing is queued (or a transient socket error was consumed). Notes
    /// whether the call emptied the socket (fewer datagrams than asked for), for coalescing.
    fn recv_batch(&mut self, limit: usize, on_packet: &mut impl FnMut(&mut [u8], SocketAddr, Pass)) -> io::Result<usize> {
        let asked = self.recv_limit.min(limit).clamp(1, self.rx_hdrs.len());
        loop {
            let (received, delivered) = self.recv_once(limit, on_packet)?;
            // Datagrams that were dropped (truncated, unknown address family) must not make the
            // caller block while more may be queued: try again.
            if received == 0 || delivered > 0 {
                // A call that found nothing leaves the mark of the last batch as it was; a
                // single datagram says arrivals are sparse: nothing to gather.
                if delivered > 0 {
                    self.drained = delivered > 1 && received < asked;
                }
                return Ok(delivered);
            }
        }
    }

    /// Coalescing: whether this `recv` (with `timeout`) should first let datagrams gather, i.e.
    /// coalescing is on, the caller may block and the previous receive emptied the socket.
    pub(crate) fn take_gather(&mut self, timeout: Option<Duration>) -> bool {
        let gather = self.drained && !self.coalesce.is_zero() && timeout != Some(Duration::ZERO);
        self.drained = false;
        gather
    }

    /// Coalescing: sleeps up to `coalesce` (and at most `timeout`) waiting only for a wake-up or
    /// an extra socket, so that datagrams gather in the socket meanwhile. True if a wake-up or an
    /// extra socket ended it (the caller must then not block again).
    pub(crate) fn gather(&mut self, timeout: Option<Duration>, extra: Option<RawFd>) -> io::Result<bool> {
        let d = timeout.map_or(self.coalesce, |t| t.min(self.coalesce));
        self.waker.announce_sleep();
        let mut fds = [
            pollin(self.waker.fd()),
            pollin(extra.unwrap_or(-1)),
        ];
        let nfds: libc::nfds_t = if extra.is_some() { 2 } else { 1 };
        let ts = timespec(d);
        // SAFETY: fds is a live array of 2 pollfds (nfds <= 2); ts is a live timespec; a null
        // sigmask keeps the current mask.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), nfds, &ts, ptr::null()) };
        if r < 0 {
            let err = io::Error::last_os_error();
            return if err.raw_os_error() == Some(libc::EINTR) { Ok(false) } else { Err(err) };
        }
        if r > 0 && fds[0].revents != 0 {
            self.waker.drain();
        }
        Ok(r > 0)
    }

    /// One nonblocking `recvmmsg`; returns (datagrams received, datagrams delivered).
    fn recv_once(&mut self, limit: usize, on_packet: &mut impl FnMut(&mut [u8], SocketAddr, Pass)) -> io::Result<(usize, usize)> {
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
        for pass in [Pass::Ahead, Pass::Deliver] {
            if pass == Pass::Ahead && got < 2 {
                continue;
            }
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
                on_packet(&mut self.rx_bufs[start..start + len], from, pass);
                if pass == Pass::Deliver {
                    delivered += 1;
                }
            }
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
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr, Pass),
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
                pollin(self.socket.as_raw_fd()),
                pollin(self.waker.fd()),
                pollin(extra.unwrap_or(-1)),
            ];
            let nfds: libc::nfds_t = if extra.is_some() { 3 } else { 2 };
            let ts = deadline.remaining().map(timespec);
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
            let Some((fd, v6)) = extras.target(via, (self.socket.as_raw_fd(), self.v6)) else {
                // The socket was removed after the datagram was queued.
                report.failed += 1;
                next += 1;
                continue;
            };
            let m = self.tx.build(batch, &mut next, &mut report, via, v6);
            // Send them, looping on partial sends and skipping a message that fails.
            let mut k = 0;
            while k < m {
                // SAFETY: the headers k..m are initialised mmsghdrs whose name, iovec and control
                // pointers reference arrays owned by self.tx, and whose iovecs reference datagrams
                // inside `batch`, which is borrowed for the duration of this call.
                let r = unsafe { libc::sendmmsg(fd, self.tx.hdrs_ptr(k), (m - k) as libc::c_uint, 0) };
                if r > 0 {
                    let r = r as usize;
                    report.sent += self.tx.segs_sum(k, r);
                    k += r;
                    continue;
                }
                let errno = if r < 0 { io::Error::last_os_error().raw_os_error() } else { None };
                match errno {
                    Some(libc::EINTR) => {}
                    Some(e) if is_fatal_send_errno(e) => return Err(io::Error::from_raw_os_error(e)),
                    Some(e @ (libc::EIO | libc::EINVAL)) if self.tx.segs(k) > 1 => {
                        // EIO: the device cannot segment (checksum offload missing): stop using
                        // GSO on this socket. EINVAL: e.g. segment size above the path MTU. Either
                        // way, send this train's datagrams one by one.
                        if e == libc::EIO {
                            self.tx.disable_gso();
                        }
                        self.tx.send_train_individually(fd, k, &mut report)?;
                        k += 1;
                    }
                    _ => {
                        // The message at k failed (EAGAIN with a full send buffer, ECONNREFUSED,
                        // EMSGSIZE, ENETUNREACH, ...): count its datagrams and go on.
                        report.failed += self.tx.segs(k);
                        k += 1;
                    }
                }
            }
        }
        Ok(report)
    }
}

/// A `pollfd` waiting for `fd` to be readable (`-1`: an unused entry).
fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd { fd, events: libc::POLLIN, revents: 0 }
}

/// `d` as a `timespec` for `ppoll`.
fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}
