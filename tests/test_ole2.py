"""OLE2 documents: clammail against clamscan on generated Word files with macros and objects."""

from __future__ import annotations

import hashlib
import struct

import pytest
from conftest import CLAM_TEST_FILE_SIG, TESTFILES, clamscan_results, need_unit_data
from docbuild import (
    build_ole2,
    clammail_scan,
    mso_stream,
    ndb_line,
    ole10native,
    ovba_compress,
    word_document_with_macros,
)

import clammail.engine  # noqa: F401  (the engine first: clammail.unpack imports it back)
from clammail.unpack.ole2 import decompress_ovba, vba_normalize

PAYLOAD = b"MZ" + b"\x90" * 100 + b"clammail-ole2-payload" + bytes(range(256))
PAYLOAD_HDB = f"{hashlib.md5(PAYLOAD).hexdigest()}:{len(PAYLOAD)}:Payload.Inside"

SOURCE = ('Attribute VB_Name = "Module1"\r\nSub AutoOpen()\r\n    MsgBox "Hello  World"   \r\n'
          '    x = 1 + _\r\n 2\r\n    Shell "CMD.EXE /c calc"\r\nEnd Sub\r\n')


def _compare(tmp_path, files: dict[str, bytes], ndb: list[str], hdb: list[str],
             extra: tuple[str, ...] = (), options: dict | None = None, allmatch=True):
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(path)
    dbs = []
    if ndb:
        (tmp_path / "s.ndb").write_text("\n".join(ndb) + "\n")
        dbs.append(tmp_path / "s.ndb")
    if hdb:
        (tmp_path / "s.hdb").write_text("\n".join(hdb) + "\n")
        dbs.append(tmp_path / "s.hdb")
    _, theirs, err = clamscan_results(dbs, paths, *extra, allmatch=allmatch)
    assert set(theirs) == {str(p) for p in paths}, err
    ours = clammail_scan(dbs, paths, options, allmatch=allmatch)
    for path in paths:
        key = str(path)
        assert sorted(ours[key]) == sorted(theirs[key]), (
            path.name, sorted(ours[key]), sorted(theirs[key]))
    return theirs


@pytest.mark.oracle
def test_clamav_test_files_in_ole2(tmp_path):
    hdb = tmp_path / "t.hdb"
    hdb.write_text(CLAM_TEST_FILE_SIG + "\n")
    paths = [TESTFILES / "clam.ole.doc", TESTFILES / "clam.ppt"]
    _, theirs, _ = clamscan_results([hdb], paths)
    ours = clammail_scan([hdb], paths)
    for path in paths:
        assert theirs[str(path)] == ["ClamAV-Test-File.UNOFFICIAL"]
        assert ours[str(path)] == theirs[str(path)]


@pytest.mark.oracle
def test_macros_streams_and_objects(tmp_path):
    texts = {
        "src_raw": b"Sub AutoOpen()",
        # (not "sub autoopen()": libclamav also types the module stream as
        # UTF-16 text and its text normalizer rebuilds that; the engine's part)
        "joined": b"x = 1 + 2",
        "string_kept": b'"Hello  World"',
        "shell": b'shell "CMD.EXE /c calc"',  # lowercase outside strings only
        "rem": b"REM VBA project extracted",
        "modname": b"REM MODULENAME: Module1",
        "absent": b"never-in-any-document",
    }
    ndb = []
    for name, text in texts.items():
        for target in (0, 2):
            ndb.append(ndb_line(f"{name}_{target}", target, text))
    files = {
        "macro.doc": word_document_with_macros({"Module1": SOURCE}),
        "two_modules.doc": word_document_with_macros(
            {"Module1": SOURCE, "Other": 'Attribute VB_Name = "Other"\r\nSub X()\r\nEnd Sub\r\n'}),
        "ole10.doc": build_ole2([("WordDocument", b"\xec\xa5\xc1\x00" + b"\0" * 60),
                                 ("ObjectPool", [("_1", [("\x01Ole10Native",
                                                          ole10native(PAYLOAD))])])]),
        "plain.xls": build_ole2([("Workbook", b"\x09\x08\x10\x00" + b"\0" * 200),
                                 ("Payload", PAYLOAD)]),
        "mso.xls": build_ole2([("Workbook", b"\x09\x08\x10\x00" + b"\0" * 200),
                               ("MsoData", mso_stream(PAYLOAD))]),
        "big_stream.doc": build_ole2([("Data", PAYLOAD * 40), ("WordDocument", b"\0" * 64)]),
    }
    for extra in ((), ("--alert-macros=yes",)):
        options = {"AlertOLE2Macros": True} if extra else {}
        _compare(tmp_path, files, ndb, [PAYLOAD_HDB], extra, options)


@pytest.mark.oracle
def test_broken_and_hostile_ole2(tmp_path):
    good = build_ole2([("Payload", PAYLOAD * 20), ("Small", PAYLOAD)])
    # A FAT whose chains loop back on themselves: every data sector points to the first.
    looped = bytearray(good)
    fat = 512
    for k in range(3, 10):
        struct.pack_into("<I", looped, fat + k * 4, 3)
    # A directory entry whose sibling points back at itself.
    self_sibling = bytearray(good)
    dir_offset = 512 + 512 * 1
    struct.pack_into("<I", self_sibling, dir_offset + 128 + 0x48, 1)
    truncated = good[: len(good) // 2]
    files = {"looped.doc": bytes(looped), "self_sibling.doc": bytes(self_sibling),
             "truncated.doc": truncated, "header_only.doc": good[:512],
             "garbage.doc": good[:8] + b"\xff" * 600}
    # Verdicts only: how often libclamav repeats one pattern under ALLMATCH is the matcher's business.
    _compare(tmp_path, files, [ndb_line("pay", 0, b"clammail-ole2-payload")], [PAYLOAD_HDB],
             allmatch=False)
    _compare(tmp_path, files, [], [PAYLOAD_HDB], allmatch=True)


@pytest.mark.oracle
def test_encrypted_documents_alert_like_clamscan(tmp_path):
    folder = need_unit_data() / "other_scanfiles" / "ole2_encryption"
    paths = sorted(folder.iterdir())
    sig = tmp_path / "x.ndb"
    sig.write_text(ndb_line("nothing", 0, b"no-such-bytes-anywhere") + "\n")
    for extra, options in (((), {}), (("--alert-encrypted-doc",), {"AlertEncryptedDoc": True})):
        _, theirs, _ = clamscan_results([sig], paths, *extra)
        ours = clammail_scan([sig], paths, options)
        for path in paths:
            assert ours[str(path)] == theirs[str(path)], (path.name, extra)
    # ClamAV 1.4.6 has no verdict for encrypted Office files (Heuristics.Encrypted.OLE2
    # is newer): they all scan clean, with or without --alert-encrypted-doc.
    assert all(theirs[str(p)] == [] for p in paths)


def test_vba_decompression_and_normalization():
    text = bytes(range(32, 127)) * 30
    assert decompress_ovba(ovba_compress(text)) == text
    # A copy token: "abcabcabc" is "abc" then (offset 3, length 6).
    compressed = b"\x01" + struct.pack("<H", 0xB000 | (2 + 1 + 3 + 2 - 3)) + b"\x08abc" + struct.pack(
        "<H", (2 << 12) | 3)
    assert decompress_ovba(compressed) == b"abcabcabc"
    assert vba_normalize(b'If  X = "A  B" Then _\r\n  Go') == b'if x = "A  B" then go'
    assert decompress_ovba(b"\x00garbage") is None
