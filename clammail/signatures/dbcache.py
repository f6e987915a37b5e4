"""The compiled-database cache: restart without parsing unchanged databases again.

A loaded `Database` (hash indexes as numpy arrays, the parsed body and
logical signatures, and whatever compiled forms the engine put into
`Database.compiled`) is pickled into one file under a cache directory.
Its name is a fingerprint of everything the load depended on: each
database file's path, size, mtime and inode (a directory's listing
included), the load options, the engine level, the clammail, Python and
numpy versions. A changed file gives a new fingerprint, so a stale copy is
never used; older copies are removed when a new one is written.

A cache file is trusted only if it is ours: owned by this user, not
writable by anyone else, in a directory that is not either, and its
SHA256 (stored in its header) matches; anything else is ignored (and a
corrupt file removed), and the caller loads from the databases.

How the engine uses it: `load_database(paths, options, cache_dir=DIR)`
returns a Database with `fingerprint` and `cache_dir` set. The engine
looks for its compiled matcher in `database.compiled` (e.g.
`database.compiled.get("body_matcher")`); when it is missing it builds it,
stores it there and calls `save_compiled(database)`, so the next start
finds both. What goes into `compiled` must be picklable.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import stat
import sys
import tempfile

from clammail import FLEVEL, __version__
from clammail.signatures.common import LoadOptions

log = logging.getLogger(__name__)

MAGIC = b"CLAMMAIL-DB-CACHE\n"
FORMAT = 1
_PREFIX = "db-"
_SUFFIX = ".cache"


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


def fingerprint(paths: list[str], options: LoadOptions, keys=None) -> str | None:
    """The cache key of loading these paths with these options; None if a path is unreadable."""
    import numpy

    parts = [f"format={FORMAT}", f"clammail={__version__}", f"flevel={FLEVEL}",
             f"python={sys.version_info[:3]}", f"numpy={numpy.__version__}",
             f"options={options!r}", f"keys={keys!r}"]
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
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{_PREFIX}{key}{_SUFFIX}")

    def _trusted(self, st: os.stat_result) -> bool:
        return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)

    def load(self, key: str):
        """The cached Database for this key, or None (missing, foreign or corrupt)."""
        path = self._path(key)
        try:
            if not self._trusted(os.stat(self.directory)):
                log.warning("cache directory %s is writable by others: not used", self.directory)
                return None
            with open(path, "rb") as fh:
                if not self._trusted(os.fstat(fh.fileno())):
                    log.warning("cache file %s is not ours alone: not used", path)
                    return None
                data = fh.read()
        except OSError:
            return None
        header_end = len(MAGIC) + 32
        if len(data) < header_end or not data.startswith(MAGIC):
            self._discard(path, "not a cache file")
            return None
        expected = data[len(MAGIC):header_end]
        payload = memoryview(data)[header_end:]
        if hashlib.sha256(payload).digest() != expected:
            self._discard(path, "checksum mismatch")
            return None
        try:
            database = pickle.loads(payload)
        except Exception as exc:  # a payload we wrote but cannot read back (code changed)
            self._discard(path, f"unreadable ({exc.__class__.__name__})")
            return None
        database.fingerprint = key
        database.cache_dir = self.directory
        return database

    def store(self, key: str, database) -> bool:
        """Write the Database for this key; False (and no cache) if that is not possible."""
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            payload = pickle.dumps(database, protocol=pickle.HIGHEST_PROTOCOL)
            fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        except (OSError, pickle.PicklingError, TypeError, AttributeError) as exc:
            log.info("database cache not written: %s", exc)
            return False
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC)
                fh.write(hashlib.sha256(payload).digest())
                fh.write(payload)
            os.chmod(temp, 0o600)
            os.replace(temp, self._path(key))
        except OSError as exc:
            log.info("database cache not written: %s", exc)
            try:
                os.unlink(temp)
            except OSError:
                pass
            return False
        self._remove_others(key)
        return True

    def _remove_others(self, key: str) -> None:
        keep = os.path.basename(self._path(key))
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        for name in names:
            if name.startswith(_PREFIX) and name.endswith(_SUFFIX) and name != keep:
                try:
                    os.unlink(os.path.join(self.directory, name))
                except OSError:
                    pass

    def _discard(self, path: str, why: str) -> None:
        log.warning("database cache %s ignored: %s", path, why)
        try:
            os.unlink(path)
        except OSError:
            pass


def save_compiled(database) -> bool:
    """Store the database again, with what the engine added to `database.compiled`."""
    if not database.fingerprint or not database.cache_dir:
        return False
    return DatabaseCache(database.cache_dir).store(database.fingerprint, database)
