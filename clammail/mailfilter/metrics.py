"""Prometheus metrics of a milter or proxy, and the optional HTTP listener that serves them.

Each service has its own registry, so the numbers are only the service's
(no process or platform collectors, whose names would clash between the
milter and the proxy on one Prometheus).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from clammail.clamd.client import ClamdError, parse_address
from clammail.mailfilter.backends import Backend
from clammail.mailfilter.policy import Decision
from clammail.mailfilter.scan import ScanResult

# Scan latency buckets, in seconds: a small message takes milliseconds, a
# 25 MB one on a loaded machine seconds; ReadTimeout is 120 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, service: str):
        self.registry = CollectorRegistry(auto_describe=True)
        prefix = f"clammail_{service}"
        self.messages = Counter(f"{prefix}_messages", "Messages by outcome and action",
                                ["outcome", "action"], registry=self.registry)
        self.bytes = Counter(f"{prefix}_message_bytes", "Bytes of messages received",
                             registry=self.registry)
        self.scan_seconds = Histogram(f"{prefix}_scan_seconds",
                                      "From the first byte sent to a backend to its verdict",
                                      buckets=LATENCY_BUCKETS, registry=self.registry)
        self.backend_errors = Counter(f"{prefix}_backend_errors",
                                      "Backends that gave no verdict for a message",
                                      ["backend"], registry=self.registry)
        self.failovers = Counter(f"{prefix}_failovers",
                                 "Messages sent again to another backend",
                                 registry=self.registry)
        self.backend_up = Gauge(f"{prefix}_backend_up", "1 when the backend is believed up",
                                ["backend"], registry=self.registry)

    def backend_changed(self, backend: Backend) -> None:
        self.backend_up.labels(str(backend.address)).set(1 if backend.up else 0)
        if not backend.up:
            self.backend_errors.labels(str(backend.address)).inc()

    def message(self, decision: Decision, result: ScanResult | None, size: int) -> None:
        self.messages.labels(decision.outcome.value, decision.action.value).inc()
        self.bytes.inc(size)
        if result is not None:
            if result.verdict is not None:
                self.scan_seconds.observe(result.seconds)
            if result.failovers:
                self.failovers.inc()

    def serve(self, listen: str) -> None:
        """Serve /metrics on `host:port` in a thread of its own."""
        try:
            address = parse_address(f"tcp:{listen}")
        except ClamdError:
            raise ValueError(f"MetricsListen must be host:port, not {listen!r}") from None
        start_http_server(address.port, addr=address.host, registry=self.registry)
