"""Hyperscan chunks: cut by content, so an update recompiles only what changed; kept in the cache."""

from __future__ import annotations

import os
import random

import pytest
from conftest import need_fast_matcher

from clammail.engine.match import BodyMatcher, backends
from clammail.signatures.bodysig import parse_body_pattern


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(backends, "EXPRESSIONS_PER_DATABASE", 50)
    monkeypatch.setattr(backends, "_CUT_SPREAD", 5)


def random_hex(rng: random.Random) -> str:
    return rng.randbytes(rng.randint(4, 10)).hex()


def chunk_contents(expressions):
    return {tuple(expressions[i] for i in chunk) for chunk in backends._expression_chunks(expressions)}


@pytest.mark.parametrize("seed", range(3))
def test_an_update_in_front_changes_only_the_chunks_near_it(seed):
    """A daily database (loaded first) changes, the main one behind it does not:
    past the change, the cuts fall where they fell before (the real sizes)."""
    rng = random.Random(seed)
    daily = [rng.randbytes(8) for _ in range(3000)]
    main = [rng.randbytes(8) for _ in range(300_000)]
    before = chunk_contents(daily + main)
    assert len(before) >= 6
    new_daily = daily[100:] + [rng.randbytes(8) for _ in range(150)]
    after = chunk_contents(new_daily + main)
    assert len(after - before) <= 2


def answers(matcher, data):
    return {i: [(m.start, m.end) for m in ms] for i, ms in matcher.scan(data, 0, None).items()}


def test_chunks_come_from_the_cache_after_the_first_build(tmp_path, small_chunks):
    need_fast_matcher()
    cache = tmp_path / "cache"
    rng = random.Random(8)
    hexes = [random_hex(rng) for _ in range(400)]
    patterns = [parse_body_pattern(h) for h in hexes]
    data = b"".join(bytes.fromhex(h) + rng.randbytes(5) for h in hexes[::7])
    first = BodyMatcher(patterns, backend="hyperscan", cache_dir=str(cache))
    cache = cache / "hyperscan"
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    files = sorted(os.listdir(cache))
    assert len(files) == len(first._backend._databases) >= 5
    stamps = {name: os.stat(cache / name).st_mtime_ns for name in files}
    second = BodyMatcher(patterns, backend="hyperscan", cache_dir=str(cache.parent))
    assert {name: os.stat(cache / name).st_mtime_ns for name in os.listdir(cache)} == stamps
    expected = answers(BodyMatcher(patterns, backend="hyperscan"), data)
    assert answers(first, data) == answers(second, data) == expected
    assert len(expected) == len(hexes[::7])

    # An update: a few signatures more at the front. Most chunks are reused, the
    # new ones are stored and the stale ones removed.
    extra = [random_hex(rng) for _ in range(5)]
    updated = [parse_body_pattern(h) for h in extra] + patterns
    third = BodyMatcher(updated, backend="hyperscan", cache_dir=str(cache.parent))
    now = set(os.listdir(cache))
    assert len(now) == len(third._backend._databases)
    assert len(now & set(files)) >= len(files) - 2
    data += bytes.fromhex(extra[0])
    assert answers(third, data) == answers(BodyMatcher(updated, backend="hyperscan"), data)


def test_a_damaged_chunk_is_compiled_again(tmp_path, caplog):
    need_fast_matcher()
    top = tmp_path / "cache"
    patterns = [parse_body_pattern(h) for h in ("a1b2c3d4", "c0c1c2c3c4", "0102030405")]
    BodyMatcher(patterns, backend="hyperscan", cache_dir=str(top))
    cache = top / "hyperscan"
    (name,) = os.listdir(cache)
    blob = bytearray((cache / name).read_bytes())
    blob[-10] ^= 0xFF
    (cache / name).write_bytes(bytes(blob))
    again = BodyMatcher(patterns, backend="hyperscan", cache_dir=str(top))
    assert "checksum mismatch" in caplog.text
    assert answers(again, b"..\xa1\xb2\xc3\xd4..") == {0: [(2, 6)]}
    assert (cache / name).read_bytes() != bytes(blob)  # written anew


def test_a_cache_directory_others_may_write_is_not_used(tmp_path):
    need_fast_matcher()
    top = tmp_path / "cache"
    patterns = [parse_body_pattern("a1b2c3d4")]
    BodyMatcher(patterns, backend="hyperscan", cache_dir=str(top))
    cache = top / "hyperscan"
    (name,) = os.listdir(cache)
    key = name[len("hs-"):-len(".chunk")]
    os.chmod(cache, 0o777)
    assert backends.chunk_cache(str(top)).get(key) is None
    os.chmod(cache, 0o700)
    os.chmod(cache / name, 0o666)
    assert backends.chunk_cache(str(top)).get(key) is None
    os.chmod(cache / name, 0o600)
    assert backends.chunk_cache(str(top)).get(key) is not None
