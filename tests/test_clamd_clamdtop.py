"""Debian's clamdtop, unmodified, shows clammail as it shows clamd.

clamdtop (package clamav-daemon) opens an IDSESSION, asks VERSION once and
STATS every second, and draws what it parsed with ncurses. Each daemon gets
its own clamdtop in a detached tmux window; the rendered screens are read
with `tmux capture-pane` and compared after the parts that must differ are
masked: the clock, the version strings, numbers (connection time, thread
counts, memory) and the rows of idle workers and bars drawn from numbers.
What remains is what clamdtop understood of each STATS reply: the same.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
import uuid

import pytest
from clamd_harness import EICAR, TEST_DB, exchange, make_root, start_pair
from conftest import need_program

from clammail import __version__

pytestmark = [pytest.mark.oracle]

@pytest.fixture
def clamdtop_and_tmux():
    """clamdtop (clamav-daemon) and tmux; the test fails without them."""
    need_program("clamdtop")
    need_program("tmux")


needs = pytest.mark.usefixtures("clamdtop_and_tmux")


@pytest.fixture(scope="module")
def pair():
    root = make_root()
    db = root / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    db.chmod(0o755)
    p = start_pair(root, {"DatabaseDirectory": db, "SelfCheck": 0, "MaxThreads": 7})
    yield p
    p.stop()
    shutil.rmtree(root, ignore_errors=True)


class Tmux:
    """A private tmux server (its own socket name), killed at the end."""

    def __init__(self):
        self.name = f"clammail-test-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.name, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=20, check=True).stdout

    def screen(self, window: str) -> str:
        return self.run("capture-pane", "-p", "-t", window)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=20)


def wait_for_screen(tmux: Tmux, window: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux.screen(window)
        if text in screen and " STATS " in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"clamdtop did not show the daemon in {timeout} s:\n{screen}")


def masked(screen: str) -> list[str]:
    lines = []
    for line in screen.splitlines():
        if re.match(r"^\s*IDLE\s", line) or re.search(r"\[[| ]*\]", line):
            continue  # idle workers (clamd has as many idle threads as it used) and bars
        line = re.sub(r"ClamdTOP version \S+\s+.*", "ClamdTOP version <clamdtop> <clock>", line)
        line = re.sub(r"ClamAV 1\.4\.6|clammail " + re.escape(__version__), "<daemon>", line)
        line = re.sub(r"\b(1\.4\.6|" + re.escape(__version__) + r")\b", "<engine>", line)
        line = re.sub(r"\d+", "9", line)
        if line.strip():  # blank rows shift with the number of idle rows
            lines.append(" ".join(line.split()))
    return lines


@needs
def test_clamdtop_shows_clammail_as_clamd(pair):
    # A scan first, so that both have done work and have idle workers.
    body = b"zINSTREAM\0" + struct.pack(">I", len(EICAR)) + EICAR + struct.pack(">I", 0)
    for d in (pair.clamd, pair.clammail):
        assert b"FOUND" in exchange(("unix", d.unix), body)
    tmux = Tmux()
    try:
        # Session names that no window name starts with: tmux would take
        # "clamd" for the window "clamdtop" of either session.
        for i, d in enumerate((pair.clamd, pair.clammail)):
            tmux.run("new-session", "-d", "-x", "132", "-y", "30", "-s", f"s{i}", f"clamdtop {d.unix}")
        screens = {
            "clamd": wait_for_screen(tmux, "s0:", "Details for Clamd version:  ClamAV 1.4.6"),
            "clammail": wait_for_screen(tmux, "s1:", f"Details for Clamd version:  clammail {__version__}"),
        }
    finally:
        tmux.close()
    # What clamdtop parsed from clammail's VERSION and STATS.
    row = next(line for line in screens["clammail"].splitlines() if re.match(r"^\s*1 \d\d:\d\d:\d\d ", line))
    no, conntime, live, idle, queue, maxq, mem, engine, dbver, *rest = row.split()
    assert engine == __version__ and rest[-1] == "local" and mem == "N/A"
    assert int(live) >= 1 and int(queue) == 0
    assert re.search(r"Primary threads: live\s+\d+ idle\s+\d+ max\s+7(?!\d)", screens["clammail"])
    assert re.search(r"Pool: count\s+1 used\s+\d+M total\s+\d+M", screens["clammail"])
    # And everything else as clamd's.
    assert masked(screens["clammail"]) == masked(screens["clamd"])
