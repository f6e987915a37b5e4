"""The PE unpackers (clammail.unpack.packers) against clamscan 1.4.6.

Each test scans the same files with clamscan and with clammail and compares
what they report. Beyond the ClamAV-Test-File hash, the databases name the
MD5 of every object clammail's unpackers produce for the file (computed
here in-process): clamscan reports such a name only when libclamav rebuilt
exactly the same bytes, so equal reports mean byte-identical unpacking.

Inputs: Debian's packed testfiles, the same files cut short and with bytes
and header fields changed, and UPX/FSG-style files packed by the tests
themselves (tests/packer_samples.py; Debian 12 ships no UPX).
"""

from __future__ import annotations

import hashlib
import random
import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from conftest import CLAM_TEST_FILE_SIG, TESTFILES, clammail_results, clamscan_results
from exe_samples import filler, patch, simple_pe
from packer_samples import fsg2_pe, mew_pe, payload, upx_pe

from clammail.formats.pe import parse_pe_header
from clammail.unpack.packers import _chain
from clammail.unpack.packers.common import Stop, read_packed_pe

PACKED = ("upx", "yc", "aspack", "fsg", "petite", "mew", "upack", "wwpack", "pespin")
TEST_NAME = CLAM_TEST_FILE_SIG.rsplit(":", 1)[1]


class _Ctx:
    """An UnpackContext for in-process runs: no deadline, MaxFileSize as given."""

    def __init__(self, max_file_size: int = 100 << 20):
        self.max_file_size = max_file_size
        self.limits: list[str] = []
        self.alerts: list[str] = []

    def check(self) -> None:
        pass

    def option(self, name: str):
        return {"MaxFileSize": self.max_file_size}.get(name, 0)

    def scan_size_left(self):
        return None

    def limit_exceeded(self, limit: str) -> None:
        self.limits.append(limit)

    def debug(self, message: str) -> None:
        pass

    def alert(self, name: str) -> None:
        self.alerts.append(name)


def unpacked_chain(data: bytes, depth: int = 0) -> list[bytes]:
    """What clammail's unpackers make of `data`, and of that, and so on
    (errors are raised, not logged as in a scan)."""
    pe = read_packed_pe(data, strict=False)
    if pe is None or depth > 3:
        return []
    try:
        result = _chain(pe, _Ctx())
    except Stop:
        return []
    if result is None:
        return []
    return [result[1]] + unpacked_chain(result[1], depth + 1)


def _write_db(path: Path, files: list[Path]) -> dict[str, str]:
    """An .hdb with the test file's hash and the hash of every unpacked object;
    returns {md5: signature name} (an object made from several files is named
    after the first)."""
    lines = [CLAM_TEST_FILE_SIG]
    names: dict[str, str] = {}
    for file in files:
        for level, blob in enumerate(unpacked_chain(file.read_bytes())):
            key = hashlib.md5(blob).hexdigest()
            if key not in names:
                names[key] = f"Unpacked.{file.name}.{level}"
                lines.append(f"{key}:{len(blob)}:{names[key]}")
    path.write_text("\n".join(lines) + "\n")
    return names


def _same_as_clamscan(databases, paths, *extra: str, allmatch: bool = True) -> dict:
    _rc, expected, err = clamscan_results(databases, paths, *extra, allmatch=allmatch)
    assert expected, err
    _rc, got, err2 = clammail_results(databases, paths, *extra, allmatch=allmatch)
    assert "Traceback" not in err2, err2
    # clamscan --allmatch repeats a name per occurrence: compare as multisets.
    norm = {path: sorted(names) for path, names in expected.items()}
    assert {path: sorted(names) for path, names in got.items()} == norm
    return expected


@pytest.fixture(scope="module")
def testfiles() -> list[Path]:
    paths = [TESTFILES / f"clam-{name}.exe" for name in PACKED]
    missing = [p for p in paths if not p.exists()]
    if missing:
        pytest.fail(f"clamav-testfiles is not installed ({missing[0]})")
    return paths


def test_testfiles_reported_as_clamscan_reports_them(testfiles, tmp_path):
    archive = tmp_path / "packed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in testfiles:
            zf.write(path, path.name)
    db = tmp_path / "unpacked.hdb"
    names_by_hash = _write_db(db, testfiles)
    first = _same_as_clamscan([db], [*testfiles, archive], allmatch=False)
    assert all(len(first[str(path)]) == 1 for path in [*testfiles, archive])
    results = _same_as_clamscan([db], [*testfiles, archive], allmatch=True)
    assert sum(n.startswith(TEST_NAME) for n in results[str(archive)]) == len(testfiles)
    for path in testfiles:
        names = results[str(path)]
        assert any(name.startswith(TEST_NAME) for name in names), path
        # ClamAV rebuilt our unpacked objects byte for byte. (FSG's testfile is
        # found as an embedded PE: neither scanner unpacks it.)
        produced = unpacked_chain(path.read_bytes())
        assert bool(produced) == (path.name != "clam-fsg.exe"), path
        reported = {n.split(".UNOFFICIAL")[0] for n in names if n.startswith("Unpacked.")}
        assert reported == {names_by_hash[hashlib.md5(blob).hexdigest()] for blob in produced}


@pytest.mark.parametrize("options", [
    ("--alert-broken",),
    ("--max-filesize=8000", "--alert-exceeds-max"),
    ("--max-filesize=20000", "--alert-exceeds-max"),
    ("--max-scansize=20000", "--alert-exceeds-max"),
    ("--scan-pe=no",),
    ("--max-files=1", "--alert-exceeds-max"),
])
def test_testfiles_with_options_as_clamscan(testfiles, tmp_path, options):
    db = tmp_path / "test.hdb"
    db.write_text(CLAM_TEST_FILE_SIG + "\n")
    _same_as_clamscan([db], testfiles, *options, allmatch=False)


def _generated(tmp_path: Path) -> list[Path]:
    tmp_path.mkdir(exist_ok=True)
    clam = (TESTFILES / "clam.exe").read_bytes()
    files = []
    for seed, extra, pad in ((1, clam, True), (2, b"", True), (3, clam, False)):
        image = payload(seed, extra, pad)
        for method in ("2b", "2d", "2e", "lzma"):
            for header in ("magic", "scan", "none"):
                path = tmp_path / f"upx-{seed}-{method}-{header}.exe"
                path.write_bytes(upx_pe(image, method, header))
                files.append(path)
        # No decoder signature in the stub: libclamav tries them all in turn.
        path = tmp_path / f"upx-{seed}-2e-guess.exe"
        path.write_bytes(upx_pe(image, "2e", "magic", selector="none"))
        files.append(path)
        path = tmp_path / f"fsg-{seed}.exe"
        path.write_bytes(fsg2_pe(image))
        files.append(path)
        for method in ("aplib", "lzma", "lzma-special"):
            path = tmp_path / f"mew-{seed}-{method}.exe"
            path.write_bytes(mew_pe(image, method))
            files.append(path)
    return files


def test_generated_upx_fsg_mew_files_unpacked_as_clamscan_unpacks_them(tmp_path):
    files = _generated(tmp_path)
    db = tmp_path / "unpacked.hdb"
    _write_db(db, files)
    # A body signature on code that only exists uncompressed.
    marker = filler(0x300, 2)[0x100:0x110].hex()
    ndb = tmp_path / "code.ndb"
    ndb.write_text(f"Packed.Code.Marker:0:*:{marker}\n")
    results = _same_as_clamscan([db, ndb], files)
    for path in files:
        names = results[str(path)]
        assert any(n.startswith("Unpacked.") for n in names), path
        if path.name.startswith(("upx-2-", "fsg-2", "mew-2-")):
            assert any(n.startswith("Packed.Code.Marker") for n in names), path


def _mutants(testfiles: list[Path], directory: Path, per_file: int, seed: int) -> list[Path]:
    """Each testfile cut short, with random bytes changed in its entry point
    code or section data, and with a header field set to an odd value."""
    rng = random.Random(seed)
    out = []
    for path in testfiles:
        data = path.read_bytes()
        header = parse_pe_header(data, remove_missing=True)
        regions = [(header.entry_point, min(len(data), header.entry_point + 0x800))]
        regions += [(s.raw, s.raw + s.rsz) for s in header.sections if s.rsz]
        e_lfanew = struct.unpack_from("<I", data, 60)[0]
        sections_at = e_lfanew + 24 + header.size_of_optional_header
        fields = [e_lfanew + 24 + 16, e_lfanew + 24 + 28] + [
            sections_at + 40 * i + off for i in range(len(header.sections)) for off in (8, 12, 16, 20)]
        for index in range(per_file):
            mutant = bytearray(data)
            kind = index % 4
            if kind == 0:
                mutant = mutant[:rng.randrange(0x200, len(data))]
            elif kind in (1, 2):
                lo, hi = rng.choice(regions)
                for _ in range(rng.choice((1, 1, 2, 4))):
                    at = rng.randrange(lo, hi)
                    mutant[at] ^= (1 << rng.randrange(8)) if kind == 1 else rng.randrange(1, 256)
            else:
                at = rng.choice(fields)
                value = struct.unpack_from("<I", mutant, at)[0]
                value = rng.choice((
                    (value + rng.choice((-0x1000, -0x200, -1, 1, 0x200, 0x1000))) & 0xFFFFFFFF,
                    rng.randrange(0x20000), 0, 0x7FFFFFFF, 0xFFFFFFFF))
                struct.pack_into("<I", mutant, at, value)
            target = directory / f"{path.stem}-{index:02d}.exe"
            target.write_bytes(bytes(mutant))
            out.append(target)
    return out


@pytest.mark.parametrize("options, seed", [((), 2024), (("--alert-broken",), 2025)])
def test_damaged_testfiles_as_clamscan(testfiles, tmp_path, options, seed):
    files = _mutants(testfiles, tmp_path, per_file=16, seed=seed)
    db = tmp_path / "unpacked.hdb"
    _write_db(db, files)
    results = _same_as_clamscan([db], files, *options)
    assert len(results) == len(files)
    unpacked = sum(any(n.startswith("Unpacked.") for n in names) for names in results.values())
    assert unpacked > len(files) // 4  # much damage still unpacks to something


def test_damaged_generated_files_as_clamscan(tmp_path):
    rng = random.Random(31)
    files = []
    for packed in _generated(tmp_path / "base"):
        if "-none" in packed.name or "-scan" in packed.name:
            continue
        data = packed.read_bytes()
        header = parse_pe_header(data, remove_missing=True)
        regions = [(s.raw, s.raw + s.rsz) for s in header.sections if s.rsz]
        regions.append((header.entry_point, min(len(data), header.entry_point + 0x200)))
        for k in range(4):
            mutant = bytearray(data)
            if k == 0:
                mutant = mutant[:rng.randrange(0x200, len(data))]
            else:
                lo, hi = rng.choice(regions)
                for _ in range(k):
                    mutant[rng.randrange(lo, hi)] ^= rng.randrange(1, 256)
            target = tmp_path / f"{packed.stem}-{k}.exe"
            target.write_bytes(bytes(mutant))
            files.append(target)
    db = tmp_path / "unpacked.hdb"
    _write_db(db, files)
    results = _same_as_clamscan([db], files)
    assert len(results) == len(files)


def test_embedded_and_rebuilt_pe_files_are_not_called_broken(tmp_path):
    """libclamav scans embedded and unpacked PE files with ctx->corrupted_input:
    no Heuristics.Broken.Executable for what is inside them."""
    inner = simple_pe(seed=4)
    section_table = 0x80 + 24 + 0xE0
    broken = patch(inner, section_table + 12, "<I", 0x1010)  # misaligned VirtualAddress
    alone = tmp_path / "broken.exe"
    alone.write_bytes(broken)
    outer = tmp_path / "outer.exe"
    outer.write_bytes(simple_pe(seed=3) + broken)
    db = tmp_path / "test.hdb"
    db.write_text(CLAM_TEST_FILE_SIG + "\n")
    results = _same_as_clamscan([db], [alone, outer], "--alert-broken", allmatch=False)
    assert results[str(alone)] == ["Heuristics.Broken.Executable"]
    assert results[str(outer)] == []


# -- hostile input: limits before allocation, no errors ------------------------


def _upx_claiming(dsize: int) -> bytes:
    """A UPX-style file whose empty section claims `dsize` bytes."""
    data = bytearray(upx_pe(payload(5), "2b", "magic"))
    e_lfanew = struct.unpack_from("<I", data, 60)[0]
    struct.pack_into("<I", data, e_lfanew + 24 + 0xE0 + 8, dsize)
    return bytes(data)


def test_size_claims_are_checked_before_allocating():
    tracemalloc.start()
    try:
        for claim in (0x7FFFF000, 0x40000000, 0x10000000):
            ctx = _Ctx(max_file_size=1 << 20)
            pe = read_packed_pe(_upx_claiming(claim), strict=False)
            with pytest.raises(Stop):
                _chain(pe, ctx)
            assert ctx.limits == ["MaxFileSize"]
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_garbage_in_every_unpacker_ends_cleanly(testfiles):
    """Random bytes over each packer's stub and data: every run ends with a
    result or a refusal, within the memory the file's own sizes allow."""
    rng = random.Random(7)
    tracemalloc.start()
    try:
        for path in testfiles:
            data = path.read_bytes()
            header = parse_pe_header(data, remove_missing=True)
            ep = header.entry_point
            for _ in range(4):
                mutant = bytearray(data)
                start = rng.choice([ep + 0x10, ep + 0x60] + [s.raw for s in header.sections])
                length = rng.randrange(16, 512)
                mutant[start:start + length] = rng.randbytes(length)
                for blob in unpacked_chain(bytes(mutant[:len(data)])):
                    assert isinstance(blob, bytes)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


class _Deadline(Exception):
    pass


class _CountingCtx(_Ctx):
    """Counts deadline checks and pretends the deadline passes after `limit` of them."""

    def __init__(self, limit: int):
        super().__init__()
        self.calls = 0
        self.limit = limit

    def check(self) -> None:
        self.calls += 1
        if self.calls > self.limit:
            raise _Deadline()


@pytest.mark.parametrize("method", ["2b", "2d", "2e"])
def test_long_decompression_consults_the_deadline(method):
    """MaxScanTime can stop a long decompression: the decoders check the
    scan's deadline as they go, not only before and after."""
    image = payload(6)
    big = type(image)(image.pe, image.image * 64, image.base_rva)  # about 0.5 MB
    pe = read_packed_pe(upx_pe(big, method, "none"), strict=False)
    counting = _CountingCtx(limit=1 << 30)
    assert _chain(pe, counting) is not None
    assert counting.calls >= 4
    with pytest.raises(_Deadline):
        _chain(pe, _CountingCtx(limit=counting.calls // 2))
