"""`BodyMatcher`: every body pattern of a database, matched on one buffer at a time.

Build: each part of each pattern contributes one anchor literal (the best
static run at a fixed distance from ClamAV's own anchor) to a multi-literal
backend. Parts whose best literal is shorter than three bytes stay out of the
automaton and are looked for with `bytes.find` (the counted slow path).

Scan: the backend lists where each literal occurs; every occurrence is a
candidate anchor that `verify_part` checks against the whole part; parts of a
multi-part pattern (`*`, `{n-m}`) are chained the way ClamAV chains them;
offsets are checked last. A literal that occurs more than `LITERAL_CAP` times
switches its parts to a regular-expression search, which keeps hostile data
(one byte repeated for megabytes) from costing a Python step per byte.

Patterns are compiled for verification on their first candidate and cached;
the build itself keeps only integers and the literals, so 100 000 patterns
cost little memory and workers forked after the build share it.
"""

from __future__ import annotations

import mmap
import re
from array import array
from collections.abc import Iterable, Sequence

import numpy as np

from clammail.engine.match.api import PatternMatch
from clammail.engine.match.backends import LITERAL_CAP, backend_name, make_backend
from clammail.engine.match.verify import verify_part
from clammail.signatures.anchors import STRONG_LITERAL, plan_anchors
from clammail.signatures.common import SignatureError
from clammail.signatures.hexsig import (
    ALT_CHAR,
    ALT_FIXED,
    ALT_GENERIC,
    B_LEFT,
    B_LEFT_NEG,
    B_RIGHT,
    B_RIGHT_NEG,
    CHAR,
    IGNORE,
    KIND_MASK,
    L_LEFT,
    L_LEFT_NEG,
    L_RIGHT,
    L_RIGHT_NEG,
    NIBBLE_HIGH,
    NIBBLE_LOW,
    NOCASE,
    SPECIAL,
    W_LEFT,
    W_LEFT_NEG,
    W_RIGHT,
    W_RIGHT_NEG,
    Part,
    Plan,
    parse_pattern,
)
from clammail.signatures.patterns import BodyPattern, Offset, OffsetKind, PatternTable

# ClamAV keeps this many recent matches of each part of a multi-part pattern
# (CLI_DEFAULT_AC_TRACKLEN); slot 1 keeps the first one.
TRACK_LEN = 8
# clamd matches an object in windows of this size (SCANBUFF), overlapping by
# the longest pattern of the signatures in play.
SCAN_WINDOW = 131072
# clamd's Boyer-Moore matcher for PE signatures switches to its offset mode
# (each offset's first position only) for files of at least this size
# (CLI_DEFAULT_BM_OFFMODE_FSIZE).
BM_OFFMODE_SIZE = 262144
# At most this many verified matches of one part are kept per buffer.
PART_MATCH_CAP = 10_000
_U32 = 0xFFFFFFFF
_EXE_TARGETS = (1, 6, 9)

# A candidate key packs (pattern, variant, part); an entry adds the literal's
# delta from the anchor.
_DELTA_BIAS = 1 << 20
_DELTA_SPAN = 1 << 21


def _key(pattern: int, variant: int, part: int) -> int:
    return (pattern << 11) | (variant << 10) | part


class BodyMatcher:
    def __init__(self, patterns: Sequence[BodyPattern], backend: str | None = None,
                 cache_dir: str | None = None):
        """`cache_dir`: keep the compiled hyperscan chunks there (and take them from
        there), beside the compiled-database cache."""
        # Columns: a table from the caches is read without making 100 000 patterns.
        self.patterns = PatternTable.of(patterns)
        self._targets = array("B")
        self._boyer_moore = array("b")  # per pattern: 1 if clamd uses Boyer-Moore for it
        self._bm_shift = array("i")  # per pattern: where Boyer-Moore notices it, from the start
        self._shapes: list[tuple[int, ...]] = []  # per pattern: parts per variant (shared tuples)
        self._plans: dict[int, Plan | None] = {}  # compiled on first candidate
        literal_ids: dict[tuple[bytes, bool], int] = {}
        literals: list[tuple[bytes, bool]] = []
        self._entries: list[list[int]] = []  # per literal id: candidate keys with deltas
        self._weak: dict[tuple[bytes, bool], list[int]] = {}  # short literals: the slow path
        self._weak_patterns: set[int] = set()
        self._computed_anchors: dict[int, tuple] = {}  # for patterns built without them
        name = backend_name(backend)
        windows: list[bytes] = []  # hyperscan: whole windows for the short-anchored parts
        self._window_entries: list[list[int]] = []
        shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
        buckets: dict[int, set[int]] = {0: set(), 1: set()}
        self._longest: dict[int, int] = {}  # per target: the longest part (clamd's maxpatlen)
        # clamd keeps identical patterns together in its trie lists: the first
        # index of each repeated pattern text, for the report order.
        self._twin_of: dict[int, int] = {}
        first_of: dict[tuple, int] = {}
        for index, (hexsig, target, flags, anchors) in enumerate(self.patterns.rows()):
            if anchors is None:
                try:
                    anchors = plan_anchors(parse_pattern(self.patterns[index]))
                except SignatureError:
                    anchors = ()  # a pattern ClamAV would refuse: it never matches
                self._computed_anchors[index] = anchors
            self._targets.append(min(target, 255))
            # Same text and modifiers (nocase, wide, ascii, fullword: flags 1-8).
            twin = first_of.setdefault((hexsig.lower(), flags & 15), index)
            if twin != index:
                self._twin_of[index] = twin
            shape = tuple(len(parts) for _, parts, _ in anchors)
            self._shapes.append(shapes.setdefault(shape, shape))
            boyer_moore = bool(anchors) and anchors[0][0]
            self._boyer_moore.append(1 if boyer_moore else 0)
            self._bm_shift.append(_bm_block(hexsig, target, buckets) if boyer_moore else 0)
            for _, _, length in anchors:
                longest = self._longest
                longest[target] = max(longest.get(target, 0), length)
            for variant, (_, parts, _) in enumerate(anchors):
                # One literal per variant goes to the automaton: the longest of its
                # parts. The other parts are looked for only when it occurs.
                lead = 0 if len(parts) == 1 else max(
                    range(len(parts)), key=lambda n: (len(parts[n][0]), -n))
                literal, delta, nocase = parts[lead]
                entry = _key(index, variant, lead) * _DELTA_SPAN + delta + _DELTA_BIAS
                if len(literal) < STRONG_LITERAL:
                    self._weak_patterns.add(index)
                    window = self._window(index, variant, lead) if name == "hyperscan" else None
                    if window is not None:
                        windows.append(window)
                        self._window_entries.append([entry])
                    else:
                        self._weak.setdefault((literal, nocase), []).append(entry)
                    continue
                ident = literal_ids.get((literal, nocase))
                if ident is None:
                    ident = literal_ids[(literal, nocase)] = len(literals)
                    literals.append((literal, nocase))
                    self._entries.append([])
                self._entries[ident].append(entry)
        # Per literal id, its entries as one flat array with start offsets: a few
        # objects instead of 100 000 lists, so the compiled-database cache maps
        # them instead of rebuilding them.
        self._entry_starts = np.cumsum([0] + [len(e) for e in self._entries], dtype=np.int64)
        self._entry_values = np.fromiter((e for es in self._entries for e in es), np.int64,
                                         int(self._entry_starts[-1]))
        del self._entries
        self._backend = make_backend(name, literals, windows, cache_dir)
        self.backend_name = self._backend.name
        self._regexes: dict[int, re.Pattern | None] = {}

    # -- what the engine and the reports ask ---------------------------------------

    @property
    def pattern_count(self) -> int:
        return len(self.patterns)

    @property
    def unanchored_count(self) -> int:
        """Patterns whose best literal is under three bytes (the slow path)."""
        return len(self._weak_patterns)

    def _window(self, index: int, variant: int, part: int) -> bytes | None:
        plan = self._plan(index)
        return _hyperscan_window(plan.variants[variant].parts[part]) if plan else None

    def _anchors(self, index: int) -> tuple:
        anchors = self.patterns[index].anchors
        return anchors if anchors is not None else self._computed_anchors[index]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_plans"] = {}
        state["_regexes"] = {}
        return state  # `patterns` is a PatternTable: pickled as columns

    def report_order(self, hits: dict[int, list[PatternMatch]], indices: Iterable[int],
                     size: int = 0, target: int = 0) -> list[int]:
        """`indices` (patterns with hits) in the order clamd reports them, once per report.

        clamd reads an object in windows of 128 KiB that overlap by its
        longest pattern; in each it scans the target-specific signatures
        before the generic ones, and for each its Boyer-Moore matcher (plain
        hex patterns) before the Aho-Corasick one; within a matcher, by the
        position where it notices a match. With ALLMATCH it reports a
        signature once per occurrence (see BodyPattern.max_matches), and
        twice when the occurrence lies where two windows overlap. `size` and
        `target` are those of the scanned buffer.
        """
        overlap = max(self._longest.get(target, 0) if target else 0, self._longest.get(0, 0))
        step = SCAN_WINDOW - overlap
        keyed = []
        for index in indices:
            generic = self._targets[index] == 0
            boyer_moore = self._boyer_moore[index]
            multipart = max(self._shapes[index], default=1) > 1
            if not boyer_moore:
                plan = self._plans.get(index)
                depth = plan.variants[0].parts[-1].depth if plan else 0
            for match in hits[index]:
                first = match.start
                if boyer_moore:
                    key = (generic, 0, match.start + self._bm_shift[index], 0, -index, 0)
                else:
                    key = (generic, 1, match.detected, -depth, self._twin_of.get(index, index),
                           index)
                    if multipart:  # what must fit in one window is the last part
                        first = max(match.start, match.detected - depth + 1)
                for window in _windows(first, match.end, size, step):
                    keyed.append(((window, *key), index))
        keyed.sort()
        return [index for _, index in keyed]

    # -- scanning ---------------------------------------------------------------------

    def scan(self, data, target: int, info) -> dict[int, list[PatternMatch]]:
        """Matches of every pattern whose target is 0 or `target`, by pattern index."""
        if not self.patterns:
            return {}
        buf = searchable(data)
        lowered_cache: list = []

        def lowered():
            if not lowered_cache:
                lowered_cache.append(_lower(buf))
            return lowered_cache[0]

        candidates: dict[int, list[int]] = {}  # key -> anchor positions, increasing
        dense: set[int] = set()
        targets = self._targets
        occurrences, windows = self._backend.occurrences(buf, lowered)
        for ident, starts in occurrences.items():
            entries = self._entry_values[
                self._entry_starts[ident]:self._entry_starts[ident + 1]].tolist()
            self._add_candidates(entries, starts, target, targets,
                                 candidates, dense)
        for window in windows:
            # A short-anchored part whose whole window occurs: enumerate it by regex.
            for entry in self._window_entries[window]:
                key = entry // _DELTA_SPAN
                if targets[key >> 11] in (0, target):
                    dense.add(key)
        for (literal, nocase), entries in self._weak.items():
            if not any(targets[e // _DELTA_SPAN >> 11] in (0, target) for e in entries):
                continue
            starts = _find_all(lowered() if nocase else buf, literal)
            if starts:
                self._add_candidates(entries, starts, target, targets, candidates, dense)
        touched: dict[int, None] = {}
        for key in candidates:
            touched[key >> 11] = None
        for key in dense:
            touched[key >> 11] = None
        found_literals: dict[tuple[bytes, bool], list[int]] = {}

        def find(literal: bytes, nocase: bool) -> list[int]:
            starts = found_literals.get((literal, nocase))
            if starts is None:
                starts = found_literals[(literal, nocase)] = _find_all(
                    lowered() if nocase else buf, literal)
            return starts

        results: dict[int, list[PatternMatch]] = {}
        for index in touched:
            matches = self._match_pattern(index, buf, target, info, candidates, dense, find)
            if matches:
                results[index] = matches
        return results

    @staticmethod
    def _add_candidates(entries, starts, target, targets, candidates, dense) -> None:
        is_dense = len(starts) > LITERAL_CAP
        for entry in entries:
            key, delta = divmod(entry, _DELTA_SPAN)
            if targets[key >> 11] not in (0, target):
                continue
            if is_dense:
                dense.add(key)
                continue
            delta -= _DELTA_BIAS
            candidates[key] = [s - delta for s in starts] if delta else list(starts)

    def _other_parts(self, index, variant, keys, candidates, dense, find) -> bool:
        """Candidates for the parts whose literal is not in the automaton; False if one has none."""
        parts = self._anchors(index)[variant][1]
        for number, key in enumerate(keys):
            if key in candidates or key in dense:
                continue
            literal, delta, nocase = parts[number]
            starts = find(literal, nocase)
            if not starts:
                return False
            if len(starts) > LITERAL_CAP:
                dense.add(key)
            else:
                candidates[key] = [s - delta for s in starts] if delta else starts
        return True

    def _plan(self, index: int) -> Plan | None:
        if index not in self._plans:
            try:
                self._plans[index] = parse_pattern(self.patterns[index])
            except SignatureError:
                self._plans[index] = None
        return self._plans[index]

    def _match_pattern(self, index: int, buf: bytes, target: int, info, candidates, dense,
                       find):
        shape = self._shapes[index]
        pattern = self.patterns[index]
        plan = None
        found: list[PatternMatch] = []
        for variant, count in enumerate(shape):
            keys = [_key(index, variant, part) for part in range(count)]
            if not any(k in candidates or k in dense for k in keys):
                continue
            if count > 1 and not self._other_parts(index, variant, keys, candidates, dense,
                                                   find):
                continue
            if plan is None:
                plan = self._plan(index)
                if plan is None:
                    return []
            window = _offset_window(pattern.offset, len(buf), info, target,
                                    self._boyer_moore[index] and pattern.target == 1
                                    and len(buf) >= BM_OFFMODE_SIZE)
            if window is None:
                return []
            parts = plan.variants[variant].parts
            if count == 1:
                found.extend(self._single(parts[0], keys[0], buf, candidates, dense, window,
                                          pattern.max_matches))
            else:
                found.extend(self._chain(parts, keys, buf, candidates, dense, window,
                                         pattern.max_matches))
        if len(shape) > 1:
            found.sort(key=lambda m: (m.start, m.end))
        return found[:pattern.max_matches]

    def _single(self, part: Part, key: int, buf, candidates, dense, window, wanted):
        out = []
        for anchor, start, end in self._part_matches(part, key, buf, candidates, dense,
                                                     window):
            out.append(PatternMatch(start, end, anchor + part.depth - 1))
            if len(out) >= wanted:
                break
        return out

    def _part_matches(self, part: Part, key: int, buf, candidates, dense, window=None):
        """(anchor, start, end) of every match of one part, by anchor position."""
        fixed_prefix = part.prefix_min if part.prefix_min == part.prefix_max else None
        if key in dense:
            anchors = self._regex_anchors(part, key, buf)
        else:
            anchors = candidates.get(key, ())
        kept = 0
        for anchor in anchors:
            if window is not None and fixed_prefix is not None and window is not True:
                if not _in_window(window, anchor - fixed_prefix, check_vi=False):
                    continue
            match = verify_part(part, buf, anchor)
            if match is None:
                continue
            if window is not None and window is not True and not _in_window(window, match[0]):
                continue
            yield anchor, match[0], match[1]
            kept += 1
            if kept >= PART_MATCH_CAP:
                return

    def _regex_anchors(self, part: Part, key: int, buf: bytes):
        """Candidate anchors of a dense part, found by a regular expression in C."""
        if key not in self._regexes:
            self._regexes[key] = _part_regex(part)
        compiled = self._regexes[key]
        if compiled is None:
            return
        regex, shift = compiled
        position = 0
        while True:
            found = regex.search(buf, position)
            if found is None:
                return
            yield found.start() - shift
            position = found.start() + 1

    def _chain(self, parts, keys, buf, candidates, dense, window, wanted):
        """ClamAV's bookkeeping for multi-part patterns (offmatrix in matcher-ac.c)."""
        # Sparse parts first: a part without matches settles it before any dense one is searched.
        order = sorted(range(len(parts)), key=lambda n: (keys[n] in dense, n))
        events = []
        for number in order:
            part, key = parts[number], keys[number]
            first_window = window if number == 0 else True
            matched = list(self._part_matches(part, key, buf, candidates, dense, first_window))
            if not matched:
                return []
            events.extend((anchor + part.depth - 1, number, start, end)
                          for anchor, start, end in matched)
        events.sort()
        count = len(parts)
        # rows[p]: counter, then recorded ends of part p; rows[count - 1] also
        # holds the starts of part 0's matches, index-aligned with rows[0].
        rows = [[0] + [-1] * (TRACK_LEN + 1) for _ in range(count)]
        out = []
        for detected, number, start, end in events:
            if number and not rows[number - 1][0]:
                continue
            found = 0
            if number:
                previous = rows[number - 1]
                mindist, maxdist = parts[number].mindist, parts[number].maxdist
                for slot in range(1, TRACK_LEN + 2):
                    recorded = previous[slot]
                    if recorded == -1:
                        break
                    found = slot
                    if start < recorded:
                        found = 0
                    if found and maxdist and start - recorded > maxdist:
                        found = 0
                    if found and mindist and start - recorded < mindist:
                        found = 0
                    if found:
                        break
            if number == 1 and found > 1:
                first, last = rows[0], rows[count - 1]
                first[1], first[found] = first[found], first[1]
                last[1], last[found] = last[found], last[1]
            if number == 0 or (found and number != count - 1):
                row = rows[number]
                if row[0] == TRACK_LEN + 1:
                    row[0] = 1
                row[0] += 1
                row[row[0]] = end
                if number == 0:
                    rows[count - 1][row[0]] = start
            elif found and number == count - 1:
                out.append(PatternMatch(rows[count - 1][1], end, detected))
                if len(out) >= wanted:
                    break
        out.sort(key=lambda m: (m.start, m.end))
        return out


def searchable(data):
    """`data` as an object with `find` (bytes, bytearray, mmap), copied only when it
    is part of something else: a scanned file stays a mapping, not 100 MB more."""
    if isinstance(data, (bytes, bytearray, mmap.mmap)):
        return data
    view = memoryview(data)
    whole = view.obj
    if (isinstance(whole, (bytes, bytearray, mmap.mmap)) and view.contiguous
            and view.nbytes == len(whole)):
        return whole
    return view.tobytes()


_LOWER_PIECE = 1 << 20


def _lower(buf):
    """buf.lower() for any of `searchable`'s types (mmap has no lower()), in one copy."""
    if not isinstance(buf, mmap.mmap):
        return buf.lower()
    out = bytearray(len(buf))
    for start in range(0, len(buf), _LOWER_PIECE):
        out[start:start + _LOWER_PIECE] = buf[start:start + _LOWER_PIECE].lower()
    return out


def _windows(start: int, end: int, size: int, step: int) -> range:
    """The clamd scan windows that hold all of [start, end): window k covers
    [k * step, k * step + SCAN_WINDOW), and exists if the one before was full."""
    if size <= SCAN_WINDOW or step <= 0:
        return range(1)
    first = max(0, -(-(end - SCAN_WINDOW) // step))
    last = start // step
    while last > first and last * step + SCAN_WINDOW - step > size:
        last -= 1  # window `last` does not exist: the one before it was the final one
    return range(first, max(first, last) + 1)


def _bm_block(hexsig: str, target: int, buckets: dict[int, set[int]]) -> int:
    """Where in a plain pattern clamd's Boyer-Moore matcher hashes it (its report position).

    clamd balances its hash buckets at load: a pattern is filed under its
    first three-byte block whose bucket is still empty.
    """
    try:
        data = bytes.fromhex(hexsig)
    except ValueError:
        return 0
    occupied = buckets.setdefault(target, set())
    chosen = 0
    for i in range(len(data) - 2):
        if 211 * data[i] + 37 * data[i + 1] + data[i + 2] not in occupied:
            chosen = i
            break
    if len(data) >= 3:
        occupied.add(211 * data[chosen] + 37 * data[chosen + 1] + data[chosen + 2])
    return chosen


def _find_all(haystack: bytes, literal: bytes) -> list[int]:
    starts = []
    position = haystack.find(literal)
    while position >= 0 and len(starts) <= LITERAL_CAP:
        starts.append(position)
        position = haystack.find(literal, position + 1)
    return starts


# -- offsets ----------------------------------------------------------------------


def _offset_window(offset: Offset, size: int, info, object_target: int,
                   exact: bool = False):
    """Where a match may start: True (anywhere), (lo, hi), ("VI", offsets), or None (never).

    Like clamd, relative offsets (even EOF-n) of an executable object whose
    layout could not be parsed never match. `exact`: clamd's Boyer-Moore
    matcher for PE signatures in its offset mode looks only at each offset's
    first position, so there SEx means the start of section x.
    """
    kind = offset.kind
    if kind is OffsetKind.ANY:
        return True
    if kind is OffsetKind.MACRO:
        return None
    shift = offset.max_shift or 0
    if kind is OffsetKind.ABSOLUTE:
        return _span(offset.value, shift)
    exe = getattr(info, "executable", None) if info is not None else None
    if exe is not None and not getattr(exe, "header_ok", True):
        exe = None  # libclamav has no target info for it
    if kind is OffsetKind.EOF_MINUS:
        if object_target in _EXE_TARGETS and exe is None:
            return None
        return _span(size - offset.value, shift)
    if exe is None:
        return None
    if kind is OffsetKind.VERSION_INFO:
        return ("VI", frozenset(exe.version_info_offsets))
    if kind in (OffsetKind.EP_PLUS, OffsetKind.EP_MINUS):
        if exe.entry_point is None:
            return None
        sign = 1 if kind is OffsetKind.EP_PLUS else -1
        return _span(exe.entry_point + sign * offset.value, shift)
    sections = exe.sections
    if kind is OffsetKind.LAST_SECTION:
        if not sections:
            return None
        return _span(sections[-1].raw_offset + offset.value, shift)
    if offset.section >= len(sections):
        return None
    section = sections[offset.section]
    if kind is OffsetKind.SECTION:
        return _span(section.raw_offset + offset.value, shift)
    # SECTION_ENTIRE: anywhere in the section, plus the shift (as clamd computes it)
    return _span(section.raw_offset, 0 if exact else section.raw_size + shift)


def _span(start: int, shift: int):
    """(lo, hi) in clamd's 32-bit arithmetic: a window that wraps around is empty."""
    lo = start & _U32
    hi = (lo + shift) & _U32
    return (lo, hi) if lo <= hi else None


def _in_window(window, start: int, check_vi: bool = True) -> bool:
    if window is True:
        return True
    if window[0] == "VI":
        return start in window[1] if check_vi else True
    lo, hi = window
    return lo <= start <= hi


# -- regular expressions for dense parts ------------------------------------------------


def _part_regex(part: Part):
    """A regex whose matches include every anchor of `part` (found.start() - shift = anchor).

    It covers the run of fixed-width elements around the anchor and, when
    that run is the whole part, the (B)/(L)/(W) markers at its ends and the
    byte anchored after it; verification decides the rest, so the regex only
    has to be necessary, not sufficient.
    """
    pieces: list[bytes] = []
    special = part.prefix_specials
    whole_body = True
    for element in part.body:
        piece, width = _element_regex(element, part, special)
        if piece is None:
            whole_body = False
            break
        if element & KIND_MASK == SPECIAL:
            special += 1
        pieces.append(piece)
    left: list[bytes] = []
    special = part.prefix_specials - 1
    shift = 0
    whole_prefix = True
    for element in reversed(part.prefix):
        piece, width = _element_regex(element, part, special)
        if piece is None:
            whole_prefix = False
            break
        if element & KIND_MASK == SPECIAL:
            special -= 1
        left.append(piece)
        shift += width
    if whole_prefix:
        left.append(_left_marks(part))
    if whole_body:
        pieces.append(_right_marks(part))
        if part.right is not None and not part.right[0] & IGNORE:
            element, lo, hi = part.right
            target, _ = _element_regex(element, part, 0)
            if target is not None:
                pieces.append(b"(?=.{%d,%d}%s)" % (lo, hi, target))
    source = b"".join(left[::-1] + pieces)
    if not source:
        return None
    # Not wrapped in a lookahead, so re can use a literal prefix to skip ahead;
    # the caller restarts one byte after each match start to see overlaps.
    return re.compile(source, re.DOTALL), -shift


_AT_START = rb"(?<![\s\S])"
_AT_END = rb"(?![\s\S])"
_LEFT_BOUNDARY = rb"[ \-./<@_]"  # clamd's boundary table, kinds 1 and 3
_RIGHT_BOUNDARY = rb"[\n\r \"'\-/=>_]"  # kinds 2 and 3
_NOT_ALNUM = rb"[^0-9A-Za-z]"


def _left_marks(part: Part) -> bytes:
    flags = part.boundary
    out = []
    for flag, negative, cls in ((B_LEFT, B_LEFT_NEG, _LEFT_BOUNDARY), (L_LEFT, L_LEFT_NEG, rb"\n"),
                                (W_LEFT, W_LEFT_NEG, _NOT_ALNUM)):
        if not flags & flag or (flag == W_LEFT and part.wide):
            continue
        if flags & negative:
            out.append(rb"(?<=[\s\S])(?<!" + cls + b")")
        else:
            out.append(b"(?:" + _AT_START + b"|(?<=" + cls + b"))")
    return b"".join(out)


def _right_marks(part: Part) -> bytes:
    flags = part.boundary
    out = []
    for flag, negative, cls in ((B_RIGHT, B_RIGHT_NEG, _RIGHT_BOUNDARY),
                                (L_RIGHT, L_RIGHT_NEG, rb"(?:\n|\r\n)"),
                                (W_RIGHT, W_RIGHT_NEG, _NOT_ALNUM)):
        if not flags & flag or (flag == W_RIGHT and part.wide):
            continue
        if flags & negative:
            out.append(rb"(?=[\s\S])(?!" + cls + b")")
        else:
            out.append(b"(?:" + _AT_END + b"|(?=" + cls + b"))")
    return b"".join(out)


def _hyperscan_window(part: Part) -> bytes | None:
    """The fixed-width window around a part's anchor as a hyperscan expression (no lookarounds)."""
    pieces: list[bytes] = []
    special = part.prefix_specials
    for element in part.body:
        piece = _hyperscan_element(element, part, special)
        if piece is None:
            break
        special += element & KIND_MASK == SPECIAL
        pieces.append(piece)
    left: list[bytes] = []
    special = part.prefix_specials - 1
    for element in reversed(part.prefix):
        piece = _hyperscan_element(element, part, special)
        if piece is None:
            break
        special -= element & KIND_MASK == SPECIAL
        left.append(piece)
    return b"".join(left[::-1] + pieces) or None


def _hx(value: int) -> bytes:
    return b"\\x%02x" % value


def _hyperscan_element(element: int, part: Part, special: int) -> bytes | None:
    kind = element & KIND_MASK
    if kind == CHAR:
        return _hx(element)
    if kind == NOCASE:
        value = element & 0xFF
        return b"[" + _hx(value) + _hx(value - 32) + b"]" if 0x61 <= value <= 0x7A else _hx(value)
    if kind == IGNORE:
        return b"."
    if kind == NIBBLE_HIGH:
        return b"[" + _hx(element & 0xF0) + b"-" + _hx(element & 0xF0 | 0x0F) + b"]"
    if kind == NIBBLE_LOW:
        return b"[" + b"".join(_hx(h << 4 | element & 0x0F) for h in range(16)) + b"]"
    if kind == SPECIAL:
        spec = part.specials[special]
        if spec.kind == ALT_CHAR:
            members = b"".join(_hx(c) for c in sorted(spec.chars))
            return (b"[^" if spec.negative else b"[") + members + b"]"
        if spec.kind == ALT_FIXED:
            if spec.negative:
                return b"." * spec.minlen
            return b"(?:" + b"|".join(b"".join(_hx(c) for c in s)
                                      for s in sorted(spec.strings)) + b")"
        if spec.kind == ALT_GENERIC and spec.minlen == spec.maxlen:
            return b"." * spec.minlen
    return None


def _element_regex(element: int, part: Part, special: int) -> tuple[bytes | None, int]:
    kind = element & KIND_MASK
    if kind == CHAR:
        return re.escape(bytes([element])), 1
    if kind == NOCASE:
        value = element & 0xFF
        if 0x61 <= value <= 0x7A:
            return b"[" + bytes([value, value - 32]) + b"]", 1
        return re.escape(bytes([value])), 1
    if kind == IGNORE:
        return b".", 1
    if kind == NIBBLE_HIGH:
        high = element & 0xF0
        return b"[" + re.escape(bytes([high])) + b"-" + re.escape(bytes([high | 0x0F])) + b"]", 1
    if kind == NIBBLE_LOW:
        low = element & 0x0F
        return b"[" + b"".join(re.escape(bytes([h << 4 | low])) for h in range(16)) + b"]", 1
    if kind == SPECIAL:
        spec = part.specials[special]
        if spec.kind == ALT_CHAR:
            members = b"".join(re.escape(bytes([c])) for c in sorted(spec.chars))
            return (b"[^" if spec.negative else b"[") + members + b"]", 1
        if spec.kind == ALT_FIXED:
            members = b"|".join(re.escape(s) for s in sorted(spec.strings))
            if spec.negative:
                return b"(?!" + members + b")" + b"." * spec.minlen, spec.minlen
            return b"(?:" + members + b")", spec.minlen
        if spec.kind == ALT_GENERIC and spec.minlen == spec.maxlen:
            return b".{%d}" % spec.minlen, spec.minlen
    return None, 0
