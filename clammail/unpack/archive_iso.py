"""ISO 9660 images, walked the way ClamAV 1.4.6 walks them.

ClamAV finds an image by its volume descriptors ("\\x01CD001" followed by
another "CD001" one sector later), then lists the primary directory tree
and, when the image has a Joliet descriptor, the Joliet tree too: a file
present in both is scanned twice (clamscan --allmatch reports it twice).
Rock Ridge, El Torito and UDF are not read. Interleaved files are skipped,
and at most 1024 directory blocks are visited per tree.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

SYSTEM_AREA = 32768  # 16 sectors of 2048 bytes precede the descriptors
MAX_DIR_BLOCKS = 1024
_JOLIET_LEVELS = {0x40: 1, 0x43: 2, 0x45: 3}


@dataclass
class IsoFile:
    name: str
    size: int
    start_block: int  # in the image's block numbering


class _Tree:
    def __init__(self, data, base: int, sector: int, block: int, joliet: bool):
        self.data = data
        self.base = base
        self.sector = sector
        self.block = block
        self.joliet = joliet
        self.visited: set[int] = set()
        self.root = (0, 0)  # (block, length) of the root directory

    def block_offset(self, number: int) -> int | None:
        per_sector = 2048 // self.block
        if number > ((len(self.data) - self.base) // self.sector) * per_sector:
            return None
        offset = self.base + (number // per_sector) * self.sector + (number % per_sector) * self.block
        if offset + self.block > len(self.data):
            return None
        return offset

    def name(self, raw: bytes) -> str:
        if self.joliet:
            text = raw[: len(raw) - len(raw) % 2].decode("utf-16-be", "replace")
        else:
            text = raw.decode("latin-1")
        return text.split(";", 1)[0]

    def files(self, block: int, length: int, check) -> Iterator[IsoFile]:
        if length < 34:
            return
        while length:
            if len(self.visited) > MAX_DIR_BLOCKS:
                return
            current, in_block = block, min(self.block, length)
            block, length = block + 1, length - in_block
            if current in self.visited:
                continue
            self.visited.add(current)
            offset = self.block_offset(current)
            if offset is None:
                return
            check()
            record = bytes(self.data[offset:offset + self.block])
            pos, left = 0, in_block
            while left:
                size = record[pos]
                if not size:
                    break
                if size > left:
                    length = 0  # a record running into the next block: stop here
                    break
                if size < 34:
                    pos, left = pos + size, left - size
                    continue
                name_len = record[pos + 32]
                if name_len == 1 and record[pos + 33] in (0, 1):  # "." and ".."
                    pos, left = pos + size, left - size
                    continue
                name_len = min(name_len, left - 33)
                name = self.name(record[pos + 33:pos + 33 + name_len])
                (extent,) = struct.unpack_from("<I", record, pos + 2)
                extent += record[pos + 1]
                (file_size,) = struct.unpack_from("<I", record, pos + 10)
                flags, unit, gap = record[pos + 25], record[pos + 26], record[pos + 27]
                if not (unit or gap):
                    if flags & 2:
                        yield from self.files(extent, file_size, check)
                    else:
                        yield IsoFile(name, file_size, extent)
                pos, left = pos + size, left - size

    def read(self, entry: IsoFile, limit: int) -> bytes | None:
        """The file's data (at most `limit` bytes), None when it runs past the image."""
        out = bytearray()
        block, remaining = entry.start_block, entry.size
        while remaining and len(out) < limit:
            offset = self.block_offset(block)
            if offset is None:
                return None
            take = min(remaining, self.block)
            out += self.data[offset:offset + take]
            remaining -= take
            block += 1
        return bytes(out[:limit])


def find_descriptor(data) -> int | None:
    """Offset of the primary volume descriptor, if the data holds an ISO image."""
    view = data if isinstance(data, bytes) else bytes(data[: min(len(data), 1 << 20)])
    pos = view.find(b"\x01CD001", SYSTEM_AREA)
    while pos >= 0:
        if view.find(b"CD001", pos + 6 + 2043 - 1, pos + 6 + 2443 + 5) >= 0:
            return pos
        pos = view.find(b"\x01CD001", pos + 1)
    return None


def trees(data, offset: int) -> Iterator[_Tree]:
    """The primary tree and, if there is one, the Joliet tree, as ClamAV sets them up."""
    if offset < SYSTEM_AREA or offset + 2454 > len(data):
        return
    primary = bytes(data[offset:offset + 2454])
    following = primary.find(b"CD001", 2049)
    if following < 0:
        return
    sector = following - 1
    if sector * 16 > offset:
        return
    (block,) = struct.unpack_from("<I", primary, 128)
    block &= 0xFFFF
    if block not in (512, 1024, 2048):
        return
    base = offset - sector * 16
    joliet = _joliet_descriptor(data, base, sector)
    for descriptor, is_joliet in ((primary, False), (joliet, True)):
        if descriptor is None or descriptor[156 + 26] or descriptor[156 + 27]:
            continue  # no such tree, or its root is interleaved
        tree = _Tree(data, base, sector, block, is_joliet)
        (root,) = struct.unpack_from("<I", descriptor, 156 + 2)
        (root_size,) = struct.unpack_from("<I", descriptor, 156 + 10)
        tree.root = (root + descriptor[156 + 1], root_size)
        yield tree


def _joliet_descriptor(data, base: int, sector: int) -> bytes | None:
    for number in range(16, 32):
        start = base + number * sector
        if start + 2048 > len(data):
            return None
        descriptor = bytes(data[start:start + 2048])
        if descriptor[0] == 0xFF or descriptor[1:6] != b"CD001":
            return None
        if descriptor[0] != 2 or descriptor[88:90] != b"\x25\x2f":
            continue
        if descriptor[156 + 26] or descriptor[156 + 27]:
            continue
        if descriptor[90] in _JOLIET_LEVELS:
            return descriptor
    return None


def iso_files(data, offset: int, check) -> Iterator[tuple[_Tree, IsoFile]]:
    """Every file of every tree, in ClamAV's order."""
    for tree in trees(data, offset):
        for entry in tree.files(*tree.root, check):
            yield tree, entry
