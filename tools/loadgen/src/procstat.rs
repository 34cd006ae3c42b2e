//! CPU time and memory of processes (`/proc/<pid>/stat`, `/proc/<pid>/status`) and the kernel's
//! UDP drop counters (`/proc/net/snmp`).

use std::time::Instant;

/// CPU seconds (user + system, all threads) a process has used, or None if it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the full line, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Resident memory in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The kernel's UDP counter `name` (`RcvbufErrors`, `SndbufErrors`, `InErrors`, ...).
pub fn udp_counter(name: &str) -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// CPU use of one process over a window.
#[derive(Debug, Clone)]
pub struct CpuWindow {
    pid: u32,
    start_cpu: Option<f64>,
    start: Instant,
}

impl CpuWindow {
    /// Starts measuring `pid` now.
    pub fn start(pid: u32) -> CpuWindow {
        CpuWindow {
            pid,
            start_cpu: cpu_seconds(pid),
            start: Instant::now(),
        }
    }

    /// Cores used on average since the start (1.0 = one core busy all the time).
    pub fn cores(&self) -> Option<f64> {
        let now = cpu_seconds(self.pid)?;
        let wall = self.start.elapsed().as_secs_f64();
        let start = self.start_cpu?;
        (wall > 0.0).then(|| (now - start) / wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(rss_mib(me).unwrap_or(0.0) > 0.1);
        let w = CpuWindow::start(me);
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 200 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(w.cores().unwrap_or(0.0) > 0.2, "{x}");
        assert!(udp_counter("RcvbufErrors").is_some());
    }
}
