"""Evaluating logical signatures and YARA rules on one scanned buffer.

`LogicalMatcher` contributes the body patterns of every subsignature (and
YARA string) to the shared `BodyMatcher`; after the buffer is scanned it
turns the hits into per-subsignature match counts the way libclamav's
`lsig_sub_matched` does (one count per distinct start offset), runs the PCRE
subsignatures whose trigger holds, and reports every signature whose
expression and target description hold, in clamd's order: signatures of the
buffer's target type first, then those of target 0, each in load order.

PCRE budget. clamd bounds each PCRE2 match with PCREMatchLimit (calls of the
internal match function) and PCRERecMatchLimit (its depth); when a limit is
hit the regex simply does not match. Python's `re` has no such counters, so
each regex execution gets a CPU-time budget instead: 20 µs per unit of
PCREMatchLimit (0.2 s at the default 10000), scaled down when
PCRERecMatchLimit is below its default 2000. It is enforced with a
virtual-time interval timer, which `re` honours while it backtracks; where
that is impossible (not the main thread) the regex runs unbounded. Buffers
larger than PCREMaxFileSize skip their PCREs, as clamd does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

from clammail.engine.objectinfo import ObjectInfo
from clammail.formats.filetypes import RAW_TARGET, FileType
from clammail.signatures.logical import BodySubsig, LogicalSignature, PcreSubsig, TargetDescription
from clammail.signatures.patterns import Offset, OffsetKind

Report = Callable[[str], None]

SECONDS_PER_MATCH_LIMIT_UNIT = 20e-6
DEFAULT_PCRE_REC_LIMIT = 2000


@dataclass(frozen=True)
class PcreLimits:
    """clamd.conf's PCREMatchLimit, PCRERecMatchLimit and PCREMaxFileSize (0 = none)."""

    match_limit: int = 10000
    recmatch_limit: int = 2000
    max_filesize: int = 100 * 1024 * 1024

    @classmethod
    def from_options(cls, options) -> PcreLimits:
        if options is None:
            return cls()
        return cls(options["PCREMatchLimit"], options["PCRERecMatchLimit"], options["PCREMaxFileSize"])

    @property
    def seconds(self) -> float | None:
        if not self.match_limit:
            return None
        scale = min(1.0, self.recmatch_limit / DEFAULT_PCRE_REC_LIMIT) if self.recmatch_limit else 1.0
        return max(0.001, self.match_limit * SECONDS_PER_MATCH_LIMIT_UNIT * scale)


class _OverBudget(Exception):
    pass


def _raise_over_budget(signum, frame):
    raise _OverBudget()


@contextmanager
def cpu_budget(seconds: float | None):
    """Interrupt `re` work inside the block after `seconds` of CPU time (main thread only)."""
    usable = (
        seconds is not None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGVTALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
    )
    if not usable:
        yield
        return
    previous = signal.signal(signal.SIGVTALRM, _raise_over_budget)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)


@dataclass
class _Compiled:
    """One logical signature or YARA rule with where its patterns sit."""

    sig: object  # LogicalSignature or YaraRule
    pattern_index: dict[int, int]  # subsignature -> index in the shared BodyMatcher
    partial: dict[int, bool]
    always: bool  # may match with no body hit at all (negations, PCRE triggered on nothing)


class LogicalMatcher:
    def __init__(self, signatures, first_pattern: int, limits: PcreLimits | None = None):
        """`signatures`: logical signatures and YARA rules in load order."""
        self.limits = limits or PcreLimits()
        self.patterns: list = []
        self._by_target: dict[int, list[_Compiled]] = {}
        self._by_pattern: dict[int, list[_Compiled]] = {}
        for sig in signatures:
            if sig.unsupported:
                continue  # loaded as clamd loads it, but never matches
            compiled = self._add(sig, first_pattern)
            self._by_target.setdefault(sig.target, []).append(compiled)
        # Load order within each target: the index of each compiled entry.
        self._order = {id(c): n for n, c in enumerate(
            c for cs in self._by_target.values() for c in cs)}

    def _add(self, sig, first_pattern: int) -> _Compiled:
        pattern_index, partial = {}, {}
        for number, sub in enumerate(sig.subsigs):
            if isinstance(sub, BodySubsig):
                index = first_pattern + len(self.patterns)
                self.patterns.append(sub.pattern)
                pattern_index[number] = index
                partial[number] = sub.partial
        compiled = _Compiled(sig, pattern_index, partial, _may_match_without_hits(sig))
        for index in pattern_index.values():
            self._by_pattern.setdefault(index, []).append(compiled)
        return compiled

    def evaluate(self, hits, data, target: int, info: ObjectInfo, report: Report) -> None:
        """Report every logical signature and YARA rule satisfied by this buffer."""
        candidates: dict[int, _Compiled] = {}
        for index in hits:
            for compiled in self._by_pattern.get(index, ()):
                candidates[id(compiled)] = compiled
        groups = [target, 0] if target else [0]
        rule_results: dict[str, bool] = {}  # YARA rules by identifier, for rule references
        for group in groups:
            todo = [c for c in self._by_target.get(group, ()) if c.always or id(c) in candidates]
            for compiled in todo:
                sig = compiled.sig
                if getattr(sig, "halts_evaluation", False):
                    break  # its code fails, and clamd's cli_exp_eval stops there
                matched = self._matches(compiled, hits, data, info, rule_results)
                if isinstance(sig, LogicalSignature):
                    if matched:
                        report(sig.name)
                    continue
                rule_results[sig.identifier] = matched
                if matched and not sig.private:
                    report(sig.name)

    def _matches(self, compiled: _Compiled, hits, data, info: ObjectInfo, rule_results) -> bool:
        sig = compiled.sig
        if not _tdb_holds(sig.tdb, info):
            return False
        counts = [0] * len(sig.subsigs)
        offsets: dict[int, list[int]] = {}
        for number, index in compiled.pattern_index.items():
            found = hits.get(index)
            if found:
                starts = _counted_starts(found, compiled.partial[number])
                counts[number] = len(starts)
                offsets[number] = starts
        for number, sub in enumerate(sig.subsigs):
            if isinstance(sub, PcreSubsig) and (sub.trigger is None or sub.trigger.evaluate(counts)):
                starts = run_pcre(sub, data, info, self.limits)
                counts[number] = len(starts)
                offsets[number] = starts
        if isinstance(sig, LogicalSignature):
            return sig.expression.evaluate(counts) and _final_checks(sig.tdb, info)
        return sig.condition_holds(counts, offsets, data, info, rule_results)


def _may_match_without_hits(sig) -> bool:
    zeros = [0] * len(sig.subsigs)
    if any(isinstance(sub, PcreSubsig) and (sub.trigger is None or sub.trigger.evaluate(zeros))
           for sub in sig.subsigs):
        return True
    if isinstance(sig, LogicalSignature):
        return sig.expression.evaluate(zeros)
    return sig.may_match_without_strings()


def _counted_starts(matches, partial: bool) -> list[int]:
    """Starts that libclamav counts: strictly increasing (partial patterns: non-decreasing)."""
    starts = sorted(m.start for m in matches)
    counted: list[int] = []
    for start in starts:
        if counted and (start < counted[-1] if partial else start <= counted[-1]):
            continue
        counted.append(start)
    return counted


# -- target description ---------------------------------------------------------


def _tdb_holds(tdb: TargetDescription | None, info: ObjectInfo) -> bool:
    """The conditions that need no matching: container chain and file size."""
    if tdb is None:
        return True
    if tdb.container is not None and tdb.container != (info.container or FileType.ANY):
        return False
    if tdb.intermediates is not None:
        chain = tdb.intermediates
        if len(info.parents) < len(chain):
            return False
        for k, want in enumerate(reversed(chain), 1):
            if want is not FileType.ANY and want != info.parents[-k]:
                return False
    if tdb.file_size is not None and not (tdb.file_size[0] <= info.size <= tdb.file_size[1]):
        return False
    return True


def _final_checks(tdb: TargetDescription, info: ObjectInfo) -> bool:
    if tdb.entry_point is not None or tdb.sections is not None:
        exe = info.executable
        if exe is None:
            return False
        if tdb.entry_point is not None:
            if exe.entry_point is None or not tdb.entry_point[0] <= exe.entry_point <= tdb.entry_point[1]:
                return False
        if tdb.sections is not None and not tdb.sections[0] <= len(exe.sections) <= tdb.sections[1]:
            return False
    if tdb.handler_type is not None:
        # clamd rescans the object as that type instead of alerting; the rescan
        # alerts on this same signature when its target still applies.
        if tdb.target and RAW_TARGET.get(tdb.handler_type, 0) != tdb.target:
            return False
    if tdb.icon_group1 is not None or tdb.icon_group2 is not None:
        # Icon groups come from .idb icon databases, which we do not load;
        # clamd without an .idb never matches such signatures either.
        return False
    return True


# -- PCRE ------------------------------------------------------------------------


def resolve_offset(offset: Offset, info: ObjectInfo, size: int) -> tuple[int, int] | None:
    """(start, maxshift) for a PCRE offset, None where it cannot apply (libclamav's CLI_OFF_NONE)."""
    shift = offset.max_shift or 0
    kind = offset.kind
    if kind is OffsetKind.ANY or kind is OffsetKind.VERSION_INFO:
        return -1, 0
    if kind is OffsetKind.ABSOLUTE:
        return offset.value, shift
    if kind is OffsetKind.EOF_MINUS:
        if offset.value > size:
            return None
        return size - offset.value, shift
    exe = info.executable
    if exe is None:
        return None
    if kind in (OffsetKind.EP_PLUS, OffsetKind.EP_MINUS):
        if exe.entry_point is None:
            return None
        start = exe.entry_point + (offset.value if kind is OffsetKind.EP_PLUS else -offset.value)
        return (start, shift) if start >= 0 else None
    sections = exe.sections
    if kind is OffsetKind.LAST_SECTION:
        if not sections:
            return None
        return sections[-1].raw_offset + offset.value, shift
    if offset.section >= len(sections):
        return None
    section = sections[offset.section]
    if kind is OffsetKind.SECTION:
        return section.raw_offset + offset.value, shift
    if kind is OffsetKind.SECTION_ENTIRE:
        return section.raw_offset, section.raw_size
    return None


def run_pcre(sub: PcreSubsig, data, info: ObjectInfo, limits: PcreLimits) -> list[int]:
    """The start offsets libclamav would count for this PCRE subsignature on `data`."""
    size = len(data)
    if limits.max_filesize and size > limits.max_filesize:
        return []
    placed = resolve_offset(sub.offset, info, size)
    if placed is None:
        return []
    start, shift = placed
    regex = sub.regex
    anchored_at_offset = not regex.rolling and not shift and start >= 0
    if start < 0:
        start = 0
    if start >= size:
        return []
    length = size - start
    if regex.encompass and shift:
        length = min(shift, size - start)
    subject = memoryview(data)[start:start + length]
    anchored = anchored_at_offset or regex.anchored
    found: list[int] = []
    position = 0
    try:
        with cpu_budget(limits.seconds):
            while True:
                if anchored:
                    m = regex.regex.match(subject, position)
                else:
                    m = regex.regex.search(subject, position)
                if m is None:
                    break
                if not regex.encompass and shift and m.start() > shift:
                    break
                absolute = start + m.start()
                if not found or absolute > found[-1]:
                    found.append(absolute)
                if not regex.global_ or m.end() >= length or m.end() == position:
                    # An empty match at the same place would repeat forever in clamd too.
                    break
                position = m.end()
    except _OverBudget:
        pass
    return found
