"""Hostile clients: the daemon keeps serving everyone else, in bounded memory.

Each case runs while a background client keeps asking PING on fresh
connections, and must not make one of those answers wait past a generous
limit (no timing asserts beyond "an answer arrives"): 1 000 idle
connections, clients that send their command one byte per second, a 4 GB
INSTREAM streamed by the test (never held in memory) against StreamMaxLength,
a session that never reads its replies, random bytes. Afterwards the daemon
and its workers are alive, their peak memory (VmHWM from /proc) is within a
bound, and the log shows no failed connection handler.

Where clamd has the same situation on a small scale (a command trickled in
byte by byte, a stream over StreamMaxLength in many chunks), both daemons
get the same bytes and must answer alike.
"""

from __future__ import annotations

import os
import random
import resource
import selectors
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from clamd_harness import EICAR, TEST_DB, exchange, make_root, start_daemon, start_pair, wait_ready

pytestmark = [pytest.mark.slow]

ANSWER_WITHIN = 10.0  # seconds: generous; a PING normally takes milliseconds
MEMORY_GROWTH_LIMIT = 100 * 1024  # kB a hostile case may add to a process's peak
CHUNK = 64 * 1024
FOUR_GB = 4 * 1024 ** 3


# -- helpers ---------------------------------------------------------------------


def memory_kb(pid: int) -> dict[int, tuple[int, int]]:
    """{pid: (VmRSS, VmHWM)} in kB for the daemon and each of its workers."""
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    result = {}
    for p in pids:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines())
        except OSError:
            continue  # a worker that just exited
        result[p] = (int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]))
    return result


def assert_memory_bounded(daemon, baseline: dict[int, tuple[int, int]]) -> None:
    now = memory_kb(daemon.proc.pid)
    start_rss = max(rss for rss, _ in baseline.values())
    for pid, (_rss, hwm) in now.items():
        assert hwm < start_rss + MEMORY_GROWTH_LIMIT, (
            f"process {pid} peaked at {hwm} kB (the daemon started at {start_rss} kB): {now}")


def ping(daemon, kind: str = "tcp") -> bytes:
    target = ("unix", daemon.unix) if kind == "unix" else ("tcp", daemon.port)
    return exchange(target, b"zPING\0", quiet=ANSWER_WITHIN)


@contextmanager
def others_are_served(daemon):
    """Ping the daemon from other clients all along; every PING must be answered."""
    stop = threading.Event()
    answers: list[bytes] = []

    def run():
        kinds = ["tcp", "unix"]
        while not stop.is_set():
            try:
                answers.append(ping(daemon, kinds[len(answers) % 2]))
            except OSError as exc:
                answers.append(repr(exc).encode())
            stop.wait(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        stop.set()
        thread.join(timeout=ANSWER_WITHIN + 5)
    assert answers, "no PING was sent"
    bad = [a for a in answers if a != b"PONG\0"]
    assert not bad, f"{len(bad)} of {len(answers)} PINGs not answered: {bad[:3]}"


def log_problems(daemon) -> list[str]:
    text = daemon.log.read_text(errors="replace") + (daemon.workdir / "stderr.txt").read_text(errors="replace")
    return [line for line in text.splitlines()
            if "connection handler failed" in line or "Traceback" in line or "engine failure" in line]


def unix_client(path: str, timeout: float = 30.0) -> socket.socket:
    """Connected as a blocking client (clamdscan) connects: while the listen
    backlog is full, a unix-socket connect with a timeout fails at once with
    EAGAIN where a blocking one waits; so wait too, up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def read_to_eof(s: socket.socket, timeout: float = ANSWER_WITHIN) -> bytes:
    s.settimeout(timeout)
    out = bytearray()
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def stream_until_refused(path: str, prefix: bytes, total: int, chunk: int = CHUNK) -> tuple[int, bytes]:
    """INSTREAM `total` bytes in `chunk`-byte chunks, made up as they are sent.

    Stops when the daemon stops reading (it answered and closed); returns the
    bytes of data sent and the daemon's answer.
    """
    block = bytes(chunk)
    header = struct.pack(">I", chunk)
    sent = 0
    s = unix_client(path)
    try:
        s.sendall(prefix)
        try:
            while sent < total:
                size = min(chunk, total - sent)
                s.sendall(header + block if size == chunk else struct.pack(">I", size) + block[:size])
                sent += size
            s.sendall(struct.pack(">I", 0))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent, read_to_eof(s)
    finally:
        s.close()


# -- the daemon ------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon():
    root = make_root()
    db = root / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    (root / "eicar.com").write_bytes(EICAR)
    for path in (db, root / "eicar.com"):
        path.chmod(0o755)
    d = start_daemon("clammail", root, {
        "DatabaseDirectory": db, "SelfCheck": 0, "CommandReadTimeout": 3, "ReadTimeout": 3,
    })
    wait_ready(d)
    d.baseline = memory_kb(d.proc.pid)
    d.eicar = root / "eicar.com"
    yield d
    d.stop()
    import shutil

    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def healthy(daemon):
    """After the case: the daemon lives, answers, logged no failure, stayed within its memory bound."""
    yield daemon
    assert daemon.proc.poll() is None, "the daemon died"
    assert ping(daemon) == b"PONG\0"
    assert not log_problems(daemon)
    assert_memory_bounded(daemon, daemon.baseline)


# -- the cases ---------------------------------------------------------------------


def test_a_thousand_idle_connections(healthy):
    d = healthy
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200 and hard >= 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    idle = []
    try:
        with others_are_served(d):
            for i in range(1000):
                if i % 2:
                    s = unix_client(d.unix)
                else:
                    s = socket.create_connection(("127.0.0.1", d.port), timeout=30)
                idle.append(s)
            time.sleep(1)
        # None of them sent a command: each is told so after CommandReadTimeout
        # (3 s) and closed, all at about the same moment.
        answers = _read_all_until_closed(idle, timeout=30)
        assert len(answers) == 1000
        assert set(answers) == {b"COMMAND READ TIMED OUT\n"}
    finally:
        for s in idle:
            s.close()


def _read_all_until_closed(sockets: list[socket.socket], timeout: float) -> list[bytes]:
    selector = selectors.DefaultSelector()
    data: dict[socket.socket, bytearray] = {}
    for s in sockets:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
        data[s] = bytearray()
    done = []
    deadline = time.monotonic() + timeout
    while len(done) < len(sockets) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            s = key.fileobj
            try:
                chunk = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                data[s] += chunk
            else:
                selector.unregister(s)
                done.append(bytes(data[s]))
    selector.close()
    return done


def test_commands_sent_one_byte_per_second(healthy):
    """Ten clients trickle a command in: each is timed out after CommandReadTimeout, as clamd does."""
    d = healthy

    def trickle(i: int) -> bytes:
        command = b"nVERSION\n" if i % 2 else b"zSCAN " + str(d.eicar).encode() + b"\0"
        s = unix_client(d.unix) if i % 3 else socket.create_connection(("127.0.0.1", d.port), timeout=30)
        try:
            for byte in command:
                try:
                    s.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(1)
            return read_to_eof(s)
        finally:
            s.close()

    with others_are_served(d):
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(trickle, range(10)))
    assert answers == [b"COMMAND READ TIMED OUT\n"] * 10


def test_four_gigabyte_instream(healthy):
    """4 GB streamed in 64 KB chunks: refused at StreamMaxLength (100 MB), nothing held in memory."""
    d = healthy
    with others_are_served(d):
        sent, answer = stream_until_refused(d.unix, b"zINSTREAM\0", FOUR_GB)
    assert answer == b"INSTREAM size limit exceeded. ERROR\0"
    # The daemon read its 100 MB, then stopped reading: the client could
    # not push much more than that and what the socket buffers hold.
    assert 100 * 1024 * 1024 <= sent < 200 * 1024 * 1024
    # A stream within the limit still works right after.
    body = b"zINSTREAM\0" + struct.pack(">I", len(EICAR)) + EICAR + struct.pack(">I", 0)
    assert exchange(("unix", d.unix), body) == b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"


def test_four_gigabyte_chunk_announced(healthy):
    """One chunk that claims 4 GB - 1: refused at once, before any of its data is read."""
    d = healthy
    s = unix_client(d.unix)
    try:
        s.sendall(b"nINSTREAM\n" + b"\xff\xff\xff\xff" + bytes(CHUNK))
        assert read_to_eof(s) == b"INSTREAM size limit exceeded. ERROR\n"
    finally:
        s.close()


def test_session_that_never_reads_its_replies(healthy):
    """A session floods commands with long answers and reads nothing: the daemon drops it.

    Once its replies have filled the socket buffers, the daemon reads no
    more commands from it; after SendBufTimeout it gives the client up.
    """
    d = healthy
    flood = b"nVERSIONCOMMANDS\nnSTATS\nnPING\nnSCAN " + str(d.eicar).encode() + b"\n"
    flood *= 1000
    s = socket.create_connection(("127.0.0.1", d.port), timeout=2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = 0
    try:
        with others_are_served(d):
            s.sendall(b"zIDSESSION\0")
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                try:
                    s.sendall(flood)
                    sent += len(flood)
                except (TimeoutError, BrokenPipeError, ConnectionResetError):
                    break  # the daemon no longer reads this client
            time.sleep(2)
        # What the daemon had written is there to read, then the connection ends.
        replies, closed = read_until_closed(s, within=ANSWER_WITHIN)
    finally:
        s.close()
    assert closed, "the daemon kept a client that never read"
    assert sent < 100 * len(flood), "the daemon kept reading a client that never read"
    lines = [line for line in replies.split(b"\n")[:-1] if line]
    assert lines, "no reply was written before the client was dropped"
    for line in lines:
        number, _, text = line.partition(b": ")
        assert number.isdigit() or line.startswith((b"STATE:", b"THREADS:", b"QUEUE:", b"\t", b"MEMSTATS:", b"END")), line


def read_until_closed(s: socket.socket, within: float) -> tuple[bytes, bool]:
    """Everything the daemon sends until it closes (True), or until `within` seconds pass (False)."""
    out = bytearray()
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return bytes(out), True
        except TimeoutError:
            break
        if not chunk:
            return bytes(out), True
        out += chunk
    return bytes(out), False


def test_random_bytes(healthy):
    """Random bytes, bare and behind valid command prefixes, on both sockets at once."""
    d = healthy
    rng = random.Random(1234)
    prefixes = [b"", b"z", b"n", b"nIDSESSION\n", b"zIDSESSION\0", b"zINSTREAM\0", b"nINSTREAM\n",
                b"nFILDES\n", b"nSCAN ", b"zMULTISCAN "]
    blobs = []
    for i in range(120):
        size = rng.choice([1, 10, 100, 1000, 5000, 70000])
        blobs.append((rng.choice(prefixes) + rng.randbytes(size), "unix" if i % 2 else "tcp"))

    def send(item):
        data, kind = item
        target = ("unix", d.unix) if kind == "unix" else ("tcp", d.port)
        return exchange(target, data, quiet=0.3)

    with others_are_served(d):
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(send, blobs))
    assert len(answers) == len(blobs)


# -- the same as clamd, on a small scale ---------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    root = make_root()
    db = root / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    db.chmod(0o755)
    options = {"DatabaseDirectory": db, "SelfCheck": 0, "CommandReadTimeout": 2, "ReadTimeout": 2,
               "StreamMaxLength": "1M"}
    if os.geteuid() == 0:
        options["User"] = "nobody"
    p = start_pair(root, options)
    yield p
    p.stop()
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def both(pair, action):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(action, (pair.clamd, pair.clammail)))


def test_trickled_command_times_out_like_clamd(pair):
    def trickle(d) -> bytes:
        s = unix_client(d.unix)
        try:
            for byte in b"nPING\n":
                try:
                    s.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                time.sleep(1)
            return read_to_eof(s)
        finally:
            s.close()

    clamd, clammail = both(pair, trickle)
    assert clamd == b"COMMAND READ TIMED OUT\n"
    assert clammail == clamd


@pytest.mark.parametrize("prefix,total,chunk", [
    (b"zINSTREAM\0", 4 * 1024 * 1024, CHUNK),  # over the limit in 64 KB chunks
    (b"nINSTREAM\n", 3 * 1024 * 1024, 1000),  # in small chunks, the limit falls inside one
    (b"zINSTREAM\0", 1024 * 1024, CHUNK),  # exactly the limit: scanned
    (b"zINSTREAM\0", 1024 * 1024 + 1, 1024 * 1024 + 1),  # one chunk one byte too long
    (b"nIDSESSION\nnINSTREAM\n", 2 * 1024 * 1024, 4096),  # inside a session
])
def test_stream_limit_like_clamd(pair, prefix, total, chunk):
    clamd, clammail = both(pair, lambda d: stream_until_refused(d.unix, prefix, total, chunk)[1])
    assert clamd in (b"INSTREAM size limit exceeded. ERROR\0", b"INSTREAM size limit exceeded. ERROR\n",
                     b"stream: OK\0", b"1: INSTREAM size limit exceeded. ERROR\n")
    assert clammail == clamd
