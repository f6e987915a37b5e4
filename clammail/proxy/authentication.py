"""Mail authentication in the proxy, with dkimpy: DKIM verification, ARC sealing, DKIM signing.

- On arrival every DKIM signature is verified and the results are written
  in one Authentication-Results header (RFC 8601) under our authserv-id;
  Authentication-Results headers that claim our authserv-id already are
  removed first (RFC 8601 section 5: they would be forgeries).
- When the proxy changes a message (a part stripped, the subject tagged) it
  adds an ARC set (RFC 8617) sealing those results, so the receiving side
  can still trust what we verified before the change.
- Outgoing mail from configured domains can be DKIM-signed after scanning.

DNS lookups go through one function, `Resolver`: dkimpy's own by default,
or a file of TXT records (`DNSRecordsFile`) for offline use and tests.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import dkim

_HEADER_END = re.compile(rb"\r?\n\r?\n")


class Resolver:
    """The TXT lookups dkimpy makes (`dnsfunc(name, timeout=5) -> bytes | None`)."""

    def __init__(self, records_file: str | None = None):
        self.records: dict[str, bytes] | None = None
        if records_file:
            with open(records_file, encoding="utf-8") as fh:
                data = json.load(fh)
            self.records = {name.lower().rstrip("."): value.encode()
                            for name, value in data.items()}

    def __call__(self, name, timeout: float = 5):
        if self.records is None:
            return dkim.dnsplug.get_txt(name, timeout=timeout)
        key = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
        return self.records.get(key)


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, permerror, temperror (RFC 8601); "none" when unsigned
    domain: str = ""
    selector: str = ""
    b: str = ""  # the start of the signature, telling several apart


def split_header(message: bytes) -> tuple[bytes, bytes]:
    match = _HEADER_END.search(message)
    if match is None:
        return message, b""
    return message[:match.start()], message[match.start():]


def header_fields(head: bytes) -> list[bytes]:
    """The header fields of a message head, each with its continuation lines."""
    fields: list[bytes] = []
    for line in re.split(rb"(?<=\n)", head):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    if fields and not fields[-1].endswith(b"\n"):
        fields[-1] += b"\r\n"
    return fields


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def _tags(field: bytes) -> dict[str, str]:
    """The tag=value list of a DKIM-Signature field, whitespace removed."""
    value = field.split(b":", 1)[1] if b":" in field else b""
    tags = {}
    for item in value.split(b";"):
        name, sep, text = item.partition(b"=")
        if sep:
            tags[name.strip().decode("ascii", "replace")] = \
                re.sub(rb"\s+", b"", text).decode("ascii", "replace")
    return tags


def verify_dkim(message: bytes, resolver: Resolver) -> list[DkimResult]:
    """Each DKIM signature's result, in RFC 8601's words (pass, fail, permerror, temperror)."""
    head, _ = split_header(message)
    signatures = [_tags(f) for f in header_fields(head) if field_name(f) == "dkim-signature"]
    if not signatures:
        return [DkimResult("none")]
    results = []
    for index, tags in enumerate(signatures):
        try:
            result = "pass" if dkim.DKIM(message).verify(idx=index, dnsfunc=resolver) else "fail"
        except dkim.ValidationError:
            result = "fail"  # e.g. the body hash does not match: the message was changed
        except dkim.DKIMException:
            result = "permerror"  # a malformed signature or key, or no key published
        except Exception:  # noqa: BLE001 - a DNS failure: try again later
            result = "temperror"
        results.append(DkimResult(result, tags.get("d", ""), tags.get("s", ""),
                                  tags.get("b", "")[:8]))
    return results


def authentication_results(authserv_id: str, results: list[DkimResult]) -> bytes:
    parts = []
    for r in results:
        if r.result == "none":
            parts.append("dkim=none")
            continue
        text = f"dkim={r.result}"
        if r.domain:
            text += f" header.d={r.domain}"
        if r.selector:
            text += f" header.s={r.selector}"
        if r.b:
            text += f" header.b={r.b}"
        parts.append(text)
    value = f"{authserv_id};\r\n\t" + ";\r\n\t".join(parts)
    return f"Authentication-Results: {value}\r\n".encode()


def _claims_our_id(field: bytes, authserv_id: str) -> bool:
    value = field.split(b":", 1)[1] if b":" in field else b""
    first = value.split(b";", 1)[0].strip().split()[:1]
    return bool(first) and first[0].decode("ascii", "replace").lower() == authserv_id.lower()


def results_header(message: bytes, authserv_id: str, resolver: Resolver) -> bytes:
    """Our Authentication-Results field for the message as it arrived."""
    return authentication_results(authserv_id, verify_dkim(message, resolver))


def with_results(message: bytes, results: bytes, authserv_id: str) -> bytes:
    """The message with `results` on top, and forged results of our authserv-id removed."""
    head, body = split_header(message)
    kept = [f for f in header_fields(head)
            if not (field_name(f) == "authentication-results" and _claims_our_id(f, authserv_id))]
    return results + b"".join(kept).rstrip(b"\r\n") + body


def arc_seal(message: bytes, domain: str, selector: str, key: bytes, authserv_id: str) -> bytes:
    """The message with an ARC set on top (AAR, AMS, AS), sealing our Authentication-Results."""
    lines = dkim.arc_sign(message, selector.encode(), domain.encode(), key,
                          authserv_id.encode(), linesep=b"\r\n")
    return b"".join(lines) + message


def dkim_sign(message: bytes, domain: str, selector: str, key: bytes) -> bytes:
    """The message with a DKIM-Signature on top (relaxed/relaxed, rsa-sha256)."""
    signature = dkim.sign(message, selector.encode(), domain.encode(), key,
                          canonicalize=(b"relaxed", b"relaxed"), linesep=b"\r\n")
    return signature + message
