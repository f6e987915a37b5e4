"""xar, read the way ClamAV 1.4.6 reads it (libclamav's own xar reader).

A xar file is a 28-byte header, a zlib-compressed XML table of contents
(TOC) and a heap. The TOC is scanned as an object of its own; then every
`<data>` and `<ea>` extent the TOC names after its `<toc>` element is
taken from the heap, in document order:

- gzip (really zlib) and lzma extents are decompressed as far as the data
  goes: an extent cut short is scanned as far as it decompressed, one that
  fails to decompress is not scanned (and the archive goes on);
- any other encoding (none, bzip2, xz, unknown) is taken raw, at most
  MaxFileSize bytes, and typed like any file;
- an extent missing one of offset, length and size ends the archive, as does
  a heap read outside the file; a TOC that does not decompress whole means
  nothing is scanned.

Not reproduced: `<subdoc>` elements before the TOC, which ClamAV scans as
serialized XML (no xar writer in use produces them).
"""

from __future__ import annotations

import lzma
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from xml.parsers import expat

HEADER_MAGIC = b"xar!"
HEADER_SIZE = 28
# ClamAV feeds compressed extents to zlib one memory page at a time.
_PAGE = 4096
# lzma extents start with the 5-byte properties and the 8-byte size.
_LZMA_HEADER = 13
_LZMA_UNKNOWN_SIZE = (1 << 64) - 1
_NUMBER = re.compile(rb"\s*([+-]?\d+)")
_LONG_MAX = (1 << 63) - 1
# libxml2's text reader hands its parser this much of the document at a time.
_XML_CHUNK = 512

GZIP, LZMA, RAW = "gzip", "lzma", "raw"
_ENCODINGS = {"application/x-gzip": GZIP, "application/x-lzma": LZMA}


@dataclass(frozen=True)
class Header:
    size: int
    toc_compressed: int

    @property
    def heap_start(self) -> int:
        return self.size + self.toc_compressed


@dataclass(frozen=True)
class Extent:
    """One run of heap bytes the TOC names: a file's data or an extended attribute."""

    offset: int
    length: int
    size: int
    encoding: str


class HeapUnreadable(Exception):
    """An extent starts outside the file: ClamAV ends the archive there."""


def read_header(data) -> Header | None:
    head = bytes(data[:HEADER_SIZE])
    if len(head) < HEADER_SIZE or head[:4] != HEADER_MAGIC:
        return None
    return Header(size=int.from_bytes(head[4:6], "big"),
                  toc_compressed=int.from_bytes(head[8:16], "big"))


def read_toc(data, header: Header, cap: int) -> bytes | None:
    """The TOC's XML; None when ClamAV scans nothing of the file.

    ClamAV 1.4.6 (as Debian builds it) inflates the whole TOC stream,
    whatever length the header declares, and gives up on the file when the
    stream is corrupt or does not end inside its compressed length. A TOC
    over `cap` bytes is treated the same way (not measured against ClamAV).
    """
    end = header.size + header.toc_compressed
    if end > len(data):
        return None
    decoder = zlib.decompressobj()
    try:
        toc = decoder.decompress(bytes(data[header.size:end]), cap + 1)
    except zlib.error:
        return None
    if not decoder.eof or len(toc) > cap:
        return None
    return toc


def extents(toc: bytes) -> list[Extent]:
    """The extents of the TOC in document order, up to the first incomplete one.

    ClamAV reads the TOC with libxml2's text reader, which hands its parser
    512 bytes at a time and gives up at the first chunk that is not
    well-formed: what that chunk held is never seen, what came before is.
    The same chunks are fed to expat here.
    """
    walker = _ExtentWalker()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    # A default handler keeps entity references unexpanded (as libxml2
    # without XML_PARSE_NOENT), so no entity can blow up in memory.
    parser.DefaultHandler = _ignore
    parser.StartElementHandler = walker.start
    parser.EndElementHandler = walker.end
    parser.CharacterDataHandler = walker.text
    try:
        for start in range(0, len(toc), _XML_CHUNK):
            before = walker.state()
            try:
                parser.Parse(toc[start:start + _XML_CHUNK], False)
            except (expat.ExpatError, ValueError):
                walker.restore(before)
                raise
        parser.Parse(b"", True)  # a separate push in libxml2 too
    except _Stop:
        pass  # ClamAV's walk ended by itself
    except (expat.ExpatError, ValueError):
        pass  # the reader stops: what it delivered stands
    walker.finish()
    return walker.found


def _ignore(_data: str) -> None:
    pass


class _Stop(Exception):
    pass


class _ExtentWalker:
    """ClamAV's walk of the TOC: after <toc>, each <data> or <ea> gives offset, length, size."""

    def __init__(self):
        self.found: list[Extent] = []
        self.in_toc = False
        self.in_extent: str | None = None
        self.values: dict[str, int] = {}
        self.encoding = RAW
        self.reading: str | None = None  # the numeric element whose text comes next
        self.pending = ""
        self.done = False

    def start(self, name: str, attrs: dict) -> None:
        self._end_text()
        if self.done:
            raise _Stop
        if not self.in_toc:
            self.in_toc = name == "toc"
        elif self.in_extent is None:
            if name in ("data", "ea"):
                self._open(name)
        elif name in ("offset", "length", "size"):
            self.reading = name
        elif name == "encoding":
            self.encoding = _ENCODINGS.get(attrs.get("style", ""), RAW)

    def text(self, data: str) -> None:
        if self.reading is not None:
            self.pending += data

    def end(self, name: str) -> None:
        self._end_text()
        if self.done:
            raise _Stop
        if self.in_extent is not None and name == self.in_extent:
            self._close()
        elif self.in_toc and self.in_extent is None and name == "xar":
            self.done = True

    def finish(self) -> None:
        """The document ended (or broke off) inside an extent: a complete one still counts."""
        self._end_text()
        if not self.done and self.in_extent is not None and len(self.values) == 3:
            self._emit()

    def state(self) -> tuple:
        return (len(self.found), self.in_toc, self.in_extent, dict(self.values),
                self.encoding, self.reading, self.pending, self.done)

    def restore(self, state: tuple) -> None:
        found, self.in_toc, self.in_extent, self.values, self.encoding, \
            self.reading, self.pending, self.done = state
        del self.found[found:]

    def _open(self, name: str) -> None:
        self.in_extent, self.values, self.encoding = name, {}, RAW

    def _close(self) -> None:
        if len(self.values) == 3:
            self._emit()
            self.in_extent = None
        else:
            self.done = True  # none or some of the three: ClamAV stops here

    def _emit(self) -> None:
        self.found.append(Extent(self.values["offset"], self.values["length"],
                                 self.values["size"], self.encoding))

    def _end_text(self) -> None:
        if self.reading is None:
            return
        number = _NUMBER.match(self.pending.encode())
        if self.pending.strip() and number:
            value = int(number.group(1))
            if 0 <= value <= _LONG_MAX:
                self.values[self.reading] = value
        self.reading, self.pending = None, ""


def extract(data, header: Header, extent: Extent, cap: int, file_limit: int | None) -> bytes | None:
    """The extent's content: at most `cap` + 1 bytes, None when it does not decompress.

    Raises HeapUnreadable where ClamAV's read of the heap fails.
    """
    start = header.heap_start + extent.offset
    if extent.encoding == GZIP:
        return _inflate(data, start, extent.length, cap)
    if extent.encoding == LZMA:
        return _unlzma(data, start, extent.length, cap)
    if start >= len(data):
        raise HeapUnreadable(start)
    take = min(len(data) - start, extent.length)
    if file_limit:
        take = min(take, file_limit)
    return bytes(data[start:start + min(take, cap + 1)])


def _inflate(data, start: int, length: int, cap: int) -> bytes | None:
    decoder = zlib.decompressobj()
    out = bytearray()
    for chunk in _pages(data, start, length):
        try:
            out += decoder.decompress(chunk, cap + 1 - len(out))
        except zlib.error:
            return None
        if len(out) > cap or decoder.eof:
            break
    return bytes(out)


def _pages(data, start: int, length: int) -> Iterator[bytes]:
    # ClamAV reads min(length, page) bytes each time until it passes
    # start + length, so the last read may run past the extent.
    pos, end = start, start + length
    while pos < len(data) and pos < end:
        size = min(len(data) - pos, _PAGE, length)
        yield bytes(data[pos:pos + size])
        pos += size


def _unlzma(data, start: int, length: int, cap: int) -> bytes | None:
    if start + _LZMA_HEADER > len(data):
        raise HeapUnreadable(start)
    raw = bytearray(data[start:start + min(length, len(data) - start)])
    # ClamAV's decoder stops at the stated size or at the end marker,
    # whichever comes first; liblzma insists on both agreeing. So the size
    # is hidden from liblzma and applied here.
    stated = int.from_bytes(raw[5:_LZMA_HEADER], "little")
    raw[5:_LZMA_HEADER] = b"\xff" * 8
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE)
    try:
        out = decoder.decompress(bytes(raw), cap + 1)
    except lzma.LZMAError:
        return None
    return out if stated == _LZMA_UNKNOWN_SIZE else out[:stated]
