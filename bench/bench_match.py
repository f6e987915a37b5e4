#!/usr/bin/env python3
"""Body-signature benchmark: load+build of synth.ndb and raw scan throughput per backend.

Usage: bench/bench_match.py [--db DIR] [--corpus DIR] [--no-clamscan]

DIR defaults to a cache under /tmp, filled by ../shared/bench/mkdb.py (SCALE
1.0: 100 000 body signatures) and mkcorpus.py. Measures, for each matcher
backend: parsing synth.ndb with `load_ndb`, building `BodyMatcher`, its
memory, and scanning every corpus file's raw bytes (no MIME decoding: this
is the matcher alone). Then `clamscan -d synth.ndb` on the same corpus for
comparison; clamscan also decodes the mail and scans the attachments, so its
rate is an upper bound on matching work, reported with and without its load
time. Numbers on a shared machine are preliminary.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clammail.engine.match import BodyMatcher, available_backends  # noqa: E402
from clammail.engine.objectinfo import ObjectInfo  # noqa: E402
from clammail.formats.filetypes import FileType  # noqa: E402
from clammail.signatures.bodysig import load_ndb, parse_body_pattern  # noqa: E402
from clammail.signatures.common import LoadOptions  # noqa: E402

SHARED_BENCH = REPO.parent.parent / "shared" / "bench"
if not SHARED_BENCH.is_dir():
    SHARED_BENCH = Path("/work/shared/bench")


def ensure(directory: Path, script: str, marker: str, *args: str) -> Path:
    if not (directory / marker).exists():
        directory.mkdir(parents=True, exist_ok=True)
        print(f"generating {directory} with {script} ...", flush=True)
        subprocess.run([sys.executable, str(SHARED_BENCH / script), str(directory), *args],
                       check=True)
    return directory


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def slow_path(backend: str, datas: list[bytes], total: int) -> None:
    """1000 patterns whose best literal has two bytes: how much the slow path costs."""
    import random

    rng = random.Random(3)
    patterns = []
    while len(patterns) < 1000:
        a, b, c = rng.randbytes(2).hex(), rng.randbytes(1).hex(), rng.randbytes(2).hex()
        patterns.append(parse_body_pattern(f"{a}??{b}??{c}"))
    matcher = BodyMatcher(patterns, backend=backend)
    started = time.perf_counter()
    for data in datas[:100]:
        matcher.scan(data, 0, None)
    elapsed = time.perf_counter() - started
    size = sum(len(d) for d in datas[:100])
    print(f"[{backend}] slow path: {matcher.unanchored_count} two-byte-anchored patterns, "
          f"{size / 1e6 / elapsed:.1f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/clammail-bench-db"))
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/clammail-bench-corpus"))
    parser.add_argument("--no-clamscan", action="store_true")
    parser.add_argument("--backend", action="append", help="default: every available one")
    args = parser.parse_args()

    ensure(args.db, "mkdb.py", "synth.ndb", "1.0")
    ensure(args.corpus, "mkcorpus.py", "truth.tsv")
    ndb = args.db / "synth.ndb"
    corpus = sorted(p for p in args.corpus.iterdir() if p.suffix == ".eml")
    datas = [p.read_bytes() for p in corpus]
    total = sum(len(d) for d in datas)
    print(f"corpus: {len(corpus)} messages, {total / 1e6:.1f} MB; database: {ndb}")

    base_rss = rss_mb()
    started = time.perf_counter()
    signatures = load_ndb(ndb.read_text(encoding="latin-1"), str(ndb), False, LoadOptions())
    parse_s = time.perf_counter() - started
    patterns = [s.pattern for s in signatures]
    print(f"load_ndb: {len(signatures)} signatures in {parse_s:.2f} s, "
          f"+{rss_mb() - base_rss:.0f} MB")

    for backend in args.backend or available_backends():
        gc.collect()
        before = rss_mb()
        started = time.perf_counter()
        matcher = BodyMatcher(patterns, backend=backend)
        build_s = time.perf_counter() - started
        built = rss_mb()
        print(f"[{backend}] build {build_s:.2f} s, +{built - before:.0f} MB, "
              f"{matcher.unanchored_count} patterns on the slow path")
        hits = 0
        started = time.perf_counter()
        for data in datas:
            # A mail message: target 4 (mail) and target 0 (generic) signatures in one scan.
            hits += len(matcher.scan(data, 4, ObjectInfo(data, FileType.MAIL)))
        scan_s = time.perf_counter() - started
        print(f"[{backend}] scan {total / 1e6:.1f} MB in {scan_s:.2f} s: "
              f"{total / 1e6 / scan_s:.1f} MB/s, {hits} hits, "
              f"+{rss_mb() - built:.0f} MB while scanning")
        del matcher
        slow_path(backend, datas, total)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"peak RSS of this process: {peak:.0f} MB")

    if not args.no_clamscan:
        empty = args.corpus / ".empty"
        empty.write_bytes(b"\x00\x01 nothing\n")
        started = time.perf_counter()
        subprocess.run(["clamscan", "--no-summary", "-d", str(ndb), str(empty)],
                       capture_output=True, check=False)
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        proc = subprocess.run(["clamscan", "--no-summary", "-d", str(ndb), *map(str, corpus)],
                              capture_output=True, text=True, check=False)
        run_s = time.perf_counter() - started
        found = proc.stdout.count(" FOUND")
        print(f"[clamscan] load {load_s:.2f} s; corpus {run_s:.2f} s total, "
              f"{total / 1e6 / max(run_s - load_s, 1e-9):.1f} MB/s without the load, "
              f"{found} found")


if __name__ == "__main__":
    main()
