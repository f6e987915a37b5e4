"""Loading as lenient and as strict as clamd 1.4.6, one syntax edge case at a time.

Each case is one database file. clamscan loads it (or refuses it) and scans
a few probe files with --allmatch; clammail loads the same file and scans
the same probes. Both must agree on whether the file loads, on the number
of signatures loaded ("Known viruses") and on every verdict. Each case also
states what clamscan does, so a case that stops exercising its edge (both
sides refusing everything, say) fails instead of passing quietly.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import need_program, parse_scan_output
from thirdparty_sets import sanesecurity_style, yara_repo_style

from clammail.signatures.common import LoadOptions, SignatureError
from clammail.signatures.loader import load_database

# Probes start with bytes that make both sides type them as binary data.
PROBES = {
    "plain.bin": b"\x01\xf7hello world\x00\x00ABCDEFGH abc hello MZ\x90\x00 tail GH",
    "wide.bin": b"\x01\xf7" + "hello wide WORLD".encode("utf-16-le") + b"\x00\x00 abcd",
    "other.bin": b"\x01\xf8 nothing of interest here \x00\x00\x00\x00",
}


@dataclass(frozen=True)
class Case:
    name: str
    ext: str
    text: str
    count: int | None  # what clamscan reports as "Known viruses"; None: it refuses the file
    # A signature clamd loads and clammail cannot run (README, known differences):
    # counted the same, but only clamscan reports it.
    unsupported: str | None = None

    def __str__(self) -> str:
        return self.name


def _ldb(name: str, *lines: str, count: int | None, unsupported: str | None = None) -> Case:
    return Case(name, ".ldb", "".join(line + "\n" for line in lines), count, unsupported)


def _ndb(name: str, *lines: str, count: int | None) -> Case:
    return Case(name, ".ndb", "".join(line + "\n" for line in lines), count)


def _yar(name: str, text: str, count: int | None, unsupported: str | None = None) -> Case:
    return Case(name, ".yar", text, count, unsupported)


def _rule(name: str, strings: str, condition: str, prefix: str = "") -> str:
    block = f"  strings:\n    {strings}\n" if strings else ""
    return f"{prefix}rule {name} {{\n{block}  condition:\n    {condition}\n}}\n"


GOOD = _rule("Good", '$a = "hello"', "$a")  # a rule after the case's, so it is not the last

CASES = [
    # -- logical signatures: every subsignature goes to the Aho-Corasick matcher,
    #    where two static bytes are enough, whatever the offset type.
    _ldb("ldb-2-bytes-absolute", "L;Target:0;0;0:01f7", count=1),
    _ldb("ldb-2-bytes-anywhere", "L;Target:0;0;01f7", count=1),
    _ldb("ldb-2-bytes-eof", "L;Target:0;0;EOF-2:4748", count=1),
    _ldb("ldb-2-bytes-floating", "L;Target:0;0;0,5:6865", count=1),
    _ldb("ldb-2-bytes-modifiers", "A;Target:0;0;01f7::i", "B;Target:0;0;6865::w",
         "C;Target:0;0;6865::wa", "D;Target:0;0;6162::f", count=4),
    _ldb("ldb-2-bytes-exe-offsets", "A;Target:1;0;EP+0:4d5a", "B;Target:1;0;SE1:4d5a",
         "C;Target:1;0;S0+2:4d5a", "D;Target:1;0;SL+0:4d5a", "E;Target:1;0;EP-2,4:4d5a",
         count=5),
    _ldb("ldb-exe-offset-wrong-target", "L;Target:0;0;EP+0:4d5a", count=None),
    _ldb("ldb-1-byte", "L;Target:0;0;01", count=None),
    _ldb("ldb-1-byte-absolute", "L;Target:0;0;0:01", count=None),
    _ldb("ldb-wildcard-then-2-bytes", "L;Target:0;0;??01f7", count=1),
    _ldb("ldb-2-bytes-then-wildcard", "L;Target:0;0;01f7??6865", count=1),
    _ldb("ldb-1-static-byte", "L;Target:0;0;01??", count=None),
    _ldb("ldb-parts-of-2-bytes", "A;Target:0;0;01f7*6865", "B;Target:0;0;01f7{2-5}6c6c",
         "C;Target:0;0;6865{-8}6c64", count=3),
    _ldb("ldb-part-of-1-byte", "L;Target:0;0;01f7*65", count=None),
    _ldb("ldb-alternative-plus-1-byte", "L;Target:0;0;(01|02)f7", count=None),
    _ldb("ldb-2-bytes-then-alternative", "L;Target:0;0;01f7(68|69)", count=1),
    _ldb("ldb-anchored-byte", "L;Target:0;0;01[1-2]6865", count=1),
    # clamd's prefilter needs two classes before a special other than (aa|bb)
    _ldb("ldb-prefilter-line-marker", "L;Target:0;0;68(L)6c6c", count=None),
    _ldb("ldb-prefilter-word-marker-in-part", "L;Target:0;0;0102*68(W)6c6c", count=None),
    _ldb("ldb-prefilter-fixed-alternative", "L;Target:0;0;aa(bbcc|ddee)ff00", count=None),
    _ldb("ldb-prefilter-wildcard-then-alternative", "L;Target:0;0;??(6865|6869)6c6c",
         count=None),
    _ldb("ldb-prefilter-passes", "A;Target:0;0;6865(L)6c6c", "B;Target:0;0;(6865|6869)6c6c",
         "C;Target:0;0;68!(65)6c6c", "D;Target:0;0;aa??(L)eeff", "E;Target:0;0;68(B)6800::w",
         count=5),
    _ldb("ldb-no-prefilter-elf-ole2-html", "A;Target:6;0;68(L)6c6c", "B;Target:2;0;68(W)6c6c",
         "C;Target:3;0;aa(bbcc|ddee)ff00", count=3),
    _ldb("ldb-macro-subsignature", "L;Target:0;0&1;68656c6c6f;${1-2}0$", count=1),
    _ldb("ldb-byte-compare", "L;Engine:96-255,Target:0;0&1;6162;0(>>1#ib2#>0)", count=1,
         unsupported="L.UNOFFICIAL"),
    _ldb("ldb-unsupported-pcre", "L;Engine:81-255,Target:0;0&1;6865;0/hel(*ACCEPT)lo/",
         count=1, unsupported="L.UNOFFICIAL"),
    _ldb("ldb-skipped-target-and-level", "A;Target:15;0;01f7", "B;Engine:250-255,Target:0;0;01f7",
         "C;Target:0;0;01f7", count=1),
    # -- body signatures (.ndb): plain hex of targets 0 and 1 goes to Boyer-Moore,
    #    which needs three bytes; the others to Aho-Corasick (two).
    _ndb("ndb-2-bytes-generic", "N:0:*:01f7", count=None),
    _ndb("ndb-2-bytes-absolute", "N:0:0:01f7", count=None),
    _ndb("ndb-2-bytes-ole2", "N:2:*:01f7", count=1),
    _ndb("ndb-2-bytes-pe-anywhere", "N:1:*:4d5a", count=1),
    _ndb("ndb-2-bytes-pe-entry", "N:1:EP+0:4d5a", count=None),
    _ndb("ndb-2-bytes-and-wildcard", "N:0:*:01f7??", count=1),
    _ndb("ndb-1-static-byte", "N:0:*:01??", count=None),
    _ndb("ndb-3-bytes", "N:0:0:01f768", count=1),
    # -- YARA: strings of one and two bytes
    _yar("yara-text-2-bytes", _rule("Two", '$a = "he"', "$a"), count=1),
    _yar("yara-text-1-byte", _rule("One", '$a = "h"', "$a") + GOOD, count=1),
    _yar("yara-text-1-byte-last", GOOD + _rule("One", '$a = "h"', "$a"), count=1),
    _yar("yara-hex-2-bytes", _rule("Two", "$a = { 01 F7 }", "$a at 0"), count=1),
    _yar("yara-hex-1-byte", _rule("One", "$a = { 01 }", "$a") + GOOD, count=1),
    _yar("yara-hex-1-byte-last", GOOD + _rule("One", "$a = { 01 }", "$a"), count=None),
    # -- YARA hex jumps and wildcards
    _yar("yara-hex-jumps", _rule("J1", "$a = { 01 F7 [0-8] 6C 6C }", "$a")
         + _rule("J2", "$a = { 68 65 [-] 41 42 }", "$a")
         + _rule("J3", "$a = { 68 65 [2-] 6F 20 }", "$a")
         + _rule("J4", "$a = { 68 65 [3] 20 77 }", "$a")
         + _rule("J5", "$a = { 68 65 6C [0] 6C 6F }", "$a"), count=5),
    _yar("yara-hex-wildcards", _rule("W1", "$a = { ?? 01 F7 }", "$a")
         + _rule("W2", "$a = { 01 F7 ( 68 | 69 ) 65 }", "$a")
         + _rule("W3", "$a = { 6? 65 6C ?C }", "$a"), count=3),
    _yar("yara-hex-1-byte-before-jump", _rule("J", "$a = { 01 [2] 68 65 }", "$a") + GOOD,
         count=1),
    _yar("yara-hex-1-byte-after-jump-last", GOOD + _rule("J", "$a = { 68 65 [2] 6F }", "$a"),
         count=None),
    _yar("yara-hex-1-byte-between-jumps", _rule("J", "$a = { 68 65 [1] 6C [1] 6F 20 }", "$a")
         + GOOD, count=2),
    _yar("yara-hex-no-static-pair", _rule("S", "$a = { 68 ?? 6C }", "$a") + GOOD, count=1),
    _yar("yara-hex-no-static-pair-last", GOOD + _rule("S", "$a = { 68 ?? 6C }", "$a"),
         count=None),
    # -- YARA: what ClamAV's YARA 3.1 does not know, rule by rule
    _yar("yara-module-before-strings", 'import "pe"\n'
         + _rule("Pe", '$a = "hello"', "pe.number_of_sections > 1 and $a") + GOOD, count=1),
    _yar("yara-module-after-strings", 'import "pe"\nimport "math"\n'
         + _rule("Pe", '$a = "hello"', "$a and math.entropy(0, filesize) > 7") + GOOD
         + _rule("After", '$a = "world"', "$a"), count=2),
    _yar("yara-halt-stops-later-files", _rule("Before", '$a = "hello"', "$a")
         + _rule("Pe", '$a = "hello"', "uint16(0) == 0x5a4d and pe.is_pe") + GOOD, count=2),
    _yar("yara-new-string-modifiers", _rule("X", '$a = "hello" xor', "$a")
         + _rule("B", '$a = "hello" base64', "$a") + GOOD, count=1),
    _yar("yara-new-functions", _rule("Be", '$a = "hello"', "uint16be(0) == 0x1f7 and $a")
         + GOOD, count=1),
    _yar("yara-negated-hex-byte", _rule("N", "$a = { 68 ~65 6C }", "$a") + GOOD, count=1),
    _yar("yara-no-strings", _rule("Size", "", "filesize < 100") + GOOD, count=1),
    _yar("yara-no-strings-inherits", _rule("X", '$a = "hello" xor', "$a")
         + _rule("Size", "", "filesize < 100"), count=1),
    _yar("yara-inherited-short-string", _rule("X", '$a = "h" $b = "ab" xor', "$a")
         + GOOD, count=0),
    _yar("yara-too-many-strings", _rule("Many", " ".join(f'$s{n} = "str{n:03d}"'
                                                         for n in range(65)), "any of them")
         + GOOD, count=1),
    _yar("yara-wide-regex-last", GOOD + _rule("R", "$a = /hel+o/ wide", "$a"), count=1),
    _yar("yara-regex-python-cannot-run", _rule("R", "$a = /hel(*ACCEPT)lo/", "$a") + GOOD,
         count=2, unsupported="YARA.R.UNOFFICIAL"),
    _yar("yara-duplicate-rule", GOOD + _rule("Good", '$a = "world"', "$a")
         + _rule("After", '$a = "world"', "$a"), count=2),
    _yar("yara-unreferenced-string", _rule("U", '$a = "hello" $b = "world"', "$a")
         + _rule("After", '$a = "world"', "$a"), count=1),
    _yar("yara-reference-to-skipped-rule", _rule("One", '$a = "h"', "$a")
         + _rule("Ref", '$a = "hello"', "$a and not One"), count=1),
    _yar("yara-private-and-global", _rule("P", '$a = "hello"', "$a", prefix="private ")
         + _rule("G", '$a = "world"', "$a and P", prefix="global "), count=2),
    _yar("yara-non-ascii-ends-the-file", GOOD + "rule Bad { condition: \xe9 }\n"
         + _rule("After", '$a = "world"', "$a"), count=1),
    _yar("yara-unterminated-string-ends-the-file", GOOD
         + 'rule Bad { strings: $a = "hel\nlo" condition: $a }\n'
         + _rule("After", '$a = "world"', "$a"), count=1),
    _yar("yara-escapes", _rule("E1", r'$a = "hel\x6co\x20w"', "$a")
         + _rule("E2", r'$a = "he\rllo"', "$a") + _rule("E3", r'$a = "he\qllo"', "$a"),
         count=3),
    _yar("yara-crlf-multiline-hex", GOOD.replace("\n", "\r\n")
         + "rule H {\r\n strings:\r\n  $a = { 68 65\r\n 6C 6C }\r\n condition:\r\n  $a\r\n}\r\n"
         + _rule("After", '$a = "world"', "$a").replace("\n", "\r\n"), count=2),
    _yar("yara-comments-only", "// nothing here\n/* at all */\n", count=0),
    _yar("yara-empty-file", "", count=0),
    _ldb("ldb-empty-file", count=None),
    _ndb("ndb-empty-file", count=None),
]


def _clamscan(db: Path, probes: list[Path]) -> tuple[int | None, dict[str, list[str]]]:
    """(Known viruses, or None when clamscan refuses the database; {probe: names})."""
    proc = subprocess.run([need_program("clamscan"), "--allmatch", "-d", str(db),
                           *map(str, probes)], capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1, 2), proc.stderr
    if proc.returncode == 2:
        assert "Malformed database" in proc.stdout + proc.stderr, proc.stderr
        return None, {}
    known = re.search(r"^Known viruses: (\d+)$", proc.stdout, re.M)
    assert known, proc.stdout
    return int(known.group(1)), parse_scan_output(proc.stdout)


def _clammail(db: Path, probes: list[Path]) -> tuple[int | None, dict[str, list[str]]]:
    from clammail.engine import Engine, ScanOptions

    try:
        database = load_database([db], LoadOptions())
    except SignatureError:
        return None, {}
    engine = Engine(database, ScanOptions.from_mapping({"DisableCache": True}))
    results = {str(p): engine.scan_file(str(p), allmatch=True).detections for p in probes}
    return database.info.signatures, results


def _write(tmp_path: Path, case: Case) -> tuple[Path, list[Path]]:
    db = tmp_path / f"case{case.ext}"
    db.write_bytes(case.text.encode("latin-1"))
    probes = []
    for name, data in PROBES.items():
        probes.append(tmp_path / name)
        probes[-1].write_bytes(data)
    return db, probes


@pytest.mark.parametrize("case", CASES, ids=str)
def test_loads_like_clamscan(tmp_path, case):
    db, probes = _write(tmp_path, case)
    theirs = _clamscan(db, probes)
    assert theirs[0] == case.count, f"clamscan: {theirs}"
    ours = _clammail(db, probes)
    if case.unsupported:
        assert any(case.unsupported in names for names in theirs[1].values())
        theirs = theirs[0], {path: [name for name in names if name != case.unsupported]
                             for path, names in theirs[1].items()}
    assert ours == theirs


# -- whole files in the style of the public third-party sets ----------------------------


def _third_party_directory(tmp_path: Path) -> tuple[Path, list[Path]]:
    db = tmp_path / "db"
    db.mkdir()
    rng = random.Random(2024)
    contents = sanesecurity_style(db, rng) + yara_repo_style(db / "repo_rules.yar", rng)
    samples = tmp_path / "samples"
    samples.mkdir()
    probes = []
    for n, data in enumerate(contents):
        probes.append(samples / f"s{n:03d}.bin")
        probes[-1].write_bytes(data)
    return db, probes


def test_third_party_style_sets_load_and_match_like_clamscan(tmp_path):
    db, probes = _third_party_directory(tmp_path)
    theirs = _clamscan(db, probes)
    assert theirs[0] is not None and theirs[0] > 100
    assert sum(map(len, theirs[1].values())) > 60
    assert _clammail(db, probes) == theirs


def test_yara_repo_style_rules_without_modules_match_like_clamscan(tmp_path):
    db = tmp_path / "rules.yar"
    contents = yara_repo_style(db, random.Random(77), modules=False)
    probes = []
    for n, data in enumerate(contents):
        probes.append(tmp_path / f"s{n:03d}.bin")
        probes[-1].write_bytes(data)
    theirs = _clamscan(db, probes)
    assert theirs[0] is not None and theirs[0] > 25
    assert sum(map(len, theirs[1].values())) > 20
    assert _clammail(db, probes) == theirs


def test_daemon_starts_on_a_directory_with_skipped_rules(tmp_path):
    """clamd starts on such a DatabaseDirectory, warning about what it skips; so must
    clammail's daemon, with the same count, the skipped rules named in its log and
    the same INSTREAM answers."""
    from clamd_harness import exchange, make_root, start_pair

    root = make_root()
    try:
        db, probes = _third_party_directory(root)
        for path in [db, *db.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        pair = start_pair(root, {"DatabaseDirectory": str(db)})
        try:
            for probe in probes[::7]:
                data = probe.read_bytes()
                request = (b"zINSTREAM\0" + len(data).to_bytes(4, "big") + data
                           + b"\0\0\0\0")
                theirs = exchange(("tcp", pair.clamd.port), request)
                assert exchange(("tcp", pair.clammail.port), request) == theirs
        finally:
            pair.stop()
        clamd_log = pair.clamd.log.read_text()
        clamd_stderr = (pair.clamd.workdir / "stderr.txt").read_text()
        clammail_log = pair.clammail.log.read_text()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    known = re.search(r"Loaded (\d+) signatures", clamd_log)
    assert known, clamd_log
    assert f"Loaded {known.group(1)} signatures" in clammail_log
    assert "skipping YARA.MAL_Wallet_10" in clamd_stderr
    assert "YARA rule MAL_Wallet_10 skipped" in clammail_log


# -- random YARA files from constructs ClamAV's YARA does and does not know -------------

_FUZZ_STRINGS = [
    '"hello"', '"he"', '"h"', '"world" wide', '"HELLO" nocase', '"abc" fullword',
    '"hello" ascii wide', "{ 68 65 6C }", "{ 68 [1-3] 6C 6C }", "{ 68 65 [2] 6F }",
    "{ 01 F7 ?? 65 }", "{ ?? 68 }", "{ 68 ( 65 | 66 ) 6C }", "/hel+o/", "/wor.d/i",
    "/ab/ wide", '"hello" xor', "{ 68 65 }", "{ 6? 65 6C }", '"x\\ty"', "{ 68 ~65 }",
    '"hello" private',
]
_FUZZ_CONDITIONS = [
    "$a", "$a and $b", "any of them", "all of them", "#a > 0", "@a[1] > 0", "$a at 4",
    "$a in (0..100)", "pe.is_pe", "$a and pe.is_pe", "filesize < 1MB", "uint16(0) == 0xf701",
    "uint16be(0) == 1", "not $a", "$a or $b", "1 of ($a, $b)",
    "for any i in (1..#a) : (@a[i] > 2)", "for all of them : ($ in (0..200))",
    "$a and math.entropy(0, filesize) > 1", "entrypoint == 0 and $a", "$a and -1 < 0",
    "$a and $a*", "$c", "$a and R0", "$a and R1", "R2 or $a", "#a == 2 and $b", "true",
    "filesize > 0 and uint8(0) == 1",
]
# Without an "MZ" inside: clamscan then reports a regex-only rule once where
# clammail reports it twice (an embedded-executable scan difference, not a load one).
_FUZZ_PROBES = {
    "a.bin": b"\x01\xf7hello world\x00\x00ABCDEFGH abc hello tail GH",
    "b.bin": b"\x01\xf7" + "hello wide WORLD".encode("utf-16-le") + b"\x00\x00 abcd",
}


def _fuzz_rules(rng: random.Random) -> str:
    text = []
    for n in range(rng.randint(2, 6)):
        strings = [f"${'ab'[i]} = {rng.choice(_FUZZ_STRINGS)}"
                   for i in range(rng.choice([0, 1, 1, 2, 2, 2]))]
        prefix = rng.choice(["", "", "", "private ", "global "])
        if rng.random() < 0.1:
            text.append('import "pe"\n')
        text.append(_rule(f"R{n}", "\n    ".join(strings), rng.choice(_FUZZ_CONDITIONS), prefix))
    return "".join(text)


def test_random_yara_files_load_and_match_like_clamscan(tmp_path):
    probes = []
    for name, data in _FUZZ_PROBES.items():
        probes.append(tmp_path / name)
        probes[-1].write_bytes(data)
    differences = {}
    outcomes = set()
    for seed in range(150):
        db = tmp_path / f"fuzz{seed}.yar"
        db.write_text(_fuzz_rules(random.Random(seed)))
        theirs = _clamscan(db, probes)
        outcomes.add("refused" if theirs[0] is None else "found" if any(theirs[1].values())
                     else "loaded")
        ours = _clammail(db, probes)
        if ours != theirs:
            differences[seed] = (theirs, ours)
    assert outcomes == {"refused", "found", "loaded"}
    assert not differences, differences


# -- random logical subsignatures: offsets, wildcards, specials, modifiers, targets -----

_SUBSIG_PIECES = ["01", "f7", "68", "65", "6c", "??", "6?", "?c", "*", "{2}", "{1-3}", "{-4}",
                  "(68|69)", "(6865|6869)", "!(00)", "(B)", "[1-2]", "(L)", "aa", "00"]
_SUBSIG_OFFSETS = ["", "0:", "2:", "EOF-4:", "0,8:", "*:", "EP+0:", "SE1:", "VI:"]
_SUBSIG_MODIFIERS = ["", "", "::i", "::w", "::wa", "::f", "::a"]


def test_random_logical_subsignatures_load_and_match_like_clamscan(tmp_path):
    _, probes = _write(tmp_path, CASES[0])
    differences = {}
    outcomes = set()
    for seed in range(300):
        rng = random.Random(seed)
        hexsig = "".join(rng.choice(_SUBSIG_PIECES) for _ in range(rng.randint(1, 4)))
        line = (f"L{seed};Target:{rng.choice([0, 0, 0, 1, 6, 7])};0;"
                f"{rng.choice(_SUBSIG_OFFSETS)}{hexsig}{rng.choice(_SUBSIG_MODIFIERS)}")
        db = tmp_path / f"fuzz{seed}.ldb"
        db.write_text(line + "\n")
        theirs = _clamscan(db, probes)
        outcomes.add("refused" if theirs[0] is None else "found" if any(theirs[1].values())
                     else "loaded")
        if _clammail(db, probes) != theirs:
            differences[line] = theirs
    assert outcomes == {"refused", "found", "loaded"}
    assert not differences, differences
