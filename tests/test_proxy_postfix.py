"""clammail proxy with Postfix on both sides: after the queue (content_filter) and before it.

Postfix hands each message to the proxy over SMTP and takes it back on a
re-injection smtpd (FILTER_README), or passes each client session through
the proxy before queueing (SMTPD_PROXY_README). swaks sends; messages are
counted in the maildirs and the queue: none lost, none duplicated, even
when the proxy, its backend or its next hop fail while mail flows.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import time

import pytest
from clamd_harness import EICAR, free_port
from milter_harness import zipped
from postfix_harness import (
    PostfixConfig,
    after_queue_filter,
    before_queue_proxy,
    start_postfix,
)
from proxy_harness import start_proxy
from test_milter_postfix import CLEAN, EICAR_BODY, EICAR_ZIP, message, with_attachment

pytestmark = [pytest.mark.oracle]


def after_queue(scanners, options: dict, name: str, backend: str = "clammail"):
    """Postfix -> proxy -> Postfix's re-injection port, on fixed free ports."""
    filter_port, reinject_port = free_port(), free_port()
    target = scanners.clammail if backend == "clammail" else scanners.clamd
    proxy = start_proxy(scanners.extra["root"], {
        "Listen": f"127.0.0.1:{filter_port}", "NextHop": f"127.0.0.1:{reinject_port}",
        "ClamdSocket": [f"unix:{target.unix}"], **options}, name=name)
    try:
        postfix = start_postfix(after_queue_filter(filter_port, reinject_port=reinject_port))
    except Exception:
        proxy.stop()
        raise
    return proxy, postfix


@pytest.mark.parametrize("backend", ["clammail", "clamd"])
def test_after_queue(scanners, backend):
    proxy, postfix = after_queue(scanners, {"OnInfected": "Blackhole", "AddHeader": "Replace"},
                                 f"aq-{backend}", backend)
    try:
        sent = [postfix.send(m) for m in (CLEAN, EICAR_BODY, EICAR_ZIP)]
        delivered = postfix.wait_delivered(1)
        time.sleep(1)  # the two infected ones had their chance to arrive
        delivered = postfix.delivered()
        queue = postfix.queue()
        log = proxy.log.read_text()
        maillog = postfix.maillog()
    finally:
        postfix.stop()
        proxy.stop()
    assert [s.data.code for s in sent] == [250, 250, 250]  # accepted into the queue
    [copy] = delivered
    assert queue == []
    # Byte for byte as sent, apart from the headers the proxy put on top of
    # the first smtpd's Received line.
    as_sent = copy.as_sent()
    assert as_sent.endswith(CLEAN)
    added = as_sent[:len(as_sent) - len(CLEAN)]
    assert [line.split(b":")[0] for line in added.splitlines() if line[:1] not in b" \t"] == [
        b"X-Virus-Scanned", b"X-Virus-Status", b"Authentication-Results", b"Received"]
    assert log.count("verdict=infected") == 2 and "action=Blackhole" in log
    # XFORWARD: the proxy passed the original client and queue id on, so the
    # re-injection smtpd logs them.
    first_id = sent[0].queue_id
    assert re.search(rf"client=localhost\[127\.0\.0\.1\], orig_queue_id={first_id}, "
                     r"orig_client=localhost\[127\.0\.0\.1\]", maillog), maillog


def test_after_queue_quarantine_release_delivers_once(scanners):
    proxy, postfix = after_queue(scanners, {"OnInfected": "Quarantine"}, "aq-quarantine")
    try:
        sent = postfix.send(EICAR_ZIP, recipients=["rcpt@example.com", "rcpt2@example.com"])
        deadline = time.monotonic() + 30
        while not proxy.quarantine("list").stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        [line] = proxy.quarantine("list").stdout.splitlines()
        entry_id = line.split()[0]
        assert postfix.delivered() == []
        released = proxy.quarantine("release", entry_id)
        again = proxy.quarantine("release", entry_id)
        delivered = postfix.wait_delivered(2)
        time.sleep(1)
        delivered = postfix.delivered()
    finally:
        postfix.stop()
        proxy.stop()
    assert sent.data.code == 250 and released.returncode == 0, released.stderr
    assert again.returncode == 1
    assert sorted(d.mailbox for d in delivered) == ["rcpt2@example.com", "rcpt@example.com"]
    assert all(EICAR_ZIP.split(b"\n\n", 1)[1] in d.data for d in delivered)


def test_before_queue_rejects_during_the_dialogue(scanners):
    proxy_port, reinject_port = free_port(), free_port()
    proxy = start_proxy(scanners.extra["root"], {
        "Listen": f"127.0.0.1:{proxy_port}", "NextHop": f"127.0.0.1:{reinject_port}",
        "ClamdSocket": [f"unix:{scanners.clammail.unix}"], "OnInfected": "Reject",
        "RejectMsg": "Not with %v"}, name="bq")
    postfix = start_postfix(before_queue_proxy(proxy_port, reinject_port=reinject_port))
    try:
        clean = postfix.send(CLEAN, recipients=["rcpt@example.com", "nosuchuser@example.com"])
        infected = postfix.send(EICAR_BODY)
        delivered = postfix.wait_delivered(1)
        queue = postfix.queue()
    finally:
        postfix.stop()
        proxy.stop()
    assert clean.data.code == 250
    # The unknown recipient was refused by the next hop, through the proxy.
    codes = dict((address, reply.code) for address, reply in clean.rcpt)
    assert codes == {"rcpt@example.com": 250, "nosuchuser@example.com": 550}
    assert (infected.data.code, infected.data.text) == (
        550, "5.7.1 Not with Eicar-Test-Signature.UNOFFICIAL")
    assert len(delivered) == 1 and queue == []


def test_faults_while_mail_flows_lose_and_duplicate_nothing(scanners):
    """Kill -9 the proxy mid-DATA, stop its backend, stop its next hop, fill its quarantine
    disk; then repair everything: each message is delivered once or quarantined."""
    root = scanners.extra["root"]
    filter_port, hop_port = free_port(), free_port()
    next_hop = start_postfix(PostfixConfig(smtp_port=hop_port))
    front = start_postfix(after_queue_filter(filter_port))
    disk = root / "qdisk"
    disk.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    options = {"Listen": f"127.0.0.1:{filter_port}", "NextHop": f"127.0.0.1:{hop_port}",
               "ClamdSocket": [f"unix:{scanners.clammail.unix}"], "OnInfected": "Quarantine",
               "QuarantineDirectory": str(disk / "q"), "ReadTimeout": 10}
    proxy = start_proxy(root, options, name="faults")
    sent = collections.Counter()
    infected_ids = set()

    def send(n: int, infected: bool = False, size: int = 0) -> None:
        subject = f"fault {n}"
        body = (b"x" * 70 + b"\n") * (size // 71) if size else b"hello\n"
        mail = with_attachment(subject, "e.zip", zipped("e.com", EICAR)) if infected \
            else message(subject, body)
        assert front.send(mail).data.code == 250
        sent[f"<fault.{n}@example.org>"] += 1
        if infected:
            infected_ids.add(f"<fault.{n}@example.org>")

    try:
        for n in range(5):
            send(n, infected=(n == 3))
        # 1. The proxy is killed in the middle of DATA of a large message.
        send(10, size=20_000_000)
        time.sleep(0.3)
        proxy.stop(signal.SIGKILL)
        proxy = start_proxy(root, options, name="faults")
        # 2. The backend stops: messages get 451 from the proxy and wait in the queue.
        scanners.clammail.proc.send_signal(signal.SIGSTOP)
        proxy.stop()
        proxy = start_proxy(root, {**options, "ReadTimeout": 2}, name="faults")
        for n in range(20, 23):
            send(n)
        time.sleep(4)
        scanners.clammail.proc.send_signal(signal.SIGCONT)
        # 3. The next hop stops (what it delivered so far is counted).
        delivered_before = next_hop.delivered()
        next_hop.stop()
        for n in range(30, 33):
            send(n)
        time.sleep(2)
        # 4. The quarantine's disk fills up.
        (disk / "filler").write_bytes(b"f" * 200_000)
        for n in range(40, 42):
            send(n, infected=True)
        time.sleep(3)
        # Repair: free the disk, bring a next hop back on the same port.
        (disk / "filler").unlink()
        next_hop = start_postfix(PostfixConfig(smtp_port=hop_port))
        for _ in range(30):
            front.flush()
            delivered = delivered_before + next_hop.delivered()
            quarantined = proxy.quarantine("list").stdout.splitlines()
            if len(delivered) + len(quarantined) >= len(sent) and not front.queue():
                break
            time.sleep(2)
        front_queue = front.queue()
        front_log = front.maillog()
    finally:
        front.stop()
        next_hop.stop()
        proxy.stop()
        scanners.clammail.proc.send_signal(signal.SIGCONT)
        subprocess.run(["umount", "-l", str(disk)], check=False)
    ids = collections.Counter(d.headers["Message-ID"] for d in delivered)
    assert front_queue == []
    assert all(count == 1 for count in ids.values()), ids  # none duplicated
    assert set(ids) == set(sent) - infected_ids  # every clean one delivered
    assert len(quarantined) == len(infected_ids)  # every infected one kept, once
    # The faults happened: the front Postfix had to defer and retry.
    assert re.search(r"status=deferred", front_log)
