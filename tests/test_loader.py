"""Directory rules, unsupported files, bad input, the compiled cache and sigtool's hash output."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest
from conftest import need_program
from dbtest_helpers import both, clamscan

from clammail.signatures.common import LoadOptions, SignatureError
from clammail.signatures.cvd import build_container
from clammail.signatures.loader import load_database

pytestmark = pytest.mark.oracle


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "target.txt"
    path.write_text("a file for loader tests\n")
    return path


def _sig(target, name, algo="md5"):
    digest = hashlib.new(algo, target.read_bytes()).hexdigest()
    return f"{digest}:{target.stat().st_size}:{name}\n"


def test_directory_without_databases_fails_in_both(tmp_path, target, sigdir):
    (sigdir / "README.txt").write_text("not a database\n")
    (sigdir / "x.info").write_text("ClamAV-VDB:x\n")  # .info is not picked up from a directory
    theirs = clamscan([sigdir], [target])
    assert theirs[0] == 2 and "No supported database files found" in theirs[2]
    with pytest.raises(SignatureError, match="No supported database files found"):
        load_database([str(sigdir)])


def test_official_only_skips_plain_files(tmp_path, target, sigdir):
    (sigdir / "x.hdb").write_text(_sig(target, "Plain"))
    theirs = clamscan([sigdir], [target], "--official-db-only")
    assert theirs[0] == 2
    with pytest.raises(SignatureError, match="No supported"):
        load_database([str(sigdir)], LoadOptions(official_only=True))
    # A file named directly is loaded all the same.
    theirs, ours = both([sigdir / "x.hdb"], [target], "--official-db-only")
    assert ours[:2] == theirs[:2] and theirs[0] == 1


def test_info_file_alone_is_refused(tmp_path, target):
    info = tmp_path / "x.info"
    info.write_text("ClamAV-VDB:x:1:1:216:X:X:me:0\n")
    assert clamscan([info], [target])[0] == 2
    with pytest.raises(SignatureError, match="only be loaded from within"):
        load_database([str(info)])


def test_unknown_and_unsupported_files_are_skipped_with_a_warning(tmp_path, target, sigdir):
    (sigdir / "x.hdb").write_text(_sig(target, "Found"))
    (sigdir / "y.pdb").write_text("R:example.com\n")
    (sigdir / "z.ftm").write_text("0:0:41424344:Test:CL_TYPE_ANY:CL_TYPE_TEXT_ASCII\n")
    (sigdir / "notes.txt").write_text("ignored silently\n")
    db = load_database([str(sigdir)])
    skipped = {os.path.basename(path) for path, _ in db.info.skipped}
    assert skipped == {"y.pdb", "z.ftm"}
    assert len(db.info.warnings) == 2
    assert db.info.files == [str(sigdir / "x.hdb")]
    unknown = tmp_path / "odd.xyz"
    unknown.write_text("whatever\n")
    db = load_database([str(unknown), str(sigdir / "x.hdb")])
    assert db.info.skipped[0][0] == str(unknown)
    theirs, ours = both([unknown, sigdir / "x.hdb"], [target])
    assert ours[:2] == theirs[:2]


def test_ignore_lists_load_first_whatever_their_name(tmp_path, target, sigdir):
    (sigdir / "aaa.hdb").write_text(_sig(target, "Early") + _sig(target, "Kept", "sha1"))
    (sigdir / "zzz.ign2").write_text("Early\n")
    theirs, ours = both([sigdir], [target])
    assert theirs[1] == {str(target): ["Kept.UNOFFICIAL"]}
    assert ours[:2] == theirs[:2] and ours[3] == theirs[3]


def test_daily_cld_or_cvd_whichever_is_newer(tmp_path, target, sigdir):
    """Only the newer daily loads; its version becomes VERSION's."""
    files = {"daily.hdb": _sig(target, "Daily").encode()}
    (sigdir / "daily.cud").write_bytes(build_container(files, "daily", 7, 1, 1700000000))
    (sigdir / "main.cud").write_bytes(build_container(
        {"main.hdb": _sig(target, "Main", "sha256").encode()}, "main", 60, 1, 1600000000))
    db = load_database([str(sigdir)])
    assert db.info.version == 7
    assert db.info.build_time == time.ctime(1700000000)
    assert db.info.signatures == 2
    theirs, ours = both([sigdir], [target])
    assert ours[:2] == theirs[:2] and ours[3] == theirs[3]


def test_empty_unreadable_and_garbage_inputs(tmp_path, target, sigdir):
    cases = {
        "empty.hdb": b"", "empty.ign2": b"", "garbage.hsb": os.urandom(3000),
        "garbage.ign2": b"a:b:c:d:e\n", "nul.hdb": b"\0\0\0\n",
    }
    for name, data in cases.items():
        path = sigdir / name
        path.write_bytes(data)
        theirs = clamscan([path], [target])
        try:
            load_database([str(path)])
            ours_failed = False
        except SignatureError:
            ours_failed = True
        assert ours_failed == (theirs[0] == 2), (name, theirs)
        path.unlink()
    with pytest.raises(SignatureError, match="status"):
        load_database([str(tmp_path / "missing.hdb")])
    with pytest.raises(SignatureError):
        load_database(["/dev/null"])


def test_cache_round_trip_and_corruption(tmp_path, target, sigdir):
    (sigdir / "x.hdb").write_text(_sig(target, "Cached"))
    cache = tmp_path / "cache"
    first = load_database([str(sigdir)], cache_dir=str(cache))
    files = [name for name in os.listdir(cache) if name.startswith("db-")]
    assert len(files) == 1 and first.fingerprint
    second = load_database([str(sigdir)], cache_dir=str(cache))
    digest = hashlib.md5(target.read_bytes()).digest()
    size = target.stat().st_size
    assert second.file_hashes.lookup(digest, size) == ["Cached.UNOFFICIAL"]
    assert second.info.signatures == first.info.signatures == 1
    # The engine's compiled forms ride along.
    from clammail.signatures.dbcache import save_compiled

    second.compiled["body_matcher"] = {"stand-in": 1}
    assert save_compiled(second)
    assert load_database([str(sigdir)], cache_dir=str(cache)).compiled == {
        "body_matcher": {"stand-in": 1}}
    # A corrupt file is ignored and removed; the databases load again.
    path = cache / files[0]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.chmod(path, 0o600)
    third = load_database([str(sigdir)], cache_dir=str(cache))
    assert third.file_hashes.lookup(digest, size) == ["Cached.UNOFFICIAL"]
    assert third.compiled == {}
    # A cache writable by others is not trusted.
    os.chmod(cache / files[0], 0o666)
    from clammail.signatures.dbcache import DatabaseCache

    assert DatabaseCache(str(cache)).load(third.fingerprint) is None
    # A changed database gets a new key.
    time.sleep(0.01)
    (sigdir / "x.hdb").write_text(_sig(target, "Changed"))
    fourth = load_database([str(sigdir)], cache_dir=str(cache))
    assert fourth.file_hashes.lookup(digest, size) == ["Changed.UNOFFICIAL"]
    assert fourth.fingerprint != third.fingerprint
    # An unwritable cache location means no cache, not an error.
    assert load_database([str(sigdir)], cache_dir="/proc/no-cache-here").info.signatures == 1


@pytest.mark.parametrize("option", ["--md5", "--sha1", "--sha256"])
def test_sigtool_hash_signatures_match_debian(tmp_path, target, option):
    sigtool = need_program("sigtool")
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(777))
    theirs = subprocess.run([sigtool, option, str(target), str(other)], capture_output=True,
                            text=True)
    ours = subprocess.run([sys.executable, "-m", "clammail", "sigtool", option, str(target),
                           str(other)], capture_output=True, text=True)
    assert ours.stdout == theirs.stdout and ours.returncode == theirs.returncode == 0
    theirs = subprocess.run([sigtool, option], input=b"stdin data", capture_output=True)
    ours = subprocess.run([sys.executable, "-m", "clammail", "sigtool", option],
                          input=b"stdin data", capture_output=True)
    assert ours.stdout == theirs.stdout


def test_sigtool_list_sigs_matches_debian(tmp_path, target, sigdir):
    sigtool = need_program("sigtool")
    (sigdir / "a.hdb").write_text(_sig(target, "First") + _sig(target, "Second", "sha1"))
    (sigdir / "b.hsb").write_text(_sig(target, "Third", "sha256"))
    for arg in (str(sigdir / "a.hdb"), str(sigdir)):
        theirs = subprocess.run([sigtool, f"--list-sigs={arg}"], capture_output=True, text=True)
        ours = subprocess.run([sys.executable, "-m", "clammail", "sigtool",
                               f"--list-sigs={arg}"], capture_output=True, text=True)
        assert ours.stdout == theirs.stdout and theirs.stdout


def test_clamav_unit_hash_signatures_load_with_clamscans_count(tmp_path, target):
    """ClamAV's own .hdb/.hsb/.mdb/.msb/.imp test signatures: same count, right indexes."""
    from conftest import need_unit_data

    sigs = need_unit_data() / "pe_allmatch" / "alert-sigs"
    folder = tmp_path / "unit"
    folder.mkdir()
    for path in sigs.iterdir():
        if path.suffix in (".hdb", ".hsb", ".mdb", ".msb", ".imp"):
            (folder / path.name).write_bytes(path.read_bytes())
    db = load_database([str(folder)])
    assert db.info.signatures == clamscan([folder], [target])[3]
    assert len(db.section_hashes) > 0 and len(db.import_hashes) > 0
    assert len(db.file_hashes) > 0 and not db.info.warnings
