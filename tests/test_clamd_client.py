"""Clients against both daemons: our client (both front ends), and Debian's clamdscan unmodified.

clamdscan in each mode (default, --multiscan, --stream, --fdpass, and their
combinations, with and without --allmatch) must print the same lines against
clammail as against clamd, and exit with the same code.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from clamd_harness import EICAR, TEST_DB, make_root, start_pair

from clammail.clamd.client import (
    AsyncClamd,
    Clamd,
    ClamdConnectError,
    ClamdError,
    Status,
    parse_verdict,
)

pytestmark = [pytest.mark.oracle]

TESTFILE = Path("/usr/share/clamav-testfiles/clam.exe")


@pytest.fixture(scope="module")
def pair():
    root = make_root()
    db = root / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    files = root / "files"
    (files / "sub").mkdir(parents=True)
    (files / "eicar.com").write_bytes(EICAR)
    (files / "clean.txt").write_text("clean\n")
    (files / "sub" / "e2").write_bytes(EICAR + b"")
    (files / "sub" / "c2").write_text("also clean\n")
    if TESTFILE.exists():
        shutil.copy(TESTFILE, files / "clam.exe")
        shutil.copy(TESTFILE, files / "sub" / "clam2.exe")
    for p in [root, db, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    p = start_pair(root, {"DatabaseDirectory": db, "SelfCheck": 0})
    p.extra["files"] = files
    yield p
    p.stop()
    shutil.rmtree(root, ignore_errors=True)


def clamdscan(daemon, *args: str) -> tuple[int, list[str]]:
    conf = daemon.workdir / "clamd.conf"
    proc = subprocess.run(["clamdscan", "--config-file", str(conf), "--no-summary", *args],
                          capture_output=True, text=True, timeout=120)
    lines = [re.sub(r"fd\[\d+\]", "fd[N]", line) for line in proc.stdout.splitlines()]
    return proc.returncode, sorted(lines)


MODES = [[], ["--multiscan"], ["--stream"], ["--fdpass"], ["--multiscan", "--fdpass"],
         ["--multiscan", "--stream"], ["--allmatch"], ["--allmatch", "--stream"],
         ["--allmatch", "--fdpass"], ["-i"]]


@pytest.mark.parametrize("mode", MODES, ids=lambda m: " ".join(m) or "default")
def test_clamdscan_sees_the_same(pair, mode):
    files = pair.extra["files"]
    targets = [str(files), str(files / "eicar.com"), str(files / "clean.txt"), str(files / "nope")]
    expected = clamdscan(pair.clamd, *mode, *targets)
    got = clamdscan(pair.clammail, *mode, *targets)
    assert any("FOUND" in line for line in expected[1])
    assert got == expected


def test_clamdscan_ping_version_reload(pair):
    for args in (["--ping", "1"], ["--reload"]):
        assert clamdscan(pair.clammail, *args)[0] == clamdscan(pair.clamd, *args)[0] == 0
    code, lines = clamdscan(pair.clammail, "--version")
    assert code == 0 and lines[0].startswith("clammail ")


def test_async_client_against_both(pair):
    files = pair.extra["files"]

    async def check(address: str):
        client = AsyncClamd(address, timeout=20)
        assert await client.ping()
        verdict = await client.instream([EICAR[:20], EICAR[20:]])
        assert verdict.infected and verdict.path == "stream"
        assert (await client.instream(b"nothing here")).status is Status.OK
        stream = await client.open_instream()
        for byte in EICAR:  # one byte at a time, as a slow sender writes
            await stream.write(bytes([byte]))
        piecewise = await stream.finish()
        verdicts = await client.scan_path(str(files), "CONTSCAN")
        fd = os.open(files / "eicar.com", os.O_RDONLY)
        try:
            passed = await client.fildes(fd)
        finally:
            os.close(fd)
        return (verdict.detail, piecewise.line, sorted(v.line for v in verdicts), passed.detail)

    ours = asyncio.run(check(f"unix:{pair.clammail.unix}"))
    theirs = asyncio.run(check(pair.clamd.unix))
    assert ours == theirs
    assert "FOUND" in ours[1]


def test_blocking_client_against_both(pair):
    files = pair.extra["files"]

    def check(address: str):
        client = Clamd(address, timeout=20)
        assert client.ping()
        with client.open_instream() as stream:
            stream.write(EICAR[:10])
            stream.write(EICAR[10:])
            infected = stream.finish()
        clean = client.instream(b"nothing here")
        # Cut at 10 bytes, as the milter's MaxFileSize cuts: EICAR is not seen.
        cut = client.instream(EICAR, limit=10)
        verdicts = client.scan_path(str(files), "CONTSCAN")
        fd = os.open(files / "eicar.com", os.O_RDONLY)
        try:
            passed = client.fildes(fd)
        finally:
            os.close(fd)
        return infected.line, clean.line, cut.line, sorted(v.line for v in verdicts), passed.text

    ours = check(f"unix:{pair.clammail.unix}")
    theirs = check(f"unix:{pair.clamd.unix}")
    assert ours == theirs
    assert ours[0].endswith(" FOUND") and ours[1:3] == ("stream: OK", "stream: OK")
    over_tcp = [Clamd(f"tcp:127.0.0.1:{d.port}", timeout=20).instream(EICAR).line
                for d in (pair.clammail, pair.clamd)]
    assert over_tcp[0] == over_tcp[1] == ours[0]


def test_stream_over_the_daemons_limit_gets_its_error_reply(tmp_path):
    """StreamMaxLength broken mid-stream: the daemon's ERROR reply, not a broken pipe."""
    root = make_root()
    db = root / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    for p in [root, db, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    pair = start_pair(root, {"DatabaseDirectory": db, "SelfCheck": 0, "StreamMaxLength": "1M"})
    try:
        replies = []
        for daemon in (pair.clamd, pair.clammail):
            client = Clamd(daemon.unix, timeout=20)
            with client.open_instream() as stream:
                for _ in range(64):
                    stream.write(b"x" * 65536)
                replies.append(stream.finish())
        assert replies[0] == replies[1]
        assert replies[0].status is Status.ERROR
        assert "size limit exceeded" in replies[0].detail
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_client_errors():
    async def refused():
        with pytest.raises(ClamdConnectError):
            await AsyncClamd("tcp:127.0.0.1:1", timeout=5).ping()
    asyncio.run(refused())
    with pytest.raises(ClamdConnectError):
        Clamd("tcp:127.0.0.1:1", timeout=5).ping()
    with pytest.raises(ClamdConnectError):
        Clamd("unix:/nonexistent/socket", timeout=5).ping()
    with pytest.raises(ClamdError):
        parse_verdict("something else")
    assert parse_verdict("INSTREAM size limit exceeded. ERROR").status is Status.ERROR


def dscan(daemon, *args: str) -> tuple[int, list[str]]:
    import sys

    conf = daemon.workdir / "clamd.conf"
    proc = subprocess.run([sys.executable, "-m", "clammail", "dscan", "--config-file", str(conf),
                           *args], capture_output=True, text=True, timeout=120)
    return proc.returncode, _comparable(proc.stdout + proc.stderr)


def _comparable(text: str) -> list[str]:
    drop = ("Time:", "Start Date:", "End Date:")
    return sorted(re.sub(r"fd\[\d+\]", "fd[N]", line) for line in text.splitlines()
                  if not line.startswith(drop))


@pytest.mark.parametrize("mode", MODES[:6] + [["--allmatch"], ["-i"]],
                         ids=lambda m: " ".join(m) or "default")
def test_dscan_prints_what_clamdscan_prints(pair, mode):
    files = pair.extra["files"]
    targets = [str(files), str(files / "eicar.com"), str(files / "clean.txt"), str(files / "nope")]
    conf = pair.clamd.workdir / "clamd.conf"
    proc = subprocess.run(["clamdscan", "--config-file", str(conf), *mode, *targets],
                          capture_output=True, text=True, timeout=120)
    expected = (proc.returncode, _comparable(proc.stdout + proc.stderr))
    assert dscan(pair.clammail, *mode, *targets) == expected


def test_dscan_ping_reload_version(pair):
    assert dscan(pair.clammail, "--ping", "2:0.1")[0] == 0
    assert dscan(pair.clammail, "--reload")[0] == 0
    code, lines = dscan(pair.clammail, "--version")
    assert code == 0 and lines == ["clammail 0.1.0"]
