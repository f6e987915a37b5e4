""".ldb pattern modifiers (::i ::w ::a ::f) in BodyMatcher, against clamscan 1.4.6.

clamscan is given one-subsignature logical signatures (`Name;Engine:51-255,
Target:0;0;HEX::MODS`), so it reports a name exactly when the pattern with
those modifiers matches; BodyMatcher gets the same pattern through
`parse_body_pattern` and must match the same files.
"""

from __future__ import annotations

import random

import pytest
from conftest import clamscan_results

from clammail.engine.match import BodyMatcher, available_backends
from clammail.engine.objectinfo import ObjectInfo
from clammail.formats.filetypes import FileType
from clammail.signatures.bodysig import parse_body_pattern

WORDS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
MODIFIERS = ["i", "w", "a", "wa", "f", "fi", "fw", "fwa", "wi", "wai", "fwai"]


def text(rng, n):
    return bytes(rng.choice(WORDS) for _ in range(n))


def widen(data: bytes) -> bytes:
    return b"".join(bytes([c, 0]) for c in data)


def swapcase(data: bytes) -> bytes:
    return data.swapcase()


def make_cases(rng):
    """(hexsig, modifiers, [sample cores]) for many random patterns."""
    cases = []
    for k in range(44):
        mods = MODIFIERS[k % len(MODIFIERS)]
        a, b = text(rng, rng.randint(3, 5)), text(rng, rng.randint(2, 4))
        kind = k % 4
        if kind == 0:
            hexsig, plain = (a + b).hex(), a + b
        elif kind == 1:
            hexsig, plain = a.hex() + "??" + b.hex(), a + b"-" + b
        elif kind == 2:
            hexsig, plain = a.hex() + "(" + b[:1].hex() + "|" + b[1:2].hex() + ")" + b[2:].hex(), a + b
        else:
            hexsig, plain = a.hex() + "{1-3}" + b.hex(), a + b"--" + b
        samples = [plain, swapcase(plain), widen(plain), widen(swapcase(plain)),
                   b"x" + plain + b"y", b" " + plain + b" ", b" " + widen(plain) + b" \x00",
                   b"A\x00" + widen(plain) + b"B\x00", widen(plain)[:-1] + b"\x01"]
        if kind == 3:
            samples.append(widen(a) + b"--" + widen(b))
        cases.append((hexsig, mods, samples))
    return cases


def core_file(core: bytes, rng, at_start: bool) -> bytes:
    head = b"" if at_start else b"\x90\x91" + b"\x00\x01" + bytes([rng.randrange(0x80, 0x100)])
    tail = b"\x92\x93\x00\x01\x94\x95" if at_start else bytes([rng.randrange(0x80, 0x100)])
    return head + core + tail


@pytest.mark.oracle
def test_modifiers_match_like_clamscan(tmp_path):
    rng = random.Random(1234)
    cases = make_cases(rng)
    lines, files, expected_files = [], [], []
    for k, (hexsig, mods, samples) in enumerate(cases):
        lines.append(f"Mod{k};Engine:51-255,Target:0;0;{hexsig}::{mods}")
        for j, core in enumerate(samples):
            for at_start in (False, True) if j in (0, 2) else (False,):
                path = tmp_path / f"m{k:02d}-{j}-{int(at_start)}.bin"
                path.write_bytes(core_file(core, rng, at_start))
                files.append(path)
                expected_files.append((k, path))
    db = tmp_path / "mods.ldb"
    db.write_text("".join(line + "\n" for line in lines))
    code, theirs, err = clamscan_results([db], files, allmatch=True)
    assert code in (0, 1), err
    patterns = []
    for hexsig, mods, _ in cases:
        patterns.append(parse_body_pattern(hexsig, "*", 0, nocase="i" in mods,
                                           wide="w" in mods, ascii="a" in mods or "w" not in mods,
                                           fullword="f" in mods))
    hits_seen = 0
    for backend in available_backends():
        matcher = BodyMatcher(patterns, backend=backend)
        disagreements = []
        for k, path in expected_files:
            data = path.read_bytes()
            hits = matcher.scan(data, 0, ObjectInfo(data, FileType.BINARY_DATA))
            ours = k in hits
            clam = f"Mod{k}.UNOFFICIAL" in theirs.get(str(path), [])
            hits_seen += clam
            if ours != clam:
                disagreements.append((path.name, lines[k], clam, ours))
        assert not disagreements, disagreements[:8]
    assert hits_seen > 50  # the samples do exercise matches


def test_wide_keeps_ranges_as_written():
    """ClamAV widens bytes but not {n} ranges: aa{2}bb with ::w needs 2 bytes between, not 4."""
    pattern = parse_body_pattern("4142{2}4344", wide=True, ascii=False)
    matcher = BodyMatcher([pattern], backend="ahocorasick")
    info = ObjectInfo(b"", FileType.BINARY_DATA)
    assert 0 in matcher.scan(b"\x01A\x00B\x00..C\x00D\x00", 0, info)
    assert 0 not in matcher.scan(b"\x01A\x00B\x00....C\x00D\x00", 0, info)


def test_nocase_is_ascii_only():
    pattern = parse_body_pattern("c3a961626364", nocase=True)  # "éabcd" in UTF-8
    matcher = BodyMatcher([pattern], backend="ahocorasick")
    info = ObjectInfo(b"", FileType.BINARY_DATA)
    assert 0 in matcher.scan(b"\xc3\xa9ABCD", 0, info)
    assert 0 not in matcher.scan(b"\xc3\x89abcd", 0, info)
