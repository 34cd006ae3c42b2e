//! Batched, allocation-free UDP I/O for the Switchyard SFU.
//!
//! `switchyard-engine` runs one pinned worker thread per core, each owning one UDP socket on its
//! own port; this crate is that socket. A worker loop looks like:
//!
//! ```no_run
//! # use switchyard_udp::{UdpIo, Config, SendBatch};
//! # fn main() -> std::io::Result<()> {
//! let (mut io, fallback) = UdpIo::bind("0.0.0.0:0".parse().unwrap(), None, &Config::default())?;
//! if let Some(reason) = fallback {
//!     eprintln!("io_uring unavailable ({reason}): using mmsg");
//! }
//! let waker = io.waker(); // handed to other workers, who call waker.wake() after queueing work
//! let mut out = SendBatch::new(64);
//! loop {
//!     io.prepare_sleep();
//!     // ... last check of the hand-off queue here; if it had work, use a zero timeout ...
//!     io.recv(None, |pkt, from| {
//!         // decrypt / route in place, queue replies into `out`
//!         let _ = out.push(from, pkt);
//!     })?;
//!     io.send(&mut out)?;
//! #   break;
//! }
//! # Ok(()) }
//! ```
//!
//! Two backends sit behind the same narrow interface (in the style of quinn-udp):
//! [`IoKind::Uring`], io_uring driven directly from the worker thread (multishot `RECVMSG` with
//! a provided-buffer ring, `SENDMSG` / `SEND` batches), and [`IoKind::Mmsg`], `recvmmsg`/`sendmmsg` with
//! `ppoll` on the socket and an eventfd, plus UDP GSO for runs of equal-size datagrams to one
//! destination (a batch's datagrams are grouped by destination before sending, so a packet
//! forwarded to many subscribers in turn still forms one run per subscriber). [`UdpIo::bind`] picks io_uring when
//! [`probe_uring`] says it works and falls back to mmsg otherwise. Every buffer is allocated at
//! construction: receiving and sending perform no heap allocation in steady state. Linux only.
//!
//! A `UdpIo` may also hold *extra sockets* ([`UdpIo::add_socket`], e.g. the engine's TURN listener
//! and one relay socket per TURN allocation): [`UdpIo::recv_any`] delivers datagrams from all of
//! them in one call, tagged with a [`SocketId`], and a [`SendBatch`] slot queued with
//! [`SendBatch::push_with_via`] leaves through the socket it names. Extra sockets are watched by one
//! epoll instance and read with `recvmmsg` on either backend; the backend's wait includes it.

#![cfg(target_os = "linux")]
#![warn(missing_docs)]

mod batch;
mod extra;
mod mmsg;
mod probe;
mod sock;
mod tx;
mod uring;
mod waker;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::str::FromStr;
use std::time::{Duration, Instant};

pub use batch::SendBatch;
pub use extra::{SocketId, MAX_EXTRA_SOCKETS};
pub use probe::probe_uring;
pub use waker::Waker;

/// Size of every receive and send buffer: the largest datagram this crate delivers or sends.
/// Larger incoming datagrams are dropped (a WebRTC server never uses them; they would only be
/// delivered truncated).
pub const MAX_DATAGRAM: usize = 2048;

/// Which I/O backend a [`UdpIo`] uses. Displays as `"io_uring"` or `"mmsg"`; parses from
/// `"uring"`, `"io_uring"` (or `"io-uring"`) and `"mmsg"`, e.g. from the engine's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoKind {
    /// io_uring: multishot `RECVMSG` into a provided-buffer ring, `SENDMSG` / `SEND` batches, eventfd `READ`.
    Uring,
    /// `recvmmsg(2)` / `sendmmsg(2)` on a nonblocking socket, `ppoll(2)` to wait.
    Mmsg,
}

impl fmt::Display for IoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoKind::Uring => "io_uring",
            IoKind::Mmsg => "mmsg",
        })
    }
}

/// The error of parsing an [`IoKind`] from a string that names no backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseIoKindError {
    input: String,
}

impl fmt::Display for ParseIoKindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown UDP I/O backend {:?} (expected \"io_uring\" or \"mmsg\")", self.input)
    }
}

impl std::error::Error for ParseIoKindError {}

impl FromStr for IoKind {
    type Err = ParseIoKindError;

    fn from_str(s: &str) -> Result<IoKind, ParseIoKindError> {
        match s {
            "uring" | "io_uring" | "io-uring" => Ok(IoKind::Uring),
            "mmsg" => Ok(IoKind::Mmsg),
            _ => Err(ParseIoKindError { input: s.to_string() }),
        }
    }
}

/// Socket and batching settings for [`UdpIo::bind`]. The default is a batch of 64 datagrams,
/// 4 MiB receive and send buffers (`SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` when permitted, otherwise
/// `SO_RCVBUF`/`SO_SNDBUF`, which the kernel caps at `net.core.rmem_max`/`wmem_max`; 0 leaves the
/// system default), no `SO_REUSEPORT` and 1 ms of receive coalescing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Receive buffers per socket (the most datagrams one `recv` delivers) and datagrams per
    /// send system call / submission; clamped to 1..=4096 for io_uring.
    pub batch: usize,
    /// Kernel receive buffer size in bytes (`SO_RCVBUF`), 0 for the system default.
    pub recv_buffer_bytes: usize,
    /// Kernel send buffer size in bytes (`SO_SNDBUF`), 0 for the system default.
    pub send_buffer_bytes: usize,
    /// Set `SO_REUSEPORT` before binding.
    pub reuse_port: bool,
    /// Receive coalescing: after a [`UdpIo::recv`] that delivered several datagrams (more than
    /// one, fewer than its limit, so the socket is empty), the next blocking one lets datagrams
    /// gather for up to this long before it wakes for them, so that at moderate rates each
    /// wake-up carries a batch instead of a few datagrams (fewer sleeps and wake-ups per
    /// datagram). It adds up to this much latency to a datagram that arrives while the worker
    /// gathers; an idle socket, or one whose last receive found a single datagram, still wakes for
    /// its next datagram at once. On mmsg a [`Waker::wake`] or an extra socket ends the gathering at once; on
    /// io_uring (the kernel's minimum wait, `IORING_FEAT_MIN_TIMEOUT`, Linux 6.12+; none on older
    /// kernels) the wait ends early only when a full batch has arrived, so a wake-up is seen at
    /// most this much later. Zero turns it off. Default [`DEFAULT_RECV_COALESCE`].
    pub recv_coalesce: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            batch: 64,
            recv_buffer_bytes: 4 << 20,
            send_buffer_bytes: 4 << 20,
            reuse_port: false,
            recv_coalesce: DEFAULT_RECV_COALESCE,
        }
    }
}

/// Default [`Config::recv_coalesce`]: 1 ms (see perf/RESULTS.md for what it costs and saves).
pub const DEFAULT_RECV_COALESCE: Duration = Duration::from_millis(1);

/// Which of its two looks at a datagram a [`UdpIo::recv_look_ahead`] callback is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Every datagram of the batch, before the first is delivered: to look at (e.g. to prefetch
    /// what handling it will read), not to handle. Changes to the bytes are seen by the delivery.
    Ahead,
    /// The datagram to handle, once.
    Deliver,
}

/// Outcome of one [`UdpIo::send`]: datagrams the kernel accepted and datagrams that failed
/// individually (send buffer full, `ECONNREFUSED`, unreachable network, an IPv6 destination on
/// an IPv4 socket, ...). `sent + failed` equals the batch length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Datagrams handed to the kernel.
    pub sent: usize,
    /// Datagrams dropped because of a per-datagram error.
    pub failed: usize,
}

enum Backend {
    Uring(Box<uring::Uring>),
    Mmsg(Box<mmsg::Mmsg>),
}

/// One worker's UDP socket with batched receive and send (see the crate docs). Enum dispatch over
/// the two backends, no trait objects. `Send` (it may be created on one thread and moved to its
/// worker) but meant to be used by one thread at a time.
pub struct UdpIo {
    // Dropped first: the io_uring backend cancels its poll on the extras' epoll descriptor.
    backend: Backend,
    extras: extra::Extras,
    /// Alternates which of primary and extra sockets `recv_any` serves first.
    extras_first: bool,
}

impl fmt::Debug for UdpIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpIo")
            .field("kind", &self.kind())
            .field("local_addr", &self.local_addr().ok())
            .field("extra_sockets", &self.extras.len())
            .finish()
    }
}

impl UdpIo {
    /// Binds a UDP socket on `addr` with the requested backend, or probes when `kind` is `None`:
    /// io_uring if it works ([`probe_uring`] and the ring setup succeed), else mmsg. Returns the
    /// socket and, when it fell back, the reason, so the engine can log
    /// `"io_uring unavailable (...): using mmsg"`. An explicit `Some(IoKind::Uring)` that cannot
    /// be set up is an error (`Unsupported`, with the reason). Binding an IPv6 address makes a
    /// dual-stack socket where possible; IPv4 peers are then reported as IPv4 addresses.
    pub fn bind(addr: SocketAddr, kind: Option<IoKind>, config: &Config) -> io::Result<(UdpIo, Option<String>)> {
        let batch = config.batch.max(1);
        let (probe_failed, want_uring) = match kind {
            Some(IoKind::Mmsg) => (None, false),
            Some(IoKind::Uring) => match probe_uring() {
                Ok(()) => (None, true),
                Err(reason) => return Err(io::Error::new(io::ErrorKind::Unsupported, reason)),
            },
            None => match probe_uring() {
                Ok(()) => (None, true),
                Err(reason) => (Some(reason), false),
            },
        };
        let socket = sock::bind_socket(addr, config)?;
        let io = |backend| UdpIo { backend, extras: extra::Extras::new(batch), extras_first: false };
        let coalesce = config.recv_coalesce;
        if !want_uring {
            let backend = Backend::Mmsg(Box::new(mmsg::Mmsg::new(socket, batch, coalesce)?));
            return Ok((io(backend), probe_failed));
        }
        match uring::Uring::new(socket, batch, coalesce) {
            Ok(u) => Ok((io(Backend::Uring(Box::new(u))), None)),
            Err((_, reason)) if kind == Some(IoKind::Uring) => Err(io::Error::new(io::ErrorKind::Unsupported, reason)),
            Err((socket, reason)) => {
                let backend = Backend::Mmsg(Box::new(mmsg::Mmsg::new(socket, batch, coalesce)?));
                Ok((io(backend), Some(reason)))
            }
        }
    }

    /// Binds one more UDP socket on `addr` (with `config`'s buffer sizes and `SO_REUSEPORT`
    /// setting) and adds it to this `UdpIo`: from then on [`recv_any`](Self::recv_any) delivers
    /// its datagrams (tagged with the returned id) and a [`SendBatch`] slot queued
    /// [`via`](SendBatch::push_with_via) the id leaves through it. Extra sockets are watched by
    /// one epoll instance and read with `recvmmsg` whatever the backend; the first one allocates
    /// that instance and a batch of receive buffers. Meant for sockets that come and go at a
    /// human pace (a TURN relay per allocation), not per datagram.
    pub fn add_socket(&mut self, addr: SocketAddr, config: &Config) -> io::Result<SocketId> {
        let socket = sock::bind_socket(addr, config)?;
        self.extras.add(socket)
    }

    /// Adds an already bound UDP socket (e.g. one held in reserve by another thread); see
    /// [`add_socket`](Self::add_socket).
    pub fn adopt_socket(&mut self, socket: std::net::UdpSocket) -> io::Result<SocketId> {
        self.extras.add(socket2::Socket::from(socket))
    }

    /// Closes an extra socket; false if `id` names none (the primary socket cannot be removed).
    /// Datagrams still queued through it in a [`SendBatch`] count as failed when sent.
    pub fn remove_socket(&mut self, id: SocketId) -> bool {
        self.extras.remove(id)
    }

    /// The local address of socket `id` (the primary socket or a live extra one).
    pub fn socket_addr(&self, id: SocketId) -> io::Result<SocketAddr> {
        if id == SocketId::PRIMARY {
            return self.local_addr();
        }
        match self.extras.socket(id) {
            Some(s) => sock::local_addr(s),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such socket")),
        }
    }

    /// Number of extra sockets.
    pub fn extra_sockets(&self) -> usize {
        self.extras.len()
    }

    /// The backend in use.
    pub fn kind(&self) -> IoKind {
        match &self.backend {
            Backend::Uring(_) => IoKind::Uring,
            Backend::Mmsg(_) => IoKind::Mmsg,
        }
    }

    /// The address the socket is bound to (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sock::local_addr(self.socket())
    }

    /// How many datagrams [`send`](Self::send) may coalesce into one UDP GSO (`UDP_SEGMENT`)
    /// message: consecutive datagrams to the same destination with equal size (the last of a run
    /// may be shorter). Probed at bind; 0 when GSO is not used (an old kernel, or a device that
    /// refused it with `EIO`, after which it is switched off).
    pub fn gso_segments(&self) -> usize {
        match &self.backend {
            Backend::Uring(u) => u.gso_segments(),
            Backend::Mmsg(m) => m.gso_segments(),
        }
    }

    fn socket(&self) -> &socket2::Socket {
        match &self.backend {
            Backend::Uring(u) => u.socket(),
            Backend::Mmsg(m) => m.socket(),
        }
    }

    fn waker_inner(&self) -> &std::sync::Arc<waker::WakerInner> {
        match &self.backend {
            Backend::Uring(u) => u.waker(),
            Backend::Mmsg(m) => m.waker(),
        }
    }

    /// A new handle that wakes this socket's worker out of [`recv`](Self::recv); clone it freely
    /// and give it to other threads.
    pub fn waker(&self) -> Waker {
        Waker::new(self.waker_inner().clone())
    }

    /// Announces that the worker is about to sleep: call it before the last check of the
    /// worker's hand-off queues, then call [`recv`](Self::recv). From here on [`Waker::wake`]
    /// writes the eventfd, so work queued after that last check makes `recv` return at once
    /// instead of being noticed only at the next datagram or timeout. `recv` clears the flag when
    /// it returns. (`recv` also sets the flag itself before blocking, so a worker that skips this
    /// call is still woken while blocked, just not for hand-offs that raced with going to sleep.)
    pub fn prepare_sleep(&self) {
        self.waker_inner().announce_sleep();
    }

    /// Waits up to `timeout` (`None` = until woken or data; `Some(Duration::ZERO)` = do not
    /// block; after a batch of several datagrams the wait first gathers for
    /// [`Config::recv_coalesce`]) for
    /// datagrams; for each one calls `on_packet(&mut buf[..len], from)`, where the
    /// callee may modify the bytes in place. Delivers at most [`Config::batch`] datagrams per call
    /// and returns how many were delivered. Returns early with 0 when woken; if the worker was
    /// woken, or a [`Waker::wake`] raced with going to sleep after
    /// [`prepare_sleep`](Self::prepare_sleep), it does not block. Datagrams larger than
    /// [`MAX_DATAGRAM`] are dropped. Errors are those of the socket or ring itself, not of
    /// individual datagrams.
    ///
    /// With extra sockets ([`add_socket`](Self::add_socket)), datagrams from every socket are
    /// delivered without saying which; use [`recv_any`](Self::recv_any) then.
    pub fn recv(
        &mut self,
        timeout: Option<Duration>,
        mut on_packet: impl FnMut(&mut [u8], SocketAddr),
    ) -> io::Result<usize> {
        self.recv_any(timeout, |buf, from, _| on_packet(buf, from))
    }

    /// [`recv`](Self::recv) over the primary socket and every extra socket: `on_packet` also gets
    /// the id of the socket the datagram arrived on. At most the receive limit
    /// ([`set_recv_limit`](Self::set_recv_limit)) is delivered per call, over all sockets
    /// together; which of the primary and the extra sockets is served first alternates from call
    /// to call, so neither can starve the other. Without extra sockets this is exactly `recv`.
    pub fn recv_any(
        &mut self,
        timeout: Option<Duration>,
        mut on_packet: impl FnMut(&mut [u8], SocketAddr, SocketId),
    ) -> io::Result<usize> {
        self.recv_look_ahead(timeout, |buf, from, via, pass| {
            if pass == Pass::Deliver {
                on_packet(buf, from, via)
            }
        })
    }

    /// [`recv_any`](Self::recv_any), but the datagrams of the primary socket are shown to
    /// `on_packet` twice: first every one of a batch with [`Pass::Ahead`] (to look at, not to
    /// handle: e.g. to prefetch the state handling it will read), then each with
    /// [`Pass::Deliver`] to handle. Datagrams of extra sockets only come with `Pass::Deliver`.
    /// Returns how many were delivered.
    pub fn recv_look_ahead(
        &mut self,
        timeout: Option<Duration>,
        mut on_packet: impl FnMut(&mut [u8], SocketAddr, SocketId, Pass),
    ) -> io::Result<usize> {
        let res = self.recv_inner(timeout, &mut on_packet);
        self.waker_inner().clear_sleeping();
        res
    }

    fn backend_recv(
        &mut self,
        timeout: Option<Duration>,
        limit: usize,
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr, SocketId, Pass),
    ) -> io::Result<usize> {
        let extra = self.extras.epoll_fd();
        let mut primary = |buf: &mut [u8], from: SocketAddr, pass: Pass| on_packet(buf, from, SocketId::PRIMARY, pass);
        match &mut self.backend {
            Backend::Uring(u) => u.recv(timeout, limit, &mut primary, extra),
            Backend::Mmsg(m) => m.recv(timeout, limit, &mut primary, extra),
        }
    }

    fn recv_inner(
        &mut self,
        mut timeout: Option<Duration>,
        on_packet: &mut impl FnMut(&mut [u8], SocketAddr, SocketId, Pass),
    ) -> io::Result<usize> {
        // Coalescing on mmsg: after a receive that emptied the socket, let the next batch gather
        // first (io_uring does this in its blocking wait, with the kernel's minimum wait). A
        // wake-up (or an extra socket) that ends the gathering ends this call's waiting too.
        if let Backend::Mmsg(m) = &mut self.backend {
            if m.take_gather(timeout) && m.gather(timeout, self.extras.epoll_fd())? {
                timeout = Some(Duration::ZERO);
            }
        }
        if self.extras.is_empty() {
            return self.backend_recv(timeout, usize::MAX, on_packet);
        }
        let limit = match &self.backend {
            Backend::Uring(u) => u.recv_limit(),
            Backend::Mmsg(m) => m.recv_limit(),
        }
        .max(1);
        // Whatever is queued already, without blocking, in alternating order.
        self.extras_first = !self.extras_first;
        let mut n = 0;
        if self.extras_first {
            n += self.extras.recv_ready(limit, on_packet)?;
        }
        if n < limit {
            n += self.backend_recv(Some(Duration::ZERO), limit - n, on_packet)?;
        }
        if !self.extras_first && n < limit {
            n += self.extras.recv_ready(limit - n, on_packet)?;
        }
        if n > 0 || timeout == Some(Duration::ZERO) {
            return Ok(n);
        }
        // Nothing queued: wait for the primary socket, a wake-up or an extra socket.
        n = self.backend_recv(timeout, limit, on_packet)?;
        if n < limit {
            n += self.extras.recv_ready(limit - n, on_packet)?;
        }
        Ok(n)
    }

    /// Limits how many datagrams the next `recv` calls deliver (1 ..= `Config::batch`). A worker
    /// whose every received packet may fan out to many subscribers lowers it so one receive batch
    /// never produces more datagrams than its send batch holds; datagrams not delivered stay queued
    /// (in the socket or the completion ring) for the next call.
    pub fn set_recv_limit(&mut self, n: usize) {
        match &mut self.backend {
            Backend::Uring(u) => u.set_recv_limit(n),
            Backend::Mmsg(m) => m.set_recv_limit(n),
        }
    }

    /// Sends every datagram queued in `batch` (one `sendmmsg` / one io_uring submission per
    /// [`Config::batch`] datagrams, looping on partial sends), then clears it. Per-datagram errors
    /// (e.g. `ECONNREFUSED`, `EAGAIN` when the send buffer is full: sending never blocks) are
    /// counted in the report, not returned; an `Err` means the socket or ring itself failed (the
    /// batch is cleared all the same).
    ///
    /// Each datagram leaves through the socket its slot names ([`SendBatch::push_with_via`]); one
    /// whose extra socket was removed meanwhile counts as failed. Each destination's datagrams are
    /// first moved together ([`SendBatch::group_by_destination`]: their order among themselves
    /// kept) so that runs of equal size leave as UDP GSO trains.
    pub fn send(&mut self, batch: &mut SendBatch) -> io::Result<SendReport> {
        batch.group_by_destination();
        let res = match &mut self.backend {
            Backend::Uring(u) => u.send(batch, &self.extras),
            Backend::Mmsg(m) => m.send(batch, &self.extras),
        };
        batch.clear();
        res
    }
}

impl AsRawFd for UdpIo {
    /// The UDP socket's descriptor (e.g. for `getsockopt` or statistics); do not read from it.
    fn as_raw_fd(&self) -> RawFd {
        self.socket().as_raw_fd()
    }
}

/// An optional absolute deadline for a blocking wait.
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// `None` (or a timeout too large to represent) waits forever.
    pub(crate) fn new(timeout: Option<Duration>) -> Deadline {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Time left (`None` = forever).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    pub(crate) fn expired(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kind_display_and_parse() {
        assert_eq!(IoKind::Uring.to_string(), "io_uring");
        assert_eq!(IoKind::Mmsg.to_string(), "mmsg");
        assert_eq!("uring".parse::<IoKind>(), Ok(IoKind::Uring));
        assert_eq!("io_uring".parse::<IoKind>(), Ok(IoKind::Uring));
        assert_eq!("mmsg".parse::<IoKind>(), Ok(IoKind::Mmsg));
        assert!("epoll".parse::<IoKind>().is_err());
        assert_eq!(Config::default().batch, 64);
    }

    #[test]
    fn thread_safety_of_public_types() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<UdpIo>();
        send_sync::<SendBatch>();
        send_sync::<Waker>();
        send_sync::<Config>();
    }
}
