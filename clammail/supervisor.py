"""`clammail run`: the whole appliance in the foreground, one process per part.

    clammail run [-c FILE] [--datadir DIR] [--fallback-datadir DIR]

Starts the scan daemon, then the milter and the SMTP proxy on one YAML file
(its `daemon`, `milter` and `proxy` sections), each a `clammail` process of
its own in the foreground. A part is ready when it sends systemd's
readiness message (sd_notify READY=1) to a notification socket of its own,
exactly as under a Type=notify unit, so nothing here knows a part's
options; where a part listens is read from its open sockets in /proc. The
parts' log lines are shown prefixed with their names.

SIGINT (Ctrl-C), SIGTERM or SIGHUP (the terminal closed) stops the mail parts first and the daemon last,
so that messages in flight still get their verdicts; a second one kills
what is left. A part that exits on its own stops the others, and `clammail
run` exits 1. The parts run in a process group of their own (the terminal's
Ctrl-C reaches only the supervisor, which decides the order) and are
killed if the supervisor dies: with nobody reading their output they could
not log, and an MTA treats a milter or proxy that vanished as a temporary
failure, so no mail is lost.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

DEFAULT_CONFIG = "/etc/clammail/clammail.yaml"
# The bundled database loads in a second; a big --datadir with a cold cache
# (3.1M signatures: about 12 s here, plus the hyperscan compile) in minutes.
READY_TIMEOUT = 600.0
# The mail parts finish their messages in flight within their
# ShutdownTimeout (30 s by default); the daemon's in-flight scans get 10 s.
MAIL_STOP_TIMEOUT = 45.0
DAEMON_STOP_TIMEOUT = 20.0
PR_SET_PDEATHSIG = 1  # prctl(2)
LISTENING_UNIX = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags
TCP_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


@dataclass
class Part:
    name: str
    what: str  # the protocol it speaks, for the listening line
    argv: list[str]
    proc: subprocess.Popen | None = None
    notify: socket.socket | None = None
    ready: bool = False
    pending: bytes = b""  # the start of an output line not yet complete
    listening: list[tuple[str, str]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Stop(Exception):
    """Leave the supervision loop; `code` is what `clammail run` exits with."""

    def __init__(self, code: int):
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clammail run",
        description="Run the scan daemon, the milter and the SMTP proxy in the foreground.")
    p.add_argument("-c", "--config-file", default=DEFAULT_CONFIG, metavar="FILE",
                   help=f"the YAML file with the three sections (default {DEFAULT_CONFIG})")
    p.add_argument("--datadir", metavar="DIRECTORY",
                   help="the daemon loads its signatures from DIRECTORY")
    p.add_argument("--fallback-datadir", metavar="DIRECTORY",
                   help="the daemon loads DIRECTORY while its own holds no database")
    return p


def plan(args: argparse.Namespace) -> list[Part]:
    clammail = [sys.executable, "-m", "clammail"]
    daemon = clammail + ["daemon", "-c", args.config_file, "--foreground"]
    if args.datadir:
        daemon += ["--datadir", args.datadir]
    if args.fallback_datadir:
        daemon += ["--fallback-datadir", args.fallback_datadir]
    return [
        Part("daemon", "clamd protocol", daemon),
        Part("milter", "milter protocol", clammail + ["milter", "-c", args.config_file,
                                                      "--foreground"]),
        Part("proxy", "SMTP", clammail + ["proxy", "--config", args.config_file,
                                          "--foreground"]),
    ]


class Supervisor:
    def __init__(self, parts: list[Part], config_file: str):
        self.parts = parts
        self.config_file = config_file
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.stopping = False
        self.workdir = tempfile.mkdtemp(prefix="clammail-run-")

    # -- output -----------------------------------------------------------

    @staticmethod
    def say(line: str) -> None:
        sys.stdout.write(f"clammail run: {line}\n")
        sys.stdout.flush()

    def _show(self, part: Part, data: bytes, final: bool = False) -> None:
        if not data and not final:
            return
        lines = (part.pending + data).split(b"\n")
        part.pending = lines.pop()
        if final and part.pending:
            lines.append(part.pending)
            part.pending = b""
        for line in lines:
            text = line.decode("utf-8", "replace")
            sys.stdout.write(f"{part.name:<6} | {text}\n")
        sys.stdout.flush()

    # -- starting -----------------------------------------------------------

    def start(self, part: Part) -> None:
        part.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify_path = os.path.join(self.workdir, f"{part.name}.notify")
        part.notify.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, PYTHONUNBUFFERED="1")
        part.proc = subprocess.Popen(
            part.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, process_group=0, preexec_fn=_die_with_parent)
        os.set_blocking(part.proc.stdout.fileno(), False)
        self.selector.register(part.proc.stdout, selectors.EVENT_READ, ("output", part))
        self.selector.register(part.notify, selectors.EVENT_READ, ("notify", part))

    def wait_ready(self, parts: list[Part]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(p.ready for p in parts):
            if time.monotonic() > deadline:
                late = ", ".join(p.name for p in parts if not p.ready)
                self.say(f"{late} not ready after {READY_TIMEOUT:g} s")
                raise Stop(1)
            self.pump(1.0)
        for part in parts:
            part.listening = listening_sockets(part.proc.pid)

    # -- the loop -----------------------------------------------------------

    def pump(self, timeout: float) -> None:
        """Show output, take readiness messages and signals, notice parts that exit."""
        for key, _ in self.selector.select(timeout):
            kind, part = key.data
            if kind == "wake":
                _read_available(key.fd)  # the signal handler has queued the signal
            elif kind == "output":
                data, ended = _read_available(part.proc.stdout.fileno())
                self._show(part, data)
                if ended:
                    self.selector.unregister(part.proc.stdout)
            else:
                message = part.notify.recv(4096).decode("utf-8", "replace")
                if "READY=1" in message.split("\n"):
                    part.ready = True
        while self.signals:
            signum = self.signals.pop(0)
            if self.stopping:
                self.say(f"{signal.Signals(signum).name} again: killing what is left")
                for part in self.parts:
                    if part.running:
                        part.proc.kill()
                raise Stop(1)
            self.say(f"{signal.Signals(signum).name}: stopping")
            raise Stop(0)
        if not self.stopping:
            for part in self.parts:
                if part.proc is not None and part.proc.poll() is not None:
                    self._drain(part)
                    self.say(f"{part.name} exited with status {part.proc.returncode}")
                    raise Stop(1)

    def _drain(self, part: Part) -> None:
        try:
            data, _ = _read_available(part.proc.stdout.fileno())
        except (OSError, ValueError):
            data = b""
        self._show(part, data, final=True)

    def stop(self, parts: list[Part], timeout: float) -> None:
        running = [p for p in parts if p.running]
        for part in running:
            part.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(p.running for p in running) and time.monotonic() < deadline:
            try:
                self.pump(0.2)
            except Stop:
                return  # killed on a second signal
        for part in running:
            if part.running:
                self.say(f"{part.name} still running after {timeout:g} s: killed")
                part.proc.kill()
            part.proc.wait()
            self._drain(part)

    # -- the whole ----------------------------------------------------------

    def run(self) -> int:
        def on_signal(signum, frame):
            self.signals.append(signum)

        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        self.selector.register(wake_r, selectors.EVENT_READ, ("wake", None))
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, on_signal)
        # A part's exit wakes the loop (through the wakeup fd); its output
        # pipe closes slightly before its exit status can be collected.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        code = 0
        try:
            daemon, mail = self.parts[0], self.parts[1:]
            self.start(daemon)
            self.wait_ready([daemon])
            for part in mail:
                self.start(part)
            self.wait_ready(mail)
            self.announce()
            while True:
                self.pump(60)
        except Stop as stop:
            code = stop.code
        finally:
            self.stopping = True
            self.stop(self.parts[1:], MAIL_STOP_TIMEOUT)
            self.stop(self.parts[:1], DAEMON_STOP_TIMEOUT)
            signal.set_wakeup_fd(-1)
            for part in self.parts:
                if part.notify is not None:
                    os.unlink(part.notify.getsockname())
                    part.notify.close()
            os.rmdir(self.workdir)
            os.close(wake_r)
            os.close(wake_w)
        self.say("stopped" if code == 0 else "stopped after a failure")
        return code

    def announce(self) -> None:
        for part in self.parts:
            where = ", ".join(address for _, address in part.listening) or "nowhere?"
            line = f"{part.name:<6} ({part.what}, pid {part.proc.pid}) listens on {where}"
            if part.name == "proxy":
                line += f"; passes mail on to {self._next_hop()}"
            self.say(line)
        milter = self.parts[1].listening
        if milter:
            kind, address = milter[0]
            spec = f"inet:{address}" if kind == "tcp" else f"unix:{address}"
            self.say("Postfix: add these two lines to /etc/postfix/main.cf, "
                     "then `postfix reload`:")
            sys.stdout.write(f"    smtpd_milters = {spec}\n"
                             "    non_smtpd_milters = $smtpd_milters\n")
        self.say("running; Ctrl-C stops it")

    def _next_hop(self) -> str:
        from clammail.config.yamlconf import read_yaml_config

        return str(read_yaml_config(self.config_file, "proxy")["NextHop"])


# -- helpers ------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the supervisor dies (prctl(2))."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _read_available(fd: int) -> tuple[bytes, bool]:
    """What a non-blocking descriptor holds now, and whether its writers are gone."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return b"".join(chunks), False
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)


def listening_sockets(pid: int) -> list[tuple[str, str]]:
    """The listening sockets process `pid` holds: ("tcp", "host:port") or ("unix", path)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for fields in _proc_table(f"/proc/{pid}/net/{table}"):
            local, state, inode = fields[1], fields[3], fields[9]
            if state == TCP_LISTEN and inode in inodes:
                found.append(("tcp", _address(local, family)))
    for fields in _proc_table(f"/proc/{pid}/net/unix"):
        # Num RefCount Protocol Flags Type St Inode [Path]
        if len(fields) >= 8 and int(fields[3], 16) & LISTENING_UNIX and fields[6] in inodes:
            found.append(("unix", fields[7]))
    return found


def _proc_table(path: str) -> list[list[str]]:
    try:
        with open(path) as fh:
            return [line.split() for line in fh.readlines()[1:]]
    except OSError:
        return []


def _address(text: str, family: int) -> str:
    """/proc/net/tcp's "0100007F:0CEE": 32-bit words in host order, then the port in hex."""
    host, port = text.split(":")
    words = [int(host[i:i + 8], 16) for i in range(0, len(host), 8)]
    packed = struct.pack(f"={len(words)}I", *words)
    ip = socket.inet_ntop(family, packed)
    return f"[{ip}]:{int(port, 16)}" if family == socket.AF_INET6 else f"{ip}:{int(port, 16)}"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.exists(args.config_file):
        sys.stderr.write(f"clammail run: {args.config_file}: no such file\n")
        return 1
    return Supervisor(plan(args), args.config_file).run()
