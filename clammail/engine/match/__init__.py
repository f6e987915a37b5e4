"""Body-pattern matching (placeholder: literal hex patterns only).

To be replaced by the multi-literal automaton (pyahocorasick, hyperscan)
with verification of whole patterns.
"""

from __future__ import annotations

from clammail.engine.match.api import BodyPattern, PatternMatch


class BodyMatcher:
    backend_name = "naive"

    def __init__(self, patterns: list[BodyPattern], backend: str | None = None):
        self.patterns = list(patterns)
        self._literals = [bytes.fromhex(p.hexsig) for p in self.patterns]

    @property
    def pattern_count(self) -> int:
        return len(self.patterns)

    def scan(self, data, target, info) -> dict[int, list[PatternMatch]]:
        hits = {}
        buf = bytes(data)
        for i, (p, lit) in enumerate(zip(self.patterns, self._literals)):
            if p.target not in (0, target):
                continue
            pos = buf.find(lit)
            if pos >= 0:
                hits[i] = [PatternMatch(pos, pos + len(lit))]
        return hits
