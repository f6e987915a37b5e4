"""Path commands (SCAN, CONTSCAN, MULTISCAN, ALLMATCHSCAN, RAWSCAN) as clamd walks them.

clamd walks a path with libclamav's cli_ftw() and answers from a callback;
this module does the same walk with the same decisions, so that replies are
the same line for line: which entries are skipped silently (symlinks that
are not followed), which are reported (missing paths, special files at the
top, excluded paths), the order (in each directory, files before
directories, then by inode number), when a walk stops (SCAN at the first
detection), and when the closing "<path>: OK" is sent (nothing was found and
not everything failed).

The walk yields `Reply`s and `File`s; the worker that runs it scans each
`File` and reports an outcome back with `Walk.scanned`.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

# The texts of libclamav's cl_strerror() that reach clients.
EOPEN = "Can't open file or directory"


@dataclass(frozen=True)
class WalkOptions:
    """The clamd.conf options that change a walk."""

    exclude: tuple[str, ...] = ()
    follow_dir_symlinks: bool = False
    follow_file_symlinks: bool = False
    cross_filesystems: bool = True
    max_depth: int = 15  # MaxDirectoryRecursion; 0 = no limit

    @classmethod
    def from_config(cls, config) -> WalkOptions:
        return cls(
            exclude=tuple(config["ExcludePath"]),
            follow_dir_symlinks=bool(config["FollowDirectorySymlinks"]),
            follow_file_symlinks=bool(config["FollowFileSymlinks"]),
            cross_filesystems=bool(config["CrossFilesystems"]),
            max_depth=int(config["MaxDirectoryRecursion"]),
        )


@dataclass(frozen=True)
class Reply:
    """A reply line about a path that is not scanned: `<path>: <text>`."""

    path: str
    text: str


@dataclass(frozen=True)
class File:
    """A regular file to scan."""

    path: str


@dataclass
class Tally:
    """clamd's counters for the closing OK."""

    total: int = 0
    errors: int = 0
    infected: int = 0
    stopped: bool = False

    def closing_ok(self) -> bool:
        return self.infected == 0 and self.errors != self.total


@dataclass
class Walk:
    """One walk: call `items()`, scan each File, report back with `scanned()`."""

    path: str
    options: WalkOptions
    multiscan: bool = False
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        self.top = _trim(self.path)
        self._excludes = [re.compile(p) for p in self.options.exclude]
        self._dev: int | None = None
        self._follow_any = self.options.follow_dir_symlinks or self.options.follow_file_symlinks
        self._follow_both = self.options.follow_dir_symlinks and self.options.follow_file_symlinks
        if not self.options.cross_filesystems:
            try:
                self._dev = os.stat(self.top).st_dev
            except OSError:
                self._dev = None

    # -- the walk -------------------------------------------------------

    def items(self) -> Iterator[Reply | File]:
        top = self.top
        excluded = self._excluded(top)
        if excluded:
            if excluded.text:
                yield excluded
            return
        kind, err = self._filetype(top, None)
        if kind == "error":
            yield from self._stat_error(top, err)
            return
        if kind in ("link", "special"):
            self.tally.total += 1
            if kind == "special":
                yield Reply(top, "Not supported file type ERROR")
            return
        if kind == "dir":
            self.tally.total += 1
            depth = self.options.max_depth or (1 << 30)
            yield from self._directory(top, depth)
        else:
            yield from self._file(top)

    def scanned(self, found: int, error: bool) -> None:
        """What scanning the last File gave: detections reported, or an error."""
        if error:
            self.tally.errors += 1
        elif found:
            self.tally.infected += found
            if not self.multiscan and self._stop_at_first:
                self.tally.stopped = True

    _stop_at_first = True  # SCAN and ALLMATCHSCAN stop; CONTSCAN sets False

    def _file(self, path: str) -> Iterator[Reply | File]:
        self.tally.total += 1
        yield File(path)

    def _directory(self, dirname: str, depth: int) -> Iterator[Reply | File]:
        if depth < 0:
            self.tally.total += 1  # "Directory recursion limit reached": logged only
            return
        try:
            scanner = os.scandir(dirname)
        except OSError as exc:
            yield from self._stat_error(dirname, exc)
            return
        entries: list[tuple[int, int, str]] = []
        with scanner:
            for entry in scanner:
                if self.tally.stopped:
                    return
                try:
                    is_link = entry.is_symlink()
                except OSError:
                    is_link = False
                if is_link and not self._follow_any:
                    continue
                fname = ("/" if dirname == "/" else dirname + "/") + entry.name
                excluded = self._excluded(fname)
                if excluded:
                    if excluded.text:
                        yield excluded
                    continue
                hint = "link" if is_link else _dtype(entry)
                kind, err = self._filetype(fname, hint)
                if kind == "error":
                    yield from self._stat_error(fname, err)
                    continue
                if kind in ("link", "special"):
                    self.tally.total += 1
                    continue
                entries.append((1 if kind == "dir" else 0, entry.inode(), fname))
        entries.sort(key=lambda e: (e[0], e[1]))
        for is_dir, _, fname in entries:
            if self.tally.stopped:
                return
            if is_dir:
                yield from self._directory(fname, depth - 1)
            else:
                yield from self._file(fname)

    # -- decisions ------------------------------------------------------

    def _excluded(self, path: str) -> Reply | None:
        for pattern in self._excludes:
            if pattern.search(path):
                return Reply(path, "" if self.multiscan else "Excluded")
        if self._dev is not None:
            try:
                if os.stat(path).st_dev != self._dev:
                    return Reply(path, "" if self.multiscan else "Excluded (another filesystem)")
            except OSError:
                pass
        return None

    def _filetype(self, path: str, hint: str | None) -> tuple[str, OSError | None]:
        """'file', 'dir', 'link' (skipped), 'special' (skipped) or 'error', as get_filetype()."""
        kind = hint
        st = None
        try:
            if kind in (None, "link") and not self._follow_both:
                if kind != "link":
                    st = os.lstat(path)
                    if stat.S_ISLNK(st.st_mode):
                        kind = "link"
                        st = None
                if kind == "link" and not self._follow_any:
                    return "link", None
            if st is None:
                st = os.stat(path)
        except OSError as exc:
            return "error", exc
        if kind in (None, "link"):
            if stat.S_ISDIR(st.st_mode) and (kind != "link" or self.options.follow_dir_symlinks):
                return "dir", None
            if stat.S_ISREG(st.st_mode) and (kind != "link" or self.options.follow_file_symlinks):
                return "file", None
            return ("link" if stat.S_ISLNK(st.st_mode) else "special"), None
        return kind, None

    def _stat_error(self, path: str, exc: OSError | None) -> Iterator[Reply]:
        self.tally.total += 1
        self.tally.errors += 1
        reason = os.strerror(exc.errno) if exc is not None and exc.errno else "Unknown error"
        yield Reply(path, f"File path check failure: {reason}. ERROR")


def contscan(walk: Walk) -> Walk:
    walk._stop_at_first = False
    return walk


def _dtype(entry: os.DirEntry) -> str | None:
    try:
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_file(follow_symlinks=False):
            return "file"
    except OSError:
        return None
    return "special"


def _trim(path: str) -> str:
    """clamd trims a path so that "dir" and "dir/" behave the same."""
    if len(path) < 2:
        return path
    while path.startswith("//"):
        path = path[1:]
    trimmed = path.rstrip("/")
    return trimmed


def open_error(exc: OSError) -> str:
    """Why a file could not be opened for scanning, as clamd says it (before " ERROR")."""
    if exc.errno == errno.EACCES:
        return "Access denied."
    return EOPEN
