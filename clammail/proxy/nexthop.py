"""The proxy's client side: one SMTP or LMTP session with the next hop.

A small asyncio client written for the proxy's needs: replies are kept
whole (code, enhanced code, every line) so they can be relayed to the
sending MTA as the next hop gave them; XFORWARD and XCLIENT pass the
original client's identity on; STARTTLS and AUTH (PLAIN, LOGIN) when
configured; LMTP's DATA answers once per recipient. Reply parsing is a
pure function (`parse_reply`) over the lines received.

A failure to talk to the next hop (refused, timed out, closed) raises
`NextHopError`; the proxy then answers the sender with a 4xx and keeps
nothing, so the sender's queue keeps the message.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass

# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; the StreamReader's
# limit bounds what a misbehaving next hop can make us hold.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


class NextHopError(Exception):
    """The next hop could not be reached or stopped answering."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text of each line, without the code

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def wire(self) -> str:
        """The reply as the next hop wrote it (lines joined by CRLF, no final CRLF)."""
        if not self.lines:
            return str(self.code)
        last = len(self.lines) - 1
        return "\r\n".join(f"{self.code}{' ' if i == last else '-'}{line}"
                           for i, line in enumerate(self.lines))

    @property
    def extensions(self) -> dict[str, str]:
        """EHLO keywords and their parameters (the first line is the greeting)."""
        out = {}
        for line in self.lines[1:]:
            keyword, _, params = line.partition(" ")
            out[keyword.upper()] = params
        return out


def parse_reply(lines: list[bytes]) -> Reply:
    """One reply from its raw lines ("250-a", "250 b"); NextHopError when malformed."""
    code = None
    texts = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
            raise NextHopError(f"malformed reply line from the next hop: {line[:100]!r}")
        if code is not None and int(line[:3]) != code:
            raise NextHopError("reply lines with different codes from the next hop")
        code = int(line[:3])
        texts.append(line[4:])
    if code is None:
        raise NextHopError("empty reply from the next hop")
    return Reply(code, tuple(texts))


def parse_next_hop(text: str) -> tuple[str, str, object]:
    """NextHop -> (protocol, kind, where): `host:port`, `smtp:host:port`, `lmtp:host:port`,
    `unix:/path`, `lmtp:unix:/path`."""
    protocol = "smtp"
    rest = text
    for prefix in ("smtp:", "lmtp:"):
        if rest.startswith(prefix):
            protocol, rest = prefix[:-1], rest[len(prefix):]
    if rest.startswith("unix:") or rest.startswith("/"):
        path = rest[5:] if rest.startswith("unix:") else rest
        if not path.startswith("/"):
            raise ValueError(f"NextHop {text}: a unix socket needs an absolute path")
        return protocol, "unix", path
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]:")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"NextHop {text}: expected host:port or unix:/path")
    return protocol, "tcp", (host, int(port))


def dot_stuff(content: bytes) -> bytes:
    """The DATA body on the wire: CRLF line ends, leading dots doubled, ended by CRLF.CRLF.

    What came in over SMTP already has CRLF line ends and goes out byte for
    byte; a bare LF (in parts the proxy wrote itself) becomes CRLF.
    """
    if content.count(b"\n") != content.count(b"\r\n"):
        content = re.sub(rb"\r?\n", b"\r\n", content)
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class NextHop:
    """One connection to the next hop; methods return its Reply to each command."""

    def __init__(self, where: str, *, helo: str, timeout: float = 300.0,
                 starttls: str = "No", tls_verify: bool = False,
                 user: str | None = None, password: str | None = None):
        self.protocol, self.kind, self.where = parse_next_hop(where)
        self.helo = helo
        self.timeout = timeout
        self.starttls_mode = starttls.lower()
        self.tls_verify = tls_verify
        self.user, self.password = user, password
        self.extensions: dict[str, str] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    def __str__(self) -> str:
        where = self.where if self.kind == "unix" else f"{self.where[0]}:{self.where[1]}"
        return f"{self.protocol}:{where}"

    # -- the wire ------------------------------------------------------------------

    async def _read_reply(self) -> Reply:
        lines = []
        try:
            # One deadline for the whole reply, however many lines it has.
            async with asyncio.timeout(self.timeout):
                return await self._read_lines(lines)
        except TimeoutError:
            raise NextHopError(f"{self}: no reply in {self.timeout:g} s") from None
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            raise NextHopError(f"{self}: {exc}") from None

    async def _read_lines(self, lines: list[bytes]) -> Reply:
        while len(lines) < MAX_REPLY_LINES:
            line = await self._reader.readline()
            if not line:
                raise NextHopError(f"{self}: the next hop closed the connection")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return parse_reply(lines)
        raise NextHopError(f"{self}: a reply of more than {MAX_REPLY_LINES} lines")

    async def _send(self, data: bytes) -> None:
        if self._writer is None:
            raise NextHopError(f"{self}: not connected")
        try:
            self._writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self._writer.drain()
        except TimeoutError:
            raise NextHopError(f"{self}: does not take data ({self.timeout:g} s)") from None
        except OSError as exc:
            raise NextHopError(f"{self}: {exc}") from None

    async def command(self, line: str) -> Reply:
        await self._send(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return await self._read_reply()

    # -- the session -----------------------------------------------------------------

    async def connect(self) -> Reply:
        """Connect, greet, and do STARTTLS and AUTH as configured; the EHLO/LHLO reply."""
        try:
            if self.kind == "unix":
                opening = asyncio.open_unix_connection(self.where, limit=MAX_REPLY_LINE)
            else:
                opening = asyncio.open_connection(*self.where, limit=MAX_REPLY_LINE)
            self._reader, self._writer = await asyncio.wait_for(opening, self.timeout)
        except TimeoutError:
            raise NextHopError(f"{self}: connect timed out") from None
        except OSError as exc:
            raise NextHopError(f"{self}: {exc.strerror or exc}") from None
        greeting = await self._read_reply()
        if greeting.code != 220:
            raise NextHopError(f"{self}: greeted with {greeting.wire()!r}")
        reply = await self._hello()
        if self.starttls_mode != "no":
            reply = await self._starttls(reply)
        if self.user:
            await self._auth()
        return reply

    async def _hello(self) -> Reply:
        verb = "LHLO" if self.protocol == "lmtp" else "EHLO"
        reply = await self.command(f"{verb} {self.helo}")
        if not reply.ok:
            raise NextHopError(f"{self}: {verb} refused: {reply.wire()!r}")
        self.extensions = reply.extensions
        return reply

    async def _starttls(self, hello: Reply) -> Reply:
        if "STARTTLS" not in self.extensions:
            if self.starttls_mode == "required":
                raise NextHopError(f"{self}: STARTTLS required but not offered")
            return hello
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            raise NextHopError(f"{self}: STARTTLS refused: {reply.wire()!r}")
        context = ssl.create_default_context()
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        host = self.where[0] if self.kind == "tcp" else None
        try:
            await asyncio.wait_for(self._writer.start_tls(context, server_hostname=host),
                                   self.timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise NextHopError(f"{self}: TLS handshake failed: {exc}") from None
        return await self._hello()

    async def _auth(self) -> None:
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode()
            reply = await self.command(f"AUTH PLAIN {token}")
        elif "LOGIN" in mechanisms:
            reply = await self.command("AUTH LOGIN")
            if reply.code == 334:
                reply = await self.command(base64.b64encode(self.user.encode()).decode())
            if reply.code == 334:
                reply = await self.command(base64.b64encode(self.password.encode()).decode())
        else:
            raise NextHopError(f"{self}: no AUTH mechanism we know (offered: {mechanisms})")
        if reply.code != 235:
            raise NextHopError(f"{self}: authentication failed: {reply.wire()!r}")

    async def forward_identity(self, xforward: dict[str, str], xclient: dict[str, str]) -> None:
        """Pass the original client on with XFORWARD (or XCLIENT) when the next hop takes it."""
        if xforward and "XFORWARD" in self.extensions:
            offered = set(self.extensions["XFORWARD"].upper().split())
            items = [f"{k}={v}" for k, v in xforward.items() if k in offered]
            if items:
                await self._expect_ok(f"XFORWARD {' '.join(items)}")
        if xclient and "XCLIENT" in self.extensions:
            offered = set(self.extensions["XCLIENT"].upper().split())
            items = [f"{k}={v}" for k, v in xclient.items() if k in offered]
            if items:
                # XCLIENT resets the session: the next hop greets again.
                await self._send(f"XCLIENT {' '.join(items)}\r\n".encode())
                reply = await self._read_reply()
                if reply.code != 220:
                    raise NextHopError(f"{self}: XCLIENT refused: {reply.wire()!r}")
                await self._hello()

    async def _expect_ok(self, line: str) -> Reply:
        reply = await self.command(line)
        if not reply.ok:
            raise NextHopError(f"{self}: {line.split()[0]} refused: {reply.wire()!r}")
        return reply

    async def data(self, content: bytes, recipients: int) -> list[Reply]:
        """Send the message; one reply (SMTP) or one per accepted recipient (LMTP)."""
        reply = await self.command("DATA")
        if reply.code != 354:
            return [reply]
        await self._send(dot_stuff(content))
        count = recipients if self.protocol == "lmtp" else 1
        return [await self._read_reply() for _ in range(count)]

    async def rset(self) -> None:
        try:
            await self.command("RSET")
        except NextHopError:
            await self.close()

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.write(b"QUIT\r\n")
            await asyncio.wait_for(writer.drain(), 5)
        except (OSError, TimeoutError):
            pass
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 5)
        except (OSError, TimeoutError):
            pass

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()


def enhanced_code(reply_text: str) -> str:
    """The RFC 3463 enhanced status code at the start of a reply's text, if any."""
    first = reply_text.split(" ", 1)[0]
    return first if _ENHANCED.match(first) else ""
