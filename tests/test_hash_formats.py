"""Hash signature formats (.hdb .hsb .hdu .hsu .fp .sfp), compared with clamscan 1.4.6."""

from __future__ import annotations

import hashlib
import random

import pytest
from dbtest_helpers import both, clammail, clamscan

from clammail.signatures.common import SignatureError
from clammail.signatures.hashsigs import (
    HashFileParser,
    HashIndexBuilder,
    NameTable,
    Purpose,
    parse_hash_line,
)

pytestmark = pytest.mark.oracle


def _targets(tmp_path, count=12, seed=7):
    rng = random.Random(seed)
    files = []
    for i in range(count):
        path = tmp_path / f"target{i:02d}.bin"
        # Plain text: binary noise can look like a file type clamscan opens
        # again, which repeats hash verdicts under --allmatch.
        path.write_text(f"target {i}\n" + rng.randbytes(rng.randint(1, 1500)).hex() + "\n")
        files.append(path)
    return files


def _digest(path, algo):
    return hashlib.new(algo, path.read_bytes()).hexdigest()


def test_every_size_and_level_variant_agrees(tmp_path, sigdir):
    """One run over many variants: sizes, `*` with FLEVEL fields, max levels, names, case."""
    targets = _targets(tmp_path)
    lines = []
    variants = [
        "{h}:{s}:{n}", "{h}:{s}:{n}:", "{h}:{s}:{n}:0", "{h}:{s}:{n}:216", "{h}:{s}:{n}:217",
        "{h}:{s}:{n}:1:215", "{h}:{s}:{n}:1:216", "{h}:{s}:{n}:73:", "{h}:*:{n}:73",
        "{h}:*:{n}:73:300", "{h}:*:{n}:0073", "{h}:*:{n}:73abc", "{h}:*:{n}:300",
        "{h}:{s1}:{n}", "{H}:{s}:{n}", "{h}: {s}:{n}", "{h}:+{s}:{n}", "{h}:{s}:{n} (Clam)",
        "{h}:{s}:{n} with spaces", "{h}:{s}:{n}:x", "{h}:{s}:{n}:-5", "{h}:{s}:{n}:1:-1",
    ]
    for index, target in enumerate(targets):
        size = target.stat().st_size
        for algo in ("md5", "sha1", "sha256"):
            digest = _digest(target, algo)
            variant = variants[(index * 3 + len(algo)) % len(variants)]
            lines.append(variant.format(h=digest, H=digest.upper(), s=size, s1=size + 1,
                                        n=f"V.{algo}.{index}"))
            for extra, form in enumerate(variants[index % 4::5]):
                lines.append(form.format(h=digest, H=digest.upper(), s=size, s1=size + 1,
                                         n=f"W.{algo}.{index}.{extra}"))
    (sigdir / "a.hdb").write_text("# comment line\n" + "\n".join(lines[::2]) + "\n")
    (sigdir / "b.hsb").write_text("\n".join(lines[1::2]) + "\n")
    theirs, ours = both([sigdir], targets)
    assert theirs[0] == 1, theirs[2]
    assert ours[:2] == theirs[:2]
    assert ours[3] == theirs[3]  # Known viruses


def test_duplicate_hashes_report_the_name_clamd_picks(tmp_path, sigdir):
    """Several names for one (hash, size): clamd reports one, chosen by its sort."""
    targets = _targets(tmp_path, count=8, seed=11)
    rng = random.Random(5)
    lines = []
    for i in range(400):
        lines.append(f"{rng.randbytes(16).hex()}:{rng.choice([100, 200, 300])}:Filler{i}")
    for index, target in enumerate(targets):
        md5 = _digest(target, "md5")
        size = target.stat().st_size
        for copy in range(rng.randint(2, 9)):
            lines.insert(rng.randrange(len(lines) + 1), f"{md5}:{size}:Dup{index}.{copy}")
        for copy in range(rng.randint(2, 5)):
            lines.insert(rng.randrange(len(lines) + 1), f"{md5}:*:Wild{index}.{copy}:73")
    (sigdir / "dups.hdb").write_text("\n".join(lines) + "\n")
    theirs, ours = both([sigdir], targets)
    assert theirs[0] == 1
    assert ours[:2] == theirs[:2]
    assert ours[3] == theirs[3]


def test_later_file_in_directory_order_matters(tmp_path, sigdir):
    targets = _targets(tmp_path, count=2)
    md5 = _digest(targets[0], "md5")
    size = targets[0].stat().st_size
    for name in ("z1.hdb", "a2.hdb", "m3.hdb"):
        (sigdir / name).write_text(f"{md5}:{size}:From.{name}\n")
    theirs, ours = both([sigdir], targets)
    assert ours[:2] == theirs[:2]


MALFORMED = [
    "", "\n", "{h}:{s}:A\n\n", "{h}:0:Zero\n", "{h}:{s} :Space\n", "{h}:4294967295:Big\n",
    "{h}:{s}:A:1:2:3\n", "{h}:{s}:\n", "{h}:{s}\n", "{h}0:{s}:Odd\n", "{bad}:{s}:BadHex\n",
    " {h}:{s}:Lead\n", "{h}::NoSize\n", ":{s}:NoHash\n", "{h}:*:Star\n", "{h}:*:Star:72\n",
    "{h}:-{s}:Neg\n", "{h}:0x10:Hex\n", "{h}:{s}: (Clam)\n", "\x00\x01\x02binary\xff\n",
    "{h}:{s}:A\r\n\r\n",
]


@pytest.mark.parametrize("case", range(len(MALFORMED)))
def test_malformed_line_fails_the_load_in_both(tmp_path, sigdir, case):
    target = _targets(tmp_path, count=1)[0]
    md5 = _digest(target, "md5")
    text = MALFORMED[case].format(h=md5, s=target.stat().st_size, bad=md5[:-1] + "g")
    db = sigdir / "bad.hdb"
    db.write_bytes(text.encode("latin-1"))
    theirs, ours = both([db], [target])
    assert theirs[0] == 2 and not theirs[1], theirs
    assert ours[0] == 2 and not ours[1], ours[2]
    assert "bad.hdb" in ours[2]


def test_comment_only_file_loads_nothing(tmp_path, sigdir):
    target = _targets(tmp_path, count=1)[0]
    (sigdir / "c.hdb").write_text("# nothing here\n")
    theirs, ours = both([sigdir / "c.hdb"], [target])
    assert ours[:2] == theirs[:2] == (0, {str(target): []})
    assert ours[3] == theirs[3] == 0


@pytest.mark.parametrize("length", [8189, 8190, 8191, 9000, 20000])
def test_long_lines_are_read_like_fgets(tmp_path, sigdir, length):
    target = _targets(tmp_path, count=1)[0]
    prefix = f"{_digest(target, 'md5')}:{target.stat().st_size}:"
    (sigdir / "long.hdb").write_text(prefix + "N" * (length - len(prefix)) + "\n")
    theirs, ours = both([sigdir / "long.hdb"], [target])
    assert ours[:2] == theirs[:2]


def test_huge_line_fails_in_bounded_memory(tmp_path, sigdir):
    """A 1 GiB line (sparse file): read in fgets-sized pieces, it fails at piece 2."""
    import resource

    target = _targets(tmp_path, count=1)[0]
    db = sigdir / "huge.hdb"
    with open(db, "wb") as fh:
        fh.write(f"{_digest(target, 'md5')}:{target.stat().st_size}:Huge".encode())
        fh.truncate(1 << 30)
    from clammail.signatures.loader import load_database

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SignatureError) as error:
        load_database([str(db)])
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert error.value.line == 2
    assert grown_mb < 200
    theirs = clamscan([db], [target])
    assert theirs[0] == 2 and "line 2" in theirs[2]


def test_allow_list_suppresses_detection_and_counts(tmp_path, sigdir):
    targets = _targets(tmp_path, count=4)
    hdb, fp = [], []
    for index, target in enumerate(targets):
        size = target.stat().st_size
        hdb.append(f"{_digest(target, 'md5')}:{size}:Bad{index}")
    fp.append(f"{_digest(targets[0], 'md5')}:{targets[0].stat().st_size}:Good0")
    fp.append(f"{_digest(targets[1], 'sha256')}:*:Good1:73")
    (sigdir / "x.hdb").write_text("\n".join(hdb) + "\n")
    (sigdir / "y.fp").write_text(fp[0] + "\n")
    (sigdir / "z.sfp").write_text(fp[1] + "\n")
    theirs, ours = both([sigdir], targets)
    assert theirs[1][str(targets[0])] == []
    assert ours[:2] == theirs[:2]
    assert ours[3] == theirs[3] == 6


def test_fast_and_reference_parsers_agree():
    """The numpy path and the line-by-line reference give the same entries."""
    rng = random.Random(3)
    lines = []
    for i in range(3000):
        kind = rng.random()
        digest = rng.randbytes(rng.choice([16, 20, 32])).hex()
        size = rng.choice(["1", "12", "4294967294", "*", "0012", "+5"])
        name = rng.choice(["N", "Name.X", "Name (Clam)", "Ü.name", "a.b"]) + str(i)
        if kind < 0.1:
            lines.append(f"# comment {i}")
        elif kind < 0.2:
            lines.append(f"{digest}:{size}:{name}:73")
        elif kind < 0.25:
            lines.append(f"{digest}:{size if size != '*' else '7'}:{name}:1:100")
        else:
            lines.append(f"{digest}:{size if size != '*' else '9'}:{name}")
    data = ("\n".join(lines) + "\n").encode()

    fast_names = NameTable()
    fast = HashIndexBuilder(fast_names)
    chunks = [data]
    HashFileParser(fast, Purpose.FILE, False, "x.hdb").parse_stream(
        lambda n: chunks.pop() if chunks else b"")
    slow_names = NameTable()
    slow = HashIndexBuilder(slow_names)
    count = 0
    for line in data.splitlines(keepends=True):
        entry = parse_hash_line(line, Purpose.FILE)
        if entry is not None:
            slow.add(entry, False)
            count += 1
    fast_index, slow_index = fast.build(), slow.build()
    fast_names.finish()
    slow_names.finish()
    assert sorted(fast_index.entries()) == sorted(slow_index.entries())
    assert len(fast_index) == len(slow_index) > 2000


def test_lookup_handles_digests_ending_in_zero_bytes():
    names = NameTable()
    builder = HashIndexBuilder(names)
    digest = bytes(15) + b"\0"
    builder.add(parse_hash_line(f"{digest.hex()}:5:Zero\n".encode(), Purpose.FILE), False)
    builder.add(parse_hash_line(f"{(b'x' * 16).hex()}:5:Other\n".encode(), Purpose.FILE), True)
    index = builder.build()
    names.finish()
    assert index.lookup(digest, 5) == ["Zero.UNOFFICIAL"]
    assert index.lookup(b"x" * 16, 5) == ["Other"]
    assert index.lookup(digest, 6) == []
    assert index.algorithms() == frozenset({"md5"})


def test_ignore_lists_drop_signatures_at_load(tmp_path, sigdir):
    targets = _targets(tmp_path, count=4)
    lines = []
    for index, target in enumerate(targets):
        lines.append(f"{_digest(target, 'md5')}:{target.stat().st_size}:Ign{index}")
    (sigdir / "s.hdb").write_text("\n".join(lines) + "\n")
    line2 = lines[2].encode()
    (sigdir / "a.ign2").write_text(
        "Ign0\n" + f"Ign2:{hashlib.md5(line2).hexdigest()}\n" + f"Ign3:{'0' * 32}\n")
    (sigdir / "b.ign").write_text("daily.hdb:1:Ign1\n")
    theirs, ours = both([sigdir], targets)
    assert ours[:2] == theirs[:2]
    assert ours[3] == theirs[3] == 1
    assert theirs[1][str(targets[3])] == ["Ign3.UNOFFICIAL"]


def test_pua_databases_need_detect_pua(tmp_path, sigdir):
    targets = _targets(tmp_path, count=2)
    md5 = _digest(targets[0], "md5")
    (sigdir / "p.hdu").write_text(f"{md5}:{targets[0].stat().st_size}:PUA.Win.Tool.X\n")
    (sigdir / "n.hdb").write_text(f"{_digest(targets[1], 'md5')}:*:Plain:73\n")
    for extra in ((), ("--detect-pua=yes",)):
        theirs, ours = clamscan([sigdir], targets, *extra), clammail([sigdir], targets, *extra)
        assert ours[:2] == theirs[:2], extra
        assert ours[3] == theirs[3]


def test_objects_no_signature_has_the_size_of_are_not_hashed(tmp_path):
    """has_size decides whether an object is hashed at all: exact sizes,
    `*` sizes and absent kinds, checked against the lookups themselves."""
    from clammail.signatures.loader import load_database

    data = {size: bytes([size % 251]) * size for size in (6, 300, 70000)}
    (tmp_path / "a.hdb").write_text("".join(
        f"{hashlib.md5(blob).hexdigest()}:{size}:Md5.{size}\n" for size, blob in data.items()))
    (tmp_path / "b.hsb").write_text(f"{hashlib.sha256(data[300]).hexdigest()}:*:Sha256.Any:73\n")
    index = load_database([str(tmp_path)]).file_hashes
    for size in (5, 6, 7, 299, 300, 301, 70000, 2**32 - 2):
        assert index.has_size("md5", size) == (size in data)
        assert index.has_size("sha256", size)  # a `*` size matches every size
        assert not index.has_size("sha1", size)
    assert index.lookup(hashlib.md5(data[300]).digest(), 300) == ["Md5.300.UNOFFICIAL"]
    assert index.lookup(hashlib.sha256(data[300]).digest(), 12345) == ["Sha256.Any.UNOFFICIAL"]
