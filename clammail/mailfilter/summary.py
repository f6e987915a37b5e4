"""The one log line per message, the same for the milter and the proxy.

    message queue=4XyZ1 client=192.0.2.7 from=<a@example.org> rcpts=2 size=1234
    verdict=infected signature=Eicar-Test-Signature action=Reject
    backend=unix:/run/clammail/clamd.ctl ms=12

Values are written key=value, quoted (with backslash escapes) when they hold
blanks, quotes or control characters, so the line splits without ambiguity.
"""

from __future__ import annotations

import re

from clammail.mailfilter.policy import Decision
from clammail.mailfilter.scan import ScanResult

_PLAIN = re.compile(r"^[^\s\"\\=\x00-\x1f\x7f]+$")


def _value(value: object) -> str:
    text = str(value)
    if text and _PLAIN.match(text):
        return text
    escaped = "".join(
        "\\" + c if c in '"\\' else c if " " <= c < "\x7f" or c > "\x9f" else f"\\x{ord(c):02x}"
        for c in text
    )
    return f'"{escaped}"'


def summary_line(*, queue_id: str | None, client: str | None, sender: str | None,
                 recipients: int, size: int, decision: Decision,
                 result: ScanResult | None, why: str = "") -> str:
    fields: list[tuple[str, object]] = [
        ("queue", queue_id or "-"), ("client", client or "-"), ("from", sender or "<>"),
        ("rcpts", recipients), ("size", size), ("verdict", decision.outcome.value),
    ]
    if decision.signature:
        fields.append(("signature", decision.signature))
    fields.append(("action", decision.action.value))
    if result is not None:
        fields.append(("backend", str(result.backend) if result.backend else "-"))
        fields.append(("ms", round(result.seconds * 1000)))
        if result.failovers:
            fields.append(("failovers", result.failovers))
        if result.failed and result.failure:
            fields.append(("error", result.failure))
    if why:
        fields.append(("why", why))
    return "message " + " ".join(f"{k}={_value(v)}" for k, v in fields)
