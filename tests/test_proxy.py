"""clammail proxy between an SMTP client and a next hop: actions, quarantine, recipients, faults.

The backends are clamd and clammail's daemon; the next hop is a real SMTP
server that records what it accepts (tests/proxy_harness.py). Postfix on
both sides of the proxy is in test_proxy_postfix.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from clamd_harness import EICAR, free_port
from milter_harness import raw_message, zipped
from proxy_harness import NextHop, send, start_proxy

pytestmark = [pytest.mark.oracle]


@pytest.fixture
def hop():
    h = NextHop()
    yield h
    h.stop()


def proxy_for(scanners, hop, name, backend="clammail", **options):
    target = scanners.clammail if backend == "clammail" else scanners.clamd
    return start_proxy(scanners.extra["root"], {"NextHop": f"127.0.0.1:{hop.port}",
                                            "ClamdSocket": [f"unix:{target.unix}"], **options},
                       name=name)


def headers_and_body(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


@pytest.mark.parametrize("backend", ["clammail", "clamd"])
def test_clean_mail_passes_byte_for_byte_with_headers_added(scanners, hop, backend):
    proxy = proxy_for(scanners, hop, f"clean-{backend}", backend=backend)
    try:
        message = raw_message("clean-attachments")
        sent = send(proxy.port, message)
    finally:
        proxy.stop()
    assert sent.code == 250 and "RECORDED" in sent.text  # the next hop's own reply
    [delivered] = hop.deliveries
    added = delivered.content[:len(delivered.content) - len(message)]
    assert delivered.content.endswith(message)
    assert added.startswith(b"X-Virus-Scanned: clammail ")
    assert b"X-Virus-Status: Clean\r\n" in added
    assert b"Authentication-Results: mx.test;\r\n\tdkim=none\r\n" in added


@pytest.mark.parametrize("action, code", [("Reject", 554), ("Defer", 451), ("Blackhole", 250),
                                          ("Quarantine", 250)])
def test_infected_mail_by_action(scanners, hop, action, code):
    proxy = proxy_for(scanners, hop, f"action-{action}", OnInfected=action)
    try:
        results = [send(proxy.port, raw_message(name)) for name in ("eicar-body", "eicar-zip")]
        clean = send(proxy.port, raw_message("clean"))
        listing = proxy.quarantine("list").stdout
    finally:
        proxy.stop()
    assert [r.code for r in results] == [code, code]
    assert clean.code == 250
    assert len(hop.deliveries) == 1  # only the clean one went on
    if action == "Reject":
        assert "Eicar-Test-Signature.UNOFFICIAL" in results[0].text
    if action == "Quarantine":
        assert listing.count("Eicar-Test-Signature.UNOFFICIAL") == 2
    else:
        assert listing == ""


def test_reject_message_and_subject_tag(scanners, hop):
    proxy = proxy_for(scanners, hop, "tag", OnInfected="Accept", SubjectTag="[VIRUS]")
    try:
        tagged = send(proxy.port, raw_message("eicar-zip"))
    finally:
        proxy.stop()
    proxy2 = proxy_for(scanners, hop, "rejectmsg", RejectMsg="No thanks: %v")
    try:
        refused = send(proxy2.port, raw_message("eicar-zip"))
    finally:
        proxy2.stop()
    assert tagged.code == 250
    head, _ = headers_and_body(hop.deliveries[0].content)
    assert b"Subject: [VIRUS] test" in head
    assert b"X-Virus-Status: Infected (Eicar-Test-Signature.UNOFFICIAL)" in head
    assert (refused.code, refused.text) == (550, "5.7.1 No thanks: Eicar-Test-Signature.UNOFFICIAL")


def test_strip_replaces_the_infected_part_and_keeps_the_rest(scanners, hop):
    from milter_harness import mime
    fields, body = mime([("text/plain", "", b"Two files attached."),
                         ("application/zip", "eicar.zip", zipped("eicar.com", EICAR)),
                         ("application/pdf", "report.pdf", b"%PDF-1.4\n% harmless\n")])
    message = b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n" + body
    proxy = proxy_for(scanners, hop, "strip", OnInfected="Strip")
    try:
        sent = send(proxy.port, message)
    finally:
        proxy.stop()
    assert sent.code == 250
    [delivered] = hop.deliveries
    import email
    parsed = email.message_from_bytes(delivered.content)
    parts = [p for p in parsed.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/plain", "application/pdf"]
    assert parts[0].get_payload(decode=True).strip() == b"Two files attached."
    assert b"removed by clammail" in parts[1].get_payload(decode=True)
    assert b"Eicar-Test-Signature" in parts[1].get_payload(decode=True)
    assert parts[2].get_payload(decode=True) == b"%PDF-1.4\n% harmless\n"
    # What went on is clean for ClamAV's own clamd.
    from clammail.clamd.client import Clamd
    rescan = Clamd(scanners.clamd.unix).instream(delivered.content)
    assert rescan.clean


def test_quarantine_release_delivers_once(scanners, hop):
    proxy = proxy_for(scanners, hop, "release", OnInfected="Quarantine")
    try:
        sent = send(proxy.port, raw_message("eicar-zip"),
                    recipients=("a@example.com", "b@example.com"))
        entry_id = sent.text.rsplit(" ", 1)[-1]
        shown = json.loads(proxy.quarantine("show", entry_id).stdout)
        message = proxy.quarantine("show", entry_id, "--message").stdout
        assert hop.deliveries == []
        first = proxy.quarantine("release", entry_id)
        second = proxy.quarantine("release", entry_id)
        listing = proxy.quarantine("list").stdout
        sent2 = send(proxy.port, raw_message("eicar-body"))
        deleted = proxy.quarantine("delete", sent2.text.rsplit(" ", 1)[-1])
        after = proxy.quarantine("list").stdout
    finally:
        proxy.stop()
    assert shown["envelope"]["rcpt_tos"] == ["a@example.com", "b@example.com"]
    assert shown["signature"] == "Eicar-Test-Signature.UNOFFICIAL"
    assert shown["client"]["helo"] == "client.test"
    assert "eicar.zip" in message
    assert first.returncode == 0, first.stderr
    assert second.returncode == 1  # gone: released once
    assert listing == "" and deleted.returncode == 0 and after == ""
    [delivered] = hop.deliveries
    assert delivered.rcpt_tos == ["a@example.com", "b@example.com"]
    assert delivered.content == raw_message("eicar-zip")


def test_each_recipient_gets_the_next_hops_answer(scanners, hop):
    hop.handler.refuse_rcpt = {"nobody@example.com"}
    proxy = proxy_for(scanners, hop, "recipients")
    try:
        sent = send(proxy.port, raw_message("clean"),
                    recipients=("rcpt@example.com", "nobody@example.com", "other@example.com"))
    finally:
        proxy.stop()
    assert sent.code == 250
    assert sent.refused == {"nobody@example.com": (
        550, "5.1.1 <nobody@example.com>: Recipient address rejected: no such user")}
    assert hop.deliveries[0].rcpt_tos == ["rcpt@example.com", "other@example.com"]


def test_faults_leave_the_message_with_the_sender(scanners, hop, tmp_path):
    # No backend answers: 4xx, nothing delivered.
    dead = proxy_for(scanners, hop, "nobackend", ClamdSocket=[f"tcp:127.0.0.1:{free_port()}"])
    try:
        no_backend = send(dead.port, raw_message("clean"))
    finally:
        dead.stop()
    # The next hop is not there.
    gone = start_proxy(scanners.extra["root"], {"NextHop": f"127.0.0.1:{free_port()}",
                                            "ClamdSocket": [f"unix:{scanners.clammail.unix}"]},
                       name="nohop")
    try:
        no_hop = send(gone.port, raw_message("clean"))
    finally:
        gone.stop()
    # The next hop refuses the message temporarily.
    hop.handler.data_reply = "452 4.3.1 Insufficient system storage"
    busy = proxy_for(scanners, hop, "busyhop")
    try:
        full = send(busy.port, raw_message("clean"))
    finally:
        busy.stop()
    hop.handler.data_reply = "250 2.0.0 Ok: queued as RECORDED"
    # The quarantine's file system is full.
    disk = tmp_path / "tiny"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], check=True)
    try:
        (disk / "filler").write_bytes(b"x" * 12288)
        quarantine = proxy_for(scanners, hop, "fulldisk", OnInfected="Quarantine",
                               QuarantineDirectory=str(disk / "q"))
        try:
            no_room = send(quarantine.port, raw_message("eicar-zip") + b"y" * 20000)
        finally:
            quarantine.stop()
        leftovers = list((disk / "q").iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert (no_backend.code, no_hop.code, full.code, no_room.code) == (451, 451, 452, 451)
    assert hop.deliveries == []
    assert leftovers == []  # nothing half-written


def test_killed_mid_data_delivers_nothing(scanners, hop):
    proxy = proxy_for(scanners, hop, "killed")
    import smtplib
    client = smtplib.SMTP("127.0.0.1", proxy.port, timeout=30)
    client.ehlo("client.test")
    client.mail("sender@example.org")
    client.rcpt("rcpt@example.com")
    client.putcmd("DATA")
    assert client.getreply()[0] == 354
    client.send(raw_message("clean")[:100])
    proxy.stop(signal.SIGKILL)
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        client.send(b"more\r\n.\r\n")
        client.getreply()
    time.sleep(0.5)
    assert hop.deliveries == []


def test_size_limit_and_shutdown(scanners, hop):
    proxy = proxy_for(scanners, hop, "limits", MaxMessageSize="100K")
    try:
        too_big = send(proxy.port, raw_message("clean") + b"z" * 200_000)
        fine = send(proxy.port, raw_message("clean"))
    finally:
        code = proxy.stop()
    assert too_big.code == 552 and fine.code == 250 and code == 0
    assert "SIGTERM caught" in proxy.log.read_text()


# -- DKIM and ARC -------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Test keys and the DNS records that publish them (the proxy's offline resolver)."""
    import base64

    directory = tmp_path_factory.mktemp("keys")
    records = {}
    paths = {}
    for name, (selector, domain) in {"author": ("s1", "example.org"),
                                     "arc": ("arc", "mx.test")}.items():
        pem = directory / f"{name}.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(pem), "2048"], check=True,
                       capture_output=True)
        public = subprocess.run(["openssl", "rsa", "-in", str(pem), "-pubout", "-outform", "DER"],
                                check=True, capture_output=True).stdout
        paths[name] = pem
        records[f"{selector}._domainkey.{domain}"] = \
            "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()
    dns = directory / "dns.json"
    dns.write_text(json.dumps(records))
    for p in directory.iterdir():
        p.chmod(0o644)
    directory.chmod(0o755)
    return paths, dns, records


def signed(message: bytes, key_path) -> bytes:
    import dkim
    signature = dkim.sign(message, b"s1", b"example.org", key_path.read_bytes(),
                          include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    return signature + message


def test_dkim_pass_kept_through_a_tag_only_pass_and_fail_reported(scanners, hop, keys):
    import dkim

    from clammail.proxy.authentication import Resolver
    paths, dns, _ = keys
    resolver = Resolver(str(dns))
    original = signed(raw_message("clean"), paths["author"])
    assert dkim.verify(original, dnsfunc=resolver)  # passes before
    tampered = original.replace(b"nothing to see here", b"something to see here")
    proxy = proxy_for(scanners, hop, "dkim", DNSRecordsFile=str(dns))
    try:
        assert send(proxy.port, original).code == 250
        assert send(proxy.port, tampered).code == 250
    finally:
        proxy.stop()
    passed, failed = (d.content for d in hop.deliveries)
    assert dkim.verify(passed, dnsfunc=resolver)  # and after the proxy added its headers
    assert b"dkim=pass header.d=example.org header.s=s1" in passed
    assert b"dkim=fail header.d=example.org header.s=s1" in failed


def test_stripped_message_carries_an_arc_set_that_verifies(scanners, hop, keys):
    import dkim
    from milter_harness import mime

    from clammail.proxy.authentication import Resolver
    paths, dns, _ = keys
    fields, body = mime([("text/plain", "", b"See the attachment."),
                         ("application/zip", "eicar.zip", zipped("eicar.com", EICAR))])
    fields = [(n, v.replace(b"sender@example.org", b"author@example.org")) for n, v in fields]
    message = signed(b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n" + body,
                     paths["author"])
    proxy = proxy_for(scanners, hop, "arc", DNSRecordsFile=str(dns), OnInfected="Strip",
                      ARCSealKey=str(paths["arc"]), ARCSelector="arc", ARCDomain="mx.test",
                      SubjectTag="[stripped]")
    try:
        assert send(proxy.port, message).code == 250
    finally:
        proxy.stop()
    [delivered] = hop.deliveries
    resolver = Resolver(str(dns))
    assert not dkim.verify(delivered.content, dnsfunc=resolver)  # the change broke DKIM...
    cv, results, comment = dkim.arc_verify(delivered.content, dnsfunc=resolver)
    assert cv == dkim.CV_Pass, (cv, comment)  # ...and ARC vouches for what was verified
    assert b"ARC-Authentication-Results: i=1; mx.test;" in delivered.content
    assert b"dkim=pass header.d=example.org" in delivered.content


def test_outgoing_mail_is_dkim_signed_for_configured_domains(scanners, hop, keys):
    import dkim

    from clammail.proxy.authentication import Resolver
    paths, dns, _ = keys
    proxy = proxy_for(scanners, hop, "sign", DNSRecordsFile=str(dns),
                      DKIMSign=[f"example.org:s1:{paths['author']}"])
    try:
        send(proxy.port, raw_message("clean"), sender="someone@example.org")
        send(proxy.port, raw_message("clean"), sender="someone@elsewhere.test")
    finally:
        proxy.stop()
    ours, theirs = (d.content for d in hop.deliveries)
    assert ours.startswith(b"DKIM-Signature:")
    assert dkim.verify(ours, dnsfunc=Resolver(str(dns)))
    assert not theirs.startswith(b"DKIM-Signature:")
