"""The proxy's configuration: the YAML file's `proxy` section, checked and typed.

Every key is documented in config/clammail.yaml. Problems are ConfigErrors
naming the file, as for the daemon's and the milter's configuration.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from clammail.clamd.client import Address, ClamdError, parse_address
from clammail.config.clamdconf import Config, ConfigError
from clammail.mailfilter.policy import Action, HeaderMode, Policy, compile_reject_message
from clammail.proxy.nexthop import parse_next_hop


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    key: bytes


@dataclass(frozen=True)
class ProxySettings:
    config: Config  # for the Log* options, read by name by the service log
    listen: tuple[str, object]  # ("tcp", (host, port)) or ("unix", path)
    listen_lmtp: bool  # the sending MTA speaks LMTP (Postfix: content_filter = lmtp:...)
    hostname: str
    max_connections: int
    max_message_size: int
    client_timeout: float
    next_hop: str
    next_hop_starttls: str
    next_hop_tls_verify: bool
    next_hop_user: str | None
    next_hop_password: str | None
    next_hop_timeout: float
    backends: tuple[Address, ...]
    read_timeout: float
    probe_interval: float
    policy: Policy
    subject_tag: str | None
    quarantine_directory: str
    dkim_verify: bool
    authserv_id: str
    arc_key: DkimKey | None
    dkim_sign: tuple[DkimKey, ...]
    dns_records_file: str | None
    metrics_listen: str | None
    summary: bool
    shutdown_timeout: float

    @classmethod
    def from_config(cls, config: Config) -> ProxySettings:
        source = config.source or "<config>"

        def fail(message: str) -> ConfigError:
            return ConfigError(message, source)

        listen_text = str(config["Listen"])
        listen_lmtp = listen_text.startswith("lmtp:")
        if listen_lmtp:
            listen_text = listen_text[5:]
        if listen_text.startswith("unix:"):
            if not listen_text[5:].startswith("/"):
                raise fail(f"Listen {listen_text}: a unix socket needs an absolute path")
            listen: tuple[str, object] = ("unix", listen_text[5:])
        else:
            try:
                address = parse_address(f"tcp:{listen_text}")
            except ClamdError:
                raise fail("Listen must be [lmtp:]host:port or [lmtp:]unix:/path, "
                           f"not {listen_text}") from None
            listen = ("tcp", (address.host, address.port))
        try:
            parse_next_hop(str(config["NextHop"]))
        except ValueError as exc:
            raise fail(str(exc)) from None
        if not config["ClamdSocket"]:
            raise fail("No ClamdSocket specified")
        backends = []
        for text in config["ClamdSocket"]:
            try:
                backends.append(parse_address(text))
            except ClamdError as exc:
                raise fail(f"Failed to parse ClamdSocket directive '{text}': {exc}") from None
        if bool(config["NextHopUser"]) != bool(config["NextHopPassword"]):
            raise fail("NextHopUser and NextHopPassword go together")
        try:
            policy = Policy(
                on_clean=Action.named(config["OnClean"]),
                on_infected=Action.named(config["OnInfected"]),
                on_fail=Action.named(config["OnFail"]),
                reject_message=compile_reject_message(config["RejectMsg"]),
                header_mode=HeaderMode.named(config["AddHeader"]),
                report_hostname=config["ReportHostname"],
            )
        except ValueError as exc:
            raise fail(str(exc)) from None
        if policy.on_clean is Action.STRIP:
            raise fail("OnClean cannot be Strip")
        arc_key = None
        if any(config[n] for n in ("ARCSealKey", "ARCSelector", "ARCDomain")):
            if not all(config[n] for n in ("ARCSealKey", "ARCSelector", "ARCDomain")):
                raise fail("ARCSealKey, ARCSelector and ARCDomain go together")
            arc_key = DkimKey(config["ARCDomain"], config["ARCSelector"],
                              _read_key(config["ARCSealKey"], fail))
        signing = []
        for entry in config["DKIMSign"]:
            parts = str(entry).split(":", 2)
            if len(parts) != 3 or not all(parts):
                raise fail(f"DKIMSign {entry}: expected domain:selector:/path/to/key")
            signing.append(DkimKey(parts[0].lower(), parts[1], _read_key(parts[2], fail)))
        quarantine = str(config["QuarantineDirectory"])
        if not os.path.isabs(quarantine):
            raise fail("QuarantineDirectory requires full path.")
        log_file = config["LogFile"]
        if log_file and not os.path.isabs(log_file):
            raise fail("LogFile requires full path.")
        hostname = config["Hostname"] or socket.getfqdn() or "localhost"
        return cls(
            config=config,
            listen=listen,
            listen_lmtp=listen_lmtp,
            hostname=hostname,
            max_connections=max(1, int(config["MaxConnections"])),
            max_message_size=int(config["MaxMessageSize"]) or 25 * 1024 * 1024,
            client_timeout=float(config["ClientTimeout"]),
            next_hop=str(config["NextHop"]),
            next_hop_starttls=str(config["NextHopStartTLS"]),
            next_hop_tls_verify=bool(config["NextHopTLSVerify"]),
            next_hop_user=config["NextHopUser"],
            next_hop_password=config["NextHopPassword"],
            next_hop_timeout=float(config["NextHopTimeout"]),
            backends=tuple(backends),
            read_timeout=float(config["ReadTimeout"]) or 24 * 3600.0,
            probe_interval=max(1.0, float(config["ClamdProbeInterval"])),
            policy=policy,
            subject_tag=config["SubjectTag"],
            quarantine_directory=quarantine,
            dkim_verify=bool(config["DKIMVerify"]),
            authserv_id=config["AuthservID"] or hostname,
            arc_key=arc_key,
            dkim_sign=tuple(signing),
            dns_records_file=config["DNSRecordsFile"],
            metrics_listen=config["MetricsListen"],
            summary=bool(config["LogMessageSummary"]),
            shutdown_timeout=float(config["ShutdownTimeout"]),
        )


def _read_key(path: str, fail) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise fail(f"Cannot read the key {path}: {exc.strerror}") from None


def load_config(path: str) -> Config:
    from clammail.config.yamlconf import read_yaml_config

    if not path.endswith((".yaml", ".yml")):
        raise ConfigError("The proxy reads the proxy section of a YAML file (.yaml, .yml)", path)
    return read_yaml_config(path, "proxy")
