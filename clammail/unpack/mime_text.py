"""Header-text helpers for the MIME parser, with libclamav's exact quirks.

ClamAV parses mail headers with C string functions, and which part of a mail
it decodes depends on their details: a header field is cut at the first
separator, comments in parentheses vanish, encoded words (RFC 2047) and
parameter encodings (RFC 2231) are decoded loosely, and unknown MIME types and
encodings are guessed by a string-similarity score. This module does the same
on `bytes`, so `clammail.unpack.mail` finds the same parts in a broken mail as
clamd does. Nothing here allocates more than a copy of its input.
"""

from __future__ import annotations

SPACE = b" \t\n\v\f\r"  # C isspace() in the C locale
BLANK = b" \t"  # C isblank()
_GRAPH = frozenset(range(0x21, 0x7F))  # C isgraph()


def is_space(c: int) -> bool:
    return c in SPACE


def is_blank(c: int) -> bool:
    return c == 0x20 or c == 0x09


def c_string(data: bytes) -> bytes:
    """The part of `data` a C string function sees: up to the first NUL."""
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def chomp(line: bytes) -> bytes:
    """cli_chomp: drop trailing CR and LF characters."""
    return line.rstrip(b"\r\n")


def strstrip(s: bytes) -> bytes:
    """strstrip: drop trailing characters that are not graphic, stopping at CR/LF."""
    end = len(s)
    while end > 0:
        c = s[end - 1]
        if c in _GRAPH or c in (0x0A, 0x0D):
            break
        end -= 1
    return s[:end]


def strtokbuf(data: bytes, fieldno: int, delims: bytes) -> bytes | None:
    """cli_strtokbuf: field `fieldno` of `data`; runs of delimiters separate
    fields, a leading delimiter makes field 0 empty (None)."""
    n = len(data)
    i = 0
    counter = 0
    while i < n and counter != fieldno:
        if data[i] in delims:
            counter += 1
            while i + 1 < n and data[i + 1] in delims:
                i += 1
        i += 1
    if i >= n:
        return None
    j = i
    while j < n and data[j] not in delims:
        j += 1
    if i == j:
        return None
    return data[i:j]


class Tokenizer:
    """C strtok(): tokens separated by runs of delimiters, state kept between calls."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def next(self, delims: bytes) -> bytes | None:
        data, n, i = self.data, len(self.data), self.pos
        if not delims:  # strtok(NULL, ""): the rest of the string
            self.pos = n
            return data[i:] if i < n else None
        while i < n and data[i] in delims:
            i += 1
        if i >= n:
            self.pos = n
            return None
        j = i
        while j < n and data[j] not in delims:
            j += 1
        self.pos = j + 1 if j < n else n
        return data[i:j]


def count_quotes(data: bytes) -> int:
    return data.count(b'"')


def rfc822comments(data: bytes) -> bytes | None:
    """Remove RFC 822 comments; None when there is no '(' at all."""
    if b"(" not in data:
        return None
    data = data.lstrip(SPACE)
    out = bytearray()
    backslash = False
    inquote = False
    level = 0
    for c in data:
        if backslash:
            if level == 0:
                out.append(c)
            backslash = False
        elif c == 0x5C:  # backslash
            backslash = True
        elif c == 0x22:  # "
            out.append(c)
            inquote = not inquote
        elif c == 0x28:  # (
            if inquote:
                out.append(c)
            else:
                level += 1
        elif c == 0x29:  # )
            if inquote:
                out.append(c)
            elif level > 0:
                level -= 1
        elif level == 0:
            out.append(c)
    if backslash:
        out.append(0x5C)
    return bytes(out)


def _hex(c: int) -> int:
    """libclamav's hex(): an illegal digit reads as '=' (0x3d)."""
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x41 <= c <= 0x46:
        return c - 0x41 + 10
    if 0x61 <= c <= 0x66:
        return c - 0x61 + 10
    return 0x3D


def hex_digit(c: int) -> int:
    return _hex(c)


def rfc2231(arg: bytes) -> bytes:
    """Decode an RFC 2231 parameter (name*=charset'lang'value) as libclamav does."""
    if b"*0*=" in arg:
        # Continuations are not handled: keep the parameter name only.
        out = bytearray()
        i, n = 0, len(arg)
        while i < n:
            c = arg[i]
            if c == 0x2A:  # *
                i += 1
                while i < n and arg[i] != 0x2A:
                    i += 1
                if i < n:
                    i += 1
                    continue
                break
            if c == 0x3D:  # =
                out += b"=rfc2231failure"
                break
            out.append(c)
            i += 1
        return bytes(out)
    ptr = arg.find(b"*0=")
    contents_first = ptr >= 0
    if not contents_first:
        ptr = arg.find(b"*=")
    if ptr < 0:
        return bytes(c & 0x7F for c in arg)
    out = bytearray(arg[:ptr])
    out.append(0x3D)
    i = arg.index(b"=", ptr) + 1
    field = 2 if contents_first else 0  # 0 language, 1 charset, 2 contents
    n = len(arg)
    while i < n:
        c = arg[i]
        if field < 2:
            if c == 0x27:  # '
                field += 1
        elif c == 0x25:  # %
            i += 1
            if i >= n or arg[i] == 0x0A:
                break
            byte = _hex(arg[i])
            i += 1
            if i >= n or arg[i] == 0x0A:
                out.append(byte & 0xFF)
                break
            out.append(((byte << 4) + _hex(arg[i])) & 0xFF)
        else:
            out.append(c)
        i += 1
    if field != 2:
        return b""
    return bytes(out)


def simil(str1: bytes, str2: bytes) -> int:
    """libclamav's simil(): how alike two strings are, 0-100 (negative on overflow)."""
    if str1.lower() == str2.lower():
        return 100
    s1 = strstrip(str1)
    s2 = strstrip(str2)
    if len(s1) > 49 or len(s2) > 49:
        return -5
    total = len(s1) + len(s2)
    stack: list[bytearray] = [bytearray(s1), bytearray(s2)]
    score = 0
    while stack:
        ls2 = stack.pop()
        if not stack:
            break
        ls1 = stack.pop()
        common, rs1, rs2 = _compare(ls1, ls2)
        if common > 0:
            score += common
            if (len(ls1) > 1 and len(ls2) >= 1) or (len(ls2) > 1 and len(ls1) >= 1):
                stack.append(ls1)
                stack.append(ls2)
            if (len(rs1) > 1 and len(rs2) >= 1) or (len(rs2) > 1 and len(rs1) >= 1):
                stack.append(rs1)
                stack.append(rs2)
    return (score * 200) // total if total > 0 else 0


def _compare(ls1: bytearray, ls2: bytearray) -> tuple[int, bytearray, bytearray]:
    """The longest common run, as simil's compare() finds it; cuts ls1/ls2 in
    place to what lies before the run and returns what lies after."""
    a = bytes(ls1).lower()
    b = bytes(ls2).lower()
    end1, end2 = len(a), len(b)
    maxchars = 0
    found = None
    start1 = 0
    while start1 < end1:
        s1 = start1
        s2 = 0
        while s1 < end1 and s2 < end2:
            if a[s1] == b[s2]:
                cs1, cs2 = s1, s2
                common = 0
                while True:
                    if s1 == end1 or s2 == end2:
                        break
                    s1 += 1
                    s2 += 1
                    common += 1
                    # the C loop compares the characters after the run, past
                    # the (shrunk) ends too, up to the terminating NUL
                    c1 = a[s1] if s1 < len(a) else -1
                    c2 = b[s2] if s2 < len(b) else -2
                    if c1 != c2:
                        break
                if common > maxchars:
                    diff = common - maxchars
                    maxchars = common
                    found = (cs1, cs2, s1, s2)
                    end1 -= diff
                    end2 -= diff
                else:
                    s1 -= common
            else:
                s2 += 1
        start1 += 1
    if found is None:
        return 0, bytearray(), bytearray()
    cs1, cs2, e1, e2 = found
    rest1 = bytearray(ls1[e1:])
    rest2 = bytearray(ls2[e2:])
    del ls1[cs1:]
    del ls2[cs2:]
    return maxchars, rest1, rest2
