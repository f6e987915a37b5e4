"""A loaded signature database: everything the engine matches, immutable once built.

`Database` is the product of loading (see `clammail.signatures.loader`); the
engine compiles its matchers from it. Nothing here parses files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class HashIndex(Protocol):
    """Hash signatures of one kind: (digest, size) -> signature names."""

    def lookup(self, digest: bytes, size: int) -> list[str]:
        """Names of the signatures for this digest with this size or with size `*`."""

    def algorithms(self) -> frozenset[str]:
        """Which digests ("md5", "sha1", "sha256") the index holds, to compute only those."""

    def has_size(self, algorithm: str, size: int) -> bool:
        """Whether a signature of that digest could match `size` bytes (its size or `*`):
        as libclamav, an object no signature has the size of is not hashed."""

    def __len__(self) -> int: ...


class EmptyHashIndex:
    def lookup(self, digest: bytes, size: int) -> list[str]:
        return []

    def has_size(self, algorithm: str, size: int) -> bool:
        return False

    def algorithms(self) -> frozenset[str]:
        return frozenset()

    def __len__(self) -> int:
        return 0


@dataclass
class DatabaseInfo:
    """What clamd reports about its database (VERSION, STATS, log lines)."""

    version: int | None = None  # of daily (else main) .cvd/.cld, for VERSION
    build_time: str | None = None  # its header's build time, e.g. "Tue Nov 25 09:23:45 2026"
    build_timestamp: int | None = None  # the same in seconds since the epoch
    signatures: int = 0  # "Known viruses"
    files: list[str] = field(default_factory=list)  # loaded database files, in load order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) not loaded
    warnings: list[str] = field(default_factory=list)


@dataclass
class Database:
    # Whole-object hashes: .hdb .hsb (.hdu .hsu with DetectPUA) and the hash
    # forms inside .cvd/.cld.
    file_hashes: HashIndex = field(default_factory=EmptyHashIndex)
    # PE section hashes (.mdb .msb) and import-table hashes (.imp).
    section_hashes: HashIndex = field(default_factory=EmptyHashIndex)
    import_hashes: HashIndex = field(default_factory=EmptyHashIndex)
    # Allow lists (.fp .sfp): an object with such a hash is never reported.
    allow_hashes: HashIndex = field(default_factory=EmptyHashIndex)
    # Names of signatures to ignore (.ign .ign2). The loader applies the
    # lists while loading, as clamd does (which is also why clamd does not
    # apply them to heuristic names found while scanning), so this stays
    # empty for loaded databases.
    ignored_names: frozenset[str] = frozenset()
    # Body signatures (.ndb): `clammail.signatures.bodysig.BodySignature`.
    body_signatures: list = field(default_factory=list)
    # Logical signatures (.ldb: `clammail.signatures.logical.LogicalSignature`)
    # and YARA rules (.yar: `clammail.signatures.yara.YaraRule`), in load
    # order, the order in which clamd evaluates them.
    logical_signatures: list = field(default_factory=list)
    info: DatabaseInfo = field(default_factory=DatabaseInfo)
    # The compiled-database cache (`clammail.signatures.dbcache`): the key of
    # the loaded files, and a place for compiled forms (e.g. the body matcher)
    # that the engine builds once and saves with `dbcache.save_compiled`.
    fingerprint: str | None = None
    cache_dir: str | None = None
    compiled: dict = field(default_factory=dict)
