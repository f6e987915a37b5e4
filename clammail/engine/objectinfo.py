"""What the matchers may ask about the object being scanned.

One `ObjectInfo` per scanned object: its size and type, where it sits in the
container tree (for `Container:` and `Intermediates:` of logical signatures),
and its executable layout, parsed only when a signature needs it (EP+n, Sx+n,
SL+n, SEx and VI offsets, EntryPoint and NumberOfSections conditions, .mdb
section hashes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from clammail.formats.filetypes import FileType


@dataclass
class ObjectInfo:
    data: bytes | memoryview
    ftype: FileType
    # The type of each container from the outermost to the direct parent.
    parents: tuple[FileType, ...] = ()
    name: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def container(self) -> FileType | None:
        """The direct parent's type, None for a top-level object."""
        return self.parents[-1] if self.parents else None

    @cached_property
    def executable(self):
        """The PE/ELF/Mach-O layout (`clammail.formats.executable.ExecutableInfo`) or None."""
        from clammail.formats.executable import parse_executable

        return parse_executable(self.data, self.ftype)
