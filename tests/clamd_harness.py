"""Starting Debian's clamd and clammail's daemon side by side, and talking to them.

Used by tests/test_clamd_*.py: `start_pair()` writes one clamd.conf per daemon
(same options, different sockets), starts both in the foreground and waits
until both answer PING; `exchange()` sends bytes (optionally in several
packets, optionally with a file descriptor) and returns everything the daemon
answered until it closed the connection or went quiet.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TEST_DB = (
    "44d88612fea8a8f36de82e1278abb02f:68:Win.Test.EICAR_HDB-1\n"
    "71e7b604d18aefd839e51a39c88df8383bb4c071dc31f87f00a2b5df580d4495:544:ClamAV-Test-File\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    unix: str
    port: int
    workdir: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Pair:
    clamd: Daemon
    clammail: Daemon
    root: Path
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        self.clamd.stop()
        self.clammail.stop()


def make_root() -> Path:
    """A world-readable scratch directory (the daemons may run as nobody)."""
    root = Path(tempfile.mkdtemp(prefix="clammail-clamd-"))
    root.chmod(0o755)
    return root


def write_config(path: Path, options: dict[str, object], unix: str, port: int) -> None:
    lines = [f"LocalSocket {unix}", f"TCPSocket {port}", "TCPAddr 127.0.0.1", "Foreground yes"]
    for name, value in options.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        lines += [f"{name} {v}" for v in values]
    path.write_text("\n".join(lines) + "\n")


def start_daemon(name: str, root: Path, options: dict[str, object]) -> Daemon:
    workdir = root / name
    workdir.mkdir(mode=0o777, exist_ok=True)
    workdir.chmod(0o777)
    unix = str(workdir / "clamd.sock")
    port = free_port()
    conf = workdir / "clamd.conf"
    log = Path(options.get("LogFile") or workdir / "clamd.log")
    write_config(conf, {**options, "LogFile": str(log)}, unix, port)
    if name == "clamd":
        cmd = [shutil.which("clamd") or "/usr/sbin/clamd", "-c", str(conf)]
    else:
        # A compiled-database cache of its own: every start after the first
        # with the same database maps it (exercised by the whole suite).
        cmd = [sys.executable, "-m", "clammail", "daemon", "-c", str(conf),
               "--cache-dir", str(workdir / "cache")]
    out = open(workdir / "stderr.txt", "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return Daemon(name, proc, unix, port, workdir, log)


def wait_ready(daemon: Daemon, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(
                f"{daemon.name} exited: {(daemon.workdir / 'stderr.txt').read_text()[-2000:]}"
            )
        try:
            if exchange(("tcp", daemon.port), b"zPING\0", quiet=2.0) == b"PONG\0":
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{daemon.name} did not answer PING in {timeout} s")


def start_pair(root: Path, options: dict[str, object]) -> Pair:
    clamd = start_daemon("clamd", root, options)
    clammail = start_daemon("clammail", root, options)
    try:
        wait_ready(clamd)
        wait_ready(clammail)
    except Exception:
        clamd.stop()
        clammail.stop()
        raise
    return Pair(clamd, clammail, root)


def connect(target) -> socket.socket:
    kind, where = target
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        where = ("127.0.0.1", where)
    s.settimeout(10)
    s.connect(where)
    return s


def exchange(target, packets, quiet: float = 1.5, fd: int | None = None,
             gap: float = 0.05, limit: int = 1 << 22) -> bytes:
    """Send `packets` (bytes or a list of bytes sent separately) and collect the answer.

    Ends at EOF (marked by nothing) or after `quiet` seconds of silence
    (marked with b"<QUIET>"): a daemon that keeps a connection open is
    visible in the result. `fd` is passed with the last packet (SCM_RIGHTS).
    """
    if isinstance(packets, bytes):
        packets = [packets]
    s = connect(target)
    try:
        for i, packet in enumerate(packets):
            if fd is not None and i == len(packets) - 1:
                socket.send_fds(s, [packet], [fd])
            else:
                try:
                    s.sendall(packet)
                except (BrokenPipeError, ConnectionResetError):
                    break
            if i < len(packets) - 1:
                time.sleep(gap)
        s.settimeout(quiet)
        out = bytearray()
        while len(out) < limit:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return bytes(out) + b"<QUIET>"
            except ConnectionResetError:
                return bytes(out) + b"<RESET>"
            if not chunk:
                return bytes(out)
            out.extend(chunk)
        return bytes(out)
    finally:
        s.close()
