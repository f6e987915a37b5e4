"""Starting milters for tests: clammail's and Debian's clamav-milter 1.4.6, on the same backends.

`Milter` runs one milter in the foreground with a configuration written from
a dict of clamav-milter.conf options; `backends()` starts clamd and clammail's
daemon on a database that knows EICAR as a body signature (as ClamAV's own
daily database does) and clam.exe by hash. Test messages are built here too.
"""

from __future__ import annotations

import base64
import io
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from clamd_harness import EICAR, REPO, TEST_DB, make_root, start_pair
from milter_client import MilterClient

EICAR_NDB = f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n"


def backends(root: Path | None = None, **options):
    """clamd and clammail's daemon side by side (clamd_harness.Pair) on the test database."""
    root = root or make_root()
    db = root / "db"
    db.mkdir(exist_ok=True)
    (db / "test.hdb").write_text(TEST_DB)
    (db / "test.ndb").write_text(EICAR_NDB)
    for p in [root, db, *db.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return start_pair(root, {"DatabaseDirectory": db, "SelfCheck": 0, **options})


@pytest.fixture(scope="module")
def scanners():
    """clamd and clammail's daemon on the test database, for a module's tests
    (`scanners.extra["root"]`: a world-readable scratch directory beside them)."""
    root = make_root()
    pair = backends(root)
    pair.extra["root"] = root
    yield pair
    pair.stop()
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Milter:
    kind: str  # "clammail" or "clamav-milter"
    proc: subprocess.Popen
    socket: str
    workdir: Path
    log: Path

    def client(self, timeout: float = 60.0) -> MilterClient:
        return MilterClient(self.socket, timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.signal(sig)
        return self.wait(timeout)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return (self.workdir / "stderr.txt").read_text(errors="replace")


def stop_all(*milters: Milter) -> None:
    """Stop them all at once. clamav-milter is killed: on SIGTERM libmilter takes up to
    5 s to notice (its poll timeout), and its shutdown is not what is tested."""
    for milter in milters:
        milter.signal(signal.SIGKILL if milter.kind == "clamav-milter" else signal.SIGTERM)
    for milter in milters:
        milter.wait()


def write_conf(path: Path, options: dict[str, object]) -> None:
    lines = []
    for name, value in options.items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{name} {item}")
    path.write_text("\n".join(lines) + "\n")


def start_milter(kind: str, root: Path, options: dict[str, object], name: str | None = None,
                 wait: bool = True) -> Milter:
    workdir = root / (name or kind)
    workdir.mkdir(mode=0o777, exist_ok=True)
    sock = str(workdir / "milter.sock")
    log = workdir / "milter.log"
    conf = workdir / "milter.conf"
    write_conf(conf, {"MilterSocket": f"unix:{sock}", "Foreground": "yes",
                      "LogFile": str(log), "MilterSocketMode": "666", **options})
    if kind == "clamav-milter":
        cmd = [shutil.which("clamav-milter") or "/usr/sbin/clamav-milter", "-c", str(conf)]
    else:
        cmd = [sys.executable, "-m", "clammail", "milter", "-c", str(conf)]
    out = open(workdir / "stderr.txt", "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    milter = Milter(kind, proc, sock, workdir, log)
    if wait:
        wait_ready(milter)
    return milter


def wait_ready(milter: Milter, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if milter.proc.poll() is not None:
            raise RuntimeError(f"{milter.kind} exited: {milter.output()[-2000:]}")
        try:
            milter.client(timeout=5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{milter.kind} did not open {milter.socket} in {timeout} s")


# -- messages -------------------------------------------------------------------


def headers(subject: str = "test", extra: list[tuple[bytes, bytes]] | None = None):
    return [(b"From", b"Sender <sender@example.org>"), (b"To", b"rcpt@example.com"),
            (b"Subject", subject.encode()), (b"Message-ID", b"<1@example.org>"),
            (b"Date", b"Sun, 06 Dec 2026 10:00:00 +0000"), *(extra or [])]


def mime(parts: list[tuple[str, str, bytes]]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A multipart/mixed message: (headers, body) from (content type, file name, data)."""
    boundary = "----=_clammail_test_boundary"
    body = io.BytesIO()
    body.write(b"This is a multi-part message in MIME format.\r\n")
    for ctype, filename, data in parts:
        body.write(f"--{boundary}\r\n".encode())
        if filename:
            body.write(f'Content-Type: {ctype}; name="{filename}"\r\n'
                       "Content-Transfer-Encoding: base64\r\n"
                       f'Content-Disposition: attachment; filename="{filename}"\r\n\r\n'.encode())
            encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
            body.write(encoded)
        else:
            body.write(f"Content-Type: {ctype}\r\n\r\n".encode())
            body.write(data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    extra = [(b"MIME-Version", b"1.0"),
             (b"Content-Type", f'multipart/mixed; boundary="{boundary}"'.encode())]
    return headers(extra=extra), body.getvalue()


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


MESSAGES: dict[str, tuple[list[tuple[bytes, bytes]], bytes]] = {
    "clean": (headers(), b"Hello,\r\nnothing to see here.\r\n"),
    "eicar-body": (headers("eicar"), EICAR + b"\r\n"),
    "eicar-zip": mime([("text/plain", "", b"see attachment"),
                       ("application/zip", "eicar.zip", zipped("eicar.com", EICAR))]),
    "clean-attachments": mime([("text/plain", "", b"two files"),
                               ("application/pdf", "a.pdf", b"%PDF-1.4\n% nothing\n"),
                               ("application/zip", "b.zip", zipped("b.txt", b"harmless"))]),
    "headers-only": (headers("no body"), b""),
}


def raw_message(name: str) -> bytes:
    """A message of MESSAGES as the bytes an SMTP client sends."""
    fields, body = MESSAGES[name]
    return b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n" + body
