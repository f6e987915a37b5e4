"""The multi-literal search: where each anchor literal occurs in a buffer.

Two interchangeable backends with one method, `occurrences`: pyahocorasick
(always installed) and hyperscan (the fast path, used when importable). Both
return the same answer: for each literal that occurs, its start positions in
increasing order, at most `LITERAL_CAP + 1` of them (one more than the cap
tells the caller the literal is dense and needs another strategy).
Case-insensitive literals (.ldb `::i`) are given lower-case and searched in
the lower-cased buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# A literal with more occurrences than this in one buffer is "dense": its
# parts are then searched by regular expression instead of one candidate at a
# time, which bounds the time spent on hostile data (one byte repeated).
LITERAL_CAP = 20_000

Occurrences = dict[int, list[int]]


def available_backends() -> list[str]:
    names = []
    try:
        import hyperscan  # noqa: F401

        names.append("hyperscan")
    except ImportError:
        pass
    names.append("ahocorasick")
    return names


def backend_name(name: str | None) -> str:
    """The backend `name` stands for (None and "auto": the fastest installed one)."""
    if name in (None, "auto"):
        return available_backends()[0]
    if name == "pyahocorasick":
        return "ahocorasick"
    if name not in ("hyperscan", "ahocorasick"):
        raise ValueError(f"unknown matcher backend {name!r}")
    return name


def make_backend(name: str | None, literals: Sequence[tuple[bytes, bool]],
                 windows: Sequence[bytes] = ()):
    """A backend over `literals` ((bytes, nocase) by literal id).

    `windows` are hyperscan regular expressions (ids after the literals) whose
    presence is reported: the short-anchored parts, which hyperscan can look
    for as a whole fixed window instead of a two-byte literal.
    """
    name = backend_name(name)
    if name == "hyperscan":
        return HyperscanBackend(literals, windows)
    if windows:
        raise ValueError("only hyperscan searches for windows")
    return AhoCorasickBackend(literals)


class AhoCorasickBackend:
    """pyahocorasick automata over str keys (bytes decoded as latin-1, one char per byte).

    pyahocorasick reports every occurrence, so a literal that is everywhere
    (hostile data) would cost a Python step per byte. The buffer is therefore
    walked in chunks; once literals turn dense, the rest of the buffer is
    searched with an automaton built without them.
    """

    name = "ahocorasick"
    CHUNK = 1 << 20

    def __init__(self, literals: Sequence[tuple[bytes, bool]]):
        self._literals = [(lit.decode("latin-1"), nocase) for lit, nocase in literals]
        self._lengths = [len(lit) for lit, _ in literals]
        self._longest = max(self._lengths, default=1)
        self._exact = self._build(False, frozenset())
        self._nocase = self._build(True, frozenset())
        self._reduced: dict[tuple[bool, frozenset[int]], object] = {}

    def _build(self, nocase: bool, without: frozenset[int]):
        import ahocorasick

        automaton = ahocorasick.Automaton()
        for ident, (word, is_nocase) in enumerate(self._literals):
            if is_nocase == nocase and ident not in without:
                automaton.add_word(word, ident)
        if len(automaton) == 0:
            return None
        automaton.make_automaton()
        return automaton

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_reduced"] = {}
        return state

    def occurrences(self, buf: bytes, lowered: Callable[[], bytes]) -> tuple[Occurrences, set]:
        """(literal id -> starts, ids of windows present); this backend has no windows."""
        found: Occurrences = {}
        if self._exact is not None:
            self._collect(False, self._exact, buf, found)
        if self._nocase is not None:
            self._collect(True, self._nocase, lowered(), found)
        return found, set()

    def _collect(self, nocase: bool, automaton, buf: bytes, found: Occurrences) -> None:
        text = buf.decode("latin-1")
        lengths = self._lengths
        cap = LITERAL_CAP
        dense: set[int] = set()
        size = len(text)
        position = 0
        while position < size:
            stop = min(size, position + self.CHUNK)
            # Start early enough to see literals that end in this chunk.
            begin = max(0, position - self._longest + 1)
            for end, ident in automaton.iter(text, begin, stop):
                if end < position:
                    continue
                starts = found.get(ident)
                if starts is None:
                    found[ident] = [end - lengths[ident] + 1]
                elif len(starts) <= cap:
                    starts.append(end - lengths[ident] + 1)
                    if len(starts) > cap:
                        dense.add(ident)
            position = stop
            if dense and position < size:
                key = (nocase, frozenset(dense))
                reduced = self._reduced.get(key)
                if reduced is None:
                    reduced = self._reduced[key] = self._build(nocase, key[1])
                if reduced is None:
                    return
                automaton = reduced


def _release_free_memory() -> None:
    """Give back what hyperscan's compiler freed (a few hundred MB for 100 000
    literals), so worker processes forked after the build do not carry it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class HyperscanBackend:
    """One hyperscan database reporting each literal once; `bytes.find` lists the rest."""

    name = "hyperscan"

    def __init__(self, literals: Sequence[tuple[bytes, bool]], windows: Sequence[bytes] = ()):
        import hyperscan

        self._literals = [lit for lit, _ in literals]
        self._nocase = [nocase for _, nocase in literals]
        self._database = None
        if literals or windows:
            # Every byte escaped: a NUL would otherwise end the expression.
            expressions = [b"".join(b"\\x%02x" % c for c in lit) for lit in self._literals]
            flags = [hyperscan.HS_FLAG_SINGLEMATCH
                     | (hyperscan.HS_FLAG_CASELESS if nocase else 0)
                     for nocase in self._nocase]
            expressions += list(windows)
            flags += [hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_DOTALL] * len(windows)
            database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            database.compile(expressions=expressions, ids=list(range(len(expressions))),
                             elements=len(expressions), flags=flags)
            self._database = database
            _release_free_memory()

    def __getstate__(self):
        import hyperscan

        state = dict(self.__dict__)
        if self._database is not None:
            state["_database"] = hyperscan.dumpb(self._database)
        return state

    def __setstate__(self, state):
        import hyperscan

        if state["_database"] is not None:
            database = hyperscan.loadb(state["_database"], hyperscan.HS_MODE_BLOCK)
            database.scratch = hyperscan.Scratch(database)
            state["_database"] = database
        self.__dict__.update(state)

    def occurrences(self, buf: bytes, lowered: Callable[[], bytes]) -> tuple[Occurrences, set]:
        """(literal id -> starts, ids of windows present)."""
        if self._database is None or not buf:
            return {}, set()
        first: dict[int, int] = {}

        def on_match(ident, start, end, flags, context):
            first[ident] = end

        self._database.scan(buf, match_event_handler=on_match)
        found: Occurrences = {}
        windows = set()
        cap = LITERAL_CAP
        count = len(self._literals)
        for ident, end in first.items():
            if ident >= count:
                windows.add(ident - count)
                continue
            literal = self._literals[ident]
            haystack = lowered() if self._nocase[ident] else buf
            position = end - len(literal)
            starts = [position]
            find = haystack.find
            while len(starts) <= cap:
                position = find(literal, position + 1)
                if position < 0:
                    break
                starts.append(position)
            found[ident] = starts
        return found, windows
