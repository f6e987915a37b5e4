"""A private Postfix for end-to-end tests: start, send with swaks, read what arrived.

`start_postfix(PostfixConfig(...))` writes a main.cf and master.cf of its own
and starts Debian's Postfix on them (`postfix -c DIR start`, as root). The
instance keeps its queue, data directory, log and maildirs in a fresh
directory under /tmp, logs to its own file (`maillog_file` through the
`postlog` service: without syslog Postfix's fatal errors are otherwise
invisible), takes SMTP on a free loopback port and delivers the addresses of
MAILBOXES (in the test domains example.com, example.net, example.org) each to
a maildir of its own, as the `nobody` user. Nothing leaves the machine:
other domains are refused. A system Postfix is neither needed nor touched;
the only change outside the instance is a one-time listing of the config
directories in /etc/postfix/main.cf (when it exists), see "Configuration
directories" below.

Extra main.cf settings (smtpd_milters, content_filter, ...) and master.cf
services (a content filter's transport, a re-injection smtpd on a second
port) come from the config; `after_queue_filter()` and `before_queue_proxy()`
give the settings Postfix's FILTER_README and SMTPD_PROXY_README describe.

For pytest: the `postfix_factory` fixture starts instances and stops them
after the test; `postfix` is one plain instance. $CLAMMAIL_KEEP_POSTFIX=1
keeps each instance's directory after the test, for a look at it.

    def test_milter_tags(postfix_factory):
        mta = postfix_factory(PostfixConfig(main={
            "smtpd_milters": f"inet:127.0.0.1:{milter_port}",
            "milter_default_action": "tempfail"}))
        result = mta.send(message, recipients=["rcpt@example.com", "rcpt2@example.com"])
        assert result.data.code == 250          # result.rcpt: each RCPT's reply
        [first, second] = mta.wait_delivered(2)
        assert first.headers["X-Virus-Status"] == "Clean"
        # first.as_sent(): the message without the trace headers Postfix added

smtpd and the other daemons run as the `postfix` user: a milter's or
filter's unix socket must be reachable by it (or use inet: on loopback).
"""

from __future__ import annotations

import email.parser
import email.policy
import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

import pytest
from clamd_harness import free_port

SYSTEM_CONFIG_DIR = Path("/etc/postfix")
POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
SENDMAIL = "/usr/sbin/sendmail"
ROOT_PREFIX = "clammail-postfix-"

# The domains every instance delivers locally; any other domain bounces.
TEST_DOMAINS = ("example.com", "example.net", "example.org")
# The addresses with a maildir (PostfixConfig.mailboxes adds more); any other
# address of the test domains is refused at RCPT ("User unknown"). The
# senders are here so that bounces are delivered and can be looked at.
MAILBOXES = (
    "rcpt@example.com", "rcpt2@example.com", "rcpt3@example.com", "postmaster@example.com",
    "other@example.net", "sender@example.org", "bench@example.org",
)
# Big enough for the 30 MB messages of the milter and proxy tests after
# base64 and SMTP overhead; Postfix's own default is 10 240 000.
DEFAULT_MESSAGE_SIZE_LIMIT = 64 * 1024 * 1024
# postfix stop waits 5 s for master itself; its children may take a little
# longer to notice.
STOP_TIMEOUT = 20.0
# Ports are chosen free but may be taken by another test suite before
# Postfix binds them: retry with new ones this many times.
BIND_ATTEMPTS = 5


class PostfixError(RuntimeError):
    """The instance could not be started, stopped or queried."""


class WaitTimeout(AssertionError):
    """A bounded wait ended before the expected mail arrived (an assertion in tests)."""


# ---------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Service:
    """One extra master.cf entry.

    For a unix service `name` is the service name (the transport a
    content_filter names, e.g. "scan"). For an inet service it is a label:
    the service listens on 127.0.0.1:`port` (a free port when None) and
    `Postfix.port(name)` says which.
    """

    name: str
    command: str
    type: str = "unix"
    options: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    private: str | None = None  # "n" for inet (Postfix insists), "-" otherwise
    unpriv: str = "-"
    wakeup: str = "-"
    maxproc: str = "-"
    args: str = ""


@dataclass(frozen=True)
class PostfixConfig:
    """What differs from a plain instance.

    `main`: main.cf parameters added or replacing the defaults.
    `smtpd_options`: `-o` settings of the SMTP listener tests send to.
    `services`: extra master.cf entries.
    `smtp_port`: a fixed port for the SMTP listener (default: a free one).
    `mailboxes`: addresses of the test domains to accept besides MAILBOXES.
    """

    main: Mapping[str, str] = field(default_factory=dict)
    smtpd_options: Mapping[str, str] = field(default_factory=dict)
    services: Sequence[Service] = ()
    smtp_port: int | None = None
    message_size_limit: int = DEFAULT_MESSAGE_SIZE_LIMIT
    mailboxes: Sequence[str] = ()


def after_queue_filter(filter_port: int, transport: str = "scan", reinject: str = "reinject",
                       reinject_port: int | None = None) -> PostfixConfig:
    """An after-queue content filter (Postfix FILTER_README, "advanced" setup).

    Every message received on the SMTP port goes to the filter listening on
    127.0.0.1:`filter_port` through the smtp client transport `transport`
    (with XFORWARD, no MIME conversion); the filter hands it back on the
    re-injection smtpd whose port is `Postfix.port(reinject)`, which
    neither filters again nor runs milters.
    """
    return PostfixConfig(
        main={"content_filter": f"{transport}:[127.0.0.1]:{filter_port}"},
        services=(
            Service(transport, "smtp", maxproc="10", options={
                "smtp_send_xforward_command": "yes",
                "disable_mime_output_conversion": "yes",
            }),
            reinjection_smtpd(reinject, reinject_port, content_filter=""),
        ),
    )


def before_queue_proxy(proxy_port: int, reinject: str = "reinject",
                       reinject_port: int | None = None) -> PostfixConfig:
    """A before-queue proxy (Postfix SMTPD_PROXY_README).

    The SMTP listener passes each session through to the proxy on
    127.0.0.1:`proxy_port` and answers the client with the proxy's replies;
    the proxy delivers to the re-injection smtpd at `Postfix.port(reinject)`.
    """
    return PostfixConfig(
        smtpd_options={"smtpd_proxy_filter": f"127.0.0.1:{proxy_port}"},
        services=(reinjection_smtpd(reinject, reinject_port),),
    )


def reinjection_smtpd(name: str = "reinject", port: int | None = None, **extra: str) -> Service:
    """An smtpd on a loopback port that takes mail back from a filter.

    Trusts XFORWARD from loopback (so the log names the real client), skips
    the checks the first smtpd already made, and runs no milters.
    """
    options = {
        "receive_override_options": "no_unknown_recipient_checks,no_header_body_checks,no_milters",
        "smtpd_authorized_xforward_hosts": "127.0.0.0/8",
        "smtpd_client_restrictions": "",
        "smtpd_helo_restrictions": "",
        "smtpd_sender_restrictions": "",
        "smtpd_relay_restrictions": "",
        "smtpd_recipient_restrictions": "permit_mynetworks,reject",
        "smtpd_data_restrictions": "",
        "mynetworks": "127.0.0.0/8",
        **extra,
    }
    return Service(name, "smtpd", type="inet", options=options, port=port)


def _main_cf(root: Path, config_dir: Path, config: PostfixConfig) -> str:
    nobody = pwd.getpwnam("nobody")
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(root / "spool"),
        "data_directory": str(root / "data"),
        "maillog_file": str(root / "log" / "maillog"),
        "maillog_file_prefixes": str(root / "log"),
        "myhostname": "postfix-test.localdomain",
        "mydomain": "localdomain",
        "myorigin": "$myhostname",
        "mydestination": "",
        "inet_interfaces": "loopback-only",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        # Mail from SMTP clients is left as sent (no added Date/Message-ID,
        # no address rewriting), as on a gateway receiving from outside.
        "local_header_rewrite_clients": "",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "virtual_mailbox_domains": " ".join(TEST_DOMAINS),
        "virtual_mailbox_base": str(root / "mail"),
        "virtual_mailbox_maps": f"texthash:{config_dir / 'virtual_mailboxes'}",
        "virtual_uid_maps": f"static:{nobody.pw_uid}",
        "virtual_gid_maps": f"static:{nobody.pw_gid}",
        # Without this, raising message_size_limit above the virtual
        # mailbox limit (51 200 000) makes every delivery fail.
        "virtual_mailbox_limit": "0",
        "message_size_limit": str(config.message_size_limit),
        # Nothing leaves the machine: smtpd refuses other domains at RCPT
        # with this text, since they could only go to the error transport.
        "default_transport": "error:outside delivery is off in this test instance",
        "relay_transport": "error:outside delivery is off in this test instance",
        "smtp_dns_support_level": "disabled",
        "biff": "no",
        "delay_warning_time": "0",
        **config.main,
    }
    return "".join(f"{name} = {value}\n" for name, value in settings.items())


# The daemons Postfix needs, none chrooted (the queue directory has no copy
# of /etc for a chroot).
_BASE_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _master_line(name: str, service: Service) -> str:
    private = service.private or ("n" if service.type == "inet" else "-")
    columns = [name, service.type, private, service.unpriv, "n",
               service.wakeup, service.maxproc, service.command]
    line = " ".join(columns)
    for key, value in service.options.items():
        # master.cf splits on white space; Postfix 3.0's { } quoting keeps a
        # value with spaces in one piece.
        line += f"\n  -o {{ {key} = {value} }}" if re.search(r"\s", value) else f"\n  -o {key}={value}"
    if service.args:
        line += f"\n  {service.args}"
    return line + "\n"


def _master_cf(smtp: Service, services: Sequence[Service], ports: Mapping[str, int]) -> str:
    text = _BASE_SERVICES
    for service in (smtp, *services):
        name = f"127.0.0.1:{ports[service.name]}" if service.type == "inet" else service.name
        text += _master_line(name, service)
    return text


def _virtual_mailboxes(addresses: Sequence[str]) -> str:
    """The virtual_mailbox_maps table: each address has the maildir
    <virtual_mailbox_base>/<domain>/<local part>/ (texthash: no postmap;
    the virtual agent refuses a regexp map that would accept any address).
    """
    lines = []
    for address in dict.fromkeys(a.lower() for a in addresses):
        local, _, domain = address.rpartition("@")
        if domain not in TEST_DOMAINS or not re.fullmatch(r"[a-z0-9][a-z0-9._+-]*", local):
            raise ValueError(f"not a mailbox for a test instance: {address!r} "
                             f"(domains {', '.join(TEST_DOMAINS)})")
        lines.append(f"{address} {domain}/{local}/\n")
    return "".join(lines)


# ---------------------------------------------------------------------------
# What the helpers return


@dataclass(frozen=True)
class Reply:
    code: int
    text: str  # the reply's lines without the code, joined by "\n"

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True)
class SendResult:
    """One swaks session: each command with the server's reply to it."""

    exit_code: int
    replies: tuple[tuple[str, Reply], ...]  # ("<connect>" | "EHLO x" | ... | "<data>", reply)
    rcpt: tuple[tuple[str, Reply], ...]      # (address, reply) per RCPT TO
    data: Reply | None                        # the reply after the message's final dot
    transcript: str

    @property
    def accepted(self) -> bool:
        return self.data is not None and self.data.code // 100 == 2

    @property
    def queue_id(self) -> str | None:
        found = self.data and re.search(r"queued as ([0-9A-Za-z]+)", self.data.text)
        return found.group(1) if found else None

    def reply_to(self, command: str) -> Reply | None:
        """The reply to the first command starting with `command` (e.g. "MAIL", "DATA")."""
        for sent, reply in self.replies:
            if sent.upper().startswith(command.upper()):
                return reply
        return None


@dataclass(frozen=True)
class Delivered:
    """A message as the virtual delivery agent wrote it into a maildir."""

    path: Path
    mailbox: str  # the recipient address
    data: bytes
    hostname: str  # myhostname of the instance, to recognise its Received headers

    @property
    def headers(self) -> Message:
        return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            self.data, headersonly=True)

    def as_sent(self) -> bytes:
        """The message without the headers this Postfix prepended.

        Those are Return-Path, X-Original-To and Delivered-To (from the
        delivery agent) and
        one Received header per smtpd of this instance the message passed
        (two with an after-queue filter). Lines end in LF, as Postfix stores
        them.
        """
        rest = self.data
        while True:
            name, value, after = _first_header(rest)
            if name is None:
                return rest
            trace = name in ("return-path", "x-original-to", "delivered-to") or (
                name == "received" and f"by {self.hostname} (Postfix)".encode() in value)
            if not trace:
                return rest
            rest = after


def _first_header(data: bytes) -> tuple[str | None, bytes, bytes]:
    """(lower-cased name, whole field with continuation lines, what follows)."""
    match = re.match(rb"([!-9;-~]+):[^\n]*\n(?:[ \t][^\n]*\n)*", data)
    if not match:
        return None, b"", data
    return match.group(1).decode().lower(), match.group(0), data[match.end():]


@dataclass(frozen=True)
class QueuedRecipient:
    address: str
    delay_reason: str


@dataclass(frozen=True)
class QueuedMessage:
    """One message in the queue, from `postqueue -j`."""

    queue_name: str  # incoming, active, deferred, hold, maildrop
    queue_id: str
    sender: str
    size: int
    recipients: tuple[QueuedRecipient, ...]


def smtp_data(message: bytes) -> bytes:
    """The message as it goes over the wire after DATA, up to the final dot.

    Lines end in CRLF (a bare LF becomes CRLF; CR alone stays), lines that
    start with a dot get a second one (RFC 5321 4.5.2), and the final "."
    follows; swaks adds the last CRLF.
    """
    data = re.sub(rb"(?<!\r)\n", b"\r\n", message)
    data = re.sub(rb"(?m)^\.", b"..", data)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b"."


_SEND_PREFIXES = (" -> ", " ~> ", "**> ", "*~> ")
_RECV_PREFIXES = ("<-  ", "<** ", "<~  ", "<~* ")


def parse_swaks(transcript: str) -> tuple[tuple[tuple[str, Reply], ...], Reply | None]:
    """Pair each command swaks sent with the reply it got; also the final DATA reply.

    swaks prints what it sends after " -> " and what it receives after "<- "
    ("<** " when it did not expect that reply); with --suppress-data the
    message itself is one " -> N lines sent" line after the 354.
    """
    replies: list[tuple[str, Reply]] = []
    command = "<connect>"
    lines: list[str] = []
    data_reply = None
    for line in transcript.splitlines():
        if line.startswith(_SEND_PREFIXES):
            sent = line[4:]
            awaiting_message = bool(replies) and replies[-1][1].code == 354 and not lines
            command = "<data>" if awaiting_message and re.fullmatch(r"\d+ lines sent", sent) else sent
        elif line.startswith(_RECV_PREFIXES):
            lines.append(line[4:])
            if re.match(r"\d{3}(?: |$)", line[4:]):  # "250-..." continues, "250 ..." ends
                reply = Reply(int(line[4:7]), "\n".join(part[4:] for part in lines))
                replies.append((command, reply))
                if command == "<data>":
                    data_reply = reply
                lines = []
    return tuple(replies), data_reply


# ---------------------------------------------------------------------------
# The instance


class Postfix:
    """A running private Postfix instance (see the module docstring)."""

    def __init__(self, root: Path, slot: _Slot, ports: dict[str, int], hostname: str):
        self.root = root
        self._slot = slot
        self.config_dir = slot.config_dir
        self.queue_dir = root / "spool"
        self.data_dir = root / "data"
        self.log_file = root / "log" / "maillog"
        self.mail_dir = root / "mail"
        self.ports = ports
        self.hostname = hostname
        self.stopped = False

    # -- where things are

    @property
    def smtp_port(self) -> int:
        return self.ports["smtp"]

    def port(self, service: str) -> int:
        """The loopback port of an inet service ("smtp" is the one tests send to)."""
        return self.ports[service]

    def maildir(self, address: str) -> Path:
        """The maildir of a recipient, created (empty, owned by nobody) if missing."""
        local, _, domain = address.lower().rpartition("@")
        path = self.mail_dir / domain / local
        if not (path / "new").is_dir():
            _make_maildir(path)
        return path

    # -- sending

    def send(self, message: bytes, sender: str = "sender@example.org",
             recipients: Sequence[str] | str = ("rcpt@example.com",), *,
             port: int | None = None, helo: str = "client.example.org",
             timeout: float = 120.0, swaks_args: Sequence[str] = ()) -> SendResult:
        """Send one message with swaks in one SMTP session; return the replies.

        The message goes as it is (no token expansion or header editing by
        swaks), with CRLF line ends and dot-stuffing added (`smtp_data`).
        A refusal is a result, not an exception.
        """
        swaks = shutil.which("swaks")
        if swaks is None:
            raise PostfixError("swaks is not installed: `make deps` installs it "
                               "(packaging/apt-packages.txt)")
        if isinstance(recipients, str):
            recipients = [recipients]
        fd, data_file = tempfile.mkstemp(prefix="swaks-", suffix=".txt", dir=self.root / "tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(smtp_data(message))
        cmd = [swaks, "--server", "127.0.0.1", "--port", str(port or self.smtp_port),
               "--from", sender or "<>", "--to", ",".join(recipients),
               "--helo", helo, "--data", f"@{data_file}", "--no-data-fixup",
               "--suppress-data", "--timeout", f"{int(timeout)}s", *swaks_args]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout + 30)
        finally:
            os.unlink(data_file)
        transcript = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
        replies, data_reply = parse_swaks(transcript)
        rcpt = tuple((_address_of(sent), reply) for sent, reply in replies
                     if sent.upper().startswith("RCPT TO:"))
        return SendResult(proc.returncode, replies, rcpt, data_reply, transcript)

    def sendmail(self, message: bytes, sender: str = "sender@example.org",
                 recipients: Sequence[str] | str = ("rcpt@example.com",)) -> None:
        """Submit a message with sendmail(1) (pickup, non_smtpd_milters)."""
        if isinstance(recipients, str):
            recipients = [recipients]
        proc = subprocess.run(
            [SENDMAIL, "-C", str(self.config_dir), "-i", "-f", sender, "--", *recipients],
            input=message, capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise PostfixError(f"sendmail exited with {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace')}")

    # -- what arrived

    def delivered(self, mailbox: str | None = None) -> list[Delivered]:
        """Messages in the maildirs (of one recipient, or all), oldest first."""
        if mailbox is not None:
            local, _, domain = mailbox.lower().rpartition("@")
            boxes = [(mailbox.lower(), self.mail_dir / domain / local)]
        else:
            boxes = [(f"{box.name}@{box.parent.name}", box)
                     for box in sorted(self.mail_dir.glob("*/*")) if (box / "new").is_dir()]
        found = []
        for address, box in boxes:
            for sub in ("new", "cur"):
                if not (box / sub).is_dir():
                    continue  # nothing delivered there yet
                for path in (box / sub).iterdir():
                    found.append((path.stat().st_mtime_ns, path.name, address, path))
        found.sort()
        return [Delivered(path, address, path.read_bytes(), self.hostname)
                for _, _, address, path in found]

    def wait_delivered(self, count: int, mailbox: str | None = None,
                       timeout: float = 60.0) -> list[Delivered]:
        """Wait until at least `count` messages are delivered; return them all.

        Fails (WaitTimeout, an AssertionError) after `timeout` seconds with
        the queue and the end of the maillog.
        """
        deadline = time.monotonic() + timeout
        while True:
            messages = self.delivered(mailbox)
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                where = mailbox or "all maildirs"
                raise WaitTimeout(f"{len(messages)} of {count} messages delivered to {where} "
                                  f"after {timeout:.0f} s\n{self.diagnostics()}")
            time.sleep(0.1)

    # -- the queue

    def queue(self) -> list[QueuedMessage]:
        """Every message in the queue (postqueue -j), whatever queue it is in."""
        proc = subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-j"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PostfixError(f"postqueue -j failed: {proc.stderr.strip()}")
        messages = []
        for line in proc.stdout.splitlines():
            item = json.loads(line)
            recipients = tuple(QueuedRecipient(r["address"], r.get("delay_reason", ""))
                               for r in item["recipients"])
            messages.append(QueuedMessage(item["queue_name"], item["queue_id"], item["sender"],
                                          item["message_size"], recipients))
        return messages

    def wait_queued(self, count: int, queue_name: str | None = None,
                    timeout: float = 60.0) -> list[QueuedMessage]:
        """Wait until at least `count` messages are in the queue (or in one of its queues)."""
        deadline = time.monotonic() + timeout
        while True:
            messages = [m for m in self.queue() if queue_name in (None, m.queue_name)]
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise WaitTimeout(f"{len(messages)} of {count} messages in queue "
                                  f"{queue_name or '(any)'} after {timeout:.0f} s\n"
                                  f"{self.diagnostics()}")
            time.sleep(0.2)

    def flush(self) -> None:
        """Retry every deferred message now (postqueue -f)."""
        proc = subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-f"],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PostfixError(f"postqueue -f failed: {proc.stderr.strip()}")

    # -- logs and processes

    def maillog(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def maillog_tail(self, lines: int = 40) -> str:
        return "\n".join(self.maillog().splitlines()[-lines:])

    def diagnostics(self) -> str:
        """The queue and the end of the maillog, for failure messages."""
        try:
            queued = "\n".join(f"  {m.queue_name} {m.queue_id} from=<{m.sender}> "
                               + "; ".join(f"to=<{r.address}> {r.delay_reason}" for r in m.recipients)
                               for m in self.queue()) or "  (empty)"
        except (PostfixError, subprocess.SubprocessError, ValueError) as error:
            queued = f"  (postqueue failed: {error})"
        return f"queue:\n{queued}\nmaillog ({self.log_file}), last lines:\n{self.maillog_tail()}"

    def processes(self) -> list[int]:
        """Every process that belongs to this instance (master and its children)."""
        return processes_with_config(self.config_dir)

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    # -- stopping

    def stop(self, keep: bool | None = None) -> None:
        """Stop the instance and remove its directory (kept if `keep` or $CLAMMAIL_KEEP_POSTFIX).

        Raises PostfixError if processes of the instance were still there
        after a graceful stop (they are killed first).
        """
        if self.stopped:
            return
        self.stopped = True
        if keep is None:
            keep = bool(os.environ.get("CLAMMAIL_KEEP_POSTFIX"))
        try:
            leftovers = _stop_processes(self.config_dir)
        finally:
            if keep:
                shutil.copytree(self.config_dir, self.root / "etc", dirs_exist_ok=True)
            else:
                shutil.rmtree(self.root, ignore_errors=True)
            self._slot.release()
        if leftovers:
            raise PostfixError(f"processes of {self.config_dir} still running "
                               f"{STOP_TIMEOUT:.0f} s after postfix stop (killed): {leftovers}")

    def __enter__(self) -> Postfix:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _address_of(rcpt_command: str) -> str:
    match = re.search(r"<([^>]*)>", rcpt_command)
    return match.group(1) if match else rcpt_command.split(":", 1)[1].strip()


def _make_maildir(path: Path) -> None:
    """Create a maildir as `nobody`, whose directories the delivery agent may be
    creating at the same moment: made as root and chowned after, they would
    make it fail for that moment (and defer the message for minutes)."""
    nobody = pwd.getpwnam("nobody")
    subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                    "--clear-groups", "mkdir", "-p", "-m", "700",
                    *(str(path / sub) for sub in ("tmp", "new", "cur"))],
                   check=True, capture_output=True, timeout=60)


def processes_with_config(config_dir: Path) -> list[int]:
    """Pids whose environment names `config_dir` (postfix -c passes MAIL_CONFIG to all)."""
    return _processes_by_config().get(str(config_dir), [])


def _processes_by_config() -> dict[str, list[int]]:
    """MAIL_CONFIG value -> pids, from one pass over /proc."""
    found: dict[str, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        for variable in environ:
            if variable.startswith(b"MAIL_CONFIG="):
                config = variable[len(b"MAIL_CONFIG="):].decode(errors="replace")
                found.setdefault(config, []).append(int(entry.name))
    return found


def _stop_processes(config_dir: Path) -> list[int]:
    """postfix stop, then wait for every process of the instance to end.

    Returns the pids that had not ended after STOP_TIMEOUT (killed).
    """
    if processes_with_config(config_dir):
        subprocess.run([POSTFIX, "-c", str(config_dir), "stop"],
                       capture_output=True, timeout=60)
    leftovers = _wait_gone(lambda: processes_with_config(config_dir), STOP_TIMEOUT)
    for pid in leftovers:
        _kill(pid)
    return leftovers


def _wait_gone(list_pids, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (pids := list_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------
# Configuration directories
#
# Each instance's config directory is one of a fixed set of slots, listed
# once in the system main.cf's alternate_config_directories (which postqueue
# and sendmail need when run by other users than root). A fixed list means the
# system main.cf is edited once per machine, not at every start: each edit
# would also make every Postfix program wait until the file "cools down"
# (dict_load_file rereads a file modified within the last second, in 0.3 s
# naps), 1.5 s per start. A slot is held with flock while its instance runs;
# processes found on a free slot belong to a killed test run and are ended.

SLOT_DIR = Path("/run/clammail-postfix-harness")
SLOT_COUNT = 32
_slots_registered = False


@dataclass
class _Slot:
    config_dir: Path
    lock_fd: int

    def release(self) -> None:
        os.close(self.lock_fd)


def _claim_slot() -> _Slot:
    SLOT_DIR.mkdir(mode=0o755, exist_ok=True)
    info = os.lstat(SLOT_DIR)
    if not os.path.isdir(SLOT_DIR) or os.path.islink(SLOT_DIR) or info.st_uid != 0:
        raise PostfixError(f"{SLOT_DIR} must be a directory owned by root")
    _register_slots()
    running = _processes_by_config()
    claimed = None
    for number in range(SLOT_COUNT):
        config_dir = SLOT_DIR / f"{number:02d}"
        fd = os.open(SLOT_DIR / f"{number:02d}.lock",
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        for pid in running.get(str(config_dir), []):
            _kill(pid)  # left from a killed test run
        if claimed is None:
            claimed = _Slot(config_dir, fd)
        else:
            os.close(fd)
    if claimed is None:
        raise PostfixError(f"all {SLOT_COUNT} Postfix test slots in {SLOT_DIR} are in use")
    if _wait_gone(lambda: processes_with_config(claimed.config_dir), STOP_TIMEOUT):
        claimed.release()
        raise PostfixError(f"processes of {claimed.config_dir} survive SIGKILL")
    shutil.rmtree(claimed.config_dir, ignore_errors=True)
    claimed.config_dir.mkdir(mode=0o755)
    return claimed


def _register_slots() -> None:
    """List every slot in alternate_config_directories of the system main.cf.

    Does nothing when /etc/postfix/main.cf does not exist (Postfix installed
    with "No configuration"): creating one would make the system Postfix
    start at boot; root needs no listing.
    """
    global _slots_registered
    main_cf = SYSTEM_CONFIG_DIR / "main.cf"
    if _slots_registered or not main_cf.exists():
        return
    lock = os.open(SYSTEM_CONFIG_DIR, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # against other test runs doing the same
        current = system_alternate_config_directories()
        missing = [str(SLOT_DIR / f"{n:02d}") for n in range(SLOT_COUNT)
                   if str(SLOT_DIR / f"{n:02d}") not in current]
        if missing:
            subprocess.run(["postconf", "-c", str(SYSTEM_CONFIG_DIR), "-e",
                            f"alternate_config_directories = {' '.join([*current, *missing])}"],
                           check=True, capture_output=True, timeout=60)
    finally:
        os.close(lock)
    _slots_registered = True


def system_alternate_config_directories() -> list[str]:
    """alternate_config_directories of /etc/postfix/main.cf as written ([] without the file)."""
    if not (SYSTEM_CONFIG_DIR / "main.cf").exists():
        return []
    proc = subprocess.run(["postconf", "-c", str(SYSTEM_CONFIG_DIR), "-nh",
                           "alternate_config_directories"],
                          capture_output=True, text=True, timeout=60, check=True)
    return [d for d in re.split(r"[\s,]+", proc.stdout.strip()) if d]


def _write_config(path: Path, text: str) -> None:
    """Write a file Postfix reads, dated back so that it is read at once (see above)."""
    path.write_text(text)
    past = time.time() - 10
    os.utime(path, (past, past))


# ---------------------------------------------------------------------------
# Starting


def start_postfix(config: PostfixConfig | None = None, base_dir: Path | None = None) -> Postfix:
    """Start a private instance and wait until its SMTP port answers."""
    config = config or PostfixConfig()
    if os.geteuid() != 0:
        raise PostfixError("a private Postfix must be started as root (Postfix's master "
                           "needs it); run the tests as root")
    for program in (POSTFIX, POSTQUEUE):
        if not os.access(program, os.X_OK):
            raise PostfixError(f"{program} is missing: `make deps` installs postfix "
                               "(packaging/apt-packages.txt)")
    slot = _claim_slot()
    base_dir = Path(base_dir or tempfile.gettempdir())
    _remove_orphan_roots(base_dir)
    root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir=base_dir))
    try:
        (root / "owner.tmp").write_text(_process_identity(os.getpid()))
        (root / "owner.tmp").rename(root / "owner")  # never seen half-written
        root.chmod(0o755)  # the delivery agent (as nobody) walks down to mail/
        for sub in ("spool", "data", "log", "mail", "tmp"):
            (root / sub).mkdir()
        postfix_user = pwd.getpwnam("postfix")
        os.chown(root / "data", postfix_user.pw_uid, grp.getgrnam("postfix").gr_gid)
        nobody = pwd.getpwnam("nobody")
        os.chown(root / "mail", nobody.pw_uid, nobody.pw_gid)
        _write_config(slot.config_dir / "main.cf", _main_cf(root, slot.config_dir, config))
        _write_config(slot.config_dir / "virtual_mailboxes",
                      _virtual_mailboxes([*MAILBOXES, *config.mailboxes]))
        instance = _start_master(root, slot, config)
    except BaseException:
        for pid in processes_with_config(slot.config_dir):
            _kill(pid)
        if not os.environ.get("CLAMMAIL_KEEP_POSTFIX"):
            shutil.rmtree(root, ignore_errors=True)
        slot.release()
        raise
    # bench_smtp.py counts this maildir from the start.
    instance.maildir("rcpt@example.com")
    return instance


def _start_master(root: Path, slot: _Slot, config: PostfixConfig) -> Postfix:
    smtp = Service("smtp", "smtpd", type="inet", options=config.smtpd_options,
                   port=config.smtp_port)
    inet = [s for s in (smtp, *config.services) if s.type == "inet"]
    hostname = _main_setting(slot.config_dir, "myhostname")
    for attempt in range(BIND_ATTEMPTS):
        ports = {s.name: s.port or free_port() for s in inet}
        instance = Postfix(root, slot, ports, hostname)
        if taken := _foreign_listeners(ports.values(), own_pids=[]):
            problem = f"port(s) {sorted(taken)} taken by {_describe_listeners(taken)}"
        else:
            _write_config(slot.config_dir / "master.cf", _master_cf(smtp, config.services, ports))
            _skip_integrity_check(root)
            proc = subprocess.run([POSTFIX, "-c", str(slot.config_dir), "start"],
                                  capture_output=True, text=True, timeout=120)
            # Postfix listens with SO_REUSEPORT: its bind succeeds even where
            # another program already listens, and the two would share the
            # connections. Only ours may listen there.
            taken = _foreign_listeners_after_start(instance, ports.values())
            if proc.returncode == 0 and not taken:
                _wait_banner(instance)
                return instance
            if taken:
                problem = f"port(s) {sorted(taken)} taken by {_describe_listeners(taken)}"
            else:
                problem = (f"postfix -c {slot.config_dir} start failed ({proc.returncode}): "
                           f"{proc.stdout}{proc.stderr}\nmaillog:\n{instance.maillog_tail()}\n"
                           "(master's own fatal errors, such as a bad master.cf line or a "
                           "port someone else bound, go to syslog only: postlogd is not "
                           "running yet)")
            _stop_processes(slot.config_dir)
        # Another test suite may have taken a free port between free_port()
        # and Postfix's bind; new ports may do. Fixed ports would not change.
        if all(s.port for s in inet) or attempt + 1 == BIND_ATTEMPTS:
            raise PostfixError(problem)
    raise AssertionError("unreachable")


def _skip_integrity_check(root: Path) -> None:
    """Create the queue directories as Postfix's own table lists them, and
    let `postfix start` skip its integrity check (a quick start).

    The check (post-install create-missing, postsuper) takes 2 s of the 2.5 s
    a start takes here, and is moot for a fresh queue under a configuration
    we wrote. Without postfix-files the normal check runs.
    """
    table = SYSTEM_CONFIG_DIR / "postfix-files"
    if not table.exists():
        return
    names = {"$queue_directory": root / "spool", "$data_directory": root / "data"}
    users = {"$mail_owner": "postfix", "-": "root"}
    groups = {"$setgid_group": "postdrop", "-": "root"}
    for line in table.read_text().splitlines():
        fields = line.split(":")
        if line.startswith("#") or len(fields) < 5 or fields[1] != "d":
            continue
        top, _, sub = fields[0].partition("/")
        if top not in names:
            continue
        path = names[top] / sub
        path.mkdir(exist_ok=True)
        os.chown(path, pwd.getpwnam(users.get(fields[2], fields[2])).pw_uid,
                 grp.getgrnam(groups.get(fields[3], fields[3])).gr_gid)
        path.chmod(int(fields[4], 8))
    (root / "spool" / "quick-start").touch()


def _foreign_listeners(ports, own_pids) -> set[int]:
    """Which of `ports` have a TCP listener that none of `own_pids` holds."""
    # The listeners first: a socket our process opens after this look is not
    # seen at all, rather than seen without its owner.
    listening = _listening_sockets(ports)
    owned = set().union(*(_socket_inodes(pid) for pid in own_pids))
    return {port for port, inodes in listening.items() if inodes - owned}


def _foreign_listeners_after_start(instance: Postfix, ports) -> set[int]:
    """`_foreign_listeners` for a Postfix just started, looked at again for a
    moment: its master may still be settling (a listener seen before the
    process holding it)."""
    taken: set[int] = set()
    for _ in range(10):
        taken = _foreign_listeners(ports, own_pids=instance.processes())
        if not taken:
            break
        time.sleep(0.2)
    return taken


def _listening_sockets(ports) -> dict[int, set[str]]:
    """port -> inodes of the TCP sockets listening on it."""
    wanted = set(ports)
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            port = int(fields[1].rpartition(":")[2], 16)
            if fields[3] == "0A" and port in wanted:  # 0A: TCP_LISTEN
                listening.setdefault(port, set()).add(fields[9])
    return listening


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            target = os.readlink(fd.path)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:
        pass
    return inodes


def _describe_listeners(ports) -> str:
    """Which processes listen on `ports`, for error messages."""
    inodes = set().union(*_listening_sockets(ports).values())
    holders = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _socket_inodes(int(entry.name)) & inodes:
            try:
                command = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            config = next((c for c, pids in _processes_by_config().items()
                           if int(entry.name) in pids), "-")
            holders.append(f"pid {entry.name} ({command.decode(errors='replace').strip()}, "
                           f"MAIL_CONFIG={config})")
    return "; ".join(holders) or "(gone since)"


def _process_identity(pid: int) -> str:
    """pid and start time: a pid alone may have been reused by now."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The start time is field 22; the command name (field 2) may hold spaces.
            start_time = f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""
    return f"{pid} {start_time}"


def _remove_orphan_roots(base_dir: Path) -> None:
    """Remove the directories of instances whose test process is gone (killed runs).

    Their processes were ended when their slot was found free; instances of
    test runs still alive, here or in another suite, are left alone.
    """
    if os.environ.get("CLAMMAIL_KEEP_POSTFIX"):
        return
    for owner_file in base_dir.glob(f"{ROOT_PREFIX}*/owner"):
        try:
            owner = owner_file.read_text()
            pid = int(owner.split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _process_identity(pid) != owner:
            shutil.rmtree(owner_file.parent, ignore_errors=True)


def _main_setting(config_dir: Path, name: str) -> str:
    for line in (config_dir / "main.cf").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name:
            return value.strip()
    raise KeyError(name)


def _wait_banner(instance: Postfix, timeout: float = 30.0) -> None:
    """Wait for the 220 greeting, so a broken smtpd setting fails here, not in the test."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", instance.smtp_port), timeout=10) as s:
                banner = s.recv(512)
                s.sendall(b"QUIT\r\n")
            if banner.startswith(b"220"):
                return
            last_error = banner.decode(errors="replace")
        except OSError as error:
            last_error = str(error)
        time.sleep(0.2)
    raise PostfixError(f"no SMTP greeting on port {instance.smtp_port} within {timeout:.0f} s "
                       f"({last_error})\n{instance.diagnostics()}")


# ---------------------------------------------------------------------------
# pytest fixtures (tests/conftest.py imports them)


@pytest.fixture
def postfix_factory() -> Iterator:
    """Start private instances with `postfix_factory(config)`; all are stopped after the test."""
    started: list[Postfix] = []

    def start(config: PostfixConfig | None = None) -> Postfix:
        instance = start_postfix(config)
        started.append(instance)
        return instance

    yield start
    errors = []
    for instance in started:
        try:
            instance.stop()
        except PostfixError as error:
            errors.append(str(error))
    if errors:
        pytest.fail("\n".join(errors))


@pytest.fixture
def postfix(postfix_factory) -> Postfix:
    """A plain private Postfix instance (SMTP on `postfix.smtp_port`)."""
    return postfix_factory()
