"""One MIME entity as libclamav's message.c keeps it, and its decoding.

A `Message` is a list of body lines plus what its MIME headers said: the
content type, the transfer encodings (a part may claim several, and libclamav
then decodes it once per claim), the disposition and the parameters worth
keeping. It also remembers the first line that looks like the start of a
nested encoding (a Content-Transfer-Encoding line, a bounce, BinHex, yEnc).

`export` turns a message into the byte strings libclamav writes to disk and
scans: one per claimed encoding, the earlier ones kept for the scan of the
temporary directory that follows the mail parse. The decoders reproduce the
C code byte for byte, including how it treats broken input.

A line is `bytes` without its line ending, or None for an empty line.
"""

from __future__ import annotations

import binascii
import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass

from clammail.unpack.mime_text import (
    BLANK,
    SPACE,
    hex_digit,
    rfc2231,
    simil,
    strstrip,
)

Line = bytes | None


class Mime(enum.IntEnum):
    NOMIME = 0
    APPLICATION = 1
    AUDIO = 2
    IMAGE = 3
    MESSAGE = 4
    MULTIPART = 5
    TEXT = 6
    VIDEO = 7
    MEXTENSION = 8


class Enc(enum.IntEnum):
    NOENCODING = 0
    QUOTEDPRINTABLE = 1
    BASE64 = 2
    EIGHTBIT = 3
    BINARY = 4
    UUENCODE = 5
    YENCODE = 6
    EEXTENSION = 7
    BINHEX = 8


_MIME_NAMES = {
    b"text": Mime.TEXT, b"multipart": Mime.MULTIPART, b"application": Mime.APPLICATION,
    b"audio": Mime.AUDIO, b"image": Mime.IMAGE, b"message": Mime.MESSAGE,
    b"video": Mime.VIDEO,
}
_ENCODINGS: list[tuple[bytes, Enc]] = [
    (b"7bit", Enc.NOENCODING), (b"text/plain", Enc.NOENCODING),
    (b"quoted-printable", Enc.QUOTEDPRINTABLE), (b"base64", Enc.BASE64),
    (b"8bit", Enc.EIGHTBIT), (b"binary", Enc.BINARY), (b"x-uuencode", Enc.UUENCODE),
    (b"x-yencode", Enc.YENCODE), (b"x-binhex", Enc.BINHEX), (b"us-ascii", Enc.NOENCODING),
    (b"x-uue", Enc.UUENCODE), (b"uuencode", Enc.UUENCODE),
]
# Parameters libclamav keeps (by prefix); all others are dropped.
_USEFUL_ARGS = (b"name", b"filename", b"boundary", b"protocol", b"id", b"number", b"total",
                b"type")
_BINHEX_BANNER = b"(This file must be converted with BinHex 4.0)"

# base64 alphabet; '=' decodes as 0, everything else is dropped before decoding
_B64 = [255] * 256
for _i, _c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):
    _B64[_c] = _i
_B64[ord("=")] = 0
_NOT_B64 = bytes(i for i in range(256) if _B64[i] == 255)
_B64_TABLE = bytes(v if v != 255 else 0 for v in _B64)
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# a base64 character outside the alphabet (and '=') decodes as 0, the value of 'A'
_AS_ALPHABET = bytes(c if _B64[c] != 255 and c != ord("=") else ord("A") for c in range(256))
# yEnc: a character is c - 42, one after '=' is c - 64
_YENC_PLAIN = bytes((c - 42) & 0xFF for c in range(256))
_YENC_ESCAPED = bytes((c - 64) & 0xFF for c in range(256))
# '=' and the character after it; a '=' that ends a line escapes nothing
_YENC_ESCAPE = re.compile(rb"=([^\n]?)")
# first characters of the lines _check_encoding looks at, "BinHex" aside
MARKER_FIRST = frozenset(b"cCR=")
# a uuencoded character is its value (c - 32) & 63: as the base64 letter of that value
_UU_AS_B64 = bytes(_B64_ALPHABET[(c - 0x20) & 0x3F] for c in range(256))


def is_uuencode_begin(line: Line) -> bool:
    """`begin NNN name`: the start of a uuencoded file."""
    return (
        line is not None
        and len(line) >= 10
        and line[:6].lower() == b"begin "
        and line[6:9].isdigit()
        and line[9] == 0x20
    )


class Message:
    """A message or MIME part: header facts and body lines."""

    def __init__(self, has_ctx: bool = False):
        self.mime_type = Mime.NOMIME
        self.subtype: bytes | None = None
        self.disposition: bytes | None = None
        self.args: list[bytes | None] = []
        # The last boundary parameter a Content-Type header gave (see boundary()).
        self.content_type_boundary: bytes | None = None
        self.encodings: list[Enc] = []
        self.body: list[Line] = []
        # index in body of the first line that starts a nested encoding
        self.encoding_at: int | None = None
        self.bounce_at: int | None = None
        self.binhex_at: int | None = None
        self.yenc_at: int | None = None
        # Only messages given the scan context notice bounces (cli_filetype needs it).
        self.has_ctx = has_ctx
        self.truncated = False

    def reset(self) -> None:
        """messageReset: everything goes, the scan context too."""
        self.__init__()

    @property
    def has_markers(self) -> bool:
        return not (self.encoding_at is None and self.bounce_at is None
                    and self.binhex_at is None and self.yenc_at is None)

    # -- body -------------------------------------------------------------

    def add_str(self, data: Line) -> None:
        """messageAddStr: whitespace-only lines become one space, and two
        empty lines in a row keep only one unless this is a text part."""
        if data is not None:
            if not data:
                data = None
            elif not data.strip(SPACE):
                data = b" "
        body = self.body
        if data is None and body and body[-1] is None and self.mime_type != Mime.TEXT:
            return
        body.append(data)
        if data is not None:
            self._check_encoding(len(body) - 1)

    def add_line(self, line: Line) -> None:
        """messageAddLine: a line taken over from another message as it is."""
        self.body.append(line)
        if line is not None:
            self._check_encoding(len(self.body) - 1)

    def add_lines(self, lines: list[Line], marker_lines: list[int] | None = None) -> None:
        """messageAddLine for a run of lines: the same as adding them one by
        one. `marker_lines`, when given, are the indices in `lines` of all
        the lines that could be markers (see check_markers): only they are
        looked at."""
        start = len(self.body)
        self.body.extend(lines)
        if marker_lines is None:
            self.check_markers(start)
        else:
            for i in marker_lines:
                if self.markers_complete():
                    break
                self._check_encoding(start + i)

    def markers_complete(self) -> bool:
        """Whether every nested-encoding marker is found: no line can change them."""
        return (self.encoding_at is not None and self.binhex_at is not None
                and self.yenc_at is not None and (self.bounce_at is not None or not self.has_ctx))

    def check_markers(self, start: int) -> None:
        """_check_encoding for every line of the body from `start` on.

        Only a line that starts with c, C, R or '=' or holds "BinHex" can be a
        marker: the others are passed over without a call.
        """
        if self.markers_complete():
            return
        body = self.body
        maybe = MARKER_FIRST
        for i in range(start, len(body)):
            line = body[i]
            if line and (line[0] in maybe or b"BinHex" in line):
                self._check_encoding(i)

    def take_body(self, lines: list[Line], old: Message) -> None:
        """messageMoveText into an empty message: libclamav looks for nested
        encodings again only when the old message had any, and skips the first
        moved line when it does."""
        self.body = lines
        if old.has_markers:
            for i in range(1, len(lines)):
                if lines[i] is not None:
                    self._check_encoding(i)

    def _check_encoding(self, index: int) -> None:
        line = self.body[index]
        if (self.encoding_at is None and line[:25].lower() == b"content-transfer-encoding"
                and b"7bit" not in line):
            self.encoding_at = index
        elif self.bounce_at is None and self.has_ctx and line.startswith(b"Received: "):
            self.bounce_at = index
        elif (self.binhex_at is None and b"BinHex" in line
              and simil(line, _BINHEX_BANNER) > 90):
            self.binhex_at = index
        elif self.yenc_at is None and line.startswith(b"=ybegin line="):
            self.yenc_at = index

    # -- MIME header facts ---------------------------------------------

    def set_mime_type(self, type_: bytes | None) -> bool:
        """messageSetMimeType; True when the type was set."""
        if type_ is None:
            return False
        i = 0
        while i < len(type_) and not (0x61 <= (type_[i] | 0x20) <= 0x7A):
            i += 1
        if i >= len(type_):
            return False
        type_ = type_[i:]
        known = _MIME_NAMES.get(type_.lower())
        if known is not None:
            self.mime_type = known
            return True
        if self.mime_type != Mime.NOMIME:
            return False
        if type_[:2].lower() == b"x-":
            self.mime_type = Mime.MEXTENSION
        elif type_.lower() == b"plain":
            self.mime_type = Mime.TEXT
        else:
            best, best_type = 0, None
            for name, value in _MIME_NAMES.items():
                s = simil(name, type_)
                if s > best:
                    best, best_type = s, value
            self.mime_type = best_type if best >= 50 and best_type is not None else Mime.APPLICATION
        return True

    def set_subtype(self, subtype: bytes | None) -> None:
        self.subtype = subtype if subtype is not None else b""

    def get_subtype(self) -> bytes:
        return self.subtype or b""

    def set_disposition(self, disp: bytes | None) -> None:
        if disp is None:
            self.disposition = None
            return
        disp = disp.lstrip(SPACE)
        self.disposition = strstrip(disp) if disp else None

    def get_disposition(self) -> bytes:
        return self.disposition or b""

    def set_encoding(self, enctype: bytes) -> None:
        """messageSetEncoding: each word is matched against the known
        encodings; near misses are guessed, unknown ones enable base64 and
        quoted-printable both."""
        enctype = enctype.lstrip(BLANK)
        if enctype.lower() == b"8 bit":
            enctype = b"8bit"
        for word in enctype.replace(b"\t", b" ").split(b" "):
            if not word:
                continue
            best, closest = 0, None
            lower = word[:1].lower()
            matched = False
            for name, value in _ENCODINGS:
                if lower != name[:1] and lower != b"x":
                    continue
                if name == b"uuencode":
                    continue
                sim = simil(word, name)
                if sim == 100:
                    if value not in self.encodings:
                        self.encodings.append(value)
                    matched = True
                    break
                if sim > best:
                    best, closest = sim, name
            if matched:
                continue
            if best >= 50 and closest is not None:
                self.set_encoding(closest)
            else:
                self.set_encoding(b"base64")
                self.set_encoding(b"quoted-printable")

    def get_encoding(self) -> Enc:
        return self.encodings[0] if self.encodings else Enc.NOENCODING

    def add_argument(self, arg: bytes | None) -> None:
        """messageAddArgument: keep a parameter libclamav has a use for."""
        if arg is None:
            return
        arg = arg.lstrip(SPACE)
        if not arg:
            return
        if not arg[:8].lower().startswith(_USEFUL_ARGS):
            return
        slot = len(self.args)
        for i, existing in enumerate(self.args):
            if existing is None:
                slot = i
                break
            if existing.lower() == arg.lower():
                return
        value: bytes | None = rfc2231(arg)
        if b"=" not in value:
            if value.startswith(b"filename") and len(value) > 8:
                value = value[:8] + b"=" + value[9:]
            else:
                value = None
        if slot == len(self.args):
            self.args.append(value)
        else:
            self.args[slot] = value
        if value is None:
            return
        low = value.lower()
        if (low.startswith(b"filename=") or low.startswith(b"name=")) and \
                self.mime_type == Mime.NOMIME:
            self.set_mime_type(b"application")

    def add_arguments(self, s: bytes) -> None:
        """messageAddArguments: `a=b; c="d e"` (also a:b) into parameters."""
        i, n = 0, len(s)
        while i < n:
            c = s[i]
            if c in SPACE or c == 0x3B:
                i += 1
                continue
            key = i
            eq = s.find(b"=", i)
            if eq < 0:
                eq = s.find(b":", i)
            if eq < 0:
                return
            i = eq + 1
            while i < n and s[i] in SPACE:
                i += 1
            cptr = i
            if i < n:
                i += 1
            if cptr < n and s[cptr] == 0x22:
                kcopy = s[key:]
                sep = kcopy.find(b"=")
                if sep < 0:
                    sep = kcopy.find(b":")
                    if sep < 0:
                        return
                kcopy = kcopy[:sep]
                close = s.find(b'"', cptr + 1)
                i = n if close < 0 else close + 1
                if not kcopy[:8].lower().startswith(_USEFUL_ARGS):
                    continue
                data = s[cptr + 1:]
                q = data.find(b'"')
                if q >= 0:
                    data = data[:q]
                field = kcopy + b"=" + data
            else:
                if cptr >= n:
                    return
                while i < n and s[i] not in SPACE:
                    i += 1
                field = s[key:i]
            self.add_argument(field)

    def find_argument(self, variable: bytes) -> bytes | None:
        """messageFindArgument: the value of the first parameter whose name
        starts with `variable` (None if that one has no '=')."""
        vlen = len(variable)
        for arg in self.args:
            if arg and arg[:vlen].lower() == variable.lower():
                return _argument_value(arg[vlen:])
        return None

    def find_last_argument(self, variable: bytes) -> bytes | None:
        """The value of the last parameter named like `variable` that has one."""
        vlen = len(variable)
        found = None
        for arg in self.args:
            if arg and arg[:vlen].lower() == variable.lower():
                found = _argument_value(arg[vlen:]) or found
        return found

    def boundary(self) -> bytes | None:
        """The multipart boundary. libclamav 1.4.6 takes the first boundary
        parameter of any header, so a second one, one in Content-Disposition
        or a second Content-Type header loses the parts; newer ClamAV takes
        the last one of the Content-Type headers, and so does clammail
        (finding more than 1.4.6), falling back to 1.4.6's choice."""
        if self.content_type_boundary is not None:
            return self.content_type_boundary
        return self.find_argument(b"boundary")

    def has_argument(self, variable: bytes) -> bool:
        vlen = len(variable)
        for arg in self.args:
            if not arg:
                continue
            if arg[:vlen].lower() == variable.lower():
                return arg[vlen:].lstrip(SPACE).startswith(b"=")
        return False

    def get_filename(self) -> bytes | None:
        name = self.find_argument(b"filename")
        return name if name is not None else self.find_argument(b"name")

    def has_filename(self) -> bool:
        return self.has_argument(b"filename") or self.has_argument(b"file")

    # -- decoding -------------------------------------------------------

    def export(self) -> Iterator[Blob]:
        """messageExport: the files libclamav writes for this message, in order.

        Every claimed encoding decodes the body once. All but the last are
        left on disk for the later directory scan; the last is returned to
        the caller (`final`). An unencoded part that has a filename is also
        decoded as base64, a guess libclamav makes for virus attachments.
        """
        if not self.body:
            return
        if not self.encodings:
            filename = self.find_argument(b"filename")
            if filename is None:
                filename = self.find_argument(b"name")
                if filename is None:
                    self.add_argument(b"name=attachment")
                else:
                    self.set_encoding(b"7-bit")
            if not self.encodings:
                yield Blob(text_bytes(self.body), final=True, scan_now=False)
                return
        scan_now = self.has_ctx  # only the first file gets the scan context
        i = 0
        while i < len(self.encodings):
            enctype = self.encodings[i]
            last = i == len(self.encodings) - 1
            if i > 0:
                scan_now = False
            start = 0
            if (enctype == Enc.YENCODE or i == 0) and self.yenc_at is not None:
                start = self.yenc_at + 1
                enctype = Enc.YENCODE
                self.yenc_at = None
            else:
                if enctype == Enc.UUENCODE:
                    # the uuencoded lines were decoded while reading: plain text
                    enctype = self.encodings[i] = Enc.NOENCODING
                if self.get_filename() is None:
                    self.add_argument(b"name=attachment")
                elif enctype == Enc.NOENCODING:
                    self.set_encoding(b"base64")
                    last = i == len(self.encodings) - 1
            lines = self.body[start:]
            if not lines:
                return
            if enctype == Enc.NOENCODING:
                yield Blob(text_bytes(lines), final=last, scan_now=False)
                if last:
                    return
                i += 1
                continue
            yield Blob(decode_lines(enctype, lines), final=last, scan_now=scan_now)
            i += 1

    def to_text(self) -> list[Line]:
        """messageToText: the decoded body as lines (for the bounce search)."""
        if not self.encodings:
            return list(self.body)
        out: list[Line] = []
        for enctype in self.encodings:
            if enctype in (Enc.NOENCODING, Enc.BINARY, Enc.EIGHTBIT):
                out.extend(self.body)
                continue
            if enctype == Enc.UUENCODE:
                return []
            start = 0
            if enctype == Enc.YENCODE:
                if self.yenc_at is None:
                    return []
                start = self.yenc_at + 1
            carry = b""
            for line in self.body[start:]:
                if enctype == Enc.BASE64 and line is None:
                    continue
                if enctype == Enc.BASE64:
                    data, carry = _base64_line(line, carry)
                else:
                    data = decode_line(enctype, line)
                data = _c_str(data)
                if not data or data[:1] == b"\n":
                    out.append(None)
                elif line is not None and data.startswith(line):
                    out.append(line)
                else:
                    out.append(data)
                if line is not None and enctype == Enc.BASE64 and b"=" in line:
                    break
            if carry:
                tail = _c_str(_base64_flush(carry))
                if tail:
                    out.append(tail)
        return out


@dataclass
class Blob:
    """One file libclamav writes: scanned at once, or left for the directory scan."""

    data: bytes
    final: bool  # the one messageExport returns to its caller
    scan_now: bool  # has the scan context: scanned at once when the caller scans it


def _argument_value(rest: bytes) -> bytes | None:
    """What follows a parameter's name: `= value` or `= "value"`, else None."""
    rest = rest.lstrip(SPACE)
    if not rest.startswith(b"="):
        return None
    rest = rest[1:]
    if len(rest) > 1 and rest[0] == 0x22 and b'"' in rest[1:]:
        ret = rest[1:]
        return ret[:ret.find(b'"')]
    return rest


def _c_str(data: bytes) -> bytes:
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def text_bytes(lines: list[Line]) -> bytes:
    """textToFileblob: every line followed by a newline."""
    if not lines:
        return b""
    return join_lines(b"\n", lines) + b"\n"


# bytes.join keeps an 80-byte buffer record for every item until it is done:
# a body of many short lines is joined this many at a time
_JOIN_STEP = 4096


def join_lines(sep: bytes, lines: list[Line]) -> bytes:
    """sep.join(lines), an empty line (None) as b"", in steps of _JOIN_STEP lines."""
    if len(lines) <= _JOIN_STEP:
        return sep.join(lines if None not in lines else [line or b"" for line in lines])
    return sep.join([join_lines(sep, lines[i:i + _JOIN_STEP])
                     for i in range(0, len(lines), _JOIN_STEP)])


def decode_lines(enctype: Enc, lines: list[Line]) -> bytes:
    """The body decoded as libclamav decodes it line by line, done on the
    whole body at once where that gives the same bytes."""
    if enctype == Enc.BASE64:
        return _base64_lines(lines)
    if enctype == Enc.QUOTEDPRINTABLE:
        return _qp_lines(lines)
    if enctype == Enc.YENCODE:
        return _yenc_lines(lines)
    if enctype == Enc.UUENCODE:
        return b"".join(decode_line(enctype, line) for line in lines)
    # no encoding, 8bit, binary and anything unknown: the lines as they are
    return text_bytes(lines)


def _base64_lines(lines: list[Line]) -> bytes:
    """Per line: cut at the first '=', drop non-alphabet bytes; leftover
    characters carry into the next line, so this is one long string."""
    present = [line for line in lines if line]
    if not present:
        return b""
    joined: bytes | memoryview = join_lines(b"", present)
    eq = joined.find(b"=")
    if eq >= 0:
        if eq >= len(joined) - len(present[-1]):
            # only the last line has a '=' (the padding): cut it there
            joined = memoryview(joined)[:eq]
        else:
            joined = join_lines(b"", [_before_equals(line) for line in present])
    # No '=' is left. binascii skips what is not in the alphabet, as the
    # per-line cleanup does; whole groups of four decode the same, and a
    # short tail it refuses.
    try:
        return binascii.a2b_base64(joined)
    except binascii.Error:
        return _decode_alphabet(bytes(joined).translate(None, _NOT_B64))


def _before_equals(line: bytes) -> bytes:
    eq = line.find(b"=")
    return line if eq < 0 else line[:eq]


def base64_decode(chars: bytes) -> bytes:
    """Decode base64 in whole groups of four and flush a short tail the way
    libclamav does; a character outside the alphabet counts as 0."""
    if chars.translate(None, _B64_ALPHABET):
        chars = chars.translate(_AS_ALPHABET)
    return _decode_alphabet(chars)


def _decode_alphabet(chars: bytes) -> bytes:
    """base64_decode of characters all in the alphabet."""
    full = len(chars) - len(chars) % 4
    # on the alphabet alone, binascii computes what the C decoder computes
    head = binascii.a2b_base64(memoryview(chars)[:full]) if full else b""
    return head + _base64_flush(chars[full:]) if full < len(chars) else head


def _qp_lines(lines: list[Line]) -> bytes:
    """Quoted-printable, line by line as libclamav reads it."""
    if not lines:
        return b""
    joined = text_bytes(lines)
    if b"=" not in joined:
        return joined
    # Where every '=' is a well-formed escape or ends its line, binascii
    # decodes the whole body as the C code decodes each line.
    if joined.count(b"\n") == len(lines) and not _QP_IRREGULAR.search(joined):
        return binascii.a2b_qp(joined)
    return b"".join(_qp_line(line) for line in lines)


def _yenc_lines(lines: list[Line]) -> bytes:
    """yEnc up to the `=yend` line: each line alone, a final '=' dropped."""
    present = []
    for line in lines:
        if line is None:
            continue
        if line.startswith(b"=yend "):
            break
        present.append(line)
    joined = join_lines(b"\n", present)
    if present and joined.count(b"\n") != len(present) - 1:
        # a line with a newline of its own: the separators would be ambiguous
        return b"".join(decode_line(Enc.YENCODE, line) for line in present)
    if b"=" not in joined:
        return joined.translate(_YENC_PLAIN, b"\n")
    # split() leaves plain runs at even places and escaped characters at odd ones
    pieces = _YENC_ESCAPE.split(joined)
    pieces[0::2] = [run.translate(_YENC_PLAIN, b"\n") for run in pieces[0::2]]
    pieces[1::2] = [c.translate(_YENC_ESCAPED) for c in pieces[1::2]]
    return b"".join(pieces)


def _base64_line(line: bytes, carry: bytes) -> tuple[bytes, bytes]:
    eq = line.find(b"=")
    if eq >= 0:
        line = line[:eq]
    chars = carry + line.translate(None, _NOT_B64)
    full = len(chars) - len(chars) % 4
    return base64_decode(chars[:full]), chars[full:]


def _base64_flush(tail: bytes) -> bytes:
    if not tail:
        return b""
    v = tail.translate(_B64_TABLE)
    b1 = v[0]
    if len(tail) == 1:
        return bytes([(b1 << 2) & 0xFF])
    b2 = v[1]
    if len(tail) == 2:
        if not b2:
            return bytes([(b1 << 2) & 0xFF])
        out = bytes([((b1 << 2) | ((b2 >> 4) & 3)) & 0xFF])
        if (b2 << 4) & 0xFF:
            out += bytes([(b2 << 4) & 0xFF])
        return out
    b3 = v[2]
    out = bytes([((b1 << 2) | ((b2 >> 4) & 3)) & 0xFF, ((b2 << 4) | ((b3 >> 2) & 0xF)) & 0xFF])
    if b3 & 3:
        out += bytes([(b3 << 6) & 0xFF])
    return out


def decode_line(enctype: Enc, line: Line) -> bytes:
    """decodeLine for the line-by-line encodings."""
    if enctype == Enc.QUOTEDPRINTABLE:
        return _qp_line(line)
    if enctype == Enc.YENCODE:
        if not line or line.startswith(b"=yend "):
            return b""
        out = bytearray()
        i, n = 0, len(line)
        while i < n:
            c = line[i]
            if c == 0x3D:
                i += 1
                if i >= n:
                    break
                out.append((line[i] - 64) & 0xFF)
            else:
                out.append((c - 42) & 0xFF)
            i += 1
        return bytes(out)
    if enctype == Enc.UUENCODE:
        return uudecode_line(line) or b""
    # no encoding, 8bit, binary and anything unknown: the line as it is
    return (line or b"") + b"\n"


# '=' escapes as libclamav reads them: '=' and a hex digit take the next
# character whatever it is (an illegal second digit counts as 0x3d); '=' and
# one last character gives that character's digit value; '=' at the end is a
# soft line break; '=' before anything else stays as it is.
_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f])(.)|=(.)\Z|=\Z", re.DOTALL)
_QP_STRICT = re.compile(rb"(?:[^=]|=[0-9A-Fa-f]{2})*=?\Z", re.DOTALL)
# a '=' that is neither an escape of two hex digits nor the end of its line
_QP_IRREGULAR = re.compile(rb"=(?![0-9A-Fa-f]{2}|\n)")


def _qp_escape(m: re.Match) -> bytes:
    if m.group(1) is not None:
        return bytes([((hex_digit(m.group(1)[0]) << 4) | hex_digit(m.group(2)[0])) & 0xFF])
    if m.group(3) is not None:
        return bytes([hex_digit(m.group(3)[0])])
    return b""


def _qp_line(line: Line) -> bytes:
    if line is None:
        return b"\n"
    if b"=" not in line:
        return line + b"\n"
    if _QP_STRICT.match(line):
        # only well-formed escapes: the C decoder and binascii agree
        return binascii.a2b_qp(line) + (b"" if line.endswith(b"=") else b"\n")
    softbreak = line.endswith(b"=") and _ends_soft(line)
    return _QP_ESCAPE.sub(_qp_escape, line) + (b"" if softbreak else b"\n")


def _ends_soft(line: bytes) -> bool:
    """Whether the final '=' is a bare one (not the second half of an escape)."""
    # find how the escapes before the end pair up, scanning left to right
    for m in _QP_ESCAPE.finditer(line):
        if m.end() == len(line):
            return m.group(1) is None and m.group(3) is None
    return False


def uudecode_line(line: Line) -> bytes | None:
    """One uuencoded line; None where libclamav stops decoding."""
    if not line:
        return None
    if line.lower() == b"end" or is_uuencode_begin(line):
        return None
    if (line[0] & 0x3F) == 0x20:
        return None
    reallen = (line[0] - 0x20) & 0xFF
    if reallen == 0 or reallen > 62:
        return None
    rest = line[1:]
    if reallen > len(rest):
        return None
    full = len(rest) - len(rest) % 4
    out = binascii.a2b_base64(rest[:full].translate(_UU_AS_B64)) if full else b""
    # libclamav writes `reallen` bytes whatever was decoded; we pad with zeros
    if len(out) < reallen:
        out += bytes(reallen - len(out))
    return out[:reallen]
