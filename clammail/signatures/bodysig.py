"""Body signatures: .ndb/.ndu files (`Name:Target:Offset:HexSig[:MinFL[:MaxFL]]`).

Loading follows clamd 1.4's rules line by line: which lines are skipped
(comments, engine levels that exclude us, target numbers past 14), which are
errors (and with what reason), which load but can never match (`{5-3}`,
`$1$` offsets, ...). The hex syntax itself is parsed by `hexsig`, and each
pattern's anchor literals for the matcher are chosen by `anchors`.
`parse_offset` and `parse_body_pattern` are shared with the .ldb loader,
whose subsignatures use the same hex syntax and offsets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from clammail.signatures.anchors import hexsig_anchors
from clammail.signatures.common import LoadOptions, SignatureError, display_name
from clammail.signatures.hexsig import parse_offset as _parse_offset
from clammail.signatures.patterns import BodyPattern, Offset, PatternTable

# clamd splits a line into at most this many fields: Name:Target:Offset:HexSig:Min:Max
_MAX_FIELDS = 6
_TARGET_COUNT = 15  # CLI_MTARGETS: target numbers 15 and up are skipped, not refused
# clamd reads database lines into a buffer of this size (FILEBUFF); longer lines are cut.
LINE_BUFFER = 8192
# With ALLMATCH clamd reports a body signature once per occurrence; this many
# occurrences per object are reported (clamd has no limit).
REPORTED_OCCURRENCES = 1000


@dataclass(frozen=True, slots=True)
class BodySignature:
    name: str  # as clamd reports it (".UNOFFICIAL" appended outside signed databases)
    pattern: BodyPattern
    min_flevel: int | None = None
    max_flevel: int | None = None

    def __reduce__(self):  # fast to unpickle from the compiled-database cache
        return BodySignature, (self.name, self.pattern, self.min_flevel, self.max_flevel)


class BodySignatures(list):
    """The body signatures of a load, in load order: a list, pickled as columns.

    Unpickled (from the compiled-database cache) it is a `SignatureTable`,
    which makes each `BodySignature` when first asked for.
    """

    def __reduce_ex__(self, protocol):
        return SignatureTable.of(self).__reduce__()


class SignatureTable(Sequence):
    """BodySignatures as columns (names, engine levels, a PatternTable), made on use."""

    __slots__ = ("_names", "_levels", "_patterns", "_made")

    def __init__(self, names: list[str], levels: list, patterns: PatternTable) -> None:
        self._names = names
        self._levels = levels  # (min_flevel, max_flevel), or None for neither
        self._patterns = patterns
        self._made: dict[int, BodySignature] = {}

    @classmethod
    def of(cls, signatures) -> SignatureTable:
        if isinstance(signatures, SignatureTable):
            return signatures
        return cls([s.name for s in signatures],
                   [None if s.min_flevel is None and s.max_flevel is None
                    else (s.min_flevel, s.max_flevel) for s in signatures],
                   PatternTable.of(s.pattern for s in signatures))

    @classmethod
    def join(cls, parts) -> SignatureTable:
        """One table of tables and lists of signatures, in order, making no signature
        (how the per-file cache's shares of a load are put together)."""
        tables = [cls.of(part) for part in parts]
        if len(tables) == 1:
            return tables[0]
        return cls([name for table in tables for name in table._names],
                   [levels for table in tables for levels in table._levels],
                   PatternTable.join(table._patterns for table in tables))

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        made = self._made.get(index)
        if made is None:
            levels = self._levels[index] or (None, None)
            made = BodySignature(self._names[index], self._patterns[index], *levels)
            self._made[index if index >= 0 else index + len(self)] = made
        return made

    def name(self, index: int) -> str:
        """The name alone, without making the signature."""
        return self._names[index]

    def patterns(self) -> PatternTable:
        return self._patterns

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __reduce__(self):
        return SignatureTable, (self._names, self._levels, self._patterns)


def parse_offset(text: str) -> Offset:
    """An offset field; SignatureError (without location) if clamd would refuse it."""
    return _parse_offset(text)


def parse_body_pattern(hexsig: str, offset: str | Offset = "*", target: int = 0, *,
                       nocase: bool = False, wide: bool = False, ascii: bool = True,
                       fullword: bool = False, logical: bool = False,
                       max_matches: int = 1) -> BodyPattern:
    """Check a hex signature as clamd would load it and return its `BodyPattern`.

    Modifiers are those of .ldb subsignatures (::i ::w ::a ::f). `logical`
    marks a subsignature of an .ldb signature or YARA rule (always clamd's
    Aho-Corasick matcher). Raises SignatureError without a location.
    """
    parsed = offset if isinstance(offset, Offset) else _parse_offset(offset)
    anchors = hexsig_anchors(hexsig, parsed, target, nocase=nocase, wide=wide, ascii=ascii,
                             fullword=fullword, ldb=logical)
    return BodyPattern(hexsig, parsed, target, nocase, wide, ascii, fullword, logical,
                       max_matches=max_matches, anchors=anchors)


# An .ndb file at least this long is parsed in two halves, the second by a
# forked child (`clammail.forked`): 100 000 signatures take seconds of Python.
PARALLEL_CHARS = 1 << 20


def load_ndb(text: str, path: str, official: bool, options: LoadOptions) -> list[BodySignature]:
    """Every signature of an .ndb/.ndu file that this engine loads, in file order.

    Raises SignatureError(reason, path, line) for the first line clamd refuses.
    """
    from clammail import forked

    middle = text.find("\n", len(text) // 2) + 1 if len(text) >= PARALLEL_CHARS else 0
    child = None
    if 0 < middle < len(text) and forked.available():
        try:
            child = forked.ForkedCall(
                lambda: _columns(*_parse_lines(text[middle:], official, options)))
        except forked.ChildFailed:
            child = None
    if child is None:
        signatures, count = _located(path, 0, _parse_lines, text, official, options)
    else:
        try:
            signatures, count = _located(path, 0, _parse_lines, text[:middle], official,
                                         options)
        except BaseException:
            child.abandon()
            raise
        try:
            (names, levels, patterns), rest = _located(path, count, child.result)
            signatures.extend(SignatureTable(names, levels, PatternTable(patterns)))
        except forked.ChildFailed:
            more, rest = _located(path, count, _parse_lines, text[middle:], official, options)
            signatures.extend(more)
        count += rest
    if count == 0:
        raise SignatureError("Empty database file", path)
    return signatures


def _located(path: str, lines_before: int, function, *args):
    """function(*args), its SignatureError placed in `path` after `lines_before` lines."""
    try:
        return function(*args)
    except SignatureError as error:
        raise SignatureError(error.reason, path, error.line + lines_before) from None


def _parse_lines(text: str, official: bool, options: LoadOptions):
    """(signatures, number of lines); SignatureError with the line number (no path)."""
    signatures: list[BodySignature] = []
    number = 0
    for number, line in enumerate(_lines(text), 1):
        try:
            signature = _parse_line(line, official, options)
        except SignatureError as error:
            raise SignatureError(error.reason, None, number) from None
        if signature is not None:
            signatures.append(signature)
    return signatures, number


def _columns(signatures: list[BodySignature], count: int):
    """What a child sends back: the signatures as columns (pickled at C speed)."""
    table = SignatureTable.of(signatures)
    return (table._names, table._levels, table.patterns()._columns), count


def _lines(text: str):
    """Lines as clamd's fgets reads them: at most FILEBUFF - 1 characters each, so a
    longer line arrives in pieces; CR/LF removed at the end, text after a NUL ignored."""
    size = len(text)
    position = 0
    limit = LINE_BUFFER - 1
    while position < size:
        newline = text.find("\n", position, position + limit)
        end = newline + 1 if newline >= 0 else min(position + limit, size)
        line = text[position:end]
        position = end
        if "\0" in line:
            line = line[:line.index("\0")]
        yield line.rstrip("\r\n")


def _parse_line(line: str, official: bool, options: LoadOptions) -> BodySignature | None:
    if line.startswith("#"):
        return None
    fields = line.split(":", _MAX_FIELDS)
    if not 4 <= len(fields) <= _MAX_FIELDS:
        raise SignatureError(f"expected 4 to 6 fields separated by ':', found {len(fields)}")
    name, target_text, offset_text, hexsig = fields[:4]
    min_level = max_level = None
    if len(fields) > 4:
        if not _digits(fields[4]):
            raise SignatureError(f"invalid minimum engine level {fields[4]!r}")
        min_level = _c_atoi(fields[4]) & 0xFFFFFFFF
        if min_level > options.flevel:
            return None
        if len(fields) == 6:
            if not _digits(fields[5]):
                raise SignatureError(f"invalid maximum engine level {fields[5]!r}")
            max_level = _c_atoi(fields[5]) & 0xFFFFFFFF
            if max_level < options.flevel:
                return None
    if target_text != "*" and not _digits(target_text):
        raise SignatureError(f"invalid target type {target_text!r}")
    target = 0 if target_text == "*" else _c_atoi(target_text)
    if not 0 <= target < _TARGET_COUNT:
        return None  # clamd: "Not supported target type", skipped
    pattern = parse_body_pattern(hexsig, offset_text, target,
                                 max_matches=REPORTED_OCCURRENCES)
    return BodySignature(display_name(_virus_name(name), official), pattern,
                         min_level, max_level)


def _virus_name(name: str) -> str:
    """clamd drops a " (Clam)" suffix and refuses an empty name."""
    space = name.find(" ")
    if space >= 0:
        clam = name.find(" (Clam)", space)
        if clam >= 0:
            name = name[:clam]
    if not name:
        raise SignatureError("cli_mpool_virname: Empty virus name")
    return name


def _digits(text: str) -> bool:
    """clamd's cli_isnumber: digits only, and the empty string passes."""
    return _DIGITS(text) is not None


_DIGITS = re.compile("[0-9]*").fullmatch


def _c_atoi(text: str) -> int:
    if not text:
        return 0
    value = min(int(text), (1 << 63) - 1) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value
