"""RAR archives: which reader opens which, and ClamAV's rules for them.

Upstream ClamAV opens RAR through RARLAB's unrar (cli_scanrar_file in
libclamav/scanners.c); Debian's build has no unrar and opens no RAR at all.
clammail follows upstream:

- RAR 5, and RAR 1.5-4.x archives whose files are stored or packed with the
  RAR 2.9/3.x method (unpack versions 29, 36): libarchive.
- RAR 1.5-4.x archives holding a file packed with the RAR 1.5 or 2.0
  methods (unpack versions 15, 20, 26), which libarchive cannot decode
  ("Prefix found"): clammail's own reader below, with `rar_decode`.

The own reader does what cli_scanrar_file does with what unrar reports:

- the archive comment (RAR 1.5-2.x keep it in the main header) is scanned
  first;
- encrypted headers (rar -hp) or encrypted files: nothing is extracted
  from them, and Heuristics.Encrypted.RAR is reported at the end with
  AlertEncryptedArchive;
- before each file the MaxFiles limit is checked (reached: the archive
  ends); directories are skipped; a file whose header size is over
  MaxFileSize or what is left of MaxScanSize is skipped (with
  Heuristics.Limits.Exceeded.* under AlertExceedsMax);
- a file whose data fails its CRC is not scanned (unrar reports an error);
- a solid archive's files are decoded in order, each from the dictionary the
  previous one left; a skipped file of a solid archive is still decoded,
  within MEMBER_CAP, so that the next ones come out right.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from clammail.unpack.base import Extracted, UnpackContext
from clammail.unpack.rar_decode import DecodeError, OldRarDecoder

RAR4_MARK = b"Rar!\x1a\x07\x00"

MAIN_HEAD, FILE_HEAD, COMM_HEAD, END_HEAD = 0x73, 0x74, 0x75, 0x7B
MHD_COMMENT, MHD_PASSWORD = 0x0002, 0x0080
LHD_SPLIT_BEFORE, LHD_PASSWORD, LHD_SOLID = 0x0001, 0x0004, 0x0010
LHD_WINDOWMASK, LHD_DIRECTORY, LHD_LARGE = 0x00E0, 0x00E0, 0x0100
LONG_BLOCK = 0x8000
STORED = 0x30
# Unpack versions the own decoders handle; 29 and 36 are RAR 2.9/3.x's.
OLD_METHODS = frozenset({15, 20, 26})
ENCRYPTED_HEURISTIC = "Heuristics.Encrypted.RAR"
# Headers read before giving up on an archive: a file of millions of empty
# blocks must not cost minutes.
MAX_BLOCKS = 1 << 16
# With MaxFileSize and MaxScanSize off, one file stops here (as archive.MEMBER_CAP).
MEMBER_CAP = 1 << 30


@dataclass
class FileHeader:
    name: str
    offset: int  # of the packed data
    packed_size: int
    size: int
    crc: int
    version: int
    method: int
    flags: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & LHD_PASSWORD)

    @property
    def directory(self) -> bool:
        return self.flags & LHD_WINDOWMASK == LHD_DIRECTORY

    @property
    def solid(self) -> bool:
        return bool(self.flags & LHD_SOLID)

    @property
    def window(self) -> int:
        return 0x10000 << ((self.flags & LHD_WINDOWMASK) >> 5)


@dataclass
class Archive:
    """What the block headers of a RAR 1.5-4.x archive say."""

    encrypted_headers: bool = False
    comment: tuple[int, int, int, int, bytes] | None = None  # size, version, method, crc, data
    files: list[FileHeader] | None = None


def read_rar4(data) -> Archive | None:
    """The headers of the RAR 1.5-4.x archive at the start of `data`, or None."""
    if bytes(data[:7]) != RAR4_MARK:
        return None
    archive = Archive(files=[])
    pos = 7
    size = len(data)
    for _ in range(MAX_BLOCKS):
        if pos + 7 > size:
            break
        _crc, kind, flags, head_size = struct.unpack_from("<HBHH", data, pos)
        if head_size < 7:
            break
        add_size = 0
        if flags & LONG_BLOCK and pos + 11 <= size:
            (add_size,) = struct.unpack_from("<I", data, pos + 7)
        if kind == MAIN_HEAD:
            if flags & MHD_PASSWORD:
                archive.encrypted_headers = True
                break
            if flags & MHD_COMMENT:
                archive.comment = _old_comment(data, pos + 13, pos + head_size)
        elif kind == FILE_HEAD:
            header = _file_header(data, pos, flags, head_size)
            if header is None:
                break
            archive.files.append(header)
            add_size = header.packed_size
        elif kind == END_HEAD:
            break
        pos += head_size + add_size
    return archive


def _file_header(data, pos: int, flags: int, head_size: int) -> FileHeader | None:
    if pos + 32 > len(data) or head_size < 32:
        return None
    (packed, size, _os, crc, _time, version, method, name_size,
     _attr) = struct.unpack_from("<IIBIIBBHI", data, pos + 7)
    name_at = pos + 32
    if flags & LHD_LARGE and pos + 40 <= len(data):
        high_packed, high_size = struct.unpack_from("<II", data, pos + 32)
        packed |= high_packed << 32
        size |= high_size << 32
        name_at += 8
    name = bytes(data[name_at:name_at + min(name_size, 255)]).split(b"\0")[0]
    return FileHeader(name.decode("latin-1"), pos + head_size, packed, size, crc, version,
                      method, flags)


def _old_comment(data, start: int, end: int):
    """The comment block RAR 1.5-2.x keep inside the main header."""
    if start + 13 > end or bytes(data[start + 2:start + 3]) != bytes([COMM_HEAD]):
        return None
    (head_size,) = struct.unpack_from("<H", data, start + 5)
    size, version, method, crc = struct.unpack_from("<HBBH", data, start + 7)
    packed = bytes(data[start + 13:min(start + head_size, end)])
    return size, version, method, crc, packed


def needs_own_decoder(archive: Archive) -> bool:
    """Whether a file in it is packed with a method libarchive cannot decode."""
    return any(f.method != STORED and f.version in OLD_METHODS for f in archive.files or ())


def wants_own_reader(archive: Archive | None) -> bool:
    """Whether clammail's reader opens it (else libarchive does)."""
    return archive is not None and (archive.encrypted_headers or needs_own_decoder(archive))


def own_members(data, archive: Archive, ctx: UnpackContext) -> Iterator[Extracted]:
    """The comment and files of a RAR 1.5-4.x archive, decoded by clammail."""
    solid = any(f.solid for f in archive.files or ())
    encrypted = 1 if archive.encrypted_headers else 0
    alert_encrypted = ctx.option("AlertEncryptedArchive") or ctx.option("AlertEncrypted")
    decoder = OldRarDecoder(max((f.window for f in archive.files or ()), default=0x10000))
    comment = _comment(archive)
    if comment:
        yield Extracted(comment, name=None)
    for header in archive.files or ():
        ctx.check()
        if alert_encrypted and header.encrypted:
            encrypted += 1  # cli_unrar_scanmetadata counts it too
        max_files = ctx.option("MaxFiles")
        if max_files and ctx.files_scanned() >= max_files:
            ctx.limit_exceeded("MaxFiles")
            break
        if header.directory:
            continue
        limit = _over_limit(ctx, header.size)
        if limit is not None:
            ctx.limit_exceeded(limit)
            if solid:  # the next files go on from its dictionary
                _decode(decoder, data, header, ctx)
            continue
        if header.encrypted:
            encrypted += 1
            continue
        content = _extract(decoder, data, header, ctx)
        if content is not None:
            yield Extracted(content, name=header.name, compressed_size=header.packed_size)
    if encrypted and alert_encrypted:
        ctx.alert(ENCRYPTED_HEURISTIC)


def _over_limit(ctx: UnpackContext, size: int) -> str | None:
    """cli_checklimits for a file of `size` bytes: MaxScanSize first."""
    left = ctx.scan_size_left()
    if left is not None and size > left:
        return "MaxScanSize"
    limit = ctx.option("MaxFileSize")
    if limit and size > limit:
        return "MaxFileSize"
    return None


def _comment(archive: Archive) -> bytes | None:
    if archive.comment is None:
        return None
    size, version, method, crc, packed = archive.comment
    if method == STORED:
        text = packed[:size]
    elif version in OLD_METHODS:
        # A comment has a decoder of its own: it is not part of a solid stream.
        text = OldRarDecoder(0x10000).unpack(packed, version, size, solid=False)
    else:
        return None
    if (zlib.crc32(text) & 0xFFFF) != crc:
        return None
    return text


def _decode(decoder: OldRarDecoder, data, header: FileHeader, ctx: UnpackContext) -> bytes | None:
    packed = bytes(data[header.offset:header.offset + header.packed_size])
    if header.method == STORED:
        return packed[:header.size]
    if header.version not in OLD_METHODS:
        ctx.debug(f"rar: {header.name}: unpack version {header.version} not decoded here")
        return None
    try:
        return decoder.unpack(packed, header.version, min(header.size, MEMBER_CAP),
                              header.solid, ctx.check)
    except (DecodeError, IndexError) as exc:
        ctx.debug(f"rar: {header.name}: {exc}")
        return None


def _extract(decoder: OldRarDecoder, data, header: FileHeader, ctx: UnpackContext) -> bytes | None:
    content = _decode(decoder, data, header, ctx)
    if content is None or len(content) != header.size or zlib.crc32(content) != header.crc:
        ctx.debug(f"rar: {header.name}: CRC error, not scanned (as unrar reports it)")
        return None
    return content
