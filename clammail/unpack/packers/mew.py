"""MEW 11: libclamav's unpacker (mew.c unmew11, detection in pe.c).

A MEW file starts with a jump from the entry point to a small loader kept
in the PE header area (at 0x154 or 0x158). libclamav maps the packed
section behind the (empty) destination section in one buffer and runs the
loader's aPLib decoder section after section, each block naming where the
next one goes, then rebuilds a PE whose sections are the decoded regions
aligned to pages. When the loader calls MEW's LZMA routine, the aPLib pass
only unpacks that routine's data, and `mew_lzma` decodes the image.
"""

from __future__ import annotations

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.aplib import DecodeError, aplib
from clammail.unpack.packers.common import (
    M32,
    PackedPE,
    RebuildSection,
    Stop,
    align_up,
    contained,
    contained_in,
    rebuild_pe,
    require_limits,
    s32,
    u32,
)
from clammail.unpack.packers.mew_lzma import mew_lzma

LOADER_OFFSETS = (0x154, 0x158)
LOADER_SIZE = 0xB0
MIN_EP_BYTES = 16


def unmew11(buf: bytearray, off: int, ssize: int, dsize: int, base: int, vadd: int,
            uselzma: int, ctx: UnpackContext) -> bytes | None:
    """libclamav's unmew11 over buf (dsize bytes of destination, then the packed
    section): the rebuilt PE or None."""
    vma = (base + vadd) & M32
    size_sum = ssize + dsize
    if base + vadd > M32 or size_sum > M32:
        return None
    if not contained(size_sum, off, 12):
        return None
    source = dsize + off
    lesi = source + 12
    entry_point = u32(buf, source + 4)
    newedi = u32(buf, source + 8)
    ledi = (newedi - vma) & M32
    loc_ds = (size_sum - ledi) & M32
    loc_ss = (ssize - 12 - off) & M32
    sections: list[RebuildSection] = []
    count = 0
    while True:
        ctx.check()
        if not contained(size_sum, lesi, loc_ss) or not contained(size_sum, ledi, loc_ds):
            ctx.debug("MEW: section data outside the buffer")
            return None
        try:
            f1, f2 = aplib(buf, lesi, loc_ss, ledi, loc_ds, ctx)
        except DecodeError:
            return None
        if not contained(size_sum, f1, 4):
            return None
        loc_ss = (loc_ss - (f1 + 4 - lesi)) & M32
        lesi = f1 + 4
        next_rva = u32(buf, f1)
        ledi = (next_rva - vma) & M32
        loc_ds = (size_sum - ledi) & M32
        if not uselzma:
            # libclamav grows its section array one step ahead: entry i gets its
            # size now, entry i + 1 its start.
            val = align_up(f2 & M32, 0x1000)
            if count and val < sections[count].raw:
                return None
            if not count:
                sections = [RebuildSection(vadd, 0, 0, 0)]
            sections.append(RebuildSection((val + vadd) & M32, 0, val, 0))
            current = sections[count]
            current.rsz = current.vsz = (val - current.raw) & M32 if count else val
            if current.raw + current.rsz > dsize:
                return None
        count += 1
        if not next_rva:
            break
    if uselzma:
        # Everything in one section, decoded by MEW's LZMA stage.
        if not contained(size_sum, uselzma + 8, 1) or not contained(size_sum, f1 + 4, 20 + 4 + 5):
            return None
        special = buf[uselzma + 8] == 0x50
        ctx.debug(f"MEW: lzma {'special ' if special else ''}was used, unpacking")
        if not mew_lzma(buf, f1 + 4, size_sum, vma, special, ctx):
            return None
        sections = [RebuildSection(vadd, dsize, 0, dsize)]
        count = 1
    return rebuild_pe(buf, sections[:count], base, (entry_point - base) & M32, 0, 0, align=0x1000)


def unpack_mew(pe: PackedPE, index: int, ctx: UnpackContext) -> bytes | None:
    """cli_scanpe's MEW block (section `index` empty, `index + 1` packed): the
    rebuilt PE or None (next unpacker). Raises Stop where cli_scanpe returns."""
    if pe.epsize < MIN_EP_BYTES or pe.epbuff[0] != 0xE9:
        return None
    fileoffset = (pe.vep + s32(pe.epbuff, 1) + 5) & M32
    if fileoffset not in LOADER_OFFSETS:
        return None
    ctx.debug(f"MEW: found MEW characteristics, loader at {fileoffset:#x}")
    loader = pe.data[fileoffset:fileoffset + LOADER_SIZE]
    if len(loader) != LOADER_SIZE:
        return None
    dest_sec, packed_sec = pe.sections[index], pe.sections[index + 1]
    offdiff = (u32(loader, 1) - pe.imagebase) & M32
    if offdiff <= packed_sec.rva or offdiff >= (packed_sec.rva + packed_sec.raw - 4) & M32:
        ctx.debug("MEW: ESI is not in proper section")
        return None
    offdiff -= packed_sec.rva
    if not packed_sec.rsz:
        return None
    ssize, dsize = packed_sec.vsz, dest_sec.vsz
    if ssize + dsize > M32 or offdiff >= ssize + dsize:
        return None
    require_limits(ctx, max(ssize, dsize))
    require_limits(ctx, max(ssize + dsize, packed_sec.rsz))
    if packed_sec.rsz < offdiff + 12 or packed_sec.rsz > ssize:
        ctx.debug(f"MEW: size mismatch: {packed_sec.rsz:08x}")
        return None
    buf = bytearray(ssize + dsize)
    chunk = pe.data[packed_sec.raw:packed_sec.raw + packed_sec.rsz]
    if len(chunk) != packed_sec.rsz:
        raise Stop()
    buf[dsize:dsize + len(chunk)] = chunk
    uselzma = 0
    if loader[0x7B] == 0xE8:
        first, second = pe.sections[0], pe.sections[1]
        target = (u32(loader, 0x7C) + fileoffset + 0x80) & M32
        if not contained_in(second.rva, second.vsz, target, 4):
            ctx.debug("MEW: lzma proc out of bounds")
            return None
        uselzma = (u32(loader, 0x7C) - (first.rva - fileoffset - 0x80)) & M32
    return unmew11(buf, offdiff, ssize, dsize, pe.imagebase, pe.sections[0].rva, uselzma, ctx)
