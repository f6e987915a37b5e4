#!/usr/bin/env python3
"""Mail through a real Postfix: ../shared/bench/bench_smtp.py against a private instance.

Usage:
    .venv/bin/python bench/bench_smtp_postfix.py [--count 500] [--clients 4]
        [--milter inet:127.0.0.1:PORT]... [--content-filter PORT] [--workdir DIR]

Starts a private Postfix (tests/postfix_harness.py), wired to the given
milters (smtpd_milters, milter_default_action = tempfail) or after-queue
content filter, sends the first COUNT messages of the corpus of
../shared/bench/mkcorpus.py to its SMTP port from CLIENTS concurrent clients
with bench_smtp.py, waits for delivery into the recipient's maildir, and
prints bench_smtp.py's output and the parsed result as JSON. Run as root
(Postfix's master needs it).

From other benchmarks: `bench_postfix(corpus, milters=[...])` does the same
and returns an SmtpBenchResult; `before_run(postfix)` starts what needs the
running instance first (a proxy needs its re-injection port,
`postfix.port("reinject")`). `run_bench_smtp(postfix, corpus)` runs the
client against an instance started elsewhere.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from bench_daemon import ensure_corpus, find_shared  # noqa: E402
from postfix_harness import (  # noqa: E402
    Postfix,
    PostfixConfig,
    after_queue_filter,
    start_postfix,
)

# bench_smtp.py sends every message from bench@example.org to this address.
BENCH_RECIPIENT = "rcpt@example.com"


@dataclass(frozen=True)
class SmtpBenchResult:
    """bench_smtp.py's result line, parsed; `output` is all it printed."""

    messages_per_s: float
    p50_ms: float
    p99_ms: float
    replies: dict[int, int]  # reply class (2, 4, 5) -> count
    delivered: int | None  # with a maildir: messages delivered ...
    accepted: int | None  # ... of those accepted
    delivery_s: float | None
    delivered_per_s: float | None
    refused: list[str]  # "FILE:CODE" of the messages not accepted (first 30)
    output: str


_RESULT_LINE = re.compile(
    r"smtp messages/s (?P<rate>[\d.]+)\s+p50_ms (?P<p50>\d+)\s+p99_ms (?P<p99>\d+)\s+"
    r"replies (?P<replies>\{[^}]*\})"
    r"(?:\s+delivered (?P<delivered>\d+)/(?P<accepted>\d+) in (?P<secs>[\d.]+)s "
    r"\((?P<drate>[\d.]+)/s\))?")


def parse_bench_output(output: str) -> SmtpBenchResult:
    match = _RESULT_LINE.search(output)
    if match is None:
        raise ValueError(f"no result line in bench_smtp.py's output:\n{output}")
    refused_line = next((line for line in output.splitlines() if line.startswith("refused:")), "")
    refused = [item for item in refused_line[len("refused:"):].split() if item != "..."]

    def number(name, kind=float):
        return kind(match.group(name)) if match.group(name) is not None else None

    return SmtpBenchResult(
        messages_per_s=float(match.group("rate")), p50_ms=float(match.group("p50")),
        p99_ms=float(match.group("p99")), replies=ast.literal_eval(match.group("replies")),
        delivered=number("delivered", int), accepted=number("accepted", int),
        delivery_s=number("secs"), delivered_per_s=number("drate"),
        refused=refused, output=output)


def corpus_subset(corpus: Path, count: int, workdir: Path) -> Path:
    """The first `count` messages of the corpus (mkcorpus.py is deterministic,
    so they are the corpus `mkcorpus.py DIR count` would write), as links."""
    names = sorted(p.name for p in corpus.glob("*.eml"))
    if count >= len(names):
        return corpus
    subset = workdir / f"corpus-first-{count}"
    subset.mkdir(exist_ok=True)
    for name in names[:count]:
        if not (subset / name).exists():
            (subset / name).symlink_to(corpus / name)
    return subset


def run_bench_smtp(postfix: Postfix, corpus: Path, clients: int = 4,
                   shared: Path | None = None) -> SmtpBenchResult:
    """bench_smtp.py against a running instance, counting deliveries to its maildir."""
    shared = shared or find_shared(None)
    maildir_new = postfix.maildir(BENCH_RECIPIENT) / "new"
    proc = subprocess.run(
        [sys.executable, str(shared / "bench_smtp.py"), f"127.0.0.1:{postfix.smtp_port}",
         str(corpus), str(clients), str(maildir_new)],
        capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_smtp.py failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return parse_bench_output(proc.stdout)


def wired_config(config: PostfixConfig | None = None, milters: Sequence[str] = (),
                 content_filter_port: int | None = None) -> PostfixConfig:
    """A PostfixConfig with milters and/or an after-queue content filter added."""
    config = config or PostfixConfig()
    main = dict(config.main)
    services = list(config.services)
    if milters:
        # Never accept mail a milter did not see, as the milter's own docs say.
        main["smtpd_milters"] = ", ".join(milters)
        main.setdefault("milter_default_action", "tempfail")
    if content_filter_port is not None:
        filtering = after_queue_filter(content_filter_port)
        main = {**filtering.main, **main}
        services += filtering.services
    return dataclasses.replace(config, main=main, services=tuple(services))


def bench_postfix(corpus: Path, *, config: PostfixConfig | None = None,
                  milters: Sequence[str] = (), content_filter_port: int | None = None,
                  clients: int = 4, before_run: Callable[[Postfix], None] | None = None,
                  shared: Path | None = None) -> SmtpBenchResult:
    """Start a private Postfix wired as asked, run bench_smtp.py through it, stop it."""
    with start_postfix(wired_config(config, milters, content_filter_port)) as postfix:
        if before_run is not None:
            before_run(postfix)
        return run_bench_smtp(postfix, corpus, clients, shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="messages of the corpus to send")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--milter", action="append", default=[],
                        help="smtpd_milters entry, e.g. inet:127.0.0.1:8891 (repeatable)")
    parser.add_argument("--content-filter", type=int, metavar="PORT",
                        help="after-queue content filter on 127.0.0.1:PORT")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/clammail-bench"))
    parser.add_argument("--shared", help="the shared/bench directory (found when not given)")
    args = parser.parse_args()

    shared = find_shared(args.shared)
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = corpus_subset(ensure_corpus(args.workdir, shared), args.count, args.workdir)
    result = bench_postfix(corpus, milters=args.milter, content_filter_port=args.content_filter,
                           clients=args.clients, shared=shared)
    print(result.output, end="")
    fields = {k: v for k, v in dataclasses.asdict(result).items() if k != "output"}
    print(json.dumps(fields, sort_keys=True))


if __name__ == "__main__":
    main()
