//! The io_uring backend, driven directly from the worker thread.
//!
//! Receive side: one multishot `RECVMSG` on the socket, fed from a provided-buffer ring of
//! `2 * batch` (power of two) slots; every completion names the slot the kernel filled, the slot
//! is handed to the callback in place and then given back to the ring. A `READ` on the eventfd is
//! kept posted for wake-ups. Waiting uses `io_uring_enter` with the extended argument (timeout).
//!
//! Where the kernel allows (6.1+), the receive ring is set up `SINGLE_ISSUER | DEFER_TASKRUN`:
//! completion work then runs only when the worker enters the ring to collect completions, instead
//! of interrupting the worker's return to user space for every datagram, and `TASKRUN_FLAG` tells
//! the worker without a system call whether any is pending. The ring starts disabled and is
//! enabled by the first `recv`, so the worker thread (not the thread that created it) is its
//! single issuer.
//!
//! Send side: a second, small ring whose `SENDMSG` entries (one per datagram or UDP GSO train,
//! `MSG_DONTWAIT`, built as in the mmsg backend) are submitted together with a single
//! `submit_and_wait` and all reaped before `send` returns, so the batch's buffers are free again.
//! A separate ring keeps send completions from interleaving with receive completions, so neither
//! path ever has to stash the other's events. A message of a single datagram goes out as a `SEND`
//! with the destination address (no `msghdr` for the kernel to copy and parse). Both rings hold
//! the socket as registered file 0, so no operation looks the descriptor up; they let go of it in
//! `Drop`, so the port is free as soon as the `Uring` is gone.

use std::alloc::{self, Layout};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, Fixed, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use socket2::Socket;

use crate::batch::SendBatch;
use crate::extra::{Extras, SocketId};
use crate::sock::{self, describe, is_fatal_recv_errno, is_fatal_send_errno};
use crate::tx::TxMessages;
use crate::waker::WakerInner;
use crate::{Deadline, Pass, SendReport, MAX_DATAGRAM};

const RECV_TAG: u64 = 1;
const WAKE_TAG: u64 = 2;
const CANCEL_TAG: u64 = 3;
/// The poll on the extra sockets' epoll descriptor.
const EXTRA_TAG: u64 = 4;
/// Buffer group id of the provided-buffer ring.
const BGID: u16 = 0;

/// `struct io_uring_recvmsg_out`, written by the kernel at the start of every multishot buffer.
#[repr(C)]
#[derive(Clone, Copy)]
struct RecvMsgOut {
    namelen: u32,
    controllen: u32,
    payloadlen: u32,
    flags: u32,
}

/// Room reserved for the peer address (fits `sockaddr_in` and `sockaddr_in6`).
const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();
/// Offset of the payload inside a slot: header, then the name field.
const PAYLOAD_OFF: usize = mem::size_of::<RecvMsgOut>() + NAME_LEN;
/// Length of a slot as given to the kernel: exactly MAX_DATAGRAM bytes of payload.
const SLOT_LEN: usize = PAYLOAD_OFF + MAX_DATAGRAM;
/// Distance between slots (cache-line multiple).
const SLOT_STRIDE: usize = (SLOT_LEN + 63) & !63;

/// A zeroed heap allocation handed to the kernel by address. Freed on drop unless `leak` was
/// called (when the kernel might still write to it).
struct RawMem {
    ptr: NonNull<u8>,
    layout: Layout,
    leak: bool,
}

impl RawMem {
    fn new(size: usize, align: usize) -> io::Result<RawMem> {
        let layout = Layout::from_size_align(size.max(1), align)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(RawMem { ptr, layout, leak: false })
    }

    fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for RawMem {
    fn drop(&mut self) {
        if !self.leak {
            // SAFETY: ptr was returned by alloc_zeroed with exactly this layout and is freed once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }
}

/// The provided-buffer ring: `entries` descriptors (page-aligned, shared with the kernel) and the
/// slot memory they point to.
struct BufRing {
    ring: RawMem,
    slots: RawMem,
    entries: u16,
    /// Our producer index; published to the kernel by `publish`.
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<BufRing> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).unwrap_or(4096).max(4096);
        let ring = RawMem::new(usize::from(entries) * mem::size_of::<BufRingEntry>(), page)?;
        let slots = RawMem::new(usize::from(entries) * SLOT_STRIDE, 64)?;
        Ok(BufRing { ring, slots, entries, tail: 0 })
    }

    fn base(&self) -> *mut BufRingEntry {
        self.ring.ptr().cast()
    }

    /// Gives slot `bid` (back) to the kernel; visible after `publish`.
    fn recycle(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: idx < entries, so the entry lies inside the ring allocation. The kernel only
        // reads entries between its head and our published tail, and this index is beyond the
        // published tail, so nothing reads it concurrently. The setters leave the `resv` field
        // (which doubles as the ring tail in entry 0) untouched.
        let entry = unsafe { &mut *self.base().add(idx) };
        // SAFETY: bid < entries, so the slot lies inside the slot allocation.
        let addr = unsafe { self.slots.ptr().add(usize::from(bid) * SLOT_STRIDE) };
        entry.set_addr(addr as u64);
        entry.set_len(SLOT_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes recycled slots visible to the kernel.
    fn publish(&self) {
        // SAFETY: the base is the first entry of a live, page-aligned ring; `tail` returns the
        // address of its `resv` field, which the kernel reads as the ring tail. The field is a
        // 2-byte aligned u16 that this process writes only through this atomic.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.base()) as *mut u16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The slot a receive completion with `flags` filled, if it names one of ours.
    fn completed(&self, flags: u32) -> Option<u16> {
        cqueue::buffer_select(flags).filter(|&bid| bid < self.entries)
    }

    /// The datagram in slot `bid` after a receive that returned `res`: its payload and sender, or
    /// `None` for an error or a datagram this server cannot use (truncated, no usable address).
    ///
    /// # Safety
    /// As for [`slot`](Self::slot).
    unsafe fn datagram(&mut self, bid: u16, res: i32) -> Option<(&mut [u8], SocketAddr)> {
        let len = usize::try_from(res).ok()?;
        // SAFETY: passed on from the caller.
        let slot = unsafe { self.slot(bid) };
        let (from, start, end) = parse_slot(slot, len)?;
        Some((&mut slot[start..end], from))
    }

    /// The slot `bid` as a mutable byte slice (the kernel has handed it to us).
    ///
    /// # Safety
    /// `bid` must be a slot the kernel returned in a completion and that was not recycled since.
    unsafe fn slot(&mut self, bid: u16) -> &mut [u8] {
        // SAFETY: per the contract, the slot is ours; bounds hold because bid < entries.
        unsafe {
            std::slice::from_raw_parts_mut(self.slots.ptr().add(usize::from(bid) * SLOT_STRIDE), SLOT_LEN)
        }
    }
}

/// io_uring backend. See the module docs.
pub(crate) struct Uring {
    // Field order matters for drop: the rings go first (after `Drop::drop` cancelled their
    // operations), then the memory they referenced, then the socket.
    rx: IoUring,
    tx: IoUring,
    bufs: BufRing,
    /// msghdr template for the multishot receive (only `msg_namelen` is used by the kernel).
    rx_msghdr: Box<libc::msghdr>,
    /// Completions taken off the queue by `reap`, with room for a full completion queue.
    cqes: Vec<cqueue::Entry>,
    /// Destination of the eventfd `READ`.
    wake_buf: RawMem,
    recv_armed: bool,
    wake_armed: bool,
    /// The receive ring was set up `SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG | R_DISABLED`.
    deferred: bool,
    /// A deferred ring has been enabled (by the thread that calls `recv`); until then nothing has
    /// been submitted.
    enabled: bool,
    /// Receive coalescing ([`Config::recv_coalesce`](crate::Config::recv_coalesce)) as the
    /// kernel's minimum wait: a blocking wait asks for a full batch and returns after this long
    /// if at least one completion is there. Zero = off (or not supported).
    min_wait_usec: u32,
    /// The last `recv` that delivered datagrams delivered more than one and fewer than its limit:
    /// the next blocking wait gathers (uses `min_wait_usec`); otherwise it wakes for the first
    /// datagram.
    drained: bool,
    /// The extra sockets' epoll descriptor, once there is one, and whether a poll on it is posted.
    extra_fd: Option<libc::c_int>,
    extra_armed: bool,
    recv_limit: usize,
    /// Outgoing message headers (GSO trains) and each message's send result.
    tx_msgs: TxMessages,
    tx_results: Box<[i32]>,
    tx_broken: bool,
    /// The socket is registered file 0 of the receive ring / of the send ring.
    rx_fixed: bool,
    tx_fixed: bool,
    /// A message of one datagram goes out as a `SEND` with a destination address (no `msghdr` for
    /// the kernel to copy and parse); off after a kernel refused that (older than 6.1).
    send_single: bool,
    waker: Arc<WakerInner>,
    v6: bool,
    socket: Socket,
}

// SAFETY: the raw pointers inside the msghdr/iovec arrays and the buffer ring only point into heap
// memory owned by this struct (or, during `send`, into the borrowed batch); IoUring itself is Send.
// Moving the struct moves exclusive ownership of all of it.
unsafe impl Send for Uring {}

impl Uring {
    /// Sets up the rings and buffers for a bound socket. On failure the socket is handed back
    /// with a one-line reason so that the caller can fall back to mmsg.
    pub(crate) fn new(socket: Socket, batch: usize, coalesce: Duration) -> Result<Uring, (Socket, String)> {
        macro_rules! attempt {
            ($what:expr, $e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(err) => return Err((socket, describe($what, &err))),
                }
            };
        }
        let v6 = attempt!("getsockname", sock::local_addr(&socket)).is_ipv6();
        let batch = batch.clamp(1, 4096);
        let entries = (batch * 2).next_power_of_two().clamp(8, 32768);
        let (rx, tx, deferred): (IoUring, IoUring, bool) = attempt!(
            "io_uring_setup",
            off_thread(|| {
                let cq = entries as u32 * 2 + 16;
                // Deferred task work where the kernel has it (6.1+), else the classic set-up.
                let (rx, deferred) = match IoUring::builder()
                    .setup_cqsize(cq)
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag()
                    .setup_r_disabled()
                    .build(8)
                {
                    Ok(rx) => (rx, true),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        (IoUring::builder().setup_cqsize(cq).build(8)?, false)
                    }
                    Err(e) => return Err(e),
                };
                let tx = IoUring::new(batch.next_power_of_two() as u32)?;
                Ok((rx, tx, deferred))
            })
        );
        if !rx.params().is_feature_ext_arg() {
            return Err((socket, "io_uring lacks IORING_FEAT_EXT_ARG (kernel older than 5.11)".into()));
        }
        // Coalescing needs the kernel's minimum wait (6.12+); without it, none.
        let min_wait_usec = if rx.params().is_feature_min_timeout() {
            u32::try_from(coalesce.as_micros()).unwrap_or(u32::MAX)
        } else {
            0
        };
        let mut bufs = attempt!("buffer ring allocation", BufRing::new(entries as u16));
        // SAFETY: the ring memory is page-aligned, holds `entries` descriptors and is owned by
        // the Uring (dropped after the ring, or leaked if operations cannot be cancelled).
        attempt!("io_uring_register(PBUF_RING)", unsafe {
            rx.submitter()
                .register_buf_ring_with_flags(bufs.base() as u64, bufs.entries, BGID, 0)
        });
        for bid in 0..bufs.entries {
            bufs.recycle(bid);
        }
        bufs.publish();
        let waker = attempt!("eventfd", WakerInner::new(false));
        let wake_buf = attempt!("allocation", RawMem::new(mem::size_of::<u64>(), 8));
        // SAFETY: msghdr is a plain C struct for which all-zero bytes are valid.
        let mut rx_msghdr: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        rx_msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        // Post the multishot receive and the eventfd read before anything can move.
        // The socket as a registered file in both rings (no file lookup per operation), where the
        // kernel lets us; by descriptor otherwise.
        let rx_fixed = rx.submitter().register_files(&[socket.as_raw_fd()]).is_ok();
        let tx_fixed = tx.submitter().register_files(&[socket.as_raw_fd()]).is_ok();
        let recv = recv_entry(&socket, rx_fixed, &rx_msghdr);
        let read = opcode::Read::new(Fd(waker.fd()), wake_buf.ptr(), mem::size_of::<u64>() as u32)
            .build()
            .user_data(WAKE_TAG);
        let mut rx = rx;
        // SAFETY: both entries reference heap memory (msghdr box, buffer ring, wake buffer) that
        // moves into the Uring below and outlives the operations (cancelled in Drop). The
        // submission queue has 8 free entries.
        let pushed = unsafe { rx.submission().push_multiple(&[recv, read]) };
        if pushed.is_err() {
            return Err((socket, "io_uring submission queue full at setup".into()));
        }
        // Not submitted here: the kernel runs a request's completion work (task_work) in the thread
        // that submitted it, and this constructor runs in the engine's main thread, which then sleeps
        // in sigwait. The first `recv`, in the worker thread that owns the socket, submits these, so
        // completions run there and no other thread's blocking calls are interrupted (EINTR).
        let tx_msgs = TxMessages::new(&socket, batch);
        Ok(Uring {
            rx,
            tx,
            bufs,
            rx_msghdr,
            cqes: Vec::with_capacity(entries * 2 + 16),
            wake_buf,
            recv_armed: true,
            wake_armed: true,
            deferred,
            enabled: !deferred,
            min_wait_usec,
            drained: false,
            extra_fd: None,
            extra_armed: false,
            recv_limit: batch,
            tx_msgs,
            tx_results: vec![0; batch].into_boxed_slice(),
            tx_broken: false,
            rx_fixed,
            tx_fixed,
            send_single: true,
            waker,
            v6,
            socket,
        })
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    pub(crate) fn waker(&self) -> &Arc<WakerInner> {
        &self.waker
    }

    /// Enables a deferred ring from the calling thread, which becomes its single issuer. Every
    /// path that enters the receive ring goes through here first.
    fn ensure_enabled(&mut self) -> io::Result<()> {
        if !self.enabled {
            self.rx.submitter().register_enable_rings()?;
            self.enabled = true;
        }
        Ok(())
    }

    /// Whether entering the receive ring now would do anything without waiting: entries to
    /// submit, deferred completion work to run, or (without deferral) possibly pending work.
    fn enter_needed(&mut self) -> bool {
        if !self.deferred {
            return true;
        }
        let mut sq = self.rx.submission();
        sq.sync();
        !sq.is_empty() || sq.taskrun() || sq.cq_overflow()
    }

    /// One enter that submits queued entries and runs pending completion work, never waiting
    /// (`submit` asks for events when the kernel flagged deferred work).
    fn enter_nowait(&mut self) -> io::Result<()> {
        match self.rx.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn push_rx(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry pushed here references memory owned by self (the msghdr
            // template, the buffer ring, the wake buffer), which stays alive until the operation
            // completes or is cancelled in Drop.
            if unsafe { self.rx.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.rx.submit()?;
        }
    }

    /// Queues the multishot receive and the eventfd read if they are not in flight.
    fn arm(&mut self) -> io::Result<()> {
        if !self.recv_armed {
            let e = recv_entry(&self.socket, self.rx_fixed, &self.rx_msghdr);
            self.push_rx(&e)?;
            self.recv_armed = true;
        }
        if !self.wake_armed {
            let e = opcode::Read::new(Fd(self.waker.fd()), self.wake_buf.ptr(), mem::size_of::<u64>() as u32)
                .build()
                .user_data(WAKE_TAG);
            self.push_rx(&e)?;
            self.wake_armed = true;
        }
        if let (Some(fd), false) = (self.extra_fd, self.extra_armed) {
            // One-shot (level-triggered) poll: completes at once if an extra socket already has
            // data, which `UdpIo` then drains.
            let e = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32).build().user_data(EXTRA_TAG);
            self.push_rx(&e)?;
            self.extra_armed = true;
        }
        Ok(())
    }

    /// Submits queued re-arms without waiting; transient failures leave them queued for the next
    /// enter.
    fn flush(&mut self) -> io::Result<()> {
        if self.rx.submission().is_empty() {
            return Ok(());
        }
        match self.rx.submit() {
            Ok(_) => Ok(()),
            Err(e) if transient(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Processes up to `limit` datagram completions already in the completion queue (no system
    /// call): takes them off the queue, shows every datagram to `on_packet` with
    /// [`Pass::Ahead`] (when there are several), then delivers each. Returns (datagrams
    /// delivered, woken).
    fn reap(
        &mut self,
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr, Pass),
        limit: usize,
    ) -> io::Result<(usize, bool)> {
        let mut delivered = 0;
        let mut woken = false;
        let mut fatal = None;
        let mut recycled = false;
        let mut cqes = mem::take(&mut self.cqes);
        cqes.clear();
        {
            let mut cq = self.rx.completion();
            let mut recvs = 0;
            // Within the capacity allocated at set-up: never grows.
            while recvs < limit && cqes.len() < cqes.capacity() {
                let Some(cqe) = cq.next() else { break };
                if cqe.user_data() == RECV_TAG {
                    recvs += 1;
                }
                cqes.push(cqe);
            }
        }
        if cqes.len() > 1 {
            for cqe in cqes.iter().filter(|c| c.user_data() == RECV_TAG) {
                let Some(bid) = self.bufs.completed(cqe.flags()) else { continue };
                // SAFETY: the kernel handed slot `bid` to us in this completion; it is recycled only
                // in the delivery loop below.
                if let Some((data, from)) = unsafe { self.bufs.datagram(bid, cqe.result()) } {
                    on_packet(data, from, Pass::Ahead);
                }
            }
        }
        for cqe in cqes.iter() {
            let res = cqe.result();
            let flags = cqe.flags();
            match cqe.user_data() {
                RECV_TAG => {
                    if let Some(bid) = self.bufs.completed(flags) {
                        // SAFETY: as above; recycled right after.
                        if let Some((data, from)) = unsafe { self.bufs.datagram(bid, res) } {
                            on_packet(data, from, Pass::Deliver);
                            delivered += 1;
                        }
                        self.bufs.recycle(bid);
                        recycled = true;
                    }
                    if !cqueue::more(flags) {
                        self.recv_armed = false;
                        if res < 0 && is_fatal_recv_errno(-res) {
                            fatal = Some(-res);
                        }
                    }
                }
                WAKE_TAG => {
                    self.wake_armed = false;
                    woken = true;
                    if res < 0 && is_fatal_recv_errno(-res) {
                        fatal = Some(-res);
                    }
                }
                EXTRA_TAG => {
                    // An extra socket is readable: end the wait like a wake-up.
                    self.extra_armed = false;
                    woken = true;
                }
                _ => {}
            }
        }
        self.cqes = cqes;
        if recycled {
            self.bufs.publish();
        }
        if let Some(errno) = fatal {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.arm()?;
        Ok((delivered, woken))
    }

    /// See [`UdpIo::set_recv_limit`](crate::UdpIo::set_recv_limit).
    pub(crate) fn set_recv_limit(&mut self, n: usize) {
        self.recv_limit = n.clamp(1, self.tx_results.len());
    }

    /// Coalescing: remembers whether a call that delivered `n` datagrams (of at most `limit`)
    /// left the queue empty; a call that delivered none leaves the mark as it was, and a single
    /// datagram says arrivals are sparse: nothing to gather.
    fn note_batch(&mut self, n: usize, limit: usize) {
        if n > 0 {
            self.drained = n > 1 && n < limit;
        }
    }

    /// Most datagrams sent per UDP GSO message (0 = GSO not used).
    pub(crate) fn gso_segments(&self) -> usize {
        self.tx_msgs.gso_segments()
    }

    /// Most datagrams one `recv` delivers.
    pub(crate) fn recv_limit(&self) -> usize {
        self.recv_limit
    }

    /// See [`UdpIo::recv`](crate::UdpIo::recv); delivers at most `limit` (and the receive limit)
    /// datagrams. `extra` is the extra sockets' epoll descriptor: a poll on it ends the wait too.
    pub(crate) fn recv(
        &mut self,
        timeout: Option<Duration>,
        limit: usize,
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr, Pass),
        extra: Option<libc::c_int>,
    ) -> io::Result<usize> {
        if extra != self.extra_fd {
            // The epoll instance is created once and lives as long as the UdpIo.
            self.extra_fd = extra;
            self.extra_armed = false;
        }
        self.ensure_enabled()?;
        let limit = self.recv_limit.min(limit).max(1);
        let (n, woken) = self.reap(on_packet, limit)?;
        if n > 0 || woken {
            self.note_batch(n, limit);
            self.flush()?;
            return Ok(n);
        }
        if timeout == Some(Duration::ZERO) {
            // One enter (if there is anything to do): submits re-arms and runs pending completion
            // work.
            if self.enter_needed() {
                self.enter_nowait()?;
            }
            let (n, _) = self.reap(on_packet, limit)?;
            self.note_batch(n, limit);
            self.flush()?;
            return Ok(n);
        }
        let deadline = Deadline::new(timeout);
        self.waker.announce_sleep();
        // Coalescing: after a partial batch, wait for a full one, or for at least one datagram
        // once the minimum wait has passed. Otherwise (and after a gathering wait that found
        // nothing) wake for the first completion.
        let mut min = if self.drained { self.min_wait_usec } else { 0 };
        self.drained = false;
        loop {
            let want = if min == 0 { 1 } else { limit };
            let waited = match deadline.remaining() {
                None if min == 0 => self.rx.submit_and_wait(1),
                None => {
                    let args = SubmitArgs::new().min_wait_usec(min);
                    self.rx.submitter().submit_with_args(want, &args)
                }
                Some(d) => {
                    let ts = Timespec::from(d);
                    let args = SubmitArgs::new().timespec(&ts).min_wait_usec(min);
                    self.rx.submitter().submit_with_args(want, &args)
                }
            };
            match waited {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) || transient(&e) => {}
                Err(e) => return Err(e),
            }
            min = 0;
            let (n, woken) = self.reap(on_packet, limit)?;
            if n > 0 || woken || deadline.expired() {
                self.note_batch(n, limit);
                self.flush()?;
                return Ok(n);
            }
        }
    }

    /// See [`UdpIo::send`](crate::UdpIo::send): one `SENDMSG` per datagram or GSO train, all
    /// submitted with one enter and reaped before returning. A train the kernel refuses with
    /// `EIO` (no segmentation offload: GSO is then switched off) or `EINVAL` is sent again one
    /// datagram at a time.
    pub(crate) fn send(&mut self, batch: &SendBatch, extras: &Extras) -> io::Result<SendReport> {
        if self.tx_broken {
            return Err(io::Error::other("io_uring send ring failed earlier"));
        }
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
            let m = self.tx_msgs.build(batch, &mut next, &mut report, via, v6);
            let fixed = self.tx_fixed && via == SocketId::PRIMARY;
            let send_single = self.send_single;
            for k in 0..m {
                let single = self.tx_msgs.single(k).filter(|_| send_single);
                macro_rules! entry {
                    ($fd:expr) => {
                        match single {
                            Some((buf, len, name, namelen)) => opcode::Send::new($fd, buf, len)
                                .dest_addr(name)
                                .dest_addr_len(namelen)
                                .flags(libc::MSG_DONTWAIT)
                                .build(),
                            None => opcode::SendMsg::new($fd, self.tx_msgs.msghdr(k))
                                .flags(libc::MSG_DONTWAIT as u32)
                                .build(),
                        }
                    };
                }
                let e = if fixed { entry!(Fixed(0)) } else { entry!(Fd(fd)) }.user_data(k as u64);
                // SAFETY: the msghdr, its name, iovecs and control buffer live in arrays owned by
                // self and the payload in `batch`, borrowed for this call; every entry is reaped
                // below before this function returns, so nothing outlives the borrow.
                if unsafe { self.tx.submission().push(&e) }.is_err() {
                    // Cannot happen: the send ring has at least `batch` entries and is empty here.
                    self.tx_broken = true;
                    return Err(io::Error::other("io_uring send queue unexpectedly full"));
                }
            }
            let mut done = 0;
            while done < m {
                match self.tx.submit_and_wait(m - done) {
                    Ok(_) => {}
                    Err(e) if transient(&e) => {}
                    Err(e) => {
                        // Entries may still reference `batch`: never touch this ring again.
                        self.tx_broken = true;
                        return Err(e);
                    }
                }
                for cqe in self.tx.completion() {
                    done += 1;
                    if let Some(r) = self.tx_results.get_mut(cqe.user_data() as usize) {
                        *r = cqe.result();
                    }
                }
            }
            for k in 0..m {
                let res = self.tx_results[k];
                let segs = self.tx_msgs.segs(k);
                if res >= 0 {
                    report.sent += segs;
                } else if (res == -libc::EINVAL || res == -libc::EDESTADDRREQ) && segs == 1 && send_single {
                    // A kernel without addresses on SEND (it refuses them, or ignores them and
                    // finds the socket unconnected): sendmsg from now on, this one included.
                    self.send_single = false;
                    self.tx_msgs.send_train_individually(fd, k, &mut report)?;
                } else if is_fatal_send_errno(-res) {
                    return Err(io::Error::from_raw_os_error(-res));
                } else if (res == -libc::EIO || res == -libc::EINVAL) && segs > 1 {
                    if res == -libc::EIO {
                        self.tx_msgs.disable_gso();
                    }
                    self.tx_msgs.send_train_individually(fd, k, &mut report)?;
                } else {
                    report.failed += segs;
                }
            }
        }
        Ok(report)
    }
}

/// The multishot receive on `socket` (registered file 0 when `fixed`).
fn recv_entry(socket: &Socket, fixed: bool, msghdr: &libc::msghdr) -> squeue::Entry {
    let e = if fixed {
        opcode::RecvMsgMulti::new(Fixed(0), msghdr, BGID).build()
    } else {
        opcode::RecvMsgMulti::new(Fd(socket.as_raw_fd()), msghdr, BGID).build()
    };
    e.user_data(RECV_TAG)
}

/// Runs ring set-up (`io_uring_setup`) on a short-lived thread of its own and returns the result.
///
/// The kernel registers the task that creates a ring as one of the ring's users, and when the
/// ring is torn down it sends every registered task a signal-like task_work (`TWA_SIGNAL`) and
/// waits for it: a blocking call in the creating thread (a receive with `SO_RCVTIMEO`, say) then
/// fails with `EINTR`, possibly long after creation. A thread that exits drops its registration,
/// so creating rings on a throw-away thread leaves only the worker thread, which submits and tears
/// down the ring itself, registered.
pub(crate) fn off_thread<T: Send>(f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("io_uring-setup".into())
            .spawn_scoped(s, f)?
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("io_uring set-up thread panicked")))
    })
}

/// Errors of `io_uring_enter` after which simply trying again is right.
fn transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY))
}

/// Parses a multishot receive slot (`res` bytes written): peer address and payload range, or
/// `None` for a truncated datagram or an unknown address family.
fn parse_slot(slot: &[u8], res: usize) -> Option<(SocketAddr, usize, usize)> {
    if slot.len() < PAYLOAD_OFF || res < PAYLOAD_OFF {
        return None;
    }
    // SAFETY: the slot holds at least size_of::<RecvMsgOut>() bytes; read_unaligned has no
    // alignment requirement and RecvMsgOut is plain integers.
    let hdr = unsafe { ptr::read_unaligned(slot.as_ptr().cast::<RecvMsgOut>()) };
    if hdr.flags & libc::MSG_TRUNC as u32 != 0 {
        return None;
    }
    let namelen = (hdr.namelen as usize).min(NAME_LEN);
    let mut storage = sock::zeroed_storage();
    let name_off = mem::size_of::<RecvMsgOut>();
    // SAFETY: copies namelen <= NAME_LEN bytes from inside the slot (checked above) into a
    // sockaddr_storage, which is larger than NAME_LEN; the regions do not overlap.
    unsafe {
        ptr::copy_nonoverlapping(
            slot.as_ptr().add(name_off),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            namelen,
        );
    }
    let from = sock::read_sockaddr(&storage, namelen)?;
    let len = (hdr.payloadlen as usize).min(MAX_DATAGRAM).min(res - PAYLOAD_OFF);
    Some((from, PAYLOAD_OFF, PAYLOAD_OFF + len))
}

impl Drop for Uring {
    fn drop(&mut self) {
        // A registered file keeps the socket open until the ring lets go of it, and a ring closed
        // with files still registered lets go later, from a kernel worker: unregister here so the
        // port is free when this returns. The send ring has nothing in flight between sends.
        if self.tx_fixed {
            let _ = self.tx.submitter().unregister_files();
        }
        if !self.enabled {
            // A deferred ring never enabled has had nothing submitted: no operation can touch
            // the memory.
            if self.rx_fixed {
                let _ = self.rx.submitter().unregister_files();
            }
            return;
        }
        // Cancel the in-flight receive and eventfd read and wait for their final completions, so
        // that the kernel no longer writes into memory about to be freed. If that does not work
        // out (it always should; a deferred ring dropped by another thread than its issuer
        // refuses), leak the memory instead.
        let _ = self.rx.submit();
        let mut live_recv = self.recv_armed;
        let mut live_wake = self.wake_armed;
        for target in [RECV_TAG, WAKE_TAG, EXTRA_TAG] {
            let e = opcode::AsyncCancel::new(target).build().user_data(CANCEL_TAG);
            // SAFETY: a cancel entry references no memory.
            let _ = unsafe { self.rx.submission().push(&e) };
        }
        let ts = Timespec::from(Duration::from_millis(10));
        for _ in 0..200 {
            if !live_recv && !live_wake {
                break;
            }
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.rx.submitter().submit_with_args(1, &args);
            for cqe in self.rx.completion() {
                match cqe.user_data() {
                    RECV_TAG if !cqueue::more(cqe.flags()) => live_recv = false,
                    WAKE_TAG => live_wake = false,
                    _ => {}
                }
            }
        }
        if self.rx_fixed && !live_recv {
            let _ = self.rx.submitter().unregister_files();
        }
        if live_recv || live_wake {
            self.bufs.ring.leak = true;
            self.bufs.slots.leak = true;
            self.wake_buf.leak = true;
        }
    }
}
