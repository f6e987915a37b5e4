"""Mail: single messages and mbox files, MIME at any depth, uuencode, BinHex.

This follows what libclamav 1.4's mbox.c does with a mail, because the
verdict depends on it: which parts become objects of their own, with exactly
which bytes, and which are never looked at. In short:

* Attachments (application, audio, image, video and unknown types) and text
  parts are decoded (base64, quoted-printable, yEnc; 7bit/8bit/binary as
  they are) and scanned as they are found. A part that claims no encoding
  but has a name is also decoded as base64, as libclamav guesses for virus
  attachments, and both files are scanned.
* message/rfc822 parts inside a multipart are saved as they are and scanned
  as mails of their own; a top-level message/rfc822 body is parsed in place.
* uuencoded blocks (`begin 644 name` in the body) are decoded while the mail
  is read; the text around them stays in the text part.
* Some files libclamav writes are scanned only by the directory scan that
  follows the parse: unencoded text parts, the uudecoded files, the plain
  copy made before a guessed decoding, bounces. They come after the others,
  and not at all when the parse fails (an unsupported message/ type).
* MIME headers are read with libclamav's tolerance: folded and unfolded
  continuation lines, comments, RFC 2047 and RFC 2231, '=' or ' ' for ':',
  boundaries with extra or missing dashes, a closing boundary that is not
  the end, parts after it.

Every loop is bounded: lines are at most 999 bytes as in libclamav, nesting
stops at MaxRecursion, files at MaxFiles, and the header and MIME-part limits
of libclamav stop the parse and raise Heuristics.Limits.Exceeded.Email* with
AlertExceedsMax, as clamd does.

libclamav looks at every line; so does this module in effect, but in bulk:
the body is read ahead in batches that C's split() cuts where the line ends
allow it, and one regular-expression pass finds the few lines the per-line
rules can act on (empty lines, folds, uuencode, boundaries, nested-encoding
markers). Those go through the rules one by one; the runs of lines between
them are taken whole. tests/mail_reference.py keeps the line-by-line code
this replaced, and tests/test_mail_fast.py checks both give the same bytes.
"""

from __future__ import annotations

import array
import bisect
import enum
import functools
import heapq
import itertools
import mmap
import re
from collections.abc import Generator, Iterator

from clammail.formats.filetypes import FileType, detect
from clammail.unpack.base import Extracted, LimitExceeded, UnpackContext
from clammail.unpack.mime_message import (
    MARKER_FIRST,
    Blob,
    Enc,
    Line,
    Message,
    Mime,
    is_uuencode_begin,
    join_lines,
    text_bytes,
    uudecode_line,
)
from clammail.unpack.mime_text import (
    BLANK,
    SPACE,
    Tokenizer,
    chomp,
    count_quotes,
    rfc822comments,
    strstrip,
    strtokbuf,
)

# libclamav's limits on one mail (mbox.c, HEURISTIC_EMAIL_*)
MAX_LINE_FOLDS_PER_HEADER = 256 * 1024
MAX_HEADER_BYTES = 256 * 1024
MAX_HEADERS = 1024
MAX_MIME_PARTS_PER_MESSAGE = 1024
MAX_ARGUMENTS_PER_HEADER = 256
# a line is read into a 1001-byte buffer: 999 characters and its end
LINE_MAX = 999


class Rc(enum.IntEnum):
    """parseEmailBody's results."""

    FAIL = 0
    OK = 1
    OK_ATTACHMENTS_NOT_SAVED = 2
    VIRUS = 3
    MAXREC = 4
    MAXFILES = 5


class _Header(enum.IntEnum):
    CONTENT_TYPE = 1
    CONTENT_TRANSFER_ENCODING = 2
    CONTENT_DISPOSITION = 3


_HEADERS = {
    b"content-type": _Header.CONTENT_TYPE,
    b"content-transfer-encoding": _Header.CONTENT_TRANSFER_ENCODING,
    b"content-disposition": _Header.CONTENT_DISPOSITION,
}

# MIME subtypes libclamav knows (mbox.c mimeSubtypes)
PLAIN, ENRICHED, HTML, RICHTEXT, MIXED, ALTERNATIVE, DIGEST, SIGNED, PARALLEL, RELATED, \
    REPORT, APPLEDOUBLE, ENCRYPTED, KNOWBOT = range(1, 15)
_SUBTYPES = {
    b"plain": PLAIN, b"enriched": ENRICHED, b"html": HTML, b"richtext": RICHTEXT,
    b"mixed": MIXED, b"alternative": ALTERNATIVE, b"digest": DIGEST, b"signed": SIGNED,
    b"parallel": PARALLEL, b"related": RELATED, b"report": REPORT,
    b"appledouble": APPLEDOUBLE, b"fax-message": MIXED, b"encrypted": ENCRYPTED,
    b"x-bfile": RELATED, b"knowbot": KNOWBOT, b"knowbot-metadata": KNOWBOT,
    b"knowbot-code": KNOWBOT, b"knowbot-state": KNOWBOT,
}


def _subtype(name: bytes | None) -> int:
    return _SUBTYPES.get((name or b"").lower(), -1)


def _header_kind(name: bytes) -> int:
    return _HEADERS.get(name.lower(), -1)


class _HeuristicFound(Exception):
    """A libclamav mail limit was hit with AlertExceedsMax: stop this message."""


# -- reading lines as libclamav does ------------------------------------------

# getline_from_mbox's line: at most 998 characters and a line end (LF, CR,
# CRLF or LFCR), or 999 characters with none (a long line is cut there, and
# so is the last line of the data)
_GETLINE = re.compile(rb"[^\r\n]{0,998}+(?:\r\n?|\n\r?)|[^\r\n]{1,999}")
# Read-ahead in the body: the first batch is small (a mail is often short, and
# a batch is read again after a uuencoded file it could not follow), later
# ones double up to the largest.
_BATCH_FIRST = 8 * 1024
_BATCH_MAX = 4 << 20


class _Reader:
    """The mail as libclamav's two line readers see it.

    `gets` is fmap_gets: up to 999 bytes through a newline, cut at a NUL.
    `getline` is getline_from_mbox: up to 999 bytes, a line ends with LF,
    CR, CRLF or LFCR, and NUL bytes are dropped. Both return the raw line
    with its line end, or None at the end of the data. `read_ahead` returns
    the next getline lines in bulk, split by C code where the data allows.
    """

    def __init__(self, data: bytes | mmap.mmap):
        self.data = data
        self.at = 0

    def gets(self) -> bytes | None:
        data, at = self.data, self.at
        if at >= len(data):
            return None
        end = data.find(b"\n", at, at + LINE_MAX)
        end = end + 1 if end >= 0 else min(len(data), at + LINE_MAX)
        self.at = end
        line = data[at:end]
        nul = line.find(b"\0")
        return line if nul < 0 else line[:nul]

    def getline(self) -> bytes | None:
        data, at = self.data, self.at
        if at >= len(data):
            return None
        m = _GETLINE.match(data, at)
        self.at = end = m.end()
        line = data[at:end]
        if b"\0" in line:
            line = line.replace(b"\0", b"")
            if not line and end >= len(data):
                return None  # only NUL bytes up to the end: the end
        return line  # a long line is cut; NUL bytes alone read as an empty line

    def peek(self) -> int | None:
        return self.data[self.at] if self.at < len(self.data) else None

    def read_ahead(self, budget: int) -> _Batch | None:
        """The getline lines of the next `budget` bytes or so, as `Line`
        contents except that an empty line is b"" (None is for the caller)."""
        data, at = self.data, self.at
        n = len(data)
        if at >= n:
            return None
        stop = n
        if at + budget < n:
            stop = data.rfind(b"\n", at, at + budget) + 1
            if stop <= at:
                return self._read_ahead_slowly(budget)
        chunk = data[at:stop]
        if b"\0" not in chunk:
            # LF alone, or CRLF alone: C's split() cuts the lines getline cuts
            # and fmap_gets sees the same lines (uudecode reads with it)
            if b"\r" not in chunk and (stop == n or data[stop] != 0x0D):
                batch = _Batch.split(chunk, b"\n", at, stop, LINE_MAX - 1)
            elif chunk.count(b"\r") == chunk.count(b"\n") == chunk.count(b"\r\n"):
                batch = _Batch.split(chunk, b"\r\n", at, stop, LINE_MAX - 2)
            else:
                batch = None
            if batch is not None:
                self.at = stop
                return batch
        return self._read_ahead_slowly(budget)

    def _read_ahead_slowly(self, budget: int) -> _Batch | None:
        """read_ahead by getline's regular expression, one line at a time."""
        data, at = self.data, self.at
        n = len(data)
        lines: list[bytes] = []
        ends: list[int] = []
        stop = at + budget
        for m in _GETLINE.finditer(data, at):
            line = m.group().rstrip(b"\r\n")
            end = m.end()
            if b"\0" in line:
                line = line.replace(b"\0", b"")
                if not line and end >= n and not m.group().endswith((b"\r", b"\n")):
                    break  # only NUL bytes up to the end: the end
            lines.append(line)
            ends.append(end)
            if end >= stop:
                break
        if not lines:
            self.at = n
            return None
        self.at = ends[-1]
        return _Batch(lines, ends)


# First characters of body lines that need no test but the markers': not
# white space (empty-option and fold counts), ';', or b/B (uuencode's begin).
_PLAIN_FIRST = frozenset(range(256)) - frozenset(SPACE + b";bB")
# a boundary line, opening or closing, starts with one of these
_BOUNDARY_FIRST = frozenset(b"-(")


class _Batch:
    """Lines read ahead, and where in the data each one ends. A batch that
    C's split() made keeps its text, where the lines of interest are found
    by searching (`joined`)."""

    __slots__ = ("lines", "joined", "_ends", "_start", "_stop")

    def __init__(self, lines: list[bytes], ends: list[int] | None, start: int = 0,
                 stop: int = 0, joined: _Joined | None = None):
        self.lines = lines
        self.joined = joined
        self._ends = ends
        self._start, self._stop = start, stop

    @classmethod
    def split(cls, chunk: bytes, sep: bytes, start: int, stop: int,
              longest: int) -> _Batch | None:
        lines = chunk.split(sep)
        if chunk.endswith(sep):
            lines.pop()
        if max(map(len, lines)) > longest:
            return None  # a long line: getline cuts it
        return cls(lines, None, start, stop, _Joined(chunk, sep, len(lines)))

    def end(self, index: int) -> int:
        """The offset in the data just after line `index` and its line end."""
        return self._offsets()[index]

    def index_at(self, offset: int) -> int | None:
        """The line that starts at `offset` (len(lines) past the last one),
        or None when `offset` falls inside a line."""
        ends = self._offsets()
        i = bisect.bisect_left(ends, offset)
        if i < len(ends) and ends[i] == offset:
            return i + 1
        return None

    def _offsets(self) -> list[int]:
        if self._ends is None:
            sep = len(self.joined.sep)
            self._ends = [min(self._start + total + sep * k, self._stop)
                          for k, total in enumerate(itertools.accumulate(map(len, self.lines)), 1)]
        return self._ends


class _Joined:
    """Lines joined by a separator none of them holds: which lines start
    with something, or hold it, is found by one C search over the whole
    text instead of a look at every line."""

    __slots__ = ("text", "sep", "count")

    def __init__(self, text: bytes, sep: bytes, count: int):
        self.text, self.sep, self.count = text, sep, count

    @classmethod
    def of_lines(cls, lines: list[Line]) -> _Joined:
        """Body lines (None for an empty one) joined by newlines. A line that
        holds a newline itself (only lines made outside the readers could)
        makes `numbers` give up."""
        return cls(join_lines(b"\n", lines), b"\n", len(lines))

    def starting(self, starts: _LineStart) -> tuple[list[int], list[int]]:
        """Offsets of the lines that start with what `starts` matches: those
        where its group "first" matched, and the others (both in order)."""
        text = self.text
        first: list[int] = []
        other: list[int] = []
        m = starts.at_start.match(text)
        if m is not None:
            (first if m.lastgroup == "first" else other).append(0)
        step = len(self.sep)
        if starts.grouped:
            for m in starts.after[self.sep].finditer(text):
                (first if m.lastgroup == "first" else other).append(m.start() + step)
        else:
            other += [m.start() + step for m in starts.after[self.sep].finditer(text)]
        return first, other

    def holding(self, needle: bytes) -> list[int]:
        """Offsets of the lines that hold `needle`, in order."""
        text, sep = self.text, self.sep
        found: list[int] = []
        at = text.find(needle)
        while at >= 0:
            start = text.rfind(sep, 0, at)
            start = 0 if start < 0 else start + len(sep)
            if not found or found[-1] != start:
                found.append(start)
            at = text.find(needle, at + 1)
        return found

    def numbers(self, *offsets: list[int], check: bool = False) -> list[list[int]] | None:
        """The line numbers of each list of line-start offsets (each in
        order), found in one count over the text. With `check`, None unless
        the text has exactly one separator between two lines (the count then
        runs to the end)."""
        text, sep = self.text, self.sep
        out: list[list[int]] = [[] for _ in offsets]
        line = prev = 0
        tagged = (zip(each, itertools.repeat(k)) for k, each in enumerate(offsets))
        for offset, k in heapq.merge(*tagged):
            line += text.count(sep, prev, offset)
            prev = offset
            if line >= self.count:
                break  # past the last line (the text's closing separator)
            found = out[k]
            if not found or found[-1] != line:
                found.append(line)
        if check and line + text.count(sep, prev) != self.count - 1:
            return None
        return out

    def body_lines(self) -> list[int]:
        """Lines parseEmailFile's body loop has to look at: empty ones, those
        starting with white space, ';' or a uuencode `begin`, and those that
        can set a marker of Message (see Message.check_markers). Any other
        line is appended as it is."""
        _, found = self.starting(_BODY_SPECIAL)
        binhex = self.holding(b"BinHex")
        if not binhex:
            return self.numbers(found)[0]
        return _union(*self.numbers(found, binhex))

    def part_lines(self) -> tuple[list[int], list[int]] | None:
        """Lines that can be boundaries (they start with '-' or '('), and
        lines that can set a marker of Message; None when the lines held a
        separator of their own."""
        boundary, marker = self.starting(_PART_SPECIAL)
        numbers = self.numbers(boundary, marker, self.holding(b"BinHex"), check=True)
        if numbers is None:
            return None
        boundary, marker, binhex = numbers
        return boundary, _union(marker, binhex) if binhex else marker


def _union(a: list[int], b: list[int]) -> list[int]:
    return sorted(set(a).union(b))


class _LineStart:
    """A regular expression for what a line starts with: at the start of
    the text, or after either line separator (a literal the search skips to).
    A match takes the separator alone: an empty line's start is the next
    separator, which must be found again. A group named "first" sorts the
    lines in two (see _Joined.starting)."""

    def __init__(self, regex: bytes):
        self.at_start = re.compile(regex)
        self.after = {sep: re.compile(re.escape(sep) + b"(?=" + regex + b")")
                      for sep in (b"\n", b"\r\n")}
        self.grouped = "first" in self.at_start.groupindex


# What Message._check_encoding looks for at the start of a line ("BinHex"
# it looks for anywhere).
_MARKER_START = rb"(?i:content-transfer-encoding)|Received: |=ybegin line="
# parseEmailFile's body loop: an empty line (the next separator, or the end),
# white space or ';' first (empty options, folds, lines of white space), a
# uuencode `begin`, or a marker.
_BODY_SPECIAL = _LineStart(rb"[ \t\n\v\f\r;]|\Z|(?i:begin )|" + _MARKER_START)
# a boundary line, opening or closing, starts with '-' or '('
_PART_SPECIAL = _LineStart(rb"(?P<first>[-(])|" + _MARKER_START)


class _PartLines:
    """Where the boundary lines and the marker lines are in a multipart's
    body, found once for all its parts by C searches (line by line when the
    lines cannot be joined)."""

    def __init__(self, body: list[Line]):
        self.body = body
        found = _Joined.of_lines(body).part_lines()
        # kept while the parts are read (and nested multiparts inside them):
        # arrays of machine integers, not lists of int objects
        self.boundary_like: array.array | None = None
        self.marker_like: array.array | None = None
        if found is not None:
            self.boundary_like = array.array("q", found[0])
            self.marker_like = array.array("q", found[1])
        self._next = 0

    def part_end(self, cur: int, boundary: bytes) -> int:
        """The index of the first boundary line from `cur` on (the part's
        body runs up to it), or the end of the body."""
        body = self.body
        candidates = self.boundary_like
        if candidates is None:
            candidates = range(cur, len(body))
            first = 0
        else:
            # parts come in order: each candidate is looked at once
            first = bisect.bisect_left(candidates, cur, self._next)
        for k in range(first, len(candidates)):
            i = candidates[k]
            line = body[i]
            if (line and line[0] in _BOUNDARY_FIRST
                    and (_boundary_end(line, boundary) or _boundary_start(line, boundary))):
                self._next = k
                return i
        self._next = len(candidates)
        return len(body)

    def markers(self, start: int, stop: int) -> list[int] | None:
        """The lines in body[start:stop] that could be markers, from `start`."""
        if self.marker_like is None:
            return None
        lo = bisect.bisect_left(self.marker_like, start)
        hi = bisect.bisect_left(self.marker_like, stop, lo)
        return [i - start for i in self.marker_like[lo:hi]]


class _BodyState:
    """parseEmailFile's state while it reads the body."""

    __slots__ = ("semi", "fold", "body_is_empty", "last_body_blank")

    def __init__(self, semi: bool, fold: int):
        self.semi = semi  # the last line was only blanks and semicolons
        self.fold = fold  # folded (blank-led) lines in a row
        self.body_is_empty = True
        self.last_body_blank = False


def _as_line(raw: bytes) -> Line:
    line = chomp(raw)
    return line if line else None


# -- the parser ---------------------------------------------------------------


class _MailParser:
    """One run of cli_parse_mbox over a mail or mailbox."""

    def __init__(self, data: bytes | mmap.mmap, ctx: UnpackContext):
        self.reader = _Reader(data)
        self.ctx = ctx
        self.alert = bool(ctx.option("AlertExceedsMax"))
        self.phishing = bool(ctx.option("PhishingScanURLs"))
        self.max_rec = int(ctx.option("MaxRecursion") or 0)
        self.max_files = int(ctx.option("MaxFiles") or 0)
        self.files = 0
        # files left for the directory scan after the parse
        self.deferred: list[Extracted] = []
        self.failed = False

    # -- objects ------------------------------------------------------------

    def _object(self, data: bytes, name: str | None) -> Extracted | None:
        # empty files are not kept; size limits are the engine's
        return Extracted(data, name=name) if data else None

    def _defer(self, data: bytes, name: str | None = None) -> None:
        obj = self._object(data, name)
        if obj is not None:
            self.deferred.append(obj)

    def _scan_blobs(self, blobs: Iterator[Blob], name: str | None,
                    force_ctx: bool = False) -> Generator[Extracted, None, bool]:
        """Write the files of one export: the last is scanned now when it has
        the scan context, everything else waits for the directory scan.
        Returns whether there was a final file."""
        got = False
        for blob in blobs:
            self.ctx.check()
            if blob.final and (blob.scan_now or force_ctx):
                obj = self._object(blob.data, name)
                if obj is not None:
                    yield obj
            else:
                self._defer(blob.data, name)
            got = got or blob.final
        return got

    def _heuristic(self, name: str) -> None:
        if self.alert:
            self.ctx.alert(f"Heuristics.Limits.Exceeded.{name}")
            raise _HeuristicFound(name)

    # -- cli_parse_mbox -------------------------------------------------------

    def run(self) -> Iterator[Extracted]:
        reader = self.reader
        first = reader.gets()
        if first is None:
            return
        try:
            if first.startswith(b"From "):
                rc = yield from self._mailbox(first)
            else:
                rc = yield from self._single(first)
        except _HeuristicFound:
            return
        # When cli_mbox fails the directory is never scanned; a limit it hit
        # becomes clamd's Heuristics.Limits.Exceeded.* (with AlertExceedsMax).
        if rc == Rc.MAXREC:
            raise LimitExceeded("MaxRecursion")
        if rc == Rc.MAXFILES:
            raise LimitExceeded("MaxFiles")
        if rc in (Rc.FAIL, Rc.VIRUS):
            return
        for obj in self.deferred:
            self.ctx.check()
            yield obj

    def _single(self, first: bytes) -> Generator[Extracted, None, Rc]:
        reader = self.reader
        buffer = first
        if buffer.startswith(b"P I "):
            # CommuniGate Pro: skip its own header block
            while True:
                line = reader.gets()
                if line is None:
                    break
                buffer = line
                if not buffer or buffer[0] in b"\r\n":
                    break
        while not buffer or buffer[0] in b"\r\n":
            line = reader.getline()
            if line is None:
                break
            buffer = line
        body = self._parse_email_file(buffer[:LINE_MAX + 1])
        if body is None:
            return Rc.OK
        if not body.body:
            return Rc.OK
        body.has_ctx = True
        rc = yield from self._parse_email_body(body, None, 0)
        return rc

    def _mailbox(self, first: bytes) -> Generator[Extracted, None, Rc]:
        reader = self.reader
        m = Message(has_ctx=True)
        last_was_empty = False
        raw: bytes | None = first
        body: Message | None = None
        while raw is not None:
            self.ctx.check()
            line = _as_line(raw)
            if last_was_empty and line is not None and line.startswith(b"From "):
                body = self._parse_email_headers(m)
                if body is None:
                    m.reset()
                    raw = reader.gets()
                    continue
                body.has_ctx = True
                if body.body:
                    rc = yield from self._parse_email_body(body, None, 0)
                    if rc == Rc.FAIL:
                        body.reset()
                        m = body
                        raw = reader.gets()
                        continue
                    if rc == Rc.VIRUS:
                        return Rc.VIRUS
                m = body
                m.reset()
                m.has_ctx = True
            else:
                last_was_empty = line is None
            if is_uuencode_begin(line):
                if not self._uudecode_file(line):
                    m.add_str(line)
            else:
                m.add_str(line)
            raw = reader.gets()
        body = self._parse_email_headers(m)
        if body is None or not body.body:
            return Rc.OK
        body.has_ctx = True
        rc = yield from self._parse_email_body(body, None, 0)
        return rc

    # -- uuencode fast track ----------------------------------------------

    def _uudecode_file(self, first: bytes) -> bool:
        """uudecodeFile: decode the lines after `begin` up to `end`; the file
        waits for the directory scan."""
        if strtokbuf(first, 2, b" ") is None:
            return False
        name = strtokbuf(first, 2, b" ")
        out = bytearray()
        reader = self.reader
        while True:
            raw = reader.gets()
            if raw is None:
                break
            line = chomp(raw)
            if line.lower() == b"end" or not line:
                break
            decoded = uudecode_line(line)
            if decoded is None:
                break
            out += decoded
            if len(out) > self.ctx.max_object_size():
                break
        self._defer(bytes(out), _name(name))
        return True

    # -- parseEmailFile ----------------------------------------------------

    def _parse_email_file(self, first: bytes) -> Message | None:
        reader = self.reader
        ret = Message()
        in_header = True
        last_was_blank = False
        any_headers = False
        boundary: bytes | None = None
        last_only_semi = [False]
        fold_cnt = [0]
        header_bytes = 0
        header_count = 0
        pending: list[bytes] = []
        raw: bytes | None = first
        # the first line of the body when it was read with the headers
        body_first: list[bytes] = []
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
                        # a boundary line after a blank one: the body begins here
                        in_header = False
                        body_first.append(line)
                        break
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
                    # A last header giving a boundary and ending in ';' ends at the
                    # blank line: libclamav 1.4.6 reads the body into it (and
                    # loses the parts), newer ClamAV and clammail do not.
                    header_count += 1
                    self._check_header_count(header_count)
                    self._parse_email_header(ret, b"".join(pending))
                    pending = []
                if line is None and not pending:
                    if any_headers:
                        in_header = False
                        break
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
                raw = reader.getline()
            if not in_header:
                self._read_body(ret, body_first, last_only_semi[0], fold_cnt[0])
        except _Limit:
            pass
        if not any_headers:
            return None
        return ret

    def _read_body(self, ret: Message, first: list[bytes], semi: bool, fold: int) -> None:
        """The body part of parseEmailFile: every line goes into `ret` (a
        uuencoded file is decoded on the way), read ahead in batches.

        In a batch C's split() made, only the lines `_Joined.body_lines`
        finds go through parseEmailFile's loop (`_body_lines`); the runs
        between them are appended as they are. `first` is the body's first
        line when the header loop read it already (a boundary line: it
        passes the checks of the loop unchanged).
        """
        reader = self.reader
        state = _BodyState(semi, fold)
        budget = _BATCH_FIRST
        batch: _Batch | None = _Batch(first, [reader.at]) if first else None
        special: list[int] | None = None
        start = 0
        try:
            while True:
                if batch is None or start >= len(batch.lines):
                    self.ctx.check()
                    batch = reader.read_ahead(budget)
                    if batch is None:
                        return
                    budget = min(2 * budget, _BATCH_MAX)
                    special = batch.joined.body_lines() if batch.joined is not None else None
                    start = 0
                if special is None:
                    stopped = self._body_lines(ret, batch.lines, start, len(batch.lines), state)
                else:
                    stopped = self._body_runs(ret, batch.lines, start, special, state)
                if stopped < 0:
                    start = len(batch.lines)
                    continue
                # uudecodeFile reads on with fmap_gets from the end of that line
                state.body_is_empty = False
                line = batch.lines[stopped]
                batch_end = reader.at
                reader.at = batch.end(stopped)
                if not self._uudecode_file(line):
                    ret.add_str(line)
                resume = batch.index_at(reader.at)
                if resume is None:
                    batch = None  # it ended inside a line of the batch: read again from there
                    budget = _BATCH_FIRST
                else:
                    start = resume
                    reader.at = batch_end
        except _Limit:
            return

    def _body_runs(self, ret: Message, lines: list[bytes], start: int, special: list[int],
                   state: _BodyState) -> int:
        """`_body_lines` for the `special` lines from `start` on, and the
        runs of other lines between them appended whole (the loop would
        append each, reset the counts and find no marker in it)."""
        body = ret.body
        n = len(lines)
        k = bisect.bisect_left(special, start)
        i = start
        while i < n:
            if state.body_is_empty:
                nxt = i  # the first lines decide whether the body has begun
            else:
                nxt = special[k] if k < len(special) else n
                if nxt > i:
                    body.extend(lines[i:nxt])
                    state.semi = False
                    state.fold = 0
                    state.last_body_blank = False
                    i = nxt
                    if i >= n:
                        break
            stopped = self._body_lines(ret, lines, i, i + 1, state)
            if stopped >= 0:
                return stopped
            i += 1
            k = bisect.bisect_left(special, i, k)
        return -1

    def _body_lines(self, ret: Message, lines: list[bytes], start: int, stop: int,
                    state: _BodyState) -> int:
        """parseEmailFile's loop over the body lines lines[start:stop] (b""
        for an empty line). Returns the index of a uuencode `begin` line,
        where it stops, or -1."""
        body = ret.body
        append = body.append
        text = ret.mime_type == Mime.TEXT
        markers = not ret.markers_complete()
        plain_first = _PLAIN_FIRST
        marker_first = MARKER_FIRST
        semi, fold = state.semi, state.fold
        body_is_empty, last_body_blank = state.body_is_empty, state.last_body_blank
        stopped = -1
        try:
            for index in range(start, stop):
                line = lines[index]
                if line and line[0] in plain_first and not body_is_empty:
                    # not blank, no semicolon, no uuencode: only the markers to test
                    semi = False
                    fold = 0
                    last_body_blank = False
                    append(line)
                    if markers and (line[0] in marker_first or b"BinHex" in line):
                        ret._check_encoding(len(body) - 1)
                        markers = not ret.markers_complete()
                    continue
                if not line:
                    if last_body_blank and not text:
                        continue
                    last_body_blank = True
                    ret.add_str(None)
                    continue
                # doContinueMultipleEmptyOptions, then the fold count
                if not line.strip(b" \t;"):
                    if semi:
                        continue
                    semi = True
                else:
                    semi = False
                fold = fold + 1 if line[0] in BLANK else 0
                if fold >= MAX_LINE_FOLDS_PER_HEADER:
                    self._heuristic("EmailLineFoldCnt")
                    raise _Limit()
                if is_uuencode_begin(line):
                    stopped = index
                    break
                if body_is_empty:
                    if _newline_in_header(line):
                        continue
                    body_is_empty = False
                last_body_blank = False
                ret.add_str(line)
                markers = not ret.markers_complete()
        finally:
            state.semi, state.fold = semi, fold
            state.body_is_empty, state.last_body_blank = body_is_empty, last_body_blank
        return stopped

    def _check_fold(self, line: Line, fold_cnt: list[int]) -> None:
        if line is None:
            return
        fold_cnt[0] = fold_cnt[0] + 1 if line[0] in BLANK else 0
        if fold_cnt[0] >= MAX_LINE_FOLDS_PER_HEADER:
            self._heuristic("EmailLineFoldCnt")
            raise _Limit()

    def _check_header_count(self, count: int) -> None:
        if count > MAX_HEADERS:
            self._heuristic("EmailHeaders")
            raise _Limit()

    # -- parseEmailHeaders -------------------------------------------------

    def _parse_email_headers(self, m: Message) -> Message | None:
        """The headers at the top of `m`'s body; the rest becomes the body."""
        ret = Message()
        in_header = True
        body_is_empty = True
        any_headers = False
        fullline: bytes | None = None
        pieces = 0
        last_only_semi = [False]
        fold_cnt = [0]
        header_count = 0
        lines = m.body
        n = len(lines)
        i = 0
        try:
            while i < n:
                line = lines[i]
                if _continue_empty_options(line, last_only_semi):
                    i += 1
                    continue
                self._check_fold(line, fold_cnt)
                if in_header:
                    if line is None:
                        if not any_headers:
                            break
                        in_header = False
                        body_is_empty = True
                        i += 1
                        continue
                    if fullline is None:
                        if line[0] in BLANK:
                            i += 1
                            continue
                        cmd = strtokbuf(line, 0, b":") if b":" in line else None
                        if cmd is None:
                            if line.startswith(b"From "):
                                any_headers = True
                            i += 1
                            continue
                        kind = _header_kind(rfc822comments(cmd) or cmd)
                        if kind < 0:
                            if not any_headers:
                                any_headers = _useful_header(cmd)
                            i += 1
                            continue
                        any_headers = True
                        fullline = line
                        pieces = 1
                    else:
                        fullline += line
                        pieces += 1
                    if len(fullline) + pieces > MAX_HEADER_BYTES:
                        self._heuristic("EmailHeaderBytes")
                        break
                    if _next_is_folded_header(lines, i):
                        i += 1
                        continue
                    if count_quotes(fullline) % 2 == 1:
                        i += 1
                        continue
                    fullline = rfc822comments(fullline) or fullline
                    header_count += 1
                    self._check_header_count(header_count)
                    if self._parse_email_header(ret, fullline) < 0:
                        i += 1
                        continue
                    fullline = None
                    i += 1
                else:
                    if body_is_empty:
                        if line is None or _newline_in_header(line):
                            i += 1
                            continue
                        body_is_empty = False
                    ret.take_body(lines[i:], m)
                    break
        except _Limit:
            pass
        if not any_headers:
            return None
        return ret

    # -- parseEmailHeader / parseMimeHeader --------------------------------

    def _parse_email_header(self, m: Message, line: bytes) -> int:
        for sep in b":= ":
            if sep in line:
                break
        else:
            return -1
        copy = rfc2047(line)
        if copy is None:
            copy = line
        tok = Tokenizer(copy)
        cmd = tok.next(bytes([sep]))
        if cmd is None:
            return -1
        cmd = strstrip(cmd)
        if not cmd:
            return -1
        arg = tok.next(b"")
        if arg is None:
            return -1
        return self._parse_mime_header(m, cmd, arg)

    def _parse_mime_header(self, m: Message, cmd: bytes, arg: bytes) -> int:
        kind = _header_kind(rfc822comments(cmd) or cmd)
        ptr = rfc822comments(arg)
        if ptr is None:
            ptr = arg
        if kind == _Header.CONTENT_TYPE:
            if b"/" not in ptr:
                return 0
            if arg[:1] == b"/":
                m.set_mime_type(b"application")
                m.set_subtype(b"octet-stream")
            else:
                ptr = ptr.lstrip(SPACE)
                if ptr[:1] == b'"':
                    ptr = ptr[1:]
                if ptr[:1] != b"/":
                    field = strtokbuf(ptr, 0, b";")
                    if field:
                        _set_content_type(m, field)
            count = 0
            i = 1
            this_header = Message()
            while True:
                field = strtokbuf(ptr, i, b";")
                i += 1
                if field is None:
                    break
                count += 1
                if count >= MAX_ARGUMENTS_PER_HEADER:
                    self._heuristic("EmailMIMEArguments")
                    break
                m.add_arguments(field)
                this_header.add_arguments(field)
            boundary = this_header.find_last_argument(b"boundary")
            if boundary is not None:
                m.content_type_boundary = boundary
        elif kind == _Header.CONTENT_TRANSFER_ENCODING:
            m.set_encoding(ptr)
        elif kind == _Header.CONTENT_DISPOSITION:
            p = strtokbuf(ptr, 0, b";")
            if p:
                m.set_disposition(p)
                m.add_argument(strtokbuf(ptr, 1, b";"))
            if not m.has_filename():
                m.add_argument(b"filename=unknown")
        return 0

    # -- parseEmailBody ----------------------------------------------------

    def _parse_email_body(self, message_in: Message | None, text_in: list[Line] | None,
                          level: int) -> Generator[Extracted, None, Rc]:
        self.ctx.check()
        if self.max_rec and level > self.max_rec:
            return Rc.MAXREC
        if self.max_files and self.files >= self.max_files:
            return Rc.MAXFILES
        rc = Rc.OK
        a_text = text_in
        main = message_in
        infected = False

        if main is not None and main.body:
            mime = main.mime_type
            sub = main.get_subtype()
            subtype = _subtype(sub)
            if mime == Mime.TEXT and subtype == PLAIN:
                mime = Mime.NOMIME
                main.set_subtype(b"")
            elif mime == Mime.MESSAGE and sub.lower() == b"rfc822-headers":
                mime = Mime.NOMIME
                main.set_subtype(b"")

            if mime == Mime.NOMIME:
                a_text = _text_add_message(a_text, main)
            elif mime == Mime.TEXT:
                pass  # only the phishing checks look at it here
            elif mime == Mime.MULTIPART:
                result, main = yield from self._multipart(main, message_in, a_text, text_in,
                                                          level)
                if result is not None:
                    return result
                # broken multipart: no boundary, or no boundary line
            elif mime == Mime.MESSAGE:
                rc = Rc.FAIL
                low = sub.lower()
                if low in (b"rfc822", b"delivery-status"):
                    inner = self._parse_email_headers(main)
                    if inner is not None:
                        inner.has_ctx = True
                        if main is not message_in:
                            main = None
                        else:
                            main.reset()
                        if inner.body:
                            rc = yield from self._parse_email_body(inner, None, level + 1)
                elif low == b"disposition-notification":
                    rc = Rc.OK
                else:
                    # message/partial (ScanPartialMessages is not supported),
                    # message/external-body and unknown message types
                    self.ctx.debug(f"mail: message/{sub.decode('latin-1')} is not scanned")
                    return rc
            elif mime in (Mime.AUDIO, Mime.VIDEO, Mime.IMAGE):
                pass
            else:
                # application, and unknown types treated as application
                got = yield from self._scan_blobs(main.export(), _name(main.get_filename()))
                if got:
                    self.files += 1
                    if main is not message_in:
                        main = None
                    else:
                        main.reset()

        if a_text is not None and text_in is None:
            rc = yield from self._bounces(a_text, rc)
            a_text = None

        if main is not None and rc != Rc.VIRUS:
            if main.body and main.encoding_at is not None and main.bounce_at is not None:
                yield from self._export_bounce(main, main.bounce_at)
            else:
                if main.mime_type == Mime.MESSAGE:
                    save_it = main.encoding_at is not None
                elif main.body and main.encoding_at is not None:
                    # a bounce with no header: the text from the encoding line on
                    data = b"Received: by clamd (bounce)\n" + text_bytes(
                        main.body[main.encoding_at:])
                    self._defer(data, "bounce")
                    self.files += 1
                    save_it = False
                else:
                    save_it = True
                if save_it:
                    yield from self._save_text_part(main)
                    if main is message_in:
                        main.reset()
        if rc != Rc.FAIL and infected:
            rc = Rc.VIRUS
        return rc

    def _multipart(self, main: Message, message_in: Message | None,
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
        lines_of_interest: _PartLines | None = None
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
                else:
                    if lines_of_interest is None:
                        lines_of_interest = _PartLines(body)
                    stop = lines_of_interest.part_end(cur, boundary)
                    part.add_lines(body[cur:stop], lines_of_interest.markers(cur, stop))
                    cur = stop
                    if cur < n and not _boundary_end(body[cur], boundary):
                        inhead = True
                    break
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

    def _do_multipart(self, main_ref: list, messages: list[Message | None], i: int, rc: Rc,
                      message_in: Message | None, a_text: list[Line] | None,
                      level: int) -> Generator[Extracted, None, Rc]:
        """do_multipart: handle part `i` of a multipart."""
        part = messages[i]
        if part is None or rc != Rc.OK:
            return rc
        main = main_ref[0]
        add_to_text = False
        mime = part.mime_type
        if mime == Mime.NOMIME:
            if main is not None:
                if part.binhex_at is not None:
                    if (yield from self._export_binhex(main)):
                        rc = Rc.VIRUS
                main_ref[0] = None
            elif part.binhex_at is not None:
                if (yield from self._export_binhex(part)):
                    rc = Rc.VIRUS
                part.reset()
            add_to_text = True
        elif mime == Mime.TEXT:
            dtype = part.get_disposition().lower()
            if dtype != b"attachment":
                if dtype in (b"", b"inline"):
                    main_ref[0] = None
                    if _subtype(part.get_subtype()) == PLAIN and \
                            part.get_encoding() == Enc.NOENCODING:
                        if not part.has_filename():
                            add_to_text = True
                    else:
                        part.add_argument(b"filename=mixedtextportion")
                else:
                    self.ctx.debug("mail: text part with an unknown disposition is not scanned")
                    messages[i] = None
                    return rc
        elif mime == Mime.MESSAGE:
            if part.get_encoding() in (Enc.NOENCODING, Enc.EIGHTBIT, Enc.BINARY) and \
                    part.encoding_at is None:
                messages[i] = None
                return rc
            yield from self._save_text_part(part)
            messages[i] = None
            return rc
        elif mime == Mime.MULTIPART:
            rc = yield from self._parse_email_body(part, a_text, level + 1)
            messages[i] = None
            return rc
        if rc != Rc.VIRUS:
            got = yield from self._scan_blobs(part.export(), _name(part.get_filename()),
                                              force_ctx=True)
            if got and not add_to_text:
                self.files += 1
        messages[i] = None
        return rc

    # -- helpers that write files ------------------------------------------

    def _save_text_part(self, m: Message) -> Generator[Extracted, None, None]:
        m.add_argument(b"filename=textportion")
        got = yield from self._scan_blobs(m.export(), "textportion")
        if got:
            self.files += 1

    def _export_binhex(self, m: Message) -> Generator[Extracted, None, bool]:
        if m.get_encoding() == Enc.NOENCODING:
            m.set_encoding(b"x-binhex")
        got = yield from self._scan_blobs(m.export(), _name(m.get_filename()))
        if got:
            self.files += 1
        return False

    def _export_bounce(self, m: Message, start: int) -> Generator[Extracted, None, None]:
        """exportBounceMessage: save the bounced original from its headers on."""
        lines = m.body
        t: int | None = start
        while t is not None and t < len(lines):
            txt = lines[t]
            if txt is None:
                t += 1
                continue
            cmd = strtokbuf(txt, 0, b":")
            if cmd is None:
                t += 1
                continue
            kind = _header_kind(cmd)
            if kind == _Header.CONTENT_TRANSFER_ENCODING:
                if b"7bit" not in txt and b"8bit" not in txt:
                    break
                t += 1
                continue
            if kind == _Header.CONTENT_DISPOSITION:
                break
            if kind == _Header.CONTENT_TYPE:
                if b"text/plain" in txt:
                    t = None
                break
            if cmd.lower() in (b"from", b"received"):
                start = t
            t += 1
        if t is not None and t < len(lines):
            self._defer(text_bytes(lines[start:]), "bounce")
            self.files += 1
        return
        yield  # a generator like the other exporters

    def _bounces(self, text: list[Line], rc: Rc) -> Generator[Extracted, None, Rc]:
        """Look for bounced messages in the plain text of a mail and scan them."""
        n = len(text)
        t = 0
        definitely = False
        while t < n and rc != Rc.VIRUS:
            self.ctx.check()
            line = text[t]
            if line is None:
                t += 1
                continue
            if definitely:
                definitely = False
            elif not _is_bounce_start(line):
                t += 1
                continue
            look = t + 1
            if look >= n:
                break
            if _is_bounce_start(text[look]):
                definitely = True
                t += 1
                continue
            while look < n:
                s = text[look]
                if s is None:
                    break
                if s[:13].lower() == b"content-type:":
                    low = s.lower()
                    if b"text/plain" in low:
                        look += 1
                        continue
                    if not self.phishing and b"text/html" in low:
                        look += 1
                        continue
                    break
                look += 1
            if look < n and text[look] is None:
                t = look + 1
                continue
            while look < n:
                s = text[look]
                if (s is not None and s[:13].lower() == b"content-type:"
                        and b"multipart/" not in s and b"message/rfc822" not in s
                        and b"text/plain" not in s):
                    break
                look += 1
            if look >= n:
                break
            out = [b"Received: by clamd (bounce)\n"]
            inheader = True
            top: int | None = None
            while True:
                s = text[t]
                if s is None:
                    if inheader:
                        inheader = False
                        top = t
                else:
                    out.append(s)
                out.append(b"\n")
                if t + 1 >= n:
                    break
                t += 1
                s = text[t]
                if not inheader and s is not None and _is_bounce_start(s):
                    definitely = True
                    break
            obj = self._object(b"".join(out), "bounce")
            if obj is not None:
                yield obj
            self.files += 1
            if top is not None:
                t = top
            t += 1
        return rc


class _Limit(Exception):
    """A mail limit stops reading the headers (the message parsed so far is kept)."""


# -- functions of mbox.c that need no state -----------------------------------


def _set_content_type(m: Message, field: bytes) -> None:
    """`type/subtype` and the broken forms libclamav accepts, such as
    `foo/bar multipart/mixed`: each type/subtype pair seen sets the type."""
    tok = Tokenizer(field)
    while True:
        was_set = m.set_mime_type(tok.next(b"/"))
        s = tok.next(b";")
        if s is None:
            break
        if was_set:
            s = strstrip(s)
            if not s:
                m.set_subtype(b"")
            else:
                # libclamav tests the length less one: a one-letter subtype
                # is not taken unless it was quoted
                length = len(s) - 1
                if s[length] == 0x22:
                    s = strstrip(s[:length])
                    length = len(s)
                if length:
                    m.set_subtype(strtokbuf(s, 0, b" ") if b" " in s else s)
        k = 0
        while k < len(s) and s[k] not in SPACE:
            k += 1
        if k >= len(s):
            break
        k += 1
        if k >= len(s):
            break
        tok = Tokenizer(s[k:])


def _continue_empty_options(line: Line, state: list[bool]) -> bool:
    """doContinueMultipleEmptyOptions: skip the second of two lines made only
    of blanks and semicolons."""
    if line is None:
        return False
    if not line.strip(b" \t;"):
        if state[0]:
            return True
        state[0] = True
    else:
        state[0] = False
    return False


def _useful_header(cmd: bytes) -> bool:
    return cmd.lower() in (b"from", b"received", b"de")


def _newline_in_header(line: bytes) -> bool:
    return line.startswith(b"Message-Id: ") or line.startswith(b"Date: ")


def _next_is_folded_header(lines: list[Line], i: int) -> bool:
    if i + 1 >= len(lines):
        return False
    nxt = lines[i + 1]
    if nxt is None:
        return False
    if nxt[0] in BLANK:
        return True
    if b"=" not in nxt:
        return False
    cur = lines[i] or b""
    k = len(cur) - 1
    while k > 0:
        c = cur[k]
        if c == 0x3B:
            return True
        if c in b"\n \r\t":
            k -= 1
            continue
        return False
    return False


_BOUNDARY_PARAMETER = re.compile(rb"[;\s]boundary\s*=", re.IGNORECASE)


def _boundary_then_semicolon(header: bytes) -> bool:
    """A header that gives a boundary parameter and ends in ';'."""
    return header.endswith(b";") and _BOUNDARY_PARAMETER.search(header) is not None


def _boundary_start(line: Line, boundary: bytes | None) -> bool:
    """boundaryStart: is this line `--boundary`, allowing for the mistakes
    mailers and viruses make (a dash too many or too few, comments)?"""
    if not line or boundary is None:
        return False
    newline = chomp(line.rstrip(b" "))
    if not newline or newline[0] not in b"-(":
        return False
    if b"-" not in newline:
        return False
    ptr = rfc822comments(newline)
    if ptr is None:
        ptr = newline
    if not ptr or ptr[0] != 0x2D or len(ptr) < 2:
        return False
    ptr = ptr[1:]
    if boundary in ptr[1:] or boundary in newline:
        k = 0
        while True:
            k += 1
            if ptr[k:] == boundary:
                return True
            if k >= len(ptr) or ptr[k] != 0x2D:
                break
        k = 1
        while True:
            k += 1
            if line[k:] == boundary:
                return True
            if k >= len(line) or line[k] != 0x2D:
                break
        return False
    if ptr[0] != 0x2D:
        return False
    return ptr[1:].lower() == boundary.lower()


def _boundary_end(line: Line, boundary: bytes) -> bool:
    """boundaryEnd: `--boundary--`, trailing white space allowed."""
    if not line:
        return False
    p = line.rstrip(b" ")
    if not p.startswith(b"--"):
        return False
    p = p[2:]
    blen = len(boundary)
    if p[:blen].lower() != boundary.lower():
        return False
    if len(p) < blen + 2:
        return False
    return p[blen:blen + 2] == b"--"


def _get_text_part(messages: list[Message | None]) -> int:
    found = -1
    for i, msg in enumerate(messages):
        if msg is not None and msg.mime_type == Mime.TEXT:
            if msg.get_subtype().lower() == b"html":
                return i
            found = i
    return found


def _is_bounce_start(line: Line) -> bool:
    if not line:
        return False
    if len(line) < 6 or len(line) >= 72:
        return False
    if line.startswith(b"From ") or line.startswith(b">From "):
        rest = line[4:]
        spaces = rest.count(b" ")
        digits = sum(1 for c in rest if 0x30 <= c <= 0x39)
        return spaces >= 6 and digits >= 11
    return _types_as_mail(line)


@functools.lru_cache(maxsize=4096)
def _types_as_mail(line: bytes) -> bool:
    # The file typing of one short line: text lines repeat (signatures,
    # quoted replies), and typing one costs tens of microseconds.
    return detect(line) is FileType.MAIL


def _text_add_message(text: list[Line] | None, m: Message) -> list[Line] | None:
    lines = m.body if m.get_encoding() == Enc.NOENCODING else m.to_text()
    if text is None:
        return list(lines) if lines else None
    text.extend(lines)
    return text


def _name(raw: bytes | None) -> str | None:
    if not raw:
        return None
    return raw.decode("latin-1")


def rfc2047(line: bytes) -> bytes | None:
    """Decode RFC 2047 encoded words; None for an unsupported encoding."""
    if b"=?" not in line or b"?=" not in line:
        return line
    out = bytearray()
    i, n = 0, len(line)
    while i < n:
        while i < n:
            if line[i] == 0x3D and i + 1 < n and line[i + 1] == 0x3F:
                i += 2
                break
            out.append(line[i])
            i += 1
        while i < n and line[i] != 0x3F:
            i += 1
        if i >= n:
            break
        i += 1
        if i >= n:
            break
        encoding = chr(line[i]).lower()
        if encoding not in "qb":
            return None
        i += 1
        if i >= n or line[i] != 0x3F:
            break
        i += 1
        if i >= n:
            break
        end = line.find(b"?=", i)
        if end < 0:
            break
        enctext = line[i:end]
        i = end + 2
        part = Message()
        part.add_str(enctext)
        part.set_encoding(b"quoted-printable" if encoding == "q" else b"base64")
        decoded = b"".join(b.data for b in part.export() if b.final)
        if decoded.endswith(b"\n"):
            decoded = decoded[:-1]
        out += decoded
    return bytes(out)


# -- entry points ------------------------------------------------------------


def _searchable(data: bytes | memoryview | mmap.mmap) -> bytes | mmap.mmap:
    """The data as the reader searches it: bytes and a mapped file as they
    are (a mail is not copied), a view as the bytes it shows."""
    if isinstance(data, (bytes, mmap.mmap)):
        return data
    return bytes(data)


def unpack_mail(data: bytes | memoryview, ctx: UnpackContext) -> Iterator[Extracted]:
    """The objects libclamav scans in a mail or mailbox, in its order."""
    parser = _MailParser(_searchable(data), ctx)
    yield from parser.run()


def unpack_uuencoded(data: bytes | memoryview, ctx: UnpackContext) -> Iterator[Extracted]:
    """A file starting with `begin NNN name`: the decoded file (cli_uuencode)."""
    parser = _MailParser(_searchable(data), ctx)
    first = parser.reader.gets()
    if first is None:
        return
    line = chomp(first)
    if not is_uuencode_begin(line):
        return
    parser._uudecode_file(line)
    yield from parser.deferred


def unpack_binhex(data: bytes | memoryview, ctx: UnpackContext) -> Iterator[Extracted]:
    """A BinHex 4.0 file: its data fork, then its resource fork (cli_binhex)."""
    from clammail.unpack.binhex import decode_binhex

    yield from decode_binhex(bytes(data), ctx)
