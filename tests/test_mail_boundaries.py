"""Malformed MIME boundaries that ClamAV releases after 1.4.6 handle.

In each mail below the attachment's MD5 is in an .hdb. clamscan 1.4.6 loses
the multipart structure and does not find it; newer ClamAV (and clammail)
do. Each test checks both sides, so the difference stays the documented
one: if clamscan starts finding these, or clammail stops, a test fails.
The same mail with well-formed headers is found by both.
"""

from __future__ import annotations

import base64

import archive_builders as B
import pytest

pytestmark = pytest.mark.oracle


def _attachment(tag: str) -> bytes:
    return b"".join(b"%s attachment line %03d\n" % (tag.encode(), i) for i in range(40))


def _mail(tag: str, headers: bytes) -> bytes:
    return (b"From: a@example.com\nTo: b@example.com\nSubject: " + tag.encode()
            + b"\nMIME-Version: 1.0\n" + headers
            + b"\n\nThis is a multi-part message.\n--BBB\nContent-Type: text/plain\n\nhello\n"
            b"--BBB\nContent-Type: application/octet-stream; name=\"a.bin\"\n"
            b"Content-Transfer-Encoding: base64\n"
            b"Content-Disposition: attachment; filename=\"a.bin\"\n\n"
            + base64.encodebytes(_attachment(tag)) + b"--BBB--\n")


# Found by clammail, missed by clamscan 1.4.6.
MALFORMED = {
    "two-boundaries": b'Content-Type: multipart/mixed; boundary="AAA"; boundary="BBB"',
    "two-boundaries-unquoted": b"Content-Type: multipart/mixed; boundary=AAA; boundary=BBB",
    "two-content-types": (b'Content-Type: multipart/mixed; boundary="AAA"\n'
                          b'Content-Type: multipart/mixed; boundary="BBB"'),
    "semicolon": b"Content-Type: multipart/mixed; boundary=BBB;",
    "semicolon-quoted": b'Content-Type: multipart/mixed; boundary="BBB";',
    "semicolon-space": b"Content-Type: multipart/mixed; boundary=BBB ;",
    "disposition-boundary": (b'Content-Disposition: inline; boundary="AAA"\n'
                             b'Content-Type: multipart/mixed; boundary="BBB"'),
}
# Found by both.
WELL_FORMED = {
    "plain": b'Content-Type: multipart/mixed; boundary="BBB"',
    "semicolon-then-parameter": b"Content-Type: multipart/mixed; boundary=BBB; charset=us-ascii",
    "semicolon-then-header": b'Content-Type: multipart/mixed; boundary="BBB";\nX-Other: 1',
    "text-then-multipart": b'Content-Type: text/plain\nContent-Type: multipart/mixed; boundary="BBB"',
    "disposition-after": (b'Content-Type: multipart/mixed; boundary="BBB"\n'
                          b'Content-Disposition: inline; boundary="AAA"'),
    "boundary-only-in-disposition": (b"Content-Type: multipart/mixed\n"
                                     b'Content-Disposition: inline; boundary="BBB"'),
}


def test_malformed_boundaries(tmp_path):
    cases = {**MALFORMED, **WELL_FORMED}
    files = {f"{name}.eml": _mail(name, headers) for name, headers in cases.items()}
    sigs = [B.hdb_line(_attachment(name), f"Attachment.{name}") for name in cases]
    theirs, ours = B.run_both(tmp_path, files, sigs)
    for name in cases:
        found = [f"Attachment.{name}.UNOFFICIAL"]
        assert ours[f"{name}.eml"] == found, name
        assert theirs[f"{name}.eml"] == ([] if name in MALFORMED else found), name


def test_the_last_content_type_boundary_wins():
    from clammail.unpack.mime_message import Message

    m = Message()
    m.add_arguments(b'boundary="AAA"')
    m.add_arguments(b'boundary="BBB"')
    assert m.find_argument(b"boundary") == b"AAA"  # libclamav 1.4.6
    assert m.find_last_argument(b"boundary") == b"BBB"
    assert m.boundary() == b"AAA"  # not from a Content-Type header: 1.4.6's choice
    m.content_type_boundary = b"BBB"
    assert m.boundary() == b"BBB"
