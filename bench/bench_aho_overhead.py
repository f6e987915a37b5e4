#!/usr/bin/env python3
"""The pyahocorasick fallback: its automaton's own time against the Python work per match.

Usage: bench/bench_aho_overhead.py [--db DIR] [--data FILE] [--runs N]

For the same automaton and data, three timings: pyahocorasick's iteration
alone (`sum(1 for _ in iter)`, no Python work per match beyond the loop),
and `AhoCorasickBackend.occurrences` (decoding 1 MB chunks, recording every
start, the density cap). Two literal sets: synth.ndb's 100 000 anchors
(few matches: the automaton's speed is all) and 5 000 literals of 3-6
bytes taken from the data (millions of matches: the per-match overhead).
Best of N runs.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_hsbinding import literals_of  # noqa: E402

from clammail.engine.match import backends  # noqa: E402


def best(function, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", type=Path, default=Path("/tmp/clammail-bench/bigdb-1"))
    p.add_argument("--data", type=Path, default=Path("/usr/bin/python3.11"))
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    data = args.data.read_bytes()
    rng = random.Random(1)
    sampled = {data[p:p + rng.choice((3, 4, 5, 6))]
               for p in (rng.randrange(len(data) - 6) for _ in range(5000))}
    print(f"{args.data}: {len(data) / 1e6:.1f} MB; loadavg {os.getloadavg()}")
    for title, literals in (("synth.ndb anchors", literals_of(args.db)),
                            ("literals from the data", sorted(sampled))):
        backend = backends.AhoCorasickBackend([(literal, False) for literal in literals])
        text = data.decode("latin-1")
        automaton_s, count = best(
            lambda b=backend, t=text: sum(1 for _ in b._exact.iter(t)), args.runs)
        collect_s, found = best(lambda b=backend: b.occurrences(data, data.lower)[0], args.runs)
        print(f"{title}: {len(literals)} literals, {count} matches; automaton alone "
              f"{automaton_s:.2f} s ({len(data) / automaton_s / 1e6:.1f} MB/s); occurrences "
              f"{collect_s:.2f} s ({len(data) / collect_s / 1e6:.1f} MB/s), "
              f"{sum(map(len, found.values()))} starts kept", flush=True)
    print(f"loadavg {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
