"""The zip layout and the search for its central directory, as ClamAV does it.

Shared by file typing (an OOXML document is a zip typed by the names its
central directory lists) and the zip unpacker, so it sits below both.
"""

from __future__ import annotations

import struct

LOCAL_MAGIC = b"PK\x03\x04"
CENTRAL_MAGIC = b"PK\x01\x02"
END_MAGIC = b"PK\x05\x06"
SPANNED_MAGIC = b"PK\x07\x08"

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
CENTRAL_HEADER = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
LOCAL_SIZE = LOCAL_HEADER.size
CENTRAL_SIZE = CENTRAL_HEADER.size
END_SIZE = 22

# Candidate end records tried before giving up on finding the central
# directory: a file full of fake end records must not cost minutes.
MAX_END_CANDIDATES = 4096


def find_central_directory(data, check=None) -> int | None:
    """Offset of the central directory, as ClamAV's backward search finds it."""
    size = len(data)
    end = size - END_SIZE + 4  # an end record needs 22 bytes, at offset > 0
    tried = 0
    while end > 4:
        pos = _rfind(data, END_MAGIC, 1, end)
        if pos < 0:
            return None
        tried += 1
        if tried > MAX_END_CANDIDATES:
            return None
        if check is not None and tried % 256 == 0:
            check()
        (pointer,) = struct.unpack_from("<I", data, pos + 16)
        if pointer + CENTRAL_SIZE <= size:
            return pointer or None  # ClamAV treats offset 0 as "not found"
        end = pos + 3
    return None


def _rfind(data, needle: bytes, start: int, end: int) -> int:
    if hasattr(data, "rfind"):  # bytes, bytearray, mmap
        return data.rfind(needle, start, end)
    # memoryview has no rfind: search backwards in bounded windows.
    window = 1 << 16
    hi = end
    while hi > start:
        lo = max(start, hi - window)
        pos = bytes(data[lo:hi]).rfind(needle)
        if pos >= 0:
            return lo + pos
        hi = lo + len(needle) - 1 if lo > start else start
    return -1
