"""From a scan result to what happens to the message: one place for the milter and the proxy.

The actions and their names are clamav-milter's (OnClean, OnInfected, OnFail:
Accept, Reject, Defer, Blackhole, Quarantine; AddHeader No/Yes/Replace/Add;
RejectMsg with %v), and so are the header texts it writes:

    X-Virus-Scanned: <product> <version> at <ReportHostname or host name>
    X-Virus-Status: Clean | Infected (<signature>)

A failed scan never gets headers and never passes silently: OnFail decides,
and its default, Defer, gives the sender a 4xx so the message is retried.
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass

from clammail import __version__
from clammail.mailfilter.scan import ScanResult

PRODUCT = "clammail"
STATUS_HEADER = "X-Virus-Status"
SCANNED_HEADER = "X-Virus-Scanned"


class Action(enum.Enum):
    ACCEPT = "Accept"
    REJECT = "Reject"  # 5xx
    DEFER = "Defer"  # 4xx: the sender keeps the message and retries
    DISCARD = "Blackhole"  # accepted, then dropped
    QUARANTINE = "Quarantine"  # accepted and held (the MTA's hold queue, or the proxy's store)
    STRIP = "Strip"  # the proxy only: infected parts replaced by a notice, the rest delivered

    @classmethod
    def named(cls, name: str) -> Action:
        for action in cls:
            if action.value.lower() == name.lower():
                return action
        raise ValueError(f"Unknown action {name}")


class HeaderMode(enum.Enum):
    NO = "No"
    REPLACE = "Replace"  # "Yes" too: earlier X-Virus-* headers are removed first
    ADD = "Add"  # on top of any earlier ones

    @classmethod
    def named(cls, name: str) -> HeaderMode:
        lowered = name.lower()
        if lowered == "yes":
            return cls.REPLACE
        for mode in cls:
            if mode.value.lower() == lowered:
                return mode
        raise ValueError(f"Invalid AddHeader {name}")


class Outcome(enum.Enum):
    CLEAN = "clean"
    INFECTED = "infected"
    FAILED = "failed"  # no verdict: no backend, timeout, garbage, an ERROR reply
    SKIPPED = "skipped"  # not scanned on purpose (LocalNet, AllowList, empty message)


@dataclass(frozen=True)
class Reply:
    """An SMTP reply the MTA or proxy gives the sender instead of its default one."""

    code: str  # "550"
    xcode: str  # "5.7.1"
    text: str


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    action: Action
    signature: str = ""
    reply: Reply | None = None  # None: the MTA's own text for the action
    status_header: str | None = None  # the X-Virus-Status value to write, if any
    header_mode: HeaderMode = HeaderMode.NO


def compile_reject_message(text: str | None) -> str | None:
    """Check RejectMsg as clamav-milter does: printable, `%v` at most once."""
    if text is None:
        return None
    if any(not (32 <= ord(c) < 127) for c in text):
        raise ValueError("RejectMsg contains non printable characters")
    if text.count("%v") > 1:
        raise ValueError("%v may appear at most once in RejectMsg")
    return text


@dataclass(frozen=True)
class Policy:
    on_clean: Action = Action.ACCEPT
    on_infected: Action = Action.QUARANTINE
    on_fail: Action = Action.DEFER
    reject_message: str | None = None  # RejectMsg, %v for the signature
    header_mode: HeaderMode = HeaderMode.NO
    report_hostname: str | None = None

    @property
    def scanned_header(self) -> str:
        """The X-Virus-Scanned value."""
        host = self.report_hostname or socket.gethostname()
        return f"{PRODUCT} {__version__} at {host}" if host else f"{PRODUCT} {__version__}"

    def decide(self, result: ScanResult) -> Decision:
        if result.infected:
            signature = result.signature
            reply = None
            if self.on_infected is Action.REJECT and self.reject_message is not None:
                reply = Reply("550", "5.7.1", self.reject_message.replace("%v", signature))
            return Decision(Outcome.INFECTED, self.on_infected, signature, reply,
                            f"Infected ({signature})", self.header_mode)
        if result.clean:
            return Decision(Outcome.CLEAN, self.on_clean, status_header="Clean",
                            header_mode=self.header_mode)
        return Decision(Outcome.FAILED, self.on_fail)

    def decide_unscanned(self) -> Decision:
        """An empty message: clamav-milter applies OnClean without scanning or headers."""
        return Decision(Outcome.SKIPPED, self.on_clean)

    @staticmethod
    def skipped() -> Decision:
        """Let through on purpose (LocalNet, AllowList, SkipAuthenticated)."""
        return Decision(Outcome.SKIPPED, Action.ACCEPT)
