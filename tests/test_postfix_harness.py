"""The private Postfix harness proven on its own (tests/postfix_harness.py).

Every test runs Debian's Postfix and swaks for real: what the milter, proxy
and package tests will rely on -- mail delivered unchanged, big mail,
several instances side by side, a dead content filter keeping mail queued,
the filter recipes, and a stop that leaves nothing behind.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until
from postfix_harness import (
    SYSTEM_CONFIG_DIR,
    PostfixConfig,
    PostfixError,
    Reply,
    after_queue_filter,
    before_queue_proxy,
    free_port,
    processes_with_config,
    smtp_data,
    start_postfix,
    system_alternate_config_directories,
)

# Headers, 8-bit text, a tab, lines starting with dots (one only a dot), a
# "From " line in the body: all must arrive as sent.
PLAIN_MESSAGE = (
    b"From: Sender <sender@example.org>\n"
    b"To: Recipient <rcpt@example.com>\n"
    b"Subject: harness check \xc3\xa9t\xc3\xa9\n"
    b"Date: Mon, 01 Jan 2024 10:00:00 +0000\n"
    b"Message-ID: <harness-plain@example.org>\n"
    b"X-Folded: first part\n"
    b"\tsecond part\n"
    b"\n"
    b"First line\n"
    b".a line starting with a dot\n"
    b".\n"
    b"..two dots\n"
    b"From the body, not an mbox separator\n"
    b"tab\there, 8-bit \xe2\x82\xac\n"
)


def message(subject: str, body: bytes = b"body\n") -> bytes:
    return (f"From: sender@example.org\nTo: rcpt@example.com\nSubject: {subject}\n"
            f"Message-ID: <{subject.replace(' ', '-')}@example.org>\n\n").encode() + body


def test_plain_message_delivered_byte_for_byte(postfix):
    result = postfix.send(PLAIN_MESSAGE, recipients=["rcpt@example.com", "other@example.net"])

    assert result.data is not None and result.data.code == 250, result.transcript
    assert [(address, reply.code) for address, reply in result.rcpt] == [
        ("rcpt@example.com", 250), ("other@example.net", 250)]
    assert re.search(rf"{result.queue_id}: client=\S*\[127\.0\.0\.1\]", postfix.maillog())
    delivered = postfix.wait_delivered(2)
    assert sorted(d.mailbox for d in delivered) == ["other@example.net", "rcpt@example.com"]
    for copy in delivered:
        assert copy.as_sent() == PLAIN_MESSAGE
        # What as_sent() removed is exactly the trace Postfix prepends.
        added = copy.data[: len(copy.data) - len(PLAIN_MESSAGE)]
        names = [line.split(b":")[0] for line in added.splitlines() if not line[:1].isspace()]
        assert names == [b"Return-Path", b"X-Original-To", b"Delivered-To", b"Received"]
        assert copy.headers["Delivered-To"] == copy.mailbox
        assert copy.headers["Message-ID"] == "<harness-plain@example.org>"
    assert postfix.queue() == []


def test_replies_per_recipient_and_refusals(postfix):
    result = postfix.send(message("per recipient"), recipients=[
        "rcpt@example.com", "nobody-here@example.com", "someone@elsewhere.invalid"])

    codes = {address: reply.code for address, reply in result.rcpt}
    assert codes == {"rcpt@example.com": 250, "nobody-here@example.com": 550,
                     "someone@elsewhere.invalid": 550}
    texts = dict(result.rcpt)
    assert "User unknown" in texts["nobody-here@example.com"].text
    # Nothing leaves the machine: other domains are refused at RCPT.
    assert "outside delivery is off" in texts["someone@elsewhere.invalid"].text
    assert result.accepted
    delivered = postfix.wait_delivered(1)
    assert [(d.mailbox, d.headers["Subject"]) for d in delivered] == [
        ("rcpt@example.com", "per recipient")]


def test_unknown_only_recipient_means_no_data(postfix):
    result = postfix.send(message("nobody"), recipients=["nobody-here@example.com"])
    assert result.data is None
    assert result.rcpt[0][1].code == 550
    assert result.reply_to("DATA") is None
    assert result.exit_code != 0


def test_message_size_limit_is_enforced_and_raisable(postfix_factory):
    small = postfix_factory(PostfixConfig(message_size_limit=100_000))
    big_body = b"x" * 76 + b"\n"
    result = small.send(message("too big", big_body * 3000))  # about 230 kB
    assert result.data is not None and result.data.code == 552, result.transcript
    assert "SIZE 100000" in result.reply_to("EHLO").text


def test_30_mb_message_delivered(postfix):
    payload = base64.encodebytes(os.urandom(22_500_000))
    big = message("thirty megabytes") + payload
    assert len(big) > 30_000_000

    result = postfix.send(big)

    assert result.accepted, result.transcript
    delivered = postfix.wait_delivered(1, timeout=120)
    assert hashlib.sha256(delivered[0].as_sent()).digest() == hashlib.sha256(big).digest()


def test_two_instances_at_once(postfix_factory):
    first = postfix_factory()
    second = postfix_factory()
    assert first.smtp_port != second.smtp_port
    assert first.root != second.root

    assert first.send(message("to the first")).accepted
    assert second.send(message("to the second")).accepted
    assert first.send(message("first again")).accepted

    assert [d.headers["Subject"] for d in first.wait_delivered(2)] == [
        "to the first", "first again"]
    assert [d.headers["Subject"] for d in second.wait_delivered(1)] == ["to the second"]
    assert set(first.processes()).isdisjoint(second.processes())


def test_dead_content_filter_leaves_mail_deferred_then_delivers_it(postfix_factory):
    filter_port = free_port()
    gateway = postfix_factory(after_queue_filter(filter_port))

    result = gateway.send(PLAIN_MESSAGE)

    assert result.accepted, result.transcript
    deferred = gateway.wait_queued(1, "deferred")
    assert deferred[0].queue_id == result.queue_id
    assert [r.address for r in deferred[0].recipients] == ["rcpt@example.com"]
    assert "Connection refused" in deferred[0].recipients[0].delay_reason
    assert gateway.delivered() == []

    # The filter comes up (here: a second Postfix on that port); after a
    # flush the message goes through it, once.
    next_hop = postfix_factory(PostfixConfig(smtp_port=filter_port))
    gateway.flush()
    delivered = next_hop.wait_delivered(1)
    assert delivered[0].as_sent() == PLAIN_MESSAGE
    assert wait_until(lambda: gateway.queue() == [])
    assert gateway.delivered() == []
    assert len(next_hop.delivered()) == 1


def test_after_queue_filter_recipe_reinjects(postfix_factory):
    # The do-nothing filter: the gateway's own re-injection port.
    reinject_port = free_port()
    gateway = postfix_factory(after_queue_filter(reinject_port, reinject_port=reinject_port))
    assert gateway.port("reinject") == reinject_port

    assert gateway.send(PLAIN_MESSAGE).accepted
    delivered = gateway.wait_delivered(1)
    assert delivered[0].as_sent() == PLAIN_MESSAGE
    # One Received from the first smtpd, one from the re-injection smtpd.
    assert len(delivered[0].headers.get_all("Received")) == 2
    log = gateway.maillog()
    assert f"relay=127.0.0.1[127.0.0.1]:{reinject_port}" in log


def test_before_queue_proxy_recipe(postfix_factory):
    # smtpd_proxy_filter pointed straight at the re-injection smtpd: the
    # client gets the second smtpd's replies, relayed by the first.
    reinject_port = free_port()
    gateway = postfix_factory(before_queue_proxy(reinject_port, reinject_port=reinject_port))

    result = gateway.send(PLAIN_MESSAGE)

    assert result.accepted, result.transcript
    assert gateway.wait_delivered(1)[0].as_sent() == PLAIN_MESSAGE
    assert "proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as" in gateway.maillog()


def test_milter_settings_reach_smtpd(postfix_factory):
    # A milter nobody serves, with milter_default_action = tempfail: the
    # client is told to come back later, and nothing is queued.
    dead = free_port()
    gateway = postfix_factory(PostfixConfig(main={
        "smtpd_milters": f"inet:127.0.0.1:{dead}", "milter_default_action": "tempfail"}))

    result = gateway.send(message("milter down"))

    assert not result.accepted
    assert result.reply_to("MAIL FROM") == Reply(451, "4.7.1 Service unavailable - try again later")
    assert f"connect to Milter service inet:127.0.0.1:{dead}" in gateway.maillog()
    assert gateway.queue() == [] and gateway.delivered() == []


def test_sendmail_submission(postfix):
    postfix.sendmail(message("via sendmail"), recipients=["rcpt2@example.com"])
    delivered = postfix.wait_delivered(1, "rcpt2@example.com")
    assert delivered[0].headers["Subject"] == "via sendmail"
    assert "postfix/pickup" in postfix.maillog()


def test_clean_stop_leaves_no_processes(postfix_factory):
    instance = postfix_factory()
    assert instance.send(message("before stop")).accepted
    instance.wait_delivered(1)
    running = instance.processes()
    master = instance.master_pid()
    assert master in running
    assert len(running) > 3  # master, qmgr, pickup, postlogd, smtpd, ...
    config_dir, root = instance.config_dir, instance.root

    instance.stop()

    assert processes_with_config(config_dir) == []
    for pid in running:
        assert not Path(f"/proc/{pid}").exists() or _not_same_process(pid, config_dir)
    assert not root.exists()


def test_config_dir_listed_for_non_root_tools(postfix):
    main_cf = SYSTEM_CONFIG_DIR / "main.cf"
    if main_cf.exists():
        assert str(postfix.config_dir) in system_alternate_config_directories()
        # What the listing is for: postqueue as an ordinary user.
        proc = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c",
                               f"postqueue -c {postfix.config_dir} -p"],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "Mail queue is empty" in proc.stdout
    else:
        # Postfix installed with "No configuration": the harness must not
        # create a main.cf (that would start the system Postfix at boot).
        assert postfix.send(message("no system main.cf")).accepted
        assert not main_cf.exists()


def test_orphaned_instance_is_reaped(postfix_factory):
    # A test run killed with SIGKILL leaves its Postfix running; the next
    # start ends it, and only it.
    survivor = postfix_factory()
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from postfix_harness import start_postfix;"
        "p = start_postfix(); print(p.config_dir, p.root, flush=True); time.sleep(600)"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent)],
                             stdout=subprocess.PIPE, text=True)
    try:
        orphan_config, orphan_root = map(Path, child.stdout.readline().split())
        orphan_pids = processes_with_config(orphan_config)
        assert orphan_pids
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert orphan_root.exists() and processes_with_config(orphan_config) == orphan_pids

    newcomer = postfix_factory()

    assert set(orphan_pids).isdisjoint(processes_with_config(orphan_config))
    assert not orphan_root.exists()
    assert survivor.send(message("survivor")).accepted
    assert newcomer.send(message("newcomer")).accepted
    assert survivor.wait_delivered(1)[0].headers["Subject"] == "survivor"
    assert newcomer.wait_delivered(1)[0].headers["Subject"] == "newcomer"


def test_smtp_data_framing():
    assert smtp_data(b"a\n.b\n") == b"a\r\n..b\r\n."
    assert smtp_data(b"a\r\nb") == b"a\r\nb\r\n."
    assert smtp_data(b"") == b"."


def test_start_refuses_a_port_another_program_listens_on(postfix, tmp_path):
    # Postfix itself would bind it (SO_REUSEPORT) and share the connections.
    with pytest.raises(PostfixError) as failure:
        start_postfix(PostfixConfig(smtp_port=postfix.smtp_port), base_dir=tmp_path)
    assert f"port(s) [{postfix.smtp_port}] taken by pid" in str(failure.value)
    assert list(tmp_path.iterdir()) == []  # nothing left of the failed instance
    assert postfix.send(message("still served")).accepted
    assert postfix.wait_delivered(1)[0].headers["Subject"] == "still served"


# -- helpers


def _not_same_process(pid: int, config_dir: Path) -> bool:
    """A pid reused since: it no longer names the instance's config."""
    return pid not in processes_with_config(config_dir)
