"""UPX: the NRV2B/NRV2D/NRV2E and LZMA decompressors and libclamav's PE rebuild.

A UPX-packed PE has an empty section (UPX0) followed by one holding the
compressed image (UPX1). libclamav decompresses UPX1 into a buffer as large
as both sections and, from the decompressed image, rebuilds a PE file
(`_pe_from_upx`): it finds the original PE header through the import table
address the stub loads ("lea edi, [esi + imports]"), else by searching the
image backwards for a plausible header, else it wraps the image in a fake
header. That file, not the image, is what ClamAV scans (and hashes).

The decoders follow libclamav's upx.c bit for bit, failures included: which
one fails where decides what ClamAV scans. A failed attempt leaves its bytes
in the shared output buffer, and a later decoder that succeeds keeps them
where it writes less, so all attempts share one buffer as in libclamav.
Work is bounded by the input: every decoded bit consumes input, and output
stops at the buffer's size.
"""

from __future__ import annotations

import lzma

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.common import (
    M32,
    MAX_ALLOCATION,
    PackedPE,
    Stop,
    align_down,
    align_up,
    contained,
    put32,
    require_limits,
    s32,
    signed32,
    u32,
)

# The stub code cli_scanpe looks for at EP+0x69 (or EP+0x71) to pick a decoder.
_NRV2B = bytes.fromhex("11db11c901db75078b1e83eefc11db11c911c9752041 01db".replace(" ", ""))
_NRV2D = bytes.fromhex("83f0ff7478d1f889c5eb0b01db75078b1e83eefc11db11c9")
_NRV2E = bytes.fromhex("eb5231c983e803721 1c1e0088a064683f0ff7475d1f889c5".replace(" ", ""))
_LZMA1_FIRST = bytes.fromhex("5683c3045350c703")
_LZMA1_SECOND = bytes.fromhex("9090905557565383")
_LZMA2 = bytes.fromhex("5683c3045350c70303000200909090909055575 6".replace(" ", ""))

# Where the stubs keep the offset of the import table ("lea edi, [esi+imm32]").
_MAGIC_2B = (0x108, 0x110, 0xD5)
_MAGIC_2D = (0x11C, 0x124)
_MAGIC_2E = (0x128, 0x130)
_MAGIC_LZMA = (0xB16, 0xB1E)

# pefromupx may grow the image by this much when it lays sections out.
REBUILD_HEADROOM = 8192
# How many output bytes between two deadline checks.
_CHECK_EVERY = 1 << 16

_DOS_HEADER_ROWS = (
    "4D5A900002000000 04000F00FFFF0000", "B000000000000000 40001A0000000000",
    "0000000000000000 0000000000000000", "0000000000000000 00000000D0000000",
    "0E1FB409BA0D00CD 21B44CCD21546869", "732066696C652077 6173206372656174",
    "656420627920436C 616D415620666F72", "20696E7465726E61 6C2075736520616E",
    "642073686F756C64 206E6F7420626520", "72756E2E0D0A436C 616D4156202D2041",
    "2047504C20766972 7573207363616E6E", "6572202D20687474 703A2F2F7777772E",
    "636C616D61762E6E 65740D0A24000000",
)
_DOS_HEADER = bytes.fromhex("".join(_DOS_HEADER_ROWS))
# The one-section header pefromupx forges when it finds no PE header at all.
_FAKE_PE = bytes.fromhex("".join((
    "504500004C010100 434C414D00000000", "00000000E000838F 0B01000000100000",
    "0010000000000000 0010000000100000", "0010000000004000 0010000000020000",
    "0100000000000000 03000A0000000000", "FFFFFFFF00020000 0000000002000000",
    "0000100000100000 0000100000100000", "0000000010000000 0000000000000000",
    *(["00" * 16] * 7),
    "0000000000000000 2E636C616D303100", "FFFFFFFF00100000 FFFFFFFF00020000",
    "0000000000000000 00000000FFFFFFFF",
)))
assert len(_DOS_HEADER) == 0xD0 and len(_FAKE_PE) == 0x120


class _Fail(Exception):
    """A decoder returned -1."""


class _Bits:
    """UPX's bit source: 32-bit little-endian words read MSB first, with a
    sentinel bit marking when the next word is due (libclamav's doubleebx)."""

    __slots__ = ("src", "size", "pos", "ebx")

    def __init__(self, src: bytes, size: int):
        self.src = src
        self.size = size
        self.pos = 0
        self.ebx = 0

    def bit(self) -> int:
        old = self.ebx
        self.ebx = (old << 1) & M32
        if not old & 0x7FFFFFFF:
            pos = self.pos
            if pos + 4 > self.size or self.size < 4:
                raise _Fail()
            old = int.from_bytes(self.src[pos:pos + 4], "little")
            self.ebx = ((old << 1) | 1) & M32
            self.pos = pos + 4
        return old >> 31

    def byte(self) -> int:
        if self.pos >= self.size:
            raise _Fail()
        value = self.src[self.pos]
        self.pos += 1
        return value


def _copy_match(dst: bytearray, dcur: int, distance: int, length: int) -> None:
    """Copy `length` bytes from `distance` back, byte by byte semantics (overlaps repeat)."""
    start = dcur - distance
    if distance >= length:
        dst[dcur:dcur + length] = dst[start:start + length]
    else:
        pattern = bytes(dst[start:dcur])
        dst[dcur:dcur + length] = (pattern * (length // distance + 1))[:length]


def _match_ok(dsize: int, dcur: int, offset: int, length: int) -> bool:
    return offset < 0 and contained(dsize, dcur + offset, length) and contained(dsize, dcur, length)


def _next_offset(bits: _Bits, backbytes: int) -> int:
    """Read the low offset byte: the new (negative) offset, or 0 for the end mark."""
    byte = bits.byte()
    if backbytes & 0xFF000000:
        raise _Fail()
    return (((backbytes << 8) + byte) & M32) ^ M32


def _nrv_inflate(src: bytes, ssize: int, dst: bytearray, dsize: int, ctx: UnpackContext,
                 read_match) -> int:
    """The loop NRV2B, NRV2D and NRV2E share (libclamav's unupx.c): runs of
    literal bytes, each ended by a match that `read_match(bits, offset)` reads
    as (offset, length), or None for the end mark. The number of bytes made."""
    bits = _Bits(src, ssize)
    bit = bits.bit
    dcur = 0
    offset = -1
    next_check = _CHECK_EVERY
    while True:
        while bit():
            if bits.pos >= ssize or dcur >= dsize:
                raise _Fail()
            dst[dcur] = src[bits.pos]
            bits.pos += 1
            dcur += 1
            if dcur >= next_check:
                ctx.check()
                next_check = dcur + _CHECK_EVERY
        match = read_match(bits, offset)
        if match is None:
            break
        offset, backsize = match
        if not _match_ok(dsize, dcur, offset, backsize):
            raise _Fail()
        _copy_match(dst, dcur, -offset, backsize)
        dcur += backsize
        if dcur >= next_check:
            ctx.check()
            next_check = dcur + _CHECK_EVERY
    return dcur


def _long_length(bit) -> int:
    """A length in the Elias-gamma-like code all three use when the short one is 0."""
    backsize = 1
    while True:
        backsize = backsize * 2 + bit()
        if bit():
            return backsize + 2


def _match_2b(bits: _Bits, offset: int) -> tuple[int, int] | None:
    bit = bits.bit
    backbytes = 1
    while True:
        b = bit()
        if backbytes + b > 0x3FFFFFFF:
            raise _Fail()
        backbytes = backbytes * 2 + b
        if bit():
            break
    backbytes -= 3
    if backbytes >= 0:
        if bits.pos >= bits.size:
            raise _Fail()
        value = _next_offset(bits, backbytes)
        if not value:
            return None
        offset = signed32(value)
    backsize = bit()
    backsize = backsize * 2 + bit()
    if not backsize:
        backsize = _long_length(bit)
    if (offset & M32) < 0xFFFFF300:
        backsize += 1
    return offset, backsize + 1


def _offset_2de(bits: _Bits, backbytes: int, offset: int) -> tuple[int, int | None]:
    """NRV2D/2E's offset step: (carry bit, new offset); None offset = end mark."""
    value = _next_offset(bits, backbytes)
    if not value:
        return 0, None
    carry = value & 1
    return carry, signed32(value) >> 1


def _read_backbytes_2de(bit) -> int:
    backbytes = 1
    while True:
        b = bit()
        if backbytes + b > 0x3FFFFFFF:
            raise _Fail()
        backbytes = backbytes * 2 + b
        if bit():
            return backbytes
        backbytes -= 1
        b = bit()
        if backbytes + b > 0x3FFFFFFF:
            raise _Fail()
        backbytes = backbytes * 2 + b


def _match_2d(bits: _Bits, offset: int) -> tuple[int, int] | None:
    bit = bits.bit
    backbytes = _read_backbytes_2de(bit) - 3
    if backbytes >= 0:
        if bits.pos >= bits.size:
            raise _Fail()
        backsize, new_offset = _offset_2de(bits, backbytes, offset)
        if new_offset is None:
            return None
        offset = new_offset
    else:
        backsize = bit()
    backsize = backsize * 2 + bit()
    if not backsize:
        backsize = _long_length(bit)
    if (offset & M32) < 0xFFFFFB00:
        backsize += 1
    return offset, backsize + 1


def _match_2e(bits: _Bits, offset: int) -> tuple[int, int] | None:
    bit = bits.bit
    backbytes = _read_backbytes_2de(bit) - 3
    if backbytes >= 0:
        if bits.pos >= bits.size:
            raise _Fail()
        carry, new_offset = _offset_2de(bits, backbytes, offset)
        if new_offset is None:
            return None
        offset = new_offset
    else:
        carry = bit()
    if carry:
        backsize = bit()
    else:
        backsize = 1
        if bit():
            backsize = 2 + bit()
        else:
            backsize = _long_length(bit)
    if (offset & M32) < 0xFFFFFB00:
        backsize += 1
    return offset, backsize + 2


def inflate_2b(src: bytes, ssize: int, dst: bytearray, dsize: int, ctx: UnpackContext) -> int:
    """NRV2B into `dst`; the number of bytes produced."""
    return _nrv_inflate(src, ssize, dst, dsize, ctx, _match_2b)


def inflate_2d(src: bytes, ssize: int, dst: bytearray, dsize: int, ctx: UnpackContext) -> int:
    return _nrv_inflate(src, ssize, dst, dsize, ctx, _match_2d)


def inflate_2e(src: bytes, ssize: int, dst: bytearray, dsize: int, ctx: UnpackContext) -> int:
    return _nrv_inflate(src, ssize, dst, dsize, ctx, _match_2e)


# -- the PE rebuild (pefromupx) -------------------------------------------


def _check_pe(dst: bytearray, dsize: int, at: int) -> tuple[int, int] | None:
    """libclamav's checkpe: (section alignment, section count) of a PE header at `at`."""
    if not contained(dsize, at, 0xF8) or u32(dst, at) != 0x4550:
        return None
    valign = u32(dst, at + 0x38)
    count = dst[at + 6] + dst[at + 7] * 256
    if not valign or not count or not contained(dsize, at + 0xF8, count * 0x28):
        return None
    return valign, count


def _imports_hint(src: bytes, ssize: int, ep: int, upx0: int, upx1: int,
                  magics: tuple[int, ...]) -> int:
    """The stub's "lea edi, [esi + imports]" operand offset (0: none found)."""
    base = ep - upx1
    for magic in magics:
        at = base + magic - 2
        if contained((ssize - 5) & M32, at, 2) and src[at] == 0x8D and src[at + 1] == 0xBE:
            return magic
    if not contained((ssize - 8) & M32, base + 0x80, 8):
        return 0
    pt = base + 0x80
    limit = min(ssize, len(src))
    while True:
        pt = src.find(b"\x8d\xbe", pt, max(pt, limit - 8))
        if pt < 0:
            return 0
        if src[pt + 6] == 0x8B and src[pt + 7] == 0x07:
            return (pt + 2 - ep + upx1) & M32
        pt += 1


def _header_after_imports(dst: bytearray, dsize: int, at: int, ctx: UnpackContext) -> int:
    """Walk the import descriptors the stub leaves before the PE header: each is a
    non-zero dword, a pad dword and NUL-terminated names ended by an empty one."""
    limit = dsize - 1  # a name byte is read only while two bytes fit
    steps = 0
    while contained(dsize, at, 8) and u32(dst, at):
        steps += 1
        if not steps % _CHECK_EVERY:
            ctx.check()
        at += 8
        while at < limit and dst[at]:
            zero = dst.find(0, at + 1, limit)
            at = (zero if zero >= 0 else max(at + 1, limit)) + 1
        at += 1
    return at + 4


def _search_header(dst: bytearray, dsize: int, dend: int,
                   ctx: UnpackContext) -> tuple[int, int, int] | None:
    """The last plausible PE header before dend - 0x120 (pehdr, valign, count)."""
    at = dend - 0xF8 - 0x28
    steps = 0
    while at > 0:
        steps += 1
        if not steps % _CHECK_EVERY:
            ctx.check()
        at = dst.rfind(b"PE\0\0", 0, at + 4)
        if at <= 0:
            return None
        found = _check_pe(dst, dsize, at)
        if found:
            return at, found[0], found[1]
        at -= 1
    return None


def _pe_from_upx(src: bytes, ssize: int, dst: bytearray, dsize: int, ep: int, upx0: int,
                 upx1: int, magics: tuple[int, ...], dend: int,
                 ctx: UnpackContext) -> tuple[int, int]:
    """pefromupx: (return value, new dsize). 1 when rebuilt (or forged), 0 when the
    rebuild gave up (the decompressed image is then scanned as it is)."""
    pehdr = None
    realstuff = 0
    valign = count = 0
    hint = _imports_hint(src, ssize, ep, upx0, upx1, magics)
    if hint and contained(ssize, ep - upx1 + hint, 4):
        imports = s32(src, ep - upx1 + hint)
        realstuff = imports & M32
        if realstuff < dsize:
            at = _header_after_imports(dst, dsize, imports, ctx)
            found = _check_pe(dst, dsize, at)
            if found:
                pehdr, (valign, count) = at, found
    if pehdr is None and dend > 0xF8 + 0x28:
        found = _search_header(dst, dsize, dend, ctx)
        if found:
            pehdr, valign, count = found
            realstuff = pehdr
    if pehdr is None:
        rebuilt = align_up(dend, 0x1000)
        head = _DOS_HEADER + _FAKE_PE + bytes(0x200 - 0xD0 - 0x120)
        dst[:dend + 0x200] = head + bytes(dst[:dend])
        put32(dst, 0xD0 + 0x50, rebuilt + 0x1000)
        put32(dst, 0xD0 + 0x100, rebuilt)
        put32(dst, 0xD0 + 0x108, rebuilt)
        return 1, rebuilt + 0x200

    foffset = align_up(0xD0 + 0xF8 + 0x28 * count, valign)
    sections = pehdr + 0xF8
    for index in range(count):
        at = sections + 0x28 * index
        vsize = align_up(u32(dst, at + 8), valign)
        urva = align_down(u32(dst, at + 12), valign)
        if not (0 < vsize <= realstuff and urva >= upx0 and urva + vsize <= upx0 + realstuff):
            return 0, dsize
        put32(dst, at + 8, vsize)
        put32(dst, at + 12, urva)
        put32(dst, at + 16, vsize)
        put32(dst, at + 20, foffset)
        if foffset + vsize > M32:
            return 0, dsize
        foffset += vsize
    put32(dst, pehdr + 8, 0x4D414C43)
    put32(dst, pehdr + 0x3C, valign)
    if foffset > MAX_ALLOCATION or foffset > dsize + REBUILD_HEADROOM:
        return 0, dsize
    rebuilt = bytearray(foffset)
    rebuilt[:0xD0] = _DOS_HEADER
    header = bytes(dst[pehdr:pehdr + 0xF8 + 0x28 * count])
    rebuilt[0xD0:0xD0 + len(header)] = header
    for index in range(count):
        at = sections + 0x28 * index
        raw, size, rva = u32(dst, at + 20), u32(dst, at + 16), u32(dst, at + 12)
        rebuilt[raw:raw + size] = dst[rva - upx0:rva - upx0 + size]
    dst[:foffset] = rebuilt
    return 1, foffset


# -- the LZMA variant ----------------------------------------------------


def inflate_lzma(src: bytes, ssize: int, dst: bytearray, dsize: int, properties: int) -> int:
    """upx_inflatelzma's decoding: -1 on a data error, else 0 (`dst` filled as far
    as the stream went: libclamav hands the full `dsize` to the rebuild anyway)."""
    lc, lp, pb = properties & 0xFF, (properties >> 8) & 0xFF, (properties >> 16) & 0xFF
    if lc >= 9 or lp >= 5 or pb >= 5:
        return -1
    try:
        decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[{
            "id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb,
            "dict_size": max(dsize, 4096)}])
        out = decoder.decompress(src[2:2 + ssize], max_length=dsize)
    except (lzma.LZMAError, ValueError):
        return -1
    dst[:len(out)] = out
    return 0


# -- cli_scanpe's UPX step -----------------------------------------------

_DECODERS = {"2b": (inflate_2b, _MAGIC_2B), "2d": (inflate_2d, _MAGIC_2D),
             "2e": (inflate_2e, _MAGIC_2E)}


def _try(name: str, pe: PackedPE, src_at: int, ssize: int, dst: bytearray, dsize: int,
         upx0: int, upx1: int, ep: int, ctx: UnpackContext) -> int | None:
    """One decoder attempt; the new dsize, or None when it returned -1."""
    decode, magics = _DECODERS[name]
    if ssize <= 0:
        return None
    src = pe.data[src_at:src_at + ssize]
    try:
        dend = decode(src, len(src), dst, dsize, ctx)
    except _Fail:
        return None
    _ret, new_size = _pe_from_upx(src, len(src), dst, dsize, ep, upx0, upx1, magics, dend, ctx)
    return new_size


def unpack_upx(pe: PackedPE, index: int, ctx: UnpackContext) -> bytes | None:
    """cli_scanpe's UPX block: section `index` is UPX0, `index + 1` UPX1. The data
    libclamav scans after it ("decompressed file"), or None when every decoder failed.
    Raises Stop where cli_scanpe returns without trying later unpackers."""
    upx0_sec, upx1_sec = pe.sections[index], pe.sections[index + 1]
    ssize = upx1_sec.rsz
    dsize = (upx0_sec.vsz + upx1_sec.vsz) & M32
    require_limits(ctx, max(dsize, ssize))
    if ssize <= 0x19 or dsize <= ssize or dsize > MAX_ALLOCATION:
        ctx.debug(f"UPX: size mismatch or dsize too big (ssize {ssize}, dsize {dsize})")
        raise Stop()
    if not ssize or upx1_sec.raw + ssize > pe.fsize:
        raise Stop()
    epb = pe.epbuff
    upx0, upx1, vep = upx0_sec.rva, upx1_sec.rva, pe.vep
    dst = bytearray(dsize + REBUILD_HEADROOM)
    raw = upx1_sec.raw

    def detect(signature: bytes) -> bool:
        return signature.find(epb[0x69:0x69 + 13]) >= 0 or signature.find(epb[0x71:0x71 + 13]) >= 0

    preferred = None
    if detect(_NRV2B):
        preferred = "2b"
    elif detect(_NRV2D):
        preferred = "2d"
    elif detect(_NRV2E):
        preferred = "2e"
    result: int | None = None
    if preferred:
        ctx.debug(f"UPX: looks like a NRV{preferred.upper()} decompression routine")
        skew = signed32(u32(epb, 2) - pe.imagebase - upx1)
        if epb[1] != 0xBE or skew <= 0 or skew > 0xFFF or skew > ssize:
            skew = 0
        result = _try(preferred, pe, raw + skew, ssize - skew, dst, dsize, upx0, upx1,
                      (vep - skew) & M32, ctx)
        if result is None and skew:
            result = _try(preferred, pe, raw, ssize, dst, dsize, upx0, upx1, vep, ctx)
    for name in ("2b", "2d", "2e"):
        if result is not None or name == preferred:
            continue
        result = _try(name, pe, raw, ssize, dst, dsize, upx0, upx1, vep, ctx)
        if result is None:
            result = _try(name, pe, raw + 0x15, (ssize - 0x15) & M32, dst, dsize, upx0, upx1,
                          (vep - 0x15) & M32, ctx)
        ctx.debug(f"UPX: NRV{name.upper()} {'succeeded' if result is not None else 'failed'}")
    success = result is not None
    if success:
        dsize = result

    lzma_props = None
    if epb[0x2F:0x2F + 20] == _LZMA2:
        strict_size, lzma_props = u32(epb, 0x21), 0x20003
    elif (_LZMA1_FIRST.find(epb[0x39:0x41]) >= 0 and _LZMA1_SECOND.find(epb[0x45:0x4D]) >= 0):
        strict_size, lzma_props = u32(epb, 0x2B), u32(epb, 0x41)
    if lzma_props is not None:
        skew = 0
        if ssize > 0x15 and epb[0] == 0x60 and epb[1] == 0xBE:
            skew = (u32(epb, 2) - upx1 - pe.imagebase) & M32
            if skew != 0x15:
                skew = 0
        if strict_size <= dsize:
            src = pe.data[raw + skew:raw + skew + 2 + ssize - skew]
            success = inflate_lzma(src, ssize - skew, dst, strict_size, lzma_props) >= 0
            if success:
                _pe_from_upx(src, ssize - skew, dst, strict_size, vep, upx0, upx1,
                             _MAGIC_LZMA, strict_size, ctx)
    if not success:
        ctx.debug("UPX: all decompressors failed")
        return None
    return bytes(dst[:dsize])
