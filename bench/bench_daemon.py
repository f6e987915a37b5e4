#!/usr/bin/env python3
"""clamd 1.4.6 and `clammail daemon` side by side: INSTREAM throughput, latency, memory.

Usage:
    bench/bench_daemon.py DATABASE_DIR CORPUS_DIR [--clients 4] [--rounds 1]
                          [--multiscan-files 10000]

Starts both daemons on the same database with the same clamd.conf
(DisableCache yes, so every message is really scanned), streams every file
of the corpus to each with INSTREAM from N concurrent clients, and prints
messages/s, MB/s, p50/p99 latency and the peak RSS of each daemon (with its
worker processes). With --multiscan-files it also times MULTISCAN of a
directory of that many small files. The corpus is typically the one
../shared/bench/mkcorpus.py writes; the database the small test database or
the one ../shared/bench/mkdb.py writes.

Numbers from a shared development machine are preliminary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from clamd_harness import start_daemon, wait_ready  # noqa: E402


def rss_of_tree(pid: int) -> int:
    """RSS of a process and its children, in bytes."""
    total = 0
    pids = [pid]
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            pids.append(int(child))
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


class PeakRss:
    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_of_tree(self.pid))
            time.sleep(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def instream(unix: str, data: bytes) -> tuple[float, bytes]:
    started = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(300)
        s.connect(unix)
        s.sendall(b"zINSTREAM\0")
        for i in range(0, len(data), 65536):
            piece = data[i:i + 65536]
            s.sendall(struct.pack(">I", len(piece)) + piece)
        s.sendall(struct.pack(">I", 0))
        reply = b""
        while not reply.endswith(b"\0"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return time.perf_counter() - started, reply


def run_instream(daemon, corpus: list[bytes], clients: int, rounds: int) -> dict:
    jobs = corpus * rounds
    meter = PeakRss(daemon.proc.pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda d: instream(daemon.unix, d), jobs))
    elapsed = time.perf_counter() - started
    peak = meter.stop()
    latencies = sorted(r[0] for r in results)
    found = sum(b"FOUND" in r[1] for r in results)
    errors = sum(b"ERROR" in r[1] for r in results)
    size = sum(len(d) for d in jobs)
    return {
        "messages/s": len(jobs) / elapsed, "MB/s": size / elapsed / 1e6,
        "p50 ms": latencies[len(latencies) // 2] * 1000,
        "p99 ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "found": found, "errors": errors, "peak RSS MB": peak / 1e6,
    }


def run_multiscan(daemon, directory: Path) -> dict:
    started = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(900)
        s.connect(daemon.unix)
        s.sendall(b"zMULTISCAN " + str(directory).encode() + b"\0")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return {"MULTISCAN s": time.perf_counter() - started, "reply": reply[-80:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("database")
    p.add_argument("corpus")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--multiscan-files", type=int, default=0)
    args = p.parse_args()
    corpus = [f.read_bytes() for f in sorted(Path(args.corpus).rglob("*")) if f.is_file()]
    root = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    root.chmod(0o755)
    options = {"DatabaseDirectory": os.path.abspath(args.database), "DisableCache": "yes",
               "SelfCheck": 0, "StreamMaxLength": "100M", "MaxThreads": 12}
    many = None
    if args.multiscan_files:
        many = root / "many"
        many.mkdir()
        for i in range(args.multiscan_files):
            (many / f"f{i:05d}.txt").write_bytes(b"small file %d\n" % i * 20)
    try:
        for name in ("clamd", "clammail"):
            daemon = start_daemon(name, root, options)
            try:
                wait_ready(daemon, timeout=600)
                result = run_instream(daemon, corpus, args.clients, args.rounds)
                line = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in result.items())
                print(f"{name}: {len(corpus) * args.rounds} messages, {args.clients} clients: {line}")
                if many is not None:
                    ms = run_multiscan(daemon, many)
                    print(f"{name}: MULTISCAN of {args.multiscan_files} files: "
                          f"{ms['MULTISCAN s']:.2f} s, reply ends {ms['reply']!r}")
            finally:
                daemon.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
