"""WWPack32 1.20: libclamav's unpacker (wwunpack.c, detection in pe.c).

WWPack keeps a table of compressed blocks in its own (last) section; each
block is decompressed in place in the image of the other sections with a
bit-oriented LZ77 coder (32-bit little-endian bit words, MSB first). The
result is the image with the header patched: the WWPack section dropped,
the original entry point restored, every section's raw layout set equal to
its virtual one.

libclamav's decoder keeps going for the rest of a step after running out of
bits (it only notes the error), and a block table that leaves the section
ends the unpacking successfully; both behaviours are kept.
"""

from __future__ import annotations

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.common import (
    M32,
    PackedPE,
    Stop,
    contained,
    put32,
    require_limits,
    u32,
)

EP_START = bytes.fromhex("53558be833dbeb")
EP_AT_68 = bytes.fromhex("e8000000005 82d6d000000506033c950585050".replace(" ", ""))
_CHECK_EVERY = 1 << 15


class _Bits:
    """libclamav's RESEED/BIT/BITS macros over one compressed block."""

    __slots__ = ("data", "pos", "bt", "bc", "error")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.bt = 0
        self.bc = 0
        self.error = False
        self.reseed()

    def reseed(self) -> None:
        if self.pos + 4 <= len(self.data):
            self.bt = int.from_bytes(self.data[self.pos:self.pos + 4], "little")
            self.pos += 4
        else:
            self.error = True
        self.bc = 32

    def bit(self) -> int:
        bits = self.bt >> 31
        self.bt = (self.bt << 1) & M32
        self.bc = (self.bc - 1) & 0xFF
        if not self.bc:
            self.reseed()
        return bits

    def bits(self, count: int) -> int:
        bits = self.bt >> (32 - count)
        if self.bc >= count:
            self.bc -= count
            self.bt = (self.bt << count) & M32
            if not self.bc:
                self.reseed()
        elif self.pos + 4 <= len(self.data):
            self.bt = int.from_bytes(self.data[self.pos:self.pos + 4], "little")
            self.pos += 4
            self.bc = (self.bc + 32 - count) & 0xFF
            bits |= self.bt >> self.bc
            self.bt = (self.bt << (32 - self.bc)) & M32
        else:
            self.error = True
        return bits


def _copy(exe: bytearray, at: int, distance: int, size: int) -> None:
    source = at - distance
    if distance >= size:
        exe[at:at + size] = exe[source:source + size]
    elif distance:
        pattern = bytes(exe[source:at])
        exe[at:at + size] = (pattern * (size // distance + 1))[:size]


def _block(exe: bytearray, comp: bytes, at: int, ctx: UnpackContext) -> bool:
    """Decompress one block to exe[at:]; False on error."""
    exesz = len(exe)
    bits = _Bits(comp)
    steps = 0
    while not bits.error:
        steps += 1
        if not steps % _CHECK_EVERY:
            ctx.check()
        if not bits.bit():
            if bits.pos >= len(comp) or not contained(exesz, at, 1):
                bits.error = True
            else:
                exe[at] = comp[bits.pos]
                bits.pos += 1
                at += 1
            continue
        value = bits.bits(2)
        if value == 3:
            value = bits.bits(2)
            shifted, subbed = value + 5, 31
            if value >= 2:
                shifted += 1
                subbed += 0x80
            backbytes = ((1 << shifted) - subbed) & M32
            value = bits.bits(shifted)
            if bits.error or value == 0x1FF:
                break
            backbytes = (backbytes + value) & M32
            if not contained(exesz, at, 2) or not contained(exesz, at - backbytes, 2):
                bits.error = True
            else:
                exe[at] = exe[at - backbytes]
                exe[at + 1] = exe[at - backbytes + 1]
                at += 2
            continue
        saved = value
        value = bits.bits(3)
        if value < 6:
            count = value
            if value in (3, 4):
                if value == 4:
                    count += 1
                count += bits.bit()
            if value == 5:
                count = 12
            else:
                count += 5
            value = (bits.bits(count) + (1 << count) - 31) & M32
        elif value == 6:
            value = (bits.bits(0x0E) + 0x1FE1) & M32
        else:
            value = (bits.bits(0x0F) + 0x5FE1) & M32
        backbytes = value
        if not saved:
            if not bits.bit():
                backsize = bits.bit() + 5
            else:
                value = bits.bits(3)
                if value:
                    backsize = value + 6
                else:
                    value = bits.bits(4)
                    if value:
                        backsize = value + 13
                    else:
                        count, shifted = 4, 0x0D
                        while True:
                            if count == 7:
                                count, shifted = 0x0E, 0
                                break
                            shifted = (((shifted + 2) << 1) - 1) & 0xFFFF
                            flag = bits.bit()
                            count += 1
                            if flag:
                                break
                        backsize = (bits.bits(count) + shifted) & M32
        else:
            backsize = saved + 2
        if not contained(exesz, at, backsize) or not contained(exesz, at - backbytes, backsize):
            bits.error = True
        else:
            _copy(exe, at, backbytes, backsize)
            at += backsize
    return not bits.error


def wwunpack(exe: bytearray, wwsect: bytes, pe: PackedPE, ctx: UnpackContext) -> bytes | None:
    """libclamav's wwunpack: the patched image, or None when it fails."""
    exesz = len(exe)
    sections = pe.sections
    scount = pe.nsections - 1
    packer_sec = sections[scount]
    structs = 0x2A1
    while True:
        ctx.check()
        if not contained(packer_sec.rsz, structs, 17):
            break  # the table leaves the section: libclamav stops here, successfully
        src = (packer_sec.rva - u32(wwsect, structs)) & M32
        szd = (u32(wwsect, structs + 8) * 4) & M32
        srcend = u32(wwsect, structs + 12)
        structs += 16
        unpd = src + srcend + 4 - szd
        if not szd or not contained(exesz, unpd, szd):
            break
        ctx.debug(f"WWP: src: {src:x}, szd: {szd:x}, srcend: {srcend:x}")
        comp = bytes(exe[unpd:unpd + szd])
        exe[unpd:unpd + szd] = b"\xff" * szd
        if not _block(exe, comp, unpd, ctx):
            ctx.debug("WWPack: decompression error")
            return None
        more = wwsect[structs] if structs < len(wwsect) else 0
        structs += 1
        if not more:
            break
    at = pe.e_lfanew
    if not contained(exesz, at + 0x50, 4) or not contained(packer_sec.rsz, 0x295, 4):
        ctx.debug("WWPack: unpack memory address out of bounds")
        return None
    exe[at + 6] = scount & 0xFF
    exe[at + 7] = (scount >> 8) & 0xFF
    put32(exe, at + 0x28, u32(wwsect, 0x295) + packer_sec.rva + 0x299)
    put32(exe, at + 0x50, u32(exe, at + 0x50) - packer_sec.vsz)
    headers = (u32(exe, at + 0x14) & 0xFFFF) + at + 0x18
    for section in sections[:scount]:
        if not contained(exesz, headers, 0x28):
            return None
        put32(exe, headers + 8, section.vsz)
        put32(exe, headers + 12, section.rva)
        put32(exe, headers + 16, section.vsz)
        put32(exe, headers + 20, section.rva)
        headers += 0x28
    if not contained(exesz, headers, 0x28):
        return None
    exe[headers:headers + 0x28] = bytes(0x28)
    return bytes(exe)


def detect(pe: PackedPE) -> bool:
    """cli_scanpe's WWPack test: the entry point is WWPack's stub at its section start."""
    return (pe.nsections > 1 and pe.vep == pe.sections[-1].rva
            and pe.epbuff[:7] == EP_START and pe.epbuff[0x68:0x68 + 19] == EP_AT_68)


def unpack_wwpack(pe: PackedPE, ctx: UnpackContext) -> bytes | None:
    """cli_scanpe's WWPack block: the unpacked file or None (next unpacker).
    Raises Stop where cli_scanpe returns."""
    sections = pe.sections
    last = sections[-1]
    head = last.raw
    ssize = 0
    for index, section in enumerate(sections):
        head = min(head, section.raw)
        if index + 1 == len(sections):
            break
        ssize = max(ssize, (section.rva + section.vsz) & M32)
    if not head or not ssize or head > ssize:
        return None
    require_limits(ctx, ssize)
    exe = bytearray(ssize)
    header = pe.data[:head]
    if len(header) != head:
        raise Stop()
    exe[:head] = header
    for section in sections[:-1]:
        if not section.rsz:
            continue
        chunk = pe.data[section.raw:section.raw + section.rsz]
        if not contained(ssize, section.rva, section.rsz) or len(chunk) != section.rsz:
            ctx.debug("WWPack: probably hacked/damaged file")
            return None
        exe[section.rva:section.rva + section.rsz] = chunk
    wwsect = pe.data[last.raw:last.raw + last.rsz]
    if not last.rsz or len(wwsect) != last.rsz:
        raise Stop()
    return wwunpack(exe, wwsect, pe, ctx)
