//! Can this process use io_uring the way the [`Uring`](crate::IoKind::Uring) backend needs?

use io_uring::{opcode, register::Probe, IoUring};

use crate::sock::describe;

/// Checks that io_uring can be used here: `io_uring_setup` succeeds (it fails with `EPERM` under
/// many seccomp profiles and container runtimes, or with `kernel.io_uring_disabled`), the ring
/// supports the extended wait argument (timeouts), and the kernel's opcode probe reports
/// `RECVMSG`, `SENDMSG`, `READ` and `ASYNC_CANCEL`, plus `SEND_ZC`, whose presence (Linux 6.0)
/// implies multishot `RECVMSG` with provided buffer rings. `Err` carries a one-line reason such as
/// `"io_uring_setup: EPERM (blocked by seccomp, ...)"`, suitable for the engine's log.
pub fn probe_uring() -> Result<(), String> {
    // On a thread of its own (see `off_thread`): tearing the probe ring down must not interrupt
    // the caller's blocking calls later with EINTR.
    crate::uring::off_thread(|| Ok(probe_here())).unwrap_or_else(|e| Err(describe("io_uring probe thread", &e)))
}

fn probe_here() -> Result<(), String> {
    let ring: IoUring = IoUring::new(8).map_err(|e| describe("io_uring_setup", &e))?;
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks IORING_FEAT_EXT_ARG (kernel older than 5.11)".to_string());
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| describe("io_uring_register(PROBE)", &e))?;
    let needed = [
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::Read::CODE, "READ"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::SendZc::CODE, "SEND_ZC (kernel 6.0+, needed for multishot RECVMSG)"),
    ];
    for (code, name) in needed {
        if !probe.is_supported(code) {
            return Err(format!("io_uring opcode {name} not supported by this kernel"));
        }
    }
    Ok(())
}
