"""Microsoft Compiled HTML Help (CL_TYPE_MSCHM), opened with the library ClamAV uses.

ClamAV 1.4.6 hands CHM files to libmspack (libclamav/libmspack.c,
cli_scanmschm): `mschm_decompressor.open` reads the ITSF/ITSP headers and
the PMGL directory chunks, and `extract` copies a section-0 file or
decodes a section-1 file from the LZX-compressed content stream (reset
table, 32 KiB frames). Debian builds ClamAV against the system libmspack
(libmspack0), and clammail loads that same library with ctypes, giving it
the CHM file from memory through libmspack's I/O callbacks. The LZX decoder
is therefore the oracle's own, in C.

ClamAV's rules around it, kept here:

- the files are those libmspack lists (system files "::..." are not
  scanned), in directory order;
- before each file, an exhausted MaxScanSize ends the CHM silently;
- a file is written up to MaxFileSize (or what is left of MaxScanSize,
  whichever is smaller; 4 GiB with neither) and silently cut there; a
  file that fails to decompress is scanned as far as it got.

Bounds: the output of one file stops at that cut (clammail then tells
libmspack to stop, where ClamAV would decode on and discard), the
callbacks check MaxScanTime, and libmspack itself refuses more than
100 000 directory chunks or chunks over 8 KiB.

Without libmspack (not installed), CHM files are not opened; their bytes
are still matched like any file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Iterator

from clammail.unpack.base import Extracted, ScanTimeout, UnpackContext

log = logging.getLogger(__name__)

# With MaxFileSize and MaxScanSize off ClamAV lets a file grow to 4 GiB on
# disk; clammail holds it in memory and stops one file here.
MEMBER_CAP = 1 << 30

_READ, _WRITE = 0, 1  # MSPACK_SYS_OPEN_READ / _WRITE
_SEEK_START, _SEEK_CUR, _SEEK_END = 0, 1, 2

_off_t = ctypes.c_int64
_OPEN = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
_CLOSE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_READWRITE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
_SEEK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, _off_t, ctypes.c_int)
_TELL = ctypes.CFUNCTYPE(_off_t, ctypes.c_void_p)
_MESSAGE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p)
_ALLOC = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_FREE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_COPY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


class _System(ctypes.Structure):
    """struct mspack_system (mspack.h)."""

    _fields_ = [
        ("open", _OPEN), ("close", _CLOSE), ("read", _READWRITE), ("write", _READWRITE),
        ("seek", _SEEK), ("tell", _TELL), ("message", _MESSAGE), ("alloc", _ALLOC),
        ("free", _FREE), ("copy", _COPY), ("null_ptr", ctypes.c_void_p),
    ]


class _Decompressor(ctypes.Structure):
    """struct mschm_decompressor: the functions we call."""

    _fields_ = [
        ("open", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)),
        ("close", ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)),
        ("extract", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                     ctypes.c_void_p)),
        ("last_error", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)),
    ]


class _File(ctypes.Structure):
    """struct mschmd_file."""


_File._fields_ = [
    ("next", ctypes.POINTER(_File)), ("section", ctypes.c_void_p), ("offset", _off_t),
    ("length", _off_t), ("filename", ctypes.c_char_p),
]


class _Header(ctypes.Structure):
    """The start of struct mschmd_header, up to the list of files."""

    _fields_ = [
        ("version", ctypes.c_uint), ("timestamp", ctypes.c_uint), ("language", ctypes.c_uint),
        ("filename", ctypes.c_void_p), ("length", _off_t), ("files", ctypes.POINTER(_File)),
    ]


class _Library:
    """libmspack and libc, loaded once."""

    def __init__(self):
        path = ctypes.util.find_library("mspack") or "libmspack.so.0"
        self.mspack = ctypes.CDLL(path)
        self.mspack.mspack_create_chm_decompressor.restype = ctypes.POINTER(_Decompressor)
        self.mspack.mspack_create_chm_decompressor.argtypes = [ctypes.POINTER(_System)]
        self.mspack.mspack_destroy_chm_decompressor.argtypes = [ctypes.POINTER(_Decompressor)]
        self.libc = ctypes.CDLL(None)
        self.libc.calloc.restype = ctypes.c_void_p
        self.libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
        self.free = _FREE(ctypes.cast(self.libc.free, ctypes.c_void_p).value)


_library: _Library | None = None
_library_error: str | None = None


def _load() -> _Library | None:
    global _library, _library_error
    if _library is None and _library_error is None:
        try:
            _library = _Library()
        except (OSError, AttributeError) as exc:
            _library_error = str(exc)
            log.warning("CHM files are not opened: libmspack is not available (%s)", exc)
    return _library


class _Session:
    """One CHM file seen through libmspack's I/O callbacks: the input from
    memory, each extracted file into a bytearray with a size cap."""

    def __init__(self, lib: _Library, data, ctx: UnpackContext):
        self.ctx = ctx
        self.size = len(data)
        self.source = (ctypes.c_char * max(1, self.size)).from_buffer_copy(data if self.size
                                                                           else b"\0")
        self.base = ctypes.addressof(self.source)
        self.in_name = ctypes.create_string_buffer(b"chm-in")
        self.out_name = ctypes.create_string_buffer(b"chm-out")
        self.handles: dict[int, list] = {}  # handle -> [kind, position]
        self.next_handle = 0x1000
        self.output = bytearray()
        self.cap = 0
        self.timed_out = False
        self.system = _System(
            _OPEN(self._open), _CLOSE(self._close), _READWRITE(self._read),
            _READWRITE(self._write), _SEEK(self._seek), _TELL(self._tell),
            _MESSAGE(self._message), _ALLOC(self._alloc), lib.free, _COPY(self._copy), None,
        )
        self.lib = lib

    # callbacks: never raise (an exception cannot cross into C)

    def _open(self, _self, name, mode):
        if name == ctypes.addressof(self.in_name) and mode == _READ:
            kind = "in"
        elif name == ctypes.addressof(self.out_name) and mode == _WRITE:
            kind = "out"
        else:
            return None
        handle = self.next_handle
        self.next_handle += 16
        self.handles[handle] = [kind, 0]
        return handle

    def _close(self, handle):
        self.handles.pop(handle, None)

    def _deadline(self) -> bool:
        try:
            self.ctx.check()
        except ScanTimeout:
            self.timed_out = True
        return self.timed_out

    def _read(self, handle, buffer, count):
        state = self.handles.get(handle)
        if state is None or state[0] != "in" or count < 0 or self._deadline():
            return -1
        position = state[1]
        if position > self.size:
            return -1
        count = min(count, self.size - position)
        if count:
            ctypes.memmove(buffer, self.base + position, count)
        state[1] = position + count
        return count

    def _write(self, handle, buffer, count):
        state = self.handles.get(handle)
        if state is None or state[0] != "out" or count < 0 or self._deadline():
            return -1
        room = self.cap - len(self.output)
        if count > room:
            # ClamAV keeps the first `cap` bytes and decodes on for nothing;
            # clammail keeps the same bytes and stops here.
            self.output += ctypes.string_at(buffer, room)
            return -1
        self.output += ctypes.string_at(buffer, count)
        return count

    def _seek(self, handle, offset, mode):
        state = self.handles.get(handle)
        if state is None or state[0] != "in":
            return -1
        base = {_SEEK_START: 0, _SEEK_CUR: state[1], _SEEK_END: self.size}.get(mode)
        if base is None:
            return -1
        position = base + offset
        if position < 0 or position > self.size:
            return -1
        state[1] = position
        return 0

    def _tell(self, handle):
        state = self.handles.get(handle)
        return -1 if state is None else state[1]

    def _message(self, _handle, _format):
        return None

    def _alloc(self, _self, size):
        return self.lib.libc.calloc(1, size)

    def _copy(self, src, dst, count):
        ctypes.memmove(dst, src, count)

    # the ClamAV loop

    def files(self) -> Iterator[Extracted]:
        mspack = self.lib.mspack
        decompressor = mspack.mspack_create_chm_decompressor(ctypes.byref(self.system))
        if not decompressor:
            return
        functions = decompressor.contents
        header = None
        try:
            header = functions.open(ctypes.cast(decompressor, ctypes.c_void_p),
                                    ctypes.addressof(self.in_name))
            if self.timed_out:
                raise ScanTimeout()
            if not header:
                self.ctx.debug("CHM: libmspack could not open the file")
                return
            entry = ctypes.cast(header, ctypes.POINTER(_Header)).contents.files
            while entry:
                info = entry.contents
                left = self.ctx.scan_size_left()
                if left is not None and left <= 0:
                    return  # ClamAV: scan size used up, the CHM ends without a heuristic
                self.cap = _output_cap(self.ctx)
                self.output = bytearray()
                error = functions.extract(ctypes.cast(decompressor, ctypes.c_void_p),
                                          ctypes.cast(entry, ctypes.c_void_p),
                                          ctypes.addressof(self.out_name))
                if self.timed_out:
                    raise ScanTimeout()
                name = (info.filename or b"").decode("utf-8", "replace")
                if error:
                    self.ctx.debug(f"CHM: {name}: libmspack error {error}")
                if self.output:
                    yield Extracted(bytes(self.output), name=name)
                entry = info.next
        finally:
            if header:
                functions.close(ctypes.cast(decompressor, ctypes.c_void_p), header)
            mspack.mspack_destroy_chm_decompressor(decompressor)


def _output_cap(ctx: UnpackContext) -> int:
    """ClamAV's max_size for one extracted file."""
    limits = [MEMBER_CAP]
    max_file = ctx.option("MaxFileSize")
    if max_file:
        limits.append(max_file)
    left = ctx.scan_size_left()
    if left is not None:
        limits.append(left)
    return min(limits)


def unpack_chm(data, ctx: UnpackContext) -> Iterator[Extracted]:
    lib = _load()
    if lib is None:
        return
    yield from _Session(lib, data, ctx).files()
