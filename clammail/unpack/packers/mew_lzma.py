"""MEW's LZMA stage: libclamav's mew_lzma (mew.c), a transliteration of MEW's
own LZMA decoder (lc=4, lp=0, pb=2, 16-bit probabilities in the image).

libclamav runs MEW's assembly nearly instruction by instruction; so does
this port, because its side effects are part of the output: the
probability tables live inside the unpacked image, and a failed bounds
check leaves the image half written. "Pointers" are offsets into `src`,
registers are 32-bit. One quirk matters: the range decoder's bit function
moves the caller's probability pointer when it renormalises, and callers
that read that pointer afterwards see the moved value.

Loops are bounded: every decoded symbol writes output until the block's
size is reached, the bit-tree helpers run at most 32 rounds, and the block
chain ends at the buffer's end.
"""

from __future__ import annotations

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.common import M32, contained, put32, signed32, u32

FAIL = 0xFFFFFFFF
PROBS_BYTES = 0x6E6C
_CHECK_EVERY = 1 << 14


class _Fail(Exception):
    """mew_lzma returned -1."""


def _bswap(value: int) -> int:
    return int.from_bytes((value & M32).to_bytes(4, "little"), "big")


class _Range:
    """MEW's range decoder state (libclamav's struct lzmastate: p0 input
    pointer, p1 range, p2 code) over `src`."""

    __slots__ = ("src", "size", "p0", "p1", "p2")

    def __init__(self, src: bytearray, size: int, at: int):
        self.src, self.size = src, size
        self.p2 = _bswap(u32(src, at + 1))
        self.p1 = M32
        self.p0 = at + 5

    def bit(self, prob: int) -> tuple[int, int]:
        """lzma_486248: one bit with the 16-bit probability at `prob`; returns
        (bit or FAIL, the caller's pointer afterwards)."""
        src, size = self.src, self.size
        if not contained(size, prob, 4) or not contained(size, self.p0, 1):
            return FAIL, prob
        esi = self.p1
        eax = esi >> 11
        word = u32(src, prob)
        ret = word & 0xFFFF
        eax = (eax * ret) & M32
        edi = self.p2
        if edi < eax:
            self.p1 = eax
            edi = ((signed32(0x800 - ret) >> 5) + ((eax & 0xFFFF0000) | ret)) & M32
            put32(src, prob, (word & 0xFFFF0000) | (edi & 0xFFFF))
            ret = 0
        else:
            esi = (esi - eax) & M32
            edi = (edi - eax) & M32
            self.p1, self.p2 = esi, edi
            eax = (eax & 0xFFFF0000) | ret
            esi = (esi & 0xFFFF0000) | (ret >> 5)
            eax = (eax - esi) & M32
            put32(src, prob, (word & 0xFFFF0000) | (eax & 0xFFFF))
            ret = 1
        if self.p1 < 0x1000000:
            prob = self.p0
            self.p2 = ((self.p2 << 8) | src[self.p0]) & M32
            prob += 1
            self.p1 = (self.p1 << 8) & M32
            self.p0 = prob
        return ret, prob

    def matched_literal(self, match: int, base: int) -> tuple[int, int]:
        """lzma_48635C: a literal coded against the byte at the match distance."""
        esi = (match & 0xFF) >> 7
        match = (match << 1) & 0xFF
        ret, ecx = self.bit(base + (esi << 9) + 0x202)
        if ret == FAIL:
            raise _Fail()
        ebx = ret | 2
        while esi == ret:
            if ebx >= 0x100:
                return ebx & 0xFF, ecx
            esi = (match & 0xFF) >> 7
            match = (match << 1) & 0xFF
            ret, ecx = self.bit(base + (((esi + 1) << 8) + ebx) * 2)
            if ret == FAIL:
                raise _Fail()
            ebx = (ebx * 2) | ret
        while ebx < 0x100:
            ebx *= 2
            ret, ecx = self.bit(base + ebx)
            if ret == FAIL:
                raise _Fail()
            ebx |= ret
        return ebx & 0xFF, ecx

    def tree(self, base: int, bits: int) -> tuple[int, int]:
        """lzma_4862e0: a `bits`-bit bit-tree symbol; returns (symbol, edx)."""
        ret = 1
        if bits and not bits & 0x80000000:
            for _ in range(bits):
                esi = ret * 2
                bit, _ecx = self.bit(base + esi)
                if bit == FAIL:
                    raise _Fail()
                ret = (bit + esi) & M32
        edx = (1 << (bits & 31)) & M32
        return (ret - edx) & M32, edx

    def length(self, pos_state: int, base: int) -> int:
        """lzma_4863da: a match length (minus 2)."""
        bit, _ecx = self.bit(base)
        if bit == FAIL:
            raise _Fail()
        if bit:
            bit, _ecx = self.bit(base + 2)
            if bit == FAIL:
                raise _Fail()
            if bit:
                value, _edx = self.tree(base + 0x204, 8)
                return (value + 0x10) & M32
            value, _edx = self.tree(base + 0x104 + ((pos_state << 4) & M32), 3)
            return (value + 8) & M32
        value, _edx = self.tree(base + 4 + ((pos_state << 4) & M32), 3)
        return value

    def direct(self, count: int) -> int:
        """lzma_486204: `count` bits with probability one half."""
        esi, edi, eax = self.p1, self.p2, 0
        if count and not count & 0x80000000:
            for _ in range(count):
                esi >>= 1
                eax = (eax << 1) & M32
                if edi >= esi:
                    edi -= esi
                    eax |= 1
                if esi < 0x1000000:
                    if not contained(self.size, self.p0, 1):
                        raise _Fail()
                    edi = ((edi << 8) | self.src[self.p0]) & M32
                    esi = (esi << 8) & M32
                    self.p0 += 1
        self.p2, self.p1 = edi, esi
        return eax

    def reverse(self, base: int, count: int) -> int:
        """lzma_48631a: a reverse bit-tree of `count` bits."""
        edx = 1
        value = 0
        for edi in range(count):
            esi = (edx * 2) & M32
            bit, _ecx = self.bit(base + esi)
            if bit == FAIL:
                raise _Fail()
            edx = (esi + bit) & M32
            value |= (bit << (edi & 31)) & M32
        return value


def mew_lzma(src: bytearray, at: int, size: int, vma: int, special: bool,
             ctx: UnpackContext) -> bool:
    """libclamav's mew_lzma over src (the MEW image): True on success."""
    try:
        _decode_blocks(src, at, size, vma, special, ctx)
    except _Fail:
        return False
    return True


def _decode_blocks(src: bytearray, at: int, size: int, vma: int, special: bool,
                   ctx: UnpackContext) -> None:
    source = at
    pushed_edx = 0
    pushed_esi = 0
    if special:
        pushed_edx = u32(src, source)
        source += 4
    probs = (u32(src, source) - vma) & M32
    source += 4
    pushed_ebx = source
    while True:
        # The next block header (blocks of size 0 are skipped).
        while True:
            if not special:
                source = pushed_ebx
                if not contained(size, source, 16):
                    raise _Fail()
                if not u32(src, source):
                    return
            elif not contained(size, source, 12):
                raise _Fail()
            var28 = u32(src, source)
            source += 4
            var18 = (u32(src, source) - vma) & M32
            if special:
                pushed_esi = var18
            source += 4
            length = u32(src, source)
            source += 5
            stream = source
            source += length
            pushed_ebx = source
            if not contained(size, probs, PROBS_BYTES):
                raise _Fail()
            src[probs:probs + PROBS_BYTES] = (0x4000400).to_bytes(4, "little") * 0x1B9B
            if not contained(size, stream, 5):
                raise _Fail()
            coder = _Range(src, size, stream)
            if var28:
                break
        _decode_block(src, size, coder, probs, var18, var28, ctx)
        if special:
            _fix_calls(src, size, pushed_esi, pushed_edx)
            return


def _decode_block(src: bytearray, size: int, coder: _Range, ebx: int, var18: int,
                  var28: int, ctx: UnpackContext) -> None:
    """The decode loop of one block: var28 bytes to src[var18:]."""
    bit = coder.bit
    state = 0  # loc_esi
    var08 = var20 = 0
    rep0 = 1  # loc_edi
    rep1 = rep2 = rep3 = 1  # var14, var10, var24
    last = 0  # var1
    steps = 0
    while True:
        steps += 1
        if not steps % _CHECK_EVERY:
            ctx.check()
        pos_state = var08 & 3
        flag, ecx = bit(ebx + ((((state << 4) + pos_state) * 2) & M32))
        if flag == FAIL:
            raise _Fail()
        if flag:
            var20 = 1
            flag, ecx = bit(ebx + state * 2 + 0x180)
            if flag == FAIL:
                raise _Fail()
            if flag != 1:
                rep3, rep2 = rep2, rep1
                new_state = 10 if state >= 7 else 7
                rep1 = rep0
                state = new_state
                length = coder.length(pos_state, ebx + 0x664)
                slot_state = min(length, 3)
                slot, _edx = coder.tree(ebx + 0x360 + (slot_state << 7), 6)
                if slot < 4:
                    rep0 = slot
                else:
                    shift = ((slot - (1 << 32) if slot & 0x80000000 else slot) >> 1) - 1
                    shift &= M32
                    rep0 = (((slot & 1) | 2) << (shift & 0xFF & 31)) & M32
                    if slot >= 0xE:
                        rep0 = (rep0 + (coder.direct((shift - 4) & M32) << 4)) & M32
                        rep0 = (rep0 + coder.reverse(ebx + 0x644, 4)) & M32
                    else:
                        offset = (rep0 - slot) & M32
                        rep0 = (rep0 + coder.reverse(ebx + ((offset * 2) & M32) + 0x55E,
                                                     shift)) & M32
                rep0 = (rep0 + 1) & M32
            else:
                flag, ecx = bit(ebx + state * 2 + 0x198)
                if flag == FAIL:
                    raise _Fail()
                if flag:
                    flag, ecx = bit(ebx + state * 2 + 0x1B0)
                    if flag == FAIL:
                        raise _Fail()
                    if flag:
                        flag, ecx = bit(ebx + state * 2 + 0x1C8)
                        if flag == FAIL:
                            raise _Fail()
                        if flag:
                            distance = rep3
                            rep3 = rep2
                        else:
                            distance = rep2
                        rep2 = rep1
                    else:
                        distance = rep1
                    rep1 = rep0
                    rep0 = distance
                else:
                    flag, ecx = bit(ebx + ((((state + 0xF) << 4) + pos_state) * 2 & M32))
                    if flag == FAIL:
                        raise _Fail()
                    if not flag:
                        # One byte from the last distance.
                        source = (var08 - rep0) & M32
                        state = 11 if state >= 7 else 9
                        if not contained(size, var18 + source, 1):
                            raise _Fail()
                        last = src[var18 + source]
                        if not contained(size, var18 + var08, 1):
                            raise _Fail()
                        src[var18 + var08] = last
                        var08 += 1
                        if var08 >= var28:
                            return
                        continue
                length = coder.length(pos_state, ebx + 0xA68)
                state = 11 if state >= 7 else 8
            if not rep0:
                return  # the end mark
            length = (length + 2) & M32
            dst = var08
            source = (var08 - rep0) & M32
            left = (var28 - dst) & M32
            if ((length < left and (not contained(size, var18 + source, length)
                                    or not contained(size, var18 + dst, length)))
                    or not contained(size, var18 + source, left)
                    or not contained(size, var18 + dst, left)):
                raise _Fail()
            # Byte by byte as MEW copies (overlaps repeat); the last byte
            # copied is the next literal's context.
            count = min(length, var28 - dst)
            start, origin = var18 + dst, var18 + source
            distance = start - origin
            if distance >= count:
                src[start:start + count] = src[origin:origin + count]
            else:
                pattern = bytes(src[origin:start])
                src[start:start + count] = (pattern * (count // distance + 1))[:count]
            last = src[start + count - 1]
            var08 = dst + count
        else:
            base = ebx + 0xE6C + (((last & 0xFF) >> 4) * 3 << 9)
            if state >= 4:
                state -= 6 if state >= 10 else 3
            else:
                state = 0
            if var20 == 0:
                symbol = 1
                ecx = base
                while symbol < 0x100:
                    symbol *= 2
                    ecx += symbol
                    flag, ecx = bit(ecx)
                    if flag == FAIL:
                        raise _Fail()
                    symbol |= flag
                    if symbol < 0x100:
                        ecx = base
                last = symbol & 0xFF
            else:
                source = (var08 - rep0) & M32
                if not contained(size, var18 + source, 1):
                    raise _Fail()
                last, ecx = coder.matched_literal(src[var18 + source], base)
                var20 = 0
            if not contained(size, var18 + var08, 1):
                raise _Fail()
            src[var18 + var08] = last
            var08 += 1
        if var08 >= var28:
            return


def _fix_calls(src: bytearray, size: int, start: int, count: int) -> None:
    """MEW's "special" mode: undo the E8/E9 call rewriting of the block."""
    if count < 5 or not contained(size, start, count):
        return
    at = 0
    while at < count - 5:
        if src[start + at] in (0xE8, 0xE9):
            adr = start + at + 1
            put32(src, adr, _bswap(u32(src, adr)) - at - 1)
            at += 4
        at += 1

