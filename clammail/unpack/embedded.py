"""Archives and executables embedded inside other objects, found as ClamAV finds them.

During its raw scan ClamAV also matches "type-1" file-type signatures
anywhere in an object (libclamav's built-in file-type table, entries with
offset `*`), and opens what they point at (libclamav scanners.c, the loop
over the matched types in the raw scan):

| magic at offset > 0        | what ClamAV does                       | not for   |
|----------------------------|----------------------------------------|-----------|
| `PK\\x03\\x04` (ZIP-SFX)     | extracts that one entry from its local | zip       |
|                            | header (no data descriptor, no         |           |
|                            | encryption heuristic)                  |           |
| `Rar!\\x1a\\x07\\x00` (RAR-SFX) | reads a RAR archive from there (RAR 4) | RAR       |
| `MSCF\\0\\0\\0\\0` (CAB-SFX)    | reads a cabinet from there             | cab       |
| `7z\\xbc\\xaf'\\x1c` (7Z-SFX)   | reads a 7z archive from there          | 7z        |
| ISO 9660 descriptors       | reads the image                        | ISO       |
| `MZ`..`PE\\0\\0` (embedded PE) | scans the data from there on as a new  | see below |
|                            | object, when its PE header parses; the |           |
|                            | other hits are then left to that scan  |           |
|                            | (in executables: unpack/executable.py) |           |

Measured with clamscan 1.4.6 (--allmatch counts each path to a member):
zip, tar, cpio and LHA objects are not searched at all; an embedded PE is
looked for anywhere in an executable, and in binary data, text, HTML and
OLE2 objects only when the whole signature lies in their first 1024 bytes
(the typing buffer); never in images or PDFs, nor in objects bigger than
MaxEmbeddedPE. ARJ self-extractors are not opened (no ARJ reader).

`embedded_objects(data, ftype, ctx)` yields what these find; the engine
scans each like any other child of the object.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

from clammail.engine.filetypes import FileType
from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext

_SFX = re.compile(
    rb"(?P<zip>PK\x03\x04)|(?P<rar>Rar!\x1a\x07\x00)|(?P<cab>MSCF\x00\x00\x00\x00)"
    rb"|(?P<sevenzip>7z\xbc\xaf\x27\x1c)|(?P<iso>\x01CD001)"
)
TYPING_BUFFER = 1024

_SKIP_FOR = {
    "zip": {FileType.ZIP},
    "rar": {FileType.RAR},
    "cab": {FileType.MSCAB},
    "sevenzip": {FileType.SEVENZIP},
    "iso": {FileType.ISO9660},
}
_NOT_SEARCHED = {
    FileType.ZIP, FileType.POSIX_TAR, FileType.OLD_TAR, FileType.CPIO_OLD, FileType.CPIO_ODC,
    FileType.CPIO_NEWC, FileType.CPIO_CRC, FileType.LHA_LZH,
}
_TEXT_LIKE = {
    FileType.BINARY_DATA, FileType.TEXT_ASCII, FileType.TEXT_UTF8, FileType.TEXT_UTF16LE,
    FileType.TEXT_UTF16BE, FileType.HTML, FileType.MSOLE2,
}
_CONTAINER = {
    "zip": FileType.ZIP, "rar": FileType.RAR, "cab": FileType.MSCAB,
    "sevenzip": FileType.SEVENZIP, "iso": FileType.ISO9660,
}


def embedded_objects(data, ftype: FileType, ctx: UnpackContext) -> Iterator[Extracted]:
    """Members of archives embedded in `data`, and an executable embedded in it."""
    if ftype in _NOT_SEARCHED:
        return
    pe_offset = _embedded_pe(data, ftype, ctx)
    for match in _SFX.finditer(data):
        offset, kind = match.start(), match.lastgroup
        if pe_offset is not None and offset > pe_offset:
            break  # left to the scan of the embedded executable, which holds it
        if not offset or ftype in _SKIP_FOR.get(kind, ()) or not ctx.option("ScanArchive"):
            continue
        if kind == "iso" and not _iso_follows(data, offset):
            continue
        ctx.check()
        try:
            for child in _open(kind, data, offset, ctx):
                child.extra.setdefault("container", _CONTAINER[kind])
                child.extra.setdefault("embedded_at", offset)
                yield child
        except LimitExceeded as exc:
            # That archive stops; the other embedded ones are still opened.
            report = getattr(ctx, "limit_exceeded", None)
            if report is not None:
                report(exc.limit)
    if pe_offset is not None:
        yield Extracted(memoryview(data)[pe_offset:], name=f"embedded-pe@{pe_offset}",
                        ftype=FileType.MSEXE,
                        # libclamav scans it with ctx->corrupted_input set.
                        extra={"embedded_at": pe_offset, "corrupted_input": True})


def _embedded_pe(data, ftype: FileType, ctx: UnpackContext) -> int | None:
    """Where an executable embedded in a non-executable object starts, if ClamAV sees one.

    Executables themselves are left to clammail.unpack.executable (the
    executables' unpacker), which looks anywhere in them.
    """
    if ftype not in _TEXT_LIKE or not ctx.option("ScanPE"):
        return None
    limit = ctx.option("MaxEmbeddedPE")
    if limit and len(data) > limit:
        return None
    try:
        from clammail.formats.pe import find_embedded_pe
    except ImportError:
        return None
    offset = find_embedded_pe(data)
    if offset is None or offset + _pe_signature_end(data, offset) > TYPING_BUFFER:
        return None
    return offset


def _pe_signature_end(data, offset: int) -> int:
    (lfanew,) = struct.unpack_from("<I", data, offset + 0x3C)
    return lfanew + 4


def _iso_follows(data, offset: int) -> bool:
    window = bytes(data[offset + 6 + 2043:offset + 6 + 2443 + 5])
    return b"CD001" in window


def _open(kind: str, data, offset: int, ctx: UnpackContext) -> Iterator[Extracted]:
    from clammail.unpack import archive

    if kind == "zip":
        yield from archive.zip_single_entry(data, offset, ctx)
    elif kind == "iso":
        yield from archive.iso_members(data, offset, ctx)
    else:
        ftype = _CONTAINER[kind]
        yield from archive.libarchive_members(memoryview(data)[offset:], ftype, ctx)
