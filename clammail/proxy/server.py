"""The proxy's SMTP side: aiosmtpd receives, the next hop decides what "accepted" means.

Each SMTP session of the sending MTA is mirrored on a session with the next
hop, command by command: MAIL and RCPT are relayed as they come, so each
recipient gets the next hop's own answer. At the end of DATA the message is
scanned, the policy decides, and then:

- pass (Accept, or Strip with the infected parts replaced): the message,
  with its headers and ARC set as configured, goes to the next hop, and the
  sender gets the next hop's reply to it -- 250 only once the next hop took
  the message;
- Reject / Defer: the next hop's transaction is reset, the sender gets a
  5xx / 4xx;
- Blackhole: reset, 250;
- Quarantine: the message is written to the quarantine (fsync-ed), reset,
  then 250; if it cannot be written, 4xx.

Any failure -- no verdict, the next hop gone or slow, the quarantine's disk
full -- ends in a 4xx (or OnFail's choice for a failed scan), so the
message stays with the sender, which retries. This works in front of
Postfix's after-queue `content_filter` and as its before-queue
`smtpd_proxy_filter` alike. XFORWARD and XCLIENT are accepted from the
sending MTA and passed to the next hop when it offers them.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope, Session

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
from clammail.mailfilter.scan import ScanResult, scan_bytes
from clammail.mailfilter.summary import summary_line
from clammail.proxy import authentication, edit
from clammail.proxy.nexthop import NextHop, NextHopError, Reply
from clammail.proxy.quarantine import Quarantine
from clammail.proxy.settings import ProxySettings

XFORWARD_ATTRS = "NAME ADDR PORT PROTO HELO IDENT SOURCE"
XCLIENT_ATTRS = "NAME ADDR PORT PROTO HELO LOGIN"
END_OF_DATA = b"\r\n.\r\n"
# Room in the stream buffer beyond MaxMessageSize: the dot-stuffing and the
# terminator of a message just under the limit.
DATA_SLACK = 64 * 1024

TEMPFAIL_SCAN = "451 4.3.0 Virus scan failed; try again later"
TEMPFAIL_NEXT_HOP = "451 4.4.1 Next hop unavailable; try again later"
TEMPFAIL_QUARANTINE = "451 4.3.0 Quarantine unavailable; try again later"
TEMPFAIL_STOPPING = "421 4.3.2 Service shutting down"


@dataclass
class SessionState:
    """What the proxy keeps per SMTP session: the next hop and the client's identity."""

    next_hop: NextHop | None = None
    xforward: dict[str, str] = field(default_factory=dict)
    xclient: dict[str, str] = field(default_factory=dict)


def _state(session: Session) -> SessionState:
    state = getattr(session, "clammail", None)
    if state is None:
        state = SessionState()
        session.clammail = state
    return state


def _parse_attributes(arg: str) -> dict[str, str] | None:
    attrs = {}
    for item in arg.split():
        name, sep, value = item.partition("=")
        if not sep:
            return None
        attrs[name.upper()] = value
    return attrs


class ProxySMTP(SMTP):
    """aiosmtpd's SMTP with XFORWARD and XCLIENT, a connection limit, and DATA read whole.

    aiosmtpd reads DATA a line at a time (a Python loop per line: 22 ms of
    CPU for a 250 KB message, measured); the proxy reads up to the final
    dot in one call instead. Its stream buffer is MaxMessageSize (and a
    little) long, so a session never holds more than that.
    """

    def __init__(self, handler: ProxyHandler, lmtp: bool = False, **kwargs):
        limit = kwargs.get("data_size_limit") or 25 * 1024 * 1024
        self.line_length_limit = limit + DATA_SLACK  # read by SMTP.__init__ for the buffer
        super().__init__(handler, **kwargs)
        self.proxy = handler
        self.lmtp = lmtp  # LMTP (RFC 2033): LHLO, and one DATA answer per recipient

    async def smtp_LHLO(self, arg: str) -> None:
        if not self.lmtp:
            await self.push('500 Error: command "LHLO" not recognized')
            return
        await super().smtp_EHLO(arg)

    async def smtp_EHLO(self, arg: str) -> None:
        if self.lmtp:
            await self.push('500 Error: command "EHLO" not recognized')
            return
        await super().smtp_EHLO(arg)

    async def smtp_HELO(self, arg: str) -> None:
        if self.lmtp:
            await self.push('500 Error: command "HELO" not recognized')
            return
        await super().smtp_HELO(arg)

    def connection_made(self, transport) -> None:
        if self.proxy.connections >= self.proxy.settings.max_connections or self.proxy.stopping:
            transport.write(b"421 4.3.2 Too many connections, try again later\r\n"
                            if not self.proxy.stopping else TEMPFAIL_STOPPING.encode() + b"\r\n")
            transport.close()
            self._refused = True
            return
        self._refused = False
        self.proxy.connections += 1
        super().connection_made(transport)

    def connection_lost(self, error) -> None:
        if getattr(self, "_refused", False):
            return
        self.proxy.connections -= 1
        state = getattr(self.session, "clammail", None) if self.session else None
        if state is not None and state.next_hop is not None:
            asyncio.get_event_loop().create_task(state.next_hop.close())
            state.next_hop = None
        super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, too_big = await self._read_data()
        if content is None:
            return  # the connection is gone
        if too_big:
            await self.push("552 5.3.4 Error: Too much mail data")
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = content
        self.session.lmtp = self.lmtp
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def _read_data(self) -> tuple[bytes | None, bool]:
        """The message up to the final dot, dot-stuffing undone; (None, _) if the client left."""
        reader = self._reader
        try:
            first = await reader.readuntil(b"\r\n")
            if first == b".\r\n":
                return b"", False
            try:
                rest = await reader.readuntil(END_OF_DATA)
            except asyncio.LimitOverrunError:
                await self._discard_data()
                return b"", True
        except (asyncio.IncompleteReadError, ConnectionError):
            return None, False
        except asyncio.LimitOverrunError:  # a first line longer than the whole limit
            await self._discard_data()
            return b"", True
        data = first + rest[:-3]  # keep the last line's CRLF, drop ".CRLF"
        if len(data) > (self.data_size_limit or len(data)):
            return b"", True
        if data.startswith(b"."):
            data = data[1:]
        return data.replace(b"\r\n.", b"\r\n"), False

    async def _discard_data(self) -> None:
        """Read and forget the rest of an oversized message, up to its final dot."""
        tail = b""
        while True:
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                return
            window = tail + chunk
            if END_OF_DATA in window:
                return
            tail = window[-4:]

    async def smtp_XFORWARD(self, arg: str) -> None:
        attrs = _parse_attributes(arg or "")
        if not attrs:
            await self.push("501 5.5.4 Syntax: XFORWARD attribute=value...")
            return
        _state(self.session).xforward.update(attrs)
        await self.push("250 2.0.0 Ok")

    async def smtp_XCLIENT(self, arg: str) -> None:
        attrs = _parse_attributes(arg or "")
        if not attrs:
            await self.push("501 5.5.4 Syntax: XCLIENT attribute=value...")
            return
        _state(self.session).xclient.update(attrs)
        # XCLIENT starts a new session: greet again (Postfix's XCLIENT_README).
        self.session.host_name = None
        self.envelope = self._create_envelope()
        await self.push(f"220 {self.hostname} ESMTP clammail")


class ProxyHandler:
    """aiosmtpd's handler: the hooks the SMTP class calls."""

    def __init__(self, settings: ProxySettings, pool: BackendPool, log, metrics: Metrics | None):
        self.settings = settings
        self.pool = pool
        self.log = log
        self.metrics = metrics
        self.quarantine = Quarantine(settings.quarantine_directory)
        self.resolver = authentication.Resolver(settings.dns_records_file)
        self.connections = 0
        self.in_flight = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- envelope ------------------------------------------------------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        last = responses.pop()
        responses.append(f"250-XFORWARD {XFORWARD_ATTRS}")
        responses.append(f"250-XCLIENT {XCLIENT_ATTRS}")
        responses.append(last)
        return responses

    async def _next_hop(self, session: Session) -> NextHop:
        state = _state(session)
        if state.next_hop is not None and state.next_hop.connected:
            return state.next_hop
        settings = self.settings
        hop = NextHop(settings.next_hop, helo=settings.hostname, timeout=settings.next_hop_timeout,
                      starttls=settings.next_hop_starttls, tls_verify=settings.next_hop_tls_verify,
                      user=settings.next_hop_user, password=settings.next_hop_password)
        try:
            await hop.connect()
            await hop.forward_identity(state.xforward, state.xclient)
        except NextHopError:
            await hop.close()
            raise
        state.next_hop = hop
        return hop

    async def handle_MAIL(self, server, session, envelope: Envelope, address, mail_options):
        if self.stopping:
            return TEMPFAIL_STOPPING
        try:
            hop = await self._next_hop(session)
            reply = await hop.command(" ".join([f"MAIL FROM:<{address}>",
                                                *_passed_options(mail_options, hop)]))
        except NextHopError as exc:
            self.log.warning(f"Next hop: {exc}")
            await self._drop_next_hop(session)
            return TEMPFAIL_NEXT_HOP
        if reply.code == 530:
            # The next hop wants STARTTLS or AUTH the proxy is not set up for:
            # our problem, not the sender's, so not a permanent refusal.
            self.log.error(f"Next hop {hop} refused us: {reply.wire()} "
                           "(see NextHopStartTLS, NextHopUser)")
            await self._drop_next_hop(session)
            return TEMPFAIL_NEXT_HOP
        if reply.ok:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply.wire()

    async def handle_RCPT(self, server, session, envelope: Envelope, address, rcpt_options):
        state = _state(session)
        if state.next_hop is None:
            return TEMPFAIL_NEXT_HOP
        try:
            reply = await state.next_hop.command(f"RCPT TO:<{address}>")
        except NextHopError as exc:
            self.log.warning(f"Next hop: {exc}")
            await self._drop_next_hop(session)
            return TEMPFAIL_NEXT_HOP
        if reply.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply.wire()

    async def handle_RSET(self, server, session, envelope):
        state = _state(session)
        if state.next_hop is not None:
            await state.next_hop.rset()
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        await self._drop_next_hop(session)
        return "221 Bye"

    async def _drop_next_hop(self, session: Session) -> None:
        state = _state(session)
        if state.next_hop is not None:
            hop, state.next_hop = state.next_hop, None
            await hop.close()

    # -- the message ---------------------------------------------------------------

    async def handle_DATA(self, server, session, envelope: Envelope) -> str:
        self.in_flight += 1
        self._idle.clear()
        try:
            return await self._handle_message(session, envelope)
        except Exception as exc:  # noqa: BLE001 - our own error never loses or passes mail
            self.log.error(f"Internal error while handling a message: {exc!r}")
            await self._drop_next_hop(session)
            return TEMPFAIL_SCAN
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def _handle_message(self, session: Session, envelope: Envelope) -> str:
        settings = self.settings
        content: bytes = envelope.original_content or b""
        result = await scan_bytes(self.pool, content, settings.max_message_size)
        decision = settings.policy.decide(result)
        if result.failed:
            self.log.error(f"No verdict for the message: {result.failure}")
        reply, why = await self._act(session, envelope, content, decision, result)
        self._record(session, envelope, content, decision, result, why)
        if getattr(session, "lmtp", False) and "\r\n" not in reply:
            reply = "\r\n".join([reply] * len(envelope.rcpt_tos))  # LMTP: one per recipient
        return reply

    async def _act(self, session, envelope, content: bytes, decision: Decision,
                   result: ScanResult) -> tuple[str, str]:
        """Carry the decision out: (the reply for the sender, a note for the log)."""
        action = decision.action
        if decision.outcome is Outcome.FAILED:
            if action is Action.ACCEPT:  # OnFail Accept: the administrator's choice
                return await self._deliver(session, envelope, content, decision, [], None), \
                    "unscanned"
            await self._reset(session)
            if action is Action.REJECT:
                return "554 5.7.0 Virus scan failed", ""
            return TEMPFAIL_SCAN, ""
        if action is Action.REJECT:
            await self._reset(session)
            if decision.reply is not None:
                return f"{decision.reply.code} {decision.reply.xcode} {decision.reply.text}", ""
            if decision.outcome is Outcome.INFECTED:
                return f"554 5.7.1 Message refused: virus found ({decision.signature})", ""
            return "554 5.7.1 Message refused", ""
        if action is Action.DEFER:
            await self._reset(session)
            return "451 4.7.1 Message deferred by policy; try again later", ""
        if action is Action.DISCARD:
            await self._reset(session)
            return "250 2.0.0 Ok: discarded", "discarded"
        if action is Action.QUARANTINE:
            return await self._quarantine(session, envelope, content, decision, result)
        results = None
        if self.settings.dkim_verify:  # what arrived, before anything is changed
            results = await asyncio.to_thread(authentication.results_header, content,
                                              self.settings.authserv_id, self.resolver)
        stripped: list[str] = []
        if action is Action.STRIP:
            content, stripped = await edit.strip_infected(content, self._scan_part)
            if not stripped:
                # Nothing to cut out alone (the infection is in the message as a
                # whole): refuse rather than deliver it.
                await self._reset(session)
                return (f"554 5.7.1 Message refused: virus found ({decision.signature})",
                        "nothing to strip")
        return await self._deliver(session, envelope, content, decision, stripped, results), \
            ("stripped " + ",".join(stripped)) if stripped else ""

    async def _scan_part(self, data: bytes) -> str | None:
        result = await scan_bytes(self.pool, data, self.settings.max_message_size)
        return result.signature if result.infected else None

    async def _deliver(self, session, envelope, content: bytes, decision: Decision,
                       stripped: list[str], results: bytes | None) -> str:
        settings = self.settings
        changed = bool(stripped)
        if settings.subject_tag and decision.outcome is Outcome.INFECTED:
            content = edit.tag_subject(content, settings.subject_tag)
            changed = True
        if results is not None:
            content = authentication.with_results(content, results, settings.authserv_id)
        if decision.status_header is not None and decision.header_mode is not HeaderMode.NO:
            remove = (SCANNED_HEADER, STATUS_HEADER) \
                if decision.header_mode is HeaderMode.REPLACE else ()
            content = edit.with_headers(
                content, [(SCANNED_HEADER, settings.policy.scanned_header),
                          (STATUS_HEADER, decision.status_header)], remove)
        if changed and settings.arc_key is not None:
            key = settings.arc_key
            content = await asyncio.to_thread(authentication.arc_seal, content, key.domain,
                                              key.selector, key.key, settings.authserv_id)
        signer = self._signing_key(envelope.mail_from)
        if signer is not None:
            content = await asyncio.to_thread(authentication.dkim_sign, content, signer.domain,
                                              signer.selector, signer.key)
        state = _state(session)
        if state.next_hop is None:
            return TEMPFAIL_NEXT_HOP
        try:
            replies = await state.next_hop.data(content, len(envelope.rcpt_tos))
        except NextHopError as exc:
            self.log.warning(f"Next hop: {exc}")
            await self._drop_next_hop(session)
            return TEMPFAIL_NEXT_HOP
        return _combine(replies, len(envelope.rcpt_tos), getattr(session, "lmtp", False))

    def _signing_key(self, sender: str | None):
        domain = (sender or "").rpartition("@")[2].lower()
        for key in self.settings.dkim_sign:
            if key.domain == domain:
                return key
        return None

    async def _quarantine(self, session, envelope, content: bytes, decision: Decision,
                          result: ScanResult) -> tuple[str, str]:
        state = _state(session)
        meta = {
            "envelope": {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                         "mail_options": list(envelope.mail_options)},
            "verdict": decision.outcome.value,
            "signature": decision.signature,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "client": {"peer": str(session.peer[0]) if session.peer else None,
                       "helo": session.host_name, **{k.lower(): v for k, v in
                                                     state.xforward.items()}},
            "backend": str(result.backend) if result.backend else None,
        }
        try:
            entry_id = await asyncio.to_thread(self.quarantine.store, content, meta)
        except OSError as exc:
            self.log.error(f"Quarantine: cannot keep the message: {exc.strerror or exc}")
            await self._reset(session)
            return TEMPFAIL_QUARANTINE, "quarantine failed"
        await self._reset(session)
        return f"250 2.0.0 Ok: quarantined as {entry_id}", f"quarantined {entry_id}"

    async def _reset(self, session) -> None:
        state = _state(session)
        if state.next_hop is not None:
            await state.next_hop.rset()

    def _record(self, session, envelope, content, decision, result, why) -> None:
        state = _state(session)
        client = state.xforward.get("ADDR") or (session.peer[0] if session.peer else None)
        if self.settings.summary:
            self.log.info(summary_line(
                queue_id=state.xforward.get("IDENT"), client=str(client) if client else None,
                sender=envelope.mail_from, recipients=len(envelope.rcpt_tos), size=len(content),
                decision=decision, result=result, why=why))
        if self.metrics is not None:
            self.metrics.message(decision, result, len(content))

    async def wait_idle(self, timeout: float) -> int:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            pass
        return self.in_flight


def _passed_options(options: list[str], hop: NextHop) -> list[str]:
    """The MAIL FROM parameters the next hop announced support for."""
    needs = {"SIZE": "SIZE", "BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8"}
    return [o for o in options if needs.get(o.split("=", 1)[0].upper()) in hop.extensions]


def _combine(replies: list[Reply], recipients: int, lmtp_sender: bool) -> str:
    """The reply to the sender for the next hop's answer(s) to the message.

    An SMTP next hop gives one, an LMTP one one per recipient. An LMTP
    sender gets one per recipient: the next hop's own, or its single SMTP
    answer repeated. An SMTP sender gets one: all accepted is a 250,
    otherwise the first refusal stands for the message (what the sender
    then does for all recipients, LMTP delivery of some cannot undo).
    """
    if lmtp_sender:
        if len(replies) == 1:
            replies = replies * recipients
        return "\r\n".join(r.wire() for r in replies)
    for reply in replies:
        if not reply.ok:
            return reply.wire()
    return replies[0].wire()
