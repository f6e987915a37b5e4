"""Normalized text: what target-7 ("ASCII text") signatures are matched against.

Measured against clamscan 1.4.6 (tests/test_textnorm.py): letters are
lowercased, every run of whitespace (HT, LF, VT, FF, CR, space) becomes one
space, bytes outside printable ASCII (0x00-0x08, 0x0e-0x1f, 0x80-0xff) are
dropped without ending a whitespace run, and UTF-16 text with a byte-order
mark is decoded first.
"""

from __future__ import annotations

import re

_DROPPED = bytes(range(0x00, 0x09)) + bytes(range(0x0E, 0x20)) + bytes(range(0x80, 0x100))


def normalize_text(data: bytes | memoryview, limit: int | None = None) -> bytes:
    """The normalized form of a text object (at most `limit` input bytes)."""
    raw = bytes(data if limit is None else data[:limit])
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        codec = "utf-16-le" if raw[0] == 0xFF else "utf-16-be"
        raw = raw[2:].decode(codec, errors="ignore").encode("utf-8")
    # Dropping first lets whitespace on both sides of a dropped byte merge.
    kept = raw.translate(None, _DROPPED).lower()
    if len(kept) <= _PIECE:
        return _collapse(kept)
    # In pieces, so that the list of words never holds more than a piece (a
    # word list costs about 15 times its text). A piece ends where the next
    # one starts a word, so no whitespace run is cut in two.
    pieces = []
    start = 0
    while start < len(kept):
        end = start + _PIECE
        if end < len(kept):
            word = _WORD_START.search(kept, end)
            end = word.start() if word else len(kept)
        pieces.append(_collapse(kept[start:end]))
        start = end
    return b"".join(pieces)


_PIECE = 256 * 1024
_WORD_START = re.compile(rb"[^\t\n\v\f\r ]")


def _collapse(kept: bytes) -> bytes:
    """Every whitespace run as one space."""
    # bytes.split() cuts at runs of exactly these six whitespace bytes, at C
    # speed (about 4x a regex substitution); the ends keep one space each.
    words = kept.split()
    if not words:
        return b" " if kept else b""
    normalized = b" ".join(words)
    if kept[:1].isspace():
        normalized = b" " + normalized
    if kept[-1:].isspace():
        normalized += b" "
    return normalized
