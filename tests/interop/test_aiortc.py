"""Interop with an independent WebRTC stack: aiortc publishes a video track to the SFU and a second
aiortc peer receives and decodes frames from it. Also: bad signaling, a wrong DTLS fingerprint and a
peer that never finishes DTLS each fail cleanly and leave nothing behind in the engine."""

import asyncio
import json
import time

import numpy
import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack
from av import VideoFrame

TIMEOUT = 30


class MovingPattern(VideoStreamTrack):
    """A 320x240 test pattern that changes every frame, so the encoder sends real data."""

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        img = numpy.zeros((240, 320, 3), numpy.uint8)
        img[:, :, 0] = (self.n * 4) % 256
        img[(self.n * 3) % 240, :, 1] = 255
        self.n += 1
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


async def recv_type(ws, kind, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {kind} message")
        msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        if msg["type"] == kind:
            return msg


async def join(ws, room, name):
    await ws.send(json.dumps({"type": "join", "room": room, "name": name}))
    return await recv_type(ws, "joined")


async def publisher(url, room, pc):
    ws = await websockets.connect(url)
    await join(ws, room, "aiortc-publisher")
    pc.addTransceiver(MovingPattern(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await ws.send(json.dumps({"type": "publish", "sdp": pc.localDescription.sdp}))
    answer = await recv_type(ws, "publish-answer")
    await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    return ws


async def subscriber(url, room, pc, frames):
    ws = await websockets.connect(url)
    await join(ws, room, "aiortc-subscriber")

    @pc.on("track")
    def on_track(track):
        async def consume():
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                frames.append(time.monotonic())

        asyncio.ensure_future(consume())

    offer = await recv_type(ws, "subscribe-offer")
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    await ws.send(json.dumps({"type": "subscribe-answer", "sdp": pc.localDescription.sdp, "version": offer["version"]}))
    return ws, offer


def totals(server):
    return server.get_json("/api/stats")["totals"]


def transports(server):
    return sum(w["transports"] for w in server.get_json("/api/stats")["workers"])


def test_aiortc_publisher_to_aiortc_subscriber_through_the_sfu(server):
    async def run():
        pub_pc, sub_pc = RTCPeerConnection(), RTCPeerConnection()
        frames = []
        before = totals(server)
        pub_ws = await publisher(server.ws_url, "interop", pub_pc)
        sub_ws, offer = await subscriber(server.ws_url, "interop", sub_pc, frames)
        assert list(offer["streams"].values()) == [offer["streams"][k] for k in offer["streams"]]
        deadline = time.monotonic() + TIMEOUT
        while len(frames) < 30 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(frames) >= 30, f"subscriber decoded only {len(frames)} frames"
        after = totals(server)
        assert after["rtp_forwarded"] - before["rtp_forwarded"] >= 30, after
        for ws in (pub_ws, sub_ws):
            await ws.close()
        await pub_pc.close()
        await sub_pc.close()
        # Both participants left: their four transports are gone from the engine.
        for _ in range(50):
            if transports(server) == 0:
                break
            await asyncio.sleep(0.1)
        assert transports(server) == 0

    asyncio.run(run())


def test_bad_signaling_messages_get_errors_and_the_connection_lives(server):
    async def run():
        ws = await websockets.connect(server.ws_url)
        await ws.send("{not json")
        assert (await recv_type(ws, "error"))["code"] == "bad-json"
        await ws.send(json.dumps({"type": "publish", "sdp": "v=0\r\n"}))
        err = await recv_type(ws, "error")
        assert (err["code"], err.get("ref")) == ("out-of-order", "publish")
        await ws.send(json.dumps({"type": "join", "room": "has spaces", "name": "x"}))
        err = await recv_type(ws, "error")
        assert err["code"] == "bad-message" and "room" in err["message"]
        await ws.send(json.dumps({"type": "chat", "text": "x" * 70000}))
        assert (await recv_type(ws, "error"))["code"] == "too-large"
        joined = await join(ws, "robust", "still-here")
        assert joined["mode"] == "sfu"
        await ws.send(json.dumps({"type": "publish", "sdp": "v=0\r\nthis is not sdp"}))
        assert (await recv_type(ws, "error"))["code"] == "sdp"
        await ws.send(json.dumps({"type": "chat", "text": "hello"}))
        chat = await recv_type(ws, "chat")
        assert chat["text"] == "hello" and chat["name"] == "still-here"
        await ws.close()

    asyncio.run(run())


def test_wrong_fingerprint_and_silent_peer_are_removed_after_the_dtls_timeout(server):
    """The server's fixture uses a 3 s DTLS timeout."""

    async def run():
        # Wrong fingerprint: aiortc's real certificate does not match what its SDP claims.
        pc = RTCPeerConnection()
        ws = await websockets.connect(server.ws_url)
        await join(ws, "dtls-fail", "liar")
        pc.addTransceiver(MovingPattern(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        lines = pc.localDescription.sdp.splitlines()
        forged = [
            "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) if line.startswith("a=fingerprint:sha-256") else line
            for line in lines
        ]
        await ws.send(json.dumps({"type": "publish", "sdp": "\r\n".join(forged) + "\r\n"}))
        answer = await recv_type(ws, "publish-answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        err = await recv_type(ws, "error", timeout=15)
        assert "DTLS" in err["message"], err
        await ws.close()
        await pc.close()

        # A peer that never does DTLS: publishes an offer, then stays silent.
        silent = await websockets.connect(server.ws_url)
        await join(silent, "dtls-silent", "silent")
        pc2 = RTCPeerConnection()
        pc2.addTransceiver(MovingPattern(), direction="sendonly")
        await pc2.setLocalDescription(await pc2.createOffer())
        await silent.send(json.dumps({"type": "publish", "sdp": pc2.localDescription.sdp}))
        await recv_type(silent, "publish-answer")
        assert transports(server) >= 1
        err = await recv_type(silent, "error", timeout=15)
        assert "DTLS" in err["message"], err
        await asyncio.sleep(0.3)
        # Both failed transports were removed from the engine.
        assert transports(server) == 0, server.get_json("/api/stats")
        # The connections live on: chat still works.
        await silent.send(json.dumps({"type": "chat", "text": "still here"}))
        assert (await recv_type(silent, "chat"))["text"] == "still here"
        await silent.close()
        await pc2.close()

    asyncio.run(run())
