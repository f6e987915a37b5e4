"""The MTA's side of the milter protocol (version 6), for driving a milter from tests.

It speaks to clammail's milter and to clamav-milter alike, the way Postfix
and Sendmail do (sendmail's libmilter/docs, Postfix's milter8.c): option
negotiation, macros, the SMTP stages, header and body, end of message.
Everything the milter asks for at the end of a message -- added, inserted
and changed headers, the SMTP reply text, quarantine -- is recorded in a
`Result`, so a test compares two milters' answers as a whole. It also sends
what a well-behaved MTA would not (NUL bytes, 100 000 headers), to test
the milter on bad input.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

# Commands (MTA -> milter) and replies (milter -> MTA), libmilter's mfdef.h.
SMFIC_OPTNEG, SMFIC_MACRO, SMFIC_CONNECT, SMFIC_HELO = b"O", b"D", b"C", b"H"
SMFIC_MAIL, SMFIC_RCPT, SMFIC_DATA, SMFIC_HEADER = b"M", b"R", b"T", b"L"
SMFIC_EOH, SMFIC_BODY, SMFIC_BODYEOB, SMFIC_ABORT, SMFIC_QUIT = b"N", b"B", b"E", b"A", b"Q"
FINAL = {b"a": "accept", b"r": "reject", b"t": "tempfail", b"d": "discard", b"c": "continue",
         b"y": "replycode"}

# Protocol steps a milter may decline (SMFIP_NO*) or not answer (SMFIP_NR_*).
P_NOCONNECT, P_NOHELO, P_NOMAIL, P_NORCPT = 0x1, 0x2, 0x4, 0x8
P_NOBODY, P_NOHDRS, P_NOEOH, P_NR_HDR = 0x10, 0x20, 0x40, 0x80
P_NODATA, P_NR_CONN, P_NR_HELO, P_NR_MAIL = 0x200, 0x1000, 0x2000, 0x4000
P_NR_RCPT, P_NR_DATA, P_NR_EOH, P_NR_BODY = 0x8000, 0x10000, 0x40000, 0x80000
ALL_ACTIONS = 0x1FF
ALL_PROTOCOL = 0x1FFFFF
BODY_CHUNK = 65535  # MILTER_CHUNK_SIZE


class MilterClosed(Exception):
    """The milter closed the connection (or answered nothing in time)."""


@dataclass
class Result:
    """What the milter decided about one message."""

    action: str  # accept, reject, tempfail, discard, continue (or the stage's early answer)
    stage: str = "eom"  # where the decision came: connect, mail, rcpt, header, body, eom
    reply: str | None = None  # "550 5.7.1 text" when the milter set one
    added: list[tuple[str, str]] = field(default_factory=list)
    inserted: list[tuple[int, str, str]] = field(default_factory=list)
    changed: list[tuple[int, str, str | None]] = field(default_factory=list)
    quarantine: str | None = None


def _packet(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd + data


class MilterClient:
    def __init__(self, address: str, timeout: float = 60.0):
        """`address`: a unix socket path, or "inet:port@host" as in MilterSocket."""
        if address.startswith("inet:"):
            port, _, host = address[5:].partition("@")
            self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address.removeprefix("unix:"))
        self.protocol = 0
        self.actions = 0
        self._negotiate()

    def close(self) -> None:
        try:
            self.sock.sendall(_packet(SMFIC_QUIT))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the wire ----------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            try:
                chunk = self.sock.recv(n - len(data))
            except TimeoutError:
                raise MilterClosed("no answer from the milter") from None
            except OSError as exc:
                raise MilterClosed(f"the connection broke: {exc}") from None
            if not chunk:
                raise MilterClosed("the milter closed the connection")
            data.extend(chunk)
        return bytes(data)

    def _read(self) -> tuple[bytes, bytes]:
        (size,) = struct.unpack(">I", self._recv_exact(4))
        body = self._recv_exact(size)
        return body[:1], body[1:]

    def _send(self, cmd: bytes, data: bytes = b"") -> None:
        try:
            self.sock.sendall(_packet(cmd, data))
        except OSError as exc:
            raise MilterClosed(f"the connection broke: {exc}") from None

    def _negotiate(self) -> None:
        self._send(SMFIC_OPTNEG, struct.pack(">III", 6, ALL_ACTIONS, ALL_PROTOCOL))
        cmd, data = self._read()
        assert cmd == b"O", cmd
        _version, self.actions, self.protocol = struct.unpack(">III", data[:12])

    def _step(self, cmd: bytes, data: bytes, skip_flag: int, noreply_flag: int) -> str | None:
        """Send one stage; the milter's answer unless it is "continue" (or none is due)."""
        if self.protocol & skip_flag:
            return None
        self._send(cmd, data)
        if self.protocol & noreply_flag:
            return None
        reply, payload = self._read()
        while reply == b"p":  # progress: keep waiting
            reply, payload = self._read()
        if reply == b"c":
            return None
        if reply == b"y":
            self._last_reply = payload.rstrip(b"\0").decode("utf-8", "replace")
            return "replycode"
        return FINAL.get(reply, f"unknown {reply!r}")

    # -- one SMTP session ----------------------------------------------------------

    def macro(self, stage: bytes, **macros: str) -> None:
        data = stage + b"".join(
            name.encode() + b"\0" + value.encode() + b"\0" for name, value in macros.items())
        self._send(SMFIC_MACRO, data)

    def connect(self, hostname: str = "client.example", address: str | None = "192.0.2.1",
                port: int = 4321, **macros: str) -> str | None:
        if macros:
            self.macro(SMFIC_CONNECT, **macros)
        if address is None:
            data = hostname.encode() + b"\0U"  # unknown family: not over the network
        else:
            family = b"6" if ":" in address else b"4"
            data = hostname.encode() + b"\0" + family + struct.pack(">H", port) + \
                address.encode() + b"\0"
        return self._step(SMFIC_CONNECT, data, P_NOCONNECT, P_NR_CONN)

    def message(self, sender: str, recipients: list[str], headers: list[tuple[bytes, bytes]],
                body: bytes, *, mail_macros: dict[str, str] | None = None,
                eom_macros: dict[str, str] | None = None,
                rcpt_macros: dict[str, str] | None = None,
                after_chunk: Callable[[int], None] | None = None) -> Result:
        """One message; the milter's final answer and what it asked to change.

        `after_chunk(n)` is called once the milter has taken body chunk n: a
        test's way to break something in the middle of a message.
        """
        self._last_reply = None
        if mail_macros:
            self.macro(SMFIC_MAIL, **mail_macros)
        early = self._step(SMFIC_MAIL, sender.encode() + b"\0", P_NOMAIL, P_NR_MAIL)
        if early:
            return self._early(early, "mail")
        for recipient in recipients:
            self.macro(SMFIC_RCPT, **({"{rcpt_addr}": recipient.strip("<>")} | (rcpt_macros or {})))
            early = self._step(SMFIC_RCPT, recipient.encode() + b"\0", P_NORCPT, P_NR_RCPT)
            if early:
                return self._early(early, "rcpt")
        early = self._step(SMFIC_DATA, b"", P_NODATA, P_NR_DATA)
        if early:
            return self._early(early, "data")
        for name, value in headers:
            early = self._step(SMFIC_HEADER, name + b"\0" + value + b"\0", P_NOHDRS, P_NR_HDR)
            if early:
                return self._early(early, "header")
        early = self._step(SMFIC_EOH, b"", P_NOEOH, P_NR_EOH)
        if early:
            return self._early(early, "eoh")
        for start in range(0, len(body), BODY_CHUNK):
            early = self._step(SMFIC_BODY, body[start:start + BODY_CHUNK], P_NOBODY, P_NR_BODY)
            if early:
                return self._early(early, "body")
            if after_chunk is not None:
                after_chunk(start // BODY_CHUNK)
        if eom_macros:
            self.macro(SMFIC_BODYEOB, **eom_macros)
        self._send(SMFIC_BODYEOB)
        return self._end_of_message()

    def _early(self, action: str, stage: str) -> Result:
        return Result(action, stage, self._last_reply)

    def _end_of_message(self) -> Result:
        result = Result("")
        while True:
            cmd, data = self._read()
            if cmd == b"h":
                name, value = data.split(b"\0")[:2]
                result.added.append((name.decode(), value.decode()))
            elif cmd == b"i":
                (index,) = struct.unpack(">I", data[:4])
                name, value = data[4:].split(b"\0")[:2]
                result.inserted.append((index, name.decode(), value.decode()))
            elif cmd == b"m":
                (index,) = struct.unpack(">I", data[:4])
                name, value = data[4:].split(b"\0")[:2]
                result.changed.append((index, name.decode(), value.decode() or None))
            elif cmd == b"q":
                result.quarantine = data.rstrip(b"\0").decode()
            elif cmd == b"p":
                continue
            elif cmd == b"y":
                result.reply = data.rstrip(b"\0").decode("utf-8", "replace")
                result.action = "replycode"
                return result
            elif cmd in FINAL:
                result.action = FINAL[cmd]
                return result
            else:
                raise AssertionError(f"unexpected milter reply {cmd!r}")

    def abort(self) -> None:
        self._send(SMFIC_ABORT)
