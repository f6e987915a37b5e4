"""Scanning mapped files: the same answers as from bytes, and bounded resident memory."""

from __future__ import annotations

import hashlib
import mmap
import random
import re
import subprocess
import sys

import pytest

from clammail import mapped
from clammail.engine.match import BodyMatcher, available_backends
from clammail.signatures.bodysig import parse_body_pattern


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of a few pages, so that a small file crosses many seams."""
    monkeypatch.setattr(mapped, "PIECE", 3 * mmap.PAGESIZE)
    monkeypatch.setattr(mapped, "SEARCH_OVERLAP", 64)


def mapping_of(path):
    fh = open(path, "rb")
    return fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def test_pieces_cover_with_overlap():
    assert list(mapped.pieces(0, 10)) == []
    assert list(mapped.pieces(25, 10, 3)) == [(0, 13), (10, 23), (20, 25)]


def test_search_and_finditer_agree_with_re(tmp_path, small_pieces):
    rng = random.Random(3)
    data = bytearray(rng.randbytes(20 * mmap.PAGESIZE))
    for at in (0, 3 * mmap.PAGESIZE - 2, 7000, 3 * mmap.PAGESIZE * 4 - 1, len(data) - 4):
        data[at:at + 4] = b"PK\x03\x04"
    path = tmp_path / "f"
    path.write_bytes(data)
    pattern = re.compile(re.escape(b"PK\x03\x04"))
    arj = re.compile(rb"\x60\xea.{7}[\x00-\x02]\x02", re.DOTALL)
    fh, mapping = mapping_of(path)
    with fh, mapping:
        for regex in (pattern, arj):
            for start in (0, 8, 7001):
                assert [m.span() for m in mapped.finditer(regex, mapping, start)] == [
                    m.span() for m in regex.finditer(bytes(data), start)]
            for pos in (0, 1, 9000, len(data) - 3):
                expected = regex.search(bytes(data), pos)
                found = mapped.search(regex, mapping, pos)
                assert (found and found.span()) == (expected and expected.span())


@pytest.mark.parametrize("backend", available_backends())
def test_matcher_on_a_mapping_finds_what_it_finds_in_bytes(tmp_path, small_pieces, monkeypatch,
                                                           backend):
    """Literals on the seams of the pieces, dense literals, case-insensitive ones."""
    from clammail.engine.match import backends

    monkeypatch.setattr(backends, "LITERAL_CAP", 50)
    monkeypatch.setattr(backends.AhoCorasickBackend, "CHUNK", 2 * mmap.PAGESIZE)
    rng = random.Random(9)
    data = bytearray(rng.randbytes(40 * mmap.PAGESIZE))
    marks = [bytes.fromhex(h) for h in ("a1b2c3d4", "c0c1c2c3c4", "0102030405")]
    for n in range(200):
        at = rng.randrange(len(data) - 8) if n % 3 else (n // 3 + 1) * 3 * mmap.PAGESIZE - 3
        data[at:at + 5] = rng.choice(marks) + b"\x00"
    data[5000:5010] = b"HeLLo WoRl"
    seam = 6 * mmap.PAGESIZE - 5  # a two-part match across a seam
    data[seam:seam + 11] = bytes.fromhex("a1b2c3d4") + b"\x00" * 5 + bytes.fromhex("c0c1")
    path = tmp_path / "f"
    path.write_bytes(data)
    patterns = [parse_body_pattern(h) for h in (
        "a1b2c3d4", "c0c1??c3c4", "0102*0405", "a1b2c3d4{2-6}c0c1")]
    patterns.append(parse_body_pattern("68656c6c6f20776f726c", nocase=True))
    matcher = BodyMatcher(patterns, backend=backend)
    expected = matcher.scan(bytes(data), 0, None)
    fh, mapping = mapping_of(path)
    with fh, mapping:
        assert matcher.scan(mapping, 0, None) == expected
    assert sorted(expected) == [0, 1, 2, 3, 4]


def test_digest_of_a_mapping_is_the_file_hash(tmp_path, small_pieces):
    from clammail.engine.objectinfo import ObjectInfo
    from clammail.engine.scanner import _digest
    from clammail.formats.filetypes import FileType

    data = random.Random(1).randbytes(10 * mmap.PAGESIZE + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    fh, mapping = mapping_of(path)
    with fh, mapping:
        info = ObjectInfo(mapping, FileType.BINARY_DATA)
        for algo in ("md5", "sha1", "sha256"):
            assert _digest(info, algo) == hashlib.new(algo, data).digest()


_PEAK_SCRIPT = r"""
import sys
from clammail.engine import Engine
from clammail.signatures.loader import load_database

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024

engine = Engine(load_database([sys.argv[1]]), matcher_backend=sys.argv[3])
engine.scan_bytes(b"warm up: every module imported " * 100)
before = hwm()
result = engine.scan_file(sys.argv[2])
print(before, hwm(), result.detections, result.error)
"""


@pytest.mark.parametrize("backend", available_backends())
def test_a_big_file_is_not_resident_all_at_once(tmp_path, backend):
    """Scanning a 96 MB file raises the scanner's peak RSS by far less than 96 MB: the
    passes over it (hash, match, embedded-archive search) give pages back as they go."""
    size = 96 << 20
    path = tmp_path / "big.bin"
    rng = random.Random(5)
    with open(path, "wb") as fh:
        block = rng.randbytes(1 << 20)
        for n in range(size >> 20):
            fh.write(block[n:] + block[:n])
    db = tmp_path / "x.ndb"
    db.write_text("Big.Test:0:*:a1b2c3d4e5f6a7b8\n")
    proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(db), str(path), backend],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    before, after, detections, error = proc.stdout.split(maxsplit=3)
    assert detections.startswith("[]") and error.strip() == "None"
    growth = int(after) - int(before)
    print(f"{backend}: peak RSS {before} -> {after} MB")
    assert growth < 48, f"peak RSS grew by {growth} MB while scanning a 96 MB file"
