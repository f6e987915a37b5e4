"""AutoIt v3 scripts compiled into executables (CL_TYPE_AUTOIT), as libclamav 1.4.6 reads them.

The raw scan of a PE file finds AutoIt's 16-byte marker followed by
"AU3!EA05" or "AU3!EA06"; the object scanned as CL_TYPE_AUTOIT runs from the
marker to the end of the file (clammail.unpack.embedded). After the version
byte (offset 23) and 16 more bytes comes a list of entries:

    magic word, [name length, encrypted name] (the "magic string", e.g.
    ">>>AUTOIT SCRIPT<<<"), [length, encrypted original file name],
    compressed flag, compressed size, size, checksum (13 bytes),
    16 bytes of file times, the encrypted data.

EA05 encrypts with MT19937 (the standard generator, one byte per output:
bits 1..8 of each word); EA06 with a lagged-Fibonacci generator ("LAME")
whose bytes are the top byte of every second word. Compressed data
("EA05"/"EA06" + big-endian size) is a small LZ77 coding in 16-bit
big-endian bit words. An EA06 entry whose name is ">>>AUTOIT SCRIPT<<<" is
the script as tokens, turned back into text (keywords and function names in
capitals, a space after each token) before it is scanned; every other entry
is scanned as extracted. Corrupt data yields what decoded before the error.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator

from clammail.unpack.autoit_tokens import FUNCTIONS, KEYWORDS, OPERATORS, PREFIXES
from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext
from clammail.unpack.decoders import Budget

VERSION_AT = 23  # the version byte, after the marker and "AU3!EA0"
EA05_FILE_MAGIC = 0xCEB06DFF
EA06_FILE_MAGIC = 0x52CA436B
SCRIPT_NAME = b">>>AUTOIT SCRIPT<<<"
M32 = 0xFFFFFFFF


def unpack_autoit(data, ctx: UnpackContext) -> Iterator[Extracted]:
    view = memoryview(data)
    if len(view) <= VERSION_AT:
        return
    version = view[VERSION_AT]
    if version == 0x35:
        yield from _entries(view, VERSION_AT + 1, ctx, _EA05)
    elif version == 0x36:
        yield from _entries(view, VERSION_AT + 1, ctx, _EA06)


class _Format:
    def __init__(self, name, magic, name_key, name_seed, file_key, file_seed, size_key,
                 data_seed, unit, match_bit, compressed_magic):
        self.name = name
        self.magic = magic
        self.name_key, self.name_seed = name_key, name_seed  # the "magic string"
        self.file_key, self.file_seed = file_key, file_seed  # the original file name
        self.size_key = size_key
        self.data_seed = data_seed
        self.unit = unit  # bytes per character of the names
        self.match_bit = match_bit  # the flag bit that starts a back-reference
        self.compressed_magic = compressed_magic


_EA05 = _Format("EA05", EA05_FILE_MAGIC, 0x29BC, 0xA25E, 0x29AC, 0xF25E, 0x45AA,
                0x22AF, 1, 1, b"EA05")
_EA06 = _Format("EA06", EA06_FILE_MAGIC, 0xADBC, 0xB33F, 0xF820, 0xF479, 0x87BC,
                0x2477, 2, 0, b"EA06")


def _u32(view, at: int) -> int | None:
    if at < 0 or at + 4 > len(view):
        return None
    return int.from_bytes(view[at:at + 4], "little")


def _signed(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def _entries(view, base: int, ctx: UnpackContext, fmt: _Format) -> Iterator[Extracted]:
    budget = Budget(ctx)
    if base + 16 > len(view):
        return
    seed_sum = sum(view[base:base + 16]) if fmt is _EA05 else 0
    base += 16
    number = 0
    while True:
        ctx.check()
        limit = budget.breaks(0)
        if limit:
            raise LimitExceeded(limit)
        if base + 8 > len(view):
            return
        if _u32(view, base) != fmt.magic:
            return  # "no FILE magic found"
        length = _u32(view, base + 4) ^ fmt.name_key
        if _signed((length * fmt.unit) & M32) < 0:
            return
        base += 8
        script = False
        if fmt is _EA06 and length < 300:
            if base + 2 * length > len(view):
                return
            name = _u2a(bytearray(_lame(bytes(view[base:base + 2 * length]),
                                        (length + fmt.name_seed) & 0xFFFF)))
            script = length == 19 and bytes(name[:19]) == SCRIPT_NAME
        base += length * fmt.unit
        word = _u32(view, base)
        if word is None:
            return
        length = word ^ fmt.file_key
        if _signed((length * fmt.unit) & M32) < 0:
            return
        base += 4 + length * fmt.unit
        if base + 13 > len(view):
            return
        compressed = view[base] == 1
        csize = _u32(view, base + 1) ^ fmt.size_key
        if _signed(csize) < 0:
            return  # "bad file size"
        base += 13 + 16
        if not csize:
            continue  # "skipping empty file"
        limit = budget.breaks(csize)
        if limit:
            ctx.limit_exceeded(limit)
            base += csize
            continue
        if compressed and csize < 4:
            continue  # "compressed size too small" (and libclamav stays where it is)
        if fmt is _EA06:
            number += 1
        if base + csize > len(view):
            return  # "failed to read compressed stream"
        payload = bytes(view[base:base + csize])
        base += csize
        plain = _decrypt(payload, fmt, seed_sum)
        if compressed:
            if plain[:4] != fmt.compressed_magic:
                continue  # "bad magic or unsupported version"
            usize = int.from_bytes(plain[4:8], "big") or csize
            limit = budget.breaks(usize)
            if limit:
                ctx.limit_exceeded(limit)
                continue
            ctx.check()
            plain = _decompress(plain, usize, fmt.match_bit, ctx)
        if len(plain) < 4:
            continue  # "file is too short"
        if fmt is _EA05:
            number += 1
        if script:
            ctx.check()
            plain = decompile(plain)
            yield Extracted(plain, name=f"autoit.{number:03d}", extra={"autoit_script": True})
        else:
            yield Extracted(plain, name=f"autoit.{number:03d}")


def _decrypt(data: bytes, fmt: _Format, seed_sum: int) -> bytes:
    if fmt is _EA05:
        return _mt(data, (fmt.data_seed + seed_sum) & M32)
    return _lame(data, fmt.data_seed)


# -- the keystreams ------------------------------------------------------

_MT_CHUNK = 1 << 16


def _mt(data: bytes, seed: int) -> bytes:
    """XOR with MT19937 seeded by init_genrand(seed), one byte (bits 1..8) per word."""
    state = [seed & M32]
    for i in range(1, 624):
        prev = state[-1]
        state.append((0x6C078965 * (prev ^ (prev >> 30)) + i) & M32)
    generator = random.Random()
    generator.setstate((3, (*state, 624), None))
    out = bytearray()
    for start in range(0, len(data), _MT_CHUNK):
        chunk = data[start:start + _MT_CHUNK]
        words = generator.getrandbits(32 * len(chunk))
        key = (words >> 1).to_bytes(4 * len(chunk) + 1, "little")[0:4 * len(chunk):4]
        out += (int.from_bytes(chunk, "little") ^ int.from_bytes(key, "little")).to_bytes(
            len(chunk), "little")
    return bytes(out)


def _rol(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & M32


def _lame(data: bytes, seed: int) -> bytes:
    """XOR with AutoIt's EA06 generator: x[n] = rol(x[n-17], 9) + rol(x[n-10], 13)."""
    ring = []
    for _ in range(17):
        seed = (1 - seed * 0x53A9B4FB) & M32
        ring.append(seed)
    c0, c1 = 0, 10

    def step() -> int:
        nonlocal c0, c1
        value = (_rol(ring[c0], 9) + _rol(ring[c1], 13)) & M32
        ring[c0] = value
        c0 = c0 - 1 if c0 else 16
        c1 = c1 - 1 if c1 else 16
        return value

    for _ in range(9):
        step()
    out = bytearray(data)
    for i in range(len(out)):
        step()
        out[i] ^= step() >> 24
    return bytes(out)


# -- decompression -------------------------------------------------------

def _decompress(data: bytes, usize: int, match_bit: int, ctx: UnpackContext) -> bytes:
    """The LZ77 stream after the 8-byte header; what decoded before an error."""
    # Bits come in 16-bit big-endian words; a read that needs a word past the
    # end fails (and reads as 0).
    total_bits = 64 + (len(data) - 8) // 2 * 16
    padded = data + b"\0\0\0"
    pos = 64
    out = bytearray()
    error = False

    def bits(n: int) -> int:
        nonlocal pos, error
        if pos + n > total_bits:
            error = True
            return 0
        at = pos >> 3
        window = int.from_bytes(padded[at:at + 3], "big")
        value = (window >> (24 - (pos & 7) - n)) & ((1 << n) - 1)
        pos += n
        return value

    steps = 0
    while not error and len(out) < usize:
        steps += 1
        if not steps & 0xFFFF:
            ctx.check()
        if bits(1) != match_bit:
            out.append(bits(8))  # a failed read still writes its 0
            continue
        distance = bits(15)
        length = bits(2)
        extra = 0
        if length == 3:
            extra, length = 3, bits(3)
            if length == 7:
                extra, length = 10, bits(5)
                if length == 31:
                    extra, length = 41, bits(8)
                    if length == 255:
                        extra = 296
                        while (length := bits(8)) == 255:
                            extra += 255
        length += 3 + extra
        start = len(out) - distance
        if error or start < 0 or len(out) + length > usize:
            break
        if distance >= length:
            out += out[start:start + length]
        else:
            # Overlapping copy; a distance of 0 reads bytes libclamav never wrote.
            for i in range(length):
                at = start + i
                out.append(out[at] if at < len(out) else 0)
    return bytes(out)


# -- EA06 scripts --------------------------------------------------------

def _u2a(buf: bytearray) -> bytearray:
    """libclamav's UTF-16LE to ASCII guess, in place: every other byte moved to
    the front, when the text looks like UTF-16 (or has a byte-order mark)."""
    size = len(buf)
    if size < 2:
        return buf
    if size > 4 and buf[0] == 0xFF and buf[1] == 0xFE and buf[2]:
        src, size = 2, size - 2
    else:
        sample = 20 if size > 20 else size & ~1
        pairs = sum(1 for i in range(0, sample, 2) if buf[i] and not buf[i + 1])
        if pairs * 4 < sample:
            return buf
        src = 0
    picked = buf[src:src + size:2]
    buf[:len(picked)] = picked
    return buf


def _double(raw: bytes) -> str:
    """C's "%g " of a little-endian double."""
    value = struct.unpack("<d", raw)[0]
    if math.isnan(value):
        return ("-nan" if raw[7] & 0x80 else "nan") + " "
    if math.isinf(value):
        return ("-inf" if value < 0 else "inf") + " "
    return f"{value:g} "


def decompile(data: bytes) -> bytes:
    """An EA06 token stream back to text, as libclamav writes it (partial on errors)."""
    tokens = bytearray(data)
    size = len(tokens)
    lines = int.from_bytes(tokens[:4], "little")
    at = 4
    out: list[bytes] = []
    while lines and at < size:
        op = tokens[at]
        at += 1
        if op in (0, 1):
            if at >= size - 4:
                break
            index = int.from_bytes(tokens[at:at + 4], "little")
            names = KEYWORDS if op == 0 else FUNCTIONS
            if index >= len(names):
                break
            at += 4
            out.append(names[index].encode() + b" ")
        elif op == 5:
            if at >= size - 4:
                break
            out.append(b"0x%08x " % int.from_bytes(tokens[at:at + 4], "little"))
            at += 4
        elif op in (0x10, 0x20):
            if size < 8 or at >= size - 8:
                break
            raw = bytes(tokens[at:at + 8])
            if op == 0x10:
                out.append(b"0x%016x " % int.from_bytes(raw, "little"))
            else:
                out.append(_double(raw).encode())
            at += 8
        elif 0x30 <= op <= 0x37:
            if at >= size - 4:
                break
            chars = int.from_bytes(tokens[at:at + 4], "little")
            wide = (chars * 2) & M32
            at += 4
            if size < wide or at >= size - wide:
                break
            out.append(PREFIXES[op - 0x30].encode())
            if chars:
                text = bytearray(tokens[at:at + wide])
                text[0::2] = bytes(b ^ (chars & 0xFF) for b in text[0::2])
                text[1::2] = bytes(b ^ ((chars >> 8) & 0xFF) for b in text[1::2])
                out.append(bytes(_u2a(text)[:chars]))
                at += wide
            if op == 0x36:
                out.append(b'"')
            if op != 0x34:
                out.append(b" ")
        elif 0x40 <= op <= 0x58:
            out.append(OPERATORS[op - 0x40].encode() + b" ")
        elif op == 0x7F:
            lines -= 1
            out.append(b"\n")
        else:
            break  # "found unknown op"
    return b"".join(out)
