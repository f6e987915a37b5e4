"""Scanned files as read-only memory mappings, and their pages given back as a scan goes.

A file is scanned through one mapping (no copy in memory), but every page a
pass reads stays in the process's resident set until the mapping closes: a
100 MB file would add 100 MB to the scanner's peak RSS, where libclamav's
fmap keeps only the pages it used last. The passes over a whole object
(hashing, matching) therefore walk it in `pieces` and `release` each piece
when done with it: MADV_DONTNEED on a read-only file mapping only unmaps the
pages (they stay in the page cache; reading them again maps them again), so
it is always safe, and the resident set stays near one piece.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator

# One pass over a big object holds this much of it at a time. Measured on a
# 100 MB ELF file: 16 MB pieces cost no measurable time over one piece.
PIECE = 16 << 20
# The page cache may hold a file in folios of up to 2 MB, and touching one
# page maps the whole folio: releasing from the folio boundary below `start`
# also drops what a read just past the last release mapped again.
_FOLIO_SPAN = 2 << 20


def map_fd(fd: int) -> mmap.mmap | bytes:
    """The file behind `fd` as a read-only mapping (b"" when it is empty).
    Raises OSError or ValueError when it cannot be mapped (a pipe, a socket)."""
    if os.fstat(fd).st_size == 0:
        return b""
    return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)


def release(buf, start: int = 0, end: int | None = None) -> None:
    """Give back the resident pages of [start, end) of `buf` if it is a mapping."""
    if not isinstance(buf, mmap.mmap) or buf.closed:
        return
    size = len(buf)
    end = size if end is None else min(end, size)
    first = max(0, start - start % _FOLIO_SPAN)
    if end <= first:
        return
    try:
        buf.madvise(mmap.MADV_DONTNEED, first, end - first)
    except (OSError, ValueError):
        pass  # advice only


def pieces(size: int, piece: int = PIECE, overlap: int = 0) -> Iterator[tuple[int, int]]:
    """(start, stop) covering [0, size) in steps of `piece`; each piece reaches
    `overlap` bytes further (capped at `size`), for matches that cross into the next."""
    for start in range(0, size, piece) if size else ():
        yield start, min(size, start + piece + overlap)


# `search` finds matches up to this long across the seams of its pieces.
SEARCH_OVERLAP = 1 << 16


def search(pattern, data, pos: int = 0):
    """`pattern.search(data, pos)`, on a mapping a piece at a time, the pages
    searched through given back (up to the match). For patterns whose matches
    are at most SEARCH_OVERLAP bytes long (file magics, literals)."""
    size = len(data)
    if not isinstance(data, mmap.mmap) or size - pos <= PIECE:
        return pattern.search(data, pos)
    start = pos
    while start < size:
        stop = min(size, start + PIECE)
        # The leftmost match starts before `stop` and fits in the window, or
        # none starts before `stop` (then the next window finds the first).
        match = pattern.search(data, start, min(size, stop + SEARCH_OVERLAP))
        if match is not None:
            release(data, start, match.start())
            return match
        release(data, start, stop)
        start = stop
    return None


def finditer(pattern, data, pos: int = 0) -> Iterator:
    """`pattern.finditer(data, pos)` through `search` (non-empty matches)."""
    position = pos
    while (match := search(pattern, data, position)) is not None:
        yield match
        position = match.end()
