"""Shared fixtures: a running `switchyard` server on free ports, torn down after each test module."""

import pytest

from server import Server


@pytest.fixture(scope="module")
def server():
    s = Server(["--dtls-timeout-secs", "3"])
    yield s
    s.stop()
