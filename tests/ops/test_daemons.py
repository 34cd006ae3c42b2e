"""The daemons as their systemd units run them: `--config FILE`, `NOTIFY_SOCKET` and `WATCHDOG_USEC` set.

A test here plays systemd's part: it binds the notification socket, starts the daemon the way the unit
does, and reads what the daemon sends (READY=1, WATCHDOG=1, STOPPING=1). It also checks the health
endpoints, a clean exit on SIGTERM, and that a malformed configuration file stops each daemon at
start-up with a message naming the key.

Binaries: $SWITCHYARD_ENGINE_BIN / $SWITCHYARD_CONTROL_BIN, else target/debug (built on first use).
"""

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "systemd" / "switchyard.toml"


@pytest.fixture
def tmp():
    # Short paths: a Unix socket path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sy-ops-") as d:
        yield Path(d)


class NotifySocket:
    """systemd's end of sd_notify: a datagram socket, at a path or an abstract name ("@...")."""

    def __init__(self, path: Path, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"switchyard-ops-test-{os.getpid()}-{path.name}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.messages = []

    def expect(self, key: str, timeout: float = 20.0) -> dict:
        """Waits for a notification carrying `key` (e.g. "READY=1") and returns it as a dict."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            self.messages.append(fields)
            k, v = key.split("=", 1)
            if fields.get(k) == v:
                return fields
        raise AssertionError(f"no {key} within {timeout}s; got {self.messages}")

    def close(self):
        self.sock.close()


def start(binary, args, notify=None, watchdog_usec=None):
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    env["RUST_LOG"] = "warn"
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify.address
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return subprocess.Popen(
        [binary, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def stop(proc, timeout=10.0):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, text: str) -> Path:
    path = tmp / "switchyard.toml"
    path.write_text(text)
    return path


def engine_config(tmp: Path, turn_port: int = 0) -> str:
    """Two workers on loopback; the TURN server on `turn_port`, or off."""
    if turn_port:
        turn_section = f'[turn]\nport = {turn_port}\nsecret = "ops-test"\n'
    else:
        turn_section = "[turn]\nenabled = false\n"
    return (
        '[engine]\nworkers = 2\nbind = "127.0.0.1"\nport_base = 0\npin = false\n'
        f'socket = "{tmp}/engine.sock"\n{turn_section}'
        f'[control]\nhttp = "127.0.0.1:0"\nengine_socket = "{tmp}/engine.sock"\n'
        '[modes]\np2p_max = 4\n'
    )


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_engine_notifies_ready_then_feeds_the_watchdog_and_drains_on_sigterm(bins, tmp):
    notify = NotifySocket(tmp / "notify")
    turn_port = free_udp_port()
    config = write_config(tmp, engine_config(tmp, turn_port))
    engine = start(bins["engine"], ["--config", str(config)], notify, watchdog_usec=400_000)
    try:
        ready = notify.expect("READY=1")
        assert "forwarding on 2 workers" in ready["STATUS"], ready
        assert (tmp / "engine.sock").exists(), "READY=1 only once the control socket listens"
        assert oct((tmp / "engine.sock").stat().st_mode & 0o777) == oct(0o660)
        with pytest.raises(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", turn_port))  # [turn] port reached the engine: its TURN server listens there
        # WatchdogSec=0.4s: a ping every 0.2 s.
        t0 = time.time()
        for _ in range(3):
            notify.expect("WATCHDOG=1", timeout=2)
        assert time.time() - t0 < 2
        engine.send_signal(signal.SIGTERM)
        notify.expect("STOPPING=1", timeout=5)
        assert engine.wait(timeout=10) == 0
        assert not (tmp / "engine.sock").exists(), "the engine removes its socket on SIGTERM"
    finally:
        stop(engine)
        notify.close()


def test_engine_command_line_beats_the_file(bins, tmp):
    notify = NotifySocket(tmp / "notify", abstract=True)
    config = write_config(tmp, engine_config(tmp))
    engine = start(bins["engine"], ["--config", str(config), "--workers", "1"], notify)
    try:
        assert "forwarding on 1 workers" in notify.expect("READY=1")["STATUS"]
        # No WATCHDOG_USEC: no pings.
        with pytest.raises(AssertionError):
            notify.expect("WATCHDOG=1", timeout=0.5)
    finally:
        assert stop(engine) == 0
        notify.close()


def test_control_notifies_ready_serves_health_and_exits_cleanly(bins, tmp):
    import websockets.sync.client

    config = write_config(tmp, engine_config(tmp))
    engine_notify = NotifySocket(tmp / "engine-notify")
    engine = start(bins["engine"], ["--config", str(config)], engine_notify)
    control_notify = NotifySocket(tmp / "control-notify", abstract=True)
    control = None
    try:
        engine_notify.expect("READY=1")
        control = start(bins["control"], ["--config", str(config)], control_notify, watchdog_usec=600_000)
        ready = control_notify.expect("READY=1")
        url = re.search(r"serving (http://\S+?)/?;", ready["STATUS"]).group(1)
        for _ in range(2):
            control_notify.expect("WATCHDOG=1", timeout=3)
        assert get(url + "/healthz") == (200, "ok\n")
        assert get(url + "/readyz") == (200, "ready\n")

        # The engine goes away: still healthy, no longer ready, and the watchdog is still fed
        # (restarting the control daemon would not bring the engine back).
        assert stop(engine) == 0
        status, body = get(url + "/readyz")
        assert status == 503, body
        assert get(url + "/healthz")[0] == 200
        control_notify.expect("WATCHDOG=1", timeout=3)

        # SIGTERM with a browser connected: stop accepting, exit 0 promptly.
        with websockets.sync.client.connect(url.replace("http://", "ws://") + "/ws"):
            t0 = time.time()
            control.send_signal(signal.SIGTERM)
            control_notify.expect("STOPPING=1", timeout=5)
            assert control.wait(timeout=10) == 0
            assert time.time() - t0 < 5
    finally:
        if control:
            stop(control)
        stop(engine)
        engine_notify.close()
        control_notify.close()


def test_the_example_config_starts_both_daemons_with_command_line_overrides(bins, tmp):
    """systemd/switchyard.toml as shipped, with only its paths and ports moved by flags."""
    sock = str(tmp / "engine.sock")
    engine_notify = NotifySocket(tmp / "engine-notify")
    control_notify = NotifySocket(tmp / "control-notify")
    engine = start(
        bins["engine"],
        ["--config", str(EXAMPLE_CONFIG), "--socket", sock, "--port-base", "0", "--workers", "1", "--no-pin",
         "--no-turn"],
        engine_notify,
    )
    control = None
    try:
        engine_notify.expect("READY=1")
        control = start(
            bins["control"],
            ["--config", str(EXAMPLE_CONFIG), "--engine-socket", sock, "--http", "127.0.0.1:0",
             "--identity", str(tmp / "identity.pem")],
            control_notify,
        )
        control_notify.expect("READY=1")
        assert (tmp / "identity.pem").exists()
        assert stop(control) == 0
        assert stop(engine) == 0
    finally:
        if control:
            stop(control)
        stop(engine)
        engine_notify.close()
        control_notify.close()


def test_every_documented_key_is_accepted(bins, tmp):
    """The example file with every commented-out key switched on: each is a real flag of its daemon."""
    lines = []
    for line in EXAMPLE_CONFIG.read_text().splitlines():
        m = re.match(r"# ((\[[a-z.]+\])|([a-z0-9_-]+ = .*))$", line)
        if m:
            line = m.group(1)
        lines.append(line)
    text = "\n".join(lines) + "\n"
    for key in ["workers", "io", "pin", "socket_buffer", "dtls_timeout_secs", "max_participants", "c2c_max",
                "p2p_max", "hysteresis", "sfu_only", "allowed_candidate_nets", "[modes.pinned]", "secret", "urls",
                "ttl_secs", "enabled", "port", "realm", "relay_ports", "max_allocations_per_user", "max_allocations"]:
        assert re.search(rf"^{re.escape(key)}", text, re.M), f"{key} is not in the example file"
    config = write_config(tmp, text)
    sock = str(tmp / "engine.sock")
    engine_notify = NotifySocket(tmp / "engine-notify")
    control_notify = NotifySocket(tmp / "control-notify")
    engine_args = ["--config", str(config), "--socket", sock, "--port-base", "0", "--turn-port", str(free_udp_port())]
    engine = start(bins["engine"], engine_args, engine_notify)
    control = None
    try:
        engine_notify.expect("READY=1")
        control = start(
            bins["control"],
            ["--config", str(config), "--engine-socket", sock, "--http", "127.0.0.1:0",
             "--identity", str(tmp / "identity.pem")],
            control_notify,
        )
        control_notify.expect("READY=1")
        assert stop(control) == 0
        assert stop(engine) == 0
    finally:
        if control:
            stop(control)
        stop(engine)
        engine_notify.close()
        control_notify.close()


MALFORMED = [
    # (daemon, file, text the error must contain)
    ("engine", '[engine]\nworkers = "many"\n', '[engine] workers: expected an integer 1..=1024, got "many"'),
    ("engine", "[engine]\nworkers = 0\n", "[engine] workers: expected an integer 1..=1024, got 0"),
    ("engine", "[engine]\nport_base = 70000\n", "[engine] port_base: expected an integer 0..=65535, got 70000"),
    ("engine", "[engine]\nwokers = 2\n", "[engine] wokers: unknown key"),
    ("engine", '[engine]\nio = "epoll"\n', '[engine] io: expected "uring" or "mmsg", got "epoll"'),
    ("engine", "[engin]\n", "[engin]: unknown section"),
    ("engine", "[engine\n", "not valid TOML"),
    ("control", '[control]\nhtp = "127.0.0.1:8080"\n', "[control] htp: unknown key"),
    ("control", "[control]\nhttp = 8080\n", "[control] http: expected an address and port"),
    ("control", "[control]\nmax_participants = -1\n", "[control] max_participants: expected an integer 1..=100000, got -1"),
    ("control", '[control]\ndtls_timeout_secs = "15s"\n', '[control] dtls_timeout_secs: expected an integer 1..=300, got "15s"'),
    ("control", '[modes]\npinned = { lobby = "mesh" }\n', '[modes] pinned: expected a table of room'),
    ("control", "[turn]\nttl_secs = 1\n", "[turn] ttl_secs: expected an integer 60..=2592000, got 1"),
]


@pytest.mark.parametrize("daemon,text,message", MALFORMED, ids=[f"{d}:{m.split(':')[0]}" for d, _, m in MALFORMED])
def test_a_malformed_config_stops_start_up_naming_the_key(bins, tmp, daemon, text, message):
    config = write_config(tmp, text)
    # The control daemon would fail later anyway for want of an engine: the config must fail first.
    args = ["--config", str(config), "--socket" if daemon == "engine" else "--engine-socket", str(tmp / "e.sock")]
    proc = start(bins[daemon], args)
    try:
        _, stderr = proc.communicate(timeout=20)
    finally:
        stop(proc)
    assert proc.returncode != 0
    assert message in stderr, stderr
    assert str(config) in stderr, "the message names the file"
    assert not (tmp / "e.sock").exists(), "nothing started"


def test_a_missing_config_file_stops_start_up(bins, tmp):
    for daemon in ("engine", "control"):
        proc = start(bins[daemon], ["--config", str(tmp / "nope.toml")])
        _, stderr = proc.communicate(timeout=20)
        assert proc.returncode != 0
        assert f"cannot read the configuration file {tmp}/nope.toml" in stderr, stderr
