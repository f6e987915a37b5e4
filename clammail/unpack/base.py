"""The contract between the engine and the unpackers.

An unpacker is a function `unpack(data, ctx) -> Iterator[Extracted]` for one
container family. It yields the objects it finds, one at a time, so the
engine can stop early (a detection without ALLMATCH, a limit reached). It
never writes files and never holds more than it must: decompression is
streamed and stops at `ctx.max_object_size()` bytes.

What the unpacker may not decide itself goes through `ctx`: heuristic
verdicts (`ctx.alert("Heuristics.Encrypted.Zip")`), limits (`ctx.check()`
raises `LimitExceeded` or `ScanTimeout` and the engine turns them into
clamd's answers), and whether a container family is switched on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from clammail.formats.filetypes import FileType


@dataclass
class Extracted:
    """One object found inside a container."""

    data: bytes | memoryview
    name: str | None = None
    # Force a type instead of detecting one (e.g. a decoded HTML part).
    ftype: FileType | None = None
    # A normalized view of the parent (normalized HTML, text, script): matched
    # against signatures of `view_target` (and target 0), never unpacked or
    # hashed as an object of its own.
    view_target: int | None = None
    # Container metadata for .cdb-style rules and the clean cache.
    compressed_size: int | None = None
    encrypted: bool = False
    extra: dict = field(default_factory=dict)


class ScanTimeout(Exception):
    """MaxScanTime ran out."""


class LimitExceeded(Exception):
    """A clamd limit stops the scan of a container: which one, for the heuristic name."""

    def __init__(self, limit: str):
        self.limit = limit  # "MaxScanSize", "MaxFileSize", "MaxRecursion", "MaxFiles"
        super().__init__(limit)


class UnpackContext(Protocol):
    """What an unpacker may ask of the engine for the object it unpacks."""

    def alert(self, name: str) -> None:
        """Report a heuristic detection (clamd's name, e.g. Heuristics.Encrypted.Zip)."""

    def check(self) -> None:
        """Raise ScanTimeout or LimitExceeded when the scan must stop."""

    def max_object_size(self) -> int:
        """The most bytes one extracted object may have (MaxFileSize, MaxScanSize left)."""

    def limit_exceeded(self, limit: str) -> None:
        """A member was left out for a limit ("MaxFileSize", "MaxScanSize") and the
        unpacker goes on: the engine reports it as it does its own (AlertExceedsMax)."""

    def scan_size_left(self) -> int | None:
        """What is left of MaxScanSize (None when it is off): formats differ in
        which limit an oversized member breaks, and ClamAV names MaxScanSize first."""

    def files_scanned(self) -> int:
        """Objects counted against MaxFiles so far in this scan (libclamav's
        scannedfiles): parsers that check the limit before each member use it."""

    def option(self, name: str) -> object:
        """A clamd.conf option value by its name (e.g. "AlertEncryptedArchive")."""

    def debug(self, message: str) -> None:
        """A line for the debug log."""


Unpacker = Callable[[bytes | memoryview, UnpackContext], Iterator[Extracted]]


def first_bytes(out: bytearray, cap: int) -> tuple[memoryview, bool]:
    """The first `cap` bytes of a decompression buffer, and whether there was
    more. A read-only view of the buffer itself: a member cut at MaxFileSize
    (100 MB by default) is not held twice, or three times, while it is copied."""
    more = len(out) > cap
    del out[cap:]
    return memoryview(out).toreadonly(), more
