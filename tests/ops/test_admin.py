"""The operator surface against a running all-in-one `switchyard`: `switchyardctl` (rooms, kick,
close, drain/undrain, stats) over the admin API, `/readyz` while draining, and `/metrics` during an
aiortc call (engine counters move, one SFU room, two DTLS handshakes).

Binaries: $SWITCHYARD_BIN / $SWITCHYARDCTL_BIN, else target/debug (built on first use).
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "interop"))

from server import Server  # noqa: E402

TIMEOUT = 20


@pytest.fixture(scope="module")
def bins():
    server = os.environ.get("SWITCHYARD_BIN")
    ctl = os.environ.get("SWITCHYARDCTL_BIN")
    if not (server and ctl):
        subprocess.run(["cargo", "build", "-q", "--bin", "switchyard", "--bin", "switchyardctl"], cwd=ROOT, check=True)
    return {
        "server": server or str(ROOT / "target" / "debug" / "switchyard"),
        "ctl": ctl or str(ROOT / "target" / "debug" / "switchyardctl"),
    }


class Node(Server):
    def __init__(self, bins):
        super().__init__(["--sfu-only", "--dtls-timeout-secs", "5"], binary=bins["server"])
        self.ctl_bin = bins["ctl"]

    def ctl(self, *args, ok=True):
        """Runs switchyardctl against this node; returns the completed process."""
        p = subprocess.run([self.ctl_bin, "--url", self.url, *args], capture_output=True, text=True, timeout=20)
        if ok:
            assert p.returncode == 0, f"switchyardctl {' '.join(args)}: {p.stderr}"
        return p

    async def actl(self, *args, ok=True):
        return await asyncio.to_thread(self.ctl, *args, ok=ok)

    def rooms(self):
        return json.loads(self.ctl("rooms", "--json").stdout)


@pytest.fixture(scope="module")
def node(bins):
    n = Node(bins)
    yield n
    n.stop()


async def recv_type(ws, kind, timeout=TIMEOUT, pred=lambda m: True):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind} message")
        msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        if msg["type"] == kind and pred(msg):
            return msg


async def join(url, room, name):
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"type": "join", "room": room, "name": name}))
    joined = await recv_type(ws, "joined")
    return ws, joined


def test_rooms_kick_and_close_through_switchyardctl(node):
    async def run():
        a, ja = await join(node.ws_url, "ops-room", "Ada")
        b, jb = await join(node.ws_url, "ops-room", "Grace")
        await recv_type(a, "participant-joined")
        pa, pb = ja["participant"], jb["participant"]

        table = (await node.actl("rooms")).stdout
        lines = table.splitlines()
        assert lines[0].split()[:4] == ["ROOM", "MODE", "ID", "NAME"], table
        rows = sorted(tuple(l.split()[:4]) for l in lines[1:])
        assert rows == sorted([("ops-room", "sfu", pa, "Ada"), ("ops-room", "sfu", pb, "Grace")]), table
        rooms = json.loads((await node.actl("rooms", "--json")).stdout)
        assert [(r["name"], r["mode"]) for r in rooms] == [("ops-room", "sfu")]
        assert sorted(p["name"] for p in rooms[0]["participants"]) == ["Ada", "Grace"]
        assert {"audio", "video", "screen", "tracks", "transports"} <= set(rooms[0]["participants"][0])

        # Kick Grace: she is told, Ada sees her leave, the room shows one.
        out = (await node.actl("kick", "ops-room", pb)).stdout
        assert f"kicked {pb}" in out
        err = await recv_type(b, "error")
        assert err["code"] == "kicked", err
        left = await recv_type(a, "participant-left")
        assert left["id"] == pb
        rooms = node.rooms()
        assert [p["id"] for p in rooms[0]["participants"]] == [pa]
        # Her connection lives on (she was removed as if she had left): chat needs a join again.
        await b.send(json.dumps({"type": "chat", "text": "hi"}))
        assert (await recv_type(b, "error"))["code"] == "out-of-order"

        # Kicking someone not there, closing a room that does not exist: clear errors, exit 1.
        p = await node.actl("kick", "ops-room", pb, ok=False)
        assert p.returncode == 1 and "404" in p.stderr and pb in p.stderr, p.stderr
        p = await node.actl("close", "no-such-room", ok=False)
        assert p.returncode == 1 and "no room no-such-room" in p.stderr, p.stderr

        # Close the room: Ada is told and removed; no rooms left.
        b2, _ = await join(node.ws_url, "ops-room", "Linus")
        out = (await node.actl("close", "ops-room")).stdout
        assert "2 participant(s) removed" in out, out
        for ws in (a, b2):
            assert (await recv_type(ws, "error"))["code"] == "room-closed"
        assert node.rooms() == []
        assert (await node.actl("rooms")).stdout == "no rooms\n"
        for ws in (a, b, b2):
            await ws.close()

    asyncio.run(run())


def test_drain_refuses_new_rooms_and_fails_readyz(node):
    async def run():
        assert node.get("/readyz")[0] == 200
        stay, _ = await join(node.ws_url, "stay", "Ada")
        out = (await node.actl("drain")).stdout
        assert out.startswith("draining"), out
        assert json.loads((await node.actl("drain", "--status", "--json")).stdout)["draining"] is True
        status, body = node.get("/readyz")
        assert (status, body.strip()) == (503, "draining")

        # A join that would create a room is refused; joining the existing room still works.
        new = await websockets.connect(node.ws_url)
        await new.send(json.dumps({"type": "join", "room": "fresh", "name": "late"}))
        err = await recv_type(new, "error")
        assert (err["code"], err.get("ref")) == ("draining", "join"), err
        other, joined = await join(node.ws_url, "stay", "Grace")
        assert joined["room"] == "stay"
        assert [r["name"] for r in node.rooms()] == ["stay"]
        metrics = node.get("/metrics")[1]
        assert "switchyard_draining 1" in metrics

        out = (await node.actl("undrain")).stdout
        assert out.startswith("not draining"), out
        assert node.get("/readyz")[0] == 200
        await new.send(json.dumps({"type": "join", "room": "fresh", "name": "late"}))
        assert (await recv_type(new, "joined"))["room"] == "fresh"
        for ws in (stay, other, new):
            await ws.close()
        for _ in range(50):
            if not node.rooms():
                break
            await asyncio.sleep(0.1)
        assert node.rooms() == []

    asyncio.run(run())


def parse_metrics(text):
    """{(name, frozenset(labels)): value}, and the set of names with HELP and TYPE lines."""
    samples, typed, helped = {}, {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            typed[name] = kind
        elif line.startswith("# HELP "):
            helped.add(line.split(" ", 3)[2])
        elif line and not line.startswith("#"):
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
            assert m, f"bad sample line {line!r}"
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            samples[(m.group(1), labels)] = float(m.group(3))
    return samples, typed, helped


def total(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


def test_metrics_move_during_a_call(node):
    from aiortc import RTCPeerConnection
    from test_aiortc import publisher, subscriber

    async def run():
        pub_pc, sub_pc = RTCPeerConnection(), RTCPeerConnection()
        frames = []
        pub_ws = await publisher(node.ws_url, "call", pub_pc)
        sub_ws, _ = await subscriber(node.ws_url, "call", sub_pc, frames)
        deadline = time.monotonic() + 30
        while len(frames) < 10 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(frames) >= 10, f"subscriber decoded only {len(frames)} frames"

        first, typed, helped = parse_metrics(node.get("/metrics")[1])
        await asyncio.sleep(1.0)
        status, text = node.get("/metrics")
        assert status == 200
        second, typed, helped = parse_metrics(text)

        for name in ["switchyard_engine_rx_packets_total", "switchyard_engine_rtp_forwarded_total"]:
            assert total(second, name) > total(first, name) > 0, name
        assert second[("switchyard_rooms", frozenset({("mode", "sfu")}))] == 1
        assert second[("switchyard_rooms", frozenset({("mode", "p2p")}))] == 0
        assert second[("switchyard_participants", frozenset())] == 2
        assert second[("switchyard_websocket_connections", frozenset())] >= 2
        assert second[("switchyard_dtls_handshakes_total", frozenset({("result", "ok")}))] >= 2
        assert ("switchyard_dtls_handshakes_total", frozenset({("result", "failed")})) in second
        assert total(second, "switchyard_engine_transports") >= 2
        assert second[("switchyard_engine_up", frozenset())] == 1
        # Conventions: every family has HELP and TYPE; counters end in _total.
        families = {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n
                    for (n, _) in second}
        for f in families:
            assert f in typed and f in helped, f"{f} lacks HELP/TYPE"
            if typed[f] == "counter":
                assert f.endswith("_total"), f

        # The CLI's stats: one print with both workers; live mode computes rates (two refreshes).
        once = (await node.actl("stats", "--once")).stdout
        assert re.search(r"^WORKER\s+TRANSPORTS\s+RX/S", once, re.M), once
        proc = await asyncio.create_subprocess_exec(node.ctl_bin, "--url", node.url, "stats", "--interval", "0.5",
                                                    stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(1.8)
        proc.terminate()
        out = (await proc.communicate())[0].decode()
        screens = [s for s in out.split("\x1b[2J\x1b[H") if s]
        assert len(screens) >= 2, out
        rows = [l.split() for l in screens[-1].splitlines() if re.match(r"^\d+\s", l)]
        assert len(rows) == 2 and sum(float(r[2]) for r in rows) > 0, screens[-1]

        for ws in (pub_ws, sub_ws):
            await ws.close()
        await pub_pc.close()
        await sub_pc.close()

    asyncio.run(run())


def test_unreachable_server_is_a_clear_error(bins):
    p = subprocess.run([bins["ctl"], "--url", "http://127.0.0.1:1", "rooms"], capture_output=True, text=True)
    assert p.returncode == 1
    assert "cannot reach the Switchyard server at http://127.0.0.1:1" in p.stderr, p.stderr
