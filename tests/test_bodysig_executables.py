"""Executable-relative offsets (EP+n, EP-n, Sx+n, SL+n, SEx, VI, EOF-n) against clamscan.

Signatures are cut from real PE files at the positions the offsets name
(and one byte off), as plain hex (clamd's Boyer-Moore matcher for PE
signatures, which takes an offset's first position only) and with a
wildcard (its Aho-Corasick matcher). The executable layout comes from
`clammail.formats.executable`; clamscan and clammail must agree. Both run
with ScanPE off, so only the files themselves are matched, not the PE
files embedded in them (test.exe holds several).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import UNIT_DATA, clammail_results, clamscan_results

from clammail.engine.match import available_backends
from clammail.formats.executable import parse_executable
from clammail.formats.filetypes import FileType

CANDIDATES = [
    UNIT_DATA / "pe_allmatch" / "test.exe" if UNIT_DATA else None,
    Path("/usr/lib/perf-core/tests/pe-file.exe"),
    Path("/usr/share/clamav-testfiles/clam.exe"),
]


def pe_files() -> list[Path]:
    found = []
    for path in CANDIDATES:
        if path is None or not path.is_file():
            continue
        exe = parse_executable(path.read_bytes(), FileType.MSEXE)
        if exe is not None and exe.header_ok:
            found.append(path)
    return found


def interesting(data: bytes, at: int, size: int) -> bool:
    piece = data[at:at + size]
    return len(piece) == size and len(set(piece)) >= 3


def signatures_for(path: Path, rng: random.Random, tag: str) -> list[str]:
    data = path.read_bytes()
    exe = parse_executable(data, FileType.MSEXE)
    size = 8
    sigs = []

    def add(name, offset, at, target=1):
        if at < 0 or not interesting(data, at, size):
            return
        piece = data[at:at + size].hex()
        sigs.append(f"{tag}.{name}.plain:{target}:{offset}:{piece}")
        sigs.append(f"{tag}.{name}.wild:{target}:{offset}:{piece[:6]}??{piece[8:]}")

    ep = exe.entry_point
    for k in (0, 3, 17):
        add(f"EP+{k}", f"EP+{k}", ep + k)
        add(f"EP+{k}.off", f"EP+{k + 1}", ep + k)
        add(f"EP-{k}", f"EP-{k}", ep - k)
    add("EP+2,5", "EP+2,5", ep + 6)
    add("EP+2,5.off", "EP+2,5", ep + 8)
    sections = exe.sections
    for i, section in enumerate(sections):
        if not section.raw_size or section.raw_offset + section.raw_size > len(data):
            continue
        inside = section.raw_offset + rng.randrange(max(1, section.raw_size - size))
        for k in (0, 5):
            add(f"S{i}+{k}", f"S{i}+{k}", section.raw_offset + k)
        add(f"S{i}+1.off", f"S{i}+1", section.raw_offset + 2)
        add(f"SE{i}", f"SE{i}", inside)
        add(f"SE{i}.start", f"SE{i}", section.raw_offset)
        add(f"SE{i}.next", f"SE{i + 1}", inside)
    if sections:
        last = sections[-1]
        add("SL+4", "SL+4", last.raw_offset + 4)
        add("SL+4.off", "SL+4", last.raw_offset + 5)
    for at in exe.version_info_offsets[:3]:
        add(f"VI@{at}", "VI", at)
        add(f"VI@{at}.off", "VI", at + 1)
    for back in (size, 40, 300):
        add(f"EOF-{back}", f"EOF-{back}", len(data) - back)
        add(f"EOF-{back}.t0", f"EOF-{back}", len(data) - back, target=0)
        add(f"EOF-{back}.off", f"EOF-{back + 1}", len(data) - back)
    return sigs


@pytest.mark.oracle
def test_executable_offsets_like_clamscan(tmp_path):
    files = pe_files()
    if not files:
        pytest.fail("no PE file to test with: ClamAV's unit data and clamav-testfiles "
                    "are both missing")
    rng = random.Random(7)
    lines = []
    for n, path in enumerate(files):
        lines += signatures_for(path, rng, f"Exe{n}")
    db = tmp_path / "exe.ndb"
    db.write_text("".join(line + "\n" for line in lines))
    for allmatch in (True, False):
        code, theirs, err = clamscan_results([db], files, "--scan-pe=no", allmatch=allmatch)
        assert code in (0, 1), err
        if allmatch:
            found = sum(len(set(names)) for names in theirs.values())
            assert found >= 10 * len(files) // 2, theirs  # the offsets do get exercised
        for backend in available_backends():
            _, ours, ours_err = clammail_results([db], files, "--matcher", backend,
                                                 "--scan-pe=no", allmatch=allmatch)
            for path in files:
                if path.stat().st_size > 131072:
                    # Past clamd's first 128 KiB window the order of reports near the
                    # windows' edges is its own (a prefilter cuts each window): compare
                    # what was reported, not the order.
                    key = str(path)
                    ours[key], theirs[key] = sorted(ours.get(key, [])), sorted(theirs.get(key, []))
            assert ours == theirs, (backend, allmatch, ours_err,
                                    {p: (sorted(set(theirs.get(p, [])) - set(ours.get(p, []))),
                                         sorted(set(ours.get(p, [])) - set(theirs.get(p, []))))
                                     for p in theirs})
