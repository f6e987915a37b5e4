"""Small PE, ELF and Mach-O files written from scratch for the executable tests.

Each builder lays out a file from a short description and returns its bytes;
tests then bend single fields (with `patch`) to reach libclamav's corner
cases. Section contents default to seeded random bytes so that any 16 bytes
taken from them identify one place in the file.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field


def filler(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def patch(data: bytes, offset: int, fmt: str, *values) -> bytes:
    """`data` with struct-packed `values` written at `offset`."""
    raw = struct.pack(fmt, *values)
    return data[:offset] + raw + data[offset + len(raw):]


@dataclass
class Sec:
    name: bytes
    vaddr: int
    vsize: int
    data: bytes = b""
    raw_ptr: int | None = None  # None: laid out after the previous section
    raw_size: int | None = None  # None: len(data) rounded up to the file alignment
    chars: int = 0x60000020


@dataclass
class PESpec:
    sections: list[Sec]
    entry: int = 0x1000
    salign: int = 0x1000
    falign: int = 0x200
    pe32plus: bool = False
    subsystem: int = 3
    dll: bool = False
    e_lfanew: int = 0x80
    size_of_headers: int | None = None  # None: 0x400
    data_dirs: dict[int, tuple[int, int]] = field(default_factory=dict)
    ndatadirs: int = 16
    opt_size: int | None = None
    overlay: bytes = b""
    stub: bytes = b""  # bytes after the DOS header, before the PE header


def _round(value: int, align: int) -> int:
    return (value + align - 1) // align * align if align else value


def build_pe(spec: PESpec) -> bytes:
    opt_base = 112 if spec.pe32plus else 96
    opt_size = spec.opt_size if spec.opt_size is not None else opt_base + 8 * spec.ndatadirs
    headers_end = spec.e_lfanew + 24 + opt_size + 40 * len(spec.sections)
    size_of_headers = spec.size_of_headers or max(0x400, _round(headers_end, spec.falign or 0x200))
    # Lay out the raw data.
    layout = []
    cursor = _round(max(size_of_headers, headers_end), spec.falign or 1)
    for sec in spec.sections:
        raw_size = sec.raw_size if sec.raw_size is not None else _round(len(sec.data), spec.falign or 1)
        ptr = sec.raw_ptr if sec.raw_ptr is not None else (cursor if raw_size else 0)
        layout.append((ptr, raw_size))
        if sec.raw_ptr is None and raw_size:
            cursor = ptr + raw_size
    end = max([cursor] + [p + len(s.data) for (p, _), s in zip(layout, spec.sections, strict=True) if s.data])
    out = bytearray(end)
    out[0:2] = b"MZ"
    struct.pack_into("<I", out, 60, spec.e_lfanew)
    out[64:64 + len(spec.stub)] = spec.stub
    at = spec.e_lfanew
    chars = 0x0102 | (0x2000 if spec.dll else 0)
    struct.pack_into("<4sHHIIIHH", out, at, b"PE\0\0", 0x8664 if spec.pe32plus else 0x14C,
                     len(spec.sections), 0, 0, 0, opt_size, chars)
    at += 24
    opt = bytearray(opt_base)
    struct.pack_into("<H", opt, 0, 0x20B if spec.pe32plus else 0x10B)
    struct.pack_into("<I", opt, 16, spec.entry)
    struct.pack_into("<II", opt, 32, spec.salign, spec.falign)
    last = spec.sections[-1] if spec.sections else None
    image = _round((last.vaddr + last.vsize) if last else size_of_headers, spec.salign or 1)
    struct.pack_into("<II", opt, 56, image, size_of_headers)
    struct.pack_into("<H", opt, 68, spec.subsystem)
    if spec.pe32plus:
        struct.pack_into("<Q", opt, 24, 0x140000000)
        struct.pack_into("<I", opt, 108, spec.ndatadirs)
    else:
        struct.pack_into("<I", opt, 28, 0x400000)
        struct.pack_into("<I", opt, 92, spec.ndatadirs)
    out[at:at + opt_base] = opt
    at += opt_base
    for index in range(min(spec.ndatadirs, 16)):
        va, size = spec.data_dirs.get(index, (0, 0))
        struct.pack_into("<II", out, at + 8 * index, va, size)
    at = spec.e_lfanew + 24 + opt_size
    for sec, (ptr, raw_size) in zip(spec.sections, layout, strict=True):
        struct.pack_into("<8sIIIIIIHHI", out, at, sec.name, sec.vsize, sec.vaddr, raw_size, ptr,
                         0, 0, 0, 0, sec.chars)
        at += 40
        if sec.data:
            out[ptr:ptr + len(sec.data)] = sec.data
    return bytes(out) + spec.overlay


def import_section(vaddr: int, imports: list[tuple[bytes, list[bytes | int]]],
                   pe32plus: bool = False) -> tuple[bytes, tuple[int, int]]:
    """Raw data of an import section at `vaddr` and its data directory entry."""
    thunk = 8 if pe32plus else 4
    flag = 1 << (8 * thunk - 1)
    desc_size = 20 * (len(imports) + 1)
    names = bytearray()
    name_rvas = []
    for dll, funcs in imports:
        dll_rva = vaddr + desc_size + len(names)
        names += dll + b"\0"
        funcs_rvas = []
        for func in funcs:
            if isinstance(func, int):
                funcs_rvas.append(flag | func)
            else:
                funcs_rvas.append(vaddr + desc_size + len(names))
                names += b"\0\0" + func + b"\0"
        name_rvas.append((dll_rva, funcs_rvas))
    # Thunk arrays after the names.
    body = bytearray(desc_size) + names
    while len(body) % 8:
        body += b"\0"
    for index, (dll_rva, funcs_rvas) in enumerate(name_rvas):
        thunks_rva = vaddr + len(body)
        for value in funcs_rvas + [0]:
            body += value.to_bytes(thunk, "little")
        struct.pack_into("<IIIII", body, 20 * index, thunks_rva, 0, 0, dll_rva, thunks_rva)
    # libclamav reads ~258 bytes past each name: keep the section large enough.
    body += b"\0" * 512
    return bytes(body), (vaddr, desc_size)


def version_section(vaddr: int, strings: dict[str, str]) -> tuple[bytes, tuple[int, int], list[int]]:
    """A resource section with one VS_VERSION_INFO; also the section-relative
    offsets of each string's key (where libclamav's VI offsets point)."""

    def node(key: str, value: bytes, children: bytes, value_len: int, text: bool) -> bytes:
        head = 6 + len((key + "\0").encode("utf-16-le"))
        pad = (-head) % 4
        body = (key + "\0").encode("utf-16-le") + b"\0" * pad + value
        body += b"\0" * ((-len(body) - 6) % 4)
        total = 6 + len(body) + len(children)
        return struct.pack("<HHH", total, value_len, 1 if text else 0) + body + children

    string_nodes = []
    for key, value in strings.items():
        raw = (value + "\0").encode("utf-16-le")
        string_nodes.append(node(key, raw, b"", len(value) + 1, True))
    table = node("040904b0", b"", b"".join(string_nodes), 0, True)
    sfi = node("StringFileInfo", b"", table, 0, True)
    fixed = struct.pack("<I", 0xFEEF04BD) + b"\0" * 48
    vinfo = node("VS_VERSION_INFO", fixed, sfi, 0x34, False)
    # Resource directory: root -> type 16 -> name 1 -> lang 0x409 -> data entry.
    def directory(entries: list[tuple[int, int]]) -> bytes:
        out = struct.pack("<IIHHHH", 0, 0, 0, 0, 0, len(entries))
        return out + b"".join(struct.pack("<II", i, o) for i, o in entries)
    root = directory([(16, 0x80000000 | 24)])
    names = directory([(1, 0x80000000 | 48)])
    langs = directory([(0x409, 72)])
    data_rva = vaddr + 88
    entry = struct.pack("<IIII", data_rva, len(vinfo), 0, 0)
    body = root + names + langs + entry
    assert len(body) == 88
    body += vinfo
    # The string keys: walk what we built to find them.
    offsets = []
    pos = 88 + 6 + 32 + 2 + 0x34  # children of VS_VERSION_INFO
    pos += 6 + 30  # StringFileInfo header and key
    pos += 24  # string table header and key
    for string in string_nodes:
        offsets.append(pos + 6)
        pos += (len(string) + 3) & ~3
    return body + b"\0" * 64, (vaddr, len(body)), offsets


def simple_pe(seed: int = 1, pe32plus: bool = False, **overrides) -> bytes:
    """A plausible three-section PE with imports and version information."""
    text = Sec(b".text", 0x1000, 0x1800, filler(0x1600, seed))
    imports, imp_dir = import_section(0x3000, [
        (b"KERNEL32.dll", [b"ExitProcess", b"GetProcAddress", b"LoadLibraryA"]),
        (b"WS2_32.dll", [3, 115, 999]),
        (b"user32.DLL", [b"MessageBoxA"]),
    ], pe32plus=pe32plus)
    rsrc, res_dir, _ = version_section(0x4000, {"CompanyName": "Test Co", "ProductName": "Thing"})
    spec = PESpec(
        sections=[text, Sec(b".data", 0x3000, 0x1000, imports, chars=0xC0000040),
                  Sec(b".rsrc", 0x4000, 0x1000, rsrc, chars=0x40000040)],
        entry=0x1010, pe32plus=pe32plus, data_dirs={1: imp_dir, 2: res_dir},
    )
    for key, value in overrides.items():
        setattr(spec, key, value)
    return build_pe(spec)


# -- ELF --------------------------------------------------------------------


def build_elf(is64: bool = True, big_endian: bool = False, entry: int = 0x401010,
              segments: list[tuple[int, int, int, int]] | None = None,
              sections: list[tuple[int, int, int]] | None = None, seed: int = 1,
              size: int = 0x3000) -> bytes:
    """An ELF file: segments are (offset, vaddr, filesz, memsz), sections (addr, offset, size)."""
    e = ">" if big_endian else "<"
    if segments is None:
        segments = [(0, 0x400000, size, size)]
    if sections is None:
        sections = [(0, 0, 0), (0x401000, 0x1000, 0x800), (0x402000, 0x2000, 0x400)]
    ehsize, phsize, shsize = (64, 56, 64) if is64 else (52, 32, 40)
    phoff = ehsize
    shoff = phoff + phsize * len(segments)
    out = bytearray(filler(max(size, shoff + shsize * len(sections)), seed))
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 2 if big_endian else 1, 1]) + b"\0" * 9
    if is64:
        hdr = ident + struct.pack(e + "HHIQQQIHHHHHH", 2, 62, 1, entry, phoff, shoff, 0, ehsize,
                                  phsize, len(segments), shsize, len(sections), 0)
    else:
        hdr = ident + struct.pack(e + "HHIIIIIHHHHHH", 2, 3, 1, entry, phoff, shoff, 0, ehsize,
                                  phsize, len(segments), shsize, len(sections), 0)
    out[0:ehsize] = hdr
    for i, (off, vaddr, filesz, memsz) in enumerate(segments):
        at = phoff + i * phsize
        if is64:
            out[at:at + 56] = struct.pack(e + "IIQQQQQQ", 1, 5, off, vaddr, vaddr, filesz, memsz, 0x1000)
        else:
            out[at:at + 32] = struct.pack(e + "IIIIIIII", 1, off, vaddr, vaddr, filesz, memsz, 5, 0x1000)
    for i, (addr, off, sz) in enumerate(sections):
        at = shoff + i * shsize
        if is64:
            out[at:at + 64] = struct.pack(e + "IIQQQQIIQQ", 0, 1, 6, addr, off, sz, 0, 0, 16, 0)
        else:
            out[at:at + 40] = struct.pack(e + "IIIIIIIIII", 0, 1, 6, addr, off, sz, 0, 0, 16, 0)
    return bytes(out)


# -- Mach-O -----------------------------------------------------------------


def build_macho(is64: bool = False, big_endian: bool = True, cpu: int = 18,
                sections: list[tuple[int, int, int, int]] | None = None,
                entry: int | None = 0x1010, extra_cmds: list[tuple[int, bytes]] = (),
                seed: int = 1, size: int = 0x3000) -> bytes:
    """A Mach-O file with one segment; sections are (addr, size, offset, align exponent).

    cpu 18 is PowerPC, whose LC_UNIXTHREAD gives libclamav the entry point.
    """
    e = ">" if big_endian else "<"
    if sections is None:
        sections = [(0x1000, 0x800, 0x1000, 4), (0x2000, 0x300, 0x2000, 12)]
    cmds = []
    seg_size, sect_size = (64, 80) if is64 else (48, 68)
    seg = bytearray()
    for addr, sz, off, align in sections:
        if is64:
            seg += struct.pack(e + "16s16sQQIIIIIII", b"__text", b"__TEXT", addr, sz, off, align,
                               0, 0, 0, 0, 0) + b"\0\0\0\0"
        else:
            seg += struct.pack(e + "16s16sIIIIIIIII", b"__text", b"__TEXT", addr, sz, off, align,
                               0, 0, 0, 0, 0)
    if is64:
        seg_cmd = struct.pack(e + "16sQQQQIIII", b"__TEXT", 0, 0x4000, 0, size, 7, 5, len(sections), 0)
    else:
        seg_cmd = struct.pack(e + "16sIIIIIIII", b"__TEXT", 0, 0x4000, 0, size, 7, 5, len(sections), 0)
    cmds.append((0x19 if is64 else 0x1, seg_cmd + bytes(seg)))
    if entry is not None:
        if cpu == 18:
            state = struct.pack(e + "I", entry) + b"\0" * 156
        elif cpu == (18 | 0x1000000):
            state = struct.pack(e + "Q", entry) + b"\0" * 304
        else:
            state = struct.pack(e + "I", 0) * 10 + struct.pack(e + "I", entry) + b"\0" * 20
        cmds.append((0x5, struct.pack(e + "II", 1, len(state) // 4) + state))
    cmds.extend(extra_cmds)
    body = b"".join(struct.pack(e + "II", c, 8 + len(p)) + p for c, p in cmds)
    magic = 0xFEEDFACF if is64 else 0xFEEDFACE
    header = struct.pack(e + "IIIIIII", magic, cpu, 0, 2, len(cmds), len(body), 0)
    if is64:
        header += b"\0\0\0\0"
    out = bytearray(filler(size, seed))
    out[0:len(header) + len(body)] = header + body
    return bytes(out)


def build_fat(slices: list[bytes], align: int = 0x1000) -> bytes:
    """A universal binary holding `slices`."""
    head = struct.pack(">II", 0xCAFEBABE, len(slices))
    offset = _round(8 + 20 * len(slices), align)
    table, body = b"", b""
    for data in slices:
        table += struct.pack(">IIIII", 18, 0, offset, len(data), 12)
        padded = data + b"\0" * ((-len(data)) % align)
        body += padded
        offset += len(padded)
    start = head + table
    return start + b"\0" * (_round(len(start), align) - len(start)) + body
