"""The milter when its backends misbehave: no message passes unscanned, none is lost.

Backends here are real daemons (clamd, clammail's) that get stopped or
killed mid-stream, and small servers that behave as broken daemons do:
answering garbage, closing the connection in the middle of a stream,
never answering. The sender must always get a verdict or a 4xx (OnFail's
default, Defer), and a second backend must take over from a failed first.
"""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time

import pytest
from clamd_harness import EICAR, free_port, make_root
from milter_harness import MESSAGES, backends, start_milter, stop_all

pytestmark = [pytest.mark.oracle]

SENDER = "<sender@example.org>"
RCPT = ["<rcpt@example.com>"]


class BrokenBackend:
    """A TCP server that speaks just enough clamd to fail in one chosen way.

    mode "garbage": answers any command with bytes that are no clamd reply;
    "hangup": reads a little of the stream, then closes;
    "silent": reads everything and never answers;
    "pong-then-garbage": answers PING properly (so probes think it is up)
    but a scan with garbage.
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.listener.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            first = conn.recv(64)
            if first.startswith(b"zPING") or first.startswith(b"nPING"):
                if self.mode == "pong-then-garbage":
                    conn.sendall(b"PONG\0" if first[0:1] == b"z" else b"PONG\n")
                    return
            if self.mode in ("garbage", "pong-then-garbage"):
                conn.sendall(b"\x00\xffHELLO THERE\0")
            elif self.mode == "hangup":
                return
            elif self.mode == "silent":
                while not self._stop.is_set():
                    try:
                        if not conn.recv(65536):
                            break
                    except TimeoutError:
                        continue
                self._stop.wait()
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


def send(milter, name="eicar-body", body=None):
    hdrs, default_body = MESSAGES[name]
    with milter.client(timeout=120) as client:
        client.connect()
        return client.message(SENDER, RCPT, hdrs, default_body if body is None else body)


@pytest.mark.parametrize("mode", ["garbage", "hangup", "silent", "pong-then-garbage"])
def test_a_broken_only_backend_means_defer(scanners, mode):
    broken = BrokenBackend(mode)
    milter = start_milter("clammail", scanners.extra["root"],
                          {"ClamdSocket": broken.address, "ReadTimeout": 2,
                           "OnInfected": "Reject"}, name=f"broken-{mode}")
    try:
        results = [send(milter, name) for name in ("clean", "eicar-body")]
    finally:
        stop_all(milter)
        broken.close()
    assert [r.action for r in results] == ["tempfail", "tempfail"]
    assert broken.connections >= 2
    assert "No verdict for the message" in milter.log.read_text()


@pytest.mark.parametrize("on_fail, expected", [("Defer", "tempfail"), ("Reject", "reject"),
                                                ("Accept", "accept")])
def test_all_backends_down_follows_on_fail(scanners, on_fail, expected):
    dead = [f"tcp:127.0.0.1:{free_port()}", f"unix:{scanners.extra['root']}/nobody-here.sock"]
    milter = start_milter("clammail", scanners.extra["root"],
                          {"ClamdSocket": dead, "OnFail": on_fail}, name=f"down-{on_fail}")
    try:
        result = send(milter)
    finally:
        stop_all(milter)
    assert result.action == expected
    assert result.added == [] and result.inserted == []  # a failed scan never gets headers


def test_broken_first_backend_second_takes_over(scanners):
    """Each failure mode of the first backend: the message still gets the second one's verdict."""
    for mode in ("garbage", "hangup", "silent"):
        broken = BrokenBackend(mode)
        milter = start_milter("clammail", scanners.extra["root"],
                              {"ClamdSocket": [broken.address, f"unix:{scanners.clammail.unix}"],
                               "ReadTimeout": 2, "OnInfected": "Reject",
                               "AddHeader": "Replace"}, name=f"failover-{mode}")
        try:
            results = [send(milter, name) for name in ("eicar-body", "clean", "eicar-zip")]
        finally:
            stop_all(milter)
            broken.close()
        assert [r.action for r in results] == ["reject", "accept", "reject"], mode
        log = milter.log.read_text()
        assert f"Backend {broken.address} is down" in log, mode


def test_backend_killed_mid_stream_the_next_gets_the_whole_message(scanners):
    """A 6 MB message; the first backend is SIGKILLed after a third of it was streamed."""
    root = scanners.extra["root"]
    victim_root = make_root()
    victim = backends(victim_root)
    try:
        milter = start_milter("clammail", root,
                              {"ClamdSocket": [f"unix:{victim.clammail.unix}",
                                               f"unix:{scanners.clamd.unix}"],
                               "OnInfected": "Reject", "MaxFileSize": "20M"},
                              name="killed-mid-stream")
        try:
            hdrs, _ = MESSAGES["clean"]
            body = (b"x" * 998 + b"\r\n") * 6000 + EICAR + b"\r\n"
            def kill_at_a_third(chunk: int) -> None:
                # The milter answers a body chunk only after it streamed it on.
                if chunk == 30:
                    victim.clammail.proc.send_signal(signal.SIGKILL)
                    victim.clammail.proc.wait()

            with milter.client(timeout=120) as client:
                client.connect()
                result = client.message(SENDER, RCPT, hdrs, body, after_chunk=kill_at_a_third)
        finally:
            stop_all(milter)
        assert result.action == "reject"
        summary = [line for line in milter.log.read_text().splitlines()
                   if line.startswith("message ")]
        assert "verdict=infected" in summary[-1]
        assert "failovers=1" in summary[-1], summary[-1]  # it was killed mid-stream
    finally:
        victim.stop()
        shutil.rmtree(victim_root, ignore_errors=True)


def test_backend_back_after_a_restart_is_probed_up(scanners):
    """A backend that was down answers PING again: the prober marks it up."""
    port = free_port()
    milter = start_milter("clammail", scanners.extra["root"],
                          {"ClamdSocket": [f"tcp:127.0.0.1:{port}"], "ClamdProbeInterval": 1,
                           "OnInfected": "Reject"}, name="probe")
    relay = None
    try:
        assert send(milter).action == "tempfail"
        # Now something answers on that port: a relay to the real clamd.
        relay = _Relay(port, scanners.clamd.port)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "is up again" not in milter.log.read_text():
            time.sleep(0.2)
        assert "is up again" in milter.log.read_text()
        assert send(milter).action == "reject"
    finally:
        stop_all(milter)
        if relay is not None:
            relay.close()


class _Relay:
    """Forwards a TCP port to another (a backend that comes back on its old address)."""

    def __init__(self, port: int, target: int):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.target = target
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
