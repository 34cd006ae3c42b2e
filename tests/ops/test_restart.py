"""Restarting one daemon under a live call (issue 6: hitless restarts).

The engine and the control daemon run as separate processes, the engine with a fixed --port-base and a
temporary --socket, the way the units run them. An aiortc publisher sends video through the SFU to an
aiortc subscriber (both join without "mesh", so the room is an SFU room). Then:

1. `kill -9` the control daemon: the engine keeps forwarding the call on its own. Loss over the outage
   is measured from the peers' own RTP counters (subscriber packetsReceived against publisher
   packetsSent) and must stay under 0.1 %. A new control daemon starts and the established call
   still flows.
2. `kill -9` the engine and start it again: the control daemon reconnects, re-installs the transports,
   SRTP keys, bound addresses and subscriptions, and asks for a keyframe. The subscriber must receive
   packets again within 2 s of the new engine's start, and decode frames, with no new DTLS handshake
   (the control daemon's `switchyard_dtls_handshakes_total` and its "media connected" log lines stay
   the same, and both peers' DTLS transports stay "connected"), after an outage of 2 s whose lost
   packets the subscriber NACKs and the publisher resends. The publisher's RTP sequence number
   starts just below 65536, so it wraps (rollover counter 1, in both directions) before the engine is
   killed: packets resume only because the control daemon seeds the new engine's SRTP contexts with
   the packet indexes it polled from the old one.

Binaries: $SWITCHYARD_ENGINE_BIN / $SWITCHYARD_CONTROL_BIN, else target/debug (built on first use).
"""

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "interop"))

aiortc = pytest.importorskip("aiortc")
from aiortc import RTCPeerConnection  # noqa: E402

from test_aiortc import publisher, subscriber  # noqa: E402

WORKERS = 2


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_base(n: int) -> int:
    for _ in range(100):
        base = random.randrange(20000, 40000)
        socks = []
        try:
            for i in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free UDP port range")


class Daemons:
    """The engine and the control daemon as two processes; either can be killed and started again."""

    def __init__(self, bins, tmp: Path):
        self.bins = bins
        self.tmp = tmp
        self.socket = tmp / "engine.sock"
        self.port_base = free_udp_base(WORKERS)
        self.http = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.http}"
        self.ws_url = f"ws://127.0.0.1:{self.http}/ws"
        self.engine = None
        self.control = None
        self.control_logs = []
        self.env = dict(os.environ, RUST_LOG="info")
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("WATCHDOG_USEC", None)

    def start_engine(self):
        log = open(self.tmp / f"engine-{time.monotonic_ns()}.log", "w")
        self.engine = subprocess.Popen(
            [
                self.bins["engine"], "--socket", str(self.socket), "--port-base", str(self.port_base),
                "--workers", str(WORKERS), "--no-pin", "--no-turn", "--bind", "127.0.0.1",
            ],
            stdout=log, stderr=subprocess.STDOUT, env=self.env,
        )
        started = time.monotonic()
        deadline = started + 15
        while time.monotonic() < deadline:
            if self.socket.exists():
                try:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(str(self.socket))
                    return started
                except OSError:
                    pass
            assert self.engine.poll() is None, "the engine exited"
            time.sleep(0.01)
        raise AssertionError("the engine did not listen")

    def start_control(self):
        path = self.tmp / f"control-{len(self.control_logs)}.log"
        self.control_logs.append(path)
        self.control = subprocess.Popen(
            [
                self.bins["control"], "--engine-socket", str(self.socket), "--http", f"127.0.0.1:{self.http}",
                "--dtls-timeout-secs", "10",
            ],
            stdout=subprocess.DEVNULL, stderr=open(path, "w"), env=self.env,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert self.control.poll() is None, "the control daemon exited: " + path.read_text()
            time.sleep(0.05)
        raise AssertionError("the control daemon did not become ready")

    def kill(self, proc):
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def log(self) -> str:
        return self.control_logs[-1].read_text()

    def engine_counters(self) -> dict:
        """The engine's non-zero counters (summed over workers), for failure messages."""
        try:
            with urllib.request.urlopen(self.url + "/api/stats", timeout=5) as r:
                totals = json.loads(r.read().decode()).get("totals", {})
            return {k: v for k, v in totals.items() if v}
        except (OSError, ValueError) as e:
            return {"error": str(e)}

    def dtls_handshakes(self) -> int:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        m = re.search(r'^switchyard_dtls_handshakes_total\{result="ok"\} (\d+)', text, re.M)
        return int(m.group(1)) if m else -1

    def stop(self):
        for p in (self.control, self.engine):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()


@pytest.fixture
def daemons(bins):
    with tempfile.TemporaryDirectory(prefix="sy-rs-") as d:
        ds = Daemons(bins, Path(d))
        try:
            yield ds
        finally:
            ds.stop()


async def rtp_counts(pub_pc, sub_pc):
    """(packets the publisher sent, packets the subscriber received), video only."""
    sent = sum(s.packetsSent for s in (await pub_pc.getStats()).values() if s.type == "outbound-rtp")
    recv = sum(s.packetsReceived for s in (await sub_pc.getStats()).values() if s.type == "inbound-rtp")
    return sent, recv


async def rtp_lost(sub_pc):
    """Video packets the subscriber has lost so far, from its sequence numbers."""
    return sum(s.packetsLost for s in (await sub_pc.getStats()).values() if s.type == "inbound-rtp")


def dtls_states(*pcs):
    out = []
    for pc in pcs:
        for t in pc.getTransceivers():
            tr = (t.sender.transport or t.receiver.transport)
            if tr is not None:
                out.append(tr.state)
    return out


async def wait_for(cond, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(step)
    return False


def test_a_call_survives_a_control_restart_and_an_engine_restart(daemons):
    d = daemons
    d.start_engine()
    d.start_control()

    async def run():
        pub_pc, sub_pc = RTCPeerConnection(), RTCPeerConnection()
        frames = []
        pub_ws = await publisher(d.ws_url, "restarts", pub_pc)
        sub_ws, _ = await subscriber(d.ws_url, "restarts", sub_pc, frames)
        assert await wait_for(lambda: asyncio.sleep(0, len(frames) >= 30), 30, 0.1), f"only {len(frames)} frames"
        handshakes = d.dtls_handshakes()
        connected = d.log().count("media connected")
        assert handshakes == 2 or handshakes == -1, handshakes
        assert connected == 2, d.log()

        # 1. The control daemon dies: the engine carries the call alone.
        before = await rtp_counts(pub_pc, sub_pc)
        lost_before = await rtp_lost(sub_pc)
        frames_before = len(frames)
        d.kill(d.control)
        t_kill = time.monotonic()
        await asyncio.sleep(4)
        during = await rtp_counts(pub_pc, sub_pc)
        lost = await rtp_lost(sub_pc) - lost_before
        sent, recv = during[0] - before[0], during[1] - before[1]
        # Loss from the subscriber's sequence numbers (RFC 3550 expected - received): exact, unlike the
        # difference of two counters read a moment apart, which miscounts the packets in flight.
        loss = lost / (recv + lost) if recv + lost else 1.0
        print(
            f"\ncontrol down {time.monotonic() - t_kill:.1f} s: publisher sent {sent} RTP packets, subscriber "
            f"received {recv}, lost {lost} by sequence number (loss {loss * 100:.3f} %), "
            f"decoded {len(frames) - frames_before} frames"
        )
        assert sent > 50, sent
        # Every packet sent reached the subscriber, up to the few in flight at either reading.
        assert recv >= sent - 3, (sent, recv)
        assert loss < 0.001, (lost, recv)
        for ws in (pub_ws, sub_ws):
            await ws.close()

        # A new control daemon starts next to the engine that still carries the old call.
        d.start_control()
        assert "leaving them alone" in d.log(), d.log()
        a = await rtp_counts(pub_pc, sub_pc)
        lost_a = await rtp_lost(sub_pc)
        await asyncio.sleep(1)
        b = await rtp_counts(pub_pc, sub_pc)
        lost = await rtp_lost(sub_pc) - lost_a
        print(f"after the control restart: {b[1] - a[1]} packets received in 1 s (sent {b[0] - a[0]}), {lost} lost")
        assert b[0] - a[0] > 0 and b[1] - a[1] >= b[0] - a[0] - 3, (a, b)
        assert lost == 0, lost
        # The new daemon is usable alongside: new participants get fresh transport ids.
        pc2, pc3 = RTCPeerConnection(), RTCPeerConnection()
        frames2 = []
        pub2_ws = await publisher(d.ws_url, "restarts-2", pc2)
        sub2_ws, _ = await subscriber(d.ws_url, "restarts-2", pc3, frames2)
        assert await wait_for(lambda: asyncio.sleep(0, len(frames2) >= 10), 30, 0.1), f"only {len(frames2)} frames"
        await pc2.close()
        await pc3.close()
        for ws in (pub2_ws, sub2_ws):
            await ws.close()
        await asyncio.sleep(0.5)

        # 2. The engine dies and comes back: the control daemon re-installs the call it knows. The old
        # call's control connection is gone, so set up the measured call again on this daemon.
        await pub_pc.close()
        await sub_pc.close()
        pub_pc, sub_pc = RTCPeerConnection(), RTCPeerConnection()
        frames = []
        # Start the video's sequence numbers 40 below the wrap, so that the stream has wrapped (ROC 1)
        # well before the engine is killed.
        orig_seq = aiortc.rtcrtpsender.random_sequence_number
        aiortc.rtcrtpsender.random_sequence_number = lambda: 65536 - 40
        try:
            pub_ws = await publisher(d.ws_url, "restarts-3", pub_pc)
            sub_ws, _ = await subscriber(d.ws_url, "restarts-3", sub_pc, frames)
            assert await wait_for(lambda: asyncio.sleep(0, len(frames) >= 30), 30, 0.1), f"only {len(frames)} frames"
        finally:
            aiortc.rtcrtpsender.random_sequence_number = orig_seq
        # Past the wrap (40 packets are under a second of video) and past a 2 s SRTP index poll.
        await asyncio.sleep(2.5)
        wrapped = [
            s.packetsSent for s in (await pub_pc.getStats()).values() if s.type == "outbound-rtp"
        ]
        assert wrapped and all(n > 40 for n in wrapped), wrapped
        handshakes = d.dtls_handshakes()
        connected = d.log().count("media connected")
        states = dtls_states(pub_pc, sub_pc)

        d.kill(d.engine)
        # Down for 2 s: some 60 video packets are lost, and aiortc's receiver shows no frame until
        # every one of them is resent (the new engine passes the subscriber's NACKs to the publisher).
        await asyncio.sleep(2)
        recv_down = (await rtp_counts(pub_pc, sub_pc))[1]
        t_start = d.start_engine()
        got_packets = await wait_for(lambda: _more(pub_pc, sub_pc, recv_down), 10)
        t_packets = time.monotonic() - t_start
        n = len(frames)
        got_frames = await wait_for(lambda: asyncio.sleep(0, len(frames) > n), 10)
        t_frames = time.monotonic() - t_start
        print(
            f"engine restart: packets again {t_packets * 1000:.0f} ms and a decoded frame {t_frames * 1000:.0f} ms "
            f"after the new engine started"
        )
        assert got_packets and t_packets < 2.0, t_packets
        assert got_frames and t_frames < 2.0, (t_frames, d.engine_counters(), d.log()[-3000:])
        # Media keeps flowing, without a new DTLS handshake.
        n = len(frames)
        await asyncio.sleep(1)
        assert len(frames) - n >= 10, len(frames) - n
        assert "state re-installed" in d.log(), d.log()
        assert d.log().count("media connected") == connected, d.log()
        after = d.dtls_handshakes()
        print(f"DTLS handshakes before/after the engine restart: {handshakes}/{after}; peers' DTLS states {dtls_states(pub_pc, sub_pc)}")
        assert after == handshakes
        assert dtls_states(pub_pc, sub_pc) == states and all(s == "connected" for s in states), states

        for ws in (pub_ws, sub_ws):
            await ws.close()
        await pub_pc.close()
        await sub_pc.close()

    asyncio.run(run())


async def _more(pub_pc, sub_pc, base):
    return (await rtp_counts(pub_pc, sub_pc))[1] > base
