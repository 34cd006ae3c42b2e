"""One running all-in-one `switchyard` on free ports, for the Python end-to-end tests (interop and ops)."""

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def server_binary() -> str:
    path = os.environ.get("SWITCHYARD_BIN") or str(ROOT / "target" / "debug" / "switchyard")
    if not Path(path).exists():
        raise RuntimeError(f"{path} not found: build it with `cargo build --bin switchyard`")
    return path


class Server:
    """Starts `switchyard` with HTTP on a free port, two workers and TURN off, plus `extra_args`."""

    def __init__(self, extra_args=(), binary=None):
        self.proc = subprocess.Popen(
            [binary or server_binary(), "--http", "127.0.0.1:0", "--workers", "2", "--turn-port", "0", *extra_args],
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

    def get(self, path):
        """(status, body text) of a GET."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def get_json(self, path):
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
