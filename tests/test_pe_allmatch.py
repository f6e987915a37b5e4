"""Acceptance: ClamAV's own pe_allmatch test, clammail against clamscan 1.4.6.

Over ../shared/clamav-unit-data/pe_allmatch/: each of the 84 signature files
in alert-sigs/ is loaded alone and test.exe scanned. clamscan matches 76
(not the 6 bytecode .cbc files, nor the 2 icon .ldb signatures that need the
.idb files of weak-sigs/); clammail must match the same ones with the same
names, and with everything loaded at once `--allmatch` must list the same
set. The signatures in broken-sigs/ load (clamscan takes them) and never
match.

The signature files cover hash, body, logical, YARA and PE-structure
signatures; every file but bytecode must load. The PE-structure part (.mdb,
.msb, .imp and the EP/S1/VI offsets of the .ndb files) is also checked with
a local hash index by the tests at the end of this file.
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import UNIT_DATA, clammail_results, clamscan_results, need_unit_data

from clammail.formats.executable import (
    import_hash_candidates,
    parse_executable,
    section_hash_candidates,
)
from clammail.formats.filetypes import FileType
from clammail.formats.pe import find_embedded_pe

pytestmark = pytest.mark.oracle

CLAMSCAN_MATCHES = 76


def _data() -> Path:
    return need_unit_data() / "pe_allmatch"


def _alert_sigs() -> list[Path]:
    return sorted((_data() / "alert-sigs").iterdir())


def _alert_sig_names() -> list[str]:
    """For parametrizing: without the unit data, one case that fails (an empty
    parameter list would make pytest skip quietly)."""
    if UNIT_DATA is None:
        return ["unit-data-missing"]
    return [p.name for p in sorted((UNIT_DATA / "pe_allmatch" / "alert-sigs").iterdir())]


@pytest.fixture(scope="module")
def oracle_single() -> dict[str, list[str]]:
    """clamscan's names for test.exe with each alert signature file alone."""
    data = _data()

    def one(sig: Path) -> tuple[str, list[str]]:
        _, results, _ = clamscan_results([sig], [data / "test.exe"])
        return sig.name, results[str(data / "test.exe")]

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, _alert_sigs()))


def test_clamscan_matches_76_of_84(oracle_single):
    assert len(oracle_single) == 84
    matched = {name for name, found in oracle_single.items() if found}
    assert len(matched) == CLAMSCAN_MATCHES
    unmatched = set(oracle_single) - matched
    assert all(n.endswith(".cbc") or "_ICON_" in n for n in unmatched), unmatched


def _load(paths: list[Path]):
    """clammail's database for `paths`; every file but bytecode must be loaded."""
    from clammail.signatures.loader import load_database

    db = load_database([str(p) for p in paths])
    # Bytecode (.cbc) is never run by clammail: whether the loader lists the
    # file or not, its signatures cannot match (as in clamscan, see above).
    missing = [p for p in paths if str(p) not in db.info.files and p.suffix != ".cbc"]
    assert not missing, f"clammail did not load {missing}: {db.info.skipped}"
    return db


@pytest.mark.parametrize("sig_name", _alert_sig_names())
def test_each_signature_file_like_clamscan(sig_name, oracle_single):
    from clammail.engine.scanner import Engine

    sig = _data() / "alert-sigs" / sig_name
    if sig.suffix == ".cbc":
        # clamscan reports nothing for these alone (their logical signature
        # only triggers the bytecode); clammail runs no bytecode.
        assert oracle_single[sig_name] == []
        return
    db = _load([sig])
    result = Engine(db).scan_file(str(_data() / "test.exe"))
    assert result.error is None
    assert result.detections == oracle_single[sig_name]


def test_all_signatures_allmatch_like_clamscan():
    data = _data()
    sigs = _alert_sigs()
    _load(sigs)
    _, want, _ = clamscan_results([data / "alert-sigs"], [data / "test.exe"], allmatch=True)
    _, got, _ = clammail_results([data / "alert-sigs"], [data / "test.exe"], allmatch=True)
    assert len(set(want[str(data / "test.exe")])) == CLAMSCAN_MATCHES
    assert set(got[str(data / "test.exe")]) == set(want[str(data / "test.exe")])


def test_broken_signatures_never_match():
    data = _data()
    broken = sorted((data / "broken-sigs").iterdir())
    # clamscan loads them (no error) and reports nothing.
    code, want, err = clamscan_results(broken, [data / "test.exe"], allmatch=True)
    assert code == 0 and want[str(data / "test.exe")] == [], err
    db = _load(broken)
    from clammail.engine.scanner import Engine

    assert Engine(db).scan_file(str(data / "test.exe"), allmatch=True).detections == []


# -- the PE-structure part, checked now ---------------------------------------


_ALGORITHM = {16: "md5", 20: "sha1", 32: "sha256"}


class LocalHashIndex:
    """.mdb/.msb/.imp lines in the shape of clammail's HashIndex."""

    def __init__(self):
        self.by_key: dict[tuple[bytes, int | None], list[str]] = {}

    def add_line(self, line: str, size_first: bool) -> None:
        fields = line.strip().split(":")
        size, digest = (fields[0], fields[1]) if size_first else (fields[1], fields[0])
        key = (bytes.fromhex(digest), None if size == "*" else int(size))
        self.by_key.setdefault(key, []).append(fields[2] + ".UNOFFICIAL")

    def lookup(self, digest: bytes, size: int) -> list[str]:
        return self.by_key.get((digest, size), []) + self.by_key.get((digest, None), [])

    def algorithms(self) -> frozenset[str]:
        return frozenset(_ALGORITHM[len(d)] for d, _ in self.by_key)

    def has_size(self, algorithm: str, size: int) -> bool:
        return any(_ALGORITHM[len(d)] == algorithm and s in (size, None) for d, s in self.by_key)

    def __len__(self) -> int:
        return len(self.by_key)


def _structure_sigs() -> list[Path]:
    return [p for p in _alert_sigs() if p.suffix in (".mdb", ".msb", ".imp")]


@pytest.mark.parametrize("sig_name", [p.name for p in _structure_sigs()])
def test_pe_structure_signature_with_local_index(sig_name, oracle_single):
    """Each .mdb/.msb/.imp file through the engine with a local index: clamscan's verdict."""
    from clammail.engine.scanner import Engine
    from clammail.signatures.database import Database

    sig = _data() / "alert-sigs" / sig_name
    index = LocalHashIndex()
    for line in sig.read_text().splitlines():
        if line.strip():
            index.add_line(line, size_first=sig.suffix != ".imp")
    db = (Database(section_hashes=index) if sig.suffix != ".imp"
          else Database(import_hashes=index))
    result = Engine(db).scan_file(str(_data() / "test.exe"))
    assert result.detections == oracle_single[sig_name] != []


def _chain(data: bytes) -> list[memoryview]:
    chain = [memoryview(data)]
    while len(chain) < 16 and (offset := find_embedded_pe(chain[-1])) is not None:
        chain.append(chain[-1][offset:])
    return chain


def _ndb_sigs() -> list[tuple[str, str, str, str]]:
    out = []
    for path in _alert_sigs():
        if path.suffix == ".ndb":
            name, target, offset, hexsig = path.read_text().strip().split(":")[:4]
            out.append((path.name, target, offset, hexsig))
    return out


@pytest.mark.parametrize("sig", _ndb_sigs(), ids=lambda s: s[0])
def test_ndb_offsets_from_our_numbers(sig, oracle_single):
    """Where the EP+n, S1+n and VI signatures match, computed from our parse.

    A match needs the pattern to start inside the offset's window in the file
    or one of its embedded PEs; we find such a place exactly when clamscan
    reports the signature."""
    file_name, _target, offset, hexsig = sig
    pattern = bytes.fromhex(hexsig)
    hits = []
    for obj in _chain((_data() / "test.exe").read_bytes()):
        exe = parse_executable(obj, FileType.MSEXE)
        if exe is None or not exe.header_ok:
            continue
        buf = bytes(obj)
        starts = {m.start() for m in re.finditer(re.escape(pattern), buf)}
        if offset == "*":
            hits += starts
            continue
        if offset == "VI":
            hits += starts & set(exe.version_info_offsets)
            continue
        base, _, shift = offset.partition(",")
        kind, _, value = base.partition("+")
        lo = (exe.entry_point if kind == "EP" else exe.sections[int(kind[1:])].raw_offset) + int(value)
        hits += [s for s in starts if lo <= s <= lo + int(shift or 0)]
    assert bool(hits) == bool(oracle_single[file_name]) == True  # noqa: E712


def test_structure_hashes_are_the_signed_ones():
    """The acceptance .mdb/.msb/.imp digests are exactly among ours for test.exe."""
    data = (_data() / "test.exe").read_bytes()
    ours = set()
    for obj in _chain(data):
        exe = parse_executable(obj, FileType.MSEXE)
        algos = frozenset({"md5", "sha1", "sha256"})
        ours |= {(d.hex(), s) for d, s in section_hash_candidates(exe, obj, algos)}
        ours |= {(d.hex(), s) for d, s in import_hash_candidates(exe, obj, algos)}
    for path in _structure_sigs():
        fields = path.read_text().strip().split(":")
        digest, size = (fields[1], fields[0]) if path.suffix != ".imp" else (fields[0], fields[1])
        assert any(d == digest and (size == "*" or int(size) == s) for d, s in ours), path.name
    assert hashlib.md5(data).hexdigest() == "8a655379478861572791e2404f45f9ed"
