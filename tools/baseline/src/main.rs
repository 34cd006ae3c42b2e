//! `switchyard-baseline`: the performance baseline. A plain UDP fan-out forwarder with no crypto,
//! no ICE and no parsing beyond the RTP SSRC: what the kernel and `recvmmsg`/`sendmmsg` allow on
//! this machine, against which the SFU's SRTP forwarding is compared.
//!
//! Protocol (the load generator's raw mode): a subscriber sends `SYSUB` followed by the SSRCs it
//! wants (4 bytes each, big-endian) and gets `SYOK` back; every RTP packet (version 2) arriving
//! afterwards with one of those SSRCs is sent, unchanged, to every subscriber of it. Each worker
//! thread owns one socket (port `--port + i`); a room's publisher and subscribers use the same one.
//! Sends reference the receive buffers directly (no copy), one `sendmmsg` per receive batch.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

const MAX_DATAGRAM: usize = 2048;
/// Most sends queued per receive batch; a larger fan-out is flushed in several calls.
const SEND_BATCH: usize = 1024;

/// A plain recvmmsg/sendmmsg UDP fan-out forwarder (the benchmark baseline).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to bind (IPv4).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// First port; worker i binds port + i.
    #[arg(long, default_value_t = 40000)]
    port: u16,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Datagrams per recvmmsg.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Print forwarded packets per second every second.
    #[arg(long)]
    stats: bool,
}

fn main() -> io::Result<()> {
    let a = Args::parse();
    let IpAddr::V4(ip) = a.bind else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--bind must be IPv4",
        ));
    };
    let forwarded = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..a.workers.max(1) {
        let port = a
            .port
            .checked_add(i as u16)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "port overflow"))?;
        let sock = bind(SocketAddrV4::new(ip, port))?;
        eprintln!("baseline worker {i} listening on {}", sock.local_addr()?);
        let fwd = Arc::clone(&forwarded);
        let batch = a.batch.clamp(1, 1024);
        handles.push(
            std::thread::Builder::new()
                .name(format!("fwd-{i}"))
                .spawn(move || worker(sock, batch, fwd))?,
        );
    }
    println!(
        "switchyard-baseline ready: {} worker(s) from {}:{}",
        a.workers.max(1),
        ip,
        a.port
    );
    if a.stats {
        let mut last = 0;
        let mut t = Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = forwarded.load(Ordering::Relaxed);
            eprintln!(
                "forwarded {:.0} pkt/s",
                (now - last) as f64 / t.elapsed().as_secs_f64()
            );
            last = now;
            t = Instant::now();
        }
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn bind(addr: SocketAddrV4) -> io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s.into())
}

#[cfg(test)]
fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        std::net::Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes()),
        u16::from_be(s.sin_port),
    )
}

fn worker(sock: std::net::UdpSocket, batch: usize, forwarded: Arc<AtomicU64>) {
    let fd = sock.as_raw_fd();
    let mut subs: HashMap<u32, Vec<libc::sockaddr_in>> = HashMap::new();
    let mut bufs = vec![0u8; batch * MAX_DATAGRAM];
    // SAFETY (all zeroed below): all-zero is valid for these plain C structs.
    let zero_in: libc::sockaddr_in = unsafe { MaybeUninit::zeroed().assume_init() };
    let zero_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut rx_addrs = vec![zero_in; batch];
    let mut rx_iovs = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        batch
    ];
    let mut rx_hdrs = vec![zero_hdr; batch];
    let mut tx_addrs = vec![zero_in; SEND_BATCH];
    let mut tx_iovs = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        SEND_BATCH
    ];
    let mut tx_hdrs = vec![zero_hdr; SEND_BATCH];
    let ok = *b"SYOK";
    // Every access to the buffers below goes through this pointer (the kernel writes through it too).
    let bufs_ptr = bufs.as_mut_ptr();
    loop {
        for i in 0..batch {
            // SAFETY: i * MAX_DATAGRAM is inside `bufs` (batch * MAX_DATAGRAM bytes).
            rx_iovs[i] = libc::iovec {
                iov_base: unsafe { bufs_ptr.add(i * MAX_DATAGRAM) }.cast(),
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut rx_hdrs[i].msg_hdr;
            h.msg_name = (&mut rx_addrs[i] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut rx_iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: the headers point at buffers and addresses that live across the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                rx_hdrs.as_mut_ptr(),
                batch as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock {
                continue;
            }
            eprintln!("recvmmsg: {e}");
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let mut q = 0;
        let flush = |q: &mut usize,
                     tx_hdrs: &mut [libc::mmsghdr],
                     tx_iovs: &mut [libc::iovec],
                     tx_addrs: &mut [libc::sockaddr_in]| {
            let mut done = 0;
            while done < *q {
                for i in done..*q {
                    let h = &mut tx_hdrs[i].msg_hdr;
                    h.msg_name = (&mut tx_addrs[i] as *mut libc::sockaddr_in).cast();
                    h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                    h.msg_iov = &mut tx_iovs[i];
                    h.msg_iovlen = 1;
                }
                // SAFETY: tx_hdrs[done..q] point at iovecs into `bufs` and at addresses in tx_addrs.
                let r = unsafe {
                    libc::sendmmsg(fd, tx_hdrs[done..].as_mut_ptr(), (*q - done) as u32, 0)
                };
                if r <= 0 {
                    done += 1; // skip the datagram that failed
                } else {
                    forwarded.fetch_add(r as u64, Ordering::Relaxed);
                    done += r as usize;
                }
            }
            *q = 0;
        };
        for i in 0..n as usize {
            let len = rx_hdrs[i].msg_len as usize;
            let base = i * MAX_DATAGRAM;
            // SAFETY: datagram i occupies bufs[base..base + len], len <= MAX_DATAGRAM.
            let pkt =
                unsafe { std::slice::from_raw_parts(bufs_ptr.add(base), len.min(MAX_DATAGRAM)) };
            if pkt.starts_with(b"SYSUB") {
                let from = rx_addrs[i];
                for c in pkt[5..].chunks_exact(4) {
                    let ssrc = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                    let list = subs.entry(ssrc).or_default();
                    if !list
                        .iter()
                        .any(|a| from_sockaddr(a) == from_sockaddr(&from))
                    {
                        list.push(from);
                    }
                }
                // Reply in place of the registration (SYOK overwrites its first bytes).
                // SAFETY: the registration is at least 5 bytes long; we overwrite its first 4.
                unsafe { std::ptr::copy_nonoverlapping(ok.as_ptr(), bufs_ptr.add(base), 4) };
                if q == SEND_BATCH {
                    flush(&mut q, &mut tx_hdrs, &mut tx_iovs, &mut tx_addrs);
                }
                tx_addrs[q] = from;
                tx_iovs[q] = libc::iovec {
                    iov_base: unsafe { bufs_ptr.add(base) }.cast(),
                    iov_len: 4,
                };
                q += 1;
                continue;
            }
            if len < 12 || pkt[0] >> 6 != 2 {
                continue;
            }
            let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
            let Some(list) = subs.get(&ssrc) else {
                continue;
            };
            for a in list {
                if q == SEND_BATCH {
                    flush(&mut q, &mut tx_hdrs, &mut tx_iovs, &mut tx_addrs);
                }
                tx_addrs[q] = *a;
                // SAFETY: as above; the buffer stays untouched until the flush after this batch.
                tx_iovs[q] = libc::iovec {
                    iov_base: unsafe { bufs_ptr.add(base) }.cast(),
                    iov_len: len,
                };
                q += 1;
            }
        }
        if q > 0 {
            flush(&mut q, &mut tx_hdrs, &mut tx_iovs, &mut tx_addrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        let a: SocketAddrV4 = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(from_sockaddr(&to_sockaddr(a)), a);
    }
}
