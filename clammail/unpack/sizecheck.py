"""ClamAV's size check before an unpacker extracts something (libclamav's cli_checklimits).

The unpackers of SZDD, ARJ and SIS ask it with the size a header claims:
MaxScanSize is checked first (against what is left of it), then
MaxFileSize; the first one broken is the one clamd names in
Heuristics.Limits.Exceeded.*. MaxFiles is left to the engine, which counts
the objects it scans.
"""

from __future__ import annotations

from clammail.unpack.base import UnpackContext


def exceeded(ctx: UnpackContext, *needs: int) -> str | None:
    """The limit that the largest of `needs` breaks, or None. A need of 0 breaks none."""
    needed = max(needs, default=0)
    if not needed:
        return None
    left = ctx.scan_size_left()
    if left is not None and left < needed:
        return "MaxScanSize"
    max_file = ctx.option("MaxFileSize")
    if max_file and needed > max_file:
        return "MaxFileSize"
    return None


def check(ctx: UnpackContext, *needs: int) -> bool:
    """True when extraction may go on; otherwise the limit is reported (as ClamAV
    does, with AlertExceedsMax) and False is returned."""
    limit = exceeded(ctx, *needs)
    if limit is None:
        return True
    ctx.limit_exceeded(limit)
    return False
