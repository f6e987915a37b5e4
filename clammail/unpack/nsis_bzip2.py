"""NSIS's bzip2 variant, decoded in Python.

NSIS strips bzip2 to the bone: no "BZh" stream header, no CRCs, no
randomised bit. A block starts with the byte 0x31 and a 24-bit origin
pointer; the stream ends with the byte 0x17. Everything between is
standard bzip2 (Huffman-coded MTF/RLE2 symbols over a BWT block of at most
900 000 bytes, then RLE1). libbz2 checks CRCs the stream does not have, so
Python's bz2 module cannot read it; this decoder does, one block at a time,
with libclamav's sanity checks (a bad block ends the stream, what came
before it stays).
"""

from __future__ import annotations

import re

from clammail.unpack.decoders import Decoder

BLOCK_HEADER = 0x31
STREAM_END = 0x17
MAX_BLOCK = 9 * 100000
_MAX_GROUPS = 6
_MAX_ALPHA = 258
_MAX_CODE_LEN = 20
_MAX_SELECTORS = 2 + MAX_BLOCK // 50
_FAST_BITS = 10
_RLE1 = re.compile(rb"(.)\1\1\1(.)", re.DOTALL)


class BadStream(Exception):
    pass


class _Bits:
    def __init__(self, data):
        self.data = bytes(data)
        self.pos = 0
        self.buf = 0
        self.count = 0

    def get(self, n: int) -> int:
        while self.count < n:
            if self.pos >= len(self.data):
                raise BadStream("input ran out")
            self.buf = ((self.buf << 8) | self.data[self.pos]) & ((1 << 64) - 1)
            self.pos += 1
            self.count += 8
        self.count -= n
        return (self.buf >> self.count) & ((1 << n) - 1)

    def peek(self, n: int) -> int:
        """Up to `n` bits, padded with zeros past the end of the input."""
        while self.count < n and self.pos < len(self.data):
            self.buf = ((self.buf << 8) | self.data[self.pos]) & ((1 << 64) - 1)
            self.pos += 1
            self.count += 8
        if self.count >= n:
            return (self.buf >> (self.count - n)) & ((1 << n) - 1)
        return (self.buf << (n - self.count)) & ((1 << n) - 1)

    @property
    def bytes_left(self) -> int:
        return len(self.data) - self.pos


class _Table:
    """A canonical Huffman code: a fast table for short codes, the bzip2 way for long ones."""

    def __init__(self, lengths: list[int]):
        self.minlen = min(lengths)
        self.maxlen = max(lengths)
        order = sorted(range(len(lengths)), key=lambda s: (lengths[s], s))
        self.limit: dict[int, int] = {}
        self.base: dict[int, int] = {}
        self.perm = order
        code, index = 0, 0
        self.fast = [None] * (1 << _FAST_BITS)
        for length in range(self.minlen, self.maxlen + 1):
            self.base[length] = index - code
            for symbol in order[index:]:
                if lengths[symbol] != length:
                    break
                if length <= _FAST_BITS:
                    shift = _FAST_BITS - length
                    start = code << shift
                    for k in range(start, start + (1 << shift)):
                        self.fast[k] = (symbol, length)
                code += 1
                index += 1
            self.limit[length] = code - 1
            code <<= 1

    def decode(self, bits: _Bits) -> int:
        hit = self.fast[bits.peek(_FAST_BITS)]
        if hit is not None:
            bits.get(hit[1])
            return hit[0]
        value = bits.get(self.minlen)
        length = self.minlen
        while length <= self.maxlen:
            if value <= self.limit[length]:
                index = self.base[length] + value
                if 0 <= index < len(self.perm):
                    return self.perm[index]
                break
            value = (value << 1) | bits.get(1)
            length += 1
        raise BadStream("bad Huffman code")


def _block(bits: _Bits) -> bytes:
    """One block after its 0x31 byte."""
    orig_ptr = bits.get(24)
    if orig_ptr >= 10 + MAX_BLOCK:
        raise BadStream("origin pointer out of range")
    used16 = bits.get(16)
    in_use = []
    for i in range(16):
        if used16 & (0x8000 >> i):
            row = bits.get(16)
            in_use += [i * 16 + j for j in range(16) if row & (0x8000 >> j)]
    if not in_use:
        raise BadStream("no symbols")
    alpha = len(in_use) + 2
    groups = bits.get(3)
    if not 2 <= groups <= _MAX_GROUPS:
        raise BadStream("bad group count")
    nselectors = bits.get(15)
    if nselectors < 1:
        raise BadStream("no selectors")
    mtf_groups = list(range(groups))
    selectors = []
    for _ in range(nselectors):
        j = 0
        while bits.get(1):
            j += 1
            if j >= groups:
                raise BadStream("bad selector")
        if len(selectors) < _MAX_SELECTORS:
            value = mtf_groups.pop(j)
            mtf_groups.insert(0, value)
            selectors.append(value)
    tables = []
    for _ in range(groups):
        length = bits.get(5)
        lengths = []
        for _ in range(alpha):
            while True:
                if not 1 <= length <= _MAX_CODE_LEN:
                    raise BadStream("bad code length")
                if not bits.get(1):
                    break
                length += -1 if bits.get(1) else 1
            lengths.append(length)
        tables.append(_Table(lengths))

    eob = alpha - 1
    mtf = list(in_use)
    ll = bytearray()
    run, run_weight = 0, 1
    group_pos, selector_index = 0, 0
    table = None
    while True:
        if not group_pos:
            if selector_index >= len(selectors):
                raise BadStream("selectors ran out")
            table = tables[selectors[selector_index]]
            selector_index += 1
            group_pos = 50
        group_pos -= 1
        symbol = table.decode(bits)
        if symbol <= 1:  # RUNA, RUNB
            run += run_weight << symbol
            run_weight <<= 1
            if run > MAX_BLOCK:
                raise BadStream("run too long")
            continue
        if run:
            if len(ll) + run > MAX_BLOCK:
                raise BadStream("block too big")
            ll += bytes((mtf[0],)) * run
            run, run_weight = 0, 1
        if symbol == eob:
            break
        if len(ll) >= MAX_BLOCK:
            raise BadStream("block too big")
        value = mtf.pop(symbol - 1)
        mtf.insert(0, value)
        ll.append(value)
    if orig_ptr >= len(ll):
        raise BadStream("origin pointer past the block")
    # Inverse BWT: a stable sort of the positions by their byte is the T vector.
    order = sorted(range(len(ll)), key=ll.__getitem__)
    out = bytearray(len(ll))
    pos = order[orig_ptr]
    for i in range(len(ll)):
        out[i] = ll[pos]
        pos = order[pos]
    return _RLE1.sub(lambda m: m.group(1) * (4 + m.group(2)[0]), bytes(out))


class NsisBzip2(Decoder):
    """The Decoder interface over whole blocks (bzip2 produces nothing mid-block)."""

    def __init__(self, data):
        super().__init__(data)
        self._bits = _Bits(self._data)

    @property
    def input_left(self) -> int:
        return self._bits.bytes_left

    def _step(self, want: int) -> bytes:
        try:
            marker = self._bits.get(8)
            if marker == STREAM_END:
                self.status = "end"
                return b""
            if marker != BLOCK_HEADER:
                raise BadStream("no block header")
            return _block(self._bits)
        except BadStream:
            self.status = "error"
            return b""
