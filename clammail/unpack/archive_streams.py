"""Single compressed streams: gzip, bzip2, xz (and, as extras, lzma and zstd).

Each function returns the decompressed data, at most `cap` bytes, and
whether there was more; None when ClamAV 1.4.6 would scan nothing. What
ClamAV does with imperfect streams, measured with clamscan:

- gzip: every member is decompressed, one after the other; data after the
  last member is ignored; a stream cut short or failing its CRC is scanned
  as far as it decompressed.
- bzip2: only the first stream; a stream cut short or corrupt gives nothing
  (ClamAV scans the garbage a corrupt block decodes to: not reproduced).
- xz: every stream; damaged compressed data, a cut stream or a damaged
  first header give nothing; damage after a block's data ended (its check,
  the index, the next header) ends the file there and what was decoded is
  scanned (`xz_blocks`).
"""

from __future__ import annotations

import bz2
import ctypes
import ctypes.util
import functools
import hashlib
import lzma
import struct
import zlib

from clammail.unpack.base import first_bytes

# Input handed to a decoder per call: small, so that the output lost when a
# call fails on bad data stays small too.
_FEED = 512
# Input handed to liblzma per call.
_LZMA_FEED = 1 << 16


def _gzip_header_end(raw: bytes, start: int) -> int | None:
    """Offset where the deflate data of the gzip member at `start` begins."""
    if len(raw) < start + 10 or raw[start:start + 2] != b"\x1f\x8b" or raw[start + 2] != 8:
        return None
    flags = raw[start + 3]
    pos = start + 10
    if flags & 0x04:  # FEXTRA
        if pos + 2 > len(raw):
            return None
        (extra,) = struct.unpack_from("<H", raw, pos)
        pos += 2 + extra
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = raw.find(b"\0", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return pos if pos <= len(raw) else None


def gunzip(data, cap: int) -> tuple[bytes, bool] | None:
    raw = bytes(data)
    out = bytearray()
    start = 0
    while True:
        pos = _gzip_header_end(raw, start)
        if pos is None:
            break
        decoder = zlib.decompressobj(-15)
        try:
            while pos < len(raw) and not decoder.eof and len(out) <= cap:
                out += decoder.decompress(raw[pos:pos + _FEED], cap + 1 - len(out))
                pos += _FEED
                while decoder.unconsumed_tail and len(out) <= cap:
                    out += decoder.decompress(decoder.unconsumed_tail, cap + 1 - len(out))
        except zlib.error:
            break  # bad data: scan what came out before it
        if len(out) > cap or not decoder.eof:
            break
        # The next member starts after this one's 8-byte trailer.
        start = min(pos, len(raw)) - len(decoder.unused_data) + 8
    if not out:
        return None
    return first_bytes(out, cap)


def bunzip2(data, cap: int) -> tuple[bytes, bool] | None:
    decoder = bz2.BZ2Decompressor()
    out = bytearray()
    raw = memoryview(data)
    pos = 0
    try:
        while len(out) <= cap and not decoder.eof:
            if decoder.needs_input:
                if pos >= len(raw):
                    return None  # cut short
                chunk = bytes(raw[pos:pos + (1 << 16)])
                pos += len(chunk)
            else:
                chunk = b""
            out += decoder.decompress(chunk, cap + 1 - len(out))
    except (OSError, ValueError, EOFError):
        return None
    return first_bytes(out, cap)


_XZ_MAGIC = b"\xfd7zXZ\x00"


def unxz(data, cap: int) -> tuple[bytes, bool] | None:
    return _lzma_streams(data, cap, lzma.FORMAT_XZ, _XZ_MAGIC)


def unlzma(data, cap: int) -> tuple[bytes, bool] | None:
    """A bare .lzma (LZMA "alone") stream: not opened by ClamAV 1.4.6 (an extra)."""
    return _lzma_streams(data, cap, lzma.FORMAT_ALONE, None)


def _lzma_streams(data, cap: int, fmt: int, magic: bytes | None) -> tuple[bytes, bool] | None:
    raw = bytes(data)
    view = memoryview(raw)  # slices without copies: a file may hold many streams
    out = bytearray()
    start = 0
    while True:
        decoder = lzma.LZMADecompressor(fmt)
        pos = start
        try:
            while len(out) <= cap and not decoder.eof:
                if decoder.needs_input:
                    if pos >= len(raw):
                        return None  # cut short
                    chunk = view[pos:pos + _LZMA_FEED]
                    pos += len(chunk)
                else:
                    chunk = b""
                out += decoder.decompress(chunk, cap + 1 - len(out))
        except lzma.LZMAError:
            salvaged = (xz_blocks(view[start:], cap + 1 - len(out), after_stream=start > 0)
                        if magic == _XZ_MAGIC else None)
            if salvaged is None:
                return None
            out += salvaged  # and ClamAV's decoder ends there
            break
        if len(out) > cap:
            break
        end = pos - len(decoder.unused_data)
        following = end
        while following < len(raw) and raw[following] == 0:
            following += 1  # xz allows zero padding between streams
        rest = view[following:following + len(magic or b"")]
        if magic is not None and 0 < len(rest) < len(magic) and magic.startswith(rest):
            return None  # the next stream's header cut short: ClamAV waits for more input
        if magic is None or rest != magic:
            break
        start = following
    return first_bytes(out, cap)


# -- xz blocks decoded one by one -----------------------------------------

# The check's size by check type (xz file format 1.1.0, 2.1.1.2).
_XZ_CHECK_SIZES = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64]
_XZ_FILTERS = {0x21: lzma.FILTER_LZMA2, 0x03: lzma.FILTER_DELTA, 0x04: lzma.FILTER_X86,
               0x05: lzma.FILTER_POWERPC, 0x06: lzma.FILTER_IA64, 0x07: lzma.FILTER_ARM,
               0x08: lzma.FILTER_ARMTHUMB, 0x09: lzma.FILTER_SPARC}


def xz_blocks(raw: memoryview, cap: int, after_stream: bool) -> bytes | None:
    """The xz stream at the start of `raw` as ClamAV's decoder takes it, for a stream liblzma refuses.

    ClamAV's decoder (LZMA SDK) reports the end of the data, and ClamAV
    scans what was decoded, when an error comes after a block's compressed
    data ended: a damaged block check, padding, index or footer, or a
    damaged header of the next block or stream (`after_stream`: a stream
    ended just before this one). Damaged compressed data, a header error
    before any block ended, or input that stops short give nothing (None).
    At most `cap` bytes.
    """
    ended = after_stream
    if len(raw) < 12 or raw[:6] != _XZ_MAGIC or zlib.crc32(raw[6:8]) != int.from_bytes(raw[8:12], "little"):
        return b"" if ended else None
    check_type = raw[7] & 0x0F
    check_size = _XZ_CHECK_SIZES[check_type]
    out = bytearray()
    pos = 12
    while pos < len(raw) and len(out) < cap:
        if raw[pos] == 0:
            return bytes(out)  # the index: the damage is in it or after it
        header_size = (raw[pos] + 1) * 4
        header = raw[pos:pos + header_size]
        # The LZMA SDK acts on a header or a check it has read only when
        # another byte of input follows it; without one it waits for more
        # (and ClamAV ends with nothing).
        if pos + header_size >= len(raw):
            return None
        filters = _xz_filters(header)
        if zlib.crc32(header[:-4]) != int.from_bytes(header[-4:], "little") or filters is None:
            return bytes(out) if ended else None
        decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
        block_start = len(out)
        data_start = fed = pos + header_size
        try:
            while not decoder.eof and len(out) < cap:
                if decoder.needs_input:
                    if fed >= len(raw):
                        break
                    chunk = raw[fed:fed + _LZMA_FEED]
                    fed += len(chunk)
                else:
                    chunk = b""
                out += decoder.decompress(chunk, cap - len(out))
        except lzma.LZMAError:
            return None
        if not decoder.eof:
            return bytes(out) if len(out) >= cap else None
        ended = True
        packed = fed - data_start - len(decoder.unused_data)
        pos = data_start + packed
        padding, pos = raw[pos:pos + (-packed % 4)], pos + (-packed % 4)
        check, pos = raw[pos:pos + check_size], pos + check_size
        if pos >= len(raw):
            return None
        if bytes(padding).strip(b"\0") or not _xz_check_matches(check_type, check, bytes(out[block_start:])):
            return bytes(out)
    return bytes(out) if len(out) >= cap else None


def _xz_check_matches(check_type: int, check: bytes, data: bytes) -> bool:
    if check_type == 0x01:
        return zlib.crc32(data) == int.from_bytes(check, "little")
    if check_type == 0x04:
        crc64 = _lzma_crc64()
        return crc64 is None or crc64(data, len(data), 0) == int.from_bytes(check, "little")
    if check_type == 0x0A:
        return hashlib.sha256(data).digest() == check
    return True  # none, or a type neither decoder checks


@functools.lru_cache(maxsize=1)
def _lzma_crc64():
    """liblzma's CRC-64 (the xz default check), absent from Python's lzma module."""
    try:
        library = ctypes.CDLL("liblzma.so.5")
    except OSError:
        name = ctypes.util.find_library("lzma")  # runs ldconfig: only when the soname fails
        try:
            library = ctypes.CDLL(name) if name else None
        except OSError:
            library = None
    if library is None:
        return None
    function = library.lzma_crc64
    function.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    function.restype = ctypes.c_uint64
    return function


def _xz_filters(header: bytes) -> list[dict] | None:
    """The filter chain a block header names, for liblzma's raw decoder."""
    flags = header[1]
    pos = 2
    for present in (flags & 0x40, flags & 0x80):  # compressed, uncompressed size
        if present:
            pos = _varint(header, pos)[1]
    chain = []
    for _ in range((flags & 0x03) + 1):
        filter_id, pos = _varint(header, pos)
        size, pos = _varint(header, pos)
        props = header[pos:pos + size]
        pos += size
        if filter_id not in _XZ_FILTERS or pos > len(header) - 4:
            return None
        spec = {"id": _XZ_FILTERS[filter_id]}
        if filter_id == 0x21:
            if size != 1 or props[0] > 40:
                return None
            bits = props[0]
            spec["dict_size"] = 0xFFFFFFFF if bits == 40 else (2 | (bits & 1)) << (bits // 2 + 11)
        elif filter_id == 0x03:
            if size != 1:
                return None
            spec["dist"] = props[0] + 1
        elif size == 4:
            spec["start_offset"] = int.from_bytes(props, "little")
        chain.append(spec)
    return chain


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf) and shift < 63:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return -1, len(buf)


def unzstd(data, cap: int) -> tuple[bytes, bool] | None:
    """A zstd stream, through libarchive's raw reader: not opened by ClamAV 1.4.6 (an extra)."""
    from clammail.unpack.archive_lib import ArchiveBroken, ArchiveReader

    try:
        with ArchiveReader(data, ("raw",)) as reader:
            for _entry in reader.entries():
                out, more, error = reader.read(cap)
                if error and not out:
                    return None
                return out, more
    except ArchiveBroken:
        return None
    return None
