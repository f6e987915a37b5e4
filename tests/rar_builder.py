"""RAR 1.5-4.x archives written by the tests, with RAR 1.5 and RAR 2.0 compression.

No free tool writes these methods (Debian has no `rar`), and Debian's
clamscan opens no RAR, so the tests check clammail's decoders against
known content: the encoders here produce streams for the decoding rules of
RARLAB's unrar (unpack15.cpp, unpack20.cpp), written apart from
clammail.unpack.rar_decode (the audio predictor and the adaptive RAR 1.5
tables are kept here a second time), and every file carries its CRC32, so
a member is reported only when decoded exactly.

- `pack20(data)`: RAR 2.0 LZ blocks (literals, matches, the repeat and
  old-distance codes, short distances, new tables every `block` bytes,
  tables that update the previous ones).
- `pack20_audio(data, channels)`: RAR 2.0 multimedia blocks.
- `pack15(data)`: RAR 1.5 literals (flag bytes, the adaptive character
  tables, the "stream mode" after 16 literals and its escape).
"""

from __future__ import annotations

import heapq
import struct
import zlib

# -- the container ------------------------------------------------------------

MARK = b"Rar!\x1a\x07\x00"


def _block(kind: int, flags: int, body: bytes) -> bytes:
    head = struct.pack("<BHH", kind, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head


def rar4(members, version: int = 20, method: int = 0x33, solid: bool = False,
         comment: tuple[bytes, bytes, int] | None = None, encrypted_headers: bool = False,
         encrypted: bool = False, window_bits: int = 0) -> bytes:
    """An archive of (name, unpacked data, packed data) members, packed with
    unpack version `version`. `comment` is (text, packed text, version)."""
    main_flags = 0x0008 if solid else 0
    main_body = b"\0" * 6
    if encrypted_headers:
        main_flags |= 0x0080
    if comment is not None:
        text, packed, cversion = comment
        main_flags |= 0x0002
        cbody = struct.pack("<HBBH", len(text), cversion, 0x33 if packed != text else 0x30,
                            zlib.crc32(text) & 0xFFFF) + packed
        main_body += _block(0x75, 0, cbody)
    out = bytearray(MARK + _block(0x73, main_flags, main_body))
    for index, (name, data, packed) in enumerate(members):
        flags = 0x8000 | (window_bits << 5)
        if solid and index:
            flags |= 0x0010
        if encrypted:
            flags |= 0x0004
        raw = name.encode()
        body = struct.pack("<IIBIIBBHI", len(packed), len(data), 0, zlib.crc32(data), 0,
                           version, method if packed != data or method == 0x30 else 0x30,
                           len(raw), 0x20) + raw
        out += _block(0x74, flags, body) + packed
    out += _block(0x7B, 0x4000, b"")
    return bytes(out)


def directory_member(name: str) -> bytes:
    """A directory's file header (for archives written by hand)."""
    raw = name.encode()
    body = struct.pack("<IIBIIBBHI", 0, 0, 0, 0, 0, 20, 0x30, len(raw), 0x10) + raw
    return _block(0x74, 0x8000 | 0x00E0, body)


# -- bits and canonical codes -----------------------------------------------------


class BitWriter:
    def __init__(self):
        self.value = 0
        self.count = 0

    def put(self, value: int, bits: int) -> None:
        if bits:
            self.value = (self.value << bits) | (value & ((1 << bits) - 1))
            self.count += bits

    def getvalue(self) -> bytes:
        pad = -self.count % 8
        total = (self.value << pad)
        return total.to_bytes((self.count + pad) // 8, "big") + b"\0\0"


def code_lengths(freqs: list[int], limit: int = 15) -> list[int]:
    """Huffman code lengths for the used symbols, at most `limit` bits."""
    used = [i for i, f in enumerate(freqs) if f]
    lengths = [0] * len(freqs)
    if not used:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    while True:
        heap = [(freqs[i], i, [i]) for i in used]
        heapq.heapify(heap)
        depth = dict.fromkeys(used, 0)
        tie = len(freqs)
        while len(heap) > 1:
            f1, _, s1 = heapq.heappop(heap)
            f2, _, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                depth[s] += 1
            tie += 1
            heapq.heappush(heap, (f1 + f2, tie, s1 + s2))
        if max(depth.values()) <= limit:
            for s, d in depth.items():
                lengths[s] = d
            return lengths
        freqs = [(f + 1) // 2 if f else 0 for f in freqs]  # flatten and retry


def canonical_codes(lengths: list[int]) -> dict[int, tuple[int, int]]:
    """symbol -> (code, bits), codes in order of length then symbol."""
    codes = {}
    code = 0
    for bits in range(1, 16):
        for symbol, length in enumerate(lengths):
            if length == bits:
                codes[symbol] = (code, bits)
                code += 1
        code <<= 1
    return codes


# -- RAR 2.0 ------------------------------------------------------------------------

NC20, DC20, RC20, MC20 = 298, 48, 28, 257
LDECODE = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112,
           128, 160, 192, 224]
LBITS = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5]
DDECODE = [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
           1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768, 49152, 65536, 98304,
           131072, 196608, 262144, 327680, 393216, 458752, 524288, 589824, 655360, 720896,
           786432, 851968, 917504, 983040]
DBITS = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
         13, 13, 14, 14, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16]
SDDECODE = [0, 4, 8, 16, 32, 64, 128, 192]
SDBITS = [2, 2, 3, 4, 5, 6, 6, 6]


def _slot(value: int, bases: list[int], widths: list[int]) -> tuple[int, int]:
    """The code whose base and extra bits cover `value`: (index, extra value)."""
    for index in range(len(bases) - 1, -1, -1):
        if bases[index] <= value < bases[index] + (1 << widths[index]):
            return index, value - bases[index]
    raise ValueError(value)


class _Tables20:
    """Sending one block's code lengths (RAR 2.0 ReadTables20 in reverse)."""

    def __init__(self):
        self.old = [0] * (MC20 * 4)

    def send(self, out: BitWriter, lengths: list[int], audio_channels: int = 0,
             keep_old: bool = False) -> None:
        flags = (0x8000 if audio_channels else 0) | (0x4000 if keep_old else 0)
        out.put(flags >> 14, 2)
        if audio_channels:
            out.put(audio_channels - 1, 2)
        if not keep_old:
            self.old = [0] * (MC20 * 4)
        tokens = []
        i = 0
        while i < len(lengths):
            run = 0
            while i + run < len(lengths) and lengths[i + run] == 0 and run < 138:
                run += 1
            if run >= 11:
                tokens.append((18, run - 11, 7))
                i += run
            elif run >= 3:
                tokens.append((17, run - 3, 3))
                i += run
            else:
                tokens.append(((lengths[i] - self.old[i]) & 0xF, 0, 0))
                i += 1
        freqs = [0] * 19
        for symbol, _, _ in tokens:
            freqs[symbol] += 1
        bl = code_lengths(freqs)
        for length in bl:
            out.put(length, 4)
        codes = canonical_codes(bl)
        for symbol, extra, bits in tokens:
            out.put(*codes[symbol])
            out.put(extra, bits)
        self.old[:len(lengths)] = lengths


def _lz_tokens(data: bytes, state: dict) -> list[tuple]:
    """Greedy LZ77 with RAR 2.0's special codes. `state` carries the history,
    the distances and the last match on to the next block or solid file."""
    tokens = []
    heads: dict[bytes, int] = state.setdefault("heads", {})
    history = state.setdefault("history", bytearray())
    i = len(history)
    history += data
    n = len(history)
    while i < n:
        length, distance = 0, 0
        if i + 3 <= n:
            key = bytes(history[i:i + 3])
            cand = heads.get(key)
            if cand is not None and i - cand <= 0xFFFFF:
                while i + length < n and length < 255 and history[cand + length] == history[i + length]:
                    length += 1
                distance = i - cand
            heads[key] = i
        if length - _bonus(distance) >= 3:
            tokens.append(_match20(length, distance, state))
            for k in range(i + 1, min(i + length, n - 2)):
                heads[bytes(history[k:k + 3])] = k
            i += length
        elif i >= 2 and i + 2 <= n and history[i - 2:i] == history[i:i + 2]:
            tokens.append(_match20(2, 2, state))
            i += 2
        else:
            tokens.append(("lit", history[i]))
            i += 1
    return tokens


def _bonus(distance: int) -> int:
    """What the decoder adds to a match's length for its distance."""
    return (distance >= 0x2000) + (distance >= 0x40000)


def _old_bonus(distance: int) -> int:
    return (distance >= 0x101) + (distance >= 0x2000) + (distance >= 0x40000)


def _match20(length: int, distance: int, state: dict) -> tuple:
    old = state.setdefault("old", [0, 0, 0, 0])
    ptr = state.get("ptr", 0)
    back = [k for k in range(1, 5) if old[(ptr - k) & 3] == distance]
    if (length, distance) == state.get("last"):
        token = ("repeat",)
    elif length == 2 and distance <= 256:
        token = ("short", distance)
    elif back and length - _old_bonus(distance) >= 2:
        token = ("old", back[0], length - _old_bonus(distance))
    else:
        token = ("match", length - _bonus(distance), distance)
    old[ptr] = distance
    state["ptr"] = (ptr + 1) & 3
    state["last"] = (length, distance)
    return token


def _symbols20(token) -> list[tuple[str, int, int, int]]:
    """(table, symbol, extra value, extra bits) for one token."""
    kind = token[0]
    if kind == "lit":
        return [("ld", token[1], 0, 0)]
    if kind == "repeat":
        return [("ld", 256, 0, 0)]
    if kind == "short":
        index, extra = _slot(token[1] - 1, SDDECODE, SDBITS)
        return [("ld", 261 + index, extra, SDBITS[index])]
    if kind == "old":
        index, extra = _slot(token[2] - 2, LDECODE, LBITS)
        return [("ld", 256 + token[1], 0, 0), ("rd", index, extra, LBITS[index])]
    lindex, lextra = _slot(token[1] - 3, LDECODE, LBITS)
    dindex, dextra = _slot(token[2] - 1, DDECODE, DBITS)
    return [("ld", 270 + lindex, lextra, LBITS[lindex]), ("dd", dindex, dextra, DBITS[dindex])]


def pack20_files(files: list[bytes], block: int = 1 << 16) -> list[bytes]:
    """The files of a solid archive as RAR 2.0 LZ streams: each goes on from
    the previous one's dictionary and distances; a file's last block ends
    with the tables of the next file's first block (unrar's ReadLastTables).
    Blocks of `block` bytes each get new tables, every other one sent as
    changes to the previous ones."""
    state: dict = {}
    blocks = []  # (file index, symbols)
    for index, data in enumerate(files):
        for start in range(0, max(len(data), 1), block):
            symbols = [s for t in _lz_tokens(data[start:start + block], state)
                       for s in _symbols20(t)]
            blocks.append((index, symbols))
    tables = _Tables20()
    streams = [BitWriter() for _ in files]
    previous_codes = None
    for number, (index, symbols) in enumerate(blocks):
        freqs = {"ld": [0] * NC20, "dd": [0] * DC20, "rd": [0] * RC20}
        for table, symbol, _, _ in symbols:
            freqs[table][symbol] += 1
        if number + 1 < len(blocks):
            freqs["ld"][269] += 1  # announces the next block's tables
        lengths = {name: code_lengths(f) for name, f in freqs.items()}
        if previous_codes is not None:
            # The code for new tables ends the previous block, in its file.
            streams[blocks[number - 1][0]].put(*previous_codes["ld"][269])
            tables.send(streams[blocks[number - 1][0]],
                        lengths["ld"] + lengths["dd"] + lengths["rd"], keep_old=number % 2 == 1)
        else:
            tables.send(streams[index], lengths["ld"] + lengths["dd"] + lengths["rd"])
        codes = {name: canonical_codes(lengths[name]) for name in lengths}
        for table, symbol, extra, bits in symbols:
            streams[index].put(*codes[table][symbol])
            streams[index].put(extra, bits)
        previous_codes = codes
    return [stream.getvalue() for stream in streams]


def pack20(data: bytes, block: int = 1 << 16) -> bytes:
    """`data` as RAR 2.0 LZ blocks."""
    return pack20_files([data], block)[0]


class _AudioPredictor:
    """RAR 2.0's audio channel state, kept apart from clammail's decoder."""

    def __init__(self):
        self.k1 = self.k2 = self.k3 = self.k4 = self.k5 = 0
        self.d1 = self.d2 = self.d3 = self.d4 = 0
        self.last_delta = 0
        self.dif = [0] * 11
        self.byte_count = 0
        self.last_char = 0

    def code(self, byte: int, shared: list[int]) -> int:
        """The symbol that makes the decoder output `byte`; updates the state."""
        self.byte_count += 1
        self.d4, self.d3 = self.d3, self.d2
        self.d2 = self.last_delta - self.d1
        self.d1 = self.last_delta
        prediction = (8 * self.last_char + self.k1 * self.d1 + self.k2 * self.d2
                      + self.k3 * self.d3 + self.k4 * self.d4 + self.k5 * shared[0])
        prediction = (prediction >> 3) & 0xFF
        delta = (prediction - byte) & 0xFF
        ch = prediction - delta
        d = (delta - 256 if delta > 127 else delta) * 8
        for i, other in enumerate((0, self.d1, self.d2, self.d3, self.d4, shared[0])):
            if i == 0:
                self.dif[0] += abs(d)
            else:
                self.dif[2 * i - 1] += abs(d - other)
                self.dif[2 * i] += abs(d + other)
        change = (ch - self.last_char) & 0xFF
        shared[0] = self.last_delta = change - 256 if change > 127 else change
        self.last_char = ch
        if self.byte_count % 32 == 0:
            best = min(range(11), key=lambda j: (self.dif[j], j))
            self.dif = [0] * 11
            if best:
                name = f"k{(best + 1) // 2}"
                value = getattr(self, name)
                if best % 2 and value >= -16:
                    setattr(self, name, value - 1)
                elif not best % 2 and value < 16:
                    setattr(self, name, value + 1)
        return delta


def pack20_audio(data: bytes, channels: int = 2) -> bytes:
    """`data` as one RAR 2.0 multimedia block of `channels` channels."""
    predictors = [_AudioPredictor() for _ in range(channels)]
    shared = [0]
    symbols = [predictors[i % channels].code(b, shared) for i, b in enumerate(data)]
    freqs = [[0] * MC20 for _ in range(channels)]
    for i, s in enumerate(symbols):
        freqs[i % channels][s] += 1
    lengths = [code_lengths(f) for f in freqs]
    out = BitWriter()
    _Tables20().send(out, [x for table in lengths for x in table], audio_channels=channels)
    codes = [canonical_codes(table) for table in lengths]
    for i, s in enumerate(symbols):
        out.put(*codes[i % channels][s])
    return out.getvalue()


# -- RAR 1.5 ------------------------------------------------------------------------

_HF = [  # (first bit length, limits, positions) of unrar's fixed tables
    (4, [0x8000, 0xC000, 0xE000, 0xF200, 0xF200, 0xF200, 0xF200, 0xF200, 0xFFFF],
     [0, 0, 0, 0, 0, 8, 16, 24, 33, 33, 33, 33, 33]),
    (5, [0x2000, 0xC000, 0xE000, 0xF000, 0xF200, 0xF200, 0xF7E0, 0xFFFF],
     [0, 0, 0, 0, 0, 0, 4, 44, 60, 76, 80, 80, 127]),
    (5, [0x1000, 0x2400, 0x8000, 0xC000, 0xFA00, 0xFFFF, 0xFFFF, 0xFFFF],
     [0, 0, 0, 0, 0, 0, 2, 7, 53, 117, 233, 0, 0]),
    (6, [0x800, 0x2400, 0xEE00, 0xFE80, 0xFFFF, 0xFFFF, 0xFFFF],
     [0, 0, 0, 0, 0, 0, 0, 2, 16, 218, 251, 0, 0]),
    (8, [0xFF00, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], [0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0]),
]


def _put_num(out: BitWriter, table: tuple, value: int) -> None:
    """The bits unrar's DecodeNum reads as `value` from a fixed table."""
    start, limits, positions = table
    low = 0
    for i, high in enumerate(limits):
        bits = start + i
        count = (high - low) >> (16 - bits)
        if count > 0 and positions[bits] <= value < positions[bits] + count:
            out.put((low >> (16 - bits)) + value - positions[bits], bits)
            return
        low = high
    raise ValueError(f"{value} cannot be coded")


def _corr(chars: list[int], places: list[int]) -> None:
    for i in range(256):
        chars[i] = (chars[i] & ~0xFF) | (7 - i // 32)
    places[:] = [0] * 256
    for i in range(7):
        places[i] = (7 - i) * 32


def pack15(data: bytes) -> bytes:
    """`data` as RAR 1.5 literals."""
    ch_set = [i << 8 for i in range(256)]
    ch_set_c = [((-i) & 0xFF) << 8 for i in range(256)]
    n_to_pl = [0] * 256
    n_to_pl_c = [0] * 256
    avr_plc, nhfb, nlzb, num_huf, st_mode = 0x3500, 0x80, 0x80, 0, False
    out = BitWriter()

    def flags_all_ones() -> None:
        place = next(p for p in range(256) if ch_set_c[p] >> 8 == 0xFF)
        _put_num(out, _HF[2], place)
        while True:
            flags = ch_set_c[place]
            new_place = n_to_pl_c[flags & 0xFF]
            n_to_pl_c[flags & 0xFF] = (new_place + 1) & 0xFF
            flags += 1
            if flags & 0xFF:
                break
            _corr(ch_set_c, n_to_pl_c)
        ch_set_c[place] = ch_set_c[new_place]
        ch_set_c[new_place] = flags & 0xFFFF

    def table() -> tuple:
        for threshold, index in ((0x75FF, 4), (0x5DFF, 3), (0x35FF, 2), (0x0DFF, 1)):
            if avr_plc > threshold:
                return _HF[index]
        return _HF[0]

    flags_all_ones()
    flags_cnt = 8
    for byte in data:
        place = next(p for p in range(256) if ch_set[p] >> 8 == byte)
        if st_mode and place == 255:
            _put_num(out, table(), 0)  # escape from stream mode
            out.put(1, 1)
            num_huf, st_mode = 0, False
        if st_mode:
            _put_num(out, table(), place + 1)
        else:
            flags_cnt -= 1
            if flags_cnt < 0:
                flags_all_ones()
                flags_cnt = 7
            _put_num(out, table(), place)
            if num_huf >= 16 and flags_cnt == 0:
                st_mode = True
            num_huf += 1
        avr_plc += place
        avr_plc -= avr_plc >> 8
        nhfb += 16
        if nhfb > 0xFF:
            nhfb, nlzb = 0x90, nlzb >> 1
        while True:
            cur = ch_set[place]
            new_place = n_to_pl[cur & 0xFF]
            n_to_pl[cur & 0xFF] = (new_place + 1) & 0xFF
            cur += 1
            if (cur & 0xFF) > 0xA1:
                _corr(ch_set, n_to_pl)
            else:
                break
        ch_set[place] = ch_set[new_place]
        ch_set[new_place] = cur & 0xFFFF
    assert nlzb <= nhfb  # every flag bit 1 then means a literal
    return out.getvalue()
