//! Cross-thread wake-ups for a worker blocked in [`UdpIo::recv`](crate::UdpIo::recv).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

/// State shared between a backend and every clone of its [`Waker`].
#[derive(Debug)]
pub(crate) struct WakerInner {
    efd: OwnedFd,
    /// True while the worker has announced that it is (about to be) asleep.
    sleeping: AtomicBool,
}

impl WakerInner {
    /// Creates the eventfd. `nonblocking` must be false for the io_uring backend: io_uring
    /// honours `O_NONBLOCK` on reads and would complete the pending read with `EAGAIN`
    /// instead of waiting for a write.
    pub(crate) fn new(nonblocking: bool) -> io::Result<Arc<WakerInner>> {
        let mut flags = libc::EFD_CLOEXEC;
        if nonblocking {
            flags |= libc::EFD_NONBLOCK;
        }
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(WakerInner {
            efd,
            sleeping: AtomicBool::new(false),
        }))
    }

    /// The eventfd, for polling or reading by the owning worker.
    pub(crate) fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Worker side: announce that the worker is going to sleep. The fence orders this store
    /// before the worker's subsequent loads of its hand-off queues (Dekker-style with `wake`).
    pub(crate) fn announce_sleep(&self) {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Worker side: the worker is awake again, hand-offs need no eventfd write.
    pub(crate) fn clear_sleeping(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Consumes a pending eventfd count (nonblocking eventfd only: used by the mmsg backend after
    /// poll reported it readable).
    pub(crate) fn drain(&self) {
        let mut buf = 0u64;
        // SAFETY: reads at most 8 bytes into a local u64 that lives for the duration of the call.
        let _ = unsafe {
            libc::read(
                self.fd(),
                (&mut buf as *mut u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    fn wake(&self) {
        // Orders the caller's queue push before the load of `sleeping` (pairs with the fence in
        // `announce_sleep`): either we see `sleeping == true`, or the worker sees the pushed work.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a local u64 that lives for the duration of the call.
            // A failed write can only mean the counter is saturated, i.e. a wake-up is pending
            // anyway, so the result is ignored.
            let _ = unsafe {
                libc::write(
                    self.fd(),
                    (&one as *const u64).cast::<libc::c_void>(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

/// Cloneable, `Send + Sync` handle that wakes a worker blocked in [`UdpIo::recv`](crate::UdpIo::recv)
/// through an eventfd. To avoid a system call per hand-off, [`Waker::wake`] only writes the
/// eventfd when the worker announced that it is about to sleep: the worker calls
/// [`UdpIo::prepare_sleep`](crate::UdpIo::prepare_sleep) before its last check of its queues and
/// then `recv(..)`; `wake()` does `if sleeping.swap(false) { write eventfd }`, so a wake-up that
/// races with going to sleep is never lost. A handle stays valid after the `UdpIo` is dropped
/// (waking it is then a no-op).
#[derive(Clone, Debug)]
pub struct Waker {
    inner: Arc<WakerInner>,
}

impl Waker {
    pub(crate) fn new(inner: Arc<WakerInner>) -> Waker {
        Waker { inner }
    }

    /// Wakes the worker if it announced sleep (then `recv` returns promptly, with 0 if no datagram
    /// arrived); otherwise costs one fence and one atomic load and no system call. Call it after
    /// publishing the work to the worker's queue.
    pub fn wake(&self) {
        self.inner.wake();
    }
}
