"""ASPack 2.12 to 2.42: libclamav's decompressor and rebuild (aspack.c, pe.c).

ASPack maps the sections into an image, keeps a table of compressed blocks
(RVA, size) at a fixed place in its stub, and compresses each block with an
LZ77 variant whose literals, lengths and distances are Huffman-coded with
tables sent inside the stream (and re-sent when a special symbol says so).
libclamav decompresses every block in place in the image, undoes the E8/E9
call fixups of the first one, and rebuilds a PE from the image's sections.

The decoder below follows aspack.c symbol by symbol, including where C's
shift semantics are used on values taken from the file (x86 shifts count
modulo 32). Its loops are bounded by the block sizes and the input.
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
    u32,
)

EP_MARK = bytes.fromhex("60e803000000e9eb")
_PUSH_RET = bytes.fromhex("680000000" "0c3")
# Per version: where the stub holds what the decoder needs.
#   (ep-buffer test, EP_OFFSET, blocks table, length multipliers, code table, fixup byte)
VERSIONS = {
    "2.12": (0x3B9, 58 + 0x70E, 0x57C, 0x70E, 0x6D6, 0x148),
    "other": (0x41F, 58 + 0x76A, 0x5D8, 0x76A, 0x732, 0x13A),
    "2.42": (0x42B, 58 + 0x776, 0x5E4, 0x776, 0x73E, 0x148),
}
MIN_EP_BYTES = 0x3BF
_CHECK_EVERY = 1 << 14


class _Broken(Exception):
    """A decoding step failed (the block and so the unpacking fail)."""


def _get(buf, at: int) -> int:
    return buf[at] if 0 <= at < len(buf) else 0


class _Dictionary:
    """One Huffman table (libclamav's DICT_HELPER plus decarray3/4)."""

    __slots__ = ("starts", "ends", "size", "limits", "bases")

    def __init__(self, size: int):
        self.starts = [0] * size
        self.ends = bytearray(0x100)
        self.size = size
        self.limits = [0] * 24  # decarray3
        self.bases = [0] * 24  # decarray4


class _Stream:
    def __init__(self, data: bytes, init_array: list[int]):
        self.input = data
        self.pos = 0
        self.bitpos = 0x20
        self.hash = 0x10000
        self.init_array = init_array
        self.dicts = [_Dictionary(721), _Dictionary(28), _Dictionary(8), _Dictionary(19)]
        self.decrypt_dict = bytearray(757)
        self.dict_ok = False
        self.array1 = bytearray(19)
        self.array2 = bytearray(758)

    def fill(self) -> None:
        """readstream: refill the bit window (fails at the end of the input)."""
        while self.bitpos >= 8:
            if self.pos >= len(self.input):
                raise _Broken()
            self.hash = ((self.hash << 8) | self.input[self.pos]) & M32
            self.pos += 1
            self.bitpos -= 8

    def peek24(self) -> int:
        return (self.hash >> (8 - self.bitpos)) & 0xFFFFFF

    def bits(self, count: int) -> int:
        self.fill()
        value = (self.peek24() >> (24 - count)) & 0xFF
        self.bitpos += count
        return value

    def symbol(self, which: int) -> int:
        """getdec: one Huffman-coded symbol of table `which`."""
        self.fill()
        table = self.dicts[which]
        limits = table.limits
        ret = (self.hash >> (8 - self.bitpos)) & 0xFFFE00
        if ret < limits[8]:
            pos = table.ends[ret >> 16]
            if not pos or pos >= 24:
                raise _Broken()
        elif ret < limits[10]:
            pos = 9 if ret < limits[9] else 10
        elif ret < limits[11]:
            pos = 11
        elif ret < limits[12]:
            pos = 12
        elif ret < limits[13]:
            pos = 13
        elif ret < limits[14]:
            pos = 14
        else:
            pos = 15
        self.bitpos += pos
        ret = ((((ret - limits[pos - 1]) & M32) >> (24 - pos)) + table.bases[pos]) & M32
        if ret >= table.size:
            raise _Broken()
        return table.starts[ret]

    def build_table(self, lengths, which: int) -> None:
        """build_decrypt_array: a canonical Huffman table from code lengths."""
        table = self.dicts[which]
        size = table.size
        counts = [0] * 18
        firsts = [0] * 18
        for index in range(size):
            length = lengths[index]
            if length > 17:
                raise _Broken()
            counts[length] += 1
        limits, bases = table.limits, table.bases
        limits[0] = bases[0] = 0
        total = 0
        end = 0
        for index, shift in enumerate(range(23, 8, -1)):
            total = (total + (counts[index + 1] << shift)) & M32
            if total > 0x1000000:
                raise _Broken()
            limits[index + 1] = total
            bases[index + 1] = firsts[index + 1] = (counts[index] + bases[index]) & M32
            if shift >= 0x10:
                old, end = end, total >> 0x10
                if end != old:
                    span = (end - old) & M32
                    if not contained(0x100, old, span):
                        raise _Broken()
                    table.ends[old:end] = bytes([index + 1]) * span
        if total != 0x1000000:
            raise _Broken()
        for index in range(size):
            length = lengths[index]
            if length:
                slot = firsts[length]
                if slot >= size:
                    raise _Broken()
                table.starts[slot] = index
                firsts[length] += 1

    def build_dictionaries(self) -> None:
        """build_decrypt_dictionaries: read the code lengths of all tables."""
        if not self.bits(1):
            self.decrypt_dict[:] = bytes(757)
        for index in range(19):
            self.array1[index] = self.bits(4)
        self.build_table(self.array1, 3)
        array2 = self.array2
        counter = 0
        while counter < 757:
            ret = self.symbol(3)
            if ret >= 16:
                if ret != 16:
                    ret = 3 + self.bits(3) if ret == 17 else 11 + self.bits(7)
                    run = min(ret, 757 - counter)
                    array2[1 + counter:1 + counter + run] = bytes(run)
                else:
                    ret = 3 + self.bits(2)
                    run = min(ret, 757 - counter)
                    array2[1 + counter:1 + counter + run] = bytes([array2[counter]]) * run
                counter += run
            else:
                array2[1 + counter] = (self.decrypt_dict[counter] + ret) & 0xF
                counter += 1
        self.build_table(memoryview(array2)[1:], 0)
        self.build_table(memoryview(array2)[722:], 1)
        self.build_table(memoryview(array2)[750:], 2)
        self.dict_ok = any(array2[750 + k] != 3 for k in range(8))
        self.decrypt_dict[:] = array2[1:758]


def _decrypt(stream: _Stream, image: bytearray, stuff: int, size: int, out: int,
             ctx: UnpackContext) -> None:
    """Decode one block of `size` bytes to image[out:], with the stub's tables at `stuff`."""
    counter = 0
    hist = [0, 0, 0, 0]
    steps = 0
    while counter < size:
        steps += 1
        if not steps % _CHECK_EVERY:
            ctx.check()
        gen = stream.symbol(0)
        if gen < 256:
            image[out + counter] = gen
            counter += 1
            continue
        if gen >= 720:
            stream.build_dictionaries()
            continue
        backbytes = (gen - 256) >> 3
        if backbytes >= 58:
            raise _Broken()
        backsize = ((gen - 256) & 7) + 2
        if backsize - 2 == 7:
            gen = stream.symbol(1)
            if gen >= 0x56:
                raise _Broken()
            extra_bits = _get(image, stuff + gen + 0x1C)
            stream.fill()
            backsize = (backsize + _get(image, stuff + gen)
                        + (stream.peek24() >> ((0x18 - extra_bits) & 31))) & M32
            stream.bitpos += extra_bits
        useold = stream.init_array[backbytes]
        gen = _get(image, stuff + backbytes + 0x38)
        if not stream.dict_ok or gen < 3:
            stream.fill()
            useold = (useold + (stream.peek24() >> ((24 - gen) & 31))) & M32
            stream.bitpos += gen
        else:
            gen -= 3
            stream.fill()
            useold = (useold + ((stream.peek24() >> ((24 - gen) & 31)) * 8)) & M32
            stream.bitpos += gen
            useold = (useold + stream.symbol(2)) & M32
        if useold < 3:
            backbytes = hist[useold]
            if useold:
                hist[useold] = hist[0]
                hist[0] = backbytes
        else:
            hist[2] = hist[1]
            hist[1] = hist[0]
            hist[0] = backbytes = useold - 3
        backbytes = (backbytes + 1) & M32
        if not backbytes or backbytes > counter or backsize > size - counter:
            raise _Broken()
        start = out + counter
        source = start - backbytes
        if backbytes >= backsize:
            image[start:start + backsize] = image[source:source + backsize]
        else:
            pattern = bytes(image[source:start])
            image[start:start + backsize] = (pattern * (backsize // backbytes + 1))[:backsize]
        counter += backsize


_CALL_OR_JMP = re.compile(rb"[\xe8\xe9]")


def _undo_call_fixups(image: bytearray, start: int, size: int, mark_at: int) -> int:
    """ASPack stores E8/E9 call targets of the first block in a marked, rotated
    form; put them back (libclamav's "first sect j/c unrolling"). Returns the
    loop index libclamav ends with (it is not reset for later blocks)."""
    i = 0
    while i < size - 6:
        found = _CALL_OR_JMP.search(image, start + i, start + size - 6)
        if found is None:
            return size - 6
        i = found.start() - start
        at = found.start()
        if image[at + 1] == _get(image, mark_at):
            target = u32(image, at + 1) & 0xFFFFFF00
            target = ((target << 24) | (target >> 8)) & M32
            put32(image, at + 1, target - i)
            i += 4
        i += 1
    return i


def unaspack(image: bytearray, pe: PackedPE, version: str, ctx: UnpackContext) -> bytes | None:
    """libclamav's unaspack over the mapped image: the file to scan, or None."""
    size = len(image)
    ep = (pe.vep - 1) & M32
    _test, _ep_offset, blocks_at, multipliers, code_at, fixup_at = VERSIONS[version]
    blocks = ep + blocks_at
    init_array = []
    j = 0
    for i in range(58):
        init_array.append(j)
        at = (ep + i + multipliers) & M32
        if at < size:
            j = (j + ((1 << (image[at] & 31)) & M32)) & M32
    stream = _Stream(b"", init_array)
    block_rva = 1
    i = 0
    stuff = ep + code_at
    while contained(size, blocks, 8):
        block_rva = u32(image, blocks)
        if not block_rva:
            break
        block_size = u32(image, blocks + 4)
        if not block_size or not contained(size, block_rva, block_size):
            break
        ctx.debug(f"Aspack: unpacking block rva:{block_rva:x} - sz:{block_size:x}")
        stream.input = bytes(image[block_rva:block_rva + block_size]) + bytes(0x10E)
        stream.pos = 0
        for table in stream.dicts:
            table.limits[:] = [0] * 24
            table.bases[:] = [0] * 24
        stream.decrypt_dict[:] = bytes(757)
        stream.bitpos = 0x20
        try:
            stream.build_dictionaries()
            _decrypt(stream, image, stuff, block_size, block_rva, ctx)
        except _Broken:
            ctx.debug("Aspack: decomp_block failed")
            break
        if i == 0 and block_size > 7:
            i = _undo_call_fixups(image, block_rva, block_size, ep + fixup_at)
        if version == "2.12":
            blocks += 8
        else:
            blocks += 12
            while not (u32(image, blocks + 4) + 0x10E) & M32:
                blocks += 12
    if block_rva:
        ctx.debug("Aspack: unpacking failure")
        return None
    sections = pe.sections
    count = len(sections)
    if count > 2 and ep == sections[count - 2].rva and not sections[count - 1].rsz:
        count -= 2
    outsects = [RebuildSection(s.rva, s.vsz, s.rva, s.vsz) for s in sections[:count]]
    rebuilt = None
    if outsects:
        rebuilt = rebuild_pe(image, outsects, pe.imagebase, u32(image, ep + 0x39B), 0, 0)
    return rebuilt if rebuilt is not None else bytes(image)


def detect(pe: PackedPE) -> str | None:
    """cli_scanpe's ASPack test: the version whose stub is at the entry point."""
    if pe.epbuff[:8] != EP_MARK:
        return None
    if not any(pe.ep + ep_offset < pe.fsize for _t, ep_offset, *_ in VERSIONS.values()):
        return None
    if pe.epsize < MIN_EP_BYTES:
        return None
    for version, (test_at, *_rest) in VERSIONS.items():
        if pe.epbuff[test_at:test_at + 6] == _PUSH_RET:
            return version
    return None


def unpack_aspack(pe: PackedPE, version: str, ctx: UnpackContext) -> bytes | None:
    """cli_scanpe's ASPack block: the rebuilt file, or None (next unpacker).
    Raises Stop where cli_scanpe returns."""
    ssize = 0
    for s in pe.sections:
        ssize = max(ssize, (s.rva + s.vsz) & M32)
    if not ssize:
        return None
    require_limits(ctx, ssize)
    image = bytearray(ssize)
    for s in pe.sections:
        if not s.rsz:
            continue
        if not contained(ssize, s.rva, s.rsz):
            ctx.debug("Aspack: probably hacked/damaged Aspack file")
            return None
        chunk = pe.data[s.raw:s.raw + s.rsz]
        if len(chunk) != s.rsz:
            return None
        image[s.rva:s.rva + s.rsz] = chunk
    ctx.debug(f"Aspack: attempting to unpack ASPack {version}")
    return unaspack(image, pe, version, ctx)
