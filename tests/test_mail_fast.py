"""The fast mail path against the original line-by-line code, byte for byte.

clammail.unpack.mail, mime_message and embedded decode, split and search
whole buffers with C-speed primitives; tests/mail_reference.py keeps the
original implementations they replace, which reproduce libclamav's quirks
one line and one character at a time. Every test here feeds both the same
generated or mutated input and asserts the same result: decoded bytes, line
boundaries, the objects a mail yields (names and bytes, alerts, errors), and
the archives and executables found embedded in an object. The oracle for the
reference itself is clamscan (tests/test_mail.py and the other mail tests).
"""

from __future__ import annotations

import base64
import binascii
import email.message
import glob
import io
import mmap
import random
import struct
import zipfile
from pathlib import Path

import pytest
from conftest import TESTFILES
from mail_reference import base64_decode as reference_base64_decode
from mail_reference import decode_lines as reference_decode_lines
from mail_reference import (
    reference_embedded_objects,
    reference_getline,
    reference_mail_path,
)
from mail_reference import text_bytes as reference_text_bytes
from test_mail import _Ctx
from test_mail import corpus as mail_corpus
from test_mail_hostile import hostile

from clammail.formats.filetypes import FileType, detect
from clammail.unpack import mail, mime_message
from clammail.unpack.embedded import embedded_objects
from clammail.unpack.mail import _as_line, unpack_mail
from clammail.unpack.mime_message import Enc, Message

EXE = (TESTFILES / "clam.exe").read_bytes()
B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


# -- decoders -----------------------------------------------------------------------


def _wrap(data: bytes, width: int) -> list[bytes]:
    return [data[i:i + width] for i in range(0, len(data), width)] or [b""]


def base64_bodies(rng: random.Random) -> list[list[bytes | None]]:
    """Well-formed base64 bodies and every kind of damage libclamav tolerates."""
    out: list[list[bytes | None]] = [[], [None], [None, None], [b"="], [b"===="]]
    for _ in range(150):
        raw = rng.randbytes(rng.choice([0, 1, 2, 3, 4, 5, 57, 100, 1000, 5000]))
        lines: list[bytes | None] = list(base64.encodebytes(raw).splitlines())
        kind = rng.randrange(12)
        if kind == 0:  # odd line lengths
            lines = list(_wrap(b"".join(x for x in lines if x), rng.randint(1, 130)))
        elif kind == 1:  # padding in the middle
            for _ in range(rng.randint(1, 4)):
                if lines:
                    i = rng.randrange(len(lines))
                    line = lines[i] or b""
                    k = rng.randint(0, len(line))
                    lines[i] = line[:k] + rng.choice([b"=", b"==", b"=A", b"=\t"]) + line[k:]
        elif kind == 2:  # white space inside and around lines, blank lines
            for _ in range(rng.randint(1, 6)):
                i = rng.randint(0, len(lines))
                lines.insert(i, rng.choice([None, b" ", b"\t", b"  \t ", b" AB C"]))
            lines = [(x + rng.choice([b"", b" ", b"\t"])) if x else x for x in lines]
        elif kind == 3:  # bytes outside the alphabet
            lines = [bytes(c if rng.random() > 0.05 else rng.randrange(256) for c in x)
                     if x else x for x in lines]
        elif kind == 4:  # a short tail: 1, 2 or 3 characters over
            lines.append(bytes(rng.choices(B64_ALPHABET, k=rng.randint(1, 3))))
        elif kind == 5:  # very long lines
            lines = list(_wrap(b"".join(x for x in lines if x), rng.choice([999, 1000, 4000])))
        elif kind == 6:  # CR and LF inside lines (a line never has them from the reader)
            lines = [x + rng.choice([b"\r", b"\n", b"\r\n", b""]) if x else x for x in lines]
        elif kind == 7:  # '=' everywhere
            lines = [x.replace(b"A", b"=") if x else x for x in lines]
        elif kind == 8:  # pure junk
            lines = [rng.randbytes(rng.randint(1, 90)) for _ in range(rng.randint(1, 20))]
        elif kind == 9:  # None lines between the groups
            lines = [x for line in lines for x in (line, None)]
        elif kind == 10:  # '=' as the only thing on a line
            lines.insert(rng.randint(0, len(lines)), b"=")
        out.append(lines)
    return out


def qp_bodies(rng: random.Random) -> list[list[bytes | None]]:
    pieces = [b"a", b"b c", b"=41", b"=4a", b"=4", b"=", b"==", b"=G1", b"=\r", b"=3D", b"\t",
              b" ", b"=\n", b"\xe9", b"=ff", b"=FF", b"=0A", b"x=", b"_", b"\r"]
    out: list[list[bytes | None]] = [[], [None], [b"="], [b"=41="]]
    for _ in range(200):
        lines: list[bytes | None] = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.1:
                lines.append(None)
            else:
                lines.append(b"".join(rng.choices(pieces, k=rng.randint(1, 20))))
        if rng.random() < 0.3:  # only well-formed escapes: the bulk path
            lines = [x.replace(b"=\r", b"=0D").replace(b"==", b"=3D").replace(b"=G", b"=4")
                     .replace(b"=\n", b"").replace(b"\n", b"") if x else x for x in lines]
        out.append(lines)
    out.append([b"=41" * 50_000])
    out.append([b"line =3D one=", b"two=20", None, b"three"])
    return out


def yenc_bodies(rng: random.Random) -> list[list[bytes | None]]:
    out: list[list[bytes | None]] = [[], [None], [b"="], [b"=yend size=1"], [b"a=", b"=b"]]
    for _ in range(150):
        raw = rng.randbytes(rng.randint(0, 600))
        enc = bytearray()
        for byte in raw:
            c = (byte + 42) & 255
            enc += b"=" + bytes([(c + 64) & 255]) if c in (0, 10, 13, 61) else bytes([c])
        lines: list[bytes | None] = list(_wrap(bytes(enc), rng.randint(1, 140)))
        if rng.random() < 0.3:
            lines.insert(rng.randint(0, len(lines)), rng.choice([None, b"=yend size=3", b"==",
                                                                 b"=", b"a\nb", b"=\n"]))
        if rng.random() < 0.3:
            lines = [x + b"=" if x else x for x in lines]
        out.append(lines)
    return out


def plain_bodies(rng: random.Random) -> list[list[bytes | None]]:
    return [[None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 50))
             for _ in range(rng.randint(0, 30))] for _ in range(60)]


def uu_bodies(rng: random.Random) -> list[list[bytes | None]]:
    out = []
    for _ in range(30):
        raw = rng.randbytes(rng.randint(0, 300))
        lines: list[bytes | None] = [binascii.b2a_uu(raw[i:i + 45]).rstrip(b"\n")
                                     for i in range(0, len(raw), 45)]
        if rng.random() < 0.5:
            lines.insert(rng.randint(0, len(lines)), rng.choice([None, b"end", b"M", b"`"]))
        out.append(lines)
    return out


def test_decoders_give_the_reference_bytes():
    rng = random.Random(1)
    cases = 0
    for enctype, bodies in (
        (Enc.BASE64, base64_bodies(rng)),
        (Enc.QUOTEDPRINTABLE, qp_bodies(rng)),
        (Enc.YENCODE, yenc_bodies(rng)),
        (Enc.NOENCODING, plain_bodies(rng)),
        (Enc.EIGHTBIT, plain_bodies(rng)),
        (Enc.BINARY, plain_bodies(rng)),
        (Enc.UUENCODE, uu_bodies(rng)),
    ):
        for lines in bodies:
            assert mime_message.decode_lines(enctype, lines) == \
                reference_decode_lines(enctype, lines), (enctype, lines[:5])
            cases += 1
    for lines in plain_bodies(rng) + base64_bodies(rng)[:50]:
        assert mime_message.text_bytes(lines) == reference_text_bytes(lines)
        cases += 1
    assert cases > 800


def test_base64_decode_on_any_bytes():
    rng = random.Random(2)
    inputs = [b"", b"A", b"AB", b"ABC", b"ABCD", b"====", b"A=B=", b"\x00\xff", b"\n"]
    inputs += [rng.randbytes(rng.randint(0, 40)) for _ in range(300)]
    inputs += [bytes(rng.choices(B64_ALPHABET + b"=", k=rng.randint(0, 40))) for _ in range(300)]
    for chars in inputs:
        assert mime_message.base64_decode(chars) == reference_base64_decode(chars), chars


def test_messages_export_and_to_text_as_the_reference():
    """Whole messages: every claimed encoding, the guessed base64 of a named
    part, and the text the bounce search reads."""
    rng = random.Random(3)
    bodies = base64_bodies(rng)[:60] + qp_bodies(rng)[:40] + yenc_bodies(rng)[:30]
    encodings = [[], [b"base64"], [b"quoted-printable"], [b"x-yencode"], [b"base64", b"7bit"],
                 [b"8bit"], [b"quoted-printable base64"], [b"x-uuencode"], [b"bogus"]]

    def run(lines, encs, named):
        m = Message(has_ctx=True)
        m.set_mime_type(b"application")
        for enc in encs:
            m.set_encoding(enc)
        if named:
            m.add_argument(b"name=x.bin")
        for line in lines:
            if line is None or (b"\n" not in line and b"\r" not in line):
                m.add_str(line)
        text = m.to_text()
        return text, [(b.data, b.final, b.scan_now) for b in m.export()]

    cases = 0
    for lines in bodies:
        encs = rng.choice(encodings)
        named = rng.random() < 0.5
        fast = run(lines, encs, named)
        with reference_mail_path():
            slow = run(lines, encs, named)
        assert fast == slow, (encs, lines[:5])
        cases += 1
    assert cases == len(bodies)


MARKER_LINES = [b"Content-Transfer-Encoding: base64", b"content-transfer-encoding: 7bit",
                b"CONTENT-TRANSFER-ENCODING:x", b"Received: from x", b"Received:x",
                b"(This file must be converted with BinHex 4.0)", b"BinHex", b"=ybegin line=1",
                b"=ybegin", b"cat", b"Rx", b"=", b"plain", None]


def test_markers_of_a_run_of_lines_as_line_by_line():
    """Message.add_lines finds the nested-encoding markers add_line finds."""
    rng = random.Random(11)
    for _ in range(400):
        lines = [rng.choice(MARKER_LINES) for _ in range(rng.randint(0, 30))]
        has_ctx = rng.random() < 0.5
        one_by_one = Message(has_ctx=has_ctx)
        for line in lines:
            one_by_one.add_line(line)
        in_runs = Message(has_ctx=has_ctx)
        k = 0
        while k < len(lines):
            step = rng.randint(1, 8)
            in_runs.add_lines(lines[k:k + step])
            k += step
        assert in_runs.body == one_by_one.body
        assert (in_runs.encoding_at, in_runs.bounce_at, in_runs.binhex_at, in_runs.yenc_at) == \
            (one_by_one.encoding_at, one_by_one.bounce_at, one_by_one.binhex_at,
             one_by_one.yenc_at)


# -- reading lines ------------------------------------------------------------------


def line_data(rng: random.Random) -> list[bytes]:
    """Data for the line readers: every line end, NUL bytes, lines around 999 bytes."""
    ends = [b"\n", b"\r\n", b"\r", b"\n\r", b"\r\r", b"\n\n", b"\r\n\r\n"]
    out = [b"", b"\n", b"\r", b"\0", b"\0" * 2000, b"a" * 998 + b"\n", b"a" * 999 + b"\n",
           b"a" * 997 + b"\r\n", b"a" * 998 + b"\r\n", b"x\n" + b"a" * 999, b"x\n" + b"a" * 998,
           b"a\n" + b"\0" * 999, b"a\n" + b"\0" * 998 + b"\n", b"a" * 5000]
    for _ in range(250):
        style = rng.randrange(4)
        parts = []
        for _ in range(rng.randint(0, 60)):
            length = rng.choice([0, 1, 5, 76, 500, 996, 997, 998, 999, 1000, 1998, 3000])
            line = bytes(rng.choices(b"ABCabc +/=-;\t ", k=length))
            if style == 1 and rng.random() < 0.2:
                line = line.replace(b"a", b"\0")
            end = {0: b"\n", 1: rng.choice(ends), 2: b"\r\n", 3: rng.choice(ends[:4])}[style]
            parts.append(line + end)
        data = b"".join(parts)
        if rng.random() < 0.3:
            data = data[:rng.randint(0, len(data))]
        out.append(data)
    return out


def _getlines(data: bytes, getline) -> list[tuple[bytes | None, int]]:
    reader = mail._Reader(data)
    out = []
    while (raw := getline(reader)) is not None:
        out.append((_as_line(raw), reader.at))
    return out


def test_getline_as_the_reference():
    for data in line_data(random.Random(4)):
        assert _getlines(data, mail._Reader.getline) == _getlines(data, reference_getline)


def test_read_ahead_gives_the_getline_lines():
    """Batches of lines, whatever their size, are the getline lines with their
    ends; where the C split is used, fmap_gets (uudecode's reader) sees the
    same lines too."""
    rng = random.Random(5)
    fast_batches = 0
    for data in line_data(rng):
        expected = _getlines(data, reference_getline)
        reader = mail._Reader(data)
        got = []
        before = reader.at
        while (batch := reader.read_ahead(rng.choice([1, 100, 2000, 8192, 1 << 20]))) is not None:
            fast = batch._ends is None
            for i, line in enumerate(batch.lines):
                got.append((line or None, batch.end(i)))
                if fast:
                    gets_reader = mail._Reader(data)
                    gets_reader.at = batch.end(i - 1) if i else before
                    raw = gets_reader.gets()
                    assert raw is not None and raw.rstrip(b"\r\n") == line
                    assert gets_reader.at == batch.end(i)
            fast_batches += fast
            assert batch.index_at(reader.at) == len(batch.lines)
            before = reader.at
        assert got == expected
    assert fast_batches > 100


def _is_body_special(line: bytes) -> bool:
    return (not line or line[0] in b" \t\n\v\f\r;" or line[:6].lower() == b"begin "
            or _is_marker_like(line))


def _is_marker_like(line: bytes) -> bool:
    return (line[:25].lower() == b"content-transfer-encoding"
            or line.startswith((b"Received: ", b"=ybegin line=")) or b"BinHex" in line)


def test_line_search_finds_the_lines_a_loop_finds():
    """The lines the body and multipart loops must look at, found by one
    search over the joined text, are the ones a test of each line picks."""
    rng = random.Random(12)
    pieces = [b"", b" ", b"\t", b";", b"\v", b"\f", b"begin ", b"BeGiN ", b"begin", b"-", b"(",
              b"--B", b"Received: ", b"Received:", b"=ybegin line=", b"=ybegin",
              b"Content-Transfer-Encoding", b"CONTENT-TRANSFER-ENCODIN", b"BinHex", b"Bin",
              b"Hex", b"QUJD", b"x", b"=", b"\r"]
    for _ in range(400):
        lines = [b"".join(rng.choices(pieces, k=rng.randint(0, 3)))
                 for _ in range(rng.randint(1, 40))]
        lines = [x.replace(b"\r", b"") for x in lines]
        for sep in (b"\n", b"\r\n"):
            text = sep.join(lines)
            if sep == b"\n":
                assert mail._Joined.of_lines(lines + [b"a\nb"]).part_lines() is None
                assert mail._Joined.of_lines(lines).part_lines() is not None
            # a batch keeps its closing separator; a joined body has none
            batch = mail._Joined(text + (sep if rng.random() < 0.5 else b""), sep, len(lines))
            assert batch.body_lines() == [i for i, x in enumerate(lines) if _is_body_special(x)]
            assert mail._Joined(text, sep, len(lines)).part_lines() == (
                [i for i, x in enumerate(lines) if x[:1] in (b"-", b"(")],
                [i for i, x in enumerate(lines) if _is_marker_like(x)])


# -- whole mails ----------------------------------------------------------------------


def _bench_like_mails(rng: random.Random) -> list[bytes]:
    """Small versions of the benchmark corpus (shared/bench/mkcorpus.py)."""
    out = []
    for i in range(12):
        m = email.message.EmailMessage()
        m["From"] = f"s{i}@example.org"
        m["To"] = "r@example.com"
        m["Subject"] = f"corpus message {i}"
        m.set_content("Hello,\n\nplease see attached.\n" * rng.randint(1, 5))
        for _ in range(rng.randint(0, 3)):
            data = rng.choice([EXE, rng.randbytes(rng.randint(10, 3000)),
                               b"<html><body>" + b"x" * 500 + b"</body></html>"])
            if rng.random() < 0.3:
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                    z.writestr("a.bin", data)
                data = buf.getvalue()
            m.add_attachment(data, maintype="application", subtype="octet-stream",
                             filename=f"f{i}.bin")
        out.append(bytes(m))
    return out


def _python_email_messages() -> list[bytes]:
    for directory in ["/usr/lib/python3.11/test/test_email/data",
                      *glob.glob("/root/.pyenv/versions/3.11*/lib/python3.11/test/test_email/data")]:
        paths = sorted(Path(directory).glob("msg_*.txt"))
        if paths:
            return [p.read_bytes() for p in paths]
    return []


# lines dropped into a body: each one is a case of the per-line rules
BODY_LINES = [
    b"", b" ", b"\t", b";", b" ;\t;", b"  x", b"\tfolded", b"begin 644 a.bin", b"BEGIN 644 b",
    b"begin 644 ", b"end", b"Content-Transfer-Encoding: base64", b"content-transfer-encoding: 7bit",
    b"Received: from x", b"(This file must be converted with BinHex 4.0)", b"=ybegin line=1 x",
    b"Message-Id: <a@b>", b"Date: Mon", b"--", b"--BOUND", b"--BOUND--", b"(c) --BOUND",
    b"From x", b"M" + b"A" * 60, b"=", b"\x00", b"\x0b\x0c",
]


def mutations(data: bytes, rng: random.Random) -> list[bytes]:
    lines = data.split(b"\n")
    out = [
        data.replace(b"\n", b"\r\n"),
        data.replace(b"\n", b"\r"),
        data.replace(b"\n", b"\n\r"),
        b"".join(x + rng.choice([b"\n", b"\r\n", b"\r", b"\n\r"]) for x in lines),
    ]
    for _ in range(3):
        mixed = list(lines)
        for _ in range(rng.randint(1, 8)):
            k = rng.randint(1, max(1, len(mixed)))
            mixed.insert(k, rng.choice(BODY_LINES))
        if rng.random() < 0.3 and len(mixed) > 2:  # a long line
            k = rng.randrange(len(mixed) - 1)
            mixed[k:k + 2] = [mixed[k] + b"Z" * rng.choice([900, 1000, 3000]) + mixed[k + 1]]
        text = b"\n".join(mixed)
        if rng.random() < 0.3:
            k = rng.randint(0, len(text))
            text = text[:k] + b"\0" * rng.randint(1, 3) + text[k:]
        if rng.random() < 0.2:
            text = text[:rng.randint(len(text) // 2, len(text))]
        out.append(text)
    return out


def _objects(data, **options) -> tuple:
    """What unpack_mail yields (and inside the mails it yields), what it
    alerts, and how it ends."""
    ctx = _Ctx(**options)
    found = []
    try:
        for obj in unpack_mail(data, ctx):
            inner = bytes(obj.data)
            found.append((obj.name, inner))
            if detect(inner) in (FileType.MAIL, FileType.MHTML) and len(inner) < 200_000:
                found.append(_objects(inner, **options))
        end = None
    except Exception as exc:  # the reference's errors must be the same ones
        end = type(exc).__name__
    return found, ctx.alerts, end


def _same_as_reference(data: bytes, **options) -> None:
    fast = _objects(data, **options)
    with reference_mail_path():
        slow = _objects(data, **options)
    assert fast == slow


def test_mails_yield_the_reference_objects():
    rng = random.Random(6)
    seeds = [m.encode("latin-1") for m in mail_corpus().values()]
    seeds += _bench_like_mails(rng)
    cases = 0
    for seed in seeds:
        for data in [seed, *mutations(seed, rng)]:
            _same_as_reference(data)
            cases += 1
    assert cases > 500


def test_mapped_mail_as_bytes(tmp_path):
    """The engine hands a mail file over mapped, which the reader searches
    in place: the same objects as from bytes."""
    rng = random.Random(13)
    seeds = list(mail_corpus().values())[:20]
    for k, seed in enumerate(seeds):
        data = seed.encode("latin-1")
        for variant in (data, data.replace(b"\n", b"\r\n"), *mutations(data, rng)[4:]):
            if not variant:
                continue
            path = tmp_path / f"{k}.eml"
            path.write_bytes(variant)
            with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
                mapped = _objects(m)
            assert mapped == _objects(variant)
            assert _objects(memoryview(b"x" + variant)[1:]) == mapped


def test_python_email_messages_yield_the_reference_objects():
    rng = random.Random(7)
    messages = _python_email_messages()
    if not messages:
        pytest.fail("Python's email test data is missing (libpython3.11-testsuite)")
    for seed in messages:
        for data in [seed, *mutations(seed, rng)[:4]]:
            _same_as_reference(data)


SMALL_HOSTILE = {"parts_mixed", "parts_related_small", "nested_multipart", "nested_rfc822",
                 "nested_rfc822_parts", "many_headers", "mime_arguments", "mbox_many",
                 "bounces_many", "broken_base64", "unclosed_boundary", "nul_bytes",
                 "nul_after_headers", "junk_8bit", "random_multipart", "huge_line_qp",
                 "semicolons", "unbalanced_quotes", "uu_begins", "yenc_long", "binhex_banners"}


@pytest.mark.parametrize("alert", [False, True])
def test_hostile_mails_yield_the_reference_objects(alert):
    mails = hostile()
    for name in sorted(SMALL_HOSTILE):
        data = mails[name]
        _same_as_reference(data, AlertExceedsMax=alert, MaxFiles=50)
        _same_as_reference(data.replace(b"\n", b"\r\n"), AlertExceedsMax=alert, MaxFiles=50)
    # the body rules for whole runs of lines: folds and empty options
    head = b"From: a\nContent-Type: text/plain\n\nhello\n"
    for body in (b" x\n" * 2000, b";\n" * 2000, b" ;\n\n" * 1000, b"\t\n" * 50 + b"x\n",
                 b"begin 644 a\nend\n" * 50 + b"M" + b"A" * 60 + b"\n",
                 b"begin 644 a\r\n" + b"MAAAA\n\r" * 20 + b"end\n"):
        for data in (head + body, (head + body).replace(b"\n", b"\r\n")):
            _same_as_reference(data, AlertExceedsMax=alert)



@pytest.mark.parametrize("alert", [False, True])
def test_fold_limit_in_the_body_as_the_reference(alert, monkeypatch):
    """libclamav's 256k folded lines, scaled down: the count runs on over
    empty lines and is reset by any other line, in both implementations."""
    monkeypatch.setattr(mail, "MAX_LINE_FOLDS_PER_HEADER", 20)
    head = b"From: a\nContent-Type: application/octet-stream; name=a\n\n"
    for folds in (18, 19, 20, 21):
        for body in (b" x\n" * folds, b" x\n" * 10 + b"\n" + b"\tx\n" * (folds - 10),
                     b" x\n" * 10 + b"y\n" + b" x\n" * folds):
            for data in (head + body + b"QUJD\n", (head + body).replace(b"\n", b"\r\n")):
                _same_as_reference(data, AlertExceedsMax=alert)


def bounce_mails() -> list[bytes]:
    """Bounced messages and nested-encoding markers inside parts, where the
    part's own markers (Received:, Content-Transfer-Encoding:, BinHex,
    yEnc) decide what is saved."""
    exe64 = base64.encodebytes(EXE)
    inner = (b"Received: from relay\nFrom: x@y\nContent-Type: application/octet-stream\n"
             b"Content-Transfer-Encoding: base64\n\n" + exe64)
    out = []
    for lead in (b"", b"received: lower\n", b"Content-transfer-encoding: 7bit\n",
                 b"=ybegin line=128 size=3 name=a\n", b"xx BinHex yy\n",
                 b"Content-Transfer-Encoding: base64\n(This file must be converted with "
                 b"BinHex 4.0)\n=ybegin line=128 size=3 name=a\n"):
        for sub in (b"mixed", b"related", b"alternative"):
            for broken in (b"multipart/mixed; boundary=GONE", b"multipart/mixed"):
                # a multipart part with no boundary line (or none at all) is
                # read as text: its markers decide whether it is a bounce
                out.append(b"From: a@b\nContent-Type: multipart/" + sub + b"; boundary=OUT\n\n"
                           b"--OUT\nContent-Type: " + broken + b"\n\n" + b"x\n" + lead + inner
                           + b"--OUT--\n")
            out.append(b"From: a@b\nContent-Type: multipart/" + sub + b"; boundary=OUT\n\n"
                       b"--OUT\nContent-Type: text/plain\n\n" + lead + b"hello\n" + inner
                       + b"--OUT\nContent-Type: message/rfc822\n\n" + inner + b"--OUT--\n")
            out.append(b"From: a@b\nContent-Type: text/plain\n\n" + lead + inner)
    return out


def test_bounces_and_markers_in_parts_as_the_reference():
    rng = random.Random(10)
    for seed in bounce_mails():
        for data in [seed, *mutations(seed, rng)[:3]]:
            _same_as_reference(data)


# -- embedded archives and executables -----------------------------------------------


class _EmbeddedCtx(_Ctx):
    def limit_exceeded(self, limit: str) -> None:
        self.alerts.append("limit:" + limit)

    def scan_size_left(self) -> int | None:
        return None


def _zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("member.bin", data)
    return buf.getvalue()


MAGICS = [b"PK\x03\x04", b"Rar!\x1a\x07\x00", b"MSCF\0\0\0\0", b"7z\xbc\xaf\x27\x1c",
          b"\x01CD001", b"MZ", b"PE\0\0", b"CD001", b"\x60\xea",
          # ARJ main headers, some holding other magics (or another ARJ
          # header) in their seven free bytes: a scan passes over those
          b"\x60\xea1234567\x01\x02", b"\x60\xeaPK\x03\x04xyz\x00\x02",
          b"\x60\xea\x60\xea\x60\xea\x60\xea\x60\x02\x02\x02\x02",
          b"\x60\xeaRar!\x1a\x07\x00\x02\x02", b"\x60\xeaMSCF\0\0\0\0\x02",
          b"\x60\xea..\x01CD001\x02", b"\x60\xea\x60\xea12345\x00\x0212\x02\x02"]


def _pe_signature_past_the_typing_buffer() -> bytes:
    """A PE whose header parses but whose signature ends past byte 1024,
    found first (a stray "PE\\0\\0" makes it a candidate), with a second,
    ordinary PE inside it: ClamAV stops at the first and scans neither."""
    (lfanew,) = struct.unpack_from("<I", EXE, 0x3C)
    pad = 900
    shifted = bytearray(EXE[:lfanew] + b"\0" * pad + EXE[lfanew:])
    struct.pack_into("<I", shifted, 0x3C, lfanew + pad)
    shifted[100:104] = b"PE\0\0"
    shifted[200:200 + len(EXE)] = EXE
    return b"0123456789" + bytes(shifted)


def salted_buffers(rng: random.Random) -> list[bytes]:
    out = [b"", b"PK\x03\x04", b"x" * 100 + _zip(b"hello" * 50), EXE, b"t" * 10 + EXE,
           b"text " * 100 + EXE, b"MZ" + b"\0" * 2000 + EXE,
           _pe_signature_past_the_typing_buffer(), b"x" * 300 + EXE + b"y" * 200 + EXE]
    for _ in range(120):
        base = rng.choice([rng.randbytes(rng.randint(0, 20_000)),
                           b"plain text line\n" * rng.randint(1, 500)])
        buf = bytearray(base)
        for _ in range(rng.randint(0, 12)):
            piece = rng.choice(MAGICS + [_zip(rng.randbytes(100)), EXE[:rng.randint(64, 600)],
                                         b"MZ" + b"\0" * rng.randint(60, 300) + b"PE\0\0"])
            k = rng.choice([0, rng.randint(0, 1200), rng.randint(0, len(buf))])
            buf[k:k] = piece
        out.append(bytes(buf))
    return out


def _embedded(function, data, ftype) -> tuple:
    ctx = _EmbeddedCtx()
    found = []
    try:
        for child in function(data, ftype, ctx):
            found.append((child.name, bytes(child.data), child.ftype,
                          sorted((k, repr(v)) for k, v in child.extra.items())))
        end = None
    except Exception as exc:
        end = type(exc).__name__
    return found, ctx.alerts, end


def test_magic_hits_as_one_scan_finds_them():
    """The literal searches merged give the hits (and kinds) one scan of the
    alternation gives, ARJ headers with other magics inside included."""
    from mail_reference import _SFX

    from clammail.unpack.embedded import magic_hits

    rng = random.Random(14)
    hits = 0
    for _ in range(3000):
        buf = bytearray(rng.randbytes(rng.randint(0, 300)))
        for _ in range(rng.randint(0, 10)):
            k = rng.randint(0, len(buf))
            buf[k:k] = rng.choice(MAGICS)
        expected = [(m.start(), m.lastgroup) for m in _SFX.finditer(bytes(buf))]
        assert list(magic_hits(bytes(buf))) == expected
        hits += len(expected)
    assert hits > 5000


def test_embedded_objects_as_the_reference():
    rng = random.Random(9)
    ftypes = [FileType.BINARY_DATA, FileType.TEXT_ASCII, FileType.HTML, FileType.MSEXE,
              FileType.ZIP, FileType.RAR, FileType.MSCAB, FileType.PNG, FileType.PDF,
              FileType.MSOLE2, FileType.GZ]
    cases = found = 0
    for data in salted_buffers(rng):
        for ftype in rng.sample(ftypes, 3) + [FileType.BINARY_DATA]:
            view = memoryview(b"_" + data)[1:]
            fast = _embedded(embedded_objects, data, ftype)
            assert fast == _embedded(reference_embedded_objects, data, ftype), ftype
            assert _embedded(embedded_objects, view, ftype) == fast
            cases += 1
            found += bool(fast[0])
    assert cases > 400 and found > 50
