"""HTML: libclamav's normalized views byte for byte (from clamscan --leave-temps) and verdicts."""

from __future__ import annotations

import base64
import hashlib
import random
import subprocess

import pytest
from conftest import CLAM_TEST_FILE_SIG, TESTFILES, clamscan_results, need_program
from docbuild import clammail_scan, ndb_line

import clammail.engine  # noqa: F401  (the engine first: clammail.unpack imports it back)
from clammail.unpack.html import normalize

PIECES = ["<p>", "</p>", "<b >", "< i>", "<!-- x -->", "<!x>", "&amp;", "&nbsp;", "&#65;",
          "&#x4a;", "&bogus;", "&lt", "  ", "\n", "\t", "\r\n", "Hello", "WORLD",
          '<a href="HTTP://x.Y/z">', "</a>", "<img src=Q.gif>", "<script>", "</script>",
          "'q'", '"dq"', "<div class='A' id=B>", "\xe9", "\xc3\xa9", ">", "<", "=", "x=y",
          "<br/>", "&#0;", "&#;", "\x00", '<img src="data:text/plain;base64,QUJD">',
          "<a href=data:,x%41%4>", "a" * 50, " " * 30, "\xe3\x80\x82",
          "&#99999999999999999999;", "&#x;", "\\\\", '<a href="x\\\\"y">']


def _fuzz_files(tmp_path, count=30):
    rng = random.Random(11)
    paths = []
    for n in range(count):
        text = "<html>" + "".join(rng.choice(PIECES) for _ in range(rng.randint(5, 2500)))
        path = tmp_path / f"f{n}.html"
        path.write_bytes(text.encode("latin-1"))
        paths.append(path)
    return paths


@pytest.mark.oracle
def test_normalized_views_match_libclamav_byte_for_byte(tmp_path):
    paths = _fuzz_files(tmp_path)
    temps = tmp_path / "temps"
    temps.mkdir()
    db = tmp_path / "t.hdb"
    db.write_text(CLAM_TEST_FILE_SIG + "\n")
    subprocess.run([need_program("clamscan"), "--no-summary", "--leave-temps",
                    f"--tempdir={temps}", "-d", str(db), *map(str, paths)],
                   capture_output=True, check=False, timeout=300)
    compared = 0
    for path in paths:
        found = list(temps.glob(f"*-{path.name}.*/{path.name}.*/html-tmp.*"))
        assert len(found) == 1, path.name
        ours = normalize(path.read_bytes())
        assert (found[0] / "nocomment.html").read_bytes() == bytes(ours.nocomment), path.name
        assert (found[0] / "notags.html").read_bytes() == bytes(ours.notags), path.name
        compared += 1
    assert compared == len(paths)


@pytest.mark.oracle
def test_target3_signatures_and_data_uris(tmp_path):
    payload = b"MZ" + b"clammail-html-payload" + bytes(range(256))
    texts = [b"hello world", b"HELLO World", b"<a href=\"http://example.com/x\">", b"http://Example.COM/X",
             b"some & text", b"tab here and newline", b'var x="a";', b"caf\xe9", b"caf\x00",
             b"<img src=\"data\">", b"comment"]
    ndb = [ndb_line(f"h{k}_{t}", t, text) for k, text in enumerate(texts) for t in (0, 3, 7)]
    (tmp_path / "s.ndb").write_text("\n".join(ndb) + "\n")
    (tmp_path / "s.hdb").write_text(f"{hashlib.md5(payload).hexdigest()}:{len(payload)}:Html.Payload\n")
    pages = {
        "case.html": b"<html><BODY>HELLO   World</BODY></html>",
        "entities.html": b"<html><body>Some &amp; TEXT &#99;af&eacute;</body></html>",
        "whitespace.html": b"<html><p>tab\there\n and\r\n newline</p></html>",
        "links.html": b'<html><A HREF="http://Example.COM/X">go</A></html>',
        "comment.html": b"<html><!-- comment --><p>x</p></html>",
        "script.html": b"<html><script>var  X = 'a' ;</script></html>",
        "data.html": b'<html><img src="data:application/x;base64,'
                     + base64.b64encode(payload) + b'"></html>',
    }
    paths = []
    for name, data in pages.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    dbs = [tmp_path / "s.ndb", tmp_path / "s.hdb"]
    for extra, options in (((), {}), (("--max-htmlnotags=10",), {"MaxHTMLNoTags": 10}),
                           (("--max-htmlnormalize=10",), {"MaxHTMLNormalize": 10})):
        _, theirs, _ = clamscan_results(dbs, paths, *extra, allmatch=True)
        ours = clammail_scan(dbs, paths, options, allmatch=True)
        for path in paths:
            assert sorted(ours[str(path)]) == sorted(theirs[str(path)]), (path.name, extra)
    assert theirs  # the last run had answers for every page


@pytest.mark.oracle
def test_clam_exe_html(tmp_path):
    db = tmp_path / "t.hdb"
    db.write_text(CLAM_TEST_FILE_SIG + "\n")
    path = TESTFILES / "clam.exe.html"
    _, theirs, _ = clamscan_results([db], [path])
    assert theirs[str(path)] == ["ClamAV-Test-File.UNOFFICIAL"]
    assert clammail_scan([db], [path])[str(path)] == theirs[str(path)]


def test_hostile_html_is_bounded():
    huge = b"<html>" + b"x" * (4 << 20)
    assert len(normalize(huge).notags) == (4 << 20) + 1
    nested = b"<html>" + b"<div>" * 200000
    assert normalize(nested).nocomment.count(b"<div>") == 200000
    unclosed = b"<html><a href='" + b"y" * 100000
    assert normalize(unclosed).nocomment.startswith(b"<html><a href=\"")
