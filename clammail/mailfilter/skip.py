"""Mail that is let through unscanned, by clamav-milter's rules.

- LocalNet: client networks (`192.168.0.0/24`, a host name resolved at
  start-up, `local` for mail that did not come over SMTP);
- AllowList (formerly Whitelist): a file of POSIX basic regular expressions
  matched, case-insensitively, against the envelope sender (`From:` lines)
  or recipients (`To:` lines, the default); a message is skipped when the
  sender matches or when every recipient does;
- SkipAuthenticated: an extended regular expression (or `file:` and a list
  of names) matched against the SMTP AUTH login.

clamav-milter compiles these expressions with ClamAV's POSIX regex library;
`posix_basic` and `posix_extended` translate them into Python's syntax.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field

# POSIX character classes inside brackets, in Python's terms.
_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~", "xdigit": "0-9A-Fa-f",
    "cntrl": r"\x00-\x1f\x7f", "print": r"\x20-\x7e", "graph": r"\x21-\x7e",
}


class SkipRuleError(ValueError):
    """A LocalNet, AllowList or SkipAuthenticated setting that cannot be used."""


def _bracket(pattern: str, i: int) -> tuple[str, int]:
    """Translate the bracket expression starting at pattern[i] == '['; (text, next index)."""
    j = i + 1
    out = "["
    if j < len(pattern) and pattern[j] == "^":
        out += "^"
        j += 1
    first = True
    while j < len(pattern):
        c = pattern[j]
        if c == "]" and not first:
            return out + "]", j + 1
        if c == "[" and pattern[j + 1:j + 2] == ":":
            end = pattern.find(":]", j + 2)
            if end < 0:
                raise SkipRuleError(f"unterminated character class in {pattern!r}")
            name = pattern[j + 2:end]
            if name not in _CLASSES:
                raise SkipRuleError(f"unknown character class [:{name}:] in {pattern!r}")
            out += _CLASSES[name]
            j = end + 2
        else:
            out += "\\" + c if c in "\\[]^" else c  # backslash is literal in POSIX brackets
            j += 1
        first = False
    raise SkipRuleError(f"unterminated bracket expression in {pattern!r}")


def posix_basic(pattern: str) -> str:
    r"""A POSIX basic regular expression (as regcomp without REG_EXTENDED) in Python syntax.

    In a BRE, `\(` `\)` group, `\{m,n\}` counts, `*` repeats except first,
    `^` and `$` anchor only at the ends; `+ ? | ( ) { }` are ordinary.
    """
    out: list[str] = []
    i = 0
    at_start = True  # where '*' is literal and '^' anchors
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt in "(){}":
                out.append(nxt)
                at_start = nxt == "("
            elif nxt.isdigit() and nxt != "0":
                out.append("\\" + nxt)
                at_start = False
            else:
                out.append(re.escape(nxt))
                at_start = False
            i += 2
            continue
        if c == "[":
            text, i = _bracket(pattern, i)
            out.append(text)
            at_start = False
            continue
        if c == "*" and at_start:
            out.append(r"\*")
        elif c == "^" and at_start:
            out.append("^")
            i += 1
            continue  # '*' right after a leading '^' is literal too
        elif c == "$":
            at_end = i + 1 == len(pattern) or pattern[i + 1:i + 3] == "\\)"
            out.append("$" if at_end else r"\$")
        elif c in ".*":
            out.append(c)
        else:
            out.append(re.escape(c))
        at_start = False
        i += 1
    return "".join(out)


def posix_extended(pattern: str) -> str:
    """A POSIX extended regular expression in Python syntax (brackets are the difference)."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            text, i = _bracket(pattern, i)
            out.append(text)
            continue
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i:i + 2])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _compile(text: str, basic: bool, what: str) -> re.Pattern:
    try:
        return re.compile(posix_basic(text) if basic else posix_extended(text), re.IGNORECASE)
    except (re.error, SkipRuleError) as exc:
        raise SkipRuleError(f"Failed to compile regex '{text}' {what}: {exc}") from None


# -- LocalNet -------------------------------------------------------------------


@dataclass(frozen=True)
class LocalNets:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    local: bool = False  # the `local` keyword: mail that did not come over SMTP

    @classmethod
    def parse(cls, entries: list[str]) -> LocalNets:
        networks = []
        local = False
        for entry in entries:
            name, _, mask = entry.partition("/")
            if name.lower() == "local":
                local = True
                continue
            try:
                address = ipaddress.ip_address(name)
            except ValueError:
                try:
                    info = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
                except socket.gaierror:
                    raise SkipRuleError(f"Can't resolve LocalNet hostname {name}") from None
                address = ipaddress.ip_address(info[0][4][0])
            bits = address.max_prefixlen
            if mask:
                if not mask.isdigit() or int(mask) > bits:
                    raise SkipRuleError(f"Bad netmask '/{mask}' for LocalNet {name}")
                bits = int(mask)
            networks.append(ipaddress.ip_network(f"{address}/{bits}", strict=False))
        return cls(tuple(networks), local)

    def __bool__(self) -> bool:
        return bool(self.networks) or self.local

    def matches(self, hostname: str | None, address: str | None) -> bool:
        """clamav-milter's clamfi_connect: by address when the MTA gives one, else by name."""
        if not self:
            return False
        if address:
            try:
                ip = ipaddress.ip_address(address.split("%")[0])
            except ValueError:
                return False
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            return any(ip in net for net in self.networks)
        if not hostname or hostname.lower() == "localhost":
            return self.local  # not over SMTP (Postfix says "localhost")
        try:
            info = socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
        except socket.gaierror:
            return False
        return self.matches(None, info[0][4][0])


# -- AllowList and SkipAuthenticated --------------------------------------------


@dataclass(frozen=True)
class AllowList:
    senders: tuple[re.Pattern, ...] = ()
    recipients: tuple[re.Pattern, ...] = ()

    @classmethod
    def read(cls, path: str) -> AllowList:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fh:
                lines = fh.read().splitlines()
        except OSError:
            raise SkipRuleError(f"Cannot open allow list file '{path}'") from None
        senders, recipients = [], []
        for line in lines:
            if not line or line[0] in "#:!":
                continue
            target = recipients
            if line[:5].lower() == "from:":
                line, target = line[5:], senders
            elif line[:3].lower() == "to:":
                line = line[3:]
            line = line.rstrip("\r")
            if not line:
                continue
            target.append(_compile(line, basic=True, what="in allow list file"))
        return cls(tuple(senders), tuple(recipients))

    def sender_allowed(self, sender: str) -> bool:
        return any(p.search(sender) for p in self.senders)

    def recipient_allowed(self, recipient: str) -> bool:
        return any(p.search(recipient) for p in self.recipients)


def skip_authenticated(setting: str | None) -> re.Pattern | None:
    """SkipAuthenticated: a regex, or `file:` and a plain list of logins."""
    if not setting:
        return None
    if setting.startswith("file:"):
        try:
            with open(setting[5:], encoding="utf-8", errors="surrogateescape") as fh:
                names = [n.rstrip("\r") for n in fh.read().splitlines()
                         if n and n[0] not in "#:!"]
        except OSError:
            raise SkipRuleError(f"Cannot open allow list file '{setting[5:]}'") from None
        names = [n for n in names if n]
        return re.compile("^(" + "|".join(re.escape(n) for n in names) + ")$", re.IGNORECASE)
    return _compile(setting, basic=False, what="for SkipAuthenticated")


@dataclass(frozen=True)
class SkipRules:
    local_nets: LocalNets = field(default_factory=LocalNets)
    allow: AllowList = field(default_factory=AllowList)
    authenticated: re.Pattern | None = None

    def login_skipped(self, login: str | None) -> bool:
        return bool(login) and self.authenticated is not None and \
            self.authenticated.search(login) is not None
