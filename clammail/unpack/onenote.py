"""OneNote sections (CL_TYPE_ONENOTE): the files embedded in a .one document.

OneNote keeps an attached file in a FileDataStoreObject (MS-ONESTORE
2.6.13): a 16-byte GUID, the data's length as a 64-bit number, 12 reserved
bytes, then the data. ClamAV 1.4.6 (libclamav_rust/src/onenote.rs) first
hands the document to the onenote_parser crate and, when that cannot read
it, falls back to a plain search, which is what clammail does for every
document:

- find the next FileDataStoreObject GUID anywhere after the previous object;
- read the length from the low 32 bits of the length field (ClamAV reads
  four bytes of the eight);
- the data follows the 36-byte header; an object whose data runs past the
  end of the document ends the search, and so does a file that a limit
  keeps from being scanned (MaxScanSize, MaxFiles).

Each object is scanned as a file of its own, unnamed. For documents the
crate does read (real OneNote 2010+ sections), ClamAV takes the files from
the page tree instead, last first, and skips objects no page refers to;
clammail finds the same files in document order (see the README).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext

# The document's magic, {7B5C52E4-D88C-4DA7-AEB1-5378D02996D3} as stored.
ONENOTE_MAGIC = bytes.fromhex("e4525c7b8cd8a74daeb15378d02996d3")
# {BDE316E7-2665-4511-A4C4-8D4D0B7A9EAC}: the header of a FileDataStoreObject.
FILE_DATA_STORE = bytes.fromhex("e716e3bd65261145a4c48d4d0b7a9eac")
# guidHeader, cbLength (8), unused (4), reserved (8): ClamAV's packed struct.
FILE_DATA_HEADER_SIZE = 36
# A compiled literal searches a memoryview too, which has no find().
_FILE_DATA_STORE = re.compile(re.escape(FILE_DATA_STORE))


def unpack_onenote(data, ctx: UnpackContext) -> Iterator[Extracted]:
    if bytes(data[:16]) != ONENOTE_MAGIC:
        return
    view = memoryview(data)
    pos = 0
    while True:
        ctx.check()
        found = _FILE_DATA_STORE.search(data, pos)
        if found is None or found.start() + 20 > len(data):
            return
        pos = found.start()
        (length,) = struct.unpack_from("<I", data, pos + 16)
        start = pos + FILE_DATA_HEADER_SIZE
        end = start + length
        if end > len(data):
            ctx.debug(f"onenote: file data at {pos} runs past the end")
            return
        left = ctx.scan_size_left()
        if left is not None and length > left:
            raise LimitExceeded("MaxScanSize")  # ClamAV stops at the first file a limit refuses
        yield Extracted(view[start:end], name=None)
        pos = end
