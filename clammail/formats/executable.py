"""Executable layout: PE, ELF and Mach-O, as far as signatures need it.

Contract (used by body-signature offsets EP+n, Sx+n, SL+n, SEx, VI, by the
EntryPoint/NumberOfSections conditions of logical signatures and by .mdb/.msb/
.imp hash signatures). This placeholder parses nothing; the real parser
replaces `parse_executable` and the two candidate functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from clammail.engine.filetypes import FileType


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
    entry_point: int | None  # the entry point as a file offset, None if outside the file
    sections: list[Section] = field(default_factory=list)
    # PE: file offsets where a version-information string (key + value) starts,
    # for body signatures with the VI offset.
    version_info_offsets: list[int] = field(default_factory=list)
    broken: bool = False  # malformed enough for Heuristics.Broken.Executable
    extra: dict = field(default_factory=dict)


def parse_executable(data: bytes | memoryview, ftype: FileType) -> ExecutableInfo | None:
    """The layout of a PE/ELF/Mach-O object, or None when it is not one."""
    return None


def section_hash_candidates(
    exe: ExecutableInfo, data: bytes | memoryview, algorithms: frozenset[str]
) -> Iterator[tuple[bytes, int]]:
    """(digest, size) for every PE section, in each wanted algorithm (.mdb/.msb)."""
    return iter(())


def import_hash_candidates(
    exe: ExecutableInfo, data: bytes | memoryview, algorithms: frozenset[str]
) -> Iterator[tuple[bytes, int]]:
    """(digest, size) of the PE import table as ClamAV hashes it (.imp)."""
    return iter(())
