"""The milter as a service: configuration errors, bad input, signals, metrics, detaching.

Configuration errors are compared with what clamav-milter 1.4.6 prints for
the same file; bad input (100 000 headers, NUL and 8-bit bytes, a body
without line ends, 30 MB) must end with a verdict and bounded memory.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import time
import urllib.request

import pytest
from clamd_harness import EICAR, REPO, free_port
from conftest import clammail_cli, need_program
from milter_client import MilterClosed
from milter_harness import MESSAGES, headers, start_milter, stop_all, write_conf

pytestmark = [pytest.mark.oracle]

SENDER = "<sender@example.org>"
RCPT = ["<rcpt@example.com>"]


# -- configuration -------------------------------------------------------------

BAD_LINES = [
    "FooBar yes",
    "OnInfected Explode",
    "OnFail Blackhole",
    "AddHeader Maybe",
    "ReadTimeout soon",
    "MaxFileSize 10X",
    "SupportMultipleRecipients perhaps",
    "ClamdSocket",
    "MilterSocket \"/tmp/x",
]


def clamav_milter_says(conf) -> str:
    proc = subprocess.run([need_program("clamav-milter"), "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("line", BAD_LINES)
def test_config_errors_say_what_clamav_milter_says(tmp_path, line):
    conf = tmp_path / "clamav-milter.conf"
    conf.write_text(f"MilterSocket unix:{tmp_path}/m.sock\nClamdSocket tcp:127.0.0.1\n"
                    f"{line}\nForeground yes\n")
    oracle = clamav_milter_says(conf)
    reason = next(m.group(1) for m in re.finditer(r"ERROR: (.*)", oracle))
    proc = clammail_cli("milter", "-c", str(conf), timeout=60)
    assert proc.returncode == 1
    core = reason.replace(f"Parse error at {conf}:3: ", "Parse error: ").replace(
        f" at {conf}:3", "")
    assert core in proc.stderr, (oracle, proc.stderr)
    assert f"{conf}:3" in proc.stderr  # and where: the file and the line
    checked = clammail_cli("config", "-c", str(conf))
    assert checked.returncode == 1 and core in checked.stderr


@pytest.mark.parametrize("options, message", [
    ({"MilterSocket": None}, "Please configure the MilterSocket directive"),
    ({"ClamdSocket": None}, "No ClamdSocket specified"),
    ({"ClamdSocket": "udp:x"}, "Failed to parse ClamdSocket directive 'udp:x'"),
    ({"ClamdSocket": "unix:relative"}, "Unix clamd socket must be an absolute path"),
    ({"RejectMsg": "%v and %v"}, "%v may appear at most once in RejectMsg"),
    ({"LocalNet": "192.0.2.0/33"}, "Bad netmask '/33' for LocalNet 192.0.2.0"),
    ({"AllowList": "/nonexistent/allow"}, "Cannot open allow list file '/nonexistent/allow'"),
    ({"LogFile": "relative.log"}, "LogFile requires full path."),
    ({"LogClean": "Verbose"}, "Invalid setting Verbose for option LogClean"),
])
def test_semantic_errors_as_clamav_milter(tmp_path, options, message):
    conf = tmp_path / "clamav-milter.conf"
    base = {"MilterSocket": f"unix:{tmp_path}/m.sock", "ClamdSocket": "tcp:127.0.0.1",
            "Foreground": "yes", "OnInfected": "Reject"}
    write_conf(conf, {**base, **options})
    oracle = clamav_milter_says(conf)
    assert message in oracle
    proc = clammail_cli("milter", "-c", str(conf), timeout=60)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr


def test_yaml_milter_section(tmp_path, scanners):
    sock = tmp_path / "m.sock"
    conf = tmp_path / "clammail.yaml"
    conf.write_text(f"milter:\n  MilterSocket: unix:{sock}\n  ClamdSocket:\n"
                    f"    - unix:{scanners.clamd.unix}\n  OnInfected: Reject\n"
                    f"  MaxFileSize: 10M\n  AddHeader: Add\n  Foreground: yes\n"
                    f"  LogFile: {tmp_path}/m.log\n")
    assert clammail_cli("config", "-c", str(conf)).returncode == 0
    proc = subprocess.Popen([*clammail_args(), "milter", "-c", str(conf)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_socket(sock)
        from milter_client import MilterClient
        with MilterClient(str(sock)) as client:
            client.connect()
            hdrs, body = MESSAGES["eicar-body"]
            assert client.message(SENDER, RCPT, hdrs, body).action == "reject"
    finally:
        proc.terminate()
        proc.wait(30)
    bad = tmp_path / "bad.yaml"
    bad.write_text("milter:\n  MilterSocket: unix:/tmp/x\n  OnInfected: Maybe\n")
    checked = clammail_cli("config", "-c", str(bad))
    assert checked.returncode == 1
    assert f"Incorrect argument format for option OnInfected at {bad}:3" in checked.stderr


def clammail_args() -> list[str]:
    import sys
    return [sys.executable, "-m", "clammail"]


def _wait_socket(path, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


# -- bad input -------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])


def test_hostile_messages_get_a_verdict_with_bounded_memory(scanners):
    milter = start_milter("clammail", scanners.extra["root"],
                          {"ClamdSocket": f"unix:{scanners.clammail.unix}", "OnInfected": "Reject",
                           "AddHeader": "Replace", "MaxFileSize": "25M"}, name="hostile")
    try:
        with milter.client(timeout=300) as client:
            client.connect()
            results = {}
            many = [(b"X-Filler-%d" % i, b"value %d" % i) for i in range(100_000)]
            results["100k-headers"] = client.message(SENDER, RCPT, many, EICAR + b"\r\n")
            nul = headers(extra=[(b"X-Bin", b"a\x00b\xff\xfe8-bit \xe9t\xe9")])
            results["nul-8bit"] = client.message(SENDER, RCPT, nul, b"caf\xe9 \x00\r\n" + EICAR)
            results["no-line-ends"] = client.message(SENDER, RCPT, headers(),
                                                     b"A" * 3_000_000 + EICAR)
            big = (b"y" * 998 + b"\r\n") * 30_000  # 30 MB: past MaxFileSize
            results["30MB"] = client.message(SENDER, RCPT, headers(), big)
            results["30MB-eicar-at-end"] = client.message(SENDER, RCPT, headers(), big + EICAR)
        peak = _rss_kb(milter.proc.pid)
    finally:
        stop_all(milter)
    assert results["100k-headers"].action == "reject"
    assert results["nul-8bit"].action == "reject"
    assert results["no-line-ends"].action == "reject"
    # Past MaxFileSize only the first 25 MB are scanned, as clamav-milter does.
    assert results["30MB"].action == "accept"
    assert results["30MB-eicar-at-end"].action == "accept"
    # 100 000 headers and 30 MB went through a milter that stayed small.
    assert peak < 150_000, f"peak RSS {peak} kB"


def test_oversized_message_as_clamav_milter(scanners):
    """MaxFileSize: the first bytes are scanned and the rest ignored, by both milters."""
    root = scanners.extra["root"]
    options = {"ClamdSocket": f"unix:{scanners.clamd.unix}", "OnInfected": "Reject",
               "MaxFileSize": "1M", "AddHeader": "Replace", "ReportHostname": "mx"}
    theirs = start_milter("clamav-milter", root, options, name="maxsize-theirs")
    ours = start_milter("clammail", root, options, name="maxsize-ours")
    bodies = {"early": EICAR + b"\r\n" + b"z" * 2_000_000,
              "late": b"z" * 2_000_000 + b"\r\n" + EICAR}
    try:
        answers = []
        for milter in (theirs, ours):
            with milter.client() as client:
                client.connect()
                answers.append({k: client.message(SENDER, RCPT, headers(), b).action
                                for k, b in bodies.items()})
    finally:
        stop_all(theirs, ours)
    assert answers[1] == answers[0] == {"early": "reject", "late": "accept"}


# -- signals and shutdown ------------------------------------------------------


def test_sighup_reopens_the_log_and_sigterm_lets_a_message_finish(scanners, tmp_path):
    milter = start_milter("clammail", scanners.extra["root"],
                          {"ClamdSocket": f"unix:{scanners.clammail.unix}",
                           "OnInfected": "Reject"}, name="signals")
    try:
        moved = milter.log.with_name("milter.log.1")
        milter.log.rename(moved)
        milter.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not milter.log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "re-opening log file" in milter.log.read_text()
        with milter.client() as client:
            client.connect()
            hdrs, body = MESSAGES["eicar-zip"]

            def terminate_midway(chunk: int) -> None:
                if chunk == 0:
                    milter.signal(signal.SIGTERM)
                    time.sleep(0.5)  # the stop is under way while the message is still open

            result = client.message(SENDER, RCPT, hdrs, body * 3, after_chunk=terminate_midway)
            # The message in flight got its verdict; the next one is deferred,
            # or finds the milter gone (the MTA then applies its default action).
            try:
                late = client.message(SENDER, RCPT, *MESSAGES["clean"])
            except MilterClosed:
                late = None
        assert milter.wait(30) == 0
    finally:
        stop_all(milter)
    assert result.action == "reject"
    assert late is None or late.action in ("tempfail", "replycode")
    assert "SIGTERM caught" in milter.log.read_text()
    assert not os.path.exists(milter.socket)


# -- metrics -----------------------------------------------------------------------


def test_metrics_endpoint(scanners):
    port = free_port()
    milter = start_milter("clammail", scanners.extra["root"],
                          {"ClamdSocket": f"unix:{scanners.clammail.unix}", "OnInfected": "Reject",
                           "MetricsListen": f"127.0.0.1:{port}"}, name="metrics")
    try:
        for name in ("clean", "eicar-body", "eicar-zip"):
            with milter.client() as client:
                client.connect()
                client.message(SENDER, RCPT, *MESSAGES[name])
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        stop_all(milter)
    assert 'clammail_milter_messages_total{action="Reject",outcome="infected"} 2.0' in text
    assert 'clammail_milter_messages_total{action="Accept",outcome="clean"} 1.0' in text
    assert "clammail_milter_scan_seconds_count 3.0" in text
    assert "clammail_milter_message_bytes_total" in text


# -- detaching, pid file, user -----------------------------------------------------


def test_detached_with_pid_file_as_user(scanners):
    user = "nobody"
    pwd.getpwnam(user)
    work = scanners.extra["root"] / "detached"  # a place `nobody` can reach
    work.mkdir()
    work.chmod(0o777)
    conf = work / "milter.conf"
    pid_file = work / "milter.pid"
    sock = work / "milter.sock"
    write_conf(conf, {"MilterSocket": f"unix:{sock}", "ClamdSocket": f"unix:{scanners.clamd.unix}",
                      "PidFile": str(pid_file), "User": user, "LogFile": str(work / "m.log"),
                      "MilterSocketMode": "660", "OnInfected": "Reject"})
    proc = clammail_cli("milter", "-c", str(conf), timeout=60)
    assert proc.returncode == 0, proc.stderr  # the starting process returns once detached
    _wait_socket(pid_file)
    pid = int(pid_file.read_text())
    try:
        with open(f"/proc/{pid}/status") as fh:
            uid_line = next(line for line in fh if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) == pwd.getpwnam(user).pw_uid
        assert oct(os.stat(sock).st_mode & 0o777) == "0o660"
        assert os.stat(sock).st_uid == pwd.getpwnam(user).pw_uid
        from milter_client import MilterClient
        with MilterClient(str(sock)) as client:
            client.connect()
            assert client.message(SENDER, RCPT, *MESSAGES["eicar-body"]).action == "reject"
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    assert not pid_file.exists()
    assert not os.path.exists(f"/proc/{pid}")
