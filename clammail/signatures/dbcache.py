"""The compiled-database cache: restart without parsing unchanged databases again.

A loaded `Database` (hash indexes as numpy arrays, the parsed body and
logical signatures, and whatever compiled forms the engine put into
`Database.compiled`) is kept in one file under a cache directory. Its name
is a fingerprint of everything the load depended on: each database file's
path, size, mtime and inode (a directory's listing included), the load
options, the engine level, the clammail, Python and numpy versions. A
changed file gives a new fingerprint, so a stale copy is never used; older
copies are removed when a new one is written.

The file: a header, a pickle of the Database (pickle protocol 5), and the
large buffers (numpy arrays, the name blob) stored raw, page-aligned, out of
the pickle. Loading checks everything, then maps the file and hands the
buffers to the unpickler as views of the mapping: the arrays are not copied
and their pages are read only when used (and shared by every process that
maps the same file), so a restart takes well under a second and little
memory.

A cache file is trusted only if it is ours: owned by this user, not
writable by anyone else, in a directory that is not either, its size what
its header says, and the SHA256 of the header and pickle and of every
buffer (stored in the header) right; anything else is ignored (and a
corrupt file removed), and the caller loads from the databases. A cache
file is written under a temporary name and renamed into place, and never
changed after: a process that mapped it keeps its own copy of the inode
even when a newer cache replaces or removes it. (Truncating a mapped file
would crash the process mapping it; only its owner could, and we never do.)

How the engine uses it: `load_database(paths, options, cache_dir=DIR)`
returns a Database with `fingerprint` and `cache_dir` set (and stores it
at once only when it has nothing for the engine to compile: no body,
logical or YARA signatures). The engine looks for its compiled matcher in
`database.compiled` (e.g. `database.compiled.get("body_matcher")`); when
it is missing it builds it, stores it there and calls
`save_compiled(database)`, so the next start finds both. What goes into
`compiled` must be picklable.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import pickle
import stat
import struct
import sys
import tempfile
from collections.abc import Callable

from clammail import FLEVEL, __version__
from clammail.signatures.common import LoadOptions

log = logging.getLogger(__name__)

MAGIC = b"CLAMMAIL-DB-CACHE\n"
FORMAT = 5  # 3: pattern records moved to clammail.signatures.patterns; 4: BodyPattern.logical;
# 5: hyperscan chunks with ids from their first (the own libhs binding)
_PREFIX = "db-"
_SUFFIX = ".cache"
# After MAGIC: format, checksum of what follows the fixed header up to the
# first buffer, pickle length, buffer count.
_FIXED = struct.Struct("<I32sQQ")
_ENTRY = struct.Struct("<QQ32s")  # per buffer: offset, length, SHA256
_ALIGN = 4096  # buffers start on page boundaries, so numpy views of them are aligned
_CHUNK = 4 << 20  # checksums read the file in pieces this big (no copy in memory)


def default_cache_dir() -> str:
    """$XDG_CACHE_HOME/clammail, else /var/cache/clammail for root, else ~/.cache/clammail."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "clammail")
    if os.geteuid() == 0:
        return "/var/cache/clammail"
    return os.path.join(os.path.expanduser("~"), ".cache", "clammail")


def _stat_line(path: str) -> str:
    st = os.stat(path)
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_mode:o}"


def _environment(options: LoadOptions, keys) -> list[str]:
    """What every cached load depends on besides the files."""
    import numpy

    return [f"format={FORMAT}", f"clammail={__version__}", f"flevel={FLEVEL}",
            f"python={sys.version_info[:3]}", f"numpy={numpy.__version__}",
            f"options={options!r}", f"keys={keys!r}"]


def fingerprint(paths: list[str], options: LoadOptions, keys=None) -> str | None:
    """The cache key of loading these paths with these options; None if a path is unreadable."""
    parts = _environment(options, keys)
    try:
        for path in paths:
            path = os.path.abspath(os.fspath(path))
            parts.append(_stat_line(path))
            if os.path.isdir(path):
                for name in sorted(os.listdir(path)):
                    parts.append(_stat_line(os.path.join(path, name)))
    except OSError:
        return None
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


class DatabaseCache:
    """Cache files of one kind (`prefix`) in a directory: a whole loaded Database
    (the default), or one database file's share of it (`FileUnits`)."""

    def __init__(self, directory: str, prefix: str = _PREFIX) -> None:
        self.directory = directory
        self.prefix = prefix

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{self.prefix}{key}{_SUFFIX}")

    def load(self, key: str):
        """The cached Database for this key, or None (missing, foreign or corrupt)."""
        database = self.load_object(key)
        if database is not None:
            database.fingerprint = key
            database.cache_dir = self.directory
        return database

    def load_object(self, key: str):
        """What was stored under this key (its big buffers mapped), or None."""
        path = self._path(key)
        try:
            if not _trusted(os.stat(self.directory)):
                log.warning("cache directory %s is not ours alone (owner or write permission): not used",
                            self.directory)
                return None
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not _trusted(st):
                    log.warning("cache file %s is not ours alone: not used", path)
                    return None
                parts = self._read_checked(fh, st.st_size)
                if isinstance(parts, str):
                    self._discard(path, parts)
                    return None
                payload, layout = parts
                mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if layout else None
        except OSError:
            return None
        buffers = [memoryview(mapping)[offset:offset + length] for offset, length in layout]
        try:
            return pickle.loads(payload, buffers=buffers)
        except Exception as exc:  # a payload we wrote but cannot read back (code changed)
            self._discard(path, f"unreadable ({exc.__class__.__name__})")
            return None

    @staticmethod
    def _read_checked(fh, size: int):
        """(pickle bytes, [(offset, length)] of the buffers), or why the file is refused."""
        start = len(MAGIC) + _FIXED.size
        head = fh.read(start)
        if len(head) < start or not head.startswith(MAGIC):
            return "not a cache file"
        version, checksum, pickle_length, count = _FIXED.unpack_from(head, len(MAGIC))
        if version != FORMAT:
            return f"format {version}, not {FORMAT}"
        table_length = count * _ENTRY.size
        if start + table_length + pickle_length > size:
            return "shorter than its header says"
        rest = fh.read(table_length + pickle_length)
        if hashlib.sha256(rest).digest() != checksum:
            return "checksum mismatch"
        layout = []
        end = start + len(rest)
        for number in range(count):
            offset, length, digest = _ENTRY.unpack_from(rest, number * _ENTRY.size)
            if offset < end or offset - end >= _ALIGN or offset % _ALIGN or offset + length > size:
                return "buffer outside the file"
            layout.append((end, offset, length, digest))
            end = offset + length
        if end != size:
            return "longer than its header says"
        for padding_start, offset, length, digest in layout:
            if _file_digest(fh, padding_start, offset + length - padding_start) != digest:
                return "buffer checksum mismatch"
        return rest[table_length:], [(offset, length) for _, offset, length, _ in layout]

    def store(self, key: str, database, remove_others: bool = True) -> bool:
        """Write the Database (or other object) for this key; False (and no cache) if that
        is not possible. Other files of this kind are removed unless `remove_others` is false."""
        buffers: list[pickle.PickleBuffer] = []
        try:
            payload = pickle.dumps(database, protocol=5, buffer_callback=buffers.append)
        except (pickle.PicklingError, TypeError, AttributeError, ValueError) as exc:
            log.info("database cache not written: %s", exc)
            return False
        views = [buffer.raw() for buffer in buffers]

        def write(fh) -> None:
            start = len(MAGIC) + _FIXED.size
            position = start + len(views) * _ENTRY.size + len(payload)
            table = []
            for view in views:
                # A buffer's checksum covers the padding before it too: every
                # byte of the file is checked.
                padding = -position % _ALIGN
                digest = hashlib.sha256(b"\0" * padding)
                digest.update(view)
                position += padding
                table.append(_ENTRY.pack(position, view.nbytes, digest.digest()))
                position += view.nbytes
            rest_checksum = hashlib.sha256(b"".join(table))
            rest_checksum.update(payload)
            fh.write(MAGIC + _FIXED.pack(FORMAT, rest_checksum.digest(), len(payload), len(views)))
            fh.write(b"".join(table))
            fh.write(payload)
            for view in views:
                fh.write(b"\0" * (-fh.tell() % _ALIGN))
                fh.write(view)

        if not _write_atomically(self.directory, self._path(key), write, "database cache"):
            return False
        if remove_others:
            self.keep_only([key])
        return True

    def keep_only(self, keys) -> None:
        """Remove the files of this kind other than those of `keys`."""
        _keep_only(self.directory, self.prefix, _SUFFIX, {self._path(key) for key in keys})

    def _discard(self, path: str, why: str) -> None:
        log.warning("database cache %s ignored: %s", path, why)
        try:
            os.unlink(path)
        except OSError:
            pass


class FileUnits:
    """The per-file cache: what one database file (or container) added to a load.

    When any database file changed, the loader takes every unchanged file's
    share from here instead of parsing it again (a daily.cvd update does not
    parse main.cvd). A unit's key covers the file's (and its twin's) status,
    what the load depended on before it (`context`: the ignore lists loaded
    so far), and everything `fingerprint` covers. Units of files no longer
    loaded are removed by `finish`.
    """

    def __init__(self, directory: str) -> None:
        self._cache = DatabaseCache(os.path.join(directory, "files"), "file-")
        self._used: list[str] = []

    def key(self, paths: list[str], options: LoadOptions, keys, context: str) -> str | None:
        parts = _environment(options, keys) + [f"context={context}"]
        for path in paths:
            try:
                parts.append(_stat_line(os.path.abspath(path)))
            except FileNotFoundError:
                parts.append(f"{path}\0missing")
            except OSError:
                return None
        return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()

    def get(self, key: str):
        unit = self._cache.load_object(key)
        if unit is not None:
            self._used.append(key)
        return unit

    def put(self, key: str, unit) -> None:
        if self._cache.store(key, unit, remove_others=False):
            self._used.append(key)

    def finish(self) -> None:
        """The load is complete: drop the units it did not use."""
        self._cache.keep_only(self._used)


class BlobCache:
    """Named blobs beside the database caches (`<prefix><key><suffix>`), with the
    same trust rules: ours alone, checked by the SHA256 stored in front of each.
    What the matcher keeps per hyperscan chunk, so a database update compiles
    only the chunks whose expressions changed."""

    _HEAD = struct.Struct("<32s")

    def __init__(self, directory: str, prefix: str, suffix: str, magic: bytes) -> None:
        self.directory = directory
        self.prefix, self.suffix, self.magic = prefix, suffix, magic

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{self.prefix}{key}{self.suffix}")

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            if not _trusted(os.stat(self.directory)):
                return None
            with open(path, "rb") as fh:
                if not _trusted(os.fstat(fh.fileno())):
                    return None
                data = fh.read()
        except OSError:
            return None
        start = len(self.magic) + self._HEAD.size
        if not data.startswith(self.magic) or len(data) < start:
            self.discard(key, "not a cache file")
            return None
        (digest,) = self._HEAD.unpack_from(data, len(self.magic))
        blob = data[start:]
        if hashlib.sha256(blob).digest() != digest:
            self.discard(key, "checksum mismatch")
            return None
        return blob

    def put(self, key: str, blob: bytes) -> bool:
        def write(fh) -> None:
            fh.write(self.magic + self._HEAD.pack(hashlib.sha256(blob).digest()))
            fh.write(blob)

        return _write_atomically(self.directory, self._path(key), write, "cache")

    def keep_only(self, keys) -> None:
        """Remove this kind's blobs other than `keys`."""
        _keep_only(self.directory, self.prefix, self.suffix, {self._path(key) for key in keys})

    def discard(self, key: str, why: str) -> None:
        log.warning("cache %s ignored: %s", self._path(key), why)
        try:
            os.unlink(self._path(key))
        except OSError:
            pass


def _write_atomically(directory: str, path: str, write: Callable, what: str) -> bool:
    """Write `path` through `write(fh)` into a private temporary file renamed
    over it: readers see the old file or the whole new one. False on failure."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    except OSError as exc:
        log.info("%s %s not written: %s", what, path, exc)
        return False
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except OSError as exc:
        log.info("%s %s not written: %s", what, path, exc)
        try:
            os.unlink(temp)
        except OSError:
            pass
        return False
    return True


def _keep_only(directory: str, prefix: str, suffix: str, keep: set[str]) -> None:
    """Remove the files `<prefix>*<suffix>` of `directory` other than the paths `keep`."""
    names = {os.path.basename(path) for path in keep}
    try:
        found = os.listdir(directory)
    except OSError:
        return
    for name in found:
        if name.startswith(prefix) and name.endswith(suffix) and name not in names:
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def _trusted(st: os.stat_result) -> bool:
    """Owned by this user and writable by no one else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _file_digest(fh, offset: int, length: int) -> bytes:
    """SHA256 of a byte range of the file, read in pieces (the page cache, not our memory)."""
    digest = hashlib.sha256()
    piece = bytearray(min(_CHUNK, length))
    view = memoryview(piece)
    fh.seek(offset)
    while length:
        got = fh.readinto(view[:min(len(piece), length)])
        if not got:
            break
        digest.update(view[:got])
        length -= got
    return digest.digest()


def save_compiled(database) -> bool:
    """Store the database again, with what the engine added to `database.compiled`."""
    if not database.fingerprint or not database.cache_dir:
        return False
    return DatabaseCache(database.cache_dir).store(database.fingerprint, database)
