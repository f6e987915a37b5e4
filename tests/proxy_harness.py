"""Starting `clammail proxy` for tests, and an SMTP next hop that records what it is given.

The recording next hop is a real SMTP server (aiosmtpd) that keeps each
message with its envelope and can be told to refuse a recipient, to be
slow, or to vanish: what the proxy does then is what the tests check.
End-to-end tests with Postfix on both sides are in test_proxy_postfix.py.
"""

from __future__ import annotations

import asyncio
import signal
import smtplib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from aiosmtpd.controller import Controller
from clamd_harness import REPO, free_port


@dataclass
class Delivery:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    xforward: dict = field(default_factory=dict)


class RecordingHandler:
    def __init__(self):
        self.deliveries: list[Delivery] = []
        self.refuse_rcpt: set[str] = set()
        self.data_delay = 0.0
        self.data_reply = "250 2.0.0 Ok: queued as RECORDED"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse_rcpt:
            return f"550 5.1.1 <{address}>: Recipient address rejected: no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply.startswith("2"):
            self.deliveries.append(Delivery(envelope.mail_from, list(envelope.rcpt_tos),
                                            envelope.original_content))
        return self.data_reply


class NextHop:
    """An SMTP server on a free loopback port recording what it accepts."""

    def __init__(self):
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def deliveries(self) -> list[Delivery]:
        return self.handler.deliveries

    def stop(self) -> None:
        self.controller.stop()


@dataclass
class Proxy:
    proc: subprocess.Popen
    port: int
    workdir: Path
    log: Path
    config: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def quarantine(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "clammail", "quarantine", "-c",
                               str(self.config), *args], capture_output=True, text=True,
                              timeout=120, cwd=REPO)

    def output(self) -> str:
        return (self.workdir / "stderr.txt").read_text(errors="replace")


def start_proxy(root: Path, options: dict, name: str = "proxy") -> Proxy:
    workdir = root / name
    workdir.mkdir(mode=0o777, exist_ok=True)
    listen = options.get("Listen") or f"127.0.0.1:{free_port()}"
    port = int(listen.rsplit(":", 1)[1])
    log = workdir / "proxy.log"
    config = workdir / "clammail.yaml"
    section = {"Listen": listen, "Foreground": True, "LogFile": str(log),
               "QuarantineDirectory": str(workdir / "quarantine"), "Hostname": "proxy.test",
               "ReportHostname": "mx.test", "AuthservID": "mx.test", **options}
    config.write_text(yaml.safe_dump({"proxy": section}))
    out = open(workdir / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "clammail", "proxy", "-c", str(config)],
                            stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    proxy = Proxy(proc, port, workdir, log, config)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited: {proxy.output()[-2000:]}")
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
                s.noop()
            return proxy
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the proxy did not start listening")


@dataclass
class Sent:
    code: int  # the final reply (DATA, or the first refusal before it)
    text: str
    refused: dict = field(default_factory=dict)  # recipient -> (code, text)


def send(port: int, message: bytes, sender: str = "sender@example.org",
         recipients: tuple[str, ...] = ("rcpt@example.com",), xforward: str | None = None,
         timeout: float = 120) -> Sent:
    """One message over SMTP; the server's answers (no exception for refusals)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
        client.ehlo("client.test")
        if xforward:
            code, text = client.docmd("XFORWARD", xforward)
            assert code == 250, (code, text)
        code, text = client.mail(sender)
        if code != 250:
            return Sent(code, text.decode())
        refused = {}
        for rcpt in recipients:
            rc, rt = client.rcpt(rcpt)
            if rc not in (250, 251):
                refused[rcpt] = (rc, rt.decode())
        if len(refused) == len(recipients):
            first = next(iter(refused.values()))
            return Sent(first[0], first[1], refused)
        code, text = client.data(message)
        return Sent(code, text.decode(), refused)


def run_in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread
