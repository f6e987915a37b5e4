"""Ignore lists: .ign and .ign2 (docs/AllowLists.md, readdb.c cli_loadign).

A line names a signature to leave out when loading (`Name`), optionally
only the variant whose whole signature line has a given MD5 (`Name:md5`);
the old three-field form `file:line:Name` names it too. clamd applies the
list while loading the other databases, which is why it loads .ign and
.ign2 files first; names produced while scanning (heuristics) are not
affected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from clammail.signatures.common import SignatureError
from clammail.signatures.hashsigs import c_line, c_tokenize

# clamd keeps ignored names in a Boyer-Moore matcher whose patterns are at
# least three bytes; shorter names are padded with blanks and so never match.
_MIN_NAME = 3


class IgnoreList:
    """Signature names to skip while loading; callable as (raw name, line) -> bool."""

    def __init__(self) -> None:
        self._entries: dict[bytes, list[bytes | None]] = {}

    def load(self, lines: Iterable[bytes], path: str) -> None:
        """Add one .ign/.ign2 file, given as clamd's fgets lines."""
        for number, raw in enumerate(lines, 1):
            if raw[:1] == b"#":
                continue
            line = c_line(raw)
            tokens = c_tokenize(line, b":", 4)
            if len(tokens) > 3:
                raise SignatureError("malformed ignore entry: more than three fields",
                                     path, number)
            md5 = None
            if len(tokens) == 1:
                name = line
            elif len(tokens) == 2:
                name, md5_hex = tokens
                try:
                    md5 = bytes.fromhex(md5_hex.decode("ascii"))
                except (ValueError, UnicodeDecodeError):
                    md5 = b""
                if len(md5_hex) != 32 or len(md5) != 16:
                    raise SignatureError("malformed MD5 in ignore entry", path, number)
            else:
                name = tokens[2]
            if not name:
                raise SignatureError("no signature name in ignore entry", path, number)
            if len(name) < _MIN_NAME:
                continue
            self._entries.setdefault(name, []).append(md5)

    def __call__(self, raw_name: bytes, line: bytes) -> bool:
        wanted = self._entries.get(raw_name)
        if not wanted:
            return False
        if None in wanted:
            return True
        return hashlib.md5(line).digest() in wanted

    def ignores_name(self, raw_name: bytes) -> bool:
        """True if the name is ignored in every variant (no MD5 condition)."""
        return None in self._entries.get(raw_name, ())

    @property
    def names(self) -> frozenset[bytes]:
        return frozenset(self._entries)

    def state(self) -> dict[bytes, tuple]:
        """The entries so far: what a cached load depended on (`added_since` its result)."""
        return {name: tuple(md5s) for name, md5s in sorted(self._entries.items())}

    def added_since(self, state: dict[bytes, tuple]) -> dict[bytes, tuple]:
        """The entries loaded after `state` was taken (entries are only ever added)."""
        return {name: tuple(md5s[len(state.get(name, ())):])
                for name, md5s in self._entries.items() if len(md5s) > len(state.get(name, ()))}

    def add_state(self, added: dict[bytes, tuple]) -> None:
        """Load again what `added_since` returned (from a cached load)."""
        for name, md5s in added.items():
            self._entries.setdefault(name, []).extend(md5s)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
