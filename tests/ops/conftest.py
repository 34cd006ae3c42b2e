"""Shared fixtures of the ops tests."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bins():
    """The split daemons: $SWITCHYARD_ENGINE_BIN / $SWITCHYARD_CONTROL_BIN, else target/debug (built on first use)."""
    engine = os.environ.get("SWITCHYARD_ENGINE_BIN")
    control = os.environ.get("SWITCHYARD_CONTROL_BIN")
    if not (engine and control):
        subprocess.run(
            ["cargo", "build", "-q", "--bin", "switchyard-engine", "--bin", "switchyard-control"],
            cwd=ROOT,
            check=True,
        )
        engine = engine or str(ROOT / "target" / "debug" / "switchyard-engine")
        control = control or str(ROOT / "target" / "debug" / "switchyard-control")
    return {"engine": engine, "control": control}
