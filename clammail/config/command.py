"""`clammail config`: check a configuration file and show what it sets.

    clammail config [-c FILE] [--all]

Reads clamd.conf syntax or the YAML file (by extension), reports the first
error with the file and line (exit 1) or prints every warning and the
options whose value differs from clamd's default, in clamconf's style
("Name = "value""); `--all` prints every option.
"""

from __future__ import annotations

import argparse
import sys

from clammail.config.clamdconf import ConfigError
from clammail.config.options import CLAMD_OPTIONS, DAEMON_DEFAULTS, Kind


def _show(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(f'"{v}"' for v in value) if value else "disabled"
    if value is None:
        return "disabled"
    return f'"{value}"'


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="clammail config", description="Check and show configuration.")
    p.add_argument("-c", "--config-file", default=None, metavar="FILE")
    p.add_argument("--all", action="store_true", help="show every option, not only those set")
    args = p.parse_args(argv)
    from clammail.clamd.daemon import default_config_path, load_config

    path = args.config_file or default_config_path()
    try:
        config = load_config(path)
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        sys.stderr.write(f"ERROR: Can't open/parse the config file {path}\n")
        return 1
    for warning in config.warnings:
        sys.stderr.write(f"WARNING: {warning}\n")
    title = f"Config file: {path}"
    out = [title, "-" * len(title)]
    for name, option in CLAMD_OPTIONS.items():
        if option.deprecated or name not in config.values:
            continue
        value = config.values[name]
        if not args.all and value == DAEMON_DEFAULTS.get(name):
            continue
        if option.kind is Kind.BOOL and value is None:
            continue
        out.append(f"{name} = {_show(value)}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0
