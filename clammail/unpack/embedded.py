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
| `60 EA` ... `0?` `02`       | reads an ARJ archive from there        | ARJ       |
| (ARJ-SFX: main header with |                                        |           |
| file type 2)               |                                        |           |
| installers in a PE file   | NSIS, AutoIt and InstallShield-MSI data  | non-PE    |
| (`\\xef\\xbe\\xad\\xdeNullsoftInst`, | become objects of their own type     |           |
| `AU3!EA05/6`, `InstallShield\\0`...) | (CL_TYPE_NULSFT, _AUTOIT, _ISHIELD_MSI), |           |
|                            | opened by unpack/nsis, autoit, ishield |           |
| `\\nMIME-Version: ` and       | parses the whole object as mail (MHTML)| all but   |
| `\\nContent-Type: ` within    | when it is text or binary data         | text and  |
| 1024 bytes (MHTML)         | (clamscan finds the attachments of     | binary    |
|                            | mail inside binary data this way)      | data      |
| `MZ`..`PE\\0\\0` (embedded PE) | scans the data from there on as a new  | see below |
|                            | object, when its PE header parses; the |           |
|                            | other hits are then left to that scan  |           |
|                            | (in executables: unpack/executable.py) |           |

Measured with clamscan 1.4.6 (--allmatch counts each path to a member):
zip, tar, cpio and LHA objects are not searched at all; an embedded PE is
looked for anywhere in an executable, and in binary data, text, HTML and
OLE2 objects only when the whole signature lies in their first 1024 bytes
(the typing buffer); never in images or PDFs, nor in objects bigger than
MaxEmbeddedPE.

`embedded_objects(data, ftype, ctx)` yields what these find; the engine
scans each like any other child of the object.
"""

from __future__ import annotations

import heapq
import re
import struct
from collections.abc import Iterator

from clammail import mapped
from clammail.formats.filetypes import FileType
from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext

# The type-1 magics, each searched for alone: a literal search runs at C
# speed where one alternation of them all crawls through the data byte by
# byte. The hits are merged in order as one scan of the alternation finds
# them: each starts with its own byte, and a hit that starts inside the
# previous one is passed over (only the ARJ header, with its seven bytes of
# anything, can hold another magic).
_MAGICS = (
    ("zip", re.compile(re.escape(b"PK\x03\x04"))),
    ("rar", re.compile(re.escape(b"Rar!\x1a\x07\x00"))),
    ("cab", re.compile(re.escape(b"MSCF\x00\x00\x00\x00"))),
    ("sevenzip", re.compile(re.escape(b"7z\xbc\xaf\x27\x1c"))),
    ("iso", re.compile(re.escape(b"\x01CD001"))),
    ("arj", re.compile(rb"\x60\xea.{7}[\x00-\x02]\x02", re.DOTALL)),
)
TYPING_BUFFER = 1024
# A candidate PE is "MZ" with "PE\0\0" 62 to 302 bytes after it
# (formats.pe._EMBEDDED_GAP): one that starts in the typing buffer is seen
# in this many bytes.
_PE_CANDIDATE_WINDOW = TYPING_BUFFER + 2 + 300 + 4

# Installer data that libclamav's raw scan finds only in PE files. The object
# starts at the match (NSIS: four bytes before it) and runs to the end.
_INSTALLERS = re.compile(
    rb"(?P<nsis>\xef\xbe\xad\xdeNullsoftInst)"
    rb"|(?P<autoit>\xa3\x48\x4b\xbe\x98\x6c\x4a\xa9\x99\x4c\x53\x0a\x86\xd6\x48\x7dAU3!EA0[56])"
    rb"|(?P<ishield_msi>InstallShield\x00.{292}\x06\x00{7}.{8}\x00{4}\x01)",
    re.DOTALL,
)
_INSTALLER_TYPES = {
    "nsis": FileType.NULSFT, "autoit": FileType.AUTOIT, "ishield_msi": FileType.ISHIELD_MSI,
}

_SKIP_FOR = {
    "zip": {FileType.ZIP},
    "rar": {FileType.RAR},
    "cab": {FileType.MSCAB},
    "sevenzip": {FileType.SEVENZIP},
    "iso": {FileType.ISO9660},
    "arj": {FileType.ARJ},
}
_NOT_SEARCHED = {
    FileType.ANY,  # an object matched only (the script of an NSIS installer)
    FileType.ZIP, FileType.POSIX_TAR, FileType.OLD_TAR, FileType.CPIO_OLD, FileType.CPIO_ODC,
    FileType.CPIO_NEWC, FileType.CPIO_CRC, FileType.LHA_LZH,
}
_TEXT_LIKE = {
    FileType.BINARY_DATA, FileType.TEXT_ASCII, FileType.TEXT_UTF8, FileType.TEXT_UTF16LE,
    FileType.TEXT_UTF16BE, FileType.HTML, FileType.MSOLE2,
}
_CONTAINER = {
    "zip": FileType.ZIP, "rar": FileType.RAR, "cab": FileType.MSCAB,
    "sevenzip": FileType.SEVENZIP, "iso": FileType.ISO9660, "arj": FileType.ARJ,
}


def embedded_objects(data, ftype: FileType, ctx: UnpackContext) -> Iterator[Extracted]:
    """Members of archives embedded in `data`, and an executable embedded in it."""
    if ftype in _NOT_SEARCHED:
        return
    pe_offset = _embedded_pe(data, ftype, ctx)
    for offset, kind in _type_matches(data, ftype):
        if pe_offset is not None and offset > pe_offset:
            break  # left to the scan of the embedded executable, which holds it
        if kind == "mhtml":
            if ctx.option("ScanMail"):
                from clammail.unpack.mail import unpack_mail

                yield from unpack_mail(data, ctx)
            continue
        if not offset or ftype in _SKIP_FOR.get(kind, ()) or not ctx.option("ScanArchive"):
            continue
        if kind == "iso" and not _iso_follows(data, offset):
            continue
        ctx.check()
        if kind in _INSTALLER_TYPES:
            start = offset - 4 if kind == "nsis" else offset
            if start > 0:
                yield Extracted(memoryview(data)[start:], name=f"{kind}@{start}",
                                ftype=_INSTALLER_TYPES[kind], extra={"embedded_at": start})
            continue
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


def _type_matches(data, ftype: FileType) -> list[tuple[int, str]]:
    """The file-type signatures found in `data`, in the order of their offsets."""
    found = list(magic_hits(data))
    if ftype is FileType.MSEXE:
        found += _installer_hits(data)
        found.sort()
    if ftype in _MAIL_IN_DATA:
        mhtml = _mhtml_offset(data)
        if mhtml is not None:
            found.append((mhtml, "mhtml"))
            found.sort()
    return found


# Objects the raw scan re-types as MHTML when it finds MIME headers in them
# past their start (libclamav: CL_TYPE_TEXT_ASCII up to CL_TYPE_BINARY_DATA).
_MAIL_IN_DATA = frozenset({
    FileType.TEXT_ASCII, FileType.TEXT_UTF8, FileType.TEXT_UTF16LE, FileType.TEXT_UTF16BE,
    FileType.BINARY_DATA,
})
_MIME_VERSION = re.compile(re.escape(b"ersion: "))
_MIME_VERSION_LINE = re.compile(rb"\n[Mm][Ii][Mm][Ee]-[Vv]ersion: ")
_CONTENT_TYPE_LINE = re.compile(rb"\n[Cc]ontent-[Tt]ype: ")
# ClamAV's pattern allows up to 1024 bytes between the two header lines.
_MHTML_GAP = 1024


def _mhtml_offset(data) -> int | None:
    """Where the first "\\nMIME-Version: " followed within 1024 bytes by a
    "\\nContent-Type: " line starts, past the first byte; None if nowhere."""
    for hit in mapped.finditer(_MIME_VERSION, data, 8):
        start = hit.start() - 7  # where "\\nMIME-V" would start
        if start > 0 and _MIME_VERSION_LINE.match(data, start):
            end = hit.end()
            if _CONTENT_TYPE_LINE.search(data, end, end + _MHTML_GAP + 15):
                return start
    return None


# A literal inside each installer magic, and how far into the magic it sits:
# finding it with bytes.find and checking the whole magic there is far
# cheaper than running the alternation over every byte of a PE file.
# (Compiled literal patterns rather than bytes.find: the data may be a
# memoryview, which has no find.)
_INSTALLER_LITERALS = tuple(
    (re.compile(re.escape(literal)), back)
    for literal, back in ((b"NullsoftInst", 4), (b"AU3!EA0", 16), (b"InstallShield\x00", 0))
)


def _installer_hits(data) -> list[tuple[int, str]]:
    """The installer magics in `data` as _INSTALLERS.finditer would find them."""
    starts = set()
    for literal, back in _INSTALLER_LITERALS:
        starts.update(m.start() - back for m in mapped.finditer(literal, data)
                      if m.start() >= back)
    hits = []
    resume = 0
    for start in sorted(starts):
        if start < resume:
            continue  # finditer does not report a match inside the previous one
        match = _INSTALLERS.match(data, start)
        if match is not None:
            hits.append((start, match.lastgroup))
            resume = match.end()
    return hits


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
    from clammail.formats.pe import find_embedded_pe

    # Only a PE whose signature lies in the typing buffer counts, so only the
    # candidates that start there can; the first of them that parses wins.
    offset = find_embedded_pe(data, search_limit=_PE_CANDIDATE_WINDOW)
    if offset is None or offset + _pe_signature_end(data, offset) > TYPING_BUFFER:
        return None
    return offset


def magic_hits(data) -> Iterator[tuple[int, str]]:
    """(offset, kind) of the type-1 magics in `data` in order of offset, as
    one left-to-right scan finds them (no hit inside the previous one)."""
    heap = []
    for kind, pattern in _MAGICS:
        match = mapped.search(pattern, data)
        if match is not None:
            heap.append((match.start(), match.end(), kind, pattern))
    heapq.heapify(heap)
    resume = 0
    while heap:
        offset, end, kind, pattern = heap[0]
        if offset >= resume:
            yield offset, kind
            resume = end
        match = mapped.search(pattern, data, resume)
        if match is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (match.start(), match.end(), kind, pattern))


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
    elif kind == "arj":
        from clammail.unpack.arj import arj_members

        yield from arj_members(memoryview(data)[offset:], ctx)
    else:
        ftype = _CONTAINER[kind]
        yield from archive.archive_members(memoryview(data)[offset:], ftype, ctx)
