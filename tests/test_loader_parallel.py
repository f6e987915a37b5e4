"""Hash files parsed by forked children give exactly what parsing them here gives.

The loader hands big hash files to children (`PARALLEL_HASH_BYTES`); these
tests lower the threshold to 0 so every hash file goes to a child, and
compare with the same load done in one process: every lookup, the names
chosen for duplicates (across files too), the counts, the ignore lists, and
which error is reported when several files are malformed.
"""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from clammail import forked
from clammail.signatures import loader
from clammail.signatures.common import SignatureError
from clammail.signatures.loader import load_database


def _load(paths, parallel: bool, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(forked, "ENABLED", parallel)
        patch.setattr(loader, "PARALLEL_HASH_BYTES", 0)
        return load_database([str(p) for p in paths])


def _write_hash_files(directory, rng):
    """Three files sharing digests (duplicates across and within files), all three
    digest kinds, `*` sizes, comments and a " (Clam)" suffix (the slow path)."""
    blobs = [rng.randbytes(rng.randint(1, 300)) for _ in range(400)]
    files = {"a.hdb": [], "b.hsb": [], "c.hdb": []}
    for number, blob in enumerate(blobs):
        for name in rng.sample(sorted(files), rng.randint(1, 3)):
            algo = rng.choice(["md5", "sha1", "sha256"]) if name != "a.hdb" else "md5"
            digest = hashlib.new(algo, blob).hexdigest()
            size = (f"*:Sig{number}-{name}:73" if rng.random() < 0.1
                    else f"{len(blob)}:Sig{number}-{name}")
            files[name].append(f"{digest}:{size}")
            if rng.random() < 0.1:
                files[name].append(f"{digest}:{len(blob)}:Dup{number}-{name} (Clam)")
    for name, lines in files.items():
        (directory / name).write_text("# comment\n" + "\n".join(lines) + "\n")
    return blobs


def test_children_and_one_process_load_the_same(tmp_path, monkeypatch):
    rng = random.Random(5)
    sigdir = tmp_path / "db"
    sigdir.mkdir()
    blobs = _write_hash_files(sigdir, rng)
    (sigdir / "x.ndb").write_text("Body.Sig:0:*:a1b2c3d4e5\n")
    (sigdir / "y.ign2").write_text("Sig7-c.hdb\nSig9-b.hsb\n")
    here = _load([sigdir], False, monkeypatch)
    there = _load([sigdir], True, monkeypatch)
    assert there.info.signatures == here.info.signatures > 400
    assert there.info.files == here.info.files
    found = 0
    for blob in blobs:
        for algo in ("md5", "sha1", "sha256"):
            digest = hashlib.new(algo, blob).digest()
            names = here.file_hashes.lookup(digest, len(blob))
            assert there.file_hashes.lookup(digest, len(blob)) == names
            found += bool(names)
    assert found >= 400
    assert sorted(there.file_hashes.entries()) == sorted(here.file_hashes.entries())
    assert not any("Sig7-c.hdb" in name for *_, name in there.file_hashes.entries())


def test_the_first_error_in_load_order_is_reported(tmp_path, monkeypatch):
    sigdir = tmp_path / "db"
    sigdir.mkdir()
    good = "d41d8cd98f00b204e9800998ecf8427e:5:Good\n"
    (sigdir / "a.hdb").write_text(good * 3 + "zz:5:Bad\n")
    (sigdir / "b.ndb").write_text("Body:0:*:a1\n")  # too short: also an error
    (sigdir / "c.hdb").write_text("nothex:x:Bad\n")
    order = [name for name in os.listdir(sigdir)]
    first = next(name for name in order if name != "c.hdb")  # c.hdb fails later either way
    for parallel in (False, True):
        with pytest.raises(SignatureError) as caught:
            _load([sigdir], parallel, monkeypatch)
        assert os.path.basename(caught.value.path) == first
        if first == "a.hdb":
            assert caught.value.line == 4


def test_a_failing_child_is_replaced_by_parsing_here(tmp_path, monkeypatch):
    sigdir = tmp_path / "db"
    sigdir.mkdir()
    (sigdir / "a.hdb").write_text("d41d8cd98f00b204e9800998ecf8427e:5:Good\n")

    def dies(parser, read):
        os._exit(9)

    monkeypatch.setattr(loader, "_parse_hash_file", dies)
    database = _load([sigdir], True, monkeypatch)
    assert database.file_hashes.lookup(bytes.fromhex("d41d8cd98f00b204e9800998ecf8427e"),
                                       5) == ["Good.UNOFFICIAL"]
    assert database.info.signatures == 1


def test_sort_order_is_a_stable_sort_of_the_keys():
    """The packed integer sort of the hash index equals a stable sort of the raw keys,
    with ties in the prefix, equal keys (kept in load order) and one-entry inputs."""
    import numpy as np

    from clammail.signatures.hashsigs import _sort_order

    rng = np.random.default_rng(3)
    for count, sizes in ((1, 1), (2, 1), (5000, 3), (20000, 50), (3000, 3000)):
        raw = rng.integers(0, 256, (count, 20), dtype=np.uint8)
        raw[:, :4] = 0
        raw[:, 3] = rng.integers(0, sizes, count)  # few sizes: many equal prefixes
        raw[:, 4] = rng.integers(0, 2, count)  # and digests alike in their first bytes
        raw[:, 5] = rng.integers(0, 2, count)
        raw[rng.integers(0, count, count // 10)] = raw[0]  # duplicates of one key
        keys = raw.view("S20").ravel()
        expected = np.argsort(keys, kind="stable")
        assert np.array_equal(_sort_order(keys), expected)


def _ndb_text(rng, count):
    lines = []
    for number in range(count):
        body = rng.randbytes(rng.randint(4, 10)).hex()
        shape = rng.choice(["{0}", "{0}??{1}", "{0}*{1}", "{1}(aa|bbcc){0}", "{0}{{3-9}}{1}"])
        hexsig = shape.format(body, rng.randbytes(3).hex())
        level = rng.choice(["", ":20", ":20:30", ":999"])
        lines.append(f"Sig.{number}:{rng.choice([0, 1, 3, 7])}:*:{hexsig}{level}")
        if number % 17 == 0:
            lines.append("# a comment")
    return "\n".join(lines) + "\n"


def test_ndb_halves_parsed_by_a_child_give_the_same_signatures(monkeypatch):
    from clammail.signatures import bodysig
    from clammail.signatures.common import LoadOptions

    text = _ndb_text(random.Random(8), 400)
    here = bodysig.load_ndb(text, "x.ndb", False, LoadOptions())
    monkeypatch.setattr(bodysig, "PARALLEL_CHARS", 100)
    there = bodysig.load_ndb(text, "x.ndb", False, LoadOptions())
    assert there == here and len(here) > 150
    assert [s.pattern.anchors for s in there] == [s.pattern.anchors for s in here]
    monkeypatch.setattr(forked, "ENABLED", False)
    assert bodysig.load_ndb(text, "x.ndb", False, LoadOptions()) == here


@pytest.mark.parametrize("where", [0.2, 0.8])
def test_ndb_error_lines_count_across_the_halves(monkeypatch, where):
    from clammail.signatures import bodysig
    from clammail.signatures.common import LoadOptions

    lines = _ndb_text(random.Random(9), 300).splitlines()
    bad = int(len(lines) * where)
    lines[bad] = "Broken:0:*:a1"  # too short
    lines[-1] = "Broken.Too:0:*:zz"  # a later error must not win
    text = "\n".join(lines) + "\n"
    errors = []
    for parallel in (False, True):
        monkeypatch.setattr(bodysig, "PARALLEL_CHARS", 100 if parallel else 1 << 40)
        with pytest.raises(SignatureError) as caught:
            bodysig.load_ndb(text, "x.ndb", False, LoadOptions())
        errors.append((caught.value.path, caught.value.line, caught.value.reason))
    assert errors[0] == errors[1]
    assert errors[0][:2] == ("x.ndb", bad + 1)


def test_ndb_child_failure_is_parsed_here(monkeypatch):
    from clammail.signatures import bodysig
    from clammail.signatures.common import LoadOptions

    text = _ndb_text(random.Random(10), 100)
    here = bodysig.load_ndb(text, "x.ndb", False, LoadOptions())
    monkeypatch.setattr(bodysig, "PARALLEL_CHARS", 100)
    monkeypatch.setattr(bodysig, "_columns", lambda *args: os._exit(5))
    assert bodysig.load_ndb(text, "x.ndb", False, LoadOptions()) == here
