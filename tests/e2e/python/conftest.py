"""Fixtures: start the `sluice` binary as a subprocess on a free loopback port."""

import os
import pathlib
import subprocess
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def sluice_bin() -> str:
    path = os.environ.get("SLUICE_BIN") or str(ROOT / "target" / "debug" / "sluice")
    if not os.path.exists(path):
        pytest.fail(f"sluice binary not found at {path}: run `cargo build -p sluice-cli` first")
    return path


class Mock:
    """A running `sluice mock` with the scenario given as TOML text."""

    def __init__(self, scenario: str):
        self._dir = tempfile.TemporaryDirectory()
        cfg = pathlib.Path(self._dir.name) / "scenario.toml"
        cfg.write_text(scenario)
        self.proc = subprocess.Popen(
            [sluice_bin(), "mock", "--listen", "127.0.0.1:0", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("sluice mock listening on "):
            self.close()
            raise RuntimeError(f"mock did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[1]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._dir.cleanup()


@pytest.fixture
def mock_factory():
    started = []

    def make(scenario: str = "") -> Mock:
        m = Mock(scenario)
        started.append(m)
        return m

    yield make
    for m in started:
        m.close()


@pytest.fixture(scope="module")
def shared_mock_factory():
    """Like mock_factory, but one mock per scenario for the whole module (startup is not free)."""
    started = {}

    def make(scenario: str = "") -> Mock:
        if scenario not in started:
            started[scenario] = Mock(scenario)
        return started[scenario]

    yield make
    for m in started.values():
        m.close()
