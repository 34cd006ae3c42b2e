//! Outgoing message headers shared by both backends: a [`SendBatch`] becomes `mmsghdr`s, one per
//! datagram or per UDP GSO train (consecutive datagrams to one destination with equal size, the
//! last of a run possibly shorter, sent as one message with a `UDP_SEGMENT` control message; the
//! receiver still sees separate datagrams). The mmsg backend hands the headers to `sendmmsg`, the
//! io_uring backend submits one `SENDMSG` per header.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use socket2::Socket;

use crate::batch::SendBatch;
use crate::extra::SocketId;
use crate::sock::{self, is_fatal_send_errno};
use crate::SendReport;

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

/// Message headers for up to `cap` datagrams, allocated once. The raw pointers in the headers
/// point into this struct's boxed arrays (whose heap addresses do not move) and, between
/// [`TxMessages::build`] and the send that follows it, into the borrowed batch.
pub(crate) struct TxMessages {
    /// One iovec per queued datagram.
    iov: Box<[libc::iovec]>,
    /// Per message: destination, header, `UDP_SEGMENT` control buffer and datagram count.
    names: Box<[libc::sockaddr_storage]>,
    hdrs: Box<[libc::mmsghdr]>,
    cmsg: Box<[CmsgBuf]>,
    segs: Box<[usize]>,
    /// Most datagrams per GSO message; 0 when UDP GSO is unavailable or was turned off.
    gso_segments: usize,
}

// SAFETY: the raw pointers inside the iovec/mmsghdr arrays only ever point into heap memory owned
// by this same struct (or, during a send, into the borrowed batch), so moving the struct to another
// thread moves exclusive ownership of everything they point to.
unsafe impl Send for TxMessages {}

impl TxMessages {
    /// Headers for `cap` datagrams; GSO is used if `socket` knows `UDP_SEGMENT`.
    pub(crate) fn new(socket: &Socket, cap: usize) -> TxMessages {
        let n = cap.max(1);
        // SAFETY: iovec and mmsghdr are plain C structs for which all-zero bytes are valid.
        let zero_iov: libc::iovec = unsafe { mem::zeroed() };
        // SAFETY: as above.
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        TxMessages {
            iov: vec![zero_iov; n].into_boxed_slice(),
            names: vec![sock::zeroed_storage(); n].into_boxed_slice(),
            hdrs: vec![zero_hdr; n].into_boxed_slice(),
            cmsg: vec![CmsgBuf([0; 32]); n].into_boxed_slice(),
            segs: vec![0usize; n].into_boxed_slice(),
            gso_segments: if n > 1 && gso_supported(socket) { GSO_MAX_SEGMENTS.min(n) } else { 0 },
        }
    }

    /// Most datagrams sent per UDP GSO message (0 = GSO not used).
    pub(crate) fn gso_segments(&self) -> usize {
        self.gso_segments
    }

    /// Stops using GSO (after the device refused a train with `EIO`).
    pub(crate) fn disable_gso(&mut self) {
        self.gso_segments = 0;
    }

    /// Datagrams carried by message `k` of the last build.
    pub(crate) fn segs(&self, k: usize) -> usize {
        self.segs[k]
    }

    /// Datagrams carried by messages `k..k + n` of the last build.
    pub(crate) fn segs_sum(&self, k: usize, n: usize) -> usize {
        self.segs[k..k + n].iter().sum()
    }

    /// The headers of the last build, for `sendmmsg`.
    pub(crate) fn hdrs_ptr(&mut self, k: usize) -> *mut libc::mmsghdr {
        // SAFETY (of the caller's use): k is at most the number of messages built.
        self.hdrs[k..].as_mut_ptr()
    }

    /// Message `k` of the last build if it carries one datagram: the datagram and its destination
    /// (pointers into the batch and into this struct, valid as [`msghdr`](Self::msghdr)'s are).
    pub(crate) fn single(&self, k: usize) -> Option<(*const u8, u32, *const libc::sockaddr, libc::socklen_t)> {
        if self.segs[k] != 1 {
            return None;
        }
        let h = &self.hdrs[k].msg_hdr;
        // SAFETY: a built message's msg_iov points at its one iovec inside `iov`.
        let iov = unsafe { *h.msg_iov };
        Some((iov.iov_base as *const u8, iov.iov_len as u32, h.msg_name as *const libc::sockaddr, h.msg_namelen))
    }

    /// Message `k`'s `msghdr`, for a `SENDMSG` submission.
    pub(crate) fn msghdr(&self, k: usize) -> *const libc::msghdr {
        &self.hdrs[k].msg_hdr
    }

    /// Fills message headers (and as many iovecs) from `batch`, starting at `*next`, and returns
    /// the number of messages. Only datagrams leaving through `via` (an `v6` socket or not) are
    /// taken: the run ends at the first datagram for another socket. Datagrams whose destination
    /// the socket cannot reach (IPv6 on an IPv4 socket) are counted as failed and skipped.
    pub(crate) fn build(
        &mut self,
        batch: &SendBatch,
        next: &mut usize,
        report: &mut SendReport,
        via: SocketId,
        v6: bool,
    ) -> usize {
        let cap = self.hdrs.len();
        let total = batch.len();
        let mut m = 0; // messages
        let mut d = 0; // iovecs (datagrams)
        while m < cap && d < cap && *next < total {
            if batch.via(*next) != Some(via) {
                break;
            }
            let Some((to, data)) = batch.get(*next) else { break };
            *next += 1;
            let Some(namelen) = sock::write_sockaddr(to, v6, &mut self.names[m]) else {
                report.failed += 1;
                continue;
            };
            let first = d;
            self.iov[d] = iovec_for(data);
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
                    self.iov[d] = iovec_for(data2);
                    d += 1;
                    bytes += data2.len();
                    if data2.len() < seg {
                        break;
                    }
                }
            }
            let segs = d - first;
            self.segs[m] = segs;
            let h = &mut self.hdrs[m];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.names[m] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &mut self.iov[first];
            h.msg_hdr.msg_iovlen = segs;
            h.msg_hdr.msg_flags = 0;
            if segs > 1 {
                h.msg_hdr.msg_control = self.cmsg[m].0.as_mut_ptr().cast();
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
    pub(crate) fn send_train_individually(&mut self, fd: RawFd, k: usize, report: &mut SendReport) -> io::Result<()> {
        let h = self.hdrs[k].msg_hdr;
        for j in 0..self.segs[k] {
            let mut single = h;
            // SAFETY: msg_iov points at segs[k] consecutive iovecs inside iov.
            single.msg_iov = unsafe { h.msg_iov.add(j) };
            single.msg_iovlen = 1;
            single.msg_control = ptr::null_mut();
            single.msg_controllen = 0;
            loop {
                // SAFETY: `single` references a live name and iovec as in `build`.
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
