"""clammail milter inside a real Postfix, swaks as the sending client, delivery to a maildir.

Each test starts a private Postfix (tests/postfix_harness.py) wired with
`smtpd_milters` to a milter, and checks what the sender is told and what
arrives: with clammail's daemon and with ClamAV's clamd as the backend,
and beside clamav-milter 1.4.6 on the same mail.
"""

from __future__ import annotations

import base64
import re
import shutil
import signal

import pytest
from clamd_harness import EICAR, make_root
from milter_harness import backends, start_milter, stop_all, zipped
from postfix_harness import PostfixConfig, start_postfix

pytestmark = [pytest.mark.oracle]


def message(subject: str, body: bytes = b"Hello.\n", extra: bytes = b"") -> bytes:
    return (f"From: sender@example.org\nTo: rcpt@example.com\nSubject: {subject}\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\n").encode() + extra + \
        b"\n" + body


def with_attachment(subject: str, name: str, data: bytes) -> bytes:
    encoded = base64.encodebytes(data)
    return message(subject, extra=b'MIME-Version: 1.0\nContent-Type: multipart/mixed; '
                   b'boundary="b1"\n', body=(
                       b"--b1\nContent-Type: text/plain\n\nSee attached.\n--b1\n"
                       b"Content-Type: application/octet-stream; name=\"" + name.encode() +
                       b"\"\nContent-Transfer-Encoding: base64\n"
                       b"Content-Disposition: attachment; filename=\"" + name.encode() +
                       b"\"\n\n" + encoded + b"--b1--\n"))


CLEAN = with_attachment("clean with attachments", "report.zip", zipped("report.txt", b"fine"))
EICAR_BODY = message("eicar in the body", EICAR + b"\n")
EICAR_ZIP = with_attachment("eicar in a zip", "eicar.zip", zipped("eicar.com", EICAR))


def outcome(result) -> int:
    """The code that decided a swaks session: the DATA reply, or the first refusal before it."""
    if result.data is not None:
        return result.data.code
    return next(reply.code for _, reply in result.replies if reply.code >= 400)


def milter_postfix(scanners, options: dict, name: str, kind: str = "clammail", backend="clammail",
                   main: dict | None = None):
    """A milter on the scanners's daemon (unless options name ClamdSocket) and a Postfix using it."""
    target = scanners.clammail if backend == "clammail" else scanners.clamd
    milter = start_milter(kind, scanners.extra["root"],
                          {"ClamdSocket": f"unix:{target.unix}", "ReportHostname": "mx.test",
                           **options}, name=name)
    settings = {"smtpd_milters": f"unix:{milter.socket}",
                "non_smtpd_milters": f"unix:{milter.socket}",
                "milter_default_action": "tempfail", **(main or {})}
    try:
        postfix = start_postfix(PostfixConfig(main=settings))
    except Exception:
        stop_all(milter)
        raise
    return milter, postfix


@pytest.mark.parametrize("backend", ["clammail", "clamd"])
def test_mail_through_postfix(scanners, backend):
    milter, postfix = milter_postfix(
        scanners, {"OnInfected": "Reject", "RejectMsg": "Virus found: %v", "AddHeader": "Replace"},
        f"e2e-{backend}", backend=backend)
    try:
        clean = postfix.send(CLEAN)
        body = postfix.send(EICAR_BODY)
        zipped_eicar = postfix.send(EICAR_ZIP)
        big = postfix.send(message("thirty megabytes", (b"z" * 76 + b"\n") * 400_000))
        delivered = postfix.wait_delivered(2)
        queue = postfix.queue()
    finally:
        postfix.stop()
        stop_all(milter)
    assert clean.data.code == 250 and big.data.code == 250
    assert (body.data.code, body.data.text) == (
        550, "5.7.1 Virus found: Eicar-Test-Signature.UNOFFICIAL")
    assert (zipped_eicar.data.code, zipped_eicar.data.text) == (
        550, "5.7.1 Virus found: Eicar-Test-Signature.UNOFFICIAL")
    assert len(delivered) == 2 and queue == []
    for copy in delivered:
        assert copy.headers["X-Virus-Status"] == "Clean"
        assert copy.headers["X-Virus-Scanned"].startswith("clammail ")
    assert max(len(d.data) for d in delivered) > 30_000_000


@pytest.mark.parametrize("options, infected_code, delivered_count, held", [
    ({"OnInfected": "Quarantine"}, 250, 1, 1),
    ({"OnInfected": "Blackhole"}, 250, 1, 0),
    ({"OnInfected": "Defer"}, 451, 1, 0),
    ({"OnInfected": "Accept", "AddHeader": "Add"}, 250, 2, 0),
    ({"OnInfected": "Reject", "OnClean": "Reject"}, 550, 0, 0),
])
def test_actions_through_postfix(scanners, options, infected_code, delivered_count, held):
    milter, postfix = milter_postfix(scanners, options, "actions")
    try:
        infected = postfix.send(EICAR_ZIP)
        clean = postfix.send(CLEAN)
        delivered = postfix.wait_delivered(delivered_count) if delivered_count else []
        hold = [m for m in postfix.queue() if m.queue_name == "hold"]
    finally:
        postfix.stop()
        stop_all(milter)
    assert infected.data.code == infected_code
    assert len(delivered) == delivered_count and len(hold) == held
    if options.get("OnClean") == "Reject":
        assert clean.data.code == 550
    if options.get("AddHeader") == "Add":
        statuses = sorted(d.headers["X-Virus-Status"] for d in delivered)
        assert statuses == ["Clean", "Infected (Eicar-Test-Signature.UNOFFICIAL)"]


def test_skips_through_postfix(scanners, tmp_path):
    """LocalNet (swaks comes from 127.0.0.1), an allowed sender, an authenticated user."""
    del tmp_path
    allow = scanners.extra["root"] / "allow-list"
    allow.write_text("From:^<boss@example\\.org>$\n")  # a POSIX basic regex: ? is no operator
    allow.chmod(0o644)
    sasl = _authenticated_login()
    cases = [({"LocalNet": "127.0.0.0/8"}, {}, "sender@example.org"),
             ({"AllowList": str(allow)}, {}, "boss@example.org"),
             ({"SkipAuthenticated": "^alice"}, sasl["main"], "sender@example.org")]
    codes = []
    for options, main, sender in cases:
        milter, postfix = milter_postfix(scanners, {"OnInfected": "Reject", **options}, "skips",
                                         main=main)
        try:
            args = sasl["swaks"] if main else []
            skipped = postfix.send(EICAR_ZIP, sender=sender, swaks_args=args)
            scanned = postfix.send(EICAR_ZIP, sender="other@example.org")
            codes.append((skipped.data.code if skipped.data else skipped.transcript[-500:],
                          scanned.data.code if scanned.data else None))
        finally:
            postfix.stop()
            stop_all(milter)
    assert codes == [(250, 250), (250, 550), (250, 550)], codes


def _authenticated_login() -> dict:
    """A session whose SMTP AUTH login is "alice", as Postfix's XCLIENT LOGIN sets it.

    Postfix passes the login it has for a session -- from AUTH, or from a
    trusted client's XCLIENT LOGIN (XCLIENT_README) -- to milters in the
    {auth_authen} macro; XCLIENT spares the test a SASL database.
    """
    return {"main": {"smtpd_authorized_xclient_hosts": "127.0.0.0/8"},
            "swaks": ["--xclient-login", "alice"]}


def test_same_replies_and_headers_as_clamav_milter(scanners):
    """The same configuration through clamav-milter and clammail milter, both on clamd."""
    options = {"OnInfected": "Reject", "RejectMsg": "Refused: %v", "AddHeader": "Replace"}
    mails = [CLEAN, EICAR_BODY, EICAR_ZIP,
             message("forged status", extra=b"X-Virus-Status: Clean\nX-Virus-Scanned: forged\n"),
             message("eight bit \xe9t\xe9".encode("latin-1").decode("latin-1"),
                     b"caf\xc3\xa9 na\xc3\xafve\n")]
    outcome = {}
    for kind in ("clamav-milter", "clammail"):
        milter, postfix = milter_postfix(scanners, options, f"diff-{kind}", kind=kind, backend="clamd")
        try:
            replies = [(r.data.code, re.sub(r"queued as \w+", "queued as ID", r.data.text))
                       for r in (postfix.send(m) for m in mails)]
            delivered = postfix.wait_delivered(sum(1 for c, _ in replies if c == 250))
            headers = sorted(
                (str(d.headers["Subject"]), d.headers.get_all("X-Virus-Status"),
                 [re.sub(r"^\S+ \S+", "<product>", v)
                  for v in d.headers.get_all("X-Virus-Scanned") or []])
                for d in delivered)
        finally:
            postfix.stop()
            stop_all(milter)
        outcome[kind] = (replies, headers)
    assert outcome["clammail"] == outcome["clamav-milter"]
    assert [code for code, _ in outcome["clammail"][0]] == [250, 550, 550, 250, 250]


def test_backend_faults_through_postfix(scanners):
    """No verdict: the client gets 4xx and nothing is delivered; a dead milter: the same."""
    root = make_root()
    spare = backends(root)
    milter, postfix = milter_postfix(
        scanners, {"ClamdSocket": [f"unix:{spare.clammail.unix}", f"unix:{spare.clamd.unix}"],
               "OnInfected": "Reject", "ReadTimeout": 5}, "faults")
    try:
        first = postfix.send(EICAR_ZIP)
        spare.clammail.proc.send_signal(signal.SIGKILL)  # the first backend dies
        spare.clammail.proc.wait()
        second = postfix.send(EICAR_ZIP)
        third = postfix.send(CLEAN)
        spare.clamd.stop()  # and then the other
        fourth = postfix.send(CLEAN)
        milter.stop(signal.SIGKILL)  # the milter itself dies
        fifth = postfix.send(CLEAN)
        delivered = postfix.wait_delivered(1)
    finally:
        postfix.stop()
        stop_all(milter)
        spare.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert [outcome(r) for r in (first, second, third)] == [550, 550, 250]
    assert outcome(fourth) == 451 and outcome(fifth) == 451
    assert len(delivered) == 1  # only the clean message that had a verdict
