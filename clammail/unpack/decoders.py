"""Streaming decompressors with ClamAV's partial-output behaviour, for the installers.

libclamav's installer parsers (NSIS, InstallShield) hand everything a
decompressor produced before a corrupt spot to the scan, not nothing: these
wrappers over Python's zlib and lzma do the same, and never produce more
than the caller asks for (decompression bombs stop at the cap).

`Decoder.read(n)` returns up to `n` more bytes of output, pulling input from
the compressed buffer as needed; `status` tells why it returned fewer:
"end" (the stream ended), "error" (corrupt data) or "input" (input ran out).
"""

from __future__ import annotations

import lzma
import zlib

from clammail.unpack.base import UnpackContext

# Input handed to the library per call: small enough that the output lost
# with a failing call (Python returns nothing from it) stays small.
_ZLIB_STEP = 4096
_LZMA_STEP = 64
# With both MaxFileSize and MaxScanSize off, one member stops here (held in memory).
MEMBER_CAP = 1 << 30
# The dictionary liblzma allocates never needs to exceed what may be produced.
_MIN_DICT = 1 << 12


class Budget:
    """cli_checklimits as the installer parsers call it."""

    def __init__(self, ctx: UnpackContext):
        self.ctx = ctx

    def breaks(self, size: int) -> str | None:
        """The limit `size` more bytes would break (MaxScanSize first), or None."""
        ctx = self.ctx
        left = ctx.scan_size_left()
        if left is not None and (left <= 0 or size > left):
            return "MaxScanSize"
        file_limit = ctx.option("MaxFileSize")
        if file_limit and size > file_limit:
            return "MaxFileSize"
        max_files = ctx.option("MaxFiles")
        if max_files and ctx.files_scanned() >= max_files:
            return "MaxFiles"
        return None

    def refused(self, size: int) -> str | None:
        """The limit for which the engine would refuse an object of `size` bytes.
        libclamav's NSIS and InstallShield parsers stop at such an object (the
        nested scan fails with "exceeded"); the caller reports it and stops."""
        if size <= 5:
            return None
        file_limit = self.ctx.option("MaxFileSize")
        if file_limit and size > file_limit:
            return "MaxFileSize"
        left = self.ctx.scan_size_left()
        if left is not None and size > left:
            return "MaxScanSize"
        return None

    def cap(self) -> int:
        """The most one member may have: one byte more tells the engine it is too big."""
        room = min(self.ctx.max_object_size(), MEMBER_CAP)
        return room + 1


class Decoder:
    """Output of one compressed stream, read in pieces."""

    def __init__(self, data):
        self._data = memoryview(data)
        self._pos = 0  # input consumed
        self._pending = b""  # output decoded but not read yet
        self.status = ""  # "", "end", "error" or "input"

    @property
    def input_left(self) -> int:
        return len(self._data) - self._pos

    def read(self, n: int) -> bytes:
        out = [self._pending[:n]]
        self._pending = self._pending[n:]
        got = len(out[0])
        while got < n and not self.status:
            chunk = self._step(n - got)
            if chunk:
                out.append(chunk[:n - got])
                self._pending = chunk[n - got:] + self._pending
                got += len(out[-1])
        return b"".join(out)

    def _step(self, want: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError


class RawDeflate(Decoder):
    """A raw deflate stream (NSIS's zlib; InstallShield cab chunks)."""

    def __init__(self, data, wbits: int = -15):
        super().__init__(data)
        self._z = zlib.decompressobj(wbits)
        self._tail = b""
        self.error_at: int | None = None  # the input offset of the byte that failed

    @property
    def input_left(self) -> int:
        return len(self._data) - self._pos + len(self._tail)

    def _step(self, want: int) -> bytes:
        if self._z.eof:
            self.status = "end"
            return b""
        if self._tail:
            source = self._tail
            begin = self._pos - len(source)
        elif self._pos < len(self._data):
            source = bytes(self._data[self._pos:self._pos + _ZLIB_STEP])
            begin = self._pos
            self._pos += len(source)
        else:
            self.status = "input"
            return b""
        saved = self._z.copy()
        try:
            out = self._z.decompress(source, want)
        except zlib.error:
            # Again byte by byte from the state before, to keep what came
            # before the corrupt spot.
            self._z = saved
            out, failed = self._bytewise(source, want)
            self.error_at = begin + failed
            self.status = "error"
            return out
        self._tail = self._z.unconsumed_tail
        if self._z.eof:
            self.status = "end" if not out else ""
            # Bytes after the end of the stream stay unconsumed (counted once).
            self._pos -= len(self._z.unused_data)
            self._tail = b""
        return out

    def _bytewise(self, source: bytes, want: int) -> tuple[bytes, int]:
        """Output before the failing byte, and that byte's index in `source`."""
        out = bytearray()
        for i in range(len(source)):
            try:
                out += self._z.decompress(source[i:i + 1], max(1, want - len(out)))
                while self._z.unconsumed_tail and len(out) < want:
                    out += self._z.decompress(self._z.unconsumed_tail, want - len(out))
            except zlib.error:
                return bytes(out), i
            if len(out) >= want:
                break
        return bytes(out), len(source)


class Lzma1(Decoder):
    """An LZMA stream after a 5-byte properties header (NSIS, 7-Zip's format)."""

    def __init__(self, data):
        super().__init__(data)
        self._lz = None
        self._tail = b""

    def _open(self) -> bool:
        props = bytes(self._data[:5])
        if len(props) < 5 or props[0] >= 9 * 5 * 5:
            self.status = "error"
            return False
        dict_size = int.from_bytes(props[1:5], "little")
        dict_size = max(_MIN_DICT, min(dict_size, self._cap_hint))
        header = props[:1] + dict_size.to_bytes(4, "little") + b"\xff" * 8
        self._lz = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
        try:
            self._lz.decompress(header, 0)
        except lzma.LZMAError:
            self.status = "error"
            return False
        self._pos = 5
        return True

    _cap_hint = 1 << 30

    def set_cap(self, cap: int) -> None:
        """The most output anyone will read: the dictionary never needs more."""
        self._cap_hint = max(_MIN_DICT, cap)

    def _step(self, want: int) -> bytes:
        if self._lz is None and not self._open():
            return b""
        if self._lz.eof:
            self.status = "end"
            return b""
        if self._tail or not self._lz.needs_input:
            source = self._tail
        elif self._pos < len(self._data):
            source = bytes(self._data[self._pos:self._pos + _LZMA_STEP])
            self._pos += len(source)
        else:
            self.status = "input"
            return b""
        try:
            out = self._lz.decompress(source, want)
        except (lzma.LZMAError, EOFError):
            self.status = "error"
            return b""
        self._tail = b""
        if self._lz.eof:
            self._pos -= len(self._lz.unused_data)
            if not out:
                self.status = "end"
        return out
