"""Typing found by differential fuzzing against clamscan 1.4.6.

- libclamav's type-1 file-type signatures decide the type of text and
  binary data from the first kilobyte: the last self-extractor magic, PE
  header, MHTML header pair (and a few more) found there outranks HTML and
  mail markers before it, and a self-extractor on top is then dropped, so
  an HTML file whose script holds "PK\\x03\\x04" stays text (UTF-16 text to
  ClamAV's text test), and binary data with HTML or mail headers in its
  first kilobyte is HTML or mail.
- Mail headers anywhere in text or binary data ("\\nMIME-Version: " then a
  "\\nContent-Type: " line) make the raw scan parse the object as mail, so
  the attachments of a mail inside binary data are scanned.

clamscan --gen-json names the type it gave each file (RootFileType): the
typing test compares clammail's detect() with it on generated files.
"""

from __future__ import annotations

import base64
import random
import re
import subprocess

import archive_builders as B
import pytest
from conftest import need_program

from clammail.formats.filetypes import FileType, detect

pytestmark = pytest.mark.oracle

_ROOT_TYPE = re.compile(r'"RootFileType":"(CL_TYPE_\w+)",\s*"FileName":"([^"]+)"')


def clamscan_types(paths) -> dict[str, str]:
    """The type clamscan gives each file, from its --gen-json debug output."""
    db = paths[0].parent / "never.hdb"
    db.write_text("00000000000000000000000000000000:1:Never\n")
    proc = subprocess.run([need_program("clamscan"), "--gen-json", "--debug", "--no-summary",
                           "-d", str(db), *map(str, paths)],
                          capture_output=True, text=True, errors="replace", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {name: ftype for ftype, name in _ROOT_TYPE.findall(proc.stderr)}


_INGREDIENTS = {
    "html": [b"<html>", b"<script>", b"<a class=x href=y>", b"<IMG src=x>", b"<table>"],
    "mail": [b"\nFrom: a@example.com\nContent-Type: text/plain\n",
             b"\nReceived: from x\nContent-Type: text/html\n"],
    "mhtml": [b"\nMIME-Version: 1.0\nContent-Type: text/html\n"],
    "sfx": [b"PK\x03\x04", b"Rar!\x1a\x07\x00", b"MSCF\x00\x00\x00\x00", b"7z\xbc\xaf\x27\x1c"],
    "pdf": [b"%PDF-1.4"],
    "xdp": [b"<xdp:xdp"],
    "pe": [b"MZ" + b"p" * 70 + b"PE\x00\x00"],
}


def _filler(rng: random.Random, kind: str, size: int) -> bytes:
    if kind == "ascii":
        words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"text", b"line\n"]
        return b" ".join(rng.choice(words) for _ in range(size // 5))[:size]
    if kind == "binary":
        return rng.randbytes(size)
    if kind == "controls":  # mostly text with control bytes: UTF-16 to ClamAV's text test
        return bytes(rng.choice(b"abcdef \n\x01\x02\x03") for _ in range(size))
    return ("caf\u00e9 na\u00efve " * (size // 12 + 1)).encode()[:size]


def _typing_corpus(count: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for i in range(count):
        base = rng.choice(["ascii", "binary", "controls", "utf8"])
        data = bytearray(_filler(rng, base, rng.randrange(200, 1600)))
        for kind in rng.sample(sorted(_INGREDIENTS), rng.randrange(1, 4)):
            piece = rng.choice(_INGREDIENTS[kind])
            at = rng.randrange(1, min(len(data), 900))  # all of it in the typing window
            data[at:at] = piece
        files[f"t{i:04d}-{base}.dat"] = bytes(data)
    return files


def test_typing_of_text_and_binary_data_as_clamscan(tmp_path):
    files = _typing_corpus(400, seed=10)
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(path)
    theirs = clamscan_types(paths)
    assert len(theirs) == len(files)
    ours = {name: detect(data).value for name, data in files.items()}
    differ = {n: (theirs[n], ours[n]) for n in files if theirs[n] != ours[n]}
    assert differ == {}
    # The corpus reaches the cases this is about.
    kinds = set(theirs.values())
    assert {"CL_TYPE_HTML", "CL_TYPE_MHTML", "CL_TYPE_MSEXE", "CL_TYPE_TEXT_UTF16BE",
            "CL_TYPE_BINARY_DATA", "CL_TYPE_PDF"} <= kinds


def test_html_whose_script_holds_binary_is_text(tmp_path):
    page = (b"<html><head><script>var blob = \"PK\x03\x04\x14\x00\x08\x00\";\n"
            b"var marker = 1;</script></head><body>quirk-body-marker</body></html>\n")
    assert detect(page) is FileType.TEXT_UTF16BE
    plain = page.replace(b"PK\x03\x04", b"pk..")
    assert detect(plain) is FileType.HTML
    # Normalized HTML (target 3) signatures see the plain page only; raw
    # signatures (target 0) both.
    ndb = tmp_path / "quirk.ndb"
    ndb.write_text(f"Quirk.Html:3:*:{b'quirk-body-marker'.hex()}\n"
                   f"Quirk.Raw:0:*:{b'var marker'.hex()}\n")
    for name, data in {"binary-script.html": page, "plain.html": plain}.items():
        (tmp_path / name).write_bytes(data)
    from conftest import clammail_results, clamscan_results

    paths = [tmp_path / "binary-script.html", tmp_path / "plain.html"]
    code1, theirs, err1 = clamscan_results([ndb], paths, allmatch=True)
    code2, ours, err2 = clammail_results([ndb], paths, allmatch=True)
    assert code1 == 1 and "Traceback" not in err2
    assert (code2, ours) == (code1, theirs)
    assert set(theirs[str(paths[0])]) == {"Quirk.Raw.UNOFFICIAL"}
    assert "Quirk.Html.UNOFFICIAL" in theirs[str(paths[1])]


def _mail_with_attachment(tag: bytes, payload: bytes) -> bytes:
    return (b"\nFrom: a@example.com\nTo: b@example.com\nSubject: " + tag + b"\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/mixed; boundary=\"BB\"\n\n--BB\nContent-Type: text/plain\n\n"
            b"hello " + tag + b"\n--BB\nContent-Type: application/octet-stream; name=\"a.bin\"\n"
            b"Content-Transfer-Encoding: base64\n"
            b"Content-Disposition: attachment; filename=\"a.bin\"\n\n"
            + base64.encodebytes(payload) + b"--BB--\n")


def _payload(tag: str) -> bytes:
    return b"".join(b"%s attachment line %03d\n" % (tag.encode(), i) for i in range(50))


def _mail_in_data_cases() -> tuple[dict[str, bytes], list[str]]:
    files, sigs = {}, []
    rng = random.Random(7)
    layouts = {
        "head.bin": lambda m: b"\x00\x01\x02binary" + m,
        "far.bin": lambda m: rng.randbytes(5000) + m,
        "far.txt": lambda m: b"plain text line\n" * 300 + m,
        "pk-first.bin": lambda m: b"\x00\x01PK\x03\x04junk" + m,
        "between.bin": lambda m: rng.randbytes(3000) + m + rng.randbytes(3000),
        "controls.txt": lambda m: b"text \x01\x02 with controls\n" * 100 + m,
        "gap-too-wide.bin": lambda m: rng.randbytes(2000) + m.replace(
            b"MIME-Version: 1.0\n", b"MIME-Version: 1.0\nX-Pad: " + b"p" * 1100 + b"\n"),
        "at-start.bin": lambda m: m[1:] + rng.randbytes(100),
    }
    for name, layout in layouts.items():
        payload = _payload(name)
        files[name] = layout(_mail_with_attachment(name.encode(), payload))
        sigs.append(B.hdb_line(payload, "Attachment." + name))
    return files, sigs


@pytest.mark.parametrize("flags", [(), ("--scan-mail=no",)])
@pytest.mark.parametrize("allmatch", [False, True])
def test_attachments_of_mail_inside_data(tmp_path, flags, allmatch):
    files, sigs = _mail_in_data_cases()
    theirs, ours = B.run_both(tmp_path, files, sigs, *flags, allmatch=allmatch)
    assert ours == theirs
    if not flags:
        assert theirs["far.bin"] and theirs["between.bin"] and theirs["far.txt"]
