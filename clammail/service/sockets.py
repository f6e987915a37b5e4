"""Listening sockets with clamd's rules, for every service of clammail.

A unix socket is created with mode 000 (no client can connect before its
group and mode are set), a stale socket file is removed only when nothing
answers on it and FixStaleSocket allows it; TCP listeners bind every address
getaddrinfo gives. Messages carry clamd's wording ("LOCAL: ...", "TCP: ...").
"""

from __future__ import annotations

import grp
import os
import resource
import socket
import stat

from clammail.service.process import StartError

SD_LISTEN_FDS_START = 3  # the first descriptor systemd passes (sd_listen_fds(3))


def listen_fds() -> int:
    """sd_listen_fds(): how many descriptors systemd passed to this very process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return 0
    try:
        return max(0, int(os.environ.get("LISTEN_FDS", "0")))
    except ValueError:
        return 0


def remove_stale_socket(path: str, fix_stale: bool, log) -> None:
    """Make room for a unix socket at `path`, or StartError saying why not."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartError(f"LOCAL: Socket file {path} exists and is not a socket.")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        if fix_stale:
            log.info(f"LOCAL: Removing stale socket file {path}")
            os.unlink(path)
        else:
            raise StartError(f"LOCAL: Socket file {path} exists. Either remove it, or "
                             "configure a different one.") from None
    else:
        raise StartError(f"LOCAL: Socket file {path} is in use by another process.")
    finally:
        probe.close()


def bind_unix(path: str, *, group: str | None, mode: str | None, fix_stale: bool,
              backlog: int, log) -> socket.socket:
    """A listening unix socket at `path` with the given group and mode (clamd's LocalSocket*)."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        # A fresh machine has no /run/clammail yet: create it (root-owned, 0755).
        os.makedirs(directory, mode=0o755, exist_ok=True)
    remove_stale_socket(path, fix_stale, log)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    saved_umask = os.umask(0o777)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise StartError(f"LOCAL: Socket file {path} could not be bound: {exc.strerror}") from None
    finally:
        os.umask(saved_umask)
    try:
        set_socket_access(path, group, mode)
    except StartError:
        sock.close()
        os.unlink(path)
        raise
    sock.listen(max(1, backlog))
    log.info(f"LOCAL: Unix socket file {path}")
    return sock


def set_socket_access(path: str, group: str | None, mode: str | None,
                      default_mode: int = 0o777, mode_option: str = "LocalSocketMode") -> None:
    """chown the socket to `group` and chmod it to `mode` & 0666, as clamd and clamav-milter do.

    A numeric group is taken as a gid, named or not (clamd's rule); `mode` is
    octal text ("660"); without one, `default_mode` & 0666.
    """
    if group:
        group = str(group)
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise StartError(f"Unknown group {group}") from None
        try:
            os.chown(path, -1, gid)
        except OSError:
            raise StartError(f"Failed to change socket ownership to group {group}") from None
    if mode:
        try:
            bits = int(str(mode), 8)
        except ValueError:
            raise StartError(f"Invalid {mode_option} {mode}") from None
    else:
        bits = default_mode
    try:
        os.chmod(path, bits & 0o666)
    except OSError:
        raise StartError(f"Cannot set socket permission to {mode}") from None


def bind_tcp(port: int, addresses: list[str | None], backlog: int, log) -> list[socket.socket]:
    """Listening TCP sockets on `port` for each address (None: every interface)."""
    sockets = []
    for address in addresses or [None]:
        try:
            infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise StartError(f"TCP: getaddrinfo failed: {exc.strerror}") from None
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                sock.close()
                for done in sockets:
                    done.close()
                raise StartError(
                    f"TCP: Cannot bind to [{sockaddr[0]}]:{port}: {exc.strerror}") from None
            sock.listen(max(1, backlog))
            log.info(f"TCP: Bound to [{sockaddr[0]}]:{port}")
            sockets.append(sock)
    return sockets


def raise_descriptor_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one: each connection holds a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
