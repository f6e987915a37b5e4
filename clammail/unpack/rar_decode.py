"""Decoders for the compression of RAR 1.5 and RAR 2.0 (unpack versions 15, 20, 26).

libarchive decodes RAR 2.9/3.x and RAR 5 but not these older methods (it
fails with "Prefix found"), and Debian's ClamAV has no unrar at all, so
clammail decodes them itself, following the algorithms of RARLAB's unrar
(unpack15.cpp, unpack20.cpp), which upstream ClamAV uses:

- RAR 1.5: adaptive codes. Flag bytes choose between literals ("Huffman"
  decoding through self-sorting character tables), short and long LZ
  matches; the fixed code tables are picked by running averages.
- RAR 2.0: canonical Huffman codes (literal/length, distance, repeat
  tables sent as bit lengths, themselves coded), or "multimedia" blocks:
  up to four audio channels, each byte predicted from the previous ones
  and coded as the difference.

One `OldRarDecoder` serves one archive: in a solid archive each file goes
on from the dictionary, distances and tables the previous one left (RAR 1.5
and 2.0 files may even alternate). Output is bounded by the size the file
header gives (and by the caller's cap); the bit reader reads zeros past the
end of the packed data, so a truncated stream ends instead of hanging.
"""

from __future__ import annotations

from collections.abc import Callable

# Window sizes: RAR 2.0 dictionaries go up to 4 MiB; distances further
# back than the bytes decoded so far read zeros.
MAX_WINDOW = 4 << 20


class BitReader:
    """Bits MSB first; reading past the end gives zeros."""

    def __init__(self, data: bytes):
        self.data = bytes(data) + b"\0\0\0\0"
        self.size = len(data)
        self.pos = 0  # in bits

    def getbits(self) -> int:
        """The next 16 bits, left aligned (unrar's getbits)."""
        byte = self.pos >> 3
        window = int.from_bytes(self.data[byte:byte + 3], "big")
        return (window >> (8 - (self.pos & 7))) & 0xFFFF

    def addbits(self, n: int) -> None:
        self.pos += n

    def exhausted(self, slack: int = 0) -> bool:
        """Read past the data (plus `slack` bytes)."""
        return (self.pos >> 3) > self.size + slack


class HuffmanTable:
    """A canonical code from bit lengths, decoded as unrar does (a code
    outside the table's range decodes as the first symbol)."""

    QUICK = 10

    def __init__(self, lengths: list[int] | bytes):
        size = len(lengths)
        count = [0] * 16
        for length in lengths:
            count[length & 15] += 1
        count[0] = 0
        self.limits = [0] * 16  # left-aligned upper limit code per bit length
        self.positions = [0] * 16
        upper = 0
        for bits in range(1, 16):
            upper += count[bits]
            self.limits[bits] = upper << (16 - bits)
            upper *= 2
            self.positions[bits] = self.positions[bits - 1] + count[bits - 1]
        self.symbols = [0] * size
        next_pos = list(self.positions)
        for symbol, length in enumerate(lengths):
            length &= 15
            if length:
                self.symbols[next_pos[length]] = symbol
                next_pos[length] += 1
        self.size = size
        self.quick_bits = self.QUICK if size > 64 else self.QUICK - 3
        quick = []
        for code in range(1 << self.quick_bits):
            field = code << (16 - self.quick_bits)
            bits = 1
            while bits < 16 and field >= self.limits[bits]:
                bits += 1
            quick.append((bits, self._symbol(field, bits)))
        self.quick = quick

    def _symbol(self, field: int, bits: int) -> int:
        if bits >= 16:
            return 0
        pos = self.positions[bits] + ((field - self.limits[bits - 1]) >> (16 - bits))
        return self.symbols[pos] if pos < self.size else 0

    def decode(self, bits_in: BitReader) -> int:
        field = bits_in.getbits() & 0xFFFE
        if field < self.limits[self.quick_bits]:
            bits, symbol = self.quick[field >> (16 - self.quick_bits)]
            bits_in.addbits(bits)
            return symbol
        bits = 15
        for candidate in range(self.quick_bits + 1, 15):
            if field < self.limits[candidate]:
                bits = candidate
                break
        bits_in.addbits(bits)
        return self._symbol(field, bits)


class DecodeError(Exception):
    """The packed data cannot be decoded (a corrupt table)."""


class Output:
    """The dictionary and the bytes of the file being decoded."""

    def __init__(self):
        self.window = bytearray()
        self.produced = 0  # bytes of the current file

    def literal(self, byte: int) -> None:
        self.window.append(byte)
        self.produced += 1

    def copy(self, distance: int, length: int) -> None:
        window = self.window
        start = len(window) - distance
        self.produced += length
        if distance <= 0:  # a corrupt stream: unrar copies a byte onto itself
            window += bytes(length)
            return
        if start < 0:  # before the first byte: the zeroed window
            zeros = min(-start, length)
            window += bytes(zeros)
            length -= zeros
            start = len(window) - distance
        while length > 0:
            chunk = window[start:start + min(length, distance)]
            window += chunk
            length -= len(chunk)

    def trim(self, keep: int) -> bytes:
        """Take the current file's bytes out (the last `produced`), keeping
        `keep` bytes of history for the next file of a solid archive."""
        data = bytes(self.window[len(self.window) - self.produced:]) if self.produced else b""
        if len(self.window) > keep:
            del self.window[:len(self.window) - keep]
        self.produced = 0
        return data


# -- RAR 2.0 ----------------------------------------------------------------

NC20, DC20, RC20, BC20, MC20 = 298, 48, 28, 19, 257
_LDECODE = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96,
            112, 128, 160, 192, 224)
_LBITS = (0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5)
_DDECODE = (0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
            1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 98304,
            131072, 196608, 262144, 327680, 393216, 458752, 524288, 589824, 655360, 720896,
            786432, 851968, 917504, 983040)
_DBITS = (0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12,
          12, 13, 13, 14, 14, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16)
_SDDECODE = (0, 4, 8, 16, 32, 64, 128, 192)
_SDBITS = (2, 2, 3, 4, 5, 6, 6, 6)


class _Audio:
    """The predictor of one audio channel."""

    __slots__ = ("k", "d1", "d2", "d3", "d4", "last_delta", "dif", "count", "last_char")

    def __init__(self):
        self.k = [0, 0, 0, 0, 0]
        self.d1 = self.d2 = self.d3 = self.d4 = 0
        self.last_delta = 0
        self.dif = [0] * 11
        self.count = 0
        self.last_char = 0


def _signed8(value: int) -> int:
    value &= 0xFF
    return value - 256 if value & 0x80 else value


class OldRarDecoder:
    """The state unrar keeps between the files of one archive."""

    def __init__(self, window_size: int = MAX_WINDOW):
        self.window_size = min(max(window_size, 1 << 16), MAX_WINDOW)
        self.out = Output()
        self._reset_lz()
        self._reset20()
        self._reset15()
        self._huff15_ready = False

    def _reset_lz(self) -> None:
        self.old_dist = [0, 0, 0, 0]
        self.old_dist_ptr = 0
        self.last_dist = 0
        self.last_length = 0

    # -- the entry point ------------------------------------------------------

    def unpack(self, packed: bytes, version: int, size: int, solid: bool,
               check: Callable[[], None] | None = None) -> bytes:
        """The `size` bytes of one file (fewer when the data runs out)."""
        if not solid:
            self.out = Output()
            self._reset_lz()
            self._reset20()
            self._reset15()
            self._huff15_ready = False
        bits = BitReader(packed)
        if version == 15:
            self._unpack15(bits, size, solid, check)
        else:
            self._unpack20(bits, size, solid, check)
        data = self.out.trim(self.window_size)
        return data[:size]

    # -- RAR 2.0 --------------------------------------------------------------

    def _reset20(self) -> None:
        self.tables_read = False
        self.audio_block = False
        self.channels = 1
        self.cur_channel = 0
        self.channel_delta = 0
        self.audio = [_Audio() for _ in range(4)]
        self.old_table = bytearray(MC20 * 4)
        self.ld = self.dd = self.rd = None
        self.md: list[HuffmanTable | None] = [None] * 4

    def _read_tables20(self, bits: BitReader) -> bool:
        field = bits.getbits()
        self.audio_block = bool(field & 0x8000)
        if not field & 0x4000:
            self.old_table = bytearray(MC20 * 4)
        bits.addbits(2)
        if self.audio_block:
            self.channels = ((field >> 12) & 3) + 1
            if self.cur_channel >= self.channels:
                self.cur_channel = 0
            bits.addbits(2)
            table_size = MC20 * self.channels
        else:
            table_size = NC20 + DC20 + RC20
        lengths = []
        for _ in range(BC20):
            lengths.append(bits.getbits() >> 12)
            bits.addbits(4)
        bd = HuffmanTable(lengths)
        table = bytearray(table_size)
        i = 0
        while i < table_size:
            if bits.exhausted():
                return False
            number = bd.decode(bits)
            if number < 16:
                table[i] = (number + self.old_table[i]) & 0xF
                i += 1
            elif number == 16:
                n = (bits.getbits() >> 14) + 3
                bits.addbits(2)
                if i == 0:
                    return False  # "repeat previous" with nothing before
                while n > 0 and i < table_size:
                    table[i] = table[i - 1]
                    i += 1
                    n -= 1
            else:
                if number == 17:
                    n = (bits.getbits() >> 13) + 3
                    bits.addbits(3)
                else:
                    n = (bits.getbits() >> 9) + 11
                    bits.addbits(7)
                while n > 0 and i < table_size:
                    table[i] = 0
                    i += 1
                    n -= 1
        self.tables_read = True
        if bits.exhausted():
            return True
        if self.audio_block:
            for channel in range(self.channels):
                self.md[channel] = HuffmanTable(table[channel * MC20:(channel + 1) * MC20])
        else:
            self.ld = HuffmanTable(table[:NC20])
            self.dd = HuffmanTable(table[NC20:NC20 + DC20])
            self.rd = HuffmanTable(table[NC20 + DC20:])
        self.old_table[:table_size] = table
        return True

    def _copy20(self, length: int, distance: int) -> None:
        self.last_dist = self.old_dist[self.old_dist_ptr] = distance
        self.old_dist_ptr = (self.old_dist_ptr + 1) & 3
        self.last_length = length
        self.out.copy(distance, length)

    def _extra(self, bits: BitReader, n: int) -> int:
        if not n:
            return 0
        value = bits.getbits() >> (16 - n)
        bits.addbits(n)
        return value

    def _unpack20(self, bits: BitReader, size: int, solid: bool, check) -> None:
        out = self.out
        if (not solid or not self.tables_read) and not self._read_tables20(bits):
            return
        steps = 0
        while out.produced < size:
            if bits.exhausted(4):
                return  # unrar stops when its read buffer runs dry
            steps += 1
            if check is not None and not steps & 0xFFFF:
                check()
            if self.audio_block:
                table = self.md[self.cur_channel]
                if table is None:
                    return
                number = table.decode(bits)
                if number == 256:
                    if not self._read_tables20(bits):
                        return
                    continue
                out.literal(self._decode_audio(number))
                self.cur_channel += 1
                if self.cur_channel == self.channels:
                    self.cur_channel = 0
                continue
            if self.ld is None:
                return
            number = self.ld.decode(bits)
            if number < 256:
                out.literal(number)
            elif number > 269:
                number -= 270
                length = _LDECODE[number] + 3 + self._extra(bits, _LBITS[number])
                dist_number = self.dd.decode(bits)
                distance = _DDECODE[dist_number] + 1 + self._extra(bits, _DBITS[dist_number])
                if distance >= 0x2000:
                    length += 1
                    if distance >= 0x40000:
                        length += 1
                self._copy20(length, distance)
            elif number == 269:
                if not self._read_tables20(bits):
                    return
            elif number == 256:
                self._copy20(self.last_length, self.last_dist)
            elif number < 261:
                distance = self.old_dist[(self.old_dist_ptr - (number - 256)) & 3]
                length_number = self.rd.decode(bits)
                length = _LDECODE[length_number] + 2 + self._extra(bits, _LBITS[length_number])
                if distance >= 0x101:
                    length += 1
                    if distance >= 0x2000:
                        length += 1
                        if distance >= 0x40000:
                            length += 1
                self._copy20(length, distance)
            else:
                number -= 261
                distance = _SDDECODE[number] + 1 + self._extra(bits, _SDBITS[number])
                self._copy20(2, distance)
        self._read_last_tables(bits)

    def _read_last_tables(self, bits: BitReader) -> None:
        """Tables sent at the end of a file, for the next file of a solid archive."""
        if (bits.pos >> 3) + 5 > bits.size:
            return
        if self.audio_block:
            table = self.md[self.cur_channel]
            if table is not None and table.decode(bits) == 256:
                self._read_tables20(bits)
        elif self.ld is not None and self.ld.decode(bits) == 269:
            self._read_tables20(bits)

    def _decode_audio(self, delta: int) -> int:
        v = self.audio[self.cur_channel]
        v.count += 1
        v.d4 = v.d3
        v.d3 = v.d2
        v.d2 = v.last_delta - v.d1
        v.d1 = v.last_delta
        k = v.k
        predicted = (8 * v.last_char + k[0] * v.d1 + k[1] * v.d2 + k[2] * v.d3 + k[3] * v.d4
                     + k[4] * self.channel_delta)
        predicted = (predicted >> 3) & 0xFF
        ch = predicted - delta
        d = _signed8(delta) << 3
        dif = v.dif
        dif[0] += abs(d)
        dif[1] += abs(d - v.d1)
        dif[2] += abs(d + v.d1)
        dif[3] += abs(d - v.d2)
        dif[4] += abs(d + v.d2)
        dif[5] += abs(d - v.d3)
        dif[6] += abs(d + v.d3)
        dif[7] += abs(d - v.d4)
        dif[8] += abs(d + v.d4)
        dif[9] += abs(d - self.channel_delta)
        dif[10] += abs(d + self.channel_delta)
        self.channel_delta = v.last_delta = _signed8(ch - v.last_char)
        v.last_char = ch
        if not v.count & 0x1F:
            smallest, which = dif[0], 0
            dif[0] = 0
            for i in range(1, 11):
                if dif[i] < smallest:
                    smallest, which = dif[i], i
                dif[i] = 0
            if which:
                index = (which - 1) >> 1
                if which & 1:  # odd: decrease
                    if k[index] >= -16:
                        k[index] -= 1
                elif k[index] < 16:
                    k[index] += 1
        return ch & 0xFF

    # -- RAR 1.5 --------------------------------------------------------------

    def _reset15(self) -> None:
        self.avr_plc_b = self.avr_ln1 = self.avr_ln2 = self.avr_ln3 = 0
        self.num_huf = self.buf60 = 0
        self.avr_plc = 0x3500
        self.max_dist3 = 0x2001
        self.nhfb = self.nlzb = 0x80

    def _init_huff(self) -> None:
        self.ch_set = [i << 8 for i in range(256)]
        self.ch_set_b = [i << 8 for i in range(256)]
        self.ch_set_a = list(range(256))
        self.ch_set_c = [((-i) & 0xFF) << 8 for i in range(256)]
        self.n_to_pl = [0] * 256
        self.n_to_pl_b = [0] * 256
        self.n_to_pl_c = [0] * 256
        _corr_huff(self.ch_set_b, self.n_to_pl_b)
        self._huff15_ready = True

    def _unpack15(self, bits: BitReader, size: int, solid: bool, check) -> None:
        if not solid or not self._huff15_ready:
            self._init_huff()
        self.flags_cnt = 0
        self.flag_buf = 0
        self.st_mode = 0
        self.lcount = 0
        out = self.out
        if size <= 0:
            return
        self._get_flags(bits)
        self.flags_cnt = 8
        steps = 0
        while out.produced < size:
            if bits.exhausted(4):
                return
            steps += 1
            if check is not None and not steps & 0xFFFF:
                check()
            if self.st_mode:
                self._huff_decode(bits)
                continue
            self.flags_cnt -= 1
            if self.flags_cnt < 0:
                self._get_flags(bits)
                self.flags_cnt = 7
            if self.flag_buf & 0x80:
                self.flag_buf <<= 1
                if self.nlzb > self.nhfb:
                    self._long_lz(bits)
                else:
                    self._huff_decode(bits)
            else:
                self.flag_buf <<= 1
                self.flags_cnt -= 1
                if self.flags_cnt < 0:
                    self._get_flags(bits)
                    self.flags_cnt = 7
                if self.flag_buf & 0x80:
                    self.flag_buf <<= 1
                    if self.nlzb > self.nhfb:
                        self._huff_decode(bits)
                    else:
                        self._long_lz(bits)
                else:
                    self.flag_buf <<= 1
                    self._short_lz(bits)

    def _copy15(self, distance: int, length: int) -> None:
        self.out.copy(distance, length)

    def _remember(self, distance: int, length: int) -> None:
        self.old_dist[self.old_dist_ptr] = distance
        self.old_dist_ptr = (self.old_dist_ptr + 1) & 3
        self.last_length = length
        self.last_dist = distance

    def _short_lz(self, bits: BitReader) -> None:
        self.num_huf = 0
        field = bits.getbits()
        if self.lcount == 2:
            bits.addbits(1)
            if field >= 0x8000:
                self._copy15(self.last_dist, self.last_length)
                return
            field = (field << 1) & 0xFFFF
            self.lcount = 0
        field >>= 8
        if self.avr_ln1 < 37:
            lengths, xors, special = _SHORT_LEN1, _SHORT_XOR1, 1
        else:
            lengths, xors, special = _SHORT_LEN2, _SHORT_XOR2, 3
        length = 0
        while True:
            n = self.buf60 + 3 if length == special else lengths[length]
            if ((field ^ xors[length]) & (~(0xFF >> n) & 0xFF)) == 0:
                break
            length += 1
        bits.addbits(n)
        if length >= 9:
            if length == 9:
                self.lcount += 1
                self._copy15(self.last_dist, self.last_length)
                return
            if length == 14:
                self.lcount = 0
                length = _decode_num(bits, _L2) + 5
                distance = (bits.getbits() >> 1) | 0x8000
                bits.addbits(15)
                self.last_length = length
                self.last_dist = distance
                self._copy15(distance, length)
                return
            self.lcount = 0
            save_length = length
            distance = self.old_dist[(self.old_dist_ptr - (length - 9)) & 3]
            length = _decode_num(bits, _L1) + 2
            if length == 0x101 and save_length == 10:
                self.buf60 ^= 1
                return
            if distance > 256:
                length += 1
            if distance >= self.max_dist3:
                length += 1
            self._remember(distance, length)
            self._copy15(distance, length)
            return
        self.lcount = 0
        self.avr_ln1 += length
        self.avr_ln1 -= self.avr_ln1 >> 4
        place = _decode_num(bits, _HF2) & 0xFF
        distance = self.ch_set_a[place]
        if place > 0:
            self.ch_set_a[place] = self.ch_set_a[place - 1]
            self.ch_set_a[place - 1] = distance
        length += 2
        distance += 1
        self._remember(distance, length)
        self._copy15(distance, length)

    def _long_lz(self, bits: BitReader) -> None:
        self.num_huf = 0
        self.nlzb += 16
        if self.nlzb > 0xFF:
            self.nlzb = 0x90
            self.nhfb >>= 1
        old_avr2 = self.avr_ln2
        field = bits.getbits()
        if self.avr_ln2 >= 122:
            length = _decode_num(bits, _L2)
        elif self.avr_ln2 >= 64:
            length = _decode_num(bits, _L1)
        elif field < 0x100:
            length = field
            bits.addbits(16)
        else:
            length = 0
            while not (field << length) & 0x8000:
                length += 1
            bits.addbits(length + 1)
        self.avr_ln2 += length
        self.avr_ln2 -= self.avr_ln2 >> 5
        if self.avr_plc_b > 0x28FF:
            place = _decode_num(bits, _HF2)
        elif self.avr_plc_b > 0x6FF:
            place = _decode_num(bits, _HF1)
        else:
            place = _decode_num(bits, _HF0)
        self.avr_plc_b += place
        self.avr_plc_b -= self.avr_plc_b >> 8
        chars, n_to_pl = self.ch_set_b, self.n_to_pl_b
        while True:
            distance = chars[place & 0xFF]
            new_place = n_to_pl[distance & 0xFF]
            n_to_pl[distance & 0xFF] = (new_place + 1) & 0xFF
            distance += 1
            if distance & 0xFF:
                break
            _corr_huff(chars, n_to_pl)
        chars[place & 0xFF] = chars[new_place]
        chars[new_place] = distance & 0xFFFF
        distance = (((distance & 0xFF00) | (bits.getbits() >> 8)) >> 1) & 0xFFFF
        bits.addbits(7)
        old_avr3 = self.avr_ln3
        if length != 1 and length != 4:
            if length == 0 and distance <= self.max_dist3:
                self.avr_ln3 += 1
                self.avr_ln3 -= self.avr_ln3 >> 8
            elif self.avr_ln3 > 0:
                self.avr_ln3 -= 1
        length += 3
        if distance >= self.max_dist3:
            length += 1
        if distance <= 256:
            length += 8
        if old_avr3 > 0xB0 or (self.avr_plc >= 0x2A00 and old_avr2 < 0x40):
            self.max_dist3 = 0x7F00
        else:
            self.max_dist3 = 0x2001
        self._remember(distance, length)
        self._copy15(distance, length)

    def _huff_decode(self, bits: BitReader) -> None:
        field = bits.getbits()
        if self.avr_plc > 0x75FF:
            place = _decode_num(bits, _HF4)
        elif self.avr_plc > 0x5DFF:
            place = _decode_num(bits, _HF3)
        elif self.avr_plc > 0x35FF:
            place = _decode_num(bits, _HF2)
        elif self.avr_plc > 0x0DFF:
            place = _decode_num(bits, _HF1)
        else:
            place = _decode_num(bits, _HF0)
        place &= 0xFF
        if self.st_mode:
            if place == 0 and field > 0xFFF:
                place = 0x100
            place -= 1
            if place == -1:
                field = bits.getbits()
                bits.addbits(1)
                if field & 0x8000:
                    self.num_huf = self.st_mode = 0
                    return
                length = 4 if field & 0x4000 else 3
                bits.addbits(1)
                distance = _decode_num(bits, _HF2)
                distance = (distance << 5) | (bits.getbits() >> 11)
                bits.addbits(5)
                self._copy15(distance, length)
                return
        else:
            if self.num_huf >= 16 and self.flags_cnt == 0:
                self.st_mode = 1
            self.num_huf += 1
        self.avr_plc += place
        self.avr_plc -= self.avr_plc >> 8
        self.nhfb += 16
        if self.nhfb > 0xFF:
            self.nhfb = 0x90
            self.nlzb >>= 1
        chars, n_to_pl = self.ch_set, self.n_to_pl
        self.out.literal(chars[place] >> 8)
        while True:
            cur = chars[place]
            new_place = n_to_pl[cur & 0xFF]
            n_to_pl[cur & 0xFF] = (new_place + 1) & 0xFF
            cur += 1
            if (cur & 0xFF) > 0xA1:
                _corr_huff(chars, n_to_pl)
            else:
                break
        chars[place] = chars[new_place]
        chars[new_place] = cur & 0xFFFF

    def _get_flags(self, bits: BitReader) -> None:
        place = _decode_num(bits, _HF2)
        if place >= 256:
            return
        chars, n_to_pl = self.ch_set_c, self.n_to_pl_c
        while True:
            flags = chars[place]
            self.flag_buf = flags >> 8
            new_place = n_to_pl[flags & 0xFF]
            n_to_pl[flags & 0xFF] = (new_place + 1) & 0xFF
            flags += 1
            if flags & 0xFF:
                break
            _corr_huff(chars, n_to_pl)
        chars[place] = chars[new_place]
        chars[new_place] = flags & 0xFFFF


def _corr_huff(chars: list[int], n_to_pl: list[int]) -> None:
    """Re-rank a self-sorting table: its low bytes by position, 7 down to 0."""
    for i in range(256):
        chars[i] = (chars[i] & ~0xFF) | (7 - (i >> 5))
    for i in range(256):
        n_to_pl[i] = 0
    for i in range(7):
        n_to_pl[i] = (7 - i) * 32


# RAR 1.5's fixed code tables: (first bit length, limits, positions).
_L1 = (2, (0x8000, 0xA000, 0xC000, 0xD000, 0xE000, 0xEA00, 0xEE00, 0xF000, 0xF200, 0xF200,
           0xFFFF), (0, 0, 0, 2, 3, 5, 7, 11, 16, 20, 24, 32, 32))
_L2 = (3, (0xA000, 0xC000, 0xD000, 0xE000, 0xEA00, 0xEE00, 0xF000, 0xF200, 0xF240, 0xFFFF),
       (0, 0, 0, 0, 5, 7, 9, 13, 18, 22, 26, 34, 36))
_HF0 = (4, (0x8000, 0xC000, 0xE000, 0xF200, 0xF200, 0xF200, 0xF200, 0xF200, 0xFFFF),
        (0, 0, 0, 0, 0, 8, 16, 24, 33, 33, 33, 33, 33))
_HF1 = (5, (0x2000, 0xC000, 0xE000, 0xF000, 0xF200, 0xF200, 0xF7E0, 0xFFFF),
        (0, 0, 0, 0, 0, 0, 4, 44, 60, 76, 80, 80, 127))
_HF2 = (5, (0x1000, 0x2400, 0x8000, 0xC000, 0xFA00, 0xFFFF, 0xFFFF, 0xFFFF),
        (0, 0, 0, 0, 0, 0, 2, 7, 53, 117, 233, 0, 0))
_HF3 = (6, (0x800, 0x2400, 0xEE00, 0xFE80, 0xFFFF, 0xFFFF, 0xFFFF),
        (0, 0, 0, 0, 0, 0, 0, 2, 16, 218, 251, 0, 0))
_HF4 = (8, (0xFF00, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF), (0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0))

_SHORT_LEN1 = (1, 3, 4, 4, 5, 6, 7, 8, 8, 4, 4, 5, 6, 6, 4, 0)
_SHORT_XOR1 = (0, 0xA0, 0xD0, 0xE0, 0xF0, 0xF8, 0xFC, 0xFE, 0xFF, 0xC0, 0x80, 0x90, 0x98, 0x9C,
               0xB0, 0)
_SHORT_LEN2 = (2, 3, 3, 3, 4, 4, 5, 6, 6, 4, 4, 5, 6, 6, 4, 0)
_SHORT_XOR2 = (0, 0x40, 0x60, 0xA0, 0xD0, 0xE0, 0xF0, 0xF8, 0xFC, 0xC0, 0x80, 0x90, 0x98, 0x9C,
               0xB0, 0)


def _decode_num(bits: BitReader, table: tuple) -> int:
    """A number from one of RAR 1.5's fixed code tables."""
    start, limits, positions = table
    num = bits.getbits() & 0xFFF0
    i = 0
    while limits[i] <= num:
        start += 1
        i += 1
    bits.addbits(start)
    return ((num - (limits[i - 1] if i else 0)) >> (16 - start)) + positions[start]
