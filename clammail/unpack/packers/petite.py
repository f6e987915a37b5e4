"""Petite 2.1 / 2.2: libclamav's decompressor and section rebuild (petite.c, pe.c).

Petite's stub starts with "mov eax, <its section>"; a table after the stub
lists blocks that are first moved (bit 31 set) and then decompressed, one
per original section, with an NRV-like bit coder whose literals are XORed
with the count of bytes left. libclamav then strips the stub from the last
section, sorts the sections by address, tries to decrypt the original entry
point from the mangled import table and rebuilds a PE.

All addresses are RVAs relative to the lowest section (`base`): the image is
the sections laid out by RVA. Every read and copy is checked against it as
libclamav does; the decoder's loops end with its input.
"""

from __future__ import annotations

from dataclasses import dataclass

from clammail.unpack.base import UnpackContext
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
    signed32,
    u32,
)

_INT_MAX = 0x7FFFFFFF
LEVEL_ZERO = 0x163C988D  # level-0 Petite files: libclamav does not unpack them
MAX_SECTIONS = 96
_STUB_MAGIC = (0x645EC033, 0x1B8B188B)
_CHECK_EVERY = 1 << 15


class _Fail(Exception):
    """petite_inflate2x_1to9 returned 1."""


@dataclass
class _Section:
    rva: int
    rsz: int
    vsz: int
    raw: int = 0


class _Bits:
    """Petite's bit source: bytes MSB first, a sentinel bit marking refills
    (libclamav's doubledl); the byte pointer is shared with the literals."""

    __slots__ = ("buf", "size", "src", "dl")

    def __init__(self, buf: bytearray, src: int):
        self.buf = buf
        self.size = len(buf)
        self.src = src
        self.dl = 0

    def bit(self) -> int:
        old = self.dl
        self.dl = (old << 1) & 0xFF
        if not old & 0x7F:
            if self.src < 0 or self.src >= self.size - 1:
                raise _Fail()
            old = self.buf[self.src]
            self.dl = ((old << 1) | 1) & 0xFF
            self.src += 1
        return (old >> 7) & 1


def _decompress(buf: bytearray, src: int, dst: int, size: int, ctx: UnpackContext) -> int:
    """Decode `size` bytes from src to dst (offsets in buf); the final dst."""
    bufsz = len(buf)
    if size < 0x10000:
        check1, check2, goback = signed32(0xFFFFC060), signed32(0xFFFFFC60), 5
    elif size < 0x40000:
        check1, check2, goback = signed32(0xFFFF8180), signed32(0xFFFFF980), 7
    else:
        check1, check2, goback = signed32(0xFFFF8300), signed32(0xFFFFFB00), 8
    if not contained(bufsz, src, 1) or not contained(bufsz, dst, 1):
        raise _Fail()
    size = (size - 1) & M32
    buf[dst] = buf[src]
    dst += 1
    bits = _Bits(buf, src + 1)
    bit = bits.bit
    backbytes = oldback = 0
    steps = 0
    while size:
        steps += 1
        if not steps % _CHECK_EVERY:
            ctx.check()
        if not bit():
            at = bits.src
            if not contained(bufsz, at, 1) or not contained(bufsz, dst, 1):
                raise _Fail()
            buf[dst] = buf[at] ^ (size & 0xFF)
            bits.src = at + 1
            dst += 1
            size = (size - 1) & M32
            continue
        addsize = 0
        backbytes += 1
        while True:
            b = bit()
            if backbytes >= _INT_MAX // 2:
                raise _Fail()
            backbytes = backbytes * 2 + b
            if not bit():
                break
        backbytes -= 3
        if backbytes >= 0:
            for _ in range(goback):
                b = bit()
                if backbytes >= _INT_MAX // 2:
                    raise _Fail()
                backbytes = backbytes * 2 + b
            backbytes = ~backbytes
            addsize += 1 + (backbytes < check2) + (backbytes < check1)
            oldback = backbytes
            backsize = 0
        else:
            backsize = backbytes + 1
            backbytes = oldback
        backsize = signed32(backsize * 2 + bit())
        backsize = signed32(backsize * 2 + bit())
        if not backsize:
            backsize = 1
            while True:
                backsize = signed32(backsize * 2 + bit())
                if not bit():
                    break
            backsize = signed32(backsize + 2)
        backsize = signed32(backsize + addsize)
        size = (size - backsize) & M32
        if not contained(bufsz, dst, backsize) or not contained(bufsz, dst + backbytes, backsize):
            raise _Fail()
        source = dst + backbytes
        if -backbytes >= backsize or backbytes >= 0:
            buf[dst:dst + backsize] = buf[source:source + backsize]
        else:
            pattern = bytes(buf[source:dst])
            buf[dst:dst + backsize] = (pattern * (backsize // len(pattern) + 1))[:backsize]
        dst += backsize
        backbytes = 0
    return dst


def inflate(buf: bytearray, minrva: int, pe: PackedPE, sectcount: int, version: int,
            ctx: UnpackContext) -> bytes | None:
    """petite_inflate2x_1to9 over the image `buf` (RVA minrva at offset 0): the
    rebuilt PE, or None when it fails."""
    bufsz = len(buf)
    sections = pe.sections
    grown, skew = 0x355, 0x35
    packed = sections[sectcount - 1].rva - minrva + 0x1B8
    if version == 1:
        packed = sections[sectcount - 1].rva - minrva + 0x178
        grown, skew = 0x323, 0x34
    usects: list[_Section] = []
    bottom = enc_ep = irva = 0
    mangled = False
    check4resources = 0
    try:
        while True:
            ctx.check()
            if not contained(bufsz, packed, 4):
                return None
            srva = u32(buf, packed)
            if not srva:
                break
            size = srva & 0x7FFFFFFF
            if srva != size:
                check4resources = 0
                if not contained(bufsz, packed + 4, 8):
                    return None
                bottom = u32(buf, packed + 8)
                if bottom > M32 - 4:
                    return None
                bottom += 4
                span = ((size - 1) * 4) & M32
                src = -minrva + s32(buf, packed + 4) - span
                dst = -minrva + s32(buf, packed + 8) - span
                count = (size * 4) & M32
                if not contained(bufsz, src, count) or not contained(bufsz, dst, count):
                    return None
                buf[dst:dst + count] = buf[src:src + count]
                packed += 0x0C
                continue
            if not contained(bufsz, packed + 4, 8):
                return None
            size = u32(buf, packed + 4)
            thisrva = u32(buf, packed + 8)
            packed += 0x10
            if len(usects) >= MAX_SECTIONS:
                return None
            gap = signed32(bottom - thisrva)
            section = _Section(thisrva, size, (bottom - thisrva) & M32 if gap > 0 else size)
            usects.append(section)
            if not size:
                continue
            # The unpacked section must lie inside one of the file's sections;
            # the first one unpacked may start inside it (e.g. after an icon).
            for q in range(sectcount):
                s = sections[q]
                if not contained_in(s.rva, s.vsz, section.rva, section.vsz):
                    continue
                if not check4resources:
                    section.rva = s.rva
                    section.rsz = (thisrva - s.rva + size) & M32
                break
            else:
                return None
            dst = _decompress(buf, srva - minrva, thisrva - minrva, size, ctx)
            state: dict = {}
            _strip_stub(buf, dst, usects[-1], grown, skew, state)
            if state:
                irva, enc_ep, mangled = state["irva"], state["enc_ep"], state["mangled"]
            check4resources += 1
    except _Fail:
        return None
    if not usects:
        return None
    return _finish(buf, minrva, pe, sectcount, version, usects, enc_ep, irva, mangled, ctx)


def _strip_stub(buf: bytearray, dst: int, last: _Section, grown: int, skew: int,
                state: dict) -> None:
    """Find Petite's own code at the end of what was just unpacked, take it off
    the section and read the encrypted entry point and import array from it."""
    bufsz = len(buf)

    def magic_at(at: int) -> bool:
        return (contained(bufsz, at, 8) and u32(buf, at) == _STUB_MAGIC[0]
                and u32(buf, at + 4) == _STUB_MAGIC[1])

    reloc = None
    if last.rsz > grown and magic_at(dst - grown + 5 + 0x4F):
        reloc = 0
    elif last.rsz > grown + skew and magic_at(dst - grown + 5 + 0x4F - skew):
        reloc = skew
    if reloc is None or not contained(bufsz, dst - grown + 0x0F - 8 - reloc, 8):
        return
    test1 = u32(buf, dst - grown + 0x0F - 8 - reloc) ^ 0x9D6661AA
    test2 = u32(buf, dst - grown + 0x0F - 4 - reloc) ^ 0xE908C483
    if test1 == test2 and contained(bufsz, dst - grown + 0x0F - reloc, 0x1C0 - 0x0F + 4):
        state["irva"] = u32(buf, dst - grown + 0x121 - reloc)
        state["enc_ep"] = u32(buf, dst - grown + 0x0F - reloc) ^ test1
        state["mangled"] = u32(buf, dst - grown + 0x1C0 - reloc) != 0x90909090
    last.rsz = (last.rsz - (grown + reloc)) & M32


def _decrypt_ep(buf: bytearray, minrva: int, pe: PackedPE, sectcount: int, enc_ep: int,
                irva: int, mangled: bool, ctx: UnpackContext) -> tuple[int, bool]:
    """Petite 2.2 hides the entry point in the import thunks: (ep, decrypted)."""
    bufsz = len(buf)
    virtaddr = (pe.vep + 5 + pe.imagebase) & M32
    limit = (pe.sections[sectcount - 1].rva + pe.imagebase) & M32
    rndm = 0
    more = True
    thunk = irva - minrva
    steps = 0
    while more and contained(bufsz, thunk, 4):
        if not u32(buf, thunk):
            return enc_ep, True
        imports = -minrva + s32(buf, thunk)
        thunk += 4
        more = False
        while contained(bufsz, imports, 4):
            steps += 1
            if not steps % _CHECK_EVERY:
                ctx.check()
            more = False
            imports += 4
            api = u32(buf, imports - 4)
            if not api:
                more = True
                break
            if not api & 0x80000000 and mangled:
                rndm -= 1
            if not api & 0x80000000 and mangled and rndm < 0:
                api = virtaddr
                virtaddr = (virtaddr + 5) & M32
                rndm = virtaddr & 7
            else:
                api = 0xBFF01337
            if limit < api:
                enc_ep = (enc_ep - 1) & M32
            if api < virtaddr:
                enc_ep = (enc_ep - 1) & M32
            enc_ep = ((enc_ep & 7) << 29) | ((enc_ep & 0xFFFFFFF8) >> 3 & 0x1FFFFFFF)
    return enc_ep, False


def _finish(buf: bytearray, minrva: int, pe: PackedPE, sectcount: int, version: int,
            usects: list[_Section], enc_ep: int, irva: int, mangled: bool,
            ctx: UnpackContext) -> bytes | None:
    bufsz = len(buf)
    # libclamav's bubble sort swaps rva/rsz/vsz only: a stable sort by rva.
    usects.sort(key=lambda s: s.rva)
    for t in range(len(usects) - 1):
        usects[t].vsz = (usects[t + 1].rva - usects[t].rva) & M32
    if enc_ep:
        workdone = True
        if version == 2:
            enc_ep, workdone = _decrypt_ep(buf, minrva, pe, sectcount, enc_ep, irva, mangled, ctx)
        enc_ep = (pe.vep + 5 + enc_ep) & M32
        if not workdone:
            enc_ep = usects[0].rva
    raw = 0
    for index, s in enumerate(usects):
        if index:
            raw = (usects[index - 1].raw + usects[index - 1].rsz) & M32
        s.raw = raw
        if not s.rsz:
            continue
        if contained(bufsz, raw, s.rsz):
            src = s.rva - minrva
            chunk = bytes(buf[max(src, 0):src + s.rsz]) if src + s.rsz > 0 else b""
            if src < 0:
                chunk = bytes(min(-src, s.rsz)) + chunk
            buf[raw:raw + s.rsz] = chunk.ljust(s.rsz, b"\0")[:s.rsz]
        else:  # libclamav skips a section that no longer fits
            s.raw = usects[index - 1].raw if index else 0
            s.rsz = 0
    ctx.debug("Petite: sections " + ", ".join(
        f"rva {s.rva:x} vsz {s.vsz:x} raw {s.raw:x} rsz {s.rsz:x}" for s in usects))
    return rebuild_pe(buf, [RebuildSection(s.rva, s.vsz, s.raw, s.rsz) for s in usects],
                      pe.imagebase, enc_ep, pe.res_rva, pe.res_size)


def detect(pe: PackedPE) -> int:
    """cli_scanpe's Petite test: 2 (v2.2), 1 (v2.1) or 0."""
    ep = pe.epbuff
    target = u32(ep, 1)
    sections = pe.sections
    if ep[0] == 0xB8 and target == (sections[-1].rva + pe.imagebase) & M32:
        return 2
    if (pe.nsections >= 2 and ep[0] == 0xB8
            and target == (sections[-2].rva + pe.imagebase) & M32):
        return 1
    return 0


def unpack_petite(pe: PackedPE, version: int, ctx: UnpackContext) -> bytes | None:
    """cli_scanpe's Petite block: the rebuilt PE, or None (next unpacker).
    Raises Stop where cli_scanpe returns."""
    if u32(pe.epbuff, 0x80) == LEVEL_ZERO:
        ctx.debug("Petite: level zero compression is not supported")
        return None
    dsize = (pe.max - pe.min) & M32
    require_limits(ctx, dsize)
    if not dsize:
        raise Stop()  # libclamav's allocation of 0 bytes fails
    buf = bytearray(dsize)
    for s in pe.sections:
        if not s.raw:
            continue
        at = s.rva - pe.min
        if not s.rsz or not contained(dsize, at, s.ursz):
            raise Stop()
        chunk = pe.data[s.raw:s.raw + s.ursz]
        if len(chunk) != s.ursz:
            raise Stop()
        buf[at:at + s.ursz] = chunk
    sectcount = pe.nsections - (1 if version == 1 else 0)
    return inflate(buf, pe.min, pe, sectcount, version, ctx)
