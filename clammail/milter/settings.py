"""The milter's configuration: clamav-milter.conf as it is, or the YAML file's `milter` section.

`load_config` reads either into a `Config` of `MILTER_TABLE` options (same
syntax rules and error messages as clamd.conf); `MilterSettings.from_config`
then checks what clamav-milter checks at start-up (MilterSocket and
ClamdSocket given and well-formed, RejectMsg, LocalNet, AllowList,
SkipAuthenticated, LogFile an absolute path ...) and builds the typed
settings the milter runs on. Every problem is a ConfigError naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from clammail.clamd.client import Address, ClamdError, parse_address
from clammail.config.clamdconf import Config, ConfigError, read_clamd_conf
from clammail.config.options import MILTER_TABLE
from clammail.mailfilter.policy import Action, HeaderMode, Policy, compile_reject_message
from clammail.mailfilter.skip import (
    AllowList,
    LocalNets,
    SkipRuleError,
    SkipRules,
    skip_authenticated,
)

DEFAULT_CONFIG = "/etc/clammail/clammail.yaml"


def load_config(path: str) -> Config:
    """clamav-milter.conf syntax, or the `milter` section of a YAML file (.yaml/.yml)."""
    if path.endswith((".yaml", ".yml")):
        from clammail.config.yamlconf import read_yaml_config

        return read_yaml_config(path, "milter")
    return read_clamd_conf(path, MILTER_TABLE)


def libmilter_socket(spec: str) -> tuple[str, str | None]:
    """MilterSocket in libmilter's form, and the unix socket's path (None for inet).

    clamav-milter accepts `[[unix|local]:]/path`, `inet:port@host` and
    `inet6:port@host`.
    """
    for prefix in ("unix:", "local:"):
        if spec.startswith(prefix):
            path = spec[len(prefix):]
            break
    else:
        if spec.startswith(("inet:", "inet6:")):
            port = spec.split(":", 1)[1].split("@", 1)[0]
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"Invalid MilterSocket {spec}: bad port")
            return spec, None
        path = spec[1:] if spec.startswith(":") else spec
    if not path.startswith("/"):
        raise ValueError(f"Invalid MilterSocket {spec}: a unix socket needs an absolute path")
    return f"unix:{path}", path


@dataclass(frozen=True)
class MilterSettings:
    config: Config  # for the Log* options, which the service log reads by name
    socket: str  # libmilter's connection spec
    socket_path: str | None
    backends: tuple[Address, ...]
    policy: Policy
    skip: SkipRules
    read_timeout: float
    max_file_size: int
    log_infected: str  # Off, Basic, Full
    log_clean: str
    virus_action: str | None
    multiple_recipients: bool
    temporary_directory: str | None
    metrics_listen: str | None
    summary: bool
    probe_interval: float
    shutdown_timeout: float

    @classmethod
    def from_config(cls, config: Config) -> MilterSettings:
        source = config.source or "<config>"

        def fail(message: str) -> ConfigError:
            return ConfigError(message, source)

        if not config["MilterSocket"]:
            raise fail("Please configure the MilterSocket directive")
        try:
            socket_spec, socket_path = libmilter_socket(str(config["MilterSocket"]))
        except ValueError as exc:
            raise fail(str(exc)) from None
        mode = config["MilterSocketMode"]
        if mode is not None and not _is_octal(str(mode)):
            raise fail(f"Invalid MilterSocketMode {mode}")
        if not config["ClamdSocket"]:
            raise fail("No ClamdSocket specified")
        backends = []
        for text in config["ClamdSocket"]:
            kind, rest = text[:5].lower(), text[5:]
            if kind == "unix:":
                if not rest.startswith("/"):
                    raise fail("Unix clamd socket must be an absolute path")
                backends.append(Address("unix", path=rest))
            elif kind.startswith("tcp:"):
                try:
                    backends.append(parse_address("tcp:" + text[4:]))
                except ClamdError:
                    raise fail(f"Failed to parse ClamdSocket directive '{text}'") from None
            else:
                raise fail(f"Failed to parse ClamdSocket directive '{text}'")
        log_file = config["LogFile"]
        if log_file and not os.path.isabs(log_file):
            raise fail("LogFile requires full path.")
        try:
            reject = compile_reject_message(config["RejectMsg"])
            policy = Policy(
                on_clean=Action.named(config["OnClean"]),
                on_infected=Action.named(config["OnInfected"]),
                on_fail=Action.named(config["OnFail"]),
                reject_message=reject,
                header_mode=HeaderMode.named(config["AddHeader"]),
                report_hostname=config["ReportHostname"],
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
        for name in ("LogInfected", "LogClean"):
            if str(config[name]).lower() not in ("off", "basic", "full"):
                raise fail(f"Invalid setting {config[name]} for option {name}")
        allow_file = config["Whitelist"] or config["AllowList"]
        try:
            skip = SkipRules(
                local_nets=LocalNets.parse(list(config["LocalNet"])),
                allow=AllowList.read(allow_file) if allow_file else AllowList(),
                authenticated=skip_authenticated(config["SkipAuthenticated"]),
            )
        except SkipRuleError as exc:
            raise fail(str(exc)) from None
        max_file_size = int(config["MaxFileSize"]) or 100 * 1024 * 1024
        if config["MetricsListen"]:
            try:
                parse_address(f"tcp:{config['MetricsListen']}")
            except ClamdError:
                raise fail(f"MetricsListen must be host:port, not {config['MetricsListen']}") \
                    from None
        return cls(
            config=config,
            socket=socket_spec,
            socket_path=socket_path,
            backends=tuple(backends),
            policy=policy,
            skip=skip,
            read_timeout=float(config["ReadTimeout"]) or 24 * 3600.0,
            max_file_size=max_file_size,
            log_infected=str(config["LogInfected"]).capitalize(),
            log_clean=str(config["LogClean"]).capitalize(),
            virus_action=config["VirusAction"],
            multiple_recipients=bool(config["SupportMultipleRecipients"]),
            temporary_directory=config["TemporaryDirectory"],
            metrics_listen=config["MetricsListen"],
            summary=bool(config["LogMessageSummary"]),
            probe_interval=max(1.0, float(config["ClamdProbeInterval"])),
            shutdown_timeout=float(config["ShutdownTimeout"]),
        )


def _is_octal(text: str) -> bool:
    return bool(text) and all(c in "01234567" for c in text)
