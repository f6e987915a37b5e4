"""The clean cache: objects already found clean are not scanned again.

Like clamd's, it remembers (MD5, size) of clean objects, at most CacheSize
of them, least recently used dropped first. It belongs to one engine, so a
database reload starts with an empty cache.
"""

from __future__ import annotations

from collections import OrderedDict


class CleanCache:
    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self._entries: OrderedDict[tuple[bytes, int], None] = OrderedDict()

    def is_clean(self, md5: bytes, size: int) -> bool:
        key = (md5, size)
        if key in self._entries:
            self._entries.move_to_end(key)
            return True
        return False

    def add_clean(self, md5: bytes, size: int) -> None:
        self._entries[(md5, size)] = None
        self._entries.move_to_end((md5, size))
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
