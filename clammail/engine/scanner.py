"""The engine: scan one object, and recursively everything inside it.

`Engine` holds the compiled database and the scan options; it is built once
(before worker processes fork) and then only read. Each scan creates a
`ScanJob`, which carries the per-scan state clamd keeps in its scan context:
the detections so far, the bytes and files counted against the limits, the
deadline, and the container path used by logical signatures.

Order of work for one object, as in libclamav: type it, look it up in the
clean cache, match body and logical signatures on its bytes (and on its
normalized views), then its hashes, then its executable structure, then open
it and scan what is inside.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import logging
import mmap
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clammail import mapped
from clammail.config.options import ENGINE_DEFAULTS
from clammail.engine.cache import CleanCache
from clammail.engine.objectinfo import ObjectInfo
from clammail.engine.textnorm import normalize_text
from clammail.formats.filetypes import (
    RAW_TARGET,
    TEXT_TYPES,
    FileType,
    Target,
    contains_html,
    detect,
)
from clammail.signatures.database import Database
from clammail.unpack import unpacker_for
from clammail.unpack.base import Extracted, LimitExceeded, ScanTimeout
from clammail.unpack.embedded import embedded_objects
from clammail.unpack.ishield import overlay_objects
from clammail.unpack.packers import CORRUPTED_INPUT, unpack_packed_pe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanOptions:
    """Engine options by their clamd.conf names, plus the per-scan ALLMATCH switch."""

    values: dict = field(default_factory=lambda: dict(ENGINE_DEFAULTS))

    def __getitem__(self, name: str):
        return self.values[name]

    @classmethod
    def from_mapping(cls, overrides: dict) -> ScanOptions:
        unknown = set(overrides) - set(ENGINE_DEFAULTS)
        if unknown:
            raise KeyError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        return cls({**ENGINE_DEFAULTS, **overrides})


@dataclass
class ScanResult:
    detections: list[str] = field(default_factory=list)
    error: str | None = None  # clamd's error text when the object could not be scanned
    scanned_bytes: int = 0

    @property
    def infected(self) -> bool:
        return bool(self.detections)


class _StopScan(Exception):
    """A detection ends the scan (no ALLMATCH)."""


class Engine:
    def __init__(self, database: Database, options: ScanOptions | None = None,
                 matcher_backend: str | None = None):
        from clammail.engine.sigmatch import SignatureMatcher

        self.database = database
        self.options = options or ScanOptions()
        self.matcher = SignatureMatcher(database, backend=matcher_backend, options=self.options)
        self.cache = CleanCache(self.options["CacheSize"]) if not self.options["DisableCache"] else None
        self._ignored = database.ignored_names

    def with_options(self, overrides: dict) -> Engine:
        """The same compiled database with some options changed (RAWSCAN's
        switches, for one): nothing is recompiled; the twin has its own cache."""
        twin = copy.copy(self)
        twin.options = ScanOptions.from_mapping({**self.options.values, **overrides})
        twin.cache = None if twin.options["DisableCache"] else CleanCache(twin.options["CacheSize"])
        return twin

    # -- entry points -----------------------------------------------------

    def scan_bytes(self, data: bytes | memoryview, name: str | None = None,
                   allmatch: bool = False) -> ScanResult:
        job = ScanJob(self, allmatch)
        return job.run(data, name)

    def scan_file(self, path: str, allmatch: bool = False) -> ScanResult:
        """Scan a file by path. Errors opening it come back as `ScanResult.error`."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
        except OSError as exc:
            return ScanResult(error=_oserror_text(exc))
        try:
            return self.scan_fd(fd, name=path, allmatch=allmatch)
        finally:
            os.close(fd)

    def scan_fd(self, fd: int, name: str | None = None, allmatch: bool = False) -> ScanResult:
        """Scan an open file (SCAN, FILDES, INSTREAM's spool file, `clammail scan`)
        through a read-only mapping: its bytes are never copied into memory as a whole."""
        try:
            data = mapped.map_fd(fd)
        except (OSError, ValueError) as exc:
            # Not mappable (a pipe, a special file): read it.
            try:
                data = _read_all(fd)
            except OSError:
                return ScanResult(error=_oserror_text(exc))
        try:
            return self.scan_bytes(data, name, allmatch)
        finally:
            if isinstance(data, mmap.mmap):
                _close_mapping(data)


def _close_mapping(mapping: mmap.mmap) -> None:
    """Unmap a scanned file. A view of it may outlive the scan in a reference
    cycle (a traceback, an unfinished generator): collect those, and failing
    that leave the unmapping to the garbage collector rather than fail."""
    try:
        mapping.close()
    except BufferError:
        gc.collect()
        try:
            mapping.close()
        except BufferError:
            log.debug("a view of a scanned file outlived its scan")


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _oserror_text(exc: OSError) -> str:
    return f"{exc.strerror or exc}"


class ScanJob:
    """One top-level scan: the state clamd keeps in its scan context."""

    def __init__(self, engine: Engine, allmatch: bool):
        self.engine = engine
        self.options = engine.options
        self.allmatch = allmatch
        self.detections: list[str] = []
        self.heuristics: list[str] = []  # potentially unwanted: reported if nothing else is
        self.scanned_bytes = 0
        self.files = 0
        # Limits hit so far: an object whose scan hit one was not fully
        # scanned and must not enter the clean cache (ClamAV's emax_reached).
        self.limits_hit = 0
        self.deadline = (
            time.monotonic() + self.options["MaxScanTime"] / 1000.0
            if self.options["MaxScanTime"]
            else None
        )
        # The objects from the top level down to the one being scanned: their
        # hashes decide the allow list (.fp), their types feed Container:.
        self._stack: list[ObjectInfo] = []
        # > 0 while scanning inside a PE that libclamav rebuilt (unpackers) or
        # cut out of another (embedded PE): its ctx->corrupted_input, which
        # turns the broken-executable heuristic off for PE files in there.
        self.corrupted_input = 0

    # -- the UnpackContext interface --------------------------------------

    def alert(self, name: str) -> None:
        """A heuristic verdict: final at once with HeuristicScanPrecedence, else held back."""
        if not self.options["HeuristicAlerts"]:
            return
        if self.options["HeuristicScanPrecedence"] or self.allmatch:
            # clamscan --allmatch names a heuristic once per file, however
            # often it fired (two encrypted zip entries: one line).
            if name not in self.detections:
                self.report(name)
        elif name not in self.heuristics:
            self.heuristics.append(name)

    def check(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ScanTimeout()

    def max_object_size(self) -> int:
        limits = [v for v in (self.options["MaxFileSize"],) if v]
        if self.options["MaxScanSize"]:
            limits.append(max(0, self.options["MaxScanSize"] - self.scanned_bytes))
        return min(limits) if limits else 1 << 62

    def limit_exceeded(self, limit: str) -> None:
        self._exceeded(limit)

    def scan_size_left(self) -> int | None:
        if not self.options["MaxScanSize"]:
            return None
        return max(0, self.options["MaxScanSize"] - self.scanned_bytes)

    def option(self, name: str):
        return self.options[name]

    def files_scanned(self) -> int:
        return self.files

    def debug(self, message: str) -> None:
        log.debug("%s", message)

    # -- reporting --------------------------------------------------------

    def report(self, name: str) -> None:
        """A signature matched the current object."""
        if name in self.engine._ignored:
            return
        if self._allowed():
            return
        self.detections.append(name)
        if not self.allmatch:
            raise _StopScan()

    def _allowed(self) -> bool:
        allow = self.engine.database.allow_hashes
        if not len(allow):
            return False
        for info in self._stack:
            for algo in allow.algorithms():
                digest = _digest(info, algo)
                if allow.lookup(digest, info.size):
                    return True
        return False

    # -- the recursion ----------------------------------------------------

    def run(self, data: bytes | memoryview, name: str | None) -> ScanResult:
        # MaxFiles counts every object scanned, the top-level one too (clamscan
        # --max-files=2 scans one member of an archive).
        self.files = 1
        try:
            self.scan_object(data, name=name)
        except _StopScan:
            pass
        except ScanTimeout:
            self._exceeded("MaxScanTime")
        if not self.detections and self.heuristics:
            self.detections.append(self.heuristics[0])
        elif self.allmatch:
            self.detections.extend(h for h in self.heuristics if h not in self.detections)
        return ScanResult(self.detections, scanned_bytes=self.scanned_bytes)

    def _exceeded(self, limit: str) -> None:
        self.limits_hit += 1
        if limit == "MaxFiles" and self.options["MaxFiles"]:
            # libclamav's count only grows: whoever hit the limit, later
            # objects are refused too.
            self.files = max(self.files, self.options["MaxFiles"])
        if self.options["AlertExceedsMax"]:
            try:
                self.alert(f"Heuristics.Limits.Exceeded.{limit}")
            except _StopScan:
                pass

    def scan_object(self, data: bytes | memoryview, name: str | None = None,
                    ftype: FileType | None = None) -> None:
        if len(data) <= SMALL_DATA:
            return  # libclamav: "Small data", not scanned at all
        # libclamav's recursion stack holds MaxRecursion levels, the top-level
        # object's included: zip(zip(x)) with MaxRecursion 2 does not reach x.
        depth = len(self._stack)
        if depth >= self.options["MaxRecursion"]:
            self._exceeded("MaxRecursion")
            return
        size = len(data)
        if self.options["MaxFileSize"] and size > self.options["MaxFileSize"]:
            self._exceeded("MaxFileSize")
            return
        if self.options["MaxScanSize"] and self.scanned_bytes + size > self.options["MaxScanSize"]:
            self._exceeded("MaxScanSize")
            return
        self.check()
        if ftype not in _UNCOUNTED:
            self.scanned_bytes += size
        ftype = ftype or detect(data, extra_formats=self.options["ExtraArchiveFormats"])
        info = ObjectInfo(data, ftype, tuple(i.ftype for i in self._stack), name)
        cache = self.engine.cache
        md5 = _digest(info, "md5") if cache is not None else b""
        if cache is not None and cache.is_clean(md5, size):
            return
        found_before = len(self.detections) + len(self.heuristics)
        limits_before = self.limits_hit
        self._stack.append(info)
        try:
            self._scan_info(info)
        finally:
            self._stack.pop()
        if (cache is not None and len(self.detections) + len(self.heuristics) == found_before
                and self.limits_hit == limits_before):
            cache.add_clean(md5, size)

    def _scan_info(self, info: ObjectInfo) -> None:
        """libclamav's order: open containers first, then match the raw bytes
        (and hashes), then the passes that depend on the raw scan's findings:
        executable structure, normalized text, binary data as target 14.
        A mapped file's pages are given back after each pass (`mapped.release`)."""
        engine = self.engine
        ftype = info.ftype
        parse_html = self.options["ScanHTML"]
        if ftype not in _AFTER_RAW:
            self._unpack(info, ftype)
        # clamd matches HTML only in its normalized views while HTML parsing
        # is on (DOC_CONF_HTML_SKIPRAW), never the raw bytes.
        if ftype in _CONTAINER_ONLY:
            return
        if not (ftype is FileType.HTML and parse_html):
            engine.matcher.match_buffer(info.data, RAW_TARGET.get(ftype, 0), info, self.report)
            mapped.release(info.data)
            self._match_hashes(info)
            # The raw scan also opens archives and executables embedded
            # anywhere in the object (self-extractors, appended zips).
            self._scan_children(embedded_objects(info.data, ftype, self), info)
        if ftype in (FileType.MSEXE, FileType.ELF, FileType.MACHO):
            # libclamav's raw scan of a PE scans the PE files embedded in it
            # before its PE scanner looks at the file's own structure, and
            # tries its unpackers last.
            self._unpack(info, ftype)
            pe_broken_off = ftype is FileType.MSEXE and self.corrupted_input
            engine.matcher.match_executable(info, self.report, self.options,
                                            None if pe_broken_off else self.alert,
                                            after_sections=self._overlay_scanner(info))
            mapped.release(info.data)
            if ftype is FileType.MSEXE and self.options["ScanPE"]:
                strict = self.options["AlertBrokenExecutables"] and not self.corrupted_input
                self._scan_children(unpack_packed_pe(info.data, self, strict), info)
        elif ftype in TEXT_TYPES:
            if ftype is FileType.TEXT_ASCII and parse_html and contains_html(info.data):
                self._unpack(info, FileType.HTML)  # found by the raw scan past the typing window
            else:
                self._match_normalized_text(info)
                mapped.release(info.data)
        elif ftype is FileType.BINARY_DATA:
            # clamd scans unrecognised data a second time as CL_TYPE_OTHER
            # (target 14), hashes included: ALLMATCH lists show names twice.
            engine.matcher.match_buffer(info.data, Target.OTHER, info, self.report)
            mapped.release(info.data)
            self._match_hashes(info)

    def _overlay_scanner(self, info: ObjectInfo) -> Callable[[], None] | None:
        """The PE scanner's look at the overlay (InstallShield data after the sections)."""
        if info.ftype is not FileType.MSEXE:
            return None
        return lambda: self._scan_children(overlay_objects(info.data, info.executable, self), info)

    def _match_normalized_text(self, info: ObjectInfo) -> None:
        limit = self.options["MaxScriptNormalize"]
        if limit and info.size > limit:
            return
        normalized = normalize_text(info.data)
        self.engine.matcher.match_buffer(normalized, Target.TEXT, info, self.report)

    def _unpack(self, info: ObjectInfo, ftype: FileType) -> None:
        unpack = unpacker_for(ftype)
        if unpack is None:
            return
        function, switch = unpack
        if switch is not None and not self.options[switch]:
            return
        self._scan_children(function(info.data, self), info)

    def _scan_children(self, children, info: ObjectInfo) -> None:
        try:
            for child in children:
                self.check()
                self._scan_child(child, info)
        except LimitExceeded as exc:
            self._exceeded(exc.limit)
        finally:
            mapped.release(info.data)

    def _scan_child(self, child: Extracted, parent: ObjectInfo) -> None:
        if child.view_target is not None:
            # A normalized view of the parent: matched, not typed or opened.
            view = ObjectInfo(child.data, parent.ftype, parent.parents, parent.name)
            self.engine.matcher.match_buffer(child.data, child.view_target, view, self.report)
            return
        if len(child.data) <= SMALL_DATA:
            return  # never scanned, so not counted against MaxFiles either
        max_files = self.options["MaxFiles"]
        if child.ftype not in _UNCOUNTED:
            self.files += 1
            if max_files and self.files > max_files:
                raise LimitExceeded("MaxFiles")
        elif child.ftype is FileType.ANY and max_files and self.files >= max_files:
            raise LimitExceeded("MaxFiles")  # the parser's own check before it
        corrupted = bool(child.extra.get(CORRUPTED_INPUT))
        self.corrupted_input += corrupted
        try:
            self.scan_object(child.data, child.name, child.ftype)
        finally:
            self.corrupted_input -= corrupted

    def _match_hashes(self, info: ObjectInfo) -> None:
        index = self.engine.database.file_hashes
        for algo in _ALGO_ORDER:
            if algo in index.algorithms() and index.has_size(algo, info.size):
                for sig in index.lookup(_digest(info, algo), info.size):
                    self.report(sig)


_ALGO_ORDER = ("md5", "sha1", "sha256")

# Objects of at most this many bytes are not scanned (not matched, not hashed,
# not counted against MaxFiles): clamd 1.4.6 reports a 5-byte file OK even
# when its hash is in an .hdb, and finds a 6-byte one.
SMALL_DATA = 5

# Types whose own parsing comes after the raw scan in libclamav (the rest of
# the containers are opened before it, so their contents are reported first).
_AFTER_RAW = frozenset(
    {FileType.MSEXE, FileType.ELF, FileType.MACHO, FileType.BINARY_DATA} | TEXT_TYPES
)


# Installer data found inside PE files: libclamav opens these objects but
# never matches or hashes them (clammail.unpack.embedded).
_CONTAINER_ONLY = frozenset({FileType.NULSFT, FileType.AUTOIT, FileType.ISHIELD_MSI})
# Objects libclamav checks against MaxFileSize and MaxScanSize but does not
# count (in MaxFiles, in the bytes scanned): those layers, and objects given
# as CL_TYPE_ANY, which it only matches (the script of an NSIS installer).
_UNCOUNTED = _CONTAINER_ONLY | {FileType.ANY}


def _digest(info: ObjectInfo, algo: str) -> bytes:
    """A hash of the object, computed once per object (a mapped file piece by piece,
    each piece's pages given back after it)."""
    digests = info.extra.setdefault("digests", {})
    if algo not in digests:
        data = info.data
        digest = hashlib.new(algo)
        with memoryview(data) as whole:
            for start, stop in mapped.pieces(len(data)):
                with whole[start:stop] as piece:
                    digest.update(piece)
                mapped.release(data, start, stop)
        digests[algo] = digest.digest()
    return digests[algo]

