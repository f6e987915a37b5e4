"""BinHex 4.0 decoding as libclamav's cli_binhex does it.

The file is read from its first line end on; the stream must start with
':', line ends and ':' are skipped everywhere, and decoding stops at the
first character that is not in the BinHex alphabet. Decoded bytes are
run-length expanded (0x90) and handled in chunks of 7936 bytes: only what
reached a chunk boundary, or the end of the file, is ever written, so a bad
character early in a small file means nothing is scanned. The data fork is
scanned, then the resource fork when it has at least 5 bytes; at the end of
the file an incomplete fork is scanned as far as it got.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

from clammail.unpack.base import Extracted, UnpackContext

_ALPHABET = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_TO_B64 = bytearray(b"\xff" * 256)
for _value, _char in enumerate(_ALPHABET):
    _TO_B64[_char] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[_value]
_TO_B64 = bytes(_TO_B64)
_FLUSH = 8192 - 256  # BUFSIZ - 256
_RUN = 0x90


def decode_binhex(data: bytes, ctx: UnpackContext) -> Iterator[Extracted]:
    flushed, at_eof = _decode(data, ctx)
    if not flushed:
        return
    namelen = flushed[0]
    hdrlen = 1 + namelen + 1 + 4 + 4 + 2
    if len(flushed) <= hdrlen + 10:
        return  # too short for a header
    datalen = int.from_bytes(flushed[hdrlen:hdrlen + 4], "big")
    reslen = int.from_bytes(flushed[hdrlen + 4:hdrlen + 8], "big")
    hdrlen += 10
    limit = ctx.max_object_size()
    if datalen > limit:
        ctx.debug("binhex: data fork over the size limit")
        return
    if reslen > limit:
        reslen = 0
    name = flushed[1:1 + namelen].split(b"\0")[0].decode("latin-1") or None
    fork = flushed[hdrlen:hdrlen + datalen]
    if len(fork) < datalen:
        if at_eof and fork:
            yield Extracted(bytes(fork), name=name)
        return
    if fork:
        yield Extracted(bytes(fork), name=name)
    rest = flushed[hdrlen + datalen:]
    if not rest or reslen < 5:
        return
    res = rest[2:2 + reslen]
    if len(res) == reslen or at_eof:
        if res:
            yield Extracted(bytes(res), name=name)


def _decode(data: bytes, ctx: UnpackContext) -> tuple[bytes, bool]:
    """The decoded bytes libclamav gets to handle, and whether the file ended
    (rather than a bad character stopping the decoding)."""
    first_end = min((i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0), default=-1)
    if first_end < 0:
        return b"", True
    stream = data[first_end:]
    body = stream.lstrip(b"\r\n")
    if not body:
        return b"", True
    if body[0] != 0x3A:  # ':'
        return b"", False
    chars = body.translate(None, b"\r\n:")
    mapped = chars.translate(_TO_B64)
    bad = mapped.find(b"\xff")
    at_eof = bad < 0
    if not at_eof:
        mapped = mapped[:bad]
    ctx.check()
    usable = len(mapped) - (1 if len(mapped) % 4 == 1 else 0)
    mapped = mapped[:usable]
    padded = mapped + b"=" * (-len(mapped) % 4)
    raw = base64.b64decode(padded) if padded else b""
    expanded, boundaries = _expand_runs(raw, ctx)
    if at_eof:
        return expanded, True
    # stopped by a bad character: only whole chunks were ever written
    return expanded[:boundaries], False


def _expand_runs(raw: bytes, ctx: UnpackContext) -> tuple[bytes, int]:
    """Undo the 0x90 run-length coding; also where the last chunk ended."""
    out = bytearray()
    pending = 0  # bytes since the last chunk boundary
    last_boundary = 0
    last = 0
    limit = ctx.max_object_size() * 2 + 8192
    i, n = 0, len(raw)

    def grew(count: int) -> None:
        nonlocal pending, last_boundary
        pending += count
        if pending >= _FLUSH:
            pending = 0
            last_boundary = len(out)

    while i < n:
        j = raw.find(bytes([_RUN]), i)
        end = n if j < 0 else j
        if end > i:
            # plain bytes: a chunk boundary can fall inside the segment
            seg = raw[i:end]
            room = _FLUSH - pending
            if len(seg) >= room:
                out += seg[:room]
                grew(room)
                rest = seg[room:]
                while len(rest) >= _FLUSH:
                    out += rest[:_FLUSH]
                    grew(_FLUSH)
                    rest = rest[_FLUSH:]
                out += rest
                grew(len(rest))
            else:
                out += seg
                grew(len(seg))
            last = raw[end - 1]
        if j < 0:
            break
        if j + 1 >= n:
            break  # a marker without its count
        count = raw[j + 1]
        if count == 0:
            out.append(_RUN)
            last = _RUN
            grew(1)
        elif count > 1:
            out += bytes([last]) * (count - 1)
            grew(count - 1)
        i = j + 2
        if len(out) > limit:
            ctx.check()
            break
    return bytes(out), last_boundary
