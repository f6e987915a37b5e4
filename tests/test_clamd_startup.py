"""Start-up as clamd does it: systemd socket activation, the local socket's
group and mode, and logging to syslog, each compared with Debian's clamd.

Socket activation is done the way systemd does it: the test binds and
listens, then forks, puts the sockets at descriptors 3 and 4, sets
LISTEN_FDS and LISTEN_PID (the child's own pid) and execs the daemon.

Syslog goes to /dev/log. The test gives each daemon a private mount
namespace (unshare) whose /dev holds a `log` that leads to a datagram socket
of the test's, and reads what the daemon sends there; without the
privileges for that the test is skipped, and the daemon is still shown to
start with LogSyslog where /dev/log is missing.
"""

from __future__ import annotations

import grp
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from clamd_harness import EICAR, REPO, TEST_DB, exchange, make_root, start_pair

pytestmark = [pytest.mark.oracle]

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
INSTREAM_EICAR = b"zINSTREAM\0" + struct.pack(">I", len(EICAR)) + EICAR + struct.pack(">I", 0)
FOUND = b"stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND\0"


def command(name: str, conf: Path) -> list[str]:
    if name == "clamd":
        return [CLAMD, "-c", str(conf)]
    return [sys.executable, "-m", "clammail", "daemon", "-c", str(conf)]


@pytest.fixture
def root():
    r = make_root()
    db = r / "db"
    db.mkdir()
    (db / "test.hdb").write_text(TEST_DB)
    db.chmod(0o755)
    yield r
    shutil.rmtree(r, ignore_errors=True)


def write_conf(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# -- systemd socket activation -------------------------------------------------------


class Activated:
    """A daemon started as systemd starts a socket-activated service."""

    def __init__(self, argv: list[str], sockets: list[socket.socket], output: Path,
                 listen_pid: int | None = None):
        self.output = output
        pid = os.fork()
        if pid == 0:  # the child: only async-signal-safe work until exec
            try:
                moved = [os.dup2(s.fileno(), 100 + i) for i, s in enumerate(sockets)]
                for i, fd in enumerate(moved):
                    os.dup2(fd, 3 + i)  # inheritable: survives exec
                out = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.closerange(3 + len(sockets), 1024)
                env = dict(os.environ, LISTEN_FDS=str(len(sockets)),
                           LISTEN_PID=str(listen_pid or os.getpid()))
                os.chdir(REPO)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid = pid
        self.status: int | None = None

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise TimeoutError("the daemon did not exit")
            time.sleep(0.05)
        return self.status

    def stop(self) -> int:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        return self.wait()


def listening_sockets(root: Path, name: str, kinds: list[str]) -> tuple[list[socket.socket], dict]:
    sockets, where = [], {}
    for kind in kinds:
        if kind == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            path = root / f"{name}.sock"
            s.bind(str(path))
            where["unix"] = ("unix", str(path))
        elif kind == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            where["tcp"] = ("tcp", s.getsockname()[1])
        else:  # a socket that does not listen: systemd would not pass it, clamd ignores it
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            continue
        s.listen(16)
        sockets.append(s)
    return sockets, where


def activate(root: Path, name: str, kinds: list[str], listen_pid: int | None = None):
    conf = write_conf(root / f"{name}.conf", [
        f"DatabaseDirectory {root / 'db'}", "Foreground yes", f"LogFile {root / (name + '.log')}",
    ])
    sockets, where = listening_sockets(root, name, kinds)
    try:
        daemon = Activated(command(name, conf), sockets, root / f"{name}.out", listen_pid)
    finally:
        for s in sockets:
            s.close()  # the daemon has its own copies
    return daemon, where


def wait_answer(daemon: Activated, target, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and daemon.poll() is None:
        try:
            if exchange(target, b"zPING\0", quiet=2) == b"PONG\0":
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def error_lines(root: Path, name: str) -> list[str]:
    text = (root / f"{name}.out").read_text(errors="replace")
    return [line for line in text.splitlines() if line.startswith("ERROR:")]


@pytest.mark.parametrize("kinds", [["unix", "tcp"], ["tcp", "unix"], ["unix"], ["tcp"],
                                   ["unix", "nonlistening"]])
def test_socket_activation_like_clamd(root, kinds):
    def run(name):
        daemon, where = activate(root, name, kinds)
        try:
            answers = {}
            for kind, target in sorted(where.items()):
                assert wait_answer(daemon, target), f"{name} does not answer on its {kind} socket"
                answers[kind] = (exchange(target, b"zPING\0"), exchange(target, INSTREAM_EICAR))
            code = daemon.stop()
        finally:
            if daemon.poll() is None:
                daemon.stop()
        # The socket file belongs to systemd: the daemon leaves it in place.
        left = os.path.exists(where["unix"][1]) if "unix" in where else None
        return answers, code, left

    with ThreadPoolExecutor(2) as pool:
        clamd, clammail = pool.map(run, ("clamd", "clammail"))
    assert all(a == (b"PONG\0", FOUND) for a in clamd[0].values())
    assert clammail == clamd


@pytest.mark.parametrize("kinds,listen_pid", [
    (["unix", "tcp", "tcp"], None),  # more than two descriptors
    (["unix", "tcp"], 1),  # LISTEN_PID names another process: the descriptors are not ours
])
def test_socket_activation_refused_like_clamd(root, kinds, listen_pid):
    def run(name):
        daemon, _ = activate(root, name, kinds, listen_pid)
        code = daemon.wait(timeout=60)
        return code, error_lines(root, name)

    with ThreadPoolExecutor(2) as pool:
        clamd, clammail = pool.map(run, ("clamd", "clammail"))
    assert clamd[0] != 0 and clamd[1]
    assert clammail == clamd


# -- LocalSocketGroup, LocalSocketMode ------------------------------------------------------


def other_group() -> grp.struct_group:
    for name in ("nogroup", "daemon", "users"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    return grp.getgrgid(os.getgid())


@pytest.mark.parametrize("group,mode", [
    (None, None), ("name", "660"), ("number", "0600"), (None, "777"), (None, "2775"), ("name", None),
])
def test_local_socket_group_and_mode_like_clamd(root, group, mode):
    g = other_group()
    options = {"DatabaseDirectory": root / "db", "SelfCheck": 0}
    if group:
        options["LocalSocketGroup"] = g.gr_name if group == "name" else str(g.gr_gid)
    if mode:
        options["LocalSocketMode"] = mode
    pair = start_pair(root, options)
    try:
        modes = [os.stat(d.unix) for d in (pair.clamd, pair.clammail)]
    finally:
        pair.stop()
    clamd, clammail = [(oct(st.st_mode & 0o7777), st.st_gid) for st in modes]
    if group:
        assert clamd[1] == g.gr_gid
    assert clammail == clamd


@pytest.mark.parametrize("option", ["LocalSocketGroup no_such_group_here", "LocalSocketMode 8x"])
def test_bad_local_socket_options_like_clamd(root, option):
    def run(name):
        conf = write_conf(root / f"{name}.conf", [
            f"DatabaseDirectory {root / 'db'}", "Foreground yes", f"LocalSocket {root / name}.sock",
            option,
        ])
        proc = subprocess.run(command(name, conf), capture_output=True, text=True, timeout=120, cwd=REPO)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("ERROR:")]
        return proc.returncode != 0, errors

    with ThreadPoolExecutor(2) as pool:
        clamd, clammail = pool.map(run, ("clamd", "clammail"))
    assert clamd[0] and clamd[1]
    assert clammail == clamd


# -- LogSyslog, LogFacility ----------------------------------------------------------------------

NAMESPACE_SETUP = """
set -e
mkdir -p "$T/olddev"
mount --bind /dev "$T/olddev"
mount -t tmpfs -o mode=755 tmpfs /dev
for f in null zero random urandom; do
    touch "/dev/$f"
    mount --bind "$T/olddev/$f" "/dev/$f"
done
ln -s "$T/log.sock" /dev/log
exec "$@"
"""


def can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


class SyslogReader:
    """Reads the datagrams sent to a socket all along: a unix datagram socket
    takes only a few unread messages (net.unix.max_dgram_qlen) before
    syslog() in the sender blocks."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            try:
                self.messages.append(self.sock.recv(65536))
            except TimeoutError:
                continue
            except OSError:
                return

    def wait_for(self, wanted: bytes, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(wanted in m for m in self.messages):
            time.sleep(0.05)

    def close(self) -> list[bytes]:
        self.stopped.set()
        self.thread.join()
        self.sock.close()
        return self.messages


def priority(message: bytes) -> int:
    assert message.startswith(b"<"), message
    return int(message[1:message.index(b">")])


@pytest.mark.skipif(not can_unshare(), reason="needs root and mount namespaces (unshare -m)")
def test_syslog_like_clamd(root):
    """LogSyslog with LogFacility LOG_MAIL: a detection goes to /dev/log as mail.info, as clamd sends it."""

    def run(name):
        ns = root / f"ns-{name}"
        ns.mkdir()
        reader = SyslogReader(ns / "log.sock")
        unix = root / f"{name}.sock"
        conf = write_conf(root / f"{name}.conf", [
            f"DatabaseDirectory {root / 'db'}", "Foreground yes", f"LocalSocket {unix}",
            "LogSyslog yes", "LogFacility LOG_MAIL",
        ])
        argv = ["unshare", "-m", "sh", "-c", NAMESPACE_SETUP, "sh", *command(name, conf)]
        proc = subprocess.Popen(argv, env=dict(os.environ, T=str(ns)), cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if unix.exists() and exchange(("unix", str(unix)), b"zPING\0", quiet=2) == b"PONG\0":
                    break
                time.sleep(0.1)
            answer = exchange(("unix", str(unix)), INSTREAM_EICAR)
            reader.wait_for(b"FOUND")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            messages = reader.close()
        found = [m for m in messages if b"Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND" in m]
        return answer, [priority(m) for m in found], len(messages)

    with ThreadPoolExecutor(2) as pool:
        clamd, clammail = pool.map(run, ("clamd", "clammail"))
    mail_info = (2 << 3) | 6
    assert clamd[0] == FOUND and clamd[1] == [mail_info]
    assert clammail[:2] == clamd[:2]
    assert clammail[2] > 1  # start-up lines were logged there too


@pytest.mark.parametrize("facility", ["LOG_MAIL", "LOG_FTP", "LOG_AUTHPRIV", "LOG_LOCAL6", "log_mail",
                                      "LOG_NOSUCH", "MAIL"])
def test_log_facility_names_like_clamd(root, facility):
    """The facility names clamd accepts (exactly spelled), and its refusal of others."""

    def run(name):
        unix = root / f"{name}-{facility}.sock"
        conf = write_conf(root / f"{name}-{facility}.conf", [
            f"DatabaseDirectory {root / 'db'}", "Foreground yes", f"LocalSocket {unix}",
            "LogSyslog yes", f"LogFacility {facility}",
        ])
        proc = subprocess.Popen(command(name, conf), cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if unix.exists() and exchange(("unix", str(unix)), b"zPING\0", quiet=2) == b"PONG\0":
                    break
                time.sleep(0.1)
            running = proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        return running, [line for line in output.splitlines() if line.startswith("ERROR:")]

    with ThreadPoolExecutor(2) as pool:
        clamd, clammail = pool.map(run, ("clamd", "clammail"))
    assert clammail == clamd
