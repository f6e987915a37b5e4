"""xar against clamscan: every encoding, cut short, corrupted, broken TOCs, limits.

The archives come from `archive_builders.xar`, which lays them out as
libarchive does but the same every run (bsdtar writes inode numbers and
times into the TOC, which moves every byte after it), so each cut and each
flipped byte hits the same place in every run.
"""

from __future__ import annotations

import random
import struct
import zlib

import archive_builders as B
import pytest

pytestmark = pytest.mark.oracle

ONE = b"xar test member one\n" * 300
TWO = random.Random(2).randbytes(2000) + b"xar test member two\n" * 200
THREE = b"xar test member three, inside a gzip\n" * 50
MEMBERS = [("a.txt", ONE), ("b.bin", TWO), ("c.gz", B.gz(THREE))]
SIGNATURES = [B.hdb_line(ONE, "Member.One"), B.hdb_line(TWO, "Member.Two"),
              B.hdb_line(THREE, "Member.Three")]


def _compare(tmp_path, files, *flags):
    # Every file holds the same members: clamscan's clean cache must not
    # carry an object from one file to the next.
    theirs, ours = B.run_both(tmp_path, files, SIGNATURES, *flags, allmatch=True, clamscan_cache=False)
    assert all(not any(name.startswith("ERROR") for name in names) for names in ours.values())
    # clamscan does not list empty files: compare the others.
    assert {k: v for k, v in ours.items() if k in theirs} == theirs
    return theirs


def test_every_encoding(tmp_path):
    files = {f"{encoding}.xar": B.xar(MEMBERS, encoding) for encoding in B.XAR_ENCODINGS}
    files["bsdtar.xar"] = B.bsdtar(MEMBERS, "xar")
    theirs = _compare(tmp_path, files)
    assert set(theirs["gzip.xar"]) == {"Member.One.UNOFFICIAL", "Member.Two.UNOFFICIAL",
                                       "Member.Three.UNOFFICIAL"}


def test_cut_short(tmp_path):
    """Cut at every 9th byte: members cut inside their stream or its checksum."""
    files = {}
    for encoding in B.XAR_ENCODINGS:
        data = B.xar(MEMBERS, encoding)
        for size in range(1, len(data), 9):
            files[f"{encoding}-{size:05d}.xar"] = data[:size]
    theirs = _compare(tmp_path, files)
    assert any(theirs.values())


@pytest.mark.parametrize("encoding", ["none", "gzip", "bzip2", "lzma", "xz"])
def test_flipped_bytes(tmp_path, encoding):
    """1 to 4 bytes changed anywhere: in the TOC, its stream, the members' streams."""
    data = B.xar(MEMBERS, encoding)
    rnd = random.Random(encoding)
    files = {}
    for number in range(80):
        damaged = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            damaged[rnd.randrange(len(damaged))] = rnd.randrange(256)
        files[f"{encoding}-flip{number:02d}.xar"] = bytes(damaged)
    _compare(tmp_path, files)


def _with_toc(toc: bytes, heap: bytes, declared: int | None = None) -> bytes:
    packed = zlib.compress(toc)
    declared = len(toc) if declared is None else declared
    return b"xar!" + struct.pack(">HHQQI", 28, 1, len(packed), declared, 1) + packed + heap


def _extent(offset, length, size, style="application/octet-stream", element="data"):
    return (f"<{element}><length>{length}</length><offset>{offset}</offset><size>{size}</size>"
            f'<encoding style="{style}"/></{element}>')


def test_broken_tables_of_contents(tmp_path):
    heap = b"\0" * 20 + ONE + zlib.compress(TWO)
    gz = "application/x-gzip"
    good = [_extent(20, len(ONE), len(ONE)), _extent(20 + len(ONE), len(heap) - 20 - len(ONE), len(TWO), gz)]

    def toc(*extents, before="", after=""):
        return (f'<?xml version="1.0"?><xar>{before}<toc><file id="1">' + "".join(extents)
                + f"</file>{after}</toc></xar>").encode()

    data = B.xar(MEMBERS)
    header = struct.unpack(">HHQQI", data[4:28])
    files = {
        "declared-short.xar": _with_toc(toc(*good), heap, declared=40),
        "declared-long.xar": _with_toc(toc(*good), heap, declared=100_000),
        "compressed-short.xar": data[:8] + struct.pack(">Q", header[2] - 3) + data[16:],
        "compressed-long.xar": data[:8] + struct.pack(">Q", header[2] + 3) + data[16:],
        "toc-outside.xar": data[:8] + struct.pack(">Q", len(data)) + data[16:],
        "header-size-big.xar": data[:4] + struct.pack(">H", 64) + data[6:],
        "not-xml.xar": _with_toc(b"just text, no markup " * 20, heap),
        "unclosed.xar": _with_toc(toc(*good)[:-30], heap),
        "no-toc-element.xar": _with_toc(toc(*good).replace(b"<toc>", b"<tic>").replace(b"</toc>", b"</tic>"), heap),
        "no-size-first.xar": _with_toc(toc(_extent(20, len(ONE), len(ONE)).replace("<size>", "<sise>")
                                           .replace("</size>", "</sise>"), good[1]), heap),
        "empty-data-first.xar": _with_toc(toc("<data></data>", *good), heap),
        "outside-first.xar": _with_toc(toc(_extent(10 ** 6, 5, 5), *good), heap),
        "outside-gzip.xar": _with_toc(toc(_extent(10 ** 6, 5, 5, gz), *good), heap),
        "negative-offset.xar": _with_toc(toc(_extent(-5, 5, 5), *good), heap),
        "number-junk.xar": _with_toc(toc(_extent(" 20x", len(ONE), len(ONE)), good[1]), heap),
        "bad-gzip-first.xar": _with_toc(toc(_extent(20, len(ONE), len(ONE), gz), good[1]), heap),
        "extended-attribute.xar": _with_toc(toc(_extent(20, len(ONE), len(ONE), element="ea")), heap),
        "nested.xar": _with_toc(toc(f'<file id="2">{good[0]}<file id="3">{good[1]}</file></file>'), heap),
        "before-toc.xar": _with_toc(toc(good[1], before=good[0]), heap),
        "after-xar.xar": _with_toc(toc(good[0]) + good[1].encode(), heap),
        "entities.xar": _with_toc(b'<?xml version="1.0"?><!DOCTYPE xar [<!ENTITY a "aaaa">]>'
                                  + toc(*good)[len(b'<?xml version="1.0"?>'):], heap),
    }
    theirs = _compare(tmp_path, files)
    assert set(theirs["declared-long.xar"]) == {"Member.One.UNOFFICIAL", "Member.Two.UNOFFICIAL"}


@pytest.mark.parametrize("encoding", ["none", "gzip", "bzip2"])
def test_limits(tmp_path, encoding):
    """A member over MaxFileSize: raw ones are cut to it, decompressed ones end the archive."""
    big = b"a xar member bigger than the limit\n" * 4000
    members = [("a.txt", ONE), ("big.txt", big), ("b.bin", TWO)]
    files = {f"{encoding}.xar": B.xar(members, encoding)}
    for flags in (("--max-filesize=50K",), ("--max-filesize=50K", "--alert-exceeds-max=yes"),
                  ("--max-scansize=60K", "--alert-exceeds-max=yes")):
        _compare(tmp_path, files, *flags)
