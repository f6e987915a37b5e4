"""TNEF (winmail.dat) against clamscan: clam.tnef, and generated streams with the
test executable as attachment data in every layout libclamav handles
differently (named, unnamed, several attachments, truncated, bad lengths)."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest
from conftest import CLAM_TEST_FILE_SIG, TESTFILES, clammail_results, clamscan_results

EXE = (TESTFILES / "clam.exe").read_bytes()
SIGNATURE = struct.pack("<I", 0x223E9F78) + struct.pack("<H", 0x1234)
LVL_MESSAGE, LVL_ATTACHMENT = 1, 2
ATT_MSGCLASS, ATT_BODY = 0x8008, 0x800C
ATT_ATTACHDATA, ATT_ATTACHTITLE, ATT_RENDDATA = 0x800F, 0x8010, 0x9002


def record(level: int, tag: int, data: bytes, type_: int = 0x0006,
           length: int | None = None) -> bytes:
    size = len(data) if length is None else length
    checksum = sum(data) & 0xFFFF
    return (bytes([level]) + struct.pack("<HHi", tag, type_, size) + data
            + struct.pack("<H", checksum))


def message(*records: bytes) -> bytes:
    return SIGNATURE + b"".join(records)


def streams() -> dict[str, bytes]:
    msg = record(LVL_MESSAGE, ATT_MSGCLASS, b"IPM.Microsoft Mail.Note\0")
    title = record(LVL_ATTACHMENT, ATT_ATTACHTITLE, b"clam.exe\0")
    data = record(LVL_ATTACHMENT, ATT_ATTACHDATA, EXE)
    rend = record(LVL_ATTACHMENT, ATT_RENDDATA, b"\0" * 14)
    half = record(LVL_ATTACHMENT, ATT_ATTACHDATA, EXE[:300]) + \
        record(LVL_ATTACHMENT, ATT_ATTACHDATA, EXE[300:])
    return {
        "named": message(msg, rend, title, data),
        "data_before_title": message(msg, rend, data, title),
        "unnamed_last": message(msg, rend, data),
        "unnamed_then_message": message(msg, data, msg),
        "two_attachments": message(msg, rend, title, data, rend,
                                   record(LVL_ATTACHMENT, ATT_ATTACHTITLE, b"b.txt\0"),
                                   record(LVL_ATTACHMENT, ATT_ATTACHDATA, b"hello there\n")),
        "split_data": message(msg, title, half),
        "message_between": message(msg, title, data, msg,
                                   record(LVL_ATTACHMENT, ATT_ATTACHTITLE, b"c\0"),
                                   record(LVL_ATTACHMENT, ATT_ATTACHDATA, EXE)),
        "body_record": message(msg, record(LVL_MESSAGE, ATT_BODY, b"body text\0"), title, data),
        "zero_length_record": message(msg, record(LVL_ATTACHMENT, 0x8005, b""), title, data),
        "trailing_newline": message(msg, title, data) + b"\n",
        "trailing_junk": message(msg, title, data) + b"\x07junk",
        "truncated_data": message(msg, title, data)[:-100],
        "missing_checksum": message(msg, title, data)[:-2],
        "length_past_end": message(msg, title,
                                   record(LVL_ATTACHMENT, ATT_ATTACHDATA, EXE, length=100_000)),
        "negative_length": message(msg, title, data,
                                   record(LVL_ATTACHMENT, 0x8005, b"x", length=-5)),
        "unknown_level": message(msg, title, data, record(7, 0x8005, b"xx")),
        "level_zero_stop": message(msg, title, data, b"\0", title, data),
        "header_cut_in_tag": message(msg, title, data) + b"\x07ab",
        "header_cut_in_length": message(msg, title, data) + b"\x07abcd12",
        "checksum_cut": message(msg, title, data)[:-1],
        "title_cut": message(msg, title[:-5]),
        "message_length_past_end": message(msg, title, data) + record(
            LVL_MESSAGE, 0x8005, b"xx", length=500),
        "signature_only": SIGNATURE,
        "bad_signature": b"\x78\x9f\x3e\x22\x00\x00" + record(LVL_ATTACHMENT, ATT_ATTACHDATA, EXE),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("tnef")
    paths = []
    for name, data in streams().items():
        path = d / f"{name}.tnef"
        path.write_bytes(data)
        paths.append(path)
    # winmail.dat as a mail attachment
    mail = d / "winmail.eml"
    mail.write_text("From: a@example.com\nContent-Type: multipart/mixed; boundary=B\n\n--B\n"
                    "Content-Type: application/ms-tnef; name=winmail.dat\n"
                    "Content-Transfer-Encoding: base64\n\n"
                    + base64.encodebytes(streams()["named"]).decode() + "--B--\n")
    return [*paths, mail, TESTFILES / "clam.tnef"]


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("db")
    (d / "test.hdb").write_text(CLAM_TEST_FILE_SIG + "\n")
    return [d / "test.hdb"]


@pytest.mark.parametrize("allmatch", [False, True])
def test_tnef_streams_same_verdict_as_clamscan(files, database, allmatch):
    ours = clammail_results(database, files, allmatch=allmatch)
    theirs = clamscan_results(database, files, allmatch=allmatch)
    assert ours[:2] == theirs[:2]
    found = {Path(p).stem for p, names in theirs[1].items() if names}
    assert {"named", "clam", "winmail", "split_data"} <= found
    assert not {"truncated_data", "length_past_end", "signature_only"} & found


def test_tnef_off_with_scan_mail_off(files, database):
    ours = clammail_results(database, files, "--scan-mail=no")
    theirs = clamscan_results(database, files, "--scan-mail=no")
    assert ours[:2] == theirs[:2]
