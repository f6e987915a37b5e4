"""SZDD, ARJ, CHM and SIS against clamscan 1.4.6: the test files, generated
archives, size limits and hostile input.

Generated files are written by Debian's tools where they exist (mscompress,
arj, chmcmd) and by small writers here otherwise (SZDD variants, SIS). Every
member gets a hash signature, so clamscan's ALLMATCH list shows exactly
which objects it extracted; both scanners must give the same lists.
"""

from __future__ import annotations

import base64
import os
import random
import struct
import subprocess
import tempfile
import zipfile
import zlib

import archive_builders as B
import pytest
from conftest import (
    CLAM_TEST_FILE_SIG,
    TESTFILES,
    clammail_results,
    clamscan_results,
    need_program,
)

pytestmark = pytest.mark.oracle

NEW_TESTFILES = ["clam.exe.szdd", "clam.arj", "clam.chm", "clam.sis"]


def payload(tag: str, size: int, seed: int = 0) -> bytes:
    """Unique, compressible bytes: clamscan's clean cache spans one run, so no
    two files of a run may share a member."""
    rng = random.Random(f"{tag}-{seed}")
    words = [tag.encode(), b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"\n"]
    out = bytearray(b"<<" + tag.encode() + b">>\n")
    while len(out) < size:
        out += rng.choice(words) + bytes([rng.randrange(32, 127)])
    return bytes(out[:size])


def noise(tag: str, size: int) -> bytes:
    return random.Random(tag).randbytes(size)


def _clam_exe() -> bytes:
    return (TESTFILES / "clam.exe").read_bytes()


def _sigs_for(members: dict[str, bytes]) -> list[str]:
    return [B.hdb_line(data, f"M.{name}") for name, data in members.items()]


def _prefix_sigs(tag: str, data: bytes, cuts) -> list[str]:
    return [B.hdb_line(data[:n], f"{tag}.{n}") for n in sorted(set(cuts)) if 5 < n <= len(data)]


# -- writers ----------------------------------------------------------------

def szdd_tool(data: bytes) -> bytes:
    """Debian's mscompress (COMPRESS.EXE's format)."""
    need_program("mscompress")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "f.bin")
        with open(path, "wb") as fh:
            fh.write(data)
        subprocess.run(["mscompress", path], check=True, capture_output=True, timeout=60)
        with open(path + "_", "rb") as fh:
            return fh.read()


def szdd_literal(data: bytes, size: int | None = None, missing: int = 0,
                 back_refs: bool = False) -> bytes:
    """SZDD by hand: literals only, or literals then back-references that copy
    the previous 18 bytes (overlapping copies of a short period)."""
    head = b"SZDD\x88\xf0\x27\x33A" + bytes([missing]) + struct.pack(
        "<I", len(data) if size is None else size)
    body = bytearray()
    items = [("lit", b) for b in data]
    if back_refs:
        items = [("lit", b) for b in data[:3]] + [("ref", 0)] * 40
    for i in range(0, len(items), 8):
        group = items[i:i + 8]
        flags = sum(1 << k for k, (kind, _) in enumerate(group) if kind == "lit")
        body.append(flags)
        for kind, value in group:
            if kind == "lit":
                body.append(value)
            else:
                # window slot of the byte three back, length 18
                body += bytes([0xF0, 0xF0 | 0x0F])
    return head + bytes(body)


def arj_tool(members, method: int = 1, garble: str | None = None) -> bytes:
    need_program("arj")
    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for name, data in members:
            with open(os.path.join(tmp, name), "wb") as fh:
                fh.write(data)
            names.append(name)
        args = ["arj", "a", "-y", f"-m{method}"] + ([f"-g{garble}"] if garble else [])
        subprocess.run(args + ["out.arj"] + names, cwd=tmp, check=True, capture_output=True,
                       timeout=120)
        with open(os.path.join(tmp, "out.arj"), "rb") as fh:
            return fh.read()


def chm_tool(members) -> bytes:
    """chmcmd from fp-utils; its second header GUID is wrong (libmspack, and
    so ClamAV, refuse it), `chm_fixed` repairs it."""
    need_program("chmcmd")
    with tempfile.TemporaryDirectory() as tmp:
        names = []
        for name, data in members:
            with open(os.path.join(tmp, name), "wb") as fh:
                fh.write(data)
            names.append(name)
        with open(os.path.join(tmp, "p.hhp"), "w") as fh:
            listing = "\n".join(names)
            fh.write(f"[OPTIONS]\nCompiled file=out.chm\nDefault topic={names[0]}\nTitle=t\n\n"
                     f"[FILES]\n{listing}\n")
        subprocess.run(["chmcmd", "p.hhp"], cwd=tmp, check=True, capture_output=True,
                       timeout=300)
        with open(os.path.join(tmp, "out.chm"), "rb") as fh:
            return fh.read()


def chm_fixed(data: bytes) -> bytes:
    out = bytearray(data)
    out[0x28] = 0x11
    return bytes(out)


def sis(files, langs: int = 1, compressed: bool = True, prefix_records: bytes = b"",
        prefix_count: int = 0, olen_factor: float = 1.0, pointer_override: int | None = None,
        ftype: int = 0, truncate_data: bool = False) -> bytes:
    """A pre-9.x SIS file: `files` is a list of (name, [one payload per language])."""
    header_end = 84
    plangs = header_end
    lang_block = struct.pack(f"<{langs}H", *range(1, langs + 1))
    pfiles = plangs + len(lang_block)
    record_size = 4 * (7 + 3 * langs) + 8
    names_at = pfiles + len(prefix_records) + record_size * len(files)
    blobs = bytearray()
    records = bytearray(prefix_records)
    for name, copies in files:
        raw_name = name.encode("utf-16-le")
        name_ptr = names_at + len(blobs)
        blobs += raw_name
        lens, ptrs, olens = [], [], []
        for copy in copies:
            stored = zlib.compress(copy) if compressed else copy
            ptrs.append(names_at + len(blobs) if pointer_override is None else pointer_override)
            lens.append(len(stored))
            olens.append(int(len(copy) * olen_factor))
            blobs += stored
        records += struct.pack("<7I", 0, ftype, 0, len(raw_name), name_ptr, 0, 0)
        records += struct.pack(f"<{3 * langs}I", *lens, *ptrs, *olens) + b"\0" * 8
    flags = 0 if compressed else 0x0008
    head = struct.pack("<4I", 0x10000000, 0x1000006D, 0x10000419, 0x12345678)
    head += struct.pack("<8HI4HI9I", 0, langs, len(files) + prefix_count, 0, 0, 0, 0, 0,
                        200, flags, 0, 1, 0, 0, plangs, pfiles, 0, 0, 0, 0, 0, 0, 0)
    out = head + lang_block + bytes(records) + bytes(blobs)
    return out[:-10] if truncate_data else out


def mail_with(name: str, data: bytes) -> bytes:
    encoded = base64.encodebytes(data).decode()
    return ("From: a@example.org\nTo: b@example.org\nSubject: t\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\n"
            f"hello\n--XX\nContent-Type: application/octet-stream; name={name}\n"
            "Content-Transfer-Encoding: base64\n"
            f"Content-Disposition: attachment; filename={name}\n\n{encoded}--XX--\n").encode()


# -- the test files -----------------------------------------------------------

def test_clamav_testfiles(tmp_path):
    db = tmp_path / "clamav-test-file.hdb"
    db.write_text(CLAM_TEST_FILE_SIG + "\n")
    paths = [TESTFILES / name for name in NEW_TESTFILES]
    if not all(p.exists() for p in paths):
        pytest.fail("clamav-testfiles is not installed")
    _, theirs, _ = clamscan_results([db], paths, allmatch=True)
    _, ours, err = clammail_results([db], paths, allmatch=True)
    assert "Traceback" not in err
    assert ours == theirs
    assert all(names == ["ClamAV-Test-File.UNOFFICIAL"] for names in ours.values())
    assert len(ours) == 4
    # Without ALLMATCH the first name wins: the member's, before the container's own.
    outer = tmp_path / "outer.hdb"
    outer.write_text("".join(B.hdb_line(p.read_bytes(), f"Outer.{p.name}") for p in paths))
    _, theirs, _ = clamscan_results([db, outer], paths)
    _, ours, _ = clammail_results([db, outer], paths)
    assert ours == theirs
    assert all(names == ["ClamAV-Test-File.UNOFFICIAL"] for names in ours.values())


# -- generated files ------------------------------------------------------------

def _szdd_corpus():
    files, sigs = {}, []
    spaced = b" " * 300 + payload("szdd-spaced", 3000)  # compressors use the window's spaces
    for tag, data in (("tool-text", payload("szdd-text", 20000)), ("tool-spaced", spaced),
                      ("tool-noise", noise("szdd-noise", 5000)), ("tool-exe", _clam_exe())):
        files[f"{tag}.sz_"] = szdd_tool(data)
        # ClamAV's window starts with zeros: spaced data expands differently.
        sigs += [B.hdb_line(data, f"Szdd.{tag}"), B.hdb_line(data.replace(b" ", b"\0"),
                                                             f"SzddZero.{tag}")]
    data = payload("szdd-lit", 9000)
    for tag, size in (("exact", None), ("short", 5000), ("zero", 0), ("long", 20000)):
        files[f"lit-{tag}.sz_"] = szdd_literal(payload(f"szdd-lit-{tag}", 9000), size=size)
        member = payload(f"szdd-lit-{tag}", 9000)
        sigs += _prefix_sigs(f"SzddLit.{tag}", member, [len(member), 2048, 4096, 6144, 8192])
    files["missing-x.sz_"] = szdd_literal(data, missing=ord("x"))
    sigs.append(B.hdb_line(data, "SzddMissing"))
    files["refs.sz_"] = szdd_literal(b"abc", back_refs=True)
    return files, sigs


def test_szdd_generated(tmp_path):
    files, sigs = _szdd_corpus()
    # The back-reference file's expansion depends on ClamAV's zero window:
    # name whatever it expands to by the bytes clammail computes, and let
    # clamscan confirm.
    from clammail.unpack.szdd import expand

    refs = expand(files["refs.sz_"][14:], 2048)
    sigs.append(B.hdb_line(refs, "SzddRefs"))
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=True)
    assert ours == theirs
    assert theirs["refs.sz_"] == ["SzddRefs.UNOFFICIAL"]
    assert theirs["missing-x.sz_"] == []
    assert "Szdd.tool-text.UNOFFICIAL" in theirs["tool-text.sz_"]
    assert theirs["lit-short.sz_"] == ["SzddLit.short.6144.UNOFFICIAL"]


def _arj_corpus():
    files, sigs = {}, []
    for method in range(5):
        members = {f"t{method}.txt": payload(f"arj-text-{method}", 40000),
                   f"n{method}.bin": noise(f"arj-noise-{method}", 3000),
                   f"s{method}.txt": payload(f"arj-small-{method}", 700)}
        files[f"m{method}.arj"] = arj_tool(list(members.items()), method)
        sigs += _sigs_for(members)
    exe = [("clam.exe", _clam_exe())]
    sigs.append(CLAM_TEST_FILE_SIG.replace(":ClamAV-Test-File", ":ClamExe") + "\n")
    inner = {"z.txt": payload("arj-in-zip", 6000)}
    files["nested.zip"] = B.zip_py([("in.arj", arj_tool(list(inner.items()), 2))])
    sigs += _sigs_for(inner)
    in_mail = {"mail.txt": payload("arj-in-mail", 5000)}
    files["arj.eml"] = mail_with("x.arj", arj_tool(list(in_mail.items()), 1))
    sigs += _sigs_for(in_mail)
    garbled = {"secret.txt": payload("arj-garbled", 3000)}
    files["garbled.arj"] = arj_tool(list(garbled.items()), 1, garble="pw")
    sigs += _sigs_for(garbled)
    files["exe.arj"] = arj_tool(exe, 4)
    # Self-extractors: an ARJ archive behind other bytes.
    sfx = {"sfx.txt": payload("arj-sfx", 4000)}
    files["sfx.bin"] = noise("sfx-head", 3000) + arj_tool(list(sfx.items()), 1)
    sigs += _sigs_for(sfx)
    sfx_exe = {"sfx-exe.txt": payload("arj-sfx-exe", 4000)}
    files["sfx.exe"] = _clam_exe() + arj_tool(list(sfx_exe.items()), 4)
    sigs += _sigs_for(sfx_exe)
    return files, sigs


def test_arj_generated(tmp_path):
    files, sigs = _arj_corpus()
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=True)
    assert ours == theirs
    assert len(theirs["m3.arj"]) == 3
    assert theirs["garbled.arj"] == []
    assert theirs["sfx.bin"] == ["M.sfx.txt.UNOFFICIAL"]
    assert theirs["arj.eml"] == ["M.mail.txt.UNOFFICIAL"]
    assert theirs["sfx.exe"] == ["M.sfx-exe.txt.UNOFFICIAL"]
    # Garbled members: no heuristic even when encrypted archives are to be reported.
    flags = ("--alert-encrypted-archive=yes", "--alert-encrypted=yes")
    theirs, ours = B.run_both(tmp_path, {"g.arj": files["garbled.arj"]}, sigs, *flags)
    assert ours == theirs == {"g.arj": []}


def _chm_corpus():
    members = [("index.html", b"<html><body>formats chm test</body></html>\n"),
               ("clam.exe", _clam_exe()), ("big.txt", payload("chm-big", 150000)),
               ("small.txt", payload("chm-small", 900))]
    built = chm_tool(members)
    files = {"tool.chm": built, "fixed.chm": chm_fixed(built)}
    sigs = _sigs_for(dict(members[2:])) + [CLAM_TEST_FILE_SIG + "\n"]
    return files, sigs


def test_chm_generated(tmp_path):
    files, sigs = _chm_corpus()
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=True)
    assert ours == theirs
    assert theirs["tool.chm"] == []  # the wrong GUID: libmspack refuses it
    assert sorted(theirs["fixed.chm"]) == sorted(
        ["ClamAV-Test-File.UNOFFICIAL", "M.big.txt.UNOFFICIAL", "M.small.txt.UNOFFICIAL"])


def _sis_corpus():
    files, sigs = {}, []

    def add(tag, copies, **kw):
        names = [(f"{tag}.app", copies)]
        files[f"{tag}.sis"] = sis(names, langs=len(copies), **kw)
        for i, copy in enumerate(copies):
            sigs.append(B.hdb_line(copy, f"Sis.{tag}.{i}"))

    add("one", [payload("sis-one", 5000)])
    add("langs", [payload("sis-l1", 3000), payload("sis-l2", 4000)])
    add("plain", [payload("sis-plain", 2000)], compressed=False)
    add("exe", [_clam_exe()])
    add("bigger", [payload("sis-big", 8000)], olen_factor=10)  # original > 3x compressed
    add("small-olen", [payload("sis-small-olen", 8000)], olen_factor=0.5)
    add("null", [payload("sis-null", 2000)], ftype=4)
    add("inside-header", [payload("sis-hdr", 2000)], pointer_override=40)
    add("truncated", [payload("sis-trunc", 6000)], truncate_data=True)
    option = struct.pack("<II", 2, 1) + b"\0" * 8 + struct.pack("<II", 3, 12) + b"\0" * 12
    add("records", [payload("sis-records", 2500)], prefix_records=option, prefix_count=2)
    return files, sigs


def test_sis_generated(tmp_path):
    files, sigs = _sis_corpus()
    sigs.append(CLAM_TEST_FILE_SIG + "\n")
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=True)
    assert ours == theirs
    assert theirs["langs.sis"] == ["Sis.langs.0.UNOFFICIAL", "Sis.langs.1.UNOFFICIAL"]
    assert theirs["records.sis"] == ["Sis.records.0.UNOFFICIAL"]
    assert theirs["null.sis"] == [] and theirs["inside-header.sis"] == []


# -- limits ---------------------------------------------------------------------

LIMIT = 20000


def _limit_corpus():
    files, sigs = {}, []
    for order in ("bs", "sb"):
        big, small = payload(f"lim-arj-big-{order}", 30000), payload(f"lim-arj-small-{order}", 3000)
        members = [("big.txt", big), ("small.txt", small)]
        if order == "sb":
            members.reverse()
        files[f"lim-{order}.arj"] = arj_tool(members, 1)
        sigs += [B.hdb_line(big, f"Big.arj.{order}"), B.hdb_line(small, f"Small.arj.{order}")]
        sbig, ssmall = payload(f"lim-sis-big-{order}", 30000), payload(f"lim-sis-small-{order}", 3000)
        pair = [("big", [sbig]), ("small", [ssmall])]
        files[f"lim-{order}.sis"] = sis(pair if order == "bs" else pair[::-1])
        sigs += [B.hdb_line(sbig, f"Big.sis.{order}"), B.hdb_line(ssmall, f"Small.sis.{order}")]
        sigs += _prefix_sigs(f"BigCut.sis.{order}", sbig, [LIMIT])
    for tag, size in (("big", 30000), ("small", 3000)):
        data = payload(f"lim-szdd-{tag}", size)
        files[f"lim-{tag}.sz_"] = szdd_tool(data)
        sigs.append(B.hdb_line(data, f"Szdd.{tag}"))
    chm_big, chm_small = payload("lim-chm-big", 30000), payload("lim-chm-small", 3000)
    files["lim.chm"] = chm_fixed(chm_tool([("index.html", b"<html>limits</html>"),
                                           ("big.txt", chm_big), ("small.txt", chm_small)]))
    sigs += [B.hdb_line(chm_big, "Big.chm"), B.hdb_line(chm_small, "Small.chm")]
    sigs += _prefix_sigs("BigCut.chm", chm_big, [LIMIT])
    return files, sigs


@pytest.fixture(scope="module")
def limit_corpus():
    return _limit_corpus()


@pytest.mark.parametrize("alert", [False, True])
@pytest.mark.parametrize("flag", [f"--max-filesize={LIMIT}", "--max-scansize=32000",
                                  "--max-files=2"])
def test_limits(tmp_path, limit_corpus, flag, alert):
    files, sigs = limit_corpus
    flags = [flag] + (["--alert-exceeds-max=yes"] if alert else [])
    theirs, ours = B.run_both(tmp_path, files, sigs, *flags, allmatch=True)
    assert ours == theirs
    found = {name for names in theirs.values() for name in names}
    assert any(name.startswith("Small.") for name in found)
    if alert:
        assert any(name.startswith("Heuristics.Limits.Exceeded.") for name in found)


# -- hostile input ---------------------------------------------------------------

def _samples() -> dict[str, bytes]:
    return {
        "szdd": szdd_tool(payload("hostile-szdd", 12000)),
        "arj1": arj_tool([("a.txt", payload("hostile-arj1", 12000)),
                          ("b.txt", payload("hostile-arj1b", 2000))], 1),
        "arj4": arj_tool([("a.txt", payload("hostile-arj4", 12000))], 4),
        "chm": chm_fixed(chm_tool([("index.html", b"<html>hostile</html>"),
                                   ("a.txt", payload("hostile-chm", 12000))])),
        "sis": sis([("a", [payload("hostile-sis", 12000)])]),
    }


def test_hostile_truncated_and_corrupt(tmp_path):
    """Cut at many points, or with bytes changed: same verdicts as clamscan.

    Body signatures on the start of each payload show what was extracted
    from the broken data (a prefix survives most cuts)."""
    samples = _samples()
    files = {}
    rng = random.Random(7)
    for kind, data in samples.items():
        for cut in sorted({len(data) * k // 23 for k in range(1, 23)} | {14, 30, 90, 200}):
            files[f"{kind}-cut{cut}"] = data[:cut]
        for n in range(6):
            broken = bytearray(data)
            for _ in range(4):
                broken[rng.randrange(12, len(broken))] = rng.randrange(256)
            files[f"{kind}-flip{n}"] = bytes(broken)
        if kind.startswith("arj"):
            # Single-bit errors all through the compressed data: a table read
            # failing (CL_EUNPACK) must leave the reader where ClamAV's is.
            for k in range(1, 40):
                broken = bytearray(data)
                broken[len(data) * k // 40] ^= 1 << (k % 8)
                files[f"{kind}-bit{k}"] = bytes(broken)
        head = {"szdd": 10, "arj1": 2, "arj4": 2, "chm": 4, "sis": 16}[kind]
        files[f"{kind}-noise"] = data[:head] + noise(f"{kind}-tail", 5000)
    ndb = tmp_path / "start.ndb"
    lines = [f"Start.{tag}:0:*:{('<<' + tag + '>>').encode().hex()}\n"
             for tag in ("hostile-szdd", "hostile-arj1", "hostile-arj1b", "hostile-arj4",
                         "hostile-chm", "hostile-sis")]
    ndb.write_text("".join(lines))
    folder = tmp_path / "hostile"
    folder.mkdir()
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    _, theirs, _ = clamscan_results([ndb], paths, allmatch=True)
    _, ours, err = clammail_results([ndb], paths, allmatch=True)
    assert "Traceback" not in err
    theirs = {os.path.basename(p): sorted(v) for p, v in theirs.items()}
    ours = {os.path.basename(p): sorted(v) for p, v in ours.items()}
    assert ours == theirs
    assert len(ours) == len(files)
    assert sum(bool(v) for v in ours.values()) > len(files) // 5


def test_hostile_bombs(tmp_path):
    """Headers that claim gigabytes, and streams that expand a thousandfold."""
    zeros = b"\0" * 2_000_000
    files = {}
    sigs = [B.hdb_line(zeros, "Zeros.whole"), B.hdb_line(zeros[:LIMIT], "Zeros.cut")]
    # SZDD: a 4 GiB size claim; and the most an SZDD stream can expand.
    files["claim.sz_"] = szdd_literal(payload("bomb-szdd", 3000), size=0xFFFFFFFF)
    files["max.sz_"] = szdd_tool(b"\x01" * 300_000)
    sigs.append(B.hdb_line(b"\x01" * 300_000, "Ones.szdd"))
    # ARJ: original size claims 4 GiB; and 2 MB of zeros in a few KB.
    arj = bytearray(arj_tool([("a.txt", payload("bomb-arj", 3000))], 1))
    first_file = arj.find(b"\x60\xea", 4)
    struct.pack_into("<I", arj, first_file + 4 + 16, 0xFFFFFFFF)
    files["claim.arj"] = bytes(arj)
    files["zeros.arj"] = arj_tool([("z.bin", zeros)], 1)
    # SIS: a 4 GiB original size, and 2 MB of zeros deflated.
    files["claim.sis"] = sis([("a", [payload("bomb-sis", 3000)])], olen_factor=1_000_000)
    files["zeros.sis"] = sis([("z", [zeros])])
    # CHM: 2 MB of zeros in an LZX stream.
    files["zeros.chm"] = chm_fixed(chm_tool([("index.html", b"<html>bomb</html>"),
                                             ("z.bin", zeros)]))
    for flags in ((), (f"--max-filesize={LIMIT}", "--alert-exceeds-max=yes")):
        theirs, ours = B.run_both(tmp_path, files, sigs, *flags, allmatch=True)
        assert ours == theirs, flags
    assert ours["claim.sz_"] == ["Heuristics.Limits.Exceeded.MaxScanSize"]


def test_zip_of_new_formats(tmp_path):
    """The four formats inside a zip and inside a mail, scanned as members."""
    inner = {
        "a.sz_": (szdd_tool(payload("nest-szdd", 4000)), payload("nest-szdd", 4000)),
        "a.arj": (arj_tool([("n.txt", payload("nest-arj", 4000))], 3), payload("nest-arj", 4000)),
        "a.sis": (sis([("n", [payload("nest-sis", 4000)])]), payload("nest-sis", 4000)),
    }
    files = {"all.zip": B.zip_py([(n, blob) for n, (blob, _) in inner.items()],
                                 zipfile.ZIP_DEFLATED)}
    files["all.eml"] = mail_with("a.arj", arj_tool([("m.txt", payload("nest-mail", 4000))], 4))
    sigs = [B.hdb_line(data, f"Nested.{name}") for name, (_, data) in inner.items()]
    sigs.append(B.hdb_line(payload("nest-mail", 4000), "Nested.mail"))
    theirs, ours = B.run_both(tmp_path, files, sigs, allmatch=True)
    assert ours == theirs
    assert len(theirs["all.zip"]) == 3


def test_unit_data_arj_sfx():
    """ClamAV's embedded ARJ sample: two ARJ archives behind a PNG."""
    from conftest import need_unit_data

    data = need_unit_data() / "embedded_testfiles"
    sigs = sorted((data / "signatures").glob("*.hsb"))
    path = data / "test.png.emb-arjs"
    _, theirs, _ = clamscan_results(sigs, [path], allmatch=True)
    _, ours, _ = clammail_results(sigs, [path], allmatch=True)
    assert ours == theirs
    assert len(ours[str(path)]) == 4


def test_chm_without_libmspack(monkeypatch):
    """No libmspack: CHM files are not opened (and nothing breaks)."""
    from clammail.unpack import chm

    monkeypatch.setattr(chm, "_library", None)
    monkeypatch.setattr(chm, "_library_error", "not installed")
    assert list(chm.unpack_chm((TESTFILES / "clam.chm").read_bytes(), object())) == []
    monkeypatch.undo()
    members = list(chm.unpack_chm((TESTFILES / "clam.chm").read_bytes(), _NoLimits()))
    assert [m.name for m in members if m.name.endswith(".txt")] == ["/clam.exe.txt"]


class _NoLimits:
    def check(self): pass
    def scan_size_left(self): return None
    def option(self, name): return 0
    def debug(self, message): pass
