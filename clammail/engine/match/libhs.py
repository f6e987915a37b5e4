"""A small ctypes binding to the system's Hyperscan library (Debian: libhyperscan5).

Only what the matcher needs, in block mode: compile many expressions (regular
or pure literal) into one database, scan a buffer with a callback, and
serialize a database so that forked compilers and the compiled-database
cache can hand it over. Debian 12 ships the library but no Python binding,
so this keeps the fast path on a plain Debian install.

Scratch space (hyperscan's per-scan working memory) belongs to one process
and one thread: `Scratch` allocates it lazily for the (pid, thread) that
scans, so worker processes forked after the build each get their own.

Buffers are handed to hs_scan without a copy (bytes, bytearray, memoryview,
mmap: anything with the buffer protocol, read-only included).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

# hs_compile.h / hs_common.h
HS_FLAG_CASELESS = 1
HS_FLAG_DOTALL = 2
HS_FLAG_SINGLEMATCH = 8
HS_MODE_BLOCK = 1
HS_SUCCESS = 0
HS_SCAN_TERMINATED = -3
HS_COMPILER_ERROR = -4

# hs_scan takes the length as an unsigned int: longer buffers go in pieces.
MAX_SCAN_LENGTH = (1 << 32) - 1

_ERRORS = {
    -1: "invalid parameter", -2: "out of memory", -3: "scan terminated",
    -4: "compile error", -5: "database built by another version of the library",
    -6: "database built for another platform", -7: "database built for another mode",
    -8: "bad alignment", -9: "the allocator returned unaligned memory",
    -10: "scratch space in use", -11: "CPU not supported (SSSE3 needed)",
    -12: "buffer too small", -13: "unknown error",
}

LIBRARY = "libhs.so.5"


class HyperscanError(Exception):
    def __init__(self, message: str, expression: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        # A compile error: the index of the expression in the lists given, and why.
        self.expression = expression
        self.reason = reason


class _CompileError(ctypes.Structure):
    _fields_ = [("message", ctypes.c_char_p), ("expression", ctypes.c_int)]


# int (*)(unsigned int id, unsigned long long from, unsigned long long to,
#         unsigned int flags, void *context)
MATCH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint, ctypes.c_ulonglong,
                                  ctypes.c_ulonglong, ctypes.c_uint, ctypes.c_void_p)

_P = ctypes.c_void_p
_PP = ctypes.POINTER(ctypes.c_void_p)


def _load():
    """The library with its prototypes set, or None (not installed, or the CPU lacks SSSE3)."""
    try:
        lib = ctypes.CDLL(LIBRARY)
    except OSError:
        return None
    lib.hs_valid_platform.restype = ctypes.c_int
    if lib.hs_valid_platform() != HS_SUCCESS:
        return None
    lib.hs_version.restype = ctypes.c_char_p
    error_pp = ctypes.POINTER(ctypes.POINTER(_CompileError))
    uints = ctypes.POINTER(ctypes.c_uint)
    prototypes = {
        "hs_compile_multi": [ctypes.POINTER(ctypes.c_char_p), uints, uints, ctypes.c_uint,
                             ctypes.c_uint, _P, _PP, error_pp],
        "hs_compile_lit_multi": [ctypes.POINTER(ctypes.c_char_p), uints, uints,
                                 ctypes.POINTER(ctypes.c_size_t), ctypes.c_uint,
                                 ctypes.c_uint, _P, _PP, error_pp],
        "hs_free_compile_error": [ctypes.POINTER(_CompileError)],
        "hs_free_database": [_P],
        "hs_alloc_scratch": [_P, _PP],
        "hs_free_scratch": [_P],
        "hs_scan": [_P, _P, ctypes.c_uint, ctypes.c_uint, _P, MATCH_CALLBACK, _P],
        "hs_serialize_database": [_P, _PP, ctypes.POINTER(ctypes.c_size_t)],
        "hs_deserialize_database": [ctypes.c_char_p, ctypes.c_size_t, _PP],
        "hs_database_size": [_P, ctypes.POINTER(ctypes.c_size_t)],
    }
    for name, argtypes in prototypes.items():
        function = getattr(lib, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int
    return lib


_lib = _load()
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
_libc.free.argtypes = [_P]
_libc.free.restype = None


def available() -> bool:
    return _lib is not None


def version() -> str:
    return _lib.hs_version().decode("ascii", "replace") if _lib else ""


def _check(code: int, what: str) -> None:
    if code != HS_SUCCESS:
        raise HyperscanError(f"{what}: {_ERRORS.get(code, f'error {code}')}")


def _uints(values: Sequence[int]):
    return (ctypes.c_uint * len(values))(*values)


class Database:
    """One block-mode database; freed with the object."""

    __slots__ = ("_handle", "__weakref__")

    def __init__(self, handle: int) -> None:
        self._handle = handle

    @classmethod
    def compile(cls, expressions: Sequence[bytes], flags: Sequence[int],
                ids: Sequence[int], literal: bool = False) -> Database:
        """Compile regular expressions (hs_compile_multi) or, with `literal`, byte
        strings matched as they are, NULs included (hs_compile_lit_multi)."""
        if _lib is None:
            raise HyperscanError(f"{LIBRARY} is not available")
        count = len(expressions)
        texts = (ctypes.c_char_p * count)(*expressions)
        handle = ctypes.c_void_p()
        error = ctypes.POINTER(_CompileError)()
        if literal:
            lengths = (ctypes.c_size_t * count)(*map(len, expressions))
            code = _lib.hs_compile_lit_multi(texts, _uints(flags), _uints(ids), lengths, count,
                                             HS_MODE_BLOCK, None, ctypes.byref(handle),
                                             ctypes.byref(error))
        else:
            code = _lib.hs_compile_multi(texts, _uints(flags), _uints(ids), count,
                                         HS_MODE_BLOCK, None, ctypes.byref(handle),
                                         ctypes.byref(error))
        if code == HS_COMPILER_ERROR and error:
            message = error.contents.message.decode("utf-8", "replace")
            index = error.contents.expression
            _lib.hs_free_compile_error(error)
            if 0 <= index < count:
                raise HyperscanError(f"hyperscan compile error (expression {ids[index]}): "
                                     f"{message}", index, message)
            raise HyperscanError(f"hyperscan compile error: {message}")
        _check(code, "hs_compile")
        return cls(handle.value)

    @classmethod
    def deserialize(cls, blob: bytes) -> Database:
        if _lib is None:
            raise HyperscanError(f"{LIBRARY} is not available")
        handle = ctypes.c_void_p()
        _check(_lib.hs_deserialize_database(blob, len(blob), ctypes.byref(handle)),
               "hs_deserialize_database")
        return cls(handle.value)

    def serialize(self) -> bytes:
        data = ctypes.c_void_p()
        length = ctypes.c_size_t()
        _check(_lib.hs_serialize_database(self._handle, ctypes.byref(data), ctypes.byref(length)),
               "hs_serialize_database")
        try:
            return ctypes.string_at(data.value, length.value)
        finally:
            _libc.free(data.value)  # allocated by the library's default (malloc) allocator

    def size(self) -> int:
        length = ctypes.c_size_t()
        _check(_lib.hs_database_size(self._handle, ctypes.byref(length)), "hs_database_size")
        return length.value

    def __reduce__(self):
        return Database.deserialize, (self.serialize(),)

    def __del__(self) -> None:
        if self._handle and _lib is not None:
            _lib.hs_free_database(self._handle)
            self._handle = None


class Scratch:
    """Scratch space big enough for a set of databases, one per (process, thread)."""

    def __init__(self, databases: Sequence[Database]) -> None:
        self._databases = list(databases)
        self._local = threading.local()

    def get(self) -> int:
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:
            # Each thread needs its own, and a forked worker gets a fresh one rather
            # than copy-on-write pages of its parent's; allocating is cheap.
            handle = ctypes.c_void_p()
            for database in self._databases:
                _check(_lib.hs_alloc_scratch(database._handle, ctypes.byref(handle)),
                       "hs_alloc_scratch")
            local.pid, local.handle = pid, handle.value
            local.owner = _ScratchHandle(handle.value)
        return local.handle


class _ScratchHandle:
    __slots__ = ("_handle", "_pid")

    def __init__(self, handle: int) -> None:
        self._handle = handle
        self._pid = os.getpid()

    def __del__(self) -> None:
        if self._handle and _lib is not None and os.getpid() == self._pid:
            _lib.hs_free_scratch(self._handle)


def scan(database: Database, data, scratch: Scratch,
         on_match: Callable[[int, int, int, int, object], int]) -> None:
    """Scan `data` (any buffer) with `on_match(id, from, to, flags, context)`;
    a true return stops the scan. `on_match` must be a MATCH_CALLBACK, and
    `scratch` made for (at least) this database."""
    view = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    size = view.size
    if not size:
        return
    address = view.ctypes.data
    if size > MAX_SCAN_LENGTH:
        raise HyperscanError("buffer longer than hs_scan takes")
    code = _lib.hs_scan(database._handle, address, size, 0, scratch.get(), on_match, None)
    if code not in (HS_SUCCESS, HS_SCAN_TERMINATED):
        _check(code, "hs_scan")
