#!/usr/bin/env python3
"""HTML normalization speed: the fast normalizer against the byte-loop reference.

Usage:
    .venv/bin/python bench/bench_html.py [--impl fast,reference] [--limit N] [--repeat R]
        [--check] [FILE ...]

Without FILE arguments it takes the .html files that ../shared/bench/mkcorpus.py
puts into the benchmark mail corpus (the first 400 files of 4 KiB to 3 MB
under /usr/share and /usr/lib, in walk order). For each implementation it
prints the total MB/s, the mean and median time per file and the slowest
file; with two implementations, the speedup. --check also asserts that both
give identical outputs on every file. CPU time of this process is measured
(time.process_time), the best of --repeat runs per file, the implementations
taking turns file by file.

Numbers from a shared development machine are preliminary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clammail.unpack import html as html_fast  # noqa: E402
from clammail.unpack import html_reference  # noqa: E402

IMPLEMENTATIONS = {"fast": html_fast.normalize, "reference": html_reference.normalize}


def corpus_pool(limit: int) -> list[Path]:
    """The .html files mkcorpus.py picks, in the same order."""
    found: list[Path] = []
    for root in ("/usr/share", "/usr/lib"):
        for folder, subs, files in os.walk(root):
            subs.sort()
            for name in sorted(files):
                if not name.endswith(".html") or len(found) >= limit:
                    continue
                path = os.path.join(folder, name)
                if os.path.isfile(path) and not os.path.islink(path) \
                        and 4096 < os.path.getsize(path) < 3_000_000:
                    found.append(Path(path))
    return found


def time_one(normalize, data: bytes, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        normalize(data)
        best = min(best, time.process_time() - start)
    return best


def outputs(result) -> tuple:
    return (bytes(result.nocomment), bytes(result.notags),
            [(bytes(mime), bytes(payload)) for mime, payload in result.data_uris])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--impl", default="fast,reference")
    parser.add_argument("--limit", type=int, default=400, help="files taken from the corpus pool")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="assert identical outputs")
    args = parser.parse_args()
    paths = args.files or corpus_pool(args.limit)
    contents = [path.read_bytes() for path in paths]
    total = sum(map(len, contents))
    print(f"{len(paths)} files, {total / 1e6:.2f} MB, median {statistics.median(map(len, contents)):.0f} bytes")
    names = args.impl.split(",")
    # The implementations take turns file by file, so that a busy machine slows them alike.
    per_file = {name: [] for name in names}
    for data in contents:
        for name in names:
            per_file[name].append(time_one(IMPLEMENTATIONS[name], data, args.repeat))
    totals: dict[str, float] = {}
    for name in names:
        times = per_file[name]
        totals[name] = sum(times)
        slowest = max(range(len(times)), key=times.__getitem__)
        print(f"{name:>9}: {total / 1e6 / totals[name]:8.2f} MB/s  total {totals[name]:7.3f} s  "
              f"mean {1e3 * totals[name] / len(times):7.3f} ms/file  "
              f"median {1e3 * statistics.median(times):7.3f} ms/file  "
              f"slowest {1e3 * times[slowest]:.1f} ms ({paths[slowest]}, {len(contents[slowest])} bytes)")
    if len(names) == 2:
        print(f"speedup {names[0]} over {names[1]}: {totals[names[1]] / totals[names[0]]:.1f}x")
    if args.check:
        first, second = (IMPLEMENTATIONS[name] for name in names[:2])
        for path, data in zip(paths, contents, strict=True):
            assert outputs(first(data)) == outputs(second(data)), path
        print(f"outputs identical on all {len(paths)} files")


if __name__ == "__main__":
    main()
