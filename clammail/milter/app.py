"""The pymilter application: libmilter's callbacks translated into mailfilter calls.

libmilter runs one thread per MTA connection and calls these methods in
order for each message (envfrom, envrcpt..., header..., body..., eom or
abort). The message is streamed to a backend as it comes (mailfilter.scan),
and at eom the policy's decision becomes a milter reply, header edits and
log lines, as clamav-milter 1.4.6 makes them (clamav-milter/clamfi.c):

- the stream starts with "From clamav-milter\\n", headers are written
  "Name: value\\r\\n", the body follows a "\\r\\n" -- the same bytes, so a
  backend gives the same verdict as behind clamav-milter;
- LocalNet is checked at connect, SkipAuthenticated and a sender on the
  AllowList at MAIL FROM, recipients that are all on the AllowList at DATA
  (clamav-milter: at the first header, with the same outcome);
- what never changes the outcome is taken without a reply (the milter
  protocol's NR_* steps: headers, body chunks, recipients, and the connection
  and DATA when no LocalNet or recipient AllowList is configured), and
  DATA is not asked for at all then: the MTA waits no round trip for them
  (`connection_class`);
- an empty message (no header, no body) is not scanned: OnClean applies.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from dataclasses import dataclass, field

import Milter

from clammail.mailfilter.backends import BackendPool
from clammail.mailfilter.metrics import Metrics
from clammail.mailfilter.policy import (
    SCANNED_HEADER,
    STATUS_HEADER,
    Action,
    Decision,
    HeaderMode,
    Outcome,
)
from clammail.mailfilter.scan import MessageScan, ScanResult
from clammail.mailfilter.summary import summary_line
from clammail.milter.settings import MilterSettings

# The first bytes of every stream: clamav-milter's, so that the daemon types
# the stream as a mailbox exactly as it does behind clamav-milter.
STREAM_PREFIX = b"From clamav-milter\n"
QUARANTINE_REASON = "quarantined by clammail"
UNKNOWN = "UNKNOWN"  # clamav-milter's stand-in for a missing macro or header

_REPLIES = {
    Action.ACCEPT: Milter.ACCEPT,
    Action.REJECT: Milter.REJECT,
    Action.DEFER: Milter.TEMPFAIL,
    Action.DISCARD: Milter.DISCARD,
}


class MilterService:
    """What every connection shares: settings, backends, log, metrics, messages in flight."""

    def __init__(self, settings: MilterSettings, log, metrics: Metrics | None):
        self.settings = settings
        self.log = log
        self.metrics = metrics
        self.pool = BackendPool(
            list(settings.backends), timeout=settings.read_timeout,
            probe_interval=settings.probe_interval, log=log,
            on_change=metrics.backend_changed if metrics else None)
        self._in_flight = 0
        self._idle = threading.Condition()
        self.stopping = False

    def stop_accepting(self) -> None:
        """From now on new messages are deferred: the service is going away."""
        self.stopping = True

    def message_started(self) -> None:
        with self._idle:
            self._in_flight += 1

    def message_done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Wait until no message is in flight (or the timeout); how many still are."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
            return self._in_flight


def _sane(text: str | None) -> str:
    """clamav-milter's makesanehdr: quotes, tabs, line ends and unprintables become blanks."""
    if text is None:
        return UNKNOWN
    return "".join(" " if c in "'\t\r\n" or not c.isprintable() else c for c in text)


@dataclass
class Message:
    """One message between MAIL FROM and its end."""

    sender: str
    scan: MessageScan
    recipients: list[str] = field(default_factory=list)
    all_allowed: bool = True  # every recipient is on the AllowList
    sent: int = 0  # bytes handed to the scan
    got_body: bool = False
    broken: str = ""  # the spool could not be written: no verdict possible
    scanned_headers: int = 0  # earlier X-Virus-Scanned headers (AddHeader Replace)
    status_headers: int = 0
    subject: str | None = None
    date: str | None = None
    message_id: str | None = None

    def write(self, data: bytes) -> None:
        if self.sent == 0:
            self._write(STREAM_PREFIX)
        self._write(data)

    def _write(self, data: bytes) -> None:
        self.sent += len(data)
        if self.broken:
            return
        try:
            self.scan.write(data)
        except OSError as exc:  # the spool's disk
            self.broken = f"cannot spool the message: {exc.strerror or exc}"


class Connection(Milter.Base):
    """One MTA connection (an SMTP session); its messages one after another."""

    service: MilterService  # set by the runner before libmilter starts

    def __init__(self):
        self.hostname: str | None = None
        self.client: str | None = None
        self.message: Message | None = None

    # -- connection and envelope ---------------------------------------------

    def connect(self, hostname, family, hostaddr):
        self.hostname = hostname
        if family in (socket.AF_INET, socket.AF_INET6) and hostaddr:
            self.client = hostaddr[0]
        settings = self.service.settings
        if hostaddr is not None:
            skipped = settings.skip.local_nets.matches(None, self.client) if self.client else False
        else:
            skipped = settings.skip.local_nets.matches(hostname, None)
        if skipped:
            self.service.log.debug(f"Skipping scan for {hostname} (in LocalNet)")
            return Milter.ACCEPT
        return Milter.CONTINUE

    def envfrom(self, sender, *params):
        self._end_message()
        if self.service.stopping:
            self.setreply("451", "4.3.2", "Virus scanner shutting down, try again later")
            return Milter.TEMPFAIL
        settings = self.service.settings
        login = self.getsymval("{auth_authen}")
        if settings.skip.login_skipped(login):
            self.service.log.debug(f"Skipping scan for authenticated user {login}")
            return Milter.ACCEPT
        if settings.skip.allow.sender_allowed(sender):
            self.service.log.debug(f"Skipping scan for {sender} (allowed from)")
            return Milter.ACCEPT
        scan = MessageScan(self.service.pool, settings.max_file_size,
                           settings.temporary_directory)
        self.message = Message(sender, scan)
        self.service.message_started()
        return Milter.CONTINUE

    @Milter.noreply
    def envrcpt(self, recipient, *params):
        message = self.message
        if message is not None:
            message.recipients.append(recipient)
            if message.all_allowed:
                message.all_allowed = self.service.settings.skip.allow.recipient_allowed(recipient)
        return Milter.CONTINUE

    def data(self):
        message = self.message
        if message is not None and message.all_allowed:
            self.service.log.debug("Skipping scan (all destinations allowed)")
            self._end_message()
            return Milter.ACCEPT
        return Milter.CONTINUE

    # -- content ---------------------------------------------------------------

    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, name, value):
        message = self.message
        if message is None:
            return Milter.CONTINUE
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        settings = self.service.settings
        lowered = name.lower()
        if "Full" in (settings.log_infected, settings.log_clean) or settings.virus_action:
            text = value.decode("utf-8", "replace")
            if lowered == "subject" and message.subject is None:
                message.subject = text
            elif lowered == "date" and message.date is None:
                message.date = text
            elif lowered == "message-id" and message.message_id is None:
                message.message_id = text
        if lowered == SCANNED_HEADER.lower():
            message.scanned_headers += 1
        elif lowered == STATUS_HEADER.lower():
            message.status_headers += 1
        message.write(name.encode("utf-8", "surrogateescape") + b": " + value + b"\r\n")
        return Milter.CONTINUE

    @Milter.noreply
    def body(self, chunk):
        message = self.message
        if message is None:
            return Milter.CONTINUE
        if not message.got_body:
            message.got_body = True
            message.write(b"\r\n")
        message.write(chunk)
        return Milter.CONTINUE

    def eom(self):
        message = self.message
        if message is None:
            return Milter.CONTINUE
        try:
            return self._decide(message)
        except Exception as exc:  # noqa: BLE001 - never accept a message on our own error
            self.service.log.error(f"Internal error while finishing a message: {exc!r}")
            return Milter.TEMPFAIL
        finally:
            self._end_message()

    def abort(self):
        self._end_message()
        return Milter.CONTINUE

    def close(self):
        self._end_message()
        return Milter.CONTINUE

    def _end_message(self) -> None:
        if self.message is not None:
            self.message.scan.close()
            self.message = None
            self.service.message_done()

    # -- the decision ----------------------------------------------------------

    def _decide(self, message: Message) -> int:
        service = self.service
        policy = service.settings.policy
        result: ScanResult | None = None
        if message.sent == 0:
            service.log.debug("Not scanning an empty message")
            decision = policy.decide_unscanned()
        else:
            result = message.scan.finish()
            if message.broken:
                result = ScanResult(None, None, message.broken, message.sent, 0)
            decision = policy.decide(result)
            if result.failed:
                service.log.error(f"No verdict for the message: {result.failure}")
        self._edit_headers(decision, message)
        reply = self._milter_reply(decision)
        self._log(decision, message)
        if decision.outcome is Outcome.INFECTED and service.settings.virus_action:
            self._virus_action(decision.signature, message)
        if service.settings.summary:
            service.log.info(summary_line(
                queue_id=self.getsymval("i"), client=self.client or self.hostname,
                sender=message.sender, recipients=len(message.recipients), size=message.sent,
                decision=decision, result=result))
        if service.metrics is not None:
            service.metrics.message(decision, result, message.sent)
        return reply

    def _edit_headers(self, decision: Decision, message: Message) -> None:
        value = decision.status_header
        if value is None or decision.header_mode is HeaderMode.NO:
            return
        scanned = self.service.settings.policy.scanned_header
        try:
            if decision.header_mode is HeaderMode.REPLACE:
                for index in range(message.scanned_headers, 0, -1):
                    self.chgheader(SCANNED_HEADER, index, None)
                for index in range(message.status_headers, 0, -1):
                    self.chgheader(STATUS_HEADER, index, None)
                self.addheader(SCANNED_HEADER, scanned)
                self.addheader(STATUS_HEADER, value)
            else:  # Add: on top (clamav-milter inserts both at index 1)
                self.addheader(SCANNED_HEADER, scanned, 1)
                self.addheader(STATUS_HEADER, value, 1)
        except Exception as exc:  # noqa: BLE001 - clamav-milter warns and goes on
            self.service.log.warning(f"Failed to add the X-Virus headers: {exc}")

    def _milter_reply(self, decision: Decision) -> int:
        action = decision.action
        if action is Action.QUARANTINE:
            try:
                self.quarantine(QUARANTINE_REASON)
            except Exception:  # noqa: BLE001 - the MTA refused: keep the message with the sender
                self.service.log.warning("Failed to quarantine message")
                return Milter.TEMPFAIL
            return Milter.ACCEPT
        if action is Action.REJECT and decision.reply is not None:
            reply = decision.reply
            self.setreply(reply.code, reply.xcode, reply.text.replace("%", "%%"))
        return _REPLIES[action]

    def _log(self, decision: Decision, message: Message) -> None:
        """The lines clamav-milter writes for LogInfected and LogClean."""
        settings = self.service.settings
        log = self.service.log
        sender = self.getsymval("{mail_addr}")
        if decision.outcome is Outcome.CLEAN and settings.log_clean != "Off":
            for recipient in self._logged_recipients(message):
                if settings.log_clean == "Full":
                    log.info(f"Clean message {self.getsymval('i')} from <{sender}> to "
                             f"<{recipient}> with subject '{_sane(message.subject)}' message-id "
                             f"'{_sane(message.message_id)}' date '{_sane(message.date)}'")
                else:
                    log.info(f"Clean message from <{sender}> to <{recipient}>")
        elif decision.outcome is Outcome.INFECTED and settings.log_infected != "Off":
            name = decision.signature
            for recipient in self._logged_recipients(message):
                if settings.log_infected == "Full":
                    log.info(f"Message {self.getsymval('i') or UNKNOWN} from "
                             f"<{sender or UNKNOWN}> to <{recipient}> with subject "
                             f"'{_sane(message.subject)}' message-id '{_sane(message.message_id)}' "
                             f"date '{_sane(message.date)}' infected by {name}")
                else:
                    log.info(f"Message from <{sender or UNKNOWN}> to <{recipient}> "
                             f"infected by {name}")

    def _logged_recipients(self, message: Message) -> list[str]:
        """Every recipient with SupportMultipleRecipients, else the MTA's last {rcpt_addr}."""
        if self.service.settings.multiple_recipients and message.recipients:
            return list(message.recipients)
        return [self.getsymval("{rcpt_addr}") or UNKNOWN]

    def _virus_action(self, name: str, message: Message) -> None:
        """VirusAction: the command with virus, queue id, sender, recipient, subject, id, date."""
        command = self.service.settings.virus_action
        for recipient in self._logged_recipients(message):
            args = [command, name, self.getsymval("i") or UNKNOWN,
                    self.getsymval("{mail_addr}") or UNKNOWN, recipient,
                    _sane(message.subject), _sane(message.message_id), _sane(message.date)]
            self.service.log.debug(f"VirusEvent: about to execute {args!r}")
            try:
                done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, check=False)
            except OSError as exc:
                self.service.log.error(f"VirusEvent: fork failed: {exc.strerror or exc}")
                continue
            self.service.log.debug(f"VirusEvent: child exited with code {done.returncode}")


def connection_class(settings: MilterSettings) -> type[Connection]:
    """Connection, with the steps the settings make idle turned into no-reply ones.

    pymilter reads the protocol steps to negotiate from the class: without
    LocalNet the connect step can only continue, and without recipient
    rules in the AllowList the DATA step is not needed at all.
    """
    steps = {}
    if not settings.skip.local_nets:
        steps["connect"] = Milter.noreply(Connection.connect)
    if not settings.skip.allow.recipients:
        steps["data"] = Milter.nocallback(Connection.data)
    return type("Connection", (Connection,), steps)
