"""Unpacking packed PE files the way libclamav's PE scanner does.

After the signature checks on a PE32 file's structure, libclamav's
cli_scanpe tries its unpackers in a fixed order, each guarded by a test on
the section layout and the code at the entry point; the first that applies
either produces a file (a rebuilt PE, or UPX's decompressed image), which is
then scanned as an object of its own, and stops the chain; or fails, and the
chain goes on (some failures end it). This module is that chain;
`unpack_packed_pe` yields the one object libclamav would scan, if any.

The order (cli_scanpe, ClamAV 1.4): MEW, [the entry point buffer must hold
168 bytes], Upack, FSG 2.0, FSG 1.33, FSG 1.31, UPX, [200 bytes], Petite,
PESpin, yC, WWPack, ASPack (NsPack comes last in libclamav and is not
implemented here).

The unpackers port libclamav's C, wrapping 32-bit arithmetic included, and
where libclamav's sources changed over the years, clamscan 1.4.6 decided
(tests/test_packers.py): Petite's section containment and WWPack's checks
on short sections are the newer ones; a UPX rebuild that gives up still
leaves the decompressed image to scan, as in the older sources.

Everything read from the file is hostile: each unpacker checks sizes against
the file and against MaxFileSize / MaxScanSize (libclamav's
CLI_UNPSIZELIMITS), bounds its loops by its input, and checks the scan's
deadline in long loops.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator

from clammail.unpack.base import Extracted, UnpackContext
from clammail.unpack.packers.common import PackedPE, Stop, read_packed_pe

log = logging.getLogger(__name__)

# The objects these unpackers produce are not quite well-formed PE files:
# libclamav scans them (and all inside them) without its broken-executable
# heuristic (ctx->corrupted_input).
CORRUPTED_INPUT = "corrupted_input"

# cli_scanpe gives up on files whose entry point buffer is shorter than this
# before Upack/FSG/UPX, and than the second one before Petite and the rest.
MIN_EP_BYTES_UPX = 168
MIN_EP_BYTES_REST = 200

def _empty_section(pe: PackedPE) -> int | None:
    """UPX/FSG/MEW's hint: the first section with no raw data but a virtual
    size, followed by one with both."""
    sections = pe.sections
    for index in range(len(sections) - 1):
        here, after = sections[index], sections[index + 1]
        if not here.rsz and here.vsz and after.rsz and after.vsz:
            return index
    return None


def _chain(pe: PackedPE, ctx: UnpackContext) -> tuple[str, bytes] | None:
    """cli_scanpe's packer section: (packer, object to scan) or None."""
    from clammail.unpack.packers import aspack, fsg, mew, petite, spin, upack, upx, wwpack, yc

    found = _empty_section(pe)
    if found is not None:
        ctx.debug("UPX/FSG/MEW: empty section found - assuming compression")
        image = mew.unpack_mew(pe, found, ctx)
        if image is not None:
            return "MEW", image
    if pe.epsize < MIN_EP_BYTES_UPX:
        return None
    var_set = upack.detect(pe, found is not None)
    if var_set is not None:
        ctx.debug("Upack characteristics found")
        image = upack.unpack_upack(pe, var_set, ctx)
        if image is not None:
            return "Upack", image
    if found is not None:
        unpacked = fsg.unpack_fsg(pe, found, ctx)
        if unpacked is not None:
            return "FSG", unpacked.data
        image = upx.unpack_upx(pe, found, ctx)
        if image is not None:
            return "UPX", image
    if pe.epsize < MIN_EP_BYTES_REST:
        return None
    version = petite.detect(pe)
    if version:
        ctx.debug(f"Petite: v2.{version} compression detected")
        image = petite.unpack_petite(pe, version, ctx)
        if image is not None:
            return "Petite", image
    if spin.detect(pe):
        image = spin.unpack_spin(pe, ctx)
        if image is not None:
            return "PESpin", image
    found_yc = yc.detect(pe)
    if found_yc is not None:
        try:
            image = yc.unpack_yc(pe, *found_yc, ctx)
        except yc.BoundsCheck:
            # libclamav reports this and, unless ALLMATCH, stops there.
            ctx.alert("Heuristics.BoundsCheck")
            raise Stop() from None
        if image is not None:
            return "yC", image
    if wwpack.detect(pe):
        image = wwpack.unpack_wwpack(pe, ctx)
        if image is not None:
            return "WWPack", image
    aspack_version = aspack.detect(pe)
    if aspack_version is not None:
        image = aspack.unpack_aspack(pe, aspack_version, ctx)
        if image is not None:
            return "ASPack", image
    return None


def unpack_packed_pe(data, ctx: UnpackContext, strict: bool = False) -> Iterator[Extracted]:
    """The file libclamav's unpackers make of a packed PE (at most one).

    `strict`: the header must pass the checks AlertBrokenExecutables adds
    (libclamav parses with them when it may report broken executables, and
    unpacks nothing when they fail)."""
    pe = read_packed_pe(data, strict)
    if pe is None:
        return
    try:
        result = _chain(pe, ctx)
    except Stop:
        return
    except (IndexError, ValueError, OverflowError, ZeroDivisionError, struct.error) as exc:
        # A slip in the port of libclamav's arithmetic must not end the scan:
        # the file is then scanned as it is, as when unpacking fails.
        log.warning("PE unpacker error (%s); scanning the file as it is", exc)
        return
    if result is None:
        return
    packer, image = result
    ctx.debug(f"{packer}: unpacked, scanning the rebuilt file")
    yield Extracted(image, name=f"{packer.lower()}-unpacked", extra={CORRUPTED_INPUT: True})
