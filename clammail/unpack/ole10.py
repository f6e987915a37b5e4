"""The file inside an OLE1 "Package" object (an Ole10Native stream).

Shared by the OLE2 unpacker (a "\\x01Ole10Native" stream) and the RTF
unpacker (an \\objdata blob that is not OLE2). Layout, as libclamav reads it
(vba_extract.c, cli_scan_ole10): a 32-bit total size; when the stream is
longer than that size plus 4, a 16-bit type, the file name, the source path,
8 unknown bytes and the temporary path (each NUL-terminated), then the
32-bit size of the file and the file itself. Otherwise the file follows the
first size field directly.
"""

from __future__ import annotations


def ole10_payload(stream: bytes) -> bytes | None:
    """The packed file, or None when the header is cut short."""
    if len(stream) < 4:
        return None
    size = int.from_bytes(stream[:4], "little")
    pos = 4
    if len(stream) - size >= 4:
        pos += 2
        for _ in range(2):
            pos = _past_nul(stream, pos)
            if pos is None:
                return None
        pos += 8
        pos = _past_nul(stream, pos)
        if pos is None or pos + 4 > len(stream):
            return None
        size = int.from_bytes(stream[pos: pos + 4], "little")
        pos += 4
    return stream[pos: pos + size]


def _past_nul(data: bytes, pos: int) -> int | None:
    end = data.find(b"\0", pos)
    return None if end < 0 else end + 1
