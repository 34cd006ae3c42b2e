//! Socket creation and `sockaddr` conversions shared by both backends.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::Config;

/// Creates, configures and binds the worker's UDP socket (blocking; the mmsg backend switches it
/// to nonblocking).
pub(crate) fn bind_socket(addr: SocketAddr, config: &Config) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack when bound to [::]; IPv4 peers then show up as plain IPv4 addresses.
        let _ = socket.set_only_v6(false);
    }
    if config.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if config.recv_buffer_bytes > 0 {
        set_buffer(&socket, libc::SO_RCVBUFFORCE, config.recv_buffer_bytes, |s, n| {
            s.set_recv_buffer_size(n)
        })?;
    }
    if config.send_buffer_bytes > 0 {
        set_buffer(&socket, libc::SO_SNDBUFFORCE, config.send_buffer_bytes, |s, n| {
            s.set_send_buffer_size(n)
        })?;
    }
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket)
}

/// Tries the `*BUFFORCE` option first (works with CAP_NET_ADMIN, ignoring `net.core.*mem_max`),
/// then the ordinary one, which the kernel silently clamps.
fn set_buffer(
    socket: &Socket,
    force_opt: libc::c_int,
    bytes: usize,
    fallback: impl FnOnce(&Socket, usize) -> io::Result<()>,
) -> io::Result<()> {
    let val = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: passes a pointer to a live c_int together with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            force_opt,
            (&val as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    fallback(socket, bytes)
}

/// The socket's bound address.
pub(crate) fn local_addr(socket: &Socket) -> io::Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "socket has no IP address"))
}

/// Writes `addr` as a `sockaddr` of the socket's family into `out`; returns its length, or `None`
/// when it cannot be expressed (an IPv6 destination on an IPv4 socket). On an IPv6 socket, IPv4
/// destinations are written as IPv4-mapped IPv6 addresses.
pub(crate) fn write_sockaddr(
    addr: SocketAddr,
    v6_socket: bool,
    out: &mut libc::sockaddr_storage,
) -> Option<libc::socklen_t> {
    let v6 = match (addr, v6_socket) {
        (SocketAddr::V4(a), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            return Some(mem::size_of::<libc::sockaddr_in>() as libc::socklen_t);
        }
        (SocketAddr::V6(_), false) => return None,
        (SocketAddr::V4(a), true) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
        (SocketAddr::V6(a), true) => a,
    };
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: v6.port().to_be(),
        sin6_flowinfo: v6.flowinfo().to_be(),
        sin6_addr: libc::in6_addr {
            s6_addr: v6.ip().octets(),
        },
        sin6_scope_id: v6.scope_id(),
    };
    // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
    unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
    Some(mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
}

/// Reads a peer address written by the kernel (`len` valid bytes). IPv4-mapped IPv6 addresses are
/// returned as IPv4. `None` for an unknown family or a short length.
pub(crate) fn read_sockaddr(storage: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, and storage is larger
            // than and aligned for it.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6, and storage is larger
            // than and aligned for it.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// A zeroed `sockaddr_storage`.
pub(crate) fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data for which all-zero bytes are a valid value.
    unsafe { mem::zeroed() }
}

/// Send errors that mean the socket itself is unusable (a bug or a closed descriptor), as opposed
/// to a per-datagram failure such as `EAGAIN`, `ECONNREFUSED`, `EMSGSIZE` or `EINVAL` (port 0).
pub(crate) fn is_fatal_send_errno(errno: i32) -> bool {
    matches!(errno, libc::EBADF | libc::ENOTSOCK | libc::EFAULT)
}

/// Receive errors that would repeat on every call (returned to the caller rather than retried).
pub(crate) fn is_fatal_recv_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL | libc::EOPNOTSUPP
    )
}

/// Symbolic name of the errno values `probe_uring` and the fallback message may report.
pub(crate) fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSYS => "ENOSYS",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::EFAULT => "EFAULT",
        libc::EBADF => "EBADF",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAGAIN => "EAGAIN",
        libc::EBUSY => "EBUSY",
        libc::ENOBUFS => "ENOBUFS",
        _ => "error",
    }
}

/// "`what`: ENAME (description)" for an io::Error carrying an errno.
pub(crate) fn describe(what: &str, err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "{what}: {} (blocked by seccomp, a container policy or kernel.io_uring_disabled?)",
            errno_name(err.raw_os_error().unwrap_or(0))
        ),
        Some(libc::ENOSYS) => format!("{what}: ENOSYS (kernel built without io_uring, or blocked by seccomp)"),
        Some(e) => format!("{what}: {} ({err})", errno_name(e)),
        None => format!("{what}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        let cases: [(&str, bool); 4] = [
            ("192.0.2.1:5000", false),
            ("192.0.2.1:5000", true),
            ("[2001:db8::1]:443", true),
            ("[::1]:1", true),
        ];
        for (s, v6) in cases {
            let a: SocketAddr = s.parse().unwrap_or_else(|_| unreachable!());
            let mut st = zeroed_storage();
            let len = write_sockaddr(a, v6, &mut st).unwrap_or_else(|| unreachable!());
            assert_eq!(read_sockaddr(&st, len as usize), Some(a), "{s} v6={v6}");
        }
        let mut st = zeroed_storage();
        let a: SocketAddr = "[::1]:1".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(write_sockaddr(a, false, &mut st), None);
    }
}
