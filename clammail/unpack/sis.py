"""Symbian installation files (CL_TYPE_SIS), the pre-9.x format, read as ClamAV 1.4.6 does.

A SIS file starts with four UIDs; the third, 0x10000419, marks the old
format ClamAV typed by it (type-1 pattern 19040010 at offsets 8-20). A
68-byte header follows with the number of languages and of file records
and the offset of the records. The records are 32-bit words read one after
another: a package type, and for a file record its type, options, name
pointers, then per language the compressed length, the pointer and the
original length of the data. Unless header flag 0x0008 is set, the data is
a zlib stream.

ClamAV's rules (libclamav sis.c, real_scansis), kept here:

- each language's copy is checked against the size limits with its
  compressed length; a compressed copy is inflated into a buffer of three
  times that length when the original length fits in it (and the limits
  allow), else of the original length (if the limits allow): a stream that
  does not fit, is broken or has a bad checksum gives nothing;
- data pointers inside the 84-byte header, copies that lie outside the
  file and "null" file types are skipped;
- the records end at the first word that cannot be read;
- SIS 9.x files (first UID 0x10201a7a) are only opened by ClamAV when the
  old-format pattern happens to be in them; clammail does not open them.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from clammail.unpack import sizecheck
from clammail.unpack.base import Extracted, UnpackContext

OLD_FORMAT_UID = 0x10000419
HEADER = struct.Struct("<8HI4HI9I")  # after the four UIDs
HEADER_END = 16 + HEADER.size  # 84: data pointers below this are refused
COMPRESSION_OFF = 0x0008
MAX_LANGUAGES = 100  # entries in ClamAV's table of language names
NAME_MAX = 400
PKG_FILE, PKG_LANGFILE, PKG_OPTION, PKG_IF, PKG_ELSIF = 0, 1, 2, 3, 4
FT_NULL = 4
# With the limits off ClamAV would inflate any claimed size; one file stops here.
MEMBER_CAP = 1 << 30


class _End(Exception):
    """No more words: ClamAV ends the SIS here."""


class _Words:
    """ClamAV's GETD2/SKIP reader: 32-bit little-endian words from a cursor."""

    def __init__(self, data, start: int):
        self.data = data
        self.pos = start

    def word(self) -> int:
        if self.pos + 4 > len(self.data):
            raise _End()
        (value,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return value

    def skip(self, count: int) -> None:
        self.pos += count
        if self.pos > len(self.data):
            raise _End()


def _sis_string(data, pointer: int, length: int) -> str | None:
    """getsistring: every second byte of a UTF-16 name, at most 400 bytes read."""
    if not length:
        return None
    length = min(length, NAME_MAX)
    if pointer + length > len(data):
        return None
    raw = bytes(data[pointer:pointer + length])[0::2]
    return raw.split(b"\0", 1)[0].decode("latin-1")


def unpack_sis(data, ctx: UnpackContext) -> Iterator[Extracted]:
    data = memoryview(data)
    if len(data) < 16:
        return
    uids = struct.unpack_from("<4I", data, 0)
    if uids[2] != OLD_FORMAT_UID:
        ctx.debug("SIS: not the pre-9.x format")
        return
    if len(data) < HEADER_END:
        return
    header = HEADER.unpack_from(data, 16)
    langs, files, flags = header[1], header[2], header[9]
    plangs, pfiles = header[14], header[15]
    if not langs or langs >= MAX_LANGUAGES:
        ctx.debug("SIS: too many or too few languages")
        return
    if plangs + 2 * langs > len(data):
        ctx.debug("SIS: languages out of file")
        return
    compressed = not flags & COMPRESSION_OFF
    if HEADER_END > pfiles:
        ctx.debug("SIS: file records inside the header")
        return
    words = _Words(data, pfiles)
    try:
        for _ in range(files):
            ctx.check()
            yield from _record(words, data, langs, compressed, ctx)
    except _End:
        ctx.debug("SIS: end of records")


def _record(words: _Words, data, langs: int, compressed: bool,
            ctx: UnpackContext) -> Iterator[Extracted]:
    kind = words.word()
    skip = 0
    if kind == PKG_LANGFILE:
        skip = langs
    elif kind == PKG_FILE:
        ftype, _options, ssname, psname, _sdname, _pdname = (words.word() for _ in range(6))
        name = _sis_string(data, psname, ssname)
        lens = [words.word() for _ in range(langs)]
        ptrs = [words.word() for _ in range(langs)]
        olens = [words.word() for _ in range(langs)]
        if ftype != FT_NULL:
            for length, pointer, original in zip(lens, ptrs, olens, strict=True):
                out = _copy(data, length, pointer, original, compressed, ctx)
                if out:
                    yield Extracted(out, name=name, compressed_size=length)
        skip = 8
    elif kind == PKG_OPTION:
        skip = words.word() * langs * 8 & 0xFFFFFFFF
    elif kind in (PKG_IF, PKG_ELSIF):
        skip = words.word()
    words.skip(skip)


def _copy(data, length: int, pointer: int, original: int, compressed: bool,
          ctx: UnpackContext) -> bytes | None:
    """One language's copy of a file, or None when ClamAV skips it."""
    if not length or HEADER_END > pointer:
        return None
    if not sizecheck.check(ctx, length):
        return None
    if pointer + length > len(data):
        return None  # "ghost or otherwise out of archive file"
    raw = bytes(data[pointer:pointer + length])
    if not compressed:
        return raw
    tripled = length * 3 & 0xFFFFFFFF
    if original <= tripled and sizecheck.check(ctx, tripled):
        room = tripled
    elif sizecheck.check(ctx, original):
        room = original
    else:
        return None
    return _inflate(raw, min(room, MEMBER_CAP))


def _inflate(raw: bytes, room: int) -> bytes | None:
    """zlib's uncompress() into a buffer of `room` bytes: all or nothing."""
    decoder = zlib.decompressobj()
    try:
        out = decoder.decompress(raw, room + 1)
    except zlib.error:
        return None
    if len(out) > room or not decoder.eof:
        return None
    return out
