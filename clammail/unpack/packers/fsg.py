"""FSG 1.31, 1.33 and 2.0: libclamav's unpackers (fsg.c, detection in pe.c).

FSG compresses the image into the section after an empty one with the
aPLib-style coder; its stub's registers (found through the code at the
entry point and a small table in the header padding) tell where the data
starts, where each original section goes and the original entry point.
libclamav decompresses into a buffer the size of the empty section and
rebuilds a PE; when only the rebuild fails, the decompressed data is
scanned as it is (like UPX's).
"""

from __future__ import annotations

from dataclasses import dataclass

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.aplib import DecodeError, aplib
from clammail.unpack.packers.common import (
    M32,
    PackedPE,
    RebuildSection,
    Stop,
    contained,
    contained_in,
    rebuild_pe,
    require_limits,
    s32,
    u32,
)


@dataclass
class Unpacked:
    """What an FSG unpacker hands back: a rebuilt PE, or (rebuild failed) the
    decompressed data, which cli_scanpe scans as UPX output."""

    data: bytes
    rebuilt: bool


def _sbyte(value: int) -> int:
    return value - 256 if value & 0x80 else value


def _unfsg(packed: bytes, dsize: int, ctx: UnpackContext,
           pieces: int = 1) -> tuple[bytearray, list[tuple[int, int]]] | None:
    """cli_unfsg, `pieces` times in a row over one source and one destination
    (unfsg_133's loop): the destination and each piece's (offset, size)."""
    ssize = len(packed)
    buf = bytearray(packed) + bytearray(dsize)
    src, dst = 0, ssize
    spans = []
    for _ in range(pieces):
        start = dst
        left_s, left_d = ssize - src, ssize + dsize - dst
        if left_s <= 0 or left_d <= 0:
            return None
        try:
            src, dst = aplib(buf, src, left_s, dst, left_d, ctx)
        except DecodeError:
            return None
        spans.append((start - ssize, dst - start))
    return buf[ssize:], spans


def _raw_address(rva: int, pe: PackedPE) -> int | None:
    """cli_rawaddr with no sections: only addresses inside the headers map."""
    if rva < pe.hdr_size:
        return rva if rva < pe.fsize else None
    return None


def unfsg_200(packed: bytes, dsize: int, rva: int, pe: PackedPE, ep: int,
              ctx: UnpackContext) -> Unpacked | None:
    decoded = _unfsg(packed, dsize, ctx)
    if decoded is None:
        return None
    dest, _ = decoded
    rebuilt = rebuild_pe(dest, [RebuildSection(rva, dsize, 0, dsize)], pe.imagebase, ep, 0, 0)
    return Unpacked(rebuilt, True) if rebuilt is not None else Unpacked(bytes(dest), False)


def unfsg_133(packed: bytes, dsize: int, rvas: list[int], pe: PackedPE, ep: int,
              ctx: UnpackContext) -> Unpacked | None:
    decoded = _unfsg(packed, dsize, ctx, pieces=len(rvas))
    if decoded is None:
        return None
    dest, spans = decoded
    sections = []
    offs = 0
    for rva, (_start, size) in zip(rvas, spans, strict=True):
        sections.append(RebuildSection(rva, 0, offs, size))
        offs += size
    # libclamav's bubble sort by RVA (stable: equal RVAs keep their order).
    sections.sort(key=lambda s: s.rva)
    lastsz = dsize
    for index, section in enumerate(sections):
        if index + 1 < len(sections):
            section.vsz = (sections[index + 1].rva - section.rva) & M32
            lastsz = (lastsz - section.vsz) & M32
        else:
            section.vsz = lastsz
    rebuilt = rebuild_pe(dest, sections, pe.imagebase, ep, 0, 0)
    return Unpacked(rebuilt, True) if rebuilt is not None else Unpacked(bytes(dest), False)


def _sizes(pe: PackedPE, index: int, ctx: UnpackContext) -> tuple[int, int]:
    ssize, dsize = pe.sections[index + 1].rsz, pe.sections[index].vsz
    require_limits(ctx, max(dsize, ssize))
    if ssize <= 0x19 or dsize <= ssize:
        ctx.debug(f"FSG: size mismatch (ssize {ssize}, dsize {dsize})")
        raise Stop()
    return ssize, dsize


def _packed(pe: PackedPE, index: int, ssize: int) -> bytes:
    section = pe.sections[index + 1]
    data = pe.data[section.raw:section.raw + ssize]
    if not section.rsz or len(data) != ssize:
        raise Stop()
    return data


def fsg_200(pe: PackedPE, index: int, ctx: UnpackContext) -> Unpacked | None:
    ib = pe.imagebase
    dst_sec, src_sec = pe.sections[index], pe.sections[index + 1]
    ssize, dsize = _sizes(pe, index, ctx)
    newedx = (u32(pe.epbuff, 2) - ib) & M32
    if not contained_in(src_sec.rva, src_sec.rsz, newedx, 4):
        return None
    src = _packed(pe, index, ssize)
    at = newedx - src_sec.rva
    if newedx < src_sec.rva or not contained(ssize, at, 4):
        return None
    newedx = (u32(src, at) - ib) & M32
    if not contained_in(src_sec.rva, src_sec.rsz, newedx, 4):
        return None
    at = newedx - src_sec.rva
    if not contained(ssize, at, 32):
        return None
    newedi = (u32(src, at) - ib) & M32
    newesi = (u32(src, at + 4) - ib) & M32
    newebx = (u32(src, at + 16) - ib) & M32
    if newedi != dst_sec.rva:
        return None
    if newesi < src_sec.rva or newesi - src_sec.rva >= src_sec.rsz:
        return None
    if not contained_in(src_sec.rva, src_sec.rsz, newebx, 16):
        return None
    oldep = (u32(src, newebx + 12 - src_sec.rva) - ib) & M32
    ctx.debug(f"FSG 2.0: old EP {oldep:x}")
    start = newesi - src_sec.rva
    return unfsg_200(src[start:], dsize, newedi, pe, oldep, ctx)


def fsg_133(pe: PackedPE, index: int, ctx: UnpackContext) -> Unpacked | None:
    ib = pe.imagebase
    dst_sec, src_sec = pe.sections[index], pe.sections[index + 1]
    ssize, dsize = _sizes(pe, index, ctx)
    t = _raw_address((u32(pe.epbuff, 1) - ib) & M32, pe)
    if t is None:
        return None
    gp = (src_sec.raw - t) & M32
    require_limits(ctx, gp)
    support = pe.data[t:t + gp]
    if len(support) != gp:
        raise Stop()
    newedi = (u32(support, 4) - ib) & M32
    newesi = (u32(support, 8) - ib) & M32
    if newesi < src_sec.rva or newesi - src_sec.rva >= src_sec.rsz:
        return None
    if newedi != dst_sec.rva:
        return None
    rvas = [newedi]
    at = 12
    limit = (gp - 4) & M32
    while at < limit and t + at + 4 <= pe.fsize:
        if not at % 0x40000:
            ctx.check()
        rva = u32(pe.data, t + at)
        if not rva:
            break
        rva = (rva - (ib + 1)) & M32
        rvas.append(rva)
        if rva < dst_sec.rva or rva - dst_sec.rva >= dst_sec.vsz:
            break
        at += 4
    if at >= limit or u32(pe.data, t + at):
        return None
    src = _packed(pe, index, ssize)
    oldep = (pe.vep + 161 + 6 + s32(pe.epbuff, 163)) & M32
    ctx.debug(f"FSG 1.33: old EP {oldep:x}")
    return unfsg_133(src[newesi - src_sec.rva:], dsize, rvas, pe, oldep, ctx)


def fsg_131(pe: PackedPE, index: int, ctx: UnpackContext) -> Unpacked | None:
    ib = pe.imagebase
    dst_sec, src_sec = pe.sections[index], pe.sections[index + 1]
    t = _raw_address((u32(pe.epbuff, 1) - ib) & M32, pe)
    newesi = (u32(pe.epbuff, 11) - ib) & M32
    newedi = (u32(pe.epbuff, 6) - ib) & M32
    oldep = (pe.vep - src_sec.rva) & M32
    if t is None:
        return None
    if newesi < src_sec.rva or newesi - src_sec.rva >= src_sec.raw:
        return None
    if newedi != dst_sec.rva:
        return None
    ssize, dsize = _sizes(pe, index, ctx)
    gp = (src_sec.raw - t) & M32
    require_limits(ctx, gp)
    support = pe.data[t:t + gp]
    if len(support) != gp:
        raise Stop()

    def word(at: int) -> int:
        # libclamav reads the table through a signed char pointer.
        return (_sbyte(support[at]) | (_sbyte(support[at + 1]) << 8)) & M32

    at = 0
    count = 0
    limit = (gp - 2) & M32
    while at < limit and at + 2 <= gp:
        if not at % 0x20000:
            ctx.check()
        rva = word(at)
        if rva in (1, 2):
            break
        rva = (((rva - 2) << 12) - ib) & M32
        count += 1
        if rva < dst_sec.rva or rva - dst_sec.rva >= dst_sec.vsz:
            break
        at += 2
    if at >= (gp - 10) & M32 or u32(support, at + 6) != 2:
        return None
    rvas = [newedi] + [((((word(2 * k)) - 2) << 12) - ib) & M32 for k in range(count)]
    src = _packed(pe, index, ssize)
    gp = 0xDA + 6 * (pe.epbuff[16] == 0xE8)
    oldep = (pe.vep + gp + 6 + s32(pe.data, src_sec.raw + gp + 2 + oldep)) & M32
    ctx.debug(f"FSG 1.31: old EP {oldep:x}")
    return unfsg_133(src[newesi - src_sec.rva:], dsize, rvas, pe, oldep, ctx)


def unpack_fsg(pe: PackedPE, index: int, ctx: UnpackContext) -> Unpacked | None:
    """cli_scanpe's three FSG blocks, in its order. Raises Stop where it returns."""
    ep = pe.epbuff
    ib = pe.imagebase
    if ep[0] == 0x87 and ep[1] == 0x25:
        result = fsg_200(pe, index, ctx)
        if result is not None:
            return result
    if ep[0] == 0xBE and (u32(ep, 1) - ib) & M32 < pe.min:
        result = fsg_133(pe, index, ctx)
        if result is not None:
            return result
    src_sec = pe.sections[index + 1]
    if (ep[0] == 0xBB and (u32(ep, 1) - ib) & M32 < pe.min and ep[5] == 0xBF
            and ep[10] == 0xBE and pe.vep >= src_sec.rva
            and pe.vep - src_sec.rva > (src_sec.rva - 0xE0) & M32):
        return fsg_131(pe, index, ctx)
    return None
