"""The Debian package, installed: `make deb`, apt, the services, upgrade, purge.

The module builds the package from this tree (`make deb`, which also runs
lintian), installs it with apt and starts each unit's ExecStart as systemd
would start it -- as the unit's User with the unit's UMask, the daemon with
the sockets its .socket unit describes passed by socket activation
(LISTEN_FDS), each service telling its readiness with sd_notify -- because
systemd is not PID 1 here. Then clamdscan talks to the installed daemon (its
answers compared with Debian's clamd on the same database), mail goes
through a real Postfix (tests/postfix_harness.py) wired with the installed
milter and with the installed proxy, logrotate rotates the logs, an
upgrade keeps the administrator's configuration, and remove and purge leave
nothing behind.

The tests run in file order and share one installation. The installed
services listen where the packaged configuration says (127.0.0.1:3310,
:8891, :10025): to find those ports free whatever else runs on the machine
(a `make run`, another test), the services and their clients run in a
network namespace of their own.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import shlex
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clamd_harness import EICAR, make_root, start_daemon, wait_ready
from conftest import need_program
from milter_harness import mime
from postfix_harness import PostfixConfig, after_queue_filter, start_postfix

from clammail.signatures.loader import holds_databases
from clammail.supervisor import listening_sockets

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
UNIT_DIR = Path("/lib/systemd/system")
UNITS = ("clammail-daemon.socket", "clammail-daemon.service", "clammail-milter.service",
         "clammail-proxy.service")
BUNDLED = "/usr/lib/python3/dist-packages/clammail/data"
TESTFILES = Path("/usr/share/clamav-testfiles")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # what systemd gives a service
READY_TIMEOUT = 300.0  # a daemon on freshclam's full database, cache cold
# Where a purge may leave changes that are not the package's: apt's and
# dpkg's own records and caches.
NOT_OURS = ("/var/lib/dpkg", "/var/lib/apt", "/var/cache/apt", "/var/cache/debconf",
            "/var/log/apt", "/var/log/dpkg.log", "/var/cache/man", "/var/cache/ldconfig")
SNAPSHOT_ROOTS = ("/etc", "/usr/bin", "/usr/lib/python3/dist-packages", "/lib/systemd/system",
                  "/usr/lib/tmpfiles.d", "/usr/share/doc", "/usr/share/man", "/var/lib",
                  "/var/log", "/var/cache", "/run/clammail")
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


def run(*argv: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, DEBIAN_FRONTEND="noninteractive",
                                   PATH=SYSTEM_PATH), **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def package_status() -> str:
    done = run("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "clammail", check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def snapshot() -> set[str]:
    """Every path under the roots the package touches, but apt's own records."""
    paths = set()
    for root in SNAPSHOT_ROOTS:
        for directory, dirs, files in os.walk(root):
            if directory.startswith(NOT_OURS):
                dirs[:] = []
                continue
            paths.update(os.path.join(directory, name) for name in dirs + files)
    return {p for p in paths if not p.startswith(NOT_OURS)}


def unit_settings(unit: str) -> dict[str, list[str]]:
    """The key=value lines of an installed unit file, repeated keys in order."""
    settings: dict[str, list[str]] = {}
    for line in (UNIT_DIR / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@dataclass
class Service:
    """A unit's ExecStart running as systemd would run it."""

    unit: str
    proc: subprocess.Popen
    notify: socket.socket
    output: Path
    activated: list[socket.socket] = field(default_factory=list)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()  # its sockets too: clients are refused instead of waiting
                raise AssertionError(f"{self.unit} exited {self.proc.returncode}:\n"
                                     f"{self.output.read_text()[-3000:]}")
            self.notify.settimeout(1.0)
            try:
                message = self.notify.recv(4096).decode()
            except TimeoutError:
                continue
            if "READY=1" in message.split("\n"):
                return
        self.stop()
        raise AssertionError(f"{self.unit}: no READY=1 in {READY_TIMEOUT} s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        for sock in self.activated:
            if sock.family == socket.AF_UNIX and os.path.exists(sock.getsockname()):
                os.unlink(sock.getsockname())  # RemoveOnStop=yes
            sock.close()
        self.activated = []
        return self.proc.returncode


def socket_activation(unit: str) -> list[socket.socket]:
    """The listening sockets a .socket unit's ListenStream lines describe, as systemd makes them."""
    settings = unit_settings(unit)
    user = pwd.getpwnam(settings["SocketUser"][0])
    group = grp.getgrnam(settings["SocketGroup"][0])
    sockets = []
    for address in settings["ListenStream"]:
        if address.startswith("/"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if os.path.exists(address):
                os.unlink(address)
            sock.bind(address)
            os.chown(address, user.pw_uid, group.gr_gid)
            os.chmod(address, int(settings["SocketMode"][0], 8))
        else:
            host, port = address.rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, int(port)))
        sock.listen(128)
        sockets.append(sock)
    return sockets


def start_unit(unit: str, workdir: Path, activation: str | None = None) -> Service:
    """Run a service unit's ExecStart as its User, Group and UMask, with NOTIFY_SOCKET."""
    settings = unit_settings(unit)
    assert settings["Type"] == ["notify"]
    command = shlex.split(settings["ExecStart"][0])
    notify_path = workdir / f"{unit}.notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    os.chmod(notify_path, 0o777)
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "NOTIFY_SOCKET": str(notify_path)}
    activated = socket_activation(activation) if activation else []
    as_user = ["setpriv", f"--reuid={settings['User'][0]}", f"--regid={settings['Group'][0]}",
               "--init-groups", "--"]
    if activated:
        # sd_listen_fds(): descriptors from 3 on, LISTEN_PID the service's own pid
        # (the shell's, which exec keeps).
        env["LISTEN_FDS"] = str(len(activated))
        argv = ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh", *as_user, *command]
    else:
        argv = [*as_user, *command]
    umask = int(settings["UMask"][0], 8)
    fds = [s.fileno() for s in activated]

    def prepare() -> None:
        os.umask(umask)
        high = [os.dup(fd) for fd in fds]  # out of the way of 3, 4 ...
        for number, fd in enumerate(high, start=3):
            os.dup2(fd, number)

    output = workdir / f"{unit}.out"
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                            stdout=open(output, "w"), stderr=subprocess.STDOUT,
                            preexec_fn=prepare, pass_fds=range(3, 3 + len(fds)), cwd="/")
    return Service(unit, proc, notify, output, activated)


CLONE_NEWNET = 0x40000000  # sched.h


@contextmanager
def private_network():
    """The calling thread, and every process it starts, in a new network namespace.

    Its loopback is up and all its ports are free; the file system (unix
    sockets included) is shared as usual.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        run("ip", "link", "set", "lo", "up")
        yield
    finally:
        if libc.setns(original, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the original network failed")
        os.close(original)


@dataclass
class Installation:
    deb: Path
    before: set[str]
    accounts_before: dict[str, str]
    workdir: Path
    services: dict[str, Service] = field(default_factory=dict)

    def require_running(self, *names: str) -> None:
        """The services a test talks to, started by test_services_start_as_their_units_say."""
        for name in names:
            service = self.services.get(name)
            if service is None or service.proc.poll() is not None:
                pytest.fail(f"the installed {name} is not running: see "
                            "test_services_start_as_their_units_say")


# What root running `clammail run` before the installation leaves behind
# (the daemon's log and compiled-database cache): the package takes it over.
LEFT_BY_ROOT = (Path("/var/log/clammail/clamd.log"), Path("/var/cache/clammail/by-root"))


@pytest.fixture(scope="module")
def installation():
    for program in ("apt-get", "dpkg-buildpackage", "lintian", "systemd-analyze", "setpriv",
                    "clamdscan", "logrotate", "ip"):
        need_program(program)
    if package_status():
        run("apt-get", "purge", "-y", "clammail")  # left by an interrupted run
    build = run("make", "-C", str(REPO), "deb", timeout=1200)
    debs = sorted((REPO / "build" / "deb").glob("clammail_*_all.deb"))
    assert len(debs) == 1, build.stdout[-2000:]
    assert "E: " not in build.stdout
    for path in LEFT_BY_ROOT:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o755)
            path.write_text("written by root before the installation\n")
    before = snapshot()
    accounts = {path: Path(path).read_text() for path in ACCOUNT_FILES}
    workdir = Path(tempfile.mkdtemp(prefix="clammail-install-"))
    workdir.chmod(0o755)
    run("apt-get", "install", "-y", "--no-install-recommends", str(debs[0]))
    installed = Installation(debs[0], before, accounts, workdir)
    with private_network():
        yield installed
        for service in installed.services.values():
            service.stop()
    if package_status():
        run("apt-get", "purge", "-y", "clammail", check=False)
    shutil.rmtree(workdir, ignore_errors=True)


def test_installed_layout(installation):
    assert package_status() == "ii"
    assert os.access("/usr/bin/clammail", os.X_OK)
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "clammail").stdout
    for path in ("/etc/clammail/clamd.conf", "/etc/clammail/clammail.yaml",
                 "/etc/logrotate.d/clammail"):
        assert f" {path} " in conffiles
    user = pwd.getpwnam("clammail")
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_uid < 1000
    assert "clammail" in grp.getgrnam("clamav").gr_mem  # reads /var/lib/clamav
    modes = {"/run/clammail": ("clammail", "clammail", 0o755),
             "/var/lib/clammail/quarantine": ("clammail", "clammail", 0o750),
             "/var/cache/clammail": ("clammail", "clammail", 0o750),
             "/var/log/clammail": ("clammail", "adm", 0o2750)}
    for path, (owner, group, mode) in modes.items():
        st = os.stat(path)
        assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name,
                st.st_mode & 0o7777) == (owner, group, mode), path
    for path in LEFT_BY_ROOT:
        if path.exists():
            assert pwd.getpwuid(path.stat().st_uid).pw_name == "clammail", path
    for unit in UNITS:
        assert (UNIT_DIR / unit).is_file()
    readme = Path("/usr/share/doc/clammail/README.Debian").read_text()
    assert "    smtpd_milters = inet:127.0.0.1:8891\n" \
           "    non_smtpd_milters = $smtpd_milters\n" in readme
    for page in ("clammail", "clammail.yaml", "clammail-clamd.conf"):
        assert run("man", "-w", page).stdout.strip().endswith(".gz")
    # Enabled at install (deb-systemd-helper works without a running systemd),
    # the proxy only when an administrator enables it.
    wants = "/etc/systemd/system/multi-user.target.wants"
    assert os.path.islink(f"{wants}/clammail-daemon.service")
    assert os.path.islink(f"{wants}/clammail-milter.service")
    assert os.path.islink("/etc/systemd/system/sockets.target.wants/clammail-daemon.socket")
    assert not os.path.exists(f"{wants}/clammail-proxy.service")


def test_systemd_accepts_the_units(installation):
    done = run("systemd-analyze", "verify", *(str(UNIT_DIR / u) for u in UNITS), check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # systemd's own exposure score of the hardening: 1.5 of 10 when written
    # (2.0 is the threshold's 20; 3.2 before the system-call filter).
    services = [str(UNIT_DIR / u) for u in UNITS if u.endswith(".service")]
    done = run("systemd-analyze", "security", "--offline=true", "--threshold=20", *services,
               check=False)
    assert done.returncode == 0, done.stdout


def test_services_start_as_their_units_say(installation):
    services = installation.services
    workdir = installation.workdir
    services["daemon"] = start_unit("clammail-daemon.service", workdir,
                                    activation="clammail-daemon.socket")
    services["daemon"].wait_ready()
    services["milter"] = start_unit("clammail-milter.service", workdir)
    services["proxy"] = start_unit("clammail-proxy.service", workdir)
    services["milter"].wait_ready()
    services["proxy"].wait_ready()
    clammail = pwd.getpwnam("clammail").pw_uid
    for name, service in services.items():
        with open(f"/proc/{service.proc.pid}/status") as fh:
            uids = next(line for line in fh if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {str(clammail)}, name
    # The daemon took systemd's sockets and bound none of its own.
    log = Path("/var/log/clammail/clamd.log").read_text()
    assert "Received 2 file descriptor(s) from systemd." in log
    assert "LOCAL: Received AF_UNIX SOCK_STREAM socket from systemd." in log
    expected = "/var/lib/clamav" if holds_databases("/var/lib/clamav") else BUNDLED
    assert f"Reading databases from {expected}\n" in log
    assert listening_sockets(services["milter"].proc.pid) == [("tcp", "127.0.0.1:8891")]
    assert listening_sockets(services["proxy"].proc.pid) == [("tcp", "127.0.0.1:10025")]
    log_file = Path("/var/log/clammail/milter.log")
    assert pwd.getpwuid(log_file.stat().st_uid).pw_name == "clammail"
    assert log_file.stat().st_mode & 0o777 == 0o640  # UMask=0027


def clamdscan(*args: str) -> str:
    done = run("clamdscan", "--no-summary", *args, check=False, timeout=120)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.stdout


def test_clamdscan_gets_clamds_answers_from_the_installed_daemon(installation):
    """clamdscan with the installed clamd.conf, and with Debian's clamd on the same database."""
    installation.require_running("daemon")
    database = "/var/lib/clamav" if holds_databases("/var/lib/clamav") else BUNDLED
    tmp_path = make_root()  # the daemon, as clammail, reads the files it is told to SCAN
    eicar = tmp_path / "eicar.com"
    eicar.write_bytes(EICAR)
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing to see\n")
    for path in (eicar, clean):
        path.chmod(0o644)
    files = [str(eicar), str(clean), str(TESTFILES / "clam.exe"), str(TESTFILES / "clam.zip"),
             str(TESTFILES / "clam.mail")]
    clamd = start_daemon("clamd", tmp_path, {"DatabaseDirectory": database})
    try:
        wait_ready(clamd, timeout=READY_TIMEOUT)
        theirs_conf = str(clamd.workdir / "clamd.conf")
        for mode in ([], ["--stream"], ["--fdpass"]):
            ours = clamdscan("--config-file=/etc/clammail/clamd.conf", *mode, *files)
            theirs = clamdscan(f"--config-file={theirs_conf}", *mode, *files)
            assert ours == theirs, mode
            assert f"{eicar}: " in ours and "FOUND" in ours
    finally:
        clamd.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def message(subject: str, attachment: bytes | None = None) -> bytes:
    headers, body = mime([("text/plain", "", b"Hello.")] +
                         ([("application/octet-stream", "eicar.com", attachment)]
                          if attachment else []))
    headers = [(n, v) for n, v in headers if n != b"Subject"] + [(b"Subject", subject.encode())]
    return b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n" + body


def test_mail_through_postfix_and_the_installed_milter(installation):
    """Postfix wired with the two lines README.Debian gives: clean mail arrives, EICAR is refused."""
    installation.require_running("daemon", "milter")
    postfix = start_postfix(PostfixConfig(main={
        "smtpd_milters": "inet:127.0.0.1:8891", "non_smtpd_milters": "$smtpd_milters",
        "milter_default_action": "tempfail"}))
    try:
        clean = postfix.send(message("clean"))
        infected = postfix.send(message("infected", EICAR))
        [delivered] = postfix.wait_delivered(1)
    finally:
        postfix.stop()
    assert clean.data.code == 250
    assert (infected.data.code, infected.data.text) == (
        550, "5.7.1 Message refused: it contains Eicar-Test-Signature.UNOFFICIAL")
    assert delivered.headers["Subject"] == "clean"
    assert delivered.headers["X-Virus-Status"] == "Clean"
    assert delivered.headers["X-Virus-Scanned"].startswith("clammail ")


def test_mail_through_postfix_and_the_installed_proxy(installation):
    """Postfix's after-queue content_filter through the proxy on 10025, back on 10026."""
    installation.require_running("daemon", "proxy")
    postfix = start_postfix(after_queue_filter(10025, reinject_port=10026))
    try:
        clean = postfix.send(message("clean"))
        infected = postfix.send(message("infected", EICAR))
        # The proxy refuses the infected message after the queue: Postfix
        # bounces it to its sender.
        delivered = postfix.wait_delivered(2)
    finally:
        postfix.stop()
    assert clean.data.code == 250 and infected.data.code == 250
    by_mailbox = {d.mailbox: d for d in delivered}
    assert by_mailbox["rcpt@example.com"].headers["Subject"] == "clean"
    assert by_mailbox["rcpt@example.com"].headers["X-Virus-Status"] == "Clean"
    bounce = b" ".join(by_mailbox["sender@example.org"].data.split())  # lines unfolded
    assert b"550 5.7.1 Message refused: it contains Eicar-Test-Signature.UNOFFICIAL" in bounce


class Sink:
    """The proxy's next hop: takes every message (aiosmtpd handler)."""

    def __init__(self):
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        return "250 2.0.0 Ok: queued"


def test_smtp_straight_to_the_installed_proxy(installation):
    """Without Postfix: a clean message reaches the next hop on 127.0.0.1:10026, EICAR gets a 550."""
    installation.require_running("daemon", "proxy")
    from aiosmtpd.controller import Controller

    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=10026)
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", 10025, timeout=120) as smtp:
            clean = b"From: sender@example.org\r\nSubject: clean\r\n\r\nHello.\r\n"
            smtp.sendmail("sender@example.org", ["rcpt@example.com"], clean)
            headers, body = mime([("application/octet-stream", "eicar.com", EICAR)])
            infected = b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n" + body
            with pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.sendmail("sender@example.org", ["rcpt@example.com"], infected)
    finally:
        controller.stop()
    assert len(sink.messages) == 1 and b"Subject: clean" in sink.messages[0]
    assert b"X-Virus-Status: Clean" in sink.messages[0]
    assert refused.value.smtp_code == 550
    assert b"Message refused: it contains Eicar-Test-Signature" in refused.value.smtp_error


def test_logrotate_reopens_the_logs(installation, tmp_path):
    installation.require_running("daemon", "milter", "proxy")
    state = tmp_path / "logrotate.state"
    run("logrotate", "--force", "--state", str(state), "/etc/logrotate.d/clammail")
    for name in ("clamd", "milter", "proxy"):
        assert Path(f"/var/log/clammail/{name}.log.1").exists(), name
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logs = [Path(f"/var/log/clammail/{n}.log") for n in ("clamd", "milter")]
        if all(p.exists() and "SIGHUP caught: re-opening log file." in p.read_text()
               for p in logs):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the services did not reopen their logs after logrotate")


def test_upgrade_keeps_the_configuration(installation, tmp_path):
    conf = Path("/etc/clammail/clamd.conf")
    conf.write_text(conf.read_text() + "# changed by the administrator\n")
    tree = tmp_path / "pkg"
    run("dpkg-deb", "-R", str(installation.deb), str(tree))
    control = tree / "DEBIAN" / "control"
    version = next(line.split(": ", 1)[1] for line in control.read_text().splitlines()
                   if line.startswith("Version: "))
    newer = version + ".1"
    control.write_text(control.read_text().replace(f"Version: {version}", f"Version: {newer}"))
    deb = tmp_path / f"clammail_{newer}_all.deb"
    run("dpkg-deb", "-b", str(tree), str(deb))
    run("apt-get", "install", "-y", "--no-install-recommends", str(deb))
    assert run("dpkg-query", "-W", "-f=${Version}", "clammail").stdout == newer
    assert conf.read_text().endswith("# changed by the administrator\n")
    assert not Path("/etc/clammail/clamd.conf.dpkg-new").exists()
    assert "clammail" in grp.getgrnam("clamav").gr_mem
    # Where systemd runs, the upgrade restarts the running services.
    postinst = Path("/var/lib/dpkg/info/clammail.postinst").read_text()
    for unit in ("'clammail-daemon.service' 'clammail-daemon.socket'", "'clammail-milter.service'",
                 "'clammail-proxy.service'"):
        assert f"deb-systemd-invoke $_dh_action {unit}" in postinst


def test_remove_then_purge_leaves_nothing(installation):
    installation.require_running("daemon", "milter", "proxy")
    for name in ("proxy", "milter", "daemon"):
        assert installation.services.pop(name).stop() == 0, name
    run("apt-get", "remove", "-y", "clammail")
    assert not os.path.exists("/usr/bin/clammail")
    assert Path("/etc/clammail/clamd.conf").exists()  # conffiles stay until purge
    run("apt-get", "purge", "-y", "clammail")
    assert package_status() == ""
    left = sorted(snapshot() - installation.before)
    assert left == []
    for path in ACCOUNT_FILES:
        assert Path(path).read_text() == installation.accounts_before[path], path
