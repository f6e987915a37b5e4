"""`clammail milter`: a drop-in for clamav-milter, on pymilter, in front of any clamd-protocol daemon.

    clammail milter [-c FILE] [--foreground] [--debug]

Reads clamav-milter.conf as it is, or the `milter` section of the YAML file.
Start-up follows clamav-milter: read the configuration, open the log,
chroot, create the milter socket (mode 000, then MilterSocketGroup and
MilterSocketMode), detach unless Foreground, write the PidFile, drop to
User, then serve.

libmilter runs in a thread of its own and answers the MTA from one thread
per connection; the main thread only handles signals (Linux gives a
process's signals to the main thread when it does not block them, and
libmilter blocks them in its threads): SIGTERM and SIGINT defer new
messages (4xx) and let the messages in flight finish (ShutdownTimeout)
before the process leaves; SIGHUP reopens the log file.
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import sys
import threading
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
from clammail.service.sockets import remove_stale_socket, set_socket_access
from clammail.service.startup import start_service

CONFIG_CANDIDATES = ("/etc/clammail/clammail.yaml", "/etc/clammail/clamav-milter.conf")
REPLY_GRACE = 0.5  # seconds libmilter gets to send the last replies before the process exits
MILTER_NAME = "clammail"

HELP = """\
                       Clam AntiVirus: Milter Mail Scanner (clammail {version})

    clammail milter [-c <config-file>]

    --help                   -h             Show this help
    --version                -V             Show version
    --config-file <file>     -c             Read configuration from file: clamav-milter.conf
                                            syntax, or the milter section of a YAML file
                                            (default: {default})
    --pid=FILE               -p FILE        Write the daemon's pid to FILE
    --foreground             -F             Stay in the foreground (Foreground yes)
    --debug                                 Log debug messages
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clammail milter", add_help=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("-V", "--version", action="store_true")
    p.add_argument("-c", "--config-file", default=None)
    p.add_argument("-p", "--pid", default=None)
    p.add_argument("-F", "--foreground", action="store_true")
    p.add_argument("--debug", action="store_true")
    return p


def default_config_path() -> str:
    return next((c for c in CONFIG_CANDIDATES if os.path.exists(c)), CONFIG_CANDIDATES[0])


def main(argv: list[str]) -> int:
    args, rest = build_parser().parse_known_args(argv)
    for extra in rest:
        sys.stderr.write(f"WARNING: Ignoring option {extra}\n")
    if args.help:
        sys.stdout.write(HELP.format(version=__version__, default=default_config_path()))
        return 0
    if args.version:
        print(f"clammail-milter {__version__}")
        return 0
    from clammail.milter.settings import MilterSettings, load_config

    path = args.config_file or default_config_path()

    def load():
        config = load_config(path)
        if args.pid:
            config.values["PidFile"] = args.pid
        if args.foreground:
            config.values["Foreground"] = True
        return MilterSettings.from_config(config)

    return start_service(path, load, _run, ident="clammail-milter", debug=args.debug)


def _run(settings, log: ServiceLog, foreground: bool) -> int:
    import milter

    from clammail.mailfilter.metrics import Metrics
    from clammail.milter.app import MilterService, connection_class

    config = settings.config
    log.info(f"+++ Started at {time.strftime('%a %b %d %H:%M:%S %Y')}")
    if config["Chroot"]:
        try:
            os.chdir(config["Chroot"])
            os.chroot(config["Chroot"])
        except OSError:
            raise StartError(f"chroot to {config['Chroot']} failed. Are you root?") from None
    metrics = Metrics("milter") if settings.metrics_listen else None
    service = MilterService(settings, log, metrics)
    connection = connection_class(settings)
    connection.service = service
    _register(milter, connection)
    milter.setconn(settings.socket)
    if settings.socket_path:
        remove_stale_socket(settings.socket_path, bool(config["FixStaleSocket"]), log)
    saved_umask = os.umask(0o777)  # the socket is created with 000 to avoid races
    try:
        milter.opensocket(False)
    except milter.error:
        raise StartError(f"Failed to create socket {config['MilterSocket']}") from None
    finally:
        os.umask(saved_umask)
    if settings.socket_path:
        try:
            _give_socket(settings.socket_path, config, saved_umask)
        except StartError:
            remove_file(settings.socket_path)
            raise
    log.info(f"Milter socket {settings.socket}")
    tell_parent = daemonize() if not foreground else no_wait
    write_pid_file(config["PidFile"], log)
    drop_privileges(config["User"], log, own_files=(config["LogFile"],))
    if metrics is not None:
        try:
            metrics.serve(settings.metrics_listen)
        except (OSError, ValueError) as exc:
            raise StartError(f"MetricsListen {settings.metrics_listen}: {exc}") from None
        log.info(f"Metrics on http://{settings.metrics_listen}/metrics")
    service.pool.start_probing()
    return _serve(milter, service, settings, log, tell_parent)


def _give_socket(path: str, config, umask: int) -> None:
    """The unix socket's group, mode and owner, as clamav-milter sets them."""
    set_socket_access(path, config["MilterSocketGroup"], config["MilterSocketMode"],
                      default_mode=0o777 & ~umask, mode_option="MilterSocketMode")
    user = config["User"]
    if user and os.geteuid() == 0:
        try:
            os.chown(path, pwd.getpwnam(user).pw_uid, -1)
        except (KeyError, OSError):
            raise StartError(f"Failed to change socket ownership to user {user}") from None


def _register(milter, factory) -> None:
    """Tell libmilter which callbacks we have and what we may change (clamav-milter's flags)."""
    import Milter

    Milter.factory = factory
    milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.QUARANTINE)
    milter.set_exception_policy(Milter.TEMPFAIL)  # our own bug never passes a message
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    milter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    milter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    milter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    milter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    milter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    milter.set_close_callback(Milter.close_callback)
    negotiate = Milter.negotiate_callback if milter.getversion() >= (1, 0, 1) else None
    milter.register(MILTER_NAME, data=lambda ctx: ctx.getpriv().data(), negotiate=negotiate)


def _serve(milter, service, settings, log: ServiceLog, tell_parent) -> int:
    wake = threading.Event()
    requested: list[str] = []  # signals to act on, in order

    def on_signal(signum, frame):
        requested.append(signal.Signals(signum).name)
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    failure: list[BaseException] = []

    def run_libmilter():
        try:
            milter.main()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
        finally:
            wake.set()

    worker = threading.Thread(target=run_libmilter, name="libmilter", daemon=True)
    worker.start()
    log.info(f"clammail milter {__version__} ready: {len(settings.backends)} backend(s)")
    sd_notify("READY=1")
    tell_parent(True)
    why = ""
    while not why:
        wake.wait()
        wake.clear()
        while requested:
            name = requested.pop(0)
            if name == "SIGHUP":
                log.reopen()
            else:
                why = f"{name} caught"
        if not why and not worker.is_alive():
            why = "libmilter stopped"
    sd_notify("STOPPING=1")
    log.info(f"{why}: no new connections; finishing the messages in flight")
    # New messages get a 4xx from now on, while those in flight finish.
    # libmilter's own stop (smfi_stop) is not used: it abandons the sessions
    # in flight. Connections still open when we leave are closed with the
    # process, and the MTA applies milter_default_action (tempfail) to them.
    service.stop_accepting()
    left = service.wait_idle(settings.shutdown_timeout)
    # A message counts as done when its end-of-message callback returns;
    # libmilter writes the reply just after. Give it a moment to do so.
    time.sleep(REPLY_GRACE)
    if left:
        log.warning(f"{left} message(s) still in flight after {settings.shutdown_timeout:g} s:"
                    " the MTA gets no verdict for them and keeps them (milter_default_action)")
    service.pool.stop()
    if settings.socket_path:
        remove_file(settings.socket_path)
    remove_file(settings.config["PidFile"])
    code = 0
    if failure or why == "libmilter stopped":
        log.error(f"libmilter stopped unexpectedly: {failure[0] if failure else 'no reason given'}")
        code = 1
    log.info(f"--- Stopped at {time.strftime('%a %b %d %H:%M:%S %Y')}")
    log.close()
    # libmilter's connection threads may still hold the interpreter: leave
    # without running Python's finalization under them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
