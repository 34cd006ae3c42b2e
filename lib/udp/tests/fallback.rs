//! `UdpIo::bind(addr, None, ..)` falls back to mmsg, with a reason, where io_uring is blocked.
//!
//! The parent test re-runs this test binary with an environment variable set; the child installs
//! a seccomp filter that makes `io_uring_setup` fail with `EPERM` (as Docker's default profile
//! does) for its own thread only, then checks the fallback.

use std::net::SocketAddr;
use std::process::Command;

use switchyard_udp::{probe_uring, Config, IoKind, UdpIo};

const CHILD_ENV: &str = "SWITCHYARD_UDP_SECCOMP_CHILD";
const CHILD_OK: &str = "SECCOMP-CHILD-OK";

fn block_io_uring_setup() -> std::io::Result<()> {
    let nr = libc::SYS_io_uring_setup as u32;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let filter = [
        // A = seccomp_data.nr (offset 0)
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr, 0, 1),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `prog` points at a live filter array for the duration of the
    // call (the kernel copies it). The filter only affects this thread of this child process.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn child_with_io_uring_blocked() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return; // only meaningful inside the child started below
    }
    block_io_uring_setup().expect("install seccomp filter");
    let reason = probe_uring().expect_err("io_uring must be blocked now");
    assert!(reason.contains("EPERM"), "reason: {reason}");
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let (io, fallback) = UdpIo::bind(addr, None, &Config::default()).expect("bind");
    assert_eq!(io.kind(), IoKind::Mmsg);
    let fallback = fallback.expect("a fallback reason");
    assert!(fallback.starts_with("io_uring_setup: EPERM"), "reason: {fallback}");
    let err = UdpIo::bind(addr, Some(IoKind::Uring), &Config::default()).expect_err("forced io_uring must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported);
    println!("{CHILD_OK}: io_uring unavailable ({fallback}): using mmsg");
}

#[test]
fn bind_none_falls_back_to_mmsg_when_io_uring_is_blocked() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args(["--exact", "child_with_io_uring_blocked", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("install seccomp filter") {
        eprintln!("SKIP fallback test: cannot install a seccomp filter here:\n{stderr}");
        return;
    }
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(CHILD_OK), "child did not run:\n{stdout}\n{stderr}");
    eprintln!("{}", stdout.lines().find(|l| l.contains(CHILD_OK)).unwrap_or_default());
}
