"""`clammail run` (what `make run` starts): the parts, their readiness, their stop.

Each test runs the supervisor on a YAML file like the bundled one but with
sockets of its own (free ports, a scratch directory), so it can run beside
a `make run` or another test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clamd_harness import EICAR, exchange, free_port
from milter_client import MilterClient
from milter_harness import mime

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 120.0


class Run:
    """A `clammail run` process and what it printed."""

    def __init__(self, root: Path):
        self.root = root
        self.clamd_port, self.milter_port = free_port(), free_port()
        self.proxy_port, self.next_hop_port = free_port(), free_port()
        self.unix = str(root / "clamd.ctl")
        config = root / "clammail.yaml"
        config.write_text(
            "daemon:\n"
            f"  LocalSocket: {self.unix}\n"
            f"  TCPSocket: {self.clamd_port}\n"
            "  TCPAddr: [127.0.0.1]\n"
            f"  LogFile: {root / 'clamd.log'}\n"
            "milter:\n"
            f"  MilterSocket: inet:{self.milter_port}@127.0.0.1\n"
            f"  ClamdSocket: [unix:{self.unix}]\n"
            "  OnInfected: Reject\n"
            f"  LogFile: {root / 'milter.log'}\n"
            "proxy:\n"
            f"  Listen: 127.0.0.1:{self.proxy_port}\n"
            f"  NextHop: 127.0.0.1:{self.next_hop_port}\n"
            f"  ClamdSocket: [unix:{self.unix}]\n"
            f"  QuarantineDirectory: {root / 'quarantine'}\n"
            f"  LogFile: {root / 'proxy.log'}\n")
        self.output = root / "output.txt"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clammail", "run", "-c", str(config),
             "--datadir", str(REPO / "clammail" / "data")],
            stdout=open(self.output, "w"), stderr=subprocess.STDOUT, cwd=root)

    def text(self) -> str:
        return self.output.read_text()

    def wait_for(self, line: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if line in text:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"no {line!r} in the output:\n{self.text()}")

    def part_pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in re.finditer(r"run: (\w+) +\(.*?pid (\d+)\)", self.text())}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def run(tmp_path):
    tmp_path.chmod(0o755)
    started = Run(tmp_path)
    yield started
    started.close()
    for pid in started.part_pids().values():
        _wait_gone(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return False


def test_every_part_listens_scans_and_stops_on_sigterm(run):
    text = run.wait_for("running; Ctrl-C stops it")
    assert "daemon (clamd protocol, pid" in text
    daemon_line = next(line for line in text.splitlines() if "run: daemon" in line)
    assert f"127.0.0.1:{run.clamd_port}" in daemon_line and run.unix in daemon_line
    milter_line = next(line for line in text.splitlines() if "run: milter" in line)
    assert milter_line.endswith(f"listens on 127.0.0.1:{run.milter_port}")
    assert f"    smtpd_milters = inet:127.0.0.1:{run.milter_port}\n" \
           "    non_smtpd_milters = $smtpd_milters\n" in text
    proxy_line = next(line for line in text.splitlines() if "run: proxy" in line)
    assert proxy_line.endswith(f"listens on 127.0.0.1:{run.proxy_port}; "
                               f"passes mail on to 127.0.0.1:{run.next_hop_port}")

    frame = len(EICAR).to_bytes(4, "big") + EICAR + b"\0\0\0\0"
    assert exchange(("unix", run.unix), b"zINSTREAM\0" + frame) == \
        b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0"
    with MilterClient(f"inet:{run.milter_port}@127.0.0.1") as client:
        client.connect()
        hdrs, body = mime([("application/octet-stream", "eicar.com", EICAR)])
        result = client.message("<sender@example.org>", ["<rcpt@example.com>"], hdrs, body)
    assert result.action == "reject"

    pids = run.part_pids()
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(timeout=90) == 0
    text = run.text()
    # The milter and the proxy stop first, the daemon after them.
    assert text.index("milter | --- Stopped") < text.index("daemon | --- Stopped")
    assert text.index("proxy  | ") < text.index("daemon | --- Stopped")
    assert text.rstrip().endswith("clammail run: stopped")
    assert not any(_alive(pid) for pid in pids.values())
    assert not os.path.exists(run.unix)


def test_a_part_that_dies_stops_the_others(run):
    run.wait_for("running; Ctrl-C stops it")
    pids = run.part_pids()
    os.kill(pids["milter"], signal.SIGKILL)
    assert run.proc.wait(timeout=90) == 1
    text = run.text()
    assert f"clammail run: milter exited with status -{int(signal.SIGKILL)}" in text
    assert "daemon | --- Stopped" in text
    assert text.rstrip().endswith("clammail run: stopped after a failure")
    assert not _alive(pids["daemon"])


def test_parts_stop_when_the_supervisor_is_killed(run):
    run.wait_for("running; Ctrl-C stops it")
    pids = run.part_pids()
    run.proc.kill()
    run.proc.wait()
    # PR_SET_PDEATHSIG: the parts go with it (and the daemon's workers with the daemon).
    assert all(_wait_gone(pid) for pid in pids.values())


def test_a_configuration_error_stops_the_start(tmp_path):
    config = tmp_path / "clammail.yaml"
    config.write_text("daemon:\n  NoSuchOption: 1\n")
    done = subprocess.run([sys.executable, "-m", "clammail", "run", "-c", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "NoSuchOption" in done.stdout
    assert "clammail run: daemon exited with status 1" in done.stdout
