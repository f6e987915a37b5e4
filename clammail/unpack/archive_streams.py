"""Single compressed streams: gzip, bzip2, xz (and, as extras, lzma and zstd).

Each function returns the decompressed data, at most `cap` bytes, and
whether there was more; None when ClamAV 1.4.6 would scan nothing. What
ClamAV does with imperfect streams, measured with clamscan:

- gzip: every member is decompressed, one after the other; data after the
  last member is ignored; a stream cut short or failing its CRC is scanned
  as far as it decompressed.
- bzip2: only the first stream; a stream cut short or corrupt gives nothing
  (ClamAV scans the garbage a corrupt block decodes to: not reproduced).
- xz: every stream; any error gives nothing (ClamAV scans a stream whose
  data decoded even when its check or index is damaged: not reproduced,
  Python's lzma cannot skip the check).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib

from clammail.unpack.base import first_bytes

# Input handed to a decoder per call: small, so that the output lost when a
# call fails on bad data stays small too.
_FEED = 512


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


def unxz(data, cap: int) -> tuple[bytes, bool] | None:
    return _lzma_streams(data, cap, lzma.FORMAT_XZ, b"\xfd7zXZ\x00")


def unlzma(data, cap: int) -> tuple[bytes, bool] | None:
    """A bare .lzma (LZMA "alone") stream: not opened by ClamAV 1.4.6 (an extra)."""
    return _lzma_streams(data, cap, lzma.FORMAT_ALONE, None)


def _lzma_streams(data, cap: int, fmt: int, magic: bytes | None) -> tuple[bytes, bool] | None:
    raw = bytes(data)
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
                    chunk = raw[pos:pos + (1 << 16)]
                    pos += len(chunk)
                else:
                    chunk = b""
                out += decoder.decompress(chunk, cap + 1 - len(out))
        except lzma.LZMAError:
            return None
        if len(out) > cap:
            break
        rest = decoder.unused_data + raw[pos:]
        stripped = rest.lstrip(b"\0")  # xz allows zero padding between streams
        if magic is None or not stripped.startswith(magic):
            break
        start = len(raw) - len(stripped)
    return first_bytes(out, cap)


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
