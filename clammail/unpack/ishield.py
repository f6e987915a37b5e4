"""InstallShield installers, as libclamav 1.4.6's ishield.c opens them.

Two forms, found in two places:

- MSI-based setups (CL_TYPE_ISHIELD_MSI): the raw scan of a PE file finds
  "InstallShield\\0" followed by a file block; the object runs from there to
  the end of the file (clammail.unpack.embedded). At 14: a file count and
  zeros; then per file a 312-byte block (file name in 260 bytes, compressed
  size at 268) and the data: zlib, each byte with its nibbles swapped and
  XORed with the file name (itself XORed with ec ca 79 f8), restarting every
  1024 bytes. `unpack_ishield_msi`.
- Older setups: the PE scanner (cli_scanpe, after the section hashes, PE32
  only) reads the overlay after the last section as a list of files, each
  "name\\0path\\0version\\0size\\0" and the bytes. data1.hdr and dataN.cab
  are InstallShield cabinets: data1.hdr lists the files, their cabinet and
  offset; each is a list of [u16 size][raw deflate] chunks. The other files
  are scanned as they are. `overlay_objects`.

Broken input ends the walk where libclamav's does (including its quirks:
after a corrupt MSI stream the next file block is read from inside it).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator

from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext
from clammail.unpack.decoders import Budget, RawDeflate

MSI_HEADER_AT = 14  # after "InstallShield\0"
MSI_HEADER = 0x20
MSI_FILE_BLOCK = 0x104 + 4 + 4 + 8 + 9 * 4
_NAME_KEY = bytes((0xEC, 0xCA, 0x79, 0xF8))
_SWAP_NIBBLES = bytes(((c >> 4) | (c << 4)) & 0xFF for c in range(256))
_MSI_READ = 8192  # libclamav reads and decodes the stream in BUFSIZ pieces

# -- MSI --------------------------------------------------------------------


def unpack_ishield_msi(data, ctx: UnpackContext) -> Iterator[Extracted]:
    view = memoryview(data)
    budget = Budget(ctx)
    off = MSI_HEADER_AT
    header = view[off:off + MSI_HEADER]
    if len(header) < MSI_HEADER:
        return
    off += MSI_HEADER
    if any(struct.unpack_from("<6I", header, 8)):
        return
    count = struct.unpack_from("<I", header, 0)[0]
    file_limit = ctx.option("MaxFileSize")
    max_files = ctx.option("MaxFiles")
    scanned = 0
    while count:
        count -= 1
        ctx.check()
        block = view[off:off + MSI_FILE_BLOCK]
        if len(block) < MSI_FILE_BLOCK:
            return  # "short read for fileblock"
        off += MSI_FILE_BLOCK
        name = bytes(block[:0x103]).split(b"\0", 1)[0]
        csize = struct.unpack_from("<Q", block, 0x10C)[0]
        if not csize or off >= len(view) or csize > len(view) - off:
            return  # "next stream is out of file"
        if file_limit and csize > file_limit:
            off += csize  # skipped without a heuristic, as libclamav does
            continue
        if not name:
            return
        out, off = _msi_stream(view, off, csize, name, budget.cap())
        if max_files and ctx.files_scanned() >= max_files:
            # libclamav's nested scan refuses it, even an empty one the engine
            # would skip without counting.
            raise LimitExceeded("MaxFiles")
        limit = budget.refused(len(out))
        if limit:
            ctx.limit_exceeded(limit)
            return
        yield Extracted(out, name=name.decode("latin-1"))
        scanned += 1
        if max_files and scanned >= max_files:
            return  # "File limit reached", without a heuristic


def _msi_stream(view, off: int, csize: int, name: bytes, cap: int) -> tuple[bytes, int]:
    """One file's output and where libclamav reads the next file block."""
    key = bytes(c ^ _NAME_KEY[i & 3] for i, c in enumerate(name))
    keystream = bytes(key[i % len(key)] for i in range(1024))
    raw = bytes(view[off:off + csize])
    clear = raw.translate(_SWAP_NIBBLES)
    pad = (keystream * (len(clear) // 1024 + 1))[:len(clear)]
    clear = (int.from_bytes(clear, "little") ^ int.from_bytes(pad, "little")).to_bytes(
        len(clear), "little")
    decoder = RawDeflate(clear, wbits=15)
    out = decoder.read(cap)
    if decoder.status == "error" and decoder.error_at is not None:
        # A bad stream stops the file; the next block is read right after the
        # piece that held the error.
        pieces = decoder.error_at // _MSI_READ + 1
        return out, off + min(csize, pieces * _MSI_READ)
    return out, off + csize


# -- the overlay of a PE file -----------------------------------------------

HDR_MAGIC = 0x28635349  # "ISc("
_HDR = struct.Struct("<5I")
_OBJECTS_SIZE = 74
_FILE_ITEM = struct.Struct("<HQQQ16sQIIIHIIIIIBH")
_FILE_ITEM_SIZE = _FILE_ITEM.size  # 87
_STRING_MAX = 2048
_CAB_OUT = 65536
_DATA_CAB = re.compile(rb"\s*[+-]?[0-9]+", re.ASCII)
LONG_MAX = (1 << 63) - 1


def overlay_start(exe) -> int | None:
    """Where the overlay of a PE32 file starts (after its last section's data), or None."""
    header = exe.extra.get("pe_header") if exe is not None else None
    if header is None or header.is_pe32plus:
        return None
    ends = [s.raw + s.rsz for s in header.sections if s.rsz]
    return max(ends) if ends else None


def overlay_objects(data, exe, ctx: UnpackContext) -> Iterator[Extracted]:
    """cli_scanishield over the overlay of a PE file."""
    start = overlay_start(exe)
    if start is None or start >= len(data):
        return
    view = memoryview(data)
    yield from _scan_overlay(view, start, len(view) - start, ctx)


def _string(view, at: int) -> bytes | None:
    """A NUL-terminated string starting within the data, at most 2048 bytes with the NUL."""
    if at < 0 or at >= len(view):
        return None
    window = bytes(view[at:at + _STRING_MAX])
    end = window.find(b"\0")
    return window[:end] if end >= 0 else None


def _strtol(text: bytes) -> tuple[int, bool] | None:
    """C strtol in base 10: (value, whole string used), None when nothing parsed."""
    match = _DATA_CAB.match(text)
    if match is None:
        return None
    value = int(match.group().strip())
    value = max(-LONG_MAX - 1, min(LONG_MAX, value))
    return value, match.end() == len(text)


class _Cabs:
    def __init__(self):
        self.hdr: tuple[int, int] | None = None
        self.cabs: list[tuple[int, int, int]] = []  # (number, offset, size)


def _scan_overlay(view, coff: int, size: int, ctx: UnpackContext) -> Iterator[Extracted]:
    cabs = _Cabs()
    budget = Budget(ctx)
    while True:
        ctx.check()
        begin = coff
        fields = []
        for _ in range(4):
            text = _string(view, coff)
            if text is None:
                break
            fields.append(text)
            coff += len(text) + 1
        if len(fields) < 4:
            break
        fname, _path, _version, strsz = fields
        parsed = _strtol(strsz)
        header_len = coff - begin
        if parsed is None or not parsed[1] or not strsz:
            break
        fsize = parsed[0]
        if fsize < 0 or fsize == LONG_MAX or fsize >= size or header_len >= size - fsize:
            break
        ctx.debug(f"ishield: @{coff:x} found file {fname!r} - size {fsize}")
        size -= header_len + fsize
        if fname[:4].lower() == b"data":
            rest = fname[4:]
            if rest.lower() == b"1.hdr" and cabs.hdr is None:
                cabs.hdr = (coff, fsize)
                coff += fsize
                continue
            number = _strtol(rest)
            digits = _DATA_CAB.match(rest)
            if (number is not None and 0 < number[0] < 65536 and digits is not None
                    and rest[digits.end():].lower() == b".cab"):
                i = 0
                while i < len(cabs.cabs) and i != cabs.cabs[i][0]:
                    i += 1
                if i == len(cabs.cabs):
                    cabs.cabs.append((number[0], coff, fsize))
                    coff += fsize
                    continue
        if fsize:
            limit = budget.refused(fsize)
            if limit:
                ctx.limit_exceeded(limit)
                return
            yield Extracted(view[coff:coff + fsize], name=fname.decode("latin-1"))
        coff += fsize
    if cabs.cabs or cabs.hdr is not None:
        outcome = yield from _cab_files(view, cabs, ctx)
        if outcome == "raw":
            raw = [(cabs.hdr[0], cabs.hdr[1], "data1.hdr")] if cabs.hdr is not None else []
            raw += [(off, fsize, f"data{number}.cab") for number, off, fsize in cabs.cabs]
            for off, fsize, name in raw:
                if not fsize:
                    continue
                limit = budget.refused(fsize)
                if limit:
                    ctx.limit_exceeded(limit)
                    return
                yield Extracted(view[off:off + fsize], name=name)


def _cab_files(view, cabs: _Cabs, ctx: UnpackContext):
    """is_parse_hdr: the files data1.hdr lists, from the cabinets. Returns "raw"
    when libclamav then scans data1.hdr and the cabinets as they are (when
    something could not be extracted, or the header is unusable), "done"
    when it does not, "stop" when MaxFiles ended it (no heuristic)."""
    if cabs.hdr is None or not cabs.hdr[1] or not cabs.cabs:
        return "raw"  # "inconsistent hdr"
    hdr, hdrsz = cabs.hdr
    if hdr + hdrsz > len(view) or hdrsz < _HDR.size:
        return "raw"
    magic, _u1, _u2, data_off, _dsz = _HDR.unpack_from(view, hdr)
    objects_at = hdr + data_off
    if objects_at + _OBJECTS_SIZE > len(view):
        return "raw"
    if magic != HDR_MAGIC:
        return "raw"
    dirs_off, = struct.unpack_from("<I", view, objects_at + 12)
    files_cnt, dir_sz2 = struct.unpack_from("<II", view, objects_at + 40)
    off = (data_off + dirs_off + dir_sz2) & 0xFFFFFFFF
    budget = Budget(ctx)
    file_limit = ctx.option("MaxFileSize")
    max_files = ctx.option("MaxFiles")
    scanned = 0
    scan_raw = False
    last_in_range = len(view) - hdr - _FILE_ITEM_SIZE
    i = 0
    while i < files_cnt:
        ctx.check()
        if off > last_in_range:
            # FILEITEM out of bounds until the 32-bit offset wraps: skip those.
            scan_raw = True
            steps = ((1 << 32) - off + _FILE_ITEM_SIZE - 1) // _FILE_ITEM_SIZE
            i += steps
            off = (off + steps * _FILE_ITEM_SIZE) & 0xFFFFFFFF
            continue
        item = _FILE_ITEM.unpack_from(view, hdr + off)
        flags, fsize, csize, stream_off = item[0], item[1], item[2], item[3]
        has_dup, cab_number = item[15], item[16]
        off = (off + _FILE_ITEM_SIZE) & 0xFFFFFFFF
        i += 1
        if flags != 4 or has_dup & 1 or not fsize:
            continue
        if file_limit and csize > file_limit:
            continue
        cab = next((c for c in cabs.cabs if c[0] == cab_number), None)
        if cab is None:
            scan_raw = True  # "dataN.cab not available"
            continue
        _number, cab_off, cab_size = cab
        if not _contained(cab_off, cab_size, stream_off + cab_off, csize):
            scan_raw = True  # "stream out of file"
            continue
        scanned += 1
        if max_files and scanned >= max_files:
            return "stop"  # "File limit reached", without a heuristic
        out = _extract_cab(view, stream_off + cab_off, csize, budget.cap())
        if out is None:
            scan_raw = True  # the extraction failed: nothing scanned
            continue
        limit = budget.refused(len(out))
        if limit:
            ctx.limit_exceeded(limit)
            return "stop"
        yield Extracted(out, name=f"data{cab_number}.cab@{stream_off}")
    return "raw" if scan_raw else "done"


def _contained(base: int, size: int, start: int, length: int) -> bool:
    return (size > 0 and length > 0 and length <= size and start >= base
            and start + length <= base + size)


def _extract_cab(view, off: int, csize: int, cap: int) -> bytes | None:
    """is_extract_cab: [u16 size][raw deflate] chunks; None when a chunk fails."""
    out = bytearray()
    success = False
    while csize:
        success = False
        if csize < 2 or off + 2 > len(view):
            break
        csize -= 2
        chunk_size = int.from_bytes(view[off:off + 2], "little")
        off += 2
        if not chunk_size:
            continue  # "zero sized chunk" (and success stays off)
        if csize < chunk_size or off + chunk_size > len(view):
            break
        csize -= chunk_size
        chunk = bytes(view[off:off + chunk_size])
        off += chunk_size
        try:
            z = zlib.decompressobj(-15)
            out += z.decompress(chunk, max(1, cap - len(out)))
        except zlib.error:
            break
        success = True
        if len(out) >= cap:
            break
    return bytes(out) if success else None
