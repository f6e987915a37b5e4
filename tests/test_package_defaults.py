"""The defaults the package relies on, tested from the source tree.

The installed daemon is configured with freshclam's directory
(`DatabaseDirectory /var/lib/clamav`) and started with
`--fallback-datadir` pointing at the bundled database: until freshclam has
downloaded something it serves the bundled set, and SelfCheck switches to
freshclam's databases once they appear, without a restart.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from clamd_harness import EICAR, Daemon, exchange, free_port, make_root, wait_ready

from clammail.signatures.loader import holds_databases

BUNDLED = "clammail/data"
# A database as freshclam would leave it, with a name of its own.
FRESH_DB = "44d88612fea8a8f36de82e1278abb02f:68:Freshclam.Test.EICAR\n"


def start_with_fallback(root, database_dir):
    port = free_port()
    conf = root / "clamd.conf"
    conf.write_text(
        f"TCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\n"
        f"DatabaseDirectory {database_dir}\nSelfCheck 1\nLogFile {root / 'clamd.log'}\n")
    stderr = open(root / "stderr.txt", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clammail", "daemon", "-c", str(conf), "--no-cache-dir",
         "--fallback-datadir", BUNDLED], stdout=stderr, stderr=subprocess.STDOUT)
    return proc, port


def instream(port: int, data: bytes) -> bytes:
    frame = len(data).to_bytes(4, "big") + data + b"\0\0\0\0"
    return exchange(("tcp", port), b"zINSTREAM\0" + frame)


def test_holds_databases_ignores_freshclams_state_file(tmp_path):
    assert not holds_databases(str(tmp_path / "missing"))
    (tmp_path / "freshclam.dat").write_bytes(b"\0" * 16)
    assert not holds_databases(str(tmp_path))
    (tmp_path / "daily.cld").write_bytes(b"")
    assert holds_databases(str(tmp_path))


def test_bundled_database_until_freshclam_fills_the_directory():
    root = make_root()
    freshclam_dir = root / "clamav"
    freshclam_dir.mkdir()
    (freshclam_dir / "freshclam.dat").write_bytes(b"\0" * 16)  # first run, nothing downloaded
    proc, port = start_with_fallback(root, freshclam_dir)
    try:
        wait_ready(Daemon("clammail", proc, "", port, root, root / "clamd.log"))
        assert instream(port, EICAR) == b"stream: Eicar-Test-Signature.UNOFFICIAL FOUND\0"

        (freshclam_dir / "daily.hdb").write_text(FRESH_DB)
        deadline = time.monotonic() + 60
        reply = b""
        while time.monotonic() < deadline:
            reply = instream(port, EICAR)
            if b"Freshclam" in reply:
                break
            time.sleep(0.5)
        assert reply == b"stream: Freshclam.Test.EICAR.UNOFFICIAL FOUND\0"
        log = (root / "clamd.log").read_text()
        assert f"Reading databases from {(Path(BUNDLED)).resolve()}\n" in log
        assert f"Reading databases from {freshclam_dir} (SelfCheck)" in log
        assert "SelfCheck: Database modification detected. Forcing reload." in log
    finally:
        proc.terminate()
        proc.wait(timeout=30)
