"""Our ctypes binding to the system's libhs (clammail/engine/match/libhs.py)."""

from __future__ import annotations

import mmap
import os
import pickle

import pytest
from conftest import need_fast_matcher

from clammail.engine.match import backends, libhs


@pytest.fixture(autouse=True)
def _fast_path():
    need_fast_matcher()


def matches(database, data) -> list[tuple[int, int, int]]:
    found = []

    def on_match(ident, start, end, flags, context):
        found.append((ident, start, end))
        return 0

    callback = libhs.MATCH_CALLBACK(on_match)
    libhs.scan(database, data, libhs.Scratch([database]), callback)
    return found


def test_regex_and_literal_databases_find_the_same():
    literals = [b"abc", b"\x00\x01\x00", b"zz"]
    flags = [libhs.HS_FLAG_SINGLEMATCH] * 3
    data = b"xxabc\x00\x01\x00zzabc"
    regex = libhs.Database.compile([b"abc", b"\\x00\\x01\\x00", b"zz"], flags, [7, 8, 9])
    literal = libhs.Database.compile(literals, flags, [7, 8, 9], literal=True)
    # SINGLEMATCH: each id once, at its first end.
    assert sorted(matches(regex, data)) == [(7, 0, 5), (8, 0, 8), (9, 0, 10)]
    assert sorted(matches(literal, data)) == sorted(matches(regex, data))


def test_caseless_flag():
    database = libhs.Database.compile([b"abc"], [libhs.HS_FLAG_CASELESS], [1])
    assert [end for _, _, end in matches(database, b"..ABC..aBc")] == [5, 10]


def test_compile_error_names_the_expression():
    with pytest.raises(libhs.HyperscanError, match=r"expression 42.*"):
        libhs.Database.compile([b"ok", b"(unclosed"], [0, 0], [41, 42])


def test_serialized_database_scans_alike_and_pickles():
    database = libhs.Database.compile([b"needle"], [0], [3])
    blob = database.serialize()
    assert blob and len(blob) <= database.size() + 4096
    data = b"hay needle hay needle"
    assert matches(libhs.Database.deserialize(blob), data) == matches(database, data)
    assert matches(pickle.loads(pickle.dumps(database)), data) == [(3, 0, 10), (3, 0, 21)]
    with pytest.raises(libhs.HyperscanError):
        libhs.Database.deserialize(b"not a database")


def test_scans_buffers_without_copying(tmp_path):
    """mmap (read-only), memoryview slices and bytearray go to hs_scan as they are."""
    database = libhs.Database.compile([b"needle"], [libhs.HS_FLAG_SINGLEMATCH], [0])
    path = tmp_path / "f"
    path.write_bytes(b"\x00" * 5000 + b"needle" + b"\x00" * 100)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert matches(database, mapped) == [(0, 0, 5006)]
        view = memoryview(mapped)[4000:]
        assert matches(database, view) == [(0, 0, 1006)]
        view.release()
    assert matches(database, bytearray(b"..needle")) == [(0, 0, 8)]


def test_a_true_return_stops_the_scan():
    database = libhs.Database.compile([b"a"], [0], [0])
    seen = []

    def on_match(ident, start, end, flags, context):
        seen.append(end)
        return 1

    libhs.scan(database, b"aaaa", libhs.Scratch([database]), libhs.MATCH_CALLBACK(on_match))
    assert seen == [1]


def test_forked_child_gets_its_own_scratch():
    """A worker forked after the build scans with a scratch of its own."""
    database = libhs.Database.compile([b"needle"], [0], [0])
    scratch = libhs.Scratch([database])
    parent = scratch.get()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its scratch and a scan's result, then leave
        try:
            found = []
            callback = libhs.MATCH_CALLBACK(lambda i, s, e, f, c: found.append(e) or 0)
            libhs.scan(database, b"a needle", scratch, callback)
            own = scratch.get()
            os.write(write_fd, pickle.dumps((own != parent, found)))
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        answer = pickle.loads(fh.read())
    os.waitpid(pid, 0)
    assert answer == (True, [8])
    assert scratch.get() == parent


def test_buffers_too_long_for_one_scan_go_in_overlapping_pieces(monkeypatch):
    """hs_scan takes at most 4 GiB: longer buffers are scanned in pieces that overlap,
    and the first occurrence of each literal keeps its true offset."""
    monkeypatch.setattr(backends, "_LONGEST_SCAN", 400)
    monkeypatch.setattr(backends, "_PIECE_OVERLAP", 50)
    backend = backends.HyperscanBackend([(b"needle", False), (b"other", False)])
    data = bytearray(3000)
    data[398:404] = b"needle"  # across the first piece boundary
    data[2500:2505] = b"other"
    data[2900:2906] = b"needle"
    found, _ = backend.occurrences(bytes(data), lambda: bytes(data).lower())
    assert found == {0: [398, 2900], 1: [2500]}
