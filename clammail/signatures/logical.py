"""Logical signatures (.ldb, .ldu): loading, with clamscan 1.4.6's acceptance.

A line is `Name;TargetDescriptionBlock;LogicalExpression;Subsig0;Subsig1;...`.
The target description block (TDB) says where the signature applies, the
expression combines the subsignatures' match counts (see `lexpr`), and each
subsignature is a body pattern (`[offset:]hex[::modifiers]`) or a PCRE
(`[offset:]Trigger/regex/[flags]`).

What ClamAV skips silently, we skip: an engine range that excludes our
FLEVEL, an unknown TDB attribute or file-type name, a target number past 14.
What ClamAV refuses (and so fails the whole database), we refuse with
`SignatureError` naming the line. What ClamAV loads and we cannot evaluate
is loaded as `unsupported` (`_UNSUPPORTED_KINDS`, PCREs Python's re cannot
run): counted as clamd counts it, reported in a warning, never matching.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from clammail.formats.filetypes import FileType
from clammail.signatures.bodysig import parse_body_pattern, parse_offset
from clammail.signatures.common import LoadOptions, SignatureError, display_name, flevel_applies
from clammail.signatures.lexpr import Expression, parse_expression
from clammail.signatures.patterns import BodyPattern, Offset
from clammail.signatures.pcre import CompiledRegex, UnsupportedRegex, compile_pcre

log = logging.getLogger(__name__)

MAX_LDB_SUBSIGS = 64  # libclamav MAX_LDB_SUBSIGS
LDB_TOKENS = 67  # name, TDB, expression and 64 subsignatures
ATTRIB_TOKENS = 10  # libclamav reads at most ten TDB attributes; the rest is ignored
INTERMEDIATE_TOKENS = 16
TARGET_COUNT = 15  # CLI_MTARGETS: Target numbers 0..14


class SkipSignature(Exception):
    """A well-formed signature clamd does not load either (libclamav's CL_BREAK)."""


class UnsupportedSubsig(Exception):
    """A subsignature clamd loads and clammail cannot evaluate: its signature is
    loaded and counted as clamd counts it, but never matches (with a warning)."""


@dataclass(frozen=True)
class TargetDescription:
    target: int
    engine: tuple[int, int] | None = None
    file_size: tuple[int, int] | None = None
    entry_point: tuple[int, int] | None = None
    sections: tuple[int, int] | None = None  # NumberOfSections
    container: FileType | None = None
    intermediates: tuple[FileType, ...] | None = None  # outermost first, last = direct parent
    icon_group1: str | None = None
    icon_group2: str | None = None
    handler_type: FileType | None = None


@dataclass(frozen=True)
class BodySubsig:
    """A hex body pattern (its BodyPattern goes to the shared BodyMatcher)."""

    pattern: BodyPattern
    partial: bool  # split by `*` or `{n-m}`: libclamav counts each completed match


@dataclass(frozen=True)
class PcreSubsig:
    trigger: Expression
    regex: CompiledRegex
    offset: Offset


@dataclass(frozen=True)
class LogicalSignature:
    name: str  # as reported (with .UNOFFICIAL where it applies)
    tdb: TargetDescription
    expression: Expression
    subsigs: tuple[BodySubsig | PcreSubsig, ...]
    path: str | None = None
    line: int | None = None
    # Per subsignature: how many matches the expression (or a trigger) needs to see.
    needed: dict = field(default_factory=dict, compare=False)
    # Why clammail loads but cannot evaluate it (it never matches); None normally.
    unsupported: str | None = None

    @property
    def target(self) -> int:
        return self.tdb.target


def load_ldb(text: str, path: str, official: bool, options: LoadOptions,
             warn: Callable[[str], None] | None = None) -> list[LogicalSignature]:
    """Every logical signature of an .ldb/.ldu file's text that clamd loads.

    Those clammail cannot evaluate are loaded as `unsupported` (counted as
    clamd counts them, never matching) and reported to `warn` once each.
    """
    if warn is None:
        def warn(message: str) -> None:
            log.warning("%s", message)
    signatures = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise SignatureError("empty database file", path)
    for number, raw in enumerate(lines, 1):
        if raw.startswith("#"):
            continue
        line = raw.rstrip("\r\n")
        try:
            signature = parse_ldb_line(line, official, options)
        except SkipSignature as why:
            log.debug("%s:%d: signature skipped: %s", path, number, why)
            continue
        except SignatureError as exc:
            raise exc.located(path, number) from None
        if signature.unsupported:
            warn(f"{path}:{number}: {signature.name} loaded but never matches: "
                 f"{signature.unsupported}")
        signatures.append(signature)
    for sig in signatures:
        object.__setattr__(sig, "path", path)
    return signatures


def parse_ldb_line(line: str, official: bool, options: LoadOptions | None = None,
                   *, name_prefix: str = "") -> LogicalSignature:
    """One .ldb line; SkipSignature where ClamAV would not load it."""
    options = options or LoadOptions()
    tokens = ldb_tokenize(line, ";", LDB_TOKENS + 1, skip=2)
    if len(tokens) < 4:
        raise SignatureError("invalid or unsupported ldb signature format (needs name;tdb;expression;subsig)")
    name = tokens[0].split(" (Clam)", 1)[0]
    expression = parse_expression(tokens[2])
    count = expression.max_subsig + 1
    if count != len(tokens) - 3:
        raise SignatureError(
            f"the number of subsignatures (== {len(tokens) - 3}) doesn't match the IDs "
            f"in the logical expression (== {count})"
        )
    if count > MAX_LDB_SUBSIGS:
        raise SignatureError(f"too many subsignatures ({count}, at most {MAX_LDB_SUBSIGS})")
    tdb = parse_tdb(tokens[1], options.flevel)
    if not name:
        raise SignatureError("empty signature name")
    subsigs = []
    unsupported = None
    for index, text in enumerate(tokens[3:]):
        try:
            subsigs.append(parse_subsig(text, index, tdb.target))
        except UnsupportedSubsig as why:
            unsupported = unsupported or f"subsignature {index}: {why}"
            subsigs.append(None)
        except SignatureError as exc:
            raise SignatureError(f"subsignature {index} of {name}: {exc.reason}") from None
    if unsupported:
        return LogicalSignature(display_name(name_prefix + name, official), tdb, expression, (),
                                unsupported=unsupported)
    needed = expression.needed_counts()
    for sub in subsigs:
        if isinstance(sub, PcreSubsig):
            for index, want in sub.trigger.needed_counts().items():
                needed[index] = max(needed.get(index, 1), want)
    subsigs = [_with_needed(sub, needed.get(i, 1)) for i, sub in enumerate(subsigs)]
    return LogicalSignature(
        display_name(name_prefix + name, official), tdb, expression, tuple(subsigs), needed=needed
    )


def _with_needed(sub, needed: int):
    if isinstance(sub, BodySubsig) and needed > 1:
        from dataclasses import replace

        return BodySubsig(replace(sub.pattern, max_matches=needed), sub.partial)
    return sub


# -- tokenizing, as libclamav's str.c does it ---------------------------------


def ldb_tokenize(text: str, delim: str, max_tokens: int, skip: int) -> list[str]:
    """`cli_ldbtokenize`: split at `delim`, except inside `/regex/` (from token `skip` on)."""
    tokens = []
    within_pcre = False
    i = 0
    n = len(text)
    while len(tokens) < max_tokens:
        start = i
        number = len(tokens) + 1
        while i < n:
            c = text[i]
            if not within_pcre and c == delim:
                break
            if number > skip and c == "/" and (i == 0 or text[i - 1] != "\\"):
                within_pcre = not within_pcre
            i += 1
        if i < n and len(tokens) + 1 < max_tokens:
            tokens.append(text[start:i])
            i += 1
        elif i < n:
            tokens.append(text[start:i])  # libclamav cuts the rest off here
            return tokens
        else:
            tokens.append(text[start:])
            return tokens
    return tokens


def str_tokenize(text: str, delim: str, max_tokens: int) -> list[str]:
    """`cli_strtokenize`: at most `max_tokens` fields; what follows the last is dropped."""
    parts = text.split(delim)
    return parts[:max_tokens]


def is_number(text: str) -> bool:
    """`cli_isnumber`: only ASCII digits (the empty string counts, as in libclamav)."""
    return all(c in "0123456789" for c in text)


def atoi(text: str) -> int:
    digits = ""
    for c in text:
        if not c.isdigit():
            break
        digits += c
    return int(digits) if digits else 0


# -- the target description block --------------------------------------------

_ATTRIBUTES = {
    "Target": "uint", "Engine": "range", "FileSize": "range", "EntryPoint": "range",
    "NumberOfSections": "range", "IconGroup1": "str", "IconGroup2": "str",
    "Container": "ftype", "HandlerType": "ftype", "Intermediates": "ftypes",
}


def file_type(name: str) -> FileType | None:
    try:
        return FileType.from_name(name)
    except ValueError:
        return None


def parse_tdb(text: str, flevel: int) -> TargetDescription:
    """libclamav's `lsigattribs` + `init_tdb`: SkipSignature or SignatureError as it decides."""
    values: dict[str, object] = {}
    have_new = False
    for index, token in enumerate(str_tokenize(text, ",", ATTRIB_TOKENS)):
        if ":" not in token:
            raise SignatureError(f"incorrect format of target description attribute {token!r}")
        key, value = token.split(":", 1)
        kind = _ATTRIBUTES.get(key)
        if kind is None:
            raise SkipSignature(f"unknown target description attribute {key!r}")
        if key == "Engine":
            if index:
                raise SignatureError("the Engine attribute must be the first one in the target description block")
        elif key != "Target":
            have_new = True
        if kind == "uint":
            if not is_number(value):
                raise SignatureError(f"invalid argument for {key}: {value!r}")
            values[key] = atoi(value)
        elif kind == "ftype":
            ftype = file_type(value)
            if ftype is None:
                raise SkipSignature(f"unknown file type {value!r} in {key}")
            values[key] = ftype
        elif kind == "ftypes":
            chain = []
            for part in str_tokenize(value, ">", INTERMEDIATE_TOKENS):
                ftype = file_type(part)
                if ftype is None:
                    raise SkipSignature(f"unknown file type {part!r} in {key}")
                chain.append(ftype)
            values[key] = tuple(chain)
        elif kind == "range":
            if "-" not in value:
                raise SignatureError(f"incorrect parameters in {key!r}: expected min-max")
            low, high = value.split("-", 1)
            if not is_number(low) or not is_number(high):
                raise SignatureError(f"invalid argument for {key}: {value!r}")
            values[key] = (atoi(low), atoi(high))
        else:
            values[key] = value
    engine = values.get("Engine")
    if have_new and (engine is None or engine[0] < 51):
        raise SignatureError(
            "signatures using target description attributes other than Target must "
            "start with Engine:51-255 or higher (backward compatibility)"
        )
    if engine is not None and not flevel_applies(engine[0], engine[1], flevel):
        raise SkipSignature(f"engine range {engine[0]}-{engine[1]} excludes FLEVEL {flevel}")
    if "Target" not in values:
        raise SignatureError("no Target specified in the target description block")
    target = values["Target"]
    if target >= TARGET_COUNT:
        raise SkipSignature(f"unsupported target type {target}")
    if ("IconGroup1" in values or "IconGroup2" in values) and target != 1:
        raise SignatureError("IconGroup is only supported in PE (Target:1) signatures")
    if ("EntryPoint" in values or "NumberOfSections" in values) and target not in (1, 6, 9):
        raise SignatureError("EntryPoint/NumberOfSections are only supported in PE/ELF/Mach-O signatures")
    return TargetDescription(
        target=target,
        engine=engine,
        file_size=values.get("FileSize"),
        entry_point=values.get("EntryPoint"),
        sections=values.get("NumberOfSections"),
        container=values.get("Container"),
        intermediates=values.get("Intermediates"),
        icon_group1=values.get("IconGroup1"),
        icon_group2=values.get("IconGroup2"),
        handler_type=values.get("HandlerType"),
    )


# -- subsignatures -------------------------------------------------------------

# Subsignature kinds libclamav 1.4 loads that we cannot evaluate: the whole
# signature is loaded as unsupported (it never matches) instead of matching wrongly.
_UNSUPPORTED_KINDS = {
    "macro": "macro subsignatures (${min-max}group$) need .ndb macro groups",
    "bytecompare": "byte-compare subsignatures are not implemented",
    "fuzzy": "fuzzy image-hash subsignatures are not implemented",
}


def parse_subsig(text: str, index: int, target: int):
    if text.startswith("$"):
        if not text.endswith("$") or len(text) < 2:
            raise SignatureError("macro subsignature is missing the '$' terminator")
        raise UnsupportedSubsig(_UNSUPPORTED_KINDS["macro"])
    if "/" in text:
        return parse_pcre_subsig(text, index)
    paren, first_hash, last_hash = text.find("("), text.find("#"), text.rfind("#")
    if paren >= 0 and first_hash >= 0 and first_hash != last_hash:
        raise UnsupportedSubsig(_UNSUPPORTED_KINDS["bytecompare"])
    if text.startswith("fuzzy_img#"):
        raise UnsupportedSubsig(_UNSUPPORTED_KINDS["fuzzy"])
    parts = ldb_tokenize(text, ":", 5, skip=0)
    offset = parts[0] if len(parts) % 2 == 0 else "*"
    hexsig = parts[0] if len(parts) % 2 else parts[1]
    modifiers = parts[2] if len(parts) == 3 else parts[3] if len(parts) == 4 else ""
    bad = set(modifiers) - set("ifwa")
    if bad:
        raise SignatureError(f"invalid subsignature modifier {sorted(bad)[0]!r}")
    wide = "w" in modifiers
    pattern = body_pattern(
        hexsig, offset, target,
        nocase="i" in modifiers, wide=wide, ascii=(not wide) or "a" in modifiers,
        fullword="f" in modifiers,
    )
    return BodySubsig(pattern, partial="*" in hexsig or "{" in hexsig)


def parse_pcre_subsig(text: str, index: int) -> PcreSubsig:
    parts = ldb_tokenize(text, ":", 5, skip=0)
    if len(parts) == 2:
        offset_text, sig = parts
    else:
        offset_text, sig = "*", parts[0]
    start, end = sig.find("/"), sig.rfind("/")
    if start < 0 or start == end:
        raise SignatureError("PCRE subsignature has mismatched '/' delimiters")
    if text.startswith("/"):
        raise SignatureError("PCRE subsignature must start with a logical trigger")
    trigger_text, expression, flags = sig[:start], sig[start + 1:end], sig[end + 1:]
    if not trigger_text or not expression:
        raise SignatureError("PCRE trigger or pattern cannot be an empty string")
    trigger = parse_expression(trigger_text)
    if trigger.max_subsig > index:
        raise SignatureError(f"PCRE trigger refers to a later subsignature ({trigger.max_subsig})")
    if trigger.max_subsig == index:
        raise SignatureError("PCRE trigger is self-referential")
    offset = parse_offset_text(offset_text)
    try:
        regex = compile_pcre(expression, flags)
    except UnsupportedRegex as exc:
        raise UnsupportedSubsig(f"PCRE /{expression}/ uses {exc}, which Python's re cannot run") from None
    return PcreSubsig(trigger, regex, offset)


# -- the hex-pattern language belongs to clammail.signatures.bodysig ------------


def body_pattern(hexsig: str, offset: str, target: int, **modifiers) -> BodyPattern:
    """A subsignature's hex pattern, checked as clamd loads it (in its Aho-Corasick
    matcher: two static bytes are enough)."""
    return parse_body_pattern(hexsig, offset, target, logical=True, **modifiers)


def parse_offset_text(text: str) -> Offset:
    return parse_offset(text)
