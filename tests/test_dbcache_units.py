"""The per-file cache: after a database file changes, the others come from their cached
shares, and the load equals one from scratch (lookups, duplicates across files, ignore
lists, counts, warnings, body signatures)."""

from __future__ import annotations

import hashlib
import os
import random
import time

import pytest
from test_loader_parallel import _write_hash_files

from clammail import forked
from clammail.signatures import loader
from clammail.signatures.loader import load_database


def _summary(database, blobs):
    lookups = []
    for blob in blobs:
        for algo in ("md5", "sha1", "sha256"):
            lookups.append(database.file_hashes.lookup(hashlib.new(algo, blob).digest(),
                                                       len(blob)))
    return (lookups, sorted(database.file_hashes.entries()), database.info.signatures,
            database.info.files, database.info.skipped, database.info.warnings,
            [(s.name, s.pattern.hexsig) for s in database.body_signatures],
            [s.name for s in database.logical_signatures])


def _units(cache):
    folder = cache / "files"
    return {name: os.stat(folder / name).st_mtime_ns for name in os.listdir(folder)}


@pytest.fixture(params=[False, True], ids=["one-process", "children"])
def parallel(request, monkeypatch):
    monkeypatch.setattr(forked, "ENABLED", request.param)
    monkeypatch.setattr(loader, "PARALLEL_HASH_BYTES", 0 if request.param else 1 << 40)


def test_a_changed_file_is_parsed_alone(tmp_path, parallel):
    rng = random.Random(11)
    sigdir = tmp_path / "db"
    sigdir.mkdir()
    blobs = _write_hash_files(sigdir, rng)
    (sigdir / "x.ndb").write_text("Body.A:0:*:a1b2c3d4e5\nBody.B:1:EP+0:c0c1??c3c4\n")
    (sigdir / "y.ign2").write_text("Sig7-c.hdb\nSig9-b.hsb\n")
    (sigdir / "z.ldb").write_text("Logical.A;Target:0;0&1;414243;444546\n")
    (sigdir / "w.cbc").write_text("not loaded: a warning\n")
    cache = tmp_path / "cache"

    first = load_database([str(sigdir)], cache_dir=str(cache))
    assert _summary(first, blobs) == _summary(load_database([str(sigdir)]), blobs)
    stored = _units(cache)
    assert len(stored) == 7  # every file that loaded, the skipped .cbc included

    time.sleep(0.01)
    with open(sigdir / "c.hdb", "a") as fh:
        fh.write(f"{hashlib.md5(blobs[3]).hexdigest()}:{len(blobs[3])}:Added.Later\n")
    second = load_database([str(sigdir)], cache_dir=str(cache))
    assert _summary(second, blobs) == _summary(load_database([str(sigdir)]), blobs)
    assert "Added.Later.UNOFFICIAL" in str(_summary(second, blobs)[0])
    now = _units(cache)
    # The other files' shares were read, not written again; c.hdb's was replaced.
    assert len(now) == 7 and len(set(now.items()) & set(stored.items())) == 6

    # A new ignore list loaded first changes what every later file gives.
    (sigdir / "0.ign2").write_text("Sig12-a.hdb\nBody.A\n")
    third = load_database([str(sigdir)], cache_dir=str(cache))
    plain = load_database([str(sigdir)])
    assert _summary(third, blobs) == _summary(plain, blobs)
    assert "Body.A.UNOFFICIAL" not in [s.name for s in third.body_signatures]


def test_a_damaged_share_is_parsed_again(tmp_path):
    sigdir = tmp_path / "db"
    sigdir.mkdir()
    (sigdir / "a.hdb").write_text("".join(f"{i:032x}:{i + 1}:Sig{i}\n" for i in range(300)))
    (sigdir / "b.ndb").write_text("Body.A:0:*:a1b2c3d4e5\n")
    cache = tmp_path / "cache"
    load_database([str(sigdir)], cache_dir=str(cache))
    for name in os.listdir(cache / "files"):
        path = cache / "files" / name
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    (sigdir / "c.ndb").write_text("Body.C:0:*:c1c2c3c4c5\n")  # a change: no whole-load cache
    loaded = load_database([str(sigdir)], cache_dir=str(cache))
    assert loaded.file_hashes.lookup((7).to_bytes(16, "big"), 8) == ["Sig7.UNOFFICIAL"]
    assert sorted(s.name for s in loaded.body_signatures) == ["Body.A.UNOFFICIAL",
                                                             "Body.C.UNOFFICIAL"]
    assert loaded.info.signatures == 302


def test_containers_and_their_twins(tmp_path):
    """daily.cvd (with an ignore list for the files after it) from its cached share while
    a plain file changes; then a newer daily.cld beside it replaces it, as in clamd."""
    from cvd_testkey import TEST_D, TEST_E, TEST_N

    from clammail.signatures.cvd import RsaKey, build_container

    key = RsaKey(TEST_N, TEST_E)
    keys, sign = (key, key), (TEST_D, key, TEST_D, key)
    sigdir = tmp_path / "db"
    sigdir.mkdir()
    members = {"daily.hdb": b"".join(b"%032x:%d:Daily%d\n" % (i, i + 1, i) for i in range(50)),
               "daily.ign2": b"Main3\n"}
    (sigdir / "daily.cvd").write_bytes(build_container(members, "daily", 100, 50,
                                                       int(time.time()), sign=sign))
    (sigdir / "main.hdb").write_text("".join(f"{i + 1000:032x}:{i + 1}:Main{i}\n"
                                             for i in range(50)))
    cache = tmp_path / "cache"

    def check():
        cached = load_database([str(sigdir)], cache_dir=str(cache), keys=keys)
        plain = load_database([str(sigdir)], keys=keys)
        assert sorted(cached.file_hashes.entries()) == sorted(plain.file_hashes.entries())
        for field in ("signatures", "files", "skipped", "warnings", "version",
                      "build_timestamp"):
            assert getattr(cached.info, field) == getattr(plain.info, field), field
        return cached

    first = check()
    assert first.info.version == 100 and first.info.signatures == 99  # Main3 ignored
    time.sleep(0.01)
    with open(sigdir / "main.hdb", "a") as fh:
        fh.write(f"{2000:032x}:7:Main.New\n")
    assert check().info.signatures == 100
    members["daily.hdb"] += b"%032x:9:Daily.New\n" % 3000
    (sigdir / "daily.cld").write_bytes(build_container(members, "daily", 101, 51,
                                                       int(time.time()), sign=sign))
    newer = check()
    assert newer.info.version == 101 and newer.info.signatures == 101
