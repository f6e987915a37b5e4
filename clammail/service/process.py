"""Process lifecycle shared by the daemon, the milter and the proxy.

Start-up errors, dropping root for the configured User after the sockets are
bound, detaching from the terminal (with the parent waiting until the
service is ready, so an init system sees a failed start as a failure), the
PidFile, and systemd's sd_notify readiness message.
"""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Callable, Iterable


class StartError(Exception):
    """The service cannot start; the message is printed as clamd would print it."""

    shown = False  # already on stderr (the log of a service in the foreground)


def drop_privileges(user: str | None, log, own_files: Iterable[str | None] = (),
                    own_dirs: Iterable[str | None] = ()) -> None:
    """Become `user` (clamd's User option) if running as root.

    `own_files` (the log file, the pid file) are handed to the user first so
    that it can still write, rotate and remove them; `own_dirs` (where the
    pid file and sockets live) are handed over only when they are root-owned
    directories under /run, which the service created itself.
    """
    if not user:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise StartError(f"Can't get information about user {user}.") from None
    if os.geteuid() != 0:
        if os.geteuid() != entry.pw_uid:
            log.warning(f"Running as a non-root user: User {user} is ignored.")
        return
    for path in own_files:
        if path and os.path.exists(path):
            try:
                os.chown(path, entry.pw_uid, entry.pw_gid)
            except OSError:
                pass
    for directory in {d for d in own_dirs if d}:
        try:
            st = os.stat(directory)
            if st.st_uid == 0 and directory.startswith(("/run/", "/var/run/")):
                os.chown(directory, entry.pw_uid, entry.pw_gid)
        except OSError:
            pass
    try:
        os.initgroups(user, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as exc:
        raise StartError(f"Can't switch to user {user}: {exc.strerror}") from None
    log.info(f"Running as user {user} (UID {entry.pw_uid}, GID {entry.pw_gid})")


def daemonize() -> Callable[[bool], None]:
    """Detach as clamd does: fork, new session, fork again, stdio to /dev/null, cwd /.

    The process that started stays until the service says it is ready (or
    gave up), and exits 0 (or 1): an init script or a `Type=forking` unit
    sees a start that failed as failed, as with clamav-milter. The returned
    function tells it; calling it more than once is harmless.
    """
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            answer = pipe.read(1)
        os._exit(0 if answer == b"1" else 1)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    os.chdir("/")
    told = []

    def ready(ok: bool = True) -> None:
        if told:
            return
        told.append(ok)
        try:
            if ok:
                os.write(write_end, b"1")
            os.close(write_end)
        except OSError:
            pass

    return ready


def no_wait(ok: bool = True) -> None:
    """What `daemonize` returns when there is nobody to tell (in the foreground)."""


def write_pid_file(path: str | None, log) -> None:
    if not path:
        return
    old_umask = os.umask(0o022)
    try:
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    except OSError as exc:
        log.error(f"Can't save PID in file {path}: {exc.strerror}")
    finally:
        os.umask(old_umask)


def remove_file(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify units) about our state, e.g. "READY=1"; False if not under it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True
