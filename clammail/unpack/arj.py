"""ARJ archives (CL_TYPE_ARJ) and ARJ self-extractors, read as ClamAV 1.4.6 reads them.

Layout: every header starts with the marker 60 EA and a 16-bit size; the
main header comes first, then one header per file, each followed by the
file's compressed data; a header of size 0 ends the archive. Methods 1-3
are the LZH-style Huffman coder of ARJ ("decode"), method 4 the fast
Elias-gamma coder ("decode_f"), 0 is stored.

ClamAV's reader (libclamav unarj.c) has quirks that decide what is scanned,
and clammail keeps them:

- the next header is read where the previous file's data reading stopped,
  not where its compressed size says it ends: a decoder that stopped early
  (or a member skipped for a limit, or with an unknown method) leaves the
  reader inside the data, the marker is not there and the archive ends;
- a member's claimed original and compressed sizes are checked against
  MaxScanSize/MaxFileSize before extraction (the larger of the two);
- decoding runs until the header's original size is reached (the last
  match may run past it); output is flushed in 26 624-byte blocks (the
  dictionary), so a stream that breaks with a read error keeps only the
  blocks already flushed, while a bad match distance keeps everything;
- garbled (encrypted) members are skipped without a heuristic: clamscan
  reports nothing for them;
- CRCs are not checked.

`arj_members(data, ctx)` is also what the embedded-object search calls for
an ARJ archive found inside another file (an ARJ self-extractor).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from clammail.unpack import sizecheck
from clammail.unpack.base import Extracted, UnpackContext

MARKER = b"\x60\xea"
FIRST_HDR_SIZE = 30
HEADERSIZE_MAX = FIRST_HDR_SIZE + 10 + 512 + 2048
GARBLED = 0x01

DICSIZ = 26624
THRESHOLD = 3
MAXMATCH = 256
NC = 255 + MAXMATCH + 2 - THRESHOLD  # 510 literal/length codes
NP = 16 + 1
NT = 16 + 3
NPT = NT
CBIT, TBIT, PBIT = 9, 5, 5
TREE_SIZE = 2 * NC - 1
# A tree walk deeper than this is a cycle a crafted table made.
_MAX_WALK = 64
_CHECK_EVERY = 4096  # symbols between two ctx.check() calls


# Decoder status: CL_SUCCESS, CL_EFORMAT (a read past the data; the reader
# stops) and CL_EUNPACK (a bad table; the reader goes on consuming bits).
OK, FORMAT, UNPACK = 0, 1, 2


class _Format(Exception):
    """The archive is broken here: ClamAV stops reading it."""


# -- headers ------------------------------------------------------------

def _cstring(data, start: int, max_len: int) -> int | None:
    """Length of the NUL-terminated string at `start` (the NUL within max_len + 1
    bytes, and within the file), or None (libclamav fmap_need_offstr failing)."""
    window = bytes(data[start:start + max_len + 1])
    end = window.find(b"\0")
    return None if end < 0 else min(end, max_len)


def _skip_extended(data, offset: int) -> int:
    while True:
        if offset + 2 > len(data):
            raise _Format("extended header size out of file")
        (count,) = struct.unpack_from("<H", data, offset)
        offset += 2
        if count == 0:
            return offset
        offset += count + 4


def _read_header(data, offset: int, main: bool):
    """Parse the header whose size field is at `offset` (after the marker).
    Returns (fields, name, new offset) or None at the end of the archive."""
    if offset + 2 > len(data):
        raise _Format("no header size")
    (size,) = struct.unpack_from("<H", data, offset)
    start = offset
    offset += 2
    if size == 0:
        return None
    if size > HEADERSIZE_MAX or size + 2 > len(data) - offset:
        raise _Format(f"bad header size {size}")
    if offset + 30 > len(data):
        raise _Format("short header")
    fields = struct.unpack_from("<BBBBBBBBIIIIHHH", data, offset)
    first_size = fields[0]
    offset += 30
    if first_size < 30:
        raise _Format("first header size < 30")
    offset += first_size - 30
    name_max = size + 2 - (offset - start)
    if name_max < 0 or name_max > size:
        raise _Format("bad first header size")
    name = None
    name_len = 0
    if name_max > 0:
        name_len = _cstring(data, offset, name_max)
        if name_len is None:
            raise _Format("name out of file")
        name = bytes(data[offset:offset + name_len])
    offset += name_len + 1
    comment_max = size + 2 - (offset - start)
    if comment_max < 0 or comment_max > size:
        raise _Format("bad first header size")
    comment_len = 0
    if comment_max > 0:
        comment_len = _cstring(data, offset, comment_max)
        if comment_len is None:
            raise _Format("comment out of file")
    offset += comment_len + 1
    offset = _skip_extended(data, offset + 4)  # after the header CRC
    if not main and name is None:
        raise _Format("file header without a name")
    return fields, name, offset


# -- the bit reader and the decoders ------------------------------------

class _Decoder:
    """libclamav's ARJ decoding state: a 16-bit look-ahead fed byte by byte."""

    def __init__(self, data, offset: int, comp_size: int, orig_size: int):
        self.data = data
        self.end = len(data)
        self.offset = offset
        self.comp_left = comp_size
        self.orig_size = orig_size
        self.bit_buf = 0
        self.sub_bit_buf = 0
        self.bit_count = 0
        self.status = OK  # libclamav's decode status
        self.blocksize = 0
        self.left = [0] * TREE_SIZE
        self.right = [0] * TREE_SIZE
        self.c_len = [0] * NC
        self.c_table = [0] * 4096
        self.pt_len = [0] * NPT
        self.pt_table = [0] * 256
        self.getbuf = 0
        self.getlen = 0

    # fill_buf / getbits

    def fill(self, n: int) -> bool:
        """Shift `n` bits out of the look-ahead and refill it (fill_buf)."""
        if self.status == FORMAT:  # only a read failure stops the reader
            return False
        bit_buf = self.bit_buf
        if n > 16 and bit_buf << n > 0xFFFFFFFF:
            return False  # ClamAV's overflow guard: nothing changes
        bit_buf = (bit_buf << n) & 0xFFFF
        bit_count = self.bit_count
        if n > bit_count:
            sub = self.sub_bit_buf
            while n > bit_count:
                n -= bit_count
                bit_buf = (bit_buf | sub << n) & 0xFFFF
                if self.comp_left:
                    self.comp_left -= 1
                    if self.offset >= self.end:
                        self.bit_buf, self.bit_count, self.sub_bit_buf = bit_buf, bit_count, sub
                        self.status = FORMAT
                        return False
                    sub = self.data[self.offset]
                    self.offset += 1
                else:
                    sub = 0
                bit_count = 8
            self.sub_bit_buf = sub
        bit_count -= n
        self.bit_count = bit_count
        self.bit_buf = bit_buf | self.sub_bit_buf >> bit_count
        return True

    def getbits(self, n: int) -> int:
        x = self.bit_buf >> (16 - n)
        self.fill(n)
        return x

    def _walk(self, j: int, mask: int, limit: int) -> int | None:
        """Follow the overflow tree from node `j` while j >= limit."""
        steps = 0
        while True:
            if j >= TREE_SIZE or steps > _MAX_WALK:
                return None
            j = self.right[j] if self.bit_buf & mask else self.left[j]
            mask >>= 1
            steps += 1
            if j < limit:
                return j

    # Huffman tables (make_table)

    def make_table(self, nchar: int, bitlen: list, tablebits: int, table: list) -> bool:
        tablesize = len(table)
        count = [0] * 17
        for i in range(nchar):
            if bitlen[i] >= 17:
                return self._fail()
            count[bitlen[i]] += 1
        start = [0] * 18
        for i in range(1, 17):
            start[i + 1] = (start[i] + (count[i] << (16 - i))) & 0xFFFF
        if start[17] != 0:
            return self._fail()
        jutbits = 16 - tablebits
        weight = [0] * 17
        for i in range(1, tablebits + 1):
            start[i] >>= jutbits
            weight[i] = 1 << (tablebits - i)
        for i in range(tablebits + 1, 17):
            weight[i] = 1 << (16 - i)
        i = start[tablebits + 1] >> jutbits
        if i != 0:
            k = 1 << tablebits
            while i != k:
                if i >= tablesize:
                    return self._fail()
                table[i] = 0
                i += 1
        avail = nchar
        mask = 1 << (15 - tablebits)
        left, right = self.left, self.right
        for ch in range(nchar):
            length = bitlen[ch]
            if length == 0:
                continue
            k = start[length]
            nextcode = k + weight[length]
            if length <= tablebits:
                if nextcode > tablesize:
                    return self._fail()
                for i in range(start[length], nextcode):
                    table[i] = ch
            else:
                arr, idx = table, k >> jutbits
                for _ in range(length - tablebits):
                    if arr[idx] == 0:
                        if avail >= TREE_SIZE:
                            return self._fail()
                        right[avail] = left[avail] = 0
                        arr[idx] = avail
                        avail += 1
                    node = arr[idx]
                    if node >= TREE_SIZE:
                        return self._fail()
                    arr, idx = (right, node) if k & mask else (left, node)
                    k <<= 1
                arr[idx] = ch
            start[length] = nextcode & 0xFFFF
        return True

    def _fail(self) -> bool:
        self.status = UNPACK
        return False

    def read_pt_len(self, nn: int, nbit: int, special: int) -> None:
        n = self.getbits(nbit)
        if n == 0:
            c = self.getbits(nbit)
            for i in range(nn):
                self.pt_len[i] = 0
            self.pt_table[:] = [c] * 256
            return
        i = 0
        while i < n and i < NPT:
            c = self.bit_buf >> 13
            if c == 7:
                mask = 1 << 12
                while mask & self.bit_buf:
                    mask >>= 1
                    c += 1
            self.fill(3 if c < 7 else c - 3)
            if self.status:
                return
            self.pt_len[i] = c
            i += 1
            if i == special:
                c = self.getbits(2)
                if self.status:
                    return
                while c > 0 and i < NPT:
                    self.pt_len[i] = 0
                    i += 1
                    c -= 1
        while i < nn and i < NPT:
            self.pt_len[i] = 0
            i += 1
        self.make_table(nn, self.pt_len, 8, self.pt_table)

    def read_c_len(self) -> None:
        n = self.getbits(CBIT)
        if self.status:
            return
        if n == 0:
            c = self.getbits(CBIT)
            if self.status:
                return
            self.c_len[:] = [0] * NC
            self.c_table[:] = [c] * 4096
            return
        i = 0
        while i < n:
            c = self.pt_table[self.bit_buf >> 8]
            if c >= NT:
                c = self._walk(c, 1 << 7, NT)
                if c is None:
                    self.status = FORMAT
                    return
            if c >= NT:
                self.status = UNPACK
                return
            self.fill(self.pt_len[c])
            if self.status:
                return
            if c <= 2:
                if c == 0:
                    c = 1
                elif c == 1:
                    c = self.getbits(4) + 3
                else:
                    c = self.getbits(CBIT) + 20
                if self.status:
                    return
                for _ in range(c):
                    if i >= NC:
                        self.status = FORMAT
                        return
                    self.c_len[i] = 0
                    i += 1
            else:
                if i >= NC:
                    self.status = FORMAT
                    return
                self.c_len[i] = c - 2
                i += 1
        while i < NC:
            self.c_len[i] = 0
            i += 1
        self.make_table(NC, self.c_len, 12, self.c_table)

    def decode_c(self) -> int:
        if self.blocksize == 0:
            self.blocksize = self.getbits(16)
            self.read_pt_len(NT, TBIT, 3)
            self.read_c_len()
            self.read_pt_len(NT, PBIT, -1)
        self.blocksize = (self.blocksize - 1) & 0xFFFF
        j = self.c_table[self.bit_buf >> 4]
        if j >= NC:
            j = self._walk(j, 1 << 3, NC)
            if j is None:
                self.status = UNPACK
                return 0
        if j >= NC:  # a table filled from 9 bits can name 510 or 511
            self.status = UNPACK
            return 0
        self.fill(self.c_len[j])
        return j

    def decode_p(self) -> int:
        j = self.pt_table[self.bit_buf >> 8]
        if j >= NP:
            j = self._walk(j, 1 << 7, NP)
            if j is None:
                self.status = UNPACK
                return 0
        if j >= NPT:
            self.status = UNPACK
            return 0
        self.fill(self.pt_len[j])
        if j:
            j -= 1
            j = ((1 << j) + self.getbits(j)) & 0xFFFF
        return j

    # method 4's bit access (ARJ_GETBIT / ARJ_GETBITS on a 16-bit register)

    def _refill(self) -> None:
        self.getbuf = (self.getbuf | self.bit_buf >> self.getlen) & 0xFFFF
        self.fill(16 - self.getlen)
        self.getlen = 16

    def getbits_f(self, n: int) -> int:
        if self.getlen < n:
            self._refill()
        c = self.getbuf >> (16 - n)
        self.getbuf = (self.getbuf << n) & 0xFFFF
        self.getlen -= n
        return c

    def _gamma(self, first: int, stop: int) -> int:
        """decode_len / decode_ptr: a unary width prefix, then that many bits."""
        plus, power, width = 0, 1 << first, first
        while width < stop:
            if self.getlen <= 0:
                self._refill()
            bit = self.getbuf & 0x8000
            self.getbuf = (self.getbuf << 1) & 0xFFFF
            self.getlen -= 1
            if not bit:
                break
            plus += power
            power <<= 1
            width += 1
        c = self.getbits_f(width) if width else 0
        return (c + plus) & 0xFFFF


def _match_source(out_ptr: int, distance: int) -> int | None:
    """The dictionary slot a match starts at, with libclamav's 16-bit arithmetic."""
    i = (out_ptr - distance - 1) & 0xFFFF
    if i >= 0x8000:
        i -= 0x10000
    if i < 0:
        i += DICSIZ
    if i >= DICSIZ or i < 0:
        return None
    return i


class _Output:
    """The dictionary as output: a window of zeros, then everything decoded.
    `flushed` is what ClamAV has written to its file so far (whole dictionaries)."""

    def __init__(self, cap: int):
        self.buf = bytearray(DICSIZ)
        self.cap = DICSIZ + cap

    def copy(self, slot: int, length: int) -> None:
        here = len(self.buf)
        distance = (here - slot) % DICSIZ or DICSIZ
        start = here - distance
        if distance >= length:
            self.buf += self.buf[start:start + length]
        else:
            for k in range(length):
                self.buf.append(self.buf[start + k])

    def full(self) -> bool:
        return len(self.buf) >= self.cap

    def result(self, flushed_only: bool) -> bytes:
        produced = len(self.buf) - DICSIZ
        if flushed_only:
            produced -= produced % DICSIZ
        return bytes(self.buf[DICSIZ:DICSIZ + min(produced, self.cap - DICSIZ)])


def _decode(dec: _Decoder, out: _Output, check) -> bool:
    """Methods 1-3. True when the output is complete (or cut at a bad
    distance), False when the stream failed (only flushed blocks count)."""
    if not dec.fill(16):
        return False
    dec.status = OK
    count = 0
    symbols = 0
    buf, cap, orig_size = out.buf, out.cap, dec.orig_size
    while count < orig_size and len(buf) < cap:
        symbols += 1
        if symbols % _CHECK_EVERY == 0:
            check()
        chr_ = dec.decode_c()
        if chr_ <= 255:
            buf.append(chr_)
            count += 1
        else:
            length = chr_ - (256 - THRESHOLD)
            count += length
            slot = _match_source(len(buf) % DICSIZ, dec.decode_p())
            if slot is None:
                break  # "bounds exceeded": keep what was decoded
            out.copy(slot, length)
        if dec.status:
            return False
    return True


def _decode_f(dec: _Decoder, out: _Output, check) -> bool:
    """Method 4, the same rules as `_decode`."""
    if not dec.fill(16):
        return False
    dec.getlen = dec.getbuf = 0
    dec.status = OK
    count = 0
    symbols = 0
    buf, cap, orig_size = out.buf, out.cap, dec.orig_size
    while count < orig_size and len(buf) < cap:
        symbols += 1
        if symbols % _CHECK_EVERY == 0:
            check()
        chr_ = dec._gamma(0, 7)
        if dec.status:
            return False
        if chr_ == 0:
            byte = dec.getbits_f(8)
            if dec.status:
                return False
            buf.append(byte)
            count += 1
        else:
            length = chr_ - 1 + THRESHOLD
            count += length
            position = dec._gamma(9, 13)
            if dec.status:
                return False
            slot = _match_source(len(buf) % DICSIZ, position)
            if slot is None:
                break
            out.copy(slot, length)
    return True


# -- the archive --------------------------------------------------------

def unpack_arj(data, ctx: UnpackContext) -> Iterator[Extracted]:
    yield from arj_members(data, ctx)


def arj_members(data, ctx: UnpackContext) -> Iterator[Extracted]:
    """The members of the ARJ archive that starts at the beginning of `data`."""
    data = memoryview(data)
    if bytes(data[:2]) != MARKER:
        return
    try:
        main = _read_header(data, 2, main=True)
    except _Format as exc:
        ctx.debug(f"ARJ: main header: {exc}")
        return
    if main is None:
        return
    offset = main[2]
    while True:
        ctx.check()
        marker_ok = bytes(data[offset:offset + 2]) == MARKER
        offset += 2
        if not marker_ok:
            ctx.debug("ARJ: no header marker, end of archive")
            return
        try:
            header = _read_header(data, offset, main=False)
        except _Format as exc:
            ctx.debug(f"ARJ: file header: {exc}")
            return
        if header is None:
            return
        fields, raw_name, offset = header
        flags, method = fields[4], fields[5]
        comp_size, orig_size = fields[9], fields[10]
        name = raw_name.decode("latin-1")
        if not sizecheck.check(ctx, orig_size, comp_size):
            continue  # ClamAV does not skip the data: the next marker is not found
        if flags & GARBLED:
            offset += comp_size  # clamscan reports nothing for garbled files
            continue
        out, offset = _extract(data, offset, method, comp_size, orig_size, ctx)
        if out is not None and len(out):
            yield Extracted(out, name=name, compressed_size=comp_size)


def _extract(data, offset: int, method: int, comp_size: int, orig_size: int,
             ctx: UnpackContext) -> tuple[bytes | None, int]:
    """The member's bytes as ClamAV writes them, and where reading stopped."""
    cap = _member_cap(ctx)
    if method == 0:
        stored = bytes(data[offset:offset + comp_size])
        return stored[:cap], offset + len(stored)
    if method in (1, 2, 3, 4):
        dec = _Decoder(data, offset, comp_size, orig_size)
        out = _Output(cap)
        decode = _decode if method != 4 else _decode_f
        complete = decode(dec, out, ctx.check)
        if out.full():
            # Decoding stopped at what the engine would skip anyway; a sound
            # stream ends exactly at its compressed size, where ClamAV's
            # reader (which decodes it all) finds the next header.
            return out.result(flushed_only=False), min(offset + comp_size, len(data))
        return out.result(flushed_only=not complete), dec.offset
    ctx.debug(f"ARJ: unknown method {method}")
    return None, offset


# With MaxFileSize and MaxScanSize both off ClamAV writes any amount to disk;
# clammail holds a member in memory, so one member stops here.
MEMBER_CAP = 1 << 30


def _member_cap(ctx: UnpackContext) -> int:
    """How much of a member is worth decoding: the engine skips anything over
    MaxFileSize or the MaxScanSize left, so decoding more is wasted (a bomb
    whose header lies about its size stops here)."""
    limits = [MEMBER_CAP]
    max_file = ctx.option("MaxFileSize")
    if max_file:
        limits.append(max_file + 1)
    left = ctx.scan_size_left()
    if left is not None:
        limits.append(left + 1)
    return min(limits)
