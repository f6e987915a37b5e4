"""Changes the proxy makes to a message, on its bytes.

Header edits (the X-Virus-* headers, the subject tag) touch only the header
lines concerned, so a clean message leaves byte for byte as it came apart
from the added headers (and a DKIM signature stays valid). Stripping
infected parts re-writes the MIME structure with Python's email package,
keeping every part it does not replace.
"""

from __future__ import annotations

import email
import email.policy
import io
from collections.abc import Awaitable, Callable
from email.generator import BytesGenerator

from clammail.proxy.authentication import field_name, header_fields, split_header

# compat32 keeps header values as they were written; CRLF as on the wire.
_POLICY = email.policy.compat32.clone(linesep="\r\n")


def with_headers(message: bytes, add: list[tuple[str, str]], remove: tuple[str, ...] = ()) -> bytes:
    """Remove every header named in `remove`, then put `add` on top, in order."""
    head, body = split_header(message)
    lowered = {name.lower() for name in remove}
    kept = [f for f in header_fields(head) if field_name(f) not in lowered]
    added = [f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in add]
    return b"".join(added + kept).rstrip(b"\r\n") + body


def tag_subject(message: bytes, tag: str) -> bytes:
    """Put `tag` in front of the Subject (adding one if there is none), once."""
    head, body = split_header(message)
    fields = header_fields(head)
    prefix = tag.encode("utf-8", "surrogateescape")
    for i, field in enumerate(fields):
        if field_name(field) == "subject":
            name, _, value = field.partition(b":")
            if value.lstrip().startswith(prefix):
                return message
            fields[i] = name + b": " + prefix + b" " + value.lstrip(b" \t")
            break
    else:
        fields.insert(0, b"Subject: " + prefix + b"\r\n")
    return b"".join(fields).rstrip(b"\r\n") + body


NOTICE = (
    "This part of the message ({name}) was removed by clammail:\r\n"
    "it contained {signature}.\r\n"
)


async def strip_infected(message: bytes, scan: Callable[[bytes], Awaitable[str | None]]
                         ) -> tuple[bytes, list[str]]:
    """Replace each leaf MIME part whose content `scan` finds infected by a short notice.

    `scan(data)` returns the signature name found in one part's decoded
    content, or None. Returns the new message and the names found; no names
    means nothing could be told apart and the message is unchanged.
    """
    parsed = email.message_from_bytes(message, policy=_POLICY)
    found: list[str] = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        content = part.get_payload(decode=True)
        if not content:
            continue
        signature = await scan(content)
        if signature is None:
            continue
        found.append(signature)
        name = part.get_filename() or part.get_content_type()
        for header in ("Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                       "Content-Description"):
            del part[header]
        part["Content-Type"] = 'text/plain; charset="us-ascii"'
        part["Content-Transfer-Encoding"] = "7bit"
        part["Content-Disposition"] = "inline"
        safe_name = name.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")
        part.set_payload(NOTICE.format(name=safe_name, signature=signature))
    if not found:
        return message, []
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=_POLICY).flatten(parsed)
    return out.getvalue(), found
