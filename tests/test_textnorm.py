"""Text typing and normalization (target 7), HTML typing, compared with clamscan."""

from __future__ import annotations

import pytest
from conftest import clammail_results, clamscan_results

from clammail.engine.textnorm import normalize_text
from clammail.formats.filetypes import FileType, detect, text_type

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def _same_as_clamscan(sig_file, files):
    ours = clammail_results([sig_file], files, allmatch=True)[1]
    theirs = clamscan_results([sig_file], files, allmatch=True)[1]
    # Compared as multisets: two patterns anchored on the same bytes come out
    # of clamd in the order of their addresses in memory.
    assert {p: sorted(n) for p, n in ours.items()} == {p: sorted(n) for p, n in theirs.items()}
    return ours


def test_every_byte_value_normalizes_like_clamscan(tmp_path, sigdir):
    files = []
    for b in range(256):
        f = tmp_path / f"b{b:03d}"
        f.write_bytes(b"hello there this is text xx" + bytes([b]) + b"yy end of the line\n")
        files.append(f)
    lines = ["SKIP:7:*:" + b"xxyy".hex(), "SPACE:7:*:" + b"xx yy".hex()]
    lines += [f"COPY{b:03d}:7:*:" + (b"xx" + bytes([b]) + b"yy").hex() for b in range(256) if b != 32]
    sig = sigdir / "bytes.ndb"
    sig.write_text("\n".join(lines) + "\n")
    results = _same_as_clamscan(sig, files)
    assert results[str(tmp_path / "b065")] == ["COPY097.UNOFFICIAL"]  # 'A' is lowercased


CASES = {
    "spaces.txt": b"Hello   WORLD\n\tFoo\r\nBar",
    "controls.txt": b"hello there aa \x01 bb cc\xe9\xe9 dd ee\x00\n\nff end\n",
    "utf8.txt": "hello thére aaÉbb end\n".encode(),
    "binary": bytes(range(256)) * 4 + b"xxAByy" + bytes(range(256)),
    "utf16le.txt": "\ufeffHello There WORLD abc\n".encode("utf-16-le"),
    "utf16be.txt": "\ufeffHello There WORLD abc\n".encode("utf-16-be"),
    "late.html": b"plain text line\n" * 200 + b"<html><body>Hello <b>World</b></body></html>\n",
    "early.html": b"<html><body>Hello <b>World</b></body></html>\n",
    "mixedcase.html": b"<HtMl><body>Hello <b>World</b></body></HtMl>\n",
    "bin.html": bytes(range(1, 9)) * 300 + b"<html><body>Hello <b>World</b></body></html>\n",
    "eicar-upper.txt": b"SOME TEXT " + EICAR + b" MORE\n",
}
NEEDLES = {
    "raw": b"Hello   WORLD", "lower1sp": b"hello world", "fooline": b"world foo",
    "crlf": b"foo bar", "skipws": b"aa bb", "hi": b"cc dd", "nl": b"ee ff",
    "utf": b"aabb", "utf2": b"thre", "dec": b"hello there world", "w2": b"hello <b>world</b>",
    "tags": b"Hello <b>World</b>", "eicar": EICAR.lower(),
}


@pytest.mark.parametrize("target", [0, 3, 7])
def test_views_match_like_clamscan(tmp_path, sigdir, target):
    files = []
    for name, data in CASES.items():
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    sig = sigdir / f"t{target}.ndb"
    sig.write_text("".join(f"N{target}_{k}:{target}:*:{v.hex()}\n" for k, v in NEEDLES.items()))
    results = _same_as_clamscan(sig, files)
    assert any(results.values())


def test_text_type_follows_libclamav():
    assert text_type(b"plain ascii\n") is FileType.TEXT_ASCII
    assert text_type(b"latin-1 \xe9t\xe9\n") is FileType.TEXT_ASCII  # ISO-8859 bytes are text
    assert text_type(bytes(range(256)) * 2) is FileType.BINARY_DATA
    # A stray control byte in ASCII makes libclamav call it big-endian UTF-16.
    assert text_type(b"ab\x00cd") is FileType.TEXT_UTF16BE
    assert detect(b"<html><body>x</body></html>") is FileType.HTML
    assert detect(b"<HtMl>x") is FileType.TEXT_ASCII


def test_normalize_text_rules():
    assert normalize_text(b"A  \x01 B\r\n\tC\xff") == b"a b c"
    assert normalize_text("\ufeffAB".encode("utf-16-le")) == b"ab"


def test_normalize_text_equals_its_definition_on_random_input():
    """The fast form against the rules written as one regex substitution."""
    import random
    import re

    dropped = bytes(range(0x09)) + bytes(range(0x0E, 0x20)) + bytes(range(0x80, 0x100))
    rng = random.Random(7)
    alphabet = b"ab \t\n\r\x0b\x0cXY\x00\x01\x1c\x1f\xe9.-"
    for _ in range(20000):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        expected = re.sub(rb"[\t\n\v\f\r ]+", b" ", data.translate(None, dropped).lower())
        assert normalize_text(data) == expected, data


def test_normalize_text_in_pieces_equals_its_definition(monkeypatch):
    """Long text is collapsed piece by piece: no whitespace run cut in two."""
    import random
    import re

    from clammail.engine import textnorm

    monkeypatch.setattr(textnorm, "_PIECE", 7)
    dropped = bytes(range(0x09)) + bytes(range(0x0E, 0x20)) + bytes(range(0x80, 0x100))
    rng = random.Random(11)
    alphabet = b"ab  \t\n\r\x0b\x0cXY\x00\x01\xe9."
    for _ in range(5000):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        expected = re.sub(rb"[\t\n\v\f\r ]+", b" ", data.translate(None, dropped).lower())
        assert textnorm.normalize_text(data) == expected, data
    assert textnorm.normalize_text(b"a" + b" " * 100 + b"b" * 30) == b"a " + b"b" * 30
