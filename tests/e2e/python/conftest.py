"""Fixtures: start the `sluice` binary as a subprocess on a free loopback port."""

import json
import os
import pathlib
import subprocess
import tempfile
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def sluice_bin() -> str:
    path = os.environ.get("SLUICE_BIN") or str(ROOT / "target" / "debug" / "sluice")
    if not os.path.exists(path):
        pytest.fail(f"sluice binary not found at {path}: run `cargo build -p sluice-cli` first")
    return path


class Sluice:
    """A `sluice` subcommand running with a config file written from text; `base_url` is read
    from the first line it prints ("sluice ... listening on URL")."""

    def __init__(self, args: list, config: str, config_flag: str = "--config"):
        self._dir = tempfile.TemporaryDirectory()
        cfg = pathlib.Path(self._dir.name) / "config.toml"
        cfg.write_text(config)
        self.proc = subprocess.Popen(
            [sluice_bin(), *args, config_flag, str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            # The gateway's cost ledger goes to this run's temporary folder, not the home one.
            env={**os.environ, "SLUICE_LEDGER": str(pathlib.Path(self._dir.name) / "ledger.db")},
        )
        line = self.proc.stdout.readline().strip()
        if " listening on " not in line:
            self.close()
            raise RuntimeError(f"{args[0]} did not start: {line!r}")
        self.base_url = line.rsplit(" ", 1)[1]

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._dir.cleanup()


class Mock(Sluice):
    """A running `sluice mock` with the scenario given as TOML text."""

    def __init__(self, scenario: str):
        super().__init__(["mock", "--listen", "127.0.0.1:0"], scenario)

    def stats(self) -> dict:
        """The simulator's counters (`GET /_mock/stats`)."""
        root = self.base_url.removesuffix("/v1")
        with urllib.request.urlopen(f"{root}/_mock/stats", timeout=10) as r:
            return json.loads(r.read())


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
