"""The compiled-database cache file: mapped buffers, and every damaged byte refused."""

from __future__ import annotations

import os
import random

import pytest

from clammail.engine.scanner import Engine
from clammail.signatures import dbcache
from clammail.signatures.common import LoadOptions
from clammail.signatures.loader import load_database

MD5 = "d41d8cd98f00b204e9800998ecf8427e"
SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.fixture
def cached(tmp_path):
    sigdir = tmp_path / "db"
    sigdir.mkdir()
    (sigdir / "a.hdb").write_text("".join(f"{i:032x}:{i + 1}:Sig{i}\n" for i in range(500))
                                  + f"{MD5}:5:Empty.Md5\n")
    (sigdir / "b.hsb").write_text(f"{SHA256}:5:Empty.Sha\n")
    (sigdir / "c.ndb").write_text("Body.A:0:*:a1b2c3d4e5\n")
    cache = tmp_path / "cache"
    database = load_database([str(sigdir)], cache_dir=str(cache))
    assert not list(cache.glob("db-*"))  # body signatures: the engine stores it, with its matcher
    Engine(database)
    (name,) = [name for name in os.listdir(cache) if name.startswith("db-")]
    return sigdir, cache, cache / name, database.fingerprint


def _lookups(database):
    return (database.file_hashes.lookup(bytes.fromhex(MD5), 5),
            database.file_hashes.lookup(bytes.fromhex(SHA256), 5),
            database.file_hashes.lookup((7).to_bytes(16, "big"), 8),
            [s.name for s in database.body_signatures], database.info.signatures)


def test_buffers_are_mapped_not_copied(cached):
    sigdir, cache, path, key = cached
    database = dbcache.DatabaseCache(str(cache)).load(key)
    assert database is not None
    assert _lookups(database) == _lookups(load_database([str(sigdir)])) == (
        ["Empty.Md5.UNOFFICIAL"], ["Empty.Sha.UNOFFICIAL"], ["Sig7.UNOFFICIAL"],
        ["Body.A.UNOFFICIAL"], 503)
    table = database.file_hashes._tables["md5"]
    assert not table.keys.flags.writeable  # a view of the read-only mapping
    assert isinstance(database.file_hashes._names.blob, memoryview)


def test_every_damaged_region_is_refused_and_removed(cached):
    sigdir, cache, path, key = cached
    original = path.read_bytes()
    rng = random.Random(1)
    # The header, the buffer table, the pickle, padding, and every page of buffers.
    positions = {0, len(dbcache.MAGIC) + 2, len(dbcache.MAGIC) + 40, 90, 200, 1000,
                 len(original) - 1} | {rng.randrange(len(original)) for _ in range(20)}
    positions |= set(range(4096, len(original), 4096))
    for position in sorted(positions):
        damaged = bytearray(original)
        damaged[position] ^= 0x01
        path.write_bytes(bytes(damaged))
        os.chmod(path, 0o600)
        assert dbcache.DatabaseCache(str(cache)).load(key) is None, position
        assert not path.exists()
    for damaged in (original[:-1], original + b"\0", original[:100], b""):
        path.write_bytes(damaged)
        os.chmod(path, 0o600)
        assert dbcache.DatabaseCache(str(cache)).load(key) is None
    path.write_bytes(original)
    os.chmod(path, 0o600)
    assert _lookups(dbcache.DatabaseCache(str(cache)).load(key))[0] == ["Empty.Md5.UNOFFICIAL"]


def test_a_replaced_cache_does_not_disturb_a_loaded_one(cached):
    sigdir, cache, path, key = cached
    loaded = dbcache.DatabaseCache(str(cache)).load(key)
    # A newer cache for other files replaces it (the old one is removed).
    (sigdir / "d.hdb").write_text(f"{MD5}:6:Other\n")
    Engine(load_database([str(sigdir)], cache_dir=str(cache)))
    assert not path.exists()
    assert _lookups(loaded)[0] == ["Empty.Md5.UNOFFICIAL"]  # still its own mapping


def test_other_load_options_get_another_cache(cached):
    sigdir, cache, path, key = cached
    other = load_database([str(sigdir)], LoadOptions(detect_pua=True), cache_dir=str(cache))
    assert other.fingerprint != key


def test_engine_from_the_cache_reports_what_a_cold_engine_reports(tmp_path):
    from clammail.signatures.bodysig import SignatureTable

    rng = random.Random(4)
    sigdir = tmp_path / "db"
    sigdir.mkdir()
    bodies = [rng.randbytes(rng.randint(6, 12)) for _ in range(60)]
    lines = []
    for number, body in enumerate(bodies):
        hexsig = body.hex()
        if number % 3 == 1:
            hexsig = hexsig[:4] + "??" + hexsig[6:]
        elif number % 3 == 2:
            hexsig = hexsig[:6] + "{0-4}" + hexsig[6:]
        lines.append(f"Body.{number}:0:*:{hexsig}" + (":20:999" if number % 5 == 0 else ""))
    (sigdir / "a.ndb").write_text("\n".join(lines) + "\n")
    (sigdir / "b.ldb").write_text(
        f"Logical.One;Engine:51-255,Target:0;0&1;{bodies[3].hex()};{bodies[4].hex()}\n")
    (sigdir / "c.hdb").write_text(f"{MD5}:5:Empty.Md5\n")
    samples = []
    for index in range(12):
        chosen = rng.sample(bodies, 3)
        data = b"".join(rng.randbytes(20) + body for body in chosen)
        if index == 0:
            data += bodies[3] + bodies[4]
        samples.append(data)
    cold = load_database([str(sigdir)])
    cache = tmp_path / "cache"
    Engine(load_database([str(sigdir)], cache_dir=str(cache)))  # fills the cache
    cached = load_database([str(sigdir)], cache_dir=str(cache))
    assert isinstance(cached.body_signatures, SignatureTable)
    assert len(cached.body_signatures) == len(cold.body_signatures) == 60
    assert list(cached.body_signatures) == list(cold.body_signatures)
    assert cached.body_signatures[-1] == cold.body_signatures[-1]
    assert cached.body_signatures[5:8] == cold.body_signatures[5:8]
    cold_engine, cached_engine = Engine(cold), Engine(cached)
    assert any(k.startswith("body_matcher:") for k in cached.compiled)
    reported = 0
    for data in samples:
        expected = cold_engine.scan_bytes(data, allmatch=True).detections
        assert cached_engine.scan_bytes(data, allmatch=True).detections == expected
        reported += len(expected)
    assert reported >= 30
    assert "Logical.One.UNOFFICIAL" in cold_engine.scan_bytes(samples[0], allmatch=True).detections
