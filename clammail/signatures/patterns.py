"""Parsed body patterns: what the signature loaders hand to the matcher.

A `BodyPattern` is one hex signature with its offset and target: an .ndb
signature, or one subsignature of an .ldb signature or YARA rule (with its
modifiers). The hex syntax itself is parsed by `clammail.signatures.hexsig`;
`clammail.engine.match.BodyMatcher` is built once from every pattern of a
database and, for one buffer, returns where each pattern matched.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field


class OffsetKind(enum.Enum):
    ANY = "*"  # anywhere
    ABSOLUTE = "n"  # n
    EOF_MINUS = "EOF-n"  # file size - n
    EP_PLUS = "EP+n"  # entry point + n (PE, ELF, Mach-O)
    EP_MINUS = "EP-n"
    SECTION = "Sx+n"  # start of section x + n
    LAST_SECTION = "SL+n"  # start of the last section + n
    SECTION_ENTIRE = "SEx"  # anywhere within section x
    VERSION_INFO = "VI"  # at the start of a PE version-information string
    MACRO = "$n$"  # a macro group of a logical signature (value = group); never matches alone


@dataclass(frozen=True, slots=True)
class Offset:
    """Where a match may start. `max_shift` makes it floating: start in [o, o + max_shift]."""

    kind: OffsetKind = OffsetKind.ANY
    value: int = 0
    section: int = 0
    max_shift: int | None = None

    def __reduce__(self):
        return Offset, (self.kind, self.value, self.section, self.max_shift)


ANY_OFFSET = Offset()


@dataclass(frozen=True, slots=True)
class BodyPattern:
    """One hex signature to match, with where and in what it may match."""

    hexsig: str  # the signature text as written: hex, ??, *, {n-m}, (a|b), !(..), [n-m], (B) ...
    offset: Offset = ANY_OFFSET
    target: int = 0  # 0 = any; else only objects (or normalized views) of that target type
    # .ldb subsignature modifiers (::i ::w ::a ::f); .ndb patterns use the defaults.
    nocase: bool = False
    wide: bool = False
    ascii: bool = True  # with wide: match the ASCII form too (::wa)
    fullword: bool = False
    # A subsignature of an .ldb signature or a YARA rule: clamd gives every one
    # to its Aho-Corasick matcher (two static bytes are enough there), never to
    # Boyer-Moore (three at least), whatever its shape.
    logical: bool = False
    # How many matches the user needs to see (an .ldb count such as 0>2 needs 3).
    max_matches: int = 1
    # Filled in by `clammail.signatures.bodysig.parse_body_pattern`: the anchor
    # literal of every part (see `clammail.signatures.anchors.plan_anchors`),
    # so building a matcher does not parse the signature again. None: compute.
    anchors: tuple | None = field(default=None, compare=False, repr=False)

    def __reduce__(self):
        # Positional, not dataclasses' generic state: the compiled-database
        # cache holds 100 000 of these, and this unpickles several times faster.
        return BodyPattern, (self.hexsig, self.offset, self.target, self.nocase, self.wide,
                             self.ascii, self.fullword, self.logical, self.max_matches,
                             self.anchors)


class PatternTable(Sequence):
    """BodyPatterns kept as columns, each `BodyPattern` made when first asked for.

    What the compiled-database cache unpickles instead of 100 000 objects: a
    few lists, which pickle reads at C speed. The matcher asks for a pattern
    only when one of its literals occurs, so most are never made.
    """

    __slots__ = ("_columns", "_made")

    def __init__(self, columns: tuple) -> None:
        self._columns = columns  # hexsig, offset, target, flags, max_matches, anchors
        self._made: dict[int, BodyPattern] = {}

    @classmethod
    def of(cls, patterns: Iterable[BodyPattern]) -> PatternTable:
        if isinstance(patterns, PatternTable):
            return patterns
        patterns = list(patterns)
        return cls((
            [p.hexsig for p in patterns], [p.offset for p in patterns],
            [p.target for p in patterns],
            [p.nocase | p.wide << 1 | p.ascii << 2 | p.fullword << 3 | p.logical << 4
             for p in patterns],
            [p.max_matches for p in patterns], [p.anchors for p in patterns]))

    @classmethod
    def join(cls, parts: Iterable) -> PatternTable:
        """One table of tables and lists of patterns, in order, making no pattern."""
        tables = [cls.of(part) for part in parts]
        if len(tables) == 1:
            return tables[0]
        return cls(tuple([value for table in tables for value in table._columns[column]]
                         for column in range(len(cls._COLUMNS))))

    _COLUMNS = ("hexsig", "offset", "target", "flags", "max_matches", "anchors")

    def rows(self) -> Iterator[tuple[str, int, int, tuple | None]]:
        """(hexsig, target, flags, anchors) of every pattern, without making them; flags
        as stored: nocase 1, wide 2, ascii 4, fullword 8, logical 16."""
        hexsig, _, target, flags, _, anchors = self._columns
        return zip(hexsig, target, flags, anchors, strict=True)

    def __len__(self) -> int:
        return len(self._columns[0])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        made = self._made.get(index)
        if made is None:
            hexsig, offset, target, flags, max_matches, anchors = (c[index] for c in self._columns)
            made = BodyPattern(hexsig, offset, target, bool(flags & 1), bool(flags & 2),
                               bool(flags & 4), bool(flags & 8), bool(flags & 16), max_matches,
                               anchors)
            self._made[index if index >= 0 else index + len(self)] = made
        return made

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __reduce__(self):
        return PatternTable, (self._columns,)
