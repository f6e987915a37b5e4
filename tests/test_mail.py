"""Mail against clamscan: the same verdicts, and the same objects byte for byte.

A corpus of generated mails covers every transfer encoding, nesting of
multiparts and message/rfc822, broken and odd MIME headers, mailboxes, bounces,
BinHex and uuencode inside text, with ClamAV's test executable (found by its
hash) or EICAR (a body signature) inside. Each test runs clamscan once over the
whole corpus. The object test compares the files clamscan writes with
--leave-temps (its mail-tmp directories) with what `unpack_mail` yields.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import os
import quopri
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import (
    CLAM_TEST_FILE_SIG,
    TESTFILES,
    clammail_results,
    clamscan_results,
    need_program,
)

import clammail.engine  # noqa: F401  (the engine before the unpackers: import order)
from clammail.config.options import ENGINE_DEFAULTS
from clammail.formats.filetypes import FileType, detect
from clammail.unpack.mail import unpack_mail

EXE = (TESTFILES / "clam.exe").read_bytes()
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_SIG = "Eicar-Test-Signature:0:*:" + EICAR.hex()
# target 4: matched on mails (the raw message), never on the parts
MAIL_SIGS = [
    "Mail.Marker:4:*:" + b"X-Test-Marker: mail".hex(),
    "Mail.Base64Exe:4:*:" + b"TVpQAAIAAAAEAA8A".hex(),
    "Mail.Eicar:4:*:" + EICAR[:40].hex(),
]


def as_logical(ndb_line: str) -> str:
    """The same body signature as a one-pattern logical signature (.ldb)."""
    name, target, _offset, hexsig = ndb_line.split(":")
    return f"{name};Engine:51-255,Target:{target};0;{hexsig}"


# -- building mails -----------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.encodebytes(data).decode()


def qp(data: bytes) -> str:
    return quopri.encodestring(data).decode()


def uu(data: bytes, name: str = "clam.exe") -> str:
    lines = "".join(binascii.b2a_uu(data[i:i + 45]).decode() for i in range(0, len(data), 45))
    return f"begin 644 {name}\n{lines}`\nend\n"


def yenc(data: bytes, name: str = "clam.exe") -> str:
    out, line = [], ""
    for byte in data:
        c = (byte + 42) & 255
        line += "=" + chr((c + 64) & 255) if c in (0, 10, 13, 61) else chr(c)
        if len(line) >= 128:
            out.append(line)
            line = ""
    out.append(line)
    return f"=ybegin line=128 size={len(data)} name={name}\n" + "\n".join(out) + "\n=yend\n"


HEAD = "From: a@example.com\nTo: b@example.com\nSubject: test\nMIME-Version: 1.0\n"


def part(ctype: str | None, cte: str | None, body: str, extra: str = "") -> str:
    text = f"Content-Type: {ctype}\n" if ctype else ""
    if cte:
        text += f"Content-Transfer-Encoding: {cte}\n"
    return text + extra + "\n" + body


def multipart(sub: str, parts: list[str], boundary: str = "BOUND", close: bool = True,
              preamble: str = "", epilogue: str = "", head: str = HEAD) -> str:
    text = head + f'Content-Type: multipart/{sub}; boundary="{boundary}"\n\n{preamble}'
    for p in parts:
        text += f"--{boundary}\n{p}\n"
    if close:
        text += f"--{boundary}--\n{epilogue}"
    return text


def mbox(*messages: str) -> str:
    return "".join(f"From sender@example.com Mon Jan  1 00:00:0{i} 2024\n{m}\n"
                   for i, m in enumerate(messages))


def corpus() -> dict[str, str]:
    """Name -> mail text (latin-1, so any byte can be written)."""
    binhex = (TESTFILES / "clam.exe.binhex").read_text()
    exe64 = b64(EXE)
    att = part("application/octet-stream; name=clam.exe", "base64", exe64)
    txt = part("text/plain", "7bit", "hello " + EICAR.decode() + "\n")
    inner_rfc = HEAD + att
    m: dict[str, str] = {}
    # one part, every transfer encoding
    m["b64_app"] = HEAD + "X-Test-Marker: mail\n" + att
    m["qp_text"] = HEAD + part("text/plain", "quoted-printable", qp(EICAR + b"\nline two\n"))
    m["b64_text"] = HEAD + part("text/plain", "base64", b64(EICAR))
    m["7bit_text"] = HEAD + part("text/plain", "7bit", "hello\n" + EICAR.decode() + "\n")
    m["nocte_text"] = HEAD + part("text/plain", None, "hello\nworld\n")
    m["8bit_text"] = HEAD + part("text/plain; charset=latin1", "8bit", "h\xe9llo " + EICAR.decode())
    m["binary_app"] = HEAD + part("application/octet-stream", "binary", EICAR.decode() + "\n")
    m["uu_cte"] = HEAD + part("application/octet-stream", "x-uuencode", uu(EXE))
    m["qp_html"] = HEAD + part("text/html", "quoted-printable", qp(b"<p>" + EICAR + b"</p>\n"))
    m["b64_image"] = HEAD + part("image/gif; name=a.gif", "base64", exe64)
    m["b64_audio"] = HEAD + part("audio/basic", "base64", exe64)
    m["x_type"] = HEAD + part("x-foo/bar", "base64", exe64)
    m["plain_text_swapped"] = HEAD + part("plain/text", "base64", exe64)
    m["no_content_type"] = HEAD + part(None, "base64", exe64,
                                       "Content-Disposition: attachment; filename=clam.exe\n")
    m["unknown_cte"] = HEAD + part("application/octet-stream", "x-foo", exe64)
    m["misspelled_cte"] = HEAD + part("application/octet-stream", "base-64", exe64)
    m["two_ctes"] = HEAD + part("application/octet-stream", "base64 binary", exe64)
    m["yenc_cte"] = HEAD + part("application/octet-stream", "x-yencode", yenc(EXE))
    m["yenc_in_text"] = HEAD + part("text/plain", None, "hello\n" + yenc(EICAR) + "bye\n")
    m["uu_in_text"] = HEAD + "\nhello\n" + uu(EXE) + "bye\n"
    m["uu_in_multipart"] = multipart("mixed", [part("text/plain", None, "see\n" + uu(EXE))])
    m["enriched"] = HEAD + part("text/enriched", None, "<bold>" + EICAR.decode() + "</bold>\n")
    # multiparts
    m["mixed"] = multipart("mixed", [txt, att])
    m["alternative"] = multipart("alternative", [txt, part("text/html", "quoted-printable",
                                                             qp(b"<b>" + EICAR + b"</b>\n"))])
    m["related_html"] = multipart("related", [part("text/html", None, "<p>hi</p>\n"), att])
    m["related_multipart"] = multipart(
        "related", [multipart("alternative", [txt], "INNER", head=""), att])
    m["signed"] = multipart("signed", [txt, part("application/pgp-signature", None, "sig\n")])
    m["signed_att"] = multipart("signed", [att, txt])
    m["digest"] = multipart("digest", [txt, att])
    m["report"] = multipart("report", [txt, att])
    m["unknown_sub"] = multipart("x-whatever", [txt, att])
    m["encrypted"] = multipart("encrypted", [part("application/pgp-encrypted", None, "V1\n"), att])
    m["parallel"] = multipart("parallel", [txt, att])
    m["no_subtype"] = HEAD + 'Content-Type: multipart; boundary="B"\n\n--B\n' + att + "\n--B--\n"
    m["nested_2"] = multipart("mixed", [multipart("mixed", [txt, att], "INNER", head=""), txt])
    level3 = multipart("mixed", [att], "L3", head="")
    m["nested_3"] = multipart("mixed", [multipart("mixed", [level3], "L2", head="")], "L1")
    # message/rfc822
    m["rfc822_part"] = multipart("mixed", [txt, part("message/rfc822", None, inner_rfc)])
    m["rfc822_part_b64"] = multipart("mixed", [part("message/rfc822", "base64",
                                                    b64(inner_rfc.encode()))])
    m["rfc822_part_plain"] = multipart("mixed", [part("message/rfc822", None,
                                                      HEAD + "\nhi " + EICAR.decode() + "\n")])
    m["rfc822_top"] = HEAD + part("message/rfc822", None, inner_rfc)
    m["rfc822_in_rfc822"] = HEAD + part("message/rfc822", None,
                                        HEAD + part("message/rfc822", None, inner_rfc))
    m["rfc822_in_rfc822_parts"] = multipart("mixed", [part(
        "message/rfc822", "base64", b64(multipart("mixed", [part(
            "message/rfc822", None, inner_rfc)], "I2").encode()))])
    m["delivery_status"] = multipart("report", [
        txt, part("message/delivery-status", None, "Reporting-MTA: dns; x\n"),
        part("message/rfc822", None, inner_rfc)])
    m["external_body"] = HEAD + part("message/external-body", None, "hi\n" + uu(EXE))
    m["partial"] = HEAD + part("message/partial; id=1; number=1; total=2", None, inner_rfc)
    # broken boundaries and MIME structure
    m["no_closing_boundary"] = multipart("mixed", [txt, att], close=False)
    m["after_closing"] = multipart("mixed", [txt], epilogue="After the end\n" + att)
    m["preamble"] = multipart("mixed", [att], preamble="Preamble " + EICAR.decode() + "\n")
    m["boundary_comment"] = (HEAD + 'Content-Type: multipart/mixed; (x) boundary="B"\n\n--B\n'
                             + att + "\n--B--\n")
    m["boundary_folded"] = HEAD + 'Content-Type: multipart/mixed;\n\tboundary="B"\n\n--B\n' \
        + att + "\n--B--\n"
    m["boundary_unfolded"] = HEAD + 'Content-Type: multipart/mixed;\nboundary="B"\n\n--B\n' \
        + att + "\n--B--\n"
    m["boundary_unquoted"] = HEAD + "Content-Type: multipart/mixed; boundary=B\n\n--B\n" \
        + att + "\n--B--\n"
    m["boundary_dash_short"] = (HEAD + 'Content-Type: multipart/mixed; boundary="---- =_N"\n\n'
                                "------ =_N\n" + att + "\n------ =_N--\n")
    m["boundary_trailing_space"] = HEAD + 'Content-Type: multipart/mixed; boundary="B"\n\n--B  \n' \
        + att + "\n--B--  \n"
    m["no_boundary_param"] = HEAD + "Content-Type: multipart/mixed\n\n--B\n" + att + "\n--B--\n"
    m["boundary_never_used"] = HEAD + 'Content-Type: multipart/mixed; boundary="Q"\n\n' + att
    m["blank_line_in_part_headers"] = multipart("mixed", [
        "Content-Type: application/octet-stream; name=x.zip\n\n"
        "Content-Transfer-Encoding: base64\n\n" + exe64])
    m["part_without_headers"] = multipart("mixed", ["\nno headers " + EICAR.decode() + "\n", att])
    m["part_disposition_only"] = multipart("mixed", [part(
        None, "base64", exe64, "Content-Disposition: attachment; filename=clam.exe\n")])
    m["text_attachment"] = multipart("mixed", [part(
        "text/plain", None, EICAR.decode() + "\n", "Content-Disposition: attachment; name=a\n")])
    m["text_inline_named"] = multipart("mixed", [part(
        "text/plain; name=a.txt", None, "hello there\n", "Content-Disposition: inline\n")])
    m["text_odd_disposition"] = multipart("mixed", [part(
        "text/plain", "base64", b64(EICAR), "Content-Disposition: foo\n")])
    m["binhex_before_boundary"] = (HEAD + 'Content-Type: multipart/mixed; boundary="B"\n\n'
                                   + binhex + "\n--B\n" + txt + "\n--B--\n")
    m["encoding_before_boundary"] = (
        HEAD + 'Content-Type: multipart/mixed; boundary="B"\n\nContent-Type: application/x\n'
        "Content-Transfer-Encoding: base64\n\n" + exe64 + "\n--B\n" + txt + "\n--B--\n")
    # parameters and header syntax
    m["rfc2231_filename"] = multipart("mixed", [part(
        "application/octet-stream", "base64", exe64,
        "Content-Disposition: attachment; filename*=utf-8''cl%61m.exe\n")])
    m["rfc2231_continuation"] = multipart("mixed", [part(
        "application/octet-stream", "base64", exe64,
        "Content-Disposition: attachment; filename*0*=utf-8''cl; filename*1=am.exe\n")])
    m["rfc2231_boundary"] = (HEAD + "Content-Type: multipart/mixed; boundary*=us-ascii''B%31\n\n"
                             "--B1\n" + att + "\n--B1--\n")
    m["rfc2047_name"] = multipart("mixed", [part(
        'application/octet-stream; name="=?utf-8?B?Y2xhbS5leGU=?="', "base64", exe64)])
    m["rfc2047_type"] = HEAD + "Content-Type: =?us-ascii?Q?application/octet-stream?=\n" \
        "Content-Transfer-Encoding: base64\n\n" + exe64
    m["equals_separator"] = (HEAD.replace("MIME-Version: 1.0\n", "")
                             + "Content-Type= application/octet-stream\n"
                             "Content-Transfer-Encoding= base64\n\n" + exe64)
    m["header_comments"] = HEAD + "Content-Type: (c) application/octet-stream (x)\n" \
        "Content-Transfer-Encoding: (y) base64\n\n" + exe64
    m["quoted_type"] = HEAD + 'Content-Type: "application/octet-stream"\n' \
        "Content-Transfer-Encoding: base64\n\n" + exe64
    m["two_types_one_header"] = HEAD + "Content-Type: foo/bar application/octet-stream\n" \
        "Content-Transfer-Encoding: base64\n\n" + exe64
    m["white_space_end_of_headers"] = (HEAD + "Content-Type: multipart/mixed; boundary=B\n \n"
                                       "--B\n" + att + "\n--B--\n")
    m["no_blank_after_headers"] = HEAD + "Content-Type: application/octet-stream\n" \
        "Content-Transfer-Encoding: base64\n" + exe64
    m["empty_content_type"] = HEAD + "Content-Type:\nContent-Transfer-Encoding: base64\n\n" + exe64
    m["lower_case_headers"] = HEAD + "content-type: APPLICATION/OCTET-STREAM\n" \
        "content-transfer-encoding: BASE64\n\n" + exe64
    m["missing_headers"] = "X-Test-Marker: mail\nSubject: no from\n\n" + EICAR.decode() + "\n"
    m["only_text"] = "just text\nand more " + EICAR.decode() + "\n"
    m["communigate"] = "P I 123 foo\nbar\n\n" + HEAD + att
    m["leading_blank_lines"] = "\n\n" + HEAD + att
    m["headers_only"] = HEAD
    m["empty_body"] = HEAD + "Content-Type: text/plain\n\n"
    # line ends, NUL bytes, 8-bit and long lines
    m["crlf"] = multipart("mixed", [txt, att]).replace("\n", "\r\n")
    m["cr_only"] = multipart("mixed", [txt, att]).replace("\n", "\r")
    m["lf_cr"] = multipart("mixed", [txt, att]).replace("\n", "\n\r")
    m["nul_bytes"] = multipart("mixed", [txt, att]).replace("hello", "hel\0lo") \
        .replace("Content-Type: text", "Content-Type: te\0xt")
    m["one_line_base64"] = HEAD + part("application/octet-stream", "base64",
                                       base64.b64encode(EXE).decode() + "\n")
    m["long_qp_line"] = HEAD + part("text/plain", "quoted-printable",
                                    "x" * 2500 + EICAR.decode() + "\n")
    m["junk_8bit"] = HEAD + part("text/plain", None, "".join(map(chr, range(128, 256))) + "\n")
    m["broken_base64"] = HEAD + part("application/octet-stream", "base64",
                                     exe64.replace("A", "A!", 5).replace("\n", " \n", 3))
    m["base64_equals_early"] = HEAD + part("application/octet-stream", "base64",
                                           "TVpQ=AAIAAAA\n" + exe64)
    # mailboxes and bounces
    m["mbox_two"] = mbox(m["qp_text"], m["mixed"])
    m["mbox_three_uu"] = mbox(m["uu_in_text"], m["b64_app"], m["7bit_text"])
    m["mbox_rfc822"] = mbox(m["rfc822_part"])
    m["mbox_from_in_body"] = mbox(HEAD + "\nhello\n\nFrom the start\n" + EICAR.decode() + "\n")
    m["bounce_in_text"] = (HEAD + "Content-Type: text/plain\n\nNot delivered\n\n"
                           "Received: from x by y\nFrom: a@b\nSubject: hi\n"
                           "Content-Type: application/octet-stream; name=clam.exe\n"
                           "Content-Transfer-Encoding: base64\n\n" + exe64)
    m["bounce_from_line"] = (HEAD + "\nbounce\nFrom MAILER-DAEMON Mon Jan  1 00:00:00 2024 12345\n"
                             "From: a@b\nContent-Type: application/octet-stream\n"
                             "Content-Transfer-Encoding: base64\n\n" + exe64)
    m["bounce_part"] = multipart("mixed", ["Content-Type: text/plain\n\nReceived: from x\n"
                                           "Content-Transfer-Encoding: base64\n\n" + exe64])
    m["binhex_in_text"] = HEAD + "\n" + binhex
    m["binhex_in_part"] = multipart("mixed", ["\n" + binhex])
    m["binhex_after_text"] = HEAD + "\nhello there\n" + binhex + "\nbye\n"
    return m


# Mails whose verdict depends on work outside the mail unpacker: name -> why.
ELSEWHERE: dict[str, str] = {}


def write_corpus(directory: Path) -> list[Path]:
    paths = []
    for name, text in corpus().items():
        path = directory / f"{name}.eml"
        path.write_bytes(text.encode("latin-1"))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def mails(tmp_path_factory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("mails"))


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> list[Path]:
    """clam.exe by hash; EICAR and the mail markers as logical signatures."""
    d = tmp_path_factory.mktemp("db")
    (d / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    (d / "test.ldb").write_text("\n".join(map(as_logical, [EICAR_SIG, *MAIL_SIGS])) + "\n")
    return [d / "test.hdb", d / "test.ldb"]


@pytest.fixture(scope="module")
def ndb_database(tmp_path_factory) -> list[Path]:
    """The same signatures with the body ones in an .ndb."""
    d = tmp_path_factory.mktemp("ndb")
    (d / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    (d / "test.ndb").write_text("\n".join([EICAR_SIG, *MAIL_SIGS]) + "\n")
    return [d / "test.hdb", d / "test.ndb"]


# -- verdicts -------------------------------------------------------------------


def test_clam_test_files_same_name_as_clamscan(sigdir):
    (sigdir / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    files = [TESTFILES / f for f in ("clam.mail", "clam.exe.mbox.base64", "clam.exe.mbox.uu",
                                     "clam.exe.binhex", "clam.tnef")]
    ours = clammail_results([sigdir / "test.hdb"], files)
    theirs = clamscan_results([sigdir / "test.hdb"], files)
    assert ours[:2] == theirs[:2]
    assert all(names == ["ClamAV-Test-File.UNOFFICIAL"] for names in ours[1].values())


def _ours_alone(mails: list[Path]) -> list[Path]:
    return [p for p in mails if p.stem not in ELSEWHERE]


def test_corpus_verdicts_match_clamscan(mails, database):
    mails = _ours_alone(mails)
    ours = clammail_results(database, mails)
    theirs = clamscan_results(database, mails)
    assert ours[1] == theirs[1]
    assert ours[0] == theirs[0]
    # the corpus is worth something: most mails have a detection
    assert sum(1 for names in theirs[1].values() if names) > len(mails) // 2


def test_corpus_allmatch_lists_match_clamscan(mails, database):
    mails = _ours_alone(mails)
    ours = clammail_results(database, mails, allmatch=True)
    theirs = clamscan_results(database, mails, allmatch=True)
    assert set(ours[1]) == set(theirs[1])
    for path, names in theirs[1].items():
        # files scanned after the parse come out in clamscan's directory order
        assert collections.Counter(ours[1][path]) == collections.Counter(names), path
    assert any(len(names) > 2 for names in theirs[1].values())


def test_corpus_with_scan_mail_off_matches_clamscan(mails, database):
    mails = _ours_alone(mails)
    ours = clammail_results(database, mails, "--scan-mail=no")
    theirs = clamscan_results(database, mails, "--scan-mail=no")
    assert ours[1] == theirs[1]


def test_corpus_verdicts_with_ndb_body_signatures(mails, ndb_database):
    mails = _ours_alone(mails)
    for allmatch in (False, True):
        ours = clammail_results(ndb_database, mails, allmatch=allmatch)
        theirs = clamscan_results(ndb_database, mails, allmatch=allmatch)
        assert {p: collections.Counter(n) for p, n in ours[1].items()} == \
            {p: collections.Counter(n) for p, n in theirs[1].items()}


# -- objects ----------------------------------------------------------------------


class _Ctx:
    """The unpack context without an engine: defaults, nothing alerted."""

    def __init__(self, **options):
        self.options = dict(ENGINE_DEFAULTS, **options)
        self.alerts: list[str] = []

    def alert(self, name: str) -> None:
        self.alerts.append(name)

    def check(self) -> None:
        pass

    def max_object_size(self) -> int:
        return 1 << 40

    def option(self, name: str):
        return self.options[name]

    def debug(self, message: str) -> None:
        pass


def our_objects(data: bytes, depth: int = 0) -> list[bytes]:
    """What unpack_mail yields, and inside the parts that are mails again."""
    out = []
    for obj in unpack_mail(data, _Ctx()):
        out.append(bytes(obj.data))
        if depth < 5 and detect(obj.data) in (FileType.MAIL, FileType.MHTML):
            out += our_objects(bytes(obj.data), depth + 1)
    return out


def clamscan_objects(paths: list[Path], kinds=("mail-tmp",)) -> dict[str, list[bytes]]:
    """The files clamscan --leave-temps writes for each input, by basename."""
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "none.hdb"
        empty.write_text("0123456789abcdef0123456789abcdef:99999999:Nothing\n")
        out_dir = Path(tmp) / "t"
        out_dir.mkdir()
        subprocess.run([need_program("clamscan"), "--no-summary", "--leave-temps", "--disable-cache",
                        f"--tempdir={out_dir}", "-d", str(empty), *map(str, paths)],
                       capture_output=True, timeout=600)
        found: dict[str, list[bytes]] = {p.name: [] for p in paths}
        for top in out_dir.iterdir():
            name = next(n for n in found if top.name.split("-", 1)[1].startswith(n + "."))
            for root, _dirs, files in os.walk(top):
                if any(k in root for k in kinds):
                    found[name] += [Path(root, f).read_bytes() for f in files]
        return found


def _digests(objects: list[bytes]) -> set[tuple[int, str]]:
    # A set: with --leave-temps clamscan keeps the files it scanned at once and
    # scans them again with the directory, so nested objects come out twice.
    return {(len(d), hashlib.sha256(d).hexdigest()) for d in objects}


# message/external-body and message/partial make libclamav's parse fail: the
# files it wrote on the way are not scanned.
PARSE_FAILS = {"external_body", "partial"}


def test_corpus_objects_match_clamscan_byte_for_byte(mails):
    theirs = clamscan_objects(mails)
    checked = 0
    for path in mails:
        data = path.read_bytes()
        ours = our_objects(data) if detect(data) in (FileType.MAIL, FileType.MHTML) else []
        if path.stem in PARSE_FAILS:
            # clamscan wrote the uudecoded file, then never scanned its directory
            assert ours == [], path.name
            continue
        assert _digests(ours) == _digests(theirs[path.name]), path.name
        checked += bool(ours)
    assert checked > len(mails) // 2


# -- archives inside mails ---------------------------------------------------------

def test_zip_attachment_matches_clamscan(tmp_path, database):
    zipped = (TESTFILES / "clam.zip").read_bytes()
    mail = tmp_path / "zip.eml"
    mail.write_text(multipart("mixed", [part("application/zip; name=clam.zip", "base64",
                                             b64(zipped))]))
    nested = tmp_path / "zip_rfc822.eml"
    nested.write_text(multipart("mixed", [part("message/rfc822", None, mail.read_text())]))
    ours = clammail_results(database, [mail, nested])
    theirs = clamscan_results(database, [mail, nested])
    assert theirs[1][str(mail)] == ["ClamAV-Test-File.UNOFFICIAL"]
    assert ours[1] == theirs[1]
