"""`clammail proxy`: an SMTP content filter in front of any clamd-protocol daemon.

    clammail proxy [--config FILE] [--foreground] [--debug]

Reads the `proxy` section of the YAML file (config/clammail.yaml documents
every key). Start-up as the daemon's and the milter's: the log, the
listening socket (bound as root), detaching unless Foreground, the PidFile,
dropping to User, then serving. SIGTERM and SIGINT stop accepting
connections, answer new commands with 421, let the messages in flight
finish (ShutdownTimeout) and exit; SIGHUP reopens the log file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time

from clammail import __version__
from clammail.service.log import ServiceLog
from clammail.service.process import (
    StartError,
    daemonize,
    drop_privileges,
    no_wait,
    remove_file,
    sd_notify,
    write_pid_file,
)
from clammail.service.sockets import bind_tcp, bind_unix
from clammail.service.startup import start_service

DEFAULT_CONFIG = "/etc/clammail/clammail.yaml"
BACKLOG = 100

HELP = """\
                       clammail: SMTP content-filter proxy ({version})

    clammail proxy [--config FILE]

    --help                   -h             Show this help
    --version                -V             Show version
    --config FILE            -c FILE        The YAML file; its proxy section (default {default})
    --foreground             -F             Stay in the foreground (Foreground yes)
    --debug                                 Log debug messages
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clammail proxy", add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-V", "--version", action="store_true")
    p.add_argument("-c", "--config", "--config-file", dest="config", default=DEFAULT_CONFIG)
    p.add_argument("-F", "--foreground", action="store_true")
    p.add_argument("--debug", action="store_true")
    return p


def main(argv: list[str]) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if rest:
        sys.stderr.write(f"ERROR: Unknown option passed: {' '.join(rest)}\n")
        return 1
    if args.help:
        sys.stdout.write(HELP.format(version=__version__, default=DEFAULT_CONFIG))
        return 0
    if args.version:
        print(f"clammail-proxy {__version__}")
        return 0
    from clammail.proxy.settings import ProxySettings, load_config

    def load():
        config = load_config(args.config)
        if args.foreground:
            config.values["Foreground"] = True
        return ProxySettings.from_config(config)

    return start_service(args.config, load, _run, ident="clammail-proxy", debug=args.debug)


def _run(settings, log: ServiceLog, foreground: bool) -> int:
    config = settings.config
    log.info(f"+++ Started at {time.strftime('%a %b %d %H:%M:%S %Y')}")
    kind, where = settings.listen
    if kind == "unix":
        listener = bind_unix(where, group=None, mode="660", fix_stale=True, backlog=BACKLOG,
                             log=log)
    else:
        host, port = where
        sockets = bind_tcp(port, [host], BACKLOG, log)
        listener = sockets[0]
        for extra in sockets[1:]:
            extra.close()
    if settings.quarantine_directory:
        try:
            os.makedirs(settings.quarantine_directory, mode=0o750, exist_ok=True)
        except OSError as exc:
            raise StartError(f"QuarantineDirectory {settings.quarantine_directory}: "
                             f"{exc.strerror}") from None
    tell_parent = daemonize() if not foreground else no_wait
    write_pid_file(config["PidFile"], log)
    drop_privileges(config["User"], log, own_files=(config["LogFile"],),
                    own_dirs=(os.path.dirname(config["PidFile"] or ""),))
    try:
        asyncio.run(_serve(settings, log, listener, tell_parent))
    finally:
        listener.close()
        if kind == "unix":
            remove_file(where)
        remove_file(config["PidFile"])
        log.info(f"--- Stopped at {time.strftime('%a %b %d %H:%M:%S %Y')}")
        log.close()
    return 0


async def _serve(settings, log: ServiceLog, listener, tell_parent) -> None:
    from clammail.mailfilter.backends import BackendPool
    from clammail.mailfilter.metrics import Metrics
    from clammail.proxy.server import ProxyHandler, ProxySMTP

    logging.getLogger("mail.log").setLevel(logging.CRITICAL)  # aiosmtpd's own chatter
    metrics = Metrics("proxy") if settings.metrics_listen else None
    if metrics is not None:
        try:
            metrics.serve(settings.metrics_listen)
        except (OSError, ValueError) as exc:
            raise StartError(f"MetricsListen {settings.metrics_listen}: {exc}") from None
        log.info(f"Metrics on http://{settings.metrics_listen}/metrics")
    pool = BackendPool(list(settings.backends), timeout=settings.read_timeout,
                       probe_interval=settings.probe_interval, log=log,
                       on_change=metrics.backend_changed if metrics else None)
    pool.start_probing()
    handler = ProxyHandler(settings, pool, log, metrics)
    loop = asyncio.get_running_loop()

    def protocol():
        return ProxySMTP(handler, lmtp=settings.listen_lmtp, hostname=settings.hostname,
                         ident=f"clammail {__version__}",
                         data_size_limit=settings.max_message_size, enable_SMTPUTF8=True,
                         decode_data=False, timeout=settings.client_timeout)

    if listener.family == socket.AF_UNIX:
        server = await loop.create_unix_server(protocol, sock=listener)
    else:
        server = await loop.create_server(protocol, sock=listener)
    stop = asyncio.Event()
    why: list[str] = []

    def request_stop(name: str) -> None:
        why.append(name)
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, request_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, request_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, log.reopen)
    loop.add_signal_handler(signal.SIGPIPE, lambda: None)
    log.info(f"clammail proxy {__version__} ready: next hop {settings.next_hop}, "
             f"{len(settings.backends)} backend(s)")
    sd_notify("READY=1")
    tell_parent(True)
    await stop.wait()
    sd_notify("STOPPING=1")
    log.info(f"{why[0]} caught: no new connections; finishing the messages in flight")
    handler.stopping = True
    server.close()
    left = await handler.wait_idle(settings.shutdown_timeout)
    if left:
        log.warning(f"{left} message(s) still in flight after {settings.shutdown_timeout:g} s:"
                    " their senders get no reply and keep them")
    pool.stop()
