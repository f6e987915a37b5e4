"""What the matcher returns: `PatternMatch`.

The patterns it matches (`BodyPattern`, `Offset`) are parsed by the
signature loaders and live in `clammail.signatures.patterns`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PatternMatch:
    start: int  # offset of the first byte of the match
    end: int  # offset one past the last byte
    # Where ClamAV's scan notices this match (its trie position): the order in
    # which clamd reports body signatures (`BodyMatcher.report_order`).
    detected: int = field(default=-1, compare=False)
