"""The log of a clammail service, with clamd's options; writing it never fails a caller.

LogFile (with LogTime, LogFileMaxSize, LogRotate, LogFileUnlock), LogSyslog
with LogFacility, LogVerbose, and stderr for a service in the foreground.
The daemon, the milter and the proxy all log through this class; their
option tables give the same names the same meaning.

The file is handled as clamd 1.4.6's logg() handles it (common/output.c):
opened on first use with O_APPEND and a write lock, and before each line
its size is compared with LogFileMaxSize; a file over the limit is renamed
to `<name>-YYYYMMDD_HHMMSS.log` and a new one begun. With LogRotate off
clamd notes "Log size limit met but log file rotation turned off" in the
old file and rotates anyway (and from then on, silently). SIGHUP closes the
file (`reopen`) after clamd's "SIGHUP caught" line, and the same line
begins a new file at the configured path.

Logging is best-effort: a full disk, a read-only file system or a vanished
directory never reaches request handling, reloads or shutdown. Failed
writes are counted; when failures begin and when they end, one line says so
on stderr and to syslog. Only at start-up, where clamd refuses to start
without a log file it can open, does `ServiceLog()` raise.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import syslog
import threading
import time
from collections.abc import Mapping

from clammail.service.process import StartError

# LogFacility names as clamd knows them (shared/output.c): exactly these
# spellings, case and all. The codes are the standard ones (facility << 3);
# Python's syslog module lacks LOG_FTP.
FACILITIES = {
    "LOG_KERN": 0 << 3, "LOG_USER": 1 << 3, "LOG_MAIL": 2 << 3, "LOG_DAEMON": 3 << 3,
    "LOG_AUTH": 4 << 3, "LOG_SYSLOG": 5 << 3, "LOG_LPR": 6 << 3, "LOG_NEWS": 7 << 3,
    "LOG_UUCP": 8 << 3, "LOG_CRON": 9 << 3, "LOG_AUTHPRIV": 10 << 3, "LOG_FTP": 11 << 3,
    **{f"LOG_LOCAL{n}": (16 + n) << 3 for n in range(8)},
}

_PREFIX = {"error": "ERROR: ", "warning": "WARNING: ", "info": "", "debug": ""}
_PRIORITY = {"error": syslog.LOG_ERR, "warning": syslog.LOG_WARNING,
             "info": syslog.LOG_INFO, "debug": syslog.LOG_DEBUG}

# clamd's open(2) flags and mode for the log file.
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_MODE = 0o640


def rotated_name(path: str, now: float | None = None) -> str:
    """Where clamd moves a full log: its last four characters (".log") become
    "-YYYYMMDD_HHMMSS.log", whatever they were (rename_logg)."""
    stamp = time.strftime("-%Y%m%d_%H%M%S.log", time.localtime(now))
    return path[:-4] + stamp if len(path) >= 4 else path + stamp


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # file names keep their bytes
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


class ServiceLog:
    """One service's log; thread-safe (the milter logs from libmilter's threads)."""

    def __init__(self, config: Mapping, foreground: bool, debug: bool = False,
                 ident: str = "clammail"):
        self.path = config["LogFile"]
        self.time = bool(config["LogTime"])
        self.verbose = bool(config["LogVerbose"]) or debug
        self.debug_on = debug or bool(config.get("Debug"))
        self.max_size = int(config["LogFileMaxSize"] or 0)
        # clamd reads LogRotate only when there is a size limit to rotate at.
        self.rotate = bool(config["LogRotate"]) and self.max_size > 0
        self.lock_file = not config.get("LogFileUnlock")
        self.syslog = bool(config["LogSyslog"])
        self.to_stderr = foreground  # clamd in the foreground also prints its log
        self.ident = ident
        self.failures = 0  # writes to the log file that failed, in all
        self._failing: str | None = None  # why the current run of failures began
        self._failed_in_run = 0
        self._fd: int | None = None
        self._lock = threading.Lock()
        if self.path and not os.path.isabs(self.path):
            raise StartError("LogFile requires full path.")
        if self.syslog:
            facility = FACILITIES.get(str(config["LogFacility"]))
            if facility is None:
                raise StartError(f"LogFacility: {config['LogFacility']}: No such facility.")
            syslog.openlog(ident, syslog.LOG_PID, facility)
        self.open()

    # -- the file -------------------------------------------------------

    def open(self) -> None:
        """Open the log file now, or StartError with clamd's start-up messages."""
        if not self.path:
            return
        with self._lock:
            problem = self._open_file()
        if problem is not None:
            # clamd prints the reason on stdout, then refuses on stderr.
            _print(sys.stdout, f"ERROR: {problem}\n")
            raise StartError("Can't initialize the internal logger")

    def _open_file(self) -> str | None:
        """Open the file if it is not (with the lock held); None, or what went wrong."""
        if self._fd is not None or not self.path:
            return None
        try:
            fd = os.open(self.path, _OPEN_FLAGS, _OPEN_MODE)
        except OSError as exc:
            return f"Failed to open log file {self.path}: {exc.strerror}"
        if self.lock_file:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno != errno.EOPNOTSUPP:  # clamd warns and goes on (NFS)
                    os.close(fd)
                    return f"Failed to lock the log file {self.path}: {exc.strerror}"
        self._fd = fd
        return None

    def _close_file(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def reopen(self) -> None:
        """SIGHUP: clamd's line ends the old file, which is closed; the same
        line begins the new file at the configured path (so that whoever
        moved the old one away sees at once that the new one is in use)."""
        message = "SIGHUP caught: re-opening log file."
        self.info(message)
        with self._lock:
            self._close_file()
        if self.path:
            self._write_file("info", message)

    def close(self) -> None:
        with self._lock:
            self._close_file()

    # -- writing --------------------------------------------------------

    def _write(self, level: str, message: str) -> None:
        line = _PREFIX[level] + message
        if self.syslog:
            try:
                syslog.syslog(_PRIORITY[level], line)
            except (OSError, ValueError):
                pass  # syslog(3) itself never fails loudly; the encoding can
        if self.to_stderr:
            _print(sys.stderr, line + "\n")
        if self.path:
            self._write_file(level, message)

    def _write_file(self, level: str, message: str) -> None:
        line = _PREFIX[level] + message
        with self._lock:
            if self.max_size:
                self._rotate_if_full()
            problem = self._open_file()
            if problem is None:
                stamp = time.asctime() + " -> " if self.time else ""
                problem = self._append(_encode(stamp + line + "\n"))
            if problem is None:
                self._succeeded()
            else:
                self._failed(problem)

    def _append(self, data: bytes) -> str | None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            return f"Can't write to log file {self.path}: {exc.strerror}"
        return None

    def _rotate_if_full(self) -> None:
        """clamd's logg_open(): a file over LogFileMaxSize is moved aside before the line."""
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return
        if size <= self.max_size:
            return
        if not self.rotate:
            if self._open_file() is None:
                self._append(_encode(
                    f"Log size = {size}, max = {self.max_size}\n"
                    "WARNING: Log size limit met but log file rotation turned off. "
                    "Forcing log file rotation anyways.\n"))
            self.rotate = True
        self._close_file()
        try:
            os.rename(self.path, rotated_name(self.path))
        except OSError:
            pass  # as clamd: the line goes to the same file, reopened

    # -- failures -------------------------------------------------------

    def _failed(self, problem: str) -> None:
        self.failures += 1
        self._failed_in_run += 1
        self._close_file()  # the next line tries a fresh descriptor
        if self._failing is None:
            self._failing = problem
            self._report(f"{problem}; log lines are lost until it can be written again")

    def _succeeded(self) -> None:
        if self._failing is None:
            return
        lost, self._failed_in_run, self._failing = self._failed_in_run, 0, None
        note = f"Log file {self.path} written again after {lost} lost log line(s)"
        self._report(note)
        self._append(_encode(f"WARNING: {note}\n"))

    def _report(self, text: str) -> None:
        """A change in the log file's health: to stderr and syslog, never to the file."""
        _print(sys.stderr, f"WARNING: {text}\n")
        try:
            if self.syslog:
                syslog.syslog(syslog.LOG_WARNING, text)
            else:
                syslog.syslog(syslog.LOG_DAEMON | syslog.LOG_WARNING, f"{self.ident}: {text}")
        except (OSError, ValueError):
            pass

    @property
    def failing(self) -> bool:
        """Whether the last write to the log file failed."""
        return self._failing is not None

    # -- levels ---------------------------------------------------------

    def error(self, message: str) -> None:
        self._write("error", message)

    def warning(self, message: str) -> None:
        self._write("warning", message)

    def info(self, message: str) -> None:
        self._write("info", message)

    def verbose_info(self, message: str) -> None:
        if self.verbose:
            self._write("info", message)

    def debug(self, message: str) -> None:
        if self.debug_on:
            self._write("debug", message)


def _print(stream, text: str) -> None:
    """Best-effort write to stdout or stderr (a closed pipe or /dev/full must not matter)."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass
