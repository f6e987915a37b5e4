"""NSIS installers (CL_TYPE_NULSFT), opened as libclamav 1.4.6's nulsft.c opens them.

The raw scan of a PE file finds "\\xef\\xbe\\xad\\xdeNullsoftInst"; the object
scanned as CL_TYPE_NULSFT starts four bytes before it (the flags word) and
runs to the end of the file (clammail.unpack.embedded). Its layout:

    0x00 flags, 0x04 0xdeadbeef "NullsoftInst", 0x14 header size,
    0x18 archive size (from 0x00, including a trailing CRC),
    0x1c the data: blocks of [u32 size (bit 31: compressed)] [bytes] ...

or, with solid compression, one compressed stream holding [u32 size]
[bytes] ... Compression is zlib (raw deflate), bzip2 (NSIS's variant, see
clammail.unpack.nsis_bzip2) or LZMA (5 bytes of properties, then the raw
stream). Like libclamav, this guesses solid or not by walking the block
sizes, and guesses the method from the first bytes of the blocks.

The first object is the installer's script ("headers"): libclamav matches
it without typing or opening it. The others are the installed files, in
order, scanned as any object. Quirks kept because verdicts depend on them:
a solid zlib stream is decoded through a 32 KiB window that runs ahead of
what was extracted, and extraction ends when that window has swallowed the
whole input (small solid zlib installers yield only their script); a
truncated or corrupt member is scanned as far as it decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from clammail.formats.filetypes import FileType
from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext
from clammail.unpack.decoders import Budget, Decoder, Lzma1, RawDeflate

FIRST_HEADER = 0x1C
MAGIC = b"\xef\xbe\xad\xdeNullsoftInst"

BZIP2, LZMA, ZLIB = 1, 2, 3
_NAMES = {BZIP2: "bzip2", LZMA: "lzma", ZLIB: "zlib"}
# libclamav gives up on a stream after this many calls that produced nothing.
_MAX_IDLE = 20
# The NSIS inflate's sliding window (1 << MAX_WBITS).
_ZLIB_WINDOW = 1 << 15
# Output is produced in stdio BUFSIZ pieces; limits are checked per piece.
_OUT_PIECE = 8192
# Walking the block list in pure Python: look at the scan deadline this often.
_CHECK_EVERY = 4096


def unpack_nsis(data, ctx: UnpackContext) -> Iterator[Extracted]:
    view = memoryview(data)
    if len(view) < FIRST_HEADER:
        return
    hsz, asz = struct.unpack_from("<II", view, 0x14)
    flags = struct.unpack_from("<I", view, 0)[0]
    ctx.debug(f"NSIS: Header info - Flags={flags:x}, Header size={hsz:x}, Archive size={asz:x}")
    truncated = False
    if len(view) < asz:
        asz, truncated = len(view), True
    asz = (asz - FIRST_HEADER) & 0xFFFFFFFF
    layout = _guess_layout(view, asz, truncated, ctx)
    if layout is None:
        return  # libclamav: a read past the end while guessing (CL_EREAD)
    solid, comp = layout
    ctx.debug(f"NSIS: solid compression{'' if solid else ' not'} detected "
              f"({_NAMES.get(comp, 'unknown')})")
    members = (_solid_members(view, asz, comp, ctx) if solid
               else _plain_members(view, asz, comp, ctx))
    budget = Budget(ctx)
    for number, member in enumerate(members, 1):
        if member is None:
            continue
        limit = budget.refused(len(member))
        if limit:
            ctx.limit_exceeded(limit)
            return
        if number == 1:
            # The script: matched (body and hash signatures), not typed or opened.
            yield Extracted(member, name="headers", ftype=FileType.ANY)
        else:
            yield Extracted(member, name=f"content.{number - 1:03d}")


def _detect(word: bytes) -> int:
    if word[:1] == b"1":
        return BZIP2
    if int.from_bytes(word, "little") & 0x7FFFFFFF == 0x5D:
        return LZMA
    return ZLIB


def _guess_layout(view, asz: int, truncated: bool, ctx) -> tuple[bool, int] | None:
    """(solid, method) as nsis_headers guesses them, or None for a failed read."""
    counts = {BZIP2: 0, LZMA: 0, ZLIB: 0}
    comp = 0
    solid = False
    pos, index, at = 0, 0, FIRST_HEADER
    end = (asz - 4) & 0xFFFFFFFF
    while pos < end:
        if index % _CHECK_EVERY == _CHECK_EVERY - 1:
            ctx.check()
        word = _word(view, at)
        if word is None:
            return None
        nextsz = int.from_bytes(word, "little", signed=True)
        if not index:
            comp = _detect(word)
        at += 4
        if nextsz < 0:
            nextsz &= 0x7FFFFFFF
            word = _word(view, at)
            if word is None:
                return None
            counts[_detect(word)] += 1
            nextsz -= 4
            pos += 4
            at += 4
        pos = (pos + 4 + nextsz) & 0xFFFFFFFF
        if pos > asz:
            solid = True
            break
        at += nextsz
        index += 1
    if truncated and index >= 2:
        solid = False
    if not solid:
        b, lz, z = counts[BZIP2], counts[LZMA], counts[ZLIB]
        comp = (ZLIB if lz < z else LZMA) if b < lz else (ZLIB if b < z else BZIP2)
    return solid, comp


def _word(view, at: int) -> bytes | None:
    if at < 0 or at + 4 > len(view):
        return None
    return bytes(view[at:at + 4])


def _plain_members(view, asz: int, comp: int, ctx: UnpackContext) -> Iterator[bytes | None]:
    """Members of a non-solid archive: one block each (nsis_unpack_next, !solid)."""
    budget = Budget(ctx)
    curpos = FIRST_HEADER
    while True:
        ctx.check()
        limit = budget.breaks(0)
        if limit:
            raise LimitExceeded(limit)
        word = _word(view, curpos)
        if word is None:
            return  # "reached EOF"
        curpos += 4
        if asz == 4:
            return  # "reached CRC"
        raw = int.from_bytes(word, "little")
        size = raw & 0x7FFFFFFF
        if not size:
            yield None  # "empty file found": a number, no object
            continue
        if asz < 4 or size > asz - 4:
            return  # "next file is outside the archive"
        asz -= size + 4
        limit = budget.breaks(size)
        if limit == "MaxFiles":
            raise LimitExceeded(limit)
        if limit:
            ctx.limit_exceeded(limit)
            curpos += size
            yield None
            continue
        if curpos + size > len(view):
            return  # a read past the end (CL_EREAD) ends the archive
        block = view[curpos:curpos + size]
        curpos += size
        if raw == size:
            yield block
            continue
        out = _decode_block(block, comp, budget, ctx)
        yield out if out else None  # nothing decoded, or a limit: skipped, the archive goes on


def _decode_block(block, comp: int, budget: Budget, ctx: UnpackContext) -> bytes:
    """A compressed block, checked against the limits piece by piece as libclamav
    writes it: a piece that breaks MaxScanSize (or MaxFileSize) drops the member.
    The piece that comes with the end of an LZMA or bzip2 stream is not checked."""
    cap = budget.cap()
    decoder = _decoder(block, comp, cap)
    if decoder is None:
        return b""
    out = bytearray()
    while len(out) <= cap:  # past the cap the engine refuses the member anyway
        piece = decoder.read(_OUT_PIECE)
        if not piece:
            break
        final = decoder.status == "end" and comp in (LZMA, BZIP2)
        limit = None if final else budget.breaks(len(piece))
        if limit == "MaxFiles":
            raise LimitExceeded(limit)
        if limit:
            ctx.limit_exceeded(limit)
            return b""
        if decoder.status == "error" and comp == LZMA:
            break  # libclamav's LZMA call that fails hands back nothing of its piece
        out += piece
        if decoder.status:
            break
    return bytes(out)


def _decoder(data, comp: int, cap: int) -> Decoder | None:
    if comp == ZLIB:
        return RawDeflate(data)
    if comp == LZMA:
        decoder = Lzma1(data)
        decoder.set_cap(cap)
        return decoder
    if comp == BZIP2:
        from clammail.unpack.nsis_bzip2 import NsisBzip2

        return NsisBzip2(data)
    return None


class _WindowedInflate:
    """The NSIS inflate in a solid stream: it decodes into a 32 KiB window as far
    as the window allows, so it reads input ahead of what was extracted."""

    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        self.ahead = b""  # decoded into the window, not extracted yet
        self.exhausted = False

    @property
    def input_left(self) -> int:
        return 0 if self.exhausted else self.decoder.input_left

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            self._fill()
            if not self.ahead:
                break
            take = self.ahead[:n - len(out)]
            self.ahead = self.ahead[len(take):]
            out += take
        self._fill()
        return bytes(out)

    def _fill(self) -> None:
        want = _ZLIB_WINDOW - len(self.ahead)
        if want > 0 and not self.decoder.status:
            self.ahead += self.decoder.read(want)
        if self.decoder.status and self.decoder.input_left <= 4:
            self.exhausted = True

    @property
    def status(self) -> str:
        return self.decoder.status if not self.ahead else ""


def _solid_members(view, asz: int, comp: int, ctx: UnpackContext) -> Iterator[bytes | None]:
    """Members of a solid archive: one stream, [size][bytes] after [size][bytes]."""
    budget = Budget(ctx)
    stream_data = view[FIRST_HEADER:FIRST_HEADER + asz]
    if len(stream_data) < asz:
        return  # the stream cannot be mapped whole (CL_EREAD)
    base = _decoder(stream_data, comp, budget.cap())
    if base is None:
        return
    stream = _WindowedInflate(base) if comp == ZLIB else base
    while True:
        ctx.check()
        limit = budget.breaks(0)
        if limit:
            raise LimitExceeded(limit)
        if stream.input_left <= 4:
            return  # "extraction complete"
        word = stream.read(4)
        if len(word) < 4 or stream.status == "end":
            return  # "bad stream": the size could not be decoded
        size = int.from_bytes(word, "little")
        limit = budget.breaks(size)
        if limit:
            ctx.limit_exceeded(limit)
            return  # libclamav stops a solid archive there
        if not size:
            yield None
            continue
        want = min(size, budget.cap())
        out = stream.read(want)
        if len(out) < want and comp == LZMA and stream.status == "error":
            out = out[:len(out) // _OUT_PIECE * _OUT_PIECE]  # the failing piece is lost
        if len(out) < want or want < size:
            if not out:
                return  # nothing decoded: the end of the archive
            yield out  # a partial member is scanned, and it is the last
            return
        yield out
        if stream.status:
            return  # the stream ended with this member
