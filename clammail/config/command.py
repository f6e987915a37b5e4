"""`clammail config`: check a configuration file and show what it sets.

    clammail config [-c FILE] [--milter] [--all]

Reads clamd.conf syntax, clamav-milter.conf syntax (with `--milter`, or when
the file's name has "milter" in it) or the YAML file (by extension; every
section it has is checked). Reports the first error with the file and line
(exit 1) or prints every warning and, per section, the options whose value
differs from the default, in clamconf's style ("Name = "value""); `--all`
prints every option.
"""

from __future__ import annotations

import argparse
import os
import sys

from clammail.config.clamdconf import Config, ConfigError, read_clamd_conf
from clammail.config.options import CLAMD_TABLE, MILTER_TABLE, Kind


def _show(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(f'"{v}"' for v in value) if value else "disabled"
    if value is None:
        return "disabled"
    return f'"{value}"'


def _listing(title: str, config: Config, show_all: bool) -> list[str]:
    out = [title, "-" * len(title)]
    defaults = config.table.defaults()
    for name, option in config.table.options.items():
        if option.deprecated or name not in config.values:
            continue
        value = config.values[name]
        if not show_all and value == defaults.get(name):
            continue
        if option.kind is Kind.BOOL and value is None:
            continue
        out.append(f"{name} = {_show(value)}")
    return out


def _check(name: str, config: Config) -> None:
    """What the milter and the proxy check at start-up beyond the syntax."""
    if name == "milter":
        from clammail.milter.settings import MilterSettings

        MilterSettings.from_config(config)
    elif name == "proxy":
        from clammail.proxy.settings import ProxySettings

        ProxySettings.from_config(config)


def _sections(path: str, milter: bool) -> list[tuple[str, Config]]:
    if path.endswith((".yaml", ".yml")):
        from clammail.config.yamlconf import SECTION_TABLES, load_yaml, read_yaml_config

        present = [name for name in SECTION_TABLES if load_yaml(path).get(name)]
        return [(name, read_yaml_config(path, name)) for name in present or ["daemon"]]
    if milter or "milter" in os.path.basename(path):
        return [("milter", read_clamd_conf(path, MILTER_TABLE))]
    return [("daemon", read_clamd_conf(path, CLAMD_TABLE))]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="clammail config", description="Check and show configuration.")
    p.add_argument("-c", "--config-file", default=None, metavar="FILE")
    p.add_argument("--milter", action="store_true",
                   help="the file is a clamav-milter.conf (default: guessed from its name)")
    p.add_argument("--all", action="store_true", help="show every option, not only those set")
    args = p.parse_args(argv)
    from clammail.clamd.daemon import default_config_path

    path = args.config_file or default_config_path()
    try:
        sections = _sections(path, args.milter)
        for name, config in sections:
            _check(name, config)
    except ConfigError as exc:
        sys.stderr.write(f"ERROR: {exc}\n")
        sys.stderr.write(f"ERROR: Can't open/parse the config file {path}\n")
        return 1
    out: list[str] = []
    for name, config in sections:
        for warning in config.warnings:
            sys.stderr.write(f"WARNING: {warning}\n")
        label = f"Config file: {path}" + (f" ({name})" if len(sections) > 1 or name != "daemon"
                                          else "")
        out += _listing(label, config, args.all) + [""]
    sys.stdout.write("\n".join(out).rstrip("\n") + "\n")
    return 0
