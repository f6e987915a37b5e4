"""BodyMatcher on its own: executable offsets, both backends alike, hostile data, pickling."""

from __future__ import annotations

import pickle
import random
import time

import pytest
from conftest import need_fast_matcher

from clammail.engine.match import BodyMatcher, available_backends
from clammail.engine.match.api import PatternMatch
from clammail.engine.objectinfo import ObjectInfo
from clammail.formats.executable import ExecutableInfo, Section
from clammail.formats.filetypes import FileType
from clammail.signatures.bodysig import parse_body_pattern, parse_offset
from clammail.signatures.common import SignatureError
from clammail.signatures.patterns import BodyPattern

BACKENDS = available_backends()


class FakeExe(ObjectInfo):
    """An ObjectInfo whose executable layout is given instead of parsed."""

    def __init__(self, data, exe):
        super().__init__(data, FileType.MSEXE)
        self.__dict__["executable"] = exe


def exe_info(data: bytes, entry=64, sections=((32, 16), (96, 64)), vi=()):
    exe = ExecutableInfo(
        kind="PE", entry_point=entry,
        sections=[Section(raw, size, 0x1000 * (i + 1), size) for i, (raw, size) in
                  enumerate(sections)],
        version_info_offsets=list(vi), header_ok=True)
    return FakeExe(data, exe)


def starts(matcher, data, info, target=1):
    return {i: [m.start for m in ms] for i, ms in matcher.scan(data, target, info).items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_executable_relative_offsets(backend):
    data = bytearray(random.Random(5).randbytes(256))
    marker = bytes.fromhex("a1b2c3d4")

    def place(at):
        buf = bytearray(data)
        buf[at:at + 4] = marker
        return bytes(buf)

    cases = [  # (offset, where the marker is, should match)
        ("EP+0", 64, True), ("EP+4", 68, True), ("EP+4", 69, False), ("EP-8", 56, True),
        ("EP+2,3", 67, True), ("EP+2,3", 69, True), ("EP+2,3", 70, False), ("S0+0", 32, True), ("S1+10", 106, True),
        ("S1+10", 107, False), ("S2+0", 0, False), ("SL+5", 101, True), ("SE0", 32, True),
        ("SE0", 48, True), ("SE0", 49, False), ("SE0,16", 64, True), ("SE0,16", 65, False),
        ("SE1,2", 162, True),
        ("VI", 200, True),
        ("VI", 201, False), ("EOF-56", 200, True), ("EP-100", 0, False),
    ]
    for offset, at, expected in cases:
        pattern = parse_body_pattern(marker.hex(), offset, 1)
        matcher = BodyMatcher([pattern], backend=backend)
        buf = place(at)
        found = starts(matcher, buf, exe_info(buf, vi=(200,)))
        assert (0 in found) == expected, (offset, at, found)
        if expected:
            assert found[0] == [at]


@pytest.mark.parametrize("backend", BACKENDS)
def test_section_offsets_of_plain_and_wildcard_patterns(backend):
    """A plain PE pattern with SEx goes to clamd's Boyer-Moore matcher, which in files of
    256 KiB and more only looks at the section's start; with a wildcard (Aho-Corasick),
    or in a smaller file, it matches anywhere inside the section."""
    plain = BodyMatcher([parse_body_pattern("a1b2c3d4", "SE0", 1)], backend=backend)
    wild = BodyMatcher([parse_body_pattern("a1b2??d4", "SE0", 1)], backend=backend)
    for size, plain_hits in ((256, {0: [40]}), (262144, {})):
        data = bytearray(size)
        data[40:44] = bytes.fromhex("a1b2c3d4")
        data = bytes(data)
        assert starts(plain, data, exe_info(data)) == plain_hits
        assert starts(wild, data, exe_info(data)) == {0: [40]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_relative_offsets_need_a_parsed_executable(backend):
    """Without an executable layout, EP/S/VI offsets never match; on an executable
    whose layout could not be parsed not even EOF-n does (as in clamd)."""
    data = b"\x00" * 20 + bytes.fromhex("a1b2c3d4") + b"\x00" * 20
    for offset in ("EP+20", "S0+0", "SL+0", "SE0", "VI"):
        matcher = BodyMatcher([parse_body_pattern("a1b2c3d4", offset, 1)], backend=backend)
        assert matcher.scan(data, 1, ObjectInfo(data, FileType.MSEXE)) == {}
    eof = BodyMatcher([parse_body_pattern("a1b2c3d4", "EOF-24", 0)], backend=backend)
    assert eof.scan(data, 0, ObjectInfo(data, FileType.BINARY_DATA))
    assert eof.scan(data, 1, ObjectInfo(data, FileType.MSEXE)) == {}


def test_offset_parsing():
    assert parse_offset("*").kind.name == "ANY"
    assert (parse_offset("10,5").value, parse_offset("10,5").max_shift) == (10, 5)
    assert parse_offset("S3+7").section == 3 and parse_offset("S3+7").value == 7
    assert parse_offset("SE2").section == 2
    assert parse_offset("EOF-0").kind.name == "EOF_MINUS"
    for bad in ("x", "EOF+1", "10,x", "S+1", "1" * 65, "$99$", "*,1"):
        with pytest.raises(SignatureError):
            parse_offset(bad)


def test_targets_select_patterns():
    patterns = [parse_body_pattern("a1b2c3", "*", t) for t in (0, 1, 3, 7)]
    matcher = BodyMatcher(patterns, backend="ahocorasick")
    data = b"\x00\x01xx\xa1\xb2\xc3yy"
    assert sorted(matcher.scan(data, 0, None)) == [0]
    assert sorted(matcher.scan(data, 1, None)) == [0, 1]
    assert sorted(matcher.scan(data, 7, None)) == [0, 3]


def test_max_matches_and_sorted_starts():
    pattern = BodyPattern("a1b2??", max_matches=3)
    matcher = BodyMatcher([pattern], backend="ahocorasick")
    data = b"\xa1\xb2\x00" * 10
    hits = matcher.scan(data, 0, None)
    assert hits[0] == [PatternMatch(0, 3), PatternMatch(3, 6), PatternMatch(6, 9)]


def test_counts():
    patterns = [parse_body_pattern(h) for h in ("a1b2c3d4", "a1??b2c3", "a1b2*c3d4e5")]
    matcher = BodyMatcher(patterns, backend="ahocorasick")
    assert matcher.pattern_count == 3
    assert matcher.unanchored_count == 1  # a1??b2c3: its best literal has two bytes


# -- both backends give the same answers -----------------------------------------------


def random_pattern(rng, alphabet: bytes) -> str:
    def run(n):
        return bytes(rng.choice(alphabet) for _ in range(n)).hex()

    pieces = [run(rng.randint(2, 5))]
    for _ in range(rng.randint(0, 3)):
        a, b = run(1), run(1)
        pieces.append(rng.choice(["??", "{1-4}", "*", f"({a}|{b})", f"?{a[1]}", "{3}",
                                  f"!({a}{b}|{b}{a})", "(B)"]))
        pieces.append(run(rng.randint(2, 4)))
    return "".join(pieces)


def test_backends_agree_on_generated_patterns_and_data():
    fast = need_fast_matcher()
    rng = random.Random(99)
    alphabet = b" AaB\x00\xff"  # a small alphabet: many partial and full matches
    patterns = []
    while len(patterns) < 500:
        try:
            patterns.append(parse_body_pattern(random_pattern(rng, alphabet),
                                               rng.choice(["*", "*", "0,4000", "EOF-300,200"])))
        except SignatureError:
            continue
    data = bytes(rng.choice(alphabet) for _ in range(30000))
    results = {}
    for backend in (fast, "ahocorasick"):
        matcher = BodyMatcher(patterns, backend=backend)
        results[backend] = {i: [(m.start, m.end, m.detected) for m in ms]
                            for i, ms in matcher.scan(data, 0, None).items()}
    assert results[fast] == results["ahocorasick"]
    assert len(results[fast]) > 100


@pytest.mark.parametrize("parallel", [False, True])
def test_hyperscan_in_several_databases_agrees(monkeypatch, parallel):
    """Many literals are split over several hyperscan databases, compiled by forked
    processes: the same answers as one database, also after pickling."""
    fast = need_fast_matcher()
    from clammail import forked
    from clammail.engine.match import backends

    rng = random.Random(7)
    alphabet = b" AaB\x00\xff"
    patterns = []
    while len(patterns) < 300:
        try:
            patterns.append(parse_body_pattern(random_pattern(rng, alphabet)))
        except SignatureError:
            continue
    data = bytes(rng.choice(alphabet) for _ in range(20000))

    def answers(matcher):
        return {i: [(m.start, m.end, m.detected) for m in ms]
                for i, ms in matcher.scan(data, 0, None).items()}

    whole = BodyMatcher(patterns, backend=fast)
    monkeypatch.setattr(backends, "EXPRESSIONS_PER_DATABASE", 40)
    monkeypatch.setattr(forked, "ENABLED", parallel)
    split = BodyMatcher(patterns, backend=fast)
    assert len(split._backend._databases) > 3
    assert len(whole._backend._databases) == 1
    assert answers(split) == answers(whole)
    assert len(answers(whole)) > 50
    assert answers(pickle.loads(pickle.dumps(split))) == answers(whole)


def test_expression_chunks_cover_every_id(monkeypatch):
    from clammail.engine.match import backends

    monkeypatch.setattr(backends, "EXPRESSIONS_PER_DATABASE", 10)
    for count in (0, 1, 10, 11, 25, 100):
        expressions = [b"e%d" % n for n in range(count)]
        chunks = backends._expression_chunks(expressions)
        assert [i for chunk in chunks for i in chunk] == list(range(count))
        assert all(0 < len(chunk) <= 12 for chunk in chunks)  # the last joins a short tail


# -- bounded work on hostile data ----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_repeated_byte_against_wildcard_patterns(backend):
    """50 MB of one byte (16 MB for the slower pyahocorasick, to keep the suite short):
    every literal of 41s is everywhere; the answers still come, in seconds."""
    data = b"A" * ((50 if backend == "hyperscan" else 16) << 20)
    patterns = [parse_body_pattern(h) for h in (
        "41414141??42", "4141*4243", "4141{1-64}4142", "4141??41??41??4143", "(41|42)414141??44",
        "41414141", "4141??41(B)", "41414141{200}4243",
    )]
    matcher = BodyMatcher(patterns, backend=backend)
    started = time.monotonic()
    hits = matcher.scan(data, 0, None)
    elapsed = time.monotonic() - started
    # Only the plain 41414141 (first at 0) and 4141??41(B) (at the very end) match.
    assert sorted(hits) == [5, 6]
    assert hits[5] == [PatternMatch(0, 4)]
    assert hits[6] == [PatternMatch(len(data) - 4, len(data))]
    print(f"{backend}: {elapsed:.1f} s for 50 MB of one byte")


def test_catastrophic_gaps_stay_linear():
    """Many gaps and a near miss at the end: verification must not backtrack exponentially."""
    pattern = parse_body_pattern("4142*4344*4546*4748*494a*4b4c*4d4e")
    data = (b"ABCDEFGHIJKL" * 20000) + b"M"
    matcher = BodyMatcher([pattern], backend="ahocorasick")
    assert matcher.scan(data, 0, None) == {}
    assert matcher.scan(data + b"N", 0, None)[0][0].start == 0


# -- pickling ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_matcher_pickles(backend):
    patterns = [parse_body_pattern(h) for h in ("a1b2c3d4", "a1??b2c3d4", "c0c1*c2c3c4")]
    matcher = BodyMatcher(patterns, backend=backend)
    data = b"\x00\x01" + bytes.fromhex("a1b2c3d4") + b"zz" + bytes.fromhex("c0c1ffc2c3c4")
    before = matcher.scan(data, 0, None)
    copy = pickle.loads(pickle.dumps(matcher))
    assert copy.backend_name == backend
    assert copy.scan(data, 0, None) == before
    assert sorted(before) == [0, 2]


# -- the compiled-database cache ----------------------------------------------------------


def test_engine_reuses_the_cached_matcher(tmp_path):
    """The first engine builds the matcher and saves it with the database; the next
    engine over unchanged files takes it from the cache instead of compiling again."""
    from clammail.engine import Engine
    from clammail.signatures.loader import load_database

    db = tmp_path / "x.ndb"
    db.write_text("Sig.A:0:*:a1b2c3d4\nSig.B:0:*:a1??c3d4e5\n")
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    sample = tmp_path / "s.bin"
    sample.write_bytes(b"\x00\x01" + bytes.fromhex("a1b2c3d4e5"))
    first = Engine(load_database([str(db)], cache_dir=str(cache)))
    assert first.scan_file(str(sample), allmatch=True).detections == [
        "Sig.A.UNOFFICIAL", "Sig.B.UNOFFICIAL"]
    database = load_database([str(db)], cache_dir=str(cache))
    assert any(key.startswith("body_matcher:") for key in database.compiled)
    second = Engine(database)
    assert second.matcher.body is next(v for k, v in database.compiled.items()
                                       if k.startswith("body_matcher:"))
    assert second.scan_file(str(sample), allmatch=True).detections == [
        "Sig.A.UNOFFICIAL", "Sig.B.UNOFFICIAL"]
