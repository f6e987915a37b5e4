"""Packed PE files written from scratch for the unpacker tests.

Debian 12 has no UPX (upx-ucl left the archive), so the tests pack
executables themselves: small LZ77 encoders for the bit formats the
unpackers read (UPX's NRV2B/NRV2D/NRV2E, FSG's aPLib; LZMA through Python's
lzma module), and builders that lay out a UPX-style or FSG-style PE around
the compressed image with just enough stub code for libclamav's detection.
ClamAV then unpacks the files as well as clammail, and the tests compare.
"""

from __future__ import annotations

import lzma
import struct
from dataclasses import dataclass

from exe_samples import PESpec, Sec, build_pe, filler

IMAGE_BASE = 0x400000
UPX_NRV2B = bytes.fromhex("11db11c901db75078b1e83eefc11db11c911c975204101db")
UPX_NRV2D = bytes.fromhex("83f0ff7478d1f889c5eb0b01db75078b1e83eefc11db11c9")
UPX_NRV2E = bytes.fromhex("eb5231c983e8037211c1e0088a064683f0ff7475d1f889c5")
UPX_LZMA2 = bytes.fromhex("5683c3045350c70303000200909090909055575 6".replace(" ", ""))
MAGIC = {"2b": 0x108, "2d": 0x11C, "2e": 0x128}


# -- LZ77 match finding ----------------------------------------------------


def _matches(data: bytes, max_distance: int, max_length: int, min_length: int = 3):
    """Greedy LZ77 parse: yields ("lit", byte) or ("match", distance, length)."""
    heads: dict[bytes, list[int]] = {}
    pos = 0
    size = len(data)
    while pos < size:
        best_len = best_dist = 0
        key = data[pos:pos + 3]
        if len(key) == 3:
            for cand in reversed(heads.get(key, [])[-16:]):
                dist = pos - cand
                if dist > max_distance:
                    break
                length = 0
                while (length < max_length and pos + length < size
                       and data[cand + length] == data[pos + length]):
                    length += 1
                if length > best_len:
                    best_len, best_dist = length, dist
        if best_len >= min_length:
            yield ("match", best_dist, best_len)
            step = best_len
        else:
            yield ("lit", data[pos])
            step = 1
        for at in range(pos, min(pos + step, size - 2)):
            heads.setdefault(data[at:at + 3], []).append(at)
        pos += step


# -- UPX's NRV formats -------------------------------------------------------


class _WordBits:
    """32-bit little-endian bit words, MSB first, placed where the decoder reads them."""

    def __init__(self):
        self.out = bytearray()
        self.word_at = -1
        self.left = 0

    def bit(self, value: int) -> None:
        if not self.left:
            self.word_at = len(self.out)
            self.out += b"\0\0\0\0"
            self.left = 32
        self.left -= 1
        if value:
            word = struct.unpack_from("<I", self.out, self.word_at)[0] | (1 << self.left)
            struct.pack_into("<I", self.out, self.word_at, word)

    def byte(self, value: int) -> None:
        self.out.append(value)


def _gamma_2b(bits: _WordBits, value: int) -> None:
    """NRV2B's Elias gamma (value >= 2): digits after the leading 1, each
    followed by a stop bit."""
    digits = bin(value)[3:]
    for index, digit in enumerate(digits):
        bits.bit(int(digit))
        bits.bit(1 if index == len(digits) - 1 else 0)


def _gamma_2d(bits: _WordBits, value: int) -> None:
    """NRV2D/2E's offset gamma (value >= 2). The decoder runs rounds of
    m = 2m + b, a stop bit, then (if not stopping) m = 2(m - 1) + c from m = 1;
    the rounds are found backwards from the value."""
    rounds = [(value & 1, None)]
    state = value >> 1
    while state != 1:
        c = state & 1
        a = (state >> 1) + 1
        rounds.append((a & 1, c))
        state = a >> 1
    rounds.reverse()
    for b, c in rounds:
        bits.bit(b)
        if c is None:
            bits.bit(1)
        else:
            bits.bit(0)
            bits.bit(c)


def nrv_compress(data: bytes, method: str) -> bytes:
    """Compress for upx_inflate2b/2d/2e (with the end marker)."""
    bits = _WordBits()
    far = 0xD00 if method == "2b" else 0x500
    for token in _matches(data, 0x10000, 0x800, min_length=4):
        if token[0] == "lit":
            bits.bit(1)
            bits.byte(token[1])
            continue
        _kind, dist, length = token
        bits.bit(0)
        is_far = dist > far
        if method == "2b":
            x = dist - 1
            _gamma_2b(bits, (x >> 8) + 3)
            bits.byte(x & 0xFF)
            m = length - 1 - is_far
            if 1 <= m <= 3:
                bits.bit(m >> 1)
                bits.bit(m & 1)
            else:
                bits.bit(0)
                bits.bit(0)
                _gamma_2b(bits, m - 2)
        else:
            if method == "2d":
                m = length - 1 - is_far
                carry, low, gamma = (m >> 1, m & 1, None) if 1 <= m <= 3 else (0, 0, m - 2)
            else:
                m = length - 2 - is_far
                if m <= 1:
                    carry, low, gamma = 1, m, None
                elif m <= 3:
                    carry, low, gamma = 0, None, None
                else:
                    carry, low, gamma = 0, None, m - 2
            y = ((dist - 1) << 1) | (1 - carry)
            _gamma_2d(bits, (y >> 8) + 3)
            bits.byte(y & 0xFF)
            if method == "2d":
                bits.bit(low)
                if gamma is not None:
                    _gamma_2b(bits, gamma)
            elif carry:
                bits.bit(low)
            elif gamma is None:
                bits.bit(1)
                bits.bit(m - 2)
            else:
                bits.bit(0)
                _gamma_2b(bits, gamma)
    # End of stream: an offset whose complement is 0.
    bits.bit(0)
    if method == "2b":
        _gamma_2b(bits, 0xFFFFFF + 3)
    else:
        _gamma_2d(bits, 0xFFFFFF + 3)
    bits.byte(0xFF)
    return bytes(bits.out)


def mew_lzma_compress(data: bytes) -> bytes:
    """MEW's LZMA stage: a raw LZMA1 stream with lc=4, lp=0, pb=2."""
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{
        "id": lzma.FILTER_LZMA1, "lc": 4, "lp": 0, "pb": 2, "dict_size": 1 << 16}])


def lzma_compress(data: bytes) -> bytes:
    """UPX's LZMA layout: two header bytes, then a raw LZMA1 stream (lc=3, lp=0, pb=2)."""
    stream = lzma.compress(data, format=lzma.FORMAT_RAW, filters=[{
        "id": lzma.FILTER_LZMA1, "lc": 3, "lp": 0, "pb": 2, "dict_size": 1 << 16}])
    return b"\x00\x00" + stream


# -- FSG's aPLib format --------------------------------------------------------


class _TagBits:
    """Tag bytes MSB first, placed where cli_unfsg's bit reader loads them."""

    def __init__(self):
        self.out = bytearray()
        self.tag_at = -1
        self.left = 0

    def bit(self, value: int) -> None:
        if not self.left:
            self.tag_at = len(self.out)
            self.out.append(0)
            self.left = 8
        self.left -= 1
        if value:
            self.out[self.tag_at] |= 1 << self.left

    def byte(self, value: int) -> None:
        self.out.append(value)

    def gamma(self, value: int) -> None:
        digits = bin(value)[3:]
        for index, digit in enumerate(digits):
            self.bit(int(digit))
            self.bit(0 if index == len(digits) - 1 else 1)


def aplib_compress(data: bytes, spare: bool = True) -> bytes:
    """Compress for cli_unfsg/unmew (first byte raw, end marker, then a spare
    byte unless what follows the stream in the file serves)."""
    bits = _TagBits()
    bits.byte(data[0])
    lostbit = True
    for token in _matches(data[1:], 0x7CFF, 0x400, min_length=4):
        if token[0] == "lit":
            bits.bit(0)
            bits.byte(token[1])
            lostbit = True
            continue
        _kind, dist, length = token
        adjust = (dist >= 0x7D00) + (dist >= 0x500) + 2 * (dist <= 0x7F)
        bits.bit(1)
        bits.bit(0)
        bits.gamma((dist >> 8) + 2 + lostbit)
        bits.byte(dist & 0xFF)
        bits.gamma(length - adjust)
        lostbit = False
    bits.bit(1)
    bits.bit(1)
    bits.bit(0)
    bits.byte(0)
    if spare:
        bits.byte(0)  # the bit reader never loads a source's last byte
    return bytes(bits.out)


# -- packed files --------------------------------------------------------------


@dataclass
class Payload:
    """An image to pack: the original PE and its sections laid out from `base_rva`."""

    pe: bytes
    image: bytes
    base_rva: int


def payload(seed: int, extra: bytes = b"", pad: bool = True) -> Payload:
    """A two-section PE whose first section carries `extra` (clam.exe, say);
    `pad`: the image runs to the end of the last section's pages (else it stops
    at its data, and libclamav's UPX rebuild gives up on it)."""
    code = filler(0x300, seed) + extra + filler(0x80, seed + 1)
    spec = PESpec(sections=[Sec(b".text", 0x1000, len(code), code),
                            Sec(b".data", 0x1000 + ((len(code) + 0xFFF) & ~0xFFF), 0x200,
                                filler(0x200, seed + 2), chars=0xC0000040)], entry=0x1010)
    pe = build_pe(spec)
    image = bytearray()
    for sec in spec.sections:
        image += b"\0" * (sec.vaddr - 0x1000 - len(image))
        image += sec.data
    if pad:
        image += b"\0" * (-len(image) % 0x1000)
    return Payload(pe, bytes(image), 0x1000)


def _pe_header(pe: bytes) -> bytes:
    e_lfanew = struct.unpack_from("<I", pe, 60)[0]
    count = struct.unpack_from("<H", pe, e_lfanew + 6)[0]
    return pe[e_lfanew:e_lfanew + 0xF8 + 0x28 * count]


def upx_pe(p: Payload, method: str, header: str = "magic", selector: str | None = None,
           headroom: int = 0x1000) -> bytes:
    """A UPX-style PE: UPX0 empty, UPX1 = compressed image + stub.

    header: how libclamav's rebuild finds the PE header: "magic" (the stub's
    import-table pointer), "scan" (searching backwards), "none" (no header:
    libclamav forges one)."""
    image = bytearray(p.image)
    imports_at = len(image)
    if header != "none":
        image += b"\0" * 4 + _pe_header(p.pe)
    compressed = lzma_compress(bytes(image)) if method == "lzma" else nrv_compress(bytes(image),
                                                                                  method)
    upx0_rva = p.base_rva
    upx0_vsz = (len(image) + headroom + 0xFFF) & ~0xFFF
    upx1_rva = upx0_rva + upx0_vsz
    stub_at = (len(compressed) + 0x1F) & ~0x1F
    stub = bytearray(0xC00 if method == "lzma" else 0x200)
    stub[0:2] = b"\x60\xbe"
    struct.pack_into("<I", stub, 2, IMAGE_BASE + upx1_rva)
    if method == "lzma":
        struct.pack_into("<I", stub, 0x21, len(image))
        stub[0x2F:0x2F + 20] = UPX_LZMA2
    else:
        chosen = selector or method
        signature = {"2b": UPX_NRV2B, "2d": UPX_NRV2D, "2e": UPX_NRV2E, "none": b"\x90" * 24}
        stub[0x69:0x69 + 13] = signature[chosen][:13]
    if header == "magic":
        magic = MAGIC.get(method, 0xB16)
        stub[magic - 2:magic] = b"\x8d\xbe"
        struct.pack_into("<I", stub, magic, imports_at)
    upx1 = bytes(compressed.ljust(stub_at, b"\0")) + bytes(stub)
    upx1_vsz = (len(upx1) + 0xFFF) & ~0xFFF
    spec = PESpec(sections=[
        Sec(b"UPX0", upx0_rva, upx0_vsz, b"", raw_size=0, chars=0xE0000080),
        Sec(b"UPX1", upx1_rva, upx1_vsz, upx1, chars=0xE0000040),
    ], entry=upx1_rva + stub_at, subsystem=2)
    return build_pe(spec)


def fsg2_pe(p: Payload) -> bytes:
    """An FSG 2.0-style PE: section 0 empty, section 1 = aPLib data + register table."""
    compressed = aplib_compress(p.image)
    dsize = (2 * len(p.image) + 0x1FFF) & ~0xFFF
    s0_rva = p.base_rva
    s1_rva = s0_rva + dsize
    body = bytearray(compressed)
    body += b"\0" * (-len(body) % 16)
    table_at = len(body)
    funcs_at = table_at + 32
    pointer_at = funcs_at + 16
    body += bytes(64)
    struct.pack_into("<8I", body, table_at, IMAGE_BASE + s0_rva, IMAGE_BASE + s1_rva, 0, 0,
                     IMAGE_BASE + s1_rva + funcs_at, 0, 0, 0)
    struct.pack_into("<4I", body, funcs_at, 0, 0, 0, IMAGE_BASE + s0_rva + 0x10)
    struct.pack_into("<I", body, pointer_at, IMAGE_BASE + s1_rva + table_at)
    ep_at = len(body)
    stub = bytearray(0x200)
    stub[0:2] = b"\x87\x25"
    struct.pack_into("<I", stub, 2, IMAGE_BASE + s1_rva + pointer_at)
    body += stub
    spec = PESpec(sections=[
        Sec(b"", s0_rva, dsize, b"", raw_size=0, chars=0xC0000080),
        Sec(b"", s1_rva, (len(body) + 0xFFF) & ~0xFFF, bytes(body), chars=0xE0000040),
    ], entry=s1_rva + ep_at, subsystem=2)
    return build_pe(spec)


def mew_pe(p: Payload, method: str = "aplib", chunks: int = 2) -> bytes:
    """A MEW-style PE: the loader at file offset 0x154 in the header padding, an
    empty section for the image and the packed section after it.

    method "aplib": the image in `chunks` aPLib blocks; "lzma"/"lzma-special":
    one small aPLib block, then MEW's LZMA stage (the special form also undoes
    E8/E9 call rewriting)."""
    image = p.image
    s0_rva = p.base_rva
    dsize = (len(image) + PROBS_ROOM + 0x1FFF) & ~0xFFF
    s1_rva = s0_rva + dsize
    vma = IMAGE_BASE + s0_rva
    k = 0x10
    body = bytearray(k)
    body += struct.pack("<III", 0, IMAGE_BASE + s0_rva + 0x20, vma)
    if method == "aplib":
        step = (len(image) + chunks - 1) // chunks
        pieces = [image[i:i + step] for i in range(0, len(image), step)]
        dest = 0
        for index, piece in enumerate(pieces):
            body += aplib_compress(piece, spare=False)
            dest = (dest + len(piece) + 0xFFF) & ~0xFFF
            body += struct.pack("<I", vma + dest if index + 1 < len(pieces) else 0)
    else:
        body += aplib_compress(b"MEW LZMA stage follows" * 2, spare=False)
        body += struct.pack("<I", 0)
        special = method == "lzma-special"
        if special:
            body += struct.pack("<I", len(image))
        probs = (len(image) + 0xFFF) & ~0xFFF
        stream = mew_lzma_compress(image)
        body += struct.pack("<IIII", vma + probs, len(image), vma, len(stream)) + b"\0"
        body += stream + bytes(16)
    proc_at = len(body)
    body += bytes(16)
    body[proc_at + 8] = 0x50 if method == "lzma-special" else 0
    ep_at = len(body)
    body += bytes(0x40)
    s1_vsz = (len(body) + 0xFFF) & ~0xFFF
    spec = PESpec(sections=[
        Sec(b"MEW", s0_rva, dsize, b"", raw_size=0, chars=0xE0000080),
        Sec(b"\x02\xd2u\xdb", s1_rva, s1_vsz, bytes(body), chars=0xE0000060),
    ], entry=s1_rva + ep_at, subsystem=2, e_lfanew=0x40, ndatadirs=2)
    out = bytearray(build_pe(spec))
    ep_file = 0x400 + ep_at
    out[ep_file] = 0xE9
    struct.pack_into("<i", out, ep_file + 1, 0x154 - (s1_rva + ep_at + 5))
    loader = bytearray(0xB0)
    struct.pack_into("<I", loader, 1, IMAGE_BASE + s1_rva + k)
    if method != "aplib":
        loader[0x7B] = 0xE8
        struct.pack_into("<I", loader, 0x7C, s1_rva + proc_at - 0x154 - 0x80)
    out[0x154:0x154 + 0xB0] = loader
    return bytes(out)


PROBS_ROOM = 0x7000  # MEW's LZMA probabilities live in the image
