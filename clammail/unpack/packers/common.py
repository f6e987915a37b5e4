"""What every PE unpacker needs: the packed file as libclamav's PE scanner sees
it, 32-bit arithmetic, bounds checks and libclamav's PE rebuilder.

libclamav's unpackers are C code over `uint32_t` values and pointers; their
answers on hostile files depend on where that arithmetic wraps. The helpers
here keep those rules in one place:

- `u32`/`s32` read little-endian words (libclamav's `cli_readint32` is
  signed); `M32` masks a value to 32 bits where the C computes in `uint32_t`.
- `contained(size, off, n)` is `CLI_ISCONTAINED(buf, size, buf + off, n)`
  with `off` a mathematical offset (C pointer arithmetic does not wrap).
- `rebuild_pe` is `cli_rebuildpe_align`: the fake PE libclamav writes around
  unpacked sections, byte for byte.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass

from clammail.formats.pe import HeaderError, PESection, parse_pe_header
from clammail.unpack.base import UnpackContext

M32 = 0xFFFFFFFF
# CLI_MAX_ALLOCATION: libclamav refuses larger allocations.
MAX_ALLOCATION = 1024 * 1024 * 1024
# cli_scanpe reads this much at the entry point (epbuff).
EP_BUFFER = 4096


def u16(data, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "little") if 0 <= at else 0


def u32(data, at: int) -> int:
    """An unsigned little-endian word; bytes past the end read as zero."""
    if at < 0:
        return 0
    return int.from_bytes(bytes(data[at:at + 4]).ljust(4, b"\0"), "little")


def s32(data, at: int) -> int:
    value = u32(data, at)
    return value - (1 << 32) if value & 0x80000000 else value


def signed32(value: int) -> int:
    value &= M32
    return value - (1 << 32) if value & 0x80000000 else value


def put32(buf: bytearray, at: int, value: int) -> None:
    struct.pack_into("<I", buf, at, value & M32)


def contained(size: int, off: int, n: int) -> bool:
    """CLI_ISCONTAINED(base, size, base + off, n) with exact integers."""
    return 0 < n <= size and off >= 0 and off + n <= size


def contained_in(base: int, size: int, at: int, n: int) -> bool:
    """CLI_ISCONTAINED over plain integers (RVAs, file offsets)."""
    return 0 < n <= size and at >= base and at + n <= base + size and size > 0


def align_up(value: int, align: int) -> int:
    """PESALIGN computed in uint32_t, as libclamav does (it wraps)."""
    if not align:
        return value & M32
    return ((value // align + (value % align != 0)) * align) & M32


def align_down(value: int, align: int) -> int:
    return (value // align) * align if align else value


class Stop(Exception):
    """cli_scanpe returns here: no further unpacker is tried (a size limit,
    a read error, a failure libclamav treats as final)."""


def within_limits(ctx: UnpackContext, needed: int) -> bool:
    """libclamav's CLI_UNPSIZELIMITS: may an unpacker use `needed` bytes?"""
    ctx.check()
    if not needed:
        return True
    left = ctx.scan_size_left()
    if left is not None and left < needed:
        ctx.limit_exceeded("MaxScanSize")
        return False
    max_file = ctx.option("MaxFileSize")
    if max_file and max_file < needed:
        ctx.limit_exceeded("MaxFileSize")
        return False
    return True


def require_limits(ctx: UnpackContext, needed: int) -> None:
    if not within_limits(ctx, needed):
        raise Stop()


@dataclass
class PackedPE:
    """A PE32 file as cli_scanpe sees it when it tries its unpackers."""

    data: bytes | mmap.mmap  # slicing gives bytes
    sections: list[PESection]
    vep: int  # AddressOfEntryPoint
    ep: int  # its file offset
    imagebase: int
    e_lfanew: int
    opt_size: int  # SizeOfOptionalHeader
    hdr_size: int
    min: int  # lowest section RVA
    max: int  # highest section RVA + raw size
    res_rva: int
    res_size: int
    epbuff: bytes  # EP_BUFFER bytes from the entry point, zero-padded
    epsize: int  # how many of them the file has

    @property
    def fsize(self) -> int:
        return len(self.data)

    @property
    def nsections(self) -> int:
        return len(self.sections)


def read_packed_pe(data, strict: bool) -> PackedPE | None:
    """The header as cli_scanpe parses it; None when libclamav would not unpack
    (a header it rejects, or PE32+, which cli_scanpe leaves before its packers)."""
    try:
        header = parse_pe_header(data, strict=strict, remove_missing=True)
    except HeaderError:
        return None
    if header.is_pe32plus:
        return None
    if not isinstance(data, (bytes, mmap.mmap)):
        data = bytes(data)  # slices of a memoryview would not be bytes
    e_lfanew = u32(data, 60)
    sections = header.sections
    low = high = 0
    for index, section in enumerate(sections):
        end = (section.rva + section.rsz) & M32
        if index == 0:
            low, high = section.rva, end
        else:
            low = min(low, section.rva)
            high = max(high, end)
    epbuff = data[header.entry_point:header.entry_point + EP_BUFFER]
    dirs = header.data_dirs
    res = dirs[2] if len(dirs) > 2 else (0, 0)
    return PackedPE(
        data=data, sections=sections, vep=header.entry_rva, ep=header.entry_point,
        imagebase=u32(data, e_lfanew + 24 + 28), e_lfanew=e_lfanew,
        opt_size=header.size_of_optional_header, hdr_size=header.hdr_size,
        min=low, max=high, res_rva=res[0], res_size=res[1],
        epbuff=epbuff.ljust(EP_BUFFER, b"\0"), epsize=len(epbuff),
    )


@dataclass
class RebuildSection:
    """What cli_rebuildpe takes per section (struct cli_exe_section's rva/vsz/raw/rsz)."""

    rva: int
    vsz: int
    raw: int
    rsz: int


# The DOS stub and the PE/optional headers libclamav writes into every rebuilt
# file ("This file was created by ClamAV for internal use ..."): the same bytes
# as libclamav's, so rebuilt files hash alike.
_DOS_HEADER = bytes.fromhex(
    "4D5A9000020000000400 0F00FFFF0000"
    "B000000000000000 40001A0000000000"
    "0000000000000000 0000000000000000"
    "0000000000000000 00000000D0000000"
    "0E1FB409BA0D00CD 21B44CCD21546869"
    "732066696C652077 6173206372656174"
    "656420627920436C 616D415620666F72"
    "20696E7465726E61 6C2075736520616E"
    "642073686F756C64 206E6F7420626520"
    "72756E2E0D0A436C 616D4156202D2041"
    "2047504C20766972 7573207363616E6E"
    "6572202D20687474 703A2F2F7777772E"
    "636C616D61762E6E 65740D0A24000000"
)
# cli_rebuildpe's file and optional headers (0x78 bytes; NumberOfSections,
# AddressOfEntryPoint, ImageBase, SizeOfImage and SizeOfHeaders are filled in).
_PE_HEADER = bytes.fromhex(
    "504500004C01FFFF 434C414D00000000"
    "00000000E000838F 0B01000000100000"
    "0010000000000000 FFFFFFFF00100000"
    "00100000FFFFFFFF 0010000000020000"
    "0100000000000000 03000A0000000000"
    "0010000000040000 0000000002000000"
    "0000100000100000 0000100000100000"
    "0000000010000000"
)
REBUILD_HEADERS = _DOS_HEADER + _PE_HEADER
assert len(_DOS_HEADER) == 0xD0 and len(REBUILD_HEADERS) == 0x148

MAX_REBUILD_SECTIONS = 96


def rebuild_pe(image, sections: list[RebuildSection], base: int, ep: int,
               res_rva: int, res_size: int, align: int = 0) -> bytes | None:
    """cli_rebuildpe_align: a parsable (not runnable) PE around `sections`,
    whose `raw`/`rsz` point into `image`. None where libclamav gives up."""
    count = len(sections)
    rawbase = align_up(0x148 + 0x80 + 0x28 * count, 0x200)
    ghost = sections[0].rva > align_up(rawbase, 0x1000)
    if ghost:
        rawbase = align_up(0x148 + 0x80 + 0x28 * (count + 1), 0x200)
    if count + ghost > MAX_REBUILD_SECTIONS:
        return None

    def raw_span(s: RebuildSection) -> int:
        size = align_up(s.rsz, align) if align else s.rsz
        return align_up(size, 0x200)

    datasize = 0
    for s in sections:
        datasize = (datasize + raw_span(s)) & M32
    if datasize > MAX_ALLOCATION:
        return None
    out = bytearray(rawbase + datasize)
    out[:0x148] = REBUILD_HEADERS
    virtual = align_up(rawbase, 0x1000)
    struct.pack_into("<H", out, 0xD6, (count + ghost) & 0xFFFF)
    put32(out, 0xD0 + 40, ep)
    put32(out, 0xD0 + 52, base)
    put32(out, 0xD0 + 84, rawbase)
    put32(out, 0x148 + 0x10, res_rva)
    put32(out, 0x148 + 0x14, res_size)
    at = 0x148 + 0x80
    if ghost:
        out[at:at + 8] = b"empty\0\0\0"
        put32(out, at + 8, sections[0].rva - virtual)
        put32(out, at + 12, virtual)
        put32(out, at + 0x24, M32)
        at += 40
        virtual = (virtual + align_up((sections[0].rva - virtual) & M32, 0x1000)) & M32
    for index, s in enumerate(sections):
        out[at:at + 8] = (b".clam%02d" % (index + 1))[:7].ljust(8, b"\0")
        if align:
            put32(out, at + 8, align_up(s.vsz, align))
            put32(out, at + 12, align_up(s.rva, align))
            put32(out, at + 16, align_up(s.rsz, align))
        else:
            put32(out, at + 8, s.vsz)
            put32(out, at + 12, s.rva)
            put32(out, at + 16, s.rsz)
        put32(out, at + 20, rawbase)
        put32(out, at + 0x24, M32)
        chunk = bytes(image[s.raw:s.raw + s.rsz])
        out[rawbase:rawbase + len(chunk)] = chunk
        at += 40
        rawbase += raw_span(s)
        vsz = align_up(s.vsz, align) if align else s.vsz
        virtual = (virtual + align_up(vsz, 0x1000)) & M32
    put32(out, 0xD0 + 80, virtual)
    return bytes(out[:rawbase])
