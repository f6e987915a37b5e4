"""yoda's Crypter 1.x (yC): libclamav's decryption by emulating the crypter's
polymorphic byte decryptors (libclamav yc.c, detection in pe.c; the
decryptors run through `byteops`).

The crypter adds a last section whose code decrypts, byte by byte, first the
rest of its own code and then every section but a few (resources, relocs,
TLS ...). Each decryptor is a short run of x86 byte instructions on AL and
CL (ADD/SUB/XOR with a constant or CL, DEC, ROL/ROR by a constant or CL, a
short JMP), and CL counts down with the byte index. libclamav interprets the
decryptor once per byte; the walk through the decryptor does not depend on
the data, so here it is decoded once into a program, and the program is
applied to all bytes with the same CL at once through 256-byte translation
tables. Where the bytes being decrypted include the decryptor itself (a
crafted file), the program is decoded again after each such byte, as the
byte-wise emulation would see it.

The result is the file with its sections decrypted, the yC section cut off
the end, the import directory cleared, the original entry point restored.
"""

from __future__ import annotations

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.byteops import CL, ByteProgram, apply_program
from clammail.unpack.packers.common import M32, PackedPE, put32, s32, u16, u32

# libclamav's cap on emulated jumps per decryption run.
MAX_JUMPS = 100_000_000
# The decryptor is interpreted while its instruction index is below this.
DECRYPTOR_SPAN = 0x30

# Section names (first four bytes, little-endian) yC leaves encrypted-free.
_SKIPPED_NAMES = frozenset({
    0x63727372, 0x7273722E, 0x6F6C6572, 0x6C65722E, 0x6164652E, 0x6164722E,
    0x6164692E, 0x736C742E,
})
_YC13 = bytes.fromhex("558BEC5356576 0E8000000005D81ED".replace(" ", ""))
_YC13_LOOP = bytes.fromhex("8D3A8BF733C0EB0490EB01C2AC")
_YC13_VARIANT = bytes.fromhex("558BEC83EC40535657")
_YC13_VARIANT_CALL = bytes.fromhex("e8000000005d81ed")
_YC1X = bytes.fromhex("60e8000000005d81ed")


class BoundsCheck(Exception):
    """libclamav's yc_bounds_check failed (it reports Heuristics.BoundsCheck)."""


class _Failed(Exception):
    """The emulation gave up without a finding (unhandled opcode, jump budget)."""


def _decode(buf: bytearray, at: int, filesize: int) -> ByteProgram:
    """Walk the decryptor as yc_poly_emulator does for one byte."""
    program = ByteProgram()
    ops = program.ops
    seen: set[int] = set()
    j = 0

    def read(index: int) -> int:
        # yc_bounds_check: the 32-bit offset from the buffer start may not pass filesize.
        if at + index > filesize or at + index >= 1 << 32:
            raise BoundsCheck()
        program.reads.add(index)
        return buf[at + index] if at + index < len(buf) else 0

    try:
        while j < DECRYPTOR_SPAN:
            if j in seen:
                program.failure = "loop"  # only the jump budget ends it
                return program
            seen.add(j)
            op = read(j)
            if op == 0xEB:
                j += 1
                displacement = read(j)
                program.jumps += 1
                j = (j + displacement - (256 if displacement & 0x80 else 0)) & M32
            elif op == 0xFE:
                ops.append(("sub", 1))
                j += 1
            elif op in (0x2A, 0x02, 0x32):
                ops.append(({0x2A: "sub", 0x02: "add", 0x32: "xor"}[op], CL))
                j += 1
            elif op in (0x04, 0x34, 0x2C):
                j += 1
                ops.append(({0x04: "add", 0x34: "xor", 0x2C: "sub"}[op], read(j)))
            elif op == 0xC0:
                j += 1
                kind = "rol" if read(j) == 0xC0 else "ror"
                j += 1
                ops.append((kind, read(j)))
            elif op == 0xD2:
                j += 1
                kind = "ror" if read(j) == 0xC8 else "rol"
                j += 1
                ops.append((kind, CL))
            elif op not in (0x90, 0xF8, 0xF9):
                program.failure = "unhandled"
                return program
            j = (j + 1) & M32
    except BoundsCheck:
        program.failure = "bounds"
    return program


def poly_emulate(buf: bytearray, filesize: int, decryptor: int, code: int, ecx: int,
                 limit: int, ctx: UnpackContext) -> None:
    """yc_poly_emulator: decrypt min(ecx, limit) bytes at `code` in place.
    Raises BoundsCheck or _Failed as libclamav returns 2 or 1."""
    total = min(ecx, limit)
    jumps_left = MAX_JUMPS
    index = 0
    while index < total:
        ctx.check()
        if code + index > filesize or code + index >= 1 << 32:
            raise BoundsCheck()
        program = _decode(buf, decryptor, filesize)
        if program.failure == "bounds":
            raise BoundsCheck()
        if program.failure:
            raise _Failed(program.failure)
        # Bytes up to the next one that is part of the decryptor keep this program.
        stop = total
        for read in program.reads:
            position = decryptor + read - code
            if index <= position < stop:
                stop = position + 1
        last_ok = filesize - code  # the last index the bounds check lets through
        bounded = min(stop, last_ok + 1)
        if program.jumps:
            budget = jumps_left // program.jumps
            if budget < bounded - index:
                raise _Failed("jumps")
            jumps_left -= program.jumps * (bounded - index)
        apply_program(buf, code, index, bounded, program, ecx)
        if bounded < stop:
            raise BoundsCheck()
        index = stop


def detect(pe: PackedPE) -> tuple[int, int] | None:
    """cli_scanpe's yC test: (ecx, offset) when the entry point holds yC's code."""
    last = pe.sections[-1]
    if pe.nsections <= 1 or pe.vep != (last.rva + 0x60) & M32:
        return None
    ep = pe.epbuff
    ecx = 0
    offset = 0
    if (ep[:15] == _YC13 and ep[0x26:0x26 + 13] == _YC13_LOOP and ep[0x13] == 0xB9
            and u16(ep, 0x18) == 0xE981 and ep[0x1E:0x22] == bytes.fromhex("8BD581C2")):
        offset = 0
        if (0x6C - s32(ep, 0xF) + s32(ep, 0x22)) & M32 == 0xC6:
            ecx = (s32(ep, 0x14) - s32(ep, 0x1A)) & M32
    if (not ecx and ep[:9] == _YC13_VARIANT and ep[0x17:0x1F] == _YC13_VARIANT_CALL
            and ep[0x23] == 0xB9):
        offset = 0x10
        if (0x6C - s32(ep, 0x1F) + s32(ep, 0x32)) & M32 == 0xC6:
            ecx = (s32(ep, 0x24) - s32(ep, 0x2A)) & M32
    if (not ecx and ep[:9] == _YC1X and ep[0xD] == 0xB9 and u16(ep, 0x12) == 0xBD8D
            and ep[0x18:0x1B] == bytes.fromhex("8bf7ac")):
        offset = -0x18
        if (0x66 - s32(ep, 0x9) + s32(ep, 0x14)) & M32 == 0xAE:
            ecx = u32(ep, 0xE)
    if not 0x800 < ecx < 0x2000 or ep[0x63 + offset:0x66 + offset] != b"\xaa\xe2\xcc":
        return None
    if pe.fsize < (last.raw + 0xC6 + ecx + offset) & M32:
        return None
    return ecx, offset


def unpack_yc(pe: PackedPE, ecx: int, offset: int, ctx: UnpackContext) -> bytes | None:
    """yc_decrypt: the decrypted file, or None when the emulation failed.
    Raises BoundsCheck where libclamav reports Heuristics.BoundsCheck."""
    buf = bytearray(pe.data)
    sections = pe.sections
    count = pe.nsections - 1
    ycsect = (sections[count].raw + offset) & M32
    filesize = pe.fsize
    header = pe.e_lfanew
    names = header + pe.opt_size + 0x18
    ctx.debug(f"yC: offset: {offset:x}, length: {ecx:x}")
    try:
        poly_emulate(buf, filesize, ycsect + 0x93, ycsect + 0xC6, ecx, ecx, ctx)
        filesize = (filesize - sections[count].ursz) & M32
        second = ycsect + (0x3EA if offset == -0x18 else 0x457)
        for index in range(count):
            section = sections[index]
            name = u32(buf, names + index * 0x28)
            if (not section.raw or not section.rsz or name in _SKIPPED_NAMES
                    or name & 0xFFFF == 0x4379):
                continue
            limit = (filesize - section.raw) & M32
            if limit > filesize:
                return None
            poly_emulate(buf, pe.fsize, second, section.raw, section.ursz, limit, ctx)
    except _Failed as exc:
        ctx.debug(f"yC: emulation failed ({exc})")
        return None
    struct_at = header + 24
    buf[header + 6:header + 8] = (count & 0xFFFF).to_bytes(2, "little")
    buf[struct_at + 0x68:struct_at + 0x70] = bytes(8)
    put32(buf, struct_at + 16, u32(buf, ycsect + 0xA0F))
    put32(buf, struct_at + 0x38, u32(buf, struct_at + 0x38) - sections[count].vsz)
    return bytes(buf[:filesize])
