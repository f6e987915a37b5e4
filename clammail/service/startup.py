"""Start-up shared by the milter and the proxy: configuration errors, the log, StartError.

A configuration that cannot be used is reported as clamd reports it (the
reason with the file and line, then "Can't open/parse the config file"),
warnings go to stderr, and a StartError raised while starting goes to the
log (which is stderr too for a service in the foreground) and ends the
start with exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from clammail.config.clamdconf import ConfigError
from clammail.service.log import ServiceLog
from clammail.service.process import StartError


def start_service(path: str, load: Callable[[], Any], body: Callable[[Any, ServiceLog, bool], int],
                  *, ident: str, debug: bool = False) -> int:
    """`load()` the settings (with `.config`), open the log, run `body(settings, log, foreground)`."""
    try:
        settings = load()
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        sys.stderr.write(f"ERROR: Can't open/parse the config file {path}\n")
        return 1
    config = settings.config
    for warning in config.warnings:
        sys.stderr.write(f"WARNING: {warning}\n")
    foreground = bool(config["Foreground"])
    try:
        log = ServiceLog(config, foreground, debug, ident=ident)
    except StartError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        return 1
    try:
        return body(settings, log, foreground)
    except StartError as exc:
        log.error(str(exc))
        if not log.to_stderr:
            sys.stderr.write(f"ERROR: {exc}\n")
        log.close()
        return 1
