"""Byte decryptors made of x86 AL/CL instructions, applied fast.

yoda's Crypter and PESpin decrypt data byte by byte with a short piece of
polymorphic code: ADD/SUB/XOR AL with a constant or with CL, INC/DEC AL,
ROL/ROR AL by a constant or by CL, where CL counts down with the byte
index. libclamav interprets that code once per byte. Which instructions run
does not depend on the data, so the unpackers decode the code once into a
`ByteProgram` and `apply_program` runs it on all bytes sharing a CL value
at once, through 256-byte translation tables (C-speed `bytes.translate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _rol8(value: int, count: int) -> int:
    count &= 7
    return ((value << count) | (value >> ((8 - count) & 7))) & 0xFF


def _ror8(value: int, count: int) -> int:
    count &= 7
    return ((value >> count) | (value << ((8 - count) & 7))) & 0xFF


# op kind -> f(al, operand); x86 rotates count modulo the operand width.
_OPS = {
    "add": lambda al, k: (al + k) & 0xFF,
    "sub": lambda al, k: (al - k) & 0xFF,
    "xor": lambda al, k: al ^ k,
    "rol": _rol8,
    "ror": _ror8,
}
_TABLES: dict[tuple[str, int], bytes] = {}

CL = "cl"  # an operand naming the CL register


def op_table(kind: str, operand: int) -> bytes:
    """The 256-byte translation table of one instruction (cached)."""
    key = (kind, operand & 0xFF)
    table = _TABLES.get(key)
    if table is None:
        fn = _OPS[kind]
        table = _TABLES[key] = bytes(fn(al, operand & 0xFF) for al in range(256))
    return table


@dataclass
class ByteProgram:
    """A decoded decryptor: its operations (operand CL for the register), the
    jumps one pass takes, the code bytes it reads (relative to its start) and
    why it cannot run (None when it can)."""

    ops: list[tuple[str, int | str]] = field(default_factory=list)
    jumps: int = 0
    reads: set[int] = field(default_factory=set)
    failure: str | None = None


def translation(program: ByteProgram, cl: int) -> bytes:
    table = bytes(range(256))
    for kind, operand in program.ops:
        table = table.translate(op_table(kind, cl if operand == CL else operand))
    return table


def apply_program(buf: bytearray, code: int, start: int, stop: int, program: ByteProgram,
                  ecx: int) -> None:
    """Run `program` on buf[code+start:code+stop]; byte i sees CL = (ecx - i) & 0xFF."""
    count = stop - start
    if count <= 0:
        return
    values = range(256) if count >= 256 else {(ecx - i) & 0xFF for i in range(start, stop)}
    for cl in values:
        first = start + ((ecx - cl - start) & 0xFF)
        if first >= stop:
            continue
        lo, hi = code + first, code + stop
        buf[lo:hi:256] = buf[lo:hi:256].translate(translation(program, cl))
