"""Upack 0.39 and 1.1/1.2: libclamav's unpacker (upack.c, lzma_upack_* in mew.c,
detection in pe.c).

Upack compresses with an LZMA variant whose probabilities are 32-bit words
kept inside the image, and hides its loader in the PE header. libclamav
follows the loader's jumps to find the decoder's parameters (literal
context bits, table sizes, where input, tables and output live), decodes
with a transliteration of the loader's assembly, undoes the E8/E9 call
fixups and rebuilds a one-section PE.

This is a port of that transliteration: every "pointer" is an offset into
the image (`dest`), registers are 32-bit, and the places where libclamav
ignores a failed probability read (treating it as a 1 bit) are kept. The
decode loop writes at least one byte per step and stops at its end pointer;
the helpers' loops are bounded by 32-bit counts.
"""

from __future__ import annotations

import re

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.common import (
    M32,
    PackedPE,
    RebuildSection,
    contained,
    put32,
    rebuild_pe,
    require_limits,
    s32,
    u32,
)

UPACK_399, UPACK_11_12, UPACK_0151477, UPACK_0297729 = range(4)
UPACK_OPT_SIZE = 0x148  # SizeOfOptionalHeader of "var set" (3-section) Upack files
FAIL = 0xFFFFFFFF
_CHECK_EVERY = 1 << 14


class _Fail(Exception):
    """unupack returned -1 (or rebuilding failed)."""


def _bswap(value: int) -> int:
    return int.from_bytes((value & M32).to_bytes(4, "little"), "big")


def _sbyte(value: int) -> int:
    return value - 256 if value & 0x80 else value


class _Coder:
    """lzma_upack_esi_00/50/54: Upack's range decoder over `buf` (size `bl`)."""

    __slots__ = ("buf", "bl", "p0", "p1", "p2")

    def __init__(self, buf: bytearray, bl: int, p0: int, p1: int, p2: int):
        self.buf, self.bl = buf, bl
        self.p0, self.p1, self.p2 = p0, p1, p2

    def bit(self, prob: int) -> int:
        """Decode one bit with the probability word at `prob`; FAIL when out of bounds."""
        buf, bl = self.buf, self.bl
        if not contained(bl, prob, 4) or not contained(bl, self.p0, 4):
            return FAIL
        ret = u32(buf, prob)
        bound = ((self.p1 >> 11) * ret) & M32
        code = (_bswap(u32(buf, self.p0)) - self.p2) & M32
        if code < bound:
            self.p1 = bound
            put32(buf, prob, ret + (((0x800 - ret) & M32) >> 5))
            result = 0
        else:
            self.p2 = (self.p2 + bound) & M32
            self.p1 = (self.p1 - bound) & M32
            put32(buf, prob, ret - (ret >> 5))
            result = 1
        if not self.p1 & 0xFF000000:
            self.p2 = (self.p2 << 8) & M32
            self.p1 = (self.p1 << 8) & M32
            self.p0 += 1
        return result

    def tree(self, start: int, limit: int, probs: int) -> tuple[int, int]:
        """lzma_upack_esi_50: (value - limit, last probability address)."""
        value = start & M32
        edx = probs
        for _ in range(64):
            edx = probs + ((value << 2) & M32)
            ret = self.bit(edx)
            if ret == FAIL:
                raise _Fail()
            value = (value * 2 + ret) & M32
            if value >= limit:
                return (value - limit) & M32, edx
        raise _Fail()  # libclamav would spin here; only crafted tables get this far

    def length(self, eax: int, ecx: int, edx: int) -> tuple[int, int, int]:
        """lzma_upack_esi_54: (length, ecx, edx) for the length coder at `edx`."""
        ecx = (ecx & 0xFFFFFF00) | 8
        ret = self.bit(edx)  # libclamav does not check these two reads
        edx += 4
        eax = (eax & 0xFFFFFF00) | 1
        if ret:
            ret = self.bit(edx)
            eax |= 8
            if ret:
                ecx = (ecx << 5) & M32
                eax = 0x11
        base = eax
        value, edx = self.tree(1, ecx, edx + ((eax << 2) & M32))
        return (base + value) & M32, ecx, edx


def _decode(buf: bytearray, bl: int, init_eax: int, ebx: int, init_ecx: int, init_edi: int,
            end_edi: int, shlsize: int, paddr: int, ctx: UnpackContext) -> None:
    """unupack399: decode into buf[init_edi:end_edi]."""
    coder = _Coder(buf, bl, paddr, u32(buf, ebx), u32(buf, ebx + 4))
    bit = coder.bit
    state = [u32(buf, ebx + 4 * i) for i in range(6)]
    ecx = init_ecx
    eax_copy = init_eax
    edi = init_edi
    ebp = 0
    steps = 0
    while True:
        steps += 1
        if not steps % _CHECK_EVERY:
            ctx.check()
        eax = eax_copy
        edx = ebx + ((eax << 2) & M32) + 0x58
        if bit(edx):
            al = 11 if (eax & 0xFF) >= 7 else 8
            eax = (eax & 0xFFFFFF00) | al
            ebp = state[2]
            ecx = (ecx & 0xFFFFFF00) | 0x30
            edx += ecx
            if not bit(edx):
                eax = (eax - 1) & M32
                ebp, state[4], state[3] = state[4], state[3], ebp
                eax_copy = eax
                edx = ebx + 0xBC0
                state[5] = ebp
                temp, ecx, edx = coder.length(eax, ecx, edx)
                copy_len = temp
                eax = min((temp - 1) & M32, 3)
                ecx = 0x40
                eax = (eax << 6) & M32
                probs = ebx + (((eax << 2) + 0x378) & M32)
                eax, edx = coder.tree(1, ecx, probs)
                ebp = eax
                if eax & 0xFF >= 4:
                    ebp = 2 + (eax & 1)
                    eax = ((eax >> 1) - 1) & M32
                    eax, ecx = ecx, eax
                    ebp = (ebp << (ecx & 0xFF & 31)) & M32  # x86 shifts count mod 32
                    edx = ebx + ((ebp << 2) & M32) + 0x178
                    if (ecx & 0xFF) > 5:
                        ecx = (ecx & 0xFFFFFF00) | (((ecx & 0xFF) - 4) & 0xFF)
                        eax = 0
                        for _ in range(ecx if ecx else 1 << 32):
                            if not contained(bl, coder.p0, 4):
                                raise _Fail()
                            code = _bswap(u32(buf, coder.p0))
                            coder.p1 >>= 1
                            code = (code - coder.p2) & M32
                            eax = (eax << 1) & M32
                            if code >= coder.p1:
                                eax += 1
                                coder.p2 = (coder.p2 + coder.p1) & M32
                            if not coder.p1 & 0xFF000000:
                                coder.p2 = (coder.p2 << 8) & M32
                                coder.p1 = (coder.p1 << 8) & M32
                                coder.p0 += 1
                        ecx = (ecx & 0xFFFFFF00) | 4
                        eax = (eax << 4) & M32
                        ebp = (ebp + eax) & M32
                        edx = ebx + 0x18
                    eax = (1 << (ecx & 0xFF & 31)) & M32
                    saved_ecx = ecx
                    eax, edx = coder.tree(1, eax, edx)
                    ecx = saved_ecx
                    extra = M32 if eax & 0x80000000 else 0
                    for _ in range(ecx if ecx else 1 << 32):
                        extra = (extra * 2 + (eax & 1)) & M32
                        eax >>= 1
                    ebp = (ebp + extra) & M32
                ebp = (ebp + 1) & M32
                ecx = copy_len
            else:
                edx += ecx
                if bit(edx):
                    edx += 0x60
                    if bit(edx):
                        edx += ecx
                        ret = bit(edx)
                        ebp, state[4], state[3] = state[4], state[3], ebp
                        if ret:
                            ebp, state[5] = state[5], ebp
                    else:
                        ebp, state[3] = state[3], ebp
                else:
                    edx += ecx
                    if not bit(edx):
                        eax |= 1
                        eax_copy = eax
                        source = edi - state[2]
                        ecx = (ecx & 0xFFFFFF00) | 0x80
                        if not contained(bl, source, 1) or not contained(bl, edi, 1):
                            raise _Fail()
                        buf[edi] = buf[source]
                        edi += 1
                        if edi < end_edi:
                            continue
                        return
                eax_copy = eax
                edx = ebx + 0x778
                temp, ecx, edx = coder.length(eax, ecx, edx)
                eax, ecx = ecx, temp
            if not contained(bl, edi, ecx) or not contained(bl, edi - ebp, ecx + 1):
                raise _Fail()
            state[2] = ebp
            if ebp >= ecx:
                buf[edi:edi + ecx] = buf[edi - ebp:edi - ebp + ecx]
            elif ebp:  # a distance of 0 copies each byte onto itself
                pattern = bytes(buf[edi - ebp:edi])
                buf[edi:edi + ecx] = (pattern * (ecx // ebp + 1))[:ecx]
            edi += ecx
            eax = (eax & 0xFFFFFF00) | buf[edi - ebp]
            ecx = 0x80
        else:
            while True:
                al = eax & 0xFF
                al = al - 3 if al >= 3 else 0
                eax = (eax & 0xFFFFFF00) | al
                if al < 7:
                    break
            eax_copy = eax
            if init_edi < edi < bl:
                ebp = buf[edi - 1] >> shlsize
            else:
                ebp = 0
            ebp = (ebp * 0x300) & M32
            probs = ebx + (((ebp << 2) + 0x1008) & M32)
            edi_copy = edi
            eax = (eax & 0xFFFFFF00) | 1
            if ecx:
                cl = ecx & 0xFF
                edi -= state[2]
                if not contained(bl, edi, 1):
                    raise _Fail()
                while True:
                    eax = (eax & 0xFFFF00FF) | (0x200 if buf[edi] & cl else 0x100)
                    edx = probs + ((eax << 2) & M32)
                    ret = bit(edx)
                    al = ((eax & 0xFF) * 2 + ret) & 0xFF
                    eax = (eax & 0xFFFFFF00) | al
                    cl >>= 1
                    if not cl:
                        break
                    ah = (((eax >> 8) & 0xFF) - al) & 1
                    if not ah:
                        eax = (eax & 0xFFFF0000) | al
                        eax, edx = coder.tree(eax, 0x100, probs)
                        break
            else:
                ecx = (ecx & 0xFFFF00FF) | 0x100
                eax, edx = coder.tree(eax, ecx, probs)
            ecx = 0
            edi = edi_copy
        if not contained(bl, edi, 1):
            raise _Fail()
        buf[edi] = eax & 0xFF
        edi += 1
        if edi >= end_edi:
            return


_CALL = re.compile(rb"[\xe8\xe9]")


def _fix_calls(buf: bytearray, dsize: int, start: int, count: int, mark: int) -> None:
    """Undo Upack's E8/E9 call rewriting for `count` marked calls after `start`."""
    pos = 0
    while count:
        if not contained(dsize, start + pos, 1):
            raise _Fail()
        found = _CALL.search(buf, start + pos, dsize) if start + pos >= 0 else None
        if found is None:
            raise _Fail()  # the scan runs off the end of the image
        pos = found.start() - start + 1
        adr = found.start() + 1
        if not contained(dsize, adr, 4):
            raise _Fail()
        value = u32(buf, adr)
        if value & 0xFF != mark:
            continue
        put32(buf, adr, _bswap(value & 0xFFFFFF00) - pos - 4)
        pos += 4
        count -= 1


def _setup_var(buf: bytearray, dsize: int, epb: bytes, vma: int, ep: int, base: int,
               ctx: UnpackContext) -> tuple[int, int, int, int, int]:
    """The 3-section ("var set") loader: decode, return
    (original_ep, output start, output end, call-fix count, alvalue)."""
    version = UPACK_0297729 if epb[5] == 0xFF and epb[6] == 0x36 else UPACK_399
    esi = (s32(epb, 1) - vma) & M32
    if not contained(dsize, esi, 12):
        raise _Fail()
    original_ep = (u32(buf, esi) - vma) & M32
    esi += 8
    if version == UPACK_399:
        edi = (u32(buf, esi) - vma) & M32
        if not contained(dsize, ep + 0xA, 2) or buf[ep + 0xA] != 0xEB:
            raise _Fail()
        esi = _sbyte(buf[ep + 0xB]) + ep + 0xC
        alvalue = esi + 0x1A
        if not contained(dsize, alvalue, 2) or buf[alvalue] != 0xEB:
            raise _Fail()
        alvalue += 1
        alvalue += buf[alvalue] + 1 + 0xA
        lngjmpoff = 8
    else:
        edi = 0
        if not contained(dsize, ep + 7, 5) or buf[ep + 7] != 0xE9:
            raise _Fail()
        esi = s32(buf, ep + 8) + ep + 0xC
        alvalue = esi + 0x25
        lngjmpoff = 10
    if not contained(dsize, alvalue, 2) or buf[alvalue] != 0xB5:
        raise _Fail()
    alvalue += 1
    count = buf[alvalue]
    if not contained(dsize, alvalue, lngjmpoff + 5) or buf[alvalue + lngjmpoff] != 0xE9:
        raise _Fail()
    shlsize = u32(buf, alvalue + lngjmpoff + 1)
    if version == UPACK_399:
        shlsize = (shlsize + esi + _sbyte(buf[esi + 0x1B]) + 0x1C + 0x18) & M32
    else:
        shlsize = (shlsize + esi + 0x35) & M32
    alvalue = shlsize + 43
    aljump, shroff = 8, 24
    if not contained(dsize, alvalue - 1, 2) or buf[alvalue - 1] != 0xE3:
        alvalue = shlsize + 46
        if not contained(dsize, alvalue - 1, 2) or buf[alvalue - 1] != 0xE3:
            raise _Fail()
        if version != UPACK_0297729:
            version = UPACK_0151477
        aljump, shroff = 7, 26
    alvalue += buf[alvalue] + 1
    if not contained(dsize, alvalue, aljump + 5) or buf[alvalue + aljump] != 0xE9:
        raise _Fail()
    alvalue += (u32(buf, alvalue + aljump + 1) + aljump + 1 + 4 + 27) & M32
    if version == UPACK_0297729:
        alvalue += 2
    at = shlsize + shroff
    if not contained(dsize, at, 3) or buf[at] != 0xC1 or buf[at + 1] != 0xED:
        raise _Fail()
    shlsize = buf[at + 2]
    count *= 0x100
    if not 2 <= shlsize <= 8:
        ctx.debug("Upack: context bits out of bounds")
        raise _Fail()
    ctx.debug(f"Upack: context bits {shlsize:02x}, {count:02x}")
    if version == UPACK_0297729:
        if (not contained(dsize, esi + 6, 10) or buf[esi + 6] != 0xBE
                or buf[esi + 11] != 0xBF):
            raise _Fail()
        if u32(buf, esi + 7) < base or u32(buf, esi + 7) > vma:
            raise _Fail()
        edi = (s32(buf, esi + 12) - vma) & M32
        esi = (u32(buf, esi + 7) - base) & M32
        words, table, last_read = 0x16, 0x58, 0x64
    else:
        if not contained(dsize, esi + 7, 5) or buf[esi + 7] != 0xBE:
            raise _Fail()
        esi = (u32(buf, esi + 8) - vma) & M32
        words, table, last_read = 0x27, 0x9C, 0x34
    if (not contained(dsize, edi, table + 24 + 4 * count)
            or not contained(dsize, esi, table + last_read + 4)):
        raise _Fail()
    for _ in range(words):
        put32(buf, edi, u32(buf, esi))
        esi += 4
        edi += 4
    save3 = u32(buf, esi + 4)
    paddr = u32(buf, edi - 4) - vma
    ebx = edi
    _init_tables(buf, edi, count)
    edi = s32(buf, esi + 0xC) - vma
    if version == UPACK_0297729:
        edi = vma - base
    start = edi
    if version == UPACK_0297729:
        end = s32(buf, esi + 0x64) - vma
        save3 = u32(buf, esi + 0x40)
    else:
        end = s32(buf, esi + 0x34) - vma
    if start > end:
        raise _Fail()
    _decode(buf, dsize, 0, ebx, 0, start, end, shlsize, paddr, ctx)
    return original_ep, start, end, save3, alvalue


def _init_tables(buf: bytearray, at: int, count: int) -> None:
    """The decoder's state words: range -1, code 0, four rep distances of 1,
    then `count` probabilities of 0x400."""
    put32(buf, at, M32)
    put32(buf, at + 4, 0)
    for i in range(4):
        put32(buf, at + 8 + 4 * i, 1)
    buf[at + 24:at + 24 + 4 * count] = (0x400).to_bytes(4, "little") * count


def _setup_plain(buf: bytearray, dsize: int, epb: bytes, vma: int, ep: int, base: int,
                 ctx: UnpackContext) -> tuple[int, int, int, int, int]:
    """The 2-section loader (Upack 0.39 and 1.1/1.2)."""
    esi = vma + ep
    version = UPACK_399
    if epb[0] == 0xBE and epb[5] == 0xAD and epb[6] == 0x8B and epb[7] == 0xF8:
        version = UPACK_11_12
    if version == UPACK_11_12:
        ep_jmp, stosd_count, context_bits, alvalue = 0x1A4, 0x1B, 0x41, esi + 0x184
    else:
        ep_jmp, stosd_count, context_bits, alvalue = 0x217, 0x3A, 0x5F, esi + 0x1C1
    if not contained(dsize, esi, ep_jmp + 4):
        raise _Fail()
    original_ep = (esi + ep_jmp + 4 + s32(buf, esi + ep_jmp)) & M32
    count = buf[esi + stosd_count]
    shlsize = (8 - buf[esi + context_bits]) & M32
    if not 2 <= shlsize <= 8:
        ctx.debug("Upack: context bits out of bounds")
        raise _Fail()
    count *= 0x100
    ecx = 0
    if version == UPACK_399:
        esi += 4
        loop_count = u32(buf, esi + 2)
        put32(buf, esi + 2, 0)
        if not loop_count:
            raise _Fail()
        esi -= (loop_count - 2) & M32
        if not contained(dsize, esi, 12):
            raise _Fail()
        ebx_u = (esi - (s32(buf, esi) - base)) & M32
        esi += 4
        save2 = edi = s32(buf, esi) - base
        esi += 4
        words = s32(buf, esi)
        if words < 0:
            raise _Fail()
        esi += 4
        if (count + words) * 4 > M32 or words * 4 > 0x7FFFFFFF:
            raise _Fail()
        if (not contained(dsize, esi, words * 4)
                or not contained(dsize, edi, (words + count) * 4)):
            raise _Fail()
        for _ in range(words):
            put32(buf, edi, u32(buf, esi))
            edi += 4
            esi += 4
        if not contained(dsize, save2, 8):
            raise _Fail()
        loop_count = u32(buf, save2)
        save2 += 4
        esi = save2 + (loop_count or 1 << 32) * (ebx_u + 4)
        if not contained(dsize, esi, 4):
            raise _Fail()
        fill = u32(buf, esi)
        esi += 4
        buf[edi:edi + 4 * count] = fill.to_bytes(4, "little") * count
        if not contained(dsize, esi + 0x10, 4):
            raise _Fail()
        put32(buf, esi + 0x10, u32(buf, esi + 0x10) + ebx_u)
        ebx = esi + 0x14
        esi = save2
        edi = (u32(buf, esi) - base) & M32
        esi += 4
        if (not contained(dsize, ebx - 4, 12 + 4 * 4) or not contained(dsize, esi + 0x24, 4)
                or not contained(dsize, esi + 0x40, 4)):
            raise _Fail()
        paddr = s32(buf, ebx - 4) - base
        start = edi
        end = s32(buf, esi + 0x24) - base
        first, second = u32(buf, ebx), u32(buf, ebx + 4)
        put32(buf, ebx, second)
        put32(buf, ebx + 4, first)
    else:
        esi = 0x148
        edi = s32(buf, esi) - base
        esi += 4
        paddr = u32(buf, esi) - base
        esi += 4
        edi += 4
        ebx = edi
        if (count + 6) * 4 > M32 or not contained(dsize, edi, (6 + count) * 4):
            raise _Fail()
        _init_tables(buf, edi, count)
        edi = s32(buf, esi) - base
        start = edi
        esi += 8
        end = s32(buf, esi - 0x28) - base
    if start > end:
        raise _Fail()
    _decode(buf, dsize, ecx, ebx, ecx, start, end, shlsize, paddr, ctx)
    if version == UPACK_399:
        save3 = u32(buf, esi + 0x40)
    else:
        save3 = u32(buf, vma + ep + 0x174)
    return original_ep, start, end, save3, alvalue


def unupack(var_set: bool, buf: bytearray, pe: PackedPE, vma: int,
            ctx: UnpackContext) -> bytes | None:
    """libclamav's unupack: the rebuilt PE, or None when unpacking fails."""
    dsize = len(buf)
    setup = _setup_var if var_set else _setup_plain
    try:
        original_ep, start, end, save3, alvalue = setup(
            buf, dsize, pe.epbuff, vma, pe.ep, pe.imagebase, ctx)
        if not contained(dsize, alvalue, 1):
            return None
        ctx.debug(f"Upack: loops: {save3:08x} search value: {buf[alvalue]:02x}")
        _fix_calls(buf, dsize, start, save3, buf[alvalue])
    except _Fail:
        return None
    va = pe.sections[0].rva
    size = (end - start) & M32
    if (not var_set and (va + size) & M32 > dsize) or (var_set and size > dsize):
        return None
    image = buf if var_set else memoryview(buf)[va:]
    return rebuild_pe(image, [RebuildSection(va, size, 0, size)], pe.imagebase,
                      original_ep, 0, 0)


def detect(pe: PackedPE, found: bool) -> bool | None:
    """cli_scanpe's Upack test: None (no), else whether the "var" (3-section) form."""
    var_set = pe.opt_size == UPACK_OPT_SIZE
    if not (found or var_set):
        return None
    ep, base, low = pe.epbuff, pe.imagebase, pe.min
    esi = (u32(ep, 1) - base) & M32
    if var_set and pe.nsections == 3:
        if ep[0] == 0xBE and esi > low and ((ep[5] == 0xAD and ep[6] == 0x50)
                                              or (ep[5] == 0xFF and ep[6] == 0x36)):
            return True
    if not var_set and pe.nsections == 2:
        if ep[0] == 0x60 and ep[1] == 0xE8 and u32(ep, 2) == 9:
            return False
        if (ep[0] == 0xBE and esi < low and u32(ep, 1) > base and ep[5] == 0xAD
                and ep[6] == 0x8B and ep[7] == 0xF8):
            return False
    return None


def unpack_upack(pe: PackedPE, var_set: bool, ctx: UnpackContext) -> bytes | None:
    """cli_scanpe's Upack block: the rebuilt PE or None (next unpacker).
    Raises Stop where cli_scanpe returns."""
    s0, s1 = pe.sections[0], pe.sections[1]
    a, b = s0.vsz, s1.vsz
    if var_set:
        c = pe.sections[2].vsz
        ssize = (s0.ursz + s0.uraw) & M32
        off = s0.rva
        vma = (pe.imagebase + s0.rva) & M32
    else:
        c = s1.rva
        ssize = s1.uraw
        off = 0
        vma = (s1.rva - s1.uraw) & M32
    dsize = (a + b + c) & M32
    require_limits(ctx, max(dsize, ssize, s1.ursz))

    def fits(at: int, size: int) -> bool:  # CLI_ISCONTAINED_0_TO
        return 0 < size <= dsize and 0 <= at < dsize and at + size <= dsize

    if (not fits((s1.rva - off) & M32, s1.ursz)
            or (var_set and not fits((pe.sections[2].rva - s0.rva) & M32, ssize))
            or ssize > dsize):
        ctx.debug("Upack: probably malformed pe-header, skipping to next unpacker")
        return None
    buf = bytearray(dsize)
    head = pe.data[:ssize]
    if len(head) != ssize:
        return None
    buf[:ssize] = head
    if var_set:
        at = (pe.sections[2].rva - s0.rva) & M32
        buf[at:at + ssize] = head
    at = (s1.rva - off) & M32
    chunk = pe.data[s1.uraw:s1.uraw + s1.ursz]
    if len(chunk) != s1.ursz:
        return None
    buf[at:at + len(chunk)] = chunk
    return unupack(var_set, buf, pe, vma, ctx)
