"""The mail path as it was before it was made fast: the reference for tests/test_mail_fast.py.

These are the original, line-by-line and byte-by-byte implementations of the
functions clammail.unpack.mail, mime_message and embedded now do in bulk,
kept verbatim (they reproduce libclamav's quirks, and the fast code must
give the same bytes). `reference_mail_path()` puts them back in place of the
fast ones for the length of a `with` block; `reference_embedded_objects` is
the original search for embedded archives and executables.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Generator, Iterator
from unittest import mock

from clammail.formats.filetypes import FileType
from clammail.unpack import mail, mime_message
from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext
from clammail.unpack.embedded import (
    _CONTAINER,
    _NOT_SEARCHED,
    _SKIP_FOR,
    _TEXT_LIKE,
    TYPING_BUFFER,
    _iso_follows,
    _open,
    _pe_signature_end,
)
from clammail.unpack.mail import (
    ALTERNATIVE,
    APPLEDOUBLE,
    DIGEST,
    ENCRYPTED,
    KNOWBOT,
    LINE_MAX,
    MAX_HEADER_BYTES,
    MAX_MIME_PARTS_PER_MESSAGE,
    MIXED,
    PARALLEL,
    RELATED,
    REPORT,
    SIGNED,
    Rc,
    _as_line,
    _boundary_end,
    _boundary_start,
    _boundary_then_semicolon,
    _continue_empty_options,
    _get_text_part,
    _header_kind,
    _Limit,
    _newline_in_header,
    _next_is_folded_header,
    _subtype,
    _text_add_message,
    _useful_header,
)
from clammail.unpack.mime_message import (
    _B64_TABLE,
    _NOT_B64,
    Enc,
    Line,
    Message,
    Mime,
    _base64_flush,
    decode_line,
    is_uuencode_begin,
)
from clammail.unpack.mime_text import (
    BLANK,
    SPACE,
    chomp,
    count_quotes,
    rfc822comments,
    strstrip,
    strtokbuf,
)

_LINE_END = re.compile(rb"[\r\n]")
_SFX = re.compile(
    rb"(?P<zip>PK\x03\x04)|(?P<rar>Rar!\x1a\x07\x00)|(?P<cab>MSCF\x00\x00\x00\x00)"
    rb"|(?P<sevenzip>7z\xbc\xaf\x27\x1c)|(?P<iso>\x01CD001)"
    rb"|(?P<arj>\x60\xea.{7}[\x00-\x02]\x02)",
    re.DOTALL,
)


# -- clammail.unpack.mime_message ---------------------------------------------


def text_bytes(lines: list[Line]) -> bytes:
    """textToFileblob: every line followed by a newline."""
    return b"".join((line or b"") + b"\n" for line in lines)


def decode_lines(enctype: Enc, lines: list[Line]) -> bytes:
    if enctype == Enc.BASE64:
        # Per line: cut at the first '=', drop non-alphabet bytes; leftover
        # characters carry into the next line, so this is one long string.
        parts = []
        for line in lines:
            if line is None:
                continue
            eq = line.find(b"=")
            if eq >= 0:
                line = line[:eq]
            parts.append(line.translate(None, _NOT_B64))
        return base64_decode(b"".join(parts))
    if enctype == Enc.YENCODE:
        out = []
        for line in lines:
            if line is None:
                continue
            if line.startswith(b"=yend "):
                break
            out.append(decode_line(Enc.YENCODE, line))
        return b"".join(out)
    return b"".join(decode_line(enctype, line) for line in lines)


def base64_decode(chars: bytes) -> bytes:
    """Decode alphabet-only base64 and flush a short tail the way libclamav does."""
    full = len(chars) - len(chars) % 4
    vals = chars[:full].translate(_B64_TABLE)
    out = bytearray()
    # whole groups: 4 six-bit values -> 3 bytes
    for k in range(0, full, 4):
        b1, b2, b3, b4 = vals[k], vals[k + 1], vals[k + 2], vals[k + 3]
        out.append(((b1 << 2) | (b2 >> 4)) & 0xFF)
        out.append(((b2 << 4) | (b3 >> 2)) & 0xFF)
        out.append(((b3 << 6) | b4) & 0xFF)
    out += _base64_flush(chars[full:])
    return bytes(out)


# -- clammail.unpack.mail -----------------------------------------------------


def reference_getline(self) -> bytes | None:
    data, at = self.data, self.at
    n = len(data)
    if at >= n:
        return None
    m = _LINE_END.search(data, at, at + LINE_MAX)
    if m is None:
        end = min(n, at + LINE_MAX)
        line = data[at:end].replace(b"\0", b"")
        self.at = end
        if not line and at + LINE_MAX >= n:
            return None  # only NUL bytes up to the end: the end
        return line  # a long line is cut; NUL bytes alone read as an empty line
    k = m.start()
    term = data[k]
    nxt = k + 1
    if nxt < n and data[nxt] == (0x0D if term == 0x0A else 0x0A):
        nxt += 1
    self.at = nxt
    return data[at:k].replace(b"\0", b"") + bytes([term])


def reference_parse_email_file(self, first: bytes) -> Message | None:
    reader = self.reader
    ret = Message()
    in_header = True
    body_is_empty = True
    last_was_blank = False
    last_body_blank = False
    any_headers = False
    boundary: bytes | None = None
    last_only_semi = [False]
    fold_cnt = [0]
    header_bytes = 0
    header_count = 0
    pending: list[bytes] = []
    raw: bytes | None = first
    try:
        while raw is not None:
            self.ctx.check()
            line = _as_line(raw)
            raw = None  # read the next line at the end of the iteration
            if _continue_empty_options(line, last_only_semi):
                raw = reader.getline()
                continue
            self._check_fold(line, fold_cnt)
            if last_was_blank:
                last_was_blank = False
                if _boundary_start(line, boundary):
                    in_header = False
            if in_header:
                if line is not None and line[0] in SPACE and not strstrip(line):
                    # a line of white space: maybe the end of the headers
                    skip = False
                    if pending:
                        header_count += 1
                        self._check_header_count(header_count)
                        skip = self._parse_email_header(ret, b"".join(pending)) < 0
                        pending = []
                    if not skip:
                        if boundary is None:
                            boundary = ret.boundary()
                        if boundary is not None:
                            last_was_blank = True
                    if skip or last_was_blank:
                        raw = reader.getline()
                        continue
                if line is None and pending and _boundary_then_semicolon(b"".join(pending)):
                    header_count += 1
                    self._check_header_count(header_count)
                    self._parse_email_header(ret, b"".join(pending))
                    pending = []
                if line is None and not pending:
                    if any_headers:
                        in_header = False
                        body_is_empty = True
                    raw = reader.getline()
                    continue
                if not pending:
                    if line is None or line[0] in BLANK:
                        raw = reader.getline()
                        continue
                    cmd = strtokbuf(line, 0, b":") if b":" in line else None
                    if cmd is None:
                        if line.startswith(b"From "):
                            any_headers = True
                        raw = reader.getline()
                        continue
                    kind = _header_kind(rfc822comments(cmd) or cmd)
                    if kind < 0:
                        if not any_headers:
                            any_headers = _useful_header(cmd)
                        raw = reader.getline()
                        continue
                    any_headers = True
                    pending.append(line)
                elif line is not None:
                    pending.append(line)
                if line is not None:
                    header_bytes += len(line)
                    if header_bytes > MAX_HEADER_BYTES:
                        self._heuristic("EmailHeaderBytes")
                        break
                nxt = reader.peek()
                if nxt is not None and nxt in BLANK:
                    raw = reader.getline()
                    continue
                header = b"".join(pending)
                need_more = header.endswith(b";")
                if not need_more:
                    need_more = line is not None and count_quotes(header) % 2 == 1
                if not need_more:
                    header_count += 1
                    self._check_header_count(header_count)
                    need_more = self._parse_email_header(ret, header) < 0
                if not need_more:
                    pending = []
            elif line is not None and is_uuencode_begin(line):
                body_is_empty = False
                if not self._uudecode_file(line):
                    ret.add_str(line)
            else:
                if line is None:
                    if last_body_blank and ret.mime_type != Mime.TEXT:
                        raw = reader.getline()
                        continue
                    last_body_blank = True
                else:
                    if body_is_empty:
                        if _newline_in_header(line):
                            raw = reader.getline()
                            continue
                        body_is_empty = False
                    last_body_blank = False
                ret.add_str(line)
            raw = reader.getline()
    except _Limit:
        pass
    if not any_headers:
        return None
    return ret


def reference_multipart(self, main: Message, message_in: Message | None,
               a_text: list[Line] | None, text_in: list[Line] | None,
               level: int) -> Generator[Extracted, None, tuple[Rc | None, Message | None]]:
    """The multipart branch of parseEmailBody, and what is left of the
    message; no result when the rest of parseEmailBody is to treat the
    message as text after all."""
    boundary = main.boundary()
    if boundary is None:
        return None, main
    boundary = chomp(boundary)
    sub = main.get_subtype()
    if not sub:
        sub = b"alternative"
        main.set_subtype(sub)
    body = main.body
    n = len(body)
    rc = Rc.OK
    infected = False
    idx = 0
    while idx < n:
        line = body[idx]
        if line is not None:
            if _boundary_start(line, boundary):
                break
            if main.binhex_at == idx:
                if (yield from self._export_binhex(main)):
                    rc = Rc.VIRUS
                    infected = True
                    break
            elif idx + 1 < n and main.encoding_at == idx + 1:
                if main.get_encoding() == Enc.NOENCODING:
                    break
        idx += 1
    if idx >= n:
        return None, main

    subtype = _subtype(sub)
    messages: list[Message | None] = []
    inhead = True
    cur: int | None = idx
    while cur is not None and not infected:
        self.ctx.check()
        part = Message(has_ctx=True)
        messages.append(part)
        slot = len(messages) - 1
        # skip empty lines before the part
        cur += 1
        while cur < n and not body[cur]:
            cur += 1
        if cur >= n:
            if main is not None and main.binhex_at is None:
                messages.pop()
            cur = None
            continue
        while True:
            line = body[cur]
            if inhead:
                if line is None:
                    nxt = body[cur + 1] if cur + 1 < n else None
                    if nxt is not None:
                        if (part.get_encoding() == Enc.NOENCODING
                                and part.mime_type == Mime.APPLICATION
                                and b"base64" in nxt):
                            part.set_encoding(b"base64")
                            cur += 1
                            if cur >= n:
                                break
                            continue
                        if nxt.startswith(b"Content") or nxt.startswith(b"filename="):
                            cur += 1
                            if cur >= n:
                                break
                            continue
                    inhead = False
                elif line[0] in SPACE:
                    part.add_argument(line)
                    if part.mime_type == Mime.NOMIME:
                        part.set_mime_type(b"application")
                else:
                    fullline = rfc822comments(line) or line
                    while _next_is_folded_header(body, cur):
                        cur += 1
                        data = body[cur]
                        if len(data) == 1:
                            inhead = False
                            break
                        fullline += data
                    self._parse_email_header(part, fullline)
            elif _boundary_end(line, boundary):
                break
            elif _boundary_start(line, boundary):
                inhead = True
                break
            else:
                part.add_line(line)
            cur += 1
            if cur >= n:
                break
        if cur >= n:
            cur = None
        if subtype in (MIXED, ALTERNATIVE, REPORT, DIGEST, APPLEDOUBLE, KNOWBOT, -1):
            old_rc = rc
            main_ref = [main]
            rc = yield from self._do_multipart(main_ref, messages, slot, rc, message_in,
                                               a_text, level)
            main = main_ref[0]
            if rc == Rc.OK_ATTACHMENTS_NOT_SAVED and old_rc == Rc.OK:
                rc = Rc.OK
            messages.pop()
            if rc == Rc.VIRUS:
                infected = True
        elif subtype in (RELATED, ENCRYPTED, SIGNED, PARALLEL):
            if len(messages) >= MAX_MIME_PARTS_PER_MESSAGE:
                break  # over the limit already: reading on changes nothing
        else:
            messages.pop()

    parts = len(messages)
    if parts >= MAX_MIME_PARTS_PER_MESSAGE:
        if self.alert:
            self.ctx.alert("Heuristics.Limits.Exceeded.EmailMIMEPartsPerMessage")
            return Rc.VIRUS, main
        # the parse goes on with the message as text
        return None, main
    if subtype in (KNOWBOT, -1):
        sub = b"mixed"
    if main is not None and main is not message_in:
        main = None
    if infected or (parts == 0 and a_text is None):
        if rc in (Rc.VIRUS, Rc.MAXREC):
            return rc, None
        return Rc.OK_ATTACHMENTS_NOT_SAVED, None

    handler = _subtype(sub)
    if handler == RELATED:
        html = _get_text_part(messages)
        stop = False
        inner: Message | None = None
        if html >= 0:
            if messages[html].body:
                a_text = _text_add_message(a_text, messages[html])
        else:
            for i, msg in enumerate(messages):
                if msg is not None and msg.mime_type == Mime.MULTIPART:
                    inner = msg
                    html = i
                    break
        if html >= 0:
            rc = yield from self._parse_email_body(inner, a_text, level + 1)
            if rc == Rc.OK and inner is not None:
                messages[html] = None
            elif rc == Rc.VIRUS:
                infected = True
                stop = True
        if not stop:
            handler = MIXED
    if handler in (DIGEST, ALTERNATIVE, REPORT, ENCRYPTED, MIXED, APPLEDOUBLE):
        if a_text is not None:
            main = None
        for i in range(parts):
            main_ref = [main]
            rc = yield from self._do_multipart(main_ref, messages, i, rc, message_in,
                                               a_text, level + 1)
            main = main_ref[0]
            if rc == Rc.VIRUS:
                infected = True
                break
            if rc == Rc.MAXREC:
                break
            if rc == Rc.OK_ATTACHMENTS_NOT_SAVED:
                rc = Rc.OK
    elif handler in (SIGNED, PARALLEL):
        if messages:
            html = _get_text_part(messages)
            if html == -1:
                html = 0
            rc = yield from self._parse_email_body(messages[html], a_text, level + 1)

    if a_text is not None and text_in is None and not infected:
        self._defer(text_bytes(a_text), "textpart")
        self.files += 1
    return rc, None


# -- clammail.unpack.embedded -------------------------------------------------


def reference_embedded_objects(data, ftype: FileType, ctx: UnpackContext) -> Iterator[Extracted]:
    """Members of archives embedded in `data`, and an executable embedded in it."""
    if ftype in _NOT_SEARCHED:
        return
    pe_offset = reference_embedded_pe(data, ftype, ctx)
    for match in _SFX.finditer(data):
        offset, kind = match.start(), match.lastgroup
        if pe_offset is not None and offset > pe_offset:
            break  # left to the scan of the embedded executable, which holds it
        if not offset or ftype in _SKIP_FOR.get(kind, ()) or not ctx.option("ScanArchive"):
            continue
        if kind == "iso" and not _iso_follows(data, offset):
            continue
        ctx.check()
        try:
            for child in _open(kind, data, offset, ctx):
                child.extra.setdefault("container", _CONTAINER[kind])
                child.extra.setdefault("embedded_at", offset)
                yield child
        except LimitExceeded as exc:
            # That archive stops; the other embedded ones are still opened.
            report = getattr(ctx, "limit_exceeded", None)
            if report is not None:
                report(exc.limit)
    if pe_offset is not None:
        yield Extracted(memoryview(data)[pe_offset:], name=f"embedded-pe@{pe_offset}",
                        ftype=FileType.MSEXE, extra={"embedded_at": pe_offset, "corrupted_input": True})


def reference_embedded_pe(data, ftype: FileType, ctx: UnpackContext) -> int | None:
    """Where an executable embedded in a non-executable object starts, if ClamAV sees one.

    Executables themselves are left to clammail.unpack.executable (the
    executables' unpacker), which looks anywhere in them.
    """
    if ftype not in _TEXT_LIKE or not ctx.option("ScanPE"):
        return None
    limit = ctx.option("MaxEmbeddedPE")
    if limit and len(data) > limit:
        return None
    try:
        from clammail.formats.pe import find_embedded_pe
    except ImportError:
        return None
    offset = find_embedded_pe(data)
    if offset is None or offset + _pe_signature_end(data, offset) > TYPING_BUFFER:
        return None
    return offset


# -- putting the reference in place -------------------------------------------


@contextlib.contextmanager
def reference_mail_path() -> Iterator[None]:
    """Within the block, the mail parse and decode run the original code."""
    with contextlib.ExitStack() as stack:
        for target, name, value in (
            (mime_message, "text_bytes", text_bytes),
            (mime_message, "decode_lines", decode_lines),
            (mime_message, "base64_decode", base64_decode),
            (mail, "text_bytes", text_bytes),
            (mail._Reader, "getline", reference_getline),
            (mail._MailParser, "_parse_email_file", reference_parse_email_file),
            (mail._MailParser, "_multipart", reference_multipart),
        ):
            stack.enter_context(mock.patch.object(target, name, value))
        yield
