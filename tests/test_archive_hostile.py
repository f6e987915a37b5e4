"""Hostile archives: bombs, truncations, garbage behind a magic, huge entry counts.

Each must give a bounded, clamscan-like answer and never a crash: where
clamscan has an answer the two are compared, elsewhere the result is
checked directly.
"""

from __future__ import annotations

import io
import lzma
import os
import random
import resource
import struct
import zipfile
import zlib

import archive_builders as B
import pytest
from conftest import clammail_results

pytestmark = pytest.mark.oracle

MB = 1024 * 1024


def deflate_zeros(total: int, chunk: int = 16 * MB) -> bytes:
    """A raw deflate stream of `total` zero bytes, built from one compressed chunk.

    After a full flush the compressor refers to nothing before it, so the
    flushed chunk can be repeated: 10 GB cost one 16 MB compression.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(b"\0" * chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(total, chunk)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    return block * count + tail.compress(b"\0" * rest) + tail.flush()


def zip_raw(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip from (name, compressed data, method, uncompressed size, crc) entries."""
    body, central = bytearray(), bytearray()
    for name, data, method, usize, crc in entries:
        raw = name.encode()
        offset = len(body)
        body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc,
                            len(data), usize, len(raw), 0) + raw + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc,
                               len(data), usize, len(raw), 0, 0, 0, 0, 0, offset) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries) & 0xFFFF,
                      len(entries) & 0xFFFF, len(central), len(body), 0)
    return bytes(body + central + end)


def test_flat_bomb_costs_at_most_max_filesize(tmp_path):
    """One 10 GB entry: cut at MaxFileSize like ClamAV, memory bounded."""
    bomb = zip_raw([("zeros.bin", deflate_zeros(10 * 1024 * MB), 8, 0xFFFFFFFF, 0)])
    assert len(bomb) < 20 * MB
    # What ClamAV scans: MaxFileSize in whole 8 KiB buffers (the zip itself
    # is 10 MB and must fit under MaxFileSize too).
    cut = b"\0" * (12 * MB)
    sigs = [B.hdb_line(cut, "Bomb.Cut")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    theirs, ours = B.run_both(tmp_path, {"flat.zip": bomb}, sigs, "--max-filesize=12M")
    assert ours == theirs == {"flat.zip": ["Bomb.Cut.UNOFFICIAL"]}
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # clamscan or clammail: neither may come near the 10 GB.
    assert max(before, peak_kib) < 1024 * 1024


def test_overlapping_entries_bomb(tmp_path):
    """Entries sharing one kernel (a non-recursive zip bomb): Heuristics.Zip.OverlappingFiles."""
    kernel = deflate_zeros(50 * MB)
    files = {}
    for count in (3, 6, 7, 30):
        body, central = bytearray(), bytearray()
        headers = []
        for i in range(count):
            headers.append(len(body))
            body += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0, 0, 0, 2, 0) + b"f%d" % (i % 10)
        body += kernel
        for i, offset in enumerate(headers):
            csize = len(body) - offset - 32
            struct.pack_into("<II", body, offset + 18, csize, 50 * MB)
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, 0, csize,
                                   50 * MB, 2, 0, 0, 0, 0, 0, offset) + b"f%d" % (i % 10)
        end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(body), 0)
        files[f"overlap{count}.zip"] = bytes(body + central + end)
    for flags in ((), ("--heuristic-alerts=no",)):
        theirs, ours = B.run_both(tmp_path, files, [], "--max-filesize=1M", *flags)
        assert ours == theirs, flags
    assert theirs["overlap30.zip"] == []  # heuristics off: nothing, and no extraction
    theirs, _ = B.run_both(tmp_path, files, [], "--max-filesize=1M")
    assert theirs["overlap30.zip"] == ["Heuristics.Zip.OverlappingFiles"]
    assert theirs["overlap3.zip"] == []


def test_nested_bomb(tmp_path):
    """42.zip in small: 4 levels of 8 zips around 16 MB of zeros each (64 GB in all)."""
    leaf = zip_raw([("zeros.bin", deflate_zeros(16 * MB), 8, 16 * MB, zlib.crc32(b"\0" * 16 * MB))])
    data = leaf
    for level in range(4):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for i in range(8):
                zf.writestr(f"l{level}-{i}.zip", data)
        data = buf.getvalue()
    files = {"nested.zip": data}
    for flags in (("--max-scansize=40M", "--max-filesize=20M"),
                  ("--max-scansize=40M", "--max-filesize=20M", "--alert-exceeds-max=yes"),
                  ("--max-files=50", "--max-filesize=2M", "--alert-exceeds-max=yes")):
        theirs, ours = B.run_both(tmp_path, files, [], *flags)
        assert ours == theirs, flags


def test_many_entries(tmp_path):
    """100 000 entries: MaxFiles stops the scan, and the heuristic names it."""
    entries = [(f"{i:06d}", b"%06d" % i, 0, 6, zlib.crc32(b"%06d" % i)) for i in range(100_000)]
    files = {"many.zip": zip_raw(entries)}
    sigs = [B.hdb_line(b"%06d" % 5, "Entry.Five"), B.hdb_line(b"%06d" % 99_999, "Entry.Last")]
    theirs, ours = B.run_both(tmp_path, files, sigs, "--alert-exceeds-max=yes", allmatch=True)
    assert ours == theirs
    assert theirs["many.zip"] == ["Entry.Five.UNOFFICIAL", "Heuristics.Limits.Exceeded.MaxFiles"]


def test_deep_nesting(tmp_path):
    data = b"deep nesting leaf\n" * 10
    for level in range(40):
        data = B.zip_py([(f"l{level}", data)]) if level % 2 else B.gz(data)
    files = {"deep.gz": data}
    for flags in ((), ("--alert-exceeds-max=yes",)):
        theirs, ours = B.run_both(tmp_path, files, [B.hdb_line(b"deep nesting leaf\n" * 10, "Leaf")], *flags)
        assert ours == theirs, flags


def _formats() -> dict[str, bytes]:
    members = [("a.txt", b"truncation test member one\n" * 200), ("b.txt", b"member two\n" * 300)]
    return {
        "zip": B.zip_py(members), "bz.zip": B.zip_py(members, zipfile.ZIP_BZIP2),
        "tar": B.tar_py(members), "tgz": B.tar_py(members, "gnu", "gz"),
        "gz": B.gz(members[0][1] * 10), "bz2": B.bz(members[0][1] * 10), "xz": B.xz(members[0][1] * 10),
        "cpio": B.cpio_bin(members), "7z": B.sevenzip(members), "cab": B.cab(members, mszip=True),
        "iso": B.iso(members), "lzh": B.lha(members), "xar": B.bsdtar(members, "xar"),
        "rar4": B.rar4_stored(members), "rar5": B.rar5_stored(members),
    }


def test_truncated_archives(tmp_path):
    """Every format cut short at several points: clamscan's verdicts, no error, no crash."""
    files, sigs = {}, []
    for kind, data in _formats().items():
        for fraction in (0.1, 0.5, 0.9, 0.99):
            files[f"cut{int(fraction * 100):02d}-{kind}.bin"] = data[:max(1, int(len(data) * fraction))]
    sigs += [B.hdb_line(b"truncation test member one\n" * 200, "Member.One"),
             B.hdb_line(b"member two\n" * 300, "Member.Two")]
    theirs, ours = B.run_both(tmp_path, files, sigs)
    assert all(not any(name.startswith("ERROR") for name in names) for names in ours.values())
    # RAR is not read by Debian's clamscan (no unrar): compare the others.
    assert {k: v for k, v in ours.items() if "rar" not in k} == {
        k: v for k, v in theirs.items() if "rar" not in k}


def test_damaged_xz(tmp_path):
    """xz cut short or with 1-3 bytes changed: single and multi-block streams,
    every check type, two streams. ClamAV's decoder scans what it decoded when
    the damage comes after a block's data (check, index, next header)."""
    one, two = b"xz damage test one\n" * 400, b"xz damage test two\n" * 300
    streams = {
        "crc64": lzma.compress(one), "crc32": lzma.compress(one, check=lzma.CHECK_CRC32),
        "sha256": lzma.compress(one, check=lzma.CHECK_SHA256),
        "nocheck": lzma.compress(one, check=lzma.CHECK_NONE),
        "twostreams": lzma.compress(one) + lzma.compress(two),
        "blocks": B.xz_blocks(one + two, 3000),
    }
    rnd = random.Random(11)
    files = {}
    for kind, data in streams.items():
        for number in range(40):
            damaged = bytearray(data)
            for _ in range(rnd.randint(1, 3)):
                damaged[rnd.randrange(len(damaged))] = rnd.randrange(256)
            files[f"{kind}-{number:02d}.xz"] = bytes(damaged)
        for size in range(1, len(data), max(1, len(data) // 30)):
            files[f"{kind}-cut{size:05d}.xz"] = data[:size]
    sigs = [B.hdb_line(one, "One"), B.hdb_line(two, "Two"), B.hdb_line(one + two, "OneTwo")]
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=True, clamscan_cache=False)
    assert {k: v for k, v in ours.items() if k in theirs} == theirs
    assert sum(1 for names in theirs.values() if names) > 40


def test_garbage_behind_magic(tmp_path):
    """Random bytes after every archive magic: OK, no error, no crash."""
    magics = [b"PK\x03\x04", b"PK\x05\x06", b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00",
              b"7z\xbc\xaf\x27\x1c", b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\x00", b"MSCF\0\0\0\0",
              b"070701", b"070707", b"\xc7\x71", b"xar!\x00\x1c", b"!<arch>\n", b"\x28\xb5\x2f\xfd",
              b"\x5d\x00\x00\x80\x00"]
    rng = random.Random(1)
    files = {}
    for i, magic in enumerate(magics):
        for size in (0, 100, 20000):
            files[f"g{i:02d}-{size}.bin"] = magic + bytes(rng.getrandbits(8) for _ in range(size))
    iso = bytearray(rng.getrandbits(8) for _ in range(40000))
    iso[0x8000:0x8006] = b"\x01CD001"
    iso[0x8800:0x8806] = b"\xffCD001"
    files["giso.bin"] = bytes(iso)
    tar = bytearray(rng.getrandbits(8) for _ in range(3000))
    tar[257:262] = b"ustar"
    files["gtar.bin"] = bytes(tar)
    theirs, ours = B.run_both(tmp_path, files, [])
    assert ours == theirs
    assert all(names == [] for names in ours.values())


def test_extra_formats_are_bounded(tmp_path):
    """zstd and lzma bombs with ExtraArchiveFormats: cut by MaxFileSize, not by memory."""
    if not B.have_tool("zstd"):
        pytest.fail("zstd is missing")
    zeros = b"\0" * (64 * MB)
    for name, data in (("bomb.zst", B.zstd(zeros)), ("bomb.lzma", B.lzma_alone(zeros))):
        (tmp_path / name).write_bytes(data)
    db = tmp_path / "none.hdb"
    db.write_text(B.hdb_line(b"x", "Never"))
    paths = [tmp_path / "bomb.zst", tmp_path / "bomb.lzma"]
    _, results, err = clammail_results([db], paths, "--extra-archive-formats", "--max-filesize=4M",
                                       "--alert-exceeds-max=yes")
    assert "Traceback" not in err
    assert {os.path.basename(p): v for p, v in results.items()} == {
        "bomb.zst": ["Heuristics.Limits.Exceeded.MaxFileSize"],
        "bomb.lzma": ["Heuristics.Limits.Exceeded.MaxFileSize"],
    }
