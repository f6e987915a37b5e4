"""The daemon's life: reloads (good and bad), signals, PidFile, socket clean-up,
VirusEvent, and clients that stall or hold connections open.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
from pathlib import Path

import pytest
from clamd_harness import EICAR, TEST_DB, exchange, make_root, start_daemon, wait_ready
from conftest import wait_until as wait_for

NEW_SIG_DATA = b"clammail reload test object\n"


def md5_line(data: bytes, name: str) -> str:
    import hashlib

    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"



@pytest.fixture
def daemon_env():
    root = make_root()
    db = root / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    files = root / "files"
    files.mkdir()
    (files / "eicar.com").write_bytes(EICAR)
    (files / "new.txt").write_bytes(NEW_SIG_DATA)
    for p in (root, db, files):
        p.chmod(0o755)
    started = []

    def start(**options):
        opts = {"DatabaseDirectory": db, "PidFile": root / "clammail" / "clamd.pid",
                "SelfCheck": 0, **options}
        d = start_daemon("clammail", root, opts)
        started.append(d)
        wait_ready(d)
        return d

    yield root, db, files, start
    for d in started:
        d.stop()
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def scan(d, path: Path) -> bytes:
    return exchange(("tcp", d.port), b"zSCAN " + str(path).encode() + b"\0")


def instream(d, data: bytes) -> bytes:
    body = struct.pack(">I", len(data)) + data + struct.pack(">I", 0)
    return exchange(("tcp", d.port), b"zINSTREAM\0" + body)


def test_reload_picks_up_new_signatures(daemon_env):
    root, db, files, start = daemon_env
    d = start()
    assert scan(d, files / "new.txt").endswith(b": OK\0")
    (db / "extra.hdb").write_text(md5_line(NEW_SIG_DATA, "Clammail.Reload.Test"))
    assert exchange(("tcp", d.port), b"nRELOAD\n") == b"RELOADING\n"
    assert wait_for(lambda: b"Clammail.Reload.Test.UNOFFICIAL FOUND" in scan(d, files / "new.txt"))
    assert b"Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND" in scan(d, files / "eicar.com")



def test_restart_maps_the_compiled_database_cache(daemon_env):
    """A restart with unchanged files uses the cache the first start wrote (the
    file is not written again) and answers alike; a changed file makes a new one."""
    root, db, files, start = daemon_env
    (db / "body.ndb").write_text("Clammail.Body.Test:0:*:" + NEW_SIG_DATA[:20].hex() + "\n")
    d = start()
    first = (scan(d, files / "new.txt"), scan(d, files / "eicar.com"), instream(d, EICAR))
    assert b"Clammail.Body.Test.UNOFFICIAL FOUND" in first[0]
    d.stop()
    cache = root / "clammail" / "cache"
    written = {p.name: p.stat().st_ino for p in cache.glob("db-*.cache")}
    assert len(written) == 1
    d = start()
    assert (scan(d, files / "new.txt"), scan(d, files / "eicar.com"), instream(d, EICAR)) == first
    assert {p.name: p.stat().st_ino for p in cache.glob("db-*.cache")} == written
    other = b"another object, for the cache test\n"
    assert instream(d, other) == b"stream: OK\0"
    (db / "extra.hdb").write_text(md5_line(other, "Clammail.Cache.Test"))
    assert exchange(("tcp", d.port), b"nRELOAD\n") == b"RELOADING\n"
    assert wait_for(lambda: b"Clammail.Cache.Test" in instream(d, other))
    assert wait_for(lambda: set(p.name for p in cache.glob("db-*.cache")) - set(written))

def test_failed_reload_keeps_the_old_database(daemon_env):
    root, db, files, start = daemon_env
    d = start()
    (db / "broken.hdb").write_text("this is not a signature\n")
    os.kill(d.proc.pid, signal.SIGUSR2)
    assert wait_for(lambda: "Database load failed" in d.log.read_text())
    assert b"Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND" in scan(d, files / "eicar.com")
    assert b"Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND" in instream(d, EICAR)
    assert "broken.hdb" in d.log.read_text()


def test_selfcheck_reloads_changed_database(daemon_env):
    root, db, files, start = daemon_env
    d = start(SelfCheck=1)
    (db / "extra.hdb").write_text(md5_line(NEW_SIG_DATA, "Clammail.SelfCheck.Test"))
    assert wait_for(lambda: b"Clammail.SelfCheck.Test.UNOFFICIAL FOUND" in scan(d, files / "new.txt"))
    assert "Database modification detected" in d.log.read_text()


@pytest.mark.parametrize("how", ["SIGTERM", "SHUTDOWN"])
def test_clean_exit_removes_socket_and_pidfile(daemon_env, how):
    root, db, files, start = daemon_env
    d = start()
    pidfile = root / "clammail" / "clamd.pid"
    assert pidfile.read_text().strip() == str(d.proc.pid)
    assert os.path.exists(d.unix)
    if how == "SIGTERM":
        d.proc.send_signal(signal.SIGTERM)
    else:
        exchange(("unix", d.unix), b"zSHUTDOWN\0")
    assert d.proc.wait(timeout=20) == 0
    assert not os.path.exists(d.unix)
    assert not pidfile.exists()
    assert "Stopped at" in d.log.read_text()


def test_virus_event_gets_clamd_environment(daemon_env):
    root, db, files, start = daemon_env
    out = root / "event.txt"
    command = f'"echo %v $CLAM_VIRUSEVENT_VIRUSNAME $CLAM_VIRUSEVENT_FILENAME >> {out}"'
    d = start(VirusEvent=command, User="root" if os.geteuid() == 0 else None)
    scan(d, files / "eicar.com")
    assert wait_for(out.exists)
    name = "Win.Test.EICAR_HDB-1.UNOFFICIAL"
    assert out.read_text().split() == [name, name, str(files / "eicar.com")]


def test_stalled_and_idle_clients_do_not_block_others(daemon_env):
    root, db, files, start = daemon_env
    d = start(CommandReadTimeout=30)
    idle = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", d.port))
        idle.append(s)
    slow = socket.create_connection(("127.0.0.1", d.port))
    slow.sendall(b"nSCA")  # never finished
    stalled = socket.create_connection(("127.0.0.1", d.port))
    stalled.sendall(b"nINSTREAM\n" + struct.pack(">I", 1000) + b"x")  # never finished
    try:
        for _ in range(5):
            assert exchange(("tcp", d.port), b"zPING\0", quiet=5) == b"PONG\0"
        assert b"FOUND" in instream(d, EICAR)
    finally:
        for s in idle + [slow, stalled]:
            s.close()


def test_random_bytes_never_crash(daemon_env):
    import random

    root, db, files, start = daemon_env
    d = start(CommandReadTimeout=1, ReadTimeout=1)
    rng = random.Random(4)
    for _ in range(40):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        exchange(("tcp", d.port), data, quiet=2)
    assert exchange(("tcp", d.port), b"zPING\0") == b"PONG\0"
    assert d.proc.poll() is None
