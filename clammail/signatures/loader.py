"""Loading signature databases from files and directories, as clamd does.

`load_database(paths, options)` returns one immutable `Database`. Each path
is a database file or a directory (clamd's DatabaseDirectory). The rules
follow libclamav readdb.c (cl_load, cli_loaddbdir, cli_load) in 1.4.6:

* A directory loads the files whose names end in a database extension
  (`DATABASE_EXTENSIONS`, case-insensitive), in directory order, except
  that .ign/.ign2 come first (they filter everything after them), then
  daily.cld or daily.cvd (whichever is newer; the .cld on a tie), then
  local.gdb, daily.cfg, .crb, and the rest. No such file: "No supported
  database files found". OfficialDatabaseOnly skips every file but .cvd,
  .cld (and those loaded before that check: ign, daily, local.gdb, cfg).
* .hdu .hsu .mdu .msu .ndu .ldu load only with DetectPUA.
* Names get ".UNOFFICIAL" unless they come from a .cvd or .cld.
* The first malformed line fails the whole load with `SignatureError`
  (file and line); nothing is half-loaded.
* "Known viruses" counts the signatures loaded, allow-list entries
  included, ignored ones and those for other engine levels excluded.

Formats that other modules parse are called by name and imported lazily
(.ndb: `bodysig.load_ndb`, .ldb: `logical.load_ldb`, .yar: `yara.load_yara`);
a format we do not support (bytecode, phishing, icons, certificates ...) is
skipped with one warning per file.
"""

from __future__ import annotations

import errno
import importlib
import io
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from clammail import FLEVEL, forked
from clammail.signatures.common import LoadOptions, SignatureError
from clammail.signatures.cvd import (
    CLAMAV_CVD_KEY,
    CLAMAV_INFO_KEY,
    ContainerKind,
    Member,
    RsaKey,
    kind_of,
    load_members,
    open_container,
    peek_header,
    verify_cvd_file,
)
from clammail.signatures.database import Database, DatabaseInfo
from clammail.signatures.hashsigs import (
    FGETS_CHUNK,
    HashFileParser,
    HashIndexBuilder,
    NameTable,
    Purpose,
    fgets_pieces,
)
from clammail.signatures.lists import IgnoreList

log = logging.getLogger(__name__)

# readdb.h CLI_DBEXT: what a directory load picks up (.info is not on it).
DATABASE_EXTENSIONS = (
    ".db", ".hdb", ".hdu", ".fp", ".mdb", ".mdu", ".hsb", ".hsu", ".sfp", ".msb", ".msu",
    ".ndb", ".ndu", ".ldb", ".ldu", ".sdb", ".zmd", ".rmd", ".pdb", ".gdb", ".wdb", ".cbc",
    ".ftm", ".cfg", ".cvd", ".cld", ".cud", ".cdb", ".cat", ".crb", ".idb", ".ioc", ".yar",
    ".yara", ".pwdb", ".ign", ".ign2", ".imp",
)

# Line buffers clamd reads these formats with (readdb.c): longer lines fail.
_NDB_LINE_LIMIT = FGETS_CHUNK
_LDB_LINE_LIMIT = 32768

# Formats recognised but not supported: skipped with a warning, never fatal.
_UNSUPPORTED = {
    ".db": "old-style body signatures", ".crb": "certificate trust rules",
    ".cbc": "bytecode", ".sdb": "old-style body signatures", ".zmd": "archive metadata",
    ".rmd": "archive metadata", ".wdb": "phishing allow list", ".pdb": "phishing domains",
    ".gdb": "phishing domains", ".ftm": "file type magic", ".idb": "icon signatures",
    ".cdb": "container metadata", ".cat": "catalog files", ".ioc": "OpenIOC",
    ".pwdb": "archive passwords",
}

# extension: (module, function, Database field, line limit, whether it takes `warn`).
# Logical signatures and YARA rules share one list, in load order: clamd
# evaluates them in that order, and a YARA rule can stop the evaluation
# of everything after it (`yara.YaraRule.halts_evaluation`).
_DELEGATED = {
    ".ndb": ("clammail.signatures.bodysig", "load_ndb", "body_signatures", _NDB_LINE_LIMIT,
             False),
    ".ndu": ("clammail.signatures.bodysig", "load_ndb", "body_signatures", _NDB_LINE_LIMIT,
             False),
    ".ldb": ("clammail.signatures.logical", "load_ldb", "logical_signatures", _LDB_LINE_LIMIT,
             True),
    ".ldu": ("clammail.signatures.logical", "load_ldb", "logical_signatures", _LDB_LINE_LIMIT,
             True),
    ".yar": ("clammail.signatures.yara", "load_yara", "logical_signatures", None, True),
    ".yara": ("clammail.signatures.yara", "load_yara", "logical_signatures", None, True),
}

_HASH_PURPOSE = {
    ".hdb": Purpose.FILE, ".hsb": Purpose.FILE, ".hdu": Purpose.FILE, ".hsu": Purpose.FILE,
    ".fp": Purpose.ALLOW, ".sfp": Purpose.ALLOW,
    ".mdb": Purpose.SECTION, ".msb": Purpose.SECTION, ".mdu": Purpose.SECTION,
    ".msu": Purpose.SECTION, ".imp": Purpose.IMPORT,
}

_PUA_ONLY = {".hdu", ".hsu", ".mdu", ".msu", ".ndu", ".ldu"}

# cli_load tests extensions in this order; the first that ends the name wins.
_DISPATCH_ORDER = (
    ".db", ".cvd", ".cld", ".cud", ".crb", ".hdb", ".hsb", ".hdu", ".hsu", ".fp", ".sfp",
    ".mdb", ".msb", ".imp", ".mdu", ".msu", ".ndb", ".ndu", ".ldb", ".ldu", ".cbc", ".sdb",
    ".zmd", ".rmd", ".cfg", ".info", ".wdb", ".pdb", ".gdb", ".ftm", ".ign", ".ign2", ".idb",
    ".cdb", ".cat", ".ioc", ".yar", ".yara", ".pwdb",
)


def database_extension(name: str) -> str | None:
    """The extension cli_load dispatches on, or None for an unknown file."""
    lower = name.lower()
    for ext in _DISPATCH_ORDER:
        if lower.endswith(ext):
            return ext
    return None


def is_database_file(name: str) -> bool:
    """CLI_DBEXT: would a directory load pick this file up?"""
    return name.lower().endswith(DATABASE_EXTENSIONS)


def holds_databases(directory: str) -> bool:
    """Does `directory` hold a database file? (freshclam's first run leaves
    only freshclam.dat behind when it cannot download.)"""
    try:
        return any(is_database_file(name) for name in os.listdir(directory))
    except OSError:
        return False


@dataclass
class _Source:
    """One database file's bytes: a plain file or a container member."""

    path: str  # for messages: the file, or container/member
    name: str  # the name its extension is taken from
    read: Callable[[int], bytes]
    official: bool
    in_container: bool
    size: int = 0  # of a plain file; 0 when unknown


@dataclass
class _Unit:
    """What one database file (or container) added to a load: what the per-file
    cache keeps (`clammail.signatures.dbcache.FileUnits`)."""

    hashes: dict  # Purpose -> (HashIndexBuilder.export(), its name blob)
    records: dict  # as _Loader.records
    signatures: int
    files: list
    skipped: list
    warnings: list
    ignore_added: dict  # ignore-list entries it loaded (IgnoreList.added_since)
    daily_version: tuple[int, int] | None


def _twin_of(path: str) -> str | None:
    """A container's .cvd/.cld twin, whose presence decides whether it loads."""
    kind = path[-4:].lower()
    if kind in (".cvd", ".cld"):
        return path[:-2] + ("l" if kind == ".cvd" else "v") + path[-1]
    return None


def load_database(paths: list[str], options: LoadOptions | None = None, *,
                  cache_dir: str | None = None,
                  keys: tuple[RsaKey, RsaKey] | None = None) -> Database:
    """Load every path (file or directory) into one Database.

    `cache_dir`: keep a compiled copy there and reuse it while no database
    file changed (see `clammail.signatures.dbcache`). `keys`: the (.cvd,
    .info) public keys, ClamAV's unless a test injects its own.
    """
    options = options or LoadOptions()
    cache = fingerprint = units = None
    if cache_dir is not None:
        from clammail.signatures import dbcache

        cache = dbcache.DatabaseCache(cache_dir)
        fingerprint = dbcache.fingerprint(paths, options, keys)
        if fingerprint is not None:
            cached = cache.load(fingerprint)
            if cached is not None:
                return cached
        # Something changed: the unchanged files come from the per-file cache.
        units = dbcache.FileUnits(cache_dir)
    loader = _Loader(options, keys or (CLAMAV_CVD_KEY, CLAMAV_INFO_KEY), units=units)
    try:
        for path in paths:
            loader.load_path(os.fspath(path))
        database = loader.finish()
    except BaseException as exc:
        loader.fail(exc)
        raise
    if units is not None:
        units.finish()
    if cache is not None and fingerprint is not None:
        database.fingerprint = fingerprint
        database.cache_dir = cache_dir
        if not (database.body_signatures or database.logical_signatures):
            cache.store(fingerprint, database)
        # else the engine stores it once, with the matcher it compiles (save_compiled):
        # writing it here too would cost a second or two for nothing.
    return database


class _Loader:
    def __init__(self, options: LoadOptions, keys: tuple[RsaKey, RsaKey], *,
                 units=None, parent: _Loader | None = None) -> None:
        self.options = options
        self.keys = keys
        self.names = NameTable()
        if parent is None:
            self.builders = {p: HashIndexBuilder(self.names) for p in Purpose}
            self.ignore = IgnoreList()
        else:
            # One file's share (`_load_unit`): a name blob per purpose, so that each
            # builder's export carries its own; the ignore lists loaded so far apply.
            self.builders = {p: HashIndexBuilder(NameTable()) for p in Purpose}
            self.ignore = parent.ignore
        self.info = DatabaseInfo()
        self.records: dict[str, list] = {"body_signatures": [], "logical_signatures": []}
        self._daily_version: tuple[int, int] | None = None  # (version, stime)
        # Big hash files parsed by forked children while this process goes on
        # (`_load_hashes`), in load order: (child, its parser here, file path).
        self._hash_jobs: list[tuple[forked.ForkedCall, HashFileParser, str]] = []
        # Children started by this load, sub-loaders included (at most PARALLEL_HASH_FILES).
        self._children = parent._children if parent is not None else [0]
        # The per-file cache (`clammail.signatures.dbcache.FileUnits`), and the files'
        # shares in load order, merged by `finish`: (cache key, _Unit or sub-loader).
        self.units = units
        self._pending: list[tuple[str | None, _Unit | _Loader]] = []
        self._body_parts: list = []  # the shares' body signatures (tables or lists)

    # -- paths -----------------------------------------------------------

    def load_path(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise SignatureError(f"can't get status of the database: {exc.strerror}",
                                 path) from None
        if stat.S_ISDIR(st.st_mode):
            self.load_directory(path)
        elif stat.S_ISREG(st.st_mode):
            self.load_file(path, in_directory=False)
        else:
            raise SignatureError("not a supported database file type", path)

    def load_directory(self, directory: str) -> None:
        try:
            entries = os.listdir(directory)  # readdir order, like clamd
        except OSError as exc:
            raise SignatureError(f"can't open directory: {exc.strerror}", directory) from None
        ranked = []
        daily: dict[str, int] = {}
        for name in entries:
            if not is_database_file(name):
                continue
            path = os.path.join(directory, name)
            lower = name.lower()
            if lower.endswith((".ign", ".ign2")):
                rank = 1
            elif name in ("daily.cld", "daily.cvd"):
                if not os.access(path, os.R_OK):
                    continue
                daily[name] = peek_header(path).version
                rank = 2 if name == "daily.cld" else 3
            elif name == "local.gdb":
                rank = 4
            elif name == "daily.cfg":
                rank = 5
            elif (self.options.official_only and "clamav-" not in directory
                  and not lower.endswith((".cld", ".cvd"))):
                self._skip(path, "OfficialDatabaseOnly: not an official database", warn=False)
                continue
            elif lower.endswith(".crb"):
                rank = 6
            else:
                rank = 7
            ranked.append((rank, path, name))
        if not ranked:
            raise SignatureError("No supported database files found", directory)
        ranked.sort(key=lambda item: item[0])  # stable: directory order within a rank
        for _rank, path, name in ranked:
            if name == "daily.cld" and daily.get("daily.cvd", -1) > daily["daily.cld"]:
                continue
            if name == "daily.cvd" and daily.get("daily.cld", -1) >= daily["daily.cvd"]:
                continue
            self.load_file(path, in_directory=True)

    def load_file(self, path: str, in_directory: bool) -> None:
        if self.units is not None:
            self._load_unit(path, in_directory)
        else:
            self._load_file(path, in_directory)

    def _load_file(self, path: str, in_directory: bool) -> None:
        ext = database_extension(os.path.basename(path))
        if ext in (".cvd", ".cld", ".cud"):
            self.load_container(path)
            return
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            if in_directory:  # removed while we were loading (clamd: race condition)
                return
            raise SignatureError("can't open file: No such file or directory", path) from None
        except OSError as exc:
            raise SignatureError(f"can't open file: {exc.strerror}", path) from None
        with fh:
            try:
                size = os.fstat(fh.fileno()).st_size
            except OSError:
                size = 0
            source = _Source(path, os.path.basename(path), _reader(fh), official=False,
                             in_container=False, size=size)
            try:
                loaded = self.load_source(source)
            except OSError as exc:
                raise SignatureError(f"can't read file: {exc.strerror}", path) from None
        if loaded:
            self.info.files.append(path)

    # -- one file's content ----------------------------------------------

    def load_source(self, source: _Source) -> bool:
        """Load one database; False when it was skipped (nothing read)."""
        ext = database_extension(source.name)
        if ext is None:
            self._skip(source.path, "unknown extension")
            return False
        if ext in _PUA_ONLY and not self.options.detect_pua:
            self._skip(source.path, "loaded only with DetectPUA", warn=False)
            return False
        if ext in _HASH_PURPOSE:
            self._load_hashes(source, _HASH_PURPOSE[ext])
        elif ext in (".ign", ".ign2"):
            self.ignore.load(_fgets_lines(source.read), source.path)
        elif ext == ".cfg":
            _drain(source.read)  # dconf: engine switches we do not model
        elif ext == ".info":
            if not source.in_container:
                raise SignatureError(
                    ".info files can only be loaded from within database container files",
                    source.path)
            _drain(source.read)
        elif ext in _DELEGATED:
            return self._load_delegated(source, ext)
        elif ext == ".cbc" and not self.options.bytecode:
            self._skip(source.path, "bytecode is disabled", warn=False)
            return False
        elif ext in _UNSUPPORTED:
            self._skip(source.path, f"{_UNSUPPORTED[ext]} ({ext}) are not supported")
            return False
        else:  # .cvd inside a container and the like
            self._skip(source.path, "not loadable here")
            return False
        return True

    def _load_hashes(self, source: _Source, purpose: Purpose) -> None:
        parser = HashFileParser(
            self.builders[purpose], purpose, source.official, source.path,
            flevel=self.options.flevel, ignored=self.ignore if self.ignore else None,
            ignored_names=self.ignore.names, in_container=source.in_container)
        if (source.size >= PARALLEL_HASH_BYTES and self._children[0] < PARALLEL_HASH_FILES
                and forked.available()):
            try:
                child = forked.ForkedCall(lambda: _parse_hash_file(parser, source.read))
            except forked.ChildFailed:
                pass
            else:
                self._hash_jobs.append((child, parser, source.path))
                self._children[0] += 1
                return
        parser.parse_stream(source.read)
        self.info.signatures += parser.signatures

    def _collect_hash_jobs(self) -> None:
        """Take in what the children parsed, in load order; the first error is raised."""
        jobs, self._hash_jobs = self._hash_jobs, []
        try:
            while jobs:
                child, parser, path = jobs[0]
                try:
                    columns, names, count = child.result()
                except forked.ChildFailed as exc:
                    log.info("parsing %s in a child failed (%s): parsing it here", path, exc)
                    with open(path, "rb") as fh:
                        parser.parse_stream(_reader(fh))
                    count = parser.signatures
                else:
                    parser.builder.add_export(columns, names)
                jobs.pop(0)
                self.info.signatures += count
        finally:
            for child, _, _ in jobs:
                child.abandon()

    def fail(self, error: BaseException) -> None:
        """The load failed with `error`: a hash file before the failing one that a
        child found malformed is the error clamd reports (the first in load order)."""
        loaders = [part for _, part in self._pending if isinstance(part, _Loader)] + [self]
        try:
            if isinstance(error, SignatureError):
                for loader in loaders:
                    if loader._hash_jobs:
                        loader._collect_hash_jobs()  # raises the earlier error, if there is one
        finally:
            for loader in loaders:
                for child, _, _ in loader._hash_jobs:
                    child.abandon()
                loader._hash_jobs = []

    def _load_delegated(self, source: _Source, ext: str) -> bool:
        module_name, function_name, field, line_limit, warns = _DELEGATED[ext]
        function = getattr(importlib.import_module(module_name), function_name)
        text = _read_text(source, line_limit)  # an empty file: each format decides
        extra = {"warn": self.info.warnings.append} if warns else {}
        try:
            records = function(text, source.path, source.official, self.options, **extra)
        except SignatureError as exc:
            raise exc.located(source.path) from None
        if self.ignore:
            records = [r for r in records if not self._record_ignored(r, source.official)]
        self.records[field].extend(records)
        self.info.signatures += len(records)
        return True

    def _record_ignored(self, record, official: bool) -> bool:
        name = getattr(record, "raw_name", None) or getattr(record, "name", "")
        if not official and name.endswith(".UNOFFICIAL"):
            name = name[: -len(".UNOFFICIAL")]
        raw = name.encode("latin-1", "replace")
        line = getattr(record, "line", None)
        if line is None:
            return self.ignore.ignores_name(raw)
        if isinstance(line, str):
            line = line.encode("latin-1", "replace")
        return self.ignore(raw, line)

    # -- containers -------------------------------------------------------

    def load_container(self, path: str) -> None:
        kind = kind_of(path)
        try:
            container, fh = open_container(path, *self.keys)
        except OSError as exc:
            raise SignatureError(f"can't open file: {exc.strerror}", path) from None
        header = container.header
        with fh:
            # Verified first, then compared with a twin, as cli_cvdload does.
            if kind in (ContainerKind.CVD, ContainerKind.CLD) and self._older_duplicate(
                    path, kind):
                return
            official = kind != ContainerKind.CUD

            def load(member: Member) -> bool:
                source = _Source(f"{path}/{member.name}", member.name, member.read,
                                 official=official, in_container=True)
                return self.load_source(source)

            load_members(container, fh, is_database_file, load)
        if "daily." in path:
            self._daily_version = (header.version, header.stime)
        if header.flevel > FLEVEL:
            self.info.warnings.append(
                f"{path}: this version of the engine is outdated (database needs "
                f"FLEVEL {header.flevel}, we have {FLEVEL})")
        self.info.files.append(path)

    def _older_duplicate(self, path: str, kind: str) -> bool:
        """A .cvd beside a .cld of the same name (or the reverse): load only the newer."""
        other = path[:-2] + ("l" if kind == ContainerKind.CVD else "v") + path[-1]
        if not os.access(other, os.R_OK):
            return False
        mine = peek_header(path).version
        # clamd checks a .cvd twin in full, a .cld twin by its header only.
        theirs = (verify_cvd_file(other, self.keys[0]) if kind == ContainerKind.CLD
                  else peek_header(other)).version
        if theirs > mine or (theirs == mine and kind == ContainerKind.CVD):
            self.info.warnings.append(
                f"Detected duplicate databases {path} and {other}: {path} is not loaded")
            self._skip(path, "older duplicate", warn=False)
            return True
        return False

    # -- the per-file cache -------------------------------------------------

    def _load_unit(self, path: str, in_directory: bool) -> None:
        """One database file's share of the load: from the per-file cache, or parsed
        by a sub-loader. Shares are merged in load order by `finish`, so that a big
        hash file still parses in a child while the next files load."""
        watched = [path] + ([twin] if (twin := _twin_of(path)) else [])
        key = self.units.key(watched, self.options, self.keys, repr(self.ignore.state()))
        unit = self.units.get(key) if key is not None else None
        if unit is not None:
            self.ignore.add_state(unit.ignore_added)
            self._merge_info(unit)
            self._pending.append((None, unit))
            return
        sub = _Loader(self.options, self.keys, parent=self)
        self._pending.append((key, sub))
        before = self.ignore.state()
        sub._load_file(path, in_directory)
        sub.ignore_added = self.ignore.added_since(before)
        self._merge_info(sub.info)

    def _merge_info(self, info) -> None:
        """A share's files, skips and warnings, in load order (its count comes with `finish`)."""
        self.info.files.extend(info.files)
        self.info.skipped.extend(info.skipped)
        self.info.warnings.extend(info.warnings)

    def _merge_units(self) -> None:
        pending, self._pending = self._pending, []
        for key, part in pending:
            if isinstance(part, _Loader):
                part._collect_hash_jobs()
                unit = part._export_unit()
                if key is not None:
                    self.units.put(key, unit)
            else:
                unit = part
            for purpose, (columns, names) in unit.hashes.items():
                self.builders[purpose].add_export(columns, names, renumber=True)
            for field, records in unit.records.items():
                if field == "body_signatures":
                    self._body_parts.append(records)  # joined as columns by `finish`
                else:
                    self.records[field].extend(records)
            self.info.signatures += unit.signatures
            if unit.daily_version is not None:
                self._daily_version = unit.daily_version

    def _export_unit(self) -> _Unit:
        hashes = {}
        for purpose, builder in self.builders.items():
            if len(builder):
                hashes[purpose] = (builder.export(), builder.names.finish())
        body = self.records["body_signatures"]
        if body:
            from clammail.signatures.bodysig import BodySignatures

            body = BodySignatures(body)  # pickled as columns
        return _Unit(hashes=hashes,
                     records={**self.records, "body_signatures": body},
                     signatures=self.info.signatures, files=self.info.files,
                     skipped=self.info.skipped, warnings=self.info.warnings,
                     ignore_added=self.ignore_added, daily_version=self._daily_version)

    # -- results ------------------------------------------------------------

    def _skip(self, path: str, why: str, warn: bool = True) -> None:
        self.info.skipped.append((path, why))
        if warn:
            self.info.warnings.append(f"{path}: skipped: {why}")

    def finish(self) -> Database:
        self._collect_hash_jobs()
        self._merge_units()
        indexes = {p: b.build() for p, b in self.builders.items()}
        self.names.finish()
        if self._daily_version is not None:
            self.info.version, stime = self._daily_version
            self.info.build_timestamp = stime
            self.info.build_time = time.ctime(stime)
        body = self.records["body_signatures"]
        if self._body_parts:
            from clammail.signatures.bodysig import SignatureTable

            # Columns put together: 100 000 signatures from the per-file cache are
            # not made one by one (the matcher reads the columns too).
            body = SignatureTable.join(self._body_parts)
        elif body:
            from clammail.signatures.bodysig import BodySignatures

            body = BodySignatures(body)  # pickled as columns in the cache
        return Database(
            file_hashes=indexes[Purpose.FILE],
            section_hashes=indexes[Purpose.SECTION],
            import_hashes=indexes[Purpose.IMPORT],
            allow_hashes=indexes[Purpose.ALLOW],
            body_signatures=body,
            logical_signatures=self.records["logical_signatures"],
            info=self.info,
        )


# -- parsing in a child ---------------------------------------------------------

# Hash files at least this big are parsed by a forked child (`clammail.forked`)
# while this process loads the rest: 3M hash lines take seconds of numpy work.
PARALLEL_HASH_BYTES = 4 << 20
# At most this many such children at once (the rest are parsed here).
PARALLEL_HASH_FILES = 4


def _parse_hash_file(parser: HashFileParser, read: Callable[[int], bytes]):
    """In the child: parse into a fresh builder; (columns, name blob, signature count)."""
    builder = HashIndexBuilder(NameTable())
    parser.builder = builder
    parser.parse_stream(read)
    columns = builder.export()
    return columns, builder.names.finish(), parser.signatures


# -- reading helpers ------------------------------------------------------------


def _reader(fh: io.BufferedReader) -> Callable[[int], bytes]:
    def read(n: int) -> bytes:
        try:
            return fh.read(n)
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                raise SignatureError("is a directory") from None
            raise
    return read


def _drain(read: Callable[[int], bytes]) -> None:
    while read(1 << 20):
        pass


def _fgets_lines(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """The stream as successive fgets(8192) calls return it, in bounded memory."""
    carry = b""
    while True:
        chunk = read(1 << 20)
        data = carry + chunk
        if not chunk:
            if data:
                yield from fgets_pieces(data)
            return
        cut = data.rfind(b"\n")
        if cut < 0:
            while len(data) > FGETS_CHUNK:
                yield data[:FGETS_CHUNK]
                data = data[FGETS_CHUNK:]
            carry = data
            continue
        for line in data[:cut + 1].splitlines(keepends=True):
            yield from fgets_pieces(line)
        carry = data[cut + 1:]


def _read_text(source: _Source, line_limit: int | None) -> str:
    """The whole file as text, refusing a line longer than clamd's buffer early."""
    parts = []
    run = 0  # length of the line being read so far
    number = 1
    while chunk := source.read(1 << 20):
        if line_limit is not None:
            cut = chunk.rfind(b"\n")
            if cut < 0:
                run += len(chunk)
            else:
                longest = max(len(x) for x in chunk[:cut].split(b"\n"))
                first = chunk.find(b"\n")
                if run + first >= line_limit or longest >= line_limit:
                    raise SignatureError("line too long", source.path,
                                         number + _line_of_long(chunk, run, line_limit))
                number += chunk.count(b"\n")
                run = len(chunk) - cut - 1
            if run >= line_limit:
                raise SignatureError("line too long", source.path, number)
        parts.append(chunk)
    # latin-1: one character per byte, as the format parsers expect their text.
    return b"".join(parts).decode("latin-1")


def _line_of_long(chunk: bytes, run: int, limit: int) -> int:
    for offset, line in enumerate(chunk.split(b"\n")):
        if len(line) + (run if offset == 0 else 0) >= limit:
            return offset
    return 0
