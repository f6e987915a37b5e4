"""TNEF (winmail.dat): the attachments inside, as libclamav's tnef.c finds them.

A TNEF stream is a signature, a key, then records: level (1 message, 2
attachment), a 32-bit tag-and-type, a 32-bit length, the data, a 16-bit
checksum. libclamav writes the data of every attachment-data record to the
current output file, which an attachment-title record names and a
message-level record closes; data that never gets a name is lost, except in
the last file, which is called "tnef". The files are scanned after the whole
stream was read, unless it has a format error (a record longer than the file,
a negative length, an unknown level); a stream that just stops early (in a
record header or a checksum) is scanned as far as it got.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from clammail.unpack.base import Extracted, UnpackContext

TNEF_SIGNATURE = 0x223E9F78
LVL_MESSAGE = 0x01
LVL_ATTACHMENT = 0x02
ATT_ATTACHDATA = 0x800F
ATT_ATTACHTITLE = 0x8010


class _FormatError(Exception):
    pass


class _Output:
    """A fileblob: data is kept in memory until the file gets a name."""

    def __init__(self) -> None:
        self.name: str | None = None
        self.data = bytearray()


def unpack_tnef(data: bytes | memoryview, ctx: UnpackContext) -> Iterator[Extracted]:
    buf = bytes(data)
    if len(buf) < 6 or struct.unpack_from("<I", buf, 0)[0] != TNEF_SIGNATURE:
        return
    files: list[Extracted] = []
    current: _Output | None = None
    pos = 6  # signature and key
    limit = ctx.max_object_size()

    def close(output: _Output | None) -> None:
        # a named file with data is kept for the scan; unnamed data is lost
        if output is not None and output.name is not None and output.data:
            files.append(Extracted(bytes(output.data), name=output.name))

    try:
        while True:
            ctx.check()
            if pos >= len(buf):
                break
            level = buf[pos]
            pos += 1
            if level == 0:
                break
            if pos + 8 > len(buf):
                # a record header cut short ends the stream; what was read is
                # scanned (clamd 1.4.6 does, whatever its read error says)
                break
            tag_type = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
            length = struct.unpack_from("<i", buf, pos)[0]
            pos += 4
            tag = tag_type & 0xFFFF
            if length == 0:
                continue
            if length < 0:
                raise _FormatError("negative record length")
            if level == LVL_MESSAGE:
                close(current)
                current = _Output()
            elif level == LVL_ATTACHMENT:
                if tag == ATT_ATTACHTITLE:
                    if current is None:
                        current = _Output()
                    if current.name is None:
                        title = buf[pos:pos + length]
                        if len(title) < length:
                            raise _FormatError("truncated attachment title")
                        current.name = title.split(b"\0")[0].decode("latin-1")
                elif tag == ATT_ATTACHDATA:
                    if current is None:
                        current = _Output()
                    chunk = buf[pos:pos + length]
                    if len(current.data) + len(chunk) <= limit:
                        current.data += chunk
            else:
                raise _FormatError(f"unknown level {level}")
            if pos + length > len(buf):
                raise _FormatError("record longer than the file")
            pos += length + 2  # the checksum, not verified; its absence ends the stream
    except _FormatError as exc:
        ctx.debug(f"tnef: {exc}: nothing is scanned")
        return
    if current is not None:
        if current.name is None:
            current.name = "tnef"
        close(current)
    yield from files
