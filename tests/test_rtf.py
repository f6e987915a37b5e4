"""RTF: embedded objects in \\objdata, clammail against clamscan."""

from __future__ import annotations

import hashlib

import pytest
from conftest import CLAM_TEST_FILE_SIG, TESTFILES, clamscan_results
from docbuild import build_ole2, clammail_scan, ole10native, rtf_with_object

PAYLOAD = b"MZ" + b"clammail-rtf-payload" + bytes(range(256)) * 2
HDB = f"{hashlib.md5(PAYLOAD).hexdigest()}:{len(PAYLOAD)}:Rtf.Payload"


@pytest.mark.oracle
def test_rtf_objects(tmp_path):
    ole = build_ole2([("Payload", PAYLOAD), ("WordDocument", b"\0" * 64)])
    package = ole10native(PAYLOAD)[4:]  # the OLE1 native data: the size prefix is implied
    files = {
        "package.rtf": rtf_with_object(package),
        "ole2.rtf": rtf_with_object(ole, "Word.Document.8"),
        "newline.rtf": rtf_with_object(package, space="\n"),  # "\objdata\n": not extracted
        "endless.rtf": b"{\\rtf1" + b"{" * 200000 + b"\\object{\\*\\objdata 0105",
        "truncated.rtf": rtf_with_object(package)[:300],
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    db = tmp_path / "s.hdb"
    db.write_text(HDB + "\n" + CLAM_TEST_FILE_SIG + "\n")
    paths.append(TESTFILES / "clam.exe.rtf")
    _, theirs, _ = clamscan_results([db], paths, allmatch=True)
    ours = clammail_scan([db], paths, allmatch=True)
    for path in paths:
        assert ours[str(path)] == theirs[str(path)], path.name
    assert theirs[str(tmp_path / "package.rtf")] == ["Rtf.Payload.UNOFFICIAL"]
    assert theirs[str(TESTFILES / "clam.exe.rtf")] == ["ClamAV-Test-File.UNOFFICIAL"]
