//! Connecting one transport as a browser does: an ICE connectivity check with USE-CANDIDATE to the
//! server's (ICE-lite) candidate, then a DTLS-SRTP handshake over the same UDP socket, then SRTP
//! contexts from the exported keys. The same code serves every signaling adapter.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rand::Rng;
use switchyard_dtls::{Identity, Role, Session};
use switchyard_sdp::{RemoteTransport, SessionDescription, Setup};
use switchyard_srtp::{split_keying_material, Context, Profile};
use switchyard_stun::{write_binding_success, BindingRequest, Class, Message, Method};
use tokio::time::Instant;

use crate::media::{Endpoint, Keepalive, Role as MediaRole, RoomShared};
use crate::run::Shared;

/// Our side of a transport before it connects: a bound socket and ICE credentials.
pub struct LocalSide {
    /// The socket (blocking mode is changed as needed).
    pub socket: std::net::UdpSocket,
    /// Our ICE ufrag.
    pub ufrag: String,
    /// Our ICE password.
    pub pwd: String,
}

/// A connected transport, ready for the media plane.
pub struct Connected {
    /// The socket.
    pub socket: std::net::UdpSocket,
    /// The server's address.
    pub remote: SocketAddr,
    /// SRTP for what we send.
    pub tx: Context,
    /// SRTP for what we receive.
    pub rx: Context,
    /// The DTLS association (kept alive).
    pub dtls: Arc<Session>,
    /// Consent checks to keep sending.
    pub keepalive: Keepalive,
}

/// A random string of ICE characters.
pub fn ice_token(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Binds a UDP socket on `ip` (port chosen by the kernel) with generous buffers.
pub fn bind_socket(ip: IpAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if ip.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(1 << 20);
    let _ = s.set_send_buffer_size(1 << 20);
    s.bind(&SocketAddr::new(ip, 0).into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl LocalSide {
    /// A fresh socket on `ip` with random ICE credentials.
    pub fn new(ip: IpAddr) -> anyhow::Result<LocalSide> {
        Ok(LocalSide {
            socket: bind_socket(ip).context("binding a UDP socket")?,
            ufrag: ice_token(8),
            pwd: ice_token(24),
        })
    }

    /// The socket's address (our host candidate).
    pub fn addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

/// The server's candidate: the first UDP `a=candidate` with an IP address on an m-line in use
/// that `bind` can reach. A load generator bound to loopback only ever sends to loopback addresses:
/// a server that offers only other addresses is refused rather than sent traffic.
pub fn remote_candidate(sdp: &SessionDescription, bind: IpAddr) -> Option<SocketAddr> {
    sdp.media
        .iter()
        .filter(|m| !m.is_rejected())
        .flat_map(|m| m.candidates.iter())
        .filter(|c| c.transport.eq_ignore_ascii_case("udp") && c.component == 1)
        .filter_map(|c| c.socket_addr())
        .find(|a| a.is_ipv4() == bind.is_ipv4() && (!bind.is_loopback() || a.ip().is_loopback()))
}

/// Answers a connectivity check the server sends us (full ICE agents such as Janus's libnice
/// check the pair back before they nominate it). Returns true if `d` was a Binding request.
pub fn answer_check(d: &[u8], from: SocketAddr, local_pwd: &str, out: &mut [u8]) -> Option<usize> {
    let m = Message::parse(d).ok()?;
    if m.class() != Class::Request || m.method() != Method::BINDING {
        return None;
    }
    if !m.verify_integrity(local_pwd.as_bytes()) {
        return None;
    }
    write_binding_success(out, &m, from, local_pwd.as_bytes()).ok()
}

/// Runs ICE then DTLS on `local.socket` towards `remote` and derives the SRTP contexts.
pub async fn connect(
    local: LocalSide,
    remote: SocketAddr,
    params: &RemoteTransport,
    identity: &Identity,
    timeout: Duration,
) -> anyhow::Result<Connected> {
    let deadline = Instant::now() + timeout;
    let std_sock = local.socket.try_clone()?;
    std_sock.set_nonblocking(true)?;
    let sock = tokio::net::UdpSocket::from_std(std_sock.try_clone()?)?;
    let username = format!("{}:{}", params.ice_ufrag, local.ufrag);
    let password = params.ice_pwd.clone();

    // ICE: a check with USE-CANDIDATE as the controlling agent, retransmitted until answered.
    let tie_breaker: u64 = rand::random();
    let mut buf = vec![0u8; 2048];
    let mut early_dtls: Vec<Vec<u8>> = Vec::new();
    // Regular nomination, as browsers do: checks without USE-CANDIDATE until one succeeds, then
    // one with it (Janus's libnice in ICE-lite mode only nominates a pair that already succeeded).
    let mut succeeded = false;
    'ice: loop {
        if Instant::now() >= deadline {
            bail!("ICE: no answer from {remote}");
        }
        let tid: [u8; 12] = rand::random();
        let req = BindingRequest {
            transaction_id: tid,
            username: username.as_bytes(),
            password: password.as_bytes(),
            priority: 0x6e00_1eff,
            use_candidate: succeeded,
            controlling: Some(tie_breaker),
            controlled: None,
        };
        let n = req
            .write(&mut buf)
            .map_err(|e| anyhow!("writing the ICE check: {e}"))?;
        sock.send_to(&buf[..n], remote)
            .await
            .context("sending the ICE check")?;
        let retry = Instant::now() + Duration::from_millis(300);
        loop {
            let r = tokio::time::timeout_at(retry.min(deadline), sock.recv_from(&mut buf)).await;
            let Ok(r) = r else { continue 'ice };
            let (n, from) = r.context("receiving")?;
            if from != remote {
                continue;
            }
            let d = &buf[..n];
            match d.first() {
                Some(0..=3) => {
                    let mut reply = [0u8; 128];
                    if let Some(n) = answer_check(d, from, &local.pwd, &mut reply) {
                        let _ = sock.send_to(&reply[..n], from).await;
                        continue;
                    }
                    let m = match Message::parse(d) {
                        Ok(m) => m,
                        Err(e) => {
                            if std::env::var_os("LOADGEN_DEBUG").is_some() {
                                eprintln!("ICE: unparsable STUN from {from}: {e:?} {:02x?}", d);
                            }
                            continue;
                        }
                    };
                    if m.transaction_id() != &tid {
                        continue;
                    }
                    match m.class() {
                        Class::SuccessResponse if succeeded => break 'ice,
                        Class::SuccessResponse => {
                            succeeded = true;
                            continue 'ice;
                        }
                        Class::ErrorResponse => bail!(
                            "ICE: {remote} answered the check with an error {:?}",
                            m.error_code().map(|e| e.code)
                        ),
                        _ => continue,
                    }
                }
                // The server may start DTLS (as client) as soon as it saw our check.
                Some(20..=63) => early_dtls.push(d.to_vec()),
                _ => {}
            }
        }
    }

    // DTLS: we are the client unless the server insists on being it (Janus answers a=setup:active).
    let role = match params.setup {
        Setup::Active => Role::Server,
        _ => Role::Client,
    };
    let send_sock = std_sock.try_clone()?;
    let session = Arc::new(Session::start(
        role,
        identity,
        &params.fingerprint,
        move |d| {
            let _ = send_sock.send_to(&d, remote);
        },
    ));
    for d in early_dtls {
        session.feed(d);
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let waiter = Arc::clone(&session);
    let export = {
        let established = waiter.established(left);
        tokio::pin!(established);
        loop {
            tokio::select! {
                r = &mut established => break r.map_err(|e| anyhow!("DTLS with {remote}: {e}"))?,
                r = sock.recv_from(&mut buf) => {
                    let (n, from) = r.context("receiving")?;
                    if from != remote {
                        continue;
                    }
                    match buf.get(..n).and_then(|d| d.first()) {
                        Some(20..=63) => session.feed(buf[..n].to_vec()),
                        Some(0..=3) => {
                            let mut reply = [0u8; 128];
                            if let Some(k) = answer_check(&buf[..n], from, &local.pwd, &mut reply) {
                                let _ = sock.send_to(&reply[..k], from).await;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    };
    let profile = Profile::from_rfc5764_id(export.profile_id)
        .ok_or_else(|| anyhow!("unsupported SRTP profile {:#06x}", export.profile_id))?;
    let (client, server) = split_keying_material(profile, &export.keying_material)
        .map_err(|e| anyhow!("SRTP keys: {e}"))?;
    let (mine, theirs) = if role == Role::Client {
        (client, server)
    } else {
        (server, client)
    };
    let tx = Context::new(profile, &mine.key, &mine.salt).map_err(|e| anyhow!("SRTP: {e}"))?;
    let rx = Context::new(profile, &theirs.key, &theirs.salt).map_err(|e| anyhow!("SRTP: {e}"))?;
    drop(sock);
    Ok(Connected {
        socket: std_sock,
        remote,
        tx,
        rx,
        dtls: session,
        keepalive: Keepalive::Ice {
            username,
            password,
            local_pwd: local.pwd,
        },
    })
}

/// Connects `local` to the server that `desc` (its answer or offer) names, as [`connect`] does, and
/// hands the transport to media thread `thread` as `role`: the step every signaling adapter ends
/// with. `what` names `desc` in errors; a missing candidate is reported as "`what` has no `missing`".
#[allow(clippy::too_many_arguments)]
pub async fn connect_endpoint(
    sh: &Shared,
    local: LocalSide,
    desc: &SessionDescription,
    what: &str,
    missing: &str,
    role: MediaRole,
    room: Arc<RoomShared>,
    thread: usize,
    deadline: Instant,
) -> anyhow::Result<()> {
    let params = switchyard_sdp::remote_transport(desc).map_err(|e| anyhow!("{what}: {e}"))?;
    let cand = remote_candidate(desc, sh.bind).ok_or_else(|| anyhow!("{what} has no {missing}"))?;
    let c = connect(
        local,
        cand,
        &params,
        &sh.identity,
        deadline.saturating_duration_since(Instant::now()),
    )
    .await?;
    let ep = Endpoint {
        socket: c.socket,
        remote: c.remote,
        tx: Some(c.tx),
        rx: Some(c.rx),
        role,
        room,
        keepalive: c.keepalive,
        dtls: Some(c.dtls),
    };
    if !sh.media[thread].add(ep) {
        bail!("media thread {thread} is gone");
    }
    Ok(())
}
