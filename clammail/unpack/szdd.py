"""SZDD: files compressed by Microsoft's COMPRESS.EXE (CL_TYPE_MSSZDD), expanded as ClamAV does.

The format is a 14-byte header ("SZDD", a second magic, mode 'A', the
"missing last character" of the name, the expanded size) and an LZSS stream:
a flag byte announces eight items, each a literal byte (bit set) or a
back-reference of two bytes (12-bit window position, 4-bit length - 3) into
a 4096-byte ring buffer.

ClamAV 1.4.6 (libclamav msexpand.c) differs from EXPAND.EXE and libmspack,
and clammail follows ClamAV:

- the ring buffer starts filled with zeros (not spaces), writing at 4080;
- the missing-character byte must be 0 (it is part of the magic check);
- the header's size is checked against MaxScanSize/MaxFileSize first; a
  file over a limit is not expanded (the heuristic is reported);
- output is written in 2048-byte blocks and stops at the first block that
  reaches the header's size (at least one block), so it may run past that
  size by up to 2047 bytes, or stop short when the data ends.

An expansion is at most 8.5 times the input (17 bytes give at most 144),
so a small file cannot expand to gigabytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from clammail.unpack import sizecheck
from clammail.unpack.base import Extracted, UnpackContext

MAGIC = b"SZDD\x88\xf0\x27\x33\x41\x00"
HEADER_SIZE = 14
WINDOW = 4096
WINDOW_START = WINDOW - 16
WRITE_BLOCK = 2048
# Input handled between two ctx.check() calls.
_CHECK_EVERY = 1 << 16


def unpack_szdd(data, ctx: UnpackContext) -> Iterator[Extracted]:
    head = bytes(data[:HEADER_SIZE])
    if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
        ctx.debug("SZDD: not a supported header")
        return
    (claimed,) = struct.unpack_from("<I", head, 10)
    if not sizecheck.check(ctx, claimed):
        return
    blocks = max(1, -(-claimed // WRITE_BLOCK))
    out = expand(memoryview(data)[HEADER_SIZE:], blocks * WRITE_BLOCK, ctx.check)
    if out:
        yield Extracted(out)


def expand(stream, limit: int, check=lambda: None) -> bytes:
    """Decode the LZSS `stream`, at most `limit` bytes, as libclamav's cli_msexpand."""
    raw = bytes(stream)
    # The ring buffer is kept as the output itself behind a window of zeros:
    # buffer position b holds ring slot (b - 16) % 4096.
    buf = bytearray(WINDOW)
    end = WINDOW + limit
    pos, n = 0, len(raw)
    next_check = _CHECK_EVERY
    while pos < n and len(buf) < end:
        if pos >= next_check:
            check()
            next_check = pos + _CHECK_EVERY
        flags = raw[pos]
        pos += 1
        for bit in range(8):
            if flags >> bit & 1:
                if pos >= n:
                    break
                buf.append(raw[pos])
                pos += 1
            else:
                if pos + 1 >= n:
                    pos = n
                    break
                low, high = raw[pos], raw[pos + 1]
                pos += 2
                slot = low | (high & 0xF0) << 4
                length = (high & 0x0F) + 3
                here = len(buf)
                distance = (here - 16 - slot) % WINDOW or WINDOW
                start = here - distance
                if distance >= length:
                    buf += buf[start:start + length]
                else:
                    for i in range(length):
                        buf.append(buf[start + i])
    return bytes(buf[WINDOW:end])
