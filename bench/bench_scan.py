#!/usr/bin/env python3
"""`clammail scan` beside `clamscan` on the mail corpus: messages/s, CPU and peak RSS.

Usage: bench/bench_scan.py [--corpus DIR] [--db DIR]... [--runs N]

The corpus defaults to /tmp/clammail-bench/corpus (made by
shared/bench/mkcorpus.py when missing); the databases default to the bundled
clammail/data and, when it exists, /tmp/clammail-bench/bigdb-1 (mkdb.py's
3.1M signatures, made by bench_daemon.py or bench_load.py). Each program
runs as a fresh process over the whole directory, database load included
(reported apart: the same command on an empty directory), and is measured
with wait4(): wall time, user+system CPU and the peak RSS (ru_maxrss) of the
process and its children. The verdicts are compared file by file. The best
of N runs is kept (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
if not SHARED.exists():
    SHARED = Path("/work/shared")
CLAMMAIL = REPO / ".venv" / "bin" / "clammail"


def measured(cmd: list[str]) -> dict:
    """Run `cmd`; wall seconds, CPU seconds, peak RSS (MB) and its stdout."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024, "exit": proc.returncode, "stdout": text}


def verdicts(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        path, sep, rest = line.rpartition(": ")
        if sep and rest.endswith(" FOUND"):
            found[os.path.basename(path)] = rest[:-len(" FOUND")]
    return found


def commands(program: str, db: Path, target: Path) -> list[str]:
    if program == "clamscan":
        return ["clamscan", "--no-summary", "-r", "-d", str(db), str(target)]
    return [str(CLAMMAIL), "scan", "--no-summary", "--no-progress", "-r", "-d", str(db), str(target)]


def bench(program: str, db: Path, corpus: Path, runs: int) -> dict:
    with tempfile.TemporaryDirectory() as empty:
        load = min((measured(commands(program, db, Path(empty))) for _ in range(runs)),
                   key=lambda r: r["wall"])
    best = min((measured(commands(program, db, corpus)) for _ in range(runs)), key=lambda r: r["wall"])
    messages = sum(1 for name in os.listdir(corpus) if name.endswith(".eml"))
    scan_wall = max(best["wall"] - load["wall"], 1e-9)
    return {
        "program": program, "database": db.name, "messages": messages,
        "wall s": best["wall"], "load s": load["wall"], "cpu s": best["cpu"],
        "messages/s": messages / best["wall"], "messages/s without load": messages / scan_wall,
        "peak RSS MB": best["rss_mb"], "found": verdicts(best["stdout"]), "exit": best["exit"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=Path("/tmp/clammail-bench/corpus"))
    p.add_argument("--db", type=Path, action="append")
    p.add_argument("--runs", type=int, default=2)
    args = p.parse_args()
    if not args.corpus.exists():
        subprocess.run([sys.executable, str(SHARED / "bench" / "mkcorpus.py"), str(args.corpus)], check=True)
    dbs = args.db or [REPO / "clammail" / "data"] + [
        d for d in [Path("/tmp/clammail-bench/bigdb-1")] if d.exists()]
    results = []
    for db in dbs:
        for program in ("clamscan", "clammail"):
            result = bench(program, db, args.corpus, args.runs)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "found"}), flush=True)
        theirs, ours = results[-2]["found"], results[-1]["found"]
        differing = sorted(set(theirs.items()) ^ set(ours.items()))
        print(f"   {db}: clamscan found {len(theirs)}, clammail {len(ours)}, "
              f"differing verdicts: {differing or 'none'}", flush=True)
    print()
    columns = ["database", "program", "messages/s", "messages/s without load", "load s", "cpu s",
               "peak RSS MB"]
    print(" | ".join(columns))
    for r in results:
        print(" | ".join(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
