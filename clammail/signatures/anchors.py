"""The literal each part of a parsed pattern gives the matcher's multi-literal automaton.

For every part of a `Plan` (see `hexsig`), the best run of static bytes at a
fixed distance from ClamAV's anchor: a hit of that literal is necessary for a
match, so the matcher verifies a part only where its literal occurs.
`hexsig_anchors` computes them at load time straight from the text for the
common shapes (the compiled-database cache stores them in each BodyPattern);
`plan_anchors` from a full parse, which the fast path must always equal
(tests/test_match_anchors.py, bench/check_anchors.py).
"""

from __future__ import annotations

import re

from clammail.signatures.hexsig import (
    ALT_CHAR,
    ALT_FIXED,
    ALT_GENERIC,
    KIND_MASK,
    NOCASE,
    PREFILTER_TARGETS,
    SPECIAL,
    WILDCARD_MASK,
    Part,
    Plan,
    Special,
    check_offset_target,
    parse_hexsig,
    parse_part,
    plain_part,
    variant_pieces,
)
from clammail.signatures.patterns import Offset

LITERAL_MAX = 12  # longer static runs add automaton memory, not selectivity
STRONG_LITERAL = 3  # a part whose best literal is shorter takes the slow path
_COMMON_BYTES = frozenset(b"\x00\xff\x20")


def _exact_width(element: int, specials: tuple[Special, ...], number: int) -> int | None:
    """Bytes an element always consumes, None when that varies (or ClamAV miscounts it)."""
    if element & KIND_MASK != SPECIAL:
        return 1
    spec = specials[number]
    if spec.kind in (ALT_CHAR, ALT_FIXED) or (spec.kind == ALT_GENERIC
                                              and spec.minlen == spec.maxlen):
        return spec.minlen
    return None


def part_literal(part: Part) -> tuple[bytes, int, bool]:
    """The best run of static bytes at a fixed distance from the part's anchor.

    Returns (literal, delta, nocase): the literal starts `delta` bytes after
    the anchor (negative: in the prefix). Only elements ClamAV always checks
    are used (the window stops at the first element of varying width), so a
    hit of the literal is necessary for a match.
    """
    specials = part.specials
    if not specials and not part.boundary and not (part.body and max(part.body) >= NOCASE):
        return _plain_part_literal(part)
    # The window: prefix elements back to the last varying one, then body elements.
    first = len(part.prefix)
    number = part.prefix_specials - 1
    offset = 0
    while first > 0:
        element = part.prefix[first - 1]
        width = _exact_width(element, specials, number)
        if width is None:
            break
        if element & KIND_MASK == SPECIAL:
            number -= 1
        offset -= width
        first -= 1
    window = part.prefix[first:] + part.body
    number += 1  # the first special inside the window
    best_len = best_pos = best_index = 0
    run_len = run_pos = run_index = 0
    position = offset
    for index, element in enumerate(window):
        if not element & WILDCARD_MASK:
            if not run_len:
                run_pos, run_index = position, index
            run_len += 1
            if run_len > best_len:
                best_len, best_pos, best_index = run_len, run_pos, run_index
            position += 1
            continue
        run_len = 0
        width = _exact_width(element, specials, number)
        if width is None:
            break
        if element & KIND_MASK == SPECIAL:
            number += 1
        position += width
    run = window[best_index:best_index + best_len]
    if best_len > LITERAL_MAX:
        skip = 0
        while skip < best_len - LITERAL_MAX and run[skip] & 0xFF in _COMMON_BYTES:
            skip += 1
        run = run[skip:skip + LITERAL_MAX]
        best_pos += skip
    if not run:
        return b"", best_pos, False
    if max(run) < 0x100:
        return bytes(run), best_pos, False
    return bytes(element & 0xFF for element in run), best_pos, True


_STATIC_RUN = re.compile("[\x00-\xff]+")


def _plain_part_literal(part: Part) -> tuple[bytes, int, bool]:
    """part_literal for a part of bytes and wildcards only: every element is one byte wide.

    Elements become characters (static bytes are the ones below 0x100), so
    the regex engine finds the runs; the first longest run wins.
    """
    text = "".join(map(chr, part.prefix + part.body))
    runs = _STATIC_RUN.findall(text)
    if not runs:
        return b"", 0, False
    best = max(runs, key=len)
    start = text.find(best)
    if len(best) > LITERAL_MAX:
        skip = 0
        while len(best) - skip > LITERAL_MAX and ord(best[skip]) in _COMMON_BYTES:
            skip += 1
        best = best[skip:skip + LITERAL_MAX]
        start += skip
    return best.encode("latin-1"), start - len(part.prefix), False


def hexsig_anchors(hexsig: str, offset: Offset, target: int, *, nocase: bool = False,
                   wide: bool = False, ascii: bool = True, fullword: bool = False,
                   ldb: bool = False) -> tuple:
    """`plan_anchors(parse_hexsig(...))`, with the same errors, computed faster.

    Loading 100 000 body signatures spends most of its time here. Parts made
    only of hex bytes and `??` (most parts of real signatures) get their
    literal straight from the text (`_plain_part_anchor`); other parts, and
    patterns with .ldb modifiers, are compiled in full.
    """
    if nocase or wide or fullword:
        return plan_anchors(parse_hexsig(hexsig, offset, target, nocase=nocase, wide=wide,
                                           ascii=ascii, fullword=fullword, ldb=ldb))
    check_offset_target(offset, target)
    text, boyer_moore, pieces = variant_pieces(hexsig, offset, target, False, ldb)
    if boyer_moore:
        part = plain_part(text)
        return ((True, (_plain_part_literal(part),), part.body_max),)
    literals = []
    longest = 0
    for piece, mindist, maxdist in pieces:
        fast = _plain_part_anchor(piece)
        if fast is None:
            part = parse_part(piece, False, False, False, mindist, maxdist,
                              target in PREFILTER_TARGETS)
            fast = part_literal(part), part.prefix_max + part.body_max
        literals.append(fast[0])
        longest = max(longest, fast[1])
    return ((False, tuple(literals), longest),)


_PLAIN_PART = re.compile(r"(?:[0-9a-fA-F]{2}|\?\?)+")
_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2})+")


def _plain_part_anchor(text: str) -> tuple[tuple[bytes, int, bool], int] | None:
    """((literal, delta, nocase), length) of a part of hex bytes and `??` whose first
    three bytes are static and not all zero; None for any other part.

    For such a part ClamAV's anchor is its first byte (`_anchor_position`
    returns 0 at once), nothing in it can be refused, and every element is one
    byte wide: the literal is its first longest run of static bytes, cut as
    `part_literal` cuts it.
    """
    if len(text) < 6 or text[:6] == "000000" or "?" in text[:6] or "(" in text[:6]:
        return None
    if "(" in text:
        return _alternatives_part_anchor(text)
    if "?" not in text:
        # All static (the common case): the whole part is the run.
        if not _HEX_RUN.fullmatch(text):
            return None
        return _cut_literal(text, 0), len(text) // 2
    if not _PLAIN_PART.fullmatch(text):
        return None
    # Pairs only, so the runs between the `??`s are aligned; positions in bytes.
    best = ""
    best_at = position = 0
    for run in text.split("??"):
        if len(run) > len(best):
            best, best_at = run, position
        position += len(run) // 2 + 1
    return _cut_literal(best, best_at), len(text) // 2


def _cut_literal(run: str, start: int) -> tuple[bytes, int, bool]:
    """(literal, delta, nocase) of a run of hex pairs starting `start` bytes into the part:
    a run longer than LITERAL_MAX loses its leading common bytes, then its tail."""
    if len(run) <= 2 * LITERAL_MAX:
        return bytes.fromhex(run), start, False
    literal = bytes.fromhex(run)
    skip = 0
    while len(literal) - skip > LITERAL_MAX and literal[skip] in _COMMON_BYTES:
        skip += 1
    return literal[skip:skip + LITERAL_MAX], start + skip, False


_ALT_PART = re.compile(
    r"(?:[0-9a-fA-F]{2}|\?\?|\((?:[0-9a-fA-F]{2})+(?:\|(?:[0-9a-fA-F]{2})+)*\))+")
_ALT_GROUP = re.compile(r"\(([^)]*)\)")


def _alternatives_part_anchor(text: str) -> tuple[tuple[bytes, int, bool], int] | None:
    """`_plain_part_anchor` for a part that also holds alternatives of equal-length hex
    strings, `(aa|bb)` or `(aabb|ccdd)`: each is one element as wide as its strings,
    which ClamAV accepts as they are (ALT_CHAR, ALT_FIXED). Anything else: None."""
    if not _ALT_PART.fullmatch(text):
        return None
    # split() alternates: plain text (pairs and `??`), a group's inside, plain text, ...
    best = ""
    best_at = position = 0
    for index, piece in enumerate(_ALT_GROUP.split(text)):
        if index & 1:
            widths = set(map(len, piece.split("|")))
            if len(widths) != 1:
                return None  # unequal lengths: ClamAV refuses them, with its own message
            position += widths.pop() // 2
            continue
        at = position
        for run in piece.split("??"):
            if len(run) > len(best):
                best, best_at = run, at
            at += len(run) // 2 + 1
        position += len(piece) // 2
    return _cut_literal(best, best_at), position


def plan_anchors(plan: Plan) -> tuple:
    """Per variant: (boyer_moore, ((literal, delta, nocase), ...) per part, longest part).

    The longest part (ClamAV's pattern length, its maxpatlen) sets how much
    clamd's 128 KiB scan windows overlap, which the report order depends on.
    """
    return tuple((variant.boyer_moore, tuple([part_literal(p) for p in variant.parts]),
                  max(p.prefix_max + p.body_max for p in variant.parts))
                 for variant in plan.variants)
