"""Zip's "implode" method (6), decoded: PKZIP 1.x's Shannon-Fano + sliding window.

ClamAV extracts imploded zip entries and libarchive does not, so clammail
carries this small decoder, written from PKWARE's APPNOTE (section 5.3).
An imploded stream starts with two or three code trees (literals when
general-purpose flag bit 2 is set, then lengths and distances), each sent
as run-length coded bit lengths; then a bit per token picks a literal or a
(distance, length) copy from a 4 KiB or 8 KiB window (flag bit 1).
"""

from __future__ import annotations


class ExplodeError(Exception):
    """The stream is not a valid imploded stream."""


class _Bits:
    """Bits from the input, least significant bit of each byte first."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.value = 0
        self.count = 0

    def need(self, n: int) -> bool:
        while self.count < n:
            if self.pos >= len(self.data):
                return False
            self.value |= self.data[self.pos] << self.count
            self.pos += 1
            self.count += 8
        return True

    def take(self, n: int) -> int:
        if not self.need(n):
            raise ExplodeError("stream cut short")
        bits = self.value & ((1 << n) - 1)
        self.value >>= n
        self.count -= n
        return bits

    def byte(self) -> int:
        if self.count >= 8:
            return self.take(8)
        if self.pos >= len(self.data):
            raise ExplodeError("stream cut short")
        self.pos += 1
        return self.data[self.pos - 1]


class _Tree:
    """A Shannon-Fano code as a lookup table on the next `width` input bits."""

    def __init__(self, lengths: list[int]):
        # APPNOTE 5.3.7: sort by bit length (stable), hand out codes from the
        # longest down, each length stepping by 2**(16 - length); the codes
        # are then bit-reversed, because the stream is read from the low bit.
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        codes = [0] * len(lengths)
        code = increment = last = 0
        for index in reversed(order):
            code += increment
            if lengths[index] != last:
                last = lengths[index]
                increment = 1 << (16 - last)
            if code > 0xFFFF:
                raise ExplodeError("bad code tree")
            codes[index] = code
        if sum(1 << (16 - n) for n in lengths) > 1 << 16:
            raise ExplodeError("oversubscribed code tree")
        self.width = max(lengths)
        size = 1 << self.width
        table: list[tuple[int, int] | None] = [None] * size
        for symbol, (length, code) in enumerate(zip(lengths, codes, strict=True)):
            reversed_code = int(f"{code:016b}"[::-1], 2) & ((1 << length) - 1)
            for fill in range(0, size, 1 << length):
                table[reversed_code | fill] = (symbol, length)
        self.table = table

    def decode(self, bits: _Bits) -> int:
        if not bits.need(self.width):
            # Near the end of the input: fewer bits may still make a code.
            bits.need(bits.count)
        entry = self.table[bits.value & ((1 << self.width) - 1)]
        if entry is None or entry[1] > bits.count:
            raise ExplodeError("bad code")
        symbol, length = entry
        bits.value >>= length
        bits.count -= length
        return symbol


def _read_tree(bits: _Bits, count: int) -> _Tree:
    """A tree of `count` symbols, sent as (run length, bit length) bytes."""
    lengths: list[int] = []
    for _ in range(bits.byte() + 1):
        byte = bits.byte()
        lengths += [(byte & 0x0F) + 1] * ((byte >> 4) + 1)
    if len(lengths) != count:
        raise ExplodeError("code tree of the wrong size")
    return _Tree(lengths)


def explode(data: bytes, flags: int, size: int, limit: int | None = None) -> bytes:
    """Decode an imploded entry of `size` bytes (at most `limit` of them)."""
    limit = size if limit is None else min(size, limit)
    big_window = bool(flags & 0x02)
    literals = bool(flags & 0x04)
    bits = _Bits(data)
    literal_tree = _read_tree(bits, 256) if literals else None
    length_tree = _read_tree(bits, 64)
    distance_tree = _read_tree(bits, 64)
    low_bits = 7 if big_window else 6
    minimum = 3 if literals else 2
    out = bytearray()
    while len(out) < limit:
        if bits.take(1):
            out.append(literal_tree.decode(bits) if literal_tree else bits.take(8))
            continue
        low = bits.take(low_bits)
        distance = (distance_tree.decode(bits) << low_bits | low) + 1
        length = length_tree.decode(bits)
        if length == 63:
            length += bits.take(8)
        length += minimum
        start = len(out) - distance
        if start >= 0 and distance >= length:
            out += out[start:start + length]
            continue
        for i in range(length):
            # Before the start of the output the window holds zeros.
            out.append(out[start + i] if start + i >= 0 else 0)
    return bytes(out[:limit])
