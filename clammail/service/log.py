"""The log of a clammail service, with clamd's options.

LogFile (with LogTime, LogFileMaxSize, LogRotate), LogSyslog with
LogFacility, LogVerbose, and stderr for a service in the foreground. The
daemon, the milter and the proxy all log through this class; their option
tables give the same names the same meaning.
"""

from __future__ import annotations

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


class ServiceLog:
    """One service's log; thread-safe (the milter logs from libmilter's threads)."""

    def __init__(self, config: Mapping, foreground: bool, debug: bool = False,
                 ident: str = "clammail"):
        self.path = config["LogFile"]
        self.time = bool(config["LogTime"])
        self.verbose = bool(config["LogVerbose"]) or debug
        self.debug_on = debug or bool(config.get("Debug"))
        self.max_size = int(config["LogFileMaxSize"] or 0)
        self.rotate = bool(config["LogRotate"])
        self.syslog = bool(config["LogSyslog"])
        self.to_stderr = foreground  # clamd in the foreground also prints its log
        self.disabled = False
        self._fh = None
        self._lock = threading.Lock()
        if self.syslog:
            facility = FACILITIES.get(str(config["LogFacility"]))
            if facility is None:
                raise StartError(f"LogFacility: {config['LogFacility']}: No such facility.")
            syslog.openlog(ident, syslog.LOG_PID, facility)
        self.open()

    def open(self) -> None:
        if self.path:
            try:
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8", errors="surrogateescape")
            except OSError as exc:
                raise StartError(
                    f"Can't open {self.path} in append mode (check permissions!).") from exc

    def reopen(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            self.disabled = False
            try:
                self.open()
            except StartError:
                pass
        self.info("SIGHUP caught: re-opening log file.")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def _write(self, level: str, message: str) -> None:
        line = _PREFIX[level] + message
        if self.syslog:
            syslog.syslog(_PRIORITY[level], line)
        if self.to_stderr:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        with self._lock:
            if self._fh is None or self.disabled:
                return
            stamp = time.strftime("%a %b %d %H:%M:%S %Y") + " -> " if self.time else ""
            self._fh.write(stamp + line + "\n")
            self._fh.flush()
            if self.max_size and self._fh.tell() >= self.max_size:
                self._size_exceeded()

    def _size_exceeded(self) -> None:
        if self.rotate:
            self._fh.close()
            rotated = f"{self.path}.{time.strftime('%Y%m%d_%H%M%S')}"
            try:
                os.rename(self.path, rotated)
            except OSError:
                pass
            self._fh = open(self.path, "a", encoding="utf-8", errors="surrogateescape")
        else:
            self._fh.write(f"Log size = {self._fh.tell()}, max = {self.max_size}\n")
            self._fh.write("LOGGING DISABLED (Maximal log file size exceeded).\n")
            self._fh.flush()
            self.disabled = True

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
