"""HTML: the normalized views ClamAV matches target-3 signatures against, and data: payloads.

libclamav's HTML normalizer (htmlnorm.c) turns an HTML file into two texts
and a set of files, and clammail reproduces them byte for byte:

* "nocomment": the markup, lowercased, whitespace collapsed to one space,
  no whitespace after a tag, comments dropped (a comment ends at the first
  '>'), character and entity references decoded, attribute values quoted
  with '"', quotes inside scripts turned into '"' and spaces dropped there;
* "notags": the text between tags, lowercased, one space for every run of
  whitespace or tags, plus the href of <a> and the src of <img> as written;
* every data: URI in an attribute value becomes a file of its own
  (base64-decoded when it says so), scanned as a new object.

Both texts are matched against target-3 (and target-0) signatures; the raw
HTML bytes are not (ClamAV skips them while HTML parsing is on). ClamAV also
runs scripts through its JavaScript normalizer (a "javascript" view); that
normalizer is not reproduced here, so signatures written against its output
do not match.

Limits: a file larger than MaxHTMLNormalize is not normalized at all; the
notags view is skipped for files larger than MaxHTMLNoTags.

How it is fast: clammail.unpack.html_reference holds the state machine as a
plain loop over bytes, the statement of the rules. `normalize` here gives the
same bytes (tests/test_html_fast.py compares the two on thousands of inputs)
in two tiers:

1. `_bulk_span` takes a stretch of ordinary markup (text, references,
   UTF-8, tags with plain attributes, comments, stray '>') and computes both
   views with whole-string operations (split/join, translate, replace, a few
   regular expressions whose matches are rare): no Python statement runs per
   tag or per byte. What a tag body writes is looked up in a per-process
   cache (bodies repeat) and computed, for all new bodies of a stretch at
   once, only when missing;
2. everything else (scripts, attributes with references or data: URIs,
   unclosed '<', bytes cut by a chunk boundary) goes through the state
   machine, which consumes runs of bytes per step in its busy states and
   single bytes in the rest, and hands back to tier 1 when it reaches text.
"""

from __future__ import annotations

import binascii
import functools
import operator
import re
import threading
from collections.abc import Iterator
from itertools import compress, repeat

from clammail.formats.filetypes import Target
from clammail.unpack.base import Extracted, UnpackContext

# The constants, states and small helpers of the state machine are the
# reference's: one statement of the rules.
from clammail.unpack.html_reference import (
    _ALNUM,
    _CHUNK,
    _DIGITS,
    _DOTS,
    _DOUBLE,
    _HEX,
    _INT32_MAX,
    _INT64_MAX,
    _NOT_QUOTED,
    _SINGLE,
    _SPACE,
    _STR_MAX,
    BAD,
    CHAR_REF,
    CHAR_REF_DECODE,
    COMMENT,
    EIGHTBIT,
    ENTITY_DECODE,
    ESCAPE_CHAR,
    NORM,
    PROCESS_TAG,
    RFC2397_DATA,
    RFC2397_ESC,
    RFC2397_FINISH,
    RFC2397_INIT,
    RFC2397_TYPE,
    SKIP_WS,
    TAG,
    TAG_ARG,
    TAG_ARG_EQUAL,
    TAG_ARG_VAL,
    TRIM_WS,
    Normalized,
    _codepoint_bytes,
    _entity_bytes,
    _lower,
)

# The ideographic and full-width stops libclamav writes as a '.'.
_DOT_BYTES = (b"\xe3\x80\x82", b"\xef\xbc\x8e", b"\xef\xb9\x92")


def unpack_html(data: bytes | memoryview, ctx: UnpackContext) -> Iterator[Extracted]:
    size = len(data)
    limit = ctx.option("MaxHTMLNormalize")
    if limit and size > limit:
        ctx.debug(f"html: {size} bytes is more than MaxHTMLNormalize, not normalized")
        return
    result = normalize(bytes(data), ctx.check)
    yield Extracted(bytes(result.nocomment), name="nocomment.html", view_target=Target.HTML)
    notags_limit = ctx.option("MaxHTMLNoTags")
    if not notags_limit or size <= notags_limit:
        yield Extracted(bytes(result.notags), name="notags.html", view_target=Target.HTML)
    for index, (mime, payload) in enumerate(result.data_uris):
        ctx.check()
        yield Extracted(_decode_data_uri(mime, payload), name=f"rfc2397-{index}")


# ---------------------------------------------------------------------------
# Chunks

def _chunks(data: bytes) -> Iterator[bytes]:
    """The chunks libclamav's reader hands the state machine: NULs dropped, cut after a space."""
    offset, end = 0, len(data)
    want = _CHUNK - 1
    while offset < end:
        chunk = data[offset: offset + want]
        consumed = len(chunk)
        if 0 in chunk:
            # Take bytes until `want` of them are not NUL; trailing NULs stay for later.
            pieces = []
            need, pos = want, offset
            while need and pos < end:
                piece = data[pos: pos + need]
                pos += len(piece)
                piece = piece.replace(b"\0", b"")
                pieces.append(piece)
                need -= len(piece)
            chunk = b"".join(pieces)
            consumed = pos - offset
        next_offset = offset + consumed
        if next_offset < end and data[next_offset] not in _SPACE:
            cut = _rewind_to_space(chunk)
            if cut < len(chunk):
                # Give back what follows the last space (NUL-free chunks only map 1:1).
                next_offset -= len(chunk) - cut
                chunk = chunk[:cut]
        offset = next_offset
        if not chunk:
            break
        yield chunk


def _last_space(buf: bytes, start: int = 0, end: int | None = None) -> int:
    """Index of the last whitespace byte in buf[start:end], -1 if none."""
    return max(buf.rfind(b" ", start, end), buf.rfind(b"\t", start, end),
               buf.rfind(b"\n", start, end), buf.rfind(b"\v", start, end),
               buf.rfind(b"\f", start, end), buf.rfind(b"\r", start, end))


def _rewind_to_space(chunk: bytes) -> int:
    """Length up to and including the last whitespace, unless that is the first byte."""
    last = _last_space(chunk)
    return last + 1 if last >= 1 else len(chunk)


# ---------------------------------------------------------------------------
# Helpers shared by both tiers

# A reference in text exactly as the state machine consumes it: a name of up
# to 1024 characters and an optional ';', or '#', a prefix of zeros and x's
# (any x turns on hexadecimal) and digits, and an optional ';'.
_REFERENCE = re.compile(
    rb"&(?:#(?:(0*[xX][0xX]*)([0-9a-fA-F]*)|(0*)([0-9]*))|[A-Za-z0-9_:\-]{0,1024});?")
_REFERENCE_SPLIT = re.compile(
    rb"(&(?:#(?:0*[xX][0xX]*[0-9a-fA-F]*|[0-9]*)|[A-Za-z0-9_:\-]{0,1024});?)")
# More digits than this could reach libclamav's overflow guards: left to tier 2.
_MAX_REFERENCE_DIGITS = 15


@functools.lru_cache(maxsize=4096)
def _decode_reference(ref: bytes) -> bytes | None:
    """What a complete reference in text writes to the nocomment view (None: leave to tier 2)."""
    terminated = ref.endswith(b";")
    if ref[1:2] != b"#":
        name = ref[1:-1] if terminated else ref[1:]
        if not terminated:
            return b"&" + name.lower()
        replacement = _entity_bytes(name)
        return replacement if replacement is not None else b"&" + name.lower() + b";"
    match = _REFERENCE.fullmatch(ref)
    assert match is not None
    hex_prefix, hex_digits, _, dec_digits = match.groups()
    digits = hex_digits if hex_prefix is not None else dec_digits
    if len(digits) > _MAX_REFERENCE_DIGITS:
        return None
    value = int(digits, 16 if hex_prefix is not None else 10) if digits else 0
    if not terminated:
        return bytes([value & 0xFF])
    return bytes([_lower(value)]) if value < 0x80 else _codepoint_bytes(value)


def _eightbit_groups(run: bytes) -> Iterator[bytes]:
    """A run of bytes >= 0x80 in the groups of (at most) three the state machine forms."""
    for start in range(0, len(run), 3):
        yield run[start: start + 3]


@functools.lru_cache(maxsize=4096)
def _eightbit_notags(run: bytes) -> bytes:
    """What a run of 8-bit bytes in text writes to the notags view (followed by ASCII, no A1+CDO)."""
    out = bytearray()
    for group in _eightbit_groups(run):
        if group in _DOT_BYTES:
            out.append(0x2E)
        elif len(group) == 3:
            out += group[:2] + group[1:2]
        elif len(group) == 2:
            out += group[:1] * 2
        else:
            # libclamav writes the middle byte again, which for one byte is zero.
            out.append(0)
    return bytes(out)


def _eightbit_nocomment(match: re.Match) -> bytes:
    return b"".join(b"." if group in _DOT_BYTES else group for group in _eightbit_groups(match[0]))


# ---------------------------------------------------------------------------
# Tier 1: ordinary markup with whole-string operations
#
# A span starts in state NORM outside a script, at a byte that is not
# whitespace, in a chunk with '\r' removed and '\n' turned into ' ' (the
# first thing the state machine does to every byte outside data: URIs). It
# is cut into texts and tag bodies at '<' and '>': a '<' always opens a tag
# or comment, a comment ends at the first '>', a plain tag too (below), and
# any further '>' is text. A plain tag body has printable ASCII, whitespace
# and 8-bit bytes followed by a plain byte; no '&' or '\\'; no whitespace
# next to '='; quotes only around values (right after '=', closed by the
# same kind of quote, and then a space, the end of the tag or another
# attribute, or for a value with a space in it, whatever continues it up to
# the next space); no whitespace but ' ' inside '"' and none inside "'"; no
# 'data:' anywhere; and a name other than 'script'. The state machine
# writes such a body lowercased, whitespace collapsed to one space (none
# after '<' or before '>', one between a closing quote and a new attribute),
# quotes as '"'; a comment not at all. Text gets its whitespace collapsed,
# none right after a tag or comment.
#
# Bytes 0x01-0x06 never occur in a span and serve as markers: '\x01' a tag
# between texts, '\x02' a quote (while checking bodies), '\x03' an 8-bit run
# and '\x05' a link text in the notags view, '\x04' a space written there
# that makes the next separators write nothing, '\x06' a '<' in a comment
# and, in the nocomment view, the comment itself.

_SPACE_RUN = re.compile(rb"  +")
_KEEP_MARKS = bytes(b for b in range(256) if b >= 0x20 and b not in b"<>!" or b in b"\t\x0b\x0c")
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f]")
_COMMENT_IN_SPAN = re.compile(rb"<[ \t\x0b\x0c]*![^>]*")
_COMMENT_BODY = re.compile(rb"\x01[ \t\x0b\x0c]*![^\x01]*")
# What is left of a body after deleting these is unusual and needs a closer look.
_BODY_ORDINARY = b'\x01 "' + bytes(b for b in range(0x21, 0x7F) if b not in b"&\\'")
_BODY_UNUSUAL_OK = b"\t\x0b\x0c'" + bytes(range(0x80, 0x100))
_SINGLE_TO_DOUBLE = bytes.maketrans(b"'", b'"')
_TABS_TO_SPACE = bytes.maketrans(b"\t\x0b\x0c", b"   ")
_NOT_TABS = bytes(b for b in range(256) if b not in b"\t\x0b\x0c")
_TABS_AND_QUOTE = bytes.maketrans(b"\t\x0b\x0c'", b'   "')
# In a value, 8-bit bytes wait for the next plain byte of a value to be written
# (in groups of three, like text): plain only when one follows at once.
_EIGHTBIT_PENDING = re.compile(rb"[\x80-\xff][\x01\t\x0b\x0c \"']")
_EIGHTBIT_ODD = _DOT_BYTES + (b"\xa1C", b"\xa1D", b"\xa1O")
_NOT_SPACES = bytes(b for b in range(256) if b not in b" \t\x0b\x0c")
_NOT_QUOTES = bytes(b for b in range(256) if b not in b"'\"")
# What separates words, '=' and quotes ('\x02'): a quote after a second '='
# in a word (an unquoted value that goes on) shows as '==\x02', one in a tag
# name as '\x01\x02' once the '='s are gone.
_NOT_WORD_MARKS = bytes(b for b in range(256) if b not in b"\x01\x02 =")
_SCRIPT_NAME = re.compile(rb"\x01[ \t\x0b\x0c]*script[ \t\x0b\x0c\x01]")
_EIGHTBIT_RUN = re.compile(rb"[\x80-\xff]+")
_EIGHTBIT_SPLIT = re.compile(rb"([\x80-\xff]+)")
_A1_CDO = re.compile(rb"\xa1[CDO]")
# A space written by a separator although the previous one (before an 8-bit
# run) already wrote one.
_SPACE_AFTER_RUN = re.compile(rb"\x03 (?<=[ \x04]\x03 )")
_NOT_MARKERS = bytes(b for b in range(256) if b not in (0x01, 0x05))
_LINK_SEPARATOR = b" \x05\x04"
_NOT_MARKER_BYTES = bytes(b for b in range(256) if not 0x01 <= b <= 0x06)

# One attribute as the state machine splits a plain tag body (spaced, with
# '"' for "'"): a name, then '=' and a value that is quoted, quoted and
# broken by a space (the state machine goes on unquoted to the next space),
# unquoted, or empty at the end of the body.
_ATTRIBUTE = rb'[^ =\x01]+(?:=(?:"[^" \x01]*"|"[^" \x01]* [^ \x01]*|[^" \x01][^ \x01]*|(?=\x01)))?'
_VALUE = rb'("[^" \x01]*"|"[^" \x01]* [^ \x01]*|[^" \x01][^ \x01]*|(?=\x01))'


def _link_pattern(tag: bytes, attribute: bytes) -> bytes:
    # The first attribute of that name gives the value; attributes before it have other names.
    return (rb"(?i:" + tag + rb")(?: (?!(?i:" + attribute + rb")[= \x01])" + _ATTRIBUTE
            + rb")* (?i:" + attribute + rb")")


_LINKS = re.compile(rb"\x01(?:" + _link_pattern(b"a", b"href") + b"|" + _link_pattern(b"img", b"src")
                    + rb")=" + _VALUE + rb"[^\x01]*")


def _squeeze(text: bytes) -> bytes:
    """Runs of spaces as one (text has ' ' as its only whitespace)."""
    if b"    " in text:
        # Long runs (indentation): one search for all of them.
        return _SPACE_RUN.sub(b" ", text)
    while b"  " in text:
        text = text.replace(b"  ", b" ")
    return text


def _join_bodies(bodies: list[bytes]) -> bytes:
    """The bodies between '\\x01's, each comment reduced to '!'."""
    joined = b"\x01" + b"\x01".join(bodies) + b"\x01"
    if b"!" in joined:
        joined = _COMMENT_BODY.sub(b"\x01!", joined)
    return joined


def _spaced_bodies(joined: bytes) -> bytes | None:
    """Joined bodies as the state machine writes them (quotes as '"', not lowercased), None if
    one of them is not plain."""
    unusual = joined.translate(None, _BODY_ORDINARY)
    if unusual:
        if unusual.translate(None, _BODY_UNUSUAL_OK):
            return None
        if not unusual.isascii() and (_EIGHTBIT_PENDING.search(joined)
                                      or any(odd in joined for odd in _EIGHTBIT_ODD)):
            return None
        single = b"'" in unusual
        if single:
            # A value ends at a quote of its own kind only; "'" stays as it is in
            # the attribute names a value broken by spaces makes.
            quotes = joined.translate(None, _NOT_QUOTES)
            if quotes[0::2] != quotes[1::2] or b"".join(joined.split(b"'")[1::2]).translate(None, _NOT_SPACES):
                return None
        if unusual.translate(None, _NOT_TABS):
            # No other whitespace than ' ' inside quotes (the first of a run is kept).
            inside = b"".join(joined.translate(_SINGLE_TO_DOUBLE if single else None).split(b'"')[1::2])
            if inside.translate(None, _NOT_TABS):
                return None
        spaced = _squeeze(joined.translate(_TABS_AND_QUOTE))
    else:
        spaced = _squeeze(joined)
    spaced = spaced.replace(b"\x01 ", b"\x01").replace(b" \x01", b"\x01")
    if b" =" in spaced or b"= " in spaced or b"data:" in spaced:
        return None
    if b'"' not in spaced:
        return spaced
    pieces = spaced.split(b'"')
    if len(pieces) % 2 == 0 or b"\x01" in b"\x02".join(pieces[1::2]):
        return None
    # Every quote that opens a value follows the '=' after an attribute name (in
    # a tag name or an unquoted value, '=' and quotes are just bytes).
    quoted = len(pieces) // 2
    before = b"\x02".join(pieces[0:-1:2]) + b"\x02"
    words = before.translate(None, _NOT_WORD_MARKS)
    if before.count(b"=\x02") != quoted or b"==\x02" in words or b"\x01\x02" in words.replace(b"=", b""):
        return None
    # A value without a space is closed by its quote, and what follows starts a
    # new attribute (with a space in front), unless it is a quote or '='. One
    # with a space goes on unquoted up to the next space (here: before the next
    # quote), with nothing in front.
    after = b"\x02" + b"\x02".join(pieces[2::2])
    if after.count(b"\x02 ") + after.count(b"\x02\x01") == quoted:
        return spaced
    if b"\x02\x02" in after or b"\x02=" in after:
        return None
    broken = [at for at in compress(range(quoted), map(bytes.__contains__, pieces[1::2], repeat(b" ")))
              if pieces[2 * at + 2][:1] not in (b" ", b"\x01")]
    if any(b" " not in pieces[2 * at + 2] and b"\x01" not in pieces[2 * at + 2] for at in broken):
        return None
    kept = [pieces[2 * at + 2] for at in broken]
    after = after.replace(b"\x02", b"\x02 ").replace(b"\x02  ", b"\x02 ").replace(b"\x02 \x01", b"\x02\x01")
    pieces[2::2] = after.split(b"\x02")[1:]
    for at, piece in zip(broken, kept, strict=True):
        pieces[2 * at + 2] = piece
    return b'"'.join(pieces)


# What each tag body writes, kept across files: bodies repeat (in the
# benchmark pool 96% of them had been seen before, 90% in the same file).
# _BODY_CACHE maps a body to its nocomment bytes ('\x06' for a comment, which
# writes nothing), or to False when tier 1 leaves it to tier 2; _LINK_CACHE
# maps the bodies of links to their link text. Bounded: cleared when full,
# long bodies not kept.
_BODY_CACHE: dict[bytes, bytes | bool] = {}
_LINK_CACHE: dict[bytes, bytes] = {}
_CACHE_LOCK = threading.Lock()
_BODY_CACHE_SIZE = 8192
_BODY_CACHE_KEY = 256


def _body_tags(bodies: list[bytes]) -> tuple[list, list | None]:
    """The _BODY_CACHE entry of every body, and its link text if any body is a link (else
    None), computing what is missing."""
    with _CACHE_LOCK:
        if len(_BODY_CACHE) > _BODY_CACHE_SIZE:
            _BODY_CACHE.clear()
            _LINK_CACHE.clear()
        tags = list(map(_BODY_CACHE.get, bodies))
        missing = []
        if not all(tags):  # (a truth test per entry is cheaper than looking for None)
            missing = list(dict.fromkeys(compress(bodies, map(operator.is_, tags, repeat(None)))))
            if missing:
                computed, links = _compute_bodies(missing)
                _BODY_CACHE.update(zip(missing, computed, strict=True))
                _LINK_CACHE.update(zip(compress(missing, links), filter(None, links), strict=True))
                tags = list(map(_BODY_CACHE.get, bodies))
        links = None if _LINK_CACHE.keys().isdisjoint(bodies) else list(map(_LINK_CACHE.get, bodies))
        for body in missing:
            if len(body) > _BODY_CACHE_KEY:
                _BODY_CACHE.pop(body, None)
                _LINK_CACHE.pop(body, None)
    return tags, links


def _compute_bodies(bodies: list[bytes]) -> tuple[list, list]:
    """For each body, what it writes to nocomment (or False: not plain) and its link text (or
    None): all at once, or each half apart if one of them is not plain."""
    joined = _join_bodies(bodies)
    spaced = _spaced_bodies(joined)
    if spaced is None or _SCRIPT_NAME.search(joined.lower()):
        if len(bodies) == 1:
            return [False], [None]
        half = len(bodies) // 2
        first, second = _compute_bodies(bodies[:half]), _compute_bodies(bodies[half:])
        return first[0] + second[0], first[1] + second[1]
    lowered = spaced.lower()
    tags = [b"\x06" if body[:1] == b"!" else b"<" + body + b">" for body in lowered[1:-1].split(b"\x01")]
    if b"\x01a " not in lowered and b"\x01img " not in lowered:
        return tags, [None] * len(tags)
    separators, texts = _link_separators(spaced)
    texts_left = iter(texts)
    return tags, [next(texts_left) if separator != b" " else None for separator in separators]


def _interleave(first: list[bytes], second: list[bytes] | tuple[bytes, ...]) -> bytes:
    """first[0] + second[0] + first[1] + ... (len(first) == len(second) + 1)."""
    merged: list[bytes] = [b""] * (len(first) + len(second))
    merged[0::2] = first
    merged[1::2] = second
    return b"".join(merged)


def _link_separators(spaced: bytes) -> tuple[list[bytes], list[bytes]]:
    """What each tag writes to the notags view ('\\x05' for its link text), and the link texts."""
    pieces = _LINKS.split(spaced)
    values = pieces[1::2]
    if not values:
        return [b" "] * (spaced.count(b"\x01") - 1), []
    # The value as add_arg keeps it: at most 1024 bytes, a leading quote and the last byte dropped.
    values = [value[:_STR_MAX] for value in values]
    values = [value[1:-1] if value[:1] == b'"' else value for value in values]
    marks = [b"\x01\x05" if value else b"\x01" for value in values]
    tags = _interleave(pieces[0::2], marks).translate(None, _NOT_MARKERS)
    separators = tags[:-1].replace(b"\x01", b"\x01 ").replace(b"\x05", b"\x05\x04").split(b"\x01")[1:]
    return separators, list(filter(None, values))


def _split_span(span: bytes, marks: bytes) -> tuple[list[bytes], bool]:
    """span cut into text, body, text, ..., text up to the first '<' that is not closed, and
    whether it had to be cut short.

    marks: the '<', '>' and '!' of span, in order."""
    if b"!" in marks:
        if b"<!" in marks:
            # A comment ends at the first '>' whatever it holds: hide its '<'s.
            span = _COMMENT_IN_SPAN.sub(lambda m: m[0][:1] + m[0][1:].replace(b"<", b"\x06"), span)
            marks = span.translate(None, _KEEP_MARKS)
        marks = marks.translate(None, b"!\x06")
    parts = span.replace(b">", b"<").split(b"<")
    # A '>' after a '>' (or before any '<') is text: merge it into its text.
    strays = [0] if marks[:1] == b">" else []
    at = marks.find(b">>")
    while at >= 0:
        strays.append(at + 1)
        at = marks.find(b">>", at + 1)
    for at in reversed(strays):
        parts[at: at + 2] = [parts[at] + b">" + parts[at + 1]]
    # The first '<' followed by another '<' or by nothing ends the span.
    unclosed = marks.find(b"<<")
    if marks[-1:] == b"<" and unclosed < 0:
        unclosed = len(marks) - 1
    if unclosed >= 0:
        unclosed -= sum(1 for at in strays if at < unclosed)
        return parts[: unclosed + 1], True
    return parts, False


class _Span:
    """What tier 1 made of buf[start:end]."""

    __slots__ = ("end", "nocomment", "notags", "space_written", "state")

    def __init__(self, end: int, nocomment: bytes, notags: bytes, space_written: bool, state: int):
        self.end = end
        self.nocomment = nocomment
        self.notags = notags
        self.space_written = space_written
        self.state = state


def _bulk_span(buf: bytes, start: int, limit: int, space_written: bool) -> _Span | None:
    """Normalize the longest plain stretch of buf[start:limit] at once (None: not even one token)."""
    # End after whitespace or before '<', so that no token is cut.
    if buf[limit - 1] in _SPACE:
        end = limit
    else:
        end = max(_last_space(buf, start, limit) + 1, buf.rfind(b"<", start, limit))
        if end <= start:
            return None
    span = buf[start:end]
    marks = span.translate(None, _KEEP_MARKS)
    if marks.translate(None, b"<>!"):
        span = span[: _CONTROL.search(span).start()]
        marks = span.translate(None, _KEEP_MARKS)
    parts, cut = _split_span(span, marks)
    whole = 0 if cut else len(parts)
    end = start + len(span)
    bodies = parts[1::2]
    tags: list = []
    links: list | None = None
    if bodies:
        tags, links = _body_tags(bodies)
        if not all(tags):
            keep = tags.index(False)
            parts, bodies, tags = parts[: 2 * keep + 1], bodies[:keep], tags[:keep]
            links = links and links[:keep]
    if len(parts) != whole:
        end = start + sum(map(len, parts)) + len(parts) - 1
    if bodies and not parts[-1].strip() and not buf[end:].strip():
        # A tag takes effect at the next byte that is not whitespace; there is none in this chunk.
        parts, bodies, tags = parts[:-2], bodies[:-1], tags[:-1]
        links = links and links[:-1]
        end = start + sum(map(len, parts)) + len(parts) - 1
    if end <= start:
        return None
    joined_texts = b"\x01".join(parts[0::2]) if bodies else parts[0]
    ascii_only = joined_texts.isascii()
    if not ascii_only and b"\xa1" in joined_texts and _A1_CDO.search(joined_texts):
        return None
    # Whitespace at the end is pending: skipped after a tag, one space after text.
    if buf[end - 1] not in _SPACE:
        state = NORM
    elif bodies and not parts[-1].strip():
        state = SKIP_WS
    else:
        state = TRIM_WS

    # Texts (tags as '\x01'), whitespace collapsed, none after a tag.
    squeezed = _squeeze(joined_texts.translate(_TABS_TO_SPACE)).rstrip(b" ").replace(b"\x01 ", b"\x01")
    lowered_texts = squeezed.lower()

    # nocomment: texts with references decoded, the tags between them.
    texts = squeezed
    if not ascii_only and any(dot in joined_texts for dot in _DOT_BYTES):
        texts = _EIGHTBIT_RUN.sub(_eightbit_nocomment, texts)
    if b"&" in texts:
        texts = _decode_references(texts)
        if texts is None:
            return None
    else:
        texts = lowered_texts if texts is squeezed else texts.lower()
    if bodies:
        pieces = texts.split(b"\x01")
        nocomment = _interleave(pieces, tags)
        if b"\x06" in nocomment:
            nocomment = nocomment.replace(b"\x06", b"")
    else:
        nocomment = texts

    # notags: tags and references separate words, 8-bit runs are written
    # without changing whether a separator writes a space.
    if links and any(links):
        separators = [_LINK_SEPARATOR if link else b" " for link in links]
        links = list(filter(None, links))
        notags = _interleave(pieces if texts is lowered_texts else lowered_texts.split(b"\x01"), separators)
    else:
        links = None
        notags = lowered_texts.replace(b"\x01", b" ")
    if b"&" in notags:
        notags = _REFERENCE.sub(b" ", notags)
    runs: list[bytes] = []
    if not ascii_only:
        pieces = _EIGHTBIT_SPLIT.split(notags)
        runs = [_eightbit_notags(run) for run in pieces[1::2]]
        notags = b"\x03".join(pieces[0::2])
    notags = (b"\x04" if space_written else b"x") + notags
    if buf[end - 1] in _SPACE:
        notags += b" "
    notags = _squeeze(notags)
    if b"\x04" in notags:
        notags = notags.replace(b"\x04 ", b"\x04")
    if runs:
        notags = _SPACE_AFTER_RUN.sub(b"\x03", notags)
    space_written = notags.rstrip(b"\x03")[-1:] in (b" ", b"\x04")
    notags = notags[1:].replace(b"\x04", b" ")
    if links:
        notags = _interleave(notags.split(b"\x05"), links)
    if runs:
        notags = _interleave(notags.split(b"\x03"), runs)
    return _Span(end, nocomment, notags, space_written, state)


def _decode_references(text: bytes) -> bytes | None:
    """text lowercased with its references decoded (None: one is left to tier 2)."""
    pieces = _REFERENCE_SPLIT.split(text)
    decoded = [_decode_reference(ref) for ref in pieces[1::2]]
    if None in decoded or b"".join(decoded).translate(None, _NOT_MARKER_BYTES):  # type: ignore[arg-type]
        return None
    plain = b"\x02".join(pieces[0::2]).lower().split(b"\x02")
    return _interleave(plain, decoded)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Tier 2: the state machine, with runs of bytes per step where it is busy

_NL_TO_SPACE = bytes.maketrans(b"\n", b" ")
_LOWER_SCRIPT = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ'", b"abcdefghijklmnopqrstuvwxyz\"")
_PLAIN_TEXT = re.compile(rb"[^<&\s\x00-\x1f\x80-\xff]+")
_SCRIPT_TEXT = re.compile(rb"[^<&\x80-\xff]+")
_SPACES = re.compile(rb"[ \t\n\x0b\x0c\r]*")
_TAG_NAME = re.compile(rb"[^\s>]+")
_ARG_NAME = re.compile(rb"[^=\s>]+")
_ARG_VALUE = re.compile(rb"[^&'\"\s>\x80-\xff]+")
_DATA_QUOTED = re.compile(rb"[^&%'\"]+")
_DATA_UNQUOTED = re.compile(rb"[^&%'\"\s>]+")
_WHITESPACE = b" \t\n\x0b\x0c\r"

# Tier 1 looks at most this far ahead; after a miss it waits a little longer each time.
_BULK_WINDOW = 16384
_BULK_RETRY_MAX = 4096


def _raw_index(raw: bytes, cleaned_index: int) -> int:
    """The index in raw of the byte at cleaned_index once raw's '\\r' bytes are removed."""
    position, remaining = 0, cleaned_index
    while True:
        carriage = raw.find(b"\r", position)
        if carriage < 0 or carriage - position > remaining:
            return position + remaining
        remaining -= carriage - position
        position = carriage + 1


def normalize(data: bytes, check=lambda: None) -> Normalized:
    """Run libclamav's HTML state machine over `data` (same output as html_reference.normalize)."""
    out = Normalized()
    o2 = out.nocomment
    text = out.notags
    state, next_state = NORM, BAD
    in_script = False
    text_space_written = False
    binary = False
    tag = bytearray()
    tag_arg = bytearray()
    tag_val = bytearray()
    tag_args: list[tuple[bytes, bytes | None]] = []
    entity = bytearray()
    quoted = _NOT_QUOTED
    escape = False
    value = 0
    hexadecimal = False
    esc_length = 0
    mbchar = mbchar2 = 0
    data_uri: bytearray | None = None
    bulk_window = _BULK_WINDOW
    bulk_retry_gap = 0

    def add_arg(val: bytes | None) -> None:
        if val is not None:
            # A C string: it ends at the first NUL (a decoded &#0;).
            val = val.split(b"\0", 1)[0]
            if val[:1] == b'"':
                val = val[1:-1]
        tag_args.append((bytes(tag_arg), val))

    def arg_value(name: bytes) -> bytes | None:
        for key, val in tag_args:
            if key == name:
                return val
        return None

    def rewind_o2() -> None:
        if o2:
            del o2[-1]

    def keep(buffer: bytearray, byte: int) -> None:
        if len(buffer) < _STR_MAX:
            buffer.append(byte)

    for line in _chunks(data):
        check()
        # Outside data: URIs the state machine skips '\r' and reads '\n' as ' '; doing
        # that once per chunk lets the fast paths ignore both. `raw` is set when a
        # data: URI starts: from there on this chunk is read as it is, byte by byte.
        raw = binary
        buf: bytes | bytearray = bytearray(line) if raw else line.translate(_NL_TO_SPACE, b"\r")
        n = len(buf)
        bulk_from = 0
        i = 0
        while i < n and buf[i] in _SPACE:
            i += 1
        while i < n:
            c = buf[i]
            if raw and not binary:
                if c == 0x0A:
                    buf[i] = 0x20
                    continue
                if c == 0x0D:
                    i += 1
                    continue
            if state == SKIP_WS or state == TRIM_WS:
                if c in _SPACE:
                    i = _SPACES.match(buf, i).end()
                    continue
                if state == TRIM_WS and not in_script:
                    o2.append(0x20)
                state, next_state = next_state, BAD
            elif state == NORM:
                if not in_script and not raw and not mbchar2 and i >= bulk_from and c not in _SPACE:
                    span = _bulk_span(buf, i, min(n, i + bulk_window), text_space_written)
                    if span is not None:
                        o2 += span.nocomment
                        text += span.notags
                        text_space_written = span.space_written
                        if span.end - i >= bulk_window // 2:
                            bulk_window = min(2 * bulk_window, _BULK_WINDOW)
                        # Tier 1 stopped at a token it leaves to tier 2 (or at the window's end).
                        bulk_from = span.end + 1
                        i = span.end
                        state, next_state = span.state, (BAD if span.state == NORM else NORM)
                        bulk_retry_gap = 0
                        continue
                    bulk_retry_gap = min(max(2 * bulk_retry_gap, 16), _BULK_RETRY_MAX)
                    bulk_window = max(bulk_window // 2, 1024)
                    bulk_from = i + bulk_retry_gap
                if c == 0x3C:  # <
                    o2.append(0x3C)
                    if not in_script and not text_space_written:
                        text.append(0x20)
                        text_space_written = True
                    i += 1
                    state, next_state = SKIP_WS, TAG
                    tag.clear()
                elif c in _SPACE and not (in_script and not raw):
                    if not text_space_written and not in_script:
                        text.append(0x20)
                        text_space_written = True
                    state, next_state = TRIM_WS, NORM
                elif c == 0x26:  # &
                    if not text_space_written and not in_script:
                        text.append(0x20)
                        text_space_written = True
                    state, next_state = CHAR_REF, NORM
                    i += 1
                elif c >= 0x80:
                    state, next_state = EIGHTBIT, NORM
                    mbchar = c
                    i += 1
                elif in_script:
                    if raw:
                        low = _lower(c)
                        o2.append(0x22 if low == 0x27 else low)
                        i += 1
                    else:
                        # Whitespace in a script writes nothing to either view.
                        m = _SCRIPT_TEXT.match(buf, i)
                        o2 += buf[i: m.end()].translate(_LOWER_SCRIPT, _WHITESPACE)
                        i = m.end()
                elif c >= 0x20:
                    # A run of plain text characters.
                    m = _PLAIN_TEXT.match(buf, i)
                    run = bytes(buf[i: m.end()]).lower()
                    o2 += run
                    text += run
                    text_space_written = False
                    i = m.end()
                else:
                    o2.append(c)
                    # Control characters count as whitespace in the text view.
                    if not text_space_written:
                        text.append(0x20)
                        text_space_written = True
                    i += 1
            elif state == EIGHTBIT:
                if c < 0x80 or mbchar >= 0x10000:
                    if mbchar in _DOTS or (mbchar == 0xA1 and c in (0x43, 0x44, 0x4F)):
                        o2.append(0x2E)
                        text.append(0x2E)
                        if mbchar == 0xA1:
                            i += 1
                            mbchar = 0
                            continue
                    else:
                        c0, c1, c2 = mbchar >> 16 & 0xFF, mbchar >> 8 & 0xFF, mbchar & 0xFF
                        if c0:
                            o2.append(c0)
                            text.append(c0)
                        if c0 or c1:
                            o2.append(c1)
                            text.append(c1)
                        o2.append(c2)
                        # libclamav writes the middle byte again here, not the last one.
                        text.append(c1)
                    mbchar = 0
                    state, next_state = next_state, NORM
                else:
                    mbchar = (mbchar << 8 | c) & 0xFFFFFFFF
                    i += 1
            elif state == TAG:
                if not tag and c == 0x21:  # <! starts a comment
                    if in_script:
                        o2.append(0x21)
                    else:
                        rewind_o2()
                    state, next_state = COMMENT, BAD
                    i += 1
                elif c == 0x3E:
                    o2.append(0x3E)
                    i += 1
                    state, next_state = SKIP_WS, PROCESS_TAG
                elif c not in _SPACE:
                    if in_script and not tag and c != 0x2F:
                        state = NORM
                    elif not raw:
                        m = _TAG_NAME.match(buf, i)
                        run = buf[i: m.end()].lower()
                        o2 += run
                        tag += run[: _STR_MAX - len(tag)]
                        i = m.end()
                        continue
                    low = _lower(c)
                    o2.append(low)
                    keep(tag, low)
                    i += 1
                else:
                    state = SKIP_WS
                    tag_arg.clear()
                    next_state = PROCESS_TAG if in_script else TAG_ARG
            elif state == TAG_ARG:
                if c == 0x3D:  # =
                    o2.append(0x3D)
                    i += 1
                    state, next_state = SKIP_WS, TAG_ARG_VAL
                    escape, quoted = False, _NOT_QUOTED
                    tag_val.clear()
                elif c in _SPACE:
                    i += 1
                    state, next_state = SKIP_WS, TAG_ARG_EQUAL
                elif c == 0x3E:
                    o2.append(0x3E)
                    if tag_arg:
                        add_arg(None)
                    i += 1
                    state, next_state = PROCESS_TAG, BAD
                else:
                    if not tag_arg:
                        o2.append(0x20)
                    if raw:
                        low = _lower(c)
                        o2.append(low)
                        keep(tag_arg, low)
                        i += 1
                    else:
                        m = _ARG_NAME.match(buf, i)
                        run = buf[i: m.end()].lower()
                        o2 += run
                        tag_arg += run[: _STR_MAX - len(tag_arg)]
                        i = m.end()
            elif state == TAG_ARG_EQUAL:
                if c == 0x3D:
                    o2.append(0x3D)
                    i += 1
                    state, next_state = SKIP_WS, TAG_ARG_VAL
                    escape, quoted = False, _NOT_QUOTED
                    tag_val.clear()
                else:
                    if tag_arg:
                        add_arg(None)
                    tag_arg.clear()
                    state, next_state = TAG_ARG, BAD
            elif state == TAG_ARG_VAL:
                if tag_val == b"data:" or tag_val == b'"data:':
                    # RFC 2397 inline data: the value becomes a file of its own.
                    rewind_o2()
                    if quoted != _NOT_QUOTED:
                        o2.append(0x22)
                    tag_val.clear()
                    state, next_state = RFC2397_TYPE, TAG_ARG
                    escape = c == 0x5C
                    continue
                if c == 0x26:
                    state, next_state = CHAR_REF, TAG_ARG_VAL
                    i += 1
                elif c in (0x27, 0x22):
                    mine = _SINGLE if c == 0x27 else _DOUBLE
                    o2.append(0x22)
                    keep(tag_val, 0x22)
                    i += 1
                    if not tag_val[:-1] and len(tag_val) == 1:
                        quoted = mine
                    elif not escape and quoted == mine:
                        add_arg(bytes(tag_val))
                        state, next_state = SKIP_WS, TAG_ARG
                        tag_arg.clear()
                elif c in _SPACE or c == 0x3E:
                    if quoted == _NOT_QUOTED:
                        add_arg(bytes(tag_val))
                        state, next_state = SKIP_WS, TAG_ARG
                        tag_arg.clear()
                    else:
                        o2.append(c)
                        keep(tag_val, 0x20 if c in _SPACE else 0x3E)
                        state, next_state = SKIP_WS, TAG_ARG_VAL
                        escape, quoted = False, _NOT_QUOTED
                        i += 1
                elif not mbchar2 and c < 0x80 and not raw and len(tag_val) >= 6:
                    # A run of plain value bytes (too long by now to become "data:").
                    m = _ARG_VALUE.match(buf, i)
                    run = buf[i: m.end()]
                    o2 += run.lower()
                    tag_val += run[: _STR_MAX - len(tag_val)]
                    i = m.end()
                else:
                    if mbchar2 and (c < 0x80 or mbchar2 >= 0x10000):
                        if mbchar2 in _DOTS or (mbchar2 == 0xA1 and c in (0x43, 0x44, 0x4F)):
                            o2.append(0x2E)
                            keep(tag_val, 0x2E)
                            if mbchar2 == 0xA1:
                                i += 1
                                mbchar2 = 0
                                continue
                        else:
                            c0, c1, c2 = mbchar2 >> 16 & 0xFF, mbchar2 >> 8 & 0xFF, mbchar2 & 0xFF
                            if c0:
                                o2.append(c0)
                            if c0 or c1:
                                o2.append(c1)
                            o2.append(c2)
                            if c0:
                                keep(tag_val, c0)
                            if c0 or c1:
                                keep(tag_val, c1)
                            keep(tag_val, c2)
                        mbchar2 = 0
                    if c >= 0x80:
                        mbchar2 = (mbchar2 << 8 | c) & 0xFFFFFFFF
                    else:
                        o2.append(_lower(c))
                        keep(tag_val, c)
                    i += 1
                escape = i < n and buf[i] == 0x5C
            elif state == COMMENT:
                # Up to and including the first '>'; inside a script its bytes are kept.
                close = buf.find(b">", i)
                stop = n if close < 0 else close + 1
                if in_script:
                    o2 += buf[i:stop].translate(_LOWER_SCRIPT, _WHITESPACE)
                if close >= 0:
                    state, next_state = SKIP_WS, NORM
                i = stop
            elif state == PROCESS_TAG:
                state, next_state = SKIP_WS, NORM
                name = bytes(tag)
                if name.startswith(b"/"):
                    if name == b"/script":
                        in_script = False
                elif name == b"script":
                    in_script = True
                elif name == b"a":
                    href = arg_value(b"href")
                    if href:
                        text += href + b" "
                        text_space_written = True
                elif name == b"img":
                    src = arg_value(b"src")
                    if src:
                        text += src + b" "
                        text_space_written = True
                tag_args.clear()
            elif state == CHAR_REF:
                if c == 0x23:  # #
                    value, hexadecimal = 0, False
                    state = CHAR_REF_DECODE
                    i += 1
                else:
                    state = ENTITY_DECODE
            elif state == ENTITY_DECODE:
                if c == 0x3B:  # ;
                    replacement = _entity_bytes(bytes(entity))
                    if replacement is None:
                        replacement = b"&" + bytes(entity).lower() + b";"
                    o2 += replacement
                    if next_state == TAG_ARG_VAL:
                        for byte in replacement:
                            keep(tag_val, byte)
                    entity.clear()
                    state, next_state = next_state, BAD
                    i += 1
                elif (c in _ALNUM or c in b"_:-") and len(entity) < _STR_MAX:
                    entity.append(c)
                    i += 1
                else:
                    dumped = b"&" + bytes(entity).lower()
                    o2 += dumped
                    if next_state == TAG_ARG_VAL:
                        for byte in dumped:
                            keep(tag_val, byte)
                    state, next_state = next_state, BAD
                    entity.clear()
            elif state == CHAR_REF_DECODE:
                if value == 0 and c in (0x78, 0x58):
                    hexadecimal = True
                    i += 1
                elif c == 0x3B:
                    if next_state == TAG_ARG_VAL:
                        keep(tag_val, value & 0xFF)
                    if value < 0x80:
                        o2.append(_lower(value))
                    else:
                        o2 += _codepoint_bytes(value)
                    state, next_state = next_state, BAD
                    i += 1
                elif c in _DIGITS or (hexadecimal and c in _HEX):
                    # libclamav's overflow guards (64-bit arithmetic): past
                    # them it writes the low byte and drops the digit.
                    if hexadecimal and (value >> 32) * 16 < _INT32_MAX:
                        value *= 16
                    elif (value >> 32) * 10 < _INT32_MAX:
                        value *= 10
                    else:
                        o2.append(value & 0xFF)
                        state, next_state = next_state, BAD
                        i += 1
                        continue
                    increment = int(chr(c), 16)
                    if value > _INT64_MAX - increment:
                        o2.append(value & 0xFF)
                        state, next_state = next_state, BAD
                    else:
                        value += increment
                    i += 1
                else:
                    o2.append(value & 0xFF)
                    state, next_state = next_state, BAD
            elif state == RFC2397_TYPE:
                if c in (0x27, 0x22):
                    mine = _SINGLE if c == 0x27 else _DOUBLE
                    i += 1
                    if not escape and quoted == mine:
                        state, next_state = SKIP_WS, TAG_ARG
                        tag_arg.clear()
                    else:
                        keep(tag_val, 0x22)
                elif c in _SPACE or c == 0x3E:
                    if quoted == _NOT_QUOTED:
                        state, next_state = SKIP_WS, TAG_ARG
                        tag_arg.clear()
                    else:
                        keep(tag_val, 0x20 if c in _SPACE else 0x3E)
                        state, next_state = SKIP_WS, RFC2397_TYPE
                        escape, quoted = False, _NOT_QUOTED
                        i += 1
                elif c == 0x2C:  # , starts the data
                    state, next_state = RFC2397_INIT, BAD
                    escape = False
                    i += 1
                else:
                    keep(tag_val, _lower(c))
                    i += 1
                escape = i < n and buf[i] == 0x5C
            elif state == RFC2397_INIT:
                data_uri = bytearray()
                out.data_uris.append((bytes(tag_val), data_uri))
                state = RFC2397_DATA
                binary = True
                if not raw:
                    # From here on the chunk is read as it is (see above).
                    i = _raw_index(line, i)
                    buf = bytearray(line)
                    n = len(buf)
                    raw = True
            elif state == RFC2397_DATA:
                if c == 0x26:
                    state, next_state = CHAR_REF, RFC2397_DATA
                    i += 1
                elif c == 0x25:  # %
                    esc_length, value = 0, 0
                    state, next_state = ESCAPE_CHAR, RFC2397_ESC
                    i += 1
                elif c in (0x27, 0x22):
                    mine = _SINGLE if c == 0x27 else _DOUBLE
                    if not escape and quoted == mine:
                        state = RFC2397_FINISH
                    elif data_uri is not None:
                        data_uri.append(c)
                    i += 1
                elif c in _SPACE or c == 0x3E:
                    if quoted == _NOT_QUOTED:
                        state = RFC2397_FINISH
                    elif data_uri is not None:
                        data_uri.append(c)
                    i += 1
                else:
                    # A run of payload bytes (whitespace and '>' too while quoted).
                    m = (_DATA_UNQUOTED if quoted == _NOT_QUOTED else _DATA_QUOTED).match(buf, i)
                    if data_uri is not None:
                        data_uri += buf[i: m.end()]
                    i = m.end()
                escape = i < n and buf[i] == 0x5C
            elif state == RFC2397_FINISH:
                data_uri = None
                state, next_state = SKIP_WS, TAG_ARG
                escape, quoted = False, _NOT_QUOTED
                binary = False
            elif state == RFC2397_ESC:
                if data_uri is not None:
                    if esc_length == 2:
                        data_uri.append(value & 0xFF)
                    elif esc_length == 1:
                        data_uri += b"%" + bytes([(value + 0x30) & 0xFF])
                    else:
                        data_uri.append(0x25)
                state = RFC2397_DATA
            elif state == ESCAPE_CHAR:
                value *= 16
                esc_length += 1
                if c in _HEX:
                    value += int(chr(c), 16)
                else:
                    state = next_state
                if esc_length == 2:
                    state = next_state
                i += 1
            else:  # an engine error in libclamav: it stops normalizing
                return out
        if next_state == state:
            next_state = BAD
    # An entity left open at the end of the file.
    if entity:
        replacement = _entity_bytes(bytes(entity))
        o2 += replacement if replacement is not None else b"&" + bytes(entity).lower()
    return out


def _decode_data_uri(mime: bytes, payload: bytes | bytearray) -> bytes:
    """The bytes a data: URI carries (libclamav hands it to its mail decoder)."""
    if b";base64" not in mime:
        return bytes(payload)
    cleaned = bytes(payload).translate(None, _NOT_BASE64)
    cleaned = cleaned.rstrip(b"=")
    cleaned = cleaned[: len(cleaned) - len(cleaned) % 4 if len(cleaned) % 4 == 1 else None]
    cleaned += b"=" * (-len(cleaned) % 4)
    try:
        return binascii.a2b_base64(cleaned)
    except binascii.Error:
        return b""


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET)
