"""clamd.conf and YAML configuration: the same options, values and errors as clamd 1.4.6.

Errors are compared with what Debian's clamd prints for the same file: our
message must contain clamd's reason, plus the file and the line.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from clammail.config.clamdconf import ConfigError, parse_clamd_conf, read_clamd_conf
from clammail.config.options import CLAMD_OPTIONS, ENGINE_OPTIONS
from clammail.config.yamlconf import read_yaml_config

BAD_LINES = [
    "FooBar yes",
    "ScanPE maybe",
    "MaxThreads x12",
    "ScanPE",
    "LocalSocket \"/tmp/x",
    "LocalSocket \"\"",
    "Checks 12",
    "scanpe yes",
    "ClamdSocket tcp:x",
    "TCPSocket -5",
    "MaxThreads 5 6",
    "BytecodeMode Foo",
    "MaxFileSize 10X",
]


def clamd_says(tmp_path, line: str) -> str:
    conf = tmp_path / "bad.conf"
    conf.write_text(f"DatabaseDirectory {tmp_path}\nTCPSocket 1\n{line}\nForeground yes\n")
    proc = subprocess.run([shutil.which("clamd") or "/usr/sbin/clamd", "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


@pytest.mark.oracle
@pytest.mark.parametrize("line", BAD_LINES)
def test_errors_say_what_clamd_says_and_where(tmp_path, line):
    oracle = clamd_says(tmp_path, line)
    reason = oracle.splitlines()[0].removeprefix("ERROR: ")
    conf = tmp_path / "bad.conf"
    with pytest.raises(ConfigError) as info:
        read_clamd_conf(str(conf))
    ours = str(info.value)
    assert info.value.line == 3
    assert f"{conf}:3" in ours
    # clamd's wording, with its location moved to the end.
    core = reason.replace(f"Parse error at {conf}:3: ", "Parse error: ").replace(f" at {conf}:3", "")
    assert core in ours, (oracle, ours)


def test_example_line_stops(tmp_path):
    with pytest.raises(ConfigError, match="Please edit the example config file"):
        parse_clamd_conf("Example\nPing yes\n", "x.conf")


def test_values_and_defaults():
    config = parse_clamd_conf(
        "# comment\n\n  MaxFileSize 10M\nStreamMaxLength 2k\nScanPE no\nTCPAddr 127.0.0.1\n"
        "TCPAddr ::1\nMaxThreads 3\nMaxThreads 9\nLocalSocket \"/run/a b\"\nLogTime TRUE\n"
        "MaxScanSize 5G\n", "x.conf")
    assert config["MaxFileSize"] == 10 * 1024 * 1024
    assert config["StreamMaxLength"] == 2048
    assert config["ScanPE"] is False
    assert config["TCPAddr"] == ["127.0.0.1", "::1"]
    assert config["MaxThreads"] == 3  # clamd keeps the first value
    assert config["LocalSocket"] == "/run/a b"
    assert config["LogTime"] is True
    assert config["MaxScanSize"] == 0xFFFFFFFF  # limited to 4 GB
    assert config["SelfCheck"] == 600 and config["FixStaleSocket"] is True
    assert config.engine_options()["MaxFileSize"] == 10 * 1024 * 1024


def test_deprecated_renamed_and_inapplicable_options_warn():
    config = parse_clamd_conf(
        "DetectBrokenExecutables yes\nAlgorithmicDetection no\nOnAccessPrevention yes\n"
        "BytecodeTimeout 5\n", "x.conf")
    text = "\n".join(config.warnings)
    assert "Ignoring deprecated option DetectBrokenExecutables at x.conf:1" in text
    assert "AlgorithmicDetection" in text and config["HeuristicAlerts"] is False
    assert "OnAccessPrevention at x.conf:3" in text
    assert "BytecodeTimeout at x.conf:4" in text


def test_every_option_of_clamd_is_known():
    out = subprocess.run(["clamconf", "-g", "clamd.conf"], capture_output=True, text=True,
                         timeout=30).stdout
    names = {line.lstrip("#").split()[0] for line in out.splitlines()
             if line.lstrip("#")[:1].isupper() and not line.startswith("# ")}
    names.discard("Example")
    missing = names - set(CLAMD_OPTIONS)
    assert len(names) > 120
    assert not missing
    for name in ENGINE_OPTIONS:
        assert name in CLAMD_OPTIONS


def test_yaml_daemon_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("daemon:\n  MaxFileSize: 10M\n  TCPSocket: 3310\n  TCPAddr: [127.0.0.1, \"::1\"]\n"
                    "  LocalSocketMode: 660\n  ScanPE: false\nmilter: {}\n")
    config = read_yaml_config(str(path))
    assert config["MaxFileSize"] == 10 * 1024 * 1024
    assert config["TCPSocket"] == 3310
    assert config["TCPAddr"] == ["127.0.0.1", "::1"]
    assert config["LocalSocketMode"] == "660"
    assert config["ScanPE"] is False


@pytest.mark.parametrize("body,line,reason", [
    ("daemon:\n  MaxThreads: many\n", 2, "Incorrect argument format for option MaxThreads"),
    ("daemon:\n  ScanPE: yes\n  NoSuch: 1\n", 3, "Unknown option NoSuch"),
    ("deamon:\n  ScanPE: yes\n", 1, "Unknown section deamon"),
    ("daemon:\n  ScanPE: [\n", 3, "YAML syntax error"),
    ("daemon:\n  ScanPE: 3\n", 2, "Incorrect argument format for option ScanPE"),
])
def test_yaml_errors_name_file_and_line(tmp_path, body, line, reason):
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        read_yaml_config(str(path))
    assert reason in str(info.value)
    assert info.value.line == line
    assert str(path) in str(info.value)


def test_config_command_reports_errors(tmp_path):
    from clammail.config.command import main

    good = tmp_path / "good.conf"
    good.write_text("LocalSocket /tmp/x.sock\nMaxThreads 4\n")
    assert main(["-c", str(good)]) == 0
    bad = tmp_path / "bad.conf"
    bad.write_text("LocalSocket /tmp/x.sock\nMaxThreads four\n")
    assert main(["-c", str(bad)]) == 1
