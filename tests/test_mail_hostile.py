"""Hostile mails: each is scanned to a verdict without an error, and the verdict
is clamscan's, with and without AlertExceedsMax (libclamav's mail limits:
Heuristics.Limits.Exceeded.EmailHeaders, EmailHeaderBytes, EmailLineFoldCnt,
EmailMIMEArguments, EmailMIMEPartsPerMessage, MaxRecursion, MaxFiles).

The sizes are the smallest that cross each limit (MaxFiles is lowered to 50),
so the file runs in seconds; bench/mail_hostile.py times the large versions.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from conftest import CLAM_TEST_FILE_SIG, TESTFILES, clammail_results, clamscan_results

HEAD = "From: a@example.com\nTo: b@example.com\nMIME-Version: 1.0\n"
EXE64 = base64.encodebytes((TESTFILES / "clam.exe").read_bytes()).decode()
ATTACHMENT = ("Content-Type: application/octet-stream; name=clam.exe\n"
              "Content-Transfer-Encoding: base64\n\n" + EXE64)


def hostile() -> dict[str, bytes]:
    m: dict[str, str | bytes] = {}
    parts = "".join("--B\nContent-Type: text/plain\n\np\n" for _ in range(1100))
    m["parts_mixed"] = HEAD + "Content-Type: multipart/mixed; boundary=B\n\n" + parts + "--B--\n"
    m["parts_related"] = HEAD + "Content-Type: multipart/related; boundary=B\n\n" + parts \
        + "--B\n" + ATTACHMENT + "--B--\n"
    m["parts_related_small"] = HEAD + "Content-Type: multipart/related; boundary=B\n\n" \
        + parts[:3000] + "--B\n" + ATTACHMENT + "--B--\n"
    depth = 40
    nest = "".join(f"--B{i}\nContent-Type: multipart/mixed; boundary=B{i + 1}\n\n"
                   for i in range(depth))
    m["nested_multipart"] = HEAD + "Content-Type: multipart/mixed; boundary=B0\n\n" + nest \
        + f"--B{depth}\n" + ATTACHMENT
    m["nested_rfc822"] = HEAD + "Content-Type: message/rfc822\n\n" * depth + HEAD + ATTACHMENT
    m["nested_rfc822_parts"] = HEAD + "Content-Type: multipart/mixed; boundary=B0\n\n" + "".join(
        f"--B{i}\nContent-Type: message/rfc822\n\nFrom: a\n"
        f"Content-Type: multipart/mixed; boundary=B{i + 1}\n\n" for i in range(depth)) \
        + f"--B{depth}\n" + ATTACHMENT
    m["nested_ok"] = HEAD + "Content-Type: message/rfc822\n\n" * 5 + HEAD + ATTACHMENT
    m["many_headers"] = HEAD + "Content-Type: text/plain; name=a\n" * 1100 + "\n" + EXE64
    m["header_bytes"] = HEAD + 'Content-Type: text/plain; name="' + "a" * 300_000 + '"\n\nx\n'
    m["header_folds"] = HEAD + "Content-Type: text/plain\n\nhello\nX: y\n" + " x\n" * 262_200
    args = ";\n ".join(f"name{i}=x" for i in range(300))
    m["mime_arguments"] = HEAD + "Content-Type: multipart/mixed; boundary=B\n\n--B\n" \
        f"Content-Type: text/plain; {args}\n\nhello\n--B\n" + ATTACHMENT + "--B--\n"
    m["mbox_many"] = "".join(f"From a@b Mon Jan  1 00:00:00 2024\nFrom: a\n"
                             f"Content-Type: text/plain\n\nmessage {i}\n\n" for i in range(60))
    bounce = ("From MAILER-DAEMON Mon Jan  1 00:00:00 2024 12345\n"
              "Content-Type: application/x\n\nx\n")
    m["bounces_many"] = HEAD + "Content-Type: text/plain\n\n" + bounce * 60
    m["broken_base64"] = HEAD + "Content-Type: application/octet-stream\n" \
        "Content-Transfer-Encoding: base64\n\n" + "%%!!@@##" * 10_000 + "\n" + EXE64
    m["endless_headers"] = HEAD + "".join(f"X-H{i}: {'v' * 50}\n" for i in range(20_000))
    m["unclosed_boundary"] = HEAD + "Content-Type: multipart/mixed; boundary=B\n\n--B\n" \
        + ATTACHMENT + base64.encodebytes(os.urandom(100_000)).decode()
    m["nul_bytes"] = (HEAD + "Content-Type: multipart/mixed; boundary=B\n\n--B\n\0\0"
                      "Content-Type: text/plain\n\n" + "\0" * 100_000 + "\n--B\n"
                      + ATTACHMENT + "--B--\n")
    m["nul_after_headers"] = b"From: a\n" + b"\0" * 50_000
    m["junk_8bit"] = (HEAD + "\n").encode() + bytes(range(128, 256)) * 2000
    m["random_multipart"] = b"From: a\nContent-Type: multipart/mixed; boundary=B\n\n" \
        + os.urandom(200_000)
    m["huge_line_qp"] = HEAD + "Content-Type: text/plain\nContent-Transfer-Encoding: " \
        "quoted-printable\n\n" + "=41" * 100_000 + "\n"
    m["huge_boundary"] = 'From: a\nContent-Type: multipart/mixed; boundary="' + "B" * 100_000 \
        + '"\n\nx\n'
    m["empty_content_type"] = HEAD + "Content-Type:\n" + "X: y\n" * 5000 + "\n" + EXE64
    m["semicolons"] = HEAD + "Content-Type: text/plain" + ";" * 10_000 + "\n\n" + EXE64
    m["unbalanced_quotes"] = HEAD + 'Content-Type: text/plain; name="' + '"' * 9999 + "\n\nx\n"
    m["comment_nesting"] = HEAD + "Content-Type: " + "(" * 10_000 + "text/plain\n\nx\n"
    m["uu_long"] = HEAD + "\nbegin 644 a\n" + ("M" + "A" * 60 + "\n") * 20_000 + "end\n"
    m["uu_begins"] = HEAD + "\n" + "begin 644 a\nend\n" * 10_000
    m["yenc_long"] = HEAD + "Content-Type: text/plain\n\n=ybegin line=128 name=a\n" \
        + ("a" * 128 + "\n") * 5000 + "=yend size=1\n"
    m["binhex_banners"] = HEAD + "\n" + "(This file must be converted with BinHex 4.0)\n" * 10_000
    return {k: v if isinstance(v, bytes) else v.encode("latin-1") for k, v in m.items()}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("hostile")
    paths = []
    for name, data in hostile().items():
        path = d / f"{name}.eml"
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("db")
    (d / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    return [d / "test.hdb"]


@pytest.mark.parametrize("alert", [False, True], ids=["plain", "alert-exceeds-max"])
def test_hostile_mails_same_verdict_as_clamscan(files, database, alert):
    # MaxFiles lowered so that the mailbox and the bounces cross it quickly
    extra = ["--max-files=50"] + (["--alert-exceeds-max=yes"] if alert else [])
    code, ours, stderr = clammail_results(database, files, *extra)
    theirs = clamscan_results(database, files, *extra)[1]
    assert "Traceback" not in stderr
    assert set(ours) == {str(p) for p in files}  # every file has a verdict
    assert not [n for names in ours.values() for n in names if n.startswith("ERROR")]
    assert ours == theirs
    found = {Path(p).stem: names for p, names in theirs.items() if names}
    if alert:
        heuristics = {n for names in found.values() for n in names}
        assert {"Heuristics.Limits.Exceeded.EmailHeaders",
                "Heuristics.Limits.Exceeded.EmailHeaderBytes",
                "Heuristics.Limits.Exceeded.EmailLineFoldCnt",
                "Heuristics.Limits.Exceeded.EmailMIMEArguments",
                "Heuristics.Limits.Exceeded.EmailMIMEPartsPerMessage",
                "Heuristics.Limits.Exceeded.MaxRecursion",
                "Heuristics.Limits.Exceeded.MaxFiles"} <= heuristics
    else:
        assert "nested_ok" in found and "parts_related_small" in found
