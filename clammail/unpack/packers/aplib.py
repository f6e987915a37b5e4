"""The aPLib-style LZ decoder libclamav uses for MEW and FSG (packlibs.c:
unmew, cli_unfsg).

Source and destination are offsets into one shared buffer, as in libclamav
(MEW unpacks within a single allocation, and what it writes may be read
back). The bit source is the one of Petite and FSG: bytes MSB first with a
sentinel bit; it never reads the last source byte, the literal path does.
"""

from __future__ import annotations

from clammail.unpack.base import UnpackContext
from clammail.unpack.packers.common import M32, contained

_CHECK_EVERY = 1 << 15


class DecodeError(Exception):
    """The decoder returned -1."""


def aplib(buf: bytearray, src: int, ssize: int, dst: int, dsize: int,
          ctx: UnpackContext) -> tuple[int, int]:
    """Decode from buf[src:src+ssize] into buf[dst:dst+dsize] (bounds checked as
    libclamav does, after the unchecked first byte): (source end, dest end)."""
    src_start, dst_start = src, dst
    src_end, dst_end = src + ssize, dst + dsize
    if not (0 <= src < len(buf)) or not (0 <= dst < len(buf)):
        raise DecodeError()
    buf[dst] = buf[src]
    src += 1
    dst += 1
    dl = 0x80
    oldback = 0
    lostbit = 1
    steps = 0

    def bit() -> int:
        nonlocal dl, src
        old = dl
        dl = (old << 1) & 0xFF
        if not old & 0x7F:
            if src < src_start or src >= src_end - 1:
                raise DecodeError()
            old = buf[src]
            dl = ((old << 1) | 1) & 0xFF
            src += 1
        return (old >> 7) & 1

    def gamma() -> int:
        value = 1
        while True:
            value = (value * 2 + bit()) & M32
            if not bit():
                return value

    while True:
        steps += 1
        if not steps % _CHECK_EVERY:
            ctx.check()
        if not bit():
            if dst < dst_start or dst >= dst_end or src < src_start or src >= src_end:
                raise DecodeError()
            buf[dst] = buf[src]
            dst += 1
            src += 1
            lostbit = 1
            continue
        backsize = 0
        if bit():
            if bit():
                lostbit = 1
                backsize = 1
                backbytes = 0x10
                while backbytes < 0x100:
                    backbytes = backbytes * 2 + bit()
                backbytes &= 0xFF
                if not backbytes:
                    if dst >= dst_end:
                        raise DecodeError()
                    buf[dst] = 0
                    dst += 1
                    continue
            else:
                if src >= src_end:
                    raise DecodeError()
                value = buf[src]
                backsize = value & 1
                backbytes = value >> 1
                src += 1
                if not backbytes:
                    break
                backsize += 2
                oldback = backbytes
                lostbit = 0
        else:
            backsize = (gamma() - 1 - lostbit) & M32
            if not backsize:
                backsize = gamma()
                backbytes = oldback
            else:
                if src >= src_end:
                    raise DecodeError()
                backbytes = (buf[src] + ((backsize - 1) << 8)) & M32
                src += 1
                backsize = gamma()
                if backbytes >= 0x7D00:
                    backsize += 1
                if backbytes >= 0x500:
                    backsize += 1
                if backbytes <= 0x7F:
                    backsize += 2
                backsize &= M32
                oldback = backbytes
            lostbit = 0
        if (not contained(dsize, dst - dst_start, backsize)
                or not contained(dsize, dst - backbytes - dst_start, backsize)):
            raise DecodeError()
        source = dst - backbytes
        if backbytes >= backsize:
            buf[dst:dst + backsize] = buf[source:source + backsize]
        elif backbytes:  # a distance of 0 copies each byte onto itself
            pattern = bytes(buf[source:dst])
            buf[dst:dst + backsize] = (pattern * (backsize // backbytes + 1))[:backsize]
        dst += backsize
    return src, dst
