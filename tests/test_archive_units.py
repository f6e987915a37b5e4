"""Archive behaviour without an oracle: RAR (Debian's clamscan has no unrar),
clammail's extra formats, and the readers' own edge cases, in process.
"""

from __future__ import annotations

import zipfile

import archive_builders as B
import pytest
from conftest import TESTFILES

from clammail.engine import Engine, ScanOptions
from clammail.formats.filetypes import FileType, detect
from clammail.signatures.loader import load_database


def _engine(tmp_path, signatures: list[str], **options) -> Engine:
    db = tmp_path / "unit.hdb"
    db.write_text("".join(signatures))
    return Engine(load_database([str(db)]), ScanOptions.from_mapping(options))


def member(tag: str) -> bytes:
    return b"%s unit-test member line\n" % tag.encode() * 40


@pytest.mark.parametrize("build", [B.rar4_stored, B.rar5_stored])
def test_rar_members_are_scanned(tmp_path, build):
    data = member(build.__name__)
    engine = _engine(tmp_path, [B.hdb_line(data, "Rar.Member")])
    rar = build([("a.txt", member("other")), ("b.txt", data)])
    assert detect(rar) is FileType.RAR
    assert engine.scan_bytes(rar).detections == ["Rar.Member.UNOFFICIAL"]


def test_encrypted_rar(tmp_path):
    rar = B.rar4_stored([("secret.txt", member("secret"))], encrypted=True)
    quiet = _engine(tmp_path, [B.hdb_line(member("secret"), "Secret")])
    assert quiet.scan_bytes(rar).detections == []
    loud = _engine(tmp_path, [B.hdb_line(member("x"), "Never")], AlertEncryptedArchive=True)
    assert loud.scan_bytes(rar).detections == ["Heuristics.Encrypted.RAR"]


def test_rar_self_extractor(tmp_path):
    data = member("rar-sfx")
    engine = _engine(tmp_path, [B.hdb_line(data, "Sfx.Member")])
    sfx = (TESTFILES / "clam.exe").read_bytes() + B.rar4_stored([("in.txt", data)])
    assert engine.scan_bytes(sfx).detections == ["Sfx.Member.UNOFFICIAL"]


def test_extra_formats_only_when_asked(tmp_path):
    data = member("extra")
    sigs = [B.hdb_line(data, "Extra.Member")]
    samples = {
        "zstd": B.zstd(data), "lzma": B.lzma_alone(data), "ar": B.ar([("a.txt", data)]),
        "zip-lzma": B.zip_py([("a.txt", data)], zipfile.ZIP_LZMA),
    }
    plain = _engine(tmp_path, sigs)
    extra = _engine(tmp_path, sigs, ExtraArchiveFormats=True)
    for name, sample in samples.items():
        assert plain.scan_bytes(sample).detections == [], name
        assert extra.scan_bytes(sample).detections == ["Extra.Member.UNOFFICIAL"], name


def test_ooxml_and_tar_typing():
    docx = B.zip_py([("[Content_Types].xml", b"<T/>"), ("docProps/app.xml", b"<a/>"),
                     ("customXml/x.xml", b"<c/>"), ("word/document.xml", b"<w/>")])
    pptx = B.zip_py([("ppt/presentation.xml", b"<p/>")])
    odt = B.zip_py([("mimetype", b"application/vnd.oasis.opendocument.text"), ("content.xml", b"<o/>")])
    assert detect(docx) is FileType.OOXML_WORD  # found through the central directory
    assert detect(pptx) is FileType.OOXML_PPT
    assert detect(odt) is FileType.ZIP
    assert detect(B.tar_cli([("a.txt", b"x" * 100)], "v7")) is FileType.OLD_TAR
    broken = bytearray(B.tar_cli([("a.txt", b"x" * 100)], "v7"))
    broken[0] ^= 1  # the checksum no longer fits
    assert detect(bytes(broken)) is FileType.BINARY_DATA


def test_overlapping_entries_under_the_threshold_are_extracted(tmp_path):
    from clammail.formats.zip import find_central_directory
    from clammail.unpack import archive_zip

    data = member("dup")
    zipped = B.zip_py([("a.txt", data)], zipfile.ZIP_STORED)
    coff = find_central_directory(zipped)
    records = archive_zip.index_central_directory(zipped, coff, lambda: None)
    assert [r.name for r in records] == ["a.txt"]
    assert archive_zip.decompress(records[0], zipped, 10)[0] == data[:10]


def test_explode_rejects_garbage():
    from clammail.unpack.explode import ExplodeError, explode

    with pytest.raises(ExplodeError):
        explode(b"\xff" * 40, 0, 1000)
    with pytest.raises(ExplodeError):
        explode(b"", 4, 10)


def test_iso_without_descriptor_yields_nothing(tmp_path):
    from clammail.unpack import archive_iso

    assert archive_iso.find_descriptor(b"\0" * 70000) is None
    image = bytearray(B.iso([("a.txt", member("iso"))]))
    offset = archive_iso.find_descriptor(bytes(image))
    assert offset == 0x8000
    names = [entry.name for _tree, entry in archive_iso.iso_files(bytes(image), offset, lambda: None)]
    assert names == ["A.TXT"]
