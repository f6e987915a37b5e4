"""Typing that needs a look inside an archive: OOXML documents and old tar files.

Called from `clammail.engine.filetypes.detect`, after the magic table:

- A zip is an OOXML document (CL_TYPE_OOXML_WORD / _PPT / _XL / _HWP) when
  one of its first three local headers names "word/", "ppt/", "xl/" or
  "Contents/content.hpf"; or when one of them names another file typical
  of such documents ("[Content_Types].xml", "docProps/", "_rels/.rels",
  "mimetype", ...) and the central directory lists one of those four.
  That is ClamAV 1.4.6's cli_filetype2 and cli_ooxml_filetype. ODF files
  (first entry "mimetype") stay CL_TYPE_ZIP, as in ClamAV.
- Binary data whose first 512 bytes are a tar header with a valid checksum
  is a tar file (CL_TYPE_OLD_TAR, or CL_TYPE_POSIX_TAR with the GNU magic),
  which catches the tar formats without "ustar" at offset 257 (ClamAV's
  is_tar, from file(1)).
"""

from __future__ import annotations

import struct

from clammail.engine.filetypes import FileType

_LOCAL = b"PK\x03\x04"
_LOCAL_SIZE = 30
_NAME_WINDOW = 22  # the longest name compared
_DOCUMENT_ROOTS = (
    (b"xl/", FileType.OOXML_XL),
    (b"ppt/", FileType.OOXML_PPT),
    (b"word/", FileType.OOXML_WORD),
    (b"Contents/content.hpf", FileType.OOXML_HWP),
)
_LIKELY = (
    b"BinData", b"mimetype", b"Contents", b"docProps/", b"customXml/", b"version.xml",
    b"settings.xml", b"_.rels/.rels", b"[ContentTypes].xml", b"[Content_Types].xml",
    b"Preview/PrvText.txt", b"META-INF/container.xml",
)
# ClamAV looks at most at 32 local header magics while typing.
_MAX_MAGICS = 32
_HEADERS_LOOKED_AT = 3


def zip_document_type(data) -> FileType | None:
    """The OOXML type of a zip, or None when it is a plain zip."""
    likely = False
    looked_at = 0
    pos = 0
    for _ in range(_MAX_MAGICS):
        pos = _find(data, _LOCAL, pos)
        if pos < 0:
            break
        name_at = pos + _LOCAL_SIZE
        pos += 1
        if len(data) - name_at <= _NAME_WINDOW:
            break
        name = bytes(data[name_at:name_at + _NAME_WINDOW])
        for prefix, ftype in _DOCUMENT_ROOTS:
            if name.startswith(prefix):
                return ftype
        likely = likely or name.startswith(_LIKELY)
        looked_at += 1
        if looked_at >= _HEADERS_LOOKED_AT:
            break
    if likely:
        return _central_directory_type(data)
    return None


def _find(data, needle: bytes, start: int) -> int:
    if hasattr(data, "find"):
        return data.find(needle, start)
    return bytes(data).find(needle, start)


def _central_directory_type(data) -> FileType | None:
    from clammail.unpack.archive_zip import CENTRAL_MAGIC, CENTRAL_SIZE, find_central_directory

    coff = find_central_directory(data)
    if coff is None:
        return None
    size = len(data)
    while coff + CENTRAL_SIZE <= size and bytes(data[coff:coff + 4]) == CENTRAL_MAGIC:
        flen, elen, clen = struct.unpack_from("<HHH", data, coff + 28)
        start = coff + CENTRAL_SIZE
        if size - start <= flen:
            break
        name = bytes(data[start:start + min(flen, 255)])
        for prefix, ftype in _DOCUMENT_ROOTS:
            if name.startswith(prefix):
                return ftype
        coff = start + flen + elen + clen
    return None


def tar_type(head: bytes) -> FileType | None:
    """CL_TYPE_OLD_TAR / CL_TYPE_POSIX_TAR for a valid tar header, else None."""
    if len(head) < 512:
        return None
    recorded = _octal(head[148:156])
    if recorded is None:
        return None
    total = sum(head[:512]) - sum(head[148:156]) + ord(" ") * 8
    if total != recorded:
        return None
    if head[257:265] == b"ustar  \0":  # GNU tar's magic (file(1)'s TMAGIC)
        return FileType.POSIX_TAR
    return FileType.OLD_TAR


def _octal(field: bytes) -> int | None:
    """file(1)'s from_oct: spaces, octal digits, then only a space or NUL."""
    i = 0
    while i < len(field) and field[i:i + 1].isspace():
        i += 1
    if i == len(field) or not 0x30 <= field[i] <= 0x37:
        return None
    value = 0
    while i < len(field) and 0x30 <= field[i] <= 0x37:
        value = value * 8 + field[i] - 0x30
        i += 1
    if i < len(field) and field[i] and not field[i:i + 1].isspace():
        return None
    return value
