"""Faults injected while clients scan; Debian's clamd gets the same faults as the oracle.

The log: a file system that is full (a small tmpfs, filled before the start
or while the daemon runs), /dev/full, a read-only file system, a file that
reaches LogFileMaxSize, and SIGHUP after the file was moved away. A log
that cannot be written must cost no verdict and no control (RELOAD,
SHUTDOWN); where clamd refuses to start, clammail refuses with the same
words.

The daemon: a storm of reloads under more clients than workers, workers
killed with SIGKILL in the middle of scans, and SIGTERM while clients scan
and others connect.

The mounts need root (as `make test` runs on the CI machine): without it
these tests fail rather than skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from clamd_harness import EICAR, TEST_DB, connect, exchange, make_root, start_daemon, wait_ready
from conftest import wait_until as wait_for

pytestmark = [pytest.mark.oracle, pytest.mark.slow]

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
FOUND = b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"
NEW_SIG_DATA = b"clammail fault test: a signature added while the log is full\n"
NEW_FOUND = b"stream: Clammail.Fault.Test.UNOFFICIAL FOUND\0"
ROTATED = re.compile(r"^clamd-\d{8}_\d{6}\.log$")
SIZE_WARNING = ("WARNING: Log size limit met but log file rotation turned off. "
                "Forcing log file rotation anyways.")


def instream_request(data: bytes) -> bytes:
    return b"zINSTREAM\0" + struct.pack(">I", len(data)) + data + struct.pack(">I", 0)


def instream(daemon, data: bytes = EICAR) -> bytes:
    return exchange(("unix", daemon.unix), instream_request(data), quiet=30)



def exit_code(daemon, timeout: float = 30.0) -> int | None:
    """The daemon's exit status, or None if it is still running after `timeout`."""
    try:
        return daemon.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# -- file systems ------------------------------------------------------------------------


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@contextmanager
def tmpfs(path: Path, size_kb: int):
    """A small tmpfs at `path` (created), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0777", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` with one file, up to ENOSPC (tmpfs
    allocates whole pages, so whole blocks leave no room behind)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    block = bytes(4096)
    try:
        while True:
            os.write(fd, block)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


# -- daemons -------------------------------------------------------------------------------


class Root(type(Path())):
    """The test's scratch directory, remembering the daemons started in it."""

    started: list


@pytest.fixture
def root():
    r = Root(make_root())
    r.started = []
    db = r / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    db.chmod(0o755)
    yield r
    for d in r.started:
        d.stop()
    shutil.rmtree(r, ignore_errors=True)


def start(root: Root, name: str, **options):
    opts = {"DatabaseDirectory": root / "db", "SelfCheck": 0, **options}
    d = start_daemon(name, root, opts)
    root.started.append(d)
    wait_ready(d)
    return d


def start_refused(root: Path, name: str, **options) -> tuple[int, list[str], list[str]]:
    """Start a daemon expected not to come up: (exit status, stdout's and stderr's ERROR lines)."""
    workdir = root / name
    workdir.mkdir(exist_ok=True)
    conf = workdir / "clamd.conf"
    lines = [f"LocalSocket {workdir / 'clamd.sock'}", "Foreground yes",
             f"DatabaseDirectory {root / 'db'}"] + [f"{k} {v}" for k, v in options.items()]
    conf.write_text("\n".join(lines) + "\n")
    if name == "clamd":
        cmd = [CLAMD, "-c", str(conf)]
    else:
        cmd = [sys.executable, "-m", "clammail", "daemon", "-c", str(conf), "--no-cache-dir"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def errors(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("ERROR:")]

    return proc.returncode, errors(proc.stdout), errors(proc.stderr)


def both(function):
    """`function(name)` for clamd and for clammail: {name: result}."""
    return {name: function(name) for name in ("clamd", "clammail")}


# -- the log -----------------------------------------------------------------------------------


def test_full_log_file_system_costs_no_verdict_and_no_control(root):
    """A full log file system from the start: every scan answered, RELOAD loads,
    SHUTDOWN stops -- as clamd does."""

    def scenario(name):
        with tmpfs(root / f"logfs-{name}", 64) as logfs:
            fill(logfs)
            d = start(root, name, LogFile=logfs / "clamd.log")
            answers = {instream(d) for _ in range(30)}
            before = instream(d, NEW_SIG_DATA)
            new_db = root / "db" / "new.hdb"
            new_db.write_text(md5_line(NEW_SIG_DATA, "Clammail.Fault.Test"))
            try:
                reload = exchange(("unix", d.unix), b"zRELOAD\0")
                found_new = wait_for(lambda: instream(d, NEW_SIG_DATA) == NEW_FOUND)
            finally:
                new_db.unlink()
            exchange(("unix", d.unix), b"zSHUTDOWN\0")
            return answers, before, reload, found_new, exit_code(d)

    results = both(scenario)
    assert results["clamd"] == ({FOUND}, b"stream: OK\0", b"RELOADING\0", True, 0)
    assert results["clammail"] == results["clamd"]


def test_log_to_dev_full(root):
    """`LogFile /dev/full`: clamd starts and serves; so does clammail (no traceback)."""

    def scenario(name):
        d = start(root, name, LogFile="/dev/full")
        answers = {instream(d) for _ in range(10)}
        d.proc.send_signal(signal.SIGTERM)
        return answers, exit_code(d)

    results = both(scenario)
    assert results["clamd"] == ({FOUND}, 0)
    assert results["clammail"] == results["clamd"]
    assert "Traceback" not in (root / "clammail" / "stderr.txt").read_text()


@pytest.mark.parametrize("where", ["read-only", "missing-directory", "relative"])
def test_unusable_log_file_refused_as_clamd(root, where):
    """A log file that cannot be opened stops the start, with clamd's messages."""
    with tmpfs(root / "rofs", 64) as rofs:
        (rofs / "clamd.log").write_text("")
        run("mount", "-o", "remount,ro", str(rofs))
        path = {"read-only": rofs / "clamd.log", "missing-directory": root / "nowhere" / "clamd.log",
                "relative": "clamd.log"}[where]
        results = both(lambda name: start_refused(root, name, LogFile=path))
    assert results["clamd"][0] != 0 and results["clamd"][2]
    assert results["clammail"] == results["clamd"]


def test_log_fills_and_frees_while_serving(root):
    """The log's file system fills up while clients scan, then has room again:
    every scan is answered; stderr says once that lines are lost and once
    that the log is written again; the log then says how many were lost."""
    with tmpfs(root / "logfs", 256) as logfs:
        d = start(root, "clammail", LogFile=logfs / "clamd.log", LogClean="yes")
        filler = fill(logfs)
        # The first lines still fit the log's last page; a hundred do not.
        assert {instream(d) for _ in range(100)} == {FOUND}
        assert exchange(("unix", d.unix), b"zVERSION\0").startswith(b"clammail")
        filler.unlink()
        assert {instream(d) for _ in range(5)} == {FOUND}
        exchange(("unix", d.unix), b"zSHUTDOWN\0")
        assert exit_code(d) == 0
        log = (logfs / "clamd.log").read_text()
    stderr = (d.workdir / "stderr.txt").read_text()
    lost = [line for line in stderr.splitlines() if "log lines are lost" in line]
    again = [line for line in stderr.splitlines() if "written again after" in line]
    assert len(lost) == 1 and "No space left on device" in lost[0]
    assert len(again) == 1
    lost_count = int(re.search(r"after (\d+) lost", again[0]).group(1))
    # Only detections were logged meanwhile: each is in the log or counted as lost.
    assert lost_count >= 1 and log.count(" FOUND\n") + lost_count == 105
    assert f"written again after {lost_count} lost log line(s)" in log
    assert "Traceback" not in stderr


@pytest.mark.parametrize("rotate", ["no", "yes"])
def test_log_file_max_size_rotates_as_clamd(root, rotate):
    """At LogFileMaxSize the file is moved to <name>-YYYYMMDD_HHMMSS.log and a
    new one begun; with LogRotate off, clamd says so once and rotates anyway."""

    def scenario(name):
        logdir = root / f"logs-{name}"
        logdir.mkdir()
        d = start(root, name, LogFile=logdir / "clamd.log", LogFileMaxSize=4000,
                  LogRotate=rotate, LogClean="yes")

        def rotations() -> list[str]:
            return [p.name for p in logdir.iterdir() if ROTATED.match(p.name)]

        # Up to the first rotation, then a few lines more: two rotations in
        # one second would share a name (the second overwrites the first).
        for _ in range(500):
            assert instream(d) == FOUND
            if rotations():
                break
        for _ in range(5):
            assert instream(d) == FOUND
        d.proc.send_signal(signal.SIGTERM)
        assert exit_code(d) == 0
        names = sorted(p.name for p in logdir.iterdir())
        rotated = [n for n in names if ROTATED.match(n)]
        texts = [(logdir / n).read_text() for n in rotated]
        warnings = sum(t.count(SIZE_WARNING) for t in texts)
        size_lines = [line for t in texts for line in t.splitlines() if line.startswith("Log size = ")]
        current = (logdir / "clamd.log").read_text()
        return (sorted(set(names) - set(rotated)), len(rotated), warnings,
                all(re.fullmatch(r"Log size = \d+, max = 4000", line) for line in size_lines),
                "--- Stopped at" in current)

    results = both(scenario)
    expected_warnings = 1 if rotate == "no" else 0
    assert results["clamd"] == (["clamd.log"], 1, expected_warnings, True, True)
    assert results["clammail"] == results["clamd"]


def test_sighup_reopens_the_log_as_clamd(root):
    """SIGHUP after the log was moved away: the old file ends with clamd's
    message, and what follows goes to a new file at the configured path."""

    def scenario(name):
        d = start(root, name, LogClean="yes")
        moved = d.log.with_suffix(".old")
        os.rename(d.log, moved)
        d.proc.send_signal(signal.SIGHUP)
        exchange(("unix", d.unix), b"zPING\0")  # clamd looks at the flag when it wakes
        assert wait_for(lambda: "SIGHUP caught" in moved.read_text())
        assert instream(d) == FOUND
        assert wait_for(lambda: d.log.exists() and "FOUND" in d.log.read_text())
        return moved.read_text().splitlines()[-1]

    results = both(scenario)
    assert results["clamd"] == "SIGHUP caught: re-opening log file."
    assert results["clammail"] == results["clamd"]


def md5_line(data: bytes, name: str) -> str:
    import hashlib

    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"


# -- the daemon under load ----------------------------------------------------------------------

CLEAN = b"an ordinary clean object for the fault tests\n" * 20
CLEAN_OK = b"stream: OK\0"


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_tree(daemon) -> str:
    """The daemon's descendants (pid, state, parent) and its log's end, for a failure message."""
    lines = []
    for pid in descendants(daemon.proc.pid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            lines.append(f"{pid} state {stat[0]} parent {stat[1]}")
        except OSError:
            lines.append(f"{pid} gone")
    log = daemon.log.read_text().splitlines()[-25:] if daemon.log.exists() else []
    return "\n".join(["descendants:", *lines, "log:", *log])


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def scan_workers(daemon) -> list[int]:
    """clammail's scan workers: the children of its loader processes (the daemon's children)."""
    return [w for loader in children(daemon.proc.pid) for w in children(loader)]


class Clients:
    """`count` clients scanning EICAR and a clean object in turn until stopped; every answer kept."""

    def __init__(self, daemon, count: int):
        self.daemon = daemon
        self.stop = threading.Event()
        self.answers: list[tuple[bytes, bytes]] = []  # (expected, got)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        cases = [(EICAR, FOUND), (CLEAN, CLEAN_OK)]
        n = index
        while not self.stop.is_set():
            data, expected = cases[n % 2]
            n += 1
            try:
                got = instream(self.daemon, data)
            except OSError as exc:
                got = repr(exc).encode()
            self.answers.append((expected, got))

    def finish(self) -> list[tuple[bytes, bytes]]:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)
        return self.answers


def test_reload_storm_under_load_costs_no_scan(root):
    """RELOAD and SIGUSR2 every half second while more clients scan than there
    are workers: every scan answered right, by clamd and by clammail; after
    the storm clammail runs one generation (one loader, its workers) only."""

    def scenario(name):
        # No size limit: on a fast machine the clients' lines pass clamd's
        # 1 MB default, and the file rotated away would hold the lines looked for.
        d = start(root, name, MaxThreads=2, LogFileMaxSize=0)
        clients = Clients(d, 4)
        reloads = 0
        try:
            for i in range(30):
                if i % 2:
                    d.proc.send_signal(signal.SIGUSR2)
                else:
                    assert exchange(("unix", d.unix), b"zRELOAD\0") == b"RELOADING\0"
                reloads += 1
                time.sleep(0.5)
        finally:
            answers = clients.finish()
        wrong = [(want, got) for want, got in answers if want != got]
        return d, len(answers), wrong, reloads

    results = both(scenario)
    for name, (_, total, wrong, reloads) in results.items():
        assert reloads == 30 and total > 100, (name, total)
        assert not wrong, f"{name}: {len(wrong)} of {total} answers wrong: {wrong[:3]}"
    d = results["clammail"][0]
    # The storm's last reload finishes, then the generations before it end.
    assert wait_for(lambda: len(children(d.proc.pid)) == 1 and "Database correctly reloaded"
                    in d.log.read_text()), process_tree(d)
    assert wait_for(lambda: len(descendants(d.proc.pid)) <= 3), process_tree(d)  # a loader, 2 workers
    assert "Traceback" not in (d.workdir / "stderr.txt").read_text()


def test_reload_asked_during_a_reload_is_done_after_it(root):
    """RELOAD, a new signature file, RELOAD at once: the second request comes
    while the first reload runs and is done after it, so the new signature
    is loaded. (clamd drops a request made during a reload.)"""
    d = start(root, "clammail")
    new_db = root / "db" / "queued.hdb"

    def reloads() -> int:
        return d.log.read_text().count("Database correctly reloaded")

    try:
        assert exchange(("unix", d.unix), b"zRELOAD\0") == b"RELOADING\0"
        new_db.write_text(md5_line(NEW_SIG_DATA, "Clammail.Fault.Test"))
        assert exchange(("unix", d.unix), b"zRELOAD\0") == b"RELOADING\0"
        # Two requests, two reloads, whether the second came during the first or after it.
        assert wait_for(lambda: reloads() == 2), process_tree(d)
        assert instream(d, NEW_SIG_DATA) == NEW_FOUND
    finally:
        new_db.unlink()


def test_killed_worker_is_logged_replaced_and_the_scan_retried(root):
    """SIGKILL to the worker holding a scan: the scan is answered right (run
    again on a fresh worker), the log names the object and the signal."""
    d = start(root, "clammail", MaxThreads=1, LogFileMaxSize=0)  # the log is read after the load
    assert instream(d) == FOUND
    [worker] = scan_workers(d)
    os.kill(worker, signal.SIGSTOP)  # it takes the next job and holds it
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(instream, d)
        assert wait_for(lambda: "\tINSTREAM " in exchange(("unix", d.unix), b"zSTATS\0").decode())
        os.kill(worker, signal.SIGKILL)
        assert answer.result(timeout=60) == FOUND
    log = d.log.read_text()
    assert (f"stream: worker process killed by SIGKILL (pid {worker}) during the scan; "
            "scanning again on a fresh worker") in log
    assert instream(d, CLEAN) == CLEAN_OK
    assert worker not in scan_workers(d) and len(scan_workers(d)) == 1


def test_workers_killed_under_load(root):
    """Workers killed again and again while four clients scan: each answer is
    the right verdict or says that the worker was killed; the daemon keeps
    its pool and serves on."""
    d = start(root, "clammail", MaxThreads=2, LogFileMaxSize=0)  # the log is read after the load
    clients = Clients(d, 4)
    killed = set()
    try:
        for _ in range(25):
            for pid in scan_workers(d)[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.3)
    finally:
        answers = clients.finish()
    aborted = b"stream: Scan aborted: worker process killed by SIGKILL ERROR\0"
    wrong = [(want, got) for want, got in answers if got not in (want, aborted)]
    assert len(killed) >= 20 and len(answers) > 100
    assert not wrong, f"{len(wrong)} of {len(answers)} answers wrong: {wrong[:3]}"
    assert instream(d) == FOUND and instream(d, CLEAN) == CLEAN_OK
    assert len(scan_workers(d)) >= 1 and not killed & set(scan_workers(d))
    assert d.log.read_text().count("killed by SIGKILL") >= 1
    assert "Traceback" not in (d.workdir / "stderr.txt").read_text()


def test_sigterm_under_load_refuses_new_clients_and_closes_idle_ones(root):
    """SIGTERM while a stream comes in and another client sits idle: the idle
    connection is closed and new connections are refused at once, as clamd
    does; clammail, unlike clamd, still answers the stream in flight."""
    half = len(EICAR) // 2

    def scenario(name):
        d = start(root, name)
        idle = connect(("unix", d.unix))
        streaming = connect(("unix", d.unix))
        streaming.sendall(b"zINSTREAM\0" + struct.pack(">I", len(EICAR)) + EICAR[:half])
        assert exchange(("unix", d.unix), b"zPING\0") == b"PONG\0"  # both connections are taken
        d.proc.send_signal(signal.SIGTERM)
        idle.settimeout(30)
        idle_end = idle.recv(100)  # b"": closed while the stream is still in flight
        # New clients: refused (no one waits in a listen queue that nobody accepts from).
        refused = wait_for(lambda: connect_refused(d))
        running = d.proc.poll() is None  # clammail: yes, the stream holds it
        streaming.settimeout(30)
        try:
            streaming.sendall(EICAR[half:] + struct.pack(">I", 0))
            in_flight = streaming.recv(200)
        except OSError:
            in_flight = b"<closed>"
        idle.close()
        streaming.close()
        return idle_end, refused, in_flight, exit_code(d), running

    results = both(scenario)
    assert results["clamd"][:2] == (b"", True) and results["clamd"][3] == 0
    assert results["clammail"] == (b"", True, FOUND, 0, True)


def connect_refused(daemon) -> bool:
    try:
        s = connect(("unix", daemon.unix))
    except (ConnectionRefusedError, FileNotFoundError):
        return True
    s.close()
    return False
