"""PCRE subsignatures of .ldb signatures (and YARA regex strings) on Python's `re`.

libclamav compiles these with PCRE2 (8-bit, no UTF). Python's `re` on bytes
agrees with PCRE2 on the common syntax and on leftmost-first backtracking;
this module rewrites the PCRE spellings `re` lacks (`\\x{41}`, `(?<name>`,
`\\z`, `\\h`, `\\Q..\\E`, POSIX classes, the E and U options ...) and refuses,
with the construct named, what `re` cannot express (recursion, `\\K`,
Unicode properties, backtracking verbs ...).

Flags: i s m x A E U are PCRE2 compile options; g (all matches), r (rolling:
do not anchor at the offset) and e (encompass: stay within offset+maxshift)
are ClamAV's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clammail.signatures.common import SignatureError

PCRE_OPTION_FLAGS = "ismxAEU"
CLAMAV_FLAGS = "gre"


class UnsupportedRegex(Exception):
    """A valid PCRE construct that Python's `re` cannot express."""


@dataclass(frozen=True)
class CompiledRegex:
    source: str  # the expression as written in the signature
    regex: re.Pattern
    anchored: bool  # PCRE2_ANCHORED (the A flag)
    global_: bool  # g
    rolling: bool  # r
    encompass: bool  # e


def compile_pcre(expression: str, flags: str = "") -> CompiledRegex:
    """Compile a PCRE expression with ClamAV's flag letters.

    SignatureError for what PCRE2 (or ClamAV) rejects; UnsupportedRegex for
    valid PCRE that Python cannot run.
    """
    if not expression:
        raise SignatureError("PCRE pattern cannot be an empty string")
    re_flags = 0
    anchored = dollar_endonly = ungreedy = False
    g = r = e = False
    for letter in flags:
        if letter == "i":
            re_flags |= re.IGNORECASE
        elif letter == "s":
            re_flags |= re.DOTALL
        elif letter == "m":
            re_flags |= re.MULTILINE
        elif letter == "x":
            re_flags |= re.VERBOSE
        elif letter == "A":
            anchored = True
        elif letter == "E":
            dollar_endonly = True
        elif letter == "U":
            ungreedy = True
        elif letter == "g":
            g = True
        elif letter == "r":
            r = True
        elif letter == "e":
            e = True
        else:
            raise SignatureError(f"unknown PCRE option {letter!r}")
    if "(?UTF" in expression or "(*UTF" in expression:
        raise SignatureError("the (*UTF) control sequence is not allowed in PCRE subsignatures")
    translated = _translate(
        expression,
        multiline=bool(re_flags & re.MULTILINE),
        dollar_endonly=dollar_endonly,
        ungreedy=ungreedy,
        extended=bool(re_flags & re.VERBOSE),
    )
    try:
        pattern = re.compile(translated.encode("latin-1"), re_flags)
    except re.error as exc:
        raise SignatureError(f"PCRE compilation failed for /{expression}/: {exc}") from None
    except (OverflowError, RecursionError):
        raise SignatureError(f"PCRE compilation failed for /{expression}/: too complex") from None
    return CompiledRegex(expression, pattern, anchored, g, r, e)


_POSIX_CLASSES = {
    "alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "ascii": "\\x00-\\x7f", "blank": " \\t",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "\\x21-\\x7e", "lower": "a-z",
    "print": "\\x20-\\x7e", "punct": "!-/:-@\\[-`{-~", "space": "\\t-\\r ",
    "upper": "A-Z", "word": "a-zA-Z0-9_", "xdigit": "0-9A-Fa-f",
}

# Escapes that mean the same in PCRE2 and in Python's re (outside classes).
_SAME_ESCAPES = set("dDsSwWbBAtnrfv0123456789afx\\.^$|?*+()[]{}/-")

_UNSUPPORTED_GROUPS = {
    "(?R": "recursion (?R)", "(?&": "subroutine calls (?&name)", "(?|": "branch reset (?|",
    "(?C": "callouts (?C)", "(?+": "relative subroutine calls", "(?-": None,
}


def _translate(src: str, *, multiline: bool, dollar_endonly: bool, ungreedy: bool,
               extended: bool) -> str:
    out: list[str] = []
    i = 0
    n = len(src)
    in_class = False
    while i < n:
        c = src[i]
        if c == "\\":
            if i + 1 >= n:
                raise SignatureError(f"PCRE pattern /{src}/ ends with a backslash")
            d = src[i + 1]
            if d == "x" and i + 2 < n and src[i + 2] == "{":
                close = src.find("}", i + 3)
                if close < 0:
                    raise SignatureError(f"PCRE pattern /{src}/: unterminated \\x{{")
                digits = src[i + 3:close]
                try:
                    value = int(digits, 16)
                except ValueError:
                    raise SignatureError(f"PCRE pattern /{src}/: bad \\x{{{digits}}}") from None
                if value > 0xFF:
                    raise SignatureError(f"PCRE pattern /{src}/: character value \\x{{{digits}}} is too large in non-UTF mode")
                out.append(f"\\x{value:02x}")
                i = close + 1
                continue
            if d == "Q":
                end = src.find("\\E", i + 2)
                literal = src[i + 2:] if end < 0 else src[i + 2:end]
                out.append("".join(_escape_char(ch, in_class) for ch in literal))
                i = n if end < 0 else end + 2
                continue
            if d == "E":
                i += 2
                continue
            if d == "z":
                out.append("\\Z")
                i += 2
                continue
            if d == "Z":
                out.append("(?=\\n?\\Z)" if not in_class else "Z")
                i += 2
                continue
            if d == "h":
                out.append("[ \\t\\xa0]" if not in_class else " \\t\\xa0")
                i += 2
                continue
            if d == "H":
                out.append("[^ \\t\\xa0]")
                if in_class:
                    raise UnsupportedRegex("\\H inside a character class")
                i += 2
                continue
            if d == "e":
                out.append("\\x1b")
                i += 2
                continue
            if d == "k" and i + 2 < n and src[i + 2] in "<{'":
                closer = {"<": ">", "{": "}", "'": "'"}[src[i + 2]]
                close = src.find(closer, i + 3)
                if close < 0:
                    raise SignatureError(f"PCRE pattern /{src}/: unterminated \\k")
                out.append(f"(?P={src[i + 3:close]})")
                i = close + 1
                continue
            if d == "g":
                m = re.match(r"\\g\{?(-?\d+)\}?", src[i:])
                if m and not m.group(1).startswith("-"):
                    out.append(f"(?:\\{m.group(1)})")
                    i += m.end()
                    continue
                raise UnsupportedRegex("\\g references and subroutine calls")
            if d in "pPXRKGCNLlUu":
                raise UnsupportedRegex(f"the \\{d} escape")
            if d == "c":
                if i + 2 >= n:
                    raise SignatureError(f"PCRE pattern /{src}/: \\c at end of pattern")
                out.append(f"\\x{ord(src[i + 2].upper()) ^ 0x40:02x}")
                i += 3
                continue
            if d == "o" and i + 2 < n and src[i + 2] == "{":
                close = src.find("}", i + 3)
                out.append(f"\\x{int(src[i + 3:close], 8) & 0xFF:02x}")
                i = close + 1
                continue
            if d.isalnum() and d not in _SAME_ESCAPES:
                # PCRE2 rejects unknown letter escapes, as does Python: let compile say so.
                out.append(src[i:i + 2])
            else:
                out.append(src[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "[" and src.startswith("[:", i):
                close = src.find(":]", i + 2)
                if close > 0:
                    name = src[i + 2:close]
                    negate = name.startswith("^")
                    if negate:
                        raise UnsupportedRegex("negated POSIX classes [:^name:]")
                    if name not in _POSIX_CLASSES:
                        raise SignatureError(f"PCRE pattern /{src}/: unknown POSIX class name {name!r}")
                    out.append(_POSIX_CLASSES[name])
                    i = close + 2
                    continue
                out.append("\\[")
                i += 1
                continue
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A ']' right after '[' or '[^' is a literal in both dialects.
            if i < n and src[i] == "^":
                out.append("^")
                i += 1
            if i < n and src[i] == "]":
                out.append("\\]")
                i += 1
            continue
        if c == "(":
            if src.startswith("(*", i):
                raise UnsupportedRegex("backtracking control verbs (*...)")
            if src.startswith("(?<", i) and i + 3 < n and src[i + 3] not in "=!":
                out.append("(?P<")
                i += 3
                continue
            if src.startswith("(?'", i):
                close = src.find("'", i + 3)
                out.append(f"(?P<{src[i + 3:close]}>")
                i = close + 1
                continue
            if src.startswith("(?P>", i):
                raise UnsupportedRegex("subroutine calls (?P>name)")
            for prefix, what in _UNSUPPORTED_GROUPS.items():
                if what and src.startswith(prefix, i):
                    raise UnsupportedRegex(what)
            if re.match(r"\(\?[+-]?\d", src[i:]):
                raise UnsupportedRegex("numbered subroutine calls (?1)")
            if src.startswith("(?#", i):
                close = src.find(")", i)
                i = n if close < 0 else close + 1
                continue
            m = re.match(r"\(\?([a-zA-Z^-]*)([:)])", src[i:])
            if m and m.group(1):
                # Inline options: Python accepts them only at the very start or scoped.
                opts = m.group(1)
                if set(opts) - set("imsx-") or opts.startswith("^"):
                    raise UnsupportedRegex(f"inline option (?{opts})")
                if m.group(2) == ")" and out:
                    raise UnsupportedRegex(f"inline option (?{opts}) after the start of the pattern")
            out.append(c)
            i += 1
            continue
        if c == "$" and not multiline and dollar_endonly:
            out.append("\\Z")
            i += 1
            continue
        if extended and c == "#":
            close = src.find("\n", i)
            i = n if close < 0 else close + 1
            continue
        if ungreedy and c in "*+?{":
            quant_end = i + 1
            if c == "{":
                m = re.match(r"\{\d*(,\d*)?\}", src[i:])
                if not m or m.group(0) in ("{}", "{,}"):
                    out.append(c)
                    i += 1
                    continue
                quant_end = i + m.end()
            if c == "?" and out and out[-1] == "(":
                out.append(c)
                i += 1
                continue
            out.append(src[i:quant_end])
            i = quant_end
            if i < n and src[i] == "?":
                i += 1  # lazy under U means greedy
            elif i < n and src[i] == "+":
                out.append("+")
                i += 1
            else:
                out.append("?")
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _escape_char(ch: str, in_class: bool) -> str:
    return f"\\x{ord(ch):02x}" if ord(ch) < 256 else ch
