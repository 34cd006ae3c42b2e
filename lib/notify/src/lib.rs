//! `switchyard-notify`: the systemd service-manager notification protocol (`sd_notify(3)`) for
//! Switchyard's daemons, which run as `Type=notify` units.
//!
//! systemd passes a Unix datagram socket in `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace) and, when the unit has `WatchdogSec=`, the watchdog timeout in `$WATCHDOG_USEC`. A daemon
//! sends newline-separated `KEY=VALUE` assignments:
//!
//! ```text
//!  READY=1        start-up is complete: systemd starts the units ordered after this one
//!  WATCHDOG=1     still alive; missing it for WatchdogSec gets the service killed and restarted
//!  STOPPING=1     shutting down cleanly
//!  STATUS=...     one line shown by `systemctl status`
//! ```
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) [`Notifier::from_env`] returns `None` and the daemons skip
//! all of it. The engine and the control daemon both link this crate; each decides what "alive" means
//! for its own watchdog (every worker loop turning; the hub answering).
#![warn(unreachable_pub, missing_docs)]

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names; `Ok(None)` when it is unset or empty (not run by systemd,
    /// or a unit type other than `notify`).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(s) if !s.is_empty() => {
                let s = s.into_string().map_err(|_| invalid("NOTIFY_SOCKET is not valid UTF-8"))?;
                Notifier::new(&s).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// A notifier sending to `socket`: a filesystem path, or `@name` for the abstract namespace.
    pub fn new(socket: &str) -> io::Result<Notifier> {
        let addr = if let Some(name) = socket.strip_prefix('@') {
            abstract_addr(name.as_bytes())?
        } else if socket.starts_with('/') {
            SocketAddr::from_pathname(socket)?
        } else {
            // systemd also uses vsock:CID:PORT for VMs; the daemons never run there.
            return Err(invalid(&format!("unsupported NOTIFY_SOCKET {socket:?}: expected a path or @name")));
        };
        Ok(Notifier { socket: UnixDatagram::unbound()?, addr })
    }

    /// Sends raw assignments, e.g. `"READY=1\nSTATUS=listening"`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.addr)?;
        if sent != state.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "notification truncated"));
        }
        Ok(())
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) -> io::Result<()> {
        self.notify("WATCHDOG=1")
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
    }

    /// `STATUS=...`.
    pub fn status(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("STATUS={}", one_line(status)))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(invalid("abstract socket addresses exist only on Linux"))
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// A status must not break the newline-separated protocol.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC` (as `sd_watchdog_enabled(3)` advises),
/// or `None` when the unit has no watchdog or `$WATCHDOG_PID` names another process.
pub fn watchdog_period() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    period_from(&usec, pid.as_deref(), std::process::id())
}

fn period_from(usec: &str, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    let usec: u64 = usec.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// A thread sending `WATCHDOG=1` every `period` for as long as `alive` says so; stops when dropped.
///
/// `alive` is called once per period and may block for up to about `period` (e.g. waiting for every
/// worker to answer). When it returns false the ping is skipped, so a daemon that is stuck in part is
/// restarted by systemd once `WatchdogSec` passes without one.
#[derive(Debug)]
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the thread.
    pub fn spawn<F>(notifier: Notifier, period: Duration, mut alive: F) -> io::Result<Watchdog>
    where
        F: FnMut() -> bool + Send + 'static,
    {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("sd-watchdog".into()).spawn(move || {
            // The first ping goes out at once: READY=1 was just sent, the clock runs from there.
            loop {
                if alive() {
                    // systemd not listening (any more) is not the daemon's problem.
                    let _ = notifier.watchdog();
                }
                match stopped.recv_timeout(period) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(Watchdog { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("switchyard-notify-{}-{name}", std::process::id()))
    }

    #[test]
    fn sends_to_a_path() {
        let path = temp_path("path");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        n.ready("listening\non 2 workers").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=listening on 2 workers");
        n.stopping("bye").unwrap();
        assert_eq!(recv(&server), "STOPPING=1\nSTATUS=bye");
        let _ = std::fs::remove_file(&path);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("switchyard-notify-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.watchdog().unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn refuses_what_it_cannot_reach() {
        assert!(Notifier::new("vsock:2:1234").is_err());
        assert!(Notifier::new("relative/path").is_err());
    }

    #[test]
    fn watchdog_period_is_half_the_timeout_for_this_process() {
        assert_eq!(period_from("30000000", None, 7), Some(Duration::from_secs(15)));
        assert_eq!(period_from("30000000", Some("7"), 7), Some(Duration::from_secs(15)));
        assert_eq!(period_from("30000000", Some("8"), 7), None);
        assert_eq!(period_from("0", None, 7), None);
        assert_eq!(period_from("soon", None, 7), None);
    }

    #[test]
    fn watchdog_pings_only_while_alive_and_stops_when_dropped() {
        let path = temp_path("watchdog");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let alive = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&alive);
        let dog = Watchdog::spawn(Notifier::new(path.to_str().unwrap()).unwrap(), Duration::from_millis(20), move || {
            flag.load(Ordering::Relaxed)
        })
        .unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
        alive.store(false, Ordering::Relaxed);
        // Drain what was sent before the flag flipped, then expect silence.
        std::thread::sleep(Duration::from_millis(60));
        let mut buf = [0u8; 64];
        server.set_nonblocking(true).unwrap();
        while server.recv(&mut buf).is_ok() {}
        std::thread::sleep(Duration::from_millis(100));
        assert!(server.recv(&mut buf).is_err(), "no ping while not alive");
        drop(dog);
        let _ = std::fs::remove_file(&path);
    }
}
