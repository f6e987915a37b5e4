"""OneNote sections (.one): the embedded files, against clamscan 1.4.6.

The generated sections have the MS-ONESTORE header and FileDataStoreObjects
but no file node lists, so ClamAV's onenote_parser crate cannot read them
and clamscan takes the fallback search that clammail implements (the first
test checks that in clamscan's debug output). Each member's MD5 is in an
.hdb: a member is reported only when it was extracted exactly.
"""

from __future__ import annotations

import struct
import subprocess

import archive_builders as B
import docbuild as D
import pytest
from conftest import need_program

from clammail.formats.filetypes import FileType, detect

pytestmark = pytest.mark.oracle


def member(tag: str, lines: int = 40) -> bytes:
    return b"".join(b"%s: line %04d of a file in a OneNote section\n" % (tag.encode(), i)
                    for i in range(lines))


def _one(*payloads: bytes, **kwargs) -> bytes:
    return D.onenote_section([D.file_data_store(p) for p in payloads], **kwargs)


def test_generated_sections_take_clamscans_fallback_path(tmp_path):
    path = tmp_path / "t.one"
    path.write_bytes(_one(member("fallback")))
    assert detect(path.read_bytes()) is FileType.ONENOTE
    db = tmp_path / "x.hdb"
    db.write_text(B.hdb_line(member("fallback"), "One.Fallback"))
    proc = subprocess.run([need_program("clamscan"), "--debug", "--no-summary", "-d", str(db),
                           str(path)], capture_output=True, text=True, timeout=120)
    assert "Recognized Microsoft OneNote Document" in proc.stderr
    assert "Unable to parse OneNote file with onenote_parser crate" in proc.stderr
    assert proc.returncode == 1 and "One.Fallback.UNOFFICIAL FOUND" in proc.stdout


def _cases() -> tuple[dict[str, bytes], list[str]]:
    files: dict[str, bytes] = {}
    sigs: list[str] = []

    def add(name: str, data: bytes, *members: bytes) -> None:
        files[name] = data
        sigs.extend(B.hdb_line(m, f"One.{name}.{i}") for i, m in enumerate(members))

    a, b = member("single"), member("single-2", 7)
    add("single.one", _one(a), a)
    add("two.one", _one(a + b"1", b), a + b"1", b)
    c = member("filler")
    add("filler.one", _one(c, filler=bytes(range(256)) * 3), c)
    # ClamAV reads the low 32 bits of the 64-bit length.
    d = member("high-length")
    add("highlen.one", D.onenote_section([D.file_data_store(d, length=(1 << 32) + len(d))]), d)
    # Data running past the end ends the search: what follows is not found.
    e, f = member("before-cut"), member("after-cut")
    cut = D.file_data_store(b"x" * 100, length=1 << 20)
    add("cut.one", D.onenote_section([D.file_data_store(e), cut, D.file_data_store(f)]), e, f)
    # An empty object, then a real one.
    g = member("after-empty")
    add("empty.one", _one(b"", g), g)
    # An object inside another's data is passed over with it.
    h_inner = member("inner")
    h_outer = b"outer data\n" * 20 + D.file_data_store(h_inner) + b"tail\n" * 20
    add("nested-object.one", _one(h_outer), h_outer, h_inner)
    # Archives in attachments are opened.
    i = member("zipped")
    zipped = B.zip_py([("in.txt", i)])
    add("zip-inside.one", _one(zipped), i, zipped)
    # No footer GUID, odd sizes: only the header and length count.
    j, k = member("nofooter", 3)[:77], member("nofooter-2", 5)
    add("nofooter.one", D.onenote_section([D.file_data_store(j, footer=False),
                                            D.file_data_store(k, footer=False)]), j, k)
    # Without the section magic the objects are not looked for.
    m = member("no-magic")
    add("nomagic.bin", b"\x00\x01binary" * 8 + D.file_data_store(m), m)
    # A PE file attached to a section.
    from conftest import TESTFILES

    exe = (TESTFILES / "clam.exe").read_bytes()
    add("exe.one", _one(member("exe-neighbour"), exe), exe)
    return files, sigs


@pytest.mark.parametrize("allmatch", [False, True])
def test_embedded_files_as_clamscan(tmp_path, allmatch):
    files, sigs = _cases()
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=allmatch)
    assert ours == theirs
    # The comparison is not empty: attachments are found.
    assert theirs["single.one"] and theirs["two.one"] and theirs["zip-inside.one"]


@pytest.mark.parametrize("flags", [
    ("--scan-onenote=no",), ("--max-scansize=8000",),  # the big file stops the section
    ("--max-scansize=8000", "--alert-exceeds-max=yes"), ("--max-scansize=13000",),
    ("--max-files=2",), ("--max-files=1", "--alert-exceeds-max=yes"), ("--max-recursion=1",),
])
def test_switches_and_limits(tmp_path, flags):
    big, small = member("big", 100), member("small", 10)  # 4600 and 480 bytes
    files = {"limits.one": _one(big, small)}  # 6208 bytes
    sigs = [B.hdb_line(big, "One.Big"), B.hdb_line(small, "One.Small")]
    theirs, ours = B.run_both(tmp_path, files, sigs, *flags, allmatch=True)
    assert ours == theirs


def test_length_field_is_read_from_its_place():
    from clammail.unpack.onenote import FILE_DATA_HEADER_SIZE

    obj = D.file_data_store(b"abc")
    assert struct.unpack_from("<I", obj, 16) == (3,)
    assert obj[FILE_DATA_HEADER_SIZE:FILE_DATA_HEADER_SIZE + 3] == b"abc"
