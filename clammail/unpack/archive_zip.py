"""Zip archives, opened the way ClamAV 1.4.6's own unzip does it.

ClamAV does not use a zip library: it reads the central directory itself,
and its choices decide what gets scanned, so this module makes the same
ones (measured against clamscan 1.4.6, see tests/test_archive_zip.py):

- The central directory is found through the end record, searched from the
  end of the file. Without one, nothing in the zip is extracted (the raw
  bytes are still matched). Entries come out in the order of their local
  headers, duplicates once.
- More than five entries whose data overlap is a non-recursive zip bomb:
  Heuristics.Zip.OverlappingFiles, and nothing is extracted.
- Methods: stored, deflate, deflate64 (the `inflate64` package), bzip2 and
  implode. LZMA, PPMd and the others are not extracted (ClamAV lists them as
  unsupported); `ExtraArchiveFormats` adds LZMA.
- An entry larger than MaxFileSize is cut to it (compressed entries to a
  multiple of the 8 KiB output buffer, as ClamAV's write loop does); an
  entry larger than what is left of MaxScanSize stops the zip.
- Encrypted entries: Heuristics.Encrypted.Zip with AlertEncryptedArchive,
  and never extracted (ClamAV has no password to try).
- Sizes come from the local header unless it defers them to a data
  descriptor; zip64 sizes are not read (ClamAV reads 32-bit fields only).

`single_entry` extracts one entry from its local header alone: that is how
ClamAV opens zip data found inside other files (self-extractors).
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from clammail.formats.zip import (
    CENTRAL_HEADER,
    CENTRAL_MAGIC,
    CENTRAL_SIZE,
    LOCAL_HEADER,
    LOCAL_MAGIC,
    LOCAL_SIZE,
    SPANNED_MAGIC,
)
from clammail.unpack.base import first_bytes

F_ENCRYPTED = 0x0001
F_DATA_DESCRIPTOR = 0x0008
F_MASKED = 0x2000  # central directory encryption masks the local header

STORED, IMPLODED, DEFLATED, DEFLATE64, BZIP2, LZMA = 0, 6, 8, 9, 12, 14

# ClamAV writes decompressed data through an 8 KiB buffer (BUFSIZ) and stops
# before the write that would pass MaxFileSize.
OUTPUT_CHUNK = 8192
# ZIP_MAX_NUM_OVERLAPPING_FILES in libclamav/unzip.c.
MAX_OVERLAPPING = 5
# Input fed to a decoder at once: small enough that the output of one call
# stays bounded even at deflate64's ratio (tens of thousands to one).
_FEED = 256


class ZipError(Exception):
    """The zip cannot be processed further (what ClamAV treats as CL_EFORMAT)."""


@dataclass
class Record:
    """One entry's data as its local header places it."""

    name: str
    offset: int  # of the local header
    header_size: int  # local header with name and extra field
    csize: int
    usize: int
    method: int
    flags: int

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & F_ENCRYPTED)

    @property
    def data_offset(self) -> int:
        return self.offset + self.header_size

    @property
    def end(self) -> int:
        return self.offset + self.header_size + self.csize


def _name(raw: bytes) -> str:
    # ClamAV keeps at most 255 bytes of a name.
    return bytes(raw[:255]).decode("utf-8", "replace")


def parse_local(data, offset: int, central: tuple | None) -> tuple[Record | None, int, bool]:
    """Read the local header at `offset`.

    Returns (record, consumed, encrypted): the record when the entry has data
    inside the file, the bytes the header and data take (0 when the header
    is unusable, which ends a walk over local headers), and whether the
    entry is flagged encrypted.
    """
    size = len(data)
    if offset + LOCAL_SIZE > size:
        return None, 0, False
    (magic, _ver, flags, method, _t, _d, _crc, csize, usize,
     flen, elen) = LOCAL_HEADER.unpack_from(data, offset)
    if magic != LOCAL_MAGIC:
        return None, 0, False
    remaining = size - offset - LOCAL_SIZE
    if remaining <= flen:
        return None, 0, False
    name = _name(data[offset + LOCAL_SIZE:offset + LOCAL_SIZE + min(flen, 255)])
    remaining -= flen
    encrypted = bool(flags & F_ENCRYPTED)
    if flags & F_MASKED:
        return None, 0, encrypted
    if flags & F_DATA_DESCRIPTOR:
        if central is None:
            return None, 0, encrypted
        csize, usize = central
    if remaining <= elen:
        return None, 0, encrypted
    remaining -= elen
    header_size = LOCAL_SIZE + flen + elen
    record = None
    if csize:
        if remaining < csize:
            return None, 0, encrypted
        record = Record(name, offset, header_size, csize, usize, method, flags)
        remaining -= csize
    consumed = header_size + csize
    if flags & F_DATA_DESCRIPTOR:
        if remaining < 12:
            return record, 0, encrypted
        remaining -= 12
        if bytes(data[offset + consumed:offset + consumed + 4]) == SPANNED_MAGIC:
            if remaining < 4:
                return record, 0, encrypted
            consumed += 4
        consumed += 12
    return record, consumed, encrypted


def index_central_directory(data, coff: int, on_encrypted, check=None) -> list[Record]:
    """The entries the central directory lists, sorted by local header offset.

    Raises ZipError for a non-recursive zip bomb (overlapping entries);
    `on_encrypted()` is called for each encrypted entry.
    """
    size = len(data)
    records: list[Record] = []
    while True:
        if check is not None and len(records) % 1024 == 1023:
            check()
        if coff + CENTRAL_SIZE > size:
            break
        fields = CENTRAL_HEADER.unpack_from(data, coff)
        if fields[0] != CENTRAL_MAGIC:
            break
        csize, usize = fields[8], fields[9]
        flen, elen, clen, local_offset = fields[10], fields[11], fields[12], fields[16]
        pos = coff + CENTRAL_SIZE
        if size - pos <= flen:
            break
        pos += flen
        last = size - pos <= elen
        pos += elen
        if not last and size - pos < clen:
            last = True
        pos += clen
        if local_offset < size - LOCAL_SIZE:
            record, _consumed, encrypted = parse_local(data, local_offset, (csize, usize))
            if encrypted:
                on_encrypted()
            if record is not None and not last:
                records.append(record)
        if last:
            break
        coff = pos
    records.sort(key=lambda r: r.offset)
    _check_overlaps(records)
    return records


def _check_overlaps(records: list[Record]) -> None:
    overlapping = 0
    for prev, cur in zip(records, records[1:], strict=False):
        if cur.offset < prev.end or prev.offset >= cur.offset and prev.offset < cur.end:
            overlapping += 1
            duplicate = (cur.offset, cur.header_size, cur.csize) == (
                prev.offset, prev.header_size, prev.csize)
            if not duplicate and overlapping > MAX_OVERLAPPING:
                raise ZipError("overlapping entries")


def unique(records: list[Record]) -> Iterator[Record]:
    """The records without the duplicate entries a central directory may repeat."""
    previous = None
    for record in records:
        key = (record.offset, record.header_size, record.csize)
        if key != previous:
            yield record
        previous = key


def walk_local_headers(data, check=None) -> Iterator[Record]:
    """Entries found by following local headers from the start of the file."""
    offset = 0
    size = len(data)
    steps = 0
    while offset < size:
        record, consumed, _encrypted = parse_local(data, offset, None)
        if not consumed:
            return
        if record is not None:
            yield record
        offset += consumed
        steps += 1
        if check is not None and steps % 1024 == 0:
            check()


class Unsupported(Exception):
    """The entry's method is not extracted."""


class Corrupt(Exception):
    """The entry's data does not decompress."""


def decompress(record: Record, data, cap: int, extra_methods: bool = False) -> tuple[bytes, bool]:
    """The entry's data, at most `cap` bytes; and whether there was more.

    A stream that ends early yields what it produced (ClamAV scans that); a
    stream with bad data yields nothing (Corrupt).
    """
    raw = data[record.data_offset:record.data_offset + record.csize]
    method = record.method
    if method == STORED:
        return bytes(raw[:cap]), len(raw) > cap
    if method == DEFLATED:
        return _inflate(zlib.decompressobj(-15), raw, cap, zlib.error)
    if method == DEFLATE64:
        return _inflate64(raw, cap)
    if method == BZIP2:
        return _bunzip(raw, cap)
    if method == IMPLODED:
        from clammail.unpack.explode import ExplodeError, explode

        try:
            out = explode(bytes(raw), record.flags, record.usize, cap + 1)
        except ExplodeError as exc:
            raise Corrupt(str(exc)) from exc
        return out[:cap], len(out) > cap
    if method == LZMA and extra_methods:
        return _unlzma(raw, cap)
    raise Unsupported(f"method {method}")


def _inflate(decoder, raw, cap: int, error) -> tuple[bytes, bool]:
    out = bytearray()
    view = memoryview(raw)
    try:
        for start in range(0, len(view), 1 << 16):
            out += decoder.decompress(view[start:start + (1 << 16)], cap + 1 - len(out))
            if len(out) > cap or decoder.eof:
                break
            while decoder.unconsumed_tail and len(out) <= cap:
                out += decoder.decompress(decoder.unconsumed_tail, cap + 1 - len(out))
            if len(out) > cap:
                break
    except error as exc:
        raise Corrupt(str(exc)) from exc
    return first_bytes(out, cap)


def _inflate64(raw, cap: int) -> tuple[bytes, bool]:
    try:
        import inflate64
    except ImportError as exc:
        raise Unsupported("deflate64 needs the inflate64 package") from exc

    decoder = inflate64.Inflater()
    out = bytearray()
    view = memoryview(raw)
    try:
        for start in range(0, len(view), _FEED):
            out += decoder.inflate(bytes(view[start:start + _FEED]))
            if len(out) > cap or decoder.eof:
                break
    except ValueError as exc:
        raise Corrupt(str(exc)) from exc
    return first_bytes(out, cap)


def _bunzip(raw, cap: int) -> tuple[bytes, bool]:
    decoder = bz2.BZ2Decompressor()
    out = bytearray()
    view = memoryview(raw)
    try:
        out += decoder.decompress(bytes(view[:_FEED]), cap + 1)
        position = _FEED
        while len(out) <= cap and not decoder.eof:
            if decoder.needs_input:
                if position >= len(view):
                    break
                chunk = bytes(view[position:position + (1 << 16)])
                position += len(chunk)
            else:
                chunk = b""
            out += decoder.decompress(chunk, cap + 1 - len(out))
    except (OSError, ValueError, EOFError) as exc:
        raise Corrupt(str(exc)) from exc
    return first_bytes(out, cap)


def _unlzma(raw, cap: int) -> tuple[bytes, bool]:
    # Zip's LZMA: 2 bytes of version, 2 bytes of properties size, the 5-byte
    # LZMA properties, then a raw LZMA1 stream.
    raw = bytes(raw)
    if len(raw) < 9:
        raise Corrupt("short LZMA header")
    (props_size,) = struct.unpack_from("<H", raw, 2)
    props = raw[4:4 + props_size]
    if len(props) < 5 or props[0] >= 9 * 5 * 5:
        raise Corrupt("bad LZMA properties")
    lc, rest = props[0] % 9, props[0] // 9
    lp, pb = rest % 5, rest // 5
    (dict_size,) = struct.unpack_from("<I", props, 1)
    filters = [{"id": lzma.FILTER_LZMA1, "dict_size": max(dict_size, 4096), "lc": lc, "lp": lp, "pb": pb}]
    decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)
    try:
        out = decoder.decompress(raw[4 + props_size:], cap + 1)
    except lzma.LZMAError as exc:
        raise Corrupt(str(exc)) from exc
    return out[:cap], len(out) > cap
