"""RAR 1.5 and RAR 2.0 compression (clammail.unpack.rar, rar_decode).

Debian's clamscan has no unrar, so it is no oracle for RAR content; these
tests check against known content instead. The archives are written by
tests/rar_builder.py, whose encoders follow unrar's decoding rules apart
from clammail's decoders; every member carries its CRC32 and is named in an
.hdb, so it is reported only when decoded exactly. The rules around them
(encryption, limits, solid archives) are upstream ClamAV's
cli_scanrar_file.
"""

from __future__ import annotations

import math
import random

import archive_builders as B
import pytest
import rar_builder as RB
from conftest import TESTFILES

from clammail.engine import Engine, ScanOptions
from clammail.formats.filetypes import FileType, detect
from clammail.signatures.loader import load_database
from clammail.unpack.rar_decode import OldRarDecoder

_RNG = random.Random(20)
_WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"\n", b" ", b"epsilon", b"0123456789"]


def text(tag: str, size: int) -> bytes:
    rng = random.Random(tag)
    return (tag.encode() + b"\n" + b"".join(rng.choice(_WORDS) for _ in range(size)))[:size]


def audio(tag: str, size: int) -> bytes:
    phase = len(tag)
    return bytes((int(90 * math.sin((i + phase) / 9.0)) + 128 + (i % 3)) & 0xFF
                 for i in range(size))


def _engine(tmp_path, members: list[bytes], **options) -> Engine:
    db = tmp_path / "rar.hdb"
    db.write_text("".join(B.hdb_line(m, f"Rar.M{i}") for i, m in enumerate(members)))
    return Engine(load_database([str(db)]), ScanOptions.from_mapping(options))


def _found(engine: Engine, data: bytes) -> list[str]:
    return engine.scan_bytes(data, allmatch=True).detections


# -- the decoders on their own -------------------------------------------------

SAMPLES = {
    "text": text("decoder-text", 60000),
    "random": _RNG.randbytes(5000),
    "mixed": text("m1", 20000) + _RNG.randbytes(3000) + text("m2", 20000),
    "far matches": text("f1", 4000) + _RNG.randbytes(0x3000) + text("f1", 4000),
    "zeros": bytes(80000),
    "tiny": b"abcabcabc",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rar20_lz(name):
    data = SAMPLES[name]
    packed = RB.pack20(data, block=16384)  # several blocks, tables as changes
    assert OldRarDecoder().unpack(packed, 20, len(data), solid=False) == data


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_rar20_audio(channels):
    data = audio("channels", 7000)
    packed = RB.pack20_audio(data, channels)
    assert OldRarDecoder().unpack(packed, 20, len(data), solid=False) == data


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_rar15_literals(name):
    data = SAMPLES[name][:30000]
    assert OldRarDecoder().unpack(RB.pack15(data), 15, len(data), solid=False) == data


def test_rar20_solid_files_go_on_from_the_previous_one():
    files = [text("s1", 6000), text("s2", 9000), _RNG.randbytes(700) + text("s1", 3000)]
    streams = RB.pack20_files(files, block=5000)
    decoder = OldRarDecoder()
    for index, (data, packed) in enumerate(zip(files, streams, strict=True)):
        assert decoder.unpack(packed, 20, len(data), solid=index > 0) == data
    # Without the first file's dictionary and tables the second is garbage.
    assert OldRarDecoder().unpack(streams[1], 20, len(files[1]), solid=False) != files[1]


def test_damaged_streams_end_bounded():
    data = text("damaged", 20000)
    packed = bytearray(RB.pack20(data))
    rng = random.Random(5)
    for _ in range(40):
        broken = bytearray(packed)
        for _ in range(5):
            broken[rng.randrange(len(broken))] ^= 1 << rng.randrange(8)
        for version in (15, 20):
            out = OldRarDecoder().unpack(bytes(broken[:rng.randrange(1, len(broken))]),
                                         version, len(data), solid=False)
            assert len(out) <= len(data)


# -- archives through the engine -----------------------------------------------


def test_every_old_method_is_scanned(tmp_path):
    members = {
        "v20.txt": (text("arch-v20", 30000), 20, RB.pack20),
        "v26.txt": (text("arch-v26", 9000), 26, RB.pack20),
        "v15.txt": (text("arch-v15", 9000), 15, RB.pack15),
        "audio.wav": (audio("arch-audio", 9000), 20, lambda d: RB.pack20_audio(d, 2)),
    }
    engine = _engine(tmp_path, [m[0] for m in members.values()])
    for index, (name, (data, version, pack)) in enumerate(members.items()):
        archive = RB.rar4([(name, data, pack(data))], version=version)
        assert detect(archive) is FileType.RAR
        assert _found(engine, archive) == [f"Rar.M{index}.UNOFFICIAL"], name


def test_stored_and_packed_members_together(tmp_path):
    plain, packed = text("stored-one", 3000), text("packed-one", 3000)
    archive = RB.rar4([("a.txt", plain, plain), ("b.txt", packed, RB.pack20(packed))])
    engine = _engine(tmp_path, [plain, packed])
    assert _found(engine, archive) == ["Rar.M0.UNOFFICIAL", "Rar.M1.UNOFFICIAL"]


def test_solid_archive(tmp_path):
    files = [text("solid-a", 5000), text("solid-b", 8000), text("solid-c", 4000)]
    streams = RB.pack20_files(files, block=6000)
    archive = RB.rar4([(f"{i}.txt", f, s) for i, (f, s) in enumerate(zip(files, streams, strict=True))],
                      solid=True)
    engine = _engine(tmp_path, files)
    assert _found(engine, archive) == [f"Rar.M{i}.UNOFFICIAL" for i in range(3)]
    # A first file over MaxFileSize is skipped, yet decoded for the ones after it.
    small = _engine(tmp_path, files, MaxFileSize=7000, AlertExceedsMax=True)
    assert _found(small, archive) == ["Rar.M0.UNOFFICIAL", "Heuristics.Limits.Exceeded.MaxFileSize",
                                      "Rar.M2.UNOFFICIAL"]


def test_crc_mismatch_is_not_scanned(tmp_path):
    data = text("crc", 4000)
    archive = bytearray(RB.rar4([("a.txt", data, RB.pack20(data))]))
    crc_at = archive.index(b"a.txt") - 32 + 7 + 4 + 4 + 1
    archive[crc_at] ^= 0xFF
    assert _found(_engine(tmp_path, [data]), bytes(archive)) == []


def test_limits(tmp_path):
    big, small = text("limit-big", 20000), text("limit-small", 2000)
    archive = RB.rar4([("big.txt", big, RB.pack20(big)), ("small.txt", small, RB.pack20(small))])
    quiet = _engine(tmp_path, [big, small], MaxFileSize=10000)
    assert _found(quiet, archive) == ["Rar.M1.UNOFFICIAL"]
    loud = _engine(tmp_path, [big, small], MaxScanSize=15000, AlertExceedsMax=True)
    assert _found(loud, archive) == ["Heuristics.Limits.Exceeded.MaxScanSize", "Rar.M1.UNOFFICIAL"]
    files = _engine(tmp_path, [big, small], MaxFiles=2, AlertExceedsMax=True)
    assert _found(files, archive) == ["Rar.M0.UNOFFICIAL", "Heuristics.Limits.Exceeded.MaxFiles"]


def test_encryption(tmp_path):
    data = text("secret", 3000)
    sigs = [data]
    locked = RB.rar4([("s.txt", data, RB.pack20(data))], encrypted=True)
    hidden = RB.rar4([("s.txt", data, RB.pack20(data))], encrypted_headers=True)
    for archive in (locked, hidden):
        assert _found(_engine(tmp_path, sigs), archive) == []
        alerting = _engine(tmp_path, sigs, AlertEncryptedArchive=True)
        assert _found(alerting, archive) == ["Heuristics.Encrypted.RAR"]
        assert _found(_engine(tmp_path, sigs, AlertEncrypted=True), archive) == [
            "Heuristics.Encrypted.RAR"]


def test_archive_comment_is_scanned(tmp_path):
    note = text("comment-text", 600)
    member = text("comment-member", 2000)
    engine = _engine(tmp_path, [note, member])
    for packed_note, version in ((RB.pack15(note), 15), (note, 15), (RB.pack20(note), 20)):
        archive = RB.rar4([("m.txt", member, RB.pack20(member))],
                          comment=(note, packed_note, version))
        assert _found(engine, archive) == ["Rar.M0.UNOFFICIAL", "Rar.M1.UNOFFICIAL"]


def test_directories_are_skipped(tmp_path):
    data = text("after-dir", 2000)
    archive = bytearray(RB.rar4([("f.txt", data, RB.pack20(data))]))
    at = len(RB.MARK) + 13  # the first file header, after the main header
    archive[at:at] = RB.directory_member("folder")
    assert _found(_engine(tmp_path, [data]), bytes(archive)) == ["Rar.M0.UNOFFICIAL"]


def test_self_extractor_with_old_compression(tmp_path):
    data = text("sfx-old", 5000)
    sfx = (TESTFILES / "clam.exe").read_bytes() + RB.rar4([("in.txt", data, RB.pack20(data))])
    assert _found(_engine(tmp_path, [data]), sfx) == ["Rar.M0.UNOFFICIAL"]


def test_libarchive_cannot_decode_these(tmp_path):
    """Why the own decoder exists: libarchive's RAR reader fails on RAR 2.0 data."""
    from clammail.unpack.archive_lib import ArchiveBroken, ArchiveReader

    data = text("libarchive", 5000)
    archive = RB.rar4([("a.txt", data, RB.pack20(data))])
    got = b""
    try:
        with ArchiveReader(archive, ("rar",), filters=False) as reader:
            for _entry in reader.entries():
                got += reader.read(len(data))[0]
    except ArchiveBroken:
        pass
    assert got != data
