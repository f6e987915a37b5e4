"""Hash signatures: parsing the hash formats and the compact index they load into.

Formats (libclamav readdb.c cli_loadhash), all `:`-separated:

* whole file  .hdb .hsb (.hdu .hsu with DetectPUA)   HASH:SIZE:NAME[:MIN_FLEVEL[:MAX_FLEVEL]]
* PE section  .mdb .msb (.mdu .msu with DetectPUA)   SIZE:HASH:NAME[:MIN_FLEVEL[:MAX_FLEVEL]]
* PE imports  .imp                                   HASH:SIZE:NAME[:MIN_FLEVEL[:MAX_FLEVEL]]
* allow list  .fp .sfp                               HASH:SIZE:NAME[:MIN_FLEVEL[:MAX_FLEVEL]]

HASH is MD5, SHA1 or SHA256 by its length. SIZE `*` (any size) needs a
minimum FLEVEL of at least 73, except in .imp files.

Parsing has two paths with one meaning. `parse_hash_line` is the reference:
it follows clamd line by line, including its quirks (lines read with
fgets into an 8 KiB buffer, so longer lines arrive in pieces; atoi/strtoul
number parsing; " (Clam)" cut from names). `HashFileParser` runs numpy over
blocks of lines and hands every line that is not plainly `HASH:SIZE:NAME`
to the reference path, so millions of ordinary lines load in seconds.

`CompactHashIndex` keeps each digest kind as one sorted array of
(size, digest) keys and one array of name references into a shared name
blob: a few large objects, shared between forked workers, searched in
microseconds. Like clamd it keeps one name per (digest, size): when a
database lists the same pair twice, the name clamd would report is chosen
by replaying clamd's own sort on that size bucket (see `_clamd_winner`).
"""

from __future__ import annotations

import bisect
import enum
import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from clammail import FLEVEL
from clammail.signatures.common import UNOFFICIAL_SUFFIX, SignatureError

ALGORITHMS = ("md5", "sha1", "sha256")
DIGEST_SIZE = {"md5": 16, "sha1": 20, "sha256": 32}
_ALGO_BY_HEXLEN = {32: "md5", 40: "sha1", 64: "sha256"}

# clamd reads database lines with fgets(buffer, FILEBUFF): a line of 8191
# bytes or more (newline included) arrives as several "lines".
FILEBUFF = 8192
FGETS_CHUNK = FILEBUFF - 1
# The wildcard size `*` exists since FLEVEL 73 (readdb.c).
WILDCARD_MIN_FLEVEL = 73
# A size must be below this (readdb.c: `size >= 0xffffffff` is invalid).
SIZE_LIMIT = 0xFFFFFFFF
# Size stored for `*` signatures: real sizes are never 0.
WILDCARD = 0

_CLAM_SUFFIX = b" (Clam)"


class Purpose(enum.Enum):
    """Which of clamd's four hash sets a file loads into."""

    FILE = "file"  # .hdb .hsb .hdu .hsu
    SECTION = "section"  # .mdb .msb .mdu .msu: size first
    IMPORT = "import"  # .imp: `*` allowed without FLEVEL
    ALLOW = "allow"  # .fp .sfp


@dataclass(frozen=True)
class HashEntry:
    algorithm: str
    size: int  # WILDCARD (0) for `*`
    digest: bytes
    name: bytes  # as written, " (Clam)" cut off


# -- numbers as libc parses them -------------------------------------------

_C_SPACE = b" \t\n\v\f\r"


def c_atoi(text: bytes) -> int:
    """atoi(): optional blanks and sign, then digits; 0 if none. Kept to 32 bits."""
    text = text.lstrip(_C_SPACE)
    sign = 1
    if text[:1] in (b"+", b"-"):
        sign = -1 if text[:1] == b"-" else 1
        text = text[1:]
    digits = 0
    for char in text:
        if 48 <= char <= 57:
            digits = digits * 10 + char - 48
            if digits > 1 << 40:  # beyond any int: clamp (atoi is undefined there)
                break
        else:
            break
    value = sign * digits
    # Wrap as the C int / unsigned casts in readdb.c do.
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def c_strtoul_all(text: bytes) -> int | None:
    """strtoul(text, &end, 10) that must consume the whole text; None otherwise."""
    rest = text.lstrip(_C_SPACE)
    negative = False
    if rest[:1] in (b"+", b"-"):
        negative = rest[:1] == b"-"
        rest = rest[1:]
    if not rest:
        # No digits: strtoul consumes nothing, so only an empty field "succeeds" (as 0).
        return 0 if not text else None
    if not rest.isdigit():
        return None
    value = min(int(rest), (1 << 64) - 1)
    if negative and value:
        value = (1 << 64) - value
    return value


# -- the reference path: one line as clamd parses it ------------------------


def c_line(raw: bytes) -> bytes:
    """A line as C string functions see it: cut at NUL, trailing CR/LF removed."""
    nul = raw.find(b"\0")
    if nul >= 0:
        raw = raw[:nul]
    return raw.rstrip(b"\r\n")


def c_tokenize(line: bytes, delim: bytes, limit: int) -> list[bytes]:
    """cli_strtokenize: at most `limit` fields, the last one cut at the next delimiter."""
    parts = line.split(delim, limit)
    return parts[:limit]


def clean_name(raw: bytes) -> bytes:
    """cli_virname without the .UNOFFICIAL part: cut at " (Clam)", refuse empty names."""
    cut = raw.find(_CLAM_SUFFIX)
    if cut >= 0:
        raw = raw[:cut]
    if not raw:
        raise SignatureError("empty signature name")
    return raw


IgnoreCheck = Callable[[bytes, bytes], bool]  # (raw name, whole line) -> ignored?


def parse_hash_line(raw: bytes, purpose: Purpose, flevel: int = FLEVEL,
                    ignored: IgnoreCheck | None = None) -> HashEntry | None:
    """One fgets line of a hash database: an entry, None when skipped, or SignatureError."""
    if raw[:1] == b"#":
        return None
    line = c_line(raw)
    tokens = c_tokenize(line, b":", 6)
    if len(tokens) < 3:
        raise SignatureError("malformed hash signature: fewer than three fields")
    if len(tokens) > 5:
        raise SignatureError("malformed hash signature: more than five fields")
    size_field, hash_field = (0, 1) if purpose is Purpose.SECTION else (1, 0)
    min_level = 0
    if len(tokens) > 3:
        min_level = c_atoi(tokens[3]) & 0xFFFFFFFF
        if flevel < min_level:
            return None
        if len(tokens) == 5:
            max_level = c_atoi(tokens[4]) & 0xFFFFFFFF
            if flevel > max_level:
                return None
    size_text = tokens[size_field]
    if size_text != b"*":
        size = c_strtoul_all(size_text)
        if size is None or size == 0 or size >= SIZE_LIMIT:
            raise SignatureError(f"invalid size field {_show(size_text)}")
    else:
        size = WILDCARD
        if purpose is not Purpose.IMPORT and (len(tokens) < 4 or min_level < WILDCARD_MIN_FLEVEL):
            raise SignatureError(
                f"a hash signature with size * needs a minimum FLEVEL field of at least "
                f"{WILDCARD_MIN_FLEVEL}")
    raw_name = tokens[2]
    if ignored is not None and ignored(raw_name, line):
        return None
    name = clean_name(raw_name)
    hexdigest = tokens[hash_field]
    algorithm = _ALGO_BY_HEXLEN.get(len(hexdigest))
    if algorithm is None:
        raise SignatureError(f"invalid hash {_show(hexdigest)}: not an MD5, SHA1 or SHA256")
    try:
        digest = bytes.fromhex(hexdigest.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise SignatureError(f"invalid hash {_show(hexdigest)}") from None
    if len(digest) != DIGEST_SIZE[algorithm]:  # fromhex skips blanks: refuse them
        raise SignatureError(f"invalid hash {_show(hexdigest)}")
    return HashEntry(algorithm, size, digest, name)


def _show(field: bytes) -> str:
    text = field[:80].decode("latin-1")
    return repr(text + ("..." if len(field) > 80 else ""))


def fgets_pieces(line: bytes) -> list[bytes]:
    """What successive fgets(FILEBUFF) calls return for one line (newline included)."""
    if len(line) <= FGETS_CHUNK:
        return [line]
    return [line[i:i + FGETS_CHUNK] for i in range(0, len(line), FGETS_CHUNK)]


# -- the name blob ----------------------------------------------------------


class NameTable:
    """Signature names in one bytes blob; an entry refers to (offset, length|official bit)."""

    OFFICIAL_BIT = 0x8000  # names are shorter than a line (8 KiB), so 15 bits hold the length

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._length = 0
        self.blob = b""

    def add_blob(self, data: bytes) -> int:
        """Append raw name bytes; returns the offset where they start."""
        offset = self._length
        self._parts.append(data)
        self._length += len(data)
        if self._length >= 1 << 32:
            raise SignatureError("signature names exceed 4 GiB")
        return offset

    def finish(self) -> bytes:
        if self._parts:
            self.blob = bytes(self.blob) + b"".join(self._parts)
            self._parts = []
        return self.blob

    def __len__(self) -> int:
        return self._length

    def __reduce_ex__(self, protocol):
        # With pickle protocol 5 the blob travels out of band: the compiled-database
        # cache maps it from its file instead of copying it, so after a load from
        # the cache `blob` may be a read-only memoryview.
        blob = self.finish()
        if protocol >= 5:
            blob = pickle.PickleBuffer(blob)
        return _restore_names, (blob, self._length)


def _restore_names(blob, length: int) -> NameTable:
    names = NameTable()
    names.blob = blob if isinstance(blob, bytes | memoryview) else memoryview(blob)
    names._length = length
    return names


def encode_length(length: int, official: bool) -> int:
    return length | (NameTable.OFFICIAL_BIT if official else 0)


# -- collecting entries -----------------------------------------------------


class _Columns:
    """Entries of one digest kind, in load order, as numpy chunks."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.width = 4 + DIGEST_SIZE[algorithm]
        self.keys: list[np.ndarray] = []  # S(width): size big-endian, then digest
        self.name_off: list[np.ndarray] = []  # uint32
        self.name_len: list[np.ndarray] = []  # uint16 (length | official bit)
        self.seq: list[np.ndarray] = []  # uint64 load order: file number << 32 | line
        self.count = 0
        self.sorted = True  # one chunk, already in key order (see HashIndexBuilder.export)

    def append(self, keys: np.ndarray, name_off: np.ndarray, name_len: np.ndarray,
               seq: np.ndarray, in_order: bool = False) -> None:
        if len(keys):
            self.sorted = in_order and not self.keys
            self.keys.append(keys)
            self.name_off.append(name_off.astype(np.uint32, copy=False))
            self.name_len.append(name_len.astype(np.uint16, copy=False))
            self.seq.append(seq.astype(np.uint64, copy=False))
            self.count += len(keys)

    def joined(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (_joined(self.keys), _joined(self.name_off), _joined(self.name_len),
                _joined(self.seq))


def make_keys(sizes: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """(n,) sizes and (n, d) digest bytes -> (n,) S(4+d) sort keys."""
    count, dsize = digests.shape
    raw = np.empty((count, 4 + dsize), np.uint8)
    raw[:, :4] = sizes.astype(">u4").view(np.uint8).reshape(count, 4)
    raw[:, 4:] = digests
    return raw.view(f"S{4 + dsize}").reshape(count)


class HashIndexBuilder:
    """Collects the entries of one purpose; `build()` makes the compact index."""

    def __init__(self, names: NameTable) -> None:
        self.names = names
        self.columns = {algo: _Columns(algo) for algo in ALGORITHMS}
        self._pending: dict[str, list[tuple]] = {a: [] for a in ALGORITHMS}
        self._files = 0

    def next_file(self) -> int:
        """The load-order base for the next file's lines."""
        self._files += 1
        return self._files << 32

    def add(self, entry: HashEntry, official: bool, seq: int = 0) -> None:
        offset = self.names.add_blob(entry.name)
        self._pending[entry.algorithm].append(
            (entry.size, entry.digest, offset, encode_length(len(entry.name), official), seq))

    def flush(self) -> None:
        """Move single entries added with `add` into the columns (keeps load order)."""
        for algo, rows in self._pending.items():
            if not rows:
                continue
            sizes = np.fromiter((r[0] for r in rows), np.uint32, len(rows))
            digests = np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(
                len(rows), DIGEST_SIZE[algo])
            offs = np.fromiter((r[2] for r in rows), np.uint32, len(rows))
            lens = np.fromiter((r[3] for r in rows), np.uint16, len(rows))
            seq = np.fromiter((r[4] for r in rows), np.uint64, len(rows))
            self.columns[algo].append(make_keys(sizes, digests), offs, lens, seq)
            rows.clear()

    def __len__(self) -> int:
        return sum(c.count for c in self.columns.values()) + sum(
            len(p) for p in self._pending.values())

    def export(self) -> dict[str, tuple[np.ndarray, ...]]:
        """Everything collected, per algorithm (keys, name offsets, coded lengths, load
        order), sorted by key with load order kept among equal keys: what a forked
        loader sends back (`add_export`). Leaves this builder empty."""
        self.flush()
        out = {}
        for algo, col in self.columns.items():
            if col.count:
                keys, offs, lens, seq = col.joined()
                order = _sort_order(keys)
                out[algo] = (keys[order], offs[order], lens[order], seq[order])
            self.columns[algo] = _Columns(algo)
        return out

    def add_export(self, columns: dict[str, tuple[np.ndarray, ...]], names: bytes,
                   renumber: bool = False) -> None:
        """Take what `export` of another builder returned, with that builder's name blob.
        `renumber`: that builder numbered its files itself (a file's share from the
        per-file cache); they come after this builder's files in load order."""
        base = self.names.add_blob(names)
        files = 0
        for algo, (keys, offs, lens, seq) in columns.items():
            if renumber and len(seq):
                files = max(files, int(seq.max()) >> 32)
                seq = seq + np.uint64(self._files << 32)
            self.columns[algo].append(keys, offs + np.uint32(base), lens, seq, in_order=True)
        self._files += files

    def build(self) -> CompactHashIndex:
        self.flush()
        tables = {}
        for algo, col in self.columns.items():
            if col.count:
                tables[algo] = _build_table(col)
            col.keys, col.name_off, col.name_len, col.seq = [], [], [], []
        return CompactHashIndex(tables, self.names)


class _Table:
    """One digest kind: sorted unique keys and the name each reports."""

    __slots__ = ("keys", "name_off", "name_len", "width")

    def __init__(self, keys: np.ndarray, name_off: np.ndarray, name_len: np.ndarray):
        self.keys = keys
        self.name_off = name_off
        self.name_len = name_len
        self.width = keys.dtype.itemsize


def _joined(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _sort_order(keys: np.ndarray) -> np.ndarray:
    """A stable lexicographic argsort of the keys, by integer prefix first.

    numpy sorts uint64 (radix) several times faster than byte strings; keys
    whose first 8 bytes tie are put in full order afterwards.
    """
    raw = keys.view(np.uint8).reshape(len(keys), -1)
    prefix = np.ascontiguousarray(raw[:, :8]).view(">u8").ravel().astype(np.uint64)
    # Sorting plain integers is several times faster than argsort: the index
    # rides in the low bits, under the top bits of the prefix, and equal
    # truncated prefixes come out in index order (stable).
    bits = max(1, int(len(keys) - 1).bit_length())
    mask = np.uint64((1 << bits) - 1)
    packed = (prefix & ~mask) | np.arange(len(keys), dtype=np.uint64)
    packed.sort()
    order = (packed & mask).astype(np.intp)
    ordered = packed & ~mask
    ties = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(ties):
        starts = ties[np.concatenate(([True], ties[1:] != ties[:-1] + 1))]
        for start in starts:
            end = start + 1
            while end < len(ordered) and ordered[end] == ordered[start]:
                end += 1
            run = order[start:end]
            order[start:end] = run[np.argsort(keys[run], kind="stable")]
    return order


def _build_table(col: _Columns) -> _Table:
    keys, offs, lens, seq = col.joined()
    order = None
    if not col.sorted:
        order = _sort_order(keys)
        keys, offs, lens = keys[order], offs[order], lens[order]
    same = keys[1:] == keys[:-1]
    if same.any():
        if order is not None:
            seq = seq[order]
        keys, offs, lens = _resolve_duplicates(keys, offs, lens, seq, same, col.width - 4)
    return _Table(keys, offs, lens)


def _resolve_duplicates(keys, offs, lens, seq, same, dsize):
    """Keep one entry per key, with the name clamd would report for it."""
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.append(starts[1:], len(keys))
    dup_groups = np.flatnonzero(ends - starts > 1)
    # Sizes whose bucket holds a duplicate: clamd's outcome depends on the whole bucket.
    sizes = keys.view(np.uint8).reshape(len(keys), -1)[:, :4].copy().view(">u4").ravel()
    for size in np.unique(sizes[starts[dup_groups]]):
        lo = np.searchsorted(sizes, size, side="left")
        hi = np.searchsorted(sizes, size, side="right")
        # The bucket in load order, as clamd appended it.
        load_order = np.argsort(seq[lo:hi], kind="stable") + lo
        digests = [bytes(keys[i])[4:].ljust(dsize, b"\0") for i in load_order]
        winners = _clamd_winner(digests)
        for position, index in enumerate(load_order):
            winner = winners.get(digests[position])
            if winner is not None and winner == position:
                group = np.searchsorted(starts, index, side="right") - 1
                offs[starts[group]] = offs[index]
                lens[starts[group]] = lens[index]
    return keys[starts], offs[starts], lens[starts]


def _clamd_key(digest: bytes) -> tuple[int, bytes]:
    """The order of matcher-hash.c hm_cmp on little-endian hosts.

    It compares the first 4 bytes as a native uint32 and returns
    `(i < r) * 2 - 1`, i.e. +1 when the first is smaller: descending on that
    word, then ascending (memcmp) on the rest.
    """
    return -int.from_bytes(digest[:4], "little"), digest[4:]


def _clamd_winner(digests: list[bytes]) -> dict[bytes, int]:
    """For a size bucket in load order: which position each duplicated digest reports.

    Replays matcher-hash.c: hm_sort (a quicksort with the first element as
    pivot) over the bucket, then hm_scan's binary search, which stops at the
    first equal element it meets.
    """
    ranks = {d: r for r, d in enumerate(sorted(set(digests), key=_clamd_key))}
    values = [ranks[d] for d in digests]
    slots = list(range(len(digests)))  # which load position sits at each array index
    stack = [(0, len(values))]
    while stack:
        left, right = stack.pop()
        if left + 1 >= right:
            continue
        pivot = values[left]
        l1, r1 = left + 1, right
        while l1 < r1:
            if values[l1] > pivot:
                r1 -= 1
                if l1 == r1:
                    break
                values[l1], values[r1] = values[r1], values[l1]
                slots[l1], slots[r1] = slots[r1], slots[l1]
            else:
                l1 += 1
        l1 -= 1
        if l1 != left:
            values[l1], values[left] = values[left], values[l1]
            slots[l1], slots[left] = slots[left], slots[l1]
        stack.append((r1, right))
        stack.append((left, l1))
    counts: dict[int, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    winners = {}
    for digest, rank in ranks.items():
        if counts.get(rank, 0) < 2:
            continue
        lo, hi = 0, len(values) - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if rank < values[mid]:
                if not mid:
                    break
                hi = mid - 1
            elif rank > values[mid]:
                lo = mid + 1
            else:
                winners[digest] = slots[mid]
                break
    return winners


class CompactHashIndex:
    """HashIndex over sorted contiguous arrays (see the module docstring)."""

    def __init__(self, tables: dict[str, _Table], names: NameTable) -> None:
        self._tables = tables
        self._names = names
        self._algorithms = frozenset(tables)

    def lookup(self, digest: bytes, size: int) -> list[str]:
        table = self._tables.get(_ALGO_BY_SIZE.get(len(digest), ""))
        if table is None:
            return []
        found = []
        if 0 < size < SIZE_LIMIT:
            name = self._find(table, size.to_bytes(4, "big") + digest)
            if name is not None:
                found.append(name)
        name = self._find(table, b"\0\0\0\0" + digest)
        if name is not None:
            found.append(name)
        return found

    def has_size(self, algorithm: str, size: int) -> bool:
        table = self._tables.get(algorithm)
        if table is None or not len(table.keys):
            return False
        # Keys start with the size, big-endian; `*` is size 0 and sorts first.
        if bytes(table.keys[0])[:4].ljust(4, b"\0") == b"\0\0\0\0":
            return True
        if not 0 < size < SIZE_LIMIT:
            return False
        prefix = size.to_bytes(4, "big")
        index = bisect.bisect_left(table.keys, prefix)
        return index < len(table.keys) and bytes(table.keys[index])[:4] == prefix

    def _find(self, table: _Table, key: bytes) -> str | None:
        # numpy hands out fixed-width byte strings without their trailing NULs;
        # compared the same way, the order and equality are unchanged.
        key = key.rstrip(b"\0")
        keys = table.keys
        index = bisect.bisect_left(keys, key)
        if index < len(keys) and keys[index] == key:
            return self._name(table, index)
        return None

    def _name(self, table: _Table, index: int) -> str:
        offset = int(table.name_off[index])
        coded = int(table.name_len[index])
        length = coded & ~NameTable.OFFICIAL_BIT
        name = str(self._names.blob[offset:offset + length], "utf-8", "surrogateescape")
        return name if coded & NameTable.OFFICIAL_BIT else name + UNOFFICIAL_SUFFIX

    def algorithms(self) -> frozenset[str]:
        return self._algorithms

    def __len__(self) -> int:
        return sum(len(t.keys) for t in self._tables.values())

    def entries(self) -> Iterable[tuple[str, int, bytes, str]]:
        """Every (algorithm, size, digest, name) held, for listing tools."""
        for algo, table in self._tables.items():
            for index, key in enumerate(table.keys):
                key = bytes(key).ljust(table.width, b"\0")
                yield algo, int.from_bytes(key[:4], "big"), key[4:], self._name(table, index)


_ALGO_BY_SIZE = {16: "md5", 20: "sha1", 32: "sha256"}


# -- the fast path ----------------------------------------------------------

_HEX = np.full(256, 255, np.uint8)
for _value, _char in enumerate(b"0123456789abcdef"):
    _HEX[_char] = _value
for _value, _char in enumerate(b"ABCDEF"):
    _HEX[_char] = 10 + _value

BLOCK = 8 << 20  # bytes parsed per numpy batch


class HashFileParser:
    """Parse one hash database file (bytes stream) into a HashIndexBuilder.

    `in_container`: lines come from a .cvd/.cld/.cud, where clamd reads
    through a buffer that refuses lines longer than FILEBUFF instead of
    splitting them.
    """

    def __init__(self, builder: HashIndexBuilder, purpose: Purpose, official: bool,
                 path: str, flevel: int = FLEVEL, ignored: IgnoreCheck | None = None,
                 ignored_names: frozenset[bytes] = frozenset(),
                 in_container: bool = False) -> None:
        self.builder = builder
        self.purpose = purpose
        self.official = official
        self.path = path
        self.flevel = flevel
        self.ignored = ignored
        self.ignored_names = ignored_names
        self.in_container = in_container
        self.lines = 0  # fgets calls so far, clamd's line counter
        self.signatures = 0
        self.seq_base = builder.next_file()

    def parse_stream(self, read: Callable[[int], bytes]) -> None:
        carry = b""
        while True:
            chunk = read(BLOCK)
            data = carry + chunk if carry else chunk
            if not chunk:
                if data:
                    self._batch(data)
                break
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > FGETS_CHUNK:
                    carry = self._overlong(data)
                else:
                    carry = data
                continue
            self._batch(data[:cut + 1])
            carry = data[cut + 1:]
        if self.lines == 0:
            raise SignatureError("empty database file", self.path)

    def _overlong(self, data: bytes) -> bytes:
        """A line longer than a block: feed clamd's fgets pieces one by one (bounded memory)."""
        while len(data) > FGETS_CHUNK and b"\n" not in data[:FGETS_CHUNK]:
            self._slow_piece(data[:FGETS_CHUNK])
            data = data[FGETS_CHUNK:]
        return data

    def _slow_piece(self, piece: bytes) -> None:
        self.lines += 1
        if self.in_container and len(piece) >= FGETS_CHUNK and not piece.endswith(b"\n"):
            raise SignatureError("line too long", self.path, self.lines)
        try:
            entry = parse_hash_line(piece, self.purpose, self.flevel, self.ignored)
        except SignatureError as exc:
            raise exc.located(self.path, self.lines) from None
        if entry is not None:
            self.builder.add(entry, self.official, self.seq_base | self.lines)
            self.signatures += 1

    def _slow_line(self, line: bytes) -> None:
        for piece in fgets_pieces(line):
            self._slow_piece(piece)

    def _batch(self, data: bytes) -> None:
        """Complete lines (the last may lack its newline at end of file)."""
        buf = np.frombuffer(data, np.uint8)
        newlines = np.flatnonzero(buf == 10).astype(np.int32)
        starts = np.concatenate(([0], newlines + 1))
        ends = np.concatenate((newlines, [len(buf)]))
        if starts[-1] == len(buf):  # data ended with a newline
            starts, ends = starts[:-1], ends[:-1]
        count = len(starts)
        if count == 0:
            return
        colons = np.flatnonzero(buf == 58).astype(np.int32)
        first = np.searchsorted(colons, starts)
        ncolons = np.searchsorted(colons, ends) - first
        regular = ncolons == 2
        regular &= (ends - starts) < FGETS_CHUNK - 1
        regular &= buf[np.minimum(starts, len(buf) - 1)] != 35  # '#'
        c1 = colons[np.minimum(first, len(colons) - 1)] if len(colons) else starts
        c2 = colons[np.minimum(first + 1, len(colons) - 1)] if len(colons) else starts
        if self.purpose is Purpose.SECTION:
            size_lo, size_hi, hash_lo, hash_hi = starts, c1, c1 + 1, c2
        else:
            hash_lo, hash_hi, size_lo, size_hi = starts, c1, c1 + 1, c2
        name_lo, name_hi = c2 + 1, ends
        regular &= name_hi > name_lo
        regular &= (size_hi - size_lo >= 1) & (size_hi - size_lo <= 10)
        hash_len = hash_hi - hash_lo
        regular &= (hash_len == 32) | (hash_len == 40) | (hash_len == 64)
        self._mark_irregular_bytes(data, buf, starts, ends, regular)
        if self.ignored_names:
            self._mark_ignored(buf, name_lo, name_hi, regular)

        # Fixed-width slices of every line are copied out of `padded` as rows of
        # a sliding-window view: contiguous copies, no index table per byte.
        padded = np.zeros(len(buf) + _PAD, np.uint8)
        padded[:len(buf)] = buf

        # SIZE: 1 to 10 decimal digits, right-aligned into a 10-column table.
        size_len = np.where(regular, size_hi - size_lo, 0)
        cols = np.arange(10, dtype=np.int32)
        digits = _rows(padded, size_lo, 10).astype(np.int64) - 48
        inside = cols < size_len[:, None]
        regular &= ((digits >= 0) & (digits <= 9) | ~inside).all(axis=1)
        power = size_len[:, None] - 1 - cols
        sizes = (np.where(inside, np.clip(digits, 0, 9), 0)
                 * _POW10[np.clip(power, 0, 9)]).sum(axis=1)
        regular &= (sizes > 0) & (sizes < SIZE_LIMIT)

        fast_entries = []
        for hexlen, algo in _ALGO_BY_HEXLEN.items():
            rows = np.flatnonzero(regular & (hash_len == hexlen))
            if not len(rows):
                continue
            chars = _rows(padded, hash_lo[rows], hexlen)
            digests = _fromhex(chars)
            if digests is None:  # some digest is not hex: find which, per character
                nibbles = _HEX[chars]
                good = (nibbles != 255).all(axis=1)
                regular[rows[~good]] = False
                rows, nibbles = rows[good], nibbles[good]
                digests = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
            fast_entries.append((algo, rows, digests))

        # Every line is one fgets call unless it is long; number them as clamd does.
        pieces = (ends - starts + 1 + FGETS_CHUNK - 1) // FGETS_CHUNK
        line_numbers = self.lines + np.cumsum(pieces)
        # Irregular lines may raise: the reference path takes them in order.
        for row in np.flatnonzero(~regular):
            self.lines = int(line_numbers[row] - pieces[row])
            self._slow_line(data[starts[row]:ends[row] + 1])
        seq = self.seq_base | line_numbers.astype(np.uint64)
        self._add_fast(fast_entries, padded, data, name_lo, name_hi, sizes, seq)
        self.lines = int(line_numbers[-1])

    def _mark_irregular_bytes(self, data, buf, starts, ends, regular) -> None:
        """Lines with NUL or CR bytes or a " (Clam)" suffix take the reference path."""
        for needle in (b"\0", b"\r", _CLAM_SUFFIX):
            pos = data.find(needle)
            while pos >= 0:
                row = np.searchsorted(starts, pos, side="right") - 1
                regular[row] = False
                nxt = ends[row] + 1
                pos = data.find(needle, int(nxt))

    def _mark_ignored(self, buf, name_lo, name_hi, regular) -> None:
        lengths = name_hi - name_lo
        for name in self.ignored_names:
            rows = np.flatnonzero(regular & (lengths == len(name)))
            if not len(rows):
                continue
            cols = name_lo[rows][:, None] + np.arange(len(name))
            hit = (buf[cols] == np.frombuffer(name, np.uint8)).all(axis=1)
            regular[rows[hit]] = False

    def _add_fast(self, fast_entries, padded, data, name_lo, name_hi, sizes, seq) -> None:
        for algo, rows, digests in fast_entries:
            offs, lens = self._names_of(padded, data, name_lo[rows], name_hi[rows])
            self.builder.columns[algo].append(
                make_keys(sizes[rows], digests), offs, lens, seq[rows])
            self.signatures += len(rows)

    def _names_of(self, padded: np.ndarray, data: bytes, lo: np.ndarray, hi: np.ndarray):
        """Append the names [lo, hi) to the name blob; their (offset, coded length)."""
        lengths = (hi - lo).astype(np.int64)
        if not len(lengths):
            return np.zeros(0, np.uint32), np.zeros(0, np.uint16)
        # Gather into a table as wide as the longest name (names are short;
        # a rare long one is copied on its own so the table stays small).
        width = int(min(lengths.max(), _NAME_TABLE_WIDTH))
        short = lengths <= width
        cols = np.arange(width, dtype=np.int32)
        table = _rows(padded, lo[short], width)
        pieces = table[cols < lengths[short][:, None]].tobytes()
        if short.all():
            blob = pieces
        else:
            parts, pos = [], 0
            for row in range(len(lengths)):
                if short[row]:
                    parts.append(pieces[pos:pos + lengths[row]])
                    pos += int(lengths[row])
                else:
                    parts.append(data[lo[row]:hi[row]])
            blob = b"".join(parts)
        base = self.builder.names.add_blob(blob)
        offsets = base + np.cumsum(lengths) - lengths
        coded = lengths | (NameTable.OFFICIAL_BIT if self.official else 0)
        return offsets.astype(np.uint32), coded.astype(np.uint16)


_NAME_TABLE_WIDTH = 128
_POW10 = 10 ** np.arange(10, dtype=np.int64)
# Zero bytes after a block, so a fixed-width slice from any line start stays inside.
_PAD = max(_NAME_TABLE_WIDTH, 64, 10)


def _rows(padded: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """(len(starts), width) array: padded[s:s + width] for each start s."""
    windows = np.lib.stride_tricks.as_strided(
        padded, shape=(len(padded) - width + 1, width), strides=(1, 1), writeable=False)
    return windows[starts]


def _fromhex(chars: np.ndarray) -> np.ndarray | None:
    """(n, 2k) hex characters -> (n, k) bytes; None if any is not a hex digit.

    bytes.fromhex refuses non-hex characters but skips whitespace, which
    would make the result shorter: the length check catches that.
    """
    try:
        raw = bytes.fromhex(chars.tobytes().decode("latin-1"))
    except ValueError:
        return None
    if len(raw) * 2 != chars.size:
        return None
    return np.frombuffer(raw, np.uint8).reshape(len(chars), chars.shape[1] // 2)
