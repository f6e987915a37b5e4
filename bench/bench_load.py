#!/usr/bin/env python3
"""Database load time and peak memory: clammail (cold, and from its cache) beside clamd 1.4.6.

Usage: bench_load.py [DBDIR] [--runs N] [--no-clamd] [--update]
DBDIR defaults to a fresh `mkdb.py DBDIR 1.0` directory (2M MD5 + 1M SHA256
hash signatures, 100k body signatures) under /tmp. clamd is started in the
foreground with a temporary clamd.conf pointing at DBDIR and timed until its
socket answers PING. clammail loads the same directory in a fresh process
each run and builds its `Engine` (the body matcher, hyperscan's compile
included): what it needs before it can answer a scan. Three runs: cold (no
cache), filling the compiled-database cache, and from the cache.

`--update` adds a database update: DBDIR's files (hard links) plus a
daily.ndb (2 000 body signatures in mkdb.py's style) and daily.hdb (20 000
hashes); the cache is filled with one version of the daily files, then they
are replaced by another and clammail loads with that cache
(`clammail_after_update`: the per-file cache gives DBDIR's files, the
hyperscan chunk cache most of the compiled matcher), beside clamd loading
the updated directory (`clamd_after_update`, which always loads all).

Memory: `peak_mb` is VmHWM of the main process (clamd has only that one).
clammail forks helpers while loading (hash files, hyperscan chunks), so
`tree_peak_mb` adds up the proportional set size (PSS: shared pages split
between the processes sharing them) of the process and all its children,
sampled every 20 ms: the memory the load really takes from the machine.
`cpu_s` is user+system CPU of the process and its children.
Numbers on a busy shared machine are preliminary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MKDB = os.path.join(REPO, "..", "shared", "bench", "mkdb.py")
if not os.path.exists(MKDB):
    MKDB = "/work/shared/bench/mkdb.py"

CHILD = r"""
import json, resource, sys, time
start = time.monotonic()
from clammail.engine.scanner import Engine, ScanOptions
from clammail.signatures.loader import load_database
db = load_database([sys.argv[1]], cache_dir=sys.argv[2] or None)
loaded = time.monotonic() - start
engine = Engine(db, ScanOptions())
elapsed = time.monotonic() - start
status = {l.split(":")[0]: l.split()[1] for l in open("/proc/self/status") if l[:2] == "Vm"}
own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"seconds": elapsed, "load_seconds": loaded,
                  "cpu_s": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime,
                  "peak_mb": int(status["VmHWM"]) / 1024, "rss_mb": int(status["VmRSS"]) / 1024,
                  "signatures": db.info.signatures, "backend": engine.matcher.backend_name}))
"""


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for task in found:
        try:
            with open(f"/proc/{task}/task/{task}/children") as fh:
                found.extend(int(child) for child in fh.read().split())
        except OSError:
            pass
    return found


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Peak of the summed PSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(_pss_kb(pid) for pid in _descendants(self.pid))
            self.peak_kb = max(self.peak_kb, total)
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


def clammail_load(dbdir: str, cache_dir: str | None, source: str = REPO) -> dict:
    env = dict(os.environ, PYTHONPATH=source)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, dbdir, cache_dir or ""],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=source, env=env)
    memory = TreeMemory(proc.pid)
    out, err = proc.communicate()
    tree = memory.stop()
    if proc.returncode:
        raise RuntimeError(f"clammail load failed: {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["tree_peak_mb"] = tree
    return result


def _ping(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(path)
            sock.sendall(b"zPING\0")
            return sock.recv(16).startswith(b"PONG")
    except OSError:
        return False


def clamd_load(dbdir: str, timeout: float = 300) -> dict:
    clamd = shutil.which("clamd") or "/usr/sbin/clamd"
    with tempfile.TemporaryDirectory(prefix="bench-clamd-") as work:
        sock = os.path.join(work, "clamd.sock")
        conf = os.path.join(work, "clamd.conf")
        with open(conf, "w") as fh:
            fh.write(f"DatabaseDirectory {dbdir}\nLocalSocket {sock}\nForeground yes\n"
                     f"LogFile {work}/clamd.log\nPidFile {work}/clamd.pid\n"
                     "ConcurrentDatabaseReload no\nSelfCheck 0\n")
        start = time.monotonic()
        proc = subprocess.Popen([clamd, "-c", conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        memory = TreeMemory(proc.pid)
        try:
            while not _ping(sock):
                if proc.poll() is not None:
                    raise RuntimeError(f"clamd exited: {proc.stderr.read().decode()[-500:]}")
                if time.monotonic() - start > timeout:
                    raise RuntimeError("clamd did not answer in time")
                time.sleep(0.05)
            elapsed = time.monotonic() - start
            with open(f"/proc/{proc.pid}/status") as fh:
                status = {k: v.split()[0] for k, _, v in (line.partition(":") for line in fh)
                          if v.split()}
            with open(f"/proc/{proc.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            return {"seconds": elapsed, "peak_mb": int(status["VmHWM"]) / 1024,
                    "rss_mb": int(status["VmRSS"]) / 1024, "tree_peak_mb": memory.stop(),
                    "cpu_s": (int(fields[11]) + int(fields[12])) / ticks}
        finally:
            memory.stop()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _write_daily(directory: str, version: int) -> None:
    """daily.ndb and daily.hdb of one version (a different seed each)."""
    import importlib.util
    import random

    spec = importlib.util.spec_from_file_location("mkdb", MKDB)
    mkdb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mkdb)
    rng = random.Random(1000 + version)
    with open(os.path.join(directory, "daily.ndb"), "w") as fh:
        for i in range(2000):
            fh.write(f"Daily{version}.Body-{i}:0:*:{mkdb.hexsig(rng)}\n")
    with open(os.path.join(directory, "daily.hdb"), "w") as fh:
        for i in range(20000):
            fh.write(f"{rng.randbytes(16).hex()}:{rng.randint(100, 5000000)}:"
                     f"Daily{version}.Hash-{i}\n")


def update_run(dbdir: str, clamd: bool) -> dict:
    """Load after a daily update, with the cache of the version before."""
    work = tempfile.mkdtemp(prefix="bench-update-")
    cache_dir = tempfile.mkdtemp(prefix="bench-cache-")
    try:
        updated = os.path.join(work, "db")
        os.mkdir(updated)
        for name in os.listdir(dbdir):
            os.link(os.path.join(dbdir, name), os.path.join(updated, name))
        _write_daily(updated, 1)
        fill = clammail_load(updated, cache_dir)
        _write_daily(updated, 2)
        run = {"clammail_fill_before_update": fill,
               "clammail_after_update": clammail_load(updated, cache_dir)}
        if clamd:
            run["clamd_after_update"] = clamd_load(updated)
        return run
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dbdir", nargs="?")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-clamd", action="store_true")
    parser.add_argument("--update", action="store_true",
                        help="also time a load after a daily update, with the cache before it")
    parser.add_argument("--baseline", metavar="SRC",
                        help="also time the clammail source tree SRC (e.g. `git archive main`"
                             " unpacked there), cold, for a before/after in one run")
    args = parser.parse_args()
    made = None
    dbdir = args.dbdir
    if dbdir is None:
        made = dbdir = tempfile.mkdtemp(prefix="bench-db-")
        subprocess.run([sys.executable, MKDB, dbdir, "1.0"], check=True)
    cache_dir = tempfile.mkdtemp(prefix="bench-cache-")
    results = {"dbdir": dbdir, "loadavg": os.getloadavg(), "runs": []}
    try:
        for _ in range(args.runs):
            shutil.rmtree(cache_dir, ignore_errors=True)
            run = {}
            if args.baseline:
                run["baseline_cold"] = clammail_load(dbdir, None, os.path.abspath(args.baseline))
            run |= {"clammail_cold": clammail_load(dbdir, None),
                   "clammail_fill_cache": clammail_load(dbdir, cache_dir),
                   "clammail_cached": clammail_load(dbdir, cache_dir)}
            if not args.no_clamd:
                run["clamd"] = clamd_load(dbdir)
            if args.update:
                run |= update_run(dbdir, not args.no_clamd)
            results["runs"].append(run)
            for name, value in run.items():
                print(f"{name:20s} {value['seconds']:7.2f} s  cpu {value['cpu_s']:6.2f} s"
                      f"  peak {value['peak_mb']:5.0f} MB  tree peak (PSS)"
                      f" {value['tree_peak_mb']:5.0f} MB  rss after {value['rss_mb']:5.0f} MB",
                      flush=True)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        if made:
            shutil.rmtree(made, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
