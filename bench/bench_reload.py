#!/usr/bin/env python3
"""Memory across reloads: clamd 1.4.6 and `clammail daemon` on the same database.

Usage:
    .venv/bin/python bench/bench_reload.py [--db DIR] [--reloads 4]
        [--daemons clamd,clammail] [--workdir /tmp/clammail-bench-reload]

Each daemon in turn is started on DIR (default: ../shared/bench/mkdb.py's
3.1M-signature database, made under WORKDIR on the first run) and left idle;
then RELOAD is sent RELOADS times, each once the reload before it has
finished and its old database is gone (clamd: "Activating the newly loaded
database" in its log; clammail: "Database correctly reloaded" and the old
generation's processes ended), plus a few seconds to settle. After the start
and after each reload it prints the summed PSS of the daemon's process tree
(shared pages divided among the processes that share them), the daemon
process's own RSS, and how many processes the tree has; and the peak of the
summed PSS during each reload (sampled every 0.5 s). clammail keeps its
compiled-database cache in WORKDIR (a reload of unchanged files maps it, as
a restart does). The raw lines go to stdout; redirect them to
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from clamd_harness import exchange, start_daemon, wait_ready  # noqa: E402

MKDB = REPO.parent / "shared" / "bench" / "mkdb.py"
if not MKDB.exists():
    MKDB = Path("/work/shared/bench/mkdb.py")
RELOADED = {"clamd": "Activating the newly loaded database", "clammail": "Database correctly reloaded"}
SETTLE = 5.0  # seconds after a reload before the sample: freed memory shows in /proc


def tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        pids += tree(int(child))
    return pids


def field_kb(path: str, name: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(pid: int) -> dict:
    pids = tree(pid)
    return {
        "pss_mb": round(sum(field_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids) / 1024, 1),
        "daemon_rss_mb": round(field_kb(f"/proc/{pid}/status", "VmRSS") / 1024, 1),
        "processes": len(pids),
    }


class PeakMeter:
    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sample(self.pid)["pss_mb"])
            self._stop.wait(0.5)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def ensure_db(workdir: Path) -> Path:
    db = workdir / "bigdb-1"
    if not (db / ".complete").exists():
        subprocess.run([sys.executable, str(MKDB), str(db), "1.0"], check=True)
        (db / ".complete").write_text("")
    return db


def reloads_logged(name: str, d) -> int:
    try:
        return d.log.read_text(errors="replace").count(RELOADED[name])
    except OSError:
        return 0


def settled(name: str, d, reloads: int) -> bool:
    if reloads_logged(name, d) < reloads:
        return False
    if name == "clammail":
        # The daemon, one loader, its workers: no retired generation left.
        loaders = Path(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children").read_text().split()
        return len(loaders) == 1
    return True


def run(name: str, db: Path, workdir: Path, reloads: int) -> list[dict]:
    root = workdir / "run"
    root.mkdir(parents=True, exist_ok=True)
    d = start_daemon(name, root, {"DatabaseDirectory": db, "SelfCheck": 0})
    rows = []
    try:
        started = time.monotonic()
        wait_ready(d, timeout=900)
        print(f"{name}: ready after {time.monotonic() - started:.1f} s", flush=True)
        time.sleep(SETTLE)
        rows.append({"daemon": name, "step": "start", **sample(d.proc.pid)})
        print(json.dumps(rows[-1]), flush=True)
        before = reloads_logged(name, d)  # a log kept from an earlier run
        for n in range(1, reloads + 1):
            meter = PeakMeter(d.proc.pid)
            began = time.monotonic()
            assert exchange(("unix", d.unix), b"zRELOAD\0") == b"RELOADING\0"
            deadline = began + 900
            while not settled(name, d, before + n) and time.monotonic() < deadline:
                time.sleep(0.2)
            took = time.monotonic() - began
            time.sleep(SETTLE)
            peak = meter.stop()
            rows.append({"daemon": name, "step": f"reload {n}", **sample(d.proc.pid),
                         "peak_pss_mb": peak, "reload_s": round(took, 1)})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        d.stop()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", type=Path)
    p.add_argument("--reloads", type=int, default=4)
    p.add_argument("--daemons", default="clamd,clammail")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/clammail-bench-reload"))
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.db or ensure_db(args.workdir)
    print(f"database: {db}; uptime: {os.getloadavg()}", flush=True)
    rows = []
    for name in args.daemons.split(","):
        rows += run(name, db, args.workdir, args.reloads)
    print(f"uptime: {os.getloadavg()}")
    print(f"{'daemon':9} {'step':9} {'tree PSS MB':>11} {'peak PSS MB':>11} {'daemon RSS MB':>13} "
          f"{'processes':>9} {'reload s':>8}")
    for row in rows:
        print(f"{row['daemon']:9} {row['step']:9} {row['pss_mb']:11.1f} {row.get('peak_pss_mb', 0):11.1f} "
              f"{row['daemon_rss_mb']:13.1f} {row['processes']:9d} {row.get('reload_s', 0):8.1f}")


if __name__ == "__main__":
    main()
