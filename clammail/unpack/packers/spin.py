"""PESpin 1.1: libclamav's unpacker (spin.c, detection in pe.c).

ClamAV 1.4 still unpacks PESpin: its stub in the last section is decrypted
in layers (a byte-XOR with a decrementing key, two 32-bit LFSR XOR streams,
one of them keyed by a checksum of the whole file), then a polymorphic byte
decryptor (`exec86`) is itself decrypted and run over the sections, some
sections are XORed with another LFSR stream, and those marked compressed
are inflated with the FSG/aPLib decoder. The result is rebuilt into a PE
(image base 0x400000, entry point 0x1000: libclamav does not restore them).

The byte decryptors run through `byteops`; a decryptor that rewrites its
own code is re-decoded after each such byte.
"""

from __future__ import annotations

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.aplib import DecodeError, aplib
from clammail.unpack.packers.byteops import CL, ByteProgram, apply_program
from clammail.unpack.packers.common import (
    M32,
    PackedPE,
    RebuildSection,
    contained,
    rebuild_pe,
    require_limits,
    u32,
)

EP_MARK = bytes.fromhex("e8000000008b1c2483c3")
STUB_SPAN = 0x3217
CODE_SPAN = 0x24
_CHECK_EVERY = 1 << 16


class _Fail(Exception):
    """unspin returned 1."""


class _TooBig(Exception):
    """unspin returned 2: the unpacked sections would pass MaxFileSize."""


def _lfsr_stream(key: int, count: int, tap: int, on_one: bool,
                 ctx: UnpackContext) -> tuple[bytes, int]:
    """The XOR stream of PESpin's Galois LFSRs: each step shifts the key right and
    XORs `tap` in when the bit shifted out is 1 (`on_one`) or 0; the byte is the
    key's low byte after the step. Returns (stream, final key)."""
    out = bytearray(count)
    for index in range(count):
        if not index % _CHECK_EVERY:
            ctx.check()
        low = key & 1
        key >>= 1
        if bool(low) == on_one:
            key ^= tap
        out[index] = key & 0xFF
    return bytes(out), key


def _xor(buf: bytearray, at: int, stream: bytes) -> None:
    size = len(stream)
    data = int.from_bytes(buf[at:at + size], "little") ^ int.from_bytes(stream, "little")
    buf[at:at + size] = data.to_bytes(size, "little")


def _summit(data: bytes, size: int, ctx: UnpackContext) -> int:
    """PESpin's checksum over the first `size` bytes of the file (its four
    mixing rounds per byte written out: this loop is the hot one)."""
    eax = ebx = M32
    for start in range(0, size, _CHECK_EVERY):
        ctx.check()
        for byte in data[start:min(size, start + _CHECK_EVERY)]:
            eax = ((eax ^ (byte << 8)) >> 3) & 0x1FFFFFFF
            for _ in range(2):  # two rounds per pass: the registers swap back
                eax = (((eax ^ ((ebx >> 8) & 0xFF)) + 0x7801A108) & M32) ^ ebx
                count = ebx & 31
                eax = ((eax >> count) | (eax << (32 - count))) & M32
                ebx = (((ebx ^ ((eax >> 8) & 0xFF)) + 0x7801A108) & M32) ^ eax
                count = eax & 31
                ebx = ((ebx >> count) | (ebx << (32 - count))) & M32
    return ebx


def _decode_exec86(buf: bytearray, at: int) -> ByteProgram:
    """Walk the 0x24-byte decryptor at `at` as exec86 does."""
    program = ByteProgram()
    ops = program.ops

    def read(index: int) -> int:
        program.reads.add(index)
        return buf[at + index] if 0 <= at + index < len(buf) else 0

    pos = 0
    while pos < CODE_SPAN:
        opcode = read(pos)
        pos += 1
        if opcode == 0xEB:
            pos += 2
        elif opcode == 0x0A:
            pos += 1
        elif opcode in (0x90, 0xF8, 0xF9):
            pass
        elif opcode in (0x02, 0x2A, 0x32):
            ops.append(({0x02: "add", 0x2A: "sub", 0x32: "xor"}[opcode], CL))
            pos += 1
        elif opcode in (0x04, 0x2C, 0x34):
            ops.append(({0x04: "add", 0x2C: "sub", 0x34: "xor"}[opcode], read(pos)))
            pos += 1
        elif opcode == 0xFE:
            ops.append(("add", 1) if read(pos) == 0xC0 else ("sub", 1))
            pos += 1
        elif opcode == 0xC0:
            kind = "rol" if read(pos) == 0xC0 else "ror"
            pos += 1
            ops.append((kind, read(pos)))
            pos += 1
        else:
            program.failure = "bogus opcode"
            return program
    if pos != CODE_SPAN or read(pos) != 0xAA:
        program.failure = "bad emucode"
    return program


def _run_exec86(buf: bytearray, data: int, count: int, code: int, ctx: UnpackContext) -> None:
    """Decrypt buf[data:data+count] with the decryptor at `code`; byte i sees
    CL = count - i. Raises _Fail as exec86's failure does."""
    index = 0
    while index < count:
        ctx.check()
        program = _decode_exec86(buf, code)
        if program.failure:
            raise _Fail()
        stop = count
        for read in program.reads:
            position = code + read - data
            if index <= position < stop:
                stop = position + 1
        apply_program(buf, data, index, stop, program, count)
        index = stop


def unspin(src: bytearray, pe: PackedPE, ctx: UnpackContext) -> bytes | None:
    """libclamav's unspin over a copy of the file: the rebuilt PE or None.
    Raises _TooBig where libclamav returns 2."""
    sections = pe.sections
    sectcnt = pe.nsections - 1
    last = sections[sectcnt]
    ssize = len(src)
    spinned = bytearray(src[last.raw:last.raw + last.rsz])
    ep = pe.vep - last.rva
    rsz = last.rsz

    def byte(at: int) -> int:
        return spinned[at] if 0 <= at < len(spinned) else 0

    if byte(ep + 0xDB) != 0xBB:
        ctx.debug("spin: not spinned or bad version")
        return None
    key8 = byte(ep + 0xDC)
    if byte(ep + 0xE0) != 0xB9 or u32(spinned, ep + 0xE1) != 0x11FE:
        return None
    length = 0x11FE
    if not contained(rsz, ep, length + 0x1FE5 - 1):
        return None
    # The first layer: XOR with a key byte counting down, from the end backwards.
    start = ep + 0x1FE5
    keys = bytes((key8 - n) & 0xFF for n in range(length))[::-1]
    _xor(spinned, start, keys)
    if not contained(rsz, ep + STUB_SPAN, 4):
        return None
    key32 = u32(spinned, ep + 0x26EB)
    if u32(spinned, ep + 0x26EB + 5) != 0x5A0:
        return None
    stream, _ = _lfsr_stream(key32, 0x5A0, 0x8C328834, True, ctx)
    _xor(spinned, ep + 0x2D5, stream)
    length = (ssize - u32(spinned, ep + 0x429)) & M32
    if length >= ssize:
        ctx.debug("spin: crc out of bounds")
        return None
    key32 = (u32(spinned, ep + STUB_SPAN) - _summit(src, length, ctx)) & M32
    src[last.raw:last.raw + rsz] = spinned
    ep = pe.vep + last.raw - last.rva
    if not contained(ssize, ep + 0x3207, 4):
        return None
    bitmap = u32(src, ep + 0x3207)
    for section in sections[:sectcnt]:
        if bitmap & 1:
            if not contained(ssize, section.raw, section.rsz):
                return None
            stream, _ = _lfsr_stream(key32, section.rsz, 0xED43AF31, False, ctx)
            _xor(src, section.raw, stream)
        bitmap >>= 1
    if u32(src, ep + 0x644) != 0x180:
        return None
    key32 = u32(src, ep + 0x644 + 0x0C)
    if not contained(ssize, ep + 0x28D3, 0x180):
        return None
    stream, _ = _lfsr_stream(key32, 0x180, 0xED43AF32, True, ctx)
    _xor(src, ep + 0x28D3, stream)
    if u32(src, ep + 0x28DD) != 0x1A1:
        return None
    if not contained(ssize, ep + 0x6D4, 0x1A1):
        return None
    try:
        _run_exec86(src, ep + 0x6D4, 0x1A1, ep + 0x28DD + 0xF, ctx)
        bitmap = u32(src, ep + 0x6F1)
        for section in sections[:sectcnt]:
            if bitmap & 1:
                if not contained(ssize, ep + 0x755, CODE_SPAN):
                    return None
                if section.rsz:
                    _run_exec86(src, section.raw, section.rsz, ep + 0x755, ctx)
            bitmap >>= 1
    except _Fail:
        ctx.debug("spin: cannot exec poly1")
        return None
    return _inflate_and_rebuild(src, pe, ep, ctx)


def _inflate_and_rebuild(src: bytearray, pe: PackedPE, ep: int,
                         ctx: UnpackContext) -> bytes | None:
    sections = pe.sections
    sectcnt = pe.nsections - 1
    bitmap = u32(src, ep + 0x3061)
    max_file = ctx.option("MaxFileSize")
    if max_file:
        total = 0
        for index, section in enumerate(sections[:sectcnt]):
            if bitmap >> index & 1:
                if total > max_file or section.vsz > max_file - total:
                    raise _TooBig()
                total += section.vsz
    ctx.debug(f"spin: compression bitmap is {bitmap:x}")
    grown = bitmap
    blobs: list[bytes] = []
    failed = False
    for index, section in enumerate(sections[:sectcnt]):
        raw = bytes(src[section.raw:section.raw + section.rsz])
        if bitmap >> index & 1:
            if not section.vsz:
                return None  # libclamav's allocation of 0 bytes fails
            blob = _inflate(raw, section.rsz, section.vsz, ctx)
            if blob is None:
                failed = True
                blob = bytes(section.vsz)
            blobs.append(blob)
        else:
            blobs.append(raw)
    if failed:
        return None
    resources = u32(src, ep + 0x2FEE)
    if resources:
        index = next((i for i, s in enumerate(sections[:sectcnt])
                      if s.rva <= resources and resources - s.rva < s.vsz
                      and 0 < resources - s.rva <= s.rsz), sectcnt)
        if index != sectcnt and not grown & (1 << (index & 31)):
            section = sections[index]
            offset = resources - section.rva
            tail = _inflate(bytes(src[section.raw + offset:section.raw + section.rsz]),
                            section.rsz - offset, section.vsz - offset, ctx)
            if tail is not None:
                blobs[index] = bytes(src[section.raw:section.raw + offset]) + tail
                grown |= 1 << (index & 31)
    rebuilt: list[RebuildSection] = []
    image = bytearray()
    for index, section in enumerate(sections[:sectcnt]):
        size = section.vsz if grown >> index & 1 else section.rsz
        raw = rebuilt[-1].raw + rebuilt[-1].rsz if rebuilt else 0
        rebuilt.append(RebuildSection(section.rva, section.vsz, raw, size))
        image += blobs[index][:size].ljust(size, b"\0")
    if not image:
        return None  # libclamav's allocation of 0 bytes fails
    return rebuild_pe(image, rebuilt, 0x400000, 0x1000, 0, 0)


def _inflate(packed: bytes, ssize: int, dsize: int, ctx: UnpackContext) -> bytes | None:
    """cli_unfsg into a fresh buffer of `dsize` bytes (None when it fails)."""
    if ssize <= 0 or dsize <= 0 or ssize > M32 // 2 or dsize > M32 // 2:
        return None
    buf = bytearray(packed[:ssize]) + bytearray(dsize)
    try:
        aplib(buf, 0, ssize, ssize, dsize, ctx)
    except DecodeError:
        return None
    return bytes(buf[ssize:])


def detect(pe: PackedPE) -> bool:
    """cli_scanpe's PESpin test."""
    last = pe.sections[-1]
    end = (last.rva + last.rsz) & M32
    return (pe.nsections > 1 and pe.vep >= last.rva and STUB_SPAN - 4 <= end
            and pe.vep < end - STUB_SPAN - 4 and pe.epbuff[4:14] == EP_MARK)


def unpack_spin(pe: PackedPE, ctx: UnpackContext) -> bytes | None:
    """cli_scanpe's PESpin block: the rebuilt PE or None (next unpacker).
    Raises Stop where cli_scanpe returns."""
    require_limits(ctx, pe.fsize)
    try:
        return unspin(bytearray(pe.data), pe, ctx)
    except _TooBig:
        ctx.debug("PESpin: size exceeded")
        return None
