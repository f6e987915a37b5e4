"""Mach-O headers as libclamav reads them: entry point and sections.

libclamav (macho.c) walks at most 1024 load commands and 255 sections per
segment, takes the entry point only from a PowerPC LC_THREAD/LC_UNIXTHREAD
(never from x86, x86-64, ARM or LC_MAIN: their entry point stays 0), and
gives each section a raw size rounded up to its alignment. Universal
("fat") binaries are not parsed here: ClamAV scans each architecture's
slice as a file of its own (`fat_slices`).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LOAD_COMMANDS = 1024
MAX_SECTIONS_PER_SEGMENT = 255
MAX_FAT_ARCHS = 32
U32 = 0xFFFFFFFF

# The sizes of libclamav's thread-state structures (with C padding).
_THREAD_STATE = {1: 64, 2: 160, 3: 312}  # x86, PowerPC, PowerPC 64


@dataclass
class MachOSection:
    rva: int
    vsz: int
    raw: int
    rsz: int
    name: bytes = b""


@dataclass
class MachOHeader:
    is64: bool
    big_endian: bool
    entry_point: int
    sections: list[MachOSection]


class MachOError(Exception):
    def __init__(self, reason: str, broken: bool):
        super().__init__(reason)
        self.broken = broken


def parse_macho_header(data) -> MachOHeader:
    """Parse like cli_scanmacho; raise MachOError (broken or not) when it fails."""
    if len(data) < 28:
        raise MachOError("can't read the header", broken=False)
    magic = bytes(data[:4])
    if magic == b"\xce\xfa\xed\xfe":
        big_endian, is64 = False, False
    elif magic == b"\xfe\xed\xfa\xce":
        big_endian, is64 = True, False
    elif magic == b"\xcf\xfa\xed\xfe":
        big_endian, is64 = False, True
    elif magic == b"\xfe\xed\xfa\xcf":
        big_endian, is64 = True, True
    else:
        raise MachOError("incorrect magic", broken=False)
    order = "big" if big_endian else "little"

    def u32(at: int) -> int | None:
        if at + 4 > len(data):
            return None
        return int.from_bytes(data[at:at + 4], order)

    def u64(at: int) -> int:
        return int.from_bytes(data[at:at + 8], order)

    cpu_type = u32(4)
    arch = {7: 1, 18: 2, 18 | 0x1000000: 3}.get(cpu_type, 0)
    ncmds = u32(16)
    if not ncmds or ncmds > MAX_LOAD_COMMANDS:
        raise MachOError(f"invalid number of load commands ({ncmds})", broken=True)
    at = 28 + (4 if is64 else 0)
    sections: list[MachOSection] = []
    entry = 0
    for _ in range(ncmds):
        if at + 8 > len(data):
            raise MachOError("can't read a load command", broken=True)
        cmd, cmdsize = u32(at), u32(at + 4)
        at += 8
        if cmd == (0x19 if is64 else 0x01):  # LC_SEGMENT(_64)
            seg_size = 64 if is64 else 48
            if at + seg_size > len(data):
                raise MachOError("can't read a segment command", broken=True)
            nsects = u32(at + seg_size - 8)
            at += seg_size
            if nsects > MAX_SECTIONS_PER_SEGMENT:
                raise MachOError("invalid number of sections", broken=True)
            for _ in range(nsects):
                sect_size = 80 if is64 else 68
                if at + sect_size > len(data):
                    raise MachOError("can't read a section", broken=True)
                name = bytes(data[at:at + 16]).split(b"\0", 1)[0]
                if is64:
                    rva, vsz = u64(at + 32) & U32, u64(at + 40) & U32
                    raw, align_exp = u32(at + 48), u32(at + 52)
                else:
                    rva, vsz, raw, align_exp = u32(at + 32), u32(at + 36), u32(at + 40), u32(at + 44)
                # (uint64_t)1 << align, as x86 shifts: the count taken mod 64.
                if (1 << (align_exp & 63)) > 0x7FFFFFFF:
                    raise MachOError("malformed section alignment", broken=True)
                # `1 << align` in a 32-bit int: the count taken mod 32.
                align = (1 << (align_exp & 31)) & U32
                rsz = (vsz + (align - vsz % align) % align) & U32
                sections.append(MachOSection(rva, vsz, raw, rsz, name))
                at += sect_size
        elif arch and cmd in (0x4, 0x5):  # LC_THREAD, LC_UNIXTHREAD
            at += 8
            size = _THREAD_STATE[arch]
            if at + size > len(data):
                raise MachOError("can't read the thread state", broken=True)
            if arch == 2:
                entry = u32(at)
            elif arch == 3:
                entry = u64(at) & U32
            at += size
        elif cmdsize > 8:
            at += cmdsize - 8
    if entry and sections:
        for s in sections:
            if s.rva <= entry and (s.rva + s.vsz) & U32 > entry:
                entry = (entry - s.rva + s.raw) & U32
                break
        else:
            raise MachOError("can't calculate the entry point offset", broken=False)
    return MachOHeader(is64, big_endian, entry, sections)


def fat_slices(data) -> tuple[list[tuple[int, int]], bool]:
    """The (offset, size) of each architecture in a universal binary, and `broken`.

    As libclamav's cli_scanmacho_unibin: nothing for Java class files (which
    share the magic) or more than 32 architectures; `broken` when the
    architecture table is cut short.
    """
    if len(data) < 8:
        return [], False
    magic = bytes(data[:4])
    if magic == b"\xca\xfe\xba\xbe":
        order = "big"
    elif magic == b"\xbe\xba\xfe\xca":
        order = "little"
    else:
        return [], False
    nfats = int.from_bytes(data[4:8], order)
    if (nfats & 0xFFFF) >= 39 or nfats > MAX_FAT_ARCHS:
        return [], False
    slices = []
    for i in range(nfats):
        at = 8 + 20 * i
        if at + 20 > len(data):
            return slices, True
        offset = int.from_bytes(data[at + 8:at + 12], order)
        size = int.from_bytes(data[at + 12:at + 16], order)
        slices.append((offset, size))
    return slices, False
