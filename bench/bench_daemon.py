#!/usr/bin/env python3
"""clamd 1.4.6 and `clammail daemon` side by side: INSTREAM throughput, latency, memory, MULTISCAN.

Usage (one command, everything it needs is made on the first run and kept):
    .venv/bin/python bench/bench_daemon.py [--workdir /tmp/clammail-bench]
        [--databases small,big] [--daemons clamd,clammail] [--clients 4] [--rounds 1]
        [--multiscan-files 10000] [--multiscan-limit 900] [--scale 1.0] [--shared DIR]

For each database, each daemon in turn is started on it with the same
clamd.conf (DisableCache yes, so that every message is really scanned) and:
  - ../shared/bench/bench_instream.py streams the 500-message corpus of
    ../shared/bench/mkcorpus.py to it with INSTREAM from 4 concurrent
    clients: messages/s, MB/s, p50/p99 latency, FOUND count;
  - MULTISCAN of a directory of 10 000 small files: seconds, files/s;
  - memory of the daemon and its worker processes, sampled from /proc all
    along: peak RSS as the sum of each process's VmHWM (shared pages count
    once per process, as `ps` would add them), and the peak of the summed
    PSS (shared pages divided among the processes that share them).
  - the time from start until it answers PING (database load).
Databases: "small" is the bundled clammail/data (ClamAV test signatures and
EICAR); "big" is ../shared/bench/mkdb.py's 3.1M-signature database at
--scale. Results are printed as a table and written to WORKDIR/results-*.json.

Numbers from a shared development machine are preliminary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from clamd_harness import start_daemon, wait_ready  # noqa: E402

SMALL_DB = REPO / "clammail" / "data"
CORPUS_SIZE = 500


def find_shared(given: str | None) -> Path:
    candidates = [given] if given else []
    candidates += [os.environ.get("CLAMMAIL_SHARED"), REPO.parent / "shared", REPO.parent.parent / "shared",
                   "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "bench" / "bench_instream.py").exists():
            return Path(candidate) / "bench"
    raise SystemExit("cannot find shared/bench (bench_instream.py, mkcorpus.py, mkdb.py): use --shared")


# -- inputs, made once ------------------------------------------------------------


def ensure_corpus(workdir: Path, shared: Path) -> Path:
    corpus = workdir / "corpus"
    if len(list(corpus.glob("*.eml"))) < CORPUS_SIZE:
        shutil.rmtree(corpus, ignore_errors=True)
        subprocess.run([sys.executable, str(shared / "mkcorpus.py"), str(corpus), str(CORPUS_SIZE)], check=True)
    return corpus


def ensure_big_db(workdir: Path, shared: Path, scale: float) -> Path:
    db = workdir / f"bigdb-{scale:g}"
    stamp = db / ".complete"
    if not stamp.exists():
        shutil.rmtree(db, ignore_errors=True)
        subprocess.run([sys.executable, str(shared / "mkdb.py"), str(db), str(scale)], check=True)
        stamp.write_text("")
    return db


def ensure_many_files(workdir: Path, count: int) -> Path:
    many = workdir / f"many-{count}"
    stamp = many / ".complete"
    if not stamp.exists():
        shutil.rmtree(many, ignore_errors=True)
        many.mkdir(parents=True)
        for i in range(count):
            (many / f"f{i:05d}.txt").write_bytes(b"small file %d, nothing to find here\n" % i * 20)
        stamp.write_text("")
        stamp.chmod(0o644)
    return many


# -- memory ---------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid] + [int(c) for c in children]


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemoryMeter:
    """Samples the daemon's process tree: per-process VmHWM, and the peak of summed PSS.

    VmHWM is the kernel's own peak, read often (cheap) so that workers that
    exit early still count. PSS needs a walk of every mapping: it is read
    once a second, which costs the daemons under test little CPU.
    """

    def __init__(self, pid: int, interval: float = 0.25, pss_every: int = 4):
        self.pid, self.interval, self.pss_every = pid, interval, pss_every
        self.hwm: dict[int, int] = {}
        self.peak_pss = 0
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self, pss: bool = True) -> None:
        total = 0
        for p in process_tree(self.pid):
            self.hwm[p] = max(self.hwm.get(p, 0), _status_kb(p, "VmHWM"))
            if pss:
                total += _pss_kb(p)
        self.peak_pss = max(self.peak_pss, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample(pss=self._samples % self.pss_every == 0)
            self._samples += 1
            self._stop.wait(self.interval)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {"peak RSS MB (sum of VmHWM)": sum(self.hwm.values()) / 1024,
                "peak PSS MB": self.peak_pss / 1024, "processes": len(self.hwm)}


# -- runs -------------------------------------------------------------------------------

_INSTREAM_LINE = re.compile(
    r"messages/s (?P<mps>[\d.]+)\s+MB/s (?P<mbs>[\d.]+)\s+p50_ms (?P<p50>[\d.]+)\s+"
    r"p99_ms (?P<p99>[\d.]+)\s+found (?P<found>\d+)\s+errors (?P<errors>\d+)")


def run_instream(shared: Path, daemon, corpus: Path, clients: int, rounds: int) -> dict:
    out = subprocess.run([sys.executable, str(shared / "bench_instream.py"), daemon.unix, str(corpus),
                          str(clients), str(rounds)], capture_output=True, text=True, timeout=7200)
    match = _INSTREAM_LINE.search(out.stdout)
    if not match:
        raise RuntimeError(f"bench_instream.py said:\n{out.stdout}\n{out.stderr}")
    return {"messages/s": float(match["mps"]), "MB/s": float(match["mbs"]),
            "p50 ms": float(match["p50"]), "p99 ms": float(match["p99"]),
            "found": int(match["found"]), "errors": int(match["errors"]),
            "error lines": [line for line in out.stdout.splitlines() if line.startswith("error:")][:3],
            "found files": next((line.split()[1:] for line in out.stdout.splitlines()
                                 if line.startswith("found:")), [])}


def run_multiscan(daemon, directory: Path, limit: float) -> dict:
    """Seconds for MULTISCAN of the directory; given up (and reported so) after `limit` seconds."""
    started = time.perf_counter()
    reply = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(daemon.unix)
        s.sendall(b"zMULTISCAN " + str(directory).encode() + b"\0")
        while (left := started + limit - time.perf_counter()) > 0:
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                elapsed = time.perf_counter() - started
                files = sum(1 for f in directory.iterdir() if f.name.startswith("f"))
                return {"MULTISCAN s": elapsed, "files/s": files / elapsed,
                        "reply": bytes(reply[-120:]).decode(errors="replace")}
            reply += chunk
    return {"MULTISCAN s": f">{limit:g}", "files/s": "", "reply": "(not finished)"}


def bench_one(name: str, db: Path, args, shared: Path, corpus: Path, many: Path | None) -> dict:
    root = args.workdir / "run"
    shutil.rmtree(root / name, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    options = {"DatabaseDirectory": db.resolve(), "DisableCache": "yes", "SelfCheck": 0,
               "StreamMaxLength": "100M", "CommandReadTimeout": 60, "ReadTimeout": 300}
    started = time.perf_counter()
    daemon = start_daemon(name, root, options)
    meter = MemoryMeter(daemon.proc.pid)
    try:
        wait_ready(daemon, timeout=1800)
        result = {"daemon": name, "database": db.name, "ready s": time.perf_counter() - started}
        result.update(run_instream(shared, daemon, corpus, args.clients, args.rounds))
        print(f"   INSTREAM: {json.dumps(result)}", flush=True)
        if many is not None:
            result.update(run_multiscan(daemon, many, args.multiscan_limit))
        result.update(meter.stop())
    finally:
        if not meter.stopped:
            meter.stop()
        daemon.stop()
    return result


def print_table(results: list[dict]) -> None:
    columns = ["database", "daemon", "ready s", "messages/s", "MB/s", "p50 ms", "p99 ms", "found", "errors",
               "peak RSS MB (sum of VmHWM)", "peak PSS MB", "MULTISCAN s", "files/s"]
    widths = {c: max(len(c), 10) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in results:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cells.append((f"{v:.1f}" if isinstance(v, float) else str(v)).rjust(widths[c]))
        print("  ".join(cells))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/clammail-bench"))
    p.add_argument("--shared", default=None, help="the shared/ folder (default: found beside the repository)")
    p.add_argument("--databases", default="small,big")
    p.add_argument("--daemons", default="clamd,clammail")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--multiscan-files", type=int, default=10000)
    p.add_argument("--multiscan-limit", type=float, default=900,
                   help="seconds after which MULTISCAN is given up and reported as not finished")
    p.add_argument("--scale", type=float, default=1.0, help="mkdb.py's SCALE for the big database")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.workdir.chmod(0o755)
    shared = find_shared(args.shared)
    corpus = ensure_corpus(args.workdir, shared)
    many = ensure_many_files(args.workdir, args.multiscan_files) if args.multiscan_files else None
    databases = {"small": SMALL_DB}
    if "big" in args.databases.split(","):
        databases["big"] = ensure_big_db(args.workdir, shared, args.scale)
    results = []
    for label in args.databases.split(","):
        for name in args.daemons.split(","):
            print(f"-- {name} on the {label} database ...", flush=True)
            result = bench_one(name, databases[label], args, shared, corpus, many)
            result["database"] = label
            results.append(result)
            print(json.dumps(result), flush=True)
    print()
    print_table(results)
    out = args.workdir / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"command": " ".join(sys.argv), "clients": args.clients, "rounds": args.rounds,
                               "results": results}, indent=2))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
