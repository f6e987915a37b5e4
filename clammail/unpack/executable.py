"""Objects inside executables: PE files embedded in PE files, Mach-O fat slices.

libclamav's raw scan of a PE file looks for further PE files in it ("MZ" ...
"PE\\0\\0" that passes the header check) and scans the first one it finds,
from there to the end of the file, as a PE of its own; the ones after it are
found again inside that one. It skips this when the file is larger than
MaxEmbeddedPE. A universal (fat) Mach-O binary is scanned slice by slice,
each slice typed afresh.
"""

from __future__ import annotations

from collections.abc import Iterator

from clammail.formats.executable import BROKEN_EXECUTABLE
from clammail.formats.filetypes import FileType
from clammail.formats.macho import fat_slices
from clammail.formats.pe import find_embedded_pe
from clammail.unpack.base import Extracted, UnpackContext
from clammail.unpack.packers import CORRUPTED_INPUT

# libclamav scans no nested object of 5 bytes or less.
MIN_NESTED_SIZE = 6


def unpack_pe(data, ctx: UnpackContext) -> Iterator[Extracted]:
    """The embedded PE file libclamav would scan inside a PE file (at most one)."""
    limit = ctx.option("MaxEmbeddedPE")
    if limit and len(data) > limit:
        ctx.debug("scanraw: MaxEmbeddedPE exceeded")
        return
    offset = find_embedded_pe(data)
    if offset is None:
        return
    ctx.debug(f"*** Detected embedded PE file at {offset} ***")
    yield Extracted(memoryview(data)[offset:], name=f"embedded-pe@{offset}", ftype=FileType.MSEXE,
                    extra={CORRUPTED_INPUT: True})


def unpack_macho_fat(data, ctx: UnpackContext) -> Iterator[Extracted]:
    """Each architecture of a universal binary, as cli_scanmacho_unibin."""
    slices, broken = fat_slices(data)
    view = memoryview(data)
    for offset, size in slices:
        ctx.check()
        if offset >= len(data):
            continue
        if not size or size > len(data) - offset:
            size = len(data) - offset
        if size < MIN_NESTED_SIZE:
            continue
        yield Extracted(view[offset:offset + size], name=f"macho-slice@{offset}")
    if broken and ctx.option("AlertBrokenExecutables"):
        ctx.alert(BROKEN_EXECUTABLE)
