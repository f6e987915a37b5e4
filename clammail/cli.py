"""`clammail <command>`: one entry point, one module per command.

Each command lives in its own module with a `main(argv) -> int`; this file
only dispatches, so commands can be added without touching one another.
"""

from __future__ import annotations

import importlib
import sys

from clammail import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "scan": ("clammail.scancmd", "scan files like clamscan"),
    "daemon": ("clammail.clamd.daemon", "run the clamd-compatible scan daemon"),
    "dscan": ("clammail.clamd.dscan", "scan through a daemon like clamdscan"),
    "milter": ("clammail.milter", "run the milter for Postfix and Sendmail"),
    "proxy": ("clammail.proxy", "run the SMTP content-filter proxy"),
    "quarantine": ("clammail.proxy.quarantine_cmd", "list, show, release, delete quarantined mail"),
    "sigtool": ("clammail.sigtool", "inspect and build signature databases"),
    "config": ("clammail.config.command", "check and show configuration"),
}

USAGE = "usage: clammail <command> [options]\n\ncommands:\n" + "".join(
    f"  {name:<10} {text}\n" for name, (_, text) in COMMANDS.items()
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"clammail {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"clammail: unknown command {name!r}\n{USAGE}")
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ImportError as exc:
        sys.stderr.write(f"clammail: the {name} command is not available: {exc}\n")
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
