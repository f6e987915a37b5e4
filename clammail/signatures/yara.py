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
- a rule that does not compile (a module such as `pe` or `math`, `xor`,
  `uint16be`, ...) is skipped with a warning and the rest of the file
  loads; so is a rule ClamAV cannot load (no strings, a string of one
  byte, a hex string with a one-byte piece next to a jump or without two
  static bytes in a row, a wide regex), except that clamd fails the whole
  database when the last rule of the file fails with a hex string error;
- what a rule that failed to compile leaves in ClamAV's compiler goes to
  the next rule that compiles: the strings it had declared, and, when the
  failure came after some of its condition, code that makes that next rule
  return an error whenever it runs, after which clamd evaluates no further
  logical signature or YARA rule (`YaraRule.halts_evaluation`). clammail
  does the same, and says so in a warning.

Every rule is evaluated on every buffer (ClamAV does too: `not $a` fires).
Reported as `YARA.<rule>` (+ `.UNOFFICIAL`); private rules are never reported.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
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


# -- lexer -------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<hexstr>\{[0-9a-fA-F?\ \t\n\[\]\-()|]+\})  # no \r, no ~: as ClamAV's lexer
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
    """The tokens of a rules file, as ClamAV's lexer (yara_lexer.l) produces them.

    Its fatal lexer errors (an unterminated string or regex, a non-ASCII or
    control character outside strings and comments) end the token stream
    there: the rules before that point still load, as in clamd. Any other
    stray printable character becomes a one-character token the parser
    refuses (a syntax error that skips just that rule).
    """
    tokens = []
    pos = 0
    line = 1
    n = len(text)
    regex_allowed = False
    while pos < n:
        if text[pos] == "/" and regex_allowed and not text.startswith(("//", "/*"), pos):
            end = pos + 1
            while end < n and text[end] not in "/\n":
                end += 2 if text[end] == "\\" else 1
            if end >= n or text[end] != "/":
                break  # unterminated regular expression
            flags_end = end + 1
            while flags_end < n and text[flags_end] in "is":
                flags_end += 1
            tokens.append(Token("regex", text[pos + 1:end], line))
            pos = flags_end
            regex_allowed = False
            continue
        m = _TOKEN.match(text, pos)
        if not m:
            char = text[pos]
            if not " " <= char < "\x7f":
                break  # "non-ascii character", or the start of an unterminated string
            if char == '"':
                break  # unterminated string
            tokens.append(Token("op", char, line))
            pos += 1
            regex_allowed = False
            continue
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
    subsig: object = None  # BodySubsig or PcreSubsig; None when it does not load
    problem: _StringProblem | None = None  # why ClamAV cannot load it
    unsupported: str | None = None  # why clammail cannot run what ClamAV loads


@dataclass(frozen=True)
class _StringProblem:
    """Why ClamAV's load_oneyara cannot load a string, and how that ends the rule."""

    reason: str
    # load_oneyara stops at this string (`break`), where a too short text string
    # lets it look at the next one (`continue`) ...
    stops: bool
    # ... and returns an error (CL_EMALFDB) instead of CL_SUCCESS: clamd then fails
    # the whole database when this rule is the last of its file.
    fatal: bool


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
    # Strings of rules before it that failed to compile after declaring them:
    # ClamAV's compiler keeps them queued and gives them to this rule (loaded,
    # never referenced, but they can make this rule fail to load).
    inherited: list[YaraString] = field(default_factory=list)
    # A rule before it failed to compile in the middle of its condition: ClamAV
    # runs the code left behind before this rule's own, finds its stack not
    # empty at the end and returns an error, which makes clamd stop evaluating
    # every logical signature and YARA rule after this one (cli_exp_eval).
    halts_evaluation: bool = False
    # Why clammail loads but cannot evaluate it (it never matches); None normally.
    unsupported: str | None = None

    def may_match_without_strings(self) -> bool:
        return True

    def condition_holds(self, counts, offsets, data, info, results=None) -> bool:
        env = _Env(self, counts, offsets, data, info, results if results is not None else {})
        return _truth(env.eval(self.condition))


def load_yara(text: str, path: str, official: bool, options: LoadOptions,
              warn: Callable[[str], None] | None = None) -> list[YaraRule]:
    """The rules of a .yar/.yara file that clamd 1.4.6 loads, in file order.

    As clamd: a rule that does not compile is skipped (the rest of the file
    loads), and so is a rule with a string ClamAV cannot load; but when the
    last rule of the file fails to load with an error, the whole database
    fails (`SignatureError`). Every skipped rule is reported to `warn` once,
    with the file and rule.
    """
    if warn is None:
        def warn(message: str) -> None:
            log.warning("%s", message)
    declared = _Parser(tokenize(text), path).declared_rules(
        lambda where, why: warn(f"{path}: {where}: YARA rule skipped: {why}"))
    if not declared:
        warn(f"{path}: empty database file")  # a warning only, in clamd too
    rules: list[YaraRule] = []
    fatal = None
    for rule in declared:
        problem = _load_problem(rule)
        fatal = problem if problem is not None and problem.fatal else None
        if problem is not None:
            warn(f"{path}: YARA rule {rule.identifier} skipped: {problem.reason}")
            continue
        rule.unsupported = next((s.unsupported for s in rule.strings + rule.inherited
                                 if s.unsupported), None)
        if not rule.unsupported:
            rule.subsigs = tuple(s.subsig for s in rule.strings + rule.inherited)
        rule.name = display_name("YARA." + rule.identifier, official)
        rule.path = path
        if rule.halts_evaluation:
            warn(f"{path}: YARA rule {rule.identifier} never matches and, as in clamd, no "
                 f"logical signature or YARA rule after it is evaluated: a rule before it "
                 f"failed to compile in the middle of its condition")
        elif rule.unsupported:
            warn(f"{path}: YARA rule {rule.identifier} loaded but never matches: "
                 f"{rule.unsupported}")
        rules.append(rule)
    if fatal is not None:
        # cli_loadyara returns the result of its last rule.
        raise SignatureError(f"YARA rule {declared[-1].identifier}: {fatal.reason}", path)
    return rules


def _load_problem(rule: YaraRule) -> _StringProblem | None:
    """What load_oneyara finds wrong with a declared rule, or None when it loads."""
    strings = rule.inherited + rule.strings  # the queued ones come first
    first = None
    for string in strings:
        if string.problem is not None:
            first = first or string.problem
            if string.problem.stops:
                return replace(string.problem, reason=f"{string.ident}: {string.problem.reason}")
    if first is not None:
        return first
    if not strings:
        return _StringProblem("the rule contains no supported strings", True, False)
    if len(strings) > MAX_STRINGS:
        return _StringProblem(f"too many strings ({len(strings)}, at most {MAX_STRINGS})",
                              True, False)
    return None


# -- parser ------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[Token], path: str):
        self.tokens = tokens
        self.pos = 0
        self.path = path
        self.strings: dict[str, int] = {}
        self.loop_vars: list[str] = []
        self.current_strings: list[YaraString] = []  # of the rule being parsed
        self.emitted = 0  # operands of its condition compiled so far

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
        """Skip to the next rule, as the grammar's `rules error rule` recovery does
        (bison drops tokens until one that can start a rule)."""
        self.pos = max(self.pos, start + 1)
        while not self.at_end():
            tok = self.peek()
            if tok.kind == "kw" and tok.text in ("rule", "private", "global"):
                return
            self.pos += 1

    def declared_rules(self, skipped: Callable[[str, str], None]) -> list[YaraRule]:
        """Every rule that compiles, in file order; `skipped(where, why)` for the others.

        What a failed rule leaves behind in ClamAV's compiler goes to the next
        rule that compiles: its queued strings (`YaraRule.inherited`) and, when
        its condition had emitted code, the unbalanced stack that makes that
        rule halt the evaluation (`YaraRule.halts_evaluation`).
        """
        declared: list[YaraRule] = []
        known: dict[str, YaraRule] = {}
        inherited: list[YaraString] = []
        halts = False
        while not self.at_end():
            start = self.pos
            self.current_strings = []
            self.emitted = 0
            try:
                rule = self.rule(known)
            except YaraSyntaxError as exc:
                name = self._rule_name(start)
                skipped(f"line {self.tokens[start].line}" + (f" (rule {name})" if name else ""),
                        str(exc))
                inherited += self.current_strings
                halts = halts or self.emitted > 0
                self.resync(start)
                continue
            if rule is None:  # an import
                continue
            rule.inherited, rule.halts_evaluation = inherited, halts
            inherited, halts = [], False
            known[rule.identifier] = rule
            declared.append(rule)
        return declared

    def _rule_name(self, start: int) -> str | None:
        for tok in self.tokens[start:start + 4]:
            if tok.kind == "ident":
                return tok.text
        return None

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
        strings = self.current_strings
        if self.accept("strings"):
            self.expect(":")
            while self.peek().kind == "strid" and self.peek().text.startswith("$"):
                strings.append(self.string_declaration(len(strings)))
        self.expect("condition")
        self.expect(":")
        self.rules = known
        self.used: set[int] = set()
        condition = self.expression()
        self.expect("}")
        # yr_parser_reduce_rule_declaration's checks, after the condition's code.
        if ident.text in known:
            raise YaraSyntaxError(f"line {ident.line}: duplicated rule identifier {ident.text!r}")
        for index, string in enumerate(strings):
            if string.ident != "$" and index not in self.used:
                raise YaraSyntaxError(f"unreferenced string {string.ident!r}")
        return YaraRule(ident.text, ident.text, private, list(strings), condition)

    def string_declaration(self, index: int) -> YaraString:
        ident = self.take()
        if ident.text.endswith("*"):
            raise YaraSyntaxError(f"line {ident.line}: bad string identifier {ident.text!r}")
        if ident.text != "$" and ident.text in self.strings:
            raise YaraSyntaxError(f"line {ident.line}: duplicated string identifier {ident.text!r}")
        self.strings.setdefault(ident.text, index)
        self.expect("=")
        value = self.take()
        if value.kind == "hexstr":  # no modifiers in ClamAV's grammar
            return _hex_string(ident.text, value.text)
        modifiers = set()
        while self.peek().text in ("ascii", "wide", "nocase", "fullword") and self.peek().kind == "kw":
            modifiers.add(self.take().text)
        if value.kind == "string":
            return _text_string(ident.text, _unescape(value.text[1:-1]), modifiers)
        if value.kind == "regex":
            return _regex_string(ident.text, value.text, modifiers)
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
        node = self._primary()
        # ClamAV's compiler has now emitted code that pushes this operand: a
        # failure later in the condition leaves it behind (declared_rules).
        self.emitted += 1
        return node

    def _primary(self) -> Node:
        tok = self.peek()
        if tok.kind == "number" and self.peek(1).text == "of":
            self.take()
            self.emitted += 1  # the quantifier is pushed before the set is read
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
            # The string is looked up where ClamAV's grammar reduces it: after the
            # operands of `@a[i]`, `$a at n` and `$a in (..)` (already compiled then).
            if sigil == "#":
                return Node("count", value=self.string_ref(tok))
            if sigil == "@":
                position = Node("int", value=1)
                if self.accept("["):
                    position = self.expression()
                    self.expect("]")
                return Node("offset", (position,), self.string_ref(tok))
            if sigil == "!":
                raise YaraSyntaxError(f"line {tok.line}: match lengths (!) are not supported")
            if self.accept("at"):
                where = self.term()
                return Node("at", (where,), self.string_ref(tok))
            if self.accept("in"):
                self.expect("(")
                low = self.expression()
                self.expect("..")
                high = self.expression()
                self.expect(")")
                return Node("in", (low, high), self.string_ref(tok))
            return Node("found", value=self.string_ref(tok))
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
            if not self.strings:
                raise YaraSyntaxError(f"line {self.peek().line}: undefined string \"$*\"")
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
        self.emitted += 1  # `all`/`any` push their quantifier
        self.expect("of")
        return Node("of", (quantifier,), self.string_set())

    def for_expr(self) -> Node:
        self.expect("for")
        quant_tok = self.peek()
        if quant_tok.text in ("all", "any"):
            self.take()
            self.emitted += 1
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
            self.emitted += 1
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




def _unescape(body: str) -> bytes:
    """A text string's bytes, as ClamAV's lexer reads them: \\t \\n \\" \\\\ and \\xHH;
    any other escape (\\r too) is an error it reports and drops, reading on."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            d = body[i + 1:i + 2]
            digits = body[i + 2:i + 4]
            if d == "x" and len(digits) == 2 and all(ch in _HEX_DIGITS for ch in digits):
                out.append(int(digits, 16))
                i += 4
                continue
            mapped = {"n": 10, "t": 9, '"': 34, "\\": 92}.get(d)
            if mapped is not None:
                out.append(mapped)
            i += 2
            continue
        out += c.encode("latin-1", "replace")
        i += 1
    return bytes(out)


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")

# libclamav records every match of a YARA string (#a, @a[i] and `for` loops
# read them); BodyMatcher returns at most BodyPattern.max_matches.
STRING_MATCHES = 10_000
AC_MINDEPTH = 2  # CLI_DEFAULT_AC_MINDEPTH: the shortest string ClamAV loads


def _text_string(ident: str, value: bytes, modifiers: set[str]) -> YaraString:
    if len(value) < AC_MINDEPTH:
        return YaraString(ident, "text", problem=_StringProblem(
            "string is too short", stops=False, fatal=False))
    wide = "wide" in modifiers
    pattern = body_pattern(
        value.hex(), "*", 0, nocase="nocase" in modifiers, wide=wide,
        ascii=(not wide) or "ascii" in modifiers, fullword="fullword" in modifiers,
    )
    return YaraString(ident, "text", BodySubsig(replace(pattern, max_matches=STRING_MATCHES),
                                                partial=False))


def _regex_string(ident: str, expression: str, modifiers: set[str]) -> YaraString:
    if "wide" in modifiers:
        return YaraString(ident, "regex", problem=_StringProblem(
            "wide modifier is not supported for regex strings", stops=True, fatal=False))
    try:
        regex = compile_pcre(expression, "")
    except UnsupportedRegex as exc:
        # clamd loads it, Python's re cannot run it: the rule loads and never matches.
        return YaraString(ident, "regex", unsupported=f"regex /{expression}/ uses {exc}")
    return YaraString(ident, "regex", PcreSubsig(None, regex, ANY_OFFSET))


def _hex_string(ident: str, token: str) -> YaraString:
    """A hex string as ClamAV's parse_yara_hex_string converts it, checked as
    yara_hexstr_verify checks it."""
    hexsig = clamav_hex(token)
    if hexsig is None:
        return YaraString(ident, "hex", problem=_StringProblem(
            "single byte subpatterns are unsupported in ClamAV", stops=True, fatal=True))
    if len(hexsig) // 2 < AC_MINDEPTH:
        return YaraString(ident, "hex", problem=_StringProblem(
            "string is too short", stops=True, fatal=True))
    try:
        pattern = body_pattern(hexsig, "*", 0)
    except SignatureError as exc:
        return YaraString(ident, "hex", problem=_StringProblem(
            f"string failed test insertion: {exc.reason}", stops=True, fatal=True))
    return YaraString(ident, "hex", BodySubsig(replace(pattern, max_matches=STRING_MATCHES),
                                               partial="*" in hexsig or "{" in hexsig))


def clamav_hex(token: str) -> str | None:
    """ClamAV's text for a YARA hex string token (`{ 4D 5A [2-4] ?? }`): blanks
    dropped, `[-]` as `*`, other jumps as `{..}`; None where it refuses a first or
    last piece of one byte next to a jump (only `[n..]` jumps are looked at)."""
    out = []
    body = token[1:-1]
    i = 0
    while i < len(body):
        c = body[i]
        if c in " \t\r\n}":
            pass
        elif c == "[":
            if body[i + 1:i + 3] == "-]":
                out.append("*")
                i += 2
            else:
                out.append("{")
        elif c == "]":
            out.append("}")
        else:
            out.append(c)
        i += 1
    text = "".join(out)
    brace, close = text.find("{"), text.rfind("}")
    if brace == 2 or (close >= 0 and len(text) - close == 3):
        return None
    return text.lower()


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
