"""Shared fixtures: a running `switchyard` server on free ports, torn down after each test module."""

import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def server_binary() -> str:
    path = os.environ.get("SWITCHYARD_BIN") or str(ROOT / "target" / "debug" / "switchyard")
    if not Path(path).exists():
        raise RuntimeError(f"{path} not found: build it with `cargo build --bin switchyard`")
    return path


class Server:
    def __init__(self, extra_args=()):
        self.proc = subprocess.Popen(
            [server_binary(), "--http", "127.0.0.1:0", "--workers", "2", "--turn-port", "0", *extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if not os.environ.get("SWITCHYARD_LOG") else None,
            text=True,
        )
        deadline = time.time() + 30
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"open (http://\S+)", line)
            if m:
                self.url = m.group(1).rstrip("/")
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError("switchyard did not start")
        self.ws_url = self.url.replace("http://", "ws://") + "/ws"

    def get_json(self, path):
        import json

        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server():
    s = Server(["--dtls-timeout-secs", "3"])
    yield s
    s.stop()
