"""OLE2 compound files (doc, xls, ppt, msi, vbaProject.bin ...): streams, VBA, embedded objects.

Follows libclamav's ole2_extract.c and the OLE2 part of scanners.c:

* The directory is walked the way libclamav walks it (a work list over the
  child/left/right links, a bitset against loops: a loop ends the walk), and
  streams are read through the FAT or, under 4096 bytes, the mini FAT; a
  broken or looping sector chain just ends the stream.
* A file with a VBA project, a WordDocument or PowerPoint Document stream or
  an Ole10Native stream is handled like libclamav's "write out and scan the
  directory" path: per storage, the file packed in an Ole10Native stream,
  the VBA project as source text, embedded OLE objects of PowerPoint, then
  every stream of the storage and below (so a stream in a nested storage is
  scanned once per level, as in libclamav). Otherwise each stream is scanned
  once, and "MSO" streams (zlib after a 4-byte size) are inflated first.
* The VBA project is rendered as libclamav does for its `dir` stream reader:
  a "REM" header, then each module's source decompressed and normalized
  (lowercase outside strings, runs of blanks collapsed, `_` continuations
  joined). It is matched as a normalized view (target 0).
* Heuristics: Heuristics.OLE2.ContainsMacros.VBA (AlertOLE2Macros). ClamAV
  1.4.6 has no verdict for password-protected Word, Excel or PowerPoint
  files or encrypted OOXML packages (Heuristics.Encrypted.OLE2 came later):
  with or without AlertEncryptedDoc they scan clean, and so they do here.
  The encryption is still recognized and logged.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial

from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext
from clammail.unpack.ole10 import ole10_payload

MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HEADER = struct.Struct("<8s16sHHhHI8siiIIiiii")
_BAT_ENTRIES = 128  # libclamav reads 512 bytes of every FAT sector, whatever the sector size
_ENTRY = struct.Struct("<64sHBBIII16sIIIIIII4s")
_MAX_WALK_DEPTH = 100
_MAX_WALK_FILES = 100000

_MACRO_ALERT = "Heuristics.OLE2.ContainsMacros.VBA"


@dataclass
class Stream:
    name: str  # libclamav's normalized name (lowercase, control characters spelled out)
    raw_name: bytes
    start: int
    size: int


@dataclass
class Storage:
    name: str
    streams: list[Stream] = field(default_factory=list)
    storages: list[Storage] = field(default_factory=list)

    def all_streams(self) -> Iterator[Stream]:
        yield from self.streams
        for sub in self.storages:
            yield from sub.all_streams()


class _Abort(Exception):
    """A loop in the directory: libclamav stops walking it (CL_BREAK)."""


class CompoundFile:
    """Read access to the sectors and streams of one compound file, tolerant like libclamav."""

    def __init__(self, data: bytes, ctx: UnpackContext):
        self.data = data
        self.ctx = ctx
        (magic, _clsid, _minor, _dll, _order, self.big_shift, self.small_shift, _res,
         self.bat_count, self.prop_start, _sig, self.cutoff, self.sbat_start, _sbat_count,
         self.xbat_start, _xbat_count) = _HEADER.unpack_from(data, 0)
        self.bat_array = struct.unpack_from("<109i", data, _HEADER.size)
        self.valid = (magic == MAGIC and 6 <= self.big_shift <= 28
                      and 0 < self.small_shift <= self.big_shift and len(data) <= 2**31 - 1)
        self.big = 1 << self.big_shift if self.valid else 512
        self.small = 1 << self.small_shift if self.valid else 64
        self.base = max(512, self.big)
        self.max_block = (len(data) - self.base) // self.small if self.valid else 0
        self.sbat_root_start = -1
        self.files = 0
        self.scan_budget = ctx.option("MaxScanSize") or 1 << 62
        self.encrypted = False

    # -- sectors ------------------------------------------------------------

    def read_block(self, block: int, size: int) -> bytes | None:
        if block < 0:
            return None
        if (block << self.big_shift) < 2**31 - 1 - self.base:
            offset = (block << self.big_shift) + self.base
        else:
            offset = 2**31 - 1 - size
        if offset >= len(self.data):
            return None
        chunk = self.data[offset: offset + size]
        return chunk + b"\0" * (size - len(chunk))

    def _bat_entry(self, sector: int, index: int) -> int:
        block = self.read_block(sector, 512)
        if block is None:
            return -1
        return struct.unpack_from("<i", block, index * 4)[0]

    def next_block(self, current: int) -> int:
        if current < 0:
            return -1
        index = current // _BAT_ENTRIES
        if index > 108:
            return self._next_xbat(current)
        if index > self.bat_count:
            return -10
        return self._bat_entry(self.bat_array[index], current % _BAT_ENTRIES)

    def _next_xbat(self, current: int) -> int:
        index = current // _BAT_ENTRIES
        xbat_block, bat_block = divmod(index - 109, 127)
        xbat = self.read_block(self.xbat_start, 512)
        while xbat is not None and xbat_block > 0:
            xbat = self.read_block(struct.unpack_from("<i", xbat, 127 * 4)[0], 512)
            xbat_block -= 1
        if xbat is None:
            return -1
        return self._bat_entry(struct.unpack_from("<i", xbat, bat_block * 4)[0],
                               current % _BAT_ENTRIES)

    def next_small_block(self, current: int) -> int:
        if current < 0:
            return -1
        block = self.sbat_start
        for _ in range(current // _BAT_ENTRIES):
            block = self.next_block(block)
        return self._bat_entry(block, current % _BAT_ENTRIES)

    def small_block(self, index: int) -> bytes | None:
        if index < 0 or self.sbat_root_start < 0:
            return None
        per_big = 1 << (self.big_shift - self.small_shift)
        block = self.sbat_root_start
        for _ in range(index // per_big):
            block = self.next_block(block)
        big = self.read_block(block, self.big)
        if big is None:
            return None
        offset = self.small * (index % per_big)
        return big[offset: offset + self.small]

    def read_stream(self, stream: Stream, limit: int) -> bytes:
        """The stream's bytes, ending early at a broken, looping or too long chain."""
        out = bytearray()
        remaining = min(stream.size, limit)
        block = stream.start
        seen: set[int] = set()
        small = stream.size < self.cutoff
        while block >= 0 and remaining > 0:
            if block > self.max_block or block in seen:
                break
            seen.add(block)
            if not len(seen) & 0x3FF:
                self.ctx.check()
            if small:
                chunk = self.small_block(block)
                if chunk is None:
                    break
                block = self.next_small_block(block)
            else:
                chunk = self.read_block(block, self.big)
                if chunk is None:
                    break
                block = self.next_block(block)
            piece = chunk[:remaining]
            out += piece
            remaining -= len(piece)
        return bytes(out)

    # -- directory ----------------------------------------------------------

    def walk(self) -> Storage:
        """The tree of storages and streams, in libclamav's walk order."""
        root = Storage("")
        seen: set[int] = set()
        try:
            self._walk(0, 0, root, seen)
        except _Abort:
            self.ctx.debug("ole2: loop in the directory, walk stopped")
        return root

    def _entry(self, index: int) -> tuple | None:
        block = self.prop_start
        for _ in range(index // 4):
            block = self.next_block(block)
        raw = self.read_block(block, 512)
        if raw is None:
            return None
        return _ENTRY.unpack_from(raw, (index % 4) * 128)

    def _walk(self, index: int, depth: int, into: Storage, seen: set[int]) -> None:
        if depth > _MAX_WALK_DEPTH or self.files > _MAX_WALK_FILES:
            return
        max_recursion = self.ctx.option("MaxRecursion")
        if max_recursion and depth > max_recursion:
            raise LimitExceeded("MaxRecursion")
        work = [index]
        while work:
            self.ctx.check()
            current = work.pop()
            if current < 0 or current > self.max_block:
                continue
            entry = self._entry(current)
            if entry is None:
                continue
            (raw_name, name_size, kind, _color, left, right, child, _clsid, _flags,
             _c1, _c2, _m1, _m2, start, size, _pad) = entry
            if kind == 0:
                continue
            if name_size > 64 or name_size % 2:
                continue
            raw_name = raw_name[:name_size]
            self._note_encryption(raw_name, start, size)
            if current in seen:
                raise _Abort()
            seen.add(current)
            left, right, child = _signed(left), _signed(right), _signed(child)
            if kind == 5:
                if current != 0 or depth != 0 or self.files != 0:
                    continue
                self.sbat_root_start = _signed(start)
                if child != -1:
                    self._walk(child, depth + 1, into, seen)
            elif kind == 2:
                max_files = self.ctx.option("MaxFiles")
                if max_files and self.files > max_files:
                    raise LimitExceeded("MaxFiles")
                max_size = self.ctx.option("MaxFileSize")
                # libclamav also takes a stream larger than MaxFileSize while
                # it fits in what is left of MaxScanSize (the engine then judges it).
                if not max_size or size <= max_size or size <= self.scan_budget:
                    self.files += 1
                    self.scan_budget -= size
                    into.streams.append(Stream(property_name(raw_name), raw_name,
                                               _signed(start), size))
                if child != -1:
                    self._walk(child, depth, into, seen)
            elif kind == 1:
                sub = Storage(property_name(raw_name))
                into.storages.append(sub)
                if child != -1:
                    self._walk(child, depth + 1, sub, seen)
            else:
                continue
            if left != -1:
                work.append(left)
            if right != -1:
                work.append(right)

    # -- encryption ---------------------------------------------------------

    def _note_encryption(self, raw_name: bytes, start: int, size: int) -> None:
        name = _compare_name(raw_name)
        if name == "worddocument" or name == "powerpoint document":
            fib = self._stream_head(start, size, 32)
            if fib is not None and struct.unpack_from("<H", fib, 0)[0] == 0xA5EC:
                if struct.unpack_from("<H", fib, 10)[0] & 0x100:
                    self.encrypted = True
        elif name == "workbook":
            if _xls_file_pass(self._stream_head(start, size, self.big)):
                self.encrypted = True
        elif name in ("encryptioninfo", "encryptedpackage"):
            self.encrypted = True

    def _stream_head(self, start: int, size: int, length: int) -> bytes | None:
        """The first bytes of a stream, located the way libclamav's encryption tests do."""
        if size < 0x1000:
            offset = self.big + self.big * self.sbat_root_start + start * self.small
        else:
            offset = self.big + self.big * start
        if offset < 0 or offset + length > len(self.data):
            return None
        return self.data[offset: offset + length]


def _xls_file_pass(head: bytes | None) -> bool:
    """An Excel BOF record followed somewhere in the first sector by FILEPASS (RC4 or XOR)."""
    if head is None or len(head) < 4:
        return False
    if struct.unpack_from("<H", head, 0)[0] != 2057:
        return False
    pos = 4 + struct.unpack_from("<H", head, 2)[0]
    # libclamav's 16-bit reads fail when they would touch the last byte.
    while pos + 4 < len(head):
        record, length = struct.unpack_from("<HH", head, pos)
        pos += 4
        if record == 47:
            if pos + 2 >= len(head):
                return False
            return struct.unpack_from("<H", head, pos)[0] in (0, 1)
        pos += length
    return False


def _signed(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def _compare_name(raw: bytes) -> str:
    """The name as libclamav compares it for the encryption tests (low bytes only)."""
    chars = []
    for k in range(0, len(raw) - 1, 2):
        chars.append(chr(((raw[k + 1] << 4) + raw[k]) & 0xFF))
    return "".join(chars).split("\0", 1)[0].lower()


def property_name(raw: bytes) -> str:
    """libclamav's name for a directory entry: lowercase, unprintables spelled out."""
    out = []
    size = len(raw)
    if size <= 0 or raw[:2] == b"\0\0":
        return ""
    for k in range(0, size - 2, 2):
        low, high = raw[k], raw[k + 1]
        if low < 0x80 and 0x20 <= low < 0x7F and high == 0:
            out.append(chr(low).lower())
        else:
            if low < 10 and high == 0:
                out.append("_" + chr(low + 48))
            else:
                x = ((low if low < 0x80 else low - 256) << 8 | high) & 0xFFFF
                out.append("_" + "".join(chr(97 + (x >> s & 0xF)) for s in (0, 4, 8)))
            out.append("_")
    return "".join(out)


# -- the unpacker ------------------------------------------------------------


def unpack_ole2(data: bytes | memoryview, ctx: UnpackContext) -> Iterator[Extracted]:
    data = bytes(data)
    if len(data) < _HEADER.size + 109 * 4:
        return
    cfb = CompoundFile(data, ctx)
    if not cfb.valid:
        return
    root = cfb.walk()
    if cfb.encrypted:
        ctx.debug("ole2: the document is encrypted (no verdict in ClamAV 1.4.6)")
    names = {s.name for s in root.all_streams()}
    limit = ctx.max_object_size()
    if names & {"_vba_project", "powerpoint document", "worddocument", "_1_ole10native"}:
        macros = [False]
        yield from _scan_storage(cfb, root, limit, ctx, macros)
    else:
        for stream in root.all_streams():
            content = cfb.read_stream(stream, stream.size)
            if len(content) >= 6 and content[4:6] == b"\x78\x9c":
                content = _inflate(content[4:], limit)
            yield Extracted(content, name=stream.name)


def _scan_storage(cfb: CompoundFile, storage: Storage, limit: int, ctx: UnpackContext,
                  macros: list[bool]) -> Iterator[Extracted]:
    """libclamav's scan of one extracted directory (cli_ole2_scan_tempdir)."""
    for stream in storage.streams:
        if stream.name == "_1_ole10native":
            payload = ole10_payload(cfb.read_stream(stream, stream.size))
            if payload:
                yield Extracted(payload, name="ole10native")
    for stream in storage.streams:
        if stream.name == "powerpoint document":
            content = cfb.read_stream(stream, stream.size)
            for index, blob in enumerate(_ppt_embedded(content, limit)):
                yield Extracted(blob, name=f"ppt-object-{index}")
    for report in _vba_reports(cfb, storage, limit, ctx):
        if not macros[0]:
            macros[0] = True
            if ctx.option("AlertOLE2Macros"):
                ctx.alert(_MACRO_ALERT)
        yield Extracted(report, name="vba_project", view_target=0)
    for stream in storage.all_streams():
        yield Extracted(cfb.read_stream(stream, stream.size), name=stream.name)
    for sub in storage.storages:
        yield from _scan_storage(cfb, sub, limit, ctx, macros)


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit)
    except zlib.error:
        return b""
    return out


# -- PowerPoint embedded objects --------------------------------------------


def _ppt_embedded(stream: bytes, limit: int) -> Iterator[bytes]:
    """Compressed ExOleObjStg records (type 0x1011, instance 1) of a PowerPoint Document stream."""
    pos = 0
    while pos + 8 <= len(stream):
        ver_inst, rtype, length = struct.unpack_from("<HHI", stream, pos)
        pos += 8
        if rtype == 0x1011 and length >= 4:
            body = stream[pos: pos + length]
            if ver_inst >> 4 == 1:
                inflated = _inflate(body[4:], limit)
                if inflated:
                    yield inflated
            else:
                yield body
        if ver_inst & 0xF == 0xF:
            continue  # a container: its records follow inline
        pos += length


# -- VBA ----------------------------------------------------------------------


def decompress_ovba(data: bytes, limit: int = 1 << 26) -> bytes | None:
    """MS-OVBA decompression of a compressed container; None if it does not start like one."""
    if not data or data[0] != 1:
        return None
    out = bytearray()
    pos = 1
    while pos + 2 <= len(data) and len(out) < limit:
        header = struct.unpack_from("<H", data, pos)[0]
        pos += 2
        size = (header & 0x0FFF) + 3
        chunk_end = min(pos - 2 + size, len(data))
        start = len(out)
        if not header & 0x8000:
            out += data[pos: pos + 4096]
            pos += 4096
            continue
        while pos < chunk_end:
            flags = data[pos]
            pos += 1
            for bit in range(8):
                if pos >= chunk_end:
                    break
                if not flags >> bit & 1:
                    out.append(data[pos])
                    pos += 1
                    continue
                if pos + 2 > chunk_end:
                    pos = chunk_end
                    break
                token = struct.unpack_from("<H", data, pos)[0]
                pos += 2
                decoded = len(out) - start
                bits = max(4, (decoded - 1).bit_length())
                length_mask = 0xFFFF >> bits
                offset = (token >> (16 - bits)) + 1
                length = (token & length_mask) + 3
                if offset > decoded:
                    return bytes(out)
                for _ in range(length):
                    out.append(out[-offset])
        pos = chunk_end
    return bytes(out[:limit])


def _vba_reports(cfb: CompoundFile, storage: Storage, limit: int,
                 ctx: UnpackContext) -> Iterator[bytes]:
    """One rendered project for every `dir` stream in this storage or below."""
    for holder in _storages_with(storage, "dir"):
        by_name = {s.name: s for s in holder.streams}
        dir_stream = decompress_ovba(cfb.read_stream(by_name["dir"], by_name["dir"].size), limit)
        if dir_stream is None:
            continue
        ctx.check()
        yield render_vba_project(dir_stream, partial(_module_stream, cfb, by_name))


def _storages_with(storage: Storage, name: str) -> Iterator[Storage]:
    if any(s.name == name for s in storage.streams):
        yield storage
    for sub in storage.storages:
        yield from _storages_with(sub, name)


def _module_stream(cfb: CompoundFile, by_name: dict[str, Stream], name: bytes) -> bytes | None:
    stream = by_name.get(name.decode("latin-1").lower())
    return None if stream is None else cfb.read_stream(stream, stream.size)


_HEADER_LINE = b"REM VBA project extracted from Microsoft Office document\n\n"
_SEPARATOR = b"\nREM " + b"#" * 50 + b"\n"


def render_vba_project(dir_stream: bytes, module_stream) -> bytes:
    """The text libclamav scans for a VBA project: REM lines, then each module's normalized source."""
    out = bytearray(_HEADER_LINE)
    pos = 0
    module_name = stream_name = b""
    offset = 0
    while pos + 6 <= len(dir_stream):
        rid, size = struct.unpack_from("<HI", dir_stream, pos)
        pos += 6
        if rid == 0x0009:
            size += 2  # PROJECTVERSION says 4 but carries 6 bytes
        value = dir_stream[pos: pos + size]
        pos += size
        if rid == 0x0004:
            out += b"REM PROJECTNAME: " + value + b"\n"
        elif rid == 0x0019:
            module_name = value
            out += b"\n\nREM MODULENAME: " + value
        elif rid == 0x001A:
            stream_name = value
            out += b"\nREM MODULESTREAMNAME: " + value
        elif rid == 0x0031 and len(value) >= 4:
            offset = struct.unpack_from("<I", value)[0]
            out += b"\nREM MODULEOFFSET: 0x%08x" % offset
        elif rid == 0x002B:
            content = module_stream(stream_name or module_name)
            out += _SEPARATOR
            if content is not None:
                source = decompress_ovba(content[offset:])
                if source:
                    out += vba_normalize(source)
            module_name = stream_name = b""
            offset = 0
        elif rid == 0x0010:
            break
    return bytes(out)


def vba_normalize(source: bytes) -> bytes:
    """libclamav's VBA source normalization (vba_normalize in vba_extract.c)."""
    normal, in_string, underscore, underscore_cr, space = range(5)
    state = normal
    out = bytearray()
    for byte in source:
        if byte == 0x22:
            if state == in_string:
                state = normal
            elif state in (normal, underscore, space):
                state = in_string
            out.append(byte)
        elif byte == 0x5F:
            if state == space:
                state = underscore
            out.append(byte)
        elif byte == 0x0D:
            if state == underscore:
                state = underscore_cr
            out.append(byte)
        elif byte == 0x0A:
            if state == underscore:
                del out[-1:]
                state = space
            elif state == underscore_cr:
                del out[-2:]
                state = space
            else:
                out.append(byte)
        elif byte in (0x09, 0x20):
            if state != space:
                out.append(0x20)
            if state in (normal, underscore):
                state = space
        else:
            if state in (normal, underscore, space):
                out.append(byte + 32 if 65 <= byte <= 90 else byte)
                state = normal
            else:
                out.append(byte)
    return bytes(out)
