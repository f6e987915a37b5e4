#!/usr/bin/env python3
"""Database load time and peak memory: clammail (cold, and from its cache) beside clamd 1.4.6.

Usage: bench_load.py [DBDIR] [--runs N]
DBDIR defaults to a fresh `mkdb.py DBDIR 1.0` directory (2M MD5 + 1M SHA256
hash signatures, 100k body signatures) under /tmp. clamd is started in the
foreground with a temporary clamd.conf pointing at DBDIR and timed until its
socket answers PING; peak memory is VmHWM from /proc. clammail loads the
same directory in a fresh process each run (`load_database`), once without
and then with the compiled-database cache.
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MKDB = os.path.join(REPO, "..", "shared", "bench", "mkdb.py")

CHILD = r"""
import json, os, sys, time
start = time.monotonic()
from clammail.signatures.loader import load_database
db = load_database([sys.argv[1]], cache_dir=sys.argv[2] or None)
elapsed = time.monotonic() - start
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
print(json.dumps({"seconds": elapsed, "peak_mb": hwm / 1024, "rss_mb": rss / 1024,
                  "signatures": db.info.signatures, "skipped": len(db.info.skipped)}))
"""


def clammail_load(dbdir: str, cache_dir: str | None) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, dbdir, cache_dir or ""],
                          capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
            return {"seconds": elapsed, "peak_mb": int(status["VmHWM"]) / 1024,
                    "rss_mb": int(status["VmRSS"]) / 1024}
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dbdir", nargs="?")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-clamd", action="store_true")
    args = parser.parse_args()
    made = None
    dbdir = args.dbdir
    if dbdir is None:
        made = dbdir = tempfile.mkdtemp(prefix="bench-db-")
        subprocess.run([sys.executable, MKDB, dbdir, "1.0"], check=True)
    cache_dir = tempfile.mkdtemp(prefix="bench-cache-")
    results = {"dbdir": dbdir, "runs": []}
    try:
        for _ in range(args.runs):
            shutil.rmtree(cache_dir, ignore_errors=True)
            run = {"clammail_cold": clammail_load(dbdir, None),
                   "clammail_fill_cache": clammail_load(dbdir, cache_dir),
                   "clammail_cached": clammail_load(dbdir, cache_dir)}
            if not args.no_clamd:
                run["clamd"] = clamd_load(dbdir)
            results["runs"].append(run)
            for name, value in run.items():
                print(f"{name:20s} {value['seconds']:7.2f} s  peak {value['peak_mb']:7.0f} MB"
                      f"  rss {value['rss_mb']:7.0f} MB", flush=True)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
        if made:
            shutil.rmtree(made, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
