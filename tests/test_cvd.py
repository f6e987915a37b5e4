"""Containers (.cvd .cld .cud): building, verifying, loading; compared with clamscan and sigtool."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest
from conftest import need_program
from cvd_testkey import TEST_D, TEST_E, TEST_N
from dbtest_helpers import both, clamscan

from clammail.signatures.common import SignatureError
from clammail.signatures.cvd import (
    RsaKey,
    build_container,
    decode_number,
    encode_number,
    sign_info,
    sign_md5,
    verify_info_signature,
    verify_md5_signature,
)
from clammail.signatures.loader import load_database

pytestmark = pytest.mark.oracle

TEST_KEY = RsaKey(TEST_N, TEST_E)
TEST_KEYS = (TEST_KEY, TEST_KEY)
SIGN = (TEST_D, TEST_KEY, TEST_D, TEST_KEY)


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "target.txt"
    path.write_text("a file for container tests\n")
    return path


def _files(target):
    md5 = hashlib.md5(target.read_bytes()).hexdigest()
    size = target.stat().st_size
    return {
        "daily.hdb": f"{md5}:{size}:Cvd.Test.Hash\n".encode(),
        "daily.hsb": f"{hashlib.sha256(target.read_bytes()).hexdigest()}:*:Cvd.Star:73\n".encode(),
        "daily.ign2": b"Cvd.Never\n",
        "daily.cfg": b"DOCUMENT:0x3:17:63\n",
    }


def _container(target, **kwargs):
    stime = kwargs.pop("stime", int(time.time()))
    return build_container(_files(target), "daily", version=kwargs.pop("version", 27000),
                           signatures=3, stime=stime, **kwargs)


def test_signature_encoding_round_trip():
    for value in (0, 1, 63, 64, 2**127 + 12345, TEST_N - 1):
        assert decode_number(encode_number(value)) == value
    md5 = hashlib.md5(b"x").hexdigest()
    verify_md5_signature(md5, sign_md5(md5, TEST_D, TEST_KEY), TEST_KEY)
    with pytest.raises(SignatureError):
        verify_md5_signature(md5, sign_md5(md5, TEST_D, TEST_KEY))  # ClamAV's key
    with pytest.raises(SignatureError):
        verify_md5_signature(hashlib.md5(b"y").hexdigest(), sign_md5(md5, TEST_D, TEST_KEY),
                             TEST_KEY)
    sha = hashlib.sha256(b"info").digest()
    dsig = sign_info(sha, TEST_D, TEST_KEY, os.urandom(32))
    verify_info_signature(sha, dsig, TEST_KEY)
    with pytest.raises(SignatureError):
        verify_info_signature(hashlib.sha256(b"other").digest(), dsig, TEST_KEY)
    with pytest.raises(SignatureError):
        verify_info_signature(sha, dsig)


def test_unsigned_cud_loads_like_clamscan(tmp_path, target):
    cud = tmp_path / "daily.cud"
    cud.write_bytes(_container(target))
    theirs, ours = both([cud], [target])
    assert theirs[1] == {str(target): ["Cvd.Test.Hash.UNOFFICIAL", "Cvd.Star.UNOFFICIAL"]}
    assert ours[:2] == theirs[:2]
    assert ours[3] == theirs[3] == 2
    db = load_database([str(cud)])
    assert db.info.version == 27000
    assert db.info.build_time == time.ctime(db.info.build_timestamp)


def test_plain_tar_container(tmp_path, target):
    cud = tmp_path / "main.cud"
    cud.write_bytes(_container(target, compress=False))
    theirs, ours = both([cud], [target])
    assert ours[:2] == theirs[:2] and theirs[0] == 1
    assert load_database([str(cud)]).info.version is None  # only daily.* sets VERSION


def test_signed_container_verifies_with_its_key_only(tmp_path, target):
    for kind in ("cvd", "cld"):
        path = tmp_path / f"daily.{kind}"
        path.write_bytes(_container(target, sign=SIGN))
        db = load_database([str(path)], keys=TEST_KEYS)
        names = db.file_hashes.lookup(hashlib.md5(target.read_bytes()).digest(),
                                      target.stat().st_size)
        assert names == ["Cvd.Test.Hash"]  # official: no .UNOFFICIAL
        with pytest.raises(SignatureError, match="verify"):
            load_database([str(path)])  # ClamAV's key
        theirs = clamscan([path], [target])
        # clamscan refuses it too: the .cvd for its DSIG, the .cld for its .info's.
        assert theirs[0] == 2 and theirs[1] == {}
        assert ("verify database integrity" if kind == "cvd" else
                "cli_loadinfo: Incorrect digital signature") in theirs[2]
        path.unlink()


def _tamper(data: bytes, how: str) -> bytes:
    head, body = data[:512], data[512:]
    if how == "body":
        return head + body[:40] + bytes([body[40] ^ 0xFF]) + body[41:]
    if how == "truncated":
        return data[:600]
    if how == "header-only":
        return head
    if how == "short":
        return head[:100]
    if how == "version":
        text = head.decode("latin-1").split(":")
        text[2] = str(int(text[2]) + 1)
        return ":".join(text).encode("latin-1").ljust(512, b" ")[:512] + body
    if how == "garbage":
        return os.urandom(4096)
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["body", "truncated", "header-only", "short", "version",
                                 "garbage"])
def test_broken_containers_are_refused_by_both(tmp_path, target, how):
    for kind, sign in (("cud", None), ("cvd", SIGN)):
        path = tmp_path / f"daily.{kind}"
        path.write_bytes(_tamper(_container(target, sign=sign), how))
        theirs = clamscan([path], [target])
        assert theirs[0] == 2, (kind, how, theirs)
        with pytest.raises(SignatureError):
            load_database([str(path)], keys=TEST_KEYS)
        path.unlink()


def test_member_checks(tmp_path, target):
    """A file missing from the .info, or differing from it, fails the load."""
    files = _files(target)
    good = build_container(files, "daily", 5, 3, int(time.time()))
    import gzip

    tar = bytearray(gzip.decompress(good[512:]))
    position = tar.find(b"Cvd.Test.Hash")
    tar[position:position + 3] = b"Cvx"
    bad = good[:512] + gzip.compress(bytes(tar))
    path = tmp_path / "x.cud"
    path.write_bytes(bad)
    with pytest.raises(SignatureError, match="checksum"):
        load_database([str(path)])
    assert clamscan([path], [target])[0] == 2


def test_sigtool_info_and_unpack_agree_with_debian(tmp_path, target):
    sigtool = need_program("sigtool")
    cud = tmp_path / "daily.cud"
    cud.write_bytes(_container(target, stime=1700000000))
    theirs = subprocess.run([sigtool, "--info", str(cud)], capture_output=True, text=True)
    ours = subprocess.run(["python3" if False else _python(), "-m", "clammail", "sigtool",
                           "--info", str(cud)], capture_output=True, text=True)
    assert ours.stdout == theirs.stdout and ours.returncode == theirs.returncode == 0
    for prog, out in ((sigtool, "theirs"), (None, "ours")):
        folder = tmp_path / out
        folder.mkdir()
        cmd = [prog, "--unpack", str(cud)] if prog else [
            _python(), "-m", "clammail", "sigtool", "--unpack", str(cud)]
        assert subprocess.run(cmd, cwd=folder, capture_output=True).returncode == 0
    listing = sorted(os.listdir(tmp_path / "theirs"))
    assert listing == sorted(os.listdir(tmp_path / "ours"))
    for name in listing:
        assert (tmp_path / "theirs" / name).read_bytes() == (tmp_path / "ours" / name).read_bytes()
    for args in (["--list-sigs=" + str(cud)],):
        theirs = subprocess.run([sigtool, *args], capture_output=True, text=True)
        ours = subprocess.run([_python(), "-m", "clammail", "sigtool", *args],
                              capture_output=True, text=True)
        assert ours.stdout == theirs.stdout


def test_sigtool_built_cud_loads(tmp_path, target):
    """A .cud made by Debian's sigtool --unsigned --build loads the same in both."""
    sigtool = need_program("sigtool")
    work = tmp_path / "build"
    work.mkdir()
    for name, data in _files(target).items():
        if name.endswith((".hdb", ".hsb")):
            (work / name).write_bytes(data)
    (work / "COPYING").write_text("test\n")
    proc = subprocess.run([sigtool, "--unsigned", "--build=daily.cud", "--cvd-version=9",
                           "--no-cdiff"], cwd=work, input="tester\n", capture_output=True,
                          text=True, timeout=60)
    assert (work / "daily.cud").exists(), proc.stderr
    theirs, ours = both([work / "daily.cud"], [target])
    assert ours[:2] == theirs[:2] and theirs[0] == 1
    assert ours[3] == theirs[3]
    info = subprocess.run([_python(), "-m", "clammail", "sigtool", "--info",
                           str(work / "daily.cud")], capture_output=True, text=True)
    debian = subprocess.run([sigtool, "--info", str(work / "daily.cud")], capture_output=True,
                            text=True)
    assert info.stdout == debian.stdout


def _python():
    import sys

    return sys.executable
