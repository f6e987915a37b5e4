"""The YAML configuration file: sections `daemon`, `milter` and `proxy`.

Option names are clamd.conf's (`LocalSocket`, `MaxFileSize` ...); values may
be written as in clamd.conf ("10M", "yes") or typed (10485760, true); a
repeatable option takes a list. Errors name the file, the line of the
offending key and the reason, as for clamd.conf.

The `daemon` section becomes a `Config` exactly like a clamd.conf would;
the other sections are returned as plain mappings for the milter and the
proxy to check against their own tables.
"""

from __future__ import annotations

import yaml

from clammail.config.clamdconf import Config, ConfigError, set_option
from clammail.config.options import CLAMD_TABLE, MILTER_TABLE, PROXY_TABLE, OptionTable

SECTIONS = ("daemon", "milter", "proxy")


class _Loader(yaml.SafeLoader):
    """A safe loader that remembers each key's line."""


def _construct_mapping(loader, node, deep=False):
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise ConfigError(f"Duplicate key {key}", loader.name, key_node.start_mark.line + 1)
        value = loader.construct_object(value_node, deep=True)
        mapping[key] = value
        mapping.setdefault("__lines__", {})[key] = key_node.start_mark.line + 1
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            loader = _Loader(fh)
            loader.name = path
            try:
                data = loader.get_single_data()
            finally:
                loader.dispose()
    except OSError as exc:
        raise ConfigError(f"Can't open the config file: {exc.strerror}", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"YAML syntax error: {getattr(exc, 'problem', exc)}", path, line) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("The YAML file must be a mapping with sections daemon, milter, proxy", path, 1)
    lines = data.pop("__lines__", {})
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(f"Unknown section {key} (expected one of: {', '.join(SECTIONS)})",
                              path, lines.get(key))
    return data


SECTION_TABLES: dict[str, OptionTable] = {
    "daemon": CLAMD_TABLE, "milter": MILTER_TABLE, "proxy": PROXY_TABLE,
}


def read_yaml_config(path: str, section: str = "daemon") -> Config:
    """A section (daemon, milter, proxy) as a Config, with its table's defaults for the rest."""
    data = load_yaml(path)
    body = data.get(section) or {}
    if not isinstance(body, dict):
        raise ConfigError(f"Section {section} must be a mapping", path)
    lines = body.pop("__lines__", {})
    config = Config(table=SECTION_TABLES[section], source=path)
    for name, value in body.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                raise ConfigError(f"Missing argument for option {name}", path, lines.get(name))
            if isinstance(item, float):
                item = str(item)
            set_option(config, name, item, path, lines.get(name))
    return config


def section(path: str, name: str) -> dict:
    """A raw section (milter, proxy) with the line of each key under '__lines__'."""
    data = load_yaml(path)
    body = data.get(name) or {}
    return body
