"""YARA rules (.yar, .yara): the subset ClamAV 1.4 runs, with its outcomes.

ClamAV's YARA is derived from YARA 3.1 and differs from today's YARA:
- strings: text (modifiers ascii, wide, nocase, fullword), hex (nibble
  wildcards, `[n-m]` jumps, alternatives) and regex; a regex ignores its
  `/i` `/s` flags and the nocase modifier, and finds at most one match;
- conditions: and/or/not, comparisons, + - * \\ %, & | ^ << >> ~ on
  integers, filesize, entrypoint (0 when not an executable), uint8/16/32
  and int8/16/32 (little endian), $a, #a, @a[i], `$a at n`, `$a in (a..b)`,
  `N/any/all of them|($a, $b*)`, `for ... of` / `for ... in` loops, other
  rules by name; no unary minus, no modules, no `matches`/`contains`;
- a rule that does not parse is skipped with a warning (the rest of the
  file loads); so is a rule without strings, with a one-byte text string or
  with a wide regex; a hex string with a one-byte piece between jumps makes
  the whole database fail, as in clamscan.

Every rule is evaluated on every buffer (ClamAV does too: `not $a` fires).
Reported as `YARA.<rule>` (+ `.UNOFFICIAL`); private rules are never reported.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace

from clammail.signatures.common import LoadOptions, SignatureError, display_name
from clammail.signatures.logical import BodySubsig, PcreSubsig, body_pattern
from clammail.signatures.patterns import ANY_OFFSET
from clammail.signatures.pcre import UnsupportedRegex, compile_pcre

log = logging.getLogger(__name__)

MAX_STRINGS = 64
UNDEFINED = None


class YaraSyntaxError(Exception):
    pass


class _SkipRule(Exception):
    pass


# -- lexer -------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<hexstr>\{[0-9a-fA-F?\s\[\]\-()|~]*\})
  | (?P<number>0x[0-9a-fA-F]+|\d+(?:KB|MB)?)
  | (?P<strid>[$#@!][A-Za-z0-9_]*\*?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\.\.|<<|>>|<=|>=|==|!=|[-+*\\%&|^~<>=(),:\[\]{}.])
  | (?P<slash>/)
    """,
    re.VERBOSE | re.DOTALL,
)

_KEYWORDS = {
    "rule", "private", "global", "meta", "strings", "condition", "import", "include",
    "and", "or", "not", "true", "false", "at", "in", "of", "for", "them", "all", "any",
    "filesize", "entrypoint", "ascii", "wide", "nocase", "fullword", "matches", "contains",
    "int8", "int16", "int32", "uint8", "uint16", "uint32",
}


@dataclass
class Token:
    kind: str
    text: str
    line: int


def tokenize(text: str) -> list[Token]:
    tokens = []
    pos = 0
    line = 1
    n = len(text)
    regex_allowed = False
    while pos < n:
        if text[pos] == "/" and regex_allowed and not text.startswith(("//", "/*"), pos):
            end = pos + 1
            while end < n and text[end] != "/":
                if text[end] == "\\":
                    end += 1
                if end < n and text[end] == "\n":
                    raise YaraSyntaxError(f"line {line}: unterminated regular expression")
                end += 1
            if end >= n:
                raise YaraSyntaxError(f"line {line}: unterminated regular expression")
            flags_end = end + 1
            while flags_end < n and text[flags_end] in "is":
                flags_end += 1
            tokens.append(Token("regex", text[pos + 1:end], line))
            pos = flags_end
            regex_allowed = False
            continue
        m = _TOKEN.match(text, pos)
        if not m:
            raise YaraSyntaxError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        value = m.group()
        if kind == "ws":
            line += value.count("\n")
        elif kind == "hexstr" and not (tokens and tokens[-1].text == "="):
            # `{` opening a rule body, not a hex string.
            tokens.append(Token("op", "{", line))
            pos += 1
            regex_allowed = False
            continue
        else:
            if kind == "ident" and value in _KEYWORDS:
                kind = "kw"
            tokens.append(Token(kind, value, line))
            regex_allowed = value == "="
        line += value.count("\n") if kind != "ws" else 0
        pos = m.end()
    tokens.append(Token("eof", "", line))
    return tokens


# -- condition tree ------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    op: str
    args: tuple = ()
    value: object = None


@dataclass
class YaraString:
    ident: str  # "$a" ("$" for anonymous)
    kind: str  # text, hex, regex
    subsig: object = None


@dataclass
class YaraRule:
    name: str  # reported name
    identifier: str
    private: bool
    strings: list[YaraString]
    condition: Node
    subsigs: tuple = ()
    path: str | None = None
    rule_refs: dict = field(default_factory=dict)  # identifier -> index in the file's rules
    tdb: None = None
    target: int = 0

    def may_match_without_strings(self) -> bool:
        return True

    def condition_holds(self, counts, offsets, data, info, results=None) -> bool:
        env = _Env(self, counts, offsets, data, info, results if results is not None else {})
        return _truth(env.eval(self.condition))


def load_yara(text: str, path: str, official: bool, options: LoadOptions) -> list[YaraRule]:
    """The rules of a .yar/.yara file that ClamAV would load (warnings go to the log)."""
    try:
        tokens = tokenize(text)
    except YaraSyntaxError as exc:
        log.warning("%s: %s: no YARA rules loaded", path, exc)
        return []
    parser = _Parser(tokens, path)
    rules: list[YaraRule] = []
    known: dict[str, YaraRule] = {}
    while not parser.at_end():
        start = parser.pos
        try:
            rule = parser.rule(known)
        except _SkipRule as why:
            log.warning("%s: YARA rule skipped: %s", path, why)
            continue
        except YaraSyntaxError as exc:
            log.warning("%s: YARA rule skipped: %s", path, exc)
            parser.resync(start)
            continue
        if rule is None:
            continue
        known[rule.identifier] = rule
        try:
            _attach_subsigs(rule, official)
        except _SkipRule as why:
            log.warning("%s: YARA rule %s skipped: %s", path, rule.identifier, why)
            rule.subsigs = None
            continue
        except SignatureError as exc:
            raise SignatureError(f"YARA rule {rule.identifier}: {exc.reason}", path) from None
        rule.path = path
        rules.append(rule)
    # A rule referring to a skipped rule can never be true; clamd evaluates it as false too.
    return rules


def _attach_subsigs(rule: YaraRule, official: bool) -> None:
    if not rule.strings:
        raise _SkipRule("the rule contains no supported strings")
    subsigs = []
    for string in rule.strings:
        subsigs.append(string.subsig)
    if len(subsigs) > MAX_STRINGS:
        raise _SkipRule(f"too many strings ({len(subsigs)}, at most {MAX_STRINGS})")
    rule.subsigs = tuple(subsigs)
    rule.name = display_name("YARA." + rule.identifier, official)


# -- parser ------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[Token], path: str):
        self.tokens = tokens
        self.pos = 0
        self.path = path
        self.strings: dict[str, int] = {}
        self.loop_vars: list[str] = []

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def at_end(self) -> bool:
        return self.peek().kind == "eof"

    def take(self) -> Token:
        tok = self.peek()
        self.pos += 1
        return tok

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind in ("op", "kw"):
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        tok = self.peek()
        if tok.text != text or tok.kind not in ("op", "kw"):
            raise YaraSyntaxError(f"line {tok.line}: syntax error, expected {text!r}, found {tok.text or 'end of file'!r}")
        return self.take()

    def resync(self, start: int) -> None:
        self.pos = max(self.pos, start + 1)
        while not self.at_end():
            tok = self.peek()
            if tok.kind == "kw" and tok.text in ("rule", "private", "global", "import"):
                if tok.text != "rule" or self.pos > start:
                    return
            self.pos += 1

    def rule(self, known: dict) -> YaraRule | None:
        if self.accept("import"):
            tok = self.take()
            if tok.kind != "string":
                raise YaraSyntaxError(f"line {tok.line}: import needs a module name")
            return None
        if self.peek().text == "include":
            raise YaraSyntaxError(f"line {self.peek().line}: include is not supported")
        private = False
        while self.peek().text in ("private", "global"):
            private |= self.take().text == "private"
        self.expect("rule")
        ident = self.take()
        if ident.kind != "ident":
            raise YaraSyntaxError(f"line {ident.line}: rule name expected")
        if ident.text in known:
            raise YaraSyntaxError(f"line {ident.line}: duplicated rule identifier {ident.text!r}")
        if self.accept(":"):
            while self.peek().kind == "ident":
                self.take()
        self.expect("{")
        if self.accept("meta"):
            self.expect(":")
            while self.peek().kind == "ident" and self.peek(1).text == "=":
                self.take()
                self.take()
                value = self.take()
                if value.kind not in ("string", "number") and value.text not in ("true", "false"):
                    raise YaraSyntaxError(f"line {value.line}: bad meta value")
        self.strings = {}
        strings: list[YaraString] = []
        skip_reason = None
        if self.accept("strings"):
            self.expect(":")
            while self.peek().kind == "strid" and self.peek().text.startswith("$"):
                try:
                    strings.append(self.string_declaration(len(strings)))
                except _SkipRuleDeferred as why:
                    # ClamAV cannot load this string: the rule is read to its end, then skipped.
                    skip_reason = skip_reason or str(why)
                    strings.append(YaraString(self.tokens[self.pos - 1].text, "skipped"))
        self.expect("condition")
        self.expect(":")
        self.rules = known
        self.used: set[int] = set()
        condition = self.expression()
        self.expect("}")
        for index, string in enumerate(strings):
            if string.ident != "$" and index not in self.used:
                raise YaraSyntaxError(f"unreferenced string {string.ident!r}")
        rule = YaraRule(ident.text, ident.text, private, strings, condition)
        if skip_reason:
            known[rule.identifier] = rule
            raise _SkipRule(skip_reason)
        return rule

    def string_declaration(self, index: int) -> YaraString:
        ident = self.take()
        if ident.text.endswith("*"):
            raise YaraSyntaxError(f"line {ident.line}: bad string identifier {ident.text!r}")
        if ident.text != "$" and ident.text in self.strings:
            raise YaraSyntaxError(f"line {ident.line}: duplicated string identifier {ident.text!r}")
        self.strings.setdefault(ident.text, index)
        self.expect("=")
        value = self.take()
        modifiers = set()
        while self.peek().text in ("ascii", "wide", "nocase", "fullword") and self.peek().kind == "kw":
            modifiers.add(self.take().text)
        if value.kind == "string":
            return YaraString(ident.text, "text", _text_subsig(_unescape(value.text[1:-1], value.line), modifiers))
        if value.kind == "regex":
            return YaraString(ident.text, "regex", _regex_subsig(value.text, modifiers))
        if value.kind == "hexstr" and not modifiers:
            return YaraString(ident.text, "hex", _hex_subsig(value.text[1:-1]))
        raise YaraSyntaxError(f"line {value.line}: bad string value for {ident.text}")

    # precedence climbing: or < and < not < comparison < bitwise < shift < + - < * \ %
    def expression(self) -> Node:
        left = self.and_expr()
        while self.accept("or"):
            left = Node("or", (left, self.and_expr()))
        return left

    def and_expr(self) -> Node:
        left = self.not_expr()
        while self.accept("and"):
            left = Node("and", (left, self.not_expr()))
        return left

    def not_expr(self) -> Node:
        if self.accept("not"):
            return Node("not", (self.not_expr(),))
        return self.comparison()

    def comparison(self) -> Node:
        left = self.bitwise()
        while self.peek().kind == "op" and self.peek().text in ("==", "!=", "<", "<=", ">", ">="):
            op = self.take().text
            left = Node(op, (left, self.bitwise()))
        return left

    def bitwise(self) -> Node:
        left = self.shift()
        while self.peek().kind == "op" and self.peek().text in ("&", "|", "^"):
            op = self.take().text
            left = Node(op, (left, self.shift()))
        return left

    def shift(self) -> Node:
        left = self.additive()
        while self.peek().kind == "op" and self.peek().text in ("<<", ">>"):
            op = self.take().text
            left = Node(op, (left, self.additive()))
        return left

    def additive(self) -> Node:
        left = self.term()
        while self.peek().kind == "op" and self.peek().text in ("+", "-"):
            op = self.take().text
            left = Node(op, (left, self.term()))
        return left

    def term(self) -> Node:
        left = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "\\", "%"):
            op = self.take().text
            left = Node(op, (left, self.unary()))
        return left

    def unary(self) -> Node:
        if self.accept("~"):
            return Node("~", (self.unary(),))
        return self.primary()

    def string_ref(self, tok: Token) -> int | str:
        name = "$" + tok.text[1:]
        if name == "$" and self.loop_vars and self.loop_vars[-1] == "$":
            return "$"
        if name not in self.strings:
            raise YaraSyntaxError(f"line {tok.line}: undefined string {name!r}")
        index = self.strings[name]
        self.used.add(index)
        return index

    def primary(self) -> Node:
        tok = self.peek()
        if tok.kind == "number" and self.peek(1).text == "of":
            self.take()
            self.expect("of")
            return Node("of", (Node("int", value=_number(tok.text)),), self.string_set())
        if tok.kind == "number":
            self.take()
            return Node("int", value=_number(tok.text))
        if tok.kind == "op" and tok.text == "(":
            self.take()
            inner = self.expression()
            self.expect(")")
            return inner
        if tok.kind == "kw":
            if tok.text in ("true", "false"):
                self.take()
                return Node("bool", value=tok.text == "true")
            if tok.text in ("filesize", "entrypoint"):
                self.take()
                return Node(tok.text)
            if tok.text in ("int8", "int16", "int32", "uint8", "uint16", "uint32"):
                self.take()
                self.expect("(")
                arg = self.expression()
                self.expect(")")
                return Node("read", (arg,), tok.text)
            if tok.text in ("all", "any"):
                return self.of_expr(Node(tok.text))
            if tok.text == "for":
                return self.for_expr()
        if tok.kind == "strid":
            self.take()
            sigil = tok.text[0]
            if tok.text.endswith("*"):
                raise YaraSyntaxError(f"line {tok.line}: wildcard string identifier out of a set")
            index = self.string_ref(tok)
            if sigil == "#":
                return Node("count", value=index)
            if sigil == "@":
                position = Node("int", value=1)
                if self.accept("["):
                    position = self.expression()
                    self.expect("]")
                return Node("offset", (position,), index)
            if sigil == "!":
                raise YaraSyntaxError(f"line {tok.line}: match lengths (!) are not supported")
            if self.accept("at"):
                return Node("at", (self.term(),), index)
            if self.accept("in"):
                self.expect("(")
                low = self.expression()
                self.expect("..")
                high = self.expression()
                self.expect(")")
                return Node("in", (low, high), index)
            return Node("found", value=index)
        if tok.kind == "ident":
            if tok.text in self.loop_vars:
                self.take()
                return Node("var", value=tok.text)
            if tok.text in self.rules:
                self.take()
                return Node("rule", value=tok.text)
            raise YaraSyntaxError(f"line {tok.line}: undefined identifier {tok.text!r}")
        if tok.kind == "number" or (tok.kind == "op" and tok.text == "-"):
            raise YaraSyntaxError(f"line {tok.line}: syntax error, unexpected {tok.text!r}")
        # `N of ...`
        raise YaraSyntaxError(f"line {tok.line}: syntax error, unexpected {tok.text or 'end of file'!r}")

    def string_set(self) -> tuple[int, ...]:
        if self.accept("them"):
            members = tuple(range(len(self.strings_list())))
            self.used.update(members)
            return members
        self.expect("(")
        members: list[int] = []
        while True:
            tok = self.take()
            if tok.kind != "strid" or not tok.text.startswith("$"):
                raise YaraSyntaxError(f"line {tok.line}: string identifier expected in set")
            if tok.text.endswith("*"):
                prefix = tok.text[:-1]
                chosen = [i for name, i in self.strings.items() if name.startswith(prefix) and name != "$"]
                if not chosen:
                    raise YaraSyntaxError(f"line {tok.line}: undefined string {tok.text!r}")
                members += chosen
            else:
                members.append(self.string_ref(tok))
            if not self.accept(","):
                break
        self.expect(")")
        self.used.update(members)
        return tuple(members)

    def strings_list(self) -> list[int]:
        return sorted(set(self.strings.values()) | set(range(max(self.strings.values(), default=-1) + 1)))

    def of_expr(self, quantifier: Node) -> Node:
        self.take()
        self.expect("of")
        return Node("of", (quantifier,), self.string_set())

    def for_expr(self) -> Node:
        self.expect("for")
        quant_tok = self.peek()
        if quant_tok.text in ("all", "any"):
            self.take()
            quantifier = Node(quant_tok.text)
        else:
            quantifier = self.primary_number()
        if self.accept("of"):
            members = self.string_set()
            self.expect(":")
            self.loop_vars.append("$")
            self.expect("(")
            body = self.expression()
            self.expect(")")
            self.loop_vars.pop()
            return Node("for_of", (quantifier, body), members)
        var = self.take()
        if var.kind != "ident":
            raise YaraSyntaxError(f"line {var.line}: loop variable expected")
        self.expect("in")
        self.expect("(")
        first = self.expression()
        if self.accept(".."):
            last = self.expression()
            self.expect(")")
            source = ("range", first, last)
        else:
            items = [first]
            while self.accept(","):
                items.append(self.expression())
            self.expect(")")
            source = ("list", *items)
        self.expect(":")
        self.loop_vars.append(var.text)
        self.expect("(")
        body = self.expression()
        self.expect(")")
        self.loop_vars.pop()
        return Node("for_in", (quantifier, body), (var.text, source))

    def primary_number(self) -> Node:
        tok = self.peek()
        if tok.kind == "number":
            self.take()
            return Node("int", value=_number(tok.text))
        return self.primary()


def _number(text: str) -> int:
    if text.startswith("0x"):
        return int(text, 16)
    if text.endswith("KB"):
        return int(text[:-2]) * 1024
    if text.endswith("MB"):
        return int(text[:-2]) * 1024 * 1024
    return int(text)




def _unescape(body: str, line: int) -> bytes:
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            if i + 1 >= len(body):
                raise YaraSyntaxError(f"line {line}: bad escape")
            d = body[i + 1]
            if d == "x":
                digits = body[i + 2:i + 4]
                if len(digits) != 2 or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
                    raise YaraSyntaxError(f"line {line}: bad \\x escape")
                out.append(int(digits, 16))
                i += 4
                continue
            mapped = {"n": 10, "t": 9, "r": 13, '"': 34, "\\": 92}.get(d)
            if mapped is None:
                raise YaraSyntaxError(f"line {line}: unknown escape \\{d}")
            out.append(mapped)
            i += 2
            continue
        out += c.encode("latin-1", "replace")
        i += 1
    return bytes(out)


# libclamav records every match of a YARA string (#a, @a[i] and `for` loops
# read them); BodyMatcher returns at most BodyPattern.max_matches.
STRING_MATCHES = 10_000


def _text_subsig(value: bytes, modifiers: set[str]):
    if len(value) < 2:
        raise _SkipRuleDeferred("string is too short")
    wide = "wide" in modifiers
    pattern = body_pattern(
        value.hex(), "*", 0, nocase="nocase" in modifiers, wide=wide,
        ascii=(not wide) or "ascii" in modifiers, fullword="fullword" in modifiers,
    )
    return BodySubsig(replace(pattern, max_matches=STRING_MATCHES), partial=False)


def _regex_subsig(expression: str, modifiers: set[str]):
    if "wide" in modifiers:
        raise _SkipRuleDeferred("wide modifier is not supported for regex strings")
    try:
        regex = compile_pcre(expression, "")
    except UnsupportedRegex as exc:
        raise _SkipRuleDeferred(f"regex uses {exc}") from None
    return PcreSubsig(None, regex, ANY_OFFSET)


def _hex_subsig(body: str):
    """A YARA hex string as a ClamAV body pattern: `[n-m]` jumps become `{n-m}`."""
    text = re.sub(r"\s+", "", body)
    out = []
    piece_bytes = 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "[":
            close = text.find("]", i)
            if close < 0:
                raise SignatureError("unterminated jump in YARA hex string")
            jump = text[i + 1:close]
            if piece_bytes == 1:
                raise SignatureError("single byte subpatterns are unsupported in ClamAV")
            piece_bytes = 0
            if jump == "-":
                out.append("*")
            elif re.fullmatch(r"\d+", jump):
                out.append("{" + jump + "}")
            elif re.fullmatch(r"\d*-\d*", jump):
                out.append("{" + jump + "}")
            else:
                raise SignatureError(f"bad jump [{jump}] in YARA hex string")
            i = close + 1
            continue
        if c in "()|":
            out.append(c)
            i += 1
            continue
        if c == "~":
            raise SignatureError("negated bytes (~) are not supported")
        pair = text[i:i + 2]
        if len(pair) != 2 or not re.fullmatch(r"[0-9a-fA-F?]{2}", pair):
            raise SignatureError(f"bad byte {pair!r} in YARA hex string")
        out.append(pair.lower())
        piece_bytes += 1
        i += 2
    if piece_bytes == 1 and any(p.startswith(("{", "*")) for p in out):
        raise SignatureError("single byte subpatterns are unsupported in ClamAV")
    hexsig = "".join(out)
    pattern = replace(body_pattern(hexsig, "*", 0), max_matches=STRING_MATCHES)
    return BodySubsig(pattern, partial="*" in hexsig or "{" in hexsig)


class _SkipRuleDeferred(Exception):
    """A string ClamAV cannot load: the rule is skipped (after it parsed)."""




# -- evaluation ------------------------------------------------------------------


def _truth(value) -> bool:
    return bool(value) if value is not UNDEFINED else False


class _Env:
    def __init__(self, rule: YaraRule, counts, offsets, data, info, results: dict):
        self.rule = rule
        self.counts = counts
        self.offsets = offsets
        self.data = data
        self.info = info
        self.results = results
        self.vars: dict[str, object] = {}
        self.current_string: int | None = None

    def index(self, which) -> int:
        return self.current_string if which == "$" else which

    def eval(self, node: Node):
        op = node.op
        if op == "int":
            return node.value
        if op == "bool":
            return node.value
        if op == "filesize":
            return len(self.data)
        if op == "entrypoint":
            exe = self.info.executable if self.info is not None else None
            return exe.entry_point if exe is not None and exe.entry_point is not None else 0
        if op == "found":
            return self.counts[self.index(node.value)] > 0
        if op == "count":
            return self.counts[self.index(node.value)]
        if op == "offset":
            position = self.eval(node.args[0])
            found = self.offsets.get(self.index(node.value), [])
            if position is UNDEFINED or not 1 <= position <= len(found):
                return UNDEFINED
            return found[position - 1]
        if op == "at":
            where = self.eval(node.args[0])
            return where is not UNDEFINED and where in self.offsets.get(self.index(node.value), ())
        if op == "in":
            low, high = self.eval(node.args[0]), self.eval(node.args[1])
            if low is UNDEFINED or high is UNDEFINED:
                return False
            return any(low <= o <= high for o in self.offsets.get(self.index(node.value), ()))
        if op == "rule":
            return self.results.get(node.value, False)
        if op == "var":
            return self.vars.get(node.value, UNDEFINED)
        if op == "read":
            return self.read(node.value, self.eval(node.args[0]))
        if op == "not":
            value = self.eval(node.args[0])
            return UNDEFINED if value is UNDEFINED else not value
        if op == "and":
            return _truth(self.eval(node.args[0])) and _truth(self.eval(node.args[1]))
        if op == "or":
            return _truth(self.eval(node.args[0])) or _truth(self.eval(node.args[1]))
        if op == "~":
            value = self.eval(node.args[0])
            return UNDEFINED if value is UNDEFINED else ~value
        if op == "of":
            return self.of(node.args[0], node.value, lambda i: self.counts[i] > 0)
        if op == "for_of":
            quantifier, body = node.args

            def holds(i):
                saved = self.current_string
                self.current_string = i
                try:
                    return _truth(self.eval(body))
                finally:
                    self.current_string = saved

            return self.of(quantifier, node.value, holds)
        if op == "for_in":
            return self.for_in(node)
        left, right = self.eval(node.args[0]), self.eval(node.args[1])
        if left is UNDEFINED or right is UNDEFINED:
            return UNDEFINED
        left, right = int(left), int(right)
        if op == "==":
            return left == right
        if op == "!=":
            return left != right
        if op == "<":
            return left < right
        if op == "<=":
            return left <= right
        if op == ">":
            return left > right
        if op == ">=":
            return left >= right
        if op == "+":
            return _int64(left + right)
        if op == "-":
            return _int64(left - right)
        if op == "*":
            return _int64(left * right)
        if op in ("\\", "%"):
            if right == 0:
                return UNDEFINED
            quotient = abs(left) // abs(right) * (1 if (left >= 0) == (right >= 0) else -1)
            return quotient if op == "\\" else left - quotient * right
        if op == "&":
            return left & right
        if op == "|":
            return left | right
        if op == "^":
            return left ^ right
        if op == "<<":
            return _int64(left << right) if 0 <= right < 64 else 0
        if op == ">>":
            return left >> right if 0 <= right < 64 else 0
        raise ValueError(op)

    def of(self, quantifier: Node, members, holds) -> bool:
        total = sum(1 for i in members if holds(i))
        if quantifier.op == "all":
            return total == len(members)
        if quantifier.op == "any":
            return total >= 1
        need = self.eval(quantifier)
        return need is not UNDEFINED and total >= need

    def for_in(self, node: Node) -> bool:
        quantifier, body = node.args
        var, source = node.value
        if source[0] == "range":
            low, high = self.eval(source[1]), self.eval(source[2])
            if low is UNDEFINED or high is UNDEFINED or low > high:
                return False  # ClamAV's YARA: an empty range makes the loop false
            values = range(low, high + 1)
        else:
            values = [self.eval(item) for item in source[1:]]
        saved = self.vars.get(var)
        total = checked = 0
        for value in values:
            checked += 1
            self.vars[var] = value
            total += _truth(self.eval(body))
        self.vars[var] = saved
        if quantifier.op == "all":
            return total == checked
        if quantifier.op == "any":
            return total >= 1
        need = self.eval(quantifier)
        return need is not UNDEFINED and total >= need

    def read(self, kind: str, where):
        if where is UNDEFINED or where < 0:
            return UNDEFINED
        width = {"8": 1, "16": 2, "32": 4}[kind.lstrip("uint")]
        chunk = bytes(self.data[where:where + width])
        if len(chunk) < width:
            return UNDEFINED
        return int.from_bytes(chunk, "little", signed=not kind.startswith("u"))


def _int64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value
