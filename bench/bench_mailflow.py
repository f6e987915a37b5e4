#!/usr/bin/env python3
"""Mail through Postfix with a virus filter: clammail's milter and proxy beside ClamAV's tools.

Usage:
    .venv/bin/python bench/bench_mailflow.py [--databases small,big] [--parts milter,proxy]
        [--count 500] [--clients 4] [--runs 1] [--workdir /tmp/clammail-bench]

For each database (small: the bundled test signatures plus EICAR; big:
../shared/bench/mkdb.py's 3.1M signatures), clamd 1.4.6 and clammail's
daemon are started on it with DisableCache (each configuration sends the
same corpus; a clean cache would favour whoever comes second), and then,
one configuration at a time, a private Postfix (bench_smtp_postfix.py)
receives the corpus of mkcorpus.py from CLIENTS concurrent SMTP clients
(../shared/bench/bench_smtp.py):

    milter: clamav-milter + clamd, clammail milter + clamd, clammail milter + clammail daemon
            (smtpd_milters, OnInfected Reject: infected mail is refused in the dialogue)
    proxy:  clamsmtp + clamd, clammail proxy + clamd, clammail proxy + clammail daemon
            (after-queue content_filter; infected mail dropped: clamsmtp's Action drop,
            the proxy's OnInfected Blackhole), counted as delivered messages per second

Prints one line per configuration and the raw bench_smtp.py output; with
--results FILE appends everything to FILE (bench/results/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
from bench_daemon import SMALL_DB, ensure_big_db, ensure_corpus, find_shared  # noqa: E402
from bench_smtp_postfix import bench_postfix, corpus_subset  # noqa: E402
from clamd_harness import EICAR, free_port, make_root, start_daemon, wait_ready  # noqa: E402
from milter_harness import start_milter, stop_all  # noqa: E402
from proxy_harness import start_proxy  # noqa: E402


def start_backends(root: Path, db: Path):
    """clamd and clammail's daemon on one database directory."""
    options = {"DatabaseDirectory": db, "SelfCheck": 0, "DisableCache": "yes",
               "MaxThreads": 4, "StreamMaxLength": "60M"}
    clamd = start_daemon("clamd", root, options)
    ours = start_daemon("clammail", root, options)
    try:
        wait_ready(clamd, timeout=300)
        wait_ready(ours, timeout=300)
    except Exception:
        clamd.stop()
        ours.stop()
        raise
    return clamd, ours


@contextlib.contextmanager
def clamsmtp(root: Path, listen: int, out: int, clamd_socket: str):
    """clamsmtp 1.10 in the foreground: scans with clamd, drops infected mail."""
    work = root / f"clamsmtp-{listen}"
    work.mkdir(exist_ok=True)
    (work / "tmp").mkdir(exist_ok=True)
    work.chmod(0o777)
    (work / "tmp").chmod(0o777)
    conf = work / "clamsmtpd.conf"
    conf.write_text(f"OutAddress: 127.0.0.1:{out}\nListen: 127.0.0.1:{listen}\n"
                    f"ClamAddress: {clamd_socket}\nTempDirectory: {work / 'tmp'}\n"
                    "Action: drop\nHeader: X-Virus-Scanned: ClamAV using ClamSMTP\n"
                    "MaxConnections: 64\nTimeOut: 180\n")
    proc = subprocess.Popen(["clamsmtpd", "-d", "1", "-f", str(conf), "-p", str(work / "pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def in_turn(configurations: list, attempt: int) -> list:
    """Every other run goes the other way round: nobody always runs first (on a cold machine)."""
    return configurations if attempt % 2 == 0 else configurations[::-1]


def milter_runs(root, clamd, ours, corpus, clients, attempt):
    options = {"OnInfected": "Reject", "AddHeader": "Replace", "MaxFileSize": "25M",
               "ReadTimeout": 300}
    for name, kind, backend in in_turn([("clamav-milter + clamd", "clamav-milter", clamd),
                                        ("clammail milter + clamd", "clammail", clamd),
                                        ("clammail milter + clammail daemon", "clammail", ours)],
                                       attempt):
        milter = start_milter(kind, root, {**options, "ClamdSocket": f"unix:{backend.unix}"},
                              name=f"bench-{kind}-{backend.name}")
        try:
            yield name, bench_postfix(corpus, milters=[f"unix:{milter.socket}"], clients=clients)
        finally:
            stop_all(milter)


def proxy_runs(root, clamd, ours, corpus, clients, attempt):
    for name, backend in in_turn([("clamsmtp + clamd", clamd), ("clammail proxy + clamd", clamd),
                                  ("clammail proxy + clammail daemon", ours)], attempt):
        port = free_port()
        started = []

        def start_filter(postfix, name=name, backend=backend, port=port, started=started):
            reinject = postfix.port("reinject")
            if name.startswith("clamsmtp"):
                manager = clamsmtp(root, port, reinject, backend.unix)
                manager.__enter__()
                started.append(lambda: manager.__exit__(None, None, None))
            else:
                proxy = start_proxy(root, {
                    "Listen": f"127.0.0.1:{port}", "NextHop": f"127.0.0.1:{reinject}",
                    "ClamdSocket": [f"unix:{backend.unix}"], "OnInfected": "Blackhole",
                    "DKIMVerify": False, "LogMessageSummary": False}, name=f"bench-proxy-{port}")
                started.append(proxy.stop)

        try:
            yield name, bench_postfix(corpus, content_filter_port=port, clients=clients,
                                      before_run=start_filter)
        finally:
            for stop in started:
                stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--databases", default="small,big")
    p.add_argument("--parts", default="milter,proxy")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/clammail-bench"))
    p.add_argument("--results", type=Path, default=None, help="append the raw output here")
    p.add_argument("--shared", default=None)
    args = p.parse_args()
    shared = find_shared(args.shared)
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = corpus_subset(ensure_corpus(args.workdir, shared), args.count, args.workdir)
    lines = [f"### {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}  "
             f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
             f"$ {' '.join(sys.argv)}"]
    print("\n".join(lines), flush=True)
    for database in args.databases.split(","):
        root = make_root()
        if database == "small":
            db = root / "smalldb"
            shutil.copytree(SMALL_DB, db)
            (db / "eicar.ndb").write_text(f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n")
        else:
            db = ensure_big_db(args.workdir, shared, args.scale)
        clamd, ours = start_backends(root, db)
        try:
            for part in args.parts.split(","):
                runs = milter_runs if part == "milter" else proxy_runs
                for attempt in range(args.runs):
                    for name, result in runs(root, clamd, ours, corpus, args.clients, attempt):
                        summary = {
                            "database": database, "part": part, "run": attempt + 1,
                            "configuration": name, "smtp_msg_s": result.messages_per_s,
                            "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
                            "replies": result.replies, "delivered": result.delivered,
                            "delivered_per_s": result.delivered_per_s}
                        text = result.output.strip() + "\n" + json.dumps(summary)
                        print(f"[{database} {part} run {attempt + 1}] {name}\n{text}", flush=True)
                        lines.append(f"[{database} {part} run {attempt + 1}] {name}\n{text}")
        finally:
            clamd.stop()
            ours.stop()
            shutil.rmtree(root, ignore_errors=True)
    if args.results:
        with open(args.results, "a") as fh:
            fh.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
