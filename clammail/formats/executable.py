"""Executable layout: PE, ELF and Mach-O, as far as signatures need it.

Contract (used by body-signature offsets EP+n, Sx+n, SL+n, SEx, VI, by the
EntryPoint/NumberOfSections conditions of logical signatures and by .mdb/.msb/
.imp hash signatures). The numbers are libclamav's (see `pe`, `elf`, `macho`).

libclamav looks at an executable in two ways, and so does `ExecutableInfo`:

- the signature matcher's view ("target info"): `header_ok`, `entry_point`,
  `sections`, `version_info_offsets`. When `header_ok` is False (or
  `parse_executable` returned None) libclamav has no target info: body and
  logical signatures of targets 1, 6 and 9 with EP+n, EP-n, Sx+n, SEx, SL+n,
  VI or EOF-n offsets never match, nor do EntryPoint/NumberOfSections
  conditions.
- the scanner's view (cli_scanpe, cli_scanelf, cli_scanmacho): `broken`
  (Heuristics.Broken.Executable when AlertBrokenExecutables is on; libclamav
  then stops there) and `hash_sections` (the PE sections whose raw data the
  .mdb/.msb signatures hash; sections starting past the end of the file are
  dropped here, while the matcher's view keeps them with size 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from clammail.formats.filetypes import FileType

BROKEN_EXECUTABLE = "Heuristics.Broken.Executable"


@dataclass(frozen=True)
class Section:
    raw_offset: int  # file offset of the section's data
    raw_size: int  # bytes of it in the file
    virtual_address: int  # RVA (PE) / address
    virtual_size: int
    name: bytes = b""


@dataclass
class ExecutableInfo:
    kind: str  # "PE", "ELF" or "MACHO"
    # The entry point as a file offset; None when libclamav has no target info.
    entry_point: int | None
    sections: list[Section] = field(default_factory=list)
    # PE: file offsets where a version-information string (key + value) starts,
    # for body signatures with the VI offset.
    version_info_offsets: list[int] = field(default_factory=list)
    broken: bool = False  # malformed enough for Heuristics.Broken.Executable
    extra: dict = field(default_factory=dict)
    # libclamav's target-info status: True when the offsets above are usable.
    header_ok: bool = False
    # PE sections hashed for .mdb/.msb, in order (the scanner's view).
    hash_sections: list[Section] = field(default_factory=list)
    # PE only: the scanner looks at the import table (PE32, not PE32+).
    imports_scanned: bool = False

    @property
    def nsections(self) -> int:
        """NumberOfSections as logical signatures and Sx+n offsets count them."""
        return len(self.sections)


def parse_executable(data: bytes | memoryview, ftype: FileType) -> ExecutableInfo | None:
    """The layout of a PE/ELF/Mach-O object, or None when it is not one."""
    if ftype is FileType.MSEXE:
        return _parse_pe(data)
    if ftype is FileType.ELF:
        return _parse_elf(data)
    if ftype is FileType.MACHO:
        return _parse_macho(data)
    return None


def _section(s) -> Section:
    return Section(s.raw, s.rsz, s.rva, getattr(s, "vsz", 0), getattr(s, "name", b""))


def _parse_pe(data) -> ExecutableInfo | None:
    from clammail.formats.pe import HeaderError, parse_pe_header

    if bytes(data[:2]) not in (b"MZ", b"ZM"):
        return None
    info = ExecutableInfo("PE", None)
    try:
        header = parse_pe_header(data, version_info=True)
    except HeaderError:
        pass
    else:
        info.header_ok = True
        info.entry_point = header.entry_point
        info.sections = [_section(s) for s in header.sections]
        info.version_info_offsets = header.version_info_offsets
    # The scanner's parse, with AlertBrokenExecutables's stricter checks ...
    try:
        parse_pe_header(data, strict=True, remove_missing=True)
    except HeaderError as exc:
        info.broken = exc.broken
    # ... and without them, which is what decides the .mdb/.imp scan.
    try:
        scanned = parse_pe_header(data, remove_missing=True)
    except HeaderError:
        return info
    info.hash_sections = [_section(s) for s in scanned.sections]
    info.imports_scanned = not scanned.is_pe32plus
    info.extra["pe_header"] = scanned
    return info


def _parse_elf(data) -> ExecutableInfo | None:
    from clammail.formats.elf import ELFError, parse_elf_header

    if bytes(data[:4]) != b"\x7fELF":
        return None
    info = ExecutableInfo("ELF", None)
    try:
        header = parse_elf_header(data)
    except ELFError:
        pass
    else:
        info.header_ok = True
        info.entry_point = header.entry_point
        info.sections = [Section(s.raw, s.rsz, s.rva, 0) for s in header.sections]
    try:
        parse_elf_header(data, scanner=True)
    except ELFError as exc:
        info.broken = exc.broken
    return info


def _parse_macho(data) -> ExecutableInfo | None:
    from clammail.formats.macho import MachOError, parse_macho_header

    try:
        header = parse_macho_header(data)
    except MachOError as exc:
        if str(exc) == "incorrect magic":
            return None
        return ExecutableInfo("MACHO", None, broken=exc.broken)
    return ExecutableInfo(
        "MACHO", header.entry_point, [_section(s) for s in header.sections], header_ok=True)


_HASH_ORDER = ("md5", "sha1", "sha256")
# libclamav skips hashing sections larger than CLI_MAX_ALLOCATION.
MAX_HASHED_SECTION = 1024 * 1024 * 1024


def section_hash_candidates(
    exe: ExecutableInfo, data: bytes | memoryview, algorithms: frozenset[str]
) -> Iterator[tuple[bytes, int]]:
    """(digest, size) for every PE section, in each wanted algorithm (.mdb/.msb)."""
    if exe.kind != "PE":
        return
    view = memoryview(data)
    for section in exe.hash_sections:
        size = section.raw_size
        if not size or size > MAX_HASHED_SECTION:
            continue
        chunk = view[section.raw_offset:section.raw_offset + size]
        for algo in _HASH_ORDER:
            if algo in algorithms:
                yield hashlib.new(algo, chunk).digest(), size


def import_hash_candidates(
    exe: ExecutableInfo, data: bytes | memoryview, algorithms: frozenset[str]
) -> Iterator[tuple[bytes, int]]:
    """(digest, size) of the PE import table as ClamAV hashes it (.imp)."""
    text = import_table_text(exe, data)
    if text is None:
        return
    for algo in _HASH_ORDER:
        if algo in algorithms:
            yield hashlib.new(algo, text).digest(), len(text)


def import_table_text(exe: ExecutableInfo, data: bytes | memoryview) -> bytes | None:
    """The normalized import list libclamav hashes ("kernel32.exitprocess,..."), or None."""
    from clammail.formats.pe import import_table_string

    header = exe.extra.get("pe_header")
    if exe.kind != "PE" or header is None or not exe.imports_scanned:
        return None
    if "import_text" not in exe.extra:
        exe.extra["import_text"] = import_table_string(data, header)
    return exe.extra["import_text"]
