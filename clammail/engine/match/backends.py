"""The multi-literal search: where each anchor literal occurs in a buffer.

Two interchangeable backends with one method, `occurrences`: pyahocorasick
(always installed) and hyperscan (the fast path: the system's libhs through
our own binding, `libhs.py`, used whenever the library loads). Both
return the same answer: for each literal that occurs, its start positions in
increasing order, at most `LITERAL_CAP + 1` of them (one more than the cap
tells the caller the literal is dense and needs another strategy).
Case-insensitive literals (.ldb `::i`) are given lower-case and searched in
the lower-cased buffer.
"""

from __future__ import annotations

import binascii
import hashlib
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Sequence

from clammail import mapped
from clammail.engine.match import libhs

# A literal with more occurrences than this in one buffer is "dense": its
# parts are then searched by regular expression instead of one candidate at a
# time, which bounds the time spent on hostile data (one byte repeated).
LITERAL_CAP = 20_000

Occurrences = dict[int, list[int]]


# Set to "ahocorasick" to run on the portable fallback alone (the tests, the
# benchmarks and a daemon can be run that way without changing any code).
MATCHER_ENV = "CLAMMAIL_MATCHER"


def available_backends() -> list[str]:
    """The usable backends, fastest first."""
    names = []
    if libhs.available() and os.environ.get(MATCHER_ENV, "auto") != "ahocorasick":
        names.append("hyperscan")
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
                 windows: Sequence[bytes] = (), cache_dir: str | None = None):
    """A backend over `literals` ((bytes, nocase) by literal id).

    `windows` are hyperscan regular expressions (ids after the literals) whose
    presence is reported: the short-anchored parts, which hyperscan can look
    for as a whole fixed window instead of a two-byte literal.
    """
    name = backend_name(name)
    if name == "hyperscan":
        return HyperscanBackend(literals, windows, cache_dir)
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

    def _collect(self, nocase: bool, automaton, buf, found: Occurrences) -> None:
        lengths = self._lengths
        cap = LITERAL_CAP
        dense: set[int] = set()
        size = len(buf)
        overlap = self._longest - 1
        position = 0
        while position < size:
            stop = min(size, position + self.CHUNK)
            # Decoded a chunk at a time (the buffer may be a 100 MB mapping), each
            # beginning early enough to see the literals that end in it.
            begin = max(0, position - overlap)
            text = bytes(buf[begin:stop]).decode("latin-1")
            seen = position - begin  # ends before this were reported with the last chunk
            shift = begin + 1
            for end, ident in automaton.iter(text):
                if end < seen:
                    continue
                starts = found.get(ident)
                if starts is None:
                    found[ident] = [end - lengths[ident] + shift]
                elif len(starts) <= cap:
                    starts.append(end - lengths[ident] + shift)
                    if len(starts) > cap:
                        dense.add(ident)
            mapped.release(buf, begin, stop - overlap)
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


# Expressions per hyperscan database. Measured here on 100 000 anchor literals
# of the benchmark database: one database of all of them compiles in ~8 s of
# CPU and scans mail at ~500 MB/s; beyond ~60 000 literals its compiler picks
# slower engines. Databases of at most 50 000 compile in about the same total
# CPU time and can be compiled by several processes at once; each is one pass
# over the buffer (/usr/bin/node: 2 databases 940 MB/s, 3 670, 4 560), so a
# chunk is not made much smaller than that.
EXPRESSIONS_PER_DATABASE = 50_000
# Chunks end where the content says (see `_expression_chunks`): after an
# expression whose CRC-32 is 0 modulo this, once a chunk holds 80 % of the
# maximum. Mean chunk about 90 % of the maximum.
_CUT_SPREAD = 5_000


def _expression_chunks(expressions: Sequence[bytes]) -> list[range]:
    """Ranges of ids of at most EXPRESSIONS_PER_DATABASE, cut where the content says
    (the last may hold 20 % more: it joins a short one after it).

    A change in one place of the list (a database update adds and removes
    signatures) moves the cuts near it only; past it, the cuts fall on the
    same expressions again, so the other chunks compile to the databases the
    chunk cache already holds.
    """
    maximum = EXPRESSIONS_PER_DATABASE
    minimum = max(1, maximum * 4 // 5)
    spread = max(1, min(_CUT_SPREAD, maximum - minimum))
    chunks = []
    start = 0
    for ident, expression in enumerate(expressions):
        length = ident - start + 1
        if length >= maximum or (length >= minimum and zlib.crc32(expression) % spread == 0):
            chunks.append(range(start, ident + 1))
            start = ident + 1
    if start < len(expressions):
        chunks.append(range(start, len(expressions)))
    # One pass over the buffer fewer: /usr/bin/node against 100 000 literals
    # scans at 1 210 MB/s (CPU time) in chunks of 41 147 + 58 853, 1 200 in
    # 50 000 + 50 000, 820 in 41 147 + 43 023 + 15 830. The last chunk ends the
    # load order (usually the main database, which changes least): the cache
    # loses little.
    merged = maximum * 6 // 5
    if len(chunks) > 1 and len(chunks[-2]) + len(chunks[-1]) <= merged:
        chunks[-2:] = [range(chunks[-2].start, chunks[-1].stop)]
    return chunks


def _compile_database(expressions: Sequence[bytes], flags: Sequence[int],
                      ids: range) -> libhs.Database:
    """One chunk's database; its ids count from the chunk's start (added back at scan time),
    so the same expressions compile to the same database wherever they sit."""
    try:
        return libhs.Database.compile([expressions[i] for i in ids], [flags[i] for i in ids],
                                      range(len(ids)))
    except libhs.HyperscanError as exc:
        if exc.expression is None:
            raise
        ident = ids[exc.expression]
        raise libhs.HyperscanError(f"hyperscan compile error (expression {ident}): {exc.reason}",
                                   ident, exc.reason) from None


def _chunk_key(expressions: Sequence[bytes], flags: Sequence[int], ids: range) -> str:
    digest = hashlib.sha256(f"libhs {libhs.version()} block\n".encode())
    for i in ids:
        digest.update(_KEY_ITEM.pack(flags[i], len(expressions[i])))
        digest.update(expressions[i])
    return digest.hexdigest()


_KEY_ITEM = struct.Struct("<II")


def chunk_cache(directory: str):
    """Where compiled chunks are kept: in a folder of the compiled-database cache."""
    from clammail.signatures.dbcache import BlobCache

    return BlobCache(os.path.join(directory, "hyperscan"), "hs-", ".chunk",
                     b"CLAMMAIL-HS-CHUNK\n")


def compile_databases(expressions: Sequence[bytes], flags: Sequence[int],
                      cache_dir: str | None = None) -> list[tuple[int, libhs.Database]]:
    """Hyperscan block-mode databases over `expressions`: (first id, database) per chunk.

    With `cache_dir`, a chunk compiled before (the same expressions and
    flags) is taken from there, and new ones are stored. hyperscan's
    compiler is single-threaded and takes seconds: with several chunks to
    compile and CPUs, forked children compile some (`clammail.forked`) and
    send them back serialized. A child that fails leaves its chunks to this
    process, so compile errors are raised here, as without children.
    """
    from clammail import forked

    chunks = _expression_chunks(expressions)
    databases: dict[int, libhs.Database] = {}
    cache = keys = None
    if cache_dir is not None:
        cache = chunk_cache(cache_dir)
        keys = [_chunk_key(expressions, flags, ids) for ids in chunks]
        for k, key in enumerate(keys):
            blob = cache.get(key)
            if blob is not None:
                try:
                    databases[k] = libhs.Database.deserialize(blob)
                except libhs.HyperscanError as exc:  # another library version, another CPU
                    cache.discard(key, str(exc))
    todo = [k for k in range(len(chunks)) if k not in databases]
    workers = min(len(todo), forked.cpu_count()) if forked.available() else 1
    # The chunks to compile go round the workers; worker 0 is this process.
    children = []
    for worker in range(1, workers):
        mine = todo[worker::workers]

        def compile_mine(mine=mine):
            return [_compile_database(expressions, flags, chunks[k]).serialize() for k in mine]

        try:
            children.append((mine, forked.ForkedCall(compile_mine)))
        except forked.ChildFailed:
            pass
    assigned = {k for mine, _ in children for k in mine}
    fresh: dict[int, bytes] = {}
    try:
        for k in todo:
            if k not in assigned:
                databases[k] = _compile_database(expressions, flags, chunks[k])
    except BaseException:
        for _, call in children:
            call.abandon()
        raise
    for mine, call in children:
        try:
            blobs = call.result()
        except Exception:  # noqa: BLE001 - compiled below, where errors are raised
            continue
        for k, blob in zip(mine, blobs, strict=True):
            databases[k] = libhs.Database.deserialize(blob)
            fresh[k] = blob
    for k in todo:  # a failed child's chunks
        if k not in databases:
            databases[k] = _compile_database(expressions, flags, chunks[k])
    if cache is not None:
        for k in todo:
            cache.put(keys[k], fresh.get(k) or databases[k].serialize())
        cache.keep_only(keys)
    return [(chunks[k].start, databases[k]) for k in range(len(chunks))]


def _escaped(literal: bytes) -> bytes:
    """`\\xhh` for every byte, as hyperscan reads it (hexlify does the bytes at C speed)."""
    if not literal:
        return b""
    return b"\\x" + binascii.hexlify(literal, b"x").replace(b"x", b"\\x")


def _second(item):
    return item[1]


class HyperscanBackend:
    """Hyperscan databases reporting each literal once; `bytes.find` lists the rest."""

    name = "hyperscan"

    def __init__(self, literals: Sequence[tuple[bytes, bool]], windows: Sequence[bytes] = (),
                 cache_dir: str | None = None):
        if not libhs.available():
            raise ValueError(f"hyperscan ({libhs.LIBRARY}) is not available")
        self._literals = [lit for lit, _ in literals]
        self._nocase = [nocase for _, nocase in literals]
        self._databases: list[libhs.Database] = []
        self._first_ids: list[int] = []  # of each database's chunk
        if literals or windows:
            # Every byte escaped: a NUL would otherwise end the expression.
            expressions = [_escaped(lit) for lit in self._literals]
            flags = [libhs.HS_FLAG_SINGLEMATCH | (libhs.HS_FLAG_CASELESS if nocase else 0)
                     for nocase in self._nocase]
            expressions += list(windows)
            flags += [libhs.HS_FLAG_SINGLEMATCH | libhs.HS_FLAG_DOTALL] * len(windows)
            compiled = compile_databases(expressions, flags, cache_dir)
            self._first_ids = [first for first, _ in compiled]
            self._databases = [database for _, database in compiled]
            _release_free_memory()
        self._scratch = libhs.Scratch(self._databases)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_databases"] = [database.serialize() for database in self._databases]
        del state["_scratch"]
        return state

    def __setstate__(self, state):
        state["_databases"] = [libhs.Database.deserialize(bytes(blob))
                               for blob in state["_databases"]]
        self.__dict__.update(state)
        self._scratch = libhs.Scratch(self._databases)

    def occurrences(self, buf, lowered: Callable[[], bytes]) -> tuple[Occurrences, set]:
        """(literal id -> starts, ids of windows present).

        A mapped file is searched in pieces (`clammail.mapped`), each
        released when done, so a big file's pages are not all resident at
        once; a literal's occurrences are listed piece by piece, each piece
        keeping those that start in it (the overlap is the next one's)."""
        size = len(buf)
        if not self._databases or not size:
            return {}, set()
        first: dict[int, int] = {}
        base = [0, 0]  # where the piece being scanned starts, the chunk's first id

        def on_match(ident, start, end, flags, context):
            first[ident + base[1]] = end + base[0]  # SINGLEMATCH: once per id and scan
            return 0

        callback = libhs.MATCH_CALLBACK(on_match)
        step = mapped.PIECE if isinstance(buf, mmap.mmap) else _LONGEST_SCAN
        found: Occurrences = {}
        windows = set()
        cap = LITERAL_CAP
        count = len(self._literals)
        with memoryview(buf) as whole:
            for start, stop in mapped.pieces(size, step, _PIECE_OVERLAP):
                first.clear()
                base[0] = start
                with whole[start:stop] as piece:
                    for base[1], database in zip(self._first_ids, self._databases, strict=True):
                        libhs.scan(database, piece, self._scratch, callback)
                own_end = min(size, start + step)
                # In the order of the buffer, as one database reports them.
                for ident, end in sorted(first.items(), key=_second):
                    if ident >= count:
                        windows.add(ident - count)
                        continue
                    literal = self._literals[ident]
                    position = end - len(literal)
                    if position >= own_end:
                        continue  # starts in the overlap: the next piece lists it
                    starts = found.get(ident)
                    if starts is None:
                        starts = found[ident] = []
                    find = (lowered() if self._nocase[ident] else buf).find
                    limit = own_end + len(literal) - 1
                    while position >= 0 and len(starts) <= cap:
                        starts.append(position)
                        position = find(literal, position + 1, limit)
                mapped.release(buf, start, own_end)
        return found, windows


# Pieces overlap by more than any expression is long (a body signature line
# is at most 32 KiB of text, so 16 KiB of bytes).
_PIECE_OVERLAP = 1 << 16
# hs_scan takes at most 4 GiB at once.
_LONGEST_SCAN = libhs.MAX_SCAN_LENGTH - _PIECE_OVERLAP
