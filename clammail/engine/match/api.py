"""The contract between body-signature parsing, the matchers and their users.

A `BodyPattern` is one hex signature with its offset and target: an .ndb
signature, or one subsignature of an .ldb signature (with its modifiers).
`BodyMatcher` (in `clammail.engine.match`) is built once from every pattern
of a database and, for one buffer, returns where each pattern matched.
"""

from __future__ import annotations

import enum
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
    # How many matches the user needs to see (an .ldb count such as 0>2 needs 3).
    max_matches: int = 1
    # Filled in by `clammail.signatures.bodysig.parse_body_pattern`: the anchor
    # literal of every part (see `clammail.engine.match.compile.plan_anchors`),
    # so building a matcher does not parse the signature again. None: compute.
    anchors: tuple | None = field(default=None, compare=False, repr=False)

    def __reduce__(self):
        # Positional, not dataclasses' generic state: the compiled-database
        # cache holds 100 000 of these, and this unpickles several times faster.
        return BodyPattern, (self.hexsig, self.offset, self.target, self.nocase, self.wide,
                             self.ascii, self.fullword, self.max_matches, self.anchors)


@dataclass(frozen=True, slots=True)
class PatternMatch:
    start: int  # offset of the first byte of the match
    end: int  # offset one past the last byte
    # Where ClamAV's scan notices this match (its trie position): the order in
    # which clamd reports body signatures (`BodyMatcher.report_order`).
    detected: int = field(default=-1, compare=False)
