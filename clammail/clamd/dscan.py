"""`clammail dscan`: scan through a running daemon, like clamdscan.

Reads the same clamd.conf to find the daemon (LocalSocket first, else
TCPSocket/TCPAddr), sends CONTSCAN (MULTISCAN with --multiscan, ALLMATCHSCAN
with --allmatch) for each path, or walks the paths itself and sends each file
with INSTREAM (--stream) or its descriptor with FILDES (--fdpass). Output
lines, the summary and the exit codes are clamdscan's: 0 nothing found, 1
something found, 2 an error.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time

from clammail import __version__
from clammail.clamd.client import Address, Clamd, ClamdConnectError, ClamdError
from clammail.config.clamdconf import Config, ConfigError, read_clamd_conf

CONFIG_CANDIDATES = ("/etc/clammail/clamd.conf", "/etc/clamav/clamd.conf")
CHUNK = 1 << 20
TIMEOUT = 600.0  # a CONTSCAN of a large tree takes long; clamdscan waits too


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clammail dscan", description="Scan through the daemon.")
    p.add_argument("paths", nargs="*")
    p.add_argument("-c", "--config-file", default=None)
    p.add_argument("-m", "--multiscan", action="store_true")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--fdpass", action="store_true")
    p.add_argument("-z", "--allmatch", action="store_true")
    p.add_argument("-i", "--infected", action="store_true")
    p.add_argument("--no-summary", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--stdout", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-p", "--ping", default=None, metavar="A[:I]")
    p.add_argument("-w", "--wait", action="store_true")
    p.add_argument("--reload", action="store_true")
    p.add_argument("-V", "--version", action="store_true")
    p.add_argument("-f", "--file-list", default=None)
    p.add_argument("-l", "--log", default=None)
    return p


def client_for(config: Config) -> Clamd:
    """The daemon a clamd.conf describes, as clamdscan finds it: LocalSocket first, else TCP."""
    if config["LocalSocket"]:
        return Clamd(Address("unix", path=config["LocalSocket"]), timeout=TIMEOUT)
    if config["TCPSocket"] is not None:
        host = (config["TCPAddr"] or ["127.0.0.1"])[0]
        return Clamd(Address("tcp", host=host, port=int(config["TCPSocket"])), timeout=TIMEOUT)
    raise ConfigError("Clamd is not configured properly.")


def _file_pieces(path: str):
    with open(path, "rb") as fh:
        while piece := fh.read(CHUNK):
            yield piece


class Output:
    def __init__(self, args):
        self.args = args
        self.infected = 0  # files, counted once per command as clamdscan does
        self.errors = 0
        self._seen: set[str] = set()

    def next_command(self) -> None:
        self._seen = set()

    def line(self, path: str, text: str) -> None:
        if text.endswith(" FOUND"):
            if path not in self._seen:
                self._seen.add(path)
                self.infected += 1
        elif text.endswith(" ERROR"):
            self.errors += 1
        elif self.args.infected or self.args.quiet:
            return
        if not self.args.quiet or text.endswith(" FOUND"):
            sys.stdout.write(f"{path}: {text}\n")

    def error(self, message: str) -> None:
        self.errors += 1
        sys.stderr.write(f"ERROR: {message}\n")


def _reply_parts(text: str) -> tuple[str, str]:
    path, sep, rest = text.partition(": ")
    return (path, rest) if sep else ("", text)


def _walk_files(path: str):
    """The regular files under a path, as clamdscan sends them one by one."""
    st = os.lstat(path)
    if stat.S_ISREG(st.st_mode):
        yield path
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                if stat.S_ISREG(os.lstat(full).st_mode):
                    yield full
            except OSError:
                continue


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    path = args.config_file or next((c for c in CONFIG_CANDIDATES if os.path.exists(c)),
                                    CONFIG_CANDIDATES[0])
    try:
        daemon = client_for(read_clamd_conf(path))
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return 2
    if args.ping or args.wait:
        attempts, interval = 30 if args.wait else 1, 1.0
        if args.ping:
            count, _, every = args.ping.partition(":")
            attempts = int(count or 1)
            interval = float(every or 1)
        for attempt in range(attempts):
            try:
                if daemon.ping():
                    if not args.paths:
                        return 0
                    break
            except ClamdError:
                pass
            if attempt + 1 < attempts:
                time.sleep(interval)
        else:
            sys.stderr.write(f"ERROR: Could not connect to clamd after {attempts} attempts\n")
            return 2 if args.paths else 1
    try:
        if args.version:
            print(daemon.version())
            return 0
        if args.reload:
            if daemon.reload() != "RELOADING":
                sys.stderr.write("ERROR: Clamd did not reload the database\n")
                return 2
            return 0
    except ClamdError as exc:
        sys.stderr.write(f"ERROR: Could not connect to clamd: {exc}\n")
        return 2
    paths = list(args.paths)
    if args.file_list:
        with open(args.file_list) as fh:
            paths += [line.strip() for line in fh if line.strip()]
    if not paths:
        paths = [os.getcwd()]
    out = Output(args)
    started = time.time()
    for given in paths:
        try:
            scan_one(daemon, args, out, given)
        except ClamdConnectError as exc:
            out.error(f"Could not connect to clamd: {exc}")
            break
        except ClamdError as exc:
            out.error(str(exc))
    if not args.no_summary and not args.quiet:
        elapsed = time.time() - started
        lines = ["", "----------- SCAN SUMMARY -----------",
                 f"Infected files: {out.infected}"]
        if out.errors:
            lines.append(f"Total errors: {out.errors}")
        lines += [f"Time: {elapsed:.3f} sec ({int(elapsed // 60)} m {int(elapsed % 60)} s)",
                  f"Start Date: {time.strftime('%Y:%m:%d %H:%M:%S', time.localtime(started))}",
                  f"End Date:   {time.strftime('%Y:%m:%d %H:%M:%S')}"]
        sys.stdout.write("\n".join(lines) + "\n")
    if out.infected:
        return 1
    return 2 if out.errors else 0


def scan_one(daemon: Clamd, args, out: Output, given: str) -> None:
    if given == "-":
        out.line("stdin", daemon.instream(_file_pieces("/dev/stdin")).text)
        return
    path = os.path.abspath(given)
    try:
        os.lstat(path)
    except OSError:
        out.error(f"Can't access file {path}")
        return
    out.next_command()
    unix = daemon.address.kind == "unix"
    if args.stream or (args.fdpass and unix) or args.allmatch:
        # File by file, as clamdscan does here (ALLMATCHSCAN of a directory
        # would stop at the first infected file).
        is_dir = os.path.isdir(path)
        before = (out.infected, out.errors)
        for file_path in _walk_files(path):
            out.next_command()
            if args.allmatch and not args.stream and not (args.fdpass and unix):
                replies = daemon.command("ALLMATCHSCAN", file_path)
            elif args.stream:
                replies = [daemon.instream(_file_pieces(file_path)).line]
            else:
                fd = os.open(file_path, os.O_RDONLY)
                try:
                    replies = [daemon.fildes(fd).line]
                finally:
                    os.close(fd)
            for line in replies:
                _, text = _reply_parts(line)
                if is_dir and text == "OK":
                    continue  # a directory gets one OK at the end
                out.line(file_path, text)
        if is_dir and (out.infected, out.errors) == before:
            out.line(path, "OK")
        return
    command = "ALLMATCHSCAN" if args.allmatch else "MULTISCAN" if args.multiscan else "CONTSCAN"
    for line in daemon.command(command, path):
        reply_path, text = _reply_parts(line)
        out.line(reply_path, text)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


__all__ = ["main", "__version__"]
