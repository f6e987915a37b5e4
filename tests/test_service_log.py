"""ServiceLog (clammail/service/log.py) on its own: many threads writing to a
log that fails, and one that fails and recovers. The daemon-level faults
(full file system, /dev/full, read-only log, rotation, SIGHUP) are in
test_clamd_faults.py, beside clamd."""

from __future__ import annotations

import threading
import time

from clammail.service.log import ServiceLog, rotated_name


def config(path, **extra) -> dict:
    return {"LogFile": str(path), "LogTime": False, "LogVerbose": False, "LogFileMaxSize": 0,
            "LogRotate": False, "LogSyslog": False, "LogFacility": "LOG_LOCAL6", **extra}


def test_threads_writing_to_dev_full_never_raise_and_report_once(capsys):
    log = ServiceLog(config("/dev/full"), foreground=False)

    def write(n: int) -> None:
        for i in range(200):
            (log.info, log.warning, log.error)[i % 3](f"thread {n} line {i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.failures == 8 * 200 and log.failing
    reports = [line for line in capsys.readouterr().err.splitlines() if "log lines are lost" in line]
    assert reports == ["WARNING: Can't write to log file /dev/full: No space left on device; "
                       "log lines are lost until it can be written again"]


def test_a_log_whose_file_vanishes_and_comes_back(tmp_path, capsys):
    """The directory goes away (an operator's mistake): lines are counted as
    lost; once it is back, the file is opened anew and says how many."""
    logdir = tmp_path / "logs"
    logdir.mkdir()
    log = ServiceLog(config(logdir / "clamd.log"), foreground=False)
    log.info("before")
    (logdir / "clamd.log").unlink()
    logdir.rmdir()
    log.reopen()  # SIGHUP: the path is opened again, and cannot be
    for i in range(5):
        log.info(f"lost {i}")
    logdir.mkdir()
    log.info("after")
    text = (logdir / "clamd.log").read_text()
    # Lost: the SIGHUP line meant for the new file, and the five.
    assert text.splitlines() == ["after", "WARNING: Log file "
                                 f"{logdir / 'clamd.log'} written again after 6 lost log line(s)"]
    err = capsys.readouterr().err
    assert err.count("log lines are lost") == 1 and err.count("written again after 6") == 1


def test_rotated_name_is_clamds():
    """clamd replaces the name's last four characters (".log", or whatever they are)."""
    stamp = time.strftime("-%Y%m%d_%H%M%S.log", time.localtime(0))
    assert rotated_name("/var/log/clamav/clamd.log", 0) == "/var/log/clamav/clamd" + stamp
    assert rotated_name("/var/log/clamd.txt", 0) == "/var/log/clamd" + stamp
