"""Reading archives with libarchive, entry by entry and block by block.

libarchive-c's own reader API changed between the version Debian 12 ships
(2.9) and the current one (5.x), and its memory reader needs a writable
bytes-like object, which a read-only mmap of the scanned file is not. So
this module binds the dozen libarchive calls it needs directly with ctypes,
on the library libarchive-c found. Data is handed to libarchive through a
read callback in bounded chunks, and entry data comes back in blocks, so
nothing is ever decompressed beyond what the caller asks for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

ARCHIVE_EOF = 1
ARCHIVE_OK = 0
ARCHIVE_RETRY = -10
ARCHIVE_WARN = -20
ARCHIVE_FAILED = -25
ARCHIVE_FATAL = -30

AE_IFMT = 0o170000
AE_IFREG = 0o100000

# How much of the input one read callback hands to libarchive at a time.
_FEED_CHUNK = 1 << 20
# How much entry data one read asks libarchive for.
_READ_BLOCK = 1 << 16
# An entry whose header reads fail this often in a row ends the archive:
# libarchive can return ARCHIVE_FAILED forever on some corrupt inputs.
_MAX_FAILED_HEADERS = 16


class LibarchiveMissing(ImportError):
    """libarchive (the shared library) could not be loaded."""


def _load() -> ctypes.CDLL:
    path = None
    try:
        from libarchive import ffi  # libarchive-c: honours $LIBARCHIVE

        path = getattr(ffi, "libarchive_path", None)
    except Exception:  # noqa: BLE001 - any failure: look for the library ourselves
        path = None
    path = path or ctypes.util.find_library("archive")
    if not path:
        raise LibarchiveMissing("libarchive is not installed")
    # A handle of our own: the prototypes set below must not change the ones
    # libarchive-c sets on its handle.
    lib = ctypes.CDLL(path)
    vp, ip, i64, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_ssize_t

    def proto(name, restype, *argtypes):
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = list(argtypes)

    proto("archive_read_new", vp)
    proto("archive_read_free", ip, vp)
    proto("archive_read_support_filter_all", ip, vp)
    proto("archive_read_support_filter_none", ip, vp)
    proto("archive_read_support_format_raw", ip, vp)
    proto("archive_read_support_format_empty", ip, vp)
    proto("archive_read_set_read_callback", ip, vp, _READ_CB)
    proto("archive_read_set_seek_callback", ip, vp, _SEEK_CB)
    proto("archive_read_set_skip_callback", ip, vp, _SKIP_CB)
    proto("archive_read_set_callback_data", ip, vp, vp)
    proto("archive_read_open1", ip, vp)
    proto("archive_read_next_header", ip, vp, ctypes.POINTER(vp))
    proto("archive_read_data", sz, vp, vp, ctypes.c_size_t)
    proto("archive_read_data_skip", ip, vp)
    proto("archive_error_string", ctypes.c_char_p, vp)
    proto("archive_format_name", ctypes.c_char_p, vp)
    proto("archive_entry_pathname", ctypes.c_char_p, vp)
    proto("archive_entry_size", i64, vp)
    proto("archive_entry_size_is_set", ip, vp)
    proto("archive_entry_filetype", ctypes.c_uint, vp)
    proto("archive_entry_is_encrypted", ip, vp)
    return lib


_READ_CB = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.POINTER(ctypes.c_void_p))
_SEEK_CB = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_int64, ctypes.c_int)
_SKIP_CB = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

_lib: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


class ArchiveBroken(Exception):
    """libarchive gave up on the input (a fatal error): what it said."""


@dataclass
class Entry:
    """One archive member as libarchive's header describes it."""

    name: str | None
    size: int | None  # None when the header does not say (streamed formats)
    regular: bool
    encrypted: bool


class _Feeder:
    """The read/seek/skip callbacks: serve `data` to libarchive in chunks."""

    def __init__(self, data):
        self._base = memoryview(data)
        self.view = self._base.cast("B")
        self.pos = 0
        self.buffer = ctypes.create_string_buffer(_FEED_CHUNK)
        self.read_cb = _READ_CB(self._read)
        self.seek_cb = _SEEK_CB(self._seek)
        self.skip_cb = _SKIP_CB(self._skip)

    def _read(self, _archive, _client, out):
        chunk = self.view[self.pos:self.pos + _FEED_CHUNK]
        n = len(chunk)
        ctypes.memmove(self.buffer, bytes(chunk), n)
        self.pos += n
        out[0] = ctypes.cast(self.buffer, ctypes.c_void_p)
        return n

    def _seek(self, _archive, _client, offset, whence):
        base = {0: 0, 1: self.pos, 2: len(self.view)}.get(whence)
        if base is None or not 0 <= base + offset <= len(self.view):
            return ARCHIVE_FATAL
        self.pos = base + offset
        return self.pos

    def _skip(self, _archive, _client, request):
        step = max(0, min(request, len(self.view) - self.pos))
        self.pos += step
        return step

    def release(self) -> None:
        # A view left open would keep the caller from closing its mmap.
        self.view.release()
        self._base.release()


class ArchiveReader:
    """Iterate over the members of an archive held in memory.

    `formats` names libarchive's format readers to enable ("zip", "7zip",
    "rar", "raw", ...); filters (gzip, bzip2, xz, ...) are all enabled
    unless `filters` is False.
    """

    def __init__(self, data, formats: tuple[str, ...], filters: bool = True):
        self._lib = library()
        self._feeder = _Feeder(data)
        self._archive = self._lib.archive_read_new()
        if not self._archive:
            raise MemoryError("archive_read_new failed")
        lib, a = self._lib, self._archive
        if filters:
            lib.archive_read_support_filter_all(a)
        else:
            lib.archive_read_support_filter_none(a)
        for fmt in formats:
            fn = getattr(lib, f"archive_read_support_format_{fmt}")
            fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_void_p]
            fn(a)
        lib.archive_read_set_read_callback(a, self._feeder.read_cb)
        lib.archive_read_set_seek_callback(a, self._feeder.seek_cb)
        lib.archive_read_set_skip_callback(a, self._feeder.skip_cb)
        lib.archive_read_set_callback_data(a, None)
        if lib.archive_read_open1(a) != ARCHIVE_OK:
            message = self.error()
            self.close()
            raise ArchiveBroken(message)
        self._entry = ctypes.c_void_p()

    def error(self) -> str:
        if not self._archive:
            return "closed"
        text = self._lib.archive_error_string(self._archive)
        return text.decode("utf-8", "replace") if text else "unknown libarchive error"

    def format_name(self) -> str:
        name = self._lib.archive_format_name(self._archive)
        return name.decode("ascii", "replace") if name else ""

    def entries(self) -> Iterator[Entry]:
        """Each member's header; read its data with `read` before the next one."""
        lib, a = self._lib, self._archive
        failures = 0
        while True:
            rc = lib.archive_read_next_header(a, ctypes.byref(self._entry))
            if rc == ARCHIVE_EOF:
                return
            if rc == ARCHIVE_RETRY:
                failures += 1
                if failures > _MAX_FAILED_HEADERS:
                    raise ArchiveBroken(self.error())
                continue
            if rc == ARCHIVE_FATAL:
                raise ArchiveBroken(self.error())
            if rc == ARCHIVE_FAILED:
                # This member cannot be read; libarchive may be able to go on.
                failures += 1
                if failures > _MAX_FAILED_HEADERS:
                    raise ArchiveBroken(self.error())
                log.debug("libarchive: skipping a member: %s", self.error())
                continue
            failures = 0
            yield self._describe(self._entry)

    def _describe(self, entry) -> Entry:
        lib = self._lib
        raw = lib.archive_entry_pathname(entry)
        name = raw.decode("utf-8", "surrogateescape") if raw is not None else None
        size = lib.archive_entry_size(entry) if lib.archive_entry_size_is_set(entry) else None
        regular = (lib.archive_entry_filetype(entry) & AE_IFMT) == AE_IFREG
        return Entry(name, size, regular, bool(lib.archive_entry_is_encrypted(entry)))

    def read(self, limit: int) -> tuple[bytes, bool, str | None]:
        """The current member's data, at most `limit` bytes.

        Returns (data, more, error): `more` is True when the member has data
        beyond `limit`; `error` is libarchive's message when reading failed
        part way (the data read until then is still returned).
        """
        lib, a = self._lib, self._archive
        chunks: list[bytes] = []
        total = 0
        block = ctypes.create_string_buffer(_READ_BLOCK)
        warnings = 0
        while True:
            want = min(_READ_BLOCK, limit - total + 1)
            n = lib.archive_read_data(a, block, want)
            if n == 0:
                return b"".join(chunks), False, None
            if n < 0:
                warnings += 1
                if n == ARCHIVE_WARN and warnings <= _MAX_FAILED_HEADERS:
                    continue
                return b"".join(chunks), False, self.error()
            chunks.append(block.raw[:n])
            total += n
            if total > limit:
                data = b"".join(chunks)
                return data[:limit], True, None

    def close(self) -> None:
        if self._archive:
            self._lib.archive_read_free(self._archive)
            self._archive = None
            self._feeder.release()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
