#!/usr/bin/env python3
"""Our ctypes binding to libhs (engine/match/libhs.py) beside the PyPI `hyperscan` package.

Usage: bench/bench_hsbinding.py [--db DIR] [--data FILE]... [--runs N]

Needs `pip install hyperscan` in the venv for the comparison (the project no
longer depends on it). Both compile the same expressions the matcher makes
for synth.ndb's 100 000 body signatures (DIR defaults to
/tmp/clammail-bench/bigdb-1) into one database per 50 000, and scan each
data file (default /usr/bin/node and /usr/bin/python3.11) with a callback
that records each expression's first match (SINGLEMATCH), as the matcher
does. A second case has many callbacks: 20 000 4-byte literals taken from
the data itself. Best of N runs; CPU seconds for the compile.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clammail.engine.match import backends, libhs  # noqa: E402
from clammail.signatures.bodysig import load_ndb  # noqa: E402
from clammail.signatures.common import LoadOptions  # noqa: E402


def literals_of(db: Path) -> list[bytes]:
    """The anchor literals BodyMatcher gives the backend for synth.ndb."""
    text = (db / "synth.ndb").read_text("latin-1")
    patterns = [s.pattern for s in load_ndb(text, "synth.ndb", False, LoadOptions())]
    captured = []

    def capture(name, literals, windows=(), cache_dir=None):
        captured.extend(literals)
        raise StopIteration

    original = backends.make_backend
    from clammail.engine.match import matcher

    matcher.make_backend = capture
    try:
        matcher.BodyMatcher(patterns, backend="hyperscan")
    except StopIteration:
        pass
    finally:
        matcher.make_backend = original
    return [literal for literal, _ in captured]


def expressions(literals):
    return [backends._escaped(literal) for literal in literals]


def chunks(count):
    size = 50_000
    return [range(start, min(count, start + size)) for start in range(0, count, size)]


def ours(exprs):
    flags = [libhs.HS_FLAG_SINGLEMATCH] * len(exprs)
    start = time.process_time()
    dbs = [(ids.start, libhs.Database.compile([exprs[i] for i in ids], flags[:len(ids)],
                                              range(len(ids)))) for ids in chunks(len(exprs))]
    compile_s = time.process_time() - start
    scratch = libhs.Scratch([db for _, db in dbs])

    def scan(data):
        first = {}
        base = [0]

        def on_match(ident, start, end, flags, context):
            first[ident + base[0]] = end
            return 0

        callback = libhs.MATCH_CALLBACK(on_match)
        for base[0], db in dbs:
            libhs.scan(db, data, scratch, callback)
        return first

    return compile_s, scan


def pypi(exprs):
    import hyperscan

    start = time.process_time()
    dbs = []
    for ids in chunks(len(exprs)):
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        db.compile(expressions=[exprs[i] for i in ids], ids=list(range(len(ids))),
                   elements=len(ids), flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(ids))
        db.scratch = hyperscan.Scratch(db)
        dbs.append((ids.start, db))
    compile_s = time.process_time() - start

    def scan(data):
        first = {}
        base = [0]

        def on_match(ident, start, end, flags, context):
            first[ident + base[0]] = end

        for base[0], db in dbs:
            db.scan(data, match_event_handler=on_match)
        return first

    return compile_s, scan


def best(scan, data, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        found = scan(data)
        times.append(time.perf_counter() - start)
    return min(times), found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, default=Path("/tmp/clammail-bench/bigdb-1"))
    p.add_argument("--data", type=Path, action="append")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    print(f"libhs {libhs.version()}; loadavg {os.getloadavg()}")
    datas = [path.read_bytes() for path in args.data or [Path("/usr/bin/node"),
                                                        Path("/usr/bin/python3.11")]]
    cases = [("synth.ndb anchors", expressions(literals_of(args.db)), datas)]
    rng = random.Random(1)
    sample = datas[-1]
    dense = list({sample[p:p + 4] for p in (rng.randrange(len(sample) - 4) for _ in range(30000))})
    cases.append((f"{len(dense)} literals from the data", expressions(dense[:20000]), [sample]))
    for title, exprs, case_datas in cases:
        for name, build in (("own binding (ctypes)", ours), ("PyPI hyperscan", pypi)):
            compile_s, scan = build(exprs)
            for data in case_datas:
                seconds, found = best(scan, data, args.runs)
                print(f"{title}: {name}: {len(exprs)} expressions, compile {compile_s:.2f} s CPU;"
                      f" {len(data) / 1e6:.1f} MB in {seconds * 1000:.1f} ms"
                      f" ({len(data) / seconds / 1e6:.0f} MB/s), {len(found)} expressions matched",
                      flush=True)
    print(f"loadavg {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
