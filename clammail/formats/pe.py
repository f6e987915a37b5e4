"""PE (Windows executable) headers as libclamav reads them.

Every number here is computed the way ClamAV 1.4 computes it, quirks
included, because signatures depend on them: section offsets and sizes are
aligned to SectionAlignment / FileAlignment (with libclamav's "fallback" to a
file alignment of 0x200), sections past the end of the file are cut or
dropped, and the entry point is mapped from its RVA with ClamAV's rules.

One parse (`parse_pe_header`) has the switches of libclamav's cli_peheader:
`strict` (the checks that only count with AlertBrokenExecutables),
`remove_missing` (drop sections that start past the end of the file, as the
PE scanner does; the signature matcher instead keeps them with size 0) and
`version_info` (collect the VI offsets). All reads are bounded: at most 65535
sections (40 bytes each), 16 version resources, and the resource-tree walk caches each
directory so hostile counts cannot make it quadratic.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# libclamav 1.4 takes any NumberOfSections but 0 (older releases stopped at 96).
MAX_SECTIONS = 0xFFFF
MAX_NAME = 256  # PE_MAXNAMESIZE: DLL and function names are cut there
MAX_IMPORT_DLLS = 1024  # PE_MAXIMPORTS (libclamav applies it to DLLs only)
MAX_VERSION_RESOURCES = 16  # libclamav keeps the first 16 VERSIONINFO resources
OPT32_SIZE = 96  # the optional header without its data directories
OPT64_SIZE = 112
U32 = 0xFFFFFFFF


class HeaderError(Exception):
    """cli_peheader failed; `broken` says whether ClamAV calls the file broken."""

    def __init__(self, reason: str, broken: bool):
        super().__init__(reason)
        self.broken = broken


@dataclass
class PESection:
    """One section as libclamav keeps it (struct cli_exe_section)."""

    rva: int  # VirtualAddress aligned down to SectionAlignment
    vsz: int  # VirtualSize aligned up
    raw: int  # PointerToRawData aligned down to the file alignment
    rsz: int  # SizeOfRawData aligned up, cut at the end of the file
    chr: int
    urva: int  # the header's own values
    uvsz: int
    uraw: int
    ursz: int
    name: bytes = b""


@dataclass
class PEHeader:
    is_pe32plus: bool
    is_dll: bool
    entry_rva: int
    entry_point: int  # file offset
    hdr_size: int  # SizeOfHeaders aligned up to SectionAlignment
    sections: list[PESection]
    data_dirs: list[tuple[int, int]]  # (VirtualAddress, Size), at most 16
    subsystem: int
    size_of_optional_header: int
    version_info_offsets: list[int] = field(default_factory=list)


def _align_down(value: int, align: int) -> int:
    return (value // align) * align if align else value


def _align_up(value: int, align: int) -> int:
    # libclamav computes this in 32 bits: it wraps.
    if not align:
        return value
    return (((value // align) + (value % align != 0)) * align) & U32


def rva_to_offset(rva: int, sections: list[PESection], hdr_size: int, fsize: int) -> int | None:
    """libclamav's cli_rawaddr: the file offset of an RVA, None when it maps nowhere."""
    if rva < hdr_size:
        return rva if rva < fsize else None
    for section in reversed(sections):
        if section.rsz and section.rva <= rva and section.rsz > rva - section.rva:
            return (rva - section.rva + section.raw) & U32
    return None


def _u16(data, at: int) -> int:
    return int.from_bytes(data[at:at + 2], "little")


def _u32(data, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little")


def _read(data, at: int, size: int):
    """Exactly `size` bytes at `at`, or None (fmap_readn / fmap_need_off_once)."""
    if at < 0 or size <= 0 or at + size > len(data):
        return None
    return data[at:at + size]


def parse_pe_header(data, *, strict: bool = False, remove_missing: bool = False,
                    version_info: bool = False) -> PEHeader:
    """Parse like cli_peheader; raise HeaderError when libclamav's parse fails."""
    fsize = len(data)
    magic = _read(data, 0, 2)
    if magic is None or bytes(magic) not in (b"MZ", b"ZM"):
        raise HeaderError("invalid DOS signature", broken=False)
    raw = _read(data, 60, 4)
    if raw is None:
        raise HeaderError("can't read e_lfanew", broken=True)
    e_lfanew = int.from_bytes(raw, "little")
    if e_lfanew == 0:
        raise HeaderError("e_lfanew == 0", broken=False)
    file_hdr = _read(data, e_lfanew, 24)
    if file_hdr is None:
        raise HeaderError("can't read the file header", broken=False)
    if bytes(file_hdr[:4]) != b"PE\0\0":
        raise HeaderError("invalid PE signature", broken=False)
    nsections = _u16(file_hdr, 6)
    opt_hdr_size = _u16(file_hdr, 20)
    characteristics = _u16(file_hdr, 22)
    is_dll = bool(characteristics & 0x2000)
    if nsections == 0 or nsections > MAX_SECTIONS:
        raise HeaderError(f"invalid NumberOfSections ({nsections})", broken=True)
    if opt_hdr_size < OPT32_SIZE:
        raise HeaderError("SizeOfOptionalHeader too small", broken=True)
    at = e_lfanew + 24
    opt = _read(data, at, OPT32_SIZE)
    if opt is None:
        raise HeaderError("can't read the optional header", broken=True)
    stored = OPT32_SIZE
    is_pe32plus = _u16(opt, 0) == 0x20B
    if is_pe32plus:
        if opt_hdr_size < OPT64_SIZE:
            raise HeaderError("SizeOfOptionalHeader too small for PE32+", broken=True)
        opt = _read(data, at, OPT64_SIZE)
        if opt is None:
            raise HeaderError("can't read the PE32+ optional header", broken=True)
        stored = OPT64_SIZE
        ndatadirs = _u32(opt, 108)
    else:
        ndatadirs = _u32(opt, 92)
    at += stored
    entry_rva = _u32(opt, 16)
    salign = _u32(opt, 32)
    falign = _u32(opt, 36)
    hdr_size = _u32(opt, 60)
    subsystem = _u16(opt, 68)
    native = subsystem == 1
    if strict and not native and (not salign or salign % 0x1000):
        raise HeaderError("bad section alignment", broken=True)
    if strict and not native and (not falign or falign % 0x200):
        raise HeaderError("bad file alignment", broken=True)

    ndatadirs = min(ndatadirs, 16)
    dirs_size = 8 * ndatadirs
    if opt_hdr_size < stored + dirs_size:
        raise HeaderError("SizeOfOptionalHeader does not cover the data directories", broken=True)
    dirs_raw = _read(data, at, dirs_size) if dirs_size else b""
    if dirs_raw is None:
        raise HeaderError("can't read the data directories", broken=False)
    data_dirs = [(_u32(dirs_raw, 8 * i), _u32(dirs_raw, 8 * i + 4)) for i in range(ndatadirs)]
    at += dirs_size + (opt_hdr_size - (stored + dirs_size))
    hdr_size = _align_up(hdr_size, salign)

    headers = _read(data, at, 40 * nsections)
    if headers is None:
        raise HeaderError("can't read the section headers", broken=True)
    headers = bytes(headers)
    fields = [struct.unpack_from("<8sIIIIIIHHI", headers, 40 * i) for i in range(nsections)]

    # libclamav's "file alignment fallback mode".
    for f in fields:
        if falign == 0x200:
            break
        # f[3] is SizeOfRawData, f[4] PointerToRawData
        if falign and f[3] and f[4] % falign and not f[4] % 0x200:
            falign = 0x200

    sections: list[PESection] = []
    remaining = nsections
    for name, vsize, vaddr, size_raw, ptr_raw, *_rest, chars in fields:
        s = PESection(
            rva=_align_down(vaddr, salign), vsz=_align_up(vsize, salign),
            raw=_align_down(ptr_raw, falign), rsz=_align_up(size_raw, falign),
            chr=chars, urva=vaddr, uvsz=vsize, uraw=ptr_raw, ursz=size_raw,
            name=name.split(b"\0", 1)[0],
        )
        if s.rsz:
            if s.raw >= fsize or s.uraw >= fsize:
                if remove_missing:
                    if remaining == 1:
                        raise HeaderError("the only section is outside the file", broken=True)
                    remaining -= 1
                    continue
                s.rsz = s.ursz = 0
            else:
                if s.raw + s.rsz > fsize:
                    s.rsz = fsize - s.raw
                if s.ursz == 0 or s.uraw + s.ursz > fsize:
                    s.ursz = fsize - s.uraw
        if not s.vsz and s.rsz:
            s.vsz = _align_up(s.ursz, salign)
        if strict and (not salign or s.urva % salign):
            raise HeaderError("misaligned section VirtualAddress", broken=True)
        if s.urva >> 31 or s.uvsz >> 31 or (s.rsz and s.uraw >> 31) or s.ursz >> 31:
            raise HeaderError("section values with the sign bit set", broken=True)
        if strict:
            if not sections:
                if s.urva != hdr_size:
                    raise HeaderError("first section not right after the header", broken=True)
            elif (s.urva - sections[-1].urva) & U32 != sections[-1].vsz:
                raise HeaderError("virtually misplaced section", broken=True)
        sections.append(s)

    entry_point = rva_to_offset(entry_rva, sections, hdr_size, fsize)
    if entry_point is None:
        raise HeaderError("can't map the entry point to a file offset", broken=True)
    header = PEHeader(
        is_pe32plus=is_pe32plus, is_dll=is_dll, entry_rva=entry_rva, entry_point=entry_point,
        hdr_size=hdr_size, sections=sections, data_dirs=data_dirs, subsystem=subsystem,
        size_of_optional_header=opt_hdr_size,
    )
    if version_info and len(data_dirs) >= 3 and data_dirs[2][1]:
        header.version_info_offsets = _version_info_offsets(data, header)
    return header


# -- version information (the VI offset) ---------------------------------


def _version_resources(data, header: PEHeader) -> list[int]:
    """RVAs of the data entries of RT_VERSION resources (libclamav findres), at most 16."""
    sections, hdr_size, fsize = header.sections, header.hdr_size, len(data)
    res_rva = header.data_dirs[2][0]

    def directory(rva: int):
        offset = rva_to_offset(rva & U32, sections, hdr_size, fsize)
        return None if offset is None or _read(data, offset, 16) is None else offset

    def entry(at: int):
        raw = _read(data, at, 8)
        return None if raw is None else (_u32(raw, 0), _u32(raw, 4))

    root = directory(res_rva)
    if root is None:
        return []
    # Only the entries with numeric ids are searched for type 16.
    type_at = root + 16 + 8 * _u16(data, root + 12)
    found: list[int] = []
    for index in range(_u16(data, root + 14)):
        item = entry(type_at + 8 * index)
        if item is None:
            return found
        type_id, type_offs = item
        if type_id != 0x10 or not type_offs >> 31:
            continue
        names = directory(res_rva + (type_offs & 0x7FFFFFFF))
        if names is None:
            return found
        name_count = (_u16(data, names + 12) + _u16(data, names + 14)) & 0xFFFF
        leaves_of: dict[int, tuple[list[int], bool]] = {}
        for n in range(name_count):
            item = entry(names + 16 + 8 * n)
            if item is None:
                return found
            _name, name_offs = item
            if not name_offs >> 31:
                continue
            langs = directory(res_rva + (name_offs & 0x7FFFFFFF))
            if langs is None:
                return found
            # Many names may share one language directory: walk each once.
            if langs not in leaves_of:
                leaves_of[langs] = _leaf_rvas(data, langs, res_rva, MAX_VERSION_RESOURCES)
            leaves, truncated = leaves_of[langs]
            for rva in leaves:
                found.append(rva)
                if len(found) == MAX_VERSION_RESOURCES:
                    return found
            if truncated:
                return found
        return found  # libclamav stops after the first RT_VERSION type entry
    return found


def _leaf_rvas(data, langs: int, res_rva: int, limit: int) -> tuple[list[int], bool]:
    """The data-entry RVAs of one language directory; True when a read failed."""
    count = (_u16(data, langs + 12) + _u16(data, langs + 14)) & 0xFFFF
    leaves = []
    for i in range(count):
        raw = _read(data, langs + 16 + 8 * i, 8)
        if raw is None:
            return leaves, True
        offs = _u32(raw, 4)
        if not offs >> 31:
            leaves.append((res_rva + offs) & U32)
            if len(leaves) == limit:
                break
    return leaves, False


_VS_VERSION_INFO = "VS_VERSION_INFO\0".encode("utf-16-le")
_VAR_FILE_INFO = "VarFileInfo\0".encode("utf-16-le")
_STRING_FILE_INFO = "StringFileInfo\0".encode("utf-16-le")


def _version_info_offsets(data, header: PEHeader) -> list[int]:
    """File offsets of the version-information strings (key then value), as libclamav."""
    sections, hdr_size, fsize = header.sections, header.hdr_size, len(data)
    offsets: set[int] = set()
    for resource_rva in _version_resources(data, header):
        at = rva_to_offset(resource_rva, sections, hdr_size, fsize)
        if at is None or _read(data, at, 16) is None:
            continue
        data_rva, res_sz = _u32(data, at), _u32(data, at + 4)
        start = rva_to_offset(data_rva, sections, hdr_size, fsize)
        if start is None or _read(data, start, res_sz) is None:
            continue
        _parse_version_info(bytes(data[start:start + res_sz]), start, offsets)
    return sorted(offsets)


def _parse_version_info(buf: bytes, base: int, offsets: set[int]) -> None:
    res_sz = len(buf)
    if res_sz <= 4:
        return
    vinfo_sz = _u32(buf, 0) & 0xFFFF
    value_sz = _u32(buf, 0) >> 16
    if (vinfo_sz > res_sz or vinfo_sz <= 6 + 0x20 + 2 + 0x34 or value_sz != 0x34
            or buf[6:6 + 0x20] != _VS_VERSION_INFO or _u32(buf, 0x28) != 0xFEEF04BD):
        return
    p = 6 + 0x20 + 2 + 0x34
    vinfo_sz -= 6 + 0x20 + 2 + 0x34
    got_varfileinfo = False
    while vinfo_sz > 6:
        sfi_sz = _u32(buf, p) & 0xFFFF
        if sfi_sz > vinfo_sz:
            return
        if not got_varfileinfo and sfi_sz > 6 + 0x18 and buf[p + 6:p + 6 + 0x18] == _VAR_FILE_INFO:
            # VarFileInfo sometimes comes before StringFileInfo: skip it once.
            p += sfi_sz
            vinfo_sz -= sfi_sz
            got_varfileinfo = True
            continue
        if sfi_sz <= 6 + 0x1E or buf[p + 6:p + 6 + 0x1E] != _STRING_FILE_INFO:
            return
        p += 6 + 0x1E
        sfi_sz -= 6 + 0x1E
        while sfi_sz > 6:  # string tables
            st_sz = _u32(buf, p) & 0xFFFF
            next_p, next_sfi_sz = p + st_sz, (sfi_sz - st_sz) & U32
            if st_sz > sfi_sz or st_sz <= 24:
                break
            p += 24
            st_sz -= 24
            while st_sz > 6:  # strings
                s_sz = ((_u32(buf, p) & 0xFFFF) + 3) & ~3
                if s_sz > st_sz or s_sz <= 6 + 2 + 8:
                    st_sz = sfi_sz = 0
                    break
                key_sz = 6
                while key_sz + 1 < s_sz:
                    if buf[p + key_sz] or buf[p + key_sz + 1]:
                        key_sz += 2
                        continue
                    key_sz += 2
                    break
                key_sz = (key_sz + 3) & ~3
                if key_sz < s_sz and s_sz - key_sz > 2:
                    offsets.add(base + p + 6)
                p += s_sz
                st_sz -= s_sz
            p = next_p
            sfi_sz = next_sfi_sz if sfi_sz else 0
        return
    return


# -- import table (.imp) -------------------------------------------------

_NAME_CHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.")


def import_table_string(data, header: PEHeader) -> bytes | None:
    """The text libclamav hashes for .imp signatures ("dll.func,dll.func..."), or None.

    None means libclamav computes no usable hash: no import table, an
    import table outside the file, or a name it rejects.
    """
    from clammail.formats.pe_ordinals import ordinal_name

    if len(header.data_dirs) < 2:
        return None
    imp_rva, imp_size = header.data_dirs[1]
    if imp_rva == 0 or imp_size == 0:
        return None
    sections, hdr_size, fsize = header.sections, header.hdr_size, len(data)

    def offset_of(rva: int) -> int | None:
        return rva_to_offset(rva, sections, hdr_size, fsize)

    impoff = offset_of(imp_rva)
    if impoff is None or impoff + imp_size > fsize:
        return None
    table = bytes(data[impoff:impoff + imp_size])
    thunk_size = 8 if header.is_pe32plus else 4
    ordinal_flag = 1 << (8 * thunk_size - 1)
    parts: list[bytes] = []
    left, at, dlls = imp_size, 0, 0
    while left > 20 and _u32(table, at + 12) != 0 and dlls < MAX_IMPORT_DLLS:
        left -= 20
        dlls += 1
        first_thunk_orig, name_rva, first_thunk = (
            _u32(table, at), _u32(table, at + 12), _u32(table, at + 16))
        at += 20
        name_off = offset_of(name_rva)
        if name_off is None or name_off > fsize:
            return None
        length = min(MAX_NAME, fsize - name_off)
        if length <= 0:
            return None
        dll = bytes(data[name_off:name_off + length]).split(b"\0", 1)[0]
        dot = dll.find(b".")
        stem = dll[:dot] if dot >= 0 and dll[dot:dot + 4].lower() in (b".ocx", b".sys", b".dll") else dll
        stem = stem.lower()

        thunk = offset_of(first_thunk_orig) if first_thunk_orig else None
        if not thunk:
            thunk = offset_of(first_thunk)
            if thunk is None:
                return None
        while thunk + thunk_size <= fsize:
            value = int.from_bytes(data[thunk:thunk + thunk_size], "little")
            if value == 0:
                break
            thunk += thunk_size
            if value & ordinal_flag:
                func = ordinal_name(dll, value & 0xFFFF)
            else:
                name_at = offset_of(value & U32)
                if name_at is None:
                    if header.is_pe32plus:
                        continue
                    name_at = 0  # libclamav's PE32 path reads at offset 0 then
                length = min(MAX_NAME, fsize - name_at)
                if name_at + 2 + length > fsize:
                    continue  # the read fails: the function is left out
                func = bytes(data[name_at + 2:name_at + 2 + length]).split(b"\0", 1)[0]
            if any(c not in _NAME_CHARS for c in func):
                return None
            parts.append(stem + b"." + func.lower())
    return b",".join(parts)


# -- PE files inside PE files --------------------------------------------

# ClamAV's file-type table finds "MZ", 60 to 300 bytes, "PE\0\0" anywhere in a
# file, and remembers the first ten such places (MAX_EMBEDDED_OBJ).
MAX_EMBEDDED_CANDIDATES = 10
_EMBEDDED_GAP = (60, 300)


def embedded_pe_candidates(data) -> list[int]:
    """Offsets where ClamAV's type scan sees a PE ("MZ" ... "PE\\0\\0"), first ten, 0 included."""
    buf = bytes(data) if not isinstance(data, bytes) else data
    found: list[int] = []
    start = 0
    while len(found) < MAX_EMBEDDED_CANDIDATES:
        mz = buf.find(b"MZ", start)
        if mz < 0:
            break
        lo, hi = mz + 2 + _EMBEDDED_GAP[0], mz + 2 + _EMBEDDED_GAP[1]
        if buf.find(b"PE\0\0", lo, hi + 4) >= 0:
            found.append(mz)
        start = mz + 1
    return found


def find_embedded_pe(data, search_limit: int | None = None) -> int | None:
    """The offset of the PE file ClamAV would scan inside `data`, or None.

    libclamav checks the candidates in order with its header parser and
    scans the first that passes (from there to the end of the file); the
    ones after it are found again inside that one. `search_limit`: only
    candidates that start in the first that many bytes.
    """
    view = memoryview(data)
    head = data if search_limit is None else bytes(view[:search_limit])
    for offset in embedded_pe_candidates(head):
        if offset == 0:
            continue
        try:
            parse_pe_header(view[offset:])
        except HeaderError:
            continue
        return offset
    return None
