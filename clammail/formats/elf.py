"""ELF headers as libclamav reads them: entry point and sections for signatures.

Two modes, as in libclamav elf.c: the signature matcher's (cli_elfheader:
any trouble means "no offsets") and the scanner's (cli_scanelf: some of the
same trouble is Heuristics.Broken.Executable with AlertBrokenExecutables).
Counts are capped as libclamav caps them (128 program headers, 256 or
2048 section headers), so hostile headers cost little.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PROGRAM_HEADERS = 128
MAX_SECTIONS_MATCHER = 256  # cli_elfheader: more is "suspicious", no offsets
MAX_SECTIONS_SCANNER = 2048  # cli_scanelf: more and it stops looking
U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF


@dataclass
class ELFSection:
    rva: int  # sh_addr (truncated to 32 bits, as libclamav stores it)
    raw: int  # sh_offset
    rsz: int  # sh_size


@dataclass
class ELFHeader:
    is64: bool
    big_endian: bool
    entry_point: int  # file offset (0 without program headers or entry)
    sections: list[ELFSection]


class ELFError(Exception):
    """The header could not be used; `broken` is the scanner's verdict."""

    def __init__(self, reason: str, broken: bool):
        super().__init__(reason)
        self.broken = broken


def _reader(data, big_endian: bool):
    order = "big" if big_endian else "little"

    def read(at: int, size: int) -> int | None:
        if at < 0 or at + size > len(data):
            return None
        return int.from_bytes(data[at:at + size], order)

    return read


def parse_elf_header(data, *, scanner: bool = False) -> ELFHeader:
    """Parse like cli_elfheader (or cli_scanelf with `scanner`); raise ELFError."""
    if len(data) < 52:
        raise ELFError("can't read the file header", broken=False)
    if bytes(data[:4]) != b"\x7fELF":
        raise ELFError("not an ELF file", broken=False)
    ei_class = data[4]
    if ei_class not in (1, 2):
        raise ELFError(f"unknown ELF class {ei_class}", broken=True)
    is64 = ei_class == 2
    big_endian = data[5] != 1  # libclamav: anything but 1 is big-endian
    if is64 and len(data) < 64:
        raise ELFError("can't read the 64-bit file header", broken=False)
    read = _reader(data, big_endian)
    if is64:
        entry, phoff, shoff = read(24, 8), read(32, 8), read(40, 8)
        phentsize, phnum, shentsize, shnum = read(54, 2), read(56, 2), read(58, 2), read(60, 2)
        ph_size, sh_size, mask = 56, 64, U64
    else:
        entry, phoff, shoff = read(24, 4), read(28, 4), read(32, 4)
        phentsize, phnum, shentsize, shnum = read(42, 2), read(44, 2), read(46, 2), read(48, 2)
        ph_size, sh_size, mask = 32, 40, U32

    # Program headers and the entry point.
    if phnum > MAX_PROGRAM_HEADERS:
        raise ELFError("suspicious number of program headers", broken=True)
    file_entry = 0
    if phnum and entry:
        if phentsize != ph_size:
            raise ELFError("wrong program header size", broken=True)
        segments = []
        for i in range(phnum):
            at = phoff + i * ph_size
            if at + ph_size > len(data):
                raise ELFError(f"can't read segment #{i}", broken=True)
            if is64:
                segments.append((read(at + 16, 8), read(at + 40, 8), read(at + 8, 8)))
            else:
                segments.append((read(at + 8, 4), read(at + 20, 4), read(at + 4, 4)))
        for vaddr, memsz, offset in segments:
            if vaddr <= entry and (vaddr + memsz) & mask > entry:
                file_entry = (entry - vaddr + offset) & mask
                break
        else:
            raise ELFError("can't map the entry point to a file offset", broken=True)

    # Section headers.
    if scanner and shnum > MAX_SECTIONS_SCANNER:
        return ELFHeader(is64, big_endian, file_entry & U32, [])
    if not scanner and shnum > MAX_SECTIONS_MATCHER:
        raise ELFError("suspicious number of sections", broken=False)
    if shentsize != sh_size:
        raise ELFError("wrong section header size", broken=True)
    sections = []
    for i in range(shnum):
        at = shoff + i * sh_size
        if at + sh_size > len(data):
            raise ELFError("can't read a section header", broken=True)
        if is64:
            sections.append(ELFSection(read(at + 16, 8) & U32, read(at + 24, 8) & U32,
                                       read(at + 32, 8) & U32))
        else:
            sections.append(ELFSection(read(at + 12, 4), read(at + 16, 4), read(at + 20, 4)))
    return ELFHeader(is64, big_endian, file_entry & U32, sections)
