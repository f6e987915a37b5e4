"""The proxy's next hops: STARTTLS and AUTH, LMTP over a unix socket, XCLIENT to Postfix, metrics.

Next hops are real servers: aiosmtpd with TLS and authentication, an LMTP
server answering per recipient, a private Postfix trusting XCLIENT.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import urllib.request

import pytest
from aiosmtpd.controller import Controller, UnixSocketController
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import AuthResult
from clamd_harness import free_port
from milter_harness import raw_message
from postfix_harness import PostfixConfig, start_postfix
from proxy_harness import RecordingHandler, send, start_proxy

pytestmark = [pytest.mark.oracle]


def proxy_for(scanners, name, **options):
    return start_proxy(scanners.extra["root"], {"ClamdSocket": [f"unix:{scanners.clammail.unix}"],
                                            **options}, name=name)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=nexthop.test"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_starttls_and_auth_to_the_next_hop(scanners, certificate):
    handler = RecordingHandler()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"filter" and auth_data.password == b"s3cret"
        return AuthResult(success=ok)

    port = free_port()
    hop = Controller(handler, hostname="127.0.0.1", port=port, tls_context=certificate,
                     require_starttls=True, auth_required=True, authenticator=authenticator)
    hop.start()
    try:
        good = proxy_for(scanners, "tls-auth", NextHop=f"127.0.0.1:{port}",
                         NextHopStartTLS="Required", NextHopUser="filter",
                         NextHopPassword="s3cret")
        bad = proxy_for(scanners, "tls-badauth", NextHop=f"127.0.0.1:{port}",
                        NextHopStartTLS="Required", NextHopUser="filter",
                        NextHopPassword="wrong", NextHopTimeout=5)
        plain = proxy_for(scanners, "no-tls", NextHop=f"127.0.0.1:{port}")
        try:
            accepted = send(good.port, raw_message("clean"))
            refused_auth = send(bad.port, raw_message("clean"))
            refused_plain = send(plain.port, raw_message("clean"))
        finally:
            for proxy in (good, bad, plain):
                proxy.stop()
    finally:
        hop.stop()
    assert accepted.code == 250 and len(handler.deliveries) == 1
    # No authentication or no TLS: the sender is told to try later, nothing is lost.
    assert refused_auth.code == 451 and refused_plain.code == 451


class PerRecipientLMTP(LMTP):
    """An LMTP server that answers DATA once per recipient (RFC 2033), as real ones do."""


class PerRecipientHandler(RecordingHandler):
    def __init__(self, full: set[str]):
        super().__init__()
        self.full = full

    async def handle_DATA(self, server, session, envelope):
        replies = []
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.full:
                replies.append(f"452 4.2.2 <{rcpt}>: mailbox full")
            else:
                replies.append(f"250 2.0.0 <{rcpt}> delivered")
        await super().handle_DATA(server, session, envelope)
        return "\r\n".join(replies)


class LMTPController(UnixSocketController):
    def factory(self):
        return PerRecipientLMTP(self.handler, **self.SMTP_kwargs)


def lmtp_exchange(port: int, message: bytes, recipients: list[str]) -> list[str]:
    """An LMTP client session (Python's smtplib reads only one DATA answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        stream = sock.makefile("rwb")

        def reply() -> str:
            lines = []
            while True:
                line = stream.readline().decode().rstrip("\r\n")
                lines.append(line)
                if line[3:4] != "-":
                    return "\n".join(lines)

        def command(text: str) -> str:
            stream.write(text.encode() + b"\r\n")
            stream.flush()
            return reply()

        reply()
        command("LHLO client.test")
        command("MAIL FROM:<sender@example.org>")
        for rcpt in recipients:
            command(f"RCPT TO:<{rcpt}>")
        command("DATA")
        stream.write(message.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        stream.flush()
        answers = [reply() for _ in recipients]
        command("QUIT")
        return answers


def test_lmtp_on_both_sides_gives_each_recipient_its_answer(scanners):
    path = scanners.extra["root"] / "lmtp.sock"
    handler = PerRecipientHandler(full={"full@example.com"})
    hop = LMTPController(handler, unix_socket=str(path))
    hop.start()
    port = free_port()
    proxy = proxy_for(scanners, "lmtp", Listen=f"lmtp:127.0.0.1:{port}",
                      NextHop=f"lmtp:unix:{path}")
    try:
        clean = lmtp_exchange(port, raw_message("clean"), ["rcpt@example.com",
                                                           "full@example.com"])
        infected = lmtp_exchange(port, raw_message("eicar-zip"), ["rcpt@example.com",
                                                                  "other@example.com"])
    finally:
        proxy.stop()
        hop.stop()
    assert clean[0].startswith("250 2.0.0 <rcpt@example.com> delivered")
    assert clean[1].startswith("452 4.2.2 <full@example.com>: mailbox full")
    assert [a[:3] for a in infected] == ["554", "554"]  # OnInfected Reject, for each recipient
    assert len(handler.deliveries) == 1


def test_xclient_passed_on_to_postfix(scanners):
    postfix = start_postfix(PostfixConfig(main={
        "smtpd_authorized_xclient_hosts": "127.0.0.0/8"}))
    proxy = proxy_for(scanners, "xclient", NextHop=f"127.0.0.1:{postfix.smtp_port}")
    try:
        with smtplib.SMTP("127.0.0.1", proxy.port, timeout=60) as client:
            client.ehlo("relay.test")
            assert "xclient" in client.esmtp_features
            code, _ = client.docmd("XCLIENT", "NAME=mx.remote.test ADDR=192.0.2.9 HELO=remote")
            assert code == 220
            client.ehlo("remote")
            client.sendmail("sender@example.org", ["rcpt@example.com"], raw_message("clean"))
        postfix.wait_delivered(1)
        log = postfix.maillog()
    finally:
        proxy.stop()
        postfix.stop()
    assert "client=mx.remote.test[192.0.2.9]" in log


def test_proxy_metrics(scanners):
    handler = RecordingHandler()
    port = free_port()
    hop = Controller(handler, hostname="127.0.0.1", port=port)
    hop.start()
    metrics_port = free_port()
    proxy = proxy_for(scanners, "metrics", NextHop=f"127.0.0.1:{port}",
                      MetricsListen=f"127.0.0.1:{metrics_port}", OnInfected="Quarantine")
    try:
        for name in ("clean", "eicar-body", "clean"):
            send(proxy.port, raw_message(name))
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=10).read().decode()
    finally:
        proxy.stop()
        hop.stop()
    assert 'clammail_proxy_messages_total{action="Accept",outcome="clean"} 2.0' in text
    assert 'clammail_proxy_messages_total{action="Quarantine",outcome="infected"} 1.0' in text
    assert "clammail_proxy_scan_seconds_count 3.0" in text
